//! A deterministic generator of the Stripe Dashboard's payments CSV export (the file the
//! `stripe_payments_export` backfill preset reads), for tests and benchmarks.
//!
//! [`generate_export`] writes, from a seed, N payments in the export's real shape: its
//! column order, an optional UTF-8 BOM and CRLF line ends, quoted descriptions with commas,
//! quotes and line breaks, amounts in major units with thousands separators, zero-decimal
//! currencies, and a mix of succeeded, failed, uncaptured, retried (a failed charge, then a
//! paid one, under one PaymentIntent), fully and partially refunded and disputed payments,
//! plus a share of bad rows. It returns the truth the tests compare against
//! ([`StripeExport`]), and [`live_events`] builds the live events of one of its payments, so
//! the same payment can also arrive by webhook (same ids).

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

mod writer;

pub use writer::{export_amount, export_date, COLUMNS, METADATA_COLUMNS};
use writer::{BadCell, ExportWriter, PaymentCells};

use super::payments::{donor, id_body};
use super::{envelope, objects, Donor, Era, Expected, GeneratedEvent, Payment, PaymentKind};

/// How much of what to generate. Shares are exact: `round(share × payments)` get the trait.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub seed: u64,
    /// Payments that become one gift each.
    pub payments: usize,
    pub bom: bool,
    pub crlf: bool,
    /// Extra rows: charges that failed (no later success), as a share of `payments`.
    pub failed_share: f64,
    /// Extra rows: authorised, never captured charges.
    pub uncaptured_share: f64,
    /// Payments whose PaymentIntent first had a failed charge (an extra, skipped row).
    pub retried_share: f64,
    pub full_refund_share: f64,
    pub partial_refund_share: f64,
    /// Disputed payments; half of them withdrew the funds for good (lost or open), the
    /// other half did not (won, or an inquiry).
    pub dispute_share: f64,
    /// Payments without a PaymentIntent (keyed by their charge).
    pub charge_only_share: f64,
    /// Payments in a zero-decimal currency (`jpy`, `krw`).
    pub zero_decimal_share: f64,
    /// Bad rows, as a share of all data rows.
    pub bad_row_share: f64,
    /// Payments to also send live (chosen among the plain succeeded ones).
    pub live_share: f64,
    /// The newest payment's time; payments spread over the year before.
    pub now_s: i64,
}

impl Default for ExportOptions {
    fn default() -> ExportOptions {
        ExportOptions {
            seed: 1,
            payments: 200,
            bom: true,
            crlf: true,
            failed_share: 0.05,
            uncaptured_share: 0.02,
            retried_share: 0.05,
            full_refund_share: 0.04,
            partial_refund_share: 0.03,
            dispute_share: 0.04,
            charge_only_share: 0.1,
            zero_decimal_share: 0.1,
            bad_row_share: 0.03,
            live_share: 0.05,
            now_s: 1_767_225_600, // 2026-01-01T00:00:00Z
        }
    }
}

/// What happened to a payment after it succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    /// Its PaymentIntent's first charge failed (the row before it).
    Retried,
    FullyRefunded,
    PartiallyRefunded,
    /// A dispute; `withdrawn`: the funds left for good (a reversal and an alert).
    Disputed {
        withdrawn: bool,
    },
}

/// One payment of the export: exactly one gift.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportPayment {
    /// The gift's `transactionId`: the PaymentIntent id, else the charge id.
    pub payment_id: String,
    pub intent_id: Option<String>,
    pub charge_id: String,
    /// Captured, in minor units (the gift's amount, as live).
    pub amount_minor: i64,
    pub refunded_minor: i64,
    pub currency: String,
    pub created_s: i64,
    pub donor: Donor,
    pub designation: Option<String>,
    pub outcome: Outcome,
    /// Its row (the header is row 1).
    pub row: u64,
}

impl ExportPayment {
    /// A reversing transaction follows the gift (full refund, funds withdrawn by a dispute).
    pub fn is_reversed(&self) -> bool {
        matches!(
            self.outcome,
            Outcome::FullyRefunded | Outcome::Disputed { withdrawn: true }
        )
    }

    /// What Virtuous should hold for it: captured minus refunded, nothing when reversed.
    pub fn net_minor(&self) -> i64 {
        if self.is_reversed() {
            0
        } else {
            self.amount_minor - self.refunded_minor
        }
    }
}

/// A generated export and its truth.
#[derive(Debug, Clone)]
pub struct StripeExport {
    /// The file.
    pub bytes: Vec<u8>,
    /// Data rows (the header not counted).
    pub data_rows: u64,
    /// One gift each, in row order.
    pub payments: Vec<ExportPayment>,
    /// Row numbers of the bad rows (rejected), ascending.
    pub bad_rows: Vec<u64>,
    /// Rows that are not payments, with the reason the preset gives.
    pub skipped_rows: Vec<(u64, String)>,
    /// Payments to also send live ([`live_events`]).
    pub live_payment_ids: Vec<String>,
}

impl StripeExport {
    pub fn payment(&self, payment_id: &str) -> Option<&ExportPayment> {
        self.payments.iter().find(|p| p.payment_id == payment_id)
    }
    /// Payments followed by a reversing transaction.
    pub fn reversed_payment_ids(&self) -> Vec<String> {
        let reversed = self.payments.iter().filter(|p| p.is_reversed());
        reversed.map(|p| p.payment_id.clone()).collect()
    }
    pub fn partially_refunded_ids(&self) -> Vec<String> {
        let partial = self
            .payments
            .iter()
            .filter(|p| p.outcome == Outcome::PartiallyRefunded);
        partial.map(|p| p.payment_id.clone()).collect()
    }
    /// Payments whose dispute withdrew the funds (each raises the dispute alert).
    pub fn withdrawn_dispute_ids(&self) -> Vec<String> {
        let disputed = self
            .payments
            .iter()
            .filter(|p| p.outcome == Outcome::Disputed { withdrawn: true });
        disputed.map(|p| p.payment_id.clone()).collect()
    }
}

/// A row before it is written: its kind decides the cells.
#[derive(Debug, Clone)]
enum RowKind {
    /// A payment (index into the payments).
    Payment(usize),
    /// A failed charge (`retry_of`: the payment it preceded).
    Failed {
        retry_of: Option<usize>,
    },
    Uncaptured,
    Bad(BadCell),
}

/// (currency, low, high minor units); `jpy` and `krw` are zero-decimal.
const CURRENCIES: [(&str, i64, i64); 3] = [
    ("usd", 500, 250_000),
    ("eur", 500, 150_000),
    ("cad", 1_000, 120_000),
];
const ZERO_DECIMAL: [(&str, i64, i64); 2] = [("jpy", 1_000, 2_000_000), ("krw", 10_000, 5_000_000)];
const DESIGNATIONS: [&str; 3] = ["GENERAL", "SHELTER", "MEALS"];

/// Exactly `round(share × of)`.
fn exact(share: f64, of: usize) -> usize {
    ((of as f64 * share.clamp(0.0, 1.0)).round() as usize).min(of)
}

/// Generates the export of `options`, deterministically from `options.seed`.
pub fn generate_export(options: &ExportOptions) -> StripeExport {
    let mut rng = StdRng::seed_from_u64(options.seed);
    let count = options.payments;
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(count);
    let half_disputes = exact(options.dispute_share, count);
    for (outcome, share_count) in [
        (
            Outcome::FullyRefunded,
            exact(options.full_refund_share, count),
        ),
        (
            Outcome::PartiallyRefunded,
            exact(options.partial_refund_share, count),
        ),
        (
            Outcome::Disputed { withdrawn: true },
            half_disputes.div_ceil(2),
        ),
        (Outcome::Disputed { withdrawn: false }, half_disputes / 2),
        (Outcome::Retried, exact(options.retried_share, count)),
    ] {
        outcomes.extend(std::iter::repeat(outcome).take(share_count));
    }
    outcomes.truncate(count);
    outcomes.resize(count, Outcome::Succeeded);
    outcomes.shuffle(&mut rng);
    let charge_only = exact(options.charge_only_share, count);
    let zero_decimal = exact(options.zero_decimal_share, count);
    let mut payments: Vec<ExportPayment> = outcomes
        .iter()
        .enumerate()
        .map(|(n, &outcome)| new_payment(&mut rng, options, n, outcome))
        .collect();
    // Traits by position after a shuffle of indices: exact counts, seeded places.
    let mut indices: Vec<usize> = (0..count).collect();
    indices.shuffle(&mut rng);
    for &index in indices.iter().take(zero_decimal) {
        let (currency, low, high) = ZERO_DECIMAL[rng.gen_range(0..ZERO_DECIMAL.len())];
        let payment = &mut payments[index];
        payment.currency = currency.to_string();
        payment.amount_minor = rng.gen_range(low..=high) / 100 * 100;
        payment.refunded_minor = refund_of(&mut rng, payment.outcome, payment.amount_minor);
    }
    indices.shuffle(&mut rng);
    // A retried payment has a PaymentIntent by definition.
    let no_intent = indices
        .iter()
        .filter(|&&index| payments[index].outcome != Outcome::Retried)
        .take(charge_only)
        .copied()
        .collect::<Vec<_>>();
    for index in no_intent {
        payments[index].intent_id = None;
        payments[index].payment_id = payments[index].charge_id.clone();
    }

    let mut rows: Vec<(i64, RowKind)> = Vec::new();
    for (index, payment) in payments.iter().enumerate() {
        if payment.outcome == Outcome::Retried {
            rows.push((
                payment.created_s - 90,
                RowKind::Failed {
                    retry_of: Some(index),
                },
            ));
        }
        rows.push((payment.created_s, RowKind::Payment(index)));
    }
    let span_s = 365 * 86_400;
    for _ in 0..exact(options.failed_share, count) {
        rows.push((
            options.now_s - rng.gen_range(0..span_s),
            RowKind::Failed { retry_of: None },
        ));
    }
    for _ in 0..exact(options.uncaptured_share, count) {
        rows.push((
            options.now_s - rng.gen_range(0..span_s),
            RowKind::Uncaptured,
        ));
    }
    let good_rows = rows.len() as f64;
    let share = options.bad_row_share.clamp(0.0, 0.9);
    let bad_rows = (good_rows * share / (1.0 - share)).round() as usize;
    let bad_cells = [
        BadCell::Amount,
        BadCell::MissingId,
        BadCell::Date,
        BadCell::Currency,
    ];
    for n in 0..bad_rows {
        let time = options.now_s - rng.gen_range(0..span_s);
        rows.push((time, RowKind::Bad(bad_cells[n % bad_cells.len()])));
    }
    // The Dashboard lists the newest first.
    rows.sort_by_key(|(created_s, _)| std::cmp::Reverse(*created_s));

    let mut writer = ExportWriter::new(options);
    let mut export = StripeExport {
        bytes: Vec::new(),
        data_rows: rows.len() as u64,
        payments: Vec::new(),
        bad_rows: Vec::new(),
        skipped_rows: Vec::new(),
        live_payment_ids: Vec::new(),
    };
    for (position, (created_s, kind)) in rows.into_iter().enumerate() {
        let row = position as u64 + 2;
        let extra_id = format!("{}r{position:06}", id_body(options.seed, count));
        match kind {
            RowKind::Payment(index) => {
                payments[index].row = row;
                writer.payment_row(&mut rng, &payments[index], PaymentCells::Paid);
            }
            RowKind::Failed { retry_of } => {
                let failed = match retry_of {
                    Some(index) => ExportPayment {
                        charge_id: format!("{}f", payments[index].charge_id),
                        created_s,
                        ..payments[index].clone()
                    },
                    None => extra_payment(&mut rng, options, &extra_id, created_s),
                };
                writer.payment_row(&mut rng, &failed, PaymentCells::Failed);
                export.skipped_rows.push((row, "failed payment".into()));
            }
            RowKind::Uncaptured => {
                let uncaptured = extra_payment(&mut rng, options, &extra_id, created_s);
                writer.payment_row(&mut rng, &uncaptured, PaymentCells::Uncaptured);
                export.skipped_rows.push((row, "uncaptured payment".into()));
            }
            RowKind::Bad(cell) => {
                let bad = extra_payment(&mut rng, options, &extra_id, created_s);
                writer.payment_row(&mut rng, &bad, PaymentCells::Bad(cell));
                export.bad_rows.push(row);
            }
        }
    }
    payments.sort_by_key(|payment| payment.row);
    let plain: Vec<usize> = (0..payments.len())
        .filter(|&index| payments[index].outcome == Outcome::Succeeded)
        .collect();
    let mut live: Vec<usize> = plain
        .choose_multiple(&mut rng, exact(options.live_share, count).min(plain.len()))
        .copied()
        .collect();
    live.sort_unstable();
    export.live_payment_ids = live
        .into_iter()
        .map(|index| payments[index].payment_id.clone())
        .collect();
    export.payments = payments;
    export.bytes = writer.finish();
    export
}

fn refund_of(rng: &mut StdRng, outcome: Outcome, amount_minor: i64) -> i64 {
    match outcome {
        Outcome::FullyRefunded => amount_minor,
        Outcome::PartiallyRefunded => rng.gen_range(1..amount_minor.max(2)),
        _ => 0,
    }
}

fn new_payment(
    rng: &mut StdRng,
    options: &ExportOptions,
    n: usize,
    outcome: Outcome,
) -> ExportPayment {
    let id = id_body(options.seed, n);
    let (currency, low, high) = CURRENCIES[if rng.gen_bool(0.8) {
        0
    } else {
        rng.gen_range(1..3)
    }];
    let amount_minor = rng.gen_range(low..=high);
    ExportPayment {
        payment_id: format!("pi_{id}"),
        intent_id: Some(format!("pi_{id}")),
        charge_id: format!("ch_{id}"),
        amount_minor,
        refunded_minor: refund_of(rng, outcome, amount_minor),
        currency: currency.to_string(),
        created_s: options.now_s - rng.gen_range(0..365 * 86_400),
        donor: donor(rng, options.seed, n, 0.5),
        designation: rng
            .gen_bool(0.6)
            .then(|| DESIGNATIONS[rng.gen_range(0..DESIGNATIONS.len())].to_string()),
        outcome,
        row: 0,
    }
}

/// A charge that is not one of the payments (failed, uncaptured, bad): its own ids.
fn extra_payment(
    rng: &mut StdRng,
    options: &ExportOptions,
    id: &str,
    created_s: i64,
) -> ExportPayment {
    ExportPayment {
        payment_id: format!("pi_{id}"),
        intent_id: Some(format!("pi_{id}")),
        charge_id: format!("ch_{id}"),
        created_s,
        ..new_payment(rng, options, 0, Outcome::Succeeded)
    }
}

/// The live events of `payment` — `payment_intent.succeeded` (when it has a PaymentIntent)
/// and `charge.succeeded` — with the export's ids, donor, amount and designation, so the
/// same payment can arrive by webhook during a backfill. Test mode, like all generated
/// traffic (the tenant needs `accept_test_events`).
pub fn live_events(payment: &ExportPayment) -> Vec<GeneratedEvent> {
    let as_traffic = Payment {
        payment_id: payment.payment_id.clone(),
        intent_id: payment.intent_id.clone(),
        charge_id: payment.charge_id.clone(),
        amount_minor: payment.amount_minor,
        currency: payment.currency.clone(),
        created_s: payment.created_s,
        era: Era::Basil,
        kind: PaymentKind::OneTime,
        donor: payment.donor.clone(),
        designation: payment.designation.clone(),
        refunded: false,
        both_events: true,
    };
    let expected = Expected::Gift {
        payment_id: payment.payment_id.clone(),
    };
    let mut objects = Vec::new();
    if payment.intent_id.is_some() {
        objects.push((
            "payment_intent.succeeded",
            objects::payment_intent(&as_traffic),
        ));
    }
    objects.push(("charge.succeeded", objects::charge(&as_traffic, false)));
    objects
        .into_iter()
        .enumerate()
        .map(|(n, (event_type, object))| {
            let id = format!("evt_{}l{n}", &payment.charge_id[3..]);
            GeneratedEvent {
                body: envelope(&id, event_type, Era::Basil, payment.created_s, object),
                id,
                event_type: event_type.to_string(),
                expected: expected.clone(),
                is_redelivery: false,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_export() {
        // Goal: deterministic by seed; another seed gives other ids.
        let options = ExportOptions {
            payments: 50,
            ..ExportOptions::default()
        };
        let first = generate_export(&options);
        assert_eq!(first.bytes, generate_export(&options).bytes);
        let other = generate_export(&ExportOptions { seed: 2, ..options });
        assert_ne!(first.payments[0].payment_id, other.payments[0].payment_id);
    }

    #[test]
    fn bom_and_line_ends_follow_the_options() {
        // Goal: the BOM and CRLF are there exactly when asked; the header is the Dashboard's.
        for (bom, crlf) in [(true, true), (false, false), (true, false), (false, true)] {
            let export = generate_export(&ExportOptions {
                payments: 20,
                bom,
                crlf,
                ..ExportOptions::default()
            });
            assert_eq!(export.bytes.starts_with(b"\xef\xbb\xbf"), bom);
            let text = String::from_utf8(export.bytes).unwrap();
            let header_end = text.find('\n').unwrap();
            assert_eq!(text.as_bytes()[header_end - 1] == b'\r', crlf);
            assert!(text.trim_start_matches('\u{feff}').starts_with(
                "id,Description,Seller Message,Created (UTC),Amount,Amount Refunded,Currency"
            ));
        }
    }

    #[test]
    fn shares_are_exact_and_live_events_carry_the_export_ids() {
        // Goal: round(share × payments) of each trait; the live events of a payment name its
        // PaymentIntent and charge ids.
        let options = ExportOptions {
            payments: 200,
            ..ExportOptions::default()
        };
        let export = generate_export(&options);
        let count = |outcome: Outcome| {
            export
                .payments
                .iter()
                .filter(|p| p.outcome == outcome)
                .count()
        };
        assert_eq!(count(Outcome::FullyRefunded), 8);
        assert_eq!(count(Outcome::PartiallyRefunded), 6);
        assert_eq!(count(Outcome::Retried), 10);
        assert_eq!(
            count(Outcome::Disputed { withdrawn: true })
                + count(Outcome::Disputed { withdrawn: false }),
            8
        );
        assert_eq!(export.live_payment_ids.len(), 10);
        let failed = export
            .skipped_rows
            .iter()
            .filter(|(_, reason)| reason == "failed payment")
            .count();
        assert_eq!(
            failed,
            10 + 10,
            "failed charges plus the retried payments' first tries"
        );
        let payment = export.payment(&export.live_payment_ids[0]).unwrap();
        for event in live_events(payment) {
            assert!(event.body.contains(&payment.charge_id));
            assert!(event.body.contains(&payment.payment_id));
        }
    }
}
