//! `POST /hooks/{tenant}/virtuous`: Virtuous webhook deliveries confirm records at once
//! (DESIGN.md §3). The bulk reconciler stays the guarantee; this only makes it faster.
//!
//! - Body limit `virtuous_body_limit_bytes` (bulk deliveries are large) → `413`.
//! - HMAC-SHA256 of the raw body with the tenant's `virtuous.webhook_secret`, read from the
//!   header `virtuous.signature_header`, encoded as `virtuous.signature_encoding` (`base64`
//!   or `hex`), compared in constant time → `401 bad_signature`.
//! - Single `{"event", "gift"|"contact"}` and bulk `{"event", "models": [{"gift"}…]}` forms
//!   (the sandbox's sender, `src/sandbox/webhooks.rs`, is the spec) → else `400 malformed_body`.
//! - `GiftCreate` / `GiftUpdate` whose gift carries a `transactionSource` + `transactionId`
//!   of ours confirm the record (reversals excepted); `ContactCreate` / `ContactUpdate`
//!   confirm a submitted contact named by one of its `contactReferences`. The records are
//!   durable before the `200`. Events that match nothing are answered `200` too.
//!
//! Test hooks (`runtime.test_hooks`, under `/v1` with the admin token):
//! `POST /v1/tenants/{id}/_test/reconcile` (a pass now) and
//! `POST /v1/tenants/{id}/_test/mark-submitted` (records → `submitted` + unconfirmed index,
//! their queue entries removed: the store half of a submitter's completion, for tests that
//! send the transactions to the sandbox themselves).

use std::collections::BTreeMap;

use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Sha256;
use steward_actors::reconciler::pass::report_duplicate;
use steward_actors::store::confirm_ops::{ConfirmOutcome, Confirmation};
use steward_actors::store::{Lane, RecordKind, TenantStore, Unconfirmed};

use super::error::{ApiError, ErrorCode};
use super::{parse_json, read_body_limited};
use crate::app::AppState;
use crate::tenant::{TenantDoc, VirtuousSettings};
use crate::tenants::now_ms;

/// `giftType` of a reversal (never confirms one of our gifts).
const REVERSING_GIFT_TYPE: &str = "ReversingTransaction";

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
        .route(
            "/tenants/{id}/_test/reconcile",
            web::post().to(reconcile_now),
        )
        .route(
            "/tenants/{id}/_test/mark-submitted",
            web::post().to(mark_submitted),
        );
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
        .ok_or_else(|| {
            ApiError::new(ErrorCode::UnknownTenant, format!("no tenant `{tenant_id}`"))
        })?;
    let body = read_body_limited(&request, payload, state.config.virtuous_body_limit_bytes).await?;
    verify_signature(&doc.virtuous, &request, &body)?;
    let delivery = parse_delivery(&body)?;
    let tenant_store = state.store.tenant(&tenant_id)?;
    let confirmations = resolve(&doc, &delivery.matches);
    let now = now_ms();
    let outcomes = tenant_store.confirm_records(&confirmations, now)?;
    let (mut confirmed, mut duplicates) = (0u64, 0u64);
    for (confirmation, outcome) in confirmations.iter().zip(&outcomes) {
        match outcome {
            ConfirmOutcome::Confirmed { .. } => confirmed += 1,
            ConfirmOutcome::DuplicateDetected { all_ids, .. } => {
                duplicates += 1;
                report_duplicate(&tenant_store, &tenant_id, confirmation, all_ids, now);
            }
            _ => {}
        }
    }
    // Write first, answer after (invariant 1).
    state.store.durable().await?;
    steward_actors::metrics::count_confirmations("webhook", confirmed + duplicates);
    tracing::debug!(tenant_id = %tenant_id, event = %delivery.event, models = delivery.models, confirmed, duplicates, "Virtuous webhook handled");
    Ok(HttpResponse::Ok().json(json!({
        "event": delivery.event, "models": delivery.models,
        "confirmed": confirmed, "duplicates": duplicates,
    })))
}

fn bad_signature(message: &str) -> ApiError {
    ApiError::new(ErrorCode::BadSignature, message)
}

/// HMAC-SHA256 of the raw body, compared in constant time (`verify_slice`).
fn verify_signature(
    settings: &VirtuousSettings,
    request: &HttpRequest,
    body: &[u8],
) -> Result<(), ApiError> {
    let secret = settings
        .webhook_secret
        .as_deref()
        .filter(|secret| !secret.is_empty())
        .ok_or_else(|| bad_signature("the tenant has no virtuous.webhook_secret to verify with"))?;
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

/// What a delivery names: one entry per gift or contact reference that could be ours.
#[derive(Debug, PartialEq, Eq)]
struct Delivery {
    event: String,
    models: usize,
    matches: Vec<Match>,
}

/// A Virtuous record carrying one of our idempotency pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Match {
    kind: RecordKind,
    /// `transactionSource` (gifts) / reference `source` (contacts).
    transaction_source: String,
    /// `transactionId` (gifts) / reference `id` (contacts).
    transaction_id: String,
    virtuous_id: String,
}

/// Parses the single or bulk form. Unknown events parse (and match nothing).
fn parse_delivery(body: &[u8]) -> Result<Delivery, ApiError> {
    let malformed = |message: &str| ApiError::new(ErrorCode::MalformedBody, message);
    let payload = parse_json(body)?;
    let event = payload
        .get("event")
        .and_then(Value::as_str)
        .ok_or_else(|| malformed("a Virtuous webhook needs an `event` name"))?
        .to_string();
    let models: Vec<&Value> = match payload.get("models") {
        Some(Value::Array(models)) => models.iter().collect(),
        Some(_) => return Err(malformed("`models` must be an array")),
        None => vec![&payload],
    };
    let mut matches = Vec::new();
    for model in &models {
        if !model.is_object() {
            return Err(malformed("each model must be an object"));
        }
        match event.as_str() {
            "GiftCreate" | "GiftUpdate" => matches.extend(gift_match(model.get("gift"))),
            "ContactCreate" | "ContactUpdate" => {
                matches.extend(contact_matches(model.get("contact")))
            }
            _ => {}
        }
    }
    Ok(Delivery {
        event,
        models: models.len(),
        matches,
    })
}

/// Text of a field that may be a string or a number.
fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(text) if !text.is_empty() => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

fn gift_match(gift: Option<&Value>) -> Option<Match> {
    let gift = gift?;
    let is_reversal = text(gift.get("reversedGiftId")).is_some()
        || gift
            .get("giftType")
            .and_then(Value::as_str)
            .is_some_and(|kind| kind.eq_ignore_ascii_case(REVERSING_GIFT_TYPE));
    if is_reversal {
        return None;
    }
    Some(Match {
        kind: RecordKind::Gift,
        transaction_source: text(gift.get("transactionSource"))?,
        transaction_id: text(gift.get("transactionId"))?,
        virtuous_id: text(gift.get("id"))?,
    })
}

fn contact_matches(contact: Option<&Value>) -> Vec<Match> {
    let Some(contact) = contact else {
        return Vec::new();
    };
    let Some(virtuous_id) = text(contact.get("id")) else {
        return Vec::new();
    };
    let Some(Value::Array(references)) = contact.get("contactReferences") else {
        return Vec::new();
    };
    references
        .iter()
        .filter_map(|reference| {
            Some(Match {
                kind: RecordKind::Contact,
                transaction_source: text(reference.get("source"))?,
                transaction_id: text(reference.get("id"))?,
                virtuous_id: virtuous_id.clone(),
            })
        })
        .collect()
}

/// The ingress sources whose records may use `transaction_source`: the configured ones
/// (Stripe, platforms) whose `transaction_source` it is, and its lowercase form (the
/// convention of sources without configuration, such as the test hook's `synthetic`).
fn ingress_sources(doc: &TenantDoc, transaction_source: &str) -> Vec<String> {
    let mut sources = Vec::new();
    if let Some(stripe) = &doc.sources.stripe {
        if stripe
            .transaction_source
            .eq_ignore_ascii_case(transaction_source)
        {
            sources.push("stripe".to_string());
        }
    }
    for (name, platform) in &doc.sources.platforms {
        if platform
            .transaction_source
            .eq_ignore_ascii_case(transaction_source)
        {
            sources.push(name.clone());
        }
    }
    let lowercase = transaction_source.to_lowercase();
    if !sources.contains(&lowercase) {
        sources.push(lowercase);
    }
    sources
}

/// One confirmation per candidate record, every Virtuous id of the delivery merged per
/// record (two gifts with one transactionId in one bulk delivery are a duplicate at once).
fn resolve(doc: &TenantDoc, matches: &[Match]) -> Vec<Confirmation> {
    // Keyed by (is a contact, ingress source, source id): ordered, so answers are stable.
    let mut merged: BTreeMap<(bool, String, String), Vec<String>> = BTreeMap::new();
    for found in matches {
        for source in ingress_sources(doc, &found.transaction_source) {
            let is_contact = found.kind == RecordKind::Contact;
            merged
                .entry((is_contact, source, found.transaction_id.clone()))
                .or_default()
                .push(found.virtuous_id.clone());
        }
    }
    merged
        .into_iter()
        .map(
            |((is_contact, source, source_id), virtuous_ids)| Confirmation {
                kind: if is_contact {
                    RecordKind::Contact
                } else {
                    RecordKind::Gift
                },
                source,
                source_id,
                virtuous_ids,
                via: "webhook",
            },
        )
        .collect()
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
    let tenant_store = state.store.tenant(handle.tenant_id())?;
    let now = now_ms();
    dequeue_records(&tenant_store, kind, &order.source, &order.source_ids)?;
    let submitted: Vec<Unconfirmed> = order
        .source_ids
        .iter()
        .map(|source_id| Unconfirmed {
            kind,
            source: order.source.clone(),
            source_id: source_id.clone(),
            transaction_source: order.transaction_source.clone(),
            transaction_id: source_id.clone(),
            submitted_at_ms: now,
        })
        .collect();
    let moved = tenant_store.mark_submitted(&submitted, now)?;
    state.store.durable().await?;
    Ok(HttpResponse::Ok().json(json!({"submitted": moved})))
}

/// Removes the records' latest queue entries (whatever the lane), so no submitter sends
/// what the test already sent.
fn dequeue_records(
    tenant_store: &TenantStore,
    kind: RecordKind,
    source: &str,
    source_ids: &[String],
) -> Result<(), ApiError> {
    let mut entries = Vec::new();
    for source_id in source_ids {
        if let Some(seq) = tenant_store
            .get_record(kind, source, source_id)?
            .and_then(|record| record.last_seq)
        {
            entries.extend(Lane::ALL.iter().map(|lane| (*lane, seq)));
        }
    }
    tenant_store.remove_queue_entries(&entries)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_and_bulk_forms_yield_our_matches_only() {
        // Goal: both forms parse; reversals, gifts without ids and unknown events match nothing; contacts match by reference.
        let single = json!({"event": "GiftCreate", "gift": {"id": 7, "transactionSource": "Stripe", "transactionId": "pi_1"}});
        let delivery = parse_delivery(single.to_string().as_bytes()).unwrap();
        assert_eq!(delivery.models, 1);
        assert_eq!(
            delivery.matches,
            vec![Match {
                kind: RecordKind::Gift,
                transaction_source: "Stripe".into(),
                transaction_id: "pi_1".into(),
                virtuous_id: "7".into()
            }]
        );
        let bulk = json!({"event": "GiftCreate", "models": [
            {"gift": {"id": 8, "transactionSource": "Stripe", "transactionId": 42}},
            {"gift": {"id": 9, "transactionSource": "Stripe", "transactionId": "pi_1-reversal",
                      "giftType": "ReversingTransaction", "reversedGiftId": 7}},
            {"gift": {"id": 10}}]});
        let delivery = parse_delivery(bulk.to_string().as_bytes()).unwrap();
        assert_eq!(delivery.models, 3);
        assert_eq!(delivery.matches.len(), 1);
        assert_eq!(delivery.matches[0].transaction_id, "42");
        let contact = json!({"event": "ContactCreate", "contact": {"id": 3,
            "contactReferences": [{"source": "Stripe", "id": "cus_1"}]}});
        let delivery = parse_delivery(contact.to_string().as_bytes()).unwrap();
        assert_eq!(delivery.matches[0].kind, RecordKind::Contact);
        assert_eq!(delivery.matches[0].transaction_id, "cus_1");
        let other = json!({"event": "ProjectCreate", "project": {"id": 1}});
        assert!(parse_delivery(other.to_string().as_bytes())
            .unwrap()
            .matches
            .is_empty());
        for bad in [
            &b"not json"[..],
            br#"{"gift": {}}"#,
            br#"{"event": "GiftCreate", "models": 3}"#,
        ] {
            let error = parse_delivery(bad).unwrap_err();
            assert_eq!(error.code, ErrorCode::MalformedBody);
        }
    }

    #[test]
    fn transaction_sources_resolve_to_the_tenant_s_ingress_sources() {
        // Goal: Stripe's and each platform's transaction source name their ingress source; unknown ones fall back to the lowercase name; ids of one record merge.
        let doc = TenantDoc::from_value(&json!({"id": "t", "name": "T",
            "virtuous": {"api_key": "k", "webhook_secret": "w"},
            "sources": {"stripe": {"signing_secret": "s", "transaction_source": "Card"},
                        "platforms": {"auction-co": {"secret": "p", "transaction_source": "AuctionCo"}}}}))
        .unwrap();
        let found = |source: &str, id: &str, virtuous_id: &str| Match {
            kind: RecordKind::Gift,
            transaction_source: source.into(),
            transaction_id: id.into(),
            virtuous_id: virtuous_id.into(),
        };
        let confirmations = resolve(
            &doc,
            &[
                found("card", "pi_1", "7"),
                found("AuctionCo", "a1", "8"),
                found("Card", "pi_1", "9"),
                found("Synthetic", "s1", "10"),
            ],
        );
        let named: Vec<(&str, &str, Vec<String>)> = confirmations
            .iter()
            .map(|c| {
                (
                    c.source.as_str(),
                    c.source_id.as_str(),
                    c.virtuous_ids.clone(),
                )
            })
            .collect();
        assert!(
            named.contains(&("stripe", "pi_1", vec!["7".into(), "9".into()])),
            "{named:?}"
        );
        assert!(
            named.contains(&("auction-co", "a1", vec!["8".into()])),
            "{named:?}"
        );
        assert!(
            named.contains(&("synthetic", "s1", vec!["10".into()])),
            "{named:?}"
        );
        assert!(confirmations.iter().all(|c| c.via == "webhook"));
    }
}
