//! Validation of the tenant document's `two_way` block (docs/operations.md "Two-way
//! sync"): each error names its field; secrets are never repeated in a reason.

use steward_actors::two_way::{PairKind, FIELD_NAMES};

use super::validate::{base_url_problem, embedded_path_problem, non_empty, require_secret, within};
use super::{invalid, pair_kind, PartnerApiDoc, TenantDoc, TenantDocError, TwoWayPairDoc};
use crate::sources::platform_poll::EMBEDDED_PREFIX;

pub(super) fn validate_two_way(doc: &TenantDoc) -> Result<(), TenantDocError> {
    let Some(pairs) = &doc.two_way else {
        return Ok(());
    };
    // Each pair recognises its own writes by its reference source: two pairs sharing one
    // would take each other's writes for their own echoes.
    let mut reference_sources: Vec<(String, &str)> = Vec::new();
    for (pair, settings) in pairs {
        let at = format!("two_way.{pair}");
        let kind = pair_kind(pair).ok_or_else(|| {
            invalid(
                &at,
                "a pair is `mailchimp` or `platform:{name}` (a source under sources.platforms)",
            )
        })?;
        validate_pair_settings(&at, settings)?;
        let reference_source = match &kind {
            PairKind::Mailchimp => {
                validate_mailchimp_pair(doc, &at, settings)?;
                doc.sources
                    .mailchimp
                    .as_ref()
                    .map(|m| m.reference_source.clone())
            }
            PairKind::Platform(name) => {
                validate_platform_pair(doc, &at, name, settings)?;
                doc.sources
                    .platforms
                    .get(name)
                    .map(|p| p.transaction_source.clone())
            }
        };
        if let Some(reference_source) = reference_source {
            if let Some((_, other)) = reference_sources
                .iter()
                .find(|(known, _)| known.eq_ignore_ascii_case(&reference_source))
            {
                return Err(invalid(
                    &at,
                    format!(
                        "shares its reference source `{reference_source}` with two_way.{other}: each pair needs its own (it marks the pair's writes in Virtuous)"
                    ),
                ));
            }
            reference_sources.push((reference_source, pair.as_str()));
        }
    }
    Ok(())
}

/// What every pair has: its echo window and its field names.
fn validate_pair_settings(at: &str, settings: &TwoWayPairDoc) -> Result<(), TenantDocError> {
    within(
        &format!("{at}.echo_window_s"),
        settings.echo_window_s,
        1,
        86_400,
    )?;
    for field in settings.fields.keys() {
        if !FIELD_NAMES.contains(&field.as_str()) {
            return Err(invalid(
                &format!("{at}.fields.{field}"),
                format!("is not a field: use {}", FIELD_NAMES.join(", ")),
            ));
        }
    }
    Ok(())
}

fn validate_mailchimp_pair(
    doc: &TenantDoc,
    at: &str,
    settings: &TwoWayPairDoc,
) -> Result<(), TenantDocError> {
    if settings.api.is_some() {
        return Err(invalid(
            &format!("{at}.api"),
            "the mailchimp pair writes with sources.mailchimp's api_key, list_id and base_url; remove api",
        ));
    }
    let writable = doc
        .sources
        .mailchimp
        .as_ref()
        .is_some_and(|mailchimp| mailchimp.api_key.is_some() && mailchimp.list_id.is_some());
    if !writable {
        return Err(invalid(
            at,
            "needs sources.mailchimp with api_key and list_id (the member writes use them)",
        ));
    }
    Ok(())
}

fn validate_platform_pair(
    doc: &TenantDoc,
    at: &str,
    name: &str,
    settings: &TwoWayPairDoc,
) -> Result<(), TenantDocError> {
    if !doc.sources.platforms.contains_key(name) {
        return Err(invalid(
            at,
            format!(
                "needs sources.platforms.{name} (the platform whose contact changes the pair reads)"
            ),
        ));
    }
    let Some(api) = &settings.api else {
        return Err(invalid(
            &format!("{at}.api"),
            "is required: the partner's contacts API {\"url\", \"auth_header\", \"auth_value\"}",
        ));
    };
    validate_api(&format!("{at}.api"), api)
}

fn validate_api(at: &str, api: &PartnerApiDoc) -> Result<(), TenantDocError> {
    let field = |key: &str| format!("{at}.{key}");
    let url_problem = match api.url.strip_prefix(EMBEDDED_PREFIX) {
        Some(path) => embedded_path_problem(path),
        None => base_url_problem(&api.url),
    };
    if let Some(problem) = url_problem {
        return Err(invalid(
            &field("url"),
            format!("must be an http(s) URL, \"embedded\" or \"embedded:/path\": {problem}"),
        ));
    }
    non_empty(&field("auth_header"), &api.auth_header)?;
    if reqwest::header::HeaderName::from_bytes(api.auth_header.as_bytes()).is_err() {
        return Err(invalid(
            &field("auth_header"),
            "is not an HTTP header name (letters, digits and -)",
        ));
    }
    require_secret(&field("auth_value"), &api.auth_value)?;
    let value = api.auth_value.as_deref().unwrap_or_default();
    if reqwest::header::HeaderValue::from_str(value).is_err() {
        return Err(invalid(
            &field("auth_value"),
            "is not a usable header value (control characters or non-ASCII: a pasted newline?)",
        ));
    }
    Ok(())
}
