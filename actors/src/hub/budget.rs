//! The budget seam of confirmation: every FullGift query and every webhook registration is
//! one Virtuous call drawn from the tenant's budget *before* it is sent (invariant 4), at the
//! reconcile lane's priority.
//!
//! Both go through the tenant's [`crate::budget::SharedBudget`] (the submitter's ledger):
//! pacing, the persisted call log, header correction, the reserve hold and a `429`'s pause
//! apply to confirmation calls exactly as to submissions. A reconcile-lane call is granted
//! when the submitter has no ready work, and otherwise gets a floor share (see `budget.rs`).

use crate::budget::{RateLimitHeaders, AUTH_FAILED_ALERT};
use crate::hub::TenantShared;
use crate::outcome::ConnectionErrorKind;
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
        self.budget
            .draw(
                Lane::Reconcile,
                self.settings().budget,
                now_ms,
                self.tenant_store(),
            )
            // The ledger answers the time to ask again; this seam answers a wait.
            .map_err(|next_at_ms| next_at_ms.saturating_sub(now_ms).max(1))
    }

    fn settle_reconcile_call(&self, reply: &CrmReply, now_ms: u64) {
        self.observe_reply(reply);
        match (reply.facts.status, reply.facts.connection_error_kind) {
            (Some(status @ (401 | 403)), _) => {
                self.credentials_refused(&format!("{status} on a confirmation call"), now_ms);
            }
            (Some(status @ 300..=399), _) => self.crm_misconfigured(
                &format!("{status} redirect on a confirmation call: check the Virtuous base URL"),
                now_ms,
            ),
            (None, Some(ConnectionErrorKind::NotConfigured)) => {
                self.crm_misconfigured(reply.facts.message.as_deref().unwrap_or("not sent"), now_ms)
            }
            _ => {}
        }
    }
}

impl TenantShared {
    /// Draws one Virtuous call at `lane` from the tenant's budget now (recorded in the call
    /// log): `Err(when to ask again)` when refused. Every caller (reconciler at
    /// [`Lane::Reconcile`], admin one-off calls such as the connection test at
    /// [`Lane::Reconcile`] too) calls this right before its
    /// HTTP call, then [`TenantShared::observe_reply`](crate::hub::TenantShared) after.
    /// 401/403 from Virtuous (any caller): pause the tenant — nothing more is sent — mark it
    /// as waiting for the operator and raise [`AUTH_FAILED_ALERT`] (ERROR logged once). The
    /// operator fixes the key and resumes (`TenantHandle::resume` clears the mark); the next
    /// successful call resolves the alert (`health.rs`).
    pub fn credentials_refused(&self, reason: &str, now_ms: u64) {
        let message = format!("Virtuous refused the tenant's credentials: {reason}; submission paused until an operator fixes them and resumes");
        self.wait_for_operator(AUTH_FAILED_ALERT, &message, reason, now_ms);
    }

    pub fn draw_call(&self, lane: Lane) -> Result<(), u64> {
        let now_ms = self.clock.now_ms();
        self.budget
            .draw(lane, self.settings().budget, now_ms, self.tenant_store())
    }

    /// After any Virtuous answer outside the submitter: header sync (allowance, reserve
    /// hold), a `429`'s pause for the whole tenant, and the headers the status shows.
    pub fn observe_reply(&self, reply: &crate::ports::CrmReply) {
        let now_ms = self.clock.now_ms();
        self.observe_reachability(reply, now_ms);
        self.budget.observe(reply.rate_limit, now_ms);
        if reply.facts.status == Some(429) {
            let retry_after_ms = reply
                .facts
                .retry_after_s
                .map(|seconds| seconds.saturating_mul(1_000))
                .unwrap_or(crate::outcome::THROTTLE_DEFAULT_RETRY_AFTER_MS);
            self.budget.throttled(retry_after_ms, now_ms);
        }
        if reply.rate_limit.limit.is_some() || reply.rate_limit.remaining.is_some() {
            self.record_rate_limit_headers(RateLimitHeaders {
                limit: reply.rate_limit.limit,
                remaining: reply.rate_limit.remaining,
            });
        }
    }
}
