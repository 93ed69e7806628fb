//! Read endpoints: Gift by source id or id, Contact by reference or id, Contact Find,
//! Contact and Gift queries (abbreviated and full), Organization/Current, Project by code,
//! RecurringGift by id.

use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::api::{authenticated, Handled, Reply};
use super::org::{OrgState, Registry};
use super::query::{run_query, QueryBody, RecordKind};
use super::records::{contact_full, contact_summary, gift_full, gift_summary, Record};
use super::DateGranularity;
use crate::server::{id_param, path_param};

/// Virtuous caps `take` at 1000.
const TAKE_MAX: u64 = 1_000;
/// Assumed default page size when `take` is absent.
const TAKE_DEFAULT: u64 = 100;

pub(crate) fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/api/Contact/Find", web::get().to(contact_find))
        .route("/api/Contact/Query", web::post().to(contact_query))
        .route(
            "/api/Contact/Query/FullContact",
            web::post().to(contact_query_full),
        )
        .route(
            "/api/Contact/{referenceSource}/{referenceId}",
            web::get().to(contact_by_reference),
        )
        .route("/api/Contact/{id}", web::get().to(contact_by_id))
        .route("/api/Gift/Query", web::post().to(gift_query))
        .route("/api/Gift/Query/FullGift", web::post().to(gift_query_full))
        .route(
            "/api/Gift/{transactionSource}/{transactionId}",
            web::get().to(gift_by_transaction),
        )
        .route("/api/Gift/{id}", web::get().to(gift_by_id))
        .route(
            "/api/Organization/Current",
            web::get().to(organization_current),
        )
        .route("/api/Project/Code/{code}", web::get().to(project_by_code))
        .route(
            "/api/RecurringGift/{id}",
            web::get().to(recurring_gift_by_id),
        );
}

fn found(record: Option<&Record>, form: fn(&Record) -> Value) -> Handled {
    match record {
        Some(record) => Reply::json(200, form(record)).into(),
        None => Reply::empty(404).into(),
    }
}

async fn gift_by_transaction(request: HttpRequest, registry: web::Data<Registry>) -> HttpResponse {
    let source = path_param(&request, "transactionSource");
    let transaction_id = path_param(&request, "transactionId");
    let endpoint = "GET /api/Gift/{transactionSource}/{transactionId}";
    authenticated(
        &request,
        &registry,
        endpoint,
        &transaction_id,
        |_, state, _| {
            found(
                state.gifts.by_transaction(&source, &transaction_id),
                gift_full,
            )
        },
    )
    .await
}

async fn gift_by_id(request: HttpRequest, registry: web::Data<Registry>) -> HttpResponse {
    let id = id_param(&request);
    authenticated(
        &request,
        &registry,
        "GET /api/Gift/{id}",
        "",
        |_, state, _| found(id.and_then(|id| state.gifts.records.get(&id)), gift_full),
    )
    .await
}

async fn contact_by_id(request: HttpRequest, registry: web::Data<Registry>) -> HttpResponse {
    let id = id_param(&request);
    authenticated(
        &request,
        &registry,
        "GET /api/Contact/{id}",
        "",
        |_, state, _| {
            found(
                id.and_then(|id| state.contacts.records.get(&id)),
                contact_full,
            )
        },
    )
    .await
}

fn contact_with_reference<'a>(state: &'a OrgState, source: &str, id: &str) -> Option<&'a Record> {
    state.contacts.by_reference(source, id)
}

async fn contact_by_reference(request: HttpRequest, registry: web::Data<Registry>) -> HttpResponse {
    let source = path_param(&request, "referenceSource");
    let reference_id = path_param(&request, "referenceId");
    let endpoint = "GET /api/Contact/{referenceSource}/{referenceId}";
    authenticated(&request, &registry, endpoint, "", |_, state, _| {
        found(
            contact_with_reference(state, &source, &reference_id),
            contact_full,
        )
    })
    .await
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct FindParams {
    email: Option<String>,
    reference_source: Option<String>,
    reference_id: Option<String>,
}

/// `?email=` or `?referenceSource=&referenceId=` → the contact, or 404.
async fn contact_find(request: HttpRequest, registry: web::Data<Registry>) -> HttpResponse {
    let params = web::Query::<FindParams>::from_query(request.query_string())
        .map(web::Query::into_inner)
        .unwrap_or_default();
    authenticated(
        &request,
        &registry,
        "GET /api/Contact/Find",
        "",
        |_, state, _| {
            let by_reference = match (&params.reference_source, &params.reference_id) {
                (Some(source), Some(id)) => contact_with_reference(state, source, id),
                _ => None,
            };
            let by_email = || state.contacts.by_email(params.email.as_deref()?);
            found(by_reference.or_else(by_email), contact_full)
        },
    )
    .await
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Paging {
    skip: Option<u64>,
    take: Option<u64>,
}

/// Parses the query string and body of a query endpoint; `Err` is the 400 reply.
fn query_input(request: &HttpRequest, body: &[u8]) -> Result<(QueryBody, u64, u64), Reply> {
    let paging = web::Query::<Paging>::from_query(request.query_string())
        .map_err(|_| Reply::message(400, "skip and take must be non-negative integers."))?;
    let take = paging.take.unwrap_or(TAKE_DEFAULT);
    if take > TAKE_MAX {
        return Err(Reply::message(400, "take must be at most 1000."));
    }
    let query = if body.iter().all(u8::is_ascii_whitespace) {
        QueryBody::default()
    } else {
        serde_json::from_slice::<QueryBody>(body).map_err(|error| {
            Reply::message(400, &format!("The query could not be read: {error}"))
        })?
    };
    Ok((query, paging.skip.unwrap_or(0), take))
}

async fn query(
    request: HttpRequest,
    body: Bytes,
    registry: web::Data<Registry>,
    endpoint: &'static str,
    kind: RecordKind,
    form: fn(&Record) -> Value,
) -> HttpResponse {
    let input = query_input(&request, &body);
    authenticated(&request, &registry, endpoint, "", |_, state, _| {
        let (query, skip, take) = match input {
            Ok(input) => input,
            Err(reply) => return reply.into(),
        };
        if state.switches.query_date_granularity == DateGranularity::Day
            && query.has_date_condition(kind)
        {
            state.stats.day_granularity_queries += 1;
        }
        match run_query(kind, &query, state) {
            Ok(records) => {
                let total = records.len();
                let list: Vec<Value> = records
                    .into_iter()
                    .skip(skip as usize)
                    .take(take as usize)
                    .map(form)
                    .collect();
                Reply::json(200, json!({"list": list, "total": total})).into()
            }
            Err(message) => Reply::message(400, &message).into(),
        }
    })
    .await
}

async fn contact_query(
    request: HttpRequest,
    body: Bytes,
    registry: web::Data<Registry>,
) -> HttpResponse {
    let endpoint = "POST /api/Contact/Query";
    query(
        request,
        body,
        registry,
        endpoint,
        RecordKind::Contact,
        contact_summary,
    )
    .await
}

async fn contact_query_full(
    request: HttpRequest,
    body: Bytes,
    registry: web::Data<Registry>,
) -> HttpResponse {
    let endpoint = "POST /api/Contact/Query/FullContact";
    query(
        request,
        body,
        registry,
        endpoint,
        RecordKind::Contact,
        contact_full,
    )
    .await
}

async fn gift_query(
    request: HttpRequest,
    body: Bytes,
    registry: web::Data<Registry>,
) -> HttpResponse {
    let endpoint = "POST /api/Gift/Query";
    query(
        request,
        body,
        registry,
        endpoint,
        RecordKind::Gift,
        gift_summary,
    )
    .await
}

async fn gift_query_full(
    request: HttpRequest,
    body: Bytes,
    registry: web::Data<Registry>,
) -> HttpResponse {
    let endpoint = "POST /api/Gift/Query/FullGift";
    query(
        request,
        body,
        registry,
        endpoint,
        RecordKind::Gift,
        gift_full,
    )
    .await
}

async fn organization_current(request: HttpRequest, registry: web::Data<Registry>) -> HttpResponse {
    authenticated(
        &request,
        &registry,
        "GET /api/Organization/Current",
        "",
        |org, _, _| {
            Reply::json(
                200,
                json!({"id": org.number, "name": org.spec.id, "isActive": true}),
            )
            .into()
        },
    )
    .await
}

async fn project_by_code(request: HttpRequest, registry: web::Data<Registry>) -> HttpResponse {
    let code = path_param(&request, "code");
    authenticated(
        &request,
        &registry,
        "GET /api/Project/Code/{code}",
        "",
        |_, state, _| {
            let project = state.projects.records.values().find(|project| {
                project
                    .text("projectCode")
                    .is_some_and(|c| c.eq_ignore_ascii_case(&code))
            });
            found(project, |project| Value::Object(project.doc.clone()))
        },
    )
    .await
}

async fn recurring_gift_by_id(request: HttpRequest, registry: web::Data<Registry>) -> HttpResponse {
    let id = id_param(&request);
    authenticated(
        &request,
        &registry,
        "GET /api/RecurringGift/{id}",
        "",
        |_, state, _| {
            found(
                id.and_then(|id| state.recurring_gifts.records.get(&id)),
                |record| Value::Object(record.doc.clone()),
            )
        },
    )
    .await
}
