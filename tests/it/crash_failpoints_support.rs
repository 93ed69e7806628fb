//! Goal of this helper module: what the failpoint crash tests share — arming a crash point,
//! waiting for the crash it causes (and proving it was that point), restarting without it,
//! sending signed Stripe events that may meet a dead engine, and the final checks (drain,
//! gifts per transaction id).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;
use steward::traffic::{self, GeneratedEvent, Traffic, TrafficOptions};
use steward_actors::store::{Store, StoreOptions};

use crate::common::{at_timeout, wait_until, SpawnOptions, TestApp};
use crate::external_sandbox::{org_and_tenant_on, stripe_secret_of, ExternalSandbox};

/// High enough that the budget never paces a test.
pub const HOURLY_LIMIT: u64 = 360_000;
const FAILPOINTS_ENV: &str = "STEWARD_FAILPOINTS";

/// Fast retries (the plan's test schedule) and the crash points `spec` armed at start.
pub fn armed(spec: &str) -> SpawnOptions {
    SpawnOptions {
        env: vec![
            (
                "STEWARD_SUBMITTER__RETRY_SCHEDULE".into(),
                r#"["50ms","100ms","200ms","400ms","800ms","1s","2s","4s"]"#.into(),
            ),
            (FAILPOINTS_ENV.into(), spec.into()),
        ],
        ..SpawnOptions::default()
    }
}

/// How often the log says crash point `point` fired.
pub fn hits(app: &TestApp, point: &str) -> usize {
    let line = format!("steward failpoint hit: {point}");
    app.log().matches(&line).count()
}

/// Waits (≤ 30 s) for the engine to exit by itself, then asserts it died at `point` (the
/// `hits`-th time in this log): a crash by anything else is a failure, not a pass.
pub async fn crashed_at(app: &mut TestApp, point: &str, hits_expected: usize) {
    let log_path = app.log_path();
    let what = at_timeout(|| {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        format!("the engine to crash at {point}; log:\n{log}")
    });
    let child = app.child.as_mut().unwrap();
    let status = wait_until(Duration::from_secs(30), what, || {
        let exited = child.try_wait().unwrap();
        async move { exited }
    })
    .await;
    app.child = None;
    // The crash point kills with SIGKILL; a panic or an error exit is another failure.
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL),
        "the engine did not die by its crash point: {status}; log:\n{}",
        app.log()
    );
    assert_eq!(
        hits(app, point),
        hits_expected,
        "failpoint {point} hit count; exit {status}; log:\n{}",
        app.log()
    );
}

/// Restarts the engine on the same data dir with no crash point armed; when it was ready.
pub async fn restart_unarmed(app: &mut TestApp) -> Instant {
    app.options.env.retain(|(key, _)| key != FAILPOINTS_ENV);
    app.start().await;
    Instant::now()
}

/// Pauses or resumes the tenant's submission (stored in the registry: survives restarts).
pub async fn set_paused(app: &TestApp, tenant_id: &str, paused: bool) {
    let action = if paused { "pause" } else { "resume" };
    let response = app
        .admin(Method::POST, &format!("/v1/tenants/{tenant_id}/{action}"))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{action}: {response:?}");
}

/// One-time payments; `pairs_and_redeliveries` adds PI+charge pairs (30 %) and exact
/// re-deliveries (10 %), else each payment is exactly one event.
pub fn one_time_traffic(seed: u64, payments: usize, pairs_and_redeliveries: bool) -> Traffic {
    let share = |value: f64| if pairs_and_redeliveries { value } else { 0.0 };
    traffic::generate(&TrafficOptions {
        seed,
        payments,
        subscription_share: 0.0,
        both_events_share: share(0.3),
        charge_only_share: 0.1,
        refunds: 0,
        customer_share: 0.0,
        redelivery_share: share(0.1),
        now_s: jiff::Timestamp::now().as_second(),
    })
}

/// The payment a gift event is for (`None` for other events).
pub fn payment_of(event: &GeneratedEvent) -> Option<&str> {
    match &event.expected {
        traffic::Expected::Gift { payment_id } => Some(payment_id),
        _ => None,
    }
}

/// One delivery's answer: status and body, or `None` when the engine gave none (it died).
pub type Answered = Option<(u16, String)>;

/// Sends `events[i]` for each `i` in `indexes` (signed now) with `concurrency` senders;
/// a failed request (the engine died) is an answer of `None`, never a panic.
pub async fn send_events(
    app: &TestApp,
    tenant_id: &str,
    events: &Arc<Vec<GeneratedEvent>>,
    indexes: Vec<usize>,
    concurrency: usize,
) -> BTreeMap<usize, Answered> {
    let indexes = Arc::new(indexes);
    let next = Arc::new(AtomicUsize::new(0));
    let url = format!("{}/hooks/{tenant_id}/stripe", app.main_url);
    let secret = stripe_secret_of(tenant_id);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (events, indexes, next) = (Arc::clone(events), Arc::clone(&indexes), Arc::clone(&next));
        let (url, secret, client) = (url.clone(), secret.clone(), app.client.clone());
        tasks.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            while let Some(&index) = indexes.get(next.fetch_add(1, Ordering::Relaxed)) {
                let event = &events[index];
                let signature = traffic::sign(
                    &secret,
                    event.body.as_bytes(),
                    jiff::Timestamp::now().as_second(),
                );
                let sent = client
                    .post(&url)
                    .header("Stripe-Signature", signature)
                    .header("Content-Type", "application/json")
                    .body(event.body.clone())
                    .send()
                    .await;
                let answer = match sent {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        response.text().await.ok().map(|body| (status, body))
                    }
                    Err(_) => None,
                };
                answers.push((index, answer));
            }
            answers
        }));
    }
    let mut answers = BTreeMap::new();
    for task in tasks {
        answers.extend(task.await.unwrap());
    }
    answers
}

/// Whether an answer acknowledges the event (2xx).
pub fn acknowledged(answer: &Answered) -> bool {
    matches!(answer, Some((status, _)) if (200..300).contains(status))
}

pub use crate::common::queued_total;

/// Waits (≤ 60 s) until the tenant's queue is empty (nothing stranded); the seconds since
/// `restarted` (the README's "drain after the restart").
pub async fn drained(app: &TestApp, tenant_id: &str, restarted: Instant) -> f64 {
    wait_until(Duration::from_secs(60), "the queue to drain", || async {
        (queued_total(&app.status(tenant_id).await) == 0).then_some(())
    })
    .await;
    restarted.elapsed().as_secs_f64()
}

/// Runs the sandbox's import step, then counts the org's gifts per `transactionId`.
pub async fn imported_gifts(sandbox: &ExternalSandbox, org: &str) -> BTreeMap<String, usize> {
    sandbox.process(org).await;
    let mut ids = BTreeMap::new();
    for gift in sandbox.gifts(org).await {
        if let Some(id) = gift["transactionId"].as_str() {
            *ids.entry(id.to_string()).or_insert(0) += 1;
        }
    }
    ids
}

/// A record as the admin API shows it; `None` when there is no such record (404).
pub async fn record(app: &TestApp, tenant_id: &str, kind_source_id: &str) -> Option<Value> {
    let response = app
        .admin(
            Method::GET,
            &format!("/v1/tenants/{tenant_id}/records/{kind_source_id}"),
        )
        .send()
        .await
        .unwrap();
    if response.status() == 404 {
        return None;
    }
    assert_eq!(response.status(), 200, "record {kind_source_id}");
    Some(response.json().await.unwrap())
}

/// The sum of a counter's samples for one tenant in the Prometheus text.
pub fn counter_for_tenant(metrics: &str, name: &str, tenant_id: &str) -> u64 {
    let label = format!("tenant=\"{tenant_id}\"");
    metrics
        .lines()
        .filter(|line| line.starts_with(name) && line.contains(&label))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The tenant's dead letters (one page is enough here).
pub async fn dead_letters(app: &TestApp, tenant_id: &str) -> Vec<Value> {
    let listing = app
        .admin_json(
            Method::GET,
            &format!("/v1/tenants/{tenant_id}/dead-letters"),
        )
        .await;
    listing["dead_letters"].as_array().cloned().unwrap()
}

/// Pauses the tenant and waits until its submitter has no call out, so the store holds
/// still while a test reads where each entry is.
pub async fn hold_still(app: &TestApp, tenant_id: &str) {
    set_paused(app, tenant_id, true).await;
    wait_until(
        Duration::from_secs(30),
        "the submitter idle and paused",
        || async {
            let status = app.status(tenant_id).await;
            let observed = &status["actors"]["submitter"]["observed"];
            (observed["paused"] == true && observed["in_flight"] == false).then_some(())
        },
    )
    .await;
}

/// For each customer: where its entry is now — (queued entries, dead letters).
pub async fn places(app: &TestApp, tenant_id: &str, customers: &[String]) -> Vec<(usize, usize)> {
    let dead = dead_letters(app, tenant_id).await;
    let mut found = Vec::new();
    for customer in customers {
        let record = record(app, tenant_id, &format!("contact/stripe/{customer}"))
            .await
            .unwrap_or_else(|| panic!("no record for {customer}"));
        let queued = record["queued"].as_array().unwrap().len();
        let dead = dead.iter().filter(|d| d["source_id"] == *customer).count();
        found.push((queued, dead));
    }
    found
}

/// A sandbox process, an engine armed with `spec`, and a tenant targeting an org of the
/// sandbox (`org_extra` merged into its spec, e.g. dedup off).
pub async fn start_armed(
    tenant_id: &str,
    spec: &str,
    org_extra: Value,
) -> (ExternalSandbox, TestApp) {
    let sandbox = ExternalSandbox::start();
    let app = TestApp::spawn(armed(spec)).await;
    org_and_tenant_on(&app, &sandbox, tenant_id, HOURLY_LIMIT, org_extra).await;
    (sandbox, app)
}

/// One gift per expected transaction id and no other gift: nothing lost, nothing duplicated.
pub fn assert_one_gift_each(gifts: &BTreeMap<String, usize>, expected: &BTreeSet<String>) {
    let ids: BTreeSet<String> = gifts.keys().cloned().collect();
    let lost: Vec<_> = expected.difference(&ids).collect();
    let unexpected: Vec<_> = ids.difference(expected).collect();
    assert!(
        lost.is_empty() && unexpected.is_empty(),
        "lost {lost:?}, unexpected {unexpected:?}"
    );
    let duplicated: Vec<_> = gifts.iter().filter(|(_, count)| **count > 1).collect();
    assert!(duplicated.is_empty(), "duplicate gifts: {duplicated:?}");
}

/// Stops the engine (SIGTERM) and starts it again armed with `spec`.
pub async fn restart_armed(app: &mut TestApp, spec: &str) {
    app.terminate();
    app.options = armed(spec);
    app.start().await;
}

/// The stored `body_json` of each dead letter by source id, read from the store of a
/// stopped engine (the admin API shows bodies parsed, not as bytes). A source id with two
/// dead letters fails.
pub fn dead_letter_bodies(data_dir: &Path, tenant_id: &str) -> BTreeMap<String, String> {
    let store = Store::open(&data_dir.join("store"), StoreOptions::default()).unwrap();
    let mut bodies = BTreeMap::new();
    for letter in store
        .tenant(tenant_id)
        .unwrap()
        .dead_letters_page(None, 1_000)
        .unwrap()
    {
        let source_id = letter.entry.fact.source_id.clone();
        let earlier = bodies.insert(source_id.clone(), letter.entry.fact.body_json);
        assert!(earlier.is_none(), "two dead letters for {source_id}");
    }
    bodies
}

/// Resumes a tenant whose next step crashes the engine: the crash may come before the
/// answer to the resume, so a request that gets no answer is fine; an answer must be 2xx.
pub async fn resume_into_crash(app: &TestApp, tenant_id: &str) {
    let sent = app
        .admin(Method::POST, &format!("/v1/tenants/{tenant_id}/resume"))
        .send()
        .await;
    if let Ok(response) = sent {
        assert!(response.status().is_success(), "resume: {response:?}");
    }
}
