//! Reading and steering a breaker from outside the service stack.

use std::sync::Arc;

use tokio::sync::broadcast;

use super::breaker::Breaker;
use super::config::{Config, InvalidConfig};
use super::state::{Metrics, State, Transition};

/// Reads and steers one circuit breaker: state, metrics, transitions, and
/// forced states for operators.
///
/// Cloning a handle is cheap; every clone steers the same breaker.
///
/// ```
/// use palisade::circuit_breaker::{CircuitBreakerLayer, Config, State};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let layer = CircuitBreakerLayer::new(Config::default());
/// let handle = layer.handle();
/// let mut transitions = handle.subscribe();
/// handle.force_open();
/// assert_eq!(handle.state(), State::ForcedOpen);
/// assert_eq!(transitions.recv().await.unwrap().to, State::ForcedOpen);
/// handle.reset();
/// assert_eq!(handle.state(), State::Closed);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Handle {
    breaker: Arc<Breaker>,
}

impl Handle {
    pub(crate) fn new(breaker: Arc<Breaker>) -> Self {
        Self { breaker }
    }

    /// The current state. An open breaker whose wait is over still reads
    /// [`State::Open`] until a call arrives and turns it half-open.
    pub fn state(&self) -> State {
        self.breaker.state()
    }

    /// A snapshot of the state and the window's counts and rates.
    pub fn metrics(&self) -> Metrics {
        self.breaker.metrics()
    }

    /// Receives every state transition from now on. A receiver that falls
    /// more than 64 transitions behind loses the oldest
    /// ([`broadcast::error::RecvError::Lagged`]).
    pub fn subscribe(&self) -> broadcast::Receiver<Transition> {
        self.breaker.subscribe()
    }

    /// Holds the breaker open: every call fails fast until
    /// [`reset`](Self::reset) or another forced state.
    pub fn force_open(&self) {
        self.breaker.force(State::ForcedOpen);
    }

    /// Holds the breaker closed: calls pass and are counted in the metrics,
    /// but the breaker never trips.
    pub fn force_closed(&self) {
        self.breaker.force(State::ForcedClosed);
    }

    /// Switches the breaker off: calls pass and nothing is counted.
    pub fn disable(&self) {
        self.breaker.force(State::Disabled);
    }

    /// Back to closed with an empty window, no failure streak and the
    /// backoff reset. Also ends a forced state.
    pub fn reset(&self) {
        self.breaker.reset();
    }

    /// The settings in force: those the breaker was created with, or the
    /// latest [`set_config`](Self::set_config) gave.
    pub fn config(&self) -> Config {
        self.breaker.config()
    }

    /// Replaces every setting of the breaker from the next call on, keeping
    /// its state: a closed breaker stays closed with its failure streak, an
    /// open one keeps its remaining wait, a half-open one its probes. A
    /// window of the same kind and size keeps its counts; another starts
    /// empty. See the [module docs](super#reconfigure-at-run-time) for what
    /// applies when.
    ///
    /// The name cannot change (it labels the breaker's metrics): a config
    /// with another [`name`](Config::name) is refused with
    /// [`InvalidConfig::Renamed`] and changes nothing.
    ///
    /// ```
    /// use std::num::NonZeroU32;
    /// use palisade::circuit_breaker::{CircuitBreakerLayer, Config, InvalidConfig};
    ///
    /// let config = Config::new().name("payments");
    /// let layer = CircuitBreakerLayer::new(config.clone());
    /// let handle = layer.handle();
    ///
    /// // Trip after 3 failures in a row from the next call on.
    /// handle
    ///     .set_config(config.consecutive_failures(NonZeroU32::new(3).unwrap()))
    ///     .unwrap();
    ///
    /// let renamed = handle.set_config(Config::new().name("billing"));
    /// assert!(matches!(renamed, Err(InvalidConfig::Renamed { .. })));
    /// ```
    pub fn set_config(&self, config: Config) -> Result<(), InvalidConfig> {
        self.breaker.set_config(config)
    }
}
