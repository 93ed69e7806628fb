//! Tests of the tenant actor tree over the in-memory [`MemoryTenantData`] (the real-sled
//! tests are at the end). Small heartbeats and backoffs; waits poll with a deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::*;
use crate::messages::WorkHint;
use crate::ports::fake::MemoryTenantData;
use crate::ports::ManualClock;
use crate::store::{Lane, RecordKind};

pub(super) fn fast_settings() -> TenantSettings {
    TenantSettings {
        heartbeat_ms: 200,
        restart_backoff_initial_ms: 20,
        restart_backoff_max_ms: 10_000,
        mailbox_capacity: 64,
        ..TenantSettings::default()
    }
}

fn start_memory_tenant(
    runtime: &Runtime,
    tenant_id: &str,
    settings: TenantSettings,
) -> TenantHandle {
    runtime.start_tenant_with_data(
        tenant_id.to_string(),
        Arc::new(MemoryTenantData::new(tenant_id)),
        settings,
    )
}

/// Polls `condition` every 5 ms until it holds; panics after `deadline_ms`.
pub(super) async fn eventually(what: &str, deadline_ms: u64, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < Duration::from_millis(deadline_ms),
            "timed out after {deadline_ms} ms waiting for {what}"
        );
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
}

fn actor(handle: &TenantHandle, kind: ActorKind) -> ActorStatus {
    handle.status().actors[kind.name()].clone()
}

fn observed_u64(handle: &TenantHandle, kind: ActorKind, field: &str) -> u64 {
    actor(handle, kind).observed[field].as_u64().unwrap_or(0)
}

fn entry(key: &str) -> NewEntry {
    NewEntry {
        kind: RecordKind::Gift,
        source: "stripe".to_string(),
        source_id: format!("pi_{key}"),
        idempotency_key: key.to_string(),
        lane: Lane::Live,
        transaction_source: "Stripe".to_string(),
        body_json: "{}".to_string(),
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
    let handle = start_memory_tenant(&runtime, "panics", fast_settings());
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
    let handle = start_memory_tenant(&runtime, "errors", fast_settings());
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
    let handle = start_memory_tenant(&runtime, "stalls", settings);
    eventually("children started", 5_000, || handle.children_started()).await;
    let old_submitter = handle
        .shared()
        .addresses()
        .submitter
        .expect("submitter running");
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
    // Its stop report came from a replaced generation: no second restart.
    actix_rt::time::sleep(Duration::from_millis(50)).await;
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
    let handle = start_memory_tenant(&runtime, "stuck", settings);
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
    let handle = start_memory_tenant(&runtime, "enqueues", fast_settings());
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
    let handle = start_memory_tenant(&runtime, "rebuilds", fast_settings());
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
    let handle = start_memory_tenant(
        &runtime,
        "full",
        TenantSettings {
            mailbox_capacity: 2,
            ..fast_settings()
        },
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
    let handle = start_memory_tenant(&runtime, "pauses", fast_settings());
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
    let paused = start_memory_tenant(
        &runtime,
        "starts-paused",
        TenantSettings {
            paused: true,
            ..fast_settings()
        },
    );
    eventually("children started", 5_000, || paused.children_started()).await;
    assert_eq!(paused.status().state, "paused");
    assert_eq!(
        actor(&paused, ActorKind::Submitter).observed["paused"],
        true
    );
    paused.update_settings(TenantSettings {
        paused: false,
        ..fast_settings()
    });
    assert_eq!(paused.status().state, "running");
    runtime.shutdown().await;
}

#[actix_rt::test]
async fn stop_tenant_stops_all_six_actors_even_with_a_stalled_child() {
    // Goal: stop_tenant resolves only once the supervisor and all five children are gone, a stalled one included.
    let runtime = Runtime::with_clock(2, Arc::new(ManualClock::new(1_000_000)));
    let handle = start_memory_tenant(&runtime, "stops", fast_settings());
    eventually("children started", 5_000, || handle.children_started()).await;
    assert!(runtime.all_children_started());
    handle.kill_child(ActorKind::Inbound, KillMode::Stall);
    eventually("inbound to stall", 2_000, || {
        actor(&handle, ActorKind::Inbound).observed["stalled_by_test_hook"] == true
    })
    .await;
    let addresses = handle.shared().addresses();
    let connected = |addresses: &crate::observe::ChildAddresses| {
        [
            addresses.capture.as_ref().map(|a| a.connected()),
            addresses.queue.as_ref().map(|a| a.connected()),
            addresses.submitter.as_ref().map(|a| a.connected()),
            addresses.inbound.as_ref().map(|a| a.connected()),
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

#[actix_rt::test]
async fn start_1000_tenants_on_2_arbiters() {
    // Goal: 1,000 tenants start (all 5,000 children), spread over both arbiters, and stop; prints the times.
    let runtime = Runtime::new(2);
    let started = Instant::now();
    let handles: Vec<TenantHandle> = (0..1_000)
        .map(|index| {
            start_memory_tenant(&runtime, &format!("t{index:04}"), TenantSettings::default())
        })
        .collect();
    let spawn_elapsed = started.elapsed();
    eventually("every tenant's children started", 60_000, || {
        runtime.all_children_started()
    })
    .await;
    let ready_elapsed = started.elapsed();
    assert_eq!(runtime.tenant_ids().len(), 1_000);
    eventually("every supervisor observed", 5_000, || {
        handles.iter().all(|handle| {
            handle.status().actors[SUPERVISOR_NAME].observed["arbiter_thread"].is_string()
        })
    })
    .await;
    let threads: BTreeSet<String> = handles
        .iter()
        .map(|handle| {
            handle.status().actors[SUPERVISOR_NAME].observed["arbiter_thread"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(threads.len(), 2, "{threads:?}");
    let stop_started = Instant::now();
    runtime.shutdown().await;
    let stop_elapsed = stop_started.elapsed();
    eventually("every supervisor's mailbox closed", 5_000, || {
        handles
            .iter()
            .all(|handle| !handle.supervisor().connected())
    })
    .await;
    println!(
        "1000 tenants on 2 arbiters: start calls {spawn_elapsed:?}, all children started {ready_elapsed:?}, shutdown {stop_elapsed:?}"
    );
}

/// A global recorder for the metrics test: gauges and histogram record counts by key.
#[derive(Default)]
struct TestRecorder {
    gauges: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
    histogram_records: Mutex<BTreeMap<String, Arc<HistogramCount>>>,
}

#[derive(Default)]
struct HistogramCount(AtomicU64);

impl metrics::HistogramFn for HistogramCount {
    fn record(&self, _value: f64) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn key_text(key: &metrics::Key) -> String {
    let labels: Vec<String> = key
        .labels()
        .map(|label| format!("{}={}", label.key(), label.value()))
        .collect();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl metrics::Recorder for TestRecorder {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        metrics::Counter::noop()
    }
    fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        let gauge = Arc::clone(
            self.gauges
                .lock()
                .unwrap()
                .entry(key_text(key))
                .or_default(),
        );
        metrics::Gauge::from_arc(gauge)
    }
    fn register_histogram(
        &self,
        key: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        let histogram = Arc::clone(
            self.histogram_records
                .lock()
                .unwrap()
                .entry(key_text(key))
                .or_default(),
        );
        metrics::Histogram::from_arc(histogram)
    }
}

fn test_recorder() -> &'static TestRecorder {
    static RECORDER: OnceLock<&'static TestRecorder> = OnceLock::new();
    RECORDER.get_or_init(|| {
        let recorder: &'static TestRecorder = Box::leak(Box::default());
        metrics::set_global_recorder(recorder).expect("no other recorder in this test binary");
        recorder
    })
}

#[actix_rt::test]
async fn mailbox_depth_gauge_counts_queued_messages_and_returns_to_zero() {
    // Goal: the depth gauge {tenant, actor} follows messages queued behind a stuck actor and falls back to 0.
    let recorder = test_recorder();
    let runtime = Runtime::with_clock(1, Arc::new(ManualClock::new(1_000_000)));
    let handle = start_memory_tenant(&runtime, "gauge-tenant", fast_settings());
    eventually("children started", 5_000, || handle.children_started()).await;
    let gauge_key = "steward_actor_mailbox_depth{tenant=gauge-tenant,actor=queue}";
    let gauge = |recorder: &TestRecorder| {
        f64::from_bits(
            recorder
                .gauges
                .lock()
                .unwrap()
                .get(gauge_key)
                .expect("gauge registered")
                .load(Ordering::SeqCst),
        )
    };
    let waits_before = recorder.histogram_records.lock().unwrap()
        ["steward_actor_mailbox_wait_seconds{actor=queue}"]
        .0
        .load(Ordering::SeqCst);
    handle.kill_child(ActorKind::Queue, KillMode::Stall);
    eventually("queue to stall", 2_000, || {
        actor(&handle, ActorKind::Queue).observed["stalled_by_test_hook"] == true
    })
    .await;
    assert_eq!(gauge(recorder), 0.0);
    let queue = handle.shared().addresses().queue.expect("queue running");
    let cell = Arc::clone(handle.shared().cell(ActorKind::Queue));
    for _ in 0..5 {
        queue
            .try_send(WorkHint {
                entries_added: 1,
                guard: cell.mailbox.guard(),
            })
            .expect("queued");
    }
    assert_eq!(actor(&handle, ActorKind::Queue).mailbox_depth, 5);
    assert_eq!(gauge(recorder), 5.0);
    // Stopping wakes the queue; it refuses the first hint and the rest are dropped with its mailbox.
    assert!(runtime.stop_tenant("gauge-tenant").await);
    eventually("depth back to 0", 2_000, || cell.mailbox.depth() == 0).await;
    assert_eq!(gauge(recorder), 0.0);
    let waits_after = recorder.histogram_records.lock().unwrap()
        ["steward_actor_mailbox_wait_seconds{actor=queue}"]
        .0
        .load(Ordering::SeqCst);
    assert!(
        waits_after > waits_before,
        "the handled message recorded its mailbox wait"
    );
}

#[actix_rt::test]
async fn blocked_arbiter_shows_as_lag_and_costs_no_spurious_restarts() {
    // Goal: a thread blocked longer than a heartbeat is visible in arbiter_lag_ms, and its tenants' children are not all replaced afterwards.
    let runtime = Runtime::new(1);
    let handle = start_memory_tenant(
        &runtime,
        "blocked",
        TenantSettings {
            heartbeat_ms: 150,
            ..fast_settings()
        },
    );
    eventually("children started", 5_000, || handle.children_started()).await;
    let checks_before = handle.status().actors[SUPERVISOR_NAME].observed["ticks"]
        .as_u64()
        .unwrap();
    // What a blocking handler would do: hold the arbiter thread for 3 heartbeats.
    assert!(runtime.inner.arbiters[0].spawn_fn(|| std::thread::sleep(Duration::from_millis(450))));
    eventually("lag to show while blocked", 2_000, || {
        runtime.arbiter_lag_ms()[0] >= 250
    })
    .await;
    // After the block: several more checks run, and none replaced a child.
    eventually("progress checks to resume", 5_000, || {
        handle.status().actors[SUPERVISOR_NAME].observed["ticks"]
            .as_u64()
            .unwrap()
            >= checks_before + 6
    })
    .await;
    let status = handle.status();
    assert!(
        status.actors.values().all(|actor| actor.restarts == 0),
        "{:?}",
        status.actors
    );
    assert!(
        status.actors[SUPERVISOR_NAME].observed["grace_rounds_after_blocked_arbiter"]
            .as_u64()
            .unwrap()
            >= 1
    );
    eventually("lag back to normal", 2_000, || {
        runtime.arbiter_lag_ms()[0] < 100
    })
    .await;
    runtime.shutdown().await;
}

/// Process CPU time (user + system) from /proc, in ms; and resident memory in KiB.
fn process_cpu_ms_and_rss_kib() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the ")" closing the command name: state is field 3, utime 14, stime 15.
    let after_name: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |index: usize| {
        after_name
            .get(index)
            .and_then(|value| value.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let cpu_ms = (ticks(11) + ticks(12)) * 10; // USER_HZ = 100 on Linux
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let rss_kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    (cpu_ms, rss_kib)
}

#[actix_rt::test]
#[ignore = "measurement: cargo test -p steward-actors --release -- --ignored idle_cost --nocapture"]
async fn idle_cost_of_10000_tenants() {
    // Goal: measure start time, idle CPU and memory of 10,000 tenants with default settings on 2 arbiters.
    let (_, rss_before_kib) = process_cpu_ms_and_rss_kib();
    let runtime = Runtime::new(2);
    let started = Instant::now();
    let handles: Vec<TenantHandle> = (0..10_000)
        .map(|index| {
            start_memory_tenant(&runtime, &format!("t{index:05}"), TenantSettings::default())
        })
        .collect();
    eventually("every tenant's children started", 120_000, || {
        runtime.all_children_started()
    })
    .await;
    let start_elapsed = started.elapsed();
    let (cpu_start_ms, rss_kib) = process_cpu_ms_and_rss_kib();
    let idle_window = Duration::from_secs(30);
    actix_rt::time::sleep(idle_window).await;
    let (cpu_end_ms, _) = process_cpu_ms_and_rss_kib();
    let idle_cpu_pct = (cpu_end_ms - cpu_start_ms) as f64 / idle_window.as_millis() as f64 * 100.0;
    let status_started = Instant::now();
    let ticking = handles
        .iter()
        .filter(|handle| observed_u64(handle, ActorKind::Queue, "ticks") >= 2)
        .count();
    let status_elapsed = status_started.elapsed();
    assert_eq!(ticking, 10_000, "every queue ticked during the idle window");
    let lag_ms = runtime.arbiter_lag_ms();
    let stop_started = Instant::now();
    runtime.shutdown().await;
    println!(
        "10000 tenants / 2 arbiters: all children started in {start_elapsed:?}; idle CPU {idle_cpu_pct:.1}% of one core over {idle_window:?}; \
         RSS +{} MiB; 10000 status() calls {status_elapsed:?}; arbiter lag {lag_ms:?} ms; shutdown {:?}",
        rss_kib.saturating_sub(rss_before_kib) / 1024,
        stop_started.elapsed()
    );
}
