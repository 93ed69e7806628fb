//! `POST /v1/backup`: a consistent backup of the running instance, streamed
//! (docs/operations.md "Backup and restore"; the work is in `tenants/backup.rs`).

use std::io::Read;
use std::sync::Once;

use actix_web::{web, HttpResponse};

use super::error::{ApiError, ErrorCode};
use super::openapi::Conflict;
use crate::app::AppState;
use crate::tenants::backup::BackupError;

pub const BACKUPS_TOTAL: &str = "steward_backups_total";
pub const BACKUP_WRITES_HELD_SECONDS: &str = "steward_backup_writes_held_seconds";
pub const BACKUP_BYTES: &str = "steward_backup_bytes";
/// Bytes read from the backup's file per chunk of the answer.
const CHUNK_BYTES: usize = 256 * 1024;

pub fn routes(config: &mut web::ServiceConfig) {
    config.service(web::resource("/backup").route(web::post().to(backup)));
}

fn describe_metrics() {
    static DESCRIBED: Once = Once::new();
    DESCRIBED.call_once(|| {
        metrics::describe_counter!(
            BACKUPS_TOTAL,
            "Backups asked for (POST /v1/backup), by outcome (made, busy, failed)"
        );
        metrics::describe_histogram!(
            BACKUP_WRITES_HELD_SECONDS,
            metrics::Unit::Seconds,
            "The longest a backup held one tree's writes back while it copied that tree"
        );
        metrics::describe_gauge!(
            BACKUP_BYTES,
            metrics::Unit::Bytes,
            "Size of the last backup made"
        );
    });
}

/// `POST /v1/backup`: a consistent copy of the whole store.
#[utoipa::path(
    post,
    path = "/v1/backup",
    tag = "operations",
    responses(
        (status = 200, description = "The backup file, streamed (`steward restore` reads it)", content_type = "application/octet-stream", body = String),
        (status = 409, response = Conflict),
    )
)]
async fn backup(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    describe_metrics();
    let now_ms = steward_actors::ports::now_ms();
    // Tenants are not created, deleted or moved while the store is copied: the registry
    // and the tenants' trees then agree in the copy.
    let _admin = state.admin_lock.lock().await;
    let copying = state.clone();
    let made = web::block(move || {
        copying
            .stores
            .write_backup(&copying.config.data_dir, now_ms)
    })
    .await
    .map_err(|err| ApiError::new(ErrorCode::Internal, format!("the backup failed: {err}")))?;
    let made = match made {
        Ok(made) => made,
        Err(BackupError::Busy) => {
            metrics::counter!(BACKUPS_TOTAL, "outcome" => "busy").increment(1);
            return Err(ApiError::new(
                ErrorCode::Conflict,
                BackupError::Busy.to_string(),
            ));
        }
        Err(err) => {
            metrics::counter!(BACKUPS_TOTAL, "outcome" => "failed").increment(1);
            tracing::error!(error = %err, "backup failed");
            return Err(ApiError::new(
                ErrorCode::Internal,
                format!("the backup failed: {err}"),
            ));
        }
    };
    let summary = made.summary;
    metrics::counter!(BACKUPS_TOTAL, "outcome" => "made").increment(1);
    metrics::histogram!(BACKUP_WRITES_HELD_SECONDS).record(summary.writes_held_ms as f64 / 1e3);
    metrics::gauge!(BACKUP_BYTES).set(summary.bytes as f64);
    tracing::info!(
        entries = summary.entries,
        files = summary.files,
        bytes = summary.bytes,
        writes_held_ms = summary.writes_held_ms,
        took_ms = summary.took_ms,
        "backup made"
    );
    let mut answer = file_answer(&format!("steward-backup-{now_ms}.stwd"), summary.bytes);
    answer
        .insert_header(("Steward-Backup-Entries", summary.entries.to_string()))
        .insert_header(("Steward-Backup-Files", summary.files.to_string()))
        .insert_header((
            "Steward-Backup-Writes-Held-Ms",
            summary.writes_held_ms.to_string(),
        ));
    Ok(answer.streaming(file_chunks(made.file)))
}

/// The head of an answer that is a downloaded file of `bytes` bytes.
pub fn file_answer(file_name: &str, bytes: u64) -> actix_web::HttpResponseBuilder {
    let mut answer = HttpResponse::Ok();
    answer
        .content_type("application/octet-stream")
        .insert_header((
            "Content-Disposition",
            format!("attachment; filename=\"{file_name}\""),
        ))
        .no_chunking(bytes);
    answer
}

/// A file's bytes as an answer's body, read off the executor in chunks.
pub fn file_chunks(
    file: std::fs::File,
) -> impl futures_util::Stream<Item = Result<web::Bytes, ApiError>> {
    futures_util::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let read = web::block(move || {
            let mut chunk = vec![0u8; CHUNK_BYTES];
            let read = file.read(&mut chunk)?;
            chunk.truncate(read);
            Ok::<_, std::io::Error>((chunk, file))
        })
        .await;
        match read {
            Ok(Ok((chunk, _))) if chunk.is_empty() => None,
            Ok(Ok((chunk, file))) => Some((Ok(web::Bytes::from(chunk)), Some(file))),
            Ok(Err(err)) => Some((
                Err(ApiError::new(
                    ErrorCode::Internal,
                    format!("reading the file failed: {err}"),
                )),
                None,
            )),
            Err(err) => Some((
                Err(ApiError::new(ErrorCode::Internal, err.to_string())),
                None,
            )),
        }
    })
}
