//! The `postgres` destination: the partner's Postgres, one table per kind, upserted by
//! Virtuous id (docs/pull.md "Postgres").
//!
//! Every `deliver` is one transaction: per table, one `INSERT … SELECT … FROM
//! jsonb_to_recordset($1) ON CONFLICT (id) DO UPDATE … WHERE target.version_ms <=
//! EXCLUDED.version_ms` for the upserts and one for the deletes, so an older version never
//! overwrites a newer one and the same batch applied twice leaves the same rows. The batch
//! travels as one JSON text parameter (no extra driver features). A data error (SQLSTATE
//! class 22 or 23) makes the call apply its changes one by one and reject those that fail
//! alone; any other error (connection, server shut down, timeout) answers `retry` and
//! drops the connection, which is opened again on the next call.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use steward_actors::ports::Destination;
use steward_actors::ports::LocalFuture;
use steward_actors::pull::{ChangeKind, ChangeOp, DeliveryAnswer, StoredChange};
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, NoTls};

use crate::tenant::PostgresDestinationDoc;

pub mod columns;
use columns::{table_of, Table};

/// Longest wait for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest one `deliver`'s writes may take before the connection is dropped and retried.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// Characters of a server message kept in a retry message or dead letter.
const MESSAGE_CHARS: usize = 300;

/// The connection settings of a DSN (libpq `key=value` or `postgres://` URL). Refuses what
/// cannot work: no host, no user, `sslmode=require` (TLS is not supported yet). The error
/// never repeats the DSN (it carries the password).
pub fn connect_config(dsn: &str) -> Result<tokio_postgres::Config, String> {
    let mut config: tokio_postgres::Config = dsn.parse().map_err(|_| {
        "must be a libpq key=value string (host=… user=… dbname=…) or a postgres:// URL".to_string()
    })?;
    if config.get_hosts().is_empty() {
        return Err("names no host".into());
    }
    if config.get_user().is_none() {
        return Err("names no user".into());
    }
    if matches!(config.get_ssl_mode(), SslMode::Require) {
        return Err(
            "asks for TLS (sslmode=require), which the postgres destination does not support \
             yet: use sslmode=disable over a private network or a tunnel"
                .into(),
        );
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    config.application_name("steward");
    Ok(config)
}

/// A schema name we create and quote: 1 to 63 of `[a-z0-9_]`, not starting with a digit.
pub fn identifier_is_valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// A partner's Postgres database.
pub struct PostgresDestination {
    inner: Arc<Inner>,
}

struct Inner {
    tenant_id: String,
    name: String,
    config: tokio_postgres::Config,
    schema: String,
    /// Calls never overlap; the lock is held across a whole call.
    state: tokio::sync::Mutex<Connection>,
}

#[derive(Default)]
struct Connection {
    client: Option<Client>,
    /// The schema and tables exist (checked once per connection).
    tables_ready: bool,
}

/// A failed write, classified once.
enum WriteError {
    /// The data of this batch: try the items one by one.
    Data(String),
    /// Anything else: drop the connection, retry later.
    Transient(String),
}

fn classify(err: &tokio_postgres::Error) -> WriteError {
    let message = super::first_chars(&err.to_string(), MESSAGE_CHARS);
    let sqlstate = err.code().map(|code| code.code().to_string());
    match sqlstate {
        Some(code) if code.starts_with("22") || code.starts_with("23") => {
            WriteError::Data(format!("{message} (SQLSTATE {code})"))
        }
        Some(code) => WriteError::Transient(format!("{message} (SQLSTATE {code})")),
        None => WriteError::Transient(message),
    }
}

impl PostgresDestination {
    pub fn new(
        tenant_id: &str,
        name: &str,
        settings: &PostgresDestinationDoc,
    ) -> Result<PostgresDestination, String> {
        let config = connect_config(settings.dsn.as_deref().unwrap_or_default())
            .map_err(|problem| format!("dsn {problem}"))?;
        if !identifier_is_valid(&settings.schema) {
            return Err("schema is not a valid identifier".into());
        }
        Ok(PostgresDestination {
            inner: Arc::new(Inner {
                tenant_id: tenant_id.to_string(),
                name: name.to_string(),
                config,
                schema: settings.schema.clone(),
                state: tokio::sync::Mutex::new(Connection::default()),
            }),
        })
    }
}

impl Destination for PostgresDestination {
    fn deliver(&self, items: Vec<StoredChange>) -> LocalFuture<DeliveryAnswer> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move { inner.deliver(items).await })
    }
}

impl Inner {
    async fn deliver(&self, items: Vec<StoredChange>) -> DeliveryAnswer {
        let Some(last_seq) = items.last().map(|change| change.seq) else {
            return DeliveryAnswer::default();
        };
        let mut connection = self.state.lock().await;
        if let Err(message) = self.ready(&mut connection).await {
            connection.forget();
            return DeliveryAnswer::retry(message);
        }
        match self.write_timed(&mut connection, &items).await {
            Ok(()) => DeliveryAnswer::committed(last_seq),
            Err(WriteError::Data(_)) => self.one_by_one(&mut connection, items).await,
            Err(WriteError::Transient(message)) => {
                connection.forget();
                DeliveryAnswer::retry(message)
            }
        }
    }

    /// After a data error: each change in its own transaction; those failing alone are
    /// rejected (dead letters), the first transient error stops the call.
    async fn one_by_one(
        &self,
        connection: &mut Connection,
        items: Vec<StoredChange>,
    ) -> DeliveryAnswer {
        let mut answer = DeliveryAnswer::default();
        for change in items {
            let seq = change.seq;
            match self
                .write_timed(connection, std::slice::from_ref(&change))
                .await
            {
                Ok(()) => {}
                Err(WriteError::Data(reason)) => answer.rejected.push((seq, reason)),
                Err(WriteError::Transient(message)) => {
                    connection.forget();
                    answer.retry = DeliveryAnswer::retry(message).retry;
                    return answer;
                }
            }
            answer.committed_through = Some(seq);
        }
        answer
    }

    /// Connects when there is no open connection, and creates the schema and tables once
    /// per connection.
    async fn ready(&self, connection: &mut Connection) -> Result<(), String> {
        if connection.client.as_ref().is_some_and(Client::is_closed) {
            connection.forget();
        }
        if connection.client.is_none() {
            let connected = tokio::time::timeout(CONNECT_TIMEOUT, self.config.connect(NoTls))
                .await
                .map_err(|_| "connecting timed out".to_string())?
                .map_err(|err| format!("connecting failed: {}", describe(&err)))?;
            let (client, driver) = connected;
            let tenant_id = self.tenant_id.clone();
            let name = self.name.clone();
            // The connection's I/O runs beside the client; it ends when the client drops.
            tokio::spawn(async move {
                if let Err(err) = driver.await {
                    tracing::warn!(tenant_id = %tenant_id, destination = %name, error = %describe(&err), "postgres destination connection ended");
                }
            });
            connection.client = Some(client);
            connection.tables_ready = false;
        }
        let Connection {
            client: Some(client),
            tables_ready,
        } = connection
        else {
            return Err("no connection".into());
        };
        if !*tables_ready {
            let ddl = create_tables_sql(&self.schema);
            tokio::time::timeout(WRITE_TIMEOUT, client.batch_execute(&ddl))
                .await
                .map_err(|_| "creating the tables timed out".to_string())?
                .map_err(|err| format!("creating the tables failed: {}", describe(&err)))?;
            *tables_ready = true;
        }
        Ok(())
    }

    async fn write_timed(
        &self,
        connection: &mut Connection,
        items: &[StoredChange],
    ) -> Result<(), WriteError> {
        let Some(client) = connection.client.as_mut() else {
            return Err(WriteError::Transient("no connection".into()));
        };
        match tokio::time::timeout(WRITE_TIMEOUT, write(client, &self.schema, items)).await {
            Ok(result) => result.map_err(|err| classify(&err)),
            Err(_) => Err(WriteError::Transient("writing timed out".into())),
        }
    }
}

impl Connection {
    fn forget(&mut self) {
        self.client = None;
        self.tables_ready = false;
    }
}

fn describe(err: &tokio_postgres::Error) -> String {
    super::first_chars(&err.to_string(), MESSAGE_CHARS)
}

/// One transaction: per table, the upserts then the deletes. Only the newest change of each
/// record in the batch is written (two rows for one id would violate `ON CONFLICT`'s
/// one-touch rule; the guard makes the result the same).
async fn write(
    client: &mut Client,
    schema: &str,
    items: &[StoredChange],
) -> Result<(), tokio_postgres::Error> {
    let transaction = client.transaction().await?;
    for kind in ChangeKind::ALL {
        let table = table_of(kind);
        let newest = newest_by_id(items, kind);
        for op in [ChangeOp::Upsert, ChangeOp::Delete] {
            let rows: Vec<Value> = newest
                .iter()
                .filter(|change| change.op == op)
                .map(|change| row_json(&table, change))
                .collect();
            if rows.is_empty() {
                continue;
            }
            let sql = upsert_sql(schema, &table, op);
            let rows_text = Value::Array(rows).to_string();
            transaction.execute(sql.as_str(), &[&rows_text]).await?;
        }
    }
    transaction.commit().await
}

/// The newest change (by version, then sequence) of each record of `kind` in `items`.
fn newest_by_id(items: &[StoredChange], kind: ChangeKind) -> Vec<&StoredChange> {
    let mut newest: std::collections::BTreeMap<&str, &StoredChange> = Default::default();
    for change in items.iter().filter(|change| change.kind == kind) {
        let slot = newest.entry(change.id.as_str()).or_insert(change);
        if (change.version_ms, change.seq) > (slot.version_ms, slot.seq) {
            *slot = change;
        }
    }
    newest.into_values().collect()
}

/// One row of `jsonb_to_recordset`: the common columns and the table's typed ones.
fn row_json(table: &Table, change: &StoredChange) -> Value {
    let modified_at = change
        .modified_at
        .as_deref()
        .and_then(columns::timestamp_rfc3339);
    let deleted_at = (change.op == ChangeOp::Delete).then(|| {
        modified_at
            .clone()
            .or_else(|| columns::timestamp_of_ms(change.version_ms))
    });
    let mut row = json!({
        "id": change.id,
        "record": change.record,
        "modified_at": modified_at,
        "version_ms": change.version_ms,
        "deleted_at": deleted_at.flatten(),
        "own": change.own,
    });
    for column in table.columns {
        row[column.name] = (column.extract)(&change.record);
    }
    row
}

/// The schema (when missing) and every table, idempotent. `schema` is a checked identifier.
pub fn create_tables_sql(schema: &str) -> String {
    // `CREATE SCHEMA IF NOT EXISTS` checks the CREATE privilege on the database before it
    // looks: a user owning an existing schema, without that privilege, would be refused.
    let mut sql = format!(
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = '{schema}') \
         THEN CREATE SCHEMA \"{schema}\"; END IF; END $$;\n"
    );
    for kind in ChangeKind::ALL {
        let table = table_of(kind);
        let typed: String = table
            .columns
            .iter()
            .map(|column| format!(", {} {}", column.name, column.sql_type))
            .collect();
        sql.push_str(&format!(
            "CREATE TABLE IF NOT EXISTS \"{schema}\".{name} (id text PRIMARY KEY, record jsonb, \
             modified_at timestamptz, version_ms bigint NOT NULL, deleted_at timestamptz, \
             own boolean NOT NULL DEFAULT false, synced_at timestamptz NOT NULL DEFAULT now(){typed});\n",
            name = table.name
        ));
    }
    sql
}

/// The guarded upsert (or delete) of one table from a JSON array parameter.
fn upsert_sql(schema: &str, table: &Table, op: ChangeOp) -> String {
    let typed_names: Vec<&str> = table.columns.iter().map(|column| column.name).collect();
    let typed_defs: String = table
        .columns
        .iter()
        .map(|column| format!(", {} {}", column.name, column.sql_type))
        .collect();
    let insert_typed: String = typed_names.iter().map(|name| format!(", {name}")).collect();
    let select_typed: String = typed_names
        .iter()
        .map(|name| format!(", r.{name}"))
        .collect();
    let on_conflict = match op {
        ChangeOp::Upsert => {
            let set_typed: String = typed_names
                .iter()
                .map(|name| format!(", {name} = EXCLUDED.{name}"))
                .collect();
            format!(
                "record = EXCLUDED.record, modified_at = EXCLUDED.modified_at, \
                 version_ms = EXCLUDED.version_ms, deleted_at = NULL, own = EXCLUDED.own, \
                 synced_at = now(){set_typed}"
            )
        }
        // A delete keeps the last record it had; it marks it deleted at its version.
        ChangeOp::Delete => "deleted_at = EXCLUDED.deleted_at, version_ms = EXCLUDED.version_ms, \
                             synced_at = now()"
            .to_string(),
    };
    format!(
        "INSERT INTO \"{schema}\".{name} AS target \
         (id, record, modified_at, version_ms, deleted_at, own, synced_at{insert_typed}) \
         SELECT r.id, r.record, r.modified_at, r.version_ms, r.deleted_at, r.own, now(){select_typed} \
         FROM jsonb_to_recordset(($1::text)::jsonb) AS r(id text, record jsonb, \
         modified_at timestamptz, version_ms bigint, deleted_at timestamptz, own boolean{typed_defs}) \
         ON CONFLICT (id) DO UPDATE SET {on_conflict} \
         WHERE target.version_ms <= EXCLUDED.version_ms",
        name = table.name
    )
}
