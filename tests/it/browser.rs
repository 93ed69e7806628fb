//! The dashboard (`/ui/`) in a real browser against the real binary: log in, find a tenant
//! among 1,000, open a dead letter, edit and replay it until its record is `submitted`, find
//! the record by email and read its timeline, acknowledge an alert; a screenshot of each page
//! in `target/screenshots/`.

use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{tenant_body, wait_until, SpawnOptions, TestApp};
use crate::webdriver::{browser_available, Browser};

/// The tenant the flow looks for, among [`FLEET_SIZE`] − 1 others.
const TENANT: &str = "harbor-light";
const FLEET_SIZE: usize = 1_000;
/// Concurrent creations: tenant creation holds the admin lock for its registry write, so
/// more in flight only queue behind it.
const CREATE_CONCURRENCY: usize = 16;
/// The synthetic gifts' contact email (`_test/enqueue`).
const DONOR_EMAIL: &str = "test@example.org";
/// The timeline of the replayed record (the first synthetic gift) among the email's records.
const REPLAYED_TIMELINE: &str = "article[data-record='synthetic:gift:gift-ui-0'] .timeline";

/// Creates the fleet through the admin API (the way an operator's tooling would): the
/// seconds it took.
async fn create_fleet(app: &TestApp) -> f64 {
    let started = Instant::now();
    let bodies = (0..FLEET_SIZE - 1).map(|index| {
        json!({"id": format!("org-{index:04}"), "name": format!("Organization {index:04}"),
               "virtuous": {"base_url": "embedded", "api_key": format!("vk-org-{index:04}-key")}})
    });
    let created: Vec<u16> = stream::iter(bodies)
        .map(|body| async move {
            let (status, _) = app
                .admin_call(Method::POST, "/v1/tenants", Some(body))
                .await;
            status
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .collect()
        .await;
    assert!(created.iter().all(|status| *status == 201), "{created:?}");
    app.create_tenant(&tenant_body(TENANT)).await;
    started.elapsed().as_secs_f64()
}

/// The tenant under test gets two dead letters (and the `dead_letters` alert): the flow
/// replays the first; the second keeps the alert open for the flow to acknowledge.
async fn dead_letter_two_gifts(app: &TestApp) {
    app.wait_ready().await;
    // Paused while the queue is arranged, so the submitter takes nothing meanwhile.
    let steps = [
        ("pause", 200),
        ("_test/enqueue?count=2&prefix=gift-ui-", 202),
        (
            "_test/dead-letter?count=2&status=422&reason=amount%20invalid",
            200,
        ),
        ("resume", 200),
    ];
    for (step, expected_status) in steps {
        let path = format!("/v1/tenants/{TENANT}/{step}");
        let (status, body) = app.admin_call(Method::POST, &path, None).await;
        assert_eq!(status, expected_status, "{step}: {body}");
    }
}

/// Replaces a form field's text by typing (what an operator does).
async fn retype(browser: &Browser, css: &str, text: &str) {
    let field = browser.wait_for(css).await;
    browser.clear(&field).await;
    browser.type_text(&field, text).await;
}

/// Types `body` into the dead letter's editor; the page's verdict on it (`#dl-check`).
async fn edit_body(browser: &Browser, body: &Value) -> String {
    let previous = browser
        .wait_for_text("#dl-check", Duration::from_secs(5), |_| true)
        .await;
    retype(
        browser,
        "#dl-body",
        &serde_json::to_string_pretty(body).unwrap(),
    )
    .await;
    browser
        .wait_for_text("#dl-check", Duration::from_secs(5), |text| text != previous)
        .await
}

#[actix_rt::test]
async fn an_operator_drives_the_dashboard_in_a_browser() {
    // Goal: the browser flow passes in Chromium against the real binary, and every
    // page it visits is saved as a screenshot.
    if !browser_available("an_operator_drives_the_dashboard_in_a_browser") {
        return;
    }
    let test_started = Instant::now();
    let app = TestApp::spawn(SpawnOptions::default()).await;
    let fleet_s = create_fleet(&app).await;
    eprintln!("browser: {FLEET_SIZE} tenants created in {fleet_s:.1} s");
    dead_letter_two_gifts(&app).await;
    let browser = Browser::start().await;

    // Log in: a wrong token shows the form again, the right one opens the fleet.
    browser.goto(&format!("{}/ui/", app.admin_url)).await;
    assert!(browser.current_url().await.ends_with("/ui/login"));
    retype(&browser, "#token", "not-the-token").await;
    browser.click_on("#login-submit").await;
    browser
        .wait_for_text("#login-error", Duration::from_secs(10), |text| {
            text.contains("not the admin token")
        })
        .await;
    browser.screenshot("login").await;
    retype(&browser, "#token", &app.admin_token).await;
    browser.click_on("#login-submit").await;
    browser
        .wait_for_text("#fleet-summary", Duration::from_secs(20), |text| {
            text.starts_with("1,000 tenants")
        })
        .await;
    assert_eq!(browser.count("#fleet-table tbody tr").await, 50, "one page");
    browser.screenshot("fleet").await;

    // Pages and sorting come from the server: Next, Previous, and id descending.
    browser.click_on("#fleet-next").await;
    browser
        .wait_for_text("#fleet-summary", Duration::from_secs(10), |text| {
            text.ends_with("page 2")
        })
        .await;
    browser.wait_for("tr[data-tenant='org-0049']").await;
    browser.click_on("#fleet-prev").await;
    browser
        .wait_for(&format!("tr[data-tenant='{TENANT}']"))
        .await;
    browser.click_on("button.sort[data-sort='id']").await;
    browser
        .wait_for_text("#fleet-table tbody tr", Duration::from_secs(10), |text| {
            text.starts_with("org-0998")
        })
        .await;

    // Find the tenant among 1,000 by filtering, and open it.
    retype(&browser, "#fleet-filter", "harbor").await;
    browser
        .wait_for_text("#fleet-summary", Duration::from_secs(10), |text| {
            text.starts_with("1 tenant matches")
        })
        .await;
    browser.screenshot("fleet-filtered").await;
    let link = browser
        .wait_for(&format!("tr[data-tenant='{TENANT}'] a.tenant-link"))
        .await;
    browser.click(&link).await;
    browser.wait_for("#lanes").await;
    browser
        .wait_for("tr[data-alert='dead_letters'] button.ack")
        .await;
    browser.screenshot("tenant").await;

    // Open its dead letter; the guard refuses an id edit; an amount edit replays and the
    // record is sent.
    browser.click_on("#open-dead-letters").await;
    browser
        .click(
            &browser
                .wait_for("tr[data-dead-letter='0'] a.dead-letter-link")
                .await,
        )
        .await;
    let editor = browser.wait_for("#dl-body").await;
    let shown = browser.value(&editor).await;
    assert!(shown.contains("\n  \"amount\""), "formatted JSON: {shown}");
    let mut body: Value = serde_json::from_str(&shown).unwrap();
    let mut id_changed = body.clone();
    id_changed["transactionId"] = json!("another-id");
    let check = edit_body(&browser, &id_changed).await;
    assert!(
        check.contains("idempotency guard: transactionId"),
        "{check}"
    );
    let replay = browser.wait_for("#dl-replay").await;
    assert!(
        !browser.is_enabled(&replay).await,
        "the guard disables Replay"
    );
    body["amount"] = json!("2.00");
    let check = edit_body(&browser, &body).await;
    assert!(check.starts_with("Edited"), "{check}");
    browser.screenshot("dead-letter").await;
    browser.click_on("#dl-replay").await;
    browser
        .wait_for_text("#dl-record-state", Duration::from_secs(60), |text| {
            text == "submitted"
        })
        .await;
    browser.screenshot("dead-letter-replayed").await;

    // Find the record by email and read its timeline.
    browser
        .goto(&format!("{}/ui/#/tenant/{TENANT}/records", app.admin_url))
        .await;
    retype(&browser, "#record-query", DONOR_EMAIL).await;
    browser.click_on("#record-search-submit").await;
    let timeline = browser
        .wait_for_text(REPLAYED_TIMELINE, Duration::from_secs(10), |text| {
            text.contains("submitted")
        })
        .await;
    for step in [
        "dead",
        "replayed by operator, edited",
        "pending → submitted",
    ] {
        assert!(
            timeline.contains(step),
            "{step} in the timeline:\n{timeline}"
        );
    }
    browser.screenshot("record-timeline").await;

    // Acknowledge the alert.
    browser
        .goto(&format!("{}/ui/#/tenant/{TENANT}", app.admin_url))
        .await;
    let ack = browser
        .wait_for("tr[data-alert='dead_letters'] button.ack")
        .await;
    browser.click(&ack).await;
    browser
        .wait_for_text(
            "tr[data-alert='dead_letters'] .alert-status",
            Duration::from_secs(10),
            |text| text.starts_with("acknowledged"),
        )
        .await;
    browser.screenshot("tenant-alert-acknowledged").await;
    let status = app.status(TENANT).await;
    let alert = crate::common::status_alert(&status, "dead_letters").unwrap();
    assert!(alert["acked_at"].is_string(), "{alert}");

    // The pages ran under their Content-Security-Policy without breaking it, and threw
    // nothing.
    let console = browser.console_messages().await;
    assert!(
        console
            .iter()
            .any(|message| message.contains("status of 401")),
        "the console was read: the wrong token's 401 is in it: {console:#?}"
    );
    assert!(
        !console
            .iter()
            .any(|message| message.contains("Content Security Policy")
                || message.contains("Uncaught")),
        "{console:#?}"
    );

    // Log out: the cookie no longer opens the page.
    browser.click_on("#logout").await;
    browser.wait_for("#login-submit").await;
    browser.goto(&format!("{}/ui/", app.admin_url)).await;
    wait_until(
        Duration::from_secs(5),
        "the login form after logout",
        || async {
            browser
                .current_url()
                .await
                .ends_with("/ui/login")
                .then_some(())
        },
    )
    .await;
    eprintln!(
        "browser: flow done in {:.1} s (fleet creation included)",
        test_started.elapsed().as_secs_f64()
    );
}
