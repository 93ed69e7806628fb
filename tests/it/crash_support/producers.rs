//! Producers of signed events and the obligations oracle: every delivery answered 2xx is an
//! obligation (recorded at its first 2xx); one with no answer, a connection error or a 5xx
//! is re-sent later, as Stripe does.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use steward::traffic::{self, Expected};
use tokio::sync::watch;

use crate::external_sandbox::stripe_secret_of;

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
        let generated = crate::push_e2e::one_time_traffic(seed, self.payments_per_batch);
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
