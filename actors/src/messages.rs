//! The typed messages of the tenant actor tree.
//!
//! Every message carries a [`MailboxGuard`] made when it is sent (depth and wait metrics).
//! Messages between children are hints: the store is the truth (ARCHITECTURE.md, "Mailboxes are not storage").

use actix::Message;
use tokio::sync::oneshot;

use crate::gift_match::SourceNames;
use crate::mailbox::MailboxGuard;
use crate::observe::ActorKind;
use crate::store::{EnqueueOutcome, NewEntry, StoreError};
use crate::virtuous_event::VirtuousDelivery;

/// Why an enqueue was not answered with outcomes.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    /// Capture's mailbox holds `mailbox_capacity` messages: back-pressure (HTTP 503).
    #[error("the tenant's capture mailbox is full ({capacity} messages); retry later")]
    MailboxFull { capacity: usize },
    /// Capture is restarting, or the tenant is stopping (HTTP 503).
    #[error("the tenant's capture actor is not available (restarting or stopped); retry later")]
    Unavailable,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The refusals every door into a child shares (Capture's, Inbound's): its mailbox is full,
/// or the child is not there (restarting, or the tenant stopping).
pub trait DoorError {
    fn mailbox_full(capacity: usize) -> Self;
    fn unavailable() -> Self;
}

impl DoorError for EnqueueError {
    fn mailbox_full(capacity: usize) -> Self {
        EnqueueError::MailboxFull { capacity }
    }
    fn unavailable() -> Self {
        EnqueueError::Unavailable
    }
}

/// To Capture: write the entries, answer once they are durable.
#[derive(Message)]
#[rtype(result = "Result<Vec<EnqueueOutcome>, EnqueueError>")]
pub struct Enqueue {
    pub entries: Vec<NewEntry>,
    pub guard: MailboxGuard,
}

/// To Queue / Submitter: new entries may be ready (a hint; they read the store).
#[derive(Message)]
#[rtype(result = "()")]
pub struct WorkHint {
    pub entries_added: u64,
    pub guard: MailboxGuard,
}

/// To Submitter: the tenant was paused or resumed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetPaused {
    pub paused: bool,
    pub guard: MailboxGuard,
}

/// Wakes the submitter (sent from its tick; the store says whether there is work).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Wake {
    pub guard: MailboxGuard,
}

/// To the inbound handler: register the webhook now if it is due.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RegisterWebhook {
    pub guard: MailboxGuard,
}

/// To the Reconciler: run a pass now (or right after the running one).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReconcileNow {
    pub guard: MailboxGuard,
}

/// To the Reconciler: a money reconciliation job may be waiting (a hint: it reads the
/// store).
#[derive(Message)]
#[rtype(result = "()")]
pub struct RunReconciliations {
    pub guard: MailboxGuard,
}

/// How a test kills a child (test-only hook, exposed over HTTP only behind a test flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KillMode {
    /// The child panics inside a handler.
    Panic,
    /// The child stops with an error.
    Error,
    /// The child stops making progress without blocking its arbiter.
    Stall,
}

impl KillMode {
    /// `panic`, `error` or `stall`.
    pub fn parse(name: &str) -> Option<KillMode> {
        match name {
            "panic" => Some(KillMode::Panic),
            "error" => Some(KillMode::Error),
            "stall" => Some(KillMode::Stall),
            _ => None,
        }
    }
}

/// From the supervisor to one child.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ChildControl {
    pub command: ChildCommand,
    pub guard: MailboxGuard,
}

#[derive(Debug, Clone, Copy)]
pub enum ChildCommand {
    /// Stop now (tenant stopping, or replacement).
    Stop,
    Kill(KillMode),
}

/// Why a child stopped, as it reports from `stopped()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildExit {
    /// It panicked inside a handler (seen as `std::thread::panicking()` in `stopped()`).
    Panicked,
    /// It stopped itself on an error.
    Failed(String),
    /// It was told to stop, or it found it had been replaced.
    Requested,
}

/// From a child's `stopped()` to its supervisor.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ChildStopped {
    pub kind: ActorKind,
    pub generation: u64,
    pub exit: ChildExit,
    pub guard: MailboxGuard,
}

/// To the supervisor: the tenant's settings changed (already stored in the shared state).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SettingsChanged {
    pub guard: MailboxGuard,
}

/// To the supervisor: forward a kill to the current child of `kind` (test hook).
#[derive(Message)]
#[rtype(result = "()")]
pub struct KillChild {
    pub kind: ActorKind,
    pub mode: KillMode,
    pub guard: MailboxGuard,
}

/// To the supervisor: stop the children, then yourself; `done` fires once stopped.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopTenant {
    pub done: oneshot::Sender<()>,
    pub guard: MailboxGuard,
}

/// To Inbound: handle one Virtuous delivery; answer after it is durable.
#[derive(Message)]
#[rtype(result = "Result<DeliveryReport, DeliveryError>")]
pub struct DeliverVirtuous {
    pub delivery: VirtuousDelivery,
    /// Which ingress sources each `transactionSource` names (from the tenant's settings).
    pub names: SourceNames,
    pub guard: MailboxGuard,
}

/// What a delivery did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    /// Events (models) in the delivery.
    pub models: usize,
    pub confirmed: u64,
    pub duplicates: u64,
    /// Events kept because they could not be understood.
    pub unparsed: u64,
    /// Pull: what the change log made of the delivery's changes.
    pub pull: crate::pull::Offered,
}

/// Why a delivery was not answered with a report.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Inbound's mailbox is full: back-pressure (HTTP 503).
    #[error("the tenant's inbound mailbox is full ({capacity} messages); retry later")]
    MailboxFull { capacity: usize },
    /// Inbound is restarting, or the tenant is stopping (HTTP 503).
    #[error("the tenant's inbound actor is not available (restarting or stopped); retry later")]
    Unavailable,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl DoorError for DeliveryError {
    fn mailbox_full(capacity: usize) -> Self {
        DeliveryError::MailboxFull { capacity }
    }
    fn unavailable() -> Self {
        DeliveryError::Unavailable
    }
}
