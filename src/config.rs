//! Steward's configuration: a TOML file plus `STEWARD_…` environment overrides.
//!
//! Fails fast: unknown keys are rejected and every value is validated at start, with an
//! error that names the key and where it came from (the file or the environment variable).
//! `config.example.toml` documents every key with its default; `default_config_is_documented`
//! keeps the two in step.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Environment variables with the `STEWARD_` prefix that are not configuration keys.
const NON_CONFIG_ENV_VARS: [&str; 4] = [
    "STEWARD_ADMIN_TOKEN",
    "STEWARD_MASTER_KEY",
    "STEWARD_LOG",
    // Crash points for the crash tests (actors/src/failpoint.rs); read by `serve`.
    "STEWARD_FAILPOINTS",
];
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
    /// Where the store, the master key file and the generated admin token live.
    pub data_dir: PathBuf,
    /// Ingress (`/hooks`), health and — unless `admin_listen` is set — `/v1` and `/metrics`.
    pub listen: String,
    /// Optional separate address for `/v1` and `/metrics`; empty = the main listener.
    pub admin_listen: String,
    /// The address sources reach Steward at (for ingress URLs in the tenant status).
    pub public_url: String,
    /// Seconds a graceful shutdown may take before the process exits anyway.
    pub shutdown_deadline_s: u64,
    /// Largest accepted request body, in bytes.
    pub body_limit_bytes: usize,
    /// Largest accepted body on `/hooks/{tenant}/virtuous` (bulk deliveries are large).
    pub virtuous_body_limit_bytes: usize,
    pub store: StoreSection,
    pub runtime: RuntimeSection,
    pub virtuous: VirtuousSection,
    pub budget: BudgetSection,
    pub submitter: SubmitterSection,
    pub reconciler: ReconcilerSection,
    pub sandbox: SandboxSection,
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
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxSection {
    /// Start a Virtuous simulator inside the process (demos and development only).
    pub embedded: bool,
    pub listen: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./steward-data"),
            listen: "127.0.0.1:8080".into(),
            admin_listen: String::new(),
            public_url: String::new(),
            shutdown_deadline_s: 10,
            body_limit_bytes: 1024 * 1024,
            virtuous_body_limit_bytes: 8 * 1024 * 1024,
            store: StoreSection::default(),
            runtime: RuntimeSection::default(),
            virtuous: VirtuousSection::default(),
            budget: BudgetSection::default(),
            submitter: SubmitterSection::default(),
            reconciler: ReconcilerSection::default(),
            sandbox: SandboxSection::default(),
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
                .find(|(env_key, _)| env_key == key || key.starts_with(&format!("{env_key}.")))
                .map(|(_, name)| format!("environment variable {name}"))
                .unwrap_or_else(|| file_origin.clone())
        };
        let config: Config = Config::deserialize(toml::Value::Table(table)).map_err(|err| {
            let origin = if env_keys.is_empty() {
                file_origin.clone()
            } else {
                format!("{file_origin} with environment overrides")
            };
            ConfigError::Parse {
                origin,
                reason: err.to_string().trim().to_string(),
            }
        })?;
        config.validate(&origin_of)?;
        Ok(config)
    }

    fn validate(&self, origin_of: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            key: key.to_string(),
            origin: origin_of(key),
            reason,
        };
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty".into()));
        }
        self.listeners()
            .map_err(|(key, reason)| invalid(key, reason))?;
        let public_url_is_valid = self.public_url.is_empty()
            || self.public_url.starts_with("https://")
            || self.public_url.starts_with("http://");
        if !public_url_is_valid {
            return Err(invalid(
                "public_url",
                "must start with https:// or http://".into(),
            ));
        }
        let positive: [(&str, u64); 9] = [
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
            return Err(invalid(key, "must be greater than 0".into()));
        }
        if self.store.cache_capacity_bytes < 1024 * 1024 {
            return Err(invalid(
                "store.cache_capacity_bytes",
                "must be at least 1 MiB (1048576)".into(),
            ));
        }
        if self.runtime.restart_backoff_max_ms < self.runtime.restart_backoff_initial_ms {
            return Err(invalid(
                "runtime.restart_backoff_max_ms",
                "must be at least runtime.restart_backoff_initial_ms".into(),
            ));
        }
        if self.runtime.arbiters > 1024 {
            return Err(invalid(
                "runtime.arbiters",
                "must be 0 (one per core) to 1024".into(),
            ));
        }
        if self.submitter.batch_max == 0 || self.submitter.batch_max > 100 {
            return Err(invalid(
                "submitter.batch_max",
                "must be 1 to 100 (Virtuous takes at most 100 gift transactions a call)".into(),
            ));
        }
        if let Err(err) =
            steward_actors::retry::RetrySchedule::parse(&self.submitter.retry_schedule)
        {
            return Err(invalid("submitter.retry_schedule", err.to_string()));
        }
        if self.submitter.retry_jitter_pct > 100 {
            return Err(invalid(
                "submitter.retry_jitter_pct",
                "must be 0 to 100".into(),
            ));
        }
        if self.submitter.lease_timeout_s <= self.virtuous.request_timeout_s {
            return Err(invalid(
                "submitter.lease_timeout_s",
                "must be greater than virtuous.request_timeout_s".into(),
            ));
        }
        let reconciler_positive: [(&str, u64); 4] = [
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
            return Err(invalid(key, "must be greater than 0".into()));
        }
        if self.reconciler.query_take > 1_000 {
            return Err(invalid("reconciler.query_take", "must be 1 to 1000".into()));
        }
        if self.budget.reserve_pct > 90 {
            return Err(invalid("budget.reserve_pct", "must be 0 to 90".into()));
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
        let admin = if self.admin_listen.is_empty() {
            None
        } else {
            Some(parse("admin_listen", &self.admin_listen)?)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn write_config(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    #[test]
    fn example_config_loads_and_documents_every_default() {
        // Goal: config.example.toml parses, and every key it sets equals the built-in default
        // except the ones it deliberately changes for the embedded demo.
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
        let config = Config::load(Some(&path), Vec::new()).expect("example config loads");
        let defaults = Config::default();
        assert!(
            config.sandbox.embedded,
            "the example runs against the embedded sandbox"
        );
        assert_eq!(config.shutdown_deadline_s, defaults.shutdown_deadline_s);
        assert_eq!(config.store.cache_capacity_bytes, 256 * 1024 * 1024);
        assert_eq!(config.runtime.heartbeat_ms, 30_000);
        assert_eq!(config.virtuous.request_timeout_s, 30);
        assert_eq!(config.body_limit_bytes, 1024 * 1024);
        assert_eq!(config.virtuous_body_limit_bytes, 8 * 1024 * 1024);
        // Every key of the default config appears in the example file.
        let text = std::fs::read_to_string(&path).unwrap();
        let example: toml::Table = toml::from_str(&text).unwrap();
        let mut missing = Vec::new();
        collect_missing_keys(&default_as_table(), &example, "", &mut missing);
        assert!(
            missing.is_empty(),
            "keys missing from config.example.toml: {missing:?}"
        );
    }

    fn default_as_table() -> toml::Table {
        toml::Table::try_from(Config::default()).expect("the defaults serialise as TOML")
    }

    fn collect_missing_keys(
        expected: &toml::Table,
        actual: &toml::Table,
        prefix: &str,
        missing: &mut Vec<String>,
    ) {
        for (key, value) in expected {
            let full = format!("{prefix}{key}");
            match (value, actual.get(key)) {
                (toml::Value::Table(inner), Some(toml::Value::Table(actual_inner))) => {
                    collect_missing_keys(inner, actual_inner, &format!("{full}."), missing)
                }
                (_, None) => missing.push(full),
                _ => {}
            }
        }
    }

    #[test]
    fn unknown_key_is_rejected_with_file_and_key() {
        // Goal: a typo in the file fails start-up, naming the key and the file.
        let file = write_config("[budget]\nreserve_pcts = 5\n");
        let err = Config::load(Some(file.path()), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("reserve_pcts"), "{err}");
        assert!(err.contains(&file.path().display().to_string()), "{err}");
    }

    #[test]
    fn environment_overrides_nested_keys_and_shortcuts() {
        // Goal: STEWARD_SECTION__KEY overrides the file; STEWARD_DATA_DIR / STEWARD_LISTEN work.
        let file = write_config("[budget]\nreserve_pct = 10\n");
        let config = Config::load(
            Some(file.path()),
            env(&[
                ("STEWARD_BUDGET__RESERVE_PCT", "5"),
                ("STEWARD_DATA_DIR", "/tmp/steward-x"),
                ("STEWARD_LISTEN", "127.0.0.1:9999"),
                ("STEWARD_ADMIN_TOKEN", "not-a-config-key"),
                ("STEWARD_BENCH_SECONDS", "3"),
                ("PATH", "/usr/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(config.budget.reserve_pct, 5);
        assert_eq!(config.data_dir, PathBuf::from("/tmp/steward-x"));
        assert_eq!(config.listen, "127.0.0.1:9999");
    }

    #[test]
    fn unknown_environment_key_is_rejected() {
        // Goal: STEWARD_BUDGET__RESERVE is not silently ignored.
        let err = Config::load(None, env(&[("STEWARD_BUDGET__RESERVE", "5")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("reserve"), "{err}");
    }

    #[test]
    fn invalid_values_name_the_key_and_origin() {
        // Goal: each validation error names the key and where the value came from.
        let file = write_config("listen = \"not an address\"\n");
        let err = Config::load(Some(file.path()), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`listen`") && err.contains(&file.path().display().to_string()),
            "{err}"
        );
        let err = Config::load(None, env(&[("STEWARD_BUDGET__RESERVE_PCT", "95")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("budget.reserve_pct") && err.contains("STEWARD_BUDGET__RESERVE_PCT"),
            "{err}"
        );
        let err = Config::load(None, env(&[("STEWARD_RUNTIME__HEARTBEAT_MS", "0")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("runtime.heartbeat_ms"), "{err}");
        let err = Config::load(None, env(&[("STEWARD_BUDGET__HOURLY_LIMIT", "\"lots\"")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("hourly_limit"), "{err}");
    }

    #[test]
    fn admin_listen_is_optional() {
        // Goal: admin_listen empty → one listener; set → a separate validated address.
        let config = Config::load(None, Vec::new()).unwrap();
        assert!(config.listeners().unwrap().admin.is_none());
        let config = Config::load(None, env(&[("STEWARD_ADMIN_LISTEN", "127.0.0.1:0")])).unwrap();
        assert!(config.listeners().unwrap().admin.is_some());
    }
}
