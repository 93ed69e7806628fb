//! A faithful Virtuous CRM+ simulator (DESIGN.md §7, `docs/sandbox.md`).
//!
//! CONTRACT: `start`, `SandboxConfig`, `SandboxHandle` and `OrgSpec` are what `main`,
//! the engine's embedded mode, tests and benchmarks use. Keep these names and signatures.

use std::net::SocketAddr;

/// How to run a sandbox.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Where to listen; port 0 picks a free port.
    pub listen: SocketAddr,
    /// actix-web worker threads (0 = one per core).
    pub workers: usize,
}

/// An organization to create (the same fields as `POST /_sandbox/orgs`; JSON-deserialisable
/// with the defaults listed in the issue: hourly_limit 5000, review_share 0.0, processing
/// "manual", dedup_transactions true, batch_item_error reject_all, validate_designation_sum
/// true, webhook_delivery single, webhook_includes_transaction_ids true).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub struct OrgSpec {
    pub id: String,
    pub api_key: String,
}

/// A running sandbox.
pub struct SandboxHandle {
    _private: (),
}

impl SandboxHandle {
    pub fn addr(&self) -> SocketAddr {
        todo!()
    }
    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        todo!()
    }
    /// Creates an organization in-process (the embedded mode); same rules as the control API.
    /// Creating an org that exists with the same api key is a no-op.
    pub fn create_org(&self, spec: OrgSpec) -> Result<(), String> {
        let _ = spec;
        todo!()
    }
    /// Stops the server gracefully.
    pub async fn stop(self) {
        todo!()
    }
}

/// Starts a sandbox inside the current actix/tokio runtime (call from `#[actix_web::main]`
/// or `#[actix_rt::test]`). Logs loudly that the target is a simulator.
pub async fn start(config: SandboxConfig) -> std::io::Result<SandboxHandle> {
    let _ = config;
    todo!()
}
