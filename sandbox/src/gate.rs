//! The end of the gate of the source simulators that decide everything under one lock
//! (Constant Contact, feeds, partners): the [`Plan`] made under the lock, the status it logs
//! and counts, and carrying it out (latency, a hang, closing unanswered) after the lock is
//! released; and the whole gate of the generic simulators that answer `{"error", "message"}`
//! (feeds, partners).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use actix_web::http::header::{HeaderValue, RETRY_AFTER};
use actix_web::http::Method;
use actix_web::{HttpRequest, HttpResponse};
use serde_json::{json, Value};

use crate::clock::now_ms;
use crate::faults::{FaultDecision, Faults, RequestKey};
use crate::registry::Entry;
use crate::request_log::{LoggedRequest, RequestLog};
use crate::server::{close_connection, status_code};

/// What the gate decided under the lock.
pub(crate) enum Plan {
    Answer {
        response: HttpResponse,
        latency_ms: u64,
        /// Answer nobody: close the connection after applying (the response is not sent).
        close_unanswered: bool,
    },
    Hang {
        timeout_ms: u64,
    },
}

impl Plan {
    /// A refusal before the fault layer (auth, limits): answered at once.
    pub(crate) fn refuse(response: HttpResponse) -> Plan {
        Plan::Answer {
            response,
            latency_ms: 0,
            close_unanswered: false,
        }
    }

    /// The plan for a fault decision: `handle` runs the handler (on a pass, and before an
    /// apply-then-close), `fault_answer(status, retry_after_s, body)` builds a fault's answer.
    pub(crate) fn from_decision(
        decision: FaultDecision,
        latency_ms: u64,
        handle: impl FnOnce() -> HttpResponse,
        fault_answer: impl FnOnce(u16, Option<u64>, Option<Value>) -> HttpResponse,
    ) -> Plan {
        match decision {
            FaultDecision::Pass => Plan::Answer {
                response: handle(),
                latency_ms,
                close_unanswered: false,
            },
            FaultDecision::Answer {
                status,
                retry_after_s,
                body,
                ..
            } => Plan::Answer {
                response: fault_answer(status, retry_after_s, body),
                latency_ms,
                close_unanswered: false,
            },
            FaultDecision::Hang { timeout_ms } => Plan::Hang { timeout_ms },
            FaultDecision::ApplyThenClose => Plan::Answer {
                response: handle(),
                latency_ms,
                close_unanswered: true,
            },
        }
    }

    /// The status the request log and counters show: `0` = closed without an answer.
    pub(crate) fn logged_status(&self) -> u16 {
        match self {
            Plan::Answer {
                response,
                close_unanswered: false,
                ..
            } => response.status().as_u16(),
            _ => 0,
        }
    }

    /// Carries the plan out, outside the lock.
    pub(crate) async fn carry_out(self, request: &HttpRequest) -> HttpResponse {
        match self {
            Plan::Answer {
                response,
                latency_ms,
                close_unanswered,
            } => {
                if latency_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(latency_ms)).await;
                }
                if close_unanswered {
                    close_connection(request);
                }
                response
            }
            Plan::Hang { timeout_ms } => {
                tokio::time::sleep(Duration::from_millis(timeout_ms)).await;
                close_connection(request);
                HttpResponse::InternalServerError().finish()
            }
        }
    }
}

/// Counts one request by status and logs it (`path` with its query, as the log shows it).
pub(crate) fn record_request(
    by_status: &mut BTreeMap<u16, u64>,
    log: &mut RequestLog,
    at_ms: u64,
    method: &'static str,
    path: String,
    status: u16,
) {
    *by_status.entry(status).or_default() += 1;
    log.push(LoggedRequest {
        at_ms,
        method,
        path: Cow::Owned(path),
        status,
        transaction_ids: Vec::new(),
        reference_ids: Vec::new(),
    });
}

/// `path?query`, or `path` without a query: a request as the log shows it.
pub(crate) fn path_and_query(path: &str, query: &str) -> String {
    match query {
        "" => path.to_owned(),
        query => format!("{path}?{query}"),
    }
}

/// A request's method as the request log keeps it (a static name).
pub(crate) fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        _ => "OTHER",
    }
}

/// The generic simulators' error: `{"error": code, "message"}`.
pub(crate) fn json_error(status: u16, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status_code(status)).json(json!({"error": code, "message": message}))
}

/// An entry's state behind [`serve_json`].
pub(crate) trait JsonGated {
    fn faults(&mut self) -> &mut Faults;
    /// Seeds the random fault draws.
    fn seed(&self) -> u64;
    /// API requests counted so far: the fault draw's attempt is this + 1.
    fn requests_so_far(&self) -> u64;
    /// Whether the request carries the entry's credentials (counting a refusal as it likes).
    fn authorize(&mut self, request: &HttpRequest) -> bool;
    /// Counts and logs one request as answered (`status` 0 = closed unanswered); `route` is
    /// the template the caller named.
    fn record(&mut self, route: &str, request: LoggedRequest);
}

/// The gate of the generic simulators (feeds, partners): under the entry's lock, auth →
/// scripted step → random fault → `handle`, the request counted and logged; then the plan is
/// carried out outside the lock. Refusals and fault answers are `{"error", "message"}` (a
/// step's own body wins), with `Retry-After` when the fault gives one. The draw's
/// transactionId is the query string; `route` is the template a script step's `match.path`
/// may name.
pub(crate) async fn serve_json<Item: Entry>(
    request: &HttpRequest,
    entry: &Item,
    route: &str,
    handle: impl FnOnce(&mut Item::State) -> HttpResponse,
) -> HttpResponse
where
    Item::State: JsonGated,
{
    let at_ms = now_ms();
    let path = path_and_query(request.path(), request.query_string());
    let plan = {
        let mut state = entry.lock();
        let plan = json_gate(&mut *state, request, route, handle);
        let logged = LoggedRequest {
            at_ms,
            method: method_name(request.method()),
            path: Cow::Owned(path),
            status: plan.logged_status(),
            transaction_ids: Vec::new(),
            reference_ids: Vec::new(),
        };
        state.record(route, logged);
        plan
    };
    plan.carry_out(request).await
}

fn json_gate<State: JsonGated>(
    state: &mut State,
    request: &HttpRequest,
    route: &str,
    handle: impl FnOnce(&mut State) -> HttpResponse,
) -> Plan {
    if !state.authorize(request) {
        return Plan::refuse(json_error(
            401,
            "unauthorized",
            "missing or wrong credentials",
        ));
    }
    let key = RequestKey {
        method: request.method().as_str(),
        path: request.path(),
        route,
        transaction_id: request.query_string(),
    };
    let attempt = state.requests_so_far() as u32 + 1;
    let seed = state.seed();
    let faults = state.faults();
    let latency_ms = faults.random.latency_ms;
    let decision = faults.decide(seed, &key, attempt);
    Plan::from_decision(decision, latency_ms, || handle(state), json_fault_answer)
}

fn json_fault_answer(status: u16, retry_after_s: Option<u64>, body: Option<Value>) -> HttpResponse {
    let mut response = match (body, status) {
        (Some(body), _) => HttpResponse::build(status_code(status)).json(body),
        (None, 429) => json_error(429, "rate_limited", "Too many requests."),
        (None, 401) => json_error(401, "unauthorized", "missing or wrong credentials"),
        (None, _) => json_error(status, "server_error", "An internal error occurred."),
    };
    if let Some(seconds) = retry_after_s {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}
