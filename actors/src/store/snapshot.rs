//! Backup and restore of the whole store (docs/operations.md "Backup and restore"): a running
//! store copies itself a tree at a time behind that tree's closed snapshot gate (`gate.rs`),
//! and a backup restores into a new, empty store directory.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Instant;

use super::durability_marker::MARKER_KEY;
use super::snapshot_format::{
    SnapshotCounts, SnapshotHeader, SnapshotItem, SnapshotKind, SnapshotReader, SnapshotWriter,
};
use super::{io_error, registry, Store, StoreError};

/// Entries restored per sled batch (a large tree is never one batch in memory).
const RESTORE_BATCH_ENTRIES: usize = 10_000;

/// What a backup's copy of the store took.
#[derive(Debug, Clone, Copy, Default)]
pub struct BackupStats {
    pub trees: u64,
    pub entries: u64,
    /// The longest time one tree's writes were held back (its gate closed).
    pub gate_closed_ms: u64,
}

impl Store {
    /// Starts a backup stream on `out` and copies every tree into it while no write runs:
    /// a consistent snapshot holding every write acknowledged before the call. The caller
    /// may add files (after the store's part, with the gate open again) and must
    /// [`SnapshotWriter::finish`] it.
    pub fn write_backup<W: Write>(
        &self,
        out: W,
        created_at_ms: u64,
        steward_version: &str,
    ) -> Result<(SnapshotWriter<W>, BackupStats), StoreError> {
        let db = &self.inner.db;
        // Enqueues submitted before the call are in the copy, acknowledged or not yet.
        self.inner.group_commit.shared().wait_all_applied()?;
        let header = SnapshotHeader {
            kind: SnapshotKind::Backup,
            created_at_ms,
            steward_version: steward_version.to_owned(),
            tenant: None,
        };
        let mut writer = SnapshotWriter::start(out, &header)?;
        let mut stats = BackupStats::default();
        let mut names = db.tree_names();
        // The registry last: a tenant created during the backup then has its record with
        // at most part of its first writes (as if it had been created a moment later),
        // never data without a record. (The admin API also holds its mutations back while
        // a backup runs.)
        names.sort_by_key(|name| {
            (
                &name[..] == registry::REGISTRY_TREE.as_bytes(),
                name.clone(),
            )
        });
        for name in names {
            let tree = db.open_tree(&name).map_err(io_error)?;
            writer.tree(&name)?;
            stats.trees += 1;
            // One tree at a time: only writes to this tree wait while it is copied.
            let gate = self.inner.gates.of(&name);
            let closed = gate.close();
            let started = Instant::now();
            for item in tree.iter() {
                let (key, value) = item.map_err(io_error)?;
                // The durability marker describes this store's own log, not the copy's.
                if &key[..] == MARKER_KEY {
                    continue;
                }
                writer.entry(&key, &value)?;
                stats.entries += 1;
            }
            drop(closed);
            let held_ms = started.elapsed().as_millis() as u64;
            stats.gate_closed_ms = stats.gate_closed_ms.max(held_ms);
        }
        // Above every sequence number in the copy.
        writer.set_id_floor(db.generate_id().map_err(io_error)? + 1);
        Ok((writer, stats))
    }
}

/// What a restore wrote.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct RestoreStats {
    pub entries: u64,
    pub files: u64,
    pub bytes: u64,
}

/// Restores a backup stream into `store_path`, which must not exist or be empty; `file` gets
/// each file record (its relative path and the reader to copy it with). Nothing is left in
/// `store_path` when the stream turns out truncated or damaged: the caller removes what it
/// wrote outside (its files) on error.
pub fn restore_backup<R: Read>(
    input: R,
    store_path: &Path,
    mut file: impl FnMut(&str, &mut SnapshotReader<R>) -> Result<(), StoreError>,
) -> Result<RestoreStats, StoreError> {
    let mut reader = SnapshotReader::open(input)?;
    if reader.header().kind != SnapshotKind::Backup {
        return Err(StoreError::Codec(
            "this is a tenant export, not a backup: import it with `steward tenant import`".into(),
        ));
    }
    refuse_non_empty(store_path)?;
    let result = restore_into(&mut reader, store_path, &mut file);
    if result.is_err() {
        // Never leave a half-restored store that a later start could take for a whole one.
        let _ = std::fs::remove_dir_all(store_path);
    }
    result
}

fn refuse_non_empty(store_path: &Path) -> Result<(), StoreError> {
    match std::fs::read_dir(store_path) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(StoreError::Io(format!(
                    "{} is not empty: a restore only writes into an empty place",
                    store_path.display()
                )));
            }
            Ok(())
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(StoreError::Io(format!(
            "cannot read {}: {err}",
            store_path.display()
        ))),
    }
}

fn restore_into<R: Read>(
    reader: &mut SnapshotReader<R>,
    store_path: &Path,
    file: &mut impl FnMut(&str, &mut SnapshotReader<R>) -> Result<(), StoreError>,
) -> Result<RestoreStats, StoreError> {
    let db = sled::Config::new()
        .path(store_path)
        .open()
        .map_err(io_error)?;
    let mut tree: Option<sled::Tree> = None;
    let mut batch = sled::Batch::default();
    let mut batched = 0usize;
    let counts: SnapshotCounts = loop {
        match reader.next_item()? {
            SnapshotItem::Tree(name) => {
                if let Some(done) = &tree {
                    done.apply_batch(std::mem::take(&mut batch))
                        .map_err(io_error)?;
                    batched = 0;
                }
                tree = Some(db.open_tree(name).map_err(io_error)?);
            }
            SnapshotItem::Entry(key, value) => {
                if tree.is_none() {
                    return Err(StoreError::Codec(
                        "not a readable Steward backup: an entry before any tree".into(),
                    ));
                }
                batch.insert(key, value);
                batched += 1;
                if batched == RESTORE_BATCH_ENTRIES {
                    if let Some(target) = &tree {
                        target
                            .apply_batch(std::mem::take(&mut batch))
                            .map_err(io_error)?;
                    }
                    batched = 0;
                }
            }
            SnapshotItem::File { path, .. } => file(&path, reader)?,
            SnapshotItem::End(counts) => break counts,
        }
    };
    if let Some(target) = &tree {
        target.apply_batch(batch).map_err(io_error)?;
    }
    advance_ids(&db, counts.id_floor)?;
    db.flush().map_err(io_error)?;
    Ok(RestoreStats {
        entries: counts.entries,
        files: counts.files,
        bytes: counts.bytes,
    })
}

/// Moves sled's id generator to at least `floor`: sled 0.34 has no setter, and its ids are
/// process-wide counters persisted every million, so this is a loop of cheap increments.
pub(crate) fn advance_ids(db: &sled::Db, floor: u64) -> Result<(), StoreError> {
    while db.generate_id().map_err(io_error)? < floor {}
    Ok(())
}
