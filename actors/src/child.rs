//! The shell every supervised child shares: start, ticks and progress marks, the generation
//! check, the test kill hook, and reporting its death to the supervisor.
//!
//! A child actor is `Child<B>` where `B` ([`ChildBehavior`]) is the part that differs
//! (`capture.rs`, `queue.rs`, …). Keeping the supervision protocol in one place means all
//! five children obey it the same way.

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, WrapFuture};
use rand::Rng;
use serde::Serialize;

use crate::hub::TenantShared;
use crate::messages::{ChildCommand, ChildControl, ChildExit, ChildStopped, KillMode};
use crate::observe::{ActorCell, ActorKind, ActorState};

/// The part of a child that differs from one kind to another.
pub trait ChildBehavior: Sized + Unpin + 'static {
    const KIND: ActorKind;
    /// What the admin API shows of this child (besides generation and ticks).
    type Observed: Serialize + PartialEq + Unpin;
    /// Rebuilds the child's state from the store: nothing survives in memory across a
    /// restart (ARCHITECTURE.md, "Invariants").
    fn rebuild(shared: &TenantShared) -> Self;
    /// Periodic work. `Err` stops the child with that error (the supervisor restarts it).
    fn on_tick(&mut self, shared: &TenantShared) -> Result<(), String>;
    fn observed(&self) -> Self::Observed;
    /// Runs once when this generation has started (after its state was rebuilt): timers,
    /// schedules.
    fn started(_child: &mut Child<Self>, _ctx: &mut Context<Child<Self>>) {}
    /// Runs after each successful tick, with the actor's context (work a lost hint left
    /// undone).
    fn after_tick(_child: &mut Child<Self>, _ctx: &mut Context<Child<Self>>) {}
    /// A call is out whose answer a stopping tenant should still record (the submitter's
    /// Virtuous call: dropping it loses the answer of a write Virtuous may have applied, and
    /// the restart sends it again). Such a child defers its stop until the answer is in
    /// ([`Child::finish_deferred_stop`]).
    fn busy(&self) -> bool {
        false
    }
}

/// A supervised child actor.
pub struct Child<B: ChildBehavior> {
    pub behavior: B,
    pub core: ChildCore,
    /// What the cell shows now; re-serialised only when the behaviour's state differs.
    published: Option<B::Observed>,
}

/// The bookkeeping common to every child.
pub struct ChildCore {
    pub shared: Arc<TenantShared>,
    pub cell: Arc<ActorCell>,
    /// This child's generation; it may act only while the cell still names it.
    pub generation: u64,
    /// Where the child reports its exit (the supervisor; a recipient, so the shell does not
    /// depend on who supervises it).
    exits: actix::Recipient<ChildStopped>,
    /// Why the child is stopping, read by `stopped()` (absent = unexpected stop).
    exit: Option<ChildExit>,
    stalled_by_test_hook: bool,
    /// The tenant is stopping and this child waits for its call in flight before stopping:
    /// it starts nothing new, and its generation, retired by the stop, does not refuse that
    /// one answer (its leases are still held; the store's lease check still applies).
    pub stop_deferred: bool,
}

/// The observed state of a child: common fields plus its kind's own (`ticks` and
/// `last_tick_ms` are added from the cell's atomics when status is read).
#[derive(Serialize)]
struct ObservedView<'a, T: Serialize> {
    generation: u64,
    stalled_by_test_hook: bool,
    // serde_json only (never bincode), so flatten is fine here.
    #[serde(flatten)]
    state: &'a T,
}

impl<B: ChildBehavior> Child<B> {
    /// Creates generation `generation` of this child on the current arbiter (the
    /// supervisor's), rebuilding its state from the store.
    pub fn start_generation(
        shared: Arc<TenantShared>,
        generation: u64,
        exits: actix::Recipient<ChildStopped>,
    ) -> actix::Addr<Child<B>> {
        let cell = Arc::clone(shared.cell(B::KIND));
        let behavior = B::rebuild(&shared);
        let core = ChildCore {
            shared,
            cell,
            generation,
            exits,
            exit: None,
            stalled_by_test_hook: false,
            stop_deferred: false,
        };
        Child {
            behavior,
            core,
            published: None,
        }
        .start()
    }

    /// Marks progress and publishes the observed state to the cell if it changed.
    pub fn publish(&mut self) {
        self.core
            .cell
            .mark_progress(self.core.shared.clock.now_ms());
        let observed = self.behavior.observed();
        if self.published.as_ref() == Some(&observed) {
            return;
        }
        let view = ObservedView {
            generation: self.core.generation,
            stalled_by_test_hook: self.core.stalled_by_test_hook,
            state: &observed,
        };
        let value = serde_json::to_value(&view).unwrap_or(serde_json::Value::Null);
        self.core.cell.publish_observed(value);
        self.published = Some(observed);
    }

    /// True when this generation may act. A replaced child that woke up refuses, counts the
    /// refusal and stops: it must never complete work its successor owns.
    pub fn may_act(&mut self, ctx: &mut Context<Self>) -> bool {
        if self.core.stop_deferred {
            // Stopping once the call in flight is answered: nothing new starts meanwhile.
            return false;
        }
        if self.core.cell.generation() == self.core.generation {
            return true;
        }
        self.core.exit = Some(ChildExit::Requested);
        ctx.stop();
        if self.core.cell.state() == ActorState::Stopping {
            // The tenant is stopping (which also retires generations): not a stale wake-up.
            return false;
        }
        self.core.cell.record_stale_refusal();
        tracing::warn!(
            tenant_id = %self.core.shared.tenant_id,
            actor = B::KIND.name(),
            generation = self.core.generation,
            current_generation = self.core.cell.generation(),
            "replaced child woke up; refusing to act and stopping"
        );
        false
    }

    /// After a deferred stop's call was answered and recorded: stops now (true), else false.
    pub fn finish_deferred_stop(&mut self, ctx: &mut Context<Self>) -> bool {
        if !self.core.stop_deferred {
            return false;
        }
        self.core.exit = Some(ChildExit::Requested);
        ctx.stop();
        true
    }

    /// Stops the child with an error (the supervisor restarts it).
    pub fn fail(&mut self, error: String, ctx: &mut Context<Self>) {
        tracing::warn!(tenant_id = %self.core.shared.tenant_id, actor = B::KIND.name(), error = %error.to_string().escape_debug(), "child failed");
        self.core.exit = Some(ChildExit::Failed(error));
        ctx.stop();
    }

    fn schedule_tick(&mut self, ctx: &mut Context<Self>, first: bool) {
        // Every half heartbeat: a healthy child is never silent for more than half a
        // heartbeat (plus scheduling lag), so the supervisor's "silent > heartbeat" rule keeps
        // half a heartbeat of slack. Ticks are most of an idle node's CPU at 10,000 tenants.
        let interval_ms = (self.core.shared.settings().heartbeat_ms / 2).max(1);
        // Spread first ticks so thousands of tenants started together do not tick in step.
        let delay_ms = if first {
            rand::thread_rng().gen_range(interval_ms / 2..=interval_ms)
        } else {
            interval_ms
        };
        ctx.run_later(Duration::from_millis(delay_ms), |child, ctx| {
            child.tick(ctx)
        });
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if !self.may_act(ctx) {
            return;
        }
        if let Err(error) = self.behavior.on_tick(&self.core.shared) {
            self.fail(error, ctx);
            return;
        }
        self.core.cell.record_tick(self.core.shared.clock.now_ms());
        B::after_tick(self, ctx);
        self.publish();
        self.schedule_tick(ctx, false);
    }

    /// Test hook: stop making progress without blocking the arbiter. The child waits until
    /// it has been replaced (its generation is no longer current), then processes what is
    /// queued — and refuses it, being stale.
    fn stall(&mut self, ctx: &mut Context<Self>) {
        self.core.stalled_by_test_hook = true;
        self.published = None; // force: the flag is not part of the behaviour's state
        self.publish();
        let my_generation = self.core.generation;
        let mut current_generation = self.core.cell.watch_generation();
        let superseded = async move {
            // Err only if the cell is gone, which cannot happen while we hold it.
            let _ = current_generation
                .wait_for(|current| *current != my_generation)
                .await;
        };
        ctx.wait(superseded.into_actor(self).map(|(), child, _ctx| {
            tracing::info!(
                tenant_id = %child.core.shared.tenant_id,
                actor = B::KIND.name(),
                generation = child.core.generation,
                "stalled child woke up after its replacement"
            );
        }));
    }
}

impl<B: ChildBehavior> Actor for Child<B> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.core.shared.settings().mailbox_capacity);
        self.core.cell.mark_started(self.core.shared.clock.now_ms());
        self.publish();
        self.schedule_tick(ctx, true);
        B::started(self, ctx);
    }

    /// Runs on every stop, including while unwinding from a panic in a handler (actix's
    /// `Supervisor` does not see panics, so the child reports its own death). Must not panic.
    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        let exit = if std::thread::panicking() {
            ChildExit::Panicked
        } else {
            self.core
                .exit
                .take()
                .unwrap_or_else(|| ChildExit::Failed("stopped unexpectedly".to_string()))
        };
        let guard = self.core.shared.supervisor_cell.mailbox.guard();
        self.core.exits.do_send(ChildStopped {
            kind: B::KIND,
            generation: self.core.generation,
            exit,
            guard,
        });
    }
}

impl<B: ChildBehavior> Handler<ChildControl> for Child<B> {
    type Result = ();

    fn handle(&mut self, mut message: ChildControl, ctx: &mut Context<Self>) {
        message.guard.mark_handling();
        if let ChildCommand::Stop = message.command {
            // Graceful tenant stop: a busy child records its call's answer first. Only once:
            // a second Stop (the supervisor giving up after its stop timeout) stops at once;
            // a replaced child (tenant not stopping) stops at once as before.
            let tenant_stopping = self.core.shared.supervisor_cell.state() == ActorState::Stopping;
            if tenant_stopping && self.behavior.busy() && !self.core.stop_deferred {
                self.core.stop_deferred = true;
                tracing::info!(tenant_id = %self.core.shared.tenant_id, actor = B::KIND.name(), "stopping after the call in flight is answered");
                return;
            }
            self.core.exit = Some(ChildExit::Requested);
            ctx.stop();
            return;
        }
        if !self.may_act(ctx) {
            return;
        }
        match message.command {
            ChildCommand::Stop => {}
            ChildCommand::Kill(KillMode::Panic) => {
                panic!(
                    "{} of tenant {} killed by the test hook (panic)",
                    B::KIND.name(),
                    self.core.shared.tenant_id
                )
            }
            ChildCommand::Kill(KillMode::Error) => {
                self.fail("killed by the test hook (error)".to_string(), ctx)
            }
            ChildCommand::Kill(KillMode::Stall) => self.stall(ctx),
        }
    }
}
