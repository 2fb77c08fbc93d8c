//! Infrastructure: the process's metrics recorder, read by `GET /metrics`.
//!
//! palisade's layers record through the `metrics` facade (feature
//! `metrics`); the demo installs a Prometheus recorder for them and adds one
//! metric of its own, [`HTTP_REQUEST_DURATION`]. There is no exporter
//! listener: `GET /metrics` renders the recorder's state in the API's own
//! server, behind the admin token.

use std::sync::OnceLock;
use std::time::Duration;

use http::{Method, StatusCode};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// `http_server_request_duration_seconds`: every request the API answered,
/// by `method`, `route` (the route's pattern, `unmatched` for none) and
/// `status`; its `_count` is the number of requests.
pub(crate) const HTTP_REQUEST_DURATION: &str = "http_server_request_duration_seconds";

/// Histogram buckets, in seconds: a loopback hop (sub-millisecond) up to the
/// slowest payment the demo waits for (10 s timeout, retried).
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// How often recorded histogram samples are folded into their buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The Prometheus recorder of this process, installed on first use.
///
/// A recorder is process-wide, while a process may serve several instances
/// (the tests start many): all of them record into this one. If another
/// recorder was installed first, this one stays empty and a warning says so.
pub(crate) fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(BUCKETS)
            .expect("buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        match metrics::set_global_recorder(recorder) {
            Ok(()) => {
                palisade::observability::describe_metrics();
                metrics::describe_histogram!(
                    HTTP_REQUEST_DURATION,
                    metrics::Unit::Seconds,
                    "Requests answered by the order API, by method, route and status."
                );
                // Without an exporter listener nobody else drains the
                // histograms' sample buffers; a thread, so it does not
                // depend on the runtime that happened to call first.
                let upkeep = handle.clone();
                let spawned = std::thread::Builder::new()
                    .name("metrics-upkeep".to_owned())
                    .spawn(move || {
                        loop {
                            std::thread::sleep(UPKEEP_EVERY);
                            upkeep.run_upkeep();
                        }
                    });
                if let Err(error) = spawned {
                    tracing::warn!(%error, "no metrics upkeep thread; histograms drain on scrape only");
                }
            }
            Err(_) => tracing::warn!("another metrics recorder is installed; /metrics stays empty"),
        }
        handle
    })
}

/// Records one answered request in [`HTTP_REQUEST_DURATION`].
pub(crate) fn record_request(
    method: &Method,
    route: Option<&str>,
    status: StatusCode,
    elapsed: Duration,
) {
    metrics::histogram!(
        HTTP_REQUEST_DURATION,
        "method" => method_label(method),
        "route" => route.map_or_else(|| "unmatched".into(), str::to_owned),
        "status" => status.as_str().to_owned(),
    )
    .record(elapsed.as_secs_f64());
}

/// A label value from a small fixed set, so a client inventing methods
/// cannot create series without end.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
