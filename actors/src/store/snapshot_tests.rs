//! Backups of a store that keeps taking writes, restored into a new directory (real sled).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::snapshot_format::{SnapshotItem, SnapshotReader};
use super::*;

fn entry(key: &str) -> NewEntry {
    super::tests::new_entry(key, Lane::Live, 1)
}

fn backup_bytes(store: &Store) -> (Vec<u8>, BackupStats) {
    let (writer, stats) = store.write_backup(Vec::new(), 1, "test").unwrap();
    (writer.finish().unwrap().0, stats)
}

fn restore(bytes: &[u8], path: &std::path::Path) -> RestoreStats {
    restore_backup(bytes, path, |path, _| {
        panic!("no files expected, got {path}")
    })
    .unwrap()
}

#[test]
fn a_backup_under_load_holds_every_acknowledged_write_and_no_half_write() {
    // Goal: writers keep enqueueing (each acknowledged by a flush) while a backup is taken;
    // the restored store has every entry acknowledged before the backup began, and each
    // tenant's counters agree with its queue (an enqueue's entry, record and counters are
    // one batch: a torn copy would show more entries than counted, or fewer).
    for layout in [
        Layout::TreePerTenant,
        Layout::SharedTrees { shard_count: 4 },
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Store::open_with_layout(&dir.path().join("a"), StoreOptions::default(), Some(layout))
                .unwrap();
        let acknowledged: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..4)
            .map(|writer| {
                let (store, acknowledged, stop) =
                    (store.clone(), Arc::clone(&acknowledged), Arc::clone(&stop));
                std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .build()
                        .unwrap();
                    let tenant_id = format!("t{writer}");
                    let tenant = store.tenant(&tenant_id).unwrap();
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let key = format!("{writer}-{n}");
                        tenant.enqueue(vec![entry(&key)]).unwrap();
                        runtime.block_on(store.durable()).unwrap();
                        acknowledged.lock().unwrap().push((tenant_id.clone(), key));
                        n += 1;
                    }
                })
            })
            .collect();
        // Let the writers build up some history, then back up twice while they run.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while acknowledged.lock().unwrap().len() < 400 {
            assert!(std::time::Instant::now() < deadline, "writers stalled");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let before: Vec<(String, String)> = acknowledged.lock().unwrap().clone();
        let (bytes, stats) = backup_bytes(&store);
        let after_count = acknowledged.lock().unwrap().len();
        stop.store(true, Ordering::Relaxed);
        for writer in writers {
            writer.join().unwrap();
        }
        assert!(stats.entries > 0 && stats.trees >= 2, "{stats:?}");

        let restored_path = dir.path().join("b");
        let restored = restore(&bytes, &restored_path);
        assert_eq!(restored.entries, stats.entries);
        let copy = Store::open(&restored_path, StoreOptions::default()).unwrap();
        assert_eq!(copy.layout(), layout, "the layout travels with the data");
        let mut present = 0;
        for writer in 0..4 {
            let tenant = copy.tenant(&format!("t{writer}")).unwrap();
            let queued = tenant.queued_total();
            assert_eq!(
                tenant.counts().captured,
                queued,
                "t{writer}: counters and queue entries of one copy agree"
            );
            present += queued;
        }
        for (tenant_id, key) in &before {
            let record = copy
                .tenant(tenant_id)
                .unwrap()
                .get_record(RecordKind::Gift, "stripe", &format!("pi_{key}"))
                .unwrap();
            assert!(
                record.is_some(),
                "{tenant_id}/{key} was acknowledged before the backup"
            );
        }
        assert!(present >= before.len() as u64);
        assert!(
            present <= after_count as u64 + 4,
            "no entry from after the backup's end (at most one in flight per writer)"
        );
    }
}

#[test]
fn a_restored_store_hands_out_new_sequence_numbers_above_the_copied_ones() {
    // Goal: sled's id generator is not part of the data; a restored store must not reuse a
    // copied entry's sequence number (that would overwrite the entry).
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("a"), StoreOptions::default()).unwrap();
    let tenant = store.tenant("hope").unwrap();
    let mut last_seq = 0;
    for n in 0..50 {
        if let EnqueueOutcome::Queued { seq } =
            tenant.enqueue(vec![entry(&format!("k{n}"))]).unwrap()[0]
        {
            last_seq = seq;
        }
    }
    let (bytes, _) = backup_bytes(&store);
    drop((tenant, store));
    restore(&bytes, &dir.path().join("b"));
    let copy = Store::open(&dir.path().join("b"), StoreOptions::default()).unwrap();
    let tenant = copy.tenant("hope").unwrap();
    let EnqueueOutcome::Queued { seq } = tenant.enqueue(vec![entry("new")]).unwrap()[0] else {
        panic!("the new entry is queued");
    };
    assert!(
        seq > last_seq,
        "new seq {seq} must be above the copied {last_seq}"
    );
    assert_eq!(tenant.queued_total(), 51);
}

#[test]
fn a_damaged_backup_restores_nothing_and_a_used_target_is_refused() {
    // Goal: a truncated stream leaves no store behind; a target that holds anything is
    // never written.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("a"), StoreOptions::default()).unwrap();
    store
        .tenant("hope")
        .unwrap()
        .enqueue(vec![entry("k")])
        .unwrap();
    let (bytes, _) = backup_bytes(&store);
    let target = dir.path().join("b");
    let err = restore_backup(&bytes[..bytes.len() - 10], &target, |_, _| Ok(())).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
    assert!(!target.exists(), "nothing left of a failed restore");

    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("keep"), b"x").unwrap();
    let err = restore_backup(&bytes[..], &target, |_, _| Ok(())).unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");
    assert_eq!(std::fs::read(target.join("keep")).unwrap(), b"x");
}

#[test]
fn the_durability_marker_stays_out_of_a_backup() {
    // Goal: the marker counts this store's own flushes; a copy starts its own count.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("a"), StoreOptions::default()).unwrap();
    store.flush_blocking().unwrap();
    let (bytes, _) = backup_bytes(&store);
    let mut reader = SnapshotReader::open(&bytes[..]).unwrap();
    loop {
        match reader.next_item().unwrap() {
            SnapshotItem::Entry(key, _) => assert_ne!(key, durability_marker::MARKER_KEY),
            SnapshotItem::End(_) => break,
            _ => {}
        }
    }
}

fn registered(store: &Store, id: &str) {
    crate::test_support::registered_tenant(store, id);
}

fn export_bytes(store: &Store, id: &str) -> Vec<u8> {
    let (writer, _) = store
        .write_tenant_export(id, Vec::new(), 1, "test")
        .unwrap();
    writer.finish().unwrap().0
}

#[test]
fn a_tenant_moves_between_layouts_with_its_queue_records_counters_and_call_log() {
    // Goal: an export from a tree-per-tenant store imports into a shared-tree store (and back)
    // with the same queue, records, counters and budget call log; other tenants of either
    // store are untouched; new entries there get sequence numbers above the moved ones.
    for (from, to) in [
        (
            Layout::TreePerTenant,
            Layout::SharedTrees { shard_count: 4 },
        ),
        (
            Layout::SharedTrees { shard_count: 4 },
            Layout::TreePerTenant,
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let source =
            Store::open_with_layout(&dir.path().join("a"), StoreOptions::default(), Some(from))
                .unwrap();
        let target =
            Store::open_with_layout(&dir.path().join("b"), StoreOptions::default(), Some(to))
                .unwrap();
        registered(&source, "mover");
        let mover = source.tenant("mover").unwrap();
        let mut last_seq = 0;
        for n in 0..30 {
            if let EnqueueOutcome::Queued { seq } =
                mover.enqueue(vec![entry(&format!("m{n}"))]).unwrap()[0]
            {
                last_seq = seq;
            }
        }
        mover.record_call(1_000).unwrap();
        mover.record_call(2_000).unwrap();
        source
            .tenant("stays")
            .unwrap()
            .enqueue(vec![entry("s")])
            .unwrap();
        target
            .tenant("other")
            .unwrap()
            .enqueue(vec![entry("o")])
            .unwrap();
        let bytes = export_bytes(&source, "mover");

        let mut reader = SnapshotReader::open(&bytes[..]).unwrap();
        let mut checked = None;
        let (record, stats) = target
            .import_tenant(
                &mut reader,
                |record| {
                    checked = Some(record.id.clone());
                    Ok(())
                },
                |path, _| panic!("no files: {path}"),
            )
            .unwrap();
        assert_eq!(checked.as_deref(), Some("mover"));
        assert_eq!(record.id, "mover");
        assert!(stats.entries > 30, "{stats:?}");
        assert!(
            target.registry().get("mover").unwrap().is_none(),
            "the caller registers"
        );
        let moved = target.tenant("mover").unwrap();
        assert_eq!(moved.queued_total(), 30);
        assert_eq!(moved.counts(), mover.counts());
        assert_eq!(
            moved.calls_since(0).unwrap(),
            2,
            "the budget's call log moved"
        );
        assert!(moved
            .get_record(RecordKind::Gift, "stripe", "pi_m7")
            .unwrap()
            .is_some());
        assert_eq!(target.tenant("other").unwrap().queued_total(), 1);
        assert_eq!(source.tenant("stays").unwrap().queued_total(), 1);
        let EnqueueOutcome::Queued { seq } = moved.enqueue(vec![entry("after")]).unwrap()[0] else {
            panic!("queued");
        };
        assert!(seq > last_seq, "{seq} > {last_seq}");
    }
}

#[test]
fn a_refused_or_damaged_import_leaves_no_key_of_the_tenant() {
    // Goal: a record refused by the caller's check writes nothing; a stream damaged after
    // its first keys removes what it wrote.
    let dir = tempfile::tempdir().unwrap();
    let source = Store::open(&dir.path().join("a"), StoreOptions::default()).unwrap();
    let target = Store::open(&dir.path().join("b"), StoreOptions::default()).unwrap();
    registered(&source, "mover");
    let mover = source.tenant("mover").unwrap();
    for n in 0..20 {
        mover.enqueue(vec![entry(&format!("m{n}"))]).unwrap();
    }
    let bytes = export_bytes(&source, "mover");

    let mut reader = SnapshotReader::open(&bytes[..]).unwrap();
    let err = target
        .import_tenant(
            &mut reader,
            |_| Err(StoreError::Io("refused".into())),
            |_, _| Ok(()),
        )
        .unwrap_err();
    assert!(err.to_string().contains("refused"));
    assert_eq!(target.tenant("mover").unwrap().queued_total(), 0);

    let mut damaged = bytes.clone();
    let at = damaged.len() - 40;
    damaged[at] ^= 0xFF;
    let mut reader = SnapshotReader::open(&damaged[..]).unwrap();
    assert!(target
        .import_tenant(&mut reader, |_| Ok(()), |_, _| Ok(()))
        .is_err());
    let inner = target.tenant("mover").unwrap();
    assert_eq!(inner.queued_total(), 0);
    assert!(inner
        .get_record(RecordKind::Gift, "stripe", "pi_m3")
        .unwrap()
        .is_none());
}

#[test]
fn marking_a_tenant_moved_returns_its_earlier_state_once() {
    // Goal: the export learns the run state a tenant had (to start it in that state on the
    // other instance); marking it again changes nothing; an unknown tenant is None.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    registered(&store, "mover");
    assert!(store.registry().mark_needs_operator("mover", 5).unwrap());
    assert_eq!(
        store.registry().mark_moved("mover", 6).unwrap(),
        Some(TenantRunState::NeedsOperator)
    );
    assert_eq!(
        store.registry().get("mover").unwrap().unwrap().run_state(),
        TenantRunState::Moved
    );
    assert_eq!(
        store.registry().mark_moved("mover", 7).unwrap(),
        Some(TenantRunState::Moved)
    );
    assert!(
        !store.registry().mark_needs_operator("mover", 8).unwrap(),
        "a moved tenant stays moved"
    );
    assert_eq!(store.registry().mark_moved("nobody", 9).unwrap(), None);
}
