//! Helpers of the ingress tests: Stripe events from the fixtures, signed deliveries, and a
//! look at the stored queue once the process has stopped.

use std::path::Path;

use serde_json::{json, Value};
use steward::sources::stripe::sign_header;
use steward_actors::store::{Lane, QueueEntry, Store, StoreOptions};

use crate::common::TestApp;

pub const BASIL: &str = "2025-03-31.basil";
pub const LEGACY: &str = "2024-06-20";

pub use steward_actors::ports::now_ms;

pub fn now_s() -> i64 {
    (now_ms() / 1_000) as i64
}

/// A Stripe fixture (`data.object` shapes from Stripe's OpenAPI fixtures).
pub fn fixture(name: &str) -> Value {
    let text = match name {
        "charge" => include_str!("../../src/sources/stripe/fixtures/charge.json"),
        "payment_intent" => include_str!("../../src/sources/stripe/fixtures/payment_intent.json"),
        "invoice" => include_str!("../../src/sources/stripe/fixtures/invoice.json"),
        "invoice_payment" => {
            include_str!("../../src/sources/stripe/fixtures/invoice_payment.json")
        }
        other => panic!("no fixture {other}"),
    };
    serde_json::from_str(text).unwrap()
}

/// The fixture with top-level fields replaced by `patch`'s.
pub fn patched(name: &str, patch: Value) -> Value {
    let mut object = fixture(name);
    for (key, value) in patch.as_object().unwrap() {
        object[key] = value.clone();
    }
    object
}

/// A live event envelope around `object`.
pub fn stripe_event(event_id: &str, event_type: &str, api_version: &str, object: Value) -> Value {
    json!({"id": event_id, "object": "event", "api_version": api_version,
           "created": now_s(), "data": {"object": object}, "livemode": true,
           "pending_webhooks": 1, "request": {"id": null, "idempotency_key": null},
           "type": event_type})
}

/// A captured one-time card payment `ch_{n}` of PaymentIntent `pi_{n}` (not a subscription).
pub fn one_time_charge(n: &str, amount_minor: i64) -> Value {
    patched(
        "charge",
        json!({"id": format!("ch_{n}"), "payment_intent": format!("pi_{n}"),
               "amount": amount_minor, "amount_captured": amount_minor, "amount_refunded": 0,
               "captured": true, "refunded": false, "currency": "usd", "livemode": true,
               "description": "Spring appeal", "receipt_email": format!("donor{n}@example.org"),
               "created": now_s()}),
    )
}

/// The Stripe signing secret of `crate::common::tenant_body(id)`.
pub fn stripe_secret(tenant_id: &str) -> String {
    format!("whsec_secret{tenant_id}signing")
}

/// POSTs raw bytes to the tenant's Stripe route with the given signature header.
pub async fn post_stripe_raw(
    app: &TestApp,
    tenant_id: &str,
    signature: Option<String>,
    body: Vec<u8>,
) -> (u16, Value) {
    let mut request = app
        .client
        .post(format!("{}/hooks/{tenant_id}/stripe", app.main_url))
        .header("content-type", "application/json")
        .body(body);
    if let Some(signature) = signature {
        request = request.header("Stripe-Signature", signature);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or_else(|_| json!({"raw": text}));
    (status, json)
}

/// POSTs `event` signed now with `secret`.
pub async fn post_stripe(
    app: &TestApp,
    tenant_id: &str,
    secret: &str,
    event: &Value,
) -> (u16, Value) {
    let body = event.to_string().into_bytes();
    let signature = sign_header(secret, now_s(), &body);
    post_stripe_raw(app, tenant_id, Some(signature), body).await
}

/// `counts.{name}` of the tenant's status.
pub async fn count(app: &TestApp, tenant_id: &str, name: &str) -> u64 {
    app.status(tenant_id).await["counts"][name]
        .as_u64()
        .unwrap()
}

/// The `count` of alert `code` in the tenant's status (0 when not raised).
pub async fn alert_count(app: &TestApp, tenant_id: &str, code: &str) -> u64 {
    let status = app.status(tenant_id).await;
    status["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|alert| alert["code"] == code)
        .map_or(0, |alert| alert["count"].as_u64().unwrap())
}

/// Every entry of the tenant's `live` lane, read from the store of a stopped process.
pub fn live_entries(data_dir: &Path, tenant_id: &str) -> Vec<QueueEntry> {
    let store = Store::open(&data_dir.join("store"), StoreOptions::default()).unwrap();
    let tenant = store.tenant(tenant_id).unwrap();
    tenant
        .scan_lane(Lane::Live, 100_000)
        .unwrap()
        .into_iter()
        .map(|(_, entry)| entry)
        .collect()
}
