//! `/_sandbox/mailchimp` (no auth, never limited, never counted): accounts, members changed
//! as a user would (firing audience webhooks), webhook settings, the clock, faults, stats and
//! the request log.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::account::{Account, AccountState, CreateAccountError, Registry, WebhookSettings};
use super::members::{ChangeError, MemberChange};
use super::AccountSpec;
use crate::control::{self, json_body, message, EntryPath};
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

/// Control paths name their account by `{account}`.
const ACCOUNT: EntryPath = EntryPath {
    param: "account",
    noun: "account",
};

// The error is the finished rejection response, built once on a cold path.
#[allow(clippy::result_large_err)]
fn account_of(request: &HttpRequest, registry: &Registry) -> Result<Arc<Account>, HttpResponse> {
    ACCOUNT.find(request, registry.accounts())
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
    let accounts = registry.accounts();
    ACCOUNT.with_body(&request, accounts, &body, |state, advance: ClockAdvance| {
        if advance.advance_s < 0 {
            return message(400, "advance_s must be 0 or more");
        }
        state.clock_offset_s += advance.advance_s;
        HttpResponse::Ok().json(json!({"now": super::account::last_changed(state.now_s())}))
    })
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
    let faults = match control::random_faults(&body) {
        Ok(faults) => faults,
        Err(response) => return response,
    };
    account.lock().faults.random = faults.clone();
    HttpResponse::Ok().json(faults)
}

async fn delete_faults(request: HttpRequest, registry: web::Data<Registry>) -> HttpResponse {
    ACCOUNT.with(&request, registry.accounts(), |state| {
        state.faults = Default::default();
        HttpResponse::Ok().finish()
    })
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
    let script = match control::script(&body) {
        Ok(script) => script,
        Err(response) => return response,
    };
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
        "webhooks_source_off": state.webhooks_source_off,
        "webhooks_delivered": account.delivery.delivered.load(Ordering::Relaxed),
        "webhooks_failed": account.delivery.failed.load(Ordering::Relaxed),
    }))
}

async fn requests(request: HttpRequest, registry: web::Data<Registry>) -> HttpResponse {
    ACCOUNT.with(&request, registry.accounts(), |state| {
        HttpResponse::Ok().json(state.log.entries())
    })
}

async fn put_webhook(
    request: HttpRequest,
    body: Bytes,
    registry: web::Data<Registry>,
) -> HttpResponse {
    let list_id = path_param(&request, "list");
    let accounts = registry.accounts();
    ACCOUNT.with_body(
        &request,
        accounts,
        &body,
        |state, settings: WebhookSettings| {
            if !(0.0..=100.0).contains(&settings.drop_pct) {
                return message(400, "drop_pct must be between 0 and 100");
            }
            if !settings.url.starts_with("http://") && !settings.url.starts_with("https://") {
                return message(400, "url must be an http(s) URL");
            }
            set_webhook(state, &list_id, Some(settings.clone()))
                .unwrap_or_else(|| HttpResponse::Ok().json(settings))
        },
    )
}

/// Sets (or removes) a list's webhook: `None` when done, else the 404 of an unknown list.
fn set_webhook(
    state: &mut AccountState,
    list_id: &str,
    webhook: Option<WebhookSettings>,
) -> Option<HttpResponse> {
    match state.lists.get_mut(list_id) {
        Some(list) => {
            list.webhook = webhook;
            None
        }
        None => Some(message(404, &format!("unknown list {list_id:?}"))),
    }
}

async fn delete_webhook(request: HttpRequest, registry: web::Data<Registry>) -> HttpResponse {
    let list_id = path_param(&request, "list");
    ACCOUNT.with(&request, registry.accounts(), |state| {
        set_webhook(state, &list_id, None).unwrap_or_else(|| HttpResponse::Ok().finish())
    })
}

async fn dropped(request: HttpRequest, registry: web::Data<Registry>) -> HttpResponse {
    let list_id = path_param(&request, "list");
    ACCOUNT.with(&request, registry.accounts(), |state| {
        let events: Vec<_> = state
            .dropped
            .iter()
            .filter(|event| event.list_id == list_id)
            .collect();
        HttpResponse::Ok().json(events)
    })
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
