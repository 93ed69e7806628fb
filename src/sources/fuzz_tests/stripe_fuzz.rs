//! Stripe: signature, `parse_event` and `map_event` under arbitrary and mutated input.

use jiff::tz::TimeZone;
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{json, Value};
use steward_actors::store::RecordKind;

use super::mutate::{apply, damage_bytes, mutation, odd_value, Raw};
use super::{cases, run, Reach};
use crate::sources::amount::major_to_minor;
use crate::sources::stripe::{
    apply_link, map_event, parse_event, sign_header, verify_signature, Mapped, SignatureError,
    StripeMapping, SubscriptionLink,
};
use crate::sources::{idempotency_key, Command};

const NOW: i64 = 1_750_000_000;
const API_VERSIONS: [Option<&str>; 4] = [
    None,
    Some("2024-06-20"),
    Some("2025-03-31.basil"),
    Some("x"),
];

/// Every event type `map_event` handles.
const HANDLED_TYPES: [&str; 9] = [
    "payment_intent.succeeded",
    "charge.succeeded",
    "charge.captured",
    "invoice.paid",
    "invoice_payment.paid",
    "charge.refunded",
    "charge.dispute.funds_withdrawn",
    "customer.created",
    "customer.updated",
];

/// Pointers the Stripe mappings read: mutations aim here often, so they reach the rules.
const TARGETS: &[&str] = &[
    "/id",
    "/type",
    "/created",
    "/livemode",
    "/api_version",
    "/data/object",
    "/data/object/id",
    "/data/object/object",
    "/data/object/amount",
    "/data/object/amount_received",
    "/data/object/amount_captured",
    "/data/object/amount_paid",
    "/data/object/amount_refunded",
    "/data/object/currency",
    "/data/object/created",
    "/data/object/customer",
    "/data/object/receipt_email",
    "/data/object/billing_details",
    "/data/object/latest_charge",
    "/data/object/payment_intent",
    "/data/object/charge",
    "/data/object/invoice",
    "/data/object/description",
    "/data/object/metadata",
    "/data/object/captured",
    "/data/object/refunded",
    "/data/object/deleted",
    "/data/object/email",
    "/data/object/name",
    "/data/object/subscription",
    "/data/object/billing_reason",
    "/data/object/status_transitions",
    "/data/object/payment_method_types",
    "/data/object/payment",
];

/// `object` with top-level fields replaced by `patch`'s.
fn with(mut object: Value, patch: Value) -> Value {
    for (key, value) in patch.as_object().expect("patches are objects") {
        object[key] = value.clone();
    }
    object
}

/// Real Stripe objects (this repo's fixtures), patched as the mapping tests patch them so
/// that, unmutated, each maps to a command (or a hold / link), with the event type reading them.
fn bases() -> Vec<(&'static str, Value)> {
    let parse = |text: &str| -> Value { serde_json::from_str(text).expect("fixture is JSON") };
    let intent = parse(include_str!("../stripe/fixtures/payment_intent.json"));
    let charge = parse(include_str!("../stripe/fixtures/charge.json"));
    let invoice = parse(include_str!("../stripe/fixtures/invoice.json"));
    vec![
        (
            "payment_intent.succeeded",
            with(
                intent.clone(),
                json!({"receipt_email": "ann@example.org",
            "amount_received": 1234, "latest_charge": "ch_1", "metadata": {"designation": "P1"}}),
            ),
        ),
        (
            "payment_intent.succeeded",
            with(
                intent,
                json!({"customer": "cus_1", "amount_received": 2000,
            "description": "Subscription creation", "invoice": null}),
            ),
        ),
        (
            "charge.succeeded",
            with(
                charge.clone(),
                json!({"captured": true, "amount_captured": 1234,
            "payment_intent": "pi_1"}),
            ),
        ),
        (
            "charge.refunded",
            with(
                charge,
                json!({"amount_refunded": 100, "refunded": true,
            "payment_intent": "pi_1"}),
            ),
        ),
        (
            "invoice.paid",
            with(
                invoice,
                json!({"payment_intent": "pi_sub", "amount_paid": 2000,
            "customer_email": "ann@example.org", "subscription": "sub_1",
            "billing_reason": "subscription_create"}),
            ),
        ),
        (
            "invoice_payment.paid",
            with(
                parse(include_str!("../stripe/fixtures/invoice_payment.json")),
                json!({"invoice": "in_1", "payment": {"type": "payment_intent", "payment_intent": "pi_sub"}}),
            ),
        ),
        (
            "customer.updated",
            with(
                parse(include_str!("../stripe/fixtures/customer.json")),
                json!({"name": "Mary Ann Smith", "email": "mary@example.org", "phone": "+15125550100"}),
            ),
        ),
        (
            "charge.dispute.funds_withdrawn",
            parse(include_str!("../stripe/fixtures/dispute.json")),
        ),
    ]
}

fn mapping(accept_test_events: bool) -> StripeMapping {
    StripeMapping {
        accept_test_events,
        ..crate::sources::stripe::tests_payment::settings()
    }
}

fn time_zones() -> [TimeZone; 3] {
    [
        TimeZone::UTC,
        TimeZone::get("Pacific/Kiritimati").expect("bundled tzdb"),
        TimeZone::get("America/Chicago").expect("bundled tzdb"),
    ]
}

/// The promises a command to be queued keeps, whatever the event looked like.
fn check_command(command: &Command, settings: &StripeMapping) -> Result<(), TestCaseError> {
    // The text queued is JSON (equality is too strict: serde_json reads floats such as
    // 4.0939098197702565e-264 to the neighbouring f64, a passed-through `notes` value).
    let text_queued = &command.fact.body_json;
    prop_assert!(serde_json::from_str::<Value>(text_queued).is_ok_and(|v| v.is_object()));
    let body_value = command.body();
    let body = body_value.as_object().expect("bodies are objects");
    let text = |key: &str| body.get(key).and_then(Value::as_str);
    prop_assert!(!command.fact.source_id.is_empty());
    match command.fact.kind {
        RecordKind::Gift => {
            prop_assert_eq!(
                text("transactionSource"),
                Some(settings.transaction_source.as_str())
            );
            prop_assert_eq!(text("transactionId"), Some(command.fact.source_id.as_str()));
            prop_assert_eq!(
                &command.fact.idempotency_key,
                &idempotency_key("stripe", RecordKind::Gift, &command.fact.source_id)
            );
            let currency = text("currencyCode").unwrap_or_default();
            prop_assert!(
                currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase()),
                "currencyCode {:?}",
                currency
            );
            let amount = text("amount").unwrap_or_default();
            let minor = major_to_minor(amount, currency);
            prop_assert!(
                minor.is_some_and(|m| m > 0),
                "amount {:?} {}",
                amount,
                currency
            );
            if let Some(designations) = body.get("designations") {
                prop_assert_eq!(
                    designations,
                    &json!([{"code": designations[0]["code"], "amountDesignated": amount}])
                );
            }
            check_date(text("giftDate"))?;
            prop_assert!(body.get("contact").is_some_and(Value::is_object));
        }
        RecordKind::Contact => {
            prop_assert_eq!(
                text("referenceSource"),
                Some(settings.transaction_source.as_str())
            );
            prop_assert_eq!(text("referenceId"), Some(command.fact.source_id.as_str()));
            let prefix = idempotency_key("stripe", RecordKind::Contact, &command.fact.source_id);
            let expected_start = format!("{prefix}@");
            prop_assert!(command.fact.idempotency_key.starts_with(&expected_start));
        }
        RecordKind::Refund => {
            prop_assert_eq!(
                &command.fact.idempotency_key,
                &idempotency_key("stripe", RecordKind::Refund, &command.fact.source_id)
            );
            check_date(text("giftDate"))?;
        }
    }
    Ok(())
}

/// A real calendar date `YYYY-MM-DD`.
pub(super) fn check_date(date: Option<&str>) -> Result<(), TestCaseError> {
    let date = date.unwrap_or_default();
    prop_assert!(
        date.len() == 10 && date.parse::<jiff::civil::Date>().is_ok(),
        "giftDate {:?}",
        date
    );
    Ok(())
}

/// Parses and maps `raw` with every settings shape; counts what it reached.
fn parse_and_map(raw: &[u8], reach: &Reach) -> Result<(), TestCaseError> {
    reach.case();
    let Ok(event) = parse_event(raw) else {
        return Ok(());
    };
    reach.parsed();
    let mut reached_command = false;
    for accept_test_events in [false, true] {
        let settings = mapping(accept_test_events);
        for tz in &time_zones() {
            // A SourceError is a clean refusal; only an Ok outcome has promises to check.
            let commands = match map_event(&event, &settings, tz, NOW) {
                Ok(Mapped::Commands { commands, .. }) => commands,
                Ok(Mapped::Hold {
                    gift, payment_id, ..
                }) => {
                    prop_assert_eq!(&gift.fact.source_id, &payment_id);
                    let link = SubscriptionLink {
                        invoice_id: "in_1".into(),
                        payment_id: Some(payment_id),
                        subscription_id: Some("sub_1".into()),
                        first_payment_frequency: Some("Monthly".into()),
                        event_ids: vec![event.id.clone()],
                    };
                    vec![apply_link(&gift, &link), gift]
                }
                _ => Vec::new(),
            };
            for command in &commands {
                check_command(command, &settings)?;
            }
            reached_command |= !commands.is_empty();
        }
    }
    if reached_command {
        reach.mapped_command();
    }
    Ok(())
}

#[test]
fn arbitrary_bytes_never_panic_the_stripe_parser() {
    // Goal: parse_event (and map_event on whatever parses) never panics on arbitrary bytes.
    let reach = Reach::default();
    // Raw bytes, text, and envelopes of odd values (these get past the JSON parser).
    let event_type = prop_oneof![
        prop::sample::select(HANDLED_TYPES.to_vec()).prop_map(Value::from),
        odd_value(),
    ];
    let id = prop_oneof![4 => Just(json!("evt_1")), 1 => odd_value()];
    let created = prop_oneof![4 => Just(json!(NOW)), 1 => odd_value()];
    let livemode = prop_oneof![4 => any::<bool>().prop_map(Value::from), 1 => odd_value()];
    let keys = prop::sample::select(vec![
        "id",
        "object",
        "amount",
        "amount_received",
        "amount_captured",
        "amount_paid",
        "currency",
        "customer",
        "receipt_email",
        "description",
        "invoice",
        "payment_intent",
        "created",
        "refunded",
        "captured",
        "email",
        "name",
        "charge",
        "subscription",
    ]);
    let object = prop_oneof![
        3 => prop::collection::btree_map(keys, odd_value(), 0..8)
            .prop_map(|fields| json!(fields)),
        1 => odd_value(),
    ];
    let envelope = (id, event_type, created, livemode, object).prop_map(
        |(id, event_type, created, livemode, object)| {
            json!({"id": id, "type": event_type, "created": created, "livemode": livemode,
                   "data": {"object": object}})
            .to_string()
            .into_bytes()
        },
    );
    let bytes = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        "\\PC{0,200}".prop_map(String::into_bytes),
        envelope,
    ];
    run(cases(5000), bytes.prop_map(Raw), |Raw(raw)| {
        parse_and_map(&raw, &reach)
    });
    reach.report("stripe_arbitrary_input", "mapped_command");
}

#[test]
fn mutated_stripe_events_map_or_refuse_cleanly() {
    // Goal: real events with random structural mutations never panic parse/map, and every
    // command mapped from them keeps its idempotency, amount and date promises.
    let reach = Reach::default();
    let bases = bases();
    let input = (
        any::<Index>(),
        any::<Index>(),
        any::<bool>(),
        prop::collection::vec(mutation(), 0..4),
        prop::option::weighted(0.1, (any::<Index>(), any::<u8>(), any::<bool>())),
    );
    run(
        cases(8000),
        input,
        |(base, version, livemode, mutations, damage)| {
            let (event_type, object) = &bases[base.index(bases.len())];
            let mut doc = json!({"id": "evt_1", "object": "event", "type": event_type,
            "api_version": API_VERSIONS[version.index(API_VERSIONS.len())],
            "created": NOW - 5, "livemode": livemode, "data": {"object": object}});
            for mutation in &mutations {
                apply(&mut doc, mutation, TARGETS);
            }
            let raw = damage_bytes(doc.to_string().into_bytes(), damage);
            parse_and_map(&raw, &reach)
        },
    );
    reach.report("stripe_mutated_events", "mapped_command");
    // Most mutations leave the fields the rules read alone: a good share must still map.
    reach.assert_mapped_share("stripe_mutated_events", 30);
}

#[test]
fn stripe_signatures_verify_only_untampered_bodies() {
    // Goal: arbitrary headers never panic or pass; a fresh sign_header verifies; one changed
    // body byte is NoMatch; a timestamp outside the tolerance is StaleTimestamp.
    let reach = Reach::default();
    let header = prop_oneof![
        "\\PC{0,80}",
        "(t=-?[0-9]{1,20}|v1=[0-9a-f]{0,64}|v0=x|=|,| ){0,10}",
    ];
    let input = (
        header,
        prop::collection::vec(any::<u8>(), 0..256),
        "\\PC{1,40}",
        any::<i64>(),
        0u64..100_000,
        any::<Index>(),
        1u8..=255,
    );
    run(
        cases(4000),
        input,
        |(header, body, secret, now, tolerance_s, at, xor)| {
            reach.case();
            let secrets = [secret.as_str(), "whsec_other"];
            prop_assert!(verify_signature(&header, &body, &secrets, tolerance_s, now).is_err());
            let age_s = (at.index(1 + tolerance_s as usize)) as i64;
            let signed_at = now.saturating_sub(age_s);
            let good = sign_header(&secret, signed_at, &body);
            prop_assert_eq!(
                verify_signature(&good, &body, &secrets, tolerance_s, now),
                Ok(())
            );
            reach.mapped_command();
            if !body.is_empty() {
                let mut tampered = body.clone();
                tampered[at.index(body.len())] ^= xor;
                prop_assert_eq!(
                    verify_signature(&good, &tampered, &secrets, tolerance_s, now),
                    Err(SignatureError::NoMatch)
                );
            }
            if let Some(late) = now.checked_add_unsigned(tolerance_s + 1) {
                let stale = verify_signature(
                    &sign_header(&secret, now, &body),
                    &body,
                    &secrets,
                    tolerance_s,
                    late,
                );
                prop_assert!(
                    matches!(stale, Err(SignatureError::StaleTimestamp { .. })),
                    "{:?}",
                    stale
                );
            }
            Ok(())
        },
    );
    reach.report("stripe_signatures", "verified");
}

#[test]
fn currencies_the_fuzzer_found_are_refused() {
    // Goal: the minimal inputs the fuzzer found (`12$`, `a b` as currency) stay mapping
    // errors, while the same payment in `usd` maps to a gift.
    let (event_type, object) = bases().remove(0);
    let map = |currency: &str| {
        let doc = json!({"id": "evt_1", "type": event_type, "created": NOW, "livemode": true,
            "data": {"object": with(object.clone(), json!({"currency": currency}))}});
        let event = parse_event(doc.to_string().as_bytes()).expect("parses");
        map_event(&event, &mapping(false), &TimeZone::UTC, NOW)
    };
    for garbage in ["12$", "a b"] {
        let mapped = map(garbage);
        assert!(
            matches!(&mapped, Err(crate::sources::SourceError::Mapping { reason, .. }) if reason.contains("currency")),
            "{garbage}: {mapped:?}"
        );
    }
    assert!(matches!(map("usd"), Ok(Mapped::Commands { .. })));
}
