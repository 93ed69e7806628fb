//! Durable state: one sled `Db` per process (DESIGN.md §8).
//!
//! CONTRACT FILE: the signatures below are what the rest of Steward codes against. The
//! implementation lives in submodules and keeps these names and signatures.
//!
//! # Layout
//! - [`codec`]: the versioned envelope `[schema version][bincode 1.3.3]` of every value.
//! - [`keys`]: big-endian, section-prefixed keys inside a tenant's key space.
//! - [`layout`]: tree per tenant, or tenant-prefixed keys in shared trees (DESIGN.md §8).
//! - [`group_commit`]: the store's writer thread: applies the enqueue calls submitted since
//!   its last cycle as one atomic sled write, then one flush answers many durability waiters.
//! - `tenant`, `tenant_data`: [`TenantStore`], enqueue and the typed accessors.
//! - `registry`, `secrets`: [`TenantRegistry`] and [`MasterKey`].
//! - [`types`]: the stored value types.

pub mod admin_ops;
pub mod codec;
pub mod confirm_ops;
mod durability_marker;
pub mod group_commit;
pub mod hold_ops;
pub mod keys;
pub mod layout;
pub mod queue_ops;
mod registry;
mod secrets;
mod tenant;
mod tenant_data;
pub mod types;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dashmap::DashMap;
use durability_marker::DurabilityMarker;
use serde::{Deserialize, Serialize};

pub use group_commit::FlushStats;
pub use layout::{Layout, DEFAULT_LAYOUT};
pub use queue_ops::{
    Completion, CompletionReport, Lease, LeaseBatch, LeaseRequest, LeaseTable, LeasedEntry,
    RetryPolicy, LEASE_SCAN_MAX,
};
pub use secrets::MASTER_KEY_FILE;
pub use types::{
    CallMark, Checkpoint, DeadLetter, DedupMark, QueueEntry, RecordRef, RecordState, SeenKey,
    SyncState, Transition, Unconfirmed,
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
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_capacity_bytes: 256 * 1024 * 1024,
        }
    }
}

/// Queue lanes, highest priority first (DESIGN.md §5). The discriminant is part of keys.
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

/// A command to enqueue: one source fact bound for Virtuous.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub kind: RecordKind,
    /// The ingress key (`stripe`, a platform name).
    pub source: String,
    /// The record's stable source id (PaymentIntent id, charge id, `cus_…`).
    pub source_id: String,
    /// One idempotency key per source fact, forever (DESIGN.md invariant 3).
    pub idempotency_key: String,
    pub lane: Lane,
    /// Virtuous `transactionSource` (batch-level field).
    pub transaction_source: String,
    /// The exact JSON body destined for Virtuous.
    pub body_json: String,
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

/// A stored per-tenant alert (DESIGN.md §6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    pub code: String,
    pub message: String,
    pub first_at_ms: u64,
    pub last_at_ms: u64,
    pub count: u64,
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
}

impl TenantRunState {
    pub const ALL: [TenantRunState; 3] = [
        TenantRunState::Running,
        TenantRunState::Paused,
        TenantRunState::NeedsOperator,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TenantRunState::Running => "running",
            TenantRunState::Paused => "paused",
            TenantRunState::NeedsOperator => "needs_operator",
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
            _ => TenantRunState::NeedsOperator,
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
    inner: Arc<StoreInner>,
}

struct StoreInner {
    // Declared first so it is dropped first: its thread answers the last waiters with a
    // final flush before the `Db` handles go away.
    group_commit: group_commit::GroupCommit,
    db: sled::Db,
    /// How far the store is known durable (refuses a store that lost flushed writes).
    marker: Arc<DurabilityMarker>,
    path: PathBuf,
    layout: Layout,
    registry: TenantRegistry,
    /// Open tenants: one handle (one write lock, one set of gauges) per tenant.
    tenants: DashMap<String, TenantStore>,
}

/// Maps an error of `sled::Config::open`: corruption means refuse to start, never repair.
fn open_error(path: &Path, err: sled::Error) -> StoreError {
    let shown = path.display().to_string();
    match err {
        sled::Error::Corruption { at, .. } => StoreError::Corrupt {
            path: shown,
            detail: format!("sled reports corruption at {at:?}"),
        },
        sled::Error::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
            ) =>
        {
            StoreError::Corrupt {
                path: shown,
                detail: io.to_string(),
            }
        }
        // sled reports some damaged files as internal bugs; refusing to start is right either way.
        sled::Error::ReportableBug(detail) => StoreError::Corrupt {
            path: shown,
            detail,
        },
        sled::Error::Io(io) => StoreError::Io(format!("cannot open the store at {shown}: {io}")),
        other => StoreError::Io(format!("cannot open the store at {shown}: {other}")),
    }
}

/// sled 0.34's `Db::flush` writes its log with `sync_file_range` only: the data reaches the
/// device, but neither the device's volatile cache nor the file's size (the log grows) is
/// forced to stable storage, so a power loss could drop acknowledged writes. Group commit
/// therefore follows every sled flush with an `fdatasync` of sled's log file (any descriptor
/// of the file will do).
fn open_log_file(path: &Path) -> Result<std::fs::File, StoreError> {
    let log_path = path.join("db");
    std::fs::File::open(&log_path).map_err(|err| {
        StoreError::Io(format!(
            "cannot open {} for fdatasync: {err}",
            log_path.display()
        ))
    })
}

fn sync_log_file(log_file: &std::fs::File) -> Result<(), StoreError> {
    log_file
        .sync_data()
        .map_err(|err| StoreError::Io(format!("fdatasync of the store log failed: {err}")))
}

/// How long `open` retries while the data dir's lock is held. sled releases its file lock
/// only when its IO threads finish the last writes of a closed `Db`, a few milliseconds
/// after the handle dropped; reopening at once (tests, restarts in one process) could race
/// that. A second process holding the store still gets the lock error after this wait.
const LOCK_RETRY_MS: u64 = 2_000;

/// sled reports a held lock as an `Other` I/O error with this text (config.rs, 0.34.7).
fn is_lock_busy(err: &sled::Error) -> bool {
    matches!(err, sled::Error::Io(io) if io.to_string().starts_with("could not acquire lock"))
}

/// Opens sled, mapping corruption (errors and panics) to [`StoreError::Corrupt`].
fn open_db(config: &sled::Config, path: &Path) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(LOCK_RETRY_MS);
    loop {
        // sled 0.34 may panic on some damaged files instead of returning an error.
        let opened = catch_unwind(AssertUnwindSafe(|| config.open())).map_err(|panic| {
            let detail = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|text| (*text).to_owned()))
                .unwrap_or_else(|| "sled panicked while opening".to_owned());
            StoreError::Corrupt {
                path: path.display().to_string(),
                detail,
            }
        })?;
        match opened {
            Err(err) if is_lock_busy(&err) && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other.map_err(|err| open_error(path, err)),
        }
    }
}

impl Store {
    /// Opens (or creates) the store in `path`. A corrupt store → [`StoreError::Corrupt`].
    pub fn open(path: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        Store::open_with_layout(path, options, None)
    }

    /// Like [`Store::open`], choosing the layout of a new store (`None`: the default). An
    /// existing store keeps the layout it was created with; asking for another is an error.
    pub fn open_with_layout(
        path: &Path,
        options: StoreOptions,
        layout: Option<Layout>,
    ) -> Result<Store, StoreError> {
        let config = sled::Config::new()
            .path(path)
            .cache_capacity(options.cache_capacity_bytes);
        let db = open_db(&config, path)?;
        let marker = Arc::new(DurabilityMarker::check(&db, path)?);
        let layout = layout::resolve(&db, layout)?;
        let registry =
            TenantRegistry::new(db.open_tree(registry::REGISTRY_TREE).map_err(io_error)?);
        let flush_db = db.clone();
        let log_file = open_log_file(path)?;
        let flush_marker = Arc::clone(&marker);
        let group_commit = group_commit::GroupCommit::start(Box::new(move || {
            let counter = flush_marker.stamp(&flush_db)?;
            flush_db.flush().map_err(io_error)?;
            sync_log_file(&log_file)?;
            flush_marker.flushed(counter, false)
        }))?;
        tracing::info!(path = %path.display(), layout = ?layout, "store opened");
        Ok(Store {
            inner: Arc::new(StoreInner {
                group_commit,
                db,
                marker,
                path: path.to_owned(),
                layout,
                registry,
                tenants: DashMap::new(),
            }),
        })
    }

    /// The tenant's scoped store (creates its tree on first use).
    pub fn tenant(&self, tenant_id: &str) -> Result<TenantStore, StoreError> {
        if let Some(open) = self.inner.tenants.get(tenant_id) {
            return Ok(open.value().clone());
        }
        let entry = self.inner.tenants.entry(tenant_id.to_owned());
        let tenant = entry.or_try_insert_with(|| {
            let (tree, keys) = self.inner.layout.locate(&self.inner.db, tenant_id)?;
            TenantStore::open(
                self.inner.db.clone(),
                tree,
                keys,
                tenant_id,
                self.inner.group_commit.shared(),
            )
        })?;
        Ok(tenant.value().clone())
    }

    /// Deletes all of a tenant's data (not its registry record). Handles obtained before
    /// refuse further writes with [`StoreError::Closed`].
    pub fn drop_tenant_data(&self, tenant_id: &str) -> Result<(), StoreError> {
        let tenant = self.tenant(tenant_id)?;
        let _write_guard = tenant.mark_dropped()?;
        let inner = tenant.inner();
        self.inner
            .layout
            .drop_tenant(&self.inner.db, &inner.tree, &inner.keys, tenant_id)?;
        // Forget the handle only now: until the data is gone, `tenant()` keeps returning the
        // dropped handle (writes refused) rather than rebuilding gauges from half-deleted keys.
        self.inner.tenants.remove(tenant_id);
        Ok(())
    }

    pub fn registry(&self) -> TenantRegistry {
        self.inner.registry.clone()
    }

    /// Group commit: resolves once a flush that started after this call completed.
    /// Everything written before the call is then durable. (The waiter registers when the
    /// future is first polled: await it directly after the writes it must cover.)
    pub async fn durable(&self) -> Result<(), StoreError> {
        self.inner.group_commit.wait().await
    }

    /// Flushes synchronously (shutdown), with the same `fdatasync` as group commit.
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        self.inner.group_commit.shared().wait_all_applied()?;
        let counter = self.inner.marker.stamp(&self.inner.db)?;
        self.inner.db.flush().map_err(io_error)?;
        sync_log_file(&open_log_file(&self.inner.path)?)?;
        // After a clean stop the marker names the very last flush: any later damage to the
        // log is refused at the next open.
        self.inner.marker.flushed(counter, true)
    }

    /// Disk space used, for reports.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.inner.db.size_on_disk().map_err(io_error)
    }

    /// Counters of the group-commit flusher and its write groups.
    pub fn flush_stats(&self) -> FlushStats {
        self.inner.group_commit.stats()
    }

    /// Why the store refuses writes, once a write group or a flush failed (until restart).
    pub fn failure(&self) -> Option<StoreError> {
        self.inner.group_commit.poisoned()
    }

    pub fn layout(&self) -> Layout {
        self.inner.layout
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }
}

/// The tenant registry (its own tree). All writes must be followed by `Store::durable`.
#[derive(Clone)]
pub struct TenantRegistry {
    tree: sled::Tree,
}

impl TenantRegistry {
    /// Inserts a new tenant; `Ok(false)` when the id exists (nothing changed).
    pub fn insert_new(&self, record: &TenantRecord) -> Result<bool, StoreError> {
        self.insert_new_impl(record)
    }
    pub fn put(&self, record: &TenantRecord) -> Result<(), StoreError> {
        self.put_impl(record)
    }
    pub fn get(&self, tenant_id: &str) -> Result<Option<TenantRecord>, StoreError> {
        self.get_impl(tenant_id)
    }
    /// Every tenant, ordered by id.
    pub fn list(&self) -> Result<Vec<TenantRecord>, StoreError> {
        self.list_impl()
    }
    pub fn remove(&self, tenant_id: &str) -> Result<bool, StoreError> {
        self.remove_impl(tenant_id)
    }
    /// A running tenant becomes [`TenantRunState::NeedsOperator`] (atomically: a concurrent admin
    /// write is never overwritten with stale fields). `Ok(false)` when it was not running or
    /// is not registered. Not flushed: the caller's next flush covers it.
    pub fn mark_needs_operator(&self, tenant_id: &str, now_ms: u64) -> Result<bool, StoreError> {
        self.mark_needs_operator_impl(tenant_id, now_ms)
    }
}

/// One tenant's data: queue lanes, records, dead letters, checkpoints, budget ledger,
/// alerts and counters, under key prefixes of one tree. Cheap to clone.
#[derive(Clone)]
pub struct TenantStore {
    inner: Arc<tenant::TenantInner>,
}

impl TenantStore {
    pub fn tenant_id(&self) -> &str {
        self.tenant_id_impl()
    }
    /// Atomically writes each new entry, its record state (which is also the entry's dedup
    /// mark), its aliases and the counters; duplicates are reported and write nothing but the
    /// duplicate counter. The writes are handed to the store's writer thread, which applies
    /// them (all or nothing, merged with concurrent calls) in its next cycle; this handle's
    /// reads and other writes wait for that. Not durable — and not certainly written: a
    /// failed apply poisons the store — until `Store::durable` resolves `Ok`.
    pub fn enqueue(&self, entries: Vec<NewEntry>) -> Result<Vec<EnqueueOutcome>, StoreError> {
        self.enqueue_impl(entries, None, None)
    }
    /// [`TenantStore::enqueue`] plus a checkpoint advance in the same atomic batch (polling:
    /// the high-water mark moves only together with the entries it covers).
    pub fn enqueue_with_checkpoint(
        &self,
        entries: Vec<NewEntry>,
        checkpoint_name: &str,
        checkpoint: &[u8],
    ) -> Result<Vec<EnqueueOutcome>, StoreError> {
        self.enqueue_impl(entries, Some((checkpoint_name, checkpoint)), None)
    }
    pub fn lane_stats(&self) -> [(Lane, LaneStat); 4] {
        self.lane_stats_impl()
    }
    /// Entries in all lanes.
    pub fn queued_total(&self) -> u64 {
        self.queued_total_impl()
    }
    pub fn counts(&self) -> Counts {
        self.counts_impl()
    }
    /// Raises (or bumps) an alert; returns true the first time the code is raised.
    pub fn raise_alert(&self, code: &str, message: &str, now_ms: u64) -> Result<bool, StoreError> {
        self.raise_alert_impl(code, message, now_ms)
    }
    pub fn alerts(&self) -> Result<Vec<Alert>, StoreError> {
        self.alerts_impl()
    }
    /// Budget call log: record one Virtuous call at `at_ms`.
    pub fn record_call(&self, at_ms: u64) -> Result<(), StoreError> {
        self.record_call_impl(at_ms)
    }
    /// Calls recorded at or after `since_ms`.
    pub fn calls_since(&self, since_ms: u64) -> Result<u64, StoreError> {
        self.calls_since_impl(since_ms)
    }
}

/// The master key that seals tenant secrets (XChaCha20-Poly1305, associated data =
/// tenant id + field path).
pub struct MasterKey {
    cipher: chacha20poly1305::XChaCha20Poly1305,
}

impl MasterKey {
    /// From `STEWARD_MASTER_KEY` (32 bytes, Base64) when given, else from
    /// `{data_dir}/master.key`, created with mode 0600 on first start.
    /// Returns the key and whether it was generated now.
    pub fn load_or_create(
        data_dir: &Path,
        env_value: Option<&str>,
    ) -> Result<(MasterKey, bool), StoreError> {
        MasterKey::load_or_create_impl(data_dir, env_value)
    }
    pub fn seal(&self, tenant_id: &str, field: &str, plaintext: &[u8]) -> Vec<u8> {
        self.seal_impl(tenant_id, field, plaintext)
    }
    pub fn open(&self, tenant_id: &str, field: &str, sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.open_impl(tenant_id, field, sealed)
    }
}

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;
