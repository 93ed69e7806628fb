//! `POST /hooks/{tenant}/platform/{source}`: a generic HMAC-signed JSON platform configured
//! in the tenant's `sources.platforms.{source}` (docs/ingress.md).

use actix_web::{web, HttpRequest, HttpResponse};
use jiff::tz::TimeZone;
use serde_json::json;

use super::{
    alert_once, answer, enqueue, now_ms, refuse, tenant_context, Answer, EventAlert, IngressError,
};
use crate::app::AppState;
use crate::http::error::ErrorCode;
use crate::sources::platform::{
    map_event, parse_event, verify_signature, PlatformMapped, PlatformSignatureError,
};
use crate::sources::SourceError;

/// Alert raised when a platform event cannot become a valid Virtuous body.
pub const ALERT_EVENT_REJECTED: &str = "platform_event_rejected";

pub(super) async fn receive(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, IngressError> {
    let (tenant_id, source) = path.into_inner();
    answer(
        "platform",
        handle(&state, &tenant_id, &source, &request, payload),
    )
    .await
}

async fn handle(
    state: &AppState,
    tenant_id: &str,
    source: &str,
    request: &HttpRequest,
    payload: web::Payload,
) -> Result<Answer, IngressError> {
    let context = tenant_context(state, tenant_id)?;
    // The tenant exists, so an unknown source is `not_found` (not `unknown_tenant`): the
    // operator learns which half of the URL is wrong.
    let Some(settings) = context.doc.sources.platforms.get(source) else {
        return Err(refuse(
            ErrorCode::NotFound,
            format!(
                "no platform source `{}` for this tenant (sources.platforms)",
                source.chars().take(80).collect::<String>()
            ),
        ));
    };
    // A platform that is only polled has no webhook path (no secret to verify with).
    if settings.secret.is_none() && settings.poll.is_some() {
        return Err(refuse(
            ErrorCode::SourceNotConfigured,
            format!(
                "the platform source `{source}` is polled only: it has no webhook route (set sources.platforms.{source}.secret to receive webhooks)"
            ),
        ));
    }
    if settings.secret.is_none() && settings.previous_secret.is_none() {
        return Err(refuse(
            ErrorCode::BadSignature,
            "the tenant has no secret for this platform source to verify with",
        ));
    }
    // Held until the answer: the body's reserved bytes, then the tenant's place in flight.
    let mut permit = state.admission.start(tenant_id);
    let raw = permit
        .read_body(request, payload, state.config.body_limit_bytes)
        .await?;
    let now_ms = now_ms();
    let now_s = (now_ms / 1000) as i64;
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
    };
    verify_signature(settings, header, &raw, now_s).map_err(|err| {
        tracing::info!(tenant_id, source, error = %crate::telemetry::escaped(&err), "platform delivery refused");
        let code = match err {
            PlatformSignatureError::StaleTimestamp { .. } => ErrorCode::StaleTimestamp,
            _ => ErrorCode::BadSignature,
        };
        refuse(code, err.to_string())
    })?;
    permit.take_place().await?;
    let event = parse_event(settings, &raw)
        .map_err(|err| refuse(ErrorCode::MalformedBody, err.to_string()))?;
    let tz = TimeZone::get(&context.doc.time_zone).unwrap_or(TimeZone::UTC);
    let event_id = event.id.as_str();
    match map_event(source, settings, &event, &tz, now_s) {
        Ok(PlatformMapped::Ignored { reason }) => {
            Ok(Answer::ignored("platform", event_id, &reason))
        }
        Ok(PlatformMapped::Command(command)) => {
            let outcomes = enqueue(&context.handle, vec![command], now_ms).await?;
            Ok(Answer::enqueued(&outcomes, event_id))
        }
        Err(SourceError::Malformed(reason)) => Err(refuse(ErrorCode::MalformedBody, reason)),
        Err(err @ SourceError::Mapping { .. }) => {
            // Same choice as Stripe: a mapping error does not fix itself on a retry, so the
            // event is kept with an alert and answered 200 `rejected` (docs/ingress.md).
            let reason = err.to_string();
            tracing::warn!(tenant_id, source, event_id, reason = %crate::telemetry::escaped(&reason), "platform event rejected");
            let message = format!("{source} event {event_id}: {reason}");
            let rejected = Answer::ok("rejected", event_id, json!({"reason": reason}));
            alert_once(
                &context.handle,
                EventAlert {
                    mark_name: &format!("platform:{source}:event"),
                    event_id,
                    alert_code: ALERT_EVENT_REJECTED,
                    message: &message,
                    raw_event: &raw,
                },
                rejected,
            )
            .await
        }
    }
}
