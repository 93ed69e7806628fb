//! `[ingress]`: the limits that keep hostile clients on the ingress port from pinning memory,
//! file descriptors or a neighbour's latency (docs/operations.md "Ingress limits").

use serde::{Deserialize, Serialize};

/// Limits of the ingress listener (`/hooks`). Enforced by `crate::http::admission`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngressSection {
    /// Bytes of webhook bodies being read at once, all tenants together (a declared
    /// `Content-Length` counts in full from the start); past it → `503 overloaded`.
    pub max_body_bytes_in_flight: u64,
    /// The same, per tenant: one tenant's senders cannot take the whole of the global cap.
    pub max_body_bytes_in_flight_per_tenant: u64,
    /// A body not fully received this many seconds after its head → `408`, connection closed.
    pub body_read_timeout_s: u64,
    /// Open connections on the ingress listener (spread over its workers); further clients
    /// wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Verified deliveries of one tenant being written at once while other tenants are
    /// sending too; past it a delivery waits `admission_wait_ms` for a place, then `503
    /// overloaded`.
    pub max_in_flight_per_tenant: u32,
    /// The same while the tenant is the only one sending (no other tenant's delivery in the
    /// last second): a lone tenant keeps the store's large write groups.
    pub max_in_flight_alone: u32,
    /// How long a delivery waits for one of its tenant's places before `503 overloaded`
    /// (0 = refuse at once).
    pub admission_wait_ms: u64,
}

impl Default for IngressSection {
    fn default() -> Self {
        IngressSection {
            max_body_bytes_in_flight: 64 * 1024 * 1024,
            max_body_bytes_in_flight_per_tenant: 16 * 1024 * 1024,
            body_read_timeout_s: 10,
            max_connections: 1_024,
            max_in_flight_per_tenant: 4,
            max_in_flight_alone: 64,
            admission_wait_ms: 1_000,
        }
    }
}

impl IngressSection {
    /// `Err((key, reason))` names the bad key. `largest_body_bytes` is the largest body a
    /// route accepts (`body_limit_bytes`, `virtuous_body_limit_bytes`): a cap below it would
    /// refuse that delivery for ever.
    pub(super) fn validate(&self, largest_body_bytes: u64) -> Result<(), (&'static str, String)> {
        let positive: [(&'static str, u64); 5] = [
            (
                "ingress.max_body_bytes_in_flight",
                self.max_body_bytes_in_flight,
            ),
            (
                "ingress.max_body_bytes_in_flight_per_tenant",
                self.max_body_bytes_in_flight_per_tenant,
            ),
            ("ingress.body_read_timeout_s", self.body_read_timeout_s),
            ("ingress.max_connections", self.max_connections as u64),
            (
                "ingress.max_in_flight_per_tenant",
                u64::from(self.max_in_flight_per_tenant),
            ),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err((*key, "must be greater than 0".into()));
        }
        if self.max_body_bytes_in_flight_per_tenant < largest_body_bytes {
            return Err((
                "ingress.max_body_bytes_in_flight_per_tenant",
                format!("must be at least the largest accepted body ({largest_body_bytes} bytes: body_limit_bytes, virtuous_body_limit_bytes)"),
            ));
        }
        if self.max_body_bytes_in_flight < self.max_body_bytes_in_flight_per_tenant {
            return Err((
                "ingress.max_body_bytes_in_flight",
                "must be at least ingress.max_body_bytes_in_flight_per_tenant".into(),
            ));
        }
        if self.max_in_flight_alone < self.max_in_flight_per_tenant {
            return Err((
                "ingress.max_in_flight_alone",
                "must be at least ingress.max_in_flight_per_tenant".into(),
            ));
        }
        if self.admission_wait_ms > 60_000 {
            return Err(("ingress.admission_wait_ms", "must be 0 to 60000".into()));
        }
        if self.body_read_timeout_s > 3_600 {
            return Err(("ingress.body_read_timeout_s", "must be 1 to 3600".into()));
        }
        Ok(())
    }
}
