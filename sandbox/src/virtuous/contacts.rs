//! Contact matching at import: by known id, then references, then email, then first + last
//! name + postal code; a matched contact learns what it lacked (ContactUpdate), an unmatched
//! one is created (ContactCreate).

use serde_json::{json, Map, Value};

use super::contact_store::MatchKey;
use super::models::{field, text_field, value_text};
use super::org::OrgState;
use super::records::{
    contact_emails, contact_full, contact_references, custom_fields_array, normalize_postal, Record,
};
use super::webhooks::{Event, EventKind};

/// The contact part of a transaction, normalised for matching.
#[derive(Debug, Default, Clone)]
pub(crate) struct ContactInput {
    id: Option<u64>,
    reference: Option<(String, String)>,
    contact_type: Option<String>,
    name: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    email: Option<String>,
    email_type: Option<String>,
    phone: Option<String>,
    phone_type: Option<String>,
    address: Option<Map<String, Value>>,
    tags: Vec<String>,
    custom_fields: Option<Value>,
}

const ADDRESS_FIELDS: [&str; 6] = ["address1", "address2", "city", "state", "postal", "country"];

fn address_from(object: &Map<String, Value>) -> Option<Map<String, Value>> {
    let mut address = Map::new();
    for name in ADDRESS_FIELDS {
        if let Some(text) = text_field(object, name) {
            address.insert(name.into(), json!(text));
        }
    }
    (!address.is_empty()).then_some(address)
}

fn tags_from(object: &Map<String, Value>) -> Vec<String> {
    match field(object, "tags") {
        Some(Value::String(text)) => text
            .split(';')
            .map(str::trim)
            .filter(|tag| !tag.is_empty())
            .map(str::to_owned)
            .collect(),
        Some(Value::Array(items)) => items.iter().filter_map(value_text).collect(),
        _ => Vec::new(),
    }
}

impl ContactInput {
    /// From a gift transaction's `contact` (its reference source is the transaction source).
    pub(crate) fn from_gift_contact(
        contact: &Map<String, Value>,
        transaction_source: &str,
    ) -> Self {
        ContactInput {
            id: text_field(contact, "id").and_then(|id| id.parse().ok()),
            reference: text_field(contact, "referenceId")
                .map(|id| (transaction_source.to_owned(), id)),
            contact_type: text_field(contact, "type")
                .or_else(|| text_field(contact, "contactType")),
            name: text_field(contact, "name"),
            first_name: text_field(contact, "firstName"),
            last_name: text_field(contact, "lastName"),
            email: text_field(contact, "email"),
            email_type: text_field(contact, "emailType"),
            phone: text_field(contact, "phone"),
            phone_type: text_field(contact, "phoneType"),
            address: match field(contact, "address") {
                Some(Value::Object(address)) => address_from(address),
                _ => None,
            },
            tags: tags_from(contact),
            custom_fields: None,
        }
    }

    /// From a flat Contact Transaction body.
    pub(crate) fn from_contact_transaction(body: &Map<String, Value>) -> Self {
        let reference = match (
            text_field(body, "referenceSource"),
            text_field(body, "referenceId"),
        ) {
            (Some(source), Some(id)) => Some((source, id)),
            _ => None,
        };
        ContactInput {
            id: None,
            reference,
            contact_type: text_field(body, "contactType"),
            name: text_field(body, "name"),
            first_name: text_field(body, "firstName"),
            last_name: text_field(body, "lastName"),
            email: text_field(body, "email"),
            email_type: text_field(body, "emailType"),
            phone: text_field(body, "phone"),
            phone_type: text_field(body, "phoneType"),
            address: address_from(body),
            tags: tags_from(body),
            custom_fields: field(body, "customFields").cloned(),
        }
    }
}

/// Matching order: known id → reference → email → first + last name + postal code.
pub(crate) fn match_contact(state: &OrgState, input: &ContactInput) -> Option<u64> {
    let contacts = &state.contacts;
    if let Some(id) = input.id.filter(|id| contacts.records.contains_key(id)) {
        return Some(id);
    }
    if let Some((source, id)) = &input.reference {
        if let Some(contact) = contacts.by_reference(source, id) {
            return Some(contact.id);
        }
    }
    if let Some(contact) = input
        .email
        .as_deref()
        .and_then(|email| contacts.by_email(email))
    {
        return Some(contact.id);
    }
    let postal = input
        .address
        .as_ref()
        .and_then(|address| address.get("postal"))
        .and_then(value_text);
    if let (Some(first), Some(last), Some(postal)) = (&input.first_name, &input.last_name, postal) {
        return contacts.find(&MatchKey::NamePostal {
            first: first.to_ascii_lowercase(),
            last: last.to_ascii_lowercase(),
            postal: normalize_postal(&postal),
        });
    }
    None
}

fn contact_method(kind: &str, value: &str) -> Value {
    json!({"type": kind, "value": value, "isOptedIn": false, "isPrimary": true})
}

/// Matches or creates the contact, records the change and returns the contact id.
pub(crate) fn upsert_contact(
    state: &mut OrgState,
    input: &ContactInput,
    now_ms: u64,
    events: &mut Vec<Event>,
) -> u64 {
    match match_contact(state, input) {
        Some(id) => {
            let changed = state
                .contacts
                .enrich(id, |contact| enrich_contact(contact, input, now_ms));
            if changed && state.is_subscribed(EventKind::ContactUpdate) {
                if let Some(contact) = state.contacts.records.get(&id) {
                    events.push(Event {
                        kind: EventKind::ContactUpdate,
                        model: contact_full(contact),
                    });
                }
            }
            id
        }
        None => {
            let id = state.contacts.next_id();
            let individual_id = state.next_individual_id();
            let contact = new_contact(id, individual_id, input, now_ms);
            if state.is_subscribed(EventKind::ContactCreate) {
                events.push(Event {
                    kind: EventKind::ContactCreate,
                    model: contact_full(&contact),
                });
            }
            state.contacts.insert(contact);
            id
        }
    }
}

fn new_contact(id: u64, individual_id: u64, input: &ContactInput, now_ms: u64) -> Record {
    let contact_type = input
        .contact_type
        .clone()
        .unwrap_or_else(|| "Household".into());
    let person_name = match (&input.first_name, &input.last_name) {
        (Some(first), Some(last)) => Some(format!("{first} {last}")),
        (None, Some(last)) => Some(last.clone()),
        (Some(first), None) => Some(first.clone()),
        (None, None) => None,
    };
    let name = input
        .name
        .clone()
        .or(person_name)
        .or_else(|| input.email.clone())
        .unwrap_or_else(|| "Unknown".into());
    let mut methods = Vec::new();
    if let Some(email) = &input.email {
        let kind = input.email_type.as_deref().unwrap_or("Home Email");
        methods.push(contact_method(kind, email));
    }
    if let Some(phone) = &input.phone {
        let kind = input.phone_type.as_deref().unwrap_or("Mobile Phone");
        methods.push(contact_method(kind, phone));
    }
    let individuals = if input.first_name.is_some()
        || input.last_name.is_some()
        || !methods.is_empty()
    {
        vec![
            json!({"id": individual_id, "firstName": input.first_name, "lastName": input.last_name,
            "isPrimary": true, "contactMethods": methods}),
        ]
    } else {
        Vec::new()
    };
    let references: Vec<Value> = input
        .reference
        .iter()
        .map(|(source, id)| json!({"source": source, "id": id}))
        .collect();
    let custom_fields = custom_fields_array(input.custom_fields.as_ref());
    let doc = json!({
        "contactType": contact_type, "name": name, "isPrivate": false,
        "mergedIntoContactId": null, "address": input.address, "contactIndividuals": individuals,
        "contactReferences": references, "tags": input.tags, "customFields": custom_fields,
    });
    let Value::Object(doc) = doc else {
        unreachable!("json! of an object literal is an object")
    };
    Record::new(id, now_ms, doc)
}

/// Adds what the transaction knows and the contact lacks: a new reference, a new email,
/// an address, tags. Returns whether anything changed (ContactUpdate fires only then).
fn enrich_contact(contact: &mut Record, input: &ContactInput, now_ms: u64) -> bool {
    let mut changed = false;
    if let Some((source, id)) = &input.reference {
        if !contact_references(contact).contains(&(source.clone(), id.clone())) {
            let references = contact.doc.entry("contactReferences").or_insert(json!([]));
            if let Some(list) = references.as_array_mut() {
                list.push(json!({"source": source, "id": id}));
                changed = true;
            }
        }
    }
    if let Some(email) = &input.email {
        if !contact_emails(contact).contains(&email.to_ascii_lowercase()) {
            let individuals = contact.doc.entry("contactIndividuals").or_insert(json!([]));
            if let Some(list) = individuals.as_array_mut() {
                if let Some(Value::Array(methods)) = list
                    .first_mut()
                    .and_then(|first| first.get_mut("contactMethods"))
                {
                    let kind = input.email_type.as_deref().unwrap_or("Home Email");
                    let mut method = contact_method(kind, email);
                    method["isPrimary"] = json!(false);
                    methods.push(method);
                    changed = true;
                }
            }
        }
    }
    if let Some(address) = &input.address {
        if contact.doc.get("address").map_or(true, Value::is_null) {
            contact
                .doc
                .insert("address".into(), Value::Object(address.clone()));
            changed = true;
        }
    }
    for tag in &input.tags {
        let tags = contact.doc.entry("tags").or_insert(json!([]));
        if let Some(list) = tags.as_array_mut() {
            if !list.iter().any(|known| known.as_str() == Some(tag)) {
                list.push(json!(tag));
                changed = true;
            }
        }
    }
    if changed {
        // The import wrote last: an API client's latest-writer mark no longer holds.
        contact.doc.remove("referenceSource");
        contact.touch(now_ms);
    }
    changed
}
