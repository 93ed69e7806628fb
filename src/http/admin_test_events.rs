//! `POST /v1/tenants/{id}/test-events/stripe` with `{"kind": "payment"|"subscription"|"refund"}`
//! (docs/api.md "Test events"): Steward builds test-mode Stripe events (`livemode: false`)
//! for one new payment, signs them with the tenant's signing secret and posts them to its own
//! Stripe ingress route, so they take the real path: signature, dedup, mapping, queue. Only a
//! tenant with `sources.stripe.accept_test_events` takes them; another one acknowledges and
//! ignores them, as it would Stripe's, and the answer says so. An event the ingress refuses
//! (busy, not ready) makes the answer `503 unavailable` with the ingress's status.

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::error::{ApiError, ErrorCode};
use super::openapi::{PayloadTooLarge, RunningTenantErrors, TenantPath};
use super::{parse_json, read_body_limited};
use crate::app::AppState;
use crate::traffic::{generate, sign, Expected, TrafficOptions};

/// How long one delivery to the ingress route may take.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(15);

pub fn routes(config: &mut web::ServiceConfig) {
    config.service(
        web::resource("/tenants/{id}/test-events/stripe").route(web::post().to(trigger_stripe)),
    );
}

/// What the test events stand for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TestEventKind {
    /// A one-time payment (`payment_intent.succeeded` or `charge.succeeded`).
    Payment,
    /// A subscription's payment (its invoice and payment events).
    Subscription,
    /// A one-time payment, then its full refund (`charge.refunded`).
    Refund,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerRequest {
    kind: TestEventKind,
}

/// The options that make one payment of `kind`, with ids drawn from `seed`.
fn traffic_options(kind: TestEventKind, seed: u64, now_s: i64) -> TrafficOptions {
    TrafficOptions {
        seed,
        payments: 1,
        subscription_share: if kind == TestEventKind::Subscription {
            1.0
        } else {
            0.0
        },
        both_events_share: 0.0,
        charge_only_share: 0.0,
        refunds: usize::from(kind == TestEventKind::Refund),
        customer_share: 0.0,
        redelivery_share: 0.0,
        now_s,
    }
}

#[utoipa::path(
    post,
    path = "/v1/tenants/{id}/test-events/stripe",
    tag = "tenants",
    params(TenantPath),
    request_body(content = TriggerRequest, example = json!({"kind": "payment"})),
    responses(
        (status = 202, description = "`{\"kind\", \"payment_id\", \"donor_email\", \"taken\", \"hint\", \"events\": [{\"id\", \"type\", \"status\", \"answer\"}], \"record\"}`", body = Object),
        RunningTenantErrors,
        (status = 413, response = PayloadTooLarge),
    )
)]
async fn trigger_stripe(
    state: web::Data<AppState>,
    path: web::Path<String>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let tenant_id = path.into_inner();
    state.stores.ensure_registered(&tenant_id)?;
    let raw = read_body_limited(&request, payload, state.config.body_limit_bytes).await?;
    let body = parse_json(&raw)?;
    let trigger: TriggerRequest = serde_json::from_value(body).map_err(|error| {
        ApiError::new(
            ErrorCode::InvalidField,
            format!("{error} (send {{\"kind\": \"payment\" | \"subscription\" | \"refund\"}})"),
        )
    })?;
    if state.moved_tenants.contains(&tenant_id) {
        return Err(crate::tenants::moving::moved_error(&tenant_id));
    }
    let doc = state.tenant_docs.get(&tenant_id).map(|doc| doc.clone());
    let Some(doc) = doc else {
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            format!("tenant `{tenant_id}` is not running (see its status and the log)"),
        ));
    };
    let stripe = doc.sources.stripe.as_ref();
    let Some(secret) = stripe.and_then(|stripe| stripe.signing_secret.clone()) else {
        return Err(ApiError::new(
            ErrorCode::SourceNotConfigured,
            format!("tenant `{tenant_id}` has no Stripe source with a signing_secret"),
        ));
    };
    let taken = stripe.is_some_and(|stripe| stripe.accept_test_events);
    let now_s = steward_actors::ports::now_ms() as i64 / 1000;
    let traffic = generate(&traffic_options(trigger.kind, rand::random(), now_s));
    let payment_id = traffic.unique_payment_ids().pop().unwrap_or_default();
    let donor_email = traffic
        .payments
        .first()
        .map(|payment| payment.donor.email.clone());
    let mut events = traffic.events;
    // The refund after what it refunds, as Stripe sends them.
    events.sort_by_key(|event| matches!(event.expected, Expected::Refund { .. }));
    let url = format!("{}/hooks/{tenant_id}/stripe", state.own_ingress_url);
    let client = reqwest::Client::builder()
        .timeout(DELIVERY_TIMEOUT)
        // The engine's own listener: never through a proxy set for Virtuous's calls.
        .no_proxy()
        .build()
        .map_err(|error| ApiError::new(ErrorCode::Internal, error.to_string()))?;
    let mut delivered = Vec::with_capacity(events.len());
    for event in &events {
        let response = client
            .post(&url)
            .header("Content-Type", "application/json")
            .header(
                "Stripe-Signature",
                sign(&secret, event.body.as_bytes(), now_s),
            )
            .body(event.body.clone())
            .send()
            .await
            .map_err(|error| {
                ApiError::new(
                    ErrorCode::Unavailable,
                    format!("the Stripe ingress route at {url} did not answer: {error}"),
                )
            })?;
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            // The ingress refused it (busy, not ready, a secret changed meanwhile): say so now
            // rather than let the caller wait for a record that will not come.
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                format!(
                    "the Stripe ingress route answered {} to test event {} ({}): {answer}",
                    status.as_u16(),
                    event.id,
                    event.event_type
                ),
            ));
        }
        delivered.push(json!({"id": event.id, "type": event.event_type,
                              "status": status.as_u16(), "answer": answer}));
    }
    tracing::info!(tenant_id = %tenant_id, kind = ?trigger.kind, payment_id = %payment_id, taken, "test-mode Stripe events delivered");
    let hint = (!taken).then_some(
        "the tenant ignores test-mode events: set sources.stripe.accept_test_events to true to take them",
    );
    Ok(HttpResponse::Accepted().json(json!({
        "kind": trigger.kind,
        "payment_id": payment_id,
        "donor_email": donor_email,
        "taken": taken,
        "hint": hint,
        "events": delivered,
        "record": format!("/v1/tenants/{tenant_id}/records/gift/stripe/{payment_id}"),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_makes_one_payment_of_its_shape() {
        // Goal: a payment is one gift event; a subscription's events are a subscription
        // payment's; a refund adds one charge.refunded after the payment.
        let count = |kind, expected: fn(&Expected) -> bool| {
            let traffic = generate(&traffic_options(kind, 7, 1_767_225_600));
            assert_eq!(traffic.payments.len(), 1);
            traffic
                .events
                .iter()
                .filter(|e| expected(&e.expected))
                .count()
        };
        let is_gift = |e: &Expected| matches!(e, Expected::Gift { .. });
        let is_refund = |e: &Expected| matches!(e, Expected::Refund { .. });
        let is_subscription = |e: &Expected| {
            matches!(
                e,
                Expected::RecurringGift { .. } | Expected::Link { .. } | Expected::Hold { .. }
            )
        };
        assert_eq!(count(TestEventKind::Payment, is_gift), 1);
        assert_eq!(count(TestEventKind::Payment, is_refund), 0);
        assert!(count(TestEventKind::Subscription, is_subscription) >= 1);
        assert_eq!(count(TestEventKind::Subscription, is_gift), 0);
        assert_eq!(count(TestEventKind::Refund, is_refund), 1);
    }
}
