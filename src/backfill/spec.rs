//! A job's spec, parsed and checked against the tenant document (`POST …/backfills`
//! answers 422 `invalid_backfill` with the [`SpecError`]'s field path): a file job's by
//! [`check_spec`], a listing job's (`{"source", "from", "to"}`) by [`validate_listing`] with
//! its window from [`parse_window`].
//!
//! The mapping is a preset name or an object in the platform sources' model
//! (docs/ingress.md "Generic platforms"), plus row filters:
//! `{"kind": "gift"|"contact", "fields": {Virtuous field: column | JSON Pointer},
//!   "amount_unit": "major"|"minor", "filters": [{"field", "in"|"not_in": [values]}]}`.

use std::collections::BTreeMap;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use serde_json::{Map, Value};
use steward_actors::backfill::{JobSpec, ListingWindow, LISTING_FORMAT};

use super::{SpecError, STRIPE_EXPORT_PRESET};
use crate::tenant::TenantDoc;

/// Longest `batch` label (Virtuous Gift Transaction `batch`).
pub const LABEL_CHARS_MAX: usize = 100;
/// Most filters in one mapping, and most values in one filter (a limit on everything).
const FILTERS_MAX: usize = 20;
const FILTER_VALUES_MAX: usize = 1_000;

/// A file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Ndjson,
}

impl Format {
    pub fn parse(text: &str) -> Option<Format> {
        match text {
            "csv" => Some(Format::Csv),
            "ndjson" => Some(Format::Ndjson),
            _ => None,
        }
    }
}

/// What a record maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gift,
    Contact,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Gift => "gift",
            Kind::Contact => "contact",
        }
    }
}

/// A row filter: the row is a record only when the field's value is (not) in `values`.
/// Values compare as text: a CSV cell as is, a JSON string as is, a number or boolean as
/// written in JSON, absent or `null` as the empty string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// Column name (CSV) or JSON Pointer (NDJSON).
    pub field: String,
    pub values: Vec<String>,
    /// `in` (keep when listed) or `not_in` (keep when not listed).
    pub keep_listed: bool,
}

impl Filter {
    /// Whether a row whose field reads `value` is kept.
    pub fn keeps(&self, value: &str) -> bool {
        self.values.iter().any(|listed| listed == value) == self.keep_listed
    }
}

/// A mapping object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenericMapping {
    pub kind: Kind,
    /// Virtuous field (dotted) → column name (CSV) or JSON Pointer (NDJSON).
    pub fields: BTreeMap<String, String>,
    /// `major` or `minor`; `None` = the source's own (a platform's `amount_unit`, `minor`
    /// for Stripe).
    pub amount_unit: Option<String>,
    pub filters: Vec<Filter>,
}

/// A job's mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapping {
    /// The Stripe Dashboard's payments export, as is.
    StripeExport,
    Generic(GenericMapping),
}

/// A checked spec: what the reader and the classifier need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedSpec {
    pub format: Format,
    pub mapping: Mapping,
}

fn error(path: &str, message: impl Into<String>) -> SpecError {
    SpecError {
        path: path.to_string(),
        message: message.into(),
    }
}

/// Checks `spec` against `doc` (module docs); the first error found, naming its field.
pub fn check_spec(doc: &TenantDoc, spec: &JobSpec) -> Result<CheckedSpec, SpecError> {
    check_label(spec)?;
    let format = Format::parse(&spec.format).ok_or_else(|| {
        error(
            "format",
            format!("`{}` is not `csv` or `ndjson`", spec.format),
        )
    })?;
    let source_is_stripe = spec.source == crate::sources::stripe::SOURCE;
    if source_is_stripe {
        if doc.sources.stripe.is_none() {
            return Err(error(
                "source",
                "the tenant has no Stripe source (`sources.stripe`)",
            ));
        }
    } else if !doc.sources.platforms.contains_key(&spec.source) {
        return Err(error(
            "source",
            format!(
                "`{}` is not `stripe` or a platform of the tenant (`sources.platforms`)",
                spec.source
            ),
        ));
    }
    let mapping = parse_mapping(&spec.mapping_json, format)?;
    if mapping == Mapping::StripeExport {
        if !source_is_stripe {
            return Err(error(
                "source",
                format!("the `{STRIPE_EXPORT_PRESET}` mapping reads Stripe payments: use source `stripe`"),
            ));
        }
        if format != Format::Csv {
            return Err(error(
                "format",
                format!("the `{STRIPE_EXPORT_PRESET}` mapping reads a CSV file"),
            ));
        }
    }
    Ok(CheckedSpec { format, mapping })
}

/// Every job's label: not empty (it is every gift's `batch`), not too long.
fn check_label(spec: &JobSpec) -> Result<(), SpecError> {
    if spec.label.trim().is_empty() {
        return Err(error(
            "label",
            "must not be empty (it is every gift's `batch`)",
        ));
    }
    if spec.label.chars().count() > LABEL_CHARS_MAX {
        return Err(error(
            "label",
            format!("must be at most {LABEL_CHARS_MAX} characters"),
        ));
    }
    Ok(())
}

/// Checks a listing job's spec against `doc`: a label, a window, and a source the tenant
/// polls (the key of its poller: a listing is read through it).
pub fn validate_listing(doc: &TenantDoc, spec: &JobSpec) -> Result<(), SpecError> {
    let Some(window) = spec.listing else {
        return Err(error("from", "required: a listing job has a window"));
    };
    check_label(spec)?;
    if spec.format != LISTING_FORMAT || !spec.mapping_json.is_empty() {
        return Err(error(
            "format",
            "a listing job has no `format` or `mapping`: the poller's own mapping makes its entries",
        ));
    }
    check_window(&window)?;
    if doc.sources.postgres.contains_key(&spec.source) {
        return Err(error(
            "source",
            format!(
                "`{}` is a Postgres source: it has no listing to backfill from; its tables are \
                 snapshotted when it is added, and again after a reset of its poller \
                 (docs/cdc.md)",
                spec.source
            ),
        ));
    }
    let polled = crate::sources::polling::polled_sources(doc);
    if !polled.contains(&spec.source) {
        let known = if polled.is_empty() {
            "the tenant polls no source".to_string()
        } else {
            format!("polled: {}", polled.join(", "))
        };
        return Err(error(
            "source",
            format!(
                "`{}` is not a source the tenant polls ({known}); a listing is read through \
                 the source's poller",
                spec.source
            ),
        ));
    }
    Ok(())
}

/// A listing's window from its bounds as written (each an RFC 3339 timestamp or a day
/// `YYYY-MM-DD`, UTC: `from` its first millisecond, `to` its last); `to` absent is `now_ms`.
/// `from` must come before `to`.
pub fn parse_window(from: &str, to: Option<&str>, now_ms: u64) -> Result<ListingWindow, SpecError> {
    let window = ListingWindow {
        from_ms: parse_bound("from", from, DayEdge::First)?,
        to_ms: match to {
            Some(to) => parse_bound("to", to, DayEdge::Last)?,
            None => now_ms,
        },
    };
    check_window(&window)?;
    Ok(window)
}

fn check_window(window: &ListingWindow) -> Result<(), SpecError> {
    if window.from_ms >= window.to_ms {
        return Err(error(
            "from",
            format!(
                "must be before `to` ({} is not before {})",
                crate::tenants::format_ms(window.from_ms),
                crate::tenants::format_ms(window.to_ms)
            ),
        ));
    }
    Ok(())
}

/// Which millisecond of a day a bound written as a day is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum DayEdge {
    First,
    Last,
}

/// One bound of the window (`field` names it in errors) in ms since the epoch.
fn parse_bound(field: &str, text: &str, edge: DayEdge) -> Result<u64, SpecError> {
    let text = text.trim();
    let refused = || {
        error(
            field,
            format!(
                "`{text}` is not an RFC 3339 time (`2024-01-31T00:00:00Z`) or a day (`2024-01-31`)"
            ),
        )
    };
    let is_day = text.len() == 10 && text.as_bytes()[4] == b'-' && text.as_bytes()[7] == b'-';
    let timestamp = if is_day {
        let day: Date = text.parse().map_err(|_| refused())?;
        let start_of = |day: Date| day.to_zoned(TimeZone::UTC).map(|zoned| zoned.timestamp());
        match edge {
            DayEdge::First => start_of(day).map_err(|_| refused())?,
            // The next day's first millisecond, less one.
            DayEdge::Last => day
                .tomorrow()
                .and_then(start_of)
                .and_then(|next| next.checked_sub(jiff::SignedDuration::from_millis(1)))
                .map_err(|_| refused())?,
        }
    } else {
        text.parse::<jiff::Timestamp>().map_err(|_| refused())?
    };
    u64::try_from(timestamp.as_millisecond())
        .map_err(|_| error(field, format!("`{text}` is before 1970")))
}

/// The mapping from its JSON text: a preset name (a JSON string, or the bare name) or an
/// object.
pub fn parse_mapping(mapping_json: &str, format: Format) -> Result<Mapping, SpecError> {
    let document = match serde_json::from_str::<Value>(mapping_json) {
        Ok(document) => document,
        Err(_) if mapping_json.trim() == STRIPE_EXPORT_PRESET => return Ok(Mapping::StripeExport),
        Err(err) => return Err(error("mapping", format!("not JSON: {err}"))),
    };
    match document {
        Value::String(name) if name == STRIPE_EXPORT_PRESET => Ok(Mapping::StripeExport),
        Value::String(name) => Err(error(
            "mapping",
            format!("unknown preset `{name}` (known: `{STRIPE_EXPORT_PRESET}`)"),
        )),
        Value::Object(object) => parse_object(&object, format).map(Mapping::Generic),
        _ => Err(error(
            "mapping",
            "must be a preset name or a mapping object",
        )),
    }
}

fn parse_object(object: &Map<String, Value>, format: Format) -> Result<GenericMapping, SpecError> {
    for key in object.keys() {
        if !["kind", "fields", "amount_unit", "filters"].contains(&key.as_str()) {
            return Err(error(
                &format!("mapping.{key}"),
                "unknown key (known: kind, fields, amount_unit, filters)",
            ));
        }
    }
    let kind = match object.get("kind") {
        None => Kind::Gift,
        Some(Value::String(kind)) if kind == "gift" => Kind::Gift,
        Some(Value::String(kind)) if kind == "contact" => Kind::Contact,
        Some(other) => {
            return Err(error(
                "mapping.kind",
                format!("must be `gift` or `contact`, got {other}"),
            ))
        }
    };
    let amount_unit = match object.get("amount_unit") {
        None => None,
        Some(Value::String(unit)) if unit == "major" || unit == "minor" => Some(unit.clone()),
        Some(other) => {
            return Err(error(
                "mapping.amount_unit",
                format!("must be `major` or `minor`, got {other}"),
            ))
        }
    };
    let fields = parse_fields(object.get("fields"), format)?;
    check_required_fields(kind, &fields)?;
    let filters = parse_filters(object.get("filters"), format)?;
    Ok(GenericMapping {
        kind,
        fields,
        amount_unit,
        filters,
    })
}

fn parse_fields(
    fields: Option<&Value>,
    format: Format,
) -> Result<BTreeMap<String, String>, SpecError> {
    let Some(Value::Object(fields)) = fields else {
        return Err(error(
            "mapping.fields",
            "required: an object of Virtuous field → column (CSV) or JSON Pointer (NDJSON)",
        ));
    };
    let mut parsed = BTreeMap::new();
    for (field, source) in fields {
        let path = format!("mapping.fields.{field}");
        if field.is_empty() || field.split('.').any(str::is_empty) {
            return Err(error(&path, "a Virtuous field name has no empty part"));
        }
        let Value::String(source) = source else {
            return Err(error(
                &path,
                "must be a column name or a JSON Pointer (a string)",
            ));
        };
        check_locator(&path, source, format)?;
        parsed.insert(field.clone(), source.clone());
    }
    Ok(parsed)
}

/// A column name (CSV: non-empty) or a JSON Pointer (NDJSON: RFC 6901).
fn check_locator(path: &str, locator: &str, format: Format) -> Result<(), SpecError> {
    match format {
        Format::Csv if locator.is_empty() => Err(error(path, "a column name is not empty")),
        Format::Csv => Ok(()),
        Format::Ndjson => {
            if !locator.starts_with('/') {
                return Err(error(
                    path,
                    format!("`{locator}` is not a JSON Pointer (it starts with `/`)"),
                ));
            }
            let mut chars = locator.chars();
            while let Some(c) = chars.next() {
                if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
                    return Err(error(
                        path,
                        format!("`{locator}` is not a JSON Pointer (`~` is followed by 0 or 1)"),
                    ));
                }
            }
            Ok(())
        }
    }
}

/// The fields a kind cannot do without (the live path's rules, plus `giftDate`: a history
/// dated on the day of its upload would be wrong, and per-day reconciliation with it).
fn check_required_fields(kind: Kind, fields: &BTreeMap<String, String>) -> Result<(), SpecError> {
    let has = |field: &str| fields.contains_key(field);
    match kind {
        Kind::Gift => {
            for (field, why) in [
                ("amount", "the gift's amount"),
                (
                    "transactionId",
                    "the id the live path gives this payment (its idempotency key)",
                ),
                (
                    "giftDate",
                    "the day of the gift (history has no day of receipt)",
                ),
            ] {
                if !has(field) {
                    return Err(error(
                        &format!("mapping.fields.{field}"),
                        format!("required: {why}"),
                    ));
                }
            }
            if has("transactionSource") {
                return Err(error(
                    "mapping.fields.transactionSource",
                    "comes from the source's configuration; do not map it",
                ));
            }
            let identified = [
                "contact.email",
                "contact.name",
                "contact.id",
                "contact.referenceId",
            ]
            .iter()
            .any(|field| has(field))
                || (has("contact.firstName") && has("contact.lastName"));
            if !identified {
                return Err(error(
                    "mapping.fields.contact",
                    "the donor needs `contact.email`, `contact.firstName` + `contact.lastName`, \
                     `contact.name`, `contact.id` or `contact.referenceId`",
                ));
            }
        }
        Kind::Contact => {
            if !has("referenceId") {
                return Err(error(
                    "mapping.fields.referenceId",
                    "required: the source's id of the person",
                ));
            }
            if has("referenceSource") {
                return Err(error(
                    "mapping.fields.referenceSource",
                    "comes from the source's configuration; do not map it",
                ));
            }
        }
    }
    Ok(())
}

fn parse_filters(filters: Option<&Value>, format: Format) -> Result<Vec<Filter>, SpecError> {
    let filters = match filters {
        None => return Ok(Vec::new()),
        Some(Value::Array(filters)) => filters,
        Some(_) => return Err(error("mapping.filters", "must be an array")),
    };
    if filters.len() > FILTERS_MAX {
        return Err(error(
            "mapping.filters",
            format!("at most {FILTERS_MAX} filters"),
        ));
    }
    let mut parsed = Vec::with_capacity(filters.len());
    for (index, filter) in filters.iter().enumerate() {
        let path = format!("mapping.filters[{index}]");
        let Value::Object(filter) = filter else {
            return Err(error(&path, "must be {\"field\", \"in\" | \"not_in\"}"));
        };
        for key in filter.keys() {
            if !["field", "in", "not_in"].contains(&key.as_str()) {
                return Err(error(
                    &format!("{path}.{key}"),
                    "unknown key (known: field, in, not_in)",
                ));
            }
        }
        let Some(Value::String(field)) = filter.get("field") else {
            return Err(error(
                &format!("{path}.field"),
                "required: a column name or a JSON Pointer",
            ));
        };
        check_locator(&format!("{path}.field"), field, format)?;
        let (key, keep_listed) = match (filter.get("in"), filter.get("not_in")) {
            (Some(_), None) => ("in", true),
            (None, Some(_)) => ("not_in", false),
            _ => return Err(error(&path, "needs exactly one of `in` and `not_in`")),
        };
        let values_path = format!("{path}.{key}");
        let Some(Value::Array(values)) = filter.get(key) else {
            return Err(error(&values_path, "must be an array of values"));
        };
        if values.len() > FILTER_VALUES_MAX {
            return Err(error(
                &values_path,
                format!("at most {FILTER_VALUES_MAX} values"),
            ));
        }
        let values = values
            .iter()
            .map(|value| {
                filter_text(Some(value)).ok_or_else(|| {
                    error(
                        &values_path,
                        format!("values are strings, numbers or booleans, got {value}"),
                    )
                })
            })
            .collect::<Result<Vec<String>, SpecError>>()?;
        parsed.push(Filter {
            field: field.clone(),
            values,
            keep_listed,
        });
    }
    Ok(parsed)
}

/// A JSON value as filters compare it (see [`Filter`]); `None` for arrays and objects.
pub fn filter_text(value: Option<&Value>) -> Option<String> {
    match value {
        None | Some(Value::Null) => Some(String::new()),
        Some(Value::String(text)) => Some(text.clone()),
        Some(Value::Number(number)) => Some(number.to_string()),
        Some(Value::Bool(flag)) => Some(flag.to_string()),
        Some(Value::Array(_) | Value::Object(_)) => None,
    }
}
