//! The tenant document of the admin API (docs/operations.md "Tenants"): JSON shape, defaults, validation,
//! and the write-only secrets inside it.
//!
//! A document travels as `serde_json::Value` so that PATCH can be an RFC 7396 merge patch;
//! [`TenantDoc`] gives it its defaults and validates every field. Secrets are cut out of the
//! document before it is stored ([`split_secrets`]) and sealed by the store's master key.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use postgres_source::{
    split_table_name, PostgresSourceSettings, PostgresTable, MODE_LOGICAL, MODE_OUTBOX,
};
pub use two_way::{pair_kind, PartnerApiDoc, TwoWayPairDoc, MAILCHIMP_PAIR, PLATFORM_PAIR_PREFIX};

/// What a set secret looks like in every response.
pub const REDACTED: &str = "[redacted]";
/// Tenant ids: lowercase letters, digits and `-`, at most this long.
pub const TENANT_ID_MAX_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantDocError {
    #[error("the body must be a JSON object")]
    NotAnObject,
    #[error("tenant id `{0}` is invalid: use 1 to 64 lowercase letters, digits and '-'")]
    InvalidTenantId(String),
    #[error("field `{field}` is invalid: {reason}")]
    InvalidField { field: String, reason: String },
}

fn invalid(field: &str, reason: impl Into<String>) -> TenantDocError {
    TenantDocError::InvalidField {
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// Checks a tenant id (used in paths and keys).
pub fn validate_tenant_id(id: &str) -> Result<(), TenantDocError> {
    let id_is_valid = !id.is_empty()
        && id.len() <= TENANT_ID_MAX_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if id_is_valid {
        Ok(())
    } else {
        Err(TenantDocError::InvalidTenantId(
            id.chars().take(80).collect(),
        ))
    }
}

/// No `Debug` derive here or below where a secret lives: a stray `?doc` in a log line
/// must not print credentials.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantDoc {
    pub id: String,
    pub name: String,
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    pub virtuous: VirtuousSettings,
    #[serde(default)]
    pub sources: Sources,
    #[serde(default)]
    pub budget: Option<BudgetSettings>,
    /// Pull (docs/pull.md): Virtuous changes delivered to the partner's destinations.
    #[serde(default)]
    pub pull: Option<PullDoc>,
    /// Two-way contact sync (docs/operations.md "Two-way sync"): pairs by key,
    /// `mailchimp` or `platform:{name}`.
    #[serde(default)]
    pub two_way: Option<BTreeMap<String, TwoWayPairDoc>>,
    /// Money reconciliation (docs/backfill.md "Money reconciliation").
    #[serde(default)]
    pub reconciliation: Option<ReconciliationDoc>,
}

/// `reconciliation`: when the nightly money reconciliation runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconciliationDoc {
    /// `"HH:MM"` in the tenant's `time_zone`: every day then, the previous 7 days of each
    /// gift source are reconciled. Absent or `null`: no nightly run.
    #[serde(default)]
    pub daily_at: Option<String>,
}

fn default_time_zone() -> String {
    "UTC".into()
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtuousSettings {
    #[serde(default = "default_base_url")]
    pub base_url: String,
    pub api_key: Option<String>,
    #[serde(default)]
    pub webhook_secret: Option<String>,
    #[serde(default = "default_virtuous_signature_header")]
    pub signature_header: String,
    #[serde(default = "default_base64")]
    pub signature_encoding: String,
    /// Contact updates go through `POST /api/Contact/Batch` (up to 100 a call, one
    /// `referenceSource` per batch); `false` sends one `POST /api/Contact/Transaction` per
    /// contact, as before.
    #[serde(default = "default_true")]
    pub contact_batch: bool,
}

fn default_true() -> bool {
    true
}

fn default_base_url() -> String {
    "https://api.virtuoussoftware.com".into()
}
fn default_virtuous_signature_header() -> String {
    "X-Virtuous-Signature".into()
}
fn default_base64() -> String {
    "base64".into()
}

#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sources {
    #[serde(default)]
    pub stripe: Option<StripeSettings>,
    #[serde(default)]
    pub mailchimp: Option<MailchimpSettings>,
    #[serde(default)]
    pub constant_contact: Option<ConstantContactSettings>,
    #[serde(default)]
    pub platforms: BTreeMap<String, PlatformSettings>,
    /// Partners' own Postgres databases (CDC; `sources.postgres.{name}`).
    #[serde(default)]
    pub postgres: BTreeMap<String, PostgresSourceSettings>,
}

/// When a polled source runs and how far each run reads back: the fields every polled
/// source carries (`interval_s`, `daily_at`, `overlap_s`, `parity_alert_pct`), gathered.
#[derive(Debug, Clone, PartialEq)]
pub struct PollSchedule {
    pub interval_s: Option<u64>,
    pub daily_at: Option<String>,
    pub overlap_s: u64,
    pub parity_alert_pct: f64,
}

macro_rules! poll_schedule_of {
    ($($settings:ty),*) => {$(
        impl $settings {
            pub fn schedule(&self) -> PollSchedule {
                PollSchedule {
                    interval_s: self.interval_s,
                    daily_at: self.daily_at.clone(),
                    overlap_s: self.overlap_s,
                    parity_alert_pct: self.parity_alert_pct,
                }
            }
        }
    )*};
}
poll_schedule_of!(
    ConstantContactSettings,
    MailchimpSettings,
    PlatformPollSettings
);

fn default_overlap_s() -> u64 {
    300
}
fn default_parity_alert_pct() -> f64 {
    1.0
}

/// `sources.constant_contact`: contacts polled through the v3 API with OAuth2.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConstantContactSettings {
    /// The v3 API's base (`{base_url}/v3/contacts`); `"embedded"` = the embedded sandbox.
    #[serde(default = "default_cc_base_url")]
    pub base_url: String,
    /// The OAuth2 token endpoint; `"embedded"` = the embedded sandbox's.
    #[serde(default = "default_cc_token_url")]
    pub token_url: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    /// The refresh token the customer's authorisation gave (rotated ones are stored by
    /// Steward; a new value here — a re-authorisation — replaces them).
    pub refresh_token: Option<String>,
    #[serde(default = "default_cc_reference_source")]
    pub reference_source: String,
    /// Every this many seconds (≥ 10); or `daily_at` "HH:MM" in the tenant's `time_zone`;
    /// never both; neither = polling off (the checkpoint is kept).
    #[serde(default)]
    pub interval_s: Option<u64>,
    #[serde(default)]
    pub daily_at: Option<String>,
    /// Each run re-reads this many seconds before the checkpoint (deduplicated).
    #[serde(default = "default_overlap_s")]
    pub overlap_s: u64,
    /// Alert when more than this percentage of a day's facts (tenant's time zone) were seen
    /// by polling only (= missed webhooks).
    #[serde(default = "default_parity_alert_pct")]
    pub parity_alert_pct: f64,
    /// The account's limits: calls per second and per day, and when the day's count resets
    /// ("HH:MM" or "HH:MM:SS", UTC).
    #[serde(default = "default_cc_per_second")]
    pub requests_per_second: u32,
    #[serde(default = "default_cc_daily_quota")]
    pub daily_quota: u32,
    #[serde(default = "default_quota_reset_utc")]
    pub quota_reset_utc: String,
}

fn default_cc_base_url() -> String {
    "https://api.cc.email".into()
}
fn default_cc_token_url() -> String {
    "https://authz.constantcontact.com/oauth2/default/v1/token".into()
}
fn default_cc_reference_source() -> String {
    "ConstantContact".into()
}
fn default_cc_per_second() -> u32 {
    4
}
fn default_cc_daily_quota() -> u32 {
    10_000
}
fn default_quota_reset_utc() -> String {
    "00:00".into()
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StripeSettings {
    pub signing_secret: Option<String>,
    #[serde(default)]
    pub previous_signing_secret: Option<String>,
    #[serde(default = "default_tolerance_s")]
    pub tolerance_s: u64,
    #[serde(default = "default_stripe_source")]
    pub transaction_source: String,
    #[serde(default)]
    pub accept_test_events: bool,
    #[serde(default)]
    pub default_project_code: Option<String>,
    #[serde(default)]
    pub default_segment_code: Option<String>,
    #[serde(default)]
    pub metadata_keys: MetadataKeys,
    /// How long a basil-era payment that looks like a subscription payment waits for its
    /// `invoice_payment.paid` link before it is sent as a one-time gift (docs/ingress.md).
    #[serde(default = "default_subscription_hold_s")]
    pub subscription_hold_s: u64,
}

fn default_subscription_hold_s() -> u64 {
    crate::sources::stripe::SUBSCRIPTION_HOLD_S_DEFAULT
}

fn default_tolerance_s() -> u64 {
    300
}
fn default_stripe_source() -> String {
    "Stripe".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataKeys {
    #[serde(default = "default_project_key")]
    pub project_code: String,
    #[serde(default = "default_segment_key")]
    pub segment_code: String,
}

impl Default for MetadataKeys {
    fn default() -> Self {
        MetadataKeys {
            project_code: default_project_key(),
            segment_code: default_segment_key(),
        }
    }
}

fn default_project_key() -> String {
    "designation".into()
}
fn default_segment_key() -> String {
    "segment".into()
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailchimpSettings {
    /// The secret of the audience webhook's URL (`?key=…`); absent = no webhook route.
    #[serde(default)]
    pub url_key: Option<String>,
    /// Marketing API key (`…-us21`); with `list_id` and a schedule, members are polled.
    #[serde(default)]
    pub api_key: Option<String>,
    #[serde(default)]
    pub list_id: Option<String>,
    /// Default: `https://{dc}.api.mailchimp.com` from the key's suffix; `"embedded"` = the
    /// embedded sandbox.
    #[serde(default)]
    pub base_url: Option<String>,
    #[serde(default = "default_mailchimp_reference_source")]
    pub reference_source: String,
    /// Every this many seconds (≥ 10); or `daily_at` "HH:MM" in the tenant's `time_zone`;
    /// never both; neither = polling off (the checkpoint is kept).
    #[serde(default)]
    pub interval_s: Option<u64>,
    #[serde(default)]
    pub daily_at: Option<String>,
    /// Each run re-reads this many seconds before the checkpoint (deduplicated).
    #[serde(default = "default_overlap_s")]
    pub overlap_s: u64,
    /// Alert when more than this percentage of a day's facts (tenant's time zone) were seen
    /// by polling only (= missed webhooks).
    #[serde(default = "default_parity_alert_pct")]
    pub parity_alert_pct: f64,
}

fn default_mailchimp_reference_source() -> String {
    "Mailchimp".into()
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformSettings {
    pub secret: Option<String>,
    #[serde(default)]
    pub previous_secret: Option<String>,
    #[serde(default = "default_platform_signature_header")]
    pub signature_header: String,
    #[serde(default = "default_hex")]
    pub encoding: String,
    #[serde(default)]
    pub signature_prefix: String,
    #[serde(default)]
    pub timestamp_header: Option<String>,
    #[serde(default = "default_tolerance_s")]
    pub tolerance_s: u64,
    #[serde(default = "default_signed_payload")]
    pub signed_payload: String,
    #[serde(default = "default_event_id_pointer")]
    pub event_id: String,
    #[serde(default = "default_event_type_pointer")]
    pub event_type: String,
    pub transaction_source: String,
    #[serde(default = "default_amount_unit")]
    pub amount_unit: String,
    #[serde(default)]
    pub events: BTreeMap<String, PlatformEventMapping>,
    /// The platform's listing, polled with the same event mapping (`sources.platforms.{name}.poll`).
    #[serde(default)]
    pub poll: Option<PlatformPollSettings>,
}

impl PlatformSettings {
    /// Only a mapping (no webhook route, no listing): how a Postgres source maps its rows
    /// with the platforms' mapping model, one table one event type.
    pub fn mapping_only(
        transaction_source: &str,
        amount_unit: &str,
        events: BTreeMap<String, PlatformEventMapping>,
    ) -> Self {
        PlatformSettings {
            secret: None,
            previous_secret: None,
            signature_header: default_platform_signature_header(),
            encoding: default_hex(),
            signature_prefix: String::new(),
            timestamp_header: None,
            tolerance_s: default_tolerance_s(),
            signed_payload: default_signed_payload(),
            event_id: default_event_id_pointer(),
            event_type: default_event_type_pointer(),
            transaction_source: transaction_source.to_string(),
            amount_unit: amount_unit.to_string(),
            events,
            poll: None,
        }
    }
}

/// A polled platform: an HTTP JSON listing with an updated-since parameter and cursor paging.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformPollSettings {
    pub url: String,
    #[serde(default)]
    pub auth_header: Option<String>,
    /// Sealed like every secret.
    #[serde(default)]
    pub auth_value: Option<String>,
    #[serde(default = "default_updated_since_param")]
    pub updated_since_param: String,
    /// JSON Pointer to the array of items in a page.
    #[serde(default = "default_items_pointer")]
    pub items: String,
    /// JSON Pointer to the next page's cursor (absent or null ends the listing).
    #[serde(default = "default_next_cursor_pointer")]
    pub next_cursor: String,
    /// The query parameter the cursor goes back in.
    #[serde(default = "default_cursor_param")]
    pub cursor_param: String,
    /// JSON Pointers of an item's id and of its update time (the checkpoint).
    #[serde(default = "default_event_id_pointer")]
    pub item_id: String,
    #[serde(default = "default_item_updated_at")]
    pub item_updated_at: String,
    /// Every this many seconds (≥ 10); or `daily_at` "HH:MM" in the tenant's `time_zone`;
    /// never both; neither = polling off (the checkpoint is kept).
    #[serde(default)]
    pub interval_s: Option<u64>,
    #[serde(default)]
    pub daily_at: Option<String>,
    /// Each run re-reads this many seconds before the checkpoint (deduplicated).
    #[serde(default = "default_overlap_s")]
    pub overlap_s: u64,
    /// Alert when more than this percentage of a day's facts (tenant's time zone) were seen
    /// by polling only (= missed webhooks).
    #[serde(default = "default_parity_alert_pct")]
    pub parity_alert_pct: f64,
}

fn default_updated_since_param() -> String {
    "updated_since".into()
}
fn default_items_pointer() -> String {
    "/items".into()
}
fn default_next_cursor_pointer() -> String {
    "/next_cursor".into()
}
fn default_cursor_param() -> String {
    "cursor".into()
}
fn default_item_updated_at() -> String {
    "/updated_at".into()
}

fn default_platform_signature_header() -> String {
    "X-Signature".into()
}
fn default_hex() -> String {
    "hex".into()
}
fn default_signed_payload() -> String {
    "body".into()
}
fn default_event_id_pointer() -> String {
    "/id".into()
}
fn default_event_type_pointer() -> String {
    "/type".into()
}
fn default_amount_unit() -> String {
    "minor".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformEventMapping {
    pub kind: String,
    /// Virtuous field → JSON Pointer into the event.
    pub fields: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSettings {
    pub hourly_limit: Option<u64>,
    pub reserve_pct: Option<u8>,
    pub burst_calls: Option<u32>,
    /// The backfill lane's guaranteed share of calls while live work waits (0–100).
    pub backfill_pct: Option<u8>,
}

/// `pull`: which Virtuous changes are captured and where they go (docs/pull.md).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullDoc {
    /// Kinds subscribed and delivered: `gift`, `contact`, `project`, `event`, `contact_note`.
    #[serde(default = "default_pull_events")]
    pub events: Vec<String>,
    /// Between backstop polls (`Last Modified Date`); 0 = no backstop poll, else ≥ 60.
    #[serde(default = "default_pull_poll_interval_s")]
    pub poll_interval_s: u64,
    /// Deliver our own writes too (records naming one of this tenant's sources).
    #[serde(default)]
    pub include_own: bool,
    /// Changes are kept this long for replay.
    #[serde(default = "default_pull_retention_days")]
    pub retention_days: u64,
    #[serde(default)]
    pub destinations: BTreeMap<String, DestinationDoc>,
}

fn default_pull_events() -> Vec<String> {
    vec!["gift".into(), "contact".into()]
}
fn default_pull_poll_interval_s() -> u64 {
    3_600
}
fn default_pull_retention_days() -> u64 {
    7
}

/// `pull.destinations.{name}`: one destination, by `kind`. (JSON only, never bincode: the
/// internal tag is fine here.)
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DestinationDoc {
    Webhook(WebhookDestinationDoc),
    Postgres(PostgresDestinationDoc),
    Ndjson(NdjsonDestinationDoc),
}

impl DestinationDoc {
    pub fn kind(&self) -> &'static str {
        match self {
            DestinationDoc::Webhook(_) => "webhook",
            DestinationDoc::Postgres(_) => "postgres",
            DestinationDoc::Ndjson(_) => "ndjson",
        }
    }
}

/// A signed POST per change (Standard Webhooks headers).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookDestinationDoc {
    pub url: String,
    /// Sealed. `whsec_` + base64 (Standard Webhooks), or any 16–256 visible characters.
    pub secret: Option<String>,
    #[serde(default = "default_webhook_max_per_s")]
    pub max_per_s: u32,
    #[serde(default = "default_webhook_timeout_s")]
    pub timeout_s: u64,
}

fn default_webhook_max_per_s() -> u32 {
    10
}
fn default_webhook_timeout_s() -> u64 {
    10
}

/// Tables in the partner's Postgres, upserted by Virtuous id.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresDestinationDoc {
    /// Sealed: a libpq `key=value` string or a `postgres://` URL (no TLS yet).
    pub dsn: Option<String>,
    #[serde(default = "default_postgres_schema")]
    pub schema: String,
    #[serde(default = "default_postgres_batch_max")]
    pub batch_max: u32,
}

fn default_postgres_schema() -> String {
    "steward".into()
}
fn default_postgres_batch_max() -> u32 {
    500
}

/// Newline-delimited JSON files in a directory, rotated by size and age.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NdjsonDestinationDoc {
    /// An absolute path (created when missing).
    pub dir: String,
    #[serde(default = "default_ndjson_rotate_bytes")]
    pub rotate_bytes: u64,
    #[serde(default = "default_ndjson_rotate_s")]
    pub rotate_s: u64,
}

fn default_ndjson_rotate_bytes() -> u64 {
    64 * 1024 * 1024
}
fn default_ndjson_rotate_s() -> u64 {
    60
}

impl std::fmt::Debug for TenantDoc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantDoc")
            .field("id", &self.id)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl TenantDoc {
    /// Parses a full document (defaults applied) and validates every field: what create and
    /// patch accept.
    pub fn from_value(value: &Value) -> Result<TenantDoc, TenantDocError> {
        let (doc, broken_rules) = TenantDoc::from_stored_value(value)?;
        match broken_rules.into_iter().next() {
            Some(first) => Err(first),
            None => Ok(doc),
        }
    }

    /// A document as stored (boot): the rules a tenant needs to start are enforced; the
    /// rules added since tenants were first stored (`validate.rs`, `new_rule_violations`)
    /// are returned instead, so that such a tenant still starts — its queue drains, its
    /// webhooks are answered — and carries the alert `config_invalid` until a PATCH fixes it.
    pub fn from_stored_value(
        value: &Value,
    ) -> Result<(TenantDoc, Vec<TenantDocError>), TenantDocError> {
        let id = value
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("id", "is required (a string)"))?;
        validate_tenant_id(id)?;
        let doc: TenantDoc = serde_path_to_error::deserialize(value.clone()).map_err(|err| {
            // The path names where the error is ("budget.reserve_pct"); for a missing or
            // unknown field serde names the field itself in its message.
            let message = err.inner().to_string();
            invalid(
                &field_of_serde_error(&err.path().to_string(), &message),
                message,
            )
        })?;
        doc.validate_startable()?;
        let broken_rules = doc.new_rule_violations();
        Ok((doc, broken_rules))
    }
}

/// The field a `serde_path_to_error` error concerns: its path ends at an unknown field
/// itself, but at the parent of a missing one (`.` is the body).
pub(crate) fn field_of_serde_error(path: &str, message: &str) -> String {
    match (path, missing_field_named_in(message)) {
        (".", Some(missing)) => missing,
        (".", None) => "body".to_string(),
        (parent, Some(missing)) => format!("{parent}.{missing}"),
        (path, None) => path.to_string(),
    }
}

/// serde's "missing field `name`" → `name`.
fn missing_field_named_in(message: &str) -> Option<String> {
    let field = message.strip_prefix("missing field `")?.split('`').next()?;
    Some(field.to_string())
}

/// Every secret of a document, as JSON Pointers (platform secrets depend on the platforms).
pub fn secret_pointers(doc: &Value) -> Vec<String> {
    let mut pointers = vec![
        "/virtuous/api_key".to_string(),
        "/virtuous/webhook_secret".to_string(),
        "/sources/stripe/signing_secret".to_string(),
        "/sources/stripe/previous_signing_secret".to_string(),
        "/sources/mailchimp/url_key".to_string(),
        "/sources/mailchimp/api_key".to_string(),
        "/sources/constant_contact/client_secret".to_string(),
        "/sources/constant_contact/refresh_token".to_string(),
    ];
    if let Some(platforms) = doc.pointer("/sources/platforms").and_then(Value::as_object) {
        for name in platforms.keys() {
            let escaped = pointer_token(name);
            pointers.push(format!("/sources/platforms/{escaped}/secret"));
            pointers.push(format!("/sources/platforms/{escaped}/previous_secret"));
            pointers.push(format!("/sources/platforms/{escaped}/poll/auth_value"));
        }
    }
    if let Some(sources) = doc.pointer("/sources/postgres").and_then(Value::as_object) {
        for name in sources.keys() {
            pointers.push(format!("/sources/postgres/{}/dsn", pointer_token(name)));
        }
    }
    if let Some(destinations) = doc.pointer("/pull/destinations").and_then(Value::as_object) {
        for name in destinations.keys() {
            let escaped = pointer_token(name);
            pointers.push(format!("/pull/destinations/{escaped}/secret"));
            pointers.push(format!("/pull/destinations/{escaped}/dsn"));
        }
    }
    if let Some(pairs) = doc.pointer("/two_way").and_then(Value::as_object) {
        for pair in pairs.keys() {
            let escaped = pointer_token(pair);
            pointers.push(format!("/two_way/{escaped}/api/auth_value"));
        }
    }
    pointers
}

/// A key as one JSON Pointer token (`~` → `~0`, `/` → `~1`).
fn pointer_token(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Cuts every set secret out of `doc` (leaving `null`) and returns them by pointer.
pub fn split_secrets(doc: &mut Value) -> Vec<(String, String)> {
    let mut secrets = Vec::new();
    for pointer in secret_pointers(doc) {
        if let Some(slot) = doc.pointer_mut(&pointer) {
            if let Value::String(secret) = slot.take() {
                secrets.push((pointer, secret));
            }
        }
    }
    secrets
}

/// Puts secrets back into a stored document (before a merge patch is applied).
pub fn join_secrets(doc: &mut Value, secrets: &[(String, String)]) {
    for (pointer, secret) in secrets {
        if let Some(slot) = doc.pointer_mut(pointer) {
            *slot = Value::String(secret.clone());
        }
    }
}

/// The document as every response shows it: each set secret replaced by [`REDACTED`].
pub fn redacted(doc: &Value, set_secret_pointers: &[String]) -> Value {
    let mut shown = doc.clone();
    for pointer in set_secret_pointers {
        if let Some(slot) = shown.pointer_mut(pointer) {
            *slot = Value::String(REDACTED.into());
        }
    }
    shown
}

/// A new document may not carry the redaction marker as a secret.
pub fn reject_redacted_secrets(doc: &Value) -> Result<(), TenantDocError> {
    for pointer in secret_pointers(doc) {
        if doc.pointer(&pointer).and_then(Value::as_str) == Some(REDACTED) {
            return Err(invalid(
                &pointer_to_field(&pointer),
                "send the secret itself, not the redaction marker",
            ));
        }
    }
    Ok(())
}

/// In a patched document, the redaction marker means "keep the stored secret" (a client
/// may PATCH back what GET showed); a marker where nothing is stored is an error.
pub fn restore_redacted_secrets(
    doc: &mut Value,
    stored: &[(String, String)],
) -> Result<(), TenantDocError> {
    for pointer in secret_pointers(doc) {
        let Some(slot) = doc.pointer_mut(&pointer) else {
            continue;
        };
        if slot.as_str() != Some(REDACTED) {
            continue;
        }
        match stored
            .iter()
            .find(|(stored_pointer, _)| *stored_pointer == pointer)
        {
            Some((_, secret)) => *slot = Value::String(secret.clone()),
            None => {
                return Err(invalid(
                    &pointer_to_field(&pointer),
                    "no stored secret to keep; send the secret itself",
                ))
            }
        }
    }
    Ok(())
}

/// `/sources/stripe/signing_secret` → `sources.stripe.signing_secret`.
fn pointer_to_field(pointer: &str) -> String {
    pointer
        .trim_start_matches('/')
        .replace('/', ".")
        .replace("~1", "/")
        .replace("~0", "~")
}

/// A `null` in a merge patch removes an optional setting (a secret rotated out, a source,
/// a budget override); it never resets a setting that has a default: `{"virtuous":
/// {"base_url": null}}` would silently point the tenant at production Virtuous with its key.
/// `full` is the patched document with its defaults applied.
pub fn refuse_null_resets(merge_patch: &Value, full: &Value) -> Result<(), TenantDocError> {
    let mut nulls = Vec::new();
    null_pointers(merge_patch, String::new(), &mut nulls);
    for pointer in nulls {
        if full.pointer(&pointer).is_some_and(|value| !value.is_null()) {
            return Err(invalid(
                &pointer_to_field(&pointer),
                "null would reset it to its default; send the value you want instead",
            ));
        }
    }
    Ok(())
}

/// JSON Pointers of every `null` member in `value`.
fn null_pointers(value: &Value, at: String, nulls: &mut Vec<String>) {
    let Value::Object(members) = value else {
        return;
    };
    for (key, member) in members {
        let pointer = format!("{at}/{}", pointer_token(key));
        if member.is_null() {
            nulls.push(pointer);
        } else {
            null_pointers(member, pointer, nulls);
        }
    }
}

/// Validates a body and returns the full document with its defaults applied.
pub fn normalise(body: &Value) -> Result<(TenantDoc, Value), TenantDocError> {
    if !body.is_object() {
        return Err(TenantDocError::NotAnObject);
    }
    let doc = TenantDoc::from_value(body)?;
    let full = serde_json::to_value(&doc).map_err(|err| invalid("body", err.to_string()))?;
    Ok((doc, full))
}

mod postgres_source;
mod two_way;
mod validate;
mod validate_pull;
mod validate_two_way;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod rules_tests;

#[cfg(test)]
mod pull_tests;

#[cfg(test)]
mod two_way_tests;
