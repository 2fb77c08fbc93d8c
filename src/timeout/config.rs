//! What a timeout layer hands to each service it builds: the budget, the
//! mode, and the name it reports under.

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
    pub(crate) timeout: Duration,
    pub(crate) mode: M,
    pub(crate) observer: &'static Observer,
}
