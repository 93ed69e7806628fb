//! What came from Virtuous and was kept: `GET /v1/tenants/{id}/inbound/unparsed?after=&limit=`
//! lists the webhook events the parser could not understand, oldest first, each with its raw
//! JSON and the reason (the newest `UNPARSED_KEPT_MAX` per tenant are kept; docs/ingress.md).

use actix_web::{web, HttpResponse};
use serde::Serialize;
use steward_actors::store::unparsed_ops::UNPARSED_KEPT_MAX;
use utoipa::ToSchema;

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

/// A page of kept Virtuous events, oldest first.
#[derive(Serialize, ToSchema)]
struct UnparsedPage {
    unparsed: Vec<KeptEvent>,
    /// How many are kept now (the newest `kept_max` per tenant).
    kept: u64,
    kept_max: usize,
    /// The `after` of the next page; `null` on the last page.
    next_after: Option<u64>,
}

/// A Virtuous event kept because it could not be understood.
#[derive(Serialize, ToSchema)]
struct KeptEvent {
    id: u64,
    received_at: String,
    /// Where it came from (`virtuous_webhook`).
    origin: String,
    /// Why it was not understood.
    reason: String,
    /// The event's JSON as received, as text.
    raw: String,
}

/// `GET /v1/tenants/{id}/inbound/unparsed`: Virtuous events kept because they could not be
/// understood, oldest first.
#[utoipa::path(
    get,
    path = "/v1/tenants/{id}/inbound/unparsed",
    tag = "records",
    params(TenantPath, PageQuery),
    responses(
        (status = 200, description = "A page of kept events", body = UnparsedPage),
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
    let unparsed = page
        .into_iter()
        .map(|event| KeptEvent {
            id: event.id,
            received_at: format_ms(event.received_at_ms),
            origin: event.origin,
            reason: event.reason,
            raw: event.raw_json,
        })
        .collect();
    Ok(HttpResponse::Ok().json(UnparsedPage {
        unparsed,
        kept,
        kept_max: UNPARSED_KEPT_MAX,
        next_after,
    }))
}
