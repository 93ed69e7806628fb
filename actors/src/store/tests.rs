//! Store-level tests on the real sled store in a temp dir.

use std::path::Path;
use std::sync::{Arc, Barrier};

use super::keys::section;
use super::open::LOCK_RETRY_MS;
use super::*;

const LAYOUTS: [Layout; 2] = [
    Layout::TreePerTenant,
    Layout::SharedTrees { shard_count: 4 },
];

fn open(dir: &Path, layout: Layout) -> Store {
    Store::open_with_layout(dir, StoreOptions::default(), Some(layout)).unwrap()
}

pub(super) fn new_entry(key: &str, lane: Lane, now_ms: u64) -> NewEntry {
    NewEntry {
        fact: EntryFact {
            kind: RecordKind::Gift,
            source: "stripe".into(),
            source_id: format!("pi_{key}"),
            idempotency_key: key.into(),
            lane,
            transaction_source: "Stripe".into(),
            body_json: format!("{{\"transactionId\":\"{key}\"}}"),
        },
        aliases: vec![format!("evt_{key}"), format!("ch_{key}")],
        now_ms,
    }
}

fn stat(tenant: &TenantStore, lane: Lane) -> LaneStat {
    tenant.lane_stats()[lane as usize].1
}

#[test]
fn enqueue_writes_entry_dedup_record_aliases_and_counters() {
    // Goal: one enqueue stores the exact body, a pending record with history, aliases and counters.
    for layout in LAYOUTS {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), layout);
        let tenant = store.tenant("hope").unwrap();
        let outcomes = tenant
            .enqueue(vec![
                new_entry("k1", Lane::Live, 100),
                new_entry("k1", Lane::Live, 101),
            ])
            .unwrap();
        let EnqueueOutcome::Queued { seq } = outcomes[0] else {
            panic!("first is queued: {outcomes:?}")
        };
        assert_eq!(
            outcomes[1],
            EnqueueOutcome::Duplicate,
            "same key twice in one call"
        );
        assert_eq!(
            tenant
                .enqueue(vec![new_entry("k1", Lane::Retry, 102)])
                .unwrap(),
            [EnqueueOutcome::Duplicate]
        );

        let lane = tenant.scan_lane(Lane::Live, 10).unwrap();
        assert_eq!(lane.len(), 1);
        let (stored_seq, entry) = &lane[0];
        assert_eq!(*stored_seq, seq);
        assert_eq!(entry.fact.body_json, "{\"transactionId\":\"k1\"}");
        assert_eq!(
            (entry.attempts, entry.enqueued_at_ms, entry.not_before_ms),
            (0, 100, 100)
        );
        assert_eq!(entry.fact.idempotency_key, "k1");
        assert_eq!(entry.fact.transaction_source, "Stripe");

        let record = tenant
            .get_record(RecordKind::Gift, "stripe", "pi_k1")
            .unwrap()
            .unwrap();
        assert_eq!(record.state, SyncState::Pending);
        assert_eq!(record.last_seq, Some(seq));
        assert_eq!(
            record.history,
            [Transition {
                at_ms: 100,
                from: None,
                to: SyncState::Pending,
                reason: "enqueued".into()
            }]
        );
        assert_eq!(tenant.find_record_by_alias("ch_k1").unwrap(), Some(record));
        assert_eq!(tenant.find_record_by_alias("nope").unwrap(), None);

        assert_eq!(
            tenant.counts(),
            Counts {
                captured: 1,
                duplicates: 2,
                ..Counts::default()
            }
        );
        assert_eq!(
            stat(&tenant, Lane::Live),
            LaneStat {
                depth: 1,
                oldest_enqueued_at_ms: Some(100)
            }
        );
        assert_eq!(
            stat(&tenant, Lane::Retry),
            LaneStat {
                depth: 0,
                oldest_enqueued_at_ms: None
            }
        );
        assert_eq!(tenant.queued_total(), 1);
        // The record is the dedup mark: no separate dedup key is written (schema v2).
        assert_eq!(tenant.inner().count_section(section::DEDUP).unwrap(), 0);
        assert_eq!(tenant.inner().count_section(section::RECORD).unwrap(), 1);
    }
}

#[test]
fn a_second_fact_for_one_record_extends_its_history() {
    // Goal: a new idempotency key for an existing record appends pending to its history.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let tenant = store.tenant("t").unwrap();
    let mut update = new_entry("k2", Lane::Live, 20);
    update.fact.source_id = "pi_k1".into();
    tenant
        .enqueue(vec![new_entry("k1", Lane::Live, 10), update])
        .unwrap();
    tenant
        .transition_record(
            RecordKind::Gift,
            "stripe",
            "pi_k1",
            SyncState::Submitted,
            "accepted",
            30,
        )
        .unwrap()
        .unwrap();
    let record = tenant
        .get_record(RecordKind::Gift, "stripe", "pi_k1")
        .unwrap()
        .unwrap();
    let path: Vec<(Option<SyncState>, SyncState)> =
        record.history.iter().map(|t| (t.from, t.to)).collect();
    assert_eq!(
        path,
        [
            (None, SyncState::Pending),
            (Some(SyncState::Pending), SyncState::Pending),
            (Some(SyncState::Pending), SyncState::Submitted)
        ]
    );
    assert_eq!(record.idempotency_key, "k2");
    assert_eq!(tenant.queued_total(), 2);
    assert!(tenant
        .transition_record(
            RecordKind::Gift,
            "stripe",
            "missing",
            SyncState::Dead,
            "x",
            1
        )
        .unwrap()
        .is_none());
}

#[test]
fn concurrent_enqueues_of_one_key_queue_exactly_once() {
    // Goal: the per-tenant lock makes check-then-write atomic: one Queued, the rest Duplicate.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let writers = 8;
    for round in 0..20 {
        let barrier = Arc::new(Barrier::new(writers));
        let handles: Vec<_> = (0..writers)
            .map(|_| {
                let tenant = store.tenant("race").unwrap();
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    barrier.wait();
                    tenant
                        .enqueue(vec![new_entry(&format!("key-{round}"), Lane::Live, 1)])
                        .unwrap()
                })
            })
            .collect();
        let outcomes: Vec<EnqueueOutcome> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        let queued = outcomes
            .iter()
            .filter(|o| matches!(o, EnqueueOutcome::Queued { .. }))
            .count();
        assert_eq!(queued, 1, "round {round}: {outcomes:?}");
    }
    let tenant = store.tenant("race").unwrap();
    assert_eq!(tenant.counts().captured, 20);
    assert_eq!(tenant.counts().duplicates, 20 * (writers as u64 - 1));
    assert_eq!(tenant.queued_total(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_entries_survive_reopen_with_rebuilt_gauges() {
    // Goal: after durable() the entries are on disk; reopening rebuilds depths, ages and counters.
    for layout in LAYOUTS {
        let dir = tempfile::tempdir().unwrap();
        let mut seqs = Vec::new();
        {
            let store = open(dir.path(), layout);
            let tenant = store.tenant("a").unwrap();
            for n in 0..50u64 {
                let lane = Lane::ALL[(n % 4) as usize];
                let outcome = tenant
                    .enqueue(vec![new_entry(&format!("k{n}"), lane, 1000 + n)])
                    .unwrap();
                let EnqueueOutcome::Queued { seq } = outcome[0] else {
                    panic!()
                };
                seqs.push((lane, seq));
            }
            tenant
                .enqueue(vec![new_entry("k0", Lane::Live, 5)])
                .unwrap();
            store
                .tenant("ab")
                .unwrap()
                .enqueue(vec![new_entry("other", Lane::Live, 1)])
                .unwrap();
            store.durable().await.unwrap();
            assert!(store.flush_stats().flushes_completed >= 1);
        }
        let store = open(dir.path(), layout);
        let tenant = store.tenant("a").unwrap();
        for (lane, seq) in &seqs {
            assert!(
                tenant.get_queue_entry(*lane, *seq).unwrap().is_some(),
                "{layout:?} seq {seq}"
            );
        }
        assert_eq!(tenant.queued_total(), 50);
        assert_eq!(
            stat(&tenant, Lane::Live),
            LaneStat {
                depth: 13,
                oldest_enqueued_at_ms: Some(1000)
            }
        );
        assert_eq!(
            stat(&tenant, Lane::Backfill),
            LaneStat {
                depth: 12,
                oldest_enqueued_at_ms: Some(1003)
            }
        );
        assert_eq!(
            tenant.counts(),
            Counts {
                captured: 50,
                duplicates: 1,
                ..Counts::default()
            }
        );
        // Tenant "ab" shares the prefix bytes "a" but not the key space.
        assert_eq!(store.tenant("ab").unwrap().queued_total(), 1);
    }
}

#[test]
fn drop_tenant_data_removes_only_that_tenant() {
    // Goal: dropping a tenant empties its key space, refuses old handles and spares other tenants.
    for layout in LAYOUTS {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), layout);
        let doomed = store.tenant("a").unwrap();
        doomed.enqueue(vec![new_entry("k", Lane::Live, 1)]).unwrap();
        doomed.raise_alert("auth_failed", "401", 1).unwrap();
        store
            .tenant("ab")
            .unwrap()
            .enqueue(vec![new_entry("k", Lane::Live, 1)])
            .unwrap();

        store.drop_tenant_data("a").unwrap();
        assert!(matches!(
            doomed.enqueue(vec![new_entry("k2", Lane::Live, 1)]),
            Err(StoreError::Closed)
        ));
        let fresh = store.tenant("a").unwrap();
        assert_eq!(fresh.queued_total(), 0);
        assert_eq!(fresh.counts(), Counts::default());
        assert!(fresh.alerts().unwrap().is_empty());
        assert!(fresh
            .get_record(RecordKind::Gift, "stripe", "pi_k")
            .unwrap()
            .is_none());
        assert_eq!(
            fresh
                .enqueue(vec![new_entry("k", Lane::Live, 2)])
                .unwrap()
                .len(),
            1
        );
        assert!(matches!(
            fresh.enqueue(vec![new_entry("k", Lane::Live, 2)]).unwrap()[0],
            EnqueueOutcome::Duplicate
        ));
        let survivor = store.tenant("ab").unwrap();
        assert_eq!(survivor.queued_total(), 1);
        assert!(survivor
            .get_record(RecordKind::Gift, "stripe", "pi_k")
            .unwrap()
            .is_some());
    }
}

#[test]
fn removing_queue_entries_keeps_gauges_exact() {
    // Goal: remove_queue_entries lowers depth once per existing key and moves the oldest age.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let tenant = store.tenant("t").unwrap();
    let seqs: Vec<u64> = (0..3u64)
        .map(|n| {
            match tenant
                .enqueue(vec![new_entry(&format!("k{n}"), Lane::Retry, 10 + n)])
                .unwrap()[0]
            {
                EnqueueOutcome::Queued { seq } => seq,
                ref other => panic!("fresh keys: {other:?}"),
            }
        })
        .collect();
    assert_eq!(
        tenant
            .remove_queue_entries(&[(Lane::Retry, seqs[0]), (Lane::Retry, seqs[0])])
            .unwrap(),
        1
    );
    assert_eq!(
        stat(&tenant, Lane::Retry),
        LaneStat {
            depth: 2,
            oldest_enqueued_at_ms: Some(11)
        }
    );
    assert_eq!(
        tenant
            .remove_queue_entries(&[(Lane::Retry, seqs[1]), (Lane::Retry, seqs[2])])
            .unwrap(),
        2
    );
    assert_eq!(
        stat(&tenant, Lane::Retry),
        LaneStat {
            depth: 0,
            oldest_enqueued_at_ms: None
        }
    );
    let order: Vec<u64> = tenant
        .scan_lane(Lane::Retry, 10)
        .unwrap()
        .into_iter()
        .map(|(seq, _)| seq)
        .collect();
    assert!(order.is_empty());
}

#[test]
fn scan_lane_returns_seq_order_up_to_the_limit() {
    // Goal: scan_lane yields a lane's entries in enqueue (seq) order, bounded by the limit.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let tenant = store.tenant("t").unwrap();
    let entries = (0..20)
        .map(|n| new_entry(&format!("k{n}"), Lane::Backfill, n))
        .collect();
    tenant.enqueue(entries).unwrap();
    tenant
        .enqueue(vec![new_entry("live", Lane::Live, 0)])
        .unwrap();
    let scanned = tenant.scan_lane(Lane::Backfill, 5).unwrap();
    let keys: Vec<&str> = scanned
        .iter()
        .map(|(_, e)| e.fact.idempotency_key.as_str())
        .collect();
    assert_eq!(keys, ["k0", "k1", "k2", "k3", "k4"]);
    assert!(scanned.windows(2).all(|pair| pair[0].0 < pair[1].0));
    assert_eq!(tenant.scan_lane(Lane::Live, 100).unwrap().len(), 1);
}

#[test]
fn dead_letters_checkpoints_calls_and_alerts() {
    // Goal: each typed accessor stores, lists and removes what it claims.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let tenant = store.tenant("t").unwrap();
    tenant.enqueue(vec![new_entry("k", Lane::Live, 1)]).unwrap();
    let (seq, entry) = tenant.scan_lane(Lane::Live, 1).unwrap().remove(0);

    for id in [seq + 1, seq] {
        let dead = DeadLetter {
            id,
            entry: entry.clone(),
            reason: "422 invalid amount".into(),
            dead_at_ms: 9,
            status: Some(422),
            attempts: 1,
        };
        tenant.put_dead_letter(&dead).unwrap();
    }
    let ids: Vec<u64> = tenant
        .list_dead_letters()
        .unwrap()
        .iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(ids, [seq, seq + 1]);
    assert_eq!(
        tenant.get_dead_letter(seq).unwrap().unwrap().reason,
        "422 invalid amount"
    );
    assert!(tenant.remove_dead_letter(seq).unwrap());
    assert!(!tenant.remove_dead_letter(seq).unwrap());
    assert_eq!(tenant.list_dead_letters().unwrap().len(), 1);

    assert_eq!(tenant.get_checkpoint("stripe").unwrap(), None);
    tenant.put_checkpoint("stripe", b"1700000000").unwrap();
    assert_eq!(
        tenant.get_checkpoint("stripe").unwrap().unwrap(),
        b"1700000000"
    );
    tenant
        .enqueue_with_checkpoint(
            vec![new_entry("k9", Lane::Live, 2)],
            "stripe",
            b"1700000500",
        )
        .unwrap();
    assert_eq!(
        tenant.get_checkpoint("stripe").unwrap().unwrap(),
        b"1700000500"
    );

    for at_ms in [100, 100, 200, 300, 400] {
        tenant.record_call(at_ms).unwrap();
    }
    assert_eq!(tenant.calls_since(0).unwrap(), 5);
    assert_eq!(tenant.calls_since(100).unwrap(), 5);
    assert_eq!(tenant.calls_since(101).unwrap(), 3);
    assert_eq!(tenant.calls_since(401).unwrap(), 0);
    assert_eq!(tenant.prune_calls_before(300).unwrap(), 3);
    assert_eq!(tenant.calls_since(0).unwrap(), 2);

    assert!(tenant
        .raise_alert("auth_failed", "401 from Virtuous", 10)
        .unwrap());
    assert!(!tenant.raise_alert("auth_failed", "401 again", 20).unwrap());
    assert!(tenant
        .raise_alert("budget_mismatch", "limit differs", 15)
        .unwrap());
    let alerts = tenant.alerts().unwrap();
    assert_eq!(alerts.len(), 2);
    assert_eq!(
        alerts[0],
        Alert {
            code: "auth_failed".into(),
            message: "401 again".into(),
            first_at_ms: 10,
            last_at_ms: 20,
            count: 2
        }
    );
    assert!(tenant.clear_alert("auth_failed").unwrap());
    assert_eq!(tenant.alerts().unwrap().len(), 1);

    let counts = tenant
        .add_counts(Counts {
            submitted: 2,
            dead: 1,
            ..Counts::default()
        })
        .unwrap();
    assert_eq!((counts.captured, counts.submitted, counts.dead), (2, 2, 1));
    assert_eq!(tenant.counts(), counts);
}

#[test]
fn an_alert_resolves_is_acked_once_reopens_and_survives_a_reopen_of_the_store() {
    // Goal: the alert lifecycle (docs/operations.md "Alerts"): resolve sets resolved_at once;
    // ack is idempotent and unknown codes are None; raising a resolved alert reopens it
    // (resolved_at and acked_at cleared, count + 1, `true` returned); a repeat while open keeps
    // the ack; raise_alert_once never touches an existing alert; all of it is stored.
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let tenant = store.tenant("t").unwrap();
        assert!(
            !tenant.resolve_alert("auth_failed", 5).unwrap(),
            "never raised"
        );
        assert_eq!(tenant.ack_alert("auth_failed", 5).unwrap(), None);
        assert!(tenant.raise_alert("auth_failed", "401", 10).unwrap());
        assert!(tenant.resolve_alert("auth_failed", 20).unwrap());
        assert!(!tenant.resolve_alert("auth_failed", 30).unwrap(), "once");
        let acked = tenant.ack_alert("auth_failed", 40).unwrap().unwrap();
        assert_eq!(
            acked.state,
            AlertState {
                resolved_at_ms: Some(20),
                acked_at_ms: Some(40)
            }
        );
        let again = tenant.ack_alert("auth_failed", 50).unwrap().unwrap();
        assert_eq!(again.state.acked_at_ms, Some(40), "idempotent");

        assert!(
            tenant.raise_alert("auth_failed", "401 again", 60).unwrap(),
            "reopened"
        );
        let views = tenant.alert_views().unwrap();
        assert_eq!(views.len(), 1);
        assert_eq!(views[0].state, AlertState::default());
        assert_eq!(views[0].alert.count, 2);

        tenant.ack_alert("auth_failed", 70).unwrap();
        assert!(!tenant.raise_alert("auth_failed", "still", 80).unwrap());
        assert_eq!(
            tenant.alert_state("auth_failed").unwrap().acked_at_ms,
            Some(70)
        );

        assert!(tenant.raise_alert_once("hint", "once", 90).unwrap());
        tenant.resolve_alert("hint", 95).unwrap();
        assert!(!tenant.raise_alert_once("hint", "once", 99).unwrap());
        assert_eq!(tenant.alert_state("hint").unwrap().resolved_at_ms, Some(95));
        store.flush_blocking().unwrap();
    }
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let tenant = store.tenant("t").unwrap();
    let views = tenant.alert_views().unwrap();
    assert_eq!(views.len(), 2);
    assert_eq!(views[0].alert.code, "auth_failed");
    assert_eq!(views[0].state.acked_at_ms, Some(70));
    assert_eq!(views[1].state.resolved_at_ms, Some(95));
    assert!(tenant.clear_alert("hint").unwrap());
    assert_eq!(tenant.alert_state("hint").unwrap(), AlertState::default());
}

#[test]
fn a_store_keeps_the_layout_it_was_created_with() {
    // Goal: reopening with another layout is refused; plain open uses the recorded one.
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path(), Layout::TreePerTenant));
    let err =
        Store::open_with_layout(dir.path(), StoreOptions::default(), Some(DEFAULT_LAYOUT)).err();
    assert!(matches!(err, Some(StoreError::Io(m)) if m.contains("TreePerTenant")));
    assert_eq!(
        Store::open(dir.path(), StoreOptions::default())
            .unwrap()
            .layout(),
        Layout::TreePerTenant
    );
}

#[test]
fn a_damaged_store_is_reported_corrupt_and_left_alone() {
    // Goal: damaged sled files give StoreError::Corrupt naming the data dir, and nothing is deleted.
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        store
            .tenant("t")
            .unwrap()
            .enqueue(vec![new_entry("k", Lane::Live, 1)])
            .unwrap();
        store.flush_blocking().unwrap();
    }
    let conf = dir.path().join("conf");
    // sled's conf file is `key: value` lines; a garbled number is reported as corruption.
    let text = String::from_utf8_lossy(&std::fs::read(&conf).unwrap()).into_owned();
    let start =
        text.find("segment_size: ").expect("sled 0.34 conf format") + "segment_size: ".len();
    let mut bytes = std::fs::read(&conf).unwrap();
    bytes[start] = b'x';
    std::fs::write(&conf, &bytes).unwrap();
    let size_before = std::fs::metadata(dir.path().join("db")).unwrap().len();
    match Store::open(dir.path(), StoreOptions::default()) {
        Err(StoreError::Corrupt { path, .. }) => assert_eq!(path, dir.path().display().to_string()),
        Err(other) => panic!("expected Corrupt, got {other}"),
        Ok(_) => panic!("a damaged store must not open"),
    }
    assert_eq!(
        std::fs::read(&conf).unwrap(),
        bytes,
        "the damaged file is kept as it was"
    );
    assert_eq!(
        std::fs::metadata(dir.path().join("db")).unwrap().len(),
        size_before
    );
}

#[test]
fn pruned_idempotency_keys_are_accepted_again() {
    // Goal: prune_dedup_before forgets only keys first seen before the cutoff.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let tenant = store.tenant("t").unwrap();
    tenant
        .enqueue(vec![
            new_entry("old", Lane::Live, 100),
            new_entry("new", Lane::Live, 500),
        ])
        .unwrap();
    assert_eq!(tenant.prune_dedup_before(300).unwrap(), 1);
    assert!(matches!(
        tenant
            .enqueue(vec![new_entry("old", Lane::Live, 600)])
            .unwrap()[0],
        EnqueueOutcome::Queued { .. }
    ));
    assert_eq!(
        tenant
            .enqueue(vec![new_entry("new", Lane::Live, 600)])
            .unwrap(),
        [EnqueueOutcome::Duplicate]
    );
}

/// Set in the child process of `acknowledged_entries_survive_a_crash`: the data dir to use.
const CRASH_CHILD_DIR_ENV: &str = "STEWARD_STORE_CRASH_CHILD_DIR";
const CRASH_ACKED_ENTRIES: usize = 200;

#[test]
fn acknowledged_entries_survive_a_crash() {
    // Goal: every entry acknowledged by durable() is on disk even if the process aborts right after.
    if let Ok(dir) = std::env::var(CRASH_CHILD_DIR_ENV) {
        crash_child(Path::new(&dir));
    }
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "store::tests::acknowledged_entries_survive_a_crash",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_CHILD_DIR_ENV, dir.path())
        .output()
        .unwrap();
    assert!(
        !output.status.success(),
        "the child aborts instead of exiting cleanly"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    // The harness prints the test name without a newline, so "ACKED" may start mid-line.
    let acked: Vec<u64> = stdout
        .lines()
        .filter_map(|line| line.split("ACKED ").nth(1)?.trim().parse().ok())
        .collect();
    assert_eq!(acked.len(), CRASH_ACKED_ENTRIES, "child output: {stdout}");

    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let tenant = store.tenant("crash").unwrap();
    let missing: Vec<&u64> = acked
        .iter()
        .filter(|seq| tenant.get_queue_entry(Lane::Live, **seq).unwrap().is_none())
        .collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    assert!(tenant.queued_total() >= CRASH_ACKED_ENTRIES as u64);
}

/// The child: acknowledge entries one by one, then write more without waiting and abort
/// (no destructor runs, so sled gets no chance to flush on drop).
fn crash_child(dir: &Path) -> ! {
    use std::io::Write;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = Store::open(dir, StoreOptions::default()).unwrap();
    let tenant = store.tenant("crash").unwrap();
    runtime.block_on(async {
        for n in 0..CRASH_ACKED_ENTRIES {
            let outcome = tenant
                .enqueue(vec![new_entry(&format!("acked-{n}"), Lane::Live, 1)])
                .unwrap();
            let EnqueueOutcome::Queued { seq } = outcome[0] else {
                panic!("fresh key")
            };
            store.durable().await.unwrap();
            println!("ACKED {seq}");
        }
    });
    for n in 0..50 {
        tenant
            .enqueue(vec![new_entry(&format!("unacked-{n}"), Lane::Live, 1)])
            .unwrap();
    }
    std::io::stdout().flush().unwrap();
    std::process::abort();
}

#[test]
fn an_enqueue_right_after_another_sees_its_unapplied_record() {
    // Goal: dedup holds across calls even before the writer thread applied the first call.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let tenant = store.tenant("t").unwrap();
    for n in 0..500 {
        let key = format!("k{n}");
        let first = tenant
            .enqueue(vec![new_entry(&key, Lane::Live, 1)])
            .unwrap();
        assert!(matches!(first[0], EnqueueOutcome::Queued { .. }));
        // No settle in between: the record may still be pending in the writer thread.
        assert_eq!(
            tenant
                .enqueue(vec![new_entry(&key, Lane::Live, 2)])
                .unwrap(),
            [EnqueueOutcome::Duplicate],
            "key {key}"
        );
    }
    assert_eq!(tenant.queued_total(), 500);
    assert_eq!(tenant.scan_lane(Lane::Live, 1000).unwrap().len(), 500);
}

#[test]
fn concurrent_enqueues_share_write_groups_and_all_land() {
    // Goal: calls from many threads and tenants are applied in shared groups, none is lost.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let threads = 8;
    let calls_per_thread = 150;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|thread| {
            let (store, barrier) = (store.clone(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                for call in 0..calls_per_thread {
                    let tenant = store.tenant(&format!("tenant-{}", call % 5)).unwrap();
                    let key = format!("t{thread}-c{call}");
                    let outcomes = tenant
                        .enqueue(vec![new_entry(&key, Lane::Live, 1)])
                        .unwrap();
                    assert!(matches!(outcomes[0], EnqueueOutcome::Queued { .. }));
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    store.flush_blocking().unwrap();
    let mut stored = 0;
    for n in 0..5 {
        let tenant = store.tenant(&format!("tenant-{n}")).unwrap();
        stored += tenant.scan_lane(Lane::Live, 10_000).unwrap().len();
        assert_eq!(tenant.counts().captured, tenant.queued_total());
    }
    assert_eq!(stored, threads * calls_per_thread);
    let stats = store.flush_stats();
    assert_eq!(stats.calls_applied, (threads * calls_per_thread) as u64);
    assert!(stats.groups_applied >= 1 && stats.groups_applied <= stats.calls_applied);
}

#[test]
fn a_store_in_use_is_refused_and_a_closed_one_reopens_at_once() {
    // Goal: open waits out sled's lock release after a close, but never opens a store in use.
    let dir = tempfile::tempdir().unwrap();
    for round in 0..10 {
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let tenant = store.tenant("t").unwrap();
        tenant
            .enqueue(vec![new_entry(&format!("k{round}"), Lane::Live, 1)])
            .unwrap();
        store.flush_blocking().unwrap();
        assert_eq!(tenant.queued_total(), round + 1);
    }
    let in_use = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let started = std::time::Instant::now();
    let second = Store::open(dir.path(), StoreOptions::default());
    assert!(
        matches!(&second, Err(StoreError::Io(m)) if m.contains("could not acquire lock")),
        "second open of a store in use must fail"
    );
    assert!(started.elapsed() >= std::time::Duration::from_millis(LOCK_RETRY_MS));
    drop(in_use);
}
