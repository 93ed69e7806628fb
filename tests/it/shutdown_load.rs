//! Goal: issue 5 §6, graceful shutdown under load — SIGTERM while concurrent producers send
//! signed Stripe events: the engine exits 0 within its shutdown deadline; nothing acknowledged
//! (2xx) is lost; after the restart no record is stranded: every acknowledged payment has
//! exactly one gift in the sandbox, every stored record ends `confirmed`, the queue is empty.
//! The sandbox is its own process (`ExternalSandbox`) so it outlives the engine's restarts.
//! `STEWARD_SHUTDOWN_ROUNDS` sets the number of SIGTERM rounds (default 3). Prints one
//! `RELIABILITY:` line (run with `--nocapture`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use reqwest::Method;
use serde_json::json;
use steward::traffic::{self, Expected};
use steward_actors::ports::now_ms;

use crate::common::{queued_total as queue_depth, wait_until, SpawnOptions, TestApp};
use crate::external_sandbox::{org_and_tenant_on, stripe_secret_of, ExternalSandbox};

const TENANT: &str = "shutdown-load";
/// Concurrent producers.
const SENDERS: usize = 12;
/// Unique payments generated per round: more than the producers get through before SIGTERM.
const PAYMENTS_PER_ROUND: usize = 4_000;
/// Acknowledged events before the SIGTERM may come (so every round shuts down mid-ingest).
const ACKS_BEFORE_SIGTERM: usize = 100;
/// `shutdown_deadline_s` as TestApp sets it.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);
/// Waits for the queue to drain and for confirmation after the last restart.
const DRAIN_DEADLINE: Duration = Duration::from_secs(60);
/// Added by the sandbox to every answer, and the engine's batch size: together they hold
/// the submitter below the ingest rate (≈ 80 gifts/s), so every SIGTERM finds entries queued
/// and a call in flight, and the restart has a backlog to drain.
const SANDBOX_LATENCY_MS: u64 = 250;
/// The last round's Virtuous answers this slowly (a call in flight still ends well inside the
/// shutdown deadline).
const LAST_ROUND_SANDBOX_LATENCY_MS: u64 = 1_500;
const BATCH_MAX: u64 = 20;
/// A restarted engine with a backlog makes its first call within this long of `/readyz`
/// (its first tick would come 7.5–15 s after the start with the default 30 s heartbeat).
const FIRST_CALL_AFTER_RESTART_MAX_MS: u64 = 3_000;
const BATCH_PATH: &str = "/api/v2/Gift/Transactions";

fn rounds() -> usize {
    std::env::var("STEWARD_SHUTDOWN_ROUNDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(3)
}

/// What the producers of one round saw.
#[derive(Default)]
struct Sent {
    /// Payment ids of events answered 2xx: the obligations.
    acknowledged: BTreeSet<String>,
    acknowledged_events: usize,
    /// Events answered with another status, and requests that got no answer.
    refused: usize,
    unanswered: usize,
}

/// One-time payments only (each event maps to exactly one gift), some sent as both
/// `payment_intent.succeeded` and `charge.succeeded`, some re-delivered.
fn round_events(round: usize) -> Vec<traffic::GeneratedEvent> {
    crate::push_e2e::one_time_traffic(500 + round as u64, PAYMENTS_PER_ROUND).events
}

/// Starts the producers: each takes the next event, signs it now and posts it, until the
/// events run out or the engine stops answering (a connection error ends that producer).
fn start_producers(
    app: &TestApp,
    events: Vec<traffic::GeneratedEvent>,
    sent: Arc<Mutex<Sent>>,
    acks: Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let events = Arc::new(events);
    let next = Arc::new(AtomicUsize::new(0));
    let url = format!("{}/hooks/{TENANT}/stripe", app.main_url);
    let secret = stripe_secret_of(TENANT);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    (0..SENDERS)
        .map(|_| {
            let (events, next, url, secret, client, sent, acks) = (
                Arc::clone(&events),
                Arc::clone(&next),
                url.clone(),
                secret.clone(),
                client.clone(),
                Arc::clone(&sent),
                Arc::clone(&acks),
            );
            tokio::spawn(async move {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(event) = events.get(index) else {
                        return;
                    };
                    let Expected::Gift { payment_id } = &event.expected else {
                        panic!("one-time traffic maps every event to a gift: {event:?}")
                    };
                    let answer =
                        crate::push_e2e::post_signed_stripe(&client, &url, &secret, &event.body)
                            .await;
                    let mut sent = sent.lock().unwrap();
                    match answer {
                        Ok(response) if response.status().is_success() => {
                            sent.acknowledged.insert(payment_id.clone());
                            sent.acknowledged_events += 1;
                            acks.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => sent.refused += 1,
                        Err(_) => {
                            sent.unanswered += 1;
                            return;
                        }
                    }
                }
            })
        })
        .collect()
}

/// When the sandbox received the first batch call at or after `since_ms`.
async fn first_batch_call_since(sandbox: &ExternalSandbox, since_ms: u64) -> Option<u64> {
    sandbox
        .requests(TENANT)
        .await
        .iter()
        .filter(|entry| entry["path"] == BATCH_PATH)
        .filter_map(|entry| entry["at_ms"].as_u64())
        .find(|at_ms| *at_ms >= since_ms)
}

/// transactionId → requests the sandbox accepted (200) that carried it.
async fn accepted_sends(sandbox: &ExternalSandbox) -> BTreeMap<String, usize> {
    let mut sends = BTreeMap::new();
    for entry in sandbox.requests(TENANT).await {
        if entry["path"] != BATCH_PATH || entry["status"] != 200 {
            continue;
        }
        for id in entry["transaction_ids"].as_array().unwrap() {
            *sends.entry(id.as_str().unwrap().to_string()).or_insert(0) += 1;
        }
    }
    sends
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_load_sigterm_during_ingest_loses_and_strands_nothing() {
    // Goal: SIGTERM during concurrent signed ingest → exit 0 within the deadline, no
    // acknowledged payment lost, and after the restart every record confirmed, nothing queued.
    let started = Instant::now();
    let sandbox = ExternalSandbox::start();
    let mut app = TestApp::spawn(SpawnOptions {
        env: vec![
            (
                "STEWARD_SUBMITTER__RETRY_SCHEDULE".into(),
                r#"["50ms", "100ms", "200ms", "400ms", "800ms", "1s", "2s", "4s"]"#.into(),
            ),
            ("STEWARD_SUBMITTER__BATCH_MAX".into(), BATCH_MAX.to_string()),
        ],
        ..SpawnOptions::default()
    })
    .await;
    org_and_tenant_on(&app, &sandbox, TENANT, 360_000, json!({})).await;
    // A slow Virtuous keeps a call in flight and entries queued most of the time, so the
    // SIGTERM also lands on the submitter mid-call, not only on the ingress.
    set_sandbox_latency(&sandbox, SANDBOX_LATENCY_MS).await;

    let rounds = rounds();
    let mut obligations: BTreeSet<String> = BTreeSet::new();
    let (mut events_acknowledged, mut refused, mut unanswered) = (0, 0, 0);
    let mut exits = Vec::new();
    // Entries queued right after each restart, and when the last restart began and was ready.
    let mut backlogs = Vec::new();
    let (mut restart_called_ms, mut ready_ms) = (0, 0);
    for round in 0..rounds {
        let last_round = round + 1 == rounds;
        if last_round {
            // The last SIGTERM must leave a backlog (the drain-at-once check below needs one):
            // a slower Virtuous for this round keeps the submitter behind the producers even
            // when a busy machine slows the producers down.
            set_sandbox_latency(&sandbox, LAST_ROUND_SANDBOX_LATENCY_MS).await;
        }
        let sent = Arc::new(Mutex::new(Sent::default()));
        let acks = Arc::new(AtomicUsize::new(0));
        let producers = start_producers(
            &app,
            round_events(round),
            Arc::clone(&sent),
            Arc::clone(&acks),
        );
        wait_until(
            Duration::from_secs(30),
            "the first acknowledged events",
            || async { (acks.load(Ordering::Relaxed) >= ACKS_BEFORE_SIGTERM).then_some(()) },
        )
        .await;
        // Deliberate: a random moment of the ingest, while the producers keep sending.
        let delay_ms = rand::thread_rng().gen_range(0..400);
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        let acks_at_sigterm = acks.load(Ordering::Relaxed);
        let (returned, exit, took) = tokio::task::spawn_blocking(move || {
            let (exit, took) = app.terminate();
            (app, exit, took)
        })
        .await
        .unwrap();
        app = returned;
        for producer in producers {
            producer.await.unwrap();
        }
        assert!(
            exit.success(),
            "round {round}: exit {exit}; log:\n{}",
            app.log()
        );
        assert!(
            took <= SHUTDOWN_DEADLINE,
            "round {round}: exit took {took:?}, over the {SHUTDOWN_DEADLINE:?} deadline"
        );
        let sent = std::mem::take(&mut *sent.lock().unwrap());
        assert!(
            sent.unanswered > 0 || sent.acknowledged_events > acks_at_sigterm,
            "round {round}: the producers were still sending when SIGTERM came"
        );
        exits.push(took);
        obligations.extend(sent.acknowledged);
        events_acknowledged += sent.acknowledged_events;
        refused += sent.refused;
        unanswered += sent.unanswered;
        restart_called_ms = now_ms();
        app.start().await;
        ready_ms = now_ms();
        backlogs.push(queue_depth(&app.status(TENANT).await));
        if last_round {
            set_sandbox_latency(&sandbox, SANDBOX_LATENCY_MS).await;
        }
    }

    // After the last restart: everything stored drains to the sandbox.
    let drain_started = Instant::now();
    wait_until(DRAIN_DEADLINE, "the queue to drain", || async {
        let status = app.status(TENANT).await;
        (queue_depth(&status) == 0).then_some(())
    })
    .await;
    let drained_s = drain_started.elapsed().as_secs_f64();
    // The restarted engine drains its backlog at once, not at its first tick.
    let last_backlog = *backlogs.last().unwrap();
    assert!(last_backlog > 0, "the last SIGTERM left entries queued");
    let first_call_ms = first_batch_call_since(&sandbox, restart_called_ms)
        .await
        .expect("a batch call after the last restart");
    let first_call_after_ready_ms = first_call_ms.saturating_sub(ready_ms);
    assert!(
        first_call_after_ready_ms <= FIRST_CALL_AFTER_RESTART_MAX_MS,
        "the backlog waited {first_call_after_ready_ms} ms after the restart"
    );
    sandbox.process(TENANT).await;
    let gifts = sandbox.gifts_by_transaction(TENANT).await;
    let lost: Vec<&String> = obligations
        .iter()
        .filter(|id| !gifts.contains_key(*id))
        .collect();
    assert!(lost.is_empty(), "acknowledged but no gift: {lost:?}");
    let duplicate_gifts: Vec<(&String, &usize)> =
        gifts.iter().filter(|(_, count)| **count > 1).collect();
    assert!(duplicate_gifts.is_empty(), "{duplicate_gifts:?}");

    // Nothing stranded: every stored record is confirmed by the reconciler, nothing dead.
    // Ingest has stopped: `captured` is final.
    let captured = app.status(TENANT).await["counts"]["captured"]
        .as_u64()
        .unwrap_or(0);
    assert!(captured > 0, "something was stored");
    let status = crate::push_e2e::reconcile_until_confirmed(&app, TENANT, captured).await;
    let counts = &status["counts"];
    assert_eq!(counts["dead"], 0, "{status}");
    assert_eq!(queue_depth(&status), 0, "{status}");
    assert_eq!(
        counts["captured"].as_u64(),
        Some(gifts.len() as u64),
        "one gift per stored record: {status}"
    );
    let sends = accepted_sends(&sandbox).await;
    let sent_again = sends.values().filter(|count| **count > 1).count();
    let stats = sandbox.stats(TENANT).await;
    // A graceful stop records the answer of the call in flight: nothing Virtuous accepted
    // goes again after the restart (with dedup off that would be a duplicate gift).
    assert_eq!(sent_again, 0, "keys accepted twice; org stats {stats}");
    let exits_s: Vec<String> = exits
        .iter()
        .map(|took| format!("{:.2}", took.as_secs_f64()))
        .collect();
    eprintln!(
        "RELIABILITY: shutdown under load: {rounds} SIGTERM rounds × {SENDERS} producers: exit 0 in [{}] s (deadline {} s); \
         events acknowledged {events_acknowledged} ({} payments, obligations), refused {refused}, unanswered {unanswered}; \
         stored {}, lost 0, duplicate gifts 0, accepted twice {sent_again} (rejected as duplicates by the org: {}), \
         backlog at restarts {backlogs:?}, first call {first_call_after_ready_ms} ms after ready, drain after last restart {drained_s:.1} s, \
         confirmed {}/{}, queue 0; {:.1} s",
        exits_s.join(", "),
        SHUTDOWN_DEADLINE.as_secs(),
        obligations.len(),
        counts["captured"],
        stats["rejected_duplicate"],
        counts["confirmed"],
        counts["captured"],
        started.elapsed().as_secs_f64()
    );
}

/// Every answer of the sandbox org takes `latency_ms`.
async fn set_sandbox_latency(sandbox: &ExternalSandbox, latency_ms: u64) {
    sandbox
        .call(
            Method::PUT,
            &format!("/_sandbox/orgs/{TENANT}/faults"),
            Some(json!({ "latency_ms": latency_ms })),
        )
        .await;
}
