//! Goal: pattern 1 end to end (issue 4) — signed Stripe traffic through the real engine into
//! the sandbox, exactly once, within the budget, confirmed by the bulk query.
//!
//! Every test runs the real `steward` binary with its embedded sandbox over loopback. The
//! sandbox organization is created by the test (so it can switch dedup off or inject faults)
//! and the tenant targets it by URL.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use steward::traffic::{self, Traffic, TrafficOptions};

use crate::common::{queued_total, wait_until, SpawnOptions, TestApp};

/// A sandbox control call; panics unless 2xx.
pub async fn sandbox_call(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> Value {
    crate::external_sandbox::sandbox_json(&app.client, &app.sandbox_url(), method, path, body).await
}

pub fn secret_of(tenant_id: &str) -> String {
    format!("whsec_e2e{tenant_id}signing")
}

/// Creates an org (`org_extra` merged into its `OrgSpec`) and a tenant that targets it.
pub async fn org_and_tenant(app: &TestApp, tenant_id: &str, hourly_limit: u64, org_extra: Value) {
    let api_key = format!("e2e-key-{tenant_id}");
    let mut org = json!({"id": tenant_id, "api_key": api_key, "hourly_limit": hourly_limit});
    for (key, value) in org_extra.as_object().unwrap() {
        org[key] = value.clone();
    }
    sandbox_call(app, Method::POST, "/_sandbox/orgs", Some(org)).await;
    let body = json!({
        "id": tenant_id, "name": format!("E2E {tenant_id}"),
        "virtuous": {"base_url": app.sandbox_url(), "api_key": api_key},
        "sources": {"stripe": {"signing_secret": secret_of(tenant_id), "accept_test_events": true}},
        "budget": {"hourly_limit": hourly_limit, "reserve_pct": 10}
    });
    app.create_tenant(&body).await;
}

/// POSTs one Stripe event body to `url`, signed now with `secret`.
pub async fn post_signed_stripe(
    client: &reqwest::Client,
    url: &str,
    secret: &str,
    body: &str,
) -> reqwest::Result<reqwest::Response> {
    let now_s = jiff::Timestamp::now().as_second();
    client
        .post(url)
        .header(
            "Stripe-Signature",
            traffic::sign(secret, body.as_bytes(), now_s),
        )
        .header("Content-Type", "application/json")
        .body(body.to_owned())
        .send()
        .await
}

/// Sends every event (signed now) with `concurrency` senders; returns the answers by status.
pub async fn send_all(
    app: &TestApp,
    tenant_id: &str,
    events: Vec<traffic::GeneratedEvent>,
    concurrency: usize,
) -> BTreeMap<u16, u64> {
    let events = Arc::new(events);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let url = format!("{}/hooks/{tenant_id}/stripe", app.main_url);
    let secret = secret_of(tenant_id);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (events, next, url, secret) = (
            Arc::clone(&events),
            Arc::clone(&next),
            url.clone(),
            secret.clone(),
        );
        let client = app.client.clone();
        tasks.push(tokio::spawn(async move {
            let mut statuses = BTreeMap::new();
            loop {
                let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(event) = events.get(index) else {
                    return statuses;
                };
                let response = post_signed_stripe(&client, &url, &secret, &event.body)
                    .await
                    .unwrap();
                *statuses.entry(response.status().as_u16()).or_insert(0u64) += 1;
            }
        }));
    }
    let mut statuses = BTreeMap::new();
    for task in tasks {
        for (status, count) in task.await.unwrap() {
            *statuses.entry(status).or_insert(0) += count;
        }
    }
    statuses
}

/// One-time payments only: 30 % delivered as both `payment_intent.succeeded` and
/// `charge.succeeded`, 10 % exact re-deliveries; `payments` unique payments.
pub fn one_time_traffic(seed: u64, payments: usize) -> Traffic {
    traffic::generate(&TrafficOptions {
        seed,
        payments,
        subscription_share: 0.0,
        both_events_share: 0.3,
        charge_only_share: 0.1,
        refunds: 0,
        customer_share: 0.0,
        redelivery_share: 0.1,
        now_s: jiff::Timestamp::now().as_second(),
    })
}

async fn tenant_status(app: &TestApp, tenant_id: &str) -> Value {
    app.admin_json(Method::GET, &format!("/v1/tenants/{tenant_id}"))
        .await
}

use crate::external_sandbox::total_calls as sandbox_calls;

/// The `transactionId`s of the org's gifts, with how many gifts carry each.
pub async fn gift_ids(app: &TestApp, org: &str) -> BTreeMap<String, usize> {
    let gifts = sandbox_call(
        app,
        Method::GET,
        &format!("/_sandbox/orgs/{org}/gifts"),
        None,
    )
    .await;
    let mut ids = BTreeMap::new();
    for gift in gifts.as_array().unwrap() {
        if let Some(id) = gift["transactionId"].as_str() {
            *ids.entry(id.to_string()).or_insert(0) += 1;
        }
    }
    ids
}

pub async fn reconcile_until_confirmed(app: &TestApp, tenant_id: &str, expected: u64) -> Value {
    wait_until(
        Duration::from_secs(60),
        "every record confirmed",
        || async {
            let response = app
                .admin(
                    Method::POST,
                    &format!("/v1/tenants/{tenant_id}/_test/reconcile"),
                )
                .send()
                .await
                .unwrap();
            assert!(
                response.status().is_success(),
                "reconcile hook: {}",
                response.status()
            );
            let status = tenant_status(app, tenant_id).await;
            (status["counts"]["confirmed"].as_u64() == Some(expected)).then_some(status)
        },
    )
    .await
}

fn fast_engine() -> SpawnOptions {
    SpawnOptions {
        env: vec![(
            "STEWARD_SUBMITTER__RETRY_SCHEDULE".into(),
            r#"["50ms", "100ms", "200ms", "400ms", "800ms", "1s", "2s", "4s"]"#.into(),
        )],
        ..SpawnOptions::default()
    }
}

#[tokio::test]
async fn a_thousand_events_make_one_gift_per_payment_confirmed_by_the_bulk_query() {
    // Goal: with sandbox dedup OFF, redeliveries and PI+charge pairs still send each payment
    // once: transactions received == gifts == unique payments, and every record confirms by
    // the FullGift bulk query (no public_url: no webhook).
    let app = TestApp::spawn(fast_engine()).await;
    org_and_tenant(&app, "once", 360_000, json!({"dedup_transactions": false})).await;
    let traffic = one_time_traffic(7, 700);
    let unique: BTreeSet<String> = traffic.unique_payment_ids().into_iter().collect();
    assert!(
        traffic.events.len() >= 1_000,
        "{} events",
        traffic.events.len()
    );
    assert!(
        traffic.redeliveries() >= 80,
        "{} redeliveries",
        traffic.redeliveries()
    );

    let statuses = send_all(&app, "once", traffic.events.clone(), 16).await;
    assert_eq!(
        statuses.get(&202).copied().unwrap_or(0),
        unique.len() as u64,
        "one 202 per unique payment: {statuses:?}"
    );
    assert_eq!(
        statuses.values().sum::<u64>(),
        traffic.events.len() as u64,
        "every event answered: {statuses:?}"
    );
    assert!(
        statuses
            .keys()
            .all(|status| *status == 200 || *status == 202),
        "only 202 queued / 200 duplicate: {statuses:?}"
    );

    let stats = wait_until(Duration::from_secs(60), "every payment sent", || async {
        let stats = sandbox_call(&app, Method::GET, "/_sandbox/orgs/once/stats", None).await;
        let status = tenant_status(&app, "once").await;
        let done = stats["transactions_received"].as_u64() == Some(unique.len() as u64)
            && queued_total(&status) == 0;
        done.then_some(stats)
    })
    .await;
    assert_eq!(stats["throttled"], 0, "no 429: {stats}");
    let processed = sandbox_call(&app, Method::POST, "/_sandbox/orgs/once/process", None).await;
    assert_eq!(
        processed["imported"].as_u64(),
        Some(unique.len() as u64),
        "{processed}"
    );
    let gifts = gift_ids(&app, "once").await;
    assert_eq!(gifts.keys().cloned().collect::<BTreeSet<_>>(), unique);
    assert!(gifts.values().all(|count| *count == 1), "a duplicate gift");
    // The sandbox received exactly the unique payments, even after everything settled.
    let stats = sandbox_call(&app, Method::GET, "/_sandbox/orgs/once/stats", None).await;
    assert_eq!(
        stats["transactions_received"].as_u64(),
        Some(unique.len() as u64)
    );

    let status = reconcile_until_confirmed(&app, "once", unique.len() as u64).await;
    assert_eq!(
        status["counts"]["submitted"].as_u64(),
        Some(unique.len() as u64)
    );
    assert_eq!(status["counts"]["dead"].as_u64(), Some(0));
    let sample = unique.iter().next().unwrap();
    let record = app
        .admin_json(
            Method::GET,
            &format!("/v1/tenants/once/records/gift/stripe/{sample}"),
        )
        .await;
    assert_eq!(record["state"], "confirmed", "{record}");
    assert!(
        record["virtuous_id"].is_string() || record["virtuous_id"].is_number(),
        "{record}"
    );
}

/// `count` deliberately invalid events: customers with a one-word name and no email or
/// phone. They map (a name is enough to send) but Virtuous refuses a household contact
/// without a first and last name: a permanent error, so each must become a dead letter.
pub fn invalid_customer_events(count: usize) -> Vec<traffic::GeneratedEvent> {
    let template = traffic::generate(&TrafficOptions {
        seed: 5,
        payments: 10,
        subscription_share: 0.0,
        customer_share: 1.0,
        redelivery_share: 0.0,
        refunds: 0,
        now_s: jiff::Timestamp::now().as_second(),
        ..TrafficOptions::default()
    })
    .events
    .into_iter()
    .find(|event| event.event_type == "customer.created")
    .expect("a customer event");
    (0..count)
        .map(|n| {
            let mut body: Value = serde_json::from_str(&template.body).unwrap();
            body["id"] = json!(format!("evt_invalid{n}"));
            let customer = &mut body["data"]["object"];
            customer["id"] = json!(format!("cus_invalid{n}"));
            customer["name"] = json!("Cher");
            customer["email"] = Value::Null;
            customer["phone"] = Value::Null;
            customer["address"] = Value::Null;
            customer["shipping"] = Value::Null;
            let mut event = template.clone();
            event.id = format!("evt_invalid{n}");
            event.body = body.to_string();
            event
        })
        .collect()
}

#[tokio::test]
async fn faults_in_virtuous_reach_the_same_end_state() {
    // Goal: 10 % 5xx, 5 % 429 and 2 % applied-then-dropped (sandbox dedup on) change nothing
    // in the end: one gift per payment, all confirmed, no 429 from pacing, and only the
    // deliberately invalid events are dead-lettered.
    let app = TestApp::spawn(fast_engine()).await;
    org_and_tenant(&app, "faulty", 360_000, json!({})).await;
    sandbox_call(
        &app,
        Method::PUT,
        "/_sandbox/orgs/faulty/faults",
        Some(
            json!({"error_5xx_rate": 0.10, "throttle_rate": 0.05, "retry_after_s": 1,
                    "drop_after_apply_rate": 0.02}),
        ),
    )
    .await;
    let traffic = one_time_traffic(11, 300);
    let unique: BTreeSet<String> = traffic.unique_payment_ids().into_iter().collect();
    let mut events = traffic.events.clone();
    let invalid = invalid_customer_events(3);
    events.extend(invalid.iter().cloned());
    let statuses = send_all(&app, "faulty", events, 8).await;
    assert_eq!(
        statuses.get(&202).copied(),
        Some(unique.len() as u64 + invalid.len() as u64),
        "{statuses:?}"
    );

    wait_until(Duration::from_secs(120), "the queue to drain", || async {
        let status = tenant_status(&app, "faulty").await;
        (queued_total(&status) == 0).then_some(())
    })
    .await;
    let stats = sandbox_call(&app, Method::GET, "/_sandbox/orgs/faulty/stats", None).await;
    // The org's limiter never refused: every 429 seen was an injected fault, not pacing.
    assert!(
        stats["rate_window_calls"].as_u64().unwrap() < 360_000,
        "the org's window was never full: {stats}"
    );
    sandbox_call(&app, Method::DELETE, "/_sandbox/orgs/faulty/faults", None).await;
    sandbox_call(&app, Method::POST, "/_sandbox/orgs/faulty/process", None).await;
    let gifts = gift_ids(&app, "faulty").await;
    assert_eq!(gifts.keys().cloned().collect::<BTreeSet<_>>(), unique);
    assert!(gifts.values().all(|count| *count == 1), "a duplicate gift");
    let status = reconcile_until_confirmed(&app, "faulty", unique.len() as u64).await;
    assert_eq!(status["counts"]["dead"].as_u64(), Some(3), "{status}");
    let dead = app
        .admin_json(Method::GET, "/v1/tenants/faulty/dead-letters")
        .await;
    let dead_ids: BTreeSet<String> = dead_letters(&dead)
        .iter()
        .map(|letter| letter["source_id"].as_str().unwrap().to_string())
        .collect();
    let invalid_ids: BTreeSet<String> = (0..3).map(|n| format!("cus_invalid{n}")).collect();
    assert_eq!(dead_ids, invalid_ids, "only the invalid events die: {dead}");
    for letter in dead_letters(&dead) {
        assert_eq!(letter["status"], 400, "{letter}");
    }
    println!(
        "faults: {} calls, {} throttled, {} transactions received for {} payments",
        sandbox_calls(&stats),
        stats["throttled"],
        stats["transactions_received"],
        unique.len()
    );
}

fn dead_letters(listing: &Value) -> Vec<Value> {
    listing
        .get("dead_letters")
        .and_then(Value::as_array)
        .or_else(|| listing.as_array())
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn single_call_items_are_paced_to_the_allowance() {
    // Goal: single-call items (contact transactions) at hourly_limit 36,000 with a 10 % reserve
    // → 9 calls/s → between 53 and 55 calls in 6 s, and no 429. (The same proof at 3,600/h
    // took 60 s of CI; pacing is the same arithmetic at any rate.)
    let app = TestApp::spawn(SpawnOptions::default()).await;
    org_and_tenant(&app, "paced", 36_000, json!({})).await;
    app.admin(Method::POST, "/v1/tenants/paced/pause")
        .send()
        .await
        .unwrap();
    // One call per contact (batched, 120 customers would be 2 calls).
    let patch = json!({"virtuous": {"contact_batch": false}});
    let patched = app
        .admin(Method::PATCH, "/v1/tenants/paced")
        .json(&patch)
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    let traffic = traffic::generate(&TrafficOptions {
        seed: 3,
        payments: 120,
        subscription_share: 0.0,
        customer_share: 1.0,
        redelivery_share: 0.0,
        refunds: 0,
        now_s: jiff::Timestamp::now().as_second(),
        ..TrafficOptions::default()
    });
    let customers: Vec<_> = traffic
        .events
        .into_iter()
        .filter(|event| event.event_type == "customer.created")
        .collect();
    // More items than 6 s of allowance can carry, so the queue never runs dry.
    assert!(customers.len() >= 100, "{} customers", customers.len());
    let statuses = send_all(&app, "paced", customers.clone(), 8).await;
    assert_eq!(
        statuses.get(&202).copied(),
        Some(customers.len() as u64),
        "{statuses:?}"
    );
    let before =
        sandbox_calls(&sandbox_call(&app, Method::GET, "/_sandbox/orgs/paced/stats", None).await);

    app.admin(Method::POST, "/v1/tenants/paced/resume")
        .send()
        .await
        .unwrap();
    let resumed = Instant::now();
    // A deliberate pacing window, not a wait for a result.
    tokio::time::sleep_until((resumed + Duration::from_secs(6)).into()).await;
    let stats = sandbox_call(&app, Method::GET, "/_sandbox/orgs/paced/stats", None).await;
    let calls = sandbox_calls(&stats) - before;
    assert!((53..=55).contains(&calls), "{calls} calls in 6 s: {stats}");
    assert_eq!(stats["throttled"], 0, "{stats}");
}
