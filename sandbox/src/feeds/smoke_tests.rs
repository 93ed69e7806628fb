//! Smoke tests over real loopback HTTP: auth, paging through ties, edits, faults, the log.

use serde_json::{json, Value};

use crate::test_support::{read_all_pages, sandbox, ControlClient};
use crate::SandboxHandle;

/// The feeds control API and the helpers below.
struct Client(ControlClient);

impl std::ops::Deref for Client {
    type Target = ControlClient;

    fn deref(&self) -> &ControlClient {
        &self.0
    }
}

impl Client {
    fn new(handle: &SandboxHandle) -> Client {
        Client(ControlClient::new(handle, "/_sandbox/feeds"))
    }

    /// `GET /feeds/{feed}/items?{query}` with an optional auth header.
    async fn list(&self, feed: &str, query: &str, auth: Option<(&str, &str)>) -> (u16, Value) {
        let mut request = self
            .http
            .get(format!("{}/feeds/{feed}/items?{query}", self.base));
        if let Some((name, value)) = auth {
            request = request.header(name, value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// Every item id of a listing, following `next_cursor`.
    async fn read_all(&self, feed: &str, first_query: &str) -> Vec<String> {
        read_all_pages(first_query, |query| async move {
            self.list(feed, &query, None).await
        })
        .await
    }
}

#[actix_rt::test]
async fn a_feed_pages_through_ties_once_each_and_filters_by_its_updated_since_parameter() {
    // Goal: 250 items with one updated_at (plus earlier and later ones) paged 40 at a time
    // come back once each, in (updated_at, id) order; the feed's own parameter name
    // (`changed_since`) filters with ≥; a bad limit or cursor is a JSON 400.
    let handle = sandbox(1).await;
    let client = Client::new(&handle);
    let (status, _) = client
        .control(
            reqwest::Method::POST,
            "",
            json!({"id": "gala", "page_size": 40, "limit_max": 60,
                   "updated_since_param": "changed_since"}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, added) = client
        .control(
            reqwest::Method::POST,
            "/gala/items",
            json!({"items": [
                {"id": "early", "type": "contact.updated", "updated_at": "2026-01-01T00:00:00Z"},
                {"id": "late", "type": "contact.updated", "updated_at": "2026-01-03T00:00:00Z"}],
                   "generate": {"count": 250, "updated_at": "2026-01-02T00:00:00Z",
                                "template": {"type": "donation.completed",
                                             "data": {"donation_id": "d-{n}", "amount": 1000}}}}),
        )
        .await;
    assert_eq!(status, 201, "{added}");
    assert_eq!(added["ids"].as_array().unwrap().len(), 252);
    let all = client.read_all("gala", "").await;
    assert_eq!(all.len(), 252);
    assert_eq!(all.first().unwrap(), "early");
    assert_eq!(all.last().unwrap(), "late");
    let mut unique = all.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 252, "no item repeated");
    let since = client
        .read_all("gala", "changed_since=2026-01-02T00:00:00Z")
        .await;
    assert_eq!(
        since.len(),
        251,
        "≥ keeps the tied second, drops the earlier item"
    );
    let (status, page) = client.list("gala", "limit=5", None).await;
    assert_eq!(status, 200);
    assert_eq!(page["items"].as_array().unwrap().len(), 5);
    assert_eq!(page["items"][1]["data"]["amount"], 1000);
    assert_eq!(page["items"][1]["updated_at"], "2026-01-02T00:00:00Z");
    for bad in [
        "limit=61",
        "limit=0",
        "cursor=nope",
        "changed_since=yesterday",
    ] {
        let (status, body) = client.list("gala", bad, None).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_query")),
            "{bad}"
        );
    }
    let (status, body) = client.list("nope", "", None).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    handle.stop().await;
}

#[actix_rt::test]
async fn auth_edits_touches_faults_and_the_log_behave_as_documented() {
    // Goal: a wrong or missing auth header is a JSON 401 (counted, logged); an edit merges
    // and bumps updated_at past the previous one; a touch ties items; a scripted 429 carries
    // Retry-After; the in-process calls work like the control API.
    let handle = sandbox(1).await;
    let client = Client::new(&handle);
    handle
        .create_feed(crate::feeds::FeedSpec::new("shop").with_auth("X-Api-Key", "k-1"))
        .unwrap();
    let ids = handle
        .add_feed_items(
            "shop",
            vec![
                json!({"type": "contact.updated", "updated_at": "2026-01-01T00:00:00Z",
                       "person": {"id": "p1", "email": "a@example.org"}}),
                json!({"id": "x", "type": "donation.completed"}),
            ],
        )
        .unwrap();
    assert_eq!(ids[1], "x");
    assert!(handle
        .add_feed_items("shop", vec![json!({"id": "x", "type": "t"})])
        .is_err());
    assert!(
        handle
            .add_feed_items("shop", vec![json!({"id": "y"})])
            .is_err(),
        "type required"
    );
    for auth in [None, Some(("X-Api-Key", "wrong"))] {
        let (status, body) = client.list("shop", "", auth).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("unauthorized"))
        );
    }
    let key = Some(("X-Api-Key", "k-1"));
    let (status, page) = client.list("shop", "", key).await;
    assert_eq!(status, 200);
    assert_eq!(page["next_cursor"], Value::Null);
    assert_eq!(page["items"][0]["person"]["email"], "a@example.org");

    let edited = handle
        .edit_feed_item(
            "shop",
            &ids[0],
            json!({"person": {"email": "b@example.org"}}),
        )
        .unwrap();
    assert_eq!(
        edited["person"],
        json!({"id": "p1", "email": "b@example.org"})
    );
    assert_ne!(edited["updated_at"], "2026-01-01T00:00:00Z");
    let (status, edited) = client
        .control(
            reqwest::Method::PATCH,
            &format!("/shop/items/{}", ids[0]),
            json!({"updated_at": "2026-02-01T00:00:00Z", "person": {"email": null}}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(edited["person"], json!({"id": "p1"}));
    assert_eq!(edited["updated_at"], "2026-02-01T00:00:00Z");
    let (status, _) = client
        .control(reqwest::Method::PATCH, "/shop/items/nope", json!({}))
        .await;
    assert_eq!(status, 404);
    assert_eq!(
        handle.touch_feed_items("shop", "2026-03-01T00:00:00Z", None),
        Ok(2)
    );
    let (_, page) = client.list("shop", "", key).await;
    assert!(page["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|item| item["updated_at"] == "2026-03-01T00:00:00Z"));

    let (status, _) = client
        .control(
            reqwest::Method::POST,
            "/shop/script",
            json!({"steps": [{"match": {"path": "/items"}, "respond": {"status": 429, "retry_after_s": 3}}]}),
        )
        .await;
    assert_eq!(status, 204);
    let response = client
        .http
        .get(format!("{}/feeds/shop/items", client.base))
        .header("X-Api-Key", "k-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    assert_eq!(response.headers()["retry-after"], "3");
    let (status, _) = client.list("shop", "", key).await;
    assert_eq!(status, 200, "a step is consumed");

    let (_, stats) = client
        .control(reqwest::Method::GET, "/shop/stats", json!({}))
        .await;
    assert_eq!(stats["counters"]["unauthorized"], 2);
    assert_eq!(stats["counters"]["api_requests_by_status"]["429"], 1);
    assert_eq!(stats["counters"]["edits"], 2);
    assert_eq!(stats["items"], 2);
    let (_, log) = client
        .control(reqwest::Method::GET, "/shop/requests", json!({}))
        .await;
    let statuses: Vec<u64> = log["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [401, 401, 200, 200, 429, 200]);
    assert_eq!(log["requests"][0]["path"], "/feeds/shop/items");
    handle.stop().await;
}
