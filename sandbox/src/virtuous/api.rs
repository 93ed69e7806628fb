//! The HTTP server and the gate every `/api` request passes, in this order:
//! auth → rate limit → script → random faults → handler. The whole gate runs under the
//! org's lock once, so the hot path takes one lock and never awaits while holding it.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::{HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::import::follow_processing_mode;
use super::org::{Org, OrgState, Registry};
use super::stats::CLOSED_WITHOUT_ANSWER;
use super::validate::{ModelState, INVALID_MESSAGE};
use super::webhooks::WebhookJob;
use crate::clock::now_ms;
use crate::faults::{FaultDecision, RequestKey};
use crate::ratelimit::{Admission, RateHeaders};
use crate::request_log::LoggedRequest;
use crate::server::close_connection;

/// A response body before headers are added.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    body: Option<Value>,
    text: Option<&'static str>,
    retry_after_s: Option<u64>,
}

impl Reply {
    pub(crate) fn empty(status: u16) -> Reply {
        Reply {
            status,
            body: None,
            text: None,
            retry_after_s: None,
        }
    }
    pub(crate) fn json(status: u16, body: Value) -> Reply {
        Reply {
            body: Some(body),
            ..Reply::empty(status)
        }
    }
    pub(crate) fn message(status: u16, message: &str) -> Reply {
        Reply::json(status, json!({ "message": message }))
    }
    pub(crate) fn model_state(state: &ModelState) -> Reply {
        Reply::json(
            400,
            json!({"message": INVALID_MESSAGE, "modelState": state}),
        )
    }
    pub(crate) fn into_response(self) -> HttpResponse {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut builder = HttpResponse::build(status);
        if let Some(retry_after_s) = self.retry_after_s {
            builder.insert_header((RETRY_AFTER, HeaderValue::from(retry_after_s)));
        }
        match (self.body, self.text) {
            (Some(body), _) => builder
                .insert_header((CONTENT_TYPE, "application/json; charset=utf-8"))
                .body(body.to_string()),
            (None, Some(text)) => builder
                .insert_header((CONTENT_TYPE, "text/plain; charset=utf-8"))
                .body(text),
            (None, None) => builder.finish(),
        }
    }
}

/// What a handler produced under the lock.
pub(crate) struct Handled {
    pub(crate) reply: Reply,
    pub(crate) jobs: Vec<WebhookJob>,
    /// Transactions were accepted: the org's processing mode applies.
    pub(crate) accepted: bool,
}

impl From<Reply> for Handled {
    fn from(reply: Reply) -> Self {
        Handled {
            reply,
            jobs: Vec::new(),
            accepted: false,
        }
    }
}

/// The org of the request's Bearer key, or the 401 (plain text, never counted).
// The error is the finished rejection response, built once on a cold path.
#[allow(clippy::result_large_err)]
pub(crate) fn authenticate(
    request: &HttpRequest,
    registry: &Registry,
) -> Result<Arc<Org>, HttpResponse> {
    let api_key = request
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
        })
        .map(str::trim);
    match api_key.and_then(|key| registry.by_api_key(key)) {
        Some(org) => Ok(org),
        None => Err(HttpResponse::Unauthorized()
            .insert_header((CONTENT_TYPE, "text/plain; charset=utf-8"))
            .body("Authorization has been denied for this request.")),
    }
}

enum Plan {
    Answer {
        rate: RateHeaders,
        reply: Reply,
        close_unanswered: bool,
        latency_ms: u64,
        jobs: Vec<WebhookJob>,
        accepted: bool,
    },
    Hang {
        timeout_ms: u64,
    },
}

/// Counts the request in the stats and appends it to the request log: the one place where an
/// API request's outcome is recorded.
fn record(state: &mut OrgState, endpoint: &'static str, mut logged: LoggedRequest, status: u16) {
    state.stats.record(endpoint, status);
    logged.status = status;
    logged.reference_ids = std::mem::take(&mut state.accepted_reference_ids);
    state.requests.push(logged);
}

fn decide(
    org: &Org,
    state: &mut OrgState,
    request: &RequestKey<'_>,
    endpoint: &'static str,
    logged: LoggedRequest,
    handler: impl FnOnce(&Org, &mut OrgState, u64) -> Handled,
) -> Plan {
    let now = logged.at_ms;
    let rate = match state.window.try_admit(now) {
        Admission::Admitted(rate) => rate,
        Admission::Throttled {
            headers,
            retry_after_s,
        } => {
            record(state, endpoint, logged, 429);
            let mut reply = Reply::message(429, "API rate limit exceeded.");
            reply.retry_after_s = Some(retry_after_s);
            return Plan::Answer {
                rate: headers,
                reply,
                close_unanswered: false,
                latency_ms: 0,
                jobs: Vec::new(),
                accepted: false,
            };
        }
    };
    let attempt = state.next_attempt(request.path, request.transaction_id);
    let latency_ms = state.faults.random.latency_ms;
    let decision = state.faults.decide(org.spec.seed, request, attempt);
    let (handled, close_unanswered) = match decision {
        FaultDecision::Hang { timeout_ms } => {
            record(state, endpoint, logged, CLOSED_WITHOUT_ANSWER);
            return Plan::Hang { timeout_ms };
        }
        FaultDecision::Answer {
            status,
            retry_after_s,
            model_state,
            body,
        } => {
            let mut reply = match (model_state, body) {
                (Some(model_state), _) => Reply::json(
                    status,
                    json!({"message": INVALID_MESSAGE, "modelState": model_state}),
                ),
                (None, Some(body)) => Reply::json(status, body),
                (None, None) if status == 429 => Reply::message(status, "API rate limit exceeded."),
                (None, None) if status >= 500 => {
                    Reply::message(status, "An error has occurred (simulated fault).")
                }
                (None, None) => Reply::empty(status),
            };
            reply.retry_after_s = match (status, retry_after_s) {
                (_, Some(seconds)) => Some(seconds),
                (429, None) => Some(1),
                _ => None,
            };
            (Handled::from(reply), false)
        }
        FaultDecision::ApplyThenClose => (handler(org, state, now), true),
        FaultDecision::Pass => (handler(org, state, now), false),
    };
    let recorded_status = if close_unanswered {
        CLOSED_WITHOUT_ANSWER
    } else {
        handled.reply.status
    };
    record(state, endpoint, logged, recorded_status);
    Plan::Answer {
        rate,
        reply: handled.reply,
        close_unanswered,
        latency_ms,
        jobs: handled.jobs,
        accepted: handled.accepted,
    }
}

/// Whether a call of `endpoint` may change what an org keeps on disk: every write (reads
/// and queries only move counters, which are not kept).
fn changes_records(endpoint: &str) -> bool {
    !endpoint.starts_with("GET ") && !endpoint.contains("/Query")
}

/// Runs one authenticated API call through the gate. `endpoint` is the stats key
/// ("METHOD /route/template"); `transaction_id` feeds the fault draw ("" when none);
/// `transaction_ids` are the body's transactionIds for the request log (empty when none).
pub(crate) async fn run(
    request: &HttpRequest,
    registry: &web::Data<Registry>,
    org: Arc<Org>,
    endpoint: &'static str,
    transaction_id: &str,
    transaction_ids: Vec<String>,
    handler: impl FnOnce(&Org, &mut OrgState, u64) -> Handled,
) -> HttpResponse {
    let (method, route) = endpoint.split_once(' ').unwrap_or(("", endpoint));
    let path = request.path();
    let key = RequestKey {
        method,
        path,
        route,
        transaction_id,
    };
    let logged = LoggedRequest {
        at_ms: now_ms(),
        method,
        // Fixed routes (every transaction endpoint) cost no copy of the path.
        path: if path == route {
            route.into()
        } else {
            path.to_owned().into()
        },
        status: CLOSED_WITHOUT_ANSWER,
        transaction_ids,
        reference_ids: Vec::new(),
    };
    let plan = {
        let mut state = org.lock();
        decide(&org, &mut state, &key, endpoint, logged, handler)
    };
    if changes_records(endpoint) {
        registry.note_change(&org);
    }
    match plan {
        Plan::Hang { timeout_ms } => {
            actix_web::rt::time::sleep(Duration::from_millis(timeout_ms)).await;
            close_connection(request);
            HttpResponse::InternalServerError().finish()
        }
        Plan::Answer {
            rate,
            reply,
            close_unanswered,
            latency_ms,
            jobs,
            accepted,
        } => {
            registry.send_webhooks(jobs);
            if accepted {
                follow_processing_mode(&org, registry);
            }
            if latency_ms > 0 {
                actix_web::rt::time::sleep(Duration::from_millis(latency_ms)).await;
            }
            if close_unanswered {
                close_connection(request);
                return HttpResponse::InternalServerError().finish();
            }
            let mut response = reply.into_response();
            let headers = response.headers_mut();
            headers.insert(
                HeaderName::from_static("x-ratelimit-limit"),
                HeaderValue::from(rate.limit),
            );
            headers.insert(
                HeaderName::from_static("x-ratelimit-remaining"),
                HeaderValue::from(rate.remaining),
            );
            headers.insert(
                HeaderName::from_static("x-ratelimit-reset"),
                HeaderValue::from(rate.reset_unix_s),
            );
            response
        }
    }
}

/// Authenticates, then runs the gate: the common shape of every API handler.
pub(crate) async fn authenticated(
    request: &HttpRequest,
    registry: &web::Data<Registry>,
    endpoint: &'static str,
    transaction_id: &str,
    handler: impl FnOnce(&Org, &mut OrgState, u64) -> Handled,
) -> HttpResponse {
    match authenticate(request, registry) {
        Ok(org) => {
            run(
                request,
                registry,
                org,
                endpoint,
                transaction_id,
                Vec::new(),
                handler,
            )
            .await
        }
        Err(response) => response,
    }
}
