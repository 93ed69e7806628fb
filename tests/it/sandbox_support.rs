//! Shared helpers for the sandbox contract tests: a sandbox per test, orgs, a webhook receiver.
//!
//! Everything talks real HTTP on 127.0.0.1; nothing here peeks inside the implementation.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use steward_sandbox::{SandboxConfig, SandboxHandle};

pub use crate::common::{at_timeout, wait_until};

/// A generous deadline for "eventually" assertions (import runs, webhook deliveries).
pub const EVENTUALLY: Duration = Duration::from_secs(10);

/// A running sandbox plus the client used to talk to it.
pub struct Sandbox {
    pub handle: SandboxHandle,
    pub base: String,
    pub client: reqwest::Client,
}

/// Starts a sandbox on a free loopback port with one worker.
pub async fn start_sandbox() -> Sandbox {
    let handle = steward_sandbox::start(SandboxConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        workers: 1,
    })
    .await
    .expect("sandbox starts");
    let base = handle.base_url();
    assert!(base.starts_with("http://127.0.0.1:"), "base_url {base}");
    Sandbox {
        handle,
        base,
        client: client_with_timeout(Duration::from_secs(20)),
    }
}

/// A client with its own pool and a total-request timeout (hang tests need a short one).
pub fn client_with_timeout(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .expect("client")
}

static ORG_COUNTER: AtomicU64 = AtomicU64::new(1);

impl Sandbox {
    /// Creates an org through `POST /_sandbox/orgs` with defaults overridden by `overrides`.
    pub async fn org(&self, overrides: Value) -> Org {
        let n = ORG_COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut body = json!({"id": format!("org-{n}"), "api_key": format!("key-{n}-secret")});
        merge(&mut body, &overrides);
        let resp = self.control("POST", "/_sandbox/orgs", Some(&body)).await;
        assert_eq!(resp.status, 201, "create org {body}: {}", resp.text());
        Org {
            id: body["id"].as_str().unwrap().to_string(),
            key: body["api_key"].as_str().unwrap().to_string(),
            base: self.base.clone(),
            client: self.client.clone(),
        }
    }

    /// Calls a control route (no auth).
    pub async fn control(&self, method: &str, path: &str, body: Option<&Value>) -> Resp {
        let url = format!("{}{}", self.base, path);
        let mut rb = self.client.request(method.parse().unwrap(), url);
        if let Some(b) = body {
            rb = rb.json(b);
        }
        Resp::read(rb.send().await.expect("control request")).await
    }
}

/// Shallow merge of JSON objects (overrides win).
pub fn merge(into: &mut Value, overrides: &Value) {
    if let (Some(dst), Some(src)) = (into.as_object_mut(), overrides.as_object()) {
        for (k, v) in src {
            dst.insert(k.clone(), v.clone());
        }
    }
}

/// One organization of a sandbox, with its api key.
#[derive(Clone)]
pub struct Org {
    pub id: String,
    pub key: String,
    pub base: String,
    pub client: reqwest::Client,
}

impl Org {
    /// An authenticated API request builder (`path` starts with `/api`).
    pub fn api(&self, method: &str, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method.parse().unwrap(), format!("{}{}", self.base, path))
            .bearer_auth(&self.key)
    }

    pub async fn get(&self, path: &str) -> Resp {
        Resp::read(self.api("GET", path).send().await.expect("GET")).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        Resp::read(
            self.api("POST", path)
                .json(body)
                .send()
                .await
                .expect("POST"),
        )
        .await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Resp {
        Resp::read(self.api("PUT", path).json(body).send().await.expect("PUT")).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        Resp::read(self.api("DELETE", path).send().await.expect("DELETE")).await
    }

    /// Calls `/_sandbox/orgs/{id}{suffix}` (no auth).
    pub async fn control(&self, method: &str, suffix: &str, body: Option<&Value>) -> Resp {
        let url = format!("{}/_sandbox/orgs/{}{}", self.base, self.id, suffix);
        let mut rb = self.client.request(method.parse().unwrap(), url);
        if let Some(b) = body {
            rb = rb.json(b);
        }
        Resp::read(rb.send().await.expect("control request")).await
    }

    /// Runs the import step; returns this run's numbers.
    pub async fn process(&self) -> Value {
        let r = self.control("POST", "/process", None).await;
        assert_eq!(r.status, 200, "process: {}", r.text());
        r.json()
    }

    pub async fn stats(&self) -> Value {
        let r = self.control("GET", "/stats", None).await;
        assert_eq!(r.status, 200, "stats: {}", r.text());
        r.json()
    }

    /// All gifts of the org (control route).
    pub async fn all_gifts(&self) -> Vec<Value> {
        let r = self.control("GET", "/gifts", None).await;
        assert_eq!(r.status, 200, "gifts: {}", r.text());
        list_of(&r.json())
    }

    /// All contacts of the org (control route).
    pub async fn all_contacts(&self) -> Vec<Value> {
        let r = self.control("GET", "/contacts", None).await;
        assert_eq!(r.status, 200, "contacts: {}", r.text());
        list_of(&r.json())
    }

    /// Posts one gift transaction and asserts the documented 200-with-no-id answer.
    pub async fn send_gift(&self, tx: &Value) {
        let r = self.post("/api/v2/Gift/Transaction", tx).await;
        assert_eq!(r.status, 200, "gift transaction {tx}: {}", r.text());
    }

    /// Subscribes a webhook for the given event flags (e.g. "giftCreate"); returns its id.
    pub async fn subscribe(&self, url: &str, secret: &str, events: &[&str]) -> i64 {
        let mut body = json!({"payloadUrl": url, "secret": secret, "active": true});
        for e in events {
            body[*e] = json!(true);
        }
        let r = self.post("/api/Webhook", &body).await;
        assert_eq!(r.status, 200, "webhook create: {}", r.text());
        r.json()["id"].as_i64().expect("webhook id")
    }

    /// `X-RateLimit-Remaining` after a cheap authenticated call (spends one call).
    pub async fn remaining_after_probe(&self) -> i64 {
        let r = self.get("/api/Organization/Current").await;
        assert_eq!(r.status, 200, "probe: {}", r.text());
        r.header_i64("x-ratelimit-remaining")
    }
}

/// Accepts either a bare array or a `{"list": [...]}` envelope.
pub fn list_of(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        _ => v["list"].as_array().cloned().unwrap_or_default(),
    }
}

/// A fully read response.
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    /// Reads the whole response.
    pub async fn read(r: reqwest::Response) -> Resp {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.bytes().await.expect("body").to_vec();
        Resp {
            status,
            headers,
            body,
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ascii header").to_string())
    }

    pub fn header_i64(&self, name: &str) -> i64 {
        let v = self
            .header(name)
            .unwrap_or_else(|| panic!("missing header {name} (status {})", self.status));
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("header {name} not an integer: {v:?}"))
    }

    /// The `modelState` keys of a 400 answer.
    pub fn model_state_keys(&self) -> Vec<String> {
        let v = self.json();
        v["modelState"]
            .as_object()
            .unwrap_or_else(|| panic!("no modelState object in {v}"))
            .keys()
            .cloned()
            .collect()
    }
}

/// Asserts a documented 400: `"The request is invalid."` and a `modelState` holding `key`.
pub fn assert_invalid(r: &Resp, key: &str) {
    assert_eq!(
        r.status,
        400,
        "expected 400 naming {key}, got: {}",
        r.text()
    );
    let v = r.json();
    assert_eq!(v["message"], "The request is invalid.", "body {v}");
    let keys = r.model_state_keys();
    assert!(
        keys.iter().any(|k| k == key),
        "modelState keys {keys:?} lack {key}"
    );
    let msgs = &v["modelState"][key];
    assert!(
        msgs.as_array()
            .is_some_and(|a| !a.is_empty() && a.iter().all(Value::is_string)),
        "modelState[{key}] must be a non-empty list of strings: {msgs}"
    );
}

/// Seconds since the Unix epoch, fractional.
pub fn now_unix_f64() -> f64 {
    steward_actors::ports::now_ms() as f64 / 1_000.0
}

/// A valid single gift transaction whose contact is new (unique email and reference).
pub fn gift_tx(source: &str, id: &str) -> Value {
    json!({
        "transactionSource": source,
        "transactionId": id,
        "amount": "25.00",
        "currencyCode": "USD",
        "giftDate": "2026-11-20",
        "giftType": "Credit",
        "batch": "B-1",
        "contact": {
            "referenceId": format!("cus_{id}"),
            "firstName": "Donor",
            "lastName": format!("N{id}"),
            "email": format!("{id}@example.org"),
            "address": {"postal": "10001"}
        }
    })
}

/// A valid contact transaction.
pub fn contact_tx(ref_source: &str, ref_id: &str, first: &str, last: &str, email: &str) -> Value {
    json!({
        "referenceSource": ref_source,
        "referenceId": ref_id,
        "contactType": "Household",
        "firstName": first,
        "lastName": last,
        "email": email,
        "emailType": "Home Email",
        "postal": "10001",
        "tags": "donor;web"
    })
}

/// A gift amount as f64 whether the JSON carries it as a number or a decimal string.
pub fn amount_of(v: &Value) -> f64 {
    match v {
        Value::Number(n) => n.as_f64().unwrap(),
        Value::String(s) => s.parse().unwrap_or_else(|_| panic!("amount {s:?}")),
        other => panic!("amount is neither number nor string: {other}"),
    }
}

/// HMAC-SHA256 of `body` keyed by `secret`, computed independently of the sandbox.
pub fn hmac_sha256(secret: &str, body: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// One request the webhook receiver saw.
#[derive(Clone, Debug)]
pub struct Hit {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Hit {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("webhook body is JSON")
    }
    pub fn event(&self) -> String {
        self.json()["event"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

struct ReceiverState {
    hits: Mutex<Vec<Hit>>,
    fail_remaining: AtomicUsize,
}

/// A webhook receiver on 127.0.0.1:0 that records everything and can fail N times (500).
pub struct Receiver {
    pub url: String,
    state: Arc<ReceiverState>,
    server: actix_web::dev::ServerHandle,
}

async fn record(req: HttpRequest, body: web::Bytes, st: web::Data<ReceiverState>) -> HttpResponse {
    let hit = Hit {
        method: req.method().to_string(),
        path: req.path().to_string(),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body: body.to_vec(),
        at: Instant::now(),
    };
    st.hits.lock().unwrap().push(hit);
    let failing = st
        .fail_remaining
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        HttpResponse::InternalServerError().body("down")
    } else {
        HttpResponse::Ok().finish()
    }
}

impl Receiver {
    pub async fn start() -> Receiver {
        let state = Arc::new(ReceiverState {
            hits: Mutex::new(Vec::new()),
            fail_remaining: AtomicUsize::new(0),
        });
        let data = web::Data::from(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(64 * 1024 * 1024))
                .default_service(web::to(record))
        })
        .workers(1)
        .bind("127.0.0.1:0")
        .expect("bind receiver");
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        actix_rt::spawn(server);
        Receiver {
            url: format!("http://{addr}/hook"),
            state,
            server: handle,
        }
    }

    /// The next `n` deliveries answer 500.
    pub fn fail_next(&self, n: usize) {
        self.state.fail_remaining.store(n, Ordering::SeqCst);
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.state.hits.lock().unwrap().clone()
    }

    /// Deliveries whose `event` is `event`.
    pub fn events(&self, event: &str) -> Vec<Hit> {
        self.hits()
            .into_iter()
            .filter(|h| h.event() == event)
            .collect()
    }

    /// Waits until at least `n` deliveries of `event` arrived; panics at the deadline.
    pub async fn wait_events(&self, event: &str, n: usize) -> Vec<Hit> {
        let what = at_timeout(|| format!("{n} {event} deliveries, got {:?}", self.summary()));
        wait_until(EVENTUALLY, what, || async {
            (self.events(event).len() >= n).then_some(())
        })
        .await;
        self.events(event)
    }

    /// Waits until at least `n` deliveries of any kind arrived.
    pub async fn wait_hits(&self, n: usize) -> Vec<Hit> {
        let what = at_timeout(|| format!("{n} deliveries, got {:?}", self.summary()));
        wait_until(EVENTUALLY, what, || async {
            (self.hits().len() >= n).then_some(())
        })
        .await;
        self.hits()
    }

    pub fn summary(&self) -> Vec<String> {
        self.hits()
            .iter()
            .map(|h| format!("{} {}", h.method, String::from_utf8_lossy(&h.body)))
            .collect()
    }

    pub async fn stop(self) {
        self.server.stop(false).await;
    }
}
