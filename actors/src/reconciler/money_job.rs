//! One money reconciliation job's run (docs/backfill.md "Money reconciliation"): FullGift
//! pages of the job's `transactionSource`, `Create Date` from the UTC day before its first
//! day, each page one call drawn from the budget's reconcile lane first; each page's gifts
//! stored with the job's progress (its `skip`) in one atomic write, so a restart resumes at
//! the page it reached. When every page is read: the report (`money::report`) from the
//! stored gifts and the source's money facts, the job `done`, the alert `money_mismatch`
//! raised for differences or resolved when every source's latest job is clean.

use std::sync::Arc;

use crate::gift_match;
use crate::hub::ReconcileBudget;
use crate::money::{
    build_report, currency_code, decimal_to_minor, JobState, ReconciliationJob, VirtuousRow,
    FAILURES_MAX, MONEY_MISMATCH_ALERT,
};
use crate::ports::{Clock, Crm, CrmGift};
use crate::store::{StoreError, TenantStore};

/// Wait after a failed call: doubling from this, up to [`FAILED_CALL_WAIT_MS_MAX`].
const FAILED_CALL_WAIT_MS: u64 = 5_000;
const FAILED_CALL_WAIT_MS_MAX: u64 = 300_000;

/// Everything a job run talks to.
pub struct JobContext<'a> {
    pub tenant_id: &'a str,
    pub store: &'a TenantStore,
    pub crm: Arc<dyn Crm>,
    pub budget: &'a dyn ReconcileBudget,
    pub clock: &'a dyn Clock,
    /// Gifts per page (≤ 1,000).
    pub take: u32,
    /// False once this run's actor generation was replaced, or the tenant paused: stop
    /// between pages (the job resumes where it is).
    pub may_go_on: &'a dyn Fn() -> bool,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum JobRun {
    /// The job ended (`done` or `failed`) and is stored (boxed: a report is large beside
    /// the other variants).
    Finished(Box<ReconciliationJob>),
    /// Not finished: come back after this long (the budget refused, or a call failed).
    Wait { wait_ms: u64 },
    /// Not finished: stopped between pages (replaced, or the tenant paused).
    Stopped,
}

/// Runs `job` (state `running`) from its stored progress until it ends or must wait.
pub async fn run_job(
    context: JobContext<'_>,
    mut job: ReconciliationJob,
) -> Result<JobRun, StoreError> {
    let since_ms = job.created_on_or_after_ms();
    let take = context.take.clamp(1, 1_000);
    loop {
        if !(context.may_go_on)() {
            return Ok(JobRun::Stopped);
        }
        if let Err(wait_ms) = context
            .budget
            .try_spend_reconcile_call(context.clock.now_ms())
        {
            return Ok(JobRun::Wait { wait_ms });
        }
        let (reply, page) = context
            .crm
            .query_gifts(&job.transaction_source, since_ms, job.progress.skip, take)
            .await;
        context
            .budget
            .settle_reconcile_call(&reply, context.clock.now_ms());
        let page = match (reply.facts.status, page) {
            (Some(200..=299), Some(page)) => page,
            (status, _) => {
                let reason = format!(
                    "FullGift query for {} answered {}: {}",
                    job.transaction_source,
                    status.map_or_else(|| "nothing".to_string(), |s| s.to_string()),
                    reply.facts.message.unwrap_or_default()
                );
                return failed_call(&context, job, reason);
            }
        };
        let page_len = page.gifts.len() as u64;
        let rows: Vec<VirtuousRow> = page
            .gifts
            .iter()
            .filter(|gift| of_source(gift, &job.transaction_source))
            .map(row_of)
            .collect();
        let progress = &mut job.progress;
        progress.pages_read += 1;
        progress.skip += page_len;
        progress.total = Some(page.total);
        let pages_left = page
            .total
            .saturating_sub(progress.skip)
            .div_ceil(u64::from(take));
        progress.pages_total = Some(progress.pages_read + pages_left);
        job.failures = 0;
        job.error = None;
        let last_page =
            page_len == 0 || page_len < u64::from(take) || job.progress.skip >= page.total;
        if last_page {
            job.progress.pages_total = Some(job.progress.pages_read);
        }
        context.store.put_reconciliation_page(&job, &rows)?;
        if last_page {
            return finish(&context, job).map(|job| JobRun::Finished(Box::new(job)));
        }
    }
}

/// A gift the query returned that belongs to the job (a gift naming no source is taken as
/// the one asked for, as confirmation does).
fn of_source(gift: &CrmGift, transaction_source: &str) -> bool {
    match gift.transaction_source.as_deref() {
        None | Some("") => true,
        Some(named) => named.eq_ignore_ascii_case(transaction_source),
    }
}

/// A Virtuous gift as the report reads it (amounts converted exactly, or left unreadable).
pub fn row_of(gift: &CrmGift) -> VirtuousRow {
    let currency = gift
        .currency_code
        .as_deref()
        .and_then(currency_code)
        .unwrap_or_else(|| "usd".to_string());
    let is_reversal = gift_match::is_reversal(gift);
    VirtuousRow {
        virtuous_id: gift.virtuous_id.clone(),
        transaction_id: gift.transaction_id.clone().filter(|id| !id.is_empty()),
        is_reversal,
        reversed_gift_id: gift
            .reversed_gift_id
            .clone()
            .filter(|id| !id.is_empty() && id != "0"),
        day: gift.gift_date.clone(),
        project: gift.project_codes.first().cloned().unwrap_or_default(),
        amount_minor: gift
            .amount
            .as_deref()
            .and_then(|amount| decimal_to_minor(amount, &currency)),
        currency,
    }
}

/// A call that brought no page: the job waits and tries again, or fails after
/// [`FAILURES_MAX`] in a row.
fn failed_call(
    context: &JobContext<'_>,
    mut job: ReconciliationJob,
    reason: String,
) -> Result<JobRun, StoreError> {
    job.failures += 1;
    tracing::warn!(tenant_id = %context.tenant_id, job = %job.id, failures = job.failures, reason = %reason.escape_debug(), "money reconciliation call failed");
    job.error = Some(reason);
    if job.failures >= FAILURES_MAX {
        job.state = JobState::Failed;
        job.finished_at_ms = Some(context.clock.now_ms());
        context.store.finish_reconciliation(&job)?;
        crate::metrics::count_reconciliation("failed");
        return Ok(JobRun::Finished(Box::new(job)));
    }
    context.store.put_reconciliation_job(&job)?;
    let wait_ms = FAILED_CALL_WAIT_MS
        .saturating_mul(1 << (job.failures - 1).min(10))
        .min(FAILED_CALL_WAIT_MS_MAX);
    Ok(JobRun::Wait { wait_ms })
}

/// Every page read: the report, the job done, the alert.
fn finish(
    context: &JobContext<'_>,
    mut job: ReconciliationJob,
) -> Result<ReconciliationJob, StoreError> {
    let store = context.store;
    let rows = store.reconciliation_rows(&job.id)?;
    let facts = store.money_facts(&job.source, &job.from, &job.to)?;
    let awaiting_import = |transaction_id: &str| {
        store
            .gift_awaits_import(&job.source, transaction_id)
            .unwrap_or(false)
    };
    let report = build_report(&job.from, &job.to, &facts, &rows, &awaiting_import);
    let now_ms = context.clock.now_ms();
    job.state = JobState::Done;
    job.finished_at_ms = Some(now_ms);
    job.error = None;
    let clean = report.clean;
    let mismatches = report.mismatches;
    let example = report
        .differences
        .iter()
        .find(|difference| difference.kind != crate::money::DifferenceKind::AwaitingImport)
        .map(|difference| difference.transaction_id.clone());
    job.report = Some(report);
    store.finish_reconciliation(&job)?;
    crate::metrics::count_reconciliation(if clean { "clean" } else { "mismatch" });
    tracing::info!(tenant_id = %context.tenant_id, job = %job.id, source = %job.source, from = %job.from, to = %job.to, mismatches, "money reconciliation done");
    if !clean {
        let message = format!(
            "reconciliation {} ({} {}..{}) found {mismatches} difference(s) between the source and Virtuous (e.g. transactionId {}); see GET /v1/tenants/{}/reconciliations/{}",
            job.id,
            job.source,
            job.from,
            job.to,
            example.unwrap_or_default(),
            context.tenant_id,
            job.id
        );
        if store.raise_alert(MONEY_MISMATCH_ALERT, &message, now_ms)? {
            // The message quotes a transaction id: escaped, so none can forge a log line.
            tracing::error!(tenant_id = %context.tenant_id, job = %job.id, "{}", message.escape_debug());
        }
    } else {
        // Resolved when the latest finished job of every source is clean (a clean run of one
        // source does not hide another's differences).
        store.resolve_alert_when(MONEY_MISMATCH_ALERT, now_ms, |store| {
            Ok(latest_jobs_are_clean(&store.reconciliation_jobs()?))
        })?;
    }
    Ok(job)
}

/// Whether each source's latest finished job with a report is clean.
fn latest_jobs_are_clean(jobs: &[ReconciliationJob]) -> bool {
    let mut latest: std::collections::BTreeMap<&str, bool> = std::collections::BTreeMap::new();
    for job in jobs {
        if let (JobState::Done, Some(report)) = (job.state, &job.report) {
            // Jobs come oldest first: the last one of a source wins.
            latest.insert(&job.source, report.clean);
        }
    }
    latest.values().all(|clean| *clean)
}

#[cfg(test)]
#[path = "money_job_tests.rs"]
mod tests;
