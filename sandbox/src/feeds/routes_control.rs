//! The control API under `/_sandbox/feeds` (no auth, never counted): feeds, items added
//! and changed as a user would, faults, counters and the request log.

use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::feed::{CreateFeedError, Feed, FeedState, Generate, Registry};
use super::FeedSpec;
use crate::control::{self, json_body, message, EntryPath, FaultsEntry};
use crate::faults::Faults;
use crate::server::path_param;

pub(crate) fn configure(config: &mut web::ServiceConfig) {
    config
        .route("", web::post().to(create_feed))
        .route("/{feed}/items", web::post().to(add_items))
        .route("/{feed}/items", web::get().to(list_items))
        .route("/{feed}/items/touch", web::post().to(touch))
        .route("/{feed}/items/{item}", web::patch().to(edit_item))
        .route("/{feed}/faults", web::put().to(control::put_faults::<Feed>))
        .route(
            "/{feed}/faults",
            web::delete().to(control::delete_faults::<Feed>),
        )
        .route(
            "/{feed}/script",
            web::post().to(control::put_script::<Feed>),
        )
        .route("/{feed}/stats", web::get().to(stats))
        .route("/{feed}/requests", web::get().to(requests));
}

/// Control paths name their feed by `{feed}`.
const FEED: EntryPath = EntryPath {
    param: "feed",
    noun: "feed",
};

impl FaultsEntry for Feed {
    const PATH: EntryPath = FEED;
    type Registries = Registry;

    fn faults(state: &mut FeedState) -> &mut Faults {
        &mut state.faults
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
    FEED.with_body(&request, &registry, &body, |state, add: AddItems| {
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
    FEED.with_body(
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
    FEED.with_body(
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
    FEED.with(&request, &registry, |state| {
        HttpResponse::Ok().json(json!({ "items": state.all_items() }))
    })
}

async fn stats(request: HttpRequest, registry: web::Data<Registry>) -> HttpResponse {
    FEED.with(&request, &registry, |state| {
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
    FEED.with(&request, &registry, |state| {
        let entries: Vec<_> = state.requests.entries().iter().collect();
        HttpResponse::Ok().json(json!({ "requests": entries }))
    })
}
