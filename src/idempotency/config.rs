//! The configuration an [`IdempotencyLayer`](super::IdempotencyLayer) builds
//! and its [`Idempotency`](super::Idempotency) services read, and the limits
//! and defaults of its setters.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderName;
use http::{Method, StatusCode};

use super::fingerprint::FingerprintMode;
use super::observe::Observer;
use crate::store::OnStoreError;

/// The largest request body the layer buffers to fingerprint it, unless
/// [`IdempotencyLayer::body_limit`](super::IdempotencyLayer::body_limit)
/// says otherwise: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// The largest response kept for replay, unless
/// [`IdempotencyLayer::response_body_limit`](super::IdempotencyLayer::response_body_limit)
/// says otherwise: 1 MiB.
pub const DEFAULT_RESPONSE_BODY_LIMIT: usize = 1024 * 1024;

/// The longest [`IdempotencyLayer::wait_for_in_flight`](super::IdempotencyLayer::wait_for_in_flight) (it clamps to it):
/// 10 minutes.
pub const MAX_WAIT: Duration = Duration::from_secs(10 * 60);

/// The longest `Retry-After` of a `409`
/// ([`IdempotencyLayer::in_flight_retry_after`](super::IdempotencyLayer::in_flight_retry_after) clamps to it): one hour.
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

/// What a layer and its services share: built by the layer's setters,
/// read by the service on every request.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) methods: Vec<Method>,
    pub(crate) required: bool,
    pub(crate) fingerprint_headers: Vec<HeaderName>,
    pub(crate) fingerprint_mode: FingerprintMode,
    pub(crate) body_limit: usize,
    pub(crate) response_body_limit: usize,
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
            .field("body_limit", &self.body_limit)
            .field("response_body_limit", &self.response_body_limit)
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

/// The default of [`IdempotencyLayer::store_when`](super::IdempotencyLayer::store_when): `2xx` and `4xx` except
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
            body_limit: DEFAULT_BODY_LIMIT,
            response_body_limit: DEFAULT_RESPONSE_BODY_LIMIT,
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
