//! The demo's CDC part: a partner's own PostgreSQL database as a source (docs/cdc.md).
//!
//! A throwaway cluster ([`super::pg_cluster`], `wal_level=logical`) holds an events
//! platform's tables: `public.donations` (gifts) and `public.people` (contacts), published
//! for Steward. A tenant with a logical source (`create_slot`, read every 200 ms) snapshots
//! the 250 rows, then streams what the platform writes: 100 inserts (single rows, multi-row
//! statements and a `COPY`), 5 amount updates, 3 deletes and 10 people updates. The part
//! shows the slot's position and lag from the poller's view and the two alerts the updates
//! and deletes raise, and checks that every donation row ever inserted is exactly one gift in
//! Virtuous. The source is then removed from the tenant (its connection closes) and the
//! cluster stopped and removed.
//!
//! Without PostgreSQL's server binaries (or when the cluster cannot start) the part is
//! skipped with one line: the demo runs on machines without Postgres.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use futures_util::SinkExt;
use reqwest::Method;
use serde_json::{json, Value};

use super::client::DemoClient;
use super::pg_cluster::{server_bin_dir, PgCluster};
use super::pull::wait;

/// The source's name in the tenant document; its slot and publication.
const SOURCE: &str = "donations-db";
const SLOT: &str = "steward_demo";
const TRANSACTION_SOURCE: &str = "Donations DB";
/// Rows there before the source is added (the snapshot).
const SNAPSHOT_DONATIONS: i64 = 200;
const PEOPLE: i64 = 50;
/// Then streamed: inserted donations (ids after the snapshot's), amount updates (3 snapshot
/// rows, 2 streamed ones), deletes (2 snapshot rows, 1 streamed) and people updates.
const INSERTED: i64 = 100;
const AMOUNT_UPDATES: [i64; 5] = [1, 2, 3, 201, 202];
const DELETES: [i64; 3] = [10, 11, 203];
const PEOPLE_UPDATED: i64 = 10;
/// The most this part waits for any one step (within the demo's deadline).
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the CDC part on a running engine; the closing lines.
pub async fn run(
    client: &DemoClient,
    seed: u64,
    started: Instant,
    deadline: Instant,
) -> anyhow::Result<Vec<String>> {
    let progress = |message: String| {
        println!("[{:>5.1}s] {message}", started.elapsed().as_secs_f64());
    };
    let part_started = Instant::now();
    let bin = match server_bin_dir() {
        Ok(bin) => bin,
        Err(why) => return Ok(skipped(&progress, &why)),
    };
    let cluster = match PgCluster::start(bin).await {
        Ok(cluster) => cluster,
        Err(err) => {
            return Ok(skipped(
                &progress,
                &format!("PostgreSQL did not start ({err:#})"),
            ))
        }
    };
    // On an error (or an interruption) the cluster's drop stops and removes it.
    let lines = with_cluster(client, seed, &cluster, &progress, deadline).await?;
    // A failed stop is no failure of the demo (the cluster's drop stops it at once).
    let stopped = match cluster.stop_and_remove().await {
        Ok(()) => "PostgreSQL stopped and removed".to_string(),
        Err(err) => format!("stopping PostgreSQL: {err:#} (stopped at once instead)"),
    };
    progress(format!(
        "CDC: {stopped}; the CDC part took {:.1} s",
        part_started.elapsed().as_secs_f64()
    ));
    Ok(lines)
}

fn skipped(progress: &impl Fn(String), why: &str) -> Vec<String> {
    progress(format!("CDC part skipped: {why}"));
    vec![format!("CDC (Postgres): skipped — {why}")]
}

async fn with_cluster(
    client: &DemoClient,
    seed: u64,
    cluster: &PgCluster,
    progress: &impl Fn(String),
    deadline: Instant,
) -> anyhow::Result<Vec<String>> {
    let step_deadline = || deadline.min(Instant::now() + STEP_TIMEOUT);
    let db = cluster.connect().await?;
    let version: String = db
        .query_one("SHOW server_version", &[])
        .await
        .context("reading the server version")?
        .get(0);
    // The partner's platform: its tables, what it publishes for Steward, and its rows so far.
    let salt = seed % 1_000;
    db.batch_execute(&format!(
        "CREATE TABLE public.donations (id bigint PRIMARY KEY, amount numeric(12,2), email text,
                                        given_at timestamptz DEFAULT now());
         CREATE TABLE public.people (id bigint PRIMARY KEY, email text, first_name text,
                                     last_name text);
         CREATE PUBLICATION {SLOT} FOR TABLE public.donations, public.people;
         INSERT INTO public.people
           SELECT n, 'donor' || n || '@example.org', 'Donor', 'Number' || n
           FROM generate_series(1, {PEOPLE}) n;
         INSERT INTO public.donations (id, amount, email, given_at)
           SELECT n, {amount}, 'donor' || (1 + n % {PEOPLE}) || '@example.org',
                  now() - n * interval '1 day'
           FROM generate_series(1, {SNAPSHOT_DONATIONS}) n;",
        amount = amount_sql("n", salt),
    ))
    .await
    .context("creating the demo's tables")?;

    let tenant = format!("demo-{seed}-cdc");
    let api_key = format!("vk_demo_{:016x}", rand::random::<u64>());
    client.create_immediate_org(&tenant, &api_key).await?;
    client
        .create_tenant(&json!({
            "id": tenant,
            "name": "Demo charity (Postgres CDC)",
            "time_zone": "America/Chicago",
            "virtuous": {"base_url": "embedded", "api_key": api_key},
            "budget": {"hourly_limit": 36_000, "burst_calls": 20},
            "sources": {"postgres": {SOURCE: {
                "dsn": cluster.dsn(), "mode": "logical", "slot": SLOT, "publication": SLOT,
                "create_slot": true, "interval_ms": 200, "transaction_source": TRANSACTION_SOURCE,
                "tables": {
                    "public.donations": {"primary_key": ["id"], "kind": "gift",
                        "fields": {"amount": "/amount", "giftDate": "/given_at",
                                   "contact.email": "/email"}},
                    "public.people": {"primary_key": ["id"], "kind": "contact",
                        "fields": {"referenceId": "/id", "email": "/email",
                                   "firstName": "/first_name", "lastName": "/last_name"}}}}}},
        }))
        .await?;
    let created = Instant::now();
    progress(format!(
        "tenant {tenant}: created; its source {SOURCE} reads PostgreSQL {version} on 127.0.0.1:{} (logical slot {SLOT}, created by Steward, read every 200 ms): {SNAPSHOT_DONATIONS} donations and {PEOPLE} people already there",
        cluster.port()
    ));

    // The snapshot: every existing row, then the stream starts from the slot.
    let snapshot_rows = (SNAPSHOT_DONATIONS + PEOPLE) as u64;
    let after_snapshot = wait(
        step_deadline(),
        &format!("{tenant}: the snapshot"),
        || async {
            let poller = poller(client, &tenant).await?;
            let counts = status(client, &tenant).await?["counts"].clone();
            let done = poller["position"].is_object()
                && poller["position"]["snapshot"].is_null()
                && number(&counts["captured"]) >= snapshot_rows;
            Ok(done.then_some((poller, counts)))
        },
    )
    .await?;
    let (snapshot_poller, snapshot_counts) = after_snapshot;
    progress(format!(
        "{tenant}: snapshot taken in {:.1} s — {} rows captured ({} donations, {} people); streaming from {}",
        created.elapsed().as_secs_f64(),
        snapshot_counts["captured"],
        SNAPSHOT_DONATIONS,
        PEOPLE,
        snapshot_poller["position"]["lsn"].as_str().unwrap_or("?"),
    ));

    // The platform goes on writing.
    let streaming = Instant::now();
    let target_lsn = write_changes(&db, salt).await?;
    let streamed_changes =
        INSERTED as usize + AMOUNT_UPDATES.len() + DELETES.len() + PEOPLE_UPDATED as usize;
    progress(format!(
        "{tenant}: the platform wrote {streamed_changes} changes in {:.1} s ({INSERTED} inserts: single rows, multi-row statements and a COPY of 30; {} amount updates; {} deletes; {PEOPLE_UPDATED} people updates), WAL now at {target_lsn}",
        streaming.elapsed().as_secs_f64(),
        AMOUNT_UPDATES.len(),
        DELETES.len(),
    ));
    let target = parse_lsn(&target_lsn).context("the server's WAL position")?;
    let expected_captured = snapshot_rows + INSERTED as u64 + PEOPLE_UPDATED as u64;
    let streamed = wait(
        step_deadline(),
        &format!("{tenant}: the stream"),
        || async {
            let poller = poller(client, &tenant).await?;
            let position = &poller["position"];
            let through = position["lsn"].as_str().and_then(parse_lsn).unwrap_or(0);
            Ok((position["snapshot"].is_null() && through >= target).then_some(poller))
        },
    )
    .await?;
    let counts = status(client, &tenant).await?["counts"].clone();
    progress(format!(
        "{tenant}: stream captured through {} in {:.1} s — {} entries captured in all (expected {expected_captured}: the updated and deleted gifts are no new gifts), {} duplicates",
        streamed["position"]["lsn"].as_str().unwrap_or("?"),
        streaming.elapsed().as_secs_f64(),
        counts["captured"],
        counts["duplicates"],
    ));

    // Virtuous: one gift per donation row ever inserted, deleted ones included.
    let expected_ids: Vec<String> = (1..=SNAPSHOT_DONATIONS + INSERTED)
        .map(|id| format!("public.donations:{id}"))
        .collect();
    let gifts = wait(
        step_deadline(),
        &format!("{tenant}: every donation's gift in Virtuous"),
        || async {
            let gifts = gift_counts(client, &tenant).await?;
            let status = status(client, &tenant).await?;
            let drained = queued(&status) == 0;
            Ok((drained && expected_ids.iter().all(|id| gifts.contains_key(id))).then_some(gifts))
        },
    )
    .await?;
    let status_now = status(client, &tenant).await?;
    let twice: Vec<&String> = gifts
        .iter()
        .filter(|(_, &count)| count > 1)
        .map(|(id, _)| id)
        .collect();
    let unexpected: Vec<&String> = gifts
        .keys()
        .filter(|id| !expected_ids.contains(id))
        .collect();
    let gift_total: u64 = gifts.values().sum();
    if !twice.is_empty() || !unexpected.is_empty() {
        bail!(
            "{tenant}: {gift_total} gifts in Virtuous for {} donation rows: {} rows became more than one gift (first: {:?}), {} gifts name no row (first: {:?})",
            expected_ids.len(),
            twice.len(),
            twice.first(),
            unexpected.len(),
            unexpected.first()
        );
    }
    let dead = number(&status_now["counts"]["dead"]);
    ensure!(
        dead == 0,
        "{tenant}: {dead} dead letters (see GET /v1/tenants/{tenant}/dead-letters)"
    );
    progress(format!(
        "{tenant}: Virtuous holds {gift_total} gifts with transactionSource \"{TRANSACTION_SOURCE}\", one per donation row ({} rows now, {} deleted at the source); no dead letters",
        expected_ids.len() - DELETES.len(),
        DELETES.len(),
    ));

    // The slot: idle now, each read (the heartbeat) confirms the stored position.
    let slot_deadline = Instant::now() + Duration::from_secs(3);
    let idle = loop {
        let poller = poller(client, &tenant).await?;
        let status = &poller["source_status"];
        let settled = status["lag_bytes"].as_u64() == Some(0)
            && status["confirmed_flush_lsn"] == poller["position"]["lsn"];
        if settled || Instant::now() >= slot_deadline {
            break poller;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let slot = &idle["source_status"];
    let lag = slot["lag_bytes"].as_u64();
    progress(format!(
        "{tenant}: poller {SOURCE} — position {}, slot {} confirmed at {} ({}), lag {} bytes, checked at {}",
        idle["position"],
        slot["slot"].as_str().unwrap_or("?"),
        slot["confirmed_flush_lsn"].as_str().unwrap_or("?"),
        slot["wal_status"].as_str().unwrap_or("?"),
        lag.map_or_else(|| "?".to_string(), |lag| lag.to_string()),
        slot["checked_at"].as_str().unwrap_or("?"),
    ));

    // The alerts the updates and deletes raised.
    let alerts = wait(
        step_deadline(),
        &format!("{tenant}: the alerts"),
        || async {
            let status = status(client, &tenant).await?;
            let open: BTreeMap<String, Value> = status["alerts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|alert| Some((alert["code"].as_str()?.to_string(), alert.clone())))
                .collect();
            Ok(["source_gift_changed", "source_gift_deleted"]
                .iter()
                .all(|code| open.contains_key(*code))
                .then_some(open))
        },
    )
    .await?;
    for code in ["source_gift_changed", "source_gift_deleted"] {
        let alert = &alerts[code];
        progress(format!(
            "{tenant}: alert {code} (raised {} time(s)): {}",
            alert["count"],
            alert["message"].as_str().unwrap_or_default()
        ));
    }
    let changes = cdc_changes(client).await?;
    let op = |name: &str| changes.get(name).copied().unwrap_or(0);

    // Done with the database: the source leaves the tenant (closing its connection) before
    // the cluster stops, so the engine's log stays quiet.
    let (status_code, answer) = client
        .admin_call(
            Method::PATCH,
            &format!("/tenants/{tenant}"),
            Some(json!({"sources": {"postgres": {SOURCE: null}}})),
        )
        .await?;
    ensure!(
        status_code == 200,
        "{tenant}: removing the source answered {status_code}: {answer}"
    );
    let closed = wait_disconnected(&db, Duration::from_secs(5)).await?;
    if !closed {
        progress(format!(
            "{tenant}: the source was removed but its connection is still open after 5 s"
        ));
    }
    drop(db);

    // The source's own alerts (the tenant may hold others, such as a nearly full disk).
    let codes: Vec<&str> = alerts
        .keys()
        .map(String::as_str)
        .filter(|code| code.starts_with("source_gift_") || code.starts_with("cdc_"))
        .collect();
    Ok(vec![format!(
        "CDC (Postgres, {tenant}): {} rows snapshotted, {} changes streamed ({} inserts, {} updates, {} deletes), {gift_total} gifts in Virtuous for {} donation rows, slot lag {} bytes; alerts: {}",
        op("snapshot"),
        op("insert") + op("update") + op("delete") + op("truncate"),
        op("insert"),
        op("update"),
        op("delete"),
        expected_ids.len(),
        lag.map_or_else(|| "?".to_string(), |lag| lag.to_string()),
        codes.join(", ")
    )])
}

/// A demo amount for row `n` (an SQL expression over `n`): 10.00 to 499.75.
fn amount_sql(n: &str, salt: u64) -> String {
    format!("(({n} * 37 + {salt}) % 490 + 10) + ({n} % 4) * 0.25")
}

/// What the platform writes while Steward streams; the server's flushed WAL position after
/// it (past every commit of it: commits are synchronous).
async fn write_changes(db: &tokio_postgres::Client, salt: u64) -> anyhow::Result<String> {
    let first = SNAPSHOT_DONATIONS + 1;
    let insert_one = |n: i64| {
        format!(
            "INSERT INTO public.donations (id, amount, email) VALUES ({n}, {}, 'donor{}@example.org')",
            amount_sql(&n.to_string(), salt),
            1 + n % PEOPLE
        )
    };
    let run = |sql: String| async move {
        db.batch_execute(&sql)
            .await
            .with_context(|| format!("running {sql}"))
    };
    // 25 single-row inserts, each its own transaction.
    for n in first..first + 25 {
        run(insert_one(n)).await?;
    }
    // A multi-row VALUES statement of 10.
    let values: Vec<String> = (first + 25..first + 35)
        .map(|n| {
            format!(
                "({n}, {}, 'donor{}@example.org')",
                amount_sql(&n.to_string(), salt),
                1 + n % PEOPLE
            )
        })
        .collect();
    run(format!(
        "INSERT INTO public.donations (id, amount, email) VALUES {}",
        values.join(", ")
    ))
    .await?;
    // Amounts corrected: snapshot rows and streamed ones.
    for id in AMOUNT_UPDATES {
        run(format!(
            "UPDATE public.donations SET amount = amount + 5 WHERE id = {id}"
        ))
        .await?;
    }
    // 25 more single rows, then INSERT … SELECT of 10.
    for n in first + 35..first + 60 {
        run(insert_one(n)).await?;
    }
    run(format!(
        "INSERT INTO public.donations (id, amount, email)
           SELECT n, {}, 'donor' || (1 + n % {PEOPLE}) || '@example.org'
           FROM generate_series({}, {}) n",
        amount_sql("n", salt),
        first + 60,
        first + 69
    ))
    .await?;
    // Deletes: two snapshot rows and a streamed one, in one statement.
    let ids: Vec<String> = DELETES.iter().map(i64::to_string).collect();
    run(format!(
        "DELETE FROM public.donations WHERE id IN ({})",
        ids.join(", ")
    ))
    .await?;
    // A COPY of the last 30.
    let mut data = String::new();
    for n in first + 70..first + INSERTED {
        let cents = ((n as u64 * 37 + salt) % 490 + 10) * 100 + (n as u64 % 4) * 25;
        let _ = writeln!(
            data,
            "{n}\t{}.{:02}\tdonor{}@example.org",
            cents / 100,
            cents % 100,
            1 + n % PEOPLE
        );
    }
    let sink = db
        .copy_in("COPY public.donations (id, amount, email) FROM STDIN")
        .await
        .context("starting the COPY")?;
    let mut sink = std::pin::pin!(sink);
    sink.as_mut()
        .send(VecDeque::from(data.into_bytes()))
        .await
        .context("sending the COPY's rows")?;
    let copied = sink.as_mut().finish().await.context("finishing the COPY")?;
    ensure!(copied == 30, "the COPY wrote {copied} rows, expected 30");
    // People move: 10 last names change in one statement.
    run(format!(
        "UPDATE public.people SET last_name = last_name || '-Moved' WHERE id <= {PEOPLE_UPDATED}"
    ))
    .await?;
    let lsn: String = db
        .query_one("SELECT pg_current_wal_flush_lsn()::text", &[])
        .await
        .context("reading the WAL position")?
        .get(0);
    Ok(lsn)
}

/// Waits until no session of Steward's source is left (`application_name` `steward-cdc`);
/// `false` after `timeout`.
async fn wait_disconnected(db: &tokio_postgres::Client, timeout: Duration) -> anyhow::Result<bool> {
    let until = Instant::now() + timeout;
    loop {
        let sessions: i64 = db
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'steward-cdc'",
                &[],
            )
            .await
            .context("reading pg_stat_activity")?
            .get(0);
        if sessions == 0 {
            return Ok(true);
        }
        if Instant::now() >= until {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The tenant's Postgres poller as `GET /v1/tenants/{id}/pollers` shows it.
async fn poller(client: &DemoClient, tenant: &str) -> anyhow::Result<Value> {
    let (code, answer) = client
        .admin_call(Method::GET, &format!("/tenants/{tenant}/pollers"), None)
        .await?;
    ensure!(
        code == 200,
        "{tenant}: the pollers answered {code}: {answer}"
    );
    let poller = answer["pollers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|poller| poller["source"] == SOURCE)
        .cloned()
        .with_context(|| format!("{tenant}: no poller {SOURCE} in {answer}"))?;
    if poller["state"]
        .as_str()
        .is_some_and(|state| state.starts_with("paused_"))
    {
        bail!(
            "{tenant}: the poller {SOURCE} is {}: {}",
            poller["state"],
            poller["last_run"]["error"]
        );
    }
    Ok(poller)
}

async fn status(client: &DemoClient, tenant: &str) -> anyhow::Result<Value> {
    let (code, status) = client
        .admin_call(Method::GET, &format!("/tenants/{tenant}"), None)
        .await?;
    ensure!(
        code == 200,
        "{tenant}: the status answered {code}: {status}"
    );
    Ok(status)
}

/// Entries waiting in any lane.
fn queued(status: &Value) -> u64 {
    ["live", "retry", "reconcile", "backfill"]
        .iter()
        .map(|lane| number(&status["lanes"][lane]["depth"]))
        .sum()
}

fn number(value: &Value) -> u64 {
    value.as_u64().unwrap_or(0)
}

/// transactionId → gifts with it and the source's transactionSource (reversals not counted).
async fn gift_counts(client: &DemoClient, tenant: &str) -> anyhow::Result<BTreeMap<String, u64>> {
    let gifts = client
        .sandbox_call(Method::GET, &format!("/_sandbox/orgs/{tenant}/gifts"), None)
        .await?;
    let mut counts = BTreeMap::new();
    for gift in gifts.as_array().into_iter().flatten() {
        if gift["transactionSource"] != TRANSACTION_SOURCE
            || gift["giftType"] == "ReversingTransaction"
        {
            continue;
        }
        if let Some(id) = gift["transactionId"].as_str() {
            *counts.entry(id.to_string()).or_insert(0) += 1;
        }
    }
    Ok(counts)
}

/// `steward_cdc_changes_total` by `op`, from the engine's `/metrics` (only this part's source
/// reads Postgres in the demo; nothing read `/metrics` before, so its one-second cache is
/// fresh).
async fn cdc_changes(client: &DemoClient) -> anyhow::Result<BTreeMap<String, u64>> {
    let text = client.metrics().await?;
    let mut changes = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("steward_cdc_changes_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let Some(op) = labels
            .split(',')
            .find_map(|label| label.strip_prefix("op=\""))
            .and_then(|op| op.strip_suffix('"'))
        else {
            continue;
        };
        let value = value.trim().parse::<f64>().unwrap_or(0.0) as u64;
        *changes.entry(op.to_string()).or_insert(0) += value;
    }
    Ok(changes)
}

/// `X/Y` (hex halves) → the 64-bit position.
fn parse_lsn(text: &str) -> Option<u64> {
    let (high, low) = text.split_once('/')?;
    Some((u64::from_str_radix(high, 16).ok()? << 32) | u64::from_str_radix(low, 16).ok()?)
}
