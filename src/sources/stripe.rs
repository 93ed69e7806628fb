//! Stripe webhooks (docs/ingress.md, "Stripe"): verify → parse → map to commands.
//!
//! Pure: no I/O and no clock (`now` is a parameter). The ingress calls, in order,
//! [`verify_signature`] on the raw bytes, [`parse_event`], then [`map_event`], and acts on the
//! [`Mapped`] outcome (queue commands, raise alerts, hold or link subscription payments).
//!
//! # Layout
//! - [`signature`]: the `Stripe-Signature` header.
//! - `fields`: defensive JSON accessors, the donor, `giftType`, `frequency`.
//! - `payment`: gifts from payments and invoices, subscription holds and links.
//! - `reversal`: refunds, disputes and customers.
//! - [`record`]: payment records (a row of the Dashboard's payments export) mapped with the
//!   same rules, for backfills.

mod fields;
pub mod link;
mod payment;
pub mod record;
mod reversal;
pub mod signature;
#[cfg(test)]
pub(crate) mod tests_payment;
#[cfg(test)]
mod tests_reversal;
#[cfg(test)]
mod tests_subscription;

use jiff::tz::TimeZone;
use serde_json::Value;

pub use payment::apply_link;
pub use record::{map_payment_record, DisputeRecord, PaymentRecord, RecordMapped};
pub use reversal::{DISPUTE_ALERT, PARTIAL_REFUND_ALERT};
pub use signature::{sign_header, verify_signature, SignatureError};

use super::{Command, SourceError};
use crate::tenant::StripeSettings;

/// The ingress key of this source (`/hooks/{tenant}/stripe`, idempotency keys, record lookups).
pub const SOURCE: &str = "stripe";

/// First day of the `basil` API versions: payments no longer name their invoice.
const BASIL_FIRST_VERSION: &str = "2025-03-31";

/// Description Stripe gives the PaymentIntents of subscriptions (docs/ingress.md).
const SUBSCRIPTION_DESCRIPTIONS: [&str; 2] = ["Subscription creation", "Subscription update"];

/// The envelope of a Stripe event; `object` is `data.object`, left as JSON because its shape
/// varies by type and `api_version`.
#[derive(Debug, Clone, PartialEq)]
pub struct StripeEvent {
    /// `evt_…`: the dedup key of deliveries.
    pub id: String,
    pub event_type: String,
    /// `None` on events built without one (fixtures); the object's shape decides then.
    pub api_version: Option<String>,
    pub created_s: i64,
    pub livemode: bool,
    pub object: Value,
}

/// Parses the event envelope. `id`, `type`, `created`, `livemode` and `data.object` are
/// required (Stripe always sends them; a guess about `livemode` could drop a real donation);
/// everything else is optional.
pub fn parse_event(raw: &[u8]) -> Result<StripeEvent, SourceError> {
    let mut root: Value = serde_json::from_slice(raw)
        .map_err(|err| SourceError::Malformed(format!("not JSON: {err}")))?;
    let text = |field: &str| -> Result<String, SourceError> {
        match root.get(field).and_then(Value::as_str) {
            Some(value) if !value.is_empty() => Ok(value.to_string()),
            _ => Err(SourceError::Malformed(format!(
                "`{field}` must be a non-empty string"
            ))),
        }
    };
    let id = text("id")?;
    let event_type = text("type")?;
    let api_version = root
        .get("api_version")
        .and_then(Value::as_str)
        .map(str::to_string);
    let created_s = root
        .get("created")
        .and_then(Value::as_i64)
        .ok_or_else(|| SourceError::Malformed("`created` must be an integer".into()))?;
    let livemode = root
        .get("livemode")
        .and_then(Value::as_bool)
        .ok_or_else(|| SourceError::Malformed("`livemode` must be a boolean".into()))?;
    let object = match root.pointer_mut("/data/object").map(Value::take) {
        Some(object @ Value::Object(_)) => object,
        _ => {
            return Err(SourceError::Malformed(
                "`data.object` must be an object".into(),
            ))
        }
    };
    Ok(StripeEvent {
        id,
        event_type,
        api_version,
        created_s,
        livemode,
        object,
    })
}

/// Which payload shapes an event follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiEra {
    /// Before 2025-03-31: charges and PaymentIntents name their `invoice`, invoices their
    /// `payment_intent`.
    Legacy,
    /// 2025-03-31 (`basil`) and later: the link is an InvoicePayment.
    Basil,
}

impl StripeEvent {
    /// The era from `api_version` (`YYYY-MM-DD[.name]`); without a readable version, from the
    /// object's shape (legacy objects carry the `invoice` / `payment_intent` keys, even null).
    pub fn api_era(&self) -> ApiEra {
        if let Some(date) = self.api_version.as_deref().and_then(|v| v.get(..10)) {
            let looks_like_date = date.len() == 10 && date.as_bytes()[4] == b'-';
            if looks_like_date {
                // ISO dates order as strings.
                return if date >= BASIL_FIRST_VERSION {
                    ApiEra::Basil
                } else {
                    ApiEra::Legacy
                };
            }
        }
        let legacy_key = match self.object.get("object").and_then(Value::as_str) {
            Some("invoice") => "payment_intent",
            _ => "invoice",
        };
        if self.object.get(legacy_key).is_some() {
            ApiEra::Legacy
        } else {
            ApiEra::Basil
        }
    }
}

/// The tenant's `sources.stripe` settings that shape the mapping (mirrors [`StripeSettings`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeMapping {
    /// Virtuous `transactionSource` / `referenceSource`.
    pub transaction_source: String,
    pub default_project_code: Option<String>,
    pub default_segment_code: Option<String>,
    /// `metadata` key holding the project (designation) code.
    pub metadata_project_key: String,
    /// `metadata` key holding the segment code.
    pub metadata_segment_key: String,
    pub accept_test_events: bool,
    /// How long a basil-era payment that looks like a subscription payment waits for its
    /// `invoice_payment.paid` link (`sources.stripe.subscription_hold_s`, default 120; docs/ingress.md).
    pub subscription_hold_s: u64,
}

/// Default of `subscription_hold_s` (docs/ingress.md).
pub const SUBSCRIPTION_HOLD_S_DEFAULT: u64 = 120;

impl StripeMapping {
    pub fn from_settings(settings: &StripeSettings) -> StripeMapping {
        StripeMapping {
            transaction_source: settings.transaction_source.clone(),
            default_project_code: settings.default_project_code.clone(),
            default_segment_code: settings.default_segment_code.clone(),
            metadata_project_key: settings.metadata_keys.project_code.clone(),
            metadata_segment_key: settings.metadata_keys.segment_code.clone(),
            accept_test_events: settings.accept_test_events,
            subscription_hold_s: settings.subscription_hold_s,
        }
    }
}

/// Something staff must look at (stored as a tenant alert by the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertNote {
    pub code: String,
    pub message: String,
}

/// The pieces that tie a subscription payment to its subscription. `invoice_payment.paid`
/// gives `payment_id` (and the rest only when its invoice is expanded); a basil `invoice.paid`
/// gives `subscription_id` and, on the first payment, `first_payment_frequency`. The caller
/// merges parts by `invoice_id` ([`SubscriptionLink::merge`]) and, once both ids are known,
/// turns the held payment into the recurring gift with [`apply_link`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscriptionLink {
    pub invoice_id: String,
    /// PaymentIntent id, else charge id: the held gift's `source_id`.
    pub payment_id: Option<String>,
    pub subscription_id: Option<String>,
    /// Virtuous `frequency`, set only when this invoice opened the subscription.
    pub first_payment_frequency: Option<String>,
    /// The event ids that carried the parts.
    pub event_ids: Vec<String>,
}

impl SubscriptionLink {
    /// Fills what `self` lacks from `other` (same invoice).
    pub fn merge(&mut self, other: SubscriptionLink) {
        self.payment_id = self.payment_id.take().or(other.payment_id);
        self.subscription_id = self.subscription_id.take().or(other.subscription_id);
        self.first_payment_frequency = self
            .first_payment_frequency
            .take()
            .or(other.first_payment_frequency);
        for event_id in other.event_ids {
            if !self.event_ids.contains(&event_id) {
                self.event_ids.push(event_id);
            }
        }
    }

    /// Both ids known: the held payment can become the recurring gift.
    pub fn is_complete(&self) -> bool {
        self.payment_id.is_some() && self.subscription_id.is_some()
    }
}

/// What one event means for Virtuous.
#[derive(Debug, Clone, PartialEq)]
pub enum Mapped {
    /// Answered `200`, counted, nothing queued.
    Ignored { reason: String },
    /// Queue these (and store the alerts: a dispute is a reversal *and* news for staff).
    Commands {
        commands: Vec<Command>,
        alerts: Vec<AlertNote>,
    },
    /// Nothing to queue; tell staff (a partial refund has no Virtuous equivalent).
    Alert(AlertNote),
    /// A basil-era payment that looks like a subscription payment: keep `gift` (the one-time
    /// form) until `until_s`, queue it then unless a complete link arrived first, in which case
    /// queue `apply_link(&gift, &link)` instead — at once.
    Hold {
        payment_id: String,
        until_s: i64,
        gift: Command,
    },
    /// A part of a subscription link (see [`SubscriptionLink`]).
    Link(SubscriptionLink),
}

/// Maps one verified, parsed event. `tz` is the tenant's time zone (`giftDate`); `now_unix_s`
/// only dates holds. A `SourceError::Mapping` means the event cannot become a valid body.
pub fn map_event(
    event: &StripeEvent,
    settings: &StripeMapping,
    tz: &TimeZone,
    now_unix_s: i64,
) -> Result<Mapped, SourceError> {
    if !event.livemode && !settings.accept_test_events {
        return Ok(ignored("test-mode event (accept_test_events is off)"));
    }
    let context = payment::Context {
        event,
        settings,
        tz,
        now_unix_s,
    };
    match event.event_type.as_str() {
        "payment_intent.succeeded" => context.map_payment(payment::PaymentObject::Intent),
        "charge.succeeded" | "charge.captured" => {
            context.map_payment(payment::PaymentObject::Charge)
        }
        "invoice.paid" => context.map_invoice_paid(),
        "invoice_payment.paid" => Ok(context.map_invoice_payment()),
        "charge.refunded" => reversal::map_refund(&context),
        "charge.dispute.funds_withdrawn" => reversal::map_dispute(&context),
        "customer.created" | "customer.updated" => reversal::map_customer(&context),
        other => Ok(ignored(&format!("unhandled event type `{other}`"))),
    }
}

fn ignored(reason: &str) -> Mapped {
    Mapped::Ignored {
        reason: reason.to_string(),
    }
}
