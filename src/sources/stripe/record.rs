//! Payment records: what one row of a file says happened to one payment (the Stripe
//! Dashboard's payments export: a charge, how much of it was refunded, its dispute), mapped
//! with the live path's own rules — the answers the live path gives to the events that
//! payment sent (`charge.succeeded`, `charge.refunded`, `charge.dispute.funds_withdrawn`).
//!
//! A record is not an event: the charge id stands in for the event id (it is one of the
//! gift's aliases anyway), and the record's dates stand in for the events' `created`.

use jiff::tz::TimeZone;
use serde_json::Value;

use super::fields::{text_at, AmountField};
use super::payment::Context;
use super::reversal::{self, WithdrawnFunds};
use super::{AlertNote, Mapped, StripeEvent, StripeMapping};
use crate::sources::{Command, SourceError};

/// A dispute as a payment record gives it (no dispute id: the export has none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisputeRecord {
    /// Minor units of the charge's currency; `None` when unreadable (only the alert says it).
    pub amount_minor: Option<i64>,
    /// Stripe's reason (`fraudulent`, `product_not_received`…), `unknown` when absent.
    pub reason: String,
    /// When the funds were withdrawn (the reversal's date), unix seconds.
    pub withdrawn_at_s: i64,
}

/// One payment record.
#[derive(Debug, Clone, PartialEq)]
pub struct PaymentRecord {
    /// The charge in the API's shape (`id`, `payment_intent`, `amount`, `amount_captured`,
    /// `amount_refunded`, `refunded`, `captured`, `currency`, `created`, `customer`,
    /// `billing_details`, `receipt_email`, `description`, `metadata`,
    /// `payment_method_details.type`). No `invoice`: a subscription payment in a record is
    /// keyed by its PaymentIntent like the live recurring gift, and sent in its one-time form.
    pub charge: Value,
    /// A live-mode payment (the export's `Mode`); test-mode ones follow `accept_test_events`.
    pub livemode: bool,
    /// A dispute that withdrew the funds (and did not give them back).
    pub dispute: Option<DisputeRecord>,
}

/// What a payment record means for Virtuous.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordMapped {
    /// Nothing to send, as the live path ignores it (uncaptured, zero, test mode).
    Ignored { reason: String },
    /// The gift first, then the reversal of a full refund or a dispute (at most one: both
    /// have the payment's one refund key), and the alerts (partial refund, dispute).
    Payment {
        commands: Vec<Command>,
        alerts: Vec<AlertNote>,
    },
}

/// Maps one payment record. A `SourceError::Mapping` means the live path would reject the
/// payment's event (no donor, no currency…): the record is a bad row.
pub fn map_payment_record(
    record: &PaymentRecord,
    settings: &StripeMapping,
    tz: &TimeZone,
) -> Result<RecordMapped, SourceError> {
    let charge = &record.charge;
    let charge_id = text_at(charge, "/id")
        .ok_or_else(|| SourceError::Malformed("a payment record needs its charge id".into()))?;
    let created_s = charge
        .get("created")
        .and_then(Value::as_i64)
        .ok_or_else(|| {
            SourceError::Malformed("a payment record needs its `created` time".into())
        })?;
    let event = |event_type: &str, created_s: i64, object: &Value| StripeEvent {
        id: charge_id.to_string(),
        event_type: event_type.to_string(),
        api_version: None,
        created_s,
        livemode: record.livemode,
        object: object.clone(),
    };
    let mapped = super::map_event(
        &event("charge.succeeded", created_s, charge),
        settings,
        tz,
        created_s,
    )?;
    let mut commands = match mapped {
        Mapped::Ignored { reason } => return Ok(RecordMapped::Ignored { reason }),
        Mapped::Commands { commands, .. } => commands,
        // No link can arrive for a record: it is queued in its one-time form, as a held
        // payment is when its hold ends without one.
        Mapped::Hold { gift, .. } => vec![gift],
        Mapped::Alert(_) | Mapped::Link(_) => {
            unreachable!("a charge.succeeded maps to a gift, a hold or nothing")
        }
    };
    let mut alerts = Vec::new();
    let refunded_minor = charge
        .get("amount_refunded")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if refunded_minor > 0 {
        match super::map_event(
            &event("charge.refunded", created_s, charge),
            settings,
            tz,
            created_s,
        )? {
            Mapped::Commands {
                commands: reversals,
                alerts: refund_alerts,
            } => {
                commands.extend(reversals);
                alerts.extend(refund_alerts);
            }
            Mapped::Alert(note) => alerts.push(note),
            Mapped::Ignored { .. } | Mapped::Hold { .. } | Mapped::Link(_) => {}
        }
    }
    if let Some(dispute) = &record.dispute {
        let dispute_event = event(
            "charge.dispute.funds_withdrawn",
            dispute.withdrawn_at_s,
            charge,
        );
        let context = Context {
            event: &dispute_event,
            settings,
            tz,
            now_unix_s: dispute.withdrawn_at_s,
        };
        let currency = text_at(charge, "/currency").unwrap_or("usd");
        let withdrawn = WithdrawnFunds {
            dispute_id: None,
            charge_id: Some(charge_id),
            payment_id: &commands[0].fact.source_id,
            amount: dispute
                .amount_minor
                .map_or(AmountField::Malformed, AmountField::Minor),
            currency,
            reason: &dispute.reason,
        };
        if let Mapped::Commands {
            commands: reversals,
            alerts: dispute_alerts,
        } = reversal::dispute_reversal(&context, &withdrawn)?
        {
            // A payment is reversed at most once: a full refund's reversal has the same key.
            let already_reversed =
                |key: &str| commands.iter().any(|c| c.fact.idempotency_key == key);
            let new_reversals: Vec<Command> = reversals
                .into_iter()
                .filter(|reversal| !already_reversed(&reversal.fact.idempotency_key))
                .collect();
            commands.extend(new_reversals);
            alerts.extend(dispute_alerts);
        }
    }
    Ok(RecordMapped::Payment { commands, alerts })
}
