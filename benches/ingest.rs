//! Ingest benchmark (issue 4): how fast Steward durably queues Stripe webhooks.
//!
//! The real release binary on loopback; one tenant with its submitter paused (so only capture
//! works); distinct ~2 KB `charge.succeeded` events, signed before the clock starts; closed
//! loop with `STEWARD_BENCH_CONNECTIONS` (default 64) connections; the load generator runs in
//! this process on the same machine (it competes with the engine for the 2 cores).
//! Each `202` means "durably queued" (group commit flushed). Target: ≥ 20,000 events/s with
//! p99 ack ≤ 20 ms.
//!
//! Asserts the work was done: entries queued (status `lanes.live.depth` and
//! `counts.captured`) == `202` answers, and no other answer.
//!
//! `STEWARD_BENCH_EVENTS` (default 60000), `STEWARD_BENCH_EVENT_BYTES` (default 2048).

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use support::{closed_loop, env_number, lane_depth, summary_ms, Engine};

const TENANT: &str = "ingest";

#[tokio::main]
async fn main() {
    let events = env_number("STEWARD_BENCH_EVENTS", 60_000);
    let connections = env_number("STEWARD_BENCH_CONNECTIONS", 64) as usize;
    let event_bytes = env_number("STEWARD_BENCH_EVENT_BYTES", 2_048) as usize;

    // `STEWARD_BENCH_MAX_IN_FLIGHT`: the engine's `ingress.max_in_flight_alone` (one tenant
    // takes all the load here; at least `max_in_flight_per_tenant`), to measure the cap's cost.
    let in_flight = std::env::var("STEWARD_BENCH_MAX_IN_FLIGHT").ok();
    let settings: Vec<(&str, &str)> = in_flight
        .as_deref()
        .map(|cap| vec![("STEWARD_INGRESS__MAX_IN_FLIGHT_ALONE", cap)])
        .unwrap_or_default();
    let engine = Engine::spawn(&settings).await;
    engine.create_tenant_with_org(TENANT, 5_000, 10).await;
    engine
        .admin(
            reqwest::Method::POST,
            &format!("/v1/tenants/{TENANT}/pause"),
            None,
        )
        .await;

    // Warm-up: connections, allocator, sled's first pages (not measured, not counted below).
    let warmup: Vec<_> = (0..2_000)
        .map(|n| support::charge_succeeded(TENANT, "warm", n, event_bytes))
        .collect();
    let (warm_statuses, _, _) = closed_loop(&engine, TENANT, Arc::new(warmup), connections).await;
    let warm_queued = warm_statuses.get(&202).copied().unwrap_or(0);

    let signed: Vec<_> = (0..events)
        .map(|n| support::charge_succeeded(TENANT, "run", n, event_bytes))
        .collect();
    let body_bytes = signed[0].body.len();
    let (flush_s_before, flushes_before) =
        engine.histogram_totals("steward_store_flush_seconds").await;
    let (batched_before, _) = engine
        .histogram_totals("steward_store_flush_batch_size")
        .await;
    let (statuses, histogram, elapsed) =
        closed_loop(&engine, TENANT, Arc::new(signed), connections).await;
    let (flush_s_after, flushes_after) =
        engine.histogram_totals("steward_store_flush_seconds").await;
    let (batched_after, _) = engine
        .histogram_totals("steward_store_flush_batch_size")
        .await;
    let flushes = flushes_after - flushes_before;

    let accepted = statuses.get(&202).copied().unwrap_or(0);
    let status = engine.status(TENANT).await;
    let queued = lane_depth(&status, "live");
    let captured = status["counts"]["captured"].as_u64().unwrap_or(0);
    println!("ingest benchmark — machine: {}", support::machine());
    println!(
        "  {events} distinct charge.succeeded events of {body_bytes} bytes, {connections} connections (closed loop), submitter paused"
    );
    println!("  answers: {statuses:?}");
    println!(
        "  throughput: {:.0} events/s ({accepted} queued in {:.2} s)",
        accepted as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!("  ack latency: {}", summary_ms(&histogram));
    println!("  store: captured {captured}, live lane depth {queued} (warm-up {warm_queued})");
    println!(
        "  group commit: {flushes:.0} flushes in {:.2} s, {:.2} ms per flush + fdatasync, {:.1} waiters answered per flush, flushing {:.0} % of the run",
        elapsed.as_secs_f64(),
        1_000.0 * (flush_s_after - flush_s_before) / flushes.max(1.0),
        (batched_after - batched_before) / flushes.max(1.0),
        100.0 * (flush_s_after - flush_s_before) / elapsed.as_secs_f64(),
    );
    assert_eq!(statuses.len(), 1, "every answer must be 202: {statuses:?}");
    assert_eq!(accepted, events, "every event must be queued");
    assert_eq!(
        queued,
        accepted + warm_queued,
        "queued entries != 202 answers"
    );
    assert_eq!(captured, accepted + warm_queued, "captured != 202 answers");
    tokio::time::sleep(Duration::from_millis(10)).await;
}
