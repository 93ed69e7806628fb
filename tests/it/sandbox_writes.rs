//! Sandbox contract: transaction writes, validation, batches, reversing and recurring gifts (issue 3).

use serde_json::{json, Value};

use crate::sandbox_support::*;

#[actix_rt::test]
async fn gift_transaction_is_accepted_without_id_and_404_until_imported() {
    // Goal: a Gift Transaction answers 200 with an empty body, stays 404 by source/id while
    // pending, and after the import step is readable by source/id and by integer id.
    let sb = start_sandbox().await;
    let org = sb.org(json!({})).await;
    let tx = gift_tx("Stripe Live", "ch 1/a");
    let r = org.post("/api/v2/Gift/Transaction", &tx).await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty(), "no id in the answer: {}", r.text());

    // URL-encoded segments (space and slash) must round-trip.
    let path = "/api/Gift/Stripe%20Live/ch%201%2Fa";
    let pending = org.get(path).await;
    assert_eq!(
        pending.status,
        404,
        "pending gift visible: {}",
        pending.text()
    );
    assert!(pending.body.is_empty());
    let s = org.stats().await;
    assert_eq!(
        (s["transactions_received"].as_i64(), s["pending"].as_i64()),
        (Some(1), Some(1)),
        "{s}"
    );

    assert_eq!(org.process().await["imported"], 1);
    let g = org.get(path).await;
    assert_eq!(g.status, 200, "{}", g.text());
    let gift = g.json();
    assert_eq!(gift["id"], 1, "gift ids start at 1 per org: {gift}");
    assert_eq!(gift["transactionSource"], "Stripe Live");
    assert_eq!(gift["transactionId"], "ch 1/a");
    assert_eq!(amount_of(&gift["amount"]), 25.0);
    assert_eq!(gift["giftType"], "Credit");
    assert!(gift["contactId"].as_i64().is_some(), "{gift}");
    assert!(
        gift["createDateTimeUtc"]
            .as_str()
            .is_some_and(|d| d.contains('T')),
        "{gift}"
    );

    let by_id = org.get("/api/Gift/1").await;
    assert_eq!(by_id.status, 200);
    assert_eq!(by_id.json()["transactionId"], "ch 1/a");
    let cid = gift["contactId"].as_i64().unwrap();
    let c = org.get(&format!("/api/Contact/{cid}")).await;
    assert_eq!(c.status, 200, "{}", c.text());
    assert_eq!(c.json()["id"], cid);
    assert_eq!(org.get("/api/Contact/424242").await.status, 404);
    sb.handle.stop().await;
}

#[actix_rt::test]
async fn gift_transaction_required_fields_give_400_model_state() {
    // Goal: each required field of the contract table, and malformed amounts and dates, get 400
    // with "The request is invalid." and a modelState key `transaction.<field>`; nothing is received.
    let sb = start_sandbox().await;
    let org = sb.org(json!({})).await;
    for field in [
        "transactionSource",
        "transactionId",
        "amount",
        "giftDate",
        "giftType",
    ] {
        let mut tx = gift_tx("s", "req");
        tx.as_object_mut().unwrap().remove(field);
        let r = org.post("/api/v2/Gift/Transaction", &tx).await;
        assert_invalid(&r, &format!("transaction.{field}"));
    }
    for amount in [
        json!("abc"),
        json!("0"),
        json!(-5),
        json!(0),
        json!("12.3.4"),
    ] {
        let mut tx = gift_tx("s", "amt");
        tx["amount"] = amount.clone();
        let r = org.post("/api/v2/Gift/Transaction", &tx).await;
        assert_invalid(&r, "transaction.amount");
    }
    let mut tx = gift_tx("s", "date");
    tx["giftDate"] = json!("not a date");
    assert_invalid(
        &org.post("/api/v2/Gift/Transaction", &tx).await,
        "transaction.giftDate",
    );

    // A contact with none of email, first+last, name, id, referenceId.
    let mut tx = gift_tx("s", "who");
    tx["contact"] = json!({"firstName": "Only", "phone": "555"});
    let r = org.post("/api/v2/Gift/Transaction", &tx).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let keys = r.model_state_keys();
    assert!(
        keys.iter().any(|k| k.starts_with("transaction.contact")),
        "{keys:?}"
    );
    let mut tx = gift_tx("s", "nocontact");
    tx.as_object_mut().unwrap().remove("contact");
    let r = org.post("/api/v2/Gift/Transaction", &tx).await;
    assert_eq!(r.status, 400);
    assert!(r
        .model_state_keys()
        .iter()
        .any(|k| k.starts_with("transaction.contact")));

    assert_eq!(org.stats().await["transactions_received"], 0);
    sb.handle.stop().await;
}

#[actix_rt::test]
async fn gift_transaction_accepts_each_contact_identity_and_date_format() {
    // Goal: every contact identity of the contract table and the three giftDate formats
    // (YYYY-MM-DD, MM/DD/YYYY, ISO date-time) and numeric or string amounts are accepted.
    let sb = start_sandbox().await;
    let org = sb.org(json!({})).await;
    let contacts = [
        json!({"email": "e@example.org"}),
        json!({"firstName": "A", "lastName": "B"}),
        json!({"name": "Acme Foundation", "type": "Foundation"}),
        json!({"referenceId": "cus_9"}),
    ];
    for (i, c) in contacts.iter().enumerate() {
        let mut tx = gift_tx("s", &format!("id-{i}"));
        tx["contact"] = c.clone();
        org.send_gift(&tx).await;
    }
    for (i, d) in ["2026-11-20", "11/20/2026", "2026-11-20T13:45:00Z"]
        .iter()
        .enumerate()
    {
        let mut tx = gift_tx("s", &format!("date-{i}"));
        tx["giftDate"] = json!(d);
        org.send_gift(&tx).await;
    }
    let mut tx = gift_tx("s", "num");
    tx["amount"] = json!(12.34);
    org.send_gift(&tx).await;
    assert_eq!(org.process().await["imported"], 8);
    // Contact by known Virtuous id.
    let mut tx = gift_tx("s", "by-id");
    tx["contact"] = json!({"id": 1});
    org.send_gift(&tx).await;
    assert_eq!(org.process().await["imported"], 1);
    let g = org.get("/api/Gift/s/by-id").await.json();
    assert_eq!(g["contactId"], 1, "{g}");
    let num = org.get("/api/Gift/s/num").await.json();
    assert_eq!(amount_of(&num["amount"]), 12.34);
    sb.handle.stop().await;
}

fn with_designations(id: &str, amount: &str, parts: &[&str]) -> Value {
    let mut tx = gift_tx("s", id);
    tx["amount"] = json!(amount);
    tx["designations"] = parts
        .iter()
        .enumerate()
        .map(|(i, a)| json!({"code": format!("P{i}"), "amountDesignated": a}))
        .collect();
    tx
}

#[actix_rt::test]
async fn designation_sum_is_validated_unless_switched_off() {
    // Goal: designations not summing to the amount get 400 by default and pass when
    // validate_designation_sum is false; a correct sum always passes.
    let sb = start_sandbox().await;
    let strict = sb.org(json!({})).await;
    let lax = sb.org(json!({"validate_designation_sum": false})).await;
    let wrong = with_designations("d1", "30.00", &["10.00", "10.00"]);
    let r = strict.post("/api/v2/Gift/Transaction", &wrong).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["message"], "The request is invalid.");
    let keys = r.model_state_keys();
    assert!(
        keys.iter().any(|k| k.starts_with("transaction.")),
        "{keys:?}"
    );
    strict
        .send_gift(&with_designations("d2", "30.00", &["10.00", "20.00"]))
        .await;
    lax.send_gift(&wrong).await;
    assert_eq!(lax.process().await["imported"], 1);
    let g = lax.get("/api/Gift/s/d1").await.json();
    let des = g["giftDesignations"].as_array().expect("giftDesignations");
    assert_eq!(des.len(), 2, "{g}");
    sb.handle.stop().await;
}

fn batch(ids: &[&str]) -> Value {
    json!({
        "transactionSource": "stripe",
        "transactions": ids.iter().map(|id| gift_tx("stripe", id)).collect::<Vec<_>>(),
        "createImport": true,
        "importName": "test import"
    })
}

#[actix_rt::test]
async fn gift_batch_reject_all_names_the_item_and_accepts_nothing() {
    // Goal: under reject_all (default) one bad item gives 400 keyed `transactions[i].field`
    // and none of the batch is received; a good batch is accepted with 200.
    let sb = start_sandbox().await;
    let org = sb.org(json!({})).await;
    let mut b = batch(&["b0", "b1", "b2", "b3"]);
    b["transactions"][3]["amount"] = json!("twelve");
    let r = org.post("/api/v2/Gift/Transactions", &b).await;
    assert_invalid(&r, "transactions[3].amount");
    assert!(!r
        .model_state_keys()
        .iter()
        .any(|k| k.starts_with("transactions[0]")));
    assert_eq!(org.stats().await["transactions_received"], 0);
    org.process().await;
    assert!(org.all_gifts().await.is_empty());

    let r = org
        .post("/api/v2/Gift/Transactions", &batch(&["g0", "g1", "g2"]))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        org.stats().await["transactions_received"],
        3,
        "each batch item counts"
    );
    assert_eq!(org.process().await["imported"], 3);
    sb.handle.stop().await;
}

#[actix_rt::test]
async fn gift_batch_accept_others_reports_the_item_and_keeps_the_rest() {
    // Goal: under accept_others the bad item is still named (`transactions[1].giftDate`) so the
    // client can dead-letter it, while the other items are received and imported.
    let sb = start_sandbox().await;
    let org = sb.org(json!({"batch_item_error": "accept_others"})).await;
    let mut b = batch(&["a0", "a1", "a2"]);
    b["transactions"][1]["giftDate"] = json!("yesterday-ish");
    let r = org.post("/api/v2/Gift/Transactions", &b).await;
    assert_invalid(&r, "transactions[1].giftDate");
    assert_eq!(org.stats().await["transactions_received"], 2);
    assert_eq!(org.process().await["imported"], 2);
    assert_eq!(org.get("/api/Gift/stripe/a0").await.status, 200);
    assert_eq!(org.get("/api/Gift/stripe/a1").await.status, 404);
    assert_eq!(org.get("/api/Gift/stripe/a2").await.status, 200);
    sb.handle.stop().await;
}

#[actix_rt::test]
async fn contact_transaction_and_batch_import_and_validate() {
    // Goal: Contact Transaction and Contact Batch answer 200 empty, import into contacts readable
    // by reference; a batch item without lastName gets 400 keyed `contacts[i].lastName`.
    let sb = start_sandbox().await;
    let org = sb.org(json!({})).await;
    let r = org
        .post(
            "/api/Contact/Transaction",
            &contact_tx("crm", "r-1", "Ann", "Lee", "ann@example.org"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.body.is_empty());
    let mut no_last = contact_tx("crm", "r-x", "No", "Last", "x@example.org");
    no_last.as_object_mut().unwrap().remove("lastName");
    let r = org.post("/api/Contact/Transaction", &no_last).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.model_state_keys().iter().any(|k| k.ends_with("lastName")),
        "{}",
        r.text()
    );

    let mut contacts = vec![
        contact_tx("crm", "r-2", "Bob", "Ray", "bob@example.org"),
        contact_tx("crm", "r-3", "Cy", "Day", "cy@example.org"),
    ];
    contacts[1].as_object_mut().unwrap().remove("lastName");
    let bad = json!({"referenceSource": "crm", "contacts": contacts.clone()});
    assert_invalid(
        &org.post("/api/Contact/Batch", &bad).await,
        "contacts[1].lastName",
    );
    contacts[1]["lastName"] = json!("Day");
    let good = json!({"referenceSource": "crm", "contacts": contacts});
    let r = org.post("/api/Contact/Batch", &good).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(org.stats().await["transactions_received"], 3);
    assert_eq!(
        org.get("/api/Contact/crm/r-1").await.status,
        404,
        "pending contact visible"
    );

    assert_eq!(org.process().await["imported"], 3);
    let c = org.get("/api/Contact/crm/r-1").await;
    assert_eq!(c.status, 200, "{}", c.text());
    let c = c.json();
    let refs = c["contactReferences"]
        .as_array()
        .expect("contactReferences");
    assert!(
        refs.iter()
            .any(|r| r["source"] == "crm" && r["id"] == "r-1"),
        "{c}"
    );
    let ind = &c["contactIndividuals"][0];
    assert_eq!(ind["firstName"], "Ann", "{c}");
    assert_eq!(ind["lastName"], "Lee", "{c}");
    let methods = ind["contactMethods"].as_array().expect("contactMethods");
    assert!(
        methods.iter().any(|m| m["value"] == "ann@example.org"),
        "{c}"
    );
    assert_eq!(org.get("/api/Contact/crm/r-3").await.status, 200);
    assert_eq!(org.get("/api/Contact/crm/nope").await.status, 404);
    assert_eq!(org.stats().await["contacts"], 3);
    sb.handle.stop().await;
}

#[actix_rt::test]
async fn contact_batch_accept_others_keeps_the_good_contacts() {
    // Goal: under accept_others a Contact Batch names the bad item (`contacts[0].lastName`) and
    // still receives and imports the other contacts.
    let sb = start_sandbox().await;
    let org = sb.org(json!({"batch_item_error": "accept_others"})).await;
    let mut bad = contact_tx("crm", "k0", "No", "Last", "k0@example.org");
    bad.as_object_mut().unwrap().remove("lastName");
    let good = contact_tx("crm", "k1", "Has", "Last", "k1@example.org");
    let body = json!({"referenceSource": "crm", "contacts": [bad, good]});
    assert_invalid(
        &org.post("/api/Contact/Batch", &body).await,
        "contacts[0].lastName",
    );
    assert_eq!(org.stats().await["transactions_received"], 1);
    assert_eq!(org.process().await["imported"], 1);
    assert_eq!(org.get("/api/Contact/crm/k1").await.status, 200);
    assert_eq!(org.get("/api/Contact/crm/k0").await.status, 404);
    sb.handle.stop().await;
}

#[actix_rt::test]
async fn contact_json_has_the_documented_shape() {
    // Goal: GET /api/Contact/{id} returns the documented fields: id, contactType, name,
    // mergedIntoContactId, address, contactIndividuals[{id, firstName, lastName, isPrimary,
    // contactMethods[{type, value, isOptedIn, isPrimary}]}], contactReferences[{source, id}],
    // tags[], customFields[], createDateTimeUtc, modifiedDateTimeUtc.
    let sb = start_sandbox().await;
    let org = sb.org(json!({})).await;
    let tx = contact_tx("crm", "shape", "Ann", "Lee", "ann@example.org");
    assert_eq!(org.post("/api/Contact/Transaction", &tx).await.status, 200);
    org.process().await;
    let id = org.get("/api/Contact/crm/shape").await.json()["id"].clone();
    let c = org.get(&format!("/api/Contact/{id}")).await.json();
    for f in [
        "id",
        "contactType",
        "name",
        "mergedIntoContactId",
        "address",
        "createDateTimeUtc",
        "modifiedDateTimeUtc",
    ] {
        assert!(c.get(f).is_some(), "contact lacks {f}: {c}");
    }
    assert_eq!(c["contactType"], "Household");
    assert!(
        c["tags"]
            .as_array()
            .is_some_and(|t| t.contains(&json!("donor")) && t.contains(&json!("web"))),
        "tags split on ';': {c}"
    );
    assert!(c["customFields"].is_array(), "{c}");
    assert_eq!(
        c["contactReferences"],
        json!([{"source": "crm", "id": "shape"}]),
        "{c}"
    );
    let ind = &c["contactIndividuals"][0];
    for f in ["id", "firstName", "lastName", "isPrimary", "contactMethods"] {
        assert!(ind.get(f).is_some(), "individual lacks {f}: {c}");
    }
    let m = &ind["contactMethods"][0];
    assert_eq!(
        (m["type"].as_str(), m["value"].as_str()),
        (Some("Home Email"), Some("ann@example.org")),
        "{c}"
    );
    assert!(
        m["isOptedIn"].is_boolean() && m["isPrimary"].is_boolean(),
        "{c}"
    );
    sb.handle.stop().await;
}

#[actix_rt::test]
async fn reversing_transaction_refunds_an_imported_gift() {
    // Goal: ReversingTransaction {reversedGiftId, giftDate, notes} on an imported gift answers 200
    // and yields a gift of type ReversingTransaction; an unknown reversedGiftId is refused.
    let sb = start_sandbox().await;
    let org = sb.org(json!({})).await;
    org.send_gift(&gift_tx("stripe", "ch_r")).await;
    org.process().await;
    let gid = org.get("/api/Gift/stripe/ch_r").await.json()["id"]
        .as_i64()
        .unwrap();
    let body = json!({"reversedGiftId": gid, "giftDate": "2026-11-21", "notes": "refund"});
    let r = org.post("/api/Gift/ReversingTransaction", &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    org.process().await;
    let gifts = org.all_gifts().await;
    let rev: Vec<_> = gifts
        .iter()
        .filter(|g| g["giftType"] == "ReversingTransaction")
        .collect();
    assert_eq!(rev.len(), 1, "{gifts:?}");
    let bad = json!({"reversedGiftId": 987654, "giftDate": "2026-11-21", "notes": "x"});
    let r = org.post("/api/Gift/ReversingTransaction", &bad).await;
    assert!(
        r.status == 400 || r.status == 404,
        "unknown gift reversed: {} {}",
        r.status,
        r.text()
    );
    sb.handle.stop().await;
}

#[actix_rt::test]
async fn recurring_gift_create_and_read() {
    // Goal: POST /api/RecurringGift for an existing contact returns the record with an id, and
    // GET /api/RecurringGift/{id} reads it back; a missing id is 404 with an empty body.
    let sb = start_sandbox().await;
    let org = sb.org(json!({})).await;
    org.send_gift(&gift_tx("stripe", "first")).await;
    org.process().await;
    let cid = org.get("/api/Gift/stripe/first").await.json()["contactId"]
        .as_i64()
        .unwrap();
    let body = json!({"contactId": cid, "startDate": "2026-11-01", "frequency": "Monthly",
                      "amount": 15.0, "nextExpectedPaymentDate": "2026-12-01"});
    let r = org.post("/api/RecurringGift", &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let created = r.json();
    let id = created["id"].as_i64().expect("recurring gift id");
    let read = org.get(&format!("/api/RecurringGift/{id}")).await;
    assert_eq!(read.status, 200, "{}", read.text());
    let rg = read.json();
    assert_eq!(rg["id"], id);
    assert_eq!(rg["contactId"], cid);
    assert_eq!(rg["frequency"], "Monthly");
    assert_eq!(amount_of(&rg["amount"]), 15.0);
    let missing = org.get("/api/RecurringGift/99999").await;
    assert_eq!(missing.status, 404);
    assert!(missing.body.is_empty());
    sb.handle.stop().await;
}
