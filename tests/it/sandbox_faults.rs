//! Sandbox contract: scripted faults in order and seeded random faults (issue 3).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::sandbox_support::*;

/// A client without connection reuse, so a closed connection is never silently retried.
fn fresh_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

fn batch_of(id: &str) -> Value {
    json!({"transactionSource": "stripe", "transactions": [gift_tx("stripe", id)]})
}

/// Sends a gift batch; Ok((status, headers)) or Err(the reqwest error) with the elapsed time.
async fn send_batch(
    org: &Org,
    client: &reqwest::Client,
    id: &str,
) -> (Result<Resp, reqwest::Error>, Duration) {
    let t = Instant::now();
    let r = client
        .post(format!("{}/api/v2/Gift/Transactions", org.base))
        .bearer_auth(&org.key)
        .json(&batch_of(id))
        .send()
        .await;
    let r = match r {
        Ok(resp) => Ok(Resp::read(resp).await),
        Err(e) => Err(e),
    };
    (r, t.elapsed())
}

#[actix_rt::test]
async fn scripted_faults_are_consumed_in_order() {
    // Goal: a script of 503x3, 429 (Retry-After 2), 400 with model_state, hang, apply_then close
    // plays in order on matching requests only; faulted calls are counted; the hang times the
    // client out without applying; the close is a connection error after applying.
    let sb = start_sandbox().await;
    let org = sb.org(json!({"hourly_limit": 100})).await;
    let faults = json!({"timeout_ms": 3000});
    assert_eq!(
        org.control("PUT", "/faults", Some(&faults)).await.status,
        200
    );
    let model_state = json!({"transactions[0].amount": ["The amount is invalid."]});
    let m = json!({"method": "POST", "path": "/api/v2/Gift/Transactions"});
    let script = json!({"steps": [
        {"match": m, "times": 3, "respond": {"status": 503}},
        {"match": m, "times": 1, "respond": {"status": 429, "retry_after_s": 2}},
        {"match": m, "times": 1, "respond": {"status": 400, "model_state": model_state}},
        {"match": m, "times": 1, "respond": {"hang": true}},
        {"match": m, "times": 1, "respond": {"apply_then": "close"}}
    ]});
    let r = org.control("POST", "/script", Some(&script)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let client = fresh_client(Duration::from_secs(1));

    // A request the first step does not match passes through untouched.
    let other = org
        .post("/api/v2/Gift/Transaction", &gift_tx("stripe", "single"))
        .await;
    assert_eq!(
        other.status,
        200,
        "unmatched request was faulted: {}",
        other.text()
    );

    let mut remaining = other.header_i64("x-ratelimit-remaining");
    for i in 0..3 {
        let r = send_batch(&org, &client, &format!("f503-{i}"))
            .await
            .0
            .expect("503 answer");
        assert_eq!(r.status, 503, "step 1, request {i}");
        remaining -= 1;
        assert_eq!(
            r.header_i64("x-ratelimit-remaining"),
            remaining,
            "faults are counted"
        );
    }
    let r = send_batch(&org, &client, "f429")
        .await
        .0
        .expect("429 answer");
    assert_eq!(r.status, 429);
    assert_eq!(r.header_i64("retry-after"), 2);
    assert!(r.header("x-ratelimit-limit").is_some());
    let r = send_batch(&org, &client, "f400")
        .await
        .0
        .expect("400 answer");
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["modelState"], model_state, "{}", r.text());

    let (hang, took) = send_batch(&org, &client, "fhang").await;
    let e = hang.err().expect("a hang gets no answer");
    assert!(e.is_timeout(), "hang should time the client out: {e:?}");
    assert!(took >= Duration::from_millis(900), "gave up after {took:?}");

    let long = fresh_client(Duration::from_secs(10));
    let (closed, took) = send_batch(&org, &long, "fclose").await;
    let e = closed.err().expect("apply_then close gets no answer");
    assert!(
        !e.is_timeout(),
        "close must be a connection error, not a timeout: {e:?}"
    );
    assert!(took < Duration::from_secs(5), "close took {took:?}");

    let r = send_batch(&org, &client, "after")
        .await
        .0
        .expect("script exhausted");
    assert_eq!(r.status, 200, "{}", r.text());

    let s = org.stats().await;
    assert_eq!(
        s["transactions_received"], 3,
        "single + fclose + after: {s}"
    );
    let req = &s["requests"]["POST /api/v2/Gift/Transactions"];
    assert_eq!(
        (
            req["503"].as_i64(),
            req["429"].as_i64(),
            req["400"].as_i64(),
            req["200"].as_i64()
        ),
        (Some(3), Some(1), Some(1), Some(1)),
        "{s}"
    );
    assert_eq!(
        s["rate_window_calls"],
        1 + 8,
        "every scripted request is a call: {s}"
    );
    org.process().await;
    let mut ids: Vec<String> = org
        .all_gifts()
        .await
        .iter()
        .map(|g| g["transactionId"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        ["after", "fclose", "single"],
        "only applied requests became gifts"
    );
    sb.handle.stop().await;
}

#[actix_rt::test]
async fn script_without_match_applies_to_any_request_and_replaces_the_old_script() {
    // Goal: a step without "match" applies to any API request, "body" is answered verbatim,
    // posting a new script replaces what is left of the old one, and a method-only match works.
    let sb = start_sandbox().await;
    let org = sb.org(json!({})).await;
    let old = json!({"steps": [{"times": 5, "respond": {"status": 500}}]});
    assert_eq!(org.control("POST", "/script", Some(&old)).await.status, 200);
    assert_eq!(org.get("/api/Organization/Current").await.status, 500);
    let new =
        json!({"steps": [{"times": 1, "respond": {"status": 520, "body": {"message": "edge"}}}]});
    assert_eq!(org.control("POST", "/script", Some(&new)).await.status, 200);
    let r = org.get("/api/Gift/1").await;
    assert_eq!(r.status, 520);
    assert_eq!(r.json()["message"], "edge");
    assert_eq!(
        org.get("/api/Organization/Current").await.status,
        200,
        "old script not replaced"
    );
    // A match on the method alone: a POST passes, the next GET (any path) is faulted.
    let by_method =
        json!({"steps": [{"match": {"method": "GET"}, "times": 1, "respond": {"status": 502}}]});
    assert_eq!(
        org.control("POST", "/script", Some(&by_method))
            .await
            .status,
        200
    );
    org.send_gift(&gift_tx("s", "passes")).await;
    assert_eq!(org.get("/api/Gift/s/passes").await.status, 502);
    assert_eq!(
        org.get("/api/Gift/s/passes").await.status,
        404,
        "step used up"
    );
    sb.handle.stop().await;
}

/// Sends each id once (asserting rate-limit headers even on faults); returns
/// id -> (status, Retry-After).
async fn outcomes(org: &Org, ids: &[String]) -> BTreeMap<String, (u16, Option<String>)> {
    let client = fresh_client(Duration::from_secs(10));
    let mut out = BTreeMap::new();
    for id in ids {
        let r = client
            .post(format!("{}/api/v2/Gift/Transaction", org.base))
            .bearer_auth(&org.key)
            .json(&gift_tx("stripe", id))
            .send()
            .await
            .expect("rates without timeouts always answer");
        let r = Resp::read(r).await;
        for h in [
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
        ] {
            assert!(
                r.header(h).is_some(),
                "{h} missing on a {} answer",
                r.status
            );
        }
        out.insert(id.clone(), (r.status, r.header("retry-after")));
    }
    out
}

#[actix_rt::test]
async fn random_faults_reproduce_by_seed_regardless_of_arrival_order() {
    // Goal: same seed + same requests -> same per-transactionId outcomes even in another order,
    // for first and second attempts; another seed differs; throttles carry Retry-After; faulted
    // requests are not applied.
    let sb = start_sandbox().await;
    let faults = json!({"error_5xx_rate": 0.3, "throttle_rate": 0.3, "retry_after_s": 3});
    let mut orgs = Vec::new();
    for seed in [42, 42, 7] {
        let org = sb.org(json!({"seed": seed})).await;
        assert_eq!(
            org.control("PUT", "/faults", Some(&faults)).await.status,
            200
        );
        orgs.push(org);
    }
    let ids: Vec<String> = (0..30).map(|i| format!("t{i}")).collect();
    let mut reversed = ids.clone();
    reversed.reverse();
    let a1 = outcomes(&orgs[0], &ids).await;
    let b1 = outcomes(&orgs[1], &reversed).await;
    let c1 = outcomes(&orgs[2], &ids).await;
    assert_eq!(a1, b1, "same seed, other order, different outcomes");
    assert_ne!(
        a1, c1,
        "another seed gave identical outcomes for 30 requests"
    );
    let faulted = a1.values().filter(|(s, _)| *s != 200).count();
    assert!(
        (5..=28).contains(&faulted),
        "{faulted}/30 faulted at a 0.6 rate"
    );
    for (s, retry) in a1.values() {
        assert!(matches!(s, 200 | 429) || *s >= 500, "unexpected status {s}");
        if *s == 429 {
            assert_eq!(retry.as_deref(), Some("3"), "throttle fault Retry-After");
        }
    }
    let ok = a1.values().filter(|(s, _)| *s == 200).count();
    assert_eq!(
        orgs[0].stats().await["transactions_received"],
        ok,
        "faulted requests were applied"
    );

    // Second attempts of a subset, again in opposite orders.
    let some: Vec<String> = ids[..12].to_vec();
    let mut some_rev = some.clone();
    some_rev.reverse();
    let a2 = outcomes(&orgs[0], &some).await;
    let b2 = outcomes(&orgs[1], &some_rev).await;
    assert_eq!(a2, b2, "second attempts differ between same-seed orgs");
    // The attempt number is part of the draw: 12 second attempts all repeating their first
    // outcome has probability 0.34^12 (about 2e-6) at these rates.
    let a1_some: BTreeMap<_, _> = a1
        .iter()
        .filter(|(k, _)| a2.contains_key(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_ne!(
        a1_some, a2,
        "second attempts repeat the first: attempt not in the draw"
    );

    // A batch draws with its first item's transactionId: the other items do not matter.
    let client = fresh_client(Duration::from_secs(10));
    let mut batch_outcomes = [Vec::new(), Vec::new()];
    for (n, org) in orgs[..2].iter().enumerate() {
        for id in &ids[..15] {
            let tail = format!("tail-{n}-{id}");
            let body = json!({"transactionSource": "stripe",
                "transactions": [gift_tx("stripe", id), gift_tx("stripe", &tail)]});
            let r = client
                .post(format!("{}/api/v2/Gift/Transactions", org.base))
                .bearer_auth(&org.key)
                .json(&body)
                .send()
                .await
                .unwrap();
            batch_outcomes[n].push(r.status().as_u16());
        }
    }
    assert_eq!(
        batch_outcomes[0], batch_outcomes[1],
        "batch draws depend on later items"
    );
    assert!(
        batch_outcomes[0].iter().any(|s| *s != 200),
        "no batch drew a fault"
    );
    // The path is part of the draw: the batch path (first attempt there) must not mirror the
    // single path for all 15 ids (probability 0.34^15).
    let single_path: Vec<u16> = ids[..15].iter().map(|id| a1[id].0).collect();
    assert_ne!(batch_outcomes[0], single_path, "path not in the draw");
    sb.handle.stop().await;
}

#[actix_rt::test]
async fn random_fault_kinds_drop_after_apply_timeout_and_latency() {
    // Goal: drop_after_apply_rate 1 closes without an answer after applying; timeout_rate 1
    // answers nothing for timeout_ms then closes without applying; latency_ms delays answers;
    // DELETE /faults restores normal answers.
    let sb = start_sandbox().await;
    let client = fresh_client(Duration::from_secs(8));
    let org = sb.org(json!({})).await;

    let drop = json!({"drop_after_apply_rate": 1.0});
    assert_eq!(org.control("PUT", "/faults", Some(&drop)).await.status, 200);
    let (r, took) = send_batch(&org, &client, "dropped").await;
    let e = r.err().expect("drop after apply must not answer");
    assert!(!e.is_timeout(), "{e:?}");
    assert!(took < Duration::from_secs(5));
    assert_eq!(
        org.stats().await["transactions_received"],
        1,
        "dropped request was applied"
    );

    let timeout = json!({"timeout_rate": 1.0, "timeout_ms": 400});
    assert_eq!(
        org.control("PUT", "/faults", Some(&timeout)).await.status,
        200
    );
    let (r, took) = send_batch(&org, &client, "timed-out").await;
    let e = r.err().expect("timeout fault must not answer");
    assert!(
        !e.is_timeout(),
        "server should close after timeout_ms, before the client gives up: {e:?}"
    );
    assert!(
        took >= Duration::from_millis(380) && took < Duration::from_secs(5),
        "took {took:?}"
    );
    assert_eq!(
        org.stats().await["transactions_received"],
        1,
        "timed-out request was applied"
    );

    let latency = json!({"latency_ms": 300});
    assert_eq!(
        org.control("PUT", "/faults", Some(&latency)).await.status,
        200
    );
    let (r, took) = send_batch(&org, &client, "slow").await;
    assert_eq!(r.expect("latency still answers").status, 200);
    assert!(
        took >= Duration::from_millis(290),
        "latency not applied: {took:?}"
    );

    let throttle = json!({"throttle_rate": 1.0});
    assert_eq!(
        org.control("PUT", "/faults", Some(&throttle)).await.status,
        200
    );
    let r = send_batch(&org, &client, "thr").await.0.unwrap();
    assert_eq!(
        (r.status, r.header("retry-after").as_deref()),
        (429, Some("1")),
        "default retry_after_s 1"
    );

    assert_eq!(org.control("DELETE", "/faults", None).await.status, 200);
    let (r, _) = send_batch(&org, &client, "normal").await;
    assert_eq!(r.unwrap().status, 200);
    assert_eq!(org.stats().await["transactions_received"], 3);
    sb.handle.stop().await;
}
