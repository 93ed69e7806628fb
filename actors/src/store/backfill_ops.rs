//! Backfill jobs in the store (docs/backfill.md): the job document (checkpoint
//! `backfill:{id}`, JSON), its rejected rows, and the index of its queued entries that its
//! progress is recounted from.
//!
//! A chunk of a running job goes in with [`TenantStore::enqueue_backfill_chunk`]: its entries
//! and the job document (cursor, counts) in one atomic write, so a crash repeats a chunk (the
//! entries are then duplicates) and never skips one. Rejects and the row index are written
//! just before (same keys again on a repeat).

use std::ops::Bound;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::codec::{decode, encode};
use super::keys::{prefix_end, section};
use super::types::{Checkpoint, RecordRef, RecordState};
use super::{io_error, EnqueueOutcome, EntryFact, NewEntry, StoreError, SyncState, TenantStore};

/// Checkpoint-name prefix of job documents (`backfill:{id}`).
pub const JOB_CHECKPOINT_PREFIX: &str = "backfill:";

/// The checkpoint name of job `id`.
pub fn job_checkpoint(id: &str) -> String {
    format!("{JOB_CHECKPOINT_PREFIX}{id}")
}

/// A rejected row (stored; the first `backfill::INLINE_REJECTS_MAX` are shown inline).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedRow {
    pub row: u64,
    pub reason: String,
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|err| StoreError::Codec(format!("backfill: {err}")))
}

fn from_json<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|err| StoreError::Codec(format!("{what}: {err}")))
}

/// Where a job's entries stand, recounted from their records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackfillRecount {
    /// Entries indexed (queued by the job).
    pub entries: u64,
    /// Still to send (pending, retrying, waiting for their gift).
    pub waiting: u64,
    /// Accepted by Virtuous, not yet confirmed.
    pub submitted: u64,
    /// Confirmed (or found as a duplicate, or handed to review; reversals and contacts once
    /// accepted: they have no confirmation step).
    pub confirmed: u64,
    pub dead: u64,
}

impl TenantStore {
    /// Job `id`, if any. (The job's type, `backfill::BackfillJob`, lives above the store:
    /// the store only keeps its JSON.)
    pub fn backfill_job<J: DeserializeOwned>(&self, id: &str) -> Result<Option<J>, StoreError> {
        self.get_checkpoint(&job_checkpoint(id))?
            .map(|bytes| from_json("backfill job", &bytes))
            .transpose()
    }

    /// Every job, by id.
    pub fn backfill_jobs<J: DeserializeOwned>(&self) -> Result<Vec<J>, StoreError> {
        let inner = self.inner();
        inner.settle()?;
        let prefix = inner.keys.checkpoint(JOB_CHECKPOINT_PREFIX);
        let mut jobs = Vec::new();
        for item in inner.tree.scan_prefix(prefix).values() {
            let checkpoint: Checkpoint = decode(&item.map_err(io_error)?)?;
            jobs.push(from_json("backfill job", &checkpoint.bytes)?);
        }
        Ok(jobs)
    }

    /// Stores a job document on its own (state changes, dry-run progress).
    pub fn put_backfill_job<J: Serialize>(&self, id: &str, job: &J) -> Result<(), StoreError> {
        self.put_checkpoint(&job_checkpoint(id), &to_json(job)?)
    }

    /// Enqueues a chunk's entries and stores the job document in the same atomic write.
    pub fn enqueue_backfill_chunk<J: Serialize>(
        &self,
        id: &str,
        job: &J,
        entries: Vec<NewEntry>,
    ) -> Result<Vec<EnqueueOutcome>, StoreError> {
        self.enqueue_with_checkpoint(entries, &job_checkpoint(id), &to_json(job)?)
    }

    /// Whether the store already has this fact (its record saw the idempotency key): the dry
    /// run's "already known".
    pub fn is_known(&self, fact: &EntryFact) -> Result<bool, StoreError> {
        let inner = self.inner();
        let record: Option<RecordState> =
            inner.read(&inner.keys.record(fact.kind, &fact.source, &fact.source_id))?;
        Ok(record.is_some_and(|record| record.has_seen(&fact.idempotency_key)))
    }

    /// Stores rejected rows of job `id` (idempotent: a row's key is its number).
    pub fn put_backfill_rejects(
        &self,
        id: &str,
        rejects: &[RejectedRow],
    ) -> Result<(), StoreError> {
        if rejects.is_empty() {
            return Ok(());
        }
        let inner = self.inner();
        let _guard = inner.lock_for_write()?;
        let mut batch = sled::Batch::default();
        for reject in rejects {
            let key =
                inner
                    .keys
                    .source_key(section::BACKFILL_REJECT, id, &reject.row.to_be_bytes());
            batch.insert(key, to_json(reject)?);
        }
        inner.tree.apply_batch(batch).map_err(io_error)
    }

    /// Rejected rows of job `id` after row `after_row`, in row order, at most `limit`.
    pub fn backfill_rejects(
        &self,
        id: &str,
        after_row: u64,
        limit: usize,
    ) -> Result<Vec<RejectedRow>, StoreError> {
        let inner = self.inner();
        let prefix = inner.keys.source_key(section::BACKFILL_REJECT, id, &[]);
        let start = inner.keys.source_key(
            section::BACKFILL_REJECT,
            id,
            &after_row.saturating_add(1).to_be_bytes(),
        );
        let upper = prefix_end(&prefix).map_or(Bound::Unbounded, Bound::Excluded);
        let mut rows = Vec::new();
        for item in inner
            .tree
            .range::<Vec<u8>, _>((Bound::Included(start), upper))
            .values()
            .take(limit)
        {
            rows.push(from_json("backfill reject", &item.map_err(io_error)?)?);
        }
        Ok(rows)
    }

    /// Indexes entries job `id` queued (`(row, entry index in the row, record)`), for
    /// [`TenantStore::backfill_recount`]. Idempotent.
    pub fn put_backfill_rows(
        &self,
        id: &str,
        rows: &[(u64, u8, RecordRef)],
    ) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let inner = self.inner();
        let _guard = inner.lock_for_write()?;
        let mut batch = sled::Batch::default();
        for (row, index, record) in rows {
            let mut tail = row.to_be_bytes().to_vec();
            tail.push(*index);
            let key = inner.keys.source_key(section::BACKFILL_ROW, id, &tail);
            batch.insert(key, encode(record)?);
        }
        inner.tree.apply_batch(batch).map_err(io_error)
    }

    /// Recounts where job `id`'s queued entries stand from their records (a scan of the
    /// job's index: run it off the actor's thread for a large job).
    pub fn backfill_recount(&self, id: &str) -> Result<BackfillRecount, StoreError> {
        let inner = self.inner();
        inner.settle()?;
        let prefix = inner.keys.source_key(section::BACKFILL_ROW, id, &[]);
        let mut recount = BackfillRecount::default();
        for item in inner.tree.scan_prefix(prefix).values() {
            let reference: RecordRef = decode(&item.map_err(io_error)?)?;
            recount.entries += 1;
            let record: Option<RecordState> = inner.read_unsettled(&inner.keys.record(
                reference.kind,
                &reference.source,
                &reference.source_id,
            ))?;
            match record.map(|record| record.state) {
                // Reversals and contacts have no confirmation step (Virtuous names no
                // transaction for them): accepted is as far as they go.
                Some(SyncState::Submitted) if reference.kind != super::RecordKind::Gift => {
                    recount.confirmed += 1
                }
                Some(SyncState::Submitted) => recount.submitted += 1,
                Some(
                    SyncState::Confirmed
                    | SyncState::DuplicateDetected
                    | SyncState::NeedsReview
                    | SyncState::InSync,
                ) => recount.confirmed += 1,
                Some(SyncState::Dead) => recount.dead += 1,
                // Still in a lane (or not yet written: the chunk's write is on its way).
                Some(SyncState::Pending | SyncState::Retrying | SyncState::WaitingForGift)
                | None => recount.waiting += 1,
                // Left the queue (a two-way state of a contact the job updated).
                Some(_) => recount.submitted += 1,
            }
        }
        Ok(recount)
    }
}
