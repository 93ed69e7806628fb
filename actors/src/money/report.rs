//! The comparison (pure): the source's money facts against the Virtuous gifts a job read,
//! per day, project and currency, and the differences by transaction id.
//!
//! Rules:
//! - Source side: facts of days `from..=to`; a refunded fact counts nothing (its amount left
//!   the sums when its reversal was accepted).
//! - Virtuous side: gifts whose `giftDate` is in `from..=to`; a reversal
//!   (`ReversingTransaction`) subtracts its amount (whatever its sign) from the gift it
//!   reverses (found by Virtuous id among the gifts read, whatever the gift's day); a gift
//!   reversed to zero counts nothing. Reversals whose gift was not read are counted apart.
//! - Per transaction id, the source's net (0 when refunded) against the sum of Virtuous's
//!   nets for that id: both zero (or absent) → nothing to say; one side absent →
//!   `missing_in_virtuous` / `only_in_virtuous`; amounts or currencies differ →
//!   `amount_differs`; same money on another project → `project_differs`. Each differing id
//!   is listed once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Differences kept inline in a report (the counts are complete).
pub const DIFFERENCES_INLINE_MAX: usize = 1_000;

/// One money fact of the source, as the report reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFact {
    pub transaction_id: String,
    pub day: String,
    pub project: String,
    pub amount_minor: i64,
    pub currency: String,
    pub refunded: bool,
}

/// One Virtuous gift a job read (stored between pages, JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtuousRow {
    pub virtuous_id: String,
    pub transaction_id: Option<String>,
    /// `giftType` is `ReversingTransaction`.
    pub is_reversal: bool,
    /// For a reversal: the Virtuous id of the gift it reverses.
    pub reversed_gift_id: Option<String>,
    /// `YYYY-MM-DD`; `None` when Virtuous gave no readable date.
    pub day: Option<String>,
    /// First designation's project code, `""` when none.
    pub project: String,
    /// Lower case.
    pub currency: String,
    /// `None` when Virtuous gave no readable amount.
    pub amount_minor: Option<i64>,
}

/// Count and sum of one side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sums {
    pub count: u64,
    pub amount_minor: i64,
}

impl Sums {
    fn add(&mut self, amount_minor: i64) {
        self.count += 1;
        self.amount_minor = self.amount_minor.saturating_add(amount_minor);
    }
}

/// One day, project and currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayRow {
    pub day: String,
    pub project: String,
    pub currency: String,
    pub source: Sums,
    pub virtuous: Sums,
}

/// One currency's totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrencyTotals {
    pub currency: String,
    pub source: Sums,
    pub virtuous: Sums,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DifferenceKind {
    /// The source gave it; Virtuous has no gift for it in the range.
    MissingInVirtuous,
    /// As `MissingInVirtuous`, but the record is still waiting for Virtuous's import
    /// (submitted, not confirmed): not counted as a mismatch.
    AwaitingImport,
    /// Both have it; amounts (net of refunds and reversals) or currencies differ.
    AmountDiffers,
    /// Same money, another project.
    ProjectDiffers,
    /// Virtuous holds it under our `transactionSource`; the source gave us no such payment.
    OnlyInVirtuous,
}

impl DifferenceKind {
    pub fn name(self) -> &'static str {
        match self {
            DifferenceKind::MissingInVirtuous => "missing_in_virtuous",
            DifferenceKind::AwaitingImport => "awaiting_import",
            DifferenceKind::AmountDiffers => "amount_differs",
            DifferenceKind::ProjectDiffers => "project_differs",
            DifferenceKind::OnlyInVirtuous => "only_in_virtuous",
        }
    }
}

/// One transaction id the two sides disagree on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    pub transaction_id: String,
    pub kind: DifferenceKind,
    /// The source's day, else Virtuous's.
    pub day: String,
    /// The source's net (0 when refunded); `None` when the source has no such payment.
    pub source_amount_minor: Option<i64>,
    pub source_currency: Option<String>,
    pub source_project: Option<String>,
    /// Virtuous's net for the id; `None` when it has no gift for it.
    pub virtuous_amount_minor: Option<i64>,
    pub virtuous_currency: Option<String>,
    pub virtuous_project: Option<String>,
    /// The Virtuous gifts carrying the id (two or more: a duplicate).
    pub virtuous_ids: Vec<String>,
}

/// A job's comparison.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoneyReport {
    /// No mismatch (differences awaiting import are not mismatches).
    pub clean: bool,
    /// Differences that are mismatches (every kind but `awaiting_import`).
    pub mismatches: u64,
    /// By kind name, every difference (awaiting import included).
    pub differences_by_kind: BTreeMap<String, u64>,
    /// The differences, by transaction id, the first [`DIFFERENCES_INLINE_MAX`].
    pub differences: Vec<Difference>,
    pub days: Vec<DayRow>,
    pub totals: Vec<CurrencyTotals>,
    /// Gifts (and reversals) Virtuous returned for the query, whatever their day.
    pub virtuous_gifts_read: u64,
    /// Rows without a readable transaction id, date or amount (left out).
    pub virtuous_unreadable: u64,
    /// Reversals whose gift was not among those read (left out).
    pub reversals_unmatched: u64,
}

/// One side's view of one transaction id.
#[derive(Debug, Clone, Default)]
struct Side {
    amount_minor: i64,
    currency: Option<String>,
    currencies_differ: bool,
    project: Option<String>,
    projects_differ: bool,
    day: Option<String>,
    virtuous_ids: Vec<String>,
}

impl Side {
    fn take(&mut self, amount_minor: i64, currency: &str, project: &str, day: &str) {
        self.amount_minor = self.amount_minor.saturating_add(amount_minor);
        match &self.currency {
            None => self.currency = Some(currency.to_string()),
            Some(known) if known != currency => self.currencies_differ = true,
            Some(_) => {}
        }
        match &self.project {
            None => self.project = Some(project.to_string()),
            Some(known) if known != project => self.projects_differ = true,
            Some(_) => {}
        }
        self.day.get_or_insert_with(|| day.to_string());
    }
}

/// Compares `facts` (those of days outside `from..=to` are left out) with `rows`.
/// `awaiting_import(transaction id)`: the record is still waiting for Virtuous's import, so
/// its absence there is [`DifferenceKind::AwaitingImport`], not a mismatch.
pub fn build_report(
    from: &str,
    to: &str,
    facts: &[SourceFact],
    rows: &[VirtuousRow],
    awaiting_import: &dyn Fn(&str) -> bool,
) -> MoneyReport {
    let in_range = |day: &str| from <= day && day <= to;
    let mut report = MoneyReport {
        virtuous_gifts_read: rows.len() as u64,
        ..MoneyReport::default()
    };
    let mut days: BTreeMap<(String, String, String), (Sums, Sums)> = BTreeMap::new();
    let mut source: BTreeMap<String, Side> = BTreeMap::new();
    for fact in facts.iter().filter(|fact| in_range(&fact.day)) {
        let net = if fact.refunded { 0 } else { fact.amount_minor };
        if !fact.refunded {
            days.entry((
                fact.day.clone(),
                fact.project.clone(),
                fact.currency.clone(),
            ))
            .or_default()
            .0
            .add(net);
        }
        source.entry(fact.transaction_id.clone()).or_default().take(
            net,
            &fact.currency,
            &fact.project,
            &fact.day,
        );
    }
    let virtuous = virtuous_sides(rows, &in_range, &mut days, &mut report);
    report.days = days
        .into_iter()
        .map(|((day, project, currency), (source, virtuous))| DayRow {
            day,
            project,
            currency,
            source,
            virtuous,
        })
        .collect();
    let mut totals: BTreeMap<String, (Sums, Sums)> = BTreeMap::new();
    for row in &report.days {
        let slot = totals.entry(row.currency.clone()).or_default();
        slot.0.count += row.source.count;
        slot.0.amount_minor = slot.0.amount_minor.saturating_add(row.source.amount_minor);
        slot.1.count += row.virtuous.count;
        slot.1.amount_minor = slot
            .1
            .amount_minor
            .saturating_add(row.virtuous.amount_minor);
    }
    report.totals = totals
        .into_iter()
        .map(|(currency, (source, virtuous))| CurrencyTotals {
            currency,
            source,
            virtuous,
        })
        .collect();
    let mut differences = differences(&source, &virtuous);
    for difference in &mut differences {
        if difference.kind == DifferenceKind::MissingInVirtuous
            && awaiting_import(&difference.transaction_id)
        {
            difference.kind = DifferenceKind::AwaitingImport;
        }
    }
    set_differences(&mut report, differences);
    report
}

/// The Virtuous nets per transaction id (reversals applied; gifts of days in range), and
/// each gift's net in `days`.
fn virtuous_sides(
    rows: &[VirtuousRow],
    in_range: &dyn Fn(&str) -> bool,
    days: &mut BTreeMap<(String, String, String), (Sums, Sums)>,
    report: &mut MoneyReport,
) -> BTreeMap<String, Side> {
    // Gifts by Virtuous id with their net so far (a BTreeMap: deterministic order).
    let mut gifts: BTreeMap<&str, (&VirtuousRow, &str, &str, i64)> = BTreeMap::new();
    for row in rows.iter().filter(|row| !row.is_reversal) {
        match (&row.transaction_id, &row.day, row.amount_minor) {
            (Some(transaction_id), Some(day), Some(amount_minor)) => {
                gifts.insert(&row.virtuous_id, (row, transaction_id, day, amount_minor));
            }
            _ => report.virtuous_unreadable += 1,
        }
    }
    for reversal in rows.iter().filter(|row| row.is_reversal) {
        let target = reversal
            .reversed_gift_id
            .as_deref()
            .and_then(|id| gifts.get_mut(id));
        match (target, reversal.amount_minor) {
            (Some(gift), Some(amount_minor)) => {
                gift.3 = gift.3.saturating_sub(amount_minor.saturating_abs())
            }
            (Some(_), None) => report.virtuous_unreadable += 1,
            (None, _) => report.reversals_unmatched += 1,
        }
    }
    let mut sides: BTreeMap<String, Side> = BTreeMap::new();
    for (row, transaction_id, day, net) in gifts.into_values() {
        if !in_range(day) {
            continue;
        }
        if net != 0 {
            days.entry((day.to_string(), row.project.clone(), row.currency.clone()))
                .or_default()
                .1
                .add(net);
        }
        let side = sides.entry(transaction_id.to_string()).or_default();
        side.take(net, &row.currency, &row.project, day);
        side.virtuous_ids.push(row.virtuous_id.clone());
    }
    sides
}

/// Every transaction id the sides disagree on, once, in id order.
fn differences(
    source: &BTreeMap<String, Side>,
    virtuous: &BTreeMap<String, Side>,
) -> Vec<Difference> {
    let mut ids: Vec<&String> = source.keys().chain(virtuous.keys()).collect();
    ids.sort();
    ids.dedup();
    ids.into_iter()
        .filter_map(|id| {
            let ours = source.get(id);
            let theirs = virtuous.get(id);
            let kind = difference_kind(ours, theirs)?;
            let day = ours
                .and_then(|side| side.day.clone())
                .or_else(|| theirs.and_then(|side| side.day.clone()))
                .unwrap_or_default();
            Some(Difference {
                transaction_id: id.clone(),
                kind,
                day,
                source_amount_minor: ours.map(|side| side.amount_minor),
                source_currency: ours.and_then(|side| side.currency.clone()),
                source_project: ours.and_then(|side| side.project.clone()),
                virtuous_amount_minor: theirs.map(|side| side.amount_minor),
                virtuous_currency: theirs.and_then(|side| side.currency.clone()),
                virtuous_project: theirs.and_then(|side| side.project.clone()),
                virtuous_ids: theirs
                    .map(|side| side.virtuous_ids.clone())
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// The one rule deciding whether (and how) one transaction id differs.
fn difference_kind(ours: Option<&Side>, theirs: Option<&Side>) -> Option<DifferenceKind> {
    match (ours, theirs) {
        (None, None) => None,
        (Some(ours), None) => (ours.amount_minor != 0).then_some(DifferenceKind::MissingInVirtuous),
        (None, Some(theirs)) => {
            (theirs.amount_minor != 0).then_some(DifferenceKind::OnlyInVirtuous)
        }
        (Some(ours), Some(theirs)) => {
            if ours.amount_minor == 0 && theirs.amount_minor == 0 {
                None
            } else if ours.amount_minor != theirs.amount_minor
                || ours.currency != theirs.currency
                || ours.currencies_differ
                || theirs.currencies_differ
            {
                Some(DifferenceKind::AmountDiffers)
            } else if ours.project != theirs.project
                || ours.projects_differ
                || theirs.projects_differ
            {
                Some(DifferenceKind::ProjectDiffers)
            } else {
                None
            }
        }
    }
}

/// Stores `differences` in the report: counts by kind, the inline list, `clean`.
fn set_differences(report: &mut MoneyReport, differences: Vec<Difference>) {
    report.differences_by_kind.clear();
    for difference in &differences {
        *report
            .differences_by_kind
            .entry(difference.kind.name().to_string())
            .or_default() += 1;
    }
    report.mismatches = differences
        .iter()
        .filter(|difference| difference.kind != DifferenceKind::AwaitingImport)
        .count() as u64;
    report.clean = report.mismatches == 0;
    report.differences = differences;
    report.differences.truncate(DIFFERENCES_INLINE_MAX);
}

#[cfg(test)]
#[path = "report_tests.rs"]
mod tests;
