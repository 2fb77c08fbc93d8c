//! Infrastructure: the HTTP clients of the payment provider and the
//! recommendations service.
//!
//! Each client is a tower stack over hyper-util's legacy `Client` (itself a
//! `tower::Service`). [`transport`] is the bottom of every stack: it sends
//! the request, reads the whole body and turns a 5xx into an error, so the
//! layers above it (configured in `layers.rs`) see one failure type.
//! [`classify`] maps whatever the stack failed with to a [`ClientError`]
//! that the API answers as 502, 503 or 504.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use palisade::BoxError;
use palisade::idempotency::IdempotencyKey;
use serde::Serialize;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};

use crate::domain::{Currency, Money};
use crate::faults::{Charge, ChargeRequest};

/// hyper-util's pooled HTTP/1 client: a `tower::Service<Request<_>>`.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A whole downstream stack, shared by every request: request in, response
/// with its whole body out. Each call clones it (its layers share their
/// state, so a clone is a few reference counts and one box).
pub type Upstream = BoxCloneSyncService<Request<Full<Bytes>>, Response<Bytes>, BoxError>;

pub fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A failure at the bottom of a stack.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("answered {0}")]
    Status(StatusCode),
    #[error("unreachable: {0}")]
    Connect(#[source] hyper_util::client::legacy::Error),
    #[error("body: {0}")]
    Body(#[source] hyper::Error),
}

/// The bottom of every client stack: hyper-util's `Client` as a service,
/// with the body read and server errors made errors (so a timeout above it
/// covers the body too, and a breaker above it counts 5xx as failures).
pub fn transport(
    client: HttpClient,
) -> impl Service<Request<Full<Bytes>>, Response = Response<Bytes>, Error = TransportError, Future: Send>
+ Clone
+ Send
+ Sync
+ 'static {
    client.map_err(TransportError::Connect).and_then(
        |response: Response<hyper::body::Incoming>| async move {
            let (parts, body) = response.into_parts();
            if parts.status.is_server_error() {
                return Err(TransportError::Status(parts.status));
            }
            let body = body
                .collect()
                .await
                .map_err(TransportError::Body)?
                .to_bytes();
            Ok(Response::from_parts(parts, body))
        },
    )
}

/// What a failure at the bottom says about another attempt: a connection
/// refused or reset, a body cut short and a 500, 502, 503 or 504 are worth a
/// retry (the payment carries its key, so the provider charges it once);
/// any other server error is the answer.
impl palisade::attempt::Retryable for TransportError {
    fn verdict(&self) -> palisade::attempt::Verdict {
        use palisade::attempt::Verdict;
        match self {
            Self::Status(status) if matches!(status.as_u16(), 500 | 502 | 503 | 504) => {
                Verdict::Retry { after: None }
            }
            Self::Status(_) => Verdict::Done,
            Self::Connect(_) | Self::Body(_) => Verdict::Retry { after: None },
        }
    }
}

/// Why a downstream call failed, as the API answers it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The provider failed, refused, or was unreachable: 502.
    #[error("provider error: {0}")]
    Upstream(String),
    /// No answer in time: 504.
    #[error("provider timed out")]
    Timeout,
    /// The circuit breaker is open; no call was made: 503 + `Retry-After`.
    #[error("circuit open, retry after {retry_after:?}")]
    BreakerOpen { retry_after: Duration },
}

/// Names the failure of a stack built in `layers.rs`.
pub fn classify(error: BoxError) -> ClientError {
    use palisade::circuit_breaker::Error as Breaker;
    use palisade::timeout::Error as Timeout;
    match error.downcast::<crate::layers::StackError>() {
        Ok(error) => match *error {
            Breaker::Open { retry_after } => ClientError::BreakerOpen { retry_after },
            Breaker::Inner(Timeout::Elapsed { .. }) => ClientError::Timeout,
            Breaker::Inner(Timeout::Inner(transport)) => {
                ClientError::Upstream(transport.to_string())
            }
            other => ClientError::Upstream(other.to_string()),
        },
        Err(other) => ClientError::Upstream(other.to_string()),
    }
}

/// The state of a client's circuit breaker, for `/admin/stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

/// Reads a breaker's state; `layers.rs` hands one out with each stack.
#[derive(Clone)]
pub struct BreakerProbe(Arc<dyn Fn() -> BreakerState + Send + Sync>);

impl BreakerProbe {
    pub fn new(read: impl Fn() -> BreakerState + Send + Sync + 'static) -> Self {
        Self(Arc::new(read))
    }

    pub fn state(&self) -> BreakerState {
        (self.0)()
    }
}

impl fmt::Debug for BreakerProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("BreakerProbe").field(&self.state()).finish()
    }
}

/// Sends `request` through a client stack and reads its JSON answer: an
/// error of the stack, a status other than 2xx or an unreadable body is a
/// failure of the downstream.
async fn call_json<T: serde::de::DeserializeOwned>(
    stack: &Upstream,
    request: Request<Full<Bytes>>,
) -> Result<T, ClientError> {
    let response = stack.clone().oneshot(request).await.map_err(classify)?;
    if !response.status().is_success() {
        return Err(ClientError::Upstream(format!(
            "answered {}",
            response.status()
        )));
    }
    serde_json::from_slice(response.body())
        .map_err(|e| ClientError::Upstream(format!("bad answer: {e}")))
}

fn json_request(method: Method, uri: &str, has_body: bool) -> http::request::Builder {
    let builder = Request::builder().method(method).uri(uri);
    if has_body {
        return builder.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    builder
}

/// The payment provider.
#[derive(Debug, Clone)]
pub struct PaymentClient {
    stack: Upstream,
    url: String,
    breaker: BreakerProbe,
}

impl PaymentClient {
    pub fn new(stack: Upstream, url: String, breaker: BreakerProbe) -> Self {
        Self {
            stack,
            url,
            breaker,
        }
    }

    pub fn breaker(&self) -> BreakerState {
        self.breaker.state()
    }

    /// Charges `amount` under `key`; returns the payment id. The provider
    /// charges once per key, however often this is called.
    pub async fn charge(
        &self,
        key: &IdempotencyKey,
        amount: Money,
        currency: Currency,
    ) -> Result<String, ClientError> {
        let body = serde_json::to_vec(&ChargeRequest {
            amount_cents: amount.cents(),
            currency: currency.as_str().to_owned(),
        })
        .expect("charge serialises");
        // The stack's `IdempotencyKeyLayer` sends this key as the
        // `Idempotency-Key` of every attempt.
        let mut request = json_request(Method::POST, &self.url, true)
            .body(Full::from(body))
            .map_err(|e| ClientError::Upstream(e.to_string()))?;
        request.extensions_mut().insert(key.clone());
        let charge: Charge = call_json(&self.stack, request).await?;
        Ok(charge.id)
    }
}
