//! The admin API's additions for the operator's surfaces (docs/api.md) against the real
//! `steward` process: the fleet list's filters, sorts and cursor pages; test-mode Stripe
//! events through the real ingress path; records found by donor email and by Virtuous id;
//! one dead letter by id; the budget per minute.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{paused_dead_letters, tenant_body, wait_until, SpawnOptions, TestApp};
use crate::confirm_support::{import, reconcile_now, EVENTUALLY};

fn ids_of(page: &Value) -> Vec<String> {
    page["tenants"]
        .as_array()
        .unwrap_or_else(|| panic!("no tenants in {page}"))
        .iter()
        .map(|tenant| tenant["id"].as_str().unwrap().to_string())
        .collect()
}

/// Every page of `query` (cursor after cursor): the ids in order and the `total`s seen.
async fn all_pages(app: &TestApp, query: &str) -> (Vec<String>, BTreeSet<u64>) {
    let (mut ids, mut totals) = (Vec::new(), BTreeSet::new());
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let path = match &cursor {
            Some(cursor) => format!("/v1/tenants?{query}&cursor={cursor}"),
            None => format!("/v1/tenants?{query}"),
        };
        let (status, page) = app.admin_call(Method::GET, &path, None).await;
        assert_eq!(status, 200, "{path}: {page}");
        ids.extend(ids_of(&page));
        totals.insert(page["total"].as_u64().unwrap());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return (ids, totals),
        }
    }
    panic!("more than 100 pages for {query}");
}

#[actix_rt::test]
async fn the_fleet_list_filters_sorts_and_pages_on_the_server() {
    // Goal: cursor pages cover every tenant once in the asked order; q and state filter;
    // a page carries lanes, budget and open alerts; bad parameters are 400 and change nothing.
    let app = TestApp::spawn(SpawnOptions::default()).await;
    let mut made = Vec::new();
    for n in 0..23 {
        let id = format!("fleet-{n:02}");
        let mut body = tenant_body(&id);
        // Names sort in the opposite order of ids.
        body["name"] = json!(format!("Org {}", 99 - n));
        app.create_tenant(&body).await;
        made.push(id);
    }
    let (status, _) = app
        .admin_call(Method::POST, "/v1/tenants/fleet-07/pause", None)
        .await;
    assert_eq!(status, 200);

    let (ids, totals) = all_pages(&app, "limit=5").await;
    assert_eq!(ids, made, "by id, ascending, each once");
    assert_eq!(totals, BTreeSet::from([23]));
    let (ids, _) = all_pages(&app, "limit=4&sort=-id").await;
    assert_eq!(ids, made.iter().rev().cloned().collect::<Vec<_>>());
    let (ids, _) = all_pages(&app, "limit=6&sort=name").await;
    assert_eq!(
        ids,
        made.iter().rev().cloned().collect::<Vec<_>>(),
        "names run backwards"
    );

    let (status, page) = app
        .admin_call(Method::GET, "/v1/tenants?q=ORG%209&limit=50", None)
        .await;
    assert_eq!(status, 200);
    // Names "Org 99" … "Org 90": n = 0 … 9.
    assert_eq!(ids_of(&page), made[..10].to_vec(), "{page}");
    assert_eq!(page["total"], 10);
    assert!(page["next_cursor"].is_null());

    let (_, paused) = app
        .admin_call(Method::GET, "/v1/tenants?state=paused", None)
        .await;
    assert_eq!(ids_of(&paused), ["fleet-07"], "{paused}");
    let row = &paused["tenants"][0];
    assert_eq!(row["state"], "paused");
    assert_eq!(row["name"], "Org 92");
    for lane in ["live", "retry", "reconcile", "backfill"] {
        assert_eq!(row["lanes"][lane]["depth"], 0, "{row}");
    }
    assert_eq!(row["depth"], 0);
    assert!(
        row["budget"]["allowance_per_hour"].as_u64().unwrap() > 0,
        "{row}"
    );
    assert_eq!(row["open_alerts"], 0, "{row}");
    // A cursor keeps to the view it came from.
    let (_, by_name) = app
        .admin_call(Method::GET, "/v1/tenants?sort=name&limit=5", None)
        .await;
    let cursor = by_name["next_cursor"].as_str().unwrap();
    let (status, body) = app
        .admin_call(
            Method::GET,
            &format!("/v1/tenants?limit=5&cursor={cursor}"),
            None,
        )
        .await;
    assert_eq!(status, 400, "a name cursor on the id view: {body}");

    for bad in [
        "limit=0",
        "limit=501",
        "sort=size",
        "state=sleeping",
        "cursor=garbage!",
        "colour=red",
    ] {
        let (status, body) = app
            .admin_call(Method::GET, &format!("/v1/tenants?{bad}"), None)
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["error"]["message"].is_string(), "{bad}: {body}");
    }
}

#[actix_rt::test]
async fn a_test_payment_goes_through_and_is_found_by_email_and_virtuous_id() {
    // Goal: POST test-events/stripe delivers signed test-mode events through the ingress;
    // the gift is submitted, found by the donor's email, then, once confirmed, by its
    // Virtuous id; the budget chart counts the call; a tenant without accept_test_events
    // acknowledges and ignores them, and the answer says so.
    let app = TestApp::spawn(SpawnOptions::default()).await;
    app.create_tenant(&tenant_body("trig")).await;
    app.wait_ready().await;
    let (status, answer) = app
        .admin_call(
            Method::POST,
            "/v1/tenants/trig/test-events/stripe",
            Some(json!({"kind": "payment"})),
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["taken"], true);
    let events = answer["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{answer}");
    assert_eq!(events[0]["status"], 202, "queued: {answer}");
    let record_path = answer["record"].as_str().unwrap().to_string();
    let email = answer["donor_email"].as_str().unwrap().to_string();
    wait_until(EVENTUALLY, "the test payment submitted", || async {
        let (status, record) = app.admin_call(Method::GET, &record_path, None).await;
        (status == 200 && record["state"] == "submitted").then_some(())
    })
    .await;

    let by_email = format!("/v1/tenants/trig/records?email={}", email.to_uppercase());
    let (status, found) = app.admin_call(Method::GET, &by_email, None).await;
    assert_eq!(status, 200, "{found}");
    let records = found["records"].as_array().unwrap();
    assert_eq!(records.len(), 1, "{found}");
    assert_eq!(records[0]["source_id"], answer["payment_id"]);
    assert!(records[0]["history"].as_array().unwrap().len() >= 2);

    import(&app, "trig").await;
    reconcile_now(&app, "trig").await;
    let virtuous_id = wait_until(EVENTUALLY, "the test payment confirmed", || async {
        let (_, record) = app.admin_call(Method::GET, &record_path, None).await;
        record["virtuous_id"].as_str().map(str::to_owned)
    })
    .await;
    let (status, found) = app
        .admin_call(
            Method::GET,
            &format!("/v1/tenants/trig/records?virtuous_id={virtuous_id}"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(found["records"][0]["state"], "confirmed", "{found}");
    let (_, nobody) = app
        .admin_call(
            Method::GET,
            "/v1/tenants/trig/records?email=nobody@example.org",
            None,
        )
        .await;
    assert_eq!(nobody["records"], json!([]));
    for bad in [
        "",
        "?email=x",
        "?email=a@b.org&virtuous_id=1",
        "?virtuous_id=%20",
    ] {
        let (status, body) = app
            .admin_call(Method::GET, &format!("/v1/tenants/trig/records{bad}"), None)
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
    }

    let per_minute = app.status("trig").await["budget"]["per_minute"].clone();
    let minutes = per_minute.as_array().unwrap();
    assert_eq!(minutes.len(), 60);
    let calls: u64 = minutes.iter().map(|n| n.as_u64().unwrap()).sum();
    assert!(
        calls >= 2,
        "a submit and a reconciliation query: {per_minute}"
    );

    let mut strict = tenant_body("strict");
    strict["sources"]["stripe"]["accept_test_events"] = json!(false);
    app.create_tenant(&strict).await;
    app.wait_ready().await;
    let (status, answer) = app
        .admin_call(
            Method::POST,
            "/v1/tenants/strict/test-events/stripe",
            Some(json!({"kind": "refund"})),
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["taken"], false);
    assert!(answer["hint"]
        .as_str()
        .unwrap()
        .contains("accept_test_events"));
    assert_eq!(
        answer["events"].as_array().unwrap().len(),
        2,
        "payment + refund"
    );
    let (status, _) = app
        .admin_call(Method::GET, answer["record"].as_str().unwrap(), None)
        .await;
    assert_eq!(status, 404, "an ignored test event makes no record");

    for (body, want) in [
        (json!({"kind": "gift"}), 400),
        (json!({}), 400),
        (json!({"kind": "payment", "extra": 1}), 400),
    ] {
        let (status, answer) = app
            .admin_call(
                Method::POST,
                "/v1/tenants/trig/test-events/stripe",
                Some(body),
            )
            .await;
        assert_eq!(status, want, "{answer}");
    }
    let (status, _) = app
        .admin_call(
            Method::POST,
            "/v1/tenants/nobody/test-events/stripe",
            Some(json!({"kind": "payment"})),
        )
        .await;
    assert_eq!(status, 404);
}

#[actix_rt::test]
async fn one_dead_letter_is_shown_by_its_id() {
    // Goal: GET dead-letters/{dl} answers the list's item for that id; unknown ids are 404.
    let app = TestApp::spawn(SpawnOptions::default()).await;
    app.create_tenant(&tenant_body("dl1")).await;
    app.wait_ready().await;
    let ids = paused_dead_letters(&app, "dl1", 2, "dlx", "bad%20amount").await;
    let (_, list) = app
        .admin_call(Method::GET, "/v1/tenants/dl1/dead-letters", None)
        .await;
    let items = list["dead_letters"].as_array().unwrap();
    let listed: Vec<u64> = items
        .iter()
        .map(|item| item["id"].as_u64().unwrap())
        .collect();
    assert_eq!(listed, ids, "{list}");
    for item in items {
        let id = item["id"].as_u64().unwrap();
        let (status, one) = app
            .admin_call(
                Method::GET,
                &format!("/v1/tenants/dl1/dead-letters/{id}"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{one}");
        assert_eq!(&one, item);
    }
    for missing in ["999999", "abc"] {
        let (status, _) = app
            .admin_call(
                Method::GET,
                &format!("/v1/tenants/dl1/dead-letters/{missing}"),
                None,
            )
            .await;
        assert_eq!(status, 404, "{missing}");
    }
}
