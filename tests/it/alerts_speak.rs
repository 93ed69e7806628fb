//! Failures that speak up (issue 11, items 8, 14, 16, 17) against the real `steward` process:
//! an unreachable Virtuous raises `crm_unreachable` (never a 401), dead letters raise
//! `dead_letters`, ignored test-mode Stripe events leave a count and a hint, and alerts
//! resolve when their condition clears and can be acknowledged.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{status_alert, tenant_body, wait_until, SpawnOptions, TestApp};
use crate::ingress_support::{one_time_charge, post_stripe, stripe_event, stripe_secret, BASIL};

async fn call(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    app.admin_call(method, path, body).await
}

/// The alert `code` in the tenant's status, if raised.
async fn alert(app: &TestApp, id: &str, code: &str) -> Option<Value> {
    status_alert(&app.status(id).await, code)
}

/// A loopback port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Short retries (dead letter after 4 attempts) and `crm_unreachable` after 3 failures.
fn fast_failures() -> SpawnOptions {
    SpawnOptions {
        env: vec![
            (
                "STEWARD_SUBMITTER__RETRY_SCHEDULE".into(),
                r#"["50ms", "50ms", "50ms"]"#.into(),
            ),
            ("STEWARD_SUBMITTER__RETRY_JITTER_PCT".into(), "0".into()),
            ("STEWARD_ALERTS__CRM_UNREACHABLE_AFTER".into(), "3".into()),
        ],
        ..SpawnOptions::default()
    }
}

#[actix_rt::test]
async fn an_unreachable_virtuous_raises_crm_unreachable_and_dead_letters_never_a_401() {
    // Goal: a tenant whose base_url is a closed loopback port stays `running`, counts its
    // transport failures (status and metrics), logs the first failure of the run once at
    // WARN, raises `crm_unreachable` after 3 failures and `dead_letters` when the gift is
    // dead-lettered — never `auth_failed` nor a 401, the connection test included; pointing
    // it at a working Virtuous resolves `crm_unreachable` with the next successful call, and
    // discarding the last dead letter resolves `dead_letters`.
    let app = TestApp::spawn(fast_failures()).await;
    let mut body = tenant_body("unreach");
    body["virtuous"]["base_url"] = json!(format!("http://127.0.0.1:{}", closed_port()));
    app.create_tenant(&body).await;
    app.wait_ready().await;
    let (status, queued) = call(
        &app,
        Method::POST,
        "/v1/tenants/unreach/_test/enqueue?count=1&prefix=ur_",
        None,
    )
    .await;
    assert_eq!(status, 202, "{queued}");
    let dead = wait_until(Duration::from_secs(20), "dead_letters alert", || async {
        alert(&app, "unreach", "dead_letters").await
    })
    .await;
    assert_eq!(dead["resolved_at"], Value::Null, "{dead}");
    let status = app.status("unreach").await;
    assert_eq!(status["state"], "running", "{status}");
    let unreachable = alert(&app, "unreach", "crm_unreachable")
        .await
        .expect("crm_unreachable raised before the dead letter");
    assert_eq!(unreachable["count"], 1, "{unreachable}");
    assert_eq!(unreachable["resolved_at"], Value::Null);
    assert!(alert(&app, "unreach", "auth_failed").await.is_none());
    assert!(
        status["health"]["crm_transport_failures"].as_u64().unwrap() >= 4,
        "{status}"
    );
    assert!(
        status["health"]["crm_transport_failures_in_a_row"]
            .as_u64()
            .unwrap()
            >= 4
    );
    assert!(!status.to_string().contains("401"), "{status}");
    let (code, answer) = call(
        &app,
        Method::POST,
        "/v1/tenants/unreach/test-connection",
        None,
    )
    .await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(
        (answer["ok"].clone(), answer["status"].clone()),
        (json!(false), Value::Null),
        "{answer}"
    );
    assert!(!answer.to_string().contains("401"), "{answer}");
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("steward_crm_transport_failures_total{tenant=\"unreach\"}"),
        "per-tenant failure counter"
    );
    let log = app.log();
    assert_eq!(
        log.matches("Virtuous unreachable").count(),
        1,
        "one WARN line for the run of failures:\n{log}"
    );

    // Fixed: the next successful call resolves crm_unreachable.
    let (code, patched) = call(
        &app,
        Method::PATCH,
        "/v1/tenants/unreach",
        Some(json!({"virtuous": {"base_url": "embedded"}})),
    )
    .await;
    assert_eq!(code, 200, "{patched}");
    let (code, answer) = call(
        &app,
        Method::POST,
        "/v1/tenants/unreach/test-connection",
        None,
    )
    .await;
    assert_eq!((code, answer["ok"].clone()), (200, json!(true)), "{answer}");
    let resolved = alert(&app, "unreach", "crm_unreachable").await.unwrap();
    assert!(resolved["resolved_at"].is_string(), "{resolved}");
    assert_eq!(
        app.status("unreach").await["health"]["crm_transport_failures_in_a_row"],
        0
    );
    // The dead-letter list emptied: dead_letters resolves.
    let (_, page) = call(&app, Method::GET, "/v1/tenants/unreach/dead-letters", None).await;
    let dead_letter_id = page["dead_letters"][0]["id"].as_u64().unwrap();
    let (code, _) = call(
        &app,
        Method::DELETE,
        &format!("/v1/tenants/unreach/dead-letters/{dead_letter_id}"),
        None,
    )
    .await;
    assert_eq!(code, 204);
    let dead = alert(&app, "unreach", "dead_letters").await.unwrap();
    assert!(dead["resolved_at"].is_string(), "{dead}");
}

#[actix_rt::test]
async fn auth_failed_resolves_on_the_next_success_can_be_acked_and_reopens() {
    // Goal: a scripted 401 raises `auth_failed`; after the resume the next successful call
    // resolves it; `POST …/alerts/{code}/ack` acknowledges it (idempotent, 404 JSON for an
    // unknown code); a new 401 reopens it (resolved_at and acked_at cleared, count 2).
    let app = TestApp::spawn(SpawnOptions::default()).await;
    app.create_tenant(&tenant_body("acker")).await;
    app.wait_ready().await;
    let script = json!({"steps": [{"match": {"method": "POST"}, "respond": {"status": 401}}]});
    let scripted = app
        .client
        .post(format!("{}/_sandbox/orgs/acker/script", app.sandbox_url()))
        .json(&script)
        .send()
        .await
        .unwrap();
    assert_eq!(scripted.status(), 200);
    let enqueue = "/v1/tenants/acker/_test/enqueue?count=1&prefix=ack_";
    let (code, _) = call(&app, Method::POST, enqueue, None).await;
    assert_eq!(code, 202);
    let raised = wait_until(Duration::from_secs(20), "auth_failed", || async {
        alert(&app, "acker", "auth_failed").await
    })
    .await;
    assert_eq!(
        (
            raised["count"].clone(),
            raised["resolved_at"].clone(),
            raised["acked_at"].clone()
        ),
        (json!(1), Value::Null, Value::Null),
        "{raised}"
    );
    let (code, _) = call(&app, Method::POST, "/v1/tenants/acker/resume", None).await;
    assert_eq!(code, 200);
    let resolved = wait_until(Duration::from_secs(20), "auth_failed resolved", || async {
        alert(&app, "acker", "auth_failed")
            .await
            .filter(|alert| alert["resolved_at"].is_string())
    })
    .await;
    assert_eq!(resolved["count"], 1);

    let ack = "/v1/tenants/acker/alerts/auth_failed/ack";
    let (code, acked) = call(&app, Method::POST, ack, None).await;
    assert_eq!(code, 200, "{acked}");
    assert!(acked["acked_at"].is_string(), "{acked}");
    let (code, again) = call(&app, Method::POST, ack, None).await;
    assert_eq!(
        (code, &again["acked_at"]),
        (200, &acked["acked_at"]),
        "ack is idempotent"
    );
    let shown = alert(&app, "acker", "auth_failed").await.unwrap();
    assert_eq!(shown["acked_at"], acked["acked_at"]);
    let (code, unknown) = call(
        &app,
        Method::POST,
        "/v1/tenants/acker/alerts/nope/ack",
        None,
    )
    .await;
    assert_eq!(code, 404, "{unknown}");
    assert_eq!(
        unknown["error"]["code"], "not_found",
        "JSON error: {unknown}"
    );
    let (code, _) = call(
        &app,
        Method::POST,
        "/v1/tenants/ghost/alerts/auth_failed/ack",
        None,
    )
    .await;
    assert_eq!(code, 404);

    // Raised again: open again.
    let scripted = app
        .client
        .post(format!("{}/_sandbox/orgs/acker/script", app.sandbox_url()))
        .json(&script)
        .send()
        .await
        .unwrap();
    assert_eq!(scripted.status(), 200);
    let (code, _) = call(
        &app,
        Method::POST,
        "/v1/tenants/acker/_test/enqueue?count=1&prefix=again_",
        None,
    )
    .await;
    assert_eq!(code, 202);
    let reopened = wait_until(Duration::from_secs(20), "auth_failed reopened", || async {
        alert(&app, "acker", "auth_failed")
            .await
            .filter(|alert| alert["count"] == 2)
    })
    .await;
    assert_eq!(
        (
            reopened["resolved_at"].clone(),
            reopened["acked_at"].clone()
        ),
        (Value::Null, Value::Null),
        "{reopened}"
    );
}

#[actix_rt::test]
async fn ignored_test_mode_events_are_counted_and_hinted_once() {
    // Goal: Stripe test-mode events ignored by a tenant without accept_test_events are
    // counted in its status and raise the hint alert `test_events_ignored` once.
    let app = TestApp::spawn(SpawnOptions::default()).await;
    let mut strict = tenant_body("livetm");
    strict["sources"]["stripe"]["accept_test_events"] = json!(false);
    app.create_tenant(&strict).await;
    app.wait_ready().await;
    for n in 0..3 {
        let mut event = stripe_event(
            &format!("evt_tm_{n}"),
            "charge.succeeded",
            BASIL,
            one_time_charge(&format!("tm{n}"), 500),
        );
        event["livemode"] = json!(false);
        let (code, answer) = post_stripe(&app, "livetm", &stripe_secret("livetm"), &event).await;
        assert_eq!(
            (code, answer["status"].clone()),
            (200, json!("ignored")),
            "{answer}"
        );
    }
    let status = app.status("livetm").await;
    assert_eq!(status["health"]["test_events_ignored"], 3, "{status}");
    let hint = alert(&app, "livetm", "test_events_ignored")
        .await
        .expect("hint raised");
    assert_eq!(hint["count"], 1, "raised once: {hint}");
    assert!(
        hint["message"]
            .as_str()
            .unwrap()
            .contains("set accept_test_events for a test tenant"),
        "{hint}"
    );
}
