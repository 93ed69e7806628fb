//! Generic mappings: the platform sources' model (docs/ingress.md "Generic platforms") over
//! the rows of a file, mapped by the platform mapping itself ([`platform::map_event`]).
//!
//! Each row becomes a small document keyed by Virtuous field (`{"amount": …,
//! "contact.email": …}`, read from the mapped columns or JSON Pointers) that the platform
//! mapping reads with one pointer per field, as if it were an event of type `backfill`.
//! The gift's `transactionId` is the mapped one and nothing else (a row has no event id to
//! fall back on): map the field the live path's mapping maps to `transactionId`, so a
//! payment seen live and in the file is one gift.

use csv::StringRecord;
use serde_json::{json, Map, Value};

use super::classify::{strip_thousands_separators, JobContext, Mapped, Row, SourceRules};
use super::spec::{filter_text, Filter, GenericMapping, Kind};
use crate::sources::platform::{self, PlatformEvent, PlatformMapped};
use crate::sources::SourceError;
use crate::tenant::{PlatformEventMapping, PlatformSettings};

/// The event type the one mapping is filed under.
const EVENT_TYPE: &str = "backfill";

/// Where a field's value is read.
#[derive(Debug, Clone)]
enum Locator {
    /// A CSV column, by index.
    Column { name: String, index: usize },
    /// A JSON Pointer into an NDJSON line.
    Pointer(String),
}

impl Locator {
    fn describe(&self) -> String {
        match self {
            Locator::Column { name, .. } => format!("column `{name}`"),
            Locator::Pointer(pointer) => format!("`{pointer}`"),
        }
    }

    fn name(&self) -> &str {
        match self {
            Locator::Column { name, .. } => name,
            Locator::Pointer(pointer) => pointer,
        }
    }
}

/// A generic mapping, resolved for one file.
pub(crate) struct GenericRules {
    kind: Kind,
    /// The source's settings with this mapping as their only event type.
    settings: PlatformSettings,
    /// (Virtuous field, where its value is).
    fields: Vec<(String, Locator)>,
    filters: Vec<(Filter, Locator)>,
}

impl GenericRules {
    pub fn for_csv(
        mapping: GenericMapping,
        source: &SourceRules,
        header: &StringRecord,
    ) -> Result<GenericRules, String> {
        let column = |name: &str, path: String| -> Result<Locator, String> {
            let index = header
                .iter()
                .position(|column| column == name)
                .ok_or_else(|| format!("{path}: the file has no column `{name}`"))?;
            Ok(Locator::Column {
                name: name.to_string(),
                index,
            })
        };
        let fields = mapping
            .fields
            .iter()
            .map(|(field, name)| {
                Ok((
                    field.clone(),
                    column(name, format!("mapping.fields.{field}"))?,
                ))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let filters = mapping
            .filters
            .iter()
            .enumerate()
            .map(|(n, filter)| {
                Ok((
                    filter.clone(),
                    column(&filter.field, format!("mapping.filters[{n}].field"))?,
                ))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(GenericRules::new(mapping, source, fields, filters))
    }

    pub fn for_ndjson(mapping: GenericMapping, source: &SourceRules) -> GenericRules {
        let fields = mapping
            .fields
            .iter()
            .map(|(field, pointer)| (field.clone(), Locator::Pointer(pointer.clone())))
            .collect();
        let filters = mapping
            .filters
            .iter()
            .map(|filter| (filter.clone(), Locator::Pointer(filter.field.clone())))
            .collect();
        GenericRules::new(mapping, source, fields, filters)
    }

    fn new(
        mapping: GenericMapping,
        source: &SourceRules,
        fields: Vec<(String, Locator)>,
        filters: Vec<(Filter, Locator)>,
    ) -> GenericRules {
        let mut settings = match source {
            SourceRules::Platform { settings, .. } => (**settings).clone(),
            SourceRules::Stripe(stripe) => stripe_as_platform(&stripe.transaction_source),
        };
        if let Some(unit) = &mapping.amount_unit {
            settings.amount_unit = unit.clone();
        }
        // The row document is keyed by Virtuous field: one pointer per field reads it.
        let pointers = fields
            .iter()
            .map(|(field, _)| (field.clone(), format!("/{}", escape_pointer(field))))
            .collect();
        settings.events = [(
            EVENT_TYPE.to_string(),
            PlatformEventMapping {
                kind: mapping.kind.name().to_string(),
                fields: pointers,
            },
        )]
        .into_iter()
        .collect();
        // Versioned contact facts belong to the poller's items, not to file rows.
        settings.poll = None;
        GenericRules {
            kind: mapping.kind,
            settings,
            fields,
            filters,
        }
    }

    pub fn classify(&self, row: Row<'_>, row_number: u64, context: &JobContext) -> Mapped {
        for (filter, locator) in &self.filters {
            let value = read_text(row, locator);
            if !filter.keeps(&value) {
                return Mapped::Skipped {
                    reason: format!("filtered: {}={value}", locator.name()),
                };
            }
        }
        let mut document = Map::new();
        for (field, locator) in &self.fields {
            if let Some(value) = read_value(row, locator, field) {
                document.insert(field.clone(), value);
            }
        }
        let event_id = match self.kind {
            Kind::Gift => {
                for (field, _) in self
                    .fields
                    .iter()
                    .filter(|(field, _)| field == "transactionId" || field == "giftDate")
                {
                    if !document.contains_key(field) {
                        return Mapped::Rejected {
                            reason: format!("no `{field}` ({})", self.locator_of(field)),
                        };
                    }
                }
                match &document["transactionId"] {
                    Value::String(id) => id.clone(),
                    Value::Number(number) => number.to_string(),
                    other => {
                        return Mapped::Rejected {
                            reason: format!(
                                "`transactionId` must be a string or number, got {other}"
                            ),
                        }
                    }
                }
            }
            // Each row of a contact file is its own fact (like each live update).
            Kind::Contact => format!("backfill:{}:{row_number}", context.job_id),
        };
        let event = PlatformEvent {
            id: event_id,
            event_type: EVENT_TYPE.to_string(),
            root: Value::Object(document),
            version_unix_s: None,
        };
        // `now` only dates gifts without a `giftDate`, which are rejected above.
        match platform::map_event(
            context.source.name(),
            &self.settings,
            &event,
            &context.tz,
            0,
        ) {
            Ok(PlatformMapped::Command(command)) => Mapped::Payment {
                commands: vec![command],
                alerts: Vec::new(),
                deducted_minor: 0,
            },
            Ok(PlatformMapped::Ignored { reason }) => Mapped::Skipped { reason },
            Err(SourceError::Mapping { reason, .. }) | Err(SourceError::Malformed(reason)) => {
                Mapped::Rejected { reason }
            }
        }
    }

    fn locator_of(&self, field: &str) -> String {
        self.fields
            .iter()
            .find(|(name, _)| name == field)
            .map(|(_, locator)| locator.describe())
            .unwrap_or_default()
    }
}

/// A field's value in `row`: absent for an empty cell or a missing / `null` JSON value. CSV
/// cells are text, read as the platform mapping reads JSON: amounts lose the thousands
/// separators exports write (`1,234.56`), and an all-digit `giftDate` is unix seconds.
fn read_value(row: Row<'_>, locator: &Locator, field: &str) -> Option<Value> {
    match (row, locator) {
        (Row::Csv(record), Locator::Column { index, .. }) => {
            let cell = record.get(*index)?.trim();
            if cell.is_empty() {
                return None;
            }
            match field {
                "amount" => Some(json!(strip_thousands_separators(cell))),
                "giftDate" if cell.bytes().all(|byte| byte.is_ascii_digit()) => {
                    cell.parse::<i64>().ok().map(|seconds| json!(seconds))
                }
                _ => Some(json!(cell)),
            }
        }
        (Row::Json(value), Locator::Pointer(pointer)) => match value.pointer(pointer) {
            None | Some(Value::Null) => None,
            Some(found) => Some(found.clone()),
        },
        _ => None,
    }
}

/// A filter's field as text (see [`Filter`]).
fn read_text(row: Row<'_>, locator: &Locator) -> String {
    match (row, locator) {
        (Row::Csv(record), Locator::Column { index, .. }) => {
            record.get(*index).unwrap_or_default().to_string()
        }
        (Row::Json(value), Locator::Pointer(pointer)) => {
            let found = value.pointer(pointer);
            filter_text(found).unwrap_or_else(|| found.map(Value::to_string).unwrap_or_default())
        }
        _ => String::new(),
    }
}

/// Stripe as a generic source: its transaction source, amounts in minor units.
fn stripe_as_platform(transaction_source: &str) -> PlatformSettings {
    serde_json::from_value(json!({"secret": null, "transaction_source": transaction_source}))
        .expect("a platform with only its required fields parses")
}

/// JSON Pointer escaping of a key.
fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}
