//! Tenant operations behind the admin API: create, patch (merge patch, credential rotation),
//! delete, pause / resume, status — and starting every registered tenant at boot.
//!
//! Order of effects: the registry write is made durable (group commit) before the answer,
//! and before the tenant's actors start. Creating a tenant calls nobody (DESIGN.md
//! invariant 10): the embedded sandbox, when used, is in-process.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use steward_actors::runtime::{BudgetSettings, TenantSettings, TenantSpec};
use steward_actors::store::TenantRecord;

use crate::app::AppState;
use crate::http::error::{ApiError, ErrorCode};
use crate::sandbox::OrgSpec;
use crate::tenant::{self, TenantDoc};

pub const STATE_RUNNING: &str = "running";
pub const STATE_PAUSED: &str = "paused";

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn unknown_tenant(id: &str) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no tenant `{id}`"))
}

/// The runtime settings of a tenant: its own budget over the configured defaults.
fn tenant_settings(state: &AppState, doc: &TenantDoc, paused: bool) -> TenantSettings {
    let defaults = &state.config.budget;
    let own = doc.budget.as_ref();
    TenantSettings {
        paused,
        heartbeat_ms: state.config.runtime.heartbeat_ms,
        restart_backoff_initial_ms: state.config.runtime.restart_backoff_initial_ms,
        restart_backoff_max_ms: state.config.runtime.restart_backoff_max_ms,
        mailbox_capacity: state.config.runtime.mailbox_capacity,
        budget: BudgetSettings {
            hourly_limit: own
                .and_then(|b| b.hourly_limit)
                .unwrap_or(defaults.hourly_limit),
            reserve_pct: own
                .and_then(|b| b.reserve_pct)
                .unwrap_or(defaults.reserve_pct),
            burst_calls: own
                .and_then(|b| b.burst_calls)
                .unwrap_or(defaults.burst_calls),
        },
    }
}

/// Seals the secrets of a full document into a registry record.
fn seal_record(
    state: &AppState,
    id: &str,
    mut full: Value,
    record_state: &str,
    created_at_ms: u64,
) -> TenantRecord {
    let secrets = tenant::split_secrets(&mut full);
    let sealed_secrets = secrets
        .iter()
        .map(|(pointer, secret)| {
            (
                pointer.clone(),
                state.master_key.seal(id, pointer, secret.as_bytes()),
            )
        })
        .collect();
    TenantRecord {
        id: id.to_string(),
        config_json: full.to_string(),
        sealed_secrets,
        state: record_state.to_string(),
        created_at_ms,
        updated_at_ms: now_ms(),
    }
}

fn open_secrets(
    state: &AppState,
    record: &TenantRecord,
) -> Result<Vec<(String, String)>, ApiError> {
    record
        .sealed_secrets
        .iter()
        .map(|(pointer, sealed)| {
            let plaintext = state.master_key.open(&record.id, pointer, sealed)?;
            let secret = String::from_utf8(plaintext)
                .map_err(|_| ApiError::new(ErrorCode::Internal, "a sealed secret is not UTF-8"))?;
            Ok((pointer.clone(), secret))
        })
        .collect()
}

fn stored_doc(record: &TenantRecord) -> Result<Value, ApiError> {
    serde_json::from_str(&record.config_json).map_err(|err| {
        ApiError::new(
            ErrorCode::Internal,
            format!("stored tenant document is unreadable: {err}"),
        )
    })
}

/// The tenant document as responses show it.
fn shown_doc(record: &TenantRecord) -> Result<Value, ApiError> {
    let pointers: Vec<String> = record
        .sealed_secrets
        .iter()
        .map(|(pointer, _)| pointer.clone())
        .collect();
    Ok(tenant::redacted(&stored_doc(record)?, &pointers))
}

/// Starts (or restarts) a tenant's actors from its registry record.
fn start_tenant(state: &AppState, record: &TenantRecord) -> Result<(), ApiError> {
    let secrets = open_secrets(state, record)?;
    let mut full = stored_doc(record)?;
    tenant::join_secrets(&mut full, &secrets);
    let doc = TenantDoc::from_value(&full)?;
    if doc.virtuous.base_url == "embedded" {
        if let Some(sandbox) = &state.sandbox {
            let api_key = doc.virtuous.api_key.clone().unwrap_or_default();
            sandbox
                .ensure_org(OrgSpec::new(&record.id, &api_key))
                .map_err(|err| {
                    ApiError::new(
                        ErrorCode::Internal,
                        format!("embedded sandbox refused the org: {err}"),
                    )
                })?;
        }
    }
    let spec = TenantSpec {
        tenant_id: record.id.clone(),
        store: state.store.clone(),
        tenant_store: state.store.tenant(&record.id)?,
        settings: tenant_settings(state, &doc, record.state == STATE_PAUSED),
    };
    state.runtime.start_tenant(spec);
    Ok(())
}

/// Boot: every registered tenant is started again.
pub async fn start_registered_tenants(state: &AppState) -> anyhow::Result<usize> {
    let records = state.store.registry().list()?;
    let mut started = 0;
    for record in &records {
        match start_tenant(state, record) {
            Ok(()) => started += 1,
            Err(err) => {
                tracing::error!(tenant_id = %record.id, error = %err, "tenant could not be started")
            }
        }
    }
    metrics::gauge!(crate::telemetry::TENANTS).set(records.len() as f64);
    Ok(started)
}

pub async fn create(state: &AppState, body: Value) -> Result<Value, ApiError> {
    let (doc, full) = tenant::normalise(&body)?;
    if doc.virtuous.base_url == "embedded" && state.sandbox.is_none() {
        return Err(ApiError::new(
            ErrorCode::InvalidField,
            "field `virtuous.base_url` is invalid: \"embedded\" needs [sandbox] embedded = true",
        ));
    }
    let _guard = state.admin_lock.lock().await;
    let record = seal_record(state, &doc.id, full, STATE_RUNNING, now_ms());
    if !state.store.registry().insert_new(&record)? {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("tenant `{}` exists", doc.id),
        ));
    }
    state.store.durable().await?;
    start_tenant(state, &record)?;
    metrics::gauge!(crate::telemetry::TENANTS).increment(1.0);
    tracing::info!(tenant_id = %doc.id, "tenant created");
    shown_doc(&record)
}

pub async fn patch(state: &AppState, id: &str, merge_patch: Value) -> Result<Value, ApiError> {
    if !merge_patch.is_object() {
        return Err(ApiError::new(
            ErrorCode::MalformedBody,
            "a merge patch must be a JSON object",
        ));
    }
    if merge_patch.get("id").is_some_and(|patched| patched != id) {
        return Err(ApiError::new(
            ErrorCode::InvalidField,
            "field `id` is immutable",
        ));
    }
    let _guard = state.admin_lock.lock().await;
    let record = state
        .store
        .registry()
        .get(id)?
        .ok_or_else(|| unknown_tenant(id))?;
    let mut full = stored_doc(&record)?;
    tenant::join_secrets(&mut full, &open_secrets(state, &record)?);
    json_patch::merge(&mut full, &merge_patch);
    let (doc, full) = tenant::normalise(&full)?;
    if doc.virtuous.base_url == "embedded" && state.sandbox.is_none() {
        return Err(ApiError::new(
            ErrorCode::InvalidField,
            "field `virtuous.base_url` is invalid: no embedded sandbox",
        ));
    }
    let updated = seal_record(state, id, full, &record.state, record.created_at_ms);
    state.store.registry().put(&updated)?;
    state.store.durable().await?;
    // New credentials and budgets take effect in a fresh actor tree built from the store.
    state.runtime.stop_tenant(id).await;
    start_tenant(state, &updated)?;
    tracing::info!(tenant_id = %id, "tenant updated");
    shown_doc(&updated)
}

pub async fn delete(state: &AppState, id: &str, force: bool) -> Result<(), ApiError> {
    let _guard = state.admin_lock.lock().await;
    let Some(_record) = state.store.registry().get(id)? else {
        return Err(unknown_tenant(id));
    };
    let queued = state.store.tenant(id)?.queued_total();
    if queued > 0 && !force {
        return Err(ApiError::new(
            ErrorCode::TenantHasWork,
            format!(
                "tenant `{id}` has {queued} queued entries; drain them or DELETE with ?force=true"
            ),
        ));
    }
    state.runtime.stop_tenant(id).await;
    state.store.registry().remove(id)?;
    state.store.drop_tenant_data(id)?;
    state.store.durable().await?;
    metrics::gauge!(crate::telemetry::TENANTS).decrement(1.0);
    tracing::info!(tenant_id = %id, queued_dropped = queued, "tenant deleted");
    Ok(())
}

pub async fn set_paused(state: &AppState, id: &str, paused: bool) -> Result<Value, ApiError> {
    {
        let _guard = state.admin_lock.lock().await;
        let mut record = state
            .store
            .registry()
            .get(id)?
            .ok_or_else(|| unknown_tenant(id))?;
        record.state = if paused { STATE_PAUSED } else { STATE_RUNNING }.to_string();
        record.updated_at_ms = now_ms();
        state.store.registry().put(&record)?;
        state.store.durable().await?;
        let handle = state.runtime.tenant(id).ok_or_else(|| unknown_tenant(id))?;
        if paused {
            handle.pause();
        } else {
            handle.resume();
        }
        tracing::info!(tenant_id = %id, paused, "tenant submission {}", if paused { "paused" } else { "resumed" });
    }
    status(state, id)
}

fn format_ms(ms: u64) -> String {
    jiff::Timestamp::from_millisecond(ms as i64)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// `GET /v1/tenants/{id}`: the status shape of DESIGN.md §6.
pub fn status(state: &AppState, id: &str) -> Result<Value, ApiError> {
    let record = state
        .store
        .registry()
        .get(id)?
        .ok_or_else(|| unknown_tenant(id))?;
    let handle = state.runtime.tenant(id).ok_or_else(|| unknown_tenant(id))?;
    let runtime_status = handle.status();
    let tenant_store = state.store.tenant(id)?;
    let allowance_per_hour = runtime_status.budget.allowance_per_hour;
    let now = now_ms();
    let mut lanes = serde_json::Map::new();
    for (lane, stat) in tenant_store.lane_stats() {
        let oldest_age_s = stat
            .oldest_enqueued_at_ms
            .map(|at| now.saturating_sub(at) / 1000)
            .unwrap_or(0);
        // At the current allowance, how long the lane takes to drain (one item per call at worst).
        let eta_s = if allowance_per_hour == 0 {
            Value::Null
        } else {
            json!((stat.depth as f64 * 3600.0 / allowance_per_hour as f64).ceil() as u64)
        };
        lanes.insert(
            lane.name().into(),
            json!({"depth": stat.depth, "oldest_age_s": oldest_age_s, "eta_s": eta_s}),
        );
    }
    let alerts: Vec<Value> = tenant_store
        .alerts()?
        .into_iter()
        .map(|alert| {
            json!({"code": alert.code, "message": alert.message, "first_at": format_ms(alert.first_at_ms),
                   "last_at": format_ms(alert.last_at_ms), "count": alert.count})
        })
        .collect();
    let doc = shown_doc(&record)?;
    let state_name = if record.state == STATE_RUNNING {
        runtime_status.state.clone()
    } else {
        record.state.clone()
    };
    Ok(json!({
        "id": record.id,
        "name": doc["name"],
        "state": state_name,
        "actors": runtime_status.actors,
        "lanes": lanes,
        "budget": runtime_status.budget,
        "counts": tenant_store.counts(),
        "alerts": alerts,
        "ingress": ingress_urls(&state.ingress_base_url, id, &doc),
        "config": doc,
        "created_at": format_ms(record.created_at_ms),
        "updated_at": format_ms(record.updated_at_ms),
    }))
}

fn ingress_urls(base: &str, id: &str, doc: &Value) -> Value {
    let mut urls = serde_json::Map::new();
    let sources = &doc["sources"];
    if !sources["stripe"].is_null() {
        urls.insert("stripe".into(), json!(format!("{base}/hooks/{id}/stripe")));
    }
    if !sources["mailchimp"].is_null() {
        urls.insert(
            "mailchimp".into(),
            json!(format!(
                "{base}/hooks/{id}/mailchimp?key={}",
                tenant::REDACTED
            )),
        );
    }
    if let Some(platforms) = sources["platforms"].as_object() {
        for name in platforms.keys() {
            urls.insert(
                format!("platform/{name}"),
                json!(format!("{base}/hooks/{id}/platform/{name}")),
            );
        }
    }
    Value::Object(urls)
}

/// `GET /v1/tenants`: every tenant's id, name and state.
pub fn list(state: &AppState) -> Result<Value, ApiError> {
    let records = state.store.registry().list()?;
    let tenants: Vec<Value> = records
        .iter()
        .map(|record| {
            let name = serde_json::from_str::<Value>(&record.config_json)
                .ok()
                .and_then(|doc| doc.get("name").cloned())
                .unwrap_or(Value::Null);
            json!({"id": record.id, "name": name, "state": record.state})
        })
        .collect();
    Ok(json!({"tenants": tenants, "total": records.len()}))
}
