//! Process lifecycle over loopback: kill -9 and restart, supervised children, graceful
//! shutdown, secrets at rest, configuration errors.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use crate::common::{
    found_in_dir, tenant_body, tenant_secrets, wait_until, ChildGuard, SpawnOptions, TestApp,
    ADMIN_TOKEN,
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
    let list: Value = app.admin_json(Method::GET, "/v1/tenants").await;
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
    // The restarted queue still does its work: it observes what capture stored.
    let response = app
        .admin(Method::POST, "/v1/tenants/fragile/_test/enqueue?count=2")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(app.status("fragile").await["counts"]["captured"], 2);
    wait_until(
        Duration::from_secs(10),
        "the restarted queue to observe 2 entries",
        || async {
            let status = app.status("fragile").await;
            (status["actors"]["queue"]["observed"]["queued_total"] == 2).then_some(())
        },
    )
    .await;
    let metrics = app.metrics_text().await;
    for actor in ["queue", "submitter", "reconciler"] {
        let line = format!("steward_actor_restarts_total{{actor=\"{actor}\"}} 1");
        assert!(
            metrics.lines().any(|l| l == line),
            "missing `{line}` in:\n{metrics}"
        );
    }
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
    for secret in &secrets {
        assert_eq!(
            found_in_dir(&data_dir, secret),
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
    for secret in &secrets {
        assert!(!log.contains(secret.as_str()), "secret {secret} in the log");
    }
}

#[actix_rt::test]
async fn sigterm_under_load_exits_zero_within_the_deadline_and_keeps_everything_acknowledged() {
    // Goal: SIGTERM while 8 clients are enqueueing → exit 0 within shutdown_deadline_s, and
    // after a restart every entry answered 202 is in the store (in-flight writes finished
    // and were flushed); nothing beyond what was sent appears.
    let mut app = TestApp::spawn(SpawnOptions::default()).await;
    app.create_tenant(&tenant_body("graceful")).await;
    let acknowledged = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut producers = Vec::new();
    for producer in 0..8 {
        let request = app.admin(Method::POST, "/v1/tenants/graceful/_test/enqueue?count=1");
        let (acknowledged, sent) = (acknowledged.clone(), sent.clone());
        producers.push(actix_rt::spawn(async move {
            for index in 0..100_000 {
                let Some(request) = request.try_clone() else {
                    return;
                };
                let url_with_prefix = request.query(&[("prefix", format!("p{producer}-{index}-"))]);
                sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                match url_with_prefix.send().await {
                    Ok(response) if response.status() == 202 => {
                        acknowledged.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    // Refused or cut off by the shutdown: not acknowledged, stop producing.
                    _ => return,
                }
            }
        }));
    }
    // Deliberate delay: let the producers get going before the signal.
    wait_until(Duration::from_secs(10), "some entries to be acknowledged", || {
        let acknowledged = acknowledged.clone();
        async move { (acknowledged.load(std::sync::atomic::Ordering::SeqCst) >= 50).then_some(()) }
    })
    .await;
    let (status, took) = app.terminate();
    for producer in producers {
        producer.await.unwrap();
    }
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
    let acknowledged = acknowledged.load(std::sync::atomic::Ordering::SeqCst);
    let sent = sent.load(std::sync::atomic::Ordering::SeqCst);
    app.start().await;
    // Captured (not lane depth): the submitter may already have sent some of them.
    let stored = app.status("graceful").await["counts"]["captured"]
        .as_u64()
        .unwrap();
    assert!(
        stored >= acknowledged,
        "acknowledged {acknowledged}, stored {stored}: an acknowledged entry was lost"
    );
    assert!(stored <= sent, "stored {stored} > sent {sent}");
}

#[actix_rt::test]
async fn config_errors_name_the_key_and_the_file() {
    // Goal: an unknown key or invalid value stops start-up with a message naming key and file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[runtime]\nheartbeat = 5\n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_steward"))
        .env_clear()
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
        .env_clear()
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
    // Goal: the README's run command — `serve --config config.example.toml` with the file
    // copied into an empty directory and a clean environment (only the listen ports are
    // moved to 0, so the test cannot collide with 8080/8081) — creates its data dir beside
    // the file, key and token files, says loudly that it targets a simulator, answers
    // /readyz, and runs an embedded tenant through the admin listener.
    let dir = tempfile::tempdir().unwrap();
    let example = dir.path().join("config.example.toml");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml"),
        &example,
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("steward.log")).unwrap();
    let mut child = ChildGuard(
        std::process::Command::new(env!("CARGO_BIN_EXE_steward"))
            .env_clear()
            .env("STEWARD_LISTEN", "127.0.0.1:0")
            .env("STEWARD_ADMIN_LISTEN", "127.0.0.1:0")
            .current_dir(dir.path())
            .args(["serve", "--config"])
            .arg(&example)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let data_dir = dir.path().join("steward-data");
    let addr_file = data_dir.join("listen-addr");
    let addresses: Value = wait_until(Duration::from_secs(30), "listen-addr", || {
        let addr_file = addr_file.clone();
        async move { serde_json::from_str(&std::fs::read_to_string(addr_file).ok()?).ok() }
    })
    .await;
    let main = format!("http://{}", addresses["main"].as_str().unwrap());
    let base = format!("http://{}", addresses["admin"].as_str().unwrap());
    let client = reqwest::Client::new();
    wait_until(Duration::from_secs(30), "/readyz 200", || {
        let (client, url) = (client.clone(), format!("{main}/readyz"));
        async move { (client.get(url).send().await.ok()?.status() == 200).then_some(()) }
    })
    .await;
    assert!(data_dir.join("master.key").exists());
    let token = std::fs::read_to_string(data_dir.join("admin-token")).unwrap();
    let log = std::fs::read_to_string(dir.path().join("steward.log")).unwrap();
    assert!(
        log.contains("EMBEDDED SANDBOX"),
        "the log says loudly that the target is a simulator:\n{log}"
    );
    let created = client
        .post(format!("{base}/v1/tenants"))
        .bearer_auth(token.trim())
        .json(&tenant_body("fresh"))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let status: Value = client
        .get(format!("{base}/v1/tenants/fresh"))
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["state"], "running");
    assert!(child.terminate().success());
}

#[actix_rt::test]
async fn refused_credentials_stay_refused_across_a_restart_until_an_operator_resumes() {
    // Goal: after Virtuous answers 401, the tenant is `needs_operator`; after kill -9 and a
    // restart it is still `needs_operator` and sends nothing (no call spent to be refused
    // again); fixing the key and resuming sends the queued gift.
    use crate::external_sandbox::ExternalSandbox;
    let sandbox = ExternalSandbox::start();
    sandbox
        .create_org("refused", "right-key-0123", 360_000, serde_json::json!({}))
        .await;
    let mut app = TestApp::spawn(SpawnOptions::default()).await;
    let mut body = tenant_body("refused");
    body["virtuous"] = serde_json::json!({"base_url": sandbox.url, "api_key": "wrong-key-0123"});
    body["budget"] = serde_json::json!({"hourly_limit": 360_000});
    app.create_tenant(&body).await;
    let enqueue = "/v1/tenants/refused/_test/enqueue?count=1&prefix=held_";
    let queued = app.admin_json(Method::POST, enqueue).await;
    assert_eq!(queued["queued"], 1, "{queued}");
    wait_until(Duration::from_secs(20), "needs_operator", || async {
        (app.status("refused").await["state"] == "needs_operator").then_some(())
    })
    .await;
    // A second enqueue waits for a group-commit flush that started after the 401 was
    // handled: the registry's needs_operator is durable from here on.
    let again = app.admin_json(Method::POST, enqueue).await;
    assert_eq!(again["duplicates"], 1, "{again}");
    // The org cannot count calls with a wrong key: the engine's call log does (every call
    // is logged before it is sent).
    let spent = |status: Value| status["budget"]["spent_last_hour"].as_u64().unwrap_or(0);
    let calls_refused = spent(app.status("refused").await);
    assert!(calls_refused >= 1, "the refused call was logged");

    app.kill9();
    app.start().await;
    assert_eq!(app.status("refused").await["state"], "needs_operator");
    // Deliberate wait: a restarted submitter with stored work calls within milliseconds
    // (it is woken at start); none may come while the tenant needs an operator.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        spent(app.status("refused").await),
        calls_refused,
        "no call after the restart"
    );
    assert_eq!(sandbox.stats("refused").await["transactions_received"], 0);

    let patched = app
        .admin(Method::PATCH, "/v1/tenants/refused")
        .json(&serde_json::json!({"virtuous": {"api_key": "right-key-0123"}}))
        .send()
        .await
        .unwrap();
    assert!(patched.status().is_success(), "{}", patched.status());
    let resumed = app
        .admin(Method::POST, "/v1/tenants/refused/resume")
        .send()
        .await
        .unwrap();
    assert!(resumed.status().is_success(), "{}", resumed.status());
    wait_until(
        Duration::from_secs(20),
        "the gift sent after resume",
        || async { (sandbox.stats("refused").await["transactions_received"] == 1).then_some(()) },
    )
    .await;
    assert_eq!(app.status("refused").await["state"], "running");
}
