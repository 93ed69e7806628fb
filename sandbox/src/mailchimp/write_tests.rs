//! The member writes over real loopback HTTP: the upsert `PUT`, tags, their faults, stats and
//! log (the webhooks they fire: `sources_tests`).

use reqwest::Method;
use serde_json::{json, Value};

use super::account::subscriber_hash;
use super::smoke_tests::{sandbox_with_account, KEY};
use crate::test_support::ControlClient;
use crate::SandboxHandle;

/// A call to `/mailchimp/3.0{path}` with the account's key: its status and JSON answer.
pub(super) async fn api(
    handle: &SandboxHandle,
    client: &reqwest::Client,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = client
        .request(method, format!("{}/mailchimp/3.0{path}", handle.base_url()))
        .basic_auth("anystring", Some(KEY));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The control API of the account `sandbox_with_account` creates.
pub(super) const ACCOUNT_CONTROL: &str = "/_sandbox/mailchimp/accounts/acme";

pub(super) fn member_path(hash: &str) -> String {
    format!("/lists/list1/members/{hash}")
}

#[actix_rt::test]
async fn put_upserts_members_keeps_their_unique_id_and_answers_problems() {
    // Goal: PUT creates a member (status_if_new), then updates it: merge fields merge, a
    // same-valued PUT changes nothing (last_changed kept), a new address moves the hash but
    // keeps unique_email_id; tags are added and removed; bad bodies are 400 problems, unknown
    // lists and members 404; an apply-then-close fault still applies; the stats and the log
    // name the write routes.
    let (handle, client) = sandbox_with_account().await;
    let control = ControlClient::new(&handle, ACCOUNT_CONTROL);
    let hash = subscriber_hash("ann@example.org");
    let created = json!({"email_address": "Ann@Example.org", "status_if_new": "subscribed",
                         "merge_fields": {"FNAME": "Ann"}});
    let (status, member) = api(
        &handle,
        &client,
        Method::PUT,
        &member_path(&hash),
        Some(created.clone()),
    )
    .await;
    assert_eq!(status, 200, "{member}");
    assert_eq!(
        (member["id"].as_str(), member["status"].as_str()),
        (Some(hash.as_str()), Some("subscribed"))
    );
    assert_eq!(member["merge_fields"], json!({"FNAME": "Ann"}));
    let unique = member["unique_email_id"].as_str().unwrap().to_owned();
    let (_, read) = api(&handle, &client, Method::GET, &member_path(&hash), None).await;
    assert_eq!(read, member, "GET shows what PUT answered");

    control
        .control(Method::POST, "/clock", json!({"advance_s": 10}))
        .await;
    let (_, same) = api(
        &handle,
        &client,
        Method::PUT,
        &member_path(&hash),
        Some(created),
    )
    .await;
    assert_eq!(
        same["last_changed"], member["last_changed"],
        "nothing changed"
    );
    let (_, merged) = api(
        &handle,
        &client,
        Method::PUT,
        &member_path(&hash),
        Some(
            json!({"email_address": "Ann@Example.org", "status": "unsubscribed",
                    "merge_fields": {"LNAME": "Lee"}}),
        ),
    )
    .await;
    assert_eq!(
        merged["merge_fields"],
        json!({"FNAME": "Ann", "LNAME": "Lee"})
    );
    assert_eq!(merged["status"], "unsubscribed");
    assert_ne!(merged["last_changed"], member["last_changed"]);

    let moved_hash = subscriber_hash("ann.lee@example.org");
    let (status, moved) = api(
        &handle,
        &client,
        Method::PUT,
        &member_path(&hash),
        Some(json!({"email_address": "ann.lee@example.org"})),
    )
    .await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(
        (moved["id"].as_str(), moved["unique_email_id"].as_str()),
        (Some(moved_hash.as_str()), Some(unique.as_str()))
    );
    assert_eq!(
        api(&handle, &client, Method::GET, &member_path(&hash), None)
            .await
            .0,
        404
    );
    let (status, _) = api(
        &handle,
        &client,
        Method::GET,
        "/lists/list1/members/ann.lee@example.org",
        None,
    )
    .await;
    assert_eq!(status, 200, "an email names a member too");

    let tags_path = format!("{}/tags", member_path(&moved_hash));
    let add = json!({"tags": [{"name": "donor", "status": "active"}, {"name": "vip", "status": "active"}]});
    assert_eq!(
        api(&handle, &client, Method::POST, &tags_path, Some(add))
            .await
            .0,
        204
    );
    let remove = json!({"tags": [{"name": "donor", "status": "inactive"}]});
    assert_eq!(
        api(&handle, &client, Method::POST, &tags_path, Some(remove))
            .await
            .0,
        204
    );
    let (_, tagged) = api(
        &handle,
        &client,
        Method::GET,
        &member_path(&moved_hash),
        None,
    )
    .await;
    assert_eq!(tagged["tags"], json!([{"id": 1, "name": "vip"}]));

    for (path, body, expected) in [
        (
            member_path("x"),
            json!({"status_if_new": "subscribed"}),
            400,
        ),
        (
            member_path("x"),
            json!({"email_address": "b@example.org", "status": "gone", "status_if_new": "subscribed"}),
            400,
        ),
        (
            member_path("x"),
            json!({"email_address": "b@example.org"}),
            400,
        ),
        (
            member_path("x"),
            json!({"email_address": "ann.lee@example.org", "status_if_new": "subscribed"}),
            400,
        ),
        (
            "/lists/nope/members/x".to_owned(),
            json!({"email_address": "b@example.org", "status_if_new": "subscribed"}),
            404,
        ),
    ] {
        let (status, problem) = api(&handle, &client, Method::PUT, &path, Some(body.clone())).await;
        assert_eq!(
            (status, problem["status"].as_u64()),
            (expected, Some(expected as u64)),
            "{body}: {problem}"
        );
    }
    let bad_tag = json!({"tags": [{"name": "x", "status": "on"}]});
    assert_eq!(
        api(&handle, &client, Method::POST, &tags_path, Some(bad_tag))
            .await
            .0,
        400
    );
    let unknown = format!("{}/tags", member_path("0000"));
    assert_eq!(
        api(
            &handle,
            &client,
            Method::POST,
            &unknown,
            Some(json!({"tags": []}))
        )
        .await
        .0,
        404
    );

    let script = json!({"steps": [{"respond": {"apply_then": "close"}}]});
    control.control(Method::POST, "/script", script).await;
    let closed = client
        .put(format!(
            "{}/mailchimp/3.0/lists/list1/members/cy@example.org",
            handle.base_url()
        ))
        .basic_auth("anystring", Some(KEY))
        .json(&json!({"email_address": "cy@example.org", "status_if_new": "pending"}))
        .send()
        .await;
    assert!(closed.is_err(), "closed unanswered");
    let (status, applied) = api(
        &handle,
        &client,
        Method::GET,
        "/lists/list1/members/cy@example.org",
        None,
    )
    .await;
    assert_eq!((status, applied["status"].as_str()), (200, Some("pending")));

    let (_, stats) = control.control(Method::GET, "/stats", Value::Null).await;
    let put = &stats["requests"]["PUT /3.0/lists/{list_id}/members/{subscriber_hash}"];
    assert_eq!(
        (
            put["200"].as_u64(),
            put["400"].as_u64(),
            put["404"].as_u64(),
            put["closed"].as_u64()
        ),
        (Some(4), Some(4), Some(1), Some(1)),
        "{stats}"
    );
    let tags = &stats["requests"]["POST /3.0/lists/{list_id}/members/{subscriber_hash}/tags"];
    assert_eq!(
        (
            tags["204"].as_u64(),
            tags["400"].as_u64(),
            tags["404"].as_u64()
        ),
        (Some(2), Some(1), Some(1))
    );
    let (_, log) = control.control(Method::GET, "/requests", Value::Null).await;
    assert_eq!(log[0]["method"], "PUT");
    assert_eq!(
        log[0]["path"],
        format!("/mailchimp/3.0/lists/list1/members/{hash}")
    );
    handle.stop().await;
}
