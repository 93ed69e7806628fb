//! Durable state: one sled `Db` per process (DESIGN.md §8).
//!
//! CONTRACT FILE: the signatures below are what the rest of Steward codes against. The
//! implementation may move code into submodules (codec, keys, group_commit, secrets,
//! registry, tenant) but keeps these names and signatures.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Errors of the store layer.
#[derive(Debug, thiserror::Error)]
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
}

/// Options for [`Store::open`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// sled page cache; `store.cache_capacity_bytes` (default 256 MiB).
    pub cache_capacity_bytes: u64,
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
    /// `running`, `paused` or `needs_operator`.
    pub state: String,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
}

/// The process-wide store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    _private: (),
}

impl Store {
    /// Opens (or creates) the store in `path`. A corrupt store → [`StoreError::Corrupt`].
    pub fn open(path: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        let _ = (path, options);
        todo!()
    }
    /// The tenant's scoped store (creates its tree on first use).
    pub fn tenant(&self, tenant_id: &str) -> Result<TenantStore, StoreError> {
        let _ = tenant_id;
        todo!()
    }
    /// Deletes all of a tenant's data (not its registry record).
    pub fn drop_tenant_data(&self, tenant_id: &str) -> Result<(), StoreError> {
        let _ = tenant_id;
        todo!()
    }
    pub fn registry(&self) -> TenantRegistry {
        todo!()
    }
    /// Group commit: resolves once a flush that started after this call completed.
    /// Everything written before the call is then durable.
    pub async fn durable(&self) -> Result<(), StoreError> {
        todo!()
    }
    /// Flushes synchronously (shutdown).
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        todo!()
    }
    /// Disk space used, for reports.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        todo!()
    }
}

/// The tenant registry (its own tree). All writes must be followed by `Store::durable`.
#[derive(Clone)]
pub struct TenantRegistry {
    _private: (),
}

impl TenantRegistry {
    /// Inserts a new tenant; `Ok(false)` when the id exists (nothing changed).
    pub fn insert_new(&self, record: &TenantRecord) -> Result<bool, StoreError> {
        let _ = record;
        todo!()
    }
    pub fn put(&self, record: &TenantRecord) -> Result<(), StoreError> {
        let _ = record;
        todo!()
    }
    pub fn get(&self, tenant_id: &str) -> Result<Option<TenantRecord>, StoreError> {
        let _ = tenant_id;
        todo!()
    }
    /// Every tenant, ordered by id.
    pub fn list(&self) -> Result<Vec<TenantRecord>, StoreError> {
        todo!()
    }
    pub fn remove(&self, tenant_id: &str) -> Result<bool, StoreError> {
        let _ = tenant_id;
        todo!()
    }
}

/// One tenant's data: queue lanes, records, dead letters, checkpoints, budget ledger,
/// alerts and counters, under key prefixes of one tree. Cheap to clone.
#[derive(Clone)]
pub struct TenantStore {
    _private: (),
}

impl TenantStore {
    pub fn tenant_id(&self) -> &str {
        todo!()
    }
    /// Atomically (one batch) writes each new entry, its dedup key, its record state and
    /// counters; duplicates are reported and write nothing. Not durable until
    /// `Store::durable` resolves.
    pub fn enqueue(&self, entries: Vec<NewEntry>) -> Result<Vec<EnqueueOutcome>, StoreError> {
        let _ = entries;
        todo!()
    }
    pub fn lane_stats(&self) -> [(Lane, LaneStat); 4] {
        todo!()
    }
    /// Entries in all lanes.
    pub fn queued_total(&self) -> u64 {
        todo!()
    }
    pub fn counts(&self) -> Counts {
        todo!()
    }
    /// Raises (or bumps) an alert; returns true the first time the code is raised.
    pub fn raise_alert(&self, code: &str, message: &str, now_ms: u64) -> Result<bool, StoreError> {
        let _ = (code, message, now_ms);
        todo!()
    }
    pub fn alerts(&self) -> Result<Vec<Alert>, StoreError> {
        todo!()
    }
    /// Budget call log: record one Virtuous call at `at_ms`.
    pub fn record_call(&self, at_ms: u64) -> Result<(), StoreError> {
        let _ = at_ms;
        todo!()
    }
    /// Calls recorded at or after `since_ms`.
    pub fn calls_since(&self, since_ms: u64) -> Result<u64, StoreError> {
        let _ = since_ms;
        todo!()
    }
}

/// The master key that seals tenant secrets (XChaCha20-Poly1305, associated data =
/// tenant id + field path).
pub struct MasterKey {
    _private: (),
}

impl MasterKey {
    /// From `STEWARD_MASTER_KEY` (32 bytes, Base64) when given, else from
    /// `{data_dir}/master.key`, created with mode 0600 on first start.
    /// Returns the key and whether it was generated now.
    pub fn load_or_create(
        data_dir: &Path,
        env_value: Option<&str>,
    ) -> Result<(MasterKey, bool), StoreError> {
        let _ = (data_dir, env_value);
        todo!()
    }
    pub fn seal(&self, tenant_id: &str, field: &str, plaintext: &[u8]) -> Vec<u8> {
        let _ = (tenant_id, field, plaintext);
        todo!()
    }
    pub fn open(&self, tenant_id: &str, field: &str, sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        let _ = (tenant_id, field, sealed);
        todo!()
    }
}

#[allow(dead_code)]
const _UNUSED: Option<Duration> = None;
