//! The lenient Virtuous webhook parser end to end (issue 10): every body shape the API notes
//! allow either confirms its record through the tenant's Inbound actor or is kept with a
//! reason for the operator — never answered 200 and forgotten.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::common::{tenant_body, SpawnOptions, TestApp};
use crate::confirm_support::*;

fn signed(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Each lenient shape, built around one gift of ours.
fn shapes(id: &str, virtuous_id: u64) -> Vec<(&'static str, Value)> {
    let gift = json!({"id": virtuous_id, "transactionSource": "Synthetic", "transactionId": id});
    vec![
        ("`Gift` key", json!({"event": "GiftCreate", "Gift": gift})),
        (
            "PascalCase gift fields",
            json!({"event": "GiftCreate", "gift": {"Id": virtuous_id, "TransactionSource": "Synthetic", "TransactionId": id}}),
        ),
        (
            "`Models` key",
            json!({"event": "GiftCreate", "Models": [{"gift": gift}]}),
        ),
        ("`giftCreate`", json!({"event": "giftCreate", "gift": gift})),
        (
            "`eventType` key",
            json!({"eventType": "GiftCreate", "gift": gift}),
        ),
        (
            "event name per model",
            json!({"models": [{"event": "GiftCreate", "gift": gift}]}),
        ),
        (
            "`0` reversed-gift id",
            json!({"event": "GiftCreate", "gift": {"id": virtuous_id, "transactionSource": "Synthetic",
                   "transactionId": id, "reversedGiftId": 0}}),
        ),
    ]
}

#[actix_rt::test]
async fn every_webhook_shape_confirms_or_is_kept_with_a_reason() {
    // Goal: `Gift`, PascalCase fields, `Models`, `giftCreate`, `eventType`, per-model names and a 0 reversed id each confirm their record; valid JSON that is no event is kept (listed, counted in status and metrics) with its reason.
    let app = TestApp::spawn(SpawnOptions::default()).await;
    let tenant = "shapes";
    app.create_tenant(&tenant_body(tenant)).await;
    let source_ids = submit_synthetic(&app, tenant, "shape_", &[1; 7]).await;
    let secret = format!("vw-secret-{tenant}-webhook");
    let url = format!("{}/hooks/{tenant}/virtuous", app.main_url);
    let post = |body: Value| {
        let client = app.client.clone();
        let url = url.clone();
        let signature = signed(&secret, body.to_string().as_bytes());
        async move {
            let response = client
                .post(url)
                .header("Content-Type", "application/json")
                .header("X-Virtuous-Signature", signature)
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    for (index, source_id) in source_ids.iter().enumerate() {
        let (name, body) = shapes(source_id, 500 + index as u64).swap_remove(index);
        let (status, answer) = post(body).await;
        assert_eq!(status, 200, "{name}: {answer}");
        assert_eq!(answer["confirmed"], 1, "{name}: {answer}");
        assert_eq!(answer["unparsed"], 0, "{name}: {answer}");
        let record = app
            .admin_json(
                reqwest::Method::GET,
                &format!("/v1/tenants/{tenant}/records/gift/synthetic/{source_id}"),
            )
            .await;
        assert_eq!(record["state"], "confirmed", "{name}: {record}");
        assert_eq!(
            record["virtuous_id"],
            (500 + index).to_string(),
            "{name}: {record}"
        );
    }

    let not_an_event = json!({"hello": "world", "gift": {"id": 1}});
    let (status, answer) = post(not_an_event.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["confirmed"].as_u64(), answer["unparsed"].as_u64()),
        (Some(0), Some(1)),
        "{answer}"
    );
    // Kept durably before the 200: listed at once, with its raw JSON and the reason.
    let kept = app
        .admin_json(
            reqwest::Method::GET,
            &format!("/v1/tenants/{tenant}/inbound/unparsed"),
        )
        .await;
    let events = kept["unparsed"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{kept}");
    assert!(
        events[0]["reason"]
            .as_str()
            .unwrap()
            .contains("no event name"),
        "{kept}"
    );
    assert_eq!(
        serde_json::from_str::<Value>(events[0]["raw"].as_str().unwrap()).unwrap(),
        not_an_event
    );
    assert_eq!(kept["kept"], 1, "{kept}");
    let status = app.status(tenant).await;
    assert_eq!(status["inbound"]["unparsed_kept"], 1, "{status}");
    assert_eq!(status["counts"]["confirmed"], 7, "{status}");
    let metrics = app.metrics_text().await;
    assert!(
        metrics
            .lines()
            .any(|line| line.starts_with("steward_inbound_unparsed_total") && line.ends_with(" 1")),
        "{metrics}"
    );
}
