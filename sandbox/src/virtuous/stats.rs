//! Per-organization counters behind `GET /_sandbox/orgs/{id}/stats`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Status recorded for a request that was answered by closing the connection.
pub(crate) const CLOSED_WITHOUT_ANSWER: u16 = 0;

/// Counters kept under the org lock.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// (endpoint key "METHOD /template", status) → count.
    requests: HashMap<(&'static str, u16), u64>,
    pub(crate) throttled: u64,
    pub(crate) transactions_received: u64,
    pub(crate) imported: u64,
    pub(crate) rejected_duplicate: u64,
    pub(crate) rejected: u64,
    /// Queries with a date condition answered under `query_date_granularity: "day"`.
    pub(crate) day_granularity_queries: u64,
}

impl Stats {
    pub(crate) fn record(&mut self, endpoint: &'static str, status: u16) {
        *self.requests.entry((endpoint, status)).or_insert(0) += 1;
        if status == 429 {
            self.throttled += 1;
        }
    }

    fn requests_by_endpoint(&self) -> BTreeMap<&'static str, BTreeMap<String, u64>> {
        let mut by_endpoint: BTreeMap<&'static str, BTreeMap<String, u64>> = BTreeMap::new();
        for (&(endpoint, status), &count) in &self.requests {
            let status_key = if status == CLOSED_WITHOUT_ANSWER {
                "closed".to_owned()
            } else {
                status.to_string()
            };
            by_endpoint
                .entry(endpoint)
                .or_default()
                .insert(status_key, count);
        }
        by_endpoint
    }
}

/// Webhook outcomes, counted by delivery tasks outside the org lock.
#[derive(Debug, Default)]
pub(crate) struct WebhookCounters {
    pub(crate) sent: AtomicU64,
    pub(crate) failed: AtomicU64,
    /// Create/update events `webhook_drop_pct` suppressed (one per event).
    pub(crate) dropped: AtomicU64,
}

/// The JSON shape of the stats endpoint (documented in docs/sandbox.md).
#[derive(Debug, Serialize)]
pub(crate) struct StatsSnapshot {
    pub(crate) requests: BTreeMap<&'static str, BTreeMap<String, u64>>,
    pub(crate) throttled: u64,
    pub(crate) transactions_received: u64,
    pub(crate) pending: u64,
    pub(crate) in_review: u64,
    pub(crate) imported: u64,
    pub(crate) rejected_duplicate: u64,
    pub(crate) rejected: u64,
    pub(crate) gifts: u64,
    pub(crate) contacts: u64,
    pub(crate) webhooks_sent: u64,
    pub(crate) webhooks_failed: u64,
    pub(crate) webhooks_dropped: u64,
    pub(crate) day_granularity_queries: u64,
    pub(crate) rate_window_calls: u64,
}

/// The gauges that live outside `Stats`.
pub(crate) struct Gauges {
    pub(crate) pending: u64,
    pub(crate) in_review: u64,
    pub(crate) gifts: u64,
    pub(crate) contacts: u64,
    pub(crate) rate_window_calls: u64,
}

impl StatsSnapshot {
    pub(crate) fn new(stats: &Stats, gauges: Gauges, webhooks: &WebhookCounters) -> Self {
        StatsSnapshot {
            requests: stats.requests_by_endpoint(),
            throttled: stats.throttled,
            transactions_received: stats.transactions_received,
            pending: gauges.pending,
            in_review: gauges.in_review,
            imported: stats.imported,
            rejected_duplicate: stats.rejected_duplicate,
            rejected: stats.rejected,
            gifts: gauges.gifts,
            contacts: gauges.contacts,
            webhooks_sent: webhooks.sent.load(Ordering::Relaxed),
            webhooks_failed: webhooks.failed.load(Ordering::Relaxed),
            webhooks_dropped: webhooks.dropped.load(Ordering::Relaxed),
            day_granularity_queries: stats.day_granularity_queries,
            rate_window_calls: gauges.rate_window_calls,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_group_by_endpoint_then_status() {
        // Goal: the snapshot nests counts as {"METHOD /route": {"200": n, "closed": n}}.
        let mut stats = Stats::default();
        stats.record("POST /api/v2/Gift/Transaction", 200);
        stats.record("POST /api/v2/Gift/Transaction", 200);
        stats.record("POST /api/v2/Gift/Transaction", 429);
        stats.record("POST /api/v2/Gift/Transaction", CLOSED_WITHOUT_ANSWER);
        let gauges = Gauges {
            pending: 2,
            in_review: 0,
            gifts: 0,
            contacts: 0,
            rate_window_calls: 4,
        };
        let json =
            serde_json::to_value(StatsSnapshot::new(&stats, gauges, &Default::default())).unwrap();
        assert_eq!(
            json["requests"]["POST /api/v2/Gift/Transaction"],
            serde_json::json!({"200": 2, "429": 1, "closed": 1})
        );
        assert_eq!(json["throttled"], 1);
        assert_eq!(json["pending"], 2);
    }
}
