//! Confirmation ops on the real sled store in a temp dir.

use super::*;
use crate::store::{EntryFact, Lane, NewEntry, Store, StoreOptions};

fn open(dir: &std::path::Path) -> Store {
    Store::open(dir, StoreOptions::default()).unwrap()
}

fn gift(source_id: &str, now_ms: u64) -> NewEntry {
    NewEntry {
        fact: EntryFact {
            kind: RecordKind::Gift,
            source: "stripe".into(),
            source_id: source_id.into(),
            idempotency_key: format!("stripe:gift:{source_id}"),
            lane: Lane::Live,
            transaction_source: "Stripe".into(),
            body_json: "{}".into(),
        },
        aliases: Vec::new(),
        now_ms,
    }
}

fn unconfirmed(source_id: &str, submitted_at_ms: u64) -> Unconfirmed {
    Unconfirmed {
        kind: RecordKind::Gift,
        source: "stripe".into(),
        source_id: source_id.into(),
        transaction_source: "Stripe".into(),
        transaction_id: source_id.into(),
        submitted_at_ms,
    }
}

fn confirmation(source_id: &str, ids: &[&str]) -> Confirmation {
    Confirmation {
        kind: RecordKind::Gift,
        source: "stripe".into(),
        source_id: source_id.into(),
        virtuous_ids: ids.iter().map(|id| id.to_string()).collect(),
        via: "reconcile",
    }
}

fn state_of(tenant: &TenantStore, source_id: &str) -> RecordState {
    tenant
        .get_record(RecordKind::Gift, "stripe", source_id)
        .unwrap()
        .unwrap()
}

#[test]
fn submitted_records_are_indexed_once_and_keep_their_first_time() {
    // Goal: mark_submitted moves records to submitted, counts them and indexes each once.
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let tenant = store.tenant("t").unwrap();
    tenant
        .enqueue(vec![gift("pi_1", 10), gift("pi_2", 10)])
        .unwrap();
    let moved = tenant
        .mark_submitted(
            &[
                unconfirmed("pi_1", 100),
                unconfirmed("pi_2", 200),
                unconfirmed("pi_x", 1),
            ],
            300,
        )
        .unwrap();
    assert_eq!(moved, 2, "the unknown record is skipped");
    assert_eq!(state_of(&tenant, "pi_1").state, SyncState::Submitted);
    assert_eq!(tenant.counts().submitted, 2);
    // A re-send keeps the first submission time and does not count again.
    assert_eq!(
        tenant
            .mark_submitted(&[unconfirmed("pi_1", 999)], 400)
            .unwrap(),
        0
    );
    let sources = tenant.unconfirmed_by_source(RecordKind::Gift).unwrap();
    assert_eq!(sources.len(), 1);
    assert_eq!(sources[0].transaction_source, "Stripe");
    assert_eq!(sources[0].oldest_submitted_at_ms, 100);
    assert_eq!(sources[0].records.len(), 2);
    assert_eq!(sources[0].records["pi_1"][0].submitted_at_ms, 100);
    assert!(tenant
        .unconfirmed_by_source(RecordKind::Contact)
        .unwrap()
        .is_empty());
}

#[test]
fn confirmation_moves_state_removes_the_index_key_and_counts() {
    // Goal: a single Virtuous id confirms; the index key goes; counts.confirmed rises once.
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let tenant = store.tenant("t").unwrap();
    tenant
        .enqueue(vec![gift("pi_1", 10), gift("pi_2", 10)])
        .unwrap();
    tenant
        .mark_submitted(&[unconfirmed("pi_1", 100)], 100)
        .unwrap();
    let outcomes = tenant
        .confirm_records(
            &[
                confirmation("pi_1", &["42"]),
                confirmation("pi_2", &["43"]),
                confirmation("pi_9", &["44"]),
            ],
            500,
        )
        .unwrap();
    assert_eq!(
        outcomes,
        vec![
            ConfirmOutcome::Confirmed {
                virtuous_id: "42".into()
            },
            ConfirmOutcome::NotSubmitted {
                state: SyncState::Pending
            },
            ConfirmOutcome::Unknown,
        ]
    );
    let record = state_of(&tenant, "pi_1");
    assert_eq!(record.state, SyncState::Confirmed);
    assert_eq!(record.virtuous_id.as_deref(), Some("42"));
    assert!(record.history.last().unwrap().reason.contains("42"));
    assert!(tenant
        .get_unconfirmed(RecordKind::Gift, "stripe", "pi_1")
        .unwrap()
        .is_none());
    assert_eq!(tenant.counts().confirmed, 1);
    // The same id again changes nothing.
    assert_eq!(
        tenant
            .confirm_records(&[confirmation("pi_1", &["42"])], 600)
            .unwrap(),
        vec![ConfirmOutcome::Unchanged]
    );
    assert_eq!(tenant.counts().confirmed, 1);
}

#[test]
fn duplicates_are_flagged_at_first_sight_and_after_confirmation() {
    // Goal: two ids at once, or a second id after confirmation, → duplicate_detected with every id kept.
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let tenant = store.tenant("t").unwrap();
    tenant
        .enqueue(vec![gift("pi_1", 10), gift("pi_2", 10)])
        .unwrap();
    tenant
        .mark_submitted(&[unconfirmed("pi_1", 100), unconfirmed("pi_2", 100)], 100)
        .unwrap();
    let outcomes = tenant
        .confirm_records(&[confirmation("pi_1", &["10", "9"])], 500)
        .unwrap();
    assert_eq!(
        outcomes,
        vec![ConfirmOutcome::DuplicateDetected {
            virtuous_id: "9".into(),
            all_ids: vec!["9".into(), "10".into()],
        }]
    );
    let record = state_of(&tenant, "pi_1");
    assert_eq!(record.state, SyncState::DuplicateDetected);
    assert_eq!(record.virtuous_id.as_deref(), Some("9"), "numeric order");
    let states: Vec<SyncState> = record.history.iter().map(|t| t.to).collect();
    assert!(states.ends_with(&[SyncState::Confirmed, SyncState::DuplicateDetected]));
    assert!(record.history.last().unwrap().reason.contains("9, 10"));

    tenant
        .confirm_records(&[confirmation("pi_2", &["20"])], 600)
        .unwrap();
    let later = tenant
        .confirm_records(&[confirmation("pi_2", &["20", "21"])], 700)
        .unwrap();
    assert_eq!(
        later,
        vec![ConfirmOutcome::DuplicateDetected {
            virtuous_id: "20".into(),
            all_ids: vec!["20".into(), "21".into()],
        }]
    );
    assert_eq!(state_of(&tenant, "pi_2").virtuous_id.as_deref(), Some("20"));
    assert_eq!(tenant.counts().confirmed, 2, "each record confirmed once");
    assert!(tenant.list_unconfirmed().unwrap().is_empty());
}

#[test]
fn needs_review_leaves_the_index_and_a_late_gift_still_confirms() {
    // Goal: stale records → needs_review (counted, out of the index); a later gift confirms them.
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let tenant = store.tenant("t").unwrap();
    tenant.enqueue(vec![gift("pi_1", 10)]).unwrap();
    tenant
        .mark_submitted(&[unconfirmed("pi_1", 100)], 100)
        .unwrap();
    let moved = tenant
        .mark_needs_review(&[unconfirmed("pi_1", 100)], 100 + 73 * 3_600_000)
        .unwrap();
    assert_eq!(moved, 1);
    let record = state_of(&tenant, "pi_1");
    assert_eq!(record.state, SyncState::NeedsReview);
    assert!(record.history.last().unwrap().reason.contains("73 h"));
    assert_eq!(tenant.counts().needs_review, 1);
    assert!(tenant.list_unconfirmed().unwrap().is_empty());
    let outcomes = tenant
        .confirm_records(&[confirmation("pi_1", &["5"])], 200 + 73 * 3_600_000)
        .unwrap();
    assert_eq!(
        outcomes,
        vec![ConfirmOutcome::Confirmed {
            virtuous_id: "5".into()
        }]
    );
}

#[test]
fn dedup_prune_runs_at_most_daily() {
    // Goal: the retention prune forgets old keys, then refuses to run again within a day.
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let tenant = store.tenant("t").unwrap();
    tenant.enqueue(vec![gift("pi_old", 1_000)]).unwrap();
    let day = DEDUP_PRUNE_INTERVAL_MS;
    let retention = 10 * day;
    let now = 20 * day;
    assert_eq!(tenant.prune_dedup_if_due(retention, now).unwrap(), Some(1));
    assert!(!state_of(&tenant, "pi_old").has_seen("stripe:gift:pi_old"));
    assert_eq!(
        tenant.prune_dedup_if_due(retention, now + day - 1).unwrap(),
        None
    );
    assert_eq!(
        tenant.prune_dedup_if_due(retention, now + day).unwrap(),
        Some(0)
    );
    assert_eq!(tenant.dedup_pruned_at_ms(now + 5 * day).unwrap(), now + day);
}

#[test]
fn a_store_that_never_pruned_starts_the_daily_clock() {
    // Goal: the first read of the prune time stores "now", so a new tenant prunes a day later, not at once.
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let tenant = store.tenant("t").unwrap();
    assert_eq!(tenant.dedup_pruned_at_ms(500).unwrap(), 500);
    assert_eq!(tenant.dedup_pruned_at_ms(900).unwrap(), 500);
    assert_eq!(
        tenant
            .prune_dedup_if_due(1, 500 + DEDUP_PRUNE_INTERVAL_MS - 1)
            .unwrap(),
        None
    );
}
