//! The settings a layer hands its services, and the decision after each
//! attempt.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::backoff::{Backoff, Delays};
use super::observe::{Observer, Outcome};
use crate::attempt::{Budget, Verdict};

/// The default of [`RetryLayer::max_attempts`](super::RetryLayer::max_attempts):
/// three attempts, the first one included.
pub const DEFAULT_MAX_ATTEMPTS: NonZeroU32 = NonZeroU32::new(3).unwrap();

/// The default of
/// [`RetryLayer::max_retry_after`](super::RetryLayer::max_retry_after): 30 s.
pub const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub(crate) struct Config<C> {
    pub(crate) classifier: C,
    pub(crate) max_attempts: NonZeroU32,
    pub(crate) backoff: Backoff,
    pub(crate) budget: Budget,
    pub(crate) per_try_timeout: Option<Duration>,
    pub(crate) max_retry_after: Duration,
    pub(crate) observer: Arc<Observer>,
    /// Numbers the requests that back off, each its own jitter seed.
    pub(crate) backoffs: Arc<AtomicU64>,
    /// What the futures' start times count from.
    pub(crate) epoch: Instant,
}

impl<C> fmt::Debug for Config<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("name", &self.observer.name())
            .field("classifier", &std::any::type_name::<C>())
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .field("budget", &self.budget)
            .field("per_try_timeout", &self.per_try_timeout)
            .field("max_retry_after", &self.max_retry_after)
            .finish()
    }
}

/// `now + duration`, saturating about thirty years out.
pub(crate) fn add(now: Instant, duration: Duration) -> Instant {
    now.checked_add(duration)
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30))
}

impl<C> Config<C> {
    /// The time attempt may take when it starts at `now`: the per-try
    /// timeout, cut to what is left of the deadline; `None` when neither
    /// is set.
    pub(crate) fn attempt_budget(
        &self,
        now: Instant,
        deadline: Option<Instant>,
    ) -> Option<Duration> {
        let left = deadline.map(|d| d.saturating_duration_since(now));
        match (self.per_try_timeout, left) {
            (Some(per_try), Some(left)) => Some(per_try.min(left)),
            (per_try, left) => per_try.or(left),
        }
    }

    /// What follows attempt number `attempt`, whose verdict is `verdict`:
    /// `Ok(wait)` before another attempt, or `Err(outcome)` to return its
    /// answer. Records the outcome.
    pub(crate) fn decide(
        &self,
        verdict: Verdict,
        attempt: u32,
        replayable: bool,
        deadline: Option<Instant>,
        delays: &mut Option<Delays>,
        started: Option<Instant>,
    ) -> Result<Duration, Outcome> {
        let decision = self.next_step(verdict, attempt, replayable, deadline, delays);
        let outcome = match decision {
            Ok(_) => Outcome::Retried,
            Err(outcome) => outcome,
        };
        // The clock is read for the latency only where it was read at the
        // start (a deadline, a per-try timeout, DEBUG on, or a retry).
        let latency = started.map(|s| Instant::now().saturating_duration_since(s));
        self.observer.attempt(outcome, attempt, latency);
        decision
    }

    fn next_step(
        &self,
        verdict: Verdict,
        attempt: u32,
        replayable: bool,
        deadline: Option<Instant>,
        delays: &mut Option<Delays>,
    ) -> Result<Duration, Outcome> {
        let after = match verdict {
            Verdict::Done => {
                self.budget.deposit();
                return Err(Outcome::Done);
            }
            Verdict::Stop => return Err(Outcome::Stopped),
            Verdict::Retry { after } => after,
        };
        // Every retryable failure takes its token, retried or not: the budget
        // measures the downstream's health, not this request's luck.
        let allowed = self.budget.withdraw();
        // Attempts used up first: with one attempt allowed no copy is taken,
        // and that is not the request's fault.
        if attempt >= self.max_attempts.get() {
            return Err(Outcome::Exhausted);
        }
        if !replayable {
            return Err(Outcome::NotReplayable);
        }
        if after.is_some_and(|after| after > self.max_retry_after) {
            return Err(Outcome::RetryAfterTooLong);
        }
        if !allowed {
            return Err(Outcome::BudgetExhausted);
        }
        let delays = delays.get_or_insert_with(|| {
            self.backoff
                .delays_for(self.backoffs.fetch_add(1, Ordering::Relaxed))
        });
        // The backoff advances on every retry, so a server's wait for one
        // retry does not reset the growth of the next.
        let backoff = delays.next().unwrap_or(self.backoff.max());
        let wait = after.unwrap_or(backoff);
        if let Some(deadline) = deadline {
            let left = deadline
                .saturating_duration_since(Instant::now())
                .checked_sub(wait);
            let fits = match (left, self.per_try_timeout) {
                // Never an attempt sent at the deadline, even with a zero
                // per-try timeout: no time left is no time.
                (Some(left), Some(per_try)) => !left.is_zero() && left >= per_try,
                (Some(left), None) => !left.is_zero(),
                (None, _) => false,
            };
            if !fits {
                return Err(Outcome::Deadline);
            }
        }
        Ok(wait)
    }
}
