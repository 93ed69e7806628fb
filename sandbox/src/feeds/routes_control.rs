//! The control API under `/_sandbox/feeds` (no auth, never counted): feeds, items added
//! and changed as a user would, faults, counters and the request log.

use std::sync::Arc;

use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::feed::{CreateFeedError, Feed, FeedState, Generate, Registry};
use super::FeedSpec;
use crate::faults::{RandomFaults, ScriptBody};
use crate::registry::Entry as _;
use crate::server::path_param;

pub(crate) fn configure(config: &mut web::ServiceConfig) {
    config
        .route("", web::post().to(create_feed))
        .route("/{feed}/items", web::post().to(add_items))
        .route("/{feed}/items", web::get().to(list_items))
        .route("/{feed}/items/touch", web::post().to(touch))
        .route("/{feed}/items/{item}", web::patch().to(edit_item))
        .route("/{feed}/faults", web::put().to(put_faults))
        .route("/{feed}/faults", web::delete().to(delete_faults))
        .route("/{feed}/script", web::post().to(put_script))
        .route("/{feed}/stats", web::get().to(stats))
        .route("/{feed}/requests", web::get().to(requests));
}

fn message(status: u16, text: &str) -> HttpResponse {
    let status = actix_web::http::StatusCode::from_u16(status)
        .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
    HttpResponse::build(status).json(json!({ "message": text }))
}

// The error is the finished rejection response, built once on a cold path.
#[allow(clippy::result_large_err)]
fn feed_of(request: &HttpRequest, registry: &Registry) -> Result<Arc<Feed>, HttpResponse> {
    let id = path_param(request, "feed");
    registry
        .by_id(&id)
        .ok_or_else(|| message(404, &format!("unknown feed {id:?}")))
}

// The error is the finished rejection response, built once on a cold path.
#[allow(clippy::result_large_err)]
fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, HttpResponse> {
    serde_json::from_slice(body).map_err(|error| message(400, &format!("invalid body: {error}")))
}

/// Runs `action` on the feed's state after parsing the body; the usual 404/400 wrapping.
fn with_body<T, Action>(
    request: &HttpRequest,
    registry: &Registry,
    body: &[u8],
    action: Action,
) -> HttpResponse
where
    T: serde::de::DeserializeOwned,
    Action: FnOnce(&mut FeedState, T) -> HttpResponse,
{
    let feed = match feed_of(request, registry) {
        Ok(feed) => feed,
        Err(response) => return response,
    };
    let parsed: T = match json_body(body) {
        Ok(parsed) => parsed,
        Err(response) => return response,
    };
    let mut state = feed.lock();
    action(&mut state, parsed)
}

/// Runs `action` on the feed's state; 404 for an unknown feed.
fn with_feed(
    request: &HttpRequest,
    registry: &Registry,
    action: impl FnOnce(&mut FeedState) -> HttpResponse,
) -> HttpResponse {
    match feed_of(request, registry) {
        Ok(feed) => action(&mut feed.lock()),
        Err(response) => response,
    }
}

async fn create_feed(body: Bytes, registry: web::Data<Registry>) -> HttpResponse {
    let spec: FeedSpec = match json_body(&body) {
        Ok(spec) => spec,
        Err(response) => return response,
    };
    let id = spec.id.clone();
    match registry.create(spec, false) {
        Ok(()) => HttpResponse::Created().json(json!({ "id": id })),
        Err(error @ CreateFeedError::IdTaken(_)) => message(409, &error.to_string()),
        Err(error @ CreateFeedError::Invalid(_)) => message(400, &error.to_string()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddItems {
    #[serde(default)]
    items: Vec<Value>,
    #[serde(default)]
    generate: Option<Generate>,
}

/// `POST .../items`: `{"items": [...]}` and/or `{"generate": {count, template,
/// updated_at?}}`, all or nothing; `201 {"ids"}` in order.
async fn add_items(
    request: HttpRequest,
    body: Bytes,
    registry: web::Data<Registry>,
) -> HttpResponse {
    with_body(&request, &registry, &body, |state, add: AddItems| {
        let mut ids = match state.add_items(add.items) {
            Ok(ids) => ids,
            Err(reason) => return message(400, &reason),
        };
        if let Some(generate) = add.generate {
            match state.generate(generate) {
                Ok(more) => ids.extend(more),
                Err(reason) => return message(400, &reason),
            }
        }
        HttpResponse::Created().json(json!({ "ids": ids }))
    })
}

/// `PATCH .../items/{item}`: a JSON merge patch, as a user's edit.
async fn edit_item(
    request: HttpRequest,
    body: Bytes,
    registry: web::Data<Registry>,
) -> HttpResponse {
    let item_id = path_param(&request, "item");
    with_body(
        &request,
        &registry,
        &body,
        |state, patch: Value| match state.edit_item(&item_id, &patch) {
            Ok(item) => HttpResponse::Ok().json(item),
            Err(reason) if reason.starts_with("unknown item") => message(404, &reason),
            Err(reason) => message(400, &reason),
        },
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Touch {
    updated_at: String,
    /// Absent = every item.
    #[serde(default)]
    item_ids: Option<Vec<String>>,
}

async fn touch(request: HttpRequest, body: Bytes, registry: web::Data<Registry>) -> HttpResponse {
    with_body(
        &request,
        &registry,
        &body,
        |state, touch: Touch| match state.touch(&touch.updated_at, touch.item_ids) {
            Ok(touched) => HttpResponse::Ok().json(json!({ "touched": touched })),
            Err(reason) => message(400, &reason),
        },
    )
}

/// `GET .../items`: every item in listing order.
async fn list_items(request: HttpRequest, registry: web::Data<Registry>) -> HttpResponse {
    with_feed(&request, &registry, |state| {
        HttpResponse::Ok().json(json!({ "items": state.all_items() }))
    })
}

async fn put_faults(
    request: HttpRequest,
    body: Bytes,
    registry: web::Data<Registry>,
) -> HttpResponse {
    with_body(&request, &registry, &body, |state, faults: RandomFaults| {
        if let Err(reason) = faults.validate() {
            return message(400, &reason);
        }
        state.faults.random = faults;
        HttpResponse::NoContent().finish()
    })
}

async fn delete_faults(request: HttpRequest, registry: web::Data<Registry>) -> HttpResponse {
    with_feed(&request, &registry, |state| {
        state.faults.random = RandomFaults::default();
        state.faults.script.clear();
        HttpResponse::NoContent().finish()
    })
}

async fn put_script(
    request: HttpRequest,
    body: Bytes,
    registry: web::Data<Registry>,
) -> HttpResponse {
    with_body(&request, &registry, &body, |state, script: ScriptBody| {
        if let Err(reason) = script.validate() {
            return message(400, &reason);
        }
        state.faults.script = script.steps.into();
        HttpResponse::NoContent().finish()
    })
}

async fn stats(request: HttpRequest, registry: web::Data<Registry>) -> HttpResponse {
    with_feed(&request, &registry, |state| {
        HttpResponse::Ok().json(json!({
            "counters": state.counters,
            "items": state.items.len(),
            "page_size": state.spec.page_size,
            "limit_max": state.spec.limit_max,
            "updated_since_param": state.spec.updated_since_param,
        }))
    })
}

/// `GET .../requests`: the listing calls, oldest first.
async fn requests(request: HttpRequest, registry: web::Data<Registry>) -> HttpResponse {
    with_feed(&request, &registry, |state| {
        let entries: Vec<_> = state.requests.entries().iter().collect();
        HttpResponse::Ok().json(json!({ "requests": entries }))
    })
}
