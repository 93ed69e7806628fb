//! One member of `GET /3.0/lists/{list_id}/members` → a [`MemberVersion`].

use serde_json::Value;

use super::{status_of_member, MemberVersion};

/// Parses one member. `unique_email_id`, `email_address` and a readable `last_changed` are
/// required (why not, otherwise); `list_id` falls back to the polled list.
pub fn parse_member(member: &Value, polled_list_id: &str) -> Result<MemberVersion, String> {
    let text = |key: &str| {
        member
            .get(key)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|value| !value.is_empty())
    };
    let unique_email_id = text("unique_email_id").ok_or("member without `unique_email_id`")?;
    let last_changed = text("last_changed").ok_or("member without `last_changed`")?;
    let changed_at_s = parse_last_changed(last_changed)
        .ok_or_else(|| format!("`last_changed` {last_changed:?} is not ISO 8601 with an offset"))?;
    let email = text("email_address").ok_or("member without `email_address`")?;
    let merge = |key: &str| {
        member
            .pointer(&format!("/merge_fields/{key}"))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let tags = member.get("tags").and_then(Value::as_array).map(|tags| {
        tags.iter()
            .filter_map(|tag| tag.get("name").and_then(Value::as_str))
            .map(str::to_string)
            .collect()
    });
    Ok(MemberVersion {
        unique_email_id: unique_email_id.to_string(),
        changed_at_s,
        email: email.to_string(),
        first_name: merge("FNAME"),
        last_name: merge("LNAME"),
        list_id: text("list_id").unwrap_or(polled_list_id).to_string(),
        tags,
        status: text("status").and_then(status_of_member),
    })
}

/// ISO 8601 with an offset (`2026-01-02T03:04:05+00:00`) → unix seconds.
pub fn parse_last_changed(text: &str) -> Option<i64> {
    text.parse::<jiff::Timestamp>()
        .ok()
        .map(|at| at.as_second())
}

/// Unix seconds → the `since_last_changed` form (`2026-01-02T03:04:05+00:00`).
pub fn format_last_changed(unix_s: i64) -> String {
    jiff::Timestamp::from_second(unix_s)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .strftime("%Y-%m-%dT%H:%M:%S+00:00")
        .to_string()
}
