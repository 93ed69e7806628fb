//! `mode = "outbox"`: for hosts without logical replication, each table (an outbox, or any
//! table with an update-time column) is polled in `(updated_at, primary key)` order, with
//! the poller machinery's checkpoint rules (docs/cdc.md "Outbox mode"): a run reads rows at
//! or after its checkpoint's time minus the overlap, pages by keyset on `(updated_at,
//! primary key)` — so rows sharing one `updated_at` never straddle a page boundary wrongly —
//! and the checkpoint moves with the page's entries. Deletes are not seen (a deleted row is
//! simply no longer listed).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use steward_actors::poll::{PollFetch, PollPage, PollRequest, PolledItem, Poller};
use steward_actors::ports::{now_ms, LocalFuture};
use steward_actors::store::Lane;
use tokio_postgres::Client;

use super::{
    after_clause, classify, quoted_table, text_rows, timestamp_ms, Connector, RowMapper,
    SourceFailure, CHANGES_TOTAL,
};
use crate::tenant::PostgresSourceSettings;

/// A run's cursor: the table being read and the last `(updated_at, key)` taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Cursor {
    table: String,
    after: Option<(String, Vec<String>)>,
}

pub struct OutboxPoller {
    inner: Arc<Inner>,
}

struct Inner {
    connector: Connector,
    mapper: RowMapper,
    batch: u32,
}

impl OutboxPoller {
    pub fn new(connector: Connector, mapper: RowMapper, settings: &PostgresSourceSettings) -> Self {
        OutboxPoller {
            inner: Arc::new(Inner {
                connector,
                mapper,
                batch: settings.batch,
            }),
        }
    }
}

impl Poller for OutboxPoller {
    fn fetch(&self, request: PollRequest) -> LocalFuture<PollFetch> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            if request.listing {
                return PollFetch::Failed {
                    message: "a Postgres source has no listing to backfill from: reset its poller \
                              to read its tables from the start"
                        .into(),
                    calls: 0,
                };
            }
            let cursor = match request
                .cursor
                .as_deref()
                .map(serde_json::from_str::<Cursor>)
            {
                None => inner.mapper.tables().next().map(|table| Cursor {
                    table: table.to_string(),
                    after: None,
                }),
                Some(Ok(cursor)) => Some(cursor),
                Some(Err(err)) => {
                    return PollFetch::Failed {
                        message: format!("the run's cursor does not parse: {err}"),
                        calls: 0,
                    }
                }
            };
            let Some(cursor) = cursor else {
                return PollFetch::Page(PollPage::default());
            };
            let step = Arc::clone(&inner);
            let since_ms = request.since_ms;
            inner
                .connector
                .with(move |client| {
                    Box::pin(async move { step.page(client, cursor, since_ms).await })
                })
                .await
                .unwrap_or_else(SourceFailure::into_fetch)
        })
    }
}

impl Inner {
    async fn page(
        &self,
        client: &Client,
        cursor: Cursor,
        since_ms: u64,
    ) -> Result<PollFetch, SourceFailure> {
        let table = cursor.table.clone();
        let Some(updated_at) = self.mapper.updated_at(&table).map(str::to_string) else {
            return Err(SourceFailure::Other(format!(
                "table {table} has no updated_at column configured"
            )));
        };
        let key = self.mapper.primary_key(&table).to_vec();
        let mut order_columns: Vec<&str> = vec![updated_at.as_str()];
        order_columns.extend(key.iter().map(String::as_str));
        let order: Vec<String> = order_columns.iter().map(|c| format!("\"{c}\"")).collect();
        let since_s = since_ms as f64 / 1_000.0;
        let mut filter = format!("\"{updated_at}\" >= to_timestamp({since_s})");
        if let Some((at, values)) = &cursor.after {
            let mut all = vec![at.clone()];
            all.extend(values.iter().cloned());
            filter = format!("{filter} AND {}", after_clause(&order_columns, &all));
        }
        let sql = format!(
            "SELECT * FROM {} WHERE {filter} ORDER BY {} LIMIT {}",
            quoted_table(&table),
            order.join(", "),
            self.batch
        );
        let rows = text_rows(client, &sql)
            .await
            .map_err(|err| classify(&err, &format!("reading {table}")))?;
        let read = rows.len();
        let last = rows.last().and_then(|row| {
            let at = row.get(&updated_at)?.as_str()?.to_string();
            Some((at, self.mapper.key_values(&table, row)?))
        });
        // The first run of a source reads everything it has: history, in the backfill lane.
        let lane = if since_ms == 0 {
            Lane::Backfill
        } else {
            Lane::Live
        };
        let now = now_ms();
        let mut page = PollPage {
            calls: 1,
            ..PollPage::default()
        };
        for row in rows {
            let version_ms = row
                .get(&updated_at)
                .and_then(|value| value.as_str())
                .and_then(timestamp_ms)
                .unwrap_or(0);
            let record_id = self
                .mapper
                .row_id(&table, &row)
                .map(|id| id.record_id)
                .unwrap_or_else(|| format!("{table}:?"));
            page.items.push(PolledItem {
                record_id,
                version_ms,
                entries: self.mapper.map_row(&table, row, lane, now),
            });
        }
        metrics::counter!(CHANGES_TOTAL, "op" => "outbox").increment(read as u64);
        let next = if read < self.batch as usize {
            self.mapper
                .tables()
                .find(|next| *next > table.as_str())
                .map(|next| Cursor {
                    table: next.to_string(),
                    after: None,
                })
        } else {
            Some(Cursor { table, after: last })
        };
        page.next_cursor =
            next.map(|cursor| serde_json::to_string(&cursor).expect("a cursor serialises"));
        Ok(PollFetch::Page(page))
    }
}
