//! The `ndjson` destination: one JSON object a line, in files a BI loader picks up
//! (docs/pull.md "NDJSON files").
//!
//! Lines are appended to a hidden partial file `{dir}/.steward-{name}.partial` and answered
//! "not committed yet". Once the partial file reaches `rotate_bytes` (checked after a
//! delivery) or `rotate_s` of age (after a delivery or at `settle`), it is finished
//! atomically — fsync the file, rename it to `{dir}/{name}-{first_seq:020}-{last_seq:020}.ndjson`,
//! fsync the directory — and only then is its last sequence number answered as committed.
//! A loader therefore never sees a half file under a final name. `reset` (and the first use
//! after a start) deletes the partial file: the delivery loop sends its lines again from
//! the checkpoint. File work runs on tokio's blocking pool, off the tenant's arbiter.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use steward_actors::ports::Destination;
use steward_actors::ports::LocalFuture;
use steward_actors::pull::{DeliveryAnswer, StoredChange};

use crate::tenant::NdjsonDestinationDoc;

/// A directory of NDJSON files.
pub struct NdjsonDestination {
    inner: Arc<Inner>,
}

struct Inner {
    tenant_id: String,
    name: String,
    dir: PathBuf,
    rotate_bytes: u64,
    rotate_ms: u64,
    /// Calls never overlap; the lock is taken by the blocking task doing the file work.
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// A leftover partial file of an earlier run was removed (first use).
    started: bool,
    partial: Option<Partial>,
}

/// The file being filled.
struct Partial {
    file: File,
    first_seq: u64,
    last_seq: u64,
    bytes: u64,
    opened_at_ms: u64,
}

/// The final name of a file holding `first_seq..=last_seq` (sortable: zero-padded).
pub fn file_name(name: &str, first_seq: u64, last_seq: u64) -> String {
    format!("{name}-{first_seq:020}-{last_seq:020}.ndjson")
}

/// The hidden name lines are appended under until the file is finished.
pub fn partial_name(name: &str) -> String {
    format!(".steward-{name}.partial")
}

/// One line (with its newline) of a change.
pub fn line(change: &StoredChange) -> String {
    let mut line = super::change_json(change).to_string();
    line.push('\n');
    line
}

impl NdjsonDestination {
    pub fn new(tenant_id: &str, name: &str, settings: &NdjsonDestinationDoc) -> NdjsonDestination {
        NdjsonDestination {
            inner: Arc::new(Inner {
                tenant_id: tenant_id.to_string(),
                name: name.to_string(),
                dir: PathBuf::from(&settings.dir),
                rotate_bytes: settings.rotate_bytes.max(1),
                rotate_ms: settings.rotate_s.saturating_mul(1_000),
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// Runs `work` on the blocking pool with the state locked.
    fn blocking<T: Send + 'static>(
        &self,
        fallback: T,
        work: impl FnOnce(&Inner, &mut State) -> T + Send + 'static,
    ) -> LocalFuture<T> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            let joined = tokio::task::spawn_blocking(move || {
                let mut state = inner
                    .state
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                work(&inner, &mut state)
            })
            .await;
            joined.unwrap_or(fallback)
        })
    }
}

impl Destination for NdjsonDestination {
    fn deliver(&self, items: Vec<StoredChange>) -> LocalFuture<DeliveryAnswer> {
        self.blocking(
            DeliveryAnswer::retry("the file task failed"),
            move |inner, state| inner.deliver(state, &items),
        )
    }

    fn settle(&self, now_ms: u64) -> LocalFuture<DeliveryAnswer> {
        self.blocking(
            DeliveryAnswer::retry("the file task failed"),
            move |inner, state| {
                inner.start_once(state);
                match state.partial.as_ref() {
                    Some(partial) if inner.rotation_is_due(partial, now_ms) => inner.finish(state),
                    _ => DeliveryAnswer::default(),
                }
            },
        )
    }

    fn reset(&self) -> LocalFuture<()> {
        self.blocking((), |inner, state| inner.drop_partial(state))
    }
}

impl Inner {
    fn partial_path(&self) -> PathBuf {
        self.dir.join(partial_name(&self.name))
    }

    fn rotation_is_due(&self, partial: &Partial, now_ms: u64) -> bool {
        partial.bytes >= self.rotate_bytes
            || now_ms.saturating_sub(partial.opened_at_ms) >= self.rotate_ms
    }

    /// At first use: a partial file of an earlier run holds nothing committed (its lines
    /// come again from the checkpoint): remove it.
    fn start_once(&self, state: &mut State) {
        if !state.started {
            self.drop_partial(state);
            state.started = true;
        }
    }

    fn deliver(&self, state: &mut State, items: &[StoredChange]) -> DeliveryAnswer {
        self.start_once(state);
        match self.append(state, items) {
            Ok(()) => {}
            Err(err) => {
                self.drop_partial(state);
                return DeliveryAnswer::retry(format!(
                    "writing {} failed: {err}",
                    self.partial_path().display()
                ));
            }
        }
        let now_ms = steward_actors::ports::now_ms();
        match state.partial.as_ref() {
            Some(partial) if self.rotation_is_due(partial, now_ms) => self.finish(state),
            _ => DeliveryAnswer::default(),
        }
    }

    /// Appends the items the partial file does not hold yet (a redelivery without a reset
    /// is skipped, so a file never holds a change twice).
    fn append(&self, state: &mut State, items: &[StoredChange]) -> std::io::Result<()> {
        let after = state.partial.as_ref().map(|partial| partial.last_seq);
        let fresh: Vec<&StoredChange> = items
            .iter()
            .filter(|change| after.map_or(true, |last| change.seq > last))
            .collect();
        let (Some(first), Some(last)) = (fresh.first(), fresh.last()) else {
            return Ok(());
        };
        if state.partial.is_none() {
            if !self.dir.is_dir() {
                std::fs::create_dir_all(&self.dir)?;
                // The new directory's own entry must survive a crash too (its first files
                // are finished before the checkpoint moves past them).
                if let Some(parent) = self.dir.parent() {
                    sync_dir(parent)?;
                }
            }
            let file = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(self.partial_path())?;
            state.partial = Some(Partial {
                file,
                first_seq: first.seq,
                last_seq: first.seq,
                bytes: 0,
                opened_at_ms: steward_actors::ports::now_ms(),
            });
        }
        let text: String = fresh.iter().map(|change| line(change)).collect();
        let Some(partial) = state.partial.as_mut() else {
            return Ok(());
        };
        partial.file.write_all(text.as_bytes())?;
        partial.bytes += text.len() as u64;
        partial.last_seq = last.seq;
        Ok(())
    }

    /// fsync, rename to the final name, fsync the directory; then the file's last sequence
    /// number is committed.
    fn finish(&self, state: &mut State) -> DeliveryAnswer {
        let Some(partial) = state.partial.take() else {
            return DeliveryAnswer::default();
        };
        let final_path = self
            .dir
            .join(file_name(&self.name, partial.first_seq, partial.last_seq));
        let finished = partial
            .file
            .sync_all()
            .and_then(|()| std::fs::rename(self.partial_path(), &final_path))
            .and_then(|()| sync_dir(&self.dir));
        match finished {
            Ok(()) => DeliveryAnswer::committed(partial.last_seq),
            Err(err) => {
                tracing::warn!(tenant_id = %self.tenant_id, destination = %self.name, error = %err, "an NDJSON file could not be finished; its changes come again");
                self.drop_partial(state);
                DeliveryAnswer::retry(format!("finishing {} failed: {err}", final_path.display()))
            }
        }
    }

    fn drop_partial(&self, state: &mut State) {
        state.partial = None;
        match std::fs::remove_file(self.partial_path()) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                tracing::warn!(tenant_id = %self.tenant_id, destination = %self.name, error = %err, "the NDJSON partial file could not be removed")
            }
        }
    }
}

/// Makes a rename durable: fsync the directory that holds it.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}
