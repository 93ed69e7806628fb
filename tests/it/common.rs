//! Shared helpers: the real `steward` binary on loopback with a fresh data dir.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// Entries queued in all four lanes, from a tenant status (`GET /v1/tenants/{id}`).
pub fn queued_total(status: &Value) -> u64 {
    ["live", "retry", "reconcile", "backfill"]
        .iter()
        .map(|lane| status["lanes"][lane]["depth"].as_u64().unwrap_or(0))
        .sum()
}

/// The one way a test waits: polls `check` (every 20 ms) until it returns `Some(value)` and
/// returns the value; after `timeout` it panics with `what`, formatted only then (so
/// `at_timeout` can describe the state the wait ended in). Never a bare sleep.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: impl Display, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert_before(deadline, timeout, &what);
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// `wait_until` for code that must block its thread (waiting for a child process to exit
/// without letting the test's other tasks run, or inside `spawn_blocking`).
pub fn wait_until_blocking<T>(
    timeout: Duration,
    what: impl Display,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert_before(deadline, timeout, &what);
        std::thread::sleep(POLL_INTERVAL);
    }
}

const POLL_INTERVAL: Duration = Duration::from_millis(20);

fn assert_before(deadline: Instant, timeout: Duration, what: &impl Display) {
    assert!(
        Instant::now() < deadline,
        "timed out after {timeout:?} waiting for {what}"
    );
}

/// A `wait_until` description built when the wait times out: `describe` can read the state
/// the wait ended in (a log, counters).
pub fn at_timeout<F: Fn() -> String>(describe: F) -> AtTimeout<F> {
    AtTimeout(describe)
}

pub struct AtTimeout<F>(F);

impl<F: Fn() -> String> Display for AtTimeout<F> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&(self.0)())
    }
}

/// How to start a `steward serve` process.
#[derive(Clone)]
pub struct SpawnOptions {
    /// Extra `STEWARD_…` variables (configuration overrides).
    pub env: Vec<(String, String)>,
    /// Pass the admin token through the environment (else the generated file is used).
    pub admin_token_from_env: bool,
    /// Optional configuration file contents.
    pub config_file: Option<String>,
}

impl Default for SpawnOptions {
    fn default() -> Self {
        SpawnOptions {
            env: Vec::new(),
            admin_token_from_env: true,
            config_file: None,
        }
    }
}

/// A running `steward serve` process with its own temp dir (data dir + log file).
pub struct TestApp {
    pub dir: tempfile::TempDir,
    pub options: SpawnOptions,
    pub child: Option<Child>,
    pub main_url: String,
    pub admin_url: String,
    pub admin_token: String,
    pub client: reqwest::Client,
}

impl TestApp {
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The embedded sandbox's base URL (`sandbox` in `{data_dir}/listen-addr`).
    pub fn sandbox_url(&self) -> String {
        let text = std::fs::read_to_string(self.data_dir().join("listen-addr")).unwrap();
        let addresses: Value = serde_json::from_str(&text).unwrap();
        addresses["sandbox"]
            .as_str()
            .expect("the embedded sandbox runs")
            .to_string()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("steward.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts steward and waits until `/readyz` answers 200.
    pub async fn spawn(options: SpawnOptions) -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut app = TestApp {
            dir,
            options,
            child: None,
            main_url: String::new(),
            admin_url: String::new(),
            admin_token: ADMIN_TOKEN.to_string(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                // Below the engine's keep-alive (actix-web's 5 s): a connection the server is
                // closing as idle is never taken for a request (hyper's IncompleteMessage).
                .pool_idle_timeout(Duration::from_secs(3))
                .build()
                .unwrap(),
        };
        app.start().await;
        app
    }

    /// Starts (or restarts) the process on the same data dir.
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let data_dir = self.data_dir();
        std::fs::create_dir_all(&data_dir).unwrap();
        let addr_file = data_dir.join("listen-addr");
        let _ = std::fs::remove_file(&addr_file);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_steward"));
        command.arg("serve");
        if let Some(text) = &self.options.config_file {
            let path = self.dir.path().join("steward.toml");
            std::fs::write(&path, text).unwrap();
            command.arg("--config").arg(path);
        }
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("STEWARD_LOG", "info")
            .env("STEWARD_DATA_DIR", &data_dir)
            .env("STEWARD_LISTEN", "127.0.0.1:0")
            // Port 0: tests run side by side (the default is 127.0.0.1:8081).
            .env("STEWARD_ADMIN_LISTEN", "127.0.0.1:0")
            .env("STEWARD_SANDBOX__EMBEDDED", "true")
            // Tests drive the embedded sandbox's import step, choose where Virtuous webhooks
            // go, and keep its organizations in memory: writing a large one under its lock
            // skews this debug build's latency figures (`serve_loop` turns all three on).
            .env("STEWARD_SANDBOX__AUTO_PROCESS_AFTER_MS", "0")
            .env("STEWARD_SANDBOX__WEBHOOKS_TO_ENGINE", "false")
            .env("STEWARD_SANDBOX__KEEP_ORGANIZATIONS", "false")
            .env("STEWARD_RUNTIME__TEST_HOOKS", "true")
            .env("STEWARD_RUNTIME__ARBITERS", "2")
            .env("STEWARD_SHUTDOWN_DEADLINE_S", "5");
        if self.options.admin_token_from_env {
            command.env("STEWARD_ADMIN_TOKEN", ADMIN_TOKEN);
        }
        for (key, value) in &self.options.env {
            command.env(key, value);
        }
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.child = Some(command.spawn().expect("spawn steward"));

        let log_path = self.log_path();
        let addresses: Value = wait_until(
            Duration::from_secs(30),
            "steward to write listen-addr",
            || {
                let addr_file = addr_file.clone();
                let exited = self.child.as_mut().unwrap().try_wait().unwrap();
                let log_path = log_path.clone();
                async move {
                    if let Some(status) = exited {
                        panic!(
                            "steward exited early ({status}); log:\n{}",
                            std::fs::read_to_string(log_path).unwrap_or_default()
                        );
                    }
                    let text = std::fs::read_to_string(&addr_file).ok()?;
                    serde_json::from_str(&text).ok()
                }
            },
        )
        .await;
        self.main_url = format!("http://{}", addresses["main"].as_str().unwrap());
        self.admin_url = match addresses["admin"].as_str() {
            Some(admin) => format!("http://{admin}"),
            None => self.main_url.clone(),
        };
        if !self.options.admin_token_from_env {
            self.admin_token = std::fs::read_to_string(data_dir.join("admin-token"))
                .unwrap()
                .trim()
                .to_string();
        }
        self.wait_ready().await;
    }

    pub async fn wait_ready(&self) {
        let client = self.client.clone();
        let url = format!("{}/readyz", self.main_url);
        wait_until(Duration::from_secs(30), "/readyz to answer 200", || {
            let client = client.clone();
            let url = url.clone();
            async move {
                let response = client.get(&url).send().await.ok()?;
                (response.status() == 200).then_some(())
            }
        })
        .await;
    }

    /// SIGKILL, and reap the process.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM; waits for the exit and returns its status and how long it took.
    pub fn terminate(&mut self) -> (std::process::ExitStatus, Duration) {
        let mut child = self.child.take().expect("running");
        let started = Instant::now();
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = wait_until_blocking(
            Duration::from_secs(30),
            "steward to exit after SIGTERM",
            || child.try_wait().unwrap(),
        );
        (status, started.elapsed())
    }

    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{}", self.admin_url, path))
            .bearer_auth(&self.admin_token)
    }

    /// An admin call with an optional JSON body: the status and the answer's JSON (`null`
    /// for an empty body, `{"raw": text}` for one that is not JSON).
    pub async fn admin_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self.admin(method, path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| serde_json::json!({"raw": text}))
        };
        (status, json)
    }

    /// An admin call without a body, answered with JSON.
    pub async fn admin_json(&self, method: reqwest::Method, path: &str) -> Value {
        let response = self.admin(method, path).send().await.unwrap();
        response.json().await.unwrap()
    }

    /// The Prometheus text of `/metrics` (the token is needed only on a shared listener).
    pub async fn metrics_text(&self) -> String {
        let response = self
            .client
            .get(format!("{}/metrics", self.admin_url))
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }

    pub async fn create_tenant(&self, body: &Value) -> Value {
        let response = self
            .admin(reqwest::Method::POST, "/v1/tenants")
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let json: Value = response.json().await.unwrap();
        assert_eq!(status, 201, "create tenant: {json}");
        json
    }

    pub async fn status(&self, id: &str) -> Value {
        let response = self
            .admin(reqwest::Method::GET, &format!("/v1/tenants/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A tenant document with every kind of secret, against the embedded sandbox.
pub fn tenant_body(id: &str) -> Value {
    json!({
        "id": id,
        "name": format!("Tenant {id}"),
        "time_zone": "America/Chicago",
        "virtuous": {"base_url": "embedded", "api_key": format!("vk-secret-{id}-apikey"),
                     "webhook_secret": format!("vw-secret-{id}-webhook")},
        "sources": {
            "stripe": {"signing_secret": format!("whsec_secret{id}signing"), "accept_test_events": true},
            "platforms": {"auction-co": {"secret": format!("plat-secret-{id}-hmac"), "transaction_source": "AuctionCo"}}
        },
        "budget": {"hourly_limit": 3600, "reserve_pct": 10}
    })
}

/// The plaintext secrets of [`tenant_body`].
pub fn tenant_secrets(id: &str) -> Vec<String> {
    vec![
        format!("vk-secret-{id}-apikey"),
        format!("vw-secret-{id}-webhook"),
        format!("whsec_secret{id}signing"),
        format!("plat-secret-{id}-hmac"),
    ]
}

/// Every file below `dir`, recursively.
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// Whether `needle` occurs in any file below `dir`.
pub fn found_in_dir(dir: &Path, needle: &str) -> Option<PathBuf> {
    files_below(dir).into_iter().find(|path| {
        let bytes = std::fs::read(path).unwrap_or_default();
        bytes
            .windows(needle.len())
            .any(|window| window == needle.as_bytes())
    })
}

/// Kills a spawned process when dropped, so a failed assertion leaves nothing running.
pub struct ChildGuard(pub std::process::Child);

impl ChildGuard {
    /// SIGTERM, then waits for the exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        self.0.wait().unwrap()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The alert `code` in a tenant status, if ever raised (open, resolved or acknowledged).
pub fn status_alert(status: &Value, code: &str) -> Option<Value> {
    status["alerts"]
        .as_array()?
        .iter()
        .find(|alert| alert["code"] == code)
        .cloned()
}

/// How a `steward serve` expected to refuse to start ended.
pub enum Served {
    /// It exited by itself: status and everything it printed.
    Exited(std::process::ExitStatus, String),
    /// It wrote `listen-addr` (it is serving): killed; what it printed.
    Started(String),
}

/// Runs `command` (a `steward serve` whose output goes to `output_path`) until it exits or
/// writes `addr_file`.
pub fn serve_once(mut command: Command, output_path: &Path, addr_file: &Path) -> Served {
    let output = std::fs::File::create(output_path).unwrap();
    command
        .stdin(Stdio::null())
        .stdout(output.try_clone().unwrap())
        .stderr(output);
    let mut child = ChildGuard(command.spawn().expect("spawn steward"));
    let printed = || std::fs::read_to_string(output_path).unwrap_or_default();
    wait_until_blocking(
        Duration::from_secs(30),
        "steward serve to exit or start serving",
        || {
            if let Some(status) = child.0.try_wait().unwrap() {
                return Some(Served::Exited(status, printed()));
            }
            addr_file.exists().then(|| Served::Started(printed()))
        },
    )
}

/// A bare `steward serve` on `data_dir` with ports 0 and the embedded sandbox.
pub fn serve_command(data_dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_steward"));
    command
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("STEWARD_LOG", "info")
        .env("STEWARD_DATA_DIR", data_dir)
        .env("STEWARD_LISTEN", "127.0.0.1:0")
        .env("STEWARD_ADMIN_LISTEN", "127.0.0.1:0")
        .env("STEWARD_SANDBOX__EMBEDDED", "true")
        .env("STEWARD_SANDBOX__AUTO_PROCESS_AFTER_MS", "0")
        .env("STEWARD_SANDBOX__WEBHOOKS_TO_ENGINE", "false")
        .env("STEWARD_SANDBOX__KEEP_ORGANIZATIONS", "false")
        .env("STEWARD_ADMIN_TOKEN", ADMIN_TOKEN);
    command
}

/// Serves `handler` for every request on a free loopback port (one worker, on the current
/// actix system), with `state` as its `web::Data`: a receiver a test can flip at runtime.
/// Its base URL.
pub fn serve_receiver<T, F, Args>(state: std::sync::Arc<T>, handler: F) -> String
where
    T: Send + Sync + 'static,
    F: actix_web::Handler<Args> + Clone + Send + 'static,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    use actix_web::{web, App, HttpServer};
    let data = web::Data::from(state);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .default_service(web::to(handler.clone()))
    })
    .workers(1)
    .bind(("127.0.0.1", 0))
    .expect("bind the receiver");
    let url = format!("http://{}", server.addrs()[0]);
    actix_rt::spawn(server.run());
    url
}

/// Runs the `steward` command line (a client of the admin API, or `restore`) with the test
/// admin token, nothing else from the environment but `PATH`.
pub fn steward_cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_steward"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("STEWARD_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .expect("run steward")
}

/// A command's exit status and output, for assertion messages.
pub fn output_text(output: &std::process::Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Pauses tenant `id` (nothing is sent while the test arranges its queue), enqueues `count`
/// synthetic gifts (`prefix`-numbered) and turns them into dead letters refused with a 422
/// and `reason` (URL-encoded); their ids, oldest first. Needs the test hooks.
pub async fn paused_dead_letters(
    app: &TestApp,
    id: &str,
    count: usize,
    prefix: &str,
    reason: &str,
) -> Vec<u64> {
    let post = reqwest::Method::POST;
    let (status, body) = app
        .admin_call(post.clone(), &format!("/v1/tenants/{id}/pause"), None)
        .await;
    assert_eq!(status, 200, "pause: {body}");
    let enqueue = format!("/v1/tenants/{id}/_test/enqueue?count={count}&prefix={prefix}");
    let (status, body) = app.admin_call(post.clone(), &enqueue, None).await;
    assert_eq!(status, 202, "enqueue: {body}");
    let dead =
        format!("/v1/tenants/{id}/_test/dead-letter?count={count}&status=422&reason={reason}");
    let (status, body) = app.admin_call(post, &dead, None).await;
    assert_eq!(status, 200, "dead-letter: {body}");
    let ids: Vec<u64> = body["dead_lettered"]
        .as_array()
        .unwrap_or_else(|| panic!("no ids in {body}"))
        .iter()
        .map(|id| id.as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), count, "{body}");
    ids
}
