//! A config put in force through the layers' handles, and reloaded.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::{Config, Error};

/// How often [`Reloader::spawn`] reads the file for a change by default.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// The handles of a running stack's layers, by the name of their section
/// in a [`Config`], so a config can be put in force while requests run.
///
/// ```
/// use std::num::NonZeroU32;
/// use palisade::config::{Config, Handles};
/// use palisade::rate_limit::{Quota, RateLimitLayer};
///
/// let api = RateLimitLayer::new(Quota::per_second(NonZeroU32::new(10).unwrap())).name("api");
/// let handles = Handles::new().rate_limit("api", api.handle());
///
/// let config = Config::from_toml(r#"
///     [rate_limit.api]
///     quotas = [{ count = 50, per = "1s" }]
/// "#).unwrap();
/// handles.apply(&config).unwrap();
/// assert_eq!(api.limits().quotas()[0].max_burst().get(), 50);
///
/// // A section for a layer the stack does not have changes nothing.
/// let typo = Config::from_toml(r#"
///     [rate_limit.apii]
///     quotas = [{ count = 1, per = "1s" }]
/// "#).unwrap();
/// assert!(handles.apply(&typo).is_err());
/// assert_eq!(api.limits().quotas()[0].max_burst().get(), 50);
/// ```
#[derive(Clone, Default)]
pub struct Handles {
    #[cfg(feature = "rate-limit")]
    rate_limit: BTreeMap<String, crate::rate_limit::Handle>,
    #[cfg(feature = "circuit-breaker")]
    circuit_breaker: BTreeMap<String, crate::circuit_breaker::Handle>,
    #[cfg(feature = "timeout")]
    timeout: BTreeMap<String, crate::timeout::Handle>,
    // A bulkhead's handle is generic over its store: kept as its setter.
    #[cfg(feature = "bulkhead")]
    bulkhead: BTreeMap<String, SetLimit>,
}

#[cfg(feature = "bulkhead")]
type SetLimit = Arc<dyn Fn(std::num::NonZeroU32) + Send + Sync>;

impl Handles {
    /// No handles.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the handle of the rate limiter of section `[rate_limit.<name>]`.
    #[cfg(feature = "rate-limit")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rate-limit")))]
    #[must_use]
    pub fn rate_limit(
        mut self,
        name: impl Into<String>,
        handle: crate::rate_limit::Handle,
    ) -> Self {
        self.rate_limit.insert(name.into(), handle);
        self
    }

    /// Adds the handle of the circuit breaker of section
    /// `[circuit_breaker.<name>]`. The breaker keeps its own name (which
    /// labels its metrics) whatever the section's.
    #[cfg(feature = "circuit-breaker")]
    #[cfg_attr(docsrs, doc(cfg(feature = "circuit-breaker")))]
    #[must_use]
    pub fn circuit_breaker(
        mut self,
        name: impl Into<String>,
        handle: crate::circuit_breaker::Handle,
    ) -> Self {
        self.circuit_breaker.insert(name.into(), handle);
        self
    }

    /// Adds the handle of the timeout of section `[timeout.<name>]`.
    #[cfg(feature = "timeout")]
    #[cfg_attr(docsrs, doc(cfg(feature = "timeout")))]
    #[must_use]
    pub fn timeout(mut self, name: impl Into<String>, handle: crate::timeout::Handle) -> Self {
        self.timeout.insert(name.into(), handle);
        self
    }

    /// Adds the handle of the bulkhead of section `[bulkhead.<name>]`: its
    /// `max_in_flight` changes at run time; its `queue` is read at the
    /// start only.
    #[cfg(feature = "bulkhead")]
    #[cfg_attr(docsrs, doc(cfg(feature = "bulkhead")))]
    #[must_use]
    pub fn bulkhead<St>(
        mut self,
        name: impl Into<String>,
        handle: crate::bulkhead::Handle<St>,
    ) -> Self
    where
        St: crate::bulkhead::Store,
    {
        let set: SetLimit = Arc::new(move |limit| handle.set_max_in_flight(limit));
        self.bulkhead.insert(name.into(), set);
        self
    }

    /// Puts `config` in force, from the next request on: checks all of it
    /// first (its values, and that every section names a layer of the
    /// stack), so a config with an error changes nothing. A layer without a
    /// section keeps its settings.
    pub fn apply(&self, config: &Config) -> Result<(), Error> {
        config.validate()?;
        #[cfg(feature = "rate-limit")]
        known("rate_limit", config.rate_limit.keys(), &self.rate_limit)?;
        #[cfg(feature = "circuit-breaker")]
        known(
            "circuit_breaker",
            config.circuit_breaker.keys(),
            &self.circuit_breaker,
        )?;
        // Everything is built before anything is applied.
        #[cfg(feature = "circuit-breaker")]
        let breakers = config
            .circuit_breaker
            .iter()
            .map(|(name, section)| {
                let handle = &self.circuit_breaker[name];
                let field = format!("circuit_breaker.{name}");
                Ok((handle, section.build(handle.config().name, &field)?))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        #[cfg(feature = "timeout")]
        known("timeout", config.timeout.keys(), &self.timeout)?;
        #[cfg(feature = "bulkhead")]
        known("bulkhead", config.bulkhead.keys(), &self.bulkhead)?;
        #[cfg(feature = "rate-limit")]
        for (name, section) in &config.rate_limit {
            section.apply(&self.rate_limit[name], &format!("rate_limit.{name}"))?;
        }
        #[cfg(feature = "timeout")]
        for (name, section) in &config.timeout {
            self.timeout[name].set_timeout(section.timeout);
        }
        #[cfg(feature = "bulkhead")]
        for (name, section) in &config.bulkhead {
            (self.bulkhead[name])(section.max_in_flight);
        }
        #[cfg(feature = "circuit-breaker")]
        for (handle, breaker) in breakers {
            // Built under the breaker's own name: never refused.
            handle.set_config(breaker).map_err(|e| Error::Invalid {
                field: "circuit_breaker".into(),
                reason: e.to_string(),
            })?;
        }
        Ok(())
    }
}

/// An error for the first section that names no layer of the stack.
#[allow(dead_code)]
fn known<'a, H>(
    kind: &str,
    mut names: impl Iterator<Item = &'a String>,
    handles: &BTreeMap<String, H>,
) -> Result<(), Error> {
    match names.find(|name| !handles.contains_key(*name)) {
        None => Ok(()),
        Some(name) => Err(Error::Invalid {
            field: format!("{kind}.{name}"),
            reason: format!(
                "the stack has no layer of this name (it has: {})",
                handles.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        }),
    }
}

impl fmt::Debug for Handles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Handles");
        #[cfg(feature = "rate-limit")]
        d.field("rate_limit", &self.rate_limit.keys().collect::<Vec<_>>());
        #[cfg(feature = "circuit-breaker")]
        d.field(
            "circuit_breaker",
            &self.circuit_breaker.keys().collect::<Vec<_>>(),
        );
        #[cfg(feature = "timeout")]
        d.field("timeout", &self.timeout.keys().collect::<Vec<_>>());
        #[cfg(feature = "bulkhead")]
        d.field("bulkhead", &self.bulkhead.keys().collect::<Vec<_>>());
        d.finish()
    }
}

/// Reads a config file, puts it in force through [`Handles`], and again
/// whenever the file changes or the process gets `SIGHUP`.
///
/// A new config that is refused (it does not parse, a value is out of
/// range, a section names no layer) changes nothing: the one in force
/// stays, the error is logged at `WARN` with the field and the reason, and
/// counted in `palisade_config_reloads_total{outcome="refused"}` (with
/// feature `metrics`; `applied` for the others). No request is dropped: the
/// layers read their settings anew at each decision.
///
/// The sections of retry, hedge, idempotency, adaptive concurrency,
/// throttle and validate, and a bulkhead's `queue`, are read when the stack
/// is built: a new config that changes one is put in force for the rest,
/// and each such section is logged at `WARN` (`retry.payment changes at the
/// next start only`).
///
/// ```no_run
/// use std::sync::Arc;
/// use palisade::config::{Handles, Reloader};
///
/// # async fn run(handles: Handles) -> Result<(), palisade::config::Error> {
/// let reloader = Arc::new(Reloader::new("palisade.toml", handles).env_prefix("PALISADE"));
/// reloader.load()?; // the first load fails the start
/// let _watch = reloader.clone().spawn(); // then SIGHUP or an edit reloads it
/// # Ok(()) }
/// ```
pub struct Reloader {
    path: PathBuf,
    env_prefix: String,
    poll_interval: Duration,
    handles: Handles,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    // The config in force.
    current: Option<Arc<Config>>,
    // The file's text when last read, applied or refused: a poll that finds
    // it unchanged does nothing (a refused file is not refused again).
    seen: Option<String>,
}

impl Reloader {
    /// A reloader of the file at `path` into `handles`; nothing is read
    /// until [`load`](Self::load).
    pub fn new(path: impl Into<PathBuf>, handles: Handles) -> Self {
        Self {
            path: path.into(),
            env_prefix: String::new(),
            poll_interval: DEFAULT_POLL_INTERVAL,
            handles,
            state: Mutex::new(State::default()),
        }
    }

    /// Lets the environment variables that start with `prefix` and `__`
    /// override the file (default: none; see the [module docs](super)).
    #[must_use]
    pub fn env_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.env_prefix = prefix.into();
        self
    }

    /// How often [`spawn`](Self::spawn)'s task reads the file for a change
    /// (default [`DEFAULT_POLL_INTERVAL`]).
    #[must_use]
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// The config in force, once one was loaded.
    pub fn current(&self) -> Option<Arc<Config>> {
        self.lock().current.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads the file and puts it in force: for the start, where an error
    /// should stop the service.
    pub fn load(&self) -> Result<Arc<Config>, Error> {
        self.read(true)?;
        Ok(self.current().expect("a load sets the config"))
    }

    /// Reads the file again and puts it in force if it changed since it
    /// was last read: `Ok(true)` when a new config is in force, `Ok(false)`
    /// when the file is unchanged, and the error (logged and counted) when
    /// the new one is refused and the old one stays.
    pub fn reload(&self) -> Result<bool, Error> {
        self.read(false)
    }

    fn read(&self, force: bool) -> Result<bool, Error> {
        let result = self.try_read(force);
        match &result {
            Ok(false) => {}
            Ok(true) => {
                tracing::info!(path = %self.path.display(), "config reloaded");
                count("applied");
            }
            Err(error) => {
                tracing::warn!(
                    path = %self.path.display(),
                    %error,
                    "config refused; the one in force stays"
                );
                count("refused");
            }
        }
        result
    }

    fn try_read(&self, force: bool) -> Result<bool, Error> {
        let text = std::fs::read_to_string(&self.path).map_err(|source| Error::Read {
            path: self.path.display().to_string(),
            source,
        })?;
        {
            let mut state = self.lock();
            if !force && state.seen.as_deref() == Some(text.as_str()) {
                return Ok(false);
            }
            state.seen = Some(text.clone());
        }
        let config = Config::from_toml_with_env(&text, &self.env_prefix, std::env::vars())?;
        self.handles.apply(&config)?;
        let old = self.lock().current.replace(Arc::new(config.clone()));
        if let Some(old) = old {
            for section in start_only_changes(&old, &config) {
                tracing::warn!(
                    path = %self.path.display(),
                    section,
                    "{section} changes at the next start only"
                );
            }
        }
        Ok(true)
    }

    /// Watches for changes on the current tokio runtime: the file is read
    /// every [`poll_interval`](Self::poll_interval), and at once on
    /// `SIGHUP` (on Unix), which also applies an unchanged file again. The
    /// task runs until it is aborted; the `SIGHUP` handler is in place when
    /// this returns.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, or if the `SIGHUP` handler cannot be
    /// installed.
    pub fn spawn(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        #[cfg(unix)]
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .expect("a SIGHUP handler");
        tokio::spawn(async move {
            let mut poll = tokio::time::interval(self.poll_interval);
            poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                #[cfg(unix)]
                let force = tokio::select! {
                    _ = poll.tick() => false,
                    _ = hangup.recv() => true,
                };
                #[cfg(not(unix))]
                let force = {
                    poll.tick().await;
                    false
                };
                // Logged and counted by `read`; the loop goes on either way.
                let _ = self.read(force);
            }
        })
    }
}

/// The sections, as `kind.name`, of the layers read only at the start
/// whose settings differ between `old` and `new` (added, removed or
/// changed).
#[allow(unused_variables, unused_mut)]
fn start_only_changes(old: &Config, new: &Config) -> Vec<String> {
    let mut changed = Vec::new();
    #[cfg(feature = "retry")]
    diff("retry", &old.retry, &new.retry, &mut changed);
    #[cfg(feature = "hedge")]
    diff("hedge", &old.hedge, &new.hedge, &mut changed);
    #[cfg(feature = "idempotency")]
    diff(
        "idempotency",
        &old.idempotency,
        &new.idempotency,
        &mut changed,
    );
    #[cfg(feature = "adaptive-concurrency")]
    diff(
        "adaptive_concurrency",
        &old.adaptive_concurrency,
        &new.adaptive_concurrency,
        &mut changed,
    );
    #[cfg(feature = "throttle")]
    diff("throttle", &old.throttle, &new.throttle, &mut changed);
    #[cfg(feature = "validate")]
    diff("validate", &old.validate, &new.validate, &mut changed);
    // A bulkhead's limit changes at run time, its queue does not.
    #[cfg(feature = "bulkhead")]
    for (name, section) in &new.bulkhead {
        let before = old.bulkhead.get(name).and_then(|b| b.queue.as_ref());
        if old.bulkhead.contains_key(name) && before != section.queue.as_ref() {
            changed.push(format!("bulkhead.{name}.queue"));
        }
    }
    changed
}

#[allow(dead_code)]
fn diff<T: PartialEq>(
    kind: &str,
    old: &BTreeMap<String, T>,
    new: &BTreeMap<String, T>,
    changed: &mut Vec<String>,
) {
    let names: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for name in names {
        if old.get(name) != new.get(name) {
            changed.push(format!("{kind}.{name}"));
        }
    }
}

impl fmt::Debug for Reloader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reloader")
            .field("path", &self.path)
            .field("env_prefix", &self.env_prefix)
            .field("poll_interval", &self.poll_interval)
            .field("handles", &self.handles)
            .finish_non_exhaustive()
    }
}

fn count(outcome: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(crate::observability::CONFIG_RELOADS, "outcome" => outcome).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = outcome;
}
