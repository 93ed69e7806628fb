//! One account's contacts, their v3 JSON form, the `status` filter and cursor paging.
//!
//! Pages are ordered by (`updated_at`, `contact_id`); a cursor names the last contact of the
//! page it ends, so contacts that share one `updated_at` are never lost or repeated across
//! pages. `updated_at` has whole-second precision, like the real API's timestamps.

use std::ops::Bound;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::listing::{self, Ordered, OrderedStore};

/// The largest `limit` the API accepts; the default when absent.
pub(crate) const LIMIT_MAX: u64 = 500;
pub(crate) const LIMIT_DEFAULT: u64 = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ContactStatus {
    Active,
    Unsubscribed,
    Deleted,
}

#[derive(Debug, Clone)]
pub(crate) struct Contact {
    pub(crate) contact_id: String,
    pub(crate) email: String,
    pub(crate) first_name: String,
    pub(crate) last_name: String,
    pub(crate) list_memberships: Vec<String>,
    pub(crate) status: ContactStatus,
    pub(crate) created_at_s: u64,
    pub(crate) updated_at_s: u64,
    /// When it was unsubscribed or deleted.
    pub(crate) status_changed_at_s: Option<u64>,
}

pub(crate) use crate::listing::{iso_seconds, parse_instant_ms};

impl Contact {
    /// The v3 JSON form; `list_memberships` only when asked for with `include`.
    pub(crate) fn to_json(&self, include_list_memberships: bool) -> Value {
        let permission_to_send = match self.status {
            ContactStatus::Unsubscribed => "unsubscribed",
            ContactStatus::Active | ContactStatus::Deleted => "implicit",
        };
        let mut email_address = json!({
            "address": self.email,
            "permission_to_send": permission_to_send,
            "created_at": iso_seconds(self.created_at_s),
            "updated_at": iso_seconds(self.updated_at_s),
        });
        let mut contact = json!({
            "contact_id": self.contact_id,
            "email_address": email_address.take(),
            "first_name": self.first_name,
            "last_name": self.last_name,
            "created_at": iso_seconds(self.created_at_s),
            "updated_at": iso_seconds(self.updated_at_s),
        });
        if self.status == ContactStatus::Unsubscribed {
            let changed = iso_seconds(self.status_changed_at_s.unwrap_or(self.updated_at_s));
            contact["email_address"]["opt_out_source"] = json!("Contact");
            contact["email_address"]["opt_out_date"] = json!(changed);
        }
        if self.status == ContactStatus::Deleted {
            let changed = iso_seconds(self.status_changed_at_s.unwrap_or(self.updated_at_s));
            contact["deleted_at"] = json!(changed);
        }
        if include_list_memberships {
            contact["list_memberships"] = json!(self.list_memberships);
        }
        contact
    }
}

/// Which statuses a listing shows: absent = every contact but the deleted ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StatusFilter {
    active: bool,
    unsubscribed: bool,
    deleted: bool,
}

impl StatusFilter {
    pub(crate) const DEFAULT: StatusFilter = StatusFilter {
        active: true,
        unsubscribed: true,
        deleted: false,
    };

    /// Comma-separated `all`, `active`, `unsubscribed`, `deleted`; `Err` names the bad value.
    pub(crate) fn parse(text: &str) -> Result<StatusFilter, String> {
        let mut filter = StatusFilter {
            active: false,
            unsubscribed: false,
            deleted: false,
        };
        for value in text.split(',').map(str::trim) {
            match value {
                "all" => {
                    filter = StatusFilter {
                        active: true,
                        unsubscribed: true,
                        deleted: true,
                    }
                }
                "active" => filter.active = true,
                "unsubscribed" => filter.unsubscribed = true,
                "deleted" => filter.deleted = true,
                other => return Err(format!("status {other:?} is not supported")),
            }
        }
        Ok(filter)
    }

    fn shows(&self, status: ContactStatus) -> bool {
        match status {
            ContactStatus::Active => self.active,
            ContactStatus::Unsubscribed => self.unsubscribed,
            ContactStatus::Deleted => self.deleted,
        }
    }
}

/// A listing: the query and, after the first page, where the previous page ended. The
/// cursor is this, base64url-encoded JSON: opaque to clients, self-contained for us.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Listing {
    /// Only contacts with `updated_at` strictly after this (Unix ms).
    pub(crate) updated_after_ms: Option<i64>,
    pub(crate) status: StatusFilter,
    pub(crate) limit: u64,
    pub(crate) include_list_memberships: bool,
    /// (`updated_at` s, `contact_id`) of the last contact already returned.
    pub(crate) after: Option<(u64, String)>,
}

impl Listing {
    pub(crate) fn to_cursor(&self) -> String {
        listing::to_cursor(self)
    }
    pub(crate) fn from_cursor(cursor: &str) -> Option<Listing> {
        listing::from_cursor(cursor)
    }
}

/// One page: the contacts and the listing of the next page, if any.
pub(crate) struct Page<'a> {
    pub(crate) contacts: Vec<&'a Contact>,
    /// Contacts matching the query in total (every page, not only this one).
    pub(crate) contacts_count: u64,
    pub(crate) next: Option<Listing>,
}

impl Ordered for Contact {
    fn id(&self) -> &str {
        &self.contact_id
    }
    fn order_time(&self) -> u64 {
        self.updated_at_s
    }
}

/// An account's contacts in listing order.
pub(crate) type ContactStore = OrderedStore<Contact>;

impl ContactStore {
    /// A UUID-shaped id, stable for (account, creation number).
    pub(crate) fn next_id(&mut self, account_id: &str) -> String {
        self.created += 1;
        let digest = Sha256::new()
            .chain_update(account_id.as_bytes())
            .chain_update(self.created.to_be_bytes())
            .finalize();
        let hex = hex::encode(&digest[..16]);
        format!(
            "{}-{}-4{}-a{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[13..16],
            &hex[17..20],
            &hex[20..32]
        )
    }

    fn matches(listing: &Listing, contact: &Contact) -> bool {
        let after_ok = listing.updated_after_ms.map_or(true, |after_ms| {
            contact.updated_at_s as i64 * 1000 > after_ms
        });
        after_ok && listing.status.shows(contact.status)
    }

    /// The page `listing` asks for.
    pub(crate) fn page(&self, listing: &Listing) -> Page<'_> {
        let contacts_count = self
            .values()
            .filter(|contact| Self::matches(listing, contact))
            .count() as u64;
        let start = match &listing.after {
            Some(after) => Bound::Excluded(after.clone()),
            None => Bound::Unbounded,
        };
        let (contacts, next_after) = self.page_from(start, listing.limit, |_, contact| {
            Self::matches(listing, contact)
        });
        let next = next_after.map(|after| Listing {
            after: Some(after),
            ..listing.clone()
        });
        Page {
            contacts,
            contacts_count,
            next,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contact(store: &mut ContactStore, updated_at_s: u64, status: ContactStatus) -> String {
        let contact_id = store.next_id("acct");
        store.put(Contact {
            contact_id: contact_id.clone(),
            email: format!("{contact_id}@example.org"),
            first_name: "F".into(),
            last_name: "L".into(),
            list_memberships: vec!["list-1".into()],
            status,
            created_at_s: 1,
            updated_at_s,
            status_changed_at_s: None,
        });
        contact_id
    }

    fn listing(limit: u64, status: StatusFilter) -> Listing {
        Listing {
            updated_after_ms: None,
            status,
            limit,
            include_list_memberships: false,
            after: None,
        }
    }

    fn read_all(store: &ContactStore, first: Listing) -> Vec<String> {
        let mut seen = Vec::new();
        let mut next = Some(first);
        while let Some(listing) = next {
            // Through the cursor text, as a client would.
            let listing = Listing::from_cursor(&listing.to_cursor()).unwrap();
            let page = store.page(&listing);
            assert!(page.contacts.len() as u64 <= listing.limit);
            seen.extend(page.contacts.iter().map(|c| c.contact_id.clone()));
            next = page.next;
        }
        seen
    }

    #[test]
    fn paging_through_ties_on_updated_at_returns_each_contact_once() {
        // Goal: 23 contacts sharing one updated_at, paged 5 at a time, come back once each.
        let mut store = ContactStore::default();
        let mut ids: Vec<String> = (0..23)
            .map(|_| contact(&mut store, 1_000, ContactStatus::Active))
            .collect();
        contact(&mut store, 999, ContactStatus::Active);
        let mut seen = read_all(&store, listing(5, StatusFilter::DEFAULT));
        assert_eq!(seen.len(), 24);
        seen.retain(|id| ids.contains(id));
        ids.sort();
        assert_eq!(
            seen, ids,
            "ties are ordered by contact id, none lost or repeated"
        );
    }

    #[test]
    fn updated_after_is_strict_and_status_filters_apply() {
        // Goal: updated_after excludes its own second; the default hides deleted, `all` shows it.
        let mut store = ContactStore::default();
        contact(&mut store, 100, ContactStatus::Active);
        let later = contact(&mut store, 101, ContactStatus::Active);
        let deleted = contact(&mut store, 102, ContactStatus::Deleted);
        let unsubscribed = contact(&mut store, 103, ContactStatus::Unsubscribed);
        let mut query = listing(10, StatusFilter::DEFAULT);
        query.updated_after_ms = Some(100_000);
        let page = store.page(&query);
        let ids: Vec<_> = page.contacts.iter().map(|c| c.contact_id.clone()).collect();
        assert_eq!(ids, [later.clone(), unsubscribed.clone()]);
        assert_eq!(page.contacts_count, 2);
        query.status = StatusFilter::parse("all").unwrap();
        let ids: Vec<_> = store
            .page(&query)
            .contacts
            .iter()
            .map(|c| c.contact_id.clone())
            .collect();
        assert_eq!(ids, [later, deleted.clone(), unsubscribed]);
        let deleted_json = store.get(&deleted).unwrap().to_json(true);
        assert_eq!(deleted_json["deleted_at"], "1970-01-01T00:01:42Z");
        assert_eq!(deleted_json["list_memberships"], json!(["list-1"]));
        assert!(StatusFilter::parse("bogus").is_err());
    }

    #[test]
    fn an_edit_moves_a_contact_in_the_order() {
        // Goal: re-putting a contact with a later updated_at leaves one index entry.
        let mut store = ContactStore::default();
        let id = contact(&mut store, 5, ContactStatus::Active);
        let mut edited = store.get(&id).unwrap().clone();
        edited.updated_at_s = 9;
        store.put(edited);
        assert_eq!(store.order.len(), 1);
        assert_eq!(store.all().next().unwrap().updated_at_s, 9);
    }

    #[test]
    fn instants_parse_as_iso_or_date() {
        // Goal: both forms the API accepts parse; junk does not.
        assert_eq!(parse_instant_ms("1970-01-01T00:00:01Z"), Some(1_000));
        assert_eq!(parse_instant_ms("1970-01-02"), Some(86_400_000));
        assert_eq!(parse_instant_ms("yesterday"), None);
        assert_eq!(iso_seconds(61), "1970-01-01T00:01:01Z");
    }
}
