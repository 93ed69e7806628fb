//! The webhook `sources` over real loopback HTTP: API-made changes fire the event kinds of
//! user changes, unless the list's webhook leaves out `api`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use super::account::subscriber_hash;
use super::smoke_tests::{read_form, sandbox_with_account};
use super::write_tests::{api, member_path, ACCOUNT_CONTROL};
use crate::test_support::{webhook_receiver, ControlClient};

/// Waits until the account has delivered `delivered` webhooks; answers its stats.
async fn delivered(control: &ControlClient, delivered: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, stats) = control.control(Method::GET, "/stats", Value::Null).await;
        if stats["webhooks_delivered"].as_u64() >= Some(delivered) {
            return stats;
        }
        assert!(Instant::now() < deadline, "deliveries stuck: {stats}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_rt::test]
async fn api_changes_fire_the_user_event_kinds_unless_the_webhook_leaves_out_api() {
    // Goal: with the default sources, an API create fires subscribe, a merge-field change
    // profile, an address change upemail, an unsubscribe unsubscribe, a tag change profile;
    // with sources.api false API changes fire nothing (counted webhooks_source_off) while a
    // user change still fires.
    let (hook_url, mut hooks, receiver) = webhook_receiver(read_form);
    let (handle, client) = sandbox_with_account().await;
    let control = ControlClient::new(&handle, ACCOUNT_CONTROL);
    let (status, settings) = control
        .control(
            Method::PUT,
            "/lists/list1/webhook",
            json!({"url": hook_url, "sources": {"user": true}}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        settings["sources"],
        json!({"user": true, "admin": true, "api": true})
    );
    let (status, _) = control
        .control(
            Method::PUT,
            "/lists/list1/webhook",
            json!({"url": hook_url, "sources": {"robots": true}}),
        )
        .await;
    assert_eq!(status, 400, "unknown sources are refused");
    control
        .control(
            Method::PUT,
            "/lists/list1/webhook",
            json!({"url": hook_url}),
        )
        .await;

    let hash = subscriber_hash("dee@example.org");
    let moved = subscriber_hash("dee2@example.org");
    let writes = [
        (
            member_path(&hash),
            json!({"email_address": "dee@example.org", "status_if_new": "subscribed"}),
        ),
        (
            member_path(&hash),
            json!({"email_address": "dee@example.org", "merge_fields": {"FNAME": "Dee"}}),
        ),
        (
            member_path(&hash),
            json!({"email_address": "dee2@example.org"}),
        ),
        (
            member_path(&moved),
            json!({"email_address": "dee2@example.org", "status": "unsubscribed"}),
        ),
    ];
    for (path, body) in writes {
        assert_eq!(
            api(&handle, &client, Method::PUT, &path, Some(body))
                .await
                .0,
            200
        );
    }
    let tags = json!({"tags": [{"name": "donor", "status": "active"}]});
    api(
        &handle,
        &client,
        Method::POST,
        &format!("{}/tags", member_path(&moved)),
        Some(tags),
    )
    .await;
    delivered(&control, 5).await;
    let mut kinds: Vec<String> = (0..5)
        .map(|_| hooks.try_recv().unwrap()["type"].clone())
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        ["profile", "profile", "subscribe", "unsubscribe", "upemail"]
    );

    control
        .control(
            Method::PUT,
            "/lists/list1/webhook",
            json!({"url": hook_url, "sources": {"api": false}}),
        )
        .await;
    let put = json!({"email_address": "dee2@example.org", "merge_fields": {"LNAME": "Api"}});
    assert_eq!(
        api(
            &handle,
            &client,
            Method::PUT,
            &member_path(&moved),
            Some(put)
        )
        .await
        .0,
        200
    );
    let (status, _) = control
        .control(
            Method::PATCH,
            &member_path(&moved),
            json!({"merge_fields": {"LNAME": "User"}}),
        )
        .await;
    assert_eq!(status, 200);
    let stats = delivered(&control, 6).await;
    assert_eq!(
        (
            stats["webhooks_fired"].as_u64(),
            stats["webhooks_source_off"].as_u64()
        ),
        (Some(6), Some(1)),
        "{stats}"
    );
    let user_change: HashMap<String, String> = hooks.recv().await.unwrap();
    assert_eq!(
        (
            user_change["type"].as_str(),
            user_change["data[merges][LNAME]"].as_str()
        ),
        ("profile", "User")
    );
    assert!(hooks.try_recv().is_err(), "the API change fired nothing");
    handle.stop().await;
    receiver.stop(true).await;
}
