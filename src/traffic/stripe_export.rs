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

use super::payments::{donor, id_body};
use super::{envelope, objects, Donor, Era, Expected, GeneratedEvent, Payment, PaymentKind};
use crate::sources::amount::minor_to_major;

/// The export's columns, in the Dashboard's order; then the metadata columns.
pub const COLUMNS: [&str; 51] = [
    "id",
    "Description",
    "Seller Message",
    "Created (UTC)",
    "Amount",
    "Amount Refunded",
    "Currency",
    "Converted Amount",
    "Converted Amount Refunded",
    "Fee",
    "Tax",
    "Converted Currency",
    "Mode",
    "Status",
    "Statement Descriptor",
    "Customer ID",
    "Customer Description",
    "Customer Email",
    "Captured",
    "Card ID",
    "Card Last4",
    "Card Brand",
    "Card Funding",
    "Card Exp Month",
    "Card Exp Year",
    "Card Name",
    "Card Address Line1",
    "Card Address Line2",
    "Card Address City",
    "Card Address State",
    "Card Address Country",
    "Card Address Zip",
    "Card Issue Country",
    "Card Fingerprint",
    "Card CVC Status",
    "Card AVS Zip Status",
    "Card AVS Line1 Status",
    "Card Tokenization Method",
    "Disputed Amount",
    "Dispute Status",
    "Dispute Reason",
    "Dispute Date (UTC)",
    "Dispute Evidence Due (UTC)",
    "Invoice ID",
    "Payment Source Type",
    "Destination",
    "Transfer",
    "Interchange Costs",
    "Merchant Service Charge",
    "Transfer Group",
    "PaymentIntent ID",
];
/// Metadata columns written after them (`{key} (metadata)`).
pub const METADATA_COLUMNS: [&str; 2] = ["designation (metadata)", "segment (metadata)"];

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

#[derive(Debug, Clone, Copy)]
enum BadCell {
    Amount,
    MissingId,
    Date,
    Currency,
}

/// (currency, low, high minor units); `jpy` and `krw` are zero-decimal.
const CURRENCIES: [(&str, i64, i64); 3] = [
    ("usd", 500, 250_000),
    ("eur", 500, 150_000),
    ("cad", 1_000, 120_000),
];
const ZERO_DECIMAL: [(&str, i64, i64); 2] = [("jpy", 1_000, 2_000_000), ("krw", 10_000, 5_000_000)];
const DESCRIPTIONS: [&str; 5] = [
    "Donation",
    "Monthly gift, thank you",
    "In memory of \"Grandma\" Rose,\nwith love from the family",
    "Gala 2025, table 4\r\nseat 2",
    "",
];
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

/// Which cells a row gets.
#[derive(Debug, Clone, Copy)]
enum PaymentCells {
    Paid,
    Failed,
    Uncaptured,
    Bad(BadCell),
}

/// Major units as the export writes them: `1,234.56`, `1,500` yen.
pub fn export_amount(amount_minor: i64, currency: &str) -> String {
    let major = minor_to_major(amount_minor, currency);
    let (whole, fraction) = match major.split_once('.') {
        Some((whole, fraction)) => (whole.to_string(), Some(fraction.to_string())),
        None => (major.clone(), None),
    };
    let digits: Vec<char> = whole.chars().collect();
    let mut grouped = String::new();
    for (position, digit) in digits.iter().enumerate() {
        if position > 0 && (digits.len() - position) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(*digit);
    }
    match fraction {
        Some(fraction) => format!("{grouped}.{fraction}"),
        None => grouped,
    }
}

/// `YYYY-MM-DD HH:MM:SS` (UTC), the export's dates.
pub fn export_date(unix_s: i64) -> String {
    let timestamp = jiff::Timestamp::from_second(unix_s).expect("a generated time is in range");
    timestamp.strftime("%Y-%m-%d %H:%M:%S").to_string()
}

struct ExportWriter {
    csv: csv::Writer<Vec<u8>>,
    bom: bool,
}

impl ExportWriter {
    fn new(options: &ExportOptions) -> ExportWriter {
        let terminator = if options.crlf {
            csv::Terminator::CRLF
        } else {
            csv::Terminator::Any(b'\n')
        };
        let mut csv = csv::WriterBuilder::new()
            .terminator(terminator)
            .from_writer(Vec::new());
        let header = COLUMNS.iter().chain(METADATA_COLUMNS.iter());
        csv.write_record(header).expect("writing to memory");
        ExportWriter {
            csv,
            bom: options.bom,
        }
    }

    fn payment_row(&mut self, rng: &mut StdRng, payment: &ExportPayment, cells: PaymentCells) {
        let amount = export_amount(payment.amount_minor, &payment.currency);
        let refunded = export_amount(payment.refunded_minor, &payment.currency);
        let donor = &payment.donor;
        let full_name = format!("{} {}", donor.first_name, donor.last_name);
        let (status, captured, seller_message) = match cells {
            PaymentCells::Failed => ("Failed", "false", "The bank declined the payment."),
            // Both shapes a never-captured charge can take in the export.
            PaymentCells::Uncaptured if rng.gen_bool(0.5) => ("Uncaptured", "false", ""),
            PaymentCells::Uncaptured => ("Paid", "false", "Payment complete."),
            _ if payment.outcome == Outcome::FullyRefunded => {
                ("Refunded", "true", "Payment complete.")
            }
            _ => ("Paid", "true", "Payment complete."),
        };
        let (disputed, dispute_status, dispute_reason, dispute_date) =
            match (cells, payment.outcome) {
                (PaymentCells::Paid, Outcome::Disputed { withdrawn }) => {
                    let statuses: &[&str] = if withdrawn {
                        &["lost", "needs_response", "under_review"]
                    } else {
                        &["won", "warning_closed"]
                    };
                    (
                        amount.clone(),
                        statuses[rng.gen_range(0..statuses.len())].to_string(),
                        "fraudulent".to_string(),
                        export_date(payment.created_s + 7 * 86_400),
                    )
                }
                _ => Default::default(),
            };
        let mut id = payment.charge_id.clone();
        let mut created = export_date(payment.created_s);
        let mut currency = payment.currency.clone();
        let mut amount_cell = amount.clone();
        if let PaymentCells::Bad(cell) = cells {
            match cell {
                BadCell::Amount => {
                    amount_cell = ["12.3.4", "abc", "1,23.00", "-5.00"][rng.gen_range(0..4)].into()
                }
                BadCell::MissingId => id.clear(),
                BadCell::Date => {
                    created = ["31/12/2024 10:00", "yesterday"][rng.gen_range(0..2)].into()
                }
                BadCell::Currency => currency = ["US$", "dollars"][rng.gen_range(0..2)].into(),
            }
        }
        let fee = export_amount(payment.amount_minor * 29 / 1000 + 30, &payment.currency);
        let last4 = format!("{:04}", rng.gen_range(0..10_000));
        let fingerprint: String = (0..16)
            .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.gen_range(0..36)]))
            .collect();
        let description = DESCRIPTIONS[rng.gen_range(0..DESCRIPTIONS.len())];
        let record: [String; 53] = [
            id,
            description.to_string(),
            seller_message.to_string(),
            created,
            amount_cell,
            refunded.clone(),
            currency,
            amount.clone(),
            refunded,
            fee,
            "0.00".into(),
            payment.currency.clone(),
            "Live".into(),
            status.into(),
            "HOPE SHELTER".into(),
            donor.customer_id.clone().unwrap_or_default(),
            if donor.customer_id.is_some() {
                full_name.clone()
            } else {
                String::new()
            },
            donor.email.clone(),
            captured.into(),
            format!("card_{}", &payment.charge_id[3..]),
            last4,
            "Visa".into(),
            "credit".into(),
            "12".into(),
            "2028".into(),
            full_name,
            donor.line1.clone(),
            String::new(),
            donor.city.clone(),
            donor.state.clone(),
            "US".into(),
            donor.postal_code.clone(),
            "US".into(),
            fingerprint,
            "pass".into(),
            "pass".into(),
            "pass".into(),
            String::new(),
            disputed,
            dispute_status,
            dispute_reason,
            dispute_date,
            String::new(),
            String::new(),
            "card".into(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            payment.intent_id.clone().unwrap_or_default(),
            payment.designation.clone().unwrap_or_default(),
            String::new(),
        ];
        self.csv.write_record(&record).expect("writing to memory");
    }

    fn finish(self) -> Vec<u8> {
        let body = self.csv.into_inner().expect("writing to memory");
        if self.bom {
            let mut bytes = b"\xef\xbb\xbf".to_vec();
            bytes.extend_from_slice(&body);
            bytes
        } else {
            body
        }
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
