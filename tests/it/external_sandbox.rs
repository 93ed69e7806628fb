//! Goal of this helper module: a Virtuous sandbox in its own `steward sandbox` process, so it
//! outlives an engine that is killed and restarted (crash, failpoint and shutdown tests).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{ChildGuard, TestApp};

/// A `steward sandbox --listen 127.0.0.1:0` child process (killed when dropped).
pub struct ExternalSandbox {
    process: ChildGuard,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    pub client: reqwest::Client,
}

impl ExternalSandbox {
    /// Starts the process and reads its one stdout line naming the address.
    pub fn start() -> ExternalSandbox {
        let mut child = Command::new(env!("CARGO_BIN_EXE_steward"))
            .args(["sandbox", "--listen", "127.0.0.1:0"])
            .env("STEWARD_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn steward sandbox");
        let stdout = child.stdout.take().expect("piped stdout");
        let process = ChildGuard(child);
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the sandbox's address line");
        let url = line
            .trim()
            .strip_prefix("steward sandbox listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from steward sandbox: {line:?}"))
            .to_string();
        ExternalSandbox {
            process,
            url,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    /// A control or API call; panics unless 2xx; the JSON answer (`Null` when empty).
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        sandbox_json(&self.client, &self.url, method, path, body).await
    }

    /// Creates org `org_id` with key `api_key` (`extra` merged into its `OrgSpec`, e.g.
    /// `{"dedup_transactions": false}`).
    pub async fn create_org(&self, org_id: &str, api_key: &str, hourly_limit: u64, extra: Value) {
        let mut org = json!({"id": org_id, "api_key": api_key, "hourly_limit": hourly_limit});
        for (key, value) in extra.as_object().expect("extra is an object") {
            org[key] = value.clone();
        }
        self.call(Method::POST, "/_sandbox/orgs", Some(org)).await;
    }

    pub async fn stats(&self, org_id: &str) -> Value {
        self.call(Method::GET, &format!("/_sandbox/orgs/{org_id}/stats"), None)
            .await
    }

    /// Runs the import step; its answer (`imported`, …).
    pub async fn process(&self, org_id: &str) -> Value {
        self.call(
            Method::POST,
            &format!("/_sandbox/orgs/{org_id}/process"),
            None,
        )
        .await
    }

    /// Every gift of the org (as the sandbox stores it).
    pub async fn gifts(&self, org_id: &str) -> Vec<Value> {
        let gifts = self
            .call(Method::GET, &format!("/_sandbox/orgs/{org_id}/gifts"), None)
            .await;
        gifts.as_array().cloned().unwrap_or_default()
    }

    /// How many gifts the org holds per `transactionId`.
    pub async fn gifts_by_transaction(
        &self,
        org_id: &str,
    ) -> std::collections::BTreeMap<String, usize> {
        let mut gifts = std::collections::BTreeMap::new();
        for gift in self.gifts(org_id).await {
            let id = gift["transactionId"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            *gifts.entry(id).or_insert(0) += 1;
        }
        gifts
    }

    /// Every API call the org answered so far (all routes, all statuses, closes included).
    pub async fn calls(&self, org_id: &str) -> u64 {
        total_calls(&self.stats(org_id).await)
    }
}

/// A call to the sandbox at `base_url`; panics unless 2xx; the JSON answer (`Null` when empty).
pub async fn sandbox_json(
    client: &reqwest::Client,
    base_url: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Value {
    let mut request = client.request(method.clone(), format!("{base_url}{path}"));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "{method} {path} → {status}: {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Every call an org's stats counted (all routes, all statuses, closes included).
pub fn total_calls(stats: &Value) -> u64 {
    stats["requests"]
        .as_object()
        .into_iter()
        .flat_map(|routes| routes.values())
        .flat_map(|by_status| by_status.as_object().into_iter().flat_map(|m| m.values()))
        .filter_map(Value::as_u64)
        .sum()
}

/// The Stripe signing secret the helpers give tenant `tenant_id`.
pub fn stripe_secret_of(tenant_id: &str) -> String {
    format!("whsec_ext{tenant_id}signing")
}

/// Creates an org named after the tenant in `sandbox` and a tenant in `app` targeting it
/// (Stripe source with [`stripe_secret_of`], test events accepted, reserve 10 %).
pub async fn org_and_tenant_on(
    app: &TestApp,
    sandbox: &ExternalSandbox,
    tenant_id: &str,
    hourly_limit: u64,
    org_extra: Value,
) {
    let api_key = format!("ext-key-{tenant_id}");
    sandbox
        .create_org(tenant_id, &api_key, hourly_limit, org_extra)
        .await;
    let body = json!({
        "id": tenant_id, "name": format!("External {tenant_id}"),
        "virtuous": {"base_url": sandbox.url, "api_key": api_key},
        "sources": {"stripe": {"signing_secret": stripe_secret_of(tenant_id), "accept_test_events": true}},
        "budget": {"hourly_limit": hourly_limit, "reserve_pct": 10}
    });
    app.create_tenant(&body).await;
}

#[tokio::test]
async fn the_external_sandbox_outlives_a_killed_engine() {
    // Goal: a gift sent through an engine that is then killed stays in the sandbox process,
    // and the restarted engine keeps talking to the same org.
    let sandbox = ExternalSandbox::start();
    let mut app = TestApp::spawn(crate::common::SpawnOptions::default()).await;
    org_and_tenant_on(&app, &sandbox, "outlive", 360_000, json!({})).await;
    let enqueued = app
        .admin(
            Method::POST,
            "/v1/tenants/outlive/_test/enqueue?count=3&prefix=ext_",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(enqueued.status(), 202);
    crate::common::wait_until(
        Duration::from_secs(30),
        "3 transactions received",
        || async {
            (sandbox.stats("outlive").await["transactions_received"].as_u64() == Some(3))
                .then_some(())
        },
    )
    .await;
    app.kill9();
    app.start().await;
    let calls_before = sandbox.calls("outlive").await;
    assert!(calls_before >= 1, "the org counted the engine's calls");
    assert_eq!(
        sandbox.process("outlive").await["imported"].as_u64(),
        Some(3)
    );
    assert_eq!(sandbox.gifts("outlive").await.len(), 3);
}

impl ExternalSandbox {
    /// The org's request log (`GET /_sandbox/orgs/{id}/requests`), oldest first: `{at_ms,
    /// method, path, status (0 = closed unanswered), transaction_ids}` per API request.
    pub async fn requests(&self, org_id: &str) -> Vec<Value> {
        let log = self
            .call(
                Method::GET,
                &format!("/_sandbox/orgs/{org_id}/requests"),
                None,
            )
            .await;
        log.as_array()
            .cloned()
            .expect("the request log is an array")
    }
}
