//! Helpers of the two-way tests (`two_way_*`): an engine whose Virtuous webhook reaches it, a
//! partner platform in the sandbox whose webhooks reach the engine, a tenant pairing them,
//! edits on both sides (partner user edits, Virtuous staff edits), and readings of both sides
//! and of the pair.
//!
//! Sizes: CI by default; `STEWARD_FULL_TWO_WAY_TESTS=1` runs the full sizes.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{tenant_body, wait_until, TestApp};

use crate::external_sandbox::sandbox_json;
pub use crate::pull_support::spawn_engine;

/// The platform (and its pair `platform:crm`) in these tests.
pub const PLATFORM: &str = "crm";
pub const PAIR: &str = "platform:crm";
/// The platform's `transaction_source`: the reference source of its contacts in Virtuous.
pub const REFERENCE_SOURCE: &str = "PartnerCRM";
pub const PARTNER_SECRET: &str = "partner-webhook-secret-two-way";
pub const PARTNER_TOKEN: &str = "partner-api-token-two-way";

/// `STEWARD_FULL_TWO_WAY_TESTS=1`: the full sizes instead of the CI ones.
pub fn sized(ci: usize, full: usize) -> usize {
    if std::env::var("STEWARD_FULL_TWO_WAY_TESTS").is_ok_and(|value| value == "1") {
        full
    } else {
        ci
    }
}

/// The tenant document: a platform `crm` whose contact webhooks map to contacts, paired
/// two-way with Virtuous (`mode`, `fields`), against the embedded sandbox.
pub fn two_way_tenant(id: &str, partner_url: &str, mode: &str, fields: Value) -> Value {
    let mut body = tenant_body(id);
    body["budget"] = json!({"hourly_limit": 360_000, "reserve_pct": 10});
    let mapping = json!({"kind": "contact", "fields": {
        "referenceId": "/data/id", "email": "/data/email", "firstName": "/data/first_name",
        "lastName": "/data/last_name", "tags": "/data/tags"}});
    body["sources"]["platforms"][PLATFORM] = json!({
        "secret": PARTNER_SECRET, "signature_header": "X-Signature", "encoding": "hex",
        "event_id": "/id", "event_type": "/type", "transaction_source": REFERENCE_SOURCE,
        "events": {"contact.created": mapping.clone(), "contact.updated": mapping}});
    body["two_way"] = json!({PAIR: {"mode": mode, "echo_window_s": 120, "fields": fields,
        "api": {"url": partner_url, "auth_header": "Authorization",
                "auth_value": format!("Bearer {PARTNER_TOKEN}")}}});
    body
}

/// The sandbox a test's Virtuous org and partner live in: the engine's embedded one, or an
/// `ExternalSandbox` process that outlives a kill -9 of the engine.
#[derive(Clone)]
pub struct Sandbox {
    pub url: String,
    pub client: reqwest::Client,
}

impl Sandbox {
    pub fn embedded(app: &TestApp) -> Sandbox {
        Sandbox {
            url: app.sandbox_url(),
            client: app.client.clone(),
        }
    }

    pub fn external(external: &crate::external_sandbox::ExternalSandbox) -> Sandbox {
        Sandbox {
            url: external.url.clone(),
            client: external.client.clone(),
        }
    }

    /// Every contact of the tenant's Virtuous org (full form).
    pub async fn contacts(&self, tenant: &str) -> Vec<Value> {
        let contacts = self
            .call(
                Method::GET,
                &format!("/_sandbox/orgs/{tenant}/contacts"),
                None,
            )
            .await;
        contacts.as_array().cloned().expect("a list of contacts")
    }

    /// A control or API call that must answer 2xx; its JSON.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        sandbox_json(&self.client, &self.url, method, path, body).await
    }
}

/// Creates the tenant's Virtuous org first (imports at once, an allowance that never slows
/// a test: the embedded org a tenant gets by default allows 5,000 calls an hour), then the
/// tenant (its `virtuous.base_url` "embedded" finds the org by id and key).
pub async fn create_tenant(app: &TestApp, sandbox: &Sandbox, body: &Value) -> Value {
    let id = body["id"].as_str().unwrap();
    let mut body = body.clone();
    if sandbox.url != app.sandbox_url() {
        body["virtuous"]["base_url"] = json!(sandbox.url);
    }
    sandbox
        .call(
            Method::POST,
            "/_sandbox/orgs",
            Some(
                json!({"id": id, "api_key": body["virtuous"]["api_key"], "hourly_limit": 1_000_000,
                     "processing": "immediate"}),
            ),
        )
        .await;
    app.create_tenant(&body).await
}

/// The partner platform of a test, in the engine's embedded sandbox.
pub struct Partner {
    pub sandbox: Sandbox,
    pub id: String,
}

impl Partner {
    /// Creates the partner; its webhooks go to the tenant's platform route.
    pub async fn create(
        app: &TestApp,
        sandbox: &Sandbox,
        id: &str,
        tenant_id: &str,
        normalize_emails: bool,
    ) -> Partner {
        let partner = Partner {
            sandbox: sandbox.clone(),
            id: id.to_string(),
        };
        let webhook_url = format!("{}/hooks/{tenant_id}/platform/{PLATFORM}", app.main_url);
        partner
            .control(
                Method::POST,
                "/_sandbox/partners",
                Some(json!({"id": id, "api_token": PARTNER_TOKEN, "webhook_url": webhook_url,
                             "webhook_secret": PARTNER_SECRET, "normalize_emails": normalize_emails})),
            )
            .await;
        partner
    }

    /// The contacts API base the tenant's pair writes to.
    pub fn api_url(&self) -> String {
        format!("{}/partners/{}", self.sandbox.url, self.id)
    }

    pub async fn control(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        self.sandbox.call(method, path, body).await
    }

    /// People created by their users (webhooks fire: the engine hears of each).
    pub async fn add(&self, contacts: Vec<Value>) {
        for chunk in contacts.chunks(200) {
            self.control(
                Method::POST,
                &format!("/_sandbox/partners/{}/contacts", self.id),
                Some(json!({"contacts": chunk})),
            )
            .await;
        }
    }

    /// A user's edit of one contact.
    pub async fn edit(&self, contact_id: &str, changes: Value) {
        self.control(
            Method::PATCH,
            &format!("/_sandbox/partners/{}/contacts/{contact_id}", self.id),
            Some(changes),
        )
        .await;
    }

    /// Every contact, by id.
    pub async fn contacts(&self) -> BTreeMap<String, Value> {
        let list = self
            .control(
                Method::GET,
                &format!("/_sandbox/partners/{}/contacts", self.id),
                None,
            )
            .await;
        let items = list
            .get("contacts")
            .or(list.get("items"))
            .cloned()
            .unwrap_or(list);
        items
            .as_array()
            .expect("a list of contacts")
            .iter()
            .map(|contact| (contact["id"].as_str().unwrap().to_string(), contact.clone()))
            .collect()
    }

    pub async fn stats(&self) -> Value {
        self.control(
            Method::GET,
            &format!("/_sandbox/partners/{}/stats", self.id),
            None,
        )
        .await
    }

    /// Writes made through the partner's API (Steward's).
    pub async fn api_writes(&self) -> u64 {
        let stats = self.stats().await;
        stats["counters"]["api_writes"]
            .as_u64()
            .unwrap_or_else(|| panic!("no counters.api_writes in {stats}"))
    }
}

/// A call to the sandbox (the tenant's Virtuous org, its control API).
pub async fn org(sandbox: &Sandbox, method: Method, path: &str, body: Option<Value>) -> Value {
    sandbox.call(method, path, body).await
}

/// Runs the org's import (contact transactions become contacts; webhooks fire).
pub async fn process(sandbox: &Sandbox, tenant: &str) -> Value {
    org(
        sandbox,
        Method::POST,
        &format!("/_sandbox/orgs/{tenant}/process"),
        None,
    )
    .await
}

/// Every Virtuous contact of the org, by the partner id its reference names.
pub async fn virtuous_by_partner(sandbox: &Sandbox, tenant: &str) -> BTreeMap<String, Value> {
    let mut by_partner = BTreeMap::new();
    for contact in &sandbox.contacts(tenant).await {
        for reference in contact["contactReferences"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if reference["source"] == REFERENCE_SOURCE {
                let id = match &reference["id"] {
                    Value::String(id) => id.clone(),
                    other => other.to_string(),
                };
                by_partner.insert(id, contact.clone());
            }
        }
    }
    by_partner
}

/// The primary individual of a Virtuous contact.
pub fn individual(contact: &Value) -> &Value {
    let individuals = contact["contactIndividuals"]
        .as_array()
        .expect("individuals");
    individuals
        .iter()
        .find(|individual| individual["isPrimary"] == true)
        .unwrap_or(&individuals[0])
}

/// A Virtuous contact's field as two-way sync sees it (`first_name`, `last_name`, `email`).
pub fn virtuous_field(contact: &Value, field: &str) -> Value {
    let individual = individual(contact);
    match field {
        "first_name" => individual["firstName"].clone(),
        "last_name" => individual["lastName"].clone(),
        "email" => individual["contactMethods"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|method| {
                method["type"]
                    .as_str()
                    .is_some_and(|kind| kind.contains("Email"))
            })
            .map(|method| method["value"].clone())
            .unwrap_or(Value::Null),
        other => panic!("no such field {other}"),
    }
}

/// A staff member changes fields of Virtuous contacts in the UI (one webhook each):
/// `(contact id, field, value)` with field `first_name`, `last_name` or `email`.
pub async fn staff_edit(sandbox: &Sandbox, tenant: &str, edits: &[(u64, &str, &str)]) {
    let mut by_id: BTreeMap<u64, Value> = sandbox
        .contacts(tenant)
        .await
        .iter()
        .map(|contact| (contact["id"].as_u64().unwrap(), contact.clone()))
        .collect();
    let mut list = Vec::new();
    for (id, field, value) in edits {
        let contact = by_id
            .get_mut(id)
            .unwrap_or_else(|| panic!("no contact {id}"));
        let individuals = contact["contactIndividuals"].as_array_mut().unwrap();
        let index = individuals
            .iter()
            .position(|individual| individual["isPrimary"] == true)
            .unwrap_or(0);
        let individual = &mut individuals[index];
        match *field {
            "first_name" => individual["firstName"] = json!(value),
            "last_name" => individual["lastName"] = json!(value),
            "email" => {
                let methods = individual["contactMethods"].as_array_mut().unwrap();
                let method = methods
                    .iter_mut()
                    .find(|method| {
                        method["type"]
                            .as_str()
                            .is_some_and(|kind| kind.contains("Email"))
                    })
                    .expect("an email method");
                method["value"] = json!(value);
            }
            other => panic!("staff edits of {other} are not scripted"),
        }
        list.push(json!({"kind": "contact", "id": id,
                         "changes": {"contactIndividuals": contact["contactIndividuals"].clone()}}));
    }
    crate::pull_support::staff_edits(&sandbox.client, &sandbox.url, tenant, &list).await;
}

/// Seeds `count` partner contacts (`p0`…), lets one-way push create them in Virtuous, and
/// waits until the pair has linked each: partner id → Virtuous id.
pub async fn seed_linked(
    app: &TestApp,
    sandbox: &Sandbox,
    tenant: &str,
    partner: &Partner,
    count: usize,
) -> BTreeMap<String, u64> {
    // Virtuous does not retry a webhook: the subscription must exist before the imports
    // fire their ContactCreate (else the links wait for the hourly backstop poll).
    crate::pull_support::wait_for_subscription(
        &sandbox.client,
        &sandbox.url,
        tenant,
        &["contactCreate", "contactUpdate"],
    )
    .await;
    let contacts: Vec<Value> = (0..count)
        .map(|n| {
            json!({"id": format!("p{n}"), "email": format!("person{n}@example.org"),
                   "first_name": format!("First{n}"), "last_name": format!("Last{n}"),
                   "tags": [], "subscribed": true})
        })
        .collect();
    partner.add(contacts).await;
    let linked = wait_until(
        Duration::from_secs(120),
        format!("{count} partner contacts in Virtuous"),
        || async {
            process(sandbox, tenant).await;
            let by_partner = virtuous_by_partner(sandbox, tenant).await;
            (by_partner.len() >= count).then(|| {
                by_partner
                    .iter()
                    .map(|(partner_id, contact)| {
                        (partner_id.clone(), contact["id"].as_u64().unwrap())
                    })
                    .collect::<BTreeMap<String, u64>>()
            })
        },
    )
    .await;
    wait_until(
        Duration::from_secs(120),
        format!("{count} links with their Virtuous ids"),
        || async {
            let mut missing = 0;
            for partner_id in linked.keys() {
                let known = link(app, tenant, partner_id).await;
                if known
                    .as_ref()
                    .and_then(|link| link["virtuous_id"].as_str())
                    .is_none()
                {
                    missing += 1;
                }
            }
            (missing == 0).then_some(())
        },
    )
    .await;
    linked
}

/// The pair `platform:crm` as the admin API shows it.
pub async fn pair_view(app: &TestApp, tenant: &str) -> Value {
    pair_view_of(app, tenant, PAIR).await
}

/// A pair as the admin API shows it.
pub async fn pair_view_of(app: &TestApp, tenant: &str, pair: &str) -> Value {
    let view = app
        .admin_json(Method::GET, &format!("/v1/tenants/{tenant}/two-way"))
        .await;
    view["pairs"]
        .as_array()
        .and_then(|pairs| pairs.iter().find(|view| view["pair"] == pair).cloned())
        .unwrap_or_else(|| panic!("no pair {pair} in {view}"))
}

/// A record's link (`None` until the pair knows it).
pub async fn link(app: &TestApp, tenant: &str, partner_id: &str) -> Option<Value> {
    let (status, body) = app
        .admin_call(
            Method::GET,
            &format!("/v1/tenants/{tenant}/two-way/{PAIR}/records/{partner_id}"),
            None,
        )
        .await;
    (status == 200).then(|| body.get("link").cloned().unwrap_or(body))
}

/// Open conflicts.
pub async fn conflicts(app: &TestApp, tenant: &str) -> Vec<Value> {
    let body = app
        .admin_json(
            Method::GET,
            &format!("/v1/tenants/{tenant}/conflicts?limit=1000"),
        )
        .await;
    body["conflicts"].as_array().cloned().unwrap_or_default()
}

/// A counter of the pair.
pub fn count(view: &Value, name: &str) -> u64 {
    view["counts"][name].as_u64().unwrap_or(0)
}

/// Echoes the pair dropped by `layer` (`origin`, `ledger`, `window`, `ownership`): the pair's
/// own counter (the metric `steward_echoes_dropped_total{layer}` is process-wide).
pub async fn echoes_dropped(app: &TestApp, tenant: &str, pair: &str, layer: &str) -> u64 {
    count(
        &pair_view_of(app, tenant, pair).await,
        &format!("dropped_{layer}"),
    )
}

/// `PUT /api/Contact/{id}` calls the org received.
pub async fn virtuous_puts(sandbox: &Sandbox, tenant: &str) -> u64 {
    let log = org(
        sandbox,
        Method::GET,
        &format!("/_sandbox/orgs/{tenant}/requests"),
        None,
    )
    .await;
    let entries = log
        .get("requests")
        .cloned()
        .unwrap_or(log)
        .as_array()
        .cloned()
        .unwrap_or_default();
    entries
        .iter()
        .filter(|entry| {
            entry["method"] == "PUT"
                && entry["path"]
                    .as_str()
                    .is_some_and(|path| path.starts_with("/api/Contact/"))
        })
        .count() as u64
}

/// Waits until the pair is quiet: nothing pending, nothing queued, the change log read to
/// its end, and the same counters for two looks a second apart.
pub async fn wait_quiet(app: &TestApp, tenant: &str, timeout: Duration) -> Value {
    wait_quiet_of(app, tenant, PAIR, timeout).await
}

/// [`wait_quiet`] for a named pair.
pub async fn wait_quiet_of(app: &TestApp, tenant: &str, pair: &str, timeout: Duration) -> Value {
    let deadline = std::time::Instant::now() + timeout;
    let mut last: Option<Value> = None;
    loop {
        let view = pair_view_of(app, tenant, pair).await;
        let status = app.status(tenant).await;
        let quiet = view["pending"] == 0 && crate::common::queued_total(&status) == 0;
        if quiet && last.as_ref() == Some(&view["counts"]) {
            return view;
        }
        last = Some(view["counts"].clone());
        assert!(
            std::time::Instant::now() < deadline,
            "the pair of {tenant} did not go quiet: {view}"
        );
        tokio::time::sleep(Duration::from_millis(1_500)).await;
    }
}
