//! The tenant status (`GET /v1/tenants/{id}`): lanes with depth, oldest age and ETA at the
//! current allowance; budget; counters; alerts; kept Virtuous events; ingress URLs.

use serde_json::{json, Value};
use steward_actors::runtime::BudgetStatus;
use steward_actors::store::{AlertView, RecordKind, TenantRunState};

use super::{shown_doc, store, unknown_tenant};
use crate::app::AppState;
use crate::http::error::ApiError;
use steward_actors::ports::now_ms;

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
    let doc = shown_doc(state, &record)?;
    // Contacts share calls like gifts unless `virtuous.contact_batch` is off.
    let contact_batch = doc["virtuous"]["contact_batch"].as_bool().unwrap_or(true);
    let lanes = lanes_json(
        &tenant_store,
        allowance_per_hour,
        batch_max,
        contact_batch,
        now,
    )?;
    let alerts: Vec<Value> = tenant_store.alert_views()?.iter().map(alert_json).collect();
    let state_name = match &runtime_status {
        None if record.run_state() == TenantRunState::Moved => record.state.clone(),
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
        "budget": match runtime_status.as_ref() {
            Some(runtime) => {
                let mut budget = budget_json(&runtime.budget, &doc["budget"]);
                // Calls in each minute of the last hour, oldest first (the dashboard's chart).
                budget["per_minute"] = json!(tenant_store.calls_per_minute(now, BUDGET_CHART_MINUTES)?);
                budget
            }
            None => Value::Null,
        },
        "counts": tenant_store.counts(),
        "alerts": alerts,
        // Failures that speak up, counted since the tenant started (docs/operations.md).
        "health": runtime_status.as_ref().map(|s| json!(s.health)).unwrap_or(Value::Null),
        // Virtuous webhook events kept because they could not be understood (bounded; the
        // list: GET /v1/tenants/{id}/inbound/unparsed).
        "inbound": {"unparsed_kept": tenant_store.unparsed_count()?},
        // Polled sources (docs/polling.md): state, checkpoint, last run, next run.
        "pollers": state
            .runtime
            .tenant(id)
            .map(|handle| crate::http::admin_pollers::status_block(&handle))
            .unwrap_or_else(|| json!([])),
        // Pull destinations (docs/pull.md): state, checkpoint, lag, counts, last error.
        "destinations": state
            .runtime
            .tenant(id)
            .map(|handle| crate::http::admin_destinations::status_block(&handle))
            .unwrap_or_else(|| json!([])),
        // Two-way pairs (docs/operations.md "Two-way sync"): mode, counters, pending,
        // conflicts, the pair loop's activity and the cross-match's progress and ETA.
        "two_way": state
            .runtime
            .tenant(id)
            .map(|handle| crate::http::admin_two_way::status_block(&handle))
            .unwrap_or_else(|| json!([])),
        "ingress": ingress_urls(&state.ingress_base_url, id, &doc),
        "config": doc,
        "created_at": format_ms(record.created_at_ms),
        "updated_at": format_ms(record.updated_at_ms),
    }))
}

/// One alert as the status and the ack route show it (docs/operations.md "Alerts"):
/// `resolved_at` null while open, `acked_at` null until acknowledged.
pub fn alert_json(view: &AlertView) -> Value {
    let alert = &view.alert;
    json!({"code": alert.code, "message": alert.message, "first_at": format_ms(alert.first_at_ms),
           "last_at": format_ms(alert.last_at_ms), "count": alert.count,
           "resolved_at": view.state.resolved_at_ms.map(format_ms),
           "acked_at": view.state.acked_at_ms.map(format_ms)})
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

/// Minutes in the status's `budget.per_minute` (the budget's one-hour window).
const BUDGET_CHART_MINUTES: usize = 60;

/// Entries sampled at the head of a lane to estimate how many are batched (gifts, and
/// contacts with `virtuous.contact_batch`).
const LANE_SAMPLE_LEN: usize = 64;

/// Calls needed for `depth` entries of which a share `gift_share` are batched (gifts, and
/// contacts when batched): they travel `batch_max` to a call (full batches: with a backlog,
/// calls are what is scarce), every other entry takes a call of its own.
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
    contact_batch: bool,
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
                .filter(|(_, entry)| match entry.fact.kind {
                    RecordKind::Gift => true,
                    RecordKind::Contact => contact_batch,
                    RecordKind::Refund => false,
                })
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

/// The URLs of the ingress routes this server has for the tenant's configured sources
/// (`http/ingress.rs`). Mailchimp's URL carries its key, shown redacted (the operator
/// pastes the `url_key` they set in its place).
fn ingress_urls(base: &str, id: &str, doc: &Value) -> Value {
    let mut urls = serde_json::Map::new();
    let sources = &doc["sources"];
    if !sources["stripe"].is_null() {
        urls.insert("stripe".into(), json!(format!("{base}/hooks/{id}/stripe")));
    }
    if let Some(platforms) = sources["platforms"].as_object() {
        // A platform that is only polled (`poll`, no `secret`) has no webhook route.
        let polled_only =
            |platform: &Value| platform["secret"].is_null() && !platform["poll"].is_null();
        for (name, _) in platforms
            .iter()
            .filter(|(_, platform)| !polled_only(platform))
        {
            urls.insert(
                format!("platform/{name}"),
                json!(format!("{base}/hooks/{id}/platform/{name}")),
            );
        }
    }
    if !sources["mailchimp"]["url_key"].is_null() {
        urls.insert(
            "mailchimp".into(),
            json!(format!(
                "{base}/hooks/{id}/mailchimp?key={}",
                crate::tenant::REDACTED
            )),
        );
    }
    Value::Object(urls)
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
