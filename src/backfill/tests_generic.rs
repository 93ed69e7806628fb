//! Generic mapping tests: the platform model over file rows, filters, the live path's keys
//! and bodies, contacts, money.

use jiff::tz::TimeZone;
use serde_json::{json, Value};
use steward_actors::backfill::{MoneyFact, RowOutcome};
use steward_actors::store::{Lane, RecordKind};

use super::test_support::*;
use crate::sources::platform::{self, PlatformMapped};

/// The live webhook body of an auction-co donation (docs/ingress.md "Generic platforms").
fn donation_event(event_id: &str, donation_id: &str) -> Value {
    json!({"id": event_id, "type": "donation.completed", "data": {
        "donation_id": donation_id, "amount": 123_456, "currency": "usd",
        "paid_at": "2024-11-05T18:30:00Z", "donor": {"email": "ada@example.org"}}})
}

#[test]
fn a_donation_in_a_file_has_the_live_key_and_body() {
    // Goal: the same donation sent live and in an NDJSON file (mapped with the live mapping's
    // pointers) has the same idempotency key, source id and body — plus `batch` — in the
    // backfill lane.
    let tenant = doc();
    let settings = &tenant.sources.platforms["auction-co"];
    let event = platform::parse_event(
        settings,
        donation_event("evt_9", "don_42").to_string().as_bytes(),
    )
    .unwrap();
    let PlatformMapped::Command(live) =
        platform::map_event("auction-co", settings, &event, &TimeZone::UTC, 0).unwrap()
    else {
        panic!("the live donation maps to a command");
    };
    let dir = tempfile::tempdir().unwrap();
    let line = donation_event("evt_other", "don_42").to_string();
    write_file(dir.path(), JOB, "ndjson", format!("{line}\n").as_bytes());
    let fields = &settings.events["donation.completed"].fields;
    let job = spec(
        "auction-co",
        "ndjson",
        json!({"fields": fields}),
        "Auction history",
    );
    let rows = rows_of(dir.path(), tenant.clone(), &job);
    let RowOutcome::Payment {
        entries,
        alerts,
        money,
    } = &rows[0].outcome
    else {
        panic!("{:?}", rows[0].outcome);
    };
    assert!(alerts.is_empty());
    let entry = &entries[0];
    assert_eq!(entry.fact.idempotency_key, live.fact.idempotency_key);
    assert_eq!(entry.fact.idempotency_key, "auction-co:gift:don_42");
    assert_eq!(entry.fact.source_id, "don_42");
    assert_eq!(entry.fact.transaction_source, "AuctionCo");
    assert_eq!((entry.fact.lane, entry.now_ms), (Lane::Backfill, NOW_MS));
    let mut body: Value = serde_json::from_str(&entry.fact.body_json).unwrap();
    assert_eq!(body["batch"], json!("Auction history"));
    body.as_object_mut().unwrap().remove("batch");
    assert_eq!(body, live.body());
    assert_eq!(
        money.as_ref().unwrap(),
        &MoneyFact {
            transaction_id: "don_42".into(),
            day: "2024-11-05".into(),
            project: String::new(),
            amount_minor: 123_456,
            currency: "usd".into(),
        }
    );
}

fn csv_job(filters: Value) -> steward_actors::backfill::JobSpec {
    spec(
        "auction-co",
        "csv",
        json!({"amount_unit": "major", "fields": {"amount": "Amount", "transactionId": "Id",
            "giftDate": "Paid", "contact.email": "Email", "currencyCode": "Currency"},
            "filters": filters}),
        "CSV history",
    )
}

fn read_csv(text: &str, job: &steward_actors::backfill::JobSpec) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    write_file(dir.path(), JOB, "csv", text.as_bytes());
    let rows = rows_of(dir.path(), doc(), job);
    rows.iter().map(summary).collect()
}

#[test]
fn filters_decide_which_rows_are_records() {
    // Goal: `in` keeps listed values, `not_in` drops them; a row left out is skipped with
    // `filtered: {field}={value}`, before any mapping (a filtered row is never rejected).
    let text = "Id,Paid,Amount,Currency,Email,Status,Kind\n\
                d1,2025-01-02,10.00,usd,a@example.org,paid,gift\n\
                d2,2025-01-02,10.00,usd,a@example.org,failed,gift\n\
                d3,2025-01-02,oops,usd,a@example.org,pending,gift\n\
                d4,2025-01-02,10.00,usd,a@example.org,paid,test\n";
    let job = csv_job(json!([{"field": "Status", "in": ["paid"]},
                              {"field": "Kind", "not_in": ["test"]}]));
    assert_eq!(
        read_csv(text, &job),
        [
            "2:payment:auction-co:gift:d1",
            "3:skipped:filtered: Status=failed",
            "4:skipped:filtered: Status=pending",
            "5:skipped:filtered: Kind=test",
        ]
    );
}

#[test]
fn ndjson_filters_compare_numbers_and_booleans_as_text() {
    // Goal: JSON values compare by their JSON text; an absent field reads as "".
    let dir = tempfile::tempdir().unwrap();
    let line = |id: &str, extra: Value| {
        let mut gift =
            json!({"id": id, "amount": 500, "at": "2025-02-03", "email": "a@example.org"});
        for (key, value) in extra.as_object().unwrap() {
            gift[key] = value.clone();
        }
        gift.to_string()
    };
    let text = [
        line("g1", json!({"test": false, "state": 1})),
        line("g2", json!({"test": true, "state": 1})),
        line("g3", json!({"state": 2})),
        line("g4", json!({"test": false})),
    ]
    .join("\n");
    write_file(dir.path(), JOB, "ndjson", text.as_bytes());
    let job = spec(
        "auction-co",
        "ndjson",
        json!({"fields": {"amount": "/amount", "transactionId": "/id", "giftDate": "/at",
            "contact.email": "/email"},
            "filters": [{"field": "/test", "not_in": [true]}, {"field": "/state", "in": [1, ""]}]}),
        "l",
    );
    let rows = rows_of(dir.path(), doc(), &job);
    let summaries: Vec<String> = rows.iter().map(summary).collect();
    assert_eq!(
        summaries,
        [
            "1:payment:auction-co:gift:g1",
            "2:skipped:filtered: /test=true",
            "3:skipped:filtered: /state=2",
            "4:payment:auction-co:gift:g4",
        ]
    );
}

#[test]
fn rows_without_an_id_date_or_amount_are_rejected_with_the_reason() {
    // Goal: a gift row needs its transactionId and giftDate (no event id or day of receipt
    // to fall back on) and a valid amount; each failure is a rejected row, not an error.
    let text = "Id,Paid,Amount,Currency,Email\n\
                ,2025-01-02,10.00,usd,a@example.org\n\
                d2,,10.00,usd,a@example.org\n\
                d3,2025-01-02,-4,usd,a@example.org\n\
                d4,2025-02-30,4,usd,a@example.org\n\
                d5,2025-01-02,4,usd,\n\
                d6,1735776000,\"1,234.5\",usd,a@example.org\n";
    let summaries = read_csv(text, &csv_job(json!([])));
    assert_eq!(summaries[0], "2:rejected:no `transactionId` (column `Id`)");
    assert_eq!(summaries[1], "3:rejected:no `giftDate` (column `Paid`)");
    assert!(
        summaries[2].starts_with("4:rejected:`amount` `-4` is not a positive decimal"),
        "{}",
        summaries[2]
    );
    assert!(
        summaries[3].starts_with("5:rejected:`giftDate` `2025-02-30`"),
        "{}",
        summaries[3]
    );
    assert!(
        summaries[4].starts_with("6:rejected:the contact needs"),
        "{}",
        summaries[4]
    );
    assert_eq!(summaries[5], "7:payment:auction-co:gift:d6");
}

#[test]
fn csv_cells_read_like_the_platform_json() {
    // Goal: unix seconds in a date column date the gift in the tenant's time zone; major
    // amounts with thousands separators keep their value; the money follows.
    let dir = tempfile::tempdir().unwrap();
    let text = "Id,Paid,Amount,Currency,Email\nd6,1735776000,\"1,234.5\",JPY,a@example.org\n";
    write_file(dir.path(), JOB, "csv", text.as_bytes());
    let mut tenant = doc();
    tenant.time_zone = "America/Chicago".into();
    let rows = rows_of(dir.path(), tenant, &csv_job(json!([])));
    let body = first_body(&rows[0]);
    // 2025-01-02T00:00:00Z is still January 1 in Chicago.
    assert_eq!(body["giftDate"], json!("2025-01-01"));
    assert_eq!(body["amount"], json!("1234.5"));
    let RowOutcome::Payment { money, .. } = &rows[0].outcome else {
        panic!()
    };
    // JPY has no minor unit: "1234.5" cannot be counted in yen.
    assert_eq!(money, &None);
}

#[test]
fn contact_rows_are_each_their_own_fact() {
    // Goal: a contact row keys by reference id, job and row (re-reading a chunk repeats the
    // keys: duplicates), with the source's reference source and no `batch`.
    let dir = tempfile::tempdir().unwrap();
    let text = "Donor,Email,First\nu1,a@example.org,Ada\nu1,b@example.org,Ada\n";
    write_file(dir.path(), JOB, "csv", text.as_bytes());
    let job = spec(
        "auction-co",
        "csv",
        json!({"kind": "contact", "fields": {"referenceId": "Donor", "email": "Email", "firstName": "First"}}),
        "People",
    );
    let rows = rows_of(dir.path(), doc(), &job);
    let keys: Vec<String> = rows.iter().map(summary).collect();
    assert_eq!(
        keys,
        [
            "2:payment:auction-co:contact:u1@backfill:b7:2",
            "3:payment:auction-co:contact:u1@backfill:b7:3",
        ]
    );
    let RowOutcome::Payment { entries, money, .. } = &rows[0].outcome else {
        panic!()
    };
    assert_eq!(entries[0].fact.kind, RecordKind::Contact);
    assert_eq!(money, &None);
    let body = first_body(&rows[0]);
    assert_eq!(body["referenceSource"], json!("AuctionCo"));
    assert!(body.get("batch").is_none());
}

#[test]
fn a_generic_stripe_file_uses_stripe_keys_and_transaction_source() {
    // Goal: with source `stripe`, a mapped PaymentIntent id gives the live key
    // `stripe:gift:pi_…` and the tenant's Stripe transaction source; amounts are minor units
    // unless the mapping says otherwise.
    let dir = tempfile::tempdir().unwrap();
    write_file(
        dir.path(),
        JOB,
        "ndjson",
        br#"{"pi": "pi_77", "amount": 2500, "created": 1735689600, "email": "a@example.org"}"#,
    );
    let job = spec(
        "stripe",
        "ndjson",
        json!({"fields": {"amount": "/amount", "transactionId": "/pi", "giftDate": "/created",
            "contact.email": "/email"}}),
        "Stripe API dump",
    );
    let rows = rows_of(dir.path(), doc(), &job);
    assert_eq!(summary(&rows[0]), "1:payment:stripe:gift:pi_77");
    let body = first_body(&rows[0]);
    assert_eq!(body["transactionSource"], json!("Stripe"));
    assert_eq!(body["amount"], json!("25.00"));
    assert_eq!(body["giftDate"], json!("2025-01-01"));
}
