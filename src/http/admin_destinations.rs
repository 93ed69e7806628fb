//! Destinations in the admin API (docs/pull.md "Admin routes"):
//!
//! - `GET /v1/tenants/{id}/destinations`: per destination, its state, checkpoint, the change
//!   log's head, pending changes, lag, counts, last error and what its loop is doing; and
//!   the tenant's pull intake (the backstop poll, re-reads).
//! - `POST /v1/tenants/{id}/destinations/{name}/pause|resume`, and `…/replay` with
//!   `{"from": "RFC 3339 time"}`: answered once the change is durable, with the destination.
//!
//! - `POST /v1/tenants/{id}/pull/poll`: a backstop poll now.
//!
//! Destination dead letters are listed, replayed and discarded through the dead-letter
//! routes (`?destination=NAME`; `admin_dead_letters.rs`).

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use steward_actors::pull::DestinationAction;
use steward_actors::runtime::{DestinationCommandError, DestinationSnapshot, TenantHandle};
use utoipa::ToSchema;

use super::admin_pollers::{parse_time, running_handle};
use super::error::{ApiError, ErrorCode};
use super::openapi::{RunningTenantErrors, TenantPath};
use crate::app::AppState;
use crate::tenants::format_ms;

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .service(web::resource("/tenants/{id}/destinations").route(web::get().to(list)))
        .service(web::resource("/tenants/{id}/pull/poll").route(web::post().to(poll_now)))
        .service(
            web::resource("/tenants/{id}/destinations/{name}/{action}")
                .route(web::post().to(action)),
        );
}

/// One destination as the API shows it.
pub fn destination_json(destination: &DestinationSnapshot) -> Value {
    let counts = &destination.counts;
    json!({
        "name": destination.name,
        "kind": destination.kind,
        "state": destination.state,
        "activity": destination.live.activity,
        "checkpoint": destination.checkpoint,
        "head": destination.head,
        "pending": destination.pending,
        "uncommitted": destination.live.uncommitted,
        "lag_seconds": destination.lag_seconds,
        "delivered": counts.delivered,
        "superseded": counts.superseded,
        "own_skipped": counts.own_skipped,
        "dead_lettered": counts.dead_lettered,
        "failures": counts.failures,
        "consecutive_failures": counts.consecutive_failures,
        "last_error": counts.last_error,
        "last_error_at": counts.last_error_at_ms.map(format_ms),
        "last_delivered_at": counts.last_delivered_at_ms.map(format_ms),
        "next_attempt_at": destination.live.next_attempt_at_ms.map(format_ms),
    })
}

/// The destinations block of the tenant status.
pub fn status_block(handle: &TenantHandle) -> Value {
    match handle.destinations() {
        Ok(destinations) => Value::Array(destinations.iter().map(destination_json).collect()),
        Err(error) => json!({"error": error.to_string()}),
    }
}

/// `GET /v1/tenants/{id}/destinations`: the tenant's pull destinations.
#[utoipa::path(
    get,
    operation_id = "list_destinations",
    path = "/v1/tenants/{id}/destinations",
    tag = "pull",
    params(TenantPath),
    responses(
        (status = 200, description = "`{\"destinations\": [...]}`: state, checkpoint, lag, counts, last error", body = Object),
        RunningTenantErrors,
    )
)]
async fn list(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let handle = running_handle(&state, &path.into_inner())?;
    let destinations = handle.destinations()?;
    let inbound = handle
        .status()
        .actors
        .get("inbound")
        .and_then(|actor| actor.observed.get("pull").cloned())
        .unwrap_or(Value::Null);
    Ok(HttpResponse::Ok().json(json!({
        "destinations": destinations.iter().map(destination_json).collect::<Vec<_>>(),
        "pull": inbound,
    })))
}

/// `POST /v1/tenants/{id}/pull/poll`: a backstop poll now (202; the pass's report shows in
/// `GET …/destinations` under `pull.last_backstop`).
/// `POST /v1/tenants/{id}/pull/poll`: runs the backstop poll now.
#[utoipa::path(
    post,
    path = "/v1/tenants/{id}/pull/poll",
    tag = "pull",
    params(TenantPath),
    responses(
        (status = 202, description = "The backstop poll is requested", body = PollRequested),
        RunningTenantErrors,
    )
)]
async fn poll_now(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let tenant_id = path.into_inner();
    let handle = running_handle(&state, &tenant_id)?;
    if !handle.request_backstop_poll() {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("tenant `{tenant_id}` does not pull (its document has no `pull` block)"),
        ));
    }
    Ok(HttpResponse::Accepted().json(PollRequested { requested: true }))
}

/// The backstop poll was asked for; it runs on the tenant's inbound actor.
#[derive(Serialize, ToSchema)]
struct PollRequested {
    requested: bool,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    /// An RFC 3339 time: changes received since then are delivered again.
    from: String,
}

fn unknown_destination(name: &str, handle: &TenantHandle) -> ApiError {
    let names: Vec<String> = handle
        .destinations()
        .unwrap_or_default()
        .into_iter()
        .map(|destination| destination.name)
        .collect();
    ApiError::new(
        ErrorCode::NotFound,
        format!(
            "no destination `{name}` is configured (configured: {})",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        ),
    )
}

/// `POST /v1/tenants/{id}/destinations/{name}/{action}`: pause, resume, or replay from a time.
#[utoipa::path(
    post,
    operation_id = "destination_action",
    path = "/v1/tenants/{id}/destinations/{name}/{action}",
    tag = "pull",
    params(TenantPath, ("name" = String, Path, description = "The destination's name", example = "warehouse"), ("action" = String, Path, description = "`pause`, `resume` or `replay`")),
    request_body(content = Option<ReplayBody>, description = "Only for `replay`: the time to deliver again from", example = json!({"from": "2026-01-02T03:04:05Z"})),
    responses(
        (status = 200, description = "The destination after the action", body = Object),
        RunningTenantErrors,
    )
)]
async fn action(
    state: web::Data<AppState>,
    path: web::Path<(String, String, String)>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (tenant_id, name, action_name) = path.into_inner();
    let action = match action_name.as_str() {
        "pause" => DestinationAction::Pause,
        "resume" => DestinationAction::Resume,
        "replay" => {
            let replay: ReplayBody = serde_json::from_slice(&body).map_err(|err| {
                ApiError::new(
                    ErrorCode::MalformedBody,
                    format!("replay takes {{\"from\": \"2026-01-02T03:04:05Z\"}}: {err}"),
                )
            })?;
            DestinationAction::Replay {
                from_ms: parse_time("from", &replay.from)?,
            }
        }
        other => {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!("no destination action `{other}` (pause, resume, replay)"),
            ))
        }
    };
    let handle = running_handle(&state, &tenant_id)?;
    handle
        .destination_command(&name, action)
        .await
        .map_err(|error| match error {
            DestinationCommandError::Unknown(name) => unknown_destination(&name, &handle),
            DestinationCommandError::Store(error) => error.into(),
        })?;
    let destination = handle
        .destinations()?
        .into_iter()
        .find(|destination| destination.name == name)
        .ok_or_else(|| unknown_destination(&name, &handle))?;
    Ok(HttpResponse::Ok().json(destination_json(&destination)))
}
