//! Outgoing webhooks: payloads in the single (`{"event", "gift"}`) or bulk
//! (`{"event", "models": [{"gift"}]}`) form, signed with HMAC-SHA256 of the raw body, delivered
//! off the request path by one dispatcher task that owns the reqwest client, with retries.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix_web::web::Bytes;
use base64::Engine as _;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::records::Table;
use super::stats::WebhookCounters;
use super::{LiveSwitches, SignatureEncoding, WebhookDelivery};
use crate::faults::stable_draw;
use crate::webhook_delivery::{self, DeliveryPolicy, WebhookPost};

/// Pauses before the 2nd, 3rd and 4th attempt of a delivery.
const RETRY_BACKOFF_MS: [u64; 3] = [100, 500, 2_000];
/// Virtuous gives slow receivers little time; so does the sandbox.
const DELIVERY_TIMEOUT_MS: u64 = 5_000;
pub(crate) const SIGNATURE_HEADER: &str = "X-Virtuous-Signature";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventKind {
    GiftCreate,
    GiftUpdate,
    GiftDelete,
    ContactCreate,
    ContactUpdate,
    /// Extension: the real flag for contact deletes is unconfirmed.
    ContactDelete,
    ProjectCreate,
    ProjectUpdate,
    ProjectDelete,
    EventCreate,
    EventUpdate,
    EventDelete,
    ContactNoteCreate,
    ContactNoteUpdate,
    ContactNoteDelete,
}

impl EventKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            EventKind::GiftCreate => "GiftCreate",
            EventKind::GiftUpdate => "GiftUpdate",
            EventKind::GiftDelete => "GiftDelete",
            EventKind::ContactCreate => "ContactCreate",
            EventKind::ContactUpdate => "ContactUpdate",
            EventKind::ContactDelete => "ContactDelete",
            EventKind::ProjectCreate => "ProjectCreate",
            EventKind::ProjectUpdate => "ProjectUpdate",
            EventKind::ProjectDelete => "ProjectDelete",
            EventKind::EventCreate => "EventCreate",
            EventKind::EventUpdate => "EventUpdate",
            EventKind::EventDelete => "EventDelete",
            EventKind::ContactNoteCreate => "ContactNoteCreate",
            EventKind::ContactNoteUpdate => "ContactNoteUpdate",
            EventKind::ContactNoteDelete => "ContactNoteDelete",
        }
    }

    /// The subscription flag that switches this event on: the name in camelCase.
    pub(crate) fn subscription_flag(self) -> &'static str {
        match self {
            EventKind::GiftCreate => "giftCreate",
            EventKind::GiftUpdate => "giftUpdate",
            EventKind::GiftDelete => "giftDelete",
            EventKind::ContactCreate => "contactCreate",
            EventKind::ContactUpdate => "contactUpdate",
            EventKind::ContactDelete => "contactDelete",
            EventKind::ProjectCreate => "projectCreate",
            EventKind::ProjectUpdate => "projectUpdate",
            EventKind::ProjectDelete => "projectDelete",
            EventKind::EventCreate => "eventCreate",
            EventKind::EventUpdate => "eventUpdate",
            EventKind::EventDelete => "eventDelete",
            EventKind::ContactNoteCreate => "contactNoteCreate",
            EventKind::ContactNoteUpdate => "contactNoteUpdate",
            EventKind::ContactNoteDelete => "contactNoteDelete",
        }
    }

    pub(crate) fn model_key(self) -> &'static str {
        match self {
            EventKind::GiftCreate | EventKind::GiftUpdate | EventKind::GiftDelete => "gift",
            EventKind::ContactCreate | EventKind::ContactUpdate | EventKind::ContactDelete => {
                "contact"
            }
            EventKind::ProjectCreate | EventKind::ProjectUpdate | EventKind::ProjectDelete => {
                "project"
            }
            EventKind::EventCreate | EventKind::EventUpdate | EventKind::EventDelete => "event",
            EventKind::ContactNoteCreate
            | EventKind::ContactNoteUpdate
            | EventKind::ContactNoteDelete => "contactNote",
        }
    }

    pub(crate) fn is_delete(self) -> bool {
        matches!(
            self,
            EventKind::GiftDelete
                | EventKind::ContactDelete
                | EventKind::ProjectDelete
                | EventKind::EventDelete
                | EventKind::ContactNoteDelete
        )
    }
}

/// The longest pause `webhook_reorder` puts before a POST.
pub(crate) const REORDER_MAX_DELAY_MS: u64 = 200;

/// An abbreviated gift or contact model: `id` and the transaction ids the full model had.
fn abbreviate(model: Value) -> Value {
    let Value::Object(mut doc) = model else {
        return model;
    };
    doc.retain(|key, _| matches!(key.as_str(), "id" | "transactionSource" | "transactionId"));
    Value::Object(doc)
}

/// One record change to announce; `model` is already in webhook form.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub(crate) kind: EventKind,
    pub(crate) model: Value,
}

/// One POST to one subscriber.
#[derive(Debug)]
pub(crate) struct WebhookJob {
    pub(crate) url: String,
    pub(crate) signature: String,
    pub(crate) body: Bytes,
    pub(crate) counters: Arc<WebhookCounters>,
    /// Waited before the first attempt (`webhook_reorder`).
    pub(crate) delay_ms: u64,
}

pub(crate) fn sign(secret: &str, body: &[u8], encoding: SignatureEncoding) -> String {
    let digest = crate::webhook_delivery::hmac_sha256(secret, body);
    match encoding {
        SignatureEncoding::Base64 => base64::engine::general_purpose::STANDARD.encode(digest),
        SignatureEncoding::Hex => hex::encode(digest),
    }
}

/// How one batch of events of one kind is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    Single,
    Bulk,
}

/// The state a `mixed` delivery alternates with, and the sequence numbers of the drop and
/// reorder draws (each draw is `stable_draw(seed, label, n)`, so a run reproduces).
#[derive(Debug, Default)]
pub(crate) struct DeliveryForms {
    next_mixed_is_bulk: bool,
    drop_draws: u64,
    delay_draws: u64,
}

impl DeliveryForms {
    fn next_form(&mut self, delivery: WebhookDelivery) -> Form {
        match delivery {
            WebhookDelivery::Single => Form::Single,
            WebhookDelivery::Bulk => Form::Bulk,
            WebhookDelivery::Mixed => {
                let form = if self.next_mixed_is_bulk {
                    Form::Bulk
                } else {
                    Form::Single
                };
                self.next_mixed_is_bulk = !self.next_mixed_is_bulk;
                form
            }
        }
    }
}

/// Where and how an org's webhooks go.
pub(crate) struct DeliveryPlan<'a> {
    pub(crate) subscriptions: &'a Table,
    pub(crate) delivery: WebhookDelivery,
    pub(crate) encoding: SignatureEncoding,
    pub(crate) counters: &'a Arc<WebhookCounters>,
    pub(crate) switches: LiveSwitches,
    pub(crate) seed: u64,
}

impl DeliveryForms {
    /// Whether `webhook_drop_pct` drops the next create/update event.
    fn drops(&mut self, plan: &DeliveryPlan<'_>) -> bool {
        if plan.switches.webhook_drop_pct <= 0.0 {
            return false;
        }
        self.drop_draws += 1;
        stable_draw(plan.seed, "webhook-drop", self.drop_draws) * 100.0
            < plan.switches.webhook_drop_pct
    }

    /// The pause before the next job's POST (0 unless `webhook_reorder`).
    fn delay_ms(&mut self, plan: &DeliveryPlan<'_>) -> u64 {
        if !plan.switches.webhook_reorder {
            return 0;
        }
        self.delay_draws += 1;
        let draw = stable_draw(plan.seed, "webhook-reorder", self.delay_draws);
        (draw * (REORDER_MAX_DELAY_MS + 1) as f64) as u64
    }
}

/// Turns one run's events into signed jobs: events are grouped by kind (in order of first
/// appearance); each group is one bulk POST or one POST per event. The drop switch removes
/// create/update events (counted in `webhooks_dropped`, one per event) before they are
/// sent to anyone; the abbreviated switch cuts gift and contact models to their ids.
pub(crate) fn build_jobs(
    events: Vec<Event>,
    plan: &DeliveryPlan<'_>,
    forms: &mut DeliveryForms,
) -> Vec<WebhookJob> {
    let mut groups: Vec<(EventKind, Vec<Value>)> = Vec::new();
    for event in events {
        match groups.iter_mut().find(|(kind, _)| *kind == event.kind) {
            Some((_, models)) => models.push(event.model),
            None => groups.push((event.kind, vec![event.model])),
        }
    }
    let mut jobs = Vec::new();
    for (kind, models) in groups {
        let subscribers: Vec<(&str, &str)> = plan
            .subscriptions
            .records
            .values()
            .filter(|sub| sub.doc.get("active").and_then(Value::as_bool) == Some(true))
            .filter(|sub| {
                sub.doc
                    .get(kind.subscription_flag())
                    .and_then(Value::as_bool)
                    == Some(true)
            })
            .filter_map(|sub| {
                let url = sub.doc.get("payloadUrl").and_then(Value::as_str)?;
                let secret = sub.doc.get("secret").and_then(Value::as_str).unwrap_or("");
                Some((url, secret))
            })
            .collect();
        if subscribers.is_empty() {
            continue;
        }
        let models: Vec<Value> = if kind.is_delete() {
            models
        } else {
            let before = models.len();
            let kept: Vec<Value> = models.into_iter().filter(|_| !forms.drops(plan)).collect();
            let dropped = (before - kept.len()) as u64;
            plan.counters.dropped.fetch_add(dropped, Ordering::Relaxed);
            kept
        };
        if models.is_empty() {
            continue;
        }
        let abbreviated =
            plan.switches.webhook_abbreviated && matches!(kind.model_key(), "gift" | "contact");
        let models: Vec<Value> = if abbreviated {
            models.into_iter().map(abbreviate).collect()
        } else {
            models
        };
        // The single form `{"event": "EventCreate", "event": {…}}` cannot exist (one key
        // twice): Event* webhooks always go in the bulk form.
        let form = if kind.model_key() == "event" {
            Form::Bulk
        } else {
            forms.next_form(plan.delivery)
        };
        let bodies: Vec<Bytes> = match form {
            Form::Single => models
                .into_iter()
                .map(|model| json!({"event": kind.name(), kind.model_key(): model}))
                .map(|payload| Bytes::from(payload.to_string()))
                .collect(),
            Form::Bulk => {
                let wrapped: Vec<Value> = models
                    .into_iter()
                    .map(|model| json!({kind.model_key(): model}))
                    .collect();
                vec![Bytes::from(
                    json!({"event": kind.name(), "models": wrapped}).to_string(),
                )]
            }
        };
        for body in &bodies {
            for (url, secret) in &subscribers {
                jobs.push(WebhookJob {
                    url: (*url).to_owned(),
                    signature: sign(secret, body, plan.encoding),
                    body: body.clone(),
                    counters: Arc::clone(plan.counters),
                    delay_ms: forms.delay_ms(plan),
                });
            }
        }
    }
    jobs
}

impl WebhookPost for WebhookJob {
    fn url(&self) -> &str {
        &self.url
    }
    fn post(&self, client: &reqwest::Client) -> reqwest::RequestBuilder {
        client
            .post(&self.url)
            .header("Content-Type", "application/json")
            .header(SIGNATURE_HEADER, &self.signature)
            .body(self.body.clone())
    }
    fn delivered(&self) {
        self.counters.sent.fetch_add(1, Ordering::Relaxed);
    }
    fn failed(&self) {
        self.counters.failed.fetch_add(1, Ordering::Relaxed);
    }
    fn delay_ms(&self) -> u64 {
        self.delay_ms
    }
}

/// Starts the dispatcher on the current runtime (the crate's `webhook_delivery`).
pub(crate) fn spawn_dispatcher() -> (
    mpsc::UnboundedSender<WebhookJob>,
    tokio::task::JoinHandle<()>,
) {
    webhook_delivery::spawn_dispatcher(DeliveryPolicy {
        platform: "virtuous",
        timeout_ms: DELIVERY_TIMEOUT_MS,
        retry_backoff_ms: &RETRY_BACKOFF_MS,
    })
}

#[cfg(test)]
mod tests {
    use super::super::records::Record;
    use super::*;

    #[test]
    fn signatures_match_an_independent_hmac() {
        // Goal: Base64 and hex encodings of HMAC-SHA256(secret, body), RFC 4231 test case 2.
        let body = b"what do ya want for nothing?";
        let expected_hex = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        assert_eq!(sign("Jefe", body, SignatureEncoding::Hex), expected_hex);
        let expected_base64 =
            base64::engine::general_purpose::STANDARD.encode(hex::decode(expected_hex).unwrap());
        assert_eq!(
            sign("Jefe", body, SignatureEncoding::Base64),
            expected_base64
        );
    }

    fn subscriptions() -> Table {
        let mut table = Table::default();
        for (active, gift_create) in [(true, true), (false, true), (true, false)] {
            let id = table.next_id();
            let doc = json!({"payloadUrl": format!("http://127.0.0.1:9/{id}"), "secret": "s",
                "active": active, "giftCreate": gift_create});
            table.insert(Record::new(id, 0, doc.as_object().unwrap().clone()));
        }
        table
    }

    fn gift_events(n: u64) -> Vec<Event> {
        (1..=n)
            .map(|id| Event {
                kind: EventKind::GiftCreate,
                model: json!({"id": id}),
            })
            .collect()
    }

    #[test]
    fn single_bulk_and_mixed_forms() {
        // Goal: only active subscribers with the flag get jobs; forms follow the switch.
        let table = subscriptions();
        let counters = Arc::new(WebhookCounters::default());
        let plan = |delivery| DeliveryPlan {
            subscriptions: &table,
            delivery,
            encoding: SignatureEncoding::Base64,
            counters: &counters,
            switches: LiveSwitches::of(&super::super::OrgSpec::new("o", "k")),
            seed: 0,
        };
        let mut forms = DeliveryForms::default();
        let single = build_jobs(gift_events(2), &plan(WebhookDelivery::Single), &mut forms);
        assert_eq!(single.len(), 2);
        assert!(single.iter().all(|job| job.url.ends_with("/1")));
        let first: Value = serde_json::from_slice(&single[0].body).unwrap();
        assert_eq!(first, json!({"event": "GiftCreate", "gift": {"id": 1}}));

        let bulk = build_jobs(gift_events(3), &plan(WebhookDelivery::Bulk), &mut forms);
        assert_eq!(bulk.len(), 1);
        let payload: Value = serde_json::from_slice(&bulk[0].body).unwrap();
        assert_eq!(payload["models"].as_array().unwrap().len(), 3);
        assert_eq!(payload["models"][2], json!({"gift": {"id": 3}}));
        assert_eq!(
            bulk[0].signature,
            sign("s", &bulk[0].body, SignatureEncoding::Base64)
        );

        let mut forms = DeliveryForms::default();
        let mixed = plan(WebhookDelivery::Mixed);
        assert_eq!(build_jobs(gift_events(2), &mixed, &mut forms).len(), 2);
        assert_eq!(build_jobs(gift_events(2), &mixed, &mut forms).len(), 1);
        assert_eq!(build_jobs(gift_events(2), &mixed, &mut forms).len(), 2);
    }

    #[test]
    fn drop_reorder_and_abbreviated_switches() {
        // Goal: drop_pct 100 drops every create/update (counted) but no delete; reorder gives
        // each job a pause in 0–200 ms, not all equal; abbreviated cuts gift models to ids
        // and leaves other kinds whole.
        let mut table = Table::default();
        let doc = json!({"payloadUrl": "http://127.0.0.1:9/h", "secret": "s", "active": true,
            "giftCreate": true, "giftDelete": true, "projectCreate": true});
        table.insert(Record::new(1, 0, doc.as_object().unwrap().clone()));
        let counters = Arc::new(WebhookCounters::default());
        let mut switches = LiveSwitches::of(&super::super::OrgSpec::new("o", "k"));
        switches.webhook_drop_pct = 100.0;
        let plan = DeliveryPlan {
            subscriptions: &table,
            delivery: WebhookDelivery::Single,
            encoding: SignatureEncoding::Base64,
            counters: &counters,
            switches,
            seed: 1,
        };
        let mut forms = DeliveryForms::default();
        let mut events = gift_events(3);
        events.push(Event {
            kind: EventKind::GiftDelete,
            model: json!({"id": 9}),
        });
        let jobs = build_jobs(events, &plan, &mut forms);
        assert_eq!(jobs.len(), 1);
        assert!(std::str::from_utf8(&jobs[0].body)
            .unwrap()
            .contains("GiftDelete"));
        assert_eq!(counters.dropped.load(Ordering::Relaxed), 3);

        let mut switches = plan.switches;
        switches.webhook_drop_pct = 0.0;
        switches.webhook_reorder = true;
        switches.webhook_abbreviated = true;
        let plan = DeliveryPlan { switches, ..plan };
        let mut events: Vec<Event> = (1..=20)
            .map(|id| Event {
                kind: EventKind::GiftCreate,
                model: json!({"id": id, "amount": 5, "transactionId": "t"}),
            })
            .collect();
        events.push(Event {
            kind: EventKind::ProjectCreate,
            model: json!({"id": 1, "name": "Spring"}),
        });
        let jobs = build_jobs(events, &plan, &mut forms);
        assert_eq!(jobs.len(), 21);
        assert!(jobs.iter().all(|job| job.delay_ms <= REORDER_MAX_DELAY_MS));
        assert!(jobs.iter().any(|job| job.delay_ms != jobs[0].delay_ms));
        let first: Value = serde_json::from_slice(&jobs[0].body).unwrap();
        assert_eq!(first["gift"], json!({"id": 1, "transactionId": "t"}));
        let project: Value = serde_json::from_slice(&jobs[20].body).unwrap();
        assert_eq!(project["project"]["name"], "Spring");
    }
}
