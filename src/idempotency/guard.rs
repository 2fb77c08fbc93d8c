//! The guard of a claim: whatever happens to the request future, its key
//! ends completed or released, never blocked for longer than a lease.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tracing::{Instrument, warn};

use super::config::OnCancel;
use super::detach::run_to_end;
use super::error::StoreError;
use super::key::IdempotencyKey;
use super::observe::{Observer, Outcome};
use super::record::{Completion, Lease};
use super::store::Store;
use crate::observability::redact_key;

/// Where a request stands with its key, for what [`ClaimGuard`]'s drop does.
#[derive(Clone, Copy)]
pub(crate) enum Stage {
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
pub(crate) struct ClaimGuard<St: Store> {
    pub(crate) store: St,
    pub(crate) observer: Arc<Observer>,
    /// The client's key, for the events (only its digest is logged).
    pub(crate) idempotency_key: IdempotencyKey,
    /// The storage key.
    pub(crate) key: Arc<str>,
    /// Chosen before the claim is sent, so it can be released unanswered.
    pub(crate) token: u64,
    pub(crate) ttl: Duration,
    /// The lease a claim is given: a completion or release keeps trying at
    /// least this long, since the claim may hold that long.
    pub(crate) lease: Duration,
    pub(crate) on_cancel: OnCancel,
    pub(crate) stage: Stage,
}

impl<St: Store> ClaimGuard<St> {
    pub(crate) async fn release(&mut self, why: &'static str) {
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
    pub(crate) fn complete(
        &mut self,
        lease: Lease,
        completion: Completion,
    ) -> impl Future<Output = ()> + Send + 'static {
        self.stage = Stage::Done;
        let (store, observer) = (self.store.clone(), self.observer.clone());
        let (idempotency_key, key) = (self.idempotency_key.clone(), self.key.clone());
        let (ttl, retry_for) = (self.ttl, retries_for(self.lease));
        async move {
            let retained = matches!(completion, Completion::Retained(_));
            let fence = lease.fence;
            let start = observer.start();
            // A failed completion is tried again (it is safe to repeat: the
            // store answers `true` to a repeat of one that landed) while the
            // lease may still hold: given up, the claim would expire and a
            // retry run the handler a second time.
            let completed = finish_retried(retry_for, || {
                store.complete(&key, lease, completion.clone(), ttl)
            })
            .await;
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
        let (token, retry_for) = (self.token, retries_for(self.lease));
        Box::pin(async move {
            let start = observer.start();
            let released = finish_retried(retry_for, || store.release(&key, token)).await;
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

/// How long a completion or release keeps trying: as long as the claim may
/// hold (its lease, counted from now, which is no earlier than its last
/// renewal), and never less than [`FINISH_RETRIES_FOR`]. Given up while the
/// lease holds, the claim would expire and a retry run the handler again.
fn retries_for(lease: Duration) -> Duration {
    lease.max(FINISH_RETRIES_FOR)
}

/// Sends a completion or a release (both safe to repeat) until it is
/// answered, for up to `retry_for`. A completion written but not replicated
/// in time is not sent again: that would only block the connection again.
pub(crate) async fn finish_retried<T, F, Fut>(
    retry_for: Duration,
    mut step: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let give_up = tokio::time::Instant::now() + retry_for;
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
/// How long they keep trying at least (a default lease).
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
