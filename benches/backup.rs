//! Backup benchmark: how long a backup holds the store's writes back, and what writers see
//! meanwhile (docs/operations.md "Backup and restore").
//!
//! A store is filled with `STEWARD_BENCH_ENTRIES` entries (default 200,000: 1 KiB JSON body,
//! record, alias) over 20 tenants. Then 16 writers (tokio tasks) enqueue one entry each and
//! wait for `durable()`, in a loop, while the store is backed up to a file on the same disk
//! (`Store::write_backup`, the copy `POST /v1/backup` makes). Printed: the copy's size, the
//! time writes were held back, the writers' ack latency (p50, p99, max) before and during
//! the backup, the restore's time into a new directory, and one tenant's export.
//! Exit 1 if the restored store lacks an entry acknowledged before the backup began.

use std::io::BufWriter;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use steward_actors::store::{
    restore_backup, EntryFact, Lane, NewEntry, RecordKind, Store, StoreOptions, TenantRecord,
};

const TENANTS: usize = 20;
const WRITERS: usize = 16;

fn entry(key: &str, body: &str) -> NewEntry {
    NewEntry {
        fact: EntryFact {
            kind: RecordKind::Gift,
            source: "stripe".into(),
            source_id: format!("pi_{key}"),
            idempotency_key: key.into(),
            lane: Lane::Live,
            transaction_source: "Stripe".into(),
            body_json: body.to_string(),
        },
        aliases: vec![format!("evt_{key}")],
        now_ms: 1,
    }
}

fn body(key: &str) -> String {
    format!(
        "{{\"transactionId\":\"{key}\",\"note\":\"{}\"}}",
        "x".repeat(1000)
    )
}

fn quantiles(histogram: &Histogram<u64>) -> String {
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} acks)",
        histogram.value_at_quantile(0.5) as f64 / 1000.0,
        histogram.value_at_quantile(0.99) as f64 / 1000.0,
        histogram.max() as f64 / 1000.0,
        histogram.len()
    )
}

fn main() {
    let entries: usize = std::env::var("STEWARD_BENCH_ENTRIES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(200_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("store"), StoreOptions::default()).expect("open");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let fill_started = Instant::now();
    for tenant in 0..TENANTS {
        let tenant_store = store.tenant(&format!("t{tenant}")).unwrap();
        let per_tenant = entries / TENANTS;
        for chunk in (0..per_tenant).collect::<Vec<_>>().chunks(500) {
            let batch = chunk
                .iter()
                .map(|n| {
                    let key = format!("fill-{tenant}-{n}");
                    entry(&key, &body(&key))
                })
                .collect();
            tenant_store.enqueue(batch).unwrap();
        }
    }
    store.flush_blocking().unwrap();
    println!(
        "filled {entries} entries over {TENANTS} tenants in {:.1} s; store on disk {:.0} MiB",
        fill_started.elapsed().as_secs_f64(),
        store.size_on_disk().unwrap() as f64 / 1048576.0
    );

    let stop = Arc::new(AtomicBool::new(false));
    let backing_up = Arc::new(AtomicBool::new(false));
    let before = Arc::new(Mutex::new(Histogram::<u64>::new(3).unwrap()));
    let during = Arc::new(Mutex::new(Histogram::<u64>::new(3).unwrap()));
    let acknowledged: Arc<Mutex<Vec<(usize, String)>>> = Arc::default();
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let (store, stop, backing_up, before, during, acknowledged) = (
                store.clone(),
                Arc::clone(&stop),
                Arc::clone(&backing_up),
                Arc::clone(&before),
                Arc::clone(&during),
                Arc::clone(&acknowledged),
            );
            runtime.spawn(async move {
                let tenant = writer % TENANTS;
                let tenant_store = store.tenant(&format!("t{tenant}")).unwrap();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("live-{writer}-{n}");
                    let started = Instant::now();
                    let in_backup = backing_up.load(Ordering::Relaxed);
                    let entry = entry(&key, &body(&key));
                    let store_for_write = tenant_store.clone();
                    tokio::task::spawn_blocking(move || store_for_write.enqueue(vec![entry]))
                        .await
                        .unwrap()
                        .unwrap();
                    store.durable().await.unwrap();
                    let micros = started.elapsed().as_micros() as u64;
                    let histogram = if in_backup || backing_up.load(Ordering::Relaxed) {
                        &during
                    } else {
                        &before
                    };
                    histogram.lock().unwrap().record(micros.max(1)).unwrap();
                    acknowledged.lock().unwrap().push((tenant, key));
                    n += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let acknowledged_before: Vec<(usize, String)> = acknowledged.lock().unwrap().clone();
    backing_up.store(true, Ordering::Relaxed);
    let backup_path = dir.path().join("backup.stwd");
    let started = Instant::now();
    let file = std::fs::File::create(&backup_path).unwrap();
    let (writer, stats) = store
        .write_backup(BufWriter::new(file), 1, "bench")
        .expect("backup");
    let (_, counts) = writer.finish().expect("finish");
    let took = started.elapsed();
    std::thread::sleep(Duration::from_millis(200));
    backing_up.store(false, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    runtime.block_on(async {
        for writer in writers {
            writer.await.unwrap();
        }
    });
    println!(
        "backup: {} entries, {:.0} MiB in {:.2} s ({:.0} MiB/s); writes held back {} ms",
        counts.entries,
        counts.bytes as f64 / 1048576.0,
        took.as_secs_f64(),
        counts.bytes as f64 / 1048576.0 / took.as_secs_f64(),
        stats.gate_closed_ms
    );
    println!(
        "writers' acks before the backup: {}",
        quantiles(&before.lock().unwrap())
    );
    println!(
        "writers' acks during the backup: {}",
        quantiles(&during.lock().unwrap())
    );

    let restored = dir.path().join("restored");
    let started = Instant::now();
    let input = std::io::BufReader::new(std::fs::File::open(&backup_path).unwrap());
    restore_backup(input, &restored, |path, _| panic!("no files: {path}")).expect("restore");
    println!(
        "restore into a new directory: {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let copy = Store::open(&restored, StoreOptions::default()).expect("open the copy");
    let missing = acknowledged_before
        .iter()
        .filter(|(tenant, key)| {
            copy.tenant(&format!("t{tenant}"))
                .unwrap()
                .get_record(RecordKind::Gift, "stripe", &format!("pi_{key}"))
                .unwrap()
                .is_none()
        })
        .count();
    println!(
        "acknowledged before the backup: {}, missing from the copy: {missing}",
        acknowledged_before.len()
    );

    let started = Instant::now();
    store
        .registry()
        .insert_new(&TenantRecord {
            id: "t0".into(),
            config_json: "{}".into(),
            sealed_secrets: Vec::new(),
            state: "running".into(),
            created_at_ms: 1,
            updated_at_ms: 1,
        })
        .unwrap();
    let (writer, tenant_entries) = store
        .write_tenant_export("t0", std::io::sink(), 1, "bench")
        .expect("export");
    writer.finish().unwrap();
    println!(
        "tenant export of t0: {tenant_entries} keys in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    if missing > 0 {
        std::process::exit(1);
    }
}
