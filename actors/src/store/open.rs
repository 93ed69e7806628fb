//! Opening the process-wide [`Store`]: sled, the durability marker, the layout, the
//! registry, group commit's flush (with the log file's `fdatasync`) and the open tenants.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dashmap::DashMap;

use super::alert_outbox::AlertOutbox;
use super::durability_marker::DurabilityMarker;
use super::gate::Gates;
use super::process_alerts::ProcessAlerts;
use super::{
    group_commit, io_error, layout, registry, FlushStats, Layout, Store, StoreError, StoreOptions,
    TenantRegistry, TenantStore,
};

pub(crate) struct StoreInner {
    // Declared first so it is dropped first: its thread answers the last waiters with a
    // final flush before the `Db` handles go away.
    pub(crate) group_commit: group_commit::GroupCommit,
    pub(crate) db: sled::Db,
    /// How far the store is known durable (refuses a store that lost flushed writes).
    marker: Arc<DurabilityMarker>,
    /// Each tree's gate: held shared by every mutation, exclusively by a snapshot (`gate.rs`).
    pub(crate) gates: Gates,
    path: PathBuf,
    pub(crate) layout: Layout,
    pub(crate) registry: TenantRegistry,
    /// Open tenants: one handle (one write lock, one set of gauges) per tenant.
    pub(crate) tenants: DashMap<String, TenantStore>,
    /// Alert notices: the policy and the dispatcher's wake-up, shared with every tenant.
    pub(crate) alert_outbox: Arc<AlertOutbox>,
    /// The process's own alerts (their tree).
    pub(crate) process_alerts: ProcessAlerts,
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
pub(crate) const LOCK_RETRY_MS: u64 = 2_000;

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
        let gates = Gates::default();
        let registry = TenantRegistry::new(gates.tree(&db, registry::REGISTRY_TREE.as_bytes())?);
        let process_alerts = ProcessAlerts::open(&db, &gates)?;
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
                gates,
                path: path.to_owned(),
                layout,
                registry,
                tenants: DashMap::new(),
                alert_outbox: Arc::new(AlertOutbox::new(options.alert_notices)),
                process_alerts,
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
            let (tree, keys) =
                self.inner
                    .layout
                    .locate(&self.inner.db, &self.inner.gates, tenant_id)?;
            TenantStore::open(
                self.inner.db.clone(),
                tree,
                keys,
                tenant_id,
                self.inner.group_commit.shared(),
                Arc::clone(&self.inner.alert_outbox),
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

    /// Poisons the store as a failed flush would.
    #[cfg(test)]
    pub(crate) fn poison_for_test(&self, error: StoreError) {
        self.inner.group_commit.poison_for_test(error);
    }

    pub fn layout(&self) -> Layout {
        self.inner.layout
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }
}
