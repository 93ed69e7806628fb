//! The admin check for every `/v1` route: the bearer token, compared in constant time, or a
//! dashboard session cookie with its CSRF token on state-changing calls (`ui/session.rs`).

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, ResponseError};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::{ApiError, ErrorCode};
use super::ui::session::{SessionCheck, UiSessions};

/// The admin token, kept as its SHA-256 so comparisons take the same time whatever the
/// length of the presented token.
#[derive(Clone)]
pub struct AdminToken {
    digest: [u8; 32],
}

impl AdminToken {
    pub fn new(token: &str) -> AdminToken {
        AdminToken {
            digest: Sha256::digest(token.as_bytes()).into(),
        }
    }

    pub fn matches(&self, presented: &str) -> bool {
        let presented_digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        bool::from(self.digest.ct_eq(&presented_digest))
    }
}

/// Middleware: passes `Authorization: Bearer <admin token>`, or a dashboard session's cookie
/// (with `X-CSRF-Token` on POST, PUT, PATCH and DELETE: else 403 `csrf_failed`, nothing
/// done); anything else is 401 `unauthorized`.
pub async fn require_admin_token(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let token = request.app_data::<web::Data<AdminToken>>().cloned();
    let presented = request
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    let token_is_valid = match (token, presented) {
        (Some(token), Some(presented)) => token.matches(presented),
        _ => false,
    };
    if token_is_valid {
        return Ok(next.call(request).await?.map_into_boxed_body());
    }
    let session_check = match (presented, request.app_data::<web::Data<UiSessions>>()) {
        // A wrong bearer token is refused even beside a valid cookie.
        (None, Some(sessions)) => {
            sessions.check(request.request(), steward_actors::ports::now_ms())
        }
        _ => SessionCheck::NoSession,
    };
    let error = match session_check {
        SessionCheck::Valid => return Ok(next.call(request).await?.map_into_boxed_body()),
        SessionCheck::CsrfFailed => ApiError::new(
            ErrorCode::CsrfFailed,
            "a dashboard session needs its `X-CSRF-Token` header on every state-changing call",
        ),
        SessionCheck::NoSession => ApiError::new(
            ErrorCode::Unauthorized,
            "a valid `Authorization: Bearer <admin token>` header is required",
        ),
    };
    Ok(request.into_response(error.error_response()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_matches_only_itself() {
        // Goal: the exact token matches; prefixes, extensions and empty strings do not.
        let token = AdminToken::new("s3cret-token");
        assert!(token.matches("s3cret-token"));
        for wrong in ["", "s3cret", "s3cret-token2", "S3CRET-TOKEN"] {
            assert!(!token.matches(wrong), "{wrong}");
        }
    }
}
