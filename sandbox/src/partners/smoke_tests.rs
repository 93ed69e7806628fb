//! Smoke tests over real loopback HTTP: the upsert and its versions, listing by
//! updated-since through ties, faults, stats and the log (webhooks: `webhook_tests`).

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use super::PartnerSpec;
use crate::test_support::{read_all_pages, sandbox, ControlClient};
use crate::SandboxHandle;

pub(super) const TOKEN: &str = "tok-1";

/// The partner control API and the partner's contacts API.
pub(super) struct Client {
    control: ControlClient,
    partner: String,
}

impl Client {
    pub(super) fn new(handle: &SandboxHandle, partner: &str) -> Client {
        Client {
            control: ControlClient::new(handle, "/_sandbox/partners"),
            partner: partner.to_owned(),
        }
    }

    /// `/partners/{partner}{path}` with `token` (none: no header): status and JSON answer.
    pub(super) async fn api_as(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let url = format!("{}/partners/{}{path}", self.control.base, self.partner);
        let mut request = self.control.http.request(method, url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub(super) async fn api(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.api_as(Some(TOKEN), method, path, body).await
    }

    /// `/_sandbox/partners/{partner}{path}`.
    pub(super) async fn control(&self, method: Method, path: &str, body: Value) -> (u16, Value) {
        let path = format!("/{}{path}", self.partner);
        self.control.control(method, &path, body).await
    }

    pub(super) async fn stats(&self) -> Value {
        self.control(Method::GET, "/stats", Value::Null).await.1
    }

    /// Waits until `webhooks[field]` reaches `count` (a failed delivery is given up after
    /// about 15 s of retries); answers the stats.
    pub(super) async fn webhooks_reach(&self, field: &str, count: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let stats = self.stats().await;
            if stats["webhooks"][field].as_u64() >= Some(count) {
                return stats;
            }
            assert!(Instant::now() < deadline, "{field} stuck: {stats}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every contact id of a listing, following `next_cursor`.
    pub(super) async fn read_all(&self, first_query: &str) -> Vec<String> {
        read_all_pages(first_query, |query| async move {
            self.api(Method::GET, &format!("/contacts?{query}"), None)
                .await
        })
        .await
    }
}

#[actix_rt::test]
async fn the_api_upserts_by_id_and_lists_by_updated_since_through_ties() {
    // Goal: creating a partner again with its token is a no-op, another token a 409; a wrong
    // or missing token is a 401; PUT creates (201) then updates (200) merging keys, a PUT
    // that changes nothing keeps the version, null clears, unknown keys are 400; the listing
    // returns every contact once in (updated_at, id) order and updated_since keeps ≥; the
    // normalize switch lower-cases emails; the stats count it all.
    let handle = sandbox(1).await;
    let client = Client::new(&handle, "shop");
    let spec = json!({"id": "shop", "api_token": TOKEN});
    for (body, expected) in [
        (spec.clone(), 201),
        (spec, 201),
        (json!({"id": "shop", "api_token": "other"}), 409),
        (
            json!({"id": "x", "api_token": "t", "webhook_url": "ftp://h"}),
            400,
        ),
    ] {
        let (status, answer) = client.control.control(Method::POST, "", body).await;
        assert_eq!(status, expected, "{answer}");
    }
    for token in [None, Some("wrong")] {
        let (status, body) = client.api_as(token, Method::GET, "/contacts", None).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("unauthorized"))
        );
    }

    let ann = json!({"email": "ann@example.org", "first_name": "Ann", "tags": ["donor"], "subscribed": true});
    let (status, created) = client
        .api(Method::PUT, "/contacts/ann", Some(ann.clone()))
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        (created["version"].as_u64(), created["updated_by"].as_str()),
        (Some(1), Some("api"))
    );
    assert_eq!(created["last_name"], Value::Null);
    assert_eq!(
        created["updated_at"].as_str().unwrap().len(),
        "2026-01-01T00:00:00.000Z".len()
    );
    let (status, same) = client.api(Method::PUT, "/contacts/ann", Some(ann)).await;
    assert_eq!(
        (status, &same),
        (200, &created),
        "an unchanged write changes nothing"
    );
    let (_, updated) = client
        .api(
            Method::PUT,
            "/contacts/ann",
            Some(json!({"id": "ann", "last_name": "Lee", "tags": null})),
        )
        .await;
    assert_eq!(
        (updated["version"].as_u64(), updated["first_name"].as_str()),
        (Some(2), Some("Ann"))
    );
    assert_eq!(
        (updated["last_name"].as_str(), &updated["tags"]),
        (Some("Lee"), &json!([]))
    );
    assert!(updated["updated_at"].as_str() > created["updated_at"].as_str());
    assert_eq!(
        client.api(Method::GET, "/contacts/ann", None).await.1,
        updated
    );
    let (status, body) = client.api(Method::GET, "/contacts/nope", None).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    for bad in [
        json!({"phone": "1"}),
        json!({"id": "bob"}),
        json!({"subscribed": "yes"}),
    ] {
        let (status, body) = client.api(Method::PUT, "/contacts/ann", Some(bad)).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_body")),
            "{body}"
        );
    }

    let seeded: Vec<Value> = (0..250)
        .map(|n| json!({"email": format!("p{n}@example.org")}))
        .collect();
    let ids = handle.put_partner_contacts("shop", seeded, true).unwrap();
    assert_eq!((ids.len(), ids[0].as_str()), (250, "c-1"));
    let all = client.read_all("limit=40").await;
    let mut expected: Vec<(String, String)> = handle
        .partner_contacts("shop")
        .unwrap()
        .iter()
        .map(|contact| {
            (
                contact["updated_at"].as_str().unwrap().to_owned(),
                contact["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    expected.sort();
    assert_eq!(
        all,
        expected
            .iter()
            .map(|(_, id)| id.clone())
            .collect::<Vec<_>>()
    );
    assert_eq!(all.len(), 251, "each contact once");
    let since = updated["updated_at"].as_str().unwrap();
    let later = client.read_all(&format!("updated_since={since}")).await;
    assert_eq!(
        later.first().map(String::as_str),
        Some("ann"),
        "≥ keeps the contact at `since`"
    );
    assert_eq!(
        client
            .api(Method::GET, "/contacts?limit=1001", None)
            .await
            .0,
        400
    );

    let (status, switches) = client
        .control(Method::PUT, "/switches", json!({"normalize_emails": true}))
        .await;
    assert_eq!(
        (status, switches["webhook_drop_pct"].as_f64()),
        (200, Some(0.0))
    );
    let (_, normalized) = client
        .api(
            Method::PUT,
            "/contacts/ann",
            Some(json!({"email": " Ann.Lee@Example.ORG "})),
        )
        .await;
    assert_eq!(normalized["email"], "ann.lee@example.org");

    let stats = client.stats().await;
    assert_eq!(
        stats["counters"],
        json!({"api_writes": 4, "user_writes": 250, "unchanged_writes": 1, "unauthorized": 2})
    );
    assert_eq!(
        stats["requests"]["PUT /contacts/{id}"],
        json!({"200": 3, "201": 1, "400": 3})
    );
    assert_eq!(stats["requests"]["GET /contacts"]["401"], 2);
    let (_, log) = client.control(Method::GET, "/requests", Value::Null).await;
    assert_eq!(log["requests"][2]["method"], "PUT");
    assert_eq!(log["requests"][2]["path"], "/partners/shop/contacts/ann");
    handle.stop().await;
}

#[actix_rt::test]
async fn faults_answer_json_and_apply_then_close_still_writes() {
    // Goal: a scripted 503 on the write route answers {"error": "server_error"} and writes
    // nothing; apply_then close writes, then closes unanswered; DELETE faults clears; both
    // are logged (0 = closed).
    let handle = sandbox(1).await;
    let client = Client::new(&handle, "gala");
    handle
        .create_partner(PartnerSpec::new("gala", TOKEN))
        .unwrap();
    let script = json!({"steps": [{"match": {"path": "/contacts/{id}"}, "respond": {"status": 503}},
                                  {"respond": {"apply_then": "close"}}]});
    assert_eq!(client.control(Method::POST, "/script", script).await.0, 204);
    let (status, body) = client
        .api(Method::PUT, "/contacts/x", Some(json!({"first_name": "X"})))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("server_error"))
    );
    assert!(handle.partner_contacts("gala").unwrap().is_empty());
    let closed = client
        .control
        .http
        .put(format!("{}/partners/gala/contacts/x", client.control.base))
        .bearer_auth(TOKEN)
        .json(&json!({"first_name": "X"}))
        .send()
        .await;
    assert!(closed.is_err(), "closed unanswered");
    assert_eq!(
        handle.partner_contacts("gala").unwrap()[0]["first_name"],
        "X"
    );
    assert_eq!(
        client
            .control(Method::PUT, "/faults", json!({"error_5xx_rate": 1.0}))
            .await
            .0,
        204
    );
    assert_eq!(client.api(Method::GET, "/contacts/x", None).await.0, 503);
    assert_eq!(
        client
            .control(Method::DELETE, "/faults", Value::Null)
            .await
            .0,
        204
    );
    assert_eq!(client.api(Method::GET, "/contacts/x", None).await.0, 200);
    let stats = client.stats().await;
    assert_eq!(
        stats["requests"]["PUT /contacts/{id}"],
        json!({"0": 1, "503": 1})
    );
    assert_eq!(
        stats["requests"]["GET /contacts/{id}"],
        json!({"200": 1, "503": 1})
    );
    handle.stop().await;
}
