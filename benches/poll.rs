//! Polling benchmark (issue 12): poll 100,000 Constant Contact contacts from the simulator.
//!
//! - Wall time of the run (its report's start → end) against the quota bound
//!   `contacts ÷ 500 per page ÷ 4 requests/s`; the target is ≥ 90 % of the bound's pace.
//! - Engine CPU per 1,000 contacts (the engine process's user + system time during the run;
//!   the Constant Contact simulator runs in its own process, `steward sandbox`, so its CPU is
//!   not counted; the embedded Virtuous sandbox receiving the contacts is).
//! - Pattern-1 ack p99 at 200 signed Stripe events/s (open loop): a baseline window before
//!   the poll, then the same load while the poll runs; the target is a move of at most 20 %.
//!
//! Sizes: `STEWARD_BENCH_CONTACTS` (100,000), `STEWARD_BENCH_RATE` (200 events/s),
//! `STEWARD_BENCH_BASELINE_S` (20 s).

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{cpu_ms, env_number, new_histogram, summary_ms, Engine, SandboxProcess};

const STRIPE_TENANT: &str = "acks";
const CC_TENANT: &str = "cc-bench";

/// Sends distinct signed events at `rate`/s until `keep_going` turns false (or `max` are
/// sent); returns the ack latency histogram and the statuses.
async fn open_loop(
    engine: &Engine,
    run: &str,
    rate: u64,
    keep_going: Arc<std::sync::atomic::AtomicBool>,
    max: u64,
) -> (
    hdrhistogram::Histogram<u64>,
    std::collections::BTreeMap<u16, u64>,
) {
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let started = Instant::now();
    let mut tasks = Vec::new();
    let mut n = 0u64;
    while keep_going.load(std::sync::atomic::Ordering::Relaxed) && n < max {
        tokio::time::sleep_until((started + interval * n as u32).into()).await;
        let event = support::charge_succeeded(STRIPE_TENANT, run, n, 2_048);
        let client = engine.client.clone();
        let url = format!("{}/hooks/{STRIPE_TENANT}/stripe", engine.main_url);
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let status = support::post_event(&client, &url, &event).await;
            (status, sent.elapsed().as_micros() as u64)
        }));
        n += 1;
    }
    let mut histogram = new_histogram();
    let mut statuses = std::collections::BTreeMap::new();
    for task in tasks {
        let (status, micros) = task.await.unwrap();
        histogram.saturating_record(micros);
        *statuses.entry(status).or_insert(0u64) += 1;
    }
    (histogram, statuses)
}

async fn json_call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> Value {
    let mut request = client.request(method.clone(), url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("call");
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    assert!(status.is_success(), "{method} {url} → {status}: {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

#[actix_web::main]
async fn main() {
    let contacts = env_number("STEWARD_BENCH_CONTACTS", 100_000);
    let rate = env_number("STEWARD_BENCH_RATE", 200);
    let baseline_s = env_number("STEWARD_BENCH_BASELINE_S", 20);

    let cc = SandboxProcess::spawn();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap();
    let control = format!("{}/_sandbox/constant-contact/accounts", cc.url);
    json_call(
        &client,
        reqwest::Method::POST,
        &control,
        Some(
            json!({"id": "bench", "client_id": "bench-client", "client_secret": "bench-secret",
                    "refresh_token": "bench-refresh", "refresh_token_kind": "long_lived"}),
        ),
    )
    .await;
    let generating = Instant::now();
    let mut left = contacts;
    while left > 0 {
        let count = left.min(100_000);
        json_call(
            &client,
            reqwest::Method::POST,
            &format!("{control}/bench/contacts"),
            Some(json!({"generate": {"count": count, "list_memberships": ["list-a"]}})),
        )
        .await;
        left -= count;
    }
    println!(
        "poll bench: {contacts} contacts generated in the simulator in {:.1} s",
        generating.elapsed().as_secs_f64()
    );

    let engine = Engine::spawn(&[]).await;
    engine
        .create_tenant_with_org(STRIPE_TENANT, 1_000_000, 10)
        .await;
    let api_key = support::api_key(CC_TENANT);
    engine
        .sandbox(
            reqwest::Method::POST,
            "/_sandbox/orgs",
            Some(json!({"id": CC_TENANT, "api_key": api_key, "hourly_limit": 5_000})),
        )
        .await;
    engine
        .admin(
            reqwest::Method::POST,
            "/v1/tenants",
            Some(json!({
                "id": CC_TENANT, "name": "Poll bench",
                "virtuous": {"base_url": engine.sandbox_url, "api_key": api_key},
                "sources": {"constant_contact": {
                    "base_url": format!("{}/constant-contact", cc.url),
                    "token_url": format!("{}/constant-contact/oauth2/default/v1/token", cc.url),
                    "client_id": "bench-client", "client_secret": "bench-secret",
                    "refresh_token": "bench-refresh"}},
            })),
        )
        .await;

    // Baseline: pattern-1 acks with no poll running.
    let always = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let baseline_cpu_before = cpu_ms(engine.pid());
    let baseline_started = Instant::now();
    let (baseline, baseline_statuses) = open_loop(
        &engine,
        "base",
        rate,
        Arc::clone(&always),
        rate * baseline_s,
    )
    .await;
    // The Stripe load's own CPU per second, to take out of the poll window's.
    let load_cpu_ms_per_s = cpu_ms(engine.pid()).saturating_sub(baseline_cpu_before) as f64
        / baseline_started.elapsed().as_secs_f64();

    // The poll, with the same load beside it.
    let cpu_before = cpu_ms(engine.pid());
    let poll_started = Instant::now();
    engine
        .admin(
            reqwest::Method::POST,
            &format!("/v1/tenants/{CC_TENANT}/pollers/constant_contact/run"),
            None,
        )
        .await;
    let polling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let load = open_loop(&engine, "during", rate, Arc::clone(&polling), u64::MAX);
    let watch = async {
        let report = support::wait_for(Duration::from_secs(3_600), "the poll run", || {
            let engine = &engine;
            async move {
                let runs = engine
                    .admin(
                        reqwest::Method::GET,
                        &format!("/v1/tenants/{CC_TENANT}/pollers/constant_contact/runs?limit=1"),
                        None,
                    )
                    .await;
                let run = runs["runs"].get(0)?.clone();
                (run["outcome"] != "running" && run["finished_at"].is_string()).then_some(run)
            }
        })
        .await;
        polling.store(false, std::sync::atomic::Ordering::Relaxed);
        report
    };
    let ((during, during_statuses), report) = tokio::join!(load, watch);
    let cpu_after = cpu_ms(engine.pid());
    let window_s = poll_started.elapsed().as_secs_f64();

    let parse = |text: &Value| -> f64 {
        text.as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map(|t| t.as_millisecond() as f64 / 1_000.0)
            .unwrap_or(0.0)
    };
    let wall_s = parse(&report["finished_at"]) - parse(&report["started_at"]);
    let bound_s = contacts as f64 / 500.0 / 4.0;
    let fetched = report["fetched"].as_u64().unwrap_or(0);
    let cpu_ms_used = cpu_after.saturating_sub(cpu_before) as f64;
    let poll_cpu_ms = (cpu_ms_used - load_cpu_ms_per_s * window_s).max(0.0);
    let p99 = |h: &hdrhistogram::Histogram<u64>| h.value_at_quantile(0.99) as f64 / 1_000.0;
    println!("machine: {}", support::machine());
    println!(
        "poll run: outcome {}, pages {}, fetched {fetched}, new {}, calls {}, throttled {}",
        report["outcome"], report["pages"], report["new"], report["calls"], report["throttled"]
    );
    println!(
        "wall {wall_s:.1} s vs quota bound {bound_s:.1} s ({contacts} ÷ 500 ÷ 4/s): {:.1} % of the bound's pace (target ≥ 90 %)",
        bound_s / wall_s.max(0.001) * 100.0
    );
    println!(
        "engine CPU during the run: {:.1} s in {window_s:.1} s; the Stripe load alone used {load_cpu_ms_per_s:.0} ms/s in the baseline, so polling used {:.1} s: {:.1} ms per 1,000 contacts (fetch, map, write, flush, and submitting them to the embedded Virtuous sandbox as the budget allows)",
        cpu_ms_used / 1_000.0,
        poll_cpu_ms / 1_000.0,
        poll_cpu_ms / (fetched.max(1) as f64 / 1_000.0)
    );
    println!(
        "acks, baseline ({baseline_s} s): {} {baseline_statuses:?}",
        summary_ms(&baseline)
    );
    println!(
        "acks, during the poll:   {} {during_statuses:?}",
        summary_ms(&during)
    );
    println!(
        "pattern-1 ack p99 moved {:+.1} % while polling (target ≤ +20 %)",
        (p99(&during) / p99(&baseline).max(0.001) - 1.0) * 100.0
    );
    assert_eq!(
        report["outcome"], "completed",
        "the poll run did not complete"
    );
    assert_eq!(fetched, contacts, "every contact fetched");
}
