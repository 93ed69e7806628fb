//! Goal of this helper module: what the CDC source's tests share (issue 18, a partner's own
//! Postgres as a source) — a schema of their own on the shared logical-decoding cluster with a
//! gift table, a contact table, a table outside the publication and the publication, the
//! tenant document's `sources.postgres.{name}` block, readings of the poller JSON
//! (`position`, `source_status`) and of `pg_replication_slots`, LSN arithmetic, and what
//! reached Virtuous (gifts by source row, contact transactions by reference).

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use futures_util::SinkExt;
use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{at_timeout, queued_total, status_alert, wait_until, TestApp};
use crate::external_sandbox::sandbox_json;
use crate::pg_support::{unique_schema, PgCluster};
use crate::poll_support::poller_of;
pub use crate::poll_support::virtuous_emails as contact_emails;

/// Gifts' `transactionSource` and contacts' `referenceSource` of every CDC test tenant.
pub const TRANSACTION_SOURCE: &str = "Events DB";

/// `"X/Y"` (two hex halves, Postgres's `pg_lsn` text) → the 64-bit position.
pub fn parse_lsn(text: &str) -> u64 {
    let (high, low) = text
        .split_once('/')
        .unwrap_or_else(|| panic!("not an LSN: {text:?}"));
    let high = u64::from_str_radix(high, 16).unwrap_or_else(|_| panic!("not an LSN: {text:?}"));
    let low = u64::from_str_radix(low, 16).unwrap_or_else(|_| panic!("not an LSN: {text:?}"));
    assert!(
        high <= u32::MAX as u64 && low <= u32::MAX as u64,
        "{text:?}"
    );
    (high << 32) | low
}

/// The position back as Postgres prints it.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// The stored position's LSN in a poller view (`position.lsn`), if any.
pub fn position_lsn(poller: &Value) -> Option<u64> {
    poller["position"]["lsn"].as_str().map(parse_lsn)
}

/// Whether the poller has a stored position and no snapshot in progress (it streams).
pub fn streaming(poller: &Value) -> bool {
    position_lsn(poller).is_some() && poller["position"]["snapshot"].is_null()
}

/// A gift row as the tests write it: the amount in cents (written as `numeric(12,2)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GiftRow {
    pub id: i64,
    pub amount_cents: i64,
    pub email: String,
}

impl GiftRow {
    /// The row a test writes for `id`: an amount from 1.00 to 999.99 that differs between
    /// neighbours, and a donor email of its own.
    pub fn numbered(id: i64) -> GiftRow {
        GiftRow {
            id,
            amount_cents: 100 + (id * 7_919) % 99_900,
            email: format!("donor{id}@gifts.example.org"),
        }
    }

    pub fn amount_text(&self) -> String {
        amount_text(self.amount_cents)
    }
}

/// Cents as Postgres prints a `numeric(12,2)`: `1234` → `"12.34"`.
pub fn amount_text(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// A contact row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonRow {
    pub id: i64,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
}

impl PersonRow {
    /// Version `version` of person `id` (each version's values differ from every other's).
    pub fn numbered(id: i64, version: u32) -> PersonRow {
        PersonRow {
            id,
            email: format!("person{id}.v{version}@people.example.org"),
            first_name: format!("First{id}v{version}"),
            last_name: format!("Last{id}"),
        }
    }
}

/// A test's own corner of the shared logical cluster: schema `{schema}` with `gifts`,
/// `people` (both in publication `{schema}_pub`) and `other` (outside it); the slot name the
/// test's source uses (`{schema}_slot`, created by Steward).
pub struct CdcDb {
    pub cluster: &'static PgCluster,
    pub schema: String,
    pub publication: String,
    pub slot: String,
    pub client: tokio_postgres::Client,
}

impl CdcDb {
    /// Creates the schema, its three tables and the publication. `test` is a short lower-case
    /// name (the slot name must stay under 64 characters).
    pub async fn create(test: &str) -> CdcDb {
        let cluster = PgCluster::shared_logical();
        let schema = unique_schema(test);
        let client = cluster.connect().await;
        let db = CdcDb {
            cluster,
            publication: format!("{schema}_pub"),
            slot: format!("{schema}_slot"),
            schema,
            client,
        };
        let schema = &db.schema;
        db.execute(&format!(
            "CREATE SCHEMA {schema};
             CREATE TABLE {schema}.gifts (id bigint PRIMARY KEY, amount numeric(12,2) NOT NULL,
                 email text, given_at timestamptz NOT NULL DEFAULT now());
             CREATE TABLE {schema}.people (id bigint PRIMARY KEY, email text, first_name text,
                 last_name text);
             CREATE TABLE {schema}.other (id bigserial PRIMARY KEY, note text);
             CREATE PUBLICATION {schema}_pub FOR TABLE {schema}.gifts, {schema}.people;"
        ))
        .await;
        db
    }

    pub fn gifts(&self) -> String {
        format!("{}.gifts", self.schema)
    }

    pub fn people(&self) -> String {
        format!("{}.people", self.schema)
    }

    pub fn other(&self) -> String {
        format!("{}.other", self.schema)
    }

    /// Runs `sql` (one or more statements, no parameters).
    pub async fn execute(&self, sql: &str) {
        self.client
            .batch_execute(sql)
            .await
            .unwrap_or_else(|error| panic!("{sql}: {error:?}"));
    }

    /// One multi-row `INSERT` (one statement, one transaction).
    pub async fn insert_gifts(&self, rows: &[GiftRow]) {
        self.execute(&insert_gifts_sql(&self.gifts(), rows)).await;
    }

    /// One multi-row `INSERT` of people.
    pub async fn insert_people(&self, rows: &[PersonRow]) {
        self.execute(&insert_people_sql(&self.people(), rows)).await;
    }

    /// A `COPY … FROM STDIN` of gift rows: all of them commit at one LSN.
    pub async fn copy_gifts(&self, rows: &[GiftRow]) {
        let mut data = String::new();
        for row in rows {
            data.push_str(&format!(
                "{}\t{}\t{}\n",
                row.id,
                row.amount_text(),
                row.email
            ));
        }
        let statement = format!("COPY {} (id, amount, email) FROM STDIN", self.gifts());
        let sink = self
            .client
            .copy_in::<_, VecDeque<u8>>(statement.as_str())
            .await
            .expect("COPY … FROM STDIN");
        let mut sink = std::pin::pin!(sink);
        sink.send(VecDeque::from(data.into_bytes()))
            .await
            .expect("COPY data");
        let copied = sink.as_mut().finish().await.expect("COPY ends");
        assert_eq!(copied, rows.len() as u64);
    }

    /// `UPDATE people` to `row`'s values.
    pub async fn update_person(&self, row: &PersonRow) {
        self.execute(&update_person_sql(&self.people(), row)).await;
    }

    /// `pg_current_wal_insert_lsn()`: the end of the WAL inserted so far, so past every
    /// commit made before (`pg_current_wal_lsn()` is the write position, which lags under
    /// synchronous_commit=off).
    pub async fn current_lsn(&self) -> u64 {
        let row = self
            .client
            .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
            .await
            .unwrap();
        parse_lsn(row.get::<_, &str>(0))
    }

    /// The test's slot in `pg_replication_slots` (`None`: there is none).
    pub async fn slot_row(&self) -> Option<SlotRow> {
        slot_row(&self.client, &self.slot).await
    }

    /// The slot's `confirmed_flush_lsn` (panics when there is no slot).
    pub async fn confirmed_flush_lsn(&self) -> u64 {
        let row = self
            .slot_row()
            .await
            .unwrap_or_else(|| panic!("no slot {}", self.slot));
        row.confirmed_flush_lsn
            .unwrap_or_else(|| panic!("slot {} has no confirmed_flush_lsn", self.slot))
    }

    /// Drops the slot, waiting (up to 30 s) while a reader still holds it active.
    pub async fn drop_slot(&self) {
        let last_error = std::cell::RefCell::new(String::new());
        wait_until(
            Duration::from_secs(30),
            at_timeout(|| format!("dropping slot {}: {}", self.slot, last_error.borrow())),
            || async {
                match self
                    .client
                    .execute(
                        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                         WHERE slot_name = $1",
                        &[&self.slot],
                    )
                    .await
                {
                    Ok(_) => Some(()),
                    Err(error) => {
                        *last_error.borrow_mut() = format!("{error:?}");
                        None
                    }
                }
            },
        )
        .await;
    }

    /// The end of a test: the slot goes (the engine that used it must be stopped first, or it
    /// may create it again), so the shared cluster keeps no WAL for it.
    pub async fn cleanup(&self) {
        if self.slot_row().await.is_some() {
            self.drop_slot().await;
        }
    }
}

/// One `pg_replication_slots` row.
#[derive(Debug, Clone)]
pub struct SlotRow {
    pub confirmed_flush_lsn: Option<u64>,
    pub wal_status: Option<String>,
    pub active: bool,
    pub plugin: Option<String>,
}

pub async fn slot_row(client: &tokio_postgres::Client, slot: &str) -> Option<SlotRow> {
    let row = client
        .query_opt(
            "SELECT confirmed_flush_lsn::text, wal_status, active, plugin::text \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap()?;
    Some(SlotRow {
        confirmed_flush_lsn: row.get::<_, Option<&str>>(0).map(parse_lsn),
        wal_status: row.get(1),
        active: row.get(2),
        plugin: row.get(3),
    })
}

/// A text literal (single quotes doubled).
pub fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

pub fn insert_gifts_sql(table: &str, rows: &[GiftRow]) -> String {
    let values: Vec<String> = rows
        .iter()
        .map(|row| format!("({}, {}, {})", row.id, row.amount_text(), quote(&row.email)))
        .collect();
    format!(
        "INSERT INTO {table} (id, amount, email) VALUES {}",
        values.join(", ")
    )
}

pub fn insert_people_sql(table: &str, rows: &[PersonRow]) -> String {
    let values: Vec<String> = rows
        .iter()
        .map(|row| {
            format!(
                "({}, {}, {}, {})",
                row.id,
                quote(&row.email),
                quote(&row.first_name),
                quote(&row.last_name)
            )
        })
        .collect();
    format!(
        "INSERT INTO {table} (id, email, first_name, last_name) VALUES {}",
        values.join(", ")
    )
}

pub fn update_person_sql(table: &str, row: &PersonRow) -> String {
    format!(
        "UPDATE {table} SET email = {}, first_name = {}, last_name = {} WHERE id = {}",
        quote(&row.email),
        quote(&row.first_name),
        quote(&row.last_name),
        row.id
    )
}

/// The `fields` of the gift table: amount, donor email and date.
pub fn gift_fields() -> Value {
    json!({"amount": "/amount", "contact.email": "/email", "giftDate": "/given_at"})
}

/// The `fields` of the contact table.
pub fn person_fields() -> Value {
    json!({"referenceId": "/id", "email": "/email", "firstName": "/first_name",
           "lastName": "/last_name"})
}

/// A logical `sources.postgres.{name}` block for `db` (Steward creates the slot; reads every
/// 200 ms), `extra` merged in.
pub fn logical_source(db: &CdcDb, extra: Value) -> Value {
    let mut source = json!({
        "dsn": db.cluster.dsn(), "mode": "logical", "slot": db.slot,
        "publication": db.publication, "create_slot": true,
        "transaction_source": TRANSACTION_SOURCE, "amount_unit": "major", "interval_ms": 200,
        "tables": {
            db.gifts(): {"primary_key": ["id"], "kind": "gift", "fields": gift_fields()},
            db.people(): {"primary_key": ["id"], "kind": "contact", "fields": person_fields()}
        }
    });
    merge(&mut source, extra);
    source
}

/// `extra`'s keys replace `target`'s (one level).
pub fn merge(target: &mut Value, extra: Value) {
    for (key, value) in extra.as_object().expect("extra is an object") {
        target[key] = value.clone();
    }
}

/// Creates an org named after the tenant in the sandbox at `sandbox_url` (imports on
/// acceptance, a budget that never slows a test; `org_extra` merged into its spec, e.g.
/// `{"dedup_transactions": false}` so that a gift sent twice is two gifts) and the tenant,
/// its Virtuous at `virtuous_base_url` (`"embedded"` or the sandbox's URL), with `sources`
/// (e.g. `{"postgres": {"events": …}}`, or `{}` to add the source later).
pub async fn cdc_tenant(
    app: &TestApp,
    sandbox_url: &str,
    virtuous_base_url: &str,
    tenant: &str,
    sources: Value,
    org_extra: Value,
) {
    let api_key = format!("cdc-key-{tenant}");
    let mut org = json!({"id": tenant, "api_key": api_key, "hourly_limit": 1_000_000,
                         "processing": "immediate"});
    merge(&mut org, org_extra);
    sandbox_call(sandbox_url, Method::POST, "/_sandbox/orgs", Some(org)).await;
    app.create_tenant(&json!({
        "id": tenant, "name": format!("CDC {tenant}"), "time_zone": "UTC",
        "virtuous": {"base_url": virtuous_base_url, "api_key": api_key},
        "sources": sources,
        "budget": {"hourly_limit": 1_000_000, "reserve_pct": 10}
    }))
    .await;
}

/// A sandbox call that must answer 2xx; its JSON.
pub async fn sandbox_call(
    sandbox_url: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Value {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    sandbox_json(&client, sandbox_url, method, path, body).await
}

/// The view of the tenant's Postgres source `name` in `GET /v1/tenants/{id}/pollers`.
pub async fn cdc_poller(app: &TestApp, tenant: &str, name: &str) -> Value {
    poller_of(app, tenant, name).await
}

/// Waits until the source streams (a stored position, no snapshot in progress); the view.
pub async fn wait_streaming(app: &TestApp, tenant: &str, name: &str, timeout: Duration) -> Value {
    let last = std::cell::RefCell::new(Value::Null);
    wait_until(
        timeout,
        at_timeout(|| format!("{tenant}/{name} to stream: {}", last.borrow())),
        || async {
            let view = cdc_poller(app, tenant, name).await;
            let done = streaming(&view).then(|| view.clone());
            *last.borrow_mut() = view;
            done
        },
    )
    .await
}

/// Waits until the stored position is at or past `lsn` and the source streams; the view.
pub async fn wait_position_at_least(
    app: &TestApp,
    tenant: &str,
    name: &str,
    lsn: u64,
    timeout: Duration,
) -> Value {
    let last = std::cell::RefCell::new(Value::Null);
    wait_until(
        timeout,
        at_timeout(|| {
            format!(
                "{tenant}/{name}'s position to reach {}: {}",
                format_lsn(lsn),
                last.borrow()
            )
        }),
        || async {
            let view = cdc_poller(app, tenant, name).await;
            let done = (streaming(&view) && position_lsn(&view).is_some_and(|at| at >= lsn))
                .then(|| view.clone());
            *last.borrow_mut() = view;
            done
        },
    )
    .await
}

/// The transactionId Steward gives the gift of row `pk` of `table` (no `transactionId`
/// mapped): the fact id of the contract's key `{name}:gift:{table}:{pk}`.
pub fn transaction_id_of(table: &str, pk: i64) -> String {
    format!("{table}:{pk}")
}

/// What the org holds: gifts by source row id (through [`transaction_id_of`]) and gifts no
/// row of `table` explains.
#[derive(Debug, Default)]
pub struct VirtuousGifts {
    pub by_row: BTreeMap<i64, Vec<Value>>,
    pub foreign: Vec<Value>,
}

impl VirtuousGifts {
    /// Rows with more than one gift: (row, count).
    pub fn duplicates(&self) -> Vec<(i64, usize)> {
        self.by_row
            .iter()
            .filter(|(_, gifts)| gifts.len() > 1)
            .map(|(row, gifts)| (*row, gifts.len()))
            .collect()
    }

    /// Gifts in all.
    pub fn total(&self) -> usize {
        self.by_row.values().map(Vec::len).sum::<usize>() + self.foreign.len()
    }
}

/// Every gift of org `org`, by the row of `table` it came from.
pub async fn virtuous_gifts(sandbox_url: &str, org: &str, table: &str) -> VirtuousGifts {
    let gifts = sandbox_call(
        sandbox_url,
        Method::GET,
        &format!("/_sandbox/orgs/{org}/gifts"),
        None,
    )
    .await;
    let prefix = format!("{table}:");
    let mut found = VirtuousGifts::default();
    for gift in gifts.as_array().expect("gifts is an array") {
        let row = gift["transactionId"]
            .as_str()
            .and_then(|id| id.strip_prefix(&prefix))
            .and_then(|pk| pk.parse::<i64>().ok());
        match row {
            Some(row) if gift["transactionSource"] == TRANSACTION_SOURCE => {
                found.by_row.entry(row).or_default().push(gift.clone())
            }
            _ => found.foreign.push(gift.clone()),
        }
    }
    found
}

/// A Virtuous gift's amount in cents.
pub fn gift_cents(gift: &Value) -> Option<i64> {
    let amount = match &gift["amount"] {
        Value::Number(number) => number.as_f64()?,
        Value::String(text) => text.parse().ok()?,
        _ => return None,
    };
    Some((amount * 100.0).round() as i64)
}

/// Every contact of the org, by id.
pub async fn virtuous_contacts(sandbox_url: &str, org: &str) -> BTreeMap<u64, Value> {
    let contacts = sandbox_call(
        sandbox_url,
        Method::GET,
        &format!("/_sandbox/orgs/{org}/contacts"),
        None,
    )
    .await;
    contacts
        .as_array()
        .expect("contacts is an array")
        .iter()
        .map(|contact| (contact["id"].as_u64().unwrap(), contact.clone()))
        .collect()
}

/// Virtuous contacts by their `Events DB` reference id; panics when a reference is on two.
pub fn contacts_by_reference(contacts: &BTreeMap<u64, Value>) -> BTreeMap<String, Value> {
    let mut by_reference = BTreeMap::new();
    for contact in contacts.values() {
        for reference in contact["contactReferences"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if reference["source"] == TRANSACTION_SOURCE {
                let id = reference["id"].as_str().unwrap().to_string();
                let earlier = by_reference.insert(id.clone(), contact.clone());
                assert!(
                    earlier.is_none(),
                    "two Virtuous contacts for reference {id}"
                );
            }
        }
    }
    by_reference
}

/// Contact transactions Virtuous queued per `referenceId` (the request log's
/// `reference_ids`: accepted ones only).
pub async fn contact_transactions(sandbox_url: &str, org: &str) -> BTreeMap<String, u64> {
    let log = sandbox_call(
        sandbox_url,
        Method::GET,
        &format!("/_sandbox/orgs/{org}/requests"),
        None,
    )
    .await;
    let mut counts = BTreeMap::new();
    for request in log.as_array().expect("the request log is an array") {
        for id in request["reference_ids"].as_array().into_iter().flatten() {
            *counts.entry(id.as_str().unwrap().to_string()).or_insert(0) += 1;
        }
    }
    counts
}

/// The org's stats.
pub async fn org_stats(sandbox_url: &str, org: &str) -> Value {
    sandbox_call(
        sandbox_url,
        Method::GET,
        &format!("/_sandbox/orgs/{org}/stats"),
        None,
    )
    .await
}

/// Waits until the org holds at least `gifts` gifts and the tenant's queue is empty.
pub async fn wait_gifts_and_drained(
    app: &TestApp,
    sandbox_url: &str,
    tenant: &str,
    gifts: u64,
    timeout: Duration,
) {
    let last = std::cell::RefCell::new(String::new());
    wait_until(
        timeout,
        at_timeout(|| {
            format!(
                "{gifts} gifts in {tenant}'s org and its queue empty: {}",
                last.borrow()
            )
        }),
        || async {
            let stats = org_stats(sandbox_url, tenant).await;
            let status = app.status(tenant).await;
            let held = stats["gifts"].as_u64().unwrap_or(0);
            let queued = queued_total(&status);
            *last.borrow_mut() = format!(
                "{held} gifts, {queued} queued, lanes {}, counts {}",
                status["lanes"], status["counts"]
            );
            (held >= gifts && queued == 0).then_some(())
        },
    )
    .await;
}

/// Waits until the tenant's status lists alert `code`; the alert.
pub async fn wait_alert(app: &TestApp, tenant: &str, code: &str, timeout: Duration) -> Value {
    let last = std::cell::RefCell::new(Value::Null);
    wait_until(
        timeout,
        at_timeout(|| format!("alert {code} on {tenant}: alerts {}", last.borrow())),
        || async {
            let status = app.status(tenant).await;
            let found = status_alert(&status, code);
            *last.borrow_mut() = status["alerts"].clone();
            found
        },
    )
    .await
}

/// The alert codes a tenant's status lists.
pub async fn alert_codes(app: &TestApp, tenant: &str) -> Vec<String> {
    let status = app.status(tenant).await;
    status["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|alert| alert["code"].as_str().map(str::to_string))
        .collect()
}

/// A poller admin action (`pause`, `resume`, `run`, `reset`): status and answer.
pub async fn poller_action(
    app: &TestApp,
    tenant: &str,
    name: &str,
    action: &str,
    body: Option<Value>,
) -> (u16, Value) {
    app.admin_call(
        Method::POST,
        &format!("/v1/tenants/{tenant}/pollers/{name}/{action}"),
        body,
    )
    .await
}

/// The value of the Prometheus sample named exactly `series` (name and labels); summed
/// over every series starting with it when `series` has no labels.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn cdc_support_parses_and_prints_lsns() {
    // Goal: the LSN arithmetic every CDC assertion leans on is right.
    assert_eq!(parse_lsn("0/0"), 0);
    assert_eq!(parse_lsn("0/1532228"), 0x0153_2228);
    assert_eq!(parse_lsn("16/B374D848"), (0x16 << 32) | 0xB374_D848);
    assert!(parse_lsn("1/0") > parse_lsn("0/FFFFFFFF"));
    assert_eq!(format_lsn(parse_lsn("16/B374D848")), "16/B374D848");
    assert_eq!(amount_text(1234), "12.34");
    assert_eq!(amount_text(100), "1.00");
    assert_eq!(gift_cents(&json!({"amount": 12.34})), Some(1234));
    assert_eq!(gift_cents(&json!({"amount": "0.07"})), Some(7));
}

#[tokio::test]
async fn cdc_support_the_logical_cluster_decodes_and_copy_commits_rows_together() {
    // Goal: the test infrastructure the CDC tests lean on is what they assume — the shared
    // cluster runs wal_level=logical, the tables are in the publication, and `copy_gifts`
    // writes its rows in one transaction (one commit LSN), read here through a
    // `test_decoding` slot of the test's own.
    let db = CdcDb::create("cdcinfra").await;
    let level: String = db
        .client
        .query_one("SHOW wal_level", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(level, "logical");
    let published: i64 = db
        .client
        .query_one(
            "SELECT count(*) FROM pg_publication_tables WHERE pubname = $1",
            &[&db.publication],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(published, 2);
    let slot = format!("{}_infra", db.schema);
    db.client
        .execute(
            "SELECT pg_create_logical_replication_slot($1, 'test_decoding')",
            &[&slot],
        )
        .await
        .unwrap();
    let rows: Vec<GiftRow> = (1..=5).map(GiftRow::numbered).collect();
    db.copy_gifts(&rows).await;
    db.insert_gifts(&[GiftRow::numbered(6), GiftRow::numbered(7)])
        .await;
    // Decoding reads flushed WAL only (synchronous_commit is off): wait for both commits.
    let changes = wait_until(
        Duration::from_secs(10),
        "both transactions decodable",
        || async {
            let changes = db
                .client
                .query(
                    "SELECT xid::text, data FROM pg_logical_slot_peek_changes($1, NULL, NULL)",
                    &[&slot],
                )
                .await
                .unwrap();
            let commits = changes
                .iter()
                .filter(|change| change.get::<_, &str>(1).starts_with("COMMIT"))
                .count();
            (commits >= 2).then_some(changes)
        },
    )
    .await;
    let mut inserts_by_xid: BTreeMap<String, usize> = BTreeMap::new();
    for change in &changes {
        let data: &str = change.get(1);
        if data.starts_with(&format!("table {}: INSERT", db.gifts())) {
            *inserts_by_xid.entry(change.get(0)).or_insert(0) += 1;
        }
    }
    let mut sizes: Vec<usize> = inserts_by_xid.values().copied().collect();
    sizes.sort();
    let all: Vec<(String, String)> = changes
        .iter()
        .map(|change| (change.get(0), change.get(1)))
        .collect();
    assert_eq!(
        sizes,
        [2, 5],
        "inserts per transaction: {inserts_by_xid:?}; changes {all:?}"
    );
    let row = slot_row(&db.client, &slot).await.expect("the slot");
    assert_eq!(row.plugin.as_deref(), Some("test_decoding"));
    assert!(row.confirmed_flush_lsn.is_some());
    db.client
        .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
        .await
        .unwrap();
}
