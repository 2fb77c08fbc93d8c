//! Exactly once under hang-ups and lost replies, on the memory store with
//! paused time: the request future dropped at each await point of the layer
//! (claim sent and not answered, handler running, body being read,
//! completion sent), a body that fails, a handler that outlives its lease.
//! Each asserts how often the handler ran and what a retry gets.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use http::{Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Full};
use palisade::BoxError;
use palisade::idempotency::{
    Claim, Completion, Error, Fingerprint, IdempotencyLayer, Lease, MemoryStore, OnCancel, Store,
    StoreError,
};
use palisade::key::Global;
use tokio::sync::{Notify, mpsc};
use tower::{Layer, Service, ServiceExt};

use crate::common::{App, Handler, Req, harness, post, send};

const KEY: &str = "0b3c2f53-8a0e-4d44-9d1e-6f2a3c1d9e77";

/// A store that can lose the reply of its next claim (the claim lands, the
/// answer never comes), fail it after it landed, or be slow to complete.
#[derive(Clone, Default)]
struct Flaky {
    inner: MemoryStore,
    lose_claim_reply: Arc<AtomicBool>,
    fail_claim_after_landing: Arc<AtomicBool>,
    slow_complete: Arc<AtomicBool>,
}

impl Store for Flaky {
    async fn claim(
        &self,
        key: &str,
        fingerprint: &Fingerprint,
        token: u64,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        let claim = self.inner.claim(key, fingerprint, token, lease).await;
        if self.lose_claim_reply.swap(false, Ordering::SeqCst) {
            futures::future::pending::<()>().await;
        }
        if self.fail_claim_after_landing.swap(false, Ordering::SeqCst) {
            return Err(StoreError::Timeout(Duration::from_secs(1)));
        }
        claim
    }

    async fn renew(&self, key: &str, token: u64, lease: Duration) -> Result<bool, StoreError> {
        self.inner.renew(key, token, lease).await
    }

    async fn complete(
        &self,
        key: &str,
        lease: Lease,
        completion: Completion,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        if self.slow_complete.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        self.inner.complete(key, lease, completion, ttl).await
    }

    async fn release(&self, key: &str, token: u64) -> Result<bool, StoreError> {
        self.inner.release(key, token).await
    }
}

/// Every layer here is explicitly unscoped: these tests are about one key.
fn layer<St: Store>(store: St) -> IdempotencyLayer<St, Global> {
    IdempotencyLayer::with_store(store).per(Global)
}

/// A handler whose first call waits until `gate` is notified.
fn gated(gate: Arc<Notify>) -> Handler {
    Arc::new(move |_req, n| {
        let gate = gate.clone();
        Box::pin(async move {
            if n == 0 {
                gate.notified().await;
            }
            Response::new(Full::new(Bytes::from(format!("call {n}"))))
        })
    })
}

fn ok() -> Handler {
    Arc::new(|_req, n| {
        Box::pin(async move { Response::new(Full::new(Bytes::from(format!("call {n}")))) })
    })
}

/// Sends `req`, dropping it unanswered after `after` (the client hung up).
async fn hang_up(app: &App, req: Req, after: Duration) {
    let call = crate::common::call(app, req);
    assert!(
        tokio::time::timeout(after, call).await.is_err(),
        "the request was still running when the client hung up"
    );
}

#[tokio::test(start_paused = true)]
async fn a_claim_whose_reply_is_lost_is_released_by_its_token() {
    let store = Flaky::default();
    let layer = layer(store.clone()).lease(Duration::from_secs(60));
    let (app, count) = harness(layer, ok());
    store.lose_claim_reply.store(true, Ordering::SeqCst);
    hang_up(&app, post(Some(KEY), "{}"), Duration::from_millis(10)).await;
    assert_eq!(count.get(), 0);
    let retry = send(&app, post(Some(KEY), "{}")).await;
    assert_eq!(
        retry.status,
        StatusCode::OK,
        "the landed claim was released, not left to block the key for its lease"
    );
    assert_eq!(count.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_claim_that_failed_after_landing_is_released_and_the_retry_runs() {
    let store = Flaky::default();
    let layer = layer(store.clone()).lease(Duration::from_secs(60));
    let (app, count) = harness(layer, ok());
    store.fail_claim_after_landing.store(true, Ordering::SeqCst);
    let failed = send(&app, post(Some(KEY), "{}")).await;
    assert_eq!(failed.status, StatusCode::SERVICE_UNAVAILABLE);
    let retry = send(&app, post(Some(KEY), "{}")).await;
    assert_eq!(retry.status, StatusCode::OK, "no 409 for the lease");
    assert_eq!(count.get(), 1);
}

/// Default policy: the run goes on without the client; a retry that
/// follows `Retry-After` gets the replay within a second of the run's end.
#[tokio::test(start_paused = true)]
async fn a_hang_up_mid_handler_runs_it_once_by_default() {
    let gate = Arc::new(Notify::new());
    let (app, count) = harness(layer(MemoryStore::new()), gated(gate.clone()));
    hang_up(&app, post(Some(KEY), "{}"), Duration::from_millis(10)).await;
    assert_eq!(count.get(), 1);
    let busy = send(&app, post(Some(KEY), "{}")).await;
    assert_eq!(busy.status, StatusCode::CONFLICT, "still running");
    assert_eq!(busy.headers["retry-after"], "1");
    tokio::time::advance(Duration::from_secs(5)).await;
    gate.notify_one();
    let finished = tokio::time::Instant::now();
    let retry = loop {
        let retry = send(&app, post(Some(KEY), "{}")).await;
        if retry.status != StatusCode::CONFLICT {
            break retry;
        }
        tokio::time::advance(Duration::from_secs(1)).await;
    };
    assert!(finished.elapsed() <= Duration::from_secs(1));
    assert!(retry.replayed());
    assert_eq!(retry.body, "call 0");
    assert_eq!(count.get(), 1, "never a second run");
}

/// A response body fed by the test: frames (or an error) as it sends them.
pub(crate) struct Fed(mpsc::UnboundedReceiver<Result<Bytes, BoxError>>);

impl http_body::Body for Fed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0
            .poll_recv(cx)
            .map(|next| next.map(|r| r.map(Frame::data)))
    }
}

pub(crate) type Feeds = Arc<Mutex<Vec<mpsc::UnboundedSender<Result<Bytes, BoxError>>>>>;

/// The layer around a handler that answers `200` with a body the test feeds
/// (call `n` is fed through `feeds[n]`).
pub(crate) fn fed_service<St: Store>(
    layer: IdempotencyLayer<St, Global>,
) -> (
    impl Service<
        Req,
        Response = Response<palisade::idempotency::ResponseBody<Fed>>,
        Error = Error<Infallible>,
        Future = impl Send,
    > + Clone,
    Arc<AtomicUsize>,
    Feeds,
) {
    let count = Arc::new(AtomicUsize::new(0));
    let feeds: Feeds = Arc::default();
    let (calls, senders) = (count.clone(), feeds.clone());
    let inner = tower::service_fn(move |_req: Req| {
        calls.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = mpsc::unbounded_channel();
        senders.lock().unwrap().push(tx);
        async move { Ok::<_, Infallible>(Response::new(Fed(rx))) }
    });
    (layer.layer(inner), count, feeds)
}

#[tokio::test(start_paused = true)]
async fn a_hang_up_while_the_body_is_read_completes_the_key_and_never_releases_it() {
    // Release on cancel, so the reading happens in the request's own future.
    let layer = layer(MemoryStore::new()).on_cancel(OnCancel::Release);
    let (svc, count, feeds) = fed_service(layer);
    let first = svc.clone().oneshot(post(Some(KEY), "{}"));
    let mut first = Box::pin(first);
    assert!((&mut first).now_or_never().is_none());
    feeds.lock().unwrap()[0]
        .send(Ok(Bytes::from("half")))
        .unwrap();
    assert!((&mut first).now_or_never().is_none());
    drop(first); // the client hung up while its response was being read
    tokio::task::yield_now().await;
    // Bounded: a second run would wait for a body nobody feeds.
    let retry = tokio::time::timeout(
        Duration::from_secs(1),
        svc.clone().oneshot(post(Some(KEY), "{}")),
    )
    .await
    .expect("a retry is answered from the record, it does not run again");
    assert!(
        matches!(retry, Err(Error::NotRetained)),
        "410, not a second run: {retry:?}"
    );
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_body_that_fails_mid_stream_is_recorded_as_not_retained() {
    let (svc, count, feeds) = fed_service(layer(MemoryStore::new()));
    let first = tokio::spawn(svc.clone().oneshot(post(Some(KEY), "{}")));
    while feeds.lock().unwrap().is_empty() {
        tokio::task::yield_now().await;
    }
    let feed = feeds.lock().unwrap()[0].clone();
    feed.send(Ok(Bytes::from("half"))).unwrap();
    feed.send(Err("connection to the backend reset".into()))
        .unwrap();
    let response = first.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.into_body().collect().await.is_err(),
        "the client sees the body fail"
    );
    // Bounded: a second run would wait for a body nobody feeds.
    let retry = tokio::time::timeout(
        Duration::from_secs(1),
        svc.clone().oneshot(post(Some(KEY), "{}")),
    )
    .await
    .expect("a retry is answered from the record, it does not run again");
    assert!(
        matches!(retry, Err(Error::NotRetained)),
        "410, not a second run: {retry:?}"
    );
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_hang_up_during_the_completion_still_stores_the_response() {
    let store = Flaky::default();
    store.slow_complete.store(true, Ordering::SeqCst);
    // Release on cancel: even then, an answered request is never released.
    let layer = layer(store.clone()).on_cancel(OnCancel::Release);
    let (app, count) = harness(layer, ok());
    hang_up(&app, post(Some(KEY), "{}"), Duration::from_millis(100)).await;
    assert_eq!(
        count.get(),
        1,
        "the handler answered, the completion was on its way"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let retry = send(&app, post(Some(KEY), "{}")).await;
    assert!(
        retry.replayed(),
        "the completion landed: {:?}",
        retry.status
    );
    assert_eq!(retry.body, "call 0");
    assert_eq!(count.get(), 1);
}

/// A handler that runs three times its lease keeps its key: the heartbeat
/// renews it, so concurrent retries never run it a second time.
#[tokio::test(start_paused = true)]
async fn a_handler_that_runs_three_leases_long_runs_once() {
    let slow: Handler = Arc::new(|_req, n| {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            Response::new(Full::new(Bytes::from(format!("call {n}"))))
        })
    });
    let (app, count) = harness(
        layer(MemoryStore::new()).lease(Duration::from_secs(1)),
        slow,
    );
    let first = tokio::spawn(send_owned(app.clone()));
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let retry = send(&app, post(Some(KEY), "{}")).await;
        assert_eq!(
            retry.status,
            StatusCode::CONFLICT,
            "still running, still held"
        );
    }
    let first = first.await.unwrap();
    assert_eq!(first.body, "call 0");
    let retry = send(&app, post(Some(KEY), "{}")).await;
    assert!(retry.replayed());
    assert_eq!(count.get(), 1);
}

async fn send_owned(app: App) -> crate::common::Answer {
    send(&app, post(Some(KEY), "{}")).await
}

/// A holder stalled past its lease (here: time jumps over every heartbeat)
/// loses the key: its renewal is refused, a retry runs, and the stale run's
/// completion writes nothing over the new record.
#[tokio::test(start_paused = true)]
async fn a_holder_stalled_past_its_lease_can_neither_renew_nor_complete() {
    let gate = Arc::new(Notify::new());
    let (app, count) = harness(
        layer(MemoryStore::new()).lease(Duration::from_secs(1)),
        gated(gate.clone()),
    );
    let first = tokio::spawn(send_owned(app.clone()));
    while count.get() == 0 {
        tokio::task::yield_now().await;
    }
    tokio::time::advance(Duration::from_secs(5)).await;
    // Let the heartbeat try (and fail) to renew before the retry.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let retry = send(&app, post(Some(KEY), "{}")).await;
    assert_eq!(retry.body, "call 1", "the lease was lost, the retry ran");
    gate.notify_one();
    assert_eq!(first.await.unwrap().body, "call 0");
    let replay = send(&app, post(Some(KEY), "{}")).await;
    assert!(replay.replayed());
    assert_eq!(replay.body, "call 1", "the stale completion wrote nothing");
    assert_eq!(count.get(), 2);
}

/// A lease lost while the request runs is logged at `WARN` when the
/// renewal finds it gone, and the request is counted once, as
/// `not_stored`, when its completion is refused.
#[cfg(feature = "metrics")]
#[test]
fn a_lost_lease_is_logged_at_warn_and_counted_once() {
    let logs = crate::support::CapturedLogs::start();
    let (_, counts) = crate::recording::record_metrics("palisade_idempotency_", || async {
        let gate = Arc::new(Notify::new());
        let (app, count) = harness(
            layer(MemoryStore::new()).lease(Duration::from_secs(1)),
            gated(gate.clone()),
        );
        let first = tokio::spawn(send_owned(app.clone()));
        while count.get() == 0 {
            tokio::task::yield_now().await;
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(send(&app, post(Some(KEY), "{}")).await.body, "call 1");
        gate.notify_one();
        first.await.unwrap();
    });
    let log = logs.text();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("idempotency lease lost")),
        "{log}"
    );
    let entry = |outcome: &str| {
        format!("palisade_idempotency_requests_total{{name=\"default\",outcome=\"{outcome}\"}}")
    };
    assert_eq!(counts.get(&entry("executed")), Some(&1.0), "{counts:?}");
    assert_eq!(counts.get(&entry("not_stored")), Some(&1.0), "{counts:?}");
    assert_eq!(counts.len(), 2, "{counts:?}");
}
