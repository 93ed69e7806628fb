//! A source's listing as a backfill (`{"source", "from", "to"}`): a polled platform's feed
//! in the embedded sandbox read through the tenant's poller, beside live webhooks of the
//! same platform, into the embedded Virtuous org.

use std::collections::BTreeMap;
use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::backfill_support::wait_for_state;
use crate::common::{wait_until, SpawnOptions, TestApp};
use crate::poll_support::{sized, Sim};

const SECRET: &str = "hist-webhook-secret";
const LABEL: &str = "history-2026-01";

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn donation(id: &str, updated_at: &str) -> Value {
    json!({"id": id, "type": "donation.completed", "amount": 2500,
           "email": format!("{id}@example.org"), "updated_at": updated_at})
}

/// The feed's donations: `old-*` before the window, `don-*` inside it, `bad-*` inside it
/// without an amount, `new-*` changed after it.
fn listing(inside: usize) -> Vec<Value> {
    let mut items = Vec::new();
    for n in 1..=10 {
        items.push(donation(&format!("old-{n}"), "2025-12-15T00:00:00Z"));
    }
    for n in 1..=inside {
        let day = n % 28 + 1;
        items.push(donation(
            &format!("don-{n}"),
            &format!("2026-01-{day:02}T12:00:00Z"),
        ));
    }
    for n in 1..=3 {
        let mut bad = donation(&format!("bad-{n}"), "2026-01-10T00:00:00Z");
        bad.as_object_mut().unwrap().remove("amount");
        items.push(bad);
    }
    for n in 1..=10 {
        items.push(donation(&format!("new-{n}"), "2026-02-15T00:00:00Z"));
    }
    items
}

async fn deliver_live(app: &TestApp, tenant: &str, item: &Value) {
    let body = item.to_string().into_bytes();
    let answer = app
        .client
        .post(format!("{}/hooks/{tenant}/platform/hist", app.main_url))
        .header("X-Signature", sign(&body))
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202, "live {}", item["id"]);
}

#[tokio::test]
async fn a_platforms_listing_backfill_makes_one_gift_per_donation_in_its_window_beside_live_webhooks(
) {
    // Goal: a listing job reads the platform's feed through the tenant's poller from the window's start; its dry run counts the donations in the window, the ones already seen live, the unmappable ones (with their rows) and the ones changed after the window, and estimates the calls; the run, with more live webhooks of listed donations arriving meanwhile, leaves exactly one gift per donation of the window in Virtuous — the backfilled ones labelled with the job's batch — and none from outside it.
    let inside = sized(250, 2_500);
    let app = TestApp::spawn(SpawnOptions::default()).await;
    let sim = Sim::new(&app.sandbox_url());
    let tenant = "listing";
    sim.create_org(tenant, "listing-key").await;
    sim.call(
        Method::POST,
        "/_sandbox/feeds",
        Some(json!({"id": "hist", "auth_header": "X-Api-Key", "auth_value": "feed-key-hist"})),
    )
    .await;
    let items = listing(inside);
    for batch in items.chunks(1_000) {
        sim.call(
            Method::POST,
            "/_sandbox/feeds/hist/items",
            Some(json!({ "items": batch })),
        )
        .await;
    }
    app.create_tenant(&json!({
        "id": tenant, "name": "Listing backfill",
        "virtuous": {"base_url": "embedded", "api_key": "listing-key"},
        "sources": {"platforms": {"hist": {
            "secret": SECRET, "signature_prefix": "sha256=",
            "transaction_source": "Hist",
            "events": {"donation.completed": {"kind": "gift", "fields": {
                "amount": "/amount", "contact.email": "/email", "transactionId": "/id"}}},
            "poll": {"url": "embedded", "auth_header": "X-Api-Key", "auth_value": "feed-key-hist"}}}},
        "budget": {"hourly_limit": 1_000_000, "reserve_pct": 10}
    }))
    .await;
    // 5 % of the window's donations arrived live before the backfill.
    let live_before = inside / 20;
    for n in 1..=live_before {
        deliver_live(&app, tenant, &items[10 + n - 1]).await;
    }
    wait_until(Duration::from_secs(30), "the live gifts sent", || async {
        (sim.transaction_ids(tenant).await.len() >= live_before).then_some(())
    })
    .await;

    let (status, created) = app
        .admin_call(
            Method::POST,
            &format!("/v1/tenants/{tenant}/backfills"),
            Some(
                json!({"source": "hist", "from": "2026-01-01", "to": "2026-01-31",
                        "label": LABEL}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["state"], "validating", "{created}");
    let job_id = created["id"].as_str().unwrap().to_string();
    let ready = wait_for_state(&app, tenant, &job_id, &["ready", "failed"]).await;
    assert_eq!(ready["state"], "ready", "{}", ready["error"]);
    let dry = &ready["dry_run"];
    let inside = inside as u64;
    let live_before = live_before as u64;
    assert_eq!(
        (
            dry["rows"].as_u64(),
            dry["payments"].as_u64(),
            dry["known"].as_u64(),
            dry["rejected"].as_u64(),
            dry["skipped"].as_u64()
        ),
        (
            Some(inside + 13),
            Some(inside),
            Some(live_before),
            Some(3),
            Some(10)
        ),
        "old-* are before the listing's start, new-* after the window: {dry}"
    );
    assert_eq!(
        dry["skip_reasons"]["changed outside the window"], 10,
        "{dry}"
    );
    let new_gifts = inside - live_before;
    assert_eq!(dry["calls_needed"], new_gifts.div_ceil(100), "{dry}");
    let reject_rows: Vec<u64> = dry["rejects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|reject| reject["row"].as_u64().unwrap())
        .collect();
    assert_eq!(reject_rows.len(), 3, "{dry}");
    assert!(
        dry["rejects"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("bad-"),
        "a reject names its record: {dry}"
    );
    assert_eq!(
        sim.transaction_ids(tenant).await.len() as u64,
        live_before,
        "the dry run sent nothing"
    );

    let (status, started) = app
        .admin_call(
            Method::POST,
            &format!("/v1/tenants/{tenant}/backfills/{job_id}/start"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{started}");
    // The last 5 donations of the window also arrive live while the job runs.
    for n in inside as usize - 4..=inside as usize {
        deliver_live(&app, tenant, &items[10 + n - 1]).await;
    }
    let path = format!("/v1/tenants/{tenant}/backfills/{job_id}");
    let done = wait_until(Duration::from_secs(120), "the job done", || async {
        let (_, job) = app.admin_call(Method::GET, &path, None).await;
        (job["state"] == "done").then_some(job)
    })
    .await;
    assert_eq!(done["progress"]["rejected"], 3, "{done}");

    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for id in sim.transaction_ids(tenant).await {
        *counts.entry(id).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, count)| **count > 1).collect();
    assert!(twice.is_empty(), "sent twice: {twice:?}");
    let expected: Vec<String> = (1..=inside).map(|n| format!("don-{n}")).collect();
    let mut sent: Vec<String> = counts.keys().cloned().collect();
    sent.sort();
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    assert_eq!(
        sent, expected_sorted,
        "every donation of the window once, nothing from outside it"
    );
    let gifts = sim
        .call(Method::GET, &format!("/_sandbox/orgs/{tenant}/gifts"), None)
        .await;
    let labelled = gifts
        .as_array()
        .unwrap()
        .iter()
        .filter(|gift| gift["batch"] == LABEL)
        .count() as u64;
    let queued = done["progress"]["queued"].as_u64().unwrap();
    assert_eq!(
        labelled, queued,
        "the backfill's gifts carry its batch: {done}"
    );
    assert!(
        (new_gifts - 5..=new_gifts).contains(&queued),
        "queued {queued}: the live ones during the run may have come first"
    );
}
