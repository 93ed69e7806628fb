//! Backfill jobs (pattern 5, docs/backfill.md): history loaded through the same queue and
//! submitter as live traffic, in the `backfill` lane, with the live path's idempotency keys.
//!
//! This module is the contract between the runtime (`capture/backfill.rs` runs jobs next to
//! the store) and the `steward` crate (which reads files and maps rows: the
//! [`BackfillFiles`] port). Plain data and pure functions only.
//!
//! A job is stored as one JSON document (checkpoint `backfill:{id}`), rewritten in the same
//! atomic store write as the queue entries of each chunk it reads: a crash repeats a chunk
//! (its entries are then duplicates), never skips one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::source_fact::AlertNote;
use crate::store::NewEntry;

pub use crate::store::backfill_ops::{job_checkpoint, RejectedRow, JOB_CHECKPOINT_PREFIX};

/// Rejected rows kept inline in a job's report (all of them are downloadable).
pub const INLINE_REJECTS_MAX: usize = 1_000;
/// The `backfill` lane is fed while it holds fewer entries than this (10 full calls).
pub const FEED_WINDOW: u64 = 1_000;
/// Most gift transactions in one Virtuous call (the submitter's batch bound).
pub const GIFTS_PER_CALL: u64 = 100;

/// A job's state. `awaiting_file → validating → ready → running ⇄ paused → done |
/// cancelled` (a listing job starts at `validating`); `failed` when the file or the
/// listing cannot be read at all (the reason is in `error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Created from a file job; waiting for `PUT …/file`.
    AwaitingFile,
    /// The dry run is reading the file (nothing is queued).
    Validating,
    /// The dry run's report is ready; `start` queues.
    Ready,
    Running,
    Paused,
    /// Every row read, every queued entry left the queue (submitted, or a dead letter).
    Done,
    Cancelled,
    Failed,
}

impl JobState {
    pub fn name(self) -> &'static str {
        match self {
            JobState::AwaitingFile => "awaiting_file",
            JobState::Validating => "validating",
            JobState::Ready => "ready",
            JobState::Running => "running",
            JobState::Paused => "paused",
            JobState::Done => "done",
            JobState::Cancelled => "cancelled",
            JobState::Failed => "failed",
        }
    }

    /// No further change (but `GET` still shows it).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Done | JobState::Cancelled | JobState::Failed
        )
    }
}

/// What a job reads: as given at `POST /v1/tenants/{id}/backfills` (validated by the
/// `steward` crate; opaque here).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// The source whose idempotency keys the rows get (`stripe`, a platform name).
    pub source: String,
    /// `csv` or `ndjson`.
    pub format: String,
    /// The mapping document as JSON text: a preset name (`"stripe_payments_export"`) or an
    /// object in the platform sources' mapping model.
    pub mapping_json: String,
    /// The `batch` label every gift carries.
    pub label: String,
    /// A listing job (no file): the source's full listing through its poller, records whose
    /// source version time lies in the window. `format` is then `"listing"` and
    /// `mapping_json` empty: the poller's own mapping makes the entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listing: Option<ListingWindow>,
}

/// The format name of a listing job.
pub const LISTING_FORMAT: &str = "listing";

/// A listing job's window: records whose source version time (`updated_at`,
/// `last_changed`) lies in `[from_ms, to_ms]` (ms since the epoch). The listing is read from
/// `from_ms` on; records after `to_ms` are skipped (the live poller takes them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListingWindow {
    pub from_ms: u64,
    pub to_ms: u64,
}

impl ListingWindow {
    pub fn contains(&self, version_ms: u64) -> bool {
        (self.from_ms..=self.to_ms).contains(&version_ms)
    }
}

/// Why a listed record is skipped: its version lies outside the job's window.
pub const OUTSIDE_WINDOW: &str = "changed outside the window";

/// Where a reader stands in a file: the byte offset of the next unread record and the row
/// number of the last record read (rows are numbered as a spreadsheet shows them: in a CSV
/// the header is row 1, so the first data record is row 2; in NDJSON the first line is row 1).
///
/// In a listing job: `offset` counts the pages read, `row` the records read (the first is
/// row 1), and `page` is the source's cursor of the next page (`None` before the first).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub offset: u64,
    pub row: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<String>,
}

/// A gift's money, for the dry run's totals and money reconciliation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoneyFact {
    /// The gift's `transactionId` (the source id: PaymentIntent id, else charge id).
    pub transaction_id: String,
    /// `YYYY-MM-DD`, the gift date sent.
    pub day: String,
    /// Project code of the designation, `""` when none.
    pub project: String,
    /// Amount in minor units of `currency` (captured minus refunded).
    pub amount_minor: i64,
    /// ISO code, lower case.
    pub currency: String,
}

/// What one row of a file is. One classifier (the `steward` crate's) serves the dry run and
/// the real run: the runtime never maps a row itself.
#[derive(Debug, Clone)]
pub enum RowOutcome {
    /// A payment: the entries the live path would queue for it (gift; a full refund's
    /// reversing transaction; a contact), each with the live path's idempotency key and its
    /// body's `batch` set to the job's label, and the alerts the live path would raise with
    /// them (a partial refund, a dispute). The runtime puts them in the `backfill` lane.
    Payment {
        entries: Vec<NewEntry>,
        alerts: Vec<AlertNote>,
        money: Option<MoneyFact>,
    },
    /// Not a payment (a failed or uncaptured charge, a row the filters leave out): reported
    /// with its reason, not an error.
    Skipped { reason: String },
    /// A bad row (a missing or malformed field): reported with its reason.
    Rejected { reason: String },
}

/// One classified row.
#[derive(Debug, Clone)]
pub struct ClassifiedRow {
    pub row: u64,
    pub outcome: RowOutcome,
}

/// A chunk of rows, in file order.
#[derive(Debug, Clone)]
pub struct RowChunk {
    pub rows: Vec<ClassifiedRow>,
    /// Where the next chunk starts.
    pub next: Cursor,
    /// The file ends here.
    pub end: bool,
}

/// Reads a job's file from a cursor, a chunk at a time (blocking file IO: small chunks).
pub trait RowReader: Send {
    /// At most `max_rows` rows. `Err` when the file cannot be read on (not for a bad row:
    /// that is a [`RowOutcome::Rejected`]).
    fn read(&mut self, max_rows: usize) -> Result<RowChunk, String>;
}

/// The port: opens a job's file at a cursor with the tenant's current settings (the
/// `steward` crate's adapter, in `TenantShared::backfill_files`).
pub trait BackfillFiles: Send + Sync + 'static {
    fn open(&self, job_id: &str, spec: &JobSpec, at: Cursor) -> Result<Box<dyn RowReader>, String>;
    /// A listing job's record (one item of its source's poller page, inside the window) as
    /// a row: the entries the live poll queues for it, in the `backfill` lane with the
    /// job's label as every gift's `batch`, and the gift's money; a record the poller could
    /// not map is [`RowOutcome::Rejected`] with its id in the reason. The same function
    /// serves the listing's dry run and its real run.
    fn classify_listed(&self, spec: &JobSpec, item: crate::ports::PolledItem) -> RowOutcome;
}

/// Row counts, shared by the dry run and the real run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowCounts {
    /// Data rows read.
    pub rows: u64,
    /// Rows that are payments.
    pub payments: u64,
    pub skipped: u64,
    pub rejected: u64,
    /// Payments whose gift the store already knows (seen live, or in an earlier backfill):
    /// duplicates, nothing queued.
    pub known: u64,
    /// Entries by kind (`gift`, `refund`, `contact`) of the payments not known.
    pub entries: BTreeMap<String, u64>,
    /// Entries by kind and transaction source, for the call estimate.
    pub gift_groups: BTreeMap<String, u64>,
    /// Skip reasons and how often.
    pub skip_reasons: BTreeMap<String, u64>,
    /// Alerts the rows raise, by code.
    pub alerts: BTreeMap<String, u64>,
    /// Sum of gift amounts (minor units) per currency.
    pub amount_minor: BTreeMap<String, i64>,
}

/// The dry run's report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DryRun {
    pub counts: RowCounts,
    /// Where validation stands (progress while `validating`).
    pub cursor: Cursor,
    pub complete: bool,
    /// Virtuous calls the queued entries need ([`calls_needed`]).
    pub calls_needed: u64,
}

/// The real run's progress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub counts: RowCounts,
    /// Entries written to the backfill lane.
    pub queued: u64,
    /// Of those, recounted from their records: sent and accepted by Virtuous.
    pub submitted: u64,
    /// Confirmed in Virtuous (or found to be a duplicate there).
    pub confirmed: u64,
    /// Dead letters.
    pub dead: u64,
    /// When the recount last ran.
    pub recounted_at_ms: u64,
    /// Every row of the file was read into the queue.
    pub read_complete: bool,
    /// The earliest and latest gift days the run queued (`YYYY-MM-DD`): the money
    /// reconciliation's range.
    pub first_day: Option<String>,
    pub last_day: Option<String>,
    /// The money reconciliation asked for once every entry was confirmed (its id).
    pub reconciliation: Option<String>,
}

/// One backfill job (checkpoint `backfill:{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackfillJob {
    pub id: String,
    pub spec: JobSpec,
    pub state: JobState,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    /// Size of the uploaded file.
    pub file_bytes: Option<u64>,
    pub dry_run: DryRun,
    pub progress: Progress,
    /// The real run's position in the file.
    pub cursor: Cursor,
    pub error: Option<String>,
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
}

impl BackfillJob {
    pub fn new(id: String, spec: JobSpec, now_ms: u64) -> BackfillJob {
        // A listing has no file: its dry run starts at once.
        let state = if spec.listing.is_some() {
            JobState::Validating
        } else {
            JobState::AwaitingFile
        };
        BackfillJob {
            id,
            spec,
            state,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
            file_bytes: None,
            dry_run: DryRun::default(),
            progress: Progress::default(),
            cursor: Cursor::default(),
            error: None,
            started_at_ms: None,
            finished_at_ms: None,
        }
    }
}

/// Virtuous calls needed for `counts`' new entries: gifts go 100 a call per transaction
/// source, each refund (reversing transaction) is one call, contacts go 100 a call.
pub fn calls_needed(counts: &RowCounts) -> u64 {
    let gifts: u64 = counts
        .gift_groups
        .values()
        .map(|&gifts| gifts.div_ceil(GIFTS_PER_CALL))
        .sum();
    let refunds = counts.entries.get("refund").copied().unwrap_or(0);
    let contacts = counts
        .entries
        .get("contact")
        .copied()
        .unwrap_or(0)
        .div_ceil(GIFTS_PER_CALL);
    gifts + refunds + contacts
}

/// Hours `calls` take when `allowance_per_hour` calls are allowed and the live lane used
/// `live_calls_last_hour` of them in the last hour; `None` when nothing is left for the
/// backfill (it then runs on its guaranteed share only).
pub fn hours_needed(calls: u64, allowance_per_hour: u64, live_calls_last_hour: u64) -> Option<f64> {
    let spare = allowance_per_hour.saturating_sub(live_calls_last_hour);
    (spare > 0).then(|| calls as f64 / spare as f64)
}

/// Adds one classified row to `counts`. `known` says the store already has the payment's
/// gift (its idempotency key): a duplicate, nothing queued. The dry run and the real run
/// both count through here.
pub fn count_row(counts: &mut RowCounts, outcome: &RowOutcome, known: bool) {
    counts.rows += 1;
    match outcome {
        RowOutcome::Payment {
            entries,
            alerts,
            money,
        } => {
            counts.payments += 1;
            if known {
                counts.known += 1;
                return;
            }
            for entry in entries {
                let kind = kind_name(entry.fact.kind);
                *counts.entries.entry(kind.to_string()).or_default() += 1;
                if entry.fact.kind == crate::store::RecordKind::Gift {
                    *counts
                        .gift_groups
                        .entry(entry.fact.transaction_source.clone())
                        .or_default() += 1;
                }
            }
            for alert in alerts {
                *counts.alerts.entry(alert.code.clone()).or_default() += 1;
            }
            if let Some(money) = money {
                *counts
                    .amount_minor
                    .entry(money.currency.clone())
                    .or_default() += money.amount_minor;
            }
        }
        RowOutcome::Skipped { reason } => {
            counts.skipped += 1;
            *counts.skip_reasons.entry(reason.clone()).or_default() += 1;
        }
        RowOutcome::Rejected { .. } => counts.rejected += 1,
    }
}

/// A record kind's name in reports (`gift`, `contact`, `refund`).
pub fn kind_name(kind: crate::store::RecordKind) -> &'static str {
    match kind {
        crate::store::RecordKind::Gift => "gift",
        crate::store::RecordKind::Contact => "contact",
        crate::store::RecordKind::Refund => "refund",
    }
}

/// What an operator (or the admin API) asks of a job. Capture applies it: every write of a
/// job document happens in Capture, one at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackfillAction {
    /// A new job from a validated spec (state `awaiting_file`).
    Create { spec: JobSpec },
    /// The file was uploaded (`bytes` long): the dry run starts (`validating`).
    FileReady { bytes: u64 },
    /// `ready → running`.
    Start,
    /// `running → paused`: nothing more is read into the queue (entries already queued, at
    /// most the feed window, still go).
    Pause,
    /// `paused → running`.
    Resume,
    /// Any state but a final one → `cancelled` (as with pause, queued entries still go).
    Cancel,
}

impl BackfillAction {
    pub fn name(&self) -> &'static str {
        match self {
            BackfillAction::Create { .. } => "create",
            BackfillAction::FileReady { .. } => "file",
            BackfillAction::Start => "start",
            BackfillAction::Pause => "pause",
            BackfillAction::Resume => "resume",
            BackfillAction::Cancel => "cancel",
        }
    }
}

/// To Capture: apply `action` to job `job_id`; answers the job once the change is durable.
#[derive(actix::Message)]
#[rtype(result = "Result<BackfillJob, BackfillCommandError>")]
pub struct BackfillCommand {
    pub job_id: String,
    pub action: BackfillAction,
    pub guard: crate::mailbox::MailboxGuard,
}

/// Why a backfill command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackfillCommandError {
    #[error("no backfill `{0}`")]
    Unknown(String),
    /// The job's state does not allow the action (HTTP 409 `invalid_transition`).
    #[error("{0}")]
    InvalidTransition(String),
    /// A job with this id exists already.
    #[error("backfill `{0}` exists already")]
    Exists(String),
    #[error("the tenant's capture mailbox is full ({capacity})")]
    MailboxFull { capacity: usize },
    #[error("the tenant is not running (restarting or stopping); try again")]
    Unavailable,
    #[error("store: {0}")]
    Store(String),
}

/// The state `action` takes a job in `state` to, or why it cannot.
pub fn transition(state: JobState, action: &BackfillAction) -> Result<JobState, String> {
    let next = match (state, action) {
        (JobState::AwaitingFile, BackfillAction::FileReady { .. }) => JobState::Validating,
        (JobState::Ready, BackfillAction::Start) => JobState::Running,
        (JobState::Running, BackfillAction::Pause) => JobState::Paused,
        (JobState::Paused, BackfillAction::Resume) => JobState::Running,
        (state, BackfillAction::Cancel) if !state.is_final() => JobState::Cancelled,
        (state, action) => {
            let needs = match action {
                BackfillAction::Create { .. } => "no job",
                BackfillAction::FileReady { .. } => "awaiting_file (a file is uploaded once)",
                BackfillAction::Start => "ready (the dry run must finish first)",
                BackfillAction::Pause => "running",
                BackfillAction::Resume => "paused",
                BackfillAction::Cancel => "a state that is not final",
            };
            return Err(format!(
                "cannot {} a backfill that is {}: it must be {needs}",
                action.name(),
                state.name()
            ));
        }
    };
    Ok(next)
}
