//! The layer and its settings.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::adaptive::AdaptiveThrottle;
use super::config::{DEFAULT_MAX_WAIT, DEFAULT_PAUSE, Shared};
use super::observe::Observer;
use super::schedule::Schedule;
use super::service::Throttle;

/// Applies [`Throttle`] to services: every service it builds, and every
/// clone of the layer and of those services, shares one schedule, learnt
/// from every answer any of them receives.
///
/// Give each upstream its own layer: the schedule is the upstream's.
///
/// See the [module docs](super) for an example.
#[derive(Clone)]
pub struct ThrottleLayer {
    settings: Settings,
    shared: Arc<Shared>,
}

#[derive(Debug, Clone)]
struct Settings {
    max_wait: Duration,
    pause: Duration,
    adaptive: Option<AdaptiveThrottle>,
    name: Arc<str>,
}

impl ThrottleLayer {
    /// A layer that waits as the upstream asks, at most
    /// [`DEFAULT_MAX_WAIT`], with no adaptive throttle.
    pub fn new() -> Self {
        Self::build(Settings {
            max_wait: DEFAULT_MAX_WAIT,
            pause: DEFAULT_PAUSE,
            adaptive: None,
            name: Arc::from(crate::observability::DEFAULT_NAME),
        })
    }

    fn build(settings: Settings) -> Self {
        let shared = Arc::new(Shared {
            schedule: Schedule::new(settings.max_wait, settings.pause),
            max_wait: settings.max_wait,
            adaptive: settings.adaptive.clone(),
            observer: if &*settings.name == crate::observability::DEFAULT_NAME {
                Observer::unnamed()
            } else {
                Observer::new(settings.name.clone())
            },
        });
        Self { settings, shared }
    }

    /// The longest a call waits for the upstream (default
    /// [`DEFAULT_MAX_WAIT`]): a call that would wait longer is refused at
    /// once with [`Error::Throttled`](super::Error::Throttled). It also
    /// caps every pause the upstream asks for, so a hostile or broken
    /// `Retry-After` (ten years) holds calls back no longer than this.
    /// Starts a new schedule.
    #[must_use]
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.settings.max_wait = max_wait;
        Self::build(self.settings)
    }

    /// The first pause after a `429` without `Retry-After` (default
    /// [`DEFAULT_PAUSE`]); it doubles with each such `429` up to the
    /// maximum wait, and resets on an answer that is not a refusal. Starts
    /// a new schedule.
    #[must_use]
    pub fn pause(mut self, pause: Duration) -> Self {
        self.settings.pause = pause;
        Self::build(self.settings)
    }

    /// Adds the SRE book's adaptive throttle (default: none). Starts a new
    /// schedule.
    #[must_use]
    pub fn adaptive(mut self, adaptive: AdaptiveThrottle) -> Self {
        self.settings.adaptive = Some(adaptive);
        Self::build(self.settings)
    }

    /// Names this layer in its metrics (the `name` label) and tracing events
    /// (the `name` field). Starts a new schedule.
    #[must_use]
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.settings.name = name.into();
        Self::build(self.settings)
    }
}

impl Default for ThrottleLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ThrottleLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThrottleLayer")
            .field("name", &self.settings.name)
            .field("max_wait", &self.settings.max_wait)
            .field("pause", &self.settings.pause)
            .field("adaptive", &self.settings.adaptive)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for ThrottleLayer {
    type Service = Throttle<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Throttle::new(inner, self.shared.clone())
    }
}
