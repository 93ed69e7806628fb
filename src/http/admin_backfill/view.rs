//! A backfill job as the admin API shows it (docs/backfill.md "Admin API"): the stored job
//! plus what is computed at read time — the hours the dry run's calls take at the tenant's
//! current allowance, the run's percent and its ETA. Pure: the handler passes the budget in.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use steward_actors::backfill::{
    calls_needed, hours_needed, BackfillJob, JobState, RejectedRow, RowCounts,
};

use crate::sources::amount::minor_to_major;
use crate::tenants::format_ms;

/// The tenant's budget when the view is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetUse {
    pub allowance_per_hour: u64,
    /// Calls made in the last hour (every lane).
    pub calls_last_hour: u64,
}

/// Entry kinds always shown in `entries`, even at zero.
const ENTRY_KINDS: [&str; 3] = ["gift", "refund", "contact"];

/// The job view. `rejects`: the first rejected rows for the single-job view; `None` leaves
/// `dry_run.rejects` out (the list).
///
/// A listing job shows its window (`"listing": {"from", "to"}`, RFC 3339) instead of a
/// mapping, and the pages of the source's listing read (`pages_read`) instead of the bytes
/// of a file; its rows are the records read.
pub fn job_json(job: &BackfillJob, budget: BudgetUse, rejects: Option<&[RejectedRow]>) -> Value {
    let mapping = serde_json::from_str::<Value>(&job.spec.mapping_json)
        .unwrap_or_else(|_| Value::String(job.spec.mapping_json.clone()));
    let mut shown = json!({
        "id": job.id,
        "label": job.spec.label,
        "source": job.spec.source,
        "format": job.spec.format,
        "mapping": mapping,
        "state": job.state.name(),
        "created_at": format_ms(job.created_at_ms),
        "started_at": job.started_at_ms.map(format_ms),
        "finished_at": job.finished_at_ms.map(format_ms),
        "file_bytes": job.file_bytes,
        "dry_run": dry_run_json(job, budget, rejects),
        "progress": progress_json(job),
        "eta_s": eta_s(job, budget),
        "error": job.error,
    });
    if let Some(window) = job.spec.listing {
        if let Some(view) = shown.as_object_mut() {
            view.remove("mapping");
        }
        shown["listing"] = json!({
            "from": format_ms(window.from_ms),
            "to": format_ms(window.to_ms),
        });
        shown["dry_run"] = read_in_pages(shown["dry_run"].take());
        shown["progress"] = read_in_pages(shown["progress"].take());
    }
    shown
}

/// A listing's part of the view (`dry_run`, `progress`): its `bytes_read` is the pages read.
fn read_in_pages(mut part: Value) -> Value {
    if let Some(fields) = part.as_object_mut() {
        if let Some(pages) = fields.remove("bytes_read") {
            fields.insert("pages_read".to_string(), pages);
        }
    }
    part
}

/// The dry run's calls: its final estimate once complete, the estimate so far before.
fn dry_run_calls(job: &BackfillJob) -> u64 {
    if job.dry_run.complete {
        job.dry_run.calls_needed
    } else {
        calls_needed(&job.dry_run.counts)
    }
}

fn dry_run_json(job: &BackfillJob, budget: BudgetUse, rejects: Option<&[RejectedRow]>) -> Value {
    let counts = &job.dry_run.counts;
    let calls = dry_run_calls(job);
    let mut shown = json!({
        "complete": job.dry_run.complete,
        "rows_read": counts.rows,
        // Where validation stands in the file: a progress bar against `file_bytes`.
        "bytes_read": job.dry_run.cursor.offset,
        "rows": counts.rows,
        "payments": counts.payments,
        "skipped": counts.skipped,
        "rejected": counts.rejected,
        "known": counts.known,
        "entries": entries_json(counts),
        "calls_needed": calls,
        "hours_needed": hours_needed(calls, budget.allowance_per_hour, budget.calls_last_hour),
        "allowance_per_hour": budget.allowance_per_hour,
        "live_calls_last_hour": budget.calls_last_hour,
        "skip_reasons": counts.skip_reasons,
        "alerts": counts.alerts,
        "amounts": amounts_json(&counts.amount_minor),
        "rejects_total": counts.rejected,
    });
    if let Some(rejects) = rejects {
        shown["rejects"] = json!(rejects
            .iter()
            .map(|reject| json!({"row": reject.row, "reason": reject.reason}))
            .collect::<Vec<_>>());
    }
    shown
}

fn entries_json(counts: &RowCounts) -> Value {
    let mut entries = Map::new();
    for kind in ENTRY_KINDS {
        entries.insert(
            kind.to_string(),
            json!(counts.entries.get(kind).copied().unwrap_or(0)),
        );
    }
    for (kind, count) in &counts.entries {
        entries.entry(kind.clone()).or_insert(json!(count));
    }
    Value::Object(entries)
}

/// Sums per currency in major units, as decimal strings (`{"usd": "1234.50"}`).
fn amounts_json(amount_minor: &BTreeMap<String, i64>) -> Value {
    let amounts: Map<String, Value> = amount_minor
        .iter()
        .map(|(currency, minor)| (currency.clone(), json!(minor_to_major(*minor, currency))))
        .collect();
    Value::Object(amounts)
}

fn progress_json(job: &BackfillJob) -> Value {
    let progress = &job.progress;
    json!({
        "rows_read": progress.counts.rows,
        "bytes_read": job.cursor.offset,
        "queued": progress.queued,
        "duplicates": progress.counts.known,
        "skipped": progress.counts.skipped,
        "rejected": progress.counts.rejected,
        "submitted": progress.submitted,
        "confirmed": progress.confirmed,
        "dead": progress.dead,
        "percent": percent(job),
        // The money reconciliation asked for once every entry was confirmed (its id).
        "reconciliation": progress.reconciliation,
    })
}

/// Entries that left the queue (sent and accepted, or dead letters) and the entries the run
/// will queue in all: what it queued once every row is read, before that the larger of
/// what it queued and what the dry run expected.
fn left_and_expected(job: &BackfillJob) -> (u64, u64) {
    let progress = &job.progress;
    let left = progress.submitted + progress.dead;
    let expected = if progress.read_complete {
        progress.queued
    } else {
        let from_dry_run: u64 = job.dry_run.counts.entries.values().sum();
        progress.queued.max(from_dry_run)
    };
    (left, expected)
}

/// 0–100: the share of the run's entries that left the queue (one decimal).
pub fn percent(job: &BackfillJob) -> f64 {
    let (left, expected) = left_and_expected(job);
    if expected == 0 {
        return if job.state == JobState::Done {
            100.0
        } else {
            0.0
        };
    }
    let share = (left.min(expected) as f64) / (expected as f64);
    (share * 1_000.0).round() / 10.0
}

/// Seconds a running job still needs: the calls left (the dry run's calls times the share of
/// entries still to leave the queue) at the allowance the last hour left unused; `None`
/// when the job is not running or nothing is left unused.
pub fn eta_s(job: &BackfillJob, budget: BudgetUse) -> Option<u64> {
    if job.state != JobState::Running {
        return None;
    }
    let (left, expected) = left_and_expected(job);
    let still_to_go = if expected == 0 {
        0.0
    } else {
        1.0 - (left.min(expected) as f64) / (expected as f64)
    };
    let calls_left = dry_run_calls(job) as f64 * still_to_go;
    let spare_per_hour = budget
        .allowance_per_hour
        .saturating_sub(budget.calls_last_hour);
    if spare_per_hour == 0 {
        return None;
    }
    let spare_per_s = spare_per_hour as f64 / 3_600.0;
    Some((calls_left / spare_per_s).ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use steward_actors::backfill::JobSpec;

    fn job(state: JobState) -> BackfillJob {
        let spec = JobSpec {
            source: "stripe".into(),
            format: "csv".into(),
            mapping_json: "\"stripe_payments_export\"".into(),
            label: "history-2024".into(),
            listing: None,
        };
        let mut job = BackfillJob::new("bf_abcdefghijkl".into(), spec, 1_767_225_600_000);
        job.state = state;
        job
    }

    const BUDGET: BudgetUse = BudgetUse {
        allowance_per_hour: 4_500,
        calls_last_hour: 900,
    };

    #[test]
    fn the_view_has_the_contract_fields() {
        // Goal: every field of docs/backfill.md's job view is there, with the mapping as
        // JSON, times as RFC 3339 and the entry kinds at zero; the list leaves rejects out.
        let mut job = job(JobState::Ready);
        job.dry_run.complete = true;
        job.dry_run.counts.rows = 10;
        job.dry_run.counts.rejected = 1;
        job.dry_run
            .counts
            .amount_minor
            .insert("usd".into(), 123_450);
        job.dry_run.counts.amount_minor.insert("jpy".into(), 5_000);
        job.dry_run.calls_needed = 36;
        let rejects = [RejectedRow {
            row: 7,
            reason: "amount: not a number".into(),
        }];
        let view = job_json(&job, BUDGET, Some(&rejects));
        assert_eq!(view["mapping"], "stripe_payments_export");
        assert_eq!(view["created_at"], "2026-01-01T00:00:00Z");
        assert_eq!(view["started_at"], Value::Null);
        assert_eq!(view["state"], "ready");
        assert_eq!(view["dry_run"]["entries"]["refund"], 0);
        assert_eq!(view["dry_run"]["amounts"]["usd"], "1234.50");
        assert_eq!(view["dry_run"]["amounts"]["jpy"], "5000");
        assert_eq!(
            view["dry_run"]["hours_needed"], 0.01,
            "36 calls at 3,600 spare/h"
        );
        assert_eq!(view["dry_run"]["rejects"][0]["row"], 7);
        assert_eq!(view["dry_run"]["rejects_total"], 1);
        assert_eq!(view["eta_s"], Value::Null, "not running");
        for field in [
            "id",
            "label",
            "source",
            "format",
            "file_bytes",
            "progress",
            "error",
            "finished_at",
        ] {
            assert!(view.get(field).is_some(), "{field} missing: {view}");
        }
        let listed = job_json(&job, BUDGET, None);
        assert!(listed["dry_run"].get("rejects").is_none());
    }

    #[test]
    fn a_listing_job_shows_its_window_and_pages_instead_of_a_mapping_and_bytes() {
        // Goal: a listing job's view has `listing` with RFC 3339 bounds and no `mapping`; its
        // dry run and progress count pages read (no `bytes_read`) and records as rows; its
        // percent and ETA come as a file job's do.
        let spec = JobSpec {
            source: "constant_contact".into(),
            format: steward_actors::backfill::LISTING_FORMAT.into(),
            mapping_json: String::new(),
            label: "cc history".into(),
            listing: Some(steward_actors::backfill::ListingWindow {
                from_ms: 1_704_067_200_000,
                to_ms: 1_735_689_599_999,
            }),
        };
        let mut job = BackfillJob::new("bf_abcdefghijkl".into(), spec, 1_767_225_600_000);
        assert_eq!(
            job.state,
            JobState::Validating,
            "a listing starts validating"
        );
        job.dry_run.cursor.offset = 3;
        job.dry_run.counts.rows = 1_200;
        job.dry_run.complete = true;
        job.dry_run.calls_needed = 100;
        job.state = JobState::Running;
        job.cursor.offset = 2;
        job.progress.counts.rows = 1_000;
        job.progress.queued = 1_000;
        job.progress.read_complete = true;
        job.progress.submitted = 500;
        let view = job_json(&job, BUDGET, None);
        assert_eq!(
            view["listing"],
            json!({"from": "2024-01-01T00:00:00Z", "to": "2024-12-31T23:59:59.999Z"})
        );
        assert!(view.get("mapping").is_none(), "{view}");
        assert_eq!(view["format"], "listing");
        assert_eq!(view["file_bytes"], Value::Null);
        assert_eq!(view["dry_run"]["pages_read"], 3);
        assert_eq!(view["dry_run"]["rows_read"], 1_200);
        assert!(view["dry_run"].get("bytes_read").is_none(), "{view}");
        assert_eq!(view["progress"]["pages_read"], 2);
        assert_eq!(view["progress"]["rows_read"], 1_000);
        assert!(view["progress"].get("bytes_read").is_none(), "{view}");
        assert_eq!(view["progress"]["percent"], 50.0);
        assert_eq!(view["eta_s"], 50, "as a file job's: 50 calls at 1 a second");
        let file_view = job_json(&self::job(JobState::Ready), BUDGET, None);
        assert!(file_view.get("listing").is_none(), "{file_view}");
        assert_eq!(file_view["dry_run"]["bytes_read"], 0);
    }

    #[test]
    fn percent_counts_entries_that_left_the_queue() {
        // Goal: before every row is read the dry run's entries are the denominator; after,
        // the queued ones; dead letters left the queue too; a done job with nothing is 100.
        let mut job = job(JobState::Running);
        job.dry_run.counts.entries.insert("gift".into(), 800);
        job.dry_run.counts.entries.insert("contact".into(), 200);
        job.progress.queued = 400;
        job.progress.submitted = 240;
        job.progress.dead = 10;
        assert_eq!(percent(&job), 25.0);
        job.progress.read_complete = true;
        job.progress.queued = 1_000;
        job.progress.submitted = 990;
        assert_eq!(percent(&job), 100.0);
        let empty_done = self::job(JobState::Done);
        assert_eq!(percent(&empty_done), 100.0);
        assert_eq!(percent(&self::job(JobState::Ready)), 0.0);
    }

    #[test]
    fn eta_is_the_calls_left_at_the_spare_allowance() {
        // Goal: 100 calls, half the entries gone, 3,600 spare calls an hour (1 a second) →
        // 50 s; no spare allowance or not running → none.
        let mut job = job(JobState::Running);
        job.dry_run.complete = true;
        job.dry_run.calls_needed = 100;
        job.dry_run.counts.entries.insert("gift".into(), 1_000);
        job.progress.queued = 1_000;
        job.progress.read_complete = true;
        job.progress.submitted = 500;
        assert_eq!(eta_s(&job, BUDGET), Some(50));
        let exhausted = BudgetUse {
            allowance_per_hour: 100,
            calls_last_hour: 100,
        };
        assert_eq!(eta_s(&job, exhausted), None);
        job.state = JobState::Paused;
        assert_eq!(eta_s(&job, BUDGET), None);
    }
}
