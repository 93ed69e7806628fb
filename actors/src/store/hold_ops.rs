//! Held entries and source state: what the webhook ingress needs for Stripe subscription
//! payments (docs/ingress.md, "Subscription payments: holds and links").
//!
//! A *held* entry is an ordinary queue entry in the `live` lane whose `not_before_ms` lies in
//! the future: the submitter skips it until then (every lane skips not-ready entries). The
//! ingress holds a basil-era payment that looks like a subscription payment while it waits
//! for the `invoice_payment.paid` / `invoice.paid` link, and releases it early — with its body
//! rewritten to the recurring form — when the link completes ([`TenantStore::release_held`]).
//!
//! Source state (`section::SOURCE_STATE`, `{name}\0{key}`) holds a source's own small facts:
//! link parts, event marks. Its values are opaque bytes inside a versioned envelope.

use serde::{Deserialize, Serialize};

use super::codec::{decode, encode, Versioned};
use super::types::{QueueEntry, RecordRef, RecordState};
use super::{io_error, EnqueueOutcome, Lane, NewEntry, RecordKind, StoreError, TenantStore};

/// A release is refused when the hold ends within this margin: the submitter may be leasing
/// the entry (it reads entries without the write lock) and would send the old body.
pub const RELEASE_MARGIN_MS: u64 = 2_000;

/// The value of a source-state key: bytes in the source's own format (JSON for Stripe links).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceStateValue {
    pub bytes: Vec<u8>,
}

impl Versioned for SourceStateValue {
    const VERSION: u8 = 1;
    const NAME: &'static str = "SourceStateValue";
}

/// The new form of a released entry.
#[derive(Debug, Clone, Copy)]
pub struct Release<'a> {
    /// The new body (same idempotency fields: the caller only adds fields).
    pub body_json: &'a str,
    /// Ids that now find the record too (invoice, link events).
    pub aliases: &'a [String],
    /// Noted in the record's history.
    pub reason: &'a str,
}

/// What [`TenantStore::release_held`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseOutcome {
    /// The held entry now carries the new body and is ready at once.
    Released { seq: u64 },
    /// No entry of the record waits in the `live` lane: never held, already submitted (or
    /// retried, dead-lettered). Nothing changed.
    NotQueued,
    /// The hold has expired (or ends within [`RELEASE_MARGIN_MS`]): the entry may already be
    /// leased with its old body, so it is left unchanged.
    AlreadyReleased { not_before_ms: u64 },
}

impl TenantStore {
    /// Enqueues one entry that is not ready before `not_before_ms` (a held entry), with the
    /// same dedup, record, alias and counter writes as [`TenantStore::enqueue`], in the same
    /// one atomic write: the entry is held from its first byte, its times are the real ones.
    /// Not durable until `Store::durable` resolves.
    pub fn enqueue_held(
        &self,
        entry: NewEntry,
        not_before_ms: u64,
    ) -> Result<EnqueueOutcome, StoreError> {
        self.enqueue_batch(vec![entry], None, Some(not_before_ms))?
            .pop()
            .ok_or_else(|| StoreError::Codec("enqueue answered no outcome".into()))
    }

    /// Releases a record's held `live` entry now: its body becomes `release.body_json`,
    /// `not_before_ms` becomes `now_ms`, the aliases are added and the record's history notes
    /// the reason. Refused — nothing changes — when the entry is gone or its hold already
    /// ended (see [`ReleaseOutcome`]).
    /// Not durable until `Store::durable` resolves.
    pub fn release_held(
        &self,
        kind: RecordKind,
        source: &str,
        source_id: &str,
        release: Release<'_>,
        now_ms: u64,
    ) -> Result<ReleaseOutcome, StoreError> {
        let Release {
            body_json,
            aliases,
            reason,
        } = release;
        let inner = self.inner();
        let _guard = inner.lock_for_write()?;
        let record_key = inner.keys.record(kind, source, source_id);
        let Some(mut record) = inner.read::<RecordState>(&record_key)? else {
            return Ok(ReleaseOutcome::NotQueued);
        };
        let Some(seq) = record.last_seq else {
            return Ok(ReleaseOutcome::NotQueued);
        };
        let queue_key = inner.keys.queue_entry(Lane::Live, seq);
        let Some(mut queued) = inner.read::<QueueEntry>(&queue_key)? else {
            return Ok(ReleaseOutcome::NotQueued);
        };
        if queued.not_before_ms <= now_ms.saturating_add(RELEASE_MARGIN_MS) {
            return Ok(ReleaseOutcome::AlreadyReleased {
                not_before_ms: queued.not_before_ms,
            });
        }
        queued.fact.body_json = body_json.to_owned();
        queued.not_before_ms = now_ms;
        let state = record.state;
        record.transition(state, reason, now_ms, false);
        let mut batch = sled::Batch::default();
        batch.insert(queue_key, encode(&queued)?);
        if let Some(index_key) =
            super::record_index::email_index_key(&inner.keys, body_json, &record_key)
        {
            batch.insert(index_key, Vec::new());
        }
        batch.insert(record_key, encode(&record)?);
        if !aliases.is_empty() {
            let reference = encode(&RecordRef {
                kind,
                source: source.to_owned(),
                source_id: source_id.to_owned(),
            })?;
            for alias in aliases {
                batch.insert(inner.keys.alias(alias), reference.clone());
            }
        }
        inner.tree.apply_batch(batch).map_err(io_error)?;
        Ok(ReleaseOutcome::Released { seq })
    }

    /// A source-state value (`None` when absent).
    pub fn get_source_state(&self, name: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let inner = self.inner();
        Ok(inner
            .read::<SourceStateValue>(&inner.keys.source_state(name, key))?
            .map(|value| value.bytes))
    }

    /// Writes a source-state value. Not durable until `Store::durable` resolves.
    pub fn put_source_state(&self, name: &str, key: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let inner = self.inner();
        let _guard = inner.lock_for_write()?;
        let value = encode(&SourceStateValue {
            bytes: bytes.to_vec(),
        })?;
        inner
            .tree
            .insert(inner.keys.source_state(name, key), value)
            .map_err(io_error)?;
        Ok(())
    }

    /// Writes a source-state value unless the key exists; true when written (a mark such as
    /// "this event was handled" is set once). Not durable until `Store::durable` resolves.
    pub fn mark_source_state(
        &self,
        name: &str,
        key: &str,
        bytes: &[u8],
    ) -> Result<bool, StoreError> {
        let inner = self.inner();
        let _guard = inner.lock_for_write()?;
        let full_key = inner.keys.source_state(name, key);
        if inner.tree.contains_key(&full_key).map_err(io_error)? {
            return Ok(false);
        }
        let value = encode(&SourceStateValue {
            bytes: bytes.to_vec(),
        })?;
        inner.tree.insert(full_key, value).map_err(io_error)?;
        Ok(true)
    }
}

/// Decodes a stored source-state value (tests and tools reading raw keys).
pub fn decode_source_state(bytes: &[u8]) -> Result<Vec<u8>, StoreError> {
    Ok(decode::<SourceStateValue>(bytes)?.bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{EntryFact, Store, StoreOptions};

    fn open() -> (tempfile::TempDir, Store, TenantStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store"), StoreOptions::default()).unwrap();
        let tenant = store.tenant("t1").unwrap();
        (dir, store, tenant)
    }

    fn gift(source_id: &str, body: &str, now_ms: u64) -> NewEntry {
        NewEntry {
            fact: EntryFact {
                kind: RecordKind::Gift,
                source: "stripe".into(),
                source_id: source_id.into(),
                idempotency_key: format!("stripe:gift:{source_id}"),
                lane: Lane::Live,
                transaction_source: "Stripe".into(),
                body_json: body.into(),
            },
            aliases: vec!["ch_1".into()],
            now_ms,
        }
    }

    fn bare(reason: &str) -> Release<'_> {
        Release {
            body_json: "{}",
            aliases: &[],
            reason,
        }
    }

    #[test]
    fn a_held_entry_is_queued_not_ready_with_real_timestamps() {
        // Goal: not_before is the hold's end, while enqueue time and history keep the real time.
        let (_dir, _store, tenant) = open();
        let outcome = tenant
            .enqueue_held(gift("pi_1", r#"{"a":1}"#, 1_000), 121_000)
            .unwrap();
        let EnqueueOutcome::Queued { seq } = outcome else {
            panic!("{outcome:?}")
        };
        let entry = tenant.get_queue_entry(Lane::Live, seq).unwrap().unwrap();
        assert_eq!(entry.not_before_ms, 121_000);
        assert_eq!(entry.enqueued_at_ms, 1_000);
        let record = tenant
            .get_record(RecordKind::Gift, "stripe", "pi_1")
            .unwrap()
            .unwrap();
        assert_eq!(record.history.last().unwrap().at_ms, 1_000);
        assert_eq!(record.seen_keys[0].first_seen_at_ms, 1_000);
        assert_eq!(tenant.counts().captured, 1);
        assert_eq!(tenant.lane_stats()[0].1.depth, 1);
        // The same fact again is a duplicate, held or not.
        assert_eq!(
            tenant.enqueue(vec![gift("pi_1", "{}", 2_000)]).unwrap(),
            vec![EnqueueOutcome::Duplicate]
        );
    }

    #[test]
    fn release_rewrites_the_body_and_readies_the_entry_once() {
        // Goal: a held entry is released with the new body; a second release is refused.
        let (_dir, _store, tenant) = open();
        let EnqueueOutcome::Queued { seq } = tenant
            .enqueue_held(gift("pi_1", r#"{"a":1}"#, 1_000), 121_000)
            .unwrap()
        else {
            panic!()
        };
        let released = tenant
            .release_held(
                RecordKind::Gift,
                "stripe",
                "pi_1",
                Release {
                    body_json: r#"{"a":2}"#,
                    aliases: &["in_1".into()],
                    reason: "link arrived",
                },
                5_000,
            )
            .unwrap();
        assert_eq!(released, ReleaseOutcome::Released { seq });
        let entry = tenant.get_queue_entry(Lane::Live, seq).unwrap().unwrap();
        assert_eq!(entry.fact.body_json, r#"{"a":2}"#);
        assert_eq!(entry.not_before_ms, 5_000);
        assert_eq!(
            tenant
                .find_record_by_alias("in_1")
                .unwrap()
                .unwrap()
                .source_id,
            "pi_1"
        );
        let again = tenant
            .release_held(RecordKind::Gift, "stripe", "pi_1", bare("again"), 6_000)
            .unwrap();
        assert_eq!(
            again,
            ReleaseOutcome::AlreadyReleased {
                not_before_ms: 5_000
            }
        );
        assert_eq!(
            tenant
                .get_queue_entry(Lane::Live, seq)
                .unwrap()
                .unwrap()
                .fact
                .body_json,
            r#"{"a":2}"#
        );
    }

    #[test]
    fn release_is_refused_near_the_end_of_the_hold_or_without_an_entry() {
        // Goal: an entry whose hold ends within the margin, or no entry at all, is left alone.
        let (_dir, _store, tenant) = open();
        tenant
            .enqueue_held(gift("pi_1", r#"{"a":1}"#, 1_000), 3_000)
            .unwrap();
        let outcome = tenant
            .release_held(RecordKind::Gift, "stripe", "pi_1", bare("late"), 1_500)
            .unwrap();
        assert_eq!(
            outcome,
            ReleaseOutcome::AlreadyReleased {
                not_before_ms: 3_000
            }
        );
        let missing = tenant
            .release_held(RecordKind::Gift, "stripe", "pi_2", bare("x"), 1_500)
            .unwrap();
        assert_eq!(missing, ReleaseOutcome::NotQueued);
    }

    #[test]
    fn source_state_round_trips_and_marks_are_set_once() {
        // Goal: values read back as written; a mark is written only the first time.
        let (_dir, _store, tenant) = open();
        assert_eq!(tenant.get_source_state("link", "in_1").unwrap(), None);
        tenant.put_source_state("link", "in_1", b"abc").unwrap();
        assert_eq!(
            tenant.get_source_state("link", "in_1").unwrap(),
            Some(b"abc".to_vec())
        );
        assert!(tenant.mark_source_state("event", "evt_1", b"").unwrap());
        assert!(!tenant.mark_source_state("event", "evt_1", b"x").unwrap());
        assert_eq!(
            tenant.get_source_state("event", "evt_1").unwrap(),
            Some(Vec::new())
        );
    }
}
