//! `GET /feeds/{feed}/items`: one gate under the feed's lock (auth → scripted step →
//! random fault → handler), then the page. Errors are `{"error", "message"}`.

use std::collections::HashMap;

use actix_web::http::header::{HeaderValue, RETRY_AFTER};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::feed::{FeedState, Registry};
use super::items::{parse_instant_ms, Item, Listing};
use crate::clock::now_ms;
use crate::faults::RequestKey;
use crate::gate::{path_and_query, record_get, Plan};
use crate::registry::Entry as _;
use crate::server::{path_param, query_fields, status_code};

/// The route template a script step's `match.path` may name.
pub(crate) const ITEMS_ROUTE: &str = "/items";

pub(crate) fn configure(config: &mut web::ServiceConfig) {
    config.route("/{feed}/items", web::get().to(get_items));
}

pub(crate) fn error(status: u16, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status_code(status)).json(json!({"error": code, "message": message}))
}

/// The listing a request asks for: its cursor (which carries the whole query), or its
/// parameters.
fn listing_of(state: &FeedState, query: &HashMap<String, String>) -> Result<Listing, String> {
    if let Some(cursor) = query.get("cursor") {
        return Listing::from_cursor(cursor).ok_or_else(|| "cursor is not valid".to_owned());
    }
    let param = &state.spec.updated_since_param;
    let updated_since_ms = match query.get(param) {
        Some(text) => Some(
            parse_instant_ms(text)
                .ok_or_else(|| format!("{param} {text:?} is not an ISO 8601 date-time"))?,
        ),
        None => None,
    };
    let limit_max = state.spec.limit_max;
    let limit = match query.get("limit") {
        Some(text) => text
            .parse::<u64>()
            .ok()
            .filter(|limit| (1..=limit_max).contains(limit))
            .ok_or_else(|| format!("limit must be between 1 and {limit_max}"))?,
        None => state.spec.page_size,
    };
    Ok(Listing {
        updated_since_ms,
        limit,
        after: None,
    })
}

fn items_page(state: &mut FeedState, query: &HashMap<String, String>) -> HttpResponse {
    let listing = match listing_of(state, query) {
        Ok(listing) => listing,
        Err(message) => return error(400, "invalid_query", &message),
    };
    let page = state.items.page(&listing);
    let items: Vec<Value> = page.items.iter().map(|item| Item::to_json(item)).collect();
    let next_cursor = page.next.map(|next| next.to_cursor());
    state.counters.items_returned += items.len() as u64;
    HttpResponse::Ok().json(json!({"items": items, "next_cursor": next_cursor}))
}

async fn get_items(request: HttpRequest, registry: web::Data<Registry>) -> HttpResponse {
    let now = now_ms();
    let feed_id = path_param(&request, "feed");
    let Some(feed) = registry.by_id(&feed_id) else {
        return error(404, "not_found", &format!("unknown feed {feed_id:?}"));
    };
    let path = path_and_query(request.path(), request.query_string());
    let plan = {
        let mut state = feed.lock();
        let plan = gate(&mut state, &request);
        let state = &mut *state;
        let status = plan.logged_status();
        let by_status = &mut state.counters.api_requests_by_status;
        record_get(by_status, &mut state.requests, now, path, status);
        plan
    };
    plan.carry_out(&request).await
}

/// The auth header carries exactly the feed's value (when the feed has one).
fn authorized(state: &FeedState, request: &HttpRequest) -> bool {
    let (Some(header), Some(expected)) = (&state.spec.auth_header, &state.spec.auth_value) else {
        return true;
    };
    request
        .headers()
        .get(header.as_str())
        .is_some_and(|value| value.as_bytes() == expected.as_bytes())
}

fn gate(state: &mut FeedState, request: &HttpRequest) -> Plan {
    if !authorized(state, request) {
        state.counters.unauthorized += 1;
        return Plan::refuse(error(401, "unauthorized", "missing or wrong credentials"));
    }
    let query = query_fields(request.query_string());
    let sequence = state.counters.api_requests_by_status.values().sum::<u64>();
    let key = RequestKey {
        method: request.method().as_str(),
        path: request.path(),
        route: ITEMS_ROUTE,
        transaction_id: request.query_string(),
    };
    let latency_ms = state.faults.random.latency_ms;
    let seed = state.spec.seed;
    let decision = state.faults.decide(seed, &key, sequence as u32 + 1);
    let fault_answer = |status, retry_after_s: Option<u64>, body| {
        let mut response = match (body, status) {
            (Some(body), _) => HttpResponse::build(status_code(status)).json(body),
            (None, 429) => error(429, "rate_limited", "Too many requests."),
            (None, 401) => error(401, "unauthorized", "missing or wrong credentials"),
            (None, _) => error(status, "server_error", "An internal error occurred."),
        };
        if let Some(seconds) = retry_after_s {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    };
    Plan::from_decision(
        decision,
        latency_ms,
        || items_page(state, &query),
        fault_answer,
    )
}
