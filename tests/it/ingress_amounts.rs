//! Malformed amounts in signed Stripe events over loopback (issue 11): `200 rejected`, kept
//! with the reason and alerted — never `200 ignored` as a payment of zero.

use serde_json::json;

use crate::common::{tenant_body, SpawnOptions, TestApp};
use crate::ingress_support::{
    alert_count, count, one_time_charge, post_stripe, stripe_event, stripe_secret, BASIL,
};

#[actix_rt::test]
async fn a_malformed_amount_is_rejected_kept_and_alerted() {
    // Goal: "2500" as a string, a negative and 1e308 each answer 200 rejected naming the amount, raise stripe_event_rejected once per event, and queue nothing; a re-delivery is a duplicate.
    let app = TestApp::spawn(SpawnOptions::default()).await;
    let id = "amounts";
    app.create_tenant(&tenant_body(id)).await;
    let secret = stripe_secret(id);
    for (n, bad) in [json!("2500"), json!(-2500), json!(1e308)]
        .into_iter()
        .enumerate()
    {
        let mut charge = one_time_charge(&format!("bad{n}"), 2500);
        charge["amount_captured"] = bad.clone();
        charge["amount"] = bad;
        let event = stripe_event(&format!("evt_bad{n}"), "charge.succeeded", BASIL, charge);
        let (status, body) = post_stripe(&app, id, &secret, &event).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "rejected", "{body}");
        assert!(
            body["reason"].as_str().unwrap().contains("amount"),
            "{body}"
        );
        let (status, again) = post_stripe(&app, id, &secret, &event).await;
        assert_eq!((status, &again["status"]), (200, &json!("duplicate")));
    }
    assert_eq!(alert_count(&app, id, "stripe_event_rejected").await, 3);
    assert_eq!(count(&app, id, "captured").await, 0, "nothing queued");
}
