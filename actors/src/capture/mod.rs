//! Capture: writes captured commands to the store and answers once they are durable.
//!
//! The write happens inside the handler (a sled batch, no waiting); the group-commit flush
//! is awaited in a spawned actor future, so the actor keeps taking messages while earlier
//! batches wait for their flush — many callers share one flush (ARCHITECTURE.md, "Ack after durable").
//! After the flush it hints Queue and Submitter. Pollers join this actor later.
//!
//! Capture is the door for source facts: besides enqueues it takes typed, source-neutral
//! commands (alerts, event marks, held entries and their links: [`commands`]).

use actix::{fut, ActorFutureExt, Context, Handler, ResponseActFuture, WrapFuture};
use serde::Serialize;

use crate::child::{Child, ChildBehavior};
use crate::hub::TenantShared;
use crate::messages::{Enqueue, EnqueueError};
use crate::observe::ActorKind;
use crate::store::{Counts, EnqueueOutcome};

mod backfill;
mod backfill_listing;
pub mod commands;
mod polling;
mod two_way;

pub use backfill::FEED_WINDOW as BACKFILL_FEED_WINDOW;
pub use polling::PARITY_ALERT;

pub type CaptureActor = Child<Capture>;

/// Capture's state; all of it is rebuilt from the store or counted since this generation.
#[derive(Default)]
pub struct Capture {
    counters: CaptureCounters,
    /// The pollers this generation runs (`polling.rs`), rebuilt from the store.
    polls: polling::PollRuntime,
    /// Backfill jobs' reader and timers (`backfill.rs`); the jobs are in the store.
    backfills: backfill::BackfillRuntime,
}

/// What Capture shows (status `actors.capture.observed`): counted since this generation.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize)]
pub struct CaptureCounters {
    /// The store's counters when this generation started.
    counts_at_start: Counts,
    enqueue_requests: u64,
    entries_queued: u64,
    duplicates: u64,
    enqueue_errors: u64,
    /// Answered only after their flush.
    batches_made_durable: u64,
    /// Wake-up hints dropped because a sibling was restarting or its mailbox was full.
    hints_dropped: u64,
    /// Written batches whose flush is awaited: their callers are still waiting for an answer.
    flushes_awaited: u64,
    /// Poll runs in progress.
    polls_running: u64,
}

impl ChildBehavior for Capture {
    const KIND: ActorKind = ActorKind::Capture;
    type Observed = CaptureCounters;

    fn rebuild(shared: &TenantShared) -> Capture {
        Capture {
            counters: CaptureCounters {
                counts_at_start: shared.tenant_store().counts(),
                ..CaptureCounters::default()
            },
            polls: polling::PollRuntime::default(),
            backfills: backfill::BackfillRuntime::default(),
        }
    }
    fn started(child: &mut CaptureActor, ctx: &mut Context<CaptureActor>) {
        child.reload_pollers(ctx);
        child.backfill_wake(ctx);
    }
    /// The "pollers changed" message is a hint (a full mailbox or a restart drops it): a
    /// tick that finds other specs in the hub reloads them.
    fn after_tick(child: &mut CaptureActor, ctx: &mut Context<CaptureActor>) {
        if child.behavior.polls.stale(&child.core.shared.pollers()) {
            child.reload_pollers(ctx);
        }
        // Timers are the backfill's clock; a tick restarts one that was lost.
        if !child.behavior.backfills.busy() {
            child.backfill_wake(ctx);
        }
    }
    fn on_tick(&mut self, _shared: &TenantShared) -> Result<(), String> {
        Ok(())
    }
    fn observed(&self) -> CaptureCounters {
        let mut counters = self.counters;
        counters.polls_running = self.polls.running();
        counters
    }
    /// A write whose answer is pending was made: a stopping tenant answers it first. Were
    /// its future dropped, the caller would see "unavailable" (ingress: `503`, "not
    /// stored") for an entry that is stored and will be sent.
    fn busy(&self) -> bool {
        self.counters.flushes_awaited > 0
    }
}

impl Handler<Enqueue> for CaptureActor {
    type Result = ResponseActFuture<Self, Result<Vec<EnqueueOutcome>, EnqueueError>>;

    fn handle(&mut self, message: Enqueue, ctx: &mut Context<Self>) -> Self::Result {
        let Enqueue { entries, mut guard } = message;
        guard.mark_handling();
        if !self.may_act(ctx) {
            return Box::pin(fut::ready(Err(EnqueueError::Unavailable)));
        }
        self.behavior.counters.enqueue_requests += 1;
        let mut two_way_wake = false;
        // Hybrid sources keep parity: which path saw each fact (webhooks come this way);
        // `note_webhook_parity` keeps the entries of hybrid sources.
        let parity_facts: Vec<(String, String, String)> = if self.behavior.polls.has_hybrid() {
            entries
                .iter()
                .map(|entry| {
                    let fact = &entry.fact;
                    (
                        fact.source.clone(),
                        fact.idempotency_key.clone(),
                        fact.source_id.clone(),
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        // Partner changes of two-way pairs are decided first (`two_way`); the rest queue.
        let outcomes = match two_way::take(&self.core.shared, entries).and_then(|mut split| {
            let wake = split.wake;
            let rest = std::mem::take(&mut split.rest);
            let queued = self.core.shared.tenant_store().enqueue(rest)?;
            Ok((split.merge(queued), wake))
        }) {
            Ok((outcomes, wake)) => {
                two_way_wake |= wake;
                outcomes
            }
            Err(error) => {
                self.behavior.counters.enqueue_errors += 1;
                self.publish();
                return Box::pin(fut::ready(Err(EnqueueError::Store(error))));
            }
        };
        self.count_enqueued(&outcomes);
        if !parity_facts.is_empty() {
            self.note_webhook_parity(&parity_facts, &outcomes);
        }
        let queued = EnqueueOutcome::queued_in(&outcomes) as u64;
        self.publish();
        // The guard leaves with this function: the message is handled, its flush is shared.
        drop(guard);
        let store = self.core.shared.store().clone();
        let durable = async move { store.durable().await };
        self.behavior.counters.flushes_awaited += 1;
        Box::pin(durable.into_actor(self).map(move |flushed, capture, ctx| {
            capture.flush_answered(ctx);
            if let Err(error) = flushed {
                capture.behavior.counters.enqueue_errors += 1;
                return Err(EnqueueError::Store(error));
            }
            capture.behavior.counters.batches_made_durable += 1;
            if two_way_wake {
                capture.core.shared.two_way_wake.notify_waiters();
            }
            if queued > 0 {
                capture.behavior.counters.hints_dropped +=
                    capture.core.shared.hint_new_work(queued);
            }
            Ok(outcomes)
        }))
    }
}

impl CaptureActor {
    /// A write's flush resolved (its answer goes out in this poll, before the actor stops):
    /// a stop deferred while answers were pending happens after the last one.
    fn flush_answered(&mut self, ctx: &mut Context<Self>) {
        self.behavior.counters.flushes_awaited -= 1;
        if self.behavior.counters.flushes_awaited == 0 {
            self.finish_deferred_stop(ctx);
        }
    }

    /// Hints Queue and Submitter that `entries` became ready (counted when dropped).
    fn behavior_hint(&mut self, entries: u64) {
        self.behavior.counters.hints_dropped += self.core.shared.hint_new_work(entries);
    }

    /// Counts enqueue outcomes that came through a source fact (a hold, a dispute) like
    /// plain enqueues, so the observed counters cover every entry Capture wrote.
    fn count_enqueued(&mut self, outcomes: &[EnqueueOutcome]) {
        let queued = EnqueueOutcome::queued_in(outcomes) as u64;
        self.behavior.counters.entries_queued += queued;
        self.behavior.counters.duplicates += outcomes.len() as u64 - queued;
    }
}
