//! Goal: Constant Contact polling end to end — the real engine on loopback, its sled store and
//! the Constant Contact and Virtuous simulators: every contact version reaches Virtuous once
//! (edits, unsubscribes and deletions during a poll included, deletions as opt-outs), the
//! 4 requests/s limit is kept and a spent daily quota is waited out with no gap, a rotated
//! refresh token survives kill -9, and kill -9 at random moments of polls loses and
//! duplicates nothing.
//!
//! Sizes: CI sizes by default; `STEWARD_FULL_POLL_TESTS=1 cargo test --features failpoints
//! --test it poll_constant_contact` runs the full sizes (5,000 contacts, 20 kill
//! cycles). `STEWARD_CRASH_SEED` repeats the kill test's timings and edits.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{found_in_dir, wait_until, SpawnOptions, TestApp};
use crate::crash_support::crash_seed;
use crate::external_sandbox::ExternalSandbox;
use crate::poll_support::*;

/// Waits until Virtuous has imported `count` contacts.
async fn wait_virtuous_contacts(sim: &Sim, org: &str, count: usize) -> Vec<Value> {
    let seen = std::cell::Cell::new(0);
    wait_until(
        Duration::from_secs(60),
        crate::common::at_timeout(|| format!("{count} Virtuous contacts (seen {})", seen.get())),
        || async {
            let contacts = sim.virtuous_contacts(org).await;
            seen.set(contacts.len());
            (contacts.len() >= count).then_some(contacts)
        },
    )
    .await
}

/// Every Constant Contact contact is one Virtuous contact carrying its latest email, and
/// Virtuous got between 1 and `versions` contact transactions for it (never a duplicate of
/// a version). Nothing was ever deleted in Virtuous.
async fn assert_virtuous_matches(
    sim: &Sim,
    org: &str,
    cc: &BTreeMap<String, Value>,
    versions: &BTreeMap<String, u64>,
) -> BTreeMap<String, Value> {
    let contacts = wait_virtuous_contacts(sim, org, cc.len()).await;
    assert_eq!(
        contacts.len(),
        cc.len(),
        "one Virtuous contact per CC contact"
    );
    let by_reference = virtuous_by_reference(&contacts);
    let transactions = sim.contact_transactions(org).await;
    for (id, contact) in cc {
        let virtuous = by_reference
            .get(id)
            .unwrap_or_else(|| panic!("contact {id} never reached Virtuous"));
        let email = contact["email_address"]["address"].as_str().unwrap();
        assert!(
            virtuous_emails(virtuous).contains(&email.to_ascii_lowercase()),
            "{id}: the latest email {email} is not in Virtuous: {virtuous}"
        );
        let sent = transactions.get(id).copied().unwrap_or(0);
        let most = versions.get(id).copied().unwrap_or(1);
        assert!(
            (1..=most).contains(&sent),
            "{id}: {sent} contact transactions for {most} version(s)"
        );
    }
    assert_eq!(
        transactions.len(),
        cc.len(),
        "transactions for unknown contacts"
    );
    for entry in sim.virtuous_requests(org).await {
        assert_ne!(
            entry["method"], "DELETE",
            "a delete reached Virtuous: {entry}"
        );
    }
    by_reference
}

/// The engine holds every contact's current version (its record's key is that version's).
async fn assert_engine_has_latest(app: &TestApp, tenant: &str, cc: &BTreeMap<String, Value>) {
    for (id, contact) in cc {
        let record = engine_record(app, tenant, id)
            .await
            .unwrap_or_else(|| panic!("the engine has no record of {id}"));
        assert_eq!(
            record["idempotency_key"],
            version_key(id, updated_at_s(contact)),
            "{id}: not the latest version: {record}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_contact_version_reaches_virtuous_once_with_edits_during_the_poll() {
    // Goal: 1,000 [5,000] contacts, edited, unsubscribed and deleted while a poll runs, and
    // polled again (the overlap re-reads everything) → one Virtuous contact per contact with
    // its latest email, at most one contact transaction per version (exactly one for the
    // untouched), the engine holding every latest version, deletions and unsubscribes as
    // opt-out custom fields, never a delete.
    let app = TestApp::spawn(SpawnOptions::default()).await;
    let sim = Sim::new(&app.sandbox_url());
    let account = CcAccount::create(&sim, "cc-edits", json!({})).await;
    let count = sized(1_000, 5_000);
    let ids = account.generate(count).await;
    let mut versions: BTreeMap<String, u64> = ids.iter().map(|id| (id.clone(), 1)).collect();

    // Before the first poll: these are first seen in their changed state.
    let (before_deleted, before_unsubscribed, before_edited) =
        (&ids[0..5], &ids[5..10], &ids[10..15]);
    for id in before_deleted {
        account.delete(id).await;
    }
    for id in before_unsubscribed {
        account.unsubscribe(id).await;
    }
    for id in before_edited {
        account.edit(id, "early").await;
    }
    // Pages slow enough for the edits to land during the run.
    account
        .call(Method::PUT, "/faults", Some(json!({"latency_ms": 300})))
        .await;
    cc_tenant(
        &app,
        &sim,
        "embedded",
        "cc-edits",
        cc_settings(&account, "embedded", json!({})),
    )
    .await;

    assert!(start_run(&app, "cc-edits").await);
    wait_until(Duration::from_secs(30), "the run's first page", || async {
        let view = poller(&app, "cc-edits").await;
        (view["run_in_progress"]["pages"].as_u64() >= Some(1) || last_run_number(&view) > 0)
            .then_some(())
    })
    .await;
    // During the run: contacts spread over the listing (read and not yet read).
    let stride = count / 40;
    for n in 0..40 {
        let id = &ids[20 + n * stride.max(1) % (count - 20)];
        match n % 4 {
            0 | 1 => account.edit(id, &format!("during{n}")).await,
            2 => account.unsubscribe(id).await,
            _ => account.delete(id).await,
        }
        *versions.get_mut(id).unwrap() += 1;
        if n % 8 == 0 {
            account.edit(id, &format!("again{n}")).await;
            *versions.get_mut(id).unwrap() += 1;
        }
    }
    let first = wait_run_finished(&app, "cc-edits", 0, Duration::from_secs(60)).await;
    assert!(
        first["fetched"].as_u64().unwrap() >= count as u64,
        "{first}"
    );
    let second = run_to_completion(&app, "cc-edits", Duration::from_secs(60)).await;
    assert!(
        second["unchanged"].as_u64().unwrap() > 0,
        "the second run re-read the overlap: {second}"
    );
    wait_drained(&app, "cc-edits", drain_timeout(count)).await;

    let cc = account.contacts().await;
    assert_eq!(cc.len(), count);
    let virtuous = assert_virtuous_matches(&sim, "cc-edits", &cc, &versions).await;
    assert_engine_has_latest(&app, "cc-edits", &cc).await;
    let untouched = versions.values().filter(|&&v| v == 1).count();
    assert!(untouched >= count - 60, "most contacts were left alone");
    for (ids, status, opt_out) in [
        (before_deleted, "deleted", "true"),
        (before_unsubscribed, "unsubscribed", "true"),
        (before_edited, "subscribed", "false"),
    ] {
        for id in ids {
            let contact = &virtuous[id];
            assert_eq!(
                virtuous_custom_field(contact, "Email Status").as_deref(),
                Some(status),
                "{id}: {contact}"
            );
            assert_eq!(
                virtuous_custom_field(contact, "Email Opt Out").as_deref(),
                Some(opt_out),
                "{id}: {contact}"
            );
        }
    }
    for id in before_edited {
        let individual = &virtuous[id]["contactIndividuals"][0];
        assert_eq!(individual["firstName"], "Firstearly", "{id}");
        assert_eq!(individual["lastName"], "Lastearly", "{id}");
    }
    // Changed during the run: the engine's latest version carries the opt-out status.
    for (id, contact) in &cc {
        if versions[id] > 1 && !before_edited.contains(id) {
            assert!(
                matches!(
                    email_status(contact),
                    "deleted" | "unsubscribed" | "subscribed"
                ),
                "{id}"
            );
        }
    }
}

/// `HH:MM:SS` (UTC) of a Unix-ms instant.
fn utc_time_of_day(at_ms: i64) -> String {
    let seconds = at_ms.div_euclid(1_000).rem_euclid(86_400);
    format!(
        "{:02}:{:02}:{:02}",
        seconds / 3_600,
        seconds / 60 % 60,
        seconds % 60
    )
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_requests_a_second_are_kept_and_a_spent_daily_quota_is_waited_out() {
    // Goal: with the simulator's own per-second limit lifted, the engine's contacts calls
    // never exceed 4 in any 1,000 ms (from the simulator's request log), and a daily quota
    // that runs out mid-run puts the poller in `waiting_for_quota_reset`, after which it
    // resumes by itself and completes with every contact captured.
    let app = TestApp::spawn(SpawnOptions::default()).await;
    let sim = Sim::new(&app.sandbox_url());
    let account = CcAccount::create(&sim, "cc-limits", json!({"per_second_limit": 1000})).await;
    let count = sized(2_000, 5_000);
    account.generate(count).await;
    // The reset: whole seconds, a few seconds ahead; the simulator resets one second before
    // the engine looks again.
    // Far enough ahead for a loaded machine to create the tenant and reach the third page.
    let reset_ms = (now_ms() / 1_000 + 10) * 1_000;
    account
        .settings(json!({"daily_quota": 10_000, "quota_used": 9_998,
                         "quota_reset_at_ms": reset_ms - 1_000}))
        .await;
    let settings = cc_settings(
        &account,
        "embedded",
        json!({"quota_reset_utc": utc_time_of_day(reset_ms)}),
    );
    cc_tenant(&app, &sim, "embedded", "cc-limits", settings).await;

    assert!(start_run(&app, "cc-limits").await);
    wait_until(
        Duration::from_secs(20),
        "the poller to wait for the quota reset",
        || async {
            let view = poller(&app, "cc-limits").await;
            assert!(last_run_number(&view) == 0, "the run ended early: {view}");
            (view["state"] == "waiting_for_quota_reset").then_some(())
        },
    )
    .await;
    assert!(now_ms() < reset_ms, "the quota ran out before the reset");
    let report = wait_run_finished(&app, "cc-limits", 0, Duration::from_secs(40)).await;
    assert!(report["quota_waits"].as_u64() >= Some(1), "{report}");
    assert!(now_ms() >= reset_ms);
    // Two more runs back to back (each re-reads every contact through the overlap): bursts
    // the pacing must hold.
    run_to_completion(&app, "cc-limits", Duration::from_secs(40)).await;
    run_to_completion(&app, "cc-limits", Duration::from_secs(40)).await;

    let log = account.requests().await;
    let v3 = |entry: &&Value| entry["path"].as_str().unwrap().starts_with("/v3/");
    let answered: Vec<i64> = log
        .iter()
        .filter(v3)
        .filter(|entry| entry["status"] != 429)
        .map(|entry| entry["at_ms"].as_i64().unwrap())
        .collect();
    let pages = count / 500;
    assert!(
        answered.len() >= 3 * pages,
        "{} calls: {log:?}",
        answered.len()
    );
    for window in answered.windows(5) {
        assert!(
            window[4] - window[0] >= 1_000,
            "5 calls within {} ms: {window:?}; log: {log:?}",
            window[4] - window[0]
        );
    }
    let refused: Vec<&Value> = log
        .iter()
        .filter(v3)
        .filter(|e| e["status"] == 429)
        .collect();
    assert!(!refused.is_empty(), "the quota was hit");
    let resumed = log
        .iter()
        .filter(v3)
        .filter(|entry| entry["status"] == 200)
        .filter(|entry| entry["at_ms"].as_i64().unwrap() >= reset_ms - 1_000)
        .count();
    assert!(resumed >= 1, "calls after the reset");
    assert_eq!(account.stats().await["counters"]["throttled"], 0);

    wait_drained(&app, "cc-limits", drain_timeout(count)).await;
    let cc = account.contacts().await;
    assert_virtuous_matches(&sim, "cc-limits", &cc, &BTreeMap::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_refresh_token_survives_kill_9_and_never_rests_in_clear() {
    // Goal: a poll rotates the refresh token; after kill -9 and a restart on the same data
    // dir the next poll refreshes with the rotated token (the original is refused by then)
    // and succeeds; no refresh token, access token or client secret is in the data dir or
    // the log in clear.
    let sandbox = ExternalSandbox::start();
    let sim = Sim::new(&sandbox.url);
    let mut app = TestApp::spawn(SpawnOptions::default()).await;
    let account =
        CcAccount::create(&sim, "cc-rotate", json!({"refresh_token_kind": "rotating"})).await;
    let ids = account.generate(20).await;
    let settings = cc_settings(&account, &sandbox.url, json!({}));
    cc_tenant(&app, &sim, &sandbox.url, "cc-rotate", settings).await;

    let first = run_to_completion(&app, "cc-rotate", Duration::from_secs(30)).await;
    assert_eq!(first["new"], 20, "{first}");
    assert_eq!(account.stats().await["counters"]["token_refreshes"], 1);
    // A run's end (its report, the checkpoint) is written when it completes and flushed by
    // the next flush; killed before that, the restarted engine finishes the same run again
    // (deduplicated) and would count the edit below there. A pause is answered once durable:
    // it makes the completed run durable before the kill.
    for action in ["pause", "resume"] {
        let (status, body) = app
            .admin_call(
                Method::POST,
                &format!("/v1/tenants/cc-rotate/pollers/{SOURCE}/{action}"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{action}: {body}");
    }
    app.kill9();
    account.edit(&ids[3], "after-kill").await;
    app.start().await;
    let second = run_to_completion(&app, "cc-rotate", Duration::from_secs(30)).await;
    assert_eq!(second["changed"], 1, "{second}");
    let counters = account.stats().await["counters"].clone();
    assert_eq!(counters["token_refreshes"], 2, "{counters}");
    assert_eq!(
        counters["token_refusals"], 0,
        "a spent token was presented: {counters}"
    );

    // The original token is spent: the simulator refuses it.
    let refused = sim
        .client
        .post(format!(
            "{}/constant-contact/oauth2/default/v1/token",
            sandbox.url
        ))
        .basic_auth(&account.client_id, Some(&account.client_secret))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &account.refresh_token),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert_eq!(
        refused.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );

    let data_dir = app.data_dir();
    let log = app.log();
    for needle in [
        account.refresh_token.clone(),
        account.client_secret.clone(),
        format!("{}.rt.", account.id),
        format!("{}.at.", account.id),
    ] {
        assert_eq!(
            found_in_dir(&data_dir, &needle),
            None,
            "{needle} in the data dir"
        );
        assert!(!log.contains(&needle), "{needle} in the log");
    }
}

/// After a restart: every never-edited contact (they share one `updated_at` and are paged
/// by id) at or before the stored checkpoint is in the store (the contacts nearest the
/// checkpoint, where a checkpoint ahead of the queue would show, and a random sample of the
/// rest). Edited contacts are left out: an edit can land in the checkpoint's own second, or
/// behind the cursor of a run resumed after the restart, *after* the checkpoint was stored —
/// the overlap re-reads those, and the final checks count them.
async fn assert_checkpoint_not_ahead(
    app: &TestApp,
    tenant: &str,
    cc: &BTreeMap<String, Value>,
    versions: &BTreeMap<String, u64>,
    rng: &mut rand::rngs::StdRng,
) -> usize {
    let view = poller(app, tenant).await;
    let checkpoint = &view["checkpoint"];
    if checkpoint.is_null() {
        return 0;
    }
    let at_s = checkpoint["at"]
        .as_str()
        .unwrap()
        .parse::<jiff::Timestamp>()
        .unwrap()
        .as_second();
    let mark = (at_s, checkpoint["record_id"].as_str().unwrap().to_string());
    let mut covered: Vec<(i64, String)> = cc
        .iter()
        .filter(|(id, _)| versions[*id] == 1)
        .map(|(id, contact)| (updated_at_s(contact), id.clone()))
        .filter(|version| *version <= mark)
        .collect();
    covered.sort();
    let mut sample: BTreeSet<(i64, String)> = covered.iter().rev().take(40).cloned().collect();
    for _ in 0..20.min(covered.len()) {
        sample.insert(covered[rng.gen_range(0..covered.len())].clone());
    }
    for (version_s, id) in &sample {
        let record = engine_record(app, tenant, id).await.unwrap_or_else(|| {
            panic!("checkpoint {checkpoint} is ahead of the queue: no record of {id}")
        });
        assert_eq!(
            record["idempotency_key"],
            version_key(id, *version_s),
            "checkpoint {checkpoint} is ahead of the queue: {record}"
        );
    }
    sample.len()
}

/// The queued entries of a contact never repeat a version (same body twice).
async fn assert_no_duplicate_entries(
    app: &TestApp,
    tenant: &str,
    cc: &BTreeMap<String, Value>,
    versions: &BTreeMap<String, u64>,
) {
    for (id, contact) in cc {
        let record = engine_record(app, tenant, id)
            .await
            .unwrap_or_else(|| panic!("lost: the engine has no record of {id}"));
        assert_eq!(
            record["idempotency_key"],
            version_key(id, updated_at_s(contact)),
            "{id}: the latest version is lost: {record}"
        );
        let queued = record["queued"].as_array().unwrap();
        let bodies: BTreeSet<String> = queued.iter().map(|e| e["body"].to_string()).collect();
        assert_eq!(
            bodies.len(),
            queued.len(),
            "{id}: a version queued twice: {record}"
        );
        assert!(
            queued.len() as u64 <= versions[id],
            "{id}: {} entries for {} versions",
            queued.len(),
            versions[id]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_of_polls_loses_and_duplicates_nothing() {
    // Goal: 10 [20] kill -9 cycles at random moments of polls of 1,000 [5,000] contacts on
    // one data dir, with edits between the cycles → after every restart the checkpoint is
    // never ahead of the queue; after the last restart and completed runs no contact is
    // lost, no version is queued twice, and once Virtuous takes writes again every contact
    // arrives with at most one transaction per version.
    //
    // Virtuous refuses every write (429) during the kill cycles, so what the test sees is
    // the poller's crash safety: a kill between a Virtuous write and its completion would
    // re-send that write (at-least-once delivery, the same for every write; the gift path
    // has Virtuous's transactionId dedup and the reconciler for it).
    let seed = crash_seed();
    eprintln!("poll kill -9 seed {seed} (STEWARD_CRASH_SEED repeats it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let sandbox = ExternalSandbox::start();
    let sim = Sim::new(&sandbox.url);
    let mut app = TestApp::spawn(SpawnOptions::default()).await;
    let tenant = "cc-kill";
    let account =
        CcAccount::create(&sim, tenant, json!({"refresh_token_kind": "long_lived"})).await;
    let count = sized(1_000, 5_000);
    let cycles = sized(10, 20);
    let ids = account.generate(count).await;
    let mut versions: BTreeMap<String, u64> = ids.iter().map(|id| (id.clone(), 1)).collect();
    account
        .call(Method::PUT, "/faults", Some(json!({"latency_ms": 150})))
        .await;
    let settings = cc_settings(&account, &sandbox.url, json!({}));
    cc_tenant(&app, &sim, &sandbox.url, tenant, settings).await;
    sim.call(
        Method::PUT,
        &format!("/_sandbox/orgs/{tenant}/faults"),
        Some(json!({"throttle_rate": 1.0, "retry_after_s": 1})),
    )
    .await;
    // A run of the whole listing: pages × (latency + pacing).
    let run_ms = (count as u64 / 500 + 1) * 400;

    let started = Instant::now();
    let mut checked = 0;
    for cycle in 0..cycles {
        start_run(&app, tenant).await;
        let kill_after = rng.gen_range(0..run_ms);
        tokio::time::sleep(Duration::from_millis(kill_after)).await;
        app.kill9();
        for n in 0..5 {
            let id = &ids[rng.gen_range(0..count)];
            match (cycle + n) % 7 {
                5 => account.unsubscribe(id).await,
                6 => account.delete(id).await,
                _ => account.edit(id, &format!("c{cycle}n{n}")).await,
            }
            *versions.get_mut(id).unwrap() += 1;
        }
        app.start().await;
        let cc = account.contacts().await;
        checked += assert_checkpoint_not_ahead(&app, tenant, &cc, &versions, &mut rng).await;
    }
    assert!(checked > 0, "no cycle stored a checkpoint");
    // The last restart: runs until one completes after every edit, then the store's view.
    run_to_completion(&app, tenant, Duration::from_secs(60)).await;
    run_to_completion(&app, tenant, Duration::from_secs(60)).await;
    let cc = account.contacts().await;
    assert_no_duplicate_entries(&app, tenant, &cc, &versions).await;

    sim.call(
        Method::DELETE,
        &format!("/_sandbox/orgs/{tenant}/faults"),
        None,
    )
    .await;
    wait_drained(&app, tenant, drain_timeout(count)).await;
    assert_virtuous_matches(&sim, tenant, &cc, &versions).await;
    eprintln!(
        "RELIABILITY: poll kill -9: {cycles} cycles, {count} contacts, {checked} checkpoint checks, lost 0, duplicates 0 ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
}
