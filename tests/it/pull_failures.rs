//! Pull destinations failing (issue 13): a partner receiver answering 500, a Postgres server
//! stopped → the destination retries on the schedule and raises `destination_failing`, the
//! tenant's other destination keeps up meanwhile, and after the recovery everything arrives
//! (no dead letter, nothing lost) and the alert resolves.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{wait_until, TestApp};
use crate::confirm_support::{api_key, create_org};
use crate::pg_support::{unique_schema, PgCluster};
use crate::pull_support::*;

const CONVERGE: Duration = Duration::from_secs(60);
const ALERT: &str = "destination_failing";

/// Imports `count` gifts of another tool and runs `edits` staff edits over them; the
/// expected latest state afterwards.
async fn make_changes(
    app: &TestApp,
    id: &str,
    prefix: &str,
    count: usize,
    plan: &mut Option<EditPlan>,
    edits: usize,
) -> std::collections::BTreeMap<Key, State> {
    let client = &app.client;
    let sandbox_url = app.sandbox_url();
    if count > 0 {
        import_gifts(
            client,
            &sandbox_url,
            id,
            &api_key(id),
            OTHER_TOOL,
            prefix,
            count,
        )
        .await;
    }
    if plan.is_none() {
        let (gifts, contacts) = sandbox_ids(client, &sandbox_url, id).await;
        *plan = Some(EditPlan::new(29, gifts, contacts));
    }
    let plan = plan.as_mut().unwrap();
    let batch = plan.next_edits(edits);
    let answered = staff_edits(client, &sandbox_url, id, &batch).await;
    plan.applied(&batch, &answered);
    sandbox_latest(client, &sandbox_url, id, &plan.deleted).await
}

/// Waits until the failing destination `failing` has failed at least three times in a row
/// with `destination_failing` open, while `healthy` has nothing pending and a lag under 5 s.
async fn wait_failing_beside_healthy(
    app: &TestApp,
    id: &str,
    failing: &str,
    healthy: &str,
) -> (Value, Value) {
    wait_until(
        CONVERGE,
        format!("{failing} failing with the alert open while {healthy} keeps up"),
        || async {
            let list = destinations(app, id).await;
            let (bad, good) = (destination(&list, failing), destination(&list, healthy));
            let open = alert_open(&app.status(id).await, ALERT) == Some(true);
            (open
                && bad["consecutive_failures"].as_u64() >= Some(3)
                && bad["pending"].as_u64() > Some(0)
                && good["pending"] == 0
                && good["lag_seconds"].as_f64() < Some(5.0))
            .then_some((bad, good))
        },
    )
    .await
}

async fn wait_alert_resolved(app: &TestApp, id: &str) {
    wait_until(CONVERGE, "destination_failing resolved", || async {
        (alert_open(&app.status(id).await, ALERT) == Some(false)).then_some(())
    })
    .await;
}

#[actix_rt::test]
async fn pull_failures_a_partner_answering_500_gets_everything_after_it_recovers() {
    // Goal: the partner's receiver answers 500 for a while: its destination retries and raises
    // destination_failing while the NDJSON destination delivers every change (lag low); once
    // the receiver answers 200 again it gets every record's latest version, nothing is
    // dead-lettered and the alert resolves.
    let id = "pull-fail-hook";
    let app = spawn_engine(&[]).await;
    create_org(&app, id, json!({"hourly_limit": 36_000})).await;
    let (partner, partner_url) = start_partner();
    partner.failing.store(true, Ordering::SeqCst);
    let files = tempfile::tempdir().unwrap();
    app.create_tenant(&pull_tenant(
        id,
        json!({"events": ["gift", "contact"], "destinations": {
            "partner": {"kind": "webhook", "url": partner_url, "secret": PARTNER_SECRET, "max_per_s": 1000},
            "files": ndjson_destination(files.path(), 4_096),
        }}),
    ))
    .await;
    wait_for_subscription(&app.client, &app.sandbox_url(), id, &["giftDelete"]).await;
    let mut plan = None;
    let expected = make_changes(&app, id, "hook-", 20, &mut plan, 60).await;

    wait_for_state(CONVERGE, "NDJSON during the outage", &expected, || async {
        ndjson_seen(files.path()).last
    })
    .await;
    let (bad, good) = wait_failing_beside_healthy(&app, id, "partner", "files").await;
    assert!(partner.accepted.lock().unwrap().is_empty());
    assert!(partner.refused_while_failing.load(Ordering::SeqCst) >= 3);
    eprintln!("during the outage: partner {bad}\nfiles {good}");

    partner.failing.store(false, Ordering::SeqCst);
    wait_for_state(CONVERGE, "partner after recovery", &expected, || async {
        partner.seen().last
    })
    .await;
    wait_alert_resolved(&app, id).await;
    let seen = partner.seen();
    assert!(seen.regressions.is_empty(), "{:?}", seen.regressions);
    assert_eq!(partner.bad_signatures.load(Ordering::SeqCst), 0);
    assert_eq!(
        destination_dead_letters(&app, id, "partner").await,
        Vec::<Value>::new()
    );
    let partner_now = destination(&destinations(&app, id).await, "partner");
    assert_eq!(partner_now["consecutive_failures"], 0, "{partner_now}");
    assert!(partner_now["failures"].as_u64() >= Some(3), "{partner_now}");
}

#[actix_rt::test]
async fn pull_failures_postgres_stopped_then_restarted_loses_nothing() {
    // Goal: the destination's Postgres server is stopped while changes arrive: the Postgres
    // destination retries (destination_failing raised) while NDJSON keeps up; after the
    // server starts again the rows hold every record's latest version, with no dead letter,
    // and the alert resolves.
    let id = "pull-fail-pg";
    let cluster = PgCluster::start();
    let schema = unique_schema("pull_fail");
    let app = spawn_engine(&[]).await;
    create_org(&app, id, json!({"hourly_limit": 36_000})).await;
    let files = tempfile::tempdir().unwrap();
    app.create_tenant(&pull_tenant(
        id,
        json!({"events": ["gift", "contact"], "destinations": {
            "warehouse": {"kind": "postgres", "dsn": cluster.dsn(), "schema": schema},
            "files": ndjson_destination(files.path(), 4_096),
        }}),
    ))
    .await;
    wait_for_subscription(&app.client, &app.sandbox_url(), id, &["giftDelete"]).await;
    let mut plan = None;
    let before = make_changes(&app, id, "pg-", 20, &mut plan, 20).await;
    {
        let postgres = cluster.connect().await;
        wait_for_state(CONVERGE, "Postgres before the stop", &before, || {
            pg_state(&postgres, &schema)
        })
        .await;
    }

    cluster.stop();
    let expected = make_changes(&app, id, "pg2-", 10, &mut plan, 60).await;
    wait_for_state(
        CONVERGE,
        "NDJSON while Postgres is down",
        &expected,
        || async { ndjson_seen(files.path()).last },
    )
    .await;
    let (bad, good) = wait_failing_beside_healthy(&app, id, "warehouse", "files").await;
    eprintln!("during the outage: warehouse {bad}\nfiles {good}");

    cluster.start_again();
    let postgres = cluster.connect().await;
    wait_for_state(CONVERGE, "Postgres after the restart", &expected, || {
        pg_state(&postgres, &schema)
    })
    .await;
    wait_alert_resolved(&app, id).await;
    assert_eq!(
        destination_dead_letters(&app, id, "warehouse").await,
        Vec::<Value>::new()
    );
    let seen = ndjson_seen(files.path());
    assert!(seen.regressions.is_empty(), "{:?}", seen.regressions);
}
