//! Goal: money reconciliation end to end — signed Stripe payments (one refunded) imported
//! and confirmed by the embedded sandbox reconcile clean against Virtuous; once Virtuous
//! differs (a staff edit of an amount, a deleted gift), the report names those transaction
//! ids and the tenant carries the alert `money_mismatch`.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use steward::traffic::{self, TrafficOptions};

use crate::common::{queued_total, status_alert, wait_until, SpawnOptions, TestApp};
use crate::push_e2e::{org_and_tenant, reconcile_until_confirmed, sandbox_call, send_all};

const TENANT: &str = "money";
const PAYMENTS: usize = 12;

fn fast_engine() -> SpawnOptions {
    SpawnOptions {
        env: vec![(
            "STEWARD_SUBMITTER__RETRY_SCHEDULE".into(),
            r#"["50ms", "100ms", "200ms", "400ms", "800ms", "1s", "2s", "4s"]"#.into(),
        )],
        ..SpawnOptions::default()
    }
}

/// Starts a reconciliation of the days around today and waits until it is done.
async fn reconcile(app: &TestApp) -> Value {
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    let body = json!({"source": "stripe",
        "from": today.yesterday().unwrap().to_string(),
        "to": today.tomorrow().unwrap().to_string()});
    let path = format!("/v1/tenants/{TENANT}/reconciliations");
    let (status, job) = app.admin_call(Method::POST, &path, Some(body)).await;
    assert_eq!(status, 202, "{job}");
    assert!(
        matches!(job["state"].as_str(), Some("running" | "done")),
        "{job}"
    );
    let id = job["id"].as_str().unwrap().to_string();
    wait_until(
        Duration::from_secs(20),
        format!("reconciliation {id} done"),
        || async {
            let job = app.admin_json(Method::GET, &format!("{path}/{id}")).await;
            (job["state"] == "done").then_some(job)
        },
    )
    .await
}

/// The sandbox's gifts (full form).
async fn virtuous_gifts(app: &TestApp) -> Vec<Value> {
    let gifts = sandbox_call(
        app,
        Method::GET,
        &format!("/_sandbox/orgs/{TENANT}/gifts"),
        None,
    )
    .await;
    gifts.as_array().unwrap().clone()
}

#[tokio::test]
async fn payments_reconcile_clean_until_virtuous_differs_then_the_report_names_the_ids() {
    // Goal: N payments with one refund are clean once imported and confirmed (the refund
    // nets out against its reversal); an edited amount and a deleted gift are then listed by
    // transaction id, and `money_mismatch` is raised naming the job.
    let app = TestApp::spawn(fast_engine()).await;
    org_and_tenant(&app, TENANT, 360_000, json!({"processing": "immediate"})).await;
    let traffic = traffic::generate(&TrafficOptions {
        seed: 15,
        payments: PAYMENTS,
        subscription_share: 0.0,
        both_events_share: 0.3,
        charge_only_share: 0.1,
        refunds: 1,
        customer_share: 0.0,
        redelivery_share: 0.0,
        now_s: jiff::Timestamp::now().as_second(),
    });
    let refunded = traffic.refunded_payment_ids();
    assert_eq!(refunded.len(), 1);
    let statuses = send_all(&app, TENANT, traffic.events.clone(), 4).await;
    assert!(
        statuses.keys().all(|status| [200, 202].contains(status)),
        "{statuses:?}"
    );

    // Imported at once; confirmed by the bulk query; then the refund goes (it needs its
    // gift's Virtuous id) and nothing is left queued.
    reconcile_until_confirmed(&app, TENANT, PAYMENTS as u64).await;
    wait_until(
        Duration::from_secs(20),
        "the refund sent and imported",
        || async {
            let status = app.status(TENANT).await;
            let reversals = virtuous_gifts(&app)
                .await
                .iter()
                .filter(|gift| gift["giftType"] == "ReversingTransaction")
                .count();
            (queued_total(&status) == 0 && reversals == 1).then_some(())
        },
    )
    .await;

    let clean = reconcile(&app).await;
    let report = &clean["report"];
    assert_eq!(report["clean"], true, "{clean:#}");
    assert_eq!(report["differences_total"], 0, "{clean:#}");
    let totals = &report["totals"];
    let counted: u64 = totals
        .as_array()
        .unwrap()
        .iter()
        .map(|currency| currency["source"]["count"].as_u64().unwrap())
        .sum();
    assert_eq!(
        counted,
        PAYMENTS as u64 - 1,
        "the refunded payment left the sums: {totals}"
    );
    for currency in totals.as_array().unwrap() {
        assert_eq!(currency["source"], currency["virtuous"], "{totals}");
    }
    assert!(clean["progress"]["pages_read"].as_u64().unwrap() >= 1);
    assert!(status_alert(&app.status(TENANT).await, "money_mismatch").is_none());

    // Virtuous differs: a staff edit of one gift's amount, another gift deleted.
    let gifts = virtuous_gifts(&app).await;
    let mut ours = gifts.iter().filter(|gift| {
        gift["giftType"] != "ReversingTransaction"
            && !refunded
                .iter()
                .any(|id| gift["transactionId"] == id.as_str())
    });
    let (edited, deleted) = (ours.next().unwrap().clone(), ours.next().unwrap().clone());
    let edits = json!({"edits": [
        {"kind": "gift", "id": edited["id"], "changes": {"amount": 5}},
        {"kind": "gift", "id": deleted["id"], "delete": true},
    ]});
    let path = format!("/_sandbox/orgs/{TENANT}/staff-edits");
    sandbox_call(&app, Method::POST, &path, Some(edits)).await;

    let differing = reconcile(&app).await;
    let report = &differing["report"];
    assert_eq!(report["clean"], false);
    let listed: Vec<(String, String)> = report["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["transaction_id"].as_str().unwrap().to_string(),
                d["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut expected = vec![
        (
            edited["transactionId"].as_str().unwrap().to_string(),
            "amount_differs".to_string(),
        ),
        (
            deleted["transactionId"].as_str().unwrap().to_string(),
            "missing_in_virtuous".to_string(),
        ),
    ];
    expected.sort();
    assert_eq!(listed, expected, "{differing:#}");
    let amount_differs = report["differences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["kind"] == "amount_differs")
        .unwrap();
    // 5 in major units, whatever the gift's currency ("5.00", "5", "5.000").
    let shown: f64 = amount_differs["virtuous"]["amount"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(shown, 5.0, "{amount_differs}");
    let alert = status_alert(&app.status(TENANT).await, "money_mismatch").expect("alert raised");
    let message = alert["message"].as_str().unwrap();
    let job_id = differing["id"].as_str().unwrap();
    assert!(
        message.contains(job_id) && message.contains("2 difference"),
        "{message}"
    );

    // The list shows both jobs, without their day rows; bad requests are refused.
    let list = app
        .admin_json(
            Method::GET,
            &format!("/v1/tenants/{TENANT}/reconciliations"),
        )
        .await;
    let jobs = list["reconciliations"].as_array().unwrap();
    assert_eq!(jobs.len(), 2);
    assert!(jobs[1]["report"]["days"].is_null() && jobs[1]["report"]["mismatches"] == 2);
    let path = format!("/v1/tenants/{TENANT}/reconciliations");
    let bad = json!({"source": "paypal", "from": "2026-01-01", "to": "2026-01-02"});
    let (status, refused) = app.admin_call(Method::POST, &path, Some(bad)).await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["error"]["code"], "invalid_reconciliation");
    assert!(refused["error"]["message"]
        .as_str()
        .unwrap()
        .contains("`source`"));
    let (status, _) = app
        .admin_call(Method::GET, &format!("{path}/rec-0"), None)
        .await;
    assert_eq!(status, 404);
    let (status, _) = app
        .admin_call(Method::GET, "/v1/tenants/nobody/reconciliations", None)
        .await;
    assert_eq!(status, 404);
}
