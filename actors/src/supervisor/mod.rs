//! TenantSupervisor: starts, watches and restarts a tenant's five children.
//!
//! - A child that dies (panic or error) reports from its `stopped()` ([`ChildStopped`]) and
//!   is re-created after a backoff that doubles from `restart_backoff_initial_ms` up to
//!   `restart_backoff_max_ms` (reset once a child has lived that long).
//! - Every `heartbeat_ms / 2` the supervisor compares each running child's latest progress
//!   mark with the clock; a child silent for longer than `heartbeat_ms` is replaced: its
//!   generation stops being current (so it refuses to act if it ever wakes), it is told to
//!   stop, and a new generation starts after the backoff.
//! - The supervisor and its children share one arbiter; everything observable lives in
//!   [`TenantShared`](crate::hub::TenantShared), readable without messaging anybody.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, ActorContext, Addr, AsyncContext, Context, Handler, Recipient};
use serde::Serialize;
use tokio::sync::oneshot;

use crate::capture::Capture;
use crate::child::{Child, ChildBehavior};
use crate::hub::{CaptureAddress, ChildAddresses, InboundAddress, SubmitterAddress, TenantShared};
use crate::inbound::Inbound;
use crate::messages::{
    ChildCommand, ChildControl, ChildExit, ChildStopped, KillChild, SettingsChanged, StopTenant,
};
use crate::observe::{ActorKind, ActorState};
use crate::queue::Queue;
use crate::reconciler::Reconciler;
use crate::submitter::Submitter;

/// How long a stopping supervisor waits for its children before stopping anyway (a child
/// blocking its arbiter thread would never answer).
const STOP_TIMEOUT_MS: u64 = 5_000;

/// One child slot of the supervisor.
struct ChildSlot {
    kind: ActorKind,
    /// Control channel of the live child, with its generation.
    live: Option<(Recipient<ChildControl>, u64)>,
    /// Delay before the next re-creation.
    next_backoff_ms: u64,
    started_at_ms: u64,
    /// A replacement already advanced the cell's generation for the next child.
    generation_advanced: bool,
}

/// The supervisor's own observable state.
#[derive(Debug, Default, Serialize)]
struct SupervisorObserved {
    restarts_total: u64,
    stall_replacements_total: u64,
    /// Progress checks skipped because they ran late (the arbiter thread was blocked).
    grace_rounds_after_blocked_arbiter: u64,
    arbiter_thread: String,
}

pub struct TenantSupervisor {
    shared: Arc<TenantShared>,
    slots: [ChildSlot; 5],
    stopping: bool,
    stop_waiters: Vec<oneshot::Sender<()>>,
    observed: SupervisorObserved,
}

impl TenantSupervisor {
    pub fn new(shared: Arc<TenantShared>) -> TenantSupervisor {
        let initial_backoff_ms = shared.settings().restart_backoff_initial_ms;
        let slots = ActorKind::ALL.map(|kind| ChildSlot {
            kind,
            live: None,
            next_backoff_ms: initial_backoff_ms,
            started_at_ms: 0,
            generation_advanced: false,
        });
        TenantSupervisor {
            shared,
            slots,
            stopping: false,
            stop_waiters: Vec::new(),
            observed: Default::default(),
        }
    }

    fn spawn_child(&mut self, kind: ActorKind, ctx: &mut Context<Self>) {
        let shared = Arc::clone(&self.shared);
        let cell = Arc::clone(shared.cell(kind));
        let slot = &mut self.slots[kind.index()];
        let generation = if slot.generation_advanced {
            cell.generation()
        } else {
            cell.generation() + 1
        };
        slot.generation_advanced = false;
        cell.set_generation(generation);
        cell.set_state(ActorState::Starting);
        let exits = ctx.address().recipient();
        let control = match kind {
            ActorKind::Capture => start_child::<Capture>(&shared, generation, exits, |a, child| {
                a.capture = Some(CaptureAddress {
                    enqueue: child.clone().recipient(),
                    record_fact: child.clone().recipient(),
                    poll: child.clone().recipient(),
                    backfill: child.clone().recipient(),
                })
            }),
            ActorKind::Queue => start_child::<Queue>(&shared, generation, exits, |a, child| {
                a.queue = Some(child.clone().recipient())
            }),
            ActorKind::Submitter => {
                let control = start_child::<Submitter>(&shared, generation, exits, |a, child| {
                    a.submitter = Some(SubmitterAddress {
                        work_hint: child.clone().recipient(),
                        wake: child.clone().recipient(),
                        set_paused: child.clone().recipient(),
                    })
                });
                crate::submitter::wake_if_work_stored(&shared);
                control
            }
            ActorKind::Inbound => start_child::<Inbound>(&shared, generation, exits, |a, child| {
                a.inbound = Some(InboundAddress {
                    deliver: child.clone().recipient(),
                    register_webhook: child.clone().recipient(),
                })
            }),
            ActorKind::Reconciler => {
                start_child::<Reconciler>(&shared, generation, exits, |a, child| {
                    a.reconciler = Some(child.clone().recipient());
                    a.reconciliations = Some(child.clone().recipient());
                })
            }
        };
        let slot = &mut self.slots[kind.index()];
        slot.live = Some((control, generation));
        slot.started_at_ms = shared.clock.now_ms();
    }

    /// Schedules the next generation of `kind` after its backoff.
    fn schedule_restart(
        &mut self,
        kind: ActorKind,
        reason: String,
        after_stall: bool,
        ctx: &mut Context<Self>,
    ) {
        let settings = self.shared.settings();
        let now_ms = self.shared.clock.now_ms();
        let slot = &mut self.slots[kind.index()];
        // A child that lived as long as the longest backoff had recovered: start over.
        if now_ms.saturating_sub(slot.started_at_ms) >= settings.restart_backoff_max_ms {
            slot.next_backoff_ms = settings.restart_backoff_initial_ms;
        }
        let backoff_ms = slot
            .next_backoff_ms
            .clamp(1, settings.restart_backoff_max_ms.max(1));
        slot.next_backoff_ms = backoff_ms
            .saturating_mul(2)
            .min(settings.restart_backoff_max_ms);
        self.shared
            .cell(kind)
            .record_restart(reason.clone(), backoff_ms, after_stall);
        self.observed.restarts_total += 1;
        self.observed.stall_replacements_total += u64::from(after_stall);
        self.publish();
        metrics::counter!(crate::metrics::ACTOR_RESTARTS_TOTAL, crate::metrics::LABEL_ACTOR => kind.name()).increment(1);
        tracing::warn!(
            tenant_id = %self.shared.tenant_id,
            actor = kind.name(),
            reason = %reason,
            backoff_ms,
            restarts = self.shared.cell(kind).restarts(),
            "child will be re-created"
        );
        ctx.run_later(Duration::from_millis(backoff_ms), move |supervisor, ctx| {
            if !supervisor.stopping {
                supervisor.spawn_child(kind, ctx);
            }
        });
    }

    fn schedule_progress_check(&mut self, ctx: &mut Context<Self>) {
        let interval = Duration::from_millis((self.shared.settings().heartbeat_ms / 2).max(1));
        let due_at = Instant::now() + interval;
        ctx.run_later(interval, move |supervisor, ctx| {
            let late_by = Instant::now().saturating_duration_since(due_at);
            if late_by > interval {
                // The arbiter thread itself was blocked (a handler blocking, a long pause):
                // the children could not tick either. Give them one round to catch up
                // rather than replacing every child of the thread at once.
                supervisor.observed.grace_rounds_after_blocked_arbiter += 1;
                supervisor.publish();
                tracing::warn!(
                    tenant_id = %supervisor.shared.tenant_id,
                    late_by_ms = late_by.as_millis() as u64,
                    "progress check ran late; arbiter was blocked; skipping one round"
                );
            } else {
                supervisor.check_progress(ctx);
            }
            supervisor.schedule_progress_check(ctx);
        });
    }

    /// Replaces every running child whose latest progress is older than one heartbeat.
    fn check_progress(&mut self, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        let heartbeat_ms = self.shared.settings().heartbeat_ms;
        let now_ms = self.shared.clock.now_ms();
        for kind in ActorKind::ALL {
            let cell = self.shared.cell(kind);
            let is_running =
                self.slots[kind.index()].live.is_some() && cell.state() == ActorState::Running;
            let silent_ms = now_ms.saturating_sub(cell.progress_ms());
            if is_running && silent_ms > heartbeat_ms {
                let reason =
                    format!("no progress for {silent_ms} ms (heartbeat {heartbeat_ms} ms)");
                self.replace_stalled_child(kind, reason, ctx);
            }
        }
        // One tick per progress check (atomics only; the observed state has not changed).
        self.shared.supervisor_cell.record_tick(now_ms);
    }

    fn replace_stalled_child(&mut self, kind: ActorKind, reason: String, ctx: &mut Context<Self>) {
        let cell = Arc::clone(self.shared.cell(kind));
        let slot = &mut self.slots[kind.index()];
        let Some((control, _generation)) = slot.live.take() else {
            return;
        };
        // The old generation stops being current first: if it ever wakes, it refuses to act.
        cell.set_generation(cell.generation() + 1);
        slot.generation_advanced = true;
        self.shared.addresses_lock().clear(kind);
        // do_send: a control message must get through even to a full mailbox.
        control.do_send(ChildControl {
            command: ChildCommand::Stop,
            guard: cell.mailbox.guard(),
        });
        self.schedule_restart(kind, reason, true, ctx);
    }

    /// Call after changing `observed` (it serialises).
    fn publish(&mut self) {
        let observed = serde_json::to_value(&self.observed).unwrap_or(serde_json::Value::Null);
        self.shared.supervisor_cell.publish_observed(observed);
    }

    fn all_children_gone(&self) -> bool {
        self.slots.iter().all(|slot| slot.live.is_none())
    }
}

/// Starts generation `generation` of a child and records, in the hub, the recipients of the
/// messages it accepts (`record`: the supervisor is the one place that knows actor types).
fn start_child<B: ChildBehavior>(
    shared: &Arc<TenantShared>,
    generation: u64,
    exits: Recipient<ChildStopped>,
    record: fn(&mut ChildAddresses, &Addr<Child<B>>),
) -> Recipient<ChildControl> {
    let address = Child::<B>::start_generation(Arc::clone(shared), generation, exits);
    record(&mut shared.addresses_lock(), &address);
    address.recipient()
}

impl Actor for TenantSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.observed.arbiter_thread = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_string();
        self.shared
            .supervisor_cell
            .mark_started(self.shared.clock.now_ms());
        for kind in ActorKind::ALL {
            self.spawn_child(kind, ctx);
        }
        self.publish();
        self.schedule_progress_check(ctx);
    }

    /// Also runs if the supervisor itself panicked: then its children are told to stop (a
    /// tenant without a supervisor must not keep running unsupervised). Must not panic.
    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        for slot in &mut self.slots {
            let cell = self.shared.cell(slot.kind);
            if let Some((control, _generation)) = slot.live.take() {
                control.do_send(ChildControl {
                    command: ChildCommand::Stop,
                    guard: cell.mailbox.guard(),
                });
            }
            cell.set_state(ActorState::Stopped);
        }
        *self.shared.addresses_lock() = ChildAddresses::default();
        // A stopped (e.g. deleted) tenant must not keep reporting its last lane depths: the
        // exporter cannot drop a series, so zero it.
        self.shared.gauges.zero();
        self.shared.supervisor_cell.set_state(ActorState::Stopped);
        for waiter in self.stop_waiters.drain(..) {
            let _ = waiter.send(());
        }
        tracing::info!(tenant_id = %self.shared.tenant_id, "tenant supervisor stopped");
    }
}

impl Handler<ChildStopped> for TenantSupervisor {
    type Result = ();

    fn handle(&mut self, mut message: ChildStopped, ctx: &mut Context<Self>) {
        message.guard.mark_handling();
        let kind = message.kind;
        let slot = &mut self.slots[kind.index()];
        // Reports from a replaced generation are expected and change nothing.
        if slot.live.as_ref().map(|(_, generation)| *generation) != Some(message.generation) {
            return;
        }
        slot.live = None;
        self.shared.addresses_lock().clear(kind);
        if self.stopping {
            self.shared.cell(kind).set_state(ActorState::Stopped);
            if self.all_children_gone() {
                ctx.stop();
            }
            return;
        }
        let reason = match message.exit {
            ChildExit::Panicked => "panicked in a handler".to_string(),
            ChildExit::Failed(error) => error,
            ChildExit::Requested => "stopped without being asked to".to_string(),
        };
        self.schedule_restart(kind, reason, false, ctx);
    }
}

impl Handler<KillChild> for TenantSupervisor {
    type Result = ();

    fn handle(&mut self, mut message: KillChild, _ctx: &mut Context<Self>) {
        message.guard.mark_handling();
        let cell = self.shared.cell(message.kind);
        if let Some((control, _generation)) = &self.slots[message.kind.index()].live {
            control.do_send(ChildControl {
                command: ChildCommand::Kill(message.mode),
                guard: cell.mailbox.guard(),
            });
        }
    }
}

impl Handler<SettingsChanged> for TenantSupervisor {
    type Result = ();

    fn handle(&mut self, mut message: SettingsChanged, _ctx: &mut Context<Self>) {
        message.guard.mark_handling();
        // New backoff bounds apply from the next death; ticks pick up a new heartbeat as
        // they re-schedule; a new mailbox capacity applies to the next generation.
        let initial_backoff_ms = self.shared.settings().restart_backoff_initial_ms;
        for slot in &mut self.slots {
            slot.next_backoff_ms = initial_backoff_ms;
        }
    }
}

impl Handler<StopTenant> for TenantSupervisor {
    type Result = ();

    fn handle(&mut self, mut message: StopTenant, ctx: &mut Context<Self>) {
        message.guard.mark_handling();
        self.stop_waiters.push(message.done);
        if self.stopping {
            return;
        }
        self.stopping = true;
        self.shared.supervisor_cell.set_state(ActorState::Stopping);
        for slot in &self.slots {
            let cell = self.shared.cell(slot.kind);
            if let Some((control, _generation)) = &slot.live {
                cell.set_state(ActorState::Stopping);
                control.do_send(ChildControl {
                    command: ChildCommand::Stop,
                    guard: cell.mailbox.guard(),
                });
            }
            // Wakes a stalled child so it can take its Stop; nothing restarts from here on.
            cell.set_generation(cell.generation() + 1);
        }
        if self.all_children_gone() {
            ctx.stop();
            return;
        }
        ctx.run_later(Duration::from_millis(STOP_TIMEOUT_MS), |supervisor, ctx| {
            let still_running: Vec<&str> = supervisor
                .slots
                .iter()
                .filter(|slot| slot.live.is_some())
                .map(|slot| slot.kind.name())
                .collect();
            tracing::warn!(
                tenant_id = %supervisor.shared.tenant_id,
                children = ?still_running,
                "children did not stop in time; stopping the supervisor anyway"
            );
            ctx.stop();
        });
    }
}
