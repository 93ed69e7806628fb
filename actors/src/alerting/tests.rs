//! The dispatcher against scripted sinks and a real store in a temp dir.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{AlertSink, Dispatcher, DispatcherSettings, Notification, SinkVerdict};
use crate::ports::LocalFuture;
use crate::retry::RetrySchedule;
use crate::store::{NoticeEvent, NoticePolicy, Store, StoreError, StoreOptions, TenantStore};
use crate::test_support::{eventually, registered_tenant};

/// One scripted answer: a verdict now, or no answer at all (the attempt times out).
#[derive(Clone)]
enum Answer {
    Now(SinkVerdict),
    Never,
}

fn retry_later() -> Answer {
    Answer::Now(SinkVerdict::RetryLater {
        reason: "HTTP 500".into(),
        retry_after_ms: None,
    })
}

/// A sink that records every attempt and answers from its script (then `Delivered`).
struct ScriptedSink {
    codes: Vec<&'static str>,
    script: Mutex<VecDeque<Answer>>,
    attempts: Mutex<Vec<Notification>>,
}

impl ScriptedSink {
    fn new(codes: &[&'static str], script: &[Answer]) -> Arc<ScriptedSink> {
        Arc::new(ScriptedSink {
            codes: codes.to_vec(),
            script: Mutex::new(script.iter().cloned().collect()),
            attempts: Mutex::new(Vec::new()),
        })
    }

    /// (event, code) of each attempt, in order.
    fn attempts(&self) -> Vec<(NoticeEvent, String)> {
        self.attempts
            .lock()
            .unwrap()
            .iter()
            .map(|notification| (notification.event, notification.code.clone()))
            .collect()
    }

    fn ids(&self) -> Vec<String> {
        let attempts = self.attempts.lock().unwrap();
        attempts.iter().map(|n| n.id.clone()).collect()
    }
}

impl AlertSink for ScriptedSink {
    fn kind(&self) -> &'static str {
        "scripted"
    }

    fn accepts(&self, code: &str) -> bool {
        self.codes.is_empty() || self.codes.contains(&code)
    }

    fn send(&self, notification: &Notification) -> LocalFuture<SinkVerdict> {
        self.attempts.lock().unwrap().push(notification.clone());
        let answer = self.script.lock().unwrap().pop_front();
        Box::pin(async move {
            match answer.unwrap_or(Answer::Now(SinkVerdict::Delivered)) {
                Answer::Now(verdict) => verdict,
                Answer::Never => std::future::pending().await,
            }
        })
    }
}

/// Millisecond waits, so the tests run the real loop quickly.
fn fast_settings(retries: usize) -> DispatcherSettings {
    DispatcherSettings {
        schedule: RetrySchedule::new(vec![Duration::from_millis(5); retries]).unwrap(),
        jitter_fraction: 0.0,
        attempt_timeout: Duration::from_millis(100),
        rescan_interval: Duration::from_secs(60),
        store_check_interval: Duration::from_millis(10),
    }
}

fn open(dir: &std::path::Path, cooldown_ms: u64) -> (Store, TenantStore) {
    let options = StoreOptions {
        alert_notices: Some(NoticePolicy { cooldown_ms }),
        ..StoreOptions::default()
    };
    let store = Store::open(dir, options).unwrap();
    let tenant = registered_tenant(&store, "t1");
    (store, tenant)
}

fn start(store: &Store, sinks: &[&Arc<ScriptedSink>], settings: DispatcherSettings) {
    let sinks: Vec<Arc<dyn AlertSink>> = sinks
        .iter()
        .map(|sink| Arc::clone(sink) as Arc<dyn AlertSink>)
        .collect();
    Dispatcher::new(store.clone(), sinks, settings).spawn();
}

fn raised(code: &str) -> (NoticeEvent, String) {
    (NoticeEvent::Raised, code.to_owned())
}

#[actix_rt::test]
async fn a_failing_sink_holds_up_no_other_and_is_retried_until_it_takes_the_notice() {
    // Goal: a sink that fails twice gets the notice on its third attempt (same id each
    // time) while a sink that never answered its first attempt got it on the second; a sink
    // whose `codes` leave the code out gets nothing; the outbox empties once every sink
    // that accepts the code is done.
    let dir = tempfile::tempdir().unwrap();
    let (store, tenant) = open(dir.path(), 0);
    let failing = ScriptedSink::new(&[], &[retry_later(), retry_later()]);
    let silent = ScriptedSink::new(&["crm_unreachable"], &[Answer::Never]);
    let elsewhere = ScriptedSink::new(&["dead_letters"], &[]);
    start(&store, &[&failing, &silent, &elsewhere], fast_settings(3));
    tenant
        .raise_alert("crm_unreachable", "5 in a row", 10)
        .unwrap();
    eventually("the outbox to empty", 5_000, || {
        tenant.alert_notices().unwrap().is_empty()
    })
    .await;
    assert_eq!(failing.attempts(), vec![raised("crm_unreachable"); 3]);
    assert_eq!(silent.attempts(), vec![raised("crm_unreachable"); 2]);
    assert!(elsewhere.attempts().is_empty());
    let ids = failing.ids();
    assert!(
        ids.iter().all(|id| id == &ids[0]) && ids[0].starts_with("t1-"),
        "{ids:?}"
    );
    assert_eq!(silent.ids()[0], ids[0]);
    let delivered = &failing.attempts.lock().unwrap()[0];
    assert_eq!(
        (
            delivered.tenant_id.as_deref(),
            delivered.message.as_str(),
            delivered.at_ms
        ),
        (Some("t1"), "5 in a row", 10)
    );
}

#[actix_rt::test]
async fn a_resolve_never_overtakes_its_raise_and_a_spent_schedule_gives_the_sink_up() {
    // Goal: while a sink retries a raise, the resolve of the same code waits behind it; the
    // raise is given up after the schedule (1 + 2 attempts), then the resolve is sent and
    // both leave the outbox.
    let dir = tempfile::tempdir().unwrap();
    let (store, tenant) = open(dir.path(), 0);
    let sink = ScriptedSink::new(&[], &[retry_later(), retry_later(), retry_later()]);
    tenant.raise_alert("dead_letters", "1", 10).unwrap();
    tenant.resolve_alert("dead_letters", 20).unwrap();
    start(&store, &[&sink], fast_settings(2));
    eventually("the outbox to empty", 5_000, || {
        tenant.alert_notices().unwrap().is_empty()
    })
    .await;
    let resolved = (NoticeEvent::Resolved, "dead_letters".to_owned());
    assert_eq!(
        sink.attempts(),
        vec![
            raised("dead_letters"),
            raised("dead_letters"),
            raised("dead_letters"),
            resolved
        ]
    );
}

#[actix_rt::test]
async fn a_withdrawn_resolve_is_never_sent() {
    // Goal: the cooldown holds a resolve; the alert reopening withdraws it, so after the
    // cooldown the sink has still seen only the raise (it believes the alert open, as it is).
    let dir = tempfile::tempdir().unwrap();
    let cooldown_ms = 150;
    let (store, tenant) = open(dir.path(), cooldown_ms);
    let sink = ScriptedSink::new(&[], &[]);
    start(&store, &[&sink], fast_settings(2));
    let now = crate::ports::now_ms();
    tenant.raise_alert("crm_unreachable", "down", now).unwrap();
    eventually("the raise", 5_000, || sink.attempts().len() == 1).await;
    tenant.resolve_alert("crm_unreachable", now + 1).unwrap();
    tenant
        .raise_alert("crm_unreachable", "down again", now + 2)
        .unwrap();
    actix_rt::time::sleep(Duration::from_millis(cooldown_ms * 2)).await;
    assert_eq!(sink.attempts(), vec![raised("crm_unreachable")]);
    assert!(tenant.alert_notices().unwrap().is_empty());
}

#[actix_rt::test]
async fn a_failed_store_is_told_from_memory_once() {
    // Goal: a poisoned store (it takes no write) is told to the sinks as `store_failed`,
    // owner the process, once; it is never looked for in the outbox.
    let dir = tempfile::tempdir().unwrap();
    let (store, _tenant) = open(dir.path(), 0);
    let sink = ScriptedSink::new(&[], &[retry_later()]);
    start(&store, &[&sink], fast_settings(2));
    store.poison_for_test(StoreError::Io("fsync failed".into()));
    eventually("store_failed delivered", 5_000, || {
        sink.attempts().len() == 2
    })
    .await;
    actix_rt::time::sleep(Duration::from_millis(50)).await;
    let attempts = sink.attempts.lock().unwrap().clone();
    assert_eq!(attempts.len(), 2, "told once, retried once");
    assert_eq!(attempts[1].code, super::STORE_FAILED_ALERT);
    assert_eq!(attempts[1].tenant_id, None);
    assert!(attempts[1].message.contains("fsync failed"), "{attempts:?}");
    assert!(store
        .raise_process_alert("disk_nearly_full", "m", 1)
        .is_err());
}

#[test]
fn the_alert_codes_are_the_documented_ones() {
    // Goal: ALERT_CODES (what a sink's `codes` may name) lists exactly the codes of the
    // docs/operations.md tables headed `| code | raised when | resolves |` (tenants' alerts,
    // the process's).
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operations.md");
    let text = std::fs::read_to_string(path).unwrap();
    let mut documented = Vec::new();
    let mut in_code_table = false;
    for line in text.lines() {
        if line.starts_with("| code | raised when | resolves |") {
            in_code_table = true;
        } else if !line.starts_with('|') {
            in_code_table = false;
        } else if in_code_table && line.starts_with("| `") {
            let cell = line.split('|').nth(1).unwrap_or_default();
            documented.extend(
                cell.split(',')
                    .map(|code| code.trim().trim_matches('`').to_owned()),
            );
        }
    }
    documented.sort();
    let mut known: Vec<String> = super::ALERT_CODES.iter().map(|c| c.to_string()).collect();
    known.sort();
    assert_eq!(documented, known);
}
