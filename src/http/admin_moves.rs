//! Moving a tenant between instances (docs/operations.md "Moving a tenant"; the work is in
//! `tenants/moving.rs`): `POST /v1/tenants/{id}/export` answers the tenant's export and
//! leaves it `moved` here; `POST /v1/tenant-imports` takes an export as its body.

use std::sync::Once;

use actix_web::{web, HttpResponse};

use super::admin_backfill::upload::stream_to_file;
use super::admin_backup::{file_answer, file_chunks};
use super::error::{ApiError, ErrorCode};
use super::openapi::{BadRequest, Conflict, TenantErrors};
use crate::app::AppState;
use crate::tenant::validate_tenant_id;

pub const TENANT_MOVES_TOTAL: &str = "steward_tenant_moves_total";

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .service(web::resource("/tenants/{id}/export").route(web::post().to(export)))
        .service(web::resource("/tenant-imports").route(web::post().to(import)));
}

fn describe_metrics() {
    static DESCRIBED: Once = Once::new();
    DESCRIBED.call_once(|| {
        metrics::describe_counter!(
            TENANT_MOVES_TOTAL,
            "Tenant exports and imports, by direction (export, import) and outcome (done, refused, failed)"
        );
    });
}

fn counted<T>(direction: &'static str, outcome: &Result<T, ApiError>) {
    describe_metrics();
    let label = match outcome {
        Ok(_) => "done",
        Err(err) if err.code == ErrorCode::Internal => "failed",
        Err(_) => "refused",
    };
    metrics::counter!(TENANT_MOVES_TOTAL, "direction" => direction, "outcome" => label)
        .increment(1);
}

/// `POST /v1/tenants/{id}/export`: moves a tenant out (docs/operations.md "Moving a tenant").
#[utoipa::path(
    post,
    path = "/v1/tenants/{id}/export",
    tag = "operations",
    params(("id" = String, Path, description = "Tenant id", pattern = "^[a-z0-9-]{1,64}$", example = "retired")),
    responses(
        (status = 200, description = "The tenant's export file; the tenant is `moved` here from now on", content_type = "application/octet-stream", body = String),
        TenantErrors,
        (status = 409, response = Conflict),
    )
)]
async fn export(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    validate_tenant_id(&id)?;
    let made = crate::tenants::moving::export(&state, &id).await;
    counted("export", &made);
    let made = made?;
    let mut answer = file_answer(&format!("steward-tenant-{id}.stwd"), made.bytes);
    answer
        .insert_header(("Steward-Export-Entries", made.entries.to_string()))
        .insert_header(("Steward-Export-Files", made.files.to_string()));
    Ok(answer.streaming(file_chunks(made.file)))
}

/// `POST /v1/tenant-imports`: imports an exported tenant and starts it.
#[utoipa::path(
    post,
    path = "/v1/tenant-imports",
    tag = "operations",
    request_body(content = String, content_type = "application/octet-stream", description = "An export file"),
    responses(
        (status = 201, description = "The imported tenant, started", body = Object),
        (status = 400, response = BadRequest),
        (status = 409, response = Conflict),
    )
)]
async fn import(
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let tmp = state
        .config
        .data_dir
        .join(crate::tenants::backup::TMP_DIR)
        .join(format!(
            "import-{}-{}.stwd",
            steward_actors::ports::now_ms(),
            std::process::id()
        ));
    // Disk space is the limit: an export holds a tenant's whole history.
    let uploaded = stream_to_file(payload, tmp.clone(), u64::MAX).await;
    let imported = match uploaded {
        Ok(_) => crate::tenants::moving::import(&state, tmp.clone()).await,
        Err(err) => Err(err),
    };
    let _ = std::fs::remove_file(&tmp);
    counted("import", &imported);
    Ok(HttpResponse::Created().json(imported?))
}
