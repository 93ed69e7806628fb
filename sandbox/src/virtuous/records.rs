//! Stored gifts, contacts and other records, and the JSON forms Virtuous shows them in:
//! full (by id, FullGift / FullContact), summary (abbreviated queries) and webhook.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{json, Map, Value};

use super::models::{field, iso_utc, value_text};

/// A record as a JSON document plus the timestamps queries compare (kept on disk as is by
/// `persist`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Record {
    pub(crate) id: u64,
    pub(crate) created_ms: u64,
    pub(crate) modified_ms: u64,
    /// The full form, with `customFields` kept as an object `{name: value}` for gifts.
    pub(crate) doc: Map<String, Value>,
}

impl Record {
    pub(crate) fn new(id: u64, now_ms: u64, mut doc: Map<String, Value>) -> Record {
        doc.insert("id".into(), json!(id));
        doc.insert("createDateTimeUtc".into(), json!(iso_utc(now_ms)));
        doc.insert("modifiedDateTimeUtc".into(), json!(iso_utc(now_ms)));
        Record {
            id,
            created_ms: now_ms,
            modified_ms: now_ms,
            doc,
        }
    }

    pub(crate) fn touch(&mut self, now_ms: u64) {
        // Modified times strictly increase, so "after the checkpoint" never misses an edit
        // made in the same millisecond as the previous one.
        self.modified_ms = now_ms.max(self.modified_ms + 1);
        self.doc.insert(
            "modifiedDateTimeUtc".into(),
            json!(iso_utc(self.modified_ms)),
        );
    }

    /// Applies `changes` key by key (a staff edit), keeping id and creation time.
    pub(crate) fn merge(&mut self, changes: &Map<String, Value>, now_ms: u64) {
        for (key, value) in changes {
            if is_protected(key) {
                continue;
            }
            self.doc.insert(key.clone(), value.clone());
        }
        self.touch(now_ms);
    }

    /// Replaces every field (an API PUT), keeping id and creation time.
    pub(crate) fn replace(&mut self, replacement: &Map<String, Value>, now_ms: u64) {
        let kept: Vec<(String, Value)> = self
            .doc
            .iter()
            .filter(|(key, _)| is_protected(key))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        self.doc = replacement
            .iter()
            .filter(|(key, _)| !is_protected(key))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        self.doc.extend(kept);
        self.touch(now_ms);
    }

    pub(crate) fn text(&self, name: &str) -> Option<String> {
        field(&self.doc, name).and_then(value_text)
    }
}

fn is_protected(key: &str) -> bool {
    ["id", "createDateTimeUtc", "modifiedDateTimeUtc"]
        .iter()
        .any(|protected| protected.eq_ignore_ascii_case(key))
}

/// `customFields` as the object form `{name: value}` whatever form it was given in.
pub(crate) fn custom_fields_object(value: Option<&Value>) -> Value {
    match value {
        Some(Value::Object(map)) => Value::Object(map.clone()),
        Some(Value::Array(items)) => {
            let mut map = Map::new();
            for item in items {
                if let Some(name) = item.get("name").and_then(value_text) {
                    map.insert(name, item.get("value").cloned().unwrap_or(Value::Null));
                }
            }
            Value::Object(map)
        }
        _ => Value::Object(Map::new()),
    }
}

/// `customFields` as the FullGift array form `[{name, value, displayName}]`.
pub(crate) fn custom_fields_array(value: Option<&Value>) -> Value {
    match custom_fields_object(value) {
        Value::Object(map) => Value::Array(
            map.into_iter()
                .map(|(name, value)| json!({"name": name, "value": value, "displayName": name}))
                .collect(),
        ),
        _ => Value::Array(Vec::new()),
    }
}

/// Gift as `GET /api/Gift/{id}` and FullGift show it.
pub(crate) fn gift_full(gift: &Record) -> Value {
    let mut doc = gift.doc.clone();
    let custom = custom_fields_array(doc.get("customFields"));
    doc.insert("customFields".into(), custom);
    Value::Object(doc)
}

/// Gift as a webhook carries it (`customFields` an object).
pub(crate) fn gift_webhook(gift: &Record, include_transaction_ids: bool) -> Value {
    let mut doc = gift.doc.clone();
    let custom = custom_fields_object(doc.get("customFields"));
    doc.insert("customFields".into(), custom);
    if !include_transaction_ids {
        doc.remove("transactionSource");
        doc.remove("transactionId");
    }
    Value::Object(doc)
}

/// Gift as the abbreviated `Gift/Query` lists it.
pub(crate) fn gift_summary(gift: &Record) -> Value {
    let mut summary = Map::new();
    for key in [
        "id",
        "transactionSource",
        "transactionId",
        "contactId",
        "contactName",
        "giftType",
        "giftDate",
        "giftDateFormatted",
        "amount",
        "currencyCode",
        "batch",
        "createDateTimeUtc",
        "modifiedDateTimeUtc",
    ] {
        summary.insert(
            key.into(),
            gift.doc.get(key).cloned().unwrap_or(Value::Null),
        );
    }
    Value::Object(summary)
}

/// Contact as `GET /api/Contact/{id}`, FullContact and webhooks show it.
pub(crate) fn contact_full(contact: &Record) -> Value {
    Value::Object(contact.doc.clone())
}

/// Contact as the abbreviated `Contact/Query` lists it.
pub(crate) fn contact_summary(contact: &Record) -> Value {
    let mut summary = Map::new();
    for key in [
        "id",
        "contactType",
        "name",
        "address",
        "createDateTimeUtc",
        "modifiedDateTimeUtc",
    ] {
        summary.insert(
            key.into(),
            contact.doc.get(key).cloned().unwrap_or(Value::Null),
        );
    }
    summary.insert(
        "email".into(),
        json!(contact_emails(contact).into_iter().next()),
    );
    Value::Object(summary)
}

/// Every email of a contact (from its individuals' contact methods), lower-cased.
pub(crate) fn contact_emails(contact: &Record) -> Vec<String> {
    let mut emails = Vec::new();
    for individual in array(&contact.doc, "contactIndividuals") {
        for method in individual
            .get("contactMethods")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let is_email = method
                .get("type")
                .and_then(Value::as_str)
                .is_some_and(|kind| kind.to_ascii_lowercase().contains("email"));
            if let (true, Some(value)) = (is_email, method.get("value").and_then(Value::as_str)) {
                emails.push(value.trim().to_ascii_lowercase());
            }
        }
    }
    emails
}

/// `(source, id)` pairs of a contact's references.
pub(crate) fn contact_references(contact: &Record) -> Vec<(String, String)> {
    array(&contact.doc, "contactReferences")
        .filter_map(|reference| {
            let source = reference.get("source").and_then(value_text)?;
            let id = reference.get("id").and_then(value_text)?;
            Some((source, id))
        })
        .collect()
}

/// `(firstName, lastName)` of each individual, lower-cased.
pub(crate) fn contact_names(contact: &Record) -> Vec<(String, String)> {
    array(&contact.doc, "contactIndividuals")
        .filter_map(|individual| {
            let first = individual.get("firstName").and_then(Value::as_str)?;
            let last = individual.get("lastName").and_then(Value::as_str)?;
            Some((
                first.trim().to_ascii_lowercase(),
                last.trim().to_ascii_lowercase(),
            ))
        })
        .collect()
}

pub(crate) fn contact_postal(contact: &Record) -> Option<String> {
    contact
        .doc
        .get("address")
        .and_then(|address| address.get("postal"))
        .and_then(value_text)
        .map(|postal| normalize_postal(&postal))
}

pub(crate) fn normalize_postal(postal: &str) -> String {
    postal
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_uppercase()
}

fn array<'a>(doc: &'a Map<String, Value>, name: &str) -> impl Iterator<Item = &'a Value> {
    doc.get(name)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// Gifts by id, with the (transactionSource, transactionId) index that dedup and the
/// by-source lookup use.
#[derive(Debug, Default)]
pub(crate) struct GiftStore {
    pub(crate) records: BTreeMap<u64, Record>,
    by_transaction: HashMap<(String, String), BTreeSet<u64>>,
    next_id: u64,
}

fn transaction_key(gift: &Record) -> Option<(String, String)> {
    Some((gift.text("transactionSource")?, gift.text("transactionId")?))
}

impl GiftStore {
    pub(crate) fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// The last id handed out (0: none yet).
    pub(crate) fn last_id(&self) -> u64 {
        self.next_id
    }

    /// Ids go on after `last_id` (a store read back from disk).
    pub(crate) fn set_last_id(&mut self, last_id: u64) {
        self.next_id = last_id;
    }

    pub(crate) fn insert(&mut self, gift: Record) {
        if let Some(key) = transaction_key(&gift) {
            self.by_transaction.entry(key).or_default().insert(gift.id);
        }
        self.records.insert(gift.id, gift);
    }

    pub(crate) fn remove(&mut self, id: u64) -> Option<Record> {
        let gift = self.records.remove(&id)?;
        if let Some(key) = transaction_key(&gift) {
            if let Some(ids) = self.by_transaction.get_mut(&key) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.by_transaction.remove(&key);
                }
            }
        }
        Some(gift)
    }

    /// Changes a gift through `edit`, keeping the index right if its ids changed.
    pub(crate) fn update<T>(&mut self, id: u64, edit: impl FnOnce(&mut Record) -> T) -> Option<T> {
        let mut gift = self.remove(id)?;
        let outcome = edit(&mut gift);
        self.insert(gift);
        Some(outcome)
    }

    pub(crate) fn by_transaction(&self, source: &str, transaction_id: &str) -> Option<&Record> {
        let ids = self
            .by_transaction
            .get(&(source.to_owned(), transaction_id.to_owned()))?;
        ids.iter().next().and_then(|id| self.records.get(id))
    }

    pub(crate) fn exists(&self, source: &str, transaction_id: &str) -> bool {
        self.by_transaction(source, transaction_id).is_some()
    }
}

/// Records of one kind by id with their own counter (contacts, webhooks, recurring gifts,
/// projects): ids start at 1 per kind.
#[derive(Debug, Default)]
pub(crate) struct Table {
    pub(crate) records: BTreeMap<u64, Record>,
    next_id: u64,
}

impl Table {
    pub(crate) fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// The id `next_id` will hand out.
    pub(crate) fn peek_next_id(&self) -> u64 {
        self.next_id + 1
    }

    /// The last id handed out (0: none yet).
    pub(crate) fn last_id(&self) -> u64 {
        self.next_id
    }

    /// Ids go on after `last_id` (a table read back from disk).
    pub(crate) fn set_last_id(&mut self, last_id: u64) {
        self.next_id = last_id;
    }

    pub(crate) fn insert(&mut self, record: Record) -> u64 {
        let id = record.id;
        self.records.insert(id, record);
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_fields_convert_between_object_and_array() {
        // Goal: webhook gifts carry an object, FullGift an array of {name, value, displayName}.
        let object = json!({"campaign": "spring"});
        let array = custom_fields_array(Some(&object));
        assert_eq!(
            array,
            json!([{"name": "campaign", "value": "spring", "displayName": "campaign"}])
        );
        assert_eq!(custom_fields_object(Some(&array)), object);
        assert_eq!(custom_fields_object(None), json!({}));
    }

    #[test]
    fn gift_index_follows_edits_and_removals() {
        // Goal: lookups by (source, id) see changed ids and forget removed gifts.
        let mut gifts = GiftStore::default();
        let id = gifts.next_id();
        let doc = json!({"transactionSource": "Stripe", "transactionId": "pi_1"});
        gifts.insert(Record::new(id, 1_000, doc.as_object().unwrap().clone()));
        assert!(gifts.exists("Stripe", "pi_1"));
        gifts.update(id, |gift| {
            gift.doc.insert("transactionId".into(), json!("pi_2"));
        });
        assert!(!gifts.exists("Stripe", "pi_1"));
        assert_eq!(gifts.by_transaction("Stripe", "pi_2").unwrap().id, id);
        gifts.remove(id);
        assert!(!gifts.exists("Stripe", "pi_2"));
    }

    #[test]
    fn replace_keeps_identity_and_moves_modified_time_forward() {
        // Goal: a PUT replaces fields but never the id or creation time.
        let mut record = Record::new(5, 1_000, Map::new());
        record.doc.insert("notes".into(), json!("old"));
        let replacement = json!({"id": 99, "amount": 3}).as_object().unwrap().clone();
        record.replace(&replacement, 1_000);
        assert_eq!(record.doc["id"], 5);
        assert!(record.doc.get("notes").is_none());
        assert_eq!(record.doc["amount"], 3);
        assert_eq!(record.modified_ms, 1_001);
    }
}
