//! Tenant rules and the DELETE guard over loopback (issue 11): new rules refused on create
//! and patch, a stored tenant that breaks one still starts with `config_invalid`, and a
//! DELETE without force that is refused changes nothing — not even for concurrent ingress.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use steward_actors::store::{Store, StoreOptions};

use crate::common::{status_alert, tenant_body, wait_until, SpawnOptions, TestApp};
use crate::confirm_support::{reconcile_now, submit_synthetic};
use crate::ingress_support::{one_time_charge, post_stripe, stripe_event, stripe_secret, BASIL};

async fn patch(app: &TestApp, id: &str, merge_patch: Value) -> (u16, Value) {
    let path = format!("/v1/tenants/{id}");
    app.admin_call(Method::PATCH, &path, Some(merge_patch))
        .await
}

async fn delete(app: &TestApp, id: &str) -> (u16, Value) {
    let path = format!("/v1/tenants/{id}");
    app.admin_call(Method::DELETE, &path, None).await
}

/// The alert `code` of a status while it is active (not cleared, not resolved).
fn active_alert(status: &Value, code: &str) -> Option<Value> {
    status_alert(status, code).filter(|alert| alert["resolved_at"].is_null())
}

#[actix_rt::test]
async fn new_rules_are_refused_on_create_and_patch_and_null_never_switches_the_destination() {
    // Goal: a Stripe API key as signing secret, a base_url with credentials, and a null base_url are each refused with invalid_field naming the field; nothing changes.
    let app = TestApp::spawn(SpawnOptions::default()).await;
    let mut api_key_as_secret = tenant_body("rules");
    api_key_as_secret["sources"]["stripe"]["signing_secret"] = json!("sk_live_51Hxyz");
    let (status, body) = app
        .admin_call(Method::POST, "/v1/tenants", Some(api_key_as_secret))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_field");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("sources.stripe.signing_secret") && message.contains("whsec_"));

    app.create_tenant(&tenant_body("rules")).await;
    let (status, body) = patch(&app, "rules", json!({"virtuous": {"base_url": null}})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_field");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("virtuous.base_url"));
    let with_userinfo = json!({"virtuous": {"base_url": "https://u:pw@crm.example.org"}});
    let (status, body) = patch(&app, "rules", with_userinfo).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("invalid_field"))
    );
    let shown = app.status("rules").await;
    assert_eq!(
        shown["config"]["virtuous"]["base_url"], "embedded",
        "{shown}"
    );
}

#[actix_rt::test]
async fn a_stored_tenant_that_breaks_a_new_rule_starts_with_config_invalid_until_patched() {
    // Goal: a tenant stored before a rule (timestamp outside the signature) starts at boot, takes webhooks, carries config_invalid naming the field, and a PATCH that fixes it clears the alert.
    let mut app = TestApp::spawn(SpawnOptions::default()).await;
    app.create_tenant(&tenant_body("older")).await;
    app.terminate();
    {
        // What an older version stored: it accepted timestamp_header with signed_payload body.
        let store = Store::open(&app.data_dir().join("store"), StoreOptions::default()).unwrap();
        let mut record = store.registry().get("older").unwrap().unwrap();
        let mut config: Value = serde_json::from_str(&record.config_json).unwrap();
        config["sources"]["platforms"]["auction-co"]["timestamp_header"] = json!("X-Ts");
        assert_eq!(
            config["sources"]["platforms"]["auction-co"]["signed_payload"],
            "body"
        );
        record.config_json = config.to_string();
        store.registry().put(&record).unwrap();
        store.flush_blocking().unwrap();
    }
    app.start().await;

    let status = app.status("older").await;
    assert_eq!(status["state"], "running", "{status}");
    let alert = active_alert(&status, "config_invalid").expect("config_invalid raised");
    assert!(
        alert["message"]
            .as_str()
            .unwrap()
            .contains("sources.platforms.auction-co.signed_payload"),
        "{alert}"
    );
    let event = stripe_event(
        "evt_older_1",
        "charge.succeeded",
        BASIL,
        one_time_charge("older1", 2500),
    );
    let (code, body) = post_stripe(&app, "older", &stripe_secret("older"), &event).await;
    assert_eq!(code, 202, "its webhooks are still taken: {body}");

    let fix = json!({"sources": {"platforms": {"auction-co": {"timestamp_header": null}}}});
    let (code, body) = patch(&app, "older", fix).await;
    assert_eq!(code, 200, "{body}");
    let status = app.status("older").await;
    assert!(
        active_alert(&status, "config_invalid").is_none(),
        "{status}"
    );
}

#[actix_rt::test]
async fn delete_without_force_is_refused_while_gifts_await_confirmation_or_review() {
    // Goal: submitted-but-unconfirmed gifts and needs_review gifts are unfinished: DELETE answers 409 tenant_has_work with no entry queued; force deletes.
    let app = TestApp::spawn(SpawnOptions {
        env: vec![(
            "STEWARD_RECONCILER__NEEDS_REVIEW_AFTER_S".into(),
            "1".into(),
        )],
        ..SpawnOptions::default()
    })
    .await;
    app.create_tenant(&tenant_body("unfinished")).await;
    submit_synthetic(&app, "unfinished", "wait_", &[1, 1]).await;
    let status = app.status("unfinished").await;
    assert_eq!(crate::common::queued_total(&status), 0, "{status}");
    let (code, body) = delete(&app, "unfinished").await;
    assert_eq!(
        (code, &body["error"]["code"]),
        (409, &json!("tenant_has_work")),
        "{body}"
    );
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("2 awaiting confirmation"));

    // Not imported: past needs_review_after_s a pass gives up on them (needs_review).
    wait_until(
        Duration::from_secs(20),
        "both gifts in needs_review",
        || async {
            reconcile_now(&app, "unfinished").await;
            let status = app.status("unfinished").await;
            (status["counts"]["needs_review"] == 2).then_some(())
        },
    )
    .await;
    let (code, body) = delete(&app, "unfinished").await;
    assert_eq!(
        (code, &body["error"]["code"]),
        (409, &json!("tenant_has_work")),
        "{body}"
    );
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("2 in needs_review"));
    assert_eq!(app.status("unfinished").await["state"], "running");

    let forced = app
        .admin(Method::DELETE, "/v1/tenants/unfinished?force=true")
        .send()
        .await
        .unwrap();
    assert_eq!(forced.status(), 204);
}

#[actix_rt::test]
async fn a_refused_delete_under_ingress_answers_503_only_for_what_was_not_stored() {
    // Goal: Stripe deliveries racing refused DELETEs get no 404, and every 202 — and only those — is stored: no 503 for a stored event.
    let app = TestApp::spawn(SpawnOptions::default()).await;
    let id = "racing";
    app.create_tenant(&tenant_body(id)).await;
    // Paused: everything captured stays queued, so every DELETE without force is refused.
    let paused = app
        .admin(Method::POST, &format!("/v1/tenants/{id}/pause"))
        .send()
        .await
        .unwrap();
    assert_eq!(paused.status(), 200);
    let secret = stripe_secret(id);
    let first = stripe_event(
        "evt_race_first",
        "charge.succeeded",
        BASIL,
        one_time_charge("race_first", 1000),
    );
    assert_eq!(post_stripe(&app, id, &secret, &first).await.0, 202);

    const SENDERS: usize = 8;
    const EVENTS_PER_SENDER: usize = 40;
    let senders = (0..SENDERS).map(|sender| {
        let (app, secret) = (&app, &secret);
        async move {
            let mut answers = Vec::new();
            for n in 0..EVENTS_PER_SENDER {
                let name = format!("race_{sender}_{n}");
                let event = stripe_event(
                    &format!("evt_{name}"),
                    "charge.succeeded",
                    BASIL,
                    one_time_charge(&name, 1000),
                );
                answers.push(post_stripe(app, id, secret, &event).await.0);
            }
            answers
        }
    });
    let deletes = async {
        let mut refusals = 0;
        for _ in 0..20 {
            let (code, body) = delete(&app, id).await;
            assert_eq!(code, 409, "{body}");
            refusals += 1;
        }
        refusals
    };
    let (answers, refusals) =
        futures_util::future::join(futures_util::future::join_all(senders), deletes).await;
    assert_eq!(refusals, 20);
    let answers: Vec<u16> = answers.into_iter().flatten().collect();
    let accepted = answers.iter().filter(|code| **code == 202).count() as u64;
    let unexpected: Vec<&u16> = answers
        .iter()
        .filter(|code| !matches!(code, 202 | 503))
        .collect();
    assert!(
        unexpected.is_empty(),
        "answers other than 202/503: {unexpected:?}"
    );
    let status = app.status(id).await;
    assert_eq!(status["state"], "paused", "{status}");
    assert_eq!(
        status["counts"]["captured"].as_u64().unwrap(),
        accepted + 1,
        "stored events = events answered 202 (a 503 means not stored): {status}"
    );
}

#[actix_rt::test]
async fn the_status_advertises_only_ingress_routes_that_exist() {
    // Goal: every URL under the status's `ingress` is a route of this server (an unsigned POST is refused, never 404), Mailchimp's included with its key redacted.
    let app = TestApp::spawn(SpawnOptions::default()).await;
    let mut body = tenant_body("routes");
    body["sources"]["mailchimp"] = json!({"url_key": "mc-key-routes"});
    app.create_tenant(&body).await;
    let status = app.status("routes").await;
    let urls = status["ingress"].as_object().unwrap();
    assert!(
        urls.contains_key("stripe")
            && urls.contains_key("platform/auction-co")
            && urls.contains_key("mailchimp"),
        "{status}"
    );
    for (source, url) in urls {
        let url = url.as_str().unwrap().replace("[redacted]", "x");
        let response = app.client.post(&url).body("{}").send().await.unwrap();
        assert_ne!(response.status(), 404, "{source}: {url} is not a route");
    }
}
