//! The settings and the state shared by a layer and its services.

use std::time::Duration;

use super::adaptive::AdaptiveThrottle;
use super::observe::Observer;
use super::schedule::Schedule;

/// The default longest wait: a call that would wait longer is refused at
/// once, and no `Retry-After` or quota reset holds calls back longer.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(30);

/// The default first pause after a `429` that gives no `Retry-After`; it
/// doubles with each such `429`, up to the maximum wait, and an answer that
/// is not a refusal resets it.
pub const DEFAULT_PAUSE: Duration = Duration::from_secs(1);

/// What every service of one layer shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) schedule: Schedule,
    pub(crate) max_wait: Duration,
    pub(crate) adaptive: Option<AdaptiveThrottle>,
    pub(crate) observer: Observer,
}
