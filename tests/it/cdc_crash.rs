//! Goal: kill -9 the engine again and again while a writer streams inserts and updates into
//! a partner's Postgres (issue 18, logical mode): no gift row is lost, none is sent twice,
//! every contact version is captured once, and the slot is never advanced past what the
//! store holds (the slot is never "lost" by a crash either).
//!
//! Size: 10 kill cycles in CI, 20 with `STEWARD_FULL_POLL_TESTS=1`. `STEWARD_CRASH_SEED`
//! repeats a run's kill timings and writes; a failing run keeps its data dir and log (path
//! printed). The org lives in an `ExternalSandbox` process (the embedded one would die with
//! each kill), with its usual dedup on transactionId: a gift whose answer the kill lost is
//! sent again and must not become a second gift; a row captured twice under another key
//! would show as a second gift, and the engine's own count of captured facts must equal
//! the rows and versions written. Prints one `RELIABILITY:` line.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::cdc_support::{
    alert_codes, cdc_poller, cdc_tenant, format_lsn, gift_cents, insert_gifts_sql,
    insert_people_sql, logical_source, position_lsn, slot_row, update_person_sql, virtuous_gifts,
    wait_gifts_and_drained, wait_streaming, CdcDb, GiftRow, PersonRow,
};
use crate::common::{at_timeout, wait_until, TestApp};
use crate::crash_support::{crash_seed, fast_engine};
use crate::external_sandbox::ExternalSandbox;
use crate::poll_support::sized;

const NAME: &str = "crashdb";

/// What the writer committed: the first version of every gift row, and each person's
/// number of versions (insert + updates).
#[derive(Default)]
struct Written {
    gifts: BTreeMap<i64, GiftRow>,
    person_versions: BTreeMap<i64, u32>,
    transactions: u64,
    gift_updates: u64,
}

/// Streams small transactions into the two tables until stopped: multi-row gift INSERTs,
/// gift UPDATEs (a new email, or a new amount), new people, new person versions, and mixed
/// transactions. Only committed work is recorded (a failed statement panics: Postgres stays
/// up throughout).
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
                written.gifts.insert(row.id, row);
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
    // Goal: N kill -9 cycles (10 CI, 20 full) at random moments while a writer streams
    // inserts and updates: afterwards every gift row written is exactly one gift in
    // Virtuous (0 lost, 0 duplicates) with its first amount, the engine captured exactly one
    // fact per gift row and per contact version, at every kill the slot's confirmed_flush_lsn
    // is at or behind the position the store holds, and no cdc_slot_lost was raised.
    let started = Instant::now();
    let cycles = sized(10, 20);
    let seed = crash_seed();
    eprintln!("cdc crash: seed {seed} (STEWARD_CRASH_SEED), {cycles} cycles");
    let db = CdcDb::create("cdccrash").await;
    let sandbox = ExternalSandbox::start();
    let mut app = TestApp::spawn(fast_engine()).await;
    app.dir.disable_cleanup(true);
    let tenant = "cdc-crash";
    cdc_tenant(
        &app,
        &sandbox.url,
        &sandbox.url,
        tenant,
        json!({"postgres": {NAME: logical_source(&db, json!({}))}}),
        json!({}),
    )
    .await;
    wait_streaming(&app, tenant, NAME, Duration::from_secs(60)).await;

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
    let kills_checked = Arc::new(AtomicU64::new(0));
    let mut at_kills = Vec::new();
    let mut failures = Vec::new();
    for cycle in 0..cycles {
        let up_ms = rng.gen_range(200..=1_200);
        tokio::time::sleep(Duration::from_millis(up_ms)).await;
        admin_url.send_replace(None);
        app.kill9();
        let confirmed = db.confirmed_flush_lsn().await;
        app.start().await;
        admin_url.send_replace(Some(app.admin_url.clone()));
        let last = std::cell::RefCell::new(Value::Null);
        let position = wait_until(
            Duration::from_secs(30),
            at_timeout(|| format!("a stored position after restart {cycle}: {}", last.borrow())),
            || async {
                let view = cdc_poller(&app, tenant, NAME).await;
                let position = position_lsn(&view);
                *last.borrow_mut() = view;
                position
            },
        )
        .await;
        kills_checked.fetch_add(1, Ordering::Relaxed);
        at_kills.push((up_ms, format_lsn(confirmed), format_lsn(position)));
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

    // Let everything through, then count.
    let gift_rows = written.gifts.len() as u64;
    let contact_versions: u64 = written
        .person_versions
        .values()
        .map(|version| u64::from(*version) + 1)
        .sum();
    let expected_facts = gift_rows + contact_versions;
    let last = std::cell::RefCell::new(Value::Null);
    let captured = wait_until(
        Duration::from_secs(120),
        at_timeout(|| {
            format!(
                "{expected_facts} facts captured (data dir {}): {}",
                app.data_dir().display(),
                last.borrow()
            )
        }),
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
    let lost: Vec<i64> = written
        .gifts
        .keys()
        .filter(|row| !gifts.by_row.contains_key(row))
        .copied()
        .collect();
    let duplicates = gifts.duplicates();
    let altered: Vec<String> = written
        .gifts
        .iter()
        .filter_map(|(row, truth)| {
            let gift = gifts.by_row.get(row)?.first()?;
            (gift_cents(gift) != Some(truth.amount_cents)).then(|| {
                format!(
                    "row {row}: {} (want {})",
                    gift["amount"],
                    truth.amount_text()
                )
            })
        })
        .collect();
    let stats = sandbox
        .call(Method::GET, &format!("/_sandbox/orgs/{tenant}/stats"), None)
        .await;
    let codes = alert_codes(&app, tenant).await;
    eprintln!(
        "RELIABILITY: cdc logical: {} kill -9 cycles, writer transactions {}, gift rows {gift_rows} \
         ({} gift updates), contact versions {contact_versions}, facts captured {captured} (want \
         {expected_facts}), lost {}, duplicate gifts {}, altered {}, foreign {}, Virtuous \
         transactions received {} (rejected as duplicate {}), slot ≤ position at {} kills and in \
         {samples} samples ({} violations), loop {:.1} s, drained {:.1} s after the loop; seed {seed}",
        at_kills.len(),
        written.transactions,
        written.gift_updates,
        lost.len(),
        duplicates.len(),
        altered.len(),
        gifts.foreign.len(),
        stats["transactions_received"],
        stats["rejected_duplicate"],
        kills_checked.load(Ordering::Relaxed),
        violations.len(),
        loop_done.as_secs_f64(),
        (drained - loop_done).as_secs_f64(),
    );
    eprintln!("cdc crash: (kill after ms, slot at kill, position after restart): {at_kills:?}");

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
        "LOST {} gift rows (data dir {}): {:?}",
        lost.len(),
        app.data_dir().display(),
        &lost[..lost.len().min(20)]
    );
    assert!(
        duplicates.is_empty(),
        "duplicate gifts (row, gifts): {duplicates:?}"
    );
    assert!(
        gifts.foreign.is_empty(),
        "gifts no row explains: {:?}",
        gifts.foreign
    );
    assert!(
        altered.is_empty(),
        "gifts differ from their row: {altered:?}"
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
        gift_rows >= 200,
        "invalid run: only {gift_rows} gift rows written"
    );
    app.dir.disable_cleanup(false);
    drop(app);
    db.cleanup().await;
}
