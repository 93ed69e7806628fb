//! `POST /hooks/{tenant}/stripe` (docs/ingress.md "Stripe").

use actix_web::{web, HttpRequest, HttpResponse};
use jiff::tz::TimeZone;
use serde_json::json;

use super::{
    alert_once, answer, enqueue, enqueue_with_alerts, now_ms, refuse, stripe_link, tenant_context,
    Answer, EventAlert, IngressError, TenantContext,
};
use crate::app::AppState;
use crate::http::error::ErrorCode;
use crate::sources::stripe::{
    map_event, parse_event, verify_signature, ApiEra, Mapped, SignatureError, StripeEvent,
    StripeMapping,
};
use crate::sources::SourceError;
use crate::tenant::StripeSettings;

/// Source-state name of Stripe event marks (events that alerted or were rejected).
pub(super) const EVENT_MARKS: &str = "stripe_event";
/// Alert raised when an event cannot become a valid Virtuous body.
pub const ALERT_EVENT_REJECTED: &str = "stripe_event_rejected";

pub(super) async fn receive(
    state: web::Data<AppState>,
    path: web::Path<String>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, IngressError> {
    let tenant_id = path.into_inner();
    answer("stripe", handle(&state, &tenant_id, &request, payload)).await
}

async fn handle(
    state: &AppState,
    tenant_id: &str,
    request: &HttpRequest,
    payload: web::Payload,
) -> Result<Answer, IngressError> {
    let context = tenant_context(state, tenant_id)?;
    // Everything that refuses whatever the body is comes before the body is read.
    let Some(settings) = context.doc.sources.stripe.as_ref() else {
        return Err(refuse(
            ErrorCode::NotFound,
            "Stripe is not configured for this tenant (sources.stripe)",
        ));
    };
    if settings.signing_secret.is_none() && settings.previous_signing_secret.is_none() {
        return Err(refuse(
            ErrorCode::BadSignature,
            "the tenant has no sources.stripe.signing_secret to verify with",
        ));
    }
    // Held until the answer: the body's reserved bytes, then the tenant's place in flight.
    let mut permit = state.admission.start(tenant_id);
    let raw = permit
        .read_body(request, payload, state.config.body_limit_bytes)
        .await?;
    let now_ms = now_ms();
    let now_s = (now_ms / 1000) as i64;
    verify(tenant_id, request, &raw, settings, now_s)?;
    permit.take_place().await?;
    let event =
        parse_event(&raw).map_err(|err| refuse(ErrorCode::MalformedBody, err.to_string()))?;
    let tz = TimeZone::get(&context.doc.time_zone).unwrap_or(TimeZone::UTC);
    let mapping = StripeMapping::from_settings(settings);
    let event_id = event.id.as_str();
    let mapped = match map_event(&event, &mapping, &tz, now_s) {
        Ok(mapped) => mapped,
        Err(SourceError::Malformed(reason)) => {
            return Err(refuse(ErrorCode::MalformedBody, reason));
        }
        Err(err @ SourceError::Mapping { .. }) => {
            // 200, not 4xx: Stripe would retry a 4xx for three days and a mapping error does
            // not fix itself. The event is kept (with the reason) for staff; see docs/ingress.md.
            let reason = err.to_string();
            tracing::warn!(tenant_id, event_id, reason = %crate::telemetry::escaped(&reason), "stripe event rejected");
            let message = format!("event {event_id}: {reason}");
            let rejected = Answer::ok("rejected", event_id, json!({"reason": reason}));
            return alert_once(
                &context.handle,
                EventAlert {
                    mark_name: EVENT_MARKS,
                    event_id,
                    alert_code: ALERT_EVENT_REJECTED,
                    message: &message,
                    raw_event: &raw,
                },
                rejected,
            )
            .await;
        }
    };
    hand_over(&context, &event, mapped, &raw, now_ms).await
}

/// The `Stripe-Signature` over the raw body, with the current or the previous secret.
fn verify(
    tenant_id: &str,
    request: &HttpRequest,
    raw: &[u8],
    settings: &StripeSettings,
    now_s: i64,
) -> Result<(), IngressError> {
    let header = request
        .headers()
        .get("Stripe-Signature")
        .and_then(|value| value.to_str().ok())
        .ok_or_else(|| {
            refuse(
                ErrorCode::BadSignature,
                "the Stripe-Signature header is missing (or not ASCII)",
            )
        })?;
    let secrets: Vec<&str> = [
        settings.signing_secret.as_deref(),
        settings.previous_signing_secret.as_deref(),
    ]
    .into_iter()
    .flatten()
    .collect();
    verify_signature(header, raw, &secrets, settings.tolerance_s, now_s).map_err(|err| {
        tracing::info!(tenant_id, error = %crate::telemetry::escaped(&err), "stripe delivery refused");
        let code = match err {
            SignatureError::StaleTimestamp { .. } => ErrorCode::StaleTimestamp,
            SignatureError::Malformed(_) | SignatureError::NoMatch => ErrorCode::BadSignature,
        };
        refuse(code, err.to_string())
    })
}

/// The tenant takes test-mode events (`sources.stripe.accept_test_events`).
fn accepts_test_events(context: &TenantContext) -> bool {
    let stripe = context.doc.sources.stripe.as_ref();
    stripe.is_some_and(|settings| settings.accept_test_events)
}

/// Hands what the event maps to over to the tenant's Capture and answers Stripe.
async fn hand_over(
    context: &TenantContext,
    event: &StripeEvent,
    mapped: Mapped,
    raw: &[u8],
    now_ms: u64,
) -> Result<Answer, IngressError> {
    let tenant_id = context.handle.tenant_id();
    let event_id = event.id.as_str();
    match mapped {
        Mapped::Ignored { reason } => {
            tracing::debug!(tenant_id, event_id, reason = %crate::telemetry::escaped(&reason), "stripe event ignored");
            if !event.livemode && !accepts_test_events(context) {
                // Counted on the tenant, with a one-time hint alert (docs/ingress.md).
                context.handle.test_event_ignored();
            }
            Ok(Answer::ignored("stripe", event_id, &reason))
        }
        Mapped::Commands { commands, alerts } if alerts.is_empty() => {
            let outcomes = enqueue(&context.handle, commands, now_ms).await?;
            Ok(Answer::enqueued(&outcomes, event_id))
        }
        Mapped::Commands { commands, alerts } => {
            // A dispute's alert goes with its first delivery only, in the same flush as its
            // entries (two calls could lose it to a 503 between them).
            let outcomes = enqueue_with_alerts(&context.handle, commands, &alerts, now_ms).await?;
            Ok(Answer::enqueued(&outcomes, event_id))
        }
        Mapped::Alert(note) => {
            let alerted = Answer::ok("alerted", event_id, json!({"alert": note.code}));
            alert_once(
                &context.handle,
                EventAlert {
                    mark_name: EVENT_MARKS,
                    event_id,
                    alert_code: &note.code,
                    message: &note.message,
                    raw_event: raw,
                },
                alerted,
            )
            .await
        }
        Mapped::Hold {
            payment_id,
            until_s,
            gift,
        } => {
            let hold = stripe_link::Hold {
                payment_id,
                until_s,
                gift,
            };
            stripe_link::hold(context, hold, event_id, now_ms).await
        }
        // invoice_payment.paid only exists from basil on; on an older API version the
        // invoice.paid gift already carries the subscription, so a link has nothing to do.
        Mapped::Link(_) if event.api_version.is_some() && event.api_era() == ApiEra::Legacy => {
            Ok(Answer::ignored(
                "stripe",
                event_id,
                "subscription link on an API version before 2025-03-31: invoice.paid creates the gift",
            ))
        }
        Mapped::Link(part) => stripe_link::link(context, part, event_id).await,
    }
}
