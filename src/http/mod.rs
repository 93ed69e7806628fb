//! actix-web: the admin API (`/v1`), operations (`/metrics`, `/healthz`, `/readyz`) and,
//! later, webhook ingress (`/hooks`).

pub mod admin;
pub mod admin_backfill;
pub mod admin_backup;
pub mod admin_dead_letters;
pub mod admin_destinations;
pub mod admin_inbound;
pub mod admin_moves;
pub mod admin_pollers;
pub mod admin_reconciliations;
pub mod admin_records;
pub mod admin_test_events;
pub mod admin_two_way;
pub mod admission;
pub mod auth;
pub mod error;
pub mod ingress;
pub mod openapi;
pub mod ops;
pub mod paging;
pub mod ui;
pub mod virtuous_hook;

use actix_web::web;
use futures_util::StreamExt;

use error::{ApiError, ErrorCode};

/// Reads a request body of at most `limit_bytes`; larger → 413 `payload_too_large`.
/// The declared `Content-Length` is checked first so an oversized upload is refused early.
pub async fn read_body_limited(
    request: &actix_web::HttpRequest,
    payload: web::Payload,
    limit_bytes: usize,
) -> Result<web::Bytes, ApiError> {
    read_body_reserving(request, payload, limit_bytes, |_| Ok(())).await
}

/// The most a body buffer starts with: a large declared `Content-Length` grows the buffer
/// as its bytes really arrive, never up front.
pub const INITIAL_BODY_CAPACITY: usize = 64 * 1024;

/// [`read_body_limited`], calling `reserve(total_bytes)` before bytes are read: once with
/// the declared `Content-Length` (before any byte), then before each chunk is kept with the
/// total so far (ingress admission reserves them; an error stops the read).
pub async fn read_body_reserving(
    request: &actix_web::HttpRequest,
    mut payload: web::Payload,
    limit_bytes: usize,
    mut reserve: impl FnMut(usize) -> Result<(), ApiError>,
) -> Result<web::Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the body is larger than {limit_bytes} bytes"),
        )
    };
    let declared_length = request
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    if declared_length.is_some_and(|length| length > limit_bytes) {
        return Err(too_large());
    }
    reserve(declared_length.unwrap_or(0))?;
    let mut body =
        web::BytesMut::with_capacity(declared_length.unwrap_or(0).min(INITIAL_BODY_CAPACITY));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|err| {
            ApiError::new(
                ErrorCode::MalformedBody,
                format!("reading the body failed: {err}"),
            )
        })?;
        if body.len() + chunk.len() > limit_bytes {
            return Err(too_large());
        }
        reserve(body.len() + chunk.len())?;
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Parses a JSON body; anything else → 400 `malformed_body`.
pub fn parse_json(body: &[u8]) -> Result<serde_json::Value, ApiError> {
    serde_json::from_slice(body).map_err(|err| {
        ApiError::new(
            ErrorCode::MalformedBody,
            format!("the body is not valid JSON: {err}"),
        )
    })
}
