//! The `webhook` destination: one signed POST per change to the partner's URL, paced at
//! `max_per_s` (docs/pull.md "Webhook").
//!
//! Signed the Standard Webhooks way: `webhook-id` (the same on every retry of a change, so
//! the partner deduplicates), `webhook-timestamp` (unix seconds of this attempt) and
//! `webhook-signature: v1,{base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))}`. The body
//! of a change is the same on every attempt.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use steward_actors::ports::Destination;
use steward_actors::ports::LocalFuture;
use steward_actors::pull::{DeliveryAnswer, RetryLater, StoredChange};

use crate::tenant::WebhookDestinationDoc;

/// Prefix of a Standard Webhooks secret: the key is the base64 after it.
pub const STANDARD_SECRET_PREFIX: &str = "whsec_";
/// Characters of a partner's answer kept in a dead letter's reason.
const REASON_BODY_CHARS: usize = 200;
/// Longest `Retry-After` honoured (a partner asking for more is asked again after this).
const RETRY_AFTER_MAX_MS: u64 = 3_600_000;

/// The HMAC key of a configured secret: `whsec_` + base64 (16 to 64 bytes, as the Standard
/// Webhooks libraries expect), or else the secret's own bytes (16 to 256 visible ASCII
/// characters). The error never repeats the secret.
pub fn signing_key(secret: &str) -> Result<Vec<u8>, &'static str> {
    if let Some(encoded) = secret.strip_prefix(STANDARD_SECRET_PREFIX) {
        let key = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| "after whsec_ comes standard base64 (Standard Webhooks secret)")?;
        if !(16..=64).contains(&key.len()) {
            return Err("a whsec_ secret decodes to 16 to 64 bytes");
        }
        return Ok(key);
    }
    let visible = secret.bytes().all(|b| b.is_ascii_graphic());
    if !visible || !(16..=256).contains(&secret.len()) {
        return Err("must be whsec_ + base64 of 16 to 64 random bytes, or 16 to 256 visible ASCII characters");
    }
    Ok(secret.as_bytes().to_vec())
}

/// `v1,{base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")}`.
pub fn signature(key: &[u8], webhook_id: &str, timestamp_s: u64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(format!("{webhook_id}.{timestamp_s}.").as_bytes());
    mac.update(body.as_bytes());
    let encoded = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!("v1,{encoded}")
}

/// The `webhook-id` of a change: the same on every attempt and every replay of this
/// version, different for the next version.
pub fn webhook_id(tenant_id: &str, change: &StoredChange) -> String {
    format!(
        "{tenant_id}-{}-{}-{}-{}",
        change.kind.name(),
        change.id,
        change.op.name(),
        change.version_ms
    )
}

/// The POST body of a change: `{"type", "timestamp", "data"}` (stable across attempts:
/// `timestamp` is when Steward received the change).
pub fn body(change: &StoredChange) -> String {
    let timestamp = jiff::Timestamp::from_millisecond(change.received_ms as i64)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    serde_json::json!({
        "type": format!("{}.{}", change.kind.name(), change.op.name()),
        "timestamp": timestamp.to_string(),
        "data": super::change_json(change),
    })
    .to_string()
}

/// What one answer of the partner means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookVerdict {
    Delivered,
    /// Refused for good: a dead letter with this reason.
    Rejected(String),
    /// Not now: stop the batch and try again later.
    Retry(RetryLater),
}

/// The one classification of a partner's answer: 2xx delivered; 408, 425, 429 and 5xx (and
/// 3xx: redirects are not followed, the URL needs fixing) retried — `Retry-After` seconds
/// honoured; 401, 403, 404, 405 and 410 say the endpoint (or our credentials to it) is wrong,
/// not the change: retried too, so the destination shows as failing instead of turning every
/// change into a dead letter; every other status (4xx) rejects that change. A 409 is rejected:
/// a partner answering "conflict" to every retry would otherwise block the destination.
pub fn classify(status: u16, retry_after: Option<&str>, answer_body: &str) -> WebhookVerdict {
    let reason = || {
        format!(
            "HTTP {status}: {}",
            super::first_chars(answer_body, REASON_BODY_CHARS)
        )
    };
    match status {
        200..=299 => WebhookVerdict::Delivered,
        300..=399 | 401 | 403 | 404 | 405 | 408 | 410 | 425 | 429 | 500..=599 => {
            WebhookVerdict::Retry(RetryLater {
                message: if (300..=399).contains(&status) {
                    format!(
                        "HTTP {status}: redirects are not followed; check the destination's url"
                    )
                } else {
                    reason()
                },
                retry_after_ms: retry_after
                    .and_then(|value| value.trim().parse::<u64>().ok())
                    .map(|seconds| seconds.saturating_mul(1_000).min(RETRY_AFTER_MAX_MS)),
            })
        }
        _ => WebhookVerdict::Rejected(reason()),
    }
}

/// A partner's webhook endpoint.
pub struct WebhookDestination {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    tenant_id: String,
    url: reqwest::Url,
    key: Vec<u8>,
    timeout: Duration,
    /// Between two sends (1 / `max_per_s`).
    send_interval: Duration,
    /// When the next send may start (pacing across calls).
    next_send_at: Mutex<Option<tokio::time::Instant>>,
}

impl WebhookDestination {
    pub fn new(
        http: reqwest::Client,
        tenant_id: &str,
        settings: &WebhookDestinationDoc,
    ) -> Result<WebhookDestination, String> {
        let url = reqwest::Url::parse(&settings.url).map_err(|err| format!("url: {err}"))?;
        let key = signing_key(settings.secret.as_deref().unwrap_or_default())
            .map_err(|problem| format!("secret: {problem}"))?;
        let max_per_s = settings.max_per_s.max(1);
        Ok(WebhookDestination {
            inner: Arc::new(Inner {
                http,
                tenant_id: tenant_id.to_string(),
                url,
                key,
                timeout: Duration::from_secs(settings.timeout_s.max(1)),
                send_interval: Duration::from_secs(1) / max_per_s,
                next_send_at: Mutex::new(None),
            }),
        })
    }
}

impl Destination for WebhookDestination {
    fn deliver(&self, items: Vec<StoredChange>) -> LocalFuture<DeliveryAnswer> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move { inner.deliver(items).await })
    }
}

impl Inner {
    async fn deliver(&self, items: Vec<StoredChange>) -> DeliveryAnswer {
        let mut answer = DeliveryAnswer::default();
        for change in items {
            self.wait_for_turn().await;
            match self.post(&change).await {
                WebhookVerdict::Delivered => {}
                WebhookVerdict::Rejected(reason) => answer.rejected.push((change.seq, reason)),
                WebhookVerdict::Retry(retry) => {
                    answer.retry = Some(retry);
                    return answer;
                }
            }
            // Delivered or dead-lettered: handled, the checkpoint may pass it.
            answer.committed_through = Some(change.seq);
        }
        answer
    }

    /// Sleeps until this send's slot; the slot after it is one interval later.
    async fn wait_for_turn(&self) {
        let now = tokio::time::Instant::now();
        let slot = {
            let mut next = self
                .next_send_at
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let slot = next.map_or(now, |at| at.max(now));
            *next = Some(slot + self.send_interval);
            slot
        };
        if slot > now {
            tokio::time::sleep_until(slot).await;
        }
    }

    async fn post(&self, change: &StoredChange) -> WebhookVerdict {
        let id = webhook_id(&self.tenant_id, change);
        let request = signed_post(&self.http, &self.url, &self.key, &id, body(change));
        send_and_classify(request.timeout(self.timeout)).await
    }
}

/// A JSON POST of `body` to `url` with the Standard Webhooks headers (`webhook-id`,
/// `webhook-timestamp` of now, `webhook-signature` keyed by `key`).
pub fn signed_post(
    http: &reqwest::Client,
    url: &reqwest::Url,
    key: &[u8],
    id: &str,
    body: String,
) -> reqwest::RequestBuilder {
    let timestamp_s = steward_actors::ports::now_ms() / 1_000;
    http.post(url.clone())
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp_s.to_string())
        .header("webhook-signature", signature(key, id, timestamp_s, &body))
        .body(body)
}

/// Sends `request` and reads the answer with [`classify`]; no answer at all (refused,
/// timed out) is retried. Errors never name the URL (it may carry a token).
pub async fn send_and_classify(request: reqwest::RequestBuilder) -> WebhookVerdict {
    let response = match request.send().await {
        Ok(response) => response,
        Err(err) => {
            let what = if err.is_timeout() {
                "timed out"
            } else if err.is_connect() {
                "could not connect"
            } else {
                "request failed"
            };
            return WebhookVerdict::Retry(RetryLater {
                message: format!("{what}: {}", err.without_url()),
                retry_after_ms: None,
            });
        }
    };
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    // Only a refusal's body is kept (its first characters); a large answer is not read
    // past what the timeout allows.
    let answer_body = if response.status().is_success() {
        String::new()
    } else {
        response.text().await.unwrap_or_default()
    };
    classify(status, retry_after.as_deref(), &answer_body)
}
