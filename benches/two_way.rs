//! Two-way benchmark (pattern 4): what partner edits cost in Virtuous calls, and how long the
//! initial cross-match of a large pair takes against the quota bound.
//!
//! Real processes on loopback: the release `steward serve` (its `public_url` on its own
//! listener, so webhooks reach it) and `steward sandbox` in its own process (Virtuous and the
//! partner platform) — nothing mocked.
//!
//! a. Calls per 1,000 partner edits: `STEWARD_BENCH_EDITS` (1,000) linked contacts, each
//!    edited once on the partner (a user edit: the partner's webhook reaches Steward, which
//!    reads the Virtuous contacts it must change — one `FullContact` query per 100 — and PUTs
//!    each). Counted from the sandbox's request log; the time until Virtuous holds every edit.
//! b. Cross-match of `STEWARD_BENCH_XMATCH` (100,000) contacts per side at an allowance of
//!    `STEWARD_BENCH_ALLOWANCE` (5,000) calls an hour: the job's time from start to report,
//!    beside the quota bound (the Virtuous pages it needs at the allowance's pace).

#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use support::{cpu_ms, env_number, Engine, SandboxProcess};

const PLATFORM: &str = "crm";
const PAIR: &str = "platform:crm";
const REFERENCE_SOURCE: &str = "PartnerCRM";
const PARTNER_SECRET: &str = "bench-partner-webhook-secret";
const PARTNER_TOKEN: &str = "bench-partner-token";
const WEBHOOK_SECRET: &str = "bench-virtuous-webhook-secret";

struct Bench {
    engine: Engine,
    sandbox: SandboxProcess,
    http: reqwest::Client,
}

impl Bench {
    async fn control(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let request = self.http.request(
            method.clone(),
            format!("{}/_sandbox{path}", self.sandbox.url),
        );
        support::json_answer(request, &method, path, body).await
    }

    /// An org, a partner whose webhooks reach the tenant, and the tenant pairing them.
    async fn setup(&self, tenant: &str, hourly_limit: u64, partner_webhooks: bool) {
        self.control(
            Method::POST,
            "/orgs",
            Some(json!({"id": tenant, "api_key": support::api_key(tenant),
            "hourly_limit": 1_000_000, "processing": "immediate"})),
        )
        .await;
        let webhook_url = partner_webhooks.then(|| {
            format!(
                "{}/hooks/{tenant}/platform/{PLATFORM}",
                self.engine.main_url
            )
        });
        self.control(
            Method::POST,
            "/partners",
            Some(json!({"id": tenant, "api_token": PARTNER_TOKEN,
            "webhook_url": webhook_url, "webhook_secret": PARTNER_SECRET})),
        )
        .await;
        let mapping = json!({"kind": "contact", "fields": {"referenceId": "/data/id",
            "email": "/data/email", "firstName": "/data/first_name", "lastName": "/data/last_name"}});
        self.engine
            .admin(Method::POST, "/v1/tenants", Some(json!({
                "id": tenant, "name": format!("Two-way bench {tenant}"),
                "virtuous": {"base_url": self.sandbox.url, "api_key": support::api_key(tenant),
                             "webhook_secret": WEBHOOK_SECRET},
                "budget": {"hourly_limit": hourly_limit, "reserve_pct": 0},
                "sources": {"platforms": {PLATFORM: {"secret": PARTNER_SECRET, "signature_header": "X-Signature",
                    "encoding": "hex", "event_id": "/id", "event_type": "/type",
                    "transaction_source": REFERENCE_SOURCE,
                    "events": {"contact.created": mapping.clone(), "contact.updated": mapping}}}},
                "two_way": {PAIR: {"mode": "on", "fields": {"tags": "dont_sync", "subscribed": "dont_sync"},
                    "api": {"url": format!("{}/partners/{tenant}", self.sandbox.url),
                            "auth_header": "Authorization", "auth_value": format!("Bearer {PARTNER_TOKEN}")}}}
            })))
            .await;
    }

    async fn pair(&self, tenant: &str) -> Value {
        let view = self
            .engine
            .admin(Method::GET, &format!("/v1/tenants/{tenant}/two-way"), None)
            .await;
        view["pairs"][0].clone()
    }

    async fn virtuous_requests(&self, tenant: &str) -> Vec<Value> {
        let log = self
            .control(Method::GET, &format!("/orgs/{tenant}/requests"), None)
            .await;
        log.as_array().cloned().unwrap_or_default()
    }

    async fn virtuous_contacts(&self, tenant: &str) -> Vec<Value> {
        let contacts = self
            .control(Method::GET, &format!("/orgs/{tenant}/contacts"), None)
            .await;
        contacts.as_array().cloned().unwrap_or_default()
    }
}

fn first_name(contact: &Value) -> &str {
    contact["contactIndividuals"][0]["firstName"]
        .as_str()
        .unwrap_or("")
}

/// a. Virtuous calls per 1,000 partner edits.
async fn calls_per_edits(bench: &Bench) {
    let edits = env_number("STEWARD_BENCH_EDITS", 1_000) as usize;
    let tenant = "tw-edits";
    bench.setup(tenant, 360_000, true).await;
    // Virtuous does not retry webhooks: the subscription must exist before the imports.
    support::wait_for(
        Duration::from_secs(60),
        "Steward's webhook subscription",
        || async {
            let hooks = bench
                .control(Method::GET, &format!("/orgs/{tenant}/webhooks"), None)
                .await;
            hooks
                .as_array()
                .is_some_and(|all| all.iter().any(|hook| hook["active"] == true))
                .then_some(())
        },
    )
    .await;
    let contacts: Vec<Value> = (0..edits)
        .map(|n| {
            json!({"id": format!("p{n}"), "email": format!("p{n}@bench.example"),
                        "first_name": format!("First{n}"), "last_name": format!("Last{n}")})
        })
        .collect();
    for chunk in contacts.chunks(500) {
        bench
            .control(
                Method::POST,
                &format!("/partners/{tenant}/contacts"),
                Some(json!({"contacts": chunk})),
            )
            .await;
    }
    // One-way push creates them in Virtuous; the pair links each when Virtuous names it.
    support::wait_for(Duration::from_secs(600), "every contact linked", || async {
        let view = bench.pair(tenant).await;
        let linked = view["counts"]["virtuous_changes"].as_u64().unwrap_or(0) >= edits as u64;
        (linked && view["pending"] == 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = bench.virtuous_requests(tenant).await.len();
    let engine_cpu = cpu_ms(bench.engine.pid());
    let started = Instant::now();
    for n in 0..edits {
        bench
            .control(
                Method::PATCH,
                &format!("/partners/{tenant}/contacts/p{n}"),
                Some(json!({"first_name": format!("Edited{n}")})),
            )
            .await;
    }
    let sent_in = started.elapsed();
    support::wait_for(
        Duration::from_secs(600),
        "every edit in Virtuous",
        || async {
            let done = bench
                .virtuous_contacts(tenant)
                .await
                .iter()
                .filter(|contact| first_name(contact).starts_with("Edited"))
                .count();
            (done == edits).then_some(())
        },
    )
    .await;
    let elapsed = started.elapsed();
    let requests = bench.virtuous_requests(tenant).await;
    let spent = &requests[before..];
    let count = |method: &str, prefix: &str| {
        spent
            .iter()
            .filter(|r| {
                r["method"] == method && r["path"].as_str().is_some_and(|p| p.starts_with(prefix))
            })
            .count()
    };
    let puts = count("PUT", "/api/Contact/");
    let full_reads = count("POST", "/api/Contact/Query/FullContact");
    let gets = count("GET", "/api/Contact/");
    let per_1000 = spent.len() as f64 * 1_000.0 / edits as f64;
    println!(
        "a. {edits} partner edits: {} Virtuous calls ({per_1000:.0} per 1,000 edits): {puts} PUT, \
         {full_reads} FullContact reads (≤ 100 ids each), {gets} single GETs, {} other; edits \
         sent in {:.1} s, all in Virtuous after {:.1} s; engine CPU {} ms",
        spent.len(),
        spent.len() - puts - full_reads - gets,
        sent_in.as_secs_f64(),
        elapsed.as_secs_f64(),
        cpu_ms(bench.engine.pid()) - engine_cpu,
    );
}

/// b. Cross-match of a large pair at an allowance, against the quota bound.
async fn cross_match(bench: &Bench) {
    let size = env_number("STEWARD_BENCH_XMATCH", 100_000) as usize;
    let allowance = env_number("STEWARD_BENCH_ALLOWANCE", 5_000);
    let tenant = "tw-xmatch";
    // Both sides filled before the tenant exists: no webhooks, only the job reads them.
    bench
        .control(
            Method::POST,
            "/orgs",
            Some(json!({"id": tenant, "api_key": support::api_key(tenant),
        "hourly_limit": 1_000_000, "processing": "immediate"})),
        )
        .await;
    let seeding = Instant::now();
    let key = support::api_key(tenant);
    for start in (0..size).step_by(100) {
        let batch: Vec<Value> = (start..(start + 100).min(size))
            .map(|n| json!({"referenceSource": "OtherTool", "referenceId": format!("o{n}"),
                            "email": format!("person{n}@bench.example"), "firstName": "P", "lastName": format!("L{n}")}))
            .collect();
        let request = bench
            .http
            .post(format!("{}/api/Contact/Batch", bench.sandbox.url))
            .bearer_auth(&key)
            .json(&json!({"contacts": batch}));
        support::json_answer(request, &Method::POST, "/api/Contact/Batch", None).await;
    }
    bench
        .control(
            Method::POST,
            "/partners",
            Some(json!({"id": tenant, "api_token": PARTNER_TOKEN,
        "webhook_secret": PARTNER_SECRET})),
        )
        .await;
    let partner_rows: Vec<Value> = (0..size)
        .map(|n| {
            json!({"id": format!("x{n}"), "email": format!("Person{n}@bench.example"),
                        "first_name": "P", "last_name": format!("L{n}")})
        })
        .collect();
    for chunk in partner_rows.chunks(2_000) {
        bench
            .control(
                Method::POST,
                &format!("/partners/{tenant}/contacts"),
                Some(json!({"contacts": chunk, "quiet": true})),
            )
            .await;
    }
    println!(
        "b. seeded {size} contacts per side in {:.1} s",
        seeding.elapsed().as_secs_f64()
    );
    // The tenant (its org exists already: `setup` would create it again).
    let mapping =
        json!({"kind": "contact", "fields": {"referenceId": "/data/id", "email": "/data/email"}});
    bench
        .engine
        .admin(Method::POST, "/v1/tenants", Some(json!({
            "id": tenant, "name": "Cross-match bench",
            "virtuous": {"base_url": bench.sandbox.url, "api_key": key},
            "budget": {"hourly_limit": allowance, "reserve_pct": 0},
            "sources": {"platforms": {PLATFORM: {"secret": PARTNER_SECRET, "transaction_source": REFERENCE_SOURCE,
                "events": {"contact.updated": mapping}}}},
            "two_way": {PAIR: {"mode": "observe",
                "api": {"url": format!("{}/partners/{tenant}", bench.sandbox.url),
                        "auth_header": "Authorization", "auth_value": format!("Bearer {PARTNER_TOKEN}")}}}
        })))
        .await;
    let before = bench.virtuous_requests(tenant).await.len();
    let started = Instant::now();
    bench
        .engine
        .admin(
            Method::POST,
            &format!("/v1/tenants/{tenant}/cross-match"),
            Some(json!({"pair": PAIR})),
        )
        .await;
    let mut last_print = Instant::now();
    let job = support::wait_for(
        Duration::from_secs(3 * 3_600),
        "the cross-match report",
        || async {
            let job = bench
                .engine
                .admin(
                    Method::GET,
                    &format!("/v1/tenants/{tenant}/cross-match"),
                    None,
                )
                .await;
            if job["state"] == "ready" {
                return Some(job);
            }
            if last_print.elapsed() > Duration::from_secs(30) {
                println!(
                    "   … {} state {}, partner rows {}, Virtuous rows {} of {}, ETA {} s",
                    tenant,
                    job["state"],
                    job["partner_rows"],
                    job["virtuous_rows"],
                    job["virtuous_total"],
                    job["eta_ms"].as_u64().map_or(0, |ms| ms / 1_000)
                );
            }
            None
        },
    )
    .await;
    let _ = &mut last_print;
    let elapsed = started.elapsed();
    let calls = bench.virtuous_requests(tenant).await.len() - before;
    let take = 500.0;
    let pages = (size as f64 / take).ceil();
    let bound_s = pages * 3_600.0 / allowance as f64;
    println!(
        "b. cross-match of {size} contacts per side at {allowance} calls/hour: report after {:.1} s \
         ({calls} Virtuous calls; quota bound {pages} pages → {bound_s:.1} s); summary {}",
        elapsed.as_secs_f64(),
        job["summary"]
    );
}

#[tokio::main]
async fn main() {
    println!("two-way bench on {}", support::machine());
    let sandbox = SandboxProcess::spawn();
    let engine = Engine::spawn_public().await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let bench = Bench {
        engine,
        sandbox,
        http,
    };
    calls_per_edits(&bench).await;
    cross_match(&bench).await;
}
