//! The partner writers: answer classification, request bodies, and each adapter's calls
//! against a scripted partner on loopback (the requests it saw, the answers it gave).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};
use steward_actors::ports::{PartnerAnswer, PartnerWriter};
use steward_actors::two_way::Fields;

use super::mailchimp::{self, MailchimpWriter};
use super::platform::{self, PlatformWriter};
use super::*;
use crate::tenant::PartnerApiDoc;

/// One request the scripted partner saw.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: String,
    auth: Option<String>,
    body: Value,
}

/// One scripted answer: status, headers, body.
type Scripted = (u16, Vec<(&'static str, String)>, String);

struct Stub {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    server: actix_web::dev::ServerHandle,
}

impl Stub {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// A partner on loopback answering `answers` in order (the last one again once they run out).
async fn scripted_partner(answers: Vec<Scripted>) -> Stub {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let script = Arc::new(Mutex::new(VecDeque::from(answers)));
    let (seen_by_server, script_of_server) = (Arc::clone(&seen), Arc::clone(&script));
    let server = HttpServer::new(move || {
        let seen = Arc::clone(&seen_by_server);
        let script = Arc::clone(&script_of_server);
        App::new().default_service(web::to(move |request: HttpRequest, body: web::Bytes| {
            let seen = Arc::clone(&seen);
            let script = Arc::clone(&script);
            async move {
                seen.lock().unwrap().push(Seen {
                    method: request.method().to_string(),
                    path: request.path().to_string(),
                    query: request.query_string().to_string(),
                    auth: request
                        .headers()
                        .get("authorization")
                        .and_then(|value| value.to_str().ok())
                        .map(str::to_string),
                    body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                });
                let (status, headers, body) = {
                    let mut script = script.lock().unwrap();
                    if script.len() > 1 {
                        script.pop_front().unwrap()
                    } else {
                        script.front().cloned().unwrap()
                    }
                };
                let mut answer =
                    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap());
                for header in headers {
                    answer.insert_header(header);
                }
                answer.body(body)
            }
        }))
    })
    .workers(1)
    .disable_signals()
    .bind("127.0.0.1:0")
    .unwrap();
    let url = format!("http://{}", server.addrs()[0]);
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(server);
    Stub {
        url,
        seen,
        server: handle,
    }
}

fn ok(body: Value) -> Scripted {
    (
        200,
        vec![("content-type", "application/json".into())],
        body.to_string(),
    )
}

fn fields(value: Value) -> Fields {
    serde_json::from_value(value).unwrap()
}

fn reply(status: u16, body: &str) -> Reply {
    Reply {
        status,
        retry_after_ms: Some(7_000),
        body: body.as_bytes().to_vec(),
    }
}

#[test]
fn answers_are_done_retry_or_refused_by_status() {
    // Goal: 2xx is the reply; 408, 429 and 5xx are Retry with the partner's Retry-After;
    // other 4xx are Refused with the partner's message; a bare 403 is Mailchimp's overload
    // answer only where the partner says so.
    assert!(classify("t", reply(201, "{}"), false).is_ok());
    for status in [408, 429, 500, 503] {
        match classify("t", reply(status, ""), false) {
            Err(Failure::Retry { after_ms, .. }) => assert_eq!(after_ms, Some(7_000)),
            other => panic!("{status}: {other:?}"),
        }
    }
    let problem = r#"{"title": "Invalid Resource", "status": 400, "detail": "Blocked address."}"#;
    match classify("PUT member", reply(400, problem), true) {
        Err(Failure::Refused { reason }) => {
            assert_eq!(
                reason,
                "PUT member answered 400: Invalid Resource: Blocked address."
            )
        }
        other => panic!("{other:?}"),
    }
    match classify(
        "t",
        reply(422, r#"{"error": "invalid_body", "message": "bad email"}"#),
        false,
    ) {
        Err(Failure::Refused { reason }) => assert!(reason.ends_with("invalid_body: bad email")),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        classify("t", reply(403, " "), true),
        Err(Failure::Retry { .. })
    ));
    assert!(matches!(
        classify("t", reply(403, " "), false),
        Err(Failure::Refused { .. })
    ));
    assert!(matches!(
        classify("t", reply(403, r#"{"title": "API Key Invalid"}"#), true),
        Err(Failure::Refused { .. })
    ));
    assert_eq!(partner_message(b"  "), "(no message)");
    assert_eq!(partner_message(b"plain\ntext"), "plain\\ntext");
    assert_eq!(partner_message(&[b'x'; 1_000]).len(), REASON_CHARS);
}

#[actix_rt::test]
async fn an_unreachable_partner_is_retried_later() {
    // Goal: a refused connection is Retry (never Refused, never a panic).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let writer = PlatformWriter::new(&context(), "p1", &api(&url)).unwrap();
    let answer = writer.list(None).await;
    assert!(matches!(answer, PartnerAnswer::Retry { .. }), "{answer:?}");
}

fn context() -> PartnerContext {
    PartnerContext {
        tenant_id: "hope".into(),
        http: reqwest::Client::new(),
        sandbox_base_url: None,
    }
}

// ---- Mailchimp ----

const KEY: &str = "0123456789abcdef-us21";

fn member(email: &str, hash: &str, tags: &[&str], status: &str) -> Value {
    json!({"id": hash, "email_address": email, "unique_email_id": "u1", "status": status,
           "merge_fields": {"FNAME": "Ann", "LNAME": ""}, "list_id": "list1",
           "tags": tags.iter().enumerate().map(|(i, t)| json!({"id": i, "name": t})).collect::<Vec<_>>(),
           "last_changed": "2026-01-02T03:04:05+00:00"})
}

fn basic_auth() -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("anystring:{KEY}"))
    )
}

#[test]
fn mailchimp_bodies_say_only_what_is_set() {
    // Goal: the subscriber hash is Mailchimp's (MD5 of the lower-cased email); the PUT body
    // carries the email always, the status only when `subscribed` is set (a new member's
    // from what is known, unsubscribed when nothing is), the names set; tags change by
    // difference, removals first.
    assert_eq!(
        mailchimp::subscriber_hash(" Urist.McVankab@FreddiesJokes.com "),
        "62eeb292278cc15f5817cb78f7790b08"
    );
    let body = mailchimp::put_body(
        "ann@x.org",
        &fields(json!({"subscribed": false})),
        &fields(json!({"first_name": "Ann", "last_name": null, "subscribed": true})),
    );
    assert_eq!(
        body,
        json!({"email_address": "ann@x.org", "status_if_new": "subscribed", "status": "subscribed",
               "merge_fields": {"FNAME": "Ann", "LNAME": ""}})
    );
    let body = mailchimp::put_body("ann@x.org", &Fields::new(), &fields(json!({"tags": ["a"]})));
    assert_eq!(
        body,
        json!({"email_address": "ann@x.org", "status_if_new": "unsubscribed", "merge_fields": {}})
    );
    let set = |tags: &[&str]| tags.iter().map(|t| t.to_string()).collect();
    assert_eq!(
        mailchimp::tag_changes(&set(&["a", "b"]), &set(&["b", "c"])),
        vec![
            json!({"name": "a", "status": "inactive"}),
            json!({"name": "c", "status": "active"})
        ]
    );
    let contact =
        mailchimp::member_contact(&member("Ann@X.org", "h", &["z", "a"], "pending"), "list1")
            .unwrap();
    assert_eq!(contact.id, "u1");
    assert_eq!(
        contact.fields,
        fields(
            json!({"email": "Ann@X.org", "first_name": "Ann", "last_name": null,
                      "tags": ["a", "z"], "subscribed": false})
        )
    );
    assert_eq!(contact.version_ms, Some(1_767_323_045_000));
}

#[actix_rt::test]
async fn a_mailchimp_member_is_put_by_its_current_address_then_its_tags_changed() {
    // Goal: an existing member is written at the hash of its current email with Basic auth;
    // then only the tag difference is posted (to the member's address now); the answer is
    // the member with those tags.
    let new_hash = mailchimp::subscriber_hash("ann@new.org");
    let stub = scripted_partner(vec![
        ok(member(
            "ann@new.org",
            &new_hash,
            &["a", "keep"],
            "subscribed",
        )),
        (204, vec![], String::new()),
    ])
    .await;
    let writer = MailchimpWriter::new(reqwest::Client::new(), &stub.url, KEY, "list1");
    let current = fields(json!({"email": "Ann@Old.org", "tags": ["a", "keep"]}));
    let set = fields(json!({"email": "ann@new.org", "tags": ["keep", "new"]}));
    let answer = writer.upsert(Some("u1"), &current, &set).await;
    let PartnerAnswer::Done(contact) = answer else {
        panic!("{answer:?}")
    };
    assert_eq!(contact.fields["tags"], json!(["keep", "new"]));
    assert_eq!(contact.fields["email"], json!("ann@new.org"));
    let seen = stub.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].method, "PUT");
    assert_eq!(
        seen[0].path,
        format!(
            "/3.0/lists/list1/members/{}",
            mailchimp::subscriber_hash("ann@old.org")
        )
    );
    assert_eq!(seen[0].auth.as_deref(), Some(basic_auth().as_str()));
    assert_eq!(seen[0].body["email_address"], "ann@new.org");
    assert_eq!(seen[1].method, "POST");
    assert_eq!(
        seen[1].path,
        format!("/3.0/lists/list1/members/{new_hash}/tags")
    );
    assert_eq!(
        seen[1].body,
        json!({"tags": [{"name": "a", "status": "inactive"}, {"name": "new", "status": "active"}]})
    );
    stub.server.stop(true).await;
}

#[actix_rt::test]
async fn a_mailchimp_create_and_a_repeated_email_change_land_on_one_member() {
    // Goal: a create (no partner id) is addressed by the hash of the email it sets, so a
    // repeat upserts the same member; an email change whose first attempt landed (its
    // answer lost) meets `Member Exists` at the old address and is written at the new one.
    let new_hash = mailchimp::subscriber_hash("ann@new.org");
    let stub = scripted_partner(vec![ok(member(
        "ann@new.org",
        &new_hash,
        &[],
        "subscribed",
    ))])
    .await;
    let writer = MailchimpWriter::new(reqwest::Client::new(), &stub.url, KEY, "list1");
    let set = fields(json!({"email": "Ann@New.org", "first_name": "Ann", "subscribed": true}));
    for _ in 0..2 {
        let answer = writer.upsert(None, &Fields::new(), &set).await;
        assert!(matches!(answer, PartnerAnswer::Done(_)), "{answer:?}");
    }
    let seen = stub.seen();
    assert_eq!(seen.len(), 2, "no tags set: no tag call");
    for request in &seen {
        assert_eq!(request.path, format!("/3.0/lists/list1/members/{new_hash}"));
        assert_eq!(request.body["status_if_new"], "subscribed");
    }
    stub.server.stop(true).await;

    let exists = r#"{"title": "Member Exists", "status": 400, "detail": "ann@new.org is already a list member."}"#;
    let stub = scripted_partner(vec![
        (400, vec![], exists.into()),
        ok(member("ann@new.org", &new_hash, &[], "subscribed")),
    ])
    .await;
    let writer = MailchimpWriter::new(reqwest::Client::new(), &stub.url, KEY, "list1");
    let current = fields(json!({"email": "ann@old.org"}));
    let answer = writer
        .upsert(
            Some("u1"),
            &current,
            &fields(json!({"email": "ann@new.org"})),
        )
        .await;
    assert!(matches!(answer, PartnerAnswer::Done(_)), "{answer:?}");
    let paths: Vec<String> = stub.seen().into_iter().map(|seen| seen.path).collect();
    assert_eq!(
        paths,
        [
            format!(
                "/3.0/lists/list1/members/{}",
                mailchimp::subscriber_hash("ann@old.org")
            ),
            format!("/3.0/lists/list1/members/{new_hash}")
        ]
    );
    stub.server.stop(true).await;
}

#[actix_rt::test]
async fn mailchimp_refusals_and_limits_are_answered_not_retried() {
    // Goal: a 400 problem is Refused with its detail (one call, no retry inside); a 429
    // is Retry with its Retry-After; a member write without any email is refused unsent.
    let problem = r#"{"title": "Invalid Resource", "status": 400, "detail": "looks fake"}"#;
    let stub = scripted_partner(vec![
        (400, vec![], problem.into()),
        (429, vec![("retry-after", "7".into())], String::new()),
    ])
    .await;
    let writer = MailchimpWriter::new(reqwest::Client::new(), &stub.url, KEY, "list1");
    let set = fields(json!({"email": "a@x.org"}));
    match writer.upsert(None, &Fields::new(), &set).await {
        PartnerAnswer::Refused { reason } => assert!(reason.contains("looks fake"), "{reason}"),
        other => panic!("{other:?}"),
    }
    match writer.upsert(None, &Fields::new(), &set).await {
        PartnerAnswer::Retry { after_ms, .. } => assert_eq!(after_ms, Some(7_000)),
        other => panic!("{other:?}"),
    }
    assert_eq!(stub.seen().len(), 2);
    let answer = writer
        .upsert(
            Some("u1"),
            &Fields::new(),
            &fields(json!({"first_name": "A"})),
        )
        .await;
    assert!(
        matches!(answer, PartnerAnswer::Refused { .. }),
        "{answer:?}"
    );
    assert_eq!(stub.seen().len(), 2, "nothing sent without an email");
    stub.server.stop(true).await;
}

#[actix_rt::test]
async fn the_mailchimp_listing_pages_by_offset() {
    // Goal: pages of `count=1000` at growing offsets; the cursor is the next offset; the
    // listing ends at `total_items`; unreadable members are left out, the rest kept.
    let page = |members: Vec<Value>| ok(json!({"members": members, "total_items": 3}));
    let stub = scripted_partner(vec![
        page(vec![
            member("a@x.org", "ha", &[], "subscribed"),
            member("b@x.org", "hb", &[], "unsubscribed"),
        ]),
        page(vec![json!({"email_address": "c@x.org"})]),
    ])
    .await;
    let writer = MailchimpWriter::new(reqwest::Client::new(), &stub.url, KEY, "list1");
    let PartnerAnswer::Done(first) = writer.list(None).await else {
        panic!("first page")
    };
    assert_eq!(first.contacts.len(), 2);
    assert_eq!(first.next_cursor.as_deref(), Some("2"));
    let PartnerAnswer::Done(second) = writer.list(first.next_cursor).await else {
        panic!("second page")
    };
    assert!(second.contacts.is_empty());
    assert_eq!(second.next_cursor, None);
    let queries: Vec<String> = stub.seen().into_iter().map(|seen| seen.query).collect();
    assert_eq!(queries, ["count=1000&offset=0", "count=1000&offset=2"]);
    let answer = writer.list(Some("x".into())).await;
    assert!(
        matches!(answer, PartnerAnswer::Refused { .. }),
        "{answer:?}"
    );
    stub.server.stop(true).await;
}

// ---- Generic platform ----

const AUTH: &str = "Bearer partner-token-1234";

fn api(url: &str) -> PartnerApiDoc {
    PartnerApiDoc {
        url: url.to_string(),
        auth_header: "Authorization".into(),
        auth_value: Some(AUTH.into()),
    }
}

#[test]
fn platform_creates_use_a_stable_id_and_bodies_carry_only_the_set_fields() {
    // Goal: a create's id depends only on the lower-cased email (or, without one, on the
    // fields), so a repeated create upserts the same contact; the body names only the
    // fields set; a contact reads back with its version.
    let id = platform::create_id(&fields(
        json!({"email": " Ann@Example.org", "first_name": "A"}),
    ));
    assert_eq!(id, "steward-438c4c7afe600cdf");
    assert_eq!(
        platform::create_id(&fields(json!({"email": "ann@example.org"}))),
        id
    );
    let no_email = fields(json!({"first_name": "A", "tags": ["x"]}));
    assert_eq!(
        platform::create_id(&no_email),
        platform::create_id(&no_email.clone())
    );
    assert_ne!(platform::create_id(&no_email), id);
    assert_eq!(
        platform::put_body(&fields(
            json!({"last_name": null, "tags": ["b", "a"], "subscribed": true})
        )),
        json!({"last_name": null, "tags": ["a", "b"], "subscribed": true})
    );
    let contact = platform::contact_of(&json!({"id": 42, "email": "a@x.org", "first_name": "",
        "tags": ["t"], "subscribed": false, "updated_at": "1970-01-01T00:00:01.002Z", "version": 3}))
    .unwrap();
    assert_eq!(contact.id, "42");
    assert_eq!(
        contact.fields,
        fields(json!({"email": "a@x.org", "first_name": null, "tags": ["t"], "subscribed": false}))
    );
    assert_eq!(contact.version_ms, Some(1_002));
    assert!(platform::contact_of(&json!({"email": "a@x.org"})).is_none());
}

#[actix_rt::test]
async fn a_platform_contact_is_put_by_id_with_the_auth_header() {
    // Goal: `PUT {url}/contacts/{id}` with the configured header; a create puts at the
    // derived id; 201 is Done; 5xx is Retry and 422 is Refused with the partner's message.
    let contact = json!({"id": "c1", "email": "a@x.org", "first_name": "A", "last_name": null,
        "tags": [], "subscribed": true, "updated_at": "2026-01-02T03:04:05.006Z", "version": 2,
        "updated_by": "api"});
    let stub = scripted_partner(vec![
        ok(contact.clone()),
        (201, vec![], contact.to_string()),
        (503, vec![("retry-after", "3".into())], String::new()),
        (
            422,
            vec![],
            r#"{"error": "invalid_body", "message": "email is not an email"}"#.into(),
        ),
    ])
    .await;
    let writer = PlatformWriter::new(
        &context(),
        "p1",
        &api(&format!("{}/partners/p1/", stub.url)),
    )
    .unwrap();
    let set = fields(json!({"first_name": "A"}));
    let answer = writer.upsert(Some("c1"), &Fields::new(), &set).await;
    let PartnerAnswer::Done(done) = answer else {
        panic!("{answer:?}")
    };
    assert_eq!(done.id, "c1");
    assert_eq!(done.version_ms, Some(1_767_323_045_006));
    let created = writer
        .upsert(
            None,
            &Fields::new(),
            &fields(json!({"email": "Ann@Example.org"})),
        )
        .await;
    assert!(matches!(created, PartnerAnswer::Done(_)), "{created:?}");
    match writer.upsert(Some("c1"), &Fields::new(), &set).await {
        PartnerAnswer::Retry { after_ms, .. } => assert_eq!(after_ms, Some(3_000)),
        other => panic!("{other:?}"),
    }
    match writer.upsert(Some("c1"), &Fields::new(), &set).await {
        PartnerAnswer::Refused { reason } => {
            assert!(reason.contains("email is not an email"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    let seen = stub.seen();
    assert_eq!(seen[0].method, "PUT");
    assert_eq!(seen[0].path, "/partners/p1/contacts/c1");
    assert_eq!(seen[0].auth.as_deref(), Some(AUTH));
    assert_eq!(seen[0].body, json!({"first_name": "A"}));
    assert_eq!(
        seen[1].path,
        "/partners/p1/contacts/steward-438c4c7afe600cdf"
    );
    assert_eq!(seen[1].body, json!({"email": "Ann@Example.org"}));
    stub.server.stop(true).await;
}

#[actix_rt::test]
async fn the_platform_listing_follows_next_cursor() {
    // Goal: `GET {url}/contacts?limit=500` then `&cursor=` from the page; `null` ends it;
    // items without an id are left out.
    let stub = scripted_partner(vec![
        ok(
            json!({"items": [{"id": "c1", "email": "a@x.org"}, {"email": "no-id@x.org"}],
                  "next_cursor": "k 1"}),
        ),
        ok(json!({"items": [{"id": "c2"}], "next_cursor": null})),
    ])
    .await;
    let writer =
        PlatformWriter::new(&context(), "p1", &api(&format!("{}/partners/p1", stub.url))).unwrap();
    let PartnerAnswer::Done(first) = writer.list(None).await else {
        panic!("first page")
    };
    assert_eq!(first.contacts.len(), 1);
    assert_eq!(first.next_cursor.as_deref(), Some("k 1"));
    let PartnerAnswer::Done(second) = writer.list(first.next_cursor).await else {
        panic!("second page")
    };
    assert_eq!(second.contacts[0].id, "c2");
    assert_eq!(second.next_cursor, None);
    let seen = stub.seen();
    assert_eq!(seen[0].path, "/partners/p1/contacts");
    assert_eq!(seen[0].query, "limit=500");
    assert_eq!(seen[1].query, "limit=500&cursor=k+1");
    stub.server.stop(true).await;
}

#[test]
fn writers_are_built_per_pair_and_embedded_urls_need_the_sandbox() {
    // Goal: one writer per pair; `embedded` forms resolve against the sandbox and fail to
    // build (logged, the tenant runs without the pair) when it is off.
    let body = json!({"id": "hope", "name": "Hope", "virtuous": {"api_key": "vk"},
        "sources": {"mailchimp": {"api_key": KEY, "list_id": "list1", "base_url": "embedded"},
                    "platforms": {"gala": {"secret": "s", "transaction_source": "GalaCo"}}},
        "two_way": {"mailchimp": {}, "platform:gala": {"api": {"url": "embedded", "auth_value": AUTH}}}});
    let (doc, _) = crate::tenant::normalise(&body).unwrap();
    let with_sandbox = PartnerContext {
        sandbox_base_url: Some("http://127.0.0.1:9".into()),
        ..context()
    };
    let (specs, errors) = partners_for(&with_sandbox, &doc);
    assert!(errors.is_empty(), "{errors:?}");
    let pairs: Vec<&str> = specs.iter().map(|spec| spec.pair.as_str()).collect();
    assert_eq!(pairs, ["mailchimp", "platform:gala"]);
    let (specs, errors) = partners_for(&context(), &doc);
    assert!(specs.is_empty());
    assert_eq!(errors.len(), 2, "{errors:?}");
}
