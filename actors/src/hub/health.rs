//! Failures that speak up (docs/operations.md "Alerts"): what a tenant's Virtuous answers say
//! about its reachability, dead letters, ignored test-mode events — counted here, raised as
//! alerts, and resolved when their condition clears.
//!
//! Every caller of Virtuous (submitter, reconciler, inbound registration, connection test)
//! reports each answer through [`TenantShared::observe_reachability`]; the counters live in
//! memory (since the tenant started), the alerts in the store.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use serde::Serialize;

use crate::budget::AUTH_FAILED_ALERT;
use crate::hub::TenantShared;
use crate::outcome::ConnectionErrorKind;
use crate::ports::CrmReply;
use crate::store::TenantRunState;

/// Virtuous got no answer to `[alerts] crm_unreachable_after` calls in a row.
pub const CRM_UNREACHABLE_ALERT: &str = "crm_unreachable";
/// Entries were dead-lettered; resolved when the tenant's dead-letter list is empty.
pub const DEAD_LETTERS_ALERT: &str = "dead_letters";
/// Virtuous cannot be called as configured (a client that cannot be built, a redirect):
/// the tenant waits for an operator, as for refused credentials.
pub const CRM_MISCONFIGURED_ALERT: &str = "crm_misconfigured";
/// A one-time hint: test-mode events arrive at a tenant that ignores them.
pub const TEST_EVENTS_IGNORED_ALERT: &str = "test_events_ignored";

/// The in-memory counters of a tenant's health (shown in its status as `health`).
#[derive(Debug, Default)]
pub struct HealthCounters {
    crm_transport_failures: AtomicU64,
    crm_transport_failures_in_a_row: AtomicU32,
    test_events_ignored: AtomicU64,
    /// `auth_failed`, `crm_misconfigured` or `crm_unreachable` may be open: the next successful call resolves
    /// them (a store write); false once done, so successful calls cost no store access.
    call_alerts_may_be_open: AtomicBool,
    /// The per-tenant failure counter, created with the first failure (a quiet tenant adds
    /// no series; docs/operations.md "Metrics", the per-tenant series budget).
    failure_counter: std::sync::OnceLock<metrics::Counter>,
}

/// What the status shows of [`HealthCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct HealthView {
    /// Virtuous calls that got no answer (refused, DNS, TLS, timeout, closed) since start.
    pub crm_transport_failures: u64,
    /// The current run of such calls (0 after any answer).
    pub crm_transport_failures_in_a_row: u32,
    /// Test-mode events ignored (the tenant does not accept them) since start.
    pub test_events_ignored: u64,
}

impl HealthCounters {
    pub fn new() -> HealthCounters {
        HealthCounters {
            // Unknown at start (stored from an earlier run): the first success looks.
            call_alerts_may_be_open: AtomicBool::new(true),
            ..HealthCounters::default()
        }
    }

    pub fn view(&self) -> HealthView {
        HealthView {
            crm_transport_failures: self.crm_transport_failures.load(Ordering::Relaxed),
            crm_transport_failures_in_a_row: self
                .crm_transport_failures_in_a_row
                .load(Ordering::Relaxed),
            test_events_ignored: self.test_events_ignored.load(Ordering::Relaxed),
        }
    }
}

/// A call that got no answer because nothing answered (not: nothing was sent).
fn is_transport_failure(reply: &CrmReply) -> bool {
    reply.facts.status.is_none()
        && reply.facts.connection_error_kind != Some(ConnectionErrorKind::NotConfigured)
}

impl TenantShared {
    /// Every Virtuous answer (or its absence), whoever called: counts transport failures,
    /// logs the first of a run (WARN, once), raises `crm_unreachable` when the run reaches
    /// `[alerts] crm_unreachable_after`; any answer ends the run, and a 2xx resolves
    /// `crm_unreachable`, `auth_failed` and `crm_misconfigured`.
    pub fn observe_reachability(&self, reply: &CrmReply, now_ms: u64) {
        let health = &self.health;
        if is_transport_failure(reply) {
            health
                .crm_transport_failures
                .fetch_add(1, Ordering::Relaxed);
            health
                .failure_counter
                .get_or_init(|| {
                    metrics::counter!(crate::metrics::CRM_TRANSPORT_FAILURES_TOTAL,
                        crate::metrics::LABEL_TENANT => self.tenant_id.clone())
                })
                .increment(1);
            let in_a_row = health
                .crm_transport_failures_in_a_row
                .fetch_add(1, Ordering::AcqRel)
                .saturating_add(1);
            let reason = reply.facts.message.as_deref().unwrap_or("no answer");
            if in_a_row == 1 {
                tracing::warn!(tenant_id = %self.tenant_id, kind = ?reply.facts.connection_error_kind, reason, "Virtuous unreachable: no answer to a call (logged once per run of failures)");
            }
            let threshold = self.settings().alerts.crm_unreachable_after.max(1);
            if in_a_row == threshold {
                let message = format!("Virtuous did not answer {in_a_row} calls in a row (last: {reason}); check virtuous.base_url and the network");
                health
                    .call_alerts_may_be_open
                    .store(true, Ordering::Release);
                self.raise_logged(CRM_UNREACHABLE_ALERT, &message, now_ms);
            }
            return;
        }
        let run = health
            .crm_transport_failures_in_a_row
            .swap(0, Ordering::AcqRel);
        if run > 0 {
            tracing::info!(tenant_id = %self.tenant_id, failures_in_a_row = run, "Virtuous answers again");
        }
        let succeeded = reply
            .facts
            .status
            .is_some_and(|status| (200..300).contains(&status));
        if succeeded && health.call_alerts_may_be_open.swap(false, Ordering::AcqRel) {
            for code in [
                CRM_UNREACHABLE_ALERT,
                AUTH_FAILED_ALERT,
                CRM_MISCONFIGURED_ALERT,
            ] {
                self.resolve_logged(code, now_ms);
            }
        }
    }

    /// `count` entries were dead-lettered (the submitter, or the operator's test hook).
    pub fn entries_dead_lettered(&self, count: u64, now_ms: u64) {
        if count == 0 {
            return;
        }
        let message = format!("{count} entries dead-lettered last time; see GET /v1/tenants/{}/dead-letters, then replay or discard them", self.tenant_id);
        self.raise_logged(DEAD_LETTERS_ALERT, &message, now_ms);
    }

    /// A test-mode event the tenant ignores (it does not accept them): counted, and a
    /// one-time hint alert.
    pub fn test_event_ignored(&self, now_ms: u64) {
        let before = self
            .health
            .test_events_ignored
            .fetch_add(1, Ordering::Relaxed);
        if before > 0 {
            return; // The hint is stored at most once per start (and once ever: below).
        }
        let message = "test-mode events are arriving; set accept_test_events for a test tenant";
        match self
            .tenant_store()
            .raise_alert_once(TEST_EVENTS_IGNORED_ALERT, message, now_ms)
        {
            Ok(true) => {
                tracing::warn!(tenant_id = %self.tenant_id, alert = TEST_EVENTS_IGNORED_ALERT, "{}", message.escape_debug())
            }
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(tenant_id = %self.tenant_id, error = %error, "alert could not be stored")
            }
        }
    }

    /// Virtuous cannot be called as configured (not a refusal of the key): the tenant waits
    /// for an operator as after a 401, with the alert `crm_misconfigured`.
    pub fn crm_misconfigured(&self, reason: &str, now_ms: u64) {
        let message = format!("Virtuous cannot be called as configured: {reason}; submission paused until an operator fixes the tenant's virtuous settings and resumes");
        self.wait_for_operator(CRM_MISCONFIGURED_ALERT, &message, reason, now_ms);
    }

    /// Pauses the tenant for an operator (remembered across restarts) and raises `code`.
    pub(crate) fn wait_for_operator(&self, code: &str, message: &str, reason: &str, now_ms: u64) {
        self.set_run_state(TenantRunState::NeedsOperator);
        // Remembered across restarts: a restarted tenant starts paused instead of spending a
        // call to be refused again.
        if let Err(error) = self
            .store()
            .registry()
            .mark_needs_operator(&self.tenant_id, now_ms)
        {
            tracing::warn!(tenant_id = %self.tenant_id, error = %error, "needs_operator could not be stored");
        }
        self.health
            .call_alerts_may_be_open
            .store(true, Ordering::Release);
        match self.tenant_store().raise_alert(code, message, now_ms) {
            Ok(true) => {
                tracing::error!(tenant_id = %self.tenant_id, alert = code, reason, "tenant paused: waiting for an operator")
            }
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(tenant_id = %self.tenant_id, error = %error, "alert could not be stored")
            }
        }
    }

    /// Raises `code`; ERROR once when it opens (first time or reopened).
    fn raise_logged(&self, code: &str, message: &str, now_ms: u64) {
        match self.tenant_store().raise_alert(code, message, now_ms) {
            Ok(true) => {
                tracing::error!(tenant_id = %self.tenant_id, alert = code, "{}", message.escape_debug())
            }
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(tenant_id = %self.tenant_id, error = %error, "alert could not be stored")
            }
        }
    }

    fn resolve_logged(&self, code: &str, now_ms: u64) {
        match self.tenant_store().resolve_alert(code, now_ms) {
            Ok(true) => tracing::info!(tenant_id = %self.tenant_id, alert = code, "alert resolved"),
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(tenant_id = %self.tenant_id, error = %error, "alert could not be resolved")
            }
        }
    }
}
