//! Order logic: price the order, charge it, store it.
//!
//! Knows nothing of HTTP. The only rule about retries it needs is the one the
//! payment provider and the repository enforce: one charge and one order per
//! caller-scoped idempotency key.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use palisade::idempotency::IdempotencyKey;

use crate::clients::{BreakerProbe, BreakerState, ClientError, PaymentClient};
use crate::domain::{DomainError, NewOrder, Order, OrderStatus};
use crate::repository::{Db, DbError, Inserted, Repository};
use crate::routes::ProductSummary;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error("payment failed: {0}")]
    Payment(#[from] ClientError),
    #[error("the idempotency key belongs to a different order")]
    KeyReused,
    /// The repository failed, or the `orders` bulkhead refused the query
    /// ([`DbError::Overloaded`]).
    #[error(transparent)]
    Storage(#[from] DbError),
}

/// An order placed, or found already placed under the same key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placed {
    New(Order),
    /// The same key and the same order were placed before (for example by a
    /// retry that reached another instance): answered from the repository.
    Existing(Order),
}

#[derive(Debug, Clone)]
pub struct OrderService {
    repository: Repository,
    /// The repository behind the `orders` bulkhead.
    db: Db,
    payment: PaymentClient,
    /// Payment steps started, shared by clones: the count the idempotency
    /// layer must keep at one per key, whatever the provider dedupes.
    payment_steps: Arc<AtomicU64>,
}

impl OrderService {
    /// `db` is `repository` with the layers its order queries go through.
    pub fn new(repository: Repository, db: Db, payment: PaymentClient) -> Self {
        Self {
            repository,
            db,
            payment,
            payment_steps: Arc::default(),
        }
    }

    /// Payment steps this service started, one per order it charged
    /// (whatever the provider then made of the call, and however often its
    /// client retried it).
    pub fn payment_steps(&self) -> u64 {
        self.payment_steps.load(Ordering::Relaxed)
    }

    pub fn payment(&self) -> &PaymentClient {
        &self.payment
    }

    pub fn repository(&self) -> &Repository {
        &self.repository
    }

    /// Places `order` under `key` (already scoped to the caller).
    ///
    /// The payment carries a key derived from `key` alone
    /// ([`IdempotencyKey::derive`]), so every retry of one order, on any
    /// instance, sends the same one and a retry after a timeout, a crash or
    /// a lost response charges once; nothing is stored unless the payment
    /// succeeded, so a failed attempt can be retried with the same key.
    pub async fn place(
        &self,
        key: &IdempotencyKey,
        order: NewOrder,
    ) -> Result<Placed, ServiceError> {
        let payment_key = key.derive("payment");
        let key = key.as_str();
        let (subtotal, total) = order.totals()?;
        if let Some(existing) = self.db.find_by_key(key).await? {
            return same_order(existing, &order).map(Placed::Existing);
        }
        self.payment_steps.fetch_add(1, Ordering::Relaxed);
        let payment_id = self
            .payment
            .charge(&payment_key, total, order.currency)
            .await?;
        let placed = Order {
            id: format!("ord_{}", uuid::Uuid::new_v4().simple()),
            idempotency_key: key.to_owned(),
            order: order.clone(),
            subtotal,
            total,
            payment_id,
            status: OrderStatus::Paid,
        };
        match self.db.insert(placed).await? {
            Inserted::New(o) => Ok(Placed::New(o)),
            // Lost a race with a concurrent request of the same key: the
            // provider charged once (same payment key), the database kept one.
            Inserted::Existing(existing) => same_order(existing, &order).map(Placed::Existing),
        }
    }

    pub async fn get(&self, id: &str) -> Result<Option<Order>, DbError> {
        self.db.get(id).await
    }
}

/// Recommendations for a product page: a catalogue query of the
/// repository, through the `recommendations` bulkhead, breaker and timeout
/// of `layers.rs`.
#[derive(Debug, Clone)]
pub struct Recommendations {
    db: Db,
    breaker: BreakerProbe,
}

impl Recommendations {
    pub fn new(db: Db, breaker: BreakerProbe) -> Self {
        Self { db, breaker }
    }

    /// The state of the recommendations breaker.
    pub fn breaker(&self) -> BreakerState {
        self.breaker.state()
    }

    /// The products recommended with product `id`.
    pub async fn for_product(&self, id: u32) -> Result<Vec<ProductSummary>, DbError> {
        let ids = self.db.recommended(id).await?;
        Ok(ids
            .into_iter()
            .map(crate::routes::product_summary)
            .collect())
    }
}

fn same_order(existing: Order, asked: &NewOrder) -> Result<Order, ServiceError> {
    if existing.order == *asked {
        Ok(existing)
    } else {
        Err(ServiceError::KeyReused)
    }
}
