//! The durability marker: how Steward notices that sled dropped flushed writes.
//!
//! sled 0.34 cannot tell a damaged log from the torn tail a crash leaves: on open it truncates
//! the log at the first bad message and starts, without every write after it — acknowledged,
//! flushed and fsynced ones included (tests/it/crash_corrupt.rs measured it). Steward
//! therefore keeps its own record of how far the store was known durable:
//! - every group-commit flush first inserts a counter (`n`, one higher each flush) into the
//!   store, so the flush makes it durable with everything written before it;
//! - at most every [`MARKER_FILE_INTERVAL_MS`], and at every shutdown flush, the counter of a
//!   flush that completed is written to [`MARKER_FILE`] next to sled's files (written to a
//!   temporary file, fsynced, renamed).
//!
//! On open, the counter recovered by sled must be at least the file's: a smaller one means
//! sled lost writes that had been flushed, and Steward refuses to start (`StoreError::Corrupt`)
//! instead of running on a store that forgot acknowledged data. A crash never trips it: the
//! file only ever names a counter whose flush completed. What it cannot see: damage that cuts
//! only writes flushed after the file's last update (at most one interval; nothing after a
//! clean shutdown). An operator who accepts the loss deletes the file to start anyway.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{io_error, StoreError};

/// The marker file, inside sled's directory (sled ignores files it does not know).
pub(crate) const MARKER_FILE: &str = "steward-durable-marker";
/// The counter's key in sled's default tree.
pub(crate) const MARKER_KEY: &[u8] = b"steward/durable-marker";
/// Longest time between two updates of the marker file while flushes happen.
pub(crate) const MARKER_FILE_INTERVAL_MS: u64 = 1_000;

struct MarkerState {
    /// The counter the next flush writes.
    next: u64,
    /// When the file was last written (`None`: not yet by this process).
    file_written_at: Option<Instant>,
}

/// The store's marker: checked at open, advanced by every flush.
pub(crate) struct DurabilityMarker {
    file: PathBuf,
    state: Mutex<MarkerState>,
}

fn read_counter(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

impl DurabilityMarker {
    /// Compares what sled recovered with the marker file; refuses a store that lost flushed
    /// writes.
    pub(crate) fn check(db: &sled::Db, store_path: &Path) -> Result<DurabilityMarker, StoreError> {
        let file = store_path.join(MARKER_FILE);
        let recovered = db
            .get(MARKER_KEY)
            .map_err(io_error)?
            .and_then(|bytes| read_counter(&bytes));
        let recorded = match std::fs::read(&file) {
            Ok(bytes) => Some(read_counter(&bytes).ok_or_else(|| StoreError::Corrupt {
                path: store_path.display().to_string(),
                detail: format!("{} is not a durability marker", file.display()),
            })?),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
            Err(err) => {
                return Err(StoreError::Io(format!(
                    "cannot read {}: {err}",
                    file.display()
                )))
            }
        };
        if let Some(recorded) = recorded {
            if recovered.unwrap_or(0) < recorded {
                return Err(StoreError::Corrupt {
                    path: store_path.display().to_string(),
                    detail: format!(
                        "sled recovered durability marker {} but {} records {recorded}: writes that were flushed are missing (a damaged log read as a torn tail). To start anyway with what is left, delete that file",
                        recovered.map_or("none".to_owned(), |value| value.to_string()),
                        file.display()
                    ),
                });
            }
        }
        Ok(DurabilityMarker {
            file,
            state: Mutex::new(MarkerState {
                next: recovered.unwrap_or(0).max(recorded.unwrap_or(0)) + 1,
                file_written_at: None,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MarkerState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Writes the next counter into the store; the caller flushes, then calls
    /// [`DurabilityMarker::flushed`] with it.
    pub(crate) fn stamp(&self, db: &sled::Db) -> Result<u64, StoreError> {
        // Inserted under the lock, so the store's last value is the highest counter handed
        // out (a shutdown flush may race the flusher thread's).
        let mut state = self.lock();
        let counter = state.next;
        db.insert(MARKER_KEY, &counter.to_be_bytes())
            .map_err(io_error)?;
        state.next += 1;
        Ok(counter)
    }

    /// The flush that covered `counter` completed: records it in the file when the last
    /// update is older than the interval, or always when `force` (shutdown).
    pub(crate) fn flushed(&self, counter: u64, force: bool) -> Result<(), StoreError> {
        let mut state = self.lock();
        let due = match state.file_written_at {
            None => true,
            Some(at) => at.elapsed() >= Duration::from_millis(MARKER_FILE_INTERVAL_MS),
        };
        if !(force || due) {
            return Ok(());
        }
        write_marker_file(&self.file, counter)?;
        state.file_written_at = Some(Instant::now());
        Ok(())
    }
}

/// Temporary file, fsync, rename: the file holds the old or the new counter, never a torn
/// one. (Without a directory fsync a power loss may bring the old one back: that only
/// weakens the check, it never refuses a good store.)
fn write_marker_file(file: &Path, counter: u64) -> Result<(), StoreError> {
    let temporary = file.with_extension("tmp");
    let failed =
        |err: std::io::Error| StoreError::Io(format!("cannot write {}: {err}", file.display()));
    let mut out = std::fs::File::create(&temporary).map_err(failed)?;
    out.write_all(&counter.to_be_bytes()).map_err(failed)?;
    out.sync_data().map_err(failed)?;
    drop(out);
    std::fs::rename(&temporary, file).map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(path: &Path) -> sled::Db {
        sled::Config::new().path(path).open().unwrap()
    }

    #[test]
    fn a_store_behind_its_marker_file_is_refused_and_an_equal_one_opens() {
        // Goal: the check refuses exactly when sled's counter is below the file's.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let db = open(&path);
        let marker = DurabilityMarker::check(&db, &path).unwrap();
        let first = marker.stamp(&db).unwrap();
        db.flush().unwrap();
        marker.flushed(first, true).unwrap();
        let second = marker.stamp(&db).unwrap();
        db.flush().unwrap();
        marker.flushed(second, true).unwrap();
        assert_eq!((first, second), (1, 2));
        // Equal: opens, and counts on from there.
        let reopened = DurabilityMarker::check(&db, &path).unwrap();
        assert_eq!(reopened.stamp(&db).unwrap(), 3);
        // The store forgets its later stamps (as a truncated log would): refused.
        db.insert(MARKER_KEY, &1u64.to_be_bytes()).unwrap();
        let refused = DurabilityMarker::check(&db, &path).err().expect("refused");
        let message = refused.to_string();
        assert!(message.contains("is corrupt"), "{message}");
        assert!(message.contains("records 2"), "{message}");
        assert!(message.contains(MARKER_FILE), "{message}");
        // The operator's way out: without the file the store opens.
        std::fs::remove_file(path.join(MARKER_FILE)).unwrap();
        assert!(DurabilityMarker::check(&db, &path).is_ok());
    }

    #[test]
    fn the_file_is_rewritten_at_most_once_an_interval_unless_forced() {
        // Goal: a busy store does not fsync the marker file on every flush.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let db = open(&path);
        let marker = DurabilityMarker::check(&db, &path).unwrap();
        let file = path.join(MARKER_FILE);
        marker.flushed(marker.stamp(&db).unwrap(), false).unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), 1u64.to_be_bytes());
        marker.flushed(marker.stamp(&db).unwrap(), false).unwrap();
        assert_eq!(
            std::fs::read(&file).unwrap(),
            1u64.to_be_bytes(),
            "not due yet"
        );
        marker.flushed(marker.stamp(&db).unwrap(), true).unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), 3u64.to_be_bytes(), "forced");
    }

    #[test]
    fn a_garbled_marker_file_is_refused() {
        // Goal: a marker file that is not 8 bytes is corruption, not "no marker".
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let db = open(&path);
        std::fs::write(path.join(MARKER_FILE), b"xyz").unwrap();
        let refused = DurabilityMarker::check(&db, &path).err().expect("refused");
        assert!(
            refused.to_string().contains("not a durability marker"),
            "{refused}"
        );
    }
}
