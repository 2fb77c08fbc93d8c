use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use futures::future::{BoxFuture, Fuse, FusedFuture};
use http::{HeaderValue, Method, Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use sha2::{Digest, Sha256};
use tower_service::Service;
use tracing::{Instrument, warn};

use super::body::ResponseBody;
use super::config::{Config, OnCancel};
use super::error::{Error, StoreError};
use super::fingerprint::Fingerprint;
use super::headers::kept_headers;
use super::key::{Fence, IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED, IdempotencyKey, hex};
use super::observe::{Observer, Outcome};
use super::record::{Claim, Completion, Lease, Record, StoredResponse, random_u64};
use super::store::Store;
use crate::BoxError;
use crate::key::{CallerKey, KeyExtractor};
use crate::observability::redact_key;
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
        let Some(caller) = self.per.extract(&req) else {
            observer.refused(&key, Outcome::MissingCallerKey, "no caller key");
            return Box::pin(async { Err(Error::MissingCallerKey) });
        };
        let store = self.store.clone();
        let config = self.config.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let bytes = match Limited::new(body, config.body_limit).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(e) if e.is::<LengthLimitError>() => {
                    let outcome = Outcome::BodyRejected;
                    config
                        .observer
                        .refused(&key, outcome, "request body too large");
                    return Err(Error::BodyTooLarge {
                        limit: config.body_limit,
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
                on_cancel: config.on_cancel,
                stage: Stage::Idle,
            };
            let claimed = claim(&mut guard, &config, &fingerprint).await;
            let mut req = Request::from_parts(parts, ReqB::from(bytes));
            // The handler reads what the layer parsed instead of parsing it again.
            req.extensions_mut().insert(key);
            req.extensions_mut().insert(CallerKey::new(caller));
            let lease = match claimed {
                Claimed::Lease(lease) => lease,
                Claimed::Done(result) => return result,
                Claimed::FailOpen => {
                    // The failed claim may have landed: the guard releases it.
                    drop(guard);
                    return passthrough(inner, req).await;
                }
            };
            req.extensions_mut().insert(Fence(lease.fence));
            guard.stage = Stage::Running(lease);
            if config.on_cancel == OnCancel::Detach {
                // In the request's span, so the handler's events keep it
                // wherever it ends.
                let run = execute(inner, req, guard, lease, config, true);
                DetachOnDrop::new(run.in_current_span()).await
            } else {
                execute(inner, req, guard, lease, config, false).await
            }
        })
    }
}

/// Runs `future` in place and, if it is dropped before it finished (the
/// client hung up), moves it to a task of its own to finish there: what
/// [`OnCancel::Detach`] promises, at the price of one allocation instead of
/// a task per request.
struct DetachOnDrop<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    future: Option<Pin<Box<F>>>,
}

impl<F> DetachOnDrop<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn new(future: F) -> Self {
        Self {
            future: Some(Box::pin(future)),
        }
    }
}

impl<F> Future for DetachOnDrop<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let future = self
            .future
            .as_mut()
            .expect("future polled after completion");
        let output = std::task::ready!(future.as_mut().poll(cx));
        self.future = None;
        Poll::Ready(output)
    }
}

impl<F> Drop for DetachOnDrop<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn drop(&mut self) {
        // Not while unwinding: a future that panicked must not be polled
        // again. Outside a runtime the run is dropped, and its guard holds
        // the key until the lease runs out.
        if let Some(future) = self.future.take()
            && !std::thread::panicking()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            drop(runtime.spawn(future));
        }
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

fn replay<B>(stored: StoredResponse) -> Response<ResponseBody<B>> {
    let mut response = Response::new(ResponseBody::full(stored.body));
    *response.status_mut() = stored.status;
    *response.headers_mut() = stored.headers;
    response
        .headers_mut()
        .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    response
}

/// The name of a record: a hash of caller key, method, path and key, so
/// caller keys never reach the store and names have a fixed length.
fn storage_key(caller: &str, method: &Method, path: &str, key: &IdempotencyKey) -> String {
    let mut h = Sha256::new();
    for part in [caller, method.as_str(), path, key.as_str()] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex(&h.finalize())
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
        if !(config.store_status)(response.status()) {
            let response = response.map(ResponseBody::passthrough);
            return Produced::Release(Ok(response), "status not stored");
        }
        // The handler answered: from here on its key is completed, never
        // released, even if this future is dropped.
        guard.stage = Stage::Answered(lease);
        let (parts, body) = response.into_parts();
        let mut body = Box::pin(body);
        let mut frames = VecDeque::new();
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
        let stored = StoredResponse {
            status: parts.status,
            headers: kept_headers(
                &parts.headers,
                config.stored_headers.as_deref(),
                config.replay_session_headers,
            ),
            body: concat(&frames, size),
        };
        let response = Response::from_parts(parts, ResponseBody::buffered(frames));
        Produced::Complete(Ok(response), Completion::Retained(stored))
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

/// Runs `future` on a task of its own unless it finishes on its first
/// poll, and waits for it: dropping the wait does not stop it.
async fn run_to_end(future: impl Future<Output = ()> + Send + 'static) {
    let mut future = Box::pin(future);
    if (&mut future).now_or_never().is_some() {
        return;
    }
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => drop(handle.spawn(future.in_current_span()).await),
        Err(_) => future.await,
    }
}

/// Renews a claim's lease while its request runs, every third of the
/// lease, in the request's own task (no task per request).
struct Heartbeat<St> {
    store: St,
    observer: Arc<Observer>,
    idempotency_key: IdempotencyKey,
    key: String,
    token: u64,
    fence: u64,
    lease: Duration,
    /// No renewal after this ([`IdempotencyLayer::request_timeout`]).
    ///
    /// [`IdempotencyLayer::request_timeout`]: super::IdempotencyLayer::request_timeout
    until: Option<tokio::time::Instant>,
}

impl<St: Store> Heartbeat<St> {
    /// Drives `work` to its end, renewing the lease alongside; a renewal in
    /// flight when `work` ends is dropped (the completion follows anyway).
    async fn run<F: Future>(&self, work: F) -> F::Output {
        let (observer, fence) = (&self.observer, self.fence);
        let period = (self.lease / 3).max(Duration::from_millis(1));
        let mut work = pin!(work);
        let mut tick = pin!(tokio::time::sleep(period));
        let mut renewal = pin!(Fuse::terminated());
        let mut lost = false;
        std::future::poll_fn(|cx| {
            if let Poll::Ready(output) = work.as_mut().poll(cx) {
                return Poll::Ready(output);
            }
            loop {
                if !renewal.is_terminated() {
                    let Poll::Ready(renewed) = renewal.as_mut().poll(cx) else {
                        break;
                    };
                    match renewed {
                        Ok(true) => {}
                        Ok(false) => {
                            // Fenced by the token: the completion that
                            // follows writes nothing either.
                            lost = true;
                            observer.renewal_lost(&self.idempotency_key, fence);
                        }
                        Err(e) => observer.renewal_failed(&self.idempotency_key, fence, &e),
                    }
                    let next = tokio::time::Instant::now() + period;
                    tick.as_mut().reset(next);
                }
                let stopped = self
                    .until
                    .is_some_and(|until| tokio::time::Instant::now() >= until);
                if lost || stopped || tick.as_mut().poll(cx).is_pending() {
                    break;
                }
                let renew = self.store.renew(&self.key, self.token, self.lease);
                renewal.set(renew.fuse());
            }
            Poll::Pending
        })
        .await
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

/// Where a request stands with its key, for what [`ClaimGuard`]'s drop does.
#[derive(Clone, Copy)]
enum Stage {
    /// No claim of ours is out: nothing to undo.
    Idle,
    /// A claim was sent and not answered: it may have landed.
    Claiming,
    /// The key is ours and the inner service runs: [`OnCancel`] applies.
    Running(Lease),
    /// The inner service answered and its response is being read: the key
    /// is completed, never released.
    Answered(Lease),
    /// Nothing is kept: the key is being released.
    Releasing(Lease),
    /// Completed or released: nothing left to do.
    Done,
}

/// Holds a claim, from before it is sent until it is completed or released;
/// if the request future is dropped first, finishes it as its [`Stage`]
/// says, on a task of its own. Each end of a claimed key counts the request
/// once (`executed` or `not_stored`).
struct ClaimGuard<St: Store> {
    store: St,
    observer: Arc<Observer>,
    /// The client's key, for the events (only its digest is logged).
    idempotency_key: IdempotencyKey,
    /// The storage key.
    key: String,
    /// Chosen before the claim is sent, so it can be released unanswered.
    token: u64,
    ttl: Duration,
    on_cancel: OnCancel,
    stage: Stage,
}

impl<St: Store> ClaimGuard<St> {
    async fn release(&mut self, why: &'static str) {
        let lease = match self.stage {
            Stage::Running(lease) | Stage::Answered(lease) | Stage::Releasing(lease) => Some(lease),
            _ => None,
        };
        let key = redact_key(self.idempotency_key.as_str());
        let start = self.observer.start();
        match self.store.release(&self.key, self.token).await {
            Ok(released) => {
                let fence = lease.map_or(0, |l| l.fence);
                self.observer.released(key, fence, released, why, start);
            }
            // Tried again on a task of its own, as a dropped request's
            // release is: a claim left behind answers `409` for a lease.
            Err(_) => run_to_end(self.release_later(lease, why)).await,
        }
        self.stage = Stage::Done;
    }

    /// The completion of the claim, as a future that owns what it needs;
    /// the guard is done with it.
    fn complete(
        &mut self,
        lease: Lease,
        completion: Completion,
    ) -> impl Future<Output = ()> + Send + 'static {
        self.stage = Stage::Done;
        let (store, observer) = (self.store.clone(), self.observer.clone());
        let (idempotency_key, key) = (self.idempotency_key.clone(), self.key.clone());
        let ttl = self.ttl;
        async move {
            let retained = matches!(completion, Completion::Retained(_));
            let fence = lease.fence;
            let start = observer.start();
            // A failed completion is tried again (it is safe to repeat: the
            // store answers `true` to a repeat of one that landed) while the
            // lease may still hold: given up, the claim would expire and a
            // retry run the handler a second time.
            let completed =
                finish_retried(|| store.complete(&key, lease, completion.clone(), ttl)).await;
            match completed {
                Ok(true) => observer.completed(&idempotency_key, fence, retained, start),
                Ok(false) => observer.lease_lost(&idempotency_key, fence, start),
                Err(e) => {
                    let key = redact_key(idempotency_key.as_str());
                    observer.finish_failed(key, fence, "complete", &e, start);
                }
            }
        }
    }

    /// Releases by token on a task of its own, retrying a failed release
    /// for up to a lease (a release is safe to repeat): a claim left behind
    /// would answer `409` until its lease ran out.
    fn release_later(&self, lease: Option<Lease>, why: &'static str) -> BoxFuture<'static, ()> {
        let (store, observer) = (self.store.clone(), self.observer.clone());
        let digest = redact_key(self.idempotency_key.as_str());
        let key = self.key.clone();
        let token = self.token;
        Box::pin(async move {
            let start = observer.start();
            let released = finish_retried(|| store.release(&key, token)).await;
            match (lease, released) {
                (Some(lease), Ok(released)) => {
                    observer.released(digest, lease.fence, released, why, start)
                }
                (Some(lease), Err(e)) => {
                    observer.finish_failed(digest, lease.fence, "release", &e, start)
                }
                // An unanswered claim: the request was not counted yet and
                // is not counted now; it ran nothing.
                (None, released) => observer.claim_undone(digest, released),
            }
        })
    }
}

/// Sends a completion or a release (both safe to repeat) until it is
/// answered, for up to [`FINISH_RETRIES_FOR`]. A completion written but not
/// replicated in time is not sent again: that would only block the
/// connection again.
async fn finish_retried<T, F, Fut>(mut step: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let give_up = tokio::time::Instant::now() + FINISH_RETRIES_FOR;
    loop {
        match step().await {
            Err(e @ StoreError::NotReplicated { .. }) => return Err(e),
            Err(_) if tokio::time::Instant::now() < give_up => {
                tokio::time::sleep(FINISH_RETRY).await;
            }
            done => return done,
        }
    }
}

/// Pause between attempts of a completion or a release that failed (both
/// are safe to repeat).
const FINISH_RETRY: Duration = Duration::from_millis(100);
/// How long they keep trying: a default lease, which a completion cannot
/// outlive anyway.
const FINISH_RETRIES_FOR: Duration = Duration::from_secs(10);

impl<St: Store> Drop for ClaimGuard<St> {
    fn drop(&mut self) {
        let finish: BoxFuture<'static, ()> = match self.stage {
            Stage::Idle | Stage::Done => return,
            Stage::Claiming => self.release_later(None, "claim unanswered"),
            Stage::Releasing(lease) => self.release_later(Some(lease), "request dropped"),
            Stage::Running(lease) => match self.on_cancel {
                OnCancel::Release => self.release_later(Some(lease), "request dropped"),
                // Detach lands here only when the runtime drops its task.
                _ => {
                    self.observer.held(&self.idempotency_key, lease.fence);
                    return;
                }
            },
            // The handler answered: its effects are done, so a retry must
            // not run it again. Its response was not read whole: a retry
            // gets 410.
            Stage::Answered(lease) => Box::pin(self.complete(lease, Completion::NotRetained)),
        };
        self.stage = Stage::Done;
        let mut finish = finish;
        // An in-memory step finishes on its first poll; a remote one
        // finishes on a task of its own.
        if (&mut finish).now_or_never().is_none() {
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => drop(handle.spawn(finish.in_current_span())),
                Err(_) => {
                    self.observer.count(Outcome::NotStored);
                    warn!(
                        layer = "idempotency",
                        name = self.observer.name(),
                        key = %redact_key(self.idempotency_key.as_str()),
                        outcome = Outcome::NotStored.as_str(),
                        "request dropped outside a runtime; the idempotency key frees itself when its lease expires"
                    );
                }
            }
        }
    }
}
