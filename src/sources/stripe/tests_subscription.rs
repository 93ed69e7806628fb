//! Subscription payments on both API-version shapes: one recurring gift, never also a
//! one-time gift (docs/ingress.md "Subscription payments: holds and links").

use jiff::tz::TimeZone;
use serde_json::{json, Value};

use super::tests_payment::{
    event, event_with, map, only_command, patched, settings, BASIL, LEGACY, NOW,
};
use super::*;

/// 2025-06-15T12:00:00Z
const PAID_AT: i64 = 1_749_988_800;
const MONTH_S: i64 = 30 * 86_400;

/// A paid subscription invoice `in_1` of `sub_1` for 20.00 usd, in the era's shape.
fn subscription_invoice(era: ApiEra, billing_reason: &str) -> Value {
    let lines = json!({"data": [{"id": "il_1", "amount": 2000, "currency": "usd",
        "period": {"start": PAID_AT, "end": PAID_AT + MONTH_S},
        "price": {"id": "price_1", "recurring": {"interval": "month", "interval_count": 1}}}]});
    let common = json!({"id": "in_1", "amount_paid": 2000, "currency": "usd", "status": "paid",
        "billing_reason": billing_reason, "customer": "cus_1", "customer_email": "sam@example.org",
        "customer_name": "Sam Donor", "livemode": true, "lines": lines,
        "status_transitions": {"paid_at": PAID_AT, "finalized_at": PAID_AT,
            "marked_uncollectible_at": null, "voided_at": null}});
    let mut invoice = patched("invoice", common);
    match era {
        ApiEra::Legacy => {
            invoice["payment_intent"] = json!("pi_sub");
            invoice["charge"] = json!("ch_sub");
            invoice["subscription"] = json!("sub_1");
            invoice["parent"] = Value::Null;
        }
        ApiEra::Basil => {
            invoice["parent"] = json!({"type": "subscription_details",
                "subscription_details": {"metadata": {}, "subscription": "sub_1"}});
            invoice.as_object_mut().unwrap().remove("subscription");
        }
    }
    invoice
}

/// The PaymentIntent and the charge of the subscription payment, in the era's shape.
fn subscription_payment_objects(era: ApiEra) -> [(&'static str, Value); 2] {
    let mut intent = patched(
        "payment_intent",
        json!({"id": "pi_sub", "amount": 2000, "amount_received": 2000, "status": "succeeded",
               "created": PAID_AT, "customer": "cus_1", "description": "Subscription creation",
               "latest_charge": "ch_sub", "livemode": true}),
    );
    let mut charge = patched(
        "charge",
        json!({"id": "ch_sub", "amount": 2000, "amount_captured": 2000, "captured": true,
               "created": PAID_AT, "customer": "cus_1", "payment_intent": "pi_sub",
               "description": "Subscription creation", "livemode": true}),
    );
    if era == ApiEra::Legacy {
        intent["invoice"] = json!("in_1");
        charge["invoice"] = json!("in_1");
    }
    [
        ("payment_intent.succeeded", intent),
        ("charge.succeeded", charge),
    ]
}

#[test]
fn legacy_subscription_payments_become_one_recurring_gift_from_the_invoice() {
    // Goal: before 2025-03-31 the payment events are skipped and invoice.paid is the gift.
    for (event_type, object) in subscription_payment_objects(ApiEra::Legacy) {
        let mapped = map(&event(event_type, LEGACY, object));
        assert!(
            matches!(mapped, Mapped::Ignored { .. }),
            "{event_type}: {mapped:?}"
        );
    }
    let invoice = subscription_invoice(ApiEra::Legacy, "subscription_create");
    let gift = only_command(map(&event("invoice.paid", LEGACY, invoice)));
    assert_eq!(
        gift.body(),
        json!({
            "transactionSource": "Stripe",
            "transactionId": "pi_sub",
            "amount": "20.00",
            "currencyCode": "USD",
            "giftDate": "2025-06-15",
            "giftType": "Other",
            "contact": {"referenceSource": "Stripe", "referenceId": "cus_1",
                "firstName": "Sam", "lastName": "Donor", "email": "sam@example.org"},
            "designations": [{"code": "GENERAL", "amountDesignated": "20.00"}],
            "recurringGiftTransactionId": "sub_1",
            "frequency": "Monthly",
        })
    );
    assert_eq!(gift.fact.idempotency_key, "stripe:gift:pi_sub");
    assert_eq!(gift.aliases, vec!["evt_1", "in_1", "ch_sub"]);
}

#[test]
fn later_legacy_payments_omit_the_frequency() {
    // Goal: frequency only on the first payment (billing_reason subscription_create).
    let invoice = subscription_invoice(ApiEra::Legacy, "subscription_cycle");
    let gift = only_command(map(&event("invoice.paid", LEGACY, invoice)));
    assert_eq!(gift.body()["recurringGiftTransactionId"], "sub_1");
    assert!(gift.body().get("frequency").is_none());
}

#[test]
fn legacy_invoices_without_a_payment_intent_or_subscription() {
    // Goal: no PaymentIntent → nothing; a one-off invoice → a gift without recurring fields.
    let mut credit_paid = subscription_invoice(ApiEra::Legacy, "subscription_cycle");
    credit_paid["payment_intent"] = Value::Null;
    let mapped = map(&event("invoice.paid", LEGACY, credit_paid));
    assert!(matches!(mapped, Mapped::Ignored { .. }), "{mapped:?}");
    let mut one_off = subscription_invoice(ApiEra::Legacy, "manual");
    one_off["subscription"] = Value::Null;
    let gift = only_command(map(&event("invoice.paid", LEGACY, one_off)));
    assert_eq!(gift.body()["transactionId"], "pi_sub");
    assert!(gift.body().get("recurringGiftTransactionId").is_none());
}

#[test]
fn basil_subscription_payments_are_held_then_linked_into_one_recurring_gift() {
    // Goal: from 2025-03-31 payment events hold (never queue) a gift, invoice.paid and
    // invoice_payment.paid only link, and the link turns the held gift into the recurring one.
    let mut held = Vec::new();
    for (event_type, object) in subscription_payment_objects(ApiEra::Basil) {
        match map(&event(event_type, BASIL, object)) {
            Mapped::Hold {
                payment_id,
                until_s,
                gift,
            } => {
                assert_eq!(payment_id, "pi_sub");
                assert_eq!(until_s, NOW + 120);
                assert!(gift.body().get("recurringGiftTransactionId").is_none());
                held.push(gift);
            }
            other => panic!("{event_type}: expected a hold, got {other:?}"),
        }
    }
    assert_eq!(held[0].fact.idempotency_key, held[1].fact.idempotency_key);
    let invoice = subscription_invoice(ApiEra::Basil, "subscription_create");
    let Mapped::Link(mut link) = map(&event_with("evt_inv", "invoice.paid", BASIL, true, invoice))
    else {
        panic!("a basil invoice.paid must only link");
    };
    assert_eq!(link.subscription_id.as_deref(), Some("sub_1"));
    assert_eq!(link.first_payment_frequency.as_deref(), Some("Monthly"));
    assert!(!link.is_complete());
    let invoice_payment = patched(
        "invoice_payment",
        json!({"id": "inpay_1", "invoice": "in_1", "livemode": true,
               "payment": {"type": "payment_intent", "payment_intent": "pi_sub"}}),
    );
    let Mapped::Link(payment_link) = map(&event_with(
        "evt_inpay",
        "invoice_payment.paid",
        BASIL,
        true,
        invoice_payment,
    )) else {
        panic!("invoice_payment.paid must link");
    };
    assert_eq!(payment_link.invoice_id, "in_1");
    assert_eq!(payment_link.payment_id.as_deref(), Some("pi_sub"));
    link.merge(payment_link);
    assert!(link.is_complete());
    assert_eq!(link.event_ids, vec!["evt_inv", "evt_inpay"]);
    let recurring = apply_link(&held[0], &link);
    assert_eq!(recurring.fact.idempotency_key, "stripe:gift:pi_sub");
    assert_eq!(recurring.body()["transactionId"], "pi_sub");
    assert_eq!(recurring.body()["recurringGiftTransactionId"], "sub_1");
    assert_eq!(recurring.body()["frequency"], "Monthly");
    assert_eq!(recurring.body()["amount"], "20.00");
    assert!(recurring.aliases.contains(&"in_1".to_string()));
}

#[test]
fn basil_payments_that_do_not_look_like_subscriptions_are_never_held() {
    // Goal: only "Subscription creation/update" descriptions hold; others queue at once.
    let [(event_type, mut intent), _] = subscription_payment_objects(ApiEra::Basil);
    intent["description"] = json!("Spring appeal");
    let gift = only_command(map(&event(event_type, BASIL, intent)));
    assert_eq!(gift.body()["transactionId"], "pi_sub");
    let [_, (event_type, mut update)] = subscription_payment_objects(ApiEra::Basil);
    update["description"] = json!("Subscription update");
    assert!(matches!(
        map(&event(event_type, BASIL, update)),
        Mapped::Hold { .. }
    ));
}

#[test]
fn basil_invoices_outside_subscriptions_and_expanded_links() {
    // Goal: a one-off basil invoice maps to nothing; an expanded invoice completes a link alone.
    let mut one_off = subscription_invoice(ApiEra::Basil, "manual");
    one_off["parent"] = Value::Null;
    let mapped = map(&event("invoice.paid", BASIL, one_off));
    assert!(matches!(mapped, Mapped::Ignored { .. }), "{mapped:?}");
    let expanded = patched(
        "invoice_payment",
        json!({"invoice": subscription_invoice(ApiEra::Basil, "subscription_cycle"),
               "payment": {"type": "payment_intent", "payment_intent": {"id": "pi_sub"}}}),
    );
    let Mapped::Link(link) = map(&event("invoice_payment.paid", BASIL, expanded)) else {
        panic!("invoice_payment.paid must link");
    };
    assert!(link.is_complete());
    assert_eq!(link.first_payment_frequency, None);
    let no_invoice = map_event(
        &event(
            "invoice_payment.paid",
            BASIL,
            json!({"id": "x", "payment": {}}),
        ),
        &settings(),
        &TimeZone::UTC,
        NOW,
    )
    .unwrap();
    assert!(matches!(no_invoice, Mapped::Ignored { .. }));
}

#[test]
fn malformed_invoice_amounts_are_rejected_not_ignored_as_zero() {
    // Goal: a legacy invoice.paid whose amount_paid is malformed or missing is rejected (kept, alerted), a true zero ignored.
    for text in super::tests_payment::MALFORMED_AMOUNTS {
        let mut invoice = subscription_invoice(ApiEra::Legacy, "subscription_cycle");
        invoice["amount_paid"] = serde_json::from_str(text).unwrap();
        let mapped = map_event(
            &event("invoice.paid", LEGACY, invoice),
            &settings(),
            &TimeZone::UTC,
            NOW,
        );
        let reason = super::tests_payment::rejected_reason(mapped);
        assert!(reason.contains("amount_paid"), "{text}: {reason}");
    }
    let mut missing = subscription_invoice(ApiEra::Legacy, "subscription_cycle");
    missing.as_object_mut().unwrap().remove("amount_paid");
    let mapped = map_event(
        &event("invoice.paid", LEGACY, missing),
        &settings(),
        &TimeZone::UTC,
        NOW,
    );
    assert!(super::tests_payment::rejected_reason(mapped).contains("no amount"));
    let mut zero = subscription_invoice(ApiEra::Legacy, "subscription_cycle");
    zero["amount_paid"] = json!(0);
    let mapped = map(&event("invoice.paid", LEGACY, zero));
    assert!(matches!(mapped, Mapped::Ignored { .. }), "{mapped:?}");
}
