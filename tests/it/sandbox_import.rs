//! Sandbox contract: the import step — processing modes, dedup, review, contact matching (issue 3).

use std::time::Duration;

use serde_json::json;

use crate::sandbox_support::*;

#[actix_rt::test]
async fn dedup_on_rejects_a_resubmitted_transaction_within_and_across_runs() {
    // Goal: with dedup_transactions (default) the same transactionSource + transactionId imports
    // once; resubmissions are accepted with 200 and counted as rejected_duplicate.
    let sb = start_sandbox().await;
    let org = sb.org(json!({})).await;
    let tx = gift_tx("stripe", "dup-1");
    org.send_gift(&tx).await;
    org.send_gift(&tx).await;
    let run = org.process().await;
    assert_eq!(
        (run["imported"].as_i64(), run["rejected_duplicate"].as_i64()),
        (Some(1), Some(1)),
        "{run}"
    );
    org.send_gift(&tx).await;
    let run = org.process().await;
    assert_eq!(
        (run["imported"].as_i64(), run["rejected_duplicate"].as_i64()),
        (Some(0), Some(1)),
        "{run}"
    );
    // Same id from another source is a different transaction.
    org.send_gift(&gift_tx("paypal", "dup-1")).await;
    assert_eq!(org.process().await["imported"], 1);
    let q = json!({"groups": [{"conditions": [
        {"parameter": "Transaction Id", "operator": "Is", "value": "dup-1"}]}]});
    assert_eq!(org.post("/api/Gift/Query", &q).await.json()["total"], 2);
    let s = org.stats().await;
    assert_eq!(
        (s["gifts"].as_i64(), s["rejected_duplicate"].as_i64()),
        (Some(2), Some(2)),
        "{s}"
    );
    sb.handle.stop().await;
}

#[actix_rt::test]
async fn dedup_off_imports_every_resubmission() {
    // Goal: with dedup_transactions false a resubmission becomes a second gift, visible as two
    // gifts in a Transaction Source + Transaction Id query.
    let sb = start_sandbox().await;
    let org = sb.org(json!({"dedup_transactions": false})).await;
    let tx = gift_tx("stripe", "dup-2");
    org.send_gift(&tx).await;
    org.send_gift(&tx).await;
    let run = org.process().await;
    assert_eq!(
        (run["imported"].as_i64(), run["rejected_duplicate"].as_i64()),
        (Some(2), Some(0)),
        "{run}"
    );
    let q = json!({"groups": [{"conditions": [
        {"parameter": "Transaction Source", "operator": "Is", "value": "stripe"},
        {"parameter": "Transaction Id", "operator": "Is", "value": "dup-2"}]}]});
    let r = org.post("/api/Gift/Query/FullGift", &q).await.json();
    assert_eq!(r["total"], 2, "{r}");
    assert_ne!(r["list"][0]["id"], r["list"][1]["id"]);
    sb.handle.stop().await;
}

#[actix_rt::test]
async fn review_share_one_holds_everything_until_approved() {
    // Goal: with review_share 1.0 the import step sends every transaction to review (still 404),
    // and review/approve imports them and fires GiftCreate.
    let sb = start_sandbox().await;
    let recv = Receiver::start().await;
    let org = sb.org(json!({"review_share": 1.0})).await;
    org.subscribe(&recv.url, "k", &["giftCreate"]).await;
    for id in ["rv-1", "rv-2"] {
        org.send_gift(&gift_tx("stripe", id)).await;
    }
    let run = org.process().await;
    assert_eq!(
        (run["imported"].as_i64(), run["in_review"].as_i64()),
        (Some(0), Some(2)),
        "{run}"
    );
    let s = org.stats().await;
    assert_eq!(
        (
            s["in_review"].as_i64(),
            s["pending"].as_i64(),
            s["gifts"].as_i64()
        ),
        (Some(2), Some(0), Some(0)),
        "{s}"
    );
    assert_eq!(org.get("/api/Gift/stripe/rv-1").await.status, 404);
    assert!(recv.hits().is_empty(), "no webhook before approval");

    let r = org.control("POST", "/review/approve", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["imported"], 2);
    assert_eq!(org.get("/api/Gift/stripe/rv-1").await.status, 200);
    let s = org.stats().await;
    assert_eq!(
        (s["in_review"].as_i64(), s["imported"].as_i64()),
        (Some(0), Some(2)),
        "{s}"
    );
    recv.wait_events("GiftCreate", 2).await;
    sb.handle.stop().await;
}

#[actix_rt::test]
async fn review_share_zero_never_reviews() {
    // Goal: with review_share 0.0 (default) the import step imports everything directly.
    let sb = start_sandbox().await;
    let org = sb.org(json!({})).await;
    for i in 0..10 {
        org.send_gift(&gift_tx("s", &format!("z{i}"))).await;
    }
    let run = org.process().await;
    assert_eq!(
        (run["imported"].as_i64(), run["in_review"].as_i64()),
        (Some(10), Some(0)),
        "{run}"
    );
    sb.handle.stop().await;
}

#[actix_rt::test]
async fn processing_immediate_and_delayed() {
    // Goal: "immediate" imports without a process call; {"delay_ms": N} keeps the gift 404
    // right after the POST and imports it on its own afterwards; "manual" never does.
    let sb = start_sandbox().await;
    let immediate = sb.org(json!({"processing": "immediate"})).await;
    let delayed = sb.org(json!({"processing": {"delay_ms": 600}})).await;
    let manual = sb.org(json!({"processing": "manual"})).await;
    for org in [&immediate, &delayed, &manual] {
        org.send_gift(&gift_tx("s", "p-1")).await;
    }
    assert_eq!(
        delayed.get("/api/Gift/s/p-1").await.status,
        404,
        "delay not honoured"
    );
    for org in [&immediate, &delayed] {
        let ok = wait_until(EVENTUALLY, || async {
            org.get("/api/Gift/s/p-1").await.status == 200
        })
        .await;
        assert!(ok, "org {} never imported on its own", org.id);
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        manual.get("/api/Gift/s/p-1").await.status,
        404,
        "manual imported by itself"
    );
    sb.handle.stop().await;
}

#[actix_rt::test]
async fn matching_order_references_then_email_then_name_and_postal() {
    // Goal: the import matches contacts by reference first, then email, then first + last name
    // + postal code, then by known id; otherwise it creates a contact.
    let sb = start_sandbox().await;
    let org = sb.org(json!({})).await;
    let a = json!({"referenceSource": "stripe", "referenceId": "cus_A", "firstName": "Ann",
                   "lastName": "Lee", "email": "ann@example.org", "postal": "11111"});
    let b = json!({"referenceSource": "crm", "referenceId": "b", "firstName": "Bob",
                   "lastName": "Ray", "email": "bob@example.org", "postal": "22222"});
    for c in [&a, &b] {
        assert_eq!(org.post("/api/Contact/Transaction", c).await.status, 200);
    }
    org.process().await;
    let a_id = org.get("/api/Contact/stripe/cus_A").await.json()["id"]
        .as_i64()
        .unwrap();
    let b_id = org.get("/api/Contact/crm/b").await.json()["id"]
        .as_i64()
        .unwrap();
    assert_ne!(a_id, b_id);

    let gift = |id: &str, contact: serde_json::Value| {
        let mut tx = gift_tx("stripe", id);
        tx["contact"] = contact;
        tx
    };
    // Reference beats a conflicting email.
    org.send_gift(&gift(
        "m1",
        json!({"referenceId": "cus_A", "email": "bob@example.org"}),
    ))
    .await;
    // Email beats a conflicting name + postal.
    org.send_gift(&gift(
        "m2",
        json!({"email": "bob@example.org", "firstName": "Ann",
        "lastName": "Lee", "address": {"postal": "11111"}}),
    ))
    .await;
    // Unknown reference and email fall through to name + postal.
    org.send_gift(&gift(
        "m3",
        json!({"referenceId": "cus_new", "email": "new@example.org",
        "firstName": "Bob", "lastName": "Ray", "address": {"postal": "22222"}}),
    ))
    .await;
    // Same name, other postal: a new contact.
    org.send_gift(&gift(
        "m4",
        json!({"firstName": "Bob", "lastName": "Ray",
        "email": "other@example.org", "address": {"postal": "99999"}}),
    ))
    .await;
    // Known Virtuous id.
    org.send_gift(&gift("m5", json!({"id": b_id}))).await;
    assert_eq!(org.process().await["imported"], 5);

    let contact_of = |id: &'static str| {
        let org = org.clone();
        async move {
            org.get(&format!("/api/Gift/stripe/{id}")).await.json()["contactId"]
                .as_i64()
                .unwrap()
        }
    };
    assert_eq!(
        contact_of("m1").await,
        a_id,
        "reference must win over email"
    );
    assert_eq!(
        contact_of("m2").await,
        b_id,
        "email must win over name + postal"
    );
    assert_eq!(contact_of("m3").await, b_id, "name + postal must match");
    let m4 = contact_of("m4").await;
    assert!(
        m4 != a_id && m4 != b_id,
        "different postal must create a contact"
    );
    assert_eq!(contact_of("m5").await, b_id, "known id must match");
    assert_eq!(org.stats().await["contacts"], 3);
    // A contact created from a gift is findable by the gift's source + contact referenceId.
    let mut tx = gift_tx("stripe", "m6");
    tx["contact"] = json!({"referenceId": "cus_Z", "firstName": "Zed", "lastName": "Zo"});
    org.send_gift(&tx).await;
    org.process().await;
    let z = org.get("/api/Contact/stripe/cus_Z").await;
    assert_eq!(z.status, 200, "{}", z.text());
    assert_eq!(z.json()["id"], contact_of("m6").await);
    sb.handle.stop().await;
}
