//! The HTTP edge's one error type and its JSON shape:
//! `{"error": {"code": "bad_signature", "message": "…"}}` (docs/operations.md).

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::Next;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use steward_actors::store::StoreError;

use crate::tenant::TenantDocError;

/// The machine-readable error codes of the external contract. Their wire names are the serde
/// names (`snake_case`), which the OpenAPI document's `ErrorCode` enum is generated from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    Unauthorized,
    NotFound,
    UnknownTenant,
    InvalidTenantId,
    InvalidField,
    Conflict,
    TenantHasWork,
    BadSignature,
    StaleTimestamp,
    MalformedBody,
    PayloadTooLarge,
    IdempotencyFieldsChanged,
    Unavailable,
    Internal,
    /// A route that exists, called with a method it does not accept (`Allow` says which).
    MethodNotAllowed,
    /// Ingress admission refused a delivery (byte or in-flight cap): 503 + `Retry-After`,
    /// nothing stored, the connection closed (its body is never read).
    Overloaded,
    /// The body did not arrive within `ingress.body_read_timeout_s`: 408, connection closed.
    RequestTimeout,
    /// A webhook route of a source the tenant has, but not that path of it (a platform or
    /// Mailchimp source that is only polled): 404.
    SourceNotConfigured,
    /// A backfill job's spec was refused (422): the message names the field.
    InvalidBackfill,
    /// A backfill job's state does not allow the action (409): start needs `ready`, pause
    /// `running`, resume `paused`, cancel anything not final, an upload `awaiting_file`.
    InvalidTransition,
    /// A body whose `Content-Type` is not the one the route expects (415).
    UnsupportedMediaType,
    /// The tenant was exported to another instance (`moved`): its webhooks are answered 503
    /// with a long `Retry-After` (senders retry until traffic is routed there); admin actions
    /// that would run it are 409.
    Moved,
    /// A dashboard session's state-changing call without its `X-CSRF-Token` (missing, or
    /// another session's): 403, nothing done.
    CsrfFailed,
    /// A money reconciliation's body was refused (422): the message names the field.
    InvalidReconciliation,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::NotFound => "not_found",
            ErrorCode::UnknownTenant => "unknown_tenant",
            ErrorCode::InvalidTenantId => "invalid_tenant_id",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::Conflict => "conflict",
            ErrorCode::TenantHasWork => "tenant_has_work",
            ErrorCode::BadSignature => "bad_signature",
            ErrorCode::StaleTimestamp => "stale_timestamp",
            ErrorCode::MalformedBody => "malformed_body",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::IdempotencyFieldsChanged => "idempotency_fields_changed",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::SourceNotConfigured => "source_not_configured",
            ErrorCode::InvalidBackfill => "invalid_backfill",
            ErrorCode::InvalidTransition => "invalid_transition",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::Moved => "moved",
            ErrorCode::CsrfFailed => "csrf_failed",
            ErrorCode::InvalidReconciliation => "invalid_reconciliation",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::Unauthorized | ErrorCode::BadSignature | ErrorCode::StaleTimestamp => {
                StatusCode::UNAUTHORIZED
            }
            ErrorCode::NotFound | ErrorCode::UnknownTenant | ErrorCode::SourceNotConfigured => {
                StatusCode::NOT_FOUND
            }
            ErrorCode::InvalidTenantId
            | ErrorCode::InvalidField
            | ErrorCode::MalformedBody
            | ErrorCode::IdempotencyFieldsChanged => StatusCode::BAD_REQUEST,
            ErrorCode::Conflict | ErrorCode::TenantHasWork | ErrorCode::InvalidTransition => {
                StatusCode::CONFLICT
            }
            ErrorCode::InvalidBackfill | ErrorCode::InvalidReconciliation => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::Unavailable | ErrorCode::Moved => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorCode::CsrfFailed => StatusCode::FORBIDDEN,
        }
    }
}

/// Every error answer's body: `{"error": {"code", "message"}}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong: a code for programs, a message for people.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    /// Names the field, id or limit concerned; its wording is not part of the contract.
    pub message: String,
}

/// An error answered to an HTTP client.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }
}

/// Seconds a sender should wait before retrying a `503` (a mailbox full, an actor restarting).
pub const RETRY_AFTER_S: u64 = 1;
/// The same for a tenant that moved to another instance: until its traffic is routed there,
/// coming back every second would only load this one.
pub const MOVED_RETRY_AFTER_S: u64 = 60;

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code.status()
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if self.code == ErrorCode::MethodNotAllowed {
            // Every route that answers this accepts POST only (the webhook routes).
            response.insert_header((actix_web::http::header::ALLOW, "POST"));
        }
        if matches!(self.code, ErrorCode::Overloaded | ErrorCode::RequestTimeout) {
            // The body was not (fully) read: close rather than drain whatever the client
            // still sends, so a held or trickled body frees its connection now.
            response.force_close();
        }
        if matches!(self.code, ErrorCode::Unavailable | ErrorCode::Overloaded) {
            // Nothing was stored: the sender should come back soon (a restarting actor).
            response.insert_header((
                actix_web::http::header::RETRY_AFTER,
                RETRY_AFTER_S.to_string(),
            ));
        }
        if self.code == ErrorCode::Moved {
            // Nothing was stored; the tenant lives on another instance now.
            response.insert_header((
                actix_web::http::header::RETRY_AFTER,
                MOVED_RETRY_AFTER_S.to_string(),
            ));
        }
        response.json(ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message.clone(),
            },
        })
    }
}

/// Every listener's default service: a path no route matches is a JSON `404 not_found`.
pub async fn no_route(request: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(
        ErrorCode::NotFound,
        format!("no route for {} {}", request.method(), request.path()),
    ))
}

/// Middleware on every listener: the bodiless `404` and `405` actix answers by itself (a
/// resource called with a method it has no route for, a route the app does not know) get
/// the JSON error shape; a `405` keeps actix's `Allow` header, which lists the methods the
/// resource has. Answers that already carry a body type pass unchanged.
pub async fn json_error_bodies(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let response = next.call(request).await?.map_into_boxed_body();
    let code = match response.status() {
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
        _ => return Ok(response),
    };
    if response.headers().contains_key(header::CONTENT_TYPE) {
        return Ok(response);
    }
    let allow = response.headers().get(header::ALLOW).cloned();
    let (request, _) = response.into_parts();
    let message = match code {
        ErrorCode::MethodNotAllowed => {
            format!("{} does not accept {}", request.path(), request.method())
        }
        _ => format!("no route for {} {}", request.method(), request.path()),
    };
    let mut answer = ApiError::new(code, message).error_response();
    match allow {
        Some(allow) => {
            answer.headers_mut().insert(header::ALLOW, allow);
        }
        None => {
            answer.headers_mut().remove(header::ALLOW);
        }
    }
    Ok(ServiceResponse::new(request, answer))
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> ApiError {
        tracing::error!(error = %err, "store error while answering a request");
        ApiError::new(ErrorCode::Internal, "the store failed; see the server log")
    }
}

impl From<TenantDocError> for ApiError {
    fn from(err: TenantDocError) -> ApiError {
        let code = match err {
            TenantDocError::NotAnObject => ErrorCode::MalformedBody,
            TenantDocError::InvalidTenantId(_) => ErrorCode::InvalidTenantId,
            TenantDocError::InvalidField { .. } => ErrorCode::InvalidField,
        };
        ApiError::new(code, err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_written_as_its_documented_name() {
        // Goal: the wire name of every code (serde, which the OpenAPI enum is generated
        // from) is `as_str`, which logs and metrics use; the document lists every variant.
        use utoipa::PartialSchema;
        let schema = serde_json::to_value(ErrorCode::schema()).unwrap();
        let names = schema["enum"].as_array().expect("an enum schema");
        assert!(names.len() >= 23, "{schema}");
        for name in names {
            let code: ErrorCode = serde_json::from_value(name.clone()).unwrap();
            assert_eq!(code.as_str(), name.as_str().unwrap());
            assert_eq!(serde_json::to_value(code).unwrap(), *name);
        }
    }

    #[test]
    fn an_unavailable_answer_says_when_to_come_back() {
        // Goal: every 503 `unavailable` (nothing stored) carries Retry-After; other errors do not.
        let busy = ApiError::new(ErrorCode::Unavailable, "restarting").error_response();
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            busy.headers().get(actix_web::http::header::RETRY_AFTER),
            Some(&actix_web::http::header::HeaderValue::from_static("1"))
        );
        let refused = ApiError::new(ErrorCode::BadSignature, "no").error_response();
        assert!(refused
            .headers()
            .get(actix_web::http::header::RETRY_AFTER)
            .is_none());
    }
}
