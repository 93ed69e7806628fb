//! `/mailchimp/3.0`: the gate every API request passes (auth → connection slot → script →
//! random faults → handler) and the members reads (the writes are `routes_write`). Errors
//! are Mailchimp's JSON problem documents (`application/problem+json`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine as _;
use serde_json::{json, Value};

use super::account::{subscriber_hash, Account, AccountState, ConnectionSlot, Registry};
use super::OverLimitAnswer;
use crate::clock::now_ms;
use crate::faults::{FaultDecision, RequestKey};
use crate::gate::method_name;
use crate::registry::Entry as _;
use crate::request_log::LoggedRequest;
use crate::server::{close_connection, path_param, status_code};

const ERRORS_DOC: &str = "https://mailchimp.com/developer/marketing/docs/errors/";
/// Mailchimp's documented default and maximum page sizes.
const DEFAULT_COUNT: usize = 10;
const MAX_COUNT: usize = 1_000;
const MEMBERS_ROUTE: &str = "GET /3.0/lists/{list_id}/members";
const MEMBER_ROUTE: &str = "GET /3.0/lists/{list_id}/members/{subscriber_hash}";
const PING_ROUTE: &str = "GET /3.0/ping";

pub(crate) fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/ping", web::get().to(ping))
        .route("/lists/{list_id}/members", web::get().to(members))
        .route(
            "/lists/{list_id}/members/{subscriber_hash}",
            web::get().to(member),
        );
    super::routes_write::configure(config);
}

/// The member a `{subscriber_hash}` path segment names: the hash (any case), or an email
/// address (the real API accepts one there too).
pub(crate) fn member_key(segment: &str) -> String {
    if segment.contains('@') {
        subscriber_hash(segment)
    } else {
        segment.to_lowercase()
    }
}

/// Mailchimp's error shape.
pub(crate) fn problem(status: u16, title: &str, detail: &str) -> HttpResponse {
    HttpResponse::build(status_code(status))
        .insert_header((CONTENT_TYPE, "application/problem+json; charset=utf-8"))
        .body(
            json!({"type": ERRORS_DOC, "title": title, "status": status, "detail": detail,
                   "instance": format!("sandbox-{}", now_ms())})
            .to_string(),
        )
}

/// The key of `Authorization: Basic base64(anyuser:key)`.
fn api_key(request: &HttpRequest) -> Option<String> {
    let header = request.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let encoded = header
        .strip_prefix("Basic ")
        .or_else(|| header.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (_user, key) = decoded.split_once(':')?;
    Some(key.to_owned())
}

/// Runs `handler` (under the account's lock) behind the gate and logs/counts the answer.
pub(crate) async fn gate<Handler>(
    request: &HttpRequest,
    registry: &Registry,
    route: &'static str,
    handler: Handler,
) -> HttpResponse
where
    Handler: FnOnce(&Account, &mut AccountState) -> HttpResponse,
{
    let at_ms = now_ms();
    let Some(account) = api_key(request).and_then(|key| registry.by_key(&key)) else {
        return problem(
            401,
            "API Key Invalid",
            "Your API key may be invalid, or you've attempted to access the wrong datacenter.",
        );
    };
    let path = request.path().to_owned();
    let method = method_name(request.method());
    let log = |status: u16| record(&account, at_ms, (method, route), path.clone(), status);
    let Some(slot) = ConnectionSlot::try_take(&account) else {
        account
            .rejected_concurrency
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let response = match account.spec.over_limit {
            OverLimitAnswer::Problem429 => problem(
                429,
                "Too Many Requests",
                &format!(
                    "You have exceeded the limit of {} simultaneous connections.",
                    account.spec.max_connections
                ),
            ),
            OverLimitAnswer::Bare403 => HttpResponse::Forbidden().finish(),
        };
        log(response.status().as_u16());
        return response;
    };
    let (decision, latency_ms) = {
        let mut state = account.lock();
        let attempt = state.log.entries().len() as u32 + 1;
        let key = RequestKey {
            method,
            path: &path,
            route,
            transaction_id: request.query_string(),
        };
        let decision = state.faults.decide(account.spec.seed, &key, attempt);
        (decision, state.faults.random.latency_ms)
    };
    if latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(latency_ms)).await;
    }
    let response = match decision {
        FaultDecision::Pass => handler(&account, &mut account.lock()),
        FaultDecision::Answer {
            status,
            retry_after_s,
            body,
            ..
        } => fault_answer(status, retry_after_s, body),
        FaultDecision::Hang { timeout_ms } => {
            tokio::time::sleep(Duration::from_millis(timeout_ms)).await;
            close_connection(request);
            log(0);
            return HttpResponse::InternalServerError().finish();
        }
        FaultDecision::ApplyThenClose => {
            // The change is made (a read changes nothing), the answer never sent.
            handler(&account, &mut account.lock());
            close_connection(request);
            log(0);
            return HttpResponse::InternalServerError().finish();
        }
    };
    drop(slot);
    log(response.status().as_u16());
    response
}

fn fault_answer(status: u16, retry_after_s: Option<u64>, body: Option<Value>) -> HttpResponse {
    let mut response = match body {
        Some(body) => HttpResponse::build(status_code(status))
            .insert_header((CONTENT_TYPE, "application/json; charset=utf-8"))
            .body(body.to_string()),
        None if status == 429 => problem(
            429,
            "Too Many Requests",
            "You have exceeded the limit of 10 simultaneous connections.",
        ),
        None => problem(
            status,
            "Internal Server Error",
            "An unexpected internal error has occurred (simulated fault).",
        ),
    };
    if let Some(retry_after_s) = retry_after_s {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(retry_after_s));
    }
    response
}

/// Counts the request under its route and logs it; `(method, route)` as the log and the
/// stats show them.
fn record(
    account: &Arc<Account>,
    at_ms: u64,
    (method, route): (&'static str, &'static str),
    path: String,
    status: u16,
) {
    let mut state = account.lock();
    let status_key = if status == 0 {
        "closed".to_owned()
    } else {
        status.to_string()
    };
    state.count_request(route, &status_key);
    state.log.push(LoggedRequest {
        at_ms,
        method,
        path: Cow::Owned(path),
        status,
        transaction_ids: Vec::new(),
        reference_ids: Vec::new(),
    });
}

async fn ping(request: HttpRequest, registry: web::Data<Registry>) -> HttpResponse {
    gate(&request, &registry, PING_ROUTE, |_, _| {
        HttpResponse::Ok().json(json!({"health_status": "Everything's Chimpy!"}))
    })
    .await
}

pub(crate) fn unknown_list() -> HttpResponse {
    problem(
        404,
        "Resource Not Found",
        "The requested resource could not be found.",
    )
}

pub(crate) fn invalid(detail: &str) -> HttpResponse {
    problem(400, "Invalid Resource", detail)
}

async fn members(
    request: HttpRequest,
    query: web::Query<HashMap<String, String>>,
    registry: web::Data<Registry>,
) -> HttpResponse {
    let list_id = path_param(&request, "list_id");
    gate(&request, &registry, MEMBERS_ROUTE, |_, state| {
        members_page(state, &list_id, &query)
    })
    .await
}

/// One page: members whose `last_changed` ≥ `since_last_changed` (optional `status`
/// filter; archived members only with `status=archived`), ordered by (last_changed, id) —
/// reversed with `sort_dir=DESC` — so offsets are stable while nothing changes.
fn members_page(
    state: &AccountState,
    list_id: &str,
    query: &HashMap<String, String>,
) -> HttpResponse {
    let Some(list) = state.lists.get(list_id) else {
        return unknown_list();
    };
    let count = match query.get("count").map(|count| count.parse::<usize>()) {
        None => DEFAULT_COUNT,
        Some(Ok(count)) if count <= MAX_COUNT => count,
        Some(_) => return invalid("count must be a number from 0 to 1000"),
    };
    let offset = match query.get("offset").map(|offset| offset.parse::<usize>()) {
        None => 0,
        Some(Ok(offset)) => offset,
        Some(Err(_)) => return invalid("offset must be a number"),
    };
    let since_s = match query.get("since_last_changed") {
        None => None,
        Some(text) => match text.parse::<jiff::Timestamp>() {
            Ok(at) => Some(at.as_second()),
            Err(_) => return invalid("since_last_changed must be an ISO 8601 time with an offset"),
        },
    };
    // Mailchimp's `sort_field` also takes `timestamp_opt` / `timestamp_signup`; the sandbox
    // orders by last_changed only and refuses the others rather than ignore them.
    if let Some(field) = query.get("sort_field") {
        if field != "last_changed" {
            return invalid("the sandbox sorts by sort_field=last_changed only");
        }
    }
    let descending = match query.get("sort_dir").map(String::as_str) {
        None | Some("ASC") => false,
        Some("DESC") => true,
        Some(_) => return invalid("sort_dir must be ASC or DESC"),
    };
    let status = query.get("status").map(String::as_str);
    let mut selected: Vec<_> = list
        .members
        .values()
        .filter(|member| since_s.map_or(true, |since_s| member.last_changed_s >= since_s))
        .filter(|member| match status {
            Some(status) => member.status == status,
            None => member.status != "archived",
        })
        .collect();
    selected.sort_by(|left, right| {
        (left.last_changed_s, &left.id).cmp(&(right.last_changed_s, &right.id))
    });
    if descending {
        selected.reverse();
    }
    let total_items = selected.len();
    let page: Vec<Value> = selected
        .into_iter()
        .skip(offset)
        .take(count)
        .map(|member| member.to_json(list_id))
        .collect();
    HttpResponse::Ok().json(json!({
        "members": page, "list_id": list_id, "total_items": total_items, "_links": []
    }))
}

async fn member(request: HttpRequest, registry: web::Data<Registry>) -> HttpResponse {
    let list_id = path_param(&request, "list_id");
    let member_id = member_key(&path_param(&request, "subscriber_hash"));
    gate(&request, &registry, MEMBER_ROUTE, |_, state| {
        let Some(list) = state.lists.get(&list_id) else {
            return unknown_list();
        };
        match list.members.get(&member_id) {
            Some(member) => HttpResponse::Ok().json(member.to_json(&list_id)),
            None => unknown_list(),
        }
    })
    .await
}
