//! Sandbox contract: Contact/Gift queries (groups, conditions, operators, paging) and PUT edits (issue 3).

use serde_json::{json, Value};

use crate::sandbox_support::*;

/// Imports `n` gifts: ids q0..q{n-1}; even ones from source "stripe", odd ones from "paypal".
async fn seeded(n: usize) -> (Sandbox, Org) {
    let sb = start_sandbox().await;
    let org = sb.org(json!({})).await;
    for i in 0..n {
        let src = if i % 2 == 0 { "stripe" } else { "paypal" };
        org.send_gift(&gift_tx(src, &format!("q{i}"))).await;
    }
    assert_eq!(org.process().await["imported"], n);
    (sb, org)
}

fn cond(parameter: &str, operator: &str, value: Value) -> Value {
    json!({"parameter": parameter, "operator": operator, "value": value})
}

/// Runs a query and returns (total, transactionIds of the page).
async fn gift_query(org: &Org, path: &str, body: Value) -> (i64, Vec<String>) {
    let r = org.post(path, &body).await;
    assert_eq!(r.status, 200, "{path} {body}: {}", r.text());
    let v = r.json();
    let total = v["total"]
        .as_i64()
        .unwrap_or_else(|| panic!("no total: {v}"));
    let mut ids: Vec<String> = v["list"]
        .as_array()
        .unwrap_or_else(|| panic!("no list: {v}"))
        .iter()
        .map(|g| g["transactionId"].as_str().unwrap_or_default().to_string())
        .collect();
    ids.sort();
    (total, ids)
}

/// Parses an ISO 8601 UTC timestamp field.
fn utc(v: &Value) -> jiff::Timestamp {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("timestamp is not a string: {v}"));
    s.parse()
        .unwrap_or_else(|e| panic!("not ISO 8601 UTC {s:?}: {e}"))
}

fn one_group(conditions: Vec<Value>) -> Value {
    json!({"groups": [{"conditions": conditions}]})
}

fn mmddyyyy(days_from_today: i64) -> String {
    let d = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date()
        .checked_add(jiff::Span::new().days(days_from_today))
        .unwrap();
    format!("{:02}/{:02}/{:04}", d.month(), d.day(), d.year())
}

#[actix_rt::test]
async fn gift_query_conditions_groups_and_operators() {
    // Goal: Gift Query and FullGift filter by Transaction Source/Id, Contact Id and dates with
    // Is/IsNot/IsAnyOf/Contains/GreaterThan/LessThan/After/Before/OnOrAfter/OnOrBefore/Between;
    // conditions in a group AND, groups OR; no groups (or []) = every gift.
    let (sb, org) = seeded(6).await;
    for path in ["/api/Gift/Query", "/api/Gift/Query/FullGift"] {
        let all = gift_query(&org, path, json!({})).await;
        assert_eq!(all.0, 6, "{path}: no groups = no filter");
        assert_eq!(gift_query(&org, path, json!({"groups": []})).await.0, 6);

        let src = one_group(vec![cond("Transaction Source", "Is", json!("stripe"))]);
        assert_eq!(
            gift_query(&org, path, src).await,
            (3, vec!["q0".into(), "q2".into(), "q4".into()])
        );
        let not = one_group(vec![cond("Transaction Source", "IsNot", json!("stripe"))]);
        assert_eq!(gift_query(&org, path, not).await.0, 3);

        let and = one_group(vec![
            cond("Transaction Source", "Is", json!("stripe")),
            cond("Transaction Id", "Is", json!("q2")),
        ]);
        assert_eq!(gift_query(&org, path, and).await, (1, vec!["q2".into()]));
        let contradiction = one_group(vec![
            cond("Transaction Source", "Is", json!("paypal")),
            cond("Transaction Id", "Is", json!("q2")),
        ]);
        assert_eq!(gift_query(&org, path, contradiction).await.0, 0);

        let or = json!({"groups": [
            {"conditions": [cond("Transaction Id", "Is", json!("q1"))]},
            {"conditions": [cond("Transaction Id", "Is", json!("q4"))]}
        ]});
        assert_eq!(
            gift_query(&org, path, or).await,
            (2, vec!["q1".into(), "q4".into()])
        );

        let any = one_group(vec![
            json!({"parameter": "Transaction Id", "operator": "IsAnyOf",
                                         "values": ["q0", "q5", "zzz"]}),
        ]);
        assert_eq!(
            gift_query(&org, path, any).await,
            (2, vec!["q0".into(), "q5".into()])
        );
        let contains = one_group(vec![cond("Transaction Source", "Contains", json!("pay"))]);
        assert_eq!(gift_query(&org, path, contains).await.0, 3);
    }
    let g3 = org.get("/api/Gift/paypal/q3").await.json();
    // Condition values are strings in the real API.
    let by_contact = one_group(vec![cond(
        "Contact Id",
        "Is",
        json!(g3["contactId"].to_string()),
    )]);
    assert_eq!(
        gift_query(&org, "/api/Gift/Query", by_contact).await,
        (1, vec!["q3".into()])
    );

    for (op, value, expected) in [("GreaterThan", "0", 6), ("LessThan", "0", 0)] {
        let q = one_group(vec![cond("Contact Id", op, json!(value))]);
        assert_eq!(
            gift_query(&org, "/api/Gift/Query", q).await.0,
            expected,
            "Contact Id {op}"
        );
    }

    for param in ["Create Date", "Last Modified Date"] {
        let path = "/api/Gift/Query/FullGift";
        // (operator, date relative to today, expected count): every gift was made today.
        let cases = [
            ("After", -1, 6),
            ("After", 1, 0),
            ("Before", 1, 6),
            ("Before", -1, 0),
            ("OnOrAfter", 0, 6),
            ("OnOrAfter", 1, 0),
            ("OnOrBefore", 0, 6),
            ("OnOrBefore", -1, 0),
        ];
        for (op, days, expected) in cases {
            let q = one_group(vec![cond(param, op, json!(mmddyyyy(days)))]);
            let total = gift_query(&org, path, q).await.0;
            assert_eq!(total, expected, "{param} {op} today{days:+}");
        }
        let between = |a: i64, b: i64| {
            one_group(vec![json!({"parameter": param, "operator": "Between",
                                  "value": mmddyyyy(a), "secondaryValue": mmddyyyy(b)})])
        };
        assert_eq!(gift_query(&org, path, between(-1, 1)).await.0, 6, "{param}");
        assert_eq!(gift_query(&org, path, between(2, 3)).await.0, 0, "{param}");
    }
    sb.handle.stop().await;
}

#[actix_rt::test]
async fn gift_query_paging_and_take_limit() {
    // Goal: skip/take page through a query with the full total in every page; take 1000 is
    // allowed and take 1001 answers 400.
    let (sb, org) = seeded(5).await;
    let mut seen = Vec::new();
    for skip in [0, 2, 4] {
        let (total, ids) = gift_query(
            &org,
            &format!("/api/Gift/Query?skip={skip}&take=2"),
            json!({}),
        )
        .await;
        assert_eq!(total, 5);
        assert_eq!(
            ids.len(),
            if skip == 4 { 1 } else { 2 },
            "page at skip {skip}"
        );
        seen.extend(ids);
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 5, "pages overlap or miss gifts: {seen:?}");
    let (total, ids) = gift_query(
        &org,
        "/api/Gift/Query/FullGift?skip=10&take=1000",
        json!({}),
    )
    .await;
    assert_eq!((total, ids.len()), (5, 0));
    for path in [
        "/api/Gift/Query?take=1001",
        "/api/Gift/Query/FullGift?take=1001",
        "/api/Contact/Query?take=1001",
        "/api/Contact/Query/FullContact?take=1001",
    ] {
        let r = org.post(path, &json!({})).await;
        assert_eq!(r.status, 400, "{path}: {}", r.text());
    }
    sb.handle.stop().await;
}

#[actix_rt::test]
async fn full_gift_carries_the_documented_fields() {
    // Goal: FullGift rows carry the documented field list, with customFields as an array.
    let sb = start_sandbox().await;
    let org = sb.org(json!({})).await;
    let mut tx = gift_tx("stripe", "full-1");
    tx["designations"] = json!([{"code": "GEN", "amountDesignated": "25.00"}]);
    tx["customFields"] = json!({"Campaign": "Spring"});
    tx["segment"] = json!("SEG1");
    org.send_gift(&tx).await;
    org.process().await;
    let r = org.post("/api/Gift/Query/FullGift", &json!({})).await;
    let g = &r.json()["list"][0];
    for f in [
        "id",
        "transactionSource",
        "transactionId",
        "contactId",
        "giftType",
        "giftDate",
        "amount",
        "currencyCode",
        "batch",
        "createDateTimeUtc",
        "modifiedDateTimeUtc",
        "segmentCode",
        "giftDesignations",
        "customFields",
    ] {
        assert!(g.get(f).is_some(), "FullGift lacks {f}: {g}");
    }
    assert_eq!(g["segmentCode"], "SEG1");
    assert_eq!(g["giftDesignations"][0]["projectCode"], "GEN", "{g}");
    assert_eq!(
        amount_of(&g["giftDesignations"][0]["amountDesignated"]),
        25.0
    );
    let cf = g["customFields"]
        .as_array()
        .expect("FullGift customFields is an array");
    assert!(
        cf.iter()
            .any(|f| f["name"] == "Campaign" && f["value"] == "Spring"),
        "{g}"
    );
    sb.handle.stop().await;
}

#[actix_rt::test]
async fn contact_query_filters_by_email_id_and_dates() {
    // Goal: Contact Query and FullContact filter by Email Address (Is, Contains), Contact Id and
    // Create Date, page with skip/take, and with no groups return every contact.
    let sb = start_sandbox().await;
    let org = sb.org(json!({})).await;
    for (i, email) in ["ann@alpha.org", "bob@beta.org", "cy@alpha.org"]
        .iter()
        .enumerate()
    {
        let tx = contact_tx("crm", &format!("c{i}"), "F", &format!("L{i}"), email);
        assert_eq!(org.post("/api/Contact/Transaction", &tx).await.status, 200);
    }
    assert_eq!(org.process().await["imported"], 3);
    let bob_id = org.get("/api/Contact/crm/c1").await.json()["id"].clone();
    for path in ["/api/Contact/Query", "/api/Contact/Query/FullContact"] {
        let total = |v: Value| v["total"].as_i64().unwrap();
        let o = &org;
        let q = move |b: Value| async move {
            let r = o.post(path, &b).await;
            assert_eq!(r.status, 200, "{path} {b}: {}", r.text());
            r.json()
        };
        assert_eq!(total(q(json!({})).await), 3, "{path}");
        let is = q(one_group(vec![cond(
            "Email Address",
            "Is",
            json!("bob@beta.org"),
        )]))
        .await;
        assert_eq!(total(is.clone()), 1);
        assert_eq!(is["list"][0]["id"], bob_id, "{is}");
        let contains = q(one_group(vec![cond(
            "Email Address",
            "Contains",
            json!("@alpha."),
        )]))
        .await;
        assert_eq!(total(contains), 2);
        let by_id = q(one_group(vec![cond(
            "Contact Id",
            "Is",
            json!(bob_id.to_string()),
        )]))
        .await;
        assert_eq!(total(by_id), 1);
        let created = q(one_group(vec![cond(
            "Create Date",
            "OnOrAfter",
            json!(mmddyyyy(0)),
        )]))
        .await;
        assert_eq!(total(created), 3);
        let future = q(one_group(vec![cond(
            "Last Modified Date",
            "After",
            json!(mmddyyyy(1)),
        )]))
        .await;
        assert_eq!(total(future), 0);
        let r = org
            .post(&format!("{path}?skip=1&take=1"), &json!({}))
            .await
            .json();
        assert_eq!(
            (total(r.clone()), r["list"].as_array().unwrap().len()),
            (3, 1)
        );
    }
    let full = org
        .post("/api/Contact/Query/FullContact", &json!({}))
        .await
        .json();
    let c = &full["list"][0];
    for f in [
        "id",
        "contactType",
        "contactIndividuals",
        "contactReferences",
        "createDateTimeUtc",
        "modifiedDateTimeUtc",
    ] {
        assert!(c.get(f).is_some(), "FullContact lacks {f}: {c}");
    }
    sb.handle.stop().await;
}

#[actix_rt::test]
async fn put_gift_is_a_counted_full_replacement_firing_gift_update() {
    // Goal: PUT /api/Gift/{id} replaces the gift (omitted fields cleared), spends one call,
    // bumps modifiedDateTimeUtc and fires GiftUpdate; an unknown id is 404.
    let sb = start_sandbox().await;
    let recv = Receiver::start().await;
    let org = sb.org(json!({"hourly_limit": 100})).await;
    org.subscribe(&recv.url, "s3cret", &["giftUpdate"]).await;
    org.send_gift(&gift_tx("stripe", "put-1")).await;
    org.process().await;
    let before = org.get("/api/Gift/stripe/put-1").await.json();
    assert_eq!(before["batch"], "B-1");
    let id = before["id"].as_i64().unwrap();
    let replacement = json!({"transactionSource": "stripe", "transactionId": "put-1",
        "contactId": before["contactId"], "giftType": "Check", "giftDate": "2026-11-22",
        "amount": 40.0, "currencyCode": "USD"});
    // Over a second apart, so even second-precision timestamps must move.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = org.put(&format!("/api/Gift/{id}"), &replacement).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let remaining = r.header_i64("x-ratelimit-remaining");
    let after = org.get(&format!("/api/Gift/{id}")).await;
    assert_eq!(after.header_i64("x-ratelimit-remaining"), remaining - 1);
    let after = after.json();
    assert_eq!(after["giftType"], "Check");
    assert_eq!(amount_of(&after["amount"]), 40.0);
    assert!(
        after["batch"].is_null(),
        "full replacement must clear batch: {after}"
    );
    assert!(
        utc(&after["modifiedDateTimeUtc"]) > utc(&before["modifiedDateTimeUtc"]),
        "{after}"
    );
    let hits = recv.wait_events("GiftUpdate", 1).await;
    assert_eq!(hits[0].json()["gift"]["id"], id);
    assert_eq!(amount_of(&hits[0].json()["gift"]["amount"]), 40.0);
    assert_eq!(org.put("/api/Gift/9999", &replacement).await.status, 404);
    recv.stop().await;
    sb.handle.stop().await;
}

#[actix_rt::test]
async fn put_contact_is_a_counted_full_replacement_firing_contact_update() {
    // Goal: PUT /api/Contact/{id} replaces the contact (omitted tags cleared), spends one call
    // and fires ContactUpdate with the new record; an unknown id is 404.
    let sb = start_sandbox().await;
    let recv = Receiver::start().await;
    let org = sb.org(json!({"hourly_limit": 100})).await;
    org.subscribe(&recv.url, "s3cret", &["contactUpdate"]).await;
    let tx = contact_tx("crm", "p-1", "Ann", "Lee", "ann@example.org");
    assert_eq!(org.post("/api/Contact/Transaction", &tx).await.status, 200);
    org.process().await;
    let mut c = org.get("/api/Contact/crm/p-1").await.json();
    assert!(
        c["tags"].as_array().is_some_and(|t| !t.is_empty()),
        "tags imported: {c}"
    );
    let id = c["id"].as_i64().unwrap();
    c["name"] = json!("Ann & Sam Lee");
    c.as_object_mut().unwrap().remove("tags");
    let r = org.put(&format!("/api/Contact/{id}"), &c).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let remaining = r.header_i64("x-ratelimit-remaining");
    let after = org.get(&format!("/api/Contact/{id}")).await;
    assert_eq!(after.header_i64("x-ratelimit-remaining"), remaining - 1);
    let after = after.json();
    assert_eq!(after["name"], "Ann & Sam Lee");
    assert!(
        after["tags"].is_null() || after["tags"] == json!([]),
        "tags not cleared: {after}"
    );
    let hits = recv.wait_events("ContactUpdate", 1).await;
    assert_eq!(hits[0].json()["contact"]["id"], id);
    assert_eq!(hits[0].json()["contact"]["name"], "Ann & Sam Lee");
    assert_eq!(org.put("/api/Contact/9999", &c).await.status, 404);
    recv.stop().await;
    sb.handle.stop().await;
}

#[actix_rt::test]
async fn gift_query_sorts_by_last_modified_date_both_ways() {
    // Goal: sortBy "Last Modified Date" orders FullGift rows by modification time, ascending by
    // default and reversed with "descending": true (the engine's incremental pull relies on it).
    let (sb, org) = seeded(3).await;
    let id_of = |tid: &str| {
        let org = org.clone();
        let path = "/api/Gift/Query/FullGift".to_string();
        let tid = tid.to_string();
        async move {
            let q = one_group(vec![cond("Transaction Id", "Is", json!(tid))]);
            org.post(&path, &q).await.json()["list"][0]["id"].clone()
        }
    };
    // Edits over a second apart, so even second-precision timestamps order them: q0 then q1.
    for tid in ["q0", "q1"] {
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let body = json!({"kind": "gift", "id": id_of(tid).await, "changes": {"notes": tid}});
        let r = org.control("POST", "/staff-edit", Some(&body)).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let order = |descending: bool| {
        let org = org.clone();
        async move {
            let body = json!({"sortBy": "Last Modified Date", "descending": descending});
            let r = org.post("/api/Gift/Query/FullGift", &body).await;
            assert_eq!(r.status, 200, "{}", r.text());
            r.json()["list"]
                .as_array()
                .unwrap()
                .iter()
                .map(|g| g["transactionId"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(order(false).await, ["q2", "q0", "q1"]);
    assert_eq!(order(true).await, ["q1", "q0", "q2"]);
    sb.handle.stop().await;
}
