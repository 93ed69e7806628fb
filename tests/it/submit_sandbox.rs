//! The submitter end to end in one process: the tenant runtime on a real sled store, the real
//! Virtuous client (`VirtuousCrm`) over loopback HTTP, the sandbox as Virtuous. Entries are
//! queued through the tenant handle (the ingress is tested on its own).

use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::SecretString;
use serde_json::{json, Value};
use steward::virtuous::crm::VirtuousCrm;
use steward_actors::ports::now_ms;
use steward_actors::runtime::{BudgetSettings, SubmitSettings, TenantRunState};
use steward_actors::store::{
    EntryFact, Lane, NewEntry, RecordKind, Store, StoreOptions, TenantStore,
};
use steward_actors::{Runtime, TenantHandle, TenantSettings, TenantSpec};

use crate::sandbox_support::*;

struct Rig {
    sandbox: Sandbox,
    org: Org,
    runtime: Runtime,
    handle: TenantHandle,
    tenant: TenantStore,
    _dir: tempfile::TempDir,
}

/// A paused tenant whose Virtuous is a fresh sandbox org with `org_hourly_limit`.
async fn rig(org_hourly_limit: u64, budget: BudgetSettings) -> Rig {
    let sandbox = start_sandbox().await;
    let org = sandbox.org(json!({"hourly_limit": org_hourly_limit})).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let tenant = store.tenant("submit-e2e").unwrap();
    let crm = VirtuousCrm::new(
        &org.base,
        SecretString::from(org.key.clone()),
        None,
        Duration::from_secs(10),
    )
    .expect("client");
    let runtime = Runtime::new(1);
    let handle = runtime.start_tenant(TenantSpec {
        tenant_id: "submit-e2e".into(),
        store: store.clone(),
        tenant_store: tenant.clone(),
        settings: TenantSettings {
            budget,
            submit: SubmitSettings {
                retry_schedule_ms: vec![50, 100, 200],
                // One call per contact: the pacing test counts Contact/Transaction calls.
                contact_batch: false,
                ..SubmitSettings::default()
            },
            ..TenantSettings::default()
        },
        run_state: TenantRunState::Paused,
        crm: Arc::new(crm),
    });
    // Work sent before the five children run is refused (`Unavailable`); a loaded machine
    // starts them later, so wait for them rather than race them.
    wait_until(
        Duration::from_secs(10),
        "the tenant's children to start",
        || {
            let started = handle.children_started();
            async move { started.then_some(()) }
        },
    )
    .await;
    Rig {
        sandbox,
        org,
        runtime,
        handle,
        tenant,
        _dir: dir,
    }
}

fn entry(kind: RecordKind, id: &str, body: &Value) -> NewEntry {
    NewEntry {
        fact: EntryFact {
            kind,
            source: "stripe".into(),
            source_id: id.into(),
            idempotency_key: format!("stripe:{id}"),
            lane: Lane::Live,
            transaction_source: "Stripe".into(),
            body_json: body.to_string(),
        },
        aliases: Vec::new(),
        now_ms: now_ms(),
    }
}

/// Requests the sandbox answered on `endpoint`, by status.
fn answered(stats: &Value, endpoint: &str) -> u64 {
    stats["requests"][endpoint]
        .as_object()
        .map(|by_status| by_status.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0)
}

#[actix_rt::test]
async fn submit_drains_queued_gifts_in_full_batches_within_the_budget() {
    // Goal: 1,000 queued gifts reach the sandbox in 10 calls of 100 (one transactionSource each), every gift once, no 429, and each record is submitted and imported.
    let budget = BudgetSettings {
        hourly_limit: 36_000,
        reserve_pct: 10,
        burst_calls: 1,
        backfill_pct: 20,
    };
    let rig = rig(36_000, budget).await;
    let entries: Vec<NewEntry> = (0..1_000)
        .map(|n| {
            let id = format!("pi_{n:04}");
            entry(RecordKind::Gift, &id, &gift_tx("Stripe", &id))
        })
        .collect();
    rig.handle.enqueue(entries).await.expect("queued");
    let started = Instant::now();
    rig.handle.resume();
    wait_until(Duration::from_secs(20), "all gifts submitted", || async {
        (rig.tenant.counts().submitted == 1_000).then_some(())
    })
    .await;
    let elapsed = started.elapsed();
    let stats = rig.org.stats().await;
    assert_eq!(stats["transactions_received"], 1_000, "{stats}");
    assert_eq!(
        answered(&stats, "POST /api/v2/Gift/Transactions"),
        10,
        "{stats}"
    );
    assert_eq!(stats["throttled"], 0, "{stats}");
    assert_eq!(rig.tenant.queued_total(), 0);
    let record = rig
        .tenant
        .get_record(RecordKind::Gift, "stripe", "pi_0500")
        .unwrap()
        .unwrap();
    assert_eq!(record.state.name(), "submitted");
    rig.org.process().await;
    assert_eq!(rig.org.stats().await["gifts"], 1_000);
    // The status shows the headers the submitter saw.
    let budget = rig.handle.status().budget;
    assert_eq!(budget.header_limit, Some(36_000));
    assert_eq!(budget.spent_last_hour, 10);
    println!("1,000 gifts in 10 calls, {elapsed:?} (paced at 9 calls/s)");
    rig.runtime.shutdown().await;
    rig.sandbox.handle.stop().await;
}

#[actix_rt::test]
async fn submit_waits_out_a_429_and_retries_a_503_without_losing_a_gift() {
    // Goal: a scripted 429 (Retry-After 1 s) then a 503 on the batch endpoint end with every gift accepted once, nothing dead, the 429 honoured.
    let budget = BudgetSettings {
        hourly_limit: 360_000,
        reserve_pct: 10,
        burst_calls: 1,
        backfill_pct: 20,
    };
    let rig = rig(360_000, budget).await;
    let script = json!({"steps": [
        {"match": {"method": "POST", "path": "/api/v2/Gift/Transactions"}, "times": 1,
         "respond": {"status": 429, "retry_after_s": 1}},
        {"match": {"method": "POST", "path": "/api/v2/Gift/Transactions"}, "times": 1,
         "respond": {"status": 503}}]});
    let scripted = rig.org.control("POST", "/script", Some(&script)).await;
    assert_eq!(scripted.status, 200, "{}", scripted.text());
    let entries: Vec<NewEntry> = (0..50)
        .map(|n| {
            let id = format!("pi_f{n}");
            entry(RecordKind::Gift, &id, &gift_tx("Stripe", &id))
        })
        .collect();
    rig.handle.enqueue(entries).await.expect("queued");
    let started = Instant::now();
    rig.handle.resume();
    wait_until(Duration::from_secs(20), "all gifts submitted", || async {
        (rig.tenant.counts().submitted == 50).then_some(())
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After honoured"
    );
    let stats = rig.org.stats().await;
    assert_eq!(stats["transactions_received"], 50, "{stats}");
    assert_eq!(
        answered(&stats, "POST /api/v2/Gift/Transactions"),
        3,
        "{stats}"
    );
    assert_eq!(rig.tenant.counts().dead, 0);
    assert!(rig.tenant.list_dead_letters().unwrap().is_empty());
    rig.runtime.shutdown().await;
    rig.sandbox.handle.stop().await;
}

#[actix_rt::test]
async fn submit_budget_issue_test_53_to_55_calls_in_6_s_paced_and_no_429() {
    // Goal: the issue's budget test, scaled from 60 s at 3,600/h to 6 s at 36,000/h — 500
    // single-call items (contacts) with a 10 % reserve (9 calls/s) make 53–55 calls in 6 s; no
    // stretch of calls is denser than the allowance permits; the sandbox (same limit) answers
    // no 429; every call answered is one entry submitted.
    const WINDOW: Duration = Duration::from_secs(6);
    let budget = BudgetSettings {
        hourly_limit: 36_000,
        reserve_pct: 10,
        burst_calls: 1,
        backfill_pct: 20,
    };
    let rig = rig(36_000, budget).await;
    let entries: Vec<NewEntry> = (0..500)
        .map(|n| {
            let id = format!("cus_{n:03}");
            let body = contact_tx(
                "Stripe",
                &id,
                "Ann",
                &format!("N{n}"),
                &format!("{id}@x.org"),
            );
            entry(RecordKind::Contact, &id, &body)
        })
        .collect();
    rig.handle.enqueue(entries).await.expect("queued");
    let resumed_ms = now_ms();
    rig.handle.resume();
    // Deliberate: a fixed stretch of real time — the test measures pacing over wall time, it
    // does not wait for a result.
    actix_rt::time::sleep(WINDOW).await;
    let stats = rig.org.stats().await;
    let calls = answered(&stats, "POST /api/Contact/Transaction");
    assert!((53..=55).contains(&calls), "{calls} calls in 6 s: {stats}");
    assert_eq!(stats["throttled"], 0, "{stats}");
    assert_eq!(rig.tenant.counts().submitted, calls);
    // In any stretch, k calls after call i took at least k pacing intervals (32,400/h after
    // the reserve: 111.1 ms), less the half interval a late call may win back
    // (`BudgetLedger::spend`), less 1 ms of rounding: never more than the allowance permits,
    // and the calls spread over the window instead of bursting at its start.
    let times = rig.tenant.call_times_since(resumed_ms).unwrap();
    assert!(times.len() as u64 >= calls, "call log {times:?}");
    let interval_ms = 3_600_000.0 / 32_400.0;
    for (i, first) in times.iter().enumerate() {
        for (k, later) in times[i + 1..].iter().enumerate() {
            let calls_after = (k + 1) as f64;
            let least_ms = calls_after * interval_ms - interval_ms / 2.0 - 1.0;
            let took_ms = (later - first) as f64;
            assert!(
                took_ms >= least_ms,
                "{calls_after} calls after call {i} took {took_ms} ms, the allowance needs ≥ {least_ms:.0} ms: {times:?}"
            );
        }
    }
    println!("budget test: {calls} calls in 6 s, 0 throttled");
    rig.runtime.shutdown().await;
    rig.sandbox.handle.stop().await;
}

#[actix_rt::test]
#[ignore = "measurement (≈ 12 s): 10,000 queued gifts at 36,000/h; run with --ignored --nocapture"]
async fn submit_drain_10k_gifts_measure() {
    // Goal: measure the drain: 10,000 queued gifts at tenant and sandbox limit 36,000/h → ≥ 99 gifts per call, ≥ 98 % of the allowance used, no 429.
    let budget = BudgetSettings {
        hourly_limit: 36_000,
        reserve_pct: 10,
        burst_calls: 1,
        backfill_pct: 20,
    };
    let rig = rig(36_000, budget).await;
    for chunk in 0..10 {
        let entries: Vec<NewEntry> = (0..1_000)
            .map(|n| {
                let id = format!("pi_{chunk}_{n:04}");
                entry(RecordKind::Gift, &id, &gift_tx("Stripe", &id))
            })
            .collect();
        rig.handle.enqueue(entries).await.expect("queued");
    }
    rig.handle.resume();
    wait_until(Duration::from_secs(60), "all gifts submitted", || async {
        (rig.tenant.counts().submitted == 10_000).then_some(())
    })
    .await;
    let stats = rig.org.stats().await;
    let calls = answered(&stats, "POST /api/v2/Gift/Transactions");
    let times = rig.tenant.call_times_since(0).unwrap();
    let span_s = (times[times.len() - 1] - times[0]) as f64 / 1_000.0;
    let allowance_per_s = 32_400.0 / 3_600.0;
    // Calls after the first, over the time they took: the paced rate actually used.
    let used = (times.len() - 1) as f64 / (allowance_per_s * span_s);
    println!(
        "drain: {calls} calls, {:.1} gifts/call, {:.1} % of the allowance used over {span_s:.1} s, throttled {}",
        10_000.0 / calls as f64,
        used * 100.0,
        stats["throttled"]
    );
    assert_eq!(stats["transactions_received"], 10_000);
    assert!(10_000 / calls >= 99);
    assert!(used >= 0.98, "{used}");
    assert_eq!(stats["throttled"], 0);
    rig.runtime.shutdown().await;
    rig.sandbox.handle.stop().await;
}
