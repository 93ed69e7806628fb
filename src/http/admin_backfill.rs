//! Backfill jobs in the admin API (docs/backfill.md "Admin API"):
//!
//! - `POST /v1/tenants/{id}/backfills` with `{"source", "format", "mapping", "label"}` → 201
//!   with the job (`awaiting_file`); with `{"source", "from", "to"?, "label"}` (a source's
//!   listing through its poller, no file) → 201 with the job already `validating`; a spec the
//!   tenant cannot run → 422 `invalid_backfill` naming the field.
//! - `PUT /v1/tenants/{id}/backfills/{b}/file`: the raw file, streamed to disk
//!   (`admin_backfill/upload.rs`); the dry run then starts by itself (`validating`). A
//!   listing job has no file: 409.
//! - `GET /v1/tenants/{id}/backfills`, `GET …/backfills/{b}` (the job view,
//!   `admin_backfill/view.rs`), `GET …/backfills/{b}/rejects` (NDJSON, every rejected row).
//! - `POST …/backfills/{b}/start|pause|resume|cancel`: 409 `invalid_transition` when the
//!   job's state does not allow it.
//!
//! Jobs change only in the tenant's Capture (`TenantHandle::backfill_command`), answered
//! once the change is durable; reads come from the store through the handle.

pub mod upload;
pub mod view;

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use rand::Rng;
use serde::Deserialize;
use serde_json::Value;
use steward_actors::backfill::{
    transition, BackfillAction, BackfillCommandError, BackfillJob, JobSpec, INLINE_REJECTS_MAX,
    LISTING_FORMAT,
};
use steward_actors::runtime::TenantHandle;

use super::admin_pollers::running_handle;
use super::error::{ApiError, ErrorCode};
use super::openapi::{
    PayloadTooLarge, RunningTenantErrors, TenantPath, Unprocessable, UnsupportedMediaType,
};
use super::{parse_json, read_body_limited};
use crate::app::AppState;
use crate::backfill::spec::parse_window;
use crate::backfill::{validate_spec, FileBackfills};
use view::{job_json, BudgetUse};

/// Rejected rows read per page of the NDJSON stream.
pub const REJECTS_PAGE_ROWS: usize = 1_000;
/// Job ids: `bf_` and this many lowercase letters and digits.
const JOB_ID_RANDOM_CHARS: usize = 12;
const JOB_ID_PREFIX: &str = "bf_";

pub const BACKFILLS_PATH: &str = "/tenants/{id}/backfills";
pub const BACKFILL_PATH: &str = "/tenants/{id}/backfills/{backfill}";
pub const FILE_PATH: &str = "/tenants/{id}/backfills/{backfill}/file";
pub const REJECTS_PATH: &str = "/tenants/{id}/backfills/{backfill}/rejects";
pub const ACTION_PATH: &str = "/tenants/{id}/backfills/{backfill}/{action}";

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .service(
            web::resource(BACKFILLS_PATH)
                .route(web::post().to(create))
                .route(web::get().to(list)),
        )
        .service(web::resource(BACKFILL_PATH).route(web::get().to(get)))
        .service(web::resource(FILE_PATH).route(web::put().to(upload_file)))
        .service(web::resource(REJECTS_PATH).route(web::get().to(rejects)))
        .service(web::resource(ACTION_PATH).route(web::post().to(action)));
}

/// A new job id: `bf_` + 12 random lowercase letters and digits.
pub fn new_job_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    let random: String = (0..JOB_ID_RANDOM_CHARS)
        .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
        .collect();
    format!("{JOB_ID_PREFIX}{random}")
}

/// Whether `id` has the shape [`new_job_id`] gives (ids name files: nothing else is looked
/// up).
pub fn is_job_id(id: &str) -> bool {
    id.strip_prefix(JOB_ID_PREFIX).is_some_and(|random| {
        random.len() == JOB_ID_RANDOM_CHARS
            && random
                .bytes()
                .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit())
    })
}

fn unknown_job(job_id: &str) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no backfill `{job_id}`"))
}

/// The job `job_id` of the tenant (404 when there is none).
fn job_of(handle: &TenantHandle, job_id: &str) -> Result<BackfillJob, ApiError> {
    if !is_job_id(job_id) {
        return Err(unknown_job(job_id));
    }
    handle
        .backfill_job(job_id)?
        .ok_or_else(|| unknown_job(job_id))
}

fn budget_of(handle: &TenantHandle) -> BudgetUse {
    let (calls_last_hour, allowance_per_hour) = handle.budget_use();
    BudgetUse {
        allowance_per_hour,
        calls_last_hour,
    }
}

/// A job with its first rejected rows, as `GET …/backfills/{b}` shows it.
fn full_view(handle: &TenantHandle, job: &BackfillJob) -> Result<Value, ApiError> {
    let rejects = handle.backfill_rejects(&job.id, 0, INLINE_REJECTS_MAX)?;
    Ok(job_json(job, budget_of(handle), Some(&rejects)))
}

/// A refused command as the API answers it.
fn command_error(tenant_id: &str, error: BackfillCommandError) -> ApiError {
    match error {
        BackfillCommandError::Unknown(job_id) => unknown_job(&job_id),
        BackfillCommandError::InvalidTransition(message) => {
            ApiError::new(ErrorCode::InvalidTransition, message)
        }
        BackfillCommandError::Exists(_) => ApiError::new(ErrorCode::Conflict, error.to_string()),
        BackfillCommandError::MailboxFull { .. } | BackfillCommandError::Unavailable => {
            ApiError::new(ErrorCode::Unavailable, error.to_string())
        }
        BackfillCommandError::Store(message) => {
            tracing::error!(tenant_id = %tenant_id, error = %message, "backfill command failed in the store");
            ApiError::new(ErrorCode::Internal, "the store failed; see the server log")
        }
    }
}

fn invalid_backfill(field: &str, reason: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidBackfill,
        format!("field `{field}` is invalid: {reason}"),
    )
}

/// The body of `POST …/backfills` for a file job.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    source: String,
    format: String,
    /// A preset name or a mapping object.
    mapping: Value,
    label: String,
}

/// The body of `POST …/backfills` for a listing job (a source's listing through its poller).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListingBody {
    source: String,
    /// An RFC 3339 time or a day `YYYY-MM-DD` (UTC).
    from: String,
    /// As `from`; absent = now.
    #[serde(default)]
    to: Option<String>,
    label: String,
}

/// The spec a create body asks for (a listing when it has `from` or `to`; its `to` defaults
/// to `now_ms`); 422 `invalid_backfill` naming the field otherwise.
fn spec_of(body: Value, now_ms: u64) -> Result<JobSpec, ApiError> {
    let Some(object) = body.as_object() else {
        return Err(invalid_backfill(
            "body",
            "must be an object: {\"source\", \"format\", \"mapping\", \"label\"} (a file) \
             or {\"source\", \"from\", \"to\", \"label\"} (a source's listing)",
        ));
    };
    if object.contains_key("from") || object.contains_key("to") {
        if let Some(field) = ["format", "mapping"]
            .into_iter()
            .find(|key| object.contains_key(*key))
        {
            return Err(invalid_backfill(
                field,
                "a source's listing (`from`/`to`) has no `format` or `mapping`: the source's \
                 poller maps its records as the live poll does",
            ));
        }
        let listing: ListingBody = deserialize_body(body)?;
        let window = parse_window(&listing.from, listing.to.as_deref(), now_ms)
            .map_err(|error| invalid_backfill(&error.path, error.message))?;
        return Ok(JobSpec {
            source: listing.source,
            format: LISTING_FORMAT.to_string(),
            mapping_json: String::new(),
            label: listing.label,
            listing: Some(window),
        });
    }
    let create: CreateBody = deserialize_body(body)?;
    let mapping_json = match &create.mapping {
        Value::String(_) | Value::Object(_) => create.mapping.to_string(),
        _ => {
            return Err(invalid_backfill(
                "mapping",
                "must be a preset name (\"stripe_payments_export\") or a mapping object",
            ))
        }
    };
    Ok(JobSpec {
        source: create.source,
        format: create.format,
        mapping_json,
        label: create.label,
        listing: None,
    })
}

/// A create body as `T`; 422 `invalid_backfill` naming the unknown, missing or mistyped field.
fn deserialize_body<T: serde::de::DeserializeOwned>(body: Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(body).map_err(|error| {
        let message = error.inner().to_string();
        let field = match unknown_field_named_in(&message) {
            Some(unknown) => unknown,
            None => crate::tenant::field_of_serde_error(&error.path().to_string(), &message),
        };
        invalid_backfill(&field, message)
    })
}

/// serde's "unknown field `name`, expected …" → `name`.
fn unknown_field_named_in(message: &str) -> Option<String> {
    let field = message.strip_prefix("unknown field `")?.split('`').next()?;
    Some(field.to_string())
}

/// `POST /v1/tenants/{id}/backfills`: a new backfill job.
#[utoipa::path(
    post,
    operation_id = "create_backfill",
    path = "/v1/tenants/{id}/backfills",
    tag = "backfills",
    params(TenantPath),
    request_body(content = Object, description = "A file job `{\"source\", \"format\", \"mapping\", \"label\"}` or a listing job `{\"source\", \"from\", \"to\", \"label\"}` (docs/backfill.md)", example = json!({"source": "stripe", "format": "csv", "mapping": "stripe_payments", "label": "2024 import"})),
    responses(
        (status = 201, description = "The job (`validating`, or `awaiting_file` for a file job)", body = Object),
        RunningTenantErrors,
        (status = 413, response = PayloadTooLarge),
        (status = 422, response = Unprocessable),
    )
)]
async fn create(
    state: web::Data<AppState>,
    path: web::Path<String>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let tenant_id = path.into_inner();
    let handle = running_handle(&state, &tenant_id)?;
    let body = read_body_limited(&request, payload, state.config.body_limit_bytes).await?;
    let spec = spec_of(parse_json(&body)?, crate::tenants::now_ms())?;
    // Cloned out: a map reference is never held across an await (STYLE.md).
    let doc = state
        .tenant_docs
        .get(&tenant_id)
        .map(|doc| Arc::clone(doc.value()))
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unavailable,
                format!("tenant `{tenant_id}` is not running (see its status and the log)"),
            )
        })?;
    validate_spec(&doc, &spec).map_err(|error| invalid_backfill(&error.path, error.message))?;
    let job_id = new_job_id();
    let job = handle
        .backfill_command(&job_id, BackfillAction::Create { spec })
        .await
        .map_err(|error| command_error(&tenant_id, error))?;
    tracing::info!(tenant_id = %tenant_id, job = %job.id, label = %job.spec.label, "backfill created");
    Ok(HttpResponse::Created().json(job_json(&job, budget_of(&handle), Some(&[]))))
}

/// `GET /v1/tenants/{id}/backfills`: the tenant's backfill jobs.
#[utoipa::path(
    get,
    operation_id = "list_backfills",
    path = "/v1/tenants/{id}/backfills",
    tag = "backfills",
    params(TenantPath),
    responses(
        (status = 200, description = "`{\"backfills\": [...]}`", body = Object),
        RunningTenantErrors,
    )
)]
async fn list(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let handle = running_handle(&state, &path.into_inner())?;
    let budget = budget_of(&handle);
    let jobs: Vec<Value> = handle
        .backfill_jobs()?
        .iter()
        .map(|job| job_json(job, budget, None))
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "backfills": jobs })))
}

/// `GET /v1/tenants/{id}/backfills/{backfill}`: one job.
#[utoipa::path(
    get,
    operation_id = "get_backfill",
    path = "/v1/tenants/{id}/backfills/{backfill}",
    tag = "backfills",
    params(TenantPath, ("backfill" = String, Path, description = "The backfill job's id", example = "bf_1")),
    responses(
        (status = 200, description = "The job with its counts, budget use and first rejects", body = Object),
        RunningTenantErrors,
    )
)]
async fn get(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (tenant_id, job_id) = path.into_inner();
    let handle = running_handle(&state, &tenant_id)?;
    let job = job_of(&handle, &job_id)?;
    Ok(HttpResponse::Ok().json(full_view(&handle, &job)?))
}

/// `PUT /v1/tenants/{id}/backfills/{backfill}/file`: the job's file, streamed to disk.
#[utoipa::path(
    put,
    path = "/v1/tenants/{id}/backfills/{backfill}/file",
    tag = "backfills",
    params(TenantPath, ("backfill" = String, Path, description = "The backfill job's id", example = "bf_1")),
    request_body(content((String = "text/csv"), (String = "application/x-ndjson")), description = "The file, as the job's `format` says"),
    responses(
        (status = 200, description = "The job, its file stored", body = Object),
        RunningTenantErrors,
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
    )
)]
async fn upload_file(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (tenant_id, job_id) = path.into_inner();
    let handle = running_handle(&state, &tenant_id)?;
    let job = job_of(&handle, &job_id)?;
    takes_a_file(&job)?;
    let file_ready = BackfillAction::FileReady { bytes: 0 };
    transition(job.state, &file_ready)
        .map_err(|message| ApiError::new(ErrorCode::InvalidTransition, message))?;
    upload::check_content_type(&request, &job.spec.format)?;
    let limit_bytes = state.config.backfill.max_file_bytes;
    if upload::declared_length(&request).is_some_and(|length| length > limit_bytes) {
        return Err(upload::too_large(limit_bytes));
    }
    let Some(_place) = state.backfill_uploads.take(&tenant_id, &job_id) else {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("an upload of backfill `{job_id}` is in progress"),
        ));
    };
    let dir = crate::tenants::backfill_dir(&state, &tenant_id);
    let final_path = FileBackfills::file_path(&dir, &job_id, &job.spec.format);
    let bytes = upload::stream_to_file(payload, final_path.clone(), limit_bytes).await?;
    let job = match handle
        .backfill_command(&job_id, BackfillAction::FileReady { bytes })
        .await
    {
        Ok(job) => job,
        Err(error) => {
            if matches!(
                error,
                BackfillCommandError::InvalidTransition(_) | BackfillCommandError::Unknown(_)
            ) {
                // The job changed meanwhile (cancelled): its file is not wanted. Other
                // failures keep it: uploading again replaces it.
                let _ = std::fs::remove_file(&final_path);
            }
            return Err(command_error(&tenant_id, error));
        }
    };
    tracing::info!(tenant_id = %tenant_id, job = %job_id, bytes, "backfill file uploaded; dry run started");
    Ok(HttpResponse::Ok().json(full_view(&handle, &job)?))
}

/// 409 `conflict` for a listing job: it reads its source's listing, it has no file.
fn takes_a_file(job: &BackfillJob) -> Result<(), ApiError> {
    match job.spec.listing {
        Some(_) => Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "backfill `{}` is a listing job: a listing job has no file (it reads the `{}` \
                 listing through the source's poller; its dry run starts when it is created)",
                job.id, job.spec.source
            ),
        )),
        None => Ok(()),
    }
}

/// `GET /v1/tenants/{id}/backfills/{backfill}/rejects`: every rejected row.
#[utoipa::path(
    get,
    path = "/v1/tenants/{id}/backfills/{backfill}/rejects",
    tag = "backfills",
    params(TenantPath, ("backfill" = String, Path, description = "The backfill job's id", example = "bf_1")),
    responses(
        (status = 200, description = "One `{\"row\", \"reason\"}` line per rejected row", content_type = "application/x-ndjson", body = String),
        RunningTenantErrors,
    )
)]
async fn rejects(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (tenant_id, job_id) = path.into_inner();
    let handle = running_handle(&state, &tenant_id)?;
    let job = job_of(&handle, &job_id)?;
    // Page by page: every rejected row, never all in memory. A store error mid-stream cuts
    // the body short (the client sees it, never a silently short list).
    let rows = futures_util::stream::unfold(Some(0u64), move |after| {
        let handle = handle.clone();
        let job_id = job.id.clone();
        async move {
            let after = after?;
            match handle.backfill_rejects(&job_id, after, REJECTS_PAGE_ROWS) {
                Ok(page) if page.is_empty() => None,
                Ok(page) => {
                    let mut text = Vec::new();
                    for reject in &page {
                        let line = serde_json::json!({"row": reject.row, "reason": reject.reason});
                        text.extend_from_slice(line.to_string().as_bytes());
                        text.push(b'\n');
                    }
                    let next = (page.len() >= REJECTS_PAGE_ROWS)
                        .then(|| page.last().map(|reject| reject.row))
                        .flatten();
                    Some((Ok::<_, ApiError>(web::Bytes::from(text)), next))
                }
                Err(error) => Some((Err(ApiError::from(error)), None)),
            }
        }
    });
    Ok(HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .streaming(rows))
}

/// `POST /v1/tenants/{id}/backfills/{backfill}/{action}`: start, pause, resume, cancel.
#[utoipa::path(
    post,
    operation_id = "backfill_action",
    path = "/v1/tenants/{id}/backfills/{backfill}/{action}",
    tag = "backfills",
    params(TenantPath, ("backfill" = String, Path, description = "The backfill job's id", example = "bf_1"), ("action" = String, Path, description = "`start`, `pause`, `resume` or `cancel`")),
    responses(
        (status = 200, description = "The job after the action", body = Object),
        RunningTenantErrors,
    )
)]
async fn action(
    state: web::Data<AppState>,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (tenant_id, job_id, action_name) = path.into_inner();
    let action = match action_name.as_str() {
        "start" => BackfillAction::Start,
        "pause" => BackfillAction::Pause,
        "resume" => BackfillAction::Resume,
        "cancel" => BackfillAction::Cancel,
        other => {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!("no backfill action `{other}` (start, pause, resume, cancel)"),
            ))
        }
    };
    let handle = running_handle(&state, &tenant_id)?;
    job_of(&handle, &job_id)?;
    let job = handle
        .backfill_command(&job_id, action)
        .await
        .map_err(|error| command_error(&tenant_id, error))?;
    Ok(HttpResponse::Ok().json(full_view(&handle, &job)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::ResponseError;
    use serde_json::json;

    #[test]
    fn job_ids_have_one_shape() {
        // Goal: generated ids pass the check; anything that could name another file fails.
        for _ in 0..100 {
            let id = new_job_id();
            assert!(is_job_id(&id), "{id}");
        }
        for bad in [
            "bf_ABCDEFGHIJKL",
            "bf_abc",
            "../etc/passwd",
            "bf_abcdefghijk.",
            "",
        ] {
            assert!(!is_job_id(bad), "{bad}");
        }
    }

    /// 2026-01-01T00:00:00Z: "now" of the create bodies' tests.
    const NOW_MS: u64 = 1_767_225_600_000;

    /// The field a refused body names (asserting the code and the message's shape).
    fn refused_field(body: Value) -> String {
        let refused = spec_of(body.clone(), NOW_MS).unwrap_err();
        assert_eq!(refused.code, ErrorCode::InvalidBackfill, "{body}");
        assert_eq!(refused.status_code().as_u16(), 422);
        let field = refused
            .message
            .strip_prefix("field `")
            .and_then(|rest| rest.split('`').next())
            .unwrap_or_else(|| panic!("{body}: {}", refused.message));
        field.to_string()
    }

    #[test]
    fn create_bodies_are_refused_naming_the_field() {
        // Goal: each bad body names its field, a file body's and a listing body's alike.
        let good = json!({"source": "stripe", "format": "csv",
                          "mapping": "stripe_payments_export", "label": "2024"});
        let spec = spec_of(good.clone(), NOW_MS).unwrap();
        assert_eq!(spec.mapping_json, "\"stripe_payments_export\"");
        assert_eq!(spec.listing, None);
        let cases = [
            (
                json!({"format": "csv", "mapping": "m", "label": "l"}),
                "source",
            ),
            (
                json!({"source": "stripe", "format": "csv", "mapping": 5, "label": "l"}),
                "mapping",
            ),
            (
                json!({"source": "stripe", "format": 7, "mapping": "m", "label": "l"}),
                "format",
            ),
            (
                json!({"source": "stripe", "format": "csv", "mapping": "m", "label": "l", "colour": 1}),
                "colour",
            ),
            (
                json!({"source": "constant_contact", "from": "2024-01-01"}),
                "label",
            ),
            (
                json!({"source": "constant_contact", "to": "2024-01-01", "label": "l"}),
                "from",
            ),
            (
                json!({"source": "constant_contact", "from": "2024-01-01", "label": "l", "colour": 1}),
                "colour",
            ),
            (
                json!({"source": "constant_contact", "from": 20240101, "label": "l"}),
                "from",
            ),
            (json!([1, 2]), "body"),
        ];
        for (body, field) in cases {
            assert_eq!(refused_field(body.clone()), field, "{body}");
        }
    }

    #[test]
    fn a_listing_body_is_a_window_of_days_or_times() {
        // Goal: a day is its first millisecond as `from` and its last as `to` (UTC); an
        // RFC 3339 time is that instant whatever its offset; no `to` is now; the spec is a
        // listing (format `listing`, no mapping).
        let spec = spec_of(
            json!({"source": "constant_contact", "from": "2024-01-01", "to": "2024-01-31",
                   "label": "cc history"}),
            NOW_MS,
        )
        .unwrap();
        assert_eq!(spec.source, "constant_contact");
        assert_eq!(spec.label, "cc history");
        assert_eq!(spec.format, LISTING_FORMAT);
        assert_eq!(spec.mapping_json, "");
        let window = spec.listing.unwrap();
        assert_eq!(
            crate::tenants::format_ms(window.from_ms),
            "2024-01-01T00:00:00Z"
        );
        assert_eq!(
            crate::tenants::format_ms(window.to_ms),
            "2024-01-31T23:59:59.999Z"
        );
        let times = spec_of(
            json!({"source": "gala-co", "from": "2024-01-01T02:00:00+02:00",
                   "to": "2024-02-01T12:30:00.250Z", "label": "l"}),
            NOW_MS,
        )
        .unwrap()
        .listing
        .unwrap();
        assert_eq!(times.from_ms, window.from_ms, "the offset is applied");
        assert_eq!(
            crate::tenants::format_ms(times.to_ms),
            "2024-02-01T12:30:00.25Z"
        );
        let open = spec_of(
            json!({"source": "mailchimp", "from": "2025-06-01", "label": "l"}),
            NOW_MS,
        )
        .unwrap()
        .listing
        .unwrap();
        assert_eq!(open.to_ms, NOW_MS, "no `to`: now");
        let one_day = spec_of(
            json!({"source": "mailchimp", "from": "2025-06-01", "to": "2025-06-01", "label": "l"}),
            NOW_MS,
        )
        .unwrap()
        .listing
        .unwrap();
        assert_eq!(
            one_day.to_ms - one_day.from_ms,
            86_400_000 - 1,
            "one whole day"
        );
    }

    #[test]
    fn a_listing_body_with_a_bad_window_or_a_file_s_fields_names_the_field() {
        // Goal: `from` not before `to` names `from`; a bound that is neither a day nor an
        // RFC 3339 time names itself; `format` or `mapping` beside `from`/`to` are refused by
        // name with the reason.
        let listing = |from: &str, to: Option<&str>| {
            let mut body = json!({"source": "constant_contact", "from": from, "label": "l"});
            if let Some(to) = to {
                body["to"] = json!(to);
            }
            body
        };
        let cases = [
            (listing("2024-02-01", Some("2024-01-01")), "from"),
            (
                listing("2024-01-01T00:00:00Z", Some("2024-01-01T00:00:00Z")),
                "from",
            ),
            (listing("2026-02-01", None), "from"),
            (listing("2024-13-01", Some("2024-12-31")), "from"),
            (listing("2024-01-01", Some("yesterday")), "to"),
            (listing("2024-01-01 00:00", Some("2024-12-31")), "from"),
            (listing("1969-12-31", Some("2024-12-31")), "from"),
        ];
        for (body, field) in cases {
            assert_eq!(refused_field(body.clone()), field, "{body}");
        }
        let mut with_format = listing("2024-01-01", None);
        with_format["format"] = json!("csv");
        assert_eq!(refused_field(with_format.clone()), "format");
        let message = spec_of(with_format, NOW_MS).unwrap_err().message;
        assert!(message.contains("no `format` or `mapping`"), "{message}");
        let with_mapping = json!({"source": "stripe", "to": "2024-01-01", "label": "l",
                                  "mapping": "stripe_payments_export"});
        assert_eq!(refused_field(with_mapping), "mapping");
    }

    #[test]
    fn a_listing_job_takes_no_file() {
        // Goal: PUT …/file on a listing job is 409 saying it has no file; a file job may
        // take one.
        let listing_spec = spec_of(
            json!({"source": "constant_contact", "from": "2024-01-01", "label": "l"}),
            NOW_MS,
        )
        .unwrap();
        let listing_job = BackfillJob::new("bf_abcdefghijkl".into(), listing_spec, NOW_MS);
        let refused = takes_a_file(&listing_job).unwrap_err();
        assert_eq!(refused.status_code().as_u16(), 409);
        assert!(
            refused.message.contains("a listing job has no file"),
            "{}",
            refused.message
        );
        let file_spec = spec_of(
            json!({"source": "stripe", "format": "csv",
                   "mapping": "stripe_payments_export", "label": "2024"}),
            NOW_MS,
        )
        .unwrap();
        let file_job = BackfillJob::new("bf_abcdefghijkm".into(), file_spec, NOW_MS);
        takes_a_file(&file_job).unwrap();
    }
}
