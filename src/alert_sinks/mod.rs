//! Alert sinks (docs/operations.md "Alerting"): where the alerts of tenants and of the
//! process are sent. The store queues each notice with the alert change it tells of; the
//! actors crate's dispatcher (`steward_actors::alerting`) delivers them through the
//! adapters here.
//!
//! # Layout
//! - [`sinks`]: the `webhook` and `slack` adapters of the `AlertSink` port, and their payloads.
//! - [`disk`]: the process alert `disk_nearly_full`.

pub mod disk;
pub mod sinks;

use std::sync::Arc;

use steward_actors::alerting::{AlertSink, Dispatcher, DispatcherSettings};
use steward_actors::store::{NoticePolicy, Store};

use crate::config::Config;

/// Whether alert changes queue notices, and the cooldown: none without a sink.
pub fn notice_policy(config: &Config) -> Option<NoticePolicy> {
    (!config.alerts.sinks.is_empty()).then(|| NoticePolicy {
        cooldown_ms: config.alerts.cooldown_s.saturating_mul(1_000),
    })
}

/// Starts, on the current arbiter, the dispatcher (when a sink is configured) and the disk
/// watch (unless `disk_free_min_pct` is 0). Never awaited by anything else.
pub fn start(config: &Config, store: &Store) -> anyhow::Result<()> {
    if config.alerts.disk_free_min_pct > 0 {
        disk::spawn_disk_watch(
            store.clone(),
            config.data_dir.clone(),
            config.alerts.disk_free_min_pct,
        );
    }
    if config.alerts.sinks.is_empty() {
        return Ok(());
    }
    // One client for the dispatcher's arbiter; no redirects (a sink URL may carry a token).
    let http = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let mut sinks: Vec<Arc<dyn AlertSink>> = Vec::new();
    for (index, sink) in config.alerts.sinks.iter().enumerate() {
        let built = sinks::ConfiguredSink::new(http.clone(), sink)
            .map_err(|reason| anyhow::anyhow!("alerts.sinks[{index}]: {reason}"))?;
        sinks.push(Arc::new(built));
    }
    let settings = DispatcherSettings {
        schedule: config.alerts.retry_schedule(),
        ..DispatcherSettings::default()
    };
    tracing::info!(
        sinks = sinks.len(),
        cooldown_s = config.alerts.cooldown_s,
        "alert sinks configured"
    );
    Dispatcher::new(store.clone(), sinks, settings).spawn();
    Ok(())
}
