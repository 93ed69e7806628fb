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
            ("STEWARD_GIT_REVISION", "0123456789ab"),
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
fn admin_listen_is_its_own_loopback_listener_unless_shared() {
    // Goal: by default /v1 and /metrics get their own listener on 127.0.0.1:8081; port 0 is
    // allowed; "shared" is the explicit opt-in to one listener; an empty value is refused
    // with a message that points at "shared".
    let config = Config::load(None, Vec::new()).unwrap();
    assert_eq!(config.admin_listen, "127.0.0.1:8081");
    assert_eq!(
        config.listeners().unwrap().admin,
        Some("127.0.0.1:8081".parse().unwrap())
    );
    let config = Config::load(None, env(&[("STEWARD_ADMIN_LISTEN", "127.0.0.1:0")])).unwrap();
    assert!(config.listeners().unwrap().admin.is_some());
    let config = Config::load(None, env(&[("STEWARD_ADMIN_LISTEN", "shared")])).unwrap();
    assert!(config.listeners().unwrap().admin.is_none());
    let err = Config::load(None, env(&[("STEWARD_ADMIN_LISTEN", "")]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("admin_listen") && err.contains("\"shared\""),
        "{err}"
    );
}

#[test]
fn sandbox_auto_process_after_ms_is_validated_by_name() {
    // Goal: `[sandbox] auto_process_after_ms` defaults to 2000 (with the webhooks to the engine
    // on), takes 0 (off) to a day, and names itself and its origin when out of range.
    let defaults = Config::default().sandbox;
    assert_eq!(defaults.auto_process_after_ms, 2_000);
    assert!(defaults.webhooks_to_engine);
    assert!(defaults.keep_organizations);
    let config = Config::load(
        None,
        env(&[
            ("STEWARD_SANDBOX__AUTO_PROCESS_AFTER_MS", "0"),
            ("STEWARD_SANDBOX__WEBHOOKS_TO_ENGINE", "false"),
        ]),
    )
    .unwrap();
    assert_eq!(config.sandbox.auto_process_after_ms, 0);
    assert!(!config.sandbox.webhooks_to_engine);
    let file = write_config("[sandbox]\nauto_process_after_ms = 86400001\n");
    let err = Config::load(Some(file.path()), Vec::new())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sandbox.auto_process_after_ms")
            && err.contains(&file.path().display().to_string())
            && err.contains("a day"),
        "{err}"
    );
    let err = Config::load(
        None,
        env(&[("STEWARD_SANDBOX__AUTO_PROCESS_AFTER_MS", "-1")]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("STEWARD_SANDBOX__AUTO_PROCESS_AFTER_MS"),
        "{err}"
    );
}

#[test]
fn an_unknown_section_from_the_environment_names_the_variable() {
    // Goal: a misspelt section in a variable name (BUGDET) blames that variable, not the
    // file or the built-in defaults.
    let err = Config::load(None, env(&[("STEWARD_BUGDET__RESERVE_PCT", "5")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("STEWARD_BUGDET__RESERVE_PCT"), "{err}");
}

#[test]
fn type_errors_from_the_environment_name_the_variable_in_words() {
    // Goal: a value of the wrong type or range from an environment variable names the
    // variable and the key, and says what is expected in words, not Rust type names.
    for (value, shown) in [("abc", "abc"), ("300", "300"), ("-1", "-1"), ("1.5", "1.5")] {
        let err = Config::load(None, env(&[("STEWARD_BUDGET__RESERVE_PCT", value)]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("STEWARD_BUDGET__RESERVE_PCT") && err.contains("budget.reserve_pct"),
            "{value}: {err}"
        );
        assert!(
            err.contains("a whole number from 0 to 255") && err.contains(shown),
            "{value}: {err}"
        );
        assert!(!err.contains("u8"), "{value}: {err}");
    }
    let err = Config::load(None, env(&[("STEWARD_RUNTIME__MAILBOX_CAPACITY", "lots")]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("STEWARD_RUNTIME__MAILBOX_CAPACITY")
            && err.contains("a whole number")
            && !err.contains("usize"),
        "{err}"
    );
    let err = Config::load(None, env(&[("STEWARD_SANDBOX__EMBEDDED", "yes")]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("STEWARD_SANDBOX__EMBEDDED") && err.contains("true or false"),
        "{err}"
    );
    // From the file: the file is named, and the words are the same.
    let file = write_config("[budget]\nreserve_pct = \"ten\"\n");
    let err = Config::load(Some(file.path()), Vec::new())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&file.path().display().to_string())
            && err.contains("budget.reserve_pct")
            && err.contains("a whole number from 0 to 255"),
        "{err}"
    );
}

#[test]
fn relative_data_dir_is_resolved_against_the_config_file() {
    // Goal: a relative data_dir from the file (or the default, when a file is given) lives
    // beside the file, whatever the working directory; from the environment or without a
    // file it is relative to the working directory; the result is always absolute.
    let dir = tempfile::tempdir().unwrap();
    let conf_dir = dir.path().join("conf");
    std::fs::create_dir_all(&conf_dir).unwrap();
    let path = conf_dir.join("steward.toml");
    std::fs::write(&path, "data_dir = \"./data\"\n").unwrap();
    let config = Config::load(Some(&path), Vec::new()).unwrap();
    assert_eq!(config.data_dir, conf_dir.join("data"));
    std::fs::write(&path, "listen = \"127.0.0.1:8080\"\n").unwrap();
    let config = Config::load(Some(&path), Vec::new()).unwrap();
    assert_eq!(config.data_dir, conf_dir.join("steward-data"));
    let working_dir = std::env::current_dir().unwrap();
    let config = Config::load(Some(&path), env(&[("STEWARD_DATA_DIR", "here")])).unwrap();
    assert_eq!(config.data_dir, working_dir.join("here"));
    let config = Config::load(None, Vec::new()).unwrap();
    assert_eq!(config.data_dir, working_dir.join("steward-data"));
    let config = Config::load(Some(&path), env(&[("STEWARD_DATA_DIR", "/srv/x")])).unwrap();
    assert_eq!(config.data_dir, PathBuf::from("/srv/x"));
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

#[test]
fn alert_sinks_are_read_and_each_problem_names_its_key() {
    // Goal: `[[alerts.sinks]]` tables load (webhook with its secret, slack with codes); an
    // unknown kind, a bad URL, a webhook without a secret, a weak secret and an unknown
    // code each stop start-up naming the sink's key and the file — never the secret.
    let file = write_config(
        "[alerts]\ncooldown_s = 60\n\n[[alerts.sinks]]\nkind = \"webhook\"\nurl = \"https://ops.example.org/h\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n\n[[alerts.sinks]]\nkind = \"slack\"\nurl = \"https://hooks.slack.com/services/T/B/X\"\ncodes = [\"crm_unreachable\", \"disk_nearly_full\"]\n",
    );
    let config = Config::load(Some(file.path()), Vec::new()).unwrap();
    let sinks = &config.alerts.sinks;
    assert_eq!((sinks.len(), config.alerts.cooldown_s), (2, 60));
    assert_eq!(
        (sinks[0].kind, sinks[1].kind),
        (AlertSinkKind::Webhook, AlertSinkKind::Slack)
    );
    assert!(
        !format!("{config:?}").contains("MfKQ9r8"),
        "Debug redacts the secret"
    );
    let cases = [
        (
            "kind = \"pager\"\nurl = \"https://x.org\"",
            "alerts.sinks[0].kind",
            "pager",
        ),
        (
            "kind = \"slack\"\nurl = \"ftp://x.org\"",
            "alerts.sinks[0].url",
            "http",
        ),
        (
            "kind = \"webhook\"\nurl = \"https://x.org\"",
            "alerts.sinks[0].secret",
            "required",
        ),
        (
            "kind = \"webhook\"\nurl = \"https://x.org\"\nsecret = \"short\"",
            "alerts.sinks[0].secret",
            "16",
        ),
        (
            "kind = \"slack\"\nurl = \"https://x.org\"\ncodes = [\"crm_unreachabel\"]",
            "alerts.sinks[0].codes",
            "crm_unreachabel",
        ),
    ];
    for (table, key, detail) in cases {
        let file = write_config(&format!("[[alerts.sinks]]\n{table}\n"));
        let err = Config::load(Some(file.path()), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains(key) && err.contains(detail), "{table}: {err}");
        assert!(err.contains(&file.path().display().to_string()), "{err}");
        assert!(!err.contains("short\""), "{err}");
    }
    let from_env = Config::load(
        None,
        env(&[(
            "STEWARD_ALERTS__SINKS",
            r#"[{kind = "slack", url = "https://hooks.slack.com/x"}]"#,
        )]),
    )
    .unwrap();
    assert_eq!(from_env.alerts.sinks.len(), 1);
}
