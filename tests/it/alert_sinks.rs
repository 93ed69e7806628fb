//! Alert sinks (issue 17) against the real `steward` process and a receiver on loopback: a
//! tenant's alert reaches a signed webhook and a Slack sink, is retried while the receiver
//! refuses, survives a kill -9 in the outbox, and its resolve follows; the process's own
//! alert (`disk_nearly_full`) goes out with `tenant: null`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use reqwest::Method;
use serde_json::{json, Value};

use crate::alerts_speak::closed_port;
use crate::common::{serve_receiver, tenant_body, wait_until, SpawnOptions, TestApp};
use crate::pull_support::{header_text, standard_signature_matches};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Received {
    /// `/webhook` or `/slack`.
    path: String,
    id: String,
    timestamp: String,
    signature: String,
    body: Value,
    raw: Vec<u8>,
    /// Answered 500.
    refused: bool,
}

#[derive(Default)]
struct Receiver {
    received: Mutex<Vec<Received>>,
    refusing: AtomicBool,
}

impl Receiver {
    fn all(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Accepted requests on `path` whose body's `field` is `value` (a webhook's `event`,
    /// `code`…; for Slack the `text` contains `value`).
    fn accepted(&self, path: &str, field: &str, value: &str) -> Vec<Received> {
        self.all()
            .into_iter()
            .filter(|r| !r.refused && r.path == path)
            .filter(|r| match r.body[field].as_str() {
                Some(text) if field == "text" => text.contains(value),
                Some(text) => text == value,
                None => false,
            })
            .collect()
    }
}

async fn receive(
    request: HttpRequest,
    body: web::Bytes,
    receiver: web::Data<Receiver>,
) -> HttpResponse {
    let refused = receiver.refusing.load(Ordering::SeqCst);
    receiver.received.lock().unwrap().push(Received {
        path: request.path().to_string(),
        id: header_text(&request, "webhook-id"),
        timestamp: header_text(&request, "webhook-timestamp"),
        signature: header_text(&request, "webhook-signature"),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        raw: body.to_vec(),
        refused,
    });
    if refused {
        return HttpResponse::InternalServerError().body("receiver down");
    }
    HttpResponse::Ok().body("ok")
}

fn config(base_url: &str) -> String {
    format!(
        r#"
[alerts]
crm_unreachable_after = 1
cooldown_s = 0
retry_schedule = ["100ms", "200ms", "400ms", "1s", "2s", "5s"]
disk_free_min_pct = 100

[[alerts.sinks]]
kind = "webhook"
url = "{base_url}/webhook"
secret = "{SECRET}"

[[alerts.sinks]]
kind = "slack"
url = "{base_url}/slack"
codes = ["crm_unreachable"]
"#
    )
}

async fn connection_test(app: &TestApp, id: &str) -> Value {
    let path = format!("/v1/tenants/{id}/test-connection");
    let (status, answer) = app.admin_call(Method::POST, &path, None).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

/// Waits for an accepted request (see [`Receiver::accepted`]).
async fn delivered(receiver: &Receiver, path: &str, field: &str, value: &str) -> Received {
    let what = format!("{path} to accept {field} = {value}");
    wait_until(Duration::from_secs(20), what, || async {
        receiver.accepted(path, field, value).into_iter().next()
    })
    .await
}

#[actix_rt::test]
async fn a_tenant_alert_is_retried_kept_through_a_kill_and_resolved_at_each_sink() {
    // Goal: with the receiver refusing, `crm_unreachable` (raised by a connection test to a
    // dead port) is attempted again and again under one webhook-id; after kill -9 and a
    // restart the receiver accepts it — signed (Standard Webhooks, fresh timestamp), the
    // documented body — and Slack gets its text; the fix resolves it and `alert.resolved`
    // follows at both; `disk_nearly_full` (threshold 100 %) reaches the webhook with
    // `tenant: null` and never the Slack sink, whose `codes` leave it out.
    let receiver = Arc::new(Receiver::default());
    receiver.refusing.store(true, Ordering::SeqCst);
    let base_url = serve_receiver(Arc::clone(&receiver), receive);
    let mut app = TestApp::spawn(SpawnOptions {
        config_file: Some(config(&base_url)),
        ..SpawnOptions::default()
    })
    .await;
    let mut body = tenant_body("alerted");
    body["virtuous"]["base_url"] = json!(format!("http://127.0.0.1:{}", closed_port()));
    app.create_tenant(&body).await;
    assert_eq!(connection_test(&app, "alerted").await["ok"], false);

    let refused_raises = || {
        receiver
            .all()
            .into_iter()
            .filter(|r| r.refused && r.path == "/webhook" && r.body["code"] == "crm_unreachable")
            .collect::<Vec<_>>()
    };
    wait_until(Duration::from_secs(20), "two refused attempts", || async {
        (refused_raises().len() >= 2).then_some(())
    })
    .await;
    // The acknowledgement answers once durable: the raise and its notice, written before
    // it, are flushed too.
    let (status, acked) = app
        .admin_call(
            Method::POST,
            "/v1/tenants/alerted/alerts/crm_unreachable/ack",
            None,
        )
        .await;
    assert_eq!(status, 200, "{acked}");
    app.kill9();
    receiver.refusing.store(false, Ordering::SeqCst);
    app.start().await;

    let raised = delivered(&receiver, "/webhook", "code", "crm_unreachable").await;
    let first_ids: Vec<String> = refused_raises().iter().map(|r| r.id.clone()).collect();
    assert!(
        first_ids.iter().all(|id| id == &raised.id),
        "{first_ids:?} vs {}",
        raised.id
    );
    assert!(
        standard_signature_matches(
            SECRET,
            &raised.id,
            &raised.timestamp,
            &raised.signature,
            &raised.raw
        ),
        "{raised:?}"
    );
    let sent_s: u64 = raised.timestamp.parse().unwrap();
    let now_s = steward_actors::ports::now_ms() / 1_000;
    assert!(now_s.abs_diff(sent_s) < 300, "{raised:?}");
    assert_eq!(raised.body["event"], "alert.raised");
    assert_eq!(raised.body["tenant"], "alerted");
    assert_eq!(raised.body["id"], raised.id.as_str());
    assert!(
        raised.body["message"]
            .as_str()
            .unwrap()
            .contains("did not answer"),
        "{raised:?}"
    );
    assert!(
        raised.body["at"].as_str().unwrap().ends_with('Z'),
        "{raised:?}"
    );
    delivered(
        &receiver,
        "/slack",
        "text",
        "*crm_unreachable* raised for tenant `alerted`",
    )
    .await;

    let disk = delivered(&receiver, "/webhook", "code", "disk_nearly_full").await;
    assert_eq!(
        (disk.body["tenant"].clone(), disk.body["event"].clone()),
        (Value::Null, json!("alert.raised"))
    );

    // Fixed: the next successful call resolves the alert, and the sinks are told.
    let (status, patched) = app
        .admin_call(
            Method::PATCH,
            "/v1/tenants/alerted",
            Some(json!({"virtuous": {"base_url": "embedded"}})),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(connection_test(&app, "alerted").await["ok"], true);
    let resolved = delivered(&receiver, "/webhook", "event", "alert.resolved").await;
    assert_eq!(resolved.body["code"], "crm_unreachable");
    assert_ne!(resolved.id, raised.id);
    delivered(&receiver, "/slack", "text", "*crm_unreachable* resolved").await;

    assert!(receiver
        .accepted("/slack", "text", "disk_nearly_full")
        .is_empty());
    let raises_accepted = receiver.accepted("/webhook", "event", "alert.raised");
    assert_eq!(
        raises_accepted.len(),
        2,
        "one raise per alert: {raises_accepted:?}"
    );
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains(r#"steward_alert_notifications_total{sink="webhook",outcome="sent"}"#)
            || metrics
                .contains(r#"steward_alert_notifications_total{outcome="sent",sink="webhook"}"#),
        "{metrics}"
    );
}
