//! Store steps that fail once, and inputs at their limits: a completion or
//! a release that meets a store blip is tried again, a replication bound of
//! `Duration::MAX` and a body that claims `u64::MAX` bytes panic nowhere.

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use palisade::idempotency::IdempotencyLayer;
use std::pin::Pin;
use std::task::{Context, Poll};
use tower::{Layer, ServiceExt};

/// A body of two 4-byte frames whose size hint has no finite upper bound
/// written as `u64::MAX` (what a proxying body forwards from a peer).
struct HugeHint(u8);

impl Body for HugeHint {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.0 == 0 {
            return Poll::Ready(None);
        }
        self.0 -= 1;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"abcd")))))
    }
    fn size_hint(&self) -> SizeHint {
        let mut hint = SizeHint::new();
        hint.set_upper(u64::MAX);
        hint
    }
}

/// A response too large to keep is chained (buffered frames + the rest):
/// its `size_hint` adds the buffered bytes to an inner upper bound of
/// `u64::MAX` without overflowing.
#[tokio::test]
async fn size_hint_of_a_chained_body_does_not_overflow() {
    let inner = tower::service_fn(|_req: Request<Full<Bytes>>| async {
        Ok::<_, std::convert::Infallible>(Response::new(HugeHint(2)))
    });
    let svc = IdempotencyLayer::new()
        .per(palisade::key::Global)
        .response_body_limit(2)
        .layer(inner);
    let req = Request::post("/p")
        .header("idempotency-key", "k-1")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let response = svc.oneshot(req).await.expect("answered");
    // hyper asks every body for its hint before it writes the head.
    let body = response.into_body();
    let hint = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body.size_hint()));
    assert!(hint.is_ok(), "size_hint panicked");
}

#[cfg(feature = "redis")]
mod redis {
    use std::num::NonZeroU32;
    use std::time::Duration;

    use palisade::idempotency::{Fingerprint, RedisStore, Store};

    use crate::support::RedisServer;

    /// `wait_for_replicas(_, Duration::MAX)` is clamped: adding it to the
    /// store's timeout overflowed and panicked on every claim.
    #[tokio::test]
    async fn wait_for_replicas_with_duration_max_does_not_panic() {
        let Some(server) = RedisServer::start_or_skip("review wait max") else {
            return;
        };
        let store = RedisStore::connect(&server.url())
            .await
            .expect("connect")
            .wait_for_replicas(NonZeroU32::MIN, Duration::MAX);
        let fp = Fingerprint::from_slice(&[1; 32]).unwrap();
        let claim = tokio::spawn(async move {
            // No replica: the claim waits out its bound; it must not panic.
            tokio::time::timeout(
                Duration::from_millis(500),
                store.claim("k", &fp, 1, Duration::from_secs(10)),
            )
            .await
        });
        let joined = claim.await;
        assert!(
            !joined.as_ref().is_err_and(|e| e.is_panic()),
            "claim panicked: {joined:?}"
        );
    }
}

/// A `MemoryStore` whose next `complete` / `release` fails with a timeout
/// (a Redis blip), as a store step that times out does.
#[derive(Clone)]
struct Flaky {
    inner: palisade::idempotency::MemoryStore,
    fail_complete: std::sync::Arc<std::sync::atomic::AtomicBool>,
    fail_release: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Every `complete` fails until then (a longer Redis outage).
    complete_down_until: std::sync::Arc<std::sync::Mutex<Option<tokio::time::Instant>>>,
}

impl Flaky {
    fn new() -> Self {
        Self {
            inner: palisade::idempotency::MemoryStore::new(),
            fail_complete: Default::default(),
            fail_release: Default::default(),
            complete_down_until: Default::default(),
        }
    }
}

impl palisade::idempotency::Store for Flaky {
    async fn claim(
        &self,
        key: &str,
        fingerprint: &palisade::idempotency::Fingerprint,
        token: u64,
        lease: std::time::Duration,
    ) -> Result<palisade::idempotency::Claim, palisade::idempotency::StoreError> {
        self.inner.claim(key, fingerprint, token, lease).await
    }
    async fn renew(
        &self,
        key: &str,
        token: u64,
        lease: std::time::Duration,
    ) -> Result<bool, palisade::idempotency::StoreError> {
        self.inner.renew(key, token, lease).await
    }
    async fn complete(
        &self,
        key: &str,
        lease: palisade::idempotency::Lease,
        completion: palisade::idempotency::Completion,
        ttl: std::time::Duration,
    ) -> Result<bool, palisade::idempotency::StoreError> {
        let down = self
            .complete_down_until
            .lock()
            .unwrap()
            .is_some_and(|until| tokio::time::Instant::now() < until);
        if down
            || self
                .fail_complete
                .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            return Err(palisade::idempotency::StoreError::Timeout(
                std::time::Duration::from_secs(1),
            ));
        }
        self.inner.complete(key, lease, completion, ttl).await
    }
    async fn release(
        &self,
        key: &str,
        token: u64,
    ) -> Result<bool, palisade::idempotency::StoreError> {
        if self
            .fail_release
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            return Err(palisade::idempotency::StoreError::Timeout(
                std::time::Duration::from_secs(1),
            ));
        }
        self.inner.release(key, token).await
    }
}

fn flaky_app(
    store: Flaky,
    status: http::StatusCode,
) -> (crate::common::App, crate::common::Counter) {
    crate::common::harness(
        IdempotencyLayer::with_store(store),
        crate::common::answer(status, "{}"),
    )
}

/// Once the inner service has returned, its key is never released for a
/// second run: a completion that fails once (a store step that timed out)
/// is tried again, or the claim would expire one lease later (the
/// heartbeat has stopped) and a retry would run the handler again.
#[tokio::test(start_paused = true)]
async fn a_failed_completion_never_lets_a_retry_run_again() {
    let store = Flaky::new();
    store
        .fail_complete
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (app, count) = flaky_app(store, http::StatusCode::CREATED);
    let key = Some("k-complete-fails");
    let first = crate::common::send(&app, crate::common::post(key, "{}")).await;
    assert_eq!(first.status, http::StatusCode::CREATED);
    // The default lease is 10 s; the retry comes a little later.
    tokio::time::sleep(std::time::Duration::from_secs(11)).await;
    let retry = crate::common::send(&app, crate::common::post(key, "{}")).await;
    assert_eq!(
        count.get(),
        1,
        "the retry ran the handler again: {}",
        retry.status
    );
}

/// A store down for 15 s right after the handler answered, under a 60 s
/// lease: the completion keeps trying for as long as the claim may hold, so
/// a retry after the lease gets the replay, not a second run.
#[tokio::test(start_paused = true)]
async fn a_completion_outlasts_a_store_outage_shorter_than_its_lease() {
    let store = Flaky::new();
    *store.complete_down_until.lock().unwrap() =
        Some(tokio::time::Instant::now() + std::time::Duration::from_secs(15));
    let (app, count) = crate::common::harness(
        IdempotencyLayer::with_store(store).lease(std::time::Duration::from_secs(60)),
        crate::common::answer(http::StatusCode::CREATED, "{}"),
    );
    let key = Some("k-long-outage");
    let first = crate::common::send(&app, crate::common::post(key, "{}")).await;
    assert_eq!(first.status, http::StatusCode::CREATED);
    tokio::time::sleep(std::time::Duration::from_secs(61)).await;
    let retry = crate::common::send(&app, crate::common::post(key, "{}")).await;
    assert_eq!(
        count.get(),
        1,
        "the retry ran the handler again: {}",
        retry.status
    );
    assert!(retry.replayed(), "{}", retry.status);
}

/// A retry gets its final answer within the first run's time + 1 s, never
/// a `409` beyond: a 5xx's release that fails once is tried again, or the
/// key would stay in flight for the whole lease (10 s).
#[tokio::test(start_paused = true)]
async fn a_failed_release_of_a_5xx_does_not_hold_the_key_for_a_lease() {
    let store = Flaky::new();
    store
        .fail_release
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (app, count) = flaky_app(store, http::StatusCode::SERVICE_UNAVAILABLE);
    let key = Some("k-release-fails");
    let first = crate::common::send(&app, crate::common::post(key, "{}")).await;
    assert_eq!(first.status, http::StatusCode::SERVICE_UNAVAILABLE);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let retry = crate::common::send(&app, crate::common::post(key, "{}")).await;
    assert_ne!(retry.status, http::StatusCode::CONFLICT, "409 at 1.5 s");
    assert_eq!(count.get(), 2);
}
