//! Stored value types (each behind the versioned envelope of [`super::codec`]).
//!
//! Field order and enum variant order are part of the on-disk format: append new enum
//! variants at the end, and bump the type's `VERSION` (with a migration) for any other change.

// Size: over 500 lines with its golden-bytes tests; the production part is ~345.

use serde::{Deserialize, Serialize};

use super::codec::{decode_payload, unknown_version, Versioned};
use super::{Alert, AlertState, Counts, Lane, RecordKind, StoreError, TenantRecord};

/// Most transitions kept in a record's history; older ones are dropped first.
pub const HISTORY_LEN_MAX: usize = 64;

/// One source fact bound for Virtuous: what a source maps an event to, what
/// [`super::NewEntry`] enqueues and what [`QueueEntry`] stores, one type for all three.
/// Nested first in [`QueueEntry`]: bincode writes a nested struct as its fields in order, so
/// the stored bytes are those of the flat entry this replaced (pinned by the golden bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryFact {
    pub kind: RecordKind,
    /// The ingress key (`stripe`, a platform name).
    pub source: String,
    /// The record's stable source id (PaymentIntent id, charge id, `cus_…`).
    pub source_id: String,
    /// One idempotency key per source fact, forever (docs/ingress.md "Dedup").
    pub idempotency_key: String,
    pub lane: Lane,
    /// Virtuous `transactionSource` (a batch-level field, so the submitter groups on it).
    pub transaction_source: String,
    /// The exact JSON body destined for Virtuous, as text (never `serde_json::Value` in
    /// bincode): serialised once, by the source that maps the event.
    pub body_json: String,
}

/// One queued command, as stored in a lane (key: lane + seq).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueEntry {
    /// The fact to send (its fields come first in the stored bytes).
    pub fact: EntryFact,
    pub attempts: u32,
    pub enqueued_at_ms: u64,
    /// Not to be submitted before this time (retry back-off); equal to `enqueued_at_ms` when new.
    pub not_before_ms: u64,
}

/// Per-record sync states (ARCHITECTURE.md). Variant order is on disk: append only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SyncState {
    Pending,
    Submitted,
    Confirmed,
    Retrying,
    Dead,
    NeedsReview,
    DuplicateDetected,
    WaitingForGift,
    InSync,
    PartnerPending,
    VirtuousPending,
    Conflict,
}

impl SyncState {
    pub fn name(self) -> &'static str {
        match self {
            SyncState::Pending => "pending",
            SyncState::Submitted => "submitted",
            SyncState::Confirmed => "confirmed",
            SyncState::Retrying => "retrying",
            SyncState::Dead => "dead",
            SyncState::NeedsReview => "needs_review",
            SyncState::DuplicateDetected => "duplicate_detected",
            SyncState::WaitingForGift => "waiting_for_gift",
            SyncState::InSync => "in_sync",
            SyncState::PartnerPending => "partner_pending",
            SyncState::VirtuousPending => "virtuous_pending",
            SyncState::Conflict => "conflict",
        }
    }
}

/// One entry of a record's audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub at_ms: u64,
    /// `None` for the transition that created the record.
    pub from: Option<SyncState>,
    pub to: SyncState,
    pub reason: String,
}

/// A record's sync state and bounded history (key: kind + source + source id).
///
/// The record is also the dedup mark of its facts: `seen_keys` lists the idempotency keys
/// enqueued for it. Invariant 3 derives a key from (tenant, source, source id), so a key
/// always names one record, and "seen by its record" is "seen" (schema v2; v1 kept a separate
/// dedup key per idempotency key, one more sled write per entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordState {
    pub kind: RecordKind,
    pub source: String,
    pub source_id: String,
    pub state: SyncState,
    /// The idempotency key of the latest fact enqueued for this record.
    pub idempotency_key: String,
    /// Queue seq of the latest entry for this record.
    pub last_seq: Option<u64>,
    /// The Virtuous id once confirmed.
    pub virtuous_id: Option<String>,
    pub updated_at_ms: u64,
    /// Oldest first, at most [`HISTORY_LEN_MAX`].
    pub history: Vec<Transition>,
    /// Idempotency keys enqueued for this record, oldest first, at most [`SEEN_KEYS_MAX`].
    pub seen_keys: Vec<SeenKey>,
}

/// An idempotency key a record has seen, and when (retention prunes by this time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenKey {
    pub key: String,
    pub first_seen_at_ms: u64,
}

/// Most idempotency keys remembered per record. One is the rule (invariant 3); the bound only
/// keeps a misbehaving source from growing a record without limit.
pub const SEEN_KEYS_MAX: usize = 64;

/// Schema v1 of [`RecordState`]: no `seen_keys` (a separate dedup key per idempotency key).
#[derive(Deserialize)]
struct RecordStateV1 {
    kind: RecordKind,
    source: String,
    source_id: String,
    state: SyncState,
    idempotency_key: String,
    last_seq: Option<u64>,
    virtuous_id: Option<String>,
    updated_at_ms: u64,
    history: Vec<Transition>,
}

impl Versioned for RecordState {
    const VERSION: u8 = 2;
    const NAME: &'static str = "RecordState";

    /// v1 → v2: the latest key becomes the one seen key, first seen at the record's creation.
    /// (v1 dedup keys of earlier facts are not consulted any more; there was no production
    /// data in v1.)
    fn decode_older(version: u8, payload: &[u8]) -> Result<Self, StoreError> {
        if version != 1 {
            return Err(unknown_version::<Self>(version));
        }
        let old: RecordStateV1 = decode_payload("RecordState v1", payload)?;
        let first_seen_at_ms = old
            .history
            .first()
            .map_or(old.updated_at_ms, |transition| transition.at_ms);
        Ok(RecordState {
            seen_keys: vec![SeenKey {
                key: old.idempotency_key.clone(),
                first_seen_at_ms,
            }],
            kind: old.kind,
            source: old.source,
            source_id: old.source_id,
            state: old.state,
            idempotency_key: old.idempotency_key,
            last_seq: old.last_seq,
            virtuous_id: old.virtuous_id,
            updated_at_ms: old.updated_at_ms,
            history: old.history,
        })
    }
}

impl RecordState {
    pub fn new(
        kind: RecordKind,
        source: &str,
        source_id: &str,
        idempotency_key: &str,
    ) -> RecordState {
        RecordState {
            kind,
            source: source.to_owned(),
            source_id: source_id.to_owned(),
            state: SyncState::Pending,
            idempotency_key: idempotency_key.to_owned(),
            last_seq: None,
            virtuous_id: None,
            updated_at_ms: 0,
            history: Vec::new(),
            seen_keys: Vec::new(),
        }
    }

    /// Whether this record has seen the idempotency key (its dedup check).
    pub fn has_seen(&self, idempotency_key: &str) -> bool {
        self.seen_keys
            .iter()
            .any(|seen| seen.key == idempotency_key)
    }

    /// Remembers an idempotency key (bounded: the oldest are forgotten first).
    pub fn remember_key(&mut self, idempotency_key: &str, at_ms: u64) {
        self.seen_keys.push(SeenKey {
            key: idempotency_key.to_owned(),
            first_seen_at_ms: at_ms,
        });
        if self.seen_keys.len() > SEEN_KEYS_MAX {
            let excess = self.seen_keys.len() - SEEN_KEYS_MAX;
            self.seen_keys.drain(..excess);
        }
    }

    /// Moves to `to`, appending to the bounded history. `is_new` marks the creating transition.
    pub fn transition(&mut self, to: SyncState, reason: &str, at_ms: u64, is_new: bool) {
        let from = if is_new { None } else { Some(self.state) };
        self.history.push(Transition {
            at_ms,
            from,
            to,
            reason: reason.to_owned(),
        });
        if self.history.len() > HISTORY_LEN_MAX {
            let excess = self.history.len() - HISTORY_LEN_MAX;
            self.history.drain(..excess);
        }
        self.state = to;
        self.updated_at_ms = at_ms;
    }
}

/// The value of an alias key: which record the alias finds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordRef {
    pub kind: RecordKind,
    pub source: String,
    pub source_id: String,
}

/// The value of a dedup (idempotency) key in schema v1 stores. Since [`RecordState`] v2 the
/// record is the dedup mark; this type stays for reading old data and is no longer written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupMark {
    /// Queue seq of the entry that first carried the key.
    pub seq: u64,
    pub first_seen_at_ms: u64,
}

/// A dead letter: the entry as it was (exact body), why it died, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// By convention the queue seq of the entry that died (unique in the `Db`).
    pub id: u64,
    pub entry: QueueEntry,
    pub reason: String,
    pub dead_at_ms: u64,
    /// The HTTP status of the answer that killed it (`None`: no answer, or not from a call).
    pub status: Option<u16>,
    /// Attempts made (sent and failed), including the last one.
    pub attempts: u32,
}

/// Schema v1 of [`DeadLetter`]: no status, no attempt count.
#[derive(Deserialize)]
struct DeadLetterV1 {
    id: u64,
    entry: QueueEntry,
    reason: String,
    dead_at_ms: u64,
}

impl Versioned for DeadLetter {
    const VERSION: u8 = 2;
    const NAME: &'static str = "DeadLetter";

    /// v1 → v2: status unknown, attempts = the entry's failed-attempt count.
    fn decode_older(version: u8, payload: &[u8]) -> Result<Self, StoreError> {
        if version != 1 {
            return Err(unknown_version::<Self>(version));
        }
        let old: DeadLetterV1 = decode_payload("DeadLetter v1", payload)?;
        Ok(DeadLetter {
            attempts: old.entry.attempts,
            id: old.id,
            entry: old.entry,
            reason: old.reason,
            dead_at_ms: old.dead_at_ms,
            status: None,
        })
    }
}

/// A checkpoint (high-water mark) in the poller's own format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub bytes: Vec<u8>,
}

/// The value of an unconfirmed-index key: what the reconciler needs to confirm one
/// submitted record without reading it first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unconfirmed {
    pub kind: RecordKind,
    pub source: String,
    pub source_id: String,
    /// Virtuous `transactionSource` (gifts) / `referenceSource` (contacts) it was sent with.
    pub transaction_source: String,
    /// Virtuous `transactionId` (gifts) / `referenceId` (contacts): the record's source id.
    pub transaction_id: String,
    /// When Virtuous accepted it (first acceptance; a re-send keeps the first time).
    pub submitted_at_ms: u64,
}

/// The value of a call-log key; the key (time + id) carries the information.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallMark;

macro_rules! versioned {
    ($($ty:ty => $version:expr),* $(,)?) => {
        $(impl Versioned for $ty {
            const VERSION: u8 = $version;
            const NAME: &'static str = stringify!($ty);
        })*
    };
}

versioned! {
    QueueEntry => 1,
    RecordRef => 1,
    DedupMark => 1,
    Checkpoint => 1,
    CallMark => 1,
    Unconfirmed => 1,
    Counts => 1,
    Alert => 1,
    AlertState => 1,
    TenantRecord => 1,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::codec::{decode, encode};
    use proptest::prelude::*;

    fn entry() -> QueueEntry {
        QueueEntry {
            fact: EntryFact {
                kind: RecordKind::Gift,
                source: "stripe".into(),
                source_id: "pi_1".into(),
                idempotency_key: "k1".into(),
                lane: Lane::Retry,
                transaction_source: "Stripe".into(),
                body_json: "{}".into(),
            },
            attempts: 2,
            enqueued_at_ms: 0x0102,
            not_before_ms: 3,
        }
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(&text[at..at + 2], 16).unwrap())
            .collect()
    }

    /// "ab" as bincode: u64 LE length then bytes.
    const AB: &str = "02000000000000006162";

    #[test]
    fn golden_bytes_pin_every_stored_type() {
        // Goal: the on-disk format of each stored type is pinned; a change here is a schema change.
        let s1 = "0100000000000000";
        let e = entry();
        let q = format!(
            "01{gift}{src}{sid}{key}{lane}{ts}{body}{att}{enq}{nb}",
            gift = "00000000",
            src = "0600000000000000737472697065",
            sid = "040000000000000070695f31",
            key = "02000000000000006b31",
            lane = "01000000",
            ts = "0600000000000000537472697065",
            body = "02000000000000007b7d",
            att = "02000000",
            enq = "0201000000000000",
            nb = "0300000000000000",
        );
        assert_eq!(hex(&encode(&e).unwrap()), q);

        let mut record = RecordState::new(RecordKind::Contact, "ab", "ab", "ab");
        record.transition(SyncState::Pending, "ab", 1, true);
        record.transition(SyncState::Submitted, "ab", 1, false);
        record.last_seq = Some(1);
        record.remember_key("ab", 1);
        // Version 2: kind, source, source_id, state, idempotency key, last_seq, virtuous_id,
        // updated_at, the history: (at, from, to, reason) twice, then the seen keys.
        let v1_fields = format!(
            "{contact}{AB}{AB}{submitted}{AB}01{s1}00{s1}{two}{s1}00{pending}{AB}{s1}01{pending}{submitted}{AB}",
            contact = "01000000",
            pending = "00000000",
            submitted = "01000000",
            two = "0200000000000000",
        );
        let expected_record = format!("02{v1_fields}{s1}{AB}{s1}");
        assert_eq!(hex(&encode(&record).unwrap()), expected_record);
        // Version 1 bytes (no seen keys) migrate: the latest key is the one seen key.
        let v1_bytes = unhex(&format!("01{v1_fields}"));
        let migrated: RecordState = decode(&v1_bytes).unwrap();
        assert_eq!(migrated, record);

        let r = RecordRef {
            kind: RecordKind::Refund,
            source: "ab".into(),
            source_id: "ab".into(),
        };
        assert_eq!(hex(&encode(&r).unwrap()), format!("0102000000{AB}{AB}"));
        let d = DedupMark {
            seq: 1,
            first_seen_at_ms: 2,
        };
        assert_eq!(hex(&encode(&d).unwrap()), format!("01{s1}0200000000000000"));
        let dl = DeadLetter {
            id: 1,
            entry: e,
            reason: "ab".into(),
            dead_at_ms: 1,
            status: Some(422),
            attempts: 3,
        };
        // Version 2: the v1 fields, then status (Some = 01 + u16 LE) and attempts (u32 LE).
        let dl_v1_fields = format!("{s1}{}{AB}{s1}", &q[2..]);
        assert_eq!(
            hex(&encode(&dl).unwrap()),
            format!("02{dl_v1_fields}01a60103000000")
        );
        // Version 1 bytes migrate: no status, attempts from the entry (2 here).
        let migrated: DeadLetter = decode(&unhex(&format!("01{dl_v1_fields}"))).unwrap();
        assert_eq!(
            migrated,
            DeadLetter {
                status: None,
                attempts: 2,
                ..dl.clone()
            }
        );
        let c = Checkpoint {
            bytes: b"ab".to_vec(),
        };
        assert_eq!(hex(&encode(&c).unwrap()), format!("01{AB}"));
        assert_eq!(hex(&encode(&CallMark).unwrap()), "01");
        let counts = Counts {
            captured: 1,
            duplicates: 2,
            submitted: 3,
            confirmed: 4,
            dead: 5,
            needs_review: 6,
        };
        let counts_hex: String = (1..=6u64).map(|n| hex(&n.to_le_bytes())).collect();
        assert_eq!(hex(&encode(&counts).unwrap()), format!("01{counts_hex}"));
        let alert = Alert {
            code: "ab".into(),
            message: "ab".into(),
            first_at_ms: 1,
            last_at_ms: 1,
            count: 1,
        };
        assert_eq!(
            hex(&encode(&alert).unwrap()),
            format!("01{AB}{AB}{s1}{s1}{s1}")
        );
        let tenant = TenantRecord {
            id: "ab".into(),
            config_json: "ab".into(),
            sealed_secrets: vec![("ab".into(), vec![0xff])],
            state: "ab".into(),
            created_at_ms: 1,
            updated_at_ms: 1,
        };
        assert_eq!(
            hex(&encode(&tenant).unwrap()),
            format!("01{AB}{AB}{s1}{AB}{s1}ff{AB}{s1}{s1}")
        );
    }

    #[test]
    fn golden_bytes_pin_the_alert_state_beside_the_unchanged_alert() {
        // Goal: an alert's lifecycle has its own pinned format (version 1: two Option<u64>),
        // so the Alert bytes written before it need no migration.
        let open = AlertState::default();
        assert_eq!(hex(&encode(&open).unwrap()), "010000");
        let resolved_and_acked = AlertState {
            resolved_at_ms: Some(1),
            acked_at_ms: Some(0x0102),
        };
        assert_eq!(
            hex(&encode(&resolved_and_acked).unwrap()),
            "01010100000000000000010201000000000000"
        );
        let decoded: AlertState = decode(&unhex("0100010201000000000000")).unwrap();
        assert_eq!(
            decoded,
            AlertState {
                resolved_at_ms: None,
                acked_at_ms: Some(0x0102)
            }
        );
    }

    #[test]
    fn history_is_bounded_and_keeps_the_newest() {
        // Goal: the history never exceeds HISTORY_LEN_MAX and drops the oldest transitions.
        let mut record = RecordState::new(RecordKind::Gift, "s", "i", "k");
        for at_ms in 0..(HISTORY_LEN_MAX as u64 + 10) {
            record.transition(SyncState::Retrying, "retry", at_ms, at_ms == 0);
        }
        assert_eq!(record.history.len(), HISTORY_LEN_MAX);
        assert_eq!(record.history[0].at_ms, 10);
        assert_eq!(
            record.history.last().unwrap().at_ms,
            HISTORY_LEN_MAX as u64 + 9
        );
    }

    fn any_lane() -> impl Strategy<Value = Lane> {
        prop::sample::select(Lane::ALL.to_vec())
    }
    fn any_kind() -> impl Strategy<Value = RecordKind> {
        prop::sample::select(vec![
            RecordKind::Gift,
            RecordKind::Contact,
            RecordKind::Refund,
        ])
    }

    proptest! {
        #[test]
        fn queue_entries_round_trip(
            kind in any_kind(), lane in any_lane(), source in ".{0,12}", source_id in ".{0,20}",
            key in ".{0,30}", body in ".{0,200}", attempts: u32, enq: u64, nb: u64,
        ) {
            // Goal: any queue entry decodes to itself.
            let fact = EntryFact { kind, source, source_id, idempotency_key: key, lane,
                transaction_source: "T".into(), body_json: body };
            let e = QueueEntry { fact, attempts, enqueued_at_ms: enq, not_before_ms: nb };
            prop_assert_eq!(decode::<QueueEntry>(&encode(&e).unwrap()).unwrap(), e);
        }

        #[test]
        fn records_and_alerts_round_trip(
            kind in any_kind(), reasons in prop::collection::vec(".{0,10}", 0..5),
            vid in proptest::option::of(".{0,8}"), code in ".{0,10}", count: u64,
        ) {
            // Goal: records with histories and alerts decode to themselves.
            let mut record = RecordState::new(kind, "s", "i", "k");
            for (n, reason) in reasons.iter().enumerate() {
                record.transition(SyncState::Confirmed, reason, n as u64, n == 0);
            }
            record.virtuous_id = vid;
            prop_assert_eq!(decode::<RecordState>(&encode(&record).unwrap()).unwrap(), record);
            let alert = Alert { code, message: "m".into(), first_at_ms: 1, last_at_ms: 2, count };
            prop_assert_eq!(decode::<Alert>(&encode(&alert).unwrap()).unwrap(), alert);
        }
    }
}
