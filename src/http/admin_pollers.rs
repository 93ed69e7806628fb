//! Pollers and parity in the admin API (docs/polling.md "Admin routes"):
//!
//! - `GET /v1/tenants/{id}/pollers`: per source, its state, checkpoint, run in progress,
//!   last run report and next run.
//! - `GET /v1/tenants/{id}/pollers/{source}/runs?limit=`: the run reports (last 50 kept).
//! - `POST /v1/tenants/{id}/pollers/{source}/run|pause|resume`, and `…/reset` with
//!   `{"since": "RFC 3339 time"}`: answered once the change is durable, with the poller.
//! - `GET /v1/tenants/{id}/parity/{source}?from=&to=`: per hour, the facts both paths saw,
//!   the webhook's only and the poll's only (= missed webhooks), with example ids.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use steward_actors::poll::{PollAction, PollCommandError, PollSchedule, PollerSnapshot};
use steward_actors::runtime::TenantHandle;
use steward_actors::store::poll_ops::{
    CapturePath, PauseReason, PollMark, RunReport, PARITY_EXAMPLES, POLL_RUNS_KEPT,
};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorCode};
use super::openapi::{RunningTenantErrors, TenantPath};
use crate::app::AppState;
use crate::tenants::{format_ms, now_ms};

/// Longest parity window one call may ask for.
const PARITY_RANGE_MAX_MS: u64 = 31 * 86_400_000;
const HOUR_MS: u64 = 3_600_000;

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .service(web::resource("/tenants/{id}/pollers").route(web::get().to(list_pollers)))
        .service(
            web::resource("/tenants/{id}/pollers/{source}/runs").route(web::get().to(list_runs)),
        )
        .service(
            web::resource("/tenants/{id}/pollers/{source}/{action}")
                .route(web::post().to(poller_action)),
        )
        .service(web::resource("/tenants/{id}/parity/{source}").route(web::get().to(parity)));
}

pub(crate) fn running_handle(state: &AppState, tenant_id: &str) -> Result<TenantHandle, ApiError> {
    state.stores.ensure_registered(tenant_id)?;
    // Exported: not "not running (see the log)", which a retry could outwait.
    if state.moved_tenants.contains(tenant_id) {
        return Err(crate::tenants::moved_here(tenant_id));
    }
    state.runtime.tenant(tenant_id).ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unavailable,
            format!("tenant `{tenant_id}` is not running (see its status and the log)"),
        )
    })
}

/// The running tenant's handle and its poller `source` (404 naming the configured ones).
fn tenant_poller(
    state: &AppState,
    tenant_id: &str,
    source: &str,
) -> Result<(TenantHandle, PollerSnapshot), ApiError> {
    let handle = running_handle(state, tenant_id)?;
    let pollers = handle.pollers()?;
    match pollers
        .iter()
        .position(|poller| poller.settings.source == source)
    {
        Some(at) => Ok((handle, pollers.into_iter().nth(at).expect("found"))),
        None => Err(unknown_poller(source, &pollers)),
    }
}

fn unknown_poller(source: &str, configured: &[PollerSnapshot]) -> ApiError {
    let names: Vec<&str> = configured
        .iter()
        .map(|poller| poller.settings.source.as_str())
        .collect();
    ApiError::new(
        ErrorCode::NotFound,
        format!(
            "no poller `{source}` is configured (configured: {})",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        ),
    )
}

fn schedule_json(schedule: &PollSchedule) -> Value {
    match schedule {
        PollSchedule::Off => json!({"kind": "off"}),
        PollSchedule::Every { interval_ms } => {
            json!({"kind": "interval", "interval_s": interval_ms / 1_000, "interval_ms": interval_ms})
        }
        PollSchedule::DailyAt {
            hour,
            minute,
            time_zone,
        } => {
            json!({"kind": "daily", "daily_at": format!("{hour:02}:{minute:02}"), "time_zone": time_zone})
        }
    }
}

fn mark_json(mark: &Option<PollMark>) -> Value {
    match mark {
        None => Value::Null,
        Some(mark) => json!({"at": format_ms(mark.at_ms), "record_id": mark.record_id}),
    }
}

/// A run report as the API shows it.
pub fn run_json(report: &RunReport) -> Value {
    json!({
        "run": report.run,
        "trigger": report.trigger,
        "outcome": report.outcome,
        "error": report.error,
        "started_at": format_ms(report.started_at_ms),
        "finished_at": report.finished_at_ms.map(format_ms),
        "since": format_ms(report.since_ms),
        "pages": report.pages,
        "fetched": report.fetched,
        "new": report.new,
        "changed": report.changed,
        "unchanged": report.unchanged,
        "rejected": report.rejected,
        "rejections": report.rejections.iter().map(|r| json!({"record_id": r.record_id, "reason": r.reason})).collect::<Vec<_>>(),
        "calls": report.calls,
        "throttled": report.throttled,
        "quota_waits": report.quota_waits,
        "checkpoint": mark_json(&report.checkpoint),
    })
}

/// One poller as the API shows it (also in the tenant status).
pub fn poller_json(poller: &PollerSnapshot) -> Value {
    let settings = &poller.settings;
    let state = &poller.state;
    let now = now_ms();
    let status = match (&state.paused, &poller.progress.run) {
        (Some(PauseReason::Operator), _) => "paused",
        (Some(PauseReason::Failures), _) => "paused_after_failures",
        (Some(PauseReason::AuthRefused), _) => "paused_credentials_refused",
        (None, _) if state.quota_wait_until_ms.is_some_and(|until| until > now) => {
            "waiting_for_quota_reset"
        }
        (None, Some(_)) => "running",
        (None, None) => "idle",
    };
    let quota = settings.limits.daily.map(|daily| {
        json!({
            "daily_limit": daily,
            "calls_today": state.quota_calls,
            "counted_since": format_ms(state.quota_day_start_ms),
            "wait_until": state.quota_wait_until_ms.filter(|&until| until > now).map(format_ms),
        })
    });
    json!({
        "source": settings.source,
        "kind": settings.kind,
        "state": status,
        "schedule": schedule_json(&settings.schedule),
        "overlap_s": settings.overlap_ms / 1_000,
        "hybrid": settings.has_webhooks,
        "checkpoint": mark_json(&poller.progress.checkpoint),
        "run_in_progress": poller.progress.run.as_ref().map(|run| run_json(&run.report)),
        "last_run": poller.last_run.as_ref().map(run_json),
        "next_run_at": poller.live.next_run_at_ms.map(format_ms),
        // A source's own position (a Postgres slot's LSN and snapshot progress): stored as
        // JSON text by its adapter; shown parsed, or as the text it is.
        "position": poller.progress.position.as_deref().map(|text| {
            serde_json::from_str::<Value>(text).unwrap_or_else(|_| Value::String(text.to_owned()))
        }),
        "source_status": poller.live.source_status.as_ref().map(|status| json!({
            "slot": status.slot,
            "confirmed_flush_lsn": status.confirmed,
            "lag_bytes": status.lag_bytes,
            "wal_status": status.wal_status,
            "checked_at": format_ms(status.checked_at_ms),
        })),
        "consecutive_failures": state.consecutive_failures,
        "runs": state.runs,
        "limits": {
            "per_second": settings.limits.per_second,
            "daily": quota,
        },
    })
}

/// The `pollers` block of the tenant status.
pub fn status_block(handle: &TenantHandle) -> Value {
    match handle.pollers() {
        Ok(pollers) => Value::Array(pollers.iter().map(poller_json).collect()),
        Err(error) => json!({"error": error.to_string()}),
    }
}

/// `GET /v1/tenants/{id}/pollers`: the tenant's polled sources.
#[utoipa::path(
    get,
    path = "/v1/tenants/{id}/pollers",
    tag = "pollers",
    params(TenantPath),
    responses(
        (status = 200, description = "`{\"pollers\": [...]}`: each poller's state, schedule, checkpoint, last and next run", body = Object),
        RunningTenantErrors,
    )
)]
async fn list_pollers(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let handle = running_handle(&state, &path.into_inner())?;
    let pollers = handle.pollers()?;
    Ok(HttpResponse::Ok()
        .json(json!({"pollers": pollers.iter().map(poller_json).collect::<Vec<_>>()})))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct RunsQuery {
    /// How many runs, newest first (1 to the number kept).
    #[param(minimum = 1)]
    limit: Option<usize>,
}

/// `GET /v1/tenants/{id}/pollers/{source}/runs`: the poller's latest runs.
#[utoipa::path(
    get,
    path = "/v1/tenants/{id}/pollers/{source}/runs",
    tag = "pollers",
    params(TenantPath, ("source" = String, Path, description = "The source's ingress key", example = "stripe"), RunsQuery),
    responses(
        (status = 200, description = "`{\"runs\": [...]}`, newest first", body = Object),
        RunningTenantErrors,
    )
)]
async fn list_runs(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    query: web::Query<RunsQuery>,
) -> Result<HttpResponse, ApiError> {
    let (tenant_id, source) = path.into_inner();
    let (handle, _) = tenant_poller(&state, &tenant_id, &source)?;
    let limit = query.limit.unwrap_or(POLL_RUNS_KEPT);
    if limit == 0 || limit > POLL_RUNS_KEPT {
        return Err(ApiError::new(
            ErrorCode::InvalidField,
            format!("field `limit` is invalid: must be between 1 and {POLL_RUNS_KEPT}"),
        ));
    }
    let runs = handle.poll_runs(&source, limit)?;
    Ok(HttpResponse::Ok().json(json!({"runs": runs.iter().map(run_json).collect::<Vec<_>>()})))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ResetBody {
    /// An RFC 3339 time in the past, within the dedup retention.
    since: String,
}

/// An RFC 3339 time (`2026-01-02T03:04:05Z`) → ms since the epoch.
pub(crate) fn parse_time(field: &str, text: &str) -> Result<u64, ApiError> {
    let invalid = || {
        ApiError::new(
            ErrorCode::InvalidField,
            format!("field `{field}` is invalid: expected an RFC 3339 time such as 2026-01-02T03:04:05Z"),
        )
    };
    let at: jiff::Timestamp = text.parse().map_err(|_| invalid())?;
    u64::try_from(at.as_millisecond()).map_err(|_| invalid())
}

/// `POST /v1/tenants/{id}/pollers/{source}/{action}`: run now, pause, resume, or reset the
/// checkpoint to a past time.
#[utoipa::path(
    post,
    path = "/v1/tenants/{id}/pollers/{source}/{action}",
    tag = "pollers",
    params(TenantPath, ("source" = String, Path, description = "The source's ingress key", example = "stripe"), ("action" = String, Path, description = "`run`, `pause`, `resume` or `reset`")),
    request_body(content = Option<ResetBody>, description = "Only for `reset`: the time to re-read from", example = json!({"since": "2026-01-02T03:04:05Z"})),
    responses(
        (status = 200, description = "The poller after `pause`, `resume` or `reset`", body = Object),
        (status = 202, description = "The poller, a run requested (`run`)", body = Object),
        RunningTenantErrors,
    )
)]
async fn poller_action(
    state: web::Data<AppState>,
    path: web::Path<(String, String, String)>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (tenant_id, source, action_name) = path.into_inner();
    let action = match action_name.as_str() {
        "run" => PollAction::Run,
        "pause" => PollAction::Pause,
        "resume" => PollAction::Resume,
        "reset" => {
            let reset: ResetBody = serde_json::from_slice(&body).map_err(|err| {
                ApiError::new(
                    ErrorCode::MalformedBody,
                    format!("reset takes {{\"since\": \"2026-01-02T03:04:05Z\"}}: {err}"),
                )
            })?;
            let since_ms = parse_time("since", &reset.since)?;
            if since_ms > now_ms() {
                return Err(ApiError::new(
                    ErrorCode::InvalidField,
                    "field `since` is invalid: it is in the future (a reset re-reads from a past time)",
                ));
            }
            let retention_ms = state.config.reconciler.dedup_retention_days * 86_400_000;
            if since_ms < now_ms().saturating_sub(retention_ms) {
                return Err(ApiError::new(
                    ErrorCode::InvalidField,
                    format!(
                        "field `since` is invalid: it is older than the dedup retention ({} days): versions seen before then are no longer remembered and would be sent again",
                        state.config.reconciler.dedup_retention_days
                    ),
                ));
            }
            PollAction::Reset { since_ms }
        }
        other => {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!("no poller action `{other}` (run, pause, resume, reset)"),
            ))
        }
    };
    let (handle, poller) = tenant_poller(&state, &tenant_id, &source)?;
    if let (PollAction::Reset { since_ms }, Some(checkpoint)) =
        (&action, &poller.progress.checkpoint)
    {
        if *since_ms > checkpoint.at_ms {
            return Err(ApiError::new(
                ErrorCode::InvalidField,
                format!(
                    "field `since` is invalid: it is after the checkpoint ({}); a reset moves the checkpoint back, never forward past records not read yet",
                    format_ms(checkpoint.at_ms)
                ),
            ));
        }
    }
    let started_a_run = action == PollAction::Run;
    handle
        .poll_command(&source, action)
        .await
        .map_err(|error| match error {
            PollCommandError::UnknownSource(_) => {
                unknown_poller(&source, &handle.pollers().unwrap_or_default())
            }
            PollCommandError::Conflict(message) => ApiError::new(ErrorCode::Conflict, message),
            PollCommandError::Unavailable => ApiError::new(ErrorCode::Unavailable, error.to_string()),
            PollCommandError::Store(message) => {
                tracing::error!(tenant_id = %tenant_id, source = %source, error = %message, "poller command failed in the store");
                ApiError::new(ErrorCode::Internal, "the store failed; see the server log")
            }
        })?;
    let poller = handle
        .pollers()?
        .into_iter()
        .find(|poller| poller.settings.source == source)
        .map(|poller| poller_json(&poller))
        .unwrap_or(Value::Null);
    Ok(if started_a_run {
        HttpResponse::Accepted().json(poller)
    } else {
        HttpResponse::Ok().json(poller)
    })
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ParityQuery {
    /// An RFC 3339 time (default: a day before `to`).
    from: Option<String>,
    /// An RFC 3339 time (default: now).
    to: Option<String>,
}

/// One hour's parity counts with examples.
#[derive(Default)]
struct HourCounts {
    both: u64,
    webhook_only: u64,
    poll_only: u64,
    examples: [Vec<String>; 3],
}

impl HourCounts {
    fn add(&mut self, slot: usize, record_id: &str) {
        match slot {
            0 => self.both += 1,
            1 => self.webhook_only += 1,
            _ => self.poll_only += 1,
        }
        let examples = &mut self.examples[slot];
        if examples.len() < PARITY_EXAMPLES && !examples.iter().any(|id| id == record_id) {
            examples.push(record_id.to_string());
        }
    }
}

/// `GET /v1/tenants/{id}/parity/{source}`: a hybrid source's parity report.
#[utoipa::path(
    get,
    path = "/v1/tenants/{id}/parity/{source}",
    tag = "pollers",
    params(TenantPath, ("source" = String, Path, description = "The source's ingress key", example = "stripe"), ParityQuery),
    responses(
        (status = 200, description = "Per hour: records seen by both paths, by the webhook only, by the poll only, with examples", body = Object),
        RunningTenantErrors,
    )
)]
async fn parity(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    query: web::Query<ParityQuery>,
) -> Result<HttpResponse, ApiError> {
    let (tenant_id, source) = path.into_inner();
    let (handle, poller) = tenant_poller(&state, &tenant_id, &source)?;
    let now = now_ms();
    let to_ms = match &query.to {
        Some(text) => parse_time("to", text)?,
        None => now + 1,
    };
    let from_ms = match &query.from {
        Some(text) => parse_time("from", text)?,
        None => to_ms.saturating_sub(86_400_000),
    };
    if from_ms >= to_ms {
        return Err(ApiError::new(
            ErrorCode::InvalidField,
            "field `from` is invalid: it must be before `to`",
        ));
    }
    if to_ms - from_ms > PARITY_RANGE_MAX_MS {
        return Err(ApiError::new(
            ErrorCode::InvalidField,
            "field `from` is invalid: at most 31 days per call",
        ));
    }
    let facts = handle.parity_facts(&source, from_ms, to_ms)?;
    let mut hours: std::collections::BTreeMap<u64, HourCounts> = std::collections::BTreeMap::new();
    let mut totals = HourCounts::default();
    for fact in &facts {
        let slot = match (fact.both, fact.first) {
            (true, _) => 0,
            (false, CapturePath::Webhook) => 1,
            (false, CapturePath::Poll) => 2,
        };
        hours
            .entry(fact.first_at_ms - fact.first_at_ms % HOUR_MS)
            .or_default()
            .add(slot, &fact.record_id);
        totals.add(slot, &fact.record_id);
    }
    let counts_json = |counts: &HourCounts| {
        json!({
            "both": counts.both,
            "webhook_only": counts.webhook_only,
            "poll_only": counts.poll_only,
            "examples": {
                "both": counts.examples[0],
                "webhook_only": counts.examples[1],
                "poll_only": counts.examples[2],
            },
        })
    };
    let hours: Vec<Value> = hours
        .iter()
        .map(|(hour, counts)| {
            let mut value = counts_json(counts);
            value["hour"] = json!(format_ms(*hour));
            value
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "source": source,
        "hybrid": poller.settings.has_webhooks,
        "from": format_ms(from_ms),
        "to": format_ms(to_ms),
        "totals": counts_json(&totals),
        "hours": hours,
    })))
}
