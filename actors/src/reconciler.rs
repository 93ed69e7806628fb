//! Reconciler: will confirm submissions in bulk, flag stuck and duplicate records and cross-match both sides.
//!
//! For now it only ticks and records progress, so supervision and observation are real.

use serde::Serialize;

use crate::child::{Child, ChildBehavior};
use crate::observe::{ActorKind, TenantShared};

pub type ReconcilerActor = Child<Reconciler>;

#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize)]
pub struct Reconciler {}

impl ChildBehavior for Reconciler {
    const KIND: ActorKind = ActorKind::Reconciler;
    type Observed = Reconciler;

    fn rebuild(_shared: &TenantShared) -> Reconciler {
        Reconciler::default()
    }
    fn on_tick(&mut self, _shared: &TenantShared) -> Result<(), String> {
        Ok(())
    }
    fn observed(&self) -> Reconciler {
        *self
    }
}
