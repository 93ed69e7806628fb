//! Operator actions on the real sled store: dead-letter, replay, discard, paging, lookup.

use super::*;
use crate::store::{EnqueueOutcome, EntryFact, Layout, NewEntry, Store, StoreOptions};

const LAYOUTS: [Layout; 2] = [
    Layout::TreePerTenant,
    Layout::SharedTrees { shard_count: 4 },
];

fn gift(id: &str, now_ms: u64) -> NewEntry {
    NewEntry {
        fact: EntryFact {
            kind: RecordKind::Gift,
            source: "stripe".into(),
            source_id: format!("pi_{id}"),
            idempotency_key: format!("stripe:gift:pi_{id}"),
            lane: Lane::Live,
            transaction_source: "Stripe".into(),
            body_json: format!(r#"{{"transactionSource":"Stripe","transactionId":"pi_{id}"}}"#),
        },
        aliases: vec![format!("evt_{id}"), format!("ch_{id}")],
        now_ms,
    }
}

fn queued_seq(tenant: &TenantStore, entry: NewEntry) -> u64 {
    match tenant.enqueue(vec![entry]).unwrap()[0] {
        EnqueueOutcome::Queued { seq } => seq,
        ref other => panic!("unexpected {other:?}"),
    }
}

fn live_depth(tenant: &TenantStore) -> u64 {
    tenant.lane_stats()[Lane::Live as usize].1.depth
}

#[test]
fn dead_letter_then_replay_edited_keeps_gauges_counts_and_history_exact() {
    // Goal: dead-lettering and replaying move the entry between lane and dead letters with
    // exact lane depth, dead count, record history, the same idempotency key and a fresh seq.
    for layout in LAYOUTS {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Store::open_with_layout(dir.path(), StoreOptions::default(), Some(layout)).unwrap();
        let tenant = store.tenant("hope").unwrap();
        let seq = queued_seq(&tenant, gift("1", 100));
        queued_seq(&tenant, gift("2", 100));
        assert_eq!(live_depth(&tenant), 2);

        let dead = tenant
            .dead_letter_queued_entry(Lane::Live, seq, Some(422), "amount: invalid", 200)
            .unwrap()
            .expect("the entry was queued");
        assert_eq!(dead.id, seq);
        assert_eq!(dead_letter_status(&dead), Some(422));
        assert_eq!(dead_letter_attempts(&dead), 0);
        assert_eq!(live_depth(&tenant), 1);
        assert_eq!(tenant.counts().dead, 1);
        let record = tenant
            .get_record(RecordKind::Gift, "stripe", "pi_1")
            .unwrap()
            .unwrap();
        assert_eq!(record.state, SyncState::Dead);
        assert!(tenant
            .dead_letter_queued_entry(Lane::Live, seq, None, "again", 201)
            .unwrap()
            .is_none());

        let edited = r#"{"transactionSource":"Stripe","transactionId":"pi_1","amount":"1.00"}"#;
        let replayed = tenant
            .replay_dead_letter(seq, Some(edited.to_string()), 300)
            .unwrap()
            .expect("the dead letter exists");
        assert!(replayed.edited);
        assert_ne!(replayed.seq, seq, "a fresh seq at the back of the lane");
        assert_eq!(live_depth(&tenant), 2);
        assert_eq!(tenant.counts().dead, 0);
        assert!(tenant.get_dead_letter(seq).unwrap().is_none());
        let entry = tenant
            .get_queue_entry(Lane::Live, replayed.seq)
            .unwrap()
            .unwrap();
        assert_eq!(entry.fact.body_json, edited);
        assert_eq!(entry.fact.idempotency_key, "stripe:gift:pi_1");
        assert_eq!((entry.attempts, entry.not_before_ms), (0, 300));
        let record = tenant
            .get_record(RecordKind::Gift, "stripe", "pi_1")
            .unwrap()
            .unwrap();
        assert_eq!(record.state, SyncState::Pending);
        assert_eq!(record.last_seq, Some(replayed.seq));
        let last = record.history.last().unwrap();
        assert_eq!(
            (last.from, last.to, last.reason.as_str()),
            (
                Some(SyncState::Dead),
                SyncState::Pending,
                "replayed by operator, edited"
            )
        );
        let queued = tenant.queued_entries_of(&record).unwrap();
        assert_eq!(queued.len(), 1);
        assert_eq!((queued[0].lane, queued[0].seq), (Lane::Live, replayed.seq));
        // The key is still the record's: the same fact captured again is a duplicate.
        assert_eq!(
            tenant.enqueue(vec![gift("1", 400)]).unwrap(),
            [EnqueueOutcome::Duplicate]
        );
        assert!(tenant.replay_dead_letter(seq, None, 500).unwrap().is_none());
    }
}

#[test]
fn discard_removes_the_dead_letter_and_notes_the_history() {
    // Goal: a discard removes only the dead letter, the record stays dead with the reason.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let tenant = store.tenant("hope").unwrap();
    let seq = queued_seq(&tenant, gift("1", 100));
    tenant
        .dead_letter_queued_entry(Lane::Live, seq, Some(400), "bad", 200)
        .unwrap()
        .unwrap();
    let discarded = tenant.discard_dead_letter(seq, 300).unwrap().unwrap();
    assert_eq!(discarded.id, seq);
    assert!(tenant.get_dead_letter(seq).unwrap().is_none());
    assert!(tenant.discard_dead_letter(seq, 301).unwrap().is_none());
    let record = tenant
        .get_record(RecordKind::Gift, "stripe", "pi_1")
        .unwrap()
        .unwrap();
    assert_eq!(record.state, SyncState::Dead);
    assert_eq!(
        record.history.last().unwrap().reason,
        "discarded by operator"
    );
    assert_eq!(tenant.counts().dead, 1);
    assert_eq!(live_depth(&tenant), 0);
}

#[test]
fn dead_letter_pages_follow_ids_and_stop_at_the_section() {
    // Goal: paging returns ids in order after `after`, at most `limit`, nothing of other sections.
    for layout in LAYOUTS {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Store::open_with_layout(dir.path(), StoreOptions::default(), Some(layout)).unwrap();
        let tenant = store.tenant("hope").unwrap();
        let other = store.tenant("other").unwrap();
        let mut seqs = Vec::new();
        for index in 0..5 {
            let seq = queued_seq(&tenant, gift(&index.to_string(), 100));
            tenant
                .dead_letter_queued_entry(Lane::Live, seq, None, "x", 200)
                .unwrap();
            seqs.push(seq);
        }
        let other_seq = queued_seq(&other, gift("9", 100));
        other
            .dead_letter_queued_entry(Lane::Live, other_seq, None, "x", 200)
            .unwrap();
        let ids = |page: Vec<crate::store::DeadLetter>| -> Vec<u64> {
            page.iter().map(|dead| dead.id).collect()
        };
        assert_eq!(ids(tenant.dead_letters_page(None, 2).unwrap()), seqs[..2]);
        assert_eq!(
            ids(tenant.dead_letters_page(Some(seqs[1]), 10).unwrap()),
            seqs[2..]
        );
        assert!(tenant
            .dead_letters_page(Some(seqs[4]), 10)
            .unwrap()
            .is_empty());
        assert!(tenant
            .dead_letters_page(Some(u64::MAX), 10)
            .unwrap()
            .is_empty());
    }
}

#[test]
fn records_are_found_by_key_or_by_any_alias_of_the_same_source() {
    // Goal: lookup by own id, by alias, and an alias owned by the gift still finds the refund.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let tenant = store.tenant("hope").unwrap();
    queued_seq(&tenant, gift("1", 100));
    let mut refund = gift("1", 200);
    refund.fact.kind = RecordKind::Refund;
    refund.fact.idempotency_key = "stripe:refund:pi_1".into();
    refund.aliases = vec!["evt_refund".into()];
    queued_seq(&tenant, refund);
    let by_key = tenant
        .find_record(RecordKind::Gift, "stripe", "pi_1")
        .unwrap()
        .unwrap();
    assert_eq!(by_key.kind, RecordKind::Gift);
    let by_alias = tenant
        .find_record(RecordKind::Gift, "stripe", "ch_1")
        .unwrap()
        .unwrap();
    assert_eq!(by_alias.source_id, "pi_1");
    let refund_by_gift_alias = tenant
        .find_record(RecordKind::Refund, "stripe", "evt_1")
        .unwrap()
        .unwrap();
    assert_eq!(refund_by_gift_alias.kind, RecordKind::Refund);
    assert!(tenant
        .find_record(RecordKind::Gift, "platform", "ch_1")
        .unwrap()
        .is_none());
    assert!(tenant
        .find_record(RecordKind::Contact, "stripe", "evt_1")
        .unwrap()
        .is_none());
    assert!(tenant
        .find_record(RecordKind::Gift, "stripe", "nothing")
        .unwrap()
        .is_none());
}

#[test]
fn reasons_carry_the_status() {
    // Goal: the status round-trips through the reason text; other texts have none.
    assert_eq!(dead_letter_reason(Some(400), "bad"), "HTTP 400: bad");
    assert_eq!(dead_letter_reason(None, "bad"), "bad");
    assert_eq!(
        status_of_reason("retries exhausted; last HTTP 503: x"),
        Some(503)
    );
    assert_eq!(status_of_reason("HTTP 99"), None);
    assert_eq!(status_of_reason("connection refused"), None);
}
