//! Queue: the tenant's durable lanes. It observes lane depths from the store on every tick
//! and on every work hint (the lane gauges).
//!
//! Leasing, completion and dead letters are store operations
//! ([`crate::store::queue_ops`]) the submitter calls directly: one atomic sled batch per
//! completion, no message round trip, and the leases live in `TenantShared::leases` so a
//! replaced submitter's completions are refused.

use std::collections::BTreeMap;

use actix::{Context, Handler};
use serde::Serialize;

use crate::child::{Child, ChildBehavior};
use crate::hub::TenantShared;
use crate::messages::WorkHint;
use crate::observe::ActorKind;
use crate::store::LaneStat;

pub type QueueActor = Child<Queue>;

#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct Queue {
    /// Lane name → depth and oldest entry, as last read from the store.
    lanes: BTreeMap<&'static str, LaneStat>,
    queued_total: u64,
    work_hints: u64,
}

impl Queue {
    fn refresh_from_store(&mut self, shared: &TenantShared) {
        let stats = shared.tenant_store().lane_stats();
        for ((_lane, stat), gauge) in stats.iter().zip(&shared.gauges.lane_depth) {
            gauge.set(stat.depth as f64);
        }
        self.lanes = stats
            .into_iter()
            .map(|(lane, stat)| (lane.name(), stat))
            .collect();
        self.queued_total = self.lanes.values().map(|stat| stat.depth).sum();
    }
}

impl ChildBehavior for Queue {
    const KIND: ActorKind = ActorKind::Queue;
    type Observed = Queue;

    fn rebuild(shared: &TenantShared) -> Queue {
        let mut queue = Queue::default();
        queue.refresh_from_store(shared);
        queue
    }
    fn on_tick(&mut self, shared: &TenantShared) -> Result<(), String> {
        self.refresh_from_store(shared);
        Ok(())
    }
    fn observed(&self) -> Queue {
        self.clone()
    }
}

impl Handler<WorkHint> for QueueActor {
    type Result = ();

    fn handle(&mut self, mut hint: WorkHint, ctx: &mut Context<Self>) {
        hint.guard.mark_handling();
        if !self.may_act(ctx) {
            return;
        }
        self.behavior.work_hints += 1;
        self.behavior.refresh_from_store(&self.core.shared);
        self.publish();
    }
}
