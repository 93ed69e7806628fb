//! The admin API's OpenAPI document (docs/api.md), served at `GET /v1/openapi.json`.
//!
//! The document is generated from the handlers themselves: each `/v1` handler carries a
//! `#[utoipa::path(...)]` attribute next to its code, its query, body and answer types derive
//! `IntoParams` / `ToSchema`, and the error body is [`ErrorBody`] with the codes of
//! [`ErrorCode`]. This file only lists the handlers ([`AdminApiDoc`]), defines the shared
//! error answers (one per status, with examples) and adds what every `/v1` route has in
//! common (the bearer token, `401`, `500`).
//!
//! # Adding a route
//! 1. Put `#[utoipa::path(method, path = "/v1/…", tag = "…", params(TenantPath, …),
//!    request_body = …, responses((status = 200, body = YourAnswer), TenantErrors, …))]` on
//!    the handler, with the path written as the document shows it (`{id}`, no regex), and
//!    every error status it may answer: [`TenantErrors`] / [`RunningTenantErrors`] for the
//!    common sets, `(status = 409, response = Conflict)` and the like for the others.
//! 2. Add the handler to `paths(...)` below, in its file's group.
//! 3. `cargo test --test it openapi` compares the document with the registered routes.
//!
//! Test hooks (`/_test/` paths, answering 404 unless `runtime.test_hooks` is on) are not part
//! of the contract and stay out of the document.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use actix_web::{web, HttpResponse};
use utoipa::openapi::example::ExampleBuilder;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr};
use utoipa::{IntoParams, IntoResponses, Modify, OpenApi, ToResponse};

use super::error::{ErrorBody, ErrorCode, ErrorDetail};
use super::{
    admin, admin_backfill, admin_backup, admin_dead_letters, admin_destinations, admin_inbound,
    admin_moves, admin_pollers, admin_reconciliations, admin_records, admin_test_events,
    admin_two_way,
};

/// The name of the bearer scheme in the document.
const ADMIN_TOKEN_SCHEME: &str = "admin_token";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Steward admin API",
        description = "The admin API of a Steward instance (`/v1`, bearer admin token). \
                       Errors are `{\"error\": {\"code\", \"message\"}}`; see docs/api.md."
    ),
    paths(
        openapi_json,
        // admin.rs
        admin::create_tenant,
        admin::list_tenants,
        admin::get_tenant,
        admin::patch_tenant,
        admin::delete_tenant,
        admin::pause_tenant,
        admin::resume_tenant,
        admin::ack_alert,
        // admin_dead_letters.rs
        admin_dead_letters::list,
        admin_dead_letters::show,
        admin_dead_letters::replay,
        admin_dead_letters::discard,
        // admin_records.rs
        admin_records::get_record,
        admin_records::find_records,
        admin_records::test_connection,
        // admin_test_events.rs
        admin_test_events::trigger_stripe,
        // admin_pollers.rs
        admin_pollers::list_pollers,
        admin_pollers::list_runs,
        admin_pollers::poller_action,
        admin_pollers::parity,
        // admin_destinations.rs
        admin_destinations::list,
        admin_destinations::poll_now,
        admin_destinations::action,
        // admin_inbound.rs
        admin_inbound::list_unparsed,
        // admin_two_way.rs
        admin_two_way::pairs,
        admin_two_way::conflicts,
        admin_two_way::resolve,
        admin_two_way::start_cross_match,
        admin_two_way::cross_match,
        admin_two_way::report,
        admin_two_way::approve,
        admin_two_way::records,
        admin_two_way::record,
        admin_two_way::dead_letters,
        // admin_backfill.rs
        admin_backfill::create,
        admin_backfill::list,
        admin_backfill::get,
        admin_backfill::upload_file,
        admin_backfill::rejects,
        admin_backfill::action,
        // admin_reconciliations.rs
        admin_reconciliations::create,
        admin_reconciliations::list,
        admin_reconciliations::get,
        // admin_backup.rs
        admin_backup::backup,
        // admin_moves.rs
        admin_moves::export,
        admin_moves::import,
    ),
    components(
        schemas(ErrorBody, ErrorDetail, ErrorCode),
        responses(
            BadRequest,
            Unauthorized,
            NotFound,
            Conflict,
            PayloadTooLarge,
            UnsupportedMediaType,
            Unprocessable,
            Internal,
            Unavailable
        )
    ),
    modifiers(&EveryAdminRoute),
    tags(
        (name = "tenants", description = "Tenants: create, read, change, pause, delete"),
        (name = "dead letters", description = "Entries Virtuous or a destination refused"),
        (name = "records", description = "One record's state, the Virtuous connection"),
        (name = "pollers", description = "Polled sources (docs/polling.md)"),
        (name = "pull", description = "Pull destinations (docs/pull.md)"),
        (name = "two-way", description = "Two-way contact sync (docs/two-way.md)"),
        (name = "backfills", description = "Bulk loads (docs/backfill.md)"),
        (name = "reconciliations", description = "Money reconciliation (docs/backfill.md)"),
        (name = "operations", description = "Backups, moves, this document"),
    )
)]
pub struct AdminApiDoc;

/// The document as served, built once on first use.
static DOCUMENT_JSON: LazyLock<String> = LazyLock::new(|| {
    AdminApiDoc::openapi()
        .to_json()
        .expect("the OpenAPI document serializes")
});

/// `/openapi.json` inside the `/v1` scope (behind the admin token, like every `/v1` route).
pub fn routes(config: &mut web::ServiceConfig) {
    config.service(web::resource("/openapi.json").route(web::get().to(openapi_json)));
}

/// `GET /v1/openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of the admin API", body = Object))
)]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(DOCUMENT_JSON.as_str())
}

/// What every `/v1` operation shares: the bearer admin token (a missing or wrong one is
/// `401`) and `500 internal` (the store failed).
struct EveryAdminRoute;

impl Modify for EveryAdminRoute {
    fn modify(&self, document: &mut utoipa::openapi::OpenApi) {
        let components = document.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            ADMIN_TOKEN_SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The admin token: `STEWARD_ADMIN_TOKEN`, or the file \
                         `{data_dir}/admin-token` written on first start",
                    ))
                    .build(),
            ),
        );
        let requirement = SecurityRequirement::new(ADMIN_TOKEN_SCHEME, Vec::<String>::new());
        for item in document.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                operation.security = Some(vec![requirement.clone()]);
                for (status, name) in [("401", "Unauthorized"), ("500", "Internal")] {
                    operation
                        .responses
                        .responses
                        .entry(status.to_string())
                        .or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
                }
            }
        }
    }
}

/// The `{id}` of every `/v1/tenants/{id}/…` path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Read by the document only: handlers take `web::Path<String>`.
pub struct TenantPath {
    /// Tenant id: 1 to 64 lowercase letters, digits and `-` (else `400 invalid_tenant_id`).
    #[param(pattern = "^[a-z0-9-]{1,64}$", example = "hope")]
    id: String,
}

/// The errors of a route on one registered tenant: `400` (a malformed id or request) and
/// `404` (no such tenant, or nothing with that id in it).
pub struct TenantErrors;

impl IntoResponses for TenantErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        shared_answers(&[("400", "BadRequest"), ("404", "NotFound")])
    }
}

/// [`TenantErrors`], and those of a route that needs the tenant's actors: `409` (the tenant
/// moved to another instance, or its state does not allow it) and `503` (not running now).
pub struct RunningTenantErrors;

impl IntoResponses for RunningTenantErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        shared_answers(&[
            ("400", "BadRequest"),
            ("404", "NotFound"),
            ("409", "Conflict"),
            ("503", "Unavailable"),
        ])
    }
}

/// References to the shared error answers, by status.
fn shared_answers(statuses: &[(&str, &str)]) -> BTreeMap<String, RefOr<Response>> {
    statuses
        .iter()
        .map(|(status, name)| {
            (
                status.to_string(),
                RefOr::Ref(Ref::from_response_name(*name)),
            )
        })
        .collect()
}

/// One error answer: the [`ErrorBody`] schema with an example per code it may carry.
fn error_answer(description: &str, examples: &[(ErrorCode, &str)]) -> RefOr<Response> {
    let examples = examples.iter().map(|(code, message)| {
        let example = serde_json::json!({"error": {"code": code, "message": message}});
        (
            code.as_str(),
            ExampleBuilder::new().value(Some(example)).build(),
        )
    });
    let content = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("ErrorBody")))
        .examples_from_iter(examples)
        .build();
    ResponseBuilder::new()
        .description(description)
        .content("application/json", content)
        .build()
        .into()
}

/// Declares a shared error answer: `(status = …, response = Name)` in a path refers to it.
macro_rules! error_answers {
    ($($name:ident: $description:literal [$(($code:ident, $message:literal)),+ $(,)?];)+) => {$(
        #[doc = $description]
        pub struct $name;

        impl<'s> ToResponse<'s> for $name {
            fn response() -> (&'s str, RefOr<Response>) {
                (stringify!($name), error_answer($description, &[$((ErrorCode::$code, $message)),+]))
            }
        }
    )+};
}

error_answers! {
    BadRequest: "The request was refused as written: a malformed tenant id, body or query, or a field out of range" [
        (InvalidTenantId, "tenant id `Hope!` is invalid: 1 to 64 of a-z, 0-9, - and _"),
        (InvalidField, "limit must be 1 to 1000"),
        (MalformedBody, "the body is not valid JSON: expected value at line 1 column 1"),
    ];
    Unauthorized: "The bearer admin token is missing or wrong" [
        (Unauthorized, "a valid `Authorization: Bearer <admin token>` header is required"),
    ];
    NotFound: "No such tenant, or nothing with that id in it" [
        (UnknownTenant, "no tenant `hope`"),
        (NotFound, "no dead letter `17`"),
    ];
    Conflict: "The tenant's or the job's state does not allow it now" [
        (Conflict, "tenant `hope` exists"),
        (TenantHasWork, "tenant `hope` has 3 queued, 0 awaiting confirmation, 0 needing review; ?force=true deletes it anyway"),
        (InvalidTransition, "the backfill is `running`; start needs `ready`"),
        (Moved, "tenant `hope` was moved to another instance"),
    ];
    PayloadTooLarge: "The body is larger than the configured limit" [
        (PayloadTooLarge, "the body is larger than 1048576 bytes"),
    ];
    UnsupportedMediaType: "The body's `Content-Type` is not the one the route takes" [
        (UnsupportedMediaType, "the file of a `csv` backfill is sent with `Content-Type: text/csv` (got `application/json`)"),
    ];
    Unprocessable: "A job's spec was refused; the message names the field" [
        (InvalidBackfill, "field `source` is invalid: the tenant has no source `gala`"),
        (InvalidReconciliation, "field `to` is invalid: 2026-01-01 is before `from` (2026-01-02)"),
    ];
    Internal: "The store failed; the server log says why" [
        (Internal, "the store failed; see the server log"),
    ];
    Unavailable: "The tenant's actors are not there now (restarting, or the tenant moved): retry after `Retry-After`" [
        (Unavailable, "tenant `hope` is not running"),
        (Moved, "tenant `hope` was moved to another instance"),
    ];
}
