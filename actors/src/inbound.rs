//! InboundHandler: will detect Virtuous-side changes (webhooks, polling), confirm submissions and filter our own echoes.
//!
//! For now it only ticks and records progress, so supervision and observation are real.

use serde::Serialize;

use crate::child::{Child, ChildBehavior};
use crate::observe::{ActorKind, TenantShared};

pub type InboundActor = Child<Inbound>;

#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize)]
pub struct Inbound {}

impl ChildBehavior for Inbound {
    const KIND: ActorKind = ActorKind::Inbound;
    type Observed = Inbound;

    fn rebuild(_shared: &TenantShared) -> Inbound {
        Inbound::default()
    }
    fn on_tick(&mut self, _shared: &TenantShared) -> Result<(), String> {
        Ok(())
    }
    fn observed(&self) -> Inbound {
        *self
    }
}
