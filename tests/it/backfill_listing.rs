//! Goal: a backfill of a source's listing end to end — the real engine, a tenant polling a
//! Constant Contact account of the embedded sandbox, and its Virtuous org: the job starts
//! validating (no file: a PUT of one is 409), its dry run reads the whole listing, the run
//! sends every contact once, a live poll afterwards sends nothing again (the same keys), and
//! a window the contacts changed after skips them all.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::backfill_support::wait_for_state;
use crate::common::{SpawnOptions, TestApp};
use crate::poll_support::*;

const TENANT: &str = "cc-listing";
const CONTACTS: usize = 60;

/// `{method} /v1/tenants/{TENANT}/backfills{suffix}`: the status and the answer.
async fn backfills(
    app: &TestApp,
    method: Method,
    suffix: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let path = format!("/v1/tenants/{TENANT}/backfills{suffix}");
    app.admin_call(method, &path, body).await
}

async fn create_listing(app: &TestApp, body: Value) -> Value {
    let (status, job) = backfills(app, Method::POST, "", Some(body)).await;
    assert_eq!(status, 201, "create the listing backfill: {job}");
    job
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_backfill_sends_every_record_once_and_the_live_poll_none_again() {
    let app = TestApp::spawn(SpawnOptions::default()).await;
    let sim = Sim::new(&app.sandbox_url());
    let account = CcAccount::create(&sim, TENANT, json!({})).await;
    let ids = account.generate(CONTACTS).await;
    cc_tenant(
        &app,
        &sim,
        "embedded",
        TENANT,
        cc_settings(&account, "embedded", json!({})),
    )
    .await;

    let job = create_listing(
        &app,
        json!({"source": "constant_contact", "from": "2020-01-01", "label": "cc history"}),
    )
    .await;
    let job_id = job["id"].as_str().unwrap().to_string();
    assert_eq!(job["listing"]["from"], "2020-01-01T00:00:00Z", "{job}");
    assert!(job.get("mapping").is_none(), "{job}");
    let (status, refused) = backfills(&app, Method::PUT, &format!("/{job_id}/file"), None).await;
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert_eq!(status, 409, "{refused}");
    assert!(message.contains("a listing job has no file"), "{refused}");

    let ready = wait_for_state(&app, TENANT, &job_id, &["ready", "failed"]).await;
    assert_eq!(ready["state"], "ready", "{ready}");
    let dry_run = &ready["dry_run"];
    assert_eq!(dry_run["rows_read"], CONTACTS, "{ready}");
    assert_eq!(dry_run["entries"]["contact"], CONTACTS, "{ready}");
    assert_eq!(dry_run["rejected"], 0, "{ready}");
    assert!(dry_run["pages_read"].as_u64() >= Some(1), "{ready}");

    let (status, started) = backfills(&app, Method::POST, &format!("/{job_id}/start"), None).await;
    assert_eq!(status, 200, "{started}");
    let done = wait_for_state(&app, TENANT, &job_id, &["done", "paused", "failed"]).await;
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["progress"]["queued"], CONTACTS, "{done}");
    wait_drained(&app, TENANT, drain_timeout(CONTACTS)).await;

    // The live poll reads the same versions: duplicates, nothing sent again.
    run_to_completion(&app, TENANT, Duration::from_secs(60)).await;
    wait_drained(&app, TENANT, drain_timeout(CONTACTS)).await;
    let transactions = sim.contact_transactions(TENANT).await;
    assert_eq!(transactions.len(), CONTACTS, "{transactions:?}");
    for id in &ids {
        assert_eq!(transactions.get(id), Some(&1), "{id}: {transactions:?}");
    }

    // Every contact changed today: a window that ended in 2020 skips them all.
    let past = create_listing(
        &app,
        json!({"source": "constant_contact", "from": "2020-01-01", "to": "2020-12-31",
               "label": "cc 2020"}),
    )
    .await;
    let past_id = past["id"].as_str().unwrap();
    let ready = wait_for_state(&app, TENANT, past_id, &["ready", "failed"]).await;
    assert_eq!(ready["state"], "ready", "{ready}");
    assert_eq!(ready["dry_run"]["skipped"], CONTACTS, "{ready}");
    assert_eq!(
        ready["dry_run"]["skip_reasons"]["changed outside the window"], CONTACTS,
        "{ready}"
    );
}
