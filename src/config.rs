//! Steward's configuration: a TOML file plus `STEWARD_…` environment overrides.
//!
//! Fails fast: unknown keys are rejected and every value is validated at start, with an
//! error that names the key and where it came from (the file or the environment variable).
//! `config.example.toml` documents every key with its default; `default_config_is_documented`
//! keeps the two in step.

// Size: about 515 lines — every section's struct with its documented defaults, and the
// validation that names each key; the tests live in `config/tests.rs`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Environment variables with the `STEWARD_` prefix that are not configuration keys.
const NON_CONFIG_ENV_VARS: [&str; 7] = [
    "STEWARD_ADMIN_TOKEN",
    // The revision a build names (build.rs); harmless if still set when `serve` runs.
    "STEWARD_BUILD_REVISION",
    // The revision build.rs gives the compiler; cargo also sets it in the environment of the
    // tests and benchmarks it runs, and their `steward serve` children inherit it.
    "STEWARD_GIT_REVISION",
    // The admin API's URL for the command line (`steward backfill …`); `serve` ignores it.
    "STEWARD_ADMIN_URL",
    "STEWARD_MASTER_KEY",
    "STEWARD_LOG",
    // Crash points for the crash tests (actors/src/failpoint.rs); read by `serve`.
    "STEWARD_FAILPOINTS",
];
/// The admin API's own loopback listener unless configured otherwise (issue 11: a flood on
/// the internet-facing port must not lock the operator out).
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8081";
/// `admin_listen` value that serves `/v1` and `/metrics` on the ingress listener.
pub const ADMIN_LISTEN_SHARED: &str = "shared";
/// Prefixes reserved for tests and benchmarks (never configuration keys).
const NON_CONFIG_ENV_PREFIXES: [&str; 2] = ["STEWARD_BENCH_", "STEWARD_TEST_"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {file}: {reason}")]
    Read { file: String, reason: String },
    #[error("configuration error in {origin}: {reason}")]
    Parse { origin: String, reason: String },
    #[error("configuration key `{key}` (from {origin}) is invalid: {reason}")]
    Invalid {
        key: String,
        origin: String,
        reason: String,
    },
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the store, the master key file and the generated admin token live. A relative
    /// path is resolved at load (see [`Config::load`]); after loading it is absolute.
    pub data_dir: PathBuf,
    /// Ingress (`/hooks`) and health — plus `/v1` and `/metrics` when `admin_listen` is
    /// `"shared"`.
    pub listen: String,
    /// The admin listener (`/v1`, `/metrics`): an address (port 0 allowed), or `"shared"` to
    /// serve them on `listen` (`/metrics` then needs the admin token too).
    pub admin_listen: String,
    /// The address sources reach Steward at (for ingress URLs in the tenant status).
    pub public_url: String,
    /// Seconds a graceful shutdown may take before the process exits anyway.
    pub shutdown_deadline_s: u64,
    /// Largest accepted request body, in bytes.
    pub body_limit_bytes: usize,
    /// Largest accepted body on `/hooks/{tenant}/virtuous` (bulk deliveries are large).
    pub virtuous_body_limit_bytes: usize,
    /// `text` (one readable line an event) or `json` (one JSON object a line, for a log
    /// stack). The filter is `STEWARD_LOG`.
    pub log_format: crate::telemetry::LogFormat,
    pub store: StoreSection,
    pub runtime: RuntimeSection,
    pub virtuous: VirtuousSection,
    pub budget: BudgetSection,
    pub submitter: SubmitterSection,
    pub reconciler: ReconcilerSection,
    pub sandbox: SandboxSection,
    /// Limits of the ingress listener (issue 11: hostile clients).
    pub ingress: IngressSection,
    /// When failures become alerts, and the sinks alerts are sent to.
    pub alerts: AlertsSection,
    /// Backfill jobs (docs/backfill.md).
    pub backfill: BackfillSection,
}

/// Backfill jobs (docs/backfill.md "Admin API").
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackfillSection {
    /// Largest file `PUT /v1/tenants/{id}/backfills/{b}/file` accepts (streamed to disk,
    /// never held in memory); larger → 413 and nothing kept.
    pub max_file_bytes: u64,
}

impl Default for BackfillSection {
    fn default() -> Self {
        BackfillSection {
            max_file_bytes: 4 * 1024 * 1024 * 1024,
        }
    }
}

/// How queued entries are sent (docs/operations.md "Submission and budget").
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubmitterSection {
    /// Most gift transactions per `POST /api/v2/Gift/Transactions` (Virtuous allows 100).
    pub batch_max: usize,
    /// Waits before each retry of a transient failure (`250ms`, `10s`, `1m`, `2h`, `1d`);
    /// after the last one the entry is dead-lettered.
    pub retry_schedule: Vec<String>,
    /// Spread of each retry wait, ± percent.
    pub retry_jitter_pct: u8,
    /// A leased entry whose call has not completed after this long may be leased again
    /// (a stuck or replaced submitter); keep it above `virtuous.request_timeout_s`.
    pub lease_timeout_s: u64,
}

/// How submitted records are confirmed (docs/operations.md "Confirmation").
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconcilerSection {
    /// Seconds between bulk confirmation passes (FullGift queries).
    pub interval_s: u64,
    /// A record unconfirmed this long after submission becomes `needs_review` (+ alert).
    pub needs_review_after_s: u64,
    /// Gifts per query page (Virtuous allows 1,000).
    pub query_take: u32,
    /// Idempotency keys are remembered this many days (docs/operations.md "Confirmation").
    pub dedup_retention_days: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    pub cache_capacity_bytes: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeSection {
    /// Arbiters (threads) that host tenant supervisors; 0 = one per core.
    pub arbiters: usize,
    pub heartbeat_ms: u64,
    pub restart_backoff_initial_ms: u64,
    pub restart_backoff_max_ms: u64,
    pub mailbox_capacity: usize,
    /// Exposes `/v1/tenants/{id}/_test/…` hooks. Tests only; never in production.
    pub test_hooks: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct VirtuousSection {
    pub request_timeout_s: u64,
}

/// Defaults for tenants that do not set their own `budget`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetSection {
    pub hourly_limit: u64,
    pub reserve_pct: u8,
    pub burst_calls: u32,
    /// The backfill lane's guaranteed share of calls while live work waits (0–100).
    pub backfill_pct: u8,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxSection {
    /// Start a Virtuous simulator inside the process (demos and development only).
    pub embedded: bool,
    pub listen: String,
    /// An organization the engine makes for a tenant imports each transaction by itself this
    /// long after it arrived; 0 = never (`POST /_sandbox/orgs/{id}/process` imports).
    pub auto_process_after_ms: u64,
    /// Tenants on the embedded sandbox register their Virtuous webhook on this engine's own
    /// listener (no `public_url` needed), so imported gifts confirm at once; a tenant without
    /// `virtuous.webhook_secret` is given a generated one. `false`: only with `public_url`.
    pub webhooks_to_engine: bool,
    /// The Virtuous organizations are kept in `{data_dir}/sandbox/` across restarts;
    /// `false`: in memory only (a restart empties them; benchmarks).
    pub keep_organizations: bool,
}

/// The longest `sandbox.auto_process_after_ms`: a day.
const AUTO_PROCESS_AFTER_MS_MAX: u64 = 86_400_000;

impl SandboxSection {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.auto_process_after_ms > AUTO_PROCESS_AFTER_MS_MAX {
            return Err((
                "sandbox.auto_process_after_ms",
                format!("must be 0 (off) to {AUTO_PROCESS_AFTER_MS_MAX} (a day), in milliseconds"),
            ));
        }
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./steward-data"),
            listen: "127.0.0.1:8080".into(),
            admin_listen: DEFAULT_ADMIN_LISTEN.into(),
            public_url: String::new(),
            shutdown_deadline_s: 10,
            body_limit_bytes: 1024 * 1024,
            virtuous_body_limit_bytes: 8 * 1024 * 1024,
            log_format: crate::telemetry::LogFormat::Text,
            store: StoreSection::default(),
            runtime: RuntimeSection::default(),
            virtuous: VirtuousSection::default(),
            budget: BudgetSection::default(),
            submitter: SubmitterSection::default(),
            reconciler: ReconcilerSection::default(),
            sandbox: SandboxSection::default(),
            ingress: IngressSection::default(),
            alerts: AlertsSection::default(),
            backfill: BackfillSection::default(),
        }
    }
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            cache_capacity_bytes: 256 * 1024 * 1024,
        }
    }
}

impl Default for RuntimeSection {
    fn default() -> Self {
        RuntimeSection {
            arbiters: 0,
            heartbeat_ms: 30_000,
            restart_backoff_initial_ms: 1_000,
            restart_backoff_max_ms: 60_000,
            mailbox_capacity: 1_024,
            test_hooks: false,
        }
    }
}

impl Default for VirtuousSection {
    fn default() -> Self {
        VirtuousSection {
            request_timeout_s: 30,
        }
    }
}

impl Default for BudgetSection {
    fn default() -> Self {
        BudgetSection {
            hourly_limit: 5_000,
            reserve_pct: 10,
            burst_calls: 1,
            backfill_pct: 20,
        }
    }
}

impl Default for SubmitterSection {
    fn default() -> Self {
        SubmitterSection {
            batch_max: 100,
            retry_schedule: ["10s", "1m", "5m", "30m", "2h", "6h", "12h", "24h"]
                .map(String::from)
                .to_vec(),
            retry_jitter_pct: 20,
            lease_timeout_s: 120,
        }
    }
}

impl Default for ReconcilerSection {
    fn default() -> Self {
        ReconcilerSection {
            interval_s: 3_600,
            needs_review_after_s: 259_200,
            query_take: 1_000,
            dedup_retention_days: 90,
        }
    }
}

impl SubmitterSection {
    /// The retry schedule in milliseconds (validated at load).
    pub fn retry_schedule_ms(&self) -> Vec<u64> {
        self.retry_schedule
            .iter()
            .filter_map(|step| steward_actors::retry::parse_duration(step).ok())
            .map(|delay| delay.as_millis() as u64)
            .collect()
    }
}

impl Default for SandboxSection {
    fn default() -> Self {
        SandboxSection {
            embedded: false,
            listen: "127.0.0.1:0".into(),
            auto_process_after_ms: 2_000,
            webhooks_to_engine: true,
            keep_organizations: true,
        }
    }
}

/// The validated addresses of a [`Config`].
#[derive(Debug, Clone)]
pub struct Listeners {
    pub main: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub sandbox: SocketAddr,
}

impl Config {
    /// Reads `file` (if given), applies `STEWARD_…` overrides from `env`, and validates.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (mut table, file_origin) = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|err| ConfigError::Read {
                    file: path.display().to_string(),
                    reason: err.to_string(),
                })?;
                let table: toml::Table =
                    toml::from_str(&text).map_err(|err| ConfigError::Parse {
                        origin: path.display().to_string(),
                        reason: err.to_string(),
                    })?;
                (table, path.display().to_string())
            }
            None => (toml::Table::new(), "the built-in defaults".to_string()),
        };
        let mut env_keys = Vec::new();
        for (name, raw_value) in env {
            let Some(key_path) = env_var_key_path(&name) else {
                continue;
            };
            set_path(&mut table, &key_path, parse_env_value(&raw_value)).map_err(|reason| {
                ConfigError::Invalid {
                    key: key_path.join("."),
                    origin: format!("environment variable {name}"),
                    reason,
                }
            })?;
            env_keys.push((key_path.join("."), name));
        }
        let origin_of = |key: &str| -> String {
            env_keys
                .iter()
                .find(|(env_key, _)| {
                    // The key itself, a key below an overridden table, or (an unknown
                    // section spelt in a variable) the section above the overridden key.
                    env_key == key
                        || key.starts_with(&format!("{env_key}."))
                        || (!key.is_empty() && env_key.starts_with(&format!("{key}.")))
                })
                .map(|(_, name)| format!("environment variable {name}"))
                .unwrap_or_else(|| file_origin.clone())
        };
        let mut config: Config = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|err| {
                let key = err.path().to_string();
                let reason = in_words(err.inner().message());
                if key.is_empty() || key == "." {
                    return ConfigError::Parse {
                        origin: file_origin.clone(),
                        reason,
                    };
                }
                ConfigError::Invalid {
                    origin: origin_of(&key),
                    key,
                    reason,
                }
            })?;
        config.validate(&origin_of)?;
        // A relative data_dir from the file (or the default, when a file is given) lives
        // beside the file: starting from another directory must not create a second, empty
        // instance. From the environment (or with no file) it follows the working directory,
        // as a shell would.
        let data_dir_from_env = env_keys.iter().any(|(key, _)| key == "data_dir");
        let base = match file {
            Some(path) if !data_dir_from_env => path.parent().unwrap_or(Path::new("")),
            _ => Path::new(""),
        };
        config.data_dir = std::path::absolute(base.join(&config.data_dir)).map_err(|err| {
            ConfigError::Invalid {
                key: "data_dir".into(),
                origin: origin_of("data_dir"),
                reason: format!("cannot be made absolute: {err}"),
            }
        })?;
        Ok(config)
    }

    fn validate(&self, origin_of: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        self.validate_addresses()
            .and_then(|()| self.validate_limits())
            .and_then(|()| self.validate_submitter())
            .and_then(|()| self.validate_reconciler_and_budget())
            .and_then(|()| {
                let largest_body_bytes = self.body_limit_bytes.max(self.virtuous_body_limit_bytes);
                self.ingress.validate(largest_body_bytes as u64)
            })
            .and_then(|()| self.alerts.validate())
            .and_then(|()| self.sandbox.validate())
            .map_err(|(key, reason)| ConfigError::Invalid {
                key: key.to_string(),
                origin: origin_of(key),
                reason,
            })
    }

    /// `data_dir`, the listeners and `public_url`; `Err((key, reason))` names the bad key.
    fn validate_addresses(&self) -> Result<(), (&'static str, String)> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(("data_dir", "must not be empty".into()));
        }
        self.listeners()?;
        let public_url_is_valid = self.public_url.is_empty()
            || self.public_url.starts_with("https://")
            || self.public_url.starts_with("http://");
        if !public_url_is_valid {
            return Err(("public_url", "must start with https:// or http://".into()));
        }
        Ok(())
    }

    /// Values that must be positive, and the store and runtime bounds.
    fn validate_limits(&self) -> Result<(), (&'static str, String)> {
        let positive: [(&'static str, u64); 10] = [
            ("backfill.max_file_bytes", self.backfill.max_file_bytes),
            ("shutdown_deadline_s", self.shutdown_deadline_s),
            ("body_limit_bytes", self.body_limit_bytes as u64),
            (
                "virtuous_body_limit_bytes",
                self.virtuous_body_limit_bytes as u64,
            ),
            ("runtime.heartbeat_ms", self.runtime.heartbeat_ms),
            (
                "runtime.restart_backoff_initial_ms",
                self.runtime.restart_backoff_initial_ms,
            ),
            (
                "runtime.mailbox_capacity",
                self.runtime.mailbox_capacity as u64,
            ),
            (
                "virtuous.request_timeout_s",
                self.virtuous.request_timeout_s,
            ),
            ("budget.hourly_limit", self.budget.hourly_limit),
            ("budget.burst_calls", u64::from(self.budget.burst_calls)),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err((*key, "must be greater than 0".into()));
        }
        if self.store.cache_capacity_bytes < 1024 * 1024 {
            return Err((
                "store.cache_capacity_bytes",
                "must be at least 1 MiB (1048576)".into(),
            ));
        }
        if self.runtime.restart_backoff_max_ms < self.runtime.restart_backoff_initial_ms {
            return Err((
                "runtime.restart_backoff_max_ms",
                "must be at least runtime.restart_backoff_initial_ms".into(),
            ));
        }
        if self.runtime.arbiters > 1024 {
            return Err((
                "runtime.arbiters",
                "must be 0 (one per core) to 1024".into(),
            ));
        }
        Ok(())
    }

    /// `[submitter]`: batch size, retry schedule and jitter, lease timeout.
    fn validate_submitter(&self) -> Result<(), (&'static str, String)> {
        if self.submitter.batch_max == 0 || self.submitter.batch_max > 100 {
            return Err((
                "submitter.batch_max",
                "must be 1 to 100 (Virtuous takes at most 100 gift transactions a call)".into(),
            ));
        }
        if let Err(err) =
            steward_actors::retry::RetrySchedule::parse(&self.submitter.retry_schedule)
        {
            return Err(("submitter.retry_schedule", err.to_string()));
        }
        if self.submitter.retry_jitter_pct > 100 {
            return Err(("submitter.retry_jitter_pct", "must be 0 to 100".into()));
        }
        if self.submitter.lease_timeout_s <= self.virtuous.request_timeout_s {
            return Err((
                "submitter.lease_timeout_s",
                "must be greater than virtuous.request_timeout_s".into(),
            ));
        }
        Ok(())
    }

    /// `[reconciler]` and `[budget]`.
    fn validate_reconciler_and_budget(&self) -> Result<(), (&'static str, String)> {
        let reconciler_positive: [(&'static str, u64); 4] = [
            ("reconciler.interval_s", self.reconciler.interval_s),
            (
                "reconciler.needs_review_after_s",
                self.reconciler.needs_review_after_s,
            ),
            (
                "reconciler.query_take",
                u64::from(self.reconciler.query_take),
            ),
            (
                "reconciler.dedup_retention_days",
                self.reconciler.dedup_retention_days,
            ),
        ];
        if let Some((key, _)) = reconciler_positive.iter().find(|(_, value)| *value == 0) {
            return Err((*key, "must be greater than 0".into()));
        }
        if self.reconciler.query_take > 1_000 {
            return Err(("reconciler.query_take", "must be 1 to 1000".into()));
        }
        if self.budget.reserve_pct > 90 {
            return Err(("budget.reserve_pct", "must be 0 to 90".into()));
        }
        if self.budget.backfill_pct > 100 {
            return Err(("budget.backfill_pct", "must be 0 to 100".into()));
        }
        Ok(())
    }

    /// Parses the listen addresses; `Err((key, reason))` names the bad key.
    pub fn listeners(&self) -> Result<Listeners, (&'static str, String)> {
        let parse =
            |key: &'static str, value: &str| -> Result<SocketAddr, (&'static str, String)> {
                value.parse().map_err(|_| {
                    (
                        key,
                        format!("`{value}` is not an address like 127.0.0.1:8080"),
                    )
                })
            };
        let main = parse("listen", &self.listen)?;
        let admin = match self.admin_listen.as_str() {
            ADMIN_LISTEN_SHARED => None,
            "" => {
                return Err((
                    "admin_listen",
                    format!(
                        "must not be empty: give an address like {DEFAULT_ADMIN_LISTEN} (port 0 \
                         allowed), or \"{ADMIN_LISTEN_SHARED}\" to serve /v1 and /metrics on `listen`"
                    ),
                ))
            }
            address => Some(parse("admin_listen", address)?),
        };
        let sandbox = parse("sandbox.listen", &self.sandbox.listen)?;
        Ok(Listeners {
            main,
            admin,
            sandbox,
        })
    }

    pub fn arbiter_count(&self) -> usize {
        if self.runtime.arbiters > 0 {
            return self.runtime.arbiters;
        }
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    }
}

/// A deserialisation message in words an operator reads: serde's `invalid type: string "abc",
/// expected u8` becomes `got "abc", expected a whole number from 0 to 255`.
fn in_words(message: &str) -> String {
    const TYPE_WORDS: [(&str, &str); 10] = [
        ("expected u8", "expected a whole number from 0 to 255"),
        ("expected u16", "expected a whole number from 0 to 65535"),
        (
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        ),
        ("expected u64", "expected a whole number (0 or more)"),
        ("expected usize", "expected a whole number (0 or more)"),
        ("expected a boolean", "expected true or false"),
        ("expected a string", "expected text in quotes"),
        (
            "expected a sequence",
            "expected a list like [\"10s\", \"1m\"]",
        ),
        ("expected a map", "expected a section"),
        ("expected struct ", "expected a section "),
    ];
    let message = message.trim();
    let mut words = match message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "))
    {
        // `integer `300`` → `300`; the value's own kind is said by the value.
        Some(rest) => {
            let rest = rest.replace('`', "");
            let value = [
                ("string ", "the text "),
                ("integer ", ""),
                ("floating point ", ""),
                ("boolean ", ""),
                ("sequence", "a list"),
                ("map", "a section"),
            ]
            .iter()
            .find_map(|(kind, said)| rest.strip_prefix(kind).map(|tail| format!("{said}{tail}")))
            .unwrap_or(rest);
            format!("got {value}")
        }
        None => message.to_string(),
    };
    for (rust, plain) in TYPE_WORDS {
        words = words.replace(rust, plain);
    }
    words
}

/// `STEWARD_BUDGET__RESERVE_PCT` → `["budget", "reserve_pct"]`; `None` for variables that are
/// not configuration keys.
fn env_var_key_path(name: &str) -> Option<Vec<String>> {
    let rest = name.strip_prefix("STEWARD_")?;
    if NON_CONFIG_ENV_VARS.contains(&name)
        || NON_CONFIG_ENV_PREFIXES.iter().any(|p| name.starts_with(p))
    {
        return None;
    }
    Some(
        rest.split("__")
            .map(|part| part.to_ascii_lowercase())
            .collect(),
    )
}

/// Environment values are TOML literals when they parse as one (`5`, `true`, `["10s"]`),
/// strings otherwise (`127.0.0.1:8080`, `/var/lib/steward`).
fn parse_env_value(raw: &str) -> toml::Value {
    let literal = format!("value = {raw}");
    match toml::from_str::<toml::Table>(&literal) {
        Ok(mut table) => table
            .remove("value")
            .unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let (last, parents) = path.split_last().ok_or_else(|| "empty key".to_string())?;
    let mut current = table;
    for part in parents {
        let entry = current
            .entry(part.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{part}` is not a section"))?;
    }
    current.insert(last.clone(), value);
    Ok(())
}

mod alerts;
mod ingress;
pub use alerts::{AlertSinkConfig, AlertSinkKind, AlertsSection};
pub use ingress::IngressSection;

#[cfg(test)]
mod tests;
