//! The webhook destination against a partner receiver on loopback (actix-web in the test,
//! answers flipped at runtime): signatures verify the Standard Webhooks way, the
//! `webhook-id` survives a retry, 5xx/429 retry, 4xx rejects, pacing holds `max_per_s`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};
use steward::destinations::webhook::WebhookDestination;
use steward::tenant::WebhookDestinationDoc;
use steward_actors::ports::Destination;
use steward_actors::pull::{ChangeKind, ChangeOp, ChangeVia, DeliveryAnswer, StoredChange};

use crate::pull_support::{header_text, standard_signature_matches, PARTNER_SECRET as SECRET};

/// One request as the partner saw it.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    timestamp: String,
    signature: String,
    body: String,
    at: Instant,
}

#[derive(Default)]
struct Partner {
    received: Mutex<Vec<Received>>,
    /// Answers for the next requests (status, Retry-After, body); 200 when empty.
    script: Mutex<VecDeque<(u16, Option<&'static str>, &'static str)>>,
}

impl Partner {
    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
    fn answer_next(&self, answers: &[(u16, Option<&'static str>, &'static str)]) {
        self.script.lock().unwrap().extend(answers.iter().copied());
    }
}

async fn receive(
    request: HttpRequest,
    body: web::Bytes,
    partner: web::Data<Partner>,
) -> HttpResponse {
    let header = |name: &str| header_text(&request, name);
    partner.received.lock().unwrap().push(Received {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body: String::from_utf8_lossy(&body).into_owned(),
        at: Instant::now(),
    });
    let next = partner.script.lock().unwrap().pop_front();
    let (status, retry_after, answer) = next.unwrap_or((200, None, "ok"));
    let mut response = HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap());
    if let Some(seconds) = retry_after {
        response.insert_header(("retry-after", seconds));
    }
    response.body(answer)
}

/// A partner receiver on a free loopback port: its state and its URL.
fn start_partner() -> (Arc<Partner>, String) {
    let partner = web::Data::new(Partner::default());
    let shared = partner.clone().into_inner();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(partner.clone())
            .default_service(web::to(receive))
    })
    .workers(1)
    .bind(("127.0.0.1", 0))
    .expect("bind the partner");
    let url = format!("http://{}/hooks/steward", server.addrs()[0]);
    actix_rt::spawn(server.run());
    (shared, url)
}

fn destination(url: &str, max_per_s: u32) -> WebhookDestination {
    let settings = WebhookDestinationDoc {
        url: url.to_string(),
        secret: Some(SECRET.to_string()),
        max_per_s,
        timeout_s: 5,
    };
    WebhookDestination::new(steward::sources::polling::shared_http(), "hope", &settings)
        .expect("valid settings")
}

fn change(seq: u64) -> StoredChange {
    StoredChange {
        seq,
        kind: ChangeKind::Gift,
        op: ChangeOp::Upsert,
        id: format!("{}", 5_000 + seq),
        version_ms: 1_714_557_600_000 + seq,
        modified_at: Some("2024-05-01T10:00:00".into()),
        record: json!({"id": 5_000 + seq, "amount": 12.5}),
        own: seq % 2 == 0,
        via: ChangeVia::Webhook,
        received_ms: 1_714_557_601_000,
    }
}

/// How a partner verifies a request (`pull_support`'s independent verifier).
fn signature_is_valid(received: &Received) -> bool {
    standard_signature_matches(
        SECRET,
        &received.id,
        &received.timestamp,
        &received.signature,
        received.body.as_bytes(),
    )
}

#[actix_rt::test]
async fn each_change_is_one_signed_post_the_partner_can_verify() {
    // Goal: three changes → three POSTs whose signatures verify, timestamps are fresh, and
    // bodies carry type, timestamp and the change; everything is committed.
    let (partner, url) = start_partner();
    let destination = destination(&url, 1_000);
    let answer = destination
        .deliver(vec![change(1), change(2), change(3)])
        .await;
    assert_eq!(answer, DeliveryAnswer::committed(3));
    let received = partner.received();
    assert_eq!(received.len(), 3);
    let now_s = steward_actors::ports::now_ms() / 1_000;
    for request in &received {
        assert!(signature_is_valid(request), "{request:?}");
        let timestamp: u64 = request.timestamp.parse().unwrap();
        assert!(now_s.abs_diff(timestamp) < 60, "{request:?}");
    }
    let body: Value = serde_json::from_str(&received[1].body).unwrap();
    assert_eq!(body["type"], "gift.upsert");
    assert_eq!(body["timestamp"], "2024-05-01T10:00:01Z");
    assert_eq!(body["data"]["id"], "5002");
    assert_eq!(body["data"]["own"], true);
    assert_eq!(body["data"]["version_ms"], 1_714_557_600_002_u64);
    assert_eq!(body["data"]["record"]["amount"], 12.5);
    // A tampered body no longer verifies (the check above can fail).
    let mut tampered = received[0].clone();
    tampered.body = tampered.body.replace("12.5", "99.5");
    assert!(!signature_is_valid(&tampered));
}

#[actix_rt::test]
async fn a_failing_partner_gets_a_retry_with_the_same_webhook_id() {
    // Goal: a 500 on the third change answers retry with the first two committed; the
    // retried delivery carries the same webhook-id and body for that change; a 429's
    // Retry-After reaches the answer.
    let (partner, url) = start_partner();
    let destination = destination(&url, 1_000);
    partner.answer_next(&[(200, None, ""), (200, None, ""), (500, None, "down")]);
    let answer = destination
        .deliver(vec![change(1), change(2), change(3), change(4)])
        .await;
    assert_eq!(answer.committed_through, Some(2), "{answer:?}");
    assert!(
        answer.retry.as_ref().unwrap().message.contains("500"),
        "{answer:?}"
    );
    assert_eq!(partner.received().len(), 3, "stopped at the failure");

    partner.answer_next(&[(429, Some("7"), "slow down")]);
    let answer = destination.deliver(vec![change(3), change(4)]).await;
    assert_eq!(answer.committed_through, None);
    assert_eq!(answer.retry.unwrap().retry_after_ms, Some(7_000));

    let answer = destination.deliver(vec![change(3), change(4)]).await;
    assert_eq!(answer, DeliveryAnswer::committed(4));
    let received = partner.received();
    let attempts_of_3: Vec<&Received> = received
        .iter()
        .filter(|request| request.body.contains("\"5003\""))
        .collect();
    assert_eq!(attempts_of_3.len(), 3);
    for attempt in &attempts_of_3 {
        assert_eq!(attempt.id, attempts_of_3[0].id);
        assert_eq!(attempt.body, attempts_of_3[0].body);
        assert!(signature_is_valid(attempt));
    }
    assert_ne!(received[0].id, received[1].id);
}

#[actix_rt::test]
async fn a_refused_change_is_rejected_and_the_rest_delivered() {
    // Goal: a 400 dead-letters that change (status and the partner's words) and delivery
    // goes on; an unreachable partner answers retry.
    let (partner, url) = start_partner();
    let destination = destination(&url, 1_000);
    partner.answer_next(&[(200, None, ""), (400, None, "amount must be positive")]);
    let answer = destination
        .deliver(vec![change(1), change(2), change(3)])
        .await;
    assert_eq!(answer.committed_through, Some(3), "{answer:?}");
    assert_eq!(
        answer.rejected,
        [(2, "HTTP 400: amount must be positive".to_string())]
    );
    assert_eq!(answer.retry, None);
    assert_eq!(partner.received().len(), 3);

    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nowhere = destination_for_port(closed_port);
    let answer = nowhere.deliver(vec![change(1)]).await;
    assert_eq!(answer.committed_through, None);
    assert!(answer.retry.is_some(), "{answer:?}");
}

fn destination_for_port(port: u16) -> WebhookDestination {
    destination(&format!("http://127.0.0.1:{port}/hooks"), 1_000)
}

#[actix_rt::test]
async fn deliveries_are_paced_at_max_per_s() {
    // Goal: 20 changes at max_per_s = 20 take about a second (19 intervals of 50 ms), never
    // much less, and no two requests arrive much closer than the 50 ms interval.
    let (partner, url) = start_partner();
    let destination = destination(&url, 20);
    let started = Instant::now();
    let answer = destination.deliver((1..=20).map(change).collect()).await;
    let elapsed = started.elapsed();
    assert_eq!(answer, DeliveryAnswer::committed(20));
    assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    let received = partner.received();
    let first = received.first().unwrap().at;
    let last = received.last().unwrap().at;
    assert!(
        last - first >= Duration::from_millis(900),
        "{:?}",
        last - first
    );
    let closest = received
        .windows(2)
        .map(|pair| pair[1].at - pair[0].at)
        .min()
        .unwrap();
    assert!(closest >= Duration::from_millis(25), "{closest:?}");
}
