//! The end of the gate of the source simulators that decide everything under one lock
//! (Constant Contact, feeds): the [`Plan`] made under the lock, the status it logs and counts,
//! and carrying it out (latency, a hang, closing unanswered) after the lock is released.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse};
use serde_json::Value;

use crate::faults::FaultDecision;
use crate::request_log::{LoggedRequest, RequestLog};
use crate::server::close_connection;

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

/// Counts one `GET` by status and logs it (`path` with its query, as the log shows it).
pub(crate) fn record_get(
    by_status: &mut BTreeMap<u16, u64>,
    log: &mut RequestLog,
    at_ms: u64,
    path: String,
    status: u16,
) {
    *by_status.entry(status).or_default() += 1;
    log.push(LoggedRequest {
        at_ms,
        method: "GET",
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
