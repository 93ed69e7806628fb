//! What came from Virtuous and was kept: `GET /v1/tenants/{id}/inbound/unparsed?after=&limit=`
//! lists the webhook events the parser could not understand, oldest first, each with its raw
//! JSON and the reason (the newest `UNPARSED_KEPT_MAX` per tenant are kept; docs/ingress.md).

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use steward_actors::store::unparsed_ops::UNPARSED_KEPT_MAX;

use super::error::{ApiError, ErrorCode};
use crate::app::AppState;
use crate::tenants::format_ms;

/// Events per page when `limit` is not given, and the most a page may hold.
const PAGE_LIMIT_DEFAULT: usize = 100;
const PAGE_LIMIT_MAX: usize = 1_000;

pub fn routes(config: &mut web::ServiceConfig) {
    config.route(
        "/tenants/{id}/inbound/unparsed",
        web::get().to(list_unparsed),
    );
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    /// The last id of the previous page.
    #[serde(default)]
    after: u64,
    limit: Option<usize>,
}

async fn list_unparsed(
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(PAGE_LIMIT_DEFAULT);
    if limit == 0 || limit > PAGE_LIMIT_MAX {
        return Err(ApiError::new(
            ErrorCode::InvalidField,
            format!("limit must be 1 to {PAGE_LIMIT_MAX}"),
        ));
    }
    // One more than asked tells whether another page follows.
    let (mut page, kept) = state.stores.unparsed_page(&path, query.after, limit + 1)?;
    let has_more = page.len() > limit;
    page.truncate(limit);
    let next_after = has_more
        .then(|| page.last().map(|event| event.id))
        .flatten();
    let events: Vec<_> = page
        .iter()
        .map(|event| {
            json!({"id": event.id, "received_at": format_ms(event.received_at_ms),
                   "origin": event.origin, "reason": event.reason, "raw": event.raw_json})
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "unparsed": events,
        "kept": kept,
        "kept_max": UNPARSED_KEPT_MAX,
        "next_after": next_after,
    })))
}
