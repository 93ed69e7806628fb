//! `log_format = "json"`: the log of a real `steward serve` under traffic, one JSON object a
//! line, with the tenant's id on its lines and never a secret or a body.

use std::time::Duration;

use serde_json::Value;

use crate::common::{tenant_body, tenant_secrets, wait_until, SpawnOptions, TestApp};
use crate::ingress_support::{one_time_charge, post_stripe, stripe_event, stripe_secret, BASIL};

#[tokio::test]
async fn json_logs_are_one_object_a_line_with_tenant_ids_and_never_a_secret_or_a_body() {
    // Goal: with log_format json (from the environment) and debug events on, every line the engine writes while a tenant is created and takes a payment through to Virtuous is a JSON object with timestamp, level and message; the tenant's lines carry its id as a field; no line holds a tenant secret or the payment's body.
    let app = TestApp::spawn(SpawnOptions {
        env: vec![
            ("STEWARD_LOG_FORMAT".into(), "json".into()),
            (
                "STEWARD_LOG".into(),
                "steward=debug,steward_actors=debug".into(),
            ),
        ],
        ..SpawnOptions::default()
    })
    .await;
    let tenant = "jsonlog";
    app.create_tenant(&tenant_body(tenant)).await;
    // A marker that appears only in the payment's body.
    let marker = "Body-marker-7f3a9c-never-logged";
    let mut charge = one_time_charge("jsonlog1", 4_200);
    charge["description"] = Value::String(marker.into());
    let event = stripe_event("evt_jsonlog1", "charge.succeeded", BASIL, charge);
    let (status, answer) = post_stripe(&app, tenant, &stripe_secret(tenant), &event).await;
    assert_eq!(status, 202, "{answer}");
    wait_until(Duration::from_secs(30), "the gift submitted", || async {
        let status = app.status(tenant).await;
        (status["counts"]["submitted"].as_u64() >= Some(1)).then_some(())
    })
    .await;

    let log = app.log();
    let lines: Vec<&str> = log.lines().filter(|line| !line.trim().is_empty()).collect();
    assert!(lines.len() > 5, "the engine logged: {log}");
    let mut tenant_lines = 0;
    for line in &lines {
        let object: Value = serde_json::from_str(line)
            .unwrap_or_else(|error| panic!("not a JSON line ({error}): {line}"));
        for field in ["timestamp", "level", "message"] {
            assert!(object.get(field).is_some(), "no `{field}`: {line}");
            // A field named like the line's own keys would repeat a key (log stacks refuse it).
            assert_eq!(
                line.matches(&format!("\"{field}\":")).count(),
                1,
                "`{field}` twice: {line}"
            );
        }
        if object["tenant_id"] == tenant {
            tenant_lines += 1;
        }
        assert!(!line.contains(marker), "a body in the log: {line}");
        for secret in tenant_secrets(tenant) {
            assert!(!line.contains(&secret), "a secret in the log: {line}");
        }
    }
    assert!(tenant_lines > 0, "no line names the tenant: {log}");
}
