//! The operator commands (`steward tenant|dlq|records|alerts|trigger`) against a real
//! `steward serve`: each does what docs/cli.md says, prints tables for people and the API's
//! JSON with `--json`, and a refused request prints the API's message with exit status 1.

use serde_json::{json, Value};

use crate::common::{paused_dead_letters, steward_cli, tenant_body, SpawnOptions, TestApp};

/// Runs a command against `app`; the output and whether it succeeded.
fn cli(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    let mut full = args.to_vec();
    full.extend(["--url", app.admin_url.as_str()]);
    let output = steward_cli(&full);
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn cli_ok(app: &TestApp, args: &[&str]) -> String {
    let (ok, stdout, stderr) = cli(app, args);
    assert!(ok, "{args:?}: stdout: {stdout}\nstderr: {stderr}");
    stdout
}

fn cli_json(app: &TestApp, args: &[&str]) -> Value {
    let mut full = args.to_vec();
    full.push("--json");
    let stdout = cli_ok(app, &full);
    serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("{args:?}: {error}: {stdout}"))
}

#[actix_rt::test]
async fn tenants_are_managed_from_the_command_line() {
    // Goal: create from a file, list (table and JSON, filtered), show, patch, pause, resume,
    // test-connection and delete; a refused call prints the API's code and message, exit 1.
    let app = TestApp::spawn(SpawnOptions::default()).await;
    let file = app.dir.path().join("hope.json");
    std::fs::write(&file, tenant_body("hope").to_string()).unwrap();
    let created = cli_ok(
        &app,
        &["tenant", "create", "--from", file.to_str().unwrap()],
    );
    assert!(created.contains("tenant hope created"), "{created}");
    app.create_tenant(&tenant_body("pine")).await;
    app.wait_ready().await;

    let table = cli_ok(&app, &["tenant", "list"]);
    let header = table.lines().next().unwrap();
    assert!(
        header.starts_with("ID") && header.contains("ALERTS"),
        "{table}"
    );
    assert!(
        table.lines().any(|line| line.starts_with("hope ")),
        "{table}"
    );
    assert!(table.contains("2 of 2 tenants"), "{table}");
    let page = cli_json(&app, &["tenant", "list", "-q", "PIN", "--sort=-id"]);
    assert_eq!(page["total"], 1, "{page}");
    assert_eq!(page["tenants"][0]["id"], "pine");

    let shown = cli_ok(&app, &["tenant", "show", "hope"]);
    for part in ["state", "running", "LANE", "live", "ingress URLs", "stripe"] {
        assert!(shown.contains(part), "{part}: {shown}");
    }
    let patch = app.dir.path().join("patch.json");
    std::fs::write(&patch, json!({"name": "Hope Renamed"}).to_string()).unwrap();
    let patched = cli_json(
        &app,
        &["tenant", "patch", "hope", "--from", patch.to_str().unwrap()],
    );
    assert_eq!(patched["name"], "Hope Renamed", "{patched}");
    assert!(cli_ok(&app, &["tenant", "pause", "hope"]).contains("state paused"));
    assert_eq!(app.status("hope").await["state"], "paused");
    assert!(cli_ok(&app, &["tenant", "resume", "hope"]).contains("state running"));
    let connection = cli_ok(&app, &["tenant", "test-connection", "hope"]);
    assert!(connection.starts_with("ok"), "{connection}");

    let (ok, stdout, stderr) = cli(&app, &["tenant", "show", "nobody"]);
    assert!(!ok);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.starts_with("steward: "), "{stderr}");
    assert!(stderr.contains("nobody"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let (ok, _, stderr) = cli(&app, &["tenant", "list", "--sort", "size"]);
    assert!(!ok);
    assert!(stderr.contains("invalid_field"), "{stderr}");

    assert!(cli_ok(&app, &["tenant", "delete", "pine", "--force"]).contains("deleted"));
    let page = cli_json(&app, &["tenant", "list"]);
    assert_eq!(page["total"], 1, "{page}");
}

#[actix_rt::test]
async fn a_triggered_payment_is_followed_found_and_its_dead_letters_handled() {
    // Goal: `trigger stripe` delivers a test payment and follows it to `submitted`;
    // `records find --email` and `records show` print its timeline; dead letters are listed,
    // shown with their body, replayed edited (an idempotency-field edit is refused with the
    // API's message) and discarded; alerts are listed and acknowledged.
    let app = TestApp::spawn(SpawnOptions::default()).await;
    app.create_tenant(&tenant_body("gala")).await;
    app.wait_ready().await;
    let triggered = cli_json(&app, &["trigger", "stripe", "--tenant", "gala", "payment"]);
    assert_eq!(triggered["record"]["state"], "submitted", "{triggered}");
    let payment_id = triggered["trigger"]["payment_id"]
        .as_str()
        .unwrap()
        .to_string();
    let email = triggered["trigger"]["donor_email"]
        .as_str()
        .unwrap()
        .to_string();
    let people = cli_ok(&app, &["trigger", "stripe", "--tenant", "gala", "refund"]);
    assert!(people.contains("delivered charge.refunded"), "{people}");
    assert!(
        people.contains("AT") && people.contains("enqueued"),
        "{people}"
    );

    let found = cli_ok(
        &app,
        &["records", "find", "--tenant", "gala", "--email", &email],
    );
    assert!(found.contains(&payment_id), "{found}");
    assert!(found.contains("accepted by Virtuous"), "{found}");
    let record = cli_json(
        &app,
        &[
            "records",
            "show",
            "--tenant",
            "gala",
            "gift",
            "stripe",
            &payment_id,
        ],
    );
    assert_eq!(record["source_id"], payment_id.as_str());

    let ids: Vec<String> = paused_dead_letters(&app, "gala", 2, "cli", "amount%20invalid")
        .await
        .iter()
        .map(u64::to_string)
        .collect();

    let listed = cli_ok(&app, &["dlq", "list", "--tenant", "gala"]);
    assert!(listed.contains("amount invalid"), "{listed}");
    let alerts = cli_ok(&app, &["alerts", "list"]);
    assert!(
        alerts.lines().any(|line| line.starts_with("gala ")),
        "{alerts}"
    );
    let open: Value = cli_json(&app, &["alerts", "list", "--tenant", "gala"]);
    let code = open["alerts"][0]["code"].as_str().unwrap().to_string();
    let acked = cli_ok(&app, &["alerts", "ack", "--tenant", "gala", &code]);
    assert!(acked.contains("acknowledged"), "{acked}");
    let listed = cli_ok(&app, &["alerts", "list", "--tenant", "gala"]);
    let line = listed.lines().find(|line| line.starts_with(&code)).unwrap();
    assert!(line.contains("acknowledged"), "{listed}");
    let letter = cli_json(&app, &["dlq", "show", "--tenant", "gala", &ids[0]]);
    let shown = cli_ok(&app, &["dlq", "show", "--tenant", "gala", &ids[0]]);
    assert!(shown.contains("body:\n{\n"), "formatted JSON: {shown}");

    let mut body = letter["body"].clone();
    body["transactionId"] = json!("changed");
    let edited = app.dir.path().join("edited.json");
    std::fs::write(&edited, body.to_string()).unwrap();
    let edited_path = edited.to_str().unwrap();
    let (ok, _, stderr) = cli(
        &app,
        &[
            "dlq",
            "replay",
            "--tenant",
            "gala",
            &ids[0],
            "--body",
            edited_path,
        ],
    );
    assert!(!ok);
    assert!(stderr.contains("idempotency_fields_changed"), "{stderr}");
    let mut body = letter["body"].clone();
    body["notes"] = json!("fixed by the operator");
    std::fs::write(&edited, body.to_string()).unwrap();
    let replayed = cli_ok(
        &app,
        &[
            "dlq",
            "replay",
            "--tenant",
            "gala",
            &ids[0],
            "--body",
            edited_path,
        ],
    );
    assert!(replayed.contains("replayed edited"), "{replayed}");
    assert!(cli_ok(&app, &["dlq", "discard", "--tenant", "gala", &ids[1]]).contains("discarded"));
    let page = cli_json(&app, &["dlq", "list", "--tenant", "gala"]);
    assert_eq!(page["dead_letters"], json!([]), "{page}");
}

#[actix_rt::test]
async fn a_trigger_for_a_tenant_that_ignores_test_events_says_how_to_fix_it() {
    // Goal: without accept_test_events, the command fails with the setting's name.
    let app = TestApp::spawn(SpawnOptions::default()).await;
    let mut body = tenant_body("strict");
    body["sources"]["stripe"]["accept_test_events"] = json!(false);
    app.create_tenant(&body).await;
    app.wait_ready().await;
    let (ok, _, stderr) = cli(&app, &["trigger", "stripe", "--tenant", "strict"]);
    assert!(!ok);
    assert!(stderr.contains("accept_test_events"), "{stderr}");
}

#[actix_rt::test]
async fn the_pattern_commands_reach_their_routes() {
    // Goal: `destinations list|pause|resume|poll`, `pollers list|run` and `conflicts list`
    // speak to the tenant's routes: a destination is listed, paused and resumed; an unknown
    // poller is refused with the API's message naming what is configured.
    let app = TestApp::spawn(SpawnOptions::default()).await;
    let files = tempfile::tempdir().unwrap();
    let mut body = tenant_body("pat");
    body["pull"] = json!({"events": ["gift"], "poll_interval_s": 0, "destinations": {
        "files": {"kind": "ndjson", "dir": files.path().to_str().unwrap(),
                  "rotate_bytes": 1024, "rotate_s": 1}}});
    app.create_tenant(&body).await;
    app.wait_ready().await;

    let listed = cli_ok(&app, &["destinations", "list", "--tenant", "pat"]);
    let row = listed
        .lines()
        .find(|line| line.starts_with("files"))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(row.contains("ndjson"), "{listed}");
    let paused = cli_json(&app, &["destinations", "pause", "--tenant", "pat", "files"]);
    assert_eq!(paused["state"], "paused", "{paused}");
    let resumed = cli_ok(
        &app,
        &["destinations", "resume", "--tenant", "pat", "files"],
    );
    assert!(resumed.contains("state running"), "{resumed}");
    assert!(cli_ok(&app, &["destinations", "poll", "--tenant", "pat"]).contains("started"));

    assert_eq!(
        cli_ok(&app, &["pollers", "list", "--tenant", "pat"]),
        "no polled sources\n"
    );
    let (ok, _, stderr) = cli(&app, &["pollers", "run", "--tenant", "pat", "feed"]);
    assert!(!ok);
    assert!(stderr.contains("no poller `feed`"), "{stderr}");
    let conflicts = cli_json(&app, &["conflicts", "list", "--tenant", "pat"]);
    assert_eq!(conflicts["conflicts"], json!([]), "{conflicts}");
}
