//! Goal: issue 5 §3 — a crash at each durable boundary (the five crash points of
//! actors/src/failpoint.rs, armed by `STEWARD_FAILPOINTS`), then a restart without it, keeps
//! the invariants: nothing acknowledged is lost, nothing stored is stranded (the queue drains
//! to 0), no duplicate gift — except the unavoidable one after Virtuous accepted a batch,
//! which must be detected — and each test proves its point was hit (the log line written by
//! the point, and the engine dying by SIGKILL on its own). Each test prints one
//! `RELIABILITY:` line (run with `--nocapture`). The sandbox is its own process, so it
//! outlives the crashes. Two points fire before their write reaches the disk, so a crash
//! there always loses the move or the page; their tests add a crash after the flush (before
//! the answer) to prove the other side: what was flushed is kept whole.

#[path = "crash_failpoints_support.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{wait_until, TestApp};
use crate::push_e2e::reconcile_until_confirmed;
use support::*;

/// What the ingress boundary tests (1 and 2) found.
struct IngressRun {
    events: usize,
    payments: usize,
    acked_before_crash: usize,
    resent: usize,
    resent_duplicate: usize,
    /// Transactions Virtuous received (more than the payments when a crash lost completions
    /// and their batches were sent again; the sandbox's dedup rejects those at import).
    received: u64,
    drain_s: f64,
}

/// Concurrent signed Stripe events into an engine armed with `spec` (dedup on in the
/// sandbox) until the crash at `point`; restart; re-send every event without a 2xx (as
/// Stripe does) until each has one; drain; import. `pause_submission`: the submitter sends
/// nothing before the crash, so every flush has only ingress waiters.
async fn crash_during_ingress(
    tenant_id: &str,
    point: &str,
    spec: &str,
    pairs_and_redeliveries: bool,
    pause_submission: bool,
) -> IngressRun {
    let (sandbox, mut app) = start_armed(tenant_id, spec, json!({})).await;
    if pause_submission {
        set_paused(&app, tenant_id, true).await;
    }
    let traffic = one_time_traffic(21, 150, pairs_and_redeliveries);
    let unique: BTreeSet<String> = traffic.unique_payment_ids().into_iter().collect();
    let events = Arc::new(traffic.events);
    let all: Vec<usize> = (0..events.len()).collect();
    let first = send_events(&app, tenant_id, &events, all, 8).await;
    crashed_at(&mut app, point, 1).await;
    let acked_before: BTreeSet<usize> = first
        .iter()
        .filter(|(_, answer)| acknowledged(answer))
        .map(|(index, _)| *index)
        .collect();
    let unanswered: Vec<usize> = (0..events.len())
        .filter(|index| !acked_before.contains(index))
        .collect();
    assert!(
        !acked_before.is_empty() && !unanswered.is_empty(),
        "the crash came mid-traffic: {} acknowledged, {} not",
        acked_before.len(),
        unanswered.len()
    );

    let restarted = restart_unarmed(&mut app).await;
    if pause_submission {
        set_paused(&app, tenant_id, false).await;
    }
    let again = send_events(&app, tenant_id, &events, unanswered.clone(), 4).await;
    for (index, answer) in &again {
        assert!(
            acknowledged(answer),
            "re-sent event {} after the restart: {answer:?}",
            events[*index].id
        );
    }
    let resent_duplicate = again
        .values()
        .flatten()
        .filter(|(status, body)| *status == 200 && body.contains("\"duplicate\""))
        .count();
    let drain_s = drained(&app, tenant_id, restarted).await;
    let gifts = imported_gifts(&sandbox, tenant_id).await;

    // Nothing acknowledged lost: every payment with a 2xx before the crash has its gift.
    let acked_payments: BTreeSet<&str> = acked_before
        .iter()
        .filter_map(|index| payment_of(&events[*index]))
        .collect();
    for payment in &acked_payments {
        assert_eq!(
            gifts.get(*payment),
            Some(&1),
            "payment {payment} was acknowledged before the crash"
        );
    }
    // After the re-sends every payment is acknowledged: each has exactly one gift.
    assert_one_gift_each(&gifts, &unique);
    let received = sandbox.stats(tenant_id).await["transactions_received"]
        .as_u64()
        .unwrap();
    // No record stranded: every one reaches `confirmed` by the confirmation pass.
    let status = reconcile_until_confirmed(&app, tenant_id, unique.len() as u64).await;
    assert_eq!(
        status["counts"]["captured"].as_u64(),
        Some(unique.len() as u64),
        "one captured record per payment: {status}"
    );
    assert_eq!(status["counts"]["dead"].as_u64(), Some(0), "{status}");
    IngressRun {
        events: events.len(),
        payments: unique.len(),
        acked_before_crash: acked_before.len(),
        resent: unanswered.len(),
        resent_duplicate,
        received,
        drain_s,
    }
}

#[tokio::test]
async fn crash_after_write_before_flush_loses_and_duplicates_nothing() {
    // Goal: a crash after a write group is applied but before its flush (the 16th group,
    // under 8 concurrent senders) loses no acknowledged payment and, once Stripe's re-sends
    // are answered, leaves exactly one gift per payment (sandbox dedup on).
    let point = "after_write_before_flush";
    let run = crash_during_ingress(
        "fp-write",
        point,
        "after_write_before_flush=15*off->return",
        true,
        false,
    )
    .await;
    eprintln!(
        "RELIABILITY: failpoint {point}: hit yes; {} events / {} payments, {} acknowledged before the crash, {} re-sent after it ({} answered `200 duplicate`); lost 0, duplicate gifts 0, all {} confirmed; Virtuous received {} transactions (sandbox dedup on); drain {:.1} s",
        run.events, run.payments, run.acked_before_crash, run.resent, run.resent_duplicate, run.payments, run.received, run.drain_s
    );
}

#[tokio::test]
async fn crash_after_flush_before_ack_answers_the_resend_as_duplicate() {
    // Goal: a crash after a flush but before its waiters are answered: the events whose
    // writes were durable come back `200 duplicate` when re-sent (at least one must), and
    // every payment still has exactly one gift. One event per payment, so a `duplicate`
    // on re-send can only mean "stored before the crash, never answered".
    let point = "after_flush_before_ack";
    let run = crash_during_ingress(
        "fp-ack",
        point,
        "after_flush_before_ack=10*off->return",
        false,
        true,
    )
    .await;
    assert!(
        run.resent_duplicate >= 1,
        "no re-sent event was durable-but-unanswered: the crash proved nothing"
    );
    eprintln!(
        "RELIABILITY: failpoint {point}: hit yes; {} events / {} payments, {} acknowledged before the crash, {} re-sent, {} of them `200 duplicate` (durable, unanswered); lost 0, duplicate gifts 0, all {} confirmed; Virtuous received {} transactions; drain {:.1} s",
        run.events, run.payments, run.acked_before_crash, run.resent, run.resent_duplicate, run.payments, run.received, run.drain_s
    );
}

#[tokio::test]
async fn crash_after_accept_before_submitted_duplicates_are_all_detected() {
    // Goal: with sandbox dedup OFF, a crash after Virtuous accepted a batch but before its
    // entries are `submitted` makes the restarted engine send that batch again (same keys):
    // duplicate gifts. The confirmation pass must detect every one — the record is
    // `duplicate_detected`, `steward_duplicates_detected_total` counts it, a `duplicate_gift`
    // alert says so — and there must be at least one (the crash really duplicated).
    let point = "after_accept_before_submitted";
    let tenant_id = "fp-accept";
    let (sandbox, mut app) = start_armed(
        tenant_id,
        &format!("{point}=return"),
        json!({"dedup_transactions": false}),
    )
    .await;
    // Paused while the events come in, so the first call is a full batch.
    set_paused(&app, tenant_id, true).await;
    let traffic = one_time_traffic(31, 40, false);
    let unique: BTreeSet<String> = traffic.unique_payment_ids().into_iter().collect();
    let events = Arc::new(traffic.events);
    let answers = send_events(&app, tenant_id, &events, (0..events.len()).collect(), 4).await;
    assert!(answers.values().all(acknowledged), "{answers:?}");
    resume_into_crash(&app, tenant_id).await;
    crashed_at(&mut app, point, 1).await;
    let received_at_crash = sandbox.stats(tenant_id).await["transactions_received"]
        .as_u64()
        .unwrap();

    let restarted = restart_unarmed(&mut app).await;
    let drain_s = drained(&app, tenant_id, restarted).await;
    let gifts = imported_gifts(&sandbox, tenant_id).await;
    assert_eq!(
        gifts.keys().cloned().collect::<BTreeSet<_>>(),
        unique,
        "none lost"
    );
    let duplicated: BTreeSet<String> = gifts
        .iter()
        .filter(|(_, count)| **count > 1)
        .map(|(id, _)| id.clone())
        .collect();
    assert!(
        !duplicated.is_empty(),
        "the re-sent batch made no duplicate gift ({received_at_crash} received at the crash): the test proved nothing"
    );

    // Confirmation passes until every record is settled (confirmed or flagged).
    reconcile_until_confirmed(&app, tenant_id, unique.len() as u64).await;
    let mut detected = BTreeSet::new();
    for payment in &unique {
        let record = record(&app, tenant_id, &format!("gift/stripe/{payment}"))
            .await
            .unwrap_or_else(|| panic!("no record for payment {payment}"));
        match record["state"].as_str() {
            Some("duplicate_detected") => {
                detected.insert(payment.clone());
            }
            Some("confirmed") => {}
            other => panic!("payment {payment} ended {other:?}: {record}"),
        }
    }
    assert_eq!(
        detected, duplicated,
        "every duplicate gift detected, nothing else"
    );
    // A pass confirms its records first, then counts and alerts each duplicate: the metric
    // and the alert follow the records' states within moments.
    let expected = duplicated.len() as u64;
    let (metric, alert) = wait_until(
        Duration::from_secs(30),
        "duplicates counted and alerted",
        || async {
            let metric = counter_for_tenant(
                &app.metrics_text().await,
                "steward_duplicates_detected_total",
                tenant_id,
            );
            let status = app.status(tenant_id).await;
            let alert = status["alerts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|alert| alert["code"] == "duplicate_gift")
                .cloned()?;
            (metric >= expected && alert["count"].as_u64() >= Some(expected))
                .then_some((metric, alert))
        },
    )
    .await;
    assert_eq!(metric, expected, "the metric counts each duplicate once");
    assert_eq!(
        alert["count"].as_u64(),
        Some(expected),
        "one alert count per duplicate: {alert}"
    );
    eprintln!(
        "RELIABILITY: failpoint {point}: hit yes; sandbox dedup off; {} payments, {} transactions received at the crash; duplicate gifts {} = detected {} (records duplicate_detected, metric {metric}, alert count {}); lost 0; drain {drain_s:.1} s",
        unique.len(), received_at_crash, duplicated.len(), detected.len(), alert["count"]
    );
}

/// Each refused customer has exactly one dead letter: refused with 400, with the body its
/// entry had when first queued (the same JSON text).
fn assert_one_dead_letter_each(
    dead: &[Value],
    customers: &[String],
    first_bodies: &BTreeMap<String, String>,
) {
    assert_eq!(
        dead.len(),
        customers.len(),
        "one dead letter per refused entry: {dead:?}"
    );
    for customer in customers {
        let letter = dead.iter().find(|d| d["source_id"] == *customer).unwrap();
        assert_eq!(
            letter["body"].to_string(),
            serde_json::from_str::<Value>(&first_bodies[customer])
                .unwrap()
                .to_string(),
            "{customer}'s body"
        );
        assert_eq!(letter["status"], 400, "{letter}");
    }
}

#[tokio::test]
async fn crash_in_a_dead_letter_move_keeps_each_entry_in_exactly_one_place() {
    // Goal: a crash in the middle of a dead-letter move — (a) the submitter dead-lettering a
    // permanently refused entry, (b) an operator's replay — leaves each entry in exactly one
    // place (queued or dead, never both, never neither); the refused entries end as exactly
    // one dead letter each, with the body first queued (byte for byte), and the valid
    // payments still make one gift each.
    let point = "dead_letter_move";
    let tenant_id = "fp-dead";
    let (sandbox, mut app) = start_armed(tenant_id, &format!("{point}=return"), json!({})).await;
    set_paused(&app, tenant_id, true).await;
    let traffic = one_time_traffic(41, 20, false);
    let unique: BTreeSet<String> = traffic.unique_payment_ids().into_iter().collect();
    let mut events = traffic.events;
    let invalid = crate::push_e2e::invalid_customer_events(4);
    let customers: Vec<String> = (0..invalid.len())
        .map(|n| format!("cus_invalid{n}"))
        .collect();
    events.extend(invalid);
    let events = Arc::new(events);
    let answers = send_events(&app, tenant_id, &events, (0..events.len()).collect(), 4).await;
    assert!(answers.values().all(acknowledged), "{answers:?}");
    // The bodies exactly as first queued (bytes), read from the stopped engine's store.
    app.terminate();
    let first_bodies: BTreeMap<String, String> =
        crate::ingress_support::live_entries(&app.data_dir(), tenant_id)
            .into_iter()
            .filter(|entry| customers.contains(&entry.fact.source_id))
            .map(|entry| (entry.fact.source_id, entry.fact.body_json))
            .collect();
    assert_eq!(first_bodies.len(), customers.len(), "{first_bodies:?}");
    app.start().await; // still armed, still paused

    // (a) The submitter meets the first 400 and dies inside the move.
    resume_into_crash(&app, tenant_id).await;
    crashed_at(&mut app, point, 1).await;
    let mut restarted = restart_unarmed(&mut app).await;
    hold_still(&app, tenant_id).await;
    let after_crash = places(&app, tenant_id, &customers).await;
    assert!(
        after_crash.iter().all(|(queued, dead)| queued + dead == 1),
        "each refused entry in exactly one place after the crash: {after_crash:?}"
    );
    let dead_at_restart = after_crash.iter().filter(|(_, dead)| *dead == 1).count();
    set_paused(&app, tenant_id, false).await;
    let drain_a_s = drained(&app, tenant_id, restarted).await;
    let dead = dead_letters(&app, tenant_id).await;
    assert_one_dead_letter_each(&dead, &customers, &first_bodies);

    // (b) An operator replays one of them and the replay's move crashes; then another, whose
    // replay crashes after its flush (before the answer), so it must have happened.
    hold_still(&app, tenant_id).await;
    let mut replays = Vec::new();
    for (customer, spec, crash_at) in [
        (&customers[0], format!("{point}=return"), point),
        (
            &customers[1],
            "after_flush_before_ack=return".to_string(),
            "after_flush_before_ack",
        ),
    ] {
        let letter_id = dead.iter().find(|d| d["source_id"] == *customer).unwrap()["id"].clone();
        restart_armed(&mut app, &spec).await;
        let replay = format!("/v1/tenants/{tenant_id}/dead-letters/{letter_id}/replay");
        let answer = app.admin(Method::POST, &replay).send().await;
        assert!(answer.is_err(), "the replay was answered: {answer:?}");
        crashed_at(&mut app, crash_at, if crash_at == point { 2 } else { 1 }).await;
        restarted = restart_unarmed(&mut app).await; // still paused: nothing moves while we look
        let (queued, dead) = places(&app, tenant_id, std::slice::from_ref(customer)).await[0];
        assert_eq!(
            queued + dead,
            1,
            "replayed {customer} in exactly one place: queued {queued}, dead {dead}"
        );
        replays.push((customer, letter_id, queued == 1));
    }
    assert!(replays[1].2, "a replay flushed before the crash is kept");
    set_paused(&app, tenant_id, false).await;
    let drain_b_s = drained(&app, tenant_id, restarted).await;
    let dead = dead_letters(&app, tenant_id).await;
    assert_one_dead_letter_each(&dead, &customers, &first_bodies);
    for (customer, letter_id, survived) in &replays {
        let letter_now = dead.iter().find(|d| d["source_id"] == **customer).unwrap();
        // A replay that survived was submitted again and refused again: a new dead letter.
        assert_eq!(letter_now["id"] != *letter_id, *survived, "{letter_now}");
    }
    let replay_survived = replays[0].2;
    let status = app.status(tenant_id).await;
    assert_eq!(
        status["counts"]["dead"].as_u64(),
        Some(customers.len() as u64),
        "{status}"
    );
    let gifts = imported_gifts(&sandbox, tenant_id).await;
    assert_one_gift_each(&gifts, &unique);
    reconcile_until_confirmed(&app, tenant_id, unique.len() as u64).await;
    // Byte for byte: the dead letters' stored bodies are the bodies first queued.
    app.terminate();
    assert_eq!(dead_letter_bodies(&app.data_dir(), tenant_id), first_bodies);
    eprintln!(
        "RELIABILITY: failpoint {point}: hit yes (2 crashes, + 1 after a replay's flush); (a) submitter: {} refused entries, {dead_at_restart} already dead after the crash, each in exactly one place, ended {} dead letters with the first body byte for byte; (b) replay crashed in the move: replay {} the crash; replay crashed after its flush: kept; each entry in exactly one place; {} payments: lost 0, duplicate gifts 0, all confirmed; drain after the restarts {drain_a_s:.1} s and {drain_b_s:.1} s",
        customers.len(), dead.len(), if replay_survived { "survived" } else { "was lost with" }, unique.len()
    );
}

/// A page of synthetic gifts `{prefix}0…` written with checkpoint `poll={value}`.
fn page_path(tenant_id: &str, count: usize, prefix: &str, value: &str) -> String {
    format!(
        "/v1/tenants/{tenant_id}/_test/enqueue?count={count}&prefix={prefix}&checkpoint=poll={value}"
    )
}

/// After a crash while writing page `value`: the checkpoint and the page's entries agree
/// (`value` ⇒ all of them exist, anything older ⇒ none). Whether the page was kept.
async fn page_kept(
    app: &TestApp,
    tenant_id: &str,
    count: usize,
    prefix: &str,
    value: &str,
) -> bool {
    let checkpoint = app
        .admin_json(
            Method::GET,
            &format!("/v1/tenants/{tenant_id}/_test/checkpoint/poll"),
        )
        .await;
    let kept = checkpoint["value"].as_str() == Some(value);
    let mut existing = 0;
    for index in 0..count {
        let found = record(app, tenant_id, &format!("gift/synthetic/{prefix}{index}")).await;
        existing += usize::from(found.is_some());
    }
    let expected = if kept { count } else { 0 };
    assert_eq!(
        existing, expected,
        "checkpoint {checkpoint} and {existing} of page {value}'s entries"
    );
    kept
}

/// Runs the page again as a poller that cannot know what the crash kept; what it queued.
async fn rerun_page(app: &TestApp, path: &str, kept: bool, count: usize) -> u64 {
    let rerun = app.admin(Method::POST, path).send().await.unwrap();
    assert_eq!(rerun.status(), 202);
    let rerun: Value = rerun.json().await.unwrap();
    let queued = rerun["queued"].as_u64().unwrap();
    assert_eq!(queued, if kept { 0 } else { count as u64 }, "{rerun}");
    queued
}

#[tokio::test]
async fn crash_in_a_checkpoint_advance_keeps_entries_and_checkpoint_together() {
    // Goal: a crash while a page of entries and the checkpoint covering it are being written
    // leaves both or neither: checkpoint `page-1` ⇒ all N entries exist, none ⇒ none exist.
    // The crash point sits before the group is applied, so "neither" is what it produces;
    // a second page crashes after its flush (before the answer) and must be kept whole —
    // the "both" side. Re-running each page as a poller would then makes each entry reach
    // Virtuous exactly once (sandbox dedup OFF, so a second send would be a second gift).
    let point = "checkpoint_advance";
    let tenant_id = "fp-checkpoint";
    let count = 25;
    let (sandbox, mut app) = start_armed(
        tenant_id,
        &format!("{point}=return"),
        json!({"dedup_transactions": false}),
    )
    .await;
    let page_1 = page_path(tenant_id, count, "cp1_", "page-1");
    let answer = app.admin(Method::POST, &page_1).send().await;
    assert!(answer.is_err(), "the page was answered: {answer:?}");
    crashed_at(&mut app, point, 1).await;
    let restarted = restart_unarmed(&mut app).await;
    let kept_1 = page_kept(&app, tenant_id, count, "cp1_", "page-1").await;
    let captured = app.status(tenant_id).await["counts"]["captured"].as_u64();
    assert_eq!(captured, Some(if kept_1 { count as u64 } else { 0 }));
    let queued_1 = rerun_page(&app, &page_1, kept_1, count).await;
    let drain_s = drained(&app, tenant_id, restarted).await;

    // Page 2: drained and paused (no submitter, no reconciler), so the page's flush is the
    // first one anybody waits for.
    set_paused(&app, tenant_id, true).await;
    restart_armed(&mut app, "after_flush_before_ack=return").await;
    let page_2 = page_path(tenant_id, count, "cp2_", "page-2");
    let answer = app.admin(Method::POST, &page_2).send().await;
    assert!(answer.is_err(), "page 2 was answered: {answer:?}");
    crashed_at(&mut app, "after_flush_before_ack", 1).await;
    let restarted = restart_unarmed(&mut app).await;
    assert!(
        page_kept(&app, tenant_id, count, "cp2_", "page-2").await,
        "page 2 was flushed before the crash: it must be kept"
    );
    set_paused(&app, tenant_id, false).await;
    rerun_page(&app, &page_2, true, count).await;
    drained(&app, tenant_id, restarted).await;

    let gifts = imported_gifts(&sandbox, tenant_id).await;
    let wanted: BTreeSet<String> = ["cp1_", "cp2_"]
        .iter()
        .flat_map(|prefix| (0..count).map(move |i| format!("{prefix}{i}")))
        .collect();
    assert_one_gift_each(&gifts, &wanted);
    reconcile_until_confirmed(&app, tenant_id, wanted.len() as u64).await;
    let received = sandbox.stats(tenant_id).await["transactions_received"].as_u64();
    assert_eq!(received, Some(wanted.len() as u64), "sent once each");
    eprintln!(
        "RELIABILITY: failpoint {point}: hit yes; page of {count}: after the crash checkpoint {} with {} entries (together), re-run queued {queued_1}; a second page crashed after its flush: checkpoint page-2 with all {count} entries; each of {} reached Virtuous once (dedup off), all confirmed; lost 0, duplicates 0; drain {drain_s:.1} s",
        if kept_1 { "page-1" } else { "absent" }, if kept_1 { count } else { 0 }, wanted.len()
    );
}
