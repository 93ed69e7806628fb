//! Hostile clients at ingress (issue 11, items 1, 2, 4, 5): bodies are only read for a
//! tenant and source that can accept them, within byte caps (global and per tenant), a read
//! deadline, a connection limit and a per-tenant in-flight cap; refusals are `503
//! overloaded` + `Retry-After` and store nothing; values from outside are escaped in the log
//! and malformed HTTP requests are counted, not logged as errors.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{at_timeout, queued_total, tenant_body, wait_until, SpawnOptions, TestApp};
use crate::ingress_support::{one_time_charge, post_stripe, stripe_event, stripe_secret, BASIL};

const MIB: usize = 1024 * 1024;

fn options(settings: &[(&str, &str)]) -> SpawnOptions {
    SpawnOptions {
        env: settings
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect(),
        ..SpawnOptions::default()
    }
}

fn socket_address(app: &TestApp) -> String {
    app.main_url.trim_start_matches("http://").to_string()
}

/// Opens a connection and sends a POST head declaring `declared_bytes` of body, then
/// `sent_bytes` of it: the rest is held back.
async fn hold_body(
    app: &TestApp,
    path: &str,
    declared_bytes: usize,
    sent_bytes: usize,
) -> TcpStream {
    let mut stream = TcpStream::connect(socket_address(app)).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: steward\r\nContent-Type: application/json\r\nContent-Length: {declared_bytes}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&vec![b' '; sent_bytes]).await.unwrap();
    stream
}

/// An HTTP answer read off a raw connection: status, JSON body, the raw head.
#[derive(Debug)]
struct RawAnswer {
    status: u16,
    head: String,
    body: Value,
}

/// Reads one answer from `stream` within `timeout` (`None`: no complete answer in time).
async fn read_answer(stream: &mut TcpStream, timeout: Duration) -> Option<RawAnswer> {
    let mut received = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(answer) = parse_answer(&received) {
            return Some(answer);
        }
        let mut buffer = [0u8; 4096];
        let read = tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await;
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => return parse_answer(&received),
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
            Err(_) => return None,
        }
    }
}

fn parse_answer(received: &[u8]) -> Option<RawAnswer> {
    let text = String::from_utf8_lossy(received);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    if body.len() < length {
        return None;
    }
    Some(RawAnswer {
        status,
        head: head.to_string(),
        body: serde_json::from_str(body).unwrap_or(Value::Null),
    })
}

/// Whether the server closes `stream` within `timeout` (reads hit EOF or a reset).
async fn closed_within(stream: &mut TcpStream, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

fn assert_overloaded(answer: &RawAnswer) {
    assert_eq!(answer.status, 503, "{answer:?}");
    assert_eq!(answer.body["error"]["code"], "overloaded", "{answer:?}");
    assert!(
        answer.head.to_ascii_lowercase().contains("retry-after:"),
        "{answer:?}"
    );
}

/// A complete signed Stripe delivery over a raw connection, its answer within 5 s.
async fn stripe_over_raw(app: &TestApp, tenant_id: &str, event: &Value) -> Option<RawAnswer> {
    let body = event.to_string();
    let signature = steward::sources::stripe::sign_header(
        &stripe_secret(tenant_id),
        crate::ingress_support::now_s(),
        body.as_bytes(),
    );
    let mut stream = TcpStream::connect(socket_address(app)).await.unwrap();
    let request = format!(
        "POST /hooks/{tenant_id}/stripe HTTP/1.1\r\nHost: steward\r\nContent-Type: application/json\r\nStripe-Signature: {signature}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    read_answer(&mut stream, Duration::from_secs(5)).await
}

fn charge_event(n: &str) -> Value {
    stripe_event(
        &format!("evt_{n}"),
        "charge.succeeded",
        BASIL,
        one_time_charge(n, 1500),
    )
}

#[tokio::test]
async fn held_bodies_past_the_byte_caps_are_refused_overloaded_and_released_on_close() {
    // Goal: bodies being read (the bytes received so far) count against the per-tenant and
    // the global cap of bytes being read; past a cap a delivery is answered 503 `overloaded`
    // + Retry-After at once and stores nothing, a neighbour within the caps is served, and
    // closing the held connections releases their bytes.
    let app = TestApp::spawn(options(&[
        (
            "STEWARD_INGRESS__MAX_BODY_BYTES_IN_FLIGHT_PER_TENANT",
            &(16 * MIB).to_string(),
        ),
        (
            "STEWARD_INGRESS__MAX_BODY_BYTES_IN_FLIGHT",
            &(24 * MIB).to_string(),
        ),
    ]))
    .await;
    for id in ["cap-a", "cap-b", "cap-c"] {
        app.create_tenant(&tenant_body(id)).await;
    }
    let mut held = Vec::new();
    // Each sends all but the last KiB of an 8 MiB body.
    for _ in 0..2 {
        held.push(hold_body(&app, "/hooks/cap-a/virtuous", 8 * MIB, 8 * MIB - 1024).await);
    }
    // cap-a's 16 MiB are taken (once the server has read them): its next delivery is
    // refused, whatever its size.
    let mut attempts = 0;
    let accepted_before_refusal = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let refused = wait_until(
        Duration::from_secs(10),
        "cap-a to be refused 503 overloaded",
        || {
            attempts += 1;
            let event = charge_event(&format!("capa{attempts}"));
            let app = &app;
            let accepted = std::sync::Arc::clone(&accepted_before_refusal);
            async move {
                let answer = stripe_over_raw(app, "cap-a", &event).await?;
                if answer.status == 202 {
                    accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                (answer.status == 503).then_some(answer)
            }
        },
    )
    .await;
    assert_overloaded(&refused);
    // A neighbour within both caps is served meanwhile.
    let neighbour = post_stripe(
        &app,
        "cap-b",
        &stripe_secret("cap-b"),
        &charge_event("capb1"),
    )
    .await;
    assert_eq!(neighbour.0, 202, "{neighbour:?}");
    // cap-b holds 8 MiB more: 24 MiB in all, the global cap; cap-c is refused too.
    held.push(hold_body(&app, "/hooks/cap-b/virtuous", 8 * MIB, 8 * MIB - 1024).await);
    let refused = wait_until(
        Duration::from_secs(10),
        "cap-c to be refused 503 overloaded",
        || {
            let app = &app;
            async move {
                let answer = stripe_over_raw(app, "cap-c", &charge_event("capc1")).await?;
                (answer.status == 503).then_some(answer)
            }
        },
    )
    .await;
    assert_overloaded(&refused);
    assert_eq!(queued_total(&app.status("cap-c").await), 0);

    drop(held);
    let accepted = wait_until(
        Duration::from_secs(10),
        "cap-a to be served once the held bodies are closed",
        || {
            let app = &app;
            async move {
                let answer = stripe_over_raw(app, "cap-a", &charge_event("capa-after")).await?;
                (answer.status == 202).then_some(answer)
            }
        },
    )
    .await;
    assert_eq!(accepted.body["status"], "queued", "{accepted:?}");
    // Only the accepted deliveries were stored: the refused ones left nothing.
    assert_eq!(
        queued_total(&app.status("cap-a").await),
        accepted_before_refusal.load(std::sync::atomic::Ordering::Relaxed) + 1
    );
}

#[tokio::test]
async fn deliveries_a_tenant_cannot_accept_are_answered_before_the_body_arrives() {
    // Goal: an unknown tenant, an unconfigured source and a missing webhook secret are
    // answered at once, without waiting for (or reading) the declared body.
    let app = TestApp::spawn(SpawnOptions::default()).await;
    let mut bare = tenant_body("bare");
    bare["sources"] = json!({"platforms": {}});
    bare["virtuous"]
        .as_object_mut()
        .unwrap()
        .remove("webhook_secret");
    app.create_tenant(&bare).await;
    let cases = [
        ("/hooks/nobody/stripe", 404, "unknown_tenant"),
        ("/hooks/bare/stripe", 404, "not_found"),
        ("/hooks/bare/platform/auction-co", 404, "not_found"),
        ("/hooks/bare/virtuous", 401, "bad_signature"),
    ];
    for (path, status, code) in cases {
        let mut stream = hold_body(&app, path, MIB, 10).await;
        let started = Instant::now();
        let answer = read_answer(&mut stream, Duration::from_secs(3))
            .await
            .unwrap_or_else(|| panic!("{path}: no answer within 3 s while the body is held"));
        assert_eq!(
            (answer.status, answer.body["error"]["code"].as_str()),
            (status, Some(code)),
            "{path}: {answer:?} after {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn trickled_bodies_are_cut_at_the_read_deadline_within_the_connection_limit() {
    // Goal: bodies trickled a byte at a time are answered 408 (JSON) and closed at the body
    // read deadline; while they trickle the process holds no more sockets than
    // `max_connections`, and a neighbour's delivery still succeeds.
    const TRICKLERS: usize = 40;
    const MAX_CONNECTIONS: usize = 16;
    let app = TestApp::spawn(options(&[
        ("STEWARD_INGRESS__BODY_READ_TIMEOUT_S", "1"),
        (
            "STEWARD_INGRESS__MAX_CONNECTIONS",
            &MAX_CONNECTIONS.to_string(),
        ),
    ]))
    .await;
    app.create_tenant(&tenant_body("slow")).await;
    app.create_tenant(&tenant_body("steady")).await;
    let pid = app.child.as_ref().unwrap().id();
    let sockets = move || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
            .filter(|target| target.to_string_lossy().starts_with("socket:"))
            .count()
    };
    let sockets_before = sockets();

    let mut tricklers = Vec::new();
    for _ in 0..TRICKLERS {
        let mut stream = hold_body(&app, "/hooks/slow/stripe", 1_000, 1).await;
        tricklers.push(tokio::spawn(async move {
            let started = Instant::now();
            let mut buffer = [0u8; 4096];
            let mut received = Vec::new();
            loop {
                tokio::select! {
                    read = stream.read(&mut buffer) => match read {
                        Ok(0) | Err(_) => break,
                        Ok(n) => received.extend_from_slice(&buffer[..n]),
                    },
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {
                        if stream.write_all(b" ").await.is_err() {
                            break;
                        }
                    }
                }
                if started.elapsed() > Duration::from_secs(20) {
                    return (None, started.elapsed());
                }
            }
            (parse_answer(&received), started.elapsed())
        }));
    }
    let mut sockets_max = 0;
    let (steady_secret, steady_event) = (stripe_secret("steady"), charge_event("steady1"));
    let neighbour = {
        let deliver = post_stripe(&app, "steady", &steady_secret, &steady_event);
        tokio::pin!(deliver);
        loop {
            tokio::select! {
                answer = &mut deliver => break answer,
                _ = tokio::time::sleep(Duration::from_millis(50)) => {
                    sockets_max = sockets_max.max(sockets());
                }
            }
        }
    };
    assert_eq!(neighbour.0, 202, "{neighbour:?}");
    for trickler in tricklers {
        sockets_max = sockets_max.max(sockets());
        let (answer, elapsed) = trickler.await.unwrap();
        let answer =
            answer.unwrap_or_else(|| panic!("a trickled body was never cut ({elapsed:?})"));
        assert_eq!(answer.status, 408, "{answer:?}");
        assert_eq!(
            answer.body["error"]["code"], "request_timeout",
            "{answer:?}"
        );
    }
    // The listener's sockets plus at most MAX_CONNECTIONS accepted ones (a few of the
    // process's own client sockets may come and go: slack of 8).
    assert!(
        sockets_max <= sockets_before + MAX_CONNECTIONS + 8,
        "{sockets_max} sockets open while trickling (before: {sockets_before})"
    );
    assert_eq!(queued_total(&app.status("slow").await), 0);
}

#[tokio::test]
async fn a_tenant_past_its_in_flight_cap_is_refused_and_a_neighbour_is_not() {
    // Goal: with `max_in_flight_per_tenant` verified deliveries of a tenant being written
    // (its Capture stalled), its next one is answered 503 `overloaded` + Retry-After after
    // `admission_wait_ms` and stores nothing, a neighbour is served, and the tenant is served
    // again once its deliveries finish; bodies still being read take no place.
    let app = TestApp::spawn(options(&[
        ("STEWARD_INGRESS__MAX_IN_FLIGHT_PER_TENANT", "2"),
        ("STEWARD_INGRESS__MAX_IN_FLIGHT_ALONE", "2"),
        ("STEWARD_INGRESS__ADMISSION_WAIT_MS", "200"),
        ("STEWARD_RUNTIME__HEARTBEAT_MS", "2000"),
        ("STEWARD_RUNTIME__RESTART_BACKOFF_INITIAL_MS", "50"),
    ]))
    .await;
    app.create_tenant(&tenant_body("busy")).await;
    app.create_tenant(&tenant_body("calm")).await;
    // Unverified bodies being read hold no place: these never stop busy's deliveries.
    let _unverified = [
        hold_body(&app, "/hooks/busy/stripe", 1_000, 10).await,
        hold_body(&app, "/hooks/busy/stripe", 1_000, 10).await,
        hold_body(&app, "/hooks/busy/stripe", 1_000, 10).await,
    ];
    let first = stripe_over_raw(&app, "busy", &charge_event("busy-first")).await;
    assert_eq!(first.map(|answer| answer.status), Some(202));
    let stall = app
        .admin(
            reqwest::Method::POST,
            "/v1/tenants/busy/_test/kill/capture?mode=stall",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(stall.status(), 202);
    wait_until(
        Duration::from_secs(10),
        "busy's capture stalled",
        || async {
            let status = app.status("busy").await;
            (status["actors"]["capture"]["observed"]["stalled_by_test_hook"] == true).then_some(())
        },
    )
    .await;
    // Two verified deliveries take both places and wait on the stalled Capture.
    let writing: Vec<_> = (0..2)
        .map(|n| {
            let app_url = app.main_url.clone();
            let event = charge_event(&format!("busy-writing{n}"));
            tokio::spawn(async move { stripe_status(&app_url, "busy", &event).await })
        })
        .collect();
    wait_until(
        Duration::from_secs(10),
        "both writes at the stalled capture",
        || async {
            let status = app.status("busy").await;
            (status["actors"]["capture"]["mailbox_depth"] == 2).then_some(())
        },
    )
    .await;
    let started = Instant::now();
    let refused = stripe_over_raw(&app, "busy", &charge_event("busy-refused"))
        .await
        .expect("an answer");
    assert_overloaded(&refused);
    assert!(
        started.elapsed() >= Duration::from_millis(190),
        "refused only after waiting admission_wait_ms ({:?})",
        started.elapsed()
    );
    let neighbour = post_stripe(&app, "calm", &stripe_secret("calm"), &charge_event("calm1")).await;
    assert_eq!(neighbour.0, 202, "{neighbour:?}");

    // The stalled Capture is replaced; the two writes are answered and their places freed.
    let mut accepted = 1;
    for task in writing {
        let status = task.await.unwrap();
        assert!([202, 503].contains(&status), "{status}");
        accepted += u64::from(status == 202);
    }
    wait_until(
        Duration::from_secs(10),
        "busy to be served once its deliveries finish",
        || {
            let app = &app;
            async move {
                let answer = stripe_over_raw(app, "busy", &charge_event("busy-after")).await?;
                (answer.status == 202).then_some(())
            }
        },
    )
    .await;
    // Stored: exactly the deliveries answered 202 (the refused one left nothing); counted as
    // captured, since the submitter may already have sent some on.
    assert_eq!(app.status("busy").await["counts"]["captured"], accepted + 1);
}

/// Posts a signed Stripe event with reqwest; the status.
async fn stripe_status(main_url: &str, tenant_id: &str, event: &Value) -> u16 {
    let body = event.to_string().into_bytes();
    let signature = steward::sources::stripe::sign_header(
        &stripe_secret(tenant_id),
        crate::ingress_support::now_s(),
        &body,
    );
    reqwest::Client::new()
        .post(format!("{main_url}/hooks/{tenant_id}/stripe"))
        .header("Stripe-Signature", signature)
        .body(body)
        .send()
        .await
        .map(|response| response.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_charge_id_cannot_forge_a_log_line() {
    // Goal: a signed Stripe event whose charge id holds a newline and escape bytes is logged
    // with the id escaped: no forged line, no raw control byte in the log.
    let app = TestApp::spawn(SpawnOptions::default()).await;
    app.create_tenant(&tenant_body("inject")).await;
    let forged_id = "ch_forge\n2030-01-01T00:00:00.000000Z ERROR steward: forged line \u{1b}[2J";
    let mut charge = one_time_charge("inject", 1500);
    charge["id"] = json!(forged_id);
    charge["currency"] = Value::Null;
    let event = stripe_event("evt_inject", "charge.succeeded", BASIL, charge);
    let answer = post_stripe(&app, "inject", &stripe_secret("inject"), &event).await;
    assert_eq!(answer.1["status"], "rejected", "{answer:?}");
    wait_until(
        Duration::from_secs(10),
        at_timeout(|| format!("the rejection in the log:\n{}", app.log())),
        || {
            let log = app.log();
            async move {
                (log.contains("stripe event rejected") && log.contains("alert raised"))
                    .then_some(())
            }
        },
    )
    .await;
    let log = app.log();
    assert!(
        !log.lines().any(|line| line.starts_with("2030-01-01")),
        "a forged line:\n{log}"
    );
    assert!(!log.contains('\u{1b}'), "a raw escape byte:\n{log:?}");
}

#[tokio::test]
async fn malformed_requests_are_counted_and_not_logged_as_errors() {
    // Goal: garbage on the ingress port is counted in
    // `steward_http_malformed_requests_total` and leaves no ERROR line in the log.
    let app = TestApp::spawn(SpawnOptions::default()).await;
    for _ in 0..5 {
        let mut stream = TcpStream::connect(socket_address(&app)).await.unwrap();
        stream
            .write_all(b"GARBAGE \x00\x01\x02 HTTP/9.9\r\nNo colon here\r\n\r\n")
            .await
            .unwrap();
        let _ = closed_within(&mut stream, Duration::from_secs(5)).await;
    }
    let counted = wait_until(
        Duration::from_secs(5),
        "steward_http_malformed_requests_total to count the garbage",
        || {
            let app = &app;
            async move {
                let metrics = app.metrics_text().await;
                let value: f64 = metrics
                    .lines()
                    .find(|line| line.starts_with("steward_http_malformed_requests_total"))?
                    .rsplit(' ')
                    .next()?
                    .parse()
                    .ok()?;
                (value >= 5.0).then_some(value)
            }
        },
    )
    .await;
    assert!(counted >= 5.0);
    let log = app.log();
    assert!(
        !log.lines().any(|line| line.contains(" ERROR ")),
        "an ERROR line for a malformed request:\n{log}"
    );
}

#[tokio::test]
async fn a_client_that_drops_mid_body_gives_its_bytes_back() {
    // Goal: a delivery whose client closes the connection before the whole body arrived
    // gives back the bytes it had reserved at once, not at the read deadline: the tenant's
    // byte cap (1 MiB) is free again for the next delivery.
    let app = TestApp::spawn(options(&[
        ("STEWARD_BODY_LIMIT_BYTES", &MIB.to_string()),
        ("STEWARD_VIRTUOUS_BODY_LIMIT_BYTES", &MIB.to_string()),
        (
            "STEWARD_INGRESS__MAX_BODY_BYTES_IN_FLIGHT_PER_TENANT",
            &MIB.to_string(),
        ),
    ]))
    .await;
    app.create_tenant(&tenant_body("quitter")).await;
    // Each pins all but 1 KiB of the cap (a probe event is larger than that): one held body
    // not given back would refuse the probe until the read deadline (10 s).
    for _ in 0..4 {
        let mut stream = TcpStream::connect(socket_address(&app)).await.unwrap();
        let head = format!(
            "POST /hooks/quitter/stripe HTTP/1.1\r\nHost: steward\r\nContent-Length: {MIB}\r\n\r\n"
        );
        // A body refused because the previous one is not yet given back fails to send: fine.
        let _ = stream.write_all(head.as_bytes()).await;
        let _ = stream.write_all(&vec![b' '; MIB - 1024]).await;
        drop(stream);
    }
    let answer = wait_until(
        Duration::from_secs(3),
        "quitter to be served after its clients quit",
        || {
            let app = &app;
            async move {
                let answer = stripe_over_raw(app, "quitter", &charge_event("quit1")).await?;
                (answer.status == 202).then_some(answer)
            }
        },
    )
    .await;
    assert_eq!(answer.body["status"], "queued");
}
