//! The gate every concurrency layer shares: a limit of permits, a bounded
//! wait queue served by priority and [`QueueOrder`], and permits that are
//! released however their holder ends.
//!
//! The counts (permits held, requests queued) are one atomic word. While
//! nobody waits, a permit is taken and given back by one compare-and-swap,
//! without the lock: the uncontended path costs what tower's semaphore does.
//! Once someone waits, every change goes through one short lock: a release
//! hands its permit straight to the next waiter (no wake-up storm, no
//! barging), and the queued count, changed only under the lock, keeps the
//! lock-free paths out: they act only on a word whose queued count is zero.
//! Waiters hear of their grant through a oneshot channel, sent under the
//! lock, so a waiter that gives up (its wait ran out, its future was
//! dropped) finds under the same lock whether it was still queued or already
//! holds a permit it must pass on.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::Priority;
use super::queue::{Queue, QueueOrder};
use super::shed::Reason;

// Queued classes, lowest first: NeverShed is never queued.
const CLASSES: usize = 3;

fn class(priority: Priority) -> usize {
    match priority {
        Priority::Sheddable => 0,
        Priority::Normal => 1,
        Priority::Critical | Priority::NeverShed => 2,
    }
}

#[derive(Debug)]
enum Grant {
    Permit,
    Shed(Reason),
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    since: Instant,
    grant: oneshot::Sender<Grant>,
}

// The counts word: permits held in the low half, requests queued in the
// high half. The queued half changes only under the lock; the held half
// also lock-free, by a compare-and-swap that takes a permit only while the
// queued half is zero, and by a release's subtraction, which takes the lock
// after when the queued half was not zero.
const ONE_HELD: u64 = 1;
const ONE_QUEUED: u64 = 1 << 32;

fn held(counts: u64) -> u32 {
    counts as u32
}

fn queued(counts: u64) -> u32 {
    (counts >> 32) as u32
}

#[derive(Debug)]
struct State {
    classes: [VecDeque<Waiter>; CLASSES],
    // When the queue last held nobody: CoDel's "has it emptied within the
    // interval". Only read while someone waits.
    last_empty: Instant,
    next_id: u64,
    // Under the lock with the rest: an adaptive limiter's layer sets it
    // after the gate is made.
    queue: Option<Queue>,
    // Services whose poll_ready found the gate saturated: woken when a
    // permit or a queue place frees.
    ready: Vec<Waker>,
}

impl State {
    fn wake_ready(&mut self) {
        for waker in self.ready.drain(..) {
            waker.wake();
        }
    }
}

/// A limit of permits and its wait queue.
#[derive(Debug)]
pub(crate) struct Gate {
    counts: AtomicU64,
    // Changed under the lock; read anywhere (a stale read only delays a
    // new limit by one decision).
    limit: AtomicU32,
    // Someone waits in poll_capacity: a lock-free release must wake them.
    watched: AtomicBool,
    state: Mutex<State>,
}

/// What [`Gate::try_acquire`] decided without waiting.
pub(crate) enum Admit {
    Now(Permit),
    Refused(Reason),
    Queued(Waiting),
}

impl Gate {
    pub(crate) fn new(limit: u32, queue: Option<Queue>) -> Arc<Self> {
        Arc::new(Self {
            counts: AtomicU64::new(0),
            limit: AtomicU32::new(limit),
            watched: AtomicBool::new(false),
            state: Mutex::new(State {
                classes: Default::default(),
                last_empty: Instant::now(),
                next_id: 0,
                queue,
                ready: Vec::new(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing under the lock can panic halfway through a change.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for a permit, at most the queue's maximum wait. Dropping the
    /// future at any point leaks nothing.
    pub(crate) async fn acquire(self: &Arc<Self>, priority: Priority) -> Result<Permit, Reason> {
        match self.try_acquire(priority) {
            Admit::Now(permit) => Ok(permit),
            Admit::Refused(reason) => Err(reason),
            Admit::Queued(waiting) => waiting.wait().await,
        }
    }

    /// A permit now if one is free and nobody waits, without the lock;
    /// `None` when the request must queue or be refused (see
    /// [`try_acquire`](Self::try_acquire)).
    #[inline]
    pub(crate) fn try_admit(self: &Arc<Self>, priority: Priority) -> Option<Permit> {
        if priority == Priority::NeverShed {
            return Some(Permit { gate: None });
        }
        let limit = self.limit.load(SeqCst);
        let mut counts = self.counts.load(SeqCst);
        while queued(counts) == 0 && held(counts) < limit {
            match self
                .counts
                .compare_exchange_weak(counts, counts + ONE_HELD, SeqCst, SeqCst)
            {
                Ok(_) => {
                    return Some(Permit {
                        gate: Some(self.clone()),
                    });
                }
                Err(now) => counts = now,
            }
        }
        None
    }

    /// Takes a permit now, or queues, or refuses: no waiting.
    pub(crate) fn try_acquire(self: &Arc<Self>, priority: Priority) -> Admit {
        if let Some(permit) = self.try_admit(priority) {
            return Admit::Now(permit);
        }
        let mut state = self.lock();
        let limit = self.limit.load(SeqCst);
        let mut counts = self.counts.load(SeqCst);
        loop {
            if queued(counts) == 0 && held(counts) < limit {
                // Freed since the lock-free try: lock-free releases still
                // race us, so take it by compare-and-swap.
                match self
                    .counts
                    .compare_exchange(counts, counts + ONE_HELD, SeqCst, SeqCst)
                {
                    Ok(_) => {
                        return Admit::Now(Permit {
                            gate: Some(self.clone()),
                        });
                    }
                    Err(now) => {
                        counts = now;
                        continue;
                    }
                }
            }
            let Some(queue) = state.queue else {
                return Admit::Refused(Reason::Full);
            };
            if queued(counts) as usize >= queue.max_queued.get() {
                break;
            }
            // Publish the waiter's place while every permit is held: once
            // the queued count is not zero, releases take the lock and hand
            // their permit to the queue. If a lock-free release got in
            // first, decide again.
            match self
                .counts
                .compare_exchange(counts, counts + ONE_QUEUED, SeqCst, SeqCst)
            {
                Ok(_) => return self.enqueue(&mut state, priority, queue, queued(counts) == 0),
                Err(now) => counts = now,
            }
        }
        // Full: the newest waiter of the lowest class below this one gives
        // its place; otherwise this request is the one shed. The queued
        // count changes only under the lock: the place passes as is.
        let class = class(priority);
        let Some(victim) = state.classes[..class]
            .iter_mut()
            .find_map(|waiters| waiters.pop_back())
        else {
            return Admit::Refused(Reason::Full);
        };
        let _ = victim.grant.send(Grant::Shed(Reason::Displaced));
        let queue = state.queue.expect("a full queue exists");
        self.enqueue(&mut state, priority, queue, false)
    }

    // Puts a waiter in the place already counted for it.
    fn enqueue(
        self: &Arc<Self>,
        state: &mut State,
        priority: Priority,
        queue: Queue,
        first: bool,
    ) -> Admit {
        let now = Instant::now();
        if first {
            state.last_empty = now;
        }
        let id = state.next_id;
        state.next_id += 1;
        let (grant, receiver) = oneshot::channel();
        let class = class(priority);
        state.classes[class].push_back(Waiter {
            id,
            since: now,
            grant,
        });
        Admit::Queued(Waiting {
            gate: self.clone(),
            id,
            class,
            since: now,
            max_wait: queue.max_wait,
            receiver,
            done: false,
        })
    }

    /// Ready when a request would find a permit or a queue place now;
    /// otherwise `cx` is woken when one frees.
    pub(crate) fn poll_capacity(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.lock();
        let max_queued = state.queue.map_or(0, |q| q.max_queued.get());
        let room = || {
            let counts = self.counts.load(SeqCst);
            held(counts) < self.limit.load(SeqCst) || (queued(counts) as usize) < max_queued
        };
        if room() {
            return Poll::Ready(());
        }
        if !state.ready.iter().any(|w| w.will_wake(cx.waker())) {
            state.ready.push(cx.waker().clone());
        }
        self.watched.store(true, SeqCst);
        // A lock-free release between the first look and `watched` did not
        // see it: look again (both sides are SeqCst, so one sees the other).
        if room() {
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// Changes the limit; a higher one lets waiters in at once, a lower one
    /// takes no permit back: nobody is let in until fewer than the new limit
    /// are held.
    #[cfg_attr(
        not(any(feature = "adaptive-concurrency", feature = "bulkhead")),
        allow(dead_code)
    )]
    pub(crate) fn set_limit(&self, limit: u32) {
        let mut state = self.lock();
        self.limit.store(limit, SeqCst);
        self.dispatch(&mut state);
        self.wake_ready(&mut state);
    }

    /// Changes the queue. Waiters already queued keep their maximum wait;
    /// without a queue, they are still served as permits free.
    #[cfg(feature = "adaptive-concurrency")]
    pub(crate) fn set_queue(&self, queue: Option<Queue>) {
        let mut state = self.lock();
        state.queue = queue;
        self.wake_ready(&mut state);
    }

    #[cfg_attr(
        not(any(feature = "adaptive-concurrency", feature = "bulkhead")),
        allow(dead_code)
    )]
    pub(crate) fn limit(&self) -> u32 {
        self.limit.load(SeqCst)
    }

    pub(crate) fn in_flight(&self) -> u32 {
        held(self.counts.load(SeqCst))
    }

    pub(crate) fn queued(&self) -> usize {
        queued(self.counts.load(SeqCst)) as usize
    }

    /// Neither held nor waited on: safe to forget.
    #[cfg_attr(not(feature = "bulkhead"), allow(dead_code))]
    pub(crate) fn is_idle(&self) -> bool {
        self.counts.load(SeqCst) == 0
    }

    #[inline]
    fn release(&self) {
        // One atomic step, no lock while nobody waits. With waiters, the
        // lock is taken after: whoever decided against a free permit in
        // between is still queued, and is served by this dispatch.
        let before = self.counts.fetch_sub(ONE_HELD, SeqCst);
        if queued(before) != 0 || self.watched.load(SeqCst) {
            self.release_slow(queued(before) != 0);
        }
    }

    #[cold]
    #[inline(never)]
    fn release_slow(&self, waiters: bool) {
        let mut state = self.lock();
        if waiters {
            self.dispatch(&mut state);
        }
        self.wake_ready(&mut state);
    }

    // Gives a permit back with the lock held: to the next waiter if any.
    fn release_locked(&self, state: &mut State) {
        self.counts.fetch_sub(ONE_HELD, SeqCst);
        self.dispatch(state);
        self.wake_ready(state);
    }

    fn wake_ready(&self, state: &mut State) {
        self.watched.store(false, SeqCst);
        state.wake_ready();
    }

    // Hands free permits to waiters, highest class first. With the lock
    // held, only releases change the counts (they take the lock after).
    fn dispatch(&self, state: &mut State) {
        let limit = self.limit.load(SeqCst);
        let counts = self.counts.load(SeqCst);
        if queued(counts) == 0 || held(counts) >= limit {
            return;
        }
        let order = state.queue.map_or(QueueOrder::Fifo, |q| q.order);
        let now = Instant::now();
        let codel = match order {
            QueueOrder::AdaptiveLifo(codel) => Some(codel),
            QueueOrder::Fifo => None,
        };
        loop {
            let counts = self.counts.load(SeqCst);
            if queued(counts) == 0 || held(counts) >= limit {
                break;
            }
            let standing = codel.is_some_and(|c| now - state.last_empty > c.interval);
            if let Some(codel) = codel {
                // The longest a waiter may have stood: the target once the
                // queue stands, else the interval. Within a class the front
                // is the oldest, so the stale are a prefix.
                let allowed = if standing {
                    codel.target
                } else {
                    codel.interval
                };
                for waiters in &mut state.classes {
                    while waiters.front().is_some_and(|w| now - w.since > allowed) {
                        let stale = waiters.pop_front().expect("front checked above");
                        let _ = stale.grant.send(Grant::Shed(Reason::Stale));
                        self.counts.fetch_sub(ONE_QUEUED, SeqCst);
                    }
                }
            }
            let Some(waiters) = state.classes.iter_mut().rev().find(|w| !w.is_empty()) else {
                break;
            };
            let next = if standing {
                waiters.pop_back()
            } else {
                waiters.pop_front()
            }
            .expect("a non-empty class");
            // A waiter removes itself under the lock before its receiver is
            // gone, so a failed send only means a leaked (forgotten) future.
            if next.grant.send(Grant::Permit).is_ok() {
                // One step from queued to held: no lock-free path may see
                // the queue empty with the permit still free.
                self.counts.fetch_sub(ONE_QUEUED - ONE_HELD, SeqCst);
            } else {
                self.counts.fetch_sub(ONE_QUEUED, SeqCst);
            }
        }
        if queued(self.counts.load(SeqCst)) == 0 {
            state.last_empty = now;
        }
    }

    // Takes a waiter out of the queue; false when it was already granted or
    // shed (its answer is in its channel).
    fn unqueue(&self, state: &mut State, class: usize, id: u64) -> bool {
        let waiters = &mut state.classes[class];
        // Ids grow along a class, so a binary search finds it.
        let Ok(at) = waiters.binary_search_by_key(&id, |w| w.id) else {
            return false;
        };
        waiters.remove(at);
        let counts = self.counts.fetch_sub(ONE_QUEUED, SeqCst) - ONE_QUEUED;
        if queued(counts) == 0 {
            state.last_empty = Instant::now();
        }
        self.wake_ready(state);
        true
    }
}

/// A queued request: await [`wait`](Self::wait), or drop it to leave the
/// queue.
#[derive(Debug)]
pub(crate) struct Waiting {
    gate: Arc<Gate>,
    id: u64,
    class: usize,
    since: Instant,
    max_wait: std::time::Duration,
    receiver: oneshot::Receiver<Grant>,
    done: bool,
}

impl Waiting {
    pub(crate) async fn wait(mut self) -> Result<Permit, Reason> {
        // A wait too long for an `Instant` is no bound.
        let until = self.since.checked_add(self.max_wait);
        let granted = match until {
            Some(until) => tokio::time::timeout_at(until, &mut self.receiver)
                .await
                .ok(),
            None => Some((&mut self.receiver).await),
        };
        let grant = match granted {
            Some(Ok(grant)) => grant,
            // The sender lives in the queue until it answers.
            Some(Err(_)) => Grant::Shed(Reason::Waited),
            None => {
                let gate = self.gate.clone();
                let mut state = gate.lock();
                if gate.unqueue(&mut state, self.class, self.id) {
                    Grant::Shed(Reason::Waited)
                } else {
                    // Answered as the wait ran out: take the answer.
                    self.receiver
                        .try_recv()
                        .unwrap_or(Grant::Shed(Reason::Waited))
                }
            }
        };
        self.done = true;
        match grant {
            Grant::Permit => Ok(Permit {
                gate: Some(self.gate.clone()),
            }),
            Grant::Shed(reason) => Err(reason),
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let gate = self.gate.clone();
        let mut state = gate.lock();
        if gate.unqueue(&mut state, self.class, self.id) {
            return;
        }
        // Granted before the holder went away: pass the permit on.
        if let Ok(Grant::Permit) = self.receiver.try_recv() {
            gate.release_locked(&mut state);
        }
    }
}

/// One permit of a gate, released when dropped. A `NeverShed` request holds
/// one that counts nowhere.
#[derive(Debug)]
pub(crate) struct Permit {
    gate: Option<Arc<Gate>>,
}

impl Drop for Permit {
    #[inline]
    fn drop(&mut self) {
        if let Some(gate) = self.gate.take() {
            gate.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::FutureExt;

    use super::*;

    fn queue(len: usize, wait_ms: u64) -> Option<Queue> {
        Some(Queue::new(len, Duration::from_millis(wait_ms)).unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn refuses_at_once_without_a_queue() {
        let gate = Gate::new(1, None);
        let held = gate.acquire(Priority::Normal).await.unwrap();
        assert_eq!(
            gate.acquire(Priority::Critical).await.unwrap_err(),
            Reason::Full
        );
        drop(held);
        assert!(gate.acquire(Priority::Normal).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_gets_the_released_permit_and_none_is_lost() {
        let gate = Gate::new(1, queue(4, 100));
        let held = gate.acquire(Priority::Normal).await.unwrap();
        let waiter = tokio::spawn({
            let gate = gate.clone();
            async move { gate.acquire(Priority::Normal).await.map(|_| ()) }
        });
        tokio::task::yield_now().await;
        assert_eq!(gate.queued(), 1);
        drop(held);
        assert_eq!(waiter.await.unwrap(), Ok(()));
        assert_eq!(gate.in_flight(), 0);
        assert!(gate.is_idle());
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_a_granted_but_unpolled_waiter_passes_the_permit_on() {
        let gate = Gate::new(1, queue(4, 100));
        let held = gate.acquire(Priority::Normal).await.unwrap();
        let mut first = Box::pin(gate.acquire(Priority::Normal));
        assert!((&mut first).now_or_never().is_none());
        let second = tokio::spawn({
            let gate = gate.clone();
            async move { gate.acquire(Priority::Normal).await.map(|_| ()) }
        });
        tokio::task::yield_now().await;
        drop(held); // granted to `first`, which is never polled again
        drop(first);
        assert_eq!(second.await.unwrap(), Ok(()));
        assert!(gate.is_idle());
    }
}

/// Threads racing the lock-free paths against the locked ones: never more
/// than the limit held, nobody left waiting, nothing left at the end.
#[cfg(test)]
mod race {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::load_shed::{Queue, QueueOrder};

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn many_threads_never_exceed_the_limit_nor_strand_a_waiter() {
        for order in [
            QueueOrder::Fifo,
            QueueOrder::AdaptiveLifo(Default::default()),
        ] {
            let queue = Queue::new(8, Duration::from_secs(30)).unwrap().order(order);
            let gate = Gate::new(3, Some(queue));
            let holding = Arc::new(AtomicU32::new(0));
            let most = Arc::new(AtomicU32::new(0));
            let granted = Arc::new(AtomicU32::new(0));
            let mut tasks = Vec::new();
            for t in 0..16u32 {
                let (gate, holding, most, granted) =
                    (gate.clone(), holding.clone(), most.clone(), granted.clone());
                tasks.push(tokio::spawn(async move {
                    for i in 0..2_000u32 {
                        let priority = [Priority::Sheddable, Priority::Normal, Priority::Critical]
                            [((t + i) % 3) as usize];
                        if let Ok(permit) = gate.acquire(priority).await {
                            granted.fetch_add(1, Ordering::SeqCst);
                            let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            if i % 7 == 0 {
                                tokio::task::yield_now().await;
                            }
                            holding.fetch_sub(1, Ordering::SeqCst);
                            drop(permit);
                        }
                    }
                }));
            }
            let all = futures::future::join_all(tasks);
            // A stranded waiter would hang: the bound only guards the suite.
            let done = tokio::time::timeout(Duration::from_secs(120), all).await;
            assert!(done.is_ok(), "a waiter was stranded: {:?}", gate);
            assert!(
                most.load(Ordering::SeqCst) <= 3,
                "{} held at once",
                most.load(Ordering::SeqCst)
            );
            assert!(granted.load(Ordering::SeqCst) > 0);
            assert!(
                gate.is_idle(),
                "{} held, {} queued",
                gate.in_flight(),
                gate.queued()
            );
        }
    }
}

/// A random walk of arrivals, completions, hang-ups and time against the
/// gate's promises: never more than the limit in flight, no waiter while a
/// permit is free, every permit and queue place accounted for, and nothing
/// left once everyone is gone.
#[cfg(test)]
mod model {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use proptest::prelude::*;
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

    use super::*;
    use crate::load_shed::{CoDel, Queue, QueueOrder};

    #[derive(Debug, Clone)]
    enum Op {
        Arrive(u8),
        Finish(usize),
        HangUp(usize),
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..4).prop_map(Op::Arrive),
            3 => any::<usize>().prop_map(Op::Finish),
            2 => any::<usize>().prop_map(Op::HangUp),
            2 => (0u64..30).prop_map(Op::Advance),
        ]
    }

    fn priority(p: u8) -> Priority {
        [
            Priority::Sheddable,
            Priority::Normal,
            Priority::Critical,
            Priority::NeverShed,
        ][usize::from(p)]
    }

    struct Count(Arc<AtomicU32>);

    impl Count {
        fn new(holding: Arc<AtomicU32>) -> Self {
            holding.fetch_add(1, Ordering::SeqCst);
            Self(holding)
        }
    }

    impl Drop for Count {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    struct Caller {
        task: JoinHandle<()>,
        finish: Option<oneshot::Sender<()>>,
    }

    async fn settle() {
        for _ in 0..8 {
            tokio::task::yield_now().await;
        }
    }

    fn run(limit: u32, len: usize, lifo: bool, ops: Vec<Op>) -> Result<(), TestCaseError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut queue = Queue::new(len, Duration::from_millis(40)).unwrap();
            if lifo {
                let codel =
                    CoDel::new(Duration::from_millis(5), Duration::from_millis(20)).unwrap();
                queue = queue.order(QueueOrder::AdaptiveLifo(codel));
            }
            let gate = Gate::new(limit, Some(queue));
            // Counted holders, as the tasks themselves see it.
            let holding = Arc::new(AtomicU32::new(0));
            let mut callers: HashMap<usize, Caller> = HashMap::new();
            let mut next = 0usize;
            for op in ops {
                match op {
                    Op::Arrive(p) => {
                        let (finish, finished) = oneshot::channel::<()>();
                        let gate = gate.clone();
                        let holding = holding.clone();
                        let priority = priority(p);
                        let task = tokio::spawn(async move {
                            if let Ok(permit) = gate.acquire(priority).await {
                                // Counted until the task ends, aborted or not.
                                let _count =
                                    (priority != Priority::NeverShed).then(|| Count::new(holding));
                                let _ = finished.await;
                                drop(permit);
                            }
                        });
                        callers.insert(
                            next,
                            Caller {
                                task,
                                finish: Some(finish),
                            },
                        );
                        next += 1;
                    }
                    Op::Finish(i) if !callers.is_empty() => {
                        let key = *callers.keys().nth(i % callers.len()).unwrap();
                        if let Some(finish) = callers.get_mut(&key).unwrap().finish.take() {
                            let _ = finish.send(());
                        }
                    }
                    Op::HangUp(i) if !callers.is_empty() => {
                        let key = *callers.keys().nth(i % callers.len()).unwrap();
                        let caller = callers.remove(&key).unwrap();
                        caller.task.abort();
                        let _ = caller.task.await;
                    }
                    Op::Advance(ms) => tokio::time::advance(Duration::from_millis(ms)).await,
                    _ => {}
                }
                settle().await;
                callers.retain(|_, c| !c.task.is_finished());
                let in_flight = gate.in_flight();
                let queued = gate.queued();
                prop_assert!(in_flight <= limit, "{in_flight} in flight over {limit}");
                prop_assert!(queued <= len);
                prop_assert!(
                    queued == 0 || in_flight == limit,
                    "{queued} waiting while {in_flight} of {limit} permits are held"
                );
                prop_assert_eq!(
                    holding.load(Ordering::SeqCst),
                    in_flight,
                    "every permit has a live holder"
                );
            }
            for (_, caller) in callers.drain() {
                caller.task.abort();
                let _ = caller.task.await;
            }
            settle().await;
            prop_assert!(
                gate.is_idle(),
                "{} in flight, {} queued",
                gate.in_flight(),
                gate.queued()
            );
            Ok(())
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn the_gate_keeps_its_promises(
            limit in 1u32..4,
            len in 1usize..4,
            lifo: bool,
            ops in prop::collection::vec(op(), 1..60),
        ) {
            run(limit, len, lifo, ops)?;
        }
    }
}
