//! Goal: issue 5 §5, the fault matrix — the sandbox's scripted faults against the real engine
//! (`steward serve`, real sled store) over loopback, each row on its own tenant and org, all
//! rows at once: retries follow the configured schedule within the jitter bounds, exhausted
//! retries dead-letter after schedule length + 1 attempts, `Retry-After` is honoured, a
//! permanent error is dead-lettered after exactly one attempt, a hung request times out and is
//! retried, an applied-then-closed batch is retried with the same keys. The evidence is the
//! sandbox's request log (`GET /_sandbox/orgs/{id}/requests`): every attempt with its arrival
//! time and transactionIds. Prints one `RELIABILITY:` line (run with `--nocapture`).

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{wait_until, SpawnOptions, TestApp};
use crate::external_sandbox::{org_and_tenant_on, ExternalSandbox};

/// The engine's retry schedule in this test (`submitter.retry_schedule`), ms.
const SCHEDULE_MS: [u64; 4] = [250, 500, 1_000, 2_000];
/// `submitter.retry_jitter_pct`.
const JITTER_PCT: u64 = 20;
/// Allowed lateness of an attempt beyond its jittered delay: the engine's completion write,
/// the wake timer, the lease scan, building and sending the request, plus a loaded 2-core CI
/// machine running other tests (measured with jitter 0 on a quiet machine: 1–12 ms late).
/// An attempt is never allowed to come early.
const PROCESSING_SLACK_MS: u64 = 150;
/// `virtuous.request_timeout_s` (its minimum is 1).
const REQUEST_TIMEOUT_S: u64 = 1;
/// How long a scripted hang stays silent in the sandbox (longer than the engine waits).
const HANG_MS: u64 = 3_000;
/// `Retry-After` of the scripted 429, seconds.
const RETRY_AFTER_S: u64 = 2;
const BATCH_PATH: &str = "/api/v2/Gift/Transactions";
/// Each row's own wait for its outcome.
const ROW_DEADLINE: Duration = Duration::from_secs(30);

fn schedule_env() -> String {
    let steps: Vec<String> = SCHEDULE_MS.iter().map(|ms| format!("\"{ms}ms\"")).collect();
    format!("[{}]", steps.join(", "))
}

/// One request of the sandbox's log that carried gift transactions.
#[derive(Debug, Clone)]
struct Attempt {
    at_ms: u64,
    status: u16,
    ids: Vec<String>,
}

/// The org's batch requests, oldest first.
async fn batch_requests(sandbox: &ExternalSandbox, org: &str) -> Vec<Attempt> {
    sandbox
        .requests(org)
        .await
        .iter()
        .filter(|entry| entry["method"] == "POST" && entry["path"] == BATCH_PATH)
        .map(|entry| Attempt {
            at_ms: entry["at_ms"].as_u64().unwrap(),
            status: entry["status"].as_u64().unwrap() as u16,
            ids: entry["transaction_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|id| id.as_str().unwrap().to_string())
                .collect(),
        })
        .collect()
}

/// The requests that carried `id`, oldest first.
fn attempts_of<'a>(requests: &'a [Attempt], id: &str) -> Vec<&'a Attempt> {
    requests
        .iter()
        .filter(|attempt| attempt.ids.iter().any(|carried| carried == id))
        .collect()
}

/// The allowed gap after the `failures`-th failure: the jittered delay, minus 1 ms of
/// millisecond rounding, plus [`PROCESSING_SLACK_MS`].
fn retry_bounds_ms(failures: usize) -> (u64, u64) {
    let delay_ms = SCHEDULE_MS[failures - 1];
    let low = delay_ms * (100 - JITTER_PCT) / 100;
    let high = delay_ms * (100 + JITTER_PCT) / 100;
    (low.saturating_sub(1), high + PROCESSING_SLACK_MS)
}

/// One measured gap against its bounds, for the summary line.
#[derive(Debug)]
struct Gap {
    step: usize,
    gap_ms: u64,
    low_ms: u64,
    high_ms: u64,
}

/// Checks each gap between consecutive attempts of `id`: the k-th failure is followed by a
/// wait of schedule step k within the jitter bounds.
fn check_schedule_gaps(row: &str, attempts: &[&Attempt]) -> Vec<Gap> {
    let mut gaps = Vec::new();
    for (index, pair) in attempts.windows(2).enumerate() {
        let step = index + 1;
        let gap_ms = pair[1].at_ms.saturating_sub(pair[0].at_ms);
        let (low_ms, high_ms) = retry_bounds_ms(step);
        assert!(
            (low_ms..=high_ms).contains(&gap_ms),
            "{row}: gap after failure {step} is {gap_ms} ms, outside [{low_ms}, {high_ms}]: {attempts:?}"
        );
        gaps.push(Gap {
            step,
            gap_ms,
            low_ms,
            high_ms,
        });
    }
    gaps
}

/// Queues `count` gifts, waits until all are submitted, and checks that the first one went out
/// twice with `statuses`, carrying the same keys both times; the gap between the two, ms.
async fn two_attempts(
    rig: &Rig,
    tenant: &str,
    count: usize,
    statuses: [u16; 2],
) -> (Vec<String>, u64) {
    let ids = rig.enqueue(tenant, count).await;
    rig.settled(tenant, count as u64, 0).await;
    let requests = batch_requests(&rig.sandbox, tenant).await;
    let attempts = attempts_of(&requests, &ids[0]);
    let seen: Vec<u16> = attempts.iter().map(|attempt| attempt.status).collect();
    assert_eq!(seen, statuses, "{tenant}: {requests:?}");
    assert_eq!(
        attempts[0].ids, attempts[1].ids,
        "{tenant}: the same keys went again"
    );
    let mut sent = attempts[0].ids.clone();
    sent.sort();
    assert_eq!(sent, ids, "{tenant}: every gift in one batch");
    (ids, attempts[1].at_ms - attempts[0].at_ms)
}

fn gaps_text(gaps: &[Gap]) -> String {
    gaps.iter()
        .map(|gap| {
            format!(
                "s{} {} ms in [{}, {}]",
                gap.step, gap.gap_ms, gap.low_ms, gap.high_ms
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

struct Rig {
    app: TestApp,
    sandbox: ExternalSandbox,
}

impl Rig {
    /// A tenant and its org, the org's script in force before anything is queued.
    async fn row(&self, tenant: &str, script: Value) {
        org_and_tenant_on(&self.app, &self.sandbox, tenant, 360_000, json!({})).await;
        let answer = self
            .sandbox
            .call(
                Method::POST,
                &format!("/_sandbox/orgs/{tenant}/script"),
                Some(json!({ "steps": script })),
            )
            .await;
        assert_eq!(
            answer["steps"].as_u64(),
            script.as_array().map(|s| s.len() as u64)
        );
    }

    /// Queues `count` synthetic gifts `{tenant}_{n}` in one durable group.
    async fn enqueue(&self, tenant: &str, count: usize) -> Vec<String> {
        let response = self
            .app
            .admin(
                Method::POST,
                &format!("/v1/tenants/{tenant}/_test/enqueue?count={count}&prefix={tenant}_"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
        (0..count).map(|n| format!("{tenant}_{n}")).collect()
    }

    /// Waits until the tenant's counts show `submitted` and `dead` and nothing is queued.
    async fn settled(&self, tenant: &str, submitted: u64, dead: u64) -> Value {
        wait_until(ROW_DEADLINE, &format!("{tenant} settled"), || async {
            let status = self.app.status(tenant).await;
            let queued = crate::common::queued_total(&status);
            let counts = &status["counts"];
            (counts["submitted"].as_u64() == Some(submitted)
                && counts["dead"].as_u64() == Some(dead)
                && queued == 0)
                .then_some(status)
        })
        .await
    }

    async fn dead_letters(&self, tenant: &str) -> Vec<Value> {
        let listing = self
            .app
            .admin_json(Method::GET, &format!("/v1/tenants/{tenant}/dead-letters"))
            .await;
        listing["dead_letters"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Imports what the org received; the transactionIds of its gifts with their counts.
    async fn gifts_by_id(&self, org: &str) -> BTreeMap<String, usize> {
        self.sandbox.process(org).await;
        let mut ids = BTreeMap::new();
        for gift in self.sandbox.gifts(org).await {
            if let Some(id) = gift["transactionId"].as_str() {
                *ids.entry(id.to_string()).or_insert(0) += 1;
            }
        }
        ids
    }

    /// Every id has exactly one gift in the org, and no other gift exists.
    async fn one_gift_each(&self, org: &str, ids: &[String]) {
        let gifts = self.gifts_by_id(org).await;
        let expected: BTreeMap<String, usize> = ids.iter().map(|id| (id.clone(), 1)).collect();
        assert_eq!(gifts, expected, "{org}: one gift per transaction");
    }
}

/// A script of one step answering the batch endpoint `times` times with `respond`.
fn on_batch(times: usize, respond: Value) -> Value {
    json!([{"match": {"method": "POST", "path": BATCH_PATH}, "times": times, "respond": respond}])
}

fn batch_503(times: usize) -> Value {
    on_batch(times, json!({"status": 503}))
}

/// (a) 503 × 3, then accepted: each wait within the schedule's jitter bounds.
async fn row_schedule(rig: &Rig) -> String {
    let tenant = "fm-schedule";
    rig.row(tenant, batch_503(3)).await;
    let ids = rig.enqueue(tenant, 2).await;
    rig.settled(tenant, 2, 0).await;
    let requests = batch_requests(&rig.sandbox, tenant).await;
    let mut all_gaps = Vec::new();
    for id in &ids {
        let attempts = attempts_of(&requests, id);
        let statuses: Vec<u16> = attempts.iter().map(|attempt| attempt.status).collect();
        assert_eq!(statuses, [503, 503, 503, 200], "{id}: {requests:?}");
        all_gaps = check_schedule_gaps(tenant, &attempts);
    }
    rig.one_gift_each(tenant, &ids).await;
    format!("503x3 then 200: {}", gaps_text(&all_gaps))
}

/// (b) 503 on every attempt: dead after schedule length + 1 attempts, every gap in bounds.
async fn row_exhausted(rig: &Rig) -> String {
    let tenant = "fm-exhausted";
    let attempts_expected = SCHEDULE_MS.len() + 1;
    rig.row(tenant, batch_503(attempts_expected + 5)).await;
    let ids = rig.enqueue(tenant, 2).await;
    rig.settled(tenant, 0, 2).await;
    let requests = batch_requests(&rig.sandbox, tenant).await;
    let mut all_gaps = Vec::new();
    for id in &ids {
        let attempts = attempts_of(&requests, id);
        assert_eq!(attempts.len(), attempts_expected, "{id}: {requests:?}");
        assert!(attempts.iter().all(|attempt| attempt.status == 503));
        all_gaps = check_schedule_gaps(tenant, &attempts);
    }
    let letters = rig.dead_letters(tenant).await;
    assert_eq!(letters.len(), 2, "{letters:?}");
    for letter in &letters {
        assert_eq!(
            letter["attempts"].as_u64(),
            Some(attempts_expected as u64),
            "{letter}"
        );
        assert_eq!(letter["status"].as_u64(), Some(503), "{letter}");
    }
    assert!(
        rig.gifts_by_id(tenant).await.is_empty(),
        "nothing was applied"
    );
    format!(
        "503 always: dead after {attempts_expected} attempts (attempts={attempts_expected}): {}",
        gaps_text(&all_gaps)
    )
}

/// (c) a 429 with `Retry-After`: the next attempt not before it (nor much after).
async fn row_retry_after(rig: &Rig) -> String {
    let tenant = "fm-retry-after";
    rig.row(
        tenant,
        on_batch(1, json!({"status": 429, "retry_after_s": RETRY_AFTER_S})),
    )
    .await;
    let (ids, gap_ms) = two_attempts(rig, tenant, 2, [429, 200]).await;
    let low_ms = RETRY_AFTER_S * 1_000 - 1;
    let high_ms = RETRY_AFTER_S * 1_000 + PROCESSING_SLACK_MS;
    assert!(
        (low_ms..=high_ms).contains(&gap_ms),
        "Retry-After {RETRY_AFTER_S} s: next attempt after {gap_ms} ms, outside [{low_ms}, {high_ms}]"
    );
    rig.one_gift_each(tenant, &ids).await;
    format!("429 Retry-After {RETRY_AFTER_S} s: next attempt after {gap_ms} ms in [{low_ms}, {high_ms}]")
}

/// (d) a 400 or 422 naming one item of a batch: that item dead after one attempt, the others
/// accepted.
async fn row_permanent(rig: &Rig, status: u16) -> String {
    let tenant = &format!("fm-permanent-{status}");
    rig.row(
        tenant,
        on_batch(
            1,
            json!({"status": status, "model_state":
                    {"transactions[1].amount": ["The Amount field is invalid."]}}),
        ),
    )
    .await;
    let ids = rig.enqueue(tenant, 3).await;
    rig.settled(tenant, 2, 1).await;
    let requests = batch_requests(&rig.sandbox, tenant).await;
    let first = requests.first().expect("a batch request");
    assert_eq!(first.status, status);
    let mut sent = first.ids.clone();
    sent.sort();
    assert_eq!(sent, ids, "the three gifts went in one batch: {requests:?}");
    let refused = first.ids[1].clone();
    assert_eq!(
        attempts_of(&requests, &refused).len(),
        1,
        "{refused} sent once: {requests:?}"
    );
    let letters = rig.dead_letters(tenant).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["source_id"], refused.as_str());
    assert_eq!(letters[0]["attempts"], 1, "{}", letters[0]);
    assert_eq!(letters[0]["status"], status, "{}", letters[0]);
    let others: Vec<String> = ids.iter().filter(|id| **id != refused).cloned().collect();
    for id in &others {
        let statuses: Vec<u16> = attempts_of(&requests, id)
            .iter()
            .map(|attempt| attempt.status)
            .collect();
        assert_eq!(statuses, [status, 200], "{id}: {requests:?}");
    }
    rig.one_gift_each(tenant, &others).await;
    format!("{status} naming item 1 of 3: dead after 1 attempt (attempts=1), the other 2 accepted on the re-send")
        .to_string()
}

/// (e) a hung request: the engine gives up after its request timeout and retries; one gift.
async fn row_hang(rig: &Rig) -> String {
    let tenant = "fm-hang";
    rig.row(tenant, on_batch(1, json!({"hang": true}))).await;
    rig.sandbox
        .call(
            Method::PUT,
            &format!("/_sandbox/orgs/{tenant}/faults"),
            Some(json!({ "timeout_ms": HANG_MS })),
        )
        .await;
    let (ids, gap_ms) = two_attempts(rig, tenant, 2, [0, 200]).await;
    let (low_ms, high_ms) = retry_bounds_ms(1);
    // The engine's timeout starts when it sends; the sandbox logs the arrival, which a busy
    // machine delays by tens of milliseconds (1,162 ms was seen against 1,199 under a load
    // average of 10 on 2 cores). Allow that much on the low side only.
    const ARRIVAL_SLACK_MS: u64 = 100;
    let (low_ms, high_ms) = (
        low_ms + REQUEST_TIMEOUT_S * 1_000 - ARRIVAL_SLACK_MS,
        high_ms + REQUEST_TIMEOUT_S * 1_000,
    );
    assert!(
        (low_ms..=high_ms).contains(&gap_ms),
        "hang: retried after {gap_ms} ms, outside timeout + step 1 = [{low_ms}, {high_ms}]"
    );
    assert!(
        gap_ms < HANG_MS,
        "the engine gave up before the sandbox closed"
    );
    rig.one_gift_each(tenant, &ids).await;
    format!("hang: timed out after {REQUEST_TIMEOUT_S} s, retried after {gap_ms} ms in [{low_ms}, {high_ms}], 1 gift each")
}

/// (f) applied, then closed unanswered: retried with the same keys; dedup keeps one gift each.
async fn row_apply_then_close(rig: &Rig) -> String {
    let tenant = "fm-apply-close";
    rig.row(tenant, on_batch(1, json!({"apply_then": "close"})))
        .await;
    let (ids, gap_ms) = two_attempts(rig, tenant, 3, [0, 200]).await;
    let (low_ms, high_ms) = retry_bounds_ms(1);
    assert!(
        (low_ms..=high_ms).contains(&gap_ms),
        "apply-then-close: re-sent after {gap_ms} ms, outside step 1 = [{low_ms}, {high_ms}]"
    );
    rig.one_gift_each(tenant, &ids).await;
    let stats = rig.sandbox.stats(tenant).await;
    assert_eq!(stats["transactions_received"], 6, "{stats}");
    assert_eq!(stats["rejected_duplicate"], 3, "{stats}");
    format!(
        "apply-then-close: same 3 keys re-sent after {gap_ms} ms in [{low_ms}, {high_ms}], 3 gifts, 3 duplicates rejected by the org"
    )
}

#[tokio::test]
async fn fault_matrix_scripted_faults_meet_the_retry_contract() {
    // Goal: every row of issue 5's fault matrix holds against the real engine and sandbox
    // (rows described above, each asserting its own evidence from the request log).
    let started = std::time::Instant::now();
    let sandbox = ExternalSandbox::start();
    let app = TestApp::spawn(SpawnOptions {
        env: vec![
            ("STEWARD_SUBMITTER__RETRY_SCHEDULE".into(), schedule_env()),
            (
                "STEWARD_SUBMITTER__RETRY_JITTER_PCT".into(),
                JITTER_PCT.to_string(),
            ),
            (
                "STEWARD_VIRTUOUS__REQUEST_TIMEOUT_S".into(),
                REQUEST_TIMEOUT_S.to_string(),
            ),
        ],
        ..SpawnOptions::default()
    })
    .await;
    let rig = Rig { app, sandbox };
    let (schedule, exhausted, retry_after, permanent, permanent_422, hang, apply_close) = tokio::join!(
        row_schedule(&rig),
        row_exhausted(&rig),
        row_retry_after(&rig),
        row_permanent(&rig, 400),
        row_permanent(&rig, 422),
        row_hang(&rig),
        row_apply_then_close(&rig),
    );
    eprintln!(
        "RELIABILITY: fault matrix (schedule {:?} ms ±{JITTER_PCT} %, slack {PROCESSING_SLACK_MS} ms, request timeout {REQUEST_TIMEOUT_S} s; {:.1} s): \
         [a] {schedule}; [b] {exhausted}; [c] {retry_after}; [d] {permanent}; {permanent_422}; [e] {hang}; [f] {apply_close}",
        SCHEDULE_MS,
        started.elapsed().as_secs_f64()
    );
}
