//! Goal: contacts in bulk (issue 12) end to end — platform contact webhooks through the real
//! engine reach the embedded sandbox as `POST /api/Contact/Batch` calls of up to 100 contacts
//! (one referenceSource each), a bad contact is split off by the batch's `modelState`, and
//! `virtuous.contact_batch: false` (a PATCH, applied in place) sends one
//! `POST /api/Contact/Transaction` per contact again.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::common::{queued_total, wait_until, SpawnOptions, TestApp};
use crate::push_e2e::sandbox_call;

const SECRET: &str = "crowd-secret-hex";
const TENANT: &str = "bulk";

/// An org importing on acceptance and a tenant with a platform whose `supporter.updated`
/// events are contacts (referenceSource `CrowdCo`); a budget high enough that pacing does
/// not set the pace (324,000 calls/h after the reserve).
async fn org_and_platform_tenant(app: &TestApp) {
    let api_key = format!("e2e-key-{TENANT}");
    let org = json!({"id": TENANT, "api_key": api_key, "hourly_limit": 360_000,
                     "processing": "immediate"});
    sandbox_call(app, Method::POST, "/_sandbox/orgs", Some(org)).await;
    let body = json!({
        "id": TENANT, "name": "Bulk contacts",
        "virtuous": {"base_url": app.sandbox_url(), "api_key": api_key},
        "sources": {"platforms": {"crowd-co": {
            "secret": SECRET, "signature_header": "X-Signature", "encoding": "hex",
            "signed_payload": "body", "event_id": "/id", "event_type": "/type",
            "transaction_source": "CrowdCo",
            "events": {"supporter.updated": {"kind": "contact", "fields": {
                "referenceId": "/data/id", "email": "/data/email",
                "firstName": "/data/first", "lastName": "/data/last"}}}}}},
        "budget": {"hourly_limit": 360_000, "reserve_pct": 10}
    });
    app.create_tenant(&body).await;
}

fn supporter(id: &str, last_name: Option<&str>) -> Value {
    json!({"id": format!("evt-{id}"), "type": "supporter.updated",
           "data": {"id": id, "email": format!("{id}@example.org"), "first": "Sam",
                    "last": last_name}})
}

/// Posts every event, signed as the platform does (hex HMAC of the body), 8 at a time;
/// each must be answered 202.
async fn post_all(app: &TestApp, events: Vec<Value>) {
    let url = format!("{}/hooks/{TENANT}/platform/crowd-co", app.main_url);
    let events = Arc::new(events);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut senders = Vec::new();
    for _ in 0..8 {
        let (events, next, url, client) = (
            Arc::clone(&events),
            Arc::clone(&next),
            url.clone(),
            app.client.clone(),
        );
        senders.push(tokio::spawn(async move {
            loop {
                let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(event) = events.get(index) else {
                    return;
                };
                let body = event.to_string();
                let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
                mac.update(body.as_bytes());
                let signature = hex::encode(mac.finalize().into_bytes());
                let response = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("X-Signature", signature)
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 202, "{event}");
            }
        }));
    }
    for sender in senders {
        sender.await.unwrap();
    }
}

async fn admin_post(app: &TestApp, path: &str) {
    let response = app.admin(Method::POST, path).send().await.unwrap();
    assert!(response.status().is_success(), "{path}: {response:?}");
}

/// Queues `events` while the tenant is paused (so the submitter sees them all at once),
/// resumes it and waits until the queue is empty.
async fn send_while_paused(app: &TestApp, events: Vec<Value>) {
    admin_post(app, &format!("/v1/tenants/{TENANT}/pause")).await;
    post_all(app, events).await;
    admin_post(app, &format!("/v1/tenants/{TENANT}/resume")).await;
    wait_until(Duration::from_secs(30), "the queue to drain", || async {
        let status = app.status(TENANT).await;
        (queued_total(&status) == 0).then_some(())
    })
    .await;
}

async fn stats(app: &TestApp) -> Value {
    sandbox_call(
        app,
        Method::GET,
        &format!("/_sandbox/orgs/{TENANT}/stats"),
        None,
    )
    .await
}

fn answered(stats: &Value, endpoint: &str, status: &str) -> u64 {
    stats["requests"][endpoint][status].as_u64().unwrap_or(0)
}

/// The `CrowdCo` reference ids of the org's contacts.
async fn crowd_ids(app: &TestApp) -> BTreeSet<String> {
    let contacts = sandbox_call(
        app,
        Method::GET,
        &format!("/_sandbox/orgs/{TENANT}/contacts"),
        None,
    )
    .await;
    contacts
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|contact| contact["contactReferences"].as_array().cloned())
        .flatten()
        .filter(|reference| reference["source"] == "CrowdCo")
        .filter_map(|reference| reference["id"].as_str().map(str::to_string))
        .collect()
}

const BATCH: &str = "POST /api/Contact/Batch";
const SINGLE: &str = "POST /api/Contact/Transaction";

#[tokio::test]
async fn contacts_go_a_hundred_a_call_and_one_a_call_when_switched_off() {
    // Goal: 250 distinct contacts reach Virtuous in exactly 3 Contact/Batch calls and are all imported; a batch with one invalid contact is answered 400 naming it, that contact alone is dead-lettered and the rest sent again; after PATCH contact_batch=false, 20 contacts take 20 Contact/Transaction calls and no batch.
    let app = TestApp::spawn(SpawnOptions::default()).await;
    org_and_platform_tenant(&app).await;

    let ids: Vec<String> = (0..250).map(|n| format!("s{n:03}")).collect();
    send_while_paused(
        &app,
        ids.iter().map(|id| supporter(id, Some("Lee"))).collect(),
    )
    .await;
    let after_bulk = stats(&app).await;
    assert_eq!(answered(&after_bulk, BATCH, "200"), 3, "{after_bulk}");
    assert_eq!(answered(&after_bulk, SINGLE, "200"), 0, "{after_bulk}");
    assert_eq!(after_bulk["transactions_received"], 250, "{after_bulk}");
    assert_eq!(after_bulk["imported"], 250, "{after_bulk}");
    assert_eq!(crowd_ids(&app).await, ids.iter().cloned().collect());

    // One contact without a last name: Virtuous refuses the batch naming `contacts[i]`.
    let mut mixed: Vec<Value> = (0..4)
        .map(|n| supporter(&format!("m{n}"), Some("Lee")))
        .collect();
    mixed.insert(2, supporter("bad", None));
    send_while_paused(&app, mixed).await;
    let after_mixed = stats(&app).await;
    assert_eq!(answered(&after_mixed, BATCH, "400"), 1, "{after_mixed}");
    assert_eq!(answered(&after_mixed, BATCH, "200"), 4, "{after_mixed}");
    assert_eq!(after_mixed["transactions_received"], 254, "{after_mixed}");
    let dead = app
        .admin_json(Method::GET, &format!("/v1/tenants/{TENANT}/dead-letters"))
        .await;
    let dead = dead
        .get("dead_letters")
        .and_then(Value::as_array)
        .or_else(|| dead.as_array())
        .cloned()
        .unwrap_or_default();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["source_id"], "bad", "{dead:?}");
    assert_eq!(dead[0]["status"], 400, "{dead:?}");

    let patch = json!({"virtuous": {"contact_batch": false}});
    let patched = app
        .admin(Method::PATCH, &format!("/v1/tenants/{TENANT}"))
        .json(&patch)
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    let singles: Vec<Value> = (0..20)
        .map(|n| supporter(&format!("t{n:02}"), Some("Lee")))
        .collect();
    send_while_paused(&app, singles).await;
    let after_singles = stats(&app).await;
    assert_eq!(
        answered(&after_singles, SINGLE, "200"),
        20,
        "{after_singles}"
    );
    assert_eq!(
        answered(&after_singles, BATCH, "200"),
        4,
        "no batch when off"
    );
    assert_eq!(after_singles["imported"], 274, "{after_singles}");
    println!(
        "contact batch: 250 contacts in {} calls batched; 20 contacts in {} calls one by one",
        answered(&after_bulk, BATCH, "200"),
        answered(&after_singles, SINGLE, "200")
    );
}
