//! The admin API under `/v1` (docs/operations.md). Handlers are thin: parse, call
//! [`crate::tenants`], answer. The bearer-token check wraps the whole scope.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use utoipa::IntoParams;

use super::error::{ApiError, ErrorCode};
use super::openapi::{BadRequest, Conflict, PayloadTooLarge, TenantErrors, TenantPath};
use super::{parse_json, read_body_limited};
use crate::app::AppState;
use crate::tenant::validate_tenant_id;
use crate::tenants;
use steward_actors::runtime::{ActorKind, EnqueueError, KillMode, TenantHandle};
use steward_actors::store::{EnqueueOutcome, EntryFact, Lane, NewEntry, RecordKind};

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .service(
            web::resource("/tenants")
                .route(web::post().to(create_tenant))
                .route(web::get().to(list_tenants)),
        )
        .service(
            web::resource("/tenants/{id}")
                .route(web::get().to(get_tenant))
                .route(web::patch().to(patch_tenant))
                .route(web::delete().to(delete_tenant)),
        )
        .service(web::resource("/tenants/{id}/pause").route(web::post().to(pause_tenant)))
        .service(web::resource("/tenants/{id}/resume").route(web::post().to(resume_tenant)))
        .service(web::resource("/tenants/{id}/alerts/{code}/ack").route(web::post().to(ack_alert)))
        .service(
            web::resource("/tenants/{id}/_test/kill/{actor}").route(web::post().to(kill_actor)),
        )
        .service(
            web::resource("/tenants/{id}/_test/enqueue").route(web::post().to(enqueue_synthetic)),
        )
        .service(
            web::resource("/tenants/{id}/_test/dead-letter")
                .route(web::post().to(dead_letter_queued)),
        )
        .service(
            web::resource("/tenants/{id}/_test/checkpoint/{name}")
                .route(web::get().to(read_checkpoint)),
        )
        .configure(super::admin_dead_letters::routes)
        .configure(super::admin_records::routes)
        .configure(super::admin_pollers::routes)
        .configure(super::admin_destinations::routes)
        .configure(super::admin_inbound::routes)
        .configure(super::admin_two_way::routes)
        .configure(super::admin_backfill::routes)
        .configure(super::admin_reconciliations::routes)
        .configure(super::admin_backup::routes)
        .configure(super::admin_moves::routes)
        .configure(super::admin_test_events::routes)
        .default_service(web::to(|| async {
            Err::<HttpResponse, _>(ApiError::new(ErrorCode::NotFound, "no such admin route"))
        }));
}

/// A tenant id from the path: malformed ids are answered 400 before any lookup.
fn tenant_id(path: &web::Path<String>) -> Result<String, ApiError> {
    let id = path.as_str();
    validate_tenant_id(id)?;
    Ok(id.to_string())
}

/// `POST /v1/tenants`: registers a tenant from its document and starts it.
#[utoipa::path(
    post,
    path = "/v1/tenants",
    tag = "tenants",
    request_body(
        content = Object,
        description = "The tenant document (docs/operations.md \"Tenant rules\"); secrets are sealed at rest and shown redacted",
        example = json!({"id": "hope", "name": "Hope Foundation", "time_zone": "America/New_York",
            "virtuous": {"api_key": "vk_live_example", "base_url": "https://api.virtuoussoftware.com"},
            "sources": {"stripe": {"signing_secret": "whsec_example"}}})
    ),
    responses(
        (status = 201, description = "Created and started: the document as stored, secrets redacted, the effective budget shown", body = Object),
        (status = 400, response = BadRequest),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
    )
)]
async fn create_tenant(
    state: web::Data<AppState>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body_limited(&request, payload, state.config.body_limit_bytes).await?;
    let document = parse_json(&body)?;
    let created = tenants::create(&state, document).await?;
    Ok(HttpResponse::Created().json(created))
}

/// `GET /v1/tenants`: a page of tenants, filtered and sorted (`tenants::fleet`).
#[utoipa::path(
    get,
    path = "/v1/tenants",
    tag = "tenants",
    params(tenants::fleet::FleetQuery),
    responses(
        (status = 200, description = "`{\"tenants\": [{\"id\", \"name\", \"state\", \"lanes\", \"depth\", \"oldest_age_s\", \"budget\", \"open_alerts\"}], \"total\", \"next_cursor\"}`", body = Object),
        (status = 400, response = BadRequest),
    )
)]
async fn list_tenants(
    state: web::Data<AppState>,
    query: web::Query<tenants::fleet::FleetQuery>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(tenants::fleet::list(&state, &query)?))
}

/// `GET /v1/tenants/{id}`: the tenant's status (docs/operations.md "Tenant status").
#[utoipa::path(
    get,
    path = "/v1/tenants/{id}",
    tag = "tenants",
    params(TenantPath),
    responses(
        (status = 200, description = "The status: actors, lanes, budget, counts, alerts, health, pollers, destinations, two_way, ingress, config", body = Object),
        TenantErrors,
    )
)]
async fn get_tenant(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = tenant_id(&path)?;
    Ok(HttpResponse::Ok().json(tenants::status(&state, &id)?))
}

/// `PATCH /v1/tenants/{id}`: a JSON merge patch of the tenant document.
#[utoipa::path(
    patch,
    path = "/v1/tenants/{id}",
    tag = "tenants",
    params(TenantPath),
    request_body(
        content = Object,
        description = "A JSON merge patch (RFC 7396) of the tenant document; `null` removes an optional setting",
        example = json!({"name": "Hope Foundation (US)", "budget": {"hourly_limit": 1500}})
    ),
    responses(
        (status = 200, description = "The changed document, secrets redacted", body = Object),
        TenantErrors,
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
    )
)]
async fn patch_tenant(
    state: web::Data<AppState>,
    path: web::Path<String>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = tenant_id(&path)?;
    let body = read_body_limited(&request, payload, state.config.body_limit_bytes).await?;
    let merge_patch = parse_json(&body)?;
    Ok(HttpResponse::Ok().json(tenants::patch(&state, &id, merge_patch).await?))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct DeleteQuery {
    /// Delete even with unfinished work (queued, awaiting confirmation, needing review).
    #[serde(default)]
    force: bool,
}

/// `DELETE /v1/tenants/{id}`: stops the tenant and deletes its data (docs/operations.md
/// "Deleting a tenant").
#[utoipa::path(
    delete,
    path = "/v1/tenants/{id}",
    tag = "tenants",
    params(("id" = String, Path, description = "Tenant id", pattern = "^[a-z0-9-]{1,64}$", example = "retired"), DeleteQuery),
    responses(
        (status = 204, description = "Deleted"),
        TenantErrors,
        (status = 409, response = Conflict),
    )
)]
async fn delete_tenant(
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<DeleteQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = tenant_id(&path)?;
    tenants::delete(&state, &id, query.force).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `POST /v1/tenants/{id}/pause`: stops submission; capture goes on.
#[utoipa::path(
    post,
    path = "/v1/tenants/{id}/pause",
    tag = "tenants",
    params(TenantPath),
    responses(
        (status = 200, description = "The tenant's status", body = Object),
        TenantErrors,
        (status = 409, response = Conflict),
    )
)]
async fn pause_tenant(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = tenant_id(&path)?;
    Ok(HttpResponse::Ok().json(tenants::set_paused(&state, &id, true).await?))
}

/// `POST /v1/tenants/{id}/alerts/{code}/ack`: acknowledges one alert (idempotent: the first
/// acknowledgement's time stays); 404 for an unknown tenant or an alert never raised.
#[utoipa::path(
    post,
    path = "/v1/tenants/{id}/alerts/{code}/ack",
    tag = "tenants",
    params(
        TenantPath,
        ("code" = String, Path, description = "The alert's code", example = "budget_exhausted"),
    ),
    responses(
        (status = 200, description = "The alert: `code`, `message`, `first_at`, `last_at`, `count`, `resolved_at`, `acked_at`", body = Object),
        TenantErrors,
        (status = 409, response = Conflict),
    )
)]
async fn ack_alert(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, code) = path.into_inner();
    validate_tenant_id(&id)?;
    match state.stores.ack_alert(&id, &code).await? {
        Some(view) => Ok(HttpResponse::Ok().json(tenants::alert_json(&view))),
        None => Err(ApiError::new(
            ErrorCode::NotFound,
            format!("tenant `{id}` has no alert `{code}`"),
        )),
    }
}

/// `POST /v1/tenants/{id}/resume`: submission starts again.
#[utoipa::path(
    post,
    path = "/v1/tenants/{id}/resume",
    tag = "tenants",
    params(TenantPath),
    responses(
        (status = 200, description = "The tenant's status", body = Object),
        TenantErrors,
        (status = 409, response = Conflict),
    )
)]
async fn resume_tenant(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = tenant_id(&path)?;
    Ok(HttpResponse::Ok().json(tenants::set_paused(&state, &id, false).await?))
}

#[derive(Deserialize)]
struct KillQuery {
    #[serde(default = "default_kill_mode")]
    mode: String,
}

fn default_kill_mode() -> String {
    "panic".into()
}

/// The running tenant a test hook acts on; the hooks exist only with `runtime.test_hooks`.
fn test_hook_target(state: &AppState, id: &str) -> Result<TenantHandle, ApiError> {
    if !state.config.runtime.test_hooks {
        return Err(ApiError::new(ErrorCode::NotFound, "no such admin route"));
    }
    validate_tenant_id(id)?;
    state
        .runtime
        .tenant(id)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no running tenant `{id}`")))
}

/// Test-only hook (`runtime.test_hooks = true`): kills one child actor of a tenant.
async fn kill_actor(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    query: web::Query<KillQuery>,
) -> Result<HttpResponse, ApiError> {
    let (id, actor) = path.into_inner();
    let handle = test_hook_target(&state, &id)?;
    let kind = ActorKind::parse(&actor).ok_or_else(|| {
        ApiError::new(ErrorCode::InvalidField, format!("unknown actor `{actor}`"))
    })?;
    let mode = KillMode::parse(&query.mode).ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidField,
            "mode must be panic, error or stall",
        )
    })?;
    handle.kill_child(kind, mode);
    Ok(HttpResponse::Accepted()
        .json(serde_json::json!({"tenant": id, "actor": actor, "mode": query.mode})))
}

#[derive(Deserialize)]
struct EnqueueQuery {
    #[serde(default = "default_enqueue_count")]
    count: usize,
    /// Source ids are `{prefix}{index}` (repeatable, to test dedup); random by default.
    prefix: Option<String>,
    /// When set, each entry also gets the alias `{alias}{index}` (record lookup by alias).
    alias: Option<String>,
    /// When set (`name=value`), the entries are written together with this checkpoint in one
    /// atomic group, as a poller advances its checkpoint with a page of changes.
    checkpoint: Option<String>,
}

fn default_enqueue_count() -> usize {
    1
}

/// How long the enqueue hook waits for a starting capture actor.
const CAPTURE_START_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Test-only hook (`runtime.test_hooks = true`): queues `count` synthetic gifts through the
/// tenant's capture actor (durable before the 202), until real ingress exists.
async fn enqueue_synthetic(
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<EnqueueQuery>,
) -> Result<HttpResponse, ApiError> {
    let handle = test_hook_target(&state, &path)?;
    if query.count == 0 || query.count > 10_000 {
        return Err(ApiError::new(
            ErrorCode::InvalidField,
            "count must be 1 to 10000",
        ));
    }
    let now_ms = tenants::now_ms();
    let prefix = query
        .prefix
        .clone()
        .unwrap_or_else(|| format!("synthetic_{}_", rand::random::<u64>()));
    let entries: Vec<NewEntry> = (0..query.count)
        .map(|index| {
            let source_id = format!("{prefix}{index}");
            let body = serde_json::json!({"transactionSource": "Synthetic", "transactionId": source_id,
                "amount": "1.00", "giftDate": "2026-01-01", "giftType": "Other", "contact": {"email": "test@example.org"}});
            NewEntry {
                fact: EntryFact {
                    kind: RecordKind::Gift,
                    source: "synthetic".into(),
                    source_id: source_id.clone(),
                    idempotency_key: format!("synthetic:gift:{source_id}"),
                    lane: Lane::Live,
                    transaction_source: "Synthetic".into(),
                    body_json: body.to_string(),
                },
                aliases: query
                    .alias
                    .as_ref()
                    .map(|alias| vec![format!("{alias}{index}")])
                    .unwrap_or_default(),
                now_ms,
            }
        })
        .collect();
    if let Some(checkpoint) = &query.checkpoint {
        let (name, value) = checkpoint.split_once('=').ok_or_else(|| {
            ApiError::new(ErrorCode::InvalidField, "checkpoint must be `name=value`")
        })?;
        let outcomes = handle
            .enqueue_with_checkpoint_for_test(entries, name, value.as_bytes())
            .await?;
        return Ok(enqueue_answer(&outcomes));
    }
    // A tenant created a moment ago may still be starting its capture actor: the hook waits
    // for it briefly (tests call it right after creating a tenant) instead of answering 503.
    let started = std::time::Instant::now();
    let outcomes = loop {
        match handle.enqueue(entries.clone()).await {
            Ok(outcomes) => break outcomes,
            Err(EnqueueError::Unavailable) if started.elapsed() < CAPTURE_START_WAIT => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            Err(err) => {
                return Err(ApiError::new(
                    ErrorCode::Unavailable,
                    format!("enqueue failed: {err}"),
                ))
            }
        }
    };
    Ok(enqueue_answer(&outcomes))
}

fn enqueue_answer(outcomes: &[EnqueueOutcome]) -> HttpResponse {
    let queued = EnqueueOutcome::queued_in(outcomes);
    HttpResponse::Accepted()
        .json(serde_json::json!({"queued": queued, "duplicates": outcomes.len() - queued}))
}

/// Test-only hook (`runtime.test_hooks = true`): a checkpoint's value as text (`null` when
/// none is stored), so crash tests can compare it with the entries it covers.
async fn read_checkpoint(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, name) = path.into_inner();
    let handle = test_hook_target(&state, &id)?;
    let value = handle
        .checkpoint_for_test(&name)?
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
    Ok(HttpResponse::Ok().json(serde_json::json!({"name": name, "value": value})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeadLetterQuery {
    #[serde(default = "default_enqueue_count")]
    count: usize,
    /// Shown as the dead letter's reason.
    #[serde(default = "default_dead_letter_message")]
    reason: String,
    /// The HTTP status the reason carries (`HTTP {status}: …`), as the submitter writes it.
    status: Option<u16>,
}

fn default_dead_letter_message() -> String {
    "dead-lettered by a test hook".into()
}

/// Test-only hook (`runtime.test_hooks = true`): dead-letters the `count` oldest entries of
/// the live lane, the way the submitter does for a permanent error. Pause the tenant first,
/// or a running submitter may take the entries.
async fn dead_letter_queued(
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<DeadLetterQuery>,
) -> Result<HttpResponse, ApiError> {
    let handle = test_hook_target(&state, &path)?;
    let ids = handle
        .dead_letter_live_for_test(query.count.min(10_000), query.status, &query.reason)
        .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"dead_lettered": ids})))
}
