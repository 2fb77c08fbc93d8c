//! What a timeout layer hands to each service it builds: the budget, the
//! mode, and the name it reports under.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use super::observe::Observer;

/// The default budget for a call to a service you run: 3 s.
pub const INTERNAL_TIMEOUT: Duration = Duration::from_secs(3);

/// The default budget for a call to a third-party service, or for a request
/// to your server: 10 s.
pub const EXTERNAL_TIMEOUT: Duration = Duration::from_secs(10);

/// The mode of [`Timeout`](super::Timeout) built by
/// [`TimeoutLayer::new`](super::TimeoutLayer::new): one budget for every
/// call, any request type.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct Fixed;

/// The mode of [`Timeout`](super::Timeout) built by
/// [`TimeoutLayer::per_request`](super::TimeoutLayer::per_request): the
/// layer's timeout is a maximum that the request's
/// [`Deadline`](super::Deadline) (and budget header) can shorten.
#[derive(Debug, Clone)]
pub struct PerRequest {
    pub(crate) overrides: bool,
    #[cfg(feature = "http")]
    pub(crate) header: ::http::HeaderName,
    #[cfg(feature = "http")]
    pub(crate) read_header: bool,
    #[cfg(feature = "http")]
    pub(crate) forward_header: bool,
}

impl PerRequest {
    pub(crate) fn new() -> Self {
        Self {
            overrides: false,
            #[cfg(feature = "http")]
            header: super::REQUEST_TIMEOUT,
            #[cfg(feature = "http")]
            read_header: true,
            #[cfg(feature = "http")]
            forward_header: false,
        }
    }
}

/// The settings shared by a layer and the services it builds.
#[derive(Debug, Clone)]
pub(crate) struct Config<M> {
    pub(crate) timeout: Arc<SharedTimeout>,
    pub(crate) mode: M,
    pub(crate) observer: &'static Observer,
}

/// A layer's timeout, created once by the layer's constructor and shared by
/// its clones, the services they build and its handles: a call reads it with
/// one atomic load.
#[derive(Debug)]
pub(crate) struct SharedTimeout {
    nanos: AtomicU64,
}

impl SharedTimeout {
    pub(crate) fn new(timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            nanos: AtomicU64::new(nanos(timeout)),
        })
    }

    #[inline]
    pub(crate) fn get(&self) -> Duration {
        // Relaxed: the timeout is one value that publishes nothing else; a
        // call that races a change gets the old or the new one, both valid.
        Duration::from_nanos(self.nanos.load(Relaxed))
    }

    pub(crate) fn set(&self, timeout: Duration) {
        self.nanos.store(nanos(timeout), Relaxed);
    }
}

/// `timeout` in nanoseconds, clamped to `u64::MAX` (about 584 years): no
/// deadline is set further than about thirty years out anyway.
fn nanos(timeout: Duration) -> u64 {
    u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX)
}
