//! Two-way sync in the admin API (docs/operations.md "Two-way sync"):
//!
//! - `GET /v1/tenants/{id}/two-way`: each pair with its mode, rules, counters, pending
//!   records, open conflicts, what its loop is doing and its cross-match.
//! - `GET /v1/tenants/{id}/conflicts?after=&limit=` and
//!   `POST /v1/tenants/{id}/conflicts/{c}/resolve` with `{"take": "partner"|"virtuous"|"value",
//!   "value": …}`.
//! - `POST /v1/tenants/{id}/cross-match` with `{"pair"}`, `GET …/cross-match?pair=`,
//!   `GET …/cross-match/report?pair=` (NDJSON, streamed page by page) and
//!   `POST …/cross-match/approve` with the policies.
//! - `GET /v1/tenants/{id}/two-way/{pair}/records/{partner_id}`,
//!   `GET …/two-way/{pair}/records?virtuous_id=` (or a page of links), and
//!   `GET …/two-way/{pair}/dead-letters?after=&limit=`.
//!
//! Every change is answered once it is durable (the doors await the store's flush).

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use steward_actors::runtime::{PairView, TenantHandle, TwoWayError};
use steward_actors::two_way::cross_match::{CrossMatchJob, JobState, Policies};
use steward_actors::two_way::Resolution;
use utoipa::{IntoParams, ToSchema};

use super::admin_pollers::running_handle;
use super::error::{ApiError, ErrorCode};
use super::openapi::{RunningTenantErrors, TenantPath};
use super::paging::{cut_page, PageQuery};
use super::parse_json;
use crate::app::AppState;
use crate::tenants::format_ms;

/// Report rows read per page of the NDJSON stream.
pub const REPORT_PAGE_ROWS: usize = 500;

/// The routes' paths (ids may hold `:` and, raw, `/`: the last segment takes the rest).
pub const PAIRS_PATH: &str = "/tenants/{id}/two-way";
pub const CONFLICTS_PATH: &str = "/tenants/{id}/conflicts";
pub const RESOLVE_PATH: &str = "/tenants/{id}/conflicts/{conflict:.+}/resolve";
pub const CROSS_MATCH_PATH: &str = "/tenants/{id}/cross-match";
pub const REPORT_PATH: &str = "/tenants/{id}/cross-match/report";
pub const APPROVE_PATH: &str = "/tenants/{id}/cross-match/approve";
pub const RECORDS_PATH: &str = "/tenants/{id}/two-way/{pair}/records";
pub const RECORD_PATH: &str = "/tenants/{id}/two-way/{pair}/records/{partner_id:.+}";
pub const DEAD_LETTERS_PATH: &str = "/tenants/{id}/two-way/{pair}/dead-letters";

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .service(web::resource(PAIRS_PATH).route(web::get().to(pairs)))
        .service(web::resource(CONFLICTS_PATH).route(web::get().to(conflicts)))
        .service(web::resource(RESOLVE_PATH).route(web::post().to(resolve)))
        .service(web::resource(REPORT_PATH).route(web::get().to(report)))
        .service(web::resource(APPROVE_PATH).route(web::post().to(approve)))
        .service(
            web::resource(CROSS_MATCH_PATH)
                .route(web::post().to(start_cross_match))
                .route(web::get().to(cross_match)),
        )
        .service(web::resource(RECORDS_PATH).route(web::get().to(records)))
        .service(web::resource(RECORD_PATH).route(web::get().to(record)))
        .service(web::resource(DEAD_LETTERS_PATH).route(web::get().to(dead_letters)));
}

/// A pair refused by name where the pair is part of the body (400).
fn two_way_error(error: TwoWayError) -> ApiError {
    match error {
        TwoWayError::UnknownPair(pair) => ApiError::new(
            ErrorCode::InvalidField,
            format!(
                "field `pair` is invalid: no two-way pair `{pair}` is configured for this tenant"
            ),
        ),
        TwoWayError::UnknownConflict(id) => {
            ApiError::new(ErrorCode::NotFound, format!("no open conflict `{id}`"))
        }
        TwoWayError::BadValue(reason) => ApiError::new(
            ErrorCode::InvalidField,
            format!("field `value` is invalid: {reason}"),
        ),
        TwoWayError::NotNow(reason) => ApiError::new(ErrorCode::Conflict, reason),
        TwoWayError::Store(error) => error.into(),
    }
}

/// A cross-match job as the API shows it: the job, with its times as ISO-8601 and its ETA
/// in seconds.
pub fn job_json(job: &CrossMatchJob) -> Value {
    let mut shown = serde_json::to_value(job).unwrap_or(Value::Null);
    shown["started_at"] = json!(format_ms(job.started_at_ms));
    shown["updated_at"] = json!(format_ms(job.updated_at_ms));
    shown["eta_s"] = json!(job.eta_ms.map(|ms| ms.div_ceil(1_000)));
    shown
}

/// One pair as the API shows it: its view and its cross-match (`null`: none yet).
pub fn pair_json(view: &PairView, job: Option<&CrossMatchJob>) -> Value {
    let mut shown = serde_json::to_value(view).unwrap_or(Value::Null);
    shown["cross_match"] = job.map_or(Value::Null, job_json);
    shown
}

fn pairs_json(handle: &TenantHandle) -> Result<Vec<Value>, ApiError> {
    let mut pairs = Vec::new();
    for view in handle.two_way_pairs()? {
        let job = handle.cross_match(Some(&view.pair))?;
        pairs.push(pair_json(&view, job.as_ref()));
    }
    Ok(pairs)
}

/// The two-way block of the tenant status (the same pairs as `GET …/two-way`).
pub fn status_block(handle: &TenantHandle) -> Value {
    match pairs_json(handle) {
        Ok(pairs) => Value::Array(pairs),
        Err(error) => json!({"error": error.to_string()}),
    }
}

/// `GET /v1/tenants/{id}/two-way`: the tenant's two-way pairs.
#[utoipa::path(
    get,
    path = "/v1/tenants/{id}/two-way",
    tag = "two-way",
    params(TenantPath),
    responses(
        (status = 200, description = "`{\"pairs\": [...]}`: mode, counters, pending, conflicts, the pair loop, the cross-match", body = Object),
        RunningTenantErrors,
    )
)]
async fn pairs(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let handle = running_handle(&state, &path.into_inner())?;
    Ok(HttpResponse::Ok().json(json!({ "pairs": pairs_json(&handle)? })))
}

/// `?after={id}&limit=` over ids that are text (conflicts, links).
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct TextPageQuery {
    /// The last id of the previous page (its `next_after`).
    after: Option<String>,
    /// The page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

impl TextPageQuery {
    fn limit(&self) -> Result<usize, ApiError> {
        PageQuery {
            after: None,
            limit: self.limit,
        }
        .limit()
    }
}

/// `GET /v1/tenants/{id}/conflicts`: open conflicts, a page.
#[utoipa::path(
    get,
    path = "/v1/tenants/{id}/conflicts",
    tag = "two-way",
    params(TenantPath, TextPageQuery),
    responses(
        (status = 200, description = "`{\"conflicts\": [...], \"next_after\"}`", body = Object),
        RunningTenantErrors,
    )
)]
async fn conflicts(
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<TextPageQuery>,
) -> Result<HttpResponse, ApiError> {
    let handle = running_handle(&state, &path.into_inner())?;
    let limit = query.limit()?;
    let mut page = handle.two_way_conflicts(query.after.as_deref(), limit + 1)?;
    let next_after = cut_page(&mut page, limit, |conflict| conflict.id.clone());
    Ok(HttpResponse::Ok().json(json!({"conflicts": page, "next_after": next_after})))
}

/// `{"take": "partner"}`, `{"take": "virtuous"}` or `{"take": "value", "value": …}` (`null`
/// is a value: a blank name).
pub fn resolution_of(body: &Value) -> Result<Resolution, ApiError> {
    let invalid = |field: &str, reason: &str| {
        ApiError::new(
            ErrorCode::InvalidField,
            format!("field `{field}` is invalid: {reason}"),
        )
    };
    let Some(object) = body.as_object() else {
        return Err(ApiError::new(
            ErrorCode::MalformedBody,
            "resolve takes {\"take\": \"partner\"|\"virtuous\"|\"value\", \"value\": …}",
        ));
    };
    if let Some(unknown) = object
        .keys()
        .find(|key| !matches!(key.as_str(), "take" | "value"))
    {
        return Err(invalid(unknown, "resolve takes only `take` and `value`"));
    }
    let value = object.get("value");
    let one_of = "must be \"partner\", \"virtuous\" or \"value\"";
    match object.get("take").and_then(Value::as_str) {
        Some("partner" | "virtuous") if value.is_some() => {
            Err(invalid("value", "goes with `\"take\": \"value\"` only"))
        }
        Some("partner") => Ok(Resolution::Partner),
        Some("virtuous") => Ok(Resolution::Virtuous),
        Some("value") => match value {
            Some(value) => Ok(Resolution::Value(value.clone())),
            None => Err(invalid("value", "is required with `\"take\": \"value\"`")),
        },
        Some(_) => Err(invalid("take", one_of)),
        None => Err(invalid("take", &format!("is required and {one_of}"))),
    }
}

/// `POST /v1/tenants/{id}/conflicts/{conflict}/resolve`: settles one conflict.
#[utoipa::path(
    post,
    path = "/v1/tenants/{id}/conflicts/{conflict}/resolve",
    tag = "two-way",
    params(TenantPath, ("conflict" = String, Path, description = "The conflict's id", example = "mailchimp:a1b2:email")),
    request_body(content = Object, description = "`{\"take\": \"partner\" | \"virtuous\"}` or `{\"take\": \"value\", \"value\": …}`", example = json!({"take": "partner"})),
    responses(
        (status = 200, description = "`{\"link\": …}`: the record's link after the resolution", body = Object),
        RunningTenantErrors,
    )
)]
async fn resolve(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (tenant_id, conflict) = path.into_inner();
    let handle = running_handle(&state, &tenant_id)?;
    let resolution = resolution_of(&parse_json(&body)?)?;
    let link = handle
        .resolve_conflict(&conflict, resolution)
        .await
        .map_err(|error| match error {
            // The conflict is there, its pair is not configured any more.
            TwoWayError::UnknownPair(pair) => ApiError::new(
                ErrorCode::Conflict,
                format!("the conflict's pair `{pair}` is no longer configured; configure it again to resolve it"),
            ),
            other => two_way_error(other),
        })?;
    Ok(HttpResponse::Ok().json(json!({ "link": link })))
}

/// A JSON body into `T`, a refusal naming the field where it does not fit.
fn body_of<T: serde::de::DeserializeOwned>(body: &[u8], shape: &str) -> Result<T, ApiError> {
    let value = parse_json(body)?;
    serde_path_to_error::deserialize(value).map_err(|err| {
        let message = err.inner().to_string();
        let field = crate::tenant::field_of_serde_error(&err.path().to_string(), &message);
        ApiError::new(
            ErrorCode::InvalidField,
            format!("field `{field}` is invalid: {message} ({shape})"),
        )
    })
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct StartBody {
    /// `mailchimp` or `platform:{name}`.
    pair: String,
}

/// `POST /v1/tenants/{id}/cross-match`: starts matching both sides of a pair.
#[utoipa::path(
    post,
    path = "/v1/tenants/{id}/cross-match",
    tag = "two-way",
    params(TenantPath),
    request_body(content = StartBody, example = json!({"pair": "mailchimp"})),
    responses(
        (status = 202, description = "The job, started", body = Object),
        RunningTenantErrors,
    )
)]
async fn start_cross_match(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let handle = running_handle(&state, &path.into_inner())?;
    let start: StartBody = body_of(&body, "cross-match takes {\"pair\": PAIR}")?;
    let job = handle
        .start_cross_match(&start.pair)
        .await
        .map_err(two_way_error)?;
    Ok(HttpResponse::Accepted().json(job_json(&job)))
}

/// `?pair=` (absent: the job started last).
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct PairQuery {
    /// The pair (default: the job started last).
    pair: Option<String>,
}

/// The job `?pair=` names (the latest without one); 404 when there is none.
fn job_of(handle: &TenantHandle, pair: Option<&str>) -> Result<CrossMatchJob, ApiError> {
    handle.cross_match(pair)?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::NotFound,
            match pair {
                Some(pair) => {
                    format!("no cross-match of `{pair}` (start one with POST …/cross-match)")
                }
                None => "no cross-match yet (start one with POST …/cross-match)".to_string(),
            },
        )
    })
}

/// `GET /v1/tenants/{id}/cross-match`: the job's progress.
#[utoipa::path(
    get,
    path = "/v1/tenants/{id}/cross-match",
    tag = "two-way",
    params(TenantPath, PairQuery),
    responses(
        (status = 200, description = "The job: state, counts, ETA", body = Object),
        RunningTenantErrors,
    )
)]
async fn cross_match(
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<PairQuery>,
) -> Result<HttpResponse, ApiError> {
    let handle = running_handle(&state, &path.into_inner())?;
    let job = job_of(&handle, query.pair.as_deref())?;
    Ok(HttpResponse::Ok().json(job_json(&job)))
}

/// One page of report rows as NDJSON, and where the next page starts (`None`: the last).
pub fn report_chunk(
    rows: &[(u64, steward_actors::two_way::cross_match::ReportRow)],
    page_rows: usize,
) -> (web::Bytes, Option<u64>) {
    let mut text = Vec::new();
    for (_, row) in rows {
        // A ReportRow always serialises (strings, enums, lists).
        if serde_json::to_writer(&mut text, row).is_ok() {
            text.push(b'\n');
        }
    }
    let next = (rows.len() >= page_rows)
        .then(|| rows.last().map(|(seq, _)| *seq))
        .flatten();
    (web::Bytes::from(text), next)
}

/// `GET /v1/tenants/{id}/cross-match/report`: the finished job's report.
#[utoipa::path(
    get,
    path = "/v1/tenants/{id}/cross-match/report",
    tag = "two-way",
    params(TenantPath, PairQuery),
    responses(
        (status = 200, description = "One JSON line per match, then the totals", content_type = "application/x-ndjson", body = String),
        RunningTenantErrors,
    )
)]
async fn report(
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<PairQuery>,
) -> Result<HttpResponse, ApiError> {
    let handle = running_handle(&state, &path.into_inner())?;
    let job = job_of(&handle, query.pair.as_deref())?;
    if matches!(
        job.state,
        JobState::PagingPartner | JobState::PagingVirtuous
    ) {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "the cross-match of `{}` is still reading both sides; its report comes when it is ready",
                job.pair
            ),
        ));
    }
    let pair = job.pair;
    // Page by page: the whole report is never in memory. A store error mid-stream ends the
    // response early (the client sees a cut-off body, never a silently short report).
    let rows = futures_util::stream::unfold(Some(0u64), move |after| {
        let handle = handle.clone();
        let pair = pair.clone();
        async move {
            let after = after?;
            match handle.cross_match_report(&pair, after, REPORT_PAGE_ROWS) {
                Ok(rows) if rows.is_empty() => None,
                Ok(rows) => {
                    let (chunk, next) = report_chunk(&rows, REPORT_PAGE_ROWS);
                    Some((Ok::<_, ApiError>(chunk), next))
                }
                Err(error) => Some((Err(ApiError::from(error)), None)),
            }
        }
    });
    Ok(HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .streaming(rows))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApproveBody {
    #[serde(default)]
    pair: Option<String>,
    policies: Policies,
}

/// `POST /v1/tenants/{id}/cross-match/approve`: applies the report once.
#[utoipa::path(
    post,
    path = "/v1/tenants/{id}/cross-match/approve",
    tag = "two-way",
    params(TenantPath),
    request_body(content = Object, description = "`{\"pair\", \"policies\"}` (docs/operations.md \"Two-way sync\")", example = json!({"pair": "mailchimp", "policies": {"matched": "link"}})),
    responses(
        (status = 202, description = "The job, applying", body = Object),
        RunningTenantErrors,
    )
)]
async fn approve(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let handle = running_handle(&state, &path.into_inner())?;
    let approval: ApproveBody = body_of(
        &body,
        "approve takes {\"pair\": PAIR, \"policies\": {\"matched\": \"link\"|\"leave\", \
         \"partner_only\": \"create\"|\"external_only\", \"virtuous_only\": \"create\"|\"external_only\"}}",
    )?;
    let pair = match approval.pair {
        Some(pair) => pair,
        None => handle
            .cross_match(None)?
            .map(|job| job.pair)
            .ok_or_else(|| ApiError::new(ErrorCode::Conflict, "no cross-match to approve"))?,
    };
    let job = handle
        .approve_cross_match(&pair, approval.policies)
        .await
        .map_err(two_way_error)?;
    Ok(HttpResponse::Accepted().json(job_json(&job)))
}

/// The running tenant's handle, for a pair the path names (404 naming the configured ones
/// when the tenant has no such pair).
fn pair_handle(state: &AppState, tenant_id: &str, pair: &str) -> Result<TenantHandle, ApiError> {
    let handle = running_handle(state, tenant_id)?;
    let configured: Vec<String> = state
        .tenant_docs
        .get(tenant_id)
        .and_then(|doc| {
            doc.two_way
                .as_ref()
                .map(|pairs| pairs.keys().cloned().collect())
        })
        .unwrap_or_default();
    if configured.iter().any(|known| known == pair) {
        return Ok(handle);
    }
    Err(ApiError::new(
        ErrorCode::NotFound,
        format!(
            "no two-way pair `{pair}` (configured: {})",
            if configured.is_empty() {
                "none".to_string()
            } else {
                configured.join(", ")
            }
        ),
    ))
}

/// `?virtuous_id=` (one link) or `?after=&limit=` (a page of links, partner-id order).
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct RecordsQuery {
    /// One link: the one of this Virtuous contact.
    virtuous_id: Option<String>,
    /// The last partner id of the previous page (its `next_after`).
    after: Option<String>,
    /// The page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

fn no_link(pair: &str, which: &str) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!("pair `{pair}` has no record {which}"),
    )
}

/// `GET /v1/tenants/{id}/two-way/{pair}/records`: the pair's links.
#[utoipa::path(
    get,
    path = "/v1/tenants/{id}/two-way/{pair}/records",
    tag = "two-way",
    params(TenantPath, ("pair" = String, Path, description = "The pair: `mailchimp` or `platform:{name}`", example = "mailchimp"), RecordsQuery),
    responses(
        (status = 200, description = "`{\"links\": [...], \"next_after\"}`, or `{\"link\"}` with `?virtuous_id=`", body = Object),
        RunningTenantErrors,
    )
)]
async fn records(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    query: web::Query<RecordsQuery>,
) -> Result<HttpResponse, ApiError> {
    let (tenant_id, pair) = path.into_inner();
    let handle = pair_handle(&state, &tenant_id, &pair)?;
    let query = query.into_inner();
    if let Some(virtuous_id) = &query.virtuous_id {
        let link = handle
            .two_way_link(&pair, None, Some(virtuous_id))?
            .ok_or_else(|| no_link(&pair, &format!("with Virtuous id `{virtuous_id}`")))?;
        return Ok(HttpResponse::Ok().json(json!({ "link": link })));
    }
    let page_query = TextPageQuery {
        after: query.after,
        limit: query.limit,
    };
    let limit = page_query.limit()?;
    let mut page = handle.two_way_links(&pair, page_query.after.as_deref(), limit + 1)?;
    let next_after = cut_page(&mut page, limit, |link| link.partner_id.clone());
    Ok(HttpResponse::Ok().json(json!({"links": page, "next_after": next_after})))
}

/// `GET /v1/tenants/{id}/two-way/{pair}/records/{partner_id}`: one link.
#[utoipa::path(
    get,
    path = "/v1/tenants/{id}/two-way/{pair}/records/{partner_id}",
    tag = "two-way",
    params(TenantPath, ("pair" = String, Path, description = "The pair: `mailchimp` or `platform:{name}`", example = "mailchimp"), ("partner_id" = String, Path, description = "The partner's record id", example = "a1b2c3")),
    responses(
        (status = 200, description = "`{\"link\": …}`: sync state and history", body = Object),
        RunningTenantErrors,
    )
)]
async fn record(
    state: web::Data<AppState>,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (tenant_id, pair, partner_id) = path.into_inner();
    let handle = pair_handle(&state, &tenant_id, &pair)?;
    let link = handle
        .two_way_link(&pair, Some(&partner_id), None)?
        .ok_or_else(|| no_link(&pair, &format!("with partner id `{partner_id}`")))?;
    Ok(HttpResponse::Ok().json(json!({ "link": link })))
}

/// `GET /v1/tenants/{id}/two-way/{pair}/dead-letters`: the pair's refused writes.
#[utoipa::path(
    get,
    path = "/v1/tenants/{id}/two-way/{pair}/dead-letters",
    tag = "two-way",
    params(TenantPath, ("pair" = String, Path, description = "The pair: `mailchimp` or `platform:{name}`", example = "mailchimp"), PageQuery),
    responses(
        (status = 200, description = "`{\"dead_letters\": [...], \"next_after\"}`", body = Object),
        RunningTenantErrors,
    )
)]
async fn dead_letters(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let (tenant_id, pair) = path.into_inner();
    let handle = pair_handle(&state, &tenant_id, &pair)?;
    let limit = query.limit()?;
    let mut page = handle.two_way_dead_letters(&pair, query.after.unwrap_or(0), limit + 1)?;
    let next_after = cut_page(&mut page, limit, |letter| letter.seq);
    Ok(HttpResponse::Ok().json(json!({"dead_letters": page, "next_after": next_after})))
}

#[cfg(test)]
mod tests;
