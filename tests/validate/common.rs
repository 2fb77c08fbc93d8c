//! Request helpers, the test order types and domain newtypes.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use palisade::problem::ProblemLayer;
use palisade::validate::{Json, RawBody, Validate, ValidateLayer, Validated, Violations, rules};
use serde::Deserialize;
use serde_json::Value;
use tower::{ServiceBuilder, ServiceExt, service_fn};

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Order {
    pub customer: String,
    pub items: Vec<Item>,
    #[serde(default)]
    pub tags: BTreeMap<String, u32>,
    #[serde(default)]
    pub discount: Option<Percent>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Item {
    pub sku: String,
    pub quantity: u32,
    pub price: Money,
}

impl Validate for Order {
    fn validate(&self, v: &mut Violations) {
        v.check("customer", rules::length(&self.customer, 1..=64));
        v.check("items", rules::count(self.items.len(), 1..=50));
        v.each("items", &self.items);
        v.field("tags", |v| {
            for (key, n) in &self.tags {
                v.check(key, rules::range(*n, ..=10));
            }
        });
    }
}

impl Validate for Item {
    fn validate(&self, v: &mut Violations) {
        v.check(
            "sku",
            rules::pattern(
                &self.sku,
                |c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-',
                "A-Z, 0-9 and -",
            ),
        );
        v.check("quantity", rules::range(self.quantity, 1..=100));
    }
}

/// A percentage from 0 to 100; nothing else can be built.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(try_from = "f64")]
pub struct Percent(f64);

impl TryFrom<f64> for Percent {
    type Error = &'static str;
    fn try_from(value: f64) -> Result<Self, Self::Error> {
        if (0.0..=100.0).contains(&value) {
            Ok(Self(value))
        } else {
            Err("must be between 0 and 100")
        }
    }
}

impl Percent {
    pub fn get(self) -> f64 {
        self.0
    }
}

/// An ISO 4217 code: three uppercase ASCII letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Currency([u8; 3]);

impl TryFrom<String> for Currency {
    type Error = &'static str;
    fn try_from(code: String) -> Result<Self, Self::Error> {
        match code.as_bytes() {
            &[a, b, c] if code.bytes().all(|b| b.is_ascii_uppercase()) => Ok(Self([a, b, c])),
            _ => Err("must be a three-letter ISO 4217 code"),
        }
    }
}

/// A non-negative amount in minor units.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(try_from = "MoneyWire")]
pub struct Money {
    pub minor: u64,
    pub currency: Currency,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MoneyWire {
    minor: i64,
    currency: Currency,
}

impl TryFrom<MoneyWire> for Money {
    type Error = &'static str;
    fn try_from(w: MoneyWire) -> Result<Self, Self::Error> {
        let minor = u64::try_from(w.minor).map_err(|_| "must not be negative")?;
        Ok(Self {
            minor,
            currency: w.currency,
        })
    }
}

pub const GOOD: &str = r#"{"customer": "ada", "items": [{"sku": "A-1", "quantity": 2, "price": {"minor": 1250, "currency": "EUR"}}]}"#;

pub fn json_request(body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    Request::post("/orders")
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .unwrap()
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

/// Sends `req` through ProblemLayer + `layer` to a handler that checks the
/// extensions against the body and answers 200 with `{"items": n}`.
pub async fn send_json<B>(layer: ValidateLayer<Json<Order>>, req: Request<B>) -> Answer
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<palisade::BoxError>,
{
    let svc = ServiceBuilder::new()
        .layer(ProblemLayer::new())
        .layer(layer)
        .service(service_fn(|req: Request<Full<Bytes>>| async move {
            let Validated(order) = req
                .extensions()
                .get::<Validated<Order>>()
                .cloned()
                .expect("validated order");
            let RawBody(raw) = req
                .extensions()
                .get::<RawBody>()
                .cloned()
                .expect("raw body");
            let body = req.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(raw, body, "the body is the validated bytes");
            let reparsed: Order = serde_json::from_slice(&body).unwrap();
            assert_eq!(reparsed, order);
            let out = serde_json::json!({"items": order.items.len()}).to_string();
            Ok::<_, Infallible>(Response::new(Full::from(out)))
        }));
    answer(svc.oneshot(req).await.unwrap()).await
}

pub async fn answer(response: Response<Full<Bytes>>) -> Answer {
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// A body of `total` bytes of spaces in 64 KiB frames, with no known
/// length, that counts the bytes pulled from it.
pub struct CountingBody {
    pub remaining: usize,
    pub pulled: Arc<AtomicUsize>,
}

pub const FRAME: usize = 64 * 1024;
static SPACES: [u8; FRAME] = [b' '; FRAME];

impl Body for CountingBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(FRAME);
        self.remaining -= n;
        self.pulled.fetch_add(n, Ordering::SeqCst);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&SPACES[..n])))))
    }
}
