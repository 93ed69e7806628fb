//! Goal of this helper module: a reusable kill -9 harness — the real engine (data dir kept
//! across restarts) and an `ExternalSandbox` process, producers that send signed events and
//! keep an oracle of obligations (every event answered 2xx), a kill loop, and the final
//! checks (lost, duplicate and altered gifts).
//!
//! Producers are generic over an [`EventSource`] (anything that makes signed deliveries with
//! the gift each one obliges); [`StripeSource`] is the Stripe one. A delivery that gets no
//! answer, a connection error or a 5xx is re-sent later, as Stripe does; its obligation
//! starts at its first 2xx.

#![allow(dead_code)]

pub mod gifts;
pub mod producers;

pub use gifts::GiftReport;
pub use producers::{
    Delivery, EventSource, ExpectedGift, Feed, Oracle, Producers, StripeSource, TenantKey,
};

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tokio::sync::watch;

use crate::common::{at_timeout, wait_until, SpawnOptions, TestApp};
use crate::external_sandbox::{org_and_tenant_on, ExternalSandbox};

/// The engine settings of the crash tests: fast retries (the plan's shared settings), and
/// no ingress admission cap in their way: a client that drops its connection before the
/// answer leaves its delivery running on the server, so the disconnect test's 12 senders
/// keep far more than 16 deliveries of a tenant in flight (that cap is tested in
/// `ingress_limits`; these tests are about what is stored).
pub fn fast_engine() -> SpawnOptions {
    SpawnOptions {
        env: vec![
            (
                "STEWARD_SUBMITTER__RETRY_SCHEDULE".into(),
                r#"["50ms","100ms","200ms","400ms","800ms","1s","2s","4s"]"#.into(),
            ),
            (
                "STEWARD_INGRESS__MAX_IN_FLIGHT_PER_TENANT".into(),
                "100000".into(),
            ),
            (
                "STEWARD_INGRESS__MAX_IN_FLIGHT_ALONE".into(),
                "100000".into(),
            ),
        ],
        ..SpawnOptions::default()
    }
}

/// One kill cycle's facts.
#[derive(Debug, Clone)]
pub struct Cycle {
    pub kill_after_ms: u64,
    /// Virtuous calls the sandbox counted between the start and the kill.
    pub virtuous_calls: u64,
}

/// The engine under test, its sandbox, and the URL the producers follow.
pub struct CrashRig {
    pub app: TestApp,
    pub sandbox: ExternalSandbox,
    pub tenants: Vec<String>,
    pub url: watch::Sender<Option<String>>,
    /// Successful starts on the kept data dir (the store reopened).
    pub reopens: u64,
}

impl CrashRig {
    /// Sandbox, engine (hourly limit 360,000 so the budget never slows the test) and one
    /// org + tenant per id, `org_extra` merged into each org's spec. The data dir is kept if
    /// the test fails (its path is printed).
    pub async fn start(tenants: &[&str], org_extra: Value) -> CrashRig {
        let sandbox = ExternalSandbox::start();
        let mut app = TestApp::spawn(fast_engine()).await;
        app.dir.disable_cleanup(true);
        for tenant in tenants {
            org_and_tenant_on(&app, &sandbox, tenant, 360_000, org_extra.clone()).await;
        }
        let (url, _) = watch::channel(Some(app.main_url.clone()));
        CrashRig {
            app,
            sandbox,
            tenants: tenants.iter().map(|t| t.to_string()).collect(),
            url,
            reopens: 0,
        }
    }

    /// Virtuous calls of every tenant's org so far.
    pub async fn virtuous_calls(&self) -> u64 {
        let mut total = 0;
        for tenant in &self.tenants {
            total += self.sandbox.calls(tenant).await;
        }
        total
    }

    /// Restarts the engine on the same data dir and waits for `/readyz`. A failure keeps the
    /// data dir and panics with its path and log, loudly when the store reports corruption.
    pub async fn restart(&mut self) {
        let started = AssertUnwindSafe(self.app.start()).catch_unwind().await;
        if started.is_err() {
            let log = self.app.log();
            let tail: String = log
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            let corrupt = if log.contains("is corrupt") {
                "THE STORE IS CORRUPT (StoreError::Corrupt) — "
            } else {
                ""
            };
            panic!(
                "{corrupt}the engine failed to restart after a kill; data dir kept at {} (log {}); log tail:\n{tail}",
                self.app.data_dir().display(),
                self.app.log_path().display()
            );
        }
        self.reopens += 1;
        self.url.send_replace(Some(self.app.main_url.clone()));
    }

    /// At least `cycles` times, and on while `more_needed()` (at most 5 × `cycles`): (the
    /// engine is up and ready) wait a uniform 0–500 ms, SIGKILL, restart. Returns each
    /// cycle's facts; the engine is down at the end.
    pub async fn kill_cycles(
        &mut self,
        cycles: usize,
        seed: u64,
        more_needed: impl Fn() -> bool,
    ) -> Vec<Cycle> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut facts = Vec::with_capacity(cycles);
        let mut cycle = 0;
        while cycle < cycles || (more_needed() && cycle < cycles * 5) {
            if cycle > 0 {
                self.restart().await;
            }
            let calls_before = self.virtuous_calls().await;
            let kill_after_ms = rng.gen_range(0..=500);
            tokio::time::sleep(Duration::from_millis(kill_after_ms)).await;
            self.app.kill9();
            self.url.send_replace(None);
            let virtuous_calls = self.virtuous_calls().await - calls_before;
            facts.push(Cycle {
                kill_after_ms,
                virtuous_calls,
            });
            cycle += 1;
        }
        facts
    }

    pub async fn queued_total(&self, tenant: &str) -> u64 {
        crate::common::queued_total(&self.app.status(tenant).await)
    }

    /// Transactions the orgs accepted so far (all tenants).
    pub async fn transactions_received(&self) -> u64 {
        let mut total = 0;
        for tenant in &self.tenants {
            let stats = self.sandbox.stats(tenant).await;
            total += stats["transactions_received"].as_u64().unwrap();
        }
        total
    }

    /// Waits until every tenant's queue is empty and the sandbox's transactions received
    /// stay unchanged for a second; returns when that state was first seen (the drain's end).
    pub async fn drain(&self, timeout: Duration) -> Instant {
        // Nothing queued and the received count unchanged since (count, when).
        let steady: Cell<Option<(u64, Instant)>> = Cell::new(None);
        // (queued, received) at the last look, for the message at the deadline.
        let seen = Cell::new((0, 0));
        let what = at_timeout(|| {
            let (queued, received) = seen.get();
            format!(
                "the engine to drain ({queued} queued, {received} received; data dir {})",
                self.app.data_dir().display()
            )
        });
        wait_until(timeout, what, || {
            let (steady, seen) = (&steady, &seen);
            async move {
                let mut queued = 0;
                for tenant in &self.tenants {
                    queued += self.queued_total(tenant).await;
                }
                let received = self.transactions_received().await;
                seen.set((queued, received));
                steady.set(match steady.get() {
                    _ if queued > 0 => None,
                    Some((count, since)) if count == received => {
                        if since.elapsed() >= Duration::from_secs(1) {
                            return Some(since);
                        }
                        Some((count, since))
                    }
                    _ => Some((received, Instant::now())),
                });
                None
            }
        })
        .await
    }

    /// Runs the import step of every org.
    pub async fn import_all(&self) {
        for tenant in &self.tenants {
            self.sandbox.process(tenant).await;
        }
    }

    /// Compares the orgs' gifts with the obligations and with what was generated.
    pub async fn check_gifts(
        &self,
        obliged: &BTreeMap<TenantKey, Arc<ExpectedGift>>,
        expected: &HashMap<TenantKey, Arc<ExpectedGift>>,
    ) -> GiftReport {
        gifts::check_gifts(&self.sandbox, &self.tenants, obliged, expected).await
    }
}

impl Drop for CrashRig {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("STEWARD_CRASH_KEEP").is_some() {
            eprintln!(
                "crash harness: data dir kept at {} (log {})",
                self.app.data_dir().display(),
                self.app.log_path().display()
            );
        } else {
            self.app.dir.disable_cleanup(false);
        }
    }
}

/// `STEWARD_CRASH_CYCLES` (default 20).
pub fn crash_cycles() -> usize {
    std::env::var("STEWARD_CRASH_CYCLES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(20)
}

/// `STEWARD_CRASH_SEED` or a random seed (printed so a run can be repeated).
pub fn crash_seed() -> u64 {
    std::env::var("STEWARD_CRASH_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen())
}

/// A kill run is valid only with at least this many obligations (issue 5).
pub const MIN_OBLIGATIONS: usize = 1_000;

/// The numbers of one kill run (after the final restart, drain and import).
pub struct KillRun {
    pub rig: CrashRig,
    pub cycles: Vec<Cycle>,
    pub oracle: Arc<Oracle>,
    pub report: GiftReport,
    pub obliged: BTreeMap<TenantKey, Arc<ExpectedGift>>,
    /// From the start of the last restart to the moment the queues were empty and the
    /// sandbox had received everything.
    pub drain: Duration,
    /// Transactions the orgs accepted in the whole run (re-sends included).
    pub received: u64,
    pub seed: u64,
}

impl KillRun {
    /// Producers (`producers` tasks, one Stripe source per tenant) run through `cycles` kill
    /// cycles; then they stop, the engine restarts once more and drains, the orgs import.
    pub async fn run(
        tenants: &[&str],
        org_extra: Value,
        cycles: usize,
        producers: usize,
    ) -> KillRun {
        let seed = crash_seed();
        eprintln!("crash harness: seed {seed} (STEWARD_CRASH_SEED), {cycles} cycles");
        let mut rig = CrashRig::start(tenants, org_extra).await;
        let sources: Vec<Box<dyn EventSource>> = tenants
            .iter()
            .enumerate()
            .map(|(n, tenant)| {
                let base = (seed % 1_000_000) * 1_000 + n as u64 * 100;
                Box::new(StripeSource::new(tenant, base)) as Box<dyn EventSource>
            })
            .collect();
        let mut running = Producers::start(Feed::new(sources), rig.url.subscribe(), producers);
        // A slow machine makes fewer obligations per cycle: go on until the run is valid.
        let oracle = Arc::clone(&running.oracle);
        let cycle_facts = rig
            .kill_cycles(cycles, seed, || oracle.obligations() < MIN_OBLIGATIONS)
            .await;
        running.stop().await;
        let restarted = Instant::now();
        rig.restart().await;
        let drained = rig.drain(Duration::from_secs(180)).await;
        let drain = drained - restarted;
        let received = rig.transactions_received().await;
        rig.import_all().await;
        let obliged = running.oracle.obliged_gifts();
        let expected = running.feed.lock().unwrap().expected.clone();
        let report = rig.check_gifts(&obliged, &expected).await;
        KillRun {
            rig,
            cycles: cycle_facts,
            oracle: running.oracle,
            report,
            obliged,
            drain,
            received,
            seed,
        }
    }

    pub fn cycles_with_a_virtuous_call(&self) -> usize {
        self.cycles
            .iter()
            .filter(|cycle| cycle.virtuous_calls > 0)
            .count()
    }

    /// The `RELIABILITY:` line (with `extra` fields appended).
    pub fn reliability_line(&self, name: &str, extra: &str) -> String {
        let oracle = &self.oracle;
        let sends = oracle.sends.load(Ordering::Relaxed);
        let resends = oracle.resends.load(Ordering::Relaxed);
        format!(
            "RELIABILITY: {name}: {} kill -9 cycles, {} tenants, events sent {}, obligations {} ({} gifts obliged), lost {}, duplicate gifts {}, altered gifts {}, redeliveries {} ({} re-sent after no/failed answer + {} answered 200 duplicate), cycles with a Virtuous call {}/{}, store reopened {}/{}, Virtuous transactions received {} for {} transactionIds, drain after last restart {:.1} s{extra}; seed {}",
            self.cycles.len(),
            self.rig.tenants.len(),
            sends - resends,
            oracle.obligations(),
            self.obliged.len(),
            self.report.lost.len(),
            self.report.duplicate_gifts(),
            self.report.altered.len(),
            oracle.redeliveries(),
            resends,
            oracle.answered_200.load(Ordering::Relaxed),
            self.cycles_with_a_virtuous_call(),
            self.cycles.len(),
            self.rig.reopens,
            self.cycles.len(),
            self.received,
            self.report.gifts.len(),
            self.drain.as_secs_f64(),
            self.seed,
        )
    }

    /// The checks every kill run must pass: valid (≥ 1,000 obligations, ≥ half the cycles
    /// with a Virtuous call), nothing lost, nothing altered, nothing refused, every reopen.
    pub fn assert_valid_and_nothing_lost(&self) {
        let refused = self.oracle.refused.lock().unwrap().clone();
        assert!(refused.is_empty(), "unexpected 4xx answers: {refused:?}");
        assert!(
            self.oracle.obligations() >= MIN_OBLIGATIONS,
            "invalid run: only {} obligations",
            self.oracle.obligations()
        );
        assert!(
            self.cycles_with_a_virtuous_call() * 2 >= self.cycles.len(),
            "invalid run: only {} of {} cycles made a Virtuous call before the kill: {:?}",
            self.cycles_with_a_virtuous_call(),
            self.cycles.len(),
            self.cycles
        );
        assert_eq!(self.rig.reopens as usize, self.cycles.len(), "reopens");
        assert!(
            self.report.lost.is_empty(),
            "LOST {} acknowledged gifts (data dir {}): {:?}",
            self.report.lost.len(),
            self.rig.app.data_dir().display(),
            &self.report.lost[..self.report.lost.len().min(20)]
        );
        assert!(
            self.report.altered.is_empty(),
            "{} gifts differ from what was sent: {:?}",
            self.report.altered.len(),
            &self.report.altered[..self.report.altered.len().min(10)]
        );
    }
}
