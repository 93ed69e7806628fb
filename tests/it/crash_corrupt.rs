//! Goal: a data dir whose sled files are damaged makes `steward serve` refuse to start — a
//! non-zero exit with a message naming the store's path and saying it is corrupt — never
//! "repaired" by dropping data; where Steward sees the damage before sled touches anything,
//! the files are left byte for byte as they were.
//!
//! Which damage sled 0.34.7 reports (measured with this file's helpers, 300 + 100 entries):
//! - bytes flipped in the middle of a snapshot file (`snap.*`): "crc does not match" →
//!   refused, files untouched. Reliable: the test below uses it. A snapshot exists once the
//!   store was opened at least once more after being written (sled writes one at open).
//! - bytes flipped in, or cut off, the log (`db`) at a point the last snapshot already
//!   covers: refused ("stable lsn … should be >= snapshot.stable_lsn"), but sled's recovery
//!   has already rewritten `db` before it gives up.
//! - the same damage past the last snapshot, or anywhere when there is no snapshot yet (a
//!   store only ever written by one process): sled takes it for a torn tail, truncates the
//!   log there and opens without every entry written after the damage (acknowledged,
//!   flushed and fsynced ones included). Steward's durability marker catches this after
//!   sled's open (the recovered marker is behind the marker file) and refuses to start; by
//!   then sled has rewritten the log's tail — a limit recorded by the ignored test at the
//!   end. Damage that cuts only writes flushed within the marker file's last interval (≤ 1
//!   s; none after a clean stop) is not seen.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use futures_util::FutureExt;
use reqwest::Method;
use serde_json::json;

use crate::common::{
    files_below, serve_command, serve_once, tenant_body, Served, SpawnOptions, TestApp,
};
use crate::crash_support::CrashRig;

/// Every file below `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    files_below(dir)
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect()
}

/// Runs `steward serve` on `data_dir` (as TestApp does) until it exits or starts serving
/// (then it is killed).
fn serve_damaged(data_dir: &Path) -> Served {
    let addr_file = data_dir.join("listen-addr");
    let _ = std::fs::remove_file(&addr_file);
    let output_path = data_dir.with_file_name("corrupt-run.log");
    serve_once(serve_command(data_dir), &output_path, &addr_file)
}

/// An engine that stored a few hundred entries and stopped cleanly (SIGTERM): its data dir.
async fn cleanly_stopped_store() -> TestApp {
    let mut app = TestApp::spawn(SpawnOptions::default()).await;
    app.create_tenant(&tenant_body("corrupt")).await;
    app.admin(Method::POST, "/v1/tenants/corrupt/pause")
        .send()
        .await
        .unwrap();
    let queued = app
        .admin_json(
            Method::POST,
            "/v1/tenants/corrupt/_test/enqueue?count=300&prefix=kept_",
        )
        .await;
    assert_eq!(queued["queued"], 300, "{queued}");
    let (status, _) = app.terminate();
    assert!(status.success(), "clean stop: {status}");
    app
}

/// The store's snapshot file (`snap.*`), if sled wrote one.
fn snapshot_file(store: &Path) -> Option<PathBuf> {
    files_below(store).into_iter().find(|path| {
        path.file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with("snap."))
    })
}

/// Flips `count` bytes of `path` from `offset` on.
fn flip_bytes(path: &Path, offset: usize, count: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    for byte in &mut bytes[offset..offset + count] {
        *byte ^= 0xA5;
    }
    std::fs::write(path, &bytes).unwrap();
}

/// Asserts `steward serve` refuses `app`'s damaged store: a non-zero exit and a message
/// naming the store as corrupt. Returns what it printed.
fn assert_refused(app: &TestApp) -> String {
    let data_dir = app.data_dir();
    let store = data_dir.join("store");
    let (status, printed) = match serve_damaged(&data_dir) {
        Served::Exited(status, printed) => (status, printed),
        Served::Started(printed) => panic!("steward started on a damaged store:\n{printed}"),
    };
    assert!(!status.success(), "exit status {status}:\n{printed}");
    let message = format!("the store at {} is corrupt", store.display());
    assert!(
        printed.contains(&message),
        "no clear message naming the store:\n{printed}"
    );
    assert!(printed.contains("refuses to start"), "{printed}");
    printed
}

/// Asserts `steward serve` refused `app`'s damaged store with a clear message, touching no
/// file of the data dir.
fn assert_refused_untouched(app: &TestApp) {
    let data_dir = app.data_dir();
    // The address file of the last run is not part of the store; serve rewrites it.
    let _ = std::fs::remove_file(data_dir.join("listen-addr"));
    let before = snapshot(&data_dir);
    assert_refused(app);
    let after = snapshot(&data_dir);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "files added or removed"
    );
    for (path, bytes) in &before {
        let now = &after[path];
        let first_difference = bytes.iter().zip(now.iter()).position(|(a, b)| a != b);
        assert!(
            now == bytes,
            "{} was changed: {} → {} bytes, first difference at {first_difference:?}",
            path.display(),
            bytes.len(),
            now.len()
        );
    }
}

#[tokio::test]
async fn crash_corrupt_snapshot_is_refused_and_left_alone() {
    // Goal: a damaged sled snapshot → serve exits non-zero naming the store as corrupt, and
    // every file of the data dir is byte for byte what it was.
    let mut app = cleanly_stopped_store().await;
    // Opened once more and stopped: sled wrote its snapshot at this open.
    app.start().await;
    let (status, _) = app.terminate();
    assert!(status.success());
    let snap = snapshot_file(&app.data_dir().join("store")).expect("sled wrote a snapshot");
    let length = std::fs::metadata(&snap).unwrap().len() as usize;
    flip_bytes(&snap, length / 2, 16);
    assert_refused_untouched(&app);
    // And again: a refusal changes nothing that would let a second start through.
    assert_refused_untouched(&app);
}

#[tokio::test]
async fn crash_corrupt_config_is_refused_and_left_alone() {
    // Goal: sled's `conf` file garbled (a number made non-numeric) → refused the same way,
    // with the store written by a single process (no snapshot yet).
    let app = cleanly_stopped_store().await;
    let conf = app.data_dir().join("store").join("conf");
    let mut bytes = std::fs::read(&conf).unwrap();
    // `key: value` lines followed by a checksum (not UTF-8).
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let at = text.find("segment_size: ").expect("sled 0.34 conf format") + "segment_size: ".len();
    bytes[at] = b'x';
    std::fs::write(&conf, &bytes).unwrap();
    assert_refused_untouched(&app);
}

#[tokio::test]
async fn crash_corrupt_damaged_log_is_refused_not_truncated() {
    // Goal: one flipped byte near the end of sled's log, after a clean stop of a store
    // holding 300 acknowledged entries → serve refuses to start (the durability marker,
    // actors/src/store/durability_marker.rs, is ahead of what sled recovered) rather than
    // opening with fewer entries; a second start refuses the same way. sled's recovery has
    // rewritten the log's tail by then (the ignored test below records that limit).
    let mut app = cleanly_stopped_store().await;
    let db = app.data_dir().join("store").join("db");
    let length = std::fs::metadata(&db).unwrap().len() as usize;
    flip_bytes(&db, length - 1, 1);
    if let Served::Started(_) = serve_damaged(&app.data_dir()) {
        app.start().await;
        let status = app.status("corrupt").await;
        panic!(
            "steward started on a damaged log with {} of 300 entries captured",
            status["counts"]["captured"]
        );
    }
    let printed = assert_refused(&app);
    assert!(
        printed.contains("writes that were flushed are missing"),
        "the refusal says what was lost:\n{printed}"
    );
    assert_refused(&app);
}

#[tokio::test]
async fn crash_corrupt_log_cut_short_is_refused() {
    // Goal: the last 1 % of sled's log cut off after a clean stop (a torn tail as far as sled
    // can tell) → refused, not started without the entries that were in it.
    let app = cleanly_stopped_store().await;
    let db = app.data_dir().join("store").join("db");
    let length = std::fs::metadata(&db).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
    file.set_len(length - length / 100).unwrap();
    drop(file);
    let printed = assert_refused(&app);
    assert!(printed.contains("flushed are missing"), "{printed}");
}

#[tokio::test]
async fn crash_corrupt_store_in_the_kill_loop_fails_loudly_and_is_kept() {
    // Goal: the crash harness's own guard — a store that does not reopen after a kill makes
    // the run panic saying the store is corrupt and naming the data dir, which is kept.
    let mut rig = CrashRig::start(&["keep"], json!({})).await;
    rig.app.kill9();
    rig.restart().await; // sled writes its snapshot at this open
    rig.app.kill9();
    let data_dir = rig.app.data_dir();
    let snap = snapshot_file(&data_dir.join("store")).expect("sled wrote a snapshot");
    let length = std::fs::metadata(&snap).unwrap().len() as usize;
    flip_bytes(&snap, length / 2, 16);
    let outcome = AssertUnwindSafe(async move { rig.restart().await })
        .catch_unwind()
        .await;
    let panic = outcome.expect_err("the restart on a damaged store must fail");
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("THE STORE IS CORRUPT"), "{message}");
    assert!(
        message.contains(&data_dir.display().to_string()),
        "{message}"
    );
    assert!(data_dir.join("store").join("db").exists(), "data dir kept");
    std::fs::remove_dir_all(data_dir.parent().unwrap()).unwrap();
}

#[tokio::test]
#[ignore = "known bug (issue 5 report): sled 0.34 rewrites the damaged log while recovering, then refuses — the refusal comes after the files changed"]
async fn crash_corrupt_log_damage_before_the_snapshot_is_refused_untouched() {
    // Goal (fails today): a flipped byte early in the log, which the last snapshot covers →
    // refused (this part holds) with every file byte for byte unchanged (this does not: the
    // log's tail is rewritten before sled notices the snapshot is ahead of the log).
    let mut app = cleanly_stopped_store().await;
    app.start().await;
    let (status, _) = app.terminate();
    assert!(status.success());
    let db = app.data_dir().join("store").join("db");
    let length = std::fs::metadata(&db).unwrap().len() as usize;
    flip_bytes(&db, length / 100, 1);
    assert_refused_untouched(&app);
}
