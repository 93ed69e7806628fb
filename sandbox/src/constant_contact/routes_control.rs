//! The control API under `/_sandbox/constant-contact` (no auth, never limited, never
//! counted): accounts, their tokens and limits, contacts changed as a user would, faults,
//! counters and the request log.

use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::account::{Account, AccountState, CreateAccountError, Registry};
use super::contacts::{parse_instant_ms, Contact, ContactStatus};
use super::quota::DailyQuota;
use super::{AccountSpec, RefreshTokenKind};
use crate::clock::now_ms;
use crate::control::{self, json_body, message, EntryPath, FaultsEntry};
use crate::faults::Faults;
use crate::server::path_param;

/// Contacts one `generate` call may create (a limit on everything).
const GENERATE_MAX: u64 = 1_000_000;

pub(crate) fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/accounts", web::post().to(create_account))
        .route(
            "/accounts/{account}/settings",
            web::patch().to(patch_settings),
        )
        .route("/accounts/{account}/authorize", web::post().to(authorize))
        .route("/accounts/{account}/revoke", web::post().to(revoke))
        .route("/accounts/{account}/contacts", web::post().to(add_contacts))
        .route("/accounts/{account}/contacts", web::get().to(list_contacts))
        .route("/accounts/{account}/contacts/touch", web::post().to(touch))
        .route(
            "/accounts/{account}/contacts/{contact}",
            web::patch().to(edit_contact),
        )
        .route(
            "/accounts/{account}/contacts/{contact}",
            web::delete().to(delete_contact),
        )
        .route(
            "/accounts/{account}/contacts/{contact}/unsubscribe",
            web::post().to(unsubscribe_contact),
        )
        .route(
            "/accounts/{account}/faults",
            web::put().to(control::put_faults::<Account>),
        )
        .route(
            "/accounts/{account}/faults",
            web::delete().to(control::delete_faults::<Account>),
        )
        .route(
            "/accounts/{account}/script",
            web::post().to(control::put_script::<Account>),
        )
        .route("/accounts/{account}/stats", web::get().to(stats))
        .route("/accounts/{account}/requests", web::get().to(requests));
}

/// Control paths name their account by `{account}`.
const ACCOUNT: EntryPath = EntryPath {
    param: "account",
    noun: "account",
};

impl FaultsEntry for Account {
    const PATH: EntryPath = ACCOUNT;
    type Registries = Registry;

    fn faults(state: &mut AccountState) -> &mut Faults {
        &mut state.faults
    }
}

async fn create_account(body: Bytes, registry: web::Data<Registry>) -> HttpResponse {
    let spec: AccountSpec = match json_body(&body) {
        Ok(spec) => spec,
        Err(response) => return response,
    };
    let id = spec.id.clone();
    match registry.create(spec, false) {
        Ok(()) => HttpResponse::Created().json(json!({ "id": id })),
        Err(error @ (CreateAccountError::IdTaken(_) | CreateAccountError::ClientIdTaken)) => {
            message(409, &error.to_string())
        }
        Err(error @ CreateAccountError::Invalid(_)) => message(400, &error.to_string()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    access_token_ttl_ms: Option<u64>,
    per_second_limit: Option<u64>,
    daily_quota: Option<u64>,
    /// Calls already used today.
    quota_used: Option<u64>,
    /// The next reset, Unix ms.
    quota_reset_at_ms: Option<u64>,
    /// The next reset, this many ms from the sandbox clock's now.
    quota_reset_in_ms: Option<u64>,
}

fn quota_json(quota: &mut DailyQuota, now: u64) -> Value {
    json!({
        "daily_quota": quota.quota,
        "quota_used": quota.used,
        "quota_remaining": quota.remaining(now),
        "quota_reset_at_ms": quota.next_reset_ms,
    })
}

/// `PATCH .../settings`: any subset; answers the limits now in force.
async fn patch_settings(
    request: HttpRequest,
    body: Bytes,
    registry: web::Data<Registry>,
) -> HttpResponse {
    ACCOUNT.with_body(&request, &registry, &body, |state, settings: Settings| {
        let now = now_ms();
        if settings.access_token_ttl_ms == Some(0) || settings.per_second_limit == Some(0) {
            return message(
                400,
                "access_token_ttl_ms and per_second_limit must be at least 1",
            );
        }
        if settings.quota_reset_at_ms.is_some() && settings.quota_reset_in_ms.is_some() {
            return message(400, "give quota_reset_at_ms or quota_reset_in_ms, not both");
        }
        // Apply a reset that is already due first, so a new `quota_used` is not wiped by it.
        state.quota.remaining(now);
        if let Some(ttl_ms) = settings.access_token_ttl_ms {
            state.access_token_ttl_ms = ttl_ms;
        }
        if let Some(limit) = settings.per_second_limit {
            state.set_per_second_limit(limit);
        }
        if let Some(quota) = settings.daily_quota {
            state.quota.quota = quota;
        }
        if let Some(used) = settings.quota_used {
            state.quota.used = used;
        }
        if let Some(at_ms) = settings.quota_reset_at_ms {
            state.quota.next_reset_ms = at_ms;
        }
        if let Some(in_ms) = settings.quota_reset_in_ms {
            state.quota.next_reset_ms = now + in_ms;
        }
        let mut answer = quota_json(&mut state.quota, now);
        answer["access_token_ttl_ms"] = json!(state.access_token_ttl_ms);
        answer["per_second_limit"] = json!(state.per_second_limit);
        HttpResponse::Ok().json(answer)
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Authorize {
    refresh_token: String,
    #[serde(default)]
    refresh_token_kind: Option<RefreshTokenKind>,
}

/// `POST .../authorize`: the user authorised the app again; this refresh token replaces the
/// previous one (which stops working).
async fn authorize(
    request: HttpRequest,
    body: Bytes,
    registry: web::Data<Registry>,
) -> HttpResponse {
    ACCOUNT.with_body(&request, &registry, &body, |state, authorize: Authorize| {
        if authorize.refresh_token.trim().is_empty() {
            return message(400, "refresh_token must be non-empty");
        }
        state.refresh_token = Some(authorize.refresh_token);
        if let Some(kind) = authorize.refresh_token_kind {
            state.refresh_token_kind = kind;
        }
        HttpResponse::NoContent().finish()
    })
}

/// `POST .../revoke`: the user disconnected the app; every token stops working.
async fn revoke(request: HttpRequest, registry: web::Data<Registry>) -> HttpResponse {
    ACCOUNT.with(&request, &registry, |state| {
        state.revoke();
        HttpResponse::NoContent().finish()
    })
}

// The error is the finished rejection response, built once on a cold path.
#[allow(clippy::result_large_err)]
fn parse_updated_at(text: Option<&str>) -> Result<Option<u64>, HttpResponse> {
    match text {
        None => Ok(None),
        Some(text) => parse_instant_ms(text)
            .filter(|ms| *ms >= 0)
            .map(|ms| Some(ms as u64 / 1000))
            .ok_or_else(|| {
                message(
                    400,
                    &format!("updated_at {text:?} is not an ISO 8601 instant"),
                )
            }),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewContact {
    email: String,
    #[serde(default)]
    first_name: String,
    #[serde(default)]
    last_name: String,
    #[serde(default)]
    list_memberships: Vec<String>,
    #[serde(default)]
    updated_at: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Generate {
    count: u64,
    #[serde(default)]
    updated_at: Option<String>,
    #[serde(default)]
    list_memberships: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddContacts {
    #[serde(default)]
    contacts: Vec<NewContact>,
    #[serde(default)]
    generate: Option<Generate>,
}

fn insert_new(
    state: &mut AccountState,
    account_id: &str,
    contact: NewContact,
    updated_at_s: u64,
) -> String {
    let contact_id = state.contacts.next_id(account_id);
    state.contacts.put(Contact {
        contact_id: contact_id.clone(),
        email: contact.email,
        first_name: contact.first_name,
        last_name: contact.last_name,
        list_memberships: contact.list_memberships,
        status: ContactStatus::Active,
        created_at_s: updated_at_s,
        updated_at_s,
        status_changed_at_s: None,
    });
    contact_id
}

/// `POST .../contacts`: `{"contacts": [...]}` and/or `{"generate": {"count": N}}`; answers
/// the new ids in order. `updated_at` defaults to now (whole seconds).
async fn add_contacts(
    request: HttpRequest,
    body: Bytes,
    registry: web::Data<Registry>,
) -> HttpResponse {
    let account_id = path_param(&request, "account");
    ACCOUNT.with_body(&request, &registry, &body, |state, add: AddContacts| {
        let now_s = now_ms() / 1000;
        let mut stamped = Vec::with_capacity(add.contacts.len());
        for contact in add.contacts {
            let updated_at_s = match parse_updated_at(contact.updated_at.as_deref()) {
                Ok(updated_at) => updated_at.unwrap_or(now_s),
                Err(response) => return response,
            };
            stamped.push((contact, updated_at_s));
        }
        let generate = match add.generate {
            Some(generate) if generate.count > GENERATE_MAX => {
                return message(400, &format!("generate.count is at most {GENERATE_MAX}"))
            }
            Some(generate) => match parse_updated_at(generate.updated_at.as_deref()) {
                Ok(updated_at) => Some((generate, updated_at.unwrap_or(now_s))),
                Err(response) => return response,
            },
            None => None,
        };
        let mut ids = Vec::new();
        for (contact, updated_at_s) in stamped {
            ids.push(insert_new(state, &account_id, contact, updated_at_s));
        }
        if let Some((generate, updated_at_s)) = generate {
            let first = state.contacts.len();
            for n in 0..generate.count as usize {
                let contact = NewContact {
                    email: format!("contact{}@example.org", first + n),
                    first_name: "Contact".into(),
                    last_name: format!("{}", first + n),
                    list_memberships: generate.list_memberships.clone(),
                    updated_at: None,
                };
                ids.push(insert_new(state, &account_id, contact, updated_at_s));
            }
        }
        HttpResponse::Created().json(json!({ "contact_ids": ids }))
    })
}

/// The `updated_at` an edit gives: the one asked for, else now — but always after the
/// previous one, so every edit is a new version a poller can tell apart.
fn bumped(previous_s: u64, asked: Option<u64>) -> u64 {
    asked.unwrap_or_else(|| (now_ms() / 1000).max(previous_s + 1))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContactEdit {
    email: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    list_memberships: Option<Vec<String>>,
    updated_at: Option<String>,
}

/// Applies `change` to one contact and stores it with its new `updated_at`; 404 if missing.
fn change_contact(
    state: &mut AccountState,
    contact_id: &str,
    updated_at: Option<&str>,
    change: impl FnOnce(&mut Contact, u64),
) -> HttpResponse {
    let asked = match parse_updated_at(updated_at) {
        Ok(asked) => asked,
        Err(response) => return response,
    };
    let Some(mut contact) = state.contacts.get(contact_id).cloned() else {
        return message(404, &format!("unknown contact {contact_id:?}"));
    };
    let updated_at_s = bumped(contact.updated_at_s, asked);
    contact.updated_at_s = updated_at_s;
    change(&mut contact, updated_at_s);
    let answer = contact.to_json(true);
    state.contacts.put(contact);
    HttpResponse::Ok().json(answer)
}

async fn edit_contact(
    request: HttpRequest,
    body: Bytes,
    registry: web::Data<Registry>,
) -> HttpResponse {
    let contact_id = path_param(&request, "contact");
    ACCOUNT.with_body(&request, &registry, &body, |state, edit: ContactEdit| {
        let updated_at = edit.updated_at.clone();
        change_contact(state, &contact_id, updated_at.as_deref(), |contact, _| {
            if let Some(email) = edit.email {
                contact.email = email;
            }
            if let Some(first_name) = edit.first_name {
                contact.first_name = first_name;
            }
            if let Some(last_name) = edit.last_name {
                contact.last_name = last_name;
            }
            if let Some(lists) = edit.list_memberships {
                contact.list_memberships = lists;
            }
        })
    })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StatusChange {
    #[serde(default)]
    updated_at: Option<String>,
}

fn status_change(
    request: &HttpRequest,
    registry: &Registry,
    body: &[u8],
    status: ContactStatus,
) -> HttpResponse {
    let contact_id = path_param(request, "contact");
    // An empty body is `{}`.
    let body: &[u8] = if body.is_empty() { b"{}" } else { body };
    ACCOUNT.with_body(request, registry, body, |state, change: StatusChange| {
        change_contact(
            state,
            &contact_id,
            change.updated_at.as_deref(),
            |contact, at_s| {
                contact.status = status;
                contact.status_changed_at_s = Some(at_s);
            },
        )
    })
}

async fn delete_contact(
    request: HttpRequest,
    body: Bytes,
    registry: web::Data<Registry>,
) -> HttpResponse {
    status_change(&request, &registry, &body, ContactStatus::Deleted)
}

async fn unsubscribe_contact(
    request: HttpRequest,
    body: Bytes,
    registry: web::Data<Registry>,
) -> HttpResponse {
    status_change(&request, &registry, &body, ContactStatus::Unsubscribed)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Touch {
    /// Absent = every contact.
    #[serde(default)]
    contact_ids: Option<Vec<String>>,
    updated_at: String,
}

/// `POST .../contacts/touch`: gives many contacts one `updated_at` (ties for paging tests).
async fn touch(request: HttpRequest, body: Bytes, registry: web::Data<Registry>) -> HttpResponse {
    ACCOUNT.with_body(&request, &registry, &body, |state, touch: Touch| {
        let updated_at_s = match parse_instant_ms(&touch.updated_at).filter(|ms| *ms >= 0) {
            Some(ms) => ms as u64 / 1000,
            None => return message(400, "updated_at is not an ISO 8601 instant"),
        };
        let ids: Vec<String> = match touch.contact_ids {
            Some(ids) => ids,
            None => state
                .contacts
                .all()
                .map(|contact| contact.contact_id.clone())
                .collect(),
        };
        let mut touched = 0u64;
        for id in ids {
            if let Some(mut contact) = state.contacts.get(&id).cloned() {
                contact.updated_at_s = updated_at_s;
                state.contacts.put(contact);
                touched += 1;
            }
        }
        HttpResponse::Ok().json(json!({ "touched": touched }))
    })
}

/// `GET .../contacts`: every contact, deleted ones included, in listing order.
async fn list_contacts(request: HttpRequest, registry: web::Data<Registry>) -> HttpResponse {
    ACCOUNT.with(&request, &registry, |state| {
        let contacts: Vec<Value> = state
            .contacts
            .all()
            .map(|contact| contact.to_json(true))
            .collect();
        HttpResponse::Ok().json(json!({ "contacts": contacts }))
    })
}

async fn stats(request: HttpRequest, registry: web::Data<Registry>) -> HttpResponse {
    ACCOUNT.with(&request, &registry, |state| {
        let now = now_ms();
        let mut answer = quota_json(&mut state.quota, now);
        answer["counters"] = json!(state.counters);
        answer["contacts"] = json!(state.contacts.len());
        answer["per_second_limit"] = json!(state.per_second_limit);
        answer["access_token_ttl_ms"] = json!(state.access_token_ttl_ms);
        answer["refresh_token_kind"] = json!(state.refresh_token_kind);
        answer["live_access_tokens"] = json!(state
            .access_tokens
            .values()
            .filter(|expires_ms| **expires_ms > now)
            .count());
        HttpResponse::Ok().json(answer)
    })
}

/// `GET .../requests`: the log, oldest first (token calls and `/v3` calls).
async fn requests(request: HttpRequest, registry: web::Data<Registry>) -> HttpResponse {
    ACCOUNT.with(&request, &registry, |state| {
        let entries: Vec<_> = state.requests.entries().iter().collect();
        HttpResponse::Ok().json(json!({ "requests": entries }))
    })
}
