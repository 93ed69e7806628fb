//! The demo's pattern-5 part: a year of history from a Stripe payments export, loaded beside
//! live payments.
//!
//! The export (generated in the Stripe Dashboard's shape: failed, uncaptured and retried
//! charges, partial refunds, a few bad rows) is uploaded to a backfill job; its dry run
//! reports rows, rejects and the calls needed; the run queues the payments in the `backfill`
//! lane while some of them also arrive live. At the end every payment is one gift in
//! Virtuous, labelled with the job's batch.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{ensure, Context};
use reqwest::Method;
use serde_json::{json, Value};

use super::client::{tenant_document, DemoClient};
use super::pull::wait;
use crate::traffic::stripe_export::{generate_export, live_events, ExportOptions};

const LABEL: &str = "demo-history";

/// Runs the backfill part on a running engine; the closing lines.
pub async fn run(
    client: &DemoClient,
    seed: u64,
    started: Instant,
    deadline: Instant,
) -> anyhow::Result<Vec<String>> {
    let progress = |message: String| {
        println!("[{:>5.1}s] {message}", started.elapsed().as_secs_f64());
    };
    let tenant = format!("demo-{seed}-backfill");
    let api_key = format!("vk_demo_{:016x}", rand::random::<u64>());
    let secret = format!("whsec_demo_{:016x}", rand::random::<u64>());
    client.create_immediate_org(&tenant, &api_key).await?;
    let mut document = tenant_document(&tenant, &secret, &api_key);
    document["budget"] = json!({"hourly_limit": 36_000, "reserve_pct": 10});
    client.create_tenant(&document).await?;
    // Reversals wait for their gift's confirmation; this part keeps to gifts.
    let export = generate_export(&ExportOptions {
        seed: seed.wrapping_add(500),
        payments: 300,
        full_refund_share: 0.0,
        dispute_share: 0.0,
        ..ExportOptions::default()
    });
    let (status, job) = client
        .admin_call(
            Method::POST,
            &format!("/tenants/{tenant}/backfills"),
            Some(json!({"source": "stripe", "format": "csv",
                        "mapping": "stripe_payments_export", "label": LABEL})),
        )
        .await?;
    ensure!(
        status == 201,
        "creating the backfill answered {status}: {job}"
    );
    let id = job["id"].as_str().context("the job has an id")?.to_string();
    let (status, uploaded) = client
        .admin_upload(
            &format!("/tenants/{tenant}/backfills/{id}/file"),
            "text/csv",
            export.bytes.clone(),
        )
        .await?;
    ensure!(
        status == 200,
        "uploading the export answered {status}: {uploaded}"
    );
    progress(format!(
        "backfill: uploaded a Stripe payments export ({} rows, {} KiB) to {id}",
        export.data_rows,
        export.bytes.len() / 1024
    ));
    let ready = wait_job(client, &tenant, &id, "ready", deadline).await?;
    let dry = &ready["dry_run"];
    progress(format!(
        "backfill: dry run — {} rows: {} payments, {} skipped ({}), {} rejected (first: row {} {}), {} calls needed",
        dry["rows"],
        dry["payments"],
        dry["skipped"],
        reasons(&dry["skip_reasons"]),
        dry["rejected"],
        dry["rejects"][0]["row"],
        dry["rejects"][0]["reason"],
        dry["calls_needed"]
    ));
    let (status, running) = client
        .admin_call(
            Method::POST,
            &format!("/tenants/{tenant}/backfills/{id}/start"),
            None,
        )
        .await?;
    ensure!(
        status == 200,
        "starting the backfill answered {status}: {running}"
    );
    // Meanwhile, some of the same payments arrive live: each stays one gift.
    for payment_id in &export.live_payment_ids {
        let payment = export
            .payment(payment_id)
            .context("a live payment of the export")?;
        for event in live_events(payment) {
            client.deliver(&tenant, &secret, &event).await?;
        }
    }
    progress(format!(
        "backfill: running; {} of its payments also arrived live meanwhile",
        export.live_payment_ids.len()
    ));
    let done = wait_job(client, &tenant, &id, "done", deadline).await?;
    let expected: Vec<&str> = export
        .payments
        .iter()
        .map(|p| p.payment_id.as_str())
        .collect();
    let counts = wait(deadline, "every payment's gift in Virtuous", || async {
        let counts = gift_counts(client, &tenant).await?;
        Ok(expected
            .iter()
            .all(|id| counts.contains_key(*id))
            .then_some(counts))
    })
    .await?;
    let twice = counts.values().filter(|&&n| n > 1).count();
    ensure!(twice == 0, "{twice} payments became two gifts");
    let progress_view = &done["progress"];
    Ok(vec![format!(
        "backfill: {} rows → {} payments, each one gift in Virtuous ({} queued by the backfill, {} already there from live; {} rows rejected, {} skipped)",
        export.data_rows,
        expected.len(),
        progress_view["queued"],
        progress_view["duplicates"],
        progress_view["rejected"],
        progress_view["skipped"]
    )])
}

async fn wait_job(
    client: &DemoClient,
    tenant: &str,
    id: &str,
    state: &str,
    deadline: Instant,
) -> anyhow::Result<Value> {
    wait(deadline, &format!("backfill {id} {state}"), || async {
        let (status, view) = client
            .admin_call(
                Method::GET,
                &format!("/tenants/{tenant}/backfills/{id}"),
                None,
            )
            .await?;
        ensure!(
            status == 200,
            "reading the backfill answered {status}: {view}"
        );
        ensure!(
            view["state"] != "failed",
            "the backfill failed: {}",
            view["error"]
        );
        Ok((view["state"] == state).then_some(view))
    })
    .await
}

/// transactionId → gifts with it in the org (reversals not counted).
async fn gift_counts(client: &DemoClient, tenant: &str) -> anyhow::Result<BTreeMap<String, u64>> {
    let gifts = client
        .sandbox_call(Method::GET, &format!("/_sandbox/orgs/{tenant}/gifts"), None)
        .await?;
    let mut counts = BTreeMap::new();
    for gift in gifts.as_array().into_iter().flatten() {
        if gift["giftType"] == "ReversingTransaction" {
            continue;
        }
        if let Some(id) = gift["transactionId"].as_str() {
            *counts.entry(id.to_string()).or_insert(0) += 1;
        }
    }
    Ok(counts)
}

fn reasons(reasons: &Value) -> String {
    reasons
        .as_object()
        .map(|reasons| {
            reasons
                .iter()
                .map(|(reason, count)| format!("{count} {reason}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}
