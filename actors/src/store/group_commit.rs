//! Group commit: many writers, one `flush`, then answer them all (STYLE.md: sled writes are
//! only durable after a flush, and one flush covers the whole `Db`) — and group writes: the
//! same thread applies the enqueue batches submitted since its last cycle as ONE atomic sled
//! write (one `apply_batch`, or one transaction when they span several trees).
//!
//! Why group writes: in sled 0.34 every `apply_batch`/transaction pins the log, which seals
//! the current IO buffer and has a sled IO thread `pwrite` + `sync_file_range` it. That
//! per-call IO was most of the cost of an enqueue of one entry (benches/store.rs); merged,
//! it is paid once per cycle. Calls on the executor threads only prepare and submit.
//!
//! A cycle: take the submitted writes and the registered durability waiters together (under
//! one lock), apply the writes, publish "applied through ticket t", flush if anyone waits,
//! answer the waiters. A waiter registers after its writes were submitted, so the flush of
//! its cycle covers them. Flushes are numbered: a waiter that registers when `n` flushes have
//! started needs flush `n + 1`. A failed apply poisons the store (every later write, wait and
//! flush answers the error): the callers of that group were told `Queued` and must not
//! believe their entries exist. The thread is a dedicated std thread, never an executor.

// Size: over 500 lines with its inline tests; the production part is ~375.

use std::collections::HashMap;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::oneshot;

use super::gate::GatedTree;
use super::{io_error, StoreError};

/// The flush the thread runs (sled's `Db::flush` in production, a controllable hook in tests).
pub type FlushFn = Box<dyn FnMut() -> Result<(), StoreError> + Send>;

/// Flush counters, for benchmarks and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushStats {
    pub flushes_started: u64,
    pub flushes_completed: u64,
    /// Waiters answered (with success or error) so far.
    pub waiters_answered: u64,
    /// Time spent inside completed flushes.
    pub flush_micros_total: u64,
    /// Write groups applied, and the enqueue calls they held.
    pub groups_applied: u64,
    pub calls_applied: u64,
    /// Time spent applying write groups (sled inserts; single-threaded by sled's batch lock).
    pub apply_micros_total: u64,
}

/// One call's writes (inserts only) into one tree; applied atomically with its group.
pub(crate) struct TreeWrites {
    pub(crate) tree: GatedTree,
    pub(crate) inserts: Vec<(Vec<u8>, Vec<u8>)>,
}

struct Waiter {
    /// The number of the first flush that covers this waiter's writes.
    needs_flush: u64,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

#[derive(Default)]
struct State {
    stats: FlushStats,
    waiters: VecDeque<Waiter>,
    closing: bool,
    /// Submitted writes not yet taken by a cycle, in submission order.
    pending: Vec<TreeWrites>,
    /// Ticket of the last submitted write (tickets start at 1).
    submitted_through: u64,
    /// Set when a group failed to apply: the store takes no more writes.
    poisoned: Option<StoreError>,
}

pub(crate) struct Shared {
    state: Mutex<State>,
    work_available: Condvar,
    /// Every write with a ticket up to this one is applied (readable in sled).
    applied_through: AtomicU64,
    /// Signalled when `applied_through` moves or the store is poisoned.
    applied: Condvar,
}

impl Shared {
    /// Hands one call's writes to the writer thread; returns the call's ticket. The writes
    /// are applied (all or nothing) by the next cycle.
    pub(crate) fn submit(&self, writes: TreeWrites) -> Result<u64, StoreError> {
        let mut state = self.lock();
        if let Some(err) = &state.poisoned {
            return Err(err.clone());
        }
        if state.closing {
            return Err(StoreError::Closed);
        }
        state.pending.push(writes);
        state.submitted_through += 1;
        let ticket = state.submitted_through;
        drop(state);
        self.work_available.notify_one();
        Ok(ticket)
    }

    /// Blocks until every write up to `ticket` is applied (read-your-writes for readers and
    /// for writers that bypass the write groups). Returns at once when nothing is pending.
    pub(crate) fn wait_applied(&self, ticket: u64) -> Result<(), StoreError> {
        if self.applied_through.load(Ordering::Acquire) >= ticket {
            return Ok(());
        }
        let mut state = self.lock();
        loop {
            if let Some(err) = &state.poisoned {
                return Err(err.clone());
            }
            if self.applied_through.load(Ordering::Acquire) >= ticket {
                return Ok(());
            }
            if state.closing && state.pending.is_empty() {
                return Err(StoreError::Closed);
            }
            state = self
                .applied
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    /// Blocks until everything submitted so far is applied.
    pub(crate) fn wait_all_applied(&self) -> Result<(), StoreError> {
        let ticket = self.lock().submitted_through;
        self.wait_applied(ticket)
    }

    pub(crate) fn applied_through(&self) -> u64 {
        self.applied_through.load(Ordering::Acquire)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave State half-updated in a way that
        // matters (counters and a queue), so keep serving rather than poisoning every writer.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The flusher: one std thread per store.
pub struct GroupCommit {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl GroupCommit {
    /// Starts the writer thread; its merged writes pass their trees' snapshot gates.
    pub(crate) fn start(flush: FlushFn) -> Result<GroupCommit, StoreError> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            work_available: Condvar::new(),
            applied_through: AtomicU64::new(0),
            applied: Condvar::new(),
        });
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("steward-store-flush".into())
            .spawn(move || run_flusher(&thread_shared, flush))
            .map_err(|err| StoreError::Io(format!("cannot start the flush thread: {err}")))?;
        Ok(GroupCommit {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The handle writers submit through.
    pub(crate) fn shared(&self) -> Arc<Shared> {
        Arc::clone(&self.shared)
    }

    /// Registers a waiter for the next flush that starts from now on. Synchronous, so the
    /// caller's writes made before this call are covered by the answer.
    pub fn register(&self) -> Result<oneshot::Receiver<Result<(), StoreError>>, StoreError> {
        let (reply, answer) = oneshot::channel();
        let mut state = self.shared.lock();
        if let Some(err) = &state.poisoned {
            return Err(err.clone());
        }
        if state.closing {
            return Err(StoreError::Closed);
        }
        let needs_flush = state.stats.flushes_started + 1;
        state.waiters.push_back(Waiter { needs_flush, reply });
        drop(state);
        self.shared.work_available.notify_one();
        Ok(answer)
    }

    /// Resolves once a flush that started after this call completed.
    pub async fn wait(&self) -> Result<(), StoreError> {
        let answer = self.register()?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    pub fn stats(&self) -> FlushStats {
        self.shared.lock().stats
    }

    /// The error that poisoned the store (a failed write group or flush), if any.
    pub fn poisoned(&self) -> Option<StoreError> {
        self.shared.lock().poisoned.clone()
    }

    /// Poisons the store as a failed flush would (tests of what a failed store does).
    #[cfg(test)]
    pub(crate) fn poison_for_test(&self, error: StoreError) {
        self.shared.lock().poisoned = Some(error);
    }

    /// Flushes for the waiters still registered, then stops the thread (idempotent).
    pub fn shutdown(&self) {
        self.shared.lock().closing = true;
        self.shared.work_available.notify_one();
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread {
            if thread.join().is_err() {
                tracing::error!("the store flush thread panicked");
            }
        }
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The writer thread's loop: take what was submitted, apply it as one group, flush when
/// somebody waits, answer the waiters the flush covers. The crash points sit between the
/// steps.
fn run_flusher(shared: &Shared, mut flush: FlushFn) {
    while let Some(taken) = take_work(shared) {
        if !taken.group.is_empty() {
            apply_taken_group(shared, taken.group, taken.group_through);
        }
        let Some(flush_number) = taken.flush_number else {
            continue;
        };
        let (result, flush_micros) = flush_once(shared, &mut flush, taken.waiting);
        if result.is_ok() {
            crate::failpoint::crash_point(crate::failpoint::AFTER_FLUSH_BEFORE_ACK);
        }
        answer_waiters(shared, flush_number, flush_micros, &result);
    }
}

/// One turn's work, taken under the lock.
struct TakenWork {
    group: Vec<TreeWrites>,
    /// The submission number the group reaches.
    group_through: u64,
    /// `Some` when somebody waits for durability: this turn's flush number.
    flush_number: Option<u64>,
    /// Waiters registered when the work was taken (the flush batch size metric).
    waiting: usize,
}

/// Waits until something was submitted or somebody waits; `None` once closing with
/// nothing left.
fn take_work(shared: &Shared) -> Option<TakenWork> {
    let mut state = shared.lock();
    while state.waiters.is_empty() && state.pending.is_empty() && !state.closing {
        state = shared
            .work_available
            .wait(state)
            .unwrap_or_else(|p| p.into_inner());
    }
    if state.waiters.is_empty() && state.pending.is_empty() {
        return None; // closing, nothing submitted and nobody waits
    }
    let group = std::mem::take(&mut state.pending);
    let flush_number = if state.waiters.is_empty() {
        None
    } else {
        state.stats.flushes_started += 1;
        Some(state.stats.flushes_started)
    };
    Some(TakenWork {
        group,
        group_through: state.submitted_through,
        flush_number,
        waiting: state.waiters.len(),
    })
}

/// Applies one group; a failure poisons the store.
fn apply_taken_group(shared: &Shared, group: Vec<TreeWrites>, group_through: u64) {
    let calls = group.len();
    let apply_started_at = Instant::now();
    let result = apply_group(group);
    let apply_micros = apply_started_at.elapsed().as_micros() as u64;
    let mut state = shared.lock();
    state.stats.groups_applied += 1;
    state.stats.calls_applied += calls as u64;
    state.stats.apply_micros_total += apply_micros;
    let applied = match result {
        Ok(()) => {
            shared
                .applied_through
                .store(group_through, Ordering::Release);
            true
        }
        Err(err) => {
            tracing::error!(error = %err, "applying a write group failed; the store refuses further writes");
            state.poisoned = Some(err);
            false
        }
    };
    drop(state);
    if applied {
        crate::failpoint::crash_point(crate::failpoint::AFTER_WRITE_BEFORE_FLUSH);
    }
    shared.applied.notify_all();
}

/// One flush (refused at once on a poisoned store). A panicking flush must not strand the
/// waiters (they would wait forever): it is reported to them as an error and the thread
/// lives on.
fn flush_once(
    shared: &Shared,
    flush: &mut FlushFn,
    waiting: usize,
) -> (Result<(), StoreError>, u64) {
    let started_at = Instant::now();
    let poisoned = shared.lock().poisoned.clone();
    let result = match poisoned {
        Some(err) => Err(err),
        None => std::panic::catch_unwind(std::panic::AssertUnwindSafe(&mut *flush))
            .unwrap_or_else(|_| Err(StoreError::Io("the store flush panicked".into()))),
    };
    let flush_seconds = started_at.elapsed().as_secs_f64();
    metrics::histogram!("steward_store_flush_seconds").record(flush_seconds);
    metrics::histogram!("steward_store_flush_batch_size").record(waiting as f64);
    if let Err(err) = &result {
        tracing::error!(error = %err, "store flush failed; writers are told their data is not durable");
    }
    (result, (flush_seconds * 1e6) as u64)
}

/// Answers every waiter the flush `flush_number` covers, with its result.
fn answer_waiters(
    shared: &Shared,
    flush_number: u64,
    flush_micros: u64,
    result: &Result<(), StoreError>,
) {
    let answered: Vec<Waiter> = {
        let mut state = shared.lock();
        // A failed flush poisons the store: after a failed fsync the kernel may have
        // dropped the dirty pages and marked them clean, so a later flush that succeeds
        // proves nothing about writes made before it. Without this, a retried source event
        // answered "duplicate" (its record is in memory) would be acknowledged after the
        // next flush although its data may never reach the disk.
        if let (Err(err), None) = (result, &state.poisoned) {
            state.poisoned = Some(err.clone());
        }
        state.stats.flushes_completed = flush_number;
        state.stats.flush_micros_total += flush_micros;
        let mut answered = Vec::new();
        while state
            .waiters
            .front()
            .is_some_and(|waiter| waiter.needs_flush <= flush_number)
        {
            answered.extend(state.waiters.pop_front());
        }
        state.stats.waiters_answered += answered.len() as u64;
        answered
    };
    for waiter in answered {
        // A waiter that stopped waiting (dropped future) is not an error.
        let _ = waiter.reply.send(result.clone());
    }
}

/// Applies a group atomically: one `apply_batch` when it touches one tree, else one
/// transaction over its trees (sled pins the log once either way). Later writes of a key
/// win over earlier ones, as in submission order.
fn apply_group(group: Vec<TreeWrites>) -> Result<(), StoreError> {
    let mut tree_index: HashMap<sled::IVec, usize> = HashMap::new();
    let mut gated: Vec<GatedTree> = Vec::new();
    let mut batches: Vec<sled::Batch> = Vec::new();
    for writes in group {
        let index = *tree_index
            .entry(writes.tree.raw().name())
            .or_insert_with(|| {
                gated.push(writes.tree.clone());
                batches.push(sled::Batch::default());
                gated.len() - 1
            });
        for (key, value) in writes.inserts {
            batches[index].insert(key, value);
        }
    }
    // Each tree's gate, once (the trees are distinct): a snapshot copying one of them holds
    // the group back until it is done.
    let _passes: Vec<_> = gated.iter().map(|tree| tree.gate().pass()).collect();
    let trees: Vec<sled::Tree> = gated.iter().map(|tree| tree.raw().clone()).collect();
    // A panic inside sled must not strand the writers waiting for this group.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if trees.len() == 1 {
            let batch = batches.pop().unwrap_or_default();
            return trees[0].apply_batch(batch).map_err(io_error);
        }
        use sled::transaction::{TransactionError, Transactional};
        trees
            .as_slice()
            .transaction(|views| {
                // Writes only, no reads: nothing to conflict with, so no re-run.
                for (view, batch) in views.iter().zip(&batches) {
                    view.apply_batch(batch)?;
                }
                Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|err| match err {
                TransactionError::Storage(err) => io_error(err),
                TransactionError::Abort(()) => StoreError::Io("a write group aborted".into()),
            })
    }))
    .unwrap_or_else(|_| Err(StoreError::Io("applying a write group panicked".into())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::mpsc;
    use std::time::Duration;

    /// A flush hook the test holds open: each flush announces itself, then waits for release.
    fn gated_flush() -> (
        FlushFn,
        mpsc::Receiver<u64>,
        mpsc::Sender<()>,
        Arc<AtomicU64>,
    ) {
        let (started_tx, started_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let completed = Arc::new(AtomicU64::new(0));
        let completed_in_hook = Arc::clone(&completed);
        let mut number = 0;
        let flush: FlushFn = Box::new(move || {
            number += 1;
            started_tx.send(number).unwrap();
            release_rx
                .recv_timeout(Duration::from_secs(10))
                .expect("test releases the flush");
            completed_in_hook.store(number, Ordering::SeqCst);
            Ok(())
        });
        (flush, started_rx, release_tx, completed)
    }

    fn recv(rx: &mpsc::Receiver<u64>) -> u64 {
        rx.recv_timeout(Duration::from_secs(10))
            .expect("a flush starts within the deadline")
    }

    fn wait_answer(rx: &mut oneshot::Receiver<Result<(), StoreError>>) -> Result<(), StoreError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match rx.try_recv() {
                Ok(result) => return result,
                Err(oneshot::error::TryRecvError::Empty) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(err) => panic!("no answer before the deadline: {err:?}"),
            }
        }
    }

    #[test]
    fn a_waiter_registered_during_a_flush_waits_for_the_next_one() {
        // Goal: waiters are answered only after a flush that began after they registered.
        let (flush, started, release, completed) = gated_flush();
        let group = GroupCommit::start(flush).unwrap();

        let mut early = group.register().unwrap();
        assert_eq!(recv(&started), 1);
        // Flush 1 is running: a waiter registered now must not be answered by it.
        let mut late = group.register().unwrap();
        assert!(
            early.try_recv().is_err(),
            "not answered before flush 1 completes"
        );
        release.send(()).unwrap();
        wait_answer(&mut early).unwrap();
        assert_eq!(completed.load(Ordering::SeqCst), 1);

        // Flush 2 starts for `late`; until it completes `late` stays unanswered.
        assert_eq!(recv(&started), 2);
        assert!(
            late.try_recv().is_err(),
            "flush 1 must not answer a waiter that registered during it"
        );
        release.send(()).unwrap();
        wait_answer(&mut late).unwrap();
        assert_eq!(completed.load(Ordering::SeqCst), 2);
        let stats = group.stats();
        assert_eq!((stats.flushes_completed, stats.waiters_answered), (2, 2));
    }

    #[test]
    fn many_waiters_share_one_flush() {
        // Goal: waiters registered while idle are all answered by a single flush.
        let (flush, started, release, _completed) = gated_flush();
        let group = GroupCommit::start(flush).unwrap();
        let mut first = group.register().unwrap();
        assert_eq!(recv(&started), 1);
        release.send(()).unwrap();
        wait_answer(&mut first).unwrap();

        // Hold the next flush so the registrations below pile up behind it.
        let mut blocker = group.register().unwrap();
        assert_eq!(recv(&started), 2);
        let mut batch: Vec<_> = (0..50).map(|_| group.register().unwrap()).collect();
        release.send(()).unwrap();
        wait_answer(&mut blocker).unwrap();
        assert_eq!(recv(&started), 3);
        release.send(()).unwrap();
        for answer in &mut batch {
            wait_answer(answer).unwrap();
        }
        assert_eq!(group.stats().flushes_completed, 3);
    }

    #[test]
    fn a_panicking_flush_answers_its_waiters_with_an_error_and_poisons_the_store() {
        // Goal: a flush that panics reports an error to its waiters (none waits forever), and
        // the store stays poisoned: a later flush that succeeds must not report durability.
        let mut calls = 0;
        let group = GroupCommit::start(Box::new(move || {
            calls += 1;
            if calls == 1 {
                panic!("simulated flush panic");
            }
            Ok(())
        }))
        .unwrap();
        let mut first = group.register().unwrap();
        assert!(
            matches!(wait_answer(&mut first), Err(StoreError::Io(m)) if m.contains("panicked"))
        );
        assert!(
            matches!(group.register(), Err(StoreError::Io(m)) if m.contains("panicked")),
            "after a failed flush nothing is reported durable again"
        );
    }

    #[test]
    fn flush_errors_reach_every_waiter_and_shutdown_refuses_new_ones() {
        // Goal: a failed flush is reported to its waiters and poisons the store; after
        // shutdown, registration on a healthy store is Closed.
        let group =
            GroupCommit::start(Box::new(|| Err(StoreError::Io("disk full".into())))).unwrap();
        let mut answer = group.register().unwrap();
        assert!(matches!(wait_answer(&mut answer), Err(StoreError::Io(m)) if m == "disk full"));
        assert!(
            matches!(group.register(), Err(StoreError::Io(m)) if m == "disk full"),
            "the store stays poisoned after a failed flush"
        );
        let healthy = GroupCommit::start(Box::new(|| Ok(()))).unwrap();
        let mut answer = healthy.register().unwrap();
        wait_answer(&mut answer).unwrap();
        healthy.shutdown();
        assert!(matches!(healthy.register(), Err(StoreError::Closed)));
    }

    #[test]
    fn a_failed_group_poisons_the_store() {
        // Goal: when a group cannot be applied, its writers, waiters and later writes get errors.
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let good = GatedTree::new(db.open_tree("good").unwrap(), Arc::default());
        let doomed = GatedTree::new(db.open_tree("doomed").unwrap(), Arc::default());
        assert!(db.drop_tree("doomed").unwrap());
        let group = GroupCommit::start(Box::new(|| Ok(()))).unwrap();
        let shared = group.shared();
        let ticket = shared
            .submit(TreeWrites {
                tree: doomed,
                inserts: vec![(b"k".to_vec(), b"v".to_vec())],
            })
            .unwrap();
        assert!(
            shared.wait_applied(ticket).is_err(),
            "the dropped tree cannot take writes"
        );
        // The poison is set before wait_applied answers: no durability from now on.
        assert!(
            group.register().is_err(),
            "no durability after a failed group"
        );
        assert!(shared
            .submit(TreeWrites {
                tree: good.clone(),
                inserts: vec![(b"k".to_vec(), b"v".to_vec())],
            })
            .is_err());
        assert!(
            good.raw().is_empty(),
            "a poisoned store applies nothing more"
        );
    }
}
