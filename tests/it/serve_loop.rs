//! Goal: `steward serve` with the embedded sandbox closes the loop on its own (issue 17 part
//! 6): a Stripe payment becomes a `confirmed` record within seconds with nobody calling the
//! sandbox's import step or a reconciliation pass, and a restart on the same data dir keeps
//! the simulated organization (gifts and all) while new gifts keep confirming.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{
    at_timeout, serve_command, serve_once, wait_until, Served, SpawnOptions, TestApp,
};
use crate::ingress_support::{one_time_charge, post_stripe, stripe_event, BASIL};
use crate::push_e2e::gift_ids;

const STRIPE_SECRET: &str = "whsec_serve_loop";
/// Well within "seconds": the organization imports 300 ms after arrival, its webhook comes
/// straight back to the engine.
const CONFIRMED_WITHIN: Duration = Duration::from_secs(15);

/// `serve`'s own defaults for the embedded sandbox, with a shorter import delay.
fn serve_loop_options() -> SpawnOptions {
    SpawnOptions {
        env: vec![
            (
                "STEWARD_SANDBOX__AUTO_PROCESS_AFTER_MS".into(),
                "300".into(),
            ),
            ("STEWARD_SANDBOX__WEBHOOKS_TO_ENGINE".into(), "true".into()),
            ("STEWARD_SANDBOX__KEEP_ORGANIZATIONS".into(), "true".into()),
        ],
        ..SpawnOptions::default()
    }
}

/// Waits until the tenant's Virtuous webhook is registered on the engine's current listener
/// (about a second after the tenant starts: one budget interval). A gift imported before
/// that has no webhook to come back by; the reconciler's pass confirms it instead.
async fn wait_for_webhook_here(app: &TestApp) {
    let url = format!("{}/hooks/loop/virtuous", app.main_url);
    wait_until(
        CONFIRMED_WITHIN,
        format!("the webhook registered at {url}"),
        || async {
            let status = app.status("loop").await;
            let registered = &status["actors"]["inbound"]["observed"]["subscription"]["url"];
            (registered == url.as_str()).then_some(())
        },
    )
    .await;
}

/// Posts a signed `charge.succeeded` of PaymentIntent `pi_{n}` and waits for its record to
/// be `confirmed`; answers the record.
async fn pay_and_see_confirmed(app: &TestApp, n: &str) -> Value {
    let event = stripe_event(
        &format!("evt_{n}"),
        "charge.succeeded",
        BASIL,
        one_time_charge(n, 2_500),
    );
    let (code, body) = post_stripe(app, "loop", STRIPE_SECRET, &event).await;
    assert_eq!(code, 202, "{body}");
    let path = format!("/v1/tenants/loop/records/gift/stripe/pi_{n}");
    let what = at_timeout(|| format!("pi_{n} confirmed; the log:\n{}", app.log()));
    wait_until(CONFIRMED_WITHIN, what, || async {
        let (status, record) = app.admin_call(Method::GET, &path, None).await;
        (status == 200 && record["state"] == "confirmed").then_some(record)
    })
    .await
}

/// One gift for each of `transaction_ids` (the shape of `push_e2e::gift_ids`).
fn one_each(transaction_ids: &[&str]) -> BTreeMap<String, usize> {
    transaction_ids
        .iter()
        .map(|id| (id.to_string(), 1))
        .collect()
}

#[actix_rt::test]
async fn a_payment_confirms_by_itself_and_a_restart_keeps_the_organization() {
    // Goal: no manual import, no reconciliation pass (its interval is the default hour): the
    // embedded organization imports by itself and its webhook confirms the record; after a
    // restart the organization still holds the gift, the record stays confirmed, and a new
    // payment confirms too.
    let mut app = TestApp::spawn(serve_loop_options()).await;
    // No webhook secret and no public_url: the engine gives the tenant a secret and
    // registers its own listener.
    let created = app
        .create_tenant(&json!({
            "id": "loop", "name": "Loop",
            "virtuous": {"base_url": "embedded", "api_key": "vk-serve-loop"},
            "sources": {"stripe": {"signing_secret": STRIPE_SECRET, "accept_test_events": true}}
        }))
        .await;
    assert_eq!(
        created["virtuous"]["webhook_secret"], "[redacted]",
        "{created}"
    );
    wait_for_webhook_here(&app).await;

    let record = pay_and_see_confirmed(&app, "first").await;
    assert!(record["virtuous_id"].as_str().is_some(), "{record}");
    let status = app.status("loop").await;
    assert_eq!(status["counts"]["confirmed"], 1, "{status}");
    assert_eq!(gift_ids(&app, "loop").await, one_each(&["pi_first"]));
    let kept = app.data_dir().join("sandbox/virtuous/loop.json");
    // Written a moment after the import (changes are written together).
    let kept_text = wait_until(CONFIRMED_WITHIN, "the gift written to disk", || async {
        let text = std::fs::read_to_string(&kept).ok()?;
        text.contains("pi_first").then_some(text)
    })
    .await;
    assert!(
        !kept_text.contains("vk-serve-loop"),
        "the api key is never written"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&kept).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "private to its user: {mode:o}");

    let (exit, _) = app.terminate();
    assert!(exit.success(), "{exit}");
    app.start().await;
    assert_eq!(
        gift_ids(&app, "loop").await,
        one_each(&["pi_first"]),
        "the organization came back with its gift"
    );
    let (_, record) = app
        .admin_call(
            Method::GET,
            "/v1/tenants/loop/records/gift/stripe/pi_first",
            None,
        )
        .await;
    assert_eq!(record["state"], "confirmed", "{record}");

    // The engine listens on a new port now: the webhook follows it.
    wait_for_webhook_here(&app).await;
    let record = pay_and_see_confirmed(&app, "second").await;
    assert!(record["virtuous_id"].as_str().is_some(), "{record}");
    assert_eq!(
        gift_ids(&app, "loop").await,
        one_each(&["pi_first", "pi_second"])
    );
    let status = app.status("loop").await;
    assert_eq!(status["counts"]["confirmed"], 2, "{status}");
}

#[test]
fn a_kept_organization_that_cannot_be_read_refuses_to_start() {
    // Goal: a damaged file in `{data_dir}/sandbox/` stops `serve` with a message naming it —
    // never a silently empty simulated CRM — and the file is left as it was.
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let orgs_dir = data_dir.join("sandbox/virtuous");
    std::fs::create_dir_all(&orgs_dir).unwrap();
    let damaged = orgs_dir.join("loop.json");
    std::fs::write(&damaged, b"{\"format_version\": 1, \"spec\": {").unwrap();
    let mut command = serve_command(&data_dir);
    command.env("STEWARD_SANDBOX__KEEP_ORGANIZATIONS", "true");
    let served = serve_once(
        command,
        &dir.path().join("steward.log"),
        &data_dir.join("listen-addr"),
    );
    let (status, printed) = match served {
        Served::Exited(status, printed) => (status, printed),
        Served::Started(printed) => panic!("steward started:\n{printed}"),
    };
    assert!(!status.success(), "{status}:\n{printed}");
    assert!(
        printed.contains(&damaged.display().to_string()) && printed.contains("cannot be read"),
        "{printed}"
    );
    assert_eq!(
        std::fs::read(&damaged).unwrap(),
        b"{\"format_version\": 1, \"spec\": {"
    );
}
