//! Capture's source-fact commands against the real sled store.

use super::*;
use crate::store::{EnqueueOutcome, EntryFact, RecordKind, Store, StoreOptions};

fn open() -> (tempfile::TempDir, Store, TenantStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store"), StoreOptions::default()).unwrap();
    let tenant = store.tenant("t1").unwrap();
    (dir, store, tenant)
}

fn rule() -> LinkRule {
    LinkRule {
        state_name: "link".into(),
        index_name: "link_entry".into(),
        kind: RecordKind::Gift,
        source: "stripe".into(),
        target_field: "recurringGiftTransactionId".into(),
        note_field: "frequency".into(),
        late_alert_code: "link_late".into(),
        late_alert_message: "{entry} late for {target} ({link})".into(),
        release_reason: "released: {target} ({link})".into(),
    }
}

fn entry(now_ms: u64) -> NewEntry {
    NewEntry {
        fact: EntryFact {
            kind: RecordKind::Gift,
            source: "stripe".into(),
            source_id: "pi_1".into(),
            idempotency_key: "stripe:gift:pi_1".into(),
            lane: Lane::Live,
            transaction_source: "Stripe".into(),
            body_json: r#"{"transactionId":"pi_1","amount":"20.00"}"#.into(),
        },
        aliases: vec!["ch_1".into()],
        now_ms,
    }
}

fn part(entry_id: Option<&str>, target_id: Option<&str>, event_id: &str) -> LinkPart {
    LinkPart {
        link_id: "in_1".into(),
        entry_id: entry_id.map(str::to_string),
        target_id: target_id.map(str::to_string),
        note: target_id.map(|_| "Monthly".to_string()),
        event_ids: vec![event_id.into()],
    }
}

fn alert_codes(tenant: &TenantStore) -> Vec<String> {
    tenant
        .alerts()
        .unwrap()
        .into_iter()
        .map(|a| a.code)
        .collect()
}

fn hold_fact(not_before_ms: u64) -> SourceFact {
    SourceFact::Hold {
        entry: entry(1_000),
        not_before_ms,
        rule: rule(),
    }
}

fn link_fact(part: LinkPart) -> SourceFact {
    SourceFact::Link { part, rule: rule() }
}

#[test]
fn a_held_entry_is_released_with_the_link_s_change() {
    // Goal: the held entry gets the target and note fields, the link's aliases, and is ready now; a re-delivery is a duplicate.
    let (_dir, _store, tenant) = open();
    assert!(matches!(
        apply(&tenant, hold_fact(1_000_000), 1_000).unwrap(),
        FactOutcome::Held(EnqueueOutcome::Queued { .. })
    ));
    apply(
        &tenant,
        link_fact(part(Some("pi_1"), None, "evt_pay")),
        1_500,
    )
    .unwrap();
    let outcome = apply(
        &tenant,
        link_fact(part(None, Some("sub_1"), "evt_inv")),
        2_000,
    )
    .unwrap();
    assert!(
        matches!(
            outcome,
            FactOutcome::Linked {
                released: true,
                complete: true,
                ..
            }
        ),
        "{outcome:?}"
    );
    let (_, queued) = tenant.scan_lane(Lane::Live, 10).unwrap().pop().unwrap();
    assert_eq!(queued.not_before_ms, 2_000);
    let body: Value = serde_json::from_str(&queued.fact.body_json).unwrap();
    assert_eq!(body["recurringGiftTransactionId"], "sub_1");
    assert_eq!(body["frequency"], "Monthly");
    assert_eq!(
        tenant
            .find_record_by_alias("in_1")
            .unwrap()
            .unwrap()
            .source_id,
        "pi_1"
    );
    assert!(alert_codes(&tenant).is_empty());
    let again = apply(
        &tenant,
        link_fact(part(None, Some("sub_1"), "evt_inv")),
        3_000,
    )
    .unwrap();
    assert!(
        matches!(
            again,
            FactOutcome::Linked {
                duplicate: true,
                ..
            }
        ),
        "{again:?}"
    );
}

#[test]
fn a_link_before_its_entry_queues_the_entry_changed_at_once() {
    // Goal: a complete link stored first: the entry is queued ready with the change, no hold, no alert.
    let (_dir, _store, tenant) = open();
    let outcome = apply(
        &tenant,
        link_fact(part(Some("pi_1"), Some("sub_1"), "evt")),
        1_000,
    )
    .unwrap();
    assert!(matches!(
        outcome,
        FactOutcome::Linked {
            released: false,
            complete: true,
            ..
        }
    ));
    let held = apply(&tenant, hold_fact(1_000_000), 1_000).unwrap();
    assert!(
        matches!(
            held,
            FactOutcome::QueuedLinked(EnqueueOutcome::Queued { .. })
        ),
        "{held:?}"
    );
    let (_, queued) = tenant.scan_lane(Lane::Live, 10).unwrap().pop().unwrap();
    assert!(queued.not_before_ms < 1_000_000);
    assert!(queued.fact.body_json.contains("sub_1"));
    assert!(alert_codes(&tenant).is_empty());
}

#[test]
fn a_link_after_the_hold_ended_alerts_and_changes_nothing() {
    // Goal: an entry whose hold ended keeps its body; staff get the rule's alert with the ids filled in.
    let (_dir, _store, tenant) = open();
    apply(&tenant, hold_fact(1_500), 1_000).unwrap();
    let outcome = apply(
        &tenant,
        link_fact(part(Some("pi_1"), Some("sub_1"), "evt")),
        200_000,
    )
    .unwrap();
    assert!(matches!(
        outcome,
        FactOutcome::Linked {
            released: false,
            ..
        }
    ));
    let (_, queued) = tenant.scan_lane(Lane::Live, 10).unwrap().pop().unwrap();
    assert!(!queued.fact.body_json.contains("recurringGiftTransactionId"));
    let alerts = tenant.alerts().unwrap();
    assert_eq!(alert_codes(&tenant), vec!["link_late".to_string()]);
    assert_eq!(alerts[0].message, "pi_1 late for sub_1 (in_1)");
}

#[test]
fn stored_links_keep_the_field_names_first_stored() {
    // Goal: a link stored by the earlier Stripe route (JSON with Stripe's field names) still reads.
    let stored: StoredLink = serde_json::from_str(
        r#"{"invoice_id":"in_1","payment_id":"pi_1","subscription_id":"sub_1","first_payment_frequency":"Monthly","event_ids":["e"],"applied":true}"#,
    )
    .unwrap();
    assert_eq!(stored.entry_id.as_deref(), Some("pi_1"));
    assert_eq!(stored.target_id.as_deref(), Some("sub_1"));
    assert!(stored.applied && stored.is_complete());
}

#[test]
fn an_event_mark_alerts_once() {
    // Goal: the first mark raises the alert, a re-delivery only reports it was seen.
    let (_dir, _store, tenant) = open();
    let mark = || SourceFact::MarkEvent {
        mark_name: "stripe_event".into(),
        event_id: "evt_1".into(),
        kept: b"{}".to_vec(),
        alert: AlertNote {
            code: "rejected".into(),
            message: "m".into(),
        },
    };
    assert_eq!(
        apply(&tenant, mark(), 1).unwrap(),
        FactOutcome::Marked { first_time: true }
    );
    assert_eq!(
        apply(&tenant, mark(), 2).unwrap(),
        FactOutcome::Marked { first_time: false }
    );
    assert_eq!(tenant.alerts().unwrap()[0].count, 1);
}

#[test]
fn an_enqueue_with_alerts_raises_them_with_the_first_delivery_only() {
    // Goal: the entries and their alerts are written by one command; a re-delivery (duplicate) raises nothing again.
    let (_dir, _store, tenant) = open();
    let fact = || SourceFact::EnqueueWithAlerts {
        entries: vec![entry(1_000)],
        alerts_if_queued: vec![AlertNote {
            code: "dispute".into(),
            message: "a dispute was opened".into(),
        }],
    };
    let first = apply(&tenant, fact(), 1_000).unwrap();
    assert!(
        matches!(&first, FactOutcome::Enqueued(outcomes) if matches!(outcomes[..], [EnqueueOutcome::Queued { .. }])),
        "{first:?}"
    );
    assert_eq!(first.entries_ready(), 1);
    let alerts = tenant.alerts().unwrap();
    assert_eq!(alerts.len(), 1);
    assert_eq!((alerts[0].code.as_str(), alerts[0].count), ("dispute", 1));

    let again = apply(&tenant, fact(), 2_000).unwrap();
    assert_eq!(
        again,
        FactOutcome::Enqueued(vec![EnqueueOutcome::Duplicate])
    );
    assert_eq!(again.entries_ready(), 0);
    assert_eq!(tenant.alerts().unwrap()[0].count, 1, "no second alert");
}
