//! Money reconciliation jobs inside a real tenant tree (sled + a fake Crm): one at a time,
//! queued requests, resumption after a restart, and the nightly schedule.

use std::sync::Arc;

use crate::money::{
    days_inclusive, job_checkpoint, parse_day, JobState, Progress, ReconciliationJob, RequestError,
    Trigger, NIGHTLY_CHECKPOINT,
};
use crate::ports::{Clock, Crm, CrmGift, SystemClock};
use crate::runtime::{Runtime, TenantHandle, TenantSettings, TenantSpec};
use crate::settings::MoneySource;
use crate::store::{Store, StoreOptions, TenantRunState, TenantStore};
use crate::test_support::{eventually, FakeCrm};
use crate::{ActorKind, KillMode};

fn settings(daily_at: Option<(u8, u8)>) -> TenantSettings {
    let mut settings = TenantSettings {
        heartbeat_ms: 200,
        restart_backoff_initial_ms: 20,
        ..TenantSettings::default()
    };
    settings.confirm.query_take = 2;
    settings.reconciliation.daily_at = daily_at;
    settings.reconciliation.time_zone = "UTC".into();
    settings.reconciliation.sources = vec![MoneySource {
        source: "stripe".into(),
        transaction_source: "Stripe".into(),
    }];
    settings
}

fn open(dir: &std::path::Path) -> (Store, TenantStore) {
    let store = Store::open(dir, StoreOptions::default()).unwrap();
    let tenant = store.tenant("t").unwrap();
    (store, tenant)
}

fn start(
    store: &Store,
    tenant: &TenantStore,
    crm: Arc<dyn Crm>,
    settings: TenantSettings,
    run_state: TenantRunState,
) -> (Runtime, TenantHandle) {
    let runtime = Runtime::new(1);
    let handle = runtime.start_tenant(TenantSpec {
        tenant_id: "t".into(),
        store: store.clone(),
        tenant_store: tenant.clone(),
        settings,
        run_state,
        crm,
    });
    (runtime, handle)
}

fn gifts(count: u64) -> Vec<CrmGift> {
    (1..=count)
        .map(|n| CrmGift {
            virtuous_id: n.to_string(),
            transaction_source: Some("Stripe".into()),
            transaction_id: Some(format!("pi_{n}")),
            gift_type: Some("Credit".into()),
            amount: Some("1.00".into()),
            gift_date: Some("2026-01-05".into()),
            currency_code: Some("USD".into()),
            ..CrmGift::default()
        })
        .collect()
}

fn day(text: &str) -> jiff::civil::Date {
    parse_day(text).unwrap()
}

fn state_of(handle: &TenantHandle, id: &str) -> JobState {
    handle.reconciliation(id).unwrap().unwrap().state
}

#[actix_rt::test]
async fn one_job_runs_at_a_time_and_a_backfill_request_waits_behind_it() {
    // Goal: an operator's job is refused while one is unfinished; a backfill's request is
    // queued (the same request twice is one job); nothing is called while the tenant is
    // paused; after the resume both run, in order.
    let dir = tempfile::tempdir().unwrap();
    let (store, tenant) = open(dir.path());
    let crm = Arc::new(FakeCrm::with_gifts(gifts(3), 200));
    let (_runtime, handle) = start(
        &store,
        &tenant,
        crm.clone(),
        settings(None),
        TenantRunState::Paused,
    );
    eventually("children started", 5_000, || handle.children_started()).await;

    let first = handle
        .start_reconciliation("stripe", day("2026-01-01"), day("2026-01-31"))
        .await
        .unwrap();
    assert_eq!(first.state, JobState::Running);
    assert_eq!(first.transaction_source, "Stripe");
    let refused = handle
        .start_reconciliation("stripe", day("2026-01-01"), day("2026-01-02"))
        .await
        .unwrap_err();
    assert!(matches!(refused, RequestError::AlreadyRunning { ref id, .. } if *id == first.id));
    let unknown = handle
        .start_reconciliation("paypal", day("2026-01-01"), day("2026-01-02"))
        .await
        .unwrap_err();
    assert!(
        unknown.to_string().contains("configured: stripe"),
        "{unknown}"
    );
    let queued = handle
        .request_reconciliation(
            "stripe",
            "2026-01-03",
            "2026-01-09",
            "backfill b-1 confirmed",
        )
        .unwrap();
    assert_eq!(
        (queued.state, queued.trigger),
        (JobState::Pending, Trigger::Backfill)
    );
    let again = handle
        .request_reconciliation(
            "stripe",
            "2026-01-03",
            "2026-01-09",
            "backfill b-1 confirmed",
        )
        .unwrap();
    assert_eq!(again.id, queued.id);
    assert!(matches!(
        handle.request_reconciliation("stripe", "2026-1-3", "2026-01-09", "x"),
        Err(RequestError::InvalidDay(_))
    ));
    actix_rt::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(crm.queries.lock().unwrap().is_empty(), "paused: no call");

    handle.resume();
    eventually("both jobs done", 5_000, || {
        state_of(&handle, &first.id) == JobState::Done
            && state_of(&handle, &queued.id) == JobState::Done
    })
    .await;
    let first = handle.reconciliation(&first.id).unwrap().unwrap();
    let second = handle.reconciliation(&queued.id).unwrap().unwrap();
    assert!(first.finished_at_ms <= second.started_at_ms);
    assert_eq!(first.progress.pages_read, 2);
    // pi_1..3 are only in Virtuous (no money facts): a mismatch, alerted.
    assert_eq!(first.report.unwrap().mismatches, 3);
    let ids: Vec<String> = handle
        .reconciliations()
        .unwrap()
        .into_iter()
        .map(|job| job.id)
        .collect();
    assert_eq!(ids, [first.id.clone(), second.id.clone()]);
}

#[actix_rt::test]
async fn a_running_job_resumes_at_its_skip_after_the_reconciler_restarts() {
    // Goal: a job stored running with a skip reached (the previous generation's page) is
    // picked up by a new generation from that skip, and pages read before are kept.
    let dir = tempfile::tempdir().unwrap();
    let (store, tenant) = open(dir.path());
    let job = ReconciliationJob {
        id: "rec-7".into(),
        source: "stripe".into(),
        transaction_source: "Stripe".into(),
        from: "2026-01-01".into(),
        to: "2026-01-31".into(),
        trigger: Trigger::Operator,
        reason: "test".into(),
        state: JobState::Running,
        created_at_ms: 1,
        started_at_ms: Some(1),
        finished_at_ms: None,
        progress: Progress {
            pages_read: 1,
            pages_total: Some(3),
            skip: 2,
            total: Some(5),
        },
        failures: 0,
        error: None,
        report: None,
    };
    let rows: Vec<_> = gifts(2)
        .iter()
        .map(crate::reconciler::money_job::row_of)
        .collect();
    tenant.put_reconciliation_page(&job, &rows).unwrap();
    let crm = Arc::new(FakeCrm::with_gifts(gifts(5), 200));
    let (_runtime, handle) = start(
        &store,
        &tenant,
        crm.clone(),
        settings(None),
        TenantRunState::Running,
    );
    eventually("the job resumed and done", 5_000, || {
        state_of(&handle, "rec-7") == JobState::Done
    })
    .await;
    let skips: Vec<u64> = crm
        .queries
        .lock()
        .unwrap()
        .iter()
        .map(|query| query.2)
        .collect();
    assert_eq!(skips, [2, 4], "resumed at the stored skip");
    let done = handle.reconciliation("rec-7").unwrap().unwrap();
    assert_eq!(done.report.unwrap().virtuous_gifts_read, 5);

    // A restarted reconciler finds nothing to do and calls nobody.
    let before = crm.queries.lock().unwrap().len();
    let restarts = handle.status().actors["reconciler"].restarts;
    handle.kill_child(ActorKind::Reconciler, KillMode::Error);
    eventually("reconciler re-created", 5_000, || {
        handle.status().actors["reconciler"].restarts > restarts
    })
    .await;
    actix_rt::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(crm.queries.lock().unwrap().len(), before);
    assert!(tenant
        .get_checkpoint(&job_checkpoint("rec-7"))
        .unwrap()
        .is_some());
}

#[actix_rt::test]
async fn the_nightly_run_reconciles_the_previous_seven_days_of_each_source_once() {
    // Goal: when daily_at passed since the last nightly run, a job per source covers the 7
    // days before today; the checkpoint moves so it is not created twice; a schedule seen
    // for the first time waits for its next time.
    let dir = tempfile::tempdir().unwrap();
    let (store, tenant) = open(dir.path());
    let now_ms = SystemClock.now_ms();
    let midnight_ms = now_ms - now_ms % 86_400_000;
    let yesterday_ms = midnight_ms - 86_400_000;
    tenant
        .put_checkpoint(NIGHTLY_CHECKPOINT, yesterday_ms.to_string().as_bytes())
        .unwrap();
    let crm = Arc::new(FakeCrm::with_gifts(Vec::new(), 200));
    let (_runtime, handle) = start(
        &store,
        &tenant,
        crm.clone(),
        settings(Some((0, 0))),
        TenantRunState::Running,
    );
    eventually("the nightly job done", 5_000, || {
        handle
            .reconciliations()
            .unwrap()
            .iter()
            .any(|job| job.trigger == Trigger::Nightly && job.state == JobState::Done)
    })
    .await;
    let jobs = handle.reconciliations().unwrap();
    assert_eq!(jobs.len(), 1);
    let nightly = &jobs[0];
    let (from, to) = (day(&nightly.from), day(&nightly.to));
    assert_eq!(days_inclusive(from, to), 7);
    let handled: u64 =
        String::from_utf8(tenant.get_checkpoint(NIGHTLY_CHECKPOINT).unwrap().unwrap())
            .unwrap()
            .parse()
            .unwrap();
    assert!(handled >= midnight_ms);
    assert_eq!(
        to.tomorrow().unwrap(),
        jiff::Timestamp::from_millisecond(handled as i64)
            .unwrap()
            .to_zoned(jiff::tz::TimeZone::UTC)
            .date()
    );
    // More ticks: no second job.
    actix_rt::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(handle.reconciliations().unwrap().len(), 1);

    // Another tenant that never ran a nightly job: the first sight only sets the mark.
    let other_dir = tempfile::tempdir().unwrap();
    let (other_store, other_tenant) = open(other_dir.path());
    let (_other_runtime, other) = start(
        &other_store,
        &other_tenant,
        crm,
        settings(Some((0, 0))),
        TenantRunState::Running,
    );
    eventually("the mark set", 5_000, || {
        other_tenant
            .get_checkpoint(NIGHTLY_CHECKPOINT)
            .unwrap()
            .is_some()
    })
    .await;
    assert!(other.reconciliations().unwrap().is_empty());
}
