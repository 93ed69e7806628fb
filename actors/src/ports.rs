//! Traits the runtime talks through (DESIGN.md §2): the clock and the tenant's data.
//!
//! Crm, Poller and Destination join this file when submission, polling and pull arrive.
//! The actors never touch sled directly: they go through [`TenantData`], which the real
//! store implements ([`SledTenantData`]) and an in-memory fake implements in unit tests.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::store::{
    Counts, EnqueueOutcome, Lane, LaneStat, NewEntry, Store, StoreError, TenantStore,
};

/// Wall-clock milliseconds since the Unix epoch. Everything that compares times (progress
/// timestamps, the budget window) reads it through this trait so tests can drive time.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> u64;
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        // A clock before 1970 is a broken host; 0 keeps arithmetic defined instead of panicking.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to (unit tests).
#[derive(Debug, Default)]
pub struct ManualClock {
    now_ms: AtomicU64,
}

impl ManualClock {
    pub fn new(start_ms: u64) -> ManualClock {
        ManualClock {
            now_ms: AtomicU64::new(start_ms),
        }
    }
    pub fn advance_ms(&self, delta_ms: u64) {
        self.now_ms.fetch_add(delta_ms, Ordering::SeqCst);
    }
    pub fn set_ms(&self, now_ms: u64) {
        self.now_ms.store(now_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}

/// A future the actors await on their own arbiter (no `Send` needed).
pub type LocalFuture<T> = Pin<Box<dyn Future<Output = T> + 'static>>;

/// What the tenant's actors need from the store. Kept narrow on purpose: every method here
/// is a dependency the fake must honour too.
pub trait TenantData: Send + Sync + 'static {
    fn tenant_id(&self) -> &str;
    /// Writes the entries (not yet durable).
    fn enqueue(&self, entries: Vec<NewEntry>) -> Result<Vec<EnqueueOutcome>, StoreError>;
    /// Resolves once everything written before the call is durable (group commit).
    fn durable(&self) -> LocalFuture<Result<(), StoreError>>;
    fn lane_stats(&self) -> [(Lane, LaneStat); 4];
    fn queued_total(&self) -> u64;
    fn counts(&self) -> Counts;
    /// Budget call log: calls recorded at or after `since_ms`.
    fn calls_since(&self, since_ms: u64) -> Result<u64, StoreError>;
}

/// The real store behind [`TenantData`].
#[derive(Clone)]
pub struct SledTenantData {
    pub store: Store,
    pub tenant_store: TenantStore,
}

impl TenantData for SledTenantData {
    fn tenant_id(&self) -> &str {
        self.tenant_store.tenant_id()
    }
    fn enqueue(&self, entries: Vec<NewEntry>) -> Result<Vec<EnqueueOutcome>, StoreError> {
        self.tenant_store.enqueue(entries)
    }
    fn durable(&self) -> LocalFuture<Result<(), StoreError>> {
        let store = self.store.clone();
        Box::pin(async move { store.durable().await })
    }
    fn lane_stats(&self) -> [(Lane, LaneStat); 4] {
        self.tenant_store.lane_stats()
    }
    fn queued_total(&self) -> u64 {
        self.tenant_store.queued_total()
    }
    fn counts(&self) -> Counts {
        self.tenant_store.counts()
    }
    fn calls_since(&self, since_ms: u64) -> Result<u64, StoreError> {
        self.tenant_store.calls_since(since_ms)
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! An in-memory [`TenantData`] for unit tests of the runtime (no sled, no flush).
    use std::collections::HashSet;
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    pub(crate) struct MemoryTenantData {
        pub tenant_id: String,
        inner: Mutex<MemoryInner>,
    }

    #[derive(Default)]
    struct MemoryInner {
        seen_keys: HashSet<String>,
        lanes: [LaneStat; 4],
        counts: Counts,
        next_seq: u64,
        calls_ms: Vec<u64>,
    }

    impl MemoryTenantData {
        pub(crate) fn new(tenant_id: &str) -> MemoryTenantData {
            MemoryTenantData {
                tenant_id: tenant_id.to_string(),
                inner: Mutex::default(),
            }
        }
        pub(crate) fn record_call(&self, at_ms: u64) {
            self.inner.lock().unwrap().calls_ms.push(at_ms);
        }
    }

    impl TenantData for MemoryTenantData {
        fn tenant_id(&self) -> &str {
            &self.tenant_id
        }
        fn enqueue(&self, entries: Vec<NewEntry>) -> Result<Vec<EnqueueOutcome>, StoreError> {
            let mut inner = self.inner.lock().unwrap();
            let mut outcomes = Vec::with_capacity(entries.len());
            for entry in entries {
                if !inner.seen_keys.insert(entry.idempotency_key.clone()) {
                    inner.counts.duplicates += 1;
                    outcomes.push(EnqueueOutcome::Duplicate);
                    continue;
                }
                inner.next_seq += 1;
                inner.counts.captured += 1;
                let lane = &mut inner.lanes[entry.lane as usize];
                lane.depth += 1;
                lane.oldest_enqueued_at_ms.get_or_insert(entry.now_ms);
                outcomes.push(EnqueueOutcome::Queued {
                    seq: inner.next_seq,
                });
            }
            Ok(outcomes)
        }
        fn durable(&self) -> LocalFuture<Result<(), StoreError>> {
            Box::pin(async { Ok(()) })
        }
        fn lane_stats(&self) -> [(Lane, LaneStat); 4] {
            let inner = self.inner.lock().unwrap();
            Lane::ALL.map(|lane| (lane, inner.lanes[lane as usize]))
        }
        fn queued_total(&self) -> u64 {
            self.inner
                .lock()
                .unwrap()
                .lanes
                .iter()
                .map(|lane| lane.depth)
                .sum()
        }
        fn counts(&self) -> Counts {
            self.inner.lock().unwrap().counts
        }
        fn calls_since(&self, since_ms: u64) -> Result<u64, StoreError> {
            Ok(self
                .inner
                .lock()
                .unwrap()
                .calls_ms
                .iter()
                .filter(|&&at| at >= since_ms)
                .count() as u64)
        }
    }
}
