//! Smoke tests over real loopback HTTP: tokens, paging, status=all, both limits.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::test_support::{futures_join_all, sandbox, ControlClient};
use crate::SandboxHandle;

/// The Constant Contact control API and the helpers below.
struct Client(ControlClient);

impl std::ops::Deref for Client {
    type Target = ControlClient;

    fn deref(&self) -> &ControlClient {
        &self.0
    }
}

impl Client {
    fn new(handle: &SandboxHandle) -> Client {
        Client(ControlClient::new(handle, "/_sandbox/constant-contact"))
    }

    async fn refresh(&self, client_id: &str, refresh_token: &str) -> (u16, Value) {
        let response = self
            .http
            .post(format!(
                "{}/constant-contact/oauth2/default/v1/token",
                self.base
            ))
            .basic_auth(client_id, Some("secret"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(format!(
                "grant_type=refresh_token&refresh_token={refresh_token}"
            ))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    /// `path_and_query` after `/constant-contact` (an `_links.next.href` as it is).
    async fn get(&self, access_token: &str, path_and_query: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}/constant-contact{path_and_query}", self.base))
            .bearer_auth(access_token)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    async fn account(&self, id: &str, extra: Value) -> String {
        let mut spec = json!({"id": id, "client_id": format!("client-{id}"),
            "client_secret": "secret", "refresh_token": format!("rt-{id}")});
        for (key, value) in extra.as_object().unwrap() {
            spec[key] = value.clone();
        }
        let (status, _) = self.control(reqwest::Method::POST, "/accounts", spec).await;
        assert_eq!(status, 201);
        let (status, token) = self
            .refresh(&format!("client-{id}"), &format!("rt-{id}"))
            .await;
        assert_eq!(status, 200, "{token}");
        token["access_token"].as_str().unwrap().to_owned()
    }
}

#[actix_rt::test]
async fn refresh_tokens_rotate_or_live_long_and_access_tokens_expire() {
    // Goal: a rotating refresh token is single use, a long-lived one is answered back and
    // keeps working, a revoked one is refused with invalid_grant, and an access token stops
    // working after its ttl.
    let handle = sandbox(1).await;
    let client = Client::new(&handle);
    let (status, _) = client
        .control(
            reqwest::Method::POST,
            "/accounts",
            json!({"id": "rot", "client_id": "client-rot", "client_secret": "secret",
                   "refresh_token": "rt-0", "refresh_token_kind": "rotating",
                   "access_token_ttl_ms": 400}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, first) = client.refresh("client-rot", "rt-0").await;
    assert_eq!(status, 200);
    assert_eq!(first["token_type"], "Bearer");
    assert_eq!(first["expires_in"], 1);
    let rotated = first["refresh_token"].as_str().unwrap();
    assert_ne!(rotated, "rt-0");
    let (status, refused) = client.refresh("client-rot", "rt-0").await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (status, _) = client.refresh("client-rot", rotated).await;
    assert_eq!(status, 200);

    let access_token = first["access_token"].as_str().unwrap();
    let (status, _) = client.get(access_token, "/v3/contacts").await;
    assert_eq!(status, 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = client.get(access_token, "/v3/contacts").await;
        if status == 401 {
            assert_eq!(body[0]["error_key"], "unauthorized");
            break;
        }
        assert!(Instant::now() < deadline, "the access token never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let _ = client
        .account("long", json!({"refresh_token_kind": "long_lived"}))
        .await;
    for _ in 0..2 {
        let (status, again) = client.refresh("client-long", "rt-long").await;
        assert_eq!(
            (status, again["refresh_token"].as_str()),
            (200, Some("rt-long"))
        );
    }
    let (status, _) = client
        .control(reqwest::Method::POST, "/accounts/long/revoke", json!({}))
        .await;
    assert_eq!(status, 204);
    let (status, refused) = client.refresh("client-long", "rt-long").await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    handle.stop().await;
}

#[actix_rt::test]
async fn paging_through_ties_loses_nothing_and_status_all_shows_deleted() {
    // Goal: 30 contacts with one updated_at, read 7 a page through `_links.next.href`, come
    // back once each; status=all adds the deleted one with deleted_at, the default omits it.
    let handle = sandbox(1).await;
    let client = Client::new(&handle);
    let token = client
        .account("pages", json!({"per_second_limit": 1000}))
        .await;
    let (status, created) = client
        .control(
            reqwest::Method::POST,
            "/accounts/pages/contacts",
            json!({"generate": {"count": 30, "updated_at": "2026-11-26T10:00:00Z",
                                "list_memberships": ["list-a"]}}),
        )
        .await;
    assert_eq!(status, 201);
    let ids: Vec<String> = serde_json::from_value(created["contact_ids"].clone()).unwrap();
    let (status, _) = client
        .control(
            reqwest::Method::DELETE,
            &format!("/accounts/pages/contacts/{}", ids[3]),
            json!({"updated_at": "2026-11-26T10:00:00Z"}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = client
        .control(
            reqwest::Method::POST,
            &format!("/accounts/pages/contacts/{}/unsubscribe", ids[4]),
            json!({"updated_at": "2026-11-26T10:00:00Z"}),
        )
        .await;
    assert_eq!(status, 200);

    let read_all = |query: &'static str| {
        let client = &client;
        let token = &token;
        async move {
            let mut seen: Vec<Value> = Vec::new();
            let mut next = Some(format!("/v3/contacts?{query}"));
            while let Some(path) = next {
                let (status, page) = client.get(token, &path).await;
                assert_eq!(status, 200, "{page}");
                let contacts = page["contacts"].as_array().unwrap();
                assert!(contacts.len() <= 7);
                seen.extend(contacts.iter().cloned());
                next = page["_links"]["next"]["href"].as_str().map(str::to_owned);
            }
            seen
        }
    };
    let everything =
        read_all("updated_after=2026-11-26T09:59:59Z&status=all&limit=7&include=list_memberships")
            .await;
    let mut seen_ids: Vec<&str> = everything
        .iter()
        .map(|contact| contact["contact_id"].as_str().unwrap())
        .collect();
    seen_ids.sort();
    seen_ids.dedup();
    assert_eq!(
        seen_ids.len(),
        30,
        "each contact once, none lost on the ties"
    );
    assert_eq!(everything.len(), 30);
    let deleted = everything
        .iter()
        .find(|contact| contact["contact_id"] == ids[3].as_str())
        .unwrap();
    assert_eq!(deleted["deleted_at"], "2026-11-26T10:00:00Z");
    let unsubscribed = everything
        .iter()
        .find(|contact| contact["contact_id"] == ids[4].as_str())
        .unwrap();
    assert_eq!(
        unsubscribed["email_address"]["permission_to_send"],
        "unsubscribed"
    );
    assert_eq!(unsubscribed["list_memberships"], json!(["list-a"]));
    assert_eq!(
        read_all("limit=7").await.len(),
        29,
        "the default omits deleted"
    );
    let (status, body) = client.get(&token, "/v3/contacts?limit=501").await;
    assert_eq!(
        (status, body[0]["error_key"].as_str()),
        (400, Some("query.param.invalid"))
    );
    handle.stop().await;
}

#[actix_rt::test]
async fn the_per_second_limit_and_the_daily_quota_answer_429_with_their_keys() {
    // Goal: a burst past 4 in a second gets 429 throttled and the log never shows more than
    // 4 admitted calls in a second; past the daily quota 429 quota_exceeded until the
    // (moved) reset, then calls pass again.
    let handle = sandbox(1).await;
    let client = Client::new(&handle);
    let token = client.account("limits", json!({})).await;
    let burst = (0..8).map(|_| client.get(&token, "/v3/contacts"));
    let answers = futures_join_all(burst).await;
    let throttled: Vec<_> = answers
        .iter()
        .filter(|(status, _)| *status == 429)
        .collect();
    assert!(!throttled.is_empty(), "8 calls at once must exceed 4/s");
    assert!(throttled
        .iter()
        .all(|(_, body)| body[0]["error_key"] == "throttled"));
    let (_, log) = client
        .control(reqwest::Method::GET, "/accounts/limits/requests", json!({}))
        .await;
    let admitted_at: Vec<u64> = log["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| {
            entry["path"].as_str().unwrap().starts_with("/v3/") && entry["status"] != 429
        })
        .map(|entry| entry["at_ms"].as_u64().unwrap())
        .collect();
    assert!(admitted_at.len() >= 4);
    for (index, at_ms) in admitted_at.iter().enumerate() {
        let in_second = admitted_at[index..]
            .iter()
            .take_while(|later| **later < at_ms + 1_000)
            .count();
        assert!(
            in_second <= 4,
            "{in_second} admitted calls within one second"
        );
    }

    let (status, settings) = client
        .control(
            reqwest::Method::PATCH,
            "/accounts/limits/settings",
            json!({"per_second_limit": 1000, "daily_quota": 2, "quota_used": 0,
                   "quota_reset_in_ms": 1_500}),
        )
        .await;
    assert_eq!(
        (status, settings["quota_remaining"].as_u64()),
        (200, Some(2))
    );
    for _ in 0..2 {
        assert_eq!(client.get(&token, "/v3/contacts").await.0, 200);
    }
    let (status, body) = client.get(&token, "/v3/contacts").await;
    assert_eq!(
        (status, body[0]["error_key"].as_str()),
        (429, Some("quota_exceeded"))
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = client.get(&token, "/v3/contacts").await;
        if status == 200 {
            break;
        }
        assert_eq!(body[0]["error_key"], "quota_exceeded");
        assert!(Instant::now() < deadline, "the quota never reset");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, stats) = client
        .control(reqwest::Method::GET, "/accounts/limits/stats", json!({}))
        .await;
    assert!(stats["counters"]["quota_exceeded"].as_u64().unwrap() >= 1);
    assert!(stats["counters"]["throttled"].as_u64().unwrap() >= 1);
    handle.stop().await;
}

#[actix_rt::test]
async fn a_scripted_fault_answers_once_then_the_api_answers_again() {
    // Goal: a script step on /v3/contacts answers its status once (throttled body for a bare
    // 429), is logged, and the next call passes.
    let handle = sandbox(1).await;
    let client = Client::new(&handle);
    let token = client.account("faults", json!({})).await;
    let (status, _) = client
        .control(
            reqwest::Method::POST,
            "/accounts/faults/script",
            json!({"steps": [{"match": {"method": "GET", "path": "/v3/contacts"},
                              "respond": {"status": 429}}]}),
        )
        .await;
    assert_eq!(status, 204);
    let (status, body) = client.get(&token, "/v3/contacts").await;
    assert_eq!(
        (status, body[0]["error_key"].as_str()),
        (429, Some("throttled"))
    );
    assert_eq!(client.get(&token, "/v3/contacts").await.0, 200);
    let (_, log) = client
        .control(reqwest::Method::GET, "/accounts/faults/requests", json!({}))
        .await;
    let statuses: Vec<u64> = log["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["status"].as_u64().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [200, 429, 200],
        "token refresh, the fault, the pass"
    );
    handle.stop().await;
}
