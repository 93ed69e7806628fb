//! Reconciler: confirms submitted gifts in bulk, flags duplicates and stale records
//! (ARCHITECTURE.md), and runs the daily dedup-retention prune.
//!
//! A pass ([`crate::reconciler_pass`]) runs every `confirm.reconcile_interval_ms`, a few
//! seconds after start when something is unconfirmed, and on [`ReconcileNow`]
//! ([`crate::runtime::TenantHandle::reconcile_now`]). Passes are skipped (no calls) while the
//! tenant is paused or waits for an operator, and when nothing is unconfirmed. The pass runs
//! as a future on the tenant's arbiter: the actor keeps ticking (and stays supervised) while
//! it waits for Virtuous. Nothing survives a restart but what the store holds: the next
//! generation finds the unconfirmed index and starts over.

pub mod money_job;
pub mod pass;
mod reconciliations;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix::{ActorFutureExt, AsyncContext, Context, Handler, WrapFuture};
use rand::Rng;
use serde::Serialize;

use crate::child::{Child, ChildBehavior};
use crate::hub::TenantShared;
use crate::messages::ReconcileNow;
use crate::observe::ActorKind;
use crate::reconciler::pass::{run_pass, PassContext, PassReport, PassSettings};
use crate::store::StoreError;

pub type ReconcilerActor = Child<Reconciler>;

/// First pass after a start, when something waits for confirmation: soon, spread so that
/// thousands of tenants starting together do not query at once.
const FIRST_PASS_DELAY_MS: std::ops::RangeInclusive<u64> = 1_000..=5_000;

/// The reconciler's state, as the admin API shows it.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct Reconciler {
    pub pass_running: bool,
    /// Passes finished by this generation.
    pub passes: u64,
    pub last_pass_started_ms: Option<u64>,
    pub last_pass_finished_ms: Option<u64>,
    pub last_pass: Option<PassReport>,
    pub next_pass_at_ms: u64,
    /// Since this generation started.
    pub confirmed_total: u64,
    pub duplicates_total: u64,
    pub needs_review_total: u64,
    /// Why the latest pass was skipped or failed.
    pub last_error: Option<String>,
    pub last_dedup_prune_ms: Option<u64>,
    /// A pass was asked for while one ran: run again when it ends.
    #[serde(skip)]
    rerun_requested: bool,
    /// A tick asked for a pass and the message is on its way.
    #[serde(skip)]
    pass_requested: bool,
    /// The tenant was paused (or waiting for an operator) at the last tick: a pass is due
    /// soon after it runs again, not an interval later.
    #[serde(skip)]
    was_blocked: bool,
    /// The dedup prune runs on a blocking thread; one at a time.
    #[serde(skip)]
    prune_running: PruneFlag,
    /// Money reconciliation: the job this generation runs now, if any.
    pub money_job: Option<String>,
    /// Why the latest money reconciliation run stopped or failed.
    pub money_last_error: Option<String>,
    #[serde(skip)]
    money: reconciliations::MoneyRuns,
}

/// Shared flag of a prune in progress (compared by value only for `observed`'s equality).
#[derive(Debug, Default, Clone)]
struct PruneFlag(Arc<AtomicBool>);

impl PartialEq for PruneFlag {
    fn eq(&self, _other: &PruneFlag) -> bool {
        true
    }
}

impl ChildBehavior for Reconciler {
    const KIND: ActorKind = ActorKind::Reconciler;
    type Observed = Reconciler;

    fn rebuild(shared: &TenantShared) -> Reconciler {
        let now_ms = shared.clock.now_ms();
        let interval_ms = shared.settings().confirm.reconcile_interval_ms;
        let has_unconfirmed = shared.tenant_store().has_unconfirmed().unwrap_or(true);
        let first_in_ms = if has_unconfirmed {
            rand::thread_rng()
                .gen_range(FIRST_PASS_DELAY_MS)
                .min(interval_ms)
        } else {
            interval_ms
        };
        Reconciler {
            next_pass_at_ms: now_ms + first_in_ms,
            // A job left running by the previous generation resumes at the first tick.
            money: reconciliations::MoneyRuns::due_now(),
            ..Reconciler::default()
        }
    }

    fn on_tick(&mut self, shared: &TenantShared) -> Result<(), String> {
        let now_ms = shared.clock.now_ms();
        self.start_prune_if_due(shared, now_ms);
        let blocked = shared.is_paused() || shared.needs_operator();
        if self.was_blocked && !blocked {
            // Resumed: catch up with what was submitted before the pause.
            self.next_pass_at_ms = self
                .next_pass_at_ms
                .min(now_ms + FIRST_PASS_DELAY_MS.start());
        }
        self.was_blocked = blocked;
        self.check_nightly(shared, now_ms);
        if !self.pass_running && !self.pass_requested && now_ms >= self.next_pass_at_ms {
            // The tick has no actor context: the pass starts in the message handler.
            self.pass_requested = shared.request_reconcile_pass();
        }
        Ok(())
    }

    fn observed(&self) -> Reconciler {
        self.clone()
    }

    fn after_tick(child: &mut ReconcilerActor, ctx: &mut Context<ReconcilerActor>) {
        child.start_money_job_if_due(ctx);
    }
}

impl Reconciler {
    /// The retention prune scans every record: at most daily (a checkpoint says when it last
    /// ran; reading it is one point read), on a blocking thread so the arbiter keeps serving
    /// other tenants.
    fn start_prune_if_due(&mut self, shared: &TenantShared, now_ms: u64) {
        if self.last_dedup_prune_ms.is_none() {
            match shared.tenant_store().dedup_pruned_at_ms(now_ms) {
                Ok(at_ms) => self.last_dedup_prune_ms = Some(at_ms),
                Err(error) => {
                    tracing::warn!(tenant_id = %shared.tenant_id, error = %error, "dedup prune checkpoint unreadable");
                    return;
                }
            }
        }
        if self.last_dedup_prune_ms.is_some_and(|last| {
            now_ms.saturating_sub(last) < crate::store::confirm_ops::DEDUP_PRUNE_INTERVAL_MS
        }) {
            return;
        }
        if self.prune_running.0.swap(true, Ordering::AcqRel) {
            return;
        }
        self.last_dedup_prune_ms = Some(now_ms);
        let store = shared.tenant_store().clone();
        let retention_ms = shared.settings().confirm.dedup_retention_ms;
        let running = Arc::clone(&self.prune_running.0);
        let tenant_id = shared.tenant_id.clone();
        let prune = move || {
            match store.prune_dedup_if_due(retention_ms, now_ms) {
                Ok(Some(forgotten)) => {
                    tracing::info!(tenant_id = %tenant_id, forgotten, "dedup retention prune done")
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(tenant_id = %tenant_id, error = %error, "dedup retention prune failed")
                }
            }
            running.store(false, Ordering::Release);
        };
        // Inside an arbiter (a tokio runtime) use its blocking pool; a plain thread otherwise.
        if tokio::runtime::Handle::try_current().is_ok() {
            drop(tokio::task::spawn_blocking(prune));
        } else {
            std::thread::spawn(prune);
        }
    }
}

impl ReconcilerActor {
    fn start_pass(&mut self, ctx: &mut Context<Self>) {
        let shared = Arc::clone(&self.core.shared);
        let now_ms = shared.clock.now_ms();
        let settings = shared.settings().confirm;
        let state = &mut self.behavior;
        state.pass_requested = false;
        let skip_reason = if shared.needs_operator() {
            Some("tenant needs an operator: no calls")
        } else if shared.is_paused() {
            Some("tenant paused: no calls")
        } else {
            None
        };
        if let Some(reason) = skip_reason {
            state.last_error = Some(reason.to_string());
            state.next_pass_at_ms = now_ms + settings.reconcile_interval_ms;
            self.publish();
            return;
        }
        state.pass_running = true;
        state.last_pass_started_ms = Some(now_ms);
        self.publish();
        let cell = Arc::clone(&self.core.cell);
        let generation = self.core.generation;
        let pass_settings = PassSettings {
            query_take: settings.query_take,
            needs_review_after_ms: settings.needs_review_after_ms,
        };
        let pass = async move {
            let still_current = || cell.generation() == generation;
            let context = PassContext {
                tenant_id: &shared.tenant_id,
                store: shared.tenant_store(),
                crm: shared.crm(),
                budget: shared.as_ref(),
                clock: shared.clock.as_ref(),
                still_current: &still_current,
            };
            let report = run_pass(context, pass_settings).await?;
            // Confirmations are durable at the next group commit; waiting here makes a pass
            // that reports them a pass that kept them.
            shared.store().durable().await?;
            Ok::<PassReport, StoreError>(report)
        };
        ctx.spawn(
            pass.into_actor(self)
                .map(|result, actor, ctx| actor.finish_pass(result, ctx)),
        );
    }

    fn finish_pass(&mut self, result: Result<PassReport, StoreError>, ctx: &mut Context<Self>) {
        if !self.may_act(ctx) {
            return;
        }
        let now_ms = self.core.shared.clock.now_ms();
        let interval_ms = self.core.shared.settings().confirm.reconcile_interval_ms;
        let state = &mut self.behavior;
        state.pass_running = false;
        state.passes += 1;
        state.last_pass_finished_ms = Some(now_ms);
        state.next_pass_at_ms = now_ms + interval_ms;
        match result {
            Ok(report) => {
                state.confirmed_total += report.confirmed;
                state.duplicates_total += report.duplicates;
                state.needs_review_total += report.needs_review;
                state.last_error = report.stopped_early.clone();
                if let Some(wait_ms) = report.budget_wait_ms {
                    state.next_pass_at_ms = now_ms + wait_ms.min(interval_ms);
                }
                tracing::info!(
                    tenant_id = %self.core.shared.tenant_id,
                    pages_read = report.pages_read,
                    confirmed = report.confirmed,
                    duplicates = report.duplicates,
                    needs_review = report.needs_review,
                    stopped_early = report.stopped_early.as_deref().unwrap_or(""),
                    "reconciliation pass done"
                );
                state.last_pass = Some(report);
            }
            Err(error) => {
                tracing::warn!(tenant_id = %self.core.shared.tenant_id, error = %error.to_string().escape_debug(), "reconciliation pass failed");
                state.last_error = Some(error.to_string());
            }
        }
        let rerun = std::mem::take(&mut state.rerun_requested);
        self.publish();
        if rerun {
            self.start_pass(ctx);
        }
    }
}

impl Handler<ReconcileNow> for ReconcilerActor {
    type Result = ();

    fn handle(&mut self, mut message: ReconcileNow, ctx: &mut Context<Self>) {
        message.guard.mark_handling();
        if !self.may_act(ctx) {
            return;
        }
        if self.behavior.pass_running {
            self.behavior.rerun_requested = true;
            self.behavior.pass_requested = false;
            return;
        }
        self.start_pass(ctx);
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
