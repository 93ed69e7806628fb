//! The export's bytes: its header and the cells of each kind of row.

use rand::rngs::StdRng;
use rand::Rng;

use super::{ExportOptions, ExportPayment, Outcome};
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

#[derive(Debug, Clone, Copy)]
pub(super) enum BadCell {
    Amount,
    MissingId,
    Date,
    Currency,
}

const DESCRIPTIONS: [&str; 5] = [
    "Donation",
    "Monthly gift, thank you",
    "In memory of \"Grandma\" Rose,\nwith love from the family",
    "Gala 2025, table 4\r\nseat 2",
    "",
];
/// Which cells a row gets.
#[derive(Debug, Clone, Copy)]
pub(super) enum PaymentCells {
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

pub(super) struct ExportWriter {
    csv: csv::Writer<Vec<u8>>,
    bom: bool,
}

impl ExportWriter {
    pub(super) fn new(options: &ExportOptions) -> ExportWriter {
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

    pub(super) fn payment_row(
        &mut self,
        rng: &mut StdRng,
        payment: &ExportPayment,
        cells: PaymentCells,
    ) {
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

    pub(super) fn finish(self) -> Vec<u8> {
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
