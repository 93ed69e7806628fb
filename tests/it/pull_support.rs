//! Helpers of the pull end-to-end tests (`pull_*`): an engine whose Virtuous webhook reaches
//! it, records made in the sandbox by "another tool" and by staff edits, what each record's
//! latest version is there, and what each destination holds (a partner receiver that checks
//! the Standard Webhooks signature, NDJSON files in name order, Postgres rows).
//!
//! Sizes: CI by default; `STEWARD_FULL_PULL_TESTS=1` runs the full sizes.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::common::{at_timeout, tenant_body, wait_until, SpawnOptions, TestApp};
use crate::external_sandbox::sandbox_json;

/// The partner's webhook secret in these tests.
pub const PARTNER_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// The transaction source of "another tool" (not one of the tenant's own sources).
pub const OTHER_TOOL: &str = "OtherTool";

/// `STEWARD_FULL_PULL_TESTS=1`: the full sizes instead of the CI ones.
pub fn full_size() -> bool {
    std::env::var("STEWARD_FULL_PULL_TESTS").is_ok_and(|value| value == "1")
}

/// `ci` or, under `STEWARD_FULL_PULL_TESTS=1`, `full`.
pub fn sized(ci: usize, full: usize) -> usize {
    if full_size() {
        full
    } else {
        ci
    }
}

/// A free loopback port (bound, then released): the engine's listener must be known before
/// it starts, for `public_url`.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Destination (and submitter) retries: fast, and long enough in attempts (about 35 s in
/// all) that an outage of a few seconds never exhausts the schedule into dead letters.
pub fn fast_retry_schedule() -> String {
    let mut steps = vec!["100ms", "200ms", "400ms"];
    steps.extend(std::iter::repeat("1s").take(35));
    serde_json::to_string(&steps).unwrap()
}

/// Engine options: `public_url` on the engine's own (fixed) listener, so the tenant
/// registers its Virtuous webhook and the sandbox's deliveries reach it (also after a
/// restart on the same port); children tick twice a second; fast retries.
pub fn engine_options(extra: &[(&str, &str)]) -> SpawnOptions {
    let port = free_port();
    let mut env = vec![
        ("STEWARD_LISTEN".to_string(), format!("127.0.0.1:{port}")),
        (
            "STEWARD_PUBLIC_URL".to_string(),
            format!("http://127.0.0.1:{port}"),
        ),
        (
            "STEWARD_RUNTIME__HEARTBEAT_MS".to_string(),
            "1500".to_string(),
        ),
        (
            "STEWARD_SUBMITTER__RETRY_SCHEDULE".to_string(),
            fast_retry_schedule(),
        ),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    SpawnOptions {
        env,
        ..SpawnOptions::default()
    }
}

pub async fn spawn_engine(extra: &[(&str, &str)]) -> TestApp {
    TestApp::spawn(engine_options(extra)).await
}

/// `common::tenant_body` (Stripe source `Stripe`, platform source `AuctionCo`) with a roomy
/// budget and `pull`.
pub fn pull_tenant(id: &str, pull: Value) -> Value {
    let mut body = tenant_body(id);
    body["budget"] = json!({"hourly_limit": 36_000, "reserve_pct": 10});
    body["pull"] = pull;
    body
}

/// The NDJSON destination document for `dir`.
pub fn ndjson_destination(dir: &Path, rotate_bytes: u64) -> Value {
    json!({"kind": "ndjson", "dir": dir.to_str().unwrap(), "rotate_bytes": rotate_bytes, "rotate_s": 1})
}

/// A call to the tenant's sandbox org (the embedded sandbox of `app`).
pub async fn sandbox(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> Value {
    sandbox_json(&app.client, &app.sandbox_url(), method, path, body).await
}

/// Waits until the org has an active webhook subscription with every flag of `flags` on.
pub async fn wait_for_subscription(
    client: &reqwest::Client,
    sandbox_url: &str,
    org: &str,
    flags: &[&str],
) {
    wait_until(
        Duration::from_secs(30),
        format!("an active subscription of {org} with {flags:?}"),
        || async {
            let list = sandbox_json(
                client,
                sandbox_url,
                Method::GET,
                &format!("/_sandbox/orgs/{org}/webhooks"),
                None,
            )
            .await;
            list.as_array()?
                .iter()
                .any(|subscription| {
                    subscription["active"] == true
                        && flags
                            .iter()
                            .all(|flag| subscription["flags"][*flag] == true)
                })
                .then_some(())
        },
    )
    .await;
}

/// "Another tool" sends `count` gift transactions (`transactionSource` = `source`, each for
/// a new contact) straight to the org's API, then the import step runs: GiftCreate and
/// ContactCreate webhooks fire.
pub async fn import_gifts(
    client: &reqwest::Client,
    sandbox_url: &str,
    org: &str,
    api_key: &str,
    source: &str,
    prefix: &str,
    count: usize,
) {
    let transactions: Vec<Value> = (0..count)
        .map(|n| {
            json!({"transactionSource": source, "transactionId": format!("{prefix}{n}"),
                   "amount": format!("{}.00", 10 + n % 90), "giftDate": "2026-01-15", "giftType": "Other",
                   "contact": {"firstName": "Donor", "lastName": format!("{prefix}{n}"),
                               "email": format!("{prefix}{n}@example.org")}})
        })
        .collect();
    for chunk in transactions.chunks(100) {
        let response = client
            .post(format!("{sandbox_url}/api/v2/Gift/Transactions"))
            .bearer_auth(api_key)
            .json(&json!({"transactions": chunk}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }
    let report = sandbox_json(
        client,
        sandbox_url,
        Method::POST,
        &format!("/_sandbox/orgs/{org}/process"),
        None,
    )
    .await;
    assert_eq!(report["imported"], count, "{report}");
}

/// A record of a destination: (kind, Virtuous id).
pub type Key = (String, String);
/// What a record is at: (version_ms, deleted).
pub type State = (u64, bool);

/// `modifiedDateTimeUtc` as Unix ms.
pub fn version_ms(record: &Value) -> u64 {
    let text = record["modifiedDateTimeUtc"]
        .as_str()
        .unwrap_or_else(|| panic!("no modifiedDateTimeUtc: {record}"));
    let timestamp: jiff::Timestamp = text
        .parse()
        .unwrap_or_else(|error| panic!("bad modifiedDateTimeUtc {text:?}: {error}"));
    timestamp.as_millisecond() as u64
}

fn id_of(record: &Value) -> String {
    match &record["id"] {
        Value::String(id) => id.clone(),
        other => other.to_string(),
    }
}

/// Every record's latest version as the sandbox has it: the gifts and contacts it lists
/// now, plus the records deleted (`deleted`, at the version they were deleted with).
pub async fn sandbox_latest(
    client: &reqwest::Client,
    sandbox_url: &str,
    org: &str,
    deleted: &BTreeMap<Key, u64>,
) -> BTreeMap<Key, State> {
    let mut latest: BTreeMap<Key, State> = deleted
        .iter()
        .map(|(key, version)| (key.clone(), (*version, true)))
        .collect();
    for (kind, route) in [("gift", "gifts"), ("contact", "contacts")] {
        let records = sandbox_json(
            client,
            sandbox_url,
            Method::GET,
            &format!("/_sandbox/orgs/{org}/{route}"),
            None,
        )
        .await;
        for record in records.as_array().unwrap() {
            let key = (kind.to_string(), id_of(record));
            assert!(!deleted.contains_key(&key), "{key:?} deleted yet listed");
            latest.insert(key, (version_ms(record), false));
        }
    }
    latest
}

/// The ids of the org's gifts and contacts now.
pub async fn sandbox_ids(
    client: &reqwest::Client,
    sandbox_url: &str,
    org: &str,
) -> (Vec<u64>, Vec<u64>) {
    let mut ids = Vec::new();
    for route in ["gifts", "contacts"] {
        let records = sandbox_json(
            client,
            sandbox_url,
            Method::GET,
            &format!("/_sandbox/orgs/{org}/{route}"),
            None,
        )
        .await;
        ids.push(
            records
                .as_array()
                .unwrap()
                .iter()
                .map(|record| record["id"].as_u64().unwrap())
                .collect::<Vec<_>>(),
        );
    }
    let contacts = ids.pop().unwrap();
    (ids.pop().unwrap(), contacts)
}

/// Staff edits of gifts and contacts drawn from a seeded generator: updates (amounts,
/// names) and some deletes, never touching a record deleted before.
pub struct EditPlan {
    rng: StdRng,
    gifts: Vec<u64>,
    contacts: Vec<u64>,
    made: u64,
    /// Deletes stop when this few records of a kind are left.
    keep: usize,
    /// Deleted records and the version they were deleted at.
    pub deleted: BTreeMap<Key, u64>,
}

impl EditPlan {
    pub fn new(seed: u64, gifts: Vec<u64>, contacts: Vec<u64>) -> EditPlan {
        EditPlan {
            rng: StdRng::seed_from_u64(seed),
            keep: (gifts.len().min(contacts.len()) / 2).max(2),
            gifts,
            contacts,
            made: 0,
            deleted: BTreeMap::new(),
        }
    }

    /// The next `n` edits (about 6 % gift deletes, 4 % contact deletes, the rest updates;
    /// deletes stop once half the records of a kind are gone).
    pub fn next_edits(&mut self, n: usize) -> Vec<Value> {
        (0..n).map(|_| self.next_edit()).collect()
    }

    fn next_edit(&mut self) -> Value {
        self.made += 1;
        let made = self.made;
        let roll = self.rng.gen_range(0..100);
        if roll < 6 && self.gifts.len() > self.keep {
            let id = self
                .gifts
                .swap_remove(self.rng.gen_range(0..self.gifts.len()));
            return json!({"kind": "gift", "id": id, "delete": true});
        }
        if roll < 10 && self.contacts.len() > self.keep {
            let id = self
                .contacts
                .swap_remove(self.rng.gen_range(0..self.contacts.len()));
            return json!({"kind": "contact", "id": id, "delete": true});
        }
        if roll < 55 {
            let id = self.gifts[self.rng.gen_range(0..self.gifts.len())];
            let cents: u32 = self.rng.gen_range(100..100_000);
            return json!({"kind": "gift", "id": id,
                          "changes": {"amount": f64::from(cents) / 100.0, "notes": format!("edit {made}")}});
        }
        let id = self.contacts[self.rng.gen_range(0..self.contacts.len())];
        json!({"kind": "contact", "id": id, "changes": {"name": format!("Donor {id} edit {made}")}})
    }

    /// Notes what the answers of `edits` say about deletes.
    pub fn applied(&mut self, edits: &[Value], records: &[Value]) {
        for (edit, record) in edits.iter().zip(records) {
            if edit["delete"] == true {
                let key = (edit["kind"].as_str().unwrap().to_string(), id_of(record));
                self.deleted.insert(key, version_ms(record));
            }
        }
    }
}

/// Applies `edits` through the bulk staff-edit route; the records answered, in order.
pub async fn staff_edits(
    client: &reqwest::Client,
    sandbox_url: &str,
    org: &str,
    edits: &[Value],
) -> Vec<Value> {
    let answer = sandbox_json(
        client,
        sandbox_url,
        Method::POST,
        &format!("/_sandbox/orgs/{org}/staff-edits"),
        Some(json!({"edits": edits})),
    )
    .await;
    let records = answer["records"].as_array().unwrap().clone();
    assert_eq!(records.len(), edits.len(), "{answer}");
    records
}

/// What a destination showed, in arrival (or file) order: per record, the state of its last
/// item, the newest state (delete wins a tie), and every time a version went back.
#[derive(Debug, Default)]
pub struct Seen {
    pub items: usize,
    pub last: BTreeMap<Key, State>,
    pub newest: BTreeMap<Key, State>,
    pub regressions: Vec<String>,
    /// Items showing a (record, state) shown before: at-least-once repeats.
    pub repeats: usize,
}

impl Seen {
    pub fn of(items: impl IntoIterator<Item = (Key, State)>) -> Seen {
        let mut seen = Seen::default();
        let mut shown = std::collections::BTreeSet::new();
        for (key, state) in items {
            seen.items += 1;
            if !shown.insert((key.clone(), state)) {
                seen.repeats += 1;
            }
            if let Some(previous) = seen.newest.get(&key) {
                // Older than what was shown already, or an upsert after its delete.
                if state < *previous {
                    seen.regressions.push(format!(
                        "{key:?}: {state:?} after {previous:?} (item {})",
                        seen.items
                    ));
                }
            }
            let newest = seen.newest.entry(key.clone()).or_insert(state);
            if state > *newest {
                *newest = state;
            }
            seen.last.insert(key, state);
        }
        seen
    }
}

/// (key, state) of a change as destinations show it (`{op, kind, id, version_ms}`).
pub fn change_item(change: &Value) -> (Key, State) {
    (
        (
            change["kind"].as_str().unwrap().to_string(),
            change["id"].as_str().unwrap().to_string(),
        ),
        (
            change["version_ms"].as_u64().unwrap(),
            change["op"] == "delete",
        ),
    )
}

/// Every line of the finished NDJSON files in `dir`, in file-name order (never the hidden
/// partial file).
pub fn ndjson_lines(dir: &Path) -> Vec<Value> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
                .filter(|name| name.ends_with(".ndjson") && !name.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let mut lines = Vec::new();
    for name in names {
        let text = std::fs::read_to_string(dir.join(&name)).unwrap();
        for line in text.lines() {
            lines.push(
                serde_json::from_str(line)
                    .unwrap_or_else(|error| panic!("{name}: bad line {line:?}: {error}")),
            );
        }
    }
    lines
}

pub fn ndjson_seen(dir: &Path) -> Seen {
    Seen::of(ndjson_lines(dir).iter().map(change_item))
}

/// The rows of a Postgres destination's `gifts` and `contacts` (empty before they exist).
pub async fn pg_state(client: &tokio_postgres::Client, schema: &str) -> BTreeMap<Key, State> {
    let mut state = BTreeMap::new();
    for (kind, table) in [("gift", "gifts"), ("contact", "contacts")] {
        let query =
            format!("SELECT id, version_ms, deleted_at IS NOT NULL FROM \"{schema}\".\"{table}\"");
        let Ok(rows) = client.query(&query, &[]).await else {
            continue;
        };
        for row in rows {
            let id: String = row.get(0);
            let version: i64 = row.get(1);
            let deleted: bool = row.get(2);
            state.insert((kind.to_string(), id), (version as u64, deleted));
        }
    }
    state
}

/// What differs between `expected` and `got` (missing, other state, extra), at most 10.
pub fn differences(expected: &BTreeMap<Key, State>, got: &BTreeMap<Key, State>) -> Vec<String> {
    let mut out = Vec::new();
    for (key, want) in expected {
        match got.get(key) {
            None => out.push(format!("{key:?} missing (want {want:?})")),
            Some(have) if have != want => out.push(format!("{key:?} is {have:?}, want {want:?}")),
            Some(_) => {}
        }
    }
    for key in got.keys().filter(|key| !expected.contains_key(*key)) {
        out.push(format!("{key:?} unexpected"));
    }
    let total = out.len();
    out.truncate(10);
    if total > 10 {
        out.push(format!("… {} more", total - 10));
    }
    out
}

/// Waits until `observe` shows exactly `expected`; at a timeout the message names the
/// differences last seen.
pub async fn wait_for_state<F, Fut>(
    timeout: Duration,
    what: &str,
    expected: &BTreeMap<Key, State>,
    mut observe: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = BTreeMap<Key, State>>,
{
    let last = Arc::new(Mutex::new(Vec::<String>::new()));
    let shown = Arc::clone(&last);
    wait_until(
        timeout,
        at_timeout(move || format!("{what}: {:?}", shown.lock().unwrap())),
        || {
            let observed = observe();
            let last = Arc::clone(&last);
            async move {
                let diff = differences(expected, &observed.await);
                let done = diff.is_empty();
                *last.lock().unwrap() = diff;
                done.then_some(())
            }
        },
    )
    .await;
}

/// `GET /v1/tenants/{id}/destinations`.
pub async fn destinations(app: &TestApp, id: &str) -> Value {
    let (status, body) = app
        .admin_call(Method::GET, &format!("/v1/tenants/{id}/destinations"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// One destination of a `destinations` answer.
pub fn destination(list: &Value, name: &str) -> Value {
    list["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|destination| destination["name"] == name)
        .unwrap_or_else(|| panic!("no destination {name}: {list}"))
        .clone()
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// `POST /v1/tenants/{id}/pull/poll`, then waits for a completed backstop pass that started
/// after the request (asking again after a pass the budget cut short); its report.
pub async fn backstop_now(app: &TestApp, id: &str) -> Value {
    let asked_ms = now_ms();
    let (status, body) = app
        .admin_call(Method::POST, &format!("/v1/tenants/{id}/pull/poll"), None)
        .await;
    assert_eq!(status, 202, "{body}");
    let asked = Arc::new(AtomicU64::new(asked_ms));
    let last = Arc::new(Mutex::new(Value::Null));
    let shown = Arc::clone(&last);
    let what =
        at_timeout(move || format!("a completed backstop pass; pull: {}", shown.lock().unwrap()));
    wait_until(Duration::from_secs(60), what, || {
        let asked = Arc::clone(&asked);
        let last = Arc::clone(&last);
        async move {
            let pull = destinations(app, id).await["pull"].clone();
            *last.lock().unwrap() = pull.clone();
            let report = pull["last_backstop"].clone();
            let started = report["started_at_ms"].as_u64().unwrap_or(0);
            if started < asked.load(Ordering::Relaxed) || pull["backstop_running"] == true {
                return None;
            }
            if report["outcome"] == "completed" {
                return Some(report);
            }
            asked.store(now_ms(), Ordering::Relaxed);
            app.admin_call(Method::POST, &format!("/v1/tenants/{id}/pull/poll"), None)
                .await;
            None
        }
    })
    .await
}

/// The partner's receiver: verifies each request the Standard Webhooks way and records the
/// accepted changes in arrival order; answers 500 while `failing`.
#[derive(Default)]
pub struct Partner {
    pub accepted: Mutex<Vec<Value>>,
    pub bad_signatures: AtomicU64,
    pub refused_while_failing: AtomicU64,
    pub failing: AtomicBool,
}

impl Partner {
    pub fn seen(&self) -> Seen {
        Seen::of(self.accepted.lock().unwrap().iter().map(change_item))
    }
}

/// How a partner verifies a Standard Webhooks signature (the documented recipe, written here
/// independently of Steward's signer): HMAC-SHA256 keyed by the base64 after `whsec_`, over
/// `{id}.{timestamp}.{body}`, base64, one of the space-separated `v1,` candidates.
pub fn standard_signature_matches(
    secret: &str,
    id: &str,
    timestamp: &str,
    signature: &str,
    body: &[u8],
) -> bool {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    signature
        .split(' ')
        .any(|candidate| candidate.strip_prefix("v1,") == Some(expected.as_str()))
}

/// A fresh timestamp (within 5 minutes) and a matching signature.
fn signature_is_valid(id: &str, timestamp: &str, signature: &str, body: &[u8]) -> bool {
    let fresh = timestamp
        .parse::<u64>()
        .is_ok_and(|at| at.abs_diff(now_ms() / 1_000) <= 300);
    fresh && standard_signature_matches(PARTNER_SECRET, id, timestamp, signature, body)
}

/// A request header as text (empty when missing or not text).
pub fn header_text(request: &HttpRequest, name: &str) -> String {
    request
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

async fn receive(
    request: HttpRequest,
    body: web::Bytes,
    partner: web::Data<Partner>,
) -> HttpResponse {
    let header = |name: &str| header_text(&request, name);
    if partner.failing.load(Ordering::SeqCst) {
        partner.refused_while_failing.fetch_add(1, Ordering::SeqCst);
        return HttpResponse::InternalServerError().body("partner down");
    }
    let id = header("webhook-id");
    if !signature_is_valid(
        &id,
        &header("webhook-timestamp"),
        &header("webhook-signature"),
        &body,
    ) {
        partner.bad_signatures.fetch_add(1, Ordering::SeqCst);
        return HttpResponse::Unauthorized().body("bad signature");
    }
    let Ok(change) = serde_json::from_slice::<Value>(&body) else {
        return HttpResponse::BadRequest().body("not JSON");
    };
    let data = change["data"].clone();
    assert_eq!(
        change["type"],
        format!(
            "{}.{}",
            data["kind"].as_str().unwrap_or(""),
            data["op"].as_str().unwrap_or("")
        ),
        "{change}"
    );
    partner.accepted.lock().unwrap().push(data);
    HttpResponse::Ok().body("ok")
}

/// Starts the partner receiver on a free loopback port (on the current actix system): its
/// state and the URL to configure.
pub fn start_partner() -> (Arc<Partner>, String) {
    let partner = web::Data::new(Partner::default());
    let shared = partner.clone().into_inner();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(partner.clone())
            .app_data(web::PayloadConfig::new(8 << 20))
            .default_service(web::to(receive))
    })
    .workers(1)
    .bind(("127.0.0.1", 0))
    .expect("bind the partner");
    let url = format!("http://{}/hooks/steward", server.addrs()[0]);
    actix_rt::spawn(server.run());
    (shared, url)
}

/// Whether the alert `code` is open in the tenant status (`Some(false)`: raised and since
/// resolved; `None`: never raised).
pub fn alert_open(status: &Value, code: &str) -> Option<bool> {
    crate::common::status_alert(status, code).map(|alert| alert["resolved_at"].is_null())
}

/// Destination dead letters of `name`.
pub async fn destination_dead_letters(app: &TestApp, id: &str, name: &str) -> Vec<Value> {
    let (status, body) = app
        .admin_call(
            Method::GET,
            &format!("/v1/tenants/{id}/dead-letters?destination={name}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["dead_letters"].as_array().cloned().unwrap_or_default()
}
