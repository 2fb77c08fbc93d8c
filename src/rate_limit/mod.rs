//! Rate limiting with an exact GCRA, in memory or in Redis.
//!
//! [`RateLimitLayer`] decides every request against one or more [`Quota`]s
//! (all must allow; a denial spends nothing) kept in a [`Store`]:
//! [`MemoryStore`] for one instance, `RedisStore` (feature `redis`) when
//! every instance must share one count, on one Redis or a Redis Cluster
//! (`RedisStore::connect_cluster`; the hash tag `{<key>}` keeps every quota
//! of one decision in one slot). Clones of the service share the store. A denied request fails with [`Error::Limited`], a typed
//! [`RateLimited`]; over HTTP it becomes a `429` problem with `Retry-After`
//! and the `RateLimit-Policy` / `RateLimit` fields of
//! draft-ietf-httpapi-ratelimit-headers-10 (see [`RateLimitHeaders`] for
//! the syntax), which [`RateLimitLayer::http_headers`] adds to allowed
//! responses too.
//!
//! ```
//! use std::num::NonZeroU32;
//! use palisade::rate_limit::{Error, Quota, RateLimitLayer};
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! const TEN_PER_SECOND: Quota = Quota::per_second(NonZeroU32::new(10).unwrap())
//!     .burst(NonZeroU32::new(2).unwrap());
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let layer = RateLimitLayer::new(TEN_PER_SECOND)
//!     .quota(Quota::per_hour(NonZeroU32::new(1000).unwrap()))
//!     .per(|user: &&'static str| Some(user.to_string()));
//! let mut svc = ServiceBuilder::new()
//!     .layer(layer)
//!     .service(service_fn(|user: &'static str| async move {
//!         Ok::<_, std::convert::Infallible>(user.len())
//!     }));
//!
//! assert!(svc.ready().await.unwrap().call("ann").await.is_ok());
//! assert!(svc.ready().await.unwrap().call("ann").await.is_ok());
//! let Err(Error::Limited(limited)) = svc.ready().await.unwrap().call("ann").await else { panic!() };
//! assert!(limited.retry_after <= std::time::Duration::from_millis(100));
//! assert!(svc.ready().await.unwrap().call("bob").await.is_ok(), "each key has its own bucket");
//! # }
//! ```
//!
//! What a request is counted per comes from [`RateLimitLayer::per`], a
//! [`KeyExtractor`](crate::key::KeyExtractor): the client IP
//! (with trusted proxies), a header such as `X-Api-Key`, a closure, or one
//! of them falling back to another (see [`crate::key`]). A request without a
//! key is rejected (`400`) or counted under a fallback key ([`OnMissingCallerKey`]).
//! [`MemoryStore`] holds a bounded number of keys ([`DEFAULT_MAX_KEYS`]
//! unless built with [`MemoryStore::with_max_keys`]) and never forgets a bucket
//! that still limits its key: when it is full of live keys, new keys share
//! one overflow bucket with the same quotas (counted by
//! `palisade_rate_limit_overflow_decisions_total`), so flooding unique keys
//! resets nobody's bucket.
//! Layers that share one store count apart under different
//! [`namespace`](RateLimitLayer::namespace)s.
//!
//! # Tiers and quotas changed at run time
//!
//! The quota can depend on the request: [`RateLimitLayer::tier`] adds a
//! tier (such as a plan) with its own quotas, and
//! [`RateLimitLayer::tier_of`] chooses each request's tier with a
//! [`TierExtractor`]; other requests get the default tier's quotas.
//! `RateLimit-Policy` shows the quota that applied. The layer's
//! [`handle`](RateLimitLayer::handle) replaces any tier's quotas while the
//! service runs, from the next decision on, on every store; each key keeps
//! its bucket (see [`Handle`] for what a bucket holds under its new quota).
//!
//! ```
//! use std::num::NonZeroU32;
//! use http::Request;
//! use palisade::key::Header;
//! use palisade::rate_limit::{Quota, RateLimitLayer};
//!
//! // The plan an authentication layer put in the request's extensions.
//! #[derive(Clone, Copy, PartialEq)]
//! struct Pro;
//!
//! fn plan<B>(req: &Request<B>) -> Option<&str> {
//!     req.extensions().get::<Pro>().map(|_| "pro")
//! }
//!
//! let layer = RateLimitLayer::new(Quota::per_minute(NonZeroU32::new(100).unwrap()))
//!     .tier("pro", [Quota::per_minute(NonZeroU32::new(1_000).unwrap())])
//!     .tier_of(plan::<axum::body::Body>)
//!     .per(Header::api_key())
//!     .http_headers();
//! let quotas = layer.handle();
//! // Later, without a restart:
//! quotas.set_tier("pro", [Quota::per_minute(NonZeroU32::new(2_000).unwrap())]).unwrap();
//! # let _ = layer;
//! ```
//!
//! When the store fails or is slow, [`OnStoreError`] lets requests through
//! with a warning (the default) or rejects them (`503`). [Shadow mode](RateLimitLayer::shadow)
//! decides and logs but never rejects.
//!
//! # Metrics and tracing
//!
//! Every decision is one `tracing` event with the fields of
//! [`crate::observability`] (`layer = "rate_limit"`, the layer's
//! [`name`](RateLimitLayer::name), the key as a [`redact_key`] digest, never
//! raw, `outcome`, and `latency_us` of the store decision when `DEBUG` is
//! enabled): allowed at `TRACE`, denials and missing keys at `DEBUG`, store
//! failures at `WARN`. With the feature `metrics` it also counts
//! `palisade_rate_limit_decisions_total{name, outcome}` (`allowed`, `denied`,
//! `shadow_denied`, `missing_caller_key`, `failed_open`, `failed_closed`; a request
//! that costs more than the smallest burst counts as `denied`) and
//! `palisade_rate_limit_local_denials_total{name}` for denials a store
//! answered from a cache in this process ([`Decision::is_cached`]), and
//! `palisade_rate_limit_overflow_decisions_total{name}` for decisions a full
//! store made on its shared overflow bucket ([`Decision::is_overflowed`]).
//!
//! [`redact_key`]: crate::observability::redact_key

mod config;
mod decision;
mod gcra;
mod headers;
mod layer;
mod limits;
mod observe;
mod quota;
mod service;
mod store;
mod tiers;

pub mod error;
pub mod future;

pub use self::config::{Cost, OnMissingCallerKey, UnitCost};
pub use self::decision::Decision;
pub use self::error::{Error, RateLimited};
pub use self::headers::{NoHeaders, ResponseHeaders};
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use self::headers::{RATELIMIT, RATELIMIT_POLICY, RateLimitHeaders};
pub use self::layer::RateLimitLayer;
pub use self::limits::Limits;
pub use self::quota::Quota;
pub use self::service::RateLimit;
pub use self::store::Store;
pub use self::store::memory::{DEFAULT_MAX_KEYS, MemoryStore};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::store::redis::RedisStore;
pub use self::tiers::{DefaultTier, Handle, InvalidTier, TierExtractor};
#[cfg(feature = "config")]
pub(crate) use self::{quota::is_name, tiers::check_name};
pub use crate::store::{OnStoreError, StoreError};
