//! The retry layer and its settings.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tower_layer::Layer;

use super::backoff::Backoff;
use super::config::{Config, DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_RETRY_AFTER};
use super::observe::Observer;
use super::service::Retry;
use crate::attempt::Budget;

/// Sends a failed request again, when that is safe, worth it and affordable.
///
/// `C` is the classifier: an [`ErrorIsRetryable`](crate::attempt::ErrorIsRetryable)
/// for any service, an [`HttpClassifier`](crate::attempt::HttpClassifier)
/// or [`GrpcClassifier`](crate::attempt::GrpcClassifier), or any
/// `Fn(&Result<Res, E>) -> Verdict`.
///
/// Clones of the layer, and every service it builds, share one retry
/// [`Budget`].
///
/// See the [module docs](super) for an example.
#[derive(Debug, Clone)]
pub struct RetryLayer<C> {
    config: Config<C>,
}

impl<C> RetryLayer<C> {
    /// A layer that classifies each attempt with `classifier`:
    /// [`DEFAULT_MAX_ATTEMPTS`] attempts, the default [`Backoff`] (50 ms to
    /// 2 s, full jitter), a new default [`Budget`], no per-try timeout, and
    /// server waits up to [`DEFAULT_MAX_RETRY_AFTER`].
    pub fn new(classifier: C) -> Self {
        Self {
            config: Config {
                classifier,
                max_attempts: DEFAULT_MAX_ATTEMPTS,
                backoff: Backoff::default(),
                budget: Budget::default(),
                per_try_timeout: None,
                max_retry_after: DEFAULT_MAX_RETRY_AFTER,
                observer: Observer::unnamed(),
                backoffs: Arc::new(AtomicU64::new(0)),
                epoch: tokio::time::Instant::now(),
            },
        }
    }

    /// The most attempts of one request, the first one included (default
    /// [`DEFAULT_MAX_ATTEMPTS`]); one turns retries off.
    #[must_use]
    pub fn max_attempts(mut self, n: NonZeroU32) -> Self {
        self.config.max_attempts = n;
        self
    }

    /// The waits between attempts (default [`Backoff::default`]). A
    /// server's requested wait replaces the backoff's for that retry.
    #[must_use]
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.config.backoff = backoff;
        self
    }

    /// The retry budget (default: a [`Budget::default`] of this layer's
    /// own). Pass a clone of one budget to every layer that sends requests
    /// to the same downstream, a hedge included, so that together they
    /// cannot multiply an outage.
    #[must_use]
    pub fn budget(mut self, budget: Budget) -> Self {
        budget.earn_by_retry();
        self.config.budget = budget;
        self
    }

    /// A timeout for each attempt (off by default): a hung attempt is
    /// dropped after `timeout` and counts as a retryable failure. Cut to
    /// what is left of the request's [`Deadline`](crate::timeout::Deadline),
    /// and written into each attempt's request as its deadline, so a
    /// per-request timeout and deadline propagation further in see it.
    /// With a deadline, a retry starts only while at least `timeout` is
    /// left.
    ///
    /// A zero timeout leaves each attempt only what it answers at once.
    #[must_use]
    pub fn per_try_timeout(mut self, timeout: Duration) -> Self {
        self.config.per_try_timeout = Some(timeout);
        self
    }

    /// The longest wait a server may ask for (`Retry-After`,
    /// `grpc-retry-pushback-ms`; default [`DEFAULT_MAX_RETRY_AFTER`]). A
    /// longer one ends the retries: the server's answer is returned as it
    /// is, `Retry-After` and all, for the caller to decide.
    #[must_use]
    pub fn max_retry_after(mut self, max: Duration) -> Self {
        self.config.max_retry_after = max;
        self
    }

    /// The name of this layer in metrics and tracing (default
    /// [`DEFAULT_NAME`](crate::observability::DEFAULT_NAME)).
    #[must_use]
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.config.observer = Observer::new(name.into());
        self
    }
}

impl<S, C: Clone> Layer<S> for RetryLayer<C> {
    type Service = Retry<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::from_config(inner, Arc::new(self.config.clone()))
    }
}
