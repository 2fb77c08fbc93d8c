//! A retry budget shared by the retries and hedges of one downstream.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use super::ConfigError;

/// Tokens are kept in thousandths, so a ratio of `0.1` is exact.
const MILLI: u32 = 1000;

/// A retry budget: tokens earned by successes and spent by failures and
/// hedges, so that retries cannot multiply an outage.
///
/// It is gRPC's retry throttling, which Envoy and Finagle's budgets also
/// approximate: the budget starts full at `max_tokens`; every success adds
/// `token_ratio` tokens (never above `max_tokens`), every retryable failure
/// and every hedge takes one; another attempt is sent only while more than
/// half of `max_tokens` is left. In steady state retries stay under
/// `token_ratio` of successes; during an outage at most `max_tokens / 2`
/// failures spend the budget, then only first attempts go out until
/// successes earn it back.
///
/// Clones share the tokens: give every client of one downstream the same
/// budget (a [`RetryLayer`](crate::retry::RetryLayer) and a
/// [`HedgeLayer`](crate::hedge::HedgeLayer) can share one). A budget given
/// to a retry layer is earned by the retry layers alone: a hedge below a
/// retry sees the same successes, so it only spends from that budget, and a
/// success is counted once.
///
/// A success costs one atomic load while the budget is full, as it is in
/// steady state; no lock and no clock read.
///
/// ```
/// use std::num::NonZeroU32;
/// use palisade::attempt::Budget;
///
/// let budget = Budget::new(NonZeroU32::new(4).unwrap(), 0.5).unwrap();
/// assert!(budget.withdraw()); // 3 left: more than half of 4
/// assert!(!budget.withdraw()); // 2 left: no more retries
/// budget.deposit();
/// budget.deposit(); // 3 again
/// assert!(budget.can_withdraw());
/// ```
#[derive(Debug, Clone)]
pub struct Budget {
    inner: Arc<Tokens>,
}

#[derive(Debug)]
struct Tokens {
    /// The balance, in thousandths of a token.
    balance: AtomicU32,
    max: u32,
    ratio: u32,
    /// A retry layer earns this budget: a hedge below it must not earn the
    /// same successes again.
    #[cfg_attr(not(feature = "hedge"), allow(dead_code))]
    earned_by_retry: AtomicBool,
}

impl Budget {
    /// The default `max_tokens`, as in gRPC's documented example.
    pub const DEFAULT_MAX_TOKENS: NonZeroU32 = NonZeroU32::new(10).unwrap();
    /// The default `token_ratio`: retries stay under a tenth of successes.
    pub const DEFAULT_TOKEN_RATIO: f64 = 0.1;
    /// The largest `max_tokens`, as in gRPC.
    pub const MAX_TOKENS: u32 = 1000;

    /// A full budget of `max_tokens` (at most [`MAX_TOKENS`](Self::MAX_TOKENS))
    /// that earns `token_ratio` tokens per success (more than zero, at most
    /// `max_tokens`, counted to the thousandth).
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when either is out of range, or the ratio is not a
    /// number.
    pub fn new(max_tokens: NonZeroU32, token_ratio: f64) -> Result<Self, ConfigError> {
        let max = max_tokens.get();
        if max > Self::MAX_TOKENS {
            return Err(ConfigError::OutOfRange {
                field: "max_tokens",
                reason: "at most 1000",
            });
        }
        // NaN fails both comparisons.
        if !(token_ratio > 0.0 && token_ratio <= f64::from(max)) {
            return Err(ConfigError::OutOfRange {
                field: "token_ratio",
                reason: "more than 0 and at most max_tokens",
            });
        }
        let ratio = (token_ratio * f64::from(MILLI)).round().max(1.0) as u32;
        let max = max * MILLI;
        Ok(Self {
            inner: Arc::new(Tokens {
                balance: AtomicU32::new(max),
                max,
                ratio,
                earned_by_retry: AtomicBool::new(false),
            }),
        })
    }

    /// Records a success: earns `token_ratio` tokens.
    #[inline]
    pub fn deposit(&self) {
        let tokens = &*self.inner;
        // Full is the steady state: one load, no write, no cache line taken.
        if tokens.balance.load(Ordering::Relaxed) >= tokens.max {
            return;
        }
        let _ = tokens
            .balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_add(tokens.ratio).min(tokens.max))
            });
    }

    /// Records a retryable failure or a hedge: takes one token, and says
    /// whether another attempt may be sent (more than half the tokens left).
    pub fn withdraw(&self) -> bool {
        let tokens = &*self.inner;
        let before = tokens
            .balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(MILLI))
            })
            .unwrap_or_else(|b| b);
        before.saturating_sub(MILLI) > tokens.max / 2
    }

    /// Takes one token for an attempt no failure asked for (a hedge), only
    /// if more than half of the tokens are left after it, and says whether
    /// it did. Unlike [`withdraw`](Self::withdraw), a refusal costs nothing:
    /// a hedge that is not sent spends no token.
    pub fn try_withdraw(&self) -> bool {
        let tokens = &*self.inner;
        tokens
            .balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                (b.saturating_sub(MILLI) > tokens.max / 2).then(|| b - MILLI)
            })
            .is_ok()
    }

    /// Whether more than half of the tokens are left, without taking one: a
    /// cheap first check. [`withdraw`](Self::withdraw) and
    /// [`try_withdraw`](Self::try_withdraw) still refuse while the token
    /// they take would leave half or less (6 tokens of 10 pass this check,
    /// and no attempt).
    pub fn can_withdraw(&self) -> bool {
        self.inner.balance.load(Ordering::Relaxed) > self.inner.max / 2
    }

    /// Marks the budget as earned by a retry layer.
    #[cfg(feature = "retry")]
    pub(crate) fn earn_by_retry(&self) {
        self.inner.earned_by_retry.store(true, Ordering::Relaxed);
    }

    /// Whether a retry layer earns the budget (and a hedge must not).
    #[cfg(feature = "hedge")]
    pub(crate) fn is_earned_by_retry(&self) -> bool {
        self.inner.earned_by_retry.load(Ordering::Relaxed)
    }

    /// The tokens left.
    pub fn balance(&self) -> f64 {
        f64::from(self.inner.balance.load(Ordering::Relaxed)) / f64::from(MILLI)
    }
}

impl Default for Budget {
    /// [`DEFAULT_MAX_TOKENS`](Self::DEFAULT_MAX_TOKENS) and
    /// [`DEFAULT_TOKEN_RATIO`](Self::DEFAULT_TOKEN_RATIO).
    fn default() -> Self {
        Self::new(Self::DEFAULT_MAX_TOKENS, Self::DEFAULT_TOKEN_RATIO)
            .expect("the defaults are in range")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(max: u32, ratio: f64) -> Budget {
        Budget::new(NonZeroU32::new(max).unwrap(), ratio).unwrap()
    }

    #[test]
    fn an_outage_spends_half_then_successes_earn_it_back() {
        let b = budget(10, 0.1);
        let allowed = (0..20).filter(|_| b.withdraw()).count();
        assert_eq!(allowed, 4, "10 -> 9, 8, 7, 6 allowed; 5 is half");
        assert_eq!(b.balance(), 0.0);
        for _ in 0..50 {
            b.deposit();
        }
        assert!(!b.can_withdraw(), "5 tokens is not more than half");
        b.deposit();
        assert!(b.can_withdraw(), "5.1 is");
        for _ in 0..1000 {
            b.deposit();
        }
        assert_eq!(b.balance(), 10.0, "capped at max_tokens");
    }

    #[test]
    fn refuses_out_of_range_settings() {
        let ten = NonZeroU32::new(10).unwrap();
        assert!(Budget::new(ten, 0.0).is_err());
        assert!(Budget::new(ten, -1.0).is_err());
        assert!(Budget::new(ten, f64::NAN).is_err());
        assert!(Budget::new(ten, 11.0).is_err());
        assert!(Budget::new(NonZeroU32::new(1001).unwrap(), 0.1).is_err());
        assert!(Budget::new(NonZeroU32::new(1000).unwrap(), 1000.0).is_ok());
        assert!(
            Budget::new(ten, 0.0001).is_ok(),
            "rounded up to a thousandth"
        );
    }

    #[test]
    fn a_refused_try_withdraw_costs_nothing() {
        let b = budget(10, 0.1);
        assert_eq!((0..20).filter(|_| b.try_withdraw()).count(), 4);
        assert_eq!(b.balance(), 6.0, "10 -> 6; 5 would not be more than half");
        assert!(b.can_withdraw() && !b.try_withdraw());
        assert_eq!(b.balance(), 6.0, "the refusals took nothing");
        b.deposit();
        assert!(b.try_withdraw(), "6.1 -> 5.1");
    }

    #[test]
    fn clones_share_the_tokens() {
        let a = budget(2, 1.0);
        let b = a.clone();
        assert!(!a.withdraw());
        assert!(!b.can_withdraw());
    }

    #[test]
    fn the_balance_stays_in_bounds_under_contention() {
        use std::sync::atomic::AtomicBool;
        let b = budget(10, 0.1);
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (b, stop) = (b.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let balance = b.balance();
                    assert!((0.0..=10.0).contains(&balance), "{balance}");
                }
            })
        };
        let workers: Vec<_> = (0..4u32)
            .map(|t| {
                let b = b.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000u32 {
                        match (i.wrapping_mul(7) + t) % 5 {
                            0 => drop(b.withdraw()),
                            1 => drop(b.try_withdraw()),
                            2 => drop(b.can_withdraw()),
                            _ => b.deposit(),
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        watcher.join().unwrap();
        let balance = b.balance();
        assert!((0.0..=10.0).contains(&balance), "{balance}");
    }

    #[test]
    fn racing_try_withdraws_take_exactly_the_tokens_above_half() {
        for _ in 0..50 {
            let b = budget(10, 0.1);
            let barrier = Arc::new(std::sync::Barrier::new(4));
            let taken: usize = (0..4)
                .map(|_| {
                    let (b, barrier) = (b.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        (0..10).filter(|_| b.try_withdraw()).count()
                    })
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|h| h.join().unwrap())
                .sum();
            assert_eq!(taken, 4, "10 -> 6");
            assert_eq!(b.balance(), 6.0);
            // Failures racing past half take what is left, never below zero.
            let barrier = Arc::new(std::sync::Barrier::new(4));
            let allowed: usize = (0..4)
                .map(|_| {
                    let (b, barrier) = (b.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        (0..10).filter(|_| b.withdraw()).count()
                    })
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|h| h.join().unwrap())
                .sum();
            assert_eq!(allowed, 0, "6 -> 5 is not more than half");
            assert_eq!(b.balance(), 0.0);
        }
    }
}
