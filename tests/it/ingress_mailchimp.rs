//! The Mailchimp audience webhook route end to end: URL validation (GET, empty POST), the
//! `?key=` check, a form-encoded subscribe queued once, ignored and malformed events, never
//! 410, and the key kept out of logs and status.

use serde_json::{json, Value};

use crate::common::{tenant_body, SpawnOptions, TestApp};
use crate::ingress_support::{count, live_entries};

const URL_KEY: &str = "mc-url-key-Zq8r7Xw2";

const SUBSCRIBE: &str = "type=subscribe&fired_at=2025-11-26+20%3A46%3A40\
    &data%5Bid%5D=a1b2c3d4e5&data%5Blist_id%5D=list1&data%5Bemail%5D=ann%40example.org\
    &data%5Bemail_type%5D=html&data%5Bmerges%5D%5BEMAIL%5D=ann%40example.org\
    &data%5Bmerges%5D%5BFNAME%5D=Ann&data%5Bmerges%5D%5BLNAME%5D=Lee&data%5Bip_opt%5D=10.0.0.1";

fn mailchimp_tenant(id: &str) -> Value {
    let mut body = tenant_body(id);
    body["sources"]["mailchimp"] = json!({"url_key": URL_KEY, "reference_source": "MC Audience"});
    body
}

/// The route's answer: status and JSON body.
async fn call(
    app: &TestApp,
    method: reqwest::Method,
    tenant_id: &str,
    query: &str,
    body: &str,
) -> (u16, Value) {
    let response = app
        .client
        .request(
            method,
            format!("{}/hooks/{tenant_id}/mailchimp{query}", app.main_url),
        )
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    assert_ne!(
        status, 410,
        "never 410: Mailchimp would disable the webhook"
    );
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| json!({ "raw": text })),
    )
}

fn assert_error(answer: &(u16, Value), status: u16, code: &str) {
    assert_eq!(answer.0, status, "{answer:?}");
    assert_eq!(answer.1["error"]["code"], code, "{answer:?}");
}

#[tokio::test]
async fn mailchimp_webhooks_validate_check_the_key_and_queue_once() {
    // Goal: GET and empty POST with the key → 200; missing/wrong key → 401; unknown tenant
    // → 404 unknown_tenant; a tenant without url_key → 404 source_not_configured; a
    // subscribe form → 202 then 200 duplicate with the mapped body; campaign/unknown types →
    // 200 ignored; malformed → 400; never 410; the key is in no log line and no status.
    let mut app = TestApp::spawn(SpawnOptions::default()).await;
    app.create_tenant(&mailchimp_tenant("mc-hook")).await;
    let mut polled_only = tenant_body("mc-poll");
    polled_only["sources"]["mailchimp"] =
        json!({"api_key": "0123abcd-us21", "list_id": "list1", "base_url": "embedded"});
    app.create_tenant(&polled_only).await;
    let key = format!("?key={URL_KEY}");
    use reqwest::Method;

    let validated = call(&app, Method::GET, "mc-hook", &key, "").await;
    assert_eq!(validated.0, 200, "{validated:?}");
    assert_eq!(validated.1["status"], "validated");
    let empty = call(&app, Method::POST, "mc-hook", &key, "").await;
    assert_eq!(empty.0, 200, "{empty:?}");

    for query in ["", "?key=", "?key=mc-url-key-Zq8r7Xw", "?other=1"] {
        assert_error(
            &call(&app, Method::POST, "mc-hook", query, SUBSCRIBE).await,
            401,
            "unauthorized",
        );
        assert_error(
            &call(&app, Method::GET, "mc-hook", query, "").await,
            401,
            "unauthorized",
        );
    }
    assert_error(
        &call(&app, Method::POST, "nobody", &key, SUBSCRIBE).await,
        404,
        "unknown_tenant",
    );
    assert_error(
        &call(&app, Method::GET, "mc-poll", &key, "").await,
        404,
        "source_not_configured",
    );
    assert_error(
        &call(&app, Method::POST, "mc-poll", &key, SUBSCRIBE).await,
        404,
        "source_not_configured",
    );
    let other_method = call(&app, Method::PUT, "mc-hook", &key, "").await;
    assert_eq!(other_method.0, 405, "{other_method:?}");

    let queued = call(&app, Method::POST, "mc-hook", &key, SUBSCRIBE).await;
    assert_eq!(queued.0, 202, "{queued:?}");
    assert_eq!(queued.1["status"], "queued");
    assert_eq!(queued.1["event_id"], "a1b2c3d4e5@1764190000");
    let again = call(&app, Method::POST, "mc-hook", &key, SUBSCRIBE).await;
    assert_eq!(again.0, 200, "{again:?}");
    assert_eq!(again.1["status"], "duplicate");

    for ignored_form in [
        "type=campaign&fired_at=2025-11-26+20%3A46%3A40&data%5Bid%5D=c1&data%5Blist_id%5D=list1",
        "type=mystery&fired_at=2025-11-26+20%3A46%3A40",
    ] {
        let ignored = call(&app, Method::POST, "mc-hook", &key, ignored_form).await;
        assert_eq!(ignored.0, 200, "{ignored:?}");
        assert_eq!(ignored.1["status"], "ignored");
    }
    for malformed in [
        "{\"type\": \"subscribe\"}",
        "type=subscribe",
        "type=subscribe&fired_at=tomorrow",
    ] {
        assert_error(
            &call(&app, Method::POST, "mc-hook", &key, malformed).await,
            400,
            "malformed_body",
        );
    }
    assert_eq!(count(&app, "mc-hook", "captured").await, 1);

    let status = app.status("mc-hook").await;
    let url = status["ingress"]["mailchimp"].as_str().unwrap();
    assert!(
        url.ends_with("/hooks/mc-hook/mailchimp?key=[redacted]"),
        "{status}"
    );
    assert!(!status.to_string().contains(URL_KEY), "{status}");
    assert!(app.status("mc-poll").await["ingress"]
        .get("mailchimp")
        .is_none());

    app.terminate();
    assert!(!app.log().contains(URL_KEY), "the key reached the log");
    let entries = live_entries(&app.data_dir(), "mc-hook");
    let entry = entries
        .iter()
        .find(|entry| entry.fact.source == "mailchimp")
        .unwrap_or_else(|| panic!("no mailchimp entry in {entries:?}"));
    assert_eq!(
        entry.fact.idempotency_key,
        "mailchimp:contact:a1b2c3d4e5@1764190000"
    );
    assert_eq!(entry.fact.transaction_source, "MC Audience");
    let body: Value = serde_json::from_str(&entry.fact.body_json).unwrap();
    assert_eq!(
        body,
        json!({"referenceSource": "MC Audience", "referenceId": "a1b2c3d4e5",
               "email": "ann@example.org", "firstName": "Ann", "lastName": "Lee",
               "emailLists": ["list1"],
               "customFields": {"Email Status": "subscribed", "Email Opt Out": "false"}})
    );
}
