//! The heartbeat that renews a claim's lease while its request runs.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures::FutureExt;
use futures::future::{Fuse, FusedFuture};

use super::key::IdempotencyKey;
use super::observe::Observer;
use super::store::Store;

/// Renews a claim's lease while its request runs, every third of the
/// lease, in the request's own task (no task per request).
pub(crate) struct Heartbeat<St> {
    pub(crate) store: St,
    pub(crate) observer: Arc<Observer>,
    pub(crate) idempotency_key: IdempotencyKey,
    pub(crate) key: Arc<str>,
    pub(crate) token: u64,
    pub(crate) fence: u64,
    pub(crate) lease: Duration,
    /// No renewal after this ([`IdempotencyLayer::request_timeout`]).
    ///
    /// [`IdempotencyLayer::request_timeout`]: super::IdempotencyLayer::request_timeout
    pub(crate) until: Option<tokio::time::Instant>,
}

impl<St: Store> Heartbeat<St> {
    /// Drives `work` to its end, renewing the lease alongside; a renewal in
    /// flight when `work` ends is dropped (the completion follows anyway).
    pub(crate) async fn run<F: Future>(&self, work: F) -> F::Output {
        let (observer, fence) = (&self.observer, self.fence);
        let period = (self.lease / 3).max(Duration::from_millis(1));
        let mut work = pin!(work);
        // Armed when `work` first waits: a request that answers on its
        // first poll (most do) reads no clock and registers no timer.
        let mut tick = pin!(None::<tokio::time::Sleep>);
        let mut renewal = pin!(Fuse::terminated());
        let mut lost = false;
        std::future::poll_fn(|cx| {
            if let Poll::Ready(output) = work.as_mut().poll(cx) {
                return Poll::Ready(output);
            }
            if tick.is_none() {
                tick.set(Some(tokio::time::sleep(period)));
            }
            let mut tick = tick.as_mut().as_pin_mut().expect("armed above");
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
