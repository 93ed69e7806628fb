//! Logs and metrics: the one place that installs the subscriber and the Prometheus recorder,
//! and names the metrics the `steward` crate records (the runtime's are in
//! `steward_actors::metrics`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const METRICS_RENDER_SECONDS: &str = "steward_metrics_render_seconds";
/// Gauge `{version, revision}`, always 1: what this process was built from.
pub const BUILD_INFO: &str = "steward_build_info";

/// The crate's version and the git revision it was built from (`unknown` outside a git
/// checkout), as `steward --version` prints them.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const REVISION: &str = env!("STEWARD_GIT_REVISION");
pub const VERSION_LINE: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (revision ",
    env!("STEWARD_GIT_REVISION"),
    ")"
);

/// The process collector (`process_*` metrics), sampled before each `/metrics` render.
fn process_collector() -> &'static metrics_process::Collector {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR.get_or_init(|| {
        let collector = metrics_process::Collector::default();
        collector.describe();
        collector
    })
}

/// Samples the process's CPU, memory, file descriptors and threads into the `process_*`
/// gauges (called by the `/metrics` render).
pub fn collect_process_metrics() {
    process_collector().collect();
}
pub const TENANTS: &str = "steward_tenants";

/// Latency buckets (seconds) for every `*_seconds` histogram: 50 µs to 60 s.
const SECONDS_BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 5.0, 60.0,
];
/// Size buckets for batch-size histograms.
const SIZE_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0];

/// `value` with control characters and quotes escaped, for a `%` field that carries text
/// from outside (ids, reasons, error messages quoting a body): its quotes stay visible as
/// part of the value. Control characters are escaped for every field and message anyway, by
/// the log formatter ([`one_line_fields`]).
pub fn escaped(value: impl std::fmt::Display) -> String {
    value.to_string().escape_debug().to_string()
}

/// How every field and message of a log line is written: as the default formatter does
/// (`name=value`, the message bare), with control characters escaped in the value whatever
/// the call site formatted — a `%` field or a message quoting text from outside cannot end
/// the line or drive a terminal, even where [`escaped`] was forgotten.
fn one_line_fields() -> impl for<'writer> tracing_subscriber::fmt::FormatFields<'writer> {
    use tracing_subscriber::field::MakeExt;
    tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
        let formatted = format!("{value:?}");
        let text = without_control_characters(&formatted);
        if field.name() == "message" {
            write!(writer, "{text}")
        } else {
            write!(writer, "{field}={text}")
        }
    })
    .delimited(" ")
}

/// `text` with each control character (newline, carriage return, escape…) written as its
/// escape sequence; everything else as it is.
fn without_control_characters(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for character in text.chars() {
        if character.is_control() {
            escaped.extend(character.escape_default());
        } else {
            escaped.push(character);
        }
    }
    std::borrow::Cow::Owned(escaped)
}

/// Counter of HTTP requests refused as malformed by the HTTP server (actix-http's parse
/// errors): counted here, logged at INFO at most once a minute, never one ERROR line each.
pub const HTTP_MALFORMED_REQUESTS_TOTAL: &str = "steward_http_malformed_requests_total";
/// Where actix-http logs a connection's parse errors ("stream error: …", at ERROR).
const HTTP_DISPATCHER_TARGET: &str = "actix_http::h1::dispatcher";
/// Malformed requests since start (the metric's value, read by the summary log line).
static MALFORMED_REQUESTS: AtomicU64 = AtomicU64::new(0);
/// The summary of malformed requests is logged at most this often.
const MALFORMED_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Whether an event is actix-http's ERROR about a connection it refused: any client can
/// cause one, so it is counted rather than logged (a flood of garbage must not flood the log).
fn is_malformed_request(metadata: &tracing::Metadata<'_>) -> bool {
    *metadata.level() == tracing::Level::ERROR && metadata.target() == HTTP_DISPATCHER_TARGET
}

/// Counts actix-http's malformed-request errors (the fmt layer drops them).
struct MalformedRequestCounter;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for MalformedRequestCounter {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _context: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if is_malformed_request(event.metadata()) {
            MALFORMED_REQUESTS.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(HTTP_MALFORMED_REQUESTS_TOTAL).increment(1);
        }
    }
}

/// How log lines are written (`log_format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line an event (`name=value` fields, control characters escaped).
    #[default]
    Text,
    /// One JSON object a line: `timestamp`, `level`, `message` and the event's fields at the
    /// top level (`tenant_id`, `actor`, `event_id`, …), for a log stack.
    Json,
}

/// Installs the tracing subscriber (filter from `STEWARD_LOG`, else `RUST_LOG`, else `info`).
/// Lines go to stderr (stdout stays for output scripts read).
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = std::env::var("STEWARD_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_string());
    let not_malformed =
        || tracing_subscriber::filter::filter_fn(|metadata| !is_malformed_request(metadata));
    let text_lines = (format == LogFormat::Text).then(|| {
        tracing_subscriber::fmt::layer()
            .fmt_fields(one_line_fields())
            .with_target(false)
            .with_writer(std::io::stderr)
            // Colour only on a terminal.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter(not_malformed())
    });
    // JSON escapes control characters itself; the fields are the call sites' (no bodies, no
    // secrets are ever logged: docs/operations.md "Logs").
    let json_lines = (format == LogFormat::Json).then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_target(true)
            .with_writer(std::io::stderr)
            .with_filter(not_malformed())
    });
    let _ = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new(filter))
        .with(text_lines)
        .with(json_lines)
        .with(MalformedRequestCounter)
        .try_init();
}

/// Logs how many malformed requests arrived since the last summary, if any (called by the
/// metrics upkeep; at most once per [`MALFORMED_LOG_INTERVAL`]).
fn log_malformed_requests(last_logged_total: &mut u64) -> bool {
    let total = MALFORMED_REQUESTS.load(Ordering::Relaxed);
    if total > *last_logged_total {
        tracing::info!(
            new = total - *last_logged_total,
            total,
            "malformed HTTP requests refused with 400 (counted in steward_http_malformed_requests_total; this line at most once a minute)"
        );
        *last_logged_total = total;
        return true;
    }
    false
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
            crate::sources::postgres::describe_metrics();
            metrics::describe_histogram!(
                METRICS_RENDER_SECONDS,
                metrics::Unit::Seconds,
                "Time to render /metrics"
            );
            metrics::describe_gauge!(TENANTS, "Tenants registered on this node");
            metrics::describe_gauge!(
                BUILD_INFO,
                "Always 1: the version and git revision this process was built from"
            );
            metrics::gauge!(BUILD_INFO, "version" => VERSION, "revision" => REVISION).set(1.0);
            collect_process_metrics();
            metrics::describe_counter!(
                HTTP_MALFORMED_REQUESTS_TOTAL,
                "HTTP requests the server refused as malformed (400, connection closed)"
            );
            handle
        })
        .clone()
}

/// Keeps the recorder's histograms bounded (the exporter needs periodic upkeep).
pub fn spawn_metrics_upkeep(handle: PrometheusHandle) {
    actix_rt::spawn(async move {
        let mut interval = actix_rt::time::interval(Duration::from_secs(5));
        let mut malformed_logged_total = 0;
        let mut malformed_logged_at = std::time::Instant::now() - MALFORMED_LOG_INTERVAL;
        loop {
            interval.tick().await;
            handle.run_upkeep();
            if malformed_logged_at.elapsed() >= MALFORMED_LOG_INTERVAL
                && log_malformed_requests(&mut malformed_logged_total)
            {
                malformed_logged_at = std::time::Instant::now();
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    /// A log sink for one test.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn no_field_or_message_can_break_a_log_line() {
        // Goal: whatever a call site does — a `%` field, a message built from outside text —
        // the line written has no raw control character: one event, one line.
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(super::one_line_fields())
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .finish();
        let forged = "ch_1\n2030-01-01T00:00:00Z ERROR forged \u{1b}[2J";
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(reason = %forged, id = forged, "rejected {forged}");
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(!text.contains('\u{1b}'), "{text:?}");
        assert!(text.contains("reason=ch_1\\n2030"), "{text}");
        assert!(text.contains("rejected ch_1\\n2030"), "{text}");
    }
}
