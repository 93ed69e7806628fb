//! Inbound's pull half (docs/pull.md): Virtuous changes into the tenant's change log.
//!
//! - Webhooks: every change model of a delivery (`VirtuousDelivery::changes`) of a kind the
//!   tenant pulls is offered to the log in the delivery's own write (durable before the 200).
//!   A gift or contact model lacking fields a destination needs is not logged as is: it is
//!   put on the re-read list, and read back in full in one call per 100 records.
//! - The backstop poll (`pull.poll_interval_s`): `Last Modified Date` queries per queryable
//!   kind from the kind's high-water mark (`pull:{kind}`) minus the overlap, page by page,
//!   each page logged and flushed before the next; the mark moves when the kind's pass ends.
//!   Every call is drawn from the tenant's budget in the reconcile lane.
//! - The stale-update guard sits in the log (`store::pull_ops::admit`): a version older
//!   than (or equal to) the newest one logged is dropped, whichever path brought it.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::hub::{ReconcileBudget, TenantShared};
pub use crate::pull::Offered;
use crate::pull::{ChangeKind, ChangeVia};
use crate::settings::PullSettings;
use crate::store::poll_ops::PollMark;
use crate::store::pull_ops::{AppendOutcome, NewChange, RereadRequest};
use crate::store::StoreError;
use crate::virtuous_event::VirtuousChange;

/// Checkpoint of the backstop poll's schedule.
const BACKSTOP_SCHEDULE: &str = "pull:backstop";
/// Most records one re-read call asks for.
pub const REREAD_MAX: usize = 100;
/// Most changes one prune removes (it comes back sooner while more are due).
pub const PRUNE_MAX: usize = 10_000;
/// Wait after a failed re-read.
const REREAD_RETRY_MS: u64 = 10_000;
/// Wait after a failed backstop pass before the next attempt.
const BACKSTOP_RETRY_MS: u64 = 300_000;
/// Longest a backstop kind waits for budget slots within a pass before it ends the pass
/// (`budget_wait`, resumed when the budget says).
const BACKSTOP_BUDGET_WAIT_MAX_MS: u64 = 60_000;

/// Whether a change names one of our own sources.
fn is_own(settings: &PullSettings, change: &VirtuousChange) -> bool {
    change.origin_sources.iter().any(|origin| {
        settings
            .own_sources
            .iter()
            .any(|own| own.eq_ignore_ascii_case(origin))
    })
}

fn new_change(
    settings: &PullSettings,
    change: &VirtuousChange,
    via: ChangeVia,
    now_ms: u64,
) -> NewChange {
    NewChange {
        kind: change.kind,
        op: change.op,
        id: change.id.clone(),
        // Virtuous's time when it gives one (a delete is logged at no lower version than
        // what it deletes: `pull_ops::admit`), else the arrival time.
        version_ms: change.modified_ms.unwrap_or(now_ms),
        modified_at: change.modified_at.clone(),
        record: serde_json::from_str(&change.record_json)
            .unwrap_or_else(|_| serde_json::Value::String(change.record_json.clone())),
        own: is_own(settings, change),
        via,
    }
}

/// Offers changes to the log (not yet durable): complete ones are logged (or dropped by
/// the guard), incomplete ones of queryable kinds go on the re-read list. Kinds the tenant
/// does not pull are ignored.
pub fn offer(
    shared: &TenantShared,
    changes: &[VirtuousChange],
    via: ChangeVia,
) -> Result<Offered, StoreError> {
    let settings = shared.settings().pull;
    let mut offered = Offered::default();
    if !settings.enabled {
        return Ok(offered);
    }
    let now_ms = shared.clock.now_ms();
    let mut logged = Vec::new();
    let mut rereads = Vec::new();
    for change in changes {
        if !settings.events.contains(&change.kind) {
            continue;
        }
        let own_unwanted = is_own(&settings, change) && !settings.include_own;
        if change.complete || !change.kind.queryable() || via == ChangeVia::Reread || own_unwanted {
            // An own write no destination will receive is logged as it came (for the mark
            // two-way sync reads) rather than re-read at the budget's expense.
            logged.push(new_change(&settings, change, via, now_ms));
        } else {
            rereads.push(RereadRequest {
                kind: change.kind,
                id: change.id.clone(),
                requested_ms: now_ms,
            });
        }
    }
    let store = shared.tenant_store();
    if !rereads.is_empty() {
        store.request_rereads(&rereads)?;
        offered.rereads = rereads.len() as u64;
    }
    if !logged.is_empty() {
        for outcome in store.append_changes(logged, now_ms)? {
            match outcome {
                AppendOutcome::Appended { .. } => offered.logged += 1,
                AppendOutcome::Stale => offered.stale += 1,
                AppendOutcome::Duplicate => offered.duplicates += 1,
            }
        }
    }
    Ok(offered)
}

/// One backstop pass, as the admin API shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackstopReport {
    pub started_at_ms: u64,
    pub finished_at_ms: u64,
    /// `completed`, `budget_wait` (the budget refused a call: the pass resumes later), or
    /// `failed`.
    pub outcome: String,
    pub calls: u64,
    pub fetched: u64,
    /// What the log made of the records read (`logged`, `stale`, `duplicates`).
    #[serde(flatten)]
    pub offered: Offered,
    pub error: Option<String>,
    /// Each kind's high-water mark after the pass (ms).
    pub marks: BTreeMap<String, u64>,
    /// When the next pass may start.
    #[serde(default)]
    pub next_at_ms: u64,
}

/// When the last pass started (the schedule counts from it).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct BackstopSchedule {
    last_started_ms: u64,
}

/// When the next backstop pass is due (`None`: the backstop poll is off).
pub fn next_backstop_at(shared: &TenantShared) -> Option<u64> {
    let settings = shared.settings().pull;
    if !settings.enabled || settings.poll_interval_ms == 0 {
        return None;
    }
    let last = shared
        .tenant_store()
        .get_checkpoint(BACKSTOP_SCHEDULE)
        .ok()
        .flatten()
        .and_then(|bytes| serde_json::from_slice::<BackstopSchedule>(&bytes).ok());
    Some(last.map_or(0, |schedule| {
        schedule.last_started_ms + settings.poll_interval_ms
    }))
}

/// One backstop pass over every queryable kind the tenant pulls.
pub async fn backstop_pass(shared: Arc<TenantShared>) -> BackstopReport {
    let settings = shared.settings().pull;
    let started_at_ms = shared.clock.now_ms();
    let mut report = BackstopReport {
        started_at_ms,
        outcome: "completed".to_string(),
        next_at_ms: started_at_ms + settings.poll_interval_ms,
        ..BackstopReport::default()
    };
    let schedule = BackstopSchedule {
        last_started_ms: started_at_ms,
    };
    if let Err(error) = shared.tenant_store().put_checkpoint(
        BACKSTOP_SCHEDULE,
        &serde_json::to_vec(&schedule).unwrap_or_default(),
    ) {
        report.outcome = "failed".to_string();
        report.error = Some(error.to_string());
    }
    for kind in settings
        .events
        .iter()
        .copied()
        .filter(|kind| kind.queryable())
    {
        if report.outcome != "completed" {
            break;
        }
        if let Err(error) = backstop_kind(&shared, &settings, kind, &mut report).await {
            report.outcome = "failed".to_string();
            report.error = Some(error.to_string());
        }
    }
    if report.outcome == "failed" {
        report.next_at_ms = started_at_ms + BACKSTOP_RETRY_MS.min(settings.poll_interval_ms);
    }
    report.finished_at_ms = shared.clock.now_ms();
    report
}

/// The pass of one kind: pages from the mark − overlap (by day: Virtuous may filter dates by
/// day only), each logged and flushed before the next.
async fn backstop_kind(
    shared: &Arc<TenantShared>,
    settings: &PullSettings,
    kind: ChangeKind,
    report: &mut BackstopReport,
) -> Result<(), StoreError> {
    let store = shared.tenant_store();
    let mark = store.backstop_mark(kind)?;
    let since_ms = day_filter_start(
        mark.as_ref()
            .map_or(report.started_at_ms, |mark| mark.at_ms)
            .saturating_sub(settings.poll_overlap_ms),
        &settings.time_zone,
    );
    let mut high = mark.clone();
    let mut skip = 0u64;
    let mut budget_waited_ms = 0u64;
    loop {
        let now_ms = shared.clock.now_ms();
        if let Err(wait_ms) = shared.try_spend_reconcile_call(now_ms) {
            // The budget's pacing (or the submitter's turn) asks for a short wait: wait for
            // the slot within the pass, or the next kind's call, refused right after this
            // kind's, would end every pass before it.
            if budget_waited_ms.saturating_add(wait_ms) <= BACKSTOP_BUDGET_WAIT_MAX_MS {
                budget_waited_ms += wait_ms;
                tokio::time::sleep(std::time::Duration::from_millis(wait_ms)).await;
                continue;
            }
            report.outcome = "budget_wait".to_string();
            report.next_at_ms = now_ms + wait_ms;
            return Ok(());
        }
        report.calls += 1;
        metrics::counter!(crate::metrics::PULL_CALLS_TOTAL).increment(1);
        let (reply, page) = shared
            .crm()
            .query_modified(kind, since_ms, skip, settings.poll_take)
            .await;
        shared.settle_reconcile_call(&reply, shared.clock.now_ms());
        let Some(page) = page else {
            report.outcome = "failed".to_string();
            report.error = Some(format!(
                "{} query answered {}: {}",
                kind.name(),
                reply
                    .facts
                    .status
                    .map_or_else(|| "nothing".to_string(), |status| status.to_string()),
                reply.facts.message.unwrap_or_default()
            ));
            return Ok(());
        };
        let fetched = page.changes.len() as u64;
        report.fetched += fetched;
        for change in &page.changes {
            let seen = PollMark {
                at_ms: change.modified_ms.unwrap_or(0),
                record_id: change.id.clone(),
            };
            if high.as_ref().map_or(true, |high| seen > *high) {
                high = Some(seen);
            }
        }
        let offered = offer(shared, &page.changes, ChangeVia::Poll)?;
        shared.store().durable().await?;
        offered.count(ChangeVia::Poll);
        report.offered.add(offered);
        if offered.logged > 0 {
            shared.pull_wake.notify_waiters();
        }
        skip += fetched;
        if fetched == 0 || skip >= page.total {
            break;
        }
    }
    // Nothing newer seen: the next pass starts where this one did.
    let mark = high.unwrap_or(PollMark {
        at_ms: report.started_at_ms,
        record_id: String::new(),
    });
    store.put_backstop_mark(kind, &mark)?;
    shared.store().durable().await?;
    report.marks.insert(kind.name().to_string(), mark.at_ms);
    Ok(())
}

/// The instant whose UTC day the backstop asks for: `since_ms`, or the start of its local
/// day in the tenant's zone when that is earlier. Virtuous filters `Last Modified Date` by day
/// (`MM/DD/YYYY`), in a zone it does not document; starting at the earlier of the two day
/// starts never skips the hours between local and UTC midnight (at the cost of re-reading
/// them, which the stale-update guard drops).
pub fn day_filter_start(since_ms: u64, time_zone: &str) -> u64 {
    let local_day_start = (|| {
        let tz = jiff::tz::TimeZone::get(time_zone).ok()?;
        let at = jiff::Timestamp::from_millisecond(i64::try_from(since_ms).ok()?).ok()?;
        let start = at.to_zoned(tz).start_of_day().ok()?;
        u64::try_from(start.timestamp().as_millisecond()).ok()
    })();
    local_day_start.map_or(since_ms, |start| start.min(since_ms))
}

/// Re-reads waiting records: one call per kind and up to [`REREAD_MAX`] records. Records
/// Virtuous no longer returns are dropped from the list (deleted, or the backstop poll will
/// see them).
/// `Err((reason, retry in ms))` when a call was refused by the budget or failed.
pub async fn reread_pass(shared: Arc<TenantShared>) -> Result<Offered, (String, u64)> {
    let mut total = Offered::default();
    let pass_started_ms = shared.clock.now_ms();
    let waiting = shared
        .tenant_store()
        .rereads(REREAD_MAX * 4)
        .map_err(failed)?;
    for kind in ChangeKind::ALL.into_iter().filter(|kind| kind.queryable()) {
        let ids: Vec<String> = waiting
            .iter()
            .filter(|request| request.kind == kind)
            .take(REREAD_MAX)
            .map(|request| request.id.clone())
            .collect();
        if ids.is_empty() {
            continue;
        }
        let now_ms = shared.clock.now_ms();
        if let Err(wait_ms) = shared.try_spend_reconcile_call(now_ms) {
            return Err((
                format!("the budget refused the re-read; next in {wait_ms} ms"),
                wait_ms,
            ));
        }
        metrics::counter!(crate::metrics::PULL_CALLS_TOTAL).increment(1);
        let (reply, page) = shared.crm().read_records(kind, &ids).await;
        shared.settle_reconcile_call(&reply, shared.clock.now_ms());
        let Some(page) = page else {
            return Err((
                format!(
                    "the {} re-read answered {}",
                    kind.name(),
                    reply
                        .facts
                        .status
                        .map_or_else(|| "nothing".to_string(), |status| status.to_string())
                ),
                REREAD_RETRY_MS,
            ));
        };
        let offered = offer(&shared, &page.changes, ChangeVia::Reread).map_err(failed)?;
        let done: Vec<(ChangeKind, String)> = ids.into_iter().map(|id| (kind, id)).collect();
        shared
            .tenant_store()
            .finish_rereads(&done, pass_started_ms)
            .map_err(failed)?;
        shared.store().durable().await.map_err(failed)?;
        offered.count(ChangeVia::Reread);
        if offered.logged > 0 {
            shared.pull_wake.notify_waiters();
        }
        total.add(offered);
    }
    Ok(total)
}

fn failed(error: StoreError) -> (String, u64) {
    (error.to_string(), REREAD_RETRY_MS)
}

/// Drops changes every destination and two-way pair has and the retention no longer keeps.
pub fn prune(shared: &TenantShared) -> Result<u64, StoreError> {
    let settings = shared.settings().pull;
    let store = shared.tenant_store();
    // The newest change always stays: the log's head numbers the next one.
    let mut below = store.change_log_head()?;
    // Every destination's checkpoint, and every two-way pair's (configured, running or not).
    let names = shared
        .destinations()
        .iter()
        .map(|spec| spec.name.clone())
        .chain(
            shared
                .settings()
                .two_way
                .iter()
                .map(|pair| super::two_way::checkpoint_name(&pair.pair)),
        )
        .collect::<Vec<_>>();
    for name in names {
        below = below.min(store.destination_checkpoint(&name)?.seq.saturating_add(1));
    }
    let before_ms = shared.clock.now_ms().saturating_sub(settings.retention_ms);
    store.prune_changes(below, before_ms, PRUNE_MAX)
}

#[cfg(test)]
mod tests {
    use super::day_filter_start;

    #[test]
    fn the_day_filter_starts_no_later_than_the_local_day() {
        // Goal: 03:00 UTC on Dec 7 is still Dec 6 in Chicago: the filter starts at Chicago's midnight (06:00 UTC on Dec 6); in UTC at that day's midnight; an unknown zone leaves the instant as it is.
        let since = 1_796_612_400_000; // 2026-12-07T03:00:00Z
        assert_eq!(
            day_filter_start(since, "America/Chicago"),
            1_796_536_800_000
        );
        assert_eq!(day_filter_start(since, "UTC"), 1_796_601_600_000);
        assert_eq!(day_filter_start(since, "No/Such_Zone"), since);
    }
}
