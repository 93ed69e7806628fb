//! The one parser of Virtuous webhook bodies (docs/ingress.md "Virtuous webhooks"; the sandbox's
//! sender, `sandbox/src/virtuous/webhooks.rs`, sends the documented forms).
//!
//! Virtuous does not publish the payload schemas and does not retry a `2xx`, so the parser is
//! lenient and never drops an event silently:
//! - key names in any letter case (`event`/`Event`, `gift`/`Gift`, `models`/`Models`,
//!   `transactionId`/`TransactionId`…), and `eventType` as another name of `event`;
//! - the event name in any case (`GiftCreate`, `giftCreate`);
//! - single `{"event", "gift"|"contact"}` and bulk `{"event", "models": [{"gift"}…]}` forms,
//!   with the event name at the top or on each model of a bulk;
//! - ids as numbers or strings; `0` as well as `null` for "no reversed gift";
//! - `customFields` as an object (webhooks) or an array (FullGift): not read, so both pass.
//!
//! It yields typed events ([`steward_actors::virtuous_event`], no JSON inside). A model it
//! cannot understand becomes [`VirtuousEvent::Unparsed`] with its raw JSON and the reason;
//! the Inbound actor keeps those for the operator.
//!
//! Beside the events it yields the record changes pull needs ([`VirtuousChange`]): every
//! `{Gift|Contact|Project|Event|ContactNote}{Create|Update|Delete}` model (keys `gift`,
//! `contact`, `project`, `event`, `contactNote`) with an `id` — one change per model that is
//! not [`VirtuousEvent::Unparsed`], so nothing is counted twice. Deletes and the kinds
//! confirmation does not act on are [`VirtuousEvent::Other`] in `events`. [`change_of`]
//! builds a change from any record object (webhook model or query row). Only a body that is not JSON at all is
//! refused ([`NotJson`], HTTP 400): Virtuous sends JSON, so that is not a Virtuous event.

use serde_json::{Map, Value};
use steward_actors::money::canonical_day;
use steward_actors::ports::CrmGift;
use steward_actors::pull::{ChangeKind, ChangeOp};
use steward_actors::virtuous_event::{
    ContactReference, VirtuousChange, VirtuousDelivery, VirtuousEvent, VirtuousEventKind,
};

/// The body is not JSON.
#[derive(Debug, thiserror::Error)]
#[error("the body is not valid JSON: {0}")]
pub struct NotJson(String);

/// Parses one delivery body.
pub fn parse_delivery(body: &[u8]) -> Result<VirtuousDelivery, NotJson> {
    let payload: Value = serde_json::from_slice(body).map_err(|err| NotJson(err.to_string()))?;
    let raw_body = || String::from_utf8_lossy(body).into_owned();
    let Value::Object(top) = &payload else {
        return Ok(unparsed_delivery(
            raw_body(),
            "the body is not a JSON object",
        ));
    };
    let top_event = event_name(top);
    let event = top_event.clone().unwrap_or_default();
    let models: Vec<&Value> = match field(top, "models") {
        Some(Value::Array(models)) => models.iter().collect(),
        Some(_) => {
            return Ok(VirtuousDelivery {
                event,
                events: vec![unparsed(raw_body(), "`models` is not an array")],
                changes: Vec::new(),
            })
        }
        None => {
            let (event, change) = parse_model(top, top_event.as_deref(), raw_body);
            return Ok(VirtuousDelivery {
                event: top_event.unwrap_or_default(),
                events: vec![event],
                changes: change.into_iter().collect(),
            });
        }
    };
    let mut delivery = VirtuousDelivery {
        event,
        events: Vec::with_capacity(models.len()),
        changes: Vec::new(),
    };
    for model in models {
        let (event, change) = match model {
            Value::Object(fields) => {
                parse_model(fields, top_event.as_deref(), || model.to_string())
            }
            other => (
                unparsed(other.to_string(), "a model of `models` is not an object"),
                None,
            ),
        };
        delivery.events.push(event);
        delivery.changes.extend(change);
    }
    Ok(delivery)
}

fn unparsed(raw_json: String, reason: &str) -> VirtuousEvent {
    VirtuousEvent::Unparsed {
        raw_json,
        reason: reason.to_string(),
    }
}

fn unparsed_delivery(raw_json: String, reason: &str) -> VirtuousDelivery {
    VirtuousDelivery {
        event: String::new(),
        events: vec![unparsed(raw_json, reason)],
        changes: Vec::new(),
    }
}

/// One model (the whole body in the single form): its event, and the record change it
/// reports (none when the event is unparsed or not a record change). Its own event name
/// wins over the delivery's.
fn parse_model(
    model: &Map<String, Value>,
    delivery_event: Option<&str>,
    raw_json: impl Fn() -> String,
) -> (VirtuousEvent, Option<VirtuousChange>) {
    let Some(name) = event_name(model).or_else(|| delivery_event.map(str::to_string)) else {
        return (
            unparsed(raw_json(), "no event name (`event` or `eventType`)"),
            None,
        );
    };
    let change = change_name(&name).map(|(kind, op)| change_of_model(model, kind, op));
    let event = match (VirtuousEventKind::parse(&name), &change) {
        (Some(kind), _) => confirmation_event(model, kind, &raw_json),
        // A record change confirmation does not act on (a delete, a project…): kept as
        // `Other` when it is understood, so only its change counts.
        (None, Some(Ok(_))) => VirtuousEvent::Other { event: name },
        (None, Some(Err(reason))) => unparsed(raw_json(), reason),
        // An event we do not act on (`FormSubmission`…) — unless it carries a gift or a
        // contact: then it is a name we did not recognise (`GiftCreated`, `gift_create`), and
        // the record it names must not be dropped unseen.
        (None, None) if field(model, "gift").is_some() || field(model, "contact").is_some() => {
            unparsed(raw_json(), "an unknown event name on a gift or contact")
        }
        (None, None) => VirtuousEvent::Other { event: name },
    };
    if matches!(event, VirtuousEvent::Unparsed { .. }) {
        return (event, None);
    }
    (event, change.and_then(Result::ok))
}

/// The event of a `GiftCreate|GiftUpdate|ContactCreate|ContactUpdate` model.
fn confirmation_event(
    model: &Map<String, Value>,
    kind: VirtuousEventKind,
    raw_json: &impl Fn() -> String,
) -> VirtuousEvent {
    match kind {
        VirtuousEventKind::GiftCreate | VirtuousEventKind::GiftUpdate => {
            match field(model, "gift")
                .and_then(Value::as_object)
                .map(parse_gift)
            {
                Some(Ok(gift)) => VirtuousEvent::Gift { kind, gift },
                Some(Err(reason)) => unparsed(raw_json(), reason),
                None => unparsed(raw_json(), "a gift event without a `gift` object"),
            }
        }
        VirtuousEventKind::ContactCreate | VirtuousEventKind::ContactUpdate => {
            let Some(contact) = field(model, "contact").and_then(Value::as_object) else {
                return unparsed(raw_json(), "a contact event without a `contact` object");
            };
            let Some(virtuous_id) = text(field(contact, "id")) else {
                return unparsed(raw_json(), "a contact without an `id`");
            };
            let references = match field(contact, "contactReferences") {
                Some(Value::Array(references)) => references
                    .iter()
                    .filter_map(Value::as_object)
                    .filter_map(|reference| {
                        Some(ContactReference {
                            source: text(field(reference, "source"))?,
                            id: text(field(reference, "id"))?,
                        })
                    })
                    .collect(),
                _ => Vec::new(),
            };
            VirtuousEvent::Contact {
                kind,
                virtuous_id,
                references,
            }
        }
    }
}

/// The record-change event names (compared in any letter case): kind and op.
const CHANGE_NAMES: [(&str, ChangeKind, ChangeOp); 15] = [
    ("GiftCreate", ChangeKind::Gift, ChangeOp::Upsert),
    ("GiftUpdate", ChangeKind::Gift, ChangeOp::Upsert),
    ("GiftDelete", ChangeKind::Gift, ChangeOp::Delete),
    ("ContactCreate", ChangeKind::Contact, ChangeOp::Upsert),
    ("ContactUpdate", ChangeKind::Contact, ChangeOp::Upsert),
    ("ContactDelete", ChangeKind::Contact, ChangeOp::Delete),
    ("ProjectCreate", ChangeKind::Project, ChangeOp::Upsert),
    ("ProjectUpdate", ChangeKind::Project, ChangeOp::Upsert),
    ("ProjectDelete", ChangeKind::Project, ChangeOp::Delete),
    ("EventCreate", ChangeKind::Event, ChangeOp::Upsert),
    ("EventUpdate", ChangeKind::Event, ChangeOp::Upsert),
    ("EventDelete", ChangeKind::Event, ChangeOp::Delete),
    (
        "ContactNoteCreate",
        ChangeKind::ContactNote,
        ChangeOp::Upsert,
    ),
    (
        "ContactNoteUpdate",
        ChangeKind::ContactNote,
        ChangeOp::Upsert,
    ),
    (
        "ContactNoteDelete",
        ChangeKind::ContactNote,
        ChangeOp::Delete,
    ),
];

fn change_name(name: &str) -> Option<(ChangeKind, ChangeOp)> {
    CHANGE_NAMES
        .iter()
        .find(|(known, _, _)| known.eq_ignore_ascii_case(name))
        .map(|&(_, kind, op)| (kind, op))
}

/// The keys a kind's record object may sit under in a model (any letter case). `event` is also the event name's key: the record is the one whose
/// value is an object; `eventRecord` is accepted in case Virtuous avoids the clash.
fn model_keys(kind: ChangeKind) -> &'static [&'static str] {
    match kind {
        ChangeKind::Gift => &["gift"],
        ChangeKind::Contact => &["contact"],
        ChangeKind::Project => &["project"],
        ChangeKind::Event => &["event", "eventRecord", "event_record"],
        ChangeKind::ContactNote => &["contactNote", "contact_note", "note"],
    }
}

fn change_of_model(
    model: &Map<String, Value>,
    kind: ChangeKind,
    op: ChangeOp,
) -> Result<VirtuousChange, &'static str> {
    let record = model_keys(kind)
        .iter()
        .find_map(|key| named(model, key, Value::is_object))
        .and_then(Value::as_object)
        .ok_or(match kind {
            ChangeKind::Gift => "a gift event without a `gift` object",
            ChangeKind::Contact => "a contact event without a `contact` object",
            ChangeKind::Project => "a project event without a `project` object",
            ChangeKind::Event => "an event event without an `event` object",
            ChangeKind::ContactNote => "a contact note event without a `contactNote` object",
        })?;
    change_of(kind, op, record)
}

/// The change a record object reports (a webhook model's record or a FullGift/FullContact
/// row): its `id` (number or text) is required; the rest is read leniently.
pub fn change_of(
    kind: ChangeKind,
    op: ChangeOp,
    record: &Map<String, Value>,
) -> Result<VirtuousChange, &'static str> {
    let id = text(field(record, "id")).ok_or(match kind {
        ChangeKind::Gift => "a gift without an `id`",
        ChangeKind::Contact => "a contact without an `id`",
        ChangeKind::Project => "a project without an `id`",
        ChangeKind::Event => "an event without an `id`",
        ChangeKind::ContactNote => "a contact note without an `id`",
    })?;
    let modified_at = text(field(record, "modifiedDateTimeUtc"));
    let origin_field = match kind {
        ChangeKind::Gift => Some("transactionSource"),
        ChangeKind::Contact => Some("referenceSource"),
        _ => None,
    };
    Ok(VirtuousChange {
        kind,
        op,
        id,
        modified_ms: modified_at.as_deref().and_then(parse_modified_ms),
        modified_at,
        record_json: serde_json::to_string(record).unwrap_or_default(),
        origin_sources: origin_field
            .and_then(|name| text(field(record, name)))
            .into_iter()
            .collect(),
        complete: record_is_complete(kind, op, record),
    })
}

/// Whether a record has every field destinations need (`VirtuousChange::complete`).
pub fn record_is_complete(kind: ChangeKind, op: ChangeOp, record: &Map<String, Value>) -> bool {
    let needed: &[&str] = match (op, kind) {
        (ChangeOp::Delete, _) => &["id"],
        (_, ChangeKind::Gift) => &[
            "id",
            "modifiedDateTimeUtc",
            "amount",
            "giftDate",
            "contactId",
        ],
        (_, ChangeKind::Contact) => &["id", "modifiedDateTimeUtc", "name"],
        _ => &["id"],
    };
    needed.iter().all(|name| match field(record, name) {
        None | Some(Value::Null) => false,
        Some(Value::String(text)) => !text.trim().is_empty(),
        Some(_) => true,
    })
}

/// `modifiedDateTimeUtc` in ms since the epoch: ISO 8601 with `Z` or an offset, or without
/// one (then UTC, as the field's name says), any fractional seconds (.NET sends seven
/// digits). `None` when unreadable or before 1970.
pub fn parse_modified_ms(text: &str) -> Option<u64> {
    let text = text.trim();
    let timestamp = text.parse::<jiff::Timestamp>().ok().or_else(|| {
        let civil = text.parse::<jiff::civil::DateTime>().ok()?;
        civil
            .to_zoned(jiff::tz::TimeZone::UTC)
            .ok()
            .map(|zoned| zoned.timestamp())
    })?;
    u64::try_from(timestamp.as_millisecond()).ok()
}

fn parse_gift(gift: &Map<String, Value>) -> Result<CrmGift, &'static str> {
    let virtuous_id = text(field(gift, "id")).ok_or("a gift without an `id`")?;
    Ok(CrmGift {
        virtuous_id,
        transaction_source: text(field(gift, "transactionSource")),
        transaction_id: text(field(gift, "transactionId")),
        gift_type: text(field(gift, "giftType")),
        reversed_gift_id: text(field(gift, "reversedGiftId")).filter(|id| id != "0"),
        create_date_time_utc: text(field(gift, "createDateTimeUtc")),
        amount: text(field(gift, "amount")),
        gift_date: text(field(gift, "giftDate")).and_then(|date| canonical_day(&date)),
        currency_code: text(field(gift, "currencyCode")),
        project_codes: match field(gift, "giftDesignations") {
            Some(Value::Array(designations)) => designations
                .iter()
                .filter_map(Value::as_object)
                .filter_map(|designation| text(field(designation, "projectCode")))
                .collect(),
            _ => Vec::new(),
        },
    })
}

/// The event name of an object: `event` or `eventType`, keys in any case (an `event` whose
/// value is an object is an event record, not the name).
fn event_name(object: &Map<String, Value>) -> Option<String> {
    let is_text = |value: &Value| value.is_string() || value.is_number();
    text(named(object, "event", is_text)).or_else(|| text(named(object, "eventType", is_text)))
}

/// A field by name in any letter case whose value passes `wanted` (an exact match first).
fn named<'a>(
    object: &'a Map<String, Value>,
    name: &str,
    wanted: impl Fn(&Value) -> bool,
) -> Option<&'a Value> {
    object.get(name).filter(|value| wanted(value)).or_else(|| {
        object
            .iter()
            .find(|(key, value)| key.eq_ignore_ascii_case(name) && wanted(value))
            .map(|(_, value)| value)
    })
}

/// A field by name in any letter case (an exact match first).
fn field<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    object.get(name).or_else(|| {
        object
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    })
}

/// Text of a field that may be a string or a number (empty and `null` are absent).
fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(text) if !text.is_empty() => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

#[cfg(test)]
#[path = "webhook_tests.rs"]
mod tests;
