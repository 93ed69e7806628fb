//! Record lookup and the connection test in the admin API (docs/operations.md).
//!
//! - `GET /v1/tenants/{id}/records/{kind}/{source}/{source_id}`: the record's state, keys
//!   and full history; `source_id` may be any alias (PaymentIntent, charge, event id…).
//! - `GET /v1/tenants/{id}/records?email=` or `?virtuous_id=`: the records a donor email or a
//!   Virtuous id leads to (indexes kept with the records: `store::record_index`).
//! - `POST /v1/tenants/{id}/test-connection`: one `GET /api/Organization/Current` with the
//!   tenant's key, drawn from its budget like every other call (invariant 4). A refused key
//!   or an unreachable Virtuous is an *answer* (`200 {"ok": false, …}`), not a server error.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use steward_actors::outcome::ConnectionErrorKind;
use steward_actors::store::record_index::{normalise_email, normalise_virtuous_id, RecordLookup};
use steward_actors::store::types::RecordState;
use steward_actors::store::RecordKind;

use super::error::{ApiError, ErrorCode};
use super::openapi::{RunningTenantErrors, TenantErrors, TenantPath};
use crate::app::AppState;
use crate::sources::kind_name;
use crate::tenants::{format_ms, now_ms};

/// Longest a connection test waits for a budget slot before answering "not sent".
const CONNECTION_TEST_WAIT_MS_MAX: u64 = 5_000;

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .service(web::resource("/tenants/{id}/records").route(web::get().to(find_records)))
        .service(
            web::resource("/tenants/{id}/records/{kind}/{source}/{source_id}")
                .route(web::get().to(get_record)),
        )
        .service(
            web::resource("/tenants/{id}/test-connection").route(web::post().to(test_connection)),
        );
}

/// `gift`, `contact` or `refund`.
pub fn parse_kind(name: &str) -> Result<RecordKind, ApiError> {
    match name {
        "gift" => Ok(RecordKind::Gift),
        "contact" => Ok(RecordKind::Contact),
        "refund" => Ok(RecordKind::Refund),
        other => Err(ApiError::new(
            ErrorCode::InvalidField,
            format!("kind `{other}` is not one of gift, contact, refund"),
        )),
    }
}

fn record_json(record: &RecordState, queued: Vec<Value>, dead_letter: Value) -> Value {
    let history: Vec<Value> = record
        .history
        .iter()
        .map(|transition| {
            json!({
                "at": format_ms(transition.at_ms),
                "from": transition.from.map(|state| state.name()),
                "to": transition.to.name(),
                "reason": transition.reason,
            })
        })
        .collect();
    json!({
        "kind": kind_name(record.kind),
        "source": record.source,
        "source_id": record.source_id,
        "state": record.state.name(),
        "idempotency_key": record.idempotency_key,
        "virtuous_id": record.virtuous_id,
        "updated_at": format_ms(record.updated_at_ms),
        "history": history,
        "queued": queued,
        "dead_letter": dead_letter,
    })
}

/// `GET /v1/tenants/{id}/records/{kind}/{source}/{source_id}`: where a record is.
#[utoipa::path(
    get,
    path = "/v1/tenants/{id}/records/{kind}/{source}/{source_id}",
    tag = "records",
    params(TenantPath, ("kind" = String, Path, description = "`gift`, `contact` or `refund`", example = "gift"), ("source" = String, Path, description = "The source's ingress key", example = "stripe"), ("source_id" = String, Path, description = "The record's id or any alias", example = "pi_3NqExample")),
    responses(
        (status = 200, description = "`state`, `idempotency_key`, `virtuous_id`, `updated_at`, `history`, `queued`, `dead_letter`", body = Object),
        TenantErrors,
    )
)]
async fn get_record(
    state: web::Data<AppState>,
    path: web::Path<(String, String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (tenant_id, kind_name, source, id_or_alias) = path.into_inner();
    state.stores.ensure_registered(&tenant_id)?;
    let kind = parse_kind(&kind_name)?;
    let shown =
        record_view_json(&state, &tenant_id, kind, &source, &id_or_alias)?.ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotFound,
                format!("no {kind_name} record `{source}/{id_or_alias}` (by id or alias)"),
            )
        })?;
    Ok(HttpResponse::Ok().json(shown))
}

/// A record with its queued entries and dead letter, as the record route shows it.
fn record_view_json(
    state: &AppState,
    tenant_id: &str,
    kind: RecordKind,
    source: &str,
    id_or_alias: &str,
) -> Result<Option<Value>, ApiError> {
    let Some(view) = state
        .stores
        .record_view(tenant_id, kind, source, id_or_alias)?
    else {
        return Ok(None);
    };
    let record = view.record;
    let queued: Vec<Value> = view
        .queued
        .into_iter()
        .map(|queued| {
            let body = serde_json::from_str::<Value>(&queued.entry.fact.body_json)
                .unwrap_or_else(|_| Value::String(queued.entry.fact.body_json.clone()));
            json!({
                "lane": queued.lane.name(),
                "seq": queued.seq,
                "attempts": queued.entry.attempts,
                "enqueued_at": format_ms(queued.entry.enqueued_at_ms),
                "not_before": format_ms(queued.entry.not_before_ms),
                "body": body,
            })
        })
        .collect();
    let dead_letter = view
        .dead_letter
        .map(|dead| super::admin_dead_letters::dead_letter_json(&dead))
        .unwrap_or(Value::Null);
    Ok(Some(record_json(&record, queued, dead_letter)))
}

/// Most records a search answers with.
const FOUND_RECORDS_MAX: usize = 50;

/// `?email=` or `?virtuous_id=` (exactly one).
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct FindQuery {
    /// A donor email (any case).
    #[param(example = "ann@example.org")]
    email: Option<String>,
    /// A Virtuous id the record was confirmed with.
    #[param(example = "1234")]
    virtuous_id: Option<String>,
}

/// `GET /v1/tenants/{id}/records?email=` or `?virtuous_id=`: the records indexed under a
/// donor email or a Virtuous id (at most 50, in key order: kind, source, source id;
/// `truncated` says there were more), each as the record route shows it.
#[utoipa::path(
    get,
    path = "/v1/tenants/{id}/records",
    tag = "records",
    params(TenantPath, FindQuery),
    responses(
        (status = 200, description = "`{\"records\": [record…], \"truncated\"}`: at most 50, each as the record route shows it", body = Object),
        TenantErrors,
    )
)]
async fn find_records(
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<FindQuery>,
) -> Result<HttpResponse, ApiError> {
    let tenant_id = path.into_inner();
    state.stores.ensure_registered(&tenant_id)?;
    let (lookup, value) = match (&query.email, &query.virtuous_id) {
        (Some(email), None) => (
            RecordLookup::Email,
            normalise_email(email).ok_or_else(|| {
                ApiError::new(ErrorCode::InvalidField, "email is not an email address")
            })?,
        ),
        (None, Some(id)) => (
            RecordLookup::VirtuousId,
            normalise_virtuous_id(id).ok_or_else(|| {
                ApiError::new(ErrorCode::InvalidField, "virtuous_id is empty or not an id")
            })?,
        ),
        _ => {
            return Err(ApiError::new(
                ErrorCode::InvalidField,
                "give exactly one of email or virtuous_id (a source id: GET …/records/{kind}/{source}/{source_id})",
            ))
        }
    };
    // One more than shown tells whether the answer was cut.
    let mut found = state
        .stores
        .find_records(&tenant_id, lookup, &value, FOUND_RECORDS_MAX + 1)?;
    let truncated = found.len() > FOUND_RECORDS_MAX;
    found.truncate(FOUND_RECORDS_MAX);
    let mut records = Vec::with_capacity(found.len());
    for record in found {
        let shown = record_view_json(
            &state,
            &tenant_id,
            record.kind,
            &record.source,
            &record.source_id,
        )?;
        records.extend(shown);
    }
    Ok(HttpResponse::Ok().json(json!({"records": records, "truncated": truncated})))
}

/// `POST /v1/tenants/{id}/test-connection`: one Virtuous call with the tenant's key.
#[utoipa::path(
    post,
    path = "/v1/tenants/{id}/test-connection",
    tag = "records",
    params(TenantPath),
    responses(
        (status = 200, description = "`{\"ok\": true, …}` or `{\"ok\": false, \"error\", …}`: a refused key is an answer", body = Object),
        RunningTenantErrors,
    )
)]
async fn test_connection(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let tenant_id = path.into_inner();
    // 404 for an unknown tenant, 409 for a moved one, before "not running".
    let handle = super::admin_pollers::running_handle(&state, &tenant_id)?;
    // Invariant 4: the call is drawn from the tenant's budget before it is made; a slot
    // that opens within a few seconds (pacing) is waited for, a spent hour is an answer.
    let mut waited_ms = 0;
    loop {
        match handle.draw_operator_call() {
            Ok(()) => break,
            Err(next_at_ms) => {
                let wait_ms = next_at_ms.saturating_sub(now_ms());
                if waited_ms + wait_ms > CONNECTION_TEST_WAIT_MS_MAX {
                    return Ok(HttpResponse::Ok().json(json!({
                        "ok": false,
                        "sent": false,
                        "status": null,
                        "reason": format!("not sent: the tenant's budget allows no call for {} s", wait_ms / 1_000),
                    })));
                }
                tokio::time::sleep(std::time::Duration::from_millis(wait_ms.max(1))).await;
                waited_ms += wait_ms.max(1);
            }
        }
    }
    let (reply, organization) = handle.crm().organization_current().await;
    let status = reply.facts.status;
    handle.observe_reply(&reply);
    let rate_limit = json!(reply.rate_limit);
    let answered_2xx = status.is_some_and(|status| (200..300).contains(&status));
    let body = match (answered_2xx, organization) {
        (true, Some(organization)) => json!({
            "ok": true,
            "organization": organization,
            "status": status,
            "rate_limit": rate_limit,
            "elapsed_ms": reply.elapsed_ms,
        }),
        (answered_2xx, _) => {
            let reason = reply
                .facts
                .message
                .clone()
                .or_else(|| {
                    reply
                        .facts
                        .connection_error_kind
                        .map(|kind| format!("no answer: {kind:?}"))
                })
                .unwrap_or_else(|| match answered_2xx {
                    true => "the answer did not name an organization".to_string(),
                    false => format!("HTTP {}", status.unwrap_or(0)),
                });
            // A client that cannot be built sends nothing (and is no 401: issue 11).
            let sent =
                reply.facts.connection_error_kind != Some(ConnectionErrorKind::NotConfigured);
            json!({
                "ok": false,
                "sent": sent,
                "status": status,
                "reason": reason,
                "rate_limit": rate_limit,
                "elapsed_ms": reply.elapsed_ms,
            })
        }
    };
    tracing::info!(tenant_id = %tenant_id, ok = body["ok"].as_bool(), status = ?status, "connection test");
    Ok(HttpResponse::Ok().json(body))
}
