//! Partner webhooks over real loopback HTTP: one signed event per change (ours included),
//! in order; none for unchanged writes and quiet seeding; the drop switch; failed deliveries.

use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;

use super::smoke_tests::{Client, TOKEN};
use super::PartnerSpec;
use crate::test_support::{sandbox, webhook_receiver};

/// A webhook POST: its `X-Signature` and body.
#[derive(Debug)]
struct Hook {
    signature: String,
    body: Vec<u8>,
}

impl Hook {
    fn event(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[actix_rt::test]
async fn every_change_fires_a_signed_webhook_in_order_and_quiet_seeding_none() {
    // Goal: API writes and user edits each fire one event (created / updated), in the order
    // made, signed with hex HMAC-SHA256 of the raw body; unchanged writes and quiet seeding
    // fire nothing; the drop switch drops its share (listed); a dead receiver's events are
    // given up after retries and counted as dropped.
    let (hook_url, mut hooks, receiver) = webhook_receiver(|request, body| Hook {
        signature: request
            .headers()
            .get("x-signature")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        body: body.to_vec(),
    });
    let handle = sandbox(1).await;
    let client = Client::new(&handle, "crm");
    handle
        .create_partner(PartnerSpec::new("crm", TOKEN).with_webhook(&hook_url, "s3cret"))
        .unwrap();
    handle
        .put_partner_contacts("crm", vec![json!({"id": "seed", "first_name": "S"})], true)
        .unwrap();
    client
        .api(Method::PUT, "/contacts/a", Some(json!({"first_name": "A"})))
        .await;
    client
        .api(Method::PUT, "/contacts/a", Some(json!({"first_name": "A"})))
        .await;
    let edits: Vec<Value> = (1..=20)
        .map(|n| json!({"id": "a", "changes": {"last_name": format!("L{n}")}}))
        .collect();
    let (status, _) = client.control(Method::POST, "/edits", json!(edits)).await;
    assert_eq!(status, 200);
    let (status, _) = client
        .control(Method::PATCH, "/contacts/seed", json!({"tags": ["vip"]}))
        .await;
    assert_eq!(status, 200);
    let (status, _) = client
        .control(
            Method::POST,
            "/edits",
            json!([{"id": "nope", "changes": {}}]),
        )
        .await;
    assert_eq!(status, 404);
    client.webhooks_reach("sent", 22).await;

    let received: Vec<Hook> = (0..22).map(|_| hooks.try_recv().unwrap()).collect();
    assert!(
        hooks.try_recv().is_err(),
        "nothing more: {:?}",
        hooks.try_recv()
    );
    for hook in &received {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(&hook.body);
        assert_eq!(hook.signature, hex::encode(mac.finalize().into_bytes()));
    }
    let events: Vec<Value> = received.iter().map(Hook::event).collect();
    assert_eq!(
        (
            events[0]["type"].as_str(),
            events[0]["data"]["updated_by"].as_str()
        ),
        (Some("contact.created"), Some("api"))
    );
    let versions: Vec<u64> = events[..21]
        .iter()
        .map(|event| event["data"]["version"].as_u64().unwrap())
        .collect();
    assert_eq!(
        versions,
        (1..=21).collect::<Vec<_>>(),
        "in order, one per change"
    );
    assert_eq!(
        (
            events[20]["data"]["last_name"].as_str(),
            events[20]["data"]["updated_by"].as_str()
        ),
        (Some("L20"), Some("user"))
    );
    assert_eq!(
        (
            events[21]["type"].as_str(),
            events[21]["data"]["id"].as_str(),
            events[21]["id"].as_str()
        ),
        (Some("contact.updated"), Some("seed"), Some("evt_22"))
    );
    assert_eq!(events[21]["created_at"], events[21]["data"]["updated_at"]);

    client
        .control(Method::PUT, "/switches", json!({"webhook_drop_pct": 100}))
        .await;
    handle
        .edit_partner_contact("crm", "a", json!({"first_name": "B"}))
        .unwrap();
    client
        .control(Method::PUT, "/switches", json!({"webhook_drop_pct": 0}))
        .await;
    let (status, _) = client
        .control(
            Method::PUT,
            "/webhook",
            json!({"url": "http://127.0.0.1:1/dead"}),
        )
        .await;
    assert_eq!(status, 200);
    client
        .api(Method::PUT, "/contacts/a", Some(json!({"first_name": "C"})))
        .await;
    let stats = client.webhooks_reach("failed", 1).await;
    assert_eq!(
        stats["webhooks"],
        json!({"fired": 23, "sent": 22, "failed": 1, "dropped": 2})
    );
    let (_, dropped) = client
        .control(Method::GET, "/webhooks/dropped", Value::Null)
        .await;
    assert_eq!(
        dropped["events"],
        json!([
        {"id": "evt_23", "type": "contact.updated", "contact_id": "a", "version": 22, "reason": "drop_pct"},
        {"id": "evt_24", "type": "contact.updated", "contact_id": "a", "version": 23, "reason": "failed"}])
    );
    handle.stop().await;
    receiver.stop(true).await;
}
