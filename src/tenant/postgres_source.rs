//! `sources.postgres.{name}`: a partner's own Postgres database as a source (CDC;
//! docs/cdc.md). The adapter is `crate::sources::postgres`.
//!
//! ```json
//! {"dsn": "host=… user=steward_cdc dbname=events", "mode": "logical",
//!  "transaction_source": "Events DB", "create_slot": true,
//!  "tables": {"public.gifts": {"primary_key": ["id"], "kind": "gift",
//!                              "fields": {"amount": "/amount", "contact.email": "/email"}}}}
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::validate::{non_empty, require_secret, within};
use super::{invalid, validate_tenant_id, TenantDocError};
use crate::destinations::postgres::identifier_is_valid;

/// One Postgres source. No `Debug`: `dsn` is a secret.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSourceSettings {
    /// libpq `key=value` or `postgres://` URL; sealed like every secret.
    #[serde(default)]
    pub dsn: Option<String>,
    /// `logical` (a replication slot, pgoutput) or `outbox` (poll by `(updated_at, key)`).
    pub mode: String,
    /// Logical: the replication slot (default `steward_{name}`).
    #[serde(default)]
    pub slot: Option<String>,
    /// Logical: the publication naming the tables (default: the slot's default name).
    #[serde(default)]
    pub publication: Option<String>,
    /// Logical: Steward creates the slot when it is missing or lost (needs `REPLICATION`).
    #[serde(default)]
    pub create_slot: bool,
    /// Gifts' `transactionSource`, contacts' `referenceSource`.
    pub transaction_source: String,
    /// `major` (`12.50`) or `minor` (`1250` cents).
    #[serde(default = "default_major")]
    pub amount_unit: String,
    /// How often an idle source reads (ms; default 1,000 logical, 10,000 outbox).
    #[serde(default)]
    pub interval_ms: Option<u64>,
    /// Most changes (logical) or rows (outbox, snapshot) one read takes.
    #[serde(default = "default_batch")]
    pub batch: u32,
    /// Logical: the alert `cdc_slot_lag` opens when the slot holds more WAL than this.
    #[serde(default = "default_lag_alert_bytes")]
    pub lag_alert_bytes: u64,
    /// Outbox: how far each run reads back before its checkpoint (seconds).
    #[serde(default = "default_overlap_s")]
    pub overlap_s: u64,
    /// `schema.table` → how its rows map.
    pub tables: BTreeMap<String, PostgresTable>,
}

/// How one table's rows become gifts or contacts.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresTable {
    /// The row's identity: one or more columns.
    pub primary_key: Vec<String>,
    /// `gift` or `contact`.
    pub kind: String,
    /// Virtuous field (dotted for nesting) → JSON Pointer into the row (`/column`).
    pub fields: BTreeMap<String, String>,
    /// The row's update time column: the order outbox mode reads by (required there); in
    /// logical mode, a contact row's version (else a hash of the mapped body).
    #[serde(default)]
    pub updated_at: Option<String>,
}

fn default_major() -> String {
    "major".into()
}
fn default_batch() -> u32 {
    500
}
fn default_lag_alert_bytes() -> u64 {
    1 << 30
}
fn default_overlap_s() -> u64 {
    300
}

pub const MODE_LOGICAL: &str = "logical";
pub const MODE_OUTBOX: &str = "outbox";

impl PostgresSourceSettings {
    pub fn is_logical(&self) -> bool {
        self.mode == MODE_LOGICAL
    }

    /// The slot's name: set, or `steward_{name}` (`-` → `_`).
    pub fn slot_name(&self, name: &str) -> String {
        self.slot
            .clone()
            .unwrap_or_else(|| format!("steward_{}", name.replace('-', "_")))
    }

    pub fn publication_name(&self, name: &str) -> String {
        self.publication
            .clone()
            .unwrap_or_else(|| format!("steward_{}", name.replace('-', "_")))
    }

    pub fn interval_ms(&self) -> u64 {
        self.interval_ms
            .unwrap_or(if self.is_logical() { 1_000 } else { 10_000 })
    }
}

/// `schema.table`, both parts plain identifiers.
pub fn split_table_name(name: &str) -> Option<(&str, &str)> {
    let (schema, table) = name.split_once('.')?;
    (identifier_is_valid(schema) && identifier_is_valid(table)).then_some((schema, table))
}

pub(super) fn validate_postgres_source(
    name: &str,
    source: &PostgresSourceSettings,
    platforms: &BTreeMap<String, super::PlatformSettings>,
) -> Result<(), TenantDocError> {
    let field = |key: &str| format!("sources.postgres.{name}.{key}");
    validate_tenant_id(name).map_err(|_| {
        invalid(
            &format!("sources.postgres.{name}"),
            "source names use lowercase letters, digits and '-'",
        )
    })?;
    if platforms.contains_key(name) || ["stripe", "mailchimp", "constant_contact"].contains(&name) {
        return Err(invalid(
            &format!("sources.postgres.{name}"),
            "another source has this name: a source's name is its key in entries and routes",
        ));
    }
    require_secret(&field("dsn"), &source.dsn)?;
    if let Some(dsn) = source.dsn.as_deref().filter(|dsn| *dsn != super::REDACTED) {
        crate::destinations::postgres::connect_config(dsn)
            .map_err(|reason| invalid(&field("dsn"), reason))?;
    }
    if source.mode != MODE_LOGICAL && source.mode != MODE_OUTBOX {
        return Err(invalid(&field("mode"), "must be \"logical\" or \"outbox\""));
    }
    for (key, value) in [("slot", &source.slot), ("publication", &source.publication)] {
        if let Some(value) = value {
            if !identifier_is_valid(value) {
                return Err(invalid(
                    &field(key),
                    "must be 1 to 63 of [a-z0-9_], not starting with a digit",
                ));
            }
        }
    }
    non_empty(&field("transaction_source"), &source.transaction_source)?;
    if source.amount_unit != "major" && source.amount_unit != "minor" {
        return Err(invalid(
            &field("amount_unit"),
            "must be \"major\" or \"minor\"",
        ));
    }
    if let Some(interval_ms) = source.interval_ms {
        within(&field("interval_ms"), interval_ms, 100, 86_400_000)?;
    }
    within(&field("batch"), u64::from(source.batch), 1, 10_000)?;
    within(
        &field("lag_alert_bytes"),
        source.lag_alert_bytes,
        1,
        u64::MAX,
    )?;
    within(&field("overlap_s"), source.overlap_s, 0, 86_400)?;
    if source.tables.is_empty() {
        return Err(invalid(&field("tables"), "name at least one table"));
    }
    for (table_name, table) in &source.tables {
        let table_field = |key: &str| format!("sources.postgres.{name}.tables.{table_name}.{key}");
        if split_table_name(table_name).is_none() {
            return Err(invalid(
                &format!("sources.postgres.{name}.tables.{table_name}"),
                "a table is named `schema.table`, each of [a-z0-9_] (1 to 63, not starting with a digit)",
            ));
        }
        if table.primary_key.is_empty() {
            return Err(invalid(
                &table_field("primary_key"),
                "name at least one column",
            ));
        }
        let columns = table.primary_key.iter().chain(table.updated_at.iter());
        for column in columns {
            if !identifier_is_valid(column) {
                return Err(invalid(
                    &table_field("primary_key"),
                    format!("`{column}` is not a plain column name ([a-z0-9_])"),
                ));
            }
        }
        if table.kind != "gift" && table.kind != "contact" {
            return Err(invalid(
                &table_field("kind"),
                "must be \"gift\" or \"contact\"",
            ));
        }
        for (target, pointer) in &table.fields {
            if !pointer.starts_with('/') {
                return Err(invalid(
                    &table_field(&format!("fields.{target}")),
                    "must be a JSON Pointer into the row, such as \"/amount\"",
                ));
            }
        }
        let required = if table.kind == "gift" {
            "amount"
        } else {
            "referenceId"
        };
        if !table.fields.contains_key(required) {
            return Err(invalid(
                &table_field("fields"),
                format!("a {} table must map `{required}`", table.kind),
            ));
        }
        if source.mode == MODE_OUTBOX && table.updated_at.is_none() {
            return Err(invalid(
                &table_field("updated_at"),
                "is required in outbox mode: rows are read in (updated_at, primary key) order",
            ));
        }
    }
    Ok(())
}
