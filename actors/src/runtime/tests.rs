//! Tests of the tenant actor tree (supervision, back-pressure, pause), each on its own sled
//! store in a temp dir (`sled_tests.rs` has the store-centred ones). Small heartbeats and
//! backoffs; waits poll with a deadline.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::messages::WorkHint;
use crate::ports::ManualClock;
use crate::store::{EntryFact, Lane, RecordKind, StoreOptions, TenantRunState};
use crate::test_support::{eventually, reply, FakeCrm};

pub(super) fn fast_settings() -> TenantSettings {
    TenantSettings {
        heartbeat_ms: 200,
        restart_backoff_initial_ms: 20,
        restart_backoff_max_ms: 10_000,
        mailbox_capacity: 64,
        ..TenantSettings::default()
    }
}

/// A store in a temp dir, removed when the test drops it (the store first).
pub(super) struct TestStore {
    pub(super) store: Store,
    _dir: tempfile::TempDir,
}

pub(super) fn test_store() -> TestStore {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path(), StoreOptions::default()).expect("store opens");
    TestStore { store, _dir: dir }
}

/// Starts a tenant on `store` whose Virtuous accepts every write: a running tenant with
/// work submits it (and stays running) instead of being refused and waiting for an
/// operator. Tests that need entries to stay queued start the tenant paused.
pub(super) fn start_test_tenant(
    runtime: &Runtime,
    store: &TestStore,
    tenant_id: &str,
    settings: TenantSettings,
    run_state: TenantRunState,
) -> TenantHandle {
    runtime.start_tenant(TenantSpec {
        tenant_id: tenant_id.to_string(),
        store: store.store.clone(),
        tenant_store: store.store.tenant(tenant_id).expect("tenant store"),
        settings,
        run_state,
        crm: FakeCrm::scripted(|_| reply(200)),
    })
}

pub(super) fn actor(handle: &TenantHandle, kind: ActorKind) -> ActorStatus {
    handle.status().actors[kind.name()].clone()
}

pub(super) fn observed_u64(handle: &TenantHandle, kind: ActorKind, field: &str) -> u64 {
    actor(handle, kind).observed[field].as_u64().unwrap_or(0)
}

fn entry(key: &str) -> NewEntry {
    NewEntry {
        fact: EntryFact {
            kind: RecordKind::Gift,
            source: "stripe".to_string(),
            source_id: format!("pi_{key}"),
            idempotency_key: key.to_string(),
            lane: Lane::Live,
            transaction_source: "Stripe".to_string(),
            body_json: "{}".to_string(),
        },
        aliases: Vec::new(),
        now_ms: 1,
    }
}

async fn kill_and_wait_for_restart(
    handle: &TenantHandle,
    kind: ActorKind,
    mode: KillMode,
) -> ActorStatus {
    let restarts_before = actor(handle, kind).restarts;
    let generation_before = actor(handle, kind).generation;
    handle.kill_child(kind, mode);
    eventually("the child to be re-created and running", 5_000, || {
        let status = actor(handle, kind);
        status.restarts == restarts_before + 1
            && status.generation > generation_before
            && status.state == "running"
    })
    .await;
    actor(handle, kind)
}

#[actix_rt::test]
async fn panicking_child_is_restarted_and_counted_with_doubling_backoff() {
    // Goal: a child that panics in a handler is re-created; restarts count 1, 2, 3 with backoffs 20, 40, 80 ms.
    let runtime = Runtime::new(1);
    let store = test_store();
    let handle = start_test_tenant(
        &runtime,
        &store,
        "panics",
        fast_settings(),
        TenantRunState::Running,
    );
    eventually("children started", 5_000, || handle.children_started()).await;
    let mut backoffs = Vec::new();
    for _ in 0..3 {
        let status = kill_and_wait_for_restart(&handle, ActorKind::Capture, KillMode::Panic).await;
        assert_eq!(status.last_error.as_deref(), Some("panicked in a handler"));
        backoffs.push(status.last_backoff_ms);
    }
    assert_eq!(backoffs, vec![20, 40, 80]);
    let capture = actor(&handle, ActorKind::Capture);
    assert_eq!(
        (
            capture.restarts,
            capture.stall_replacements,
            capture.generation
        ),
        (3, 0, 4)
    );
    // The siblings were untouched.
    assert_eq!(actor(&handle, ActorKind::Queue).restarts, 0);
    assert!(runtime.stop_tenant("panics").await);
}

#[actix_rt::test]
async fn child_stopping_with_an_error_is_restarted_with_its_reason() {
    // Goal: an error exit is re-created after the initial backoff and the error is shown.
    let runtime = Runtime::new(1);
    let store = test_store();
    let handle = start_test_tenant(
        &runtime,
        &store,
        "errors",
        fast_settings(),
        TenantRunState::Running,
    );
    eventually("children started", 5_000, || handle.children_started()).await;
    let status = kill_and_wait_for_restart(&handle, ActorKind::Reconciler, KillMode::Error).await;
    assert_eq!(status.restarts, 1);
    assert_eq!(status.last_backoff_ms, 20);
    assert_eq!(
        status.last_error.as_deref(),
        Some("killed by the test hook (error)")
    );
    assert_eq!(
        handle.status().actors[SUPERVISOR_NAME].observed["restarts_total"],
        1
    );
    runtime.shutdown().await;
}

#[actix_rt::test]
async fn stalled_child_is_replaced_and_its_old_generation_cannot_act() {
    // Goal: a child silent for longer than a heartbeat is replaced and counted; the old generation refuses work when it wakes.
    let settings = TenantSettings {
        heartbeat_ms: 300,
        ..fast_settings()
    };
    let runtime = Runtime::new(1);
    let store = test_store();
    let handle = start_test_tenant(
        &runtime,
        &store,
        "stalls",
        settings,
        TenantRunState::Running,
    );
    eventually("children started", 5_000, || handle.children_started()).await;
    let old_submitter = handle
        .shared()
        .addresses()
        .submitter
        .expect("submitter running")
        .work_hint;
    let old_generation = actor(&handle, ActorKind::Submitter).generation;

    handle.kill_child(ActorKind::Submitter, KillMode::Stall);
    eventually("the submitter to stall", 2_000, || {
        actor(&handle, ActorKind::Submitter).observed["stalled_by_test_hook"] == true
    })
    .await;
    // Queued behind the stall: the old generation sees it only after being replaced.
    let guard = handle.shared().cell(ActorKind::Submitter).mailbox.guard();
    old_submitter
        .try_send(WorkHint {
            entries_added: 1,
            guard,
        })
        .expect("queued");

    eventually(
        "the replacement to run and the old one to refuse",
        5_000,
        || {
            let status = actor(&handle, ActorKind::Submitter);
            status.state == "running"
                && status.generation > old_generation
                && status.stale_refusals == 1
        },
    )
    .await;
    let status = actor(&handle, ActorKind::Submitter);
    assert_eq!((status.restarts, status.stall_replacements), (1, 1));
    assert!(
        status
            .last_error
            .as_deref()
            .unwrap_or("")
            .starts_with("no progress for"),
        "{:?}",
        status.last_error
    );
    // The new generation never saw the hint: the old one refused it instead of acting.
    assert_eq!(status.observed["work_hints"], 0);
    assert_eq!(status.observed["stalled_by_test_hook"], false);
    eventually("the old submitter to stop", 2_000, || {
        !old_submitter.connected()
    })
    .await;
    // Its stop report came from a replaced generation: no second restart. Wait until the
    // supervisor has handled every message (its mailbox is empty), then look.
    eventually("the supervisor to handle the stop report", 2_000, || {
        handle.status().actors[SUPERVISOR_NAME].mailbox_depth == 0
    })
    .await;
    assert_eq!(actor(&handle, ActorKind::Submitter).restarts, 1);
    runtime.shutdown().await;
}

#[actix_rt::test]
async fn status_answers_while_a_child_is_stalled() {
    // Goal: status reads shared cells, so it answers while a child is stuck (frozen clock: no replacement).
    let clock = Arc::new(ManualClock::new(1_000_000));
    let runtime = Runtime::with_clock(1, clock);
    let settings = TenantSettings {
        heartbeat_ms: 60,
        ..fast_settings()
    };
    let store = test_store();
    let handle = start_test_tenant(&runtime, &store, "stuck", settings, TenantRunState::Running);
    eventually("children started", 5_000, || handle.children_started()).await;
    handle.kill_child(ActorKind::Reconciler, KillMode::Stall);
    eventually("the reconciler to stall", 2_000, || {
        actor(&handle, ActorKind::Reconciler).observed["stalled_by_test_hook"] == true
    })
    .await;
    let reconciler_ticks = observed_u64(&handle, ActorKind::Reconciler, "ticks");
    let queue_ticks = observed_u64(&handle, ActorKind::Queue, "ticks");
    eventually("the queue to keep ticking", 5_000, || {
        observed_u64(&handle, ActorKind::Queue, "ticks") >= queue_ticks + 3
    })
    .await;
    let status = handle.status();
    assert_eq!(
        status.actors["reconciler"].observed["ticks"],
        reconciler_ticks
    );
    assert_eq!(status.actors["reconciler"].state, "running");
    assert_eq!(status.actors["reconciler"].restarts, 0);
    runtime.shutdown().await;
}

#[actix_rt::test]
async fn enqueue_is_answered_after_durable_and_hints_queue_and_submitter() {
    // Goal: enqueue goes through Capture, reports duplicates, and wakes Queue and Submitter.
    let runtime = Runtime::new(1);
    let store = test_store();
    let handle = start_test_tenant(
        &runtime,
        &store,
        "enqueues",
        fast_settings(),
        TenantRunState::Paused,
    );
    eventually("children started", 5_000, || handle.children_started()).await;
    let outcomes = handle
        .enqueue(vec![entry("k1"), entry("k2"), entry("k1")])
        .await
        .expect("enqueued");
    assert_eq!(outcomes.len(), 3);
    assert!(matches!(outcomes[0], EnqueueOutcome::Queued { .. }));
    assert!(matches!(outcomes[1], EnqueueOutcome::Queued { .. }));
    assert_eq!(outcomes[2], EnqueueOutcome::Duplicate);
    eventually("queue and submitter to see the hint", 2_000, || {
        observed_u64(&handle, ActorKind::Queue, "work_hints") == 1
            && observed_u64(&handle, ActorKind::Submitter, "work_hints") == 1
    })
    .await;
    let capture = actor(&handle, ActorKind::Capture).observed;
    assert_eq!(
        (
            capture["entries_queued"].as_u64(),
            capture["duplicates"].as_u64()
        ),
        (Some(2), Some(1))
    );
    assert_eq!(
        actor(&handle, ActorKind::Queue).observed["lanes"]["live"]["depth"],
        2
    );
    assert_eq!(actor(&handle, ActorKind::Capture).mailbox_depth, 0);
    runtime.shutdown().await;
}

#[actix_rt::test]
async fn restarted_children_rebuild_their_state_from_the_store() {
    // Goal: after a restart, Queue and Capture show what the store holds, not an empty state.
    let runtime = Runtime::new(1);
    let store = test_store();
    let handle = start_test_tenant(
        &runtime,
        &store,
        "rebuilds",
        fast_settings(),
        TenantRunState::Paused,
    );
    eventually("children started", 5_000, || handle.children_started()).await;
    handle
        .enqueue(vec![entry("a"), entry("b"), entry("c")])
        .await
        .expect("enqueued");
    let queue = kill_and_wait_for_restart(&handle, ActorKind::Queue, KillMode::Error).await;
    assert_eq!(queue.observed["lanes"]["live"]["depth"], 3);
    assert_eq!(queue.observed["work_hints"], 0);
    let capture = kill_and_wait_for_restart(&handle, ActorKind::Capture, KillMode::Panic).await;
    assert_eq!(capture.observed["counts_at_start"]["captured"], 3);
    runtime.shutdown().await;
}

#[actix_rt::test]
async fn full_capture_mailbox_answers_mailbox_full() {
    // Goal: back-pressure — with capture stuck and its mailbox at capacity, enqueue fails at once.
    let runtime = Runtime::with_clock(1, Arc::new(ManualClock::new(1_000_000)));
    let store = test_store();
    let handle = start_test_tenant(
        &runtime,
        &store,
        "full",
        TenantSettings {
            mailbox_capacity: 2,
            ..fast_settings()
        },
        TenantRunState::Running,
    );
    eventually("children started", 5_000, || handle.children_started()).await;
    handle.kill_child(ActorKind::Capture, KillMode::Stall);
    eventually("capture to stall", 2_000, || {
        actor(&handle, ActorKind::Capture).observed["stalled_by_test_hook"] == true
    })
    .await;
    let waiting: Vec<_> = ["w1", "w2"]
        .iter()
        .map(|key| actix_rt::spawn(handle.enqueue(vec![entry(key)])))
        .collect();
    eventually("two enqueues waiting", 2_000, || {
        actor(&handle, ActorKind::Capture).mailbox_depth == 2
    })
    .await;
    let refused = handle.enqueue(vec![entry("w3")]).await;
    assert!(
        matches!(refused, Err(EnqueueError::MailboxFull { capacity: 2 })),
        "{refused:?}"
    );
    // Stopping wakes the stalled capture; the waiting callers get an answer, not a hang.
    assert!(runtime.stop_tenant("full").await);
    for waiter in waiting {
        assert!(waiter.await.expect("joined").is_err());
    }
    assert_eq!(handle.status().actors["capture"].mailbox_depth, 0);
}

#[actix_rt::test]
async fn pause_and_resume_are_visible_in_status() {
    // Goal: pause/resume flip the tenant state at once and reach the submitter's observed state.
    let runtime = Runtime::new(1);
    let store = test_store();
    let handle = start_test_tenant(
        &runtime,
        &store,
        "pauses",
        fast_settings(),
        TenantRunState::Running,
    );
    eventually("children started", 5_000, || handle.children_started()).await;
    assert_eq!(handle.status().state, "running");
    handle.pause();
    assert_eq!(handle.status().state, "paused");
    eventually("submitter paused", 2_000, || {
        actor(&handle, ActorKind::Submitter).observed["paused"] == true
    })
    .await;
    handle.resume();
    assert_eq!(handle.status().state, "running");
    eventually("submitter resumed", 2_000, || {
        actor(&handle, ActorKind::Submitter).observed["paused"] == false
    })
    .await;
    // A tenant started paused stays paused, and its submitter rebuilds that from shared state.
    let paused = start_test_tenant(
        &runtime,
        &store,
        "starts-paused",
        fast_settings(),
        TenantRunState::Paused,
    );
    eventually("children started", 5_000, || paused.children_started()).await;
    assert_eq!(paused.status().state, "paused");
    assert_eq!(
        actor(&paused, ActorKind::Submitter).observed["paused"],
        true
    );
    paused.resume();
    assert_eq!(paused.status().state, "running");
    runtime.shutdown().await;
}

#[actix_rt::test]
async fn stop_tenant_stops_all_six_actors_even_with_a_stalled_child() {
    // Goal: stop_tenant resolves only once the supervisor and all five children are gone, a stalled one included.
    let runtime = Runtime::with_clock(2, Arc::new(ManualClock::new(1_000_000)));
    let store = test_store();
    let handle = start_test_tenant(
        &runtime,
        &store,
        "stops",
        fast_settings(),
        TenantRunState::Running,
    );
    eventually("children started", 5_000, || handle.children_started()).await;
    assert!(runtime.all_children_started());
    handle.kill_child(ActorKind::Inbound, KillMode::Stall);
    eventually("inbound to stall", 2_000, || {
        actor(&handle, ActorKind::Inbound).observed["stalled_by_test_hook"] == true
    })
    .await;
    let addresses = handle.shared().addresses();
    let connected = |addresses: &crate::hub::ChildAddresses| {
        [
            addresses.capture.as_ref().map(|a| a.enqueue.connected()),
            addresses.queue.as_ref().map(|a| a.connected()),
            addresses
                .submitter
                .as_ref()
                .map(|a| a.work_hint.connected()),
            addresses.inbound.as_ref().map(|a| a.deliver.connected()),
            addresses.reconciler.as_ref().map(|a| a.connected()),
            Some(handle.supervisor().connected()),
        ]
    };
    assert_eq!(connected(&addresses), [Some(true); 6]);
    // Deadline below the supervisor's 5 s stop timeout: the stalled child was woken, not waited out.
    let stopped =
        actix_rt::time::timeout(Duration::from_secs(3), runtime.stop_tenant("stops")).await;
    assert_eq!(stopped, Ok(true));
    eventually("all six mailboxes closed", 2_000, || {
        connected(&addresses) == [Some(false); 6]
    })
    .await;
    let status = handle.status();
    assert!(
        status.actors.values().all(|actor| actor.state == "stopped"),
        "{:?}",
        status.actors
    );
    assert!(status.actors.values().all(|actor| actor.restarts == 0));
    assert!(!handle.children_started(), "a stopped tenant is not ready");
    assert!(runtime.tenant_ids().is_empty());
    assert!(runtime.tenant("stops").is_none());
    assert!(!runtime.stop_tenant("stops").await);
}
