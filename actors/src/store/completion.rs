//! The steps of [`TenantStore::complete_leased`](super::TenantStore::complete_leased): one
//! sled batch built result by result, then committed with the counters, the lane gauges and
//! the lease release.

use std::collections::{HashMap, HashSet};

use super::codec::{decode, encode};
use super::queue_ops::{Completion, CompletionReport, LeaseTable, LeasedEntry};
use super::types::{DeadLetter, QueueEntry, RecordState, SyncState, Unconfirmed};
use super::{io_error, Lane, RecordKind, StoreError};
use crate::retry::{RetryDecision, RetryPolicy};

/// One `complete_leased` call in progress: the sled batch it builds and what it changed.
pub(super) struct Completing<'a> {
    inner: &'a super::tenant::TenantInner,
    now_ms: u64,
    batch: sled::Batch,
    report: CompletionReport,
    counts: super::Counts,
    /// Per lane: (entries added, oldest enqueue time among them), for the lane gauges.
    added: [(u64, u64); 4],
    removed: [u64; 4],
    records: HashMap<Vec<u8>, RecordState>,
    /// One history entry per record and completion, even for merged entries.
    transitioned: HashSet<Vec<u8>>,
    done_keys: Vec<(Lane, u64)>,
    /// Money facts of accepted gifts and reversals, in the same batch (`money_ops.rs`).
    money: super::money_ops::MoneyWrites,
}

impl<'a> Completing<'a> {
    pub(super) fn new(inner: &'a super::tenant::TenantInner, now_ms: u64) -> Completing<'a> {
        Completing {
            inner,
            now_ms,
            batch: sled::Batch::default(),
            report: CompletionReport::default(),
            counts: inner.load_counts(),
            added: [(0u64, u64::MAX); 4],
            removed: [0u64; 4],
            records: HashMap::new(),
            transitioned: HashSet::new(),
            done_keys: Vec::new(),
            money: super::money_ops::MoneyWrites::default(),
        }
    }

    /// The stored entry of a result this generation may apply; `None` (counted) for a stale
    /// lease, a second result for one entry, or an entry removed meanwhile.
    pub(super) fn admit(
        &mut self,
        leases: &LeaseTable,
        generation: u64,
        leased: &LeasedEntry,
    ) -> Result<Option<QueueEntry>, StoreError> {
        if !leases.held_by(generation, leased.key()) {
            self.report.refused_stale += 1;
            return Ok(None);
        }
        // Two results for one entry would apply both (e.g. submitted AND queued for a
        // retry): the caller's contract is one result per entry; enforce it.
        if self.done_keys.contains(&leased.key()) {
            self.report.repeated += 1;
            return Ok(None);
        }
        self.done_keys.push(leased.key());
        let queue_key = self.inner.keys.queue_entry(leased.lane, leased.seq);
        let Some(bytes) = self.inner.tree.get(&queue_key).map_err(io_error)? else {
            self.report.missing += 1;
            return Ok(None);
        };
        Ok(Some(decode(&bytes)?))
    }

    /// Applies one result to the batch.
    pub(super) fn apply(
        &mut self,
        leased: &LeasedEntry,
        entry: QueueEntry,
        completion: Completion,
        retry: &RetryPolicy,
        rng_value: f64,
    ) -> Result<(), StoreError> {
        let record_key = self.load_record(&entry)?;
        match completion {
            Completion::Accepted => self.accepted(leased, &entry, &record_key)?,
            Completion::Retry {
                reason,
                status,
                retry_after_ms,
            } => {
                let decision = retry.decide(entry.attempts, retry_after_ms, rng_value, self.now_ms);
                match decision {
                    RetryDecision::RetryAt {
                        attempts,
                        not_before_ms,
                    } => {
                        self.retry_at(leased, entry, &record_key, attempts, not_before_ms, &reason)?
                    }
                    RetryDecision::DeadLetter { attempts } => {
                        let reason =
                            format!("retries exhausted after {attempts} attempts; last: {reason}");
                        let mut entry = entry;
                        entry.attempts = attempts;
                        self.dead(leased, entry, &record_key, attempts, reason, status)?
                    }
                }
            }
            Completion::Requeue { not_before_ms } => {
                self.requeue(leased, entry, not_before_ms)?;
                self.report.requeued += 1;
            }
            Completion::Dead { reason, status } => {
                let attempts = entry.attempts.saturating_add(1);
                self.dead(leased, entry, &record_key, attempts, reason, status)?
            }
            Completion::WaitForGift { recheck_at_ms } => {
                self.requeue(leased, entry, recheck_at_ms)?;
                let record = self.records.get_mut(&record_key).expect("loaded");
                if record.state != SyncState::WaitingForGift {
                    record.transition(
                        SyncState::WaitingForGift,
                        "the gift has no Virtuous id yet",
                        self.now_ms,
                        false,
                    );
                    self.transitioned.insert(record_key);
                }
                self.report.waiting_for_gift += 1;
            }
            Completion::Release => self.report.released += 1,
        }
        Ok(())
    }

    /// Loads the entry's record state once per call (a new one if none is stored yet).
    fn load_record(&mut self, entry: &QueueEntry) -> Result<Vec<u8>, StoreError> {
        let record_key =
            self.inner
                .keys
                .record(entry.fact.kind, &entry.fact.source, &entry.fact.source_id);
        if !self.records.contains_key(&record_key) {
            let stored = self
                .inner
                .read::<RecordState>(&record_key)?
                .unwrap_or_else(|| {
                    RecordState::new(
                        entry.fact.kind,
                        &entry.fact.source,
                        &entry.fact.source_id,
                        &entry.fact.idempotency_key,
                    )
                });
            self.records.insert(record_key.clone(), stored);
        }
        Ok(record_key)
    }

    fn move_record(&mut self, record_key: &[u8], to: SyncState, reason: &str) {
        let record = self.records.get_mut(record_key).expect("loaded");
        if self.transitioned.insert(record_key.to_vec()) || record.state != to {
            record.transition(to, reason, self.now_ms, false);
        }
    }

    fn remove_from_queue(&mut self, leased: &LeasedEntry) {
        self.batch
            .remove(self.inner.keys.queue_entry(leased.lane, leased.seq));
        self.removed[leased.lane as usize] += 1;
    }

    /// The entry stays where it is, not ready before `not_before_ms`.
    fn requeue(
        &mut self,
        leased: &LeasedEntry,
        mut entry: QueueEntry,
        not_before_ms: u64,
    ) -> Result<(), StoreError> {
        entry.not_before_ms = not_before_ms;
        self.batch.insert(
            self.inner.keys.queue_entry(leased.lane, leased.seq),
            encode(&entry)?,
        );
        Ok(())
    }

    /// Submitted: off the queue, and (except refunds) into the unconfirmed index.
    fn accepted(
        &mut self,
        leased: &LeasedEntry,
        entry: &QueueEntry,
        record_key: &[u8],
    ) -> Result<(), StoreError> {
        self.remove_from_queue(leased);
        self.move_record(record_key, SyncState::Submitted, "accepted by Virtuous");
        self.counts.submitted += 1;
        self.report.accepted += 1;
        // Accepted money is what reconciliation compares with Virtuous; in this batch, so a
        // crash keeps both or neither (a re-send records the same fact again).
        match entry.fact.kind {
            RecordKind::Gift => {
                self.money
                    .gift_accepted(self.inner, &mut self.batch, &entry.fact)?
            }
            RecordKind::Refund => {
                self.money
                    .reversal_accepted(self.inner, &mut self.batch, &entry.fact)?;
                return Ok(());
            }
            RecordKind::Contact => {}
        }
        let keys = &self.inner.keys;
        let index_key =
            keys.unconfirmed(entry.fact.kind, &entry.fact.source, &entry.fact.source_id);
        // A re-send keeps the first acceptance time.
        let submitted_at_ms = match self.inner.tree.get(&index_key).map_err(io_error)? {
            Some(bytes) => decode::<Unconfirmed>(&bytes)?.submitted_at_ms,
            None => self.now_ms,
        };
        let unconfirmed = Unconfirmed {
            kind: entry.fact.kind,
            source: entry.fact.source.clone(),
            source_id: entry.fact.source_id.clone(),
            transaction_source: entry.fact.transaction_source.clone(),
            transaction_id: entry.fact.source_id.clone(),
            submitted_at_ms,
        };
        self.batch.insert(index_key, encode(&unconfirmed)?);
        Ok(())
    }

    /// Another attempt later, in the retry lane (same seq: the record's order survives); a
    /// backfill entry stays in the backfill lane (history never jumps ahead of live retries,
    /// and keeps to the backfill's share).
    fn retry_at(
        &mut self,
        leased: &LeasedEntry,
        mut entry: QueueEntry,
        record_key: &[u8],
        attempts: u32,
        not_before_ms: u64,
        reason: &str,
    ) -> Result<(), StoreError> {
        entry.attempts = attempts;
        entry.not_before_ms = not_before_ms;
        let lane = if leased.lane == Lane::Backfill {
            Lane::Backfill
        } else {
            Lane::Retry
        };
        if leased.lane != lane {
            self.remove_from_queue(leased);
            let slot = &mut self.added[lane as usize];
            slot.0 += 1;
            slot.1 = slot.1.min(entry.enqueued_at_ms);
            entry.fact.lane = lane;
        }
        self.move_record(record_key, SyncState::Retrying, reason);
        self.batch.insert(
            self.inner.keys.queue_entry(lane, leased.seq),
            encode(&entry)?,
        );
        self.report.retried += 1;
        Ok(())
    }

    /// Off the queue into the dead letters (`attempts`: the letter's count; the entry keeps
    /// its own).
    fn dead(
        &mut self,
        leased: &LeasedEntry,
        entry: QueueEntry,
        record_key: &[u8],
        attempts: u32,
        reason: String,
        status: Option<u16>,
    ) -> Result<(), StoreError> {
        self.remove_from_queue(leased);
        self.move_record(record_key, SyncState::Dead, &reason);
        let letter = DeadLetter {
            id: leased.seq,
            attempts,
            entry,
            reason,
            dead_at_ms: self.now_ms,
            status,
        };
        self.batch
            .insert(self.inner.keys.dead_letter(leased.seq), encode(&letter)?);
        self.counts.dead += 1;
        self.report.dead += 1;
        Ok(())
    }

    /// Writes the changed records and the counters in the one batch, then gauges and leases.
    pub(super) fn commit(
        mut self,
        leases: &LeaseTable,
        generation: u64,
    ) -> Result<CompletionReport, StoreError> {
        let inner = self.inner;
        for record_key in &self.transitioned {
            if let Some(record) = self.records.get(record_key) {
                self.batch.insert(record_key.clone(), encode(record)?);
            }
        }
        self.batch
            .insert(inner.keys.counts(), encode(&self.counts)?);
        inner.tree.apply_batch(self.batch).map_err(io_error)?;
        if self.report.dead > 0 {
            crate::failpoint::crash_point(crate::failpoint::DEAD_LETTER_MOVE);
        }
        inner.store_counts(self.counts);
        inner.adjust_lane_gauges(self.added, self.removed)?;
        leases.release(generation, &self.done_keys);
        Ok(self.report)
    }
}
