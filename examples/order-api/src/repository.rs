//! Where orders live: in memory, or in PostgreSQL when `DATABASE_URL` is set.
//!
//! Both keep one order per caller-scoped idempotency key. In PostgreSQL that
//! is a `UNIQUE` column and an `INSERT ... ON CONFLICT DO NOTHING`: the last
//! line of defence against a duplicate order, even if every layer above it
//! were bypassed or two instances raced past them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio_postgres::{NoTls, Row};

use crate::domain::{Currency, Identifier, LineItem, Money, NewOrder, Order, OrderStatus, Percent};

/// The order store.
#[derive(Debug, Clone)]
pub enum Repository {
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
    pub fn memory() -> Self {
        Repository::Memory(Arc::default())
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
        Ok(Repository::Postgres(Arc::new(PostgresOrders {
            client,
            table: table.to_owned(),
        })))
    }

    /// Stores `order` unless its idempotency key already has one.
    pub async fn insert(&self, order: Order) -> Result<Inserted, RepoError> {
        match self {
            Repository::Memory(m) => {
                let mut m = m.lock().expect("orders lock");
                if let Some(id) = m.by_key.get(&order.idempotency_key) {
                    return Ok(Inserted::Existing(m.by_id[id].clone()));
                }
                m.by_key
                    .insert(order.idempotency_key.clone(), order.id.clone());
                m.by_id.insert(order.id.clone(), order.clone());
                Ok(Inserted::New(order))
            }
            Repository::Postgres(pg) => {
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
                match self.find_by_key(&order.idempotency_key).await? {
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
        match self {
            Repository::Memory(m) => Ok(m.lock().expect("orders lock").by_id.get(id).cloned()),
            Repository::Postgres(pg) => pg.select_one("id", id).await,
        }
    }

    pub async fn find_by_key(&self, key: &str) -> Result<Option<Order>, RepoError> {
        match self {
            Repository::Memory(m) => {
                let m = m.lock().expect("orders lock");
                Ok(m.by_key.get(key).map(|id| m.by_id[id].clone()))
            }
            Repository::Postgres(pg) => pg.select_one("idempotency_key", key).await,
        }
    }

    /// Drops the table (tests clean up after themselves).
    pub async fn drop_table(&self) -> Result<(), RepoError> {
        if let Repository::Postgres(pg) = self {
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
