//! One contract for every store: atomic claim, fenced completion and
//! release, expiry. Run against the memory store (paused time) here and the
//! Redis store (short real leases) in `redis.rs`.

use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use palisade::idempotency::{
    Claim, Completion, Fingerprint, Lease, MemoryStore, Record, Store, StoredResponse,
};

/// A token no other claim of the test run uses, as a caller picks a random
/// one.
pub fn token() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

pub fn fp(n: u8) -> Fingerprint {
    Fingerprint::from_slice(&[n; 32]).unwrap()
}

pub fn stored(body: &'static str) -> Arc<StoredResponse> {
    let mut headers = HeaderMap::new();
    headers.insert("x-order-id", "ord_1".parse().unwrap());
    headers.append("set-cookie", "a=1".parse().unwrap());
    headers.append("set-cookie", "b=2".parse().unwrap());
    Arc::new(StoredResponse::new(
        StatusCode::CREATED,
        headers,
        Bytes::from(body),
    ))
}

pub async fn claimed<S: Store>(store: &S, key: &str, lease: Duration) -> Lease {
    match store.claim(key, &fp(1), token(), lease).await.unwrap() {
        Claim::Claimed(lease) => lease,
        other => panic!("expected a claim, got {other:?}"),
    }
}

pub async fn claim_is_exclusive_and_returns_the_record<S: Store>(store: S, key: &str) {
    let lease = claimed(&store, key, Duration::from_secs(60)).await;
    match store
        .claim(key, &fp(2), token(), Duration::from_secs(60))
        .await
        .unwrap()
    {
        Claim::Existing(Record::InFlight {
            fingerprint,
            lease_remaining,
        }) => {
            assert_eq!(fingerprint, fp(1));
            assert!(
                lease_remaining <= Duration::from_secs(60)
                    && lease_remaining > Duration::from_secs(50)
            );
        }
        other => panic!("expected in flight, got {other:?}"),
    }
    assert!(
        store
            .complete(
                key,
                lease,
                Completion::Retained(stored("done")),
                Duration::from_secs(60)
            )
            .await
            .unwrap()
    );
    match store
        .claim(key, &fp(1), token(), Duration::from_secs(60))
        .await
        .unwrap()
    {
        Claim::Existing(Record::Completed {
            fingerprint,
            response,
        }) => {
            assert_eq!(fingerprint, fp(1));
            assert_eq!(
                response,
                Some(stored("done")),
                "status, every header value and body come back"
            );
        }
        other => panic!("expected completed, got {other:?}"),
    }
}

pub async fn not_retained_is_recorded<S: Store>(store: S, key: &str) {
    let lease = claimed(&store, key, Duration::from_secs(60)).await;
    assert!(
        store
            .complete(key, lease, Completion::NotRetained, Duration::from_secs(60))
            .await
            .unwrap()
    );
    assert!(matches!(
        store
            .claim(key, &fp(1), token(), Duration::from_secs(60))
            .await
            .unwrap(),
        Claim::Existing(Record::Completed { response: None, .. })
    ));
}

pub async fn release_frees_the_key_only_for_the_holder<S: Store>(store: S, key: &str) {
    let lease = claimed(&store, key, Duration::from_secs(60)).await;
    let forged = Lease {
        token: lease.token.wrapping_add(1),
        fence: lease.fence,
    };
    assert!(
        !store.release(key, forged.token).await.unwrap(),
        "a wrong token cannot release"
    );
    assert!(
        !store
            .complete(
                key,
                forged,
                Completion::NotRetained,
                Duration::from_secs(60)
            )
            .await
            .unwrap()
    );
    assert!(store.release(key, lease.token).await.unwrap());
    let next = claimed(&store, key, Duration::from_secs(60)).await;
    assert!(next.fence > lease.fence, "fencing numbers grow");
    assert_ne!(next.token, lease.token);
    // A completed record cannot be released.
    assert!(
        store
            .complete(
                key,
                next,
                Completion::Retained(stored("x")),
                Duration::from_secs(60)
            )
            .await
            .unwrap()
    );
    assert!(!store.release(key, next.token).await.unwrap());
    assert!(matches!(
        store
            .claim(key, &fp(1), token(), Duration::from_secs(60))
            .await
            .unwrap(),
        Claim::Existing(Record::Completed { .. })
    ));
}

/// A holder whose lease expired and was taken over can neither complete nor
/// release, and the new holder's record is untouched.
pub async fn stale_holder_is_fenced_out<S, F>(
    store: S,
    key: &str,
    lease: Duration,
    wait_past_lease: impl Fn() -> F,
) where
    S: Store,
    F: Future<Output = ()>,
{
    let stale = claimed(&store, key, lease).await;
    wait_past_lease().await;
    let fresh = claimed(&store, key, Duration::from_secs(60)).await;
    assert!(fresh.fence > stale.fence);
    assert!(
        !store
            .complete(
                key,
                stale,
                Completion::Retained(stored("stale")),
                Duration::from_secs(60)
            )
            .await
            .unwrap(),
        "the stale completion is refused"
    );
    assert!(!store.release(key, stale.token).await.unwrap());
    assert!(
        !store.renew(key, stale.token, lease).await.unwrap(),
        "the stale holder cannot renew"
    );
    assert!(store.renew(key, fresh.token, lease).await.unwrap());
    assert!(
        store
            .complete(
                key,
                fresh,
                Completion::Retained(stored("fresh")),
                Duration::from_secs(60)
            )
            .await
            .unwrap()
    );
    match store
        .claim(key, &fp(1), token(), Duration::from_secs(60))
        .await
        .unwrap()
    {
        Claim::Existing(Record::Completed {
            response: Some(r), ..
        }) => assert_eq!(r.body, "fresh"),
        other => panic!("{other:?}"),
    }
    // Even after the fresh holder completed, the stale one cannot overwrite.
    assert!(
        !store
            .complete(
                key,
                stale,
                Completion::Retained(stored("stale")),
                Duration::from_secs(60)
            )
            .await
            .unwrap()
    );
}

/// An unfinished claim (its holder crashed) frees itself after the lease; a
/// completed record expires after its TTL.
pub async fn claims_and_records_expire<S, F>(
    store: S,
    key: &str,
    short: Duration,
    wait_past: impl Fn() -> F,
) where
    S: Store,
    F: Future<Output = ()>,
{
    let crashed = claimed(&store, key, short).await;
    assert!(matches!(
        store.claim(key, &fp(1), token(), short).await.unwrap(),
        Claim::Existing(Record::InFlight { .. })
    ));
    wait_past().await;
    let lease = claimed(&store, key, Duration::from_secs(60)).await;
    assert!(lease.fence > crashed.fence);
    assert!(
        store
            .complete(key, lease, Completion::Retained(stored("x")), short)
            .await
            .unwrap()
    );
    assert!(matches!(
        store.claim(key, &fp(1), token(), short).await.unwrap(),
        Claim::Existing(Record::Completed { .. })
    ));
    wait_past().await;
    claimed(&store, key, short).await;
}

/// A renewal extends only the holder's lease; the same claim sent again
/// (its reply was lost) gets the same lease back; a completed key cannot be
/// renewed. `two_thirds` waits two thirds of `lease`.
pub async fn renew_extends_only_the_holders_lease<S, F>(
    store: S,
    key: &str,
    lease: Duration,
    two_thirds: impl Fn() -> F,
) where
    S: Store,
    F: Future<Output = ()>,
{
    let held = claimed(&store, key, lease).await;
    two_thirds().await;
    assert!(store.renew(key, held.token, lease).await.unwrap());
    assert!(
        !store
            .renew(key, held.token.wrapping_add(1), lease)
            .await
            .unwrap(),
        "another token cannot renew"
    );
    two_thirds().await;
    // Four thirds of the lease after the claim: alive thanks to the renewal.
    assert!(matches!(
        store.claim(key, &fp(1), token(), lease).await.unwrap(),
        Claim::Existing(Record::InFlight { .. })
    ));
    assert_eq!(
        store.claim(key, &fp(1), held.token, lease).await.unwrap(),
        Claim::Claimed(held),
        "the same claim sent again gets its lease back"
    );
    assert!(
        store
            .complete(key, held, Completion::NotRetained, lease)
            .await
            .unwrap()
    );
    assert!(
        !store.renew(key, held.token, lease).await.unwrap(),
        "a completed key is not renewed"
    );
}

/// A claim is released by the token its caller chose, whether or not it
/// landed: the caller need not have seen the reply.
pub async fn an_unanswered_claim_is_released_by_its_token<S: Store>(store: S, key: &str) {
    let chosen = token();
    assert!(
        !store.release(key, chosen).await.unwrap(),
        "a claim that never landed: nothing to free"
    );
    let lease = Duration::from_secs(60);
    let Claim::Claimed(_) = store.claim(key, &fp(1), chosen, lease).await.unwrap() else {
        panic!("expected a claim");
    };
    assert!(store.release(key, chosen).await.unwrap());
    assert!(
        !store.release(key, chosen).await.unwrap(),
        "a second release is harmless"
    );
    claimed(&store, key, lease).await;
}

/// `Duration::MAX` and `ZERO` on every duration a store takes: no panic, no
/// error, and a completion with the longest TTL is a completed record.
/// A completion whose answer was lost is sent again: the repeat answers
/// `true` and writes nothing; another claim's completion still answers
/// `false`.
pub async fn a_repeated_completion_answers_as_the_first<S: Store>(store: S, key: &str) {
    let lease = claimed(&store, key, Duration::from_secs(60)).await;
    let ttl = Duration::from_secs(60);
    let complete = |body| store.complete(key, lease, Completion::Retained(stored(body)), ttl);
    assert!(complete("first").await.unwrap());
    assert!(complete("second").await.unwrap(), "a repeat lands too");
    let stranger = Lease {
        token: token(),
        fence: lease.fence,
    };
    let other = store.complete(key, stranger, Completion::NotRetained, ttl);
    assert!(
        !other.await.unwrap(),
        "another claim's completion is refused"
    );
    match store.claim(key, &fp(1), token(), ttl).await.unwrap() {
        Claim::Existing(Record::Completed {
            response: Some(response),
            ..
        }) => assert_eq!(response.body, "first", "the repeat wrote nothing"),
        other => panic!("expected the first completion, got {other:?}"),
    }
}

pub async fn durations_out_of_range_are_clamped<S: Store>(store: S, key: &str) {
    let held = claimed(&store, key, Duration::MAX).await;
    assert!(store.renew(key, held.token, Duration::MAX).await.unwrap());
    assert!(
        store
            .complete(
                key,
                held,
                Completion::Retained(stored("kept")),
                Duration::MAX
            )
            .await
            .unwrap()
    );
    assert!(matches!(
        store
            .claim(key, &fp(1), token(), Duration::MAX)
            .await
            .unwrap(),
        Claim::Existing(Record::Completed {
            response: Some(_),
            ..
        })
    ));
    let zero = format!("{key}-zero");
    let Claim::Claimed(held) = store
        .claim(&zero, &fp(1), token(), Duration::ZERO)
        .await
        .unwrap()
    else {
        panic!("expected a claim");
    };
    let _ = store
        .renew(&zero, held.token, Duration::ZERO)
        .await
        .unwrap();
    let _ = store
        .complete(&zero, held, Completion::NotRetained, Duration::ZERO)
        .await
        .unwrap();
}

async fn advance_past(d: Duration) {
    tokio::time::advance(d + Duration::from_millis(1)).await;
}

#[tokio::test(start_paused = true)]
async fn memory_claim_is_exclusive_and_returns_the_record() {
    claim_is_exclusive_and_returns_the_record(MemoryStore::new(), "k").await;
}

#[tokio::test(start_paused = true)]
async fn memory_not_retained_is_recorded() {
    not_retained_is_recorded(MemoryStore::new(), "k").await;
}

#[tokio::test(start_paused = true)]
async fn memory_release_frees_the_key_only_for_the_holder() {
    release_frees_the_key_only_for_the_holder(MemoryStore::new(), "k").await;
}

#[tokio::test(start_paused = true)]
async fn memory_stale_holder_is_fenced_out() {
    let lease = Duration::from_secs(10);
    stale_holder_is_fenced_out(MemoryStore::new(), "k", lease, || advance_past(lease)).await;
}

#[tokio::test(start_paused = true)]
async fn memory_claims_and_records_expire() {
    let short = Duration::from_secs(5);
    claims_and_records_expire(MemoryStore::new(), "k", short, || advance_past(short)).await;
}

#[tokio::test(start_paused = true)]
async fn memory_renew_extends_only_the_holders_lease() {
    let lease = Duration::from_secs(9);
    renew_extends_only_the_holders_lease(MemoryStore::new(), "k", lease, || {
        tokio::time::advance(Duration::from_secs(6))
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn memory_an_unanswered_claim_is_released_by_its_token() {
    an_unanswered_claim_is_released_by_its_token(MemoryStore::new(), "k").await;
}

#[tokio::test(start_paused = true)]
async fn memory_a_repeated_completion_answers_as_the_first() {
    a_repeated_completion_answers_as_the_first(MemoryStore::new(), "k").await;
}

#[tokio::test(start_paused = true)]
async fn memory_durations_out_of_range_are_clamped() {
    durations_out_of_range_are_clamped(MemoryStore::new(), "k").await;
}

#[tokio::test(start_paused = true)]
async fn memory_store_sweeps_expired_records() {
    let store = MemoryStore::new();
    for i in 0..100 {
        claimed(&store, &format!("old-{i}"), Duration::from_secs(1)).await;
    }
    advance_past(Duration::from_secs(1)).await;
    for i in 0..5000 {
        claimed(&store, &format!("new-{i}"), Duration::from_secs(60)).await;
    }
    assert!(
        store.len() <= 5000,
        "expired records were swept: {}",
        store.len()
    );
}

#[tokio::test(start_paused = true)]
async fn bounded_memory_store_refuses_new_keys_when_full_until_records_expire() {
    use palisade::idempotency::StoreError;
    let store = MemoryStore::with_max_keys(NonZeroUsize::new(2).unwrap());
    claimed(&store, "a", Duration::from_secs(10)).await;
    claimed(&store, "b", Duration::from_secs(10)).await;
    assert!(matches!(
        store
            .claim("c", &fp(1), token(), Duration::from_secs(10))
            .await,
        Err(StoreError::Full)
    ));
    // Existing keys still answer: a duplicate of "a" sees its record.
    assert!(matches!(
        store
            .claim("a", &fp(1), token(), Duration::from_secs(10))
            .await
            .unwrap(),
        Claim::Existing(Record::InFlight { .. })
    ));
    advance_past(Duration::from_secs(10)).await;
    claimed(&store, "c", Duration::from_secs(10)).await;
    assert_eq!(store.len(), 1, "expired records were swept to make room");
}
