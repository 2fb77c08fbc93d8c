//! [`Idempotency`]: claims the key, replays or refuses a duplicate, runs
//! the request and stores its response.

use std::collections::VecDeque;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use futures::future::BoxFuture;
use http::{HeaderMap, HeaderValue, Method, Request, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use tower_service::Service;

use super::body::{ReadError, ResponseBody, read_body};
use super::config::{Config, OnCancel};
use super::detach::{DetachOnDrop, run_to_end};
use super::error::Error;
use super::fingerprint::Fingerprint;
use super::guard::{ClaimGuard, Stage};
use super::headers::{kept_headers, outcome_status};
use super::heartbeat::Heartbeat;
use super::key::{Fence, IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED, IdempotencyKey, hex_into};
use super::observe::Outcome;
use super::record::{Claim, Completion, Lease, Record, StoredResponse, random_u64};
use super::store::Store;
use crate::BoxError;
use crate::key::{CallerKey, KeyExtractor};
use crate::problem::FromBytes;
use crate::store::OnStoreError;

/// How often a duplicate that waits for an in-flight request asks the store.
const WAIT_POLL: Duration = Duration::from_millis(50);

/// One execution per `Idempotency-Key`: replays the stored response of a
/// completed key, refuses a duplicate in flight, renews the lease of the
/// request it runs.
///
/// See the [module docs](super) for an example.
#[derive(Clone)]
pub struct Idempotency<S, St, K> {
    inner: S,
    config: Arc<Config>,
    store: St,
    per: K,
}

impl<S: fmt::Debug, St: fmt::Debug, K: fmt::Debug> fmt::Debug for Idempotency<S, St, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Idempotency")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .field("store", &self.store)
            .field("per", &self.per)
            .finish()
    }
}

impl<S, St, K> Idempotency<S, St, K> {
    pub(crate) fn new(inner: S, config: Arc<Config>, store: St, per: K) -> Self {
        Self {
            inner,
            config,
            store,
            per,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

type Output<ResB, E> = Result<Response<ResponseBody<ResB>>, Error<E>>;

impl<S, St, K, ReqB, ResB> Service<Request<ReqB>> for Idempotency<S, St, K>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    St: Store,
    K: KeyExtractor<Request<ReqB>>,
    ReqB: Body + FromBytes + Send + 'static,
    ReqB::Data: Send,
    ReqB::Error: Into<BoxError>,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = Error<S::Error>;
    type Future = BoxFuture<'static, Output<ResB, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Error::Inner)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        if !self.config.methods.contains(req.method()) {
            return Box::pin(passthrough(inner, req));
        }
        let observer = &self.config.observer;
        let mut values = req.headers().get_all(IDEMPOTENCY_KEY).iter();
        let key = match (values.next(), values.next()) {
            (None, _) if self.config.required => {
                observer.invalid_key(None);
                return Box::pin(async { Err(Error::MissingKey) });
            }
            (None, _) => return Box::pin(passthrough(inner, req)),
            (Some(_), Some(_)) => {
                let invalid = super::key::InvalidKey::Repeated;
                observer.invalid_key(Some(&invalid));
                return Box::pin(async move { Err(Error::InvalidKey(invalid)) });
            }
            (Some(value), None) => match IdempotencyKey::from_header(value) {
                Ok(key) => key,
                Err(invalid) => {
                    observer.invalid_key(Some(&invalid));
                    return Box::pin(async move { Err(Error::InvalidKey(invalid)) });
                }
            },
        };
        let Some(caller) = self.per.extract(&req) else {
            observer.refused(&key, Outcome::MissingCallerKey, "no caller key");
            return Box::pin(async { Err(Error::MissingCallerKey) });
        };
        let store = self.store.clone();
        let config = self.config.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let bytes = match read_body(body, config.body_limit).await {
                Ok(bytes) => bytes,
                Err(ReadError::TooLarge) => {
                    let outcome = Outcome::BodyRejected;
                    config
                        .observer
                        .refused(&key, outcome, "request body too large");
                    return Err(Error::BodyTooLarge {
                        limit: config.body_limit,
                    });
                }
                Err(ReadError::Failed(e)) => {
                    let outcome = Outcome::BodyRejected;
                    config
                        .observer
                        .refused(&key, outcome, "request body unreadable");
                    return Err(Error::Body(e));
                }
            };
            let fingerprint = match Fingerprint::compute(
                &parts,
                &config.fingerprint_headers,
                &bytes,
                config.fingerprint_mode,
            ) {
                Ok(fingerprint) => fingerprint,
                Err(duplicate) => {
                    let outcome = Outcome::BodyRejected;
                    config
                        .observer
                        .refused(&key, outcome, "duplicate json member");
                    return Err(Error::DuplicateMember(duplicate));
                }
            };
            let storage_key = storage_key(&caller, &parts.method, parts.uri.path(), &key);
            // The guard exists before the claim is sent: a claim whose reply
            // never comes (a timeout, a dropped future) is released by its
            // token, whether or not it landed.
            let mut guard = ClaimGuard {
                store,
                observer: config.observer.clone(),
                idempotency_key: key.clone(),
                key: storage_key,
                token: random_u64(),
                ttl: config.ttl,
                lease: config.lease,
                on_cancel: config.on_cancel,
                stage: Stage::Idle,
            };
            let claimed = claim(&mut guard, &config, &fingerprint).await;
            // A replay or a refusal returns before the request is rebuilt.
            let run = |parts, bytes| {
                let mut req = Request::from_parts(parts, ReqB::from_bytes(bytes));
                // The handler reads what the layer parsed instead of parsing
                // it again.
                req.extensions_mut().insert(key);
                req.extensions_mut().insert(CallerKey::new(caller));
                req
            };
            let lease = match claimed {
                Claimed::Lease(lease) => lease,
                Claimed::Done(result) => return result,
                Claimed::FailOpen => {
                    // The failed claim may have landed: the guard releases it.
                    drop(guard);
                    return passthrough(inner, run(parts, bytes)).await;
                }
            };
            let mut req = run(parts, bytes);
            req.extensions_mut().insert(Fence(lease.fence));
            guard.stage = Stage::Running(lease);
            if config.on_cancel == OnCancel::Detach {
                // In the request's span (see `DetachOnDrop`), so the
                // handler's events keep it wherever it ends.
                DetachOnDrop::new(execute(inner, req, guard, lease, config, true)).await
            } else {
                // Boxed as the detached run is, so that the future of every
                // request (a replay too) does not carry a run's state inline.
                Box::pin(execute(inner, req, guard, lease, config, false)).await
            }
        })
    }
}

async fn passthrough<S, ReqB, ResB>(mut inner: S, req: Request<ReqB>) -> Output<ResB, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
{
    match inner.call(req).await {
        Ok(response) => Ok(response.map(ResponseBody::passthrough)),
        Err(e) => Err(Error::Inner(e)),
    }
}

enum Claimed<T> {
    Lease(Lease),
    Done(T),
    FailOpen,
}

async fn claim<St: Store, ResB, E>(
    guard: &mut ClaimGuard<St>,
    config: &Config,
    fingerprint: &Fingerprint,
) -> Claimed<Output<ResB, E>> {
    let observer = &config.observer;
    let key = &guard.idempotency_key;
    let deadline = config.wait.map(|wait| tokio::time::Instant::now() + wait);
    loop {
        let start = observer.start();
        guard.stage = Stage::Claiming;
        let claimed = guard
            .store
            .claim(&guard.key, fingerprint, guard.token, config.lease)
            .await;
        let record = match claimed {
            Ok(Claim::Claimed(lease)) => {
                observer.claimed(key, lease.fence, start);
                return Claimed::Lease(lease);
            }
            Ok(Claim::Existing(record)) => {
                // The claim did not land: nothing to release.
                guard.stage = Stage::Idle;
                record
            }
            Err(e) => {
                // It may have landed: the guard, still claiming, releases
                // it by its token when it is dropped.
                let open = config.on_store_error == OnStoreError::FailOpen;
                observer.claim_failed(key, &e, open, start);
                return if open {
                    Claimed::FailOpen
                } else {
                    Claimed::Done(Err(Error::Store(e)))
                };
            }
        };
        if record.fingerprint() != fingerprint {
            observer.answered(key, Outcome::Mismatch, 422, start);
            return Claimed::Done(Err(Error::Mismatch));
        }
        match record {
            Record::Completed {
                response: Some(stored),
                ..
            } => {
                observer.answered(key, Outcome::Replayed, stored.status.as_u16(), start);
                return Claimed::Done(Ok(replay(stored)));
            }
            Record::Completed { response: None, .. } => {
                observer.answered(key, Outcome::Gone, 410, start);
                return Claimed::Done(Err(Error::NotRetained));
            }
            Record::InFlight {
                lease_remaining, ..
            } => {
                let now = tokio::time::Instant::now();
                if let Some(deadline) = deadline.filter(|d| *d > now) {
                    tokio::time::sleep(WAIT_POLL.min(deadline - now)).await;
                    continue;
                }
                observer.answered(key, Outcome::Conflict, 409, start);
                return Claimed::Done(Err(Error::InFlight {
                    retry_after: config.retry_after.min(lease_remaining),
                }));
            }
        }
    }
}

fn replay<B>(stored: Arc<StoredResponse>) -> Response<ResponseBody<B>> {
    // The store usually keeps its own reference: the headers are copied
    // here, outside its lock, not while it holds it.
    let StoredResponse {
        status,
        headers,
        body,
        trailers,
    } = Arc::unwrap_or_clone(stored);
    let mut response = Response::new(ResponseBody::replayed(body, trailers));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
        .headers_mut()
        .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    response
}

/// The name of a record: a hash of caller key, method, path and key, so
/// caller keys never reach the store and names have a fixed length.
fn storage_key(caller: &str, method: &Method, path: &str, key: &IdempotencyKey) -> Arc<str> {
    let mut h = Sha256::new();
    for part in [caller, method.as_str(), path, key.as_str()] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    let mut name = [0u8; 64];
    hex_into(&h.finalize(), &mut name);
    Arc::from(std::str::from_utf8(&name).expect("hex digits are ASCII"))
}

/// What the run produced, and what becomes of its key.
enum Produced<T> {
    /// Nothing to keep (an error, a panic, a status not stored): the key is
    /// released so the client may retry.
    Release(T, &'static str),
    /// The handler answered: the key is completed, never released.
    Complete(T, Completion),
}

async fn execute<S, St, ReqB, ResB>(
    mut inner: S,
    req: Request<ReqB>,
    mut guard: ClaimGuard<St>,
    lease: Lease,
    config: Arc<Config>,
    detached: bool,
) -> Output<ResB, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    St: Store,
    ResB: Body<Data = Bytes>,
    ResB::Error: Into<BoxError>,
{
    let heartbeat = Heartbeat {
        store: guard.store.clone(),
        observer: guard.observer.clone(),
        idempotency_key: guard.idempotency_key.clone(),
        key: guard.key.clone(),
        token: guard.token,
        fence: lease.fence,
        lease: config.lease,
        until: config
            .request_timeout
            .and_then(|t| tokio::time::Instant::now().checked_add(t)),
    };
    let run = async {
        let result = match std::panic::catch_unwind(AssertUnwindSafe(|| inner.call(req))) {
            Ok(future) => AssertUnwindSafe(future).catch_unwind().await,
            Err(panic) => Err(panic),
        };
        let response = match result {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => return Produced::Release(Err(Error::Inner(e)), "inner service failed"),
            Err(_panic) => {
                guard.observer.panicked(&guard.idempotency_key, lease.fence);
                return Produced::Release(Err(Error::Panicked), "handler panicked");
            }
        };
        let status = outcome_status(
            response.status(),
            response.headers(),
            Some(response.headers()),
        );
        if !(config.store_status)(status) {
            let response = response.map(ResponseBody::passthrough);
            return Produced::Release(Ok(response), "status not stored");
        }
        // The handler answered: from here on its key is completed, never
        // released, even if this future is dropped.
        guard.stage = Stage::Answered(lease);
        let (parts, body) = response.into_parts();
        let mut body = Box::pin(body);
        let mut frames = VecDeque::new();
        // Kept apart from the data too: a gRPC response's status ends its
        // body as trailers, and a replay without it is no answer.
        let mut trailers: Option<HeaderMap> = None;
        let mut size = 0usize;
        let too_large = |size: usize| size > config.response_body_limit;
        let mut over = usize::try_from(body.size_hint().lower()).map_or(true, too_large);
        while !over {
            let next: Option<Result<Frame<Bytes>, BoxError>> =
                body.frame().await.map(|r| r.map_err(Into::into));
            match next {
                None => break,
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        size += data.len();
                    } else if let Some(more) = frame.trailers_ref() {
                        // One trailers frame ends a body; should a body send
                        // several, a replay sends them as one.
                        match &mut trailers {
                            None => trailers = Some(more.clone()),
                            Some(all) => {
                                for (name, value) in more {
                                    all.append(name, value.clone());
                                }
                            }
                        }
                    }
                    frames.push_back(frame);
                    over = too_large(size);
                }
                Some(Err(e)) => {
                    let response = Response::from_parts(parts, ResponseBody::failed(frames, e));
                    return Produced::Complete(Ok(response), Completion::NotRetained);
                }
            }
        }
        if over {
            let response = Response::from_parts(parts, ResponseBody::chain(frames, body));
            return Produced::Complete(Ok(response), Completion::NotRetained);
        }
        // A full gRPC response's status comes last, in its trailers: one
        // that asks for another try (UNAVAILABLE, ABORTED) releases the key,
        // as a 5xx does.
        if trailers.is_some()
            && !(config.store_status)(outcome_status(
                parts.status,
                &parts.headers,
                trailers.as_ref(),
            ))
        {
            let response = Response::from_parts(parts, ResponseBody::buffered(frames));
            return Produced::Release(Ok(response), "status not stored");
        }
        let stored = StoredResponse {
            status: parts.status,
            headers: kept_headers(
                &parts.headers,
                config.stored_headers.as_deref(),
                config.replay_session_headers,
            ),
            body: concat(&frames, size),
            trailers,
        };
        let response = Response::from_parts(parts, ResponseBody::buffered(frames));
        Produced::Complete(Ok(response), Completion::Retained(Arc::new(stored)))
    };
    match heartbeat.run(run).await {
        Produced::Release(output, why) => {
            guard.stage = Stage::Releasing(lease);
            guard.release(why).await;
            output
        }
        Produced::Complete(output, completion) => {
            let completing = guard.complete(lease, completion);
            if detached {
                completing.await;
            } else {
                // On a task of its own, so a client that hangs up now cannot
                // cut it short; a memory store finishes on the first poll.
                run_to_end(completing).await;
            }
            output
        }
    }
}

fn concat(frames: &VecDeque<Frame<Bytes>>, size: usize) -> Bytes {
    let mut data = frames.iter().filter_map(Frame::data_ref);
    match (data.next(), data.next()) {
        (None, _) => Bytes::new(),
        (Some(only), None) => only.clone(),
        _ => {
            let mut buf = BytesMut::with_capacity(size);
            for chunk in frames.iter().filter_map(Frame::data_ref) {
                buf.extend_from_slice(chunk);
            }
            buf.freeze()
        }
    }
}
