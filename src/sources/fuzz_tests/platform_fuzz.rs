//! Generic HMAC platforms: signature, `parse_event` and `map_event` under arbitrary and
//! mutated input, with the settings shapes of the platform tests (JSON Pointer mappings,
//! minor/major amounts, hex/Base64, body or `{timestamp}.{body}` signing).

use std::collections::BTreeMap;

use jiff::tz::TimeZone;
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{json, Value};
use steward_actors::store::RecordKind;

use super::mutate::{apply, damage_bytes, mutation, Raw};
use super::stripe_fuzz::check_date;
use super::{cases, run, Reach};
use crate::sources::amount::major_to_minor;
use crate::sources::platform::{
    map_event, parse_event, sign, verify_signature, PlatformMapped, PlatformSignatureError,
};
use crate::sources::{idempotency_key, Command};
use crate::tenant::{PlatformEventMapping, PlatformSettings};

const NOW: i64 = 1_750_000_000;
const SOURCE: &str = "auction-co";
const SETTINGS_SHAPES: usize = 3;

/// Pointers the mappings below read: mutations aim here often.
const TARGETS: &[&str] = &[
    "/id",
    "/type",
    "/meta/id",
    "/meta/kind",
    "/data",
    "/data/amount",
    "/data/currency",
    "/data/note",
    "/data/txn",
    "/data/date",
    "/data/method",
    "/data/donor",
    "/data/donor/email",
    "/data/donor/first",
    "/data/donor/last",
    "/data/donor/id",
];

fn event_mapping(kind: &str, fields: &[(&str, &str)]) -> PlatformEventMapping {
    PlatformEventMapping {
        kind: kind.into(),
        fields: fields
            .iter()
            .map(|(field, pointer)| (field.to_string(), pointer.to_string()))
            .collect(),
    }
}

/// Shape 0 is the platform tests' (hex, `sha256=`, body, minor units); shape 1 signs
/// `{timestamp}.{body}` in Base64 with a previous secret, major units and more mapped
/// fields; shape 2 reads the id and type at nested pointers.
fn settings(shape: usize, secret: &str) -> PlatformSettings {
    let mut gift = vec![
        ("amount", "/data/amount"),
        ("contact.email", "/data/donor/email"),
        ("contact.firstName", "/data/donor/first"),
        ("currencyCode", "/data/currency"),
        ("notes", "/data/note"),
    ];
    if shape > 0 {
        gift.extend([
            ("transactionId", "/data/txn"),
            ("giftDate", "/data/date"),
            ("giftType", "/data/method"),
            ("contact.lastName", "/data/donor/last"),
        ]);
    }
    let contact = [
        ("referenceId", "/data/donor/id"),
        ("email", "/data/donor/email"),
    ];
    let events = BTreeMap::from([
        (
            "donation.completed".to_string(),
            event_mapping("gift", &gift),
        ),
        (
            "donor.updated".to_string(),
            event_mapping("contact", &contact),
        ),
    ]);
    let timestamped = shape == 1;
    PlatformSettings {
        secret: Some(secret.into()),
        previous_secret: timestamped.then(|| "old-secret".into()),
        signature_header: "X-Signature".into(),
        encoding: if timestamped { "base64" } else { "hex" }.into(),
        signature_prefix: if timestamped { "" } else { "sha256=" }.into(),
        timestamp_header: timestamped.then(|| "X-Timestamp".into()),
        tolerance_s: 300,
        signed_payload: if timestamped {
            "{timestamp}.{body}"
        } else {
            "body"
        }
        .into(),
        event_id: if shape == 2 { "/meta/id" } else { "/id" }.into(),
        event_type: if shape == 2 { "/meta/kind" } else { "/type" }.into(),
        transaction_source: "AuctionCo".into(),
        amount_unit: if timestamped { "major" } else { "minor" }.into(),
        events,
        poll: None,
    }
}

/// A delivery every shape maps to a command, unmutated.
fn base_event(event_type: &str) -> Value {
    json!({"id": "evt_9", "type": event_type, "meta": {"id": 9, "kind": event_type},
           "data": {"amount": 2500, "currency": "usd", "note": null, "txn": "tx_1",
                    "date": "2025-06-15", "method": "Credit",
                    "donor": {"email": "ann@example.org", "first": "Ann", "last": "Lee", "id": 77}}})
}

/// The promises a command to be queued keeps, whatever the event looked like.
fn check_command(command: &Command, settings: &PlatformSettings) -> Result<(), TestCaseError> {
    // The text queued is JSON (equality is too strict: serde_json reads floats such as
    // 4.0939098197702565e-264 to the neighbouring f64, a passed-through `notes` value).
    let text_queued = &command.fact.body_json;
    prop_assert!(serde_json::from_str::<Value>(text_queued).is_ok_and(|v| v.is_object()));
    let body_value = command.body();
    let body = body_value.as_object().expect("bodies are objects");
    let text = |key: &str| body.get(key).and_then(Value::as_str);
    prop_assert!(!command.fact.source_id.is_empty());
    let transaction_source = Some(settings.transaction_source.as_str());
    match command.fact.kind {
        RecordKind::Gift => {
            prop_assert_eq!(text("transactionSource"), transaction_source);
            prop_assert_eq!(text("transactionId"), Some(command.fact.source_id.as_str()));
            prop_assert_eq!(
                &command.fact.idempotency_key,
                &idempotency_key(SOURCE, RecordKind::Gift, &command.fact.source_id)
            );
            let currency = match body.get("currencyCode") {
                None => "usd",
                Some(code) => code.as_str().unwrap_or_default(),
            };
            prop_assert!(
                currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_alphabetic()),
                "currencyCode {:?}",
                currency
            );
            let amount = text("amount").unwrap_or_default();
            if settings.amount_unit == "minor" {
                let minor = major_to_minor(amount, currency);
                prop_assert!(minor.is_some_and(|m| m > 0), "amount {:?}", amount);
            } else {
                // What amount_text guarantees for major units: digits, optionally `.` and
                // digits (`1.` passes: a decimal parser reads it), not all zeros.
                let (whole, fraction) = amount.split_once('.').unwrap_or((amount, ""));
                let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
                prop_assert!(
                    !whole.is_empty()
                        && digits(whole)
                        && digits(fraction)
                        && amount.bytes().any(|b| (b'1'..=b'9').contains(&b)),
                    "amount {:?}",
                    amount
                );
            }
            check_date(text("giftDate"))?;
            prop_assert!(body.get("contact").is_some_and(Value::is_object));
        }
        RecordKind::Contact => {
            prop_assert_eq!(text("referenceSource"), transaction_source);
            prop_assert_eq!(text("referenceId"), Some(command.fact.source_id.as_str()));
            let expected_start = format!(
                "{}@",
                idempotency_key(SOURCE, RecordKind::Contact, &command.fact.source_id)
            );
            prop_assert!(command.fact.idempotency_key.starts_with(&expected_start));
        }
        RecordKind::Refund => prop_assert!(false, "platforms map no refunds"),
    }
    Ok(())
}

#[test]
fn mutated_platform_events_map_or_refuse_cleanly() {
    // Goal: arbitrary bytes and mutated deliveries never panic parse/map for any settings
    // shape, and every command mapped from them keeps its idempotency, amount and date promises.
    let reach = Reach::default();
    let time_zones = [
        TimeZone::UTC,
        TimeZone::get("Pacific/Kiritimati").expect("bundled tzdb"),
    ];
    let delivery = prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..256).prop_map(Raw),
        6 => (
            any::<bool>(),
            prop::collection::vec(mutation(), 0..4),
            prop::option::weighted(0.1, (any::<Index>(), any::<u8>(), any::<bool>())),
        )
            .prop_map(|(gift, mutations, damage)| {
                let mut doc = base_event(if gift { "donation.completed" } else { "donor.updated" });
                for mutation in &mutations {
                    apply(&mut doc, mutation, TARGETS);
                }
                Raw(damage_bytes(doc.to_string().into_bytes(), damage))
            }),
    ];
    run(
        cases(10_000),
        (0..SETTINGS_SHAPES, delivery),
        |(shape, Raw(raw))| {
            reach.case();
            let settings = settings(shape, "plat-secret");
            let Ok(event) = parse_event(&settings, &raw) else {
                return Ok(());
            };
            reach.parsed();
            let mut reached_command = false;
            for tz in &time_zones {
                if let Ok(PlatformMapped::Command(command)) =
                    map_event(SOURCE, &settings, &event, tz, NOW)
                {
                    check_command(&command, &settings)?;
                    reached_command = true;
                }
            }
            if reached_command {
                reach.mapped_command();
            }
            Ok(())
        },
    );
    reach.report("platform_mutated_events", "mapped_command");
    reach.assert_mapped_share("platform_mutated_events", 30);
}

#[test]
fn platform_signatures_verify_only_untampered_bodies() {
    // Goal: arbitrary headers never panic or pass; a fresh `sign` with either secret verifies;
    // one changed body byte, or another secret, is NoMatch; an old timestamp is StaleTimestamp.
    let reach = Reach::default();
    let input = (
        0..SETTINGS_SHAPES,
        prop_oneof!["\\PC{0,80}", "(sha256=)?[0-9a-fA-F+/=]{0,70}"],
        prop_oneof!["\\PC{0,24}", "-?[0-9]{1,20}"],
        prop::collection::vec(any::<u8>(), 0..256),
        "\\PC{1,40}",
        any::<i64>(),
        any::<Index>(),
        1u8..=255,
    );
    run(
        cases(4000),
        input,
        |(shape, forged, forged_ts, body, secret, now, at, xor)| {
            reach.case();
            let settings = settings(shape, &secret);
            let headers = |signature: String, timestamp: String| {
                move |name: &str| match name {
                    "X-Signature" => Some(signature.clone()),
                    "X-Timestamp" => Some(timestamp.clone()),
                    _ => None,
                }
            };
            let verify = |signature: String, timestamp: String, body: &[u8]| {
                let lookup = headers(signature, timestamp);
                let owned = [lookup("X-Signature"), lookup("X-Timestamp")];
                verify_signature(
                    &settings,
                    |name| match name {
                        "X-Signature" => owned[0].as_deref(),
                        "X-Timestamp" => owned[1].as_deref(),
                        _ => None,
                    },
                    body,
                    now,
                )
            };
            prop_assert!(verify(forged, forged_ts, &body).is_err());
            let age_s = at.index(1 + settings.tolerance_s as usize) as i64;
            let signed_at = now.saturating_sub(age_s);
            let timestamp = settings.timestamp_header.is_some().then_some(signed_at);
            let previous = settings.previous_secret.clone();
            for key in std::iter::once(secret.clone()).chain(previous) {
                let good = sign(&settings, &key, timestamp, &body);
                prop_assert_eq!(verify(good.clone(), signed_at.to_string(), &body), Ok(()));
                reach.mapped_command();
                if !body.is_empty() {
                    let mut tampered = body.clone();
                    tampered[at.index(body.len())] ^= xor;
                    prop_assert_eq!(
                        verify(good, signed_at.to_string(), &tampered),
                        Err(PlatformSignatureError::NoMatch)
                    );
                }
            }
            let wrong = sign(&settings, &format!("{secret}x"), timestamp, &body);
            prop_assert_eq!(
                verify(wrong, signed_at.to_string(), &body),
                Err(PlatformSignatureError::NoMatch)
            );
            if let (Some(_), Some(old)) = (
                timestamp,
                now.checked_sub_unsigned(settings.tolerance_s + 1),
            ) {
                let stale = verify(
                    sign(&settings, &secret, Some(old), &body),
                    old.to_string(),
                    &body,
                );
                prop_assert!(
                    matches!(stale, Err(PlatformSignatureError::StaleTimestamp { .. })),
                    "{:?}",
                    stale
                );
            }
            Ok(())
        },
    );
    reach.report("platform_signatures", "verified");
}

#[test]
fn inputs_the_fuzzer_found_are_refused() {
    // Goal: the minimal inputs the fuzzer found (garbage currency codes, an impossible
    // calendar date) stay mapping errors instead of bodies sent to Virtuous.
    let map = |settings: &PlatformSettings, doc: Value| {
        let event = parse_event(settings, doc.to_string().as_bytes()).expect("parses");
        map_event(SOURCE, settings, &event, &TimeZone::UTC, NOW)
    };
    let mut bad_currency = base_event("donation.completed");
    bad_currency["data"]["currency"] = json!("US|");
    let mapped = map(&settings(0, "s"), bad_currency);
    assert_mapping_error(mapped.map(|_| ()), "currencyCode");
    let mut bad_date = base_event("donation.completed");
    bad_date["data"]["date"] = json!("2025-02-30T10:00:00Z");
    assert_mapping_error(
        map(&settings(1, "s"), bad_date).map(|_| ()),
        "calendar date",
    );
    let good = map(&settings(1, "s"), base_event("donation.completed"));
    assert!(matches!(good, Ok(PlatformMapped::Command(_))), "{good:?}");
}

/// `result` is a mapping error whose reason mentions `words`.
fn assert_mapping_error(result: Result<(), crate::sources::SourceError>, words: &str) {
    match result {
        Err(crate::sources::SourceError::Mapping { reason, .. }) => {
            assert!(reason.contains(words), "{reason}")
        }
        other => panic!("expected a mapping error about {words}, got {other:?}"),
    }
}
