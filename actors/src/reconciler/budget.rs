//! The budget seam of confirmation: every FullGift query and every webhook registration is
//! one Virtuous call drawn from the tenant's budget *before* it is sent (invariant 4), at the
//! reconcile lane's priority.
//!
//! Both go through the tenant's [`crate::budget::SharedBudget`] (the submitter's ledger):
//! pacing, the persisted call log, header correction, the reserve hold and a `429`'s pause
//! apply to confirmation calls exactly as to submissions. A reconcile-lane call is granted
//! when the submitter has no ready work, and otherwise gets a floor share (see `budget.rs`).

use crate::observe::TenantShared;
use crate::ports::CrmReply;
use crate::store::Lane;

/// What confirmation needs from the tenant's budget (a trait so unit tests can count calls).
pub trait ReconcileBudget {
    /// One call at reconcile-lane priority, drawn now; `Err(wait_ms)` when the budget refuses.
    fn try_spend_reconcile_call(&self, now_ms: u64) -> Result<(), u64>;
    /// What the call's answer says about the budget (headers, 429, 401/403).
    fn settle_reconcile_call(&self, reply: &CrmReply, now_ms: u64);
}

impl ReconcileBudget for TenantShared {
    fn try_spend_reconcile_call(&self, now_ms: u64) -> Result<(), u64> {
        let Some(sled) = self.sled() else {
            // In-memory test tenants call nobody.
            return Err(u64::MAX);
        };
        self.budget
            .draw(
                Lane::Reconcile,
                self.settings().budget,
                now_ms,
                Some(&sled.tenant_store),
            )
            // The ledger answers the time to ask again; this seam answers a wait.
            .map_err(|next_at_ms| next_at_ms.saturating_sub(now_ms).max(1))
    }

    fn settle_reconcile_call(&self, reply: &CrmReply, now_ms: u64) {
        self.observe_reply(reply);
        if let Some(status @ (401 | 403)) = reply.facts.status {
            self.credentials_refused(&format!("{status} on a confirmation call"), now_ms);
        }
    }
}
