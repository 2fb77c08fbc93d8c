//! What a finished attempt means: done, worth another attempt, or not.

use std::time::Duration;

/// What one finished attempt means to a retry, a hedge or a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// An answer to return: a success, or a failure that another attempt
    /// would only repeat (a `404`, a `422`). It earns the
    /// [`Budget`](super::Budget) a share of a token.
    Done,
    /// A failure that another attempt may fix: a connection reset, a `503`,
    /// a timed-out attempt. It takes a token from the budget. `after` is
    /// the wait the server asked for (`Retry-After`,
    /// `grpc-retry-pushback-ms`), used instead of the backoff.
    Retry {
        /// The server's requested wait, if it gave one.
        after: Option<Duration>,
    },
    /// A failure not to retry, and not the downstream's fault: a refusal
    /// made on this side (an open circuit breaker, a local limiter), or a
    /// server that asked not to be retried. It leaves the budget alone.
    Stop,
}

/// Decides what a finished attempt means.
///
/// Any `Fn(&Result<Res, E>) -> Verdict` is a classifier; ready ones are
/// [`ErrorIsRetryable`] (any service) and, with feature `http`,
/// [`HttpClassifier`](super::HttpClassifier) and
/// [`GrpcClassifier`](super::GrpcClassifier).
///
/// ```
/// use palisade::attempt::{Classify, Verdict};
///
/// #[derive(Debug)]
/// enum DbError { Deadlock, Constraint }
///
/// let classify = |result: &Result<u64, DbError>| match result {
///     Err(DbError::Deadlock) => Verdict::Retry { after: None },
///     _ => Verdict::Done,
/// };
/// assert_eq!(classify.classify(&Err(DbError::Deadlock)), Verdict::Retry { after: None });
/// assert_eq!(classify.classify(&Err(DbError::Constraint)), Verdict::Done);
/// ```
pub trait Classify<Res, E> {
    /// The verdict on `result`.
    fn classify(&self, result: &Result<Res, E>) -> Verdict;
}

impl<F, Res, E> Classify<Res, E> for F
where
    F: Fn(&Result<Res, E>) -> Verdict,
{
    #[inline]
    fn classify(&self, result: &Result<Res, E>) -> Verdict {
        self(result)
    }
}

/// What an error says about another attempt: the error side of a
/// classifier.
///
/// palisade's own errors implement it: an open circuit breaker and a
/// refusal of a bulkhead, an adaptive limiter or a rate limit are
/// [`Verdict::Stop`] (retrying into them only spins), an elapsed timeout is
/// [`Verdict::Retry`] (a retry layer stops by itself once the request's
/// deadline has passed), and a wrapped inner error answers for itself. So do
/// `std::io::Error` (a reset, a refused connection or a timeout is worth a
/// retry; other kinds are not), [`BoxError`](crate::BoxError) (an
/// `io::Error` inside, or anywhere in its `source()` chain, answers for
/// itself; any other error is retried), a tonic `Channel`'s error likewise
/// (feature `grpc`), and `Infallible`. Implement it for your transport's error to use
/// [`ErrorIsRetryable`] or the HTTP and gRPC classifiers with it.
///
/// A breaker's error boxed into a `BoxError` is no longer recognised: put
/// the retry layer directly above the breaker, so it sees
/// `circuit_breaker::Error<E>` by type.
pub trait Retryable {
    /// The verdict on an attempt that failed with this error.
    fn verdict(&self) -> Verdict;
}

/// A classifier for any service: `Ok` is [`Verdict::Done`], an error says
/// for itself through [`Retryable`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorIsRetryable;

impl<Res, E: Retryable> Classify<Res, E> for ErrorIsRetryable {
    #[inline]
    fn classify(&self, result: &Result<Res, E>) -> Verdict {
        match result {
            Ok(_) => Verdict::Done,
            Err(e) => e.verdict(),
        }
    }
}

const RETRY: Verdict = Verdict::Retry { after: None };

impl Retryable for std::convert::Infallible {
    fn verdict(&self) -> Verdict {
        match *self {}
    }
}

impl Retryable for std::io::Error {
    fn verdict(&self) -> Verdict {
        use std::io::ErrorKind::*;
        match self.kind() {
            ConnectionRefused | ConnectionReset | ConnectionAborted | NotConnected | BrokenPipe
            | TimedOut | Interrupted | UnexpectedEof | WouldBlock => RETRY,
            _ => Verdict::Stop,
        }
    }
}

impl Retryable for crate::BoxError {
    fn verdict(&self) -> Verdict {
        chain_verdict(&**self)
    }
}

/// The verdict of the first `io::Error` in an error's `source()` chain (a
/// transport wraps the socket's error in its own), or a retry when there is
/// none.
fn chain_verdict(error: &(dyn std::error::Error + 'static)) -> Verdict {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            return io.verdict();
        }
        next = error.source();
    }
    RETRY
}

/// A tonic `Channel`'s error: a connection refused or reset, a stream the
/// server refused. It answers as the `io::Error` it wraps, if any (a reset
/// is retried, a bad certificate is not), and is retried otherwise, as a
/// [`BoxError`](crate::BoxError) is; so a `RetryLayer` takes a `Channel` as
/// it is.
#[cfg(feature = "grpc")]
impl Retryable for tonic::transport::Error {
    fn verdict(&self) -> Verdict {
        chain_verdict(self)
    }
}

#[cfg(feature = "circuit-breaker")]
impl<E: Retryable> Retryable for crate::circuit_breaker::Error<E> {
    fn verdict(&self) -> Verdict {
        match self {
            Self::Open { .. } => Verdict::Stop,
            Self::Inner(e) => e.verdict(),
        }
    }
}

#[cfg(feature = "timeout")]
impl<E: Retryable> Retryable for crate::timeout::Error<E> {
    fn verdict(&self) -> Verdict {
        match self {
            Self::Elapsed { .. } => RETRY,
            // The same header would be refused again.
            Self::InvalidBudget { .. } => Verdict::Stop,
            Self::Inner(e) => e.verdict(),
        }
    }
}

#[cfg(feature = "bulkhead")]
impl<E: Retryable> Retryable for crate::bulkhead::Error<E> {
    fn verdict(&self) -> Verdict {
        match self {
            Self::Inner(e) => e.verdict(),
            _ => Verdict::Stop,
        }
    }
}

#[cfg(feature = "adaptive-concurrency")]
impl<E: Retryable> Retryable for crate::adaptive_concurrency::Error<E> {
    fn verdict(&self) -> Verdict {
        match self {
            Self::Inner(e) => e.verdict(),
            _ => Verdict::Stop,
        }
    }
}

#[cfg(feature = "rate-limit")]
impl<E: Retryable> Retryable for crate::rate_limit::Error<E> {
    fn verdict(&self) -> Verdict {
        match self {
            Self::Inner(e) => e.verdict(),
            _ => Verdict::Stop,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_io_error_anywhere_in_the_chain_answers_for_itself() {
        use std::io::{Error, ErrorKind};
        #[derive(Debug)]
        struct Wrapper(Error);
        impl std::fmt::Display for Wrapper {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("transport failed")
            }
        }
        impl std::error::Error for Wrapper {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let wrapped = |kind| -> crate::BoxError { Box::new(Wrapper(Error::from(kind))) };
        assert_eq!(wrapped(ErrorKind::ConnectionReset).verdict(), RETRY);
        assert_eq!(wrapped(ErrorKind::InvalidData).verdict(), Verdict::Stop);
        let plain: crate::BoxError = "no io inside".into();
        assert_eq!(plain.verdict(), RETRY);
    }

    #[test]
    fn io_errors_retry_only_transient_kinds() {
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(reset.verdict(), RETRY);
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert_eq!(denied.verdict(), Verdict::Stop);
        let boxed: crate::BoxError = Box::new(denied);
        assert_eq!(boxed.verdict(), Verdict::Stop);
        let other: crate::BoxError = "whatever".into();
        assert_eq!(other.verdict(), RETRY);
    }

    #[cfg(all(feature = "circuit-breaker", feature = "timeout"))]
    #[test]
    fn an_open_breaker_stops_and_an_elapsed_timeout_retries() {
        use crate::{circuit_breaker, timeout};
        type E = circuit_breaker::Error<timeout::Error<std::io::Error>>;
        let open: E = circuit_breaker::Error::Open {
            retry_after: Duration::from_secs(1),
        };
        assert_eq!(open.verdict(), Verdict::Stop);
        let elapsed: E = circuit_breaker::Error::Inner(timeout::Error::Elapsed {
            budget: Duration::from_millis(100),
        });
        assert_eq!(elapsed.verdict(), RETRY);
        assert_eq!(ErrorIsRetryable.classify(&Ok::<_, E>(())), Verdict::Done);
    }
}
