//! Goal of this helper module: what the full-engine polling tests share — a Constant Contact
//! account in a sandbox (embedded or `ExternalSandbox`), a Virtuous org and a tenant polling
//! the account, poller runs through the admin API, and readings of both simulators (contacts,
//! request logs) to check what reached Virtuous.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{at_timeout, queued_total, wait_until, TestApp};
use crate::external_sandbox::sandbox_json;

/// The polling tests run their full sizes with `STEWARD_FULL_POLL_TESTS=1`.
pub fn full_size() -> bool {
    std::env::var("STEWARD_FULL_POLL_TESTS").is_ok_and(|value| value == "1")
}

/// `full` with `STEWARD_FULL_POLL_TESTS=1`, else `ci`.
pub fn sized(ci: usize, full: usize) -> usize {
    if full_size() {
        full
    } else {
        ci
    }
}

/// How long a queue of `contacts` polled contacts may take to drain: one contact
/// transaction per call (about 15 a second on a loaded 2-core machine), plus a minute.
pub fn drain_timeout(contacts: usize) -> Duration {
    Duration::from_secs(60 + contacts as u64 / 8)
}

/// The reference source the tenants use (the adapter's default).
pub const REFERENCE_SOURCE: &str = "ConstantContact";
pub const SOURCE: &str = "constant_contact";

/// A sandbox server (the engine's embedded one or an `ExternalSandbox`) at `url`.
#[derive(Clone)]
pub struct Sim {
    pub url: String,
    pub client: reqwest::Client,
}

impl Sim {
    pub fn new(url: &str) -> Sim {
        Sim {
            url: url.to_string(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    /// A call that must answer 2xx; its JSON (`Null` when empty).
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        sandbox_json(&self.client, &self.url, method, path, body).await
    }

    /// A Virtuous org: `processing: immediate`, a budget that never slows a test.
    pub async fn create_org(&self, org_id: &str, api_key: &str) {
        let org = json!({"id": org_id, "api_key": api_key, "hourly_limit": 1_000_000,
                         "processing": "immediate"});
        self.call(Method::POST, "/_sandbox/orgs", Some(org)).await;
    }

    /// Every contact of a Virtuous org (full form).
    pub async fn virtuous_contacts(&self, org_id: &str) -> Vec<Value> {
        let contacts = self
            .call(
                Method::GET,
                &format!("/_sandbox/orgs/{org_id}/contacts"),
                None,
            )
            .await;
        contacts.as_array().cloned().expect("contacts is an array")
    }

    /// A Virtuous org's request log, oldest first.
    pub async fn virtuous_requests(&self, org_id: &str) -> Vec<Value> {
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

    /// The transactionIds of every gift request the org received, in order (a gift sent
    /// twice appears twice).
    pub async fn transaction_ids(&self, org_id: &str) -> Vec<String> {
        self.virtuous_requests(org_id)
            .await
            .iter()
            .flat_map(|request| {
                request["transaction_ids"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .map(|id| id.as_str().unwrap().to_string())
            .collect()
    }

    /// Contact transactions Virtuous received per `referenceId` (from the request log's
    /// `reference_ids`), and how many contact writes the log holds in all.
    pub async fn contact_transactions(&self, org_id: &str) -> BTreeMap<String, u64> {
        let mut counts = BTreeMap::new();
        for entry in self.virtuous_requests(org_id).await {
            for id in entry["reference_ids"].as_array().into_iter().flatten() {
                *counts.entry(id.as_str().unwrap().to_string()).or_insert(0) += 1;
            }
        }
        counts
    }

    /// A Virtuous org's stats.
    pub async fn virtuous_stats(&self, org_id: &str) -> Value {
        self.call(Method::GET, &format!("/_sandbox/orgs/{org_id}/stats"), None)
            .await
    }
}

/// A Constant Contact account in a sandbox, as a customer's authorisation leaves it.
#[derive(Clone)]
pub struct CcAccount {
    pub sim: Sim,
    pub id: String,
    pub client_id: String,
    pub client_secret: String,
    pub refresh_token: String,
}

impl CcAccount {
    /// Creates the account (`extra` merged into the spec: `refresh_token_kind`, limits…).
    pub async fn create(sim: &Sim, id: &str, extra: Value) -> CcAccount {
        let account = CcAccount {
            sim: sim.clone(),
            id: id.to_string(),
            client_id: format!("cc-client-{id}"),
            client_secret: format!("cc-secret-{id}-0123456789abcdef"),
            refresh_token: format!("cc-refresh-{id}-original-fedcba9876543210"),
        };
        let mut spec = json!({"id": id, "client_id": account.client_id,
                              "client_secret": account.client_secret,
                              "refresh_token": account.refresh_token});
        for (key, value) in extra.as_object().expect("extra is an object") {
            spec[key] = value.clone();
        }
        sim.call(
            Method::POST,
            "/_sandbox/constant-contact/accounts",
            Some(spec),
        )
        .await;
        account
    }

    pub fn path(&self, suffix: &str) -> String {
        format!("/_sandbox/constant-contact/accounts/{}{suffix}", self.id)
    }

    pub async fn call(&self, method: Method, suffix: &str, body: Option<Value>) -> Value {
        self.sim.call(method, &self.path(suffix), body).await
    }

    /// Creates `count` numbered contacts (one `updated_at`: now); their ids in order.
    pub async fn generate(&self, count: usize) -> Vec<String> {
        let created = self
            .call(
                Method::POST,
                "/contacts",
                Some(json!({"generate": {"count": count}})),
            )
            .await;
        created["contact_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|id| id.as_str().unwrap().to_string())
            .collect()
    }

    /// Every contact (deleted included), by id.
    pub async fn contacts(&self) -> BTreeMap<String, Value> {
        let listed = self.call(Method::GET, "/contacts", None).await;
        listed["contacts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|contact| {
                (
                    contact["contact_id"].as_str().unwrap().to_string(),
                    contact.clone(),
                )
            })
            .collect()
    }

    /// A user's edit: new email and names (a new version).
    pub async fn edit(&self, contact_id: &str, tag: &str) {
        let body = json!({"email": format!("{tag}.{contact_id}@example.org"),
                          "first_name": format!("First{tag}"), "last_name": format!("Last{tag}")});
        self.call(
            Method::PATCH,
            &format!("/contacts/{contact_id}"),
            Some(body),
        )
        .await;
    }

    pub async fn unsubscribe(&self, contact_id: &str) {
        self.call(
            Method::POST,
            &format!("/contacts/{contact_id}/unsubscribe"),
            None,
        )
        .await;
    }

    pub async fn delete(&self, contact_id: &str) {
        self.call(Method::DELETE, &format!("/contacts/{contact_id}"), None)
            .await;
    }

    pub async fn settings(&self, body: Value) -> Value {
        self.call(Method::PATCH, "/settings", Some(body)).await
    }

    pub async fn stats(&self) -> Value {
        self.call(Method::GET, "/stats", None).await
    }

    /// The account's request log, oldest first.
    pub async fn requests(&self) -> Vec<Value> {
        self.call(Method::GET, "/requests", None).await["requests"]
            .as_array()
            .cloned()
            .unwrap()
    }
}

/// The `sources.constant_contact` block for `account` at `base_url` (`"embedded"` or the
/// sandbox's URL), `extra` merged in.
pub fn cc_settings(account: &CcAccount, base_url: &str, extra: Value) -> Value {
    let (api, token) = if base_url == "embedded" {
        ("embedded".to_string(), "embedded".to_string())
    } else {
        (
            format!("{base_url}/constant-contact"),
            format!("{base_url}/constant-contact/oauth2/default/v1/token"),
        )
    };
    let mut settings = json!({"base_url": api, "token_url": token,
                              "client_id": account.client_id,
                              "client_secret": account.client_secret,
                              "refresh_token": account.refresh_token});
    for (key, value) in extra.as_object().expect("extra is an object") {
        settings[key] = value.clone();
    }
    settings
}

/// Creates a Virtuous org named after the tenant and a tenant polling `account` (no
/// schedule: runs only when asked) with a budget that never slows a test.
pub async fn cc_tenant(
    app: &TestApp,
    sim: &Sim,
    virtuous_base_url: &str,
    tenant_id: &str,
    cc: Value,
) {
    let api_key = format!("poll-key-{tenant_id}");
    sim.create_org(tenant_id, &api_key).await;
    let body = json!({
        "id": tenant_id, "name": format!("Polling {tenant_id}"),
        "virtuous": {"base_url": virtuous_base_url, "api_key": api_key},
        "sources": {"constant_contact": cc},
        "budget": {"hourly_limit": 1_000_000, "reserve_pct": 10}
    });
    app.create_tenant(&body).await;
}

/// The tenant's Constant Contact poller view.
pub async fn poller(app: &TestApp, tenant: &str) -> Value {
    poller_of(app, tenant, SOURCE).await
}

/// The view of the tenant's poller of `source`.
pub async fn poller_of(app: &TestApp, tenant: &str, source: &str) -> Value {
    let (status, body) = app
        .admin_call(Method::GET, &format!("/v1/tenants/{tenant}/pollers"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    body["pollers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|poller| poller["source"] == source)
        .cloned()
        .unwrap_or_else(|| panic!("no {source} poller: {body}"))
}

/// The number of the last finished run (0 when none).
pub fn last_run_number(poller: &Value) -> u64 {
    poller["last_run"]["run"].as_u64().unwrap_or(0)
}

/// `POST …/pollers/constant_contact/run`: `true` when a run started (202), `false` when one
/// is already running (409).
pub async fn start_run(app: &TestApp, tenant: &str) -> bool {
    start_run_of(app, tenant, SOURCE).await
}

/// [`start_run`] for the poller of `source`.
pub async fn start_run_of(app: &TestApp, tenant: &str, source: &str) -> bool {
    let (status, body) = app
        .admin_call(
            Method::POST,
            &format!("/v1/tenants/{tenant}/pollers/{source}/run"),
            None,
        )
        .await;
    assert!(status == 202 || status == 409, "run → {status}: {body}");
    status == 202
}

/// Waits until a run numbered above `after` has finished and returns its report; panics
/// (with the poller) unless it completed.
pub async fn wait_run_finished(
    app: &TestApp,
    tenant: &str,
    after: u64,
    timeout: Duration,
) -> Value {
    wait_run_finished_of(app, tenant, SOURCE, after, timeout).await
}

/// [`wait_run_finished`] for the poller of `source`.
pub async fn wait_run_finished_of(
    app: &TestApp,
    tenant: &str,
    source: &str,
    after: u64,
    timeout: Duration,
) -> Value {
    let last = std::cell::RefCell::new(Value::Null);
    let report = wait_until(
        timeout,
        at_timeout(|| format!("a run after #{after} to finish: {}", last.borrow())),
        || async {
            let view = poller_of(app, tenant, source).await;
            let done = (last_run_number(&view) > after && view["run_in_progress"].is_null())
                .then(|| view["last_run"].clone());
            *last.borrow_mut() = view;
            done
        },
    )
    .await;
    assert_eq!(report["outcome"], "completed", "run report: {report}");
    report
}

/// Starts a run (or joins the one running) and waits for it to complete.
pub async fn run_to_completion(app: &TestApp, tenant: &str, timeout: Duration) -> Value {
    let after = last_run_number(&poller(app, tenant).await);
    start_run(app, tenant).await;
    wait_run_finished(app, tenant, after, timeout).await
}

/// Waits until the tenant's queue is empty (everything captured was sent).
pub async fn wait_drained(app: &TestApp, tenant: &str, timeout: Duration) {
    let last = std::cell::RefCell::new(Value::Null);
    wait_until(
        timeout,
        at_timeout(|| format!("{tenant}'s queue to drain: {}", last.borrow())),
        || async {
            let status = app.status(tenant).await;
            let done = (queued_total(&status) == 0).then_some(());
            *last.borrow_mut() = status["lanes"].clone();
            done
        },
    )
    .await;
}

/// `updated_at` of a Constant Contact contact, Unix seconds.
pub fn updated_at_s(contact: &Value) -> i64 {
    let text = contact["updated_at"].as_str().expect("updated_at");
    text.parse::<jiff::Timestamp>().unwrap().as_second()
}

/// The email status the poller maps a contact to (docs/polling.md "Mapping").
pub fn email_status(contact: &Value) -> &'static str {
    if !contact["deleted_at"].is_null() {
        return "deleted";
    }
    match contact["email_address"]["permission_to_send"].as_str() {
        Some("implicit" | "explicit") => "subscribed",
        Some("unsubscribed") => "unsubscribed",
        _ => "not_subscribed",
    }
}

/// The idempotency key of one version of a contact (docs/polling.md "Mapping").
pub fn version_key(contact_id: &str, updated_at_s: i64) -> String {
    format!("{SOURCE}:contact:{contact_id}@{updated_at_s}")
}

/// The engine's record of a polled contact (`None` when it has none).
pub async fn engine_record(app: &TestApp, tenant: &str, contact_id: &str) -> Option<Value> {
    let (status, body) = app
        .admin_call(
            Method::GET,
            &format!("/v1/tenants/{tenant}/records/contact/{SOURCE}/{contact_id}"),
            None,
        )
        .await;
    match status {
        200 => Some(body),
        404 => None,
        other => panic!("record {contact_id} → {other}: {body}"),
    }
}

/// Virtuous contacts by the Constant Contact contact id of their reference; panics when a
/// reference appears on two contacts.
pub fn virtuous_by_reference(contacts: &[Value]) -> BTreeMap<String, Value> {
    let mut by_reference = BTreeMap::new();
    for contact in contacts {
        for reference in contact["contactReferences"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if reference["source"] == REFERENCE_SOURCE {
                let id = reference["id"].as_str().unwrap().to_string();
                let earlier = by_reference.insert(id.clone(), contact.clone());
                assert!(earlier.is_none(), "two Virtuous contacts for {id}");
            }
        }
    }
    by_reference
}

/// The emails of a Virtuous contact (lower case).
pub fn virtuous_emails(contact: &Value) -> Vec<String> {
    contact["contactIndividuals"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|individual| {
            individual["contactMethods"]
                .as_array()
                .into_iter()
                .flatten()
        })
        .filter_map(|method| method["value"].as_str())
        .map(str::to_ascii_lowercase)
        .collect()
}

/// A custom field of a Virtuous contact.
pub fn virtuous_custom_field(contact: &Value, name: &str) -> Option<String> {
    contact["customFields"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|field| field["name"] == name)
        .and_then(|field| field["value"].as_str().map(str::to_string))
}
