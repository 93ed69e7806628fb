//! Pull and the budget (issue 13): the backstop poll draws its calls from the tenant's
//! budget in the reconcile lane, so asking for polls over and over while the submitter is
//! busy never causes a 429 and gets at most the reconcile lane's floor: one call after every
//! `PRIORITY_CALLS_PER_LOW_CALL` (9) submitter calls (actors/src/budget.rs).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{wait_until, SpawnOptions, TestApp};
use crate::confirm_support::{api_key, create_org, sandbox_stats};
use crate::pull_support::*;

/// Priority (submitter) calls the budget grants before a reconcile-lane call while the
/// submitter has ready work (`steward_actors::budget::PRIORITY_CALLS_PER_LOW_CALL`).
const PRIORITY_PER_LOW: u64 = 9;

fn metric_sum(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|line| line.starts_with(name))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn is_submit_call(entry: &Value) -> bool {
    entry["path"]
        .as_str()
        .is_some_and(|path| path.starts_with("/api/v2/Gift/Transaction"))
}

#[actix_rt::test]
async fn pull_budget_backstop_polls_stay_within_the_reconcile_floor_without_a_429() {
    // Goal: with a budget the submitter fills (a queue of 90 / full 300 gifts) and a
    // backstop poll asked for every 100 ms, the sandbox answers no 429; while the submitter
    // is busy a reconcile-lane call comes only after 9 of its calls (two at the start
    // excepted), and the pull still gets about one call in ten (the floor is a floor).
    assert_eq!(
        PRIORITY_PER_LOW,
        u64::from(steward_actors::budget::PRIORITY_CALLS_PER_LOW_CALL)
    );
    let queued = sized(90, 300);
    // 36,000 an hour, 10 % reserve: 9 calls a second; the org's own limit is the same.
    let limit = 36_000;
    let id = "pull-budget";
    let app = TestApp::spawn(SpawnOptions {
        env: vec![
            ("STEWARD_SUBMITTER__BATCH_MAX".into(), "1".into()),
            ("STEWARD_RUNTIME__HEARTBEAT_MS".into(), "1500".into()),
        ],
        ..SpawnOptions::default()
    })
    .await;
    create_org(&app, id, json!({"hourly_limit": limit})).await;
    import_gifts(
        &app.client,
        &app.sandbox_url(),
        id,
        &api_key(id),
        OTHER_TOOL,
        "budget-",
        20,
    )
    .await;
    let files = tempfile::tempdir().unwrap();
    let mut body = pull_tenant(
        id,
        json!({"events": ["gift", "contact"],
               "destinations": {"files": ndjson_destination(files.path(), 1_024)}}),
    );
    body["budget"] = json!({"hourly_limit": limit, "reserve_pct": 10});
    app.create_tenant(&body).await;
    let first = backstop_now(&app, id).await;
    assert!(first["calls"].as_u64() >= Some(2), "{first}");
    let pull_calls_before = metric_sum(&app.metrics_text().await, "steward_pull_calls_total");

    // The submitter gets a queue, and the backstop poll is asked for again and again.
    let (status, answer) = app
        .admin_call(
            Method::POST,
            &format!("/v1/tenants/{id}/_test/enqueue?count={queued}&prefix=bq_"),
            None,
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    let stop = Arc::new(AtomicBool::new(false));
    let asker = {
        let stop = Arc::clone(&stop);
        let (client, url, token) = (
            app.client.clone(),
            app.admin_url.clone(),
            app.admin_token.clone(),
        );
        actix_rt::spawn(async move {
            let mut asked = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let response = client
                    .post(format!("{url}/v1/tenants/{id}/pull/poll"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 202);
                asked += 1;
                // The pace of the asking, not a wait for a result.
                actix_rt::time::sleep(Duration::from_millis(100)).await;
            }
            asked
        })
    };
    wait_until(
        Duration::from_secs(90),
        format!("{queued} transactions received"),
        || async {
            let stats = sandbox_stats(&app, id).await;
            (stats["transactions_received"].as_u64() == Some(queued as u64)).then_some(())
        },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    let asked = asker.await.unwrap();

    let stats = sandbox_stats(&app, id).await;
    assert_eq!(stats["throttled"], 0, "no 429: {stats}");
    let log = sandbox(
        &app,
        Method::GET,
        &format!("/_sandbox/orgs/{id}/requests"),
        None,
    )
    .await;
    let log = log.as_array().unwrap();
    assert!(
        log.iter().all(|entry| entry["status"] != 429),
        "no 429 in the log"
    );
    // While the submitter is busy: from its first call to its last.
    let submits: Vec<usize> = (0..log.len())
        .filter(|&i| is_submit_call(&log[i]))
        .collect();
    assert!(
        submits.len() >= queued / 2,
        "{} submitter calls for {queued} gifts",
        submits.len()
    );
    let busy = &log[submits[0]..=*submits.last().unwrap()];
    let priority = busy.iter().filter(|entry| is_submit_call(entry)).count() as u64;
    let low: Vec<&Value> = busy.iter().filter(|entry| !is_submit_call(entry)).collect();
    let pull_calls =
        metric_sum(&app.metrics_text().await, "steward_pull_calls_total") - pull_calls_before;
    let mut gaps = Vec::new();
    let mut since_low = 0;
    for entry in busy {
        if is_submit_call(entry) {
            since_low += 1;
        } else {
            gaps.push(since_low);
            since_low = 0;
        }
    }
    eprintln!("pull_budget: submitter calls before each other call: {gaps:?}");
    eprintln!(
        "pull_budget: {asked} polls asked, busy window {} calls: {priority} submitter, {} other \
         (all Full* queries: {}), pull calls in all {pull_calls}",
        busy.len(),
        low.len(),
        low.iter().all(|entry| entry["path"]
            .as_str()
            .is_some_and(|path| path.contains("/Query/Full")))
    );
    // The rule, with the tolerance of the start: the two first low calls may come before the
    // submitter has said it has work (a pass already waiting when the queue arrived).
    assert!(
        gaps.iter().skip(2).all(|&gap| gap >= PRIORITY_PER_LOW),
        "a reconcile-lane call came before 9 submitter calls: {gaps:?}"
    );
    assert!(
        low.len() as u64 <= priority / PRIORITY_PER_LOW + 2,
        "{} reconcile-lane calls beside {priority} submitter calls",
        low.len()
    );
    // The floor is a floor: about one call in ten went to the reconcile lane.
    assert!(
        low.len() as u64 + 1 >= priority / PRIORITY_PER_LOW,
        "{} reconcile-lane calls beside {priority} submitter calls: {gaps:?}",
        low.len()
    );
    assert!(pull_calls >= 1, "the backstop poll made calls");
    let queries = low
        .iter()
        .filter(|entry| {
            entry["path"]
                .as_str()
                .is_some_and(|path| path.contains("/Query/Full"))
        })
        .count();
    assert!(
        queries >= 1,
        "the busy window's low-lane calls include the pull's queries"
    );
    // Pacing: never more than the allowance's rate (9/s) plus the one call a new bucket allows.
    let span_ms =
        busy.last().unwrap()["at_ms"].as_u64().unwrap() - busy[0]["at_ms"].as_u64().unwrap();
    let allowed = span_ms * (limit * 9 / 10) / 3_600_000 + 2;
    assert!(
        busy.len() as u64 <= allowed,
        "{} calls in {span_ms} ms",
        busy.len()
    );
}
