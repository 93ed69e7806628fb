//! The import step: pending transactions become contacts and gifts. Contacts are matched
//! by id, then references, then email, then first + last name + postal code; a share waits in
//! review; gifts dedup on transactionSource + transactionId when the org says so.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::contacts::{upsert_contact, ContactInput};
use super::models::{
    field, gift_date_formatted, gift_date_json, parse_gift_date, text_field, utc_date, Amount,
};
use super::org::{Org, OrgState, Pending, PendingKind, Registry};
use super::records::{custom_fields_object, gift_webhook, Record};
use super::validate::GIFT_TYPES;
use super::webhooks::{Event, EventKind};
use super::{OrgSpec, Processing};
use crate::clock::now_ms;
use crate::faults::stable_draw;

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
    registry.note_change(org);
    registry.send_webhooks(jobs);
    report
}

/// What the org's processing mode does once transactions were accepted (or, after a
/// restart, found pending): nothing (manual), an import now (immediate), or one
/// `delay_ms` from now of what had arrived `delay_ms` before it (delayed).
pub(crate) fn follow_processing_mode(org: &Arc<Org>, registry: &Arc<Registry>) {
    match org.processing() {
        Processing::Manual => {}
        Processing::Immediate => {
            import_and_notify(org, registry, Selection::All);
        }
        Processing::Delayed { delay_ms } => {
            let org = Arc::clone(org);
            let registry = Arc::clone(registry);
            actix_web::rt::spawn(async move {
                actix_web::rt::time::sleep(Duration::from_millis(delay_ms)).await;
                let due_by = now_ms().saturating_sub(delay_ms);
                import_and_notify(&org, &registry, Selection::ReceivedBy(due_by));
            });
        }
    }
}

/// Imports what waits in review and hands the webhooks to the dispatcher.
pub(crate) fn approve_and_notify(org: &Org, registry: &Registry) -> ImportReport {
    let now = now_ms();
    let (report, jobs) = {
        let mut state = org.lock();
        let (report, events) = approve_review(&org.spec, &mut state, now);
        (report, org.webhook_jobs(&mut state, events))
    };
    registry.note_change(org);
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
    if state.is_subscribed(EventKind::GiftCreate) {
        events.push(Event {
            kind: EventKind::GiftCreate,
            model: gift_webhook(&gift, spec.webhook_includes_transaction_ids),
        });
    }
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
    if state.is_subscribed(EventKind::GiftCreate) {
        events.push(Event {
            kind: EventKind::GiftCreate,
            model: gift_webhook(&gift, spec.webhook_includes_transaction_ids),
        });
    }
    state.gifts.insert(gift);
    Outcome::Imported
}

#[cfg(test)]
#[path = "import_tests.rs"]
mod tests;
