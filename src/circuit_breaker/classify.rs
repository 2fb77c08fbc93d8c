//! Deciding what a finished call means to the breaker.

use super::state::Outcome;

/// Decides whether a finished call is a success, a failure or ignored.
///
/// Any `Fn(&Result<T, E>) -> Outcome` is a classifier, so an HTTP 5xx
/// response can count as a failure and a 4xx error as nothing:
///
/// ```
/// use palisade::circuit_breaker::{CircuitBreakerLayer, Config, Outcome};
///
/// let layer = CircuitBreakerLayer::new(Config::default()).classify(
///     |result: &Result<http::Response<()>, std::convert::Infallible>| match result {
///         Ok(response) if response.status().is_server_error() => Outcome::Failure,
///         Ok(response) if response.status().is_client_error() => Outcome::Ignored,
///         _ => Outcome::Success,
///     },
/// );
/// # let _ = layer;
/// ```
///
/// The classifier is cloned into every response future: keep it cheap to
/// clone (a closure without captures, or one holding an `Arc`).
pub trait Classify<T, E> {
    /// The outcome of `result`.
    fn classify(&self, result: &Result<T, E>) -> Outcome;
}

/// The default classifier: `Ok` is a success, `Err` a failure.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorIsFailure;

impl<T, E> Classify<T, E> for ErrorIsFailure {
    #[inline]
    fn classify(&self, result: &Result<T, E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        }
    }
}

impl<F, T, E> Classify<T, E> for F
where
    F: Fn(&Result<T, E>) -> Outcome,
{
    #[inline]
    fn classify(&self, result: &Result<T, E>) -> Outcome {
        self(result)
    }
}
