//! The edge: an Inventory server that forwards every call to the backend.
//!
//! Its server stack ([`serve`]) guards the edge itself; its client stack
//! ([`backend_client`]) guards the calls it makes. Each layer is palisade's,
//! each stacks on tonic as it is.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use palisade::attempt::GrpcClassifier;
use palisade::bulkhead::BulkheadLayer;
use palisade::circuit_breaker::{self, GrpcBody, GrpcCircuitBreakerLayer, Handle};
use palisade::grpc::ReplayableLayer;
use palisade::idempotency::IdempotencyLayer;
use palisade::key::Header;
use palisade::problem::ProblemLayer;
use palisade::rate_limit::{Quota, RateLimitLayer};
use palisade::retry::RetryLayer;
use palisade::timeout::{Deadline, TimeoutLayer};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::body::Body;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};
use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;

use crate::pb::inventory_client::InventoryClient;
use crate::pb::inventory_server::{Inventory, InventoryServer};
use crate::pb::{GetRequest, Item, Reservation, ReserveRequest};

/// The metadata the edge passes on to the backend, besides the deadline.
const FORWARDED: [&str; 3] = ["idempotency-key", crate::DELAY_MS, crate::FAIL_CODE];

/// How the edge guards itself and its calls.
#[derive(Debug, Clone)]
pub struct Config {
    /// Each caller's quota (its `x-api-key`).
    pub quota: Quota,
    /// The longest a call to the edge may take: a caller's `grpc-timeout`
    /// can only shorten it.
    pub max_timeout: Duration,
    /// The longest one call to the backend may take (the caller's deadline,
    /// if shorter, wins).
    pub backend_timeout: Duration,
    /// Calls the edge runs at once; more are refused `UNAVAILABLE`.
    pub max_in_flight: NonZeroU32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            quota: Quota::per_second(NonZeroU32::new(20).unwrap()),
            max_timeout: Duration::from_secs(2),
            backend_timeout: Duration::from_secs(1),
            max_in_flight: NonZeroU32::new(64).unwrap(),
        }
    }
}

/// The edge's client of the backend: a tonic client over the layered
/// `Channel`. Boxed so the client has a name; tonic's server asks its
/// services to be `Sync`, so the box is a `BoxCloneSyncService`.
/// Its responses' body is the breaker's, which counts the call when the
/// trailers arrive.
pub type BackendClient = InventoryClient<
    BoxCloneSyncService<http::Request<Body>, http::Response<GrpcBody<Body>>, Infallible>,
>;

/// The circuit breaker around the backend: it counts a call by its
/// grpc-status (UNAVAILABLE, INTERNAL, DEADLINE_EXCEEDED are failures; an
/// INVALID_ARGUMENT is the backend answering), in the headers or the
/// trailers, and a transport error as a failure.
fn breaker() -> GrpcCircuitBreakerLayer {
    GrpcCircuitBreakerLayer::new(
        circuit_breaker::Config::new()
            .consecutive_failures(NonZeroU32::new(3).unwrap())
            .open_wait(Duration::from_secs(30)),
    )
}

/// A client of the backend at `channel`, whose calls last at most
/// `timeout`, and the handle of its circuit breaker.
pub fn backend_client(channel: Channel, timeout: Duration) -> (BackendClient, Handle) {
    let breaker = breaker();
    let handle = breaker.handle();
    let stack = ServiceBuilder::new()
        // Every error of the stack (breaker open, timed out, the transport's)
        // as the gRPC status a tonic client reads.
        .layer(ProblemLayer::new())
        // The smaller of `timeout` and the caller's deadline, sent on as
        // grpc-timeout.
        .layer(
            TimeoutLayer::new(timeout)
                .per_request()
                .read_header(false)
                .forward_header(true),
        )
        // Calls with an idempotency-key are kept, so they can be sent again.
        .layer(ReplayableLayer::new())
        .layer(RetryLayer::new(GrpcClassifier::new()))
        .layer(breaker)
        .service(channel);
    (
        InventoryClient::new(BoxCloneSyncService::new(stack)),
        handle,
    )
}

/// The Inventory of the edge: each call forwarded to the backend.
#[derive(Debug, Clone)]
pub struct Edge {
    backend: BackendClient,
}

impl Edge {
    /// An edge that forwards to `backend`.
    pub fn new(backend: BackendClient) -> Self {
        Self { backend }
    }
}

/// The call to send the backend for `request`: its message, the deadline
/// the edge's timeout left in it, and the metadata the backend reads.
fn forward<T>(request: Request<T>) -> Request<T> {
    let (metadata, extensions, message) = request.into_parts();
    let mut out = Request::new(message);
    if let Some(deadline) = extensions.get::<Deadline>() {
        out.extensions_mut().insert(*deadline);
    }
    for name in FORWARDED {
        if let Some(value) = metadata.get(name) {
            out.metadata_mut().insert(name, value.clone());
        }
    }
    out
}

#[tonic::async_trait]
impl Inventory for Edge {
    async fn reserve(
        &self,
        request: Request<ReserveRequest>,
    ) -> Result<Response<Reservation>, Status> {
        let answer = self.backend.clone().reserve(forward(request)).await?;
        Ok(Response::new(answer.into_inner()))
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<Item>, Status> {
        let answer = self.backend.clone().get(forward(request)).await?;
        Ok(Response::new(answer.into_inner()))
    }
}

/// A lazy channel to the backend at `addr`: the edge starts whether or not
/// the backend is up.
pub fn channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("a socket address is a valid URI")
        .connect_timeout(Duration::from_secs(1))
        .connect_lazy()
}

/// Serves an edge in front of the backend at `backend` on `listener`, with
/// `config`, until `shutdown` completes. Returns the handle of the breaker
/// around the backend, and the server's future.
pub fn serve(
    listener: TcpListener,
    backend: SocketAddr,
    config: &Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> (
    Handle,
    impl Future<Output = Result<(), tonic::transport::Error>> + Send + 'static,
) {
    let (client, handle) = backend_client(channel(backend), config.backend_timeout);
    let stack = ServiceBuilder::new()
        // Every rejection below as a gRPC status.
        .layer(ProblemLayer::new())
        // Reads the caller's grpc-timeout (DEADLINE_EXCEEDED when it runs
        // out, INVALID_ARGUMENT when malformed) and leaves the Deadline in
        // the request for the handler to forward.
        .layer(TimeoutLayer::new(config.max_timeout).per_request())
        // RESOURCE_EXHAUSTED with grpc-retry-pushback-ms and RetryInfo.
        .layer(RateLimitLayer::new(config.quota.clone()).per(Header::api_key()))
        // A call with an idempotency-key runs once per caller; ABORTED while
        // it runs, FAILED_PRECONDITION for the key with another message.
        .layer(
            IdempotencyLayer::new()
                .per(Header::api_key())
                .optional(true),
        )
        // UNAVAILABLE when full.
        .layer(BulkheadLayer::new(config.max_in_flight))
        .into_inner();
    let server = tonic::transport::Server::builder()
        .layer(stack)
        .add_service(InventoryServer::new(Edge::new(client)))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown);
    (handle, server)
}
