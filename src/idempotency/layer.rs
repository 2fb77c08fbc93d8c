//! [`IdempotencyLayer`]: builds the [`Config`] its services share.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderName;
use http::{Method, StatusCode};
use tower_layer::Layer;

use super::config::{Config, MAX_RETRY_AFTER, MAX_WAIT, OnCancel};
use super::fingerprint::FingerprintMode;
use super::observe::Observer;
use super::record::{MAX_LEASE, MAX_TTL, MIN_LEASE};
use super::service::Idempotency;
use super::store::{MemoryStore, Store};
use crate::key::Caller;
use crate::store::OnStoreError;

/// Applies [`Idempotency`] to a service: one execution per `Idempotency-Key`.
///
/// Before the inner service runs, the request it claimed carries in its
/// extensions the parsed [`IdempotencyKey`](super::IdempotencyKey), the
/// [`CallerKey`](crate::key::CallerKey) the key is kept per (what the
/// [`per`](Self::per) extractor read) and the claim's [`Fence`](super::Fence),
/// so a handler reads them instead of parsing the request again. (A request
/// run without idempotency after a store failure, with
/// [`OnStoreError::FailOpen`], carries the first two but no `Fence`.)
///
/// See the [module docs](super) for an example and the semantics.
#[derive(Clone)]
pub struct IdempotencyLayer<St = MemoryStore, K = Caller> {
    config: Arc<Config>,
    store: St,
    per: K,
}

impl<St: fmt::Debug, K: fmt::Debug> fmt::Debug for IdempotencyLayer<St, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotencyLayer")
            .field("config", &self.config)
            .field("store", &self.store)
            .field("per", &self.per)
            .finish()
    }
}

impl IdempotencyLayer {
    /// A layer with a fresh [`MemoryStore`] (shared by every service this
    /// layer wraps; bounded by [`DEFAULT_MAX_KEYS`](super::DEFAULT_MAX_KEYS)
    /// records and [`DEFAULT_MAX_BYTES`](super::DEFAULT_MAX_BYTES) of
    /// responses, past which new keys get `503`), keys kept per [`Caller`].
    pub fn new() -> Self {
        Self::with_store(MemoryStore::new())
    }
}

impl Default for IdempotencyLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<St: Store> IdempotencyLayer<St> {
    /// A layer over any [`Store`] (a `RedisStore`, with feature `redis`,
    /// shares keys between every instance that uses the same Redis and
    /// prefix), keys kept per [`Caller`].
    pub fn with_store(store: St) -> Self {
        Self {
            config: Arc::new(Config::default()),
            store,
            per: Caller::new(),
        }
    }
}

impl<St, K> IdempotencyLayer<St, K> {
    fn config(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(Arc::make_mut(&mut self.config));
        self
    }

    /// Keeps keys per the caller key `extractor` reads (API key, user,
    /// tenant), on top of method and path, so one caller can never replay
    /// another's response; the default is [`Caller`] (`X-Api-Key`, else
    /// `Authorization`, else the client IP). Give it the extractor the rate
    /// limiter keys callers by. A request for which it returns `None` is
    /// refused with `400`: put authentication before this layer.
    ///
    /// [`Global`](crate::key::Global) puts every caller in one key space.
    /// **Warning**: keys are then told apart by method and path only, so any
    /// caller who sends the same key and request gets another caller's
    /// stored response, headers included. Only for an API that a single
    /// trusted caller talks to (one backend service).
    pub fn per<K2>(self, extractor: K2) -> IdempotencyLayer<St, K2> {
        IdempotencyLayer {
            config: self.config,
            store: self.store,
            per: extractor,
        }
    }

    /// The methods the layer applies to (default `POST` and `PATCH`); others
    /// pass through untouched.
    #[must_use]
    pub fn methods(self, methods: impl IntoIterator<Item = Method>) -> Self {
        let methods = methods.into_iter().collect();
        self.config(|c| c.methods = methods)
    }

    /// Whether the key is optional: with `true`, a request without one runs
    /// without idempotency. By default (`false`) it is required and its
    /// absence is a `400`.
    #[must_use]
    pub fn optional(self, optional: bool) -> Self {
        self.config(|c| c.required = !optional)
    }

    /// Request headers that enter the fingerprint, besides method, path,
    /// query and body (none by default).
    #[must_use]
    pub fn fingerprint_headers(self, names: impl IntoIterator<Item = HeaderName>) -> Self {
        let names = names.into_iter().collect();
        self.config(|c| c.fingerprint_headers = names)
    }

    /// How the body enters the fingerprint (default exact bytes).
    #[must_use]
    pub fn fingerprint_mode(self, mode: FingerprintMode) -> Self {
        self.config(|c| c.fingerprint_mode = mode)
    }

    /// The largest request body buffered for the fingerprint (default
    /// [`DEFAULT_BODY_LIMIT`](super::DEFAULT_BODY_LIMIT), 1 MiB); a larger
    /// one is refused with `413` before anything runs.
    #[must_use]
    pub fn body_limit(self, bytes: usize) -> Self {
        self.config(|c| c.body_limit = bytes)
    }

    /// The largest response body kept for replay (default
    /// [`DEFAULT_RESPONSE_BODY_LIMIT`](super::DEFAULT_RESPONSE_BODY_LIMIT),
    /// 1 MiB). A larger response is passed through to the client and
    /// recorded as completed-but-not-retained: a retry gets `410` saying so,
    /// and the request never runs a second time.
    #[must_use]
    pub fn response_body_limit(self, bytes: usize) -> Self {
        self.config(|c| c.response_body_limit = bytes)
    }

    /// The only response headers kept for replay, exactly these (a
    /// `set-cookie` listed here is kept). By default every header is kept
    /// except hop-by-hop ones (`connection`, `transfer-encoding`, ...) and
    /// per-session ones (see
    /// [`replay_session_headers`](Self::replay_session_headers)). A gRPC
    /// response keeps its `content-type`, `grpc-status`, `grpc-message` and
    /// `grpc-status-details-bin` whatever the list says: without them a
    /// replay would be no answer a gRPC client can read. Trailers are all
    /// kept.
    #[must_use]
    pub fn stored_headers(self, names: impl IntoIterator<Item = HeaderName>) -> Self {
        let names = names.into_iter().collect();
        self.config(|c| c.stored_headers = Some(names))
    }

    /// Whether the per-session response headers are kept for replay:
    /// `Set-Cookie`, `Set-Cookie2` and `Authentication-Info`, dropped by
    /// default (`false`) so that a replay never hands out the session of the
    /// request that ran. `true` only for a handler whose cookies are not a
    /// session (a preference, a consent flag) and a caller key that is one
    /// client.
    #[must_use]
    pub fn replay_session_headers(self, replay: bool) -> Self {
        self.config(|c| c.replay_session_headers = replay)
    }

    /// How long a completed record is kept (default 24 h), clamped to
    /// between 1 ms and [`MAX_TTL`](super::MAX_TTL) (365 days).
    #[must_use]
    pub fn ttl(self, ttl: Duration) -> Self {
        let ttl = ttl.clamp(Duration::from_millis(1), MAX_TTL);
        self.config(|c| c.ttl = ttl)
    }

    /// How long a claim holds a key without a sign of life from its holder
    /// (default 10 s), clamped to between [`MIN_LEASE`](super::MIN_LEASE)
    /// (100 ms) and [`MAX_LEASE`](super::MAX_LEASE) (one day).
    ///
    /// While the request runs, a heartbeat renews the lease every third of
    /// it, so a request may run longer than its lease; a crashed or stalled
    /// instance stops renewing and its claim frees itself within one lease.
    /// Choose it longer than the stalls you expect (a store step that times
    /// out, a paused process): a holder stalled past its lease loses the key
    /// and a retry may run the request again (its completion is then
    /// refused, fenced by its token).
    #[must_use]
    pub fn lease(self, lease: Duration) -> Self {
        let lease = lease.clamp(MIN_LEASE, MAX_LEASE);
        self.config(|c| c.lease = lease)
    }

    /// Tells the layer the request timeout of the stack (the timeout layer
    /// inside it, or the server's): the heartbeat renews a request's lease
    /// for at most this long, so a handler that hangs past it frees its key
    /// one lease later instead of holding it for as long as it hangs.
    ///
    /// A lease shorter than the timeout is fine: the heartbeat renews it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use palisade::idempotency::IdempotencyLayer;
    ///
    /// let layer = IdempotencyLayer::new()
    ///     .lease(Duration::from_secs(10))
    ///     .request_timeout(Duration::from_secs(30));
    /// # let _ = layer;
    /// ```
    #[must_use]
    pub fn request_timeout(self, timeout: Duration) -> Self {
        self.config(|c| c.request_timeout = Some(timeout))
    }

    /// Which statuses are stored and replayed (default
    /// [`default_store_when`](super::default_store_when)). A response not stored releases the key so
    /// the client may retry; so do errors and panics.
    #[must_use]
    pub fn store_when(self, predicate: fn(StatusCode) -> bool) -> Self {
        self.config(|c| c.store_status = predicate)
    }

    /// What a request future dropped while the inner service runs does to
    /// its claim (default [`OnCancel::Detach`]).
    #[must_use]
    pub fn on_cancel(self, on_cancel: OnCancel) -> Self {
        self.config(|c| c.on_cancel = on_cancel)
    }

    /// What happens when the store fails (default [`OnStoreError::FailClosed`]).
    #[must_use]
    pub fn on_store_error(self, on_store_error: OnStoreError) -> Self {
        self.config(|c| c.on_store_error = on_store_error)
    }

    /// A duplicate that finds the key in flight waits up to `max` (clamped
    /// to [`MAX_WAIT`], 10 minutes) for the result (polling the store every
    /// 50 ms) instead of getting `409` at once. Off by default.
    #[must_use]
    pub fn wait_for_in_flight(self, max: Duration) -> Self {
        let max = max.min(MAX_WAIT);
        self.config(|c| c.wait = Some(max))
    }

    /// The `Retry-After` a `409` carries (default 1 s, clamped to
    /// [`MAX_RETRY_AFTER`], one hour; never more than the lease left;
    /// rounded up to whole seconds, at least 1).
    #[must_use]
    pub fn in_flight_retry_after(self, after: Duration) -> Self {
        let after = after.min(MAX_RETRY_AFTER);
        self.config(|c| c.retry_after = after)
    }

    /// Names this layer in its metrics (the `name` label) and tracing
    /// events (the `name` field), such as the route or the operation it
    /// guards; the default is
    /// [`DEFAULT_NAME`](crate::observability::DEFAULT_NAME). See
    /// [`crate::observability`].
    #[must_use]
    pub fn name(self, name: impl Into<Arc<str>>) -> Self {
        let observer = Observer::new(name.into());
        self.config(|c| c.observer = observer)
    }

    /// The store.
    pub fn store(&self) -> &St {
        &self.store
    }
}

impl<S, St: Clone, K: Clone> Layer<S> for IdempotencyLayer<St, K> {
    type Service = Idempotency<S, St, K>;

    fn layer(&self, inner: S) -> Self::Service {
        Idempotency::new(
            inner,
            self.config.clone(),
            self.store.clone(),
            self.per.clone(),
        )
    }
}
