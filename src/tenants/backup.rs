//! Backup and restore of a data dir (docs/operations.md "Backup and restore").
//!
//! A backup is one stream (`actors/src/store/snapshot_format.rs`): the whole store, copied
//! by the running process behind its snapshot gate (a consistent cut: every write
//! acknowledged before the backup began, nothing half-written), then the data dir's files
//! that the store's records point to — finished backfill uploads (`backfills/`) and the
//! embedded simulator's saved organisations (`sandbox/`). Never in it: the master key (kept
//! apart by design), the admin token, `listen-addr`, partial uploads.
//!
//! The stream is first written to a temporary file in `{data_dir}/tmp` (so writes are held
//! back only while the store is copied to local disk, not while a slow client downloads),
//! unlinked at once, and served from the open descriptor.

use std::fs::File;
use std::io::{BufReader, BufWriter, Seek, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::Serialize;
use steward_actors::store::snapshot_format::{SnapshotReader, SnapshotWriter};
use steward_actors::store::{restore_backup, StoreError};

use super::TenantStores;

/// Directories of the data dir whose files a backup carries, besides the store.
pub const DATA_SUBDIRS: [&str; 2] = ["backfills", crate::app::SANDBOX_DIR];
/// Where a backup is written before it is served.
pub const TMP_DIR: &str = "tmp";
/// The store's directory inside the data dir.
pub const STORE_DIR: &str = "store";

/// What one backup held.
#[derive(Debug, Clone, Serialize)]
pub struct BackupSummary {
    pub entries: u64,
    pub files: u64,
    pub bytes: u64,
    /// How long writes were held back while the store was copied.
    pub writes_held_ms: u64,
    pub took_ms: u64,
}

/// A finished backup: an unlinked file, rewound, and what it holds.
pub struct BackupFile {
    pub file: File,
    pub summary: BackupSummary,
}

/// One backup at a time: a second would copy the same data again and double the pause.
static BACKUP_RUNNING: AtomicBool = AtomicBool::new(false);

/// Why a backup could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("a backup is already being made; try again when it finished")]
    Busy,
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Io(String),
}

struct RunningGuard;

impl Drop for RunningGuard {
    fn drop(&mut self) {
        BACKUP_RUNNING.store(false, Ordering::Release);
    }
}

fn io(what: &str, path: &Path, err: std::io::Error) -> BackupError {
    BackupError::Io(format!("{what} {}: {err}", path.display()))
}

impl TenantStores {
    /// Writes a backup of the store and the data dir's files (blocking: call it off the
    /// executor).
    pub fn write_backup(&self, data_dir: &Path, now_ms: u64) -> Result<BackupFile, BackupError> {
        if BACKUP_RUNNING.swap(true, Ordering::AcqRel) {
            return Err(BackupError::Busy);
        }
        let _running = RunningGuard;
        let started = Instant::now();
        let file = unlinked_temp_file(data_dir, "backup", now_ms)?;
        let (mut writer, stats) = self.store.write_backup(
            BufWriter::new(file),
            now_ms,
            crate::telemetry::VERSION_LINE,
        )?;
        let files = add_data_files(&mut writer, data_dir, &DATA_SUBDIRS)?;
        let (out, counts) = writer.finish()?;
        Ok(BackupFile {
            file: rewound(out)?,
            summary: BackupSummary {
                entries: counts.entries,
                files,
                bytes: counts.bytes,
                writes_held_ms: stats.gate_closed_ms,
                took_ms: started.elapsed().as_millis() as u64,
            },
        })
    }
}

/// A new file in `{data_dir}/tmp`, unlinked at once: a crash or a dropped download leaves
/// nothing behind.
pub(super) fn unlinked_temp_file(
    data_dir: &Path,
    what: &str,
    now_ms: u64,
) -> Result<File, BackupError> {
    let tmp_dir = data_dir.join(TMP_DIR);
    std::fs::create_dir_all(&tmp_dir).map_err(|err| io("cannot create", &tmp_dir, err))?;
    let path = tmp_dir.join(format!("{what}-{now_ms}-{}.partial", std::process::id()));
    let file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|err| io("cannot create", &path, err))?;
    std::fs::remove_file(&path).map_err(|err| io("cannot unlink", &path, err))?;
    Ok(file)
}

/// Removes what an earlier process left in `{data_dir}/tmp` (an import cut off by a crash;
/// backups there are unlinked while written, so none stays).
pub fn clear_tmp(data_dir: &Path) {
    let tmp_dir = data_dir.join(TMP_DIR);
    let Ok(entries) = std::fs::read_dir(&tmp_dir) else {
        return;
    };
    for entry in entries.flatten() {
        if let Err(err) = std::fs::remove_file(entry.path()) {
            tracing::warn!(path = %entry.path().display(), error = %err, "a leftover temporary file could not be removed");
        }
    }
}

/// The written stream's file, synced and rewound for reading.
pub(super) fn rewound(out: BufWriter<File>) -> Result<File, BackupError> {
    let mut file = out
        .into_inner()
        .map_err(|err| BackupError::Io(format!("cannot write the stream: {err}")))?;
    file.sync_data()
        .and_then(|()| file.rewind())
        .map_err(|err| BackupError::Io(format!("cannot write the stream: {err}")))?;
    Ok(file)
}

/// Every finished file under `subdirs` of the data dir (hidden names are uploads in
/// progress), in a stable order.
fn data_files(data_dir: &Path, subdirs: &[&str]) -> Result<Vec<(String, PathBuf)>, BackupError> {
    let mut found = Vec::new();
    for subdir in subdirs {
        let mut pending = vec![PathBuf::from(subdir)];
        while let Some(relative) = pending.pop() {
            let dir = data_dir.join(&relative);
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(err) => return Err(io("cannot read", &dir, err)),
            };
            for entry in entries {
                let entry = entry.map_err(|err| io("cannot read", &dir, err))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                // Hidden names are uploads in progress, `.tmp` the simulator's saves in
                // progress (renamed over the kept file when whole).
                if name.starts_with('.') || name.ends_with(".tmp") {
                    continue;
                }
                let kind = entry
                    .file_type()
                    .map_err(|err| io("cannot read", &entry.path(), err))?;
                if kind.is_dir() {
                    pending.push(relative.join(&name));
                } else if kind.is_file() {
                    let shown = relative.join(&name).to_string_lossy().replace('\\', "/");
                    found.push((shown, entry.path()));
                }
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Adds every finished file under `subdirs` of the data dir to the stream.
pub(super) fn add_data_files<W: Write>(
    writer: &mut SnapshotWriter<W>,
    data_dir: &Path,
    subdirs: &[&str],
) -> Result<u64, BackupError> {
    let mut count = 0;
    for (relative, path) in data_files(data_dir, subdirs)? {
        let file = match File::open(&path) {
            Ok(file) => file,
            // Removed since it was listed (a cancelled job's upload): not part of the state.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(io("cannot open", &path, err)),
        };
        let len = file
            .metadata()
            .map_err(|err| io("cannot read", &path, err))?
            .len();
        writer.file(&relative, len, &mut BufReader::new(file))?;
        count += 1;
    }
    Ok(count)
}

/// What `steward restore` did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreSummary {
    pub entries: u64,
    pub files: u64,
    pub bytes: u64,
}

/// A file record's path, if it is one a backup writes (relative, under [`DATA_SUBDIRS`], no
/// `..`): a crafted backup cannot write outside the data dir.
pub(super) fn safe_relative(path: &str) -> Option<PathBuf> {
    let relative = PathBuf::from(path);
    let mut components = relative.components();
    let first = components.next()?;
    let allowed =
        matches!(first, Component::Normal(name) if DATA_SUBDIRS.iter().any(|dir| name == *dir));
    let rest_normal = components.all(|part| matches!(part, Component::Normal(_)));
    (allowed && rest_normal && relative.components().count() >= 2).then_some(relative)
}

/// Restores a backup into `data_dir`, which must not exist or be empty. On any failure the
/// data dir is left as it was found (empty, or absent).
pub fn restore(from: &Path, data_dir: &Path) -> Result<RestoreSummary, BackupError> {
    let input = File::open(from).map_err(|err| io("cannot open", from, err))?;
    let existed = data_dir.exists();
    if existed {
        let mut entries =
            std::fs::read_dir(data_dir).map_err(|err| io("cannot read", data_dir, err))?;
        if entries.next().is_some() {
            return Err(BackupError::Io(format!(
                "{} is not empty: restore only writes into an empty or new data dir",
                data_dir.display()
            )));
        }
    }
    crate::app::create_private_data_dir(data_dir)
        .map_err(|err| BackupError::Io(format!("{err:#}")))?;
    let restored = restore_backup(
        BufReader::new(input),
        &data_dir.join(STORE_DIR),
        |path, reader| restore_file(data_dir, path, reader),
    );
    match restored {
        Ok(stats) => Ok(RestoreSummary {
            entries: stats.entries,
            files: stats.files,
            bytes: stats.bytes,
        }),
        Err(err) => {
            // Leave the place as it was found.
            let _ = std::fs::remove_dir_all(data_dir);
            if existed {
                let _ = crate::app::create_private_data_dir(data_dir);
            }
            Err(err.into())
        }
    }
}

fn restore_file<R: std::io::Read>(
    data_dir: &Path,
    path: &str,
    reader: &mut SnapshotReader<R>,
) -> Result<(), StoreError> {
    let relative = safe_relative(path).ok_or_else(|| {
        StoreError::Codec(format!(
            "not a readable Steward backup: a file outside the data dir's own places ({path})"
        ))
    })?;
    write_file(&data_dir.join(relative), reader)
}

/// Writes the body of the file record just read to `target` (creating its directory).
pub(super) fn write_file<R: std::io::Read>(
    target: &Path,
    reader: &mut SnapshotReader<R>,
) -> Result<(), StoreError> {
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|err| StoreError::Io(format!("cannot create {}: {err}", parent.display())))?;
    }
    let mut out = BufWriter::new(
        File::create(target)
            .map_err(|err| StoreError::Io(format!("cannot create {}: {err}", target.display())))?,
    );
    reader.copy_file(&mut out)?;
    let file = out
        .into_inner()
        .map_err(|err| StoreError::Io(format!("cannot write {}: {err}", target.display())))?;
    file.sync_all()
        .map_err(|err| StoreError::Io(format!("cannot write {}: {err}", target.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_data_dirs_own_places_are_restorable_paths() {
        // Goal: a crafted backup cannot write outside backfills/ and sandbox/.
        assert!(safe_relative("backfills/t1/job.csv").is_some());
        assert!(safe_relative("sandbox/orgs.json").is_some());
        for bad in [
            "../etc/passwd",
            "/etc/passwd",
            "backfills/../../x",
            "store/db",
            "master.key",
            "backfills",
            "",
        ] {
            assert!(safe_relative(bad).is_none(), "{bad} was accepted");
        }
    }
}
