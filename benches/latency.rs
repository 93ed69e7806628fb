//! Latency benchmark (issue 4): webhook acknowledged → gift accepted by (the sandbox's)
//! Virtuous.
//!
//! The real release binary with the embedded sandbox; one tenant with high limits (org and
//! tenant 1,000,000 calls/hour (the most a tenant may set), so pacing never waits long); open loop: a distinct signed
//! `charge.succeeded` every 5 ms (200 events/s, `STEWARD_BENCH_RATE`) for 60 s
//! (`STEWARD_BENCH_SECONDS`), each sent from its own task so a slow answer never delays the
//! schedule. The org imports immediately (`processing: "immediate"`: before its 200 goes out)
//! and fires a `GiftCreate` webhook to a receiver in this process; latency = webhook arrival −
//! the moment this process read the `202`. That includes the webhook's own delivery, so it is
//! an upper bound of "ack → accepted"; an arrival before the ack was read counts as 0.
//! Target: p99 ≤ 5 ms. Asserts every event was answered 202 and every gift arrived.

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use dashmap::DashMap;
use serde_json::{json, Value};
use support::{env_number, new_histogram, summary_ms, Engine};

const TENANT: &str = "latency";

#[derive(Default)]
struct Times {
    /// transactionId → when the 202 was read.
    acked: DashMap<String, Instant>,
    /// transactionId → when the GiftCreate webhook arrived.
    accepted: DashMap<String, Instant>,
}

async fn receive(times: web::Data<Arc<Times>>, body: web::Bytes) -> HttpResponse {
    let arrived = Instant::now();
    if let Ok(payload) = serde_json::from_slice::<Value>(&body) {
        let mut gifts = Vec::new();
        if let Some(gift) = payload.get("gift") {
            gifts.push(gift.clone());
        }
        if let Some(models) = payload.get("models").and_then(Value::as_array) {
            gifts.extend(models.iter().filter_map(|model| model.get("gift").cloned()));
        }
        for gift in gifts {
            if let Some(id) = gift.get("transactionId").and_then(Value::as_str) {
                times.accepted.entry(id.to_string()).or_insert(arrived);
            }
        }
    }
    HttpResponse::Ok().finish()
}

#[actix_web::main]
async fn main() {
    let rate = env_number("STEWARD_BENCH_RATE", 200);
    let seconds = env_number("STEWARD_BENCH_SECONDS", 60);
    let total = rate * seconds;
    let limit = 1_000_000;

    let times = Arc::new(Times::default());
    let receiver_times = Arc::clone(&times);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(Arc::clone(&receiver_times)))
            .route("/hook", web::post().to(receive))
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let receiver_addr = server.addrs()[0];
    let server = server.run();
    let server_handle = server.handle();
    actix_web::rt::spawn(server);

    let engine = Engine::spawn(&[]).await;
    engine
        .create_tenant_with_org_spec(TENANT, limit, 10, json!({"processing": "immediate"}))
        .await;
    let subscription = engine
        .client
        .post(format!("{}/api/Webhook", engine.sandbox_url))
        .bearer_auth(support::api_key(TENANT))
        .json(
            &json!({"payloadUrl": format!("http://{receiver_addr}/hook"),
                      "secret": "bench-webhook-secret", "giftCreate": true}),
        )
        .send()
        .await
        .unwrap();
    assert!(
        subscription.status().is_success(),
        "webhook subscription failed"
    );

    let events: Vec<_> = (0..total)
        .map(|n| support::charge_succeeded(TENANT, "lat", n, 2_048))
        .collect();
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut tasks = Vec::with_capacity(total as usize);
    for (index, event) in events.into_iter().enumerate() {
        let due = started + interval * index as u32;
        tokio::time::sleep_until(due.into()).await;
        let client = engine.client.clone();
        let url = format!("{}/hooks/{TENANT}/stripe", engine.main_url);
        let times = Arc::clone(&times);
        tasks.push(actix_web::rt::spawn(async move {
            let status = support::post_event(&client, &url, &event).await;
            times
                .acked
                .insert(event.transaction_id.clone(), Instant::now());
            status
        }));
    }
    let send_lag = started.elapsed().as_secs_f64() - seconds as f64;
    let mut accepted_202 = 0;
    for task in tasks {
        if task.await.unwrap() == 202 {
            accepted_202 += 1;
        }
    }
    support::wait_for(Duration::from_secs(60), "every gift's webhook", || {
        let arrived = times.accepted.len() as u64;
        async move { (arrived >= total).then_some(()) }
    })
    .await;

    let mut histogram = new_histogram();
    let mut early = 0;
    for acked in times.acked.iter() {
        let accepted = *times
            .accepted
            .get(acked.key())
            .expect("webhook for every gift");
        let latency_us = accepted
            .checked_duration_since(*acked.value())
            .map(|d| d.as_micros() as u64)
            .unwrap_or_else(|| {
                early += 1;
                0
            });
        histogram.saturating_record(latency_us.max(1));
    }
    let stats = engine.sandbox_stats(TENANT).await;
    println!("latency benchmark — machine: {}", support::machine());
    println!(
        "  open loop {rate} events/s for {seconds} s ({total} distinct 2 KB charge.succeeded), schedule overran by {send_lag:.2} s"
    );
    println!(
        "  202 answers: {accepted_202}/{total}; sandbox transactions received {}, 429s {}",
        stats["transactions_received"], stats["throttled"]
    );
    println!(
        "  ack → accepted (webhook arrival): {}",
        summary_ms(&histogram)
    );
    println!("  accepted before the ack was read: {early}");
    assert_eq!(accepted_202, total, "every event must be answered 202");
    server_handle.stop(false).await;
}
