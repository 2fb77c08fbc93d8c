//! The hedge layer and its handle.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tower_layer::Layer;

use super::Hedge;
use super::config::Shared;
use super::observe::Observer;
use super::stats::Stats;
use crate::attempt::{Budget, ConfigError};

/// The default [`percentile`](HedgeLayer::percentile): a hedge for the
/// slowest 5% of requests, at most.
pub const DEFAULT_PERCENTILE: f64 = 0.95;
/// The default [`window`](HedgeLayer::window) of latencies.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);
/// The default [`min_samples`](HedgeLayer::min_samples): fewer latencies say
/// little about a 95th percentile.
pub const DEFAULT_MIN_SAMPLES: NonZeroU32 = NonZeroU32::new(20).unwrap();
/// The default [`max_hedges`](HedgeLayer::max_hedges): one hedge per
/// request.
pub const DEFAULT_MAX_HEDGES: u32 = 1;
/// The most hedge decisions one request makes.
const MAX_HEDGES: u32 = 16;
/// The default [`min_delay`](HedgeLayer::min_delay): none, the percentile
/// alone decides.
pub const DEFAULT_MIN_DELAY: Duration = Duration::ZERO;

/// The settings the latency window is built from.
#[derive(Debug, Clone, Copy)]
struct Settings {
    percentile: f64,
    window: Duration,
    min_samples: NonZeroU32,
    min_delay: Duration,
}

impl Settings {
    fn stats(&self) -> Arc<Stats> {
        Arc::new(Stats::new(
            self.window,
            self.percentile,
            self.min_samples.get(),
            self.min_delay,
        ))
    }
}

/// Sends a second attempt of a request that is slower than most, and
/// returns whichever answers first.
///
/// `C` classifies each answer ([`Classify`](crate::attempt::Classify)):
/// the first answer of [`Verdict::Done`](crate::attempt::Verdict::Done)
/// wins. Requests are hedged only if they implement
/// [`Replay`](crate::attempt::Replay) and give a copy.
///
/// The services of one layer (and their clones) share one window of
/// latencies and one [`Budget`].
///
/// See the [module docs](super) for an example.
#[derive(Debug, Clone)]
pub struct HedgeLayer<C> {
    classifier: C,
    settings: Settings,
    stats: Arc<Stats>,
    budget: Budget,
    observer: Arc<Observer>,
    max_hedges: u32,
}

impl<C> HedgeLayer<C> {
    /// A layer that hedges with the defaults ([`DEFAULT_PERCENTILE`],
    /// [`DEFAULT_WINDOW`], [`DEFAULT_MIN_SAMPLES`], [`DEFAULT_MAX_HEDGES`],
    /// [`DEFAULT_MIN_DELAY`] and a new [`Budget::default`]), judging
    /// answers with `classifier`.
    pub fn new(classifier: C) -> Self {
        let settings = Settings {
            percentile: DEFAULT_PERCENTILE,
            window: DEFAULT_WINDOW,
            min_samples: DEFAULT_MIN_SAMPLES,
            min_delay: DEFAULT_MIN_DELAY,
        };
        Self {
            classifier,
            stats: settings.stats(),
            settings,
            budget: Budget::default(),
            observer: Observer::unnamed(),
            max_hedges: DEFAULT_MAX_HEDGES,
        }
    }

    /// Sends a hedge once a request has taken longer than this percentile of
    /// the window's latencies (default [`DEFAULT_PERCENTILE`]): `0.95`
    /// hedges the slowest 5%.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] unless `0 < percentile < 1`.
    pub fn percentile(mut self, percentile: f64) -> Result<Self, ConfigError> {
        // NaN fails both comparisons.
        if !(percentile > 0.0 && percentile < 1.0) {
            return Err(ConfigError::OutOfRange {
                field: "percentile",
                reason: "more than 0 and less than 1",
            });
        }
        self.settings.percentile = percentile;
        self.stats = self.settings.stats();
        Ok(self)
    }

    /// How long a latency counts towards the percentile (default
    /// [`DEFAULT_WINDOW`]). The window moves in four steps: a latency
    /// counts for between three quarters of the window and the whole of it.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for a zero window.
    pub fn window(mut self, window: Duration) -> Result<Self, ConfigError> {
        if window.is_zero() {
            return Err(ConfigError::OutOfRange {
                field: "window",
                reason: "more than zero",
            });
        }
        self.settings.window = window;
        self.stats = self.settings.stats();
        Ok(self)
    }

    /// No hedge is sent while the window holds fewer latencies than this
    /// (default [`DEFAULT_MIN_SAMPLES`]).
    #[must_use]
    pub fn min_samples(mut self, min_samples: NonZeroU32) -> Self {
        self.settings.min_samples = min_samples;
        self.stats = self.settings.stats();
        self
    }

    /// The shortest delay before a hedge, whatever the percentile says
    /// (default [`DEFAULT_MIN_DELAY`]).
    #[must_use]
    pub fn min_delay(mut self, min_delay: Duration) -> Self {
        self.settings.min_delay = min_delay;
        self.stats = self.settings.stats();
        self
    }

    /// How many hedges one request may send (default
    /// [`DEFAULT_MAX_HEDGES`]; 0 turns hedging off; more than 16 counts as
    /// 16). Each is decided one delay after the previous decision, and sent
    /// if the budget allows: with 2, a request still unanswered one delay
    /// after its hedge is hedged again.
    #[must_use]
    pub fn max_hedges(mut self, max_hedges: u32) -> Self {
        // A delay below tokio's millisecond may fire at once: the bound
        // keeps a response future's poll short whatever the delay.
        self.max_hedges = max_hedges.min(MAX_HEDGES);
        self
    }

    /// The budget hedges spend (default: a new [`Budget::default`]): each
    /// hedge takes a token, each answer of
    /// [`Verdict::Done`](crate::attempt::Verdict::Done) earns a share.
    /// Give the `RetryLayer` of the same downstream a clone, so that
    /// retries and hedges together stay within one budget; the retry then
    /// earns it alone (it sees the same successes), and the hedge only
    /// spends from it.
    #[must_use]
    pub fn budget(mut self, budget: Budget) -> Self {
        self.budget = budget;
        self
    }

    /// Names this layer in its metrics (the `name` label) and tracing
    /// events (the `name` field), such as the dependency it hedges; the
    /// default is [`DEFAULT_NAME`](crate::observability::DEFAULT_NAME).
    /// Take names from configuration, never from requests.
    #[must_use]
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.observer = Observer::new(name.into());
        self
    }

    /// A handle on the layer's latency window and budget. Take it after
    /// the setters: [`percentile`](Self::percentile),
    /// [`window`](Self::window), [`min_samples`](Self::min_samples) and
    /// [`min_delay`](Self::min_delay) start a new window.
    pub fn handle(&self) -> HedgeHandle {
        HedgeHandle {
            stats: self.stats.clone(),
            budget: self.budget.clone(),
        }
    }
}

impl<S, C: Clone> Layer<S> for HedgeLayer<C> {
    type Service = Hedge<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Hedge::from_shared(
            inner,
            Arc::new(Shared {
                classifier: self.classifier.clone(),
                stats: self.stats.clone(),
                budget: self.budget.clone(),
                observer: self.observer.clone(),
                max_hedges: self.max_hedges,
            }),
        )
    }
}

/// What a [`HedgeLayer`] sees: its current delay, its window of latencies
/// and its budget. From [`HedgeLayer::handle`].
#[derive(Debug, Clone)]
pub struct HedgeHandle {
    stats: Arc<Stats>,
    budget: Budget,
}

impl HedgeHandle {
    /// The delay after which a request sent now would be hedged, or `None`
    /// while the window holds too few latencies.
    pub fn delay(&self) -> Option<Duration> {
        self.stats.delay(Instant::now())
    }

    /// The latencies in the window.
    pub fn samples(&self) -> u64 {
        self.stats.samples(Instant::now())
    }

    /// The `q` quantile (`0.99` for the 99th percentile) of the latencies
    /// in the window, rounded up by at most 3.1%; `None` while the window
    /// is empty.
    pub fn latency(&self, q: f64) -> Option<Duration> {
        self.stats.quantile(Instant::now(), q.clamp(0.0, 1.0))
    }

    /// The budget the hedges spend.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }
}
