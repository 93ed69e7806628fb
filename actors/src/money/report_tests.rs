use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;

fn fact(id: &str, day: &str, amount_minor: i64, refunded: bool) -> SourceFact {
    SourceFact {
        transaction_id: id.into(),
        day: day.into(),
        project: "GEN".into(),
        amount_minor,
        currency: "usd".into(),
        refunded,
    }
}

fn gift(virtuous_id: &str, id: &str, day: &str, amount_minor: i64) -> VirtuousRow {
    VirtuousRow {
        virtuous_id: virtuous_id.into(),
        transaction_id: Some(id.into()),
        is_reversal: false,
        reversed_gift_id: None,
        day: Some(day.into()),
        project: "GEN".into(),
        currency: "usd".into(),
        amount_minor: Some(amount_minor),
    }
}

fn reversal(virtuous_id: &str, of: &str, day: &str, amount_minor: i64) -> VirtuousRow {
    VirtuousRow {
        is_reversal: true,
        reversed_gift_id: Some(of.into()),
        transaction_id: Some(format!("{of}-reversal")),
        ..gift(virtuous_id, "", day, amount_minor)
    }
}

fn never(_: &str) -> bool {
    false
}

fn kinds(report: &MoneyReport) -> Vec<(String, DifferenceKind)> {
    report
        .differences
        .iter()
        .map(|d| (d.transaction_id.clone(), d.kind))
        .collect()
}

#[test]
fn matching_sides_with_a_refund_and_its_reversal_are_clean() {
    // Goal: a refunded payment and Virtuous's gift + reversal (on another day) net out; the
    // rest matches day by day.
    let facts = [
        fact("pi_1", "2026-01-01", 1000, false),
        fact("pi_2", "2026-01-02", 2500, true),
    ];
    let rows = [
        gift("1", "pi_1", "2026-01-01", 1000),
        gift("2", "pi_2", "2026-01-02", 2500),
        reversal("3", "2", "2026-02-10", -2500),
    ];
    let report = build_report("2026-01-01", "2026-01-31", &facts, &rows, &never);
    assert!(report.clean, "{report:?}");
    assert!(report.differences.is_empty());
    assert_eq!(
        report.days.len(),
        1,
        "the refunded day has no money: {:?}",
        report.days
    );
    assert_eq!(
        report.days[0].source,
        Sums {
            count: 1,
            amount_minor: 1000
        }
    );
    assert_eq!(report.days[0].virtuous, report.days[0].source);
    assert_eq!(report.virtuous_gifts_read, 3);
    assert_eq!(report.reversals_unmatched, 0);
}

#[test]
fn each_kind_of_difference_is_named_by_its_transaction_id() {
    // Goal: missing, awaiting import, amount, project, only-in-Virtuous and a duplicate are
    // each listed once, and only awaiting import is not a mismatch.
    let mut other_project = fact("pi_p", "2026-01-01", 700, false);
    other_project.project = "SPRING".into();
    let facts = [
        fact("pi_missing", "2026-01-01", 100, false),
        fact("pi_waiting", "2026-01-01", 100, false),
        fact("pi_amount", "2026-01-01", 500, false),
        other_project,
        fact("pi_dup", "2026-01-02", 300, false),
        fact("pi_refunded_not_reversed", "2026-01-02", 900, true),
        fact("pi_outside", "2026-03-01", 100, false),
    ];
    let rows = [
        gift("1", "pi_amount", "2026-01-01", 499),
        gift("2", "pi_p", "2026-01-01", 700),
        gift("3", "pi_dup", "2026-01-02", 300),
        gift("4", "pi_dup", "2026-01-02", 300),
        gift("5", "pi_refunded_not_reversed", "2026-01-02", 900),
        gift("6", "pi_staff", "2026-01-03", 50),
        gift("7", "pi_late", "2026-04-01", 50),
        reversal("8", "999", "2026-01-03", -10),
    ];
    let waiting = |id: &str| id == "pi_waiting";
    let report = build_report("2026-01-01", "2026-01-31", &facts, &rows, &waiting);
    assert_eq!(
        kinds(&report),
        vec![
            ("pi_amount".into(), DifferenceKind::AmountDiffers),
            ("pi_dup".into(), DifferenceKind::AmountDiffers),
            ("pi_missing".into(), DifferenceKind::MissingInVirtuous),
            ("pi_p".into(), DifferenceKind::ProjectDiffers),
            (
                "pi_refunded_not_reversed".into(),
                DifferenceKind::AmountDiffers
            ),
            ("pi_staff".into(), DifferenceKind::OnlyInVirtuous),
            ("pi_waiting".into(), DifferenceKind::AwaitingImport),
        ]
    );
    assert_eq!(report.mismatches, 6);
    assert!(!report.clean);
    assert_eq!(report.differences_by_kind["awaiting_import"], 1);
    let dup = &report.differences[1];
    assert_eq!(dup.virtuous_ids, vec!["3".to_string(), "4".to_string()]);
    assert_eq!(
        (dup.source_amount_minor, dup.virtuous_amount_minor),
        (Some(300), Some(600))
    );
    assert_eq!(report.reversals_unmatched, 1);
}

#[test]
fn awaiting_import_alone_is_clean_and_unreadable_rows_are_counted() {
    // Goal: a report whose only differences wait for the import is clean; rows without a
    // date or amount are counted, not compared.
    let facts = [fact("pi_1", "2026-01-01", 100, false)];
    let mut no_day = gift("1", "pi_x", "2026-01-01", 5);
    no_day.day = None;
    let mut no_amount = gift("2", "pi_y", "2026-01-01", 5);
    no_amount.amount_minor = None;
    let report = build_report(
        "2026-01-01",
        "2026-01-01",
        &facts,
        &[no_day, no_amount],
        &|_| true,
    );
    assert!(report.clean);
    assert_eq!(report.mismatches, 0);
    assert_eq!(report.virtuous_unreadable, 2);
}

fn any_fact() -> impl Strategy<Value = (u8, u8, u8, i64, u8, bool)> {
    // (transaction id, day, project, amount, currency, refunded)
    (0u8..30, 1u8..6, 0u8..3, -5i64..2_000, 0u8..2, any::<bool>())
}

fn any_row() -> impl Strategy<Value = (u8, u8, u8, i64, u8, Option<u8>)> {
    // (transaction id, day, project, amount, currency, reverses the gift at this index)
    (
        0u8..40,
        0u8..7,
        0u8..3,
        -5i64..2_000,
        0u8..2,
        prop::option::weighted(0.2, 0u8..40),
    )
}

const CURRENCIES: [&str; 2] = ["usd", "eur"];

fn day_of(day: u8) -> String {
    format!("2026-01-{:02}", day.max(1))
}

proptest! {
    #[test]
    fn day_sums_add_up_to_the_totals_and_every_differing_id_is_listed_once(
        raw_facts in prop::collection::vec(any_fact(), 0..40),
        raw_rows in prop::collection::vec(any_row(), 0..50),
    ) {
        // Goal: for any facts and Virtuous gifts (duplicates, reversals, other days, other
        // currencies), the per-day rows add up to the per-currency totals on both sides, and
        // the listed ids are exactly those whose nets, currency or project differ, once each.
        let mut seen = BTreeSet::new();
        let facts: Vec<SourceFact> = raw_facts
            .into_iter()
            .filter(|f| seen.insert(f.0))
            .map(|(id, day, project, amount, currency, refunded)| SourceFact {
                transaction_id: format!("t{id}"),
                day: day_of(day),
                project: format!("P{project}"),
                amount_minor: amount,
                currency: CURRENCIES[currency as usize].into(),
                refunded,
            })
            .collect();
        let mut rows: Vec<VirtuousRow> = raw_rows
            .iter()
            .enumerate()
            .map(|(index, &(id, day, project, amount, currency, reverses))| VirtuousRow {
                virtuous_id: format!("v{index}"),
                transaction_id: Some(format!("t{id}")),
                is_reversal: reverses.is_some(),
                reversed_gift_id: reverses.map(|of| format!("v{of}")),
                day: (day > 0).then(|| day_of(day)),
                project: format!("P{project}"),
                currency: CURRENCIES[currency as usize].into(),
                amount_minor: Some(amount),
            })
            .collect();
        rows.reverse();
        let (from, to) = ("2026-01-02", "2026-01-04");
        let report = build_report(from, to, &facts, &rows, &never);

        // Per-day rows add up to the totals, per currency and side.
        for totals in &report.totals {
            let rows_of = report.days.iter().filter(|row| row.currency == totals.currency);
            let (mut source, mut virtuous) = (Sums::default(), Sums::default());
            for row in rows_of {
                source.count += row.source.count;
                source.amount_minor += row.source.amount_minor;
                virtuous.count += row.virtuous.count;
                virtuous.amount_minor += row.virtuous.amount_minor;
            }
            prop_assert_eq!(source, totals.source);
            prop_assert_eq!(virtuous, totals.virtuous);
        }
        // The source totals are the unrefunded facts in range.
        let in_range = |day: &str| from <= day && day <= to;
        for currency in CURRENCIES {
            let expected: i64 = facts
                .iter()
                .filter(|f| in_range(&f.day) && !f.refunded && f.currency == currency)
                .map(|f| f.amount_minor)
                .sum();
            let reported = report
                .totals
                .iter()
                .find(|t| t.currency == currency)
                .map_or(0, |t| t.source.amount_minor);
            prop_assert_eq!(expected, reported);
        }

        // An oracle of the differing ids, computed apart: nets per id on both sides.
        let gifts: BTreeMap<&str, &VirtuousRow> = rows
            .iter()
            .filter(|r| !r.is_reversal && r.day.is_some())
            .map(|r| (r.virtuous_id.as_str(), r))
            .collect();
        let mut gift_net: BTreeMap<&str, i64> =
            gifts.iter().map(|(id, r)| (*id, r.amount_minor.unwrap())).collect();
        for reversal in rows.iter().filter(|r| r.is_reversal) {
            if let Some(net) = gift_net.get_mut(reversal.reversed_gift_id.as_deref().unwrap()) {
                *net -= reversal.amount_minor.unwrap().abs();
            }
        }
        type Net = (i64, BTreeSet<String>, BTreeSet<String>, bool);
        let mut theirs: BTreeMap<String, Net> = BTreeMap::new();
        for (id, row) in &gifts {
            if !in_range(row.day.as_deref().unwrap()) {
                continue;
            }
            let slot = theirs.entry(row.transaction_id.clone().unwrap()).or_default();
            slot.0 += gift_net[id];
            slot.1.insert(row.currency.clone());
            slot.2.insert(row.project.clone());
            slot.3 = true;
        }
        let mut ours: BTreeMap<String, Net> = BTreeMap::new();
        for f in facts.iter().filter(|f| in_range(&f.day)) {
            let slot = ours.entry(f.transaction_id.clone()).or_default();
            slot.0 += if f.refunded { 0 } else { f.amount_minor };
            slot.1.insert(f.currency.clone());
            slot.2.insert(f.project.clone());
            slot.3 = true;
        }
        let mut expected = BTreeSet::new();
        for id in ours.keys().chain(theirs.keys()) {
            let empty = Net::default();
            let (a, b) = (ours.get(id).unwrap_or(&empty), theirs.get(id).unwrap_or(&empty));
            let money_differs = a.0 != b.0;
            let both_nonzero = a.0 != 0 || b.0 != 0;
            let labels_differ = a.3 && b.3 && (a.1 != b.1 || a.2 != b.2);
            if money_differs || (both_nonzero && labels_differ) {
                expected.insert(id.clone());
            }
        }
        let listed: Vec<&String> = report.differences.iter().map(|d| &d.transaction_id).collect();
        let listed_set: BTreeSet<String> = listed.iter().map(|id| (*id).clone()).collect();
        prop_assert_eq!(listed.len(), listed_set.len(), "an id listed twice");
        prop_assert_eq!(listed_set, expected);
        prop_assert_eq!(report.clean, report.differences.is_empty());
    }
}
