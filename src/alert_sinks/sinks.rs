//! The two sink kinds behind the actors crate's `AlertSink` port: `webhook` (JSON signed the
//! Standard Webhooks way, like the pull destinations' webhooks) and `slack` (an incoming
//! webhook's `{"text"}`). Both read answers with the destinations' one `classify`.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretSlice};
use steward_actors::alerting::{AlertSink, Notification, SinkVerdict};
use steward_actors::ports::LocalFuture;
use steward_actors::store::NoticeEvent;

use crate::config::{AlertSinkConfig, AlertSinkKind};
use crate::destinations::webhook::{send_and_classify, signed_post, signing_key, WebhookVerdict};

/// Longest wait for a sink's answer (the dispatcher counts a silent attempt as failed).
pub const SINK_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The JSON body of a webhook notification. Stable across attempts: `at` is when the alert
/// changed, the attempt's own time is the `webhook-timestamp` header.
pub fn webhook_body(notification: &Notification) -> String {
    serde_json::json!({
        "id": notification.id,
        "event": notification.event.name(),
        "tenant": notification.tenant_id,
        "code": notification.code,
        "message": notification.message,
        "at": rfc3339(notification.at_ms),
    })
    .to_string()
}

/// The `text` of a Slack message (`&`, `<`, `>` escaped as Slack asks).
pub fn slack_text(notification: &Notification) -> String {
    let whose = match &notification.tenant_id {
        Some(tenant_id) => format!("tenant `{}`", slack_escaped(tenant_id)),
        None => "this Steward node".to_string(),
    };
    let code = slack_escaped(&notification.code);
    let message = slack_escaped(&notification.message);
    match notification.event {
        NoticeEvent::Raised => {
            format!(":rotating_light: Steward alert *{code}* raised for {whose}: {message}")
        }
        NoticeEvent::Resolved => {
            format!(":white_check_mark: Steward alert *{code}* resolved for {whose} ({message})")
        }
    }
}

fn slack_escaped(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn rfc3339(at_ms: u64) -> String {
    jiff::Timestamp::from_millisecond(at_ms as i64)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_string()
}

fn verdict_of(answer: WebhookVerdict) -> SinkVerdict {
    match answer {
        WebhookVerdict::Delivered => SinkVerdict::Delivered,
        WebhookVerdict::Rejected(reason) => SinkVerdict::Refused(reason),
        WebhookVerdict::Retry(later) => SinkVerdict::RetryLater {
            reason: later.message,
            retry_after_ms: later.retry_after_ms,
        },
    }
}

/// One configured sink.
pub struct ConfiguredSink {
    kind: AlertSinkKind,
    http: reqwest::Client,
    url: reqwest::Url,
    /// The HMAC key (`webhook` only).
    key: Option<SecretSlice<u8>>,
    codes: Vec<String>,
}

impl ConfiguredSink {
    /// Built from a validated `[[alerts.sinks]]` table; the error names the problem, never
    /// the URL or the secret.
    pub fn new(http: reqwest::Client, config: &AlertSinkConfig) -> Result<ConfiguredSink, String> {
        let url =
            reqwest::Url::parse(config.url.expose_secret()).map_err(|err| format!("url: {err}"))?;
        let key = match (&config.kind, &config.secret) {
            (AlertSinkKind::Webhook, Some(secret)) => Some(SecretSlice::from(
                signing_key(secret.expose_secret()).map_err(|p| format!("secret: {p}"))?,
            )),
            (AlertSinkKind::Webhook, None) => return Err("secret: required".into()),
            (AlertSinkKind::Slack, _) => None,
        };
        Ok(ConfiguredSink {
            kind: config.kind,
            http,
            url,
            key,
            codes: config.codes.clone(),
        })
    }
}

impl AlertSink for ConfiguredSink {
    fn kind(&self) -> &'static str {
        self.kind.name()
    }

    fn accepts(&self, code: &str) -> bool {
        self.codes.is_empty() || self.codes.iter().any(|accepted| accepted == code)
    }

    fn send(&self, notification: &Notification) -> LocalFuture<SinkVerdict> {
        let request = match &self.key {
            Some(key) => signed_post(
                &self.http,
                &self.url,
                key.expose_secret(),
                &notification.id,
                webhook_body(notification),
            ),
            None => self
                .http
                .post(self.url.clone())
                .header("content-type", "application/json")
                .body(serde_json::json!({ "text": slack_text(notification) }).to_string()),
        };
        let request = request.timeout(SINK_REQUEST_TIMEOUT);
        Box::pin(async move { verdict_of(send_and_classify(request).await) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notification(tenant_id: Option<&str>, event: NoticeEvent) -> Notification {
        Notification {
            id: "t1-42".into(),
            tenant_id: tenant_id.map(str::to_owned),
            event,
            code: "crm_unreachable".into(),
            message: "5 calls <failed> & more".into(),
            at_ms: 1_767_225_600_000,
        }
    }

    #[test]
    fn the_webhook_body_names_event_tenant_code_and_time() {
        // Goal: the documented payload: id, event, tenant (null for the process), code,
        // message, `at` in RFC 3339.
        let body: serde_json::Value = serde_json::from_str(&webhook_body(&notification(
            Some("t1"),
            NoticeEvent::Raised,
        )))
        .unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "id": "t1-42", "event": "alert.raised", "tenant": "t1",
                "code": "crm_unreachable", "message": "5 calls <failed> & more",
                "at": "2026-01-01T00:00:00Z",
            })
        );
        let process = webhook_body(&notification(None, NoticeEvent::Resolved));
        assert!(
            process.contains(r#""tenant":null"#) && process.contains("alert.resolved"),
            "{process}"
        );
    }

    #[test]
    fn slack_text_escapes_what_slack_reads_as_markup() {
        // Goal: the message's `<`, `>` and `&` cannot become Slack links or mentions.
        let raised = slack_text(&notification(Some("t1"), NoticeEvent::Raised));
        assert_eq!(
            raised,
            ":rotating_light: Steward alert *crm_unreachable* raised for tenant `t1`: 5 calls &lt;failed&gt; &amp; more"
        );
        let resolved = slack_text(&notification(None, NoticeEvent::Resolved));
        assert!(
            resolved.contains("resolved for this Steward node"),
            "{resolved}"
        );
    }
}
