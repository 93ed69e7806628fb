//! Typed accessors over a tenant's sections: records and aliases, lanes, dead letters,
//! checkpoints, the budget call log and alerts.

use std::ops::Bound;

use super::codec::{decode, encode};
use super::keys::{prefix_end, section};
use super::types::{
    CallMark, Checkpoint, DeadLetter, QueueEntry, RecordRef, RecordState, SyncState,
};
use super::{io_error, Alert, Lane, RecordKind, StoreError, TenantStore};

impl TenantStore {
    /// A record's sync state and history, by its own key.
    pub fn get_record(
        &self,
        kind: RecordKind,
        source: &str,
        source_id: &str,
    ) -> Result<Option<RecordState>, StoreError> {
        let inner = self.inner();
        inner.read(&inner.keys.record(kind, source, source_id))
    }

    /// The record an alias (event id, charge id…) points to.
    pub fn find_record_by_alias(&self, alias: &str) -> Result<Option<RecordState>, StoreError> {
        let inner = self.inner();
        let Some(reference) = inner.read::<RecordRef>(&inner.keys.alias(alias))? else {
            return Ok(None);
        };
        self.get_record(reference.kind, &reference.source, &reference.source_id)
    }

    /// Points `alias` at a record (a polled gift's fingerprint already alerted on, so its
    /// next re-read is quiet). Not flushed here: the caller's next flush carries it.
    pub fn add_alias(
        &self,
        alias: &str,
        kind: RecordKind,
        source: &str,
        source_id: &str,
    ) -> Result<(), StoreError> {
        let inner = self.inner();
        let _guard = inner.lock_for_write()?;
        let reference = encode(&super::types::RecordRef {
            kind,
            source: source.to_string(),
            source_id: source_id.to_string(),
        })?;
        inner
            .tree
            .insert(inner.keys.alias(alias), reference)
            .map_err(io_error)?;
        Ok(())
    }

    /// Moves a record to `to` with a history entry; `None` when the record does not exist.
    pub fn transition_record(
        &self,
        kind: RecordKind,
        source: &str,
        source_id: &str,
        to: SyncState,
        reason: &str,
        now_ms: u64,
    ) -> Result<Option<RecordState>, StoreError> {
        let inner = self.inner();
        let _guard = inner.lock_for_write()?;
        let key = inner.keys.record(kind, source, source_id);
        let Some(mut record) = inner.read::<RecordState>(&key)? else {
            return Ok(None);
        };
        record.transition(to, reason, now_ms, false);
        inner.tree.insert(key, encode(&record)?).map_err(io_error)?;
        Ok(Some(record))
    }

    /// Up to `limit` entries of a lane, oldest seq first.
    pub fn scan_lane(
        &self,
        lane: Lane,
        limit: usize,
    ) -> Result<Vec<(u64, QueueEntry)>, StoreError> {
        let inner = self.inner();
        inner.settle()?;
        let mut entries = Vec::new();
        for item in inner
            .tree
            .scan_prefix(inner.keys.lane_prefix(lane))
            .take(limit)
        {
            let (key, bytes) = item.map_err(io_error)?;
            let seq = inner
                .keys
                .seq_of_queue_key(&key)
                .ok_or_else(|| StoreError::Codec(format!("malformed queue key {key:?}")))?;
            entries.push((seq, decode(&bytes)?));
        }
        Ok(entries)
    }

    /// One queue entry, if still queued.
    pub fn get_queue_entry(&self, lane: Lane, seq: u64) -> Result<Option<QueueEntry>, StoreError> {
        let inner = self.inner();
        inner.read(&inner.keys.queue_entry(lane, seq))
    }

    pub fn put_dead_letter(&self, dead_letter: &DeadLetter) -> Result<(), StoreError> {
        let inner = self.inner();
        let _guard = inner.lock_for_write()?;
        inner
            .tree
            .insert(inner.keys.dead_letter(dead_letter.id), encode(dead_letter)?)
            .map_err(io_error)?;
        Ok(())
    }

    /// Dead letters ordered by id (oldest first).
    pub fn list_dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        let inner = self.inner();
        inner
            .tree
            .scan_prefix(inner.keys.section_prefix(section::DEAD_LETTER))
            .values()
            .map(|bytes| decode(&bytes.map_err(io_error)?))
            .collect()
    }

    pub fn get_dead_letter(&self, id: u64) -> Result<Option<DeadLetter>, StoreError> {
        let inner = self.inner();
        inner.read(&inner.keys.dead_letter(id))
    }

    /// Removes a dead letter; false when there was none.
    pub fn remove_dead_letter(&self, id: u64) -> Result<bool, StoreError> {
        let inner = self.inner();
        let _guard = inner.lock_for_write()?;
        Ok(inner
            .tree
            .remove(inner.keys.dead_letter(id))
            .map_err(io_error)?
            .is_some())
    }

    pub fn get_checkpoint(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let inner = self.inner();
        Ok(inner
            .read::<Checkpoint>(&inner.keys.checkpoint(name))?
            .map(|checkpoint| checkpoint.bytes))
    }

    /// Stores a checkpoint on its own. A checkpoint that must advance together with the
    /// entries it covers goes through [`TenantStore::enqueue_with_checkpoint`].
    pub fn put_checkpoint(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let inner = self.inner();
        let _guard = inner.lock_for_write()?;
        let value = encode(&Checkpoint {
            bytes: bytes.to_vec(),
        })?;
        inner
            .tree
            .insert(inner.keys.checkpoint(name), value)
            .map_err(io_error)?;
        Ok(())
    }

    /// Removes a checkpoint; true when there was one.
    pub fn remove_checkpoint(&self, name: &str) -> Result<bool, StoreError> {
        let inner = self.inner();
        let _guard = inner.lock_for_write()?;
        Ok(inner
            .tree
            .remove(inner.keys.checkpoint(name))
            .map_err(io_error)?
            .is_some())
    }

    /// Budget call log: record one Virtuous call at `at_ms`.
    pub fn record_call(&self, at_ms: u64) -> Result<(), StoreError> {
        let inner = self.inner();
        // A unique suffix, so two calls in one millisecond are two keys; no lock needed.
        let unique = inner.db.generate_id().map_err(io_error)?;
        inner
            .tree
            .insert(inner.keys.call(at_ms, unique), encode(&CallMark)?)
            .map_err(io_error)?;
        Ok(())
    }

    /// Calls recorded at or after `since_ms`.
    pub fn calls_since(&self, since_ms: u64) -> Result<u64, StoreError> {
        let inner = self.inner();
        let start = inner.keys.call(since_ms, 0);
        let end = prefix_end(&inner.keys.section_prefix(section::CALL_LOG));
        let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
        let mut count = 0;
        for item in inner
            .tree
            .range::<Vec<u8>, _>((Bound::Included(start), upper))
            .keys()
        {
            item.map_err(io_error)?;
            count += 1;
        }
        Ok(count)
    }

    /// Calls recorded in each of the `minutes` whole minutes that end at `now_ms`, oldest
    /// first (the status page's budget chart).
    pub fn calls_per_minute(&self, now_ms: u64, minutes: usize) -> Result<Vec<u64>, StoreError> {
        const MINUTE_MS: u64 = 60_000;
        if minutes == 0 {
            return Ok(Vec::new());
        }
        let mut counts = vec![0; minutes];
        let span_ms = MINUTE_MS * minutes as u64;
        let since_ms = now_ms.saturating_sub(span_ms);
        let inner = self.inner();
        let start = inner.keys.call(since_ms, 0);
        let end = prefix_end(&inner.keys.section_prefix(section::CALL_LOG));
        let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
        let time_at = inner.keys.section_prefix(section::CALL_LOG).len();
        for item in inner
            .tree
            .range::<Vec<u8>, _>((Bound::Included(start), upper))
            .keys()
        {
            let key = item.map_err(io_error)?;
            let Some(at_bytes) = key.get(time_at..time_at + 8) else {
                continue;
            };
            let at_ms = u64::from_be_bytes(at_bytes.try_into().unwrap_or_default());
            let minute = ((at_ms.saturating_sub(since_ms) / MINUTE_MS) as usize).min(minutes - 1);
            if let Some(count) = counts.get_mut(minute) {
                *count += 1;
            }
        }
        Ok(counts)
    }

    /// Removes call-log keys older than `before_ms`; returns how many were removed.
    pub fn prune_calls_before(&self, before_ms: u64) -> Result<u64, StoreError> {
        let inner = self.inner();
        let start = inner.keys.section_prefix(section::CALL_LOG);
        let end = inner.keys.call(before_ms, 0);
        let mut batch = sled::Batch::default();
        let mut removed = 0;
        for item in inner.tree.range(start..end).keys() {
            batch.remove(item.map_err(io_error)?);
            removed += 1;
        }
        inner.tree.apply_batch(batch).map_err(io_error)?;
        Ok(removed)
    }

    /// Raises (or bumps) an alert; returns true when it becomes open: the first time the code
    /// is raised, or again after it was resolved (reopened: `resolved_at` and `acked_at`
    /// cleared, the count goes on). A repeat while open only bumps the count and returns false.
    /// An alert that opens queues its notice for the sinks in the same write (`alert_outbox`).
    pub fn raise_alert(&self, code: &str, message: &str, now_ms: u64) -> Result<bool, StoreError> {
        let inner = self.inner();
        let _guard = inner.lock_for_write()?;
        let opens = inner.alert_space().raise(code, message, now_ms)?;
        // By code only: a tenant label here would add a series per code a tenant raised,
        // past the per-tenant series budget (docs/operations.md "Metrics"); per-tenant
        // alerts are in the tenant status.
        metrics::counter!(
            crate::metrics::ALERTS_TOTAL,
            crate::metrics::LABEL_CODE => code.to_owned()
        )
        .increment(1);
        Ok(opens)
    }

    pub fn alerts(&self) -> Result<Vec<Alert>, StoreError> {
        let inner = self.inner();
        inner
            .tree
            .scan_prefix(inner.keys.section_prefix(section::ALERT))
            .values()
            .map(|bytes| decode(&bytes.map_err(io_error)?))
            .collect()
    }

    /// Clears an alert (the operator fixed the cause); false when it was not raised.
    pub fn clear_alert(&self, code: &str) -> Result<bool, StoreError> {
        let inner = self.inner();
        let _guard = inner.lock_for_write()?;
        inner
            .tree
            .remove(inner.keys.alert_state(code))
            .map_err(io_error)?;
        Ok(inner
            .tree
            .remove(inner.keys.alert(code))
            .map_err(io_error)?
            .is_some())
    }

    /// Forgets idempotency keys first seen before `before_ms` (retention, ARCHITECTURE.md,
    /// "Invariants"); returns how many were forgotten. The records stay (their history is the audit
    /// trail); only their seen keys go. Scans every record: run it rarely (daily).
    pub fn prune_dedup_before(&self, before_ms: u64) -> Result<u64, StoreError> {
        const RECORDS_PER_BATCH_MAX: usize = 10_000;
        let inner = self.inner();
        // Records are rewritten: hold the write lock so no enqueue updates one in between.
        let _guard = inner.lock_for_write()?;
        let mut forgotten = 0;
        let mut batch = sled::Batch::default();
        let mut batched = 0;
        for item in inner
            .tree
            .scan_prefix(inner.keys.section_prefix(section::RECORD))
        {
            let (key, bytes) = item.map_err(io_error)?;
            let mut record: RecordState = decode(&bytes)?;
            let before = record.seen_keys.len();
            record
                .seen_keys
                .retain(|seen| seen.first_seen_at_ms >= before_ms);
            if record.seen_keys.len() == before {
                continue;
            }
            forgotten += (before - record.seen_keys.len()) as u64;
            batch.insert(key, encode(&record)?);
            batched += 1;
            if batched == RECORDS_PER_BATCH_MAX {
                inner
                    .tree
                    .apply_batch(std::mem::take(&mut batch))
                    .map_err(io_error)?;
                batched = 0;
            }
        }
        inner.tree.apply_batch(batch).map_err(io_error)?;
        Ok(forgotten)
    }
}
