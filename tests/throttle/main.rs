#![cfg(feature = "throttle")]
//! Throttle: a client stack against test upstreams that answer `429`s and
//! rate-limit fields, on paused time: the schedule learnt and shared, the
//! deadline and the maximum wait, waiters dropped, the adaptive throttle,
//! the metrics, events and the HTTP surface.

#[path = "../support/mod.rs"]
mod support;

#[cfg(feature = "metrics")]
#[path = "../support/recording.rs"]
mod recording;

mod adaptive;
mod contract;
mod headers;
mod observe;
mod schedule;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use palisade::timeout::{Deadline, DeadlineRequest};
use tokio::time::Instant;
use tower::{Service, service_fn};

pub(crate) const SEC: Duration = Duration::from_secs(1);

/// The instants at which an upstream received requests.
#[derive(Clone, Default)]
pub(crate) struct Log(Arc<Mutex<Vec<Instant>>>);

impl Log {
    pub(crate) fn instants(&self) -> Vec<Instant> {
        self.0.lock().unwrap().clone()
    }

    pub(crate) fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// The instants as offsets from `start`, in whole milliseconds.
    pub(crate) fn millis_since(&self, start: Instant) -> Vec<u128> {
        self.instants()
            .iter()
            .map(|i| i.duration_since(start).as_millis())
            .collect()
    }
}

/// A test upstream: the `n`th request (from 0) is answered by `answer(n)`;
/// every request's instant is logged.
pub(crate) fn upstream(
    answer: impl Fn(usize) -> Response<()> + Send + Sync + 'static,
) -> (
    impl Service<Request<()>, Response = Response<()>, Error = Infallible, Future: Send>
    + Clone
    + Send
    + 'static,
    Log,
) {
    let log = Log::default();
    let answer = Arc::new(answer);
    let l = log.clone();
    let svc = service_fn(move |_req: Request<()>| {
        let n = {
            let mut instants = l.0.lock().unwrap();
            instants.push(Instant::now());
            instants.len() - 1
        };
        let response = answer(n);
        async move { Ok::<_, Infallible>(response) }
    });
    (svc, log)
}

/// A response of `status` with `headers`.
pub(crate) fn answer(status: u16, headers: &[(&str, &str)]) -> Response<()> {
    let mut builder = Response::builder().status(StatusCode::from_u16(status).unwrap());
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).unwrap()
}

/// A `GET` with no deadline.
pub(crate) fn get() -> Request<()> {
    Request::get("/items").body(()).unwrap()
}

/// A `GET` that must be answered within `budget`.
pub(crate) fn get_within(budget: Duration) -> Request<()> {
    let mut req = get();
    req.set_deadline(Deadline::after(budget));
    req
}
