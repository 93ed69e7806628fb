//! Validation of a tenant document: every field checked when a tenant is created or
//! patched, each error naming its field.

use super::{invalid, validate_tenant_id, PlatformSettings, TenantDoc, TenantDocError, REDACTED};

impl TenantDoc {
    pub(super) fn validate(&self) -> Result<(), TenantDocError> {
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
        self.validate_budget()
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
            require_secret("sources.mailchimp.url_key", &mailchimp.url_key)?;
        }
        for (name, platform) in &self.sources.platforms {
            validate_platform(name, platform)?;
        }
        Ok(())
    }

    fn validate_budget(&self) -> Result<(), TenantDocError> {
        if let Some(budget) = &self.budget {
            if let Some(limit) = budget.hourly_limit {
                within("budget.hourly_limit", limit, 1, 1_000_000)?;
            }
            if let Some(reserve_pct) = budget.reserve_pct {
                within("budget.reserve_pct", u64::from(reserve_pct), 0, 90)?;
            }
            if let Some(burst) = budget.burst_calls {
                within("budget.burst_calls", u64::from(burst), 1, 100)?;
            }
        }
        Ok(())
    }
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
    require_secret(&field("secret"), &platform.secret)?;
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

fn require_secret(field: &str, value: &Option<String>) -> Result<(), TenantDocError> {
    match value {
        Some(secret) if !secret.is_empty() && secret != REDACTED => Ok(()),
        Some(secret) if secret == REDACTED => Err(invalid(
            field,
            "send the secret itself, not the redaction marker",
        )),
        _ => Err(invalid(field, "is required")),
    }
}

fn non_empty(field: &str, value: &str) -> Result<(), TenantDocError> {
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

fn within(field: &str, value: u64, min: u64, max: u64) -> Result<(), TenantDocError> {
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
