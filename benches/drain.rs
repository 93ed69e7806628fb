//! Drain benchmark (issue 4): how well the submitter spends a tenant's budget.
//!
//! The real release binary with the embedded sandbox; one organization and one tenant with
//! `hourly_limit` 36,000 (`STEWARD_BENCH_HOURLY_LIMIT`) and reserve 10 %, so the allowance is
//! A = 32,400 calls/hour = 9 calls/s. 10,000 distinct gifts (`STEWARD_BENCH_GIFTS`) are queued
//! through the Stripe ingress while the tenant is paused; then it is resumed and the sandbox's
//! counters are polled every 5 ms. Targets: ≥ 99 gifts per API call, ≥ 98 % of the allowance
//! used — calls ÷ (A/3600 × seconds from the first to the last call) — and zero 429s.
//!
//! Asserts the work was done: the sandbox received exactly the queued gifts.

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{closed_loop, env_number, Engine};

const TENANT: &str = "drain";
const GIFT_BATCH_ROUTE: &str = "POST /api/v2/Gift/Transactions";

/// Calls the sandbox counted for this org (every route, every status).
fn calls_of(stats: &serde_json::Value) -> u64 {
    stats["requests"]
        .as_object()
        .map(|routes| {
            routes
                .values()
                .flat_map(|by_status| by_status.as_object().into_iter().flat_map(|m| m.values()))
                .filter_map(|count| count.as_u64())
                .sum()
        })
        .unwrap_or(0)
}

fn batch_calls_of(stats: &serde_json::Value) -> u64 {
    stats["requests"][GIFT_BATCH_ROUTE]
        .as_object()
        .map(|by_status| by_status.values().filter_map(|count| count.as_u64()).sum())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let gifts = env_number("STEWARD_BENCH_GIFTS", 10_000);
    let hourly_limit = env_number("STEWARD_BENCH_HOURLY_LIMIT", 36_000);
    let reserve_pct = 10u8;
    let allowance = hourly_limit * u64::from(100 - reserve_pct) / 100;

    let engine = Engine::spawn(&[]).await;
    engine
        .create_tenant_with_org(TENANT, hourly_limit, reserve_pct)
        .await;
    engine
        .admin(
            reqwest::Method::POST,
            &format!("/v1/tenants/{TENANT}/pause"),
            None,
        )
        .await;
    let events: Vec<_> = (0..gifts)
        .map(|n| support::charge_succeeded(TENANT, "drain", n, 1_024))
        .collect();
    let (statuses, _, _) = closed_loop(&engine, TENANT, Arc::new(events), 32).await;
    assert_eq!(
        statuses.get(&202).copied(),
        Some(gifts),
        "queueing: {statuses:?}"
    );
    let calls_before = calls_of(&engine.sandbox_stats(TENANT).await);

    engine
        .admin(
            reqwest::Method::POST,
            &format!("/v1/tenants/{TENANT}/resume"),
            None,
        )
        .await;
    let resumed = Instant::now();
    let mut first_call_at = None;
    let mut last_call_at = resumed;
    let mut last_calls = calls_before;
    let deadline = resumed + Duration::from_secs(gifts / 50 + 120);
    let stats = loop {
        let stats = engine.sandbox_stats(TENANT).await;
        let calls = calls_of(&stats);
        if calls > last_calls {
            let now = Instant::now();
            first_call_at.get_or_insert(now);
            last_call_at = now;
            last_calls = calls;
        }
        if stats["transactions_received"].as_u64() == Some(gifts) {
            break stats;
        }
        assert!(Instant::now() < deadline, "drain did not finish: {stats}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let first_call_at = first_call_at.expect("at least one call");
    let calls = last_calls - calls_before;
    let batch_calls = batch_calls_of(&stats);
    let throttled = stats["throttled"].as_u64().unwrap_or(0);
    let window_s = last_call_at.duration_since(first_call_at).as_secs_f64();
    // n calls paced at rate r span (n − 1)/r seconds from first to last.
    let used_pct = if window_s > 0.0 {
        100.0 * (calls.saturating_sub(1)) as f64 / (allowance as f64 / 3_600.0 * window_s)
    } else {
        0.0
    };
    println!("drain benchmark — machine: {}", support::machine());
    println!(
        "  {gifts} queued gifts, hourly_limit {hourly_limit}, reserve {reserve_pct} % → allowance {allowance}/h ({:.2} calls/s)",
        allowance as f64 / 3_600.0
    );
    println!(
        "  calls {calls} ({batch_calls} gift batches), {:.2} gifts per batch call",
        gifts as f64 / batch_calls.max(1) as f64
    );
    println!(
        "  first→last call {window_s:.2} s, resume→first call {:.2} s, allowance used {used_pct:.1} % ((calls − 1) ÷ (A/3600 × seconds)), {:.1} % counting every call",
        first_call_at.duration_since(resumed).as_secs_f64(),
        100.0 * calls as f64 / (allowance as f64 / 3_600.0 * window_s.max(f64::MIN_POSITIVE)),
    );
    println!("  429s: {throttled}");
    assert_eq!(stats["transactions_received"].as_u64(), Some(gifts));
}
