//! Hybrid capture through the engine, and the pollers' admin routes: a Mailchimp audience
//! whose webhooks lose a share on the way, a platform that is both signed webhooks and a
//! polled listing, and the operator's run / pause / resume / reset / parity.

use std::collections::BTreeSet;
use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::common::{at_timeout, wait_until, SpawnOptions, TestApp};
use crate::poll_support::{
    last_run_number, poller_of, sized, start_run_of, wait_run_finished_of, Sim,
};

/// Starts a run of `source` (none may be running) and waits for it to complete; its report.
async fn run_once(app: &TestApp, tenant: &str, source: &str) -> Value {
    let before = last_run_number(&poller_of(app, tenant, source).await);
    assert!(
        start_run_of(app, tenant, source).await,
        "a run was already in progress"
    );
    wait_run_finished_of(app, tenant, source, before, Duration::from_secs(60)).await
}

async fn parity(app: &TestApp, tenant: &str, source: &str) -> Value {
    let (status, body) = app
        .admin_call(
            Method::GET,
            &format!("/v1/tenants/{tenant}/parity/{source}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

fn total(parity: &Value, bucket: &str) -> u64 {
    parity["totals"][bucket].as_u64().unwrap()
}

#[tokio::test]
async fn mailchimp_webhooks_lost_on_the_way_are_found_by_the_next_poll_and_parity_names_exactly_them(
) {
    // Goal: with 10 % of audience webhooks dropped and one edit per member between polls,
    // every member's latest version is captured after the next poll, and the parity report
    // counts as poll-only exactly the facts whose webhook was dropped (by record id).
    let members = sized(200, 2_000) as u64;
    let app = TestApp::spawn(SpawnOptions::default()).await;
    let sandbox = app.sandbox_url();
    let sim = Sim::new(&sandbox);
    let tenant = "mc-hybrid";
    let mc_key = "0123456789abcdef0123456789abcdef-us21";
    let account = format!("/_sandbox/mailchimp/accounts/{tenant}");
    sim.call(
        Method::POST,
        "/_sandbox/mailchimp/accounts",
        Some(json!({"id": tenant, "api_key": mc_key, "lists": ["aud"], "seed": 7})),
    )
    .await;
    sim.create_org(tenant, "mc-hybrid-key").await;
    app.create_tenant(&json!({
        "id": tenant, "name": "Hybrid",
        "virtuous": {"base_url": "embedded", "api_key": "mc-hybrid-key"},
        "sources": {"mailchimp": {"url_key": "hook-key-123", "api_key": mc_key, "list_id": "aud",
                                  "base_url": "embedded"}},
        "budget": {"hourly_limit": 1_000_000, "reserve_pct": 10}
    }))
    .await;
    sim.call(
        Method::PUT,
        &format!("{account}/lists/aud/webhook"),
        Some(
            json!({"url": format!("{}/hooks/{tenant}/mailchimp?key=hook-key-123", app.main_url),
                    "drop_pct": 10}),
        ),
    )
    .await;
    let batch: Vec<Value> = (0..members)
        .map(|n| {
            json!({"email_address": format!("m{n}@example.org"),
                        "merge_fields": {"FNAME": format!("M{n}"), "LNAME": "Hybrid"}})
        })
        .collect();
    let added = sim
        .call(
            Method::POST,
            &format!("{account}/lists/aud/members"),
            Some(json!({"members": batch})),
        )
        .await;
    let hashes: Vec<String> = added["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().to_string())
        .collect();
    let report = run_once(&app, tenant, "mailchimp").await;
    assert_eq!(report["fetched"], members, "{report}");
    // A new second for the edits (a fact is a member's version, to the second).
    sim.call(
        Method::POST,
        &format!("{account}/clock"),
        Some(json!({"advance_s": 5})),
    )
    .await;
    for (n, hash) in hashes.iter().enumerate() {
        sim.call(
            Method::PATCH,
            &format!("{account}/lists/aud/members/{hash}"),
            Some(json!({"merge_fields": {"LNAME": format!("Edited{n}")}})),
        )
        .await;
    }
    let dropped = sim
        .call(
            Method::GET,
            &format!("{account}/lists/aud/webhook/dropped"),
            None,
        )
        .await;
    let dropped: Vec<Value> = dropped.as_array().unwrap().clone();
    assert!(
        !dropped.is_empty(),
        "the simulator dropped nothing: raise drop_pct or the size"
    );
    // The delivered webhooks are captured before the poll (a late one would still match).
    let delivered = 2 * members - dropped.len() as u64;
    wait_until(
        Duration::from_secs(30),
        "the delivered webhooks to be captured",
        || async {
            let parity = parity(&app, tenant, "mailchimp").await;
            (total(&parity, "webhook_only") + total(&parity, "both") >= delivered).then_some(())
        },
    )
    .await;
    let report = run_once(&app, tenant, "mailchimp").await;
    assert_eq!(report["fetched"], members, "{report}");

    let parity = parity(&app, tenant, "mailchimp").await;
    assert_eq!(
        total(&parity, "poll_only"),
        dropped.len() as u64,
        "{parity}"
    );
    assert_eq!(
        total(&parity, "webhook_only"),
        0,
        "every version was polled: {parity}"
    );
    assert_eq!(total(&parity, "both"), delivered, "{parity}");
    // Exactly the dropped ones, by record id (examples are bounded: compare what is shown).
    let dropped_ids: BTreeSet<String> = dropped
        .iter()
        .map(|event| event["id"].as_str().unwrap().to_string())
        .collect();
    for hour in parity["hours"].as_array().unwrap() {
        for id in hour["examples"]["poll_only"].as_array().unwrap() {
            assert!(
                dropped_ids.contains(id.as_str().unwrap()),
                "{id} was not dropped"
            );
        }
    }
    // Every member's versions were captured, each once (its subscribe and its edit).
    let status = app.status(tenant).await;
    assert_eq!(
        status["counts"]["captured"].as_u64().unwrap(),
        2 * members,
        "one subscribe and one edit per member, each once: {}",
        status["counts"]
    );
    assert!(
        status["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|alert| alert["code"] != "poller_failed"),
        "{}",
        status["alerts"]
    );
}

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test]
async fn a_platform_seen_by_webhook_and_by_poll_makes_one_gift_per_donation() {
    // Goal: a hybrid platform's donation delivered by webhook and listed by the feed is one
    // gift; one only listed is caught by the poll; Virtuous receives each once.
    let app = TestApp::spawn(SpawnOptions::default()).await;
    let sandbox = app.sandbox_url();
    let sim = Sim::new(&sandbox);
    let tenant = "plat-hybrid";
    sim.call(
        Method::POST,
        "/_sandbox/feeds",
        Some(json!({"id": "gala", "auth_header": "X-Api-Key", "auth_value": "feed-key-1"})),
    )
    .await;
    sim.call(
        Method::POST,
        "/_sandbox/feeds/gala/items",
        Some(json!({"items": [
            {"id": "don-1", "type": "donation.completed", "amount": 2500, "email": "a@example.org"},
            {"id": "don-2", "type": "donation.completed", "amount": 1000, "email": "b@example.org"}]})),
    )
    .await;
    sim.create_org(tenant, "plat-hybrid-key").await;
    app.create_tenant(&json!({
        "id": tenant, "name": "Hybrid platform",
        "virtuous": {"base_url": "embedded", "api_key": "plat-hybrid-key"},
        "sources": {"platforms": {"gala": {
            "secret": "gala-webhook-secret", "signature_prefix": "sha256=",
            "transaction_source": "Gala",
            "events": {"donation.completed": {"kind": "gift", "fields": {
                "amount": "/amount", "contact.email": "/email", "transactionId": "/id"}}},
            "poll": {"url": "embedded", "auth_header": "X-Api-Key", "auth_value": "feed-key-1"}}}},
        "budget": {"hourly_limit": 1_000_000, "reserve_pct": 10}
    }))
    .await;
    let webhook = json!({"id": "don-1", "type": "donation.completed", "amount": 2500,
                         "email": "a@example.org", "updated_at": "2026-01-01T00:00:00Z"});
    let body = webhook.to_string().into_bytes();
    let answer = app
        .client
        .post(format!("{}/hooks/{tenant}/platform/gala", app.main_url))
        .header("X-Signature", sign("gala-webhook-secret", &body))
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
    let report = run_once(&app, tenant, "gala").await;
    assert_eq!(
        (
            report["fetched"].as_u64(),
            report["new"].as_u64(),
            report["unchanged"].as_u64()
        ),
        (Some(2), Some(1), Some(1)),
        "{report}"
    );
    let parity = parity(&app, tenant, "gala").await;
    assert_eq!(
        (
            total(&parity, "both"),
            total(&parity, "poll_only"),
            total(&parity, "webhook_only")
        ),
        (1, 1, 0),
        "{parity}"
    );
    wait_until(Duration::from_secs(30), "both gifts sent", || async {
        let stats = sim.virtuous_stats(tenant).await;
        (stats["transactions_received"].as_u64() == Some(2)).then_some(())
    })
    .await;
    let transactions = sim.transaction_ids(tenant).await;
    assert_eq!(
        transactions.iter().filter(|id| *id == "don-1").count(),
        1,
        "{transactions:?}"
    );
    assert_eq!(
        transactions.iter().filter(|id| *id == "don-2").count(),
        1,
        "{transactions:?}"
    );
}

#[tokio::test]
async fn operators_run_pause_resume_reset_and_reschedule_pollers_and_bad_input_changes_nothing() {
    // Goal: the pollers' admin routes do what docs/polling.md says, refuse bad input with a
    // clear code, and a PATCH of the schedule keeps the checkpoint.
    let app = TestApp::spawn(SpawnOptions::default()).await;
    let sim = Sim::new(&app.sandbox_url());
    let tenant = "poll-admin";
    // Times within the dedup retention (a reset further back is refused).
    let now = jiff::Timestamp::now();
    let at = |hours_ago: i64| {
        jiff::Timestamp::from_second(now.as_second() - hours_ago * 3_600)
            .unwrap()
            .to_string()
    };
    let item_time = at(2);
    sim.call(Method::POST, "/_sandbox/feeds", Some(json!({"id": "feed"})))
        .await;
    sim.call(
        Method::POST,
        "/_sandbox/feeds/feed/items",
        Some(
            json!({"items": [{"id": "c-1", "type": "donor.updated", "donor": "c-1",
                               "email": "c1@example.org", "updated_at": item_time}]}),
        ),
    )
    .await;
    sim.create_org(tenant, "poll-admin-key").await;
    app.create_tenant(&json!({
        "id": tenant, "name": "Poll admin",
        "virtuous": {"base_url": "embedded", "api_key": "poll-admin-key"},
        "sources": {"platforms": {"feed": {
            "transaction_source": "Feed",
            "events": {"donor.updated": {"kind": "contact", "fields": {
                "referenceId": "/donor", "email": "/email"}}},
            "poll": {"url": "embedded", "interval_s": 3600}}}}
    }))
    .await;
    // The interval schedule runs at once the first time.
    let last = std::cell::RefCell::new(Value::Null);
    wait_until(
        Duration::from_secs(30),
        at_timeout(|| format!("the first scheduled run: {}", last.borrow())),
        || async {
            let poller = poller_of(&app, tenant, "feed").await;
            let done = (poller["last_run"]["outcome"] == "completed").then_some(());
            *last.borrow_mut() = poller;
            done
        },
    )
    .await;
    let poller = poller_of(&app, tenant, "feed").await;
    assert_eq!(poller["last_run"]["trigger"], "schedule", "{poller}");
    assert_eq!(poller["checkpoint"]["at"], item_time, "{poller}");
    assert_eq!(poller["checkpoint"]["record_id"], "c-1", "{poller}");
    assert_eq!(
        poller["schedule"],
        json!({"kind": "interval", "interval_s": 3600, "interval_ms": 3_600_000})
    );
    assert!(poller["next_run_at"].is_string(), "{poller}");
    let status = app.status(tenant).await;
    assert_eq!(
        status["pollers"][0]["source"], "feed",
        "{}",
        status["pollers"]
    );

    let base = format!("/v1/tenants/{tenant}/pollers/feed");
    let call = |method: Method, path: String, body: Option<Value>| {
        let app = &app;
        async move { app.admin_call(method, &path, body).await }
    };
    // Bad input: clear codes, nothing changed.
    let (status, body) = call(
        Method::POST,
        format!("{base}/reset"),
        Some(json!({"since": "yesterday"})),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_field")),
        "{body}"
    );
    let (status, body) = call(
        Method::POST,
        format!("{base}/reset"),
        Some(json!({"since": "2999-01-01T00:00:00Z"})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = call(
        Method::POST,
        format!("{base}/reset"),
        Some(json!({"from": "x"})),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("malformed_body")),
        "{body}"
    );
    let (status, body) = call(
        Method::POST,
        format!("{base}/reset"),
        Some(json!({"since": at(1)})),
    )
    .await;
    assert_eq!(status, 400, "a reset never moves forward: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("after the checkpoint"),
        "{body}"
    );
    let (status, body) = call(
        Method::POST,
        format!("{base}/reset"),
        Some(json!({"since": at(24 * 91)})),
    )
    .await;
    assert_eq!(status, 400, "older than the dedup retention: {body}");
    let (status, body) = call(Method::POST, format!("{base}/explode"), None).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = call(
        Method::POST,
        format!("/v1/tenants/{tenant}/pollers/nope/run"),
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    assert!(
        body["error"]["message"].as_str().unwrap().contains("feed"),
        "{body}"
    );
    let (status, _) = call(Method::GET, format!("{base}/runs?limit=0"), None).await;
    assert_eq!(status, 400);
    let (status, _) = call(
        Method::GET,
        format!(
            "/v1/tenants/{tenant}/parity/feed?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z"
        ),
        None,
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = call(Method::GET, "/v1/tenants/nobody/pollers".to_string(), None).await;
    assert_eq!(status, 404);
    assert_eq!(
        poller_of(&app, tenant, "feed").await["checkpoint"],
        poller["checkpoint"]
    );

    // Pause: no run; resume: runs again.
    let (status, body) = call(Method::POST, format!("{base}/pause"), None).await;
    assert_eq!(
        (status, body["state"].as_str()),
        (200, Some("paused")),
        "{body}"
    );
    let (status, body) = call(Method::POST, format!("{base}/run"), None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("conflict")),
        "{body}"
    );
    let (status, body) = call(Method::POST, format!("{base}/resume"), None).await;
    assert_eq!(
        (status, body["state"].as_str()),
        (200, Some("idle")),
        "{body}"
    );

    // Reset: the checkpoint moves back; the re-read is deduplicated.
    let (status, body) = call(
        Method::POST,
        format!("{base}/reset"),
        Some(json!({"since": at(3)})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checkpoint"]["at"], at(3), "{body}");
    let report = run_once(&app, tenant, "feed").await;
    assert_eq!(
        (report["fetched"].as_u64(), report["unchanged"].as_u64()),
        (Some(1), Some(1)),
        "{report}"
    );
    assert_eq!(app.status(tenant).await["counts"]["captured"], 1);

    // A PATCH to a nightly backstop, then off: the checkpoint stays.
    let checkpoint = poller_of(&app, tenant, "feed").await["checkpoint"].clone();
    for (patch, kind) in [
        (json!({"interval_s": null, "daily_at": "02:30"}), "daily"),
        (json!({"daily_at": null}), "off"),
    ] {
        let (status, body) = call(
            Method::PATCH,
            format!("/v1/tenants/{tenant}"),
            Some(json!({"sources": {"platforms": {"feed": {"poll": patch}}}})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let poller = poller_of(&app, tenant, "feed").await;
        assert_eq!(poller["schedule"]["kind"], kind, "{poller}");
        assert_eq!(poller["checkpoint"], checkpoint, "{poller}");
    }
    let (status, body) = call(
        Method::PATCH,
        format!("/v1/tenants/{tenant}"),
        Some(json!({"sources": {"platforms": {"feed": {"poll": {"interval_s": 60, "daily_at": "01:00"}}}}})),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_field")),
        "{body}"
    );
    let (status, body) = call(
        Method::PATCH,
        format!("/v1/tenants/{tenant}"),
        Some(json!({"sources": {"platforms": {"feed": {"poll": {"daily_at": "25:00"}}}}})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
}
