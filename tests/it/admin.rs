//! The admin API over loopback against the real `steward` process: tenant lifecycle,
//! authentication, error codes, redaction.

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{tenant_body, tenant_secrets, SpawnOptions, TestApp};

async fn error_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or("<no error code>")
            .to_string(),
    )
}

#[actix_rt::test]
async fn tenant_lifecycle_through_the_admin_api() {
    // Goal: create → get/list → duplicate 409 → patch (rotation) → pause/resume → delete → 404.
    let app = TestApp::spawn(SpawnOptions::default()).await;
    let created = app.create_tenant(&tenant_body("hope-shelter")).await;
    assert_eq!(created["id"], "hope-shelter");
    assert_eq!(created["virtuous"]["api_key"], "[redacted]");
    assert_eq!(created["sources"]["stripe"]["signing_secret"], "[redacted]");
    assert_eq!(
        created["sources"]["stripe"]["previous_signing_secret"],
        Value::Null
    );
    assert_eq!(
        created["sources"]["stripe"]["tolerance_s"], 300,
        "defaults are filled in"
    );
    let created_text = created.to_string();
    for secret in tenant_secrets("hope-shelter") {
        assert!(
            !created_text.contains(&secret),
            "secret {secret} leaked in the create response"
        );
    }

    let status = app.status("hope-shelter").await;
    assert_eq!(status["state"], "running");
    for actor in ["capture", "queue", "submitter", "inbound", "reconciler"] {
        assert_eq!(status["actors"][actor]["restarts"], 0, "{actor}: {status}");
        assert!(
            status["actors"][actor]["mailbox_depth"].is_u64(),
            "{actor}: {status}"
        );
    }
    for lane in ["live", "retry", "reconcile", "backfill"] {
        assert_eq!(status["lanes"][lane]["depth"], 0, "{lane}");
    }
    assert_eq!(
        status["budget"]["allowance_per_hour"], 3240,
        "floor(3600 × 0.9)"
    );
    assert_eq!(status["counts"]["captured"], 0);
    assert_eq!(
        status["ingress"]["stripe"],
        format!("{}/hooks/hope-shelter/stripe", app.main_url)
    );
    assert!(
        !status.to_string().contains("vk-secret"),
        "status leaks the api key"
    );

    let list: Value = app.admin_json(Method::GET, "/v1/tenants").await;
    assert_eq!(list["total"], 1);
    assert_eq!(list["tenants"][0]["id"], "hope-shelter");

    let duplicate = app
        .admin(Method::POST, "/v1/tenants")
        .json(&tenant_body("hope-shelter"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(duplicate).await, (409, "conflict".into()));

    // Merge patch: rename, rotate the Stripe secret (keeping the previous one), drop a platform.
    let patch = json!({"name": "Hope Shelter Inc.",
        "sources": {"stripe": {"signing_secret": "whsec_rotated", "previous_signing_secret": "whsec_secrethope-sheltersigning"},
                    "platforms": {"auction-co": null}}});
    let response = app
        .admin(Method::PATCH, "/v1/tenants/hope-shelter")
        .json(&patch)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let patched: Value = response.json().await.unwrap();
    assert_eq!(patched["name"], "Hope Shelter Inc.");
    assert_eq!(
        patched["sources"]["stripe"]["previous_signing_secret"],
        "[redacted]"
    );
    assert!(patched["sources"]["platforms"]
        .as_object()
        .unwrap()
        .is_empty());
    assert_eq!(
        patched["virtuous"]["api_key"], "[redacted]",
        "untouched secrets are kept"
    );
    assert!(!patched.to_string().contains("whsec_rotated"));

    let id_change = app
        .admin(Method::PATCH, "/v1/tenants/hope-shelter")
        .json(&json!({"id": "other"}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(id_change).await, (400, "invalid_field".into()));
    let bad_patch = app
        .admin(Method::PATCH, "/v1/tenants/hope-shelter")
        .json(&json!({"time_zone": "Nowhere/Land"}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(bad_patch).await, (400, "invalid_field".into()));
    assert_eq!(
        app.status("hope-shelter").await["name"],
        "Hope Shelter Inc.",
        "a rejected patch changes nothing"
    );

    let paused: Value = app
        .admin_json(Method::POST, "/v1/tenants/hope-shelter/pause")
        .await;
    assert_eq!(paused["state"], "paused");
    assert_eq!(app.status("hope-shelter").await["state"], "paused");
    let resumed: Value = app
        .admin_json(Method::POST, "/v1/tenants/hope-shelter/resume")
        .await;
    assert_eq!(resumed["state"], "running");

    let deleted = app
        .admin(Method::DELETE, "/v1/tenants/hope-shelter")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let gone = app
        .admin(Method::GET, "/v1/tenants/hope-shelter")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(gone).await, (404, "not_found".into()));
    let list: Value = app.admin_json(Method::GET, "/v1/tenants").await;
    assert_eq!(list["total"], 0);
}

#[actix_rt::test]
async fn every_v1_route_requires_the_admin_token() {
    // Goal: each /v1 route answers 401 `unauthorized` without a token and with a wrong one.
    let app = TestApp::spawn(SpawnOptions::default()).await;
    app.create_tenant(&tenant_body("guarded")).await;
    let routes = [
        (Method::POST, "/v1/tenants"),
        (Method::GET, "/v1/tenants"),
        (Method::GET, "/v1/tenants/guarded"),
        (Method::PATCH, "/v1/tenants/guarded"),
        (Method::DELETE, "/v1/tenants/guarded"),
        (Method::POST, "/v1/tenants/guarded/pause"),
        (Method::POST, "/v1/tenants/guarded/resume"),
        (Method::POST, "/v1/tenants/guarded/_test/kill/queue"),
        (Method::GET, "/v1/no-such-route"),
    ];
    for (method, path) in routes {
        let url = format!("{}{}", app.admin_url, path);
        let anonymous = app
            .client
            .request(method.clone(), &url)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(anonymous).await,
            (401, "unauthorized".into()),
            "{method} {path} without a token"
        );
        let wrong = app
            .client
            .request(method.clone(), &url)
            .bearer_auth("wrong-token-wrong-token")
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(wrong).await,
            (401, "unauthorized".into()),
            "{method} {path} with a wrong token"
        );
    }
    // Nothing changed: the tenant is still there and running.
    assert_eq!(app.status("guarded").await["state"], "running");
}

#[actix_rt::test]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    // Goal: invalid ids, malformed or oversized bodies and invalid fields → 4xx codes, no tenant.
    let app = TestApp::spawn(SpawnOptions {
        env: vec![("STEWARD_BODY_LIMIT_BYTES".into(), "4096".into())],
        ..SpawnOptions::default()
    })
    .await;
    let post = |body: reqwest::Body| {
        app.admin(Method::POST, "/v1/tenants")
            .header("content-type", "application/json")
            .body(body)
    };

    let mut bad_id = tenant_body("x");
    bad_id["id"] = json!("Hope_Shelter");
    assert_eq!(
        error_code(post(bad_id.to_string().into()).send().await.unwrap()).await,
        (400, "invalid_tenant_id".into())
    );
    bad_id["id"] = json!("a".repeat(65));
    assert_eq!(
        error_code(post(bad_id.to_string().into()).send().await.unwrap()).await,
        (400, "invalid_tenant_id".into())
    );
    assert_eq!(
        error_code(post("{\"id\": ".into()).send().await.unwrap()).await,
        (400, "malformed_body".into())
    );
    assert_eq!(
        error_code(post("[1,2]".into()).send().await.unwrap()).await,
        (400, "malformed_body".into())
    );
    let oversized = json!({"id": "big", "name": "x".repeat(10_000), "virtuous": {"api_key": "k"}});
    assert_eq!(
        error_code(post(oversized.to_string().into()).send().await.unwrap()).await,
        (413, "payload_too_large".into())
    );
    let mut unknown_field = tenant_body("fields");
    unknown_field["virtuous"]["colour"] = json!("red");
    assert_eq!(
        error_code(post(unknown_field.to_string().into()).send().await.unwrap()).await,
        (400, "invalid_field".into())
    );
    let mut missing_key = tenant_body("nokey");
    missing_key["virtuous"]
        .as_object_mut()
        .unwrap()
        .remove("api_key");
    assert_eq!(
        error_code(post(missing_key.to_string().into()).send().await.unwrap()).await,
        (400, "invalid_field".into())
    );

    for path in ["/v1/tenants/missing", "/v1/tenants/missing/pause"] {
        let method = if path.ends_with("pause") {
            Method::POST
        } else {
            Method::GET
        };
        assert_eq!(
            error_code(app.admin(method, path).send().await.unwrap()).await,
            (404, "not_found".into()),
            "{path}"
        );
    }
    assert_eq!(
        error_code(
            app.admin(Method::GET, "/v1/tenants/UPPER")
                .send()
                .await
                .unwrap()
        )
        .await,
        (400, "invalid_tenant_id".into())
    );
    let list: Value = app.admin_json(Method::GET, "/v1/tenants").await;
    assert_eq!(list["total"], 0, "no bad request created a tenant: {list}");
}

#[actix_rt::test]
async fn delete_with_queued_work_needs_force() {
    // Goal: DELETE answers 409 `tenant_has_work` while entries are queued, and succeeds with ?force=true.
    let app = TestApp::spawn(SpawnOptions::default()).await;
    app.create_tenant(&tenant_body("busy")).await;
    // Every child started (the enqueue hook would otherwise wait for a starting capture).
    app.wait_ready().await;
    let response = app
        .admin(
            Method::POST,
            "/v1/tenants/busy/_test/enqueue?count=3&prefix=gift-",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
    let status = app.status("busy").await;
    assert_eq!(status["lanes"]["live"]["depth"], 3, "{status}");
    assert_eq!(status["counts"]["captured"], 3);

    let refused = app
        .admin(Method::DELETE, "/v1/tenants/busy")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(refused).await, (409, "tenant_has_work".into()));
    let bad_query = app
        .admin(Method::DELETE, "/v1/tenants/busy?force=yes")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(bad_query).await, (400, "malformed_body".into()));
    assert_eq!(
        app.status("busy").await["lanes"]["live"]["depth"],
        3,
        "a refused delete changes nothing"
    );
    let forced = app
        .admin(Method::DELETE, "/v1/tenants/busy?force=true")
        .send()
        .await
        .unwrap();
    assert_eq!(forced.status(), 204);
    // Re-creating the id starts from an empty store: no depth, no counts, no dedup marks
    // (the same source facts are queued again, not answered as duplicates).
    app.create_tenant(&tenant_body("busy")).await;
    let status = app.status("busy").await;
    assert_eq!(status["lanes"]["live"]["depth"], 0);
    for (count, value) in status["counts"].as_object().unwrap() {
        assert_eq!(value, 0, "count {count} survived the delete: {status}");
    }
    let again: Value = app
        .admin_json(
            Method::POST,
            "/v1/tenants/busy/_test/enqueue?count=3&prefix=gift-",
        )
        .await;
    assert_eq!(again, json!({"queued": 3, "duplicates": 0}));
    let repeat: Value = app
        .admin_json(
            Method::POST,
            "/v1/tenants/busy/_test/enqueue?count=3&prefix=gift-",
        )
        .await;
    assert_eq!(
        repeat,
        json!({"queued": 0, "duplicates": 3}),
        "positive control: dedup works"
    );
}

#[actix_rt::test]
async fn admin_listen_separates_v1_and_metrics() {
    // Goal: with admin_listen set, /v1 and /metrics live only on the admin address.
    let app = TestApp::spawn(SpawnOptions {
        env: vec![("STEWARD_ADMIN_LISTEN".into(), "127.0.0.1:0".into())],
        ..SpawnOptions::default()
    })
    .await;
    assert_ne!(app.admin_url, app.main_url);
    app.create_tenant(&tenant_body("split")).await;
    let on_main = app
        .client
        .get(format!("{}/v1/tenants", app.main_url))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(on_main.status(), 404);
    let metrics_on_main = app
        .client
        .get(format!("{}/metrics", app.main_url))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics_on_main.status(), 404);
    let metrics = app
        .client
        .get(format!("{}/metrics", app.admin_url))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    let health = app
        .client
        .get(format!("{}/healthz", app.main_url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

#[actix_rt::test]
async fn metrics_expose_mailbox_depth_per_tenant_and_wait_time_per_kind() {
    // Goal: /metrics has the mailbox depth gauge labelled by tenant and actor, and the
    // mailbox wait histogram labelled by actor kind only.
    let app = TestApp::spawn(SpawnOptions::default()).await;
    app.create_tenant(&tenant_body("metered")).await;
    app.admin(Method::POST, "/v1/tenants/metered/_test/enqueue?count=2")
        .send()
        .await
        .unwrap();
    let text = app.metrics_text().await;
    for actor in ["capture", "queue", "submitter", "inbound", "reconciler"] {
        let series = format!("steward_actor_mailbox_depth{{tenant=\"metered\",actor=\"{actor}\"}}");
        let alternative =
            format!("steward_actor_mailbox_depth{{actor=\"{actor}\",tenant=\"metered\"}}");
        assert!(
            text.contains(&series) || text.contains(&alternative),
            "missing {series} in:\n{text}"
        );
    }
    let wait_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("steward_actor_mailbox_wait_seconds_bucket"))
        .collect();
    assert!(
        !wait_lines.is_empty(),
        "no mailbox wait histogram in:\n{text}"
    );
    assert!(
        wait_lines.iter().all(|line| !line.contains("tenant=")),
        "wait histogram must not carry a tenant label"
    );
}
