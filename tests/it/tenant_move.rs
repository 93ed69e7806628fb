//! Goal: issue 17 part 4 — a tenant moved between two instances under traffic: exported from
//! A (`moved` there: its webhooks get 503 + Retry-After, it never submits again there) and
//! imported into B, with the senders retrying until they reach B. Every acknowledged payment
//! becomes exactly one gift in the one Virtuous org both instances talk to (its duplicate
//! check off, so a second send would show), and the budget's call log moved with the tenant.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::common::{output_text, queued_total, steward_cli, wait_until, SpawnOptions, TestApp};
use crate::external_sandbox::{org_and_tenant_on, stripe_secret_of, ExternalSandbox};
use crate::ingress_support::{now_s, one_time_charge, stripe_event, BASIL};

const TENANT: &str = "mover";
const SENDERS: usize = 4;
const ACKS_BEFORE_EXPORT: usize = 120;
const ACKS_AFTER_IMPORT: usize = 80;
/// Both instances seal secrets with this key (instances that exchange tenants share one).
const MASTER_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

async fn instance() -> TestApp {
    TestApp::spawn(SpawnOptions {
        env: vec![("STEWARD_MASTER_KEY".into(), MASTER_KEY.into())],
        ..SpawnOptions::default()
    })
    .await
}

/// What the senders saw.
#[derive(Default)]
struct Seen {
    /// PaymentIntent ids answered 2xx.
    acknowledged: Vec<String>,
    /// 503 answers that said `moved`, and whether each had a Retry-After.
    moved_answers: usize,
    moved_without_retry_after: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_moves_under_traffic_losing_and_duplicating_nothing() {
    let sandbox = Arc::new(ExternalSandbox::start());
    let mut a = instance().await;
    let b = instance().await;
    org_and_tenant_on(
        &a,
        &sandbox,
        TENANT,
        360_000,
        json!({"dedup_transactions": false}),
    )
    .await;
    // Where the tenant's traffic is routed: A, then B once it is imported there.
    let target = Arc::new(RwLock::new(a.main_url.clone()));
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let acks = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let client = a.client.clone();
    let senders: Vec<_> = (0..SENDERS)
        .map(|sender| {
            let (target, seen, acks, stop, client) = (
                Arc::clone(&target),
                Arc::clone(&seen),
                Arc::clone(&acks),
                Arc::clone(&stop),
                client.clone(),
            );
            tokio::spawn(async move {
                let secret = stripe_secret_of(TENANT);
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let name = format!("mv_{sender}_{n}");
                    let event = stripe_event(
                        &format!("evt_{name}"),
                        "charge.succeeded",
                        BASIL,
                        one_time_charge(&name, 2000),
                    );
                    let body = event.to_string().into_bytes();
                    // Like Stripe: the same event again until it is acknowledged.
                    loop {
                        let url = format!("{}/hooks/{TENANT}/stripe", target.read().unwrap());
                        let signature =
                            steward::sources::stripe::sign_header(&secret, now_s(), &body);
                        let answer = client
                            .post(url)
                            .header("content-type", "application/json")
                            .header("Stripe-Signature", signature)
                            .body(body.clone())
                            .send()
                            .await
                            .unwrap();
                        let status = answer.status().as_u16();
                        if status == 202 || status == 200 {
                            seen.lock().unwrap().acknowledged.push(format!("pi_{name}"));
                            acks.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        let retry_after = answer.headers().get("retry-after").is_some();
                        let text = answer.text().await.unwrap_or_default();
                        assert_eq!(status, 503, "{text}");
                        if text.contains("\"moved\"") {
                            let mut seen = seen.lock().unwrap();
                            seen.moved_answers += 1;
                            seen.moved_without_retry_after += usize::from(!retry_after);
                        }
                        // Deliberate: a sender's pause before it tries again.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    n += 1;
                }
            })
        })
        .collect();
    wait_until(
        Duration::from_secs(60),
        "payments acknowledged by A",
        || async { (acks.load(Ordering::Relaxed) >= ACKS_BEFORE_EXPORT).then_some(()) },
    )
    .await;

    // Export from A while the senders keep going: from here A answers 503 `moved`.
    let file = a.dir.path().join("mover.stwd");
    let (a_admin, path) = (a.admin_url.clone(), file.clone());
    let exported = tokio::task::spawn_blocking(move || {
        steward_cli(&[
            "tenant",
            "export",
            TENANT,
            "--url",
            &a_admin,
            "--to",
            path.to_str().unwrap(),
        ])
    })
    .await
    .unwrap();
    assert!(exported.status.success(), "{}", output_text(&exported));
    let at_export = acks.load(Ordering::Relaxed);
    let a_status = a.status(TENANT).await;
    assert_eq!(a_status["state"], "moved", "{a_status}");

    // Import into B, then route the traffic there.
    let b_admin = b.admin_url.clone();
    let imported = tokio::task::spawn_blocking(move || {
        steward_cli(&[
            "tenant",
            "import",
            "--url",
            &b_admin,
            "--from",
            file.to_str().unwrap(),
        ])
    })
    .await
    .unwrap();
    assert!(imported.status.success(), "{}", output_text(&imported));
    let b_status = b.status(TENANT).await;
    assert!(
        b_status["budget"]["spent_last_hour"].as_u64().unwrap() > 0,
        "the budget's call log moved with the tenant: {b_status}"
    );
    *target.write().unwrap() = b.main_url.clone();
    wait_until(
        Duration::from_secs(60),
        "payments acknowledged by B",
        || async { (acks.load(Ordering::Relaxed) >= at_export + ACKS_AFTER_IMPORT).then_some(()) },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        sender.await.unwrap();
    }
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert!(seen.moved_answers > 0, "the senders met the move");
    assert_eq!(
        seen.moved_without_retry_after, 0,
        "every 503 moved has Retry-After"
    );

    // A never submits for the tenant again, and refuses to run it.
    let paused = a
        .admin(Method::POST, &format!("/v1/tenants/{TENANT}/resume"))
        .send()
        .await
        .unwrap();
    assert_eq!(paused.status(), 409);

    // Everything reaches the org once.
    wait_until(Duration::from_secs(60), "B's queue to drain", || async {
        (queued_total(&b.status(TENANT).await) == 0).then_some(())
    })
    .await;
    sandbox.process(TENANT).await;
    let gifts = sandbox.gifts_by_transaction(TENANT).await;
    let lost: Vec<&String> = seen
        .acknowledged
        .iter()
        .filter(|id| !gifts.contains_key(*id))
        .take(5)
        .collect();
    assert!(lost.is_empty(), "acknowledged but no gift: {lost:?}");
    let duplicated: Vec<_> = gifts.iter().filter(|(_, count)| **count > 1).collect();
    assert!(duplicated.is_empty(), "duplicate gifts: {duplicated:?}");
    assert_eq!(gifts.len(), seen.acknowledged.len());
    let a_log = a.log();
    assert!(
        !a_log.contains("tenant imported"),
        "A only exported the tenant"
    );
    // A runs no actor of the tenant any more: nothing there can submit; a restart keeps it so.
    let a_after = a.status(TENANT).await;
    assert_eq!(a_after["state"], "moved");
    assert_eq!(a_after["actors"], json!({}), "{a_after}");
    a.terminate();
    a.start().await;
    let a_restarted = a.status(TENANT).await;
    assert_eq!(a_restarted["state"], "moved", "{a_restarted}");
    assert_eq!(a_restarted["actors"], json!({}), "{a_restarted}");
    let event = stripe_event(
        "evt_late",
        "charge.succeeded",
        BASIL,
        one_time_charge("late", 100),
    );
    let body = event.to_string().into_bytes();
    let late = a
        .client
        .post(format!("{}/hooks/{TENANT}/stripe", a.main_url))
        .header("content-type", "application/json")
        .header(
            "Stripe-Signature",
            steward::sources::stripe::sign_header(&stripe_secret_of(TENANT), now_s(), &body),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(late.status(), 503);
    assert_eq!(late.headers()["retry-after"], "60");
    // Nothing of it changes here any more: an alert acknowledgement is refused too.
    let ack = a
        .admin(
            Method::POST,
            &format!("/v1/tenants/{TENANT}/alerts/crm_unreachable/ack"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(ack.status(), 409);
    // Nor do the routes that need its actors say "not running, see the log" (503, which a
    // retry could outwait): it is a conflict, as schemathesis found.
    for path in ["pollers", "backfills", "two-way"] {
        let (status, answer) = a
            .admin_call(Method::GET, &format!("/v1/tenants/{TENANT}/{path}"), None)
            .await;
        assert_eq!(
            (status, &answer["error"]["code"]),
            (409, &json!("conflict")),
            "{path}: {answer}"
        );
    }
    // Deleting the moved copy needs no force: its work went with the export.
    let deleted = a
        .admin(Method::DELETE, &format!("/v1/tenants/{TENANT}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
}
