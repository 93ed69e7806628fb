//! Measurements and metrics of the tenant actor tree: many tenants, the mailbox gauge with a
//! test recorder, a blocked arbiter, and the (ignored) idle-cost measurement.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::tests::{actor, fast_settings, observed_u64, start_test_tenant, test_store, TestStore};
use super::*;
use crate::messages::WorkHint;
use crate::ports::ManualClock;
use crate::store::TenantRunState;
use crate::test_support::eventually;

#[actix_rt::test]
async fn start_1000_tenants_on_2_arbiters() {
    // Goal: 1,000 tenants start (all 5,000 children), spread over both arbiters, and stop; prints the times.
    let store = test_store();
    let runtime = Runtime::new(2);
    let started = Instant::now();
    let handles = start_idle_tenants(&runtime, &store, 1_000);
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
    let store = test_store();
    let settings = fast_settings();
    let handle = start_test_tenant(
        &runtime,
        &store,
        "gauge-tenant",
        settings,
        TenantRunState::Running,
    );
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
    let store = test_store();
    let handle = start_test_tenant(
        &runtime,
        &store,
        "blocked",
        TenantSettings {
            heartbeat_ms: 150,
            ..fast_settings()
        },
        TenantRunState::Running,
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
    // Over the real store in a temp dir (its tenants' creation included).
    let store = test_store();
    let (_, rss_before_kib) = process_cpu_ms_and_rss_kib();
    let runtime = Runtime::new(2);
    let started = Instant::now();
    let handles = start_idle_tenants(&runtime, &store, 10_000);
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
        "10000 tenants / 2 arbiters (over sled): all children started in {start_elapsed:?}; idle CPU {idle_cpu_pct:.1}% of one core over {idle_window:?}; \
         RSS +{} MiB; 10000 status() calls {status_elapsed:?}; arbiter lag {lag_ms:?} ms; shutdown {:?}",
        rss_kib.saturating_sub(rss_before_kib) / 1024,
        stop_started.elapsed()
    );
}

/// Starts `count` running tenants with default settings and nothing queued (`t00000`…).
fn start_idle_tenants(runtime: &Runtime, store: &TestStore, count: usize) -> Vec<TenantHandle> {
    (0..count)
        .map(|index| {
            start_test_tenant(
                runtime,
                store,
                &format!("t{index:05}"),
                TenantSettings::default(),
                TenantRunState::Running,
            )
        })
        .collect()
}
