//! Moving a tenant between instances (docs/operations.md "Moving a tenant").
//!
//! Export (`POST /v1/tenants/{id}/export`): the tenant becomes `moved` in the registry
//! (durably, first), its webhooks are answered `503 moved` from then on, its actors stop
//! (the call in flight is answered and recorded first), and only then is its key space
//! copied — so everything it acknowledged is in the export and nothing happens to it here
//! afterwards. It never runs here again; a moved tenant can be exported again (the same
//! data) or deleted.
//!
//! Import (`POST /v1/tenants/import`, the export as the body): refused when the id is in use
//! or the secrets were sealed with another master key; the keys are written, then the
//! registry record last (a crash mid-import leaves no half tenant registered), and the
//! tenant starts in the run state it had before the move.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use steward_actors::store::snapshot_format::SnapshotReader;
use steward_actors::store::{StoreError, TenantRecord, TenantRunState};

use super::backup::{add_data_files, rewound, unlinked_temp_file, write_file, BackupError};
use super::{
    await_children_started, now_ms, prepare_tenant, shown_doc, start_or_update, store,
    unknown_tenant,
};
use crate::app::AppState;
use crate::http::error::{ApiError, ErrorCode};

/// Checkpoint holding the run state a tenant had when it was first exported (it travels
/// with the export; the importer starts the tenant in it and removes the checkpoint).
const MOVED_FROM_CHECKPOINT: &str = "moved_from";

/// The answer to a webhook of a moved tenant.
pub fn moved_error(tenant_id: &str) -> ApiError {
    ApiError::new(
        ErrorCode::Moved,
        format!(
            "tenant `{}` moved to another instance; nothing was stored here. Route its \
             traffic to the instance it was imported into",
            tenant_id.chars().take(80).collect::<String>()
        ),
    )
}

/// A finished export: an unlinked file, rewound.
pub struct ExportFile {
    pub file: std::fs::File,
    pub bytes: u64,
    pub entries: u64,
    pub files: u64,
}

fn backup_error(err: BackupError) -> ApiError {
    match err {
        BackupError::Store(err) => ApiError::from(err),
        other => ApiError::new(ErrorCode::Internal, other.to_string()),
    }
}

/// The tenant's own data files (its backfill uploads), relative to the data dir.
fn tenant_subdir(tenant_id: &str) -> String {
    format!("backfills/{tenant_id}")
}

/// Marks the tenant `moved`, stops it and writes its export (see the module's comment).
pub async fn export(state: &AppState, id: &str) -> Result<ExportFile, ApiError> {
    let _guard = state.admin_lock.lock().await;
    let before = store(state)
        .registry()
        .mark_moved(id, now_ms())?
        .ok_or_else(|| unknown_tenant(id))?;
    if before != TenantRunState::Moved {
        let tenant_store = store(state).tenant(id)?;
        tenant_store.put_checkpoint(MOVED_FROM_CHECKPOINT, before.name().as_bytes())?;
        store(state).durable().await?;
        // From here on its webhooks are answered 503 `moved`.
        state.moved_tenants.insert(id.to_string());
        state.registered_tenants.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!(crate::telemetry::TENANTS).decrement(1.0);
        tracing::info!(tenant_id = %id, "tenant moved: it stops here and is exported");
    }
    state.runtime.stop_tenant(id).await;
    state.tenant_docs.remove(id);
    let blocking_store = store(state).clone();
    let data_dir = state.config.data_dir.clone();
    let tenant_id = id.to_string();
    let now = now_ms();
    let made = actix_web::web::block(move || -> Result<ExportFile, BackupError> {
        let file = unlinked_temp_file(&data_dir, "export", now)?;
        let (mut writer, entries) = blocking_store.write_tenant_export(
            &tenant_id,
            std::io::BufWriter::new(file),
            now,
            crate::telemetry::VERSION_LINE,
        )?;
        let files = add_data_files(&mut writer, &data_dir, &[&tenant_subdir(&tenant_id)])?;
        let (out, counts) = writer.finish()?;
        Ok(ExportFile {
            file: rewound(out)?,
            bytes: counts.bytes,
            entries,
            files,
        })
    })
    .await
    .map_err(|err| ApiError::new(ErrorCode::Internal, format!("the export failed: {err}")))?
    .map_err(backup_error)?;
    tracing::info!(tenant_id = %id, entries = made.entries, files = made.files, bytes = made.bytes, "tenant exported");
    Ok(made)
}

/// Why an import was refused before anything was written (kept apart from the store's
/// errors so the answer says which).
fn refusal(cell: &mut Option<ApiError>, err: ApiError) -> StoreError {
    let shown = StoreError::Io(err.message.clone());
    *cell = Some(err);
    shown
}

/// The run state an imported tenant starts in: the one it had before its first export.
fn state_before_move(record: &TenantRecord, moved_from: Option<Vec<u8>>) -> TenantRunState {
    moved_from
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|name| TenantRunState::parse(&name))
        .filter(|state| *state != TenantRunState::Moved)
        .unwrap_or(match record.run_state() {
            TenantRunState::Moved => TenantRunState::Paused,
            other => other,
        })
}

/// Imports the export at `path` (the uploaded body) and starts the tenant.
pub async fn import(state: &AppState, path: PathBuf) -> Result<serde_json::Value, ApiError> {
    let guard = state.admin_lock.lock().await;
    let blocking_store = store(state).clone();
    let data_dir = state.config.data_dir.clone();
    let master_key = state.master_key.clone();
    let embedded = state.sandbox.is_some();
    let checked_state = CheckState {
        master_key,
        embedded,
    };
    let imported = actix_web::web::block(move || {
        let mut refused: Option<ApiError> = None;
        let input = std::fs::File::open(&path).map_err(|err| {
            ApiError::new(
                ErrorCode::Internal,
                format!("cannot read the upload: {err}"),
            )
        })?;
        let mut reader = SnapshotReader::open(BufReader::new(input))
            .map_err(|err| ApiError::new(ErrorCode::MalformedBody, err.to_string()))?;
        let tenant_dir = tenant_subdir(reader.header().tenant.as_deref().unwrap_or_default());
        let mut written_files: Vec<PathBuf> = Vec::new();
        let outcome = blocking_store.import_tenant(
            &mut reader,
            |record| match checked_state.check(&blocking_store, record) {
                Ok(()) => Ok(()),
                Err(err) => Err(refusal(&mut refused, err)),
            },
            |file, reader| {
                let target = tenant_file_target(&data_dir, &tenant_dir, file)?;
                written_files.push(target.clone());
                write_file(&target, reader)
            },
        );
        match outcome {
            Ok((record, _stats)) => Ok(record),
            Err(err) => {
                for file in written_files {
                    let _ = std::fs::remove_file(file);
                }
                Err(match refused {
                    Some(refusal) => refusal,
                    None => match err {
                        StoreError::Codec(detail) => {
                            ApiError::new(ErrorCode::MalformedBody, detail)
                        }
                        other => ApiError::from(other),
                    },
                })
            }
        }
    })
    .await
    .map_err(|err| ApiError::new(ErrorCode::Internal, format!("the import failed: {err}")))??;
    let mut record = imported;
    let id = record.id.clone();
    let registered = register_imported(state, &mut record).await;
    let prepared = match registered {
        Ok(prepared) => prepared,
        Err(err) => {
            // Nothing of a refused import stays: a later create of the id must not start on
            // the imported queue.
            let blocking_store = store(state).clone();
            let tenant_id = id.clone();
            let dropped =
                actix_web::web::block(move || blocking_store.drop_tenant_data(&tenant_id)).await;
            if !matches!(dropped, Ok(Ok(()))) {
                tracing::error!(tenant_id = %id, "a failed import's data could not be removed");
            }
            let _ = std::fs::remove_dir_all(state.config.data_dir.join(tenant_subdir(&id)));
            return Err(err);
        }
    };
    start_or_update(state, prepared);
    state.registered_tenants.fetch_add(1, Ordering::AcqRel);
    metrics::gauge!(crate::telemetry::TENANTS).increment(1.0);
    drop(guard);
    await_children_started(state, &id).await;
    tracing::info!(tenant_id = %id, state = %record.state, "tenant imported");
    shown_doc(state, &record)
}

/// The imported tenant's run state, its start, its registry record (last) made durable.
async fn register_imported(
    state: &AppState,
    record: &mut TenantRecord,
) -> Result<super::Prepared, ApiError> {
    let id = record.id.clone();
    let tenant_store = store(state).tenant(&id)?;
    let moved_from = tenant_store.get_checkpoint(MOVED_FROM_CHECKPOINT)?;
    record.set_run_state(state_before_move(record, moved_from));
    record.updated_at_ms = now_ms();
    tenant_store.remove_checkpoint(MOVED_FROM_CHECKPOINT)?;
    let prepared = prepare_tenant(state, record)?;
    if !store(state).registry().insert_new(record)? {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("tenant `{id}` exists"),
        ));
    }
    store(state).durable().await?;
    Ok(prepared)
}

/// What an import checks of the record before it writes anything.
struct CheckState {
    master_key: steward_actors::store::MasterKey,
    embedded: bool,
}

impl CheckState {
    fn check(
        &self,
        store: &steward_actors::store::Store,
        record: &TenantRecord,
    ) -> Result<(), ApiError> {
        crate::tenant::validate_tenant_id(&record.id)?;
        if let Some(existing) = store.registry().get(&record.id)? {
            let hint = if existing.run_state() == TenantRunState::Moved {
                " (moved away from here: delete it here first to take it back)"
            } else {
                ""
            };
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!("tenant `{}` exists on this instance{hint}", record.id),
            ));
        }
        for (pointer, sealed) in &record.sealed_secrets {
            if self.master_key.open(&record.id, pointer, sealed).is_err() {
                return Err(ApiError::new(
                    ErrorCode::InvalidField,
                    format!(
                        "the tenant's secret {pointer} was sealed with another master key: \
                         instances that exchange tenants share one master key \
                         (STEWARD_MASTER_KEY or master.key)"
                    ),
                ));
            }
        }
        let doc: serde_json::Value = serde_json::from_str(&record.config_json).map_err(|err| {
            ApiError::new(
                ErrorCode::MalformedBody,
                format!("the tenant's document: {err}"),
            )
        })?;
        if doc["id"] != record.id.as_str() {
            return Err(ApiError::new(
                ErrorCode::MalformedBody,
                "the tenant's document names another id than its record",
            ));
        }
        if doc["virtuous"]["base_url"] == "embedded" && !self.embedded {
            return Err(ApiError::new(
                ErrorCode::InvalidField,
                "the tenant's virtuous.base_url is \"embedded\", but this instance runs no \
                 embedded simulator ([sandbox] embedded = false)",
            ));
        }
        Ok(())
    }
}

/// Where a file of an export goes: only under the tenant's own `backfills/{id}/`.
fn tenant_file_target(
    data_dir: &Path,
    tenant_dir: &str,
    file: &str,
) -> Result<PathBuf, StoreError> {
    super::backup::safe_relative(file)
        .filter(|relative| relative.starts_with(tenant_dir))
        .map(|relative| data_dir.join(relative))
        .ok_or_else(|| {
            StoreError::Codec(format!(
                "not a readable Steward tenant export: a file outside the tenant's places ({file})"
            ))
        })
}
