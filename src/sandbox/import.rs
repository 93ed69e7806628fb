//! The import step: pending transactions become contacts and gifts. Contacts are matched
//! by id, then references, then email, then first + last name + postal code; a share waits in
//! review; gifts dedup on transactionSource + transactionId when the org says so.

use serde_json::{json, Map, Value};

use super::faults::stable_draw;
use super::models::now_ms;
use super::models::{
    field, gift_date_formatted, gift_date_json, parse_gift_date, text_field, utc_date, value_text,
    Amount,
};
use super::org::{Org, OrgState, Pending, PendingKind, Registry};
use super::records::{
    contact_emails, contact_full, contact_names, contact_postal, contact_references,
    custom_fields_object, gift_webhook, normalize_postal, Record,
};
use super::validate::GIFT_TYPES;
use super::webhooks::{Event, EventKind};
use super::OrgSpec;

/// One run's numbers (the body of `POST /_sandbox/orgs/{id}/process`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub(crate) struct ImportReport {
    pub(crate) imported: u64,
    pub(crate) in_review: u64,
    pub(crate) rejected_duplicate: u64,
    pub(crate) rejected: u64,
}

/// Which pending transactions a run takes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Selection {
    /// Everything pending (manual `process`, immediate mode).
    All,
    /// Those received at or before this millisecond (delayed mode).
    ReceivedBy(u64),
}

/// Runs an import over `selection` and hands the resulting webhooks to the dispatcher.
pub(crate) fn import_and_notify(
    org: &Org,
    registry: &Registry,
    selection: Selection,
) -> ImportReport {
    let now = now_ms();
    let (report, jobs) = {
        let mut state = org.lock();
        let (report, events) = run_import(&org.spec, &mut state, selection, now);
        (report, org.webhook_jobs(&mut state, events))
    };
    registry.send_webhooks(jobs);
    report
}

/// Imports what waits in review and hands the webhooks to the dispatcher.
pub(crate) fn approve_and_notify(org: &Org, registry: &Registry) -> ImportReport {
    let now = now_ms();
    let (report, jobs) = {
        let mut state = org.lock();
        let (report, events) = approve_review(&org.spec, &mut state, now);
        (report, org.webhook_jobs(&mut state, events))
    };
    registry.send_webhooks(jobs);
    report
}

/// Runs the import step over pending transactions.
pub(crate) fn run_import(
    spec: &OrgSpec,
    state: &mut OrgState,
    selection: Selection,
    now_ms: u64,
) -> (ImportReport, Vec<Event>) {
    let mut report = ImportReport::default();
    let mut events = Vec::new();
    while let Some(front) = state.pending.front() {
        if let Selection::ReceivedBy(limit_ms) = selection {
            if front.received_ms > limit_ms {
                break;
            }
        }
        let Some(item) = state.pending.pop_front() else {
            break;
        };
        let goes_to_review = spec.review_share > 0.0
            && stable_draw(spec.seed, "review", item.sequence) < spec.review_share;
        if goes_to_review {
            state.review.push(item);
            report.in_review += 1;
            continue;
        }
        import_one(spec, state, &item, now_ms, &mut report, &mut events);
    }
    (report, events)
}

/// Imports everything waiting in review (staff approved it).
pub(crate) fn approve_review(
    spec: &OrgSpec,
    state: &mut OrgState,
    now_ms: u64,
) -> (ImportReport, Vec<Event>) {
    let mut report = ImportReport::default();
    let mut events = Vec::new();
    for item in std::mem::take(&mut state.review) {
        import_one(spec, state, &item, now_ms, &mut report, &mut events);
    }
    (report, events)
}

fn import_one(
    spec: &OrgSpec,
    state: &mut OrgState,
    item: &Pending,
    now_ms: u64,
    report: &mut ImportReport,
    events: &mut Vec<Event>,
) {
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&item.body) else {
        report.rejected += 1;
        state.stats.rejected += 1;
        return;
    };
    let outcome = match item.kind {
        PendingKind::Gift => import_gift(spec, state, &body, now_ms, events),
        PendingKind::Contact => {
            let input = ContactInput::from_contact_transaction(&body);
            upsert_contact(state, &input, now_ms, events);
            Outcome::Imported
        }
        PendingKind::Reversal => import_reversal(spec, state, &body, now_ms, events),
    };
    match outcome {
        Outcome::Imported => {
            report.imported += 1;
            state.stats.imported += 1;
        }
        Outcome::Duplicate => {
            report.rejected_duplicate += 1;
            state.stats.rejected_duplicate += 1;
        }
        Outcome::Rejected => {
            report.rejected += 1;
            state.stats.rejected += 1;
        }
    }
}

enum Outcome {
    Imported,
    Duplicate,
    Rejected,
}

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
    fn from_gift_contact(contact: &Map<String, Value>, transaction_source: &str) -> Self {
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
    let contacts = &state.contacts.records;
    if let Some(id) = input.id.filter(|id| contacts.contains_key(id)) {
        return Some(id);
    }
    if let Some(reference) = &input.reference {
        let found = contacts
            .values()
            .find(|contact| contact_references(contact).contains(reference));
        if let Some(contact) = found {
            return Some(contact.id);
        }
    }
    if let Some(email) = &input.email {
        let email = email.to_ascii_lowercase();
        if let Some(contact) = contacts
            .values()
            .find(|contact| contact_emails(contact).contains(&email))
        {
            return Some(contact.id);
        }
    }
    if let (Some(first), Some(last), Some(postal)) = (
        &input.first_name,
        &input.last_name,
        input
            .address
            .as_ref()
            .and_then(|a| a.get("postal"))
            .and_then(value_text),
    ) {
        let name = (first.to_ascii_lowercase(), last.to_ascii_lowercase());
        let postal = normalize_postal(&postal);
        if let Some(contact) = contacts.values().find(|contact| {
            contact_postal(contact).as_deref() == Some(postal.as_str())
                && contact_names(contact).contains(&name)
        }) {
            return Some(contact.id);
        }
    }
    None
}

fn contact_method(kind: &str, value: &str) -> Value {
    json!({"type": kind, "value": value, "isOptedIn": false, "isPrimary": true})
}

/// Matches or creates the contact, records the change and returns the contact id.
fn upsert_contact(
    state: &mut OrgState,
    input: &ContactInput,
    now_ms: u64,
    events: &mut Vec<Event>,
) -> u64 {
    match match_contact(state, input) {
        Some(id) => {
            let changed = state
                .contacts
                .records
                .get_mut(&id)
                .map(|contact| enrich_contact(contact, input, now_ms))
                .unwrap_or(false);
            if changed {
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
            events.push(Event {
                kind: EventKind::ContactCreate,
                model: contact_full(&contact),
            });
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
    let custom_fields = super::records::custom_fields_array(input.custom_fields.as_ref());
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
        contact.touch(now_ms);
    }
    changed
}

/// The project a designation names (by id if known, else by code, created on first use).
fn designation_project(
    state: &mut OrgState,
    designation: &Map<String, Value>,
    now_ms: u64,
) -> Value {
    let by_id = text_field(designation, "id")
        .and_then(|id| id.parse::<u64>().ok())
        .and_then(|id| state.projects.records.get(&id));
    let code = text_field(designation, "code");
    let by_code = || {
        let code = code.as_deref()?;
        state
            .projects
            .records
            .values()
            .find(|project| project.text("projectCode").as_deref() == Some(code))
    };
    let found = by_id.or_else(by_code).map(|project| project.id);
    let project_id = match (found, &code) {
        (Some(id), _) => Some(id),
        (None, Some(code)) => {
            let id = state.projects.next_id();
            let name = text_field(designation, "name").unwrap_or_else(|| code.clone());
            let doc = json!({"projectCode": code, "name": name, "isActive": true});
            if let Value::Object(doc) = doc {
                state.projects.insert(Record::new(id, now_ms, doc));
            }
            Some(id)
        }
        (None, None) => None,
    };
    let project = project_id.and_then(|id| state.projects.records.get(&id));
    let amount = text_field(designation, "amountDesignated")
        .and_then(|text| Amount::parse(&text))
        .map(Amount::to_json)
        .unwrap_or(Value::Null);
    json!({"projectId": project_id, "projectCode": project.and_then(|p| p.text("projectCode")),
        "projectName": project.and_then(|p| p.text("name")), "amountDesignated": amount})
}

fn import_gift(
    spec: &OrgSpec,
    state: &mut OrgState,
    body: &Map<String, Value>,
    now_ms: u64,
    events: &mut Vec<Event>,
) -> Outcome {
    let (Some(source), Some(transaction_id)) = (
        text_field(body, "transactionSource"),
        text_field(body, "transactionId"),
    ) else {
        return Outcome::Rejected;
    };
    if spec.dedup_transactions && state.gifts.exists(&source, &transaction_id) {
        return Outcome::Duplicate;
    }
    let Some(amount) = text_field(body, "amount").and_then(|text| Amount::parse(&text)) else {
        return Outcome::Rejected;
    };
    let Some(gift_date) = text_field(body, "giftDate").and_then(|text| parse_gift_date(&text))
    else {
        return Outcome::Rejected;
    };
    let gift_type = text_field(body, "giftType").and_then(|text| {
        GIFT_TYPES
            .iter()
            .find(|known| known.eq_ignore_ascii_case(&text))
            .map(|known| (*known).to_owned())
    });
    let contact_input = match field(body, "contact") {
        Some(Value::Object(contact)) => ContactInput::from_gift_contact(contact, &source),
        _ => return Outcome::Rejected,
    };
    let contact_id = upsert_contact(state, &contact_input, now_ms, events);
    let contact_name = state
        .contacts
        .records
        .get(&contact_id)
        .and_then(|contact| contact.text("name"));
    let designations: Vec<Value> = match field(body, "designations") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_object)
            .map(|designation| designation_project(state, designation, now_ms))
            .collect(),
        _ => Vec::new(),
    };
    let copy = |name: &str| field(body, name).cloned().unwrap_or(Value::Null);
    let doc = json!({
        "transactionSource": source, "transactionId": transaction_id, "contactId": contact_id,
        "contactName": contact_name, "giftType": gift_type, "giftDate": gift_date_json(gift_date),
        "giftDateFormatted": gift_date_formatted(gift_date), "amount": amount.to_json(),
        "currencyCode": text_field(body, "currencyCode").unwrap_or_else(|| "USD".into()),
        "exchangeRate": copy("exchangeRate"), "batch": copy("batch"), "notes": copy("notes"),
        "segmentCode": copy("segment"), "mediaOutletCode": copy("mediaOutlet"),
        "frequency": copy("frequency"),
        "recurringGiftTransactionId": copy("recurringGiftTransactionId"),
        "pledgeTransactionId": copy("pledgeTransactionId"),
        "isPrivate": field(body, "isPrivate").cloned().unwrap_or(json!(false)),
        "isTaxDeductible": field(body, "isTaxDeductible").cloned().unwrap_or(json!(true)),
        "checkNumber": copy("checkNumber"), "creditCardType": copy("creditCardType"),
        "giftDesignations": designations,
        "customFields": custom_fields_object(field(body, "customFields")),
    });
    let Value::Object(doc) = doc else {
        unreachable!("json! of an object literal is an object")
    };
    let id = state.gifts.next_id();
    let gift = Record::new(id, now_ms, doc);
    events.push(Event {
        kind: EventKind::GiftCreate,
        model: gift_webhook(&gift, spec.webhook_includes_transaction_ids),
    });
    state.gifts.insert(gift);
    Outcome::Imported
}

/// A reversing transaction becomes a negative `ReversingTransaction` gift for the same
/// contact, with `transactionId` = the reversed gift's + `-reversal`.
fn import_reversal(
    spec: &OrgSpec,
    state: &mut OrgState,
    body: &Map<String, Value>,
    now_ms: u64,
    events: &mut Vec<Event>,
) -> Outcome {
    let Some(reversed_id) =
        text_field(body, "reversedGiftId").and_then(|id| id.parse::<u64>().ok())
    else {
        return Outcome::Rejected;
    };
    let Some(original) = state.gifts.records.get(&reversed_id).cloned() else {
        return Outcome::Rejected;
    };
    let already_reversed = state
        .gifts
        .records
        .values()
        .any(|gift| gift.doc.get("reversedGiftId") == Some(&json!(reversed_id)));
    if spec.dedup_transactions && already_reversed {
        return Outcome::Duplicate;
    }
    let gift_date = text_field(body, "giftDate")
        .and_then(|text| parse_gift_date(&text))
        .unwrap_or_else(|| utc_date(now_ms));
    let mut doc = original.doc.clone();
    for key in ["id", "createDateTimeUtc", "modifiedDateTimeUtc"] {
        doc.remove(key);
    }
    let negative = original
        .doc
        .get("amount")
        .and_then(Value::as_f64)
        .map(|amount| json!(-amount))
        .unwrap_or(Value::Null);
    let transaction_id = original.text("transactionId").unwrap_or_default() + "-reversal";
    doc.insert("transactionId".into(), json!(transaction_id));
    doc.insert("giftType".into(), json!("ReversingTransaction"));
    doc.insert("amount".into(), negative);
    doc.insert("reversedGiftId".into(), json!(reversed_id));
    doc.insert("giftDate".into(), json!(gift_date_json(gift_date)));
    doc.insert(
        "giftDateFormatted".into(),
        json!(gift_date_formatted(gift_date)),
    );
    doc.insert(
        "notes".into(),
        field(body, "notes").cloned().unwrap_or(Value::Null),
    );
    doc.insert("giftDesignations".into(), json!([]));
    let id = state.gifts.next_id();
    let gift = Record::new(id, now_ms, doc);
    events.push(Event {
        kind: EventKind::GiftCreate,
        model: gift_webhook(&gift, spec.webhook_includes_transaction_ids),
    });
    state.gifts.insert(gift);
    Outcome::Imported
}

#[cfg(test)]
#[path = "import_tests.rs"]
mod tests;
