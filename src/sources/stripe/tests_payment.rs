//! Mapping tests for payments, invoices, holds and links, on Stripe's own fixtures
//! (`fixtures/*.json` are `data.object` shapes; each test wraps one in an event envelope).

use jiff::tz::TimeZone;
use serde_json::{json, Value};
use steward_actors::store::{Lane, RecordKind};

use super::*;

pub(super) const NOW: i64 = 1_750_000_000;
pub(super) const LEGACY: Option<&str> = Some("2024-06-20");
pub(super) const BASIL: Option<&str> = Some("2025-03-31.basil");
/// 2025-06-15T12:00:00Z
const PAID_AT: i64 = 1_749_988_800;

pub(super) fn fixture(name: &str) -> Value {
    let text = match name {
        "charge" => include_str!("fixtures/charge.json"),
        "payment_intent" => include_str!("fixtures/payment_intent.json"),
        "invoice" => include_str!("fixtures/invoice.json"),
        "invoice_payment" => include_str!("fixtures/invoice_payment.json"),
        "customer" => include_str!("fixtures/customer.json"),
        "dispute" => include_str!("fixtures/dispute.json"),
        other => panic!("no fixture {other}"),
    };
    serde_json::from_str(text).unwrap()
}

/// The fixture with top-level fields replaced by `patch`'s.
pub(super) fn patched(name: &str, patch: Value) -> Value {
    let mut object = fixture(name);
    for (key, value) in patch.as_object().unwrap() {
        object[key] = value.clone();
    }
    object
}

/// Wraps `object` in a signed-shape envelope and parses it back (exercising `parse_event`).
pub(super) fn event_with(
    event_id: &str,
    event_type: &str,
    api_version: Option<&str>,
    livemode: bool,
    object: Value,
) -> StripeEvent {
    let envelope = json!({"id": event_id, "object": "event", "api_version": api_version,
        "created": NOW - 5, "data": {"object": object}, "livemode": livemode,
        "pending_webhooks": 1, "request": {"id": null, "idempotency_key": null},
        "type": event_type});
    parse_event(envelope.to_string().as_bytes()).unwrap()
}

pub(super) fn event(event_type: &str, api_version: Option<&str>, object: Value) -> StripeEvent {
    event_with("evt_1", event_type, api_version, true, object)
}

pub(crate) fn settings() -> StripeMapping {
    StripeMapping {
        transaction_source: "Stripe".into(),
        default_project_code: Some("GENERAL".into()),
        default_segment_code: None,
        metadata_project_key: "designation".into(),
        metadata_segment_key: "segment".into(),
        accept_test_events: false,
        subscription_hold_s: 120,
    }
}

pub(super) fn map(event: &StripeEvent) -> Mapped {
    map_event(event, &settings(), &TimeZone::UTC, NOW).unwrap()
}

/// The single command of a `Commands` outcome.
pub(super) fn only_command(mapped: Mapped) -> Command {
    match mapped {
        Mapped::Commands {
            mut commands,
            alerts,
        } => {
            assert_eq!((commands.len(), alerts.len()), (1, 0), "{commands:?}");
            commands.remove(0)
        }
        other => panic!("expected one command, got {other:?}"),
    }
}

fn is_ignored(mapped: &Mapped) -> bool {
    matches!(mapped, Mapped::Ignored { .. })
}

/// A succeeded, captured charge of `pi_1` by Jenny Rosen (the fixture, made live and paid).
fn paid_charge(patch: Value) -> Value {
    let mut charge = patched(
        "charge",
        json!({"amount": 1234, "amount_captured": 1234, "captured": true, "created": PAID_AT,
               "payment_intent": "pi_1", "livemode": true,
               "billing_details": {"name": "Jenny Rosen", "email": "jenny@example.org",
                   "phone": null, "address": {"line1": "1 Main St", "line2": null, "city": "Austin",
                   "state": "TX", "postal_code": "78701", "country": "US"}}}),
    );
    for (key, value) in patch.as_object().unwrap() {
        charge[key] = value.clone();
    }
    charge
}

/// The PaymentIntent of `paid_charge`.
fn paid_intent(patch: Value) -> Value {
    let mut intent = patched(
        "payment_intent",
        json!({"id": "pi_1", "amount": 1234, "amount_received": 1234, "status": "succeeded",
               "created": PAID_AT, "latest_charge": "ch_1PgafuB7WZ01zgkWXYmPNZs8",
               "receipt_email": "jenny@example.org", "livemode": true}),
    );
    for (key, value) in patch.as_object().unwrap() {
        intent[key] = value.clone();
    }
    intent
}

#[test]
fn the_envelope_is_parsed_and_malformed_bodies_are_refused() {
    // Goal: required envelope fields are read; anything missing or mistyped is Malformed.
    let parsed = event("charge.succeeded", BASIL, paid_charge(json!({})));
    assert_eq!(parsed.id, "evt_1");
    assert_eq!(parsed.event_type, "charge.succeeded");
    assert_eq!(parsed.api_version.as_deref(), Some("2025-03-31.basil"));
    assert_eq!(parsed.created_s, NOW - 5);
    assert!(parsed.livemode);
    assert_eq!(parsed.object["id"], "ch_1PgafuB7WZ01zgkWXYmPNZs8");
    let complete = json!({"id": "evt_1", "type": "x", "created": 1, "livemode": true,
        "data": {"object": {}}});
    assert!(parse_event(complete.to_string().as_bytes()).is_ok());
    let mut broken = vec![b"not json".to_vec()];
    for (field, value) in [
        ("id", json!(null)),
        ("type", json!("")),
        ("created", json!("yesterday")),
        ("livemode", json!(null)),
        ("data", json!({"object": "ch_1"})),
    ] {
        let mut envelope = complete.clone();
        envelope[field] = value;
        broken.push(envelope.to_string().into_bytes());
    }
    for body in broken {
        assert!(
            matches!(parse_event(&body), Err(SourceError::Malformed(_))),
            "{}",
            String::from_utf8_lossy(&body)
        );
    }
}

#[test]
fn the_api_era_comes_from_the_version_else_the_shape() {
    // Goal: 2025-03-31 and later are basil; without a version, legacy keys decide.
    let charge = paid_charge(json!({}));
    assert_eq!(event("e", LEGACY, charge.clone()).api_era(), ApiEra::Legacy);
    assert_eq!(event("e", BASIL, charge.clone()).api_era(), ApiEra::Basil);
    let clover = Some("2025-09-30.clover");
    assert_eq!(event("e", clover, charge.clone()).api_era(), ApiEra::Basil);
    let day_before = Some("2025-03-30");
    assert_eq!(
        event("e", day_before, charge.clone()).api_era(),
        ApiEra::Legacy
    );
    let mut legacy_shape = charge.clone();
    legacy_shape["invoice"] = Value::Null;
    assert_eq!(event("e", None, legacy_shape).api_era(), ApiEra::Legacy);
    assert_eq!(event("e", None, charge).api_era(), ApiEra::Basil);
}

#[test]
fn a_charge_becomes_the_exact_gift_transaction_body() {
    // Goal: every field of the gift body follows docs/ingress.md's Stripe mapping for a plain card payment.
    let gift = only_command(map(&event(
        "charge.succeeded",
        BASIL,
        paid_charge(json!({})),
    )));
    assert_eq!(
        gift.body(),
        json!({
            "transactionSource": "Stripe",
            "transactionId": "pi_1",
            "amount": "12.34",
            "currencyCode": "USD",
            "giftDate": "2025-06-15",
            "giftType": "Credit",
            "contact": {"firstName": "Jenny", "lastName": "Rosen", "email": "jenny@example.org",
                "address": {"address1": "1 Main St", "city": "Austin", "state": "TX",
                    "postal": "78701", "country": "US"}},
            "designations": [{"code": "GENERAL", "amountDesignated": "12.34"}],
        })
    );
    assert_eq!(gift.fact.kind, RecordKind::Gift);
    assert_eq!(gift.fact.source, "stripe");
    assert_eq!(gift.fact.source_id, "pi_1");
    assert_eq!(gift.fact.idempotency_key, "stripe:gift:pi_1");
    assert_eq!(gift.fact.lane, Lane::Live);
    assert_eq!(gift.fact.transaction_source, "Stripe");
    assert_eq!(
        gift.aliases,
        vec![
            "evt_1".to_string(),
            "ch_1PgafuB7WZ01zgkWXYmPNZs8".to_string()
        ]
    );
}

#[test]
fn payment_intent_and_charge_events_give_one_gift() {
    // Goal: whichever of the two events arrives, the gift has the same key and transactionId.
    let from_charge = only_command(map(&event_with(
        "evt_charge",
        "charge.succeeded",
        BASIL,
        true,
        paid_charge(json!({})),
    )));
    let from_intent = only_command(map(&event_with(
        "evt_intent",
        "payment_intent.succeeded",
        BASIL,
        true,
        paid_intent(json!({})),
    )));
    assert_eq!(
        from_charge.fact.idempotency_key,
        from_intent.fact.idempotency_key
    );
    assert_eq!(from_charge.fact.source_id, from_intent.fact.source_id);
    for field in [
        "transactionId",
        "amount",
        "currencyCode",
        "giftDate",
        "giftType",
    ] {
        assert_eq!(
            from_charge.body()[field],
            from_intent.body()[field],
            "{field}"
        );
    }
    assert_eq!(from_intent.body()["contact"]["email"], "jenny@example.org");
    assert!(from_intent
        .aliases
        .contains(&"ch_1PgafuB7WZ01zgkWXYmPNZs8".to_string()));
}

#[test]
fn a_charge_without_payment_intent_is_keyed_by_its_own_id() {
    // Goal: transactionId falls back to the charge id.
    let charge = paid_charge(json!({"payment_intent": null}));
    let gift = only_command(map(&event("charge.succeeded", BASIL, charge)));
    assert_eq!(gift.body()["transactionId"], "ch_1PgafuB7WZ01zgkWXYmPNZs8");
    assert_eq!(
        gift.fact.idempotency_key,
        "stripe:gift:ch_1PgafuB7WZ01zgkWXYmPNZs8"
    );
}

#[test]
fn zero_decimal_currencies_are_sent_unchanged() {
    // Goal: jpy 1234 → "1234", usd 1234 → "12.34", with the upper-case currency code.
    let yen = paid_charge(json!({"currency": "jpy"}));
    let gift = only_command(map(&event("charge.succeeded", BASIL, yen)));
    assert_eq!(gift.body()["amount"], "1234");
    assert_eq!(gift.body()["currencyCode"], "JPY");
    assert_eq!(gift.body()["designations"][0]["amountDesignated"], "1234");
    let dollars = only_command(map(&event(
        "charge.succeeded",
        BASIL,
        paid_charge(json!({})),
    )));
    assert_eq!(dollars.body()["amount"], "12.34");
}

#[test]
fn gift_type_follows_the_payment_method() {
    // Goal: charge method details and PaymentIntent method types both drive giftType.
    let cases = [
        (
            json!({"payment_method_details": {"type": "sepa_debit"}}),
            "EFT",
        ),
        (
            json!({"payment_method_details": {"type": "paypal"}}),
            "PayPal",
        ),
        (
            json!({"payment_method_details": {"type": "klarna"}}),
            "Other",
        ),
        (json!({"payment_method_details": null}), "Other"),
    ];
    for (patch, expected) in cases {
        let gift = only_command(map(&event("charge.succeeded", BASIL, paid_charge(patch))));
        assert_eq!(gift.body()["giftType"], expected);
    }
    let single = paid_intent(json!({"payment_method_types": ["us_bank_account"]}));
    let gift = only_command(map(&event("payment_intent.succeeded", BASIL, single)));
    assert_eq!(gift.body()["giftType"], "EFT");
    let several = paid_intent(json!({"payment_method_types": ["card", "link"]}));
    let gift = only_command(map(&event("payment_intent.succeeded", BASIL, several)));
    assert_eq!(gift.body()["giftType"], "Other");
}

#[test]
fn metadata_overrides_the_default_project_and_segment() {
    // Goal: configured metadata keys win; defaults apply otherwise; no project, no designations.
    let tagged = paid_charge(json!({"metadata": {"designation": "WATER", "segment": "SPRING25"}}));
    let gift = only_command(map(&event("charge.succeeded", BASIL, tagged)));
    assert_eq!(
        gift.body()["designations"],
        json!([{"code": "WATER", "amountDesignated": "12.34"}])
    );
    assert_eq!(gift.body()["segment"], "SPRING25");
    let expanded_intent = paid_charge(json!({"metadata": {},
        "payment_intent": {"id": "pi_1", "metadata": {"designation": "SHELTER"}}}));
    let gift = only_command(map(&event("charge.succeeded", BASIL, expanded_intent)));
    assert_eq!(gift.body()["transactionId"], "pi_1");
    assert_eq!(gift.body()["designations"][0]["code"], "SHELTER");
    let mut custom = settings();
    custom.metadata_project_key = "fund/code".into();
    custom.default_segment_code = Some("WEB".into());
    custom.default_project_code = None;
    let slash_key = paid_charge(json!({"metadata": {"fund/code": "FOOD"}}));
    let mapped = map_event(
        &event("charge.succeeded", BASIL, slash_key),
        &custom,
        &TimeZone::UTC,
        NOW,
    );
    let gift = only_command(mapped.unwrap());
    assert_eq!(gift.body()["designations"][0]["code"], "FOOD");
    assert_eq!(gift.body()["segment"], "WEB");
    let mapped = map_event(
        &event("charge.succeeded", BASIL, paid_charge(json!({}))),
        &custom,
        &TimeZone::UTC,
        NOW,
    );
    assert!(only_command(mapped.unwrap())
        .body()
        .get("designations")
        .is_none());
}

#[test]
fn the_donor_comes_from_billing_receipt_email_or_customer() {
    // Goal: each source alone identifies the donor; none at all is a mapping error.
    let no_billing = json!({"billing_details": {"name": null, "email": null, "address": null}});
    let mut receipt_only = paid_charge(no_billing.clone());
    receipt_only["receipt_email"] = json!("r@example.org");
    let gift = only_command(map(&event("charge.succeeded", BASIL, receipt_only)));
    assert_eq!(gift.body()["contact"], json!({"email": "r@example.org"}));
    let mut customer_only = paid_charge(no_billing.clone());
    customer_only["customer"] = json!("cus_9");
    let gift = only_command(map(&event("charge.succeeded", BASIL, customer_only)));
    assert_eq!(
        gift.body()["contact"],
        json!({"referenceSource": "Stripe", "referenceId": "cus_9"})
    );
    let mut one_word = paid_charge(no_billing.clone());
    one_word["billing_details"]["name"] = json!("Cher");
    let gift = only_command(map(&event("charge.succeeded", BASIL, one_word)));
    assert_eq!(gift.body()["contact"], json!({"name": "Cher"}));
    let anonymous = paid_charge(no_billing);
    let error = map_event(
        &event("charge.succeeded", BASIL, anonymous),
        &settings(),
        &TimeZone::UTC,
        NOW,
    );
    assert!(
        matches!(&error, Err(SourceError::Mapping { reason, .. }) if reason.contains("no donor")),
        "{error:?}"
    );
}

#[test]
fn gift_dates_are_in_the_tenant_time_zone() {
    // Goal: a payment at 02:00 UTC is dated the previous day in Chicago.
    let late = paid_charge(json!({"created": 1_749_952_800})); // 2025-06-15T02:00:00Z
    let chicago = TimeZone::get("America/Chicago").unwrap();
    let mapped = map_event(
        &event("charge.succeeded", BASIL, late),
        &settings(),
        &chicago,
        NOW,
    );
    assert_eq!(
        only_command(mapped.unwrap()).body()["giftDate"],
        "2025-06-14"
    );
}

#[test]
fn test_mode_events_are_ignored_unless_accepted() {
    // Goal: livemode false is ignored by default and mapped when accept_test_events is on.
    let test_event = event_with(
        "evt_t",
        "charge.succeeded",
        BASIL,
        false,
        paid_charge(json!({})),
    );
    assert!(is_ignored(&map(&test_event)));
    let mut accepting = settings();
    accepting.accept_test_events = true;
    let mapped = map_event(&test_event, &accepting, &TimeZone::UTC, NOW).unwrap();
    assert_eq!(only_command(mapped).fact.source_id, "pi_1");
}

#[test]
fn uncaptured_charges_and_unknown_types_are_ignored() {
    // Goal: an authorisation is not a gift; an unhandled type is answered and counted only.
    let authorised = paid_charge(json!({"captured": false}));
    assert!(is_ignored(&map(&event(
        "charge.succeeded",
        BASIL,
        authorised
    ))));
    let captured = only_command(map(&event(
        "charge.captured",
        BASIL,
        paid_charge(json!({})),
    )));
    assert_eq!(captured.fact.idempotency_key, "stripe:gift:pi_1");
    let plan = json!({"id": "price_1", "object": "plan"});
    assert!(is_ignored(&map(&event("plan.created", BASIL, plan))));
}

/// The reason of a `rejected` mapping (panics on any other outcome).
pub(super) fn rejected_reason(mapped: Result<Mapped, SourceError>) -> String {
    match mapped {
        Err(SourceError::Mapping { reason, .. }) => reason,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

/// Amounts that are no whole, non-negative number of minor units (JSON text, as Stripe's
/// body would carry it): a string, negative, fractional, `1e308`, 2^63 and 2^64.
pub(super) const MALFORMED_AMOUNTS: [&str; 6] = [
    "\"2500\"",
    "-2500",
    "25.5",
    "1e308",
    "9223372036854775808",
    "18446744073709551616",
];

#[test]
fn malformed_payment_amounts_are_rejected_not_ignored_as_zero() {
    // Goal: a malformed amount in either amount field of a payment is a mapping error (200 rejected, kept, alerted), never "payment of zero".
    for text in MALFORMED_AMOUNTS {
        let bad: Value = serde_json::from_str(text).unwrap();
        let cases = [
            (
                "charge.succeeded",
                paid_charge(json!({"amount_captured": bad.clone()})),
            ),
            (
                "charge.succeeded",
                paid_charge(json!({"amount_captured": 0, "amount": bad.clone()})),
            ),
            (
                "payment_intent.succeeded",
                paid_intent(json!({"amount_received": bad.clone()})),
            ),
            (
                "payment_intent.succeeded",
                paid_intent(json!({"amount_received": null, "amount": bad.clone()})),
            ),
        ];
        for (event_type, object) in cases {
            let mapped = map_event(
                &event(event_type, BASIL, object),
                &settings(),
                &TimeZone::UTC,
                NOW,
            );
            let reason = rejected_reason(mapped);
            assert!(reason.contains("amount"), "{text} {event_type}: {reason}");
        }
    }
    let mut missing = paid_intent(json!({}));
    missing.as_object_mut().unwrap().remove("amount");
    missing.as_object_mut().unwrap().remove("amount_received");
    let mapped = map_event(
        &event("payment_intent.succeeded", BASIL, missing),
        &settings(),
        &TimeZone::UTC,
        NOW,
    );
    assert!(rejected_reason(mapped).contains("no amount"));
}

#[test]
fn a_true_zero_payment_is_ignored() {
    // Goal: a well-formed zero (a 100% coupon, a $0 authorisation) carries nothing for Virtuous: 200 ignored.
    let zero = paid_charge(json!({"amount": 0, "amount_captured": 0}));
    let mapped = map(&event("charge.succeeded", BASIL, zero));
    assert!(is_ignored(&mapped), "{mapped:?}");
    let large = paid_intent(json!({"amount_received": i64::MAX, "amount": i64::MAX}));
    let gift = only_command(map(&event("payment_intent.succeeded", BASIL, large)));
    assert_eq!(gift.body()["amount"], "92233720368547758.07");
}
