//! Capture's pollers over the real sled store, with a scripted `Poller` (the adapters are
//! tested against the simulators in the `steward` crate).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use super::tests::{fast_settings, start_test_tenant, test_store};
use super::*;
use crate::poll::{
    PollAction, PollFetch, PollPage, PollRequest, PollSchedule, PolledItem, Poller, PollerSettings,
    PollerSpec, SourceLimits,
};
use crate::ports::{LocalFuture, SystemClock};
use crate::source_fact::AlertNote;
use crate::store::poll_ops::PauseReason;
use crate::store::{EntryFact, Lane, RecordKind, TenantRunState};
use crate::test_support::eventually;

/// One scripted answer.
pub(super) enum Answer {
    Fetch(PollFetch),
    /// Never answers (a fetch in flight when Capture dies).
    Hang,
    /// Answers once the test opens the gate.
    Gated(Arc<tokio::sync::Notify>, PollFetch),
}

/// A poller that answers from a script (an empty last page once it runs out) and records
/// every request.
#[derive(Default)]
pub(super) struct ScriptedPoller {
    script: Mutex<VecDeque<Answer>>,
    requests: Mutex<Vec<PollRequest>>,
}

impl ScriptedPoller {
    pub(super) fn push(&self, answer: Answer) {
        self.script.lock().unwrap().push_back(answer);
    }
    pub(super) fn requests(&self) -> Vec<PollRequest> {
        self.requests.lock().unwrap().clone()
    }
}

impl Poller for ScriptedPoller {
    fn fetch(&self, request: PollRequest) -> LocalFuture<PollFetch> {
        self.requests.lock().unwrap().push(request);
        match self.script.lock().unwrap().pop_front() {
            Some(Answer::Fetch(fetch)) => Box::pin(async move { fetch }),
            Some(Answer::Hang) => Box::pin(std::future::pending()),
            Some(Answer::Gated(gate, fetch)) => Box::pin(async move {
                gate.notified().await;
                fetch
            }),
            None => Box::pin(async {
                PollFetch::Page(PollPage {
                    calls: 1,
                    ..PollPage::default()
                })
            }),
        }
    }
}

fn contact(id: &str, version_ms: u64) -> PolledItem {
    PolledItem {
        record_id: id.to_string(),
        version_ms,
        entries: Ok(vec![NewEntry {
            fact: EntryFact {
                kind: RecordKind::Contact,
                source: "cc".to_string(),
                source_id: id.to_string(),
                idempotency_key: format!("cc:contact:{id}@{version_ms}"),
                lane: Lane::Live,
                transaction_source: "CC".to_string(),
                body_json: format!(r#"{{"referenceId":"{id}"}}"#),
            },
            aliases: Vec::new(),
            now_ms: SystemClock.now_ms(),
        }]),
    }
}

fn page(items: Vec<PolledItem>, next_cursor: Option<&str>) -> Answer {
    Answer::Fetch(PollFetch::Page(PollPage {
        items,
        next_cursor: next_cursor.map(str::to_string),
        calls: 1,
        ..Default::default()
    }))
}

pub(super) fn spec(poller: &Arc<ScriptedPoller>, limits: SourceLimits) -> PollerSpec {
    PollerSpec {
        settings: PollerSettings {
            source: "cc".to_string(),
            kind: "constant_contact".to_string(),
            schedule: PollSchedule::Off,
            overlap_ms: 300_000,
            limits,
            has_webhooks: false,
            parity_alert_pct: 1.0,
            time_zone: "UTC".to_string(),
        },
        poller: Arc::clone(poller) as Arc<dyn Poller>,
    }
}

fn last_outcome(handle: &TenantHandle) -> Option<String> {
    handle
        .poll_runs("cc", 1)
        .unwrap()
        .first()
        .map(|report| report.outcome.clone())
}

async fn started(
    runtime: &Runtime,
    store: &super::tests::TestStore,
    poller: &Arc<ScriptedPoller>,
    limits: SourceLimits,
) -> TenantHandle {
    // Paused: nothing is sent, so the queue shows what polling wrote.
    let handle = start_test_tenant(
        runtime,
        store,
        "poll",
        fast_settings(),
        TenantRunState::Paused,
    );
    eventually("children started", 5_000, || handle.children_started()).await;
    handle.replace_pollers(vec![spec(poller, limits)]);
    eventually("the poller to load", 5_000, || {
        handle.pollers().unwrap().len() == 1
    })
    .await;
    handle
}

#[actix_rt::test]
async fn a_run_writes_each_page_with_its_checkpoint_and_rereads_the_overlap_without_duplicates() {
    // Goal: pages become entries with the checkpoint in one write; the next run starts
    // overlap before the checkpoint, and what it reads again is counted unchanged, not queued.
    let store = test_store();
    let runtime = Runtime::new(1);
    let poller = Arc::new(ScriptedPoller::default());
    poller.push(page(
        vec![contact("a", 1_000_000), contact("b", 2_000_000)],
        Some("c1"),
    ));
    poller.push(page(vec![contact("c", 3_000_000)], None));
    let handle = started(&runtime, &store, &poller, SourceLimits::default()).await;
    handle.poll_command("cc", PollAction::Run).await.unwrap();
    eventually("the run to complete", 5_000, || {
        last_outcome(&handle).as_deref() == Some("completed")
    })
    .await;
    let progress = store
        .store
        .tenant("poll")
        .unwrap()
        .poll_progress("cc")
        .unwrap();
    let checkpoint = progress.checkpoint.unwrap();
    assert_eq!(
        (checkpoint.at_ms, checkpoint.record_id.as_str()),
        (3_000_000, "c")
    );
    assert!(progress.run.is_none());
    let requests = poller.requests();
    assert_eq!(
        requests[0],
        PollRequest {
            since_ms: 0,
            cursor: None,
            ..Default::default()
        }
    );
    assert_eq!(requests[1].cursor.as_deref(), Some("c1"));
    let report = handle.poll_runs("cc", 1).unwrap().remove(0);
    assert_eq!(
        (
            report.pages,
            report.fetched,
            report.new,
            report.changed,
            report.unchanged
        ),
        (2, 3, 3, 0, 0)
    );
    assert_eq!(store.store.tenant("poll").unwrap().queued_total(), 3);

    // Second run: b and c again (the overlap), c changed, d new, one rejected.
    let rejected = PolledItem {
        record_id: "bad".into(),
        version_ms: 3_500_000,
        entries: Err("no email".into()),
    };
    poller.push(page(
        vec![
            contact("b", 2_000_000),
            contact("c", 3_100_000),
            contact("d", 4_000_000),
            rejected,
        ],
        None,
    ));
    handle.poll_command("cc", PollAction::Run).await.unwrap();
    eventually("the second run", 5_000, || {
        handle.poll_runs("cc", 5).unwrap().len() == 2
    })
    .await;
    let report = handle.poll_runs("cc", 1).unwrap().remove(0);
    assert_eq!(
        poller.requests()[2].since_ms,
        3_000_000 - 300_000,
        "overlap before the checkpoint"
    );
    assert_eq!(
        (
            report.new,
            report.changed,
            report.unchanged,
            report.rejected
        ),
        (1, 1, 1, 1)
    );
    assert_eq!(report.rejections[0].reason, "no email");
    assert_eq!(
        store.store.tenant("poll").unwrap().queued_total(),
        5,
        "b was not queued again"
    );
}

#[actix_rt::test]
async fn throttles_are_waited_out_and_a_spent_quota_waits_for_its_reset_without_failing() {
    // Goal: the source's own limits pause the run with progress saved; neither is a failure.
    let store = test_store();
    let runtime = Runtime::new(1);
    let poller = Arc::new(ScriptedPoller::default());
    poller.push(Answer::Fetch(PollFetch::Throttled {
        retry_after_ms: 50,
        calls: 1,
    }));
    poller.push(page(vec![contact("a", 1_000)], Some("c1")));
    poller.push(Answer::Fetch(PollFetch::QuotaExhausted { calls: 1 }));
    poller.push(page(vec![contact("b", 2_000)], None));
    // The daily reset two seconds from now.
    let now_ms = SystemClock.now_ms();
    let reset_s = ((now_ms / 1_000 + 2) % 86_400) as u32;
    let limits = SourceLimits {
        per_second: Some(2),
        daily: Some(10_000),
        daily_reset_utc_s: reset_s,
    };
    let handle = started(&runtime, &store, &poller, limits).await;
    handle.poll_command("cc", PollAction::Run).await.unwrap();
    eventually("the quota wait", 5_000, || {
        handle.pollers().unwrap()[0]
            .state
            .quota_wait_until_ms
            .is_some()
    })
    .await;
    let snapshot = handle.pollers().unwrap().remove(0);
    assert_eq!(
        snapshot.progress.run.as_ref().unwrap().cursor.as_deref(),
        Some("c1"),
        "progress saved"
    );
    assert_eq!(snapshot.state.consecutive_failures, 0);
    eventually("the run to finish after the reset", 10_000, || {
        last_outcome(&handle).as_deref() == Some("completed")
    })
    .await;
    let report = handle.poll_runs("cc", 1).unwrap().remove(0);
    assert_eq!(
        (report.throttled, report.quota_waits, report.new),
        (1, 1, 2)
    );
    let requests = poller.requests();
    assert_eq!(
        requests.last().unwrap().cursor.as_deref(),
        Some("c1"),
        "resumed where it stopped"
    );
    // Per-second pacing: never more than 2 sends in any second.
    assert!(requests.len() >= 4);
}

#[actix_rt::test]
async fn three_failed_runs_pause_the_poller_with_an_alert_and_resume_clears_both() {
    // Goal: failures are counted per run; the third in a row pauses and alerts; an operator
    // resume clears the pause and resolves the alert once a run completes.
    let store = test_store();
    let runtime = Runtime::new(1);
    let poller = Arc::new(ScriptedPoller::default());
    for _ in 0..3 {
        poller.push(Answer::Fetch(PollFetch::Failed {
            message: "HTTP 500".into(),
            calls: 1,
        }));
    }
    let handle = started(&runtime, &store, &poller, SourceLimits::default()).await;
    for run in 1..=3u64 {
        handle.poll_command("cc", PollAction::Run).await.unwrap();
        eventually("the run to fail", 5_000, || {
            handle.poll_runs("cc", 10).unwrap().len() as u64 == run
        })
        .await;
    }
    let snapshot = handle.pollers().unwrap().remove(0);
    assert_eq!(snapshot.state.paused, Some(PauseReason::Failures));
    let tenant_store = store.store.tenant("poll").unwrap();
    assert!(tenant_store
        .alerts()
        .unwrap()
        .iter()
        .any(|alert| alert.code == "poller_failed"));
    let refused = handle.poll_command("cc", PollAction::Run).await;
    assert!(
        matches!(refused, Err(crate::poll::PollCommandError::Conflict(_))),
        "{refused:?}"
    );
    handle.poll_command("cc", PollAction::Resume).await.unwrap();
    handle.poll_command("cc", PollAction::Run).await.unwrap();
    eventually("a completed run", 5_000, || {
        last_outcome(&handle).as_deref() == Some("completed")
    })
    .await;
    let views = tenant_store.alert_views().unwrap();
    let alert = views
        .iter()
        .find(|view| view.alert.code == "poller_failed")
        .unwrap();
    assert!(alert.state.resolved_at_ms.is_some());
}

#[actix_rt::test]
async fn refused_credentials_pause_the_poller_with_an_alert() {
    // Goal: a refused credential is not retried on a schedule: paused, alert, until resumed.
    let store = test_store();
    let runtime = Runtime::new(1);
    let poller = Arc::new(ScriptedPoller::default());
    poller.push(Answer::Fetch(PollFetch::AuthRefused {
        message: "invalid_grant".into(),
    }));
    let handle = started(&runtime, &store, &poller, SourceLimits::default()).await;
    handle.poll_command("cc", PollAction::Run).await.unwrap();
    eventually("the pause", 5_000, || {
        handle.pollers().unwrap()[0].state.paused == Some(PauseReason::AuthRefused)
    })
    .await;
    assert_eq!(last_outcome(&handle).as_deref(), Some("auth_refused"));
    let alerts = store.store.tenant("poll").unwrap().alerts().unwrap();
    assert!(
        alerts
            .iter()
            .any(|alert| alert.code == "poller_auth_failed"
                && alert.message.contains("invalid_grant"))
    );
}

#[actix_rt::test]
async fn a_replaced_capture_resumes_the_run_from_its_stored_cursor() {
    // Goal: memory is not storage: a Capture killed mid-run leaves the cursor in the store
    // and its successor continues from it (nothing skipped, nothing read twice needlessly).
    let store = test_store();
    let runtime = Runtime::new(1);
    let poller = Arc::new(ScriptedPoller::default());
    poller.push(page(vec![contact("a", 1_000)], Some("c1")));
    poller.push(Answer::Hang);
    poller.push(page(vec![contact("b", 2_000)], None));
    let handle = started(&runtime, &store, &poller, SourceLimits::default()).await;
    handle.poll_command("cc", PollAction::Run).await.unwrap();
    eventually("the second fetch to hang", 5_000, || {
        poller.requests().len() == 2
    })
    .await;
    handle.kill_child(ActorKind::Capture, crate::messages::KillMode::Panic);
    eventually("the run to complete in the next generation", 10_000, || {
        last_outcome(&handle).as_deref() == Some("completed")
    })
    .await;
    let requests = poller.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[2].cursor.as_deref(), Some("c1"));
    let report = handle.poll_runs("cc", 1).unwrap().remove(0);
    assert_eq!(
        (report.pages, report.new),
        (2, 2),
        "the report survived the restart"
    );
}

#[actix_rt::test]
async fn pause_reset_and_schedules_obey_the_operator() {
    // Goal: a reset moves the checkpoint back (a re-read, deduplicated); pause stops the
    // schedule; an interval schedule runs on its own.
    let store = test_store();
    let runtime = Runtime::new(1);
    let poller = Arc::new(ScriptedPoller::default());
    poller.push(page(vec![contact("a", 5_000_000)], None));
    let handle = started(&runtime, &store, &poller, SourceLimits::default()).await;
    handle.poll_command("cc", PollAction::Run).await.unwrap();
    eventually("a run", 5_000, || last_outcome(&handle).is_some()).await;
    handle
        .poll_command(
            "cc",
            PollAction::Reset {
                since_ms: 1_000_000,
            },
        )
        .await
        .unwrap();
    poller.push(page(vec![contact("a", 5_000_000)], None));
    handle.poll_command("cc", PollAction::Run).await.unwrap();
    eventually("the re-read", 5_000, || {
        handle.poll_runs("cc", 5).unwrap().len() == 2
    })
    .await;
    assert_eq!(poller.requests()[1].since_ms, 1_000_000 - 300_000);
    assert_eq!(handle.poll_runs("cc", 1).unwrap()[0].unchanged, 1);
    assert_eq!(store.store.tenant("poll").unwrap().queued_total(), 1);

    // An interval schedule runs by itself; a pause stops it.
    let mut every = spec(&poller, SourceLimits::default());
    every.settings.schedule = PollSchedule::Every { interval_ms: 50 };
    handle.replace_pollers(vec![every]);
    eventually("scheduled runs", 5_000, || {
        handle.poll_runs("cc", 50).unwrap().len() >= 4
    })
    .await;
    handle.poll_command("cc", PollAction::Pause).await.unwrap();
    let after_pause = poller.requests().len();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await; // deliberate: no runs while paused
    assert!(
        poller.requests().len() <= after_pause + 1,
        "runs continued while paused"
    );
    let unknown = handle.poll_command("nope", PollAction::Run).await;
    assert!(matches!(
        unknown,
        Err(crate::poll::PollCommandError::UnknownSource(_))
    ));
}

#[actix_rt::test]
async fn only_a_completed_run_moves_the_checkpoint() {
    // Goal: a run that fails part-way leaves the checkpoint where the last complete run put
    // it (a listing read in two passes may be out of order), so nothing is skipped.
    let store = test_store();
    let runtime = Runtime::new(1);
    let poller = Arc::new(ScriptedPoller::default());
    poller.push(page(vec![contact("a", 1_000_000)], None));
    let handle = started(&runtime, &store, &poller, SourceLimits::default()).await;
    handle.poll_command("cc", PollAction::Run).await.unwrap();
    eventually("run 1", 5_000, || {
        last_outcome(&handle).as_deref() == Some("completed")
    })
    .await;
    poller.push(page(vec![contact("z", 9_000_000)], Some("c1")));
    poller.push(Answer::Fetch(PollFetch::Failed {
        message: "HTTP 502".into(),
        calls: 1,
    }));
    handle.poll_command("cc", PollAction::Run).await.unwrap();
    eventually("run 2 to fail", 5_000, || {
        last_outcome(&handle).as_deref() == Some("failed")
    })
    .await;
    let snapshot = handle.pollers().unwrap().remove(0);
    assert_eq!(
        snapshot.progress.checkpoint.unwrap().at_ms,
        1_000_000,
        "not moved by a failed run"
    );
    assert!(snapshot.progress.run.is_none());
    // The next run starts from the old checkpoint again (z is re-read, deduplicated).
    poller.push(page(vec![contact("z", 9_000_000)], None));
    handle.poll_command("cc", PollAction::Run).await.unwrap();
    eventually("run 3", 5_000, || {
        last_outcome(&handle).as_deref() == Some("completed")
    })
    .await;
    assert_eq!(poller.requests()[3].since_ms, 1_000_000 - 300_000);
    assert_eq!(handle.poll_runs("cc", 1).unwrap()[0].unchanged, 1);
    let snapshot = handle.pollers().unwrap().remove(0);
    assert_eq!(snapshot.progress.checkpoint.unwrap().at_ms, 9_000_000);
}

#[actix_rt::test]
async fn a_pause_during_a_fetch_that_fails_does_not_cut_the_next_run_short() {
    // Goal: pause while a fetch is out, the fetch answers throttled, resume: the next run
    // reads all its pages (a stale "end after this page" would end it after the first).
    let store = test_store();
    let runtime = Runtime::new(1);
    let poller = Arc::new(ScriptedPoller::default());
    let gate = Arc::new(tokio::sync::Notify::new());
    poller.push(Answer::Gated(
        Arc::clone(&gate),
        PollFetch::Throttled {
            retry_after_ms: 10,
            calls: 1,
        },
    ));
    let handle = started(&runtime, &store, &poller, SourceLimits::default()).await;
    handle.poll_command("cc", PollAction::Run).await.unwrap();
    eventually("the fetch to be out", 5_000, || {
        poller.requests().len() == 1
    })
    .await;
    handle.poll_command("cc", PollAction::Pause).await.unwrap();
    gate.notify_one();
    eventually("the run to end paused", 5_000, || {
        last_outcome(&handle).as_deref() == Some("paused")
    })
    .await;
    handle.poll_command("cc", PollAction::Resume).await.unwrap();
    poller.push(page(vec![contact("a", 1_000)], Some("c1")));
    poller.push(page(vec![contact("b", 2_000)], None));
    handle.poll_command("cc", PollAction::Run).await.unwrap();
    eventually("the next run to end", 5_000, || {
        handle.poll_runs("cc", 5).unwrap().len() == 2
    })
    .await;
    let report = handle.poll_runs("cc", 1).unwrap().remove(0);
    assert_eq!(
        (report.outcome.as_str(), report.pages),
        ("completed", 2),
        "{report:?}"
    );
}

#[actix_rt::test]
async fn pollers_changed_without_the_hint_are_picked_up_by_a_tick() {
    // Goal: the "pollers changed" message is only a hint: specs replaced in the hub without
    // it are loaded at Capture's next tick.
    let store = test_store();
    let runtime = Runtime::new(1);
    let poller = Arc::new(ScriptedPoller::default());
    let handle = started(&runtime, &store, &poller, SourceLimits::default()).await;
    let mut renamed = spec(&poller, SourceLimits::default());
    renamed.settings.source = "cc2".to_string();
    handle.shared.replace_pollers(vec![renamed]); // no hint sent
    eventually("the tick to reload", 5_000, || {
        handle.pollers().unwrap()[0].settings.source == "cc2"
            && handle.shared.poll_live().contains_key("cc2")
    })
    .await;
}

fn gift(id: &str, fingerprint: &str) -> PolledItem {
    PolledItem {
        record_id: id.to_string(),
        version_ms: 1_000,
        entries: Ok(vec![NewEntry {
            fact: EntryFact {
                kind: RecordKind::Gift,
                source: "cc".to_string(),
                source_id: id.to_string(),
                idempotency_key: format!("cc:gift:{id}"),
                lane: Lane::Live,
                transaction_source: "CC".to_string(),
                body_json: format!(r#"{{"amount":"{fingerprint}","giftDate":"2026-12-07"}}"#),
            },
            aliases: vec![crate::poll::gift_fingerprint_alias("cc", id, fingerprint)],
            now_ms: SystemClock.now_ms(),
        }]),
    }
}

fn open_alert(tenant: &crate::store::TenantStore, code: &str) -> Option<String> {
    let alert = tenant
        .alerts()
        .unwrap()
        .into_iter()
        .find(|alert| alert.code == code)?;
    let state = tenant.alert_state(code).unwrap();
    state.resolved_at_ms.is_none().then_some(alert.message)
}

#[actix_rt::test]
async fn a_source_position_travels_with_the_pages_and_their_alerts_and_changed_gifts_alert() {
    // Goal: a page's position is stored with its entries and handed back in every later
    // request (a Postgres slot is advanced only to it); a page's alerts are raised and its
    // resolves resolve; a gift seen again with another fingerprint — in a later page or the
    // same one — raises `source_gift_changed` and queues nothing; the same fingerprint is
    // quiet; a reset drops the position.
    let store = test_store();
    let runtime = Runtime::new(1);
    let poller = Arc::new(ScriptedPoller::default());
    poller.push(Answer::Fetch(PollFetch::Page(PollPage {
        items: vec![gift("g1", "10.00")],
        next_cursor: Some("more".into()),
        position: Some("P1".into()),
        alerts: vec![AlertNote {
            code: "cdc_slot_lag".into(),
            message: "behind".into(),
        }],
        ..Default::default()
    })));
    poller.push(Answer::Fetch(PollFetch::Page(PollPage {
        items: vec![gift("g1", "10.00"), gift("g2", "5.00")],
        next_cursor: None,
        resolve: vec!["cdc_slot_lag".into()],
        ..Default::default()
    })));
    let handle = started(&runtime, &store, &poller, SourceLimits::default()).await;
    handle.poll_command("cc", PollAction::Run).await.unwrap();
    eventually("the run to complete", 5_000, || {
        last_outcome(&handle).as_deref() == Some("completed")
    })
    .await;
    let requests = poller.requests();
    assert_eq!(requests[0].position, None);
    assert_eq!(requests[1].position.as_deref(), Some("P1"));
    let tenant = store.store.tenant("poll").unwrap();
    assert_eq!(
        tenant.poll_progress("cc").unwrap().position.as_deref(),
        Some("P1"),
        "a page without a position keeps the stored one"
    );
    assert_eq!(tenant.queued_total(), 2);
    assert_eq!(
        open_alert(&tenant, "cdc_slot_lag"),
        None,
        "raised, then resolved"
    );
    assert!(tenant
        .alerts()
        .unwrap()
        .iter()
        .any(|alert| alert.code == "cdc_slot_lag"));
    assert_eq!(open_alert(&tenant, crate::poll::GIFT_CHANGED_ALERT), None);

    // g1 again with another amount; g3 new and changed within the page.
    poller.push(Answer::Fetch(PollFetch::Page(PollPage {
        items: vec![
            gift("g1", "12.00"),
            gift("g3", "1.00"),
            gift("g3", "1.00"),
            gift("g3", "2.00"),
        ],
        position: Some("P2".into()),
        ..Default::default()
    })));
    handle.poll_command("cc", PollAction::Run).await.unwrap();
    eventually("the second run", 5_000, || {
        handle.poll_runs("cc", 5).unwrap().len() == 2
    })
    .await;
    assert_eq!(poller.requests()[2].position.as_deref(), Some("P1"));
    let message =
        open_alert(&tenant, crate::poll::GIFT_CHANGED_ALERT).expect("a changed gift alerts");
    assert!(
        message.contains("g3") && message.contains("now 2.00"),
        "{message}"
    );
    let raised = tenant
        .alerts()
        .unwrap()
        .into_iter()
        .find(|alert| alert.code == crate::poll::GIFT_CHANGED_ALERT)
        .unwrap();
    assert_eq!(
        raised.count, 2,
        "g1 (changed since an earlier page) and g3 (within the page), not g3's repeat"
    );
    assert_eq!(
        tenant.queued_total(),
        3,
        "only g3's first version is queued"
    );
    assert_eq!(
        tenant.poll_progress("cc").unwrap().position.as_deref(),
        Some("P2")
    );

    // Read again (an outbox's overlap, a repeat after a crash): told once, not at every read.
    poller.push(Answer::Fetch(PollFetch::Page(PollPage {
        items: vec![gift("g1", "12.00"), gift("g3", "2.00")],
        ..Default::default()
    })));
    handle.poll_command("cc", PollAction::Run).await.unwrap();
    eventually("the third run", 5_000, || {
        handle.poll_runs("cc", 5).unwrap().len() == 3
    })
    .await;
    let raised = tenant
        .alerts()
        .unwrap()
        .into_iter()
        .find(|alert| alert.code == crate::poll::GIFT_CHANGED_ALERT)
        .unwrap();
    assert_eq!(raised.count, 2, "a change already told is quiet");
    assert_eq!(tenant.queued_total(), 3);

    handle
        .poll_command("cc", PollAction::Reset { since_ms: 0 })
        .await
        .unwrap();
    assert_eq!(
        tenant.poll_progress("cc").unwrap().position,
        None,
        "a reset starts the source over"
    );
}
