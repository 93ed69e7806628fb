//! Validation of a tenant document: every field checked when a tenant is created or
//! patched, each error naming its field.
//!
//! Two sets of rules (docs/operations.md "Tenant rules"):
//! - [`TenantDoc::validate_startable`]: what a tenant needs to start at all. A stored
//!   document always passed these (they predate every stored tenant).
//! - [`TenantDoc::new_rule_violations`]: rules added after tenants were stored (issue 11).
//!   Create and patch refuse a document that breaks one; a stored tenant that breaks one
//!   still starts and carries the alert `config_invalid` naming the field.

use super::{
    invalid, validate_tenant_id, PlatformSettings, PollSchedule, TenantDoc, TenantDocError,
    REDACTED,
};

impl TenantDoc {
    pub(super) fn validate_startable(&self) -> Result<(), TenantDocError> {
        if self.name.trim().is_empty() || self.name.len() > 200 {
            return Err(invalid("name", "must be 1 to 200 characters"));
        }
        if jiff::tz::TimeZone::get(&self.time_zone).is_err() {
            return Err(invalid(
                "time_zone",
                format!("`{}` is not an IANA time zone", self.time_zone),
            ));
        }
        let base_url = &self.virtuous.base_url;
        let base_url_is_valid = base_url == "embedded"
            || base_url.starts_with("https://")
            || base_url.starts_with("http://");
        if !base_url_is_valid {
            return Err(invalid(
                "virtuous.base_url",
                "must be an http(s) URL or \"embedded\"",
            ));
        }
        require_secret("virtuous.api_key", &self.virtuous.api_key)?;
        one_of(
            "virtuous.signature_encoding",
            &self.virtuous.signature_encoding,
            &["base64", "hex"],
        )?;
        non_empty("virtuous.signature_header", &self.virtuous.signature_header)?;
        self.validate_sources()?;
        self.validate_budget()?;
        if let Some(pull) = &self.pull {
            super::validate_pull::validate_pull(pull)?;
        }
        super::validate_two_way::validate_two_way(self)?;
        self.validate_reconciliation()?;
        Ok(())
    }

    /// `reconciliation.daily_at`: "HH:MM" (a key newer than every stored document, so a
    /// startable rule).
    fn validate_reconciliation(&self) -> Result<(), TenantDocError> {
        let Some(daily_at) = self
            .reconciliation
            .as_ref()
            .and_then(|reconciliation| reconciliation.daily_at.as_deref())
        else {
            return Ok(());
        };
        if crate::sources::polling::parse_hh_mm(daily_at).is_none() {
            return Err(invalid(
                "reconciliation.daily_at",
                "must be \"HH:MM\" (24-hour, in the tenant's time_zone)",
            ));
        }
        Ok(())
    }

    fn validate_sources(&self) -> Result<(), TenantDocError> {
        if let Some(stripe) = &self.sources.stripe {
            require_secret("sources.stripe.signing_secret", &stripe.signing_secret)?;
            within("sources.stripe.tolerance_s", stripe.tolerance_s, 1, 86_400)?;
            within(
                "sources.stripe.subscription_hold_s",
                stripe.subscription_hold_s,
                0,
                86_400,
            )?;
            non_empty(
                "sources.stripe.transaction_source",
                &stripe.transaction_source,
            )?;
        }
        if let Some(mailchimp) = &self.sources.mailchimp {
            self.validate_mailchimp(mailchimp)?;
        }
        if let Some(cc) = &self.sources.constant_contact {
            let field = |key: &str| format!("sources.constant_contact.{key}");
            for (key, url) in [("base_url", &cc.base_url), ("token_url", &cc.token_url)] {
                if let Some(problem) = base_url_problem(url) {
                    return Err(invalid(
                        &field(key),
                        format!("must be an http(s) URL or \"embedded\": {problem}"),
                    ));
                }
            }
            non_empty(&field("client_id"), &cc.client_id)?;
            require_secret(&field("client_secret"), &cc.client_secret)?;
            require_secret(&field("refresh_token"), &cc.refresh_token)?;
            non_empty(&field("reference_source"), &cc.reference_source)?;
            validate_schedule("sources.constant_contact", &cc.schedule())?;
            within(
                &field("requests_per_second"),
                u64::from(cc.requests_per_second),
                1,
                100,
            )?;
            within(
                &field("daily_quota"),
                u64::from(cc.daily_quota),
                1,
                10_000_000,
            )?;
            if crate::sources::polling::parse_utc_time_of_day(&cc.quota_reset_utc).is_none() {
                return Err(invalid(
                    &field("quota_reset_utc"),
                    "must be \"HH:MM\" or \"HH:MM:SS\" (UTC)",
                ));
            }
        }
        for (name, platform) in &self.sources.platforms {
            validate_platform(name, platform)?;
        }
        for (name, source) in &self.sources.postgres {
            super::postgres_source::validate_postgres_source(
                name,
                source,
                &self.sources.platforms,
            )?;
        }
        Ok(())
    }

    fn validate_mailchimp(
        &self,
        mailchimp: &super::MailchimpSettings,
    ) -> Result<(), TenantDocError> {
        let field = |key: &str| format!("sources.mailchimp.{key}");
        let polls = mailchimp.api_key.is_some() || mailchimp.list_id.is_some();
        if mailchimp.url_key.is_some() || !polls {
            // The webhook route needs its key; a source with neither path is a mistake.
            require_secret(&field("url_key"), &mailchimp.url_key)?;
        }
        if polls {
            require_secret(&field("api_key"), &mailchimp.api_key)?;
            let api_key = mailchimp.api_key.as_deref().unwrap_or_default();
            let has_data_center = api_key.rsplit_once('-').is_some_and(|(_, dc)| {
                !dc.is_empty() && dc.bytes().all(|b| b.is_ascii_alphanumeric())
            });
            if !has_data_center {
                return Err(invalid(
                    &field("api_key"),
                    "must end in its data center, e.g. `…-us21` (Mailchimp → Account → Extras → API keys)",
                ));
            }
            match &mailchimp.list_id {
                Some(list_id) => non_empty(&field("list_id"), list_id)?,
                None => {
                    return Err(invalid(
                        &field("list_id"),
                        "is required to poll members (the audience id)",
                    ))
                }
            }
        } else if mailchimp.interval_s.is_some() || mailchimp.daily_at.is_some() {
            return Err(invalid(
                &field("api_key"),
                "is required to poll (with list_id)",
            ));
        }
        if let Some(base_url) = &mailchimp.base_url {
            if let Some(problem) = base_url_problem(base_url) {
                return Err(invalid(
                    &field("base_url"),
                    format!("must be an http(s) URL or \"embedded\": {problem}"),
                ));
            }
        }
        non_empty(&field("reference_source"), &mailchimp.reference_source)?;
        validate_schedule("sources.mailchimp", &mailchimp.schedule())
    }

    fn validate_budget(&self) -> Result<(), TenantDocError> {
        if let Some(budget) = &self.budget {
            if let Some(limit) = budget.hourly_limit {
                within("budget.hourly_limit", limit, 1, 1_000_000)?;
            }
            if let Some(reserve_pct) = budget.reserve_pct {
                within("budget.reserve_pct", u64::from(reserve_pct), 0, 90)?;
            }
            if let Some(backfill_pct) = budget.backfill_pct {
                within("budget.backfill_pct", u64::from(backfill_pct), 0, 100)?;
            }
            if let Some(burst) = budget.burst_calls {
                within("budget.burst_calls", u64::from(burst), 1, 100)?;
            }
        }
        Ok(())
    }
}

impl TenantDoc {
    /// Every rule added since tenants were first stored that this document breaks, in
    /// document order (an empty list for a valid document).
    pub fn new_rule_violations(&self) -> Vec<TenantDocError> {
        let mut broken = Vec::new();
        if let Some(problem) = base_url_problem(&self.virtuous.base_url) {
            broken.push(invalid(
                "virtuous.base_url",
                format!("must be an http(s) URL or \"embedded\": {problem}"),
            ));
        }
        if let Some(api_key) = &self.virtuous.api_key {
            if api_key.chars().any(char::is_control) {
                broken.push(invalid(
                    "virtuous.api_key",
                    "contains control characters (a newline or tab pasted with it?)",
                ));
            }
        }
        if let Some(stripe) = &self.sources.stripe {
            let secrets = [
                ("signing_secret", &stripe.signing_secret),
                ("previous_signing_secret", &stripe.previous_signing_secret),
            ];
            for (key, secret) in secrets {
                if let Some(problem) = secret.as_deref().and_then(stripe_signing_secret_problem) {
                    broken.push(invalid(&format!("sources.stripe.{key}"), problem));
                }
            }
        }
        for (name, platform) in &self.sources.platforms {
            // A timestamp checked for freshness but outside the signature proves nothing: a
            // captured body replays with a fresh timestamp.
            if platform.timestamp_header.is_some() && platform.signed_payload == "body" {
                broken.push(invalid(
                    &format!("sources.platforms.{name}.signed_payload"),
                    "must be \"{timestamp}.{body}\" when timestamp_header is set: a timestamp \
                     outside the signature lets a captured body be replayed with a fresh one \
                     (or remove timestamp_header)",
                ));
            }
        }
        broken
    }
}

/// Why `base_url` is not `"embedded"` or a usable http(s) base URL; `None` when it is. The
/// reason never repeats the URL (it may carry credentials).
pub(super) fn base_url_problem(base_url: &str) -> Option<&'static str> {
    if base_url == "embedded" {
        return None;
    }
    // The URL standard drops tabs and newlines and trims spaces silently: refuse them first.
    if base_url
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Some("it contains spaces, tabs, newlines or control characters");
    }
    let Ok(url) = reqwest::Url::parse(base_url) else {
        return Some("it does not parse as a URL (check the host, an IPv6 address's brackets and the port, at most 65535)");
    };
    if !matches!(url.scheme(), "http" | "https") {
        return Some("the scheme must be http or https");
    }
    if url.host().is_none() || url.host_str() == Some("") {
        return Some("it has no host");
    }
    if url.port() == Some(0) {
        return Some("port 0 is not a port to connect to");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Some("it carries a user name or password (user:pass@): the API key is the credential; such a URL would be stored and shown unencrypted");
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Some("a base URL has no query (?…) or fragment (#…)");
    }
    None
}

/// Why `secret` is not a Stripe webhook signing secret; `None` when it is. The reason names
/// the kind of key received, never the key.
fn stripe_signing_secret_problem(secret: &str) -> Option<String> {
    const PREFIX: &str = "whsec_";
    if secret.len() > PREFIX.len() && secret.starts_with(PREFIX) {
        return None;
    }
    let received = match secret.get(..3) {
        Some("sk_") => "; this is a secret API key (sk_…), not a signing secret",
        Some("rk_") => "; this is a restricted API key (rk_…), not a signing secret",
        Some("pk_") => "; this is a publishable API key (pk_…), not a signing secret",
        _ => "",
    };
    Some(format!(
        "must be the webhook endpoint's signing secret, which starts with whsec_ (Stripe \
         Dashboard → Developers → Webhooks → the endpoint → Signing secret){received}"
    ))
}

/// The path of an `embedded:/path` URL (a path of the embedded sandbox).
pub(super) fn embedded_path_problem(path: &str) -> Option<&'static str> {
    if !path.starts_with('/') {
        return Some("the embedded path starts with '/'");
    }
    if path
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '?' || c == '#')
    {
        return Some("the embedded path has no spaces, control characters, query or fragment");
    }
    None
}

/// One generic platform's settings (`sources.platforms.{name}`).
fn validate_platform(name: &str, platform: &PlatformSettings) -> Result<(), TenantDocError> {
    let field = |key: &str| format!("sources.platforms.{name}.{key}");
    validate_tenant_id(name).map_err(|_| {
        invalid(
            &format!("sources.platforms.{name}"),
            "platform names use lowercase letters, digits and '-'",
        )
    })?;
    // A platform that is only polled has no webhook route, so no secret.
    if platform.poll.is_none() || platform.secret.is_some() {
        require_secret(&field("secret"), &platform.secret)?;
    }
    if let Some(poll) = &platform.poll {
        let poll_field = |key: &str| format!("sources.platforms.{name}.poll.{key}");
        let url_problem = match poll
            .url
            .strip_prefix(crate::sources::platform_poll::EMBEDDED_PREFIX)
        {
            Some(path) => embedded_path_problem(path),
            None => base_url_problem(&poll.url),
        };
        if let Some(problem) = url_problem {
            return Err(invalid(
                &poll_field("url"),
                format!("must be an http(s) URL, \"embedded\" or \"embedded:/path\": {problem}"),
            ));
        }
        if poll.auth_header.is_some() != poll.auth_value.is_some() {
            return Err(invalid(
                &poll_field("auth_value"),
                "auth_header and auth_value go together",
            ));
        }
        if let Some(header) = &poll.auth_header {
            non_empty(&poll_field("auth_header"), header)?;
        }
        non_empty(
            &poll_field("updated_since_param"),
            &poll.updated_since_param,
        )?;
        non_empty(&poll_field("cursor_param"), &poll.cursor_param)?;
        json_pointer(&poll_field("items"), &poll.items)?;
        json_pointer(&poll_field("next_cursor"), &poll.next_cursor)?;
        json_pointer(&poll_field("item_id"), &poll.item_id)?;
        json_pointer(&poll_field("item_updated_at"), &poll.item_updated_at)?;
        validate_schedule(&format!("sources.platforms.{name}.poll"), &poll.schedule())?;
    }
    non_empty(&field("signature_header"), &platform.signature_header)?;
    one_of(&field("encoding"), &platform.encoding, &["hex", "base64"])?;
    one_of(
        &field("signed_payload"),
        &platform.signed_payload,
        &["body", "{timestamp}.{body}"],
    )?;
    if platform.signed_payload != "body" && platform.timestamp_header.is_none() {
        return Err(invalid(
            &field("timestamp_header"),
            "is required when signed_payload includes {timestamp}",
        ));
    }
    within(&field("tolerance_s"), platform.tolerance_s, 1, 86_400)?;
    json_pointer(&field("event_id"), &platform.event_id)?;
    json_pointer(&field("event_type"), &platform.event_type)?;
    non_empty(&field("transaction_source"), &platform.transaction_source)?;
    one_of(
        &field("amount_unit"),
        &platform.amount_unit,
        &["minor", "major"],
    )?;
    for (event_type, mapping) in &platform.events {
        let event_field = |key: &str| format!("sources.platforms.{name}.events.{event_type}.{key}");
        one_of(&event_field("kind"), &mapping.kind, &["gift", "contact"])?;
        for (target, pointer) in &mapping.fields {
            json_pointer(&event_field(&format!("fields.{target}")), pointer)?;
        }
    }
    Ok(())
}

/// A polled source's `interval_s` / `daily_at` / `overlap_s` / `parity_alert_pct`.
fn validate_schedule(at: &str, schedule: &PollSchedule) -> Result<(), TenantDocError> {
    let field = |key: &str| format!("{at}.{key}");
    if schedule.interval_s.is_some() && schedule.daily_at.is_some() {
        return Err(invalid(
            &field("daily_at"),
            "set interval_s or daily_at, not both (null one of them to switch)",
        ));
    }
    if let Some(interval_s) = schedule.interval_s {
        within(&field("interval_s"), interval_s, 10, 7 * 86_400)?;
    }
    if let Some(daily_at) = &schedule.daily_at {
        if crate::sources::polling::parse_hh_mm(daily_at).is_none() {
            return Err(invalid(
                &field("daily_at"),
                "must be \"HH:MM\" (24-hour, in the tenant's time_zone)",
            ));
        }
    }
    // At least a second: a source that lists strictly after its parameter would otherwise
    // lose what changed in the checkpoint's own second after the run.
    within(&field("overlap_s"), schedule.overlap_s, 1, 86_400)?;
    let pct = schedule.parity_alert_pct;
    if !(0.0..=100.0).contains(&pct) {
        return Err(invalid(
            &field("parity_alert_pct"),
            "must be between 0 and 100",
        ));
    }
    Ok(())
}

pub(super) fn require_secret(field: &str, value: &Option<String>) -> Result<(), TenantDocError> {
    match value {
        Some(secret) if !secret.is_empty() && secret != REDACTED => Ok(()),
        Some(secret) if secret == REDACTED => Err(invalid(
            field,
            "send the secret itself, not the redaction marker",
        )),
        _ => Err(invalid(field, "is required")),
    }
}

pub(super) fn non_empty(field: &str, value: &str) -> Result<(), TenantDocError> {
    if value.trim().is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    Ok(())
}

fn one_of(field: &str, value: &str, allowed: &[&str]) -> Result<(), TenantDocError> {
    if !allowed.contains(&value) {
        return Err(invalid(field, format!("must be one of {allowed:?}")));
    }
    Ok(())
}

pub(super) fn within(field: &str, value: u64, min: u64, max: u64) -> Result<(), TenantDocError> {
    if value < min || value > max {
        return Err(invalid(field, format!("must be between {min} and {max}")));
    }
    Ok(())
}

fn json_pointer(field: &str, pointer: &str) -> Result<(), TenantDocError> {
    if !pointer.starts_with('/') {
        return Err(invalid(field, "must be a JSON Pointer starting with '/'"));
    }
    Ok(())
}
