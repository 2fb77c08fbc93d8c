//! The shared breaker behind a layer: one state word read without a lock on
//! the closed path, and a mutex for everything else.

#[cfg(feature = "redis")]
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::observability::RedactedKey;

use super::clock::Clock;
use super::config::{Config, InvalidConfig, Mode, Rate};
use super::observe::{CallOutcome, Observer};
use super::state::{Metrics, Outcome, Reason, State, Transition};
use super::window::{CountWindow, Counts, TimeWindow, Window};

// The state word: generation (32 bits) | consecutive failures (24) | state (8).
// The generation changes on every transition, so an outcome of a call let
// through in an earlier state is recognised and dropped.
const CODE_MASK: u64 = 0xff;
const COUNT_SHIFT: u32 = 8;
const COUNT_MASK: u64 = 0xff_ffff << COUNT_SHIFT;
const GEN_SHIFT: u32 = 32;

const CLOSED: u8 = State::Closed.code();
const HALF_OPEN: u8 = State::HalfOpen.code();
const FORCED_CLOSED: u8 = State::ForcedClosed.code();
const DISABLED: u8 = State::Disabled.code();

fn pack(generation: u32, count: u32, code: u8) -> u64 {
    (u64::from(generation) << GEN_SHIFT) | (u64::from(count) << COUNT_SHIFT) | u64::from(code)
}

fn generation(word: u64) -> u32 {
    (word >> GEN_SHIFT) as u32
}

fn count(word: u64) -> u32 {
    ((word & COUNT_MASK) >> COUNT_SHIFT) as u32
}

fn code(word: u64) -> u8 {
    (word & CODE_MASK) as u8
}

fn counting(code: u8) -> bool {
    code == CLOSED || code == FORCED_CLOSED
}

/// Open or half-open: the states that count against an ejection cap.
fn ejected(state: State) -> bool {
    matches!(state, State::Open | State::HalfOpen)
}

/// The consecutive-failure threshold of `config`; 0 in the window modes.
fn threshold(config: &Config) -> u32 {
    match config.mode {
        Mode::Consecutive(n) => n,
        Mode::Count { .. } | Mode::Time { .. } => 0,
    }
}

/// The calls a window must hold before its rates can trip the breaker.
fn minimum(config: &Config) -> u32 {
    match config.mode {
        Mode::Count { size } => config.minimum_calls.get().min(size),
        _ => config.minimum_calls.get(),
    }
    .max(1)
}

/// An empty window of `mode`; none in consecutive mode.
fn new_window(mode: Mode) -> Option<Window> {
    match mode {
        Mode::Consecutive(_) => None,
        Mode::Count { size } => Some(Window::Count(CountWindow::new(size))),
        Mode::Time { length, buckets } => Some(Window::Time(TimeWindow::new(length, buckets))),
    }
}

/// Whether `a` and `b` keep the same window: same kind, same size.
fn same_window(a: Mode, b: Mode) -> bool {
    match (a, b) {
        (Mode::Count { size: a }, Mode::Count { size: b }) => a == b,
        (
            Mode::Time {
                length: a,
                buckets: m,
            },
            Mode::Time {
                length: b,
                buckets: n,
            },
        ) => a == b && m == n,
        _ => false,
    }
}

/// The slow-call threshold of `config` in nanoseconds; `u64::MAX` when off.
fn slow_nanos(config: &Config) -> u64 {
    config.slow_call.map_or(u64::MAX, |(threshold, _)| {
        u64::try_from(threshold.as_nanos()).unwrap_or(u64::MAX)
    })
}

/// Whether the window's `counts` trip a breaker with `inner`'s settings.
fn should_trip(inner: &Inner, counts: Counts) -> Option<Reason> {
    if counts.calls < inner.minimum {
        return None;
    }
    let calls = f64::from(counts.calls);
    if f64::from(counts.failures) / calls >= inner.config.failure_rate.get() {
        return Some(Reason::FailureRate);
    }
    match inner.config.slow_call {
        Some((_, rate)) if f64::from(counts.slow) / calls >= rate.get() => {
            Some(Reason::SlowCallRate)
        }
        _ => None,
    }
}

/// What the breaker decided for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Closed (or forced closed): let it through, record the outcome under
    /// this generation.
    Call(u32),
    /// Half-open: let it through as the probe with this id.
    Probe(u64),
    /// Disabled: let it through, record nothing.
    Pass,
    /// Fail fast.
    Reject(Duration),
}

/// The open share of a keyed breaker's keys (as Envoy caps ejections).
#[derive(Debug)]
pub(crate) struct Ejection {
    pub(crate) open: AtomicUsize,
    pub(crate) keys: AtomicUsize,
    // The cap's share as `f64` bits; 0 (no share is 0) when uncapped. An
    // atomic, so the layer's setter changes it in place.
    cap: AtomicU64,
}

impl Ejection {
    pub(crate) fn new() -> Self {
        Self {
            open: AtomicUsize::new(0),
            keys: AtomicUsize::new(0),
            cap: AtomicU64::new(0),
        }
    }

    pub(crate) fn cap(&self) -> Option<Rate> {
        let share = f64::from_bits(self.cap.load(Ordering::Acquire));
        Rate::new(share).ok()
    }

    pub(crate) fn set_cap(&self, cap: Rate) {
        self.cap.store(cap.get().to_bits(), Ordering::Release);
    }

    /// Reserves one more open key, unless that would pass the cap. One key
    /// may always open.
    fn try_enter(&self) -> bool {
        let keys = self.keys.load(Ordering::Acquire);
        let cap = self.cap();
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                let allowed = match cap {
                    None => true,
                    Some(cap) => open == 0 || (open + 1) as f64 <= cap.get() * keys as f64,
                };
                allowed.then_some(open + 1)
            })
            .is_ok()
    }

    fn leave(&self) {
        let _ = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                open.checked_sub(1)
            });
    }
}

#[derive(Debug)]
struct Inner {
    // The settings in force: read under the lock, off the closed path, and
    // replaced whole by `set_config`.
    config: Config,
    // The calls a window must hold before it can trip the breaker.
    minimum: u32,
    window: Option<Window>,
    open_until: Instant,
    trips: u32,
    // Probes in flight: id and the instant their permit is taken back.
    probes: Vec<(u64, Instant)>,
    probe_successes: u32,
    next_probe: u64,
}

/// One circuit breaker, shared by every service a layer builds.
///
/// What the closed path reads is kept in atomics of their own (the
/// consecutive threshold, the slow-call threshold, the clock flags), so a
/// reconfiguration changes them in place and a call reads them as plain
/// loads; every other setting sits with the state it steers, under the lock.
#[derive(Debug)]
pub(crate) struct Breaker {
    word: AtomicU64,
    // The consecutive-failure threshold; 0 in the window modes.
    threshold: AtomicU32,
    inner: Mutex<Inner>,
    events: broadcast::Sender<Transition>,
    observer: Arc<Observer>,
    // A keyed breaker's key, redacted for logs.
    key: Option<RedactedKey>,
    ejection: Option<Arc<Ejection>>,
    attached: AtomicBool,
    // Whether this breaker counts in its observer's state gauge: from its
    // first service (or, keyed, its creation) until a keyed layer forgets it.
    gauged: AtomicBool,
    clock_at_start: AtomicBool,
    clock_at_end: AtomicBool,
    // The slow-call threshold in nanoseconds; `u64::MAX` when off.
    slow_nanos: AtomicU64,
    clock: Clock,
    // Set once when the breaker is shared across instances.
    #[cfg(feature = "redis")]
    fleet: OnceLock<Arc<super::fleet::Link>>,
}

impl Breaker {
    pub(crate) fn new(config: Config) -> Self {
        let observer = Observer::new(config.name.clone());
        Self::with_ejection(config, observer, None, None)
    }

    pub(crate) fn with_ejection(
        config: Config,
        observer: Arc<Observer>,
        key: Option<RedactedKey>,
        ejection: Option<Arc<Ejection>>,
    ) -> Self {
        let now = Instant::now();
        let (events, _) = broadcast::channel(64);
        Self {
            word: AtomicU64::new(pack(0, 0, CLOSED)),
            threshold: AtomicU32::new(threshold(&config)),
            inner: Mutex::new(Inner {
                minimum: minimum(&config),
                window: new_window(config.mode),
                open_until: now,
                trips: 0,
                probes: Vec::with_capacity(config.probes.min(1024) as usize),
                probe_successes: 0,
                next_probe: 0,
                config: config.clone(),
            }),
            clock: Clock::new(),
            slow_nanos: AtomicU64::new(slow_nanos(&config)),
            clock_at_start: AtomicBool::new(config.clock_at_start()),
            clock_at_end: AtomicBool::new(config.clock_at_end()),
            events,
            observer,
            key,
            ejection,
            attached: AtomicBool::new(true),
            gauged: AtomicBool::new(false),
            #[cfg(feature = "redis")]
            fleet: OnceLock::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The state stays consistent across a panic in a tracing subscriber.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn observer(&self) -> &Observer {
        &self.observer
    }

    /// The key of a keyed breaker, redacted, for a tracing field.
    pub(crate) fn key(&self) -> Option<tracing::field::DisplayValue<RedactedKey>> {
        self.key.map(tracing::field::display)
    }

    /// Starts counting this breaker in its state gauge. Done when the layer
    /// builds its first service, not at creation: a layer that never builds
    /// a service (a test's, a configuration check's) leaves no series behind.
    pub(crate) fn publish_state(&self) {
        if self.gauged.load(Ordering::Acquire) {
            return;
        }
        let _inner = self.lock();
        if !self.gauged.swap(true, Ordering::AcqRel) {
            self.observer.enter(self.state());
        }
    }

    /// Counts and logs a call failed fast.
    #[cold]
    #[inline(never)]
    pub(crate) fn on_rejected(&self, retry_after: Duration) {
        self.observer.count(CallOutcome::Rejected);
        tracing::debug!(
            layer = "circuit_breaker",
            name = self.observer.name(),
            key = self.key(),
            outcome = CallOutcome::Rejected.as_str(),
            state = %self.state(),
            ?retry_after,
            "circuit breaker rejected a call"
        );
    }

    /// Counts and logs a call let through, unclassified, by a disabled breaker.
    #[cold]
    #[inline(never)]
    pub(crate) fn on_passed(&self) {
        self.observer.count(CallOutcome::Disabled);
        tracing::trace!(
            layer = "circuit_breaker",
            name = self.observer.name(),
            key = self.key(),
            outcome = CallOutcome::Disabled.as_str(),
            "circuit breaker disabled: call let through"
        );
    }

    // The settings the closed path reads are loaded `Relaxed`: each is a
    // value of its own, and a call that reads one from before a
    // reconfiguration and one from after is counted under either.
    #[inline]
    pub(crate) fn clock_at_start(&self) -> bool {
        self.clock_at_start.load(Ordering::Relaxed)
    }

    #[inline]
    pub(crate) fn clock_at_end(&self) -> bool {
        self.clock_at_end.load(Ordering::Relaxed)
    }

    /// Nanoseconds since the breaker's creation, on its hot-path clock.
    #[inline]
    pub(crate) fn now_nanos(&self) -> u64 {
        self.clock.nanos()
    }

    /// Whether a call that took `nanos` is slow.
    #[inline]
    pub(crate) fn is_slow(&self, nanos: u64) -> bool {
        nanos >= self.slow_nanos.load(Ordering::Relaxed)
    }

    pub(crate) fn state(&self) -> State {
        State::from_code(code(self.word.load(Ordering::Acquire)))
    }

    /// Whether no transition happened since `call_generation`.
    #[inline]
    pub(crate) fn is_current(&self, call_generation: u32) -> bool {
        generation(self.word.load(Ordering::Acquire)) == call_generation
    }

    /// Decides whether a call may go through.
    #[inline]
    pub(crate) fn admit(&self) -> Admit {
        let word = self.word.load(Ordering::Acquire);
        match code(word) {
            CLOSED | FORCED_CLOSED => Admit::Call(generation(word)),
            DISABLED => Admit::Pass,
            _ => self.admit_slow(),
        }
    }

    #[cold]
    fn admit_slow(&self) -> Admit {
        let mut inner = self.lock();
        let word = self.word.load(Ordering::Acquire);
        let now = Instant::now();
        // A rejection is counted and logged where the call is failed, not
        // here: `poll_ready` may decide again before the call.
        match State::from_code(code(word)) {
            State::Closed | State::ForcedClosed => Admit::Call(generation(word)),
            State::Disabled => Admit::Pass,
            State::ForcedOpen => Admit::Reject(inner.config.open_wait),
            State::Open if now < inner.open_until => Admit::Reject(inner.open_until - now),
            #[cfg(feature = "redis")]
            State::Open if self.fleet_decides() => Admit::Reject(Duration::ZERO),
            State::Open => {
                self.transition(&mut inner, word, State::HalfOpen, Reason::WaitElapsed, now);
                self.admit_probe(&mut inner, now)
            }
            State::HalfOpen => self.admit_probe(&mut inner, now),
        }
    }

    fn admit_probe(&self, inner: &mut Inner, now: Instant) -> Admit {
        let before = inner.probes.len();
        inner.probes.retain(|&(_, deadline)| deadline > now);
        if inner.probes.len() < before {
            tracing::debug!(
                layer = "circuit_breaker",
                name = self.observer.name(),
                key = self.key(),
                reclaimed = before - inner.probes.len(),
                "circuit breaker took back the permit of a probe that ran past its time limit"
            );
        }
        let in_use = u32::try_from(inner.probes.len()).unwrap_or(u32::MAX);
        if in_use.saturating_add(inner.probe_successes) < inner.config.probes {
            let id = inner.next_probe;
            inner.next_probe += 1;
            let deadline = now + inner.config.probe_timeout;
            inner.probes.push((id, deadline));
            Admit::Probe(id)
        } else {
            // A probe is deciding right now; there is no better estimate.
            Admit::Reject(Duration::ZERO)
        }
    }

    /// Records the outcome of a call admitted as `Admit::Call(generation)`.
    #[inline]
    pub(crate) fn record_call(
        &self,
        call_generation: u32,
        outcome: Outcome,
        slow: bool,
        now: Option<u64>,
    ) {
        if outcome == Outcome::Ignored {
            return;
        }
        let failure = outcome == Outcome::Failure;
        let threshold = self.threshold.load(Ordering::Relaxed);
        if threshold > 0 {
            self.record_consecutive(call_generation, failure || slow, threshold);
        } else {
            self.record_window(call_generation, failure, slow, now);
        }
    }

    #[inline]
    fn record_consecutive(&self, call_generation: u32, bad: bool, threshold: u32) {
        let mut word = self.word.load(Ordering::Acquire);
        loop {
            if generation(word) != call_generation || !counting(code(word)) {
                return;
            }
            let current = count(word);
            let next = if bad { (current + 1).min(threshold) } else { 0 };
            if next != current {
                let new = (word & !COUNT_MASK) | (u64::from(next) << COUNT_SHIFT);
                if let Err(actual) =
                    self.word
                        .compare_exchange_weak(word, new, Ordering::AcqRel, Ordering::Acquire)
                {
                    word = actual;
                    continue;
                }
            }
            if bad && next >= threshold && code(word) == CLOSED {
                self.trip_consecutive(call_generation);
            }
            return;
        }
    }

    #[cold]
    fn trip_consecutive(&self, call_generation: u32) {
        let mut inner = self.lock();
        let word = self.word.load(Ordering::Acquire);
        // The threshold again, under the lock: a reconfiguration may have
        // raised it, or left the consecutive mode, since the count was read.
        let threshold = self.threshold.load(Ordering::Relaxed);
        if generation(word) == call_generation
            && code(word) == CLOSED
            && threshold > 0
            && count(word) >= threshold
        {
            self.trip(
                &mut inner,
                word,
                Reason::ConsecutiveFailures,
                Instant::now(),
            );
        }
    }

    fn record_window(&self, call_generation: u32, failure: bool, slow: bool, now: Option<u64>) {
        let mut inner = self.lock();
        let word = self.word.load(Ordering::Acquire);
        if generation(word) != call_generation || !counting(code(word)) {
            return;
        }
        let Some(window) = inner.window.as_mut() else {
            return;
        };
        let (counts, expired) =
            window.record(|| now.unwrap_or_else(|| self.now_nanos()), failure, slow);
        if code(word) != CLOSED {
            return;
        }
        // A success cannot raise a rate that did not trip the breaker, except
        // by bringing the calls up to the minimum or when older calls left a
        // time window with it: spare the two divisions of `should_trip`.
        if !failure && !slow && !expired && counts.calls != inner.minimum {
            return;
        }
        if let Some(reason) = should_trip(&inner, counts) {
            self.trip(&mut inner, word, reason, Instant::now());
        }
    }

    /// Opens a closed breaker, unless a keyed breaker's ejection cap forbids.
    fn trip(&self, inner: &mut Inner, word: u64, reason: Reason, now: Instant) {
        if let Some(ejection) = self.attached_ejection()
            && !ejection.try_enter()
        {
            tracing::debug!(
                layer = "circuit_breaker",
                name = self.observer.name(),
                key = self.key(),
                %reason,
                "circuit breaker stays closed: the share of open keys is at its cap"
            );
            return;
        }
        self.transition(inner, word, State::Open, reason, now);
    }

    fn attached_ejection(&self) -> Option<&Ejection> {
        self.ejection
            .as_deref()
            .filter(|_| self.attached.load(Ordering::Acquire))
    }

    /// Records the outcome of probe `id`.
    pub(crate) fn record_probe(&self, id: u64, outcome: Outcome, slow: bool) {
        let mut inner = self.lock();
        let Some(at) = inner.probes.iter().position(|&(probe, _)| probe == id) else {
            // Its permit was taken back, or the breaker moved on.
            return;
        };
        inner.probes.swap_remove(at);
        let word = self.word.load(Ordering::Acquire);
        if code(word) != HALF_OPEN {
            return;
        }
        match outcome {
            // The permit is free again for another probe.
            Outcome::Ignored => {}
            Outcome::Failure => self.reopen(&mut inner, word),
            Outcome::Success if slow => self.reopen(&mut inner, word),
            Outcome::Success => {
                inner.probe_successes += 1;
                if inner.probe_successes >= inner.config.probes {
                    self.transition(
                        &mut inner,
                        word,
                        State::Closed,
                        Reason::ProbesSucceeded,
                        Instant::now(),
                    );
                }
            }
        }
    }

    fn reopen(&self, inner: &mut Inner, word: u64) {
        self.transition(
            inner,
            word,
            State::Open,
            Reason::ProbeFailed,
            Instant::now(),
        );
    }

    /// Gives back the permit of probe `id`, whose call was dropped unfinished.
    pub(crate) fn release_probe(&self, id: u64) {
        let mut inner = self.lock();
        if let Some(at) = inner.probes.iter().position(|&(probe, _)| probe == id) {
            inner.probes.swap_remove(at);
            tracing::debug!(
                layer = "circuit_breaker",
                name = self.observer.name(),
                key = self.key(),
                "circuit breaker probe dropped; permit given back"
            );
        }
    }

    fn transition(&self, inner: &mut Inner, word: u64, to: State, reason: Reason, now: Instant) {
        self.transition_for(inner, word, to, reason, now, None);
    }

    /// A transition; `wait` replaces the configured open wait when opening.
    fn transition_for(
        &self,
        inner: &mut Inner,
        word: u64,
        to: State,
        reason: Reason,
        now: Instant,
        wait: Option<Duration>,
    ) {
        let from = State::from_code(code(word));
        let counts = inner.window.as_ref().map(|w| w.counts(|| self.now_nanos()));
        let failure_rate = counts.and_then(Counts::failure_rate);
        let slow_call_rate = counts.and_then(Counts::slow_rate);
        let mut open_for = None;
        match to {
            State::Open => {
                inner.trips = inner.trips.saturating_add(1);
                let wait = wait.unwrap_or_else(|| inner.config.wait_for_trip(inner.trips));
                inner.open_until = now + wait;
                open_for = Some(wait);
            }
            State::Closed => inner.trips = 0,
            _ => {}
        }
        if matches!(to, State::Closed | State::ForcedClosed | State::Disabled)
            && let Some(window) = inner.window.as_mut()
        {
            window.clear();
        }
        inner.probes.clear();
        inner.probe_successes = 0;
        self.word.store(
            pack(generation(word).wrapping_add(1), 0, to.code()),
            Ordering::Release,
        );
        if ejected(from)
            && !ejected(to)
            && let Some(ejection) = self.attached_ejection()
        {
            ejection.leave();
        }
        self.observer
            .transition(from, to, self.gauged.load(Ordering::Acquire));
        if to == State::Open {
            tracing::warn!(
                layer = "circuit_breaker",
                name = self.observer.name(),
                key = self.key(),
                from = %from,
                to = %to,
                %reason,
                failure_rate,
                slow_call_rate,
                ?open_for,
                "circuit breaker state changed"
            );
        } else {
            tracing::info!(
                layer = "circuit_breaker",
                name = self.observer.name(),
                key = self.key(),
                from = %from,
                to = %to,
                %reason,
                failure_rate,
                slow_call_rate,
                "circuit breaker state changed"
            );
        }
        // No receiver is not an error.
        let _ = self.events.send(Transition {
            from,
            to,
            reason,
            failure_rate,
            slow_call_rate,
            open_for,
        });
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Transition> {
        self.events.subscribe()
    }

    /// Moves to `to` through the handle.
    pub(crate) fn force(&self, to: State) {
        let mut inner = self.lock();
        let word = self.word.load(Ordering::Acquire);
        if code(word) != to.code() {
            self.transition(&mut inner, word, to, Reason::Forced, Instant::now());
        }
    }

    /// Back to a fresh closed breaker.
    pub(crate) fn reset(&self) {
        let mut inner = self.lock();
        let word = self.word.load(Ordering::Acquire);
        self.transition(
            &mut inner,
            word,
            State::Closed,
            Reason::Reset,
            Instant::now(),
        );
    }

    /// The settings in force.
    pub(crate) fn config(&self) -> Config {
        self.lock().config.clone()
    }

    /// Replaces the settings from the next call on, keeping the state (see
    /// [`Handle::set_config`](super::Handle::set_config)). A config with
    /// another name is refused and changes nothing.
    pub(crate) fn set_config(&self, mut config: Config) -> Result<(), InvalidConfig> {
        let mut inner = self.lock();
        config.check_name(self.observer.name())?;
        // The name stays the one the breaker was created with, spelled as it
        // was (unset and "default" name the same series).
        config.name = inner.config.name.clone();
        if !same_window(inner.config.mode, config.mode) {
            inner.window = new_window(config.mode);
        }
        inner.minimum = minimum(&config);
        let threshold = threshold(&config);
        if threshold == 0 {
            // The window modes keep no streak: none is left to show in the
            // metrics, or to carry back into a consecutive mode later. The
            // generation stays, so calls in flight still count. (A failure
            // recorded at this very moment under the old threshold may still
            // add one to the count; it cannot trip, as `trip_consecutive`
            // reads the threshold again.)
            let _ = self
                .word
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                    (count(word) != 0).then_some(word & !COUNT_MASK)
                });
        }
        // A failure streak is kept across a change of the threshold: a
        // breaker at 3 failures of 5, lowered to 3, trips on the next one.
        self.threshold.store(threshold, Ordering::Relaxed);
        self.slow_nanos
            .store(slow_nanos(&config), Ordering::Relaxed);
        self.clock_at_start
            .store(config.clock_at_start(), Ordering::Relaxed);
        self.clock_at_end
            .store(config.clock_at_end(), Ordering::Relaxed);
        inner.config = config;
        // A keyed layer logs once for all of its keys.
        if self.key.is_none() {
            tracing::info!(
                layer = "circuit_breaker",
                name = self.observer.name(),
                config = ?inner.config,
                "circuit breaker reconfigured"
            );
        }
        // Fewer probes than have already succeeded: the half-open breaker
        // has its proof, and no further probe would be let through to
        // close it.
        let word = self.word.load(Ordering::Acquire);
        if code(word) == HALF_OPEN && inner.probe_successes >= inner.config.probes {
            self.transition(
                &mut inner,
                word,
                State::Closed,
                Reason::ProbesSucceeded,
                Instant::now(),
            );
        }
        Ok(())
    }

    pub(crate) fn metrics(&self) -> Metrics {
        let inner = self.lock();
        let word = self.word.load(Ordering::Acquire);
        let counts = inner
            .window
            .as_ref()
            .map(|w| w.counts(|| self.now_nanos()))
            .unwrap_or_default();
        Metrics {
            state: State::from_code(code(word)),
            calls_in_window: counts.calls,
            failures_in_window: counts.failures,
            slow_calls_in_window: counts.slow,
            failure_rate: counts.failure_rate(),
            slow_call_rate: counts.slow_rate(),
            consecutive_failures: count(word),
            trips: inner.trips,
        }
    }

    /// Whether this breaker counts against its keyed ejection cap right now.
    pub(crate) fn is_ejected(&self) -> bool {
        ejected(self.state())
    }

    /// Takes a keyed breaker out of its registry's ejection accounting.
    pub(crate) fn detach(&self) {
        let _inner = self.lock();
        let state = self.state();
        if self.gauged.swap(false, Ordering::AcqRel) {
            self.observer.leave(state);
        }
        if self.attached.swap(false, Ordering::AcqRel)
            && ejected(state)
            && let Some(ejection) = self.ejection.as_deref()
        {
            ejection.leave();
        }
    }
}

/// What a breaker shared across instances learns from, and tells, the fleet.
#[cfg(feature = "redis")]
impl Breaker {
    /// Links this breaker to its fleet; `false` if it already has one.
    pub(crate) fn link(&self, link: Arc<super::fleet::Link>) -> bool {
        self.fleet.set(link).is_ok()
    }

    pub(crate) fn fleet(&self) -> Option<&Arc<super::fleet::Link>> {
        self.fleet.get()
    }

    /// Whether the fleet, not this instance, decides who probes: an open
    /// breaker whose wait is over asks for the fleet's probe lease (in the
    /// background) and refuses meanwhile. While Redis is out of reach, the
    /// breaker probes on its own.
    fn fleet_decides(&self) -> bool {
        self.fleet.get().is_some_and(|link| link.ask_probe())
    }

    /// Another instance opened the breaker for `wait` (or holds the probe
    /// lease for that long): open, or stay open that long. A forced or
    /// disabled breaker keeps its state.
    pub(crate) fn remote_open(&self, wait: Duration) {
        let mut inner = self.lock();
        let word = self.word.load(Ordering::Acquire);
        let now = Instant::now();
        match State::from_code(code(word)) {
            State::Open => inner.open_until = now + wait,
            State::Closed | State::HalfOpen => self.transition_for(
                &mut inner,
                word,
                State::Open,
                Reason::Fleet,
                now,
                Some(wait),
            ),
            State::ForcedOpen | State::ForcedClosed | State::Disabled => {}
        }
    }

    /// Another instance closed the breaker after its probes succeeded.
    pub(crate) fn remote_closed(&self) {
        let mut inner = self.lock();
        let word = self.word.load(Ordering::Acquire);
        if matches!(State::from_code(code(word)), State::Open | State::HalfOpen) {
            self.transition(
                &mut inner,
                word,
                State::Closed,
                Reason::Fleet,
                Instant::now(),
            );
        }
    }

    /// This instance holds the fleet's probe lease: half-open, so the next
    /// calls are its probes. `false` if the breaker is no longer open.
    pub(crate) fn grant_probe(&self) -> bool {
        let mut inner = self.lock();
        let word = self.word.load(Ordering::Acquire);
        if State::from_code(code(word)) != State::Open {
            return false;
        }
        self.transition(
            &mut inner,
            word,
            State::HalfOpen,
            Reason::WaitElapsed,
            Instant::now(),
        );
        true
    }

    /// How long a probe may run, as the settings in force say: the fleet's
    /// probe lease lasts as long.
    pub(crate) fn probe_timeout(&self) -> Duration {
        self.lock().config.probe_timeout
    }

    /// How many probes this breaker has let through since its creation.
    pub(crate) fn probes_started(&self) -> u64 {
        self.lock().next_probe
    }

    /// What is left of the open wait, when open.
    pub(crate) fn open_remaining(&self) -> Option<Duration> {
        let inner = self.lock();
        (self.state() == State::Open)
            .then(|| inner.open_until.saturating_duration_since(Instant::now()))
    }
}
