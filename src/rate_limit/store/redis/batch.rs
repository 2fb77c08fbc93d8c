//! Concurrent one-quota decisions, coalesced: while [`MAX_IN_FLIGHT`]
//! round trips are out, the decisions that arrive queue here, and go
//! together as soon as one comes back: one call of `gcra_batch.lua` (up
//! to [`MAX_BATCH`] decisions each), all the calls in one round trip.
//!
//! A lone caller never waits for anyone: below the limit a decision goes at
//! once, as it would without batching. Under load, one script call and one
//! round trip carry many decisions, which saves Redis most of a script's
//! fixed cost per decision and the client most of a round trip's.
//!
//! Keys of a batch may span hash slots, which a plain Redis accepts. An
//! endpoint that enforces slots on one address (a Redis Cluster proxy,
//! serverless Redis, a cluster-enabled node) refuses such a call whole with
//! `CROSSSLOT`, before the script runs, so nothing was written. The first
//! such refusal marks the store's endpoint as enforcing slots: that batch
//! is sent again, one call per slot, and so is every batch after it.
//! Grouping by slot from the start would cost the common case everything:
//! per-client keys hardly ever share one of the 16,384 slots, so it makes
//! about one call per decision, the work of no batching plus a wait.
//!
//! A batch's bound starts when it is sent, not when its decisions queued:
//! a queued decision waits for a round trip already out (itself bounded),
//! then for its own, so Redis answering within the bound never fails it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use redis::{ErrorKind, RedisError, ServerErrorKind};
use tokio::sync::oneshot;

use super::{Params, Scripts, bounded};
use crate::rate_limit::store::StoreError;
use crate::redis_conn::{Conn, key_slot};

/// Round trips out at once before decisions queue. Two keep both sides
/// busy: Redis runs one batch while this process reads the other's replies
/// and queues the next.
const MAX_IN_FLIGHT: usize = 2;

/// The most decisions in one script call, which bounds how long Redis
/// spends in one script (about 2 µs per decision); a queue (or, behind an
/// endpoint that enforces slots, a slot) with more gets several calls, sent
/// in order in the same round trip.
const MAX_BATCH: usize = 128;

/// The queue of one store (shared by its clones).
pub(super) struct Batcher {
    conn: Conn,
    scripts: Arc<Scripts>,
    state: Mutex<State>,
    /// The endpoint refused a batch with `CROSSSLOT`: batches go one call
    /// per hash slot from then on. Never reset: an endpoint does not stop
    /// enforcing slots, and a wrong `true` only costs batching's gain.
    by_slot: AtomicBool,
}

#[derive(Default)]
struct State {
    /// Round trips out: decisions sent alone and batches, each holding
    /// one slot. While decisions queue, every slot is taken, and whoever
    /// gives one back sends the queue instead.
    in_flight: usize,
    queue: Vec<Queued>,
}

struct Queued {
    key: String,
    params: Params,
    reply: oneshot::Sender<Result<i64, StoreError>>,
}

/// What a decision does now.
pub(super) enum Turn {
    /// Go alone, at once; the slot is given back, or passed to the
    /// queue, when it is dropped.
    Now(Slot),
    /// Wait for the batch that carries it.
    Queued(oneshot::Receiver<Result<i64, StoreError>>),
}

impl Batcher {
    pub(super) fn new(conn: Conn, scripts: Arc<Scripts>) -> Self {
        Self {
            conn,
            scripts,
            state: Mutex::default(),
            by_slot: AtomicBool::new(false),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a slot for the decision on `key` (the TAT key, taken only when
    /// the decision queues), or queues it. `timeout` bounds the round trip
    /// of each batch this slot may later carry, from when it is sent.
    pub(super) fn enter(
        self: &Arc<Self>,
        key: &mut String,
        params: Params,
        timeout: Duration,
    ) -> Turn {
        let mut state = self.state();
        if state.in_flight < MAX_IN_FLIGHT {
            state.in_flight += 1;
            return Turn::Now(Slot {
                batcher: Arc::clone(self),
                timeout,
            });
        }
        let (reply, answer) = oneshot::channel();
        state.queue.push(Queued {
            key: std::mem::take(key),
            params,
            reply,
        });
        Turn::Queued(answer)
    }

    /// Sends what queued, everything at once, each time the previous
    /// round trip comes back, until the queue is empty; then gives the slot
    /// back.
    ///
    /// Before each later batch the carrier lets the callers it just
    /// answered run first (one yield): most of them decide again at once,
    /// and join this batch instead of waiting for the next. At 64 callers
    /// that makes about 30 decisions per script call instead of 21, and
    /// Redis's fixed cost of a script call (tens of µs) is spread thinner.
    async fn flush(mut carrier: Carrier, timeout: Duration) {
        let mut first = true;
        loop {
            if !std::mem::take(&mut first) {
                tokio::task::yield_now().await;
            }
            let queue: Vec<Queued> = {
                let mut state = carrier.batcher.state();
                // Callers that gave up (dropped, timed out) are not sent.
                state.queue.retain(|q| !q.reply.is_closed());
                if state.queue.is_empty() {
                    state.in_flight -= 1;
                    carrier.done = true;
                    return;
                }
                std::mem::take(&mut state.queue)
            };
            // One round trip: the calls are pipelined on the connection, and
            // each answers its decisions as soon as it is back.
            let batcher = &carrier.batcher;
            let calls = if batcher.by_slot.load(Ordering::Relaxed) {
                by_slot(queue)
            } else {
                in_order(queue)
            };
            futures::future::join_all(
                calls
                    .into_iter()
                    .map(|batch| batcher.send_and_answer(batch, timeout)),
            )
            .await;
        }
    }

    /// Sends one script call for `batch`, bounded by `timeout` from now, and
    /// hands each decision its reply. Refused with `CROSSSLOT`, the batch
    /// goes again, one call per slot (each bounded from when it is sent),
    /// and so do all later batches.
    async fn send_and_answer(&self, mut batch: Vec<Queued>, timeout: Duration) {
        let replies = self.send_bounded(&batch, timeout).await;
        if matches!(&replies, Err(StoreError::Redis(e))
            if e.kind() == ErrorKind::Server(ServerErrorKind::CrossSlot))
        {
            // Redis refuses `CROSSSLOT` before the script runs: nothing was
            // written, so sending again cannot spend a cell twice.
            if !self.by_slot.swap(true, Ordering::Relaxed) {
                tracing::debug!(
                    decisions = batch.len(),
                    "the endpoint enforces hash slots: batching by slot"
                );
            }
            // Callers that gave up meanwhile are not sent.
            batch.retain(|q| !q.reply.is_closed());
            futures::future::join_all(by_slot(batch).into_iter().map(|batch| async move {
                let replies = self.send_bounded(&batch, timeout).await;
                answer(batch, replies);
            }))
            .await;
            return;
        }
        answer(batch, replies);
    }

    /// One script call for `batch`, bounded by `timeout` from now, with
    /// one reply per decision.
    async fn send_bounded(
        &self,
        batch: &[Queued],
        timeout: Duration,
    ) -> Result<Vec<i64>, StoreError> {
        match bounded(timeout, self.send(batch)).await {
            Ok(replies) if replies.len() != batch.len() => {
                Err(StoreError::Protocol(format!("{replies:?}")))
            }
            replies => replies,
        }
    }

    /// One round trip for `batch`: the lean script for one decision, the
    /// batch script for more.
    async fn send(&self, batch: &[Queued]) -> Result<Vec<i64>, StoreError> {
        if let [q] = batch {
            return Ok(vec![self.scripts.one(&self.conn, &q.key, q.params).await?]);
        }
        let mut call = self.scripts.batch.call();
        for q in batch {
            call.key(&q.key);
        }
        // One quota and one cost for all (the common case): their
        // parameters once, not once per decision.
        let first = batch[0].params;
        if batch.iter().all(|q| q.params.same_as(&first)) {
            call.arg(first.inc).arg(first.room());
        } else {
            for q in batch {
                call.arg(q.params.inc).arg(q.params.room());
            }
        }
        Ok(call.invoke(&self.conn).await?)
    }
}

/// Hands each decision of `batch` its reply, or the call's error.
fn answer(batch: Vec<Queued>, replies: Result<Vec<i64>, StoreError>) {
    match replies {
        Ok(replies) => {
            for (q, reply) in batch.into_iter().zip(replies) {
                let _ = q.reply.send(Ok(reply));
            }
        }
        Err(err) => {
            for q in batch {
                let _ = q.reply.send(Err(copy(&err)));
            }
        }
    }
}

/// `queue` split into script calls in arrival order, at most [`MAX_BATCH`]
/// in one call, whatever slots their keys fall in.
fn in_order(queue: Vec<Queued>) -> Vec<Vec<Queued>> {
    if queue.len() <= MAX_BATCH {
        return vec![queue];
    }
    let mut queue = queue.into_iter();
    std::iter::from_fn(|| Some(queue.by_ref().take(MAX_BATCH).collect::<Vec<_>>()))
        .take_while(|call| !call.is_empty())
        .collect()
}

/// `queue` split into script calls: decisions whose keys share a hash
/// slot, in arrival order, at most [`MAX_BATCH`] in one call. Keys of one
/// decision never span slots (they share a hash tag), so neither does a
/// call.
fn by_slot(queue: Vec<Queued>) -> Vec<Vec<Queued>> {
    let mut calls: Vec<Vec<Queued>> = Vec::new();
    // Each slot's call still filling, by index in `calls`.
    let mut filling: HashMap<u16, usize> = HashMap::new();
    for q in queue {
        let slot = key_slot(q.key.as_bytes());
        match filling.get(&slot) {
            Some(&i) if calls[i].len() < MAX_BATCH => calls[i].push(q),
            _ => {
                filling.insert(slot, calls.len());
                calls.push(vec![q]);
            }
        }
    }
    calls
}

/// One round trip's place, held by a decision sent alone.
pub(super) struct Slot {
    batcher: Arc<Batcher>,
    timeout: Duration,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.batcher.state();
        if state.queue.is_empty() {
            state.in_flight -= 1;
            return;
        }
        drop(state);
        // The slot now carries the queue, in a task of its own: the caller
        // that held it has its answer and must not wait for others'.
        let carrier = Carrier {
            batcher: Arc::clone(&self.batcher),
            done: false,
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(Batcher::flush(carrier, self.timeout));
        }
        // Without a runtime, dropping the carrier gives the slot back.
    }
}

/// A slot carrying the queue. Dropped before it is done (its task was
/// dropped with the runtime, or never spawned), it gives its slot back; if
/// no other slot is out to send the queue, the queued decisions fail at
/// once instead of waiting out their bound.
struct Carrier {
    batcher: Arc<Batcher>,
    done: bool,
}

impl Drop for Carrier {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut state = self.batcher.state();
        state.in_flight -= 1;
        if state.in_flight == 0 {
            // Dropping the senders answers every waiter.
            state.queue.clear();
        }
    }
}

/// What a queued decision gets when its batch was dropped unsent.
pub(super) fn dropped() -> StoreError {
    StoreError::Redis(RedisError::from((
        ErrorKind::Io,
        "the batch carrying this decision was dropped",
    )))
}

/// A batch's error, for each decision it carried.
fn copy(err: &StoreError) -> StoreError {
    match err {
        StoreError::Timeout(bound) => StoreError::Timeout(*bound),
        StoreError::Redis(e) => StoreError::Redis(RedisError::from((
            e.kind(),
            "batched decision failed",
            e.to_string(),
        ))),
        StoreError::Protocol(reply) => StoreError::Protocol(reply.clone()),
        other => StoreError::Protocol(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(keys: impl IntoIterator<Item = String>) -> Vec<Queued> {
        keys.into_iter()
            .map(|key| Queued {
                key,
                params: Params {
                    interval: 1,
                    tau: 1,
                    inc: 1,
                },
                reply: oneshot::channel().0,
            })
            .collect()
    }

    fn keys(calls: &[Vec<Queued>]) -> Vec<Vec<&str>> {
        calls
            .iter()
            .map(|call| call.iter().map(|q| q.key.as_str()).collect())
            .collect()
    }

    #[test]
    fn a_queue_goes_in_arrival_order_whatever_the_slots() {
        let all: Vec<String> = (0..300).map(|i| format!("{{k{i}}}")).collect();
        let calls = in_order(queued(all.clone()));
        let sizes: Vec<usize> = calls.iter().map(Vec::len).collect();
        assert_eq!(sizes, [MAX_BATCH, MAX_BATCH, 300 - 2 * MAX_BATCH]);
        assert_eq!(keys(&calls).concat(), all);
        assert_eq!(keys(&in_order(queued(all[..3].to_vec()))), [&all[..3]]);
    }

    #[test]
    fn by_slot_keeps_each_call_to_one_slot_in_arrival_order() {
        // `{a}` and `{b}` hash to different slots; 200 decisions on `{a}`
        // fill one call and start another.
        assert_ne!(key_slot(b"{a}"), key_slot(b"{b}"));
        let all: Vec<String> = (0..300)
            .map(|i| format!("{{{}}}:{i}", if i % 3 == 2 { "b" } else { "a" }))
            .collect();
        let calls = by_slot(queued(all.clone()));
        for call in keys(&calls) {
            let tag = &call[0][..3];
            assert!(call.iter().all(|k| k.starts_with(tag)), "{call:?}");
            let order: Vec<usize> = call.iter().map(|k| k[4..].parse().unwrap()).collect();
            assert!(order.is_sorted(), "{order:?}");
        }
        let sizes: Vec<usize> = calls.iter().map(Vec::len).collect();
        assert_eq!(sizes, [MAX_BATCH, 100, 200 - MAX_BATCH]);
    }
}
