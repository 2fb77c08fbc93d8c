//! The backend: the real Inventory, in memory.
//!
//! It records the `grpc-timeout` of every call it gets, so a test can see
//! the budget the edge forwarded, and answers late when asked to
//! ([`DELAY_MS`](crate::DELAY_MS)).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade::grpc::{GRPC_TIMEOUT, parse_grpc_timeout};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

use crate::pb::inventory_server::{Inventory, InventoryServer};
use crate::pb::{GetRequest, Item, Reservation, ReserveRequest};

/// What the backend saw: shared with whoever started it.
#[derive(Debug, Default)]
pub struct Seen {
    /// The budget of each call, from its `grpc-timeout` (`None`: the call
    /// carried none, or a malformed one).
    pub budgets: Mutex<Vec<Option<Duration>>>,
    /// Reservations the backend ran.
    pub reservations: AtomicU64,
    /// Signalled whenever a call arrives.
    pub arrived: Notify,
}

impl Seen {
    /// The budget of the last call.
    pub fn last_budget(&self) -> Option<Duration> {
        self.budgets.lock().unwrap().last().copied().flatten()
    }

    /// The number of reservations the backend ran.
    pub fn reservations(&self) -> u64 {
        self.reservations.load(Ordering::SeqCst)
    }
}

/// The Inventory service.
#[derive(Debug, Clone)]
pub struct Backend {
    seen: Arc<Seen>,
    stock: Arc<Mutex<HashMap<String, u32>>>,
}

impl Backend {
    /// A backend with 100 of each of a few items.
    pub fn new() -> Self {
        let stock = ["apple", "pear", "plum"]
            .into_iter()
            .map(|sku| (sku.to_owned(), 100))
            .collect();
        Self {
            seen: Arc::default(),
            stock: Arc::new(Mutex::new(stock)),
        }
    }

    /// What the backend saw.
    pub fn seen(&self) -> Arc<Seen> {
        self.seen.clone()
    }

    // Records the call's budget, then waits as long as it asks, and fails
    // as it asks.
    async fn arrive<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let budget = request.metadata().get(GRPC_TIMEOUT.as_str()).and_then(|v| {
            parse_grpc_timeout(&http::HeaderValue::from_bytes(v.as_bytes()).ok()?).ok()
        });
        self.seen.budgets.lock().unwrap().push(budget);
        self.seen.arrived.notify_waiters();
        let delay = request
            .metadata()
            .get(crate::DELAY_MS)
            .and_then(|v| v.to_str().ok()?.parse().ok());
        if let Some(ms) = delay {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let fail = request
            .metadata()
            .get(crate::FAIL_CODE)
            .and_then(|v| v.to_str().ok()?.parse::<i32>().ok());
        match fail {
            Some(code) => Err(Status::new(code.into(), "failing as asked")),
            None => Ok(()),
        }
    }
}

impl Default for Backend {
    fn default() -> Self {
        Self::new()
    }
}

#[tonic::async_trait]
impl Inventory for Backend {
    async fn reserve(
        &self,
        request: Request<ReserveRequest>,
    ) -> Result<Response<Reservation>, Status> {
        self.arrive(&request).await?;
        let ReserveRequest { sku, quantity } = request.into_inner();
        if quantity == 0 {
            return Err(Status::invalid_argument("quantity must be positive"));
        }
        {
            let mut stock = self.stock.lock().unwrap();
            let available = stock
                .get_mut(&sku)
                .ok_or_else(|| Status::not_found(format!("no item {sku}")))?;
            if *available < quantity {
                return Err(Status::failed_precondition(format!(
                    "only {available} of {sku} left"
                )));
            }
            *available -= quantity;
        }
        let n = self.seen.reservations.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(Response::new(Reservation {
            id: format!("r-{n}"),
            sku,
            quantity,
        }))
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<Item>, Status> {
        self.arrive(&request).await?;
        let sku = request.into_inner().sku;
        let available = *self
            .stock
            .lock()
            .unwrap()
            .get(&sku)
            .ok_or_else(|| Status::not_found(format!("no item {sku}")))?;
        Ok(Response::new(Item { sku, available }))
    }
}

/// Serves `backend` on `listener` until `shutdown` completes.
pub async fn serve(
    backend: Backend,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(InventoryServer::new(backend))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
}
