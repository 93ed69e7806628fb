//! The simulated API: the OAuth2 token endpoint and `GET /v3/contacts`. Every `/v3` call
//! passes one gate under the account's lock: access token → per-second limit → daily quota
//! → scripted step → random fault → handler. Errors have the v3 shape, an array of
//! `{"error_key", "error_message"}`; the token endpoint answers OAuth2 errors
//! (`{"error", "error_description"}`).

use std::borrow::Cow;
use std::collections::HashMap;

use actix_web::http::header::AUTHORIZATION;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

use super::account::{AccountState, RefreshRefusal, Registry};
use super::contacts::{parse_instant_ms, Listing, StatusFilter, LIMIT_DEFAULT, LIMIT_MAX};
use crate::clock::now_ms;
use crate::faults::RequestKey;
use crate::gate::{path_and_query, record_request, Plan};
use crate::ratelimit::Admission;
use crate::registry::Entry as _;
use crate::request_log::LoggedRequest;
use crate::server::{query_fields, status_code};

pub(crate) const TOKEN_PATH: &str = "/oauth2/default/v1/token";
pub(crate) const CONTACTS_PATH: &str = "/v3/contacts";

pub(crate) fn configure(config: &mut web::ServiceConfig) {
    config
        .route(CONTACTS_PATH, web::get().to(get_contacts))
        .route(TOKEN_PATH, web::post().to(token));
}

/// The v3 error shape.
pub(crate) fn v3_error(status: u16, error_key: &str, error_message: &str) -> HttpResponse {
    HttpResponse::build(status_code(status))
        .json(json!([{"error_key": error_key, "error_message": error_message}]))
}

fn oauth_error(status: u16, error: &str, description: &str) -> HttpResponse {
    HttpResponse::build(status_code(status))
        .json(json!({"error": error, "error_description": description}))
}

/// `Authorization: Basic base64(client_id:client_secret)`, else the form's fields.
fn client_credentials(
    request: &HttpRequest,
    form: &HashMap<String, String>,
) -> Option<(String, String)> {
    let basic = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Basic "))
        .and_then(|encoded| STANDARD.decode(encoded.trim()).ok())
        .and_then(|decoded| String::from_utf8(decoded).ok())
        .and_then(|pair| {
            pair.split_once(':')
                .map(|(id, secret)| (id.to_owned(), secret.to_owned()))
        });
    basic.or_else(|| {
        Some((
            form.get("client_id")?.clone(),
            form.get("client_secret")?.clone(),
        ))
    })
}

fn log(state: &mut AccountState, at_ms: u64, path: String, status: u16) {
    state.requests.push(LoggedRequest {
        at_ms,
        method: "POST",
        path: Cow::Owned(path),
        status,
        transaction_ids: Vec::new(),
        reference_ids: Vec::new(),
    });
}

/// `POST /oauth2/default/v1/token`, `grant_type=refresh_token` only.
async fn token(request: HttpRequest, body: Bytes, registry: web::Data<Registry>) -> HttpResponse {
    let now = now_ms();
    let form = query_fields(&String::from_utf8_lossy(&body));
    if form.get("grant_type").map(String::as_str) != Some("refresh_token") {
        return oauth_error(
            400,
            "unsupported_grant_type",
            "The authorization grant type is not supported by the authorization server.",
        );
    }
    let Some((client_id, client_secret)) = client_credentials(&request, &form) else {
        return oauth_error(401, "invalid_client", "Client authentication failed.");
    };
    let Some(account) = registry.by_client_id(&client_id) else {
        return oauth_error(401, "invalid_client", "Client authentication failed.");
    };
    let refresh_token = form.get("refresh_token").map_or("", String::as_str);
    let mut state = account.lock();
    let outcome = state.refresh(&account.id, &client_secret, refresh_token, now);
    let response = match outcome {
        Ok(refreshed) => HttpResponse::Ok()
            .insert_header(("Cache-Control", "no-store"))
            .json(json!({
                "token_type": "Bearer",
                "expires_in": refreshed.expires_in_s,
                "access_token": refreshed.access_token,
                "scope": "contact_data offline_access",
                "refresh_token": refreshed.refresh_token,
            })),
        Err(RefreshRefusal::InvalidClient) => {
            oauth_error(401, "invalid_client", "Client authentication failed.")
        }
        Err(RefreshRefusal::InvalidGrant) => oauth_error(
            400,
            "invalid_grant",
            "The refresh token is invalid or expired.",
        ),
    };
    log(
        &mut state,
        now,
        TOKEN_PATH.to_owned(),
        response.status().as_u16(),
    );
    response
}

fn bearer(request: &HttpRequest) -> Option<&str> {
    request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
        })
        .map(str::trim)
}

/// The listing a request asks for: its cursor, or its query parameters.
fn listing_of(query: &HashMap<String, String>) -> Result<Listing, String> {
    if let Some(cursor) = query.get("cursor") {
        return Listing::from_cursor(cursor).ok_or_else(|| "cursor is not valid".to_owned());
    }
    let updated_after_ms = match query.get("updated_after") {
        Some(text) => Some(
            parse_instant_ms(text)
                .ok_or_else(|| format!("updated_after {text:?} is not an ISO 8601 date-time"))?,
        ),
        None => None,
    };
    let status = match query.get("status") {
        Some(text) => StatusFilter::parse(text)?,
        None => StatusFilter::DEFAULT,
    };
    let limit = match query.get("limit") {
        Some(text) => text
            .parse::<u64>()
            .ok()
            .filter(|limit| (1..=LIMIT_MAX).contains(limit))
            .ok_or_else(|| format!("limit must be between 1 and {LIMIT_MAX}"))?,
        None => LIMIT_DEFAULT,
    };
    let include_list_memberships = query.get("include").is_some_and(|include| {
        include
            .split(',')
            .any(|part| part.trim() == "list_memberships")
    });
    Ok(Listing {
        updated_after_ms,
        status,
        limit,
        include_list_memberships,
        after: None,
    })
}

fn contacts_page(state: &mut AccountState, query: &HashMap<String, String>) -> HttpResponse {
    let listing = match listing_of(query) {
        Ok(listing) => listing,
        Err(message) => return v3_error(400, "query.param.invalid", &message),
    };
    let page = state.contacts.page(&listing);
    let contacts: Vec<Value> = page
        .contacts
        .iter()
        .map(|contact| contact.to_json(listing.include_list_memberships))
        .collect();
    let returned = contacts.len() as u64;
    let mut body = json!({
        "contacts": contacts,
        "contacts_count": page.contacts_count,
        "_links": {},
    });
    if let Some(next) = page.next {
        body["_links"]["next"] =
            json!({"href": format!("{CONTACTS_PATH}?cursor={}", next.to_cursor())});
    }
    state.counters.contacts_returned += returned;
    HttpResponse::Ok().json(body)
}

/// `GET /v3/contacts`.
async fn get_contacts(request: HttpRequest, registry: web::Data<Registry>) -> HttpResponse {
    let now = now_ms();
    let unauthorized = || v3_error(401, "unauthorized", "Unauthorized");
    let Some(token) = bearer(&request) else {
        return unauthorized();
    };
    let Some(account) = registry.by_access_token(token) else {
        return unauthorized();
    };
    let query = query_fields(request.query_string());
    let path = path_and_query(CONTACTS_PATH, request.query_string());
    let plan = {
        let mut state = account.lock();
        let plan = gate(&mut state, &request, token, &query, now);
        let state = &mut *state;
        let status = plan.logged_status();
        let by_status = &mut state.counters.api_requests_by_status;
        record_request(by_status, &mut state.requests, now, "GET", path, status);
        plan
    };
    plan.carry_out(&request).await
}

fn gate(
    state: &mut AccountState,
    request: &HttpRequest,
    token: &str,
    query: &HashMap<String, String>,
    now: u64,
) -> Plan {
    if !state.access_token_is_valid(token, now) {
        return Plan::refuse(v3_error(401, "unauthorized", "Unauthorized"));
    }
    if let Admission::Throttled { .. } = state.per_second.try_admit(now) {
        state.counters.throttled += 1;
        return Plan::refuse(v3_error(
            429,
            "throttled",
            "Too many requests: the per-second limit was exceeded.",
        ));
    }
    if !state.quota.try_take(now) {
        state.counters.quota_exceeded += 1;
        return Plan::refuse(v3_error(
            429,
            "quota_exceeded",
            "The daily API request quota has been exceeded.",
        ));
    }
    let sequence = state.counters.api_requests_by_status.values().sum::<u64>();
    let key = RequestKey {
        method: request.method().as_str(),
        path: request.path(),
        route: CONTACTS_PATH,
        transaction_id: "",
    };
    let latency_ms = state.faults.random.latency_ms;
    let seed = state.seed;
    let decision = state.faults.decide(seed, &key, sequence as u32);
    let fault_answer = |status, _retry_after_s, body| match (body, status) {
        (Some(body), _) => HttpResponse::build(status_code(status)).json(body),
        (None, 429) => v3_error(429, "throttled", "Too many requests."),
        (None, 401) => v3_error(401, "unauthorized", "Unauthorized"),
        (None, _) => v3_error(status, "server_error", "An internal error occurred."),
    };
    Plan::from_decision(
        decision,
        latency_ms,
        || contacts_page(state, query),
        fault_answer,
    )
}
