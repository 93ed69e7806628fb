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
        let what = format!("org {} to import on its own", org.id);
        wait_until(EVENTUALLY, what, || async {
            (org.get("/api/Gift/s/p-1").await.status == 200).then_some(())
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        manual.get("/api/Gift/s/p-1").await.status,
        404,
        "manual imported by itself"
    );
    sb.handle.stop().await;
}

/// A fresh org holding Ann Lee (ref stripe/cus_A, ann@, 11111) and Bob Ray (bob@, 22222).
async fn two_contacts(sb: &Sandbox) -> (Org, i64, i64) {
    let org = sb.org(json!({})).await;
    let a = json!({"referenceSource": "stripe", "referenceId": "cus_A", "firstName": "Ann",
                   "lastName": "Lee", "email": "ann@example.org", "postal": "11111"});
    let b = json!({"referenceSource": "crm", "referenceId": "b", "firstName": "Bob",
                   "lastName": "Ray", "email": "bob@example.org", "postal": "22222"});
    for c in [&a, &b] {
        assert_eq!(org.post("/api/Contact/Transaction", c).await.status, 200);
    }
    assert_eq!(org.process().await["imported"], 2);
    let a_id = org.get("/api/Contact/stripe/cus_A").await.json()["id"]
        .as_i64()
        .unwrap();
    let b_id = org.get("/api/Contact/crm/b").await.json()["id"]
        .as_i64()
        .unwrap();
    assert_ne!(a_id, b_id);
    (org, a_id, b_id)
}

/// Imports one stripe gift with `contact`; returns (its contactId, contacts now in the org).
async fn import_with(org: &Org, contact: serde_json::Value) -> (i64, i64) {
    let mut tx = gift_tx("stripe", "m");
    tx["contact"] = contact;
    org.send_gift(&tx).await;
    assert_eq!(org.process().await["imported"], 1);
    let g = org.get("/api/Gift/stripe/m").await.json();
    let contacts = org.stats().await["contacts"].as_i64().unwrap();
    (g["contactId"].as_i64().unwrap(), contacts)
}

#[actix_rt::test]
async fn matching_order_references_then_email_then_name_and_postal() {
    // Goal: the import matches contacts by reference first, then email, then first + last name
    // + postal code (and by a known id); otherwise it creates a contact findable by reference.
    // Each case runs in its own org so one case's contact updates cannot steer another.
    let sb = start_sandbox().await;

    let (org, a, _) = two_contacts(&sb).await;
    let got = import_with(
        &org,
        json!({"referenceId": "cus_A", "email": "bob@example.org"}),
    )
    .await;
    assert_eq!(got, (a, 2), "reference must win over email");

    let (org, _, b) = two_contacts(&sb).await;
    let got = import_with(
        &org,
        json!({"email": "bob@example.org", "firstName": "Ann",
        "lastName": "Lee", "address": {"postal": "11111"}}),
    )
    .await;
    assert_eq!(got, (b, 2), "email must win over name + postal");

    let (org, _, b) = two_contacts(&sb).await;
    let got = import_with(
        &org,
        json!({"referenceId": "cus_new", "email": "new@example.org",
        "firstName": "Bob", "lastName": "Ray", "address": {"postal": "22222"}}),
    )
    .await;
    assert_eq!(
        got,
        (b, 2),
        "unknown reference and email fall through to name + postal"
    );

    let (org, a, b) = two_contacts(&sb).await;
    let (c, n) = import_with(
        &org,
        json!({"firstName": "Bob", "lastName": "Ray",
        "email": "other@example.org", "address": {"postal": "99999"}}),
    )
    .await;
    assert!(
        c != a && c != b && n == 3,
        "same name, other postal must create a contact"
    );

    let (org, _, b) = two_contacts(&sb).await;
    assert_eq!(
        import_with(&org, json!({"id": b})).await,
        (b, 2),
        "known id must match"
    );

    let (org, a, b) = two_contacts(&sb).await;
    let (z, n) = import_with(
        &org,
        json!({"referenceId": "cus_Z", "firstName": "Zed", "lastName": "Zo"}),
    )
    .await;
    assert!(z != a && z != b && n == 3);
    let found = org.get("/api/Contact/stripe/cus_Z").await;
    assert_eq!(
        found.status,
        200,
        "new contact not findable by source + reference: {}",
        found.text()
    );
    assert_eq!(found.json()["id"], z);
    sb.handle.stop().await;
}

#[actix_rt::test]
async fn import_updating_a_matched_contact_fires_contact_update() {
    // Goal: when the import matches an existing contact by email and the transaction brings a new
    // reference, the contact gains that reference (findable by it) and ContactUpdate fires for it
    // (not ContactCreate), along with GiftCreate for the gift.
    let sb = start_sandbox().await;
    let recv = Receiver::start().await;
    let (org, a, _) = two_contacts(&sb).await;
    org.subscribe(
        &recv.url,
        "upd",
        &["contactCreate", "contactUpdate", "giftCreate"],
    )
    .await;
    let mut tx = gift_tx("stripe", "upd-1");
    tx["contact"] = json!({"email": "ann@example.org", "referenceId": "cus_ann2"});
    org.send_gift(&tx).await;
    org.process().await;
    let gift = recv.wait_events("GiftCreate", 1).await[0].json();
    assert_eq!(gift["gift"]["contactId"], a);
    let upd = recv.wait_events("ContactUpdate", 1).await;
    assert_eq!(upd[0].json()["contact"]["id"], a, "{:?}", recv.summary());
    assert!(
        recv.events("ContactCreate").is_empty(),
        "{:?}",
        recv.summary()
    );
    let found = org.get("/api/Contact/stripe/cus_ann2").await;
    assert_eq!(found.status, 200, "matched contact lacks the new reference");
    assert_eq!(found.json()["id"], a);
    sb.handle.stop().await;
}
