//! Money reconciliation in the admin API (docs/backfill.md "Money reconciliation"):
//!
//! - `POST /v1/tenants/{id}/reconciliations` with `{"source", "from", "to"}` (days
//!   `YYYY-MM-DD`, both included, at most 366 days): `202` with the job once it is stored;
//!   `422 invalid_reconciliation` naming the field; `409 conflict` while another job of the
//!   tenant is unfinished.
//! - `GET /v1/tenants/{id}/reconciliations`: every job (newest 50 finished, and the
//!   unfinished), oldest first, each without its day rows and differences.
//! - `GET /v1/tenants/{id}/reconciliations/{r}`: one job with its whole report.
//!
//! Amounts are shown in major units of their currency (`"12.34"`), as Virtuous has them.

use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde_json::{json, Map, Value};
use steward_actors::money::report::{DayRow, Sums};
use steward_actors::money::{
    days_inclusive, parse_day, Difference, MoneyReport, ReconciliationJob, RequestError,
    RANGE_DAYS_MAX,
};

use super::admin_pollers::running_handle;
use super::error::{ApiError, ErrorCode};
use super::openapi::{PayloadTooLarge, RunningTenantErrors, TenantPath, Unprocessable};
use super::{parse_json, read_body_limited};
use crate::app::AppState;
use crate::sources::amount::minor_to_major;
use crate::tenants::format_ms;

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .service(
            web::resource("/tenants/{id}/reconciliations")
                .route(web::post().to(create))
                .route(web::get().to(list)),
        )
        .service(web::resource("/tenants/{id}/reconciliations/{job}").route(web::get().to(get)));
}

/// The errors of these routes: a refused body (`422 invalid_reconciliation`, naming the
/// field), or any of the API's common errors.
#[derive(Debug, thiserror::Error)]
pub enum ReconciliationApiError {
    #[error("field `{field}` is invalid: {reason}")]
    Invalid { field: String, reason: String },
    #[error(transparent)]
    Api(#[from] ApiError),
}

fn invalid(field: &str, reason: impl Into<String>) -> ReconciliationApiError {
    ReconciliationApiError::Invalid {
        field: field.to_string(),
        reason: reason.into(),
    }
}

impl From<steward_actors::store::StoreError> for ReconciliationApiError {
    fn from(error: steward_actors::store::StoreError) -> Self {
        ReconciliationApiError::Api(error.into())
    }
}

impl ResponseError for ReconciliationApiError {
    fn status_code(&self) -> actix_web::http::StatusCode {
        match self {
            ReconciliationApiError::Invalid { .. } => ErrorCode::InvalidReconciliation.status(),
            ReconciliationApiError::Api(error) => error.status_code(),
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            ReconciliationApiError::Invalid { .. } => {
                ApiError::new(ErrorCode::InvalidReconciliation, self.to_string()).error_response()
            }
            ReconciliationApiError::Api(error) => error.error_response(),
        }
    }
}

/// A body's days and source, checked field by field.
#[derive(Debug, PartialEq, Eq)]
struct Asked {
    source: String,
    from: jiff::civil::Date,
    to: jiff::civil::Date,
}

/// `{"source", "from", "to"}` → what to reconcile (the source is checked against the
/// tenant's gift sources afterwards).
fn parse_body(body: &Value) -> Result<Asked, ReconciliationApiError> {
    let Value::Object(fields) = body else {
        return Err(invalid(
            "body",
            "must be a JSON object {\"source\", \"from\", \"to\"}",
        ));
    };
    if let Some(unknown) = fields
        .keys()
        .find(|key| !["source", "from", "to"].contains(&key.as_str()))
    {
        return Err(invalid(
            unknown,
            "is not a field of a reconciliation (source, from, to)",
        ));
    }
    let text = |name: &str| match fields.get(name) {
        Some(Value::String(text)) if !text.is_empty() => Ok(text.clone()),
        Some(_) => Err(invalid(name, "must be a non-empty string")),
        None => Err(invalid(name, "is required")),
    };
    let day = |name: &str| {
        let text = text(name)?;
        parse_day(&text).ok_or_else(|| invalid(name, format!("`{text}` is not a day YYYY-MM-DD")))
    };
    let source = text("source")?;
    let (from, to) = (day("from")?, day("to")?);
    let days = days_inclusive(from, to);
    if days < 1 {
        return Err(invalid("to", format!("{to} is before `from` ({from})")));
    }
    if days > RANGE_DAYS_MAX {
        return Err(invalid(
            "to",
            format!("the range is {days} days; at most {RANGE_DAYS_MAX} per reconciliation"),
        ));
    }
    Ok(Asked { source, from, to })
}

/// `POST /v1/tenants/{id}/reconciliations`: reconciles a source's money over days.
#[utoipa::path(
    post,
    operation_id = "create_reconciliation",
    path = "/v1/tenants/{id}/reconciliations",
    tag = "reconciliations",
    params(TenantPath),
    request_body(content = Object, description = "`{\"source\", \"from\", \"to\"}`: days `YYYY-MM-DD`, inclusive", example = json!({"source": "stripe", "from": "2026-01-01", "to": "2026-01-31"})),
    responses(
        (status = 202, description = "The job, queued", body = Object),
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
) -> Result<HttpResponse, ReconciliationApiError> {
    let tenant_id = path.into_inner();
    let handle = running_handle(&state, &tenant_id)?;
    let body = read_body_limited(&request, payload, state.config.body_limit_bytes).await?;
    let asked = parse_body(&parse_json(&body)?)?;
    let job = handle
        .start_reconciliation(&asked.source, asked.from, asked.to)
        .await
        .map_err(|error| match error {
            RequestError::UnknownSource { .. } => invalid("source", error.to_string()),
            RequestError::InvalidDay(_) | RequestError::EmptyRange { .. } => {
                invalid("to", error.to_string())
            }
            RequestError::AlreadyRunning { .. } => {
                ApiError::new(ErrorCode::Conflict, error.to_string()).into()
            }
            RequestError::Store(message) => {
                tracing::error!(tenant_id = %tenant_id, error = %message, "reconciliation not stored");
                ApiError::new(ErrorCode::Internal, "the store failed; see the server log").into()
            }
        })?;
    Ok(HttpResponse::Accepted().json(job_json(&job, true)))
}

/// `GET /v1/tenants/{id}/reconciliations`: the tenant's jobs.
#[utoipa::path(
    get,
    operation_id = "list_reconciliations",
    path = "/v1/tenants/{id}/reconciliations",
    tag = "reconciliations",
    params(TenantPath),
    responses(
        (status = 200, description = "`{\"reconciliations\": [...]}`", body = Object),
        RunningTenantErrors,
    )
)]
async fn list(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ReconciliationApiError> {
    let handle = running_handle(&state, &path.into_inner())?;
    let jobs: Vec<Value> = handle
        .reconciliations()?
        .iter()
        .map(|job| job_json(job, false))
        .collect();
    Ok(HttpResponse::Ok().json(json!({"reconciliations": jobs})))
}

/// `GET /v1/tenants/{id}/reconciliations/{job}`: one job.
#[utoipa::path(
    get,
    operation_id = "get_reconciliation",
    path = "/v1/tenants/{id}/reconciliations/{job}",
    tag = "reconciliations",
    params(TenantPath, ("job" = String, Path, description = "The reconciliation job's id", example = "rc_1")),
    responses(
        (status = 200, description = "The job with its report", body = Object),
        RunningTenantErrors,
    )
)]
async fn get(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ReconciliationApiError> {
    let (tenant_id, job_id) = path.into_inner();
    let handle = running_handle(&state, &tenant_id)?;
    match handle.reconciliation(&job_id)? {
        Some(job) => Ok(HttpResponse::Ok().json(job_json(&job, true))),
        None => Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no reconciliation `{job_id}` for tenant `{tenant_id}`"),
        )
        .into()),
    }
}

/// A job as the API shows it; `whole`: with the report's day rows and differences.
pub fn job_json(job: &ReconciliationJob, whole: bool) -> Value {
    let progress = &job.progress;
    let percent = match (job.state.is_final(), progress.total) {
        (true, _) => Some(100),
        (false, Some(total)) if total > 0 => Some((progress.skip.min(total) * 100) / total),
        _ => None,
    };
    json!({
        "id": job.id,
        "source": job.source,
        "transaction_source": job.transaction_source,
        "from": job.from,
        "to": job.to,
        "trigger": job.trigger.name(),
        "reason": job.reason,
        "state": job.state.name(),
        "created_at": format_ms(job.created_at_ms),
        "started_at": job.started_at_ms.map(format_ms),
        "finished_at": job.finished_at_ms.map(format_ms),
        "progress": {
            "pages_read": progress.pages_read,
            "pages_total": progress.pages_total,
            "gifts_read": progress.skip,
            "gifts_total": progress.total,
            "percent": percent,
        },
        "error": job.error,
        "report": job.report.as_ref().map(|report| report_json(report, whole)),
    })
}

fn sums_json(sums: &Sums, currency: &str) -> Value {
    json!({"count": sums.count, "sum": minor_to_major(sums.amount_minor, currency)})
}

fn day_json(row: &DayRow) -> Value {
    json!({
        "day": row.day,
        "project": row.project,
        "currency": row.currency,
        "source": sums_json(&row.source, &row.currency),
        "virtuous": sums_json(&row.virtuous, &row.currency),
        "difference": minor_to_major(
            row.virtuous.amount_minor.saturating_sub(row.source.amount_minor),
            &row.currency
        ),
    })
}

fn difference_json(difference: &Difference) -> Value {
    let side = |amount: Option<i64>, currency: &Option<String>, project: &Option<String>| {
        amount.map(|amount_minor| {
            let currency = currency.clone().unwrap_or_else(|| "usd".into());
            json!({
                "amount": minor_to_major(amount_minor, &currency),
                "currency": currency,
                "project": project,
            })
        })
    };
    let mut virtuous = side(
        difference.virtuous_amount_minor,
        &difference.virtuous_currency,
        &difference.virtuous_project,
    );
    if let Some(Value::Object(fields)) = virtuous.as_mut() {
        fields.insert("gift_ids".into(), json!(difference.virtuous_ids));
    }
    json!({
        "transaction_id": difference.transaction_id,
        "kind": difference.kind.name(),
        "day": difference.day,
        "source": side(
            difference.source_amount_minor,
            &difference.source_currency,
            &difference.source_project,
        ),
        "virtuous": virtuous,
    })
}

fn report_json(report: &MoneyReport, whole: bool) -> Value {
    let differences_total: u64 = report.differences_by_kind.values().sum();
    let mut shown = Map::new();
    shown.insert("clean".into(), json!(report.clean));
    shown.insert("mismatches".into(), json!(report.mismatches));
    shown.insert("differences_total".into(), json!(differences_total));
    shown.insert(
        "differences_by_kind".into(),
        json!(report.differences_by_kind),
    );
    shown.insert(
        "totals".into(),
        Value::Array(
            report
                .totals
                .iter()
                .map(|totals| {
                    json!({
                        "currency": totals.currency,
                        "source": sums_json(&totals.source, &totals.currency),
                        "virtuous": sums_json(&totals.virtuous, &totals.currency),
                    })
                })
                .collect(),
        ),
    );
    shown.insert(
        "virtuous_gifts_read".into(),
        json!(report.virtuous_gifts_read),
    );
    shown.insert(
        "virtuous_unreadable".into(),
        json!(report.virtuous_unreadable),
    );
    shown.insert(
        "reversals_unmatched".into(),
        json!(report.reversals_unmatched),
    );
    if whole {
        shown.insert(
            "days".into(),
            Value::Array(report.days.iter().map(day_json).collect()),
        );
        shown.insert(
            "differences".into(),
            Value::Array(report.differences.iter().map(difference_json).collect()),
        );
    }
    Value::Object(shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_checked_field_by_field() {
        // Goal: each refusal names its field; a valid body gives the days.
        let cases = [
            (json!([1]), "body"),
            (
                json!({"source": "stripe", "from": "2026-01-01", "to": "2026-01-02", "x": 1}),
                "x",
            ),
            (json!({"from": "2026-01-01", "to": "2026-01-02"}), "source"),
            (
                json!({"source": 7, "from": "2026-01-01", "to": "2026-01-02"}),
                "source",
            ),
            (
                json!({"source": "stripe", "from": "01/01/2026", "to": "2026-01-02"}),
                "from",
            ),
            (json!({"source": "stripe", "from": "2026-01-01"}), "to"),
            (
                json!({"source": "stripe", "from": "2026-01-02", "to": "2026-01-01"}),
                "to",
            ),
            (
                json!({"source": "stripe", "from": "2025-01-01", "to": "2026-01-02"}),
                "to",
            ),
        ];
        for (body, field) in cases {
            match parse_body(&body) {
                Err(ReconciliationApiError::Invalid { field: named, .. }) => {
                    assert_eq!(named, field, "{body}")
                }
                other => panic!("{body}: {other:?}"),
            }
        }
        let asked =
            parse_body(&json!({"source": "stripe", "from": "2024-01-01", "to": "2024-12-31"}))
                .unwrap();
        assert_eq!(
            days_inclusive(asked.from, asked.to),
            366,
            "a leap year is allowed"
        );
        let error = invalid("to", "x").error_response();
        assert_eq!(error.status(), 422);
    }

    #[test]
    fn the_runtime_and_the_sources_agree_on_currency_decimals() {
        // Goal: the two lists of zero- and three-decimal currencies stay one list.
        use crate::sources::amount;
        use steward_actors::money;
        assert_eq!(
            amount::ZERO_DECIMAL_CURRENCIES,
            money::ZERO_DECIMAL_CURRENCIES
        );
        assert_eq!(
            amount::THREE_DECIMAL_CURRENCIES,
            money::THREE_DECIMAL_CURRENCIES
        );
        for currency in ["usd", "JPY", "kwd", "eur"] {
            assert_eq!(
                amount::minor_unit_decimals(currency),
                money::minor_unit_decimals(currency)
            );
        }
    }
}
