//! Backfill benchmark (pattern 5): how close a large backfill comes to the quota bound while
//! live payments keep flowing, and the engine's memory while it takes a 1 GiB file.
//!
//! The release `steward serve` with the embedded sandbox, on loopback — nothing mocked.
//!
//! a. **Throughput against the bound.** A Stripe payments export of `STEWARD_BENCH_PAYMENTS`
//!    (100,000) plain payments (one gift each) is uploaded, dry-run and run at an allowance
//!    of `STEWARD_BENCH_HOURLY` (360,000 → 324,000 after the 10 % reserve: 90 calls a
//!    second) while live `charge.succeeded` events arrive at `STEWARD_BENCH_LIVE_RATE` (20)
//!    a second. The bound is every call the run's interval needed (the backfill's gift
//!    batches and the live calls, from the sandbox's request log) at the allowance's pace;
//!    the ratio is bound ÷ measured. Live ack → sent (the gift request reaching the
//!    sandbox) p50/p99, alone (before the run) and during it.
//!    At the product's default (4,500 calls an hour), 100,000 gifts are 1,000 calls: 13.3
//!    min at 100 a call, ≈ 22 h as single calls.
//! b. **Memory.** A `STEWARD_BENCH_FILE_MB` (1,024) MiB export is uploaded and dry-run; the
//!    engine's peak RSS (`VmHWM`) before and after, and the rows per second of the dry run.

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::Method;
use serde_json::{json, Value};
use steward::traffic::stripe_export::{generate_export, ExportOptions};
use support::{cpu_ms, env_number, Engine};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn plain_export(seed: u64, payments: usize) -> Vec<u8> {
    generate_export(&ExportOptions {
        seed,
        payments,
        failed_share: 0.0,
        uncaptured_share: 0.0,
        retried_share: 0.0,
        full_refund_share: 0.0,
        partial_refund_share: 0.0,
        dispute_share: 0.0,
        bad_row_share: 0.0,
        live_share: 0.0,
        ..ExportOptions::default()
    })
    .bytes
}

/// `VmHWM` (peak resident set) and `VmRSS` of a process, in MiB.
fn memory_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmHWM:"), field("VmRSS:"))
}

async fn create_job(engine: &Engine, tenant: &str, label: &str, bytes: Vec<u8>) -> String {
    let job = engine
        .admin(
            Method::POST,
            &format!("/v1/tenants/{tenant}/backfills"),
            Some(json!({"source": "stripe", "format": "csv",
                        "mapping": "stripe_payments_export", "label": label})),
        )
        .await;
    let id = job["id"].as_str().unwrap().to_string();
    let answer = engine
        .client
        .put(format!(
            "{}/v1/tenants/{tenant}/backfills/{id}/file",
            engine.admin_url
        ))
        .bearer_auth(support::ADMIN_TOKEN)
        .header("Content-Type", "text/csv")
        .body(bytes)
        .timeout(Duration::from_secs(600))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "{}", answer.text().await.unwrap());
    id
}

async fn job(engine: &Engine, tenant: &str, id: &str) -> Value {
    engine
        .admin(
            Method::GET,
            &format!("/v1/tenants/{tenant}/backfills/{id}"),
            None,
        )
        .await
}

async fn wait_state(
    engine: &Engine,
    tenant: &str,
    id: &str,
    state: &str,
    timeout: Duration,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let view = job(engine, tenant, id).await;
        assert_ne!(view["state"], "failed", "{view}");
        if view["state"] == state {
            return view;
        }
        assert!(Instant::now() < deadline, "{id} not {state}: {view}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// transactionId → arrival (Unix ms) of its first gift request, and the gift requests.
async fn request_log(engine: &Engine, tenant: &str) -> (BTreeMap<String, u64>, Vec<(u64, usize)>) {
    let requests = engine
        .sandbox(
            Method::GET,
            &format!("/_sandbox/orgs/{tenant}/requests"),
            None,
        )
        .await;
    let mut first = BTreeMap::new();
    let mut calls = Vec::new();
    for request in requests.as_array().unwrap() {
        let at_ms = request["at_ms"].as_u64().unwrap();
        let ids = request["transaction_ids"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !ids.is_empty() {
            calls.push((at_ms, ids.len()));
        }
        for id in ids {
            first
                .entry(id.as_str().unwrap().to_string())
                .or_insert(at_ms);
        }
    }
    (first, calls)
}

/// Sends live events at `rate` a second until `stop`; (transactionId, ack time) each.
async fn live_traffic(
    engine: &Engine,
    tenant: &str,
    run: &str,
    rate: u64,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    max: u64,
) -> Vec<(String, u64)> {
    let url = format!("{}/hooks/{tenant}/stripe", engine.main_url);
    let gap = Duration::from_micros(1_000_000 / rate.max(1));
    let mut acked = Vec::new();
    let mut n = 0;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) && n < max {
        let event = support::charge_succeeded(tenant, run, n, 1_500);
        let status = support::post_event(&engine.client, &url, &event).await;
        assert_eq!(status, 202, "live event {n}");
        acked.push((event.transaction_id.clone(), now_ms()));
        n += 1;
        tokio::time::sleep(gap).await;
    }
    acked
}

fn latency_summary(acked: &[(String, u64)], first: &BTreeMap<String, u64>) -> (u64, u64, usize) {
    let mut latencies: Vec<u64> = acked
        .iter()
        .filter_map(|(id, at)| first.get(id).map(|sent| sent.saturating_sub(*at)))
        .collect();
    latencies.sort_unstable();
    let pick = |pct: f64| {
        latencies
            .get(((latencies.len() as f64 * pct).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(0)
    };
    (pick(0.50), pick(0.99), latencies.len())
}

#[tokio::main]
async fn main() {
    let payments = env_number("STEWARD_BENCH_PAYMENTS", 100_000) as usize;
    let hourly = env_number("STEWARD_BENCH_HOURLY", 360_000);
    let live_rate = env_number("STEWARD_BENCH_LIVE_RATE", 20);
    let file_mb = env_number("STEWARD_BENCH_FILE_MB", 1_024);
    println!("backfill benchmark on {}", support::machine());

    // a. Throughput against the bound, with live traffic.
    let engine = Engine::spawn(&[]).await;
    let tenant = "backfill";
    engine
        .create_tenant_with_org_spec(tenant, hourly, 10, json!({"processing": "immediate"}))
        .await;
    let allowance = hourly * 9 / 10;
    let generated = Instant::now();
    let bytes = plain_export(5, payments);
    println!(
        "a. export: {payments} payments, {:.1} MiB, generated in {:.1} s",
        bytes.len() as f64 / 1_048_576.0,
        generated.elapsed().as_secs_f64()
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Live alone: 10 s.
    let solo = live_traffic(
        &engine,
        tenant,
        "solo",
        live_rate,
        stop.clone(),
        live_rate * 10,
    )
    .await;
    let uploaded = Instant::now();
    let id = create_job(&engine, tenant, "bench-history", bytes).await;
    let ready = wait_state(&engine, tenant, &id, "ready", Duration::from_secs(600)).await;
    let dry_s = uploaded.elapsed().as_secs_f64();
    let calls_needed = ready["dry_run"]["calls_needed"].as_u64().unwrap();
    println!(
        "a. upload + dry run: {dry_s:.1} s ({:.0} rows/s); calls needed {calls_needed}, hours at the allowance {}",
        ready["dry_run"]["rows"].as_f64().unwrap() / dry_s,
        ready["dry_run"]["hours_needed"]
    );
    let during_stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let cpu_before = cpu_ms(engine.pid());
    let started = Instant::now();
    let started_ms = now_ms();
    engine
        .admin(
            Method::POST,
            &format!("/v1/tenants/{tenant}/backfills/{id}/start"),
            None,
        )
        .await;
    let live = {
        let engine_ref = &engine;
        let stop = during_stop.clone();
        async move { live_traffic(engine_ref, tenant, "during", live_rate, stop, u64::MAX).await }
    };
    let watcher = async {
        let done = wait_state(&engine, tenant, &id, "done", Duration::from_secs(7_200)).await;
        during_stop.store(true, std::sync::atomic::Ordering::SeqCst);
        done
    };
    let (during, done) = tokio::join!(live, watcher);
    let elapsed = started.elapsed().as_secs_f64();
    let ended_ms = now_ms();
    let cpu_engine = cpu_ms(engine.pid()) - cpu_before;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (first, calls) = request_log(&engine, tenant).await;
    let calls_in_run = calls
        .iter()
        .filter(|(at, _)| (started_ms..=ended_ms).contains(at))
        .count() as u64;
    let bound_s = calls_in_run as f64 * 3_600.0 / allowance as f64;
    let (solo_p50, solo_p99, solo_n) = latency_summary(&solo, &first);
    let (during_p50, during_p99, during_n) = latency_summary(&during, &first);
    println!(
        "a. run: {payments} gifts in {elapsed:.1} s; {calls_in_run} calls in the interval (backfill {} + live); quota bound {bound_s:.1} s at {allowance} calls/h → ratio {:.1} %; engine CPU {:.1} s",
        done["progress"]["queued"],
        100.0 * bound_s / elapsed,
        cpu_engine as f64 / 1_000.0
    );
    println!(
        "a. live ack → sent: alone p50 {solo_p50} ms p99 {solo_p99} ms (n = {solo_n}); during the backfill p50 {during_p50} ms p99 {during_p99} ms (n = {during_n})"
    );
    let per_call = payments as f64 / calls_needed.max(1) as f64;
    println!(
        "a. at 4,500 calls/h: {:.1} min at {per_call:.0} gifts a call; {:.1} h as single calls",
        calls_needed as f64 * 3_600.0 / 4_500.0 / 60.0,
        payments as f64 / 4_500.0
    );
    drop(engine);

    // b. Memory while a 1 GiB file is uploaded and dry-run.
    let engine = Engine::spawn(&[]).await;
    engine
        .create_tenant_with_org_spec("memory", 5_000, 10, json!({}))
        .await;
    let target = (file_mb as usize) << 20;
    let per_payment = plain_export(1, 1_000).len() / 1_000;
    let generated = Instant::now();
    let big = plain_export(9, target / per_payment.max(1));
    println!(
        "b. export: {:.0} MiB, {} rows, generated in {:.1} s",
        big.len() as f64 / 1_048_576.0,
        big.len() / per_payment.max(1),
        generated.elapsed().as_secs_f64()
    );
    let (hwm_before, _) = memory_mib(engine.pid());
    let started = Instant::now();
    let id = create_job(&engine, "memory", "bench-memory", big).await;
    let uploaded_s = started.elapsed().as_secs_f64();
    let (hwm_upload, _) = memory_mib(engine.pid());
    let ready = wait_state(&engine, "memory", &id, "ready", Duration::from_secs(3_600)).await;
    let dry_s = started.elapsed().as_secs_f64() - uploaded_s;
    let (hwm_after, rss_after) = memory_mib(engine.pid());
    println!(
        "b. upload {uploaded_s:.1} s; dry run {dry_s:.1} s ({:.0} rows/s); engine peak RSS {hwm_before:.0} MiB before, {hwm_upload:.0} MiB after the upload, {hwm_after:.0} MiB after the dry run (RSS now {rss_after:.0} MiB)",
        ready["dry_run"]["rows"].as_f64().unwrap() / dry_s
    );
}
