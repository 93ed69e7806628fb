//! The Reconciler's money reconciliation runs (docs/backfill.md "Money reconciliation"):
//! the nightly schedule (`reconciliation.daily_at`), and one job at a time, run as a future
//! on the tenant's arbiter ([`super::money_job::run_job`]) while the actor keeps ticking.
//!
//! Nothing survives a restart but the store: a new generation looks for a running (or
//! pending) job at its first tick and resumes it at the stored `skip`; the nightly
//! checkpoint says which run was last created.

use std::sync::Arc;

use actix::{ActorFutureExt, AsyncContext, Context, Handler, WrapFuture};

use super::money_job::{run_job, JobContext, JobRun};
use super::{Reconciler, ReconcilerActor};
use crate::hub::TenantShared;
use crate::messages::RunReconciliations;
use crate::money::{last_daily_at, nightly_range, JobRequest, Trigger, NIGHTLY_CHECKPOINT};
use crate::store::StoreError;

/// Wait before looking again after the store failed.
const STORE_FAILURE_WAIT_MS: u64 = 30_000;

/// What the actor keeps of its money runs (rebuilt at each generation).
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct MoneyRuns {
    /// A job's future is in flight.
    running: bool,
    /// A job may be waiting: look at the next chance.
    due: bool,
    /// Not before then (a budget wait, a failed call's backoff).
    next_at_ms: u64,
    /// The nightly run last created (its due time, ms), once read from the checkpoint.
    nightly_handled_ms: Option<u64>,
}

impl MoneyRuns {
    pub(super) fn due_now() -> MoneyRuns {
        MoneyRuns {
            due: true,
            ..MoneyRuns::default()
        }
    }
}

impl Reconciler {
    /// Creates the nightly jobs once `daily_at` has passed since the run last created. The
    /// first time a schedule is seen, nothing runs until its next time.
    pub(super) fn check_nightly(&mut self, shared: &TenantShared, now_ms: u64) {
        let settings = shared.settings().reconciliation;
        let Some((hour, minute)) = settings.daily_at else {
            return;
        };
        let Some((due_ms, day)) = last_daily_at(hour, minute, &settings.time_zone, now_ms) else {
            return;
        };
        let store = shared.tenant_store();
        let handled_ms = match self.money.nightly_handled_ms {
            Some(handled_ms) => Some(handled_ms),
            None => match store.get_checkpoint(NIGHTLY_CHECKPOINT) {
                Ok(bytes) => bytes.and_then(|bytes| String::from_utf8(bytes).ok()?.parse().ok()),
                Err(error) => {
                    tracing::warn!(tenant_id = %shared.tenant_id, error = %error, "nightly reconciliation checkpoint unreadable");
                    return;
                }
            },
        };
        if handled_ms.is_some_and(|handled_ms| handled_ms >= due_ms) {
            self.money.nightly_handled_ms = handled_ms;
            return;
        }
        if handled_ms.is_some() {
            if let Some((from, to)) = nightly_range(day) {
                for source in &settings.sources {
                    let request = JobRequest {
                        source: source.source.clone(),
                        from,
                        to,
                        trigger: Trigger::Nightly,
                        reason: format!("nightly at {hour:02}:{minute:02} ({day})"),
                    };
                    if let Err(error) = shared.create_reconciliation(request, false) {
                        tracing::warn!(tenant_id = %shared.tenant_id, source = %source.source, error = %error, "nightly reconciliation not created");
                    }
                }
                self.money.due = true;
            }
        }
        // Created jobs are durable with the checkpoint's group commit; a crash before it
        // creates them again, and an unfinished job of the same days is not doubled.
        match store.put_checkpoint(NIGHTLY_CHECKPOINT, due_ms.to_string().as_bytes()) {
            Ok(()) => self.money.nightly_handled_ms = Some(due_ms),
            Err(error) => {
                tracing::warn!(tenant_id = %shared.tenant_id, error = %error, "nightly reconciliation checkpoint not stored")
            }
        }
    }
}

impl ReconcilerActor {
    /// Starts the tenant's running (or oldest pending) job when one may be waiting, none is
    /// in flight, its wait is over, and the tenant may call Virtuous.
    pub(super) fn start_money_job_if_due(&mut self, ctx: &mut Context<Self>) {
        let shared = Arc::clone(&self.core.shared);
        let now_ms = shared.clock.now_ms();
        let runs = &self.behavior.money;
        if !runs.due || runs.running || now_ms < runs.next_at_ms {
            return;
        }
        if shared.is_paused() || shared.needs_operator() {
            // Stays due: the first tick after the resume starts it.
            return;
        }
        self.behavior.money.due = false;
        let job = match shared.next_reconciliation() {
            Ok(Some(job)) => job,
            Ok(None) => {
                self.behavior.money_job = None;
                self.publish();
                return;
            }
            Err(error) => {
                tracing::warn!(tenant_id = %shared.tenant_id, error = %error, "money reconciliation jobs unreadable");
                self.behavior.money.due = true;
                self.behavior.money.next_at_ms = now_ms + STORE_FAILURE_WAIT_MS;
                return;
            }
        };
        self.behavior.money.running = true;
        self.behavior.money_job = Some(job.id.clone());
        self.publish();
        let cell = Arc::clone(&self.core.cell);
        let generation = self.core.generation;
        let take = shared.settings().confirm.query_take;
        let run = async move {
            let may_go_on = || {
                cell.generation() == generation && !shared.is_paused() && !shared.needs_operator()
            };
            let context = JobContext {
                tenant_id: &shared.tenant_id,
                store: shared.tenant_store(),
                crm: shared.crm(),
                budget: shared.as_ref(),
                clock: shared.clock.as_ref(),
                take,
                may_go_on: &may_go_on,
            };
            let outcome = run_job(context, job).await?;
            // A finished job (and its alert) is durable before the actor says so.
            shared.store().durable().await?;
            Ok::<JobRun, StoreError>(outcome)
        };
        ctx.spawn(
            run.into_actor(self)
                .map(|result, actor, ctx| actor.finish_money_job(result, ctx)),
        );
    }

    fn finish_money_job(&mut self, result: Result<JobRun, StoreError>, ctx: &mut Context<Self>) {
        if !self.may_act(ctx) {
            return;
        }
        let now_ms = self.core.shared.clock.now_ms();
        let runs = &mut self.behavior.money;
        runs.running = false;
        // Whatever happened, another look is due (a pending job, or this one again).
        runs.due = true;
        let mut next_now = false;
        match result {
            Ok(JobRun::Finished(job)) => {
                runs.next_at_ms = 0;
                self.behavior.money_job = None;
                self.behavior.money_last_error = job.error.clone();
                next_now = true;
            }
            Ok(JobRun::Wait { wait_ms }) => runs.next_at_ms = now_ms + wait_ms,
            Ok(JobRun::Stopped) => {}
            Err(error) => {
                tracing::warn!(tenant_id = %self.core.shared.tenant_id, error = %error, "money reconciliation run failed in the store");
                runs.next_at_ms = now_ms + STORE_FAILURE_WAIT_MS;
                self.behavior.money_last_error = Some(error.to_string());
            }
        }
        self.publish();
        if next_now {
            self.start_money_job_if_due(ctx);
        }
    }
}

impl Handler<RunReconciliations> for ReconcilerActor {
    type Result = ();

    fn handle(&mut self, mut message: RunReconciliations, ctx: &mut Context<Self>) {
        message.guard.mark_handling();
        if !self.may_act(ctx) {
            return;
        }
        self.behavior.money.due = true;
        self.start_money_job_if_due(ctx);
    }
}

#[cfg(test)]
#[path = "reconciliations_tests.rs"]
mod tests;
