//! Mailchimp audiences (docs/polling.md "Mailchimp"), hybrid: the audience webhook and the
//! member poll both become one [`MemberVersion`] and then one contact [`Command`].
//!
//! Pure: no I/O and no clock. The ingress parses a delivery with [`webhook::parse_form`];
//! the poller ([`poller`], the one module here that talks HTTP) reads members with
//! [`member::parse_member`]. Both end in [`MemberVersion::command`].
//!
//! # The fact key both paths share
//! The record is the member's `unique_email_id` (webhook `data[id]`, the member's
//! `unique_email_id` when polled): it survives an email change, so `upemail` stays one record.
//! The version is the second of the change: the webhook's `fired_at` (`YYYY-MM-DD HH:MM:SS`,
//! UTC) and the member's `last_changed` (ISO 8601 with an offset) name the same second, so
//! both paths build the same idempotency key `mailchimp:contact:{unique_email_id}@{unix s}`
//! and whichever arrives second is a duplicate (that is also what parity counts). Limits:
//! two edits between polls are one poll fact (the poll sees the latest state only); a
//! webhook and a poll match only when they name the same second; several events fired by one
//! edit (a profile change and an unsubscribe in the same second) are one fact, the first to
//! arrive.
//!
//! # Layout
//! - this file: [`MemberVersion`], the contact body, the status rules.
//! - [`webhook`]: the form-encoded audience webhook → [`webhook::WebhookEvent`].
//! - [`member`]: one member of `GET /3.0/lists/{list}/members` → [`MemberVersion`].
//! - [`poller`]: the member poller behind the actors crate's `Poller` port.

pub mod member;
pub mod poller;
#[cfg(test)]
mod tests;
pub mod webhook;

use serde_json::{json, Map, Value};
use steward_actors::store::{EntryFact, Lane, RecordKind};

use super::polling::{versioned_fact_id, EmailStatus};
use super::{idempotency_key, Command};

/// The source name (entries, checkpoints, routes, parity).
pub const SOURCE: &str = "mailchimp";

/// One version of one audience member, as either path saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberVersion {
    /// The member's `unique_email_id`: the record id.
    pub unique_email_id: String,
    /// Unix seconds of the change (`fired_at` / `last_changed`): the version.
    pub changed_at_s: i64,
    /// The address now (after an `upemail`, the new one).
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    /// The audience (list) id.
    pub list_id: String,
    /// Tag names; `None` when the path does not carry them (webhooks).
    pub tags: Option<Vec<String>>,
    /// `None` when the path does not say (`profile` and `upemail` webhooks): the body then
    /// leaves the email status as it is.
    pub status: Option<EmailStatus>,
}

impl MemberVersion {
    /// The fact id of this version: `{unique_email_id}@{unix seconds}`.
    pub fn fact_id(&self) -> String {
        versioned_fact_id(&self.unique_email_id, self.changed_at_s)
    }

    /// The idempotency key both paths share.
    pub fn idempotency_key(&self) -> String {
        idempotency_key(SOURCE, RecordKind::Contact, &self.fact_id())
    }

    /// The Virtuous contact transaction body (docs/polling.md "Mailchimp").
    pub fn body(&self, reference_source: &str) -> Value {
        let mut body = Map::new();
        body.insert("referenceSource".into(), json!(reference_source));
        body.insert("referenceId".into(), json!(self.unique_email_id));
        body.insert("email".into(), json!(self.email));
        if let Some(first_name) = non_blank(self.first_name.as_deref()) {
            body.insert("firstName".into(), json!(first_name));
        }
        if let Some(last_name) = non_blank(self.last_name.as_deref()) {
            body.insert("lastName".into(), json!(last_name));
        }
        body.insert("emailLists".into(), json!([self.list_id]));
        if let Some(tags) = &self.tags {
            let names: Vec<&str> = tags
                .iter()
                .map(|tag| tag.trim())
                .filter(|tag| !tag.is_empty())
                .collect();
            if !names.is_empty() {
                // Virtuous takes tags as one semicolon-separated string.
                body.insert("tags".into(), json!(names.join(";")));
            }
        }
        if let Some(status) = self.status {
            body.insert("customFields".into(), Value::Object(status.custom_fields()));
        }
        Value::Object(body)
    }

    /// The command to queue.
    pub fn command(&self, reference_source: &str) -> Command {
        Command {
            fact: EntryFact {
                kind: RecordKind::Contact,
                source: SOURCE.to_string(),
                source_id: self.unique_email_id.clone(),
                idempotency_key: self.idempotency_key(),
                lane: Lane::Live,
                transaction_source: reference_source.to_string(),
                body_json: self.body(reference_source).to_string(),
            },
            aliases: Vec::new(),
        }
    }
}

fn non_blank(text: Option<&str>) -> Option<&str> {
    text.map(str::trim).filter(|text| !text.is_empty())
}

/// A member's `status` when polled → its email status (`None` for a status we do not know:
/// the body then leaves the status alone rather than guess).
pub fn status_of_member(status: &str) -> Option<EmailStatus> {
    match status {
        "subscribed" => Some(EmailStatus::Subscribed),
        "unsubscribed" => Some(EmailStatus::Unsubscribed),
        "cleaned" => Some(EmailStatus::Cleaned),
        "archived" => Some(EmailStatus::Deleted),
        "pending" | "transactional" => Some(EmailStatus::NotSubscribed),
        _ => None,
    }
}
