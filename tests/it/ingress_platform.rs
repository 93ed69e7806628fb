//! The generic platform route end to end: hex and Base64 HMAC signatures, with and without a
//! signed timestamp; gifts and contacts queued once; bad input refused with its code.

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::common::{tenant_body, SpawnOptions, TestApp};
use crate::ingress_support::{alert_count, count, live_entries, now_s};

const HEX_SECRET: &str = "auction-secret-hex";
const B64_SECRET: &str = "gala-secret-b64";

/// A tenant with two platforms: `auction-co` (hex, `sha256=` prefix, body only, minor units)
/// and `gala-co` (Base64, `{timestamp}.{body}`, major units).
fn platform_tenant(id: &str) -> Value {
    let mut body = tenant_body(id);
    body["sources"]["platforms"] = json!({
        "auction-co": {
            "secret": HEX_SECRET, "signature_header": "X-Signature", "encoding": "hex",
            "signature_prefix": "sha256=", "signed_payload": "body",
            "event_id": "/id", "event_type": "/type", "transaction_source": "AuctionCo",
            "amount_unit": "minor",
            "events": {
                "donation.completed": {"kind": "gift", "fields": {
                    "amount": "/data/amount", "currencyCode": "/data/currency",
                    "contact.email": "/data/donor/email", "transactionId": "/data/donation_id"}},
                "donor.updated": {"kind": "contact", "fields": {
                    "referenceId": "/data/donor/id", "email": "/data/donor/email"}}}},
        "gala-co": {
            "secret": B64_SECRET, "signature_header": "Gala-Signature", "encoding": "base64",
            "timestamp_header": "Gala-Timestamp", "tolerance_s": 300,
            "signed_payload": "{timestamp}.{body}", "event_id": "/event/id",
            "event_type": "/event/kind", "transaction_source": "GalaCo", "amount_unit": "major",
            "events": {"ticket.paid": {"kind": "gift", "fields": {
                "amount": "/total", "contact.firstName": "/buyer/first",
                "contact.lastName": "/buyer/last", "giftType": "/method"}}}}
    });
    body
}

fn hmac(secret: &str, message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// POSTs `body` to a platform route with the given headers.
async fn post_platform(
    app: &TestApp,
    tenant_id: &str,
    source: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> (u16, Value) {
    let mut request = app
        .client
        .post(format!(
            "{}/hooks/{tenant_id}/platform/{source}",
            app.main_url
        ))
        .header("content-type", "application/json")
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// An `auction-co` delivery signed as the platform does: hex, prefixed, over the body.
async fn post_auction(app: &TestApp, tenant_id: &str, event: &Value) -> (u16, Value) {
    let body = event.to_string().into_bytes();
    let signature = format!("sha256={}", hex::encode(hmac(HEX_SECRET, &body)));
    post_platform(
        app,
        tenant_id,
        "auction-co",
        &[("X-Signature", signature)],
        body,
    )
    .await
}

/// A `gala-co` delivery: Base64 over `{timestamp}.{body}`, signed at `timestamp_s`.
async fn post_gala(
    app: &TestApp,
    tenant_id: &str,
    event: &Value,
    timestamp_s: i64,
) -> (u16, Value) {
    let body = event.to_string().into_bytes();
    let mut message = format!("{timestamp_s}.").into_bytes();
    message.extend_from_slice(&body);
    let signature = base64::engine::general_purpose::STANDARD.encode(hmac(B64_SECRET, &message));
    let headers = [
        ("Gala-Signature", signature),
        ("Gala-Timestamp", timestamp_s.to_string()),
    ];
    post_platform(app, tenant_id, "gala-co", &headers, body).await
}

fn donation(event_id: &str, donation_id: &str) -> Value {
    json!({"id": event_id, "type": "donation.completed",
           "data": {"donation_id": donation_id, "amount": 2550, "currency": "usd",
                    "donor": {"id": "d-1", "email": "ann@example.org"}}})
}

fn assert_answer(answer: &(u16, Value), status: u16, field: &str, value: &str) {
    assert_eq!(answer.0, status, "{answer:?}");
    assert_eq!(answer.1[field], value, "{answer:?}");
}

#[tokio::test]
async fn platform_events_queue_once_with_hex_and_base64_signatures() {
    // Goal: hex (no timestamp) and Base64 (signed timestamp) deliveries map to gifts and a
    // contact; re-deliveries are duplicates, unmapped types ignored; the queued bodies are right.
    let mut app = TestApp::spawn(SpawnOptions::default()).await;
    app.create_tenant(&platform_tenant("plat-ok")).await;
    // Paused: the queue keeps what the ingress wrote, whatever the submitter does.
    let response = app
        .admin(reqwest::Method::POST, "/v1/tenants/plat-ok/pause")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let first = post_auction(&app, "plat-ok", &donation("evt-1", "don-1")).await;
    assert_answer(&first, 202, "status", "queued");
    let redelivered = post_auction(&app, "plat-ok", &donation("evt-1", "don-1")).await;
    assert_answer(&redelivered, 200, "status", "duplicate");
    // Another event about the same donation is the same fact.
    let same_fact = post_auction(&app, "plat-ok", &donation("evt-2", "don-1")).await;
    assert_answer(&same_fact, 200, "status", "duplicate");
    let contact = json!({"id": "evt-3", "type": "donor.updated",
                         "data": {"donor": {"id": "d-1", "email": "ann@example.org"}}});
    assert_answer(
        &post_auction(&app, "plat-ok", &contact).await,
        202,
        "status",
        "queued",
    );
    let unmapped = json!({"id": "evt-4", "type": "auction.closed"});
    assert_answer(
        &post_auction(&app, "plat-ok", &unmapped).await,
        200,
        "status",
        "ignored",
    );

    let ticket = json!({"event": {"id": 9001, "kind": "ticket.paid"}, "total": "40.00",
                        "buyer": {"first": "Bo", "last": "Lee"}, "method": "Credit"});
    assert_answer(
        &post_gala(&app, "plat-ok", &ticket, now_s() - 5).await,
        202,
        "status",
        "queued",
    );
    assert_answer(
        &post_gala(&app, "plat-ok", &ticket, now_s()).await,
        200,
        "status",
        "duplicate",
    );
    assert_eq!(count(&app, "plat-ok", "captured").await, 3);

    app.terminate();
    let entries = live_entries(&app.data_dir(), "plat-ok");
    assert_eq!(entries.len(), 3);
    let body_of = |source: &str, source_id: &str| -> Value {
        let entry = entries
            .iter()
            .find(|entry| entry.fact.source == source && entry.fact.source_id == source_id)
            .unwrap_or_else(|| panic!("no entry {source}/{source_id} in {entries:?}"));
        serde_json::from_str(&entry.fact.body_json).unwrap()
    };
    let gift = body_of("auction-co", "don-1");
    assert_eq!(gift["amount"], "25.50");
    assert_eq!(gift["transactionSource"], "AuctionCo");
    assert_eq!(gift["transactionId"], "don-1");
    assert_eq!(gift["contact"]["email"], "ann@example.org");
    let person = body_of("auction-co", "d-1");
    assert_eq!(person["referenceSource"], "AuctionCo");
    assert_eq!(person["referenceId"], "d-1");
    let ticket_gift = body_of("gala-co", "9001");
    assert_eq!(ticket_gift["amount"], "40.00");
    assert_eq!(ticket_gift["giftType"], "Credit");
    assert_eq!(ticket_gift["transactionSource"], "GalaCo");
}

#[tokio::test]
async fn platform_bad_input_is_refused_with_its_code_and_queues_nothing() {
    // Goal: bad or missing signature, stale timestamp, malformed JSON, no event id, unknown
    // source or tenant each get their code; an unmappable event is 200 rejected with one alert.
    let app = TestApp::spawn(SpawnOptions::default()).await;
    app.create_tenant(&platform_tenant("plat-bad")).await;
    let event = donation("evt-b1", "don-b1");
    let body = event.to_string().into_bytes();

    let wrong = format!("sha256={}", hex::encode(hmac("not-the-secret", &body)));
    let refused = post_platform(
        &app,
        "plat-bad",
        "auction-co",
        &[("X-Signature", wrong)],
        body.clone(),
    )
    .await;
    assert_eq!(
        (refused.0, refused.1["error"]["code"].clone()),
        (401, json!("bad_signature"))
    );
    let missing = post_platform(&app, "plat-bad", "auction-co", &[], body.clone()).await;
    assert_eq!(
        (missing.0, missing.1["error"]["code"].clone()),
        (401, json!("bad_signature"))
    );
    let stale = post_gala(
        &app,
        "plat-bad",
        &json!({"event": {"id": 1, "kind": "ticket.paid"}}),
        now_s() - 1_000,
    )
    .await;
    assert_eq!(
        (stale.0, stale.1["error"]["code"].clone()),
        (401, json!("stale_timestamp")),
        "{stale:?}"
    );

    let not_json = b"{\"id\": ".to_vec();
    let signature = format!("sha256={}", hex::encode(hmac(HEX_SECRET, &not_json)));
    let malformed = post_platform(
        &app,
        "plat-bad",
        "auction-co",
        &[("X-Signature", signature)],
        not_json,
    )
    .await;
    assert_eq!(
        (malformed.0, malformed.1["error"]["code"].clone()),
        (400, json!("malformed_body"))
    );
    let no_id = post_auction(&app, "plat-bad", &json!({"type": "donation.completed"})).await;
    assert_eq!(
        (no_id.0, no_id.1["error"]["code"].clone()),
        (400, json!("malformed_body"))
    );

    let unknown_source = post_platform(&app, "plat-bad", "nope-co", &[], body.clone()).await;
    assert_eq!(
        (unknown_source.0, unknown_source.1["error"]["code"].clone()),
        (404, json!("not_found"))
    );
    let unknown_tenant = post_auction(&app, "no-such-tenant", &event).await;
    assert_eq!(
        (unknown_tenant.0, unknown_tenant.1["error"]["code"].clone()),
        (404, json!("unknown_tenant"))
    );

    let mut no_amount = donation("evt-b2", "don-b2");
    no_amount["data"].as_object_mut().unwrap().remove("amount");
    let rejected = post_auction(&app, "plat-bad", &no_amount).await;
    assert_answer(&rejected, 200, "status", "rejected");
    assert!(
        rejected.1["reason"].as_str().unwrap().contains("amount"),
        "{rejected:?}"
    );
    assert_answer(
        &post_auction(&app, "plat-bad", &no_amount).await,
        200,
        "status",
        "duplicate",
    );
    assert_eq!(
        alert_count(&app, "plat-bad", "platform_event_rejected").await,
        1
    );

    let status = app.status("plat-bad").await;
    assert_eq!(status["counts"]["captured"], 0, "{status}");
    assert_eq!(status["lanes"]["live"]["depth"], 0, "{status}");
}

#[tokio::test]
async fn a_polled_only_platform_has_no_webhook_route() {
    // Goal: a platform with `poll` and no `secret` is accepted (polled only); its webhook
    // route answers 404 `source_not_configured` whatever the delivery carries, queues
    // nothing, and the tenant status lists no webhook URL for it.
    let mut app = TestApp::spawn(SpawnOptions::default()).await;
    let mut body = platform_tenant("plat-polled");
    body["sources"]["platforms"]["feed-only"] = json!({
        "transaction_source": "FeedOnly",
        "poll": {"url": "embedded"},
        "events": {"donation.completed": {"kind": "gift", "fields": {"amount": "/amount"}}}});
    app.create_tenant(&body).await;
    let delivery = json!({"id": "evt-1", "type": "donation.completed", "amount": 100});
    let (status, answer) = post_platform(
        &app,
        "plat-polled",
        "feed-only",
        &[("X-Signature", "whatever".to_string())],
        delivery.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 404, "{answer}");
    assert_eq!(answer["error"]["code"], "source_not_configured", "{answer}");
    assert_eq!(count(&app, "plat-polled", "captured").await, 0);
    let tenant = app.status("plat-polled").await;
    let ingress = tenant["ingress"].as_object().unwrap();
    assert!(ingress.contains_key("platform/auction-co"), "{tenant}");
    assert!(!ingress.contains_key("platform/feed-only"), "{tenant}");
    app.terminate();
    assert!(live_entries(&app.data_dir(), "plat-polled").is_empty());
}
