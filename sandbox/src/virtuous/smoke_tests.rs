//! Smoke tests over real loopback HTTP (the full contract suite lives in tests/it/sandbox_*).

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::webhooks::sign;
use super::*;
use crate::test_support::{sandbox, webhook_receiver};

fn gift(transaction_id: &str) -> Value {
    json!({"transactionSource": "Stripe", "transactionId": transaction_id, "amount": "12.50",
        "giftDate": "11/26/2026", "giftType": "Credit",
        "contact": {"email": "smoke@example.org", "firstName": "Smo", "lastName": "Ke"}})
}

#[actix_rt::test]
async fn a_gift_goes_from_post_to_signed_webhook() {
    // Goal: POST → 200 with rate headers → process → GiftCreate webhook with a valid signature.
    let (hook_url, mut hook_receiver, receiver_handle) = webhook_receiver(|request, body| {
        let signature = request
            .headers()
            .get("X-Virtuous-Signature")
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .to_owned();
        (signature, String::from_utf8_lossy(&body).into_owned())
    });

    let handle = sandbox(1).await;
    handle
        .create_org(OrgSpec::new("smoke", "smoke-key"))
        .unwrap();
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", handle.base_url());
    let subscription = client
        .post(url("/api/Webhook"))
        .bearer_auth("smoke-key")
        .json(&json!({"payloadUrl": hook_url, "secret": "shh", "giftCreate": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(subscription.status(), 200);

    let response = client
        .post(url("/api/v2/Gift/Transaction"))
        .bearer_auth("smoke-key")
        .json(&gift("smoke-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-ratelimit-limit"], "5000");
    assert_eq!(response.headers()["x-ratelimit-remaining"], "4998");
    assert!(response.bytes().await.unwrap().is_empty());

    let report: Value = client
        .post(url("/_sandbox/orgs/smoke/process"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["imported"], 1);
    let (signature, body) = tokio::time::timeout(Duration::from_secs(10), hook_receiver.recv())
        .await
        .expect("webhook within 10 s")
        .unwrap();
    assert_eq!(
        signature,
        sign("shh", body.as_bytes(), SignatureEncoding::Base64)
    );
    let payload: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(payload["event"], "GiftCreate");
    assert_eq!(payload["gift"]["transactionId"], "smoke-1");
    assert_eq!(payload["gift"]["giftDate"], "2026-11-26T00:00:00");

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats: Value = client
            .get(url("/_sandbox/orgs/smoke/stats"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if stats["webhooks_sent"] == 1 {
            assert_eq!(stats["transactions_received"], 1);
            assert_eq!(stats["requests"]["POST /api/v2/Gift/Transaction"]["200"], 1);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "webhooks_sent never reached 1: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    handle.stop().await;
    receiver_handle.stop(true).await;
}

#[actix_rt::test]
async fn apply_then_close_applies_and_answers_nothing() {
    // Goal: a scripted apply_then close queues the transaction but sends zero response bytes.
    let handle = sandbox(1).await;
    handle
        .create_org(OrgSpec::new("close", "close-key"))
        .unwrap();
    let client = reqwest::Client::new();
    let script = client
        .post(format!("{}/_sandbox/orgs/close/script", handle.base_url()))
        .json(&json!({"steps": [{"respond": {"apply_then": "close"}}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);

    let body = gift("close-1").to_string();
    let request = format!(
        "POST /api/v2/Gift/Transaction HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer close-key\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(handle.addr()).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("connection closed within 10 s");
    assert!(read.is_ok() || answer.is_empty(), "{read:?}");
    assert!(
        answer.is_empty(),
        "got bytes: {}",
        String::from_utf8_lossy(&answer)
    );

    let stats: Value = client
        .get(format!("{}/_sandbox/orgs/close/stats", handle.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["pending"], 1, "{stats}");
    assert_eq!(
        stats["requests"]["POST /api/v2/Gift/Transaction"]["closed"],
        1
    );
    handle.stop().await;
}
