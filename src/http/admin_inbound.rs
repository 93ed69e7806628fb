//! What came from Virtuous and was kept: `GET /v1/tenants/{id}/inbound/unparsed?after=&limit=`
//! lists the webhook events the parser could not understand, oldest first, each with its raw
//! JSON and the reason (the newest `UNPARSED_KEPT_MAX` per tenant are kept; docs/ingress.md).

use actix_web::{web, HttpResponse};
use serde_json::json;
use steward_actors::store::unparsed_ops::UNPARSED_KEPT_MAX;

use super::error::ApiError;
use super::openapi::{TenantErrors, TenantPath};
use super::paging::{cut_page, PageQuery};
use crate::app::AppState;
use crate::tenants::format_ms;

pub fn routes(config: &mut web::ServiceConfig) {
    config.service(
        web::resource("/tenants/{id}/inbound/unparsed").route(web::get().to(list_unparsed)),
    );
}

/// `GET /v1/tenants/{id}/inbound/unparsed`: Virtuous events kept because they could not be
/// understood, oldest first.
#[utoipa::path(
    get,
    path = "/v1/tenants/{id}/inbound/unparsed",
    tag = "records",
    params(TenantPath, PageQuery),
    responses(
        (status = 200, description = "`{\"events\": [...], \"kept\", \"kept_max\", \"next_after\"}`", body = Object),
        TenantErrors,
    )
)]
async fn list_unparsed(
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit()?;
    let (mut page, kept) =
        state
            .stores
            .unparsed_page(&path, query.after.unwrap_or(0), limit + 1)?;
    let next_after = cut_page(&mut page, limit, |event| event.id);
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
