//! Observable state, shared outside the actors (Quickwit's habit).
//!
//! Status must answer even when a child is stuck, so nobody messages a child to ask how it
//! is: each actor has an [`ActorCell`] — atomics plus a snapshot of its serialisable state —
//! which the actor and its supervisor update and [`crate::runtime::TenantHandle::status`]
//! reads. The cell also carries the child's current generation, which a replaced child
//! checks before acting.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use tokio::sync::watch;

use crate::mailbox::MailboxCounter;

/// The five children of a tenant supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    Capture,
    Queue,
    Submitter,
    Inbound,
    Reconciler,
}

impl ActorKind {
    pub const ALL: [ActorKind; 5] = [
        ActorKind::Capture,
        ActorKind::Queue,
        ActorKind::Submitter,
        ActorKind::Inbound,
        ActorKind::Reconciler,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ActorKind::Capture => "capture",
            ActorKind::Queue => "queue",
            ActorKind::Submitter => "submitter",
            ActorKind::Inbound => "inbound",
            ActorKind::Reconciler => "reconciler",
        }
    }

    /// The kind named `name` (as [`ActorKind::name`] spells it).
    pub fn parse(name: &str) -> Option<ActorKind> {
        ActorKind::ALL.into_iter().find(|kind| kind.name() == name)
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Label of the supervisor in metrics and in the status map.
pub const SUPERVISOR_NAME: &str = "supervisor";

/// Life stage of one actor slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ActorState {
    /// Created, `started()` not run yet.
    Starting = 0,
    Running = 1,
    /// Dead or replaced; the next generation starts after the backoff.
    Restarting = 2,
    Stopping = 3,
    Stopped = 4,
}

impl ActorState {
    pub fn name(self) -> &'static str {
        match self {
            ActorState::Starting => "starting",
            ActorState::Running => "running",
            ActorState::Restarting => "restarting",
            ActorState::Stopping => "stopping",
            ActorState::Stopped => "stopped",
        }
    }
    fn from_u8(value: u8) -> ActorState {
        match value {
            0 => ActorState::Starting,
            1 => ActorState::Running,
            2 => ActorState::Restarting,
            3 => ActorState::Stopping,
            _ => ActorState::Stopped,
        }
    }
}

/// One actor's status as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActorStatus {
    pub state: &'static str,
    pub mailbox_depth: u64,
    /// Re-creations after a death or a stall.
    pub restarts: u64,
    /// Of `restarts`, those caused by no progress for longer than a heartbeat.
    pub stall_replacements: u64,
    pub last_error: Option<String>,
    /// The generation allowed to act now (bumped on every re-creation).
    pub generation: u64,
    /// Backoff applied before the latest re-creation.
    pub last_backoff_ms: u64,
    /// Age of the latest progress mark (`None` before the first start).
    pub progress_age_ms: Option<u64>,
    /// Acts refused by a replaced generation that woke up.
    pub stale_refusals: u64,
    pub observed: serde_json::Value,
}

#[derive(Default)]
struct Snapshot {
    last_error: Option<String>,
    observed: serde_json::Value,
}

/// Shared, lock-light record of one actor slot (all generations of one child).
pub struct ActorCell {
    pub name: &'static str,
    pub mailbox: Arc<MailboxCounter>,
    /// The generation allowed to act; replaced children watch it to learn they are stale.
    generation: watch::Sender<u64>,
    state: AtomicU8,
    started_once: AtomicBool,
    restarts: AtomicU64,
    stall_replacements: AtomicU64,
    stale_refusals: AtomicU64,
    last_backoff_ms: AtomicU64,
    /// 0 = never.
    progress_ms: AtomicU64,
    /// Ticks of the current generation and the latest one's time: atomics, so a tick costs
    /// no serialisation (they join `observed` when status is read).
    ticks: AtomicU64,
    last_tick_ms: AtomicU64,
    snapshot: Mutex<Snapshot>,
}

impl ActorCell {
    pub fn new(tenant_id: &str, name: &'static str) -> Arc<ActorCell> {
        Arc::new(ActorCell {
            name,
            mailbox: MailboxCounter::new(tenant_id, name),
            generation: watch::Sender::new(0),
            state: AtomicU8::new(ActorState::Starting as u8),
            started_once: AtomicBool::new(false),
            restarts: AtomicU64::new(0),
            stall_replacements: AtomicU64::new(0),
            stale_refusals: AtomicU64::new(0),
            last_backoff_ms: AtomicU64::new(0),
            progress_ms: AtomicU64::new(0),
            ticks: AtomicU64::new(0),
            last_tick_ms: AtomicU64::new(0),
            snapshot: Mutex::new(Snapshot::default()),
        })
    }

    // Never panics on a poisoned lock: `stopped()` may run during unwinding, where a second
    // panic would abort the process.
    fn snapshot(&self) -> MutexGuard<'_, Snapshot> {
        self.snapshot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn generation(&self) -> u64 {
        *self.generation.borrow()
    }
    /// Makes `generation` the only one allowed to act; older ones wake up and stop.
    pub fn set_generation(&self, generation: u64) {
        self.generation.send_replace(generation);
    }
    pub fn watch_generation(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    pub fn state(&self) -> ActorState {
        ActorState::from_u8(self.state.load(Ordering::Acquire))
    }
    pub fn set_state(&self, state: ActorState) {
        self.state.store(state as u8, Ordering::Release);
    }
    pub fn mark_started(&self, now_ms: u64) {
        self.progress_ms.store(now_ms, Ordering::Release);
        self.ticks.store(0, Ordering::Release);
        self.last_tick_ms.store(0, Ordering::Release);
        self.set_state(ActorState::Running);
        self.started_once.store(true, Ordering::Release);
    }
    pub fn has_started_once(&self) -> bool {
        self.started_once.load(Ordering::Acquire)
    }
    pub fn progress_ms(&self) -> u64 {
        self.progress_ms.load(Ordering::Acquire)
    }
    /// Progress without a tick (a message handled).
    pub fn mark_progress(&self, now_ms: u64) {
        self.progress_ms.store(now_ms, Ordering::Release);
    }
    pub fn record_tick(&self, now_ms: u64) {
        self.ticks.fetch_add(1, Ordering::AcqRel);
        self.last_tick_ms.store(now_ms, Ordering::Release);
        self.progress_ms.store(now_ms, Ordering::Release);
    }
    /// Replaces the observed-state snapshot (call only when it changed: it serialises).
    pub fn publish_observed(&self, observed: serde_json::Value) {
        self.snapshot().observed = observed;
    }
    pub fn record_restart(&self, reason: String, backoff_ms: u64, after_stall: bool) {
        self.restarts.fetch_add(1, Ordering::AcqRel);
        if after_stall {
            self.stall_replacements.fetch_add(1, Ordering::AcqRel);
        }
        self.last_backoff_ms.store(backoff_ms, Ordering::Release);
        self.snapshot().last_error = Some(reason);
        self.set_state(ActorState::Restarting);
    }
    pub fn record_stale_refusal(&self) {
        self.stale_refusals.fetch_add(1, Ordering::AcqRel);
    }
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Acquire)
    }

    pub fn status(&self, now_ms: u64) -> ActorStatus {
        let progress_ms = self.progress_ms();
        let snapshot = self.snapshot();
        let mut observed = snapshot.observed.clone();
        if let serde_json::Value::Object(fields) = &mut observed {
            fields.insert("ticks".into(), self.ticks.load(Ordering::Acquire).into());
            fields.insert(
                "last_tick_ms".into(),
                self.last_tick_ms.load(Ordering::Acquire).into(),
            );
        }
        ActorStatus {
            state: self.state().name(),
            mailbox_depth: self.mailbox.depth(),
            restarts: self.restarts(),
            stall_replacements: self.stall_replacements.load(Ordering::Acquire),
            last_error: snapshot.last_error.clone(),
            generation: self.generation(),
            last_backoff_ms: self.last_backoff_ms.load(Ordering::Acquire),
            progress_age_ms: (progress_ms != 0).then(|| now_ms.saturating_sub(progress_ms)),
            stale_refusals: self.stale_refusals.load(Ordering::Acquire),
            observed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::KillMode;

    #[test]
    fn kinds_and_kill_modes_parse_their_own_names_only() {
        // Goal: the names the admin API accepts round-trip; anything else is refused.
        for kind in ActorKind::ALL {
            assert_eq!(ActorKind::parse(kind.name()), Some(kind));
        }
        assert_eq!(ActorKind::parse("supervisor"), None);
        assert_eq!(ActorKind::parse("Capture"), None);
        assert_eq!(KillMode::parse("stall"), Some(KillMode::Stall));
        assert_eq!(KillMode::parse("panic"), Some(KillMode::Panic));
        assert_eq!(KillMode::parse("error"), Some(KillMode::Error));
        assert_eq!(KillMode::parse("abort"), None);
    }
}
