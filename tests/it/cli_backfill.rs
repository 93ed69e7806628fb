//! `steward backfill …` run as a process against a real `steward serve`: the URL and token
//! found from the data dir, `--json` output that parses, tables that name their columns, API
//! errors printed as `code: message` with a non-zero exit, and the dry-run report.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::backfill_support::{app_with_tenant, small_export};
use crate::common::{SpawnOptions, TestApp, ADMIN_TOKEN};

const TENANT: &str = "hope-shelter";

/// Runs `steward backfill {args}` with no environment but PATH and `env`.
fn steward_backfill(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_steward"));
    command
        .arg("backfill")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("run steward backfill")
}

/// `steward backfill {args} --data-dir {app's}` (URL from listen-addr, token from the file).
fn via_data_dir(app: &TestApp, args: &[&str]) -> Output {
    let data_dir = app.data_dir();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--data-dir", data_dir.to_str().unwrap()]);
    steward_backfill(&all, &[])
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).to_string()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

/// The JSON a successful `--json` command printed.
fn json_of(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status,
        stderr(output)
    );
    serde_json::from_str(&stdout(output))
        .unwrap_or_else(|error| panic!("not JSON ({error}): {}", stdout(output)))
}

/// A tenant on an engine whose admin token is in the data dir (not the environment).
async fn app_with_token_file() -> TestApp {
    let options = SpawnOptions {
        admin_token_from_env: false,
        ..SpawnOptions::default()
    };
    app_with_tenant(TENANT, options).await
}

fn write_export(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("payments.csv");
    std::fs::write(&path, small_export()).unwrap();
    path
}

/// `create --json` of a Stripe-export job labelled `label` (through the data dir's token);
/// the job it prints.
fn create_export_job(app: &TestApp, label: &str) -> Value {
    json_of(&via_data_dir(
        app,
        &[
            "create",
            "--tenant",
            TENANT,
            "--source",
            "stripe",
            "--mapping",
            "stripe_payments_export",
            "--label",
            label,
            "--json",
        ],
    ))
}

#[actix_rt::test]
async fn cli_json_parses_tables_name_columns_and_errors_exit_non_zero() {
    // Goal: create/upload/list/status with --json print JSON that parses; the list and status
    // tables name their columns; a refused start prints `invalid_transition: …` on stderr
    // (no panic, nothing on stdout) and exits 1; --url with STEWARD_ADMIN_TOKEN works too.
    let app = app_with_token_file().await;
    let created = create_export_job(&app, "cli-2024");
    assert_eq!(created["state"], "awaiting_file", "{created}");
    let job_id = created["id"].as_str().unwrap().to_string();

    let listed = via_data_dir(&app, &["list", "--tenant", TENANT]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    let table = stdout(&listed);
    let header = table.lines().next().unwrap_or("");
    for column in [
        "ID",
        "LABEL",
        "SOURCE",
        "STATE",
        "ROWS",
        "QUEUED",
        "CONFIRMED",
        "DONE",
    ] {
        assert!(header.contains(column), "{column} not in {header:?}");
    }
    assert!(
        table.contains(&job_id) && table.contains("awaiting_file"),
        "{table}"
    );
    let listed_json = json_of(&via_data_dir(&app, &["list", "--tenant", TENANT, "--json"]));
    assert_eq!(listed_json["backfills"][0]["id"], job_id.as_str());

    let status = via_data_dir(&app, &["status", "--tenant", TENANT, &job_id]);
    let status_text = stdout(&status);
    for label in [
        "state",
        "rows read",
        "queued",
        "submitted",
        "confirmed",
        "rejected",
        "eta",
    ] {
        assert!(
            status_text.contains(label),
            "{label} not in:\n{status_text}"
        );
    }

    let refused = via_data_dir(&app, &["start", "--tenant", TENANT, &job_id]);
    assert_eq!(refused.status.code(), Some(1));
    let message = stderr(&refused);
    assert!(
        message.starts_with("steward: invalid_transition: cannot start"),
        "{message}"
    );
    assert!(
        !message.contains("panicked") && stdout(&refused).is_empty(),
        "{message}"
    );

    let unknown = via_data_dir(&app, &["status", "--tenant", "nobody", &job_id]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        stderr(&unknown).contains("not_found"),
        "{}",
        stderr(&unknown)
    );

    let file = write_export(app.dir.path());
    let uploaded = json_of(&steward_backfill(
        &[
            "upload",
            "--tenant",
            TENANT,
            &job_id,
            file.to_str().unwrap(),
            "--json",
            "--url",
            &app.admin_url,
        ],
        &[("STEWARD_ADMIN_TOKEN", &app.admin_token)],
    ));
    assert_eq!(uploaded["file_bytes"], small_export().len(), "{uploaded}");
    assert_ne!(uploaded["state"], "awaiting_file", "{uploaded}");

    let wrong_token = steward_backfill(
        &["list", "--tenant", TENANT, "--url", &app.admin_url],
        &[("STEWARD_ADMIN_TOKEN", ADMIN_TOKEN)],
    );
    assert_eq!(wrong_token.status.code(), Some(1));
    assert!(
        stderr(&wrong_token).contains("unauthorized"),
        "{}",
        stderr(&wrong_token)
    );

    let unreachable = steward_backfill(
        &["list", "--tenant", TENANT, "--url", "http://127.0.0.1:9"],
        &[("STEWARD_ADMIN_TOKEN", ADMIN_TOKEN)],
    );
    assert_eq!(unreachable.status.code(), Some(1));
    assert!(
        stderr(&unreachable).contains("cannot reach the admin API"),
        "{}",
        stderr(&unreachable)
    );
    let nowhere = tempfile::tempdir().unwrap();
    let no_server = steward_backfill(
        &[
            "list",
            "--tenant",
            TENANT,
            "--data-dir",
            nowhere.path().to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(no_server.status.code(), Some(1));
    assert!(
        stderr(&no_server).contains("listen-addr"),
        "{}",
        stderr(&no_server)
    );
}

#[actix_rt::test]
async fn cli_dry_run_prints_the_report_and_watch_follows_to_done() {
    // Goal (needs the file reader, src/backfill): `dry-run` waits for the report and prints
    // its tables (summary, skipped by reason, rejects with their rows); `--json` parses;
    // `start` then `status --watch --json` returns once the job is done.
    let app = app_with_token_file().await;
    let created = create_export_job(&app, "cli-flow");
    let job_id = created["id"].as_str().unwrap().to_string();
    let file = write_export(app.dir.path());
    let uploaded = via_data_dir(
        &app,
        &[
            "upload",
            "--tenant",
            TENANT,
            &job_id,
            file.to_str().unwrap(),
        ],
    );
    assert!(uploaded.status.success(), "{}", stderr(&uploaded));

    let report = via_data_dir(&app, &["dry-run", "--tenant", TENANT, &job_id]);
    assert!(
        report.status.success(),
        "{}{}",
        stdout(&report),
        stderr(&report)
    );
    let text = stdout(&report);
    for expected in [
        "complete",
        "rows ",
        "payments",
        "calls needed",
        "hours needed",
        "SKIPPED REASON",
        "ROW  REASON",
        "failed payment",
    ] {
        assert!(text.contains(expected), "{expected:?} not in:\n{text}");
    }
    let as_json = json_of(&via_data_dir(
        &app,
        &["dry-run", "--tenant", TENANT, &job_id, "--json"],
    ));
    assert_eq!(as_json["dry_run"]["complete"], true);
    assert_eq!(as_json["dry_run"]["rejects"][0]["row"], 5);

    let rejects = via_data_dir(&app, &["rejects", "--tenant", TENANT, &job_id, "--json"]);
    let lines: Vec<Value> = stdout(&rejects)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{}", stdout(&rejects));

    let started = json_of(&via_data_dir(
        &app,
        &["start", "--tenant", TENANT, &job_id, "--json"],
    ));
    assert_eq!(started["state"], "running");
    let finished = json_of(&via_data_dir(
        &app,
        &["status", "--tenant", TENANT, &job_id, "--watch", "--json"],
    ));
    assert_eq!(finished["state"], "done", "{finished}");
    assert_eq!(finished["progress"]["percent"], 100.0, "{finished}");
}
