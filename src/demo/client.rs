//! The demo's side of the wire: an HTTP client of the engine (admin API, Stripe ingress)
//! and of the embedded sandbox's control API, over loopback — what an operator and Stripe
//! would do, nothing in-process.

use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::traffic::{sign, GeneratedEvent};

/// Where the engine listens, and the admin token.
pub struct Endpoints {
    pub main_url: String,
    pub admin_url: String,
    pub sandbox_url: String,
    pub admin_token: String,
}

pub struct DemoClient {
    http: reqwest::Client,
    endpoints: Endpoints,
}

/// How the ingress answered one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// 202: queued.
    Queued,
    /// 200: a duplicate or deliberately ignored.
    Acknowledged,
}

/// One tenant's numbers, read from the engine and the sandbox.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub queued: u64,
    pub submitted: u64,
    pub confirmed: u64,
    pub dead: u64,
    pub spent_last_hour: u64,
    pub allowance_per_hour: u64,
    /// Sandbox: transactions accepted with 200.
    pub transactions_received: u64,
    /// Sandbox: gifts now (reversals included).
    pub gifts: u64,
    /// Sandbox: counted API calls (every endpoint, every status).
    pub api_calls: u64,
}

impl DemoClient {
    pub fn new(endpoints: Endpoints) -> anyhow::Result<DemoClient> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .context("building the demo's HTTP client")?;
        Ok(DemoClient { http, endpoints })
    }

    async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let url = format!("{}/v1{path}", self.endpoints.admin_url);
        let mut request = self
            .http
            .request(method, &url)
            .bearer_auth(&self.endpoints.admin_token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("calling {url}"))?;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// An admin call by the demo's polled part: (status, JSON answer).
    pub async fn admin_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        self.admin(method, path, body.as_ref()).await
    }

    /// The engine's Prometheus text (`GET /metrics` on the admin listener).
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let url = format!("{}/metrics", self.endpoints.admin_url);
        let response = self
            .http
            .get(&url)
            .bearer_auth(&self.endpoints.admin_token)
            .send()
            .await
            .with_context(|| format!("calling {url}"))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("GET {url} answered {status}: {text}");
        }
        Ok(text)
    }

    /// Uploads `bytes` to an admin route (`PUT`, raw body of `content_type`): (status, JSON
    /// answer).
    pub async fn admin_upload(
        &self,
        path: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> anyhow::Result<(u16, Value)> {
        let url = format!("{}/v1{path}", self.endpoints.admin_url);
        let response = self
            .http
            .put(&url)
            .bearer_auth(&self.endpoints.admin_token)
            .header("Content-Type", content_type)
            .body(bytes)
            .send()
            .await
            .with_context(|| format!("uploading to {url}"))?;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// A Virtuous organization in the sandbox that imports at once (no import step) with a
    /// budget that never slows a demo.
    pub async fn create_immediate_org(&self, id: &str, api_key: &str) -> anyhow::Result<()> {
        let org = serde_json::json!({"id": id, "api_key": api_key, "hourly_limit": 100_000,
                                     "processing": "immediate"});
        self.sandbox_call(reqwest::Method::POST, "/_sandbox/orgs", Some(org))
            .await
            .map(|_| ())
    }

    /// A call of the sandbox's control API (`/_sandbox/…`); an error unless 2xx.
    pub async fn sandbox_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.endpoints.sandbox_url);
        let mut request = self.http.request(method.clone(), &url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("calling {url}"))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("{method} {url} answered {status}: {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A call of the sandbox's Virtuous API with an organization's API key (what a partner's
    /// other systems would send Virtuous); an error unless 2xx.
    pub async fn sandbox_api(
        &self,
        api_key: &str,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> anyhow::Result<()> {
        let url = format!("{}{path}", self.endpoints.sandbox_url);
        let response = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(api_key)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("calling {url}"))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            bail!("{method} {url} answered {status}: {text}");
        }
        Ok(())
    }

    /// The sandbox organization's stats.
    pub async fn sandbox_stats(&self, org_id: &str) -> anyhow::Result<Value> {
        self.sandbox_call(
            reqwest::Method::GET,
            &format!("/_sandbox/orgs/{org_id}/stats"),
            None,
        )
        .await
    }

    /// The engine's ingress base URL.
    pub fn main_url(&self) -> &str {
        &self.endpoints.main_url
    }

    /// `POST /v1/tenants`.
    pub async fn create_tenant(&self, document: &Value) -> anyhow::Result<()> {
        let (status, answer) = self
            .admin(reqwest::Method::POST, "/tenants", Some(document))
            .await?;
        match status {
            201 => Ok(()),
            409 => bail!(
                "tenant `{}` exists already in this data dir: use a fresh --data-dir or another --seed",
                document["id"].as_str().unwrap_or_default()
            ),
            _ => bail!("creating tenant `{}` answered {status}: {answer}", document["id"]),
        }
    }

    /// Asks the reconciler for a pass now, when the build has the test hook; `false` when
    /// it has not (the periodic pass does the work then).
    pub async fn trigger_reconcile(&self, tenant_id: &str) -> bool {
        let path = format!("/tenants/{tenant_id}/_test/reconcile");
        matches!(
            self.admin(reqwest::Method::POST, &path, None).await,
            Ok((200..=299, _))
        )
    }

    /// One signed delivery to `POST /hooks/{tenant}/stripe`, retried like Stripe retries
    /// a `503` (the tenant's capture is starting or its mailbox is full), briefly.
    pub async fn deliver(
        &self,
        tenant_id: &str,
        secret: &str,
        event: &GeneratedEvent,
    ) -> anyhow::Result<Delivery> {
        const ATTEMPTS_MAX: u32 = 20;
        let url = format!("{}/hooks/{tenant_id}/stripe", self.endpoints.main_url);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let now_s = jiff::Timestamp::now().as_second();
            let response = self
                .http
                .post(&url)
                .header(
                    "Stripe-Signature",
                    sign(secret, event.body.as_bytes(), now_s),
                )
                .header("Content-Type", "application/json")
                .body(event.body.clone())
                .send()
                .await
                .with_context(|| format!("delivering {} to {url}", event.id))?;
            match response.status().as_u16() {
                202 => return Ok(Delivery::Queued),
                200 => return Ok(Delivery::Acknowledged),
                404 => bail!(
                    "the Stripe ingress answered 404 for {url}: this build has no `POST /hooks/{{tenant}}/stripe` yet"
                ),
                503 if attempt < ATTEMPTS_MAX => {
                    let retry_after_ms = response
                        .headers()
                        .get("Retry-After")
                        .and_then(|value| value.to_str().ok())
                        .and_then(|value| value.parse::<u64>().ok())
                        .map_or(100, |seconds| (seconds * 1_000).min(2_000));
                    tokio::time::sleep(Duration::from_millis(retry_after_ms)).await;
                }
                status => {
                    let text = response.text().await.unwrap_or_default();
                    bail!(
                        "delivering {} ({}) answered {status}: {text}",
                        event.id,
                        event.event_type
                    )
                }
            }
        }
    }

    /// Waits until `/readyz` answers 200 (every tenant's actors started).
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let url = format!("{}/readyz", self.endpoints.main_url);
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(response) = self.http.get(&url).send().await {
                if response.status() == 200 {
                    return Ok(());
                }
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "the engine is not ready after {timeout:?} ({url})"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `POST /_sandbox/orgs/{id}/process`: the import step staff would run.
    pub async fn run_import(&self, org_id: &str) -> anyhow::Result<Value> {
        let url = format!(
            "{}/_sandbox/orgs/{org_id}/process",
            self.endpoints.sandbox_url
        );
        let response = self.http.post(&url).send().await?;
        anyhow::ensure!(
            response.status() == 200,
            "{url} answered {}",
            response.status()
        );
        Ok(response.json().await?)
    }

    /// A record's state (`None` when the engine does not know it).
    pub async fn record_state(
        &self,
        tenant_id: &str,
        kind: &str,
        source_id: &str,
    ) -> anyhow::Result<Option<String>> {
        let path = format!("/tenants/{tenant_id}/records/{kind}/stripe/{source_id}");
        let (status, answer) = self.admin(reqwest::Method::GET, &path, None).await?;
        Ok((status == 200).then(|| answer["state"].as_str().unwrap_or_default().to_string()))
    }

    /// The tenant's status and its sandbox organization's stats.
    pub async fn snapshot(&self, tenant_id: &str) -> anyhow::Result<Snapshot> {
        let (status, tenant) = self
            .admin(reqwest::Method::GET, &format!("/tenants/{tenant_id}"), None)
            .await?;
        anyhow::ensure!(
            status == 200,
            "status of `{tenant_id}` answered {status}: {tenant}"
        );
        let stats = self.sandbox_stats(tenant_id).await?;
        let number = |value: &Value| value.as_u64().unwrap_or(0);
        let queued = ["live", "retry", "reconcile", "backfill"]
            .iter()
            .map(|lane| number(&tenant["lanes"][lane]["depth"]))
            .sum();
        let api_calls = stats["requests"]
            .as_object()
            .map(|endpoints| {
                endpoints
                    .values()
                    .filter_map(Value::as_object)
                    .flat_map(|statuses| statuses.values())
                    .map(number)
                    .sum()
            })
            .unwrap_or(0);
        Ok(Snapshot {
            queued,
            submitted: number(&tenant["counts"]["submitted"]),
            confirmed: number(&tenant["counts"]["confirmed"]),
            dead: number(&tenant["counts"]["dead"]),
            spent_last_hour: number(&tenant["budget"]["spent_last_hour"]),
            allowance_per_hour: number(&tenant["budget"]["allowance_per_hour"]),
            transactions_received: number(&stats["transactions_received"]),
            gifts: number(&stats["gifts"]),
            api_calls,
        })
    }
}

/// The tenant document of a demo tenant: the embedded sandbox, test-mode Stripe events.
pub fn tenant_document(tenant_id: &str, signing_secret: &str, api_key: &str) -> Value {
    json!({
        "id": tenant_id,
        "name": format!("Demo charity {tenant_id}"),
        "time_zone": "America/Chicago",
        "virtuous": {"base_url": "embedded", "api_key": api_key},
        "sources": {"stripe": {"signing_secret": signing_secret, "accept_test_events": true}},
    })
}
