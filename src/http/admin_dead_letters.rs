//! Dead letters in the admin API (docs/operations.md): list, show one, replay as-is or
//! edited, discard.
//!
//! A replay may edit a body but never its idempotency fields (invariant 3): the old and the
//! new body are compared field by field on `transactionSource`, `transactionId`,
//! `referenceSource` and `referenceId` (a removal or an addition is a change too).
//! Every answer comes after the store change is durable (invariant 1).

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use steward_actors::store::admin_ops::{dead_letter_attempts, dead_letter_status};
use steward_actors::store::pull_ops::DestinationDeadLetter;
use steward_actors::store::{DeadLetter, Lane};
use utoipa::{IntoParams, ToSchema};

use super::admin_pollers::running_handle;
use super::error::{ApiError, ErrorCode};
use super::openapi::{PayloadTooLarge, RunningTenantErrors, TenantPath};
use super::paging::{cut_page, PageQuery};
use super::{parse_json, read_body_limited};
use crate::app::AppState;
use crate::sources::kind_name;
use crate::tenants::format_ms;

/// The body fields that carry a record's idempotency key into Virtuous.
pub const IDEMPOTENCY_FIELDS: [&str; 4] = [
    "transactionSource",
    "transactionId",
    "referenceSource",
    "referenceId",
];

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .service(web::resource("/tenants/{id}/dead-letters").route(web::get().to(list)))
        .service(
            web::resource("/tenants/{id}/dead-letters/{dl}/replay").route(web::post().to(replay)),
        )
        .service(
            web::resource("/tenants/{id}/dead-letters/{dl}")
                .route(web::get().to(show))
                .route(web::delete().to(discard)),
        );
}

/// One dead letter as the API shows it: the body is the exact JSON that was refused.
pub fn dead_letter_json(dead_letter: &DeadLetter) -> Value {
    let entry = &dead_letter.entry;
    let body = serde_json::from_str::<Value>(&entry.fact.body_json)
        .unwrap_or_else(|_| Value::String(entry.fact.body_json.clone()));
    json!({
        "id": dead_letter.id,
        "reason": dead_letter.reason,
        "status": dead_letter_status(dead_letter),
        "attempts": dead_letter_attempts(dead_letter),
        "kind": kind_name(entry.fact.kind),
        "source": entry.fact.source,
        "source_id": entry.fact.source_id,
        "lane": entry.fact.lane.name(),
        "idempotency_key": entry.fact.idempotency_key,
        "transaction_source": entry.fact.transaction_source,
        "body": body,
        "enqueued_at": format_ms(entry.enqueued_at_ms),
        "dead_at": format_ms(dead_letter.dead_at_ms),
    })
}

/// `?after=&limit=` plus `?destination=NAME`: a pull destination's dead letters.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DeadLetterQuery {
    /// The last id of the previous page (its `next_after`).
    after: Option<u64>,
    /// The page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// A pull destination's name: its dead letters instead of the Virtuous-bound ones.
    destination: Option<String>,
}

/// Which dead letters a replay or discard means (`?destination=NAME`: a pull destination's).
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DestinationQuery {
    /// A pull destination's name: the dead letter is that destination's.
    destination: Option<String>,
}

/// A page of dead letters, oldest first.
#[derive(Serialize, ToSchema)]
struct DeadLetterPage {
    /// Each: `id`, `reason`, `status`, `attempts`, `kind`, `source`, `source_id`, `lane`,
    /// `idempotency_key`, `transaction_source`, `body` (the exact JSON refused),
    /// `enqueued_at`, `dead_at`, `destination` (`null` for a Virtuous-bound one).
    dead_letters: Vec<Value>,
    /// The `after` of the next page; `null` on the last page.
    next_after: Option<u64>,
}

/// A Virtuous-bound dead letter replayed: back in the `live` lane, durable.
#[derive(Serialize, ToSchema)]
struct ReplayAnswer {
    /// The dead letter's id.
    replayed: u64,
    /// Whether the request edited the body.
    edited: bool,
    /// The lane the entry went back to (`live`).
    lane: &'static str,
    /// The entry's new sequence number.
    seq: u64,
    /// The record's state now (`pending`).
    state: &'static str,
}

/// A replay's answer: a Virtuous-bound dead letter's, or a pull destination's
/// (`?destination=NAME`).
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
enum Replayed {
    Entry(ReplayAnswer),
    Destination(DestinationReplayAnswer),
}

/// A destination's dead letter replayed.
#[derive(Serialize, ToSchema)]
struct DestinationReplayAnswer {
    /// The change's sequence number.
    replayed: u64,
    destination: String,
}

/// A pull destination's dead letter as the API shows it (its id is the change's sequence
/// number in the tenant's change log).
pub fn destination_dead_letter_json(letter: &DestinationDeadLetter) -> Value {
    let change = &letter.change;
    json!({
        "id": change.seq,
        "destination": letter.destination,
        "reason": letter.reason,
        "status": "dead",
        "attempts": letter.attempts,
        "kind": change.kind.name(),
        "op": change.op.name(),
        "virtuous_id": change.id,
        "modified_at": change.modified_at,
        "body": change.record,
        "enqueued_at": format_ms(change.received_ms),
        "dead_at": format_ms(letter.at_ms),
    })
}

/// `GET /v1/tenants/{id}/dead-letters`: a page of dead letters (docs/operations.md "Dead
/// letters").
#[utoipa::path(
    get,
    operation_id = "list_dead_letters",
    path = "/v1/tenants/{id}/dead-letters",
    tag = "dead letters",
    params(TenantPath, DeadLetterQuery),
    responses(
        (status = 200, description = "A page, oldest first", body = DeadLetterPage),
        RunningTenantErrors,
    )
)]
async fn list(
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<DeadLetterQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let tenant_id = path.into_inner();
    let limit = PageQuery {
        after: query.after,
        limit: query.limit,
    }
    .limit()?;
    if let Some(destination) = &query.destination {
        let handle = running_handle(&state, &tenant_id)?;
        let after = query.after.map(|seq| (destination.as_str(), seq));
        let mut page = handle.destination_dead_letters(Some(destination), after, limit + 1)?;
        let next_after = cut_page(&mut page, limit, |letter| letter.change.seq);
        return Ok(HttpResponse::Ok().json(DeadLetterPage {
            dead_letters: page.iter().map(destination_dead_letter_json).collect(),
            next_after,
        }));
    }
    let mut page = state
        .stores
        .dead_letters_page(&tenant_id, query.after, limit + 1)?;
    let next_after = cut_page(&mut page, limit, |dead| dead.id);
    let mut dead_letters: Vec<Value> = page
        .iter()
        .map(|dead| {
            let mut shown = dead_letter_json(dead);
            shown["destination"] = Value::Null;
            shown
        })
        .collect();
    // The last page of the Virtuous-bound ones also shows the destinations' (the first of
    // them; `?destination=NAME` pages through one destination's).
    if next_after.is_none() && dead_letters.len() < limit {
        if let Some(handle) = state.runtime.tenant(&tenant_id) {
            let room = limit - dead_letters.len();
            dead_letters.extend(
                handle
                    .destination_dead_letters(None, None, room)?
                    .iter()
                    .map(destination_dead_letter_json),
            );
        }
    }
    Ok(HttpResponse::Ok().json(DeadLetterPage {
        dead_letters,
        next_after,
    }))
}

/// Replays or discards a destination's dead letter (`?destination=NAME`).
async fn settle_destination_letter(
    state: &AppState,
    tenant_id: &str,
    destination: &str,
    raw_id: &str,
    replay: bool,
) -> Result<HttpResponse, ApiError> {
    let handle = running_handle(state, tenant_id)?;
    let seq = dead_letter_id(raw_id)?;
    let found = handle
        .settle_destination_dead_letter(destination, seq, replay)
        .await?;
    if !found {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no dead letter `{seq}` for destination `{destination}`"),
        ));
    }
    tracing::info!(tenant_id = %tenant_id, destination = %destination, seq, replay, "destination dead letter settled by operator");
    Ok(if replay {
        HttpResponse::Ok().json(Replayed::Destination(DestinationReplayAnswer {
            replayed: seq,
            destination: destination.to_string(),
        }))
    } else {
        HttpResponse::NoContent().finish()
    })
}

fn dead_letter_id(raw: &str) -> Result<u64, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::new(ErrorCode::NotFound, format!("no dead letter `{raw}`")))
}

fn no_dead_letter(id: u64) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no dead letter `{id}`"))
}

/// The fields among [`IDEMPOTENCY_FIELDS`] whose value differs between the two bodies.
pub fn changed_idempotency_fields(old_body: &Value, new_body: &Value) -> Vec<&'static str> {
    IDEMPOTENCY_FIELDS
        .into_iter()
        .filter(|field| old_body.get(field) != new_body.get(field))
        .collect()
}

/// The edited body of a replay request, checked; `None` = replay as-is.
fn edited_body(raw: &[u8], old_body_json: &str) -> Result<Option<String>, ApiError> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let request = parse_json(raw)?;
    let Some(fields) = request.as_object() else {
        return Err(ApiError::new(
            ErrorCode::MalformedBody,
            "a replay request is empty or a JSON object",
        ));
    };
    if let Some(unknown) = fields.keys().find(|key| *key != "body") {
        return Err(ApiError::new(
            ErrorCode::InvalidField,
            format!("unknown field `{unknown}`: a replay takes only `body`"),
        ));
    }
    let Some(new_body) = fields.get("body") else {
        return Ok(None);
    };
    if !new_body.is_object() {
        return Err(ApiError::new(
            ErrorCode::InvalidField,
            "field `body` must be a JSON object (the Virtuous request body)",
        ));
    }
    // A stored body that is not JSON cannot be compared: no edit is safe then.
    let old_body: Value = serde_json::from_str(old_body_json).map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidField,
            "the dead letter's body is not JSON; it can only be replayed as-is",
        )
    })?;
    let changed = changed_idempotency_fields(&old_body, new_body);
    if !changed.is_empty() {
        return Err(ApiError::new(
            ErrorCode::IdempotencyFieldsChanged,
            format!(
                "a replay may not change {} (the record's idempotency key: one key per source fact, forever)",
                changed.join(", ")
            ),
        ));
    }
    Ok(Some(new_body.to_string()))
}

/// `POST /v1/tenants/{id}/dead-letters/{dl}/replay`: as-is (no body, `{}`) or edited
/// (`{"body": {…}}`, idempotency fields unchanged).
#[utoipa::path(
    post,
    path = "/v1/tenants/{id}/dead-letters/{dl}/replay",
    tag = "dead letters",
    params(
        TenantPath,
        ("dl" = String, Path, description = "The dead letter's id", example = "17"),
        DestinationQuery,
    ),
    request_body(
        content = Object,
        description = "Empty, `{}`, or `{\"body\": {…}}`: the edited Virtuous body",
        example = json!({"body": {"transactionSource": "Stripe", "transactionId": "pi_3Nq", "amount": "25.00"}})
    ),
    responses(
        (status = 200, description = "Replayed and durable", body = Replayed),
        RunningTenantErrors,
        (status = 413, response = PayloadTooLarge),
    )
)]
async fn replay(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    query: web::Query<DestinationQuery>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (tenant_id, raw_id) = path.into_inner();
    state.stores.ensure_registered(&tenant_id)?;
    let raw = read_body_limited(&request, payload, state.config.body_limit_bytes).await?;
    if let Some(destination) = &query.destination {
        if !raw.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::new(
                ErrorCode::InvalidField,
                "a destination's dead letter is replayed as it is (Virtuous's record): send no body",
            ));
        }
        return settle_destination_letter(&state, &tenant_id, destination, &raw_id, true).await;
    }
    let id = dead_letter_id(&raw_id)?;
    let dead_letter = state
        .stores
        .dead_letter(&tenant_id, id)?
        .ok_or_else(|| no_dead_letter(id))?;
    let edited = edited_body(&raw, &dead_letter.entry.fact.body_json)?;
    // Durable (and the submitter hinted) before the answer.
    let replayed = state
        .stores
        .replay_dead_letter(&state, &tenant_id, id, edited)
        .await?
        // Replayed or discarded by a concurrent request in between.
        .ok_or_else(|| no_dead_letter(id))?;
    tracing::info!(tenant_id = %tenant_id, dead_letter_id = id, seq = replayed.seq, edited = replayed.edited, "dead letter replayed by operator");
    Ok(HttpResponse::Ok().json(Replayed::Entry(ReplayAnswer {
        replayed: id,
        edited: replayed.edited,
        lane: Lane::Live.name(),
        seq: replayed.seq,
        state: replayed.record.state.name(),
    })))
}

/// `GET …/dead-letters/{dl}` (`?destination=NAME`: a pull destination's): one dead letter,
/// as the list shows it.
#[utoipa::path(
    get,
    path = "/v1/tenants/{id}/dead-letters/{dl}",
    tag = "dead letters",
    operation_id = "show_dead_letter",
    params(
        TenantPath,
        ("dl" = String, Path, description = "The dead letter's id", example = "17"),
        DestinationQuery,
    ),
    responses(
        (status = 200, description = "One dead letter, as the list shows it", body = Object),
        RunningTenantErrors,
    )
)]
async fn show(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    query: web::Query<DestinationQuery>,
) -> Result<HttpResponse, ApiError> {
    let (tenant_id, raw_id) = path.into_inner();
    state.stores.ensure_registered(&tenant_id)?;
    let id = dead_letter_id(&raw_id)?;
    if let Some(destination) = &query.destination {
        let handle = running_handle(&state, &tenant_id)?;
        let after = id
            .checked_sub(1)
            .map(|before| (destination.as_str(), before));
        let letter = handle
            .destination_dead_letters(Some(destination), after, 1)?
            .into_iter()
            .find(|letter| letter.change.seq == id)
            .ok_or_else(|| no_dead_letter(id))?;
        return Ok(HttpResponse::Ok().json(destination_dead_letter_json(&letter)));
    }
    let dead_letter = state
        .stores
        .dead_letter(&tenant_id, id)?
        .ok_or_else(|| no_dead_letter(id))?;
    let mut shown = dead_letter_json(&dead_letter);
    shown["destination"] = Value::Null;
    Ok(HttpResponse::Ok().json(shown))
}

/// `DELETE /v1/tenants/{id}/dead-letters/{dl}`: discards it for good.
#[utoipa::path(
    delete,
    path = "/v1/tenants/{id}/dead-letters/{dl}",
    tag = "dead letters",
    params(
        TenantPath,
        ("dl" = String, Path, description = "The dead letter's id", example = "17"),
        DestinationQuery,
    ),
    responses(
        (status = 204, description = "Discarded, durable"),
        RunningTenantErrors,
    )
)]
async fn discard(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    query: web::Query<DestinationQuery>,
) -> Result<HttpResponse, ApiError> {
    let (tenant_id, raw_id) = path.into_inner();
    state.stores.ensure_registered(&tenant_id)?;
    if let Some(destination) = &query.destination {
        return settle_destination_letter(&state, &tenant_id, destination, &raw_id, false).await;
    }
    let id = dead_letter_id(&raw_id)?;
    state
        .stores
        .discard_dead_letter(&tenant_id, id)
        .await?
        .ok_or_else(|| no_dead_letter(id))?;
    tracing::info!(tenant_id = %tenant_id, dead_letter_id = id, "dead letter discarded by operator");
    Ok(HttpResponse::NoContent().finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_field_changes_include_removal_and_addition() {
        // Goal: any difference on the four fields is reported; other fields are free to change.
        let old = json!({"transactionSource": "Stripe", "transactionId": "pi_1", "amount": "1.00"});
        let amount_only =
            json!({"transactionSource": "Stripe", "transactionId": "pi_1", "amount": "2.00"});
        assert!(changed_idempotency_fields(&old, &amount_only).is_empty());
        let removed = json!({"transactionSource": "Stripe", "amount": "1.00"});
        assert_eq!(
            changed_idempotency_fields(&old, &removed),
            ["transactionId"]
        );
        let added =
            json!({"transactionSource": "Stripe", "transactionId": "pi_1", "referenceId": "x"});
        assert_eq!(changed_idempotency_fields(&old, &added), ["referenceId"]);
        let retyped = json!({"transactionSource": "Stripe", "transactionId": 1});
        assert_eq!(
            changed_idempotency_fields(&old, &retyped),
            ["transactionId"]
        );
    }

    #[test]
    fn replay_requests_parse_to_as_is_or_a_checked_edit() {
        // Goal: empty and `{}` replay as-is; unknown fields, non-objects and id edits are refused.
        let old = r#"{"transactionSource":"S","transactionId":"1","amount":"1"}"#;
        assert_eq!(edited_body(b"", old).unwrap(), None);
        assert_eq!(edited_body(b"  {} ", old).unwrap(), None);
        let edited = edited_body(
            br#"{"body": {"transactionSource":"S","transactionId":"1","amount":"2"}}"#,
            old,
        )
        .unwrap()
        .unwrap();
        assert!(edited.contains(r#""amount":"2""#));
        let code = |raw: &[u8]| edited_body(raw, old).unwrap_err().code;
        assert_eq!(code(br#"{"bdy": {}}"#), ErrorCode::InvalidField);
        assert_eq!(code(br#"{"body": [1]}"#), ErrorCode::InvalidField);
        assert_eq!(code(b"not json"), ErrorCode::MalformedBody);
        assert_eq!(
            code(br#"{"body": {"transactionSource":"S","transactionId":"2"}}"#),
            ErrorCode::IdempotencyFieldsChanged
        );
    }
}
