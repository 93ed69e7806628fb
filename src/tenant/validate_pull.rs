//! Validation of the tenant document's `pull` block (docs/pull.md "Destinations"): each
//! error names its field; secrets are never repeated in a reason.

use super::validate::{require_secret, within};
use super::{invalid, DestinationDoc, PullDoc, TenantDocError};

/// Longest destination name (it is part of checkpoint keys and file names).
pub const DESTINATION_NAME_MAX_LEN: usize = 64;

/// A destination name: 1 to 64 of `[a-z0-9_-]`.
pub fn destination_name_is_valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= DESTINATION_NAME_MAX_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

pub(super) fn validate_pull(pull: &PullDoc) -> Result<(), TenantDocError> {
    if pull.events.is_empty() {
        return Err(invalid("pull.events", "name at least one kind"));
    }
    for (index, event) in pull.events.iter().enumerate() {
        if steward_actors::pull::ChangeKind::parse(event).is_none() {
            return Err(invalid(
                "pull.events",
                format!(
                    "`{}` is not a kind: use gift, contact, project, event or contact_note",
                    event.escape_debug()
                ),
            ));
        }
        if pull.events[..index].contains(event) {
            return Err(invalid("pull.events", format!("`{event}` is listed twice")));
        }
    }
    if pull.poll_interval_s != 0 {
        within("pull.poll_interval_s", pull.poll_interval_s, 60, 7 * 86_400).map_err(|_| {
            invalid(
                "pull.poll_interval_s",
                "must be 0 (no backstop poll) or between 60 and 604800",
            )
        })?;
    }
    within("pull.retention_days", pull.retention_days, 1, 90)?;
    for (name, destination) in &pull.destinations {
        if !destination_name_is_valid(name) {
            return Err(invalid(
                &format!("pull.destinations.{}", name.escape_debug()),
                "destination names use 1 to 64 lowercase letters, digits, '_' and '-'",
            ));
        }
        validate_destination(name, destination)?;
    }
    Ok(())
}

fn validate_destination(name: &str, destination: &DestinationDoc) -> Result<(), TenantDocError> {
    let field = |key: &str| format!("pull.destinations.{name}.{key}");
    match destination {
        DestinationDoc::Webhook(webhook) => {
            if let Some(problem) = webhook_url_problem(&webhook.url) {
                return Err(invalid(&field("url"), problem));
            }
            require_secret(&field("secret"), &webhook.secret)?;
            let secret = webhook.secret.as_deref().unwrap_or_default();
            if let Err(problem) = crate::destinations::webhook::signing_key(secret) {
                return Err(invalid(&field("secret"), problem));
            }
            within(&field("max_per_s"), u64::from(webhook.max_per_s), 1, 1_000)?;
            within(&field("timeout_s"), webhook.timeout_s, 1, 120)?;
        }
        DestinationDoc::Postgres(postgres) => {
            require_secret(&field("dsn"), &postgres.dsn)?;
            let dsn = postgres.dsn.as_deref().unwrap_or_default();
            if let Err(problem) = crate::destinations::postgres::connect_config(dsn) {
                return Err(invalid(&field("dsn"), problem));
            }
            if !crate::destinations::postgres::identifier_is_valid(&postgres.schema) {
                return Err(invalid(
                    &field("schema"),
                    "must be 1 to 63 of lowercase letters, digits and '_', not starting with a digit",
                ));
            }
            within(&field("batch_max"), u64::from(postgres.batch_max), 1, 5_000)?;
        }
        DestinationDoc::Ndjson(ndjson) => {
            let dir_is_valid = std::path::Path::new(&ndjson.dir).is_absolute()
                && !ndjson.dir.chars().any(char::is_control);
            if !dir_is_valid {
                return Err(invalid(
                    &field("dir"),
                    "must be an absolute directory path (created when missing)",
                ));
            }
            within(&field("rotate_bytes"), ndjson.rotate_bytes, 1_024, 1 << 34)?;
            within(&field("rotate_s"), ndjson.rotate_s, 1, 86_400)?;
        }
    }
    Ok(())
}

/// Why `url` is not a usable webhook URL; `None` when it is. Paths and queries are fine;
/// credentials in the URL are not (the document stores the URL unsealed).
fn webhook_url_problem(url: &str) -> Option<&'static str> {
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("it contains spaces, tabs, newlines or control characters");
    }
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return Some("it does not parse as an http(s) URL");
    };
    if !matches!(parsed.scheme(), "http" | "https") {
        return Some("the scheme must be http or https");
    }
    if parsed.host_str().map_or(true, str::is_empty) {
        return Some("it has no host");
    }
    if parsed.port() == Some(0) {
        return Some("port 0 is not a port to connect to");
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Some("it carries a user name or password (user:pass@): the URL is stored unsealed; the secret signs every request instead");
    }
    if parsed.fragment().is_some() {
        return Some("a webhook URL has no fragment (#…)");
    }
    None
}
