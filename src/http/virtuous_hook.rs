//! `POST /hooks/{tenant}/virtuous`: Virtuous webhook deliveries confirm records at once
//! (ARCHITECTURE.md, "Confirmation"). The bulk reconciler stays the guarantee; this only makes it faster.
//!
//! - Body limit `virtuous_body_limit_bytes` (bulk deliveries are large) → `413`.
//! - HMAC-SHA256 of the raw body with the tenant's `virtuous.webhook_secret`, read from the
//!   header `virtuous.signature_header`, encoded as `virtuous.signature_encoding` (`base64`
//!   or `hex`), compared in constant time → `401 bad_signature`.
//! - The body is parsed by the one lenient parser, `crate::virtuous::webhook` (not JSON at
//!   all → `400 malformed_body`), and the typed events go to the tenant's Inbound actor
//!   through its handle: Inbound matches them (`steward_actors::gift_match`, the matcher the
//!   reconciler uses too), confirms (`GiftCreate` / `GiftUpdate` of a gift carrying one of our
//!   `transactionSource` + `transactionId`, reversals excepted; `ContactCreate` /
//!   `ContactUpdate` by a `contactReferences` entry), keeps the events it could not
//!   understand, and answers once all of it is durable; the route answers `200` then. Events
//!   that match nothing are answered `200` too; kept ones are listed by
//!   `GET /v1/tenants/{id}/inbound/unparsed` (docs/ingress.md).
//!
//! Test hooks (`runtime.test_hooks`, under `/v1` with the admin token):
//! `POST /v1/tenants/{id}/_test/reconcile` (a pass now) and
//! `POST /v1/tenants/{id}/_test/mark-submitted` (records → `submitted` + unconfirmed index,
//! their queue entries removed: the store half of a submitter's completion, for tests that
//! send the transactions to the sandbox themselves).

use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;
use steward_actors::gift_match::SourceNames;
use steward_actors::messages::DeliveryError;
use steward_actors::store::RecordKind;

use super::error::{ApiError, ErrorCode};
use super::read_body_limited;
use crate::app::AppState;
use crate::tenant::{TenantDoc, VirtuousSettings};
use crate::virtuous::webhook::parse_delivery;

/// The ingress route (main listener, no admin token: the signature authenticates).
pub fn routes(config: &mut web::ServiceConfig) {
    config.service(
        super::ingress::post_only("/hooks/{tenant}/virtuous").route(web::post().to(receive)),
    );
}

/// Test hooks, registered inside the `/v1` scope (admin token) and answering 404 unless
/// `runtime.test_hooks` is on.
pub fn test_routes(config: &mut web::ServiceConfig) {
    config
        .service(
            web::resource("/tenants/{id}/_test/reconcile").route(web::post().to(reconcile_now)),
        )
        .service(
            web::resource("/tenants/{id}/_test/mark-submitted")
                .route(web::post().to(mark_submitted)),
        );
}

/// No running tenant: `503 moved` when it was exported to another instance, else 404.
fn unknown(state: &AppState, tenant_id: &str) -> ApiError {
    if state.moved_tenants.contains(tenant_id) {
        return crate::tenants::moving::moved_error(tenant_id);
    }
    ApiError::new(ErrorCode::UnknownTenant, format!("no tenant `{tenant_id}`"))
}

async fn receive(
    state: web::Data<AppState>,
    path: web::Path<String>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let tenant_id = path.into_inner();
    // Cloned out of the map: a dashmap guard must not live across the awaits below.
    let doc = state
        .tenant_docs
        .get(&tenant_id)
        .map(|entry| std::sync::Arc::clone(entry.value()))
        .ok_or_else(|| unknown(&state, &tenant_id))?;
    let handle = state
        .runtime
        .tenant(&tenant_id)
        .ok_or_else(|| unknown(&state, &tenant_id))?;
    // Without a secret nothing can be verified: refused before the body is read.
    webhook_secret(&doc.virtuous)?;
    // Held until the answer: the body's reserved bytes, then the tenant's place in flight.
    let mut permit = state.admission.start(&tenant_id);
    let body = permit
        .read_body(&request, payload, state.config.virtuous_body_limit_bytes)
        .await?;
    verify_signature(&doc.virtuous, &request, &body)?;
    permit.take_place().await?;
    let delivery = parse_delivery(&body)
        .map_err(|err| ApiError::new(ErrorCode::MalformedBody, err.to_string()))?;
    let event = delivery.event.clone();
    // Inbound answers after the write is durable (invariant 1).
    let report = handle
        .deliver_virtuous(delivery, source_names(&doc))
        .await
        .map_err(|err| match err {
            DeliveryError::MailboxFull { .. } | DeliveryError::Unavailable => {
                ApiError::new(ErrorCode::Unavailable, err.to_string())
            }
            DeliveryError::Store(err) => ApiError::from(err),
        })?;
    tracing::debug!(tenant_id = %tenant_id.escape_debug(), event = %event.escape_debug(), models = report.models, confirmed = report.confirmed, duplicates = report.duplicates, unparsed = report.unparsed, "Virtuous webhook handled");
    Ok(HttpResponse::Ok().json(json!({
        "event": event, "models": report.models,
        "confirmed": report.confirmed, "duplicates": report.duplicates,
        "unparsed": report.unparsed,
    })))
}

fn bad_signature(message: &str) -> ApiError {
    ApiError::new(ErrorCode::BadSignature, message)
}

/// The tenant's Virtuous webhook secret; none → `401 bad_signature`.
fn webhook_secret(settings: &VirtuousSettings) -> Result<&str, ApiError> {
    settings
        .webhook_secret
        .as_deref()
        .filter(|secret| !secret.is_empty())
        .ok_or_else(|| bad_signature("the tenant has no virtuous.webhook_secret to verify with"))
}

/// HMAC-SHA256 of the raw body, compared in constant time (`verify_slice`).
fn verify_signature(
    settings: &VirtuousSettings,
    request: &HttpRequest,
    body: &[u8],
) -> Result<(), ApiError> {
    let secret = webhook_secret(settings)?;
    let header = request
        .headers()
        .get(settings.signature_header.as_str())
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .ok_or_else(|| bad_signature("the signature header is missing"))?;
    let given = if settings.signature_encoding.eq_ignore_ascii_case("hex") {
        hex::decode(header).ok()
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(header)
            .ok()
    }
    .ok_or_else(|| bad_signature("the signature is not validly encoded"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .expect("HMAC-SHA256 takes keys of any length");
    mac.update(body);
    mac.verify_slice(&given)
        .map_err(|_| bad_signature("the signature does not match the body"))
}

/// Which ingress sources write records under which `transactionSource`: Stripe's and each
/// platform's configured `transaction_source` (names no source claims fall back to their
/// lowercase form in the matcher).
fn source_names(doc: &TenantDoc) -> SourceNames {
    let mut pairs = Vec::new();
    if let Some(stripe) = &doc.sources.stripe {
        pairs.push((stripe.transaction_source.clone(), "stripe".to_string()));
    }
    for (name, platform) in &doc.sources.platforms {
        pairs.push((platform.transaction_source.clone(), name.clone()));
    }
    SourceNames { pairs }
}

/// The running tenant a test hook acts on (404 unless `runtime.test_hooks`).
fn test_hook_target(
    state: &AppState,
    id: &str,
) -> Result<steward_actors::runtime::TenantHandle, ApiError> {
    if !state.config.runtime.test_hooks {
        return Err(ApiError::new(ErrorCode::NotFound, "no such admin route"));
    }
    crate::tenant::validate_tenant_id(id)?;
    state
        .runtime
        .tenant(id)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no running tenant `{id}`")))
}

async fn reconcile_now(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let handle = test_hook_target(&state, &path)?;
    let requested = handle.reconcile_now();
    Ok(HttpResponse::Accepted().json(json!({"requested": requested})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MarkSubmitted {
    /// `gift` or `contact`.
    #[serde(default = "default_kind")]
    kind: String,
    source: String,
    transaction_source: String,
    source_ids: Vec<String>,
}

fn default_kind() -> String {
    "gift".into()
}

async fn mark_submitted(
    state: web::Data<AppState>,
    path: web::Path<String>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let handle = test_hook_target(&state, &path)?;
    let body = read_body_limited(&request, payload, state.config.body_limit_bytes).await?;
    let order: MarkSubmitted = serde_json::from_slice(&body)
        .map_err(|err| ApiError::new(ErrorCode::MalformedBody, err.to_string()))?;
    let kind = match order.kind.as_str() {
        "gift" => RecordKind::Gift,
        "contact" => RecordKind::Contact,
        _ => {
            return Err(ApiError::new(
                ErrorCode::InvalidField,
                "kind must be gift or contact",
            ))
        }
    };
    let moved = handle
        .mark_submitted_for_test(
            kind,
            &order.source,
            &order.transaction_source,
            &order.source_ids,
        )
        .await?;
    Ok(HttpResponse::Ok().json(json!({"submitted": moved})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_sources_resolve_to_the_tenant_s_ingress_sources() {
        // Goal: Stripe's and each platform's transaction source name their ingress source; unknown ones fall back to the lowercase name.
        let doc = TenantDoc::from_value(&json!({"id": "t", "name": "T",
            "virtuous": {"api_key": "k", "webhook_secret": "w"},
            "sources": {"stripe": {"signing_secret": "whsec_s", "transaction_source": "Card"},
                        "platforms": {"auction-co": {"secret": "p", "transaction_source": "AuctionCo"}}}}))
        .unwrap();
        let names = source_names(&doc);
        assert_eq!(
            names.ingress_sources("card"),
            vec!["stripe".to_string(), "card".to_string()]
        );
        assert_eq!(
            names.ingress_sources("AuctionCo"),
            vec!["auction-co".to_string(), "auctionco".to_string()]
        );
        assert_eq!(
            names.ingress_sources("Synthetic"),
            vec!["synthetic".to_string()]
        );
    }
}
