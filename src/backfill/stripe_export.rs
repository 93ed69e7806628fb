//! The `stripe_payments_export` preset: the Stripe Dashboard's payments CSV export, as is
//! (docs/backfill.md "Stripe payments export" lists the columns it relies on).
//!
//! Each row is one charge. Its cells become a charge in the API's shape, and the live
//! mapping ([`map_payment_record`]) decides what it is: the gift (`transactionId` = the
//! PaymentIntent id, else the charge id), the reversing transaction of a full refund or of a
//! dispute that withdrew the funds, the partial-refund and dispute alerts — exactly what the
//! live path does with that payment's events. Rows that are not a successful, captured
//! payment are skipped with the reason; rows whose cells cannot be read are rejected.

use csv::StringRecord;
use serde_json::{json, Map, Value};

use super::classify::{
    decimal_to_minor, strip_thousands_separators, JobContext, Mapped, SourceRules,
};
use crate::sources::stripe::{map_payment_record, DisputeRecord, PaymentRecord, RecordMapped};
use crate::sources::SourceError;
use steward_actors::source_fact::AlertNote;
use steward_actors::store::RecordKind;

/// Column names as the Dashboard writes them.
pub const ID: &str = "id";
/// Older exports write `Created (UTC)`, newer ones `Created date (UTC)`.
pub const CREATED: [&str; 2] = ["Created (UTC)", "Created date (UTC)"];
pub const AMOUNT: &str = "Amount";
pub const AMOUNT_REFUNDED: &str = "Amount Refunded";
pub const CURRENCY: &str = "Currency";
pub const STATUS: &str = "Status";
pub const CAPTURED: &str = "Captured";
pub const MODE: &str = "Mode";
pub const PAYMENT_INTENT_ID: &str = "PaymentIntent ID";
pub const CUSTOMER_ID: &str = "Customer ID";
pub const CUSTOMER_EMAIL: &str = "Customer Email";
pub const DESCRIPTION: &str = "Description";
pub const CARD_NAME: &str = "Card Name";
pub const CARD_ID: &str = "Card ID";
pub const PAYMENT_SOURCE_TYPE: &str = "Payment Source Type";
pub const DISPUTED_AMOUNT: &str = "Disputed Amount";
pub const DISPUTE_STATUS: &str = "Dispute Status";
pub const DISPUTE_REASON: &str = "Dispute Reason";
pub const DISPUTE_DATE: &str = "Dispute Date (UTC)";
/// Card address column → Stripe address field.
pub const CARD_ADDRESS: [(&str, &str); 6] = [
    ("Card Address Line1", "line1"),
    ("Card Address Line2", "line2"),
    ("Card Address City", "city"),
    ("Card Address State", "state"),
    ("Card Address Country", "country"),
    ("Card Address Zip", "postal_code"),
];
/// Metadata columns are named `{key} (metadata)`.
pub const METADATA_SUFFIX: &str = " (metadata)";

/// The export's columns, resolved once from its header.
pub(crate) struct ExportColumns {
    id: usize,
    created: usize,
    amount: usize,
    currency: usize,
    status: usize,
    payment_intent: usize,
    amount_refunded: Option<usize>,
    captured: Option<usize>,
    mode: Option<usize>,
    customer_id: Option<usize>,
    customer_email: Option<usize>,
    description: Option<usize>,
    card_name: Option<usize>,
    card_id: Option<usize>,
    payment_source_type: Option<usize>,
    disputed_amount: Option<usize>,
    dispute_status: Option<usize>,
    dispute_reason: Option<usize>,
    dispute_date: Option<usize>,
    /// (Stripe address field, column).
    card_address: Vec<(&'static str, usize)>,
    /// (metadata key, column).
    metadata: Vec<(String, usize)>,
}

impl ExportColumns {
    /// Resolves the columns; a required one missing is an error for the whole file.
    pub fn resolve(header: &StringRecord) -> Result<ExportColumns, String> {
        let find = |name: &str| header.iter().position(|column| column.trim() == name);
        let require = |name: &str, why: &str| {
            find(name).ok_or_else(|| {
                format!("the export has no `{name}` column ({why}): export it with that column")
            })
        };
        let created = CREATED.iter().find_map(|name| find(name)).ok_or_else(|| {
            "the export has no `Created (UTC)` or `Created date (UTC)` column (the gift's date; \
             export dates in UTC)"
                .to_string()
        })?;
        Ok(ExportColumns {
            id: require(ID, "the charge id")?,
            created,
            amount: require(AMOUNT, "the amount")?,
            currency: require(CURRENCY, "the amount's currency")?,
            status: require(STATUS, "which rows are successful payments")?,
            payment_intent: require(
                PAYMENT_INTENT_ID,
                "the live path keys a payment by its PaymentIntent: without it, payments also \
                 seen live would become second gifts",
            )?,
            amount_refunded: find(AMOUNT_REFUNDED),
            captured: find(CAPTURED),
            mode: find(MODE),
            customer_id: find(CUSTOMER_ID),
            customer_email: find(CUSTOMER_EMAIL),
            description: find(DESCRIPTION),
            card_name: find(CARD_NAME),
            card_id: find(CARD_ID),
            payment_source_type: find(PAYMENT_SOURCE_TYPE),
            disputed_amount: find(DISPUTED_AMOUNT),
            dispute_status: find(DISPUTE_STATUS),
            dispute_reason: find(DISPUTE_REASON),
            dispute_date: find(DISPUTE_DATE),
            card_address: CARD_ADDRESS
                .iter()
                .filter_map(|(column, field)| find(column).map(|index| (*field, index)))
                .collect(),
            metadata: header
                .iter()
                .enumerate()
                .filter_map(|(index, column)| {
                    let key = column.trim().strip_suffix(METADATA_SUFFIX)?;
                    (!key.is_empty()).then(|| (key.to_string(), index))
                })
                .collect(),
        })
    }
}

/// A cell, trimmed; empty when the column is absent.
fn cell(record: &StringRecord, index: Option<usize>) -> &str {
    index
        .and_then(|index| record.get(index))
        .map(str::trim)
        .unwrap_or_default()
}

fn rejected(reason: String) -> Mapped {
    Mapped::Rejected { reason }
}

fn skipped(reason: &str) -> Mapped {
    Mapped::Skipped {
        reason: reason.to_string(),
    }
}

/// What `Status` says of a row: a successful payment (perhaps refunded or disputed since),
/// or the skip reason.
fn status_skip_reason(status: &str) -> Result<(), Mapped> {
    match status.to_ascii_lowercase().replace('_', " ").as_str() {
        "paid" | "succeeded" | "refunded" | "partially refunded" | "disputed" => Ok(()),
        "failed" => Err(skipped("failed payment")),
        "uncaptured" => Err(skipped("uncaptured payment")),
        "canceled" | "cancelled" => Err(skipped("canceled payment")),
        "pending" => Err(skipped("pending payment")),
        "blocked" => Err(skipped("blocked payment")),
        "incomplete" => Err(skipped("incomplete payment")),
        "" => Err(rejected(format!("no `{STATUS}`"))),
        other => Err(Mapped::Skipped {
            reason: format!("status `{other}`"),
        }),
    }
}

/// Classifies one export row (module docs).
pub(crate) fn classify(
    columns: &ExportColumns,
    record: &StringRecord,
    context: &JobContext,
) -> Mapped {
    let SourceRules::Stripe(settings) = &context.source else {
        return rejected("the Stripe export preset needs the `stripe` source".into());
    };
    match read_row(columns, record) {
        Ok((payment, refunded_minor)) => {
            let amount_minor = payment.charge["amount"].as_i64().unwrap_or_default();
            match map_payment_record(&payment, settings, &context.tz) {
                Ok(RecordMapped::Ignored { reason }) => Mapped::Skipped { reason },
                Ok(RecordMapped::Payment { commands, alerts }) => {
                    let reversed = commands
                        .iter()
                        .any(|command| command.fact.kind == RecordKind::Refund);
                    Mapped::Payment {
                        commands,
                        alerts: alerts
                            .into_iter()
                            .map(|note| AlertNote {
                                code: note.code,
                                message: note.message,
                            })
                            .collect(),
                        deducted_minor: if reversed {
                            amount_minor
                        } else {
                            refunded_minor
                        },
                    }
                }
                Err(SourceError::Mapping { reason, .. } | SourceError::Malformed(reason)) => {
                    rejected(reason)
                }
            }
        }
        Err(outcome) => outcome,
    }
}

/// The row as a payment record and its refunded minor units; `Err` = skipped or rejected.
fn read_row(
    columns: &ExportColumns,
    record: &StringRecord,
) -> Result<(PaymentRecord, i64), Mapped> {
    let charge_id = cell(record, Some(columns.id));
    if charge_id.is_empty() {
        return Err(rejected(format!("no charge id (column `{ID}`)")));
    }
    status_skip_reason(cell(record, Some(columns.status)))?;
    match cell(record, columns.captured).to_ascii_lowercase().as_str() {
        "" | "true" => {}
        "false" => return Err(skipped("uncaptured payment")),
        other => {
            return Err(rejected(format!(
                "`{CAPTURED}` `{other}` is not true or false"
            )))
        }
    }
    let currency_cell = cell(record, Some(columns.currency));
    let currency = currency_cell.to_ascii_lowercase();
    if currency.len() != 3 || !currency.bytes().all(|byte| byte.is_ascii_alphabetic()) {
        return Err(rejected(format!(
            "`{CURRENCY}` `{currency_cell}` is not a three-letter currency code"
        )));
    }
    let created_cell = cell(record, Some(columns.created));
    let created_s = utc_seconds(created_cell).ok_or_else(|| {
        rejected(format!(
            "the creation date `{created_cell}` is not `YYYY-MM-DD HH:MM[:SS]` (UTC)"
        ))
    })?;
    let amount_minor = major_amount(cell(record, Some(columns.amount)), &currency)
        .map_err(|text| rejected(format!("`{AMOUNT}` {text}")))?;
    let refunded_minor = match cell(record, columns.amount_refunded) {
        "" => 0,
        text => major_amount(text, &currency)
            .map_err(|text| rejected(format!("`{AMOUNT_REFUNDED}` {text}")))?,
    };
    let livemode = !cell(record, columns.mode).eq_ignore_ascii_case("test");
    let charge = charge_object(
        columns,
        record,
        charge_id,
        &currency,
        created_s,
        amount_minor,
        refunded_minor,
    );
    let dispute = dispute_of(columns, record, &currency, created_s);
    Ok((
        PaymentRecord {
            charge,
            livemode,
            dispute,
        },
        refunded_minor,
    ))
}

/// The row's charge in the API's shape (the fields the live mapping reads).
fn charge_object(
    columns: &ExportColumns,
    record: &StringRecord,
    charge_id: &str,
    currency: &str,
    created_s: i64,
    amount_minor: i64,
    refunded_minor: i64,
) -> Value {
    let text = |index: Option<usize>| -> Value {
        match cell(record, index) {
            "" => Value::Null,
            value => json!(value),
        }
    };
    let mut address = Map::new();
    for (field, index) in &columns.card_address {
        if let value @ Value::String(_) = text(Some(*index)) {
            address.insert((*field).to_string(), value);
        }
    }
    let metadata: Map<String, Value> = columns
        .metadata
        .iter()
        .filter_map(|(key, index)| match text(Some(*index)) {
            Value::Null => None,
            value => Some((key.clone(), value)),
        })
        .collect();
    let method_type = match cell(record, columns.payment_source_type) {
        // A card charge names its card even where the source type column is absent.
        "" if !cell(record, columns.card_id).is_empty() => json!("card"),
        "" => Value::Null,
        source_type => json!(source_type.to_ascii_lowercase()),
    };
    json!({
        "id": charge_id,
        "object": "charge",
        "payment_intent": text(Some(columns.payment_intent)),
        "amount": amount_minor,
        "amount_captured": amount_minor,
        "amount_refunded": refunded_minor,
        "refunded": amount_minor > 0 && refunded_minor >= amount_minor,
        "captured": true,
        "currency": currency,
        "created": created_s,
        "customer": text(columns.customer_id),
        "receipt_email": text(columns.customer_email),
        "billing_details": {
            "name": text(columns.card_name),
            "address": if address.is_empty() { Value::Null } else { Value::Object(address) },
        },
        "description": text(columns.description),
        "metadata": metadata,
        "payment_method_details": {"type": method_type},
    })
}

/// A dispute that withdrew the funds and kept them: not an inquiry (`warning_*`: no money
/// moved) and not won (the funds came back).
fn dispute_of(
    columns: &ExportColumns,
    record: &StringRecord,
    currency: &str,
    created_s: i64,
) -> Option<DisputeRecord> {
    let status = cell(record, columns.dispute_status)
        .to_ascii_lowercase()
        .replace(' ', "_");
    if status.is_empty() || status.starts_with("warning") || status == "won" {
        return None;
    }
    let reason = match cell(record, columns.dispute_reason) {
        "" => "unknown".to_string(),
        reason => reason.to_string(),
    };
    Some(DisputeRecord {
        amount_minor: major_amount(cell(record, columns.disputed_amount), currency).ok(),
        reason,
        withdrawn_at_s: utc_seconds(cell(record, columns.dispute_date)).unwrap_or(created_s),
    })
}

/// An amount in major units as the export writes it (`1,234.56`; `1,500` yen) → minor
/// units; `Err` says why not.
pub(crate) fn major_amount(text: &str, currency: &str) -> Result<i64, String> {
    let plain = strip_thousands_separators(text.trim());
    decimal_to_minor(&plain, currency).ok_or_else(|| {
        format!(
            "`{text}` is not an amount in major units of {}",
            currency.to_ascii_uppercase()
        )
    })
}

/// `YYYY-MM-DD HH:MM[:SS]` in UTC → unix seconds.
pub(crate) fn utc_seconds(text: &str) -> Option<i64> {
    let date_time: jiff::civil::DateTime = text.trim().parse().ok()?;
    let zoned = date_time.to_zoned(jiff::tz::TimeZone::UTC).ok()?;
    Some(zoned.timestamp().as_second())
}
