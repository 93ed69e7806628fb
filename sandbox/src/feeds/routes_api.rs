//! `GET /feeds/{feed}/items`: the crate's JSON gate under the feed's lock (auth → scripted
//! step → random fault → handler, counted and logged), then the page. Errors are
//! `{"error", "message"}`.

use std::collections::HashMap;

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::feed::{FeedState, Registry};
use super::items::{Item, Listing};
use crate::faults::Faults;
use crate::gate::{json_error, serve_json, JsonGated};
use crate::listing::PageRules;
use crate::request_log::LoggedRequest;
use crate::server::{path_param, query_fields};

/// The route template a script step's `match.path` may name.
pub(crate) const ITEMS_ROUTE: &str = "/items";

pub(crate) fn configure(config: &mut web::ServiceConfig) {
    config.route("/{feed}/items", web::get().to(get_items));
}

impl JsonGated for FeedState {
    fn faults(&mut self) -> &mut Faults {
        &mut self.faults
    }
    fn seed(&self) -> u64 {
        self.spec.seed
    }
    fn requests_so_far(&self) -> u64 {
        self.counters.api_requests_by_status.values().sum()
    }
    /// The auth header carries exactly the feed's value (when the feed has one).
    fn authorize(&mut self, request: &HttpRequest) -> bool {
        let (Some(header), Some(expected)) = (&self.spec.auth_header, &self.spec.auth_value) else {
            return true;
        };
        let authorized = request
            .headers()
            .get(header.as_str())
            .is_some_and(|value| value.as_bytes() == expected.as_bytes());
        if !authorized {
            self.counters.unauthorized += 1;
        }
        authorized
    }
    fn record(&mut self, _route: &str, request: LoggedRequest) {
        *self
            .counters
            .api_requests_by_status
            .entry(request.status)
            .or_default() += 1;
        self.requests.push(request);
    }
}

fn items_page(state: &mut FeedState, query: &HashMap<String, String>) -> HttpResponse {
    let rules = PageRules {
        since_param: &state.spec.updated_since_param,
        page_size: state.spec.page_size,
        limit_max: state.spec.limit_max,
    };
    let listing = match Listing::from_query(query, &rules) {
        Ok(listing) => listing,
        Err(message) => return json_error(400, "invalid_query", &message),
    };
    let (items, next) = state.items.since_page(&listing);
    let items: Vec<Value> = items.iter().map(|item| Item::to_json(item)).collect();
    let next_cursor = next.map(|next| next.to_cursor());
    state.counters.items_returned += items.len() as u64;
    HttpResponse::Ok().json(json!({"items": items, "next_cursor": next_cursor}))
}

async fn get_items(request: HttpRequest, registry: web::Data<Registry>) -> HttpResponse {
    let feed_id = path_param(&request, "feed");
    let Some(feed) = registry.by_id(&feed_id) else {
        return json_error(404, "not_found", &format!("unknown feed {feed_id:?}"));
    };
    let query = query_fields(request.query_string());
    serve_json(&request, &*feed, ITEMS_ROUTE, |state| {
        items_page(state, &query)
    })
    .await
}
