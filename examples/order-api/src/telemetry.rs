//! Infrastructure: what the API reports about each request (a span, a log
//! line, a metric) and the process's metrics recorder, read by
//! `GET /metrics` and `GET /admin/stats`.
//!
//! palisade's layers record through the `metrics` facade (feature
//! `metrics`); the demo installs a Prometheus recorder for them and adds one
//! metric of its own, [`HTTP_REQUEST_DURATION`]. There is no exporter
//! listener: `GET /metrics` renders the recorder's state in the API's own
//! server, behind the admin token.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::extract::MatchedPath;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::{Layer, Service};

/// The request and response header that carries the request id.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// `http_server_request_duration_seconds`: every request the API answered,
/// by `method`, `route` (the route's pattern, `unmatched` for none) and
/// `status`; its `_count` is the number of requests.
pub const HTTP_REQUEST_DURATION: &str = "http_server_request_duration_seconds";

/// Histogram buckets, in seconds: a loopback hop (sub-millisecond) up to the
/// slowest payment the demo waits for (10 s timeout, retried).
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// How often recorded histogram samples are folded into their buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// A Prometheus recorder with the demo's buckets, not installed: the tests
/// give each instance its own (as the thread's local recorder), so its
/// `/metrics` and `/admin/stats` count its own requests only.
pub fn recorder() -> (PrometheusRecorder, PrometheusHandle) {
    let recorder = PrometheusBuilder::new()
        .set_buckets(BUCKETS)
        .expect("buckets are not empty")
        .build_recorder();
    let handle = recorder.handle();
    (recorder, handle)
}

/// The Prometheus recorder of this process, installed on first use.
///
/// A global recorder is process-wide: every instance a process serves
/// records into it. If another recorder was installed first, this one
/// stays empty and a warning says so.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let (recorder, handle) = recorder();
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
pub fn record_request(method: &Method, route: Option<&str>, status: StatusCode, elapsed: Duration) {
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

/// Around every API request: a span with its request id (the caller's
/// `X-Request-Id` when it is a sane value, else a new one), so the id is on
/// every log line of the request; then a `served` log line, the request in
/// [`HTTP_REQUEST_DURATION`], and the id echoed in the response.
///
/// A plain tower layer rather than `axum::middleware::from_fn`, which boxes
/// and clones the whole inner stack on every request.
#[derive(Debug, Clone, Default)]
pub struct ObserveLayer {}

impl ObserveLayer {
    /// The layer.
    pub fn new() -> Self {
        Self {}
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe { inner }
    }
}

/// See [`ObserveLayer`].
#[derive(Debug, Clone)]
pub struct Observe<S> {
    inner: S,
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for Observe<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = ObserveFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let id = request_id(req.headers());
        // The route's pattern, not its path: `/orders/{id}` is one series.
        let route = req.extensions().get::<MatchedPath>().cloned();
        let method = req.method().clone();
        let span = tracing::info_span!(
            "request",
            id = %id.to_str().unwrap_or_default(),
            method = %method,
            path = %req.uri().path(),
        );
        let inner = span.in_scope(|| self.inner.call(req));
        ObserveFuture {
            inner,
            span,
            observed: Some(Observed {
                id,
                route,
                method,
                started: Instant::now(),
            }),
        }
    }
}

/// What [`ObserveFuture`] reports once the response is there.
#[derive(Debug)]
struct Observed {
    id: HeaderValue,
    route: Option<MatchedPath>,
    method: Method,
    started: Instant,
}

pin_project! {
    /// Response future of [`Observe`].
    #[derive(Debug)]
    pub struct ObserveFuture<F> {
        #[pin]
        inner: F,
        span: tracing::Span,
        observed: Option<Observed>,
    }
}

impl<F, B, E> Future for ObserveFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let mut response = ready!(this.inner.poll(cx))?;
        let observed = this
            .observed
            .take()
            .expect("future polled after completion");
        let elapsed = observed.started.elapsed();
        let status = response.status();
        tracing::info!(
            status = status.as_u16(),
            elapsed_ms = elapsed.as_millis() as u64,
            "served"
        );
        record_request(
            &observed.method,
            observed.route.as_ref().map(MatchedPath::as_str),
            status,
            elapsed,
        );
        response.headers_mut().insert(&REQUEST_ID, observed.id);
        Poll::Ready(Ok(response))
    }
}

/// The caller's `X-Request-Id` when it is 1 to 64 visible ASCII characters,
/// else a new one.
fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(id) = headers
        .get(&REQUEST_ID)
        .filter(|v| (1..=64).contains(&v.len()) && v.as_bytes().iter().all(u8::is_ascii_graphic))
    {
        return id.clone();
    }
    // Not a secret, only unique enough to find a request in the logs: a
    // fast PRNG, not a system call per request.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut n = fastrand::u128(..);
    let mut digits = [0u8; 32];
    for digit in digits.iter_mut().rev() {
        *digit = HEX[(n & 0xf) as usize];
        n >>= 4;
    }
    HeaderValue::from_bytes(&digits).expect("hex digits are a valid header value")
}
