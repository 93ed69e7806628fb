//! The canonical contact fields two-way sync compares (docs/two-way.md "Fields"), how each
//! side's JSON maps to them, and the two comparisons: exact (the ledger) and tolerant (the
//! echo window and "did it change at all").
//!
//! | field | Virtuous contact | contact transaction body (partner side) |
//! |---|---|---|
//! | `email` | primary individual's first email method `value` | `email` |
//! | `first_name` | primary individual's `firstName` | `firstName` |
//! | `last_name` | primary individual's `lastName` | `lastName` |
//! | `tags` | `tags` (strings, or objects with `name`) | `tags` (`a;b` or an array) |
//! | `subscribed` | that email method's `isOptedIn` | `emailSubscribed`, or the email status custom field |
//!
//! Values are JSON: strings (`null` = blank), tags a sorted array of strings, `subscribed` a
//! bool. A key absent from a change's [`Fields`] means the change does not say.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};

use serde_json::{json, Map, Value};

/// Field name → value.
pub type Fields = BTreeMap<String, Value>;

/// Every field two-way sync knows, in display order.
pub const FIELD_NAMES: [&str; 5] = ["email", "first_name", "last_name", "tags", "subscribed"];

/// The custom field Steward writes a partner's email status into (`sources` docs).
pub const EMAIL_STATUS_FIELD: &str = "Email Status";

fn text(value: Option<&Value>) -> Value {
    match value {
        Some(Value::String(text)) => json!(text),
        Some(Value::Number(number)) => json!(number.to_string()),
        _ => Value::Null,
    }
}

/// Tags from `a;b`, `["a","b"]` or `[{"name": "a"}]`: a sorted, de-duplicated array.
pub fn tags_value(value: &Value) -> Value {
    let names: BTreeSet<String> = match value {
        Value::String(joined) => joined
            .split(';')
            .map(str::trim)
            .filter(|tag| !tag.is_empty())
            .map(str::to_string)
            .collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(|item| match item {
                Value::String(tag) => Some(tag.trim().to_string()),
                other => other
                    .get("name")
                    .and_then(Value::as_str)
                    .map(|tag| tag.trim().to_string()),
            })
            .filter(|tag| !tag.is_empty())
            .collect(),
        _ => BTreeSet::new(),
    };
    json!(names.into_iter().collect::<Vec<_>>())
}

fn key_ci<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    object.get(name).or_else(|| {
        object
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    })
}

/// The primary individual of a Virtuous contact (the one marked primary, else the first).
fn primary_individual(contact: &Map<String, Value>) -> Option<&Map<String, Value>> {
    let individuals = key_ci(contact, "contactIndividuals")?.as_array()?;
    individuals
        .iter()
        .find(|individual| individual.get("isPrimary") == Some(&Value::Bool(true)))
        .or_else(|| individuals.first())
        .and_then(Value::as_object)
}

/// The email method of an individual (the primary one, else the first whose type names an
/// email).
pub fn email_method(individual: &Map<String, Value>) -> Option<&Map<String, Value>> {
    let methods = key_ci(individual, "contactMethods")?.as_array()?;
    let emails: Vec<&Map<String, Value>> = methods
        .iter()
        .filter_map(Value::as_object)
        .filter(|method| {
            method
                .get("type")
                .and_then(Value::as_str)
                .is_some_and(|kind| kind.to_ascii_lowercase().contains("email"))
        })
        .collect();
    emails
        .iter()
        .find(|method| method.get("isPrimary") == Some(&Value::Bool(true)))
        .or(emails.first())
        .copied()
}

/// The canonical fields of a Virtuous contact (webhook model, `FullContact`, `GET`).
pub fn from_virtuous(contact: &Value) -> Fields {
    let mut fields = Fields::new();
    let Some(contact) = contact.as_object() else {
        return fields;
    };
    let individual = primary_individual(contact);
    fields.insert(
        "first_name".into(),
        text(individual.and_then(|i| key_ci(i, "firstName"))),
    );
    fields.insert(
        "last_name".into(),
        text(individual.and_then(|i| key_ci(i, "lastName"))),
    );
    let method = individual.and_then(email_method);
    fields.insert(
        "email".into(),
        text(method.and_then(|method| method.get("value"))),
    );
    if let Some(opted_in) = method
        .and_then(|method| method.get("isOptedIn"))
        .and_then(Value::as_bool)
    {
        fields.insert("subscribed".into(), json!(opted_in));
    }
    fields.insert(
        "tags".into(),
        tags_value(key_ci(contact, "tags").unwrap_or(&Value::Null)),
    );
    fields
}

/// The `contactReferences` of a Virtuous contact: `(source, id)` pairs.
pub fn virtuous_references(contact: &Value) -> Vec<(String, String)> {
    let Some(list) = contact
        .as_object()
        .and_then(|contact| key_ci(contact, "contactReferences"))
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|reference| {
            let source = reference.get("source").and_then(Value::as_str)?;
            let id = match reference.get("id")? {
                Value::String(id) => id.clone(),
                Value::Number(number) => number.to_string(),
                _ => return None,
            };
            Some((source.to_string(), id))
        })
        .collect()
}

/// Whether an email status means "opted in".
fn subscribed_of_status(status: &str) -> Option<bool> {
    match status.to_ascii_lowercase().as_str() {
        "subscribed" => Some(true),
        "unsubscribed" | "cleaned" | "deleted" | "not subscribed" | "not_subscribed" => Some(false),
        _ => None,
    }
}

/// The canonical fields of a partner change, from the contact transaction body the source
/// mapped it to (only what the body carries).
pub fn from_transaction_body(body: &Value) -> Fields {
    let mut fields = Fields::new();
    let Some(body) = body.as_object() else {
        return fields;
    };
    for (field, key) in [
        ("email", "email"),
        ("first_name", "firstName"),
        ("last_name", "lastName"),
    ] {
        if let Some(value) = key_ci(body, key) {
            fields.insert(field.into(), text(Some(value)));
        }
    }
    if let Some(tags) = key_ci(body, "tags") {
        fields.insert("tags".into(), tags_value(tags));
    }
    let subscribed = key_ci(body, "emailSubscribed")
        .and_then(Value::as_bool)
        .or_else(|| {
            let custom = key_ci(body, "customFields")?.as_object()?;
            subscribed_of_status(key_ci(custom, EMAIL_STATUS_FIELD)?.as_str()?)
        });
    if let Some(subscribed) = subscribed {
        fields.insert("subscribed".into(), json!(subscribed));
    }
    fields
}

/// Whether a value is blank (`null`, empty or whitespace, no tags).
pub fn is_blank(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => true,
        Some(Value::String(text)) => text.trim().is_empty(),
        Some(Value::Array(items)) => items.is_empty(),
        Some(_) => false,
    }
}

/// A value as the tolerant comparison sees it: text trimmed with inner runs of whitespace
/// collapsed, emails lower-cased, tags compared as a case-insensitive set, blank = `null`.
pub fn tolerant(field: &str, value: Option<&Value>) -> Value {
    if is_blank(value) {
        return Value::Null;
    }
    match value {
        Some(Value::String(text)) => {
            let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
            if field == "email" {
                json!(collapsed.to_lowercase())
            } else {
                json!(collapsed)
            }
        }
        Some(Value::Array(_)) => {
            let tags = tags_value(value.unwrap_or(&Value::Null));
            let lowered: BTreeSet<String> = tags
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_lowercase)
                .collect();
            json!(lowered.into_iter().collect::<Vec<_>>())
        }
        Some(other) => other.clone(),
        None => Value::Null,
    }
}

/// Whether two values of `field` are the same once normalised.
pub fn same(field: &str, a: Option<&Value>, b: Option<&Value>) -> bool {
    tolerant(field, a) == tolerant(field, b)
}

/// A stable hash of fields exactly as given (the ledger's comparison).
pub fn exact_hash(fields: &Fields) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    // BTreeMap order and serde_json's canonical output make the text stable.
    serde_json::to_string(fields)
        .unwrap_or_default()
        .hash(&mut hasher);
    hasher.finish()
}

/// `fields` restricted to `names`.
pub fn only<'a>(fields: &Fields, names: impl IntoIterator<Item = &'a str>) -> Fields {
    names
        .into_iter()
        .filter_map(|name| {
            fields
                .get(name)
                .map(|value| (name.to_string(), value.clone()))
        })
        .collect()
}

/// The Virtuous contact `current` with `set` applied (the body of `PUT /api/Contact/{id}`):
/// names on the primary individual, the email and its opt-in on its email method, tags;
/// `referenceSource` names us as the latest writer. Individuals or methods missing are added.
pub fn apply_to_virtuous(current: &Value, set: &Fields, reference_source: &str) -> Value {
    let mut contact = current.as_object().cloned().unwrap_or_default();
    contact.insert("referenceSource".into(), json!(reference_source));
    if let Some(tags) = set.get("tags") {
        contact.insert("tags".into(), tags_value(tags));
    }
    let touches_individual = ["first_name", "last_name", "email", "subscribed"]
        .iter()
        .any(|field| set.contains_key(*field));
    if !touches_individual {
        return Value::Object(contact);
    }
    let individuals = contact
        .entry("contactIndividuals")
        .or_insert_with(|| json!([]));
    if !individuals.is_array() {
        *individuals = json!([]);
    }
    let list = individuals.as_array_mut().expect("made an array above");
    if list.is_empty() {
        list.push(
            json!({"firstName": null, "lastName": null, "isPrimary": true, "contactMethods": []}),
        );
    }
    let index = list
        .iter()
        .position(|individual| individual.get("isPrimary") == Some(&Value::Bool(true)))
        .unwrap_or(0);
    let individual = &mut list[index];
    for (field, key) in [("first_name", "firstName"), ("last_name", "lastName")] {
        if let Some(value) = set.get(field) {
            individual[key] = value.clone();
        }
    }
    if set.contains_key("email") || set.contains_key("subscribed") {
        set_email_method(individual, set);
    }
    Value::Object(contact)
}

fn set_email_method(individual: &mut Value, set: &Fields) {
    if !individual
        .get("contactMethods")
        .is_some_and(Value::is_array)
    {
        individual["contactMethods"] = json!([]);
    }
    let methods = individual["contactMethods"]
        .as_array_mut()
        .expect("made an array above");
    let is_email = |method: &Value| {
        method
            .get("type")
            .and_then(Value::as_str)
            .is_some_and(|kind| kind.to_ascii_lowercase().contains("email"))
    };
    let position = methods
        .iter()
        .position(|method| is_email(method) && method.get("isPrimary") == Some(&Value::Bool(true)))
        .or_else(|| methods.iter().position(is_email));
    let index = match position {
        Some(index) => index,
        None => {
            methods.push(
                json!({"type": "Home Email", "value": null, "isOptedIn": false, "isPrimary": true}),
            );
            methods.len() - 1
        }
    };
    if let Some(email) = set.get("email") {
        methods[index]["value"] = email.clone();
    }
    if let Some(subscribed) = set.get("subscribed") {
        methods[index]["isOptedIn"] = json!(subscribed.as_bool().unwrap_or(false));
    }
}

/// A value an operator gives for `field` (a conflict's resolution): text or `null` for
/// names and email, an array of strings for tags, a bool for `subscribed`.
pub fn check_value(field: &str, value: &Value) -> Result<Value, String> {
    match (field, value) {
        ("email" | "first_name" | "last_name", Value::String(_) | Value::Null) => Ok(value.clone()),
        ("tags", Value::Array(items)) if items.iter().all(Value::is_string) => {
            Ok(tags_value(value))
        }
        ("subscribed", Value::Bool(_)) => Ok(value.clone()),
        ("email" | "first_name" | "last_name", _) => {
            Err(format!("`{field}` takes a string or null"))
        }
        ("tags", _) => Err("`tags` takes an array of strings".into()),
        ("subscribed", _) => Err("`subscribed` takes true or false".into()),
        _ => Err(format!("unknown field `{field}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contact() -> Value {
        json!({"id": 7, "tags": ["b", "a"], "contactReferences": [{"source": "Mailchimp", "id": "u1"}],
            "contactIndividuals": [{"firstName": "Ann", "lastName": "Lee", "isPrimary": true,
                "contactMethods": [{"type": "Mobile Phone", "value": "555"},
                                   {"type": "Home Email", "value": "Ann@X.org", "isOptedIn": true, "isPrimary": true}]}]})
    }

    #[test]
    fn a_virtuous_contact_reads_as_canonical_fields() {
        // Goal: names and email come from the primary individual's email method; tags sorted.
        let fields = from_virtuous(&contact());
        assert_eq!(fields["email"], json!("Ann@X.org"));
        assert_eq!(fields["first_name"], json!("Ann"));
        assert_eq!(fields["last_name"], json!("Lee"));
        assert_eq!(fields["tags"], json!(["a", "b"]));
        assert_eq!(fields["subscribed"], json!(true));
        assert_eq!(
            virtuous_references(&contact()),
            vec![("Mailchimp".to_string(), "u1".to_string())]
        );
    }

    #[test]
    fn a_transaction_body_says_only_what_it_carries() {
        // Goal: a profile webhook without tags or status leaves them unknown (absent).
        let fields = from_transaction_body(&json!({"email": "a@x.org", "firstName": "A"}));
        assert_eq!(fields.len(), 2);
        let fields = from_transaction_body(
            &json!({"email": "a@x.org", "tags": "x; y", "customFields": {"Email Status": "Unsubscribed"}}),
        );
        assert_eq!(fields["tags"], json!(["x", "y"]));
        assert_eq!(fields["subscribed"], json!(false));
    }

    #[test]
    fn tolerant_comparison_ignores_case_of_emails_whitespace_and_tag_order() {
        // Goal: formatting differences are the same value; a real difference is not.
        assert!(same(
            "email",
            Some(&json!(" Ann@X.org ")),
            Some(&json!("ann@x.org"))
        ));
        assert!(same(
            "first_name",
            Some(&json!("Ann  Marie")),
            Some(&json!(" Ann Marie"))
        ));
        assert!(!same(
            "first_name",
            Some(&json!("ann")),
            Some(&json!("Ann"))
        ));
        assert!(same(
            "tags",
            Some(&json!(["B", "a"])),
            Some(&json!(["a", "b"]))
        ));
        assert!(same("last_name", Some(&json!("")), None));
        assert!(!same(
            "email",
            Some(&json!("ann@x.org")),
            Some(&json!("ann@y.org"))
        ));
    }

    #[test]
    fn applying_fields_to_a_virtuous_contact_keeps_everything_else() {
        // Goal: a PUT body built from the current contact changes only the fields set.
        let set: Fields = [
            ("first_name".to_string(), json!("Anne")),
            ("email".to_string(), json!("anne@x.org")),
            ("subscribed".to_string(), json!(false)),
        ]
        .into_iter()
        .collect();
        let body = apply_to_virtuous(&contact(), &set, "Steward");
        let fields = from_virtuous(&body);
        assert_eq!(fields["first_name"], json!("Anne"));
        assert_eq!(fields["last_name"], json!("Lee"));
        assert_eq!(fields["email"], json!("anne@x.org"));
        assert_eq!(fields["subscribed"], json!(false));
        assert_eq!(fields["tags"], json!(["a", "b"]));
        assert_eq!(body["referenceSource"], json!("Steward"));
        assert_eq!(
            body["contactIndividuals"][0]["contactMethods"][0]["value"],
            json!("555")
        );
        let empty = apply_to_virtuous(&json!({"id": 1}), &set, "Steward");
        assert_eq!(from_virtuous(&empty)["email"], json!("anne@x.org"));
    }
}
