//! Reconciliation passes against a fake Crm and the real sled store.

use std::cell::RefCell;
use std::collections::BTreeMap;

use super::*;
use crate::gift_match::ALERT_DUPLICATE_GIFT;
use crate::ports::{CrmReply, ManualClock};
use crate::store::types::SyncState;
use crate::store::{EntryFact, Lane, NewEntry, Store, StoreOptions};
use crate::test_support::FakeCrm;

const DAY_MS: u64 = 86_400_000;

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

pub(crate) fn gift(id: u64, source: &str, transaction_id: &str) -> CrmGift {
    CrmGift {
        virtuous_id: id.to_string(),
        transaction_source: Some(source.to_string()),
        transaction_id: Some(transaction_id.to_string()),
        gift_type: Some("Credit".into()),
        reversed_gift_id: None,
        create_date_time_utc: None,
        amount: Some("10.00".into()),
        gift_date: Some("2026-01-02".into()),
        currency_code: Some("USD".into()),
        project_codes: Vec::new(),
    }
}

/// A store with `count` submitted Stripe gifts `pi_0…` submitted at `submitted_at_ms`
/// (queued, then taken off the queue as a submitter's completion would).
pub(crate) fn submitted_store(
    dir: &std::path::Path,
    count: usize,
    submitted_at_ms: u64,
) -> (Store, TenantStore) {
    let store = Store::open(dir, StoreOptions::default()).unwrap();
    let tenant = store.tenant("t").unwrap();
    let ids: Vec<String> = (0..count).map(|n| format!("pi_{n}")).collect();
    let outcomes = tenant
        .enqueue(
            ids.iter()
                .map(|id| NewEntry {
                    fact: EntryFact {
                        kind: RecordKind::Gift,
                        source: "stripe".into(),
                        source_id: id.clone(),
                        idempotency_key: format!("stripe:gift:{id}"),
                        lane: Lane::Live,
                        transaction_source: "Stripe".into(),
                        body_json: "{}".into(),
                    },
                    aliases: Vec::new(),
                    now_ms: submitted_at_ms,
                })
                .collect(),
        )
        .unwrap();
    let queued: Vec<(Lane, u64)> = outcomes
        .iter()
        .map(|outcome| match outcome {
            crate::store::EnqueueOutcome::Queued { seq } => (Lane::Live, *seq),
            duplicate => panic!("distinct ids: {duplicate:?}"),
        })
        .collect();
    assert_eq!(tenant.remove_queue_entries(&queued).unwrap(), count);
    let submitted: Vec<Unconfirmed> = ids
        .iter()
        .map(|id| Unconfirmed {
            kind: RecordKind::Gift,
            source: "stripe".into(),
            source_id: id.clone(),
            transaction_source: "Stripe".into(),
            transaction_id: id.clone(),
            submitted_at_ms,
        })
        .collect();
    tenant.mark_submitted(&submitted, submitted_at_ms).unwrap();
    (store, tenant)
}

fn state_of(tenant: &TenantStore, id: &str) -> SyncState {
    tenant
        .get_record(RecordKind::Gift, "stripe", id)
        .unwrap()
        .unwrap()
        .state
}

async fn pass(
    tenant: &TenantStore,
    crm: Arc<FakeCrm>,
    budget: &CountingBudget,
    clock: &ManualClock,
    settings: PassSettings,
) -> PassReport {
    let always = || true;
    let context = PassContext {
        tenant_id: "t",
        store: tenant,
        crm,
        budget,
        clock,
        still_current: &always,
    };
    run_pass(context, settings).await.unwrap()
}

fn budget(allowed: u64) -> CountingBudget {
    CountingBudget {
        allowed: RefCell::new(allowed),
        spent: RefCell::new(0),
    }
}

const SETTINGS: PassSettings = PassSettings {
    query_take: 2,
    needs_review_after_ms: 3 * DAY_MS,
};

#[actix_rt::test]
async fn a_pass_pages_everything_confirms_and_flags_duplicates() {
    // Goal: every page is read (one budget call each), matches confirm, two gifts for one id flag a duplicate, reversals and other sources are ignored.
    let dir = tempfile::tempdir().unwrap();
    let submitted_at_ms = 10 * DAY_MS + 5;
    let (_store, tenant) = submitted_store(dir.path(), 4, submitted_at_ms);
    let mut reversal = gift(9, "Stripe", "pi_3");
    reversal.gift_type = Some("ReversingTransaction".into());
    let crm = Arc::new(FakeCrm::with_gifts(
        vec![
            gift(1, "Stripe", "pi_0"),
            gift(2, "Stripe", "pi_1"),
            gift(3, "Stripe", "pi_1"),
            gift(4, "Stripe", "someone_else"),
            reversal,
            gift(7, "Other", "pi_2"),
        ],
        200,
    ));
    let budget = budget(100);
    let clock = ManualClock::new(submitted_at_ms + 1_000);
    let report = pass(&tenant, Arc::clone(&crm), &budget, &clock, SETTINGS).await;

    assert_eq!(report.pages_read, 3, "5 Stripe gifts, 2 per page");
    assert_eq!(*budget.spent.borrow(), 3, "one budget call per page");
    let queries = crm.queries.lock().unwrap().clone();
    assert_eq!(
        queries[0],
        ("Stripe".into(), submitted_at_ms - DAY_MS, 0, 2)
    );
    assert_eq!(queries[2].2, 4, "skip advances by the page size");
    assert_eq!((report.confirmed, report.duplicates), (1, 1));
    assert_eq!(state_of(&tenant, "pi_0"), SyncState::Confirmed);
    assert_eq!(state_of(&tenant, "pi_1"), SyncState::DuplicateDetected);
    assert_eq!(
        state_of(&tenant, "pi_2"),
        SyncState::Submitted,
        "other source"
    );
    assert_eq!(
        state_of(&tenant, "pi_3"),
        SyncState::Submitted,
        "a reversal"
    );
    let alerts = tenant.alerts().unwrap();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].code, ALERT_DUPLICATE_GIFT);
    assert!(alerts[0].message.contains("2, 3"));
    assert_eq!(tenant.list_unconfirmed().unwrap().len(), 2);
    assert_eq!(tenant.counts().confirmed, 2);
}

#[actix_rt::test]
async fn stale_records_go_to_review_and_a_refused_budget_stops_the_pass() {
    // Goal: past the window → needs_review + alert; a refused call ends the pass with a wait and reviews nothing it could not read.
    let dir = tempfile::tempdir().unwrap();
    let (_store, tenant) = submitted_store(dir.path(), 3, 10 * DAY_MS);
    let crm = Arc::new(FakeCrm::with_gifts(vec![gift(1, "Stripe", "pi_0")], 200));
    let clock = ManualClock::new(13 * DAY_MS + 1);

    let refused = budget(0);
    let report = pass(&tenant, Arc::clone(&crm), &refused, &clock, SETTINGS).await;
    assert_eq!(report.budget_wait_ms, Some(5_000));
    assert!(report.stopped_early.is_some());
    assert_eq!(report.needs_review, 0, "nothing reviewed without reading");
    assert!(
        crm.queries.lock().unwrap().is_empty(),
        "no call without budget"
    );

    let report = pass(&tenant, Arc::clone(&crm), &budget(10), &clock, SETTINGS).await;
    assert_eq!((report.confirmed, report.needs_review), (1, 2));
    assert_eq!(state_of(&tenant, "pi_1"), SyncState::NeedsReview);
    assert_eq!(tenant.counts().needs_review, 2);
    assert!(tenant.list_unconfirmed().unwrap().is_empty());
    assert_eq!(tenant.alerts().unwrap()[0].code, ALERT_NEEDS_REVIEW);
}

#[actix_rt::test]
async fn an_error_answer_changes_nothing() {
    // Goal: a 5xx query answer ends the pass without confirming or reviewing anything.
    let dir = tempfile::tempdir().unwrap();
    let (_store, tenant) = submitted_store(dir.path(), 1, 10 * DAY_MS);
    let crm = Arc::new(FakeCrm::with_gifts(vec![gift(1, "Stripe", "pi_0")], 503));
    let clock = ManualClock::new(20 * DAY_MS);
    let report = pass(&tenant, crm, &budget(10), &clock, SETTINGS).await;
    assert!(report.stopped_early.unwrap().contains("503"));
    assert_eq!((report.confirmed, report.needs_review), (0, 0));
    assert_eq!(state_of(&tenant, "pi_0"), SyncState::Submitted);
}

#[test]
fn matching_offers_unindexed_gifts_to_earlier_records() {
    // Goal: a gift whose transaction id is not unconfirmed is offered to the same ingress sources (for late duplicates and reviewed records).
    let mut records = BTreeMap::new();
    records.insert(
        "pi_a".to_string(),
        vec![Unconfirmed {
            kind: RecordKind::Gift,
            source: "stripe".into(),
            source_id: "pi_a".into(),
            transaction_source: "Stripe".into(),
            transaction_id: "pi_a".into(),
            submitted_at_ms: 1,
        }],
    );
    let source = UnconfirmedSource {
        transaction_source: "Stripe".into(),
        records,
        oldest_submitted_at_ms: 1,
    };
    let confirmations = match_gifts(
        &source,
        &[gift(5, "stripe", "pi_old"), gift(6, "Stripe", "pi_a")],
    );
    assert_eq!(confirmations.len(), 2);
    assert_eq!(confirmations[0].source_id, "pi_a");
    assert_eq!(confirmations[0].virtuous_ids, vec!["6".to_string()]);
    assert_eq!(confirmations[1].source_id, "pi_old");
    assert_eq!(confirmations[1].source, "stripe");
}
