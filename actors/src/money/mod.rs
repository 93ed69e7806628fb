//! Money reconciliation (docs/backfill.md "Money reconciliation"): what the sources gave us,
//! per day and project, against what Virtuous holds for our `transactionSource`.
//!
//! Plain data and pure functions only:
//! - the **money fact** the submitter's completion records, in the same atomic batch, when
//!   Virtuous accepts a gift ([`parse_gift_money`] reads it from the gift body the entry
//!   carries; [`StoredMoney`] is what the store keeps under `{source}\0{day}\0{transaction
//!   id}`), marked refunded when the gift's reversal is accepted;
//! - the **job** ([`ReconciliationJob`], JSON under the checkpoint `recon:{id}`) the
//!   tenant's Reconciler runs: budgeted FullGift pages, resumable at the skip reached;
//! - the **report** (`report.rs`): aggregation and the differences by transaction id.
//!
//! Amounts are integers in minor units everywhere here; the HTTP layer formats them.

pub mod report;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use report::{build_report, Difference, DifferenceKind, MoneyReport, SourceFact, VirtuousRow};

/// Checkpoint-name prefix of job documents (`recon:{id}`).
pub const JOB_CHECKPOINT_PREFIX: &str = "recon:";
/// The nightly trigger's checkpoint: the last `daily_at` time handled (ms, text).
pub const NIGHTLY_CHECKPOINT: &str = "recon-nightly";
/// Longest range an operator may ask for, in days (inclusive of both ends).
pub const RANGE_DAYS_MAX: i64 = 366;
/// Days the nightly run looks back (the previous 7 days, today excluded).
pub const NIGHTLY_DAYS: i64 = 7;
/// Finished jobs kept per tenant (the oldest are pruned when a new one is created).
pub const FINISHED_JOBS_KEPT: usize = 50;
/// Alert raised when a finished job found differences; a clean job resolves it.
pub const MONEY_MISMATCH_ALERT: &str = "money_mismatch";

/// The checkpoint name of job `id`.
pub fn job_checkpoint(id: &str) -> String {
    format!("{JOB_CHECKPOINT_PREFIX}{id}")
}

// ---------------------------------------------------------------------------------------
// Money facts
// ---------------------------------------------------------------------------------------

/// What the store keeps for one accepted gift (JSON; fields may grow without a migration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMoney {
    /// Project code of the first designation, `""` when none.
    pub project: String,
    pub amount_minor: i64,
    /// ISO code, lower case.
    pub currency: String,
    /// The gift's reversal was accepted: its amount leaves the sums.
    #[serde(default)]
    pub refunded: bool,
}

/// The money of one gift body, as [`parse_gift_money`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GiftMoney {
    /// `YYYY-MM-DD` (the gift date sent: the tenant's day).
    pub day: String,
    pub project: String,
    pub amount_minor: i64,
    pub currency: String,
}

/// Reads the money of a gift transaction body (the exact JSON the entry carries):
/// `giftDate`, `amount` (major units, a string or a number), `currencyCode` (default `usd`),
/// `designations[0].projectCode` (or `.code`, the form Steward's sources send).
pub fn parse_gift_money(body_json: &str) -> Result<GiftMoney, String> {
    let body: Value =
        serde_json::from_str(body_json).map_err(|err| format!("body is not JSON: {err}"))?;
    let Value::Object(body) = body else {
        return Err("body is not a JSON object".into());
    };
    let currency = match body.get("currencyCode") {
        None | Some(Value::Null) => "usd".to_string(),
        Some(Value::String(code)) => currency_code(code)
            .ok_or_else(|| format!("`currencyCode` {code:?} is not a three-letter code"))?,
        Some(other) => return Err(format!("`currencyCode` is not text: {other}")),
    };
    let amount_text = match body.get("amount") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Number(number)) => number.to_string(),
        _ => return Err("`amount` is missing or not a string or number".into()),
    };
    let amount_minor = decimal_to_minor(&amount_text, &currency)
        .ok_or_else(|| format!("`amount` {amount_text:?} is not an exact {currency} amount"))?;
    let day = match body.get("giftDate") {
        Some(Value::String(text)) => {
            canonical_day(text).ok_or_else(|| format!("`giftDate` {text:?} is not a date"))?
        }
        _ => return Err("`giftDate` is missing or not text".into()),
    };
    let project = body
        .get("designations")
        .and_then(Value::as_array)
        .and_then(|designations| designations.first())
        .and_then(|first| {
            ["projectCode", "code"]
                .iter()
                .find_map(|name| first.get(*name).and_then(Value::as_str))
        })
        .unwrap_or("")
        .to_string();
    Ok(GiftMoney {
        day,
        project,
        amount_minor,
        currency,
    })
}

/// A currency code as the reports keep it (three ASCII letters, lower case).
pub fn currency_code(text: &str) -> Option<String> {
    let text = text.trim();
    (text.len() == 3 && text.bytes().all(|byte| byte.is_ascii_alphabetic()))
        .then(|| text.to_ascii_lowercase())
}

/// Currencies whose minor unit is the major unit (Stripe's list; the `steward` crate's
/// `sources::amount` holds the same lists, and a test there keeps them equal).
pub const ZERO_DECIMAL_CURRENCIES: [&str; 16] = [
    "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv",
    "xaf", "xof", "xpf",
];
/// Currencies with three decimals in minor units.
pub const THREE_DECIMAL_CURRENCIES: [&str; 5] = ["bhd", "jod", "kwd", "omr", "tnd"];

/// Decimals of `currency`'s minor unit (case-insensitive).
pub fn minor_unit_decimals(currency: &str) -> u32 {
    let lower = currency.to_ascii_lowercase();
    if ZERO_DECIMAL_CURRENCIES.contains(&lower.as_str()) {
        0
    } else if THREE_DECIMAL_CURRENCIES.contains(&lower.as_str()) {
        3
    } else {
        2
    }
}

/// A decimal in major units (`"12.34"`, `"12.5"`, `"-3"`, `"12.340"`) → minor units of
/// `currency`, exactly: digits past the currency's decimals must be zeros (no rounding of
/// money), no exponent, at most 18 digits. `None` otherwise.
pub fn decimal_to_minor(text: &str, currency: &str) -> Option<i64> {
    let decimals = minor_unit_decimals(currency) as usize;
    let text = text.trim();
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !all_digits(whole) || !all_digits(fraction) {
        return None;
    }
    let (kept, dropped) = fraction.split_at(fraction.len().min(decimals));
    if dropped.bytes().any(|byte| byte != b'0') {
        return None;
    }
    let whole = whole.trim_start_matches('0');
    if whole.len() + decimals > 18 {
        return None;
    }
    let mut magnitude: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    for position in 0..decimals {
        let digit = kept.as_bytes().get(position).map_or(0, |byte| byte - b'0');
        magnitude = magnitude.checked_mul(10)?.checked_add(i64::from(digit))?;
    }
    Some(if negative { -magnitude } else { magnitude })
}

/// A gift date as a day `YYYY-MM-DD`: `YYYY-MM-DD`, an ISO 8601 date-time (its date part,
/// as written: Virtuous's `2026-11-26T00:00:00`), or `M/D/YYYY`. Years 1000–9999 only, so
/// that days sort as text.
pub fn canonical_day(text: &str) -> Option<String> {
    let text = text.trim();
    let date = if text.contains('/') {
        let mut parts = text.splitn(3, '/');
        let month: i8 = parts.next()?.parse().ok()?;
        let day: i8 = parts.next()?.parse().ok()?;
        let year: i16 = parts.next()?.get(..4)?.parse().ok()?;
        jiff::civil::Date::new(year, month, day).ok()?
    } else {
        text.get(..10)?.parse::<jiff::civil::Date>().ok()?
    };
    (1000..=9999)
        .contains(&date.year())
        .then(|| date.to_string())
}

/// A day given as exactly `YYYY-MM-DD` (the API's and the jobs' form).
pub fn parse_day(text: &str) -> Option<jiff::civil::Date> {
    if text.len() != 10 {
        return None;
    }
    let date: jiff::civil::Date = text.parse().ok()?;
    (1000..=9999).contains(&date.year()).then_some(date)
}

/// Days from `from` to `to`, both included (0 or less when `to` is before `from`).
pub fn days_inclusive(from: jiff::civil::Date, to: jiff::civil::Date) -> i64 {
    let span = to.since(from).map(|span| span.get_days()).unwrap_or(0);
    i64::from(span) + 1
}

/// Midnight UTC of `day`, in ms (the FullGift query's `Create Date` is a day; the job asks
/// from the day before its first day).
pub fn utc_midnight_ms(day: jiff::civil::Date) -> Option<u64> {
    let zoned = day.to_zoned(jiff::tz::TimeZone::UTC).ok()?;
    u64::try_from(zoned.timestamp().as_millisecond()).ok()
}

/// The latest `hour:minute` in `time_zone` at or before `now_ms` (ms), with its local day:
/// when the nightly run was last due. UTC when the zone is empty or unknown.
pub fn last_daily_at(
    hour: u8,
    minute: u8,
    time_zone: &str,
    now_ms: u64,
) -> Option<(u64, jiff::civil::Date)> {
    let tz = jiff::tz::TimeZone::get(time_zone).unwrap_or(jiff::tz::TimeZone::UTC);
    let now = jiff::Timestamp::from_millisecond(i64::try_from(now_ms).ok()?).ok()?;
    let mut date = now.to_zoned(tz.clone()).date();
    for _ in 0..3 {
        let at = date
            .at(hour as i8, minute as i8, 0, 0)
            .to_zoned(tz.clone())
            .ok()?
            .timestamp();
        if at <= now {
            return Some((u64::try_from(at.as_millisecond()).ok()?, date));
        }
        date = date.yesterday().ok()?;
    }
    None
}

/// The nightly run's days for the run due on local day `date`: the previous
/// [`NIGHTLY_DAYS`] days, `date` itself excluded.
pub fn nightly_range(date: jiff::civil::Date) -> Option<(jiff::civil::Date, jiff::civil::Date)> {
    let to = date.yesterday().ok()?;
    let from = date
        .checked_sub(jiff::Span::new().days(NIGHTLY_DAYS))
        .ok()?;
    Some((from, to))
}

// ---------------------------------------------------------------------------------------
// Jobs
// ---------------------------------------------------------------------------------------

/// A job's state: `pending` (waiting for the tenant's running job: one at a time) →
/// `running` → `done` | `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Pending,
    Running,
    Done,
    Failed,
}

impl JobState {
    pub fn name(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, JobState::Done | JobState::Failed)
    }
}

/// Who asked for a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// `POST /v1/tenants/{id}/reconciliations`.
    Operator,
    /// `reconciliation.daily_at`.
    Nightly,
    /// A backfill's records were all confirmed (or dead).
    Backfill,
}

impl Trigger {
    pub fn name(self) -> &'static str {
        match self {
            Trigger::Operator => "operator",
            Trigger::Nightly => "nightly",
            Trigger::Backfill => "backfill",
        }
    }
}

/// How far a running job has read Virtuous.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// FullGift pages read (calls answered with a page).
    pub pages_read: u64,
    /// Pages the query has in all, from the latest page's `total` (`None` before the first).
    pub pages_total: Option<u64>,
    /// Gifts read so far: the `skip` of the next page (where a restart resumes).
    pub skip: u64,
    /// Gifts the query matched, from the latest page.
    pub total: Option<u64>,
}

/// One reconciliation job (JSON under the checkpoint `recon:{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReconciliationJob {
    pub id: String,
    /// The source whose money facts are compared (`stripe`, a platform name).
    pub source: String,
    /// The source's `transactionSource` in Virtuous.
    pub transaction_source: String,
    /// First and last day (`YYYY-MM-DD`, both included) of the gifts compared.
    pub from: String,
    pub to: String,
    pub trigger: Trigger,
    /// Why it runs, in words (`backfill b-7 confirmed`, `nightly`…).
    pub reason: String,
    pub state: JobState,
    pub created_at_ms: u64,
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
    pub progress: Progress,
    /// Failed calls in a row (reset by a page read); the job fails after
    /// [`FAILURES_MAX`].
    #[serde(default)]
    pub failures: u32,
    /// The latest failure, or why the job failed.
    pub error: Option<String>,
    /// The comparison, once done.
    pub report: Option<MoneyReport>,
}

/// Failed FullGift calls in a row after which a job fails (a refused budget is a wait, not
/// a failure).
pub const FAILURES_MAX: u32 = 10;

impl ReconciliationJob {
    /// The first day, as a date (validated when the job was made).
    pub fn from_day(&self) -> Option<jiff::civil::Date> {
        parse_day(&self.from)
    }

    /// `Create Date OnOrAfter` of the job's query: the UTC day before `from`, in ms.
    pub fn created_on_or_after_ms(&self) -> u64 {
        self.from_day()
            .and_then(utc_midnight_ms)
            .map_or(0, |midnight_ms| midnight_ms.saturating_sub(86_400_000))
    }
}

/// What a request for a job names (operator, nightly, backfill).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRequest {
    pub source: String,
    pub from: jiff::civil::Date,
    pub to: jiff::civil::Date,
    pub trigger: Trigger,
    pub reason: String,
}

/// Why a job was not created.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("no gift source `{name}` is configured (configured: {configured})")]
    UnknownSource { name: String, configured: String },
    #[error("`{0}` is not a day (YYYY-MM-DD)")]
    InvalidDay(String),
    #[error("`to` ({to}) is before `from` ({from})")]
    EmptyRange { from: String, to: String },
    #[error("reconciliation {id} is already {state}; one runs at a time")]
    AlreadyRunning { id: String, state: &'static str },
    #[error("the store failed: {0}")]
    Store(String),
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
