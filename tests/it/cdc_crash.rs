//! Goal: kill -9 the engine again and again — during its initial snapshot, then while it
//! streams — while a writer streams inserts and updates into a partner's Postgres (issue 18,
//! logical mode): no gift row is lost, none is sent twice, every contact version is captured
//! once, and the slot is never advanced past what the store holds (the slot is never "lost"
//! by a crash either).
//!
//! Size: 10 kill cycles in CI, 20 with `STEWARD_FULL_POLL_TESTS=1`. `STEWARD_CRASH_SEED`
//! repeats a run's kill timings and writes; a failing run keeps its data dir and log (path
//! printed). The org lives in an `ExternalSandbox` process (the embedded one would die with
//! each kill), with its usual dedup on transactionId: a gift whose answer the kill lost is
//! sent again and must not become a second gift; a row captured twice under another key
//! would show as a second gift, and the engine's own count of captured facts must equal
//! the rows and versions written. Prints one `RELIABILITY:` line.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::cdc_support::{
    alert_codes, cdc_poller, cdc_tenant, format_lsn, gift_cents, insert_gifts_sql,
    insert_people_sql, logical_source, position_lsn, slot_row, update_person_sql, virtuous_gifts,
    wait_gifts_and_drained, CdcDb, GiftRow, PersonRow,
};
use crate::common::{at_timeout, wait_until, TestApp};
use crate::crash_support::{crash_seed, fast_engine};
use crate::external_sandbox::ExternalSandbox;
use crate::poll_support::sized;

const NAME: &str = "crashdb";

/// What the writer committed: the first version of every gift row, every amount each row
/// had (a row the snapshot reads after an update is captured with the newer amount), and
/// each person's latest version number (versions 0..=n: insert + updates).
#[derive(Default)]
struct Written {
    gifts: BTreeMap<i64, GiftRow>,
    amounts: BTreeMap<i64, Vec<i64>>,
    person_versions: BTreeMap<i64, u32>,
    transactions: u64,
    gift_updates: u64,
}

/// Rows that exist before the source is added: PRE_GIFTS gift rows and PRE_PEOPLE people
/// from id PRE_BASE + 1 (the writer never touches them, so the snapshot alone brings them).
/// The writer's own ids start at 1, below them: once the snapshot's keyset cursor is past
/// its first page, new rows fall behind it (the stream alone brings them), so the snapshot
/// ends after a few pages instead of chasing the writer.
const PRE_BASE: i64 = 1_000_000;
const PRE_GIFTS: i64 = 400;
const PRE_PEOPLE: i64 = 50;

/// Names the kept data dir and log when the test fails.
struct KeepOnPanic(std::path::PathBuf, std::path::PathBuf);

impl Drop for KeepOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "cdc crash: data dir kept at {} (log {})",
                self.0.display(),
                self.1.display()
            );
        }
    }
}

/// Streams small transactions into the two tables until stopped: multi-row gift INSERTs,
/// gift UPDATEs (a new email, or a new amount), new people, new person versions, and mixed
/// transactions — on its own rows only (ids below the pre-existing ones). Only committed
/// work is recorded (a failed statement panics: Postgres stays up throughout).
fn start_writer(
    db: &CdcDb,
    client: tokio_postgres::Client,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Written> {
    let (gifts, people) = (db.gifts(), db.people());
    tokio::spawn(async move {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x05ee_dcdc);
        let mut written = Written::default();
        let mut next_gift = 1i64;
        let mut next_person = 1i64;
        while !stop.load(Ordering::Relaxed) {
            let choice = rng.gen_range(0..100);
            let mut statements = Vec::new();
            let mut new_gifts = Vec::new();
            let mut person_change: Option<(i64, u32)> = None;
            let mut gift_update = false;
            let mut amount_bump: Option<i64> = None;
            let add_gifts = |count: i64, next_gift: &mut i64, new_gifts: &mut Vec<GiftRow>| {
                let rows: Vec<GiftRow> = (0..count)
                    .map(|k| GiftRow::numbered(*next_gift + k))
                    .collect();
                *next_gift += count;
                new_gifts.extend(rows.iter().cloned());
                insert_gifts_sql(&gifts, &rows)
            };
            match choice {
                0..=49 => {
                    let count = rng.gen_range(1..=5);
                    statements.push(add_gifts(count, &mut next_gift, &mut new_gifts));
                }
                50..=64 if !written.gifts.is_empty() => {
                    let id = rng.gen_range(1..next_gift);
                    statements.push(if rng.gen_bool(0.3) {
                        amount_bump = Some(id);
                        format!("UPDATE {gifts} SET amount = amount + 1 WHERE id = {id}")
                    } else {
                        format!(
                            "UPDATE {gifts} SET email = 'w{}.{id}@gifts.example.org' WHERE id = {id}",
                            written.transactions
                        )
                    });
                    gift_update = true;
                }
                65..=79 => {
                    let row = PersonRow::numbered(next_person, 0);
                    statements.push(insert_people_sql(&people, &[row]));
                    person_change = Some((next_person, 0));
                    next_person += 1;
                }
                80..=94 if !written.person_versions.is_empty() => {
                    let id = rng.gen_range(1..next_person);
                    let version = written.person_versions[&id] + 1;
                    statements.push(update_person_sql(
                        &people,
                        &PersonRow::numbered(id, version),
                    ));
                    person_change = Some((id, version));
                }
                _ => {
                    statements.push(add_gifts(2, &mut next_gift, &mut new_gifts));
                    let row = PersonRow::numbered(next_person, 0);
                    statements.push(insert_people_sql(&people, &[row]));
                    person_change = Some((next_person, 0));
                    next_person += 1;
                }
            }
            let sql = format!("BEGIN;{};COMMIT;", statements.join(";"));
            client
                .batch_execute(&sql)
                .await
                .unwrap_or_else(|error| panic!("{sql}: {error:?}"));
            written.transactions += 1;
            written.gift_updates += u64::from(gift_update);
            for row in new_gifts {
                written.amounts.insert(row.id, vec![row.amount_cents]);
                written.gifts.insert(row.id, row);
            }
            if let Some(id) = amount_bump {
                let amounts = written.amounts.get_mut(&id).expect("a written row");
                amounts.push(amounts.last().unwrap() + 100);
            }
            if let Some((id, version)) = person_change {
                written.person_versions.insert(id, version);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        written
    })
}

/// Samples, while the engine runs, the slot's confirmed_flush_lsn (read first) and then the
/// stored position (read second, through the admin API): the first must never exceed the
/// second. Returns (samples, violations).
fn start_sampler(
    client: tokio_postgres::Client,
    slot: String,
    tenant: String,
    admin: watch::Receiver<Option<String>>,
    token: String,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(u64, Vec<String>)> {
    tokio::spawn(async move {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let (mut samples, mut violations) = (0u64, Vec::new());
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let Some(admin_url) = admin.borrow().clone() else {
                continue;
            };
            let Some(confirmed) = slot_row(&client, &slot)
                .await
                .and_then(|row| row.confirmed_flush_lsn)
            else {
                violations.push(format!(
                    "slot {slot} missing or without confirmed_flush_lsn"
                ));
                continue;
            };
            let answer = http
                .get(format!("{admin_url}/v1/tenants/{tenant}/pollers"))
                .bearer_auth(&token)
                .send()
                .await;
            let Ok(response) = answer else { continue };
            let Ok(body) = response.json::<Value>().await else {
                continue;
            };
            let position = body["pollers"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|poller| poller["source"] == NAME)
                .and_then(position_lsn);
            let Some(position) = position else { continue };
            samples += 1;
            if confirmed > position {
                violations.push(format!(
                    "slot confirmed_flush_lsn {} > stored position {} (read after it)",
                    format_lsn(confirmed),
                    format_lsn(position)
                ));
            }
        }
        (samples, violations)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdc_crash_kill9_loop_loses_and_duplicates_no_gift_and_never_outruns_the_slot() {
    // Goal: N kill -9 cycles (10 CI, 20 full) at random moments — the first one early, in
    // the initial snapshot of 450 pre-existing rows (100 a page), the rest mostly while it
    // streams — while a writer streams inserts and updates: afterwards every gift row is
    // exactly one gift in Virtuous (0 lost, 0 duplicates) with an amount the row had, the
    // engine captured exactly one fact per gift row and per contact version, at every kill
    // the slot's confirmed_flush_lsn is at or behind the position the store holds, and no
    // cdc_slot_lost was raised.
    let started = Instant::now();
    let cycles = sized(10, 20);
    let seed = crash_seed();
    eprintln!("cdc crash: seed {seed} (STEWARD_CRASH_SEED), {cycles} cycles");
    let db = CdcDb::create("cdccrash").await;
    let pre_gifts: Vec<GiftRow> = (PRE_BASE + 1..=PRE_BASE + PRE_GIFTS)
        .map(GiftRow::numbered)
        .collect();
    for chunk in pre_gifts.chunks(100) {
        db.insert_gifts(chunk).await;
    }
    let pre_people: Vec<PersonRow> = (PRE_BASE + 1..=PRE_BASE + PRE_PEOPLE)
        .map(|id| PersonRow::numbered(id, 0))
        .collect();
    db.insert_people(&pre_people).await;
    let sandbox = ExternalSandbox::start();
    let mut app = TestApp::spawn(fast_engine()).await;
    app.dir.disable_cleanup(true);
    let _keep = KeepOnPanic(app.data_dir(), app.log_path());
    let tenant = "cdc-crash";
    cdc_tenant(
        &app,
        &sandbox.url,
        &sandbox.url,
        tenant,
        json!({"postgres": {NAME: logical_source(&db, json!({"batch": 100}))}}),
        json!({}),
    )
    .await;
    // The writer starts once the slot exists and a position is stored: every commit after
    // that is in the stream (the snapshot may read some of them too: duplicates).
    let last = std::cell::RefCell::new(Value::Null);
    wait_until(
        Duration::from_secs(60),
        at_timeout(|| format!("a stored position: {}", last.borrow())),
        || async {
            let view = cdc_poller(&app, tenant, NAME).await;
            let stored = position_lsn(&view).map(|_| ());
            *last.borrow_mut() = view;
            stored
        },
    )
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let writer = start_writer(&db, db.cluster.connect().await, seed, Arc::clone(&stop));
    let (admin_url, admin_watch) = watch::channel(Some(app.admin_url.clone()));
    let sampler = start_sampler(
        db.cluster.connect().await,
        db.slot.clone(),
        tenant.to_string(),
        admin_watch,
        app.admin_token.clone(),
        Arc::clone(&stop),
    );

    // The kill loop. At each kill: the slot's confirmed_flush_lsn right after the kill, then
    // (after the restart) the stored position from the poller JSON. The engine advances the
    // slot only to a position the store already holds durably, and the stored position only
    // grows, so the position read after the restart is at or past the one stored at the
    // kill, which is at or past the slot's: confirmed ≤ position, whatever the kill cut.
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut at_kills = Vec::new();
    let mut failures = Vec::new();
    for cycle in 0..cycles {
        // The first kill comes early, inside the initial snapshot (a few pages).
        let up_ms = if cycle == 0 {
            rng.gen_range(50..=300)
        } else {
            rng.gen_range(200..=1_200)
        };
        tokio::time::sleep(Duration::from_millis(up_ms)).await;
        admin_url.send_replace(None);
        app.kill9();
        let confirmed = db.confirmed_flush_lsn().await;
        app.start().await;
        admin_url.send_replace(Some(app.admin_url.clone()));
        let last = std::cell::RefCell::new(Value::Null);
        let (position, in_snapshot) = wait_until(
            Duration::from_secs(30),
            at_timeout(|| format!("a stored position after restart {cycle}: {}", last.borrow())),
            || async {
                let view = cdc_poller(&app, tenant, NAME).await;
                let position =
                    position_lsn(&view).map(|lsn| (lsn, view["position"]["snapshot"].clone()));
                *last.borrow_mut() = view;
                position
            },
        )
        .await;
        let phase = match in_snapshot.as_object() {
            None => "streaming".to_string(),
            Some(snapshot) => format!(
                "snapshot of {} after {}",
                snapshot["table"].as_str().unwrap_or("?"),
                snapshot["after"]
            ),
        };
        at_kills.push((up_ms, format_lsn(confirmed), format_lsn(position), phase));
        if confirmed > position {
            failures.push(format!(
                "kill {cycle} after {up_ms} ms: slot confirmed_flush_lsn {} > stored position {}",
                format_lsn(confirmed),
                format_lsn(position)
            ));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let written = writer.await.unwrap();
    let (samples, violations) = sampler.await.unwrap();
    let loop_done = started.elapsed();
    let kills_in_snapshot = at_kills
        .iter()
        .filter(|kill| kill.3.starts_with("snapshot"))
        .count();

    // What must be in Virtuous: the pre-existing rows and the writer's.
    let mut rows = written.gifts.clone();
    let mut amounts = written.amounts.clone();
    for row in &pre_gifts {
        rows.insert(row.id, row.clone());
        amounts.insert(row.id, vec![row.amount_cents]);
    }
    let gift_rows = rows.len() as u64;
    let contact_versions: u64 = PRE_PEOPLE as u64
        + written
            .person_versions
            .values()
            .map(|version| u64::from(*version) + 1)
            .sum::<u64>();
    let expected_facts = gift_rows + contact_versions;

    // Let everything through, then count.
    let last = std::cell::RefCell::new(Value::Null);
    let captured = wait_until(
        Duration::from_secs(120),
        at_timeout(|| format!("{expected_facts} facts captured: {}", last.borrow())),
        || async {
            let counts = app.status(tenant).await["counts"].clone();
            let captured = counts["captured"].as_u64().unwrap_or(0);
            *last.borrow_mut() = counts;
            (captured >= expected_facts).then_some(captured)
        },
    )
    .await;
    wait_gifts_and_drained(
        &app,
        &sandbox.url,
        tenant,
        gift_rows,
        Duration::from_secs(120),
    )
    .await;
    let drained = started.elapsed();
    let gifts = virtuous_gifts(&sandbox.url, tenant, &db.gifts()).await;
    let lost: Vec<i64> = rows
        .keys()
        .filter(|row| !gifts.by_row.contains_key(row))
        .copied()
        .collect();
    let duplicates = gifts.duplicates();
    let unexpected: Vec<i64> = gifts
        .by_row
        .keys()
        .filter(|row| !rows.contains_key(row))
        .copied()
        .collect();
    let altered: Vec<String> = amounts
        .iter()
        .filter_map(|(row, had)| {
            let gift = gifts.by_row.get(row)?.first()?;
            let cents = gift_cents(gift);
            (!cents.is_some_and(|cents| had.contains(&cents)))
                .then(|| format!("row {row}: {} (the row had {had:?} cents)", gift["amount"]))
        })
        .collect();
    let stats = sandbox
        .call(Method::GET, &format!("/_sandbox/orgs/{tenant}/stats"), None)
        .await;
    let codes = alert_codes(&app, tenant).await;
    eprintln!(
        "RELIABILITY: cdc logical: {} kill -9 cycles ({kills_in_snapshot} restarted inside the \
         initial snapshot), writer transactions {}, gift rows {gift_rows} ({PRE_GIFTS} before \
         the source, {} gift updates), contact versions {contact_versions}, facts captured \
         {captured} (want {expected_facts}), lost {}, duplicate gifts {}, altered {}, foreign {}, \
         Virtuous transactions received {} (rejected as duplicate {}), slot ≤ position at {} \
         kills and in {samples} samples ({} violations), loop {:.1} s, drained {:.1} s after \
         the loop; seed {seed}",
        at_kills.len(),
        written.transactions,
        written.gift_updates,
        lost.len(),
        duplicates.len(),
        altered.len(),
        gifts.foreign.len() + unexpected.len(),
        stats["transactions_received"],
        stats["rejected_duplicate"],
        at_kills.len() - failures.len(),
        violations.len(),
        loop_done.as_secs_f64(),
        (drained - loop_done).as_secs_f64(),
    );
    eprintln!(
        "cdc crash: (kill after ms, slot at kill, position after restart, phase after restart): {at_kills:?}"
    );

    assert!(
        failures.is_empty(),
        "the slot outran the stored position: {failures:?}"
    );
    assert!(
        violations.is_empty(),
        "sampled while running: {:?}",
        &violations[..violations.len().min(10)]
    );
    assert!(
        samples >= cycles as u64,
        "only {samples} samples while running"
    );
    assert!(
        lost.is_empty(),
        "LOST {} gift rows: {:?}",
        lost.len(),
        &lost[..lost.len().min(20)]
    );
    assert!(
        duplicates.is_empty(),
        "duplicate gifts (row, gifts): {duplicates:?}"
    );
    assert!(
        gifts.foreign.is_empty() && unexpected.is_empty(),
        "gifts no row explains: {:?} {unexpected:?}",
        gifts.foreign
    );
    assert!(
        altered.is_empty(),
        "gifts with an amount their row never had: {altered:?}"
    );
    assert_eq!(
        captured, expected_facts,
        "facts captured: one per gift row and per contact version"
    );
    assert!(
        !codes
            .iter()
            .any(|code| code == "cdc_slot_lost" || code == "poller_failed"),
        "alerts after kills: {codes:?}"
    );
    assert!(
        written.gifts.len() >= 200,
        "invalid run: the writer made only {} gift rows",
        written.gifts.len()
    );
    app.dir.disable_cleanup(false);
    drop(app);
    db.cleanup().await;
}
