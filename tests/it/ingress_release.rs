//! With a working submitter: a held subscription payment is not sent during its hold, and
//! once its link completes it reaches Virtuous (the sandbox) at once, once, as a recurring gift.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use crate::common::{tenant_body, wait_until, SpawnOptions, TestApp};
use crate::ingress_subscription::subscription_events;
use crate::ingress_support::{post_stripe, stripe_secret};

const TENANT: &str = "ing-release";

#[tokio::test]
async fn a_held_payment_is_sent_only_after_its_release_and_once() {
    // Goal: nothing reaches the sandbox while the payment is held; the release sends it within
    // seconds (not at the hold's end), once, with recurringGiftTransactionId and frequency.
    let app = TestApp::spawn(SpawnOptions::default()).await;
    app.create_tenant(&tenant_body(TENANT)).await;
    let sandbox = app.sandbox_url();
    let sandbox_json = |method: Method, route: &str| {
        let request = app
            .client
            .request(method, format!("{sandbox}/_sandbox/orgs/{TENANT}{route}"));
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let secret = stripe_secret(TENANT);
    let events = subscription_events("rel", true);
    let event = |name: &str| events.iter().find(|(n, _)| *n == name).unwrap().1.clone();

    let held = post_stripe(&app, TENANT, &secret, &event("pi")).await;
    assert_eq!(held.1["status"], "held", "{held:?}");
    // Capture counts the held entry like any entry it wrote.
    let status = app.status(TENANT).await;
    assert_eq!(
        status["actors"]["capture"]["observed"]["entries_queued"], 1,
        "{status}"
    );
    // A deliberate wait: long enough for a submitter that ignored the hold to send it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stats = sandbox_json(Method::GET, "/stats").await;
    assert_eq!(
        stats["transactions_received"], 0,
        "sent while held: {stats}"
    );

    assert_eq!(
        post_stripe(&app, TENANT, &secret, &event("inv")).await.1["status"],
        "linked"
    );
    let released = post_stripe(&app, TENANT, &secret, &event("inpay")).await;
    assert_eq!(released.1["released"], true, "{released:?}");
    // Well before the hold's end (120 s): the release wakes the submitter.
    wait_until(
        Duration::from_secs(20),
        "the released gift to be sent",
        || async {
            let stats = sandbox_json(Method::GET, "/stats").await;
            (stats["transactions_received"] == 1).then_some(())
        },
    )
    .await;
    let duplicate = post_stripe(&app, TENANT, &secret, &event("ch")).await;
    assert_eq!(duplicate.1["status"], "duplicate", "{duplicate:?}");

    let processed = sandbox_json(Method::POST, "/process").await;
    assert_eq!(processed["imported"], 1, "{processed}");
    let gifts = sandbox_json(Method::GET, "/gifts").await;
    let gifts = gifts.as_array().unwrap();
    assert_eq!(gifts.len(), 1, "{gifts:?}");
    assert_eq!(gifts[0]["transactionId"], "pi_rel");
    assert_eq!(gifts[0]["recurringGiftTransactionId"], "sub_rel");
    assert_eq!(gifts[0]["frequency"], "Monthly");
    let stats = sandbox_json(Method::GET, "/stats").await;
    assert_eq!(stats["transactions_received"], 1, "{stats}");
}
