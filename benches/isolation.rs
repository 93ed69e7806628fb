//! Isolation benchmark (issue 4): a failing tenant must not hurt a healthy one.
//!
//! The real release binary with the embedded sandbox and a 10 ms retry schedule
//! (`["10ms", …]`). Healthy tenant: high limit (1,000,000/h, the most a tenant may set), its org answers normally, so it
//! is engine-bound. Failing tenant: its org answers `503` to every API call, forever
//! (random `error_5xx_rate` 1.0). Load: closed loop, `STEWARD_BENCH_CONNECTIONS` (default 64)
//! concurrent senders per tenant that has traffic, distinct ~2 KB signed events.
//!
//! Solo: the healthy tenant alone (the failing tenant exists but gets no traffic). Shared: both
//! get traffic at once. Each configuration runs 3 times (a fresh engine each); the medians are
//! compared. Throughput = the healthy tenant's `202`s per second, and its p99 ack latency; the
//! healthy tenant's gifts must all reach the sandbox. Targets: shared throughput ≥ 90 % and
//! p99 ≤ 2× the solo baseline; the failing tenant's queue stays ≤ what it was sent and its
//! mailboxes within `runtime.mailbox_capacity`.

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use support::{closed_loop, env_number, Engine};

const HEALTHY: &str = "healthy";
const FAILING: &str = "failing";
const MAILBOX_CAPACITY: u64 = 1_024;

struct RunResult {
    events_per_s: f64,
    p99_ms: f64,
    failing_queue_max: u64,
    failing_mailbox_max: u64,
    failing_dead: u64,
}

async fn run(shared: bool, events: u64, connections: usize, run: usize) -> RunResult {
    let engine = Engine::spawn(&[
        (
            "STEWARD_SUBMITTER__RETRY_SCHEDULE",
            r#"["10ms", "10ms", "10ms", "10ms", "10ms"]"#,
        ),
        ("STEWARD_RUNTIME__MAILBOX_CAPACITY", "1024"),
    ])
    .await;
    engine.create_tenant_with_org(HEALTHY, 1_000_000, 10).await;
    engine.create_tenant_with_org(FAILING, 1_000_000, 10).await;
    engine
        .sandbox(
            reqwest::Method::PUT,
            &format!("/_sandbox/orgs/{FAILING}/faults"),
            Some(json!({"error_5xx_rate": 1.0})),
        )
        .await;
    let tag = format!("r{run}{}", if shared { "s" } else { "o" });
    let healthy_events: Vec<_> = (0..events)
        .map(|n| support::charge_succeeded(HEALTHY, &tag, n, 2_048))
        .collect();
    let failing_events: Vec<_> = (0..events)
        .map(|n| support::charge_succeeded(FAILING, &tag, n, 2_048))
        .collect();

    // Watch the failing tenant's queue and mailboxes while the load runs.
    let watching = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let watching = Arc::clone(&watching);
        let client = engine.client.clone();
        let url = format!("{}/v1/tenants/{FAILING}", engine.admin_url);
        tokio::spawn(async move {
            let (mut queue_max, mut mailbox_max) = (0u64, 0u64);
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(response) = client
                    .get(&url)
                    .bearer_auth(support::ADMIN_TOKEN)
                    .send()
                    .await
                {
                    if let Ok(status) = response.json::<serde_json::Value>().await {
                        let queued: u64 = ["live", "retry", "reconcile", "backfill"]
                            .iter()
                            .map(|lane| support::lane_depth(&status, lane))
                            .sum();
                        queue_max = queue_max.max(queued);
                        if let Some(actors) = status["actors"].as_object() {
                            for actor in actors.values() {
                                mailbox_max =
                                    mailbox_max.max(actor["mailbox_depth"].as_u64().unwrap_or(0));
                            }
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (queue_max, mailbox_max)
        })
    };

    let healthy = closed_loop(&engine, HEALTHY, Arc::new(healthy_events), connections);
    let ((statuses, histogram, elapsed), _) = if shared {
        let failing = closed_loop(&engine, FAILING, Arc::new(failing_events), connections);
        let (healthy, failing) = tokio::join!(healthy, failing);
        (healthy, Some(failing.0))
    } else {
        (healthy.await, None)
    };
    let accepted = statuses.get(&202).copied().unwrap_or(0);
    assert_eq!(accepted, events, "healthy answers: {statuses:?}");
    // Every healthy gift reaches the sandbox (end to end, not only acknowledged).
    support::wait_for(
        Duration::from_secs(120),
        "healthy gifts in the sandbox",
        || {
            let engine = &engine;
            async move {
                let stats = engine.sandbox_stats(HEALTHY).await;
                (stats["transactions_received"].as_u64() == Some(events)).then_some(())
            }
        },
    )
    .await;
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    let (failing_queue_max, failing_mailbox_max) = watcher.await.unwrap();
    let failing_status = engine.status(FAILING).await;
    RunResult {
        events_per_s: accepted as f64 / elapsed.as_secs_f64(),
        p99_ms: histogram.value_at_quantile(0.99) as f64 / 1_000.0,
        failing_queue_max,
        failing_mailbox_max,
        failing_dead: failing_status["counts"]["dead"].as_u64().unwrap_or(0),
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[values.len() / 2]
}

#[tokio::main]
async fn main() {
    let events = env_number("STEWARD_BENCH_EVENTS", 20_000);
    let connections = env_number("STEWARD_BENCH_CONNECTIONS", 64) as usize;
    let runs = env_number("STEWARD_BENCH_RUNS", 3) as usize;
    println!("isolation benchmark — machine: {}", support::machine());
    let mut solo = Vec::new();
    let mut shared = Vec::new();
    for run_index in 0..runs {
        let result = run(false, events, connections, run_index).await;
        println!(
            "  solo   run {run_index}: {:.0} events/s, p99 {:.2} ms",
            result.events_per_s, result.p99_ms
        );
        solo.push(result);
        let result = run(true, events, connections, run_index).await;
        println!(
            "  shared run {run_index}: {:.0} events/s, p99 {:.2} ms; failing tenant: queue max {}, mailbox max {}, dead letters {}",
            result.events_per_s, result.p99_ms, result.failing_queue_max, result.failing_mailbox_max, result.failing_dead
        );
        shared.push(result);
    }
    let solo_rate = median(solo.iter().map(|r| r.events_per_s).collect());
    let solo_p99 = median(solo.iter().map(|r| r.p99_ms).collect());
    let shared_rate = median(shared.iter().map(|r| r.events_per_s).collect());
    let shared_p99 = median(shared.iter().map(|r| r.p99_ms).collect());
    println!(
        "  median solo {solo_rate:.0} events/s p99 {solo_p99:.2} ms; median shared {shared_rate:.0} events/s p99 {shared_p99:.2} ms"
    );
    println!(
        "  healthy throughput shared/solo {:.1} % (target ≥ 90 %), p99 shared/solo {:.2}× (target ≤ 2×)",
        100.0 * shared_rate / solo_rate,
        shared_p99 / solo_p99
    );
    for result in &shared {
        assert!(
            result.failing_queue_max <= events,
            "failing queue exceeded what it was sent"
        );
        assert!(
            result.failing_mailbox_max <= MAILBOX_CAPACITY,
            "a failing tenant's mailbox exceeded its capacity"
        );
    }
}
