//! The Stripe webhook route end to end: every bad input gets its code and queues nothing;
//! payments queue once; re-deliveries, ignored types, alerts and rotations answer as documented.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use steward::sources::stripe::sign_header;

use crate::common::{tenant_body, wait_until, SpawnOptions, TestApp};
use crate::ingress_support::{
    alert_count, count, now_s, one_time_charge, patched, post_stripe, post_stripe_raw,
    stripe_event, stripe_secret, BASIL,
};

fn assert_error(answer: &(u16, Value), status: u16, code: &str) {
    assert_eq!(answer.0, status, "{answer:?}");
    assert_eq!(answer.1["error"]["code"], code, "{answer:?}");
    assert!(answer.1["error"]["message"].is_string(), "{answer:?}");
}

#[tokio::test]
async fn bad_input_is_refused_with_its_code_and_queues_nothing() {
    // Goal: bad signature, missing header, stale timestamp, malformed JSON or envelope,
    // unknown tenant and oversized body each get their code, and nothing is captured.
    let app = TestApp::spawn(SpawnOptions::default()).await;
    app.create_tenant(&tenant_body("ing-bad")).await;
    let secret = stripe_secret("ing-bad");
    let event = stripe_event(
        "evt_bad_1",
        "charge.succeeded",
        BASIL,
        one_time_charge("bad1", 1500),
    );
    let body = event.to_string().into_bytes();

    let wrong = sign_header("whsec_wrong", now_s(), &body);
    assert_error(
        &post_stripe_raw(&app, "ing-bad", Some(wrong), body.clone()).await,
        401,
        "bad_signature",
    );
    assert_error(
        &post_stripe_raw(&app, "ing-bad", None, body.clone()).await,
        401,
        "bad_signature",
    );
    let garbled = "t=abc,v1=00".to_string();
    assert_error(
        &post_stripe_raw(&app, "ing-bad", Some(garbled), body.clone()).await,
        401,
        "bad_signature",
    );
    let stale = sign_header(&secret, now_s() - 1_000, &body);
    assert_error(
        &post_stripe_raw(&app, "ing-bad", Some(stale), body.clone()).await,
        401,
        "stale_timestamp",
    );
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    let signed_for_original = sign_header(&secret, now_s(), &body);
    assert_error(
        &post_stripe_raw(&app, "ing-bad", Some(signed_for_original), tampered).await,
        401,
        "bad_signature",
    );

    let not_json = b"{\"id\": \"evt_x\", ".to_vec();
    let signature = sign_header(&secret, now_s(), &not_json);
    assert_error(
        &post_stripe_raw(&app, "ing-bad", Some(signature), not_json).await,
        400,
        "malformed_body",
    );
    let no_object =
        json!({"id": "evt_y", "type": "charge.succeeded", "created": now_s(), "livemode": true});
    assert_error(
        &post_stripe(&app, "ing-bad", &secret, &no_object).await,
        400,
        "malformed_body",
    );

    assert_error(
        &post_stripe(&app, "no-such-tenant", &secret, &event).await,
        404,
        "unknown_tenant",
    );

    let mut oversized = event.clone();
    oversized["data"]["object"]["metadata"] = json!({"padding": "x".repeat(1_100_000)});
    assert_error(
        &post_stripe(&app, "ing-bad", &secret, &oversized).await,
        413,
        "payload_too_large",
    );

    // A wrong method on a webhook route: 405 with the JSON error and `Allow: POST`.
    for path in [
        "/hooks/ing-bad/stripe",
        "/hooks/ing-bad/platform/givebutter",
        "/hooks/ing-bad/virtuous",
    ] {
        let response = app
            .client
            .get(format!("{}{path}", app.main_url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405, "GET {path}");
        assert_eq!(response.headers()["allow"], "POST", "GET {path}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(
            body["error"]["code"], "method_not_allowed",
            "GET {path}: {body}"
        );
    }

    let status = app.status("ing-bad").await;
    assert_eq!(status["counts"]["captured"], 0, "{status}");
    assert_eq!(status["counts"]["duplicates"], 0, "{status}");
    assert_eq!(status["lanes"]["live"]["depth"], 0, "{status}");
    // The same event, correctly signed, is accepted: the refusals were about the input.
    let accepted = post_stripe(&app, "ing-bad", &secret, &event).await;
    assert_eq!(accepted.0, 202, "{accepted:?}");
    assert_eq!(count(&app, "ing-bad", "captured").await, 1);
}

#[tokio::test]
async fn a_payment_is_queued_once_whichever_event_and_however_often_it_arrives() {
    // Goal: 202 only for the first event of a payment; re-deliveries and the other event of
    // the same payment are 200 duplicates; unknown types are 200 ignored and counted.
    let app = TestApp::spawn(SpawnOptions::default()).await;
    app.create_tenant(&tenant_body("ing-once")).await;
    let secret = stripe_secret("ing-once");
    let charge = stripe_event(
        "evt_once_1",
        "charge.succeeded",
        BASIL,
        one_time_charge("once", 2500),
    );
    let first = post_stripe(&app, "ing-once", &secret, &charge).await;
    assert_eq!(first.0, 202, "{first:?}");
    assert_eq!(first.1["status"], "queued");
    assert_eq!(first.1["queued"], 1);
    assert_eq!(count(&app, "ing-once", "captured").await, 1);

    let again = post_stripe(&app, "ing-once", &secret, &charge).await;
    assert_eq!(
        (again.0, again.1["status"].clone()),
        (200, json!("duplicate")),
        "{again:?}"
    );
    let intent = patched(
        "payment_intent",
        json!({"id": "pi_once", "amount": 2500, "amount_received": 2500, "currency": "usd",
               "status": "succeeded", "latest_charge": "ch_once", "livemode": true,
               "description": "Spring appeal", "receipt_email": "donoronce@example.org",
               "created": now_s()}),
    );
    let intent_event = stripe_event("evt_once_2", "payment_intent.succeeded", BASIL, intent);
    let other = post_stripe(&app, "ing-once", &secret, &intent_event).await;
    assert_eq!(
        (other.0, other.1["status"].clone()),
        (200, json!("duplicate")),
        "{other:?}"
    );

    let unknown = stripe_event(
        "evt_once_3",
        "payout.paid",
        BASIL,
        json!({"id": "po_1", "object": "payout"}),
    );
    let ignored = post_stripe(&app, "ing-once", &secret, &unknown).await;
    assert_eq!(
        (ignored.0, ignored.1["status"].clone()),
        (200, json!("ignored")),
        "{ignored:?}"
    );

    let status = app.status("ing-once").await;
    assert_eq!(status["counts"]["captured"], 1, "{status}");
    assert_eq!(status["counts"]["duplicates"], 2, "{status}");
    let metrics = app.metrics_text().await;
    for outcome in ["queued", "duplicate", "ignored"] {
        let line =
            format!("steward_ingress_requests_total{{source=\"stripe\",outcome=\"{outcome}\"}}");
        assert!(metrics.contains(&line), "missing {line} in\n{metrics}");
    }
    let ignored = "steward_ingress_ignored_total{source=\"stripe\",reason=\"unhandled_type\"} 1";
    assert!(metrics.contains(ignored), "missing {ignored} in\n{metrics}");
}

#[tokio::test]
async fn both_secrets_are_accepted_during_a_rotation_and_only_the_new_one_after() {
    // Goal: with previous_signing_secret set either secret verifies; cleared, the old fails.
    let app = TestApp::spawn(SpawnOptions::default()).await;
    app.create_tenant(&tenant_body("ing-rot")).await;
    let old = stripe_secret("ing-rot");
    let new = "whsec_rotated_new_secret".to_string();
    let patch =
        json!({"sources": {"stripe": {"signing_secret": new, "previous_signing_secret": old}}});
    let response = app
        .admin(Method::PATCH, "/v1/tenants/ing-rot")
        .json(&patch)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let by_old = stripe_event(
        "evt_rot_1",
        "charge.succeeded",
        BASIL,
        one_time_charge("rot1", 100),
    );
    assert_eq!(post_stripe(&app, "ing-rot", &old, &by_old).await.0, 202);
    let by_new = stripe_event(
        "evt_rot_2",
        "charge.succeeded",
        BASIL,
        one_time_charge("rot2", 100),
    );
    assert_eq!(post_stripe(&app, "ing-rot", &new, &by_new).await.0, 202);

    let finish = json!({"sources": {"stripe": {"previous_signing_secret": null}}});
    let response = app
        .admin(Method::PATCH, "/v1/tenants/ing-rot")
        .json(&finish)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let late_old = stripe_event(
        "evt_rot_3",
        "charge.succeeded",
        BASIL,
        one_time_charge("rot3", 100),
    );
    assert_error(
        &post_stripe(&app, "ing-rot", &old, &late_old).await,
        401,
        "bad_signature",
    );
    assert_eq!(post_stripe(&app, "ing-rot", &new, &late_old).await.0, 202);
    assert_eq!(count(&app, "ing-rot", "captured").await, 3);
}

#[tokio::test]
async fn alerts_and_rejections_are_raised_once_per_event() {
    // Goal: a partial refund alerts (200), a charge without any donor is rejected (200 +
    // alert); re-deliveries answer duplicate and leave the alert counts at 1; nothing queued.
    let app = TestApp::spawn(SpawnOptions::default()).await;
    app.create_tenant(&tenant_body("ing-alert")).await;
    let secret = stripe_secret("ing-alert");
    let mut refunded = one_time_charge("ref", 1000);
    refunded["amount_refunded"] = json!(300);
    let partial = stripe_event("evt_alert_1", "charge.refunded", BASIL, refunded);
    let first = post_stripe(&app, "ing-alert", &secret, &partial).await;
    assert_eq!(
        (first.0, first.1["status"].clone()),
        (200, json!("alerted")),
        "{first:?}"
    );
    let again = post_stripe(&app, "ing-alert", &secret, &partial).await;
    assert_eq!(
        (again.0, again.1["status"].clone()),
        (200, json!("duplicate")),
        "{again:?}"
    );
    assert_eq!(
        alert_count(&app, "ing-alert", "stripe_partial_refund").await,
        1
    );

    let mut anonymous = one_time_charge("anon", 1000);
    anonymous["receipt_email"] = Value::Null;
    anonymous["customer"] = Value::Null;
    anonymous["billing_details"] =
        json!({"address": null, "email": null, "name": null, "phone": null});
    let rejected_event = stripe_event("evt_alert_2", "charge.succeeded", BASIL, anonymous);
    let rejected = post_stripe(&app, "ing-alert", &secret, &rejected_event).await;
    assert_eq!(
        (rejected.0, rejected.1["status"].clone()),
        (200, json!("rejected")),
        "{rejected:?}"
    );
    assert!(
        rejected.1["reason"].as_str().unwrap().contains("donor"),
        "{rejected:?}"
    );
    let again = post_stripe(&app, "ing-alert", &secret, &rejected_event).await;
    assert_eq!(
        (again.0, again.1["status"].clone()),
        (200, json!("duplicate")),
        "{again:?}"
    );
    assert_eq!(
        alert_count(&app, "ing-alert", "stripe_event_rejected").await,
        1
    );
    assert_eq!(count(&app, "ing-alert", "captured").await, 0);
}

#[tokio::test]
async fn test_mode_events_are_ignored_unless_the_tenant_accepts_them() {
    // Goal: livemode false → 200 ignored with accept_test_events off, 202 with it on.
    let app = TestApp::spawn(SpawnOptions::default()).await;
    let mut strict = tenant_body("ing-live");
    strict["sources"]["stripe"]["accept_test_events"] = json!(false);
    app.create_tenant(&strict).await;
    app.create_tenant(&tenant_body("ing-test")).await;
    let mut event = stripe_event(
        "evt_test_1",
        "charge.succeeded",
        BASIL,
        one_time_charge("tm", 500),
    );
    event["livemode"] = json!(false);
    let ignored = post_stripe(&app, "ing-live", &stripe_secret("ing-live"), &event).await;
    assert_eq!(
        (ignored.0, ignored.1["status"].clone()),
        (200, json!("ignored")),
        "{ignored:?}"
    );
    assert_eq!(count(&app, "ing-live", "captured").await, 0);
    let accepted = post_stripe(&app, "ing-test", &stripe_secret("ing-test"), &event).await;
    assert_eq!(accepted.0, 202, "{accepted:?}");
}

#[tokio::test]
async fn a_full_capture_mailbox_answers_503_with_retry_after_and_queues_nothing() {
    // Goal: back-pressure: with Capture stalled and its mailbox (capacity 1) full, a delivery
    // gets 503 `unavailable` + Retry-After at once; every answered event is queued iff 202.
    let app = TestApp::spawn(SpawnOptions {
        env: vec![
            ("STEWARD_RUNTIME__MAILBOX_CAPACITY".into(), "1".into()),
            ("STEWARD_RUNTIME__HEARTBEAT_MS".into(), "2000".into()),
            (
                "STEWARD_RUNTIME__RESTART_BACKOFF_INITIAL_MS".into(),
                "50".into(),
            ),
        ],
        ..SpawnOptions::default()
    })
    .await;
    app.create_tenant(&tenant_body("ing-busy")).await;
    let secret = stripe_secret("ing-busy");
    let response = app
        .admin(
            Method::POST,
            "/v1/tenants/ing-busy/_test/kill/capture?mode=stall",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    wait_until(Duration::from_secs(10), "capture stalled", || async {
        let status = app.status("ing-busy").await;
        (status["actors"]["capture"]["observed"]["stalled_by_test_hook"] == true).then_some(())
    })
    .await;
    let waiting_event = stripe_event(
        "evt_busy_1",
        "charge.succeeded",
        BASIL,
        one_time_charge("busy1", 700),
    );
    let waiting = {
        let app_client = app.client.clone();
        let url = format!("{}/hooks/ing-busy/stripe", app.main_url);
        let body = waiting_event.to_string().into_bytes();
        let signature = sign_header(&secret, now_s(), &body);
        tokio::spawn(async move {
            let response = app_client
                .post(url)
                .header("Stripe-Signature", signature)
                .body(body)
                .send()
                .await
                .unwrap();
            response.status().as_u16()
        })
    };
    wait_until(
        Duration::from_secs(10),
        "the stalled capture's mailbox to fill",
        || async {
            let status = app.status("ing-busy").await;
            (status["actors"]["capture"]["mailbox_depth"] == 1).then_some(())
        },
    )
    .await;
    let refused_event = stripe_event(
        "evt_busy_2",
        "charge.succeeded",
        BASIL,
        one_time_charge("busy2", 700),
    );
    let body = refused_event.to_string().into_bytes();
    let signature = sign_header(&secret, now_s(), &body);
    let response = app
        .client
        .post(format!("{}/hooks/ing-busy/stripe", app.main_url))
        .header("Stripe-Signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "unavailable", "{error}");

    // The waiting delivery is answered once the stalled child is replaced (202 or 503).
    let waiting_status = waiting.await.unwrap();
    assert!([202, 503].contains(&waiting_status), "{waiting_status}");
    let expected_captured = u64::from(waiting_status == 202);
    assert_eq!(count(&app, "ing-busy", "captured").await, expected_captured);
    // Retried after the replacement, the refused event is accepted.
    let retried = wait_until(Duration::from_secs(10), "capture back", || async {
        let answer = post_stripe(&app, "ing-busy", &secret, &refused_event).await;
        (answer.0 == 202).then_some(answer)
    })
    .await;
    assert_eq!(retried.1["status"], "queued");
    assert_eq!(
        count(&app, "ing-busy", "captured").await,
        expected_captured + 1
    );
}
