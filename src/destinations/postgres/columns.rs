//! The Postgres destination's tables and their typed columns: each read leniently from the
//! record's JSON (a value that does not fit its type is NULL, never an error — the full
//! record is in `record` anyway).

use serde_json::Value;
use steward_actors::pull::ChangeKind;

/// A typed column: its name, SQL type and how it is read from the record.
pub struct Column {
    pub name: &'static str,
    pub sql_type: &'static str,
    pub extract: fn(&Value) -> Value,
}

pub struct Table {
    pub name: &'static str,
    pub columns: &'static [Column],
}

const GIFT_COLUMNS: &[Column] = &[
    Column {
        name: "contact_id",
        sql_type: "text",
        extract: |record| text_of(record.get("contactId")),
    },
    Column {
        name: "amount",
        sql_type: "numeric",
        extract: |record| decimal_of(record.get("amount")),
    },
    Column {
        name: "gift_date",
        sql_type: "date",
        extract: |record| date_of(record.get("giftDate")),
    },
    Column {
        name: "transaction_source",
        sql_type: "text",
        extract: |record| text_of(record.get("transactionSource")),
    },
    Column {
        name: "transaction_id",
        sql_type: "text",
        extract: |record| text_of(record.get("transactionId")),
    },
];

const CONTACT_COLUMNS: &[Column] = &[
    Column {
        name: "name",
        sql_type: "text",
        extract: |record| text_of(record.get("name")),
    },
    Column {
        name: "email",
        sql_type: "text",
        extract: primary_email,
    },
];

const PROJECT_COLUMNS: &[Column] = &[
    Column {
        name: "name",
        sql_type: "text",
        extract: |record| text_of(record.get("name")),
    },
    Column {
        name: "project_code",
        sql_type: "text",
        extract: |record| text_of(record.get("projectCode")),
    },
];

const EVENT_COLUMNS: &[Column] = &[Column {
    name: "name",
    sql_type: "text",
    extract: |record| text_of(record.get("name")),
}];

const CONTACT_NOTE_COLUMNS: &[Column] = &[Column {
    name: "contact_id",
    sql_type: "text",
    extract: |record| text_of(record.get("contactId")),
}];

/// The table of a kind (`gifts`, `contacts`, `projects`, `events`, `contact_notes`).
pub fn table_of(kind: ChangeKind) -> Table {
    match kind {
        ChangeKind::Gift => Table {
            name: "gifts",
            columns: GIFT_COLUMNS,
        },
        ChangeKind::Contact => Table {
            name: "contacts",
            columns: CONTACT_COLUMNS,
        },
        ChangeKind::Project => Table {
            name: "projects",
            columns: PROJECT_COLUMNS,
        },
        ChangeKind::Event => Table {
            name: "events",
            columns: EVENT_COLUMNS,
        },
        ChangeKind::ContactNote => Table {
            name: "contact_notes",
            columns: CONTACT_NOTE_COLUMNS,
        },
    }
}

/// A string or number as text; anything else NULL.
pub fn text_of(value: Option<&Value>) -> Value {
    match value {
        Some(Value::String(text)) if !text.is_empty() => Value::String(text.clone()),
        Some(Value::Number(number)) => Value::String(number.to_string()),
        _ => Value::Null,
    }
}

/// A finite decimal (number, or a string such as `"12.50"`) as text for `numeric`.
pub fn decimal_of(value: Option<&Value>) -> Value {
    let text = match value {
        Some(Value::Number(number)) => number.to_string(),
        Some(Value::String(text)) => text.trim().to_string(),
        _ => return Value::Null,
    };
    let looks_decimal = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
        && text.parse::<f64>().is_ok_and(f64::is_finite);
    if looks_decimal {
        Value::String(text)
    } else {
        Value::Null
    }
}

/// `YYYY-MM-DD…` (a date or an ISO 8601 date-time) or `MM/DD/YYYY` → `YYYY-MM-DD`.
pub fn date_of(value: Option<&Value>) -> Value {
    let Some(text) = value.and_then(Value::as_str).map(str::trim) else {
        return Value::Null;
    };
    let iso = text
        .get(..10)
        .and_then(|head| head.parse::<jiff::civil::Date>().ok());
    let us = || {
        let mut parts = text.split('/');
        let month: i8 = parts.next()?.parse().ok()?;
        let day: i8 = parts.next()?.parse().ok()?;
        let year: i16 = parts.next()?.get(..4)?.parse().ok()?;
        jiff::civil::Date::new(year, month, day).ok()
    };
    // Postgres refuses year 0 and negative years (jiff reads them): no typed date then,
    // rather than a refused row.
    match iso.or_else(us).filter(|date| date.year() >= 1) {
        Some(date) => Value::String(date.to_string()),
        None => Value::Null,
    }
}

/// A timestamp with an offset, or a date-time without one (Virtuous's
/// `modifiedDateTimeUtc`: UTC), as RFC 3339; `None` when unreadable.
pub fn timestamp_rfc3339(text: &str) -> Option<String> {
    let text = text.trim();
    if let Ok(timestamp) = text.parse::<jiff::Timestamp>() {
        return Some(timestamp.to_string());
    }
    let civil = text.parse::<jiff::civil::DateTime>().ok()?;
    let timestamp = civil.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp();
    Some(timestamp.to_string())
}

/// Unix milliseconds as RFC 3339.
pub fn timestamp_of_ms(ms: u64) -> Option<String> {
    let ms = i64::try_from(ms).ok()?;
    Some(jiff::Timestamp::from_millisecond(ms).ok()?.to_string())
}

/// The primary email of a contact: the primary individual's primary email method first,
/// then any email method, then a top-level `email`.
fn primary_email(record: &Value) -> Value {
    let mut individuals: Vec<&Value> = record
        .get("contactIndividuals")
        .and_then(Value::as_array)
        .map(|list| list.iter().collect())
        .unwrap_or_default();
    individuals.sort_by_key(|individual| !is_primary(individual));
    for individual in individuals {
        let mut methods: Vec<&Value> = individual
            .get("contactMethods")
            .and_then(Value::as_array)
            .map(|list| list.iter().collect())
            .unwrap_or_default();
        methods.sort_by_key(|method| !is_primary(method));
        for method in methods {
            let is_email = method
                .get("type")
                .and_then(Value::as_str)
                .is_some_and(|kind| kind.to_ascii_lowercase().contains("email"));
            if let (true, Some(value)) = (is_email, method.get("value").and_then(Value::as_str)) {
                if !value.trim().is_empty() {
                    return Value::String(value.trim().to_string());
                }
            }
        }
    }
    text_of(record.get("email"))
}

fn is_primary(value: &Value) -> bool {
    value.get("isPrimary").and_then(Value::as_bool) == Some(true)
}
