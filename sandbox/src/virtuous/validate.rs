//! Validation of transaction bodies into Virtuous's `modelState` shape
//! (`{"transaction.amount": ["…"]}`, batch keys `transactions[3].amount`).
//!
//! The views bind only the fields validation needs (unknown fields are skipped by serde,
//! which keeps the hot path cheap); the accepted body is stored as received.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::models::{parse_gift_date, Amount, LooseScalar};

/// Field → messages, in key order (stable output for tests and logs).
pub(crate) type ModelState = BTreeMap<String, Vec<String>>;

pub(crate) const GIFT_TYPES: [&str; 11] = [
    "Cash",
    "Check",
    "Credit",
    "EFT",
    "NonCash",
    "Stock",
    "Other",
    "ReversingTransaction",
    "Cryptocoin",
    "Pledge",
    "PayPal",
];

/// Contact types whose record is named by `name` rather than first + last name.
const NAMED_CONTACT_TYPES: [&str; 3] = ["Organization", "Foundation", "Business"];

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct GiftTransactionView {
    pub(crate) transaction_source: Option<LooseScalar>,
    pub(crate) transaction_id: Option<LooseScalar>,
    pub(crate) amount: Option<LooseScalar>,
    pub(crate) gift_date: Option<LooseScalar>,
    pub(crate) gift_type: Option<LooseScalar>,
    pub(crate) contact: Option<GiftContactView>,
    pub(crate) designations: Option<Vec<DesignationView>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct GiftContactView {
    pub(crate) id: Option<LooseScalar>,
    pub(crate) reference_id: Option<LooseScalar>,
    pub(crate) name: Option<LooseScalar>,
    #[serde(alias = "firstname", alias = "FirstName")]
    pub(crate) first_name: Option<LooseScalar>,
    #[serde(alias = "lastname", alias = "LastName")]
    pub(crate) last_name: Option<LooseScalar>,
    pub(crate) email: Option<LooseScalar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct DesignationView {
    pub(crate) amount_designated: Option<LooseScalar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ContactTransactionView {
    pub(crate) contact_type: Option<LooseScalar>,
    pub(crate) name: Option<LooseScalar>,
    #[serde(alias = "firstname")]
    pub(crate) first_name: Option<LooseScalar>,
    #[serde(alias = "lastname")]
    pub(crate) last_name: Option<LooseScalar>,
    pub(crate) reference_id: Option<LooseScalar>,
}

fn present(field: &Option<LooseScalar>) -> Option<&str> {
    field
        .as_ref()
        .and_then(LooseScalar::text)
        .map(str::trim)
        .filter(|text| !text.is_empty())
}

fn pascal(field: &str) -> String {
    let mut chars = field.chars();
    match chars.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

struct Errors<'a> {
    prefix: &'a str,
    state: &'a mut ModelState,
}

impl Errors<'_> {
    fn add(&mut self, field: &str, message: String) {
        let key = if field.is_empty() {
            self.prefix.to_owned()
        } else {
            format!("{}.{field}", self.prefix)
        };
        self.state.entry(key).or_default().push(message);
    }

    fn required(&mut self, field: &str) {
        self.add(field, format!("The {} field is required.", pascal(field)));
    }

    fn require_text(&mut self, field: &str, value: &Option<LooseScalar>) -> bool {
        match value {
            Some(LooseScalar::Other) => {
                self.add(
                    field,
                    format!("The value for {} is not valid.", pascal(field)),
                );
                false
            }
            _ if present(value).is_none() => {
                self.required(field);
                false
            }
            _ => true,
        }
    }
}

/// Validates one gift transaction; errors are keyed `{prefix}.{field}`.
pub(crate) fn validate_gift_transaction(
    view: &GiftTransactionView,
    prefix: &str,
    check_designation_sum: bool,
    state: &mut ModelState,
) {
    let mut errors = Errors { prefix, state };
    errors.require_text("transactionSource", &view.transaction_source);
    errors.require_text("transactionId", &view.transaction_id);
    let amount = check_amount(&mut errors, &view.amount);
    check_gift_date(&mut errors, &view.gift_date);
    check_gift_type(&mut errors, &view.gift_type);
    check_contact(&mut errors, view.contact.as_ref());
    if let Some(designations) = &view.designations {
        let sum_against = amount.filter(|_| check_designation_sum);
        check_designations(&mut errors, designations, sum_against);
    }
}

/// The gift amount when it is a positive decimal; otherwise an error is added.
fn check_amount(errors: &mut Errors<'_>, amount: &Option<LooseScalar>) -> Option<Amount> {
    match amount {
        Some(LooseScalar::Text(text)) if !text.trim().is_empty() => match Amount::parse(text) {
            Some(amount) if amount.micros > 0 => Some(amount),
            Some(_) => {
                errors.add("amount", "The Amount must be greater than 0.".into());
                None
            }
            None => {
                errors.add(
                    "amount",
                    format!("The value '{text}' is not valid for Amount."),
                );
                None
            }
        },
        Some(LooseScalar::Other) => {
            errors.add("amount", "The value for Amount is not valid.".into());
            None
        }
        _ => {
            errors.required("amount");
            None
        }
    }
}

fn check_gift_date(errors: &mut Errors<'_>, gift_date: &Option<LooseScalar>) {
    if errors.require_text("giftDate", gift_date) {
        let text = present(gift_date).unwrap_or_default();
        if parse_gift_date(text).is_none() {
            errors.add(
                "giftDate",
                format!("The value '{text}' is not valid for GiftDate."),
            );
        }
    }
}

fn check_gift_type(errors: &mut Errors<'_>, gift_type: &Option<LooseScalar>) {
    if errors.require_text("giftType", gift_type) {
        let text = present(gift_type).unwrap_or_default();
        if !GIFT_TYPES
            .iter()
            .any(|known| known.eq_ignore_ascii_case(text))
        {
            errors.add(
                "giftType",
                format!(
                    "'{text}' is not a valid GiftType ({}).",
                    GIFT_TYPES.join(", ")
                ),
            );
        }
    }
}

fn check_contact(errors: &mut Errors<'_>, contact: Option<&GiftContactView>) {
    match contact {
        None => errors.required("contact"),
        Some(contact) => {
            let identified = present(&contact.email).is_some()
                || (present(&contact.first_name).is_some()
                    && present(&contact.last_name).is_some())
                || present(&contact.name).is_some()
                || present(&contact.id).is_some()
                || present(&contact.reference_id).is_some();
            if !identified {
                errors.add(
                    "contact",
                    "The Contact needs at least one of: email, firstName and lastName, name, id, \
                     referenceId."
                        .into(),
                );
            }
        }
    }
}

/// Every designated amount must parse; when `sum_against` is given (a valid gift amount and
/// the org checks sums), a non-empty list must add up to it.
fn check_designations(
    errors: &mut Errors<'_>,
    designations: &[DesignationView],
    sum_against: Option<Amount>,
) {
    let mut designated_micros: i64 = 0;
    let mut all_parse = true;
    for (index, designation) in designations.iter().enumerate() {
        match present(&designation.amount_designated).and_then(Amount::parse) {
            Some(part) => designated_micros += part.micros,
            None => {
                all_parse = false;
                errors.add(
                    &format!("designations[{index}].amountDesignated"),
                    "The AmountDesignated field is required and must be a decimal.".into(),
                );
            }
        }
    }
    if let (true, Some(amount)) = (all_parse, sum_against) {
        if !designations.is_empty() && designated_micros != amount.micros {
            errors.add(
                "designations",
                format!(
                    "The designated amounts ({}) must add up to the gift amount ({}).",
                    Amount {
                        micros: designated_micros
                    },
                    amount
                ),
            );
        }
    }
}

/// Validates one contact transaction: Organization / Foundation / Business need `name`,
/// every other contact needs `firstName` and `lastName` (as the official client requires).
pub(crate) fn validate_contact_transaction(
    view: &ContactTransactionView,
    prefix: &str,
    state: &mut ModelState,
) {
    let mut errors = Errors { prefix, state };
    let named_type = present(&view.contact_type).is_some_and(|kind| {
        NAMED_CONTACT_TYPES
            .iter()
            .any(|t| t.eq_ignore_ascii_case(kind))
    });
    if named_type {
        errors.require_text("name", &view.name);
    } else {
        errors.require_text("firstName", &view.first_name);
        errors.require_text("lastName", &view.last_name);
    }
}

/// The `message` of a 400 with a `modelState`.
pub(crate) const INVALID_MESSAGE: &str = "The request is invalid.";

/// A body that is not JSON of the expected shape: one modelState entry under the prefix.
pub(crate) fn unreadable_body(prefix: &str, error: &serde_json::Error) -> ModelState {
    let mut state = ModelState::new();
    state.insert(
        prefix.to_owned(),
        vec![format!("The request body could not be read: {error}")],
    );
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gift_errors(body: serde_json::Value, check_sum: bool) -> ModelState {
        let view: GiftTransactionView = serde_json::from_value(body).unwrap();
        let mut state = ModelState::new();
        validate_gift_transaction(&view, "transaction", check_sum, &mut state);
        state
    }

    fn valid_gift() -> serde_json::Value {
        serde_json::json!({"transactionSource": "Stripe", "transactionId": "pi_1",
            "amount": "12.34", "giftDate": "2026-11-26", "giftType": "Credit",
            "contact": {"email": "a@example.org"}})
    }

    #[test]
    fn a_complete_gift_transaction_is_valid() {
        // Goal: the contract table's required fields are enough.
        assert!(gift_errors(valid_gift(), true).is_empty());
        let mut numeric = valid_gift();
        numeric["amount"] = serde_json::json!(12.34);
        numeric["transactionId"] = serde_json::json!(991);
        assert!(gift_errors(numeric, true).is_empty());
    }

    #[test]
    fn missing_fields_are_named_with_the_prefix() {
        // Goal: every missing required field gets its own `transaction.<field>` key.
        let state = gift_errors(serde_json::json!({}), true);
        let keys: Vec<&str> = state.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "transaction.amount",
                "transaction.contact",
                "transaction.giftDate",
                "transaction.giftType",
                "transaction.transactionId",
                "transaction.transactionSource"
            ]
        );
        assert_eq!(
            state["transaction.amount"],
            ["The Amount field is required."]
        );
    }

    #[test]
    fn malformed_values_are_named() {
        // Goal: malformed amount, date, type and a bare contact are each reported.
        let mut body = valid_gift();
        body["amount"] = serde_json::json!("12,34");
        body["giftDate"] = serde_json::json!("26.11.2026");
        body["giftType"] = serde_json::json!("Card");
        body["contact"] = serde_json::json!({"phone": "555"});
        let state = gift_errors(body, true);
        assert_eq!(
            state["transaction.amount"],
            ["The value '12,34' is not valid for Amount."]
        );
        assert!(state["transaction.giftDate"][0].contains("26.11.2026"));
        assert!(state["transaction.giftType"][0].contains("'Card'"));
        assert!(state.contains_key("transaction.contact"));
        let mut zero = valid_gift();
        zero["amount"] = serde_json::json!(0);
        assert!(gift_errors(zero, true)["transaction.amount"][0].contains("greater than 0"));
    }

    #[test]
    fn designation_sum_is_checked_only_when_switched_on() {
        // Goal: designations not adding up give 400 data only under validate_designation_sum.
        let mut body = valid_gift();
        body["designations"] = serde_json::json!([
            {"code": "A", "amountDesignated": "10.00"}, {"code": "B", "amountDesignated": 2}
        ]);
        let state = gift_errors(body.clone(), true);
        assert!(state["transaction.designations"][0].contains("(12)"));
        assert!(gift_errors(body.clone(), false).is_empty());
        body["designations"][1]["amountDesignated"] = serde_json::json!("2.34");
        assert!(gift_errors(body, true).is_empty());
    }

    #[test]
    fn contact_transactions_need_names_by_type() {
        // Goal: households need first + last name, organizations need a name.
        let check = |body: serde_json::Value| {
            let view: ContactTransactionView = serde_json::from_value(body).unwrap();
            let mut state = ModelState::new();
            validate_contact_transaction(&view, "contacts[3]", &mut state);
            state
        };
        let state = check(serde_json::json!({"firstName": "Ann"}));
        assert_eq!(state.keys().collect::<Vec<_>>(), ["contacts[3].lastName"]);
        assert!(check(serde_json::json!({"firstname": "Ann", "lastname": "Lee"})).is_empty());
        let state = check(serde_json::json!({"contactType": "Organization"}));
        assert_eq!(state.keys().collect::<Vec<_>>(), ["contacts[3].name"]);
    }
}
