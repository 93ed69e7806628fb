//! Staff edits in the Virtuous UI (`POST /_sandbox/orgs/{id}/staff-edit` and the bulk
//! `…/staff-edits`): updates and deletes of gifts and contacts, and creates, updates and
//! deletes of projects, events and contact notes, each firing its webhook and spending no
//! budget. A list of edits is checked whole first (shapes, and that every id exists at its
//! turn, creates and deletes earlier in the list included), then applied: a bad edit changes
//! nothing. A contact edit removes the contact's top-level `referenceSource`, the mark of an
//! API client that wrote last.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::models::iso_utc;
use super::org::{Org, OrgState};
use super::records::{contact_full, custom_fields_object, gift_full, gift_webhook, Record, Table};
use super::webhooks::{Event, EventKind, WebhookJob};

/// A contact's top-level key naming the API client that wrote it last (kept by `PUT
/// /api/Contact/{id}` as its body carries it).
const WRITER_MARK: &str = "referenceSource";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StaffEdit {
    kind: StaffEditKind,
    /// Absent: create a project, event or contact note.
    #[serde(default)]
    id: Option<u64>,
    #[serde(default)]
    changes: Map<String, Value>,
    /// Delete the record (gifts: GiftDelete; contacts: the ContactDelete extension).
    #[serde(default)]
    delete: bool,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
enum StaffEditKind {
    Contact,
    Gift,
    Project,
    Event,
    ContactNote,
}

impl StaffEditKind {
    fn name(self) -> &'static str {
        match self {
            StaffEditKind::Contact => "contact",
            StaffEditKind::Gift => "gift",
            StaffEditKind::Project => "project",
            StaffEditKind::Event => "event",
            StaffEditKind::ContactNote => "contact_note",
        }
    }

    /// The (create, update, delete) webhooks of this kind.
    fn events(self) -> (EventKind, EventKind, EventKind) {
        match self {
            StaffEditKind::Contact => (
                EventKind::ContactCreate,
                EventKind::ContactUpdate,
                EventKind::ContactDelete,
            ),
            StaffEditKind::Gift => (
                EventKind::GiftCreate,
                EventKind::GiftUpdate,
                EventKind::GiftDelete,
            ),
            StaffEditKind::Project => (
                EventKind::ProjectCreate,
                EventKind::ProjectUpdate,
                EventKind::ProjectDelete,
            ),
            StaffEditKind::Event => (
                EventKind::EventCreate,
                EventKind::EventUpdate,
                EventKind::EventDelete,
            ),
            StaffEditKind::ContactNote => (
                EventKind::ContactNoteCreate,
                EventKind::ContactNoteUpdate,
                EventKind::ContactNoteDelete,
            ),
        }
    }

    /// Gifts and contacts come from imports; staff edits create only the other kinds.
    fn creatable(self) -> bool {
        !matches!(self, StaffEditKind::Contact | StaffEditKind::Gift)
    }
}

/// Why a list of edits was refused (nothing applied): the status and the message.
#[derive(Debug)]
pub(crate) struct EditError {
    pub(crate) index: usize,
    pub(crate) status: u16,
    pub(crate) message: String,
}

fn table(state: &mut OrgState, kind: StaffEditKind) -> &mut Table {
    match kind {
        StaffEditKind::Event => &mut state.events,
        StaffEditKind::ContactNote => &mut state.contact_notes,
        // Gifts and contacts have their own stores; projects are the rest.
        _ => &mut state.projects,
    }
}

fn exists(state: &OrgState, kind: StaffEditKind, id: u64) -> bool {
    match kind {
        StaffEditKind::Contact => state.contacts.records.contains_key(&id),
        StaffEditKind::Gift => state.gifts.records.contains_key(&id),
        StaffEditKind::Project => state.projects.records.contains_key(&id),
        StaffEditKind::Event => state.events.records.contains_key(&id),
        StaffEditKind::ContactNote => state.contact_notes.records.contains_key(&id),
    }
}

fn shape_error(edit: &StaffEdit) -> Option<String> {
    let kind = edit.kind.name();
    if edit.id.is_none() && !edit.kind.creatable() {
        return Some(format!(
            "a {kind} edit needs an id (staff edits do not create {kind}s)"
        ));
    }
    if edit.id.is_none() && edit.delete {
        return Some(format!("a {kind} delete needs an id"));
    }
    if edit.kind == StaffEditKind::ContactNote {
        let contact_id = edit.changes.get("contactId");
        if contact_id.is_some_and(|id| !id.is_null() && id.as_u64().is_none()) {
            return Some("contactId must be a non-negative integer".into());
        }
    }
    None
}

/// Checks the edits in order as if applied: every id must exist at its turn.
fn check(state: &mut OrgState, edits: &[StaffEdit]) -> Result<(), EditError> {
    let mut overlay: HashMap<(StaffEditKind, u64), bool> = HashMap::new();
    let mut next_ids: HashMap<StaffEditKind, u64> = HashMap::new();
    for (index, edit) in edits.iter().enumerate() {
        if let Some(message) = shape_error(edit) {
            return Err(EditError {
                index,
                status: 400,
                message,
            });
        }
        match edit.id {
            None => {
                let next = next_ids
                    .entry(edit.kind)
                    .or_insert_with(|| table(state, edit.kind).peek_next_id());
                overlay.insert((edit.kind, *next), true);
                *next += 1;
            }
            Some(id) => {
                let present = overlay
                    .get(&(edit.kind, id))
                    .copied()
                    .unwrap_or_else(|| exists(state, edit.kind, id));
                if !present {
                    return Err(EditError {
                        index,
                        status: 404,
                        message: format!("no {} with id {id}", edit.kind.name()),
                    });
                }
                if edit.delete {
                    overlay.insert((edit.kind, id), false);
                }
            }
        }
    }
    Ok(())
}

/// Applies the edits in order (all or nothing): the records as they are after each edit
/// (a deleted one as it was) and the webhook jobs to send once the lock is released.
pub(crate) fn apply_edits(
    org: &Org,
    state: &mut OrgState,
    edits: &[StaffEdit],
    now_ms: u64,
) -> Result<(Vec<Value>, Vec<WebhookJob>), EditError> {
    check(state, edits)?;
    let mut records = Vec::with_capacity(edits.len());
    let mut jobs = Vec::new();
    for edit in edits {
        let (record, event) =
            apply(org, state, edit, now_ms).expect("check() guarantees every edited record exists");
        records.push(record);
        jobs.extend(org.webhook_jobs(state, vec![event]));
    }
    Ok((records, jobs))
}

/// One checked edit: the answered record and its event (`None` only if the record vanished).
fn apply(org: &Org, state: &mut OrgState, edit: &StaffEdit, now_ms: u64) -> Option<(Value, Event)> {
    let (create, update, delete) = edit.kind.events();
    let event = |kind: EventKind, model: Value| Event { kind, model };
    match (edit.kind, edit.id, edit.delete) {
        (StaffEditKind::Gift, Some(id), false) => {
            let include_ids = org.spec.webhook_includes_transaction_ids;
            let (webhook, full) = state.gifts.update(id, |gift| {
                gift.merge(&edit.changes, now_ms);
                let custom = custom_fields_object(gift.doc.get("customFields"));
                gift.doc.insert("customFields".into(), custom);
                (gift_webhook(gift, include_ids), gift_full(gift))
            })?;
            Some((full, event(update, webhook)))
        }
        (StaffEditKind::Gift, Some(id), true) => {
            let gift = state.gifts.remove(id)?;
            let model = gift_webhook(&gift, org.spec.webhook_includes_transaction_ids);
            Some((gift_full(&gift), event(delete, model)))
        }
        (StaffEditKind::Contact, Some(id), false) => {
            let full = state.contacts.update(id, |contact| {
                contact.merge(&edit.changes, now_ms);
                // A person is now the latest writer: the API client's mark goes.
                contact
                    .doc
                    .retain(|key, _| !key.eq_ignore_ascii_case(WRITER_MARK));
                contact_full(contact)
            })?;
            Some((full.clone(), event(update, full)))
        }
        (StaffEditKind::Contact, Some(id), true) => {
            let full = contact_full(&state.contacts.remove(id)?);
            Some((full.clone(), event(delete, full)))
        }
        (StaffEditKind::Gift | StaffEditKind::Contact, None, _) => None,
        (kind, None, _) => {
            let records = table(state, kind);
            let id = records.next_id();
            let mut doc = defaults(kind, id, now_ms);
            for (key, value) in &edit.changes {
                if !matches!(
                    key.as_str(),
                    "id" | "createDateTimeUtc" | "modifiedDateTimeUtc"
                ) {
                    doc.insert(key.clone(), value.clone());
                }
            }
            if kind == StaffEditKind::Project {
                mirror_project_code(&mut doc, &edit.changes);
            }
            let record = Record::new(id, now_ms, doc);
            let full = Value::Object(record.doc.clone());
            records.insert(record);
            Some((full.clone(), event(create, full)))
        }
        (kind, Some(id), false) => {
            let record = table(state, kind).records.get_mut(&id)?;
            record.merge(&edit.changes, now_ms);
            if kind == StaffEditKind::Project {
                mirror_project_code(&mut record.doc, &edit.changes);
            }
            let full = Value::Object(record.doc.clone());
            Some((full.clone(), event(update, full)))
        }
        (kind, Some(id), true) => {
            let record = table(state, kind).records.remove(&id)?;
            let full = Value::Object(record.doc);
            Some((full.clone(), event(delete, full)))
        }
    }
}

/// The plain fields a new record starts with (the edit's changes override them).
fn defaults(kind: StaffEditKind, id: u64, now_ms: u64) -> Map<String, Value> {
    let doc = match kind {
        StaffEditKind::Project => {
            json!({"name": format!("Project {id}"), "code": format!("P{id}"), "isActive": true})
        }
        StaffEditKind::Event => {
            json!({"name": format!("Event {id}"), "startDateTime": iso_utc(now_ms)})
        }
        StaffEditKind::ContactNote => json!({"contactId": null, "note": "", "noteType": "General"}),
        StaffEditKind::Contact | StaffEditKind::Gift => json!({}),
    };
    match doc {
        Value::Object(doc) => doc,
        _ => Map::new(),
    }
}

/// Keeps a project's `code` (staff edits) and `projectCode` (designations, Project by code)
/// the same, whichever the edit changed.
fn mirror_project_code(doc: &mut Map<String, Value>, changes: &Map<String, Value>) {
    let code = if changes.contains_key("code") {
        doc.get("code").cloned()
    } else if changes.contains_key("projectCode") {
        doc.get("projectCode").cloned()
    } else {
        doc.get("code").or_else(|| doc.get("projectCode")).cloned()
    };
    if let Some(code) = code {
        doc.insert("code".into(), code.clone());
        doc.insert("projectCode".into(), code);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtuous::org::OrgState;
    use crate::virtuous::OrgSpec;

    fn edit(value: Value) -> StaffEdit {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_list_is_checked_whole_with_earlier_creates_and_deletes() {
        // Goal: an id created earlier in the list may be edited; one deleted earlier may not;
        // gift/contact creates and id-less deletes are refused with the failing index.
        let mut state = OrgState::new(&OrgSpec::new("o", "k"));
        let ok = [
            edit(json!({"kind": "event"})),
            edit(json!({"kind": "event", "id": 1, "changes": {"name": "Gala"}})),
            edit(json!({"kind": "event", "id": 1, "delete": true})),
        ];
        assert!(check(&mut state, &ok).is_ok());
        let bad = [
            edit(json!({"kind": "event"})),
            edit(json!({"kind": "event", "id": 1, "delete": true})),
            edit(json!({"kind": "event", "id": 1, "changes": {}})),
        ];
        let error = check(&mut state, &bad).unwrap_err();
        assert_eq!((error.index, error.status), (2, 404));
        let error = check(&mut state, &[edit(json!({"kind": "gift"}))]).unwrap_err();
        assert_eq!(error.status, 400);
        let error = check(
            &mut state,
            &[edit(json!({"kind": "project", "delete": true}))],
        )
        .unwrap_err();
        assert_eq!(error.status, 400);
        let note = edit(json!({"kind": "contact_note", "changes": {"contactId": "x"}}));
        assert_eq!(check(&mut state, &[note]).unwrap_err().status, 400);
        assert!(state.events.records.is_empty(), "check applies nothing");
    }

    #[test]
    fn project_codes_stay_mirrored() {
        // Goal: `code` and `projectCode` follow whichever an edit changed.
        let mut doc = defaults(StaffEditKind::Project, 3, 0);
        mirror_project_code(&mut doc, &Map::new());
        assert_eq!(
            (&doc["code"], &doc["projectCode"]),
            (&json!("P3"), &json!("P3"))
        );
        doc.insert("projectCode".into(), json!("SPRING"));
        let changes = json!({"projectCode": "SPRING"})
            .as_object()
            .unwrap()
            .clone();
        mirror_project_code(&mut doc, &changes);
        assert_eq!(doc["code"], "SPRING");
    }
}
