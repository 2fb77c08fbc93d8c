//! The per-request [`Deadline`] and the requests that can carry one.

use std::time::Duration;

use tokio::time::Instant;

/// The instant by which a request must be answered.
///
/// A per-request [`Timeout`](super::Timeout) (see
/// [`TimeoutLayer::per_request`](super::TimeoutLayer::per_request)) reads a
/// `Deadline` from the request, never lets the request run past it, and leaves
/// the deadline it applied in the request, so services further in (a handler,
/// an outgoing client stack) see what is left of the budget with
/// [`remaining`](Deadline::remaining).
///
/// The instant is a [`tokio::time::Instant`], so paused test time applies.
///
/// See the [module docs](super) for an example.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline {
    at: Instant,
}

impl Deadline {
    /// A deadline at `instant`.
    pub fn at(instant: Instant) -> Self {
        Self { at: instant }
    }

    /// A deadline `budget` from now.
    ///
    /// A budget too large to represent (such as [`Duration::MAX`]) means a
    /// deadline about thirty years away, as in tokio.
    pub fn after(budget: Duration) -> Self {
        Self::at(add(Instant::now(), budget))
    }

    /// The instant of the deadline.
    pub fn instant(&self) -> Instant {
        self.at
    }

    /// The time left until the deadline, zero once it has passed.
    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    /// Whether the deadline has passed.
    pub fn is_expired(&self) -> bool {
        self.at <= Instant::now()
    }
}

/// `now + budget`, saturating about thirty years out instead of panicking.
pub(crate) fn add(now: Instant, budget: Duration) -> Instant {
    now.checked_add(budget)
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30))
}

/// A request that can carry a [`Deadline`]: what a per-request
/// [`Timeout`](super::Timeout) needs from its request type.
///
/// With feature `http` it is implemented for `http::Request`, which keeps
/// the deadline in its extensions and has headers. Implement it for your own
/// request type to give it per-request budgets; the plain
/// [`TimeoutLayer::new`](super::TimeoutLayer::new) needs no such trait and
/// works for any request.
pub trait DeadlineRequest {
    /// The deadline the request carries, if any.
    fn deadline(&self) -> Option<Deadline>;

    /// Stores `deadline` in the request, replacing any earlier one.
    fn set_deadline(&mut self, deadline: Deadline);

    /// The value of the header `name`, for request types that have headers.
    ///
    /// The default has none and returns `None`.
    #[cfg(feature = "http")]
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    fn header(&self, name: &http::HeaderName) -> Option<&http::HeaderValue> {
        let _ = name;
        None
    }

    /// Sets the header `name` to `value`, for request types that have
    /// headers. The default does nothing.
    #[cfg(feature = "http")]
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    fn set_header(&mut self, name: &http::HeaderName, value: http::HeaderValue) {
        let _ = (name, value);
    }
}

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
impl<B> DeadlineRequest for http::Request<B> {
    fn deadline(&self) -> Option<Deadline> {
        self.extensions().get::<Deadline>().copied()
    }

    fn set_deadline(&mut self, deadline: Deadline) {
        self.extensions_mut().insert(deadline);
    }

    fn header(&self, name: &http::HeaderName) -> Option<&http::HeaderValue> {
        self.headers().get(name)
    }

    fn set_header(&mut self, name: &http::HeaderName, value: http::HeaderValue) {
        self.headers_mut().insert(name.clone(), value);
    }
}
