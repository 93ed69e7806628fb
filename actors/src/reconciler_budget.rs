//! The budget seam of confirmation: every FullGift query and every webhook registration is
//! one Virtuous call drawn from the tenant's budget *before* it is sent (invariant 4), at the
//! reconcile lane's priority.
//!
//! INTEGRATION SEAM. The submitter's budget ledger (pacing, reserve, 429 pause, header
//! correction) is built in another branch (`TenantShared::budget: SharedBudget`). Until it
//! is merged, [`TenantShared`]'s implementation below is a stand-in that only enforces the
//! hourly allowance against the persisted call log and records each call there. The
//! integrator replaces the two method bodies with the ledger (its `draw` answers `Err` with
//! the *time* to ask again; this seam answers a *wait*):
//!
//! ```text
//! fn try_spend_reconcile_call(&self, now_ms: u64) -> Result<(), u64> {
//!     let store = self.sled().map(|sled| &sled.tenant_store);
//!     if store.is_none() { return Err(u64::MAX); }
//!     self.budget
//!         .draw(Lane::Reconcile, self.settings().budget, now_ms, store)
//!         .map_err(|next_at_ms| next_at_ms.saturating_sub(now_ms).max(1))
//! }
//! fn settle_reconcile_call(&self, reply: &CrmReply, now_ms: u64) {
//!     self.budget.observe(reply.rate_limit, now_ms);
//!     if reply.facts.status == Some(429) {
//!         let retry_after_ms = reply.facts.retry_after_s.map_or(
//!             crate::outcome::THROTTLE_DEFAULT_RETRY_AFTER_MS, |s| s * 1_000);
//!         self.budget.throttled(retry_after_ms, now_ms);
//!     }
//!     // keep the 401/403 branch below (same alert code as the submitter's AUTH_FAILED_ALERT),
//!     // or call the submitter's needs-operator path if it becomes shared.
//! }
//! ```

use crate::budget::{allowance_per_hour, RateLimitHeaders, BUDGET_WINDOW_MS};
use crate::observe::TenantShared;
use crate::ports::CrmReply;

/// Alert raised when Virtuous refuses the tenant's credentials on a confirmation call.
pub const ALERT_AUTH_FAILED: &str = "auth_failed";
/// How long to wait when the call log cannot be read (a store error: try again later).
const STORE_ERROR_WAIT_MS: u64 = 60_000;

/// What confirmation needs from the tenant's budget (a trait so unit tests can count calls).
pub trait ReconcileBudget {
    /// One call at reconcile-lane priority, drawn now; `Err(wait_ms)` when the budget refuses.
    fn try_spend_reconcile_call(&self, now_ms: u64) -> Result<(), u64>;
    /// What the call's answer says about the budget (headers, 429, 401/403).
    fn settle_reconcile_call(&self, reply: &CrmReply, now_ms: u64);
}

impl ReconcileBudget for TenantShared {
    // STAND-IN until the ledger lands (see the module docs).
    fn try_spend_reconcile_call(&self, now_ms: u64) -> Result<(), u64> {
        let Some(sled) = self.sled() else {
            // In-memory test tenants call nobody.
            return Err(u64::MAX);
        };
        let budget = self.settings().budget;
        let allowance = allowance_per_hour(
            budget.hourly_limit,
            self.rate_limit_headers().limit,
            budget.reserve_pct,
        );
        let window_start_ms = now_ms.saturating_sub(BUDGET_WINDOW_MS);
        let spent = sled
            .tenant_store
            .calls_since(window_start_ms)
            .map_err(|_| STORE_ERROR_WAIT_MS)?;
        if spent >= allowance {
            // The oldest call of the window expires within the hour; a minute is a fair poll.
            return Err(STORE_ERROR_WAIT_MS);
        }
        sled.tenant_store
            .record_call(now_ms)
            .map_err(|_| STORE_ERROR_WAIT_MS)
    }

    fn settle_reconcile_call(&self, reply: &CrmReply, now_ms: u64) {
        if reply.rate_limit.limit.is_some() || reply.rate_limit.remaining.is_some() {
            self.record_rate_limit_headers(RateLimitHeaders {
                limit: reply.rate_limit.limit,
                remaining: reply.rate_limit.remaining,
            });
        }
        if matches!(reply.facts.status, Some(401 | 403)) {
            self.needs_operator
                .store(true, std::sync::atomic::Ordering::Release);
            let message = format!(
                "Virtuous refused the tenant's credentials ({}) on a confirmation call; fix virtuous.api_key",
                reply.facts.status.unwrap_or_default()
            );
            if let Some(sled) = self.sled() {
                if sled
                    .tenant_store
                    .raise_alert(ALERT_AUTH_FAILED, &message, now_ms)
                    .unwrap_or(false)
                {
                    tracing::error!(tenant_id = %self.tenant_id, "{message}");
                }
            }
        }
    }
}
