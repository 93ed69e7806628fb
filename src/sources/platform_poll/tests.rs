//! The adapter against the sandbox's generic feed over real loopback HTTP
//! (`steward_sandbox::start` in-process), and its pure parts.

use serde_json::{json, Value};
use steward_actors::poll::{PollFetch, PollPage, PollRequest, Poller};
use steward_actors::store::RecordKind;
use steward_sandbox::feeds::FeedSpec;
use steward_sandbox::{SandboxConfig, SandboxHandle};

use super::*;
use crate::sources::platform::parse_event;

const SOURCE: &str = "gala-co";
const KEY: &str = "k-secret-1";

async fn sandbox() -> SandboxHandle {
    steward_sandbox::start(SandboxConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        workers: 1,
    })
    .await
    .unwrap()
}

/// A platform with a webhook mapping for donations and donor updates, polled at `url`.
fn platform(url: &str, poll_extra: Value) -> PlatformSettings {
    let mut poll = json!({"url": url, "auth_header": "X-Api-Key", "auth_value": KEY,
                          "interval_s": 60});
    for (key, value) in poll_extra.as_object().unwrap() {
        poll[key] = value.clone();
    }
    serde_json::from_value(json!({
        "secret": "whsec", "transaction_source": "GalaCo", "amount_unit": "minor",
        "events": {
            "donation.completed": {"kind": "gift", "fields": {
                "amount": "/data/amount", "contact.email": "/data/donor/email",
                "transactionId": "/data/donation_id"}},
            "donor.updated": {"kind": "contact", "fields": {
                "referenceId": "/data/donor/id", "email": "/data/donor/email"}}},
        "poll": poll
    }))
    .unwrap()
}

fn poller(handle: &SandboxHandle, settings: &PlatformSettings) -> PlatformPoller {
    PlatformPoller::new(
        SOURCE,
        settings,
        reqwest::Client::new(),
        Some(&handle.base_url()),
        "UTC",
    )
    .unwrap()
}

fn first(since_ms: u64) -> PollRequest {
    PollRequest {
        since_ms,
        cursor: None,
        ..Default::default()
    }
}

fn page(fetch: PollFetch) -> PollPage {
    match fetch {
        PollFetch::Page(page) => page,
        other => panic!("expected a page, got {other:?}"),
    }
}

/// Reads a whole run the way the machinery does: pages one at a time, the cursor passed back.
async fn read_run(poller: &PlatformPoller, since_ms: u64) -> (Vec<PolledItem>, u32) {
    let mut items = Vec::new();
    let mut calls = 0;
    let mut request = first(since_ms);
    loop {
        let page = page(poller.fetch(request.clone()).await);
        calls += page.calls;
        items.extend(page.items);
        match page.next_cursor {
            Some(cursor) => request.cursor = Some(cursor),
            None => return (items, calls),
        }
        assert!(calls < 1_000, "the run never ends");
    }
}

#[actix_rt::test]
async fn twelve_hundred_items_with_ties_are_read_once_each_and_mapped() {
    // Goal: 1,200 items (600 donations, 600 donor updates), half of them on one tied
    // updated_at, paged 100 at a time with the feed's own parameter name: each item comes
    // back once with one entry — gifts keyed by the mapped transaction id, contacts by the
    // versioned fact id — one call per page; an item before `since_ms` is not read.
    let handle = sandbox().await;
    let mut spec = FeedSpec::new("gala").with_auth("X-Api-Key", KEY);
    spec.updated_since_param = "changed_since".into();
    handle.create_feed(spec).unwrap();
    handle
        .add_feed_items(
            "gala",
            vec![
                json!({"id": "old", "type": "donor.updated", "updated_at": "2025-12-31T23:59:59Z",
                        "data": {"donor": {"id": "p-old"}}}),
            ],
        )
        .unwrap();
    let donations: Vec<Value> = (0..600)
        .map(|n| {
            json!({"id": format!("don-{n}"), "type": "donation.completed",
                   "updated_at": format!("2026-01-01T00:{:02}:00Z", n % 60),
                   "data": {"donation_id": format!("d-{n}"), "amount": 1_000 + n,
                            "donor": {"email": format!("donor{n}@example.org")}}})
        })
        .collect();
    let donors: Vec<Value> = (0..600)
        .map(|n| {
            json!({"id": format!("upd-{n}"), "type": "donor.updated",
                   "data": {"donor": {"id": format!("p-{n}"), "email": format!("p{n}@example.org")}}})
        })
        .collect();
    handle.add_feed_items("gala", donations).unwrap();
    let donor_ids = handle.add_feed_items("gala", donors).unwrap();
    let tied_s = 1_767_229_200; // 2026-01-01T01:00:00Z
    assert_eq!(
        handle.touch_feed_items("gala", "2026-01-01T01:00:00Z", Some(donor_ids)),
        Ok(600)
    );
    let settings = platform(
        "embedded:/feeds/gala/items",
        json!({"updated_since_param": "changed_since"}),
    );
    let poller = poller(&handle, &settings);
    let (items, calls) = read_run(&poller, 1_767_225_600_000).await;
    assert_eq!(items.len(), 1_200);
    assert_eq!(calls, 12, "one call per page of 100");
    let mut ids: Vec<&str> = items.iter().map(|item| item.record_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 1_200, "no item lost or repeated across the tie");
    for item in &items {
        let entries = item.entries.as_ref().unwrap();
        assert_eq!(entries.len(), 1, "{}", item.record_id);
        let fact = &entries[0].fact;
        if let Some(n) = item.record_id.strip_prefix("don-") {
            assert_eq!(fact.kind, RecordKind::Gift);
            assert_eq!(fact.idempotency_key, format!("gala-co:gift:d-{n}"));
            let body: Value = serde_json::from_str(&fact.body_json).unwrap();
            let n: u64 = n.parse().unwrap();
            assert_eq!(
                body["amount"],
                format!("{}.{:02}", (1_000 + n) / 100, (1_000 + n) % 100)
            );
            assert_eq!(body["transactionSource"], "GalaCo");
            assert_eq!(
                body["giftDate"], "2026-01-01",
                "dated by the item's update time"
            );
        } else {
            let n = item.record_id.strip_prefix("upd-").unwrap();
            assert_eq!(item.version_ms, tied_s * 1_000);
            assert_eq!(fact.kind, RecordKind::Contact);
            assert_eq!(fact.source_id, format!("p-{n}"));
            assert_eq!(
                fact.idempotency_key,
                format!("gala-co:contact:p-{n}@{tied_s}")
            );
        }
    }
    handle.stop().await;
}

#[actix_rt::test]
async fn a_record_seen_by_webhook_and_by_poll_has_one_idempotency_key() {
    // Goal: the same donation (and the same version of a donor) delivered as a webhook event
    // and listed by the poll map to equal idempotency keys, so Capture keeps one of each;
    // the contact's webhook key is versioned only because the platform is polled.
    let handle = sandbox().await;
    handle
        .create_feed(FeedSpec::new("gala").with_auth("X-Api-Key", KEY))
        .unwrap();
    let donation = json!({"id": "don-1", "type": "donation.completed",
                          "updated_at": "2026-01-01T10:00:00Z",
                          "data": {"donation_id": "d-1", "amount": 2_500,
                                   "donor": {"email": "ann@example.org"}}});
    let donor = json!({"id": "upd-1", "type": "donor.updated", "updated_at": "2026-01-01T10:00:05Z",
                       "data": {"donor": {"id": "p-1", "email": "ann@example.org"}}});
    handle
        .add_feed_items("gala", vec![donation.clone(), donor.clone()])
        .unwrap();
    let settings = platform("embedded:/feeds/gala/items", json!({}));
    let (items, _) = read_run(&poller(&handle, &settings), 0).await;
    let polled: Vec<String> = items
        .iter()
        .map(|item| {
            item.entries.as_ref().unwrap()[0]
                .fact
                .idempotency_key
                .clone()
        })
        .collect();
    // The webhook deliveries: other event ids, same records.
    let mut webhook_keys = Vec::new();
    for (event_id, mut event) in [("evt_a", donation), ("evt_b", donor)] {
        event["id"] = json!(event_id);
        let parsed = parse_event(&settings, event.to_string().as_bytes()).unwrap();
        let mapped = map_event(SOURCE, &settings, &parsed, &TimeZone::UTC, 1_767_261_600).unwrap();
        let PlatformMapped::Command(command) = mapped else {
            panic!("{mapped:?}")
        };
        webhook_keys.push(command.fact.idempotency_key);
    }
    assert_eq!(polled, webhook_keys);
    assert_eq!(
        polled,
        ["gala-co:gift:d-1", "gala-co:contact:p-1@1767261605"]
    );
    handle.stop().await;
}

#[actix_rt::test]
async fn refused_throttled_failed_and_rejected_answers_are_classified() {
    // Goal: a wrong auth value → AuthRefused (message without the secret); a 429 → Throttled
    // with Retry-After (else 1 s); a 500 and a page of the wrong shape → Failed with one
    // call; an unmapped type or an item without an update time → a rejected item with its
    // reason while the rest of the page maps.
    let handle = sandbox().await;
    handle
        .create_feed(FeedSpec::new("gala").with_auth("X-Api-Key", KEY))
        .unwrap();
    handle
        .add_feed_items(
            "gala",
            vec![
                json!({"id": "a", "type": "auction.closed", "updated_at": "2026-01-01T00:00:00Z"}),
                json!({"id": "b", "type": "donor.updated", "updated_at": "2026-01-01T00:00:01Z",
                       "data": {"donor": {"id": "p-b"}}}),
            ],
        )
        .unwrap();
    let mut wrong = platform("embedded:/feeds/gala/items", json!({}));
    wrong.poll.as_mut().unwrap().auth_value = Some("wrong-secret-value".into());
    match poller(&handle, &wrong).fetch(first(0)).await {
        PollFetch::AuthRefused { message } => {
            assert!(message.contains("401"), "{message}");
            assert!(!message.contains("wrong-secret-value"));
        }
        other => panic!("{other:?}"),
    }
    let settings = platform("embedded:/feeds/gala/items", json!({}));
    let poller = poller(&handle, &settings);
    let script = json!({"steps": [
        {"respond": {"status": 429, "retry_after_s": 3}},
        {"respond": {"status": 429}},
        {"respond": {"status": 500}},
        {"respond": {"status": 200, "body": {"records": []}}}]});
    let answer = reqwest::Client::new()
        .post(format!("{}/_sandbox/feeds/gala/script", handle.base_url()))
        .json(&script)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 204);
    assert!(matches!(
        poller.fetch(first(0)).await,
        PollFetch::Throttled {
            retry_after_ms: 3_000,
            calls: 1
        }
    ));
    assert!(matches!(
        poller.fetch(first(0)).await,
        PollFetch::Throttled {
            retry_after_ms: 1_000,
            calls: 1
        }
    ));
    for expected in ["500", "no array of items at `/items`"] {
        match poller.fetch(first(0)).await {
            PollFetch::Failed { message, calls: 1 } => {
                assert!(message.contains(expected), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }
    let items = page(poller.fetch(first(0)).await).items;
    assert_eq!(items.len(), 2);
    assert_eq!(items[0].record_id, "a");
    assert_eq!(
        items[0].entries.as_ref().unwrap_err(),
        "no mapping for event type `auction.closed`"
    );
    assert!(items[1].entries.is_ok());
    handle.stop().await;
}

#[test]
fn an_item_without_id_or_time_is_rejected_and_pages_of_the_wrong_shape_fail() {
    // Goal: item ids and times are read as documented (ISO 8601, unix seconds or ms); an
    // item missing either is rejected with its reason; a repeated cursor or a cursor of the
    // wrong type fails the page.
    let settings = platform("http://127.0.0.1:9/items", json!({}));
    let poller =
        PlatformPoller::new(SOURCE, &settings, reqwest::Client::new(), None, "UTC").unwrap();
    let inner = &poller.inner;
    let body = json!({"items": [
        {"id": 7, "type": "donor.updated", "updated_at": 1_767_225_600,
         "data": {"donor": {"id": "p7"}}},
        {"id": "ms", "type": "donor.updated", "updated_at": 1_767_225_600_500u64,
         "data": {"donor": {"id": "p8"}}},
        {"type": "donor.updated", "updated_at": "2026-01-01T00:00:00Z"},
        {"id": "t", "type": "donor.updated", "updated_at": "last tuesday"}],
        "next_cursor": "c2"});
    let page = inner
        .page_of(body.to_string().as_bytes(), Some("c1"), 5)
        .unwrap();
    assert_eq!(page.next_cursor.as_deref(), Some("c2"));
    assert_eq!(page.items[0].record_id, "7");
    assert_eq!(page.items[0].version_ms, 1_767_225_600_000);
    assert_eq!(page.items[1].version_ms, 1_767_225_600_500);
    assert_eq!(
        page.items[1].entries.as_ref().unwrap()[0]
            .fact
            .idempotency_key,
        "gala-co:contact:p8@1767225600"
    );
    assert!(page.items[2]
        .entries
        .as_ref()
        .unwrap_err()
        .contains("no item id"));
    assert!(page.items[3]
        .entries
        .as_ref()
        .unwrap_err()
        .contains("no update time"));
    assert!(inner
        .page_of(body.to_string().as_bytes(), Some("c2"), 5)
        .unwrap_err()
        .contains("cursor it was sent"));
    let odd_cursor = json!({"items": [], "next_cursor": {"a": 1}});
    assert!(inner
        .page_of(odd_cursor.to_string().as_bytes(), None, 5)
        .is_err());
    let last = json!({"items": [], "next_cursor": null});
    assert_eq!(
        inner
            .page_of(last.to_string().as_bytes(), None, 5)
            .unwrap()
            .next_cursor,
        None
    );
}

#[test]
fn listing_urls_resolve_embedded_forms_and_carry_since_and_cursor() {
    // Goal: `embedded` is `/feeds/{name}/items` of the embedded sandbox, `embedded:/path`
    // that path; an embedded URL without a sandbox is a build error; the first page asks
    // `{updated_since_param}=<ISO>`, later pages add `{cursor_param}=…`.
    let base = Some("http://127.0.0.1:8080");
    assert_eq!(
        listing_url("gala-co", "embedded", base).unwrap().as_str(),
        "http://127.0.0.1:8080/feeds/gala-co/items"
    );
    assert_eq!(
        listing_url("gala-co", "embedded:/feeds/x/items", base)
            .unwrap()
            .as_str(),
        "http://127.0.0.1:8080/feeds/x/items"
    );
    assert!(listing_url("gala-co", "embedded", None).is_err());
    let settings = platform(
        "https://api.example.org/v1/changes",
        json!({"updated_since_param": "since", "cursor_param": "page_token"}),
    );
    let poller =
        PlatformPoller::new(SOURCE, &settings, reqwest::Client::new(), None, "UTC").unwrap();
    let request = PollRequest {
        since_ms: 1_767_225_600_250,
        cursor: Some("a b&c".into()),
        ..Default::default()
    };
    assert_eq!(
        poller.inner.page_url(&request).as_str(),
        "https://api.example.org/v1/changes?since=2026-01-01T00%3A00%3A00.25Z&page_token=a+b%26c"
    );
    assert_eq!(
        poller.inner.page_url(&first(0)).as_str(),
        "https://api.example.org/v1/changes?since=1970-01-01T00%3A00%3A00Z"
    );
}
