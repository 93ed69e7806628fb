//! The member poller against the Mailchimp simulator, in-process over loopback HTTP.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::{json, Value};
use steward_sandbox::mailchimp::{AccountSpec, OverLimitAnswer};
use steward_sandbox::{SandboxConfig, SandboxHandle};

use super::*;
use crate::sources::mailchimp::webhook::{parse_form, WebhookEvent};

const KEY: &str = "0123456789abcdef-us21";
const LIST: &str = "list1";

async fn sandbox(spec: AccountSpec) -> (SandboxHandle, reqwest::Client) {
    let handle = steward_sandbox::start(SandboxConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        workers: 2,
    })
    .await
    .unwrap();
    handle.create_mailchimp_account(spec).unwrap();
    (handle, reqwest::Client::new())
}

fn control(handle: &SandboxHandle, path: &str) -> String {
    format!(
        "{}/_sandbox/mailchimp/accounts/acme{path}",
        handle.base_url()
    )
}

fn poller(handle: &SandboxHandle, api_key: &str) -> MailchimpPoller {
    MailchimpPoller::new(MailchimpPollerConfig {
        http: reqwest::Client::new(),
        base_url: format!("{}/mailchimp", handle.base_url()),
        api_key: api_key.into(),
        list_id: LIST.into(),
        reference_source: "Mailchimp".into(),
    })
}

/// Adds `count` members named `{prefix}{i}` in one second of the simulator's clock.
async fn add_members(handle: &SandboxHandle, client: &reqwest::Client, prefix: &str, count: usize) {
    let members: Vec<Value> = (0..count)
        .map(|i| {
            json!({"email_address": format!("{prefix}{i}@example.org"),
                        "merge_fields": {"FNAME": format!("F{i}"), "LNAME": prefix}})
        })
        .collect();
    let response = client
        .post(control(handle, &format!("/lists/{LIST}/members")))
        .json(&json!({ "members": members }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
}

async fn advance_clock(handle: &SandboxHandle, client: &reqwest::Client, seconds: u64) {
    let response = client
        .post(control(handle, "/clock"))
        .json(&json!({ "advance_s": seconds }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

async fn edit(handle: &SandboxHandle, client: &reqwest::Client, subscriber_hash: &str) {
    let response = client
        .patch(control(
            handle,
            &format!("/lists/{LIST}/members/{subscriber_hash}"),
        ))
        .json(&json!({"merge_fields": {"LNAME": "Edited"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

fn page_of(fetch: PollFetch) -> PollPage {
    match fetch {
        PollFetch::Page(page) => page,
        other => panic!("expected a page, got {other:?}"),
    }
}

/// The body's `lastName` of one polled item.
fn last_name(item: &PolledItem) -> String {
    let entries = item.entries.as_ref().unwrap();
    let body: Value = serde_json::from_str(&entries[0].fact.body_json).unwrap();
    body["lastName"].as_str().unwrap_or_default().to_string()
}

/// Pages a whole run from `since_ms`; the items and the number of pages.
async fn run(poller: &MailchimpPoller, since_ms: u64) -> (Vec<PolledItem>, usize) {
    let mut items = Vec::new();
    let mut cursor = None;
    for pages in 1..=50 {
        let page = page_of(
            poller
                .fetch(PollRequest {
                    since_ms,
                    cursor,
                    ..Default::default()
                })
                .await,
        );
        assert_eq!(page.calls, 1, "one call per page");
        items.extend(page.items);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return (items, pages),
        }
    }
    panic!("the run did not end within 50 pages");
}

fn ids(items: &[PolledItem]) -> Vec<String> {
    items.iter().map(|item| item.record_id.clone()).collect()
}

#[actix_rt::test]
async fn ties_on_last_changed_across_page_boundaries_lose_nothing() {
    // Goal: 2,500 members in three seconds (700, 1,500 — more than a page — and 300) are
    // each polled exactly once; the keyset cursor pages through a tie larger than a page.
    let (handle, client) = sandbox(AccountSpec::new("acme", KEY, &[LIST])).await;
    add_members(&handle, &client, "a", 700).await;
    advance_clock(&handle, &client, 1).await;
    add_members(&handle, &client, "b", 1_500).await;
    advance_clock(&handle, &client, 1).await;
    add_members(&handle, &client, "c", 300).await;
    let (items, pages) = run(&poller(&handle, KEY), 0).await;
    let all = ids(&items);
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(all.len(), 2_500, "each member once");
    assert_eq!(unique.len(), 2_500);
    assert_eq!(pages, 4, "three pages, then the (empty) archived listing");
    assert!(items.iter().all(|item| item.entries.is_ok()));
    let versions: Vec<u64> = items.iter().map(|item| item.version_ms).collect();
    assert!(
        versions.windows(2).all(|pair| pair[0] <= pair[1]),
        "oldest change first"
    );
    handle.stop().await;
}

#[actix_rt::test]
async fn members_edited_during_the_listing_are_not_lost() {
    // Goal: 1,200 members of one second; after the first page one member already read and
    // one not yet read are edited: every member is still polled (none skipped by the shift)
    // and both edits arrive with their new version.
    let (handle, client) = sandbox(AccountSpec::new("acme", KEY, &[LIST])).await;
    add_members(&handle, &client, "m", 1_200).await;
    let everyone: Value = client
        .get(format!(
            "{}/mailchimp/3.0/lists/{LIST}/members?count=1000&offset=1000&sort_field=last_changed&sort_dir=ASC",
            handle.base_url()
        ))
        .basic_auth("anystring", Some(KEY))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let unread_hash = everyone["members"][100]["id"].as_str().unwrap().to_string();
    let unread_id = everyone["members"][100]["unique_email_id"]
        .as_str()
        .unwrap()
        .to_string();
    let poller = poller(&handle, KEY);
    let first = page_of(
        poller
            .fetch(PollRequest {
                since_ms: 0,
                cursor: None,
                ..Default::default()
            })
            .await,
    );
    assert_eq!(first.items.len(), 1_000);
    let read_id = first.items[0].record_id.clone();
    let read_member = find_member(&handle, &client, "unique_email_id", &read_id).await;
    let read_hash = read_member["id"].as_str().unwrap();
    advance_clock(&handle, &client, 1).await;
    edit(&handle, &client, read_hash).await;
    edit(&handle, &client, &unread_hash).await;
    let mut items = first.items;
    let mut cursor = first.next_cursor;
    let mut pages = 1;
    while let Some(next) = cursor {
        pages += 1;
        assert!(pages < 20, "the run ends");
        let page = page_of(
            poller
                .fetch(PollRequest {
                    since_ms: 0,
                    cursor: Some(next),
                    ..Default::default()
                })
                .await,
        );
        items.extend(page.items);
        cursor = page.next_cursor;
    }
    let seen: HashSet<String> = ids(&items).into_iter().collect();
    assert_eq!(seen.len(), 1_200, "no member lost to the shift");
    for id in [&read_id, &unread_id] {
        let edited = items
            .iter()
            .filter(|item| &item.record_id == id)
            .max_by_key(|item| item.version_ms)
            .unwrap();
        assert_eq!(last_name(edited), "Edited", "{id}");
    }
    handle.stop().await;
}

/// The listed member whose `field` is `value`.
async fn find_member(
    handle: &SandboxHandle,
    client: &reqwest::Client,
    field: &str,
    value: &str,
) -> Value {
    let page: Value = client
        .get(format!(
            "{}/mailchimp/3.0/lists/{LIST}/members?count=1000",
            handle.base_url()
        ))
        .basic_auth("anystring", Some(KEY))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    page["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|member| member[field] == value)
        .cloned()
        .expect("the member is listed")
}

/// Holds one slow request in flight so the next one meets the connection limit of 1.
async fn throttled_answer(over_limit: OverLimitAnswer) -> PollFetch {
    let spec = AccountSpec {
        max_connections: 1,
        over_limit,
        ..AccountSpec::new("acme", KEY, &[LIST])
    };
    let (handle, client) = sandbox(spec).await;
    let put = client
        .put(control(&handle, "/faults"))
        .json(&json!({"latency_ms": 1500}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let held = client
        .get(format!("{}/mailchimp/3.0/ping", handle.base_url()))
        .basic_auth("anystring", Some(KEY))
        .send();
    let held = actix_rt::spawn(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats: Value = client
            .get(control(&handle, "/stats"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if stats["in_flight"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the held request never arrived");
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    let fetch = poller(&handle, KEY)
        .fetch(PollRequest {
            since_ms: 0,
            cursor: None,
            ..Default::default()
        })
        .await;
    let _ = held.await;
    handle.stop().await;
    fetch
}

#[actix_rt::test]
async fn the_connection_limit_throttles_as_429_or_a_bare_403() {
    // Goal: past the connection limit, the 429 problem and the bare 403 are both
    // `Throttled` (1 s, one call), never a refused credential.
    for over_limit in [OverLimitAnswer::Problem429, OverLimitAnswer::Bare403] {
        match throttled_answer(over_limit).await {
            PollFetch::Throttled {
                retry_after_ms,
                calls,
            } => {
                assert_eq!(retry_after_ms, THROTTLED_RETRY_AFTER_MS);
                assert_eq!(calls, 1);
            }
            other => panic!("{over_limit:?}: expected Throttled, got {other:?}"),
        }
    }
}

#[actix_rt::test]
async fn a_bad_key_is_refused_and_server_errors_fail() {
    // Goal: 401 `API Key Invalid` → AuthRefused (the key never in the message); a 5xx →
    // Failed with one call.
    let (handle, client) = sandbox(AccountSpec::new("acme", KEY, &[LIST])).await;
    let wrong_key = "ffffffffffffffff-us21";
    let request = PollRequest {
        since_ms: 0,
        cursor: None,
        ..Default::default()
    };
    match poller(&handle, wrong_key).fetch(request.clone()).await {
        PollFetch::AuthRefused { message } => {
            assert!(message.contains("401"), "{message}");
            assert!(!message.contains(wrong_key), "{message}");
        }
        other => panic!("expected AuthRefused, got {other:?}"),
    }
    let put = client
        .put(control(&handle, "/faults"))
        .json(&json!({"error_5xx_rate": 1.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    match poller(&handle, KEY).fetch(request).await {
        PollFetch::Failed { calls, .. } => assert_eq!(calls, 1),
        other => panic!("expected Failed, got {other:?}"),
    }
    handle.stop().await;
}

#[actix_rt::test]
async fn a_webhook_and_a_poll_of_one_edit_share_the_idempotency_key() {
    // Goal: the simulator's webhook for a profile edit and the poll of that member give the
    // same idempotency key (the fact both paths share); an email change keeps the record id.
    let (form_sender, mut forms) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let receiver = HttpServer::new(move || {
        let form_sender = form_sender.clone();
        App::new().route(
            "/hook",
            web::post().to(move |body: web::Bytes| {
                let _ = form_sender.send(body.to_vec());
                async { HttpResponse::Ok().finish() }
            }),
        )
    })
    .workers(1)
    .disable_signals()
    .bind("127.0.0.1:0")
    .unwrap();
    let hook_url = format!("http://{}/hook", receiver.addrs()[0]);
    let receiver = receiver.run();
    let receiver_handle = receiver.handle();
    actix_rt::spawn(receiver);

    let (handle, client) = sandbox(AccountSpec::new("acme", KEY, &[LIST])).await;
    add_members(&handle, &client, "w", 3).await;
    let put = client
        .put(control(&handle, &format!("/lists/{LIST}/webhook")))
        .json(&json!({ "url": hook_url }))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    advance_clock(&handle, &client, 1).await;
    let edited = find_member(&handle, &client, "email_address", "w1@example.org").await;
    edit(&handle, &client, edited["id"].as_str().unwrap()).await;
    let before_move = find_member(&handle, &client, "email_address", "w2@example.org").await;
    advance_clock(&handle, &client, 1).await;
    let moved = client
        .patch(control(
            &handle,
            &format!(
                "/lists/{LIST}/members/{}",
                before_move["id"].as_str().unwrap()
            ),
        ))
        .json(&json!({"email_address": "w2-new@example.org"}))
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status(), 200);

    let mut webhook_keys: HashMap<String, String> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while webhook_keys.len() < 2 {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let form = tokio::time::timeout(remaining, forms.recv())
            .await
            .expect("both webhooks within 10 s")
            .unwrap();
        match parse_form(&form).unwrap() {
            WebhookEvent::Member {
                event_type,
                version,
            } => {
                webhook_keys.insert(event_type, version.idempotency_key());
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let (items, _) = run(&poller(&handle, KEY), 0).await;
    let poll_keys: HashSet<String> = items
        .iter()
        .map(|item| {
            item.entries.as_ref().unwrap()[0]
                .fact
                .idempotency_key
                .clone()
        })
        .collect();
    assert_eq!(items.len(), 3, "the moved member is still one record");
    assert!(ids(&items).contains(&before_move["unique_email_id"].as_str().unwrap().to_string()));
    for (event_type, key) in &webhook_keys {
        assert!(
            poll_keys.contains(key),
            "{event_type}: {key} not in {poll_keys:?}"
        );
    }
    handle.stop().await;
    receiver_handle.stop(true).await;
}

#[actix_rt::test]
async fn archived_members_are_read_by_a_second_listing_as_opt_outs() {
    // Goal: Mailchimp leaves archived members out of the default listing; each run reads
    // them in a second listing, so an archive whose webhook was lost still becomes an
    // opt-out ("Email Status": deleted).
    let (handle, client) = sandbox(AccountSpec::new("acme", KEY, &[LIST])).await;
    let added: Value = client
        .post(control(&handle, &format!("/lists/{LIST}/members")))
        .json(&json!({"members": [{"email_address": "a0@example.org"},
                                  {"email_address": "a1@example.org"},
                                  {"email_address": "a2@example.org"}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let hash = added["ids"][1].as_str().unwrap().to_string();
    let response = client
        .post(control(
            &handle,
            &format!("/lists/{LIST}/members/{hash}/archive"),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (items, pages) = run(&poller(&handle, KEY), 0).await;
    assert_eq!(pages, 2, "the default listing, then the archived one");
    assert_eq!(items.len(), 3, "{:?}", ids(&items));
    let archived: Vec<&PolledItem> = items
        .iter()
        .filter(|item| {
            let body: Value =
                serde_json::from_str(&item.entries.as_ref().unwrap()[0].fact.body_json).unwrap();
            body["customFields"]["Email Status"] == "deleted"
        })
        .collect();
    assert_eq!(archived.len(), 1, "the archived member is an opt-out");
    assert_eq!(
        archived[0].record_id,
        items.last().unwrap().record_id,
        "read last"
    );
}
