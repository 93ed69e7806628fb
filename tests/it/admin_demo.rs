//! `steward demo` as a user runs it: the real binary, one process, loopback only.

use std::cell::RefCell;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{at_timeout, wait_until_blocking};

/// Runs `steward demo` with `args`; (exit code, stdout, stderr, how long it took).
fn run_demo(args: &[&str], timeout: Duration) -> (Option<i32>, String, String, Duration) {
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_steward"))
        .arg("demo")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn steward demo");
    let child = RefCell::new(child);
    // Formatted at the deadline only: kills the demo and shows what it printed.
    let what = at_timeout(|| {
        let mut child = child.borrow_mut();
        let _ = child.kill();
        let _ = child.wait();
        let mut stdout = String::new();
        let mut stderr = String::new();
        let _ = child.stdout.take().unwrap().read_to_string(&mut stdout);
        let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
        format!("steward demo to exit (killed); stdout:\n{stdout}\nstderr:\n{stderr}")
    });
    wait_until_blocking(timeout, what, || child.borrow_mut().try_wait().unwrap());
    let child = child.into_inner();
    let output = child.wait_with_output().unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        started.elapsed(),
    )
}

#[test]
fn a_demo_that_cannot_converge_exits_1_with_the_reason_and_stops_the_engine() {
    // Goal: with no time to converge the demo exits 1 quickly, names why on stderr, and shuts
    // its engine down gracefully (the engine removes its listen-addr file on a clean stop).
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("demo-data");
    let (code, stdout, stderr, took) = run_demo(
        &[
            "--tenants",
            "1",
            "--events",
            "3",
            "--timeout-s",
            "0",
            "--data-dir",
            data_dir.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    assert_eq!(code, Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
    let reason = stderr
        .lines()
        .find(|line| line.starts_with("steward: "))
        .unwrap_or_else(|| panic!("no `steward: …` reason on stderr:\n{stderr}"));
    // Before the ingress exists the first delivery fails; with it, the first phase times out.
    assert!(
        reason.contains("did not converge") || reason.contains("answered 404"),
        "{reason}"
    );
    assert!(stdout.contains("tenant demo-1-1: created"), "{stdout}");
    assert!(stdout.contains("shutting the engine down"), "{stdout}");
    assert!(
        !data_dir.join("listen-addr").exists(),
        "the engine did not stop cleanly"
    );
    assert!(
        data_dir.join("store").exists(),
        "--data-dir keeps the engine's data"
    );
}

#[test]
fn the_demo_converges_with_every_payment_confirmed_exactly_once() {
    // Goal: the README's run command works: exit 0, a summary per tenant, gifts = payments + refunds;
    // the pull tenant's NDJSON files hold the newest version of every record in Virtuous
    // (24 gifts − 2 deleted, 12 contacts) and the 2 deletes, lost webhooks included; the CDC
    // part streams a Postgres table into one gift per row.
    let (code, stdout, stderr, _) = run_demo(
        &[
            "--tenants",
            "2",
            "--events",
            "20",
            "--seed",
            "5",
            "--timeout-s",
            "120",
        ],
        Duration::from_secs(180),
    );
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("summary after"), "{stdout}");
    assert!(stdout.contains("exactly once"), "{stdout}");
    for tenant in ["demo-5-1", "demo-5-2"] {
        let row = stdout
            .lines()
            .find(|line| line.trim_start().starts_with(tenant) && line.contains('%'))
            .unwrap_or_else(|| panic!("no summary row for {tenant}:\n{stdout}"));
        let cells: Vec<&str> = row.split_whitespace().collect();
        // tenant, events, 202, 200, payments, gifts, calls, budget, (pct), confirmed, dead
        assert_eq!(cells[4], "20", "{row}");
        assert_eq!(cells[5], "21", "20 gifts + 1 reversal: {row}");
        assert_eq!(cells[cells.len() - 1], "0", "no dead letters: {row}");
    }
    let pull = stdout
        .lines()
        .find(|line| line.starts_with("steward demo: Pull (demo-5-pull)"))
        .unwrap_or_else(|| panic!("no pull line:\n{stdout}"));
    assert!(
        pull.contains("the newest line of each of 22 gifts and 12 contacts is its version in Virtuous, 2 deletes applied"),
        "{pull}"
    );
    let deletes = stdout
        .lines()
        .find(|line| line.trim_start().starts_with("gift") && line.contains("delete"))
        .unwrap_or_else(|| panic!("no gift delete row:\n{stdout}"));
    assert!(deletes.contains(" 2 line(s)"), "{deletes}");
    // The CDC part: a throwaway PostgreSQL cluster when the server binaries exist (they do
    // in CI: .ci/run installs them), else one line saying it was skipped.
    let cdc = stdout
        .lines()
        .find(|line| line.starts_with("steward demo: CDC (Postgres"))
        .unwrap_or_else(|| panic!("no CDC line:\n{stdout}"));
    if postgres_server_binaries_exist() {
        assert!(
            cdc.contains("250 rows snapshotted, 118 changes streamed")
                && cdc.contains("300 gifts in Virtuous for 300 donation rows")
                && cdc.contains("alerts: source_gift_changed, source_gift_deleted"),
            "{cdc}"
        );
    } else {
        assert!(cdc.contains("skipped"), "{cdc}");
    }
}

/// Whether the demo finds PostgreSQL server binaries: a `/usr/lib/postgresql/*/bin` with `initdb`
/// and `pg_ctl`.
fn postgres_server_binaries_exist() -> bool {
    std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .any(|entry| {
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()
        })
}
