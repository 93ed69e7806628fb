//! The process alert `disk_nearly_full`: the data dir's filesystem is looked at every
//! [`DISK_CHECK_INTERVAL`]; under `alerts.disk_free_min_pct` percent free the alert opens,
//! back at or above it the alert resolves. A full disk fails the store's writes (the store
//! then refuses every write until a restart: `store_failed`), so this is the warning before.

use std::path::{Path, PathBuf};
use std::time::Duration;

use steward_actors::alerting::DISK_NEARLY_FULL_ALERT;
use steward_actors::ports::now_ms;
use steward_actors::store::Store;

/// How often the disk is looked at.
pub const DISK_CHECK_INTERVAL: Duration = Duration::from_secs(60);

/// Space on a filesystem, as an unprivileged process may use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSpace {
    pub free_bytes: u64,
    pub total_bytes: u64,
}

impl DiskSpace {
    /// The filesystem holding `path` (`statvfs`).
    pub fn of(path: &Path) -> std::io::Result<DiskSpace> {
        use std::os::unix::ffi::OsStrExt;
        let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::other("a path with a NUL byte"))?;
        // SAFETY: statvfs(3) writes into the zeroed struct we own; the path is NUL-terminated.
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let block = stat.f_frsize as u64;
        Ok(DiskSpace {
            free_bytes: (stat.f_bavail as u64).saturating_mul(block),
            total_bytes: (stat.f_blocks as u64).saturating_mul(block),
        })
    }

    /// The alert's message when less than `min_free_pct` percent is free; `None` otherwise.
    pub fn nearly_full(self, min_free_pct: u8, path: &Path) -> Option<String> {
        let free_pct = self.free_bytes as f64 * 100.0 / self.total_bytes.max(1) as f64;
        (free_pct < f64::from(min_free_pct)).then(|| {
            format!(
                "the data dir's filesystem ({}) has {free_pct:.1} % free ({} of {} MiB), under alerts.disk_free_min_pct = {min_free_pct}",
                path.display(),
                self.free_bytes >> 20,
                self.total_bytes >> 20,
            )
        })
    }
}

/// Looks at the data dir's disk now and every [`DISK_CHECK_INTERVAL`] (on the current
/// arbiter), raising or resolving `disk_nearly_full`.
pub fn spawn_disk_watch(store: Store, data_dir: PathBuf, min_free_pct: u8) {
    actix_rt::spawn(async move {
        let mut interval = actix_rt::time::interval(DISK_CHECK_INTERVAL);
        loop {
            interval.tick().await;
            check_disk(&store, &data_dir, min_free_pct);
        }
    });
}

fn check_disk(store: &Store, data_dir: &Path, min_free_pct: u8) {
    let space = match DiskSpace::of(data_dir) {
        Ok(space) => space,
        Err(error) => {
            tracing::warn!(data_dir = %data_dir.display(), error = %error, "free disk space could not be read");
            return;
        }
    };
    let changed = match space.nearly_full(min_free_pct, data_dir) {
        Some(message) => store
            .raise_process_alert(DISK_NEARLY_FULL_ALERT, &message, now_ms())
            .map(|opened| {
                if opened {
                    tracing::error!(alert = DISK_NEARLY_FULL_ALERT, "{}", message.escape_debug());
                }
            }),
        None => store
            .resolve_process_alert(DISK_NEARLY_FULL_ALERT, now_ms())
            .map(|resolved| {
                if resolved {
                    tracing::info!(alert = DISK_NEARLY_FULL_ALERT, "alert resolved");
                }
            }),
    };
    if let Err(error) = changed {
        tracing::warn!(alert = DISK_NEARLY_FULL_ALERT, error = %error, "process alert could not be stored");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearly_full_below_the_threshold_only() {
        // Goal: 4 % free with a 5 % threshold opens (the message names the key and the dir);
        // 5 % free does not; a threshold of 0 never opens; the data dir's real disk reads.
        let space = |free_bytes| DiskSpace {
            free_bytes,
            total_bytes: 100 << 20,
        };
        let dir = Path::new("/var/lib/steward");
        let message = space(4 << 20).nearly_full(5, dir).unwrap();
        assert!(
            message.contains("4.0 % free")
                && message.contains("alerts.disk_free_min_pct")
                && message.contains("/var/lib/steward"),
            "{message}"
        );
        assert_eq!(space(5 << 20).nearly_full(5, dir), None);
        assert_eq!(space(0).nearly_full(0, dir), None);
        let real = DiskSpace::of(&std::env::temp_dir()).unwrap();
        assert!(
            real.total_bytes > 0 && real.free_bytes <= real.total_bytes,
            "{real:?}"
        );
    }
}
