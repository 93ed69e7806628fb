//! One tenant's key space: enqueue (dedup + record state + counters in one atomic write,
//! applied by the store's writer thread) and the in-memory gauges (lane depths, oldest ages,
//! counters) rebuilt at open.

// Size: over 500 lines — the tenant's open (gauges rebuilt from the store) and the one
// enqueue write share the same private state.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::alert_outbox::{AlertOutbox, AlertSpace, NoticeOwner};
use super::codec::{decode, encode};
use super::group_commit::{Shared, TreeWrites};
use super::keys::{section, KeySpace};
use super::types::{EntryFact, QueueEntry, RecordRef, RecordState, SyncState};
use super::{io_error, Counts, EnqueueOutcome, Lane, LaneStat, NewEntry, StoreError, TenantStore};

/// "No entry" in an oldest-age gauge.
const NO_ENTRY: u64 = u64::MAX;

#[derive(Default)]
pub(crate) struct LaneGauge {
    depth: AtomicU64,
    oldest_enqueued_at_ms: AtomicU64,
}

/// Counters readable without the write lock; written only while holding it.
#[derive(Default)]
pub(crate) struct CountCells {
    captured: AtomicU64,
    duplicates: AtomicU64,
    submitted: AtomicU64,
    confirmed: AtomicU64,
    dead: AtomicU64,
    needs_review: AtomicU64,
}

impl CountCells {
    pub(crate) fn load(&self) -> Counts {
        Counts {
            captured: self.captured.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            submitted: self.submitted.load(Ordering::Relaxed),
            confirmed: self.confirmed.load(Ordering::Relaxed),
            dead: self.dead.load(Ordering::Relaxed),
            needs_review: self.needs_review.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn store(&self, counts: Counts) {
        self.captured.store(counts.captured, Ordering::Relaxed);
        self.duplicates.store(counts.duplicates, Ordering::Relaxed);
        self.submitted.store(counts.submitted, Ordering::Relaxed);
        self.confirmed.store(counts.confirmed, Ordering::Relaxed);
        self.dead.store(counts.dead, Ordering::Relaxed);
        self.needs_review
            .store(counts.needs_review, Ordering::Relaxed);
    }
}

/// State guarded by a tenant's write lock.
#[derive(Default)]
pub(crate) struct WriteState {
    /// Records written by submitted enqueue calls, with the call's ticket, until the writer
    /// thread applied them: the next enqueue's dedup check must see them before sled does.
    pending_records: HashMap<Vec<u8>, (u64, RecordState)>,
}

/// One enqueue call's writes, gathered under the tenant's write lock and handed to the
/// writer thread as one atomic write ([`TenantStore::enqueue_batch`]).
struct EnqueueCall<'a> {
    inner: &'a TenantInner,
    /// Records of calls submitted but not yet applied: newer than what sled has.
    pending_records: &'a HashMap<Vec<u8>, (u64, RecordState)>,
    /// Records touched by this call (record key → (state, `None`: no record yet; changed)),
    /// so two entries for one record in one call both land in its history and see each
    /// other's idempotency keys. Only records that gained an entry are written.
    records: HashMap<Vec<u8>, (Option<RecordState>, bool)>,
    /// This call's writes, applied atomically (with other calls') by the writer thread.
    inserts: Vec<(Vec<u8>, Vec<u8>)>,
    outcomes: Vec<EnqueueOutcome>,
    counts: Counts,
    /// Per lane: (entries added, oldest enqueue time among them).
    lane_additions: [(u64, u64); 4],
}

impl<'a> EnqueueCall<'a> {
    fn new(
        inner: &'a TenantInner,
        pending_records: &'a HashMap<Vec<u8>, (u64, RecordState)>,
        entry_count: usize,
    ) -> Self {
        EnqueueCall {
            inner,
            pending_records,
            records: HashMap::new(),
            inserts: Vec::new(),
            outcomes: Vec::with_capacity(entry_count),
            counts: inner.counts.load(),
            lane_additions: [(0, NO_ENTRY); 4],
        }
    }

    /// One entry: a duplicate only counts; a new one gets a seq, its record's transition,
    /// its aliases and its queue entry.
    fn add(&mut self, entry: NewEntry, hold_until_ms: Option<u64>) -> Result<(), StoreError> {
        let NewEntry {
            fact,
            aliases,
            now_ms,
        } = entry;
        let Some(seq) = self.note_in_record(&fact, now_ms)? else {
            self.counts.duplicates += 1;
            self.outcomes.push(EnqueueOutcome::Duplicate);
            return Ok(());
        };
        let keys = &self.inner.keys;
        if !aliases.is_empty() {
            let reference = encode(&RecordRef {
                kind: fact.kind,
                source: fact.source.clone(),
                source_id: fact.source_id.clone(),
            })?;
            for alias in &aliases {
                self.inserts.push((keys.alias(alias), reference.clone()));
            }
        }
        self.counts.captured += 1;
        let addition = &mut self.lane_additions[fact.lane as usize];
        addition.0 += 1;
        addition.1 = addition.1.min(now_ms);
        self.outcomes.push(EnqueueOutcome::Queued { seq });
        // The fact moves into the stored value (no copy of the body).
        let queue_key = keys.queue_entry(fact.lane, seq);
        let queue_entry = QueueEntry {
            fact,
            attempts: 0,
            enqueued_at_ms: now_ms,
            not_before_ms: hold_until_ms.map_or(now_ms, |until| until.max(now_ms)),
        };
        self.inserts.push((queue_key, encode(&queue_entry)?));
        Ok(())
    }

    /// Records the fact in its record: `None` when the record has seen its idempotency key
    /// (the record is the dedup mark, invariant 3: a key names one record), else the new
    /// entry's seq, with the record pending on it.
    fn note_in_record(&mut self, fact: &EntryFact, now_ms: u64) -> Result<Option<u64>, StoreError> {
        let inner = self.inner;
        let record_key = inner.keys.record(fact.kind, &fact.source, &fact.source_id);
        // The donor email's index key, written with the record (`store::record_index`).
        let email_index = super::record_index::email_of_body(&fact.body_json).map(|email| {
            inner
                .keys
                .record_index(section::RECORD_BY_EMAIL, &email, &record_key)
        });
        let (record, changed) = match self.records.entry(record_key) {
            Entry::Occupied(occupied) => occupied.into_mut(),
            Entry::Vacant(vacant) => {
                // Newest first: submitted but unapplied, else what sled has.
                let stored = match self.pending_records.get(vacant.key()) {
                    Some((_, record)) => Some(record.clone()),
                    None => inner.read_unsettled::<RecordState>(vacant.key())?,
                };
                vacant.insert((stored, false))
            }
        };
        if record
            .as_ref()
            .is_some_and(|record| record.has_seen(&fact.idempotency_key))
        {
            return Ok(None);
        }
        let seq = inner.db.generate_id().map_err(io_error)?;
        *changed = true;
        let is_new = record.is_none();
        let record = record.get_or_insert_with(|| {
            RecordState::new(
                fact.kind,
                &fact.source,
                &fact.source_id,
                &fact.idempotency_key,
            )
        });
        record.idempotency_key.clone_from(&fact.idempotency_key);
        record.remember_key(&fact.idempotency_key, now_ms);
        record.last_seq = Some(seq);
        record.transition(SyncState::Pending, "enqueued", now_ms, is_new);
        if let Some(index_key) = email_index {
            self.inserts.push((index_key, Vec::new()));
        }
        Ok(Some(seq))
    }

    /// Adds the records that gained an entry to the writes (a record that only met
    /// duplicates is unchanged and not rewritten) and returns them, keyed.
    fn write_changed_records(&mut self) -> Result<Vec<(Vec<u8>, RecordState)>, StoreError> {
        let mut changed_records = Vec::new();
        for (record_key, (record, changed)) in std::mem::take(&mut self.records) {
            if let (Some(record), true) = (record, changed) {
                self.inserts.push((record_key.clone(), encode(&record)?));
                changed_records.push((record_key, record));
            }
        }
        Ok(changed_records)
    }
}

pub(crate) struct TenantInner {
    pub(crate) tenant_id: String,
    /// For `generate_id` (monotonic seqs across the whole `Db`).
    pub(crate) db: sled::Db,
    pub(crate) tree: super::gate::GatedTree,
    pub(crate) keys: KeySpace,
    /// Serialises read-check-write sequences (dedup, record history, counters, alerts), and
    /// holds the records of enqueue calls submitted but not yet applied.
    write_lock: Mutex<WriteState>,
    /// The store's writer thread (enqueue writes are applied there, in groups).
    writer: Arc<Shared>,
    /// Ticket of this tenant's last submitted enqueue: readers wait until it is applied.
    last_ticket: AtomicU64,
    lanes: [LaneGauge; 4],
    pub(crate) counts: CountCells,
    /// Set by `Store::drop_tenant_data`: writes through old handles are refused.
    dropped: AtomicBool,
    /// Where alert changes queue their notices (shared by the whole store).
    alert_outbox: Arc<AlertOutbox>,
}

impl TenantStore {
    /// Opens a tenant's key space and rebuilds its gauges: counters from their key, lane
    /// depths and oldest ages from a prefix scan of the queue section (never `Tree::len`).
    pub(crate) fn open(
        db: sled::Db,
        tree: super::gate::GatedTree,
        keys: KeySpace,
        tenant_id: &str,
        writer: Arc<Shared>,
        alert_outbox: Arc<AlertOutbox>,
    ) -> Result<TenantStore, StoreError> {
        let inner = TenantInner {
            tenant_id: tenant_id.to_owned(),
            db,
            tree,
            keys,
            write_lock: Mutex::new(WriteState::default()),
            writer,
            last_ticket: AtomicU64::new(0),
            lanes: Default::default(),
            counts: CountCells::default(),
            dropped: AtomicBool::new(false),
            alert_outbox,
        };
        for lane in Lane::ALL {
            let (depth, oldest) = inner.scan_lane_gauge(lane)?;
            inner.lanes[lane as usize]
                .depth
                .store(depth, Ordering::Relaxed);
            inner.lanes[lane as usize]
                .oldest_enqueued_at_ms
                .store(oldest, Ordering::Relaxed);
        }
        if let Some(bytes) = inner.tree.get(inner.keys.counts()).map_err(io_error)? {
            inner.counts.store(decode(&bytes)?);
        }
        Ok(TenantStore {
            inner: Arc::new(inner),
        })
    }

    pub(crate) fn inner(&self) -> &TenantInner {
        &self.inner
    }

    pub fn tenant_id(&self) -> &str {
        &self.inner.tenant_id
    }

    /// Atomically writes each new entry, its record state (which is also the entry's dedup
    /// mark), its aliases and the counters; duplicates are reported and write nothing but the
    /// duplicate counter. The writes are handed to the store's writer thread, which applies
    /// them (all or nothing, merged with concurrent calls) in its next cycle; this handle's
    /// reads and other writes wait for that. Not durable — and not certainly written: a
    /// failed apply poisons the store — until `Store::durable` resolves `Ok`.
    pub fn enqueue(&self, entries: Vec<NewEntry>) -> Result<Vec<EnqueueOutcome>, StoreError> {
        self.enqueue_batch(entries, None, None)
    }

    /// [`TenantStore::enqueue`] plus a checkpoint advance in the same atomic batch (polling:
    /// the high-water mark moves only together with the entries it covers).
    pub fn enqueue_with_checkpoint(
        &self,
        entries: Vec<NewEntry>,
        checkpoint_name: &str,
        checkpoint: &[u8],
    ) -> Result<Vec<EnqueueOutcome>, StoreError> {
        self.enqueue_batch(entries, Some((checkpoint_name, checkpoint)), None)
    }

    /// [`TenantStore::enqueue`] with an optional checkpoint advance; `hold_until_ms`: the
    /// entries are not ready before then (held entries, `hold_ops.rs`); `None` = ready at once.
    /// Dedup, records, aliases, counters and the checkpoint go into one atomic write under
    /// one lock: an [`EnqueueCall`] gathers them, the writer thread applies them.
    pub(crate) fn enqueue_batch(
        &self,
        entries: Vec<NewEntry>,
        checkpoint: Option<(&str, &[u8])>,
        hold_until_ms: Option<u64>,
    ) -> Result<Vec<EnqueueOutcome>, StoreError> {
        let inner = &*self.inner;
        // No settling here: this call must not wait for the writer thread.
        let mut guard = inner.lock_for_enqueue()?;
        let applied_through = inner.writer.applied_through();
        guard
            .pending_records
            .retain(|_, (ticket, _)| *ticket > applied_through);

        let mut call = EnqueueCall::new(inner, &guard.pending_records, entries.len());
        for entry in entries {
            call.add(entry, hold_until_ms)?;
        }
        let changed_records = call.write_changed_records()?;
        if let Some((name, bytes)) = checkpoint {
            call.inserts.push((
                inner.keys.checkpoint(name),
                encode(&super::types::Checkpoint {
                    bytes: bytes.to_vec(),
                })?,
            ));
        }
        call.inserts
            .push((inner.keys.counts(), encode(&call.counts)?));
        let EnqueueCall {
            inserts,
            outcomes,
            counts,
            lane_additions,
            ..
        } = call;
        let ticket = inner.writer.submit(TreeWrites {
            tree: inner.tree.clone(),
            inserts,
        })?;
        inner.last_ticket.store(ticket, Ordering::Release);
        if checkpoint.is_some() {
            crate::failpoint::crash_point(crate::failpoint::CHECKPOINT_ADVANCE);
        }
        for (record_key, record) in changed_records {
            guard.pending_records.insert(record_key, (ticket, record));
        }

        // Gauges count submitted entries (readers settle before reading the lanes).
        inner.counts.store(counts);
        inner.adjust_lane_gauges(lane_additions, [0; 4])?;
        Ok(outcomes)
    }

    pub fn lane_stats(&self) -> [(Lane, LaneStat); 4] {
        Lane::ALL.map(|lane| {
            let gauge = &self.inner.lanes[lane as usize];
            let depth = gauge.depth.load(Ordering::Relaxed);
            let oldest = gauge.oldest_enqueued_at_ms.load(Ordering::Relaxed);
            let oldest_enqueued_at_ms = (depth > 0 && oldest != NO_ENTRY).then_some(oldest);
            (
                lane,
                LaneStat {
                    depth,
                    oldest_enqueued_at_ms,
                },
            )
        })
    }

    /// Entries in all lanes.
    pub fn queued_total(&self) -> u64 {
        self.inner
            .lanes
            .iter()
            .map(|gauge| gauge.depth.load(Ordering::Relaxed))
            .sum()
    }

    pub fn counts(&self) -> Counts {
        self.inner.counts.load()
    }

    /// Adds `delta` to the counters and persists them (submitted, confirmed, dead… are
    /// counted by the engine as records move).
    pub fn add_counts(&self, delta: Counts) -> Result<Counts, StoreError> {
        let inner = &*self.inner;
        let _guard = inner.lock_for_write()?;
        let mut counts = inner.counts.load();
        counts.captured += delta.captured;
        counts.duplicates += delta.duplicates;
        counts.submitted += delta.submitted;
        counts.confirmed += delta.confirmed;
        counts.dead += delta.dead;
        counts.needs_review += delta.needs_review;
        inner
            .tree
            .insert(inner.keys.counts(), encode(&counts)?)
            .map_err(io_error)?;
        inner.counts.store(counts);
        Ok(counts)
    }

    /// Removes queue entries (completed or dead-lettered) and updates the lane gauges. Every
    /// queue removal must go through here so the in-memory depths stay exact.
    pub fn remove_queue_entries(&self, entries: &[(Lane, u64)]) -> Result<usize, StoreError> {
        let inner = &*self.inner;
        let _guard = inner.lock_for_write()?;
        let mut removed_per_lane = [0u64; 4];
        let mut batch = sled::Batch::default();
        let mut unique = HashSet::new();
        for &(lane, seq) in entries {
            let key = inner.keys.queue_entry(lane, seq);
            // Only count keys that exist, once: removing twice must not drive the depth below truth.
            if unique.insert((lane, seq)) && inner.tree.contains_key(&key).map_err(io_error)? {
                removed_per_lane[lane as usize] += 1;
                batch.remove(key);
            }
        }
        inner.tree.apply_batch(batch).map_err(io_error)?;
        for lane in Lane::ALL {
            let removed = removed_per_lane[lane as usize];
            if removed > 0 {
                let gauge = &inner.lanes[lane as usize];
                gauge.depth.fetch_sub(removed, Ordering::Relaxed);
                let oldest = inner.oldest_near_lane_head(lane)?;
                gauge.oldest_enqueued_at_ms.store(oldest, Ordering::Relaxed);
            }
        }
        Ok(removed_per_lane.iter().sum::<u64>() as usize)
    }

    /// Marks the handle dropped and resets its gauges (called by `Store::drop_tenant_data`
    /// while holding the write lock via the returned guard).
    pub(crate) fn mark_dropped(&self) -> Result<MutexGuard<'_, WriteState>, StoreError> {
        let guard = self.inner.lock_for_write()?;
        self.inner.dropped.store(true, Ordering::SeqCst);
        for gauge in &self.inner.lanes {
            gauge.depth.store(0, Ordering::Relaxed);
            gauge
                .oldest_enqueued_at_ms
                .store(NO_ENTRY, Ordering::Relaxed);
        }
        self.inner.counts.store(Counts::default());
        Ok(guard)
    }
}

impl TenantInner {
    /// Takes the write lock once this tenant's submitted enqueues are applied (writes that
    /// bypass the write groups must not race them); a dropped tenant refuses writes.
    pub(crate) fn lock_for_write(&self) -> Result<MutexGuard<'_, WriteState>, StoreError> {
        let guard = self.lock_for_enqueue()?;
        self.settle()?;
        Ok(guard)
    }

    /// Takes the write lock without waiting for the writer thread (enqueue only).
    fn lock_for_enqueue(&self) -> Result<MutexGuard<'_, WriteState>, StoreError> {
        let guard = self
            .write_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if self.dropped.load(Ordering::SeqCst) {
            return Err(StoreError::Closed);
        }
        Ok(guard)
    }

    /// The tenant's alerts and their notices (callers hold the write lock).
    pub(crate) fn alert_space(&self) -> AlertSpace<'_> {
        AlertSpace {
            owner: NoticeOwner::Tenant(self.tenant_id.clone()),
            db: &self.db,
            tree: &self.tree,
            keys: &self.keys,
            outbox: &self.alert_outbox,
        }
    }

    /// The counters as last written (queue_ops reads them under the write lock).
    pub(crate) fn load_counts(&self) -> Counts {
        self.counts.load()
    }

    /// Publishes counters written by a batch applied under the write lock (queue_ops).
    pub(crate) fn store_counts(&self, counts: Counts) {
        self.counts.store(counts);
    }

    /// Keeps the lane gauges exact after a queue batch submitted or applied under the write
    /// lock (enqueue adds entries; completion moves them between lanes and removes them).
    /// `added[lane] = (entries, oldest enqueue time)`, `removed[lane] = entries`.
    pub(crate) fn adjust_lane_gauges(
        &self,
        added: [(u64, u64); 4],
        removed: [u64; 4],
    ) -> Result<(), StoreError> {
        for lane in Lane::ALL {
            let gauge = &self.lanes[lane as usize];
            let (count, oldest_added) = added[lane as usize];
            let gone = removed[lane as usize];
            if count > 0 {
                gauge.depth.fetch_add(count, Ordering::Relaxed);
            }
            if gone > 0 {
                gauge.depth.fetch_sub(gone, Ordering::Relaxed);
                let oldest = self.oldest_near_lane_head(lane)?;
                gauge.oldest_enqueued_at_ms.store(oldest, Ordering::Relaxed);
            }
            if count > 0 {
                gauge
                    .oldest_enqueued_at_ms
                    .fetch_min(oldest_added, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Waits until this tenant's submitted enqueues are applied (read-your-writes). Free
    /// when nothing is pending; otherwise at most one writer cycle.
    pub(crate) fn settle(&self) -> Result<(), StoreError> {
        self.writer
            .wait_applied(self.last_ticket.load(Ordering::Acquire))
    }

    /// Reads a value after settling (sees every enqueue submitted before).
    pub(crate) fn read<T: super::codec::Versioned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        self.settle()?;
        self.read_unsettled(key)
    }

    pub(crate) fn read_unsettled<T: super::codec::Versioned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        match self.tree.get(key).map_err(io_error)? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// (depth, oldest enqueue time) of a lane by scanning its keys.
    fn scan_lane_gauge(&self, lane: Lane) -> Result<(u64, u64), StoreError> {
        let mut depth = 0;
        let mut oldest = NO_ENTRY;
        for item in self.tree.scan_prefix(self.keys.lane_prefix(lane)) {
            let (_, bytes) = item.map_err(io_error)?;
            let entry: QueueEntry = decode(&bytes)?;
            depth += 1;
            oldest = oldest.min(entry.enqueued_at_ms);
        }
        Ok((depth, oldest))
    }

    /// The oldest enqueue time among the first entries of a lane. Entries are appended in
    /// seq order with the caller's clock, so the head of the lane is (nearly always) the
    /// oldest; a bounded look-ahead covers entries re-queued with their original time.
    fn oldest_near_lane_head(&self, lane: Lane) -> Result<u64, StoreError> {
        const LOOK_AHEAD: usize = 64;
        let mut oldest = NO_ENTRY;
        for item in self
            .tree
            .scan_prefix(self.keys.lane_prefix(lane))
            .take(LOOK_AHEAD)
        {
            let (_, bytes) = item.map_err(io_error)?;
            let entry: QueueEntry = decode(&bytes)?;
            oldest = oldest.min(entry.enqueued_at_ms);
        }
        Ok(oldest)
    }

    /// Counts the keys of one section (for tests and rebuild checks; a full section scan).
    #[cfg(test)]
    pub(crate) fn count_section(&self, section_byte: u8) -> Result<u64, StoreError> {
        self.settle()?;
        let mut count = 0;
        for item in self
            .tree
            .scan_prefix(self.keys.section_prefix(section_byte))
            .keys()
        {
            item.map_err(io_error)?;
            count += 1;
        }
        Ok(count)
    }
}
