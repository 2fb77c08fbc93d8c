use std::collections::VecDeque;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use futures::future::BoxFuture;
use http::{HeaderValue, Method, Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use sha2::{Digest, Sha256};
use tower_service::Service;
use tracing::warn;

use super::body::ResponseBody;
use super::error::Error;
use super::fingerprint::Fingerprint;
use super::headers::kept_headers;
use super::key::{Fence, IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED, IdempotencyKey, hex};
use super::layer::{Config, OnCancel, OnStoreError};
use super::observe::{Observer, Outcome};
use super::record::{Claim, Completion, Lease, Record, StoredResponse};
use super::store::Store;
use crate::BoxError;
use crate::key::KeyExtractor;
use crate::observability::redact_key;

/// How often a duplicate that waits for an in-flight request asks the store.
const WAIT_POLL: Duration = Duration::from_millis(50);

/// One execution per `Idempotency-Key`: replays the stored response of a
/// completed key, refuses a duplicate in flight.
///
/// See the [module docs](super) for an example.
#[derive(Clone)]
pub struct Idempotency<S, St, K> {
    inner: S,
    config: Arc<Config>,
    store: St,
    scope: K,
}

impl<S: fmt::Debug, St: fmt::Debug, K: fmt::Debug> fmt::Debug for Idempotency<S, St, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Idempotency")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .field("store", &self.store)
            .field("scope", &self.scope)
            .finish()
    }
}

impl<S, St, K> Idempotency<S, St, K> {
    pub(crate) fn new(inner: S, config: Arc<Config>, store: St, scope: K) -> Self {
        Self {
            inner,
            config,
            store,
            scope,
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
    ReqB: Body + From<Bytes> + Send + 'static,
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
        let Some(scope) = self.scope.extract(&req) else {
            observer.refused(&key, Outcome::MissingScope, "no caller identity");
            return Box::pin(async { Err(Error::MissingScope) });
        };
        let store = self.store.clone();
        let config = self.config.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let bytes = match Limited::new(body, config.max_request_body).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(e) if e.is::<LengthLimitError>() => {
                    let outcome = Outcome::BodyRejected;
                    config
                        .observer
                        .refused(&key, outcome, "request body too large");
                    return Err(Error::BodyTooLarge {
                        limit: config.max_request_body,
                    });
                }
                Err(e) => {
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
            let storage_key = storage_key(&scope, &parts.method, parts.uri.path(), &key);
            let claimed = claim(&store, &config, &storage_key, &fingerprint, &key).await;
            let mut req = Request::from_parts(parts, ReqB::from(bytes));
            req.extensions_mut().insert(key.clone());
            let lease = match claimed {
                Claimed::Lease(lease) => lease,
                Claimed::Done(result) => return result,
                Claimed::FailOpen => {
                    return passthrough(inner, req).await;
                }
            };
            req.extensions_mut().insert(Fence(lease.fence));
            let guard = ClaimGuard {
                store,
                observer: config.observer.clone(),
                idempotency_key: key,
                key: storage_key,
                lease,
                on_cancel: config.on_cancel,
                armed: true,
            };
            if config.on_cancel == OnCancel::Detach {
                let task = tokio::spawn(execute(inner, req, guard, config));
                // A panic is caught inside the task; a join error means the
                // runtime is shutting down and dropped it.
                task.await.unwrap_or(Err(Error::Panicked))
            } else {
                execute(inner, req, guard, config).await
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
    store: &St,
    config: &Config,
    storage_key: &str,
    fingerprint: &Fingerprint,
    key: &IdempotencyKey,
) -> Claimed<Output<ResB, E>> {
    let observer = &config.observer;
    let deadline = config.wait.map(|wait| tokio::time::Instant::now() + wait);
    loop {
        let start = observer.start();
        let record = match store.claim(storage_key, fingerprint, config.lease).await {
            Ok(Claim::Claimed(lease)) => {
                observer.claimed(key, lease.fence, start);
                return Claimed::Lease(lease);
            }
            Ok(Claim::Existing(record)) => record,
            Err(e) => {
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

fn replay<B>(stored: StoredResponse) -> Response<ResponseBody<B>> {
    let mut response = Response::new(ResponseBody::full(stored.body));
    *response.status_mut() = stored.status;
    *response.headers_mut() = stored.headers;
    response
        .headers_mut()
        .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    response
}

/// The name of a record: a hash of scope, method, path and key, so caller
/// identities never reach the store and keys have a fixed length.
fn storage_key(scope: &str, method: &Method, path: &str, key: &IdempotencyKey) -> String {
    let mut h = Sha256::new();
    for part in [scope, method.as_str(), path, key.as_str()] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex(&h.finalize())
}

async fn execute<S, St, ReqB, ResB>(
    mut inner: S,
    req: Request<ReqB>,
    mut guard: ClaimGuard<St>,
    config: Arc<Config>,
) -> Output<ResB, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    St: Store,
    ResB: Body<Data = Bytes>,
    ResB::Error: Into<BoxError>,
{
    let result = match std::panic::catch_unwind(AssertUnwindSafe(|| inner.call(req))) {
        Ok(future) => AssertUnwindSafe(future).catch_unwind().await,
        Err(panic) => Err(panic),
    };
    let response = match result {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => {
            guard.release("inner service failed").await;
            return Err(Error::Inner(e));
        }
        Err(_panic) => {
            guard
                .observer
                .panicked(&guard.idempotency_key, guard.lease.fence);
            guard.release("handler panicked").await;
            return Err(Error::Panicked);
        }
    };
    if !(config.store_status)(response.status()) {
        guard.release("status not stored").await;
        return Ok(response.map(ResponseBody::passthrough));
    }
    let (parts, body) = response.into_parts();
    let mut body = Box::pin(body);
    let mut frames = VecDeque::new();
    let mut size = 0usize;
    let too_large = |size: usize| size > config.max_response_body;
    let mut over = usize::try_from(body.size_hint().lower()).map_or(true, too_large);
    while !over {
        let next: Option<Result<Frame<Bytes>, BoxError>> =
            body.frame().await.map(|r| r.map_err(Into::into));
        match next {
            None => break,
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    size += data.len();
                }
                frames.push_back(frame);
                over = too_large(size);
            }
            Some(Err(e)) => {
                guard.release("response body failed").await;
                return Ok(Response::from_parts(parts, ResponseBody::failed(frames, e)));
            }
        }
    }
    if over {
        guard.complete(Completion::NotRetained, config.ttl).await;
        return Ok(Response::from_parts(
            parts,
            ResponseBody::chain(frames, body),
        ));
    }
    let stored = StoredResponse {
        status: parts.status,
        headers: kept_headers(
            &parts.headers,
            config.stored_headers.as_deref(),
            config.replay_session_headers,
        ),
        body: concat(&frames, size),
    };
    guard
        .complete(Completion::Retained(stored), config.ttl)
        .await;
    Ok(Response::from_parts(parts, ResponseBody::buffered(frames)))
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

/// Holds a claim until it is completed or released; if the request future
/// is dropped first, applies [`OnCancel`]. Each of these ends counts the
/// request once (`executed` or `not_stored`).
struct ClaimGuard<St: Store> {
    store: St,
    observer: Arc<Observer>,
    /// The client's key, for the events (only its digest is logged).
    idempotency_key: IdempotencyKey,
    /// The storage key.
    key: String,
    lease: Lease,
    on_cancel: OnCancel,
    armed: bool,
}

impl<St: Store> ClaimGuard<St> {
    async fn release(&mut self, why: &'static str) {
        let (key, fence) = (redact_key(self.idempotency_key.as_str()), self.lease.fence);
        let start = self.observer.start();
        match self.store.release(&self.key, self.lease).await {
            Ok(released) => self.observer.released(key, fence, released, why, start),
            Err(e) => self
                .observer
                .finish_failed(key, fence, "release", &e, start),
        }
        self.armed = false;
    }

    async fn complete(&mut self, completion: Completion, ttl: Duration) {
        let retained = matches!(completion, Completion::Retained(_));
        let (key, fence) = (&self.idempotency_key, self.lease.fence);
        let start = self.observer.start();
        match self
            .store
            .complete(&self.key, self.lease, completion, ttl)
            .await
        {
            Ok(true) => self.observer.completed(key, fence, retained, start),
            Ok(false) => self.observer.lease_lost(key, fence, start),
            Err(e) => {
                let key = redact_key(key.as_str());
                self.observer
                    .finish_failed(key, fence, "complete", &e, start);
            }
        }
        self.armed = false;
    }
}

impl<St: Store> Drop for ClaimGuard<St> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let fence = self.lease.fence;
        if self.on_cancel != OnCancel::Release {
            self.observer.held(&self.idempotency_key, fence);
            return;
        }
        let store = self.store.clone();
        let observer = self.observer.clone();
        let digest = redact_key(self.idempotency_key.as_str());
        let key = std::mem::take(&mut self.key);
        let lease = self.lease;
        let mut release = Box::pin(async move {
            let start = observer.start();
            match store.release(&key, lease).await {
                Ok(released) => {
                    observer.released(digest, fence, released, "request dropped", start)
                }
                Err(e) => observer.finish_failed(digest, fence, "release", &e, start),
            }
        });
        // An in-memory release finishes on its first poll; a remote one
        // finishes on a task of its own.
        if (&mut release).now_or_never().is_none() {
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => drop(handle.spawn(release)),
                Err(_) => {
                    self.observer.count(Outcome::NotStored);
                    warn!(
                        layer = "idempotency",
                        name = self.observer.name(),
                        key = %digest,
                        outcome = Outcome::NotStored.as_str(),
                        fence,
                        "request dropped outside a runtime; the idempotency key frees itself when its lease expires"
                    );
                }
            }
        }
    }
}
