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

pub mod commands;

pub type CaptureActor = Child<Capture>;

/// Capture's state; all of it is rebuilt from the store or counted since this generation.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize)]
pub struct Capture {
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
}

impl ChildBehavior for Capture {
    const KIND: ActorKind = ActorKind::Capture;
    type Observed = Capture;

    fn rebuild(shared: &TenantShared) -> Capture {
        Capture {
            counts_at_start: shared.tenant_store().counts(),
            ..Capture::default()
        }
    }
    fn on_tick(&mut self, _shared: &TenantShared) -> Result<(), String> {
        Ok(())
    }
    fn observed(&self) -> Capture {
        *self
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
        self.behavior.enqueue_requests += 1;
        let outcomes = match self.core.shared.tenant_store().enqueue(entries) {
            Ok(outcomes) => outcomes,
            Err(error) => {
                self.behavior.enqueue_errors += 1;
                self.publish();
                return Box::pin(fut::ready(Err(EnqueueError::Store(error))));
            }
        };
        self.count_enqueued(&outcomes);
        let queued = EnqueueOutcome::queued_in(&outcomes) as u64;
        self.publish();
        // The guard leaves with this function: the message is handled, its flush is shared.
        drop(guard);
        let store = self.core.shared.store().clone();
        let durable = async move { store.durable().await };
        Box::pin(durable.into_actor(self).map(move |flushed, capture, _ctx| {
            if let Err(error) = flushed {
                capture.behavior.enqueue_errors += 1;
                return Err(EnqueueError::Store(error));
            }
            capture.behavior.batches_made_durable += 1;
            if queued > 0 {
                capture.behavior.hints_dropped += capture.core.shared.hint_new_work(queued);
            }
            Ok(outcomes)
        }))
    }
}

impl CaptureActor {
    /// Hints Queue and Submitter that `entries` became ready (counted when dropped).
    fn behavior_hint(&mut self, entries: u64) {
        self.behavior.hints_dropped += self.core.shared.hint_new_work(entries);
    }

    /// Counts enqueue outcomes that came through a source fact (a hold, a dispute) like
    /// plain enqueues, so the observed counters cover every entry Capture wrote.
    fn count_enqueued(&mut self, outcomes: &[EnqueueOutcome]) {
        let queued = EnqueueOutcome::queued_in(outcomes) as u64;
        self.behavior.entries_queued += queued;
        self.behavior.duplicates += outcomes.len() as u64 - queued;
    }
}
