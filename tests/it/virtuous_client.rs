//! The Virtuous client against the sandbox on loopback: every answer reduced to facts that
//! classify as the outcome table (`steward_actors::outcome`) says, rate-limit headers read, lookups and queries decoded.

use std::time::Duration;

use secrecy::SecretString;
use serde_json::{json, Value};
use steward::virtuous::{CallResult, VirtuousClient};
use steward_actors::outcome::{BatchOutcome, ConnectionErrorKind, Outcome};

use crate::sandbox_support::*;

fn client_for(base: &str, key: &str, timeout: Duration) -> VirtuousClient {
    let http = VirtuousClient::http_client().expect("http client");
    VirtuousClient::new(http, base, &SecretString::from(key.to_string()), timeout)
        .expect("virtuous client")
}

fn org_client(org: &Org) -> VirtuousClient {
    client_for(&org.base, &org.key, Duration::from_secs(10))
}

fn gift_bodies(source: &str, ids: &[&str]) -> Vec<String> {
    ids.iter()
        .map(|id| gift_tx(source, id).to_string())
        .collect()
}

/// Scripts one answer for the next gift batch request.
async fn script_next_batch(org: &Org, respond: Value) {
    let script = json!({"steps": [{
        "match": {"method": "POST", "path": "/api/v2/Gift/Transactions"},
        "times": 1, "respond": respond}]});
    let r = org.control("POST", "/script", Some(&script)).await;
    assert_eq!(r.status, 200, "script: {}", r.text());
}

fn now_unix_s() -> u64 {
    steward_actors::ports::now_ms() / 1_000
}

fn outcome_of<T>(result: &CallResult<T>) -> Outcome {
    match result.classify() {
        BatchOutcome::All(outcome) => outcome,
        other => panic!("expected one verdict for the batch, got {other:?}"),
    }
}

#[actix_rt::test]
async fn batch_accepted_with_rate_limit_headers() {
    // Goal: a 3-item batch is accepted, reaches the sandbox as 3 transactions, and the
    // X-RateLimit-* headers are parsed into numbers that match the org's window.
    let sb = start_sandbox().await;
    let org = sb.org(json!({"hourly_limit": 100})).await;
    let client = org_client(&org);
    let result = client
        .post_gift_transactions("stripe", &gift_bodies("stripe", &["a1", "a2", "a3"]))
        .await
        .expect("valid request");
    assert_eq!(result.facts.status, Some(200), "{}", result.body);
    assert_eq!(result.facts.item_count, 3);
    assert_eq!(outcome_of(&result), Outcome::Accepted);
    assert_eq!(result.rate_limit.limit, Some(100));
    assert_eq!(result.rate_limit.remaining, Some(99));
    let reset = result.rate_limit.reset_unix_s.expect("reset header");
    assert!(
        reset > now_unix_s() && reset <= now_unix_s() + 3601,
        "reset {reset}"
    );
    assert_eq!(org.stats().await["transactions_received"], 3);
    sb.handle.stop().await;
}

#[actix_rt::test]
async fn server_error_and_throttle_classify() {
    // Goal: a scripted 503 is transient; a scripted 429 with Retry-After 4 is throttled for
    // 4000 ms; both still carry the rate-limit headers; neither applied anything.
    let sb = start_sandbox().await;
    let org = sb.org(json!({})).await;
    let client = org_client(&org);
    let bodies = gift_bodies("stripe", &["b1"]);

    script_next_batch(&org, json!({"status": 503})).await;
    let result = client
        .post_gift_transactions("stripe", &bodies)
        .await
        .unwrap();
    assert_eq!(result.facts.status, Some(503));
    assert!(
        matches!(outcome_of(&result), Outcome::Transient { .. }),
        "{:?}",
        result.classify()
    );
    assert!(result.rate_limit.remaining.is_some());

    script_next_batch(&org, json!({"status": 429, "retry_after_s": 4})).await;
    let result = client
        .post_gift_transactions("stripe", &bodies)
        .await
        .unwrap();
    assert_eq!(result.facts.retry_after_s, Some(4));
    assert_eq!(
        outcome_of(&result),
        Outcome::Throttled {
            retry_after_ms: 4_000
        }
    );
    assert_eq!(result.rate_limit.limit, Some(5000));
    assert_eq!(org.stats().await["transactions_received"], 0);
    sb.handle.stop().await;
}

#[actix_rt::test]
async fn invalid_item_is_rejected_alone() {
    // Goal: in a reject_all org, a batch whose item 1 has a bad amount gets a 400 naming
    // transactions[1].amount, classified as ItemsRejected with only item 1, nothing applied.
    let sb = start_sandbox().await;
    let org = sb.org(json!({"batch_item_error": "reject_all"})).await;
    let client = org_client(&org);
    let mut bad = gift_tx("stripe", "c2");
    bad["amount"] = json!("-5");
    let bodies = vec![
        gift_tx("stripe", "c1").to_string(),
        bad.to_string(),
        gift_tx("stripe", "c3").to_string(),
    ];
    let result = client
        .post_gift_transactions("stripe", &bodies)
        .await
        .unwrap();
    assert_eq!(result.facts.status, Some(400), "{}", result.body);
    assert!(
        result
            .facts
            .model_state_keys
            .contains(&"transactions[1].amount".to_string()),
        "{:?}",
        result.facts.model_state_keys
    );
    let BatchOutcome::ItemsRejected { rejected } = result.classify() else {
        panic!("expected items rejected: {:?}", result.classify());
    };
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert!(
        matches!(&rejected[0], Outcome::PermanentItem { item_index: 1, reason } if reason.contains("amount")),
        "{rejected:?}"
    );
    assert_eq!(org.stats().await["transactions_received"], 0);
    sb.handle.stop().await;
}

#[actix_rt::test]
async fn hang_times_out_as_transient() {
    // Goal: a scripted hang with a 500 ms client timeout ends as a Timeout with no status,
    // classified transient, after roughly the timeout (not the sandbox's 3 s hang).
    let sb = start_sandbox().await;
    let org = sb.org(json!({})).await;
    let faults = json!({"timeout_ms": 3000});
    assert_eq!(
        org.control("PUT", "/faults", Some(&faults)).await.status,
        200
    );
    let client = client_for(&org.base, &org.key, Duration::from_millis(500));
    script_next_batch(&org, json!({"hang": true})).await;
    let result = client
        .post_gift_transactions("stripe", &gift_bodies("stripe", &["d1"]))
        .await
        .unwrap();
    assert_eq!(result.facts.status, None);
    assert_eq!(
        result.facts.connection_error_kind,
        Some(ConnectionErrorKind::Timeout)
    );
    assert!(matches!(outcome_of(&result), Outcome::Transient { .. }));
    assert!(
        result.elapsed >= Duration::from_millis(450)
            && result.elapsed < Duration::from_millis(2500),
        "elapsed {:?}",
        result.elapsed
    );
    assert!(result.rate_limit.is_empty());
    sb.handle.stop().await;
}

#[actix_rt::test]
async fn applied_then_closed_is_unknown_and_was_applied() {
    // Goal: apply_then close gives no answer: ClosedBeforeAnswer → Unknown for a write, and
    // the sandbox did apply the transaction (stats count it, the close is recorded).
    let sb = start_sandbox().await;
    let org = sb.org(json!({})).await;
    let client = org_client(&org);
    script_next_batch(&org, json!({"apply_then": "close"})).await;
    let result = client
        .post_gift_transactions("stripe", &gift_bodies("stripe", &["e1"]))
        .await
        .unwrap();
    assert_eq!(result.facts.status, None);
    assert_eq!(
        result.facts.connection_error_kind,
        Some(ConnectionErrorKind::ClosedBeforeAnswer),
        "{:?}",
        result.facts.message
    );
    assert!(
        matches!(outcome_of(&result), Outcome::Unknown { .. }),
        "{:?}",
        result.classify()
    );
    let stats = org.stats().await;
    assert_eq!(stats["transactions_received"], 1, "{stats}");
    assert_eq!(
        stats["requests"]["POST /api/v2/Gift/Transactions"]["closed"], 1,
        "{stats}"
    );
    sb.handle.stop().await;
}

#[actix_rt::test]
async fn bad_key_needs_operator_and_refused_is_transient() {
    // Goal: a wrong key gets 401 → NeedsOperator (no rate-limit headers); a closed loopback
    // port is Refused → Transient.
    let sb = start_sandbox().await;
    let org = sb.org(json!({})).await;
    let client = client_for(&org.base, "wrong-key", Duration::from_secs(5));
    let result = client
        .post_gift_transactions("stripe", &gift_bodies("stripe", &["f1"]))
        .await
        .unwrap();
    assert_eq!(result.facts.status, Some(401));
    assert!(
        matches!(outcome_of(&result), Outcome::NeedsOperator { .. }),
        "{:?}",
        result.classify()
    );
    assert!(result.rate_limit.is_empty(), "{:?}", result.rate_limit);

    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let nowhere = client_for(
        &format!("http://127.0.0.1:{port}"),
        "k",
        Duration::from_secs(5),
    );
    let result = nowhere.organization_current().await;
    assert_eq!(
        result.facts.connection_error_kind,
        Some(ConnectionErrorKind::Refused)
    );
    assert!(matches!(
        result.classify(),
        BatchOutcome::All(Outcome::Transient { .. })
    ));
    sb.handle.stop().await;
}

#[actix_rt::test]
async fn lookup_is_none_while_pending_then_found() {
    // Goal: gift_by_transaction is Some(None) (404) while pending and the gift after the
    // import step; segments with '/' and spaces are encoded and found.
    let sb = start_sandbox().await;
    let org = sb.org(json!({})).await;
    let client = org_client(&org);
    let (source, id) = ("stripe/eu", "pi 1/2");
    let result = client
        .post_gift_transaction(&gift_tx(source, id).to_string())
        .await
        .unwrap();
    assert_eq!(outcome_of(&result), Outcome::Accepted, "{}", result.body);

    let pending = client.gift_by_transaction(source, id).await;
    assert_eq!(pending.facts.status, Some(404));
    assert_eq!(pending.value, Some(None));

    assert_eq!(org.process().await["imported"], 1);
    let found = client.gift_by_transaction(source, id).await;
    assert_eq!(found.facts.status, Some(200), "{}", found.body);
    let gift = found.value.flatten().expect("gift after import");
    assert_eq!(gift.transaction_source.as_deref(), Some(source));
    assert_eq!(gift.transaction_id.as_deref(), Some(id));
    assert!(gift.id > 0);
    sb.handle.stop().await;
}

#[actix_rt::test]
async fn full_gift_query_pages_by_source_and_create_date() {
    // Goal: paging query_full_gifts (take 2) finds exactly the 5 imported gifts of our source
    // created today, none of another source, and nothing from tomorrow on.
    let sb = start_sandbox().await;
    let org = sb.org(json!({})).await;
    let client = org_client(&org);
    let ours = ["g1", "g2", "g3", "g4", "g5"];
    let result = client
        .post_gift_transactions("stripe", &gift_bodies("stripe", &ours))
        .await
        .unwrap();
    assert_eq!(outcome_of(&result), Outcome::Accepted, "{}", result.body);
    let other = client
        .post_gift_transactions("other", &gift_bodies("other", &["o1", "o2"]))
        .await
        .unwrap();
    assert_eq!(outcome_of(&other), Outcome::Accepted);
    assert_eq!(org.process().await["imported"], 7);

    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    let mut found = Vec::new();
    let mut skip = 0;
    loop {
        let page = client
            .query_full_gifts("stripe", today, skip, 2)
            .await
            .unwrap();
        assert_eq!(page.facts.status, Some(200), "{}", page.body);
        let page = page.value.expect("decoded page");
        assert_eq!(page.total, 5);
        assert!(page.list.len() <= 2);
        if page.list.is_empty() {
            break;
        }
        skip += page.list.len() as u64;
        found.extend(page.list);
        assert!(skip <= 10, "paging does not end");
    }
    let mut ids: Vec<String> = found
        .iter()
        .map(|gift| gift.transaction_id.clone().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ours);
    assert!(found
        .iter()
        .all(|gift| gift.transaction_source.as_deref() == Some("stripe")
            && gift.create_date_time_utc.is_some()));

    let tomorrow = today.tomorrow().unwrap();
    let later = client
        .query_full_gifts("stripe", tomorrow, 0, 1000)
        .await
        .unwrap();
    assert_eq!(later.value.expect("decoded").list.len(), 0);
    assert!(client
        .query_full_gifts("stripe", today, 0, 1001)
        .await
        .is_err());
    sb.handle.stop().await;
}

#[actix_rt::test]
async fn organization_and_webhook_registration() {
    // Goal: organization_current decodes the org; create_webhook returns the subscription id,
    // which the sandbox then serves.
    let sb = start_sandbox().await;
    let org = sb.org(json!({})).await;
    let client = org_client(&org);
    let current = client.organization_current().await;
    let organization = current.value.expect("organization");
    assert_eq!(organization.name.as_deref(), Some(org.id.as_str()));

    let secret = SecretString::from("whsec".to_string());
    let created = client
        .create_webhook(
            "http://127.0.0.1:9/hooks/t/virtuous",
            &secret,
            &["giftCreate".to_string()],
        )
        .await;
    assert_eq!(outcome_of(&created), Outcome::Accepted, "{}", created.body);
    let id = created.value.expect("webhook id");
    let stored = org.get(&format!("/api/Webhook/{id}")).await;
    assert_eq!(stored.status, 200, "{}", stored.text());
    assert_eq!(stored.json()["giftCreate"], true);
    assert_eq!(
        stored.json()["payloadUrl"],
        "http://127.0.0.1:9/hooks/t/virtuous"
    );
    sb.handle.stop().await;
}
