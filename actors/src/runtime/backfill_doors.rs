//! Backfill's doors for the HTTP layer (docs/backfill.md "Admin API"): jobs are read here,
//! changed only through Capture ([`crate::backfill::BackfillCommand`]).

use std::future::Future;
use std::sync::Arc;

use super::TenantHandle;
use crate::backfill::{
    BackfillAction, BackfillCommand, BackfillCommandError, BackfillFiles, BackfillJob, RejectedRow,
};
use crate::observe::ActorKind;
use crate::store::StoreError;

// Here rather than beside the error: `backfill` stays below `messages` in the module layers.
impl crate::messages::DoorError for BackfillCommandError {
    fn mailbox_full(capacity: usize) -> Self {
        BackfillCommandError::MailboxFull { capacity }
    }
    fn unavailable() -> Self {
        BackfillCommandError::Unavailable
    }
}

impl TenantHandle {
    /// Asks Capture to apply `action` to job `job_id`; resolves with the job once the change
    /// is durable.
    pub fn backfill_command(
        &self,
        job_id: &str,
        action: BackfillAction,
    ) -> impl Future<Output = Result<BackfillJob, BackfillCommandError>> + 'static {
        let shared = Arc::clone(&self.shared);
        let job_id = job_id.to_string();
        async move {
            let capture = shared.addresses().capture.map(|door| door.backfill);
            shared
                .send_through_door(ActorKind::Capture, capture, |guard| BackfillCommand {
                    job_id,
                    action,
                    guard,
                })
                .await
        }
    }

    pub fn backfill_job(&self, job_id: &str) -> Result<Option<BackfillJob>, StoreError> {
        self.shared.tenant_store().backfill_job(job_id)
    }

    /// Every job of the tenant, oldest first.
    pub fn backfill_jobs(&self) -> Result<Vec<BackfillJob>, StoreError> {
        let mut jobs: Vec<BackfillJob> = self.shared.tenant_store().backfill_jobs()?;
        jobs.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
        Ok(jobs)
    }

    /// Job `job_id`'s rejected rows after `after_row`, at most `limit`.
    pub fn backfill_rejects(
        &self,
        job_id: &str,
        after_row: u64,
        limit: usize,
    ) -> Result<Vec<RejectedRow>, StoreError> {
        self.shared
            .tenant_store()
            .backfill_rejects(job_id, after_row, limit)
    }

    /// The adapter that reads the tenant's backfill files (set from the tenant document;
    /// replaced on every change of it).
    pub fn replace_backfill_files(&self, files: Arc<dyn BackfillFiles>) {
        self.shared.replace_backfill_files(files);
    }

    /// Calls the other lanes made in the last hour (the backfill's own calls left out) and
    /// the allowance, for a job's estimate.
    pub fn budget_use(&self) -> (u64, u64) {
        let now_ms = self.shared.clock.now_ms();
        let view = self.shared.budget.view(now_ms);
        let backfill = self
            .shared
            .backfill_calls_since(now_ms.saturating_sub(crate::budget::BUDGET_WINDOW_MS));
        (
            view.calls_in_window.saturating_sub(backfill),
            view.allowance_per_hour,
        )
    }
}
