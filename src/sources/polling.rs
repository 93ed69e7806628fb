//! Polled sources (pattern 2; docs/polling.md): the adapters behind the actors crate's
//! `Poller` port, built per tenant from its document.
//!
//! Each source's adapter lives in its own module and is built here by [`pollers_for`]:
//! - `constant_contact`: contacts through the v3 API with OAuth2 refresh;
//! - `mailchimp`: audience members by `since_last_changed` (the webhook's backstop);
//! - `platform_poll`: a platform's JSON listing, mapped with its webhook mapping;
//! - `postgres`: a partner's own database (CDC: a logical replication slot, or an outbox).

use steward_actors::poll::{PollSchedule, PollerSettings, PollerSpec, SourceLimits};
use steward_actors::store::{MasterKey, Store, TenantStore};

use crate::tenant::{PollSchedule as DocSchedule, TenantDoc};

/// What an adapter may use besides its settings.
#[derive(Clone)]
pub struct PollContext {
    pub tenant_id: String,
    /// One HTTP client for every poller of the process (timeouts set).
    pub http: reqwest::Client,
    /// `http://127.0.0.1:PORT` of the embedded sandbox, when it runs (`"embedded"` URLs).
    pub sandbox_base_url: Option<String>,
    /// The process store (`durable()`: a rotated token is flushed before it is used).
    pub store: Store,
    /// The tenant's data (poller-private state such as a rotated refresh token).
    pub tenant_store: TenantStore,
    /// Seals poller-private secrets like the tenant document's.
    pub master_key: MasterKey,
}

/// The one HTTP client of every poller (connection pool shared; each call times out).
pub fn shared_http() -> reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(POLL_REQUEST_TIMEOUT_S))
                .connect_timeout(std::time::Duration::from_secs(10))
                // A redirect could carry a bearer token or API key to another host.
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default()
        })
        .clone()
}

/// Longest wait for one page (or token) answer.
pub const POLL_REQUEST_TIMEOUT_S: u64 = 60;

/// A source's poller could not be built (an `"embedded"` URL with the embedded sandbox
/// off): the tenant runs without it and the reason is logged at ERROR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollerBuildError {
    pub source: String,
    pub reason: String,
}

/// The pollers of a tenant document, in a stable order. Sources with polling off are still
/// listed (`PollSchedule::Off`): their checkpoint and state stay visible and a manual run
/// works.
pub fn pollers_for(
    context: &PollContext,
    doc: &TenantDoc,
) -> (Vec<PollerSpec>, Vec<PollerBuildError>) {
    let mut specs = Vec::new();
    let mut errors = Vec::new();
    match super::constant_contact::poller_spec(context, doc) {
        Some(Ok(spec)) => specs.push(spec),
        Some(Err(error)) => errors.push(error),
        None => {}
    }
    super::platform_poll::add_specs(context, doc, &mut specs, &mut errors);
    super::mailchimp::poller::add_poller(context, doc, &mut specs, &mut errors);
    super::postgres::add_specs(context, doc, &mut specs, &mut errors);
    (specs, errors)
}

/// The sources a tenant document polls, by the key each poller gets (its
/// `PollerSettings.source`, the key of its slot), in [`pollers_for`]'s order: Constant
/// Contact when configured, every platform with a `poll` section, Mailchimp with an
/// `api_key` and a `list_id`. Read from the document alone (a poller whose URL cannot be
/// resolved is listed still: the document asks for it, and its build error is logged).
pub fn polled_sources(doc: &TenantDoc) -> Vec<String> {
    let sources = &doc.sources;
    let constant_contact = sources
        .constant_contact
        .as_ref()
        .map(|_| super::constant_contact::SOURCE.to_string());
    let platforms = sources
        .platforms
        .iter()
        .filter(|(_, platform)| platform.poll.is_some())
        .map(|(name, _)| name.clone());
    let mailchimp = sources
        .mailchimp
        .as_ref()
        .filter(|settings| settings.api_key.is_some() && settings.list_id.is_some())
        .map(|_| super::mailchimp::SOURCE.to_string());
    let postgres = sources.postgres.keys().cloned();
    constant_contact
        .into_iter()
        .chain(platforms)
        .chain(mailchimp)
        .chain(postgres)
        .collect()
}

/// The actors' schedule of a document's poll fields (validated: `daily_at` is "HH:MM").
pub fn schedule_of(schedule: &DocSchedule, time_zone: &str) -> PollSchedule {
    if let Some(interval_s) = schedule.interval_s {
        return PollSchedule::Every {
            interval_ms: interval_s.saturating_mul(1_000),
        };
    }
    if let Some((hour, minute)) = schedule.daily_at.as_deref().and_then(parse_hh_mm) {
        return PollSchedule::DailyAt {
            hour,
            minute,
            time_zone: time_zone.to_string(),
        };
    }
    PollSchedule::Off
}

/// The settings of one poller from its document fields.
pub fn poller_settings(
    source: &str,
    kind: &str,
    schedule: &DocSchedule,
    doc: &TenantDoc,
    limits: SourceLimits,
    has_webhooks: bool,
) -> PollerSettings {
    PollerSettings {
        source: source.to_string(),
        kind: kind.to_string(),
        schedule: schedule_of(schedule, &doc.time_zone),
        overlap_ms: schedule.overlap_s.saturating_mul(1_000),
        limits,
        has_webhooks,
        parity_alert_pct: schedule.parity_alert_pct,
        time_zone: doc.time_zone.clone(),
    }
}

/// "HH:MM" → (hour, minute); `None` when malformed.
pub fn parse_hh_mm(text: &str) -> Option<(u8, u8)> {
    let (hour, minute) = text.split_once(':')?;
    if hour.len() != 2 || minute.len() != 2 {
        return None;
    }
    let hour: u8 = hour.parse().ok()?;
    let minute: u8 = minute.parse().ok()?;
    (hour < 24 && minute < 60).then_some((hour, minute))
}

/// "HH:MM" or "HH:MM:SS" (UTC) → seconds after midnight; `None` when malformed.
pub fn parse_utc_time_of_day(text: &str) -> Option<u32> {
    let (hh_mm, seconds) = match text.len() {
        5 => (text, 0),
        8 => {
            let (hh_mm, seconds) = text.split_at(5);
            let seconds = seconds.strip_prefix(':')?;
            if seconds.len() != 2 {
                return None;
            }
            let seconds: u32 = seconds.parse().ok()?;
            if seconds >= 60 {
                return None;
            }
            (hh_mm, seconds)
        }
        _ => return None,
    };
    let (hour, minute) = parse_hh_mm(hh_mm)?;
    Some(u32::from(hour) * 3_600 + u32::from(minute) * 60 + seconds)
}

/// Where a person stands on email, as a polled or email-platform source says: the one
/// convention every contact source maps to (docs/polling.md "Contacts"). Virtuous's contact
/// transaction has no documented opt-out field, so the state travels as custom fields
/// [`EMAIL_STATUS_FIELD`] and [`EMAIL_OPT_OUT_FIELD`]; a deletion at the source is an
/// opt-out, never a contact delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailStatus {
    Subscribed,
    /// Not subscribed, not opted out (pending, transactional, never asked).
    NotSubscribed,
    Unsubscribed,
    /// Bounced / cleaned addresses.
    Cleaned,
    /// Deleted or archived at the source.
    Deleted,
}

/// Custom field carrying [`EmailStatus::name`].
pub const EMAIL_STATUS_FIELD: &str = "Email Status";
/// Custom field: `"true"` when the person must not be emailed, else `"false"`.
pub const EMAIL_OPT_OUT_FIELD: &str = "Email Opt Out";

impl EmailStatus {
    pub fn name(self) -> &'static str {
        match self {
            EmailStatus::Subscribed => "subscribed",
            EmailStatus::NotSubscribed => "not_subscribed",
            EmailStatus::Unsubscribed => "unsubscribed",
            EmailStatus::Cleaned => "cleaned",
            EmailStatus::Deleted => "deleted",
        }
    }
    pub fn opted_out(self) -> bool {
        matches!(
            self,
            EmailStatus::Unsubscribed | EmailStatus::Cleaned | EmailStatus::Deleted
        )
    }
    /// The `customFields` members of a contact transaction body.
    pub fn custom_fields(self) -> serde_json::Map<String, serde_json::Value> {
        let mut fields = serde_json::Map::new();
        fields.insert(EMAIL_STATUS_FIELD.into(), self.name().into());
        fields.insert(
            EMAIL_OPT_OUT_FIELD.into(),
            if self.opted_out() { "true" } else { "false" }.into(),
        );
        fields
    }
}

/// The fact id of one version of a polled or email-platform record: `{record id}@{unix
/// seconds of its source version}`. Both paths of a hybrid source (webhook and poll) build
/// it the same way, so whichever arrives second is a duplicate. Stored forever inside
/// idempotency keys ([`super::idempotency_key`]): never change the format.
pub fn versioned_fact_id(record_id: &str, version_unix_s: i64) -> String {
    format!("{record_id}@{version_unix_s}")
}
