//! Audience webhooks: firing one event (unless the webhook leaves out its source, or the
//! seeded draw drops it), the form-encoded body, and the dispatcher that POSTs them off the
//! request path with a few retries (the crate's `webhook_delivery`, as for Virtuous), but
//! `application/x-www-form-urlencoded` and no signature: Mailchimp signs nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::account::{Account, AccountState, DroppedEvent, Member, DROPPED_LOG_CAPACITY};
use crate::faults::stable_draw;
use crate::webhook_delivery::{self, DeliveryPolicy, WebhookPost};

/// Pauses before the 2nd and 3rd attempt (the real API retries for ~75 minutes; a sandbox
/// keeps it short so tests stay fast).
const RETRY_BACKOFF_MS: [u64; 2] = [200, 1_000];
/// Mailchimp gives a receiver 10 s.
const DELIVERY_TIMEOUT_MS: u64 = 10_000;

/// The audience event types the simulator fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventType {
    Subscribe,
    Unsubscribe,
    Profile,
    Upemail,
    Cleaned,
}

impl EventType {
    pub(crate) fn name(self) -> &'static str {
        match self {
            EventType::Subscribe => "subscribe",
            EventType::Unsubscribe => "unsubscribe",
            EventType::Profile => "profile",
            EventType::Upemail => "upemail",
            EventType::Cleaned => "cleaned",
        }
    }
}

/// One event about one member, with the fields only some types carry.
#[derive(Debug, Clone)]
pub(crate) struct AudienceEvent {
    pub(crate) kind: EventType,
    /// `unsubscribe`: `unsub` or `delete` (archived); `cleaned`: unused.
    pub(crate) action: Option<&'static str>,
    /// `unsubscribe` and `cleaned` (`hard`).
    pub(crate) reason: Option<&'static str>,
    /// `upemail`: the address before the change.
    pub(crate) old_email: Option<String>,
}

/// Who made a change, as Mailchimp's webhook `sources` name them (no sandbox route makes an
/// `admin` change).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// The control API: a subscriber or a person in the Mailchimp app.
    User,
    /// The Marketing API's writes.
    Api,
}

impl Account {
    /// Counts one event and sends it, unless no webhook is set, the webhook does not take
    /// the change's source, or the event is dropped.
    pub(crate) fn fire(
        &self,
        state: &mut AccountState,
        list_id: &str,
        event: &AudienceEvent,
        member: &Member,
        source: Source,
    ) {
        let Some(settings) = state
            .lists
            .get(list_id)
            .and_then(|list| list.webhook.clone())
        else {
            return;
        };
        let taken = match source {
            Source::User => settings.sources.user,
            Source::Api => settings.sources.api,
        };
        if !taken {
            state.webhooks_source_off += 1;
            return;
        }
        if is_dropped(self.spec.seed, settings.drop_pct, list_id, event, member) {
            state.webhooks_dropped += 1;
            if state.dropped.len() >= DROPPED_LOG_CAPACITY {
                state.dropped.pop_front();
            }
            state.dropped.push_back(DroppedEvent {
                list_id: list_id.to_owned(),
                id: member.unique_email_id.clone(),
                subscriber_hash: member.id.clone(),
                email: member.email_address.clone(),
                kind: event.kind.name(),
                fired_at: fired_at(member.last_changed_s),
            });
            return;
        }
        state.webhooks_fired += 1;
        let job = WebhookJob {
            url: settings.url,
            body: form_encode(&event_pairs(event, member, list_id)),
            counters: Arc::clone(&self.delivery),
        };
        if self.webhook_sender.send(job).is_err() {
            tracing::warn!("sandbox Mailchimp webhook dispatcher stopped; event not sent");
        }
    }
}

/// Percent-encodes one form key or value (`application/x-www-form-urlencoded`: space → `+`).
pub(crate) fn form_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                escaped.push(byte as char)
            }
            b' ' => escaped.push('+'),
            other => escaped.push_str(&format!("%{other:02X}")),
        }
    }
    escaped
}

/// Joins pairs into a form body, keys and values escaped (brackets included, as browsers and
/// Mailchimp send them).
pub(crate) fn form_encode(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(key, value)| format!("{}={}", form_escape(key), form_escape(value)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The form pairs of one event; `fired_at` is the member's `last_changed` in UTC and
/// `data[id]` its `unique_email_id` (assumed: the real short id, not the subscriber hash).
pub(crate) fn event_pairs(
    event: &AudienceEvent,
    member: &Member,
    list_id: &str,
) -> Vec<(String, String)> {
    let mut pairs = vec![
        ("type".to_owned(), event.kind.name().to_owned()),
        ("fired_at".to_owned(), fired_at(member.last_changed_s)),
        ("data[id]".to_owned(), member.unique_email_id.clone()),
        ("data[list_id]".to_owned(), list_id.to_owned()),
        ("data[email]".to_owned(), member.email_address.clone()),
        ("data[email_type]".to_owned(), "html".to_owned()),
    ];
    if let Some(action) = event.action {
        pairs.push(("data[action]".to_owned(), action.to_owned()));
    }
    if let Some(reason) = event.reason {
        pairs.push(("data[reason]".to_owned(), reason.to_owned()));
    }
    if let Some(old_email) = &event.old_email {
        pairs.push(("data[old_email]".to_owned(), old_email.clone()));
        pairs.push(("data[new_email]".to_owned(), member.email_address.clone()));
    }
    pairs.push((
        "data[merges][EMAIL]".to_owned(),
        member.email_address.clone(),
    ));
    for (tag, value) in &member.merge_fields {
        pairs.push((format!("data[merges][{tag}]"), value.clone()));
    }
    pairs.push(("data[ip_opt]".to_owned(), "127.0.0.1".to_owned()));
    pairs
}

/// `YYYY-MM-DD HH:MM:SS` in UTC, Mailchimp's `fired_at` form.
pub(crate) fn fired_at(unix_s: i64) -> String {
    jiff::Timestamp::from_second(unix_s)
        .map(|at| at.strftime("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// Whether this event is dropped: a stable draw of (seed, list, member, type, second), so a
/// run reproduces and the same change is dropped whatever the arrival order.
pub(crate) fn is_dropped(
    seed: u64,
    drop_pct: f64,
    list_id: &str,
    event: &AudienceEvent,
    member: &Member,
) -> bool {
    if drop_pct <= 0.0 {
        return false;
    }
    let label = format!("mailchimp/{list_id}/{}/{}", member.id, event.kind.name());
    stable_draw(seed, &label, member.last_changed_s as u64) * 100.0 < drop_pct
}

/// Delivery outcomes, shared with the delivery tasks.
#[derive(Debug, Default)]
pub(crate) struct DeliveryCounters {
    pub(crate) delivered: AtomicU64,
    pub(crate) failed: AtomicU64,
}

/// One POST to one URL.
#[derive(Debug)]
pub(crate) struct WebhookJob {
    pub(crate) url: String,
    pub(crate) body: String,
    pub(crate) counters: Arc<DeliveryCounters>,
}

impl WebhookPost for WebhookJob {
    fn url(&self) -> &str {
        &self.url
    }
    fn post(&self, client: &reqwest::Client) -> reqwest::RequestBuilder {
        client
            .post(&self.url)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("User-Agent", "MailChimp (steward sandbox)")
            .body(self.body.clone())
    }
    fn delivered(&self) {
        self.counters.delivered.fetch_add(1, Ordering::Relaxed);
    }
    fn failed(&self) {
        self.counters.failed.fetch_add(1, Ordering::Relaxed);
    }
}

/// Starts the dispatcher on the current runtime.
pub(crate) fn spawn_dispatcher() -> (
    mpsc::UnboundedSender<WebhookJob>,
    tokio::task::JoinHandle<()>,
) {
    webhook_delivery::spawn_dispatcher(DeliveryPolicy {
        platform: "mailchimp",
        timeout_ms: DELIVERY_TIMEOUT_MS,
        retry_backoff_ms: &RETRY_BACKOFF_MS,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn member() -> Member {
        Member {
            id: "62eeb292278cc15f5817cb78f7790b08".into(),
            unique_email_id: "a1b2c3d4e5".into(),
            email_address: "new+1@example.org".into(),
            status: "subscribed".into(),
            merge_fields: BTreeMap::from([
                ("FNAME".to_owned(), "Ana María".to_owned()),
                ("LNAME".to_owned(), "O'Neil & Co".to_owned()),
            ]),
            tags: vec![],
            last_changed_s: 1_764_190_000,
        }
    }

    #[test]
    fn an_upemail_event_is_form_encoded_with_bracketed_keys() {
        // Goal: the body is x-www-form-urlencoded with Mailchimp's bracketed keys and a UTC
        // fired_at equal to last_changed, reserved characters escaped.
        let event = AudienceEvent {
            kind: EventType::Upemail,
            action: None,
            reason: None,
            old_email: Some("old@example.org".into()),
        };
        let body = form_encode(&event_pairs(&event, &member(), "list 1"));
        assert!(
            body.starts_with("type=upemail&fired_at=2025-11-26+20%3A46%3A40&"),
            "{body}"
        );
        assert!(body.contains("data%5Bid%5D=a1b2c3d4e5"), "{body}");
        assert!(body.contains("data%5Blist_id%5D=list+1"));
        assert!(body.contains("data%5Bemail%5D=new%2B1%40example.org"));
        assert!(body.contains("data%5Bold_email%5D=old%40example.org"));
        assert!(body.contains("data%5Bmerges%5D%5BFNAME%5D=Ana+Mar%C3%ADa"));
        assert!(body.contains("data%5Bmerges%5D%5BLNAME%5D=O%27Neil+%26+Co"));
    }

    #[test]
    fn drops_follow_the_percentage_and_reproduce() {
        // Goal: over many members about drop_pct % are dropped, the same ones every time.
        let event = AudienceEvent {
            kind: EventType::Profile,
            action: None,
            reason: None,
            old_email: None,
        };
        let mut subject = member();
        let mut dropped = 0;
        for n in 0..2_000 {
            subject.id = format!("m{n}");
            let first = is_dropped(3, 10.0, "l", &event, &subject);
            assert_eq!(first, is_dropped(3, 10.0, "l", &event, &subject));
            assert!(!is_dropped(3, 0.0, "l", &event, &subject));
            dropped += usize::from(first);
        }
        assert!((150..250).contains(&dropped), "dropped {dropped}");
    }
}
