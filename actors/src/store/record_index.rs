//! Finding records by donor email and by Virtuous id (`GET /v1/tenants/{id}/records?email=`
//! or `?virtuous_id=`): two index sections kept with the records.
//!
//! - `RECORD_BY_EMAIL`: written in the same batch as the record whenever an entry whose body
//!   carries an email (`email`, `emailAddress`, or either inside `contact`) is enqueued for
//!   it. A donor whose email changes is found under both.
//! - `RECORD_BY_VIRTUOUS_ID`: written in the same batch as the record's confirmation.
//!
//! An index key points at a record key; a record gone since (retention) is skipped on read.
//! Records written before the index existed are found once they are written again.

use serde::Deserialize;

use super::keys::section;
use super::types::RecordState;
use super::{io_error, StoreError, TenantStore};

/// Longest email indexed (RFC 5321's path limit).
const EMAIL_LEN_MAX: usize = 254;

/// The two ways to look a record up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordLookup {
    Email,
    VirtuousId,
}

impl RecordLookup {
    fn section(self) -> u8 {
        match self {
            RecordLookup::Email => section::RECORD_BY_EMAIL,
            RecordLookup::VirtuousId => section::RECORD_BY_VIRTUOUS_ID,
        }
    }
}

/// An email as indexed and searched: trimmed, lowercased; `None` when it cannot be one.
pub fn normalise_email(text: &str) -> Option<String> {
    let email = text.trim().to_lowercase();
    let plausible = email.len() <= EMAIL_LEN_MAX
        && email.contains('@')
        && !email.chars().any(|c| c.is_control() || c.is_whitespace());
    plausible.then_some(email)
}

#[derive(Deserialize, Default)]
struct EmailFields {
    email: Option<String>,
    #[serde(rename = "emailAddress")]
    email_address: Option<String>,
    contact: Option<Box<EmailFields>>,
}

impl EmailFields {
    fn first(self) -> Option<String> {
        let own = self.email.or(self.email_address);
        own.or_else(|| self.contact.and_then(|contact| contact.first()))
    }
}

/// The donor email a Virtuous body carries, normalised: a contact transaction's `email` /
/// `emailAddress`, or a gift's `contact.email`.
pub fn email_of_body(body_json: &str) -> Option<String> {
    let fields: EmailFields = serde_json::from_str(body_json).ok()?;
    fields.first().as_deref().and_then(normalise_email)
}

/// A Virtuous id as indexed: trimmed; `None` when empty or holding a control character.
pub fn normalise_virtuous_id(text: &str) -> Option<String> {
    let id = text.trim();
    let plausible = !id.is_empty() && id.len() <= 64 && !id.chars().any(char::is_control);
    plausible.then(|| id.to_string())
}

impl TenantStore {
    /// The records indexed under `value`, at most `limit`, in key order. `value` is taken as
    /// given: normalise it first ([`normalise_email`], [`normalise_virtuous_id`]).
    pub fn find_records(
        &self,
        lookup: RecordLookup,
        value: &str,
        limit: usize,
    ) -> Result<Vec<RecordState>, StoreError> {
        let inner = self.inner();
        inner.settle()?;
        let prefix = inner.keys.record_index_prefix(lookup.section(), value);
        let mut found = Vec::new();
        for item in inner.tree.scan_prefix(&prefix).keys() {
            if found.len() >= limit {
                break;
            }
            let index_key = item.map_err(io_error)?;
            let record_key = inner
                .keys
                .record_of_index_key(lookup.section(), value, &index_key);
            if let Some(record) = inner.read::<RecordState>(&record_key)? {
                found.push(record);
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_come_from_the_body_shapes_sources_write() {
        // Goal: a gift's contact.email, a contact's email or emailAddress are found and
        // normalised; bodies without one, or with a non-email, give none.
        let cases = [
            (
                r#"{"amount":"1","contact":{"email":" Ann@Example.ORG "}}"#,
                Some("ann@example.org"),
            ),
            (
                r#"{"email":"bob@example.org","firstName":"B"}"#,
                Some("bob@example.org"),
            ),
            (
                r#"{"emailAddress":"cy@example.org"}"#,
                Some("cy@example.org"),
            ),
            (r#"{"contact":{"name":"No Mail"}}"#, None),
            (r#"{"email":"not an email"}"#, None),
            (r#"{"email":"a\u0000@b"}"#, None),
            ("not json", None),
        ];
        for (body, want) in cases {
            assert_eq!(email_of_body(body).as_deref(), want, "{body}");
        }
    }

    #[test]
    fn virtuous_ids_are_trimmed_and_checked() {
        // Goal: ids are trimmed; empty or control-character ids are refused.
        assert_eq!(normalise_virtuous_id(" 123 ").as_deref(), Some("123"));
        assert_eq!(normalise_virtuous_id("  "), None);
        assert_eq!(normalise_virtuous_id("1\n2"), None);
    }
}
