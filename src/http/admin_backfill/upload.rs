//! `PUT /v1/tenants/{id}/backfills/{b}/file`: the raw body streamed to disk, a buffer at a
//! time (never the whole file in memory), under a hidden partial name that becomes the job's
//! file only once every byte is written and synced. A cut-off upload, a body over
//! `[backfill] max_file_bytes` or a refused job leaves no file behind and the job as it was.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use actix_web::http::header;
use actix_web::{web, HttpRequest};
use dashmap::DashSet;
use futures_util::StreamExt;

use crate::http::error::{ApiError, ErrorCode};

/// Bytes gathered before one write to the file (off the async thread).
const WRITE_BUFFER_BYTES: usize = 1024 * 1024;

/// Uploads in progress, by `(tenant, job)`: a second upload of one job while the first is
/// still streaming is refused, so one file is never written twice at once.
#[derive(Default)]
pub struct UploadsInProgress {
    jobs: DashSet<(String, String)>,
}

/// Holds a job's place in [`UploadsInProgress`] until dropped.
pub struct UploadPlace<'a> {
    uploads: &'a UploadsInProgress,
    key: (String, String),
}

impl UploadsInProgress {
    /// The job's place, or `None` when another upload of it is streaming.
    pub fn take(&self, tenant_id: &str, job_id: &str) -> Option<UploadPlace<'_>> {
        let key = (tenant_id.to_string(), job_id.to_string());
        self.jobs
            .insert(key.clone())
            .then(|| UploadPlace { uploads: self, key })
    }
}

impl Drop for UploadPlace<'_> {
    fn drop(&mut self) {
        self.uploads.jobs.remove(&self.key);
    }
}

/// The `Content-Type` a file of `format` is sent with.
pub fn content_type_of(format: &str) -> &'static str {
    match format {
        "ndjson" => "application/x-ndjson",
        _ => "text/csv",
    }
}

/// 415 unless the request's `Content-Type` (parameters aside) is the one of `format`.
pub fn check_content_type(request: &HttpRequest, format: &str) -> Result<(), ApiError> {
    let given = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(|value| {
            value
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    let accepted: &[&str] = match format {
        "ndjson" => &["application/x-ndjson", "application/ndjson"],
        _ => &["text/csv"],
    };
    match given {
        Some(given) if accepted.contains(&given.as_str()) => Ok(()),
        given => Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!(
                "the file of a `{format}` backfill is sent with `Content-Type: {}` (got {})",
                content_type_of(format),
                given.map_or("none".to_string(), |given| format!("`{given}`"))
            ),
        )),
    }
}

/// 413 `payload_too_large` naming the limit.
pub fn too_large(limit_bytes: u64) -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!("the file is larger than backfill.max_file_bytes ({limit_bytes} bytes)"),
    )
}

/// The declared `Content-Length`, when there is one.
pub fn declared_length(request: &HttpRequest) -> Option<u64> {
    request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
}

/// A file being written under a temporary name: removed when dropped unless kept (an
/// error, a client gone, the request's future dropped midway).
struct PartialFile {
    path: PathBuf,
    kept: bool,
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn io_failure(what: &str, path: &Path, error: impl std::fmt::Display) -> ApiError {
    tracing::error!(path = %path.display(), error = %error, "backfill upload: {what} failed");
    ApiError::new(
        ErrorCode::Internal,
        format!("{what} failed on the server; see its log"),
    )
}

/// Creates `dir` (and its parents) private to Steward's user (0700).
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Streams `payload` to `final_path` (through a hidden partial file in the same directory,
/// renamed at the end, then the directory synced): at most `limit_bytes`. Returns the bytes
/// written. On any error nothing is left at either name of this upload.
pub async fn stream_to_file(
    mut payload: web::Payload,
    final_path: PathBuf,
    limit_bytes: u64,
) -> Result<u64, ApiError> {
    let dir = final_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let file_name = final_path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let partial_path = dir.join(format!(".{file_name}.partial"));
    let opened = {
        let dir = dir.clone();
        let partial_path = partial_path.clone();
        web::block(move || -> std::io::Result<File> {
            create_private_dir(&dir)?;
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&partial_path)
        })
        .await
    };
    let mut file = match opened {
        Ok(Ok(file)) => file,
        Ok(Err(error)) => return Err(io_failure("creating the file", &partial_path, error)),
        Err(error) => return Err(io_failure("creating the file", &partial_path, error)),
    };
    let mut partial = PartialFile {
        path: partial_path.clone(),
        kept: false,
    };
    let mut written: u64 = 0;
    let mut buffer = web::BytesMut::with_capacity(WRITE_BUFFER_BYTES);
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|error| {
            ApiError::new(
                ErrorCode::MalformedBody,
                format!("the upload was cut off after {written} bytes: {error}"),
            )
        })?;
        written += chunk.len() as u64;
        if written > limit_bytes {
            return Err(too_large(limit_bytes));
        }
        buffer.extend_from_slice(&chunk);
        if buffer.len() >= WRITE_BUFFER_BYTES {
            file = write_off_thread(file, buffer.split().freeze(), &partial_path).await?;
        }
    }
    let remainder = buffer.split().freeze();
    let finished = web::block(move || -> std::io::Result<()> {
        file.write_all(&remainder)?;
        file.sync_all()
    })
    .await;
    match finished {
        Ok(Ok(())) => {}
        Ok(Err(error)) => return Err(io_failure("writing the file", &partial_path, error)),
        Err(error) => return Err(io_failure("writing the file", &partial_path, error)),
    }
    let renamed = {
        let partial_path = partial_path.clone();
        let final_path = final_path.clone();
        web::block(move || -> std::io::Result<()> {
            std::fs::rename(&partial_path, &final_path)?;
            // The rename is durable once the directory is: a crash after the answer still
            // finds the file the dry run reads.
            File::open(&dir)?.sync_all()
        })
        .await
    };
    match renamed {
        Ok(Ok(())) => {
            partial.kept = true;
            Ok(written)
        }
        Ok(Err(error)) => Err(io_failure("keeping the file", &final_path, error)),
        Err(error) => Err(io_failure("keeping the file", &final_path, error)),
    }
}

async fn write_off_thread(
    mut file: File,
    bytes: web::Bytes,
    path: &Path,
) -> Result<File, ApiError> {
    match web::block(move || file.write_all(&bytes).map(|()| file)).await {
        Ok(Ok(file)) => Ok(file),
        Ok(Err(error)) => Err(io_failure("writing the file", path, error)),
        Err(error) => Err(io_failure("writing the file", path, error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn content_types_follow_the_format() {
        // Goal: csv takes text/csv (a charset allowed), ndjson application/x-ndjson; anything
        // else, or none, is refused naming the type wanted.
        let csv = TestRequest::default()
            .insert_header((header::CONTENT_TYPE, "text/csv; charset=utf-8"))
            .to_http_request();
        assert!(check_content_type(&csv, "csv").is_ok());
        let refused = check_content_type(&csv, "ndjson").unwrap_err();
        assert_eq!(refused.code, ErrorCode::UnsupportedMediaType);
        assert!(
            refused.message.contains("application/x-ndjson"),
            "{refused}"
        );
        let ndjson = TestRequest::default()
            .insert_header((header::CONTENT_TYPE, "application/x-ndjson"))
            .to_http_request();
        assert!(check_content_type(&ndjson, "ndjson").is_ok());
        let bare = TestRequest::default().to_http_request();
        let refused = check_content_type(&bare, "csv").unwrap_err();
        assert!(refused.message.contains("got none"), "{refused}");
    }

    #[test]
    fn one_upload_of_a_job_at_a_time() {
        // Goal: a job's place is taken once until it is given back; other jobs are free.
        let uploads = UploadsInProgress::default();
        let first = uploads.take("t", "bf_1").expect("free");
        assert!(uploads.take("t", "bf_1").is_none());
        assert!(uploads.take("t", "bf_2").is_some());
        drop(first);
        assert!(uploads.take("t", "bf_1").is_some());
    }
}
