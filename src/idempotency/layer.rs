use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderName;
use http::{Method, StatusCode};
use tower_layer::Layer;

use super::error::ConfigError;
use super::fingerprint::FingerprintMode;
use super::observe::Observer;
use super::record::{MAX_LEASE, MAX_TTL, MIN_LEASE};
use super::service::Idempotency;
use super::store::{MemoryStore, Store};
use crate::key::{Caller, KeyExtractor};
use crate::store::OnStoreError;

/// The longest [`IdempotencyLayer::wait_for_in_flight`] (it clamps to it):
/// 10 minutes.
pub const MAX_WAIT: Duration = Duration::from_secs(10 * 60);

/// The longest `Retry-After` of a `409`
/// ([`IdempotencyLayer::in_flight_retry_after`] clamps to it): one hour.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60 * 60);

/// What happens to a claim when the request future is dropped while the
/// inner service runs (the client went away, an outer timeout fired). The
/// handler may be half way through its work. Once the inner service has
/// answered, the key is never released for a second run whatever this says.
/// See the table in the [module docs](super#when-the-client-hangs-up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnCancel {
    /// Release the key now, so an immediate retry runs the request again.
    /// Only right when the handler's work is itself safe to repeat or
    /// transactional, so a cancelled run left nothing behind: the retry may
    /// run while the first run's side effects are still landing.
    Release,
    /// Drop the run and keep the key claimed until its lease expires:
    /// retries get `409` until then, then run. Gives a half-done run's side
    /// effects time to land before a retry starts, but may still run the
    /// request twice.
    Hold,
    /// Run the inner service on a spawned task (default), so it finishes
    /// and stores its response even when the client left; a retry waits
    /// (`409`) and then replays it. The request runs once. Needs a Tokio
    /// runtime and `'static + Send` futures, and a hung handler keeps
    /// running (bound it with a timeout layer inside).
    #[default]
    Detach,
}


/// A scope that puts every caller in one namespace: opt in with
/// [`IdempotencyLayer::unscoped`].
///
/// **Warning**: keys are then namespaced by method and path only, so any
/// caller who sends the same key and request gets another caller's stored
/// response, headers included. Only safe when a single trusted caller (one
/// backend service) talks to the API; otherwise keep the default
/// [`Caller`] scope or set one with [`IdempotencyLayer::scope`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Unscoped;

impl<Req> KeyExtractor<Req> for Unscoped {
    fn extract(&self, _req: &Req) -> Option<String> {
        Some(String::new())
    }
}

#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) methods: Vec<Method>,
    pub(crate) required: bool,
    pub(crate) fingerprint_headers: Vec<HeaderName>,
    pub(crate) fingerprint_mode: FingerprintMode,
    pub(crate) max_request_body: usize,
    pub(crate) max_response_body: usize,
    pub(crate) stored_headers: Option<Vec<HeaderName>>,
    pub(crate) replay_session_headers: bool,
    pub(crate) ttl: Duration,
    pub(crate) lease: Duration,
    pub(crate) request_timeout: Option<Duration>,
    pub(crate) store_status: fn(StatusCode) -> bool,
    pub(crate) on_cancel: OnCancel,
    pub(crate) on_store_error: OnStoreError,
    pub(crate) wait: Option<Duration>,
    pub(crate) retry_after: Duration,
    pub(crate) observer: Arc<Observer>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("name", &self.observer.name())
            .field("methods", &self.methods)
            .field("required", &self.required)
            .field("fingerprint_headers", &self.fingerprint_headers)
            .field("fingerprint_mode", &self.fingerprint_mode)
            .field("max_request_body", &self.max_request_body)
            .field("max_response_body", &self.max_response_body)
            .field("stored_headers", &self.stored_headers)
            .field("replay_session_headers", &self.replay_session_headers)
            .field("ttl", &self.ttl)
            .field("lease", &self.lease)
            .field("request_timeout", &self.request_timeout)
            .field("on_cancel", &self.on_cancel)
            .field("on_store_error", &self.on_store_error)
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}

/// The default of [`IdempotencyLayer::store_when`]: `2xx` and `4xx` except
/// `408`, `409` and `429`, which say "try again" and must not be replayed.
pub fn default_store_when(status: StatusCode) -> bool {
    status.is_success()
        || (status.is_client_error()
            && !matches!(
                status,
                StatusCode::REQUEST_TIMEOUT | StatusCode::CONFLICT | StatusCode::TOO_MANY_REQUESTS
            ))
}

impl Default for Config {
    fn default() -> Self {
        Self {
            methods: vec![Method::POST, Method::PATCH],
            required: true,
            fingerprint_headers: Vec::new(),
            fingerprint_mode: FingerprintMode::Exact,
            max_request_body: 1024 * 1024,
            max_response_body: 1024 * 1024,
            stored_headers: None,
            replay_session_headers: false,
            ttl: Duration::from_secs(24 * 60 * 60),
            lease: Duration::from_secs(10),
            request_timeout: None,
            store_status: default_store_when,
            on_cancel: OnCancel::Detach,
            on_store_error: OnStoreError::FailClosed,
            wait: None,
            retry_after: Duration::from_secs(1),
            observer: Observer::unnamed(),
        }
    }
}

/// Applies [`Idempotency`] to a service: one execution per `Idempotency-Key`.
///
/// See the [module docs](super) for an example and the semantics.
#[derive(Clone)]
pub struct IdempotencyLayer<St = MemoryStore, K = Caller> {
    config: Arc<Config>,
    store: St,
    scope: K,
}

impl<St: fmt::Debug, K: fmt::Debug> fmt::Debug for IdempotencyLayer<St, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotencyLayer")
            .field("config", &self.config)
            .field("store", &self.store)
            .field("scope", &self.scope)
            .finish()
    }
}

impl IdempotencyLayer {
    /// A layer with a fresh [`MemoryStore`] (shared by every service this
    /// layer wraps; bounded by
    /// [`DEFAULT_MAX_RECORDS`](super::DEFAULT_MAX_RECORDS) records and
    /// [`DEFAULT_MAX_BYTES`](super::DEFAULT_MAX_BYTES) of responses, past
    /// which new keys get `503`), keys scoped by [`Caller`].
    pub fn new() -> Self {
        Self::with_store(MemoryStore::new())
    }

    /// A layer with a fresh [`MemoryStore`]; the same as [`new`](Self::new).
    pub fn memory() -> Self {
        Self::new()
    }
}

impl Default for IdempotencyLayer {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
impl IdempotencyLayer<super::RedisStore> {
    /// A layer that keeps its records in Redis, shared by every instance
    /// that uses the same Redis and prefix.
    pub fn redis(store: super::RedisStore) -> Self {
        Self::with_store(store)
    }
}

impl<St: Store> IdempotencyLayer<St> {
    /// A layer over any [`Store`], keys scoped by [`Caller`].
    pub fn with_store(store: St) -> Self {
        Self {
            config: Arc::new(Config::default()),
            store,
            scope: Caller::new(),
        }
    }
}

impl<St, K> IdempotencyLayer<St, K> {
    fn config(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(Arc::make_mut(&mut self.config));
        self
    }

    /// Namespaces keys by the caller identity `extractor` reads (API key,
    /// user, tenant), on top of method and path, so one caller can never
    /// replay another's response; the default is [`Caller`] (`X-Api-Key`,
    /// else `Authorization`, else the client IP). Give it the extractor the
    /// rate limiter keys callers by. A request for which it returns `None`
    /// is refused with `400`: put authentication before this layer.
    pub fn scope<K2>(self, extractor: K2) -> IdempotencyLayer<St, K2> {
        IdempotencyLayer {
            config: self.config,
            store: self.store,
            scope: extractor,
        }
    }

    /// Puts every caller in one namespace ([`Unscoped`]): keys are
    /// namespaced by method and path only.
    ///
    /// **Warning**: any caller who sends the same key and request then gets
    /// another caller's stored response. Only for an API that a single
    /// trusted caller talks to (one backend service).
    pub fn unscoped(self) -> IdempotencyLayer<St, Unscoped> {
        self.scope(Unscoped)
    }

    /// The methods the layer applies to (default `POST` and `PATCH`); others
    /// pass through untouched.
    #[must_use]
    pub fn methods(self, methods: impl IntoIterator<Item = Method>) -> Self {
        let methods = methods.into_iter().collect();
        self.config(|c| c.methods = methods)
    }

    /// Makes the key optional: a request without one runs without
    /// idempotency. By default it is required and its absence is a `400`.
    #[must_use]
    pub fn optional(self) -> Self {
        self.config(|c| c.required = false)
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

    /// The largest request body buffered for the fingerprint (default 1 MiB);
    /// a larger one is refused with `413` before anything runs.
    #[must_use]
    pub fn max_request_body(self, bytes: usize) -> Self {
        self.config(|c| c.max_request_body = bytes)
    }

    /// The largest response kept for replay (default 1 MiB). A larger
    /// response is passed through to the client and recorded as
    /// completed-but-not-retained: a retry gets `410` saying so, and the
    /// request never runs a second time.
    #[must_use]
    pub fn max_response_body(self, bytes: usize) -> Self {
        self.config(|c| c.max_response_body = bytes)
    }

    /// The only response headers kept for replay, exactly these (a
    /// `set-cookie` listed here is kept). By default every header is kept
    /// except hop-by-hop ones (`connection`, `transfer-encoding`, ...) and
    /// per-session ones (see
    /// [`replay_session_headers`](Self::replay_session_headers)).
    #[must_use]
    pub fn stored_headers(self, names: impl IntoIterator<Item = HeaderName>) -> Self {
        let names = names.into_iter().collect();
        self.config(|c| c.stored_headers = Some(names))
    }

    /// Keeps the per-session response headers for replay: `Set-Cookie`,
    /// `Set-Cookie2` and `Authentication-Info`, dropped by default so that a
    /// replay never hands out the session of the request that ran. Only for
    /// a handler whose cookies are not a session (a preference, a consent
    /// flag) and a caller scope that is one client.
    #[must_use]
    pub fn replay_session_headers(self) -> Self {
        self.config(|c| c.replay_session_headers = true)
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
    /// With renewal a lease shorter than the timeout is fine, so this no
    /// longer fails; it returns `Result` for compatibility.
    ///
    /// ```
    /// use std::time::Duration;
    /// use palisade::idempotency::IdempotencyLayer;
    ///
    /// let layer = IdempotencyLayer::new()
    ///     .lease(Duration::from_secs(10))
    ///     .request_timeout(Duration::from_secs(30))
    ///     .unwrap();
    /// # let _ = layer;
    /// ```
    pub fn request_timeout(self, timeout: Duration) -> Result<Self, ConfigError> {
        Ok(self.config(|c| c.request_timeout = Some(timeout)))
    }

    /// Which statuses are stored and replayed (default
    /// [`default_store_when`]). A response not stored releases the key so
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
            self.scope.clone(),
        )
    }
}
