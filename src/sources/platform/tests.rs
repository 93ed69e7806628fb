use std::collections::BTreeMap;

use jiff::tz::TimeZone;
use serde_json::{json, Value};
use steward_actors::store::RecordKind;

use super::*;
use crate::tenant::{PlatformEventMapping, PlatformSettings};

const NOW: i64 = 1_750_000_000;

/// An example platform (docs/ingress.md "Generic platforms"), plus a contact event.
fn settings() -> PlatformSettings {
    let mut events = BTreeMap::new();
    events.insert(
        "donation.completed".to_string(),
        PlatformEventMapping {
            kind: "gift".into(),
            fields: [
                ("amount", "/data/amount"),
                ("contact.email", "/data/donor/email"),
                ("contact.firstName", "/data/donor/first"),
                ("currencyCode", "/data/currency"),
                ("notes", "/data/note"),
            ]
            .into_iter()
            .map(|(field, pointer)| (field.to_string(), pointer.to_string()))
            .collect(),
        },
    );
    events.insert(
        "donor.updated".to_string(),
        PlatformEventMapping {
            kind: "contact".into(),
            fields: [
                ("referenceId", "/data/donor/id"),
                ("email", "/data/donor/email"),
            ]
            .into_iter()
            .map(|(field, pointer)| (field.to_string(), pointer.to_string()))
            .collect(),
        },
    );
    PlatformSettings {
        secret: Some("plat-secret".into()),
        previous_secret: None,
        signature_header: "X-Signature".into(),
        encoding: "hex".into(),
        signature_prefix: "sha256=".into(),
        timestamp_header: None,
        tolerance_s: 300,
        signed_payload: "body".into(),
        event_id: "/id".into(),
        event_type: "/type".into(),
        transaction_source: "AuctionCo".into(),
        amount_unit: "minor".into(),
        events,
        poll: None,
    }
}

fn donation(amount: Value) -> Value {
    json!({"id": "evt_9", "type": "donation.completed",
           "data": {"amount": amount, "currency": "usd", "note": null,
                    "donor": {"email": "ann@example.org", "first": "Ann", "id": 77}}})
}

fn map(settings: &PlatformSettings, root: &Value) -> Result<PlatformMapped, SourceError> {
    let event = parse_event(settings, root.to_string().as_bytes())?;
    map_event("auction-co", settings, &event, &TimeZone::UTC, NOW)
}

fn command(mapped: Result<PlatformMapped, SourceError>) -> Command {
    match mapped {
        Ok(PlatformMapped::Command(command)) => command,
        other => panic!("expected a command, got {other:?}"),
    }
}

#[test]
fn a_donation_becomes_a_gift_transaction() {
    // Goal: mapped fields nest, minor units convert, defaults fill the required fields.
    let gift = command(map(&settings(), &donation(json!(2550))));
    assert_eq!(gift.fact.kind, RecordKind::Gift);
    assert_eq!(gift.fact.source, "auction-co");
    assert_eq!(gift.fact.source_id, "evt_9");
    assert_eq!(gift.fact.idempotency_key, "auction-co:gift:evt_9");
    assert_eq!(gift.fact.transaction_source, "AuctionCo");
    assert_eq!(
        gift.body(),
        json!({"amount": "25.50", "currencyCode": "USD", "transactionId": "evt_9",
               "transactionSource": "AuctionCo", "giftDate": "2025-06-15", "giftType": "Other",
               "contact": {"email": "ann@example.org", "firstName": "Ann"}})
    );
}

#[test]
fn a_mapped_transaction_id_wins_over_the_event_id() {
    // Goal: `fields.transactionId` names the gift; the event id becomes an alias.
    let mut settings = settings();
    let mapping = settings.events.get_mut("donation.completed").unwrap();
    mapping
        .fields
        .insert("transactionId".into(), "/data/donation_id".into());
    let mut root = donation(json!(100));
    root["data"]["donation_id"] = json!(12345);
    let gift = command(map(&settings, &root));
    assert_eq!(gift.fact.source_id, "12345");
    assert_eq!(gift.body()["transactionId"], "12345");
    assert_eq!(gift.fact.idempotency_key, "auction-co:gift:12345");
    assert_eq!(gift.aliases, vec!["evt_9".to_string()]);
}

#[test]
fn major_amounts_and_zero_decimal_currencies() {
    // Goal: major units pass through as decimals; jpy minor units have no decimals.
    let mut major = settings();
    major.amount_unit = "major".into();
    assert_eq!(
        command(map(&major, &donation(json!(25.5)))).body()["amount"],
        "25.5"
    );
    assert_eq!(
        command(map(&major, &donation(json!("10.00")))).body()["amount"],
        "10.00"
    );
    let mut root = donation(json!(1500));
    root["data"]["currency"] = json!("jpy");
    assert_eq!(command(map(&settings(), &root)).body()["amount"], "1500");
}

#[test]
fn bad_amounts_and_missing_donors_are_mapping_errors() {
    // Goal: nothing invented: no amount, zero, fractions of minor units, no contact → errors.
    for amount in [json!(0), json!(-5), json!(12.5), json!("abc"), json!(true)] {
        let mapped = map(&settings(), &donation(amount.clone()));
        assert!(
            matches!(mapped, Err(SourceError::Mapping { .. })),
            "{amount}: {mapped:?}"
        );
    }
    let mut no_amount = donation(json!(1));
    no_amount["data"].as_object_mut().unwrap().remove("amount");
    assert!(matches!(
        map(&settings(), &no_amount),
        Err(SourceError::Mapping { .. })
    ));
    let mut no_donor = donation(json!(100));
    no_donor["data"].as_object_mut().unwrap().remove("donor");
    let Err(SourceError::Mapping { reason, .. }) = map(&settings(), &no_donor) else {
        panic!("expected a mapping error")
    };
    assert!(reason.contains("contact"), "{reason}");
    let mut mapped_source = settings();
    mapped_source
        .events
        .get_mut("donation.completed")
        .unwrap()
        .fields
        .insert("transactionSource".into(), "/type".into());
    assert!(matches!(
        map(&mapped_source, &donation(json!(1))),
        Err(SourceError::Mapping { .. })
    ));
}

#[test]
fn a_donor_update_becomes_a_contact_transaction() {
    // Goal: referenceSource/referenceId set; each event is its own fact.
    let root = json!({"id": "evt_c1", "type": "donor.updated",
                      "data": {"donor": {"id": 77, "email": "ann@example.org"}}});
    let contact = command(map(&settings(), &root));
    assert_eq!(contact.fact.kind, RecordKind::Contact);
    assert_eq!(contact.fact.source_id, "77");
    assert_eq!(contact.fact.idempotency_key, "auction-co:contact:77@evt_c1");
    assert_eq!(
        contact.body(),
        json!({"referenceId": "77", "referenceSource": "AuctionCo", "email": "ann@example.org"})
    );
    let no_reference = json!({"id": "evt_c2", "type": "donor.updated", "data": {"donor": {}}});
    assert!(matches!(
        map(&settings(), &no_reference),
        Err(SourceError::Mapping { .. })
    ));
}

#[test]
fn unknown_types_are_ignored_and_broken_envelopes_malformed() {
    // Goal: an unmapped type is Ignored; a body without id or type is Malformed.
    let ignored = map(&settings(), &json!({"id": "e", "type": "auction.closed"}));
    assert!(
        matches!(ignored, Ok(PlatformMapped::Ignored { .. })),
        "{ignored:?}"
    );
    for root in [
        json!({"type": "x"}),
        json!({"id": "e"}),
        json!({"id": "", "type": "x"}),
        json!([1]),
    ] {
        assert!(
            matches!(map(&settings(), &root), Err(SourceError::Malformed(_))),
            "{root}"
        );
    }
    assert!(matches!(
        parse_event(&settings(), b"{nope"),
        Err(SourceError::Malformed(_))
    ));
}

#[test]
fn gift_dates_come_from_strings_seconds_or_the_clock() {
    // Goal: ISO strings are cut to the date; unix seconds use the tenant's zone.
    let tz = TimeZone::get("America/Chicago").unwrap();
    assert_eq!(
        gift_date(&json!("2025-01-02T23:00:00Z"), &tz).unwrap(),
        "2025-01-02"
    );
    // 2025-06-15T03:00:00Z is still June 14 in Chicago.
    assert_eq!(gift_date(&json!(1_749_956_400), &tz).unwrap(), "2025-06-14");
    assert!(gift_date(&json!("June 1"), &tz).is_err());
}

fn headers<'a>(pairs: &'a [(&'a str, String)]) -> impl Fn(&str) -> Option<&'a str> {
    move |name: &str| {
        pairs
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

#[test]
fn hex_and_base64_signatures_verify_with_either_secret() {
    // Goal: both encodings, the prefix, and the previous secret during a rotation.
    let body = br#"{"id":"e1","type":"donation.completed"}"#;
    for encoding in ["hex", "base64"] {
        let mut settings = settings();
        settings.encoding = encoding.into();
        let good = sign(&settings, "plat-secret", None, body);
        assert!(good.starts_with("sha256="));
        let pairs = [("x-signature", good)];
        assert_eq!(
            verify_signature(&settings, headers(&pairs), body, NOW),
            Ok(())
        );
        let tampered = br#"{"id":"e2","type":"donation.completed"}"#;
        assert_eq!(
            verify_signature(&settings, headers(&pairs), tampered, NOW),
            Err(PlatformSignatureError::NoMatch)
        );
        let old = [("X-Signature", sign(&settings, "old-secret", None, body))];
        assert_eq!(
            verify_signature(&settings, headers(&old), body, NOW),
            Err(PlatformSignatureError::NoMatch)
        );
        settings.previous_secret = Some("old-secret".into());
        assert_eq!(
            verify_signature(&settings, headers(&old), body, NOW),
            Ok(())
        );
    }
}

#[test]
fn timestamped_signatures_check_the_tolerance_after_the_signature() {
    // Goal: `{timestamp}.{body}` signs the timestamp; stale is reported only to signers.
    let mut settings = settings();
    settings.timestamp_header = Some("X-Timestamp".into());
    settings.signed_payload = "{timestamp}.{body}".into();
    let body = b"{}";
    let fresh = [
        (
            "X-Signature",
            sign(&settings, "plat-secret", Some(NOW - 10), body),
        ),
        ("X-Timestamp", (NOW - 10).to_string()),
    ];
    assert_eq!(
        verify_signature(&settings, headers(&fresh), body, NOW),
        Ok(())
    );
    let stale = [
        (
            "X-Signature",
            sign(&settings, "plat-secret", Some(NOW - 400), body),
        ),
        ("X-Timestamp", (NOW - 400).to_string()),
    ];
    assert_eq!(
        verify_signature(&settings, headers(&stale), body, NOW),
        Err(PlatformSignatureError::StaleTimestamp {
            age_s: 400,
            tolerance_s: 300
        })
    );
    let moved = [fresh[0].clone(), ("X-Timestamp", (NOW - 11).to_string())];
    assert_eq!(
        verify_signature(&settings, headers(&moved), body, NOW),
        Err(PlatformSignatureError::NoMatch)
    );
    let missing = [fresh[0].clone()];
    assert_eq!(
        verify_signature(&settings, headers(&missing), body, NOW),
        Err(PlatformSignatureError::MissingHeader("X-Timestamp".into()))
    );
}

#[test]
fn a_signature_without_its_prefix_or_secret_never_matches() {
    // Goal: a missing prefix, bad encoding or an empty secret refuse.
    let body = b"{}";
    let settings = settings();
    let bare = sign(&settings, "plat-secret", None, body).replace("sha256=", "");
    assert_eq!(
        verify_signature(&settings, headers(&[("X-Signature", bare)]), body, NOW),
        Err(PlatformSignatureError::NoMatch)
    );
    assert_eq!(
        verify_signature(
            &settings,
            headers(&[("X-Signature", "sha256=zz".into())]),
            body,
            NOW
        ),
        Err(PlatformSignatureError::NoMatch)
    );
    let mut empty = settings.clone();
    empty.secret = Some(String::new());
    let signed = sign(&empty, "", None, body);
    assert_eq!(
        verify_signature(&empty, headers(&[("X-Signature", signed)]), body, NOW),
        Err(PlatformSignatureError::NoMatch)
    );
    assert_eq!(
        verify_signature(&settings, headers(&[]), body, NOW),
        Err(PlatformSignatureError::MissingHeader("X-Signature".into()))
    );
}

#[test]
fn a_polled_platforms_contact_event_with_an_update_time_is_a_versioned_fact() {
    // Goal: when the platform is also polled and the event carries the record's update time
    // at `poll.item_updated_at`, the contact's fact id is `{referenceId}@{unix seconds}` (the
    // poll path's id); without the time, or without `poll`, it stays `{referenceId}@{event id}`.
    let mut polled = settings();
    polled.poll = Some(
        serde_json::from_value(json!({"url": "embedded", "item_updated_at": "/data/changed"}))
            .unwrap(),
    );
    let root = json!({"id": "evt_c1", "type": "donor.updated",
                      "data": {"changed": "2026-01-01T00:00:05+01:00",
                               "donor": {"id": 77, "email": "ann@example.org"}}});
    let versioned = command(map(&polled, &root));
    assert_eq!(
        versioned.fact.idempotency_key,
        "auction-co:contact:77@1767222005"
    );
    let unpolled = command(map(&settings(), &root));
    assert_eq!(
        unpolled.fact.idempotency_key,
        "auction-co:contact:77@evt_c1"
    );
    let mut no_time = root.clone();
    no_time["data"]["changed"] = json!("soon");
    let by_event = command(map(&polled, &no_time));
    assert_eq!(
        by_event.fact.idempotency_key,
        "auction-co:contact:77@evt_c1"
    );
}

#[test]
fn update_times_read_as_iso_seconds_or_milliseconds() {
    // Goal: ISO 8601 with an offset, unix seconds (fractions too) and unix ms are read;
    // dates without a time, junk and times before 1970 are not.
    assert_eq!(
        version_ms_of(&json!("2026-01-01T00:00:00.5Z")),
        Some(1_767_225_600_500)
    );
    assert_eq!(
        version_ms_of(&json!(1_767_225_600)),
        Some(1_767_225_600_000)
    );
    assert_eq!(
        version_ms_of(&json!(1_767_225_600.25)),
        Some(1_767_225_600_250)
    );
    assert_eq!(
        version_ms_of(&json!(1_767_225_600_123u64)),
        Some(1_767_225_600_123)
    );
    for bad in [
        json!("2026-01-01"),
        json!("x"),
        json!(-5),
        json!(null),
        json!([1]),
    ] {
        assert_eq!(version_ms_of(&bad), None, "{bad}");
    }
}
