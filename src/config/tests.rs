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

#[test]
fn alerts_crm_unreachable_after_is_validated_by_name() {
    // Goal: `[alerts] crm_unreachable_after` defaults to 5, takes 1–1000 and names itself when
    // out of range.
    assert_eq!(Config::default().alerts.crm_unreachable_after, 5);
    let config =
        Config::load(None, env(&[("STEWARD_ALERTS__CRM_UNREACHABLE_AFTER", "2")])).unwrap();
    assert_eq!(config.alerts.crm_unreachable_after, 2);
    for bad in ["0", "1001"] {
        let err = Config::load(None, env(&[("STEWARD_ALERTS__CRM_UNREACHABLE_AFTER", bad)]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("alerts.crm_unreachable_after")
                && err.contains("STEWARD_ALERTS__CRM_UNREACHABLE_AFTER"),
            "{err}"
        );
    }
}
