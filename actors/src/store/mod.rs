//! Durable state: one sled `Db` per process (ARCHITECTURE.md).
//!
//! This file is the store's index and its contract types (errors, lanes, kinds, entries,
//! the registry record and the handles). One source fact bound for Virtuous is one
//! [`EntryFact`] (in [`types`]: its field order is on disk) from the source's mapping through
//! [`NewEntry`] to the stored [`QueueEntry`]. Every method lives in an `impl` block of the file
//! named for its concern; nothing here forwards.
//!
//! # Layout
//! - [`codec`]: the versioned envelope `[schema version][bincode 1.3.3]` of every value.
//! - [`keys`]: big-endian, section-prefixed keys inside a tenant's key space.
//! - [`layout`]: tree per tenant, or tenant-prefixed keys in shared trees (ARCHITECTURE.md).
//! - [`group_commit`]: the store's writer thread: applies the enqueue calls submitted since
//!   its last cycle as one atomic sled write, then one flush answers many durability waiters.
//! - `open`: [`Store::open`], the sled `Db`, group commit's flush and the tenant handles.
//! - `tenant`, `tenant_data`: [`TenantStore`], enqueue and the typed accessors.
//! - [`queue_ops`], [`confirm_ops`], [`hold_ops`], [`admin_ops`]: the tenant's queue,
//!   confirmation, held-entry and admin operations.
//! - `registry`, `secrets`: [`TenantRegistry`] and [`MasterKey`].
//! - [`types`]: the stored value types.
//! - `alert_ops`, [`alert_outbox`], `process_alerts`: an alert's lifecycle, the notices it
//!   queues for the sinks in the same write, and the process's own alerts.

pub mod admin_ops;
mod alert_ops;
pub mod alert_outbox;
pub mod backfill_ops;
pub mod codec;
mod completion;
pub mod confirm_ops;
mod durability_marker;
mod gate;
pub mod group_commit;
pub mod hold_ops;
pub mod keys;
pub mod layout;
pub mod money_ops;
mod open;
pub mod poll_ops;
mod process_alerts;
pub mod pull_ops;
pub mod queue_ops;
pub mod record_index;
pub(crate) mod registry;
mod secrets;
mod snapshot;
pub mod snapshot_format;
mod tenant;
mod tenant_data;
pub mod tenant_move;
pub mod two_way_ops;
pub mod types;
pub mod unparsed_ops;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use alert_outbox::{
    AlertNotice, AlertOutbox, NoticeEvent, NoticeOwner, NoticePolicy, QueuedNotice,
};
pub use group_commit::FlushStats;
pub use layout::{Layout, DEFAULT_LAYOUT};
pub use queue_ops::{
    Completion, CompletionReport, Lease, LeaseBatch, LeaseRequest, LeaseTable, LeasedEntry,
    LEASE_SCAN_MAX,
};
pub use secrets::MASTER_KEY_FILE;
pub use snapshot::{restore_backup, BackupStats, RestoreStats};
pub use types::{
    CallMark, Checkpoint, DeadLetter, DedupMark, EntryFact, QueueEntry, RecordRef, RecordState,
    SeenKey, SyncState, Transition, Unconfirmed,
};

/// Errors of the store layer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// sled reported corruption when opening: refuse to start, never repair by dropping data.
    #[error("the store at {path} is corrupt ({detail}); Steward refuses to start. Keep a copy of the data dir and restore from a backup")]
    Corrupt { path: String, detail: String },
    #[error("store I/O error: {0}")]
    Io(String),
    #[error("stored value could not be decoded: {0}")]
    Codec(String),
    #[error("a sealed secret could not be opened (wrong master key or tampered data): {0}")]
    Seal(String),
    #[error("the store is closed")]
    Closed,
    /// The master key (env value or key file) is missing, malformed or unsafe.
    #[error("master key: {0}")]
    MasterKey(String),
}

/// Maps a sled error met after open (corruption found later is still reported as such).
pub(crate) fn io_error(err: sled::Error) -> StoreError {
    match err {
        sled::Error::Io(io) => StoreError::Io(io.to_string()),
        other => StoreError::Io(other.to_string()),
    }
}

/// Options for [`Store::open`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// sled page cache; `store.cache_capacity_bytes` (default 256 MiB).
    pub cache_capacity_bytes: u64,
    /// How alert changes queue notices for the sinks; `None` (no sink configured): none is
    /// queued.
    pub alert_notices: Option<NoticePolicy>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_capacity_bytes: 256 * 1024 * 1024,
            alert_notices: None,
        }
    }
}

/// Queue lanes, highest priority first (docs/operations.md). The discriminant is part of keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Lane {
    Live = 0,
    Retry = 1,
    Reconcile = 2,
    Backfill = 3,
}

impl Lane {
    pub const ALL: [Lane; 4] = [Lane::Live, Lane::Retry, Lane::Reconcile, Lane::Backfill];
    pub fn name(self) -> &'static str {
        match self {
            Lane::Live => "live",
            Lane::Retry => "retry",
            Lane::Reconcile => "reconcile",
            Lane::Backfill => "backfill",
        }
    }
}

/// What kind of Virtuous record an entry produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RecordKind {
    Gift,
    Contact,
    Refund,
}

/// A command to enqueue: one source fact bound for Virtuous, with the ids that find its
/// record and the time it arrived.
#[derive(Debug, Clone)]
pub struct NewEntry {
    /// What is stored in the lane (as [`QueueEntry::fact`]).
    pub fact: EntryFact,
    /// Other ids that find this record (event id, charge id…).
    pub aliases: Vec<String>,
    pub now_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnqueueOutcome {
    /// Written (not yet durable: await [`Store::durable`] before acknowledging).
    Queued { seq: u64 },
    /// The idempotency key was seen before; nothing was written.
    Duplicate,
    /// A partner change a two-way pair took (`on`): decided against the record's link
    /// (echo dropped, writes ordered, or a conflict opened), not queued for Virtuous.
    TwoWay,
}

impl EnqueueOutcome {
    /// How many of `outcomes` were written (the rest were duplicates).
    pub fn queued_in(outcomes: &[EnqueueOutcome]) -> usize {
        outcomes
            .iter()
            .filter(|outcome| matches!(outcome, EnqueueOutcome::Queued { .. }))
            .count()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaneStat {
    pub depth: u64,
    /// Enqueue time of the oldest entry in the lane, if any.
    pub oldest_enqueued_at_ms: Option<u64>,
}

/// Per-tenant counters (kept, never computed with `Tree::len`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub captured: u64,
    pub duplicates: u64,
    pub submitted: u64,
    pub confirmed: u64,
    pub dead: u64,
    pub needs_review: u64,
}

/// A stored per-tenant alert (docs/operations.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    pub code: String,
    pub message: String,
    pub first_at_ms: u64,
    pub last_at_ms: u64,
    pub count: u64,
}

/// An alert's lifecycle, stored under its own key ([`keys::section::ALERT_STATE`]) so that
/// the [`Alert`] bytes written before it stay as they are (docs/operations.md "Alerts").
/// No value stored = open and not acknowledged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertState {
    /// When its condition cleared; `None` while it is open. Raising it again reopens it.
    pub resolved_at_ms: Option<u64>,
    /// When an operator acknowledged it (`POST …/alerts/{code}/ack`); cleared on reopening.
    pub acked_at_ms: Option<u64>,
}

/// An alert with its lifecycle, as the status shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertView {
    pub alert: Alert,
    pub state: AlertState,
}

/// The registry's record of one tenant. Secrets are sealed; `config_json` has them removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRecord {
    pub id: String,
    /// The tenant document without secrets, as JSON text.
    pub config_json: String,
    /// (field path such as `/virtuous/api_key`, sealed bytes).
    pub sealed_secrets: Vec<(String, Vec<u8>)>,
    /// A [`TenantRunState`] name (kept as text: the stored bytes predate the enum; read it
    /// with [`TenantRecord::run_state`]).
    pub state: String,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
}

/// Whether a tenant submits: the one run state, kept in the registry (as its name) and,
/// while the tenant runs, in one atomic cell of its hub. The names are stored and shown by
/// the admin API: never rename them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TenantRunState {
    /// Submits.
    Running = 0,
    /// Paused by an operator: captures are accepted, nothing is sent.
    Paused = 1,
    /// Virtuous refused the credentials (401/403): paused, and it starts paused after a
    /// restart instead of spending a call to be refused again; a resume clears it.
    NeedsOperator = 2,
    /// Exported to another instance (`steward tenant export`): never runs here again; its
    /// webhooks are answered 503. Only a delete changes it.
    Moved = 3,
}

impl TenantRunState {
    pub const ALL: [TenantRunState; 4] = [
        TenantRunState::Running,
        TenantRunState::Paused,
        TenantRunState::NeedsOperator,
        TenantRunState::Moved,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TenantRunState::Running => "running",
            TenantRunState::Paused => "paused",
            TenantRunState::NeedsOperator => "needs_operator",
            TenantRunState::Moved => "moved",
        }
    }

    /// The state named `name` (as [`TenantRunState::name`] spells it).
    pub fn parse(name: &str) -> Option<TenantRunState> {
        TenantRunState::ALL
            .into_iter()
            .find(|state| state.name() == name)
    }

    /// Nothing is sent to Virtuous in this state.
    pub fn is_paused(self) -> bool {
        self != TenantRunState::Running
    }

    pub(crate) fn from_u8(value: u8) -> TenantRunState {
        match value {
            0 => TenantRunState::Running,
            1 => TenantRunState::Paused,
            2 => TenantRunState::NeedsOperator,
            _ => TenantRunState::Moved,
        }
    }
}

impl TenantRecord {
    /// The stored run state; a name this version does not know reads as paused (send
    /// nothing until an operator says so).
    pub fn run_state(&self) -> TenantRunState {
        TenantRunState::parse(&self.state).unwrap_or(TenantRunState::Paused)
    }
    pub fn set_run_state(&mut self, state: TenantRunState) {
        self.state = state.name().to_string();
    }
}

/// The process-wide store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<open::StoreInner>,
}

/// The tenant registry (its own tree). All writes must be followed by `Store::durable`.
#[derive(Clone)]
pub struct TenantRegistry {
    tree: gate::GatedTree,
}

/// One tenant's data: queue lanes, records, dead letters, checkpoints, budget ledger,
/// alerts and counters, under key prefixes of one tree. Cheap to clone.
#[derive(Clone)]
pub struct TenantStore {
    inner: Arc<tenant::TenantInner>,
}

/// The master key that seals tenant secrets (XChaCha20-Poly1305, associated data =
/// tenant id + field path).
#[derive(Clone)]
pub struct MasterKey {
    cipher: chacha20poly1305::XChaCha20Poly1305,
}

#[cfg(test)]
mod alert_outbox_tests;
#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod snapshot_tests;
#[cfg(test)]
mod tests;
