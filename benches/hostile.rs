//! Hostile-client benchmark (issue 11, items 1, 2 and 4): what slow, oversized and flooding
//! clients of one tenant cost a neighbour tenant and the process.
//!
//! The real release binary with the embedded sandbox and the default `[ingress]` limits. The
//! neighbour sends distinct signed ~2 KB `charge.succeeded` events at a fixed rate (open loop,
//! `STEWARD_BENCH_RATE`, default 20/s; each from its own task so a slow answer never delays the
//! schedule) in windows of 5 s, alone and under attack alternately, `STEWARD_BENCH_SECONDS`
//! (default 30) of each.
//! A neighbour request answered anything but 2xx, or not within 10 s, is a failure.
//!
//! Phase 1, slow and oversized connections: `STEWARD_BENCH_ATTACKERS` (default 500) raw TCP
//! connections at another tenant, half trickling a declared 64 KiB body to `/stripe` a byte
//! every 200 ms, half declaring 8 MiB to `/virtuous`, sending all but the last byte and holding
//! it. Each attacker opens a new connection 250 ms after the server closes its last one (the
//! server's `Retry-After` is 1 s), so the count stays near 500. Prints the process RSS before
//! the first attack and at its highest over all attacked windows (target ≤ +50 MB), the
//! neighbour's p99 solo and under attack (target ≤ 2×) and its failures (target 0). Solo and
//! attacked windows alternate, so the disk's and the machine's drift fall on both alike.
//!
//! Phase 2, a flood (item 4): another tenant posts distinct signed events in a closed loop
//! from `STEWARD_BENCH_FLOOD_CONNECTIONS` (default 64) connections, as fast as answered; the
//! neighbour at its fixed rate, in alternating windows as in phase 1. Prints the neighbour's
//! p99 solo and during the flood (target ≤ 2×, 0 failures) and the flood's answers by status
//! (`max_in_flight_per_tenant` at work: its deliveries wait for a place, `503 overloaded` only
//! past `admission_wait_ms`).
//!
//! Smoke run: `STEWARD_BENCH_SECONDS=3 STEWARD_BENCH_ATTACKERS=40 cargo bench --bench hostile`.
//! `STEWARD_BENCH_PHASE=1` or `2` runs one phase; `STEWARD_BENCH_ENGINE_ENV="KEY=V,KEY=V"` passes
//! settings to the engine (e.g. `STEWARD_INGRESS__MAX_IN_FLIGHT_PER_TENANT=4`).

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::json;
use support::{env_number, new_histogram, summary_ms, Engine, SignedEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const NEIGHBOUR: &str = "neighbour";
const TARGET: &str = "target";
const MIB: usize = 1024 * 1024;

/// The neighbour's answers over one measuring window.
struct NeighbourRun {
    histogram: Histogram<u64>,
    sent: u64,
    failures: u64,
}

impl NeighbourRun {
    fn empty() -> NeighbourRun {
        NeighbourRun {
            histogram: new_histogram(),
            sent: 0,
            failures: 0,
        }
    }

    fn add(&mut self, other: NeighbourRun) {
        self.histogram.add(&other.histogram).unwrap();
        self.sent += other.sent;
        self.failures += other.failures;
    }
}

/// Length of each solo and each attacked or flooded window.
const FLOOD_WINDOW_S: u64 = 5;

/// Posts `events` at `rate` per second from their own tasks; latency of each answer.
async fn neighbour_at_rate(engine: &Engine, events: Vec<SignedEvent>, rate: u64) -> NeighbourRun {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let url = format!("{}/hooks/{NEIGHBOUR}/stripe", engine.main_url);
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::new();
    let sent = events.len() as u64;
    for event in events {
        ticker.tick().await;
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let status = support::post_event(&client, &url, &event).await;
            (status, started.elapsed())
        }));
    }
    let mut histogram = new_histogram();
    let mut failures = 0;
    for task in tasks {
        let (status, elapsed) = task.await.unwrap();
        histogram.saturating_record(elapsed.as_micros() as u64);
        if !(200..300).contains(&status) {
            failures += 1;
        }
    }
    NeighbourRun {
        histogram,
        sent,
        failures,
    }
}

fn neighbour_events(tag: &str, count: u64) -> Vec<SignedEvent> {
    (0..count)
        .map(|n| support::charge_succeeded(NEIGHBOUR, tag, n, 2_048))
        .collect()
}

/// Resident set size of `pid`, in bytes.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// What the attackers saw: connections opened, and the first status line of each answer.
#[derive(Default)]
struct AttackTally {
    connections: AtomicU64,
    answered_408: AtomicU64,
    answered_503: AtomicU64,
    answered_other: AtomicU64,
    closed_unanswered: AtomicU64,
}

/// One attacker: connect, send a head and (part of) a body slowly, until the server answers
/// or closes; again 250 ms later, until `stop`.
async fn attacker(
    address: String,
    oversized: bool,
    attacking: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    tally: Arc<AttackTally>,
) {
    while !done.load(Ordering::Relaxed) {
        if !attacking.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let Ok(mut stream) = TcpStream::connect(&address).await else {
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        };
        tally.connections.fetch_add(1, Ordering::Relaxed);
        let (path, declared) = if oversized {
            (format!("/hooks/{TARGET}/virtuous"), 8 * MIB)
        } else {
            (format!("/hooks/{TARGET}/stripe"), 64 * 1024)
        };
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: steward\r\nContent-Type: application/json\r\nX-Virtuous-Signature: AAAA\r\nContent-Length: {declared}\r\n\r\n"
        );
        let (mut reader, mut writer) = stream.split();
        let sending = async {
            writer.write_all(head.as_bytes()).await?;
            if oversized {
                let chunk = vec![b' '; 64 * 1024];
                let mut sent = 0;
                while sent + chunk.len() < declared {
                    writer.write_all(&chunk).await?;
                    sent += chunk.len();
                }
                writer.write_all(&chunk[..declared - sent - 1]).await?;
                std::future::pending::<()>().await;
            } else {
                loop {
                    writer.write_all(b" ").await?;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            Ok::<(), std::io::Error>(())
        };
        let mut answer = Vec::new();
        let receiving = async {
            let mut buffer = [0u8; 1024];
            while let Ok(n) = reader.read(&mut buffer).await {
                if n == 0 {
                    break;
                }
                answer.extend_from_slice(&buffer[..n]);
            }
        };
        // A pause (a solo window) drops the connection, unanswered and uncounted.
        let paused = tokio::select! {
            _ = sending => false,
            _ = receiving => false,
            _ = async { while attacking.load(Ordering::Relaxed) { tokio::time::sleep(Duration::from_millis(50)).await } } => true,
        };
        if paused {
            continue;
        }
        let status_line = String::from_utf8_lossy(&answer);
        let counter = if status_line.starts_with("HTTP/1.1 408") {
            &tally.answered_408
        } else if status_line.starts_with("HTTP/1.1 503") {
            &tally.answered_503
        } else if answer.is_empty() {
            &tally.closed_unanswered
        } else {
            &tally.answered_other
        };
        counter.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Engine settings from `STEWARD_BENCH_ENGINE_ENV` (`KEY=V,KEY=V`), for tuning runs.
fn engine_env() -> Vec<(&'static str, &'static str)> {
    let text: &'static str = Box::leak(
        std::env::var("STEWARD_BENCH_ENGINE_ENV")
            .unwrap_or_default()
            .into_boxed_str(),
    );
    text.split(',')
        .filter_map(|pair| pair.split_once('='))
        .collect()
}

/// The neighbour's figures: `windows` pairs of windows, the load off (after `settle.0`) then
/// on (after `settle.1`), so drift over the run falls on both alike; `before_first_load`
/// runs once, after the first solo window. Each window's events are tagged apart.
async fn alternate_windows(
    engine: &Engine,
    rate: u64,
    windows: u64,
    load: &AtomicBool,
    settle: (Duration, Duration),
    tag: &str,
    mut before_first_load: impl FnMut(),
) -> (NeighbourRun, NeighbourRun) {
    let mut solo = NeighbourRun::empty();
    let mut loaded = NeighbourRun::empty();
    for window in 0..windows {
        load.store(false, Ordering::Relaxed);
        tokio::time::sleep(settle.0).await;
        let events = neighbour_events(&format!("{tag}s{window}x"), rate * FLOOD_WINDOW_S);
        solo.add(neighbour_at_rate(engine, events, rate).await);
        if window == 0 {
            before_first_load();
        }
        load.store(true, Ordering::Relaxed);
        tokio::time::sleep(settle.1).await;
        let events = neighbour_events(&format!("{tag}l{window}x"), rate * FLOOD_WINDOW_S);
        loaded.add(neighbour_at_rate(engine, events, rate).await);
    }
    load.store(false, Ordering::Relaxed);
    (solo, loaded)
}

/// The neighbour's solo and loaded latency, their p99 ratio and failures.
fn print_comparison(loaded_name: &str, solo: &NeighbourRun, loaded: &NeighbourRun) {
    println!("    neighbour solo: {}", summary_ms(&solo.histogram));
    println!(
        "    neighbour {loaded_name}: {}",
        summary_ms(&loaded.histogram)
    );
    println!(
        "    neighbour p99 {loaded_name}/solo {:.2}× (target ≤ 2×); failures {} of {} solo, {} of {} {loaded_name} (target 0)",
        ratio(&loaded.histogram, &solo.histogram),
        solo.failures,
        solo.sent,
        loaded.failures,
        loaded.sent
    );
}

fn ratio(attacked: &Histogram<u64>, solo: &Histogram<u64>) -> f64 {
    attacked.value_at_quantile(0.99) as f64 / solo.value_at_quantile(0.99).max(1) as f64
}

async fn slow_and_oversized(seconds: u64, rate: u64, attackers: u64) {
    let engine = Engine::spawn(&engine_env()).await;
    engine
        .create_tenant_with_org(NEIGHBOUR, 1_000_000, 10)
        .await;
    engine.create_tenant_with_org(TARGET, 1_000_000, 10).await;
    // The target accepts Virtuous webhooks, so its bodies are read (and capped), not refused.
    engine
        .admin(
            reqwest::Method::PATCH,
            &format!("/v1/tenants/{TARGET}"),
            Some(json!({"virtuous": {"webhook_secret": "bench-webhook-secret"}})),
        )
        .await;
    let pid = engine.pid();
    // Solo and attacked windows alternate (as in phase 2), so drift falls on both alike.
    let windows = (seconds / FLOOD_WINDOW_S).max(1);
    let done = Arc::new(AtomicBool::new(false));
    let attacking = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(AttackTally::default());
    let address = engine.main_url.trim_start_matches("http://").to_string();
    let attack: Vec<_> = (0..attackers)
        .map(|n| {
            tokio::spawn(attacker(
                address.clone(),
                n % 2 == 1,
                Arc::clone(&attacking),
                Arc::clone(&done),
                Arc::clone(&tally),
            ))
        })
        .collect();
    let mut rss_before = 0;
    let mut sampling = None;
    let (solo, attacked) = alternate_windows(
        &engine,
        rate,
        windows,
        &attacking,
        // The attack's connections are torn down before a solo window starts, and the
        // attackers connect and fill what they can before an attacked one is measured.
        (Duration::from_secs(2), Duration::from_secs(2)),
        "h",
        || {
            // Before any attack: the baseline, then the highest seen from here on.
            rss_before = rss_bytes(pid);
            let done = Arc::clone(&done);
            sampling = Some(tokio::spawn(async move {
                let mut highest = 0;
                while !done.load(Ordering::Relaxed) {
                    highest = highest.max(rss_bytes(pid));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                highest
            }));
        },
    )
    .await;
    done.store(true, Ordering::Relaxed);
    let rss_during = sampling.expect("one window at least").await.unwrap();
    for task in attack {
        let _ = task.await;
    }
    let mb = |bytes: u64| bytes as f64 / 1e6;
    println!("  phase 1: {attackers} slow or oversized connections at `{TARGET}`, neighbour at {rate}/s; {windows} solo and {windows} attacked windows of {FLOOD_WINDOW_S} s, alternating");
    println!(
        "    attack: {} connections opened; answered 408 {}, 503 {}, other {}; closed unanswered {}",
        tally.connections.load(Ordering::Relaxed),
        tally.answered_408.load(Ordering::Relaxed),
        tally.answered_503.load(Ordering::Relaxed),
        tally.answered_other.load(Ordering::Relaxed),
        tally.closed_unanswered.load(Ordering::Relaxed),
    );
    println!(
        "    RSS before {:.1} MB, highest during {:.1} MB: +{:.1} MB (target ≤ +50 MB)",
        mb(rss_before),
        mb(rss_during),
        mb(rss_during.saturating_sub(rss_before))
    );
    print_comparison("attacked", &solo, &attacked);
    // A bench that measured nothing is a bug: the attack must have reached the server.
    assert!(
        tally.connections.load(Ordering::Relaxed) >= attackers,
        "the attackers did not connect"
    );
}

async fn flood(seconds: u64, rate: u64, connections: usize) {
    let engine = Engine::spawn(&engine_env()).await;
    engine
        .create_tenant_with_org(NEIGHBOUR, 1_000_000, 10)
        .await;
    engine.create_tenant_with_org(TARGET, 1_000_000, 10).await;
    // Solo and flooded windows alternate, so the disk's and the machine's drift over the run
    // falls on both figures alike.
    let windows = (seconds / FLOOD_WINDOW_S).max(1);
    let stop = Arc::new(AtomicBool::new(false));
    let flooding = Arc::new(AtomicBool::new(false));
    let flooders: Vec<_> = (0..connections)
        .map(|connection| {
            let client = engine.client.clone();
            let url = format!("{}/hooks/{TARGET}/stripe", engine.main_url);
            let stop = Arc::clone(&stop);
            let flooding = Arc::clone(&flooding);
            tokio::spawn(async move {
                let mut statuses = BTreeMap::<u16, u64>::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if !flooding.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                    let tag = format!("fl{connection}x");
                    let event = support::charge_succeeded(TARGET, &tag, n, 2_048);
                    n += 1;
                    *statuses
                        .entry(support::post_event(&client, &url, &event).await)
                        .or_default() += 1;
                }
                statuses
            })
        })
        .collect();
    let (solo, flooded) = alternate_windows(
        &engine,
        rate,
        windows,
        &flooding,
        (Duration::from_millis(500), Duration::from_millis(500)),
        "f",
        || {},
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut flood_statuses = BTreeMap::<u16, u64>::new();
    for flooder in flooders {
        for (status, count) in flooder.await.unwrap() {
            *flood_statuses.entry(status).or_default() += count;
        }
    }
    println!("  phase 2: `{TARGET}` floods from {connections} connections (closed loop), neighbour at {rate}/s; {windows} solo and {windows} flooded windows of {FLOOD_WINDOW_S} s, alternating");
    println!("    flood answers by status: {flood_statuses:?}");
    print_comparison("flooded", &solo, &flooded);
    assert!(
        flood_statuses.values().sum::<u64>() > connections as u64,
        "the flood sent nothing"
    );
}

#[tokio::main]
async fn main() {
    let seconds = env_number("STEWARD_BENCH_SECONDS", 30);
    let rate = env_number("STEWARD_BENCH_RATE", 20);
    let attackers = env_number("STEWARD_BENCH_ATTACKERS", 500);
    let flood_connections = env_number("STEWARD_BENCH_FLOOD_CONNECTIONS", 64) as usize;
    // `1`, `2` or both (default): run one phase alone while tuning.
    let phase = std::env::var("STEWARD_BENCH_PHASE").unwrap_or_default();
    println!("hostile-client benchmark — machine: {}", support::machine());
    if phase.is_empty() || phase == "1" {
        slow_and_oversized(seconds, rate, attackers).await;
    }
    if phase.is_empty() || phase == "2" {
        flood(seconds, rate, flood_connections).await;
    }
}
