//! Capture's backfill jobs over the real sled store, with an in-memory file (the readers
//! and the classifier are tested on real files in the `steward` crate).

use std::sync::{Arc, Mutex};

use super::tests::{fast_settings, test_store, TestStore};
use super::*;
use crate::backfill::{
    BackfillAction, BackfillCommandError, BackfillFiles, BackfillJob, ClassifiedRow, Cursor,
    JobSpec, JobState, RowChunk, RowOutcome, RowReader,
};
use crate::ports::CrmWrite;
use crate::store::{EntryFact, Lane, RecordKind, TenantRunState};
use crate::test_support::{eventually, reply, FakeCrm};

/// Row `n` (numbered from 2, as a CSV's first data row): every 10th is rejected, every 7th
/// skipped, the rest are gifts `g{n}`.
fn row_outcome(n: u64) -> RowOutcome {
    if n % 10 == 0 {
        RowOutcome::Rejected {
            reason: format!("row {n}: bad amount"),
        }
    } else if n % 7 == 0 {
        RowOutcome::Skipped {
            reason: "failed".into(),
        }
    } else {
        RowOutcome::Payment {
            entries: vec![gift_entry(&format!("g{n}"), Lane::Live)],
            alerts: Vec::new(),
            money: None,
        }
    }
}

pub(super) fn gift_entry(id: &str, lane: Lane) -> NewEntry {
    NewEntry {
        fact: EntryFact {
            kind: RecordKind::Gift,
            source: "stripe".into(),
            source_id: id.into(),
            idempotency_key: format!("stripe:gift:{id}"),
            lane,
            transaction_source: "Stripe".into(),
            body_json: format!(r#"{{"transactionId":"{id}","batch":"history"}}"#),
        },
        aliases: Vec::new(),
        now_ms: 0,
    }
}

/// A file of `rows` data rows; the cursor's offset is the index of the next row.
pub(super) struct MemoryFiles {
    pub(super) rows: u64,
    pub(super) opened_at: Mutex<Vec<Cursor>>,
}

struct MemoryReader {
    rows: u64,
    next: u64,
}

impl RowReader for MemoryReader {
    fn read(&mut self, max_rows: usize) -> Result<RowChunk, String> {
        let end = (self.next + max_rows as u64).min(self.rows);
        let rows = (self.next..end)
            .map(|index| ClassifiedRow {
                row: index + 2,
                outcome: row_outcome(index + 2),
            })
            .collect();
        self.next = end;
        Ok(RowChunk {
            rows,
            next: Cursor {
                offset: end,
                row: end + 1,
                page: None,
            },
            end: end == self.rows,
        })
    }
}

impl BackfillFiles for MemoryFiles {
    fn open(
        &self,
        _job_id: &str,
        _spec: &JobSpec,
        at: Cursor,
    ) -> Result<Box<dyn RowReader>, String> {
        let next = at.offset;
        self.opened_at.lock().unwrap().push(at);
        Ok(Box::new(MemoryReader {
            rows: self.rows,
            next,
        }))
    }

    fn classify_listed(&self, spec: &JobSpec, item: crate::ports::PolledItem) -> RowOutcome {
        listed_outcome(spec, item)
    }
}

/// The test's classifier of a listed record: its entries in the `backfill` lane, or a
/// reject naming the record.
fn listed_outcome(_spec: &JobSpec, item: crate::ports::PolledItem) -> RowOutcome {
    match item.entries {
        Ok(entries) => RowOutcome::Payment {
            entries: entries
                .into_iter()
                .map(|mut entry| {
                    entry.fact.lane = Lane::Backfill;
                    entry
                })
                .collect(),
            alerts: Vec::new(),
            money: None,
        },
        Err(reason) => RowOutcome::Rejected {
            reason: format!("record {}: {reason}", item.record_id),
        },
    }
}

fn spec() -> JobSpec {
    JobSpec {
        source: "stripe".into(),
        format: "csv".into(),
        mapping_json: r#""stripe_payments_export""#.into(),
        label: "history".into(),
        listing: None,
    }
}

pub(super) fn start(
    runtime: &Runtime,
    store: &TestStore,
    crm: Arc<FakeCrm>,
    files: Arc<MemoryFiles>,
) -> TenantHandle {
    let handle = runtime.start_tenant(TenantSpec {
        tenant_id: "bf".into(),
        store: store.store.clone(),
        tenant_store: store.store.tenant("bf").unwrap(),
        settings: TenantSettings {
            // Calls are not the subject here: 1,000 an hour would take minutes.
            budget: crate::budget::BudgetSettings {
                hourly_limit: 3_600_000,
                ..crate::budget::BudgetSettings::default()
            },
            ..fast_settings()
        },
        run_state: TenantRunState::Running,
        crm,
    });
    handle.replace_backfill_files(files);
    handle
}

pub(super) fn job(handle: &TenantHandle) -> BackfillJob {
    handle.backfill_job("bf_1").unwrap().unwrap()
}

/// Transaction ids of every gift written, in order.
pub(super) fn gifts_sent(crm: &FakeCrm) -> Vec<String> {
    crm.requests()
        .into_iter()
        .flat_map(|request| match request {
            CrmWrite::GiftTransactions { bodies, .. } => bodies,
            _ => Vec::new(),
        })
        .map(|body| {
            let value: serde_json::Value = serde_json::from_str(&body).unwrap();
            value["transactionId"].as_str().unwrap().to_string()
        })
        .collect()
}

fn expected_gifts(rows: u64) -> Vec<String> {
    (2..rows + 2)
        .filter(|n| matches!(row_outcome(*n), RowOutcome::Payment { .. }))
        .map(|n| format!("g{n}"))
        .collect()
}

#[actix_rt::test]
async fn a_dry_run_counts_without_queueing_and_the_run_sends_every_gift_once_in_the_backfill_lane()
{
    // Goal: the dry run reads every row, counts payments, skips, rejects (stored with their row numbers) and known payments, queues nothing and estimates the calls; the run then sends each new gift once, in batches, and the job ends done with its counts.
    let store = test_store();
    let runtime = Runtime::new(1);
    let crm = FakeCrm::scripted(|_| reply(200));
    let files = Arc::new(MemoryFiles {
        rows: 2_500,
        opened_at: Mutex::new(Vec::new()),
    });
    let handle = start(&runtime, &store, Arc::clone(&crm), Arc::clone(&files));
    eventually("children started", 5_000, || handle.children_started()).await;
    // g2 arrived live before: a known payment, a duplicate.
    handle
        .enqueue(vec![gift_entry("g2", Lane::Live)])
        .await
        .unwrap();
    eventually("the live gift sent", 5_000, || gifts_sent(&crm).len() == 1).await;

    let created = handle
        .backfill_command("bf_1", BackfillAction::Create { spec: spec() })
        .await
        .unwrap();
    assert_eq!(created.state, JobState::AwaitingFile);
    let early = handle.backfill_command("bf_1", BackfillAction::Start).await;
    assert!(
        matches!(early, Err(BackfillCommandError::InvalidTransition(_))),
        "{early:?}"
    );
    handle
        .backfill_command("bf_1", BackfillAction::FileReady { bytes: 1 })
        .await
        .unwrap();
    eventually("the dry run to finish", 10_000, || {
        job(&handle).state == JobState::Ready
    })
    .await;
    let dry = job(&handle).dry_run;
    let rows = 2_500u64;
    let rejected = (2..rows + 2).filter(|n| n % 10 == 0).count() as u64;
    let skipped = (2..rows + 2).filter(|n| n % 10 != 0 && n % 7 == 0).count() as u64;
    let payments = rows - rejected - skipped;
    assert_eq!(
        (
            dry.counts.rows,
            dry.counts.payments,
            dry.counts.rejected,
            dry.counts.skipped,
            dry.counts.known
        ),
        (rows, payments, rejected, skipped, 1)
    );
    assert_eq!(dry.calls_needed, (payments - 1).div_ceil(100));
    assert_eq!(gifts_sent(&crm).len(), 1, "the dry run queued nothing");
    let rejects = handle.backfill_rejects("bf_1", 0, 10_000).unwrap();
    assert_eq!(rejects.len() as u64, rejected);
    assert_eq!(rejects[0].row, 10);
    assert!(rejects.iter().all(|reject| reject.row % 10 == 0));

    handle
        .backfill_command("bf_1", BackfillAction::Start)
        .await
        .unwrap();
    eventually("the run to finish", 20_000, || {
        job(&handle).state == JobState::Done
    })
    .await;
    let mut sent = gifts_sent(&crm);
    let calls = crm.count() - 1;
    sent.sort();
    let mut expected = expected_gifts(rows);
    expected.sort();
    assert_eq!(sent, expected, "each gift exactly once (g2 only live)");
    assert_eq!(
        calls as u64, dry.calls_needed,
        "the dry run's estimate is the calls spent"
    );
    let done = job(&handle);
    assert_eq!(done.progress.queued, payments - 1);
    assert_eq!(done.progress.counts.known, 1);
    assert!(done.progress.read_complete);
    assert_eq!(done.progress.submitted, payments - 1);
    runtime.shutdown().await;
}

#[actix_rt::test]
async fn a_restarted_tenant_resumes_the_run_at_its_stored_cursor_and_sends_nothing_twice() {
    // Goal: a tenant stopped mid-run reopens the file at the job's stored cursor (not at the start) and completes; every gift is sent exactly once across both runs.
    let store = test_store();
    let runtime = Runtime::new(1);
    let crm = FakeCrm::scripted(|_| reply(200));
    let files = Arc::new(MemoryFiles {
        rows: 6_000,
        opened_at: Mutex::new(Vec::new()),
    });
    let handle = start(&runtime, &store, Arc::clone(&crm), Arc::clone(&files));
    eventually("children started", 5_000, || handle.children_started()).await;
    handle.pause();
    handle
        .backfill_command("bf_1", BackfillAction::Create { spec: spec() })
        .await
        .unwrap();
    handle
        .backfill_command("bf_1", BackfillAction::FileReady { bytes: 1 })
        .await
        .unwrap();
    eventually("the dry run to finish", 10_000, || {
        job(&handle).state == JobState::Ready
    })
    .await;
    handle
        .backfill_command("bf_1", BackfillAction::Start)
        .await
        .unwrap();
    // Paused tenant: the lane fills to its window and the reader stops there.
    eventually("the window to fill", 10_000, || {
        job(&handle).progress.queued >= crate::capture::BACKFILL_FEED_WINDOW
    })
    .await;
    let cursor_before = job(&handle).cursor;
    assert!(cursor_before.offset > 0 && !job(&handle).progress.read_complete);
    assert!(runtime.stop_tenant("bf").await);

    let handle = start(&runtime, &store, Arc::clone(&crm), Arc::clone(&files));
    eventually("the run to finish", 30_000, || {
        job(&handle).state == JobState::Done
    })
    .await;
    let opened = files.opened_at.lock().unwrap().clone();
    assert!(
        opened.contains(&cursor_before),
        "reopened at the stored cursor {cursor_before:?}: {opened:?}"
    );
    let mut sent = gifts_sent(&crm);
    let total = sent.len();
    sent.sort();
    sent.dedup();
    assert_eq!(total, sent.len(), "nothing sent twice");
    let mut expected = expected_gifts(6_000);
    expected.sort();
    assert_eq!(sent, expected);
    runtime.shutdown().await;
}

#[actix_rt::test]
async fn a_live_gift_goes_on_lives_reserve_at_once_while_a_backfill_takes_every_paced_call() {
    // Goal: with calls paced 400 ms apart and backfill gifts waiting for every slot, a live gift queued right after a backfill call is sent long before the next paced slot — on live's reserve, counted in the submitter's view — and the backfill goes on.
    let store = test_store();
    let runtime = Runtime::new(1);
    let crm = FakeCrm::scripted(|_| reply(200));
    let handle = runtime.start_tenant(TenantSpec {
        tenant_id: "reserve".into(),
        store: store.store.clone(),
        tenant_store: store.store.tenant("reserve").unwrap(),
        settings: TenantSettings {
            budget: crate::budget::BudgetSettings {
                hourly_limit: 9_000,
                reserve_pct: 0,
                ..crate::budget::BudgetSettings::default()
            },
            ..fast_settings()
        },
        run_state: TenantRunState::Running,
        crm: crm.clone(),
    });
    eventually("children started", 5_000, || handle.children_started()).await;
    // One call each (another transaction source each): the lane has work for every slot.
    let history: Vec<NewEntry> = (0..12)
        .map(|n| {
            let mut entry = gift_entry(&format!("old{n}"), Lane::Backfill);
            entry.fact.transaction_source = format!("History{n}");
            entry
        })
        .collect();
    handle.enqueue(history).await.unwrap();
    eventually("two backfill calls", 5_000, || crm.count() >= 2).await;
    // Right after a backfill call: the next paced slot is about 400 ms away.
    let before = crm.count();
    eventually("the next backfill call", 5_000, || crm.count() > before).await;
    let queued_at = std::time::Instant::now();
    handle
        .enqueue(vec![gift_entry("live1", Lane::Live)])
        .await
        .unwrap();
    eventually("the live gift sent", 2_000, || {
        gifts_sent(&crm).contains(&"live1".to_string())
    })
    .await;
    let waited = queued_at.elapsed();
    assert!(
        waited < std::time::Duration::from_millis(200),
        "the live gift waited {waited:?}: a paced slot, not the reserve"
    );
    let observed = &handle.status().actors["submitter"].observed;
    assert!(
        observed["live_reserve_calls"].as_u64() >= Some(1),
        "{observed}"
    );
    eventually("the backfill done", 10_000, || {
        gifts_sent(&crm)
            .iter()
            .filter(|id| id.starts_with("old"))
            .count()
            == 12
    })
    .await;
    runtime.shutdown().await;
}
