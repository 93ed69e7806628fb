//! CDC benchmark (issue 18): a partner's own Postgres database as a source.
//!
//! Real processes on loopback: the release `steward serve` with its embedded sandbox and a
//! throwaway PostgreSQL cluster (initdb + pg_ctl, fsync on, `wal_level = logical`), nothing
//! mocked. One tenant with one logical source (`sources.postgres.events`, pgoutput slot
//! `steward_cdc` created by Steward, publication `steward_cdc`) over one gift table. Its
//! Virtuous budget is 1 call an hour (`CDC_BENCH_SUBMIT=on`: 1,000,000) so that submitting
//! to the sandbox takes no CPU from capture: what is measured is capture, slot → durable
//! queue. "Ready" = counted in the tenant status's `counts.captured` (each gift row is one
//! entry; a warm-up checks that).
//!
//! 1. Throughput: the poller paused, `CDC_BENCH_ROWS` (50,000) rows are committed in
//!    transactions of `CDC_BENCH_TXN_ROWS` (10) rows, so they wait in the slot; the poller
//!    resumed, the time until `counts.captured` grew by that many → changes/s.
//! 2. Latency commit → entry ready: a writer commits single-row transactions at
//!    `CDC_BENCH_RATE` (100)/s for `CDC_BENCH_SECONDS` (60) s, noting each commit's time when
//!    it returned; a watcher reads the status every ~2 ms: when `captured` reaches i (counted
//!    from the section's start), row i is ready. Latency = seen(i) − committed(i).
//! 3. WAL retained while Steward is stopped: the writer goes on at the same rate, Steward gets
//!    SIGTERM, `CDC_BENCH_STOP_S` (60) s later the slot's `pg_current_wal_lsn() −
//!    confirmed_flush_lsn` is read, Steward restarted on the same data dir, and the time from
//!    exec until the slot's lag is under 1 MiB and every row committed before the restart is
//!    captured (the writer still going).
//!
//! The source's `interval_ms` and `batch` are the product defaults unless
//! `CDC_BENCH_INTERVAL_MS` / `CDC_BENCH_BATCH` are set. Each section asserts the work was
//! done: every row captured exactly once.

#[path = "../tests/it/pg_support.rs"]
mod pg;
#[path = "support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use reqwest::Method;
use serde_json::{json, Value};
use support::{cpu_ms, env_number, new_histogram, summary_ms, Engine};

const TENANT: &str = "cdc-bench";
const SOURCE: &str = "events";
const SLOT: &str = "steward_cdc";
const PUBLICATION: &str = "steward_cdc";
const MIB: f64 = 1_048_576.0;
/// Section 3 ends when the slot's lag is below this.
const CAUGHT_UP_LAG_BYTES: i64 = 1_048_576;

/// A throwaway durable cluster with `wal_level = logical` (a server option: set with
/// `ALTER SYSTEM`, then a restart), through `pg_support`'s public calls only.
async fn start_logical_cluster() -> pg::PgCluster {
    let cluster = pg::PgCluster::start_durable();
    {
        let db = cluster.connect().await;
        db.batch_execute("ALTER SYSTEM SET wal_level = logical")
            .await
            .expect("ALTER SYSTEM SET wal_level");
    }
    cluster.stop();
    cluster.start_again();
    let db = cluster.connect().await;
    let level: String = db
        .query_one("SHOW wal_level", &[])
        .await
        .expect("SHOW wal_level")
        .get(0);
    assert_eq!(level, "logical", "the cluster's wal_level");
    cluster
}

/// The slot as `pg_replication_slots` shows it.
#[derive(Debug, Clone, Default)]
struct Slot {
    /// `pg_current_wal_lsn() − confirmed_flush_lsn`: WAL the consumer has not confirmed.
    lag_bytes: i64,
    /// `pg_current_wal_lsn() − restart_lsn`: WAL the server keeps for the slot.
    retained_bytes: i64,
    wal_status: String,
    confirmed_flush_lsn: String,
}

struct Bench {
    engine: Engine,
    cluster: pg::PgCluster,
    /// Queries of the bench (slot state, counts).
    db: tokio_postgres::Client,
    /// `counts.captured` before the first gift row.
    base: u64,
    /// Gift rows committed so far (every section).
    inserted: Arc<AtomicU64>,
}

impl Bench {
    async fn captured(&self) -> u64 {
        self.engine.status(TENANT).await["counts"]["captured"]
            .as_u64()
            .unwrap_or(0)
    }

    /// `counts.duplicates` (a re-read change the store already held).
    async fn duplicates(&self) -> u64 {
        self.engine.status(TENANT).await["counts"]["duplicates"]
            .as_u64()
            .unwrap_or(0)
    }

    async fn poller(&self) -> Value {
        let answer = self
            .engine
            .admin(Method::GET, &format!("/v1/tenants/{TENANT}/pollers"), None)
            .await;
        answer["pollers"]
            .as_array()
            .and_then(|all| all.iter().find(|p| p["source"] == SOURCE))
            .cloned()
            .unwrap_or_else(|| panic!("no poller `{SOURCE}` in {answer}"))
    }

    async fn poller_action(&self, action: &str) -> Value {
        self.engine
            .admin(
                Method::POST,
                &format!("/v1/tenants/{TENANT}/pollers/{SOURCE}/{action}"),
                None,
            )
            .await
    }

    async fn slot(&self) -> Option<Slot> {
        let row = self
            .db
            .query_opt(
                "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint,
                        (pg_current_wal_lsn() - restart_lsn)::bigint,
                        coalesce(wal_status, ''), coalesce(confirmed_flush_lsn::text, '')
                 FROM pg_replication_slots WHERE slot_name = $1",
                &[&SLOT],
            )
            .await
            .expect("read pg_replication_slots")?;
        Some(Slot {
            lag_bytes: row.get::<_, Option<i64>>(0).unwrap_or(-1),
            retained_bytes: row.get::<_, Option<i64>>(1).unwrap_or(-1),
            wal_status: row.get(2),
            confirmed_flush_lsn: row.get(3),
        })
    }

    /// Waits until `counts.captured` ≥ `target` (polled every `every`); when it got there.
    async fn wait_captured(&self, target: u64, timeout: Duration, every: Duration) -> Instant {
        let deadline = Instant::now() + timeout;
        let mut last = 0;
        loop {
            last = self.captured().await.max(last);
            if last >= target {
                return Instant::now();
            }
            assert!(
                Instant::now() < deadline,
                "captured {last} of {target} after {timeout:?}; poller: {}",
                self.poller().await
            );
            tokio::time::sleep(every).await;
        }
    }

    /// Rows committed so far, as `counts.captured` should count them once all are read.
    fn expected_captured(&self) -> u64 {
        self.base + self.inserted.load(Ordering::SeqCst)
    }

    fn cpu(&self) -> CpuSample {
        CpuSample {
            at: Instant::now(),
            engine: cpu_ms(self.engine.pid()),
            postgres: self
                .cluster
                .postmaster_pid()
                .map_or(0, support::postgres_cpu_ms),
            bench: cpu_ms(std::process::id()),
        }
    }

    /// The poller's runs numbered above `after` (its `runs` counter before), kept or in
    /// progress: (runs, pages, changes fetched, the runs' outcomes and pages).
    async fn runs_after(&self, after: u64) -> (u64, u64, u64, String) {
        let answer = self
            .engine
            .admin(
                Method::GET,
                &format!("/v1/tenants/{TENANT}/pollers/{SOURCE}/runs?limit=50"),
                None,
            )
            .await;
        let mut runs: Vec<Value> = answer["runs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|run| run["run"].as_u64().is_some_and(|n| n > after))
            .cloned()
            .collect();
        let current = self.poller().await["run_in_progress"].clone();
        if current["run"].as_u64().is_some_and(|n| n > after)
            && !runs.iter().any(|run| run["run"] == current["run"])
        {
            runs.push(current);
        }
        let sum = |key: &str| runs.iter().filter_map(|run| run[key].as_u64()).sum();
        let mut shown: Vec<String> = runs
            .iter()
            .filter(|run| run["fetched"].as_u64().unwrap_or(0) > 0)
            .map(|run| format!("#{} {} {} pages", run["run"], run["outcome"], run["pages"]))
            .collect();
        shown.reverse();
        (
            runs.len() as u64,
            sum("pages"),
            sum("fetched"),
            shown.join(", "),
        )
    }

    /// `steward_cdc_changes_total` by `op` from `/metrics` (empty when absent).
    async fn cdc_changes(&self) -> Vec<(String, f64)> {
        let text = self
            .engine
            .client
            .get(format!("{}/metrics", self.engine.admin_url))
            .bearer_auth(support::ADMIN_TOKEN)
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .unwrap_or_default();
        text.lines()
            .filter(|line| line.starts_with("steward_cdc_changes_total{"))
            .filter_map(|line| {
                let op = line.split("op=\"").nth(1)?.split('"').next()?.to_string();
                let value = line.rsplit(' ').next()?.parse::<f64>().ok()?;
                Some((op, value))
            })
            .collect()
    }
}

/// CPU of the processes the bench watches, for a split over a window.
#[derive(Clone, Copy)]
struct CpuSample {
    at: Instant,
    engine: u64,
    postgres: u64,
    bench: u64,
}

fn cpu_split(before: CpuSample, after: CpuSample) -> String {
    let seconds = after.at.duration_since(before.at).as_secs_f64().max(0.001);
    let share = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / 1_000.0 / seconds * 100.0;
    format!(
        "CPU over {seconds:.1} s (100 % = one core): steward {:.0} %, postgres {:.0} %, bench {:.0} %",
        share(before.engine, after.engine),
        share(before.postgres, after.postgres),
        share(before.bench, after.bench),
    )
}

fn machine_line() -> String {
    let memory = format!("{} RAM", support::total_memory());
    let load = support::load_average();
    format!(
        "machine: nproc {}, {}, {memory}; load average at start {load}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        support::machine()
    )
}

/// The insert of one gift row numbered `$1`.
const INSERT_ONE: &str = "INSERT INTO public.gifts (amount, email) \
     VALUES ((10 + $1::bigint % 90)::numeric(12,2), 'donor' || $1::bigint || '@bench.example')";

/// What a steady writer did.
struct Written {
    rows: u64,
    elapsed: Duration,
    /// Round trip of each autocommit `INSERT` (fsync on), µs.
    commit_us: Histogram<u64>,
}

/// Commits single-row transactions (autocommit `INSERT`s: the answer comes after the
/// commit) at `rate`/s on its own connection until `stop` (or `max` rows). Each commit's
/// time (when its `INSERT` returned) is pushed to `committed`, in commit order, before the
/// row is counted in `inserted`.
async fn steady_writer(
    dsn: String,
    rate: u64,
    max: u64,
    stop: Arc<AtomicBool>,
    inserted: Arc<AtomicU64>,
    committed: Arc<Mutex<Vec<Instant>>>,
) -> Written {
    let (client, connection) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls)
        .await
        .expect("connect the writer");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let insert = client
        .prepare(INSERT_ONE)
        .await
        .expect("prepare the insert");
    let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let started = tokio::time::Instant::now();
    let mut commit_us = new_histogram();
    let mut rows = 0u64;
    while rows < max && !stop.load(Ordering::SeqCst) {
        tokio::time::sleep_until(started + interval * rows as u32).await;
        let number = inserted.load(Ordering::SeqCst) as i64 + 1;
        let sent = Instant::now();
        client
            .execute(&insert, &[&number])
            .await
            .expect("insert a gift row");
        let at = Instant::now();
        commit_us.saturating_record(at.duration_since(sent).as_micros() as u64);
        committed.lock().unwrap().push(at);
        inserted.fetch_add(1, Ordering::SeqCst);
        rows += 1;
    }
    Written {
        rows,
        elapsed: started.elapsed(),
        commit_us,
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1_000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rows = env_number("CDC_BENCH_ROWS", 50_000);
    let txn_rows = env_number("CDC_BENCH_TXN_ROWS", 10).max(1);
    let seconds = env_number("CDC_BENCH_SECONDS", 60);
    let rate = env_number("CDC_BENCH_RATE", 100).max(1);
    let stop_s = env_number("CDC_BENCH_STOP_S", 60);
    let interval_ms = std::env::var("CDC_BENCH_INTERVAL_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    let batch = std::env::var("CDC_BENCH_BATCH")
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    let submit = std::env::var("CDC_BENCH_SUBMIT").is_ok_and(|v| v == "on");
    let machine = machine_line();
    println!("{machine}");

    let cluster = start_logical_cluster().await;
    let pg_version = cluster.version();
    println!("postgres: {pg_version} (fsync on, wal_level = logical), on loopback");
    let db = cluster.connect().await;
    db.batch_execute(&format!(
        "CREATE TABLE public.gifts (
             id bigserial PRIMARY KEY,
             amount numeric(12,2) NOT NULL,
             email text NOT NULL,
             given_at date NOT NULL DEFAULT current_date,
             updated_at timestamptz NOT NULL DEFAULT now());
         CREATE PUBLICATION {PUBLICATION} FOR TABLE public.gifts;"
    ))
    .await
    .expect("create the gift table and the publication");

    let engine = Engine::spawn(&[]).await;
    let mut source = json!({
        "dsn": cluster.dsn(), "mode": "logical", "slot": SLOT, "publication": PUBLICATION,
        "create_slot": true, "transaction_source": "Events DB", "amount_unit": "major",
        "tables": {"public.gifts": {"primary_key": ["id"], "kind": "gift",
            "fields": {"amount": "/amount", "contact.email": "/email", "giftDate": "/given_at"}}},
    });
    if let Some(interval_ms) = interval_ms {
        source["interval_ms"] = json!(interval_ms);
    }
    if let Some(batch) = batch {
        source["batch"] = json!(batch);
    }
    let hourly_limit = if submit { 1_000_000 } else { 1 };
    engine
        .admin(
            Method::POST,
            "/v1/tenants",
            Some(json!({
                "id": TENANT, "name": "CDC bench",
                "virtuous": {"base_url": "embedded", "api_key": support::api_key(TENANT)},
                "budget": {"hourly_limit": hourly_limit, "reserve_pct": 0},
                "sources": {"postgres": {SOURCE: source}},
            })),
        )
        .await;
    let mut bench = Bench {
        engine,
        cluster,
        db,
        base: 0,
        inserted: Arc::new(AtomicU64::new(0)),
    };

    // The slot created and the (empty) snapshot done: the stream is being read.
    let ready = support::wait_for(
        Duration::from_secs(60),
        "the source's slot and first read",
        || async {
            let poller = bench.poller().await;
            let position = &poller["position"];
            (position["lsn"].is_string()
                && position["snapshot"].is_null()
                && poller["source_status"].is_object())
            .then_some(poller)
        },
    )
    .await;
    let slot = bench.slot().await.expect("the slot exists");
    println!(
        "source `{SOURCE}` reading: position {}, slot {SLOT} ({}, confirmed_flush_lsn {}); interval_ms {}, batch {}; Virtuous budget {hourly_limit} calls/hour (submission {})",
        ready["position"],
        slot.wal_status,
        slot.confirmed_flush_lsn,
        interval_ms.map_or("default".to_string(), |v| v.to_string()),
        batch.map_or("default".to_string(), |v| v.to_string()),
        if submit { "on" } else { "kept out of the way" }
    );
    bench.base = bench.captured().await;

    // Warm-up: one entry per gift row (the definition of "ready" below relies on it).
    let warm = 100u64;
    for _ in 0..warm {
        let number = bench.inserted.fetch_add(1, Ordering::SeqCst) as i64 + 1;
        bench
            .db
            .execute(INSERT_ONE, &[&number])
            .await
            .expect("insert a warm-up row");
    }
    bench
        .wait_captured(
            bench.expected_captured(),
            Duration::from_secs(60),
            Duration::from_millis(20),
        )
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_warm = bench.captured().await;
    assert_eq!(
        after_warm,
        bench.expected_captured(),
        "{warm} warm-up rows must be {warm} captured entries (counts.captured from {})",
        bench.base
    );
    println!("warm-up: {warm} rows → {warm} captured entries");

    // 1. Throughput: a backlog in the slot, read after a resume.
    bench.poller_action("pause").await;
    support::wait_for(Duration::from_secs(60), "the poller paused", || async {
        (bench.poller().await["state"] == "paused").then_some(())
    })
    .await;
    // A page in flight when the pause came ends first: settled when the count stands still.
    let mut settled = bench.captured().await;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let now = bench.captured().await;
        if now == settled {
            break;
        }
        settled = now;
    }
    let loading = Instant::now();
    {
        let (loader, connection) =
            tokio_postgres::connect(&bench.cluster.dsn(), tokio_postgres::NoTls)
                .await
                .expect("connect the loader");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        // The load is not measured: commits need not wait for the disk.
        loader
            .batch_execute("SET synchronous_commit = off")
            .await
            .unwrap();
        let insert = loader
            .prepare(
                "INSERT INTO public.gifts (amount, email) \
                 SELECT (10 + g % 90)::numeric(12,2), 'donor' || g || '@bench.example' \
                 FROM generate_series($1::bigint, $2::bigint) g",
            )
            .await
            .unwrap();
        let mut loaded = 0u64;
        while loaded < rows {
            let n = txn_rows.min(rows - loaded);
            let first = bench.inserted.load(Ordering::SeqCst) as i64 + 1;
            let last = first + n as i64 - 1;
            loader
                .execute(&insert, &[&first, &last])
                .await
                .expect("load gift rows");
            bench.inserted.fetch_add(n, Ordering::SeqCst);
            loaded += n;
        }
    }
    let load_s = loading.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before_resume = bench.captured().await;
    let backlog_slot = bench.slot().await.unwrap_or_default();
    println!();
    println!(
        "1. backlog: {rows} rows committed in {} transactions of {txn_rows} in {load_s:.1} s while the poller was paused; slot lag {:.1} MiB; captured moved by {} while paused",
        rows.div_ceil(txn_rows),
        backlog_slot.lag_bytes as f64 / MIB,
        before_resume - settled
    );
    let target = bench.expected_captured();
    let metrics_before = bench.cdc_changes().await;
    let cpu_before = bench.cpu();
    let runs_before_resume = bench.poller().await["runs"].as_u64().unwrap_or(0);
    let resumed = Instant::now();
    bench.poller_action("resume").await;
    let mut first_seen: Option<Instant> = None;
    let mut last = before_resume;
    // How far the slot's restart_lsn trailed its confirmed_flush_lsn during the drain: a
    // peek (and an advance) decodes from restart_lsn.
    let mut restart_trail_max = 0i64;
    let mut polls = 0u64;
    let drained_at = loop {
        let now = bench.captured().await;
        if now > before_resume && first_seen.is_none() {
            first_seen = Some(Instant::now());
        }
        last = last.max(now);
        if last >= target {
            break Instant::now();
        }
        polls += 1;
        if polls % 25 == 0 {
            if let Some(slot) = bench.slot().await {
                restart_trail_max = restart_trail_max.max(slot.retained_bytes - slot.lag_bytes);
            }
        }
        assert!(
            resumed.elapsed() < Duration::from_secs(600),
            "section 1: captured {} of {rows} after 600 s; poller: {}",
            last - before_resume,
            bench.poller().await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let cpu_after = bench.cpu();
    let drain_s = drained_at.duration_since(resumed).as_secs_f64();
    let throughput = rows as f64 / drain_s;
    let first_s = first_seen.map_or(drain_s, |at| at.duration_since(resumed).as_secs_f64());
    let metrics_after = bench.cdc_changes().await;
    let metric_delta: Vec<String> = metrics_after
        .iter()
        .map(|(op, after)| {
            let before = metrics_before
                .iter()
                .find(|(o, _)| o == op)
                .map_or(0.0, |(_, v)| *v);
            format!("{op} +{:.0}", after - before)
        })
        .collect();
    let throughput_cpu = cpu_split(cpu_before, cpu_after);
    println!(
        "   resumed → {rows} captured in {drain_s:.2} s = {throughput:.0} changes/s (first entry {:.0} ms after the resume)",
        first_s * 1_000.0
    );
    println!("   {throughput_cpu}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (drain_runs, drain_pages, drain_fetched, drain_shown) =
        bench.runs_after(runs_before_resume).await;
    println!(
        "   poller: {drain_runs} run(s) since the resume ({drain_shown}), {drain_pages} pages, {drain_fetched} changes fetched: {:.0} changes and {:.0} ms a page; restart_lsn trailed confirmed_flush_lsn by up to {:.1} MiB during the drain",
        drain_fetched as f64 / drain_pages.max(1) as f64,
        drain_s * 1_000.0 / drain_pages.max(1) as f64,
        restart_trail_max as f64 / MIB
    );
    println!(
        "   steward_cdc_changes_total: {}",
        if metric_delta.is_empty() {
            "absent from /metrics".to_string()
        } else {
            metric_delta.join(", ")
        }
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        bench.captured().await,
        bench.expected_captured(),
        "section 1: each backlog row captured once"
    );

    // 2. Latency commit → entry ready at a steady rate.
    let section_base = bench.captured().await;
    let runs_before = bench.poller().await["runs"].as_u64().unwrap_or(0);
    let committed = Arc::new(Mutex::new(Vec::new()));
    let writer_done = Arc::new(AtomicBool::new(false));
    let cpu_before = bench.cpu();
    let writer = {
        let dsn = bench.cluster.dsn();
        let inserted = Arc::clone(&bench.inserted);
        let committed = Arc::clone(&committed);
        let writer_done = Arc::clone(&writer_done);
        tokio::spawn(async move {
            let written = steady_writer(
                dsn,
                rate,
                rate * seconds,
                Arc::new(AtomicBool::new(false)),
                inserted,
                committed,
            )
            .await;
            writer_done.store(true, Ordering::SeqCst);
            written
        })
    };
    let mut seen: Vec<Instant> = Vec::new();
    let mut status_us = new_histogram();
    let mut done_at: Option<Instant> = None;
    loop {
        let asked = Instant::now();
        let count = bench.captured().await.saturating_sub(section_base);
        let at = Instant::now();
        status_us.saturating_record(at.duration_since(asked).as_micros() as u64);
        while (seen.len() as u64) < count {
            seen.push(at);
        }
        if writer_done.load(Ordering::SeqCst) {
            let done = *done_at.get_or_insert(at);
            if seen.len() >= committed.lock().unwrap().len()
                || at.duration_since(done) > Duration::from_secs(120)
            {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let cpu_after = bench.cpu();
    let written = writer.await.expect("the writer");
    let committed = std::mem::take(&mut *committed.lock().unwrap());
    let mut latency = new_histogram();
    let mut early = 0u64;
    for (seen_at, committed_at) in seen.iter().zip(committed.iter()) {
        if seen_at < committed_at {
            early += 1;
        }
        latency.saturating_record(
            (seen_at.saturating_duration_since(*committed_at).as_micros() as u64).max(1),
        );
    }
    let never_seen = committed.len().saturating_sub(seen.len());
    let latency_cpu = cpu_split(cpu_before, cpu_after);
    println!();
    println!(
        "2. latency commit → entry ready: {} single-row commits at {rate}/s over {:.1} s ({:.1}/s achieved); commit round trip {}",
        written.rows,
        written.elapsed.as_secs_f64(),
        written.rows as f64 / written.elapsed.as_secs_f64(),
        summary_ms(&written.commit_us)
    );
    println!("   latency {}", summary_ms(&latency));
    println!(
        "   watcher: {} status reads ({}); {early} rows seen before their commit returned (recorded as 0); {never_seen} never seen",
        status_us.len(),
        summary_ms(&status_us)
    );
    println!("   {latency_cpu}");
    let runs_started = bench.poller().await["runs"].as_u64().unwrap_or(0) - runs_before;
    let (kept_runs, kept_pages, _, _) = bench.runs_after(runs_before).await;
    println!(
        "   poller: {runs_started} runs started over the section; the {kept_runs} kept read {kept_pages} pages ({:.1} a run)",
        kept_pages as f64 / kept_runs.max(1) as f64
    );
    assert_eq!(never_seen, 0, "section 2: every committed row captured");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        bench.captured().await,
        bench.expected_captured(),
        "section 2: each row captured once"
    );

    // 3. WAL retained while Steward is stopped, and the catch-up after its restart.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(steady_writer(
        bench.cluster.dsn(),
        rate,
        u64::MAX,
        Arc::clone(&stop),
        Arc::clone(&bench.inserted),
        Arc::new(Mutex::new(Vec::new())),
    ));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before_stop = bench.slot().await.unwrap_or_default();
    let duplicates_before = bench.duplicates().await;
    let stopping = Instant::now();
    tokio::task::block_in_place(|| bench.engine.stop());
    let stop_took = stopping.elapsed();
    let rows_at_stop = bench.inserted.load(Ordering::SeqCst);
    let stopped_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(stop_s)).await;
    let stopped = bench
        .slot()
        .await
        .expect("the slot while Steward is stopped");
    let rows_at_restart = bench.inserted.load(Ordering::SeqCst);
    let stopped_for = stopped_at.elapsed();
    let restarting = Instant::now();
    bench.engine.restart().await;
    let ready_s = restarting.elapsed().as_secs_f64();
    let target = bench.base + rows_at_restart;
    let mut lag_under_at: Option<Instant> = None;
    let mut count_at: Option<Instant> = None;
    let mut after: Slot;
    let caught_up = loop {
        let now = Instant::now();
        if count_at.is_none() && bench.captured().await >= target {
            count_at = Some(now);
        }
        after = bench.slot().await.unwrap_or_default();
        if (0..CAUGHT_UP_LAG_BYTES).contains(&after.lag_bytes) {
            lag_under_at.get_or_insert(now);
        } else {
            lag_under_at = None;
        }
        if let (Some(count), Some(lag)) = (count_at, lag_under_at) {
            break count.max(lag);
        }
        assert!(
            restarting.elapsed() < Duration::from_secs(600),
            "section 3: not caught up 600 s after the restart: slot {after:?}, captured {} of {}; poller: {}",
            bench.captured().await.saturating_sub(bench.base),
            rows_at_restart,
            bench.poller().await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    stop.store(true, Ordering::SeqCst);
    let tail = writer.await.expect("the writer");
    let catch_up_s = caught_up.duration_since(restarting).as_secs_f64();
    let count_s = count_at.map_or(catch_up_s, |at| at.duration_since(restarting).as_secs_f64());
    let lag_s = lag_under_at.map_or(catch_up_s, |at| at.duration_since(restarting).as_secs_f64());
    let backlog = rows_at_restart - rows_at_stop;
    let catch_up_rate = backlog as f64 / count_s.max(0.001);
    bench
        .wait_captured(
            bench.expected_captured(),
            Duration::from_secs(120),
            Duration::from_millis(20),
        )
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let final_captured = bench.captured().await;
    let duplicates = bench.duplicates().await - duplicates_before;
    let poller = bench.poller().await;
    println!();
    println!(
        "3. Steward stopped (SIGTERM took {:.2} s) for {:.1} s while {rate} rows/s went on: {backlog} rows committed meanwhile",
        stop_took.as_secs_f64(),
        stopped_for.as_secs_f64()
    );
    println!(
        "   slot before the stop: lag {} B; just before the restart: pg_current_wal_lsn() − confirmed_flush_lsn = {} B ({:.2} MiB), − restart_lsn = {} B ({:.2} MiB), wal_status {}",
        before_stop.lag_bytes,
        stopped.lag_bytes,
        stopped.lag_bytes as f64 / MIB,
        stopped.retained_bytes,
        stopped.retained_bytes as f64 / MIB,
        stopped.wal_status
    );
    println!(
        "   restart: /readyz after {ready_s:.2} s; the {backlog} rows captured {count_s:.2} s after exec ({catch_up_rate:.0} changes/s), slot lag under 1 MiB after {lag_s:.2} s (now {} B); both: {catch_up_s:.2} s",
        after.lag_bytes
    );
    println!(
        "   duplicates counted after the restart: {duplicates}; writer committed {} rows in this section; poller position {}, source_status {}",
        tail.rows, poller["position"], poller["source_status"]
    );
    assert_eq!(
        final_captured,
        bench.expected_captured(),
        "section 3: each row captured once across the restart"
    );

    // The table of numbers.
    let inserted = bench.inserted.load(Ordering::SeqCst);
    println!();
    println!("CDC benchmark (issue 18) — {machine}");
    println!(
        "{pg_version}, fsync on, wal_level = logical; steward serve (release), embedded sandbox, Virtuous budget {hourly_limit}/hour; source interval_ms {}, batch {}",
        interval_ms.map_or("default".to_string(), |v| v.to_string()),
        batch.map_or("default".to_string(), |v| v.to_string()),
    );
    println!();
    println!("| measure | result |");
    println!("|---|---|");
    println!(
        "| throughput slot → durable queue: {rows} rows pre-loaded while paused ({txn_rows} rows a transaction) | **{throughput:.0} changes/s** ({drain_s:.2} s; first entry after {:.0} ms); {throughput_cpu} |",
        first_s * 1_000.0
    );
    println!(
        "| latency commit → entry ready, {rate} single-row commits/s for {seconds} s | **p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms** (p99.9 {:.1} ms, n = {}); {latency_cpu} |",
        ms(latency.value_at_quantile(0.50)),
        ms(latency.value_at_quantile(0.99)),
        ms(latency.max()),
        ms(latency.value_at_quantile(0.999)),
        latency.len()
    );
    println!(
        "| WAL retained, Steward stopped {:.0} s at {rate} commits/s | **{:.2} MiB** ({} B confirmed_flush lag; {:.2} MiB from restart_lsn; {backlog} rows) |",
        stopped_for.as_secs_f64(),
        stopped.lag_bytes as f64 / MIB,
        stopped.lag_bytes,
        stopped.retained_bytes as f64 / MIB
    );
    println!(
        "| catch-up after restart (exec → lag < 1 MiB and backlog captured, load going on) | **{catch_up_s:.2} s** (/readyz {ready_s:.2} s; backlog {backlog} rows at {catch_up_rate:.0} changes/s from exec) |"
    );
    println!();
    println!(
        "load average at the end: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "checked: {inserted} rows committed = {} entries captured; {duplicates} duplicates after the restart",
        final_captured - bench.base
    );
}
