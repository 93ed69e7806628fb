//! The Stripe export preset against the live path: generated exports in the Dashboard's
//! shape, and the same payment seen live and in a file.

use std::collections::{BTreeMap, BTreeSet};

use jiff::tz::TimeZone;
use serde_json::{json, Value};
use steward_actors::backfill::RowOutcome;
use steward_actors::store::{Lane, RecordKind};

use super::test_support::*;
use crate::sources::stripe::{
    map_event, parse_event, Mapped, StripeMapping, DISPUTE_ALERT, PARTIAL_REFUND_ALERT,
};
use crate::sources::Command;
use crate::tenant::TenantDoc;
use crate::traffic::stripe_export::{export_date, generate_export, live_events, ExportOptions};

fn stripe_settings(tenant: &TenantDoc) -> StripeMapping {
    StripeMapping::from_settings(tenant.sources.stripe.as_ref().unwrap())
}

/// The live gift of a parsed live event.
fn live_gift(body: &str, tenant: &TenantDoc) -> Command {
    let event = parse_event(body.as_bytes()).unwrap();
    match map_event(&event, &stripe_settings(tenant), &TimeZone::UTC, 0).unwrap() {
        Mapped::Commands { mut commands, .. } => commands.remove(0),
        other => panic!("{other:?}"),
    }
}

/// A body without what the export cannot carry (the donor's phone) or what only the
/// backfill adds (`batch`).
fn comparable(mut body: Value) -> Value {
    body.as_object_mut().unwrap().remove("batch");
    if let Some(contact) = body.get_mut("contact").and_then(Value::as_object_mut) {
        contact.remove("phone");
    }
    body
}

#[test]
fn a_generated_export_gives_every_payment_exactly_one_gift() {
    // Goal: on the export's real shape (BOM, CRLF, quoted line breaks, thousands separators,
    // zero-decimal currencies, failed / uncaptured / retried / refunded / disputed payments,
    // 3 % bad rows), read in chunks with a reopen after each: one gift per payment with its
    // amount, bad rows rejected at their row numbers, skipped rows with their reasons,
    // reversals and alerts where the live path makes them, money net of refunds.
    for (seed, bom, crlf) in [(3, true, true), (4, false, false), (5, true, false)] {
        let options = ExportOptions {
            seed,
            payments: 400,
            bom,
            crlf,
            ..ExportOptions::default()
        };
        let export = generate_export(&options);
        let rows = read_export(&export.bytes, doc(), 37);
        assert_eq!(rows.len() as u64, export.data_rows);
        let mut gifts: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        let mut reversed = BTreeSet::new();
        let mut alerts: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut rejected = Vec::new();
        let mut skipped = Vec::new();
        for row in &rows {
            match &row.outcome {
                RowOutcome::Payment {
                    entries,
                    alerts: row_alerts,
                    money,
                } => {
                    let gift = &entries[0];
                    assert_eq!(
                        (gift.fact.kind, gift.fact.lane),
                        (RecordKind::Gift, Lane::Backfill)
                    );
                    let body: Value = serde_json::from_str(&gift.fact.body_json).unwrap();
                    assert_eq!(body["batch"], json!("Stripe 2025"));
                    let currency = body["currencyCode"].as_str().unwrap().to_ascii_lowercase();
                    let amount = crate::sources::amount::major_to_minor(
                        body["amount"].as_str().unwrap(),
                        &currency,
                    )
                    .unwrap();
                    let net = money.as_ref().unwrap().amount_minor;
                    let previous = gifts.insert(gift.fact.source_id.clone(), (amount, net));
                    assert!(previous.is_none(), "two gifts for {}", gift.fact.source_id);
                    for entry in &entries[1..] {
                        assert_eq!(entry.fact.kind, RecordKind::Refund);
                        reversed.insert(entry.fact.source_id.clone());
                    }
                    for alert in row_alerts {
                        alerts
                            .entry(alert.code.clone())
                            .or_default()
                            .insert(gift.fact.source_id.clone());
                    }
                }
                RowOutcome::Rejected { .. } => rejected.push(row.row),
                RowOutcome::Skipped { reason } => skipped.push((row.row, reason.clone())),
            }
        }
        let expected: BTreeMap<String, (i64, i64)> = export
            .payments
            .iter()
            .map(|p| (p.payment_id.clone(), (p.amount_minor, p.net_minor())))
            .collect();
        assert_eq!(gifts, expected, "seed {seed}");
        assert_eq!(rejected, export.bad_rows, "seed {seed}");
        let bad_share = export.bad_rows.len() as f64 / export.data_rows as f64;
        assert!((0.025..0.035).contains(&bad_share), "{bad_share}");
        assert_eq!(skipped, export.skipped_rows, "seed {seed}");
        assert_eq!(
            reversed,
            export.reversed_payment_ids().into_iter().collect()
        );
        let partial: BTreeSet<String> = export.partially_refunded_ids().into_iter().collect();
        assert_eq!(
            alerts
                .get(PARTIAL_REFUND_ALERT)
                .cloned()
                .unwrap_or_default(),
            partial
        );
        let disputes: BTreeSet<String> = export.withdrawn_dispute_ids().into_iter().collect();
        assert_eq!(
            alerts.get(DISPUTE_ALERT).cloned().unwrap_or_default(),
            disputes
        );
        for trait_present in [
            !partial.is_empty(),
            !disputes.is_empty(),
            !export.bad_rows.is_empty(),
        ] {
            assert!(trait_present, "seed {seed}: the export lacks a trait");
        }
        assert!(export
            .payments
            .iter()
            .any(|p| p.currency == "jpy" || p.currency == "krw"));
        assert!(export.payments.iter().any(|p| p.intent_id.is_none()));
    }
}

#[test]
fn a_payment_seen_live_and_in_the_export_is_one_gift() {
    // Goal: for the payments the export also sends live, both live events (PaymentIntent and
    // charge) and the export row give the same idempotency key, source id, transaction source
    // and body fields: all of the charge event's (the export carries no phone; the backfill
    // adds `batch`), and all but the donor's name and address of the PaymentIntent event's.
    let tenant = doc();
    let options = ExportOptions {
        seed: 11,
        payments: 300,
        live_share: 0.1,
        ..ExportOptions::default()
    };
    let export = generate_export(&options);
    assert_eq!(export.live_payment_ids.len(), 30);
    let rows = read_export(&export.bytes, tenant.clone(), 1_000);
    for payment_id in &export.live_payment_ids {
        let payment = export.payment(payment_id).unwrap();
        let row = rows.iter().find(|row| row.row == payment.row).unwrap();
        let RowOutcome::Payment { entries, .. } = &row.outcome else {
            panic!("{row:?}")
        };
        let file_gift = &entries[0];
        let events = live_events(payment);
        assert_eq!(
            events.len(),
            if payment.intent_id.is_some() { 2 } else { 1 }
        );
        for event in events {
            let live = live_gift(&event.body, &tenant);
            assert_eq!(
                file_gift.fact.idempotency_key, live.fact.idempotency_key,
                "{}",
                event.event_type
            );
            assert_eq!(file_gift.fact.source_id, live.fact.source_id);
            assert_eq!(
                file_gift.fact.transaction_source,
                live.fact.transaction_source
            );
            let file_body = comparable(serde_json::from_str(&file_gift.fact.body_json).unwrap());
            let live_body = comparable(live.body());
            if event.event_type == "charge.succeeded" {
                assert_eq!(file_body, live_body);
            } else {
                // A PaymentIntent event names its donor only by email and customer (its
                // latest charge is not expanded): every other field is the same.
                let without_contact = |body: &Value| {
                    let mut body = body.clone();
                    body.as_object_mut().unwrap().remove("contact");
                    body
                };
                assert_eq!(without_contact(&file_body), without_contact(&live_body));
                for field in ["email", "referenceId", "referenceSource"] {
                    assert_eq!(file_body["contact"][field], live_body["contact"][field]);
                }
            }
        }
    }
}

#[test]
fn the_charge_fixture_as_an_export_row_matches_its_live_mapping() {
    // Goal: Stripe's own charge fixture, captured and named, maps to the same key and body
    // whether it arrives as `charge.succeeded` or as the export row the Dashboard writes
    // for it; its full refund to the same reversal key and notes.
    let tenant = doc();
    let fixture: Value =
        serde_json::from_str(include_str!("../sources/stripe/fixtures/charge.json")).unwrap();
    let mut charge = fixture.clone();
    for (key, value) in [
        ("captured", json!(true)),
        ("amount", json!(123_456)),
        ("amount_captured", json!(123_456)),
        ("livemode", json!(true)),
        ("payment_intent", json!("pi_fixture")),
        ("receipt_email", json!("jenny.rosen@example.com")),
        ("customer", json!("cus_fixture")),
        ("metadata", json!({"designation": "SHELTER"})),
    ] {
        charge[key] = value;
    }
    let envelope = |event_type: &str, object: &Value| {
        json!({"id": "evt_fixture", "object": "event", "api_version": "2024-06-20",
            "created": object["created"], "data": {"object": object}, "livemode": true,
            "type": event_type})
        .to_string()
    };
    let live = live_gift(&envelope("charge.succeeded", &charge), &tenant);
    let created = charge["created"].as_i64().unwrap();
    let row = paid_row(&[
        ("id", charge["id"].as_str().unwrap()),
        ("Created (UTC)", &export_date(created)),
        ("Amount", "1,234.56"),
        ("Customer Email", "jenny.rosen@example.com"),
        ("Customer ID", "cus_fixture"),
        ("Card Name", "Jenny Rosen"),
        ("PaymentIntent ID", "pi_fixture"),
        ("designation (metadata)", "SHELTER"),
    ]);
    let rows = read_export(&export_of(std::slice::from_ref(&row)), tenant.clone(), 10);
    let RowOutcome::Payment { entries, .. } = &rows[0].outcome else {
        panic!()
    };
    assert_eq!(entries[0].fact.idempotency_key, "stripe:gift:pi_fixture");
    assert_eq!(entries[0].fact.idempotency_key, live.fact.idempotency_key);
    let file_body: Value = serde_json::from_str(&entries[0].fact.body_json).unwrap();
    assert_eq!(comparable(file_body), comparable(live.body()));
    // Its full refund.
    let mut refunded = charge.clone();
    refunded["refunded"] = json!(true);
    refunded["amount_refunded"] = json!(123_456);
    let event = parse_event(envelope("charge.refunded", &refunded).as_bytes()).unwrap();
    let Mapped::Commands { commands, .. } =
        map_event(&event, &stripe_settings(&tenant), &TimeZone::UTC, 0).unwrap()
    else {
        panic!()
    };
    let mut refunded_row = row;
    refunded_row.insert("Amount Refunded", "1,234.56".into());
    let rows = read_export(&export_of(&[refunded_row]), tenant, 10);
    let RowOutcome::Payment { entries, .. } = &rows[0].outcome else {
        panic!()
    };
    assert_eq!(
        entries[1].fact.idempotency_key,
        commands[0].fact.idempotency_key
    );
    let file_reversal: Value = serde_json::from_str(&entries[1].fact.body_json).unwrap();
    assert_eq!(file_reversal["notes"], commands[0].body()["notes"]);
}
