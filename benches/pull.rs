//! Pull benchmark (issue 13): Virtuous changes into a real Postgres destination.
//!
//! Real processes on loopback: the release `steward serve` (its `public_url` on its own
//! listener, so the Virtuous sandbox's webhooks reach it), `steward sandbox` in its own
//! process (the Virtuous side: staff edits, imports, webhooks, queries), and a throwaway
//! PostgreSQL cluster (initdb + pg_ctl, fsync on) — nothing mocked.
//!
//! a. Webhook-in → row-in-Postgres latency at a steady rate of staff edits (gift updates,
//!    round robin over seeded gifts): each edit fires its `GiftUpdate` webhook, Steward logs
//!    the change and the destination writes the row. Measured with LISTEN/NOTIFY: a trigger
//!    on the destination's `gifts` table notifies `(id, version_ms)` of every row written;
//!    latency = the notification's arrival in the bench minus the moment the staff edit was
//!    sent (the edit's answer carries the version).
//! b. Postgres destination throughput: the destination paused while `DRAIN_CHANGES` new
//!    gifts are imported (one `GiftCreate` each, distinct ids: one row per change), then
//!    resumed; the drain to the head (`GET …/destinations`: checkpoint == head) is timed.
//!    Transactions are counted as the distinct `synced_at` (the writing transaction's
//!    `now()`) of the backlog's rows, so rows per transaction is the real batch size.
//! c. Backstop poll cost: webhooks dropped 100 %, so only the poll finds changes; rounds of
//!    `POLL_CHANGES` imported gifts, each followed by a backstop poll
//!    (`POST /v1/tenants/{id}/pull/poll`); calls from `pull.last_backstop.calls`, checked
//!    against the sandbox's query counts. Run with `query_date_granularity: "day"` and
//!    `"instant"`.
//!
//! Sizes: `STEWARD_BENCH_SECONDS` (60) at `STEWARD_BENCH_RATE` (100 edits/s) over
//! `STEWARD_BENCH_SEED_GIFTS` (1,000) gifts; `STEWARD_BENCH_DRAIN_CHANGES` (20,000) with
//! `STEWARD_BENCH_PG_BATCH` (500, the destination's `batch_max`); `STEWARD_BENCH_POLL_ROUNDS`
//! (5) of `STEWARD_BENCH_POLL_CHANGES` (1,000).

#[path = "../tests/it/pg_support.rs"]
mod pg;
#[path = "support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};
use support::{cpu_ms, env_number, new_histogram, summary_ms, Engine, SandboxProcess};

const WEBHOOK_SECRET: &str = "bench-virtuous-webhook-secret";
const SCHEMA: &str = "bench";
const DESTINATION: &str = "warehouse";
/// Gifts per import call.
const IMPORT_BATCH: u64 = 100;

/// The bench's view of the world: the engine, the sandbox, the database.
struct Bench {
    engine: Engine,
    sandbox: SandboxProcess,
    cluster: pg::PgCluster,
    http: reqwest::Client,
}

async fn call(request: reqwest::RequestBuilder, what: &str) -> Value {
    let response = request
        .send()
        .await
        .unwrap_or_else(|err| panic!("{what}: {err}"));
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    assert!(status.is_success(), "{what} → {status}: {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

impl Bench {
    /// A control call of the sandbox (`/_sandbox/…`).
    async fn control(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(
            method.clone(),
            format!("{}/_sandbox{path}", self.sandbox.url),
        );
        if let Some(body) = body {
            request = request.json(&body);
        }
        call(request, &format!("{method} /_sandbox{path}")).await
    }

    /// Imports `count` gifts into `org` (batches of [`IMPORT_BATCH`], the org imports at
    /// once), waiting after each batch until its webhooks were sent (or dropped): Virtuous
    /// spreads its deliveries; a burst of thousands would only measure the ingress's
    /// mailbox. All gifts share one contact (matched by email after the first).
    async fn import_gifts(&self, org: &str, prefix: &str, count: u64) {
        let mut sent = 0;
        while sent < count {
            let n = IMPORT_BATCH.min(count - sent);
            let transactions: Vec<Value> = (sent..sent + n)
                .map(|i| {
                    json!({"transactionSource": "bench", "transactionId": format!("{prefix}-{i}"),
                           "amount": format!("{}.00", 10 + i % 90), "currencyCode": "USD",
                           "giftDate": "2026-05-01", "giftType": "Credit", "batch": "B-1",
                           "contact": {"referenceId": "bench-donor", "firstName": "Bench",
                                       "lastName": "Donor", "email": "donor@bench.example",
                                       "address": {"postal": "10001"}}})
                })
                .collect();
            let before = self.webhook_counts(org).await;
            let request = self
                .http
                .post(format!("{}/api/v2/Gift/Transactions", self.sandbox.url))
                .bearer_auth(support::api_key(org))
                .json(&json!({"transactions": transactions}));
            call(request, "POST /api/v2/Gift/Transactions").await;
            support::wait_for(
                Duration::from_secs(120),
                "the import's webhooks",
                || async { (self.webhook_counts(org).await >= before + n).then_some(()) },
            )
            .await;
            sent += n;
        }
    }

    /// Gift webhooks sent, failed or dropped so far (per subscriber; one subscriber here).
    async fn webhook_counts(&self, org: &str) -> u64 {
        let stats = self
            .control(Method::GET, &format!("/orgs/{org}/stats"), None)
            .await;
        ["webhooks_sent", "webhooks_failed", "webhooks_dropped"]
            .iter()
            .map(|key| stats[key].as_u64().unwrap_or(0))
            .sum()
    }

    async fn create_org(&self, org: &str, extra: Value) {
        let mut spec = json!({"id": org, "api_key": support::api_key(org),
                              "hourly_limit": 1_000_000, "processing": "immediate"});
        for (key, value) in extra.as_object().unwrap() {
            spec[key] = value.clone();
        }
        self.control(Method::POST, "/orgs", Some(spec)).await;
    }

    async fn create_tenant(&self, tenant: &str, pull: Value) {
        self.engine
            .admin(
                Method::POST,
                "/v1/tenants",
                Some(json!({
                    "id": tenant, "name": format!("Pull bench {tenant}"),
                    "virtuous": {"base_url": self.sandbox.url, "api_key": support::api_key(tenant),
                                 "webhook_secret": WEBHOOK_SECRET},
                    "budget": {"hourly_limit": 1_000_000, "reserve_pct": 0, "burst_calls": 100},
                    "pull": pull,
                })),
            )
            .await;
    }

    /// Waits until Steward registered its webhook subscription with the org.
    async fn wait_subscribed(&self, org: &str) {
        support::wait_for(
            Duration::from_secs(60),
            "Steward's webhook subscription",
            || async {
                let hooks = self
                    .control(Method::GET, &format!("/orgs/{org}/webhooks"), None)
                    .await;
                hooks
                    .as_array()
                    .is_some_and(|all| all.iter().any(|hook| hook["active"] == true))
                    .then_some(())
            },
        )
        .await;
    }

    async fn destination(&self, tenant: &str) -> Value {
        let answer = self
            .engine
            .admin(
                Method::GET,
                &format!("/v1/tenants/{tenant}/destinations"),
                None,
            )
            .await;
        answer["destinations"]
            .as_array()
            .and_then(|all| all.iter().find(|d| d["name"] == DESTINATION))
            .cloned()
            .unwrap_or(Value::Null)
    }

    async fn pull_view(&self, tenant: &str) -> Value {
        self.engine
            .admin(
                Method::GET,
                &format!("/v1/tenants/{tenant}/destinations"),
                None,
            )
            .await["pull"]
            .clone()
    }

    /// Waits until the destination's checkpoint reached the head, and the head is at
    /// least `head_at_least`; the destination then.
    async fn wait_drained(&self, tenant: &str, head_at_least: u64, timeout: Duration) -> Value {
        support::wait_for(timeout, "the destination to reach the head", || async {
            let destination = self.destination(tenant).await;
            let head = destination["head"].as_u64()?;
            (head >= head_at_least && destination["checkpoint"].as_u64() == Some(head))
                .then_some(destination)
        })
        .await
    }
}

/// CPU of every process the bench watches, for a split over a window.
#[derive(Clone, Copy)]
struct CpuSample {
    at: Instant,
    engine: u64,
    sandbox: u64,
    postgres: u64,
    bench: u64,
}

impl Bench {
    fn cpu(&self) -> CpuSample {
        CpuSample {
            at: Instant::now(),
            engine: cpu_ms(self.engine.pid()),
            sandbox: cpu_ms(self.sandbox.child.id()),
            postgres: self
                .cluster
                .postmaster_pid()
                .map_or(0, support::postgres_cpu_ms),
            bench: cpu_ms(std::process::id()),
        }
    }
}

fn cpu_split(before: CpuSample, after: CpuSample) -> String {
    let seconds = after.at.duration_since(before.at).as_secs_f64().max(0.001);
    let share = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / 1_000.0 / seconds * 100.0;
    format!(
        "CPU over {seconds:.1} s (100 % = one core): steward {:.0} %, sandbox {:.0} %, postgres {:.0} %, bench {:.0} %",
        share(before.engine, after.engine),
        share(before.sandbox, after.sandbox),
        share(before.postgres, after.postgres),
        share(before.bench, after.bench),
    )
}

fn machine_lines() -> String {
    let memory = support::total_memory();
    let load = support::load_average();
    format!(
        "machine: {}, {memory}; load average at start {load}",
        support::machine()
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let seconds = env_number("STEWARD_BENCH_SECONDS", 60);
    let rate = env_number("STEWARD_BENCH_RATE", 100);
    let seed_gifts = env_number("STEWARD_BENCH_SEED_GIFTS", 1_000);
    let drain_changes = env_number("STEWARD_BENCH_DRAIN_CHANGES", 20_000);
    let batch_max = env_number("STEWARD_BENCH_PG_BATCH", 500);
    let poll_rounds = env_number("STEWARD_BENCH_POLL_ROUNDS", 5);
    let poll_changes = env_number("STEWARD_BENCH_POLL_CHANGES", 1_000);
    println!("{}", machine_lines());

    let cluster = pg::PgCluster::start_durable();
    println!("postgres: {} (fsync on), on loopback", cluster.version());
    let sandbox = SandboxProcess::spawn();
    let engine = Engine::spawn_public().await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let bench = Bench {
        engine,
        sandbox,
        cluster,
        http,
    };

    let tenant = "pull-pg";
    bench.create_org(tenant, json!({})).await;
    bench
        .create_tenant(
            tenant,
            json!({"events": ["gift", "contact"], "poll_interval_s": 0,
                   "destinations": {DESTINATION: {"kind": "postgres", "dsn": bench.cluster.dsn(),
                                                  "schema": SCHEMA, "batch_max": batch_max}}}),
        )
        .await;
    bench.wait_subscribed(tenant).await;
    let seeding = Instant::now();
    bench.import_gifts(tenant, "seed", seed_gifts).await;
    // Every gift plus the one contact's create.
    let seeded = bench
        .wait_drained(tenant, seed_gifts + 1, Duration::from_secs(300))
        .await;
    println!(
        "seed: {seed_gifts} gifts imported and delivered in {:.1} s (log head {})",
        seeding.elapsed().as_secs_f64(),
        seeded["head"]
    );

    // a. Latency at a steady rate of staff edits.
    let db = bench.cluster.connect().await;
    let (listener, mut connection) =
        tokio_postgres::connect(&bench.cluster.dsn(), tokio_postgres::NoTls)
            .await
            .expect("connect the listener");
    let arrivals: Arc<Mutex<HashMap<(String, u64), Instant>>> = Default::default();
    let seen = Arc::clone(&arrivals);
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notification(note) = message {
                let at = Instant::now();
                if let Some((id, version)) = note.payload().split_once(',') {
                    if let Ok(version) = version.parse::<u64>() {
                        seen.lock()
                            .unwrap()
                            .entry((id.to_string(), version))
                            .or_insert(at);
                    }
                }
            }
        }
    });
    db.batch_execute(&format!(
        "CREATE FUNCTION {SCHEMA}.bench_notify() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_notify('steward_bench', NEW.id || ',' || NEW.version_ms); RETURN NEW; END $$;
         CREATE TRIGGER bench_notify AFTER INSERT OR UPDATE ON {SCHEMA}.gifts
         FOR EACH ROW EXECUTE FUNCTION {SCHEMA}.bench_notify();"
    ))
    .await
    .expect("the notify trigger");
    listener
        .batch_execute("LISTEN steward_bench")
        .await
        .expect("LISTEN");
    let gift_ids: Vec<u64> = bench
        .control(Method::GET, &format!("/orgs/{tenant}/gifts"), None)
        .await
        .as_array()
        .expect("gifts")
        .iter()
        .filter_map(|gift| gift["id"].as_u64())
        .collect();
    assert_eq!(
        gift_ids.len() as u64,
        seed_gifts,
        "every seeded gift exists"
    );

    let edits = rate * seconds;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let cpu_before = bench.cpu();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(edits as usize);
    let edit_url = format!("{}/_sandbox/orgs/{tenant}/staff-edit", bench.sandbox.url);
    for n in 0..edits {
        tokio::time::sleep_until((started + interval * n as u32).into()).await;
        let id = gift_ids[(n % gift_ids.len() as u64) as usize];
        let request = bench.http.post(&edit_url).json(
            &json!({"kind": "gift", "id": id, "changes": {"notes": format!("staff edit {n}")}}),
        );
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let response = request.send().await.expect("staff edit");
            assert!(
                response.status().is_success(),
                "staff edit {}",
                response.status()
            );
            let record: Value = response.json().await.expect("the edited record");
            let version = record["modifiedDateTimeUtc"]
                .as_str()
                .and_then(steward::virtuous::webhook::parse_modified_ms)
                .expect("a modified time");
            (
                record["id"].as_u64().expect("an id").to_string(),
                version,
                sent,
            )
        }));
    }
    let mut sent_edits = Vec::with_capacity(tasks.len());
    for task in tasks {
        sent_edits.push(task.await.unwrap());
    }
    let sending_s = started.elapsed().as_secs_f64();
    support::wait_for(Duration::from_secs(120), "every edit's row", || async {
        let arrivals = arrivals.lock().unwrap();
        sent_edits
            .iter()
            .all(|(id, version, _)| arrivals.contains_key(&(id.clone(), *version)))
            .then_some(())
    })
    .await;
    let cpu_after = bench.cpu();
    let mut latency = new_histogram();
    {
        let arrivals = arrivals.lock().unwrap();
        for (id, version, sent) in &sent_edits {
            let at = arrivals[&(id.clone(), *version)];
            latency.saturating_record(at.saturating_duration_since(*sent).as_micros() as u64);
        }
    }
    println!();
    println!(
        "a. staff edit → webhook → Steward → row in Postgres (LISTEN/NOTIFY from a trigger on {SCHEMA}.gifts), {edits} gift updates at {rate}/s over {sending_s:.1} s:"
    );
    println!("   latency {}", summary_ms(&latency));
    println!("   {}", cpu_split(cpu_before, cpu_after));
    let head_after_edits = bench.destination(tenant).await["head"]
        .as_u64()
        .unwrap_or(0);

    // b. Throughput: a backlog built while paused, then drained.
    bench
        .engine
        .admin(
            Method::POST,
            &format!("/v1/tenants/{tenant}/destinations/{DESTINATION}/pause"),
            None,
        )
        .await;
    let building = Instant::now();
    bench.import_gifts(tenant, "backlog", drain_changes).await;
    let backlog = support::wait_for(Duration::from_secs(300), "the backlog logged", || async {
        let destination = bench.destination(tenant).await;
        (destination["head"].as_u64()? >= head_after_edits + drain_changes).then_some(destination)
    })
    .await;
    let head = backlog["head"].as_u64().unwrap();
    let from = backlog["checkpoint"].as_u64().unwrap();
    println!();
    println!(
        "b. backlog: {} changes logged while paused in {:.1} s (imports + webhooks + capture)",
        head - from,
        building.elapsed().as_secs_f64()
    );
    let cpu_before = bench.cpu();
    let resumed = Instant::now();
    bench
        .engine
        .admin(
            Method::POST,
            &format!("/v1/tenants/{tenant}/destinations/{DESTINATION}/resume"),
            None,
        )
        .await;
    bench
        .wait_drained(tenant, head, Duration::from_secs(600))
        .await;
    let drain_s = resumed.elapsed().as_secs_f64();
    let cpu_after = bench.cpu();
    let rows: i64 = db
        .query_one(&format!("SELECT count(*) FROM {SCHEMA}.gifts"), &[])
        .await
        .unwrap()
        .get(0);
    // `synced_at` is the writing transaction's `now()`: distinct values are transactions.
    let transactions: i64 = db
        .query_one(
            &format!(
                "SELECT count(DISTINCT synced_at) FROM {SCHEMA}.gifts WHERE record->>'transactionId' LIKE 'backlog-%'"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let transactions = transactions.max(1) as u64;
    let drained = head - from;
    println!(
        "   drain: {drained} changes to Postgres in {drain_s:.2} s = {:.0} rows/s; {transactions} transactions (distinct synced_at: {:.0} rows each; batch_max {batch_max}); {rows} gift rows in the table",
        drained as f64 / drain_s,
        drained as f64 / transactions as f64,
    );
    println!("   {}", cpu_split(cpu_before, cpu_after));
    assert_eq!(
        rows as u64,
        seed_gifts + drain_changes,
        "one row per gift in Postgres"
    );

    // c. The backstop poll's calls per 1,000 changes.
    println!();
    println!(
        "c. backstop poll, webhooks dropped 100 %, {poll_rounds} rounds of {poll_changes} new gifts each followed by one poll (take 500; kinds gift + contact):"
    );
    for granularity in ["day", "instant"] {
        backstop(&bench, granularity, poll_rounds, poll_changes).await;
    }
}

/// Section c for one setting of the sandbox's date granularity.
async fn backstop(bench: &Bench, granularity: &str, rounds: u64, changes: u64) {
    let tenant = format!("poll-{granularity}");
    bench
        .create_org(
            &tenant,
            json!({"webhook_drop_pct": 100.0, "query_date_granularity": granularity}),
        )
        .await;
    bench
        .create_tenant(
            &tenant,
            json!({"events": ["gift", "contact"], "poll_interval_s": 3600}),
        )
        .await;
    bench.wait_subscribed(&tenant).await;
    // The first pass runs at start (it sets the marks).
    let mut last = support::wait_for(
        Duration::from_secs(60),
        "the first backstop pass",
        || async {
            let view = bench.pull_view(&tenant).await;
            let report = view["last_backstop"].clone();
            (report.is_object() && view["backstop_running"] == false).then_some(report)
        },
    )
    .await;
    let queries = |stats: &Value| -> u64 {
        [
            "POST /api/Gift/Query/FullGift",
            "POST /api/Contact/Query/FullContact",
        ]
        .iter()
        .filter_map(|endpoint| stats["requests"][endpoint].as_object())
        .flat_map(|statuses| statuses.values())
        .filter_map(Value::as_u64)
        .sum()
    };
    let stats = bench
        .control(Method::GET, &format!("/orgs/{tenant}/stats"), None)
        .await;
    let queries_before = queries(&stats);
    let day_queries_before = stats["day_granularity_queries"].as_u64().unwrap_or(0);
    let mut calls_total = 0;
    let mut logged_total = 0;
    let mut per_round = Vec::new();
    for round in 1..=rounds {
        bench
            .import_gifts(&tenant, &format!("r{round}"), changes)
            .await;
        bench
            .engine
            .admin(
                Method::POST,
                &format!("/v1/tenants/{tenant}/pull/poll"),
                None,
            )
            .await;
        let previous = last["started_at_ms"].as_u64().unwrap_or(0);
        last = support::wait_for(Duration::from_secs(300), "the backstop pass", || async {
            let view = bench.pull_view(&tenant).await;
            let report = view["last_backstop"].clone();
            (report["started_at_ms"].as_u64()? > previous && view["backstop_running"] == false)
                .then_some(report)
        })
        .await;
        assert_eq!(last["outcome"], "completed", "the backstop pass: {last}");
        let calls = last["calls"].as_u64().unwrap_or(0);
        calls_total += calls;
        logged_total += last["logged"].as_u64().unwrap_or(0);
        per_round.push(format!(
            "{calls} calls / {} fetched / {} logged",
            last["fetched"], last["logged"]
        ));
    }
    let stats = bench
        .control(Method::GET, &format!("/orgs/{tenant}/stats"), None)
        .await;
    let sandbox_queries = queries(&stats) - queries_before;
    let day_queries = stats["day_granularity_queries"].as_u64().unwrap_or(0) - day_queries_before;
    println!(
        "   query_date_granularity {granularity:>7}: {calls_total} calls for {logged_total} changes = {:.1} calls per 1,000 changes (sandbox counted {sandbox_queries} queries, {day_queries} under day granularity); per round: {}",
        calls_total as f64 * 1_000.0 / logged_total.max(1) as f64,
        per_round.join("; ")
    );
    assert_eq!(
        logged_total,
        rounds * changes + 1,
        "every gift (and the one contact) found by the poll"
    );
}
