//! Goal: a partner's own Postgres as a logical-decoding source (issue 18), end to end — the
//! real engine reads a real Postgres 15's pgoutput stream and the embedded sandbox's orgs
//! (dedup off: a gift sent twice would be two gifts) show what reached Virtuous. Each gift
//! row is one gift whatever the statements that wrote it (multi-row INSERT, COPY, a large
//! transaction, UPDATE, DELETE), contact versions arrive, gift updates and deletes raise
//! their alerts, the initial snapshot overlaps the stream without duplicates, a dropped slot
//! is re-created and re-snapshotted, and an idle source's slot keeps up with the WAL.
//!
//! Size: 2,000 row changes in CI, 10,000 with `STEWARD_FULL_POLL_TESTS=1`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::cdc_support::{
    alert_codes, cdc_poller, cdc_tenant, contact_emails, contact_transactions,
    contacts_by_reference, format_lsn, gift_cents, insert_gifts_sql, insert_people_sql,
    logical_source, metric_sum, org_stats, parse_lsn, poller_action, position_lsn, streaming,
    virtuous_contacts, virtuous_gifts, wait_alert, wait_gifts_and_drained, wait_position_at_least,
    wait_streaming, CdcDb, GiftRow, PersonRow, TRANSACTION_SOURCE,
};
use crate::common::{at_timeout, status_alert, wait_until, SpawnOptions, TestApp};
use crate::poll_support::{last_run_number, sized};

/// The source's name in every test here.
const NAME: &str = "eventsdb";

/// A test's engine, database corner and tenant.
struct Rig {
    app: TestApp,
    sandbox: String,
    db: CdcDb,
    tenant: String,
}

impl Rig {
    /// A fresh schema, engine and org (dedup off) + tenant whose source `eventsdb` reads the
    /// schema's publication (`extra` merged into the source block).
    async fn start(test: &str, tenant: &str, extra: Value) -> Rig {
        let db = CdcDb::create(test).await;
        let app = TestApp::spawn(SpawnOptions::default()).await;
        let sandbox = app.sandbox_url();
        let sources = json!({"postgres": {NAME: logical_source(&db, extra)}});
        cdc_tenant(
            &app,
            &sandbox,
            "embedded",
            tenant,
            sources,
            json!({"dedup_transactions": false}),
        )
        .await;
        Rig {
            app,
            sandbox,
            db,
            tenant: tenant.to_string(),
        }
    }

    async fn poller(&self) -> Value {
        cdc_poller(&self.app, &self.tenant, NAME).await
    }

    async fn counts(&self) -> Value {
        self.app.status(&self.tenant).await["counts"].clone()
    }

    /// Waits until the engine captured `expected` facts in all, then checks it captured no
    /// more than that (a fact captured twice would show here).
    async fn wait_captured(&self, expected: u64, timeout: Duration) {
        let last = std::cell::RefCell::new(Value::Null);
        let captured = wait_until(
            timeout,
            at_timeout(|| format!("{expected} facts captured: counts {}", last.borrow())),
            || async {
                let counts = self.counts().await;
                let captured = counts["captured"].as_u64().unwrap_or(0);
                *last.borrow_mut() = counts;
                (captured >= expected).then_some(captured)
            },
        )
        .await;
        assert_eq!(
            captured,
            expected,
            "facts captured (each gift row once, each contact version once): counts {}",
            self.counts().await
        );
    }

    /// Pauses the source and waits until no read is in progress; the view.
    async fn pause_and_wait_idle(&self) -> Value {
        let (status, body) = poller_action(&self.app, &self.tenant, NAME, "pause", None).await;
        assert_eq!(status, 200, "pause: {body}");
        let last = std::cell::RefCell::new(Value::Null);
        wait_until(
            Duration::from_secs(30),
            at_timeout(|| format!("the poller paused and idle: {}", last.borrow())),
            || async {
                let view = self.poller().await;
                let done = (view["state"] == "paused" && view["run_in_progress"].is_null())
                    .then(|| view.clone());
                *last.borrow_mut() = view;
                done
            },
        )
        .await
    }

    /// Ends the test: the engine stops first (it would create the slot again), then the slot
    /// goes.
    async fn finish(self) {
        let Rig { app, db, .. } = self;
        drop(app);
        db.cleanup().await;
    }
}

/// Checks that every row in `expected` has exactly one gift with the row's first amount,
/// the CDC transactionSource and a contact holding the row's first email; and that nothing
/// else arrived.
async fn assert_one_gift_per_row(rig: &Rig, expected: &BTreeMap<i64, GiftRow>) {
    let gifts = virtuous_gifts(&rig.sandbox, &rig.tenant, &rig.db.gifts()).await;
    assert!(
        gifts.foreign.is_empty(),
        "{} gifts no row explains, e.g. {}",
        gifts.foreign.len(),
        gifts.foreign[0]
    );
    let duplicates = gifts.duplicates();
    assert!(
        duplicates.is_empty(),
        "{} rows have more than one gift (row, gifts): {:?}",
        duplicates.len(),
        &duplicates[..duplicates.len().min(20)]
    );
    let lost: Vec<i64> = expected
        .keys()
        .filter(|row| !gifts.by_row.contains_key(row))
        .copied()
        .collect();
    assert!(
        lost.is_empty(),
        "{} gift rows have no gift, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(20)]
    );
    let unexpected: Vec<i64> = gifts
        .by_row
        .keys()
        .filter(|row| !expected.contains_key(row))
        .copied()
        .collect();
    assert!(
        unexpected.is_empty(),
        "gifts for rows never written: {unexpected:?}"
    );
    let contacts = virtuous_contacts(&rig.sandbox, &rig.tenant).await;
    let mut wrong = Vec::new();
    for (row, truth) in expected {
        let gift = &gifts.by_row[row][0];
        if gift_cents(gift) != Some(truth.amount_cents) {
            wrong.push(format!(
                "row {row}: amount {} (want {})",
                gift["amount"],
                truth.amount_text()
            ));
        }
        if gift["transactionSource"] != TRANSACTION_SOURCE {
            wrong.push(format!(
                "row {row}: transactionSource {}",
                gift["transactionSource"]
            ));
        }
        let emails = gift["contactId"]
            .as_u64()
            .and_then(|id| contacts.get(&id))
            .map(contact_emails)
            .unwrap_or_default();
        if !emails.contains(&truth.email) {
            wrong.push(format!(
                "row {row}: contact emails {emails:?} (want {})",
                truth.email
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} mapped values differ: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(20)]
    );
}

/// Checks the people's contacts: one Virtuous contact per person with its latest email,
/// and at least one and at most `versions[id]` contact transactions for each. (Each version
/// is its own captured fact — the callers check the engine's count — but versions of one
/// contact queued together travel merged in one Contact/Batch item, newest value winning:
/// docs/polling.md "Contacts in bulk".)
async fn assert_contact_versions(
    rig: &Rig,
    latest: &BTreeMap<i64, PersonRow>,
    versions: &BTreeMap<i64, u64>,
) {
    let contacts = virtuous_contacts(&rig.sandbox, &rig.tenant).await;
    let by_reference = contacts_by_reference(&contacts);
    let transactions = contact_transactions(&rig.sandbox, &rig.tenant).await;
    let mut wrong = Vec::new();
    for (id, person) in latest {
        let reference = id.to_string();
        match by_reference.get(&reference) {
            None => wrong.push(format!("person {id}: no Virtuous contact")),
            Some(contact) => {
                let emails = contact_emails(contact);
                if !emails.contains(&person.email) {
                    wrong.push(format!(
                        "person {id}: emails {emails:?} lack {}",
                        person.email
                    ));
                }
            }
        }
        let sent = transactions.get(&reference).copied().unwrap_or(0);
        if sent == 0 || sent > versions[id] {
            wrong.push(format!(
                "person {id}: {sent} contact transactions (want 1 to {}, its versions)",
                versions[id]
            ));
        }
    }
    let strangers: Vec<&String> = transactions
        .keys()
        .filter(|reference| {
            reference
                .parse::<i64>()
                .map_or(true, |id| !latest.contains_key(&id))
        })
        .collect();
    assert!(
        strangers.is_empty(),
        "contact transactions for unknown people: {strangers:?}"
    );
    assert!(
        wrong.is_empty(),
        "{} contacts differ: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(20)]
    );
}

/// Every `step`-th item's share of `items` for step `i` of `steps` (spreads one list over
/// another's loop).
fn share<T: Clone>(items: &[T], i: usize, steps: usize) -> Vec<T> {
    items[i * items.len() / steps..(i + 1) * items.len() / steps].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdc_logical_each_gift_row_is_one_gift_and_contact_versions_arrive() {
    // Goal: 2,000 row changes (10,000 full) over the two tables — multi-row INSERTs,
    // single-row INSERTs, a COPY (many rows at one LSN), one transaction of ≥ 500 gift rows,
    // UPDATEs and DELETEs — end with exactly one gift per gift row, carrying the row's
    // first amount and email; every contact version (insert, each update) is captured once
    // and the Virtuous contact ends with the latest email (at most one contact transaction
    // per version: versions queued together are merged); gift updates and deletes raise
    // `source_gift_changed` / `source_gift_deleted`; the engine captured exactly one fact
    // per gift row and per contact version.
    let started = Instant::now();
    let scale = sized(1, 5) as i64;
    let rig = Rig::start("cdcvol", "cdc-volume", json!({})).await;
    wait_streaming(&rig.app, &rig.tenant, NAME, Duration::from_secs(60)).await;
    let db = &rig.db;

    let rows = |range: std::ops::RangeInclusive<i64>| -> Vec<GiftRow> {
        range.map(GiftRow::numbered).collect()
    };
    let multi = rows(1..=400 * scale);
    let singles = rows(400 * scale + 1..=500 * scale);
    let copied = rows(500 * scale + 1..=700 * scale);
    let large = rows(700 * scale + 1..=1300 * scale);
    let gift_rows = 1300 * scale;
    let people_total = 200 * scale;
    let updated_people = 150 * scale; // updated twice; the others are deleted
    let people: Vec<PersonRow> = (1..=people_total)
        .map(|id| PersonRow::numbered(id, 0))
        .collect();
    let mut statements = 0u64;

    // Inserts, first half: multi-row gift INSERTs, single-row INSERTs, people in tens.
    let multi_chunks: Vec<Vec<GiftRow>> = multi.chunks(10).map(<[GiftRow]>::to_vec).collect();
    let people_chunks: Vec<Vec<PersonRow>> = people.chunks(10).map(<[PersonRow]>::to_vec).collect();
    let steps = multi_chunks.len();
    let half = steps / 2;
    let insert_step = |i: usize| {
        let mut sql = vec![insert_gifts_sql(&db.gifts(), &multi_chunks[i])];
        for row in share(&singles, i, steps) {
            sql.push(insert_gifts_sql(&db.gifts(), &[row]));
        }
        for chunk in share(&people_chunks, i, steps) {
            sql.push(insert_people_sql(&db.people(), &chunk));
        }
        sql
    };
    for i in 0..half {
        for sql in insert_step(i) {
            db.execute(&sql).await;
            statements += 1;
        }
    }
    // A COPY: its rows share one commit LSN.
    db.copy_gifts(&copied).await;
    // One large transaction: 600 (3,000 full) gift rows in six statements.
    let mut large_sql = String::from("BEGIN;");
    for chunk in large.chunks(large.len() / 6) {
        large_sql.push_str(&insert_gifts_sql(&db.gifts(), chunk));
        large_sql.push(';');
    }
    large_sql.push_str("COMMIT;");
    db.execute(&large_sql).await;
    for i in half..steps {
        for sql in insert_step(i) {
            db.execute(&sql).await;
            statements += 1;
        }
    }

    // Updates and deletes, interleaved over both tables: gift rows ≡ 0 (mod 26) get a new
    // amount, ≡ 13 a new email (not a mapped amount or date: no alert), ≡ 7 are deleted;
    // people 1..=150 (×scale) get two new versions, the rest are deleted.
    let gifts_table = db.gifts();
    let people_table = db.people();
    let mut gift_ops = Vec::new();
    for id in 1..=gift_rows {
        match id % 26 {
            0 => gift_ops.push(format!(
                "UPDATE {gifts_table} SET amount = amount + 1 WHERE id = {id}"
            )),
            13 => gift_ops.push(format!(
                "UPDATE {gifts_table} SET email = 'changed{id}@gifts.example.org' WHERE id = {id}"
            )),
            7 => gift_ops.push(format!("DELETE FROM {gifts_table} WHERE id = {id}")),
            _ => {}
        }
    }
    let mut people_ops = Vec::new();
    let mut latest: BTreeMap<i64, PersonRow> = people.iter().map(|p| (p.id, p.clone())).collect();
    let mut versions: BTreeMap<i64, u64> = people.iter().map(|p| (p.id, 1)).collect();
    for version in 1..=2 {
        for id in 1..=updated_people {
            let row = PersonRow::numbered(id, version);
            people_ops.push(crate::cdc_support::update_person_sql(&people_table, &row));
            latest.insert(id, row);
            *versions.get_mut(&id).unwrap() += 1;
        }
    }
    for id in updated_people + 1..=people_total {
        people_ops.push(format!("DELETE FROM {people_table} WHERE id = {id}"));
    }
    let rounds = gift_ops.len().max(people_ops.len());
    for i in 0..rounds {
        for sql in share(&gift_ops, i, rounds)
            .into_iter()
            .chain(share(&people_ops, i, rounds))
        {
            db.execute(&sql).await;
            statements += 1;
        }
    }
    let changes = gift_rows + people_total + gift_ops.len() as i64 + people_ops.len() as i64;
    let written_at = db.current_lsn().await;
    let wrote = started.elapsed();
    eprintln!(
        "cdc volume: {changes} row changes ({gift_rows} gift rows, {people_total} people, {} gift \
         updates/deletes, {} people updates/deletes) in {statements} statements + 1 COPY + 1 \
         large transaction, written in {:.1} s (WAL at {})",
        gift_ops.len(),
        people_ops.len(),
        wrote.as_secs_f64(),
        format_lsn(written_at)
    );
    assert!(changes >= 2_000 * scale, "{changes} row changes");

    let contact_versions: u64 = versions.values().sum();
    // About 9,000 facts take a minute on a loaded 2-core machine at full size.
    let drain = Duration::from_secs(60 + 60 * scale as u64);
    let expected_facts = gift_rows as u64 + contact_versions;
    rig.wait_captured(expected_facts, drain).await;
    wait_gifts_and_drained(&rig.app, &rig.sandbox, &rig.tenant, gift_rows as u64, drain).await;
    let drained = started.elapsed();

    let expected: BTreeMap<i64, GiftRow> = (1..=gift_rows)
        .map(|id| (id, GiftRow::numbered(id)))
        .collect();
    assert_one_gift_per_row(&rig, &expected).await;
    assert_contact_versions(&rig, &latest, &versions).await;
    let stats = org_stats(&rig.sandbox, &rig.tenant).await;
    assert_eq!(stats["gifts"], gift_rows, "{stats}");

    let codes = alert_codes(&rig.app, &rig.tenant).await;
    for code in ["source_gift_changed", "source_gift_deleted"] {
        assert!(
            codes.iter().any(|c| c == code),
            "alert {code} missing: {codes:?}"
        );
    }
    for code in ["cdc_slot_lost", "poller_failed", "dead_letters"] {
        assert!(!codes.iter().any(|c| c == code), "alert {code}: {codes:?}");
    }

    // The poller view: the position is past everything written, the slot's confirmed
    // position is not ahead of it, and source_status describes the slot.
    let view = wait_position_at_least(
        &rig.app,
        &rig.tenant,
        NAME,
        written_at,
        Duration::from_secs(30),
    )
    .await;
    let status = &view["source_status"];
    assert_eq!(view["kind"], "postgres", "{view}");
    assert_eq!(status["slot"], rig.db.slot.as_str(), "{view}");
    assert_eq!(status["wal_status"], "reserved", "{view}");
    assert!(status["lag_bytes"].is_u64(), "{view}");
    assert!(status["checked_at"].is_string(), "{view}");
    let confirmed = rig.db.confirmed_flush_lsn().await;
    let position = position_lsn(&cdc_poller(&rig.app, &rig.tenant, NAME).await).unwrap();
    assert!(
        confirmed <= position,
        "the slot ({}) is ahead of the stored position ({})",
        format_lsn(confirmed),
        format_lsn(position)
    );
    let metrics = rig.app.metrics_text().await;
    let op = |op: &str| {
        metric_sum(
            &metrics,
            &format!("steward_cdc_changes_total{{op=\"{op}\"}}"),
        )
    };
    let updates = (gift_ops.len() as i64 - gift_rows / 26) as f64 + 2.0 * updated_people as f64;
    assert!(
        op("insert") >= (gift_rows + people_total) as f64,
        "{}",
        op("insert")
    );
    assert!(
        op("update") >= updates,
        "updates {} < {updates}",
        op("update")
    );
    assert!(
        op("delete") >= (gift_rows / 26 + people_total - updated_people) as f64,
        "{}",
        op("delete")
    );
    assert_eq!(
        op("snapshot"),
        0.0,
        "the tables were empty when the source started"
    );
    eprintln!(
        "cdc volume: {expected_facts} facts captured, {gift_rows} gifts and {contact_versions} \
         contact versions in Virtuous {:.1} s after the first write ({:.1} s after the last); \
         metrics insert {} update {} delete {}; test {:.1} s",
        drained.as_secs_f64(),
        (drained - wrote).as_secs_f64(),
        op("insert"),
        op("update"),
        op("delete"),
        started.elapsed().as_secs_f64()
    );
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdc_logical_gift_updates_and_deletes_alert_and_keep_one_gift_and_contact_deletes_do_nothing(
) {
    // Goal: the contract's identity rules one by one — an UPDATE of a gift row that leaves
    // the mapped amount and date alone is a silent duplicate; one that changes the amount, or
    // the date, raises `source_gift_changed`; a DELETE raises `source_gift_deleted`; the
    // gift stays one gift with its first amount throughout; a contact DELETE sends nothing.
    // Each step ends at a barrier: a new gift row inserted after it has arrived (the stream
    // is ordered), so "nothing happened" is checked after the change was read.
    let rig = Rig::start("cdcalerts", "cdc-alerts", json!({})).await;
    wait_streaming(&rig.app, &rig.tenant, NAME, Duration::from_secs(60)).await;
    let db = &rig.db;
    let (gifts, people) = (db.gifts(), db.people());
    let wait = Duration::from_secs(60);
    db.insert_gifts(&[
        GiftRow::numbered(1),
        GiftRow::numbered(2),
        GiftRow::numbered(3),
    ])
    .await;
    db.insert_people(&[PersonRow::numbered(1, 0), PersonRow::numbered(2, 0)])
        .await;
    rig.wait_captured(5, wait).await;
    wait_gifts_and_drained(&rig.app, &rig.sandbox, &rig.tenant, 3, wait).await;

    // A new email only: a duplicate, no alert.
    db.execute(&format!(
        "UPDATE {gifts} SET email = 'other1@gifts.example.org' WHERE id = 1"
    ))
    .await;
    db.insert_gifts(&[GiftRow::numbered(4)]).await;
    rig.wait_captured(6, wait).await;
    wait_gifts_and_drained(&rig.app, &rig.sandbox, &rig.tenant, 4, wait).await;
    let codes = alert_codes(&rig.app, &rig.tenant).await;
    assert!(
        !codes.iter().any(|code| code == "source_gift_changed"),
        "an update of an unmapped-for-change column raised: {codes:?}"
    );

    // A new amount: the alert.
    db.execute(&format!("UPDATE {gifts} SET amount = 99.99 WHERE id = 1"))
        .await;
    let alert = wait_alert(&rig.app, &rig.tenant, "source_gift_changed", wait).await;
    let count = alert["count"].as_u64().unwrap_or(0);
    assert!(count >= 1, "{alert}");

    // A new date: raised again (the count goes on while it is open).
    db.execute(&format!(
        "UPDATE {gifts} SET given_at = given_at - interval '3 days' WHERE id = 2"
    ))
    .await;
    let last = std::cell::RefCell::new(Value::Null);
    wait_until(
        wait,
        at_timeout(|| {
            format!(
                "source_gift_changed raised again for a new giftDate: {}",
                last.borrow()
            )
        }),
        || async {
            let status = rig.app.status(&rig.tenant).await;
            let alert = status_alert(&status, "source_gift_changed");
            let again = alert
                .as_ref()
                .is_some_and(|alert| alert["count"].as_u64().unwrap_or(0) > count);
            *last.borrow_mut() = alert.unwrap_or(Value::Null);
            again.then_some(())
        },
    )
    .await;

    // A deleted gift row: its alert; the gift stays.
    db.execute(&format!("DELETE FROM {gifts} WHERE id = 3"))
        .await;
    wait_alert(&rig.app, &rig.tenant, "source_gift_deleted", wait).await;

    // A deleted contact row: nothing at all.
    let before = contact_transactions(&rig.sandbox, &rig.tenant).await;
    assert_eq!(before.get("1"), Some(&1), "{before:?}");
    db.execute(&format!("DELETE FROM {people} WHERE id = 1"))
        .await;
    db.insert_gifts(&[GiftRow::numbered(5)]).await;
    rig.wait_captured(7, wait).await;
    wait_gifts_and_drained(&rig.app, &rig.sandbox, &rig.tenant, 5, wait).await;
    let after = contact_transactions(&rig.sandbox, &rig.tenant).await;
    assert_eq!(after, before, "a contact DELETE sent something");
    let contacts = virtuous_contacts(&rig.sandbox, &rig.tenant).await;
    assert!(
        contacts_by_reference(&contacts).contains_key("1"),
        "the deleted person's contact is still in Virtuous"
    );

    let expected: BTreeMap<i64, GiftRow> = (1..=5).map(|id| (id, GiftRow::numbered(id))).collect();
    assert_one_gift_per_row(&rig, &expected).await;
    let codes = alert_codes(&rig.app, &rig.tenant).await;
    let mut sorted = codes.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        ["source_gift_changed", "source_gift_deleted"],
        "alerts raised: {codes:?}"
    );
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdc_logical_initial_snapshot_overlaps_the_stream_without_duplicates() {
    // Goal: rows that exist before the source is added reach Virtuous through the initial
    // snapshot (entries in the backfill lane), while a writer keeps inserting rows between
    // and after them (read by the stream, and by the snapshot too when they land ahead of
    // its keyset cursor): every row is exactly one gift / one contact, nothing is lost.
    // The tenant is paused while the source catches up, so the lanes can be read before
    // anything is sent.
    let started = Instant::now();
    let existing = sized(1_000, 5_000) as i64; // gift rows 2, 4, …; the writer adds odd ids
    let long = Duration::from_secs(sized(90, 300) as u64);
    let existing_people = 40i64;
    let db = CdcDb::create("cdcsnap").await;
    let even: Vec<GiftRow> = (1..=existing).map(|n| GiftRow::numbered(2 * n)).collect();
    for chunk in even.chunks(100) {
        db.insert_gifts(chunk).await;
    }
    let people: Vec<PersonRow> = (1..=existing_people)
        .map(|n| PersonRow::numbered(2 * n, 0))
        .collect();
    db.insert_people(&people).await;

    let app = TestApp::spawn(SpawnOptions::default()).await;
    let sandbox = app.sandbox_url();
    let tenant = "cdc-snapshot";
    cdc_tenant(
        &app,
        &sandbox,
        "embedded",
        tenant,
        json!({}),
        json!({"dedup_transactions": false}),
    )
    .await;
    let (status, body) = app
        .admin_call(Method::POST, &format!("/v1/tenants/{tenant}/pause"), None)
        .await;
    assert_eq!(status, 200, "pause: {body}");

    // The writer: 3 new odd gift rows a transaction, a new odd person every 4th.
    let stop = Arc::new(AtomicBool::new(false));
    let transactions = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, transactions) = (Arc::clone(&stop), Arc::clone(&transactions));
        let client = db.cluster.connect().await;
        let (gifts, people) = (db.gifts(), db.people());
        tokio::spawn(async move {
            let (mut gift_ids, mut person_ids) = (Vec::new(), Vec::new());
            let mut next = 1i64;
            while !stop.load(Ordering::Relaxed) {
                let rows: Vec<GiftRow> = (0..3).map(|k| GiftRow::numbered(next + 2 * k)).collect();
                let mut sql = format!("BEGIN;{};", insert_gifts_sql(&gifts, &rows));
                let person = (transactions.load(Ordering::Relaxed) % 4 == 0)
                    .then(|| PersonRow::numbered(person_ids.len() as i64 * 2 + 1, 0));
                if let Some(person) = &person {
                    sql.push_str(&insert_people_sql(&people, std::slice::from_ref(person)));
                    sql.push(';');
                }
                sql.push_str("COMMIT;");
                client
                    .batch_execute(&sql)
                    .await
                    .expect("writer transaction");
                gift_ids.extend(rows.iter().map(|row| row.id));
                person_ids.extend(person.map(|person| person.id));
                next += 6;
                transactions.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (gift_ids, person_ids)
        })
    };

    // The source is added now (50 rows a snapshot page).
    let source = logical_source(&db, json!({"batch": 50}));
    let (status, body) = app
        .admin_call(
            Method::PATCH,
            &format!("/v1/tenants/{tenant}"),
            Some(json!({"sources": {"postgres": {NAME: source}}})),
        )
        .await;
    assert_eq!(status, 200, "adding the source: {body}");
    let snapshot_seen = std::cell::Cell::new(0u32);
    let last = std::cell::RefCell::new(Value::Null);
    wait_until(
        long,
        at_timeout(|| format!("the snapshot to end: {}", last.borrow())),
        || async {
            let view = cdc_poller(&app, tenant, NAME).await;
            if !view["position"]["snapshot"].is_null() {
                snapshot_seen.set(snapshot_seen.get() + 1);
            }
            let done = streaming(&view).then_some(());
            *last.borrow_mut() = view;
            done
        },
    )
    .await;
    let during_snapshot = transactions.load(Ordering::Relaxed);
    // Some more transactions for the stream alone.
    wait_until(
        Duration::from_secs(30),
        "20 more writer transactions",
        || async { (transactions.load(Ordering::Relaxed) >= during_snapshot + 20).then_some(()) },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let (gift_ids, person_ids) = writer.await.unwrap();

    let gifts_total = existing as u64 + gift_ids.len() as u64;
    let people_total = existing_people as u64 + person_ids.len() as u64;
    let expected_facts = gifts_total + people_total;
    let last = std::cell::RefCell::new(Value::Null);
    let captured = wait_until(
        long,
        at_timeout(|| format!("{expected_facts} facts captured: {}", last.borrow())),
        || async {
            let status = app.status(tenant).await;
            let captured = status["counts"]["captured"].as_u64().unwrap_or(0);
            *last.borrow_mut() = status["counts"].clone();
            (captured >= expected_facts).then_some(captured)
        },
    )
    .await;
    assert_eq!(
        captured,
        expected_facts,
        "{}",
        app.status(tenant).await["counts"]
    );
    let status = app.status(tenant).await;
    let depth = |lane: &str| status["lanes"][lane]["depth"].as_u64().unwrap_or(0);
    // The rows that existed before the source can only come from the snapshot.
    assert!(
        depth("backfill") >= (existing + existing_people) as u64,
        "snapshot entries belong in the backfill lane: lanes {}",
        status["lanes"]
    );
    assert_eq!(
        depth("backfill") + depth("live"),
        expected_facts,
        "paused: every captured fact is still queued: lanes {}",
        status["lanes"]
    );
    let received = org_stats(&sandbox, tenant).await["transactions_received"].clone();
    assert_eq!(received, 0, "a paused tenant sent something");
    let duplicates = status["counts"]["duplicates"].as_u64().unwrap_or(0);
    let (backfill, live) = (depth("backfill"), depth("live"));

    let (status, body) = app
        .admin_call(Method::POST, &format!("/v1/tenants/{tenant}/resume"), None)
        .await;
    assert_eq!(status, 200, "resume: {body}");
    wait_gifts_and_drained(&app, &sandbox, tenant, gifts_total, long).await;

    let rig = Rig {
        app,
        sandbox,
        db,
        tenant: tenant.to_string(),
    };
    let expected: BTreeMap<i64, GiftRow> = even
        .iter()
        .map(|row| row.id)
        .chain(gift_ids.iter().copied())
        .map(|id| (id, GiftRow::numbered(id)))
        .collect();
    assert_eq!(expected.len() as u64, gifts_total);
    assert_one_gift_per_row(&rig, &expected).await;
    let latest: BTreeMap<i64, PersonRow> = people
        .iter()
        .map(|person| person.id)
        .chain(person_ids.iter().copied())
        .map(|id| (id, PersonRow::numbered(id, 0)))
        .collect();
    let versions = latest.keys().map(|id| (*id, 1)).collect();
    assert_contact_versions(&rig, &latest, &versions).await;
    eprintln!(
        "cdc snapshot: {existing} gift rows + {existing_people} people before the source, {} \
         gift rows + {} people written meanwhile ({during_snapshot} writer transactions before \
         the snapshot ended; the snapshot was seen in progress {} times); lanes at the end of \
         capture: backfill {backfill}, live {live}; duplicates (snapshot/stream overlap) \
         {duplicates}; test {:.1} s",
        gift_ids.len(),
        person_ids.len(),
        snapshot_seen.get(),
        started.elapsed().as_secs_f64()
    );
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdc_logical_a_dropped_slot_is_recreated_and_resnapshotted_without_duplicates() {
    // Goal: the slot is dropped while the poller is paused and rows change meanwhile; on
    // resume the engine raises `cdc_slot_lost`, creates a new slot, snapshots again: the
    // changes made meanwhile arrive (new gift rows, new contact versions), the re-read rows
    // are duplicates (no second gift, no second contact transaction for an unchanged
    // person), and the stream goes on afterwards.
    let rig = Rig::start("cdclost", "cdc-lost", json!({})).await;
    wait_streaming(&rig.app, &rig.tenant, NAME, Duration::from_secs(60)).await;
    let db = &rig.db;
    let wait = Duration::from_secs(60);
    let first: Vec<GiftRow> = (1..=100).map(GiftRow::numbered).collect();
    db.insert_gifts(&first).await;
    let mut latest: BTreeMap<i64, PersonRow> = BTreeMap::new();
    let mut versions: BTreeMap<i64, u64> = BTreeMap::new();
    let people: Vec<PersonRow> = (1..=10).map(|id| PersonRow::numbered(id, 0)).collect();
    db.insert_people(&people).await;
    for person in &people {
        latest.insert(person.id, person.clone());
        versions.insert(person.id, 1);
    }
    rig.wait_captured(110, wait).await;
    wait_gifts_and_drained(&rig.app, &rig.sandbox, &rig.tenant, 100, wait).await;

    // Pause, and wait until no read is in progress.
    rig.pause_and_wait_idle().await;
    db.drop_slot().await;
    assert!(db.slot_row().await.is_none());

    // Changes while there is no slot: new gift rows, new people, new versions, a gift update.
    let meanwhile: Vec<GiftRow> = (101..=150).map(GiftRow::numbered).collect();
    db.insert_gifts(&meanwhile).await;
    let new_people: Vec<PersonRow> = (11..=15).map(|id| PersonRow::numbered(id, 0)).collect();
    db.insert_people(&new_people).await;
    for person in &new_people {
        latest.insert(person.id, person.clone());
        versions.insert(person.id, 1);
    }
    for id in 1..=5 {
        let row = PersonRow::numbered(id, 1);
        db.update_person(&row).await;
        latest.insert(id, row);
        *versions.get_mut(&id).unwrap() += 1;
    }
    db.execute(&format!(
        "UPDATE {} SET email = 'moved1@gifts.example.org' WHERE id = 1",
        db.gifts()
    ))
    .await;

    let (status, body) = poller_action(&rig.app, &rig.tenant, NAME, "resume", None).await;
    assert_eq!(status, 200, "resume: {body}");
    wait_alert(&rig.app, &rig.tenant, "cdc_slot_lost", wait).await;
    let last = std::cell::RefCell::new(String::new());
    let slot = wait_until(
        wait,
        at_timeout(|| format!("a new slot {}: {}", db.slot, last.borrow())),
        || async {
            let row = db.slot_row().await;
            *last.borrow_mut() = format!("{row:?}");
            row
        },
    )
    .await;
    assert_eq!(slot.plugin.as_deref(), Some("pgoutput"), "{slot:?}");
    wait_streaming(&rig.app, &rig.tenant, NAME, wait).await;
    // 150 gift rows, 15 people, 5 new versions: each once.
    rig.wait_captured(170, wait).await;
    wait_gifts_and_drained(&rig.app, &rig.sandbox, &rig.tenant, 150, wait).await;

    // The new slot streams.
    let after: Vec<GiftRow> = (151..=160).map(GiftRow::numbered).collect();
    db.insert_gifts(&after).await;
    let row = PersonRow::numbered(1, 2);
    db.update_person(&row).await;
    latest.insert(1, row);
    *versions.get_mut(&1).unwrap() += 1;
    rig.wait_captured(181, wait).await;
    wait_gifts_and_drained(&rig.app, &rig.sandbox, &rig.tenant, 160, wait).await;

    let expected: BTreeMap<i64, GiftRow> =
        (1..=160).map(|id| (id, GiftRow::numbered(id))).collect();
    assert_one_gift_per_row(&rig, &expected).await;
    assert_contact_versions(&rig, &latest, &versions).await;
    let metrics = rig.app.metrics_text().await;
    let lost = metric_sum(&metrics, "steward_cdc_slot_lost_total");
    assert_eq!(lost, 1.0, "one slot was lost");
    let snapshot = metric_sum(&metrics, "steward_cdc_changes_total{op=\"snapshot\"}");
    assert!(
        snapshot >= 165.0,
        "the re-snapshot read every row (150 gift rows, 15 people): {snapshot}"
    );
    let codes = alert_codes(&rig.app, &rig.tenant).await;
    assert!(!codes.iter().any(|c| c == "poller_failed"), "{codes:?}");
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdc_logical_an_idle_source_advances_its_slot_while_other_tables_are_written() {
    // Goal: with nothing to read for the source (writes only to a table outside its
    // publication), the slot's confirmed_flush_lsn still moves past the WAL those writes
    // made, within a few read intervals, so an idle source does not hold WAL back; and
    // nothing is captured.
    let rig = Rig::start("cdcidle", "cdc-idle", json!({})).await;
    let view = wait_streaming(&rig.app, &rig.tenant, NAME, Duration::from_secs(60)).await;
    let db = &rig.db;
    let start = rig.db.confirmed_flush_lsn().await;
    let first_position = position_lsn(&view).unwrap();
    // Two seconds of writes elsewhere: 40 transactions of 50 rows.
    for n in 0..40 {
        db.execute(&format!(
            "INSERT INTO {} (note) SELECT 'idle ' || g FROM generate_series(1, 50) g",
            db.other()
        ))
        .await;
        if n % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let written = db.current_lsn().await;
    assert!(written > start);
    let last = std::cell::RefCell::new(String::new());
    let waited = Instant::now();
    let confirmed = wait_until(
        Duration::from_secs(20),
        at_timeout(|| {
            format!(
                "the idle slot to pass {} (it started at {}): {}",
                format_lsn(written),
                format_lsn(start),
                last.borrow()
            )
        }),
        || async {
            let row = db.slot_row().await;
            *last.borrow_mut() = format!("{row:?}");
            row?.confirmed_flush_lsn.filter(|lsn| *lsn >= written)
        },
    )
    .await;
    let view = rig.poller().await;
    let position = position_lsn(&view).unwrap();
    assert!(
        position >= confirmed,
        "position {} < slot {}",
        format_lsn(position),
        format_lsn(confirmed)
    );
    assert!(position > first_position, "{view}");
    let status = &view["source_status"];
    assert_eq!(status["slot"], db.slot.as_str(), "{view}");
    assert!(
        parse_lsn(
            status["confirmed_flush_lsn"]
                .as_str()
                .expect("confirmed_flush_lsn")
        ) >= start,
        "{view}"
    );
    assert_eq!(
        rig.counts().await["captured"],
        0,
        "nothing in the publication changed"
    );
    eprintln!(
        "cdc idle: the slot moved from {} past {} ({} bytes of other WAL) {:.1} s after the last write",
        format_lsn(start),
        format_lsn(written),
        written - start,
        waited.elapsed().as_secs_f64()
    );
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdc_logical_without_create_slot_steward_names_the_sql_and_creates_no_slot() {
    // Goal: with `create_slot: false`, Steward never creates a slot. At the first start
    // without one, runs fail with a message naming the SQL to run; once an operator has run
    // it, the source snapshots and streams. When that slot is later dropped, `cdc_slot_lost`
    // is raised and the SQL is named again (in the alert or the run's error); once the
    // operator creates the slot again, a new snapshot brings the rows written meanwhile,
    // once each.
    let rig = Rig::start("cdcnoslot", "cdc-noslot", json!({"create_slot": false})).await;
    let db = &rig.db;
    let wait = Duration::from_secs(60);
    let create_sql = format!(
        "SELECT pg_create_logical_replication_slot('{}', 'pgoutput')",
        db.slot
    );
    let last = std::cell::RefCell::new(Value::Null);
    let report = wait_until(
        wait,
        at_timeout(|| format!("a failed run: {}", last.borrow())),
        || async {
            let view = rig.poller().await;
            let report =
                (view["last_run"]["outcome"] == "failed").then(|| view["last_run"].clone());
            *last.borrow_mut() = view;
            report
        },
    )
    .await;
    let error = report["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("pg_create_logical_replication_slot") && error.contains(&db.slot),
        "the failure names the SQL to run: {report}"
    );
    assert!(db.slot_row().await.is_none(), "Steward created the slot");

    // The operator runs it and resumes the poller (paused if three runs failed meanwhile).
    db.execute(&create_sql).await;
    let (status, body) = poller_action(&rig.app, &rig.tenant, NAME, "resume", None).await;
    assert_eq!(status, 200, "resume: {body}");
    wait_streaming(&rig.app, &rig.tenant, NAME, wait).await;
    db.insert_gifts(&(1..=20).map(GiftRow::numbered).collect::<Vec<_>>())
        .await;
    db.insert_people(&[PersonRow::numbered(1, 0)]).await;
    rig.wait_captured(21, wait).await;
    wait_gifts_and_drained(&rig.app, &rig.sandbox, &rig.tenant, 20, wait).await;

    // The slot is dropped while the poller is paused; rows change meanwhile.
    rig.pause_and_wait_idle().await;
    db.drop_slot().await;
    db.insert_gifts(&(21..=30).map(GiftRow::numbered).collect::<Vec<_>>())
        .await;
    db.update_person(&PersonRow::numbered(1, 1)).await;
    let (status, body) = poller_action(&rig.app, &rig.tenant, NAME, "resume", None).await;
    assert_eq!(status, 200, "resume: {body}");
    let alert = wait_alert(&rig.app, &rig.tenant, "cdc_slot_lost", wait).await;
    let last = std::cell::RefCell::new(Value::Null);
    wait_until(
        wait,
        at_timeout(|| {
            format!(
                "the SQL named after the loss: alert {alert}, poller {}",
                last.borrow()
            )
        }),
        || async {
            let status = rig.app.status(&rig.tenant).await;
            let alert = status_alert(&status, "cdc_slot_lost").unwrap_or(Value::Null);
            let view = rig.poller().await;
            let named = |text: &Value| {
                text.as_str()
                    .is_some_and(|text| text.contains("pg_create_logical_replication_slot"))
            };
            let done =
                (named(&alert["message"]) || named(&view["last_run"]["error"])).then_some(());
            *last.borrow_mut() = view;
            done
        },
    )
    .await;
    // A few reads later there is still no slot: Steward does not make one.
    let runs = last_run_number(&rig.poller().await);
    wait_until(wait, "three more reads", || async {
        (last_run_number(&rig.poller().await) >= runs + 3).then_some(())
    })
    .await;
    assert!(db.slot_row().await.is_none(), "Steward created the slot");
    assert_eq!(
        rig.counts().await["captured"],
        21,
        "nothing read without a slot"
    );

    db.execute(&create_sql).await;
    let (status, body) = poller_action(&rig.app, &rig.tenant, NAME, "resume", None).await;
    assert_eq!(status, 200, "resume: {body}");
    // 10 new gift rows and the person's new version.
    rig.wait_captured(32, wait).await;
    wait_gifts_and_drained(&rig.app, &rig.sandbox, &rig.tenant, 30, wait).await;
    let expected: BTreeMap<i64, GiftRow> = (1..=30).map(|id| (id, GiftRow::numbered(id))).collect();
    assert_one_gift_per_row(&rig, &expected).await;
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdc_logical_a_reset_to_the_epoch_resnapshots_without_sending_again() {
    // Goal: the contract's `POST …/pollers/{name}/reset {"since": "1970-01-01T00:00:00Z"}`
    // (docs/cdc.md: "any since") takes a new snapshot of every row, and none is sent again.
    let rig = Rig::start("cdcreset", "cdc-reset", json!({})).await;
    wait_streaming(&rig.app, &rig.tenant, NAME, Duration::from_secs(60)).await;
    let db = &rig.db;
    let wait = Duration::from_secs(60);
    db.insert_gifts(&(1..=20).map(GiftRow::numbered).collect::<Vec<_>>())
        .await;
    db.insert_people(&[PersonRow::numbered(1, 0)]).await;
    rig.wait_captured(21, wait).await;
    wait_gifts_and_drained(&rig.app, &rig.sandbox, &rig.tenant, 20, wait).await;

    // Paused first, so no read is in progress.
    let snapshot_metric =
        |text: &str| metric_sum(text, "steward_cdc_changes_total{op=\"snapshot\"}");
    let before = snapshot_metric(&rig.app.metrics_text().await);
    rig.pause_and_wait_idle().await;
    let (status, body) = poller_action(
        &rig.app,
        &rig.tenant,
        NAME,
        "reset",
        Some(json!({"since": "1970-01-01T00:00:00Z"})),
    )
    .await;
    assert_eq!(status, 200, "reset: {body}");
    let (status, body) = poller_action(&rig.app, &rig.tenant, NAME, "resume", None).await;
    assert_eq!(status, 200, "resume: {body}");
    let last = std::cell::Cell::new(0.0);
    wait_until(
        wait,
        at_timeout(|| {
            format!(
                "the re-snapshot to read 21 rows (snapshot changes {} → {})",
                before,
                last.get()
            )
        }),
        || async {
            let now = snapshot_metric(&rig.app.metrics_text().await);
            last.set(now);
            (now >= before + 21.0).then_some(())
        },
    )
    .await;
    wait_streaming(&rig.app, &rig.tenant, NAME, wait).await;
    // A barrier: a new row after the re-snapshot.
    db.insert_gifts(&[GiftRow::numbered(21)]).await;
    rig.wait_captured(22, wait).await;
    wait_gifts_and_drained(&rig.app, &rig.sandbox, &rig.tenant, 21, wait).await;
    let expected: BTreeMap<i64, GiftRow> = (1..=21).map(|id| (id, GiftRow::numbered(id))).collect();
    assert_one_gift_per_row(&rig, &expected).await;
    let transactions = contact_transactions(&rig.sandbox, &rig.tenant).await;
    assert_eq!(transactions.get("1"), Some(&1), "{transactions:?}");
    rig.finish().await;
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdc_logical_a_slot_advanced_past_the_stored_position_is_treated_as_lost() {
    // Goal: someone advances the slot past what Steward stored (the changes in between
    // would never be decoded again): the engine must not trust it — `cdc_slot_lost`, a new
    // slot, a re-snapshot — so the rows written in that stretch still arrive, once each.
    let rig = Rig::start("cdcahead", "cdc-ahead", json!({})).await;
    wait_streaming(&rig.app, &rig.tenant, NAME, Duration::from_secs(60)).await;
    let db = &rig.db;
    let wait = Duration::from_secs(60);
    db.insert_gifts(&(1..=10).map(GiftRow::numbered).collect::<Vec<_>>())
        .await;
    rig.wait_captured(10, wait).await;
    let paused = rig.pause_and_wait_idle().await;
    let stored = position_lsn(&paused).expect("a stored position");
    db.insert_gifts(&(11..=20).map(GiftRow::numbered).collect::<Vec<_>>())
        .await;
    // The slot advances only as far as WAL is flushed (synchronous_commit is off): advance
    // it until it has passed the ten new rows' commit.
    let target = db.current_lsn().await;
    let last = std::cell::RefCell::new(String::new());
    wait_until(
        Duration::from_secs(30),
        at_timeout(|| {
            format!(
                "advancing the slot past {} (stored {}): {}",
                format_lsn(target),
                format_lsn(stored),
                last.borrow()
            )
        }),
        || async {
            let advanced = db
                .client
                .execute(
                    "SELECT pg_replication_slot_advance($1, $2::text::pg_lsn)",
                    &[&db.slot, &format_lsn(target)],
                )
                .await;
            if let Err(error) = advanced {
                *last.borrow_mut() = format!("{error:?}");
                return None;
            }
            let ahead = db.confirmed_flush_lsn().await;
            *last.borrow_mut() = format!("slot at {}", format_lsn(ahead));
            (ahead >= target).then_some(())
        },
    )
    .await;
    let ahead = db.confirmed_flush_lsn().await;
    assert!(
        ahead > stored,
        "slot {} vs stored {} (target {}; poller now {})",
        format_lsn(ahead),
        format_lsn(stored),
        format_lsn(target),
        rig.poller().await
    );

    let (status, body) = poller_action(&rig.app, &rig.tenant, NAME, "resume", None).await;
    assert_eq!(status, 200, "resume: {body}");
    wait_alert(&rig.app, &rig.tenant, "cdc_slot_lost", wait).await;
    rig.wait_captured(20, wait).await;
    wait_streaming(&rig.app, &rig.tenant, NAME, wait).await;
    db.insert_gifts(&[GiftRow::numbered(21)]).await;
    rig.wait_captured(21, wait).await;
    wait_gifts_and_drained(&rig.app, &rig.sandbox, &rig.tenant, 21, wait).await;
    let expected: BTreeMap<i64, GiftRow> = (1..=21).map(|id| (id, GiftRow::numbered(id))).collect();
    assert_one_gift_per_row(&rig, &expected).await;
    let confirmed = db.confirmed_flush_lsn().await;
    let position = position_lsn(&rig.poller().await).unwrap();
    assert!(
        confirmed <= position,
        "after recovery the slot ({}) is ahead of the stored position ({})",
        format_lsn(confirmed),
        format_lsn(position)
    );
    rig.finish().await;
}
