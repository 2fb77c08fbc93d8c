//! Where orders live: in memory, or in PostgreSQL when `DATABASE_URL` is set.
//!
//! Both keep one order per caller-scoped idempotency key. In PostgreSQL that
//! is a `UNIQUE` column and an `INSERT ... ON CONFLICT DO NOTHING`: the last
//! line of defence against a duplicate order, even if every layer above it
//! were bypassed or two instances raced past them.
//!
//! Every query, of orders or of the catalogue (recommendations), holds one
//! connection of a bounded [`Pool`] (`DB_POOL_SIZE`) while it runs, so a slow
//! query keeps a connection from every other one. The handlers reach the
//! repository through a [`Db`]: a tower service over [`Repository::run`]
//! with a bulkhead in front (`layers.rs`), one for orders and one for
//! recommendations, so slow recommendations cannot take the connections
//! orders need.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade::BoxError;
use palisade::load_shed::Shed;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::{NoTls, Row};
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;
use utoipa::ToSchema;

use crate::domain::{Currency, Identifier, LineItem, Money, NewOrder, Order, OrderStatus, Percent};

/// `DB_POOL_SIZE`'s default: connections of the [`Pool`].
pub const DEFAULT_POOL_SIZE: NonZeroUsize = NonZeroUsize::new(10).expect("non-zero");

/// The order store: a backend, and the pool of connections its queries
/// take turns on. Clones share both.
#[derive(Debug, Clone)]
pub struct Repository {
    backend: Backend,
    pool: Pool,
}

/// Where the rows are.
#[derive(Debug, Clone)]
pub enum Backend {
    Memory(Arc<Mutex<MemoryOrders>>),
    Postgres(Arc<PostgresOrders>),
}

/// What an insert did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// The order is stored.
    New(Order),
    /// An order with the same idempotency key was already stored; here it is.
    Existing(Order),
}

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("invalid table name {0:?}")]
    TableName(String),
    #[error("stored order {id} is unreadable: {reason}")]
    Corrupt { id: String, reason: String },
    /// The fault `/admin/faults` injects into recommendations queries.
    #[error("injected fault")]
    Injected,
}

/// Whether a failed query is worth another attempt (for the hedge of
/// recommendations queries: a failed attempt waits for its hedge): a
/// broken connection or an injected fault may pass on another try; a corrupt
/// row or a bad table name will not.
impl palisade::attempt::Retryable for RepoError {
    fn verdict(&self) -> palisade::attempt::Verdict {
        use palisade::attempt::Verdict;
        match self {
            Self::Postgres(_) | Self::Injected => Verdict::Retry { after: None },
            Self::TableName(_) | Self::Corrupt { .. } => Verdict::Done,
        }
    }
}

#[derive(Debug, Default)]
pub struct MemoryOrders {
    by_id: HashMap<String, Order>,
    by_key: HashMap<String, String>,
}

#[derive(Debug)]
pub struct PostgresOrders {
    client: tokio_postgres::Client,
    table: String,
}

impl Repository {
    /// Orders in memory, on a pool of [`DEFAULT_POOL_SIZE`].
    pub fn memory() -> Self {
        Self {
            backend: Backend::Memory(Arc::default()),
            pool: Pool::new(DEFAULT_POOL_SIZE),
        }
    }

    /// The same rows on a new pool of `size` connections: each instance of
    /// the API has a pool of its own, whatever rows it shares.
    #[must_use]
    pub fn with_pool_size(self, size: NonZeroUsize) -> Self {
        Self {
            backend: self.backend,
            pool: Pool::new(size),
        }
    }

    /// Where the rows are.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The connections every query takes turns on.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Connects, and creates `table` (and its unique index) if missing.
    /// `table` must be a plain lowercase SQL identifier.
    pub async fn postgres(url: &str, table: &str) -> Result<Self, RepoError> {
        let plain = table.len() <= 63
            && table.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && table
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !plain {
            return Err(RepoError::TableName(table.to_owned()));
        }
        let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::error!(%error, "postgres connection closed");
            }
        });
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {table} (
                    id               TEXT PRIMARY KEY,
                    idempotency_key  TEXT NOT NULL UNIQUE,
                    customer_id      TEXT NOT NULL,
                    currency         CHAR(3) NOT NULL,
                    items            JSONB NOT NULL,
                    discount_percent SMALLINT NOT NULL CHECK (discount_percent BETWEEN 0 AND 100),
                    subtotal_cents   BIGINT NOT NULL CHECK (subtotal_cents >= 0),
                    total_cents      BIGINT NOT NULL CHECK (total_cents >= 0),
                    payment_id       TEXT NOT NULL,
                    status           TEXT NOT NULL,
                    created_at       TIMESTAMPTZ NOT NULL DEFAULT now()
                )"
            ))
            .await?;
        Ok(Self {
            backend: Backend::Postgres(Arc::new(PostgresOrders {
                client,
                table: table.to_owned(),
            })),
            pool: Pool::new(DEFAULT_POOL_SIZE),
        })
    }

    /// Runs `query` on a connection of the pool, held until it answers.
    pub async fn run(&self, query: Query) -> Result<Rows, RepoError> {
        match query {
            Query::Get(id) => self.get(&id).await.map(Rows::Order),
            Query::FindByKey(key) => self.find_by_key(&key).await.map(Rows::Order),
            Query::Insert(order) => self.insert(*order).await.map(Rows::Inserted),
            Query::Recommended { product, latency } => {
                self.recommended(product, latency).await.map(Rows::Products)
            }
        }
    }

    /// The products recommended with `product`: the next
    /// [`RECOMMENDED`] of the catalogue of `catalogue` products, wrapping.
    /// `latency` is time the query itself takes (the recommendations fault
    /// of `/admin/faults`), spent holding its connection as a slow query
    /// does.
    pub async fn recommended(
        &self,
        product: u32,
        latency: Duration,
    ) -> Result<Vec<u32>, RepoError> {
        let _connection = self.pool.acquire(QueryKind::Recommendations).await;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let catalogue = crate::routes::PRODUCT_COUNT;
        match &self.backend {
            Backend::Memory(_) => Ok((1..=RECOMMENDED)
                .map(|n| (product + n - 1) % catalogue + 1)
                .collect()),
            Backend::Postgres(pg) => {
                let rows = pg
                    .client
                    .query(
                        "SELECT ((($1::bigint + n - 1) % $2::bigint) + 1)::bigint AS id
                         FROM generate_series(1, $3::bigint) AS n ORDER BY n",
                        &[
                            &i64::from(product),
                            &i64::from(catalogue),
                            &i64::from(RECOMMENDED),
                        ],
                    )
                    .await?;
                rows.iter()
                    .map(|row| {
                        let id: i64 = row.try_get("id")?;
                        Ok(u32::try_from(id).unwrap_or(0))
                    })
                    .collect()
            }
        }
    }

    /// Stores `order` unless its idempotency key already has one.
    pub async fn insert(&self, order: Order) -> Result<Inserted, RepoError> {
        let _connection = self.pool.acquire(QueryKind::Orders).await;
        match &self.backend {
            Backend::Memory(m) => {
                let mut m = m.lock().expect("orders lock");
                if let Some(id) = m.by_key.get(&order.idempotency_key) {
                    return Ok(Inserted::Existing(m.by_id[id].clone()));
                }
                m.by_key
                    .insert(order.idempotency_key.clone(), order.id.clone());
                m.by_id.insert(order.id.clone(), order.clone());
                Ok(Inserted::New(order))
            }
            Backend::Postgres(pg) => {
                let items = serde_json::to_string(&order.order.items).expect("items serialise");
                let inserted = pg
                    .client
                    .execute(
                        &format!(
                            "INSERT INTO {} (id, idempotency_key, customer_id, currency, items,
                                discount_percent, subtotal_cents, total_cents, payment_id, status)
                             VALUES ($1, $2, $3, $4, $5::text::jsonb, $6, $7, $8, $9, $10)
                             ON CONFLICT (idempotency_key) DO NOTHING",
                            pg.table
                        ),
                        &[
                            &order.id,
                            &order.idempotency_key,
                            &order.order.customer_id.as_str(),
                            &order.order.currency.as_str(),
                            &items,
                            &i16::from(order.order.discount.get()),
                            &cents_to_sql(order.subtotal),
                            &cents_to_sql(order.total),
                            &order.payment_id,
                            &order.status.as_str(),
                        ],
                    )
                    .await?;
                if inserted == 1 {
                    return Ok(Inserted::New(order));
                }
                match pg
                    .select_one("idempotency_key", &order.idempotency_key)
                    .await?
                {
                    Some(existing) => Ok(Inserted::Existing(existing)),
                    // Only possible if the row was deleted in between.
                    None => Err(RepoError::Corrupt {
                        id: order.id,
                        reason: "conflicting row vanished".to_owned(),
                    }),
                }
            }
        }
    }

    pub async fn get(&self, id: &str) -> Result<Option<Order>, RepoError> {
        let _connection = self.pool.acquire(QueryKind::Orders).await;
        match &self.backend {
            Backend::Memory(m) => Ok(m.lock().expect("orders lock").by_id.get(id).cloned()),
            Backend::Postgres(pg) => pg.select_one("id", id).await,
        }
    }

    pub async fn find_by_key(&self, key: &str) -> Result<Option<Order>, RepoError> {
        let _connection = self.pool.acquire(QueryKind::Orders).await;
        match &self.backend {
            Backend::Memory(m) => {
                let m = m.lock().expect("orders lock");
                Ok(m.by_key.get(key).map(|id| m.by_id[id].clone()))
            }
            Backend::Postgres(pg) => pg.select_one("idempotency_key", key).await,
        }
    }

    /// Drops the table (tests clean up after themselves).
    pub async fn drop_table(&self) -> Result<(), RepoError> {
        if let Backend::Postgres(pg) = &self.backend {
            pg.client
                .batch_execute(&format!("DROP TABLE IF EXISTS {}", pg.table))
                .await?;
        }
        Ok(())
    }
}

// Amounts are capped at `Money::MAX` = `i64::MAX`, so this never saturates.
fn cents_to_sql(m: Money) -> i64 {
    i64::try_from(m.cents()).unwrap_or(i64::MAX)
}

impl PostgresOrders {
    async fn select_one(&self, column: &str, value: &str) -> Result<Option<Order>, RepoError> {
        let row = self
            .client
            .query_opt(
                &format!(
                    "SELECT id, idempotency_key, customer_id, currency, items::text AS items,
                        discount_percent, subtotal_cents, total_cents, payment_id, status
                     FROM {} WHERE {column} = $1",
                    self.table
                ),
                &[&value],
            )
            .await?;
        row.map(|row| order_from_row(&row)).transpose()
    }
}

fn order_from_row(row: &Row) -> Result<Order, RepoError> {
    let id: String = row.try_get("id")?;
    let corrupt = |reason: String| RepoError::Corrupt {
        id: id.clone(),
        reason,
    };
    let items: String = row.try_get("items")?;
    let items: Vec<LineItem> = serde_json::from_str(&items).map_err(|e| corrupt(e.to_string()))?;
    let customer: String = row.try_get("customer_id")?;
    let currency: String = row.try_get("currency")?;
    let discount: i16 = row.try_get("discount_percent")?;
    let money = |column: &str| -> Result<Money, RepoError> {
        let cents: i64 = row.try_get(column)?;
        u64::try_from(cents)
            .map_err(|e| e.to_string())
            .and_then(|c| Money::from_cents(c).map_err(|e| e.to_string()))
            .map_err(corrupt)
    };
    let status: String = row.try_get("status")?;
    let order = NewOrder::new(
        Identifier::new(customer).map_err(|e| corrupt(e.to_string()))?,
        Currency::new(&currency).map_err(|e| corrupt(e.to_string()))?,
        items,
        Percent::new(i64::from(discount)).map_err(|e| corrupt(e.to_string()))?,
    )
    .map_err(|e| corrupt(e.to_string()))?;
    Ok(Order {
        idempotency_key: row.try_get("idempotency_key")?,
        order,
        subtotal: money("subtotal_cents")?,
        total: money("total_cents")?,
        payment_id: row.try_get("payment_id")?,
        status: OrderStatus::parse(&status).ok_or_else(|| corrupt(format!("status {status:?}")))?,
        id,
    })
}

/// How many products a recommendations query answers.
pub const RECOMMENDED: u32 = 3;

/// A query of the repository, as [`Repository::run`] takes it.
#[derive(Debug, Clone)]
pub enum Query {
    /// The order with this id.
    Get(String),
    /// The order stored under this (caller-scoped) idempotency key.
    FindByKey(String),
    /// Stores an order unless its key already has one.
    Insert(Box<Order>),
    /// The products recommended with `product`, the query taking `latency`.
    Recommended { product: u32, latency: Duration },
}

/// Only a recommendations query is sent twice (a hedge): it reads and
/// writes nothing. Order queries are sent once.
impl palisade::attempt::Replay for Query {
    fn replay(&self) -> Option<Self> {
        match self {
            Self::Recommended { .. } => Some(self.clone()),
            Self::Get(_) | Self::FindByKey(_) | Self::Insert(_) => None,
        }
    }
}

/// What a [`Query`] answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rows {
    /// For [`Query::Get`] and [`Query::FindByKey`].
    Order(Option<Order>),
    /// For [`Query::Insert`].
    Inserted(Inserted),
    /// For [`Query::Recommended`]: product ids.
    Products(Vec<u32>),
}

/// Who a connection is held for, in [`PoolStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryKind {
    Orders,
    Recommendations,
}

/// A bounded pool of connections: a query holds one while it runs, and
/// waits for one when all are taken.
///
/// In memory a connection is a semaphore permit. On PostgreSQL the demo
/// keeps one `tokio-postgres` connection, which pipelines the queries sent
/// on it: the pool's permits bound how many are in flight, as a pool of
/// `DB_POOL_SIZE` connections would, and an injected latency is spent
/// holding the permit (not `pg_sleep`, which would stall the one connection
/// for every query).
#[derive(Debug, Clone)]
pub struct Pool(Arc<PoolInner>);

#[derive(Debug)]
struct PoolInner {
    size: NonZeroUsize,
    connections: Arc<Semaphore>,
    in_use: AtomicUsize,
    peak: AtomicUsize,
    /// Indexed by `QueryKind as usize`.
    by_kind: [(AtomicUsize, AtomicUsize); 2],
}

impl Pool {
    /// A pool of `size` connections.
    pub fn new(size: NonZeroUsize) -> Self {
        Self(Arc::new(PoolInner {
            size,
            connections: Arc::new(Semaphore::new(size.get())),
            in_use: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            by_kind: Default::default(),
        }))
    }

    /// Waits for a free connection and holds it until the [`Connection`]
    /// is dropped.
    pub async fn acquire(&self, kind: QueryKind) -> Connection {
        let permit = self
            .0
            .connections
            .clone()
            .acquire_owned()
            .await
            .expect("the pool's semaphore is never closed");
        let inner = &self.0;
        let now = inner.in_use.fetch_add(1, Ordering::Relaxed) + 1;
        inner.peak.fetch_max(now, Ordering::Relaxed);
        let (in_use, peak) = &inner.by_kind[kind as usize];
        let now = in_use.fetch_add(1, Ordering::Relaxed) + 1;
        peak.fetch_max(now, Ordering::Relaxed);
        Connection {
            pool: self.clone(),
            kind,
            _permit: permit,
        }
    }

    /// Connections in use and the most ever in use at once, in all and by
    /// kind of query.
    pub fn stats(&self) -> PoolStats {
        let inner = &self.0;
        let usage = |kind: QueryKind| {
            let (in_use, peak) = &inner.by_kind[kind as usize];
            Usage {
                in_use: in_use.load(Ordering::Relaxed),
                peak: peak.load(Ordering::Relaxed),
            }
        };
        PoolStats {
            size: inner.size.get(),
            in_use: inner.in_use.load(Ordering::Relaxed),
            peak: inner.peak.load(Ordering::Relaxed),
            orders: usage(QueryKind::Orders),
            recommendations: usage(QueryKind::Recommendations),
        }
    }
}

/// A connection of the [`Pool`], given back when dropped.
#[derive(Debug)]
pub struct Connection {
    pool: Pool,
    kind: QueryKind,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Connection {
    fn drop(&mut self) {
        let inner = &self.pool.0;
        inner.in_use.fetch_sub(1, Ordering::Relaxed);
        inner.by_kind[self.kind as usize]
            .0
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// The `pool` member of `/admin/stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PoolStats {
    /// Connections in the pool (`DB_POOL_SIZE`).
    pub size: usize,
    /// Connections held by a query now.
    pub in_use: usize,
    /// The most connections ever held at once.
    pub peak: usize,
    /// Connections held by order queries.
    pub orders: Usage,
    /// Connections held by recommendations queries: never more than the
    /// `recommendations` bulkhead lets in (`RECOMMENDATIONS_BULKHEAD`).
    pub recommendations: Usage,
}

/// Connections held by one kind of query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    /// Held now.
    pub in_use: usize,
    /// The most ever held at once.
    pub peak: usize,
}

/// A query that did not answer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// Refused by the query's bulkhead: its share of the pool is taken.
    #[error(transparent)]
    Overloaded(Shed),
    /// The repository failed.
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// A layer in front of the repository gave up on it (a timeout, an open
    /// circuit).
    #[error("unavailable: {0}")]
    Unavailable(BoxError),
}

/// The repository as the handlers reach it: through the layers `layers.rs`
/// puts in front of it (a bulkhead, for recommendations also a breaker and
/// a timeout).
#[derive(Clone)]
pub struct Db(BoxCloneSyncService<Query, Rows, DbError>);

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Db")
    }
}

impl Db {
    /// Wraps a stack over [`Repository::run`].
    pub fn new(stack: BoxCloneSyncService<Query, Rows, DbError>) -> Self {
        Self(stack)
    }

    /// Runs `query` through the stack.
    pub async fn run(&self, query: Query) -> Result<Rows, DbError> {
        self.0.clone().oneshot(query).await
    }

    pub async fn get(&self, id: &str) -> Result<Option<Order>, DbError> {
        match self.run(Query::Get(id.to_owned())).await? {
            Rows::Order(order) => Ok(order),
            other => unreachable!("a get answered {other:?}"),
        }
    }

    pub async fn find_by_key(&self, key: &str) -> Result<Option<Order>, DbError> {
        match self.run(Query::FindByKey(key.to_owned())).await? {
            Rows::Order(order) => Ok(order),
            other => unreachable!("a find by key answered {other:?}"),
        }
    }

    pub async fn insert(&self, order: Order) -> Result<Inserted, DbError> {
        match self.run(Query::Insert(Box::new(order))).await? {
            Rows::Inserted(inserted) => Ok(inserted),
            other => unreachable!("an insert answered {other:?}"),
        }
    }

    /// The products recommended with `product` (the stack sets the
    /// query's latency).
    pub async fn recommended(&self, product: u32) -> Result<Vec<u32>, DbError> {
        let query = Query::Recommended {
            product,
            latency: Duration::ZERO,
        };
        match self.run(query).await? {
            Rows::Products(ids) => Ok(ids),
            other => unreachable!("a recommendations query answered {other:?}"),
        }
    }
}
