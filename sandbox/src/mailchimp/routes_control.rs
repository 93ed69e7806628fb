//! `/_sandbox/mailchimp` (no auth, never limited, never counted): accounts, members changed
//! as a user would (firing audience webhooks), webhook settings, the clock, faults, stats and
//! the request log.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::account::{
    Account, ChangeError, CreateAccountError, MemberChange, Registry, WebhookSettings,
};
use super::AccountSpec;
use crate::faults::{RandomFaults, ScriptBody};
use crate::registry::Entry as _;
use crate::server::path_param;

pub(crate) fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/accounts", web::post().to(create_account))
        .route("/accounts/{account}/clock", web::post().to(advance_clock))
        .route("/accounts/{account}/faults", web::put().to(put_faults))
        .route(
            "/accounts/{account}/faults",
            web::delete().to(delete_faults),
        )
        .route("/accounts/{account}/script", web::post().to(put_script))
        .route("/accounts/{account}/stats", web::get().to(stats))
        .route("/accounts/{account}/requests", web::get().to(requests))
        .route(
            "/accounts/{account}/lists/{list}/webhook",
            web::put().to(put_webhook),
        )
        .route(
            "/accounts/{account}/lists/{list}/webhook",
            web::delete().to(delete_webhook),
        )
        .route(
            "/accounts/{account}/lists/{list}/webhook/dropped",
            web::get().to(dropped),
        )
        .route(
            "/accounts/{account}/lists/{list}/members",
            web::post().to(add_members),
        )
        .route(
            "/accounts/{account}/lists/{list}/members/{member}",
            web::patch().to(change_member),
        )
        .route(
            "/accounts/{account}/lists/{list}/members/{member}/unsubscribe",
            web::post().to(unsubscribe),
        )
        .route(
            "/accounts/{account}/lists/{list}/members/{member}/archive",
            web::post().to(archive),
        );
}

fn message(status: u16, text: &str) -> HttpResponse {
    let status = actix_web::http::StatusCode::from_u16(status)
        .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
    HttpResponse::build(status).json(json!({ "message": text }))
}

// The error is the finished rejection response, built once on a cold path.
#[allow(clippy::result_large_err)]
fn account_of(request: &HttpRequest, registry: &Registry) -> Result<Arc<Account>, HttpResponse> {
    let id = path_param(request, "account");
    registry
        .by_id(&id)
        .ok_or_else(|| message(404, &format!("unknown account {id:?}")))
}

#[allow(clippy::result_large_err)]
fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, HttpResponse> {
    serde_json::from_slice(body).map_err(|error| message(400, &format!("invalid body: {error}")))
}

fn change_failed(error: ChangeError) -> HttpResponse {
    let status = match error {
        ChangeError::UnknownList(_) | ChangeError::UnknownMember(_) => 404,
        ChangeError::Invalid(_) => 400,
        ChangeError::Exists(_) => 409,
    };
    message(status, &error.to_string())
}

async fn create_account(body: Bytes, registry: web::Data<Registry>) -> HttpResponse {
    let spec: AccountSpec = match json_body(&body) {
        Ok(spec) => spec,
        Err(response) => return response,
    };
    let id = spec.id.clone();
    match registry.create(spec, false) {
        Ok(()) => HttpResponse::Created().json(json!({ "id": id })),
        Err(error @ (CreateAccountError::IdTaken(_) | CreateAccountError::KeyTaken)) => {
            message(409, &error.to_string())
        }
        Err(error @ CreateAccountError::Invalid(_)) => message(400, &error.to_string()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockAdvance {
    advance_s: i64,
}

/// Moves the account's clock forward (never back: `last_changed` must not go backwards).
async fn advance_clock(
    request: HttpRequest,
    body: Bytes,
    registry: web::Data<Registry>,
) -> HttpResponse {
    let account = match account_of(&request, &registry) {
        Ok(account) => account,
        Err(response) => return response,
    };
    let advance: ClockAdvance = match json_body(&body) {
        Ok(advance) => advance,
        Err(response) => return response,
    };
    if advance.advance_s < 0 {
        return message(400, "advance_s must be 0 or more");
    }
    let mut state = account.lock();
    state.clock_offset_s += advance.advance_s;
    HttpResponse::Ok().json(json!({"now": super::account::last_changed(state.now_s())}))
}

async fn put_faults(
    request: HttpRequest,
    body: Bytes,
    registry: web::Data<Registry>,
) -> HttpResponse {
    let account = match account_of(&request, &registry) {
        Ok(account) => account,
        Err(response) => return response,
    };
    let faults: RandomFaults = match json_body(&body) {
        Ok(faults) => faults,
        Err(response) => return response,
    };
    if let Err(reason) = faults.validate() {
        return message(400, &reason);
    }
    account.lock().faults.random = faults.clone();
    HttpResponse::Ok().json(faults)
}

async fn delete_faults(request: HttpRequest, registry: web::Data<Registry>) -> HttpResponse {
    match account_of(&request, &registry) {
        Ok(account) => {
            account.lock().faults = Default::default();
            HttpResponse::Ok().finish()
        }
        Err(response) => response,
    }
}

async fn put_script(
    request: HttpRequest,
    body: Bytes,
    registry: web::Data<Registry>,
) -> HttpResponse {
    let account = match account_of(&request, &registry) {
        Ok(account) => account,
        Err(response) => return response,
    };
    let script: ScriptBody = match json_body(&body) {
        Ok(script) => script,
        Err(response) => return response,
    };
    if let Err(reason) = script.validate() {
        return message(400, &reason);
    }
    let steps = script.steps.len();
    account.lock().faults.script = script.steps.into();
    HttpResponse::Ok().json(json!({ "steps": steps }))
}

async fn stats(request: HttpRequest, registry: web::Data<Registry>) -> HttpResponse {
    let account = match account_of(&request, &registry) {
        Ok(account) => account,
        Err(response) => return response,
    };
    let state = account.lock();
    let members: usize = state.lists.values().map(|list| list.members.len()).sum();
    HttpResponse::Ok().json(json!({
        "requests": state.requests,
        "rejected_concurrency": account.rejected_concurrency.load(Ordering::Relaxed),
        "in_flight": account.in_flight.load(Ordering::Relaxed),
        "in_flight_max": account.in_flight_max.load(Ordering::Relaxed),
        "members": members,
        "webhooks_fired": state.webhooks_fired,
        "webhooks_dropped": state.webhooks_dropped,
        "webhooks_delivered": account.delivery.delivered.load(Ordering::Relaxed),
        "webhooks_failed": account.delivery.failed.load(Ordering::Relaxed),
    }))
}

async fn requests(request: HttpRequest, registry: web::Data<Registry>) -> HttpResponse {
    match account_of(&request, &registry) {
        Ok(account) => HttpResponse::Ok().json(account.lock().log.entries()),
        Err(response) => response,
    }
}

async fn put_webhook(
    request: HttpRequest,
    body: Bytes,
    registry: web::Data<Registry>,
) -> HttpResponse {
    let account = match account_of(&request, &registry) {
        Ok(account) => account,
        Err(response) => return response,
    };
    let settings: WebhookSettings = match json_body(&body) {
        Ok(settings) => settings,
        Err(response) => return response,
    };
    if !(0.0..=100.0).contains(&settings.drop_pct) {
        return message(400, "drop_pct must be between 0 and 100");
    }
    if !settings.url.starts_with("http://") && !settings.url.starts_with("https://") {
        return message(400, "url must be an http(s) URL");
    }
    let list_id = path_param(&request, "list");
    let mut state = account.lock();
    match state.lists.get_mut(&list_id) {
        Some(list) => {
            list.webhook = Some(settings.clone());
            HttpResponse::Ok().json(settings)
        }
        None => message(404, &format!("unknown list {list_id:?}")),
    }
}

async fn delete_webhook(request: HttpRequest, registry: web::Data<Registry>) -> HttpResponse {
    let account = match account_of(&request, &registry) {
        Ok(account) => account,
        Err(response) => return response,
    };
    let list_id = path_param(&request, "list");
    let mut state = account.lock();
    match state.lists.get_mut(&list_id) {
        Some(list) => {
            list.webhook = None;
            HttpResponse::Ok().finish()
        }
        None => message(404, &format!("unknown list {list_id:?}")),
    }
}

async fn dropped(request: HttpRequest, registry: web::Data<Registry>) -> HttpResponse {
    let account = match account_of(&request, &registry) {
        Ok(account) => account,
        Err(response) => return response,
    };
    let list_id = path_param(&request, "list");
    let state = account.lock();
    let events: Vec<_> = state
        .dropped
        .iter()
        .filter(|event| event.list_id == list_id)
        .collect();
    HttpResponse::Ok().json(events)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewMembers {
    members: Vec<MemberChange>,
}

async fn add_members(
    request: HttpRequest,
    body: Bytes,
    registry: web::Data<Registry>,
) -> HttpResponse {
    let account = match account_of(&request, &registry) {
        Ok(account) => account,
        Err(response) => return response,
    };
    let new_members: NewMembers = match json_body(&body) {
        Ok(new_members) => new_members,
        Err(response) => return response,
    };
    let list_id = path_param(&request, "list");
    match account.add_members(&list_id, new_members.members) {
        Ok(ids) => {
            let (ids, unique_email_ids): (Vec<String>, Vec<String>) = ids.into_iter().unzip();
            HttpResponse::Created()
                .json(json!({ "ids": ids, "unique_email_ids": unique_email_ids }))
        }
        Err(error) => change_failed(error),
    }
}

async fn apply_change(
    request: &HttpRequest,
    registry: &Registry,
    change: MemberChange,
) -> HttpResponse {
    let account = match account_of(request, registry) {
        Ok(account) => account,
        Err(response) => return response,
    };
    let list_id = path_param(request, "list");
    let member_id = path_param(request, "member").to_lowercase();
    match account.change_member(&list_id, &member_id, change) {
        Ok(member) => HttpResponse::Ok().json(member),
        Err(error) => change_failed(error),
    }
}

async fn change_member(
    request: HttpRequest,
    body: Bytes,
    registry: web::Data<Registry>,
) -> HttpResponse {
    let change: MemberChange = match json_body(&body) {
        Ok(change) => change,
        Err(response) => return response,
    };
    apply_change(&request, &registry, change).await
}

fn status_change(status: &str) -> MemberChange {
    MemberChange {
        status: Some(status.to_owned()),
        ..MemberChange::default()
    }
}

async fn unsubscribe(request: HttpRequest, registry: web::Data<Registry>) -> HttpResponse {
    apply_change(&request, &registry, status_change("unsubscribed")).await
}

async fn archive(request: HttpRequest, registry: web::Data<Registry>) -> HttpResponse {
    apply_change(&request, &registry, status_change("archived")).await
}
