//! Goal: kill -9 at random points while signed Stripe traffic flows loses nothing
//! acknowledged, duplicates nothing (sandbox dedup on), and every duplicate that dedup off
//! lets through (a batch applied whose answer was lost) is detected by the reconciler.
//!
//! Size: `STEWARD_CRASH_CYCLES` kill cycles per test at least (default 20, the CI size; more
//! only if a slow machine made fewer than 1,000 obligations by then). The full run is 200 or
//! more: `STEWARD_CRASH_CYCLES=200 cargo test --features failpoints --test it crash_kill9 --
//! --nocapture` (about 2.5 min on 2 cores). `STEWARD_CRASH_SEED` repeats a run's kill timings
//! and traffic; a failing run keeps its data dir and log (path printed), and
//! `STEWARD_CRASH_KEEP=1` keeps them after a passing run too.
//! Each test prints one `RELIABILITY:` line.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::common::wait_until;
use crate::crash_support::{crash_cycles, KillRun};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_kill9_loop_loses_and_duplicates_nothing_with_dedup_on() {
    // Goal: N kill -9 cycles, 3 tenants, sandbox dedup on → lost 0, duplicate gifts 0,
    // altered gifts 0, the store reopens every cycle, and the run is valid (≥ 1,000
    // obligations, ≥ half the cycles made a Virtuous call before the kill).
    let run = KillRun::run(&["k9a", "k9b", "k9c"], json!({}), crash_cycles(), 12).await;
    eprintln!("{}", run.reliability_line("dedup on", ""));
    run.assert_valid_and_nothing_lost();
    assert_eq!(
        run.report.duplicate_gifts(),
        0,
        "duplicate gifts with dedup on: {:?}",
        run.report.duplicates()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_kill9_loop_with_dedup_off_detects_every_duplicate() {
    // Goal: N kill -9 cycles, 2 tenants, sandbox dedup OFF → lost 0, and every transactionId
    // with two or more gifts is detected: its record is `duplicate_detected`,
    // steward_duplicates_detected_total counts it and a `duplicate_gift` alert is raised.
    let tenants = ["k9off-a", "k9off-b"];
    let run = KillRun::run(
        &tenants,
        json!({"dedup_transactions": false}),
        crash_cycles(),
        12,
    )
    .await;
    run.assert_valid_and_nothing_lost();
    let app = &run.rig.app;
    let duplicates = run.report.duplicates();

    // Confirmation: passes until every transactionId in the org is confirmed (a duplicate is
    // confirmed, then flagged).
    let mut detected = 0;
    for tenant in tenants {
        let gift_ids = run
            .report
            .gifts
            .keys()
            .filter(|(of, _)| of == tenant)
            .count() as u64;
        wait_until(
            Duration::from_secs(90),
            &format!("{tenant}: {gift_ids} records confirmed"),
            || async {
                let response = app
                    .admin(
                        Method::POST,
                        &format!("/v1/tenants/{tenant}/_test/reconcile"),
                    )
                    .send()
                    .await
                    .unwrap();
                assert!(response.status().is_success(), "{}", response.status());
                let status = app.status(tenant).await;
                (status["counts"]["confirmed"].as_u64() == Some(gift_ids)).then_some(())
            },
        )
        .await;
        let of_tenant: BTreeMap<_, _> = duplicates
            .iter()
            .filter(|((of, _), _)| of == tenant)
            .collect();
        for (tenant_id, transaction_id) in of_tenant.keys() {
            let record = app
                .admin_json(
                    Method::GET,
                    &format!("/v1/tenants/{tenant_id}/records/gift/stripe/{transaction_id}"),
                )
                .await;
            assert_eq!(record["state"], "duplicate_detected", "{record}");
            detected += 1;
        }
        if !of_tenant.is_empty() {
            // The pass raises its alert after it stored the confirmations: poll for it.
            wait_until(
                Duration::from_secs(20),
                "a duplicate_gift alert",
                || async {
                    let status = app.status(tenant).await;
                    let alerts = status["alerts"].as_array().cloned().unwrap_or_default();
                    alerts
                        .iter()
                        .any(|alert| alert["code"] == "duplicate_gift")
                        .then_some(())
                },
            )
            .await;
            let metric = wait_until(Duration::from_secs(20), "the duplicates metric", || async {
                let value = metric_value(
                    &app.metrics_text().await,
                    &format!("steward_duplicates_detected_total{{tenant=\"{tenant}\"}}"),
                );
                value.filter(|value| *value >= of_tenant.len() as u64)
            })
            .await;
            assert!(metric >= of_tenant.len() as u64);
        }
    }
    eprintln!(
        "{}",
        run.reliability_line(
            "dedup off",
            &format!(
                ", transactionIds with duplicate gifts {}, duplicates detected {detected}",
                duplicates.len()
            )
        )
    );
    assert_eq!(detected, duplicates.len());
}

/// The value of the Prometheus sample named exactly `series` (name and labels).
fn metric_value(text: &str, series: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.trim();
        value.parse::<f64>().ok().map(|value| value as u64)
    })
}
