//! `GET|POST /hooks/{tenant}/mailchimp?key=…`: the Mailchimp audience webhook
//! (docs/ingress.md "Mailchimp", docs/polling.md "Mailchimp").
//!
//! Mailchimp signs nothing: the URL's `key` (the tenant's `sources.mailchimp.url_key`,
//! compared in constant time) is the proof of origin, checked before the body is read. A
//! bare `GET` and an empty `POST` (Mailchimp's URL validation) answer `200`. Never `410`:
//! Mailchimp disables a webhook for good on a 410. The key is never logged (the query string
//! is not logged anywhere) nor echoed.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{answer, enqueue, now_ms, refuse, tenant_context, Answer, IngressError};
use crate::app::AppState;
use crate::http::error::ErrorCode;
use crate::sources::mailchimp::webhook::{parse_form, WebhookEvent};
use crate::sources::mailchimp::SOURCE;
use crate::sources::SourceError;
use crate::tenant::MailchimpSettings;

/// `GET`: Mailchimp's URL validation, answered once tenant, source and key are right (so a
/// mistyped URL fails when it is saved in Mailchimp, not later).
pub(super) async fn validate(
    state: web::Data<AppState>,
    path: web::Path<String>,
    request: HttpRequest,
) -> Result<HttpResponse, IngressError> {
    let tenant_id = path.into_inner();
    answer(SOURCE, async {
        let _ = checked_settings(&state, &tenant_id, &request)?;
        Ok(validated())
    })
    .await
}

pub(super) async fn receive(
    state: web::Data<AppState>,
    path: web::Path<String>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, IngressError> {
    let tenant_id = path.into_inner();
    answer(SOURCE, handle(&state, &tenant_id, &request, payload)).await
}

fn validated() -> Answer {
    Answer {
        status: StatusCode::OK,
        outcome: "validated",
        body: json!({"status": "validated"}),
    }
}

/// Everything that refuses whatever the body is: 404 `unknown_tenant`, 404
/// `source_not_configured` (no `sources.mailchimp.url_key`), 401 `unauthorized` (key
/// missing or wrong). Returns the tenant's context and its Mailchimp settings.
fn checked_settings(
    state: &AppState,
    tenant_id: &str,
    request: &HttpRequest,
) -> Result<(super::TenantContext, MailchimpSettings), IngressError> {
    let context = tenant_context(state, tenant_id)?;
    let settings = context
        .doc
        .sources
        .mailchimp
        .as_ref()
        .filter(|settings| settings.url_key.is_some())
        .cloned()
        .ok_or_else(|| {
            refuse(
                ErrorCode::SourceNotConfigured,
                "the Mailchimp webhook is not configured for this tenant (sources.mailchimp.url_key)",
            )
        })?;
    let expected = settings.url_key.as_deref().unwrap_or_default();
    if !key_matches(request.query_string(), expected) {
        tracing::info!(
            tenant_id,
            "mailchimp delivery refused: missing or wrong key"
        );
        return Err(refuse(
            ErrorCode::Unauthorized,
            "missing or wrong `key` in the webhook URL",
        ));
    }
    Ok((context, settings))
}

/// Whether the query's `key` is `expected`. Compared as SHA-256 digests in constant time:
/// neither the bytes nor the length of the key leak through timing.
fn key_matches(query: &str, expected: &str) -> bool {
    let Some(given) = form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "key")
        .map(|(_, value)| value.into_owned())
    else {
        return false;
    };
    let given = Sha256::digest(given.as_bytes());
    let expected = Sha256::digest(expected.as_bytes());
    bool::from(given.ct_eq(&expected))
}

async fn handle(
    state: &AppState,
    tenant_id: &str,
    request: &HttpRequest,
    payload: web::Payload,
) -> Result<Answer, IngressError> {
    let (context, settings) = checked_settings(state, tenant_id, request)?;
    // Held until the answer: the body's reserved bytes, then the tenant's place in flight.
    let mut permit = state.admission.start(tenant_id);
    let raw = permit
        .read_body(request, payload, state.config.body_limit_bytes)
        .await?;
    if raw.iter().all(u8::is_ascii_whitespace) {
        // Some report Mailchimp validating with an empty POST.
        return Ok(validated());
    }
    permit.take_place().await?;
    let event = match parse_form(&raw) {
        Ok(event) => event,
        Err(SourceError::Malformed(reason)) => {
            return Err(refuse(ErrorCode::MalformedBody, reason));
        }
        Err(err @ SourceError::Mapping { .. }) => {
            return Err(refuse(ErrorCode::MalformedBody, err.to_string()));
        }
    };
    match event {
        WebhookEvent::Ignored { event_type, reason } => {
            Ok(Answer::ignored(SOURCE, &event_type, &reason))
        }
        WebhookEvent::Member {
            event_type: _,
            version,
        } => {
            let fact_id = version.fact_id();
            let command = version.command(&settings.reference_source);
            let outcomes = enqueue(&context.handle, vec![command], now_ms()).await?;
            Ok(Answer::enqueued(&outcomes, &fact_id))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::key_matches;

    #[test]
    fn only_the_exact_key_matches() {
        // Goal: the key is read from the query (percent-decoded, among other parameters);
        // missing, empty, longer, shorter or different keys do not match.
        assert!(key_matches("key=s3cr%2Ft", "s3cr/t"));
        assert!(key_matches("a=1&key=s3cret&b=2", "s3cret"));
        assert!(!key_matches("", "s3cret"));
        assert!(!key_matches("key=", "s3cret"));
        assert!(!key_matches("key=s3cret2", "s3cret"));
        assert!(!key_matches("key=s3cre", "s3cret"));
        assert!(!key_matches("kee=s3cret", "s3cret"));
    }
}
