//! A small W3C WebDriver client over reqwest, driving Debian's Chromium through its
//! chromedriver (browser tests). Written here rather than taken from `fantoccini`: that
//! crate brings hyper-util, cookie, url and the `webdriver` crate's ICU segmenter into a
//! build that already has reqwest, for the dozen commands these tests use.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{wait_until, ChildGuard};

pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// How long a test waits for an element to appear.
const ELEMENT_WAIT: Duration = Duration::from_secs(20);
/// The W3C key of an element reference in a command's answer.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// Chromium flags this CI needs: no sandbox (root in a container), no GPU, and nothing that
/// reaches the network on its own (the network is closed: those calls would stall it).
const CHROMIUM_FLAGS: [&str; 10] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1360,900",
    // A container's /dev/shm is often 64 MiB: Chromium's renderer would crash in it.
    "--disable-dev-shm-usage",
];

/// Whether this machine can run browser tests. Without the browser a test says so and passes,
/// except in CI (`CI` set), where `.ci/run` installs it and its absence is a failure.
pub fn browser_available(test: &str) -> bool {
    if Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: {CHROMEDRIVER} or {CHROMIUM} is missing, and CI must run the browser tests"
    );
    eprintln!("{test}: skipped ({CHROMEDRIVER} or {CHROMIUM} is missing; apt-get install chromium chromium-driver)");
    false
}

/// One element found on the page (its WebDriver reference).
#[derive(Clone, Debug)]
pub struct Element(String);

/// One Chromium session through its own chromedriver, ended (and both processes stopped)
/// on drop.
pub struct Browser {
    client: reqwest::Client,
    /// `http://127.0.0.1:{port}/session/{id}`.
    session_url: String,
    _driver: ChildGuard,
    /// An empty profile per run: nothing carried over between runs.
    _profile: tempfile::TempDir,
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Where screenshots go: `target/screenshots/{name}.png`.
pub fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots")
}

impl Browser {
    pub async fn start() -> Browser {
        let port = free_port();
        let driver = ChildGuard(
            Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start chromedriver"),
        );
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let driver_url = format!("http://127.0.0.1:{port}");
        wait_until(
            Duration::from_secs(20),
            "chromedriver to answer /status",
            || {
                let client = client.clone();
                let url = format!("{driver_url}/status");
                async move {
                    let status: Value = client.get(url).send().await.ok()?.json().await.ok()?;
                    status["value"]["ready"].as_bool().filter(|ready| *ready)
                }
            },
        )
        .await;
        let profile = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|flag| flag.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
            // The console's messages, so a test can check the page broke no rule (CSP).
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let answer: Value = client
            .post(format!("{driver_url}/session"))
            .json(&capabilities)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session_id = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {answer}"));
        Browser {
            client,
            session_url: format!("{driver_url}/session/{session_id}"),
            _driver: driver,
            _profile: profile,
        }
    }

    /// One WebDriver command; its `value`, or `Err` with the driver's error.
    async fn try_command(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut request = self
            .client
            .request(method.clone(), format!("{}{path}", self.session_url));
        if method != reqwest::Method::GET {
            // Every POST carries a JSON object, even an empty one (W3C).
            request = request.json(&body.unwrap_or_else(|| json!({})));
        }
        let response = request.send().await.map_err(|err| err.to_string())?;
        let status = response.status();
        let answer: Value = response.json().await.map_err(|err| err.to_string())?;
        if !status.is_success() {
            return Err(format!("{method} {path}: {status} {}", answer["value"]));
        }
        Ok(answer["value"].clone())
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.try_command(method, path, body)
            .await
            .unwrap_or_else(|err| panic!("WebDriver: {err}"))
    }

    pub async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    pub async fn current_url(&self) -> String {
        let url = self.command(reqwest::Method::GET, "/url", None).await;
        url.as_str().unwrap_or_default().to_string()
    }

    async fn find_all(&self, css: &str) -> Result<Vec<Element>, String> {
        let found = self
            .try_command(
                reqwest::Method::POST,
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await?;
        Ok(found
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|element| element[ELEMENT_KEY].as_str())
            .map(|id| Element(id.to_string()))
            .collect())
    }

    /// The first element `css` selects, waiting for it to appear (the page draws after its
    /// API calls answer).
    pub async fn wait_for(&self, css: &str) -> Element {
        let deadline = std::time::Instant::now() + ELEMENT_WAIT;
        loop {
            if let Some(found) = self
                .find_all(css)
                .await
                .ok()
                .and_then(|found| found.into_iter().next())
            {
                return found;
            }
            if std::time::Instant::now() > deadline {
                panic!(
                    "timed out after {ELEMENT_WAIT:?} waiting for `{css}`; {}",
                    self.describe_failure().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What the page showed when a wait failed (its notice and main text), with a
    /// screenshot `target/screenshots/failure.png`.
    async fn describe_failure(&self) -> String {
        self.screenshot("failure").await;
        let mut shown = format!("url {}", self.current_url().await);
        for css in ["#notice", "main", "body"] {
            if let Some(element) = self
                .find_all(css)
                .await
                .ok()
                .and_then(|found| found.into_iter().next())
            {
                let text = self.try_text(&element).await.unwrap_or_default();
                shown.push_str(&format!(
                    "\n{css}: {}",
                    text.chars().take(2_000).collect::<String>()
                ));
                break;
            }
        }
        shown
    }

    /// Waits until the first element `css` selects has a text for which `accept` holds; the
    /// text.
    pub async fn wait_for_text(
        &self,
        css: &str,
        timeout: Duration,
        accept: impl Fn(&str) -> bool,
    ) -> String {
        let last_seen = std::sync::Mutex::new(String::new());
        wait_until(
            timeout,
            crate::common::at_timeout(|| {
                format!(
                    "`{css}` to read as expected; last: {:?}",
                    last_seen.lock().unwrap()
                )
            }),
            || async {
                // The element may be redrawn between the find and the read: look again.
                let element = self.find_all(css).await.ok()?.into_iter().next()?;
                let text = self.try_text(&element).await.ok()?;
                *last_seen.lock().unwrap() = text.clone();
                accept(&text).then_some(text)
            },
        )
        .await
    }

    pub async fn count(&self, css: &str) -> usize {
        self.find_all(css)
            .await
            .map(|found| found.len())
            .unwrap_or(0)
    }

    pub async fn click(&self, element: &Element) {
        self.command(
            reqwest::Method::POST,
            &format!("/element/{}/click", element.0),
            None,
        )
        .await;
    }

    /// Waits for the first element `css` selects, then clicks it.
    pub async fn click_on(&self, css: &str) {
        let element = self.wait_for(css).await;
        self.click(&element).await;
    }

    pub async fn clear(&self, element: &Element) {
        self.command(
            reqwest::Method::POST,
            &format!("/element/{}/clear", element.0),
            None,
        )
        .await;
    }

    /// Types `text` into the element as keystrokes.
    pub async fn type_text(&self, element: &Element, text: &str) {
        let path = format!("/element/{}/value", element.0);
        self.command(reqwest::Method::POST, &path, Some(json!({"text": text})))
            .await;
    }

    /// `GET /element/{id}/{what}`: the element's text, a property, whether it is enabled.
    async fn read_element(&self, element: &Element, what: &str) -> Result<Value, String> {
        let path = format!("/element/{}/{what}", element.0);
        self.try_command(reqwest::Method::GET, &path, None).await
    }

    async fn try_text(&self, element: &Element) -> Result<String, String> {
        let text = self.read_element(element, "text").await?;
        Ok(text.as_str().unwrap_or_default().to_string())
    }

    /// A form field's current value (the `value` property).
    pub async fn value(&self, element: &Element) -> String {
        let value = self.read_element(element, "property/value").await;
        value
            .unwrap_or_else(|err| panic!("WebDriver: {err}"))
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub async fn is_enabled(&self, element: &Element) -> bool {
        let enabled = self.read_element(element, "enabled").await;
        enabled
            .unwrap_or_else(|err| panic!("WebDriver: {err}"))
            .as_bool()
            .unwrap_or(false)
    }

    /// The browser console's messages since the last call (chromedriver's log endpoint).
    pub async fn console_messages(&self) -> Vec<String> {
        let entries = self
            .command(
                reqwest::Method::POST,
                "/se/log",
                Some(json!({"type": "browser"})),
            )
            .await;
        entries
            .as_array()
            .into_iter()
            .flatten()
            .map(|entry| format!("{} {}", entry["level"], entry["message"]))
            .collect()
    }

    /// Saves the viewport as `target/screenshots/{name}.png`; the path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        use base64::Engine;
        let encoded = self
            .command(reqwest::Method::GET, "/screenshot", None)
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap_or_default())
            .expect("a base64 PNG");
        assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the session (Chromium exits); the driver is killed by its guard. Best effort:
        // a blocking call on a runtime thread is fine for one short request at the end.
        let url = self.session_url.clone();
        let _ = std::thread::spawn(move || {
            reqwest::blocking::Client::new()
                .delete(url)
                .timeout(Duration::from_secs(10))
                .send()
        })
        .join();
    }
}
