//! Defensive accessors over Stripe objects, and the field rules shared by every mapping:
//! the donor, `giftType`, `frequency`, `giftDate`.

use jiff::tz::TimeZone;
use serde_json::{json, Map, Value};

use crate::sources::split_full_name;

/// A non-empty string at `pointer`.
pub(super) fn text_at<'a>(object: &'a Value, pointer: &str) -> Option<&'a str> {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|text| !text.is_empty())
}

/// The id of a field that is either an id string or an expanded object (`{"id": …}`).
pub(super) fn id_at<'a>(object: &'a Value, pointer: &str) -> Option<&'a str> {
    match object.pointer(pointer)? {
        Value::String(id) if !id.trim().is_empty() => Some(id.trim()),
        expanded @ Value::Object(_) => text_at(expanded, "/id"),
        _ => None,
    }
}

/// The field at `pointer` when it is an expanded object.
pub(super) fn expanded_at<'a>(object: &'a Value, pointer: &str) -> Option<&'a Value> {
    object.pointer(pointer).filter(|value| value.is_object())
}

/// An amount field of a payment as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AmountField {
    /// Absent or `null`.
    Absent,
    /// A whole, non-negative number of minor units (zero included).
    Minor(i64),
    /// Anything else (`"2500"`, `-1`, `25.5`, `1e308`, beyond `i64`): never read as zero.
    Malformed,
}

/// The amount field at `pointer`.
pub(super) fn amount_field(object: &Value, pointer: &str) -> AmountField {
    match object.pointer(pointer) {
        None | Some(Value::Null) => AmountField::Absent,
        Some(value) => match value.as_i64() {
            Some(amount) if amount >= 0 => AmountField::Minor(amount),
            _ => AmountField::Malformed,
        },
    }
}

/// `YYYY-MM-DD` of `unix_s` in the tenant's time zone (docs/ingress.md "Stripe").
pub(super) fn gift_date(unix_s: i64, tz: &TimeZone) -> Option<String> {
    let timestamp = jiff::Timestamp::from_second(unix_s).ok()?;
    Some(timestamp.to_zoned(tz.clone()).date().to_string())
}

/// Virtuous `giftType` from a Stripe payment method type (docs/ingress.md "Stripe").
pub(super) fn gift_type(payment_method_type: Option<&str>) -> &'static str {
    match payment_method_type {
        Some("card" | "card_present") => "Credit",
        Some(
            "us_bank_account"
            | "ach_debit"
            | "ach_credit_transfer"
            | "sepa_debit"
            | "bacs_debit"
            | "acss_debit"
            | "au_becs_debit",
        ) => "EFT",
        Some("paypal") => "PayPal",
        _ => "Other",
    }
}

/// The payment method type of a charge, else of a PaymentIntent (its expanded latest charge
/// or payment method, else its only allowed type).
pub(super) fn payment_method_type(object: &Value) -> Option<&str> {
    if let Some(kind) = text_at(object, "/payment_method_details/type") {
        return Some(kind);
    }
    if let Some(charge) = expanded_at(object, "/latest_charge") {
        return payment_method_type(charge);
    }
    if let Some(kind) = text_at(object, "/payment_method/type") {
        return Some(kind);
    }
    match object.get("payment_method_types").and_then(Value::as_array) {
        Some(types) if types.len() == 1 => types[0].as_str(),
        _ => None,
    }
}

/// Virtuous `frequency` from a Stripe recurring interval; `None` when Virtuous has no match
/// (daily, every 5 weeks…): the gift is still recurring, only without a frequency.
pub(super) fn frequency(interval: &str, interval_count: i64) -> Option<&'static str> {
    match (interval, interval_count) {
        ("week", 1) => Some("Weekly"),
        ("month", 1) => Some("Monthly"),
        ("month", 2) => Some("Bimonthly"),
        ("month", 3) => Some("Quarterly"),
        ("month", 6) => Some("Semiannually"),
        ("month", 12) | ("year", 1) => Some("Annually"),
        ("month", 24) | ("year", 2) => Some("Biennially"),
        _ => None,
    }
}

/// The frequency of a subscription invoice, from its first line with a recurring price or
/// plan; failing that (basil lines name the price only by id) from a line's billing period.
pub(super) fn invoice_frequency(invoice: &Value) -> Option<&'static str> {
    let lines = invoice.pointer("/lines/data").and_then(Value::as_array)?;
    for line in lines {
        for recurring in [
            "/price/recurring",
            "/plan",
            "/pricing/price_details/price/recurring",
        ] {
            if let Some(interval) = text_at(line, &format!("{recurring}/interval")) {
                let count = line
                    .pointer(&format!("{recurring}/interval_count"))
                    .and_then(Value::as_i64)
                    .unwrap_or(1);
                return frequency(interval, count);
            }
        }
    }
    lines.iter().find_map(|line| {
        let start = line.pointer("/period/start").and_then(Value::as_i64)?;
        let end = line.pointer("/period/end").and_then(Value::as_i64)?;
        frequency_from_period_days((end - start) / 86_400)
    })
}

/// A billing period's length in whole days → frequency (months are 28–31 days).
fn frequency_from_period_days(days: i64) -> Option<&'static str> {
    match days {
        7 => Some("Weekly"),
        28..=31 => Some("Monthly"),
        59..=62 => Some("Bimonthly"),
        89..=92 => Some("Quarterly"),
        181..=184 => Some("Semiannually"),
        365..=366 => Some("Annually"),
        730..=731 => Some("Biennially"),
        _ => None,
    }
}

/// Who gave: gathered from billing details, receipt email and the customer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Donor {
    pub customer_id: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    /// Stripe address (`line1`, `line2`, `city`, `state`, `postal_code`, `country`).
    pub address: Option<Value>,
}

impl Donor {
    /// Fills the fields still empty from a Stripe `{name, email, phone, address}` object.
    pub fn fill_from(&mut self, details: Option<&Value>) {
        let Some(details) = details else { return };
        fill(&mut self.name, text_at(details, "/name"));
        fill(&mut self.email, text_at(details, "/email"));
        fill(&mut self.phone, text_at(details, "/phone"));
        if self.address.is_none() {
            self.address = details
                .get("address")
                .filter(|address| has_any_address_field(address))
                .cloned();
        }
    }

    pub fn fill_email(&mut self, email: Option<&str>) {
        fill(&mut self.email, email);
    }

    /// A Stripe customer: an id string or an expanded customer object.
    pub fn fill_from_customer(&mut self, customer: Option<&Value>) {
        match customer {
            Some(Value::String(id)) if !id.trim().is_empty() => {
                fill(&mut self.customer_id, Some(id.trim()))
            }
            Some(expanded @ Value::Object(_)) if expanded.get("deleted") != Some(&true.into()) => {
                fill(&mut self.customer_id, text_at(expanded, "/id"));
                self.fill_from(Some(expanded));
            }
            _ => {}
        }
    }

    /// The contract's minimum: an email, a name, or a reference id.
    pub fn is_identifiable(&self) -> bool {
        self.email.is_some() || self.name.is_some() || self.customer_id.is_some()
    }

    /// Name fields: `firstName` + `lastName` when the name splits, else `name`.
    pub fn insert_name(&self, body: &mut Map<String, Value>) {
        let Some(name) = &self.name else { return };
        match split_full_name(name) {
            Some((first, last)) => {
                body.insert("firstName".into(), first.into());
                body.insert("lastName".into(), last.into());
            }
            None => {
                body.insert("name".into(), name.clone().into());
            }
        }
    }

    /// The gift transaction's `contact` (nested `address`).
    pub fn gift_contact(&self, reference_source: &str) -> Value {
        let mut contact = Map::new();
        if let Some(customer_id) = &self.customer_id {
            contact.insert("referenceSource".into(), reference_source.into());
            contact.insert("referenceId".into(), customer_id.clone().into());
        }
        self.insert_name(&mut contact);
        insert_opt(&mut contact, "email", self.email.as_deref());
        insert_opt(&mut contact, "phone", self.phone.as_deref());
        if let Some(address) = &self.address {
            let mut nested = Map::new();
            insert_address(&mut nested, address);
            contact.insert("address".into(), Value::Object(nested));
        }
        Value::Object(contact)
    }

    /// A contact transaction's flat address fields.
    pub fn insert_flat_address(&self, body: &mut Map<String, Value>) {
        if let Some(address) = &self.address {
            insert_address(body, address);
        }
    }
}

fn fill(slot: &mut Option<String>, value: Option<&str>) {
    if slot.is_none() {
        *slot = value.map(str::to_string);
    }
}

/// Stripe address field → Virtuous address field.
const ADDRESS_FIELDS: [(&str, &str); 6] = [
    ("line1", "address1"),
    ("line2", "address2"),
    ("city", "city"),
    ("state", "state"),
    ("postal_code", "postal"),
    ("country", "country"),
];

fn has_any_address_field(address: &Value) -> bool {
    ADDRESS_FIELDS
        .iter()
        .any(|(stripe, _)| text_at(address, &format!("/{stripe}")).is_some())
}

fn insert_address(body: &mut Map<String, Value>, address: &Value) {
    for (stripe, virtuous) in ADDRESS_FIELDS {
        insert_opt(body, virtuous, text_at(address, &format!("/{stripe}")));
    }
}

pub(super) fn insert_opt(body: &mut Map<String, Value>, key: &str, value: Option<&str>) {
    if let Some(value) = value {
        body.insert(key.into(), json!(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gift_types_follow_the_contract_table() {
        // Goal: card → Credit, bank debits → EFT, paypal → PayPal, anything else → Other.
        assert_eq!(gift_type(Some("card")), "Credit");
        for debit in [
            "us_bank_account",
            "ach_debit",
            "sepa_debit",
            "bacs_debit",
            "acss_debit",
            "au_becs_debit",
        ] {
            assert_eq!(gift_type(Some(debit)), "EFT", "{debit}");
        }
        assert_eq!(gift_type(Some("paypal")), "PayPal");
        assert_eq!(gift_type(Some("klarna")), "Other");
        assert_eq!(gift_type(None), "Other");
    }

    #[test]
    fn intervals_map_to_virtuous_frequencies() {
        // Goal: Stripe interval + count → the Virtuous frequency list, None when there is none.
        assert_eq!(frequency("month", 1), Some("Monthly"));
        assert_eq!(frequency("year", 1), Some("Annually"));
        assert_eq!(frequency("week", 1), Some("Weekly"));
        assert_eq!(frequency("month", 3), Some("Quarterly"));
        assert_eq!(frequency("day", 1), None);
        assert_eq!(frequency("week", 5), None);
    }

    #[test]
    fn gift_dates_use_the_tenant_time_zone() {
        // Goal: 2024-03-01 03:00 UTC is still February 29 in Chicago.
        let unix_s = 1_709_262_000; // 2024-03-01T03:00:00Z
        assert_eq!(gift_date(unix_s, &TimeZone::UTC).unwrap(), "2024-03-01");
        let chicago = TimeZone::get("America/Chicago").unwrap();
        assert_eq!(gift_date(unix_s, &chicago).unwrap(), "2024-02-29");
    }

    #[test]
    fn a_basil_invoice_line_period_gives_the_frequency() {
        // Goal: without an expanded price, a one-month billing period means Monthly.
        let invoice = json!({"lines": {"data": [{"pricing": {"price_details": {"price": "price_1"}},
            "period": {"start": 1_700_000_000, "end": 1_700_000_000 + 30 * 86_400}}]}});
        assert_eq!(invoice_frequency(&invoice), Some("Monthly"));
        let invoice = json!({"lines": {"data": [{"price": {"recurring": {"interval": "year", "interval_count": 1}},
            "period": {"start": 0, "end": 30 * 86_400}}]}});
        assert_eq!(invoice_frequency(&invoice), Some("Annually"));
    }
}
