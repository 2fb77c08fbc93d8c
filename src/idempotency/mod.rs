//! Idempotency keys: one execution per `Idempotency-Key` and caller, across
//! retries, crashes and instances (with Redis, up to a failover: see
//! [Durability under Redis failover](#durability-under-redis-failover)).
//!
//! A client that retries a `POST` (a payment, an order) sends the same
//! `Idempotency-Key` header each time. [`IdempotencyLayer`] runs the first
//! request and stores its response; a retry gets that response back
//! byte-for-byte with `Idempotent-Replayed: true`, and the handler does not
//! run again. Semantics follow the IETF httpapi Idempotency-Key draft and
//! Stripe's API:
//!
//! | request | answer |
//! |---|---|
//! | key missing (when required) or invalid (empty, over 255 bytes, not visible ASCII) | `400` |
//! | no caller key to keep the key per | `400` |
//! | JSON body with a repeated member name ([`FingerprintMode::CanonicalJson`]) | `400` |
//! | first with this key | runs; the response is stored (2xx, 4xx except 408/409/429) |
//! | same key, same request, finished | the stored response, `Idempotent-Replayed: true` |
//! | same key, same request, still running | `409` with `Retry-After` (or wait, bounded: [`IdempotencyLayer::wait_for_in_flight`]) |
//! | same key, other method/path/body/chosen headers | `422` |
//! | same key, response was not kept (too large; its body failed or was cut off) | `410`, never a second run |
//! | store down, or a [`MemoryStore`] full | `503` (or run without idempotency: [`OnStoreError::FailOpen`]) |
//!
//! Every refusal is an [`Error`] that implements
//! [`IntoProblem`](crate::problem::IntoProblem): put
//! [`ProblemLayer`](crate::problem::ProblemLayer) outside to answer them as
//! `application/problem+json`.
//!
//! ```
//! use std::convert::Infallible;
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use palisade::idempotency::IdempotencyLayer;
//! use palisade::problem::ProblemLayer;
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let mut svc = ServiceBuilder::new()
//!     .layer(ProblemLayer::new())
//!     // Keys are private per caller: by default its X-Api-Key, else its
//!     // Authorization, else its address (`key::Caller`).
//!     .layer(IdempotencyLayer::new())
//!     .service(service_fn(|_req: Request<Full<Bytes>>| async {
//!         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("charged once"))))
//!     }));
//!
//! let request = || {
//!     Request::post("/payments")
//!         .header("x-api-key", "customer-1")
//!         .header("idempotency-key", "8e03978e-40d5-43e8-bc93-6894a57f9324")
//!         .body(Full::new(Bytes::from(r#"{"amount":100}"#)))
//!         .unwrap()
//! };
//! let first = svc.ready().await.unwrap().call(request()).await.unwrap();
//! assert!(first.headers().get("idempotent-replayed").is_none());
//! let retry = svc.ready().await.unwrap().call(request()).await.unwrap();
//! assert_eq!(retry.headers()["idempotent-replayed"], "true");
//! assert_eq!(retry.into_body().collect().await.unwrap().to_bytes(), "charged once");
//! # }
//! ```
//!
//! # How a key is claimed
//!
//! The first request claims its key atomically: in one store operation it
//! either finds the existing record or writes an in-flight record with a
//! lease (default 10 s) and a random token, chosen before the claim is sent,
//! so a claim whose reply is lost (a store timeout, a dropped request) is
//! released by that token whether or not it landed. Two duplicates, in one
//! process or on two instances sharing Redis, can never both claim. While
//! the handler runs, a heartbeat renews the lease every third of it
//! (compare-token-and-extend), so a long request keeps its key and a
//! crashed instance's key frees itself within one lease. When the handler
//! answers, the layer writes the response in a compare-token-and-set: a
//! holder whose lease expired (it was paused, partitioned, stalled) and was
//! taken over can neither renew nor overwrite the new holder's record (a
//! lost renewal is logged at `WARN` and the response is then not stored).
//! The claim also carries a fencing number, handed to the handler as the
//! [`Fence`] extension, for its own downstream writes. With [`MemoryStore`]
//! each step is one critical section; with `RedisStore` (feature `redis`)
//! each is one Lua script, so a replay costs one round trip and a first
//! execution two (plus one per renewal, only for requests that run longer
//! than a third of the lease). `RedisStore` works on one
//! Redis or on a Redis Cluster (`RedisStore::connect_cluster`): the record
//! and its fencing counter share the hash tag `{<hash>}`, so every step's
//! keys are in one slot.
//!
//! Keys are kept per the caller key of [`IdempotencyLayer::per`] and per
//! method and path. The default, [`Caller`](crate::key::Caller), is the
//! `X-Api-Key` header, else `Authorization`, else the client address; give
//! the layer the extractor the rate limiter keys callers by, or one that
//! reads the authenticated subject. A request with no caller key is refused
//! (`400`). [`Global`](crate::key::Global) puts every caller in one key
//! space: only safe when a single trusted caller talks to the API.
//!
//! The layer has no `namespace` setter: the record's name already hashes
//! the caller key, method and path, so two layers that share a store meet
//! only on the same route for the same caller, where one execution is what
//! is wanted; deployments that share one Redis but must not share keys set
//! `RedisStore::prefix`.
//!
//! The fingerprint hashes (SHA-256) method, path and query, the headers of
//! [`IdempotencyLayer::fingerprint_headers`] and the body, buffered up to
//! [`IdempotencyLayer::body_limit`] and handed on unchanged; with
//! [`FingerprintMode::CanonicalJson`], member order, whitespace and string
//! escapes of a JSON body do not count, numbers count by their exact text.
//!
//! # What is private, what is compared
//!
//! | | default | to change it |
//! |---|---|---|
//! | caller key | per caller: [`Caller`](crate::key::Caller) (`X-Api-Key`, else `Authorization`, else the client IP); the same key from two callers runs once for each, and neither ever gets the other's response; no caller key is `400` | [`IdempotencyLayer::per`]; `.per(`[`Global`](crate::key::Global)`)` shares one key space (a single trusted caller only) |
//! | stored caller key | none: the record's name is a SHA-256 of caller key, method, path and key | — |
//! | replayed headers | all but hop-by-hop ones and per-session ones: `Set-Cookie`, `Set-Cookie2`, `Authentication-Info` are never replayed (`WWW-Authenticate` is: it is the resource's, not a session's) | [`IdempotencyLayer::replay_session_headers`]; [`IdempotencyLayer::stored_headers`] keeps exactly a list (plus, for a gRPC response, `content-type`, `grpc-status`, `grpc-message` and `grpc-status-details-bin`) |
//! | replayed trailers | all of them, after the body | — |
//! | fingerprint | exact body bytes | [`FingerprintMode::CanonicalJson`]: member order, whitespace and escapes ignored; numbers by their text (`1` and `1.0` differ, so do integers past 2^53); a repeated member is `400`; a body that is not JSON or nests deeper than 128 counts by its bytes |
//!
//! # gRPC
//!
//! gRPC metadata are HTTP/2 headers, so a gRPC call carries its key as an
//! `idempotency-key` metadata entry and its caller key as another
//! (`x-api-key` for [`Caller`](crate::key::Caller) or
//! [`Header`](crate::key::Header)). The fingerprint covers the framed
//! message (flag, length, protobuf bytes): another message with the same key
//! is `KEY_REUSED`. A response is kept with the trailers its body ends with,
//! where a full response's `grpc-status` travels, and a replay sends them
//! again after the body; a trailers-only response (the status in its
//! headers, no body) replays as it was. A response whose body fails or is
//! cut off before its trailers is not kept (a retry gets `410`), since a
//! replay without them would be a call with no status.
//!
//! Every gRPC answer is an HTTP `200`, so whether it is stored follows its
//! `grpc-status` (in the headers of a trailers-only response, in the
//! trailers of a full one) read as the HTTP status `google.rpc.Code` pairs it
//! with: `UNAVAILABLE`, `INTERNAL`, `DEADLINE_EXCEEDED` (a `5xx`), `ABORTED`
//! (`409`), `RESOURCE_EXHAUSTED` (`429`) and `CANCELLED` (as a `408`) ask for
//! another try and release the key; `OK`, `NOT_FOUND`, `INVALID_ARGUMENT`,
//! `ALREADY_EXISTS` and the other final answers are stored.
//!
//! # Durability under Redis failover
//!
//! [`MemoryStore`] lives and dies with its process. `RedisStore` is as
//! durable as the Redis it writes to, and Redis replicates asynchronously:
//! a master acknowledges a write before any replica has it. If the master
//! fails and a replica that missed the write is promoted:
//!
//! - **a lost claim**: a duplicate that arrives at the new master finds no
//!   record and runs while the first run is still going: a second run;
//! - **a lost completion**: the record is in flight (until its lease
//!   expires) or absent: a retry runs again after the lease, where it should
//!   have been replayed: a second run;
//! - **the fencing counter can go back**: a claim on the new master can get
//!   a [`Fence`] number already handed out, so a downstream that fences on it
//!   cannot tell the two runs apart.
//!
//! Without `RedisStore::wait_for_replicas` (the default), this window is
//! the replication lag, usually under a millisecond, longer under load or a
//! partition. With it, each claim and each completion waits (`WAIT`) until
//! the given number of replicas acknowledge the write, and is refused with
//! [`StoreError::NotReplicated`] when they do not in time, so a write the
//! layer relies on is on more than one node. It narrows the window without
//! closing it: `WAIT` is not consensus. A write that times out is still on
//! the master and may or may not survive; a failover may promote a replica
//! that did not acknowledge; a restart without persistence loses
//! everything. Exactly-once across any failure needs a store with consensus
//! (or a handler whose own transaction records the key).
//!
//! # What is stored, what is released
//!
//! `2xx` and `4xx` except `408`, `409` and `429` are stored for
//! [`IdempotencyLayer::ttl`] (default 24 h) and replayed
//! ([`IdempotencyLayer::store_when`] changes it). A `5xx`, an inner error (a
//! timeout, an open circuit) or a panic releases the key so the client can
//! retry; a panic is caught and answered `500`. A response larger than
//! [`IdempotencyLayer::response_body_limit`] (default 1 MiB) is passed through
//! and recorded as completed-but-not-retained: a retry gets `410`, never a
//! second execution.
//!
//! Once the handler has answered, its key is never released for a second
//! run: the completion is written on a task of its own (bounded by the
//! store's timeout), so a client that hangs up cannot cut it short, and a
//! response body that fails, or whose reading is cut off by a hang-up, is
//! recorded as not retained (a retry gets `410`).
//!
//! # When the client hangs up
//!
//! A request future dropped (client gone, outer timeout) at any point never
//! leaves its key blocked for long: before the claim is answered, the claim
//! is released by its token; after the handler answered, the completion is
//! written. While the handler runs, [`OnCancel`] decides:
//!
//! | [`OnCancel`] | the run | a retry | runs at most once? |
//! |---|---|---|---|
//! | [`Detach`](OnCancel::Detach) (default) | goes on, on a task of its own, and stores its response | `409` until the run finishes, then the replay (at most about a second after it, when the retry honours `Retry-After`) | yes |
//! | [`Hold`](OnCancel::Hold) | is dropped; the key stays claimed until its lease runs out | `409` for up to one lease, then runs | no: a half-done run's side effects may be repeated |
//! | [`Release`](OnCancel::Release) | is dropped; the key is freed at once | runs at once | no: only for handlers whose work is safe to repeat or transactional |
//!
//! [`Detach`](OnCancel::Detach) needs a Tokio runtime and `Send + 'static`
//! inner futures, and a hung handler keeps running (bound it with a timeout
//! inside this layer; [`IdempotencyLayer::request_timeout`] stops renewing
//! its lease past that timeout).
//!
//! Two cases are not hang-ups and are not covered by "runs at most once":
//!
//! - **A timeout inside this layer** that cuts a handler short answers with
//!   an error, and an error releases the key like any other (so a client
//!   can retry a failure): a handler cut off after its side effects may run
//!   again. Keep such handlers transactional, or give them their own
//!   deadline well inside the timeout.
//! - **A runtime that shuts down** drops detached runs and pending
//!   completions with it: their keys stay claimed until their lease runs
//!   out (10 s by default), then a retry runs. Let in-flight requests finish
//!   before the runtime is dropped (a graceful shutdown that waits a lease).
//!
//! # Limits
//!
//! Every duration is clamped: [`IdempotencyLayer::ttl`] to 1 ms ..
//! [`MAX_TTL`], [`IdempotencyLayer::lease`] to [`MIN_LEASE`] ..
//! [`MAX_LEASE`], [`IdempotencyLayer::wait_for_in_flight`] to [`MAX_WAIT`],
//! [`IdempotencyLayer::in_flight_retry_after`] to [`MAX_RETRY_AFTER`], and
//! `RedisStore::timeout` to 1 ms .. [`MAX_STORE_TIMEOUT`]; the stores clamp
//! what they are given directly too, and the Redis scripts check their
//! numbers before they write. [`IdempotencyLayer::new`]'s [`MemoryStore`]
//! holds at most [`DEFAULT_MAX_KEYS`] records and [`DEFAULT_MAX_BYTES`]
//! of responses; when full, new keys get `503` and no live record is
//! evicted.
//!
//! # Layer order
//!
//! `ProblemLayer` → authentication → validation → **idempotency** → timeout →
//! circuit breaker → handler. Validation goes before idempotency, so a
//! request it rejects stores nothing and a corrected retry with the same key
//! runs. The lease may be shorter than the request timeout inside (the
//! heartbeat renews it); tell the layer that timeout with
//! [`IdempotencyLayer::request_timeout`] so renewal stops past it.
//!
//! # Body types
//!
//! The request body is buffered (up to the limit) and handed on as the same
//! type, rebuilt with [`FromBytes`](crate::problem::FromBytes): axum's `Body`,
//! `Full<Bytes>` and tonic's `Body` work as they are; a bare hyper server maps
//! `Incoming` to one of them first. The response body becomes
//! [`ResponseBody`], which streams the inner body untouched when it is not
//! captured.
//!
//! # Client side
//!
//! [`IdempotencyKeyLayer`] attaches an `Idempotency-Key` to outgoing requests
//! (generated, or the one a handler derived from its own request with
//! [`IdempotencyKey::derive`]); put it above a
//! [`RetryLayer`](crate::retry::RetryLayer) (feature `retry`), which sends a
//! `POST` or `PATCH` again only when it carries a key.
//!
//! # Metrics and tracing
//!
//! Events carry the fields of [`crate::observability`]: `layer =
//! "idempotency"`, the layer's [`name`](IdempotencyLayer::name), the key as a
//! [`redact_key`](crate::observability::redact_key) digest of the
//! `Idempotency-Key` (never the key itself, nor the caller key), `outcome`,
//! and `latency_us` of the store operation behind the event when `DEBUG` is
//! enabled. A claim and a stored response are logged at `TRACE`; replays,
//! conflicts, mismatches, refusals and released keys at `DEBUG`; store
//! failures, failed renewals and lost leases at `WARN`. With the feature `metrics`, every
//! request the layer applies to is counted once in
//! `palisade_idempotency_requests_total{name, outcome}`:
//!
//! | outcome | the request |
//! |---|---|
//! | `executed` | ran, and its response is stored for replay |
//! | `replayed` | got the stored response |
//! | `conflict` | found its key in flight (`409`) |
//! | `mismatch` | reused a key with another request (`422`) |
//! | `invalid_key` | had no key where one is required, or an invalid one (`400`) |
//! | `missing_caller_key` | had no caller key to keep its key per (`400`) |
//! | `body_rejected` | had a body over the limit (`413`), an unreadable one (`400`) or, in [`FingerprintMode::CanonicalJson`], a JSON body with a repeated member (`400`) |
//! | `gone` | retried a request that ran but whose response was not kept (`410`) |
//! | `not_stored` | ran, or was dropped while running, and its response is not kept: a status not stored, an error, a panic, a response too large or whose body failed or was cut off, a lost lease, a store failure on completion |
//! | `failed_open` | met a store failure and ran without idempotency |
//! | `failed_closed` | met a store failure and was refused (`503`) |
//!
//! Requests the layer does not apply to (other methods; no key when
//! [optional](IdempotencyLayer::optional)) are not counted.

mod body;
mod client;
mod config;
mod detach;
pub mod error;
mod fingerprint;
mod guard;
mod headers;
mod heartbeat;
mod key;
mod layer;
mod observe;
mod record;
mod service;
mod store;

pub use self::body::ResponseBody;
pub use self::client::{IdempotencyKeyLayer, IdempotencyKeyService};
pub use self::config::{
    DEFAULT_BODY_LIMIT, DEFAULT_RESPONSE_BODY_LIMIT, MAX_RETRY_AFTER, MAX_WAIT, OnCancel,
    default_store_when,
};
pub use self::error::{Error, StoreError};
pub use self::fingerprint::{DuplicateMember, Fingerprint, FingerprintMode};
pub use self::key::{
    Fence, IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED, IdempotencyKey, InvalidKey, MAX_KEY_LEN,
};
pub use self::layer::IdempotencyLayer;
pub use self::record::{
    Claim, Completion, Lease, MAX_LEASE, MAX_TTL, MIN_LEASE, Record, StoredResponse,
};
pub use self::service::Idempotency;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::store::RedisStore;
pub use self::store::{DEFAULT_MAX_BYTES, DEFAULT_MAX_KEYS, MAX_STORE_TIMEOUT, MemoryStore, Store};
pub use crate::store::OnStoreError;
