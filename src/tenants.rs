//! Tenant operations behind the admin API: create, patch (merge patch, credential rotation),
//! delete, pause / resume, status — and starting every registered tenant at boot.
//!
//! Order of effects, so that an error never leaves a tenant half made:
//! - create: everything that can fail (sealing, the embedded org, opening the tenant's key
//!   space) is *prepared* first; then the registry write is made durable; then the actors
//!   start (infallible). The answer comes last.
//! - delete: the tenant's actors stop, its data is dropped, and only then is the registry
//!   record removed — a crash in between leaves a registered tenant with no data (deleting
//!   it again finishes the job), never orphaned dedup marks under a free id.
//!
//! Creating a tenant calls nobody (ARCHITECTURE.md invariants): the embedded sandbox, when
//! used, is in-process. Admin mutations are serialised by `AppState::admin_lock`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use secrecy::SecretString;
use steward_actors::ports::{Crm, UnconfiguredCrm};

use serde_json::{json, Value};
use steward_actors::runtime::BudgetStatus;
use steward_actors::runtime::{
    BudgetSettings, ConfirmSettings, SubmitSettings, TenantSettings, TenantSpec,
};
use steward_actors::store::{RecordKind, TenantRecord, TenantRunState};
use steward_sandbox::virtuous::OrgSpec;

use crate::app::AppState;
use crate::http::error::{ApiError, ErrorCode};
use crate::tenant::{self, TenantDoc};
use crate::virtuous::crm::VirtuousCrm;

mod admin_door;
pub use admin_door::{RecordView, TenantStores};

fn store(state: &AppState) -> &steward_actors::store::Store {
    &state.stores.store
}

/// Alert raised when a tenant targets the embedded sandbox but none is running.
pub const ALERT_EMBEDDED_SANDBOX_MISSING: &str = "embedded_sandbox_missing";

/// The one wall clock (`steward_actors::ports::now_ms`), re-exported for the admin routes.
pub use steward_actors::ports::now_ms;

fn unknown_tenant(id: &str) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no tenant `{id}`"))
}

/// The budget a tenant runs with: its own settings over the configured defaults.
fn effective_budget(state: &AppState, doc: &TenantDoc) -> BudgetSettings {
    let defaults = &state.config.budget;
    let own = doc.budget.as_ref();
    BudgetSettings {
        hourly_limit: own
            .and_then(|b| b.hourly_limit)
            .unwrap_or(defaults.hourly_limit),
        reserve_pct: own
            .and_then(|b| b.reserve_pct)
            .unwrap_or(defaults.reserve_pct),
        burst_calls: own
            .and_then(|b| b.burst_calls)
            .unwrap_or(defaults.burst_calls),
    }
}

fn tenant_settings(state: &AppState, doc: &TenantDoc) -> TenantSettings {
    let config = &state.config;
    let public_url = config.public_url.trim_end_matches('/');
    TenantSettings {
        heartbeat_ms: config.runtime.heartbeat_ms,
        restart_backoff_initial_ms: config.runtime.restart_backoff_initial_ms,
        restart_backoff_max_ms: config.runtime.restart_backoff_max_ms,
        mailbox_capacity: config.runtime.mailbox_capacity,
        budget: effective_budget(state, doc),
        submit: SubmitSettings {
            batch_max: config.submitter.batch_max,
            retry_schedule_ms: config.submitter.retry_schedule_ms(),
            retry_jitter_pct: config.submitter.retry_jitter_pct,
            lease_timeout_ms: config.submitter.lease_timeout_s * 1_000,
        },
        confirm: ConfirmSettings {
            reconcile_interval_ms: config.reconciler.interval_s * 1_000,
            needs_review_after_ms: config.reconciler.needs_review_after_s * 1_000,
            query_take: config.reconciler.query_take,
            dedup_retention_ms: config.reconciler.dedup_retention_days * 86_400_000,
            // Only with a secret to sign it: an unsigned subscription could not be verified.
            webhook_url: (!public_url.is_empty() && doc.virtuous.webhook_secret.is_some())
                .then(|| format!("{public_url}/hooks/{}/virtuous", doc.id)),
        },
    }
}

/// The tenant's Virtuous client: `"embedded"` resolves to the embedded sandbox. A client
/// that cannot be built answers every call "needs operator" (pause + alert), never panics.
fn tenant_crm(state: &AppState, doc: &TenantDoc) -> Arc<dyn Crm> {
    let base_url = match (&state.sandbox, doc.virtuous.base_url.as_str()) {
        (Some(sandbox), "embedded") => sandbox.base_url(),
        (None, "embedded") => {
            return Arc::new(UnconfiguredCrm {
                reason: "virtuous.base_url is \"embedded\" but the embedded sandbox is off"
                    .to_string(),
            })
        }
        (_, base_url) => base_url.to_string(),
    };
    let api_key = SecretString::from(doc.virtuous.api_key.clone().unwrap_or_default());
    let webhook_secret = doc.virtuous.webhook_secret.clone().map(SecretString::from);
    let timeout = std::time::Duration::from_secs(state.config.virtuous.request_timeout_s);
    match VirtuousCrm::new(&base_url, api_key, webhook_secret, timeout) {
        Ok(crm) => Arc::new(crm),
        Err(err) => Arc::new(UnconfiguredCrm {
            reason: format!("the Virtuous client cannot be built: {err}"),
        }),
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

/// The full document of a record, secrets included.
fn full_doc(state: &AppState, record: &TenantRecord) -> Result<Value, ApiError> {
    let mut full = stored_doc(record)?;
    tenant::join_secrets(&mut full, &open_secrets(state, record)?);
    Ok(full)
}

/// The tenant document as responses show it: secrets redacted, the effective budget shown.
fn shown_doc(state: &AppState, record: &TenantRecord) -> Result<Value, ApiError> {
    let pointers: Vec<String> = record
        .sealed_secrets
        .iter()
        .map(|(pointer, _)| pointer.clone())
        .collect();
    let mut shown = tenant::redacted(&stored_doc(record)?, &pointers);
    if let Ok(doc) = serde_json::from_value::<TenantDoc>(shown.clone()) {
        shown["budget"] = json!(effective_budget(state, &doc));
    }
    Ok(shown)
}

/// `"embedded"` needs the embedded sandbox.
fn check_embedded_target(state: &AppState, doc: &TenantDoc) -> Result<(), ApiError> {
    if doc.virtuous.base_url == "embedded" && state.sandbox.is_none() {
        return Err(ApiError::new(
            ErrorCode::InvalidField,
            "field `virtuous.base_url` is invalid: \"embedded\" needs [sandbox] embedded = true",
        ));
    }
    Ok(())
}

/// Everything that can fail before a tenant's actors start: the document, its secrets, the
/// embedded org, its key space. The returned spec starts infallibly.
fn prepare_tenant(state: &AppState, record: &TenantRecord) -> Result<Prepared, ApiError> {
    let doc = TenantDoc::from_value(&full_doc(state, record)?)?;
    match (&state.sandbox, doc.virtuous.base_url.as_str()) {
        (Some(sandbox), "embedded") => {
            let api_key = doc.virtuous.api_key.clone().unwrap_or_default();
            sandbox.ensure_org(OrgSpec::new(&record.id, &api_key)).map_err(|err| {
                ApiError::new(ErrorCode::InvalidField, format!("field `virtuous.api_key` is invalid: the embedded sandbox refused it ({err})"))
            })?;
        }
        (None, "embedded") => {
            let message = "virtuous.base_url is \"embedded\" but [sandbox] embedded = false: nothing will reach Virtuous";
            let tenant_store = store(state).tenant(&record.id)?;
            if tenant_store.raise_alert(ALERT_EMBEDDED_SANDBOX_MISSING, message, now_ms())? {
                tracing::error!(tenant_id = %record.id, "{message}");
            }
        }
        _ => {}
    }
    let spec = TenantSpec {
        tenant_id: record.id.clone(),
        store: store(state).clone(),
        tenant_store: store(state).tenant(&record.id)?,
        settings: tenant_settings(state, &doc),
        // Paused, or refused by Virtuous before a restart (needs_operator): no call until an
        // operator resumes.
        run_state: record.run_state(),
        crm: tenant_crm(state, &doc),
    };
    Ok(Prepared {
        spec,
        doc: Arc::new(doc),
    })
}

/// A tenant ready to start (or to update in place).
struct Prepared {
    spec: TenantSpec,
    /// The full document, secrets included (ingress verifies signatures with it).
    doc: Arc<TenantDoc>,
}

/// Starts the tenant, or applies new settings and credentials in place when it runs.
fn start_or_update(state: &AppState, prepared: Prepared) {
    let Prepared { spec, doc } = prepared;
    let id = spec.tenant_id.clone();
    state.tenant_docs.insert(id.clone(), doc);
    match state.runtime.tenant(&id) {
        // Settings apply in place: no restart, no window in which the tenant looks missing.
        Some(handle) => {
            handle.update_settings(spec.settings);
            handle.set_run_state(spec.run_state);
            handle.replace_crm(spec.crm);
        }
        None => {
            state.runtime.start_tenant(spec);
        }
    }
}

/// Boot: every registered tenant is started again. Failures are logged and counted;
/// `/readyz` stays 503 while any registered tenant is not running.
pub async fn start_registered_tenants(state: &AppState) -> anyhow::Result<usize> {
    let records = store(state).registry().list()?;
    state
        .registered_tenants
        .store(records.len(), Ordering::Release);
    let mut started = 0;
    for record in &records {
        match prepare_tenant(state, record) {
            Ok(prepared) => {
                start_or_update(state, prepared);
                started += 1;
            }
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
    tenant::reject_redacted_secrets(&full)?;
    check_embedded_target(state, &doc)?;
    let _guard = state.admin_lock.lock().await;
    if store(state).registry().get(&doc.id)?.is_some() {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("tenant `{}` exists", doc.id),
        ));
    }
    let record = seal_record(
        state,
        &doc.id,
        full,
        TenantRunState::Running.name(),
        now_ms(),
    );
    let prepared = prepare_tenant(state, &record)?;
    if !store(state).registry().insert_new(&record)? {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("tenant `{}` exists", doc.id),
        ));
    }
    store(state).durable().await?;
    start_or_update(state, prepared);
    state.registered_tenants.fetch_add(1, Ordering::AcqRel);
    metrics::gauge!(crate::telemetry::TENANTS).increment(1.0);
    tracing::info!(tenant_id = %doc.id, "tenant created");
    shown_doc(state, &record)
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
    let record = store(state)
        .registry()
        .get(id)?
        .ok_or_else(|| unknown_tenant(id))?;
    let stored_secrets = open_secrets(state, &record)?;
    let mut full = stored_doc(&record)?;
    tenant::join_secrets(&mut full, &stored_secrets);
    json_patch::merge(&mut full, &merge_patch);
    // A document read back from GET carries "[redacted]": that means "keep the stored secret".
    tenant::restore_redacted_secrets(&mut full, &stored_secrets)?;
    let (doc, full) = tenant::normalise(&full)?;
    check_embedded_target(state, &doc)?;
    let updated = seal_record(state, id, full, &record.state, record.created_at_ms);
    let prepared = prepare_tenant(state, &updated)?;
    store(state).registry().put(&updated)?;
    store(state).durable().await?;
    start_or_update(state, prepared);
    tracing::info!(tenant_id = %id, "tenant updated");
    shown_doc(state, &updated)
}

pub async fn delete(state: &AppState, id: &str, force: bool) -> Result<(), ApiError> {
    let _guard = state.admin_lock.lock().await;
    let record = store(state)
        .registry()
        .get(id)?
        .ok_or_else(|| unknown_tenant(id))?;
    // Stop first, then look: nothing can be captured between the check and the drop.
    state.runtime.stop_tenant(id).await;
    state.tenant_docs.remove(id);
    let queued = store(state).tenant(id)?.queued_total();
    if queued > 0 && !force {
        if let Ok(prepared) = prepare_tenant(state, &record) {
            start_or_update(state, prepared);
        }
        return Err(ApiError::new(
            ErrorCode::TenantHasWork,
            format!(
                "tenant `{id}` has {queued} queued entries; drain them or DELETE with ?force=true"
            ),
        ));
    }
    // Dropping a tenant's data deletes its whole key range and waits for in-flight group
    // writes: blocking work, kept off the HTTP worker's executor thread.
    let blocking_store = store(state).clone();
    let tenant_id = id.to_string();
    actix_web::web::block(move || {
        blocking_store.drop_tenant_data(&tenant_id)?;
        blocking_store.registry().remove(&tenant_id)
    })
    .await
    .map_err(|err| {
        ApiError::new(
            ErrorCode::Internal,
            format!("deleting the tenant's data failed: {err}"),
        )
    })??;
    store(state).durable().await?;
    state.registered_tenants.fetch_sub(1, Ordering::AcqRel);
    metrics::gauge!(crate::telemetry::TENANTS).decrement(1.0);
    tracing::info!(tenant_id = %id, queued_dropped = queued, "tenant deleted");
    Ok(())
}

pub async fn set_paused(state: &AppState, id: &str, paused: bool) -> Result<Value, ApiError> {
    {
        let _guard = state.admin_lock.lock().await;
        let mut record = store(state)
            .registry()
            .get(id)?
            .ok_or_else(|| unknown_tenant(id))?;
        record.set_run_state(if paused {
            TenantRunState::Paused
        } else {
            TenantRunState::Running
        });
        record.updated_at_ms = now_ms();
        store(state).registry().put(&record)?;
        store(state).durable().await?;
        if let Some(handle) = state.runtime.tenant(id) {
            if paused {
                handle.pause();
            } else {
                handle.resume();
            }
        }
        tracing::info!(tenant_id = %id, paused, "tenant submission {}", if paused { "paused" } else { "resumed" });
    }
    status(state, id)
}

/// ISO-8601 UTC (`2026-01-01T00:00:00Z`) of a Unix time in milliseconds.
pub fn format_ms(ms: u64) -> String {
    jiff::Timestamp::from_millisecond(ms as i64)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// `GET /v1/tenants/{id}`: the status shape of docs/operations.md "Tenant status".
pub fn status(state: &AppState, id: &str) -> Result<Value, ApiError> {
    let record = store(state)
        .registry()
        .get(id)?
        .ok_or_else(|| unknown_tenant(id))?;
    let tenant_store = store(state).tenant(id)?;
    // A registered tenant whose actors are not running (failed to start) still answers.
    let runtime_status = state.runtime.tenant(id).map(|handle| handle.status());
    let allowance_per_hour = runtime_status
        .as_ref()
        .map(|s| s.budget.allowance_per_hour)
        .unwrap_or(0);
    let now = now_ms();
    let batch_max = state.config.submitter.batch_max;
    let lanes = lanes_json(&tenant_store, allowance_per_hour, batch_max, now)?;
    let alerts: Vec<Value> = tenant_store
        .alerts()?
        .into_iter()
        .map(|alert| {
            json!({"code": alert.code, "message": alert.message, "first_at": format_ms(alert.first_at_ms),
                   "last_at": format_ms(alert.last_at_ms), "count": alert.count})
        })
        .collect();
    let doc = shown_doc(state, &record)?;
    let state_name = match &runtime_status {
        None => "not_running".to_string(),
        Some(_) if record.run_state() != TenantRunState::Running => record.state.clone(),
        Some(runtime) => runtime.state.clone(),
    };
    Ok(json!({
        "id": record.id,
        "name": doc["name"],
        "state": state_name,
        "actors": runtime_status.as_ref().map(|s| json!(s.actors)).unwrap_or_else(|| json!({})),
        "lanes": lanes,
        "budget": runtime_status.as_ref().map(|s| budget_json(&s.budget, &doc["budget"])).unwrap_or(Value::Null),
        "counts": tenant_store.counts(),
        "alerts": alerts,
        // Virtuous webhook events kept because they could not be understood (bounded; the
        // list: GET /v1/tenants/{id}/inbound/unparsed).
        "inbound": {"unparsed_kept": tenant_store.unparsed_count()?},
        "ingress": ingress_urls(&state.ingress_base_url, id, &doc),
        "config": doc,
        "created_at": format_ms(record.created_at_ms),
        "updated_at": format_ms(record.updated_at_ms),
    }))
}

/// The budget status plus the configured limit, and a warning when Virtuous reports another
/// limit in `X-RateLimit-Limit` (the lower one wins).
fn budget_json(budget: &BudgetStatus, effective_settings: &Value) -> Value {
    let hourly_limit = effective_settings["hourly_limit"].as_u64();
    let warning = budget
        .header_limit
        .filter(|header_limit| Some(*header_limit) != hourly_limit)
        .map(|header_limit| {
            format!(
                "Virtuous reports X-RateLimit-Limit {header_limit} but budget.hourly_limit is {}; \
                 the allowance uses the lower one — set hourly_limit to match",
                hourly_limit.unwrap_or_default()
            )
        });
    let mut shown = json!(budget);
    shown["hourly_limit"] = json!(hourly_limit);
    shown["reserve_pct"] = effective_settings["reserve_pct"].clone();
    shown["warning"] = json!(warning);
    shown
}

/// Entries sampled at the head of a lane to estimate how many are gifts (batched).
const LANE_SAMPLE_LEN: usize = 64;

/// Calls needed for `depth` entries of which a share `gift_share` are gifts: gifts travel
/// `batch_max` to a call (full batches: with a backlog, calls are what is scarce), every
/// other entry takes a call of its own.
pub fn calls_to_drain(depth: u64, gift_share: f64, batch_max: usize) -> u64 {
    let gifts = (depth as f64 * gift_share).round() as u64;
    let others = depth - gifts.min(depth);
    gifts.div_ceil(batch_max.max(1) as u64) + others
}

/// Seconds to make `calls` at `allowance_per_hour` (paced at A/3600 per second); `None`
/// when nothing may be sent.
pub fn eta_s(calls: u64, allowance_per_hour: u64) -> Option<u64> {
    if calls == 0 {
        return Some(0);
    }
    (allowance_per_hour > 0).then(|| (calls * 3_600).div_ceil(allowance_per_hour))
}

/// `lanes.{live,retry,reconcile,backfill}`: depth, oldest age and ETA. A lane's ETA is the
/// time to drain it *and every lane above it* (they go first) at the current allowance.
fn lanes_json(
    tenant_store: &steward_actors::store::TenantStore,
    allowance_per_hour: u64,
    batch_max: usize,
    now: u64,
) -> Result<serde_json::Map<String, Value>, ApiError> {
    let mut lanes = serde_json::Map::new();
    let mut calls_through_lane = 0;
    for (lane, stat) in tenant_store.lane_stats() {
        let oldest_age_s = stat
            .oldest_enqueued_at_ms
            .map(|at| now.saturating_sub(at) / 1000)
            .unwrap_or(0);
        let gift_share = if stat.depth == 0 {
            1.0
        } else {
            let sample = tenant_store.scan_lane(lane, LANE_SAMPLE_LEN)?;
            let gifts = sample
                .iter()
                .filter(|(_, entry)| entry.fact.kind == RecordKind::Gift)
                .count();
            if sample.is_empty() {
                1.0
            } else {
                gifts as f64 / sample.len() as f64
            }
        };
        calls_through_lane += calls_to_drain(stat.depth, gift_share, batch_max);
        lanes.insert(
            lane.name().into(),
            json!({"depth": stat.depth, "oldest_age_s": oldest_age_s,
                   "eta_s": eta_s(calls_through_lane, allowance_per_hour)}),
        );
    }
    Ok(lanes)
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
    let records = store(state).registry().list()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_calls_batch_gifts_and_count_other_entries_one_each() {
        // Goal: gifts share calls up to batch_max, other entries take one each; ETA rounds up.
        assert_eq!(calls_to_drain(0, 1.0, 100), 0);
        assert_eq!(calls_to_drain(250, 1.0, 100), 3);
        assert_eq!(calls_to_drain(100, 0.5, 100), 1 + 50);
        assert_eq!(calls_to_drain(10, 0.0, 100), 10);
        assert_eq!(eta_s(0, 0), Some(0));
        assert_eq!(eta_s(3, 3_240), Some(4));
        assert_eq!(eta_s(3_600, 3_600), Some(3_600));
        assert_eq!(eta_s(1, 0), None);
    }
}
