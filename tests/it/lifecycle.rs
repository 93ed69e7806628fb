//! Process lifecycle over loopback: kill -9 and restart, supervised children, graceful
//! shutdown, secrets at rest, configuration errors.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use crate::common::{
    found_in_dir, tenant_body, tenant_secrets, wait_until, SpawnOptions, TestApp, ADMIN_TOKEN,
};

#[actix_rt::test]
async fn tenants_survive_kill_9_and_restart() {
    // Goal: after SIGKILL and a restart on the same data dir, every tenant is back and started.
    let mut app = TestApp::spawn(SpawnOptions::default()).await;
    for id in ["north", "south", "east"] {
        app.create_tenant(&tenant_body(id)).await;
    }
    app.admin(Method::POST, "/v1/tenants/south/pause")
        .send()
        .await
        .unwrap();
    app.admin(Method::POST, "/v1/tenants/east/_test/enqueue?count=5")
        .send()
        .await
        .unwrap();
    app.kill9();
    app.start().await;
    let list: Value = app
        .admin(Method::GET, "/v1/tenants")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = list["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["east", "north", "south"]);
    assert_eq!(
        app.status("south").await["state"],
        "paused",
        "pause survives a crash"
    );
    assert_eq!(app.status("north").await["state"], "running");
    let east = app.status("east").await;
    assert_eq!(
        east["lanes"]["live"]["depth"], 5,
        "acknowledged entries survive a crash: {east}"
    );
    assert_eq!(east["counts"]["captured"], 5);
    for actor in ["capture", "queue", "submitter", "inbound", "reconciler"] {
        assert_eq!(east["actors"][actor]["state"], "running", "{actor}: {east}");
    }
}

async fn restarts_of(app: &TestApp, tenant: &str, actor: &str) -> u64 {
    app.status(tenant).await["actors"][actor]["restarts"]
        .as_u64()
        .unwrap()
}

#[actix_rt::test]
async fn killed_children_are_restarted_and_counted() {
    // Goal: a child killed by panic, by error, or stalled (no progress for a heartbeat) is
    // re-created and its restart counted, while its siblings keep running.
    let app = TestApp::spawn(SpawnOptions {
        env: vec![
            ("STEWARD_RUNTIME__HEARTBEAT_MS".into(), "400".into()),
            (
                "STEWARD_RUNTIME__RESTART_BACKOFF_INITIAL_MS".into(),
                "50".into(),
            ),
        ],
        ..SpawnOptions::default()
    })
    .await;
    app.create_tenant(&tenant_body("fragile")).await;
    for (actor, mode) in [
        ("queue", "panic"),
        ("submitter", "error"),
        ("reconciler", "stall"),
    ] {
        let response = app
            .admin(
                Method::POST,
                &format!("/v1/tenants/fragile/_test/kill/{actor}?mode={mode}"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        wait_until(
            Duration::from_secs(10),
            &format!("{actor} restarted after {mode}"),
            || async {
                let status = app.status("fragile").await;
                let restarted = status["actors"][actor]["restarts"].as_u64() == Some(1)
                    && status["actors"][actor]["state"] == "running";
                restarted.then_some(())
            },
        )
        .await;
    }
    assert_eq!(
        restarts_of(&app, "fragile", "capture").await,
        0,
        "siblings are not restarted"
    );
    assert_eq!(restarts_of(&app, "fragile", "inbound").await, 0);
    // The restarted queue still does its work: enqueue goes through capture and is counted.
    let response = app
        .admin(Method::POST, "/v1/tenants/fragile/_test/enqueue?count=2")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(app.status("fragile").await["counts"]["captured"], 2);
    let metrics = app
        .client
        .get(format!("{}/metrics", app.admin_url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("steward_actor_restarts_total"),
        "restarts are exported"
    );
}

#[actix_rt::test]
async fn no_secret_in_plaintext_in_the_data_dir_after_clean_shutdown() {
    // Goal: after SIGTERM (everything flushed) the data dir holds the tenant's name (positive
    // control) but none of its secrets; generated key and token files are mode 0600; the log
    // never prints the admin token.
    let mut app = TestApp::spawn(SpawnOptions {
        admin_token_from_env: false,
        ..SpawnOptions::default()
    })
    .await;
    app.create_tenant(&tenant_body("vault")).await;
    let rotation = serde_json::json!({"virtuous": {"api_key": "vk-rotated-secret-vault"}});
    assert_eq!(
        app.admin(Method::PATCH, "/v1/tenants/vault")
            .json(&rotation)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let (status, _) = app.terminate();
    assert!(status.success(), "clean exit: {status}");
    let data_dir = app.data_dir();
    assert!(
        found_in_dir(&data_dir, "Tenant vault").is_some(),
        "positive control: the tenant name is stored"
    );
    let mut secrets = tenant_secrets("vault");
    secrets.push("vk-rotated-secret-vault".into());
    for secret in secrets {
        assert_eq!(
            found_in_dir(&data_dir, &secret),
            None,
            "secret {secret} found in plaintext"
        );
    }
    for file in ["master.key", "admin-token"] {
        let mode = std::fs::metadata(data_dir.join(file))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{file}");
    }
    let token = std::fs::read_to_string(data_dir.join("admin-token")).unwrap();
    let log = app.log();
    assert!(
        !log.contains(token.trim()),
        "the log must name the token file, never the token"
    );
    assert!(
        log.contains("admin-token"),
        "the log names the generated token file"
    );
    for secret in tenant_secrets("vault") {
        assert!(!log.contains(&secret), "secret {secret} in the log");
    }
}

#[actix_rt::test]
async fn sigterm_exits_zero_within_the_deadline_and_keeps_everything() {
    // Goal: SIGTERM → exit 0 within shutdown_deadline_s; what was acknowledged is there after restart.
    let mut app = TestApp::spawn(SpawnOptions::default()).await;
    app.create_tenant(&tenant_body("graceful")).await;
    app.admin(Method::POST, "/v1/tenants/graceful/_test/enqueue?count=7")
        .send()
        .await
        .unwrap();
    let (status, took) = app.terminate();
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        app.log()
    );
    assert!(took < Duration::from_secs(5), "took {took:?}, deadline 5 s");
    assert!(
        app.log().contains("store flushed"),
        "the log reports the final flush"
    );
    app.start().await;
    assert_eq!(app.status("graceful").await["lanes"]["live"]["depth"], 7);
}

#[actix_rt::test]
async fn config_errors_name_the_key_and_the_file() {
    // Goal: an unknown key or invalid value stops start-up with a message naming key and file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[runtime]\nheartbeat = 5\n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_steward"))
        .args(["serve", "--config"])
        .arg(&path)
        .env("STEWARD_DATA_DIR", dir.path().join("data"))
        .env("STEWARD_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("heartbeat") && stderr.contains("bad.toml"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("data").exists(),
        "a rejected configuration changes nothing"
    );

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_steward"))
        .args(["serve"])
        .env("STEWARD_DATA_DIR", dir.path().join("data"))
        .env("STEWARD_BUDGET__RESERVE_PCT", "250")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("budget.reserve_pct") && stderr.contains("STEWARD_BUDGET__RESERVE_PCT"),
        "{stderr}"
    );
}

#[actix_rt::test]
async fn example_config_serves_on_a_fresh_machine() {
    // Goal: `serve --config config.example.toml` with nothing else set starts, generates its
    // key and token files, and answers /readyz (the README's run command).
    let config =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml"))
            .unwrap();
    let app = TestApp::spawn(SpawnOptions {
        admin_token_from_env: false,
        config_file: Some(config),
        ..SpawnOptions::default()
    })
    .await;
    assert!(app.data_dir().join("master.key").exists());
    assert!(
        app.log().contains("EMBEDDED SANDBOX"),
        "the log says loudly that the target is a simulator"
    );
    app.create_tenant(&tenant_body("fresh")).await;
    assert_eq!(app.status("fresh").await["state"], "running");
}
