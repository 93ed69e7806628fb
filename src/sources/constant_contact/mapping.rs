//! A Constant Contact v3 contact → one polled item (pure: no I/O, no clock).
//!
//! One contact version becomes one contact transaction (`referenceSource` = the tenant's
//! `reference_source`, `referenceId` = `contact_id`) whose idempotency key names the version
//! (`{contact_id}@{updated_at unix s}`): re-reading it in the overlap window is a duplicate,
//! a later edit is a new fact. Email permission travels as the shared [`EmailStatus`]
//! custom fields; a deleted contact (`deleted_at`, seen with `status=all`) is an opt-out
//! update, never a contact delete.

use serde_json::{json, Map, Value};
use steward_actors::poll::PolledItem;
use steward_actors::store::{EntryFact, Lane, NewEntry, RecordKind};

use crate::sources::idempotency_key;
use crate::sources::polling::{versioned_fact_id, EmailStatus};

/// The source name in entries and idempotency keys (stored forever: never change it).
pub const SOURCE: &str = "constant_contact";

/// Where a contact stands on email: `deleted_at` wins, then `email_address.permission_to_send`
/// (`explicit` / `implicit` → subscribed; `unsubscribed`; `pending_confirmation`, `not_set`,
/// `temp_hold`, anything unknown or no email at all → not subscribed).
pub fn email_status(contact: &Value) -> EmailStatus {
    let deleted = contact
        .get("deleted_at")
        .is_some_and(|deleted_at| !deleted_at.is_null());
    if deleted {
        return EmailStatus::Deleted;
    }
    match contact
        .pointer("/email_address/permission_to_send")
        .and_then(Value::as_str)
    {
        Some("explicit" | "implicit") => EmailStatus::Subscribed,
        Some("unsubscribed") => EmailStatus::Unsubscribed,
        _ => EmailStatus::NotSubscribed,
    }
}

/// `list_memberships` as list ids: the v3 API answers an array of ids; an object form
/// (`{"list_id": …}`) is read too, defensively.
fn list_ids(contact: &Value) -> Vec<String> {
    let Some(memberships) = contact.get("list_memberships").and_then(Value::as_array) else {
        return Vec::new();
    };
    memberships
        .iter()
        .filter_map(|membership| match membership {
            Value::String(id) => Some(id.clone()),
            Value::Object(object) => object
                .get("list_id")
                .and_then(Value::as_str)
                .map(str::to_owned),
            _ => None,
        })
        .filter(|id| !id.trim().is_empty())
        .collect()
}

fn non_empty_text<'a>(contact: &'a Value, pointer: &str) -> Option<&'a str> {
    contact
        .pointer(pointer)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|text| !text.is_empty())
}

/// `updated_at` (ISO 8601) → (ms, whole seconds) since the epoch; `None` when absent,
/// unreadable or before 1970.
fn updated_at(contact: &Value) -> Option<(u64, i64)> {
    let text = contact.get("updated_at").and_then(Value::as_str)?;
    let timestamp: jiff::Timestamp = text.trim().parse().ok()?;
    let ms = u64::try_from(timestamp.as_millisecond()).ok()?;
    Some((ms, timestamp.as_second()))
}

/// The contact transaction body of one contact.
pub fn contact_body(contact: &Value, contact_id: &str, reference_source: &str) -> Value {
    let mut body = Map::new();
    body.insert("referenceSource".into(), json!(reference_source));
    body.insert("referenceId".into(), json!(contact_id));
    if let Some(email) = non_empty_text(contact, "/email_address/address") {
        body.insert("email".into(), json!(email));
    }
    if let Some(first_name) = non_empty_text(contact, "/first_name") {
        body.insert("firstName".into(), json!(first_name));
    }
    if let Some(last_name) = non_empty_text(contact, "/last_name") {
        body.insert("lastName".into(), json!(last_name));
    }
    let lists = list_ids(contact);
    if !lists.is_empty() {
        body.insert("emailLists".into(), json!(lists));
    }
    body.insert(
        "customFields".into(),
        Value::Object(email_status(contact).custom_fields()),
    );
    Value::Object(body)
}

/// One contact of a page → its polled item. A contact without a `contact_id` or with an
/// unreadable `updated_at` is rejected (the reason goes to the run report; the checkpoint
/// does not depend on it).
pub fn contact_item(contact: &Value, reference_source: &str, now_ms: u64) -> PolledItem {
    let contact_id = non_empty_text(contact, "/contact_id").map(str::to_owned);
    let version = updated_at(contact);
    let (Some(contact_id), Some((version_ms, version_s))) = (contact_id.clone(), version) else {
        let reason = match (&contact_id, version) {
            (None, _) => "contact without a contact_id".to_owned(),
            (Some(_), _) => format!(
                "updated_at {} is not an ISO 8601 instant",
                contact
                    .get("updated_at")
                    .map_or_else(|| "(absent)".to_owned(), Value::to_string)
            ),
        };
        return PolledItem {
            record_id: contact_id.unwrap_or_default(),
            version_ms: version.map_or(0, |(ms, _)| ms),
            entries: Err(reason),
        };
    };
    let body = contact_body(contact, &contact_id, reference_source);
    let fact_id = versioned_fact_id(&contact_id, version_s);
    let entry = NewEntry {
        fact: EntryFact {
            kind: RecordKind::Contact,
            source: SOURCE.to_owned(),
            source_id: contact_id.clone(),
            idempotency_key: idempotency_key(SOURCE, RecordKind::Contact, &fact_id),
            lane: Lane::Live,
            transaction_source: reference_source.to_owned(),
            body_json: body.to_string(),
        },
        aliases: Vec::new(),
        now_ms,
    };
    PolledItem {
        record_id: contact_id,
        version_ms,
        entries: Ok(vec![entry]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contact(extra: Value) -> Value {
        let mut contact = json!({
            "contact_id": "0c7a1b7e-0000-4000-8000-000000000001",
            "email_address": {"address": "ann@example.org", "permission_to_send": "implicit",
                              "created_at": "2026-01-01T00:00:00Z",
                              "updated_at": "2026-01-01T00:00:00Z"},
            "first_name": "Ann",
            "last_name": "Lee",
            "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-11-26T10:00:05Z",
            "list_memberships": ["list-a", "list-b"],
        });
        for (key, value) in extra.as_object().unwrap() {
            contact[key] = value.clone();
        }
        contact
    }

    fn body_of(item: &PolledItem) -> Value {
        let entries = item.entries.as_ref().unwrap();
        assert_eq!(entries.len(), 1);
        serde_json::from_str(&entries[0].fact.body_json).unwrap()
    }

    #[test]
    fn a_contact_becomes_one_contact_transaction_keyed_by_its_version() {
        // Goal: ids, names, email, list memberships and the subscribed status land in the
        // body; the fact key is {id}@{updated_at s}; version_ms is updated_at.
        let item = contact_item(&contact(json!({})), "ConstantContact", 7);
        assert_eq!(item.record_id, "0c7a1b7e-0000-4000-8000-000000000001");
        assert_eq!(item.version_ms, 1_795_687_205_000);
        let entry = &item.entries.as_ref().unwrap()[0];
        assert_eq!(
            entry.fact.idempotency_key,
            "constant_contact:contact:0c7a1b7e-0000-4000-8000-000000000001@1795687205"
        );
        assert_eq!(entry.fact.kind, RecordKind::Contact);
        assert_eq!(entry.fact.source, "constant_contact");
        assert_eq!(entry.fact.transaction_source, "ConstantContact");
        assert_eq!(entry.fact.lane, Lane::Live);
        assert_eq!(entry.now_ms, 7);
        assert_eq!(
            body_of(&item),
            json!({"referenceSource": "ConstantContact",
                   "referenceId": "0c7a1b7e-0000-4000-8000-000000000001",
                   "email": "ann@example.org", "firstName": "Ann", "lastName": "Lee",
                   "emailLists": ["list-a", "list-b"],
                   "customFields": {"Email Status": "subscribed", "Email Opt Out": "false"}})
        );
    }

    #[test]
    fn permission_to_send_and_deleted_at_map_to_email_status() {
        // Goal: each permission maps as documented and deleted_at wins over any permission
        // (a deletion is an opt-out update: the body still names the contact).
        for (permission, expected) in [
            ("explicit", EmailStatus::Subscribed),
            ("implicit", EmailStatus::Subscribed),
            ("unsubscribed", EmailStatus::Unsubscribed),
            ("pending_confirmation", EmailStatus::NotSubscribed),
            ("not_set", EmailStatus::NotSubscribed),
            ("temp_hold", EmailStatus::NotSubscribed),
        ] {
            let value = contact(json!({"email_address": {"address": "a@example.org",
                                                          "permission_to_send": permission}}));
            assert_eq!(email_status(&value), expected, "{permission}");
        }
        let deleted = contact(json!({"deleted_at": "2026-11-26T10:00:05Z"}));
        assert_eq!(email_status(&deleted), EmailStatus::Deleted);
        let body = body_of(&contact_item(&deleted, "CC", 0));
        assert_eq!(body["customFields"]["Email Status"], "deleted");
        assert_eq!(body["customFields"]["Email Opt Out"], "true");
        assert_eq!(body["referenceId"], "0c7a1b7e-0000-4000-8000-000000000001");
        let no_email = contact(json!({"email_address": null}));
        assert_eq!(email_status(&no_email), EmailStatus::NotSubscribed);
        assert!(body_of(&contact_item(&no_email, "CC", 0))
            .get("email")
            .is_none());
    }

    #[test]
    fn a_contact_without_id_or_readable_updated_at_is_rejected() {
        // Goal: no contact_id, or an updated_at that is not an instant, is a rejection with
        // a reason, never an entry.
        let no_id = contact(json!({"contact_id": null}));
        let item = contact_item(&no_id, "CC", 0);
        assert_eq!(item.record_id, "");
        assert!(item.entries.unwrap_err().contains("contact_id"));
        for updated_at in [json!("yesterday"), json!(null), json!(12)] {
            let item = contact_item(&contact(json!({"updated_at": updated_at})), "CC", 0);
            assert_eq!(item.record_id, "0c7a1b7e-0000-4000-8000-000000000001");
            assert_eq!(item.version_ms, 0);
            assert!(item.entries.unwrap_err().contains("updated_at"));
        }
    }

    #[test]
    fn list_memberships_are_read_as_ids_and_empty_fields_are_left_out() {
        // Goal: object-shaped memberships give their list_id; no memberships and blank
        // names leave the fields out rather than send empty values.
        let objects = contact(json!({"list_memberships": [{"list_id": "l1"}, "l2", 3, ""]}));
        assert_eq!(list_ids(&objects), vec!["l1", "l2"]);
        let bare = contact(json!({"list_memberships": [], "first_name": " ", "last_name": null}));
        let body = body_of(&contact_item(&bare, "CC", 0));
        for absent in ["emailLists", "firstName", "lastName"] {
            assert!(body.get(absent).is_none(), "{absent}: {body}");
        }
        let fractional = contact(json!({"updated_at": "2026-11-26T10:00:05.250+00:00"}));
        let item = contact_item(&fractional, "CC", 0);
        assert_eq!(item.version_ms, 1_795_687_205_250);
        assert!(item.entries.unwrap()[0]
            .fact
            .idempotency_key
            .ends_with("@1795687205"));
    }
}
