//! Operator routes against the real `steward` process: dead letters (list, replay as-is and
//! edited, idempotency fields protected, discard), record lookup by alias, lane ETAs and
//! the connection test against the embedded sandbox.

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{tenant_body, SpawnOptions, TestApp};

async fn call(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    app.admin_call(method, path, body).await
}

/// A paused tenant (nothing is submitted while the test arranges its queue).
async fn paused_tenant(app: &TestApp, id: &str) {
    app.create_tenant(&tenant_body(id)).await;
    // Every child started (a capture still starting would answer the enqueue hook 503).
    app.wait_ready().await;
    let (status, _) = call(app, Method::POST, &format!("/v1/tenants/{id}/pause"), None).await;
    assert_eq!(status, 200);
}

async fn enqueue(app: &TestApp, id: &str, query: &str) {
    let (status, body) = call(
        app,
        Method::POST,
        &format!("/v1/tenants/{id}/_test/enqueue?{query}"),
        None,
    )
    .await;
    assert_eq!(status, 202, "{body}");
}

async fn record(app: &TestApp, id: &str, path: &str) -> (u16, Value) {
    call(
        app,
        Method::GET,
        &format!("/v1/tenants/{id}/records/{path}"),
        None,
    )
    .await
}

#[actix_rt::test]
async fn dead_letters_are_listed_replayed_edited_and_discarded_durably() {
    // Goal: the dead-letter routes do what docs/operations.md "Dead letters" says, keep lanes and counts exact,
    // refuse idempotency-field edits, write history, and survive a kill -9 right after.
    let mut app = TestApp::spawn(SpawnOptions::default()).await;
    paused_tenant(&app, "dl").await;
    enqueue(&app, "dl", "count=3&prefix=dlg").await;
    let (status, body) = call(
        &app,
        Method::POST,
        "/v1/tenants/dl/_test/dead-letter?count=3&status=422&reason=amount%20invalid",
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let ids: Vec<u64> = body["dead_lettered"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
    let tenant = app.status("dl").await;
    assert_eq!(tenant["lanes"]["live"]["depth"], 0);
    assert_eq!(tenant["counts"]["dead"], 3);

    let (status, first_page) = call(
        &app,
        Method::GET,
        "/v1/tenants/dl/dead-letters?limit=2",
        None,
    )
    .await;
    assert_eq!(status, 200);
    let listed = first_page["dead_letters"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(first_page["next_after"], ids[1]);
    let first = &listed[0];
    assert_eq!(first["id"], ids[0]);
    assert_eq!(first["status"], 422);
    assert_eq!(first["reason"], "HTTP 422: amount invalid");
    assert_eq!(first["attempts"], 0);
    assert_eq!(first["kind"], "gift");
    assert_eq!(first["source"], "synthetic");
    assert_eq!(first["source_id"], "dlg0");
    assert_eq!(
        first["body"]["transactionId"], "dlg0",
        "the body is JSON, not text"
    );
    assert!(first["dead_at"].as_str().unwrap().ends_with('Z'));
    let (_, second_page) = call(
        &app,
        Method::GET,
        &format!("/v1/tenants/dl/dead-letters?limit=2&after={}", ids[1]),
        None,
    )
    .await;
    assert_eq!(second_page["dead_letters"].as_array().unwrap().len(), 1);
    assert_eq!(second_page["next_after"], Value::Null);

    // As-is.
    let replay = |id: u64| format!("/v1/tenants/dl/dead-letters/{id}/replay");
    let (status, replayed) = call(&app, Method::POST, &replay(ids[0]), None).await;
    assert_eq!(status, 200, "{replayed}");
    assert_eq!(replayed["edited"], false);
    let tenant = app.status("dl").await;
    assert_eq!(tenant["lanes"]["live"]["depth"], 1);
    assert_eq!(tenant["counts"]["dead"], 2);
    let (_, looked_up) = record(&app, "dl", "gift/synthetic/dlg0").await;
    assert_eq!(looked_up["state"], "pending");
    assert_eq!(
        looked_up["history"].as_array().unwrap().last().unwrap()["reason"],
        "replayed by operator"
    );
    assert_eq!(looked_up["queued"][0]["lane"], "live");
    assert_eq!(looked_up["queued"][0]["attempts"], 0);
    let (status, _) = call(&app, Method::POST, &replay(ids[0]), None).await;
    assert_eq!(status, 404, "a replayed dead letter is gone");

    // Edited: the idempotency fields are protected, including removal.
    let original = &listed[1]["body"];
    let mut changed_id = original.clone();
    changed_id["transactionId"] = json!("other");
    let mut removed_source = original.clone();
    removed_source
        .as_object_mut()
        .unwrap()
        .remove("transactionSource");
    let mut added_reference = original.clone();
    added_reference["referenceId"] = json!("cus_1");
    for refused in [changed_id, removed_source, added_reference] {
        let (status, error) = call(
            &app,
            Method::POST,
            &replay(ids[1]),
            Some(json!({"body": refused})),
        )
        .await;
        assert_eq!(status, 400, "{error}");
        assert_eq!(error["error"]["code"], "idempotency_fields_changed");
    }
    let mut edited = original.clone();
    edited["amount"] = json!("2.00");
    let (status, replayed) = call(
        &app,
        Method::POST,
        &replay(ids[1]),
        Some(json!({"body": edited})),
    )
    .await;
    assert_eq!(status, 200, "{replayed}");
    assert_eq!(replayed["edited"], true);
    let (_, looked_up) = record(&app, "dl", "gift/synthetic/dlg1").await;
    assert_eq!(looked_up["queued"][0]["body"]["amount"], "2.00");
    assert_eq!(
        looked_up["history"].as_array().unwrap().last().unwrap()["reason"],
        "replayed by operator, edited"
    );

    // Discard.
    let discard = format!("/v1/tenants/dl/dead-letters/{}", ids[2]);
    let response = app.admin(Method::DELETE, &discard).send().await.unwrap();
    assert_eq!(response.status(), 204);
    // Durable before the answer: a kill -9 now loses nothing.
    app.kill9();
    app.start().await;
    let (_, after_restart) = call(&app, Method::GET, "/v1/tenants/dl/dead-letters", None).await;
    assert_eq!(after_restart["dead_letters"], json!([]));
    let (_, looked_up) = record(&app, "dl", "gift/synthetic/dlg2").await;
    assert_eq!(looked_up["state"], "dead");
    assert_eq!(
        looked_up["history"].as_array().unwrap().last().unwrap()["reason"],
        "discarded by operator"
    );
    let (_, looked_up) = record(&app, "dl", "gift/synthetic/dlg1").await;
    assert_eq!(looked_up["state"], "pending", "the edited replay survived");
    let tenant = app.status("dl").await;
    assert_eq!(tenant["lanes"]["live"]["depth"], 2);
    assert_eq!(tenant["counts"]["dead"], 1);
    let response = app.admin(Method::DELETE, &discard).send().await.unwrap();
    assert_eq!(response.status(), 404);

    // Bad input.
    let (status, error) = call(
        &app,
        Method::GET,
        "/v1/tenants/dl/dead-letters?limit=0",
        None,
    )
    .await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (400, Some("invalid_field"))
    );
    let (status, _) = call(&app, Method::GET, "/v1/tenants/nobody/dead-letters", None).await;
    assert_eq!(status, 404);
    let (status, _) = call(
        &app,
        Method::POST,
        "/v1/tenants/dl/dead-letters/abc/replay",
        None,
    )
    .await;
    assert_eq!(status, 404);
}

#[actix_rt::test]
async fn records_are_found_by_id_or_alias_with_history() {
    // Goal: the record route answers state, key and ISO history by id and by alias, 404
    // when nothing matches, 400 for an unknown kind.
    let app = TestApp::spawn(SpawnOptions::default()).await;
    paused_tenant(&app, "rec").await;
    enqueue(&app, "rec", "count=2&prefix=pi_rec&alias=evt_rec").await;
    let (status, by_id) = record(&app, "rec", "gift/synthetic/pi_rec1").await;
    assert_eq!(status, 200, "{by_id}");
    assert_eq!(by_id["state"], "pending");
    assert_eq!(by_id["idempotency_key"], "synthetic:gift:pi_rec1");
    assert_eq!(by_id["virtuous_id"], Value::Null);
    let history = by_id["history"].as_array().unwrap();
    assert_eq!(history[0]["from"], Value::Null);
    assert_eq!(history[0]["to"], "pending");
    assert_eq!(history[0]["reason"], "enqueued");
    assert!(history[0]["at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(by_id["queued"].as_array().unwrap().len(), 1);

    let (status, by_alias) = record(&app, "rec", "gift/synthetic/evt_rec1").await;
    assert_eq!(status, 200, "{by_alias}");
    assert_eq!(by_alias["source_id"], "pi_rec1");
    let (status, error) = record(&app, "rec", "contact/synthetic/evt_rec1").await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, _) = record(&app, "rec", "gift/stripe/evt_rec1").await;
    assert_eq!(status, 404, "an alias of another source does not match");
    let (status, error) = record(&app, "rec", "pledge/synthetic/pi_rec1").await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (400, Some("invalid_field"))
    );
}

#[actix_rt::test]
async fn lane_etas_follow_batching_and_the_allowance() {
    // Goal: eta_s = ceil(calls through the lane × 3600 / allowance), gifts 100 to a call,
    // and a lane's ETA includes the lanes above it.
    let app = TestApp::spawn(SpawnOptions::default()).await;
    paused_tenant(&app, "eta").await; // hourly_limit 3600, reserve 10 % → 3240 calls/h
    enqueue(&app, "eta", "count=250&prefix=eta").await;
    let tenant = app.status("eta").await;
    assert_eq!(tenant["budget"]["allowance_per_hour"], 3240);
    let live = &tenant["lanes"]["live"];
    assert_eq!(live["depth"], 250);
    // 250 gifts = 3 calls; 3 × 3600 / 3240 = 3.33 → 4 s.
    assert_eq!(live["eta_s"], 4, "{tenant}");
    assert_eq!(tenant["lanes"]["retry"]["eta_s"], 4, "lanes above count");
    assert_eq!(tenant["lanes"]["backfill"]["depth"], 0);
    assert!(live["oldest_age_s"].as_u64().unwrap() < 60);
    assert_eq!(tenant["counts"]["captured"], 250);
    assert_eq!(tenant["budget"]["warning"], Value::Null);
}

#[actix_rt::test]
async fn connection_test_answers_ok_or_why_not_and_spends_budget() {
    // Goal: test-connection reads Organization/Current with the tenant's key (ok against the
    // embedded sandbox, `ok: false` with status 401 for a wrong key), counts each call in
    // spent_last_hour, and a header limit unlike hourly_limit shows a budget warning.
    let app = TestApp::spawn(SpawnOptions::default()).await;
    app.create_tenant(&tenant_body("conn")).await;
    app.wait_ready().await;
    let (status, answer) = call(&app, Method::POST, "/v1/tenants/conn/test-connection", None).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["organization"], "conn");
    assert_eq!(answer["status"], 200);
    assert_eq!(
        answer["rate_limit"]["limit"], 5000,
        "the sandbox org's limit"
    );
    assert!(answer["elapsed_ms"].is_u64());
    let tenant = app.status("conn").await;
    assert_eq!(tenant["budget"]["spent_last_hour"], 1);
    assert_eq!(tenant["budget"]["header_limit"], 5000);
    assert!(
        tenant["budget"]["warning"]
            .as_str()
            .unwrap()
            .contains("5000"),
        "{tenant}"
    );

    let sandbox_url = app.sandbox_url();
    // The sandbox URL itself (not "embedded"): no org is re-keyed, so the key is unknown.
    let patch = json!({"virtuous": {"base_url": sandbox_url, "api_key": "vk-wrong-key-for-conn"}});
    let (status, _) = call(&app, Method::PATCH, "/v1/tenants/conn", Some(patch)).await;
    assert_eq!(status, 200);
    let (status, answer) = call(&app, Method::POST, "/v1/tenants/conn/test-connection", None).await;
    assert_eq!(status, 200, "a failed test is an answer: {answer}");
    assert_eq!(answer["ok"], false, "{answer}");
    assert_eq!(answer["status"], 401);
    assert!(answer["reason"].is_string());
    let tenant = app.status("conn").await;
    assert_eq!(tenant["budget"]["spent_last_hour"], 2);
    let (status, _) = call(
        &app,
        Method::POST,
        "/v1/tenants/nobody/test-connection",
        None,
    )
    .await;
    assert_eq!(status, 404);
}
