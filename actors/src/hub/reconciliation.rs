//! Money reconciliation jobs as the hub sees them (docs/backfill.md "Money reconciliation"):
//! created here — by an operator (through the handle), the nightly schedule or a backfill
//! whose records are all confirmed — and run by the tenant's Reconciler, one at a time.
//!
//! Creating and starting go under one lock: a job is created `running` when no other job is
//! unfinished, else `pending`; the Reconciler starts the oldest pending one when the running
//! one ends. The store is the queue: the message to the Reconciler is only a hint.

use crate::messages::RunReconciliations;
use crate::money::{
    days_inclusive, parse_day, JobRequest, JobState, Progress, ReconciliationJob, RequestError,
    Trigger, FINISHED_JOBS_KEPT,
};
use crate::observe::ActorKind;
use crate::store::StoreError;

use super::TenantShared;

fn store_error(error: StoreError) -> RequestError {
    RequestError::Store(error.to_string())
}

impl TenantShared {
    /// Asks for a money reconciliation of `source`'s gifts dated `from_day..=to_day`
    /// (`YYYY-MM-DD`, the gifts' days): for a backfill whose records are all confirmed (or
    /// dead). Queued behind a running job; a request equal to an unfinished job returns that
    /// job. Stored now, durable at the next group commit; the Reconciler is hinted.
    pub fn request_reconciliation(
        &self,
        source: &str,
        from_day: &str,
        to_day: &str,
        reason: &str,
    ) -> Result<ReconciliationJob, RequestError> {
        let day =
            |text: &str| parse_day(text).ok_or_else(|| RequestError::InvalidDay(text.to_string()));
        let request = JobRequest {
            source: source.to_string(),
            from: day(from_day)?,
            to: day(to_day)?,
            trigger: Trigger::Backfill,
            reason: reason.to_string(),
        };
        let job = self.create_reconciliation(request, false)?;
        tracing::info!(tenant_id = %self.tenant_id, job = %job.id, source = %source, from = %from_day, to = %to_day, reason = %reason.escape_debug(), "money reconciliation requested");
        Ok(job)
    }

    /// Creates a job. `exclusive` (an operator's request): refused while another job is
    /// unfinished. Otherwise queued, and an unfinished job of the same source and days is
    /// returned instead of a second one.
    pub fn create_reconciliation(
        &self,
        request: JobRequest,
        exclusive: bool,
    ) -> Result<ReconciliationJob, RequestError> {
        let settings = self.settings().reconciliation;
        let Some(money_source) = settings
            .sources
            .iter()
            .find(|known| known.source == request.source)
        else {
            let names: Vec<&str> = settings.sources.iter().map(|s| s.source.as_str()).collect();
            return Err(RequestError::UnknownSource {
                name: request.source,
                configured: if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                },
            });
        };
        let (from, to) = (request.from.to_string(), request.to.to_string());
        if days_inclusive(request.from, request.to) < 1 {
            return Err(RequestError::EmptyRange { from, to });
        }
        let _guard = self
            .reconciliation_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let store = self.tenant_store();
        let jobs = store.reconciliation_jobs().map_err(store_error)?;
        let unfinished = jobs.iter().find(|job| !job.state.is_final());
        if let Some(active) = unfinished {
            if exclusive {
                return Err(RequestError::AlreadyRunning {
                    id: active.id.clone(),
                    state: active.state.name(),
                });
            }
            let same = jobs.iter().find(|job| {
                !job.state.is_final()
                    && job.source == request.source
                    && job.from == from
                    && job.to == to
            });
            if let Some(same) = same {
                return Ok(same.clone());
            }
        }
        let now_ms = self.clock.now_ms();
        let state = if unfinished.is_some() {
            JobState::Pending
        } else {
            JobState::Running
        };
        let job = ReconciliationJob {
            id: store.new_reconciliation_id().map_err(store_error)?,
            source: request.source,
            transaction_source: money_source.transaction_source.clone(),
            from,
            to,
            trigger: request.trigger,
            reason: request.reason,
            state,
            created_at_ms: now_ms,
            started_at_ms: (state == JobState::Running).then_some(now_ms),
            finished_at_ms: None,
            progress: Progress::default(),
            failures: 0,
            error: None,
            report: None,
        };
        store.put_reconciliation_job(&job).map_err(store_error)?;
        // Keep the newest finished jobs; the oldest go (their rows went when they ended).
        let finished: Vec<&ReconciliationJob> =
            jobs.iter().filter(|job| job.state.is_final()).collect();
        for old in finished
            .iter()
            .take(finished.len().saturating_sub(FINISHED_JOBS_KEPT))
        {
            store.remove_reconciliation(&old.id).map_err(store_error)?;
        }
        self.hint_reconciliations();
        Ok(job)
    }

    /// The job the Reconciler runs now: the running one, else the oldest pending one, which
    /// starts (stored `running`). `None` when every job is finished.
    pub fn next_reconciliation(&self) -> Result<Option<ReconciliationJob>, StoreError> {
        let _guard = self
            .reconciliation_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let store = self.tenant_store();
        let jobs = store.reconciliation_jobs()?;
        if let Some(running) = jobs.iter().find(|job| job.state == JobState::Running) {
            return Ok(Some(running.clone()));
        }
        let Some(pending) = jobs.into_iter().find(|job| job.state == JobState::Pending) else {
            return Ok(None);
        };
        let mut job = pending;
        job.state = JobState::Running;
        job.started_at_ms = Some(self.clock.now_ms());
        store.put_reconciliation_job(&job)?;
        Ok(Some(job))
    }

    /// Hints the Reconciler that a job may be waiting (lossy: it also looks at start and on
    /// its ticks).
    pub fn hint_reconciliations(&self) {
        let Some(reconciler) = self.addresses().reconciliations else {
            return;
        };
        let guard = self.cell(ActorKind::Reconciler).mailbox.guard();
        let _ = reconciler.try_send(RunReconciliations { guard });
    }
}
