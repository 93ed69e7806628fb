//! Money reconciliation runs against a fake Crm and the real sled store.

use std::cell::RefCell;

use super::*;
use crate::money::{DifferenceKind, Progress, Trigger};
use crate::ports::{CrmReply, ManualClock};
use crate::retry::RetryPolicy;
use crate::store::queue_ops::{Completion, LeaseRequest, LeaseTable};
use crate::store::{EntryFact, Lane, NewEntry, RecordKind, Store, StoreOptions};
use crate::test_support::FakeCrm;

/// 2026-01-10T00:00:00Z
const NOW_MS: u64 = 1_768_003_200_000;

/// Grants `allowed` calls, then refuses with a wait of 5 s.
struct CountingBudget {
    allowed: RefCell<u64>,
    spent: RefCell<u64>,
}

impl ReconcileBudget for CountingBudget {
    fn try_spend_reconcile_call(&self, _now_ms: u64) -> Result<(), u64> {
        if *self.spent.borrow() >= *self.allowed.borrow() {
            return Err(5_000);
        }
        *self.spent.borrow_mut() += 1;
        Ok(())
    }
    fn settle_reconcile_call(&self, _reply: &CrmReply, _now_ms: u64) {}
}

fn budget(allowed: u64) -> CountingBudget {
    CountingBudget {
        allowed: RefCell::new(allowed),
        spent: RefCell::new(0),
    }
}

fn gift_entry(id: &str, day: &str, amount: &str) -> NewEntry {
    NewEntry {
        fact: EntryFact {
            kind: RecordKind::Gift,
            source: "stripe".into(),
            source_id: id.into(),
            idempotency_key: format!("stripe:gift:{id}"),
            lane: Lane::Live,
            transaction_source: "Stripe".into(),
            body_json: format!(
                r#"{{"transactionId":"{id}","amount":"{amount}","currencyCode":"USD","giftDate":"{day}"}}"#
            ),
        },
        aliases: Vec::new(),
        now_ms: NOW_MS,
    }
}

/// Gifts accepted by Virtuous (money facts recorded by the completion), then confirmed
/// except `awaiting` (their unconfirmed-index key stays).
fn store_with_accepted(
    dir: &std::path::Path,
    gifts: &[(&str, &str, &str)],
    refunded: &[&str],
    awaiting: &[&str],
) -> (Store, TenantStore) {
    let store = Store::open(dir, StoreOptions::default()).unwrap();
    let tenant = store.tenant("t").unwrap();
    let mut entries: Vec<NewEntry> = gifts
        .iter()
        .map(|(id, day, amount)| gift_entry(id, day, amount))
        .collect();
    entries.extend(refunded.iter().map(|id| {
        let mut refund = gift_entry(id, "2026-01-09", "0");
        refund.fact.kind = RecordKind::Refund;
        refund.fact.idempotency_key = format!("stripe:refund:{id}");
        refund
    }));
    tenant.enqueue(entries).unwrap();
    let leases = LeaseTable::new();
    loop {
        let request = LeaseRequest {
            now_ms: NOW_MS,
            generation: 1,
            batch_max: 100,
            lease_timeout_ms: 60_000,
            contact_batch: false,
            backfill_first: false,
            backfill_min_gifts: 1,
            live_only: false,
        };
        let batch = tenant.lease_ready(&leases, request).unwrap();
        if batch.entries.is_empty() {
            break;
        }
        let results = batch
            .entries
            .into_iter()
            .map(|leased| (leased, Completion::Accepted))
            .collect();
        let policy = RetryPolicy::from_settings(&[10], 0);
        tenant
            .complete_leased(&leases, 1, NOW_MS, results, &policy)
            .unwrap();
    }
    let inner = tenant.inner();
    for (id, _, _) in gifts.iter().filter(|(id, _, _)| !awaiting.contains(id)) {
        let key = inner.keys.unconfirmed(RecordKind::Gift, "stripe", id);
        inner.tree.remove(key).unwrap();
    }
    (store, tenant)
}

fn virtuous(id: u64, transaction_id: &str, day: &str, amount: &str) -> CrmGift {
    CrmGift {
        virtuous_id: id.to_string(),
        transaction_source: Some("Stripe".into()),
        transaction_id: Some(transaction_id.into()),
        gift_type: Some("Credit".into()),
        amount: Some(amount.into()),
        gift_date: Some(day.into()),
        currency_code: Some("USD".into()),
        ..CrmGift::default()
    }
}

fn reversal(id: u64, of: u64, amount: &str) -> CrmGift {
    CrmGift {
        gift_type: Some("ReversingTransaction".into()),
        reversed_gift_id: Some(of.to_string()),
        ..virtuous(id, &format!("of-{of}-reversal"), "2026-01-09", amount)
    }
}

fn job(id: &str) -> ReconciliationJob {
    ReconciliationJob {
        id: id.into(),
        source: "stripe".into(),
        transaction_source: "Stripe".into(),
        from: "2026-01-05".into(),
        to: "2026-01-09".into(),
        trigger: Trigger::Operator,
        reason: "test".into(),
        state: JobState::Running,
        created_at_ms: NOW_MS,
        started_at_ms: Some(NOW_MS),
        finished_at_ms: None,
        progress: Progress::default(),
        failures: 0,
        error: None,
        report: None,
    }
}

async fn run(
    tenant: &TenantStore,
    crm: Arc<FakeCrm>,
    budget: &CountingBudget,
    job: ReconciliationJob,
) -> JobRun {
    let clock = ManualClock::new(NOW_MS);
    let always = || true;
    let context = JobContext {
        tenant_id: "t",
        store: tenant,
        crm,
        budget,
        clock: &clock,
        take: 2,
        may_go_on: &always,
    };
    run_job(context, job).await.unwrap()
}

#[actix_rt::test]
async fn a_job_pages_within_the_budget_resumes_at_its_skip_and_lists_each_difference() {
    // Goal: one budget call per page; a refused call leaves the job at its skip and the next
    // run goes on from there; the report nets the refund against the reversal, lists the
    // missing, awaiting-import and Virtuous-only ids, and raises `money_mismatch`.
    let dir = tempfile::tempdir().unwrap();
    let (_store, tenant) = store_with_accepted(
        dir.path(),
        &[
            ("pi_1", "2026-01-05", "10.00"),
            ("pi_2", "2026-01-06", "25.00"),
            ("pi_3", "2026-01-07", "5.00"),
            ("pi_4", "2026-01-08", "7.00"),
            ("pi_old", "2025-12-01", "1.00"),
        ],
        &["pi_2"],
        &["pi_3"],
    );
    let crm = Arc::new(FakeCrm::with_gifts(
        vec![
            virtuous(11, "pi_1", "2026-01-05T00:00:00", "10"),
            virtuous(12, "pi_2", "2026-01-06", "25.00"),
            reversal(13, 12, "-25.00"),
            virtuous(14, "pi_x", "2026-01-09", "3.00"),
            virtuous(15, "pi_old", "2025-12-01", "1.00"),
        ],
        200,
    ));
    let first = run(&tenant, crm.clone(), &budget(1), job("rec-1")).await;
    assert_eq!(first, JobRun::Wait { wait_ms: 5_000 });
    let stored = tenant.reconciliation_job("rec-1").unwrap().unwrap();
    assert_eq!(
        (
            stored.progress.pages_read,
            stored.progress.skip,
            stored.progress.pages_total
        ),
        (1, 2, Some(3))
    );
    assert_eq!(tenant.reconciliation_rows("rec-1").unwrap().len(), 2);

    let JobRun::Finished(done) = run(&tenant, crm.clone(), &budget(10), stored).await else {
        panic!("the job ends once every page is read");
    };
    let queries = crm.queries.lock().unwrap().clone();
    let since_ms = NOW_MS - 6 * 86_400_000; // 2026-01-04: the day before `from`
    assert_eq!(
        queries,
        [
            ("Stripe".to_string(), since_ms, 0, 2),
            ("Stripe".to_string(), since_ms, 2, 2),
            ("Stripe".to_string(), since_ms, 4, 2)
        ]
    );
    assert_eq!(done.state, JobState::Done);
    assert_eq!(done.progress.pages_read, 3);
    let report = done.report.as_ref().unwrap();
    let kinds: Vec<(&str, DifferenceKind)> = report
        .differences
        .iter()
        .map(|d| (d.transaction_id.as_str(), d.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            ("pi_3", DifferenceKind::AwaitingImport),
            ("pi_4", DifferenceKind::MissingInVirtuous),
            ("pi_x", DifferenceKind::OnlyInVirtuous),
        ]
    );
    assert!(!report.clean);
    assert_eq!(report.virtuous_gifts_read, 5);
    assert!(tenant.reconciliation_rows("rec-1").unwrap().is_empty());
    let alert = tenant
        .alerts()
        .unwrap()
        .into_iter()
        .find(|a| a.code == MONEY_MISMATCH_ALERT);
    let alert = alert.expect("money_mismatch raised");
    assert!(
        alert.message.contains("rec-1") && alert.message.contains("2 difference"),
        "{}",
        alert.message
    );
    assert_eq!(tenant.reconciliation_job("rec-1").unwrap().unwrap(), *done);
}

#[actix_rt::test]
async fn a_clean_job_resolves_the_alert_only_when_every_source_is_clean() {
    // Goal: a clean run resolves `money_mismatch` unless another source's latest run still
    // differs.
    let dir = tempfile::tempdir().unwrap();
    let (_store, tenant) =
        store_with_accepted(dir.path(), &[("pi_1", "2026-01-05", "10.00")], &[], &[]);
    let matching = || {
        Arc::new(FakeCrm::with_gifts(
            vec![virtuous(11, "pi_1", "2026-01-05", "10.00")],
            200,
        ))
    };
    let missing = Arc::new(FakeCrm::with_gifts(Vec::new(), 200));
    let JobRun::Finished(first) = run(&tenant, missing.clone(), &budget(10), job("rec-1")).await
    else {
        panic!("finished")
    };
    assert!(!first.report.unwrap().clean);
    let open = |tenant: &TenantStore| {
        tenant
            .alert_state(MONEY_MISMATCH_ALERT)
            .unwrap()
            .resolved_at_ms
            .is_none()
    };
    assert!(open(&tenant));
    // Another source's job differs too; then stripe is clean: still open.
    let mut other = job("rec-2");
    other.source = "gala".into();
    other.transaction_source = "Gala".into();
    let gala = Arc::new(FakeCrm::with_gifts(
        vec![CrmGift {
            transaction_source: Some("Gala".into()),
            ..virtuous(21, "g-1", "2026-01-05", "1")
        }],
        200,
    ));
    let JobRun::Finished(_) = run(&tenant, gala, &budget(10), other).await else {
        panic!()
    };
    let JobRun::Finished(clean) = run(&tenant, matching(), &budget(10), job("rec-3")).await else {
        panic!()
    };
    assert!(clean.report.unwrap().clean);
    assert!(open(&tenant), "gala's latest run still differs");
    // Gala clean as well: resolved.
    let mut gala_clean = job("rec-4");
    gala_clean.source = "gala".into();
    gala_clean.transaction_source = "Gala".into();
    let empty = Arc::new(FakeCrm::with_gifts(Vec::new(), 200));
    let JobRun::Finished(_) = run(&tenant, empty, &budget(10), gala_clean).await else {
        panic!()
    };
    assert!(!open(&tenant));
}

#[actix_rt::test]
async fn failed_calls_wait_longer_each_time_then_fail_the_job() {
    // Goal: an answer without a page is a failure: the job waits (doubling) and fails after
    // FAILURES_MAX in a row, with the reason kept.
    let dir = tempfile::tempdir().unwrap();
    let (_store, tenant) = store_with_accepted(dir.path(), &[], &[], &[]);
    let crm = Arc::new(FakeCrm::with_gifts(Vec::new(), 503));
    let mut waits = Vec::new();
    let mut current = job("rec-1");
    loop {
        match run(&tenant, crm.clone(), &budget(100), current.clone()).await {
            JobRun::Wait { wait_ms } => {
                waits.push(wait_ms);
                current = tenant.reconciliation_job("rec-1").unwrap().unwrap();
            }
            JobRun::Finished(job) => {
                current = *job;
                break;
            }
            JobRun::Stopped => panic!("never stopped"),
        }
    }
    assert_eq!(waits.len() as u32, FAILURES_MAX - 1);
    assert_eq!(&waits[..3], [5_000, 10_000, 20_000]);
    assert_eq!(current.state, JobState::Failed);
    assert!(current.error.unwrap().contains("503"));
    assert_eq!(
        tenant.reconciliation_job("rec-1").unwrap().unwrap().state,
        JobState::Failed
    );
}

#[test]
fn virtuous_gifts_become_rows_with_exact_amounts() {
    // Goal: amounts follow the gift's currency, unreadable ones stay unknown, and a reversal
    // names its gift (`0` is none).
    let yen = CrmGift {
        currency_code: Some("JPY".into()),
        project_codes: vec!["SPR".into(), "GEN".into()],
        ..virtuous(1, "pi_1", "2026-01-05", "1234")
    };
    let row = row_of(&yen);
    assert_eq!(
        (
            row.amount_minor,
            row.currency.as_str(),
            row.project.as_str()
        ),
        (Some(1234), "jpy", "SPR")
    );
    let odd = CrmGift {
        amount: Some("12.345".into()),
        currency_code: None,
        ..virtuous(2, "", "2026-01-05", "")
    };
    let row = row_of(&odd);
    assert_eq!(
        (row.amount_minor, row.transaction_id, row.currency.as_str()),
        (None, None, "usd")
    );
    let reversed = row_of(&reversal(3, 1, "-1234"));
    assert!(reversed.is_reversal);
    assert_eq!(reversed.reversed_gift_id.as_deref(), Some("1"));
    let zero = CrmGift {
        reversed_gift_id: Some("0".into()),
        ..virtuous(4, "pi_4", "2026-01-05", "1")
    };
    assert!(!row_of(&zero).is_reversal);
}
