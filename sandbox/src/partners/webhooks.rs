//! A partner's webhooks: the JSON event of one change, its `X-Signature` (hex HMAC-SHA256 of
//! the raw body), the seeded drop draw, and delivery by the crate's dispatcher in one lane
//! per partner (in order, each POST after the previous one's last attempt), a few retries,
//! then given up and counted as dropped.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::web::Bytes;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::faults::stable_draw;
use crate::webhook_delivery::{self, hmac_sha256, DeliveryPolicy, WebhookPost};

/// Pauses before the 2nd, 3rd and 4th attempt.
const RETRY_BACKOFF_MS: [u64; 6] = [100, 300, 1_000, 2_000, 4_000, 8_000];
const DELIVERY_TIMEOUT_MS: u64 = 5_000;
/// Dropped events kept for `GET …/webhooks/dropped`.
const DROPPED_LOG_CAPACITY: usize = 10_000;
pub(crate) const SIGNATURE_HEADER: &str = "X-Signature";

/// An event not delivered, as `GET …/webhooks/dropped` lists it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DroppedEvent {
    /// `evt_<n>`.
    pub(crate) id: String,
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    pub(crate) contact_id: String,
    pub(crate) version: u64,
    /// `drop_pct` (the switch's draw) or `failed` (every attempt refused or failed).
    pub(crate) reason: &'static str,
}

/// A partner's webhook numbers and dropped events, shared with the delivery tasks.
#[derive(Debug, Default)]
pub(crate) struct WebhookLog {
    /// Events queued for delivery.
    pub(crate) fired: AtomicU64,
    /// Delivered (a 2xx answer).
    pub(crate) sent: AtomicU64,
    /// Given up after the last attempt (also counted in `dropped`).
    pub(crate) failed: AtomicU64,
    /// Never sent: the drop switch's share, and the failed ones.
    pub(crate) dropped: AtomicU64,
    dropped_events: Mutex<VecDeque<DroppedEvent>>,
}

impl WebhookLog {
    pub(crate) fn drop_event(&self, event: DroppedEvent) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        let mut events = self
            .dropped_events
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if events.len() >= DROPPED_LOG_CAPACITY {
            events.pop_front();
        }
        events.push_back(event);
    }

    /// Oldest first.
    pub(crate) fn dropped_events(&self) -> Vec<DroppedEvent> {
        let events = self
            .dropped_events
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        events.iter().cloned().collect()
    }

    pub(crate) fn to_json(&self) -> Value {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        json!({
            "fired": load(&self.fired),
            "sent": load(&self.sent),
            "failed": load(&self.failed),
            "dropped": load(&self.dropped),
        })
    }
}

/// The JSON body of one event.
pub(crate) fn event_body(event_id: &str, kind: &str, created_at: &str, contact: Value) -> Bytes {
    let event = json!({"id": event_id, "type": kind, "created_at": created_at, "data": contact});
    Bytes::from(event.to_string())
}

/// Whether the drop switch drops this change: a stable draw of (seed, partner, contact,
/// version), so a run reproduces whatever the arrival order.
pub(crate) fn is_dropped(
    seed: u64,
    drop_pct: f64,
    partner: &str,
    contact: &str,
    version: u64,
) -> bool {
    drop_pct > 0.0
        && stable_draw(seed, &format!("partners/{partner}/{contact}"), version) * 100.0 < drop_pct
}

/// One POST of one event.
#[derive(Debug)]
pub(crate) struct WebhookJob {
    /// The partner: its events go one after the other.
    pub(crate) lane: String,
    pub(crate) url: String,
    pub(crate) signature: String,
    pub(crate) body: Bytes,
    /// What the dropped list shows if every attempt fails.
    pub(crate) summary: DroppedEvent,
    pub(crate) log: Arc<WebhookLog>,
}

impl WebhookJob {
    pub(crate) fn signed(
        lane: &str,
        url: &str,
        secret: &str,
        body: Bytes,
        summary: DroppedEvent,
        log: Arc<WebhookLog>,
    ) -> WebhookJob {
        WebhookJob {
            lane: lane.to_owned(),
            url: url.to_owned(),
            signature: hex::encode(hmac_sha256(secret, &body)),
            body,
            summary,
            log,
        }
    }
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
            .header("User-Agent", "partner-platform (steward sandbox)")
            .body(self.body.clone())
    }
    fn delivered(&self) {
        self.log.sent.fetch_add(1, Ordering::Relaxed);
    }
    fn failed(&self) {
        self.log.failed.fetch_add(1, Ordering::Relaxed);
        self.log.drop_event(DroppedEvent {
            reason: "failed",
            ..self.summary.clone()
        });
    }
    fn lane(&self) -> Option<&str> {
        Some(&self.lane)
    }
}

/// Starts the dispatcher on the current runtime.
pub(crate) fn spawn_dispatcher() -> (
    mpsc::UnboundedSender<WebhookJob>,
    tokio::task::JoinHandle<()>,
) {
    webhook_delivery::spawn_dispatcher(DeliveryPolicy {
        platform: "partners",
        timeout_ms: DELIVERY_TIMEOUT_MS,
        retry_backoff_ms: &RETRY_BACKOFF_MS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_follow_the_percentage_and_reproduce() {
        // Goal: about drop_pct % of changes are dropped, the same ones on every draw.
        let dropped = (0..2_000)
            .filter(|n| {
                let contact = format!("c-{n}");
                let first = is_dropped(5, 25.0, "p", &contact, 1);
                assert_eq!(first, is_dropped(5, 25.0, "p", &contact, 1));
                assert!(!is_dropped(5, 0.0, "p", &contact, 1));
                first
            })
            .count();
        assert!((400..600).contains(&dropped), "dropped {dropped}");
    }

    #[test]
    fn the_signature_is_the_hex_hmac_of_the_body() {
        // Goal: X-Signature is hex HMAC-SHA256(secret, raw body) (RFC 4231 test case 2).
        let summary = DroppedEvent {
            id: "evt_1".into(),
            kind: "contact.created",
            contact_id: "c-1".into(),
            version: 1,
            reason: "failed",
        };
        let body = Bytes::from_static(b"what do ya want for nothing?");
        let job = WebhookJob::signed("p", "http://h", "Jefe", body, summary, Arc::default());
        assert_eq!(
            job.signature,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
