//! Evolving between patterns by PATCH alone, under traffic: a platform moves from polled to
//! hybrid to webhook capture without a gap or a duplicate gift.

use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::common::{wait_until, SpawnOptions, TestApp};
use crate::poll_support::{last_run_number, poller_of, start_run_of, wait_run_finished_of, Sim};

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

const SECRET: &str = "fair-webhook-secret";

/// Which paths a donation of one phase takes: listed by the feed, and/or sent by webhook.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Polled,
    Hybrid,
    Webhook,
}

async fn patch(app: &TestApp, tenant: &str, body: Value) {
    let answer = app
        .admin(Method::PATCH, &format!("/v1/tenants/{tenant}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = answer.status();
    assert_eq!(status, 200, "{}", answer.text().await.unwrap_or_default());
}

/// Adds donation `n` to the feed and, in the webhook phases, delivers its webhook (a
/// platform that sends webhooks always lists the donation too).
async fn donate(app: &TestApp, sim: &Sim, tenant: &str, n: usize, phase: Phase) {
    let item = json!({"id": format!("don-{n}"), "type": "donation.completed",
                      "amount": 500 + n as u64, "email": format!("d{n}@example.org")});
    sim.call(
        Method::POST,
        "/_sandbox/feeds/fair/items",
        Some(json!({"items": [item.clone()]})),
    )
    .await;
    if phase == Phase::Polled {
        return;
    }
    let body = item.to_string().into_bytes();
    let answer = app
        .client
        .post(format!("{}/hooks/{tenant}/platform/fair", app.main_url))
        .header("X-Signature", sign(SECRET, &body))
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(
        answer.status() == 202 || answer.status() == 200,
        "webhook of don-{n}: {}",
        answer.status()
    );
}

/// Runs the poller once if it is configured and idle (the test's schedule).
async fn poll_once(app: &TestApp, tenant: &str) {
    let before = last_run_number(&poller_of(app, tenant, "fair").await);
    if start_run_of(app, tenant, "fair").await {
        wait_run_finished_of(app, tenant, "fair", before, Duration::from_secs(30)).await;
    }
}

#[tokio::test]
async fn a_platform_moves_from_polled_to_hybrid_to_webhook_by_patch_without_a_gap_or_a_duplicate() {
    // Goal: donations keep coming while the tenant is PATCHed from a polled platform to hybrid (webhooks added) and then to webhooks only (poll removed); every donation reaches Virtuous exactly once, including those made around each PATCH.
    let per_phase = 40;
    let app = TestApp::spawn(SpawnOptions::default()).await;
    let sim = Sim::new(&app.sandbox_url());
    let tenant = "evolve-plat";
    sim.call(
        Method::POST,
        "/_sandbox/feeds",
        Some(json!({"id": "fair", "auth_header": "X-Api-Key", "auth_value": "fair-feed-key"})),
    )
    .await;
    sim.create_org(tenant, "evolve-plat-key").await;
    app.create_tenant(&json!({
        "id": tenant, "name": "Evolving platform",
        "virtuous": {"base_url": "embedded", "api_key": "evolve-plat-key"},
        "sources": {"platforms": {"fair": {
            "signature_prefix": "sha256=",
            "transaction_source": "Fair",
            "events": {"donation.completed": {"kind": "gift", "fields": {
                "amount": "/amount", "contact.email": "/email", "transactionId": "/id"}}},
            "poll": {"url": "embedded", "auth_header": "X-Api-Key", "auth_value": "fair-feed-key"}}}},
        "budget": {"hourly_limit": 1_000_000, "reserve_pct": 10}
    }))
    .await;

    let mut n = 0;
    for phase in [Phase::Polled, Phase::Hybrid, Phase::Webhook] {
        for round in 0..per_phase {
            n += 1;
            donate(&app, &sim, tenant, n, phase).await;
            if phase != Phase::Webhook && round % 10 == 4 {
                poll_once(&app, tenant).await;
            }
        }
        match phase {
            // The last five donations before the PATCH are listed and not yet polled (runs
            // come after every tenth's fifth): the hybrid tenant's next poll finds them.
            Phase::Polled => {
                patch(
                    &app,
                    tenant,
                    json!({"sources": {"platforms": {"fair": {"secret": SECRET}}}}),
                )
                .await
            }
            // Before the poll goes, it reads what is listed (a platform's webhooks may
            // have missed some); then webhooks alone.
            Phase::Hybrid => {
                poll_once(&app, tenant).await;
                patch(
                    &app,
                    tenant,
                    json!({"sources": {"platforms": {"fair": {"poll": null}}}}),
                )
                .await
            }
            Phase::Webhook => {}
        }
    }
    let total = n;
    wait_until(Duration::from_secs(60), "every donation sent", || async {
        let ids = sim.transaction_ids(tenant).await;
        (ids.len() >= total).then_some(())
    })
    .await;
    // Nothing left to send and no call in flight: a duplicate would be in the log by now.
    wait_until(
        Duration::from_secs(30),
        "the tenant's queue drained",
        || async {
            let status = app.status(tenant).await;
            let idle = crate::common::queued_total(&status) == 0
                && status["actors"]["submitter"]["observed"]["in_flight"] == false;
            idle.then_some(())
        },
    )
    .await;
    let mut ids = sim.transaction_ids(tenant).await;
    ids.sort();
    let mut expected: Vec<String> = (1..=total).map(|n| format!("don-{n}")).collect();
    expected.sort();
    assert_eq!(ids, expected, "each donation exactly once");
    // The poller is gone after the last PATCH.
    let (status, pollers) = app
        .admin_call(Method::GET, &format!("/v1/tenants/{tenant}/pollers"), None)
        .await;
    assert_eq!(status, 200, "{pollers}");
    assert!(
        pollers["pollers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|poller| poller["source"] != "fair"),
        "{pollers}"
    );
}

/// A user's edit of every contact in `range` of the partner: it gains the tag `{tag}{n}`
/// (a matched Virtuous contact learns new tags from a contact transaction; it keeps its
/// name).
async fn edit_all(
    partner: &crate::two_way_support::Partner,
    range: std::ops::Range<usize>,
    tag: &str,
) {
    for n in range {
        partner
            .edit(&format!("p{n}"), json!({"tags": [format!("{tag}{n}")]}))
            .await;
    }
}

/// Whether a Virtuous contact carries `tag`.
fn has_tag(contact: &Value, tag: &str) -> bool {
    contact["tags"]
        .as_array()
        .is_some_and(|tags| tags.iter().any(|t| t == tag))
        || contact["tags"]
            .as_str()
            .is_some_and(|tags| tags.split(';').any(|t| t.trim() == tag))
}

fn people(range: std::ops::Range<usize>) -> Vec<Value> {
    range
        .map(|n| {
            json!({"id": format!("p{n}"), "email": format!("person{n}@example.org"),
                   "first_name": format!("First{n}"), "last_name": format!("Last{n}"),
                   "tags": [], "subscribed": true})
        })
        .collect()
}

#[tokio::test]
async fn a_one_way_tenant_turns_on_two_way_observe_by_patch_without_a_gap_or_a_duplicate() {
    // Goal: a platform's contacts are pushed one way while people are added and edited; a PATCH adds a two-way pair in `observe` mode midway; every person ends in Virtuous once with their latest edit (a new tag: a matched contact keeps its name), and observe writes nothing to either side.
    use crate::two_way_support::{
        create_tenant, process, two_way_tenant, virtuous_by_partner, virtuous_puts, Partner,
        Sandbox,
    };
    let app = crate::pull_support::spawn_engine(&[]).await;
    let sandbox = Sandbox::embedded(&app);
    let tenant = "evolve-tw";
    let partner = Partner::create(&app, &sandbox, "crm-evolve", tenant, false).await;
    let full = two_way_tenant(tenant, &partner.api_url(), "observe", json!({}));
    let mut one_way = full.clone();
    one_way.as_object_mut().unwrap().remove("two_way");
    create_tenant(&app, &sandbox, &one_way).await;

    partner.add(people(0..30)).await;
    edit_all(&partner, 0..30, "early").await;
    patch(&app, tenant, json!({"two_way": full["two_way"].clone()})).await;
    partner.add(people(30..60)).await;
    edit_all(&partner, 0..60, "final").await;

    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let by_partner = loop {
        process(&sandbox, tenant).await;
        let by_partner = virtuous_by_partner(&sandbox, tenant).await;
        let stale: Vec<String> = (0..60)
            .filter(|n| {
                !by_partner
                    .get(&format!("p{n}"))
                    .is_some_and(|contact| has_tag(contact, &format!("final{n}")))
            })
            .map(|n| {
                let seen = by_partner
                    .get(&format!("p{n}"))
                    .map(|contact| contact["tags"].clone());
                format!("p{n}={seen:?}")
            })
            .collect();
        if stale.is_empty() {
            break by_partner;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not in Virtuous with their last edit after 90 s: {stale:?}; status {}",
            app.status(tenant).await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(by_partner.len(), 60);
    let contacts = sandbox.contacts(tenant).await;
    assert_eq!(
        contacts.len(),
        60,
        "one Virtuous contact per person, none twice"
    );
    assert_eq!(
        partner.api_writes().await,
        0,
        "observe writes nothing to the partner"
    );
    assert_eq!(
        virtuous_puts(&sandbox, tenant).await,
        0,
        "observe writes nothing to Virtuous"
    );
    let (status, view) = app
        .admin_call(Method::GET, &format!("/v1/tenants/{tenant}/two-way"), None)
        .await;
    assert_eq!(status, 200, "{view}");
    assert!(view.to_string().contains("observe"), "{view}");
}
