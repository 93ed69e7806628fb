//! Contact and Gift queries: groups OR'ed, conditions inside a group AND'ed; no groups = no
//! filter. Date values are `MM/DD/YYYY` (also `YYYY-MM-DD` or an ISO date-time); a date-only
//! value compares calendar days (UTC), a date-time compares instants — unless the org's
//! `query_date_granularity` is `day`: then every `Last Modified Date` / `Create Date` value is
//! truncated to its UTC day (what real Virtuous may do).

use std::cmp::Ordering;

use jiff::civil::Date;
use serde::Deserialize;
use serde_json::Value;

use super::models::{parse_gift_date, parse_us_date, utc_date, value_text};
use super::org::OrgState;
use super::records::{contact_emails, contact_references, Record};
use super::DateGranularity;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct QueryBody {
    pub(crate) groups: Option<Vec<Group>>,
    pub(crate) sort_by: Option<String>,
    pub(crate) descending: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Group {
    pub(crate) conditions: Vec<Condition>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Condition {
    pub(crate) parameter: String,
    pub(crate) operator: String,
    pub(crate) value: Option<Value>,
    pub(crate) secondary_value: Option<Value>,
    pub(crate) values: Option<Vec<Value>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordKind {
    Gift,
    Contact,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parameter {
    Id,
    LastModifiedDate,
    CreateDate,
    GiftDate,
    TransactionSource,
    TransactionId,
    EmailAddress,
    ContactId,
    Amount,
    GiftType,
    Name,
    ReferenceSource,
    ReferenceId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldKind {
    Text,
    Number,
    Instant,
    Day,
}

impl Parameter {
    fn parse(name: &str, kind: RecordKind) -> Option<Parameter> {
        let normalized: String = name
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_lowercase();
        let parameter = match normalized.as_str() {
            "id" => Parameter::Id,
            "giftid" if kind == RecordKind::Gift => Parameter::Id,
            "lastmodifieddate" | "modifieddate" => Parameter::LastModifiedDate,
            "createdate" | "createddate" => Parameter::CreateDate,
            "giftdate" if kind == RecordKind::Gift => Parameter::GiftDate,
            "transactionsource" if kind == RecordKind::Gift => Parameter::TransactionSource,
            "transactionid" if kind == RecordKind::Gift => Parameter::TransactionId,
            "emailaddress" | "email" => Parameter::EmailAddress,
            "contactid" => Parameter::ContactId,
            "amount" | "giftamount" if kind == RecordKind::Gift => Parameter::Amount,
            "gifttype" if kind == RecordKind::Gift => Parameter::GiftType,
            "name" | "contactname" => Parameter::Name,
            "referencesource" if kind == RecordKind::Contact => Parameter::ReferenceSource,
            "referenceid" if kind == RecordKind::Contact => Parameter::ReferenceId,
            _ => return None,
        };
        Some(parameter)
    }

    fn kind(self) -> FieldKind {
        match self {
            Parameter::Id | Parameter::ContactId | Parameter::Amount => FieldKind::Number,
            Parameter::LastModifiedDate | Parameter::CreateDate => FieldKind::Instant,
            Parameter::GiftDate => FieldKind::Day,
            _ => FieldKind::Text,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    Is,
    IsNot,
    GreaterThan,
    LessThan,
    AtLeast,
    AtMost,
    Between,
    Contains,
    DoesNotContain,
    StartsWith,
    IsAnyOf,
    IsNoneOf,
    IsKnown,
    IsNotKnown,
}

impl Operator {
    fn parse(name: &str) -> Option<Operator> {
        let normalized: String = name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        Some(match normalized.as_str() {
            "is" | "equals" | "equalto" => Operator::Is,
            "isnot" | "notequal" | "notequals" | "doesnotequal" => Operator::IsNot,
            "after" | "greaterthan" => Operator::GreaterThan,
            "before" | "lessthan" => Operator::LessThan,
            "onorafter" | "greaterthanorequal" | "greaterthanorequalto" => Operator::AtLeast,
            "onorbefore" | "lessthanorequal" | "lessthanorequalto" => Operator::AtMost,
            "between" => Operator::Between,
            "contains" => Operator::Contains,
            "doesnotcontain" | "notcontains" => Operator::DoesNotContain,
            "startswith" => Operator::StartsWith,
            "isanyof" | "in" => Operator::IsAnyOf,
            "isnoneof" | "notin" => Operator::IsNoneOf,
            "isknown" | "isnotempty" | "hasvalue" => Operator::IsKnown,
            "isnotknown" | "isempty" | "isunknown" => Operator::IsNotKnown,
            _ => return None,
        })
    }
}

/// A value on either side of a comparison.
#[derive(Debug, Clone, PartialEq)]
enum Scalar {
    /// Lower-cased: text comparisons ignore case.
    Text(String),
    Number(f64),
    Instant(u64),
    Day(Date),
}

fn compare(left: &Scalar, right: &Scalar) -> Option<Ordering> {
    match (left, right) {
        (Scalar::Text(a), Scalar::Text(b)) => Some(a.cmp(b)),
        (Scalar::Number(a), Scalar::Number(b)) => a.partial_cmp(b),
        (Scalar::Instant(a), Scalar::Instant(b)) => Some(a.cmp(b)),
        (Scalar::Instant(a), Scalar::Day(b)) => Some(utc_date(*a).cmp(b)),
        (Scalar::Day(a), Scalar::Day(b)) => Some(a.cmp(b)),
        (Scalar::Day(a), Scalar::Instant(b)) => Some(a.cmp(&utc_date(*b))),
        _ => None,
    }
}

fn parse_bound(value: &Value, kind: FieldKind) -> Option<Scalar> {
    let text = value_text(value)?;
    let text = text.trim();
    match kind {
        FieldKind::Text => Some(Scalar::Text(text.to_ascii_lowercase())),
        FieldKind::Number => text.parse().ok().map(Scalar::Number),
        FieldKind::Day => parse_gift_date(text).map(Scalar::Day),
        FieldKind::Instant => {
            if let Some(date) = parse_us_date(text) {
                return Some(Scalar::Day(date));
            }
            if text.len() == 10 {
                return text.parse::<Date>().ok().map(Scalar::Day);
            }
            let instant = text.parse::<jiff::Timestamp>().ok().or_else(|| {
                let civil = text.parse::<jiff::civil::DateTime>().ok()?;
                civil
                    .to_zoned(jiff::tz::TimeZone::UTC)
                    .ok()
                    .map(|z| z.timestamp())
            })?;
            Some(Scalar::Instant(instant.as_millisecond().max(0) as u64))
        }
    }
}

struct Compiled {
    parameter: Parameter,
    operator: Operator,
    value: Option<Scalar>,
    secondary: Option<Scalar>,
    values: Vec<Scalar>,
}

/// A date-time bound cut to its UTC day (day granularity).
fn to_day(scalar: Scalar) -> Scalar {
    match scalar {
        Scalar::Instant(ms) => Scalar::Day(utc_date(ms)),
        other => other,
    }
}

impl QueryBody {
    /// Whether a condition compares `Last Modified Date` or `Create Date` (what day
    /// granularity changes).
    pub(crate) fn has_date_condition(&self, kind: RecordKind) -> bool {
        self.groups
            .iter()
            .flatten()
            .flat_map(|group| &group.conditions)
            .any(|condition| {
                Parameter::parse(&condition.parameter, kind)
                    .is_some_and(|parameter| parameter.kind() == FieldKind::Instant)
            })
    }
}

fn compile(
    condition: &Condition,
    kind: RecordKind,
    granularity: DateGranularity,
) -> Result<Compiled, String> {
    let parameter = Parameter::parse(&condition.parameter, kind)
        .ok_or_else(|| format!("Unknown query parameter '{}'.", condition.parameter))?;
    let operator = Operator::parse(&condition.operator)
        .ok_or_else(|| format!("Unknown query operator '{}'.", condition.operator))?;
    let field_kind = parameter.kind();
    let bound = |value: &Option<Value>, what: &str| -> Result<Option<Scalar>, String> {
        match value {
            None | Some(Value::Null) => Ok(None),
            Some(value) => parse_bound(value, field_kind).map(Some).ok_or_else(|| {
                format!(
                    "The {what} '{value}' is not valid for '{}'.",
                    condition.parameter
                )
            }),
        }
    };
    let value = bound(&condition.value, "value")?;
    let secondary = bound(&condition.secondary_value, "secondaryValue")?;
    let mut values = Vec::new();
    for item in condition.values.iter().flatten() {
        if let Some(scalar) = bound(&Some(item.clone()), "value")? {
            values.push(scalar);
        }
    }
    let needs_value = !matches!(
        operator,
        Operator::IsKnown | Operator::IsNotKnown | Operator::IsAnyOf | Operator::IsNoneOf
    );
    if needs_value && value.is_none() {
        return Err(format!("Operator '{}' needs a value.", condition.operator));
    }
    if operator == Operator::Between && secondary.is_none() {
        return Err("Operator 'Between' needs a secondaryValue.".into());
    }
    if matches!(operator, Operator::IsAnyOf | Operator::IsNoneOf) && values.is_empty() {
        values.extend(value.clone());
    }
    let (value, secondary) =
        if granularity == DateGranularity::Day && field_kind == FieldKind::Instant {
            values = values.into_iter().map(to_day).collect();
            (value.map(to_day), secondary.map(to_day))
        } else {
            (value, secondary)
        };
    Ok(Compiled {
        parameter,
        operator,
        value,
        secondary,
        values,
    })
}

fn number(value: Option<&Value>) -> Vec<Scalar> {
    value
        .and_then(|v| {
            v.as_f64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        })
        .map(Scalar::Number)
        .into_iter()
        .collect()
}

fn text(value: Option<String>) -> Vec<Scalar> {
    value
        .map(|text| Scalar::Text(text.to_ascii_lowercase()))
        .into_iter()
        .collect()
}

/// The record's values for a parameter (several for emails; none when unknown).
fn extract(
    parameter: Parameter,
    kind: RecordKind,
    record: &Record,
    state: &OrgState,
) -> Vec<Scalar> {
    let contact_of_gift = || {
        record
            .doc
            .get("contactId")
            .and_then(Value::as_u64)
            .and_then(|id| state.contacts.records.get(&id))
    };
    match parameter {
        Parameter::Id => vec![Scalar::Number(record.id as f64)],
        Parameter::LastModifiedDate => vec![Scalar::Instant(record.modified_ms)],
        Parameter::CreateDate => vec![Scalar::Instant(record.created_ms)],
        Parameter::GiftDate => record
            .text("giftDate")
            .and_then(|date| parse_gift_date(&date))
            .map(Scalar::Day)
            .into_iter()
            .collect(),
        Parameter::TransactionSource => text(record.text("transactionSource")),
        Parameter::TransactionId => text(record.text("transactionId")),
        Parameter::GiftType => text(record.text("giftType")),
        Parameter::Amount => number(record.doc.get("amount")),
        Parameter::ContactId => match kind {
            RecordKind::Contact => vec![Scalar::Number(record.id as f64)],
            RecordKind::Gift => number(record.doc.get("contactId")),
        },
        Parameter::Name => match kind {
            RecordKind::Contact => text(record.text("name")),
            RecordKind::Gift => text(record.text("contactName")),
        },
        Parameter::EmailAddress => {
            let contact = match kind {
                RecordKind::Contact => Some(record),
                RecordKind::Gift => contact_of_gift(),
            };
            contact
                .map(contact_emails)
                .unwrap_or_default()
                .into_iter()
                .map(Scalar::Text)
                .collect()
        }
        Parameter::ReferenceSource | Parameter::ReferenceId => contact_references(record)
            .into_iter()
            .map(|(source, id)| match parameter {
                Parameter::ReferenceSource => source,
                _ => id,
            })
            .map(|text| Scalar::Text(text.to_ascii_lowercase()))
            .collect(),
    }
}

fn holds(condition: &Compiled, candidates: &[Scalar]) -> bool {
    let any = |test: &dyn Fn(Ordering) -> bool, bound: &Option<Scalar>| {
        bound.as_ref().is_some_and(|bound| {
            candidates
                .iter()
                .any(|candidate| compare(candidate, bound).is_some_and(test))
        })
    };
    let contains = |test: &dyn Fn(&str, &str) -> bool| match &condition.value {
        Some(Scalar::Text(needle)) => candidates.iter().any(|candidate| match candidate {
            Scalar::Text(haystack) => test(haystack, needle),
            _ => false,
        }),
        _ => false,
    };
    let in_values = || {
        candidates.iter().any(|candidate| {
            condition
                .values
                .iter()
                .any(|value| compare(candidate, value) == Some(Ordering::Equal))
        })
    };
    match condition.operator {
        Operator::Is => any(&|o| o == Ordering::Equal, &condition.value),
        Operator::IsNot => !any(&|o| o == Ordering::Equal, &condition.value),
        Operator::GreaterThan => any(&|o| o == Ordering::Greater, &condition.value),
        Operator::LessThan => any(&|o| o == Ordering::Less, &condition.value),
        Operator::AtLeast => any(&|o| o != Ordering::Less, &condition.value),
        Operator::AtMost => any(&|o| o != Ordering::Greater, &condition.value),
        Operator::Between => candidates.iter().any(|candidate| {
            let (Some(low), Some(high)) = (&condition.value, &condition.secondary) else {
                return false;
            };
            compare(candidate, low).is_some_and(|o| o != Ordering::Less)
                && compare(candidate, high).is_some_and(|o| o != Ordering::Greater)
        }),
        Operator::Contains => contains(&|haystack, needle| haystack.contains(needle)),
        Operator::DoesNotContain => !contains(&|haystack, needle| haystack.contains(needle)),
        Operator::StartsWith => contains(&|haystack, needle| haystack.starts_with(needle)),
        Operator::IsAnyOf => in_values(),
        Operator::IsNoneOf => !in_values(),
        Operator::IsKnown => !candidates.is_empty(),
        Operator::IsNotKnown => candidates.is_empty(),
    }
}

/// The records of `kind` that match, sorted; `Err` is the 400 message.
pub(crate) fn run_query<'a>(
    kind: RecordKind,
    body: &QueryBody,
    state: &'a OrgState,
) -> Result<Vec<&'a Record>, String> {
    let groups: Vec<Vec<Compiled>> = body
        .groups
        .iter()
        .flatten()
        .map(|group| {
            group
                .conditions
                .iter()
                .map(|condition| compile(condition, kind, state.switches.query_date_granularity))
                .collect::<Result<Vec<_>, String>>()
        })
        .collect::<Result<_, _>>()?;
    let sort_by = match body
        .sort_by
        .as_deref()
        .filter(|name| !name.trim().is_empty())
    {
        Some(name) => {
            Parameter::parse(name, kind).ok_or_else(|| format!("Unknown sortBy '{name}'."))?
        }
        None => Parameter::Id,
    };
    let records = match kind {
        RecordKind::Gift => &state.gifts.records,
        RecordKind::Contact => &state.contacts.records,
    };
    let mut matching: Vec<(&Record, Vec<Scalar>)> = records
        .values()
        .filter(|record| {
            groups.is_empty()
                || groups.iter().any(|conditions| {
                    conditions.iter().all(|condition| {
                        holds(
                            condition,
                            &extract(condition.parameter, kind, record, state),
                        )
                    })
                })
        })
        .map(|record| (record, extract(sort_by, kind, record, state)))
        .collect();
    matching.sort_by(|(a, a_key), (b, b_key)| {
        let by_key = match (a_key.first(), b_key.first()) {
            (Some(x), Some(y)) => compare(x, y).unwrap_or(Ordering::Equal),
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        };
        by_key.then(a.id.cmp(&b.id))
    });
    if body.descending {
        matching.reverse();
    }
    Ok(matching.into_iter().map(|(record, _)| record).collect())
}

#[cfg(test)]
#[path = "query_tests.rs"]
mod tests;
