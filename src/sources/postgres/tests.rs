use serde_json::{json, Map, Value};
use steward_actors::store::{Lane, RecordKind};

use super::*;
use crate::tenant::PostgresSourceSettings;

fn settings(extra: Value) -> PostgresSourceSettings {
    let mut doc = json!({
        "dsn": "host=127.0.0.1 user=steward dbname=events",
        "mode": "logical",
        "transaction_source": "Events DB",
        "tables": {
            "public.gifts": {"primary_key": ["id"], "kind": "gift",
                "fields": {"amount": "/amount", "contact.email": "/email", "giftDate": "/given_at"}},
            "public.people": {"primary_key": ["org", "id"], "kind": "contact",
                "fields": {"referenceId": "/id", "email": "/email"}}
        }
    });
    if let (Some(doc), Some(extra)) = (doc.as_object_mut(), extra.as_object()) {
        for (key, value) in extra {
            doc.insert(key.clone(), value.clone());
        }
    }
    serde_json::from_value(doc).unwrap()
}

fn row(value: Value) -> Map<String, Value> {
    value.as_object().unwrap().clone()
}

fn gift_row(amount: &str) -> Map<String, Value> {
    row(
        json!({"id": "42", "amount": amount, "email": "d@example.org",
               "given_at": "2026-12-07 23:13:21.881667+00"}),
    )
}

#[test]
fn a_gift_row_is_one_fact_whatever_its_version() {
    let mapper = RowMapper::new("events", &settings(json!({})), "UTC");
    let first = mapper
        .map_row("public.gifts", gift_row("12.50"), Lane::Live, 1_000)
        .unwrap();
    assert_eq!(first.len(), 1);
    let fact = &first[0].fact;
    assert_eq!(fact.kind, RecordKind::Gift);
    assert_eq!(fact.idempotency_key, "events:gift:public.gifts:42");
    assert_eq!(fact.source_id, "public.gifts:42");
    assert_eq!(fact.lane, Lane::Live);
    let body: Value = serde_json::from_str(&fact.body_json).unwrap();
    assert_eq!(body["amount"], "12.50");
    assert_eq!(body["giftDate"], "2026-12-07");
    assert_eq!(body["transactionId"], "public.gifts:42");
    assert_eq!(body["transactionSource"], "Events DB");
    assert_eq!(body["contact"]["email"], "d@example.org");
    // The same row again, in the snapshot's lane: the same key and fingerprint.
    let again = mapper
        .map_row("public.gifts", gift_row("12.50"), Lane::Backfill, 9_000)
        .unwrap();
    assert_eq!(again[0].fact.idempotency_key, fact.idempotency_key);
    assert_eq!(again[0].fact.lane, Lane::Backfill);
    assert_eq!(again[0].aliases, first[0].aliases);
    // Another amount: the same key, another fingerprint (the machinery's alert).
    let changed = mapper
        .map_row("public.gifts", gift_row("13.00"), Lane::Live, 9_000)
        .unwrap();
    assert_eq!(changed[0].fact.idempotency_key, fact.idempotency_key);
    assert_ne!(changed[0].aliases, first[0].aliases);
    assert!(changed[0].aliases[0].starts_with("events:fp:public.gifts:42:"));
}

#[test]
fn a_timestamptz_gift_date_is_the_day_in_the_tenant_s_time_zone() {
    let mapper = RowMapper::new("events", &settings(json!({})), "America/Chicago");
    let mut row = gift_row("1.00");
    row.insert("given_at".into(), json!("2026-12-07 00:03:00+00"));
    let entries = mapper
        .map_row("public.gifts", row.clone(), Lane::Live, 1)
        .unwrap();
    let body: Value = serde_json::from_str(&entries[0].fact.body_json).unwrap();
    assert_eq!(
        body["giftDate"], "2026-12-06",
        "18:03 in Chicago the day before"
    );
    // A plain `date` column is the day it says.
    row.insert("given_at".into(), json!("2026-12-07"));
    let entries = mapper.map_row("public.gifts", row, Lane::Live, 1).unwrap();
    let body: Value = serde_json::from_str(&entries[0].fact.body_json).unwrap();
    assert_eq!(body["giftDate"], "2026-12-07");
}

#[test]
fn a_contact_row_is_one_fact_per_version() {
    let mapper = RowMapper::new("events", &settings(json!({})), "UTC");
    let person = |email: &str| row(json!({"org": "7", "id": "9", "email": email}));
    let key = |row| {
        mapper.map_row("public.people", row, Lane::Live, 1).unwrap()[0]
            .fact
            .idempotency_key
            .clone()
    };
    let first = key(person("a@example.org"));
    assert!(
        first.starts_with("events:contact:public.people:7,9@h"),
        "{first}"
    );
    assert_eq!(
        key(person("a@example.org")),
        first,
        "the same values, the same version"
    );
    assert_ne!(
        key(person("b@example.org")),
        first,
        "an update is a new version"
    );
    let with_unmapped = row(json!({"org": "7", "id": "9", "email": "a@example.org", "notes": "x"}));
    assert_eq!(
        key(with_unmapped),
        first,
        "a column the mapping does not read is no new version"
    );

    let versioned = settings(json!({"tables": {"public.people": {"primary_key": ["id"],
        "kind": "contact", "updated_at": "changed_at", "fields": {"referenceId": "/id"}}}}));
    let mapper = RowMapper::new("events", &versioned, "UTC");
    let entries = mapper
        .map_row(
            "public.people",
            row(json!({"id": "9", "changed_at": "2026-12-07 10:00:00+00"})),
            Lane::Live,
            1,
        )
        .unwrap();
    assert_eq!(
        entries[0].fact.idempotency_key,
        "events:contact:public.people:9@2026-12-07 10:00:00+00"
    );
    let body: Value = serde_json::from_str(&entries[0].fact.body_json).unwrap();
    assert_eq!(body["referenceSource"], "Events DB");
    assert_eq!(body["referenceId"], "9");
}

#[test]
fn rows_that_cannot_be_sent_say_why() {
    let mapper = RowMapper::new("events", &settings(json!({})), "UTC");
    let no_key = mapper.map_row("public.gifts", row(json!({"amount": "1"})), Lane::Live, 1);
    assert!(no_key.unwrap_err().contains("primary key"));
    let null_key = mapper.map_row(
        "public.gifts",
        row(json!({"id": null, "amount": "1", "email": "a@b.org"})),
        Lane::Live,
        1,
    );
    assert!(null_key.unwrap_err().contains("primary key"));
    let no_amount = mapper.map_row(
        "public.gifts",
        row(json!({"id": "1", "email": "a@b.org"})),
        Lane::Live,
        1,
    );
    assert!(
        no_amount.unwrap_err().contains("amount"),
        "mapped like a platform event"
    );
    let unknown = mapper.map_row("public.other", row(json!({"id": "1"})), Lane::Live, 1);
    assert!(unknown.unwrap_err().contains("not configured"));
}

#[test]
fn postgres_timestamps_read_in_every_form() {
    let utc = 1_796_687_601_881; // 2026-12-07T23:53:21.881Z
    assert_eq!(timestamp_ms("2026-12-07 23:53:21.881667+00"), Some(utc));
    assert_eq!(timestamp_ms("2026-12-08 01:53:21.881667+02"), Some(utc));
    assert_eq!(
        timestamp_ms("2026-12-07 23:53:21.881667"),
        Some(utc),
        "no offset: UTC"
    );
    assert_eq!(timestamp_ms("2026-12-07 18:23:21.881667-05:30"), Some(utc));
    assert_eq!(timestamp_ms("2026-12-07 23:53:21+00"), Some(utc - 881));
    assert_eq!(timestamp_ms("not a time"), None);
}

#[test]
fn sql_text_is_quoted() {
    assert_eq!(literal("O'Brien"), "'O''Brien'");
    assert_eq!(quoted_table("public.gifts"), "\"public\".\"gifts\"");
    assert_eq!(
        after_clause(
            &["updated_at", "id"],
            &["2026-01-01 00:00:00+00".into(), "7'".into()]
        ),
        "(\"updated_at\", \"id\") > ('2026-01-01 00:00:00+00', '7''')"
    );
}
