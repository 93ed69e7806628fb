//! Pollers' stored state (docs/polling.md): progress (the checkpoint, written with the
//! entries it covers), state (pauses, failures, the source's daily count), run reports, and
//! the parity of hybrid sources.
//!
//! These values are JSON (they grow fields without a migration; none is on a hot path), not
//! the bincode envelope of the queue's values.

use std::ops::Bound;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::keys::{prefix_end, section};
use super::{io_error, EnqueueOutcome, NewEntry, StoreError, TenantStore};

/// Run reports kept per poller (the oldest are dropped).
pub const POLL_RUNS_KEPT: usize = 50;
/// Rejections kept in one run report (the count is exact).
pub const REJECTIONS_KEPT: usize = 20;
/// Example ids kept per parity bucket.
pub const PARITY_EXAMPLES: usize = 20;

/// `(source version time in ms, record id)` of a record taken: checkpoints compare by both,
/// so records sharing one update time are ordered by id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PollMark {
    pub at_ms: u64,
    pub record_id: String,
}

/// A poller's progress: what is stored as its checkpoint (`poll:{source}`), written in the
/// same atomic store write as the entries of each page. The checkpoint itself moves when a
/// run completes; a run in progress keeps its cursor and high-water mark here.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PollProgress {
    /// The highest mark taken by the last completed run; `None` before the first.
    pub checkpoint: Option<PollMark>,
    /// The run in progress, if any: a restarted Capture resumes it from its cursor.
    pub run: Option<RunProgress>,
    /// The source's own position (a Postgres slot's LSN and snapshot progress), opaque
    /// here; kept across runs, cleared by a reset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<String>,
}

/// A run in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunProgress {
    /// The first page's `since_ms` (checkpoint time − overlap).
    pub since_ms: u64,
    /// Where the next page starts (`None`: the first page is still to be read).
    pub cursor: Option<String>,
    /// The highest mark this run has taken: the checkpoint once the run completes.
    #[serde(default)]
    pub high_water: Option<PollMark>,
    /// The run's report so far.
    pub report: RunReport,
}

/// Why a poller does not run on its own schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum PauseReason {
    /// `POST …/pollers/{source}/pause`.
    Operator,
    /// Three failed runs in a row (alert `poller_failed`).
    Failures,
    /// The source refused the credentials (alert `poller_auth_failed`).
    AuthRefused,
}

/// A poller's state besides its progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PollerState {
    pub paused: Option<PauseReason>,
    pub consecutive_failures: u32,
    /// The source's daily quota: calls counted since `quota_day_start_ms` (the last reset).
    pub quota_day_start_ms: u64,
    pub quota_calls: u64,
    /// The source said its quota is spent: no call before this time (its next reset).
    pub quota_wait_until_ms: Option<u64>,
    /// When the last run started (interval and daily schedules count from it).
    pub last_run_started_ms: Option<u64>,
    /// Runs started so far (the run reports' sequence).
    pub runs: u64,
}

/// One run's report (the last [`POLL_RUNS_KEPT`] are kept per poller).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    pub run: u64,
    pub started_at_ms: u64,
    pub finished_at_ms: Option<u64>,
    /// `running`, `completed`, `failed`, `auth_refused`, `paused` (an operator's pause ended
    /// it).
    pub outcome: String,
    /// Why it failed.
    pub error: Option<String>,
    /// Why it started: `schedule` or `operator` (a restarted Capture continues the same run).
    pub trigger: String,
    pub since_ms: u64,
    pub pages: u64,
    pub fetched: u64,
    /// Records never seen before.
    pub new: u64,
    /// Records seen before, in a version not seen before.
    pub changed: u64,
    /// Versions seen before (the overlap, or the other path of a hybrid source).
    pub unchanged: u64,
    pub rejected: u64,
    /// The first [`REJECTIONS_KEPT`] rejections.
    pub rejections: Vec<Rejection>,
    /// Calls made to the source.
    pub calls: u64,
    /// Throttled answers waited out, and waits for the daily quota's reset.
    pub throttled: u64,
    pub quota_waits: u64,
    /// The checkpoint when the run ended.
    pub checkpoint: Option<PollMark>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub record_id: String,
    pub reason: String,
}

/// Which path of a hybrid source captured a fact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CapturePath {
    Webhook,
    Poll,
}

impl CapturePath {
    pub fn name(self) -> &'static str {
        match self {
            CapturePath::Webhook => "webhook",
            CapturePath::Poll => "poll",
        }
    }
}

/// One captured fact of a hybrid source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParityFact {
    pub first: CapturePath,
    /// The other path saw it too.
    pub both: bool,
    pub record_id: String,
    pub first_at_ms: u64,
}

/// A fact one path just saw, for [`TenantStore::note_parity`].
#[derive(Debug, Clone)]
pub struct SeenFact<'a> {
    pub idempotency_key: &'a str,
    pub record_id: &'a str,
    /// The enqueue wrote it (first sighting) rather than finding a duplicate.
    pub queued: bool,
}

/// What [`TenantStore::note_parity`] changed, for the metric.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParityNoted {
    /// Facts first seen now.
    pub first_seen: u64,
    /// Facts the other path had seen first.
    pub confirmed_by_other: u64,
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|err| StoreError::Codec(format!("poll state: {err}")))
}

fn from_json<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|err| StoreError::Codec(format!("{what}: {err}")))
}

fn hour_of(at_ms: u64) -> u64 {
    at_ms / 3_600_000
}

/// The checkpoint name of a poller.
pub fn progress_name(source: &str) -> String {
    format!("poll:{source}")
}

impl TenantStore {
    /// A poller's progress (its checkpoint).
    pub fn poll_progress(&self, source: &str) -> Result<PollProgress, StoreError> {
        match self.get_checkpoint(&progress_name(source))? {
            Some(bytes) => from_json("poll progress", &bytes),
            None => Ok(PollProgress::default()),
        }
    }

    /// Stores a poller's progress on its own (a run starting or ending, an operator's reset).
    pub fn put_poll_progress(
        &self,
        source: &str,
        progress: &PollProgress,
    ) -> Result<(), StoreError> {
        self.put_checkpoint(&progress_name(source), &to_json(progress)?)
    }

    /// Enqueues a page's entries and stores the poller's progress in the same atomic write:
    /// a crash repeats a page, never skips one.
    pub fn enqueue_page(
        &self,
        source: &str,
        entries: Vec<NewEntry>,
        progress: &PollProgress,
    ) -> Result<Vec<EnqueueOutcome>, StoreError> {
        self.enqueue_with_checkpoint(entries, &progress_name(source), &to_json(progress)?)
    }

    pub fn poller_state(&self, source: &str) -> Result<PollerState, StoreError> {
        let inner = self.inner();
        inner.settle()?;
        match inner
            .tree
            .get(inner.keys.text_key(section::POLLER, source))
            .map_err(io_error)?
        {
            Some(bytes) => from_json("poller state", &bytes),
            None => Ok(PollerState::default()),
        }
    }

    pub fn put_poller_state(&self, source: &str, state: &PollerState) -> Result<(), StoreError> {
        let inner = self.inner();
        let _guard = inner.lock_for_write()?;
        inner
            .tree
            .insert(
                inner.keys.text_key(section::POLLER, source),
                to_json(state)?,
            )
            .map_err(io_error)?;
        Ok(())
    }

    /// Stores a finished run's report and drops reports beyond the last [`POLL_RUNS_KEPT`].
    pub fn put_poll_run(&self, source: &str, report: &RunReport) -> Result<(), StoreError> {
        let inner = self.inner();
        let _guard = inner.lock_for_write()?;
        let key = inner
            .keys
            .source_key(section::POLL_RUN, source, &report.run.to_be_bytes());
        inner.tree.insert(key, to_json(report)?).map_err(io_error)?;
        let prefix = inner.keys.source_key(section::POLL_RUN, source, &[]);
        let keys: Vec<sled::IVec> = inner
            .tree
            .scan_prefix(&prefix)
            .keys()
            .collect::<Result<_, _>>()
            .map_err(io_error)?;
        for old in keys.iter().take(keys.len().saturating_sub(POLL_RUNS_KEPT)) {
            inner.tree.remove(old).map_err(io_error)?;
        }
        Ok(())
    }

    /// A poller's run reports, newest first, at most `limit`.
    pub fn poll_runs(&self, source: &str, limit: usize) -> Result<Vec<RunReport>, StoreError> {
        let inner = self.inner();
        inner.settle()?;
        let prefix = inner.keys.source_key(section::POLL_RUN, source, &[]);
        inner
            .tree
            .scan_prefix(&prefix)
            .values()
            .rev()
            .take(limit)
            .map(|value| from_json("run report", &value.map_err(io_error)?))
            .collect()
    }

    /// Records which path saw each fact: a fact first seen is stored under the hour of
    /// `now_ms`; a fact seen again by the other path is marked `both`. Facts whose first
    /// sighting was not recorded (captured before the source was hybrid) are left alone.
    pub fn note_parity(
        &self,
        source: &str,
        path: CapturePath,
        facts: &[SeenFact<'_>],
        now_ms: u64,
    ) -> Result<ParityNoted, StoreError> {
        let inner = self.inner();
        let _guard = inner.lock_for_write()?;
        let mut noted = ParityNoted::default();
        let mut batch = sled::Batch::default();
        for fact in facts {
            let index_key = inner
                .keys
                .text_key(section::PARITY_INDEX, fact.idempotency_key);
            let indexed = inner.tree.get(&index_key).map_err(io_error)?;
            match indexed {
                None if fact.queued => {
                    let hour = hour_of(now_ms);
                    let entry = ParityFact {
                        first: path,
                        both: false,
                        record_id: fact.record_id.to_string(),
                        first_at_ms: now_ms,
                    };
                    batch.insert(
                        parity_key(inner, source, hour, fact.idempotency_key),
                        to_json(&entry)?,
                    );
                    batch.insert(index_key, hour.to_be_bytes().to_vec());
                    noted.first_seen += 1;
                }
                None => {}
                Some(hour_bytes) => {
                    let Ok(hour) = <[u8; 8]>::try_from(hour_bytes.as_ref()) else {
                        continue;
                    };
                    let key = parity_key(
                        inner,
                        source,
                        u64::from_be_bytes(hour),
                        fact.idempotency_key,
                    );
                    let Some(bytes) = inner.tree.get(&key).map_err(io_error)? else {
                        continue;
                    };
                    let mut entry: ParityFact = from_json("parity fact", &bytes)?;
                    if entry.first != path && !entry.both {
                        entry.both = true;
                        batch.insert(key, to_json(&entry)?);
                        noted.confirmed_by_other += 1;
                    }
                }
            }
        }
        inner.tree.apply_batch(batch).map_err(io_error)?;
        Ok(noted)
    }

    /// The parity facts of `source` first seen in `[from_ms, to_ms)`, oldest hour first.
    pub fn parity_facts(
        &self,
        source: &str,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<ParityFact>, StoreError> {
        let inner = self.inner();
        inner.settle()?;
        let start = inner
            .keys
            .source_key(section::PARITY, source, &hour_of(from_ms).to_be_bytes());
        let prefix = inner.keys.source_key(section::PARITY, source, &[]);
        let end = prefix_end(&prefix).map_or(Bound::Unbounded, Bound::Excluded);
        let mut facts = Vec::new();
        for item in inner
            .tree
            .range::<Vec<u8>, _>((Bound::Included(start), end))
        {
            let (_, value) = item.map_err(io_error)?;
            let fact: ParityFact = from_json("parity fact", &value)?;
            if fact.first_at_ms >= to_ms {
                // Hours are in key order: the first fact past the range ends it (within an
                // hour, facts are ordered by key, so finish the hour).
                if hour_of(fact.first_at_ms) > hour_of(to_ms) {
                    break;
                }
                continue;
            }
            if fact.first_at_ms >= from_ms {
                facts.push(fact);
            }
        }
        Ok(facts)
    }
}

fn parity_key(inner: &super::tenant::TenantInner, source: &str, hour: u64, key: &str) -> Vec<u8> {
    let mut tail = Vec::with_capacity(9 + key.len());
    tail.extend_from_slice(&hour.to_be_bytes());
    tail.push(0);
    tail.extend_from_slice(key.as_bytes());
    inner.keys.source_key(section::PARITY, source, &tail)
}
