//! Goal: issue 17 part 3 — `steward backup` of a running instance under ingest load, then
//! `steward restore` into a new data dir: every payment acknowledged before the backup began
//! is in the copy, the copy starts and finishes the work, and restore refuses a used target
//! or a damaged file while changing nothing.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use steward_actors::store::{RecordKind, Store, StoreOptions};

use crate::common::{
    output_text, steward_cli, tenant_body, wait_until, SpawnOptions, TestApp, ADMIN_TOKEN,
};
use crate::ingress_support::{one_time_charge, post_stripe, stripe_event, stripe_secret, BASIL};

const TENANT: &str = "bk";
const SENDERS: usize = 6;
/// Payments acknowledged before the backup starts.
const ACKS_BEFORE_BACKUP: usize = 150;

/// The payment ids whose records a stopped data dir holds, of those asked about.
fn records_present(data_dir: &Path, payments: &BTreeSet<String>) -> BTreeSet<String> {
    let store = Store::open(&data_dir.join("store"), StoreOptions::default()).unwrap();
    let tenant = store.tenant(TENANT).unwrap();
    payments
        .iter()
        .filter(|payment| {
            tenant
                .get_record(RecordKind::Gift, "stripe", payment)
                .unwrap()
                .is_some()
        })
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_every_acknowledged_payment_into_a_new_data_dir() {
    let app = Arc::new(TestApp::spawn(SpawnOptions::default()).await);
    app.create_tenant(&tenant_body(TENANT)).await;
    let secret = stripe_secret(TENANT);
    let acknowledged: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..SENDERS)
        .map(|sender| {
            let (app, secret, acknowledged, stop) = (
                Arc::clone(&app),
                secret.clone(),
                Arc::clone(&acknowledged),
                Arc::clone(&stop),
            );
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let name = format!("bk_{sender}_{n}");
                    let event = stripe_event(
                        &format!("evt_{name}"),
                        "charge.succeeded",
                        BASIL,
                        one_time_charge(&name, 1500),
                    );
                    let (status, body) = post_stripe(&app, TENANT, &secret, &event).await;
                    assert!(status == 202 || status == 200, "{status}: {body}");
                    acknowledged.lock().unwrap().push(format!("pi_{name}"));
                    n += 1;
                }
            })
        })
        .collect();
    wait_until(Duration::from_secs(60), "payments acknowledged", || async {
        (acknowledged.lock().unwrap().len() >= ACKS_BEFORE_BACKUP).then_some(())
    })
    .await;

    // The backup, while the senders keep going.
    let before: BTreeSet<String> = acknowledged.lock().unwrap().iter().cloned().collect();
    let backup_file = app.dir.path().join("steward.backup");
    let (admin_url, file) = (app.admin_url.clone(), backup_file.clone());
    let output = tokio::task::spawn_blocking(move || {
        steward_cli(&[
            "backup",
            "--url",
            &admin_url,
            "--to",
            file.to_str().unwrap(),
        ])
    })
    .await
    .unwrap();
    let during = acknowledged.lock().unwrap().len();
    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        sender.await.unwrap();
    }
    assert!(output.status.success(), "{}", output_text(&output));
    assert!(
        during > before.len(),
        "ingest went on while the backup was made ({} → {during})",
        before.len()
    );
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("steward_backups_total{outcome=\"made\"} 1"),
        "{metrics}"
    );

    // A second backup to the same name is refused and leaves the file alone.
    let size = std::fs::metadata(&backup_file).unwrap().len();
    let again = steward_cli(&[
        "backup",
        "--url",
        &app.admin_url,
        "--to",
        backup_file.to_str().unwrap(),
    ]);
    assert!(
        !again.status.success() && output_text(&again).contains("exists"),
        "{}",
        output_text(&again)
    );
    assert_eq!(std::fs::metadata(&backup_file).unwrap().len(), size);

    // Restore into a new data dir, with the original's master key (never in the backup).
    let copy_dir = tempfile::tempdir().unwrap();
    let copy_data = copy_dir.path().join("data");
    let output = steward_cli(&[
        "restore",
        "--from",
        backup_file.to_str().unwrap(),
        "--data-dir",
        copy_data.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", output_text(&output));
    assert!(
        !copy_data.join("master.key").exists(),
        "the master key is not in a backup"
    );
    let present = records_present(&copy_data, &before);
    let missing: Vec<_> = before.difference(&present).take(5).collect();
    assert!(
        missing.is_empty(),
        "{} of {} payments acknowledged before the backup are missing, e.g. {missing:?}",
        before.len() - present.len(),
        before.len()
    );
    std::fs::copy(
        app.data_dir().join("master.key"),
        copy_data.join("master.key"),
    )
    .unwrap();

    // A used target is refused and left as it was; so is a damaged backup.
    let refused = steward_cli(&[
        "restore",
        "--from",
        backup_file.to_str().unwrap(),
        "--data-dir",
        copy_data.to_str().unwrap(),
    ]);
    assert!(
        !refused.status.success() && output_text(&refused).contains("not empty"),
        "{}",
        output_text(&refused)
    );
    let damaged = copy_dir.path().join("damaged.backup");
    let mut bytes = std::fs::read(&backup_file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xFF;
    std::fs::write(&damaged, &bytes).unwrap();
    let target = copy_dir.path().join("never");
    let refused = steward_cli(&[
        "restore",
        "--from",
        damaged.to_str().unwrap(),
        "--data-dir",
        target.to_str().unwrap(),
    ]);
    assert!(!refused.status.success(), "{}", output_text(&refused));
    assert!(
        output_text(&refused).contains("damaged")
            || output_text(&refused).contains("not a readable")
    );
    assert!(!target.exists(), "a failed restore leaves nothing");

    // The copy runs: the tenant is there and its restored entries reach Virtuous (the copy's
    // own embedded simulator).
    let mut copy = TestApp {
        dir: copy_dir,
        options: SpawnOptions::default(),
        child: None,
        main_url: String::new(),
        admin_url: String::new(),
        admin_token: ADMIN_TOKEN.to_string(),
        client: app.client.clone(),
    };
    copy.start().await;
    let status = copy.status(TENANT).await;
    assert!(
        status["counts"]["captured"].as_u64().unwrap() >= before.len() as u64,
        "{status}"
    );
    wait_until(
        Duration::from_secs(60),
        "the copy's queue to drain",
        || async {
            let status = copy.status(TENANT).await;
            (crate::common::queued_total(&status) == 0).then_some(())
        },
    )
    .await;
}
