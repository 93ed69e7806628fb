//! Operations routes: `/metrics` (Prometheus text), `/healthz` (process up) and `/readyz`
//! (store open and every tenant's children started).

use std::time::{Duration, Instant};

use actix_web::{web, HttpResponse};

use super::error::{ApiError, ErrorCode};
use crate::app::AppState;

/// How long one `/metrics` render is served again: scrape loops at thousands of tenants
/// must not render once per request (issue 11 measured four loops moving another tenant's
/// ack p99 from 10 ms to 1.1 s). Not a setting: Prometheus scrapes every 10 s or more.
pub const METRICS_CACHE_FOR: Duration = Duration::from_secs(1);

/// The last `/metrics` render. The async mutex makes concurrent scrapes wait for one render
/// instead of starting their own.
#[derive(Default)]
pub struct MetricsCache {
    last: tokio::sync::Mutex<Option<(Instant, web::Bytes)>>,
}

/// `/metrics`: the cached render when it is younger than [`METRICS_CACHE_FOR`], else a new
/// one rendered on the blocking pool — never on an HTTP worker, which ingress shares when
/// `admin_listen = "shared"`.
pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let mut last = state.metrics_cache.last.lock().await;
    let text = match last.as_ref() {
        Some((rendered_at, text)) if rendered_at.elapsed() < METRICS_CACHE_FOR => text.clone(),
        _ => {
            let render_state = state.clone();
            let text = web::block(move || {
                let started = Instant::now();
                // A blocked arbiter cannot update its own lag gauge: refresh the probes here.
                let _ = render_state.runtime.arbiter_lag_ms();
                crate::telemetry::collect_process_metrics();
                let text = render_state.metrics.render();
                metrics::histogram!(crate::telemetry::METRICS_RENDER_SECONDS)
                    .record(started.elapsed().as_secs_f64());
                web::Bytes::from(text)
            })
            .await
            .map_err(|_| ApiError::new(ErrorCode::Internal, "rendering the metrics failed"))?;
            *last = Some((Instant::now(), text.clone()));
            text
        }
    };
    drop(last);
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(text))
}

/// `/healthz` and `/readyz` (GET only; another method is a JSON `405` with `Allow`).
pub fn health_routes(config: &mut web::ServiceConfig) {
    config
        .service(web::resource("/healthz").get(healthz))
        .service(web::resource("/readyz").get(readyz));
}

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "up"}))
}

pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let readiness = state.readiness();
    let body = serde_json::json!({
        "ready": readiness.ready,
        "store_open": readiness.store_open,
        "tenants": readiness.tenants,
        "tenants_running": readiness.tenants_running,
        "tenants_started": readiness.tenants_started,
    });
    if readiness.ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
