//! Gifts from payments (`payment_intent.succeeded`, `charge.succeeded`) and invoices
//! (`invoice.paid`), subscription holds and links (`invoice_payment.paid`).

use jiff::tz::TimeZone;
use serde_json::{json, Map, Value};
use steward_actors::store::{EntryFact, Lane, RecordKind};

use super::fields::{
    amount_field, expanded_at, gift_date, gift_type, id_at, insert_opt, invoice_frequency,
    payment_method_type, text_at, AmountField, Donor,
};
use super::{
    ignored, ApiEra, Mapped, StripeEvent, StripeMapping, SubscriptionLink, SOURCE,
    SUBSCRIPTION_DESCRIPTIONS,
};
use crate::sources::amount::minor_to_major;
use crate::sources::{idempotency_key, Command, SourceError};

/// Which object a payment event carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PaymentObject {
    Intent,
    Charge,
}

/// Everything one mapping needs.
pub(super) struct Context<'a> {
    pub event: &'a StripeEvent,
    pub settings: &'a StripeMapping,
    pub tz: &'a TimeZone,
    pub now_unix_s: i64,
}

/// The facts of one gift, whichever object they came from.
struct GiftFacts<'a> {
    /// PaymentIntent id, else charge id: `transactionId`, `source_id`, idempotency key.
    payment_id: String,
    amount_minor: i64,
    currency: String,
    /// When the money moved (`giftDate`).
    paid_at_s: i64,
    method_type: Option<&'a str>,
    donor: Donor,
    /// `metadata` objects, most specific first.
    metadata: Vec<&'a Value>,
    subscription_id: Option<String>,
    frequency: Option<&'static str>,
    aliases: Vec<Option<&'a str>>,
}

impl<'a> Context<'a> {
    pub fn mapping_error(&self, reason: &str) -> SourceError {
        SourceError::Mapping {
            event_type: self.event.event_type.clone(),
            object_id: text_at(&self.event.object, "/id")
                .unwrap_or("(no id)")
                .to_string(),
            reason: reason.to_string(),
        }
    }

    /// The amount in minor units of the first of `fields` that holds one above zero (a
    /// PaymentIntent's `amount_received`, else its `amount`); `0` for a true zero, which the
    /// caller ignores. A malformed field, or no amount at all, is a mapping error — the event
    /// is answered `200 rejected`, kept and alerted (docs/ingress.md) — never read as zero.
    fn amount_minor(&self, object: &Value, fields: &[&str]) -> Result<i64, SourceError> {
        let mut zero_seen = false;
        for field in fields {
            match amount_field(object, &format!("/{field}")) {
                AmountField::Minor(amount) if amount > 0 => return Ok(amount),
                AmountField::Minor(_) => zero_seen = true,
                AmountField::Absent => {}
                AmountField::Malformed => {
                    return Err(self.mapping_error(&format!(
                        "`{field}` is not a whole, non-negative number of minor units"
                    )))
                }
            }
        }
        if zero_seen {
            Ok(0)
        } else {
            Err(self.mapping_error(&format!("no amount (`{}`)", fields.join("`, `"))))
        }
    }

    /// `payment_intent.succeeded` / `charge.succeeded`: one gift per payment, same
    /// `transactionId` and idempotency key whichever event arrives (docs/ingress.md).
    pub fn map_payment(&self, kind: PaymentObject) -> Result<Mapped, SourceError> {
        let object = &self.event.object;
        let own_id = text_at(object, "/id").ok_or_else(|| self.mapping_error("no id"))?;
        let (intent_id, charge_id) = match kind {
            PaymentObject::Intent => (Some(own_id), id_at(object, "/latest_charge")),
            PaymentObject::Charge => (id_at(object, "/payment_intent"), Some(own_id)),
        };
        if kind == PaymentObject::Charge && object.get("captured") == Some(&Value::Bool(false)) {
            return Ok(ignored(
                "charge authorised, not captured: the capture's event creates the gift",
            ));
        }
        let looks_like_subscription = text_at(object, "/description")
            .is_some_and(|description| SUBSCRIPTION_DESCRIPTIONS.contains(&description));
        let held_intent_id = match self.event.api_era() {
            ApiEra::Legacy if id_at(object, "/invoice").is_some() => {
                return Ok(ignored(
                    "payment of an invoice (API before 2025-03-31): invoice.paid creates the gift",
                ));
            }
            ApiEra::Basil if looks_like_subscription => intent_id,
            _ => None,
        };
        let amount_key = match kind {
            PaymentObject::Intent => "amount_received",
            PaymentObject::Charge => "amount_captured",
        };
        let amount_minor = self.amount_minor(object, &[amount_key, "amount"])?;
        if amount_minor == 0 {
            return Ok(ignored("payment of zero"));
        }
        let mut donor = Donor::default();
        donor.fill_from(object.get("billing_details"));
        donor.fill_from(object.pointer("/latest_charge/billing_details"));
        donor.fill_email(text_at(object, "/receipt_email"));
        donor.fill_from_customer(object.get("customer"));
        let facts = GiftFacts {
            payment_id: intent_id.unwrap_or(own_id).to_string(),
            amount_minor,
            currency: self.currency(object)?,
            paid_at_s: object
                .get("created")
                .and_then(Value::as_i64)
                .unwrap_or(self.event.created_s),
            method_type: payment_method_type(object),
            donor,
            // Stripe does not copy a PaymentIntent's metadata onto its charges: a charge
            // event sees it only when the PaymentIntent is expanded.
            metadata: [
                object.get("metadata"),
                object.pointer("/latest_charge/metadata"),
                object.pointer("/payment_intent/metadata"),
            ]
            .into_iter()
            .flatten()
            .collect(),
            subscription_id: None,
            frequency: None,
            aliases: vec![intent_id, charge_id],
        };
        let gift = self.gift_command(facts)?;
        match held_intent_id {
            Some(intent_id) => Ok(Mapped::Hold {
                payment_id: intent_id.to_string(),
                until_s: self
                    .now_unix_s
                    .saturating_add_unsigned(self.settings.subscription_hold_s),
                gift,
            }),
            None => Ok(Mapped::Commands {
                commands: vec![gift],
                alerts: Vec::new(),
            }),
        }
    }

    /// `invoice.paid`. Before 2025-03-31 the invoice creates the (recurring) gift keyed by its
    /// `payment_intent`; from basil on it only contributes the subscription to a link.
    pub fn map_invoice_paid(&self) -> Result<Mapped, SourceError> {
        let invoice = &self.event.object;
        let invoice_id = text_at(invoice, "/id").ok_or_else(|| self.mapping_error("no id"))?;
        let subscription_id = text_at(invoice, "/parent/subscription_details/subscription")
            .or_else(|| id_at(invoice, "/subscription"));
        let is_first_payment = text_at(invoice, "/billing_reason") == Some("subscription_create");
        let frequency = match (subscription_id, is_first_payment) {
            (Some(_), true) => invoice_frequency(invoice),
            _ => None,
        };
        if self.event.api_era() == ApiEra::Basil {
            let Some(subscription_id) = subscription_id else {
                return Ok(ignored(
                    "invoice outside a subscription (API 2025-03-31+): the payment event creates the gift",
                ));
            };
            return Ok(Mapped::Link(SubscriptionLink {
                invoice_id: invoice_id.to_string(),
                payment_id: id_at(invoice, "/payments/data/0/payment/payment_intent")
                    .map(str::to_string),
                subscription_id: Some(subscription_id.to_string()),
                first_payment_frequency: frequency.map(str::to_string),
                event_ids: vec![self.event.id.clone()],
            }));
        }
        let Some(intent_id) = id_at(invoice, "/payment_intent") else {
            return Ok(ignored(
                "invoice paid without a PaymentIntent (credit balance, out of band or zero)",
            ));
        };
        let amount_minor = self.amount_minor(invoice, &["amount_paid"])?;
        if amount_minor == 0 {
            return Ok(ignored("invoice paid with zero"));
        }
        let mut donor = Donor::default();
        donor.fill_from(Some(&json!({
            "name": invoice.get("customer_name"),
            "email": invoice.get("customer_email"),
            "phone": invoice.get("customer_phone"),
            "address": invoice.get("customer_address"),
        })));
        donor.fill_from_customer(invoice.get("customer"));
        let method_type = expanded_at(invoice, "/payment_intent")
            .or_else(|| expanded_at(invoice, "/charge"))
            .and_then(payment_method_type)
            .or_else(|| {
                match invoice
                    .pointer("/payment_settings/payment_method_types")
                    .and_then(Value::as_array)
                {
                    Some(types) if types.len() == 1 => types[0].as_str(),
                    _ => None,
                }
            });
        let facts = GiftFacts {
            payment_id: intent_id.to_string(),
            amount_minor,
            currency: self.currency(invoice)?,
            paid_at_s: invoice
                .pointer("/status_transitions/paid_at")
                .and_then(Value::as_i64)
                .unwrap_or(self.event.created_s),
            method_type,
            donor,
            metadata: [
                "/metadata",
                "/subscription_details/metadata",
                "/parent/subscription_details/metadata",
                "/lines/data/0/metadata",
            ]
            .into_iter()
            .filter_map(|pointer| invoice.pointer(pointer))
            .collect(),
            subscription_id: subscription_id.map(str::to_string),
            frequency,
            aliases: vec![Some(invoice_id), id_at(invoice, "/charge")],
        };
        Ok(Mapped::Commands {
            commands: vec![self.gift_command(facts)?],
            alerts: Vec::new(),
        })
    }

    /// `invoice_payment.paid` (basil): ties an invoice to the payment that paid it.
    pub fn map_invoice_payment(&self) -> Mapped {
        let object = &self.event.object;
        let Some(invoice_id) = id_at(object, "/invoice") else {
            return ignored("invoice payment without an invoice id");
        };
        let payment_id =
            id_at(object, "/payment/payment_intent").or_else(|| id_at(object, "/payment/charge"));
        let Some(payment_id) = payment_id else {
            return ignored("invoice payment without a payment id");
        };
        let mut link = SubscriptionLink {
            invoice_id: invoice_id.to_string(),
            payment_id: Some(payment_id.to_string()),
            subscription_id: None,
            first_payment_frequency: None,
            event_ids: vec![self.event.id.clone()],
        };
        if let Some(invoice) = expanded_at(object, "/invoice") {
            link.subscription_id = text_at(invoice, "/parent/subscription_details/subscription")
                .or_else(|| id_at(invoice, "/subscription"))
                .map(str::to_string);
            if text_at(invoice, "/billing_reason") == Some("subscription_create") {
                link.first_payment_frequency = invoice_frequency(invoice).map(str::to_string);
            }
        }
        Mapped::Link(link)
    }

    fn currency(&self, object: &Value) -> Result<String, SourceError> {
        // Three ASCII letters: `12$` or `a b` would be sent to Virtuous as a currency code.
        text_at(object, "/currency")
            .filter(|currency| {
                currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_alphabetic())
            })
            .map(str::to_ascii_lowercase)
            .ok_or_else(|| self.mapping_error("no three-letter currency"))
    }

    fn metadata_code(&self, metadata: &[&Value], key: &str) -> Option<String> {
        metadata
            .iter()
            .find_map(|object| text_at(object, &format!("/{}", escape_pointer(key))))
            .map(str::to_string)
    }

    /// The gift transaction command (docs/ingress.md "Stripe").
    fn gift_command(&self, facts: GiftFacts<'_>) -> Result<Command, SourceError> {
        if !facts.donor.is_identifiable() {
            return Err(
                self.mapping_error("no donor: no billing email or name, receipt_email or customer")
            );
        }
        let settings = self.settings;
        let amount = minor_to_major(facts.amount_minor, &facts.currency);
        let gift_date = gift_date(facts.paid_at_s, self.tz)
            .ok_or_else(|| self.mapping_error("created is out of range"))?;
        let mut body = Map::new();
        body.insert(
            "transactionSource".into(),
            json!(settings.transaction_source),
        );
        body.insert("transactionId".into(), json!(facts.payment_id));
        body.insert("amount".into(), json!(amount));
        body.insert(
            "currencyCode".into(),
            json!(facts.currency.to_ascii_uppercase()),
        );
        body.insert("giftDate".into(), json!(gift_date));
        body.insert("giftType".into(), json!(gift_type(facts.method_type)));
        body.insert(
            "contact".into(),
            facts.donor.gift_contact(&settings.transaction_source),
        );
        let project = self
            .metadata_code(&facts.metadata, &settings.metadata_project_key)
            .or_else(|| settings.default_project_code.clone());
        if let Some(project) = project {
            // One designation for the whole amount: the sum rule holds by construction.
            body.insert(
                "designations".into(),
                json!([{"code": project, "amountDesignated": amount}]),
            );
        }
        let segment = self
            .metadata_code(&facts.metadata, &settings.metadata_segment_key)
            .or_else(|| settings.default_segment_code.clone());
        insert_opt(&mut body, "segment", segment.as_deref());
        insert_opt(
            &mut body,
            "recurringGiftTransactionId",
            facts.subscription_id.as_deref(),
        );
        if facts.subscription_id.is_some() {
            insert_opt(&mut body, "frequency", facts.frequency);
        }
        let aliases = aliases(
            &facts.payment_id,
            std::iter::once(Some(self.event.id.as_str())).chain(facts.aliases),
        );
        Ok(Command {
            fact: EntryFact {
                kind: RecordKind::Gift,
                source: SOURCE.to_string(),
                idempotency_key: idempotency_key(SOURCE, RecordKind::Gift, &facts.payment_id),
                source_id: facts.payment_id,
                lane: Lane::Live,
                transaction_source: settings.transaction_source.clone(),
                body_json: Value::Object(body).to_string(),
            },
            aliases,
        })
    }
}

/// Distinct ids, without the record's own source id.
pub(super) fn aliases<'a>(
    source_id: &str,
    candidates: impl IntoIterator<Item = Option<&'a str>>,
) -> Vec<String> {
    let mut aliases: Vec<String> = Vec::new();
    for id in candidates.into_iter().flatten() {
        if id != source_id && !aliases.iter().any(|known| known == id) {
            aliases.push(id.to_string());
        }
    }
    aliases
}

/// JSON Pointer escaping of a metadata key (`~` and `/` are legal in Stripe metadata keys).
fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// The recurring form of a held subscription payment: `recurringGiftTransactionId` = the
/// subscription and, on the first payment, `frequency`. Same `transactionId` and idempotency
/// key as the held one-time form. Without a subscription id the gift is returned unchanged.
pub fn apply_link(held_gift: &Command, link: &SubscriptionLink) -> Command {
    let mut gift = held_gift.clone();
    let Some(subscription_id) = &link.subscription_id else {
        return gift;
    };
    let mut body = gift.body();
    if let Value::Object(fields) = &mut body {
        fields.insert("recurringGiftTransactionId".into(), json!(subscription_id));
        if let Some(frequency) = &link.first_payment_frequency {
            fields.insert("frequency".into(), json!(frequency));
        }
    }
    gift.fact.body_json = body.to_string();
    let extra = std::iter::once(Some(link.invoice_id.as_str()))
        .chain(link.event_ids.iter().map(|id| Some(id.as_str())));
    for alias in aliases(&gift.fact.source_id, extra) {
        if !gift.aliases.contains(&alias) {
            gift.aliases.push(alias);
        }
    }
    gift
}
