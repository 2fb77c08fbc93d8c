//! The wait queue of a saturated gate: how long, how long a wait, and in
//! what order it is served.

use std::num::NonZeroUsize;
use std::time::Duration;

/// The longest queue a gate accepts: 1,048,576 waiters (some 200 MB of
/// waiting requests). A longer queue is a memory leak with extra steps.
pub const MAX_QUEUED: usize = 1 << 20;

/// [`CoDel::new`]'s default target: 5 ms, as in "Fail at Scale".
pub const DEFAULT_CODEL_TARGET: Duration = Duration::from_millis(5);
/// [`CoDel::new`]'s default interval: 100 ms, as in "Fail at Scale".
pub const DEFAULT_CODEL_INTERVAL: Duration = Duration::from_millis(100);

/// A setting that would make a gate misbehave, refused when the setting is
/// built rather than found under load.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The queue is longer than [`MAX_QUEUED`].
    #[error("a queue of {asked} waiters is longer than the {max} a gate accepts")]
    QueueTooLong {
        /// The length asked for.
        asked: usize,
        /// [`MAX_QUEUED`].
        max: usize,
    },
    /// A queue whose wait is zero never serves anyone.
    #[error("a queue's maximum wait must be longer than zero")]
    ZeroWait,
    /// A request would wait in the queue longer than its whole timeout, so
    /// it would time out queued instead of being refused in time to retry
    /// elsewhere.
    #[error(
        "a queue's maximum wait ({max_wait:?}) must be shorter than the request timeout ({timeout:?})"
    )]
    WaitOutlastsTimeout {
        /// The queue's maximum wait.
        max_wait: Duration,
        /// The request timeout it was checked against.
        timeout: Duration,
    },
    /// A CoDel target must be above zero and below its interval.
    #[error("a CoDel target ({target:?}) must be above zero and below its interval ({interval:?})")]
    CoDelTarget {
        /// The target asked for.
        target: Duration,
        /// The interval asked for.
        interval: Duration,
    },
    /// A limit's bounds are empty or do not hold its starting value.
    #[error("limit bounds {min}..={max} must be non-empty and hold the initial limit {initial}")]
    LimitBounds {
        /// The lower bound.
        min: u32,
        /// The initial limit.
        initial: u32,
        /// The upper bound.
        max: u32,
    },
    /// A factor is outside the range the algorithm is defined on.
    #[error("{name} must be in {range}, got {value}")]
    OutOfRange {
        /// The setting.
        name: &'static str,
        /// The range it must be in.
        range: &'static str,
        /// The value asked for.
        value: f64,
    },
}

/// How a gate's queue is served when a permit frees.
///
/// - [`Fifo`](Self::Fifo): oldest first. Fair, and right when the queue is
///   short and waits are far below the clients' timeouts; under sustained
///   overload every request waits the longest and may time out just as it
///   is served.
/// - [`AdaptiveLifo`](Self::AdaptiveLifo): oldest first while the queue
///   keeps draining; once it has not been empty for a CoDel interval, newest
///   first, and any request queued longer than the CoDel target is shed when
///   a permit frees. As in Facebook's "Fail at Scale": under overload the
///   newest requests (whose clients still wait) are served, the stale ones
///   fail fast instead of being served after their clients gave up. Pick it
///   for user-facing servers that see sustained overload.
///
/// Within either order, a higher [`Priority`](super::Priority) is always
/// served first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum QueueOrder {
    /// First in, first out (the default).
    #[default]
    Fifo,
    /// First in, first out until the queue stands, then last in, first out
    /// with CoDel's queue timeout.
    AdaptiveLifo(CoDel),
}

/// CoDel's controlled delay, as "Fail at Scale" applies it to a request
/// queue: once the queue has not been empty for `interval`, a request may
/// wait at most `target`; while it empties within `interval`, a request may
/// wait up to `interval` (and never more than the queue's maximum wait).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoDel {
    pub(crate) target: Duration,
    pub(crate) interval: Duration,
}

impl Default for CoDel {
    /// A 5 ms target over a 100 ms interval.
    fn default() -> Self {
        Self {
            target: DEFAULT_CODEL_TARGET,
            interval: DEFAULT_CODEL_INTERVAL,
        }
    }
}

impl CoDel {
    /// A CoDel with this target and interval.
    ///
    /// # Errors
    ///
    /// [`ConfigError::CoDelTarget`] unless `0 < target < interval`.
    pub fn new(target: Duration, interval: Duration) -> Result<Self, ConfigError> {
        if target.is_zero() || target >= interval {
            return Err(ConfigError::CoDelTarget { target, interval });
        }
        Ok(Self { target, interval })
    }

    /// The longest wait once the queue stands.
    pub fn target(&self) -> Duration {
        self.target
    }

    /// How long the queue must stand before waits are cut to the target.
    pub fn interval(&self) -> Duration {
        self.interval
    }
}

/// A gate's wait queue: at most `max_queued` requests wait, each at most
/// `max_wait`, served in [`QueueOrder`]. Without a queue, a saturated gate
/// refuses at once.
///
/// ```
/// use std::time::Duration;
/// use palisade::load_shed::{ConfigError, Queue, QueueOrder};
///
/// let queue = Queue::new(64, Duration::from_millis(50))?
///     .order(QueueOrder::AdaptiveLifo(Default::default()))
///     .within(Duration::from_secs(1))?; // the request timeout
/// assert_eq!(queue.max_queued().get(), 64);
/// assert!(Queue::new(64, Duration::from_secs(2))?.within(Duration::from_secs(1)).is_err());
/// # Ok::<(), ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queue {
    pub(crate) max_queued: NonZeroUsize,
    pub(crate) max_wait: Duration,
    pub(crate) order: QueueOrder,
}

impl Queue {
    /// A FIFO queue of at most `max_queued` waiters, each waiting at most
    /// `max_wait`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::QueueTooLong`] above [`MAX_QUEUED`] (a zero length is
    /// also refused: leave the queue out instead), [`ConfigError::ZeroWait`]
    /// for a zero wait.
    pub fn new(max_queued: usize, max_wait: Duration) -> Result<Self, ConfigError> {
        let Some(len) = NonZeroUsize::new(max_queued).filter(|n| n.get() <= MAX_QUEUED) else {
            return Err(ConfigError::QueueTooLong {
                asked: max_queued,
                max: MAX_QUEUED,
            });
        };
        if max_wait.is_zero() {
            return Err(ConfigError::ZeroWait);
        }
        Ok(Self {
            max_queued: len,
            max_wait,
            order: QueueOrder::Fifo,
        })
    }

    /// Serves the queue in `order` (default [`QueueOrder::Fifo`]).
    #[must_use]
    pub fn order(mut self, order: QueueOrder) -> Self {
        self.order = order;
        self
    }

    /// Checks the wait against the request timeout of the stack: a request
    /// must be refused while its client can still retry elsewhere.
    ///
    /// # Errors
    ///
    /// [`ConfigError::WaitOutlastsTimeout`] unless `max_wait < timeout`.
    pub fn within(self, timeout: Duration) -> Result<Self, ConfigError> {
        if self.max_wait >= timeout {
            return Err(ConfigError::WaitOutlastsTimeout {
                max_wait: self.max_wait,
                timeout,
            });
        }
        Ok(self)
    }

    /// The most requests that wait at once.
    pub fn max_queued(&self) -> NonZeroUsize {
        self.max_queued
    }

    /// The longest a request waits.
    pub fn max_wait(&self) -> Duration {
        self.max_wait
    }

    /// The order the queue is served in.
    pub fn queue_order(&self) -> QueueOrder {
        self.order
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_cannot_work() {
        assert!(matches!(
            Queue::new(0, Duration::from_millis(1)),
            Err(ConfigError::QueueTooLong { asked: 0, .. })
        ));
        assert!(matches!(
            Queue::new(MAX_QUEUED + 1, Duration::from_millis(1)),
            Err(ConfigError::QueueTooLong { .. })
        ));
        assert_eq!(Queue::new(1, Duration::ZERO), Err(ConfigError::ZeroWait));
        assert!(Queue::new(MAX_QUEUED, Duration::MAX).is_ok());
        let err = Queue::new(8, Duration::from_secs(5))
            .unwrap()
            .within(Duration::from_secs(5))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "a queue's maximum wait (5s) must be shorter than the request timeout (5s)"
        );
        assert!(CoDel::new(Duration::ZERO, Duration::from_millis(1)).is_err());
        assert!(CoDel::new(Duration::from_millis(5), Duration::from_millis(5)).is_err());
        assert!(CoDel::new(Duration::from_millis(5), Duration::from_millis(6)).is_ok());
    }
}
