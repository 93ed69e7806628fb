//! Helpers of the confirmation tests: records put in `submitted` the way a submitter would
//! (the same transactions sent to the embedded sandbox, the store half through test hooks),
//! the sandbox's import step, and reads of the tenant status.

#![allow(dead_code)]

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{wait_until, TestApp};

pub const EVENTUALLY: Duration = Duration::from_secs(20);

/// The api key `common::tenant_body` gives tenant `id`.
pub fn api_key(id: &str) -> String {
    format!("vk-secret-{id}-apikey")
}

/// Creates the tenant's sandbox organization up front with `overrides` (the tenant then
/// finds it: same id and key), e.g. `{"dedup_transactions": false}`.
pub async fn create_org(app: &TestApp, id: &str, overrides: Value) {
    let mut spec = json!({"id": id, "api_key": api_key(id)});
    for (key, value) in overrides.as_object().unwrap() {
        spec[key] = value.clone();
    }
    let response = app
        .client
        .post(format!("{}/_sandbox/orgs", app.sandbox_url()))
        .json(&spec)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
}

/// The gift transaction the `_test/enqueue` hook queues for `source_id` (same body).
pub fn synthetic_gift(source_id: &str) -> Value {
    json!({"transactionSource": "Synthetic", "transactionId": source_id, "amount": "1.00",
           "giftDate": "2026-01-01", "giftType": "Other", "contact": {"email": "test@example.org"}})
}

async fn admin_post(app: &TestApp, path: &str, body: Option<&Value>) -> Value {
    let mut request = app.admin(reqwest::Method::POST, path);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let json: Value = response.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "POST {path}: {status} {json}");
    json
}

/// Does what a submitter does, in pieces: queues `{prefix}0…` synthetic gifts, sends each to
/// the sandbox `sends[i]` times (as `POST /api/v2/Gift/Transactions`), then marks them
/// `submitted` (their queue entries removed). Submission is paused meanwhile, so no
/// submitter sends them too.
pub async fn submit_synthetic(
    app: &TestApp,
    id: &str,
    prefix: &str,
    sends: &[usize],
) -> Vec<String> {
    admin_post(app, &format!("/v1/tenants/{id}/pause"), None).await;
    let queued = admin_post(
        app,
        &format!(
            "/v1/tenants/{id}/_test/enqueue?count={}&prefix={}",
            sends.len(),
            prefix.replace('\n', "%0A").replace(' ', "%20")
        ),
        None,
    )
    .await;
    assert_eq!(queued["queued"], sends.len(), "{queued}");
    let source_ids: Vec<String> = (0..sends.len()).map(|n| format!("{prefix}{n}")).collect();
    let mut transactions = Vec::new();
    for (source_id, times) in source_ids.iter().zip(sends) {
        for _ in 0..*times {
            transactions.push(synthetic_gift(source_id));
        }
    }
    let response = app
        .client
        .post(format!("{}/api/v2/Gift/Transactions", app.sandbox_url()))
        .bearer_auth(api_key(id))
        .json(&json!({"transactionSource": "Synthetic", "transactions": transactions}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let marked = admin_post(
        app,
        &format!("/v1/tenants/{id}/_test/mark-submitted"),
        Some(&json!({"source": "synthetic", "transaction_source": "Synthetic", "source_ids": source_ids})),
    )
    .await;
    assert_eq!(marked["submitted"], sends.len(), "{marked}");
    admin_post(app, &format!("/v1/tenants/{id}/resume"), None).await;
    source_ids
}

/// Runs the sandbox's import step for the tenant's organization.
pub async fn import(app: &TestApp, id: &str) -> Value {
    let response = app
        .client
        .post(format!("{}/_sandbox/orgs/{id}/process", app.sandbox_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

pub async fn sandbox_stats(app: &TestApp, id: &str) -> Value {
    app.client
        .get(format!("{}/_sandbox/orgs/{id}/stats", app.sandbox_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Asks for a reconciliation pass now (test hook).
pub async fn reconcile_now(app: &TestApp, id: &str) {
    let answer = admin_post(app, &format!("/v1/tenants/{id}/_test/reconcile"), None).await;
    assert_eq!(answer["requested"], true, "{answer}");
}

/// Waits until the tenant's `counts.<name>` reaches `expected`; returns the status.
pub async fn wait_for_count(app: &TestApp, id: &str, name: &str, expected: u64) -> Value {
    wait_until(
        EVENTUALLY,
        &format!("counts.{name} = {expected}"),
        || async {
            let status = app.status(id).await;
            (status["counts"][name].as_u64() == Some(expected)).then_some(status)
        },
    )
    .await
}

pub use crate::common::status_alert as alert;
