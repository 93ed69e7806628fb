//! One reconciliation pass (ARCHITECTURE.md, "Confirmation"): for each transaction source with
//! unconfirmed gifts, page `FullGift` by `Transaction Source` and `Create Date ≥ oldest
//! unconfirmed submission − 1 day` until every page is read, match `transactionId` locally,
//! confirm, flag duplicates, and move records past `needs_review_after_ms` to `needs_review`.
//!
//! Every page is one call drawn from the budget first ([`ReconcileBudget`]). A refused call
//! ends the pass early (what was read is still matched) and says when to come back.
//!
//! Contacts are not reconciled here: the `Crm` port has no contact query yet, so contacts stay
//! `submitted` unless a `ContactCreate`/`ContactUpdate` webhook names their reference; they are
//! never moved to `needs_review` (that would alert on every contact).

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::Serialize;

use crate::gift_match::{self, report_duplicate, Candidate};
use crate::hub::ReconcileBudget;
use crate::ports::{Clock, Crm, CrmGift};
use crate::store::confirm_ops::{ConfirmOutcome, Confirmation, UnconfirmedSource};
use crate::store::{RecordKind, StoreError, TenantStore, Unconfirmed};

/// The query window reaches this far before the oldest unconfirmed submission (Virtuous's
/// `Create Date` is a calendar day in the org's zone; a day of slack covers the offset).
pub const QUERY_SLACK_MS: u64 = 86_400_000;
/// Alert raised when records move to `needs_review`.
pub const ALERT_NEEDS_REVIEW: &str = "needs_review";

/// What a pass needs to know.
#[derive(Debug, Clone, Copy)]
pub struct PassSettings {
    pub query_take: u32,
    pub needs_review_after_ms: u64,
}

/// What one pass did (shown in the reconciler's observed state).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PassReport {
    pub sources: u64,
    pub pages_read: u64,
    pub gifts_seen: u64,
    pub confirmed: u64,
    pub duplicates: u64,
    pub needs_review: u64,
    /// Why the pass ended before reading everything (budget, an error answer…).
    pub stopped_early: Option<String>,
    /// The budget asked to come back after this long.
    #[serde(skip)]
    pub budget_wait_ms: Option<u64>,
}

/// Everything a pass talks to.
pub struct PassContext<'a> {
    pub tenant_id: &'a str,
    pub store: &'a TenantStore,
    pub crm: Arc<dyn Crm>,
    pub budget: &'a dyn ReconcileBudget,
    pub clock: &'a dyn Clock,
    /// False once this pass's actor generation was replaced: stop between pages.
    pub still_current: &'a dyn Fn() -> bool,
}

/// Runs one pass. Store errors end it with `Err` (the actor reports them).
pub async fn run_pass(
    context: PassContext<'_>,
    settings: PassSettings,
) -> Result<PassReport, StoreError> {
    let mut report = PassReport::default();
    let sources = context.store.unconfirmed_by_source(RecordKind::Gift)?;
    for source in sources {
        report.sources += 1;
        let (gifts, read_everything) =
            read_all_pages(&context, &source, settings, &mut report).await;
        report.gifts_seen += gifts.len() as u64;
        let confirmations = match_gifts(&source, &gifts);
        let outcomes = context
            .store
            .confirm_records(&confirmations, context.clock.now_ms())?;
        let mut confirmed_now = BTreeSet::new();
        for (confirmation, outcome) in confirmations.iter().zip(&outcomes) {
            match outcome {
                ConfirmOutcome::Confirmed { .. } => {
                    report.confirmed += 1;
                    confirmed_now.insert(confirmation.source_id.clone());
                }
                ConfirmOutcome::DuplicateDetected { all_ids, .. } => {
                    report.duplicates += 1;
                    confirmed_now.insert(confirmation.source_id.clone());
                    report_duplicate(
                        context.store,
                        context.tenant_id,
                        confirmation,
                        all_ids,
                        context.clock.now_ms(),
                    );
                }
                _ => {}
            }
        }
        if read_everything {
            report.needs_review += review_stale(
                &context,
                &source,
                &confirmed_now,
                settings.needs_review_after_ms,
            )?;
        }
        if report.stopped_early.is_some() {
            break;
        }
    }
    crate::metrics::count_confirmations("reconcile", report.confirmed + report.duplicates);
    Ok(report)
}

/// Pages the source's gifts until every page is read; `false` when the pass stopped first.
async fn read_all_pages(
    context: &PassContext<'_>,
    source: &UnconfirmedSource,
    settings: PassSettings,
    report: &mut PassReport,
) -> (Vec<CrmGift>, bool) {
    let since_ms = source.oldest_submitted_at_ms.saturating_sub(QUERY_SLACK_MS);
    let take = settings.query_take.clamp(1, 1_000);
    let mut gifts = Vec::new();
    let mut skip = 0u64;
    loop {
        if !(context.still_current)() {
            report.stopped_early = Some("replaced by a newer reconciler".into());
            return (gifts, false);
        }
        if let Err(wait_ms) = context
            .budget
            .try_spend_reconcile_call(context.clock.now_ms())
        {
            report.stopped_early = Some("budget refused a query".into());
            report.budget_wait_ms = Some(wait_ms);
            return (gifts, false);
        }
        let (reply, page) = context
            .crm
            .query_gifts(&source.transaction_source, since_ms, skip, take)
            .await;
        context
            .budget
            .settle_reconcile_call(&reply, context.clock.now_ms());
        let page = match (reply.facts.status, page) {
            (Some(200..=299), Some(page)) => page,
            (status, _) => {
                report.stopped_early = Some(format!(
                    "FullGift query for {} answered {}: {}",
                    source.transaction_source,
                    status.map_or_else(|| "nothing".to_string(), |s| s.to_string()),
                    reply.facts.message.unwrap_or_default()
                ));
                return (gifts, false);
            }
        };
        report.pages_read += 1;
        let page_len = page.gifts.len() as u64;
        gifts.extend(page.gifts);
        skip += page_len;
        if page_len == 0 || page_len < u64::from(take) || skip >= page.total {
            return (gifts, true);
        }
    }
}

/// Matches the gifts Virtuous reports against the source's unconfirmed records (pure).
///
/// The one matcher ([`gift_match`]): gifts are grouped by `transactionId`; reversals and gifts of another transaction source
/// are skipped. A group matching an unconfirmed record confirms it with every id of the
/// group (two or more = a duplicate). A group matching no unconfirmed record may belong to a
/// record confirmed (or sent to review) earlier: it is offered to the records of the same
/// ingress sources, and the store decides (same id: unchanged; another id: duplicate;
/// `needs_review`: confirmed late; no record: ignored).
pub fn match_gifts(source: &UnconfirmedSource, gifts: &[CrmGift]) -> Vec<Confirmation> {
    let ingress_sources: BTreeSet<&str> = source
        .records
        .values()
        .flatten()
        .map(|item| item.source.as_str())
        .collect();
    let groups = gift_match::group_gifts(gifts, Some(&source.transaction_source));
    gift_match::confirmations(
        groups.into_iter().map(|group| {
            let candidates = match source.records.get(&group.transaction_id) {
                Some(items) => items
                    .iter()
                    .map(|item| Candidate {
                        kind: item.kind,
                        source: item.source.clone(),
                        source_id: item.source_id.clone(),
                    })
                    .collect(),
                None => ingress_sources
                    .iter()
                    .map(|ingress| Candidate {
                        kind: RecordKind::Gift,
                        source: (*ingress).to_string(),
                        source_id: group.transaction_id.clone(),
                    })
                    .collect(),
            };
            (candidates, group.virtuous_ids)
        }),
        "reconcile",
    )
}

/// Moves this source's records that waited past the window (and were not confirmed now) to
/// `needs_review`, with one alert for the batch.
fn review_stale(
    context: &PassContext<'_>,
    source: &UnconfirmedSource,
    confirmed_now: &BTreeSet<String>,
    needs_review_after_ms: u64,
) -> Result<u64, StoreError> {
    let now_ms = context.clock.now_ms();
    let stale: Vec<Unconfirmed> = source
        .records
        .values()
        .flatten()
        .filter(|item| !confirmed_now.contains(&item.source_id))
        .filter(|item| now_ms.saturating_sub(item.submitted_at_ms) >= needs_review_after_ms)
        .cloned()
        .collect();
    if stale.is_empty() {
        return Ok(0);
    }
    let moved = context.store.mark_needs_review(&stale, now_ms)?;
    if moved > 0 {
        let message = format!(
            "{moved} gift(s) of transaction source {} not confirmed by Virtuous {} h after submission (e.g. transactionId {}); check the Virtuous import queue",
            source.transaction_source,
            needs_review_after_ms / 3_600_000,
            stale[0].transaction_id
        );
        if context
            .store
            .raise_alert(ALERT_NEEDS_REVIEW, &message, now_ms)
            .unwrap_or(false)
        {
            // The message quotes a source id: escaped, so none can forge a log line.
            tracing::error!(tenant_id = %context.tenant_id, records = moved, "{}", message.escape_debug());
        }
    }
    Ok(moved)
}

#[cfg(test)]
#[path = "pass_tests.rs"]
pub(crate) mod tests;
