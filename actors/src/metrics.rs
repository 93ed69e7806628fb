//! Every metric the runtime exports, defined in one place (Vector's habit).
//!
//! Cardinality rule (docs/operations.md): histograms are labelled by actor kind only; gauges may
//! carry the tenant (a handful of series per tenant); anything finer lives in the admin API.
//! Per-tenant series budget: 20 at most — today 12 always (6 mailbox, 4 lane, 2 budget gauges)
//! plus 2 counters created on first use (duplicates, transport failures).

/// Gauge `{tenant, actor}`: messages sent to the actor and not yet handled to the end.
pub const ACTOR_MAILBOX_DEPTH: &str = "steward_actor_mailbox_depth";
/// Histogram `{actor}`: seconds between sending a message and its handler starting.
pub const ACTOR_MAILBOX_WAIT_SECONDS: &str = "steward_actor_mailbox_wait_seconds";
/// Counter `{actor}`: children re-created after a death or a stall (per-tenant counts are in
/// the tenant status).
pub const ACTOR_RESTARTS_TOTAL: &str = "steward_actor_restarts_total";

/// Gauge `{arbiter}`: how late the arbiter ran its latest probe timer (a blocked arbiter
/// thread stalls every tenant on it; this is how it shows).
pub const ARBITER_LAG_SECONDS: &str = "steward_arbiter_lag_seconds";

/// Counter `{tenant}`: Virtuous records found to be duplicates (two gifts, one transactionId).
/// Created on the first duplicate only, so quiet tenants add no series.
pub const DUPLICATES_DETECTED_TOTAL: &str = "steward_duplicates_detected_total";
/// Counter `{via}`: records confirmed by the reconciler (`reconcile`) or a webhook (`webhook`).
pub const RECORDS_CONFIRMED_TOTAL: &str = "steward_records_confirmed_total";
/// Label of [`RECORDS_CONFIRMED_TOTAL`]: `reconcile` or `webhook`.
pub const LABEL_VIA: &str = "via";
/// Counter `{origin}`: inbound events kept because they could not be understood (per-tenant
/// numbers and the events themselves are in the admin API).
pub const INBOUND_UNPARSED_TOTAL: &str = "steward_inbound_unparsed_total";
/// Label of [`INBOUND_UNPARSED_TOTAL`]: where the event came from (`virtuous_webhook`).
pub const LABEL_ORIGIN: &str = "origin";

/// Counter `{source, path}`: facts of polled sources captured, by the path that saw them
/// first (`webhook`, `poll`), and `both` each time the other path saw a fact too. `source` is
/// the source's kind (`constant_contact`, `mailchimp`, `platform`): per tenant and per
/// platform the numbers are in the parity route (`GET …/parity/{source}`).
pub const CAPTURE_PATH_TOTAL: &str = "steward_capture_path_total";
/// Labels of [`CAPTURE_PATH_TOTAL`].
pub const LABEL_SOURCE: &str = "source";
pub const LABEL_PATH: &str = "path";
/// Counter `{source, outcome}`: poll runs ended, by source kind and outcome (`completed`,
/// `failed`, `auth_refused`, `paused`, `reset`).
pub const POLL_RUNS_TOTAL: &str = "steward_poll_runs_total";
/// Counter `{source}`: calls made to polled sources, by source kind.
pub const POLL_CALLS_TOTAL: &str = "steward_poll_calls_total";

/// Gauge `{destination}`: the oldest undelivered change's age, in seconds, per destination
/// kind (`webhook`, `postgres`, `ndjson`) — the largest over the process's tenants and
/// destinations of that kind; per tenant and destination it is in the status
/// (`GET /v1/tenants/{id}/destinations`).
pub const DESTINATION_LAG_SECONDS: &str = "steward_destination_lag_seconds";
/// Counter `{destination, outcome}`: changes handled by destinations, per kind and outcome
/// (`delivered`, `dead_lettered`, `superseded`, `own_skipped`).
pub const DESTINATION_CHANGES_TOTAL: &str = "steward_destination_changes_total";
/// Counter `{destination}`: failed delivery attempts (retried on the schedule).
pub const DESTINATION_FAILURES_TOTAL: &str = "steward_destination_failures_total";
pub const LABEL_DESTINATION: &str = "destination";
/// Counter `{via, outcome}`: Virtuous changes offered to the change log, by how they came
/// (`webhook`, `poll`, `reread`) and what became of them (`logged`, `stale`, `duplicate`,
/// `reread_requested`).
pub const PULL_CHANGES_TOTAL: &str = "steward_pull_changes_total";
/// Counter `{outcome}`: backstop poll passes ended (`completed`, `budget_wait`, `failed`).
pub const PULL_POLLS_TOTAL: &str = "steward_pull_polls_total";
/// Counter `{side, outcome}`: incoming changes of linked records decided by two-way sync
/// (`partner`, `virtuous`; `applied`, `echo`, `stale`, `unlinked`).
pub const TWO_WAY_CHANGES_TOTAL: &str = "steward_two_way_changes_total";
/// Counter `{layer}`: incoming two-way changes dropped as our own echoes (`origin`,
/// `ledger`, `window`) and fields set aside because the other side owns them (`ownership`).
pub const ECHOES_DROPPED_TOTAL: &str = "steward_echoes_dropped_total";
pub const LABEL_LAYER: &str = "layer";
/// Counter `{phase, outcome}`: backfill rows read (`dry_run`, `run`; `payment`, `skipped`,
/// `rejected`), all tenants together.
pub const BACKFILL_ROWS_TOTAL: &str = "steward_backfill_rows_total";
/// Counter: entries backfill jobs put in the `backfill` lane (duplicates not counted).
pub const BACKFILL_ENTRIES_QUEUED_TOTAL: &str = "steward_backfill_entries_queued_total";
/// Counter: calls made on live's reserve (live entries sent at once while a backfill takes
/// every other spare call), all tenants together.
pub const LIVE_RESERVE_CALLS_TOTAL: &str = "steward_live_reserve_calls_total";
/// Counter `{side, outcome}`: two-way writes (`partner`, `virtuous`; `written`, `retried`,
/// `dead_lettered`).
pub const TWO_WAY_WRITES_TOTAL: &str = "steward_two_way_writes_total";
pub const LABEL_SIDE: &str = "side";
/// Counter: conflicts opened (a shared field changed on both sides).
pub const TWO_WAY_CONFLICTS_TOTAL: &str = "steward_two_way_conflicts_total";
/// Counter: Virtuous calls made by the backstop poll and re-reads (reconcile lane).
pub const PULL_CALLS_TOTAL: &str = "steward_pull_calls_total";

/// Publishes one destination's lag; the gauge shows the largest of its kind.
pub fn publish_destination_lag(tenant_id: &str, name: &str, kind: &str, lag_s: f64) {
    publish_lag_entry(tenant_id, name, Some((kind, lag_s)));
}

/// Forgets a destination's lag (removed from its tenant's document).
pub fn forget_destination_lag(tenant_id: &str, name: &str) {
    publish_lag_entry(tenant_id, name, None);
}

/// Sets (or removes) one destination's lag and the gauge of its kind.
fn publish_lag_entry(tenant_id: &str, name: &str, entry: Option<(&str, f64)>) {
    static LAGS: std::sync::Mutex<std::collections::BTreeMap<(String, String), (String, f64)>> =
        std::sync::Mutex::new(std::collections::BTreeMap::new());
    let mut lags = LAGS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let key = (tenant_id.to_string(), name.to_string());
    let kind = match entry {
        Some((kind, lag_s)) => {
            lags.insert(key, (kind.to_string(), lag_s));
            kind.to_string()
        }
        None => match lags.remove(&key) {
            Some((kind, _)) => kind,
            None => return,
        },
    };
    let largest = lags
        .values()
        .filter(|(of_kind, _)| *of_kind == kind)
        .map(|(_, lag)| *lag)
        .fold(0.0, f64::max);
    metrics::gauge!(DESTINATION_LAG_SECONDS, LABEL_DESTINATION => kind).set(largest);
}

/// Counter `{code}`: alerts raised (first time and repeats; docs/operations.md), all tenants
/// together — per tenant they are in the status, and a tenant label would add a series per
/// code past the per-tenant series budget.
pub const ALERTS_TOTAL: &str = "steward_alerts_total";
/// Label of [`ALERTS_TOTAL`]: the alert code.
pub const LABEL_CODE: &str = "code";
/// Counter `{outcome}`: alert notices decided where the alert changed (docs/operations.md
/// "Alerting"): `queued` (in the outbox), `suppressed` (a reopening within the cooldown
/// withdrew a held resolve), `dropped` (the owner's outbox was full), `unstored` (the store
/// failed: told from memory).
pub const ALERT_NOTICES_TOTAL: &str = "steward_alert_notices_total";
/// Counter `{sink, outcome}`: attempts to deliver a notice to a sink, by the sink's kind
/// (`webhook`, `slack`): `sent`, `retried` (failed, tried again later), `failed` (given up:
/// refused, or the retry schedule spent).
pub const ALERT_NOTIFICATIONS_TOTAL: &str = "steward_alert_notifications_total";
/// Label of [`ALERT_NOTIFICATIONS_TOTAL`]: the sink's kind.
pub const LABEL_SINK: &str = "sink";
/// Gauge: notices waiting for at least one sink (every owner's outbox, and a store failure's
/// notice held in memory).
pub const ALERT_OUTBOX_DEPTH: &str = "steward_alert_outbox_depth";

/// Gauge `{tenant, lane}`: entries waiting in a lane.
pub const LANE_DEPTH: &str = "steward_lane_depth";
/// Gauge `{tenant}`: the tenant's allowance of Virtuous calls per hour.
pub const BUDGET_ALLOWANCE_PER_HOUR: &str = "steward_budget_allowance_per_hour";
/// Gauge `{tenant}`: Virtuous calls in the last hour (the persisted call log).
pub const BUDGET_SPENT_LAST_HOUR: &str = "steward_budget_spent_last_hour";

/// Counter `{actor, outcome}`: Virtuous calls by outcome class (`accepted`, `throttled`,
/// `transient`, `unknown`, `permanent`, `too_large`, `needs_operator`, `items_rejected`,
/// `split`).
pub const CRM_CALLS_TOTAL: &str = "steward_crm_calls_total";
/// Counter `{tenant}`: Virtuous calls that got no answer (refused, DNS, TLS, timeout, closed),
/// any caller. Created on a tenant's first failure only, so quiet tenants add no series.
pub const CRM_TRANSPORT_FAILURES_TOTAL: &str = "steward_crm_transport_failures_total";
/// Counter `{actor}`: `429` answers received.
pub const CRM_THROTTLED_TOTAL: &str = "steward_crm_throttled_total";
/// Counter `{actor}`: queue entries Virtuous accepted.
pub const ITEMS_SUBMITTED_TOTAL: &str = "steward_items_submitted_total";
/// Counter `{actor}`: queue entries dead-lettered.
pub const DEAD_LETTERS_TOTAL: &str = "steward_dead_letters_total";
/// Histogram `{actor}`: items carried by one Virtuous write.
pub const SUBMIT_BATCH_SIZE: &str = "steward_submit_batch_size";
/// Counter `{actor}`: completions refused because they came from a replaced generation.
pub const STALE_COMPLETIONS_REFUSED_TOTAL: &str = "steward_stale_completions_refused_total";

/// Label names.
pub const LABEL_TENANT: &str = "tenant";
pub const LABEL_ACTOR: &str = "actor";
pub const LABEL_ARBITER: &str = "arbiter";
pub const LABEL_LANE: &str = "lane";
pub const LABEL_OUTCOME: &str = "outcome";

/// Registers descriptions with the installed recorder. Call once after installing it.
// Size: one `describe!` per metric, the one place that lists them all (Vector's habit).
pub fn describe() {
    describe_money();
    describe_alert_notices();
    metrics::describe_gauge!(
        DESTINATION_LAG_SECONDS,
        metrics::Unit::Seconds,
        "Age of the oldest change not yet delivered, largest per destination kind"
    );
    metrics::describe_counter!(
        DESTINATION_CHANGES_TOTAL,
        metrics::Unit::Count,
        "Changes handled by destinations, per destination kind and outcome"
    );
    metrics::describe_counter!(
        DESTINATION_FAILURES_TOTAL,
        metrics::Unit::Count,
        "Failed destination delivery attempts, per destination kind"
    );
    metrics::describe_counter!(
        BACKFILL_ROWS_TOTAL,
        metrics::Unit::Count,
        "Backfill rows read, per phase (dry run or run) and outcome"
    );
    metrics::describe_counter!(
        BACKFILL_ENTRIES_QUEUED_TOTAL,
        metrics::Unit::Count,
        "Entries backfill jobs queued in the backfill lane"
    );
    metrics::describe_counter!(
        LIVE_RESERVE_CALLS_TOTAL,
        metrics::Unit::Count,
        "Calls made on live's reserve while a backfill took the other spare calls"
    );
    metrics::describe_counter!(
        TWO_WAY_CHANGES_TOTAL,
        metrics::Unit::Count,
        "Incoming changes decided by two-way sync, per side and outcome"
    );
    metrics::describe_counter!(
        ECHOES_DROPPED_TOTAL,
        metrics::Unit::Count,
        "Two-way changes dropped as our own echoes, and fields kept by ownership, per layer"
    );
    metrics::describe_counter!(
        TWO_WAY_WRITES_TOTAL,
        metrics::Unit::Count,
        "Two-way writes, per side and outcome"
    );
    metrics::describe_counter!(
        TWO_WAY_CONFLICTS_TOTAL,
        metrics::Unit::Count,
        "Two-way conflicts opened"
    );
    metrics::describe_counter!(
        PULL_CHANGES_TOTAL,
        metrics::Unit::Count,
        "Virtuous changes offered to the change log, per path and outcome"
    );
    metrics::describe_counter!(
        PULL_POLLS_TOTAL,
        metrics::Unit::Count,
        "Backstop poll passes ended, per outcome"
    );
    metrics::describe_counter!(
        PULL_CALLS_TOTAL,
        metrics::Unit::Count,
        "Virtuous calls made by the backstop poll and re-reads"
    );
    metrics::describe_counter!(
        CAPTURE_PATH_TOTAL,
        metrics::Unit::Count,
        "Facts of polled sources by the path that saw them first (webhook, poll), and both when the other path saw them too"
    );
    metrics::describe_counter!(
        POLL_RUNS_TOTAL,
        metrics::Unit::Count,
        "Poll runs ended, per source kind and outcome"
    );
    metrics::describe_counter!(
        POLL_CALLS_TOTAL,
        metrics::Unit::Count,
        "Calls made to polled sources (their own limits), per source kind"
    );
    metrics::describe_counter!(
        ALERTS_TOTAL,
        metrics::Unit::Count,
        "Alerts raised per code, all tenants together (first time and repeats)"
    );
    metrics::describe_gauge!(
        ACTOR_MAILBOX_DEPTH,
        metrics::Unit::Count,
        "Messages queued for (or being handled by) an actor, per tenant and actor"
    );
    metrics::describe_histogram!(
        ACTOR_MAILBOX_WAIT_SECONDS,
        metrics::Unit::Seconds,
        "Time a message waited in an actor's mailbox before its handler started, per actor kind"
    );
    metrics::describe_counter!(
        ACTOR_RESTARTS_TOTAL,
        metrics::Unit::Count,
        "Child actors re-created by their tenant supervisor after a death or a stall, per actor kind"
    );
    metrics::describe_counter!(
        DUPLICATES_DETECTED_TOTAL,
        metrics::Unit::Count,
        "Records whose transactionId Virtuous holds on two or more gifts, per tenant"
    );
    metrics::describe_counter!(
        RECORDS_CONFIRMED_TOTAL,
        metrics::Unit::Count,
        "Records confirmed in Virtuous, by the reconciler or a webhook"
    );
    metrics::describe_counter!(
        INBOUND_UNPARSED_TOTAL,
        metrics::Unit::Count,
        "Inbound events that could not be understood, kept with their raw body and reason"
    );
    metrics::describe_gauge!(
        LANE_DEPTH,
        metrics::Unit::Count,
        "Entries waiting in a lane, per tenant and lane"
    );
    metrics::describe_gauge!(
        BUDGET_ALLOWANCE_PER_HOUR,
        metrics::Unit::Count,
        "Virtuous calls a tenant may make per hour (limit less the reserve)"
    );
    metrics::describe_gauge!(
        BUDGET_SPENT_LAST_HOUR,
        metrics::Unit::Count,
        "Virtuous calls a tenant made in the last hour"
    );
    metrics::describe_counter!(
        CRM_CALLS_TOTAL,
        metrics::Unit::Count,
        "Virtuous calls by actor kind and outcome class"
    );
    metrics::describe_counter!(
        CRM_TRANSPORT_FAILURES_TOTAL,
        metrics::Unit::Count,
        "Virtuous calls that got no answer (refused, DNS, TLS, timeout), per tenant"
    );
    metrics::describe_counter!(
        CRM_THROTTLED_TOTAL,
        metrics::Unit::Count,
        "Virtuous answers with status 429, per actor kind"
    );
    metrics::describe_counter!(
        ITEMS_SUBMITTED_TOTAL,
        metrics::Unit::Count,
        "Queue entries accepted by Virtuous"
    );
    metrics::describe_counter!(
        DEAD_LETTERS_TOTAL,
        metrics::Unit::Count,
        "Queue entries moved to the dead letters"
    );
    metrics::describe_histogram!(
        SUBMIT_BATCH_SIZE,
        metrics::Unit::Count,
        "Items carried by one Virtuous write"
    );
    metrics::describe_counter!(
        STALE_COMPLETIONS_REFUSED_TOTAL,
        metrics::Unit::Count,
        "Completions refused because a replaced (stale) generation sent them"
    );
    metrics::describe_gauge!(
        ARBITER_LAG_SECONDS,
        metrics::Unit::Seconds,
        "How late an arbiter thread ran its probe timer; large values mean a blocked thread"
    );
}

/// One more duplicate found for `tenant_id`.
pub fn count_duplicate(tenant_id: &str) {
    metrics::counter!(DUPLICATES_DETECTED_TOTAL, LABEL_TENANT => tenant_id.to_string())
        .increment(1);
}

/// `confirmed` records confirmed by `via` (`reconcile` or `webhook`).
pub fn count_confirmations(via: &'static str, confirmed: u64) {
    if confirmed > 0 {
        metrics::counter!(RECORDS_CONFIRMED_TOTAL, LABEL_VIA => via).increment(confirmed);
    }
}

/// Counts one two-way decision: its outcome, its echo layer, the fields kept by ownership,
/// the conflicts it opened.
pub fn count_two_way(
    side: crate::two_way::Side,
    decision: &crate::two_way::decide::Decision,
    conflicts_opened: u64,
) {
    use crate::two_way::decide::Verdict;
    use crate::two_way::EchoLayer;
    let outcome = match decision.verdict {
        Some(Verdict::Stale) => "stale",
        Some(Verdict::Echo(_)) => "echo",
        _ => "applied",
    };
    metrics::counter!(TWO_WAY_CHANGES_TOTAL, LABEL_SIDE => side.name(), LABEL_OUTCOME => outcome)
        .increment(1);
    if let Some(Verdict::Echo(layer)) = decision.verdict {
        metrics::counter!(ECHOES_DROPPED_TOTAL, LABEL_LAYER => layer.name()).increment(1);
    }
    if decision.ownership_drops > 0 {
        metrics::counter!(ECHOES_DROPPED_TOTAL, LABEL_LAYER => EchoLayer::Ownership.name())
            .increment(decision.ownership_drops);
    }
    if conflicts_opened > 0 {
        metrics::counter!(TWO_WAY_CONFLICTS_TOTAL).increment(conflicts_opened);
    }
}

/// Counter `{outcome}`: money facts the submitter's completions recorded for reconciliation
/// (`recorded`, `refunded`; `unreadable`: an accepted gift whose body gave no money, left
/// out; `refund_without_gift`: a reversal whose gift has no fact).
pub const MONEY_FACTS_TOTAL: &str = "steward_money_facts_total";
/// Counter `{outcome}`: money reconciliations ended (`clean`, `mismatch`, `failed`), all
/// tenants together (per tenant: the jobs in the admin API).
pub const RECONCILIATIONS_TOTAL: &str = "steward_reconciliations_total";

fn describe_money() {
    metrics::describe_counter!(
        MONEY_FACTS_TOTAL,
        metrics::Unit::Count,
        "Money facts recorded when Virtuous accepted gifts and reversals, per outcome"
    );
    metrics::describe_counter!(
        RECONCILIATIONS_TOTAL,
        metrics::Unit::Count,
        "Money reconciliations ended, per outcome (clean, mismatch, failed)"
    );
}

fn describe_alert_notices() {
    metrics::describe_counter!(
        ALERT_NOTICES_TOTAL,
        metrics::Unit::Count,
        "Alert notices decided when alerts changed, per outcome (queued, suppressed, dropped, unstored)"
    );
    metrics::describe_counter!(
        ALERT_NOTIFICATIONS_TOTAL,
        metrics::Unit::Count,
        "Alert notice deliveries per sink kind and outcome (sent, retried, failed)"
    );
    metrics::describe_gauge!(
        ALERT_OUTBOX_DEPTH,
        metrics::Unit::Count,
        "Alert notices waiting for at least one sink"
    );
}

/// One money fact outcome (`money_ops.rs`).
pub fn count_money_fact(outcome: &'static str) {
    metrics::counter!(MONEY_FACTS_TOTAL, LABEL_OUTCOME => outcome).increment(1);
}

/// One reconciliation ended with `outcome`.
pub fn count_reconciliation(outcome: &'static str) {
    metrics::counter!(RECONCILIATIONS_TOTAL, LABEL_OUTCOME => outcome).increment(1);
}
