//! The admin URL and token lookup, and API errors read from answers.

use super::*;

fn data_dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, contents) in files {
        std::fs::write(dir.path().join(name), contents).unwrap();
    }
    dir
}

const LISTEN_ADDR: &str =
    r#"{"main": "127.0.0.1:8080", "admin": "127.0.0.1:43117", "sandbox": null}"#;

#[test]
fn the_url_comes_from_the_flag_then_the_environment_then_listen_addr() {
    // Goal: --url wins over STEWARD_ADMIN_URL, which wins over listen-addr's admin address;
    // a bare address gets http://, a trailing slash goes.
    let dir = data_dir_with(&[("listen-addr", LISTEN_ADDR)]);
    let from_env = Some("http://env.example:9000/".to_string());
    assert_eq!(
        admin_url(Some("10.0.0.5:8081"), from_env.clone(), dir.path()).unwrap(),
        "http://10.0.0.5:8081"
    );
    assert_eq!(
        admin_url(None, from_env, dir.path()).unwrap(),
        "http://env.example:9000"
    );
    assert_eq!(
        admin_url(None, None, dir.path()).unwrap(),
        "http://127.0.0.1:43117"
    );
}

#[test]
fn a_shared_admin_listener_is_the_main_address() {
    // Goal: with `admin_listen = "shared"` listen-addr has no admin address: the main one.
    let dir = data_dir_with(&[(
        "listen-addr",
        r#"{"main": "127.0.0.1:8080", "admin": null, "sandbox": null}"#,
    )]);
    assert_eq!(
        admin_url(None, None, dir.path()).unwrap(),
        "http://127.0.0.1:8080"
    );
}

#[test]
fn without_a_url_the_error_says_where_it_looked() {
    // Goal: no flag, no variable, no listen-addr → an error naming all three.
    let dir = data_dir_with(&[]);
    let error = admin_url(None, Some("  ".into()), dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("--url") && error.contains(ADMIN_URL_ENV) && error.contains("listen-addr"),
        "{error}"
    );
}

#[test]
fn the_token_comes_from_the_environment_then_the_file() {
    // Goal: STEWARD_ADMIN_TOKEN wins; else admin-token, trimmed; neither → an error naming
    // both.
    let dir = data_dir_with(&[("admin-token", "file-token-0123456789\n")]);
    assert_eq!(
        admin_token(Some("env-token-0123456789".into()), dir.path()).unwrap(),
        "env-token-0123456789"
    );
    assert_eq!(
        admin_token(None, dir.path()).unwrap(),
        "file-token-0123456789"
    );
    let empty = data_dir_with(&[]);
    let error = admin_token(None, empty.path()).unwrap_err().to_string();
    assert!(
        error.contains(ADMIN_TOKEN_ENV) && error.contains("admin-token"),
        "{error}"
    );
}

#[test]
fn api_errors_keep_their_code_and_message() {
    // Goal: the JSON error shape gives code and message; any other body its status and text.
    let error = api_error(
        409,
        r#"{"error": {"code": "invalid_transition", "message": "cannot start"}}"#,
    );
    assert_eq!(error.to_string(), "invalid_transition: cannot start");
    let raw = api_error(502, "Bad Gateway");
    assert_eq!(raw.to_string(), "http_502: Bad Gateway");
}

#[test]
fn path_segments_are_percent_encoded() {
    // Goal: a space is %20 (not `+`), a slash cannot split the path, unreserved bytes stay.
    assert_eq!(super::path_segment("a b/c"), "a%20b%2Fc");
    assert_eq!(super::path_segment("pi_1-x.y~z"), "pi_1-x.y~z");
    assert_eq!(super::path_segment("é"), "%C3%A9");
}
