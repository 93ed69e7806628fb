//! The destinations' pure parts: signing, the answer classification, file names, typed
//! columns. The adapters against real receivers, Postgres and files: tests/it/destination_*.

use serde_json::{json, Value};
use steward_actors::pull::{ChangeKind, ChangeOp, ChangeVia, StoredChange};

use super::postgres::columns;
use super::webhook::{self, WebhookVerdict};

fn change(seq: u64) -> StoredChange {
    StoredChange {
        seq,
        kind: ChangeKind::Gift,
        op: ChangeOp::Upsert,
        id: "4711".into(),
        version_ms: 1_700_000_000_000,
        modified_at: Some("2023-11-14T22:13:20".into()),
        record: json!({"id": 4711, "amount": 25.5}),
        own: false,
        via: ChangeVia::Webhook,
        received_ms: 1_700_000_001_000,
    }
}

#[test]
fn signature_matches_the_standard_webhooks_test_vector() {
    // Goal: our signature is the Standard Webhooks one (the spec's published example:
    // secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw, id msg_p5jXN8AQM9LWM0D4loKWxJek,
    // timestamp 1614265330, body {"test": 2432232314}).
    let key = webhook::signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let signature = webhook::signature(
        &key,
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1_614_265_330,
        r#"{"test": 2432232314}"#,
    );
    assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
}

#[test]
fn signing_keys_follow_the_documented_rule() {
    // Goal: whsec_ + base64 of 16–64 bytes is decoded; any other secret is its own bytes
    // when 16–256 visible characters; everything else is refused.
    assert_eq!(
        webhook::signing_key("0123456789abcdef").unwrap(),
        b"0123456789abcdef"
    );
    assert!(webhook::signing_key("short").is_err());
    assert!(webhook::signing_key("has a space in it!!").is_err());
    assert!(webhook::signing_key("whsec_AAAA").is_err(), "3 bytes");
    assert!(webhook::signing_key(&"x".repeat(257)).is_err());
}

#[test]
fn webhook_id_and_body_are_stable_per_version() {
    // Goal: the same change gives the same id and body on every attempt; the next version
    // gives another id.
    let first = change(1);
    let again = change(9); // redelivered under a later sequence number (a replay)
    assert_eq!(
        webhook::webhook_id("hope", &first),
        webhook::webhook_id("hope", &again)
    );
    assert_eq!(webhook::body(&first), webhook::body(&again));
    let mut newer = change(2);
    newer.version_ms += 1;
    assert_ne!(
        webhook::webhook_id("hope", &first),
        webhook::webhook_id("hope", &newer)
    );
    let body: Value = serde_json::from_str(&webhook::body(&first)).unwrap();
    assert_eq!(body["type"], "gift.upsert");
    assert_eq!(body["timestamp"], "2023-11-14T22:13:21Z");
    assert_eq!(body["data"]["id"], "4711");
    assert_eq!(body["data"]["record"]["amount"], 25.5);
}

#[test]
fn partner_answers_classify_as_documented() {
    // Goal: 2xx delivered; 408/425/429/5xx, redirects and endpoint-level 4xx (401, 403, 404,
    // 405, 410) retried (Retry-After seconds honoured, capped); other 4xx rejected with the
    // status and the first 200 characters.
    assert_eq!(webhook::classify(204, None, ""), WebhookVerdict::Delivered);
    for status in [301, 401, 403, 404, 405, 408, 410, 425, 429, 500, 503] {
        assert!(
            matches!(
                webhook::classify(status, None, "x"),
                WebhookVerdict::Retry(_)
            ),
            "{status}"
        );
    }
    let WebhookVerdict::Retry(retry) = webhook::classify(429, Some("7"), "slow down") else {
        panic!("429 retries");
    };
    assert_eq!(retry.retry_after_ms, Some(7_000));
    let WebhookVerdict::Retry(retry) = webhook::classify(503, Some("999999"), "") else {
        panic!("503 retries");
    };
    assert_eq!(retry.retry_after_ms, Some(3_600_000));
    let long_body = "e".repeat(500);
    let WebhookVerdict::Rejected(reason) = webhook::classify(400, None, &long_body) else {
        panic!("400 rejects");
    };
    assert_eq!(reason, format!("HTTP 400: {}", "e".repeat(200)));
    for status in [400, 409, 413, 422] {
        assert!(
            matches!(
                webhook::classify(status, None, ""),
                WebhookVerdict::Rejected(_)
            ),
            "{status}"
        );
    }
}

#[test]
fn ndjson_file_names_sort_by_sequence() {
    // Goal: zero-padded ranges sort as text in delivery order; the partial name is hidden
    // and never matches the final pattern.
    let mut names = vec![
        super::ndjson::file_name("bi", 1_001, 2_000),
        super::ndjson::file_name("bi", 9, 1_000),
        super::ndjson::file_name("bi", 1, 8),
    ];
    names.sort();
    assert_eq!(
        names,
        [
            "bi-00000000000000000001-00000000000000000008.ndjson",
            "bi-00000000000000000009-00000000000000001000.ndjson",
            "bi-00000000000000001001-00000000000000002000.ndjson",
        ]
    );
    let partial = super::ndjson::partial_name("bi");
    assert!(partial.starts_with('.') && !partial.ends_with(".ndjson"));
}

#[test]
fn typed_columns_are_read_leniently() {
    // Goal: amounts, dates, ids and emails fill their columns when readable, NULL when not.
    assert_eq!(columns::decimal_of(Some(&json!(25.5))), json!("25.5"));
    assert_eq!(columns::decimal_of(Some(&json!("12.50"))), json!("12.50"));
    assert_eq!(columns::decimal_of(Some(&json!("twelve"))), Value::Null);
    assert_eq!(columns::decimal_of(Some(&json!("inf"))), Value::Null);
    assert_eq!(
        columns::date_of(Some(&json!("2024-05-01T00:00:00"))),
        json!("2024-05-01")
    );
    assert_eq!(
        columns::date_of(Some(&json!("05/01/2024"))),
        json!("2024-05-01")
    );
    assert_eq!(columns::date_of(Some(&json!("2024-13-40"))), Value::Null);
    assert_eq!(columns::date_of(Some(&json!(17))), Value::Null);
    // Postgres refuses year 0: no typed date rather than a dead-lettered row.
    assert_eq!(columns::date_of(Some(&json!("0000-01-01"))), Value::Null);
    assert_eq!(columns::date_of(Some(&json!("01/01/0000"))), Value::Null);
    assert_eq!(columns::text_of(Some(&json!(42))), json!("42"));
    assert_eq!(
        columns::timestamp_rfc3339("2023-11-14T22:13:20.123").as_deref(),
        Some("2023-11-14T22:13:20.123Z")
    );
    assert_eq!(
        columns::timestamp_rfc3339("2023-11-14T22:13:20+02:00").as_deref(),
        Some("2023-11-14T20:13:20Z")
    );
    assert_eq!(columns::timestamp_rfc3339("yesterday"), None);
    let contact = json!({"name": "Ann Lee", "contactIndividuals": [
        {"isPrimary": false, "contactMethods": [{"type": "Home Email", "value": "other@x.org"}]},
        {"isPrimary": true, "contactMethods": [
            {"type": "Mobile Phone", "value": "555"},
            {"type": "Work Email", "value": "work@x.org"},
            {"type": "Home Email", "value": "ann@x.org", "isPrimary": true}]}]});
    let email = columns::table_of(ChangeKind::Contact)
        .columns
        .iter()
        .find(|column| column.name == "email")
        .map(|column| (column.extract)(&contact));
    assert_eq!(email, Some(json!("ann@x.org")));
}
