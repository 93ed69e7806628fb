//! Webhook ingress (docs/ingress.md): `POST /hooks/{tenant}/stripe`,
//! `POST /hooks/{tenant}/platform/{source}` and `GET|POST /hooks/{tenant}/mailchimp?key=…`.
//! No admin token: each source's own signature (Mailchimp: the URL's key).
//!
//! Every route runs the same steps: find the running tenant (404 `unknown_tenant`), read the
//! body within the limit (413), verify the signature on the raw bytes (401), parse (400),
//! map, and answer only once what the event changed is durable (invariant 1): `202` queued,
//! `200` duplicate / ignored / alerted / rejected / linked. docs/ingress.md is the operator's
//! reference for every answer.
//!
//! # Layout
//! - this file: routes, the shared answer and error types, enqueue, event marks, metrics.
//!
//! No module here touches the store: commands go to the tenant's Capture actor through its
//! handle (`enqueue`, `record_fact`: alerts, event marks, holds, links), which answers once
//! the write is durable.
//! - [`stripe`]: the Stripe route. [`stripe_link`]: subscription holds and links.
//! - [`platform`]: the generic platform route.
//! - [`mailchimp`]: the Mailchimp audience webhook (form-encoded, `?key=`).

mod mailchimp;
mod platform;
mod stripe;
mod stripe_link;

use std::sync::Once;
use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse, ResponseError};
use serde_json::{json, Value};
use steward_actors::messages::EnqueueError;
use steward_actors::runtime::TenantHandle;
use steward_actors::source_fact::{AlertNote, FactOutcome, SourceFact};
use steward_actors::store::{EnqueueOutcome, StoreError};

use super::error::{ApiError, ErrorCode, RETRY_AFTER_S};
use crate::app::AppState;
use crate::sources::Command;
use crate::tenant::TenantDoc;

/// Counter of ingress answers by source kind (`stripe`, `platform`, `mailchimp`) and outcome
/// (`queued`, `duplicate`, `ignored`, `held`, `linked`, `alerted`, `rejected`, `validated`,
/// or the error code).
/// No tenant label: per-tenant numbers are in the tenant status (metric cardinality, docs/operations.md).
pub const INGRESS_REQUESTS_TOTAL: &str = "steward_ingress_requests_total";
/// Histogram of the time from request start to answer, by source kind.
pub const INGRESS_ACK_SECONDS: &str = "steward_ingress_ack_seconds";
/// Counter of deliberately ignored events by source kind and reason class (`test_mode`,
/// `unhandled_type`, `skipped`: a known type that carries nothing for Virtuous).
pub const INGRESS_IGNORED_TOTAL: &str = "steward_ingress_ignored_total";

/// The ingress routes (registered on the main listener, outside `/v1`).
pub fn routes(config: &mut web::ServiceConfig) {
    describe_metrics();
    config
        .service(post_only("/hooks/{tenant}/stripe").route(web::post().to(stripe::receive)))
        .service(
            post_only("/hooks/{tenant}/platform/{source}").route(web::post().to(platform::receive)),
        )
        // GET too: Mailchimp validates the URL with a bare GET (other methods: 405 + Allow).
        .service(
            web::resource("/hooks/{tenant}/mailchimp")
                .route(web::get().to(mailchimp::validate))
                .route(web::post().to(mailchimp::receive)),
        );
}

/// A webhook resource: any method but POST gets `405 method_not_allowed` (JSON, `Allow:
/// POST`) instead of a bare 404 that would send an operator looking for a wrong URL.
pub(crate) fn post_only(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(|request: actix_web::HttpRequest| async move {
        Err::<actix_web::HttpResponse, _>(ApiError::new(
            ErrorCode::MethodNotAllowed,
            format!(
                "{} accepts POST only, not {}",
                request.path(),
                request.method()
            ),
        ))
    }))
}

fn describe_metrics() {
    static DESCRIBED: Once = Once::new();
    DESCRIBED.call_once(|| {
        metrics::describe_counter!(
            INGRESS_REQUESTS_TOTAL,
            "Webhook deliveries answered, by source kind and outcome (queued, duplicate, ignored, held, linked, alerted, rejected, validated, or the error code)"
        );
        metrics::describe_counter!(
            INGRESS_IGNORED_TOTAL,
            "Webhook events answered 200 and deliberately ignored, by source kind and reason class (test_mode, unhandled_type, skipped)"
        );
        metrics::describe_histogram!(
            INGRESS_ACK_SECONDS,
            metrics::Unit::Seconds,
            "Time from a webhook delivery's arrival to its answer (after the durable write), by source kind"
        );
    });
}

/// An ingress refusal: the JSON error shape, plus `Retry-After` when the tenant is busy.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error(transparent)]
    Api(#[from] ApiError),
    /// Capture's mailbox is full or Capture is restarting: `503` + `Retry-After`.
    #[error("{0}")]
    Busy(String),
}

impl IngressError {
    fn code(&self) -> &'static str {
        match self {
            IngressError::Api(err) => err.code.as_str(),
            IngressError::Busy(_) => ErrorCode::Unavailable.as_str(),
        }
    }
}

impl From<StoreError> for IngressError {
    fn from(err: StoreError) -> IngressError {
        IngressError::Api(ApiError::from(err))
    }
}

impl ResponseError for IngressError {
    fn status_code(&self) -> StatusCode {
        match self {
            IngressError::Api(err) => err.status_code(),
            IngressError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            IngressError::Api(err) => err.error_response(),
            IngressError::Busy(message) => HttpResponse::ServiceUnavailable()
                .insert_header(("Retry-After", RETRY_AFTER_S.to_string()))
                .json(json!({"error": {"code": self.code(), "message": message}})),
        }
    }
}

pub(crate) fn refuse(code: ErrorCode, message: impl Into<String>) -> IngressError {
    IngressError::Api(ApiError::new(code, message))
}

/// A successful answer: status, the metric's outcome label, the JSON body.
pub(crate) struct Answer {
    status: StatusCode,
    outcome: &'static str,
    body: Value,
}

impl Answer {
    pub(crate) fn ok(outcome: &'static str, event_id: &str, extra: Value) -> Answer {
        let mut body = json!({"status": outcome, "event_id": event_id});
        if let (Value::Object(body), Value::Object(extra)) = (&mut body, extra) {
            body.extend(extra);
        }
        Answer {
            status: StatusCode::OK,
            outcome,
            body,
        }
    }

    /// `200 ignored`, counted by reason class (never failed: docs/ingress.md).
    pub(crate) fn ignored(source_kind: &'static str, event_id: &str, reason: &str) -> Answer {
        let reason_class = if reason.starts_with("test-mode") {
            "test_mode"
        } else if reason.starts_with("unhandled event type")
            || reason.starts_with("no mapping for event type")
        {
            "unhandled_type"
        } else {
            "skipped"
        };
        metrics::counter!(INGRESS_IGNORED_TOTAL, "source" => source_kind, "reason" => reason_class)
            .increment(1);
        Answer::ok("ignored", event_id, json!({"reason": reason}))
    }

    /// `202 queued` when anything was queued, `202 two_way` when a two-way pair took the
    /// change (decided against its record's link, docs/two-way.md), else `200 duplicate`.
    pub(crate) fn enqueued(outcomes: &[EnqueueOutcome], event_id: &str) -> Answer {
        let queued = EnqueueOutcome::queued_in(outcomes);
        let two_way = outcomes
            .iter()
            .filter(|outcome| matches!(outcome, EnqueueOutcome::TwoWay))
            .count();
        if queued == 0 && two_way > 0 {
            return Answer {
                status: StatusCode::ACCEPTED,
                outcome: "two_way",
                body: json!({"status": "two_way", "event_id": event_id, "two_way": two_way}),
            };
        }
        if queued == 0 {
            return Answer::ok("duplicate", event_id, json!({}));
        }
        Answer {
            status: StatusCode::ACCEPTED,
            outcome: "queued",
            body: json!({"status": "queued", "event_id": event_id, "queued": queued,
                         "duplicates": outcomes.len() - queued}),
        }
    }

    pub(crate) fn held(event_id: &str, until_s: i64) -> Answer {
        Answer {
            status: StatusCode::ACCEPTED,
            outcome: "held",
            body: json!({"status": "held", "event_id": event_id, "queued": 1, "held_until_unix_s": until_s}),
        }
    }
}

/// Runs one delivery's handling and turns it into the HTTP answer, with its metrics.
pub(crate) async fn answer(
    source_kind: &'static str,
    handling: impl std::future::Future<Output = Result<Answer, IngressError>>,
) -> Result<HttpResponse, IngressError> {
    let started = Instant::now();
    let result = handling.await;
    let outcome = match &result {
        Ok(answer) => answer.outcome,
        Err(err) => err.code(),
    };
    metrics::counter!(INGRESS_REQUESTS_TOTAL, "source" => source_kind, "outcome" => outcome)
        .increment(1);
    metrics::histogram!(INGRESS_ACK_SECONDS, "source" => source_kind)
        .record(started.elapsed().as_secs_f64());
    let answer = result?;
    Ok(HttpResponse::build(answer.status).json(answer.body))
}

/// A running tenant and what the ingress needs of it.
pub(crate) struct TenantContext {
    pub doc: std::sync::Arc<TenantDoc>,
    pub handle: TenantHandle,
}

/// The running tenant `tenant_id`; unknown or not running → 404 `unknown_tenant`.
pub(crate) fn tenant_context(
    state: &AppState,
    tenant_id: &str,
) -> Result<TenantContext, IngressError> {
    let unknown = || {
        if state.moved_tenants.contains(tenant_id) {
            return IngressError::Api(crate::tenants::moving::moved_error(tenant_id));
        }
        refuse(
            ErrorCode::UnknownTenant,
            format!(
                "no running tenant `{}`",
                tenant_id.chars().take(80).collect::<String>()
            ),
        )
    };
    // Clone the Arc out: no dashmap Ref is held across an await (STYLE.md).
    let doc = state
        .tenant_docs
        .get(tenant_id)
        .map(|doc| doc.value().clone())
        .ok_or_else(unknown)?;
    let handle = state.runtime.tenant(tenant_id).ok_or_else(unknown)?;
    Ok(TenantContext { doc, handle })
}

/// Capture's refusals: back-pressure and a restarting Capture are `503` + `Retry-After`.
fn capture_error(err: EnqueueError) -> IngressError {
    match err {
        EnqueueError::MailboxFull { .. } | EnqueueError::Unavailable => {
            IngressError::Busy(err.to_string())
        }
        EnqueueError::Store(err) => IngressError::from(err),
    }
}

/// Enqueues commands through Capture; resolves once they are durable.
pub(crate) async fn enqueue(
    handle: &TenantHandle,
    commands: Vec<Command>,
    now_ms: u64,
) -> Result<Vec<EnqueueOutcome>, IngressError> {
    let entries = commands
        .into_iter()
        .map(|command| command.into_new_entry(now_ms))
        .collect();
    handle.enqueue(entries).await.map_err(capture_error)
}

/// Hands a source fact to Capture; resolves once it is durable.
pub(crate) async fn record_fact(
    handle: &TenantHandle,
    fact: SourceFact,
) -> Result<FactOutcome, IngressError> {
    handle.record_fact(fact).await.map_err(capture_error)
}

/// Enqueues `commands` and, when one is new, raises `notes` in the same flush (logged ERROR
/// the first time a code is raised).
pub(crate) async fn enqueue_with_alerts(
    handle: &TenantHandle,
    commands: Vec<Command>,
    notes: &[crate::sources::stripe::AlertNote],
    now_ms: u64,
) -> Result<Vec<EnqueueOutcome>, IngressError> {
    let entries = commands
        .into_iter()
        .map(|command| command.into_new_entry(now_ms))
        .collect();
    let alerts_if_queued = notes
        .iter()
        .map(|note| AlertNote {
            code: note.code.clone(),
            message: note.message.clone(),
        })
        .collect();
    let fact = SourceFact::EnqueueWithAlerts {
        entries,
        alerts_if_queued,
    };
    match record_fact(handle, fact).await? {
        FactOutcome::Enqueued(outcomes) => Ok(outcomes),
        other => unreachable!("Capture answers EnqueueWithAlerts with Enqueued, not {other:?}"),
    }
}

/// An event that queues nothing but must tell staff (an alert, a rejected event).
pub(crate) struct EventAlert<'a> {
    /// Source-state name of the source's event marks.
    pub mark_name: &'a str,
    pub event_id: &'a str,
    pub alert_code: &'a str,
    pub message: &'a str,
    /// The delivery as received, kept in the mark for staff.
    pub raw_event: &'a [u8],
}

/// Raises `alert` once per event id and answers `answer`. The mark stores the alert and the
/// event itself, so the fact is kept for staff. A re-delivery answers `duplicate` — after the
/// original is durable.
pub(crate) async fn alert_once(
    handle: &TenantHandle,
    alert: EventAlert<'_>,
    answer: Answer,
) -> Result<Answer, IngressError> {
    let kept = json!({"alert": alert.alert_code, "message": alert.message,
                      "event": String::from_utf8_lossy(alert.raw_event)});
    let fact = SourceFact::MarkEvent {
        mark_name: alert.mark_name.to_string(),
        event_id: alert.event_id.to_string(),
        kept: kept.to_string().into_bytes(),
        alert: AlertNote {
            code: alert.alert_code.to_string(),
            message: alert.message.to_string(),
        },
    };
    match record_fact(handle, fact).await? {
        FactOutcome::Marked { first_time: false } => {
            Ok(Answer::ok("duplicate", alert.event_id, json!({})))
        }
        _ => Ok(answer),
    }
}

pub(crate) use steward_actors::ports::now_ms;
