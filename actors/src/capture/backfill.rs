//! Capture's backfill jobs (docs/backfill.md): the dry run, then the real run, a chunk at a
//! time, through the same store write as every other source fact.
//!
//! - Every write of a job document happens here, one at a time: operators' commands
//!   ([`BackfillCommand`]), the dry run's progress, each chunk of the real run and the
//!   recount of its entries.
//! - **Dry run** (`validating`): the file is read with the same reader and classifier as the
//!   real run ([`crate::backfill::BackfillFiles`]); rows are counted ([`count_row`]), rejects
//!   stored, nothing queued. At the end the job is `ready` with its call estimate.
//! - **Real run** (`running`): while the `backfill` lane holds fewer than [`FEED_WINDOW`]
//!   entries, the next [`CHUNK_ROWS`] rows are read (off the actor's thread), their entries
//!   put in the `backfill` lane and the job's cursor and counts stored **in the same atomic
//!   write** (`TenantStore::enqueue_backfill_chunk`); the next chunk waits for that write to
//!   be durable. A crash repeats a chunk (its entries are then duplicates by their
//!   idempotency keys), never skips one, and a restarted Capture reopens the file at the
//!   stored cursor. The lane's window keeps live entries ahead of history and lets pause and
//!   cancel take effect within a few calls.
//! - **Recount**: every [`RECOUNT_EVERY_MS`] the job's indexed entries are looked up in their
//!   records (off the actor's thread): submitted, confirmed, dead. A job whose rows are all
//!   read and whose entries all left the queue is `done`; its confirmations keep being
//!   counted after that.
//!
//! Nothing is trusted to memory: the open reader is a cache of the stored cursor.

// Size: ~690 lines — one job loop with its commands; the recount (`maybe_recount`,
// `apply_recount`, ~110 lines) is the part to move to a file of its own next time.

use actix::{
    fut, ActorFutureExt, AsyncContext, Context, Handler, ResponseActFuture, SpawnHandle, WrapFuture,
};

use super::CaptureActor;
use crate::backfill::{
    calls_needed, count_row, transition, BackfillAction, BackfillCommand, BackfillCommandError,
    BackfillJob, ClassifiedRow, Cursor, JobState, RejectedRow, RowChunk, RowOutcome, RowReader,
};
use crate::metrics::{BACKFILL_ENTRIES_QUEUED_TOTAL, BACKFILL_ROWS_TOTAL, LABEL_OUTCOME};
use crate::store::backfill_ops::BackfillRecount;
use crate::store::types::RecordRef;
use crate::store::{EnqueueOutcome, Lane, StoreError, TenantStore};

/// Rows read per chunk of the real run.
pub const CHUNK_ROWS: usize = 200;
/// Rows read per chunk of the dry run (nothing is queued: larger chunks, fewer writes of the
/// job's progress).
pub const DRY_RUN_CHUNK_ROWS: usize = 2_000;
pub use crate::backfill::FEED_WINDOW;
/// How often a running job's entries are recounted from their records.
pub const RECOUNT_EVERY_MS: u64 = 2_000;
/// How often a finished job's confirmations are recounted until all are confirmed.
const RECOUNT_DONE_EVERY_MS: u64 = 10_000;
/// Wait when the lane is full, the adapter is not set yet, or the store failed.
pub(super) const RECHECK_MS: u64 = 250;

/// What a reader was opened for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Purpose {
    DryRun,
    Run,
}

impl Purpose {
    /// Where the job's reader for this purpose stands.
    pub(super) fn cursor_of(self, job: &BackfillJob) -> &Cursor {
        match self {
            Purpose::DryRun => &job.dry_run.cursor,
            Purpose::Run => &job.cursor,
        }
    }
}

struct OpenReader {
    job_id: String,
    purpose: Purpose,
    /// Where the reader stands (the next chunk starts here).
    at: Cursor,
    reader: Box<dyn RowReader>,
}

/// Capture's backfill state: caches and timers only.
#[derive(Default)]
pub struct BackfillRuntime {
    reader: Option<OpenReader>,
    /// A chunk is being read or written.
    pub(super) busy: bool,
    timer: Option<SpawnHandle>,
    recounting: bool,
    /// A listing job's page reads that failed in a row (job id, count).
    pub(super) listing_failures: Option<(String, u32)>,
    last_recount_ms: u64,
    last_done_recount_ms: u64,
}

impl BackfillRuntime {
    /// A chunk is in progress (status).
    pub fn busy(&self) -> bool {
        self.busy
    }
}

/// A chunk read off the actor's thread, with whether each row's entries are known.
struct ReadChunk {
    reader: Box<dyn RowReader>,
    chunk: Result<RowChunk, String>,
    /// Per row, per entry: the store already has it.
    known: Vec<Vec<bool>>,
}

fn read_chunk(mut reader: Box<dyn RowReader>, store: TenantStore, rows: usize) -> ReadChunk {
    let chunk = reader.read(rows);
    let known = match &chunk {
        Ok(chunk) => chunk
            .rows
            .iter()
            .map(|row| match &row.outcome {
                RowOutcome::Payment { entries, .. } => entries
                    .iter()
                    .map(|entry| store.is_known(&entry.fact).unwrap_or(false))
                    .collect(),
                _ => Vec::new(),
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    ReadChunk {
        reader,
        chunk,
        known,
    }
}

/// A payment is known when its first entry (the gift) is.
fn payment_known(known: &[bool]) -> bool {
    known.first().copied().unwrap_or(false)
}

impl CaptureActor {
    fn backfill_store(&self) -> TenantStore {
        self.core.shared.tenant_store().clone()
    }

    /// Looks at the jobs and does the next step (a command, a finished chunk and the timer
    /// call it).
    pub(super) fn backfill_wake(&mut self, ctx: &mut Context<Self>) {
        if let Some(timer) = self.behavior.backfills.timer.take() {
            ctx.cancel_future(timer);
        }
        if !self.may_act(ctx) || self.behavior.backfills.busy {
            return;
        }
        let store = self.backfill_store();
        let jobs = match store.backfill_jobs::<BackfillJob>() {
            Ok(jobs) => jobs,
            Err(error) => {
                tracing::warn!(tenant_id = %store.tenant_id(), error = %error, "backfill jobs unreadable");
                self.backfill_later(RECHECK_MS, ctx);
                return;
            }
        };
        let now_ms = self.core.shared.clock.now_ms();
        self.maybe_recount(&jobs, now_ms, ctx);
        let mut jobs = jobs;
        jobs.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
        let validating = jobs.iter().find(|job| job.state == JobState::Validating);
        let running = jobs
            .iter()
            .find(|job| job.state == JobState::Running && !job.progress.read_complete);
        // Short batches wait to be filled only behind a file, which reads on at once; a
        // listing may wait on its source (a quota's reset) for hours.
        let feeding = running.is_some_and(|job| job.spec.listing.is_none());
        let was_feeding = self
            .core
            .shared
            .backfill_feeding
            .swap(feeding, std::sync::atomic::Ordering::AcqRel);
        if was_feeding && !feeding {
            // The last short batch of backfill gifts may go now.
            self.behavior_hint(1);
        }
        let depth = store.lane_stats()[Lane::Backfill as usize].1.depth;
        // A running job's feed first (its entries wait on it), then a dry run's step.
        if let Some(job) = running.filter(|_| depth < FEED_WINDOW) {
            self.backfill_step(job.clone(), Purpose::Run, ctx);
        } else if let Some(job) = validating {
            self.backfill_step(job.clone(), Purpose::DryRun, ctx);
        } else if running.is_some() {
            self.backfill_later(RECHECK_MS, ctx);
        } else if jobs.iter().any(recount_wanted) {
            self.backfill_later(RECOUNT_EVERY_MS, ctx);
        }
    }

    pub(super) fn backfill_later(&mut self, delay_ms: u64, ctx: &mut Context<Self>) {
        if let Some(timer) = self.behavior.backfills.timer.take() {
            ctx.cancel_future(timer);
        }
        let handle = ctx.run_later(
            std::time::Duration::from_millis(delay_ms),
            |capture, ctx| {
                capture.behavior.backfills.timer = None;
                capture.backfill_wake(ctx);
            },
        );
        self.behavior.backfills.timer = Some(handle);
    }

    /// Reads the next chunk of `job` for `purpose` off the actor's thread (a listing job's
    /// next page: `backfill_listing.rs`).
    fn backfill_step(&mut self, job: BackfillJob, purpose: Purpose, ctx: &mut Context<Self>) {
        if job.spec.listing.is_some() {
            return self.listing_step(job, purpose, ctx);
        }
        let at = purpose.cursor_of(&job).clone();
        let cached = self
            .behavior
            .backfills
            .reader
            .take()
            .filter(|open| open.job_id == job.id && open.purpose == purpose && open.at == at);
        let reader = match cached {
            Some(open) => open.reader,
            None => {
                let Some(files) = self.core.shared.backfill_files() else {
                    self.backfill_later(RECHECK_MS, ctx);
                    return;
                };
                match files.open(&job.id, &job.spec, at) {
                    Ok(reader) => reader,
                    Err(message) => {
                        self.backfill_failed(job, message, ctx);
                        return;
                    }
                }
            }
        };
        let rows = match purpose {
            Purpose::DryRun => DRY_RUN_CHUNK_ROWS,
            Purpose::Run => CHUNK_ROWS,
        };
        self.read_off_thread(job, purpose, reader, rows, ctx);
    }

    /// Reads `rows` rows from `reader` and looks their entries up in the store, off the
    /// actor's thread; the chunk then goes to [`Self::chunk_read`].
    pub(super) fn read_off_thread(
        &mut self,
        job: BackfillJob,
        purpose: Purpose,
        reader: Box<dyn RowReader>,
        rows: usize,
        ctx: &mut Context<Self>,
    ) {
        self.behavior.backfills.busy = true;
        let store = self.backfill_store();
        let read = tokio::task::spawn_blocking(move || read_chunk(reader, store, rows));
        ctx.spawn(read.into_actor(self).map(move |read, capture, ctx| {
            capture.behavior.backfills.busy = false;
            match read {
                Ok(read) => capture.chunk_read(job.id, purpose, read, ctx),
                Err(join_error) => {
                    // The reader panicked: its state is lost; the job fails with the reason.
                    capture.backfill_failed(
                        job,
                        format!("the file reader failed: {join_error}"),
                        ctx,
                    );
                }
            }
        }));
    }

    pub(super) fn backfill_failed(
        &mut self,
        job: BackfillJob,
        message: String,
        ctx: &mut Context<Self>,
    ) {
        let store = self.backfill_store();
        // As the store has it now: an operator's command since the read stands.
        let mut job = match store.backfill_job::<BackfillJob>(&job.id) {
            Ok(Some(current)) if !current.state.is_final() => current,
            _ => job,
        };
        if job.state.is_final() {
            return self.backfill_later(RECHECK_MS, ctx);
        }
        tracing::error!(tenant_id = %store.tenant_id(), job = %job.id, error = %message, "backfill failed");
        let now_ms = self.core.shared.clock.now_ms();
        // A run that cannot go on (its file, or the tenant's settings it maps with, changed)
        // pauses with the reason: an operator can fix and resume it. A dry run fails.
        if matches!(job.state, JobState::Running | JobState::Paused) {
            job.state = JobState::Paused;
        } else {
            job.state = JobState::Failed;
            job.finished_at_ms = Some(now_ms);
        }
        job.error = Some(message);
        job.updated_at_ms = now_ms;
        if let Err(error) = store.put_backfill_job(&job.id, &job) {
            tracing::warn!(tenant_id = %store.tenant_id(), error = %error, "backfill job write failed");
        }
        self.backfill_later(RECHECK_MS, ctx);
    }

    /// A chunk came back: count it (dry run) or queue it (real run) against the job as the
    /// store has it now (a command may have changed it meanwhile).
    fn chunk_read(
        &mut self,
        job_id: String,
        purpose: Purpose,
        read: ReadChunk,
        ctx: &mut Context<Self>,
    ) {
        let store = self.backfill_store();
        let ReadChunk {
            reader,
            chunk,
            known,
        } = read;
        let job = match store.backfill_job::<BackfillJob>(&job_id) {
            Ok(Some(job)) => job,
            Ok(None) => return self.backfill_wake(ctx),
            Err(error) => {
                tracing::warn!(tenant_id = %store.tenant_id(), error = %error, "backfill job unreadable");
                return self.backfill_later(RECHECK_MS, ctx);
            }
        };
        let wanted = match purpose {
            Purpose::DryRun => JobState::Validating,
            Purpose::Run => JobState::Running,
        };
        if job.state != wanted {
            return self.backfill_wake(ctx);
        }
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(message) => return self.backfill_failed(job, message, ctx),
        };
        let next = chunk.next.clone();
        let end = chunk.end;
        // A listing's reader holds one fetched page: nothing to keep open.
        let file_job = job.spec.listing.is_none();
        let written = match purpose {
            Purpose::DryRun => self.dry_run_chunk(job, chunk, &known).map(|()| 0),
            Purpose::Run => self.run_chunk(job, chunk, &known),
        };
        match written {
            Ok(queued) => {
                if !end && file_job {
                    self.behavior.backfills.reader = Some(OpenReader {
                        job_id,
                        purpose,
                        at: next,
                        reader,
                    });
                }
                match purpose {
                    // Nothing queued: no flush to wait for before the next chunk.
                    Purpose::DryRun => self.backfill_later(0, ctx),
                    Purpose::Run => self.after_chunk(queued, ctx),
                }
            }
            Err(error) => {
                tracing::warn!(tenant_id = %store.tenant_id(), error = %error, "backfill chunk write failed");
                self.backfill_later(RECHECK_MS, ctx);
            }
        }
    }

    fn dry_run_chunk(
        &mut self,
        mut job: BackfillJob,
        chunk: RowChunk,
        known: &[Vec<bool>],
    ) -> Result<(), StoreError> {
        let store = self.backfill_store();
        let mut rejects = Vec::new();
        for (at, row) in chunk.rows.iter().enumerate() {
            let row_known = known.get(at).is_some_and(|known| payment_known(known));
            count_row(&mut job.dry_run.counts, &row.outcome, row_known);
            count_metric("dry_run", &row.outcome);
            if let RowOutcome::Rejected { reason } = &row.outcome {
                rejects.push(RejectedRow {
                    row: row.row,
                    reason: reason.clone(),
                });
            }
        }
        store.put_backfill_rejects(&job.id, &rejects)?;
        job.dry_run.cursor = chunk.next.clone();
        job.updated_at_ms = self.core.shared.clock.now_ms();
        if chunk.end {
            job.dry_run.complete = true;
            job.dry_run.calls_needed = calls_needed(&job.dry_run.counts);
            job.state = JobState::Ready;
            tracing::info!(tenant_id = %store.tenant_id(), job = %job.id, rows = job.dry_run.counts.rows, calls = job.dry_run.calls_needed, "backfill dry run done");
        }
        store.put_backfill_job(&job.id, &job)
    }

    /// Queues a chunk's entries with the job's new cursor and counts in one atomic write;
    /// returns how many entries were queued.
    fn run_chunk(
        &mut self,
        mut job: BackfillJob,
        chunk: RowChunk,
        known: &[Vec<bool>],
    ) -> Result<u64, StoreError> {
        let store = self.backfill_store();
        let now_ms = self.core.shared.clock.now_ms();
        let mut rejects = Vec::new();
        let mut index: Vec<(u64, u8, RecordRef)> = Vec::new();
        let mut alerts = Vec::new();
        let mut entries = Vec::new();
        let mut fresh = 0u64;
        for (at, ClassifiedRow { row, outcome }) in chunk.rows.into_iter().enumerate() {
            let row_known = known.get(at).map(Vec::as_slice).unwrap_or(&[]);
            count_row(&mut job.progress.counts, &outcome, payment_known(row_known));
            count_metric("run", &outcome);
            match outcome {
                RowOutcome::Payment {
                    entries: row_entries,
                    alerts: row_alerts,
                    money,
                } => {
                    if !payment_known(row_known) {
                        alerts.extend(row_alerts);
                        if let Some(money) = money {
                            widen_days(&mut job.progress, &money.day);
                        }
                    }
                    for (position, mut entry) in row_entries.into_iter().enumerate() {
                        let entry_known = row_known.get(position).copied().unwrap_or(false);
                        if !entry_known {
                            fresh += 1;
                            index.push((
                                row,
                                position.min(usize::from(u8::MAX)) as u8,
                                RecordRef {
                                    kind: entry.fact.kind,
                                    source: entry.fact.source.clone(),
                                    source_id: entry.fact.source_id.clone(),
                                },
                            ));
                        }
                        entry.fact.lane = Lane::Backfill;
                        entry.now_ms = now_ms;
                        entries.push(entry);
                    }
                }
                RowOutcome::Rejected { reason } => rejects.push(RejectedRow { row, reason }),
                RowOutcome::Skipped { .. } => {}
            }
        }
        store.put_backfill_rejects(&job.id, &rejects)?;
        store.put_backfill_rows(&job.id, &index)?;
        for alert in &alerts {
            super::commands::raise_alert(&store, alert, now_ms)?;
        }
        job.cursor = chunk.next.clone();
        job.progress.queued += fresh;
        job.updated_at_ms = now_ms;
        if chunk.end {
            job.progress.read_complete = true;
        }
        let outcomes = store.enqueue_backfill_chunk(&job.id, &job, entries)?;
        let queued = EnqueueOutcome::queued_in(&outcomes) as u64;
        metrics::counter!(BACKFILL_ENTRIES_QUEUED_TOTAL).increment(queued);
        self.count_enqueued(&outcomes);
        Ok(queued)
    }

    /// After a chunk's write: wait for it to be durable, hint the submitter, go on.
    fn after_chunk(&mut self, queued: u64, ctx: &mut Context<Self>) {
        self.behavior.backfills.busy = true;
        self.behavior.counters.flushes_awaited += 1;
        let store = self.core.shared.store().clone();
        ctx.spawn(async move { store.durable().await }.into_actor(self).map(
            move |flushed, capture, ctx| {
                capture.flush_answered(ctx);
                capture.behavior.backfills.busy = false;
                if let Err(error) = flushed {
                    tracing::warn!(tenant_id = %capture.core.shared.tenant_id, error = %error, "backfill chunk flush failed");
                    capture.behavior.backfills.reader = None;
                    return capture.backfill_later(RECHECK_MS, ctx);
                }
                if queued > 0 {
                    capture.behavior_hint(queued);
                }
                // Yield to the mailbox between chunks: live enqueues go first.
                capture.backfill_later(0, ctx);
            },
        ));
    }

    /// Recounts the entries of jobs that want it, off the actor's thread.
    fn maybe_recount(&mut self, jobs: &[BackfillJob], now_ms: u64, ctx: &mut Context<Self>) {
        let runtime = &mut self.behavior.backfills;
        if runtime.recounting {
            return;
        }
        let active_due = now_ms.saturating_sub(runtime.last_recount_ms) >= RECOUNT_EVERY_MS;
        let done_due = now_ms.saturating_sub(runtime.last_done_recount_ms) >= RECOUNT_DONE_EVERY_MS;
        let due: Vec<String> = jobs
            .iter()
            .filter(|job| recount_wanted(job))
            .filter(|job| {
                if job.state == JobState::Running || job.state == JobState::Paused {
                    active_due
                } else {
                    done_due
                }
            })
            .map(|job| job.id.clone())
            .collect();
        if due.is_empty() {
            return;
        }
        runtime.recounting = true;
        if active_due {
            runtime.last_recount_ms = now_ms;
        }
        if done_due {
            runtime.last_done_recount_ms = now_ms;
        }
        let store = self.backfill_store();
        let recount = tokio::task::spawn_blocking(move || {
            due.into_iter()
                .map(|id| {
                    let recount = store.backfill_recount(&id);
                    (id, recount)
                })
                .collect::<Vec<_>>()
        });
        ctx.spawn(recount.into_actor(self).map(|recounts, capture, ctx| {
            capture.behavior.backfills.recounting = false;
            let Ok(recounts) = recounts else {
                return;
            };
            for (id, recount) in recounts {
                match recount {
                    Ok(recount) => capture.apply_recount(&id, recount),
                    Err(error) => {
                        tracing::warn!(tenant_id = %capture.core.shared.tenant_id, error = %error, "backfill recount failed");
                    }
                }
            }
            if !capture.behavior.backfills.busy {
                capture.backfill_wake(ctx);
            }
        }));
    }

    fn apply_recount(&mut self, id: &str, recount: BackfillRecount) {
        let store = self.backfill_store();
        let Ok(Some(mut job)) = store.backfill_job::<BackfillJob>(id) else {
            return;
        };
        let now_ms = self.core.shared.clock.now_ms();
        job.progress.submitted = recount.submitted + recount.confirmed;
        job.progress.confirmed = recount.confirmed;
        job.progress.dead = recount.dead;
        job.progress.recounted_at_ms = now_ms;
        // Done once every row is read and every entry the job indexed left the queue. (An
        // entry queued in this chunk is indexed before it is written: it counts as waiting.)
        // The recount's scan may have started before the last chunk's index was written:
        // only a scan that saw every entry the job queued can call it done.
        if job.state == JobState::Running
            && job.progress.read_complete
            && recount.waiting == 0
            && recount.entries >= job.progress.queued
        {
            job.state = JobState::Done;
            job.finished_at_ms = Some(now_ms);
            tracing::info!(tenant_id = %store.tenant_id(), job = %job.id, queued = job.progress.queued, "backfill done");
        }
        // Virtuous imports asynchronously: the money is compared once every entry is
        // confirmed (or dead), not when the run ends.
        let settled = job.progress.confirmed + job.progress.dead >= job.progress.queued;
        if job.state == JobState::Done
            && settled
            && job.progress.queued > 0
            && job.progress.reconciliation.is_none()
        {
            if let (Some(from), Some(to)) = (&job.progress.first_day, &job.progress.last_day) {
                let reason = format!("backfill {} confirmed", job.id);
                match self
                    .core
                    .shared
                    .request_reconciliation(&job.spec.source, from, to, &reason)
                {
                    Ok(reconciliation) => {
                        tracing::info!(tenant_id = %store.tenant_id(), job = %job.id, reconciliation = %reconciliation.id, "money reconciliation requested");
                        job.progress.reconciliation = Some(reconciliation.id);
                    }
                    Err(error) => {
                        tracing::warn!(tenant_id = %store.tenant_id(), job = %job.id, error = %error, "money reconciliation not requested");
                    }
                }
            }
        }
        job.updated_at_ms = now_ms;
        if let Err(error) = store.put_backfill_job(&job.id, &job) {
            tracing::warn!(tenant_id = %store.tenant_id(), error = %error, "backfill job write failed");
        }
    }

    /// Applies an operator's command to a job (see [`transition`]).
    fn backfill_command(
        &mut self,
        job_id: &str,
        action: BackfillAction,
    ) -> Result<BackfillJob, BackfillCommandError> {
        let store = self.backfill_store();
        let store_error = |error: StoreError| BackfillCommandError::Store(error.to_string());
        let now_ms = self.core.shared.clock.now_ms();
        let existing = store
            .backfill_job::<BackfillJob>(job_id)
            .map_err(store_error)?;
        let job = match (existing, action) {
            (Some(_), BackfillAction::Create { .. }) => {
                return Err(BackfillCommandError::Exists(job_id.to_string()))
            }
            (None, BackfillAction::Create { spec }) => {
                BackfillJob::new(job_id.to_string(), spec, now_ms)
            }
            (None, _) => return Err(BackfillCommandError::Unknown(job_id.to_string())),
            (Some(mut job), action) => {
                let next = transition(job.state, &action)
                    .map_err(BackfillCommandError::InvalidTransition)?;
                match action {
                    BackfillAction::FileReady { bytes } => {
                        job.file_bytes = Some(bytes);
                        job.dry_run = Default::default();
                    }
                    BackfillAction::Start => job.started_at_ms = Some(now_ms),
                    // The operator fixed what paused it (or chose to go on).
                    BackfillAction::Resume => job.error = None,
                    BackfillAction::Cancel => job.finished_at_ms = Some(now_ms),
                    _ => {}
                }
                job.state = next;
                job.updated_at_ms = now_ms;
                if self
                    .behavior
                    .backfills
                    .reader
                    .as_ref()
                    .is_some_and(|open| open.job_id == job.id)
                {
                    self.behavior.backfills.reader = None;
                }
                tracing::info!(tenant_id = %store.tenant_id(), job = %job.id, state = job.state.name(), "backfill changed by an operator");
                job
            }
        };
        store.put_backfill_job(&job.id, &job).map_err(store_error)?;
        Ok(job)
    }
}

/// Widens the run's range of gift days with `day`.
fn widen_days(progress: &mut crate::backfill::Progress, day: &str) {
    if progress
        .first_day
        .as_deref()
        .map_or(true, |first| day < first)
    {
        progress.first_day = Some(day.to_string());
    }
    if progress.last_day.as_deref().map_or(true, |last| day > last) {
        progress.last_day = Some(day.to_string());
    }
}

/// A job whose entries' states are still moving.
fn recount_wanted(job: &BackfillJob) -> bool {
    match job.state {
        JobState::Running | JobState::Paused => true,
        JobState::Done | JobState::Cancelled => {
            job.progress.confirmed + job.progress.dead < job.progress.queued
                || (job.state == JobState::Done
                    && job.progress.queued > 0
                    && job.progress.first_day.is_some()
                    && job.progress.reconciliation.is_none())
        }
        _ => false,
    }
}

fn count_metric(phase: &'static str, outcome: &RowOutcome) {
    let name = match outcome {
        RowOutcome::Payment { .. } => "payment",
        RowOutcome::Skipped { .. } => "skipped",
        RowOutcome::Rejected { .. } => "rejected",
    };
    metrics::counter!(BACKFILL_ROWS_TOTAL, "phase" => phase, LABEL_OUTCOME => name).increment(1);
}

impl Handler<BackfillCommand> for CaptureActor {
    type Result = ResponseActFuture<Self, Result<BackfillJob, BackfillCommandError>>;

    fn handle(&mut self, message: BackfillCommand, ctx: &mut Context<Self>) -> Self::Result {
        let BackfillCommand {
            job_id,
            action,
            mut guard,
        } = message;
        guard.mark_handling();
        if !self.may_act(ctx) {
            return Box::pin(fut::ready(Err(BackfillCommandError::Unavailable)));
        }
        let answer = self.backfill_command(&job_id, action);
        drop(guard);
        let job = match answer {
            Ok(job) => job,
            Err(error) => return Box::pin(fut::ready(Err(error))),
        };
        if !self.behavior.backfills.busy {
            self.backfill_wake(ctx);
        }
        let store = self.core.shared.store().clone();
        Box::pin(async move { store.durable().await }.into_actor(self).map(
            move |flushed, _capture, _ctx| {
                flushed.map_err(|error| BackfillCommandError::Store(error.to_string()))?;
                Ok(job)
            },
        ))
    }
}
