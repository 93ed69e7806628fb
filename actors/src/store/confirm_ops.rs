//! Confirmation: the unconfirmed index (written when Virtuous accepts a record, read by the
//! reconciler), confirming records with their Virtuous id, flagging duplicates, moving
//! stale records to `needs_review`, and the daily dedup-retention prune.
//!
//! Every op here is one atomic sled batch per call (records, index keys and counters
//! together) under the tenant's write lock; like every direct write it is durable only after
//! `Store::durable` resolves — callers that acknowledge something (the Virtuous webhook) wait
//! for it.
//!
//! `needs_review` takes the record *out* of the unconfirmed index: the reconciler's query
//! window starts at the oldest unconfirmed submission, and a record nobody will import must
//! not stretch every later query back forever. Such a record is still confirmed when its
//! gift shows up later (webhook, or a gift seen in a later pass): [`TenantStore::confirm_records`]
//! accepts `needs_review` records as well as `submitted` ones.

use std::collections::BTreeMap;

use super::codec::{decode, encode};
use super::keys::section;
use super::record_index::normalise_virtuous_id;
use super::types::{RecordState, SyncState, Unconfirmed};
use super::{io_error, RecordKind, StoreError, TenantStore};

/// Checkpoint holding the time of the latest dedup-retention prune (8 bytes, BE ms).
pub const DEDUP_PRUNED_AT_CHECKPOINT: &str = "dedup_pruned_at";
/// The prune scans every record: at most once per this interval.
pub const DEDUP_PRUNE_INTERVAL_MS: u64 = 86_400_000;

/// The unconfirmed records of one Virtuous `transactionSource`, as the reconciler pages them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnconfirmedSource {
    pub transaction_source: String,
    /// By transaction id (a transaction id can in principle come from two ingress sources
    /// sharing one transaction source; both are kept).
    pub records: BTreeMap<String, Vec<Unconfirmed>>,
    pub oldest_submitted_at_ms: u64,
}

/// Virtuous says these gifts (or this contact) carry a record's idempotency ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmation {
    pub kind: RecordKind,
    pub source: String,
    pub source_id: String,
    /// Every Virtuous id seen for the record's transaction id (two or more = a duplicate).
    pub virtuous_ids: Vec<String>,
    /// `reconcile` or `webhook` (goes into the history reason).
    pub via: &'static str,
}

/// What a confirmation did to its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfirmOutcome {
    /// `submitted` / `needs_review` → `confirmed`.
    Confirmed { virtuous_id: String },
    /// Two or more Virtuous records carry one transaction id: → `duplicate_detected` (the
    /// record keeps the lowest id as `virtuous_id`; every id is in the history reason).
    DuplicateDetected {
        virtuous_id: String,
        all_ids: Vec<String>,
    },
    /// Confirmed before with the same id, or already flagged: nothing changed.
    Unchanged,
    /// The record is not (yet) submitted (pending, retrying, dead…): left alone; a pass
    /// after the submitter's completion will confirm it.
    NotSubmitted { state: SyncState },
    /// No such record (an event about a gift Steward did not send).
    Unknown,
}

/// Orders Virtuous ids numerically when they are numbers (ids are integers as text).
fn sorted_ids(ids: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut ids: Vec<String> = ids.into_iter().filter(|id| !id.is_empty()).collect();
    ids.sort_by(|a, b| (a.len(), a).cmp(&(b.len(), b)));
    ids.dedup();
    ids
}

impl TenantStore {
    /// Virtuous accepted these records: each → `submitted` (counts `submitted`), and its
    /// unconfirmed-index key is written. A record already indexed keeps its first
    /// `submitted_at_ms` (a re-send does not move the query window). Records that do not
    /// exist are skipped. Returns how many records moved to `submitted`.
    ///
    /// The submitter's completion does the same inside its own batch (with the lease check
    /// and the queue removal); this op is for callers without a lease (tests, tools).
    pub fn mark_submitted(
        &self,
        submitted: &[Unconfirmed],
        now_ms: u64,
    ) -> Result<u64, StoreError> {
        let inner = self.inner();
        let _guard = inner.lock_for_write()?;
        let mut batch = sled::Batch::default();
        let mut moved = 0;
        for item in submitted {
            let record_key = inner.keys.record(item.kind, &item.source, &item.source_id);
            let Some(mut record) = inner.read::<RecordState>(&record_key)? else {
                continue;
            };
            let index_key = inner
                .keys
                .unconfirmed(item.kind, &item.source, &item.source_id);
            let already_indexed = inner.read::<Unconfirmed>(&index_key)?.is_some();
            if !already_indexed {
                batch.insert(index_key, encode(item)?);
            }
            if record.state != SyncState::Submitted {
                record.transition(SyncState::Submitted, "accepted by Virtuous", now_ms, false);
                batch.insert(record_key, encode(&record)?);
                moved += 1;
            }
        }
        let mut counts = inner.counts.load();
        counts.submitted += moved;
        batch.insert(inner.keys.counts(), encode(&counts)?);
        inner.tree.apply_batch(batch).map_err(io_error)?;
        inner.counts.store(counts);
        Ok(moved)
    }

    /// The unconfirmed records of `kind`, grouped by transaction source (a scan of the
    /// index section: one key per record waiting for confirmation).
    pub fn unconfirmed_by_source(
        &self,
        kind: RecordKind,
    ) -> Result<Vec<UnconfirmedSource>, StoreError> {
        let mut sources: BTreeMap<String, UnconfirmedSource> = BTreeMap::new();
        for item in self.list_unconfirmed()? {
            if item.kind != kind {
                continue;
            }
            let group = sources
                .entry(item.transaction_source.clone())
                .or_insert_with(|| UnconfirmedSource {
                    transaction_source: item.transaction_source.clone(),
                    records: BTreeMap::new(),
                    oldest_submitted_at_ms: u64::MAX,
                });
            group.oldest_submitted_at_ms = group.oldest_submitted_at_ms.min(item.submitted_at_ms);
            group
                .records
                .entry(item.transaction_id.clone())
                .or_default()
                .push(item);
        }
        Ok(sources.into_values().collect())
    }

    /// Every unconfirmed-index entry, in key order.
    pub fn list_unconfirmed(&self) -> Result<Vec<Unconfirmed>, StoreError> {
        let inner = self.inner();
        inner.settle()?;
        inner
            .tree
            .scan_prefix(inner.keys.section_prefix(section::UNCONFIRMED))
            .values()
            .map(|bytes| decode(&bytes.map_err(io_error)?))
            .collect()
    }

    /// Whether any record waits for confirmation (one seek, not a scan).
    pub fn has_unconfirmed(&self) -> Result<bool, StoreError> {
        let inner = self.inner();
        inner.settle()?;
        match inner
            .tree
            .scan_prefix(inner.keys.section_prefix(section::UNCONFIRMED))
            .keys()
            .next()
        {
            Some(key) => key.map(|_| true).map_err(io_error),
            None => Ok(false),
        }
    }

    /// The unconfirmed entry of one record, if it is waiting for confirmation.
    pub fn get_unconfirmed(
        &self,
        kind: RecordKind,
        source: &str,
        source_id: &str,
    ) -> Result<Option<Unconfirmed>, StoreError> {
        let inner = self.inner();
        inner.read(&inner.keys.unconfirmed(kind, source, source_id))
    }

    /// Applies confirmations in one batch: `submitted` / `needs_review` records become
    /// `confirmed` (counts `confirmed`) or, with two or more ids, `confirmed` then
    /// `duplicate_detected`; a `confirmed` record seeing another id becomes
    /// `duplicate_detected`. Confirmed and flagged records leave the unconfirmed index.
    pub fn confirm_records(
        &self,
        confirmations: &[Confirmation],
        now_ms: u64,
    ) -> Result<Vec<ConfirmOutcome>, StoreError> {
        let inner = self.inner();
        let _guard = inner.lock_for_write()?;
        let mut batch = sled::Batch::default();
        let mut counts = inner.counts.load();
        let mut outcomes = Vec::with_capacity(confirmations.len());
        // Two confirmations of one record in one call must see each other.
        let mut touched: BTreeMap<Vec<u8>, RecordState> = BTreeMap::new();
        for confirmation in confirmations {
            let record_key = inner.keys.record(
                confirmation.kind,
                &confirmation.source,
                &confirmation.source_id,
            );
            let stored = match touched.get(&record_key) {
                Some(record) => Some(record.clone()),
                None => inner.read::<RecordState>(&record_key)?,
            };
            let Some(mut record) = stored else {
                outcomes.push(ConfirmOutcome::Unknown);
                continue;
            };
            let was_confirmed = record.state == SyncState::Confirmed;
            let outcome = apply_confirmation(&mut record, confirmation, now_ms);
            if matches!(
                outcome,
                ConfirmOutcome::Confirmed { .. } | ConfirmOutcome::DuplicateDetected { .. }
            ) {
                // A record flagged as duplicate at its first confirmation was confirmed too.
                counts.confirmed += u64::from(!was_confirmed);
                batch.remove(inner.keys.unconfirmed(
                    confirmation.kind,
                    &confirmation.source,
                    &confirmation.source_id,
                ));
                if let Some(id) = record
                    .virtuous_id
                    .as_deref()
                    .and_then(normalise_virtuous_id)
                {
                    let index = section::RECORD_BY_VIRTUOUS_ID;
                    batch.insert(inner.keys.record_index(index, &id, &record_key), Vec::new());
                }
                batch.insert(record_key.clone(), encode(&record)?);
                touched.insert(record_key, record);
            }
            outcomes.push(outcome);
        }
        batch.insert(inner.keys.counts(), encode(&counts)?);
        inner.tree.apply_batch(batch).map_err(io_error)?;
        inner.counts.store(counts);
        Ok(outcomes)
    }

    /// Records unconfirmed for too long: each → `needs_review` (counts `needs_review`) and
    /// out of the unconfirmed index (see the module docs). Entries whose record is no longer
    /// `submitted` only lose their index key. Returns how many records moved.
    pub fn mark_needs_review(&self, stale: &[Unconfirmed], now_ms: u64) -> Result<u64, StoreError> {
        let inner = self.inner();
        let _guard = inner.lock_for_write()?;
        let mut batch = sled::Batch::default();
        let mut moved = 0;
        for item in stale {
            batch.remove(
                inner
                    .keys
                    .unconfirmed(item.kind, &item.source, &item.source_id),
            );
            let record_key = inner.keys.record(item.kind, &item.source, &item.source_id);
            let Some(mut record) = inner.read::<RecordState>(&record_key)? else {
                continue;
            };
            if record.state != SyncState::Submitted {
                continue;
            }
            let waited_h = now_ms.saturating_sub(item.submitted_at_ms) / 3_600_000;
            let reason = format!(
                "not confirmed by Virtuous {waited_h} h after submission (transactionSource {}, transactionId {})",
                item.transaction_source, item.transaction_id
            );
            record.transition(SyncState::NeedsReview, &reason, now_ms, false);
            batch.insert(record_key, encode(&record)?);
            moved += 1;
        }
        let mut counts = inner.counts.load();
        counts.needs_review += moved;
        batch.insert(inner.keys.counts(), encode(&counts)?);
        inner.tree.apply_batch(batch).map_err(io_error)?;
        inner.counts.store(counts);
        Ok(moved)
    }

    /// When the dedup prune last ran. A store that never ran it starts the daily clock now
    /// (stored): its first prune comes a day later rather than at every tenant's first start.
    pub fn dedup_pruned_at_ms(&self, now_ms: u64) -> Result<u64, StoreError> {
        let stored = self
            .get_checkpoint(DEDUP_PRUNED_AT_CHECKPOINT)?
            .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).ok())
            .map(u64::from_be_bytes);
        match stored {
            Some(at_ms) => Ok(at_ms),
            None => {
                self.put_checkpoint(DEDUP_PRUNED_AT_CHECKPOINT, &now_ms.to_be_bytes())?;
                Ok(now_ms)
            }
        }
    }

    /// Runs [`TenantStore::prune_dedup_before`]`(now − retention)` when the last prune is
    /// at least [`DEDUP_PRUNE_INTERVAL_MS`] old (or never ran); `None` when not due.
    pub fn prune_dedup_if_due(
        &self,
        retention_ms: u64,
        now_ms: u64,
    ) -> Result<Option<u64>, StoreError> {
        let last_ms = self
            .get_checkpoint(DEDUP_PRUNED_AT_CHECKPOINT)?
            .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).ok())
            .map(u64::from_be_bytes);
        if last_ms.is_some_and(|last| now_ms.saturating_sub(last) < DEDUP_PRUNE_INTERVAL_MS) {
            return Ok(None);
        }
        let forgotten = self.prune_dedup_before(now_ms.saturating_sub(retention_ms))?;
        self.put_checkpoint(DEDUP_PRUNED_AT_CHECKPOINT, &now_ms.to_be_bytes())?;
        Ok(Some(forgotten))
    }
}

/// The state machine of confirmation, on one record (pure; tested on its own).
fn apply_confirmation(
    record: &mut RecordState,
    confirmation: &Confirmation,
    now_ms: u64,
) -> ConfirmOutcome {
    let via = confirmation.via;
    match record.state {
        SyncState::Submitted | SyncState::NeedsReview => {
            let ids = sorted_ids(confirmation.virtuous_ids.iter().cloned());
            let Some(primary) = ids.first().cloned() else {
                return ConfirmOutcome::Unchanged;
            };
            record.virtuous_id = Some(primary.clone());
            let reason = format!("confirmed by {via}: Virtuous id {primary}");
            record.transition(SyncState::Confirmed, &reason, now_ms, false);
            if ids.len() < 2 {
                return ConfirmOutcome::Confirmed {
                    virtuous_id: primary,
                };
            }
            flag_duplicate(record, primary, ids, via, now_ms)
        }
        SyncState::Confirmed => {
            let primary = record.virtuous_id.clone().unwrap_or_default();
            let ids = sorted_ids(
                confirmation
                    .virtuous_ids
                    .iter()
                    .cloned()
                    .chain(std::iter::once(primary.clone())),
            );
            if ids.len() < 2 {
                return ConfirmOutcome::Unchanged;
            }
            flag_duplicate(record, primary, ids, via, now_ms)
        }
        SyncState::DuplicateDetected => ConfirmOutcome::Unchanged,
        state => ConfirmOutcome::NotSubmitted { state },
    }
}

fn flag_duplicate(
    record: &mut RecordState,
    primary: String,
    all_ids: Vec<String>,
    via: &str,
    now_ms: u64,
) -> ConfirmOutcome {
    let reason = format!(
        "duplicate found by {via}: Virtuous ids {} all carry transactionId {}",
        all_ids.join(", "),
        record.source_id
    );
    record.transition(SyncState::DuplicateDetected, &reason, now_ms, false);
    ConfirmOutcome::DuplicateDetected {
        virtuous_id: primary,
        all_ids,
    }
}

#[cfg(test)]
#[path = "confirm_ops_tests.rs"]
mod tests;
