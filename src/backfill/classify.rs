//! The one classifier: a row of a file → a [`RowOutcome`], for the dry run and the real run
//! alike (the runtime only calls the reader, which calls this).
//!
//! Entries are the live path's, built by the live mapping functions: same kind, source,
//! source id, idempotency key, transaction source and body — except the `backfill` lane and
//! the gift body's `batch`, set to the job's label. A listing job's records ([`listed`])
//! come with the poller's entries already made: they get the same two changes.

use csv::StringRecord;
use jiff::tz::TimeZone;
use serde_json::{json, Value};
use steward_actors::backfill::{JobSpec, MoneyFact, RowOutcome};
use steward_actors::ports::PolledItem;
use steward_actors::source_fact::AlertNote;
use steward_actors::store::{Lane, NewEntry, RecordKind};

use super::generic::GenericRules;
use super::spec::{check_spec, Format, Mapping};
use super::stripe_export::ExportColumns;
use crate::sources::amount::minor_unit_decimals;
use crate::sources::stripe::StripeMapping;
use crate::sources::Command;
use crate::tenant::{PlatformSettings, TenantDoc};

/// A row as read.
#[derive(Debug, Clone, Copy)]
pub enum Row<'a> {
    /// A CSV record (the classifier knows the header: it was built for it).
    Csv(&'a StringRecord),
    /// An NDJSON line.
    Json(&'a Value),
}

/// The source whose keys and settings the rows get.
#[derive(Clone)]
pub(crate) enum SourceRules {
    Stripe(StripeMapping),
    Platform {
        name: String,
        settings: Box<PlatformSettings>,
    },
}

impl SourceRules {
    pub fn name(&self) -> &str {
        match self {
            SourceRules::Stripe(_) => crate::sources::stripe::SOURCE,
            SourceRules::Platform { name, .. } => name,
        }
    }
}

/// What every row of one job shares.
pub(crate) struct JobContext {
    pub source: SourceRules,
    pub tz: TimeZone,
    /// Every gift's `batch`.
    pub label: String,
    /// Names the job in the fact ids of contact rows (each row is its own fact).
    pub job_id: String,
}

/// One per job (boxed: the two differ in size, and a job has one).
enum Rules {
    StripeExport(Box<ExportColumns>),
    Generic(Box<GenericRules>),
}

/// Classifies the rows of one job's file.
pub struct Classifier {
    context: JobContext,
    rules: Rules,
}

impl Classifier {
    /// For a CSV file whose header is `header` (columns are resolved once, here: a mapped
    /// column the header lacks is an error for the whole file).
    pub fn for_csv(
        doc: &TenantDoc,
        spec: &JobSpec,
        job_id: &str,
        header: &StringRecord,
    ) -> Result<Classifier, String> {
        let (context, mapping, format) = job_context(doc, spec, job_id)?;
        if format != Format::Csv {
            return Err(format!("the job reads `{}`, not CSV", spec.format));
        }
        let rules = match mapping {
            Mapping::StripeExport => Rules::StripeExport(Box::new(ExportColumns::resolve(header)?)),
            Mapping::Generic(mapping) => Rules::Generic(Box::new(GenericRules::for_csv(
                mapping,
                &context.source,
                header,
            )?)),
        };
        Ok(Classifier { context, rules })
    }

    /// For an NDJSON file.
    pub fn for_ndjson(doc: &TenantDoc, spec: &JobSpec, job_id: &str) -> Result<Classifier, String> {
        let (context, mapping, format) = job_context(doc, spec, job_id)?;
        match (format, mapping) {
            (Format::Ndjson, Mapping::Generic(mapping)) => {
                let rules =
                    Rules::Generic(Box::new(GenericRules::for_ndjson(mapping, &context.source)));
                Ok(Classifier { context, rules })
            }
            _ => Err(format!(
                "the job reads `{}` with its mapping, not NDJSON",
                spec.format
            )),
        }
    }

    /// What row number `row` is. `now_ms` dates the entries (the runtime may restamp them).
    pub fn classify(&self, row: Row<'_>, row_number: u64, now_ms: u64) -> RowOutcome {
        let mapped = match (&self.rules, row) {
            (Rules::StripeExport(columns), Row::Csv(record)) => {
                super::stripe_export::classify(columns, record, &self.context)
            }
            (Rules::Generic(rules), row) => rules.classify(row, row_number, &self.context),
            (Rules::StripeExport(_), Row::Json(_)) => Mapped::Rejected {
                reason: "the Stripe export preset reads CSV rows".into(),
            },
        };
        match mapped {
            Mapped::Skipped { reason } => RowOutcome::Skipped { reason },
            Mapped::Rejected { reason } => RowOutcome::Rejected { reason },
            Mapped::Payment {
                commands,
                alerts,
                deducted_minor,
            } => self.payment(commands, alerts, deducted_minor, now_ms),
        }
    }

    /// The live path's commands as backfill entries, with the money of the gift.
    fn payment(
        &self,
        commands: Vec<Command>,
        alerts: Vec<AlertNote>,
        deducted_minor: i64,
        now_ms: u64,
    ) -> RowOutcome {
        let entries = commands
            .into_iter()
            .map(|command| command.into_new_entry(now_ms));
        let (entries, money) = backfill_entries(entries, &self.context.label, deducted_minor);
        RowOutcome::Payment {
            entries,
            alerts,
            money,
        }
    }
}

/// A listing job's record (a polled item inside the window) as a row: the entries the live
/// poll queues for it as backfill entries, with the first gift's money; a record the poller
/// could not map is rejected naming it, one with nothing to send skipped.
pub(crate) fn listed(spec: &JobSpec, item: PolledItem) -> RowOutcome {
    match item.entries {
        Err(reason) => RowOutcome::Rejected {
            reason: format!("record {}: {reason}", item.record_id),
        },
        Ok(entries) if entries.is_empty() => RowOutcome::Skipped {
            reason: NOTHING_TO_SEND.to_string(),
        },
        Ok(entries) => {
            let (entries, money) = backfill_entries(entries, spec.label.trim(), 0);
            RowOutcome::Payment {
                entries,
                alerts: Vec::new(),
                money,
            }
        }
    }
}

/// Why a listed record whose version the live poll would send nothing for is skipped.
pub const NOTHING_TO_SEND: &str = "nothing to send";

/// The live path's entries as backfill entries: in the `backfill` lane, every gift's body
/// with `batch` set to `label`; and the money of the first gift (less `deducted_minor`).
fn backfill_entries(
    entries: impl IntoIterator<Item = NewEntry>,
    label: &str,
    deducted_minor: i64,
) -> (Vec<NewEntry>, Option<MoneyFact>) {
    let mut money = None;
    let entries = entries
        .into_iter()
        .map(|mut entry| {
            entry.fact.lane = Lane::Backfill;
            if entry.fact.kind == RecordKind::Gift {
                let mut body: Value = serde_json::from_str(&entry.fact.body_json)
                    .expect("a command body is serialised JSON");
                if money.is_none() {
                    money = money_of(&entry, &body, deducted_minor);
                }
                body["batch"] = json!(label);
                entry.fact.body_json = body.to_string();
            }
            entry
        })
        .collect();
    (entries, money)
}

/// What a set of rules makes of one row, before it becomes entries.
pub(crate) enum Mapped {
    Skipped {
        reason: String,
    },
    Rejected {
        reason: String,
    },
    /// The live path's commands (the gift first) and alerts. `deducted_minor`: the minor
    /// units refunded from the gift (all of them when it is reversed), for its money.
    Payment {
        commands: Vec<Command>,
        alerts: Vec<AlertNote>,
        deducted_minor: i64,
    },
}

fn job_context(
    doc: &TenantDoc,
    spec: &JobSpec,
    job_id: &str,
) -> Result<(JobContext, Mapping, Format), String> {
    let checked = check_spec(doc, spec).map_err(|err| err.to_string())?;
    let source = match (&doc.sources.stripe, doc.sources.platforms.get(&spec.source)) {
        (Some(stripe), _) if spec.source == crate::sources::stripe::SOURCE => {
            SourceRules::Stripe(StripeMapping::from_settings(stripe))
        }
        (_, Some(platform)) => SourceRules::Platform {
            name: spec.source.clone(),
            settings: Box::new(platform.clone()),
        },
        _ => return Err(format!("source `{}` is not configured", spec.source)),
    };
    let context = JobContext {
        source,
        tz: TimeZone::get(&doc.time_zone).unwrap_or(TimeZone::UTC),
        label: spec.label.trim().to_string(),
        job_id: job_id.to_string(),
    };
    Ok((context, checked.mapping, checked.format))
}

/// The gift's money: its id, day and project from the body the live path built, its
/// amount less what was refunded or withdrawn.
fn money_of(entry: &NewEntry, body: &Value, deducted_minor: i64) -> Option<MoneyFact> {
    let currency = body
        .get("currencyCode")
        .and_then(Value::as_str)
        .unwrap_or("usd")
        .to_ascii_lowercase();
    let amount_text = match body.get("amount") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Number(number)) => number.to_string(),
        _ => return None,
    };
    let amount_minor = decimal_to_minor(&amount_text, &currency)?;
    Some(MoneyFact {
        transaction_id: entry.fact.source_id.clone(),
        day: body.get("giftDate")?.as_str()?.to_string(),
        project: body
            .pointer("/designations/0/code")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        amount_minor: amount_minor.saturating_sub(deducted_minor).max(0),
        currency,
    })
}

/// A plain decimal (`"1234.5"`, `"12"`) in minor units of `currency`; `None` for anything
/// else or for more decimals than the currency has (unless they are zeros).
pub(crate) fn decimal_to_minor(text: &str, currency: &str) -> Option<i64> {
    let decimals = minor_unit_decimals(currency) as usize;
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let all_digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) {
        return None;
    }
    let (kept, dropped) = fraction.split_at(fraction.len().min(decimals));
    if dropped.bytes().any(|byte| byte != b'0') {
        return None;
    }
    let digits = format!("{whole}{kept:0<decimals$}");
    digits.parse::<i64>().ok()
}

/// `1,234.56` → `1234.56` when the commas group digits by three (as exports write
/// thousands); any other text is returned as is (and judged by the amount's own rules).
pub(crate) fn strip_thousands_separators(text: &str) -> String {
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (text, None),
    };
    let groups: Vec<&str> = whole.split(',').collect();
    let digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
    let grouped_by_three = groups.len() > 1
        && (1..=3).contains(&groups[0].len())
        && digits(groups[0])
        && groups[1..]
            .iter()
            .all(|group| group.len() == 3 && digits(group));
    if !grouped_by_three {
        return text.to_string();
    }
    match fraction {
        Some(fraction) => format!("{}.{fraction}", groups.concat()),
        None => groups.concat(),
    }
}
