//! Calls through a real tonic client over TCP to an edge in front of a
//! backend: each palisade rejection reaches the client as its gRPC status.
//!
//! Real sockets, so real time: every timing has a wide margin (a backend
//! 5 s late against an edge timeout of 200 ms), so a loaded machine does
//! not change an answer.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use grpc_example::backend::{self, Backend, Seen};
use grpc_example::pb::inventory_client::InventoryClient;
use grpc_example::pb::{GetRequest, Reservation, ReserveRequest};
use grpc_example::{DELAY_MS, FAIL_CODE, edge};
use palisade::circuit_breaker::{Handle, State};
use palisade::rate_limit::Quota;
use tokio::net::TcpListener;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

/// An edge and a backend, each on its own port.
struct Servers {
    edge: SocketAddr,
    seen: Arc<Seen>,
    breaker: Handle,
}

impl Servers {
    /// A backend and an edge with `config` in front of it.
    async fn start(config: edge::Config) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend_addr = listener.local_addr().unwrap();
        let backend = Backend::new();
        let seen = backend.seen();
        tokio::spawn(backend::serve(backend, listener, std::future::pending()));
        Self::edge(config, backend_addr, seen).await
    }

    /// An edge with `config` in front of a port nobody listens on.
    async fn without_backend(config: edge::Config) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend_addr = listener.local_addr().unwrap();
        drop(listener);
        Self::edge(config, backend_addr, Arc::default()).await
    }

    async fn edge(config: edge::Config, backend: SocketAddr, seen: Arc<Seen>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let edge = listener.local_addr().unwrap();
        let (breaker, server) = edge::serve(listener, backend, &config, std::future::pending());
        tokio::spawn(server);
        Self {
            edge,
            seen,
            breaker,
        }
    }

    fn client(&self) -> InventoryClient<Channel> {
        InventoryClient::new(edge::channel(self.edge))
    }
}

/// A call from caller `k-alice` with `metadata`.
fn call<T>(message: T, metadata: &[(&'static str, &str)]) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("x-api-key", "k-alice".parse().unwrap());
    for (name, value) in metadata {
        request.metadata_mut().insert(*name, value.parse().unwrap());
    }
    request
}

fn get(metadata: &[(&'static str, &str)]) -> Request<GetRequest> {
    call(
        GetRequest {
            sku: "apple".into(),
        },
        metadata,
    )
}

fn reserve(quantity: u32, metadata: &[(&'static str, &str)]) -> Request<ReserveRequest> {
    let message = ReserveRequest {
        sku: "apple".into(),
        quantity,
    };
    call(message, metadata)
}

fn code<T>(answer: &Result<T, Status>) -> Code {
    answer.as_ref().err().map_or(Code::Ok, Status::code)
}

#[tokio::test]
async fn a_rate_limited_call_gets_resource_exhausted_with_pushback_and_retry_info() {
    let servers = Servers::start(edge::Config {
        quota: Quota::per_minute(NonZeroU32::new(2).unwrap()),
        ..edge::Config::default()
    })
    .await;
    let mut client = servers.client();
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(client.get(get(&[])).await);
    }
    assert_eq!(code(&answers[0]), Code::Ok);
    let status = answers[2].as_ref().expect_err("the quota is spent");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");

    let pushback: u64 = status
        .metadata()
        .get("grpc-retry-pushback-ms")
        .expect("a pushback")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60_000).contains(&pushback), "{pushback} ms");
    let retry_info = status
        .get_error_details()
        .retry_info()
        .cloned()
        .expect("RetryInfo");
    let delay = retry_info.retry_delay.expect("a delay");
    assert!(
        delay > Duration::ZERO && delay <= Duration::from_secs(60),
        "{delay:?}"
    );

    // Another caller has its own quota.
    let mut other = get(&[]);
    other
        .metadata_mut()
        .insert("x-api-key", "k-bob".parse().unwrap());
    assert_eq!(code(&client.get(other).await), Code::Ok);
}

#[tokio::test]
async fn a_backend_that_is_down_gets_unavailable_then_the_breaker_opens() {
    let servers = Servers::without_backend(edge::Config::default()).await;
    let mut client = servers.client();
    assert_eq!(servers.breaker.state(), State::Closed);
    // Three connection failures in a row (a Get carries no idempotency-key,
    // so it is sent once) open the breaker.
    for n in 0..3 {
        let answer = client.get(get(&[])).await;
        assert_eq!(code(&answer), Code::Unavailable, "call {n}: {answer:?}");
    }
    assert_eq!(servers.breaker.state(), State::Open);

    let started = Instant::now();
    let answer = client.get(get(&[])).await;
    assert_eq!(code(&answer), Code::Unavailable, "{answer:?}");
    let message = answer.unwrap_err().message().to_owned();
    assert!(
        message.contains("circuit"),
        "the breaker answers: {message}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "without trying the backend"
    );
}

/// The backend is up and answers: a NOT_FOUND is an answer, an
/// UNAVAILABLE is a failure, though both come back as HTTP 200.
#[tokio::test]
async fn the_breaker_counts_the_backends_grpc_status() {
    let servers = Servers::start(edge::Config::default()).await;
    let mut client = servers.client();
    for _ in 0..5 {
        let unknown = call(
            GetRequest {
                sku: "no-such-sku".into(),
            },
            &[],
        );
        assert_eq!(code(&client.get(unknown).await), Code::NotFound);
    }
    assert_eq!(servers.breaker.state(), State::Closed);
    for n in 0..3 {
        let answer = client.get(get(&[(FAIL_CODE, "14")])).await;
        assert_eq!(code(&answer), Code::Unavailable, "call {n}: {answer:?}");
    }
    assert_eq!(servers.breaker.state(), State::Open);
    let answer = client.get(get(&[])).await;
    assert_eq!(code(&answer), Code::Unavailable, "{answer:?}");
    let message = answer.unwrap_err().message().to_owned();
    assert!(
        message.contains("circuit"),
        "the breaker answers: {message}"
    );
}

#[tokio::test]
async fn a_slow_backend_gets_deadline_exceeded_at_the_edges_timeout() {
    let servers = Servers::start(edge::Config {
        max_timeout: Duration::from_millis(200),
        backend_timeout: Duration::from_secs(10),
        ..edge::Config::default()
    })
    .await;
    let mut client = servers.client();
    let started = Instant::now();
    let answer = client.get(get(&[(DELAY_MS, "5000")])).await;
    assert_eq!(code(&answer), Code::DeadlineExceeded, "{answer:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "not the backend's 5 s"
    );
}

#[tokio::test]
async fn a_malformed_grpc_timeout_gets_invalid_argument_and_never_reaches_the_backend() {
    let servers = Servers::start(edge::Config::default()).await;
    // tonic never sends a malformed grpc-timeout (it drops one set in the
    // metadata), so it is written below the client, on the HTTP request.
    let raw = tower::ServiceBuilder::new()
        .map_request(|mut req: http::Request<tonic::body::Body>| {
            req.headers_mut()
                .insert("grpc-timeout", http::HeaderValue::from_static("1.5S"));
            req
        })
        .service(edge::channel(servers.edge));
    let answer = InventoryClient::new(raw).get(get(&[])).await;
    let status = answer.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("grpc-timeout"),
        "{}",
        status.message()
    );
    assert!(servers.seen.budgets.lock().unwrap().is_empty());

    // The same call without it goes through.
    assert_eq!(code(&servers.client().get(get(&[])).await), Code::Ok);
}

#[tokio::test]
async fn the_same_idempotency_key_in_flight_gets_aborted() {
    let servers = Servers::start(edge::Config {
        max_timeout: Duration::from_secs(20),
        backend_timeout: Duration::from_secs(20),
        ..edge::Config::default()
    })
    .await;
    let arrived = servers.seen.arrived.notified();
    tokio::pin!(arrived);
    arrived.as_mut().enable();
    let mut first_client = servers.client();
    let first = tokio::spawn(async move {
        first_client
            .reserve(reserve(
                1,
                &[("idempotency-key", "order-1"), (DELAY_MS, "1000")],
            ))
            .await
    });
    arrived.await;

    let answer = servers
        .client()
        .reserve(reserve(1, &[("idempotency-key", "order-1")]))
        .await;
    let status = answer.expect_err("refused while the first runs");
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert!(
        status.metadata().get("grpc-retry-pushback-ms").is_some(),
        "the caller is told when to try again"
    );

    let first = first.await.unwrap().expect("the first call completes");
    assert_eq!(first.get_ref().quantity, 1);
    assert_eq!(servers.seen.reservations(), 1);
}

#[tokio::test]
async fn an_idempotency_key_reused_with_another_message_gets_failed_precondition() {
    let servers = Servers::start(edge::Config::default()).await;
    let mut client = servers.client();
    let key = [("idempotency-key", "order-2")];
    assert_eq!(code(&client.reserve(reserve(2, &key)).await), Code::Ok);
    let answer = client.reserve(reserve(5, &key)).await;
    assert_eq!(code(&answer), Code::FailedPrecondition, "{answer:?}");
    assert_eq!(servers.seen.reservations(), 1);
}

#[tokio::test]
async fn a_replay_returns_the_same_reservation_and_the_backend_runs_once() {
    let servers = Servers::start(edge::Config::default()).await;
    let mut client = servers.client();
    let key = [("idempotency-key", "order-3")];
    let first: Reservation = client.reserve(reserve(2, &key)).await.unwrap().into_inner();
    let again = client.reserve(reserve(2, &key)).await.unwrap();
    assert_eq!(again.get_ref(), &first);
    assert_eq!(servers.seen.reservations(), 1);

    // Another key is another reservation.
    let other = client
        .reserve(reserve(2, &[("idempotency-key", "order-4")]))
        .await
        .unwrap();
    assert_ne!(other.get_ref().id, first.id);
    assert_eq!(servers.seen.reservations(), 2);
}

#[tokio::test]
async fn the_callers_deadline_reaches_the_backend_shortened_across_two_hops() {
    let servers = Servers::start(edge::Config {
        max_timeout: Duration::from_secs(30),
        backend_timeout: Duration::from_secs(30),
        ..edge::Config::default()
    })
    .await;
    let mut request = get(&[]);
    request.set_timeout(Duration::from_secs(2));
    servers.client().get(request).await.unwrap();
    let budget = servers
        .seen
        .last_budget()
        .expect("the backend got a grpc-timeout");
    assert!(budget < Duration::from_secs(2), "{budget:?}");
    assert!(budget > Duration::ZERO, "{budget:?}");

    // Without one, the backend gets the edge's own budget for the call.
    servers.client().get(get(&[])).await.unwrap();
    let budget = servers
        .seen
        .last_budget()
        .expect("the backend got a grpc-timeout");
    assert!(budget <= Duration::from_secs(30), "{budget:?}");
    assert!(budget > Duration::from_secs(20), "{budget:?}");
}

#[tokio::test]
async fn a_full_bulkhead_gets_unavailable() {
    let servers = Servers::start(edge::Config {
        max_in_flight: NonZeroU32::new(1).unwrap(),
        max_timeout: Duration::from_secs(20),
        backend_timeout: Duration::from_secs(20),
        ..edge::Config::default()
    })
    .await;
    let arrived = servers.seen.arrived.notified();
    tokio::pin!(arrived);
    arrived.as_mut().enable();
    let mut first_client = servers.client();
    let first = tokio::spawn(async move { first_client.get(get(&[(DELAY_MS, "1000")])).await });
    arrived.await;

    let answer = servers.client().get(get(&[])).await;
    assert_eq!(code(&answer), Code::Unavailable, "{answer:?}");
    assert_eq!(code(&first.await.unwrap()), Code::Ok);
}

#[tokio::test]
async fn a_channels_own_grpc_timeout_expiry_is_deadline_exceeded_not_unavailable() {
    // A tonic Channel times a call out at the grpc-timeout it carries, as a
    // transport error. With no palisade timeout to race it, that error alone
    // must read as the deadline it is.
    let backend = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(backend::serve(
            Backend::new(),
            listener,
            std::future::pending(),
        ));
        addr
    };
    let stack = tower::ServiceBuilder::new()
        .layer(palisade::problem::ProblemLayer::new())
        .map_request(|mut req: http::Request<tonic::body::Body>| {
            req.headers_mut()
                .insert("grpc-timeout", http::HeaderValue::from_static("100m"));
            req
        })
        .service(edge::channel(backend));
    let started = Instant::now();
    let answer = InventoryClient::new(stack)
        .get(get(&[(DELAY_MS, "5000")]))
        .await;
    assert_eq!(code(&answer), Code::DeadlineExceeded, "{answer:?}");
    assert!(started.elapsed() < Duration::from_secs(4));
}
