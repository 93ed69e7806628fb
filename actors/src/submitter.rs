//! Submitter: will drain the queue into Virtuous under the tenant's budget (next issue).
//!
//! For now it idles: it keeps its generation (a lease taken by a replaced generation will be
//! refused on completion) and the paused flag, and counts the work hints it receives. Its
//! state comes from the shared tenant state and the store, never from before a restart.

use actix::{Context, Handler};
use serde::Serialize;

use std::sync::atomic::Ordering;

use crate::budget::BudgetStatus;

/// How often the budget gauges are recomputed.
const BUDGET_GAUGE_REFRESH_MS: u64 = 60_000;
use crate::child::{Child, ChildBehavior};
use crate::messages::{SetPaused, WorkHint};
use crate::observe::{ActorKind, TenantShared};

pub type SubmitterActor = Child<Submitter>;

#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize)]
pub struct Submitter {
    paused: bool,
    work_hints: u64,
    /// Entries waiting in the store, as last read.
    queued_total: u64,
}

impl ChildBehavior for Submitter {
    const KIND: ActorKind = ActorKind::Submitter;
    type Observed = Submitter;

    fn rebuild(shared: &TenantShared) -> Submitter {
        publish_budget_gauges(shared);
        Submitter {
            paused: shared.is_paused(),
            work_hints: 0,
            queued_total: shared.data.queued_total(),
        }
    }
    fn on_tick(&mut self, shared: &TenantShared) -> Result<(), String> {
        // The shared flag is the truth; SetPaused only makes the change visible sooner.
        self.paused = shared.is_paused();
        self.queued_total = shared.data.queued_total();
        publish_budget_gauges(shared);
        Ok(())
    }
    fn observed(&self) -> Submitter {
        *self
    }
}

/// The submitter owns the budget: it exports the tenant's allowance and spending.
///
/// The spending gauge reads the call log (a store scan), so it is refreshed at most once per
/// [`BUDGET_GAUGE_REFRESH_MS`], not on every tick: at 10,000 tenants the scans were a
/// visible share of an idle node's CPU.
fn publish_budget_gauges(shared: &TenantShared) {
    let now_ms = shared.clock.now_ms();
    let published_at_ms = shared.gauges.budget_published_at_ms.load(Ordering::Relaxed);
    if published_at_ms != 0 && now_ms.saturating_sub(published_at_ms) < BUDGET_GAUGE_REFRESH_MS {
        return;
    }
    shared
        .gauges
        .budget_published_at_ms
        .store(now_ms.max(1), Ordering::Relaxed);
    let settings = shared.settings().budget;
    let status = BudgetStatus::compute(
        &settings,
        shared.rate_limit_headers(),
        shared.data.as_ref(),
        shared.clock.as_ref(),
    );
    let Ok(status) = status else { return };
    shared
        .gauges
        .budget_allowance_per_hour
        .set(status.allowance_per_hour as f64);
    shared
        .gauges
        .budget_spent_last_hour
        .set(status.spent_last_hour as f64);
}

impl Handler<WorkHint> for SubmitterActor {
    type Result = ();

    fn handle(&mut self, mut hint: WorkHint, ctx: &mut Context<Self>) {
        hint.guard.mark_handling();
        if !self.may_act(ctx) {
            return;
        }
        self.behavior.work_hints += 1;
        self.behavior.queued_total = self.core.shared.data.queued_total();
        self.publish();
    }
}

impl Handler<SetPaused> for SubmitterActor {
    type Result = ();

    fn handle(&mut self, mut message: SetPaused, ctx: &mut Context<Self>) {
        message.guard.mark_handling();
        if !self.may_act(ctx) {
            return;
        }
        self.behavior.paused = message.paused;
        self.publish();
    }
}
