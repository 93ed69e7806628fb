//! Group commit: many writers, one `flush`, then answer them all (STYLE.md: sled writes are
//! only durable after a flush, and one flush covers the whole `Db`).
//!
//! Flushes are numbered. A waiter that registers when `n` flushes have started needs flush
//! `n + 1`: if flush `n` is running it may have begun before the waiter's write, so it does
//! not count. The blocking flush runs on a dedicated std thread, never on an executor thread.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::oneshot;

use super::StoreError;

/// The flush the thread runs (sled's `Db::flush` in production, a controllable hook in tests).
pub type FlushFn = Box<dyn FnMut() -> Result<(), StoreError> + Send>;

/// Flush counters, for benchmarks and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushStats {
    pub flushes_started: u64,
    pub flushes_completed: u64,
    /// Waiters answered (with success or error) so far.
    pub waiters_answered: u64,
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
}

struct Shared {
    state: Mutex<State>,
    work_available: Condvar,
}

impl Shared {
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
    pub fn start(flush: FlushFn) -> Result<GroupCommit, StoreError> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            work_available: Condvar::new(),
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

    /// Registers a waiter for the next flush that starts from now on. Synchronous, so the
    /// caller's writes made before this call are covered by the answer.
    pub fn register(&self) -> Result<oneshot::Receiver<Result<(), StoreError>>, StoreError> {
        let (reply, answer) = oneshot::channel();
        let mut state = self.shared.lock();
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

fn run_flusher(shared: &Shared, mut flush: FlushFn) {
    loop {
        let (flush_number, batch_size) = {
            let mut state = shared.lock();
            while state.waiters.is_empty() && !state.closing {
                state = shared
                    .work_available
                    .wait(state)
                    .unwrap_or_else(|p| p.into_inner());
            }
            if state.waiters.is_empty() {
                return; // closing and nobody waits
            }
            state.stats.flushes_started += 1;
            (state.stats.flushes_started, state.waiters.len())
        };

        let started_at = Instant::now();
        let result = flush();
        let flush_seconds = started_at.elapsed().as_secs_f64();
        metrics::histogram!("steward_store_flush_seconds").record(flush_seconds);
        metrics::histogram!("steward_store_flush_batch_size").record(batch_size as f64);
        if let Err(err) = &result {
            tracing::error!(error = %err, "store flush failed; writers are told their data is not durable");
        }

        let answered: Vec<Waiter> = {
            let mut state = shared.lock();
            state.stats.flushes_completed = flush_number;
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
    fn flush_errors_reach_every_waiter_and_shutdown_refuses_new_ones() {
        // Goal: a failed flush is reported to its waiters; after shutdown registration is Closed.
        let group =
            GroupCommit::start(Box::new(|| Err(StoreError::Io("disk full".into())))).unwrap();
        let mut answer = group.register().unwrap();
        assert!(matches!(wait_answer(&mut answer), Err(StoreError::Io(m)) if m == "disk full"));
        group.shutdown();
        assert!(matches!(group.register(), Err(StoreError::Closed)));
    }
}
