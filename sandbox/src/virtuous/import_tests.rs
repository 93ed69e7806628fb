use actix_web::web::Bytes;
use serde_json::json;

use super::*;
use crate::virtuous::records::contact_references;

const NOW: u64 = 1_700_000_000_000;

fn gift(transaction_id: &str, contact: Value) -> Bytes {
    Bytes::from(
        json!({"transactionSource": "Stripe", "transactionId": transaction_id, "amount": "10",
            "giftDate": "2026-11-26", "giftType": "Credit", "contact": contact})
        .to_string(),
    )
}

fn import(spec: &OrgSpec, state: &mut OrgState, body: Bytes) -> (ImportReport, Vec<Event>) {
    state.accept(PendingKind::Gift, body, NOW);
    run_import(spec, state, Selection::All, NOW)
}

/// Subscribes to every event the import can fire (events are only built for subscribers).
fn subscribe_all(state: &mut OrgState) {
    let id = state.webhooks.next_id();
    let doc = json!({"payloadUrl": "http://127.0.0.1:9/", "secret": "s", "active": true,
        "giftCreate": true, "contactCreate": true, "contactUpdate": true});
    state
        .webhooks
        .insert(Record::new(id, NOW, doc.as_object().unwrap().clone()));
}

fn contact_of(state: &OrgState, transaction_id: &str) -> u64 {
    let gift = state
        .gifts
        .by_transaction("Stripe", transaction_id)
        .unwrap();
    gift.doc["contactId"].as_u64().unwrap()
}

fn seeded() -> (OrgSpec, OrgState) {
    let spec = OrgSpec::new("o", "k");
    let mut state = OrgState::new(&spec);
    // Contact 1: reference cus_1 + ann@…; contact 2: bob@… with name and postal.
    import(
        &spec,
        &mut state,
        gift(
            "seed-1",
            json!({"referenceId": "cus_1",
        "email": "ann@example.org", "firstName": "Ann", "lastName": "Lee"}),
        ),
    );
    import(
        &spec,
        &mut state,
        gift(
            "seed-2",
            json!({"email": "bob@example.org",
        "firstName": "Bob", "lastName": "Ray", "address": {"postal": "62704"}}),
        ),
    );
    assert_eq!(state.contacts.records.len(), 2);
    (spec, state)
}

#[test]
fn references_win_over_email() {
    // Goal: a known reference matches its contact even when the email names another.
    let (spec, mut state) = seeded();
    import(
        &spec,
        &mut state,
        gift(
            "t1",
            json!({"referenceId": "cus_1", "email": "bob@example.org"}),
        ),
    );
    assert_eq!(contact_of(&state, "t1"), 1);
}

#[test]
fn email_wins_over_name_and_postal() {
    // Goal: without a reference, the email decides before first + last name + postal code.
    let (spec, mut state) = seeded();
    import(
        &spec,
        &mut state,
        gift(
            "t2",
            json!({"email": "ANN@example.org",
        "firstName": "Bob", "lastName": "Ray", "address": {"postal": "62704"}}),
        ),
    );
    assert_eq!(contact_of(&state, "t2"), 1);
}

#[test]
fn name_matches_only_with_the_same_postal_code() {
    // Goal: first + last name match only together with the postal code; else a new contact.
    let (spec, mut state) = seeded();
    import(
        &spec,
        &mut state,
        gift(
            "t3",
            json!({"firstName": "bob", "lastName": "RAY",
        "address": {"postal": " 62704 "}}),
        ),
    );
    assert_eq!(contact_of(&state, "t3"), 2);
    import(
        &spec,
        &mut state,
        gift(
            "t4",
            json!({"firstName": "Bob", "lastName": "Ray",
        "address": {"postal": "10001"}}),
        ),
    );
    assert_eq!(contact_of(&state, "t4"), 3);
}

#[test]
fn matched_contacts_learn_new_references_and_announce_it() {
    // Goal: a new reference on a matched contact is stored and fires ContactUpdate once.
    let (spec, mut state) = seeded();
    subscribe_all(&mut state);
    let (_, events) = import(
        &spec,
        &mut state,
        gift(
            "t5",
            json!({"referenceId": "cus_9",
        "email": "bob@example.org"}),
        ),
    );
    let kinds: Vec<EventKind> = events.iter().map(|event| event.kind).collect();
    assert_eq!(kinds, [EventKind::ContactUpdate, EventKind::GiftCreate]);
    let contact = &state.contacts.records[&2];
    assert!(contact_references(contact).contains(&("Stripe".into(), "cus_9".into())));
    let (_, events) = import(
        &spec,
        &mut state,
        gift("t6", json!({"referenceId": "cus_9"})),
    );
    assert_eq!(events.len(), 1, "nothing new to learn: only GiftCreate");
}

#[test]
fn events_are_built_only_for_subscribed_kinds() {
    // Goal: without a subscription an import builds no webhook models at all.
    let spec = OrgSpec::new("o", "k");
    let mut state = OrgState::new(&spec);
    let (report, events) = import(
        &spec,
        &mut state,
        gift("n1", json!({"email": "n@example.org"})),
    );
    assert_eq!((report.imported, events.len()), (1, 0));
}

#[test]
fn dedup_follows_the_switch() {
    // Goal: a resubmitted transaction is rejected as duplicate only with dedup on.
    let (spec, mut state) = seeded();
    let (report, _) = import(
        &spec,
        &mut state,
        gift("seed-1", json!({"referenceId": "cus_1"})),
    );
    assert_eq!(report.rejected_duplicate, 1);
    assert_eq!(state.gifts.records.len(), 2);
    let mut lenient = spec.clone();
    lenient.dedup_transactions = false;
    let (report, _) = import(
        &lenient,
        &mut state,
        gift("seed-1", json!({"referenceId": "cus_1"})),
    );
    assert_eq!(report.imported, 1);
    assert_eq!(state.gifts.records.len(), 3);
}

#[test]
fn review_share_holds_items_until_approved() {
    // Goal: with review_share 1 everything waits; approval imports it.
    let mut spec = OrgSpec::new("o", "k");
    spec.review_share = 1.0;
    let mut state = OrgState::new(&spec);
    subscribe_all(&mut state);
    let (report, events) = import(
        &spec,
        &mut state,
        gift("r1", json!({"email": "x@example.org"})),
    );
    assert_eq!((report.in_review, report.imported, events.len()), (1, 0, 0));
    assert!(state.gifts.records.is_empty());
    let (report, events) = approve_review(&spec, &mut state, NOW);
    assert_eq!(report.imported, 1);
    assert_eq!(events.len(), 2, "ContactCreate + GiftCreate");
    assert!(state.review.is_empty());
}

#[test]
fn delayed_selection_takes_only_due_items() {
    // Goal: a delayed run imports what was received by the cut-off and leaves the rest.
    let spec = OrgSpec::new("o", "k");
    let mut state = OrgState::new(&spec);
    state.accept(
        PendingKind::Gift,
        gift("d1", json!({"email": "d@example.org"})),
        NOW,
    );
    state.accept(
        PendingKind::Gift,
        gift("d2", json!({"email": "d@example.org"})),
        NOW + 500,
    );
    let (report, _) = run_import(
        &spec,
        &mut state,
        Selection::ReceivedBy(NOW + 100),
        NOW + 600,
    );
    assert_eq!(report.imported, 1);
    assert_eq!(state.pending.len(), 1);
}

#[test]
fn a_full_gift_carries_the_money_reconciliation_reads() {
    // Goal: a FullGift row has the amount, the day, the currency and each designation's
    // project code; its reversal is negative, dated on its own day, and names its gift.
    let spec = OrgSpec::new("o", "k");
    let mut state = OrgState::new(&spec);
    let body = json!({"transactionSource": "Stripe", "transactionId": "m1", "amount": "12.34",
        "currencyCode": "EUR", "giftDate": "2026-11-26", "giftType": "Credit",
        "designations": [{"code": "SPRING", "amountDesignated": "12.34"}],
        "contact": {"email": "m@example.org"}});
    import(&spec, &mut state, Bytes::from(body.to_string()));
    let gift = state.gifts.by_transaction("Stripe", "m1").unwrap().clone();
    let full = super::super::records::gift_full(&gift);
    assert_eq!(full["amount"], json!(12.34));
    assert_eq!(full["giftDate"], "2026-11-26T00:00:00");
    assert_eq!(full["currencyCode"], "EUR");
    assert_eq!(full["giftDesignations"][0]["projectCode"], "SPRING");
    let reversal = json!({"reversedGiftId": gift.id, "giftDate": "2026-12-01", "notes": "refund"});
    state.accept(
        PendingKind::Reversal,
        Bytes::from(reversal.to_string()),
        NOW,
    );
    run_import(&spec, &mut state, Selection::All, NOW);
    let reversed = state
        .gifts
        .records
        .values()
        .find(|record| record.doc.get("reversedGiftId") == Some(&json!(gift.id)))
        .map(super::super::records::gift_full)
        .unwrap();
    assert_eq!(reversed["amount"], json!(-12.34));
    assert_eq!(reversed["giftType"], "ReversingTransaction");
    assert_eq!(reversed["giftDate"], "2026-12-01T00:00:00");
}
