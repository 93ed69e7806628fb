//! `/partners/{partner}/contacts…`: the listing, one contact, and the upsert, each behind the
//! crate's JSON gate under the partner's lock (auth → scripted step → random fault →
//! handler, counted by route and status and logged). Errors are `{"error", "message"}`.

use actix_web::http::header::AUTHORIZATION;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::contacts::{Changes, Contact, Writer};
use super::partner::PartnerState;
use super::Partners;
use crate::faults::Faults;
use crate::gate::{json_error, serve_json, JsonGated};
use crate::listing::{PageRules, SinceListing};
use crate::request_log::LoggedRequest;
use crate::server::{path_param, query_fields};

/// The route templates a script step's `match.path` may name.
const CONTACTS_ROUTE: &str = "/contacts";
const CONTACT_ROUTE: &str = "/contacts/{id}";

const PAGE_RULES: PageRules<'static> = PageRules {
    since_param: "updated_since",
    page_size: 100,
    limit_max: 1_000,
};

pub(crate) fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/{partner}/contacts", web::get().to(list_contacts))
        .route("/{partner}/contacts/{id}", web::get().to(get_contact))
        .route("/{partner}/contacts/{id}", web::put().to(put_contact));
}

impl JsonGated for PartnerState {
    fn faults(&mut self) -> &mut Faults {
        &mut self.faults
    }
    fn seed(&self) -> u64 {
        self.spec.seed
    }
    fn requests_so_far(&self) -> u64 {
        self.requests
            .values()
            .flat_map(|by_status| by_status.values())
            .sum()
    }
    /// `Authorization: Bearer {api_token}`.
    fn authorize(&mut self, request: &HttpRequest) -> bool {
        let authorized = request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .is_some_and(|token| token == self.spec.api_token);
        if !authorized {
            self.counters.unauthorized += 1;
        }
        authorized
    }
    fn record(&mut self, route: &str, request: LoggedRequest) {
        let by_status = self
            .requests
            .entry(format!("{} {route}", request.method))
            .or_default();
        *by_status.entry(request.status).or_default() += 1;
        self.log.push(request);
    }
}

/// Runs `handle` behind the gate of the partner the path names (404 when unknown).
async fn serve(
    request: &HttpRequest,
    partners: &Partners,
    route: &str,
    handle: impl FnOnce(&mut PartnerState) -> HttpResponse,
) -> HttpResponse {
    let partner_id = path_param(request, "partner");
    match partners.registry.by_id(&partner_id) {
        Some(partner) => serve_json(request, &*partner, route, handle).await,
        None => json_error(404, "not_found", &format!("unknown partner {partner_id:?}")),
    }
}

fn unknown_contact(id: &str) -> HttpResponse {
    json_error(404, "not_found", &format!("unknown contact {id:?}"))
}

/// `GET …/contacts?updated_since=&cursor=&limit=`: `{"items", "next_cursor"}`.
async fn list_contacts(request: HttpRequest, partners: web::Data<Partners>) -> HttpResponse {
    let query = query_fields(request.query_string());
    serve(&request, &partners, CONTACTS_ROUTE, |state| {
        let listing = match SinceListing::from_query(&query, &PAGE_RULES) {
            Ok(listing) => listing,
            Err(message) => return json_error(400, "invalid_query", &message),
        };
        let (contacts, next) = state.contacts.since_page(&listing);
        let items: Vec<Value> = contacts.into_iter().map(Contact::to_json).collect();
        let next_cursor = next.map(|next| next.to_cursor());
        HttpResponse::Ok().json(json!({"items": items, "next_cursor": next_cursor}))
    })
    .await
}

async fn get_contact(request: HttpRequest, partners: web::Data<Partners>) -> HttpResponse {
    let id = path_param(&request, "id");
    serve(&request, &partners, CONTACT_ROUTE, |state| {
        match state.contacts.get(&id) {
            Some(contact) => HttpResponse::Ok().json(contact.to_json()),
            None => unknown_contact(&id),
        }
    })
    .await
}

/// `PUT …/contacts/{id}`: the upsert; `201` when it created the contact, else `200`.
async fn put_contact(
    request: HttpRequest,
    body: Bytes,
    partners: web::Data<Partners>,
) -> HttpResponse {
    let id = path_param(&request, "id");
    let changes = serde_json::from_slice::<Value>(&body)
        .map_err(|error| format!("the body is not JSON: {error}"))
        .and_then(|body| Changes::parse_for(&id, &body));
    serve(&request, &partners, CONTACT_ROUTE, |state| {
        let changes = match changes {
            Ok(changes) => changes,
            Err(message) => return json_error(400, "invalid_body", &message),
        };
        let written = state.write(&id, &changes, Writer::Api, false, false);
        match written.created {
            true => HttpResponse::Created().json(written.contact),
            false => HttpResponse::Ok().json(written.contact),
        }
    })
    .await
}
