//! Refunds, disputes (reversing transactions) and customers (contact transactions).

use serde_json::{json, Map, Value};
use steward_actors::store::{EntryFact, Lane, RecordKind};

use super::fields::{amount_field, gift_date, id_at, insert_opt, text_at, AmountField, Donor};
use super::payment::{aliases, Context};
use super::{ignored, AlertNote, Mapped, SOURCE};
use crate::sources::amount::minor_to_major;
use crate::sources::{idempotency_key, Command, SourceError};

/// Alert codes (stable: staff filter on them).
pub const PARTIAL_REFUND_ALERT: &str = "stripe_partial_refund";
pub const DISPUTE_ALERT: &str = "stripe_dispute_funds_withdrawn";

/// `charge.refunded`: a full refund reverses the gift; a partial one is only an alert.
pub(super) fn map_refund(context: &Context<'_>) -> Result<Mapped, SourceError> {
    let charge = &context.event.object;
    let charge_id = text_at(charge, "/id").ok_or_else(|| context.mapping_error("no id"))?;
    let payment_id = id_at(charge, "/payment_intent").unwrap_or(charge_id);
    let currency = text_at(charge, "/currency").unwrap_or("usd");
    let refunded_in_full = charge.get("refunded") == Some(&Value::Bool(true));
    let amounts = (
        amount_field(charge, "/amount"),
        amount_field(charge, "/amount_refunded"),
    );
    let (amount_minor, refunded_minor) = match amounts {
        (AmountField::Minor(amount), AmountField::Minor(refunded)) => (amount, refunded),
        // Stripe says it is a full refund: the amounts are not needed.
        _ if refunded_in_full => (0, 0),
        // Never read as zero: a "partial refund of 0 of 0" would hide a reversal.
        _ => {
            return Err(context.mapping_error(
                "amount or amount_refunded is missing or not a whole number of minor units: \
                 a full refund cannot be told from a partial one",
            ))
        }
    };
    let is_full_refund = refunded_in_full || (amount_minor > 0 && refunded_minor >= amount_minor);
    if !is_full_refund {
        return Ok(Mapped::Alert(AlertNote {
            code: PARTIAL_REFUND_ALERT.to_string(),
            message: format!(
                "partial refund of {} {} of {} on Stripe payment {payment_id} (charge {charge_id}): \
                 Virtuous has no partial reversal, adjust the gift by hand",
                minor_to_major(refunded_minor, currency),
                currency.to_ascii_uppercase(),
                minor_to_major(amount_minor, currency),
            ),
        }));
    }
    let refund_ids: Vec<&str> = charge
        .pointer("/refunds/data")
        .and_then(Value::as_array)
        .map(|refunds| refunds.iter().filter_map(|r| text_at(r, "/id")).collect())
        .unwrap_or_default();
    let notes = format!("Stripe refund of payment {payment_id} (charge {charge_id})");
    let mut candidates = vec![Some(charge_id)];
    candidates.extend(refund_ids.into_iter().map(Some));
    let command = reversal_command(context, payment_id, &notes, candidates)?;
    Ok(Mapped::Commands {
        commands: vec![command],
        alerts: Vec::new(),
    })
}

/// `charge.dispute.funds_withdrawn`: reverses the gift like a full refund (same idempotency
/// key: a payment is reversed at most once) and tells staff.
pub(super) fn map_dispute(context: &Context<'_>) -> Result<Mapped, SourceError> {
    let dispute = &context.event.object;
    let dispute_id = text_at(dispute, "/id").ok_or_else(|| context.mapping_error("no id"))?;
    let charge_id = id_at(dispute, "/charge");
    let payment_id = id_at(dispute, "/payment_intent")
        .or(charge_id)
        .ok_or_else(|| context.mapping_error("the dispute names no charge or PaymentIntent"))?;
    let currency = text_at(dispute, "/currency").unwrap_or("usd");
    let withdrawn = WithdrawnFunds {
        dispute_id: Some(dispute_id),
        charge_id,
        payment_id,
        amount: amount_field(dispute, "/amount"),
        currency,
        reason: text_at(dispute, "/reason").unwrap_or("unknown"),
    };
    dispute_reversal(context, &withdrawn)
}

/// A dispute that withdrew a payment's funds. Only the live event names the dispute: a
/// payment record (the Dashboard's export) gives its amount, status and reason.
pub(super) struct WithdrawnFunds<'a> {
    pub dispute_id: Option<&'a str>,
    pub charge_id: Option<&'a str>,
    pub payment_id: &'a str,
    pub amount: AmountField,
    pub currency: &'a str,
    pub reason: &'a str,
}

/// The reversal of a payment whose funds a dispute withdrew, and the alert for staff.
pub(super) fn dispute_reversal(
    context: &Context<'_>,
    withdrawn: &WithdrawnFunds<'_>,
) -> Result<Mapped, SourceError> {
    let WithdrawnFunds {
        dispute_id,
        charge_id,
        payment_id,
        currency,
        reason,
        ..
    } = *withdrawn;
    // The amount only feeds the alert: an unreadable one is said so, the gift still reversed.
    let amount = match withdrawn.amount {
        AmountField::Minor(minor) => format!(
            "{} {}",
            minor_to_major(minor, currency),
            currency.to_ascii_uppercase()
        ),
        AmountField::Absent | AmountField::Malformed => "an amount Stripe sent unreadable".into(),
    };
    let named = |prefix: &str| match dispute_id {
        Some(id) => format!("{prefix} {id} ({reason})"),
        None => format!("{prefix} ({reason})"),
    };
    let notes = format!("{} on payment {payment_id}", named("Stripe dispute"));
    let command = reversal_command(context, payment_id, &notes, [dispute_id, charge_id])?;
    let alert = AlertNote {
        code: DISPUTE_ALERT.to_string(),
        message: format!(
            "{} withdrew {amount} for Stripe payment {payment_id}: the gift is being reversed",
            named("dispute")
        ),
    };
    Ok(Mapped::Commands {
        commands: vec![command],
        alerts: vec![alert],
    })
}

/// A `POST /api/Gift/ReversingTransaction` draft. `reversedGiftId` is null: the gift's
/// Virtuous id is filled in once the gift (same `source_id`, kind gift) is confirmed — the
/// refund record waits in `waiting_for_gift` until then.
fn reversal_command<'a>(
    context: &Context<'a>,
    payment_id: &str,
    notes: &str,
    alias_candidates: impl IntoIterator<Item = Option<&'a str>>,
) -> Result<Command, SourceError> {
    let date = gift_date(context.event.created_s, context.tz)
        .ok_or_else(|| context.mapping_error("created is out of range"))?;
    let body = json!({"reversedGiftId": null, "giftDate": date, "notes": notes});
    let candidates = std::iter::once(Some(context.event.id.as_str())).chain(alias_candidates);
    Ok(Command {
        fact: EntryFact {
            kind: RecordKind::Refund,
            source: SOURCE.to_string(),
            source_id: payment_id.to_string(),
            idempotency_key: idempotency_key(SOURCE, RecordKind::Refund, payment_id),
            lane: Lane::Live,
            transaction_source: context.settings.transaction_source.clone(),
            body_json: body.to_string(),
        },
        aliases: aliases(payment_id, candidates),
    })
}

/// `customer.created` / `customer.updated` → a contact transaction. Each event is its own
/// fact (a later update must not be dropped as a duplicate of the first), so the idempotency
/// key names the event; the record key stays `cus_…` so queued updates merge field by field.
pub(super) fn map_customer(context: &Context<'_>) -> Result<Mapped, SourceError> {
    let customer = &context.event.object;
    let customer_id = text_at(customer, "/id").ok_or_else(|| context.mapping_error("no id"))?;
    if customer.get("deleted") == Some(&Value::Bool(true)) {
        return Ok(ignored("deleted customer"));
    }
    let mut donor = Donor::default();
    donor.fill_from(Some(customer));
    if donor.name.is_none() && donor.email.is_none() {
        // A bare id would only add an unmatchable contact; the update that names them follows.
        return Ok(ignored("customer without a name or email yet"));
    }
    let source = &context.settings.transaction_source;
    let mut body = Map::new();
    body.insert("referenceSource".into(), json!(source));
    body.insert("referenceId".into(), json!(customer_id));
    donor.insert_name(&mut body);
    insert_opt(&mut body, "email", donor.email.as_deref());
    insert_opt(&mut body, "phone", donor.phone.as_deref());
    donor.insert_flat_address(&mut body);
    let fact_id = format!("{customer_id}@{}", context.event.id);
    Ok(Mapped::Commands {
        commands: vec![Command {
            fact: EntryFact {
                kind: RecordKind::Contact,
                source: SOURCE.to_string(),
                source_id: customer_id.to_string(),
                idempotency_key: idempotency_key(SOURCE, RecordKind::Contact, &fact_id),
                lane: Lane::Live,
                transaction_source: source.clone(),
                body_json: Value::Object(body).to_string(),
            },
            aliases: aliases(customer_id, [Some(context.event.id.as_str())]),
        }],
        alerts: Vec::new(),
    })
}
