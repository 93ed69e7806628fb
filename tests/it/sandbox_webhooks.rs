//! Sandbox contract: webhook subscriptions, signatures, delivery forms, retries, staff edits (issue 3).

use std::time::Duration;

use serde_json::{json, Value};

use crate::sandbox_support::*;

/// Asserts that `hit` is a JSON POST signed with `secret` in the given encoding.
fn assert_signed(hit: &Hit, secret: &str, hex_encoding: bool) {
    assert_eq!(hit.method, "POST");
    let ct = hit.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("application/json"), "content-type {ct:?}");
    let sig = hit
        .header("x-virtuous-signature")
        .expect("X-Virtuous-Signature header");
    let mac = hmac_sha256(secret, &hit.body);
    let expected = if hex_encoding {
        hex::encode(&mac)
    } else {
        b64(&mac)
    };
    if hex_encoding {
        assert_eq!(
            sig.to_ascii_lowercase(),
            expected,
            "hex signature over the raw body"
        );
    } else {
        assert_eq!(sig, expected, "base64 signature over the raw body");
    }
}

#[actix_rt::test]
async fn webhook_subscription_crud() {
    // Goal: POST /api/Webhook creates (200 + id), GET reads, PUT updates, DELETE removes (then 404);
    // every call is authenticated and counted.
    let sb = start_sandbox().await;
    let org = sb.org(json!({"hourly_limit": 50})).await;
    let id = org
        .subscribe(
            "http://127.0.0.1:9/hook",
            "sec",
            &["giftCreate", "contactUpdate"],
        )
        .await;
    let r = org.get(&format!("/api/Webhook/{id}")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let w = r.json();
    assert_eq!(w["id"], id);
    assert_eq!(w["payloadUrl"], "http://127.0.0.1:9/hook");
    assert_eq!(
        (w["active"].as_bool(), w["giftCreate"].as_bool()),
        (Some(true), Some(true)),
        "{w}"
    );
    assert_eq!(w["contactUpdate"], true);
    assert_ne!(w["giftDelete"], true, "unset flags are off: {w}");
    assert_eq!(r.header_i64("x-ratelimit-remaining"), 48);

    let mut upd = w.clone();
    upd["active"] = json!(false);
    upd["giftUpdate"] = json!(true);
    let r = org.put(&format!("/api/Webhook/{id}"), &upd).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let w = org.get(&format!("/api/Webhook/{id}")).await.json();
    assert_eq!(
        (w["active"].as_bool(), w["giftUpdate"].as_bool()),
        (Some(false), Some(true)),
        "{w}"
    );

    let r = org.delete(&format!("/api/Webhook/{id}")).await;
    assert!(
        r.status == 200 || r.status == 204,
        "delete: {} {}",
        r.status,
        r.text()
    );
    assert_eq!(org.get(&format!("/api/Webhook/{id}")).await.status, 404);
    assert_eq!(org.delete(&format!("/api/Webhook/{id}")).await.status, 404);
    assert_eq!(
        org.put(&format!("/api/Webhook/{id}"), &upd).await.status,
        404
    );
    sb.handle.stop().await;
}

#[actix_rt::test]
async fn single_form_webhooks_are_base64_signed_and_filtered_by_flags() {
    // Goal: an import fires ContactCreate {"event","contact"} and GiftCreate {"event","gift"}
    // (with transaction ids and customFields as an object), each signed Base64 HMAC-SHA256 of the
    // raw body; a subscription only gets the events it switched on; webhooks spend no budget.
    let sb = start_sandbox().await;
    let all = Receiver::start().await;
    let gifts_only = Receiver::start().await;
    let org = sb.org(json!({"hourly_limit": 100})).await;
    org.subscribe(&all.url, "topsecret", &["giftCreate", "contactCreate"])
        .await;
    org.subscribe(&gifts_only.url, "other", &["giftCreate"])
        .await;
    let mut tx = gift_tx("stripe", "wh-1");
    tx["customFields"] = json!({"Campaign": "Spring"});
    org.send_gift(&tx).await;
    let remaining = org.remaining_after_probe().await;
    org.process().await;

    let g = all.wait_events("GiftCreate", 1).await;
    let c = all.wait_events("ContactCreate", 1).await;
    assert_signed(&g[0], "topsecret", false);
    assert_signed(&c[0], "topsecret", false);
    let gift = &g[0].json()["gift"];
    assert_eq!(gift["transactionSource"], "stripe", "{gift}");
    assert_eq!(gift["transactionId"], "wh-1");
    assert!(gift["id"].as_i64().is_some());
    assert_eq!(
        gift["customFields"]["Campaign"], "Spring",
        "webhook customFields is an object: {gift}"
    );
    assert_eq!(c[0].json()["contact"]["id"], gift["contactId"]);

    let only = gifts_only.wait_events("GiftCreate", 1).await;
    assert_signed(&only[0], "other", false);
    tokio::time::sleep(Duration::from_millis(300)).await; // let stray deliveries arrive
    assert_eq!(gifts_only.hits().len(), 1, "{:?}", gifts_only.summary());
    assert_eq!(all.hits().len(), 2, "{:?}", all.summary());
    assert_eq!(
        org.remaining_after_probe().await,
        remaining - 1,
        "webhooks spent budget"
    );
    wait_until(EVENTUALLY, "3 webhook deliveries sent", || async {
        (org.stats().await["webhooks_sent"] == 3).then_some(())
    })
    .await;
    let s = org.stats().await;
    assert!(
        s["webhooks_failed"] == 0,
        "3 deliveries sent, none failed: {s}"
    );
    all.stop().await;
    gifts_only.stop().await;
    sb.handle.stop().await;
}

#[actix_rt::test]
async fn hex_signature_switch() {
    // Goal: with webhook_signature_encoding "hex" the signature is the hex HMAC-SHA256 digest.
    let sb = start_sandbox().await;
    let recv = Receiver::start().await;
    let org = sb.org(json!({"webhook_signature_encoding": "hex"})).await;
    org.subscribe(&recv.url, "hexsecret", &["giftCreate"]).await;
    org.send_gift(&gift_tx("stripe", "hx")).await;
    org.process().await;
    let g = recv.wait_events("GiftCreate", 1).await;
    assert_signed(&g[0], "hexsecret", true);
    recv.stop().await;
    sb.handle.stop().await;
}

#[actix_rt::test]
async fn bulk_form_is_one_post_per_run_per_event() {
    // Goal: with webhook_delivery "bulk" an import run of 3 gifts sends one GiftCreate POST with
    // models[{gift}] x3 and one ContactCreate with models[{contact}] x3, each signed.
    let sb = start_sandbox().await;
    let recv = Receiver::start().await;
    let org = sb.org(json!({"webhook_delivery": "bulk"})).await;
    org.subscribe(&recv.url, "bulk", &["giftCreate", "contactCreate"])
        .await;
    for id in ["k1", "k2", "k3"] {
        org.send_gift(&gift_tx("stripe", id)).await;
    }
    org.process().await;
    recv.wait_events("GiftCreate", 1).await;
    recv.wait_events("ContactCreate", 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(recv.hits().len(), 2, "{:?}", recv.summary());
    let g = recv.events("GiftCreate").remove(0);
    assert_signed(&g, "bulk", false);
    let models = g.json()["models"].as_array().cloned().expect("models[]");
    let mut ids: Vec<_> = models
        .iter()
        .map(|m| m["gift"]["transactionId"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    assert_eq!(ids, ["k1", "k2", "k3"]);
    let c = recv.events("ContactCreate").remove(0).json();
    let cm = c["models"].as_array().expect("contact models[]");
    assert_eq!(cm.len(), 3);
    assert!(
        cm.iter().all(|m| m["contact"]["id"].as_i64().is_some()),
        "{c}"
    );
    sb.handle.stop().await;
}

#[actix_rt::test]
async fn mixed_form_uses_both_single_and_bulk() {
    // Goal: with webhook_delivery "mixed" the deliveries of two import runs use both forms.
    let sb = start_sandbox().await;
    let recv = Receiver::start().await;
    let org = sb.org(json!({"webhook_delivery": "mixed"})).await;
    org.subscribe(&recv.url, "m", &["giftCreate"]).await;
    for run in 0..2 {
        for i in 0..2 {
            org.send_gift(&gift_tx("stripe", &format!("x{run}{i}")))
                .await;
        }
        org.process().await;
    }
    let gift_ids = |h: &Hit| -> Vec<String> {
        let v = h.json();
        if let Some(models) = v["models"].as_array() {
            models
                .iter()
                .map(|m| m["gift"]["transactionId"].as_str().unwrap().to_string())
                .collect()
        } else {
            vec![v["gift"]["transactionId"].as_str().unwrap().to_string()]
        }
    };
    let what = at_timeout(|| format!("4 gifts delivered, got {:?}", recv.summary()));
    wait_until(EVENTUALLY, what, || async {
        let gifts = recv
            .hits()
            .iter()
            .map(gift_ids)
            .map(|v| v.len())
            .sum::<usize>();
        (gifts >= 4).then_some(())
    })
    .await;
    let hits = recv.hits();
    assert!(
        hits.iter().any(|h| h.json().get("gift").is_some()),
        "no single form: {:?}",
        recv.summary()
    );
    assert!(
        hits.iter().any(|h| h.json().get("models").is_some()),
        "no bulk form: {:?}",
        recv.summary()
    );
    let mut all: Vec<String> = hits.iter().flat_map(gift_ids).collect();
    all.sort();
    assert_eq!(
        all,
        ["x00", "x01", "x10", "x11"],
        "each gift delivered exactly once"
    );
    sb.handle.stop().await;
}

#[actix_rt::test]
async fn webhook_gift_without_transaction_ids_when_switched_off() {
    // Goal: with webhook_includes_transaction_ids false the webhook gift has no transaction ids,
    // while the API read still has them.
    let sb = start_sandbox().await;
    let recv = Receiver::start().await;
    let org = sb
        .org(json!({"webhook_includes_transaction_ids": false}))
        .await;
    org.subscribe(&recv.url, "s", &["giftCreate"]).await;
    org.send_gift(&gift_tx("stripe", "noid")).await;
    org.process().await;
    let g = recv.wait_events("GiftCreate", 1).await[0].json();
    let gift = &g["gift"];
    assert!(
        gift["transactionSource"].is_null() && gift["transactionId"].is_null(),
        "{gift}"
    );
    assert!(gift["id"].as_i64().is_some());
    assert_eq!(
        org.get("/api/Gift/stripe/noid").await.json()["transactionId"],
        "noid"
    );
    sb.handle.stop().await;
}

#[actix_rt::test]
async fn failed_deliveries_are_retried_then_counted() {
    // Goal: a delivery answered 500 is retried (up to 3 more times) with the same signed body;
    // success after 2 failures counts webhooks_sent, 4 failures count webhooks_failed.
    let sb = start_sandbox().await;
    let recv = Receiver::start().await;
    let org = sb.org(json!({})).await;
    org.subscribe(&recv.url, "retry", &["giftCreate"]).await;
    recv.fail_next(2);
    org.send_gift(&gift_tx("stripe", "r1")).await;
    org.process().await;
    let hits = recv.wait_hits(3).await;
    assert!(
        hits.iter().all(|h| h.body == hits[0].body),
        "retries must resend the same body"
    );
    assert_signed(&hits[2], "retry", false);
    assert!(
        hits[1].at.duration_since(hits[0].at) >= Duration::from_millis(80),
        "no backoff"
    );
    wait_until(EVENTUALLY, "1 webhook delivery sent", || async {
        (org.stats().await["webhooks_sent"] == 1).then_some(())
    })
    .await;

    recv.fail_next(4);
    org.send_gift(&gift_tx("stripe", "r2")).await;
    org.process().await;
    wait_until(EVENTUALLY, "1 webhook delivery failed", || async {
        (org.stats().await["webhooks_failed"] == 1).then_some(())
    })
    .await;
    assert_eq!(
        recv.hits().len(),
        3 + 4,
        "1 try + 3 retries: {:?}",
        recv.summary()
    );
    assert_eq!(org.stats().await["webhooks_sent"], 1);
    sb.handle.stop().await;
}

#[actix_rt::test]
async fn inactive_subscription_gets_nothing() {
    // Goal: events for an inactive subscription are dropped.
    let sb = start_sandbox().await;
    let recv = Receiver::start().await;
    let live = Receiver::start().await;
    let org = sb.org(json!({})).await;
    let id = org.subscribe(&recv.url, "s", &["giftCreate"]).await;
    org.subscribe(&live.url, "s", &["giftCreate"]).await;
    let mut w = org.get(&format!("/api/Webhook/{id}")).await.json();
    w["active"] = json!(false);
    assert_eq!(org.put(&format!("/api/Webhook/{id}"), &w).await.status, 200);
    org.send_gift(&gift_tx("stripe", "in-1")).await;
    org.process().await;
    live.wait_events("GiftCreate", 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(recv.hits().is_empty(), "{:?}", recv.summary());
    sb.handle.stop().await;
}

async fn staff_edit(org: &Org, kind: &str, id: &Value, changes: Value) -> Resp {
    let body = json!({"kind": kind, "id": id, "changes": changes});
    org.control("POST", "/staff-edit", Some(&body)).await
}

#[actix_rt::test]
async fn staff_edits_fire_update_webhooks_without_spending_budget() {
    // Goal: staff-edit on a contact and a gift returns the updated record, fires ContactUpdate and
    // GiftUpdate, leaves X-RateLimit-Remaining unchanged, and answers 404 for an unknown record.
    let sb = start_sandbox().await;
    let recv = Receiver::start().await;
    let org = sb.org(json!({"hourly_limit": 100})).await;
    org.subscribe(&recv.url, "staff", &["contactUpdate", "giftUpdate"])
        .await;
    org.send_gift(&gift_tx("stripe", "se-1")).await;
    org.process().await;
    let gift = org.get("/api/Gift/stripe/se-1").await.json();
    let before = org.remaining_after_probe().await;
    let calls_before = org.stats().await["rate_window_calls"].clone();

    let r = staff_edit(
        &org,
        "contact",
        &gift["contactId"],
        json!({"name": "Edited By Staff"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["name"], "Edited By Staff");
    let r = staff_edit(&org, "gift", &gift["id"], json!({"amount": 99.5})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(amount_of(&r.json()["amount"]), 99.5);

    let c = recv.wait_events("ContactUpdate", 1).await;
    assert_signed(&c[0], "staff", false);
    assert_eq!(c[0].json()["contact"]["name"], "Edited By Staff");
    let g = recv.wait_events("GiftUpdate", 1).await;
    assert_eq!(g[0].json()["gift"]["id"], gift["id"]);
    assert_eq!(amount_of(&g[0].json()["gift"]["amount"]), 99.5);
    assert_eq!(org.stats().await["rate_window_calls"], calls_before);
    assert_eq!(
        org.remaining_after_probe().await,
        before - 1,
        "staff edits spent budget"
    );
    let read = org.get(&format!("/api/Gift/{}", gift["id"])).await.json();
    assert_eq!(amount_of(&read["amount"]), 99.5);

    assert_eq!(
        staff_edit(&org, "gift", &json!(4242), json!({"amount": 1}))
            .await
            .status,
        404
    );
    assert_eq!(
        staff_edit(&org, "contact", &json!(4242), json!({"name": "x"}))
            .await
            .status,
        404
    );
    sb.handle.stop().await;
}
