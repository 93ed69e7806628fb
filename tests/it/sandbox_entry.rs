//! The sandbox's entry points: `steward sandbox --listen` as its own process, and the
//! embedded sandbox of `serve`, where a tenant with `base_url = "embedded"` gets an org.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{tenant_body, ChildGuard, SpawnOptions, TestApp};

#[actix_rt::test]
async fn sandbox_command_serves_the_simulator_and_stops_on_sigterm() {
    // Goal: `steward sandbox --listen 127.0.0.1:0` prints its address, answers the control API
    // and the Virtuous API, and exits 0 on SIGTERM.
    let mut child = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_steward"))
            .args(["sandbox", "--listen", "127.0.0.1:0"])
            .env("STEWARD_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut first_line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut first_line)
        .unwrap();
    let base = first_line.trim().rsplit(' ').next().unwrap().to_string();
    assert!(base.starts_with("http://127.0.0.1:"), "{first_line}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let created = client
        .post(format!("{base}/_sandbox/orgs"))
        .json(&json!({"id": "cli-org", "api_key": "cli-key-123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let current = client
        .get(format!("{base}/api/Organization/Current"))
        .bearer_auth("cli-key-123")
        .send()
        .await
        .unwrap();
    assert_eq!(current.status(), 200);
    assert!(current.headers().contains_key("x-ratelimit-remaining"));
    let status = child.terminate();
    assert!(status.success(), "{status}");
}

#[actix_rt::test]
async fn embedded_tenant_gets_an_org_with_its_key_and_follows_rotation() {
    // Goal: creating a tenant with base_url "embedded" creates its org in the embedded sandbox
    // (no network call), a key rotation through PATCH reaches the sandbox, and after a
    // restart the org exists again with the current key.
    let mut app = TestApp::spawn(SpawnOptions::default()).await;
    app.create_tenant(&tenant_body("embedded-one")).await;
    let addr_file = app.data_dir().join("listen-addr");
    let sandbox_base = || {
        let addresses: Value =
            serde_json::from_str(&std::fs::read_to_string(&addr_file).unwrap()).unwrap();
        addresses["sandbox"]
            .as_str()
            .expect("the embedded sandbox address is published")
            .to_string()
    };
    let client = app.client.clone();
    let org_answers = |base: String, key: &'static str| {
        let client = client.clone();
        async move {
            client
                .get(format!("{base}/api/Organization/Current"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let base = sandbox_base();
    assert_eq!(
        org_answers(base.clone(), "vk-secret-embedded-one-apikey").await,
        200
    );
    let stats: Value = client
        .get(format!("{base}/_sandbox/orgs/embedded-one/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        stats["rate_window_calls"], 1,
        "only this test's call was counted: creating a tenant calls nobody"
    );

    let rotation = json!({"virtuous": {"api_key": "vk-rotated-embedded-one"}});
    assert_eq!(
        app.admin(Method::PATCH, "/v1/tenants/embedded-one")
            .json(&rotation)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        org_answers(base.clone(), "vk-rotated-embedded-one").await,
        200
    );
    assert_eq!(
        org_answers(base, "vk-secret-embedded-one-apikey").await,
        401,
        "the old key is revoked"
    );

    app.kill9();
    app.start().await;
    let base = sandbox_base();
    assert_eq!(
        org_answers(base, "vk-rotated-embedded-one").await,
        200,
        "the org is back after a restart"
    );
}
