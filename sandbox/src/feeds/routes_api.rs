//! `GET /feeds/{feed}/items`: one gate under the feed's lock (auth → scripted step →
//! random fault → handler), then the page. Errors are `{"error", "message"}`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::feed::{FeedState, Registry};
use super::items::{parse_instant_ms, Item, Listing};
use crate::clock::now_ms;
use crate::faults::{FaultDecision, RequestKey};
use crate::registry::Entry as _;
use crate::request_log::LoggedRequest;
use crate::server::{close_connection, path_param};

/// The route template a script step's `match.path` may name.
pub(crate) const ITEMS_ROUTE: &str = "/items";

pub(crate) fn configure(config: &mut web::ServiceConfig) {
    config.route("/{feed}/items", web::get().to(get_items));
}

pub(crate) fn error(status: u16, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .json(json!({"error": code, "message": message}))
}

fn query_fields(text: &str) -> HashMap<String, String> {
    web::Query::<HashMap<String, String>>::from_query(text)
        .map(web::Query::into_inner)
        .unwrap_or_default()
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

/// What the gate decided under the lock.
enum Plan {
    Answer {
        response: HttpResponse,
        latency_ms: u64,
        close_unanswered: bool,
    },
    Hang {
        timeout_ms: u64,
    },
}

async fn get_items(request: HttpRequest, registry: web::Data<Registry>) -> HttpResponse {
    let now = now_ms();
    let feed_id = path_param(&request, "feed");
    let Some(feed) = registry.by_id(&feed_id) else {
        return error(404, "not_found", &format!("unknown feed {feed_id:?}"));
    };
    let path = match request.query_string() {
        "" => request.path().to_owned(),
        query => format!("{}?{query}", request.path()),
    };
    let plan = {
        let mut state = feed.lock();
        let plan = gate(&mut state, &request);
        let status = match &plan {
            Plan::Answer {
                response,
                close_unanswered,
                ..
            } if !close_unanswered => response.status().as_u16(),
            _ => 0,
        };
        *state
            .counters
            .api_requests_by_status
            .entry(status)
            .or_default() += 1;
        state.requests.push(LoggedRequest {
            at_ms: now,
            method: "GET",
            path: Cow::Owned(path),
            status,
            transaction_ids: Vec::new(),
            reference_ids: Vec::new(),
        });
        plan
    };
    match plan {
        Plan::Answer {
            response,
            latency_ms,
            close_unanswered,
        } => {
            if latency_ms > 0 {
                tokio::time::sleep(Duration::from_millis(latency_ms)).await;
            }
            if close_unanswered {
                close_connection(&request);
            }
            response
        }
        Plan::Hang { timeout_ms } => {
            tokio::time::sleep(Duration::from_millis(timeout_ms)).await;
            close_connection(&request);
            HttpResponse::InternalServerError().finish()
        }
    }
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
    let answer = |response| Plan::Answer {
        response,
        latency_ms: 0,
        close_unanswered: false,
    };
    if !authorized(state, request) {
        state.counters.unauthorized += 1;
        return answer(error(401, "unauthorized", "missing or wrong credentials"));
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
    match state.faults.decide(seed, &key, sequence as u32 + 1) {
        FaultDecision::Pass => Plan::Answer {
            response: items_page(state, &query),
            latency_ms,
            close_unanswered: false,
        },
        FaultDecision::Answer {
            status,
            retry_after_s,
            body,
            ..
        } => {
            let mut response = match (body, status) {
                (Some(body), _) => HttpResponse::build(
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                )
                .json(body),
                (None, 429) => error(429, "rate_limited", "Too many requests."),
                (None, 401) => error(401, "unauthorized", "missing or wrong credentials"),
                (None, _) => error(status, "server_error", "An internal error occurred."),
            };
            if let Some(seconds) = retry_after_s {
                if let Ok(value) =
                    actix_web::http::header::HeaderValue::from_str(&seconds.to_string())
                {
                    response
                        .headers_mut()
                        .insert(actix_web::http::header::RETRY_AFTER, value);
                }
            }
            Plan::Answer {
                response,
                latency_ms,
                close_unanswered: false,
            }
        }
        FaultDecision::Hang { timeout_ms } => Plan::Hang { timeout_ms },
        FaultDecision::ApplyThenClose => Plan::Answer {
            response: items_page(state, &query),
            latency_ms,
            close_unanswered: true,
        },
    }
}
