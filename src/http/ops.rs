//! Operations routes: `/metrics` (Prometheus text), `/healthz` (process up) and `/readyz`
//! (store open and every tenant's children started).

use actix_web::{web, HttpResponse};

use crate::app::AppState;

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let started = std::time::Instant::now();
    // A blocked arbiter cannot update its own lag gauge: refresh the probes from here.
    let _ = state.runtime.arbiter_lag_ms();
    let text = state.metrics.render();
    metrics::histogram!(crate::telemetry::METRICS_RENDER_SECONDS)
        .record(started.elapsed().as_secs_f64());
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(text)
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
