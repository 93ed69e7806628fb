//! Money reconciliation's doors for the HTTP layer (docs/backfill.md "Money
//! reconciliation"): an operator's job is created through the hub (one at a time per
//! tenant), jobs are read from the store; the tenant's Reconciler runs them.

use super::TenantHandle;
use crate::money::{JobRequest, ReconciliationJob, RequestError, Trigger};
use crate::settings::MoneySource;
use crate::store::StoreError;

impl TenantHandle {
    /// An operator's reconciliation of `source`'s gifts dated `from..=to`: refused
    /// ([`RequestError::AlreadyRunning`]) while another job is unfinished; resolves with the
    /// job (state `running`) once it is durable. The Reconciler starts it at once.
    pub async fn start_reconciliation(
        &self,
        source: &str,
        from: jiff::civil::Date,
        to: jiff::civil::Date,
    ) -> Result<ReconciliationJob, RequestError> {
        let request = JobRequest {
            source: source.to_string(),
            from,
            to,
            trigger: Trigger::Operator,
            reason: "asked by an operator".to_string(),
        };
        let job = self.shared.create_reconciliation(request, true)?;
        self.shared
            .store()
            .durable()
            .await
            .map_err(|error| RequestError::Store(error.to_string()))?;
        Ok(job)
    }

    /// A job the backfill runtime would ask for (see
    /// [`crate::hub::TenantShared::request_reconciliation`]); for tests and tools.
    pub fn request_reconciliation(
        &self,
        source: &str,
        from_day: &str,
        to_day: &str,
        reason: &str,
    ) -> Result<ReconciliationJob, RequestError> {
        self.shared
            .request_reconciliation(source, from_day, to_day, reason)
    }

    pub fn reconciliation(&self, id: &str) -> Result<Option<ReconciliationJob>, StoreError> {
        self.shared.tenant_store().reconciliation_job(id)
    }

    /// Every job of the tenant (the newest 50 finished ones and any unfinished), oldest
    /// first.
    pub fn reconciliations(&self) -> Result<Vec<ReconciliationJob>, StoreError> {
        self.shared.tenant_store().reconciliation_jobs()
    }

    /// The tenant's gift sources, as reconciliation names them.
    pub fn money_sources(&self) -> Vec<MoneySource> {
        self.shared.settings().reconciliation.sources
    }
}
