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

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{json, Value};
use steward::traffic::{self, Expected, TrafficOptions};
use tokio::sync::watch;

use crate::common::{SpawnOptions, TestApp};
use crate::external_sandbox::{org_and_tenant_on, stripe_secret_of, ExternalSandbox};

/// What a gift in Virtuous must say for one payment (from the generator's truth).
#[derive(Debug, Clone)]
pub struct ExpectedGift {
    pub tenant: String,
    pub transaction_id: String,
    pub amount_minor: i64,
    /// Upper-case ISO code.
    pub currency: String,
    /// `YYYY-MM-DD` (UTC: the harness's tenants keep the default time zone).
    pub gift_date: String,
    pub email: String,
}

/// (tenant, transactionId) of a gift; also (tenant, event id) of a delivery.
pub type TenantKey = (String, String);

/// Signs a body at a unix time: the headers to send with it.
pub type Signer = Arc<dyn Fn(&[u8], i64) -> Vec<(String, String)> + Send + Sync>;

/// One webhook delivery a producer makes (and re-makes until it is answered 2xx).
#[derive(Clone)]
pub struct Delivery {
    pub tenant: String,
    pub event_id: String,
    /// Path on the engine's main listener, e.g. `/hooks/{tenant}/stripe`.
    pub path: String,
    pub body: Arc<str>,
    pub sign: Signer,
    /// The gift a 2xx obliges the engine to deliver (`None`: the event makes no gift).
    pub obliges: Option<Arc<ExpectedGift>>,
}

/// A producer of signed events: called whenever the feed runs dry.
pub trait EventSource: Send {
    fn next_batch(&mut self) -> Vec<Delivery>;
}

/// One-time Stripe payments for one tenant, generated in chunks with fresh seeds (ids never
/// repeat across chunks): 30 % delivered as PaymentIntent + charge, 10 % exact re-deliveries.
pub struct StripeSource {
    pub tenant: String,
    pub next_seed: u64,
    pub payments_per_batch: usize,
}

impl StripeSource {
    pub fn new(tenant: &str, seed: u64) -> StripeSource {
        StripeSource {
            tenant: tenant.to_string(),
            next_seed: seed,
            payments_per_batch: 300,
        }
    }
}

impl EventSource for StripeSource {
    fn next_batch(&mut self) -> Vec<Delivery> {
        let seed = self.next_seed;
        self.next_seed += 1;
        let generated = traffic::generate(&TrafficOptions {
            seed,
            payments: self.payments_per_batch,
            subscription_share: 0.0,
            both_events_share: 0.3,
            charge_only_share: 0.1,
            refunds: 0,
            customer_share: 0.0,
            redelivery_share: 0.1,
            now_s: jiff::Timestamp::now().as_second(),
        });
        let gifts: HashMap<String, Arc<ExpectedGift>> = generated
            .payments
            .iter()
            .map(|payment| {
                let date = jiff::Timestamp::from_second(payment.created_s)
                    .unwrap()
                    .to_zoned(jiff::tz::TimeZone::UTC)
                    .date()
                    .to_string();
                let gift = ExpectedGift {
                    tenant: self.tenant.clone(),
                    transaction_id: payment.payment_id.clone(),
                    amount_minor: payment.amount_minor,
                    currency: payment.currency.to_ascii_uppercase(),
                    gift_date: date,
                    email: payment.donor.email.clone(),
                };
                (payment.payment_id.clone(), Arc::new(gift))
            })
            .collect();
        let secret = stripe_secret_of(&self.tenant);
        let sign: Signer = Arc::new(move |body: &[u8], now_s: i64| {
            vec![
                (
                    "Stripe-Signature".to_string(),
                    traffic::sign(&secret, body, now_s),
                ),
                ("Content-Type".to_string(), "application/json".to_string()),
            ]
        });
        generated
            .events
            .into_iter()
            .map(|event| {
                let obliges = match &event.expected {
                    Expected::Gift { payment_id } => Some(Arc::clone(&gifts[payment_id])),
                    other => panic!("one-time traffic only: {other:?}"),
                };
                Delivery {
                    tenant: self.tenant.clone(),
                    event_id: event.id,
                    path: format!("/hooks/{}/stripe", self.tenant),
                    body: event.body.into(),
                    sign: Arc::clone(&sign),
                    obliges,
                }
            })
            .collect()
    }
}

/// Deliveries not yet sent (round-robin over the sources) and those waiting to be re-sent.
pub struct Feed {
    sources: Vec<Box<dyn EventSource>>,
    fresh: VecDeque<Delivery>,
    /// (due, delivery), in the order they failed.
    retry: VecDeque<(Instant, Delivery)>,
    /// Every gift any generated delivery may make, by (tenant, transactionId).
    pub expected: HashMap<TenantKey, Arc<ExpectedGift>>,
}

impl Feed {
    pub fn new(sources: Vec<Box<dyn EventSource>>) -> Feed {
        Feed {
            sources,
            fresh: VecDeque::new(),
            retry: VecDeque::new(),
            expected: HashMap::new(),
        }
    }

    /// A due re-send first, else a fresh delivery (refilling from the sources).
    pub fn next(&mut self) -> Option<(Delivery, bool)> {
        if self
            .retry
            .front()
            .is_some_and(|(due, _)| *due <= Instant::now())
        {
            return self.retry.pop_front().map(|(_, delivery)| (delivery, true));
        }
        if self.fresh.is_empty() {
            let mut batches: Vec<VecDeque<Delivery>> = self
                .sources
                .iter_mut()
                .map(|source| source.next_batch().into())
                .collect();
            while batches.iter().any(|batch| !batch.is_empty()) {
                for batch in &mut batches {
                    if let Some(delivery) = batch.pop_front() {
                        if let Some(gift) = &delivery.obliges {
                            let key = (gift.tenant.clone(), gift.transaction_id.clone());
                            self.expected.insert(key, Arc::clone(gift));
                        }
                        self.fresh.push_back(delivery);
                    }
                }
            }
        }
        self.fresh.pop_front().map(|delivery| (delivery, false))
    }

    pub fn retry_later(&mut self, delivery: Delivery) {
        let delay_ms = rand::thread_rng().gen_range(20..200);
        self.retry
            .push_back((Instant::now() + Duration::from_millis(delay_ms), delivery));
    }

    pub fn waiting_for_resend(&self) -> usize {
        self.retry.len()
    }
}

/// The obligations oracle and the producers' counters.
#[derive(Default)]
pub struct Oracle {
    /// (tenant, event id) → the gift it obliges (first 2xx only).
    pub acknowledged: Mutex<HashMap<TenantKey, Option<Arc<ExpectedGift>>>>,
    /// Unexpected 4xx answers (status, body), a few kept.
    pub refused: Mutex<Vec<(u16, String)>>,
    pub sends: AtomicU64,
    /// Sends of a delivery that had no answer, a connection error or a 5xx before.
    pub resends: AtomicU64,
    pub answered_200: AtomicU64,
    pub answered_202: AtomicU64,
    pub answered_5xx: AtomicU64,
    pub connection_errors: AtomicU64,
}

impl Oracle {
    /// Distinct events answered 2xx.
    pub fn obligations(&self) -> usize {
        self.acknowledged.lock().unwrap().len()
    }

    /// The gifts obliged, by (tenant, transactionId).
    pub fn obliged_gifts(&self) -> BTreeMap<TenantKey, Arc<ExpectedGift>> {
        let acknowledged = self.acknowledged.lock().unwrap();
        acknowledged
            .values()
            .flatten()
            .map(|gift| {
                (
                    (gift.tenant.clone(), gift.transaction_id.clone()),
                    Arc::clone(gift),
                )
            })
            .collect()
    }

    /// Redeliveries as the report counts them: re-sends after no/failed answer + 200s.
    pub fn redeliveries(&self) -> u64 {
        self.resends.load(Ordering::Relaxed) + self.answered_200.load(Ordering::Relaxed)
    }
}

/// Producers sending to whatever engine is up (`url` is `None` while it is down).
pub struct Producers {
    pub feed: Arc<Mutex<Feed>>,
    pub oracle: Arc<Oracle>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Producers {
    pub fn start(feed: Feed, url: watch::Receiver<Option<String>>, count: usize) -> Producers {
        let feed = Arc::new(Mutex::new(feed));
        let oracle = Arc::new(Oracle::default());
        let stop = Arc::new(AtomicBool::new(false));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let tasks = (0..count)
            .map(|_| {
                let (feed, oracle, stop, client, url) = (
                    Arc::clone(&feed),
                    Arc::clone(&oracle),
                    Arc::clone(&stop),
                    client.clone(),
                    url.clone(),
                );
                tokio::spawn(produce(feed, oracle, stop, client, url))
            })
            .collect();
        Producers {
            feed,
            oracle,
            stop,
            tasks,
        }
    }

    /// Stops every producer (in-flight sends finish or fail first).
    pub async fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks.drain(..) {
            task.await.unwrap();
        }
    }
}

async fn produce(
    feed: Arc<Mutex<Feed>>,
    oracle: Arc<Oracle>,
    stop: Arc<AtomicBool>,
    client: reqwest::Client,
    url: watch::Receiver<Option<String>>,
) {
    while !stop.load(Ordering::Relaxed) {
        let Some(base) = url.borrow().clone() else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        let next = feed.lock().unwrap().next();
        let Some((delivery, is_resend)) = next else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        oracle.sends.fetch_add(1, Ordering::Relaxed);
        if is_resend {
            oracle.resends.fetch_add(1, Ordering::Relaxed);
        }
        let mut request = client
            .post(format!("{base}{}", delivery.path))
            .body(delivery.body.as_bytes().to_vec());
        let now_s = jiff::Timestamp::now().as_second();
        for (name, value) in (delivery.sign)(delivery.body.as_bytes(), now_s) {
            request = request.header(name, value);
        }
        let answer = request.send().await;
        let status = match answer {
            Ok(response) => response.status().as_u16(),
            Err(_) => {
                oracle.connection_errors.fetch_add(1, Ordering::Relaxed);
                feed.lock().unwrap().retry_later(delivery);
                continue;
            }
        };
        match status {
            200..=299 => {
                let counter = if status == 200 {
                    &oracle.answered_200
                } else {
                    &oracle.answered_202
                };
                counter.fetch_add(1, Ordering::Relaxed);
                let key = (delivery.tenant.clone(), delivery.event_id.clone());
                oracle
                    .acknowledged
                    .lock()
                    .unwrap()
                    .entry(key)
                    .or_insert(delivery.obliges);
            }
            500..=599 => {
                oracle.answered_5xx.fetch_add(1, Ordering::Relaxed);
                feed.lock().unwrap().retry_later(delivery);
            }
            other => {
                let mut refused = oracle.refused.lock().unwrap();
                if refused.len() < 5 {
                    refused.push((other, delivery.event_id.clone()));
                }
                drop(refused);
                // Counted as refused; re-sent anyway so the run goes on.
                feed.lock().unwrap().retry_later(delivery);
            }
        }
    }
}

/// The engine settings of the crash tests: fast retries (the plan's shared settings).
pub fn fast_engine() -> SpawnOptions {
    SpawnOptions {
        env: vec![(
            "STEWARD_SUBMITTER__RETRY_SCHEDULE".into(),
            r#"["50ms","100ms","200ms","400ms","800ms","1s","2s","4s"]"#.into(),
        )],
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
        let status = self.app.status(tenant).await;
        ["live", "retry", "reconcile", "backfill"]
            .iter()
            .map(|lane| status["lanes"][lane]["depth"].as_u64().unwrap_or(0))
            .sum()
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
        let deadline = Instant::now() + timeout;
        let mut last: Option<(u64, Instant)> = None;
        loop {
            let mut queued = 0;
            for tenant in &self.tenants {
                queued += self.queued_total(tenant).await;
            }
            let received = self.transactions_received().await;
            last = match last {
                _ if queued > 0 => None,
                Some((seen, since)) if seen == received => {
                    if since.elapsed() >= Duration::from_secs(1) {
                        return since;
                    }
                    Some((seen, since))
                }
                _ => Some((received, Instant::now())),
            };
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for the engine to drain ({queued} queued, {received} received; data dir {})",
                self.app.data_dir().display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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
        let mut report = GiftReport::default();
        for tenant in &self.tenants {
            let contacts = self
                .sandbox
                .call(
                    Method::GET,
                    &format!("/_sandbox/orgs/{tenant}/contacts"),
                    None,
                )
                .await;
            let emails_of: HashMap<u64, BTreeSet<String>> = contacts
                .as_array()
                .unwrap()
                .iter()
                .map(|contact| (contact["id"].as_u64().unwrap(), contact_emails(contact)))
                .collect();
            for gift in self.sandbox.gifts(tenant).await {
                let transaction_id = gift["transactionId"].as_str().unwrap_or("").to_string();
                let key = (tenant.clone(), transaction_id);
                *report.gifts.entry(key.clone()).or_insert(0) += 1;
                match expected.get(&key) {
                    None => report
                        .altered
                        .push(format!("a gift nobody sent: {tenant} {gift}")),
                    Some(truth) => {
                        let emails = gift["contactId"].as_u64().and_then(|id| emails_of.get(&id));
                        if let Some(difference) = gift_difference(truth, &gift, emails) {
                            report.altered.push(difference);
                        }
                    }
                }
            }
        }
        report.lost = obliged
            .keys()
            .filter(|key| !report.gifts.contains_key(*key))
            .cloned()
            .collect();
        report
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

/// What the orgs hold after the import, against the obligations.
#[derive(Debug, Default)]
pub struct GiftReport {
    /// Gifts per (tenant, transactionId).
    pub gifts: BTreeMap<TenantKey, usize>,
    /// Obligations with no gift.
    pub lost: Vec<TenantKey>,
    /// Gifts whose fields differ from what was sent (descriptions).
    pub altered: Vec<String>,
}

impl GiftReport {
    /// (tenant, transactionId) → count, for ids with more than one gift.
    pub fn duplicates(&self) -> BTreeMap<TenantKey, usize> {
        self.gifts
            .iter()
            .filter(|(_, count)| **count > 1)
            .map(|(key, count)| (key.clone(), *count))
            .collect()
    }

    /// Extra gifts beyond the first per transactionId.
    pub fn duplicate_gifts(&self) -> usize {
        self.gifts.values().map(|count| count - 1).sum()
    }
}

fn contact_emails(contact: &Value) -> BTreeSet<String> {
    let mut emails = BTreeSet::new();
    for individual in contact["contactIndividuals"]
        .as_array()
        .into_iter()
        .flatten()
    {
        for method in individual["contactMethods"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let Some(value) = method["value"].as_str() {
                emails.insert(value.to_ascii_lowercase());
            }
        }
    }
    emails
}

/// `None` when the gift says what was sent (amount, currency, date, transactionId, email).
fn gift_difference(
    truth: &ExpectedGift,
    gift: &Value,
    emails: Option<&BTreeSet<String>>,
) -> Option<String> {
    let decimals = steward::sources::amount::minor_unit_decimals(&truth.currency);
    let amount_minor = gift["amount"]
        .as_f64()
        .map(|amount| (amount * 10f64.powi(decimals as i32)).round() as i64);
    let mut wrong = Vec::new();
    if amount_minor != Some(truth.amount_minor) {
        wrong.push(format!("amount (want {} minor)", truth.amount_minor));
    }
    if gift["currencyCode"] != json!(truth.currency) {
        wrong.push(format!("currencyCode (want {})", truth.currency));
    }
    if gift["giftDate"] != json!(format!("{}T00:00:00", truth.gift_date)) {
        wrong.push(format!("giftDate (want {})", truth.gift_date));
    }
    if gift["transactionSource"] != "Stripe" {
        wrong.push("transactionSource".to_string());
    }
    if !emails.is_some_and(|emails| emails.contains(&truth.email.to_ascii_lowercase())) {
        wrong.push(format!("contact email (want {})", truth.email));
    }
    (!wrong.is_empty()).then(|| {
        format!(
            "{} {}: {} in {gift}",
            truth.tenant,
            truth.transaction_id,
            wrong.join(", ")
        )
    })
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

#[test]
fn crash_support_gift_difference_sees_each_altered_field() {
    // Goal: the body check is not vacuous — a changed amount, date, currency or contact email
    // is reported, and the unchanged gift is not.
    let truth = ExpectedGift {
        tenant: "t".into(),
        transaction_id: "pi_1".into(),
        amount_minor: 1234,
        currency: "USD".into(),
        gift_date: "2026-11-26".into(),
        email: "ann@example.org".into(),
    };
    let gift = json!({"transactionSource": "Stripe", "transactionId": "pi_1", "amount": 12.34,
                      "currencyCode": "USD", "giftDate": "2026-11-26T00:00:00"});
    let emails: BTreeSet<String> = ["ann@example.org".to_string()].into();
    assert_eq!(gift_difference(&truth, &gift, Some(&emails)), None);
    for (field, value) in [
        ("amount", json!(12.35)),
        ("currencyCode", json!("EUR")),
        ("giftDate", json!("2026-11-25T00:00:00")),
    ] {
        let mut altered = gift.clone();
        altered[field] = value;
        let difference = gift_difference(&truth, &altered, Some(&emails));
        assert!(
            difference.is_some_and(|text| text.contains(field)),
            "{field}"
        );
    }
    let other: BTreeSet<String> = ["bob@example.org".to_string()].into();
    assert!(gift_difference(&truth, &gift, Some(&other)).is_some());
}
