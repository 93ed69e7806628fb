//! Operator actions on a tenant's store (docs/operations.md): dead-letter paging,
//! replay (as-is or edited) and discard, and what a record lookup shows besides the record.
//!
//! Each action is one atomic sled batch on the tenant's tree, taken under the tenant's write
//! lock (so no enqueue or completion interleaves), followed by the in-memory gauge upkeep.
//! Nothing here is durable until the caller awaits `Store::durable` (invariant 1: the admin
//! API answers only after that).

use super::codec::{decode, encode};
use super::keys::section;
use super::types::{DeadLetter, QueueEntry, RecordState, SyncState};
use super::{io_error, Lane, RecordKind, StoreError, TenantStore};

/// History reason of a replay (`", edited"` is appended when the body changed).
pub const REPLAYED_REASON: &str = "replayed by operator";
/// History reason of a discard.
pub const DISCARDED_REASON: &str = "discarded by operator";

/// A dead-letter reason that carries the HTTP status the operator sees in the listing:
/// `"HTTP 400: message"` (without a status, the message alone). The submitter writes its
/// reasons with this so `status` can be shown without a schema change of [`DeadLetter`].
pub fn dead_letter_reason(status: Option<u16>, message: &str) -> String {
    match status {
        Some(status) => format!("HTTP {status}: {message}"),
        None => message.to_string(),
    }
}

/// The HTTP status inside a reason written by [`dead_letter_reason`] (`"HTTP 422…"`
/// anywhere in the text), if any.
pub fn status_of_reason(reason: &str) -> Option<u16> {
    let at = reason.find("HTTP ")?;
    let digits: String = reason[at + 5..].chars().take(3).collect();
    let status: u16 = digits.parse().ok()?;
    (100..600).contains(&status).then_some(status)
}

/// A dead letter of `entry`, dead after `entry.attempts` attempts.
fn new_dead_letter(
    id: u64,
    entry: QueueEntry,
    reason: String,
    status: Option<u16>,
    dead_at_ms: u64,
) -> DeadLetter {
    DeadLetter {
        id,
        attempts: entry.attempts,
        entry,
        reason,
        dead_at_ms,
        status,
    }
}

/// The HTTP status of the answer that killed the entry, when known (older dead letters and
/// reasons written with [`dead_letter_reason`] carry it in the text).
pub fn dead_letter_status(dead_letter: &DeadLetter) -> Option<u16> {
    dead_letter
        .status
        .or_else(|| status_of_reason(&dead_letter.reason))
}

/// Attempts made before the entry died.
pub fn dead_letter_attempts(dead_letter: &DeadLetter) -> u32 {
    dead_letter.attempts
}

/// What a replay did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    /// The seq of the entry now waiting in the live lane.
    pub seq: u64,
    /// The record after the transition to `pending`.
    pub record: RecordState,
    pub edited: bool,
}

/// A queued entry of one record, with where it waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedEntry {
    pub lane: Lane,
    pub seq: u64,
    pub entry: QueueEntry,
}

impl TenantStore {
    /// Dead letters ordered by id, those with an id greater than `after`, at most `limit`.
    pub fn dead_letters_page(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let inner = self.inner();
        inner.settle()?;
        let start = match after {
            Some(after) => match after.checked_add(1) {
                Some(next) => inner.keys.dead_letter(next),
                None => return Ok(Vec::new()),
            },
            None => inner.keys.section_prefix(section::DEAD_LETTER),
        };
        let section_prefix = inner.keys.section_prefix(section::DEAD_LETTER);
        let mut page = Vec::new();
        for item in inner.tree.range(start..) {
            let (key, bytes) = item.map_err(io_error)?;
            if !key.starts_with(&section_prefix) || page.len() == limit {
                break;
            }
            page.push(decode(&bytes)?);
        }
        Ok(page)
    }

    /// Moves a queued entry to the dead letters (id = its seq), in one batch: the entry goes,
    /// the dead letter appears, the record becomes `dead` with `reason`, `dead` is counted.
    /// `None` when no such entry is queued. (The operator test hook uses it; the submitter
    /// dead-letters through its own completion.)
    pub fn dead_letter_queued_entry(
        &self,
        lane: Lane,
        seq: u64,
        status: Option<u16>,
        message: &str,
        now_ms: u64,
    ) -> Result<Option<DeadLetter>, StoreError> {
        let reason = dead_letter_reason(status, message);
        let inner = self.inner();
        let _guard = inner.lock_for_write()?;
        let queue_key = inner.keys.queue_entry(lane, seq);
        let Some(entry) = inner.read::<QueueEntry>(&queue_key)? else {
            return Ok(None);
        };
        let record_key =
            inner
                .keys
                .record(entry.fact.kind, &entry.fact.source, &entry.fact.source_id);
        let mut batch = sled::Batch::default();
        if let Some(mut record) = inner.read::<RecordState>(&record_key)? {
            record.transition(SyncState::Dead, &reason, now_ms, false);
            batch.insert(record_key, encode(&record)?);
        }
        let dead_letter = new_dead_letter(seq, entry, reason, status, now_ms);
        batch.remove(queue_key);
        batch.insert(inner.keys.dead_letter(seq), encode(&dead_letter)?);
        let mut counts = inner.load_counts();
        counts.dead += 1;
        batch.insert(inner.keys.counts(), encode(&counts)?);
        inner.tree.apply_batch(batch).map_err(io_error)?;
        crate::failpoint::crash_point(crate::failpoint::DEAD_LETTER_MOVE);
        inner.store_counts(counts);
        let mut removed = [0; 4];
        removed[lane as usize] = 1;
        inner.adjust_lane_gauges([(0, 0); 4], removed)?;
        Ok(Some(dead_letter))
    }

    /// Puts a dead letter back into the live lane, in one batch: the dead letter goes; the
    /// entry returns with a new seq, attempts 0, `not_before` = now and the same idempotency
    /// key; its body is `edited_body_json` when given (the caller checked that the
    /// idempotency fields are unchanged); the record goes to `pending` ("replayed by
    /// operator", ", edited"); `dead` is decremented. `None` when there is no such dead letter.
    pub fn replay_dead_letter(
        &self,
        id: u64,
        edited_body_json: Option<String>,
        now_ms: u64,
    ) -> Result<Option<Replayed>, StoreError> {
        let inner = self.inner();
        let _guard = inner.lock_for_write()?;
        let dead_letter_key = inner.keys.dead_letter(id);
        let Some(dead_letter) = inner.read::<DeadLetter>(&dead_letter_key)? else {
            return Ok(None);
        };
        let mut entry = dead_letter.entry;
        let edited = edited_body_json
            .as_ref()
            .is_some_and(|body| *body != entry.fact.body_json);
        if let Some(body) = edited_body_json {
            entry.fact.body_json = body;
        }
        // A new seq: the entry joins the back of the live lane like any new capture.
        let seq = inner.db.generate_id().map_err(io_error)?;
        entry.fact.lane = Lane::Live;
        entry.attempts = 0;
        entry.enqueued_at_ms = now_ms;
        entry.not_before_ms = now_ms;

        let record_key =
            inner
                .keys
                .record(entry.fact.kind, &entry.fact.source, &entry.fact.source_id);
        let mut record = match inner.read::<RecordState>(&record_key)? {
            Some(record) => record,
            // The record is the dedup mark: one missing (older data) is rebuilt so the key
            // stays remembered.
            None => {
                let mut record = RecordState::new(
                    entry.fact.kind,
                    &entry.fact.source,
                    &entry.fact.source_id,
                    &entry.fact.idempotency_key,
                );
                record.remember_key(&entry.fact.idempotency_key, now_ms);
                record.state = SyncState::Dead;
                record
            }
        };
        let reason = if edited {
            format!("{REPLAYED_REASON}, edited")
        } else {
            REPLAYED_REASON.to_string()
        };
        record.transition(SyncState::Pending, &reason, now_ms, false);
        record.last_seq = Some(seq);

        let mut counts = inner.load_counts();
        counts.dead = counts.dead.saturating_sub(1);
        let mut batch = sled::Batch::default();
        batch.remove(dead_letter_key);
        batch.insert(inner.keys.queue_entry(Lane::Live, seq), encode(&entry)?);
        if edited {
            let index_key = super::record_index::email_index_key(
                &inner.keys,
                &entry.fact.body_json,
                &record_key,
            );
            if let Some(index_key) = index_key {
                batch.insert(index_key, Vec::new());
            }
        }
        batch.insert(record_key, encode(&record)?);
        batch.insert(inner.keys.counts(), encode(&counts)?);
        inner.tree.apply_batch(batch).map_err(io_error)?;
        crate::failpoint::crash_point(crate::failpoint::DEAD_LETTER_MOVE);
        inner.store_counts(counts);
        let mut added = [(0, 0); 4];
        added[Lane::Live as usize] = (1, now_ms);
        inner.adjust_lane_gauges(added, [0; 4])?;
        Ok(Some(Replayed {
            seq,
            record,
            edited,
        }))
    }

    /// Removes a dead letter for good and notes it in the record's history (the record stays
    /// `dead`, and so does the `dead` count: the fact never reached Virtuous). `None` when
    /// there is no such dead letter.
    pub fn discard_dead_letter(
        &self,
        id: u64,
        now_ms: u64,
    ) -> Result<Option<DeadLetter>, StoreError> {
        let inner = self.inner();
        let _guard = inner.lock_for_write()?;
        let dead_letter_key = inner.keys.dead_letter(id);
        let Some(dead_letter) = inner.read::<DeadLetter>(&dead_letter_key)? else {
            return Ok(None);
        };
        let entry = &dead_letter.entry;
        let record_key =
            inner
                .keys
                .record(entry.fact.kind, &entry.fact.source, &entry.fact.source_id);
        let mut batch = sled::Batch::default();
        if let Some(mut record) = inner.read::<RecordState>(&record_key)? {
            record.transition(SyncState::Dead, DISCARDED_REASON, now_ms, false);
            batch.insert(record_key, encode(&record)?);
        }
        batch.remove(dead_letter_key);
        inner.tree.apply_batch(batch).map_err(io_error)?;
        Ok(Some(dead_letter))
    }

    /// The record's queued entry, if its latest one (`last_seq`) still waits in a lane: four
    /// point reads, never a lane scan.
    pub fn queued_entries_of(&self, record: &RecordState) -> Result<Vec<QueuedEntry>, StoreError> {
        let Some(seq) = record.last_seq else {
            return Ok(Vec::new());
        };
        let mut queued = Vec::new();
        for lane in Lane::ALL {
            if let Some(entry) = self.get_queue_entry(lane, seq)? {
                queued.push(QueuedEntry { lane, seq, entry });
            }
        }
        Ok(queued)
    }

    /// A record by its key, else through an alias that names a record of the same source
    /// (a refund and its gift share the source id, and an alias such as a charge id may
    /// point at either: the requested kind is then read with the alias's source id).
    pub fn find_record(
        &self,
        kind: RecordKind,
        source: &str,
        id_or_alias: &str,
    ) -> Result<Option<RecordState>, StoreError> {
        if let Some(record) = self.get_record(kind, source, id_or_alias)? {
            return Ok(Some(record));
        }
        let Some(aliased) = self.find_record_by_alias(id_or_alias)? else {
            return Ok(None);
        };
        if aliased.source != source {
            return Ok(None);
        }
        if aliased.kind == kind {
            return Ok(Some(aliased));
        }
        self.get_record(kind, source, &aliased.source_id)
    }
}

#[cfg(test)]
#[path = "admin_ops_tests.rs"]
mod tests;

/// What a DELETE without `force` refuses to drop (docs/operations.md "Deleting a tenant"):
/// dropping them also drops their dedup marks, so a redelivery after the tenant is created
/// again would be sent — and imported — a second time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unfinished {
    /// Queue entries in every lane: ready, held, waiting to retry, or leased to a call.
    pub queued: u64,
    /// Gifts accepted by Virtuous and not confirmed yet (the unconfirmed index).
    pub awaiting_confirmation: u64,
    /// Gifts the reconciler stopped waiting for: maybe imported, maybe not.
    pub needs_review: u64,
}

impl Unfinished {
    pub fn total(&self) -> u64 {
        self.queued + self.awaiting_confirmation + self.needs_review
    }
}

impl TenantStore {
    /// Counts the tenant's [`Unfinished`] records. Contacts and refunds are not counted: no
    /// query confirms them, so they would stay "unconfirmed" for ever, and a contact sent
    /// again is merged, not doubled. Scans the unconfirmed index and the gift records: an
    /// admin operation, not for a hot path.
    pub fn unfinished(&self) -> Result<Unfinished, StoreError> {
        let inner = self.inner();
        inner.settle()?;
        let gift_prefix = |section: u8| {
            let mut prefix = inner.keys.section_prefix(section);
            prefix.push(super::keys::record_kind_byte(RecordKind::Gift));
            prefix
        };
        let mut awaiting_confirmation = 0;
        for key in inner
            .tree
            .scan_prefix(gift_prefix(section::UNCONFIRMED))
            .keys()
        {
            key.map_err(io_error)?;
            awaiting_confirmation += 1;
        }
        let mut needs_review = 0;
        for bytes in inner
            .tree
            .scan_prefix(gift_prefix(section::RECORD))
            .values()
        {
            let record: RecordState = decode(&bytes.map_err(io_error)?)?;
            needs_review += u64::from(record.state == SyncState::NeedsReview);
        }
        Ok(Unfinished {
            queued: self.queued_total(),
            awaiting_confirmation,
            needs_review,
        })
    }
}
