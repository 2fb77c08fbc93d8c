//! The schedule every clone shares: when the next call may be sent, and the
//! calls waiting for it, first come first served.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Waker};
use std::time::Duration;

use tokio::time::Instant;

use super::headers::Signals;

/// About thirty years, as tokio's "far future": an instant past it cannot
/// be represented.
const FAR: Duration = Duration::from_secs(86_400 * 365 * 30);

/// `at + d`, saturating about thirty years out instead of panicking.
pub(crate) fn add(at: Instant, d: Duration) -> Instant {
    at.checked_add(d).unwrap_or_else(|| at + FAR)
}

/// How late a call may be sent: its deadline (exclusive: a call sent at its
/// deadline has no time left) and the layer's maximum wait (inclusive).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limit {
    pub(crate) max: Instant,
    pub(crate) deadline: Option<Instant>,
}

impl Limit {
    fn fits(&self, at: Instant) -> bool {
        at <= self.max && self.deadline.is_none_or(|d| at < d)
    }

    /// The first instant at which a call no longer fits, whatever the
    /// schedule: a waiting call wakes then at the latest, to leave.
    fn expiry(&self) -> Instant {
        let past_max = add(self.max, Duration::from_nanos(1));
        self.deadline.map_or(past_max, |d| d.min(past_max))
    }
}

/// What the upstream said, and the calls waiting to be sent.
#[derive(Debug)]
pub(crate) struct Schedule {
    state: Mutex<State>,
    max_wait: Duration,
    first_pause: Duration,
    /// Whether the pause has grown, so a plain answer has one to reset: an
    /// answer with nothing to teach then takes no lock.
    escalated: AtomicBool,
    /// From this instant (nanoseconds after `base`) on, nothing holds a call
    /// back and nobody waits, as of the last change: a call then goes
    /// without the lock. `u64::MAX` while someone waits.
    calm_from: AtomicU64,
    base: Instant,
}

#[derive(Debug)]
struct State {
    /// No call is sent before this (a `Retry-After`, a pause, a quota spent).
    blocked_until: Option<Instant>,
    /// When the current block was set: a refusal of a call sent before it
    /// is old news and lengthens nothing.
    blocked_at: Option<Instant>,
    /// Calls are sent at least `spacing` apart until `pace_until`.
    spacing: Duration,
    pace_until: Option<Instant>,
    /// When the pace was last set, by the call sent at `paced_by`: older
    /// news is ignored.
    paced_by: Option<Instant>,
    /// The last instant a call was sent.
    last_sent: Option<Instant>,
    /// The pause after the next `429` that says nothing of when to come
    /// back: doubles with each, up to the maximum wait.
    pause: Duration,
    /// The calls waiting, in ticket order; the first is the next to go.
    waiters: VecDeque<(u64, Option<Waker>)>,
    next_ticket: u64,
}

/// A change the schedule made to itself, for the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    None,
    /// No call before `.0` from now.
    Blocked(Duration),
    /// Calls at least `.0` apart.
    Paced(Duration),
}

/// The schedule's answer to a call.
#[derive(Debug)]
pub(crate) enum Admit {
    /// Send it now.
    Now,
    /// Wait with this ticket.
    Wait(u64),
    /// It cannot go in time: the upstream allows it in `.0`.
    Refuse(Duration),
}

/// The schedule's answer to a waiting call.
#[derive(Debug)]
pub(crate) enum Turn {
    /// Send it now.
    Go,
    /// Sleep until this instant, or until woken: the first in line, until
    /// its turn; any other, until it no longer fits (so a first in line
    /// that is never polled again holds nobody past their bounds).
    SleepUntil(Instant),
    /// It no longer fits: the upstream allows it in `.0`.
    Refuse(Duration),
}

impl Schedule {
    pub(crate) fn new(max_wait: Duration, first_pause: Duration) -> Self {
        Self {
            state: Mutex::new(State {
                blocked_until: None,
                blocked_at: None,
                spacing: Duration::ZERO,
                pace_until: None,
                paced_by: None,
                last_sent: None,
                pause: first_pause.min(max_wait),
                waiters: VecDeque::new(),
                next_ticket: 0,
            }),
            max_wait,
            first_pause: first_pause.min(max_wait),
            escalated: AtomicBool::new(false),
            calm_from: AtomicU64::new(0),
            base: Instant::now(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Nanoseconds from `base` to `at`, saturating.
    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX - 1)
    }

    /// Publishes when the schedule is calm again; call with the lock held,
    /// after any change.
    fn settle(&self, state: &State) {
        let calm = if state.waiters.is_empty() {
            let mut at = state.blocked_until;
            if !state.spacing.is_zero() {
                at = at.max(state.pace_until);
            }
            at.map_or(0, |at| self.nanos(at))
        } else {
            u64::MAX
        };
        self.calm_from.store(calm, Ordering::Release);
    }

    /// Decides a new call at `now`.
    pub(crate) fn admit(&self, now: Instant, limit: Limit) -> Admit {
        // The common case, an upstream that set no limit: no lock. (A call
        // racing news of a limit goes as if sent just before it arrived.)
        if self.nanos(now) >= self.calm_from.load(Ordering::Acquire) {
            return Admit::Now;
        }
        let mut state = self.lock();
        let first = state.earliest(now);
        if state.waiters.is_empty() && first <= now {
            state.last_sent = Some(now);
            return Admit::Now;
        }
        let at = state.slot(first, state.waiters.len());
        if !limit.fits(at) {
            return Admit::Refuse(at.saturating_duration_since(now));
        }
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.waiters.push_back((ticket, None));
        self.settle(&state);
        Admit::Wait(ticket)
    }

    /// Polls a waiting call's turn, registering its waker.
    pub(crate) fn turn(&self, ticket: u64, limit: Limit, cx: &mut Context<'_>) -> Turn {
        let now = Instant::now();
        let mut state = self.lock();
        let Ok(position) = state.waiters.binary_search_by_key(&ticket, |w| w.0) else {
            // Not queued: already decided. Unreachable through the future.
            return Turn::Go;
        };
        let first = state.earliest(now);
        let at = state.slot(first, position);
        if position == 0 && at <= now {
            state.waiters.pop_front();
            state.last_sent = Some(now);
            state.wake_first();
            self.settle(&state);
            return Turn::Go;
        }
        if !limit.fits(at) {
            state.remove(position);
            self.settle(&state);
            return Turn::Refuse(at.saturating_duration_since(now));
        }
        let waker = &mut state.waiters[position].1;
        match waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => *waker = Some(cx.waker().clone()),
        }
        if position == 0 {
            Turn::SleepUntil(at)
        } else {
            // Past it, `at` (never before now) no longer fits: refused then.
            Turn::SleepUntil(limit.expiry())
        }
    }

    /// Forgets a waiting call that was dropped.
    pub(crate) fn cancel(&self, ticket: u64) {
        let mut state = self.lock();
        if let Ok(position) = state.waiters.binary_search_by_key(&ticket, |w| w.0) {
            state.remove(position);
            self.settle(&state);
        }
    }

    /// Learns from the answer to a call sent at `sent_at`.
    pub(crate) fn learn(&self, sent_at: Instant, signals: &Signals) -> Change {
        if !signals.refused
            && signals.quota.is_none()
            && signals.policy.is_none()
            && !self.escalated.load(Ordering::Relaxed)
        {
            return Change::None;
        }
        let now = Instant::now();
        let mut state = self.lock();
        let before = (state.blocked_until, state.spacing, state.pace_until);
        let mut change = Change::None;
        let fresh = state.blocked_at.is_none_or(|at| sent_at >= at);

        if signals.refused {
            // A spent quota says when too: its reset, below (unless it is
            // back at once, which a refusal belies).
            let says_when = signals
                .quota
                .is_some_and(|q| q.remaining == 0 && !q.reset.is_zero());
            let wait = match signals.retry_after {
                Some(after) => Some(after),
                // A 429 that does not say when: a pause, doubled by each
                // new one, reset by an answer that is not a refusal.
                None if signals.too_many && fresh && !says_when => {
                    let pause = state.pause;
                    state.pause = pause.saturating_mul(2).min(self.max_wait);
                    self.escalated.store(true, Ordering::Relaxed);
                    Some(pause)
                }
                None => None,
            };
            if let Some(wait) = wait {
                let wait = wait.min(self.max_wait);
                if state.block(now, wait) {
                    change = Change::Blocked(wait);
                }
            }
        } else if fresh {
            state.pause = self.first_pause;
            self.escalated.store(false, Ordering::Relaxed);
        }

        if (signals.quota.is_some() || signals.policy.is_some())
            && state.paced_by.is_none_or(|by| sent_at >= by)
        {
            state.paced_by = Some(sent_at);
            // Calls sent without the lock left no `last_sent`: this one was.
            state.last_sent = state.last_sent.max(Some(sent_at));
            if let Some(quota) = signals.quota {
                // A pause is capped at the maximum wait; a pace keeps the
                // upstream's window, one call per maximum wait at the most.
                let reset = quota.reset.min(self.max_wait);
                if quota.remaining == 0 {
                    if state.block(now, reset) {
                        change = Change::Blocked(reset);
                    }
                    // Once the quota is back, the policy's pace, so the
                    // calls held back do not all go at once; for the
                    // maximum wait past the reset, unless newer news comes.
                    if let Some(policy) = signals.policy {
                        let spacing = spread(policy.window, policy.quota).min(self.max_wait);
                        state.pace(spacing, add(now, reset.saturating_add(self.max_wait)));
                    }
                } else {
                    let spacing = spread(quota.reset, quota.remaining).min(self.max_wait);
                    // No longer than the remaining calls take at that
                    // spacing: a hostile reset of decades paces a few calls,
                    // not every call for decades.
                    let lasts =
                        quota
                            .reset
                            .min(spacing.saturating_mul(
                                u32::try_from(quota.remaining).unwrap_or(u32::MAX),
                            ));
                    state.pace(spacing, add(now, lasts));
                    if change == Change::None && !spacing.is_zero() {
                        change = Change::Paced(spacing);
                    }
                }
            }
        }

        if (state.blocked_until, state.spacing, state.pace_until) != before {
            self.settle(&state);
            // Every waiter checks again whether it still fits, and the first
            // rearms its timer for its turn.
            for (_, waker) in &mut state.waiters {
                if let Some(w) = waker.take() {
                    w.wake();
                }
            }
        }
        change
    }
}

impl State {
    /// The earliest instant the next call may be sent.
    fn earliest(&self, now: Instant) -> Instant {
        let mut at = now;
        if let Some(blocked) = self.blocked_until {
            at = at.max(blocked);
        }
        if let (Some(last), Some(until)) = (self.last_sent, self.pace_until)
            && !self.spacing.is_zero()
        {
            // Within the quota's window, one call per `spacing`; once the
            // window resets, the quota is back.
            at = at.max(add(last, self.spacing).min(until));
        }
        at
    }

    /// When the call `position` places behind the first may go, the first
    /// going at `first`.
    fn slot(&self, first: Instant, position: usize) -> Instant {
        if position == 0 || self.spacing.is_zero() {
            return first;
        }
        let Some(until) = self.pace_until else {
            return first;
        };
        let behind = self
            .spacing
            .checked_mul(clamp_u32(position as u64))
            .unwrap_or(FAR);
        add(first, behind).min(first.max(until))
    }

    /// Blocks every call until `now + wait`, unless already blocked longer.
    fn block(&mut self, now: Instant, wait: Duration) -> bool {
        let until = add(now, wait);
        if self.blocked_until.is_some_and(|b| b >= until) {
            return false;
        }
        self.blocked_until = Some(until);
        self.blocked_at = Some(now);
        true
    }

    fn pace(&mut self, spacing: Duration, until: Instant) {
        self.spacing = spacing;
        self.pace_until = Some(until);
    }

    fn remove(&mut self, position: usize) {
        self.waiters.remove(position);
        if position == 0 {
            self.wake_first();
        }
    }

    fn wake_first(&mut self) {
        if let Some((_, waker)) = self.waiters.front_mut()
            && let Some(w) = waker.take()
        {
            w.wake();
        }
    }
}

/// `window / calls`, rounded up to the nanosecond: `calls` spread this far
/// apart from the start of a window never put one more in it.
fn spread(window: Duration, calls: u64) -> Duration {
    let nanos = window.as_nanos().div_ceil(u128::from(calls.max(1)));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

fn clamp_u32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX).max(1)
}
