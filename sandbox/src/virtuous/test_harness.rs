//! The harness of the Virtuous tests over real loopback HTTP: a sandbox with one
//! organization, its API and control API, and a webhook receiver that records every hit.

use std::time::{Duration, Instant};

use actix_web::web::Bytes;
use actix_web::HttpRequest;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;

use super::OrgSpec;
use crate::test_support::{sandbox, webhook_receiver, ControlClient};
use crate::SandboxHandle;

/// One webhook POST: the `?sub=` of its URL and the JSON body.
#[derive(Debug, Clone)]
pub(super) struct Hit {
    pub(super) sub: String,
    pub(super) body: Value,
}

impl Hit {
    pub(super) fn event(&self) -> &str {
        self.body["event"].as_str().unwrap_or("")
    }

    /// The (first) model under `key`, from the single or the bulk form.
    pub(super) fn model(&self, key: &str) -> &Value {
        match self.body.get("models") {
            Some(models) => &models[0][key],
            None => &self.body[key],
        }
    }
}

pub(super) struct Harness {
    handle: SandboxHandle,
    pub(super) control: ControlClient,
    org: String,
    api_key: String,
    hook_url: String,
    hits: UnboundedReceiver<Hit>,
    receiver: actix_web::dev::ServerHandle,
}

impl Harness {
    pub(super) async fn start(spec: Value) -> Harness {
        let (hook_url, hits, receiver) = webhook_receiver(|request: &HttpRequest, body: Bytes| {
            let sub = request
                .query_string()
                .strip_prefix("sub=")
                .unwrap_or("")
                .to_owned();
            Hit {
                sub,
                body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            }
        });
        let handle = sandbox(1).await;
        let spec: OrgSpec = serde_json::from_value(spec).unwrap();
        let api_key = spec.api_key.clone();
        let control = ControlClient::new(&handle, "/_sandbox/orgs");
        let org = spec.id.clone();
        handle.create_org(spec).unwrap();
        Harness {
            control,
            org,
            handle,
            api_key,
            hook_url,
            hits,
            receiver,
        }
    }

    pub(super) async fn call(&self, method: Method, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .control
            .http
            .request(method, format!("{}{path}", self.handle.base_url()))
            .bearer_auth(&self.api_key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Subscribes `?sub={sub}` with these flags; answers the subscription id.
    pub(super) async fn subscribe(&self, sub: &str, flags: &[&str], active: bool) -> u64 {
        let mut body = json!({"payloadUrl": format!("{}?sub={sub}", self.hook_url),
            "secret": "s", "active": active});
        for flag in flags {
            body[*flag] = json!(true);
        }
        let (status, subscription) = self.call(Method::POST, "/api/Webhook", body).await;
        assert_eq!(status, 200, "{subscription}");
        subscription["id"].as_u64().unwrap()
    }

    pub(super) async fn control(&self, method: Method, path: &str, body: Value) -> (u16, Value) {
        let path = format!("/{}{path}", self.org);
        self.control.control(method, &path, body).await
    }

    pub(super) async fn edits(&self, edits: Vec<Value>) -> Vec<Value> {
        let (status, answer) = self
            .control(Method::POST, "/staff-edits", json!({ "edits": edits }))
            .await;
        assert_eq!(status, 200, "{answer}");
        answer["records"].as_array().unwrap().clone()
    }

    pub(super) async fn stats(&self) -> Value {
        self.control(Method::GET, "/stats", Value::Null).await.1
    }

    /// Waits until `webhooks_sent` reaches `sent`, then drains the hits that arrived.
    pub(super) async fn hits_after(&mut self, sent: u64) -> Vec<Hit> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let stats = self.stats().await;
            if stats["webhooks_sent"].as_u64() >= Some(sent) {
                assert_eq!(
                    stats["webhooks_sent"], sent,
                    "more deliveries than expected"
                );
                break;
            }
            assert!(Instant::now() < deadline, "webhooks_sent stuck: {stats}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut hits = Vec::new();
        while let Ok(hit) = self.hits.try_recv() {
            hits.push(hit);
        }
        hits
    }

    /// A gift transaction imported at once: answers (gift id, contact id).
    pub(super) async fn import_gift(&self, transaction_id: &str) -> (u64, u64) {
        let gift = json!({"transactionSource": "Stripe", "transactionId": transaction_id,
            "amount": "12.50", "giftDate": "11/26/2026", "giftType": "Credit",
            "contact": {"email": format!("{transaction_id}@example.org"),
                "firstName": "Ann", "lastName": "Lee"}});
        let (status, _) = self
            .call(Method::POST, "/api/v2/Gift/Transaction", gift)
            .await;
        assert_eq!(status, 200);
        let (status, report) = self.control(Method::POST, "/process", Value::Null).await;
        assert_eq!((status, report["imported"].as_u64()), (200, Some(1)));
        let (_, gift) = self
            .call(
                Method::GET,
                &format!("/api/Gift/Stripe/{transaction_id}"),
                Value::Null,
            )
            .await;
        (
            gift["id"].as_u64().unwrap(),
            gift["contactId"].as_u64().unwrap(),
        )
    }

    pub(super) async fn stop(self) {
        self.handle.stop().await;
        self.receiver.stop(true).await;
    }
}

pub(super) fn events_of(hits: &[Hit], sub: &str) -> Vec<String> {
    let mut events: Vec<String> = hits
        .iter()
        .filter(|hit| hit.sub == sub)
        .map(|hit| hit.event().to_owned())
        .collect();
    events.sort();
    events
}

pub(super) fn sorted(events: &[&str]) -> Vec<String> {
    let mut events: Vec<String> = events.iter().map(|e| (*e).to_owned()).collect();
    events.sort();
    events
}
