//! `[alerts]`: when failures become alerts, and where alerts are sent (docs/operations.md
//! "Alerts" and "Alerting").

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// When failures become alerts, and the sinks they go to.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsSection {
    /// Virtuous calls in a row with no answer (refused, DNS, TLS, timeout) before the alert
    /// `crm_unreachable` (1–1000).
    pub crm_unreachable_after: u32,
    /// A resolve is sent no sooner than this many seconds after the raise it answers; an
    /// alert that reopens meanwhile withdraws it (so at most one `alert.raised` per code and
    /// cooldown). 0 = resolves go at once. At most a day.
    pub cooldown_s: u64,
    /// Waits between the attempts of one notification at one sink (`250ms`, `10s`, `1m`,
    /// `2h`); after the last one that sink gives the notification up.
    pub retry_schedule: Vec<String>,
    /// The process alert `disk_nearly_full` opens when the data dir's filesystem has less
    /// than this percent free (checked every minute); 0 = never (0–100).
    pub disk_free_min_pct: u8,
    /// Where alerts are sent (`[[alerts.sinks]]`); none by default.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sinks: Vec<AlertSinkConfig>,
}

/// One `[[alerts.sinks]]` table.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertSinkConfig {
    pub kind: AlertSinkKind,
    /// Where notifications are POSTed (`http://` or `https://`). A secret: a Slack incoming
    /// webhook URL is its own credential; it is never logged.
    #[serde(serialize_with = "redacted")]
    pub url: SecretString,
    /// `webhook` only, required: the HMAC-SHA256 key of the signature, `whsec_` + base64 of
    /// 16 to 64 random bytes, or 16 to 256 visible ASCII characters.
    #[serde(default, serialize_with = "redacted_if_set")]
    pub secret: Option<SecretString>,
    /// Only these alert codes go to this sink; empty (the default) = every code.
    #[serde(default)]
    pub codes: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertSinkKind {
    /// JSON, signed the Standard Webhooks way (`webhook-id`, `webhook-timestamp`,
    /// `webhook-signature`).
    Webhook,
    /// A Slack incoming webhook: `{"text": …}`.
    Slack,
}

impl AlertSinkKind {
    pub fn name(self) -> &'static str {
        match self {
            AlertSinkKind::Webhook => "webhook",
            AlertSinkKind::Slack => "slack",
        }
    }
}

fn redacted<S: serde::Serializer>(_: &SecretString, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str("[redacted]")
}

fn redacted_if_set<S: serde::Serializer>(
    secret: &Option<SecretString>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match secret {
        Some(secret) => redacted(secret, serializer),
        None => serializer.serialize_none(),
    }
}

impl Default for AlertsSection {
    fn default() -> Self {
        AlertsSection {
            crm_unreachable_after: 5,
            cooldown_s: 300,
            retry_schedule: [
                "1s", "5s", "30s", "2m", "10m", "30m", "1h", "2h", "4h", "8h",
            ]
            .map(String::from)
            .to_vec(),
            disk_free_min_pct: 5,
            sinks: Vec::new(),
        }
    }
}

impl AlertsSection {
    /// The retry schedule (validated at load).
    pub fn retry_schedule(&self) -> steward_actors::retry::RetrySchedule {
        steward_actors::retry::RetrySchedule::parse(&self.retry_schedule).unwrap_or_default()
    }

    /// `Err((key, reason))` names the bad key; a sink's problem names the sink's own key
    /// (`alerts.sinks[0].secret`) in the reason.
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(1..=1_000).contains(&self.crm_unreachable_after) {
            return Err(("alerts.crm_unreachable_after", "must be 1 to 1000".into()));
        }
        if self.cooldown_s > 86_400 {
            return Err(("alerts.cooldown_s", "must be 0 to 86400 (a day)".into()));
        }
        if let Err(err) = steward_actors::retry::RetrySchedule::parse(&self.retry_schedule) {
            return Err(("alerts.retry_schedule", err.to_string()));
        }
        if self.disk_free_min_pct > 100 {
            return Err(("alerts.disk_free_min_pct", "must be 0 to 100".into()));
        }
        for (index, sink) in self.sinks.iter().enumerate() {
            sink.validate().map_err(|(field, reason)| {
                (
                    "alerts.sinks",
                    format!("alerts.sinks[{index}].{field}: {reason}"),
                )
            })?;
        }
        Ok(())
    }
}

impl AlertSinkConfig {
    /// `Err((field, reason))`.
    fn validate(&self) -> Result<(), (&'static str, String)> {
        let url = self.url.expose_secret();
        // The URL is not repeated: it may carry a token.
        let parsed =
            reqwest::Url::parse(url).map_err(|err| ("url", format!("not a URL ({err})")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err((
                "url",
                "must be an http:// or https:// URL with a host".into(),
            ));
        }
        match (self.kind, &self.secret) {
            (AlertSinkKind::Webhook, None) => {
                return Err((
                    "secret",
                    "required for kind = \"webhook\" (the signing key)".into(),
                ))
            }
            (AlertSinkKind::Webhook, Some(secret)) => {
                crate::destinations::webhook::signing_key(secret.expose_secret())
                    .map_err(|problem| ("secret", problem.to_string()))?;
            }
            (AlertSinkKind::Slack, Some(_)) => {
                return Err((
                    "secret",
                    "kind = \"slack\" takes no secret (its URL is the credential)".into(),
                ))
            }
            (AlertSinkKind::Slack, None) => {}
        }
        if let Some(unknown) = self
            .codes
            .iter()
            .find(|code| !steward_actors::alerting::ALERT_CODES.contains(&code.as_str()))
        {
            return Err((
                "codes",
                format!(
                    "`{unknown}` is not an alert code; known codes: {}",
                    steward_actors::alerting::ALERT_CODES.join(", ")
                ),
            ));
        }
        Ok(())
    }
}
