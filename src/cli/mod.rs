//! The command line's admin client: `steward backfill …` (and the operator commands to
//! come) talk to a running `steward serve` through its admin API, never to the store.
//!
//! # Layout
//! - [`AdminArgs`]: `--url`, `--data-dir`, `--json`, flattened into each command group.
//! - [`Admin`]: the admin URL and token looked up ([`admin_url`], [`admin_token`]), JSON
//!   calls, a streamed upload; an API error becomes [`CliError::Api`] with its code.
//! - [`table`]: tables and numbers for people; [`progress`]: bars on stderr.
//! - [`backfill`]: `steward backfill create|upload|dry-run|start|pause|resume|cancel|status|list`.
//! - [`backup`]: `steward backup` (admin API) and `steward restore` (offline).
//! - [`tenant`]: `steward tenant list|show|create|patch|pause|resume|delete|test-connection`
//!   and `export|import` (moving a tenant between instances).
//! - [`dlq`]: `steward dlq list|show|replay|discard`; [`records`]: `steward records
//!   show|find`; [`alerts`]: `steward alerts list|ack`; [`trigger`]: `steward trigger stripe`.
//! - [`patterns`]: `steward pollers`, `steward destinations`, `steward conflicts`.
//!
//! Output: `--json` prints the API's JSON on stdout (for scripts); otherwise tables. Errors
//! go to stderr as `steward: {code}: {message}` with exit status 1.

pub mod alerts;
pub mod backfill;
pub mod backup;
pub mod dlq;
pub mod patterns;
pub mod progress;
pub mod records;
pub mod table;
pub mod tenant;
pub mod tenant_admin;
pub mod trigger;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::app::{BoundAddresses, ADMIN_TOKEN_FILE, LISTEN_ADDR_FILE};

/// Variables the command line reads.
pub const ADMIN_URL_ENV: &str = "STEWARD_ADMIN_URL";
pub const ADMIN_TOKEN_ENV: &str = "STEWARD_ADMIN_TOKEN";
/// Timeout of one ordinary admin call (an upload has none: it takes as long as the file).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Most characters of a non-JSON error body shown.
const RAW_ERROR_CHARS_MAX: usize = 300;

/// How to reach the admin API, and how to print. Global: accepted before or after the
/// subcommand.
#[derive(clap::Args, Debug, Clone)]
pub struct AdminArgs {
    /// The admin API's base URL (e.g. http://127.0.0.1:8081). Default: STEWARD_ADMIN_URL,
    /// else the admin address `steward serve` wrote to {data-dir}/listen-addr.
    #[arg(long, global = true, value_name = "URL")]
    pub url: Option<String>,
    /// The data dir of the `steward serve` to talk to: its listen-addr and, unless
    /// STEWARD_ADMIN_TOKEN is set, its admin-token file.
    #[arg(
        long,
        global = true,
        env = "STEWARD_DATA_DIR",
        default_value = "./steward-data",
        value_name = "DIR"
    )]
    pub data_dir: PathBuf,
    /// Print the API's JSON (for scripts) instead of tables; no progress bars.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The API answered with an error (`{"error": {"code", "message"}}`).
    #[error("{code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("cannot reach the admin API at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// Anything else: no URL or token found, a file that cannot be read, a failed job.
    #[error("{0}")]
    Failed(String),
}

/// A command-line client piped into `head` ends quietly when the reader goes away, as Unix
/// tools do, instead of panicking on a failed print. Only the client commands: the engine
/// keeps SIGPIPE ignored, so a closed socket is an error it handles.
pub fn end_quietly_on_closed_stdout() {
    // SAFETY: called first thing in `main`, before any thread starts; restores the default
    // action of one signal.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Prints a command's outcome and gives the process's exit status.
pub fn finish(outcome: Result<(), CliError>) -> std::process::ExitCode {
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("steward: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The admin URL: `--url`, else `STEWARD_ADMIN_URL`, else the admin address (the main one
/// when the admin API shares it) in `{data_dir}/listen-addr`. Without a scheme, `http://`.
pub fn admin_url(
    flag: Option<&str>,
    env_url: Option<String>,
    data_dir: &Path,
) -> Result<String, CliError> {
    let given = flag
        .map(str::to_string)
        .or(env_url)
        .filter(|url| !url.trim().is_empty());
    let url = match given {
        Some(url) => url.trim().to_string(),
        None => {
            let path = data_dir.join(LISTEN_ADDR_FILE);
            let text = std::fs::read_to_string(&path).map_err(|error| {
                CliError::Failed(format!(
                    "no admin URL: pass --url or set {ADMIN_URL_ENV}, or point --data-dir at the \
                     data dir of a running `steward serve` ({} cannot be read: {error})",
                    path.display()
                ))
            })?;
            let addresses: BoundAddresses = serde_json::from_str(&text).map_err(|error| {
                CliError::Failed(format!("{} is not readable: {error}", path.display()))
            })?;
            addresses.admin.unwrap_or(addresses.main).to_string()
        }
    };
    let url = url.trim_end_matches('/');
    Ok(
        if url.starts_with("http://") || url.starts_with("https://") {
            url.to_string()
        } else {
            format!("http://{url}")
        },
    )
}

/// The admin token: `STEWARD_ADMIN_TOKEN`, else `{data_dir}/admin-token`.
pub fn admin_token(env_token: Option<String>, data_dir: &Path) -> Result<String, CliError> {
    if let Some(token) = env_token.filter(|token| !token.trim().is_empty()) {
        return Ok(token.trim().to_string());
    }
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    let token = std::fs::read_to_string(&path).map_err(|error| {
        CliError::Failed(format!(
            "no admin token: set {ADMIN_TOKEN_ENV} or point --data-dir at the data dir of \
             `steward serve` ({} cannot be read: {error})",
            path.display()
        ))
    })?;
    Ok(token.trim().to_string())
}

/// The error an answer's body carries (the JSON error shape, else the raw text).
pub fn api_error(status: u16, body: &str) -> CliError {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let error = parsed.as_ref().map(|body| &body["error"]);
    match error.and_then(|error| Some((error["code"].as_str()?, error["message"].as_str()?))) {
        Some((code, message)) => CliError::Api {
            status,
            code: code.to_string(),
            message: message.to_string(),
        },
        None => CliError::Api {
            status,
            code: format!("http_{status}"),
            message: body.chars().take(RAW_ERROR_CHARS_MAX).collect(),
        },
    }
}

/// A connection to a running Steward's admin API.
pub struct Admin {
    base_url: String,
    token: String,
    client: reqwest::blocking::Client,
    /// `--json`: print the API's JSON, show no bars.
    pub json: bool,
}

impl Admin {
    /// Looks up the URL and token ([`admin_url`], [`admin_token`]).
    pub fn connect(args: &AdminArgs) -> Result<Admin, CliError> {
        let base_url = admin_url(
            args.url.as_deref(),
            std::env::var(ADMIN_URL_ENV).ok(),
            &args.data_dir,
        )?;
        let token = admin_token(std::env::var(ADMIN_TOKEN_ENV).ok(), &args.data_dir)?;
        let client = reqwest::blocking::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(None)
            .build()
            .map_err(|error| CliError::Failed(format!("cannot make an HTTP client: {error}")))?;
        Ok(Admin {
            base_url,
            token,
            client,
            json: args.json,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::blocking::RequestBuilder {
        self.client
            .request(method, format!("{}/v1{path}", self.base_url))
            .bearer_auth(&self.token)
    }

    fn send(&self, request: reqwest::blocking::RequestBuilder) -> Result<String, CliError> {
        let response = request.send().map_err(|error| CliError::Unreachable {
            url: self.base_url.clone(),
            reason: error_chain(&error),
        })?;
        let status = response.status().as_u16();
        let body = response.text().map_err(|error| CliError::Unreachable {
            url: self.base_url.clone(),
            reason: error_chain(&error),
        })?;
        if status >= 400 {
            return Err(api_error(status, &body));
        }
        Ok(body)
    }

    fn send_json(&self, request: reqwest::blocking::RequestBuilder) -> Result<Value, CliError> {
        let body = self.send(request)?;
        // 204 No Content (a delete, a discard).
        if body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&body).map_err(|error| {
            CliError::Failed(format!(
                "the admin API answered something that is not JSON: {error}"
            ))
        })
    }

    /// `GET /v1{path}`, JSON.
    pub fn get(&self, path: &str) -> Result<Value, CliError> {
        self.send_json(
            self.request(reqwest::Method::GET, path)
                .timeout(CALL_TIMEOUT),
        )
    }

    /// `GET /v1{path}`, the answer to read as it arrives (NDJSON).
    pub fn get_reader(&self, path: &str) -> Result<reqwest::blocking::Response, CliError> {
        self.reader(reqwest::Method::GET, path)
    }

    /// `POST /v1{path}` without a body, the answer to read as it arrives (a backup).
    pub fn post_reader(&self, path: &str) -> Result<reqwest::blocking::Response, CliError> {
        self.reader(reqwest::Method::POST, path)
    }

    fn reader(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> Result<reqwest::blocking::Response, CliError> {
        let response =
            self.request(method, path)
                .send()
                .map_err(|error| CliError::Unreachable {
                    url: self.base_url.clone(),
                    reason: error_chain(&error),
                })?;
        let status = response.status().as_u16();
        if status >= 400 {
            return Err(api_error(status, &response.text().unwrap_or_default()));
        }
        Ok(response)
    }

    /// `POST /v1{path}` with an optional JSON body.
    pub fn post(&self, path: &str, body: Option<&Value>) -> Result<Value, CliError> {
        let mut request = self
            .request(reqwest::Method::POST, path)
            .timeout(CALL_TIMEOUT);
        if let Some(body) = body {
            request = request.json(body);
        }
        self.send_json(request)
    }

    /// `PATCH /v1{path}` with a JSON merge patch.
    pub fn patch(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        let request = self
            .request(reqwest::Method::PATCH, path)
            .timeout(CALL_TIMEOUT)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/merge-patch+json",
            )
            .body(body.to_string());
        self.send_json(request)
    }

    /// `DELETE /v1{path}`; `Null` for an empty answer.
    pub fn delete(&self, path: &str) -> Result<Value, CliError> {
        self.send_json(
            self.request(reqwest::Method::DELETE, path)
                .timeout(CALL_TIMEOUT),
        )
    }

    /// `method /v1{path}` with `length` bytes read from `body` as they are sent (never the
    /// whole file in memory): a backfill's upload, a tenant import.
    pub fn send_stream(
        &self,
        method: reqwest::Method,
        path: &str,
        content_type: &str,
        body: impl Read + Send + 'static,
        length: u64,
    ) -> Result<Value, CliError> {
        let request = self
            .request(method, path)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(reqwest::blocking::Body::sized(body, length));
        self.send_json(request)
    }

    /// Prints `value` as JSON on stdout.
    pub fn print_json(&self, value: &Value) {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
        );
    }
}

/// A JSON string field, `-` when absent or not text.
pub fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    }
}

/// A JSON document from a file, or from stdin when `path` is `-`.
pub fn read_json_file(path: &Path) -> Result<Value, CliError> {
    let mut raw = String::new();
    let shown = path.display();
    if path == Path::new("-") {
        std::io::stdin()
            .read_to_string(&mut raw)
            .map_err(|error| CliError::Failed(format!("cannot read stdin: {error}")))?;
    } else {
        raw = std::fs::read_to_string(path)
            .map_err(|error| CliError::Failed(format!("cannot read {shown}: {error}")))?;
    }
    serde_json::from_str(&raw)
        .map_err(|error| CliError::Failed(format!("{shown} is not JSON: {error}")))
}

/// `-` for no query value, else `&key=value` with the value escaped.
pub fn query_pair(key: &str, value: Option<&str>) -> String {
    match value {
        Some(value) => format!(
            "&{key}={}",
            form_urlencoded::byte_serialize(value.as_bytes()).collect::<String>()
        ),
        None => String::new(),
    }
}

/// Prints the API's JSON with `--json`, else `for_people(value)`.
pub fn show(
    admin: &Admin,
    value: &Value,
    for_people: impl FnOnce(&Value) -> String,
) -> Result<(), CliError> {
    if admin.json {
        admin.print_json(value);
    } else {
        print!("{}", for_people(value));
    }
    Ok(())
}

/// `text` as one URL path segment: every byte but the unreserved ones (letters, digits,
/// `-._~`) percent-encoded (form encoding would turn a space into `+`, which a path keeps).
pub fn path_segment(text: &str) -> String {
    let mut segment = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            segment.push(char::from(byte));
        } else {
            segment.push_str(&format!("%{byte:02X}"));
        }
    }
    segment
}

/// An error with its causes (reqwest's top message alone says little: "error sending
/// request").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests;
