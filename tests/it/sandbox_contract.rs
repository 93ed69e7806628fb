//! Sandbox contract: control API, authentication, org isolation, rate limit and stats (issue 3).
//!
//! Written from the issue and docs/sandbox.md, not from the code.

use serde_json::json;

use crate::sandbox_support::*;

#[actix_rt::test]
async fn control_org_create_answers_201_409_400_and_404_for_unknown_org() {
    // Goal: POST /_sandbox/orgs answers 201 {"id"}, 409 on a taken id, 400 on a bad body, and
    // any /_sandbox/orgs/{unknown}/… route answers 404.
    let sb = start_sandbox().await;
    let body = json!({"id": "acme", "api_key": "k-acme"});
    let r = sb.control("POST", "/_sandbox/orgs", Some(&body)).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["id"], "acme");

    let r = sb.control("POST", "/_sandbox/orgs", Some(&body)).await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.json()["message"].is_string(), "409 body {}", r.text());

    let unknown_field = json!({"id": "o2", "api_key": "k2", "no_such_switch": true});
    let r = sb
        .control("POST", "/_sandbox/orgs", Some(&unknown_field))
        .await;
    assert_eq!(r.status, 400, "unknown field: {}", r.text());
    assert!(r.json()["message"].is_string());

    let no_key = json!({"id": "o3"});
    let r = sb.control("POST", "/_sandbox/orgs", Some(&no_key)).await;
    assert_eq!(r.status, 400, "missing api_key: {}", r.text());

    let bad_enum = json!({"id": "o4", "api_key": "k4", "batch_item_error": "sometimes"});
    let r = sb.control("POST", "/_sandbox/orgs", Some(&bad_enum)).await;
    assert_eq!(r.status, 400, "bad batch_item_error: {}", r.text());
    for (field, bad) in [
        ("processing", json!("sometimes")),
        ("webhook_delivery", json!("carrier-pigeon")),
        ("hourly_limit", json!("lots")),
    ] {
        let mut body = json!({"id": "o5", "api_key": "k5"});
        body[field] = bad;
        let r = sb.control("POST", "/_sandbox/orgs", Some(&body)).await;
        assert_eq!(r.status, 400, "bad {field}: {}", r.text());
    }
    let delayed = json!({"id": "o6", "api_key": "k6", "processing": {"delay_ms": 50}});
    let r = sb.control("POST", "/_sandbox/orgs", Some(&delayed)).await;
    assert_eq!(r.status, 201, "processing as an object: {}", r.text());

    for (method, suffix) in [
        ("POST", "/process"),
        ("POST", "/review/approve"),
        ("GET", "/stats"),
        ("GET", "/gifts"),
        ("PUT", "/faults"),
        ("DELETE", "/faults"),
        ("POST", "/script"),
        ("POST", "/staff-edit"),
        ("GET", "/contacts"),
    ] {
        let body = json!({});
        let r = sb
            .control(method, &format!("/_sandbox/orgs/nope{suffix}"), Some(&body))
            .await;
        assert_eq!(r.status, 404, "{method} {suffix} on unknown org");
    }
    sb.handle.stop().await;
}

#[actix_rt::test]
async fn embedded_create_org_is_idempotent_for_the_same_key() {
    // Goal: SandboxHandle::create_org creates a usable org; the same key again is a no-op,
    // another key for the same id is refused.
    let sb = start_sandbox().await;
    let spec: steward_sandbox::virtuous::OrgSpec =
        serde_json::from_value(json!({"id": "emb", "api_key": "emb-key"})).unwrap();
    sb.handle.create_org(spec.clone()).expect("first create");
    sb.handle
        .create_org(spec)
        .expect("same key again is a no-op");
    let other_key: steward_sandbox::virtuous::OrgSpec =
        serde_json::from_value(json!({"id": "emb", "api_key": "another-key"})).unwrap();
    assert!(
        sb.handle.create_org(other_key).is_err(),
        "an existing id with another key must be refused"
    );
    let r = sb
        .client
        .get(format!("{}/api/Organization/Current", sb.base))
        .bearer_auth("emb-key")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    sb.handle.stop().await;
}

#[actix_rt::test]
async fn embedded_ensure_org_rotates_the_api_key() {
    // Goal: SandboxHandle::ensure_org creates an org, and for an existing org makes the new
    // key current and revokes the old one (a credential rotation), keeping its data.
    let sb = start_sandbox().await;
    let spec = |key: &str| -> steward_sandbox::virtuous::OrgSpec {
        serde_json::from_value(json!({"id": "rot", "api_key": key})).unwrap()
    };
    sb.handle.ensure_org(spec("old-key")).expect("create");
    let current = |key: &'static str| {
        let client = sb.client.clone();
        let url = format!("{}/api/Organization/Current", sb.base);
        async move {
            client
                .get(url)
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(current("old-key").await, 200);
    sb.handle.ensure_org(spec("new-key")).expect("rotate");
    assert_eq!(current("new-key").await, 200);
    assert_eq!(current("old-key").await, 401, "the old key is revoked");
    sb.handle
        .ensure_org(spec("new-key"))
        .expect("the current key again is a no-op");
    // Another org cannot take a key that is in use.
    let thief: steward_sandbox::virtuous::OrgSpec =
        serde_json::from_value(json!({"id": "thief", "api_key": "new-key"})).unwrap();
    assert!(sb.handle.ensure_org(thief).is_err());
    sb.handle.stop().await;
}

#[actix_rt::test]
async fn bad_or_missing_key_gets_401_plain_text_and_is_not_counted() {
    // Goal: a wrong or missing Bearer key gets 401 with a plain-text body and spends no budget.
    let sb = start_sandbox().await;
    let org = sb.org(json!({"hourly_limit": 10})).await;
    let url = format!("{}/api/Organization/Current", sb.base);
    let wrong = sb
        .client
        .get(&url)
        .bearer_auth("not-the-key")
        .send()
        .await
        .unwrap();
    let missing = sb.client.get(&url).send().await.unwrap();
    for r in [wrong, missing] {
        let r = Resp::read(r).await;
        assert_eq!(r.status, 401);
        let ct = r.header("content-type").unwrap_or_default();
        assert!(ct.starts_with("text/plain"), "401 content-type {ct:?}");
        assert!(!r.body.is_empty(), "401 body should say why");
        assert!(
            serde_json::from_slice::<serde_json::Value>(&r.body).is_err(),
            "401 body is JSON: {}",
            r.text()
        );
    }
    assert_eq!(
        org.remaining_after_probe().await,
        9,
        "401s must not spend budget"
    );
    sb.handle.stop().await;
}

#[actix_rt::test]
async fn orgs_are_isolated_by_key() {
    // Goal: one org's key never sees another org's records or webhooks, and each org has its own budget.
    let sb = start_sandbox().await;
    let a = sb.org(json!({"hourly_limit": 100})).await;
    let b = sb.org(json!({"hourly_limit": 50})).await;
    let a_hooks = Receiver::start().await;
    a.subscribe(&a_hooks.url, "a", &["giftCreate", "contactCreate"])
        .await;
    b.send_gift(&gift_tx("stripe", "iso-1")).await;
    assert_eq!(b.process().await["imported"], 1);
    let gid = b.get("/api/Gift/stripe/iso-1").await.json()["id"]
        .as_i64()
        .unwrap();

    assert_eq!(a.get("/api/Gift/stripe/iso-1").await.status, 404);
    assert_eq!(a.get(&format!("/api/Gift/{gid}")).await.status, 404);
    let q = a.post("/api/Gift/Query/FullGift", &json!({})).await;
    assert_eq!(q.status, 200);
    assert_eq!(
        q.json()["total"],
        0,
        "org A sees org B's gifts: {}",
        q.text()
    );
    assert_eq!(a.stats().await["transactions_received"], 0);
    // B's import must not reach A's webhook subscriptions (B's own webhooks_sent stays 0 too).
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(a_hooks.hits().is_empty(), "{:?}", a_hooks.summary());

    let r = a.get("/api/Organization/Current").await;
    assert_eq!(r.header_i64("x-ratelimit-limit"), 100);
    let r = b.get("/api/Organization/Current").await;
    assert_eq!(r.header_i64("x-ratelimit-limit"), 50);
    sb.handle.stop().await;
}

#[actix_rt::test]
async fn rate_limit_headers_and_reset_is_first_call_plus_an_hour() {
    // Goal: every API response carries Limit/Remaining/Reset; Remaining counts down per call
    // (also on 404 and 400 answers); Reset = the first call's Unix second + 3600, unchanged by later calls.
    let sb = start_sandbox().await;
    let org = sb.org(json!({"hourly_limit": 20})).await;
    let before = now_unix_f64();
    let first = org.get("/api/Organization/Current").await;
    let after = now_unix_f64();
    assert_eq!(first.status, 200);
    assert_eq!(first.header_i64("x-ratelimit-limit"), 20);
    assert_eq!(first.header_i64("x-ratelimit-remaining"), 19);
    let reset = first.header_i64("x-ratelimit-reset");
    // Reset = ceil(call time + 3600 s) and the call happened within [before, after] (at ms
    // resolution), so Reset lies within [ceil(before), ceil(after)] + 3600.
    let ceil_s = |ms: f64| (ms / 1000.0).ceil() as i64;
    let lo = ceil_s((before * 1000.0).floor()) + 3600;
    let hi = ceil_s((after * 1000.0).ceil()) + 3600;
    assert!(
        (lo..=hi).contains(&reset),
        "Reset {reset} not in [{lo}, {hi}]"
    );

    let missing = org.get("/api/Gift/999999").await;
    assert_eq!(missing.status, 404);
    assert!(missing.body.is_empty(), "404 by id has an empty body");
    assert_eq!(missing.header_i64("x-ratelimit-remaining"), 18);
    assert_eq!(missing.header_i64("x-ratelimit-reset"), reset);

    let invalid = org.post("/api/v2/Gift/Transaction", &json!({})).await;
    assert_eq!(invalid.status, 400);
    assert_eq!(invalid.header_i64("x-ratelimit-remaining"), 17);
    assert_eq!(invalid.header_i64("x-ratelimit-limit"), 20);
    assert_eq!(invalid.header_i64("x-ratelimit-reset"), reset);
    assert_eq!(org.stats().await["rate_window_calls"], 3);
    sb.handle.stop().await;
}

#[actix_rt::test]
async fn limit_reached_gives_429_with_retry_after_pointing_at_reset() {
    // Goal: beyond hourly_limit the limiter answers 429 + Retry-After = seconds until the oldest
    // call expires (= Reset - now), with headers and a {"message"} body; limiter 429s spend
    // nothing (Remaining stays 0, Reset stays put) and are counted as throttled.
    let sb = start_sandbox().await;
    let org = sb.org(json!({"hourly_limit": 3})).await;
    let mut reset = 0;
    for expected in [2, 1, 0] {
        let r = org.get("/api/Organization/Current").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header_i64("x-ratelimit-remaining"), expected);
        reset = r.header_i64("x-ratelimit-reset");
    }
    for _ in 0..3 {
        let before = now_unix_f64();
        let r = org
            .post("/api/v2/Gift/Transaction", &gift_tx("s", "over"))
            .await;
        let after = now_unix_f64();
        assert_eq!(r.status, 429, "{}", r.text());
        assert!(r.json()["message"].is_string(), "429 body {}", r.text());
        assert_eq!(r.header_i64("x-ratelimit-limit"), 3);
        assert_eq!(r.header_i64("x-ratelimit-remaining"), 0);
        assert_eq!(
            r.header_i64("x-ratelimit-reset"),
            reset,
            "429s must not move the window"
        );
        let retry = r.header_i64("retry-after");
        let lo = (reset as f64 - after).ceil() as i64 - 1;
        let hi = (reset as f64 - before).ceil() as i64 + 1;
        assert!(
            retry >= 1 && (lo..=hi).contains(&retry),
            "Retry-After {retry} vs Reset-now in [{lo},{hi}]"
        );
        assert!(
            retry > 3500 && retry <= 3600,
            "the window is one hour: Retry-After {retry}"
        );
    }
    let stats = org.stats().await;
    assert_eq!(stats["throttled"], 3, "{stats}");
    assert_eq!(
        stats["rate_window_calls"], 3,
        "limiter 429s are not calls: {stats}"
    );
    assert_eq!(
        stats["transactions_received"], 0,
        "a throttled transaction is not received"
    );
    // The window slides per org: another org is unaffected.
    let other = sb.org(json!({"hourly_limit": 3})).await;
    assert_eq!(other.remaining_after_probe().await, 2);
    sb.handle.stop().await;
}

#[actix_rt::test]
async fn control_routes_are_never_counted_or_limited() {
    // Goal: /_sandbox routes neither spend budget nor get refused once the API budget is spent.
    let sb = start_sandbox().await;
    let org = sb.org(json!({"hourly_limit": 2})).await;
    assert_eq!(org.remaining_after_probe().await, 1);
    for _ in 0..5 {
        org.stats().await;
        org.process().await;
        assert_eq!(
            org.control("POST", "/review/approve", None).await.status,
            200
        );
        org.all_gifts().await;
    }
    assert_eq!(
        org.remaining_after_probe().await,
        0,
        "control calls spent budget"
    );
    assert_eq!(org.get("/api/Organization/Current").await.status, 429);
    let s = org.stats().await;
    assert_eq!(s["rate_window_calls"], 2, "{s}");
    assert_eq!(
        org.process().await["imported"],
        0,
        "control still answers when throttled"
    );
    sb.handle.stop().await;
}

#[actix_rt::test]
async fn organization_current_and_project_by_code() {
    // Goal: Organization/Current answers 200 with a JSON object for the key's org; an unknown
    // project code answers 404 with an empty body; both are authenticated and counted.
    let sb = start_sandbox().await;
    let org = sb.org(json!({"hourly_limit": 10})).await;
    let r = org.get("/api/Organization/Current").await;
    assert_eq!(r.status, 200);
    assert!(r.json().is_object(), "{}", r.text());
    let p = org.get("/api/Project/Code/NO-SUCH-CODE").await;
    assert_eq!(p.status, 404, "{}", p.text());
    assert!(p.body.is_empty());
    assert_eq!(p.header_i64("x-ratelimit-remaining"), 8);
    let unauth = sb
        .client
        .get(format!("{}/api/Project/Code/X", sb.base))
        .send()
        .await
        .unwrap();
    assert_eq!(unauth.status(), 401);
    sb.handle.stop().await;
}

#[actix_rt::test]
async fn stats_count_requests_by_endpoint_and_status_and_the_pipeline() {
    // Goal: /stats reports requests by "METHOD template" and status, throttled, received,
    // pending, in review, imported, duplicates, gifts, contacts and the rate-window calls.
    let sb = start_sandbox().await;
    let org = sb.org(json!({"hourly_limit": 9})).await;
    org.send_gift(&gift_tx("stripe", "st-1")).await;
    org.send_gift(&gift_tx("stripe", "st-2")).await;
    org.send_gift(&gift_tx("stripe", "st-1")).await; // duplicate, rejected at import
    let bad = org
        .post(
            "/api/v2/Gift/Transaction",
            &json!({"transactionSource": "stripe"}),
        )
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(org.get("/api/Gift/stripe/st-1").await.status, 404);
    let s = org.stats().await;
    assert_eq!(s["transactions_received"], 3, "{s}");
    assert_eq!(s["pending"], 3, "{s}");
    assert_eq!(s["gifts"], 0, "{s}");

    let run = org.process().await;
    assert_eq!(run["imported"], 2, "{run}");
    assert_eq!(run["rejected_duplicate"], 1, "{run}");
    assert_eq!(org.get("/api/Gift/stripe/st-1").await.status, 200);
    for _ in 0..4 {
        org.get("/api/Organization/Current").await;
    }
    let s = org.stats().await;
    let req = &s["requests"];
    assert_eq!(req["POST /api/v2/Gift/Transaction"]["200"], 3, "{s}");
    assert_eq!(req["POST /api/v2/Gift/Transaction"]["400"], 1, "{s}");
    let by_source = &req["GET /api/Gift/{transactionSource}/{transactionId}"];
    assert_eq!(by_source["404"], 1, "{s}");
    assert_eq!(by_source["200"], 1, "{s}");
    assert_eq!(req["GET /api/Organization/Current"]["200"], 3, "{s}");
    assert_eq!(req["GET /api/Organization/Current"]["429"], 1, "{s}");
    assert_eq!(s["throttled"], 1, "{s}");
    assert_eq!(s["rate_window_calls"], 9, "{s}");
    assert_eq!(s["transactions_received"], 3, "{s}");
    assert_eq!(s["pending"], 0, "{s}");
    assert_eq!(s["in_review"], 0, "{s}");
    assert_eq!(s["imported"], 2, "{s}");
    assert_eq!(s["rejected_duplicate"], 1, "{s}");
    assert_eq!(s["gifts"], 2, "{s}");
    assert_eq!(s["contacts"], 2, "{s}");
    assert_eq!(s["webhooks_sent"], 0, "{s}");
    assert_eq!(s["webhooks_failed"], 0, "{s}");
    sb.handle.stop().await;
}
