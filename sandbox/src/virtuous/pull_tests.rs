//! The pull features over real loopback HTTP: staff edits of every kind and their webhooks,
//! contact deletes, the drop / reorder / abbreviated switches, live switches, the
//! subscription listing and the day-granularity counter.

use reqwest::Method;
use serde_json::{json, Value};

use super::test_harness::{events_of, sorted, Harness};

#[actix_rt::test]
async fn each_new_kind_fires_its_webhook_only_to_its_flag() {
    // Goal: project, event and contact-note creates/updates/deletes by staff edit fire
    // Project*/Event*/ContactNote* (model keys project/event/contactNote) to exactly the
    // subscriptions with that flag; created records get ids and strictly increasing
    // modified times.
    let mut harness = Harness::start(json!({"id": "kinds", "api_key": "kinds-key"})).await;
    let a = [
        "projectCreate",
        "projectUpdate",
        "projectDelete",
        "eventCreate",
        "contactNoteDelete",
    ];
    let b = [
        "eventUpdate",
        "eventDelete",
        "contactNoteCreate",
        "contactNoteUpdate",
    ];
    harness.subscribe("a", &a, true).await;
    harness.subscribe("b", &b, true).await;
    let records = harness
        .edits(vec![
            json!({"kind": "project", "changes": {"name": "Spring", "code": "SPR"}}),
            json!({"kind": "project", "id": 1, "changes": {"name": "Spring 2"}}),
            json!({"kind": "event", "changes": {"name": "Gala"}}),
            json!({"kind": "event", "id": 1, "changes": {"name": "Gala 2"}}),
            json!({"kind": "event", "id": 1, "changes": {"name": "Gala 3"}}),
            json!({"kind": "contact_note", "changes": {"contactId": 7, "note": "hi"}}),
            json!({"kind": "contact_note", "id": 1, "changes": {"note": "hello"}}),
            json!({"kind": "project", "id": 1, "delete": true}),
            json!({"kind": "event", "id": 1, "delete": true}),
            json!({"kind": "contact_note", "id": 1, "delete": true}),
        ])
        .await;
    assert_eq!(records[0]["id"], 1);
    assert_eq!(records[0]["projectCode"], "SPR");
    assert_eq!(records[2]["startDateTime"].as_str().map(str::len), Some(24));
    assert_eq!(records[5]["noteType"], "General");
    let modified: Vec<&str> = [2, 3, 4]
        .iter()
        .map(|i| records[*i]["modifiedDateTimeUtc"].as_str().unwrap())
        .collect();
    assert!(modified.windows(2).all(|w| w[0] < w[1]), "{modified:?}");

    let hits = harness.hits_after(10).await;
    let expected_a = [
        "ProjectCreate",
        "ProjectUpdate",
        "ProjectDelete",
        "EventCreate",
        "ContactNoteDelete",
    ];
    let expected_b = [
        "EventUpdate",
        "EventDelete",
        "ContactNoteCreate",
        "ContactNoteUpdate",
        "EventUpdate",
    ];
    assert_eq!(events_of(&hits, "a"), sorted(&expected_a));
    assert_eq!(events_of(&hits, "b"), sorted(&expected_b));
    let note = hits
        .iter()
        .find(|hit| hit.event() == "ContactNoteCreate")
        .unwrap();
    assert_eq!(note.model("contactNote")["note"], "hi");
    assert_eq!(note.model("contactNote")["contactId"], 7);
    let project = hits
        .iter()
        .find(|hit| hit.event() == "ProjectUpdate")
        .unwrap();
    assert_eq!(project.model("project")["name"], "Spring 2");
    let event = hits
        .iter()
        .find(|hit| hit.event() == "EventCreate")
        .unwrap();
    assert_eq!(
        event.body["models"][0]["event"]["name"], "Gala",
        "events: bulk form"
    );
    // A bad edit anywhere in a list changes nothing; the single route answers the record.
    let (status, answer) = harness
        .control(
            Method::POST,
            "/staff-edits",
            json!({"edits": [{"kind": "event"}, {"kind": "event", "id": 99}]}),
        )
        .await;
    assert_eq!(status, 404, "{answer}");
    assert!(answer["message"].as_str().unwrap().starts_with("edits[1]"));
    let (status, created) = harness
        .control(Method::POST, "/staff-edit", json!({"kind": "event"}))
        .await;
    assert_eq!((status, created["id"].as_u64()), (200, Some(2)));
    harness.stop().await;
}

#[actix_rt::test]
async fn a_contact_delete_fires_contact_delete_to_its_flag_only() {
    // Goal: a staff contact delete fires ContactDelete with the contact model only to
    // `contactDelete` subscribers; the contact is gone afterwards; default models carry the
    // fields a destination needs.
    let mut harness = Harness::start(json!({"id": "cdel", "api_key": "cdel-key"})).await;
    harness
        .subscribe("del", &["contactDelete", "giftCreate"], true)
        .await;
    harness
        .subscribe("upd", &["contactUpdate", "contactCreate"], true)
        .await;
    let (gift_id, contact_id) = harness.import_gift("cd-1").await;
    let hits = harness.hits_after(2).await;
    let gift = hits.iter().find(|hit| hit.event() == "GiftCreate").unwrap();
    for field in [
        "id",
        "modifiedDateTimeUtc",
        "amount",
        "giftDate",
        "contactId",
    ] {
        assert!(!gift.body["gift"][field].is_null(), "gift lacks {field}");
    }
    assert_eq!(gift.body["gift"]["id"], gift_id);
    let contact = hits
        .iter()
        .find(|hit| hit.event() == "ContactCreate")
        .unwrap();
    for field in ["id", "modifiedDateTimeUtc", "name"] {
        assert!(
            !contact.body["contact"][field].is_null(),
            "contact lacks {field}"
        );
    }

    let (status, deleted) = harness
        .control(
            Method::POST,
            "/staff-edit",
            json!({"kind": "contact", "id": contact_id, "delete": true}),
        )
        .await;
    assert_eq!((status, deleted["id"].as_u64()), (200, Some(contact_id)));
    let hits = harness.hits_after(3).await;
    assert_eq!(events_of(&hits, "del"), ["ContactDelete"]);
    assert_eq!(hits[0].body["contact"]["id"], contact_id);
    assert_eq!(hits[0].body["contact"]["name"], "Ann Lee");
    let (status, _) = harness
        .call(
            Method::GET,
            &format!("/api/Contact/{contact_id}"),
            Value::Null,
        )
        .await;
    assert_eq!(status, 404);
    harness.stop().await;
}

#[actix_rt::test]
async fn drop_pct_drops_about_that_share_and_never_a_delete() {
    // Goal: with webhook_drop_pct 30, about 30 % of create/update events are never sent
    // (counted in webhooks_dropped) and every delete arrives.
    let mut harness = Harness::start(
        json!({"id": "drop", "api_key": "drop-key", "seed": 7, "webhook_drop_pct": 30.0}),
    )
    .await;
    harness
        .subscribe("s", &["eventCreate", "eventUpdate", "eventDelete"], true)
        .await;
    let n = 100;
    let mut edits: Vec<Value> = (0..n).map(|_| json!({"kind": "event"})).collect();
    edits.extend((1..=n).map(|id| json!({"kind": "event", "id": id, "changes": {"name": "x"}})));
    edits.extend((1..=n).map(|id| json!({"kind": "event", "id": id, "delete": true})));
    harness.edits(edits).await;
    let dropped = harness.stats().await["webhooks_dropped"].as_u64().unwrap();
    assert!((40..=80).contains(&dropped), "dropped {dropped} of 200");
    let hits = harness.hits_after(3 * n - dropped).await;
    let deletes = hits
        .iter()
        .filter(|hit| hit.event() == "EventDelete")
        .count();
    assert_eq!(deletes as u64, n);
    harness.stop().await;
}

#[actix_rt::test]
async fn reorder_delivers_out_of_order() {
    // Goal: with webhook_reorder, 50 creates announced in order arrive in another order.
    let mut harness = Harness::start(
        json!({"id": "reorder", "api_key": "reorder-key", "seed": 3, "webhook_reorder": true}),
    )
    .await;
    harness.subscribe("s", &["projectCreate"], true).await;
    harness
        .edits((0..50).map(|_| json!({"kind": "project"})).collect())
        .await;
    let hits = harness.hits_after(50).await;
    let ids: Vec<u64> = hits
        .iter()
        .map(|hit| hit.body["project"]["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), 50);
    assert!(
        ids.windows(2).any(|w| w[0] > w[1]),
        "arrived in order: {ids:?}"
    );
    harness.stop().await;
}

#[actix_rt::test]
async fn abbreviated_models_carry_only_ids() {
    // Goal: webhook_abbreviated cuts gift models to id + transaction ids and contact models
    // to id; other kinds keep their full model.
    let mut harness =
        Harness::start(json!({"id": "abbr", "api_key": "abbr-key", "webhook_abbreviated": true}))
            .await;
    harness
        .subscribe("s", &["giftCreate", "contactCreate", "eventCreate"], true)
        .await;
    let (gift_id, contact_id) = harness.import_gift("ab-1").await;
    harness
        .edits(vec![json!({"kind": "event", "changes": {"name": "Gala"}})])
        .await;
    let hits = harness.hits_after(3).await;
    let model = |event: &str, key: &str| {
        hits.iter()
            .find(|hit| hit.event() == event)
            .map(|hit| hit.model(key).clone())
            .unwrap()
    };
    assert_eq!(
        model("GiftCreate", "gift"),
        json!({"id": gift_id, "transactionSource": "Stripe", "transactionId": "ab-1"})
    );
    assert_eq!(model("ContactCreate", "contact"), json!({"id": contact_id}));
    assert_eq!(model("EventCreate", "event")["name"], "Gala");
    // The re-read: FullGift / FullContact rows carry what the webhook left out.
    let (_, gifts) = harness
        .call(Method::POST, "/api/Gift/Query/FullGift", json!({}))
        .await;
    for field in [
        "id",
        "modifiedDateTimeUtc",
        "amount",
        "giftDate",
        "contactId",
    ] {
        assert!(!gifts["list"][0][field].is_null(), "FullGift lacks {field}");
    }
    let (_, contacts) = harness
        .call(Method::POST, "/api/Contact/Query/FullContact", json!({}))
        .await;
    for field in ["id", "modifiedDateTimeUtc", "name"] {
        assert!(
            !contacts["list"][0][field].is_null(),
            "FullContact lacks {field}"
        );
    }
    harness.stop().await;
}

#[actix_rt::test]
async fn switches_subscriptions_and_the_day_counter() {
    // Goal: PUT switches patches the live switches (a bad value → 400, nothing changed);
    // subscriptions keep every known flag (unknown ones ignored) and the control listing
    // shows them; a date query under day granularity is counted.
    let harness = Harness::start(json!({"id": "sw", "api_key": "sw-key"})).await;
    let (status, switches) = harness
        .control(
            Method::PUT,
            "/switches",
            json!({"webhook_drop_pct": 12.5, "query_date_granularity": "day"}),
        )
        .await;
    assert_eq!(status, 200, "{switches}");
    assert_eq!(switches["webhook_drop_pct"], 12.5);
    assert_eq!(switches["webhook_reorder"], false);
    for bad in [
        json!({"webhook_drop_pct": 101}),
        json!({"webhook_reorder": true, "nope": 1}),
    ] {
        let (status, _) = harness.control(Method::PUT, "/switches", bad).await;
        assert_eq!(status, 400);
    }
    let (_, now) = harness.control(Method::GET, "/switches", Value::Null).await;
    assert_eq!(now, switches);
    let bad_org = json!({"id": "sw2", "api_key": "sw2-key", "webhook_drop_pct": 150});
    let (status, _) = harness.control.control(Method::POST, "", bad_org).await;
    assert_eq!(status, 400);
    for (method, suffix) in [
        (Method::POST, "/staff-edits"),
        (Method::GET, "/switches"),
        (Method::PUT, "/switches"),
        (Method::GET, "/webhooks"),
    ] {
        let path = format!("/nope{suffix}");
        let (status, _) = harness.control.control(method, &path, json!({})).await;
        assert_eq!(status, 404, "{suffix} on an unknown org");
    }

    let id = harness
        .subscribe("s", &["contactDelete", "eventCreate", "madeUpFlag"], true)
        .await;
    let (_, read) = harness
        .call(Method::GET, &format!("/api/Webhook/{id}"), Value::Null)
        .await;
    assert_eq!(read["contactDelete"], true);
    assert_eq!(read["eventUpdate"], false);
    assert!(read.get("madeUpFlag").is_none());
    let mut changed = read.clone();
    changed["active"] = json!(false);
    changed["eventUpdate"] = json!(true);
    let (status, _) = harness
        .call(Method::PUT, &format!("/api/Webhook/{id}"), changed)
        .await;
    assert_eq!(status, 200);
    let (_, listing) = harness.control(Method::GET, "/webhooks", Value::Null).await;
    assert_eq!(listing[0]["id"], id);
    assert_eq!(listing[0]["active"], false);
    assert_eq!(listing[0]["flags"]["eventUpdate"], true);
    assert_eq!(listing[0]["flags"]["eventCreate"], true);
    assert!(listing[0].get("secret").is_none());

    let query = json!({"groups": [{"conditions": [{"parameter": "Last Modified Date",
        "operator": "OnOrAfter", "value": "2026-06-12T15:00:00Z"}]}]});
    let (status, _) = harness
        .call(Method::POST, "/api/Gift/Query/FullGift", query)
        .await;
    assert_eq!(status, 200);
    let (status, _) = harness
        .call(Method::POST, "/api/Gift/Query/FullGift", json!({}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(harness.stats().await["day_granularity_queries"], 1);
    harness.stop().await;
}
