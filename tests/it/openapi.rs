//! The admin API's OpenAPI document (`GET /v1/openapi.json`, docs/api.md) against the routes
//! the server really has, and schemathesis against a real `steward serve`.
//!
//! How the registered routes are enumerated: actix-web does not list the routes of a running
//! app, so the test reads them where they are registered — every `web::resource("…")` in
//! `src/http` (a literal, or a `const …_PATH` of the same files) with the
//! `web::get()`/`post()`/… routes that follow it up to the next resource. A second table of
//! routes kept for the check alone could drift from the registration just as the document
//! can; the source *is* the registration. To keep the scan honest in the other direction
//! too, every documented operation is called on the real server and must reach a handler
//! (not the scope's "no such admin route", nor `405`). Left out of the scan, each for a
//! reason: files serving other listeners or scopes (`ingress*`, `ops.rs`), unit-test code
//! (`#[cfg(test)]` and `tests.rs`), and `/_test/` routes — test hooks that answer 404 unless
//! `runtime.test_hooks` is on, which are no part of the contract.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;

use crate::common::{tenant_body, SpawnOptions, TestApp};

/// Files under `src/http` whose routes are not under `/v1` (other listeners or scopes).
const NOT_ADMIN_API: [&str; 4] = ["ingress.rs", "ingress/", "ops.rs", "ui/"];

/// The HTTP methods the admin API uses, as `web::{method}()` spells them.
const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// One route: upper-case method and the path as the document writes it (`/v1/…/{id}`).
type Route = (String, String);

fn rust_files_below(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files_below(&path));
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The text of a file without its unit tests (`#[cfg(test)]` to the end, by convention).
fn production_code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    match text.find("#[cfg(test)]") {
        Some(start) => text[..start].to_string(),
        None => text,
    }
}

/// `{conflict:.+}` → `{conflict}`: actix's regex segments as OpenAPI writes them.
fn document_path(actix_path: &str) -> String {
    let mut path = String::new();
    let mut in_regex = false;
    for character in actix_path.chars() {
        match character {
            ':' if path.ends_with(|c: char| c.is_alphanumeric() || c == '_')
                && path.rfind('{') > path.rfind('}') =>
            {
                in_regex = true
            }
            '}' => {
                in_regex = false;
                path.push('}');
            }
            _ if in_regex => {}
            _ => path.push(character),
        }
    }
    format!("/v1{path}")
}

/// The `/v1` routes registered in `src/http` (see the module comment), test hooks aside.
fn registered_admin_routes() -> BTreeSet<Route> {
    let http_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
    let sources: Vec<(String, String)> = rust_files_below(&http_dir)
        .iter()
        .map(|path| {
            let relative = path.strip_prefix(&http_dir).unwrap().display().to_string();
            (relative, production_code(path))
        })
        .filter(|(relative, _)| {
            !relative.ends_with("tests.rs")
                && !NOT_ADMIN_API
                    .iter()
                    .any(|excluded| relative.starts_with(excluded))
        })
        .collect();
    // `pub const PAIRS_PATH: &str = "/tenants/{id}/two-way";` and the like.
    let mut path_constants = BTreeMap::new();
    for (_, text) in &sources {
        for line in text.lines() {
            let Some((declaration, value)) = line.split_once(": &str = \"") else {
                continue;
            };
            let Some(name) = declaration.trim().rsplit(' ').next() else {
                continue;
            };
            if let Some(value) = value.strip_suffix("\";") {
                path_constants.insert(name.to_string(), value.to_string());
            }
        }
    }
    let mut routes = BTreeSet::new();
    for (relative, text) in &sources {
        let pieces: Vec<&str> = text.split("web::resource(").collect();
        for piece in &pieces[1..] {
            let argument = piece[..piece.find(')').unwrap()].trim();
            let actix_path = match argument.strip_prefix('"') {
                Some(literal) => literal.trim_end_matches('"').to_string(),
                None => path_constants
                    .get(argument)
                    .unwrap_or_else(|| panic!("{relative}: web::resource({argument}) is neither a literal nor a known path constant"))
                    .clone(),
            };
            // The resource's routes follow it up to the next registration or the function's end.
            let end = [".configure(", ".default_service(", "\n}"]
                .iter()
                .filter_map(|marker| piece.find(marker))
                .min()
                .unwrap_or(piece.len());
            let region = &piece[..end];
            let methods: Vec<&str> = METHODS
                .into_iter()
                .filter(|method| region.contains(&format!("web::{method}()")))
                .collect();
            assert!(
                !methods.is_empty(),
                "{relative}: no web::get()/post()/… route found for {actix_path}"
            );
            if actix_path.contains("/_test/") {
                continue;
            }
            for method in methods {
                routes.insert((method.to_uppercase(), document_path(&actix_path)));
            }
        }
    }
    routes
}

/// The (method, path) pairs of the document.
fn documented_routes(document: &Value) -> BTreeSet<Route> {
    let mut routes = BTreeSet::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in METHODS {
            if item.get(method).is_some() {
                routes.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    routes
}

async fn fetch_document(app: &TestApp) -> Value {
    let response = app
        .admin(Method::GET, "/v1/openapi.json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    response.json().await.unwrap()
}

#[test]
fn the_source_scan_finds_routes_the_way_they_are_written() {
    // Goal: the scan reads literals, path constants and regex segments; without this a
    // scan that silently found nothing would pass the coverage test below.
    let routes = registered_admin_routes();
    for expected in [
        ("POST", "/v1/tenants"),
        ("GET", "/v1/tenants"),
        ("DELETE", "/v1/tenants/{id}"),
        ("GET", "/v1/tenants/{id}/two-way"),
        ("POST", "/v1/tenants/{id}/conflicts/{conflict}/resolve"),
        (
            "GET",
            "/v1/tenants/{id}/two-way/{pair}/records/{partner_id}",
        ),
        ("PUT", "/v1/tenants/{id}/backfills/{backfill}/file"),
        ("GET", "/v1/openapi.json"),
    ] {
        let expected = (expected.0.to_string(), expected.1.to_string());
        assert!(routes.contains(&expected), "{expected:?} in {routes:#?}");
    }
    assert!(routes.iter().all(|(_, path)| !path.contains("_test")));
    assert!(routes.len() >= 40, "{routes:#?}");
}

#[actix_rt::test]
async fn the_document_lists_every_admin_route_with_its_security_and_errors() {
    // Goal: `GET /v1/openapi.json` (token required) is an OpenAPI 3.x document whose
    // operations are exactly the `/v1` routes registered in src/http, each with the bearer
    // token and at least one documented error answer; each documented operation reaches a
    // handler on the real server.
    let app = TestApp::spawn(SpawnOptions::default()).await;
    let without_token = app
        .client
        .get(format!("{}/v1/openapi.json", app.admin_url))
        .send()
        .await
        .unwrap();
    assert_eq!(without_token.status(), 401);
    let document = fetch_document(&app).await;
    let version = document["openapi"].as_str().unwrap_or_default();
    assert!(
        version.starts_with("3.1") || version.starts_with("3.0"),
        "{version}"
    );
    assert_eq!(
        document["components"]["securitySchemes"]["admin_token"]["scheme"],
        "bearer"
    );

    let documented = documented_routes(&document);
    let registered = registered_admin_routes();
    let undocumented: Vec<_> = registered.difference(&documented).collect();
    let not_registered: Vec<_> = documented.difference(&registered).collect();
    assert!(
        undocumented.is_empty(),
        "registered but missing from the document (add #[utoipa::path] and list it in src/http/openapi.rs): {undocumented:#?}"
    );
    assert!(
        not_registered.is_empty(),
        "documented but not registered: {not_registered:#?}"
    );

    let mut operation_ids = BTreeSet::new();
    for (method, path) in &documented {
        let id = document["paths"][path][method.to_lowercase()]["operationId"].as_str();
        assert!(
            operation_ids.insert(id.unwrap_or_default().to_string()),
            "{method} {path}: operationId {id:?} is missing or used twice"
        );
    }

    let error_codes: BTreeSet<&str> = document["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .expect("ErrorCode is an enum")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(error_codes.contains("unknown_tenant"), "{error_codes:?}");
    // docs/api.md tells every code (its table, or the ingress line under it).
    let api_doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/api.md")).unwrap();
    for code in &error_codes {
        assert!(
            api_doc.contains(&format!("`{code}`")),
            "docs/api.md does not tell the error code `{code}`"
        );
    }
    for (method, path) in &documented {
        let operation = &document["paths"][path][method.to_lowercase()];
        assert_eq!(
            operation["security"],
            serde_json::json!([{"admin_token": []}]),
            "{method} {path}"
        );
        let responses = operation["responses"].as_object().unwrap();
        assert!(
            responses
                .keys()
                .any(|status| status.starts_with('4') || status.starts_with('5')),
            "{method} {path} documents no error answer"
        );
        assert!(
            responses.keys().any(|status| status.starts_with('2')),
            "{method} {path} documents no success answer"
        );
        // Reaches a handler: path parameters filled with a tenant that does not exist.
        let concrete = path
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') {
                    "no-such-tenant"
                } else {
                    segment
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        let response = app
            .admin(Method::from_bytes(method.as_bytes()).unwrap(), &concrete)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        assert_ne!(status, 405, "{method} {concrete}: {text}");
        assert!(
            !text.contains("no such admin route") && !text.contains("no route for"),
            "{method} {concrete} reached no handler: {status} {text}"
        );
    }
    // Every example of an error answer carries a code of the enum.
    for (name, response) in document["components"]["responses"].as_object().unwrap() {
        let examples = response["content"]["application/json"]["examples"]
            .as_object()
            .unwrap_or_else(|| panic!("{name} has examples"));
        for example in examples.values() {
            let code = example["value"]["error"]["code"].as_str().unwrap();
            assert!(error_codes.contains(code), "{name}: {code}");
        }
    }
}

/// The schemathesis command named by `.ci/run` (`STEWARD_SCHEMATHESIS`), or `None` when the
/// run is skipped (never on CI).
fn schemathesis_command() -> Option<PathBuf> {
    match std::env::var_os("STEWARD_SCHEMATHESIS") {
        Some(path) => Some(PathBuf::from(path)),
        None => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but STEWARD_SCHEMATHESIS is not: .ci/run installs schemathesis and names it"
            );
            eprintln!(
                "skipped: STEWARD_SCHEMATHESIS is not set (.ci/run sets it; see docs/api.md)"
            );
            None
        }
    }
}

/// How many examples schemathesis tries per operation (its whole run stays near a minute).
const SCHEMATHESIS_EXAMPLES_MAX: &str = "15";
/// Fixed, so a failure found once is found again.
const SCHEMATHESIS_SEED: &str = "16";
/// A run that takes longer than this is killed and fails (it must never hang CI).
const SCHEMATHESIS_DEADLINE: Duration = Duration::from_secs(240);

#[actix_rt::test]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_document() {
    // Goal: schemathesis, fed the served document, calls every operation of a real
    // `steward serve` (test hooks off) with generated requests: no 5xx, no answer whose
    // status, content type or body the document does not allow.
    let Some(schemathesis) = schemathesis_command() else {
        return;
    };
    let app = TestApp::spawn(SpawnOptions {
        env: vec![("STEWARD_RUNTIME__TEST_HOOKS".into(), "false".into())],
        ..SpawnOptions::default()
    })
    .await;
    // The documents' examples name `hope` (the delete's and the export's name another), so
    // the examples phase reaches the handlers of a real, running tenant.
    app.create_tenant(&tenant_body("hope")).await;
    let started = Instant::now();
    let mut child = Command::new(&schemathesis)
        .arg("run")
        .arg(format!("{}/v1/openapi.json", app.admin_url))
        .args(["--header", &format!("Authorization: Bearer {}", app.admin_token)])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        ])
        .args(["--max-examples", SCHEMATHESIS_EXAMPLES_MAX])
        .args(["--seed", SCHEMATHESIS_SEED])
        .args(["--workers", "1"])
        .args(["--request-timeout", "20"])
        .args(["--generation-database", "none"])
        .arg("--no-color")
        .current_dir(app.dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start schemathesis");
    let (stdout, stderr) = {
        let mut stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let out = std::thread::spawn(move || {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut stdout, &mut text).unwrap();
            text
        });
        let err = std::thread::spawn(move || {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut stderr, &mut text).unwrap();
            text
        });
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > SCHEMATHESIS_DEADLINE {
                child.kill().unwrap();
                child.wait().unwrap();
                panic!(
                    "schemathesis ran past {SCHEMATHESIS_DEADLINE:?} and was killed; steward's log:\n{}",
                    app.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
        assert!(
            status.success(),
            "schemathesis found problems ({status}):\n{stdout}\n{stderr}\nsteward's log:\n{}",
            app.log()
        );
        (stdout, stderr)
    };
    eprintln!(
        "schemathesis passed in {:.1} s:\n{stdout}{stderr}",
        started.elapsed().as_secs_f64()
    );
}
