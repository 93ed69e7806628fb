//! Logs and metrics: the one place that installs the subscriber and the Prometheus recorder,
//! and names the metrics the `steward` crate records (the runtime's are in
//! `steward_actors::metrics`).

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const METRICS_RENDER_SECONDS: &str = "steward_metrics_render_seconds";
pub const TENANTS: &str = "steward_tenants";

/// Latency buckets (seconds) for every `*_seconds` histogram: 50 µs to 60 s.
const SECONDS_BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 5.0, 60.0,
];
/// Size buckets for batch-size histograms.
const SIZE_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0];

/// Installs the tracing subscriber (filter from `STEWARD_LOG`, else `RUST_LOG`, else `info`).
pub fn init_logging() {
    let filter = std::env::var("STEWARD_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_string());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_target(false)
        // Logs go to stderr (stdout stays for output scripts read); colour only on a terminal.
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Installs the global Prometheus recorder once per process and returns its handle.
pub fn install_metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
                .and_then(|builder| {
                    builder.set_buckets_for_metric(Matcher::Suffix("_size".into()), &SIZE_BUCKETS)
                })
                .expect("bucket lists are non-empty")
                .build_recorder();
            let handle = recorder.handle();
            // A second recorder in one process (tests) keeps the first; its handle is shared.
            let _ = metrics::set_global_recorder(recorder);
            steward_actors::metrics::describe();
            metrics::describe_histogram!(
                METRICS_RENDER_SECONDS,
                metrics::Unit::Seconds,
                "Time to render /metrics"
            );
            metrics::describe_gauge!(TENANTS, "Tenants registered on this node");
            handle
        })
        .clone()
}

/// Keeps the recorder's histograms bounded (the exporter needs periodic upkeep).
pub fn spawn_metrics_upkeep(handle: PrometheusHandle) {
    actix_rt::spawn(async move {
        let mut interval = actix_rt::time::interval(Duration::from_secs(5));
        loop {
            interval.tick().await;
            handle.run_upkeep();
        }
    });
}
