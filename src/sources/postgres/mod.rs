//! A partner's own Postgres database as a source (CDC, `sources.postgres.{name}`;
//! docs/cdc.md). Two modes behind the actors crate's `Poller` port:
//! - `logical` ([`logical`]): a replication slot read through SQL with the built-in
//!   `pgoutput` plugin ([`pgoutput`]), after an initial snapshot of the tables;
//! - `outbox` ([`outbox`]): the tables polled by `(updated_at, primary key)`.
//!
//! Both map a row — `{column: text | null}` in Postgres's own text format — with the
//! platform sources' mapping model ([`super::platform::map_event`]), one table one event
//! type. Identity: a gift is the row, `(table, primary key)`; a contact is one version of
//! the row, `(table, primary key, row version)` (the `updated_at` column, else a hash of the
//! mapped body). A gift entry carries the fingerprint of its amount and date
//! ([`gift_fingerprint_alias`]): a later version with another fingerprint raises
//! `source_gift_changed` in the polling machinery, never a second gift.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::tz::TimeZone;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use steward_actors::poll::{
    gift_fingerprint_alias, PollSchedule, PollerSettings, PollerSpec, SourceLimits,
};
use steward_actors::store::{Lane, NewEntry, RecordKind};
use tokio_postgres::{Client, NoTls};

use super::idempotency_key;
use super::platform::{map_event, PlatformEvent, PlatformMapped};
use super::polling::{PollContext, PollerBuildError};
use crate::tenant::{PlatformEventMapping, PlatformSettings, PostgresSourceSettings, TenantDoc};

pub mod logical;
pub mod outbox;
pub mod pgoutput;

/// The poller kind (the `source` label of capture metrics).
pub const KIND: &str = "postgres";
/// Alert: a gift row was deleted (or its table truncated) at the source.
pub const GIFT_DELETED_ALERT: &str = "source_gift_deleted";
/// Alert: the replication slot is missing, lost, or ahead of what Steward stored.
pub const SLOT_LOST_ALERT: &str = "cdc_slot_lost";
/// Alert: the slot holds more WAL than `lag_alert_bytes`.
pub const SLOT_LAG_ALERT: &str = "cdc_slot_lag";

/// Metrics (no tenant label: per-tenant detail is in the poller's status).
pub const CHANGES_TOTAL: &str = "steward_cdc_changes_total";
pub const SLOT_LAG_BYTES: &str = "steward_cdc_slot_lag_bytes";
pub const SLOT_LOST_TOTAL: &str = "steward_cdc_slot_lost_total";

/// Registers the CDC metrics' descriptions (next to the actors crate's).
pub fn describe_metrics() {
    metrics::describe_counter!(
        CHANGES_TOTAL,
        metrics::Unit::Count,
        "Changes read from partners' Postgres databases, per operation"
    );
    metrics::describe_histogram!(
        SLOT_LAG_BYTES,
        metrics::Unit::Bytes,
        "WAL a CDC replication slot holds beyond its confirmed position, at each read"
    );
    metrics::describe_counter!(
        SLOT_LOST_TOTAL,
        metrics::Unit::Count,
        "CDC replication slots found missing, lost or moved past Steward's position"
    );
}

/// Longest wait for a connection or one statement.
const STATEMENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The specs of every `sources.postgres` entry (in name order).
pub fn add_specs(
    context: &PollContext,
    doc: &TenantDoc,
    specs: &mut Vec<PollerSpec>,
    errors: &mut Vec<PollerBuildError>,
) {
    for (name, source) in &doc.sources.postgres {
        let built = Connector::new(name, source, &context.tenant_id).map(|connector| {
            let mapper = RowMapper::new(name, source, &doc.time_zone);
            let poller: Arc<dyn steward_actors::poll::Poller> = if source.is_logical() {
                Arc::new(logical::LogicalPoller::new(connector, mapper, source, name))
            } else {
                Arc::new(outbox::OutboxPoller::new(connector, mapper, source))
            };
            PollerSpec {
                settings: PollerSettings {
                    source: name.clone(),
                    kind: KIND.to_string(),
                    schedule: PollSchedule::Every {
                        interval_ms: source.interval_ms(),
                    },
                    overlap_ms: if source.is_logical() {
                        0
                    } else {
                        source.overlap_s.saturating_mul(1_000)
                    },
                    limits: SourceLimits::default(),
                    has_webhooks: false,
                    parity_alert_pct: 100.0,
                    time_zone: doc.time_zone.clone(),
                },
                poller,
            }
        });
        match built {
            Ok(spec) => specs.push(spec),
            Err(reason) => errors.push(PollerBuildError {
                source: name.clone(),
                reason,
            }),
        }
    }
}

/// One connection to the partner's database, opened on demand and dropped on any error
/// (the next call opens another). Sessions run in UTC, so times read the same everywhere.
pub struct Connector {
    config: tokio_postgres::Config,
    client: tokio::sync::Mutex<Option<Client>>,
    tenant_id: String,
    source: String,
}

impl Connector {
    fn new(name: &str, source: &PostgresSourceSettings, tenant_id: &str) -> Result<Self, String> {
        let dsn = source.dsn.as_deref().unwrap_or_default();
        let mut config = crate::destinations::postgres::connect_config(dsn)?;
        config.application_name("steward-cdc");
        Ok(Connector {
            config,
            client: tokio::sync::Mutex::new(None),
            tenant_id: tenant_id.to_string(),
            source: name.to_string(),
        })
    }

    /// Runs `work` on the open connection (opening one first); an error drops it.
    async fn with<T, F>(&self, work: F) -> Result<T, SourceFailure>
    where
        F: for<'c> FnOnce(
            &'c Client,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<T, SourceFailure>> + 'c>,
        >,
    {
        let mut guard = self.client.lock().await;
        if guard.as_ref().is_some_and(Client::is_closed) {
            *guard = None;
        }
        if guard.is_none() {
            let connected = tokio::time::timeout(STATEMENT_TIMEOUT, self.config.connect(NoTls))
                .await
                .map_err(|_| SourceFailure::Other("connecting timed out".into()))?
                .map_err(|err| classify(&err, "connecting"))?;
            let (client, driver) = connected;
            let tenant_id = self.tenant_id.clone();
            let source = self.source.clone();
            tokio::spawn(async move {
                if let Err(err) = driver.await {
                    tracing::warn!(tenant_id = %tenant_id, source = %source, error = %describe(&err), "postgres source connection ended");
                }
            });
            client
                .batch_execute(
                    "SET TIME ZONE 'UTC'; SET DateStyle = 'ISO'; SET extra_float_digits = 1",
                )
                .await
                .map_err(|err| classify(&err, "setting up the session"))?;
            *guard = Some(client);
        }
        let client = guard.as_ref().expect("connected above");
        let outcome = match tokio::time::timeout(STATEMENT_TIMEOUT, work(client)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(SourceFailure::Other("a statement timed out".into())),
        };
        if outcome.is_err() {
            *guard = None;
        }
        outcome
    }
}

/// Why a read failed: refused credentials pause the poller, anything else fails the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceFailure {
    Auth(String),
    Other(String),
}

impl SourceFailure {
    fn into_fetch(self) -> steward_actors::poll::PollFetch {
        match self {
            SourceFailure::Auth(message) => {
                steward_actors::poll::PollFetch::AuthRefused { message }
            }
            SourceFailure::Other(message) => {
                steward_actors::poll::PollFetch::Failed { message, calls: 1 }
            }
        }
    }
}

/// A driver error with the server's message (`db error` alone says nothing).
pub fn describe(err: &tokio_postgres::Error) -> String {
    let text = match err.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => err.to_string(),
    };
    super::super::destinations::first_chars(&text, 300)
}

fn classify(err: &tokio_postgres::Error, doing: &str) -> SourceFailure {
    let message = format!("{doing}: {}", describe(err));
    match err.code().map(|code| code.code()) {
        // invalid_authorization_specification, invalid_password
        Some("28000") | Some("28P01") => SourceFailure::Auth(message),
        _ => SourceFailure::Other(message),
    }
}

/// `"schema"."table"` (names validated as plain identifiers; quoted all the same).
pub fn quoted_table(table: &str) -> String {
    match table.split_once('.') {
        Some((schema, name)) => format!("\"{schema}\".\"{name}\""),
        None => format!("\"{table}\""),
    }
}

/// A text value as an SQL literal (standard strings: only `'` is special).
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A Postgres timestamp's text (`2026-12-07 23:13:21.881667+00`, or without an offset:
/// UTC) → Unix ms.
pub fn timestamp_ms(text: &str) -> Option<u64> {
    let text = text.trim().replacen(' ', "T", 1);
    let offset_at = text
        .rfind(['+', '-'])
        .filter(|&at| at > text.find('T').unwrap_or(usize::MAX));
    let full = match offset_at {
        Some(at) if text[at + 1..].len() == 2 => format!("{text}:00"),
        Some(_) => text,
        None => format!("{text}Z"),
    };
    let ms = full.parse::<jiff::Timestamp>().ok()?.as_millisecond();
    u64::try_from(ms).ok()
}

/// Whether a timestamp's text carries a UTC offset (`…+00`, `…-05:30`): a `timestamptz`.
fn has_offset(text: &str) -> bool {
    let Some(time_at) = text.find([' ', 'T']) else {
        return false;
    };
    text[time_at..].contains(['+', '-']) || text.ends_with('Z')
}

/// How one table's rows map.
struct TableMap {
    primary_key: Vec<String>,
    kind: RecordKind,
    updated_at: Option<String>,
    /// The column `giftDate` reads, when it names one (`/given_at` → `given_at`).
    gift_date_column: Option<String>,
}

/// Rows → entries, the same for the stream, the snapshot and the outbox.
pub struct RowMapper {
    source: String,
    settings: PlatformSettings,
    tables: BTreeMap<String, TableMap>,
    time_zone: TimeZone,
}

/// A row's identity in one table.
pub struct RowId {
    /// `{table}:{pk}` (pk columns' text joined by `,`): the record id of run reports, and a
    /// gift's default `transactionId`.
    pub record_id: String,
    pub kind: RecordKind,
}

impl RowMapper {
    pub fn new(name: &str, source: &PostgresSourceSettings, time_zone: &str) -> Self {
        let events = source
            .tables
            .iter()
            .map(|(table, spec)| {
                (
                    table.clone(),
                    PlatformEventMapping {
                        kind: spec.kind.clone(),
                        fields: spec.fields.clone(),
                    },
                )
            })
            .collect();
        let tables = source
            .tables
            .iter()
            .map(|(table, spec)| {
                (
                    table.clone(),
                    TableMap {
                        primary_key: spec.primary_key.clone(),
                        kind: if spec.kind == "contact" {
                            RecordKind::Contact
                        } else {
                            RecordKind::Gift
                        },
                        updated_at: spec.updated_at.clone(),
                        gift_date_column: spec
                            .fields
                            .get("giftDate")
                            .and_then(|pointer| pointer.strip_prefix('/'))
                            .filter(|column| !column.contains('/'))
                            .map(str::to_string),
                    },
                )
            })
            .collect();
        RowMapper {
            source: name.to_string(),
            settings: PlatformSettings::mapping_only(
                &source.transaction_source,
                &source.amount_unit,
                events,
            ),
            tables,
            time_zone: TimeZone::get(time_zone).unwrap_or(TimeZone::UTC),
        }
    }

    pub fn tables(&self) -> impl Iterator<Item = &str> {
        self.tables.keys().map(String::as_str)
    }

    pub fn knows(&self, table: &str) -> bool {
        self.tables.contains_key(table)
    }

    pub fn primary_key(&self, table: &str) -> &[String] {
        self.tables
            .get(table)
            .map(|map| map.primary_key.as_slice())
            .unwrap_or_default()
    }

    pub fn updated_at(&self, table: &str) -> Option<&str> {
        self.tables
            .get(table)
            .and_then(|map| map.updated_at.as_deref())
    }

    /// The row's identity; `None` when a key column is missing or null.
    pub fn row_id(&self, table: &str, row: &Map<String, Value>) -> Option<RowId> {
        let map = self.tables.get(table)?;
        let parts: Option<Vec<&str>> = map
            .primary_key
            .iter()
            .map(|column| row.get(column).and_then(Value::as_str))
            .collect();
        Some(RowId {
            record_id: format!("{table}:{}", parts?.join(",")),
            kind: map.kind,
        })
    }

    /// The primary key's text values, in key order.
    pub fn key_values(&self, table: &str, row: &Map<String, Value>) -> Option<Vec<String>> {
        self.primary_key(table)
            .iter()
            .map(|column| row.get(column).and_then(Value::as_str).map(str::to_string))
            .collect()
    }

    /// A row → its entries (one), or why it cannot be sent.
    pub fn map_row(
        &self,
        table: &str,
        row: Map<String, Value>,
        lane: Lane,
        now_ms: u64,
    ) -> Result<Vec<NewEntry>, String> {
        let map = self
            .tables
            .get(table)
            .ok_or_else(|| format!("table {table} is not configured"))?;
        let id = self.row_id(table, &row).ok_or_else(|| {
            format!(
                "a row of {table} lacks its primary key ({})",
                map.primary_key.join(", ")
            )
        })?;
        let version_column = match map.kind {
            RecordKind::Contact => self
                .updated_at(table)
                .and_then(|column| row.get(column))
                .and_then(Value::as_str)
                .map(str::to_string),
            _ => None,
        };
        let mut row = row;
        if let Some(column) = &map.gift_date_column {
            // A `timestamptz` prints in UTC here: as unix seconds it is dated in the tenant's
            // time zone, like every other source's gifts. A plain `date` stays as it is.
            let instant = row
                .get(column)
                .and_then(Value::as_str)
                .filter(|text| has_offset(text))
                .and_then(timestamp_ms);
            if let Some(ms) = instant {
                row.insert(column.clone(), Value::from(ms / 1_000));
            }
        }
        let event = PlatformEvent {
            id: id.record_id.clone(),
            event_type: table.to_string(),
            root: Value::Object(row),
            version_unix_s: None,
        };
        let now_unix_s = i64::try_from(now_ms / 1_000).unwrap_or(i64::MAX);
        let mapped = map_event(
            &self.source,
            &self.settings,
            &event,
            &self.time_zone,
            now_unix_s,
        )
        .map_err(|err| err.to_string())?;
        let PlatformMapped::Command(mut command) = mapped else {
            return Err(format!("table {table} has no mapping"));
        };
        command.fact.lane = lane;
        command.aliases.clear();
        match map.kind {
            RecordKind::Contact => {
                // The row's version: its update time, else what is sent (so a change to a
                // column the mapping does not read is no new version).
                let version = version_column
                    .unwrap_or_else(|| format!("h{}", fingerprint(&[&command.fact.body_json])));
                command.fact.idempotency_key = idempotency_key(
                    &self.source,
                    RecordKind::Contact,
                    &format!("{}@{version}", id.record_id),
                );
            }
            _ => {
                let body: Value = serde_json::from_str(&command.fact.body_json)
                    .map_err(|err| format!("the mapped body: {err}"))?;
                let fingerprint = fingerprint(&[
                    body.get("amount")
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                    body.get("currencyCode")
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                    body.get("giftDate")
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                ]);
                command.aliases.push(gift_fingerprint_alias(
                    &self.source,
                    &command.fact.source_id,
                    &fingerprint,
                ));
            }
        }
        Ok(vec![command.into_new_entry(now_ms)])
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn kind_of(&self, table: &str) -> Option<RecordKind> {
        self.tables.get(table).map(|map| map.kind)
    }
}

/// The first 16 hex digits of SHA-256 over the parts (each length-prefixed).
fn fingerprint(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// A query's rows as `{column: text | null}` (the simple protocol: every value in the
/// type's text form, as pgoutput sends it).
pub async fn text_rows(
    client: &Client,
    sql: &str,
) -> Result<Vec<Map<String, Value>>, tokio_postgres::Error> {
    let messages = client.simple_query(sql).await?;
    let mut rows = Vec::new();
    for message in messages {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
            let mut object = Map::new();
            for (index, column) in row.columns().iter().enumerate() {
                let value = match row.get(index) {
                    Some(text) => Value::String(text.to_string()),
                    None => Value::Null,
                };
                object.insert(column.name().to_string(), value);
            }
            rows.push(object);
        }
    }
    Ok(rows)
}

/// Keyset paging: `WHERE (a, b) > ('x', 'y')` over the columns.
pub fn after_clause(columns: &[&str], values: &[String]) -> String {
    let columns: Vec<String> = columns.iter().map(|c| format!("\"{c}\"")).collect();
    let values: Vec<String> = values.iter().map(|v| literal(v)).collect();
    format!("({}) > ({})", columns.join(", "), values.join(", "))
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
