//! Generic fundraising / auction / event platforms (docs/ingress.md "Generic platforms"):
//! HMAC-signed JSON webhooks, configured per tenant (`sources.platforms.{name}`).
//!
//! Pure, like the rest of `sources`: [`verify_signature`] on the raw bytes, [`parse_event`],
//! then [`map_event`] → a gift or contact transaction [`Command`], or `Ignored`.
//!
//! # Mapping rules (docs/ingress.md repeats them for operators)
//! - `events.{type}.fields` maps a Virtuous field (dotted for nesting: `contact.email`) to a
//!   JSON Pointer into the event. Absent or `null` values are left out.
//! - Gift: `amount` is required (> 0): an integer in minor units (`amount_unit = "minor"`,
//!   converted with the currency's decimals) or a number / decimal string in major units.
//!   The currency is the mapped `currencyCode` (default `usd` for the decimals; the field is
//!   then not sent). `transactionSource` is always the source's configured value (mapping it
//!   is an error); `transactionId` is the mapped `transactionId`, else the event id.
//!   `giftDate`: mapped (a `YYYY-MM-DD…` string is cut to the date, unix seconds become the
//!   date in the tenant's time zone), else the day of receipt in the tenant's time zone.
//!   `giftType`: mapped, else `Other`. The contact needs `email`, `firstName` + `lastName`,
//!   `name`, `id` or `referenceId`.
//! - Contact: `referenceId` is required; `referenceSource` is the configured
//!   `transaction_source`. Each event is its own fact (`{referenceId}@{event id}`), like
//!   Stripe customer updates — except on a platform that is also polled (`poll`) when the
//!   event carries the record's update time at `poll.item_updated_at`: the fact is then that
//!   version of the person, [`versioned_fact_id`]`(referenceId, update time in unix
//!   seconds)`, the id the poll path gives it too, so a contact seen by both paths is one
//!   fact (docs/polling.md "Polled platforms").
//!
//! The poll path (`platform_poll.rs`) maps each listed item with the same functions:
//! [`event_from_value`] (the item as an event, its id at `poll.item_id`) and [`map_event`].

use hmac::{Hmac, Mac};
use jiff::tz::TimeZone;
use serde_json::{json, Map, Value};
use sha2::Sha256;
use steward_actors::store::{EntryFact, Lane, RecordKind};
use subtle::{Choice, ConstantTimeEq};

use super::amount::minor_to_major;
use super::polling::versioned_fact_id;
use super::{idempotency_key, Command, SourceError};
use crate::tenant::PlatformSettings;

/// Why a platform delivery was refused (HTTP 401 `bad_signature` / `stale_timestamp`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlatformSignatureError {
    #[error("the {0} header is missing")]
    MissingHeader(String),
    #[error("the signature does not match the source's secret")]
    NoMatch,
    #[error("the {0} header is not an integer of unix seconds")]
    BadTimestamp(String),
    #[error("the signature timestamp is {age_s} s away from now (tolerance {tolerance_s} s)")]
    StaleTimestamp { age_s: u64, tolerance_s: u64 },
}

/// Verifies a delivery on its raw bytes. `header` reads a request header by name. The
/// signature is checked before the timestamp (a caller without the secret learns only
/// `NoMatch`), against `secret` and, during a rotation, `previous_secret`, in constant time.
pub fn verify_signature<'h>(
    settings: &PlatformSettings,
    header: impl Fn(&str) -> Option<&'h str>,
    raw_body: &[u8],
    now_unix_s: i64,
) -> Result<(), PlatformSignatureError> {
    let signature_text = header(&settings.signature_header)
        .ok_or_else(|| PlatformSignatureError::MissingHeader(settings.signature_header.clone()))?
        .trim();
    let timestamp_text = match &settings.timestamp_header {
        Some(name) => Some(
            header(name)
                .ok_or_else(|| PlatformSignatureError::MissingHeader(name.clone()))?
                .trim(),
        ),
        None => None,
    };
    // A missing prefix or undecodable value can never match: refuse like a wrong one.
    let candidate = signature_text
        .strip_prefix(settings.signature_prefix.as_str())
        .and_then(|encoded| decode_signature(&settings.encoding, encoded.trim()))
        .ok_or(PlatformSignatureError::NoMatch)?;
    let mut any_match = Choice::from(0);
    for secret in [&settings.secret, &settings.previous_secret]
        .into_iter()
        .flatten()
        .filter(|secret| !secret.is_empty())
    {
        let expected = digest(secret, &settings.signed_payload, timestamp_text, raw_body);
        any_match |= expected.as_slice().ct_eq(candidate.as_slice());
    }
    if !bool::from(any_match) {
        return Err(PlatformSignatureError::NoMatch);
    }
    if let (Some(text), Some(name)) = (timestamp_text, &settings.timestamp_header) {
        let timestamp_s: i64 = text
            .parse()
            .map_err(|_| PlatformSignatureError::BadTimestamp(name.clone()))?;
        let age_s = now_unix_s.abs_diff(timestamp_s);
        if age_s > settings.tolerance_s {
            return Err(PlatformSignatureError::StaleTimestamp {
                age_s,
                tolerance_s: settings.tolerance_s,
            });
        }
    }
    Ok(())
}

fn decode_signature(encoding: &str, encoded: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    match encoding {
        "base64" => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok(),
        _ => hex::decode(encoded).ok(),
    }
}

/// HMAC-SHA256 of the signed payload: the body, or `{timestamp}.{body}`.
fn digest(secret: &str, signed_payload: &str, timestamp: Option<&str>, raw_body: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    if signed_payload != "body" {
        mac.update(timestamp.unwrap_or_default().as_bytes());
        mac.update(b".");
    }
    mac.update(raw_body);
    mac.finalize().into_bytes().to_vec()
}

/// Computes the signature header value a platform would send (tests, demos).
pub fn sign(
    settings: &PlatformSettings,
    secret: &str,
    timestamp_s: Option<i64>,
    raw_body: &[u8],
) -> String {
    use base64::Engine;
    let timestamp = timestamp_s.map(|t| t.to_string());
    let bytes = digest(
        secret,
        &settings.signed_payload,
        timestamp.as_deref(),
        raw_body,
    );
    let encoded = match settings.encoding.as_str() {
        "base64" => base64::engine::general_purpose::STANDARD.encode(bytes),
        _ => hex::encode(bytes),
    };
    format!("{}{encoded}", settings.signature_prefix)
}

/// A parsed delivery: its id and type (by the configured pointers) and the whole document.
#[derive(Debug, Clone, PartialEq)]
pub struct PlatformEvent {
    pub id: String,
    pub event_type: String,
    pub root: Value,
    /// The record's update time (unix seconds) at `poll.item_updated_at`, read only when the
    /// platform is also polled: a contact's fact id is then versioned (module docs).
    pub version_unix_s: Option<i64>,
}

/// Parses the body; the event id (string or integer) and type must be present.
pub fn parse_event(settings: &PlatformSettings, raw: &[u8]) -> Result<PlatformEvent, SourceError> {
    let root: Value = serde_json::from_slice(raw)
        .map_err(|err| SourceError::Malformed(format!("not JSON: {err}")))?;
    event_from_value(settings, root, &settings.event_id)
}

/// A JSON document of the platform as an event: a webhook body (id at `event_id`) or a
/// polled item (id at `poll.item_id`); the type is at `event_type` either way.
pub fn event_from_value(
    settings: &PlatformSettings,
    root: Value,
    id_pointer: &str,
) -> Result<PlatformEvent, SourceError> {
    let id = match id_at(&root, id_pointer) {
        Some(id) => id,
        None => {
            return Err(SourceError::Malformed(format!(
                "no event id at `{id_pointer}` (a non-empty string or an integer)"
            )))
        }
    };
    let event_type = match root.pointer(&settings.event_type) {
        Some(Value::String(event_type)) if !event_type.is_empty() => event_type.clone(),
        _ => {
            return Err(SourceError::Malformed(format!(
                "no event type at `{}` (a non-empty string)",
                settings.event_type
            )))
        }
    };
    let version_unix_s = settings
        .poll
        .as_ref()
        .and_then(|poll| root.pointer(&poll.item_updated_at))
        .and_then(version_ms_of)
        .map(|version_ms| (version_ms / 1000) as i64);
    Ok(PlatformEvent {
        id,
        event_type,
        root,
        version_unix_s,
    })
}

/// A non-empty string or an integer at `pointer`, as text (event and item ids).
pub fn id_at(root: &Value, pointer: &str) -> Option<String> {
    match root.pointer(pointer) {
        Some(Value::String(id)) if !id.is_empty() => Some(id.clone()),
        Some(Value::Number(number)) if number.is_u64() || number.is_i64() => {
            Some(number.to_string())
        }
        _ => None,
    }
}

/// Numbers at or above this are unix milliseconds, below it unix seconds (1e11 s is the
/// year 5138; 1e11 ms is 1973).
const UNIX_MS_THRESHOLD: f64 = 1e11;

/// A record's update time in unix ms: an ISO 8601 instant (offset required), or a number of
/// unix seconds or milliseconds (told apart by size); `None` for anything else or a time
/// before 1970.
pub fn version_ms_of(value: &Value) -> Option<u64> {
    let ms = match value {
        Value::String(text) => text
            .trim()
            .parse::<jiff::Timestamp>()
            .ok()?
            .as_millisecond() as f64,
        Value::Number(number) => {
            let number = number.as_f64()?;
            if number >= UNIX_MS_THRESHOLD {
                number
            } else {
                number * 1000.0
            }
        }
        _ => return None,
    };
    (ms.is_finite() && ms >= 0.0 && ms < u64::MAX as f64).then_some(ms.floor() as u64)
}

/// What one platform event means for Virtuous.
#[derive(Debug, Clone, PartialEq)]
pub enum PlatformMapped {
    /// Answered `200`, counted, nothing queued (no mapping for this event type).
    Ignored {
        reason: String,
    },
    Command(Command),
}

/// Maps a parsed event of platform `source` (the ingress key, e.g. `auction-co`).
/// `now_unix_s` dates gifts without a mapped `giftDate`.
pub fn map_event(
    source: &str,
    settings: &PlatformSettings,
    event: &PlatformEvent,
    tz: &TimeZone,
    now_unix_s: i64,
) -> Result<PlatformMapped, SourceError> {
    let Some(mapping) = settings.events.get(&event.event_type) else {
        return Ok(PlatformMapped::Ignored {
            reason: format!("no mapping for event type `{}`", event.event_type),
        });
    };
    let error = |reason: String| SourceError::Mapping {
        event_type: event.event_type.clone(),
        object_id: event.id.clone(),
        reason,
    };
    let mut body = Map::new();
    for (field, pointer) in &mapping.fields {
        match event.root.pointer(pointer) {
            None | Some(Value::Null) => {}
            Some(value) => insert_dotted(&mut body, field, value.clone()).map_err(&error)?,
        }
    }
    match mapping.kind.as_str() {
        "contact" => map_contact(source, settings, event, body).map_err(error),
        _ => map_gift(source, settings, event, body, tz, now_unix_s).map_err(error),
    }
}

fn map_gift(
    source: &str,
    settings: &PlatformSettings,
    event: &PlatformEvent,
    mut body: Map<String, Value>,
    tz: &TimeZone,
    now_unix_s: i64,
) -> Result<PlatformMapped, String> {
    if body.contains_key("transactionSource") {
        return Err(
            "`transactionSource` comes from the source's configuration; do not map it".into(),
        );
    }
    let currency = currency_code(&body)?;
    if let Some(code) = &currency {
        body.insert("currencyCode".into(), json!(code));
    }
    let decimals_currency = currency.as_deref().unwrap_or("usd");
    let amount = match body.get("amount") {
        None => return Err("`amount` is required and was not found in the event".into()),
        Some(value) => amount_text(value, &settings.amount_unit, decimals_currency)?,
    };
    body.insert("amount".into(), json!(amount));
    let transaction_id = match body.get("transactionId") {
        None => event.id.clone(),
        Some(Value::String(id)) if !id.is_empty() => id.clone(),
        Some(Value::Number(number)) => number.to_string(),
        Some(other) => {
            return Err(format!(
                "`transactionId` must be a string or number, got {other}"
            ))
        }
    };
    body.insert("transactionId".into(), json!(transaction_id));
    body.insert(
        "transactionSource".into(),
        json!(settings.transaction_source),
    );
    let gift_date = match body.get("giftDate") {
        None => date_of(now_unix_s, tz).ok_or("the clock is out of range")?,
        Some(value) => gift_date(value, tz)?,
    };
    body.insert("giftDate".into(), json!(gift_date));
    body.entry("giftType").or_insert_with(|| json!("Other"));
    if !contact_is_identifiable(&body) {
        return Err("the contact needs `contact.email`, `contact.firstName` + `contact.lastName`, `contact.name`, `contact.id` or `contact.referenceId`".into());
    }
    let aliases = if transaction_id == event.id {
        Vec::new()
    } else {
        vec![event.id.clone()]
    };
    Ok(PlatformMapped::Command(Command {
        fact: EntryFact {
            kind: RecordKind::Gift,
            source: source.to_string(),
            idempotency_key: idempotency_key(source, RecordKind::Gift, &transaction_id),
            source_id: transaction_id,
            lane: Lane::Live,
            transaction_source: settings.transaction_source.clone(),
            body_json: Value::Object(body).to_string(),
        },
        aliases,
    }))
}

/// The mapped `currencyCode`, upper-cased; absent is `None`.
fn currency_code(body: &Map<String, Value>) -> Result<Option<String>, String> {
    match body.get("currencyCode") {
        None => Ok(None),
        // Three ASCII letters: `US|` or `a b` would be sent to Virtuous as a currency code.
        Some(Value::String(code))
            if code.len() == 3 && code.bytes().all(|b| b.is_ascii_alphabetic()) =>
        {
            Ok(Some(code.to_ascii_uppercase()))
        }
        Some(other) => Err(format!(
            "`currencyCode` must be a three-letter code, got {other}"
        )),
    }
}

/// Virtuous needs a donor it can find or create: an email, a full name, a name, an id or a
/// reference id.
fn contact_is_identifiable(body: &Map<String, Value>) -> bool {
    body.get("contact")
        .and_then(Value::as_object)
        .is_some_and(|contact| {
            let has = |key: &str| contact.get(key).is_some_and(|value| !value.is_null());
            has("email")
                || has("name")
                || has("id")
                || has("referenceId")
                || (has("firstName") && has("lastName"))
        })
}

fn map_contact(
    source: &str,
    settings: &PlatformSettings,
    event: &PlatformEvent,
    mut body: Map<String, Value>,
) -> Result<PlatformMapped, String> {
    if body.contains_key("referenceSource") {
        return Err(
            "`referenceSource` comes from the source's configuration; do not map it".into(),
        );
    }
    let reference_id = match body.get("referenceId") {
        Some(Value::String(id)) if !id.is_empty() => id.clone(),
        Some(Value::Number(number)) => number.to_string(),
        _ => return Err("`referenceId` is required (the platform's id of the person)".into()),
    };
    body.insert("referenceId".into(), json!(reference_id));
    body.insert("referenceSource".into(), json!(settings.transaction_source));
    let fact_id = match event.version_unix_s {
        Some(version_unix_s) => versioned_fact_id(&reference_id, version_unix_s),
        None => format!("{reference_id}@{}", event.id),
    };
    Ok(PlatformMapped::Command(Command {
        fact: EntryFact {
            kind: RecordKind::Contact,
            source: source.to_string(),
            idempotency_key: idempotency_key(source, RecordKind::Contact, &fact_id),
            source_id: reference_id,
            lane: Lane::Live,
            transaction_source: settings.transaction_source.clone(),
            body_json: Value::Object(body).to_string(),
        },
        aliases: vec![event.id.clone()],
    }))
}

/// Sets `a.b.c` in `body`, creating objects on the way; a clash with a non-object fails.
fn insert_dotted(body: &mut Map<String, Value>, field: &str, value: Value) -> Result<(), String> {
    let mut parts = field.split('.').peekable();
    let mut current = body;
    while let Some(part) = parts.next() {
        if part.is_empty() {
            return Err(format!("field name `{field}` has an empty part"));
        }
        if parts.peek().is_none() {
            current.insert(part.to_string(), value);
            return Ok(());
        }
        let next = current
            .entry(part.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        current = next
            .as_object_mut()
            .ok_or_else(|| format!("field `{field}` nests under a field that is not an object"))?;
    }
    Ok(())
}

/// The amount as Virtuous's decimal string in major units; must be > 0.
fn amount_text(value: &Value, unit: &str, currency: &str) -> Result<String, String> {
    let text = match value {
        Value::Number(number) => number.to_string(),
        Value::String(text) => text.trim().to_string(),
        other => {
            return Err(format!(
                "`amount` must be a number or a numeric string, got {other}"
            ))
        }
    };
    if unit == "minor" {
        let minor: i64 = text.parse().map_err(|_| {
            format!("`amount` `{text}` is not an integer of minor units (amount_unit = \"minor\")")
        })?;
        if minor <= 0 {
            return Err(format!("`amount` must be positive, got {minor}"));
        }
        return Ok(minor_to_major(minor, currency));
    }
    let (whole, fraction) = text.split_once('.').unwrap_or((text.as_str(), ""));
    let is_decimal = !whole.is_empty()
        && whole.bytes().all(|byte| byte.is_ascii_digit())
        && fraction.bytes().all(|byte| byte.is_ascii_digit());
    if !is_decimal || text.bytes().all(|byte| byte == b'0' || byte == b'.') {
        return Err(format!(
            "`amount` `{text}` is not a positive decimal (amount_unit = \"major\")"
        ));
    }
    Ok(text)
}

fn gift_date(value: &Value, tz: &TimeZone) -> Result<String, String> {
    match value {
        Value::String(text) if is_iso_date_prefix(text) => {
            // A real calendar day: `2025-02-30` has the shape and would be sent to Virtuous.
            let date = &text[..10];
            date.parse::<jiff::civil::Date>()
                .map(|_| date.to_string())
                .map_err(|_| format!("`giftDate` `{date}` is not a calendar date"))
        }
        Value::Number(number) => number
            .as_i64()
            .and_then(|seconds| date_of(seconds, tz))
            .ok_or_else(|| format!("`giftDate` {number} is not unix seconds")),
        other => Err(format!(
            "`giftDate` must be `YYYY-MM-DD…` or unix seconds, got {other}"
        )),
    }
}

fn is_iso_date_prefix(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() >= 10
        && bytes[4] == b'-'
        && bytes[7] == b'-'
        && [0, 1, 2, 3, 5, 6, 8, 9]
            .iter()
            .all(|&i| bytes[i].is_ascii_digit())
}

fn date_of(unix_s: i64, tz: &TimeZone) -> Option<String> {
    let timestamp = jiff::Timestamp::from_second(unix_s).ok()?;
    Some(timestamp.to_zoned(tz.clone()).date().to_string())
}

#[cfg(test)]
mod tests;
