//! The Constant Contact poller against the sandbox's simulator over real loopback HTTP, with
//! a real sled store in a temp dir.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use steward_actors::poll::{PollFetch, PollPage, PollRequest, PolledItem, PollerSpec};
use steward_actors::store::{MasterKey, Store, StoreOptions, TenantStore};
use steward_sandbox::constant_contact::{AccountSpec, RefreshTokenKind};
use steward_sandbox::{SandboxConfig, SandboxHandle};

use super::oauth::{ROTATED_FIELD, STATE_KEY, STATE_NAME};
use super::*;
use crate::sources::polling::{pollers_for, shared_http, PollContext};
use crate::tenant::TenantDoc;

const TENANT: &str = "t1";

struct Harness {
    _dir: tempfile::TempDir,
    store: Store,
    tenant_store: TenantStore,
    master_key: MasterKey,
    sandbox: SandboxHandle,
    http: reqwest::Client,
}

impl Harness {
    async fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store"), StoreOptions::default()).unwrap();
        let tenant_store = store.tenant(TENANT).unwrap();
        let (master_key, _) = MasterKey::load_or_create(dir.path(), None).unwrap();
        let sandbox = steward_sandbox::start(SandboxConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            workers: 1,
        })
        .await
        .unwrap();
        Harness {
            _dir: dir,
            store,
            tenant_store,
            master_key,
            sandbox,
            http: reqwest::Client::new(),
        }
    }

    /// An account `id` with client `client-{id}` / `secret` and refresh token `rt-{id}`.
    fn account(&self, id: &str, kind: RefreshTokenKind, per_second_limit: u64) {
        let mut spec = AccountSpec::new(id, format!("client-{id}"), "secret", format!("rt-{id}"));
        spec.refresh_token_kind = kind;
        spec.per_second_limit = per_second_limit;
        self.sandbox.create_constant_contact_account(spec).unwrap();
    }

    fn context(&self, tenant_store: &TenantStore) -> PollContext {
        PollContext {
            tenant_id: TENANT.to_owned(),
            http: shared_http(),
            sandbox_base_url: Some(self.sandbox.base_url()),
            store: self.store.clone(),
            tenant_store: tenant_store.clone(),
            master_key: self.master_key.clone(),
        }
    }

    /// A new poller instance (what a restart or a changed document builds) for account `id`
    /// whose document holds `refresh_token`.
    fn poller(&self, id: &str, refresh_token: &str) -> PollerSpec {
        self.poller_on(&self.tenant_store, id, refresh_token)
    }

    fn poller_on(&self, tenant_store: &TenantStore, id: &str, refresh_token: &str) -> PollerSpec {
        let doc = doc(json!({"base_url": "embedded", "token_url": "embedded",
            "client_id": format!("client-{id}"), "client_secret": "secret",
            "refresh_token": refresh_token, "interval_s": 60}));
        poller_spec(&self.context(tenant_store), &doc)
            .unwrap()
            .unwrap()
    }

    async fn control(&self, method: Method, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .request(
                method,
                format!(
                    "{}/_sandbox/constant-contact{path}",
                    self.sandbox.base_url()
                ),
            )
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn generate(&self, id: &str, count: u64, updated_at: &str) -> Vec<String> {
        let (status, created) = self
            .control(
                Method::POST,
                &format!("/accounts/{id}/contacts"),
                json!({"generate": {"count": count, "updated_at": updated_at,
                                    "list_memberships": ["list-a"]}}),
            )
            .await;
        assert_eq!(status, 201, "{created}");
        serde_json::from_value(created["contact_ids"].clone()).unwrap()
    }

    async fn script(&self, id: &str, steps: Value) {
        let (status, body) = self
            .control(
                Method::POST,
                &format!("/accounts/{id}/script"),
                json!({ "steps": steps }),
            )
            .await;
        assert!((200..300).contains(&status), "{status} {body}");
    }

    /// `/v3/contacts` requests the simulator logged, with their status.
    async fn contact_requests(&self, id: &str) -> Vec<(String, u64)> {
        let (_, log) = self
            .control(Method::GET, &format!("/accounts/{id}/requests"), json!({}))
            .await;
        log["requests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|request| request["path"].as_str().unwrap().contains("/v3/contacts"))
            .map(|request| {
                (
                    request["path"].as_str().unwrap().to_owned(),
                    request["status"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    /// The stored rotated refresh token and whether it descends from `document_token`.
    fn stored_token(&self, document_token: &str) -> Option<(String, bool)> {
        let bytes = self
            .tenant_store
            .get_source_state(STATE_NAME, STATE_KEY)
            .unwrap()?;
        let fingerprint: [u8; 32] = sha2::Sha256::digest(document_token.as_bytes()).into();
        let token = self
            .master_key
            .open(TENANT, ROTATED_FIELD, &bytes[33..])
            .unwrap();
        Some((
            String::from_utf8(token).unwrap(),
            bytes[1..33] == fingerprint[..],
        ))
    }

    /// A refresh made by hand at the simulator (status, error code).
    async fn refresh_by_hand(&self, id: &str, refresh_token: &str) -> (u16, Value) {
        let response = self
            .http
            .post(format!(
                "{}/constant-contact/oauth2/default/v1/token",
                self.sandbox.base_url()
            ))
            .basic_auth(format!("client-{id}"), Some("secret"))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ])
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }
}

use sha2::Digest as _;

fn doc(constant_contact: Value) -> TenantDoc {
    TenantDoc::from_value(&json!({"id": TENANT, "name": "T",
        "virtuous": {"api_key": "k", "webhook_secret": "w"},
        "sources": {"constant_contact": constant_contact}}))
    .unwrap()
}

fn page(fetch: PollFetch) -> PollPage {
    match fetch {
        PollFetch::Page(page) => page,
        other => panic!("expected a page, got {other:?}"),
    }
}

async fn fetch(spec: &PollerSpec, since_ms: u64, cursor: Option<String>) -> PollFetch {
    spec.poller
        .fetch(PollRequest {
            since_ms,
            cursor,
            ..Default::default()
        })
        .await
}

/// Every item of a whole run from `since_ms`, and the pages' sizes and calls.
async fn run(spec: &PollerSpec, since_ms: u64) -> (Vec<PolledItem>, Vec<(usize, u32)>) {
    let mut items = Vec::new();
    let mut pages = Vec::new();
    let mut cursor = None;
    loop {
        let page = page(fetch(spec, since_ms, cursor).await);
        pages.push((page.items.len(), page.calls));
        items.extend(page.items);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return (items, pages),
        }
    }
}

fn body(item: &PolledItem) -> Value {
    serde_json::from_str(&item.entries.as_ref().unwrap()[0].fact.body_json).unwrap()
}

fn unix_ms(text: &str) -> u64 {
    text.parse::<jiff::Timestamp>().unwrap().as_millisecond() as u64
}

#[actix_rt::test]
async fn a_run_pages_1200_contacts_sharing_one_updated_at_each_exactly_once() {
    // Goal: 1,200 contacts, 900 of them with one updated_at, read as 3 pages of 500 (one
    // call each) through `_links.next.href`, come back exactly once each, mapped; the first
    // page asks for status=all, limit=500 and the list memberships.
    let harness = Harness::new().await;
    harness.account("pages", RefreshTokenKind::Rotating, 1_000);
    let ids = harness
        .generate("pages", 1_200, "2026-11-26T09:00:00Z")
        .await;
    let (status, _) = harness
        .control(
            Method::POST,
            "/accounts/pages/contacts/touch",
            json!({"updated_at": "2026-11-26T10:00:00Z", "contact_ids": ids[100..1_000]}),
        )
        .await;
    assert_eq!(status, 200);
    let spec = harness.poller("pages", "rt-pages");
    let (items, pages) = run(&spec, 0).await;
    assert_eq!(pages, vec![(500, 1), (500, 1), (200, 1)]);
    let seen: Vec<&str> = items.iter().map(|item| item.record_id.as_str()).collect();
    let unique: HashSet<&str> = seen.iter().copied().collect();
    assert_eq!(seen.len(), 1_200);
    assert_eq!(unique, ids.iter().map(String::as_str).collect());
    let tied = items
        .iter()
        .filter(|item| item.version_ms == unix_ms("2026-11-26T10:00:00Z"))
        .count();
    assert_eq!(tied, 900);
    assert_eq!(body(&items[0])["emailLists"], json!(["list-a"]));
    assert_eq!(body(&items[0])["referenceSource"], "ConstantContact");
    let requests = harness.contact_requests("pages").await;
    assert_eq!(requests.len(), 3);
    let first = &requests[0].0;
    for part in [
        "status=all",
        "limit=500",
        "include=custom_fields%2Clist_memberships",
    ] {
        assert!(first.contains(part), "{first} lacks {part}");
    }
    assert!(!first.contains("updated_after"), "{first}");
    assert!(requests[1].0.contains("cursor="), "{:?}", requests[1]);
    harness.sandbox.stop().await;
}

#[actix_rt::test]
async fn updated_after_reads_only_contacts_changed_since_the_given_second() {
    // Goal: since_ms selects contacts updated at or after its second (the adapter asks
    // one second earlier, the API compares strictly), and none older.
    let harness = Harness::new().await;
    harness.account("since", RefreshTokenKind::Rotating, 1_000);
    harness.generate("since", 5, "2026-11-26T09:00:00Z").await;
    let recent = harness.generate("since", 3, "2026-11-26T10:00:00Z").await;
    let spec = harness.poller("since", "rt-since");
    let at = unix_ms("2026-11-26T10:00:00Z");
    for since_ms in [at, at + 999] {
        let (items, _) = run(&spec, since_ms).await;
        let ids: HashSet<String> = items.into_iter().map(|item| item.record_id).collect();
        assert_eq!(ids, recent.iter().cloned().collect(), "since {since_ms}");
    }
    let (later, _) = run(&spec, at + 1_000).await;
    assert!(later.is_empty());
    let (all, _) = run(&spec, 0).await;
    assert_eq!(all.len(), 8);
    let requests = harness.contact_requests("since").await;
    assert!(
        requests[0]
            .0
            .contains("updated_after=2026-11-26T09%3A59%3A59Z"),
        "{:?}",
        requests[0]
    );
    harness.sandbox.stop().await;
}

#[actix_rt::test]
async fn status_all_brings_deleted_and_unsubscribed_contacts_as_opt_out_updates() {
    // Goal: a deleted contact (only listed with status=all) and an unsubscribed one come
    // back as contact transactions carrying the opt-out custom fields; nothing is a delete.
    let harness = Harness::new().await;
    harness.account("status", RefreshTokenKind::Rotating, 1_000);
    let ids = harness.generate("status", 3, "2026-11-26T09:00:00Z").await;
    let (status, _) = harness
        .control(
            Method::DELETE,
            &format!("/accounts/status/contacts/{}", ids[0]),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = harness
        .control(
            Method::POST,
            &format!("/accounts/status/contacts/{}/unsubscribe", ids[1]),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let spec = harness.poller("status", "rt-status");
    let (items, _) = run(&spec, 0).await;
    assert_eq!(items.len(), 3);
    let status_of = |id: &str| {
        let item = items.iter().find(|item| item.record_id == id).unwrap();
        let entry = &item.entries.as_ref().unwrap()[0];
        assert_eq!(entry.fact.kind, steward_actors::store::RecordKind::Contact);
        let body = body(item);
        assert_eq!(body["referenceId"], id);
        (
            body["customFields"]["Email Status"].clone(),
            body["customFields"]["Email Opt Out"].clone(),
        )
    };
    assert_eq!(status_of(&ids[0]), (json!("deleted"), json!("true")));
    assert_eq!(status_of(&ids[1]), (json!("unsubscribed"), json!("true")));
    assert_eq!(status_of(&ids[2]), (json!("subscribed"), json!("false")));
    harness.sandbox.stop().await;
}

#[actix_rt::test]
async fn throttles_quota_and_server_errors_are_classified() {
    // Goal: 429 throttled → Throttled (1 s), 429 quota_exceeded → QuotaExhausted, 503 →
    // Failed, each counting the contacts call it cost; the run works again afterwards.
    let harness = Harness::new().await;
    harness.account("limits", RefreshTokenKind::Rotating, 1_000);
    harness.generate("limits", 2, "2026-11-26T09:00:00Z").await;
    let spec = harness.poller("limits", "rt-limits");
    harness
        .script(
            "limits",
            json!([{"match": {"path": "/v3/contacts"}, "respond": {"status": 429}},
                   {"match": {"path": "/v3/contacts"}, "respond": {"status": 503}}]),
        )
        .await;
    let throttled = fetch(&spec, 0, None).await;
    assert!(
        matches!(
            throttled,
            PollFetch::Throttled {
                retry_after_ms: 1_000,
                calls: 1
            }
        ),
        "{throttled:?}"
    );
    let failed = fetch(&spec, 0, None).await;
    assert!(
        matches!(failed, PollFetch::Failed { calls: 1, .. }),
        "{failed:?}"
    );
    let (status, _) = harness
        .control(
            Method::PATCH,
            "/accounts/limits/settings",
            json!({"daily_quota": 10, "quota_used": 10}),
        )
        .await;
    assert_eq!(status, 200);
    let exhausted = fetch(&spec, 0, None).await;
    assert!(
        matches!(exhausted, PollFetch::QuotaExhausted { calls: 1 }),
        "{exhausted:?}"
    );
    let (status, _) = harness
        .control(
            Method::PATCH,
            "/accounts/limits/settings",
            json!({"quota_used": 0}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(page(fetch(&spec, 0, None).await).items.len(), 2);
    harness.sandbox.stop().await;
}

#[actix_rt::test]
async fn the_per_second_limit_of_the_simulator_answers_throttled() {
    // Goal: the simulator's own 1 request/s limit (not a script) comes back as Throttled.
    let harness = Harness::new().await;
    harness.account("rps", RefreshTokenKind::Rotating, 1);
    let spec = harness.poller("rps", "rt-rps");
    let mut outcomes = Vec::new();
    for _ in 0..4 {
        outcomes.push(fetch(&spec, 0, None).await);
    }
    assert!(
        outcomes
            .iter()
            .any(|outcome| matches!(outcome, PollFetch::Throttled { calls: 1, .. })),
        "{outcomes:?}"
    );
    harness.sandbox.stop().await;
}

#[actix_rt::test]
async fn a_rotated_refresh_token_is_stored_before_use_and_a_restart_uses_it() {
    // Goal: the rotated refresh token is in the store (sealed, descending from the
    // document's token) when the first contacts call with its access token arrives; a new
    // poller instance on the same store then succeeds although the document's token is
    // dead at the source, while one on an empty store is refused.
    let harness = Harness::new().await;
    harness.account("rot", RefreshTokenKind::Rotating, 1_000);
    harness.generate("rot", 4, "2026-11-26T09:00:00Z").await;
    let (status, _) = harness
        .control(
            Method::PUT,
            "/accounts/rot/faults",
            json!({"timeout_ms": 1_500}),
        )
        .await;
    assert!((200..300).contains(&status), "{status}");
    harness
        .script(
            "rot",
            json!([{"match": {"path": "/v3/contacts"}, "respond": {"hang": true}}]),
        )
        .await;
    let first = harness.poller("rot", "rt-rot");
    assert!(harness.stored_token("rt-rot").is_none());
    let watch = async {
        let deadline = Instant::now() + Duration::from_secs(10);
        while harness.contact_requests("rot").await.is_empty() {
            assert!(Instant::now() < deadline, "no contacts call arrived");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The contacts call is in flight: its token's refresh token must be stored.
        harness.stored_token("rt-rot")
    };
    let (fetched, stored_at_call) = futures_util::future::join(fetch(&first, 0, None), watch).await;
    assert!(
        matches!(fetched, PollFetch::Failed { calls: 1, .. }),
        "{fetched:?}"
    );
    let (rotated, descends) = stored_at_call.expect("stored before the contacts call");
    assert!(descends);
    assert_ne!(rotated, "rt-rot");
    assert_eq!(
        harness.refresh_by_hand("rot", "rt-rot").await.0,
        400,
        "the document's token is used up"
    );

    let restarted = harness.poller("rot", "rt-rot");
    assert_eq!(page(fetch(&restarted, 0, None).await).items.len(), 4);
    let (again, descends) = harness.stored_token("rt-rot").unwrap();
    assert!(descends);
    assert_ne!(again, rotated, "each refresh rotates and is stored");

    let empty_store = harness.store.tenant("other-tenant").unwrap();
    let without_store = harness.poller_on(&empty_store, "rot", "rt-rot");
    assert!(matches!(
        fetch(&without_store, 0, None).await,
        PollFetch::AuthRefused { .. }
    ));
    harness.sandbox.stop().await;
}

#[actix_rt::test]
async fn an_instance_whose_token_another_rotated_takes_the_stored_one() {
    // Goal: two instances of the poller (an old one still running beside a rebuilt one):
    // when the other rotated the refresh token this one holds, its refused refresh retries
    // once with the stored token instead of stopping the poller.
    let harness = Harness::new().await;
    let mut spec = AccountSpec::new("pair", "client-pair", "secret", "rt-pair");
    // Every access token expires within the refresh margin: each fetch refreshes.
    spec.access_token_ttl_ms = 1_000;
    spec.per_second_limit = 1_000;
    harness
        .sandbox
        .create_constant_contact_account(spec)
        .unwrap();
    let old = harness.poller("pair", "rt-pair");
    page(fetch(&old, 0, None).await);
    let rebuilt = harness.poller("pair", "rt-pair");
    page(fetch(&rebuilt, 0, None).await);
    page(fetch(&old, 0, None).await);
    page(fetch(&rebuilt, 0, None).await);
    assert!(harness.stored_token("rt-pair").unwrap().1);
    harness.sandbox.stop().await;
}

#[actix_rt::test]
async fn long_lived_refresh_tokens_keep_working_and_are_not_stored() {
    // Goal: a long-lived refresh token is answered back: nothing is stored, and new
    // instances (and later refreshes) keep using the document's token.
    let harness = Harness::new().await;
    harness.account("long", RefreshTokenKind::LongLived, 1_000);
    harness.generate("long", 2, "2026-11-26T09:00:00Z").await;
    for _ in 0..3 {
        let spec = harness.poller("long", "rt-long");
        assert_eq!(page(fetch(&spec, 0, None).await).items.len(), 2);
    }
    assert!(harness
        .tenant_store
        .get_source_state(STATE_NAME, STATE_KEY)
        .unwrap()
        .is_none());
    assert_eq!(harness.refresh_by_hand("long", "rt-long").await.0, 200);
    harness.sandbox.stop().await;
}

#[actix_rt::test]
async fn a_re_authorised_document_token_wins_over_the_stored_one() {
    // Goal: after the customer authorised again (the simulator's token replaced, the old
    // chain dead) and the document names the new token, a new instance uses it rather than
    // the stored rotated one, and what it stores next descends from the new token.
    let harness = Harness::new().await;
    harness.account("reauth", RefreshTokenKind::Rotating, 1_000);
    let first = harness.poller("reauth", "rt-reauth");
    page(fetch(&first, 0, None).await);
    assert!(harness.stored_token("rt-reauth").unwrap().1);
    let (status, _) = harness
        .control(
            Method::POST,
            "/accounts/reauth/authorize",
            json!({"refresh_token": "rt-reauth-2"}),
        )
        .await;
    assert_eq!(status, 204);
    let reauthorised = harness.poller("reauth", "rt-reauth-2");
    page(fetch(&reauthorised, 0, None).await);
    let (stored, descends) = harness.stored_token("rt-reauth-2").unwrap();
    assert!(descends);
    assert_ne!(stored, "rt-reauth-2");
    harness.sandbox.stop().await;
}

#[actix_rt::test]
async fn refused_refreshes_are_auth_refused_and_say_what_to_do() {
    // Goal: a revoked refresh token (invalid_grant) and a wrong client secret
    // (invalid_client) are AuthRefused with a message naming the fix and no token.
    let harness = Harness::new().await;
    harness.account("revoked", RefreshTokenKind::Rotating, 1_000);
    let (status, _) = harness
        .control(Method::POST, "/accounts/revoked/revoke", json!({}))
        .await;
    assert_eq!(status, 204);
    let spec = harness.poller("revoked", "rt-revoked");
    let PollFetch::AuthRefused { message } = fetch(&spec, 0, None).await else {
        panic!("a revoked token is refused");
    };
    assert!(message.contains("re-authorise"), "{message}");
    assert!(!message.contains("rt-revoked"), "{message}");

    harness.account("client", RefreshTokenKind::Rotating, 1_000);
    let wrong_secret = doc(json!({"base_url": "embedded", "token_url": "embedded",
        "client_id": "client-client", "client_secret": "not-the-secret",
        "refresh_token": "rt-client"}));
    let spec = poller_spec(&harness.context(&harness.tenant_store), &wrong_secret)
        .unwrap()
        .unwrap();
    let PollFetch::AuthRefused { message } = fetch(&spec, 0, None).await else {
        panic!("a wrong client secret is refused");
    };
    assert!(message.contains("client_secret"), "{message}");
    assert!(!message.contains("not-the-secret"), "{message}");
    harness.sandbox.stop().await;
}

#[actix_rt::test]
async fn a_401_on_a_held_token_refreshes_once_then_is_refused() {
    // Goal: one 401 on a held access token → one refresh and one re-send in the same fetch
    // (2 calls, a page); 401 again after the refresh → AuthRefused.
    let harness = Harness::new().await;
    harness.account("unauth", RefreshTokenKind::Rotating, 1_000);
    harness.generate("unauth", 1, "2026-11-26T09:00:00Z").await;
    let spec = harness.poller("unauth", "rt-unauth");
    assert_eq!(page(fetch(&spec, 0, None).await).calls, 1);
    harness
        .script(
            "unauth",
            json!([{"match": {"path": "/v3/contacts"}, "respond": {"status": 401}}]),
        )
        .await;
    let resent = page(fetch(&spec, 0, None).await);
    assert_eq!((resent.calls, resent.items.len()), (2, 1));
    harness
        .script(
            "unauth",
            json!([{"match": {"path": "/v3/contacts"}, "respond": {"status": 401}, "times": 2}]),
        )
        .await;
    assert!(matches!(
        fetch(&spec, 0, None).await,
        PollFetch::AuthRefused { .. }
    ));
    harness.sandbox.stop().await;
}

#[test]
fn the_spec_carries_the_source_s_limits_and_embedded_needs_the_sandbox() {
    // Goal: pollers_for lists the Constant Contact poller with its limits, schedule and no
    // webhooks; "embedded" without a sandbox is a build error naming the key.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store"), StoreOptions::default()).unwrap();
    let (master_key, _) = MasterKey::load_or_create(dir.path(), None).unwrap();
    let mut context = PollContext {
        tenant_id: TENANT.to_owned(),
        http: shared_http(),
        sandbox_base_url: None,
        store: store.clone(),
        tenant_store: store.tenant(TENANT).unwrap(),
        master_key,
    };
    let settings = json!({"client_id": "c", "client_secret": "s", "refresh_token": "r",
        "interval_s": 300, "overlap_s": 120, "requests_per_second": 3,
        "daily_quota": 500, "quota_reset_utc": "23:59:30"});
    let (specs, errors) = pollers_for(&context, &doc(settings.clone()));
    assert!(errors.is_empty(), "{errors:?}");
    let [spec] = specs.as_slice() else {
        panic!("one poller: {specs:?}");
    };
    let settings_of = &spec.settings;
    assert_eq!(
        (settings_of.source.as_str(), settings_of.kind.as_str()),
        ("constant_contact", "constant_contact")
    );
    assert_eq!(settings_of.overlap_ms, 120_000);
    assert!(!settings_of.has_webhooks);
    assert_eq!(
        settings_of.limits,
        SourceLimits {
            per_second: Some(3),
            daily: Some(500),
            daily_reset_utc_s: 86_370,
        }
    );
    let mut embedded = settings.clone();
    embedded["base_url"] = json!("embedded");
    let (specs, errors) = pollers_for(&context, &doc(embedded.clone()));
    assert!(specs.is_empty());
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].source, "constant_contact");
    assert!(errors[0].reason.contains("base_url"), "{errors:?}");
    context.sandbox_base_url = Some("http://127.0.0.1:9".into());
    let (specs, _) = pollers_for(&context, &doc(embedded));
    assert_eq!(specs.len(), 1);
}

#[test]
fn page_urls_are_built_from_the_base_and_next_links_stay_under_it() {
    // Goal: the first page's query is exact; a relative next link joins the base; an
    // absolute link elsewhere is refused (the bearer token must not leave).
    let url = first_page_url("https://api.cc.email", 1_795_687_200_500).unwrap();
    assert_eq!(
        url.as_str(),
        "https://api.cc.email/v3/contacts?updated_after=2026-11-26T09%3A59%3A59Z&status=all\
         &limit=500&include=custom_fields%2Clist_memberships"
    );
    assert_eq!(updated_after(999), None);
    let next = next_page_url("http://h:1/constant-contact", "/v3/contacts?cursor=abc").unwrap();
    assert_eq!(
        next.as_str(),
        "http://h:1/constant-contact/v3/contacts?cursor=abc"
    );
    assert!(next_page_url(
        "https://api.cc.email",
        "https://api.cc.email/v3/contacts?c=1"
    )
    .is_ok());
    assert!(next_page_url("https://api.cc.email", "https://evil.example/v3/contacts").is_err());
    assert!(next_page_url("https://api.cc.email", "https://api.cc.email.evil/x").is_err());
}
