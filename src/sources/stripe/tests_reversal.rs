//! Mapping tests for refunds, disputes and customers.

use serde_json::{json, Value};
use steward_actors::store::{Lane, RecordKind};

use super::reversal::{DISPUTE_ALERT, PARTIAL_REFUND_ALERT};
use super::tests_payment::{event, event_with, map, only_command, patched, BASIL, LEGACY};
use super::*;

/// The charge fixture refunded by `refunded_minor` of its 1000 usd cents.
fn refunded_charge(refunded_minor: i64, payment_intent: Value) -> Value {
    patched(
        "charge",
        json!({"amount": 1000, "amount_captured": 1000, "amount_refunded": refunded_minor,
               "captured": true, "refunded": refunded_minor == 1000, "livemode": true,
               "payment_intent": payment_intent,
               "refunds": {"object": "list", "has_more": false,
                   "data": [{"id": "re_1", "amount": refunded_minor, "charge": "ch_1PgafuB7WZ01zgkWXYmPNZs8"}]}}),
    )
}

#[test]
fn a_full_refund_becomes_a_reversing_transaction_draft_for_the_payment() {
    // Goal: the refund command is keyed to the payment's gift and waits for its Virtuous id.
    let charge = refunded_charge(1000, json!("pi_1"));
    let refund = only_command(map(&event("charge.refunded", LEGACY, charge)));
    assert_eq!(refund.fact.kind, RecordKind::Refund);
    assert_eq!(refund.fact.source_id, "pi_1");
    assert_eq!(refund.fact.idempotency_key, "stripe:refund:pi_1");
    assert_eq!(refund.fact.lane, Lane::Live);
    assert_eq!(
        refund.body(),
        json!({"reversedGiftId": null, "giftDate": "2025-06-15",
               "notes": "Stripe refund of payment pi_1 (charge ch_1PgafuB7WZ01zgkWXYmPNZs8)"})
    );
    assert_eq!(
        refund.aliases,
        vec!["evt_1", "ch_1PgafuB7WZ01zgkWXYmPNZs8", "re_1"]
    );
    let without_intent = refunded_charge(1000, Value::Null);
    let refund = only_command(map(&event("charge.refunded", BASIL, without_intent)));
    assert_eq!(refund.fact.source_id, "ch_1PgafuB7WZ01zgkWXYmPNZs8");
}

#[test]
fn a_partial_refund_is_an_alert_and_queues_nothing() {
    // Goal: Virtuous has no partial reversal, so staff are told with the amounts.
    let charge = refunded_charge(250, json!("pi_1"));
    match map(&event("charge.refunded", BASIL, charge)) {
        Mapped::Alert(alert) => {
            assert_eq!(alert.code, PARTIAL_REFUND_ALERT);
            assert!(
                alert.message.contains("2.50 USD of 10.00"),
                "{}",
                alert.message
            );
            assert!(alert.message.contains("pi_1"), "{}", alert.message);
        }
        other => panic!("expected an alert, got {other:?}"),
    }
}

#[test]
fn a_dispute_withdrawal_reverses_the_gift_once_and_alerts() {
    // Goal: same refund key as a full refund of that payment, plus a dispute alert.
    let dispute = patched(
        "dispute",
        json!({"payment_intent": "pi_1", "livemode": true}),
    );
    let mapped = map(&event("charge.dispute.funds_withdrawn", BASIL, dispute));
    let Mapped::Commands { commands, alerts } = mapped else {
        panic!("expected commands and an alert");
    };
    assert_eq!(commands.len(), 1);
    assert_eq!(commands[0].fact.kind, RecordKind::Refund);
    assert_eq!(commands[0].fact.idempotency_key, "stripe:refund:pi_1");
    assert_eq!(commands[0].body()["reversedGiftId"], Value::Null);
    assert_eq!(
        commands[0].aliases,
        vec![
            "evt_1",
            "dp_1Pgc71B7WZ01zgkWMevJiAUx",
            "ch_1PgafuB7WZ01zgkWXYmPNZs8"
        ]
    );
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].code, DISPUTE_ALERT);
    assert!(
        alerts[0].message.contains("10.00 USD"),
        "{}",
        alerts[0].message
    );
    // The fixture's own dispute has no PaymentIntent: keyed by its charge.
    let charge_only = patched("dispute", json!({"livemode": true}));
    let Mapped::Commands { commands, .. } =
        map(&event("charge.dispute.funds_withdrawn", BASIL, charge_only))
    else {
        panic!("expected commands");
    };
    assert_eq!(commands[0].fact.source_id, "ch_1PgafuB7WZ01zgkWXYmPNZs8");
}

fn named_customer() -> Value {
    patched(
        "customer",
        json!({"name": "Mary Ann Smith", "email": "mary@example.org", "phone": "+15125550100",
               "livemode": true,
               "address": {"line1": "2 Oak Ave", "line2": "Apt 4", "city": "Austin",
                   "state": "TX", "postal_code": "78702", "country": "US"}}),
    )
}

#[test]
fn customers_become_contact_transactions() {
    // Goal: the exact flat contact body with our reference source and the cus_ id.
    let contact = only_command(map(&event("customer.created", BASIL, named_customer())));
    assert_eq!(contact.fact.kind, RecordKind::Contact);
    assert_eq!(contact.fact.source_id, "cus_QXg1o8vcGmoR32");
    assert_eq!(
        contact.body(),
        json!({"referenceSource": "Stripe", "referenceId": "cus_QXg1o8vcGmoR32",
               "firstName": "Mary Ann", "lastName": "Smith", "email": "mary@example.org",
               "phone": "+15125550100", "address1": "2 Oak Ave", "address2": "Apt 4",
               "city": "Austin", "state": "TX", "postal": "78702", "country": "US"})
    );
}

#[test]
fn each_customer_event_is_its_own_fact() {
    // Goal: two updates of one customer are two facts (distinct keys, one record); a
    // re-delivered event keeps its key.
    let first = only_command(map(&event_with(
        "evt_a",
        "customer.updated",
        BASIL,
        true,
        named_customer(),
    )));
    let second = only_command(map(&event_with(
        "evt_b",
        "customer.updated",
        BASIL,
        true,
        named_customer(),
    )));
    let again = only_command(map(&event_with(
        "evt_a",
        "customer.updated",
        BASIL,
        true,
        named_customer(),
    )));
    assert_eq!(first.fact.source_id, second.fact.source_id);
    assert_ne!(first.fact.idempotency_key, second.fact.idempotency_key);
    assert_eq!(first.fact.idempotency_key, again.fact.idempotency_key);
    assert_eq!(
        first.fact.idempotency_key,
        "stripe:contact:cus_QXg1o8vcGmoR32@evt_a"
    );
}

#[test]
fn customers_without_name_or_email_are_ignored() {
    // Goal: the fixture's bare customer adds no unmatchable contact.
    let bare = patched("customer", json!({"livemode": true}));
    let mapped = map(&event("customer.created", BASIL, bare));
    assert!(matches!(mapped, Mapped::Ignored { .. }), "{mapped:?}");
}

#[test]
fn a_refund_with_malformed_amounts_is_rejected_unless_stripe_says_it_is_full() {
    // Goal: a refund whose amounts cannot be read (a string, negative, too large, missing) is
    // a mapping error (200 rejected, kept, alerted), never a "partial refund of 0 of 0"; with
    // `refunded: true` the amounts are not needed and the gift is reversed.
    for (field, bad) in [
        ("amount", json!("1000")),
        ("amount", json!(-1)),
        ("amount_refunded", json!(1e308)),
        ("amount_refunded", Value::Null),
    ] {
        let mut charge = refunded_charge(250, json!("pi_1"));
        charge[field] = bad.clone();
        let result = map_event(
            &event("charge.refunded", BASIL, charge.clone()),
            &tests_payment::settings(),
            &TimeZone::UTC,
            tests_payment::NOW,
        );
        assert!(
            matches!(result, Err(SourceError::Mapping { .. })),
            "{field} = {bad}: {result:?}"
        );
        charge["refunded"] = json!(true);
        let refund = only_command(map(&event("charge.refunded", BASIL, charge)));
        assert_eq!(refund.fact.kind, RecordKind::Refund, "{field} = {bad}");
    }
}

#[test]
fn a_dispute_with_a_malformed_amount_still_reverses_and_says_so() {
    // Goal: the dispute's amount only feeds the alert: an unreadable one is named as such,
    // never "withdrew 0.00", and the gift is still reversed.
    let dispute = patched(
        "dispute",
        json!({"payment_intent": "pi_1", "livemode": true, "amount": "1000"}),
    );
    let Mapped::Commands { commands, alerts } =
        map(&event("charge.dispute.funds_withdrawn", BASIL, dispute))
    else {
        panic!("expected commands and an alert");
    };
    assert_eq!(commands[0].fact.kind, RecordKind::Refund);
    assert!(
        alerts[0]
            .message
            .contains("an amount Stripe sent unreadable"),
        "{}",
        alerts[0].message
    );
    assert!(!alerts[0].message.contains("0.00"), "{}", alerts[0].message);
}
