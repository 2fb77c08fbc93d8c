//! What the per-request choice between a gRPC and an HTTP answer costs:
//! `ProblemLayer` and the per-request timeout on HTTP requests against the
//! same stacks on gRPC requests, and `grpc::is_grpc` alone.
//!
//! Issue #19 asks that the choice "costs nothing measurable on the HTTP
//! path". With feature `grpc`, an HTTP request pays for one `content-type`
//! lookup ([`is_grpc`] on a JSON request) in `ProblemLayer::call`, and the
//! per-request timeout looks the content type up only when it reads or
//! forwards a budget header. Every variant builds the same request (a
//! `HeaderMap` with its `content-type`, and the budget header where named)
//! so "added" is the layer's own cost; `bare` services are the baseline.
//!
//! Criterion measures each variant; then, in the same run, a summary of
//! interleaved rounds prints the medians the README quotes.
//!
//! `cargo bench -p palisade-benches --no-default-features --features grpc --bench grpc`

use std::convert::Infallible;
use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group};
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use palisade::grpc::is_grpc;
use palisade::problem::{Problem, ProblemLayer, types};
use palisade::timeout::TimeoutLayer;
use palisade_benches::{Run, bench_group, interleaved_medians, run};
use tower::{Layer, Service, ServiceExt, service_fn};

const JSON: HeaderValue = HeaderValue::from_static("application/json");
const GRPC: HeaderValue = HeaderValue::from_static("application/grpc");
const MAX: Duration = Duration::from_secs(10);

/// What a caller sends: HTTP (JSON) or gRPC, with a budget header or not.
#[derive(Clone, Copy)]
enum Kind {
    Http,
    Grpc,
    /// HTTP with `request-timeout: 500` (milliseconds).
    HttpBudget,
    /// gRPC with `grpc-timeout: 500m`.
    GrpcBudget,
}

fn request(kind: Kind) -> Request<u64> {
    let mut req = Request::new(0);
    let headers = req.headers_mut();
    match kind {
        Kind::Http => {
            headers.insert(CONTENT_TYPE, JSON);
        }
        Kind::Grpc => {
            headers.insert(CONTENT_TYPE, GRPC);
        }
        Kind::HttpBudget => {
            headers.insert(CONTENT_TYPE, JSON);
            headers.insert("request-timeout", HeaderValue::from_static("500"));
        }
        Kind::GrpcBudget => {
            headers.insert(CONTENT_TYPE, GRPC);
            headers.insert("grpc-timeout", HeaderValue::from_static("500m"));
        }
    }
    req
}

fn accepting() -> impl Service<Request<u64>, Response = Response<Bytes>, Error = Problem> + Clone {
    service_fn(|_: Request<u64>| async { Ok::<_, Problem>(Response::new(Bytes::new())) })
}

/// A rate limiter's refusal, as `rate_limit::Error` renders it.
fn limited() -> Problem {
    Problem::new(StatusCode::TOO_MANY_REQUESTS)
        .with_type(types::RATE_LIMITED)
        .with_detail("rate limit exceeded")
        .with_retry_after(Duration::from_secs(2))
}

fn rejecting() -> impl Service<Request<u64>, Response = Response<Bytes>, Error = Problem> + Clone {
    service_fn(|_: Request<u64>| async { Err::<Response<Bytes>, _>(limited()) })
}

/// The same refusal rendered as problem+json by the service itself: the
/// baseline of a rejection without `ProblemLayer`.
fn rejecting_rendered()
-> impl Service<Request<u64>, Response = Response<Bytes>, Error = Infallible> + Clone {
    service_fn(|_: Request<u64>| async { Ok::<_, Infallible>(limited().into_response()) })
}

/// `iters` calls of `ready().await` + `call().await` on one task.
async fn calls<S>(mut svc: S, kind: Kind, iters: u64) -> Duration
where
    S: Service<Request<u64>>,
{
    let start = Instant::now();
    for _ in 0..iters {
        let ready = svc.ready().await.ok().unwrap();
        let _ = black_box(ready.call(request(black_box(kind))).await.is_ok());
    }
    start.elapsed()
}

/// `iters` lookups of [`is_grpc`] on one request's headers.
fn lookups(headers: HeaderMap, iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        black_box(is_grpc(black_box(&headers)));
    }
    start.elapsed()
}

fn variants() -> Vec<(&'static str, Run)> {
    let problem = |kind| run(move |n| calls(ProblemLayer::new().layer(accepting()), kind, n));
    let reject = |kind| run(move |n| calls(ProblemLayer::new().layer(rejecting()), kind, n));
    let timeout = |kind| {
        run(move |n| {
            calls(
                TimeoutLayer::new(MAX).per_request().layer(accepting()),
                kind,
                n,
            )
        })
    };
    let headers = |kind| request(kind).headers().clone();
    vec![
        // 0..=2: accepted
        (
            "accept/bare_http",
            run(|n| calls(accepting(), Kind::Http, n)),
        ),
        ("accept/problem_http", problem(Kind::Http)),
        ("accept/problem_grpc", problem(Kind::Grpc)),
        // 3..=5: rejected (429 rate limited)
        (
            "reject/rendered_by_hand_http",
            run(|n| calls(rejecting_rendered(), Kind::Http, n)),
        ),
        ("reject/problem_http", reject(Kind::Http)),
        ("reject/problem_grpc", reject(Kind::Grpc)),
        // 6..=7: is_grpc alone
        (
            "is_grpc/json",
            run(move |n| std::future::ready(lookups(headers(Kind::Http), n))),
        ),
        (
            "is_grpc/grpc",
            run(move |n| std::future::ready(lookups(headers(Kind::Grpc), n))),
        ),
        // 8..=12: the per-request timeout's budget path
        (
            "timeout/bare_http",
            run(|n| calls(accepting(), Kind::Http, n)),
        ),
        ("timeout/per_request_http", timeout(Kind::Http)),
        ("timeout/per_request_grpc", timeout(Kind::Grpc)),
        ("timeout/per_request_http_budget", timeout(Kind::HttpBudget)),
        ("timeout/per_request_grpc_budget", timeout(Kind::GrpcBudget)),
    ]
}

fn bench(c: &mut Criterion) {
    bench_group(c, "grpc", &variants());
}

/// Interleaved rounds, so drift hits every variant alike; medians per call.
fn summary() {
    const ROUNDS: usize = 15;
    const ITERS: u64 = 200_000;
    let variants = variants();
    let m = interleaved_medians(&variants, ROUNDS, ITERS);
    println!("\ngrpc summary (median of {ROUNDS} interleaved rounds of {ITERS} calls)");
    let line = |name: &str, ns: f64, base: Option<f64>| match base {
        Some(base) => println!("  {name:<46} {ns:8.2} ns/call, added {:7.2} ns", ns - base),
        None => println!("  {name:<46} {ns:8.2} ns/call"),
    };
    line("accepted, bare service (HTTP request)", m[0], None);
    line("accepted, ProblemLayer, HTTP request", m[1], Some(m[0]));
    line("accepted, ProblemLayer, gRPC request", m[2], Some(m[0]));
    line("rejected, problem+json rendered by hand", m[3], None);
    line("rejected, ProblemLayer, HTTP request", m[4], Some(m[3]));
    line("rejected, ProblemLayer, gRPC request", m[5], Some(m[3]));
    line("is_grpc, application/json", m[6], None);
    line("is_grpc, application/grpc", m[7], None);
    line("timeout, bare service (HTTP request)", m[8], None);
    line(
        "per-request timeout, HTTP, no budget header",
        m[9],
        Some(m[8]),
    );
    line(
        "per-request timeout, gRPC, no grpc-timeout",
        m[10],
        Some(m[8]),
    );
    line(
        "per-request timeout, HTTP, request-timeout: 500",
        m[11],
        Some(m[8]),
    );
    line(
        "per-request timeout, gRPC, grpc-timeout: 500m",
        m[12],
        Some(m[8]),
    );
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    summary();
}
