//! Addresses of a tenant's current children, as recipients of their messages: the hub
//! knows what each child accepts, not which actor type it is (the supervisor does).

use actix::Recipient;

use crate::messages::{Enqueue, ReconcileNow, RegisterWebhook, SetPaused, Wake, WorkHint};
use crate::observe::ActorKind;

/// Recipients of the current children (`None` while one restarts).
#[derive(Default, Clone)]
pub struct ChildAddresses {
    pub capture: Option<Recipient<Enqueue>>,
    pub queue: Option<Recipient<WorkHint>>,
    pub submitter: Option<SubmitterAddress>,
    pub inbound: Option<Recipient<RegisterWebhook>>,
    pub reconciler: Option<Recipient<ReconcileNow>>,
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
            ActorKind::Reconciler => self.reconciler = None,
        }
    }
}
