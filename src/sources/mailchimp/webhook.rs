//! The audience webhook's body (`application/x-www-form-urlencoded`, bracketed keys:
//! `type`, `fired_at`, `data[id]`, `data[list_id]`, `data[email]`, `data[merges][FNAME]`, …)
//! → a [`MemberVersion`] or a reason to ignore the event. Mailchimp signs nothing: the
//! route's `?key=` is the proof of origin.

use std::collections::HashMap;

use super::MemberVersion;
use crate::sources::polling::EmailStatus;
use crate::sources::SourceError;

/// What one delivery says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookEvent {
    /// A change to a member: one contact fact.
    Member {
        event_type: String,
        version: MemberVersion,
    },
    /// Nothing for Virtuous (`campaign`, an unknown type, a member event without an id).
    Ignored { event_type: String, reason: String },
}

/// Parses one delivery. `type` and `fired_at` are required everywhere; a member event also
/// needs `data[list_id]` and an email. A member event without `data[id]` is ignored, not
/// refused: a retry would not add it, and the member poll records that change anyway.
pub fn parse_form(raw: &[u8]) -> Result<WebhookEvent, SourceError> {
    if std::str::from_utf8(raw).is_err() {
        return Err(SourceError::Malformed(
            "the body is not UTF-8 form data".into(),
        ));
    }
    let mut fields: HashMap<String, String> = HashMap::new();
    for (key, value) in form_urlencoded::parse(raw) {
        // The first of a repeated key wins (Mailchimp sends each once).
        fields.entry(key.into_owned()).or_insert(value.into_owned());
    }
    let field = |key: &str| {
        fields
            .get(key)
            .map(|value| value.trim())
            .filter(|value| !value.is_empty())
    };
    let Some(event_type) = field("type") else {
        return Err(SourceError::Malformed(
            "`type` is missing (expected a form-encoded Mailchimp audience event)".into(),
        ));
    };
    let event_type = event_type.to_string();
    let Some(fired_at) = field("fired_at") else {
        return Err(SourceError::Malformed("`fired_at` is missing".into()));
    };
    let changed_at_s = parse_fired_at(fired_at).ok_or_else(|| {
        SourceError::Malformed(format!(
            "`fired_at` {:?} is not `YYYY-MM-DD HH:MM:SS`",
            fired_at.chars().take(40).collect::<String>()
        ))
    })?;
    let status = match event_type.as_str() {
        "subscribe" => Some(EmailStatus::Subscribed),
        "unsubscribe" => Some(match field("data[action]") {
            Some("delete") => EmailStatus::Deleted,
            _ => EmailStatus::Unsubscribed,
        }),
        "cleaned" => Some(EmailStatus::Cleaned),
        // These carry no status: the body leaves it as it is.
        "profile" | "upemail" => None,
        "campaign" => {
            return Ok(WebhookEvent::Ignored {
                event_type,
                reason: "campaign events carry no contact".into(),
            })
        }
        _ => {
            let reason = format!(
                "unhandled event type `{}`",
                event_type.chars().take(40).collect::<String>()
            );
            return Ok(WebhookEvent::Ignored { event_type, reason });
        }
    };
    // Real `upemail` deliveries are documented with `data[new_id]` (assumed to be the same
    // short id as `data[id]`).
    let Some(unique_email_id) = field("data[id]").or_else(|| field("data[new_id]")) else {
        return Ok(WebhookEvent::Ignored {
            event_type,
            reason: "no member id (`data[id]`): the member poll records this change".into(),
        });
    };
    let Some(list_id) = field("data[list_id]") else {
        return Err(SourceError::Malformed("`data[list_id]` is missing".into()));
    };
    let email = if event_type == "upemail" {
        field("data[new_email]").or_else(|| field("data[email]"))
    } else {
        field("data[email]").or_else(|| field("data[merges][EMAIL]"))
    };
    let Some(email) = email else {
        return Err(SourceError::Malformed(format!(
            "`{event_type}` without an email (`data[email]`)"
        )));
    };
    let version = MemberVersion {
        unique_email_id: unique_email_id.to_string(),
        changed_at_s,
        email: email.to_string(),
        first_name: field("data[merges][FNAME]").map(str::to_string),
        last_name: field("data[merges][LNAME]").map(str::to_string),
        list_id: list_id.to_string(),
        tags: None,
        status,
    };
    Ok(WebhookEvent::Member {
        event_type,
        version,
    })
}

/// `YYYY-MM-DD HH:MM:SS` in UTC → unix seconds.
pub fn parse_fired_at(text: &str) -> Option<i64> {
    let civil = jiff::civil::DateTime::strptime("%Y-%m-%d %H:%M:%S", text).ok()?;
    let zoned = civil.to_zoned(jiff::tz::TimeZone::UTC).ok()?;
    Some(zoned.timestamp().as_second())
}
