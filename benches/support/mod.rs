//! Shared helpers of the push benchmarks (`ingest`, `drain`, `latency`, `isolation`): the
//! real release `steward` binary on loopback with the embedded sandbox, the admin calls they
//! need, distinct signed `charge.succeeded` events, and latency summaries.
//!
//! Each benchmark includes this file with `#[path = "support/mod.rs"] mod support;` and uses
//! only part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Value};

pub const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";

pub fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// A running `steward serve` (release build) with its own data dir; killed on drop.
pub struct Engine {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub main_url: String,
    /// The admin listener (`/v1`, `/metrics`).
    pub admin_url: String,
    pub sandbox_url: String,
    pub client: reqwest::Client,
    /// The `extra_env` it was started with (a restart uses them again).
    extra_env: Vec<(String, String)>,
}

impl Engine {
    /// Starts the engine with the embedded sandbox and `extra_env` overrides; waits for
    /// `/readyz`.
    pub async fn spawn(extra_env: &[(&str, &str)]) -> Engine {
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = dir.path().join("data");
        std::fs::create_dir_all(&data_dir).unwrap();
        let extra_env: Vec<(String, String)> = extra_env
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        let mut child = spawn_serve(dir.path(), &extra_env);
        let addresses = wait_for_addresses(&data_dir, &mut child).await;
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let engine = Engine {
            child,
            dir,
            main_url: format!("http://{}", addresses["main"].as_str().unwrap()),
            admin_url: format!("http://{}", addresses["admin"].as_str().unwrap()),
            sandbox_url: addresses["sandbox"].as_str().unwrap().to_string(),
            client,
            extra_env,
        };
        engine.wait_ready().await;
        engine
    }

    /// Starts the engine again on the same data dir with the same settings (after
    /// [`Engine::stop`]; stops it first when it still runs). Its listeners move to new
    /// ports (the URLs are updated); waits for `/readyz`.
    pub async fn restart(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.stop();
        }
        let data_dir = self.dir.path().join("data");
        let _ = std::fs::remove_file(data_dir.join("listen-addr"));
        self.child = spawn_serve(self.dir.path(), &self.extra_env);
        let addresses = wait_for_addresses(&data_dir, &mut self.child).await;
        self.main_url = format!("http://{}", addresses["main"].as_str().unwrap());
        self.admin_url = format!("http://{}", addresses["admin"].as_str().unwrap());
        self.sandbox_url = addresses["sandbox"].as_str().unwrap().to_string();
        self.wait_ready().await;
    }

    /// Starts the engine on a known port with `public_url` on it (so simulated webhooks
    /// reach it) and children ticking every second.
    pub async fn spawn_public() -> Engine {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let listen = format!("127.0.0.1:{port}");
        let public_url = format!("http://{listen}");
        Engine::spawn(&[
            ("STEWARD_LISTEN", &listen),
            ("STEWARD_PUBLIC_URL", &public_url),
            ("STEWARD_RUNTIME__HEARTBEAT_MS", "1000"),
        ])
        .await
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("steward.log")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(response) = self
                .client
                .get(format!("{}/readyz", self.main_url))
                .send()
                .await
            {
                if response.status() == 200 {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "/readyz never answered 200");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// An admin call; panics with the answer when the status is not 2xx.
    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let request = self
            .client
            .request(method.clone(), format!("{}{path}", self.admin_url))
            .bearer_auth(ADMIN_TOKEN);
        json_answer(request, &method, path, body).await
    }

    /// A sandbox control call (`/_sandbox/…`); panics unless 2xx.
    pub async fn sandbox(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let request = self
            .client
            .request(method.clone(), format!("{}{path}", self.sandbox_url));
        json_answer(request, &method, path, body).await
    }

    /// Creates a sandbox organization with `hourly_limit` and a tenant that targets it
    /// directly (not "embedded": the bench chooses the org's settings).
    pub async fn create_tenant_with_org(
        &self,
        tenant_id: &str,
        hourly_limit: u64,
        reserve_pct: u8,
    ) {
        self.create_tenant_with_org_spec(tenant_id, hourly_limit, reserve_pct, json!({}))
            .await;
    }

    /// As [`Engine::create_tenant_with_org`], with more organization settings (`OrgSpec`
    /// fields such as `processing`).
    pub async fn create_tenant_with_org_spec(
        &self,
        tenant_id: &str,
        hourly_limit: u64,
        reserve_pct: u8,
        org_extra: Value,
    ) {
        let api_key = api_key(tenant_id);
        let mut org = json!({"id": tenant_id, "api_key": api_key, "hourly_limit": hourly_limit});
        if let Some(extra) = org_extra.as_object() {
            for (key, value) in extra {
                org[key] = value.clone();
            }
        }
        self.sandbox(reqwest::Method::POST, "/_sandbox/orgs", Some(org))
            .await;
        let body = json!({
            "id": tenant_id,
            "name": format!("Bench {tenant_id}"),
            "virtuous": {"base_url": self.sandbox_url, "api_key": api_key},
            "sources": {"stripe": {"signing_secret": signing_secret(tenant_id),
                                   "accept_test_events": true}},
            "budget": {"hourly_limit": hourly_limit, "reserve_pct": reserve_pct}
        });
        self.admin(reqwest::Method::POST, "/v1/tenants", Some(body))
            .await;
    }

    /// `(sum, count)` of a Prometheus histogram in `/metrics` (all label sets added).
    pub async fn histogram_totals(&self, name: &str) -> (f64, f64) {
        let text = self
            .client
            .get(format!("{}/metrics", self.admin_url))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let total = |suffix: &str| -> f64 {
            let metric = format!("{name}_{suffix}");
            text.lines()
                .filter(|line| {
                    line.starts_with(&metric) && line[metric.len()..].starts_with(['{', ' '])
                })
                .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        (total("sum"), total("count"))
    }

    pub async fn status(&self, tenant_id: &str) -> Value {
        self.admin(
            reqwest::Method::GET,
            &format!("/v1/tenants/{tenant_id}"),
            None,
        )
        .await
    }

    pub async fn sandbox_stats(&self, org: &str) -> Value {
        self.sandbox(
            reqwest::Method::GET,
            &format!("/_sandbox/orgs/{org}/stats"),
            None,
        )
        .await
    }

    /// Posts one signed event to the tenant's Stripe ingress; returns the HTTP status.
    pub async fn post_event(&self, tenant_id: &str, event: &SignedEvent) -> u16 {
        let url = format!("{}/hooks/{tenant_id}/stripe", self.main_url);
        post_event(&self.client, &url, event).await
    }

    /// SIGTERM, then wait.
    pub fn stop(&mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `steward serve` on `{dir}/data` with the benchmarks' settings and `extra_env`, its output
/// appended to `{dir}/steward.log`.
fn spawn_serve(dir: &Path, extra_env: &[(String, String)]) -> Child {
    let data_dir = dir.join("data");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("steward.log"))
        .unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_steward"));
    command
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("STEWARD_DATA_DIR", &data_dir)
        .env("STEWARD_LISTEN", "127.0.0.1:0")
        .env("STEWARD_ADMIN_LISTEN", "127.0.0.1:0")
        .env("STEWARD_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("STEWARD_LOG", "warn")
        .env("STEWARD_SANDBOX__EMBEDDED", "true")
        // The engine alone is measured: no simulator writing its organizations to disk,
        // importing on its own or sending webhooks the benchmark did not ask for.
        .env("STEWARD_SANDBOX__KEEP_ORGANIZATIONS", "false")
        .env("STEWARD_SANDBOX__AUTO_PROCESS_AFTER_MS", "0")
        .env("STEWARD_SANDBOX__WEBHOOKS_TO_ENGINE", "false");
    for (key, value) in extra_env {
        command.env(key, value);
    }
    command
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn steward")
}

async fn wait_for_addresses(data_dir: &Path, child: &mut Child) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("steward exited early: {status}");
        }
        if let Ok(text) = std::fs::read_to_string(data_dir.join("listen-addr")) {
            if let Ok(addresses) = serde_json::from_str::<Value>(&text) {
                return addresses;
            }
        }
        assert!(
            Instant::now() < deadline,
            "steward did not start within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub fn api_key(tenant_id: &str) -> String {
    format!("bench-key-{tenant_id}")
}

pub fn signing_secret(tenant_id: &str) -> String {
    format!("whsec_bench{tenant_id}secret")
}

/// Sends `request` (with `body` as JSON); panics unless 2xx; the JSON answer (`Null` when
/// empty).
pub async fn json_answer(
    mut request: reqwest::RequestBuilder,
    method: &reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Value {
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("call");
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    assert!(status.is_success(), "{method} {path} → {status}: {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Posts one signed event; its HTTP status, or 0 when no answer came.
pub async fn post_event(client: &reqwest::Client, url: &str, event: &SignedEvent) -> u16 {
    client
        .post(url)
        .header("Stripe-Signature", &event.signature)
        .header("Content-Type", "application/json")
        .body(event.body.clone())
        .send()
        .await
        .map(|response| response.status().as_u16())
        .unwrap_or(0)
}

/// A Stripe event ready to post: its body and `Stripe-Signature`.
#[derive(Clone)]
pub struct SignedEvent {
    pub body: actix_web::web::Bytes,
    pub signature: String,
    /// The gift's `transactionId` (the charge id: these charges have no PaymentIntent).
    pub transaction_id: String,
}

/// A distinct `charge.succeeded` event of about `size_bytes` (padding in `metadata`), signed
/// for `tenant_id` now. `n` makes every id unique.
pub fn charge_succeeded(tenant_id: &str, run: &str, n: u64, size_bytes: usize) -> SignedEvent {
    let charge_id = format!("ch_{run}{n:010}");
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut event = json!({
        "id": format!("evt_{run}{n:010}"),
        "object": "event",
        "api_version": "2024-06-20",
        "created": now_s,
        "livemode": false,
        "pending_webhooks": 1,
        "request": {"id": format!("req_{run}{n:010}"), "idempotency_key": null},
        "type": "charge.succeeded",
        "data": {"object": {
            "id": charge_id,
            "object": "charge",
            "amount": 1_000 + (n % 50_000),
            "amount_captured": 1_000 + (n % 50_000),
            "amount_refunded": 0,
            "captured": true,
            "created": now_s,
            "currency": "usd",
            "customer": null,
            "description": "Donation",
            "invoice": null,
            "livemode": false,
            "paid": true,
            "payment_intent": null,
            "receipt_email": format!("donor{n}@example.org"),
            "refunded": false,
            "status": "succeeded",
            "billing_details": {
                "address": {"city": "Springfield", "country": "US", "line1": format!("{n} Main St"),
                            "line2": null, "postal_code": "62701", "state": "IL"},
                "email": format!("donor{n}@example.org"),
                "name": format!("Donor{n} Example"),
                "phone": null
            },
            "payment_method_details": {"type": "card", "card": {"brand": "visa", "last4": "4242",
                "exp_month": 12, "exp_year": 2030, "country": "US", "funding": "credit"}},
            "metadata": {}
        }}
    });
    let base_len = serde_json::to_vec(&event).unwrap().len();
    if size_bytes > base_len + 16 {
        event["data"]["object"]["metadata"]["note"] = json!("x".repeat(size_bytes - base_len - 16));
    }
    let body = serde_json::to_vec(&event).unwrap();
    let signature = steward::sources::stripe::sign_header(&signing_secret(tenant_id), now_s, &body);
    SignedEvent {
        body: actix_web::web::Bytes::from(body),
        signature,
        transaction_id: charge_id,
    }
}

/// `p50 / p99 / p99.9 / max` of a histogram in microseconds, as milliseconds.
pub fn summary_ms(histogram: &Histogram<u64>) -> String {
    let ms = |us: u64| us as f64 / 1_000.0;
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms (n = {})",
        ms(histogram.value_at_quantile(0.50)),
        ms(histogram.value_at_quantile(0.99)),
        ms(histogram.value_at_quantile(0.999)),
        ms(histogram.max()),
        histogram.len()
    )
}

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).unwrap()
}

/// Closed loop: `connections` tasks post `events` to `tenant_id` as fast as answered.
/// Returns (answers by status, latency histogram of every answer, elapsed).
pub async fn closed_loop(
    engine: &Engine,
    tenant_id: &str,
    events: std::sync::Arc<Vec<SignedEvent>>,
    connections: usize,
) -> (
    std::collections::BTreeMap<u16, u64>,
    Histogram<u64>,
    Duration,
) {
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let client = engine.client.clone();
        let url = format!("{}/hooks/{tenant_id}/stripe", engine.main_url);
        let events = std::sync::Arc::clone(&events);
        let next = std::sync::Arc::clone(&next);
        tasks.push(tokio::spawn(async move {
            let mut histogram = new_histogram();
            let mut statuses = std::collections::BTreeMap::new();
            loop {
                let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(event) = events.get(index) else {
                    break;
                };
                let sent = Instant::now();
                let status = post_event(&client, &url, event).await;
                histogram.saturating_record(sent.elapsed().as_micros() as u64);
                *statuses.entry(status).or_insert(0u64) += 1;
            }
            (statuses, histogram)
        }));
    }
    let mut statuses = std::collections::BTreeMap::new();
    let mut histogram = new_histogram();
    for task in tasks {
        let (task_statuses, task_histogram) = task.await.unwrap();
        for (status, count) in task_statuses {
            *statuses.entry(status).or_insert(0) += count;
        }
        histogram.add(task_histogram).unwrap();
    }
    (statuses, histogram, started.elapsed())
}

/// Polls `check` every 20 ms until it returns `Some`, or panics after `timeout`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `status["lanes"][lane]["depth"]` as a number (0 when absent).
pub fn lane_depth(status: &Value, lane: &str) -> u64 {
    status["lanes"][lane]["depth"].as_u64().unwrap_or(0)
}

/// A machine line for the README.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("model name"))
                .map(|line| line.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!("{cores} × {cpu}")
}

/// `steward sandbox` in its own process: the simulators the `poll` and `pull` benchmarks
/// measure against, so their CPU is counted apart from the engine's. Killed on drop.
pub struct SandboxProcess {
    pub child: Child,
    pub url: String,
}

impl SandboxProcess {
    pub fn spawn() -> SandboxProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_steward"))
            .args(["sandbox", "--listen", "127.0.0.1:0"])
            .env("STEWARD_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn steward sandbox");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
            .expect("sandbox prints its address");
        let url = line
            .trim()
            .rsplit(' ')
            .next()
            .expect("an address")
            .to_string();
        SandboxProcess { child, url }
    }
}

impl Drop for SandboxProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The process's user + system CPU time in ms (`/proc/{pid}/stat`).
pub fn cpu_ms(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields
        .get(11..13)
        .map(|both| both.iter().filter_map(|t| t.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    ticks * 1_000 / per_second
}

/// CPU ms of the Postgres server: the postmaster and its children (backends, writers).
pub fn postgres_cpu_ms(postmaster: u32) -> u64 {
    let mut total = cpu_ms(postmaster);
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let parent = stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|ppid| ppid.parse::<u32>().ok());
        if parent == Some(postmaster) {
            total += cpu_ms(pid);
        }
    }
    total
}

/// The machine's memory (`MemTotal`), as "23.5 GiB", or "unknown memory".
pub fn total_memory() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("MemTotal:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or("unknown memory".to_string(), |kb| {
            format!("{:.1} GiB", kb as f64 / 1_048_576.0)
        })
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` has them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}
