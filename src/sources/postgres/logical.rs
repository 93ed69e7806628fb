//! `mode = "logical"`: a replication slot read through SQL with the built-in `pgoutput`
//! plugin (docs/cdc.md "Logical decoding").
//!
//! Every fetch first reads the slot (`pg_replication_slots`: its confirmed position, WAL
//! status and lag), then does one step:
//! - **first start** (no stored position): the slot is created when `create_slot` allows
//!   (or must exist), and the stored position becomes its confirmed position with a
//!   snapshot to take;
//! - **snapshot**: one page of a table in primary-key order (keyset paging), its rows in the
//!   `backfill` lane; the snapshot's progress is in the stored position, so a restart
//!   resumes it. It overlaps the stream's start: the stream replays changes after the
//!   slot's position, deduplicated by the rows' identities;
//! - **stream**: the slot is advanced (`pg_replication_slot_advance`) to the position the
//!   store holds — the request's, written with the previous page — and only then are the
//!   next changes peeked (`pg_logical_slot_peek_binary_changes`, never consumed by
//!   reading). A crash repeats changes, never skips them. The new position (the last
//!   transaction's end, or the peek's horizon when it read everything before it) is
//!   written with the page's entries. An idle slot advances to the horizon each run: the
//!   heartbeat.
//!
//! A slot that is missing, `lost`, or ahead of the stored position (recreated, advanced by
//! someone else) may have skipped changes: alert `cdc_slot_lost`, and a new snapshot
//! (after creating a slot when `create_slot` allows; otherwise once an operator has).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use steward_actors::poll::{PollFetch, PollPage, PollRequest, PolledItem, Poller, SourceStatus};
use steward_actors::ports::{now_ms, LocalFuture};
use steward_actors::source_fact::AlertNote;
use steward_actors::store::{Lane, RecordKind};
use tokio_postgres::Client;

use super::pgoutput::{format_lsn, parse_lsn, Change, Decoder, Txn};
use super::{
    after_clause, classify, quoted_table, text_rows, Connector, RowMapper, SourceFailure,
    CHANGES_TOTAL, GIFT_DELETED_ALERT, SLOT_LAG_ALERT, SLOT_LAG_BYTES, SLOT_LOST_ALERT,
    SLOT_LOST_TOTAL,
};
use crate::tenant::PostgresSourceSettings;

/// How many deleted rows one alert names.
const DELETED_NAMED_MAX: usize = 5;

/// The stored position (the poller progress's `position`, JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The slot position the store holds: everything before it is captured.
    pub lsn: String,
    /// The snapshot in progress, if any.
    #[serde(default)]
    pub snapshot: Option<SnapshotAt>,
    /// The slot was found lost and no new one exists yet.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lost: bool,
}

/// Where a snapshot stands: the table being read and the last key taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotAt {
    pub table: String,
    pub after: Option<Vec<String>>,
    /// Rows read so far.
    pub rows: u64,
}

/// The slot as `pg_replication_slots` shows it.
struct SlotRow {
    confirmed: u64,
    wal_status: String,
    /// `pg_current_wal_flush_lsn()`: logical decoding reads only flushed WAL, so this — not
    /// the write position, ahead of it under `synchronous_commit = off` — is the horizon a
    /// read may claim to have seen everything before.
    flushed: u64,
    lag_bytes: u64,
}

pub struct LogicalPoller {
    inner: Arc<Inner>,
}

struct Inner {
    connector: Connector,
    mapper: RowMapper,
    slot: String,
    publication: String,
    create_slot: bool,
    batch: u32,
    lag_alert_bytes: u64,
    decoder: std::sync::Mutex<Decoder>,
}

impl LogicalPoller {
    pub fn new(
        connector: Connector,
        mapper: RowMapper,
        settings: &PostgresSourceSettings,
        name: &str,
    ) -> Self {
        LogicalPoller {
            inner: Arc::new(Inner {
                connector,
                mapper,
                slot: settings.slot_name(name),
                publication: settings.publication_name(name),
                create_slot: settings.create_slot,
                batch: settings.batch,
                lag_alert_bytes: settings.lag_alert_bytes,
                decoder: std::sync::Mutex::new(Decoder::default()),
            }),
        }
    }
}

impl Poller for LogicalPoller {
    fn fetch(&self, request: PollRequest) -> LocalFuture<PollFetch> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            if request.listing {
                return PollFetch::Failed {
                    message: "a Postgres source has no listing to backfill from: its tables are \
                              snapshotted when it is added, and again after a reset"
                        .into(),
                    calls: 0,
                };
            }
            let position = match request.position.as_deref().map(serde_json::from_str::<Position>) {
                None => None,
                Some(Ok(position)) => Some(position),
                Some(Err(err)) => {
                    return PollFetch::Failed {
                        message: format!("the stored position does not parse ({err}); reset the poller to take a new snapshot"),
                        calls: 0,
                    }
                }
            };
            let step = Arc::clone(&inner);
            inner
                .connector
                .with(move |client| Box::pin(async move { step.step(client, position).await }))
                .await
                .unwrap_or_else(SourceFailure::into_fetch)
        })
    }
}

impl Inner {
    async fn step(
        &self,
        client: &Client,
        position: Option<Position>,
    ) -> Result<PollFetch, SourceFailure> {
        let slot = self.read_slot(client).await?;
        let mut page = PollPage {
            calls: 1,
            ..PollPage::default()
        };
        page.source_status = Some(SourceStatus {
            slot: Some(self.slot.clone()),
            confirmed: slot.as_ref().map(|slot| format_lsn(slot.confirmed)),
            lag_bytes: slot.as_ref().map(|slot| slot.lag_bytes),
            wal_status: slot.as_ref().map(|slot| slot.wal_status.clone()),
            checked_at_ms: now_ms(),
        });
        if let Some(slot) = &slot {
            metrics::histogram!(SLOT_LAG_BYTES).record(slot.lag_bytes as f64);
            if slot.lag_bytes > self.lag_alert_bytes {
                page.alerts.push(AlertNote {
                    code: SLOT_LAG_ALERT.into(),
                    message: format!(
                        "replication slot {} holds {} bytes of WAL (limit {}): Steward is behind, or stopped; the partner's disk fills while it stays so",
                        self.slot, slot.lag_bytes, self.lag_alert_bytes
                    ),
                });
            } else {
                page.resolve.push(SLOT_LAG_ALERT.into());
            }
        }
        let Some(position) = position else {
            return self.first_start(client, slot, page).await;
        };
        let healthy = match &slot {
            None => false,
            Some(slot) if slot.wal_status == "lost" => false,
            Some(slot) => {
                position.lost || slot.confirmed <= parse_lsn(&position.lsn).unwrap_or(u64::MAX)
            }
        };
        if !healthy {
            return self.slot_lost(client, slot, position, page).await;
        }
        let slot = slot.expect("healthy");
        if position.lost {
            // An operator made a slot again: it starts where it was made.
            tracing::info!(source = %self.mapper.source(), slot = %self.slot, "replication slot exists again; taking a new snapshot");
            page.position = Some(self.snapshot_start(slot.confirmed));
            page.next_cursor = Some("snapshot".into());
            return Ok(PollFetch::Page(page));
        }
        if position.snapshot.is_some() {
            return self.snapshot_page(client, position, page).await;
        }
        self.stream_page(client, position, slot, page).await
    }

    async fn read_slot(&self, client: &Client) -> Result<Option<SlotRow>, SourceFailure> {
        let rows = client
            .query(
                "SELECT confirmed_flush_lsn::text, coalesce(wal_status, ''), \
                        pg_current_wal_lsn()::text, plugin::text, database::text = current_database()::text, \
                        slot_type, pg_current_wal_flush_lsn()::text \
                 FROM pg_replication_slots WHERE slot_name = $1",
                &[&self.slot],
            )
            .await
            .map_err(|err| classify(&err, "reading pg_replication_slots"))?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let plugin: Option<String> = row.get(3);
        let same_database: Option<bool> = row.get(4);
        let slot_type: String = row.get(5);
        if slot_type != "logical" || plugin.as_deref() != Some("pgoutput") {
            return Err(SourceFailure::Other(format!(
                "replication slot {} is a {slot_type} slot with plugin {}: Steward reads a logical slot of the pgoutput plugin",
                self.slot,
                plugin.unwrap_or_default()
            )));
        }
        if same_database != Some(true) {
            return Err(SourceFailure::Other(format!(
                "replication slot {} belongs to another database than the DSN's",
                self.slot
            )));
        }
        let confirmed: Option<String> = row.get(0);
        let current: String = row.get(2);
        let confirmed = confirmed.as_deref().and_then(parse_lsn).unwrap_or(0);
        let current = parse_lsn(&current).unwrap_or(0);
        let flushed: String = row.get(6);
        Ok(Some(SlotRow {
            confirmed,
            wal_status: row.get(1),
            flushed: parse_lsn(&flushed).unwrap_or(0),
            lag_bytes: current.saturating_sub(confirmed),
        }))
    }

    async fn create(&self, client: &Client) -> Result<u64, SourceFailure> {
        let row = client
            .query_one(
                "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')",
                &[&self.slot],
            )
            .await
            .map_err(|err| classify(&err, &format!("creating replication slot {}", self.slot)))?;
        let lsn: String = row.get(0);
        tracing::info!(source = %self.mapper.source(), slot = %self.slot, lsn = %lsn, "replication slot created");
        parse_lsn(&lsn).ok_or_else(|| {
            SourceFailure::Other(format!("the new slot's position {lsn} does not parse"))
        })
    }

    fn create_sql(&self) -> String {
        format!(
            "SELECT pg_create_logical_replication_slot('{}', 'pgoutput');",
            self.slot
        )
    }

    fn snapshot_start(&self, lsn: u64) -> String {
        let first = self.mapper.tables().next().map(str::to_string);
        position_text(&Position {
            lsn: format_lsn(lsn),
            snapshot: first.map(|table| SnapshotAt {
                table,
                after: None,
                rows: 0,
            }),
            lost: false,
        })
    }

    async fn first_start(
        &self,
        client: &Client,
        slot: Option<SlotRow>,
        mut page: PollPage,
    ) -> Result<PollFetch, SourceFailure> {
        let published = client
            .query_opt(
                "SELECT 1 FROM pg_publication WHERE pubname = $1",
                &[&self.publication],
            )
            .await
            .map_err(|err| classify(&err, "reading pg_publication"))?;
        if published.is_none() {
            let tables: Vec<String> = self.mapper.tables().map(str::to_string).collect();
            return Err(SourceFailure::Other(format!(
                "publication {} does not exist: CREATE PUBLICATION {} FOR TABLE {};",
                self.publication,
                self.publication,
                tables.join(", ")
            )));
        }
        let lsn = match slot {
            Some(slot) if slot.wal_status != "lost" => slot.confirmed,
            Some(_) if self.create_slot => {
                self.drop_slot(client).await?;
                self.create(client).await?
            }
            None if self.create_slot => self.create(client).await?,
            _ => {
                return Err(SourceFailure::Other(format!(
                    "replication slot {} does not exist (or is lost): create it with {} or set create_slot",
                    self.slot,
                    self.create_sql()
                )))
            }
        };
        page.position = Some(self.snapshot_start(lsn));
        page.next_cursor = Some("snapshot".into());
        Ok(PollFetch::Page(page))
    }

    async fn drop_slot(&self, client: &Client) -> Result<(), SourceFailure> {
        client
            .execute("SELECT pg_drop_replication_slot($1)", &[&self.slot])
            .await
            .map_err(|err| classify(&err, &format!("dropping lost slot {}", self.slot)))?;
        Ok(())
    }

    async fn slot_lost(
        &self,
        client: &Client,
        slot: Option<SlotRow>,
        position: Position,
        mut page: PollPage,
    ) -> Result<PollFetch, SourceFailure> {
        let why = match &slot {
            None => "is missing".to_string(),
            Some(slot) if slot.wal_status == "lost" => {
                "is lost (Postgres removed WAL it still needed)".to_string()
            }
            Some(slot) => format!(
                "is at {}, past the {} Steward stored (it was made again or advanced by someone else)",
                format_lsn(slot.confirmed),
                position.lsn
            ),
        };
        metrics::counter!(SLOT_LOST_TOTAL).increment(1);
        let remedy = if self.create_slot {
            "Steward creates a new slot and takes a new snapshot (deduplicated)".to_string()
        } else {
            format!(
                "create it again with {} — Steward then takes a new snapshot (deduplicated)",
                self.create_sql()
            )
        };
        page.alerts.push(AlertNote {
            code: SLOT_LOST_ALERT.into(),
            message: format!(
                "replication slot {} {why}: changes made meanwhile may not have been streamed; {remedy}",
                self.slot
            ),
        });
        tracing::error!(source = %self.mapper.source(), slot = %self.slot, why = %why, "replication slot lost");
        if self.create_slot {
            if slot.is_some() {
                self.drop_slot(client).await?;
            }
            let lsn = self.create(client).await?;
            page.position = Some(self.snapshot_start(lsn));
            page.next_cursor = Some("snapshot".into());
        } else {
            page.position = Some(position_text(&Position {
                lost: true,
                ..position
            }));
        }
        Ok(PollFetch::Page(page))
    }

    async fn snapshot_page(
        &self,
        client: &Client,
        position: Position,
        mut page: PollPage,
    ) -> Result<PollFetch, SourceFailure> {
        let at = position.snapshot.clone().expect("caller checked");
        // A table dropped from the configuration meanwhile: go on with the next one.
        let Some(table) = self
            .mapper
            .tables()
            .find(|table| *table >= at.table.as_str())
            .map(str::to_string)
        else {
            return Ok(self.snapshot_done(position, page));
        };
        let after = if table == at.table {
            at.after.clone()
        } else {
            None
        };
        let key = self.mapper.primary_key(&table).to_vec();
        let key_columns: Vec<&str> = key.iter().map(String::as_str).collect();
        let order: Vec<String> = key.iter().map(|column| format!("\"{column}\"")).collect();
        let filter = match &after {
            Some(values) if values.len() == key.len() => {
                format!("WHERE {}", after_clause(&key_columns, values))
            }
            _ => String::new(),
        };
        let sql = format!(
            "SELECT * FROM {} {filter} ORDER BY {} LIMIT {}",
            quoted_table(&table),
            order.join(", "),
            self.batch
        );
        let rows = text_rows(client, &sql)
            .await
            .map_err(|err| classify(&err, &format!("reading {table} for the snapshot")))?;
        let read = rows.len() as u64;
        let last_key = rows
            .last()
            .and_then(|row| self.mapper.key_values(&table, row));
        let now = now_ms();
        for row in rows {
            page.items
                .push(self.item(&table, row, Lane::Backfill, 0, now));
        }
        metrics::counter!(CHANGES_TOTAL, "op" => "snapshot").increment(read);
        let next = if read < u64::from(self.batch) {
            self.mapper
                .tables()
                .find(|next| *next > table.as_str())
                .map(|next| SnapshotAt {
                    table: next.to_string(),
                    after: None,
                    rows: at.rows + read,
                })
        } else {
            Some(SnapshotAt {
                table: table.clone(),
                after: last_key,
                rows: at.rows + read,
            })
        };
        if next.is_none() {
            tracing::info!(source = %self.mapper.source(), rows = at.rows + read, "snapshot taken; streaming from the slot");
        }
        page.position = Some(position_text(&Position {
            snapshot: next,
            ..position
        }));
        page.next_cursor = Some("snapshot".into());
        Ok(PollFetch::Page(page))
    }

    fn snapshot_done(&self, position: Position, mut page: PollPage) -> PollFetch {
        page.position = Some(position_text(&Position {
            snapshot: None,
            ..position
        }));
        page.next_cursor = Some("stream".into());
        PollFetch::Page(page)
    }

    fn item(
        &self,
        table: &str,
        row: Map<String, Value>,
        lane: Lane,
        version_ms: u64,
        now: u64,
    ) -> PolledItem {
        let record_id = self
            .mapper
            .row_id(table, &row)
            .map(|id| id.record_id)
            .unwrap_or_else(|| format!("{table}:?"));
        PolledItem {
            record_id,
            version_ms,
            entries: self.mapper.map_row(table, row, lane, now),
        }
    }

    async fn stream_page(
        &self,
        client: &Client,
        position: Position,
        slot: SlotRow,
        mut page: PollPage,
    ) -> Result<PollFetch, SourceFailure> {
        let stored = parse_lsn(&position.lsn).unwrap_or(0);
        if stored > slot.confirmed {
            // The store holds everything before `stored` (the request's position was written
            // with the page before): only now may Postgres forget it.
            let target = format_lsn(stored);
            client
                .execute(
                    "SELECT pg_replication_slot_advance($1, $2::text::pg_lsn)",
                    &[&self.slot, &target],
                )
                .await
                .map_err(|err| classify(&err, "advancing the replication slot"))?;
        }
        // Everything before the horizon that is published comes back in this read, unless
        // the batch is full: the horizon is flushed WAL only (see `SlotRow::flushed`).
        let horizon = slot.flushed.max(stored);
        let horizon_text = format_lsn(horizon);
        let limit = i32::try_from(self.batch).unwrap_or(i32::MAX);
        let rows = client
            .query(
                "SELECT data FROM pg_logical_slot_peek_binary_changes($1, $2::text::pg_lsn, $3, \
                 'proto_version', '1', 'publication_names', $4::text)",
                &[&self.slot, &horizon_text, &limit, &self.publication],
            )
            .await
            .map_err(|err| classify(&err, "reading changes from the replication slot"))?;
        let read = rows.len();
        let txns = {
            let mut decoder = self
                .decoder
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            decoder.reset();
            let mut txns: Vec<Txn> = Vec::new();
            for row in &rows {
                let data: &[u8] = row.get(0);
                if let Some(txn) = decoder.push(data).map_err(|reason| {
                    SourceFailure::Other(format!("decoding a change: {reason}"))
                })? {
                    txns.push(txn);
                }
            }
            if decoder.inside_transaction() {
                decoder.reset();
                return Err(SourceFailure::Other(
                    "the slot's changes ended inside a transaction; reading again".into(),
                ));
            }
            txns
        };
        let last_end = txns.last().map(|txn| txn.end_lsn).unwrap_or(0);
        // Fewer rows than asked: decoding reached the horizon, and everything before it is
        // in this page. Otherwise only up to the last transaction's end.
        let through = if read >= self.batch as usize {
            last_end
        } else {
            last_end.max(horizon)
        };
        let through = through.max(stored);
        let had_changes = !txns.is_empty();
        let now = now_ms();
        let mut deleted: Vec<String> = Vec::new();
        for txn in txns {
            for change in txn.changes {
                self.add_change(change, txn.commit_ms, now, &mut page, &mut deleted);
            }
        }
        if !deleted.is_empty() {
            let named: Vec<&str> = deleted
                .iter()
                .take(DELETED_NAMED_MAX)
                .map(String::as_str)
                .collect();
            let more = deleted.len().saturating_sub(DELETED_NAMED_MAX);
            page.alerts.push(AlertNote {
                code: GIFT_DELETED_ALERT.into(),
                message: format!(
                    "{}: {} gift row(s) deleted at the source ({}{}); Virtuous keeps their gifts: reverse them by hand if they should not count",
                    self.mapper.source(),
                    deleted.len(),
                    named.join(", "),
                    if more > 0 { format!(" and {more} more") } else { String::new() }
                ),
            });
        }
        page.position = Some(position_text(&Position {
            lsn: format_lsn(through),
            snapshot: None,
            lost: false,
        }));
        page.next_cursor = had_changes.then(|| "stream".to_string());
        Ok(PollFetch::Page(page))
    }

    fn add_change(
        &self,
        change: Change,
        commit_ms: u64,
        now: u64,
        page: &mut PollPage,
        deleted: &mut Vec<String>,
    ) {
        match change {
            Change::Insert { table, row } => {
                metrics::counter!(CHANGES_TOTAL, "op" => "insert").increment(1);
                if self.mapper.knows(&table) {
                    page.items
                        .push(self.item(&table, row, Lane::Live, commit_ms, now));
                }
            }
            // A gift's update is the same fact again (its fingerprint tells a changed amount
            // or date); a contact's is a new version.
            Change::Update { table, row, .. } => {
                metrics::counter!(CHANGES_TOTAL, "op" => "update").increment(1);
                if self.mapper.knows(&table) {
                    page.items
                        .push(self.item(&table, row, Lane::Live, commit_ms, now));
                }
            }
            Change::Delete { table, key } => {
                metrics::counter!(CHANGES_TOTAL, "op" => "delete").increment(1);
                if self.mapper.kind_of(&table) == Some(RecordKind::Gift) {
                    let id = self
                        .mapper
                        .row_id(&table, &key)
                        .map(|id| id.record_id)
                        .unwrap_or_else(|| format!("{table}:?"));
                    deleted.push(id);
                }
            }
            Change::Truncate { tables } => {
                metrics::counter!(CHANGES_TOTAL, "op" => "truncate").increment(1);
                for table in tables {
                    if self.mapper.kind_of(&table) == Some(RecordKind::Gift) {
                        deleted.push(format!("every row of {table} (TRUNCATE)"));
                    }
                }
            }
        }
    }
}

fn position_text(position: &Position) -> String {
    serde_json::to_string(position).expect("a position serialises")
}
