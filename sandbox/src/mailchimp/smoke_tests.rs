//! Smoke tests over real loopback HTTP: members paging, the connection limit, and audience
//! webhooks with a dropped share.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use actix_web::web;
use serde_json::{json, Value};

use super::AccountSpec;
use crate::test_support::{futures_join_all, sandbox, webhook_receiver};
use crate::SandboxHandle;

pub(super) const KEY: &str = "0123456789abcdef-us21";

pub(super) async fn sandbox_with_account() -> (SandboxHandle, reqwest::Client) {
    let handle = sandbox(2).await;
    handle
        .create_mailchimp_account(AccountSpec::new("acme", KEY, &["list1"]))
        .unwrap();
    (handle, reqwest::Client::new())
}

/// A webhook POST's form fields.
pub(super) fn read_form(_: &actix_web::HttpRequest, body: web::Bytes) -> HashMap<String, String> {
    web::Query::<HashMap<String, String>>::from_query(&String::from_utf8_lossy(&body))
        .map(web::Query::into_inner)
        .unwrap_or_default()
}

pub(super) fn control(handle: &SandboxHandle, path: &str) -> String {
    format!(
        "{}/_sandbox/mailchimp/accounts/acme{path}",
        handle.base_url()
    )
}

async fn add_members(handle: &SandboxHandle, client: &reqwest::Client, n: usize) -> Vec<String> {
    let members: Vec<Value> = (0..n)
        .map(|i| {
            json!({"email_address": format!("Member{i}@Example.org"),
                        "merge_fields": {"FNAME": format!("F{i}"), "LNAME": "Smith"}})
        })
        .collect();
    let answer: Value = client
        .post(control(handle, "/lists/list1/members"))
        .json(&json!({ "members": members }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().to_owned())
        .collect()
}

async fn members_page(handle: &SandboxHandle, client: &reqwest::Client, query: &str) -> Value {
    let response = client
        .get(format!(
            "{}/mailchimp/3.0/lists/list1/members?{query}",
            handle.base_url()
        ))
        .basic_auth("anystring", Some(KEY))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[actix_rt::test]
async fn members_are_paged_by_since_last_changed() {
    // Goal: after edits, since_last_changed + count/offset paging returns exactly the edited
    // members, each once, with Mailchimp's member shape; a wrong key gets a 401 problem.
    let (handle, client) = sandbox_with_account().await;
    let ids = add_members(&handle, &client, 25).await;
    assert_eq!(
        ids[3],
        super::account::subscriber_hash("member3@example.org")
    );
    let now: Value = client
        .post(control(&handle, "/clock"))
        .json(&json!({"advance_s": 100}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let since = now["now"].as_str().unwrap().to_owned();
    let edited: HashSet<&String> = ids.iter().step_by(5).collect();
    for id in &edited {
        let response = client
            .patch(control(&handle, &format!("/lists/list1/members/{id}")))
            .json(&json!({"merge_fields": {"LNAME": "Jones"}, "tags": ["donor"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let mut seen = Vec::new();
    for offset in (0..10).step_by(2) {
        let query = format!(
            "since_last_changed={}&count=2&offset={offset}",
            since.replace('+', "%2B")
        );
        let page = members_page(&handle, &client, &query).await;
        assert_eq!(page["total_items"], 5, "{page}");
        for member in page["members"].as_array().unwrap() {
            assert_eq!(member["merge_fields"]["LNAME"], "Jones");
            assert_eq!(member["tags"][0]["name"], "donor");
            assert_eq!(member["last_changed"], since.as_str());
            assert_eq!(member["status"], "subscribed");
            seen.push(member["id"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(seen.len(), 5);
    assert_eq!(seen.iter().collect::<HashSet<_>>(), edited);
    let everyone = members_page(&handle, &client, "count=1000").await;
    assert_eq!(everyone["total_items"], 25);

    let refused = client
        .get(format!(
            "{}/mailchimp/3.0/lists/list1/members",
            handle.base_url()
        ))
        .basic_auth("anystring", Some("wrong-us21"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["title"], "API Key Invalid");
    handle.stop().await;
}

#[actix_rt::test]
async fn the_eleventh_simultaneous_request_is_refused() {
    // Goal: with 13 requests held in flight together, exactly 10 are served and 3 get the
    // 429 problem document; the stats count the refusals.
    let (handle, client) = sandbox_with_account().await;
    let put = client
        .put(control(&handle, "/faults"))
        .json(&json!({"latency_ms": 1500}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let requests = (0..13).map(|_| {
        client
            .get(format!(
                "{}/mailchimp/3.0/lists/list1/members",
                handle.base_url()
            ))
            .basic_auth("anystring", Some(KEY))
            .send()
    });
    let responses = futures_join_all(requests).await;
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    for response in responses {
        let response = response.unwrap();
        let status = response.status().as_u16();
        *statuses.entry(status).or_default() += 1;
        if status == 429 {
            let problem: Value = response.json().await.unwrap();
            assert_eq!(problem["title"], "Too Many Requests");
            assert_eq!(problem["status"], 429);
        }
    }
    assert_eq!(statuses, HashMap::from([(200, 10), (429, 3)]));
    let stats: Value = client
        .get(control(&handle, "/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["rejected_concurrency"], 3, "{stats}");
    assert_eq!(stats["in_flight_max"], 10, "{stats}");
    handle.stop().await;
}

#[actix_rt::test]
async fn webhooks_are_form_encoded_and_a_seeded_share_is_dropped() {
    // Goal: subscribe events reach a loopback receiver form-encoded, data[id] the member's
    // unique_email_id and fired_at its last_changed; with drop_pct 20 the dropped ones are
    // exactly the ones missing.
    let (hook_url, mut hook_receiver, receiver_handle) = webhook_receiver(read_form);

    let (handle, client) = sandbox_with_account().await;
    let put = client
        .put(control(&handle, "/lists/list1/webhook"))
        .json(&json!({"url": hook_url, "drop_pct": 20}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    add_members(&handle, &client, 60).await;

    let stats: Value = client
        .get(control(&handle, "/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let fired = stats["webhooks_fired"].as_u64().unwrap() as usize;
    let dropped_count = stats["webhooks_dropped"].as_u64().unwrap() as usize;
    assert_eq!(fired + dropped_count, 60, "{stats}");
    assert!((4..=24).contains(&dropped_count), "{stats}");

    let members = members_page(&handle, &client, "count=1000").await;
    let last_changed: HashMap<String, String> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|member| {
            (
                member["unique_email_id"].as_str().unwrap().to_owned(),
                member["last_changed"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut received = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while received.len() < fired {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let form = tokio::time::timeout(remaining, hook_receiver.recv())
            .await
            .expect("every fired webhook within 10 s")
            .unwrap();
        assert_eq!(form["type"], "subscribe");
        assert_eq!(form["data[list_id]"], "list1");
        assert!(form["data[merges][FNAME]"].starts_with('F'));
        let id = form["data[id]"].clone();
        let expected = last_changed[&id].replace('T', " ").replace("+00:00", "");
        assert_eq!(form["fired_at"], expected);
        received.insert(id);
    }
    let dropped: Vec<Value> = client
        .get(control(&handle, "/lists/list1/webhook/dropped"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let dropped_ids: HashSet<String> = dropped
        .iter()
        .map(|event| event["id"].as_str().unwrap().to_owned())
        .collect();
    let all: HashSet<String> = last_changed.keys().cloned().collect();
    assert_eq!(all.len(), 60);
    assert_eq!(dropped_ids.len(), dropped_count);
    assert!(received.is_disjoint(&dropped_ids));
    assert_eq!(
        received
            .union(&dropped_ids)
            .cloned()
            .collect::<HashSet<_>>(),
        all
    );
    handle.stop().await;
    receiver_handle.stop(true).await;
}

#[actix_rt::test]
async fn an_email_change_keeps_the_unique_email_id_and_sorting_is_accepted() {
    // Goal: upemail moves the subscriber hash but keeps unique_email_id (the webhook's
    // data[id]); sort_field=last_changed&sort_dir=ASC|DESC orders by (last_changed, id) and
    // any other sort is refused with a 400 problem.
    let (handle, client) = sandbox_with_account().await;
    let ids = add_members(&handle, &client, 3).await;
    let before = members_page(&handle, &client, "count=10").await;
    let unique_of = |page: &Value, hash: &str| -> String {
        page["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|member| member["id"] == hash)
            .map(|member| member["unique_email_id"].as_str().unwrap().to_owned())
            .unwrap()
    };
    let unique = unique_of(&before, &ids[0]);
    client
        .post(control(&handle, "/clock"))
        .json(&json!({"advance_s": 5}))
        .send()
        .await
        .unwrap();
    let changed: Value = client
        .patch(control(
            &handle,
            &format!("/lists/list1/members/{}", ids[0]),
        ))
        .json(&json!({"email_address": "moved@example.org"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        changed["id"],
        super::account::subscriber_hash("moved@example.org")
    );
    assert_eq!(changed["unique_email_id"], unique.as_str());

    let ascending = members_page(
        &handle,
        &client,
        "count=10&sort_field=last_changed&sort_dir=ASC",
    )
    .await;
    let order: Vec<&str> = ascending["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|member| member["unique_email_id"].as_str().unwrap())
        .collect();
    assert_eq!(order.len(), 3);
    assert_eq!(order[2], unique, "the edited member changed last");
    let descending = members_page(
        &handle,
        &client,
        "count=10&sort_field=last_changed&sort_dir=DESC",
    )
    .await;
    assert_eq!(descending["members"][0]["unique_email_id"], unique.as_str());
    for query in ["sort_field=timestamp_opt", "sort_dir=up"] {
        let refused = client
            .get(format!(
                "{}/mailchimp/3.0/lists/list1/members?{query}",
                handle.base_url()
            ))
            .basic_auth("anystring", Some(KEY))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 400, "{query}");
    }
    handle.stop().await;
}
