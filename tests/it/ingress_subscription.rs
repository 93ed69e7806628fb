//! One subscription payment delivered as invoice.paid + invoice_payment.paid +
//! payment_intent.succeeded + charge.succeeded, in all 24 orders, on both API-version shapes:
//! exactly one gift entry per payment, in its recurring form, ready (never left held).

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{tenant_body, SpawnOptions, TestApp};
use crate::ingress_support::{
    live_entries, now_ms, now_s, patched, post_stripe, stripe_event, stripe_secret, BASIL, LEGACY,
};

const TENANT: &str = "ing-sub";

/// The four events of subscription payment `tag` in the era's shape, keyed by a short name.
pub fn subscription_events(tag: &str, basil: bool) -> Vec<(&'static str, Value)> {
    let version = if basil { BASIL } else { LEGACY };
    let (pi, ch, invoice_id, sub) = (
        format!("pi_{tag}"),
        format!("ch_{tag}"),
        format!("in_{tag}"),
        format!("sub_{tag}"),
    );
    let lines = json!({"data": [{"id": format!("il_{tag}"), "amount": 2000, "currency": "usd",
        "period": {"start": now_s(), "end": now_s() + 30 * 86_400},
        "price": {"id": "price_1", "recurring": {"interval": "month", "interval_count": 1}}}]});
    let mut invoice = patched(
        "invoice",
        json!({"id": invoice_id, "amount_paid": 2000, "currency": "usd", "status": "paid",
               "billing_reason": "subscription_create", "customer": format!("cus_{tag}"),
               "customer_email": format!("sam{tag}@example.org"), "customer_name": "Sam Donor",
               "livemode": true, "lines": lines,
               "status_transitions": {"paid_at": now_s(), "finalized_at": now_s(),
                   "marked_uncollectible_at": null, "voided_at": null}}),
    );
    let mut intent = patched(
        "payment_intent",
        json!({"id": pi, "amount": 2000, "amount_received": 2000, "status": "succeeded",
               "currency": "usd", "created": now_s(), "customer": format!("cus_{tag}"),
               "description": "Subscription creation", "latest_charge": ch, "livemode": true}),
    );
    let mut charge = patched(
        "charge",
        json!({"id": ch, "amount": 2000, "amount_captured": 2000, "captured": true,
               "currency": "usd", "created": now_s(), "customer": format!("cus_{tag}"),
               "payment_intent": pi, "description": "Subscription creation", "livemode": true}),
    );
    if basil {
        invoice["parent"] = json!({"type": "subscription_details",
            "subscription_details": {"metadata": {}, "subscription": sub}});
        invoice.as_object_mut().unwrap().remove("subscription");
    } else {
        invoice["payment_intent"] = json!(pi);
        invoice["charge"] = json!(ch);
        invoice["subscription"] = json!(sub);
        invoice["parent"] = Value::Null;
        intent["invoice"] = json!(invoice_id);
        charge["invoice"] = json!(invoice_id);
    }
    let invoice_payment = patched(
        "invoice_payment",
        json!({"id": format!("inpay_{tag}"), "invoice": invoice_id, "livemode": true,
               "currency": "usd", "amount_paid": 2000,
               "payment": {"type": "payment_intent", "payment_intent": pi}}),
    );
    vec![
        (
            "inv",
            stripe_event(&format!("evt_{tag}_inv"), "invoice.paid", version, invoice),
        ),
        (
            "inpay",
            stripe_event(
                &format!("evt_{tag}_inpay"),
                "invoice_payment.paid",
                version,
                invoice_payment,
            ),
        ),
        (
            "pi",
            stripe_event(
                &format!("evt_{tag}_pi"),
                "payment_intent.succeeded",
                version,
                intent,
            ),
        ),
        (
            "ch",
            stripe_event(
                &format!("evt_{tag}_ch"),
                "charge.succeeded",
                version,
                charge,
            ),
        ),
    ]
}

/// Every ordering of `0..n` (24 for n = 4).
fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![Vec::new()];
    }
    let mut all = Vec::new();
    for shorter in permutations(n - 1) {
        for position in 0..=shorter.len() {
            let mut order = shorter.clone();
            order.insert(position, n - 1);
            all.push(order);
        }
    }
    all
}

#[tokio::test]
async fn every_order_of_a_subscription_payments_events_makes_one_recurring_gift() {
    // Goal: 24 orders × 2 API shapes → 48 gift entries, one per payment, each recurring
    // (recurringGiftTransactionId = its subscription, frequency on the first payment), ready.
    let orders = permutations(4);
    assert_eq!(orders.len(), 24);
    let app_options = SpawnOptions::default();
    let mut app = TestApp::spawn(app_options).await;
    app.create_tenant(&tenant_body(TENANT)).await;
    // Paused: the queue keeps what the ingress wrote, whatever the submitter does.
    let response = app
        .admin(Method::POST, &format!("/v1/tenants/{TENANT}/pause"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let secret = stripe_secret(TENANT);
    let mut tags = Vec::new();
    for basil in [false, true] {
        for (index, order) in orders.iter().enumerate() {
            let tag = format!("{}{index}", if basil { "b" } else { "l" });
            let events = subscription_events(&tag, basil);
            for &position in order {
                let (name, event) = &events[position];
                let (status, answer) = post_stripe(&app, TENANT, &secret, event).await;
                assert!(
                    (status == 200 || status == 202)
                        && !["rejected", "alerted"]
                            .contains(&answer["status"].as_str().unwrap_or("")),
                    "{tag} order {order:?}, event {name}: {status} {answer}"
                );
            }
            tags.push(tag);
        }
    }
    let status = app.status(TENANT).await;
    assert_eq!(status["counts"]["captured"], 48, "{status}");
    assert_eq!(status["lanes"]["live"]["depth"], 48, "{status}");
    let ingress_alerts: Vec<&Value> = status["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|alert| {
            ["subscription_link_late", "stripe_event_rejected"]
                .contains(&alert["code"].as_str().unwrap_or(""))
        })
        .collect();
    assert!(ingress_alerts.is_empty(), "{status}");

    app.terminate();
    let checked_at_ms = now_ms();
    let entries = live_entries(&app.data_dir(), TENANT);
    assert_eq!(entries.len(), 48);
    for tag in &tags {
        let gifts: Vec<_> = entries
            .iter()
            .filter(|entry| entry.fact.source_id == format!("pi_{tag}"))
            .collect();
        assert_eq!(gifts.len(), 1, "{tag}: {gifts:?}");
        let gift = gifts[0];
        assert_eq!(gift.fact.idempotency_key, format!("stripe:gift:pi_{tag}"));
        assert!(
            gift.not_before_ms <= checked_at_ms,
            "{tag}: still held until {} (checked at {checked_at_ms})",
            gift.not_before_ms
        );
        let body: Value = serde_json::from_str(&gift.fact.body_json).unwrap();
        assert_eq!(body["transactionId"], format!("pi_{tag}"), "{tag}: {body}");
        assert_eq!(
            body["recurringGiftTransactionId"],
            format!("sub_{tag}"),
            "{tag}: {body}"
        );
        assert_eq!(body["frequency"], "Monthly", "{tag}: {body}");
        assert_eq!(body["amount"], "20.00", "{tag}: {body}");
    }
    assert!(
        entries
            .iter()
            .all(|entry| entry.fact.source_id.starts_with("pi_")),
        "an entry keyed by something other than the PaymentIntent"
    );
}

#[tokio::test]
async fn a_held_payment_and_a_link_part_survive_a_crash() {
    // Goal: ack after durable for holds and links: after SIGKILL the held entry and the stored
    // link part are still there, and the last part releases the payment in recurring form.
    let mut app = TestApp::spawn(SpawnOptions::default()).await;
    app.create_tenant(&tenant_body(TENANT)).await;
    let response = app
        .admin(Method::POST, &format!("/v1/tenants/{TENANT}/pause"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let secret = stripe_secret(TENANT);
    let events = subscription_events("crash", true);
    let event = |name: &str| events.iter().find(|(n, _)| *n == name).unwrap().1.clone();
    let held = post_stripe(&app, TENANT, &secret, &event("pi")).await;
    assert_eq!(
        (held.0, held.1["status"].clone()),
        (202, json!("held")),
        "{held:?}"
    );
    let part = post_stripe(&app, TENANT, &secret, &event("inv")).await;
    assert_eq!(part.1["status"], "linked", "{part:?}");
    assert_eq!(part.1["complete"], false, "{part:?}");

    app.kill9();
    app.start().await;
    let done = post_stripe(&app, TENANT, &secret, &event("inpay")).await;
    assert_eq!(done.1["status"], "linked", "{done:?}");
    assert_eq!(done.1["released"], true, "{done:?}");
    let again = post_stripe(&app, TENANT, &secret, &event("ch")).await;
    assert_eq!(again.1["status"], "duplicate", "{again:?}");
    app.terminate();

    let entries = live_entries(&app.data_dir(), TENANT);
    assert_eq!(entries.len(), 1, "{entries:?}");
    let body: Value = serde_json::from_str(&entries[0].fact.body_json).unwrap();
    assert_eq!(body["recurringGiftTransactionId"], "sub_crash", "{body}");
    assert!(entries[0].not_before_ms <= now_ms());
}
