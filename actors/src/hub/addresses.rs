//! Addresses of a tenant's current children, as recipients of their messages: the hub
//! knows what each child accepts, not which actor type it is (the supervisor does).

use actix::Recipient;

use crate::messages::DeliverVirtuous;
use crate::messages::{
    Enqueue, ReconcileNow, RegisterWebhook, RunReconciliations, SetPaused, Wake, WorkHint,
};
use crate::observe::ActorKind;
use crate::source_fact::RecordFact;

/// Recipients of the current children (`None` while one restarts).
#[derive(Default, Clone)]
pub struct ChildAddresses {
    pub capture: Option<CaptureAddress>,
    pub queue: Option<Recipient<WorkHint>>,
    pub submitter: Option<SubmitterAddress>,
    pub inbound: Option<InboundAddress>,
    pub reconciler: Option<Recipient<ReconcileNow>>,
    /// The reconciler again: money reconciliation jobs wait for it.
    pub reconciliations: Option<Recipient<RunReconciliations>>,
}

/// Capture, the door for source facts: plain enqueues and typed facts (holds, links, marks,
/// alerts).
#[derive(Clone)]
pub struct CaptureAddress {
    pub enqueue: Recipient<Enqueue>,
    pub record_fact: Recipient<RecordFact>,
    pub poll: Recipient<crate::poll::PollCommand>,
    pub backfill: Recipient<crate::backfill::BackfillCommand>,
}

/// Inbound, the door for Virtuous facts: webhook deliveries and the webhook registration.
#[derive(Clone)]
pub struct InboundAddress {
    pub deliver: Recipient<DeliverVirtuous>,
    pub register_webhook: Recipient<RegisterWebhook>,
}

/// The submitter accepts three messages (one actor behind all three recipients).
#[derive(Clone)]
pub struct SubmitterAddress {
    pub work_hint: Recipient<WorkHint>,
    pub wake: Recipient<Wake>,
    pub set_paused: Recipient<SetPaused>,
}

impl ChildAddresses {
    pub(crate) fn clear(&mut self, kind: ActorKind) {
        match kind {
            ActorKind::Capture => self.capture = None,
            ActorKind::Queue => self.queue = None,
            ActorKind::Submitter => self.submitter = None,
            ActorKind::Inbound => self.inbound = None,
            ActorKind::Reconciler => {
                self.reconciler = None;
                self.reconciliations = None;
            }
        }
    }
}
