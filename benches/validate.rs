//! Cost of validating a typical order body (about 1 KB, 8 lines) against
//! parsing it with plain `serde_json::from_slice`.
//!
//! Variants: plain serde_json; serde_json plus the rules; the layer's parse
//! (rules included) with unknown fields allowed and rejected (the default);
//! and the whole service (headers checked, body collected, extensions
//! inserted) against a service that collects and parses the body with
//! serde_json itself. A summary of interleaved rounds prints the ratios; the
//! last line is the one the layer is judged by.
//!
//! `cargo bench -p palisade-benches --no-default-features --features validate --bench validate`

use std::convert::Infallible;
use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group};
use http_body_util::{BodyExt, Full};
use palisade::validate::{
    Json, UnknownFields, Validate, ValidateLayer, Validated, Violations, rules,
};
use palisade_benches::{Run, bench_group, interleaved_medians};
use serde::Deserialize;
use tokio::runtime::Runtime;
use tower::{Layer, Service, ServiceExt, service_fn};

#[derive(Debug, Clone, Deserialize)]
#[allow(dead_code)]
struct Order {
    customer: String,
    email: String,
    currency: String,
    lines: Vec<Line>,
    shipping: Address,
    #[serde(default)]
    note: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[allow(dead_code)]
struct Line {
    sku: String,
    quantity: u32,
    unit_price_minor: u64,
    discount_percent: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[allow(dead_code)]
struct Address {
    line1: String,
    city: String,
    postcode: String,
    country: String,
}

impl Validate for Order {
    fn validate(&self, v: &mut Violations) {
        v.check("customer", rules::length(&self.customer, 1..=64));
        v.check(
            "email",
            rules::format(&self.email, |s| s.contains('@'), "an email address"),
        );
        v.check(
            "currency",
            rules::pattern(&self.currency, |c| c.is_ascii_uppercase(), "A-Z"),
        );
        v.check("currency", rules::length(&self.currency, 3..=3));
        v.check("lines", rules::count(self.lines.len(), 1..=50));
        v.each("lines", &self.lines);
        v.nested("shipping", &self.shipping);
        if let Some(note) = &self.note {
            v.check("note", rules::length(note, ..=500));
        }
    }
}

impl Validate for Line {
    fn validate(&self, v: &mut Violations) {
        v.check(
            "sku",
            rules::pattern(
                &self.sku,
                |c| c.is_ascii_alphanumeric() || c == '-',
                "A-Z, 0-9 and -",
            ),
        );
        v.check("quantity", rules::range(self.quantity, 1..=100));
        v.check(
            "discount_percent",
            rules::range(self.discount_percent, 0.0..=100.0),
        );
    }
}

impl Validate for Address {
    fn validate(&self, v: &mut Violations) {
        v.check("line1", rules::length(&self.line1, 1..=100));
        v.check("city", rules::length(&self.city, 1..=64));
        v.check("postcode", rules::length(&self.postcode, 1..=16));
        v.check("country", rules::length(&self.country, 2..=2));
    }
}

fn body() -> Bytes {
    let lines: Vec<_> = (0..8)
        .map(|i| {
            serde_json::json!({
                "sku": format!("SKU-{i:04}"), "quantity": i + 1,
                "unit_price_minor": 1999 + i * 100, "discount_percent": 12.5,
            })
        })
        .collect();
    let order = serde_json::json!({
        "customer": "Ada Lovelace", "email": "ada@example.com", "currency": "EUR",
        "lines": lines,
        "shipping": {"line1": "12 Analytical Row", "city": "London", "postcode": "N1 9GU", "country": "GB"},
        "note": "leave at the door",
    });
    Bytes::from(serde_json::to_vec(&order).unwrap())
}

fn layer(unknown: UnknownFields) -> ValidateLayer<Json<Order>> {
    ValidateLayer::new().unknown_fields(unknown).json::<Order>()
}

fn parse_run(f: impl Fn(&[u8]) + 'static) -> Run {
    let body = body();
    Box::new(move |_, iters| {
        let start = Instant::now();
        for _ in 0..iters {
            f(black_box(&body));
        }
        start.elapsed()
    })
}

fn request(body: &Bytes) -> http::Request<Full<Bytes>> {
    http::Request::post("/orders")
        .header("content-type", "application/json")
        .body(Full::new(body.clone()))
        .unwrap()
}

async fn calls<S>(mut svc: S, body: Bytes, iters: u64) -> Duration
where
    S: Service<http::Request<Full<Bytes>>>,
    S::Error: std::fmt::Debug,
{
    let start = Instant::now();
    for _ in 0..iters {
        let ready = svc.ready().await.unwrap();
        black_box(ready.call(request(&body)).await.unwrap());
    }
    start.elapsed()
}

fn variants() -> Vec<(&'static str, Run)> {
    let allow = layer(UnknownFields::Allow);
    let reject = layer(UnknownFields::Reject);
    vec![
        (
            "serde_json",
            parse_run(|b| drop(black_box(serde_json::from_slice::<Order>(b).unwrap()))),
        ),
        (
            "serde_json_and_rules",
            parse_run(|b| {
                let order = serde_json::from_slice::<Order>(b).unwrap();
                let mut v = Violations::new();
                order.validate(&mut v);
                assert!(v.is_empty());
                black_box(order);
            }),
        ),
        (
            "layer_parse_allow_unknown",
            parse_run(move |b| drop(black_box(allow.parse(b).unwrap()))),
        ),
        (
            "layer_parse_reject_unknown",
            parse_run(move |b| drop(black_box(reject.parse(b).unwrap()))),
        ),
        (
            "service_serde_json",
            Box::new(|rt: &Runtime, iters| {
                let svc = service_fn(|req: http::Request<Full<Bytes>>| async move {
                    let bytes = req.into_body().collect().await.unwrap().to_bytes();
                    let order: Order = serde_json::from_slice(&bytes).unwrap();
                    Ok::<_, Infallible>(order.lines.len())
                });
                rt.block_on(calls(svc, body(), iters))
            }),
        ),
        (
            "service_validate_layer",
            Box::new(|rt: &Runtime, iters| {
                let svc = layer(UnknownFields::Reject).layer(service_fn(
                    |req: http::Request<Full<Bytes>>| async move {
                        let order = req
                            .extensions()
                            .get::<Validated<Order>>()
                            .map(|o| o.lines.len());
                        Ok::<_, Infallible>(order)
                    },
                ));
                rt.block_on(calls(svc, body(), iters))
            }),
        ),
    ]
}

fn bench(c: &mut Criterion) {
    bench_group(c, "validate", &variants());
}

/// Interleaved rounds, so drift hits every variant alike; medians per call.
fn summary() {
    const ROUNDS: usize = 9;
    const ITERS: u64 = 20_000;
    let variants = variants();
    let m = interleaved_medians(&variants, ROUNDS, ITERS);
    println!(
        "\nvalidate summary: {} byte order, median of {ROUNDS} interleaved rounds of {ITERS}",
        body().len()
    );
    let base = m[0];
    for ((name, _), ns) in variants.iter().zip(&m) {
        println!("  {name:28} {ns:9.0} ns  {:5.2}x serde_json", ns / base);
    }
    println!(
        "  whole service vs service parsing with serde_json: {:5.2}x",
        m[5] / m[4]
    );
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    summary();
}
