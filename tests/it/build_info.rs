//! What a process was built from: `steward --version` and the `steward_build_info` metric,
//! beside the `process_*` metrics of a running `steward serve`.

use std::process::Command;
use std::time::Duration;

use crate::common::{wait_until, SpawnOptions, TestApp};

/// The revision `build.rs` should have found: the checkout's HEAD (`unknown` without git).
fn expected_revision() -> String {
    Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string())
        .filter(|revision| !revision.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

/// The value of the first sample line of `name` (no labels) in a Prometheus text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[test]
fn version_names_the_crate_version_and_the_git_revision() {
    // Goal: `steward --version` prints the crate's version and the git revision of the checkout it was built from.
    let output = Command::new(env!("CARGO_BIN_EXE_steward"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        text.trim(),
        format!(
            "steward {} (revision {})",
            env!("CARGO_PKG_VERSION"),
            expected_revision()
        )
    );
}

#[tokio::test]
async fn metrics_name_the_build_and_the_process() {
    // Goal: a running serve's /metrics carries steward_build_info with its version and revision, and the process_* metrics with live values (resident memory, CPU, start time, threads, open fds).
    let app = TestApp::spawn(SpawnOptions::default()).await;
    let build_line = format!(
        "steward_build_info{{version=\"{}\",revision=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        expected_revision()
    );
    let text = wait_until(
        Duration::from_secs(10),
        "the build info rendered",
        || async {
            let text = app.metrics_text().await;
            text.contains(&build_line).then_some(text)
        },
    )
    .await;
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let resident = sample(&text, "process_resident_memory_bytes").expect("resident memory");
    assert!(resident > 1_000_000.0, "{resident}");
    // A counter of whole seconds (the collector's): present, 0 in a process this young.
    assert!(sample(&text, "process_cpu_seconds_total").expect("cpu") >= 0.0);
    let start_time = sample(&text, "process_start_time_seconds").expect("start time");
    assert!(
        (started - 600.0..=started).contains(&start_time),
        "{start_time} vs now {started}"
    );
    assert!(sample(&text, "process_threads").expect("threads") >= 2.0);
    assert!(sample(&text, "process_open_fds").expect("open fds") >= 3.0);
}
