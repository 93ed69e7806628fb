//! The per-tenant gauges a tenant registers once.

/// Per-tenant gauges besides mailbox depth (docs/operations.md: about a dozen series a tenant).
pub struct TenantGauges {
    /// Indexed like [`crate::store::Lane::ALL`].
    pub lane_depth: [metrics::Gauge; 4],
    pub budget_allowance_per_hour: metrics::Gauge,
    pub budget_spent_last_hour: metrics::Gauge,
    /// When the budget gauges were last computed (they read the call log: a store scan).
    pub budget_published_at_ms: std::sync::atomic::AtomicU64,
}

impl TenantGauges {
    pub fn zero(&self) {
        for gauge in &self.lane_depth {
            gauge.set(0.0);
        }
        self.budget_allowance_per_hour.set(0.0);
        self.budget_spent_last_hour.set(0.0);
    }

    pub(super) fn register(tenant_id: &str) -> TenantGauges {
        use crate::metrics::{
            BUDGET_ALLOWANCE_PER_HOUR, BUDGET_SPENT_LAST_HOUR, LABEL_LANE, LABEL_TENANT, LANE_DEPTH,
        };
        TenantGauges {
            lane_depth: crate::store::Lane::ALL.map(|lane| {
                metrics::gauge!(LANE_DEPTH, LABEL_TENANT => tenant_id.to_string(), LABEL_LANE => lane.name())
            }),
            budget_allowance_per_hour: metrics::gauge!(BUDGET_ALLOWANCE_PER_HOUR, LABEL_TENANT => tenant_id.to_string()),
            budget_spent_last_hour: metrics::gauge!(BUDGET_SPENT_LAST_HOUR, LABEL_TENANT => tenant_id.to_string()),
            budget_published_at_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }
}
