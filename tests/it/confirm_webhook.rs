//! Virtuous webhooks end to end (issue 4): Steward registers its own webhook, the sandbox's
//! GiftCreate deliveries confirm records without a reconciliation pass; bad input changes nothing.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::common::{tenant_body, wait_until, SpawnOptions, TestApp};
use crate::confirm_support::*;

/// A free loopback port (bound, then released) for a listener whose URL must be known
/// before it starts: `public_url` points at the engine's own listener.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn spawn_with_public_url(extra: &[(&str, &str)]) -> TestApp {
    let port = free_port();
    let mut env = vec![
        ("STEWARD_LISTEN".to_string(), format!("127.0.0.1:{port}")),
        (
            "STEWARD_PUBLIC_URL".to_string(),
            format!("http://127.0.0.1:{port}"),
        ),
        // Children tick every second: the registration goes out about a second after start.
        (
            "STEWARD_RUNTIME__HEARTBEAT_MS".to_string(),
            "2000".to_string(),
        ),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    TestApp::spawn(SpawnOptions {
        env,
        ..SpawnOptions::default()
    })
    .await
}

/// Waits until the tenant's inbound handler shows a registered subscription.
async fn wait_for_subscription(app: &TestApp, id: &str) -> Value {
    wait_until(EVENTUALLY, "the webhook subscription", || async {
        let status = app.status(id).await;
        let subscription = status["actors"]["inbound"]["observed"]["subscription"].clone();
        subscription.is_object().then_some(subscription)
    })
    .await
}

fn signature(secret: &str, body: &[u8], hex_encoding: bool) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    if hex_encoding {
        hex::encode(digest)
    } else {
        base64::engine::general_purpose::STANDARD.encode(digest)
    }
}

#[actix_rt::test]
async fn gift_create_webhooks_confirm_without_a_pass_in_both_forms() {
    // Goal: with public_url on the engine's own listener, the registered webhook (single form / Base64, and bulk form / hex) confirms imported gifts with no reconciliation pass.
    let app = spawn_with_public_url(&[]).await;
    app.create_tenant(&tenant_body("hook-a")).await;
    create_org(
        &app,
        "hook-b",
        json!({"webhook_delivery": "bulk", "webhook_signature_encoding": "hex"}),
    )
    .await;
    let mut hex_tenant = tenant_body("hook-b");
    hex_tenant["virtuous"]["signature_encoding"] = json!("hex");
    app.create_tenant(&hex_tenant).await;

    for (id, prefix) in [("hook-a", "wa_"), ("hook-b", "wb_")] {
        let subscription = wait_for_subscription(&app, id).await;
        assert_eq!(
            subscription["url"],
            format!("{}/hooks/{id}/virtuous", app.main_url),
            "{subscription}"
        );
        submit_synthetic(&app, id, prefix, &[1; 3]).await;
        let report = import(&app, id).await;
        assert_eq!(report["imported"], 3, "{report}");
        let status = wait_for_count(&app, id, "confirmed", 3).await;
        let reconciler = &status["actors"]["reconciler"]["observed"];
        assert_eq!(
            reconciler["passes"], 0,
            "confirmed by webhooks alone: {reconciler}"
        );
        // The sandbox counts a delivery once it has read our 200, a moment after we answered.
        let stats = wait_until(
            EVENTUALLY,
            "the sandbox to count its deliveries",
            || async {
                let stats = sandbox_stats(&app, id).await;
                (stats["webhooks_sent"].as_u64() >= Some(1)).then_some(stats)
            },
        )
        .await;
        assert_eq!(stats["webhooks_failed"], 0, "{stats}");
        assert!(
            stats["requests"]["POST /api/Gift/Query/FullGift"].is_null(),
            "no query was needed: {stats}"
        );
    }
    // The registration was one call of each tenant's budget.
    let stats = sandbox_stats(&app, "hook-a").await;
    assert_eq!(stats["requests"]["POST /api/Webhook"]["200"], 1, "{stats}");
}

#[actix_rt::test]
async fn bad_webhook_input_is_refused_and_changes_nothing() {
    // Goal: bad signature / missing header → 401, unknown tenant → 404, malformed → 400, oversized → 413, each with its code; an unmatched event → 200.
    let app = TestApp::spawn(SpawnOptions {
        env: vec![("STEWARD_VIRTUOUS_BODY_LIMIT_BYTES".into(), "2048".into())],
        ..SpawnOptions::default()
    })
    .await;
    app.create_tenant(&tenant_body("hook-bad")).await;
    let [source_id] =
        <[String; 1]>::try_from(submit_synthetic(&app, "hook-bad", "bad_", &[1]).await).unwrap();
    let secret = "vw-secret-hook-bad-webhook";
    let url = format!("{}/hooks/hook-bad/virtuous", app.main_url);
    let gift = json!({"event": "GiftCreate", "gift": {"id": 99, "transactionSource": "Synthetic", "transactionId": source_id}});
    let body = gift.to_string();
    let post = |url: String, body: String, signature: Option<String>| {
        let client = app.client.clone();
        async move {
            let mut request = client
                .post(url)
                .header("Content-Type", "application/json")
                .body(body);
            if let Some(signature) = signature {
                request = request.header("X-Virtuous-Signature", signature);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let json: Value = response.json().await.unwrap_or(Value::Null);
            (
                status,
                json["error"]["code"].as_str().unwrap_or("").to_string(),
            )
        }
    };
    let cases = [
        (
            post(
                url.clone(),
                body.clone(),
                Some(signature("wrong", body.as_bytes(), false)),
            )
            .await,
            (401, "bad_signature"),
        ),
        (
            post(url.clone(), body.clone(), None).await,
            (401, "bad_signature"),
        ),
        (
            post(
                url.clone(),
                body.clone(),
                Some(signature(secret, body.as_bytes(), true)),
            )
            .await,
            (401, "bad_signature"),
        ),
        (
            post(
                format!("{}/hooks/nobody/virtuous", app.main_url),
                body.clone(),
                Some(signature(secret, body.as_bytes(), false)),
            )
            .await,
            (404, "unknown_tenant"),
        ),
        (
            post(
                url.clone(),
                "{oops".into(),
                Some(signature(secret, b"{oops", false)),
            )
            .await,
            (400, "malformed_body"),
        ),
        (
            post(
                url.clone(),
                "x".repeat(4096),
                Some(signature(secret, "x".repeat(4096).as_bytes(), false)),
            )
            .await,
            (413, "payload_too_large"),
        ),
    ];
    for ((status, code), (expected_status, expected_code)) in cases {
        assert_eq!((status, code.as_str()), (expected_status, expected_code));
    }
    assert_eq!(
        app.status("hook-bad").await["counts"]["confirmed"],
        0,
        "nothing changed"
    );

    let unmatched = json!({"event": "GiftCreate", "gift": {"id": 5, "transactionSource": "Elsewhere", "transactionId": "x"}}).to_string();
    let (status, _) = post(
        url.clone(),
        unmatched.clone(),
        Some(signature(secret, unmatched.as_bytes(), false)),
    )
    .await;
    assert_eq!(status, 200);
    // The genuine delivery confirms (durably, before its 200).
    let (status, _) = post(
        url,
        body.clone(),
        Some(signature(secret, body.as_bytes(), false)),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(app.status("hook-bad").await["counts"]["confirmed"], 1);
}
