//! Moving one tenant between stores (docs/operations.md "Moving a tenant"): its registry
//! record and its whole key space (queue, records, dead letters, checkpoints, budget call
//! log, alerts, counters) as one stream, keys relative to the tenant's prefix so that the
//! receiving store may use another layout.

use std::io::{Read, Write};

use super::codec::decode;
use super::keys::KeySpace;
use super::layout::remove_prefix;
use super::snapshot::advance_ids;
use super::snapshot_format::{
    SnapshotHeader, SnapshotItem, SnapshotKind, SnapshotReader, SnapshotWriter,
};
use super::{io_error, registry, Store, StoreError, TenantRecord};

/// The pseudo-tree whose entries are the tenant's keys, relative to its prefix.
pub const TENANT_KEYS_TREE: &[u8] = b"@tenant";
/// Keys written per sled batch on import.
const IMPORT_BATCH_ENTRIES: usize = 10_000;

fn malformed(detail: &str) -> StoreError {
    StoreError::Codec(format!("not a readable Steward tenant export: {detail}"))
}

/// What an import wrote.
#[derive(Debug, Clone, Copy, Default)]
pub struct ImportStats {
    pub entries: u64,
    pub files: u64,
    pub bytes: u64,
    /// The exporter's sequence numbers were all below this.
    pub id_floor: u64,
}

impl Store {
    /// Starts a tenant export on `out`: the registry record as it is stored, then every key
    /// of the tenant, copied while no write runs. The tenant must be stopped (nothing of it
    /// writes any more); the caller may add its files and must finish the stream.
    pub fn write_tenant_export<W: Write>(
        &self,
        tenant_id: &str,
        out: W,
        created_at_ms: u64,
        steward_version: &str,
    ) -> Result<(SnapshotWriter<W>, u64), StoreError> {
        let tenant = self.tenant(tenant_id)?;
        self.inner.group_commit.shared().wait_all_applied()?;
        let inner = tenant.inner();
        let db = &self.inner.db;
        let record = self
            .inner
            .registry
            .raw_get(tenant_id)?
            .ok_or_else(|| StoreError::Io(format!("tenant `{tenant_id}` is not registered")))?;
        let header = SnapshotHeader {
            kind: SnapshotKind::Tenant,
            created_at_ms,
            steward_version: steward_version.to_owned(),
            tenant: Some(tenant_id.to_owned()),
        };
        let mut writer = SnapshotWriter::start(out, &header)?;
        writer.tree(registry::REGISTRY_TREE.as_bytes())?;
        writer.entry(tenant_id.as_bytes(), &record)?;
        writer.tree(TENANT_KEYS_TREE)?;
        let prefix = inner.keys.tenant_prefix();
        let mut entries = 0;
        {
            let _closed = inner.tree.gate().close();
            for item in inner.tree.scan_prefix(prefix) {
                let (key, value) = item.map_err(io_error)?;
                writer.entry(&key[prefix.len()..], &value)?;
                entries += 1;
            }
        }
        writer.set_id_floor(db.generate_id().map_err(io_error)? + 1);
        Ok((writer, entries))
    }

    /// Reads a tenant export into this store: `check` sees the registry record first (and
    /// refuses it by returning an error: an id in use, secrets sealed with another master
    /// key); then the tenant's keys are written under its prefix, `file` gets each file
    /// record, and once the stream's digest held, sled's ids move past the exporter's.
    /// The record is returned, NOT registered: the caller registers it (last, so a crash
    /// mid-import leaves no half tenant in the registry). Keys of the tenant left by an
    /// earlier, interrupted import are removed first; on any error the written keys are
    /// removed again.
    pub fn import_tenant<R: Read>(
        &self,
        reader: &mut SnapshotReader<R>,
        check: impl FnOnce(&TenantRecord) -> Result<(), StoreError>,
        mut file: impl FnMut(&str, &mut SnapshotReader<R>) -> Result<(), StoreError>,
    ) -> Result<(TenantRecord, ImportStats), StoreError> {
        let header = reader.header().clone();
        if header.kind != SnapshotKind::Tenant {
            return Err(StoreError::Codec(
                "this is a backup of a whole instance, not a tenant export: restore it with \
                 `steward restore`"
                    .into(),
            ));
        }
        let tenant_id = header
            .tenant
            .clone()
            .ok_or_else(|| malformed("its header names no tenant"))?;
        if reader.next_item()? != SnapshotItem::Tree(registry::REGISTRY_TREE.as_bytes().to_vec()) {
            return Err(malformed("it does not start with the tenant's record"));
        }
        let SnapshotItem::Entry(id, record_bytes) = reader.next_item()? else {
            return Err(malformed("it does not start with the tenant's record"));
        };
        let record: TenantRecord = decode(&record_bytes)?;
        if id != tenant_id.as_bytes() || record.id != tenant_id {
            return Err(malformed("its record is of another tenant than its header"));
        }
        check(&record)?;
        if reader.next_item()? != SnapshotItem::Tree(TENANT_KEYS_TREE.to_vec()) {
            return Err(malformed("the tenant's keys are missing"));
        }
        let (tree, keys) =
            self.inner
                .layout
                .locate(&self.inner.db, &self.inner.gates, &tenant_id)?;
        // No handle of the tenant may be cached from before: its gauges would be wrong.
        self.inner.tenants.remove(&tenant_id);
        remove_prefix(&tree, keys.tenant_prefix())?;
        let written = write_keys(reader, &tree, &keys, &mut file);
        let stats = match written {
            Ok(stats) => stats,
            Err(err) => {
                let _ = remove_prefix(&tree, keys.tenant_prefix());
                return Err(err);
            }
        };
        advance_ids(&self.inner.db, stats.id_floor)?;
        Ok((record, stats))
    }
}

fn write_keys<R: Read>(
    reader: &mut SnapshotReader<R>,
    tree: &super::gate::GatedTree,
    keys: &KeySpace,
    file: &mut impl FnMut(&str, &mut SnapshotReader<R>) -> Result<(), StoreError>,
) -> Result<ImportStats, StoreError> {
    let prefix = keys.tenant_prefix();
    let mut batch = sled::Batch::default();
    let mut batched = 0;
    let mut entries = 0;
    loop {
        match reader.next_item()? {
            SnapshotItem::Entry(key, value) => {
                let mut full = Vec::with_capacity(prefix.len() + key.len());
                full.extend_from_slice(prefix);
                full.extend_from_slice(&key);
                batch.insert(full, value);
                batched += 1;
                entries += 1;
                if batched == IMPORT_BATCH_ENTRIES {
                    tree.apply_batch(std::mem::take(&mut batch))
                        .map_err(io_error)?;
                    batched = 0;
                }
            }
            SnapshotItem::File { path, .. } => file(&path, reader)?,
            SnapshotItem::Tree(_) => return Err(malformed("a second tree")),
            SnapshotItem::End(counts) => {
                tree.apply_batch(batch).map_err(io_error)?;
                return Ok(ImportStats {
                    entries,
                    files: counts.files,
                    bytes: counts.bytes,
                    id_floor: counts.id_floor,
                });
            }
        }
    }
}
