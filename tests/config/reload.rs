//! A config put in force through the handles, and reloaded from its file:
//! a good file changes the next decision, a bad one changes nothing, and no
//! request fails while configs come and go.

use std::convert::Infallible;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use palisade::config::{Config, Handles, Reloader};
use palisade::key::Header;
use palisade::problem::ProblemLayer;
use palisade::rate_limit::{Quota, RateLimitLayer};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

use crate::support::CapturedLogs;

/// A file of this test's own, removed on drop.
pub(crate) struct TempFile(pub(crate) PathBuf);

impl TempFile {
    pub(crate) fn new(test: &str, text: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "palisade-config-{test}-{}.toml",
            std::process::id()
        ));
        std::fs::write(&path, text).unwrap();
        Self(path)
    }

    pub(crate) fn write(&self, text: &str) {
        std::fs::write(&self.0, text).unwrap();
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn api(count: u32) -> String {
    format!("[rate_limit.api]\nquotas = [{{ count = {count}, per = \"1h\" }}]\n")
}

fn layer() -> RateLimitLayer<palisade::rate_limit::MemoryStore, Header> {
    RateLimitLayer::new(Quota::per_hour(NonZeroU32::new(1).unwrap()))
        .per(Header::api_key())
        .name("api")
}

fn stack(
    layer: RateLimitLayer<palisade::rate_limit::MemoryStore, Header>,
) -> impl Service<Request<()>, Response = Response<Bytes>, Error = Infallible, Future: Send> + Clone
{
    ServiceBuilder::new()
        .layer(ProblemLayer::new())
        .layer(layer)
        .service(service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(Response::new(Bytes::new()))
        }))
}

fn request(caller: &str) -> Request<()> {
    Request::builder()
        .header("x-api-key", caller)
        .body(())
        .unwrap()
}

/// How many requests of `caller` in a row pass, up to `max`.
async fn allowed<S>(svc: &S, caller: &str, max: usize) -> usize
where
    S: Service<Request<()>, Response = Response<Bytes>, Error = Infallible> + Clone,
{
    for n in 0..max {
        let status = svc.clone().oneshot(request(caller)).await.unwrap().status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            return n;
        }
        assert_eq!(status, StatusCode::OK);
    }
    max
}

#[tokio::test]
async fn a_good_file_applies_to_the_next_request_and_a_bad_one_changes_nothing() {
    let logs = CapturedLogs::start();
    let file = TempFile::new("good-bad", &api(3));
    let layer = layer();
    let handle = layer.handle();
    let reloader = Reloader::new(&file.0, Handles::new().rate_limit("api", layer.handle()));
    let svc = stack(layer);

    let first = reloader.load().unwrap();
    assert_eq!(first.rate_limit["api"].quotas[0].count.get(), 3);
    assert_eq!(allowed(&svc, "ann", 10).await, 3);

    // An unchanged file is not applied again.
    assert!(!reloader.reload().unwrap());

    file.write(&api(6));
    assert!(reloader.reload().unwrap());
    assert_eq!(handle.limits().quotas()[0].max_burst().get(), 6);
    assert_eq!(allowed(&svc, "bob", 10).await, 6);

    // Bad files: out of range, a layer the stack does not have, not TOML.
    let in_force = reloader.current().unwrap();
    for (bad, field) in [
        (api(0), "rate_limit.api.quotas[0].count"),
        (
            format!(
                "{}[rate_limit.apii]\nquotas = [{{ count = 1, per = \"1s\" }}]\n",
                api(100)
            ),
            "rate_limit.apii",
        ),
        ("[rate_limit.api\n".to_owned(), "line 1"),
    ] {
        file.write(&bad);
        let err = reloader.reload().unwrap_err();
        assert!(err.to_string().contains(field), "{err}");
        assert_eq!(reloader.current().unwrap(), in_force);
        assert_eq!(handle.limits().quotas()[0].max_burst().get(), 6);
        // The same bad file is not refused twice.
        assert!(!reloader.reload().unwrap());
    }
    assert_eq!(allowed(&svc, "cy", 10).await, 6);
    let text = logs.text();
    assert_eq!(
        text.matches("config refused; the one in force stays")
            .count(),
        3,
        "{text}"
    );
    assert!(text.contains("rate_limit.apii"), "{text}");
}

#[tokio::test]
async fn a_missing_file_fails_the_first_load() {
    let reloader = Reloader::new(
        std::env::temp_dir().join("palisade-config-no-such-file.toml"),
        Handles::new(),
    );
    let err = reloader.load().unwrap_err();
    assert!(err.to_string().starts_with("cannot read "), "{err}");
    assert!(reloader.current().is_none());
}

#[tokio::test]
async fn the_watcher_applies_an_edited_file_and_sighup() {
    let file = TempFile::new("watch", &api(2));
    let layer = layer();
    let handle = layer.handle();
    let reloader = Arc::new(
        Reloader::new(&file.0, Handles::new().rate_limit("api", layer.handle()))
            .poll_interval(Duration::from_millis(20)),
    );
    reloader.load().unwrap();
    let watch = reloader.clone().spawn();

    let burst =
        |handle: &palisade::rate_limit::Handle| handle.limits().quotas()[0].max_burst().get();
    file.write(&api(5));
    wait_until(|| burst(&handle) == 5, "the edit is applied").await;

    // SIGHUP applies the file again even unchanged (a poll does not): the
    // quota set by hand since is replaced by the file's.
    let pid = std::process::id().to_string();
    handle
        .set_quotas([Quota::per_hour(NonZeroU32::new(1).unwrap())])
        .unwrap();
    assert_eq!(burst(&handle), 1);
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    wait_until(|| burst(&handle) == 5, "SIGHUP re-applies the file").await;
    watch.abort();
}

async fn wait_until(mut done: impl FnMut() -> bool, what: &str) {
    let started = std::time::Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what}: not within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Requests run on four tasks while 50 configs are applied one after the
/// other: every answer is 200 or 429, none fails, and the last config is
/// the one in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_fails_while_configs_are_applied() {
    let layer = layer();
    let handle = layer.handle();
    let handles = Handles::new().rate_limit("api", layer.handle());
    let svc = stack(layer);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (answered, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let tasks: Vec<_> = (0..4)
        .map(|t| {
            let (svc, stop) = (svc.clone(), stop.clone());
            let (answered, failed) = (answered.clone(), failed.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let caller = format!("caller-{t}-{}", i % 16);
                    match svc.clone().oneshot(request(&caller)).await {
                        Ok(r)
                            if matches!(
                                r.status(),
                                StatusCode::OK | StatusCode::TOO_MANY_REQUESTS
                            ) =>
                        {
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    // The memory store answers at once: let the timer and
                    // the other tasks run.
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for n in 1..=50u32 {
        let config = Config::from_toml(&api(n)).unwrap();
        handles.apply(&config).unwrap();
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert!(answered.load(Ordering::Relaxed) > 0);
    assert_eq!(handle.limits().quotas()[0].max_burst().get(), 50);
    println!(
        "{} requests answered while 50 configs were applied, none failed",
        answered.load(Ordering::Relaxed)
    );
}

#[tokio::test(start_paused = true)]
async fn a_breakers_thresholds_change_with_its_section() {
    use palisade::circuit_breaker::{CircuitBreakerLayer, Config as BreakerConfig, State};

    let layer = CircuitBreakerLayer::new(BreakerConfig::new().name("payments"));
    let handle = layer.handle();
    let handles = Handles::new().circuit_breaker("payment", layer.handle());
    let mut svc = tower::Layer::layer(
        &layer,
        service_fn(|fail: bool| async move { if fail { Err("boom") } else { Ok("ok") } }),
    );
    // The default trips at 5 in a row; the file says 2.
    let config = Config::from_toml(
        "[circuit_breaker.payment]\nconsecutive_failures = 2\nopen_wait = \"10s\"\n",
    )
    .unwrap();
    handles.apply(&config).unwrap();
    for _ in 0..2 {
        let _ = svc.ready().await.unwrap().call(true).await;
    }
    assert_eq!(handle.state(), State::Open);
    // The section is named after the client, the breaker "payments": it
    // keeps its name.
    assert!(format!("{:?}", handle.config()).contains("\"payments\""));

    // A section that names a breaker the stack lacks changes nothing, not
    // even a good section beside it.
    handle.reset();
    let typo = Config::from_toml(
        "[circuit_breaker.payment]\nconsecutive_failures = 9\n[circuit_breaker.paymnt]\nconsecutive_failures = 1\n",
    )
    .unwrap();
    let err = handles.apply(&typo).unwrap_err();
    assert!(
        err.to_string().starts_with("circuit_breaker.paymnt: "),
        "{err}"
    );
    for _ in 0..2 {
        let _ = svc.ready().await.unwrap().call(true).await;
    }
    assert_eq!(handle.state(), State::Open, "still 2 in a row");
}

#[tokio::test(start_paused = true)]
async fn timeouts_and_bulkhead_limits_change_with_their_sections() {
    use palisade::bulkhead::BulkheadLayer;
    use palisade::timeout::TimeoutLayer;

    let timeout = TimeoutLayer::new(Duration::from_secs(10));
    let bulkhead = BulkheadLayer::new(NonZeroU32::new(1).unwrap());
    let handles = Handles::new()
        .timeout("payment", timeout.handle())
        .bulkhead("orders", bulkhead.handle());
    let config = Config::from_toml(
        "[timeout.payment]\ntimeout = \"250ms\"\n[bulkhead.orders]\nmax_in_flight = 3\n",
    )
    .unwrap();
    handles.apply(&config).unwrap();
    assert_eq!(timeout.handle().timeout(), Duration::from_millis(250));
    assert_eq!(bulkhead.handle().max_in_flight().get(), 3);

    // The timeout in force is the new one: a 1 s call times out at 250 ms.
    let mut slow = tower::Layer::layer(
        &timeout,
        service_fn(|()| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok::<_, Infallible>(())
        }),
    );
    let started = tokio::time::Instant::now();
    assert!(slow.ready().await.unwrap().call(()).await.is_err());
    assert_eq!(started.elapsed(), Duration::from_millis(250));

    // A section for a bulkhead the stack lacks changes nothing.
    let typo = Config::from_toml(
        "[timeout.payment]\ntimeout = \"5s\"\n[bulkhead.order]\nmax_in_flight = 9\n",
    )
    .unwrap();
    assert!(
        handles
            .apply(&typo)
            .unwrap_err()
            .to_string()
            .starts_with("bulkhead.order: ")
    );
    assert_eq!(timeout.handle().timeout(), Duration::from_millis(250));
}
