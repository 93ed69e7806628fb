//! Contacts by id with the indices matching needs (reference, email, name + postal code), so
//! an import stays O(1) per transaction however many contacts an org has: an engine benchmark
//! pushing 100k donors through `processing: "immediate"` must not find the sandbox quadratic.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::records::{contact_emails, contact_names, contact_postal, contact_references, Record};

/// One way a transaction can find a contact; text is normalised (emails and names
/// lower-cased, postal codes without spaces, upper-cased).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum MatchKey {
    Reference {
        source: String,
        id: String,
    },
    Email(String),
    NamePostal {
        first: String,
        last: String,
        postal: String,
    },
}

fn keys_of(contact: &Record) -> Vec<MatchKey> {
    let mut keys: Vec<MatchKey> = contact_references(contact)
        .into_iter()
        .map(|(source, id)| MatchKey::Reference { source, id })
        .collect();
    keys.extend(contact_emails(contact).into_iter().map(MatchKey::Email));
    if let Some(postal) = contact_postal(contact) {
        keys.extend(
            contact_names(contact)
                .into_iter()
                .map(|(first, last)| MatchKey::NamePostal {
                    first,
                    last,
                    postal: postal.clone(),
                }),
        );
    }
    keys
}

#[derive(Debug, Default)]
pub(crate) struct ContactStore {
    /// Read freely; change only through `insert` / `update` so the indices stay right.
    pub(crate) records: BTreeMap<u64, Record>,
    next_id: u64,
    index: HashMap<MatchKey, BTreeSet<u64>>,
    keys_by_contact: HashMap<u64, Vec<MatchKey>>,
}

impl ContactStore {
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

    pub(crate) fn insert(&mut self, contact: Record) {
        let id = contact.id;
        self.records.insert(id, contact);
        self.reindex(id);
    }

    /// Runs `enrich` on a contact; re-indexes only when it reports a change (the common
    /// import case, a matched contact that learns nothing, then costs no index work).
    pub(crate) fn enrich(&mut self, id: u64, enrich: impl FnOnce(&mut Record) -> bool) -> bool {
        let Some(contact) = self.records.get_mut(&id) else {
            return false;
        };
        let changed = enrich(contact);
        if changed {
            self.reindex(id);
        }
        changed
    }

    /// Changes a contact through `edit` and re-indexes it.
    pub(crate) fn update<T>(&mut self, id: u64, edit: impl FnOnce(&mut Record) -> T) -> Option<T> {
        let outcome = edit(self.records.get_mut(&id)?);
        self.reindex(id);
        Some(outcome)
    }

    /// Removes a contact and its index keys (a staff delete).
    pub(crate) fn remove(&mut self, id: u64) -> Option<Record> {
        let contact = self.records.remove(&id)?;
        self.reindex(id);
        Some(contact)
    }

    fn reindex(&mut self, id: u64) {
        for key in self.keys_by_contact.remove(&id).unwrap_or_default() {
            if let Some(ids) = self.index.get_mut(&key) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.index.remove(&key);
                }
            }
        }
        let Some(contact) = self.records.get(&id) else {
            return;
        };
        let keys = keys_of(contact);
        for key in &keys {
            self.index.entry(key.clone()).or_default().insert(id);
        }
        self.keys_by_contact.insert(id, keys);
    }

    /// The lowest contact id with this key.
    pub(crate) fn find(&self, key: &MatchKey) -> Option<u64> {
        self.index
            .get(key)
            .and_then(|ids| ids.iter().next().copied())
    }

    pub(crate) fn by_reference(&self, source: &str, id: &str) -> Option<&Record> {
        let key = MatchKey::Reference {
            source: source.to_owned(),
            id: id.to_owned(),
        };
        self.find(&key).and_then(|id| self.records.get(&id))
    }

    pub(crate) fn by_email(&self, email: &str) -> Option<&Record> {
        let key = MatchKey::Email(email.trim().to_ascii_lowercase());
        self.find(&key).and_then(|id| self.records.get(&id))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn contact(id: u64, email: &str, reference: &str) -> Record {
        let doc = json!({
            "address": {"postal": "627 04"},
            "contactIndividuals": [{"firstName": "Ann", "lastName": "Lee",
                "contactMethods": [{"type": "Home Email", "value": email}]}],
            "contactReferences": [{"source": "Stripe", "id": reference}]});
        Record::new(id, 0, doc.as_object().unwrap().clone())
    }

    #[test]
    fn indices_follow_inserts_and_edits() {
        // Goal: every key finds its contact; an edit drops the old keys and adds the new ones.
        let mut store = ContactStore::default();
        store.insert(contact(1, "Ann@Example.org", "cus_1"));
        assert_eq!(store.by_reference("Stripe", "cus_1").unwrap().id, 1);
        assert_eq!(store.by_email("ann@example.org").unwrap().id, 1);
        let name_key = MatchKey::NamePostal {
            first: "ann".into(),
            last: "lee".into(),
            postal: "62704".into(),
        };
        assert_eq!(store.find(&name_key), Some(1));
        store.update(1, |record| {
            record.doc["contactReferences"] = json!([{"source": "Stripe", "id": "cus_2"}]);
        });
        assert!(store.by_reference("Stripe", "cus_1").is_none());
        assert_eq!(store.by_reference("Stripe", "cus_2").unwrap().id, 1);
    }

    #[test]
    fn shared_keys_resolve_to_the_lowest_id() {
        // Goal: two contacts with one email: the older (lower id) wins, as a scan would pick.
        let mut store = ContactStore::default();
        store.insert(contact(2, "same@example.org", "b"));
        store.insert(contact(1, "same@example.org", "a"));
        assert_eq!(store.by_email("same@example.org").unwrap().id, 1);
    }
}
