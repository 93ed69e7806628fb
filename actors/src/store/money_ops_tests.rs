//! Money facts written by the submitter's completion, and reconciliation jobs, on the real
//! sled store in a temp dir.

use crate::money::{JobState, Progress, ReconciliationJob, StoredMoney, Trigger, VirtuousRow};
use crate::retry::RetryPolicy;
use crate::store::queue_ops::{Completion, LeaseRequest, LeaseTable};
use crate::store::{EntryFact, Lane, NewEntry, RecordKind, Store, StoreOptions, TenantStore};

fn entry(kind: RecordKind, source_id: &str, body_json: String) -> NewEntry {
    NewEntry {
        fact: EntryFact {
            kind,
            source: "stripe".into(),
            source_id: source_id.into(),
            idempotency_key: format!("stripe:{kind:?}:{source_id}"),
            lane: Lane::Live,
            transaction_source: "Stripe".into(),
            body_json,
        },
        aliases: Vec::new(),
        now_ms: 1_000,
    }
}

fn gift(id: &str, day: &str, amount: &str) -> NewEntry {
    entry(
        RecordKind::Gift,
        id,
        format!(
            r#"{{"transactionId":"{id}","amount":"{amount}","currencyCode":"USD","giftDate":"{day}","designations":[{{"code":"GEN","amountDesignated":"{amount}"}}]}}"#
        ),
    )
}

fn refund(id: &str) -> NewEntry {
    entry(
        RecordKind::Refund,
        id,
        r#"{"reversedGiftId":null,"giftDate":"2026-02-01","notes":"refund"}"#.into(),
    )
}

fn open(dir: &std::path::Path) -> (Store, TenantStore) {
    let store = Store::open(dir, StoreOptions::default()).unwrap();
    let tenant = store.tenant("t").unwrap();
    (store, tenant)
}

fn request(generation: u64) -> LeaseRequest {
    LeaseRequest {
        now_ms: 2_000,
        generation,
        batch_max: 100,
        lease_timeout_ms: 60_000,
        contact_batch: false,
        backfill_first: false,
        backfill_min_gifts: 1,
        live_only: false,
    }
}

/// Leases everything ready and completes each entry with `completion(source id)`.
fn complete_all(
    tenant: &TenantStore,
    leases: &LeaseTable,
    generation: u64,
    completion: impl Fn(&str) -> Completion,
) {
    loop {
        let batch = tenant.lease_ready(leases, request(generation)).unwrap();
        if batch.entries.is_empty() {
            return;
        }
        let results = batch
            .entries
            .iter()
            .map(|leased| (leased.clone(), completion(&leased.entry.fact.source_id)))
            .collect();
        tenant
            .complete_leased(
                leases,
                generation,
                2_000,
                results,
                &RetryPolicy::from_settings(&[10], 0),
            )
            .unwrap();
    }
}

fn money(amount_minor: i64, refunded: bool) -> StoredMoney {
    StoredMoney {
        project: "GEN".into(),
        amount_minor,
        currency: "usd".into(),
        refunded,
    }
}

#[test]
fn accepted_gifts_are_recorded_dead_letters_never_and_a_reversal_marks_its_gift_refunded() {
    // Goal: the completion batch records an accepted gift's money (day, project, minor
    // units), nothing for a dead letter or an unreadable body (the completion still
    // succeeds), and an accepted reversal marks its gift refunded.
    let dir = tempfile::tempdir().unwrap();
    let (_store, tenant) = open(dir.path());
    let mut unreadable = gift("pi_bad", "2026-01-02", "1");
    unreadable.fact.body_json = r#"{"transactionId":"pi_bad","amount":"one"}"#.into();
    tenant
        .enqueue(vec![
            gift("pi_ok", "2026-01-02", "12.34"),
            gift("pi_dead", "2026-01-02", "5.00"),
            gift("pi_refunded", "2026-01-03", "40"),
            unreadable,
        ])
        .unwrap();
    let leases = LeaseTable::new();
    complete_all(&tenant, &leases, 1, |id| match id {
        "pi_dead" => Completion::Dead {
            reason: "400".into(),
            status: Some(400),
        },
        _ => Completion::Accepted,
    });
    assert_eq!(
        tenant.money_fact("stripe", "pi_ok").unwrap(),
        Some(("2026-01-02".into(), money(1234, false)))
    );
    assert_eq!(tenant.money_fact("stripe", "pi_dead").unwrap(), None);
    assert_eq!(tenant.money_fact("stripe", "pi_bad").unwrap(), None);
    let bad = tenant
        .get_record(RecordKind::Gift, "stripe", "pi_bad")
        .unwrap()
        .unwrap();
    assert_eq!(bad.state, crate::store::SyncState::Submitted);

    tenant
        .enqueue(vec![refund("pi_refunded"), refund("pi_unknown")])
        .unwrap();
    complete_all(&tenant, &leases, 1, |_| Completion::Accepted);
    assert_eq!(
        tenant.money_fact("stripe", "pi_refunded").unwrap(),
        Some(("2026-01-03".into(), money(4000, true)))
    );
    assert_eq!(tenant.money_fact("stripe", "pi_unknown").unwrap(), None);

    let facts = tenant
        .money_facts("stripe", "2026-01-01", "2026-01-31")
        .unwrap();
    let ids: Vec<&str> = facts.iter().map(|f| f.transaction_id.as_str()).collect();
    assert_eq!(ids, ["pi_ok", "pi_refunded"], "day order, then id");
    assert!(facts[1].refunded);
    assert!(
        tenant
            .money_facts("stripe", "2026-01-03", "2026-01-03")
            .unwrap()
            .len()
            == 1
    );
    assert!(tenant
        .money_facts("other", "2026-01-01", "2026-01-31")
        .unwrap()
        .is_empty());
    assert!(tenant.gift_awaits_import("stripe", "pi_ok").unwrap());
}

#[test]
fn a_crash_before_the_completion_records_nothing_and_the_resend_records_once() {
    // Goal: a gift Virtuous accepted whose completion never ran (a crash) has no fact; the
    // next generation sends it again and records exactly one; a second acceptance of the
    // same gift (a re-send after a crash that lost only the flush) keeps one fact and its
    // refund.
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, tenant) = open(dir.path());
        tenant
            .enqueue(vec![gift("pi_1", "2026-01-05", "10.00")])
            .unwrap();
        let leases = LeaseTable::new();
        let leased = tenant.lease_ready(&leases, request(1)).unwrap();
        assert_eq!(leased.entries.len(), 1);
        // Virtuous accepted; the process dies before `complete_leased`.
        drop(leased);
        drop(tenant);
        drop(store);
    }
    let (_store, tenant) = open(dir.path());
    assert_eq!(tenant.money_fact("stripe", "pi_1").unwrap(), None);
    let leases = LeaseTable::new();
    complete_all(&tenant, &leases, 2, |_| Completion::Accepted);
    assert_eq!(
        tenant
            .money_facts("stripe", "2026-01-01", "2026-01-31")
            .unwrap()
            .len(),
        1
    );

    tenant.enqueue(vec![refund("pi_1")]).unwrap();
    complete_all(&tenant, &leases, 2, |_| Completion::Accepted);
    // The same gift accepted again (its entry queued again by a replay).
    let inner = tenant.inner();
    let mut batch = sled::Batch::default();
    let mut writes = super::MoneyWrites::default();
    writes
        .gift_accepted(inner, &mut batch, &gift("pi_1", "2026-01-05", "10.00").fact)
        .unwrap();
    inner.tree.apply_batch(batch).unwrap();
    let facts = tenant
        .money_facts("stripe", "2026-01-01", "2026-01-31")
        .unwrap();
    assert_eq!(facts.len(), 1);
    assert!(facts[0].refunded, "a re-acceptance keeps the refund");
    // Accepted again with another day (an edited replay): the old day's fact goes.
    let mut batch = sled::Batch::default();
    writes
        .gift_accepted(inner, &mut batch, &gift("pi_1", "2026-01-06", "10.00").fact)
        .unwrap();
    inner.tree.apply_batch(batch).unwrap();
    let facts = tenant
        .money_facts("stripe", "2026-01-01", "2026-01-31")
        .unwrap();
    assert_eq!(facts.len(), 1);
    assert_eq!(facts[0].day, "2026-01-06");
}

fn job(id: &str, created_at_ms: u64) -> ReconciliationJob {
    ReconciliationJob {
        id: id.into(),
        source: "stripe".into(),
        transaction_source: "Stripe".into(),
        from: "2026-01-01".into(),
        to: "2026-01-31".into(),
        trigger: Trigger::Operator,
        reason: "test".into(),
        state: JobState::Running,
        created_at_ms,
        started_at_ms: Some(created_at_ms),
        finished_at_ms: None,
        progress: Progress::default(),
        failures: 0,
        error: None,
        report: None,
    }
}

fn row(virtuous_id: &str) -> VirtuousRow {
    VirtuousRow {
        virtuous_id: virtuous_id.into(),
        transaction_id: Some(format!("pi_{virtuous_id}")),
        is_reversal: false,
        reversed_gift_id: None,
        day: Some("2026-01-02".into()),
        project: String::new(),
        currency: "usd".into(),
        amount_minor: Some(100),
    }
}

#[test]
fn a_job_keeps_its_pages_with_its_progress_and_drops_them_when_it_ends() {
    // Goal: rows and progress are written together, a page read twice keeps one row per
    // gift, jobs list oldest first, finishing drops the rows, removing drops everything.
    let dir = tempfile::tempdir().unwrap();
    let (_store, tenant) = open(dir.path());
    let mut first = job(&tenant.new_reconciliation_id().unwrap(), 2_000);
    let second = job(&tenant.new_reconciliation_id().unwrap(), 1_000);
    assert_ne!(first.id, second.id);
    tenant.put_reconciliation_job(&second).unwrap();
    first.progress.skip = 2;
    tenant
        .put_reconciliation_page(&first, &[row("1"), row("2")])
        .unwrap();
    tenant
        .put_reconciliation_page(&first, &[row("2"), row("3")])
        .unwrap();
    assert_eq!(tenant.reconciliation_rows(&first.id).unwrap().len(), 3);
    assert!(tenant.reconciliation_rows(&second.id).unwrap().is_empty());
    let ids: Vec<String> = tenant
        .reconciliation_jobs()
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(ids, [second.id.clone(), first.id.clone()]);
    assert_eq!(
        tenant
            .reconciliation_job(&first.id)
            .unwrap()
            .unwrap()
            .progress
            .skip,
        2
    );
    first.state = JobState::Done;
    tenant.finish_reconciliation(&first).unwrap();
    assert!(tenant.reconciliation_rows(&first.id).unwrap().is_empty());
    assert_eq!(
        tenant.reconciliation_job(&first.id).unwrap().unwrap().state,
        JobState::Done
    );
    tenant.remove_reconciliation(&first.id).unwrap();
    assert_eq!(tenant.reconciliation_job(&first.id).unwrap(), None);
    assert_eq!(tenant.reconciliation_jobs().unwrap().len(), 1);
}
