//! `VirtuousClient`: every call Steward makes to Virtuous, each answered with a [`CallResult`]
//! (plain facts to classify, the rate-limit headers to correct the budget, the raw body).
//!
//! HTTP outcomes are never errors here: a 503, a timeout or a closed connection is a
//! [`CallResult`] whose facts [`steward_actors::outcome::classify`] turns into a verdict.
//! [`VirtuousError`] is only for what is wrong before a request is made (a bad base URL, an
//! item body that is not JSON, a `take` above 1000).

use std::time::{Duration, Instant};

use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde_json::json;
use steward_actors::outcome::{classify, BatchOutcome, ResponseFacts};
use steward_actors::pull::ChangeKind;

use super::facts::{connection_error_kind, error_body_facts, retry_after_s, RateLimitHeaders};
use super::wire::{GiftPage, GiftSummary, Organization, RecordPage, WebhookCreated, WEBHOOK_FLAGS};

/// Virtuous caps `take` at 1000.
pub const QUERY_TAKE_MAX: u32 = 1_000;
/// Gift transactions per batch request (production integrators send 100; the true maximum is
/// unknown).
pub const BATCH_ITEMS_MAX: usize = 100;
/// Ids one re-read asks for (one `IsAnyOf` condition; the caller batches).
pub const READ_IDS_MAX: usize = 100;

/// What is wrong before any request is sent.
#[derive(Debug, thiserror::Error)]
pub enum VirtuousError {
    #[error("virtuous base URL '{url}' is not an absolute http(s) URL")]
    BadBaseUrl { url: String },
    #[error("the API key is not a valid header value")]
    BadApiKey,
    #[error("item {item_index} of the request is not valid JSON: {reason}")]
    InvalidItemBody { item_index: usize, reason: String },
    #[error("a batch carries 1 to {BATCH_ITEMS_MAX} items, got {0}")]
    BatchSize(usize),
    #[error("take must be 1 to {QUERY_TAKE_MAX}, got {0}")]
    BadTake(u32),
    #[error("a re-read asks for 1 to {READ_IDS_MAX} ids, got {0}")]
    ReadIds(usize),
    #[error("{0} records cannot be queried (only gifts and contacts)")]
    NotQueryable(&'static str),
    #[error("building the HTTP client failed: {0}")]
    Http(#[from] reqwest::Error),
}

/// One call's result. `facts.attempt` is 1: the caller, who knows the attempt, sets it
/// before classifying.
#[derive(Debug, Clone)]
pub struct CallResult<T = ()> {
    pub facts: ResponseFacts,
    /// Parsed from every answer (empty when there was none).
    pub rate_limit: RateLimitHeaders,
    /// The answer's text as received (empty when there was none): dead-letter reasons.
    pub body: String,
    /// The decoded answer: `Some` on a 2xx that decoded (and, for lookups, `Some(None)` on 404).
    pub value: Option<T>,
    /// Why a 2xx body (or its reading) failed; the call itself may still have been applied.
    pub decode_error: Option<String>,
    pub elapsed: Duration,
}

impl<T> CallResult<T> {
    /// The verdict for this call's items (the outcome table, `steward_actors::outcome`).
    pub fn classify(&self) -> BatchOutcome {
        classify(self.facts.clone())
    }

    pub fn is_success(&self) -> bool {
        matches!(self.facts.status, Some(200..=299))
    }

    fn map_value<U>(self, value: Option<U>, decode_error: Option<String>) -> CallResult<U> {
        CallResult {
            facts: self.facts,
            rate_limit: self.rate_limit,
            body: self.body,
            value,
            decode_error: decode_error.or(self.decode_error),
            elapsed: self.elapsed,
        }
    }
}

/// A tenant's handle on Virtuous. Cheap to build and to clone: it shares a `reqwest::Client`
/// (an `Arc` inside) made once per arbiter with [`VirtuousClient::http_client`] — pooled
/// connections are bound to the runtime that made them, so never share one across arbiters.
/// The API key is a [`SecretString`]: `Debug` redacts it and it is never logged.
#[derive(Clone)]
pub struct VirtuousClient {
    http: reqwest::Client,
    base_url: Url,
    /// The `Bearer …` header value, marked sensitive so reqwest's own debug output hides it.
    authorization: HeaderValue,
    /// From `virtuous.request_timeout_s`; per request so tenants sharing a client may differ.
    request_timeout: Duration,
}

impl std::fmt::Debug for VirtuousClient {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("VirtuousClient")
            .field("base_url", &self.base_url.as_str())
            .field("api_key", &"[redacted]")
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

impl VirtuousClient {
    /// The pooled HTTP client, one per arbiter (building one loads TLS roots: not per call).
    /// Redirects are not followed: Virtuous does not redirect, and a redirect must not carry
    /// the key elsewhere (the classifier reports a 3xx to the operator).
    pub fn http_client() -> Result<reqwest::Client, VirtuousError> {
        Ok(reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("steward/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?)
    }

    /// [`VirtuousClient::new`] with the timeout from `virtuous.request_timeout_s`.
    pub fn from_config(
        http: reqwest::Client,
        base_url: &str,
        api_key: &SecretString,
        section: &crate::config::VirtuousSection,
    ) -> Result<VirtuousClient, VirtuousError> {
        let timeout = Duration::from_secs(section.request_timeout_s);
        VirtuousClient::new(http, base_url, api_key, timeout)
    }

    pub fn new(
        http: reqwest::Client,
        base_url: &str,
        api_key: &SecretString,
        request_timeout: Duration,
    ) -> Result<VirtuousClient, VirtuousError> {
        let bad_url = || VirtuousError::BadBaseUrl {
            url: base_url.to_string(),
        };
        let parsed = Url::parse(base_url).map_err(|_| bad_url())?;
        if parsed.cannot_be_a_base() || !matches!(parsed.scheme(), "http" | "https") {
            return Err(bad_url());
        }
        let mut authorization =
            HeaderValue::from_str(&format!("Bearer {}", api_key.expose_secret()))
                .map_err(|_| VirtuousError::BadApiKey)?;
        authorization.set_sensitive(true);
        Ok(VirtuousClient {
            http,
            base_url: parsed,
            authorization,
            request_timeout,
        })
    }

    /// `POST /api/v2/Gift/Transactions` with `{"transactionSource", "transactions": [...]}`.
    /// `bodies` are the queued items' exact JSON; each is checked to be JSON first so one
    /// broken entry is named instead of failing the whole batch at Virtuous.
    pub async fn post_gift_transactions(
        &self,
        transaction_source: &str,
        bodies: &[String],
    ) -> Result<CallResult, VirtuousError> {
        let body = batch_body(
            "transactionSource",
            transaction_source,
            "transactions",
            bodies,
        )?;
        let url = self.endpoint(&["api", "v2", "Gift", "Transactions"], &[]);
        Ok(self.write(url, body, bodies.len()).await)
    }

    /// `POST /api/Contact/Batch` with `{"referenceSource", "contacts": [...]}`.
    pub async fn post_contact_batch(
        &self,
        reference_source: &str,
        bodies: &[String],
    ) -> Result<CallResult, VirtuousError> {
        let body = batch_body("referenceSource", reference_source, "contacts", bodies)?;
        let url = self.endpoint(&["api", "Contact", "Batch"], &[]);
        Ok(self.write(url, body, bodies.len()).await)
    }

    /// `POST /api/v2/Gift/Transaction` (one gift transaction, exact JSON).
    pub async fn post_gift_transaction(&self, body: &str) -> Result<CallResult, VirtuousError> {
        let url = self.endpoint(&["api", "v2", "Gift", "Transaction"], &[]);
        Ok(self.write(url, single_body(body)?, 1).await)
    }

    /// `POST /api/Contact/Transaction` (one contact transaction, exact JSON).
    pub async fn post_contact_transaction(&self, body: &str) -> Result<CallResult, VirtuousError> {
        let url = self.endpoint(&["api", "Contact", "Transaction"], &[]);
        Ok(self.write(url, single_body(body)?, 1).await)
    }

    /// `POST /api/Gift/ReversingTransaction` (`{reversedGiftId, giftDate, notes}`, exact JSON).
    /// A 404 (unknown gift) is a permanent write error.
    pub async fn post_reversing_transaction(
        &self,
        body: &str,
    ) -> Result<CallResult, VirtuousError> {
        let url = self.endpoint(&["api", "Gift", "ReversingTransaction"], &[]);
        Ok(self.write(url, single_body(body)?, 1).await)
    }

    /// `POST /api/Gift/Query/FullGift?skip=&take=`: gifts with `Transaction Source Is source`
    /// AND `Create Date OnOrAfter date` (a UTC calendar day, sent `MM/DD/YYYY`), sorted by id
    /// so `skip` pages stay stable while gifts are added (new ids sort last).
    pub async fn query_full_gifts(
        &self,
        transaction_source: &str,
        created_on_or_after: jiff::civil::Date,
        skip: u64,
        take: u32,
    ) -> Result<CallResult<GiftPage>, VirtuousError> {
        if take == 0 || take > QUERY_TAKE_MAX {
            return Err(VirtuousError::BadTake(take));
        }
        let query = json!({
            "groups": [{"conditions": [
                {"parameter": "Transaction Source", "operator": "Is", "value": transaction_source},
                {"parameter": "Create Date", "operator": "OnOrAfter",
                 "value": created_on_or_after.strftime("%m/%d/%Y").to_string()},
            ]}],
            "sortBy": "Id",
            "descending": false,
        });
        let url = self.endpoint(
            &["api", "Gift", "Query", "FullGift"],
            &[("skip", skip.to_string()), ("take", take.to_string())],
        );
        let raw = self
            .call(Method::POST, url, Some(query.to_string()), false, 0)
            .await;
        Ok(decode_json(raw))
    }

    /// `GET /api/Gift/{source}/{id}` (segments URL-encoded, `/` included). `value` is
    /// `Some(None)` on 404: the transaction is still pending, in review, or unknown.
    pub async fn gift_by_transaction(
        &self,
        transaction_source: &str,
        transaction_id: &str,
    ) -> CallResult<Option<GiftSummary>> {
        let url = self.endpoint(&["api", "Gift", transaction_source, transaction_id], &[]);
        let raw = self.call(Method::GET, url, None, false, 0).await;
        if raw.facts.status == Some(404) {
            return raw.map_value(Some(None), None);
        }
        let decoded: CallResult<GiftSummary> = decode_json(raw);
        let value = decoded.value.clone().map(Some);
        decoded.map_value(value, None)
    }

    /// `GET /api/Contact/{id}`: the full contact (two-way sync reads before it writes).
    /// `value` is `Some(None)` on 404: gone, archived or merged away.
    pub async fn contact_by_id(&self, id: &str) -> CallResult<Option<serde_json::Value>> {
        let url = self.endpoint(&["api", "Contact", id], &[]);
        let raw = self.call(Method::GET, url, None, false, 0).await;
        if raw.facts.status == Some(404) {
            return raw.map_value(Some(None), None);
        }
        let decoded: CallResult<serde_json::Value> = decode_json(raw);
        let value = decoded.value.clone().map(Some);
        decoded.map_value(value, None)
    }

    /// `PUT /api/Contact/{id}` with the full contact (two-way sync's update).
    pub async fn put_contact(&self, id: &str, body: String) -> CallResult {
        let url = self.endpoint(&["api", "Contact", id], &[]);
        self.call(Method::PUT, url, Some(body), true, 1).await
    }

    /// `GET /api/Organization/Current`: the cheapest authenticated call (connection tests).
    pub async fn organization_current(&self) -> CallResult<Organization> {
        let url = self.endpoint(&["api", "Organization", "Current"], &[]);
        decode_json(self.call(Method::GET, url, None, false, 0).await)
    }

    /// `POST /api/Gift/Query/FullGift` or `/api/Contact/Query/FullContact` `?skip=&take=`:
    /// the records of `kind` whose `Last Modified Date` is on or after `modified_on_or_after`
    /// (a UTC calendar day, sent `MM/DD/YYYY` — Virtuous may compare dates by day only),
    /// sorted by `Last Modified Date` ascending: the backstop poll of pull.
    pub async fn query_modified(
        &self,
        kind: ChangeKind,
        modified_on_or_after: jiff::civil::Date,
        skip: u64,
        take: u32,
    ) -> Result<CallResult<RecordPage>, VirtuousError> {
        let condition = json!({"parameter": "Last Modified Date", "operator": "OnOrAfter",
            "value": modified_on_or_after.strftime("%m/%d/%Y").to_string()});
        self.query_full_records(kind, condition, "Last Modified Date", skip, take)
            .await
    }

    /// `POST /api/Contact/Query/FullContact?skip=0&take=` with `Contact Id GreaterThan
    /// after_id`, sorted by `Id`: keyset paging over every contact (the cross-match).
    pub async fn contacts_after(
        &self,
        after_id: u64,
        take: u32,
    ) -> Result<CallResult<RecordPage>, VirtuousError> {
        let condition = json!({"parameter": "Contact Id", "operator": "GreaterThan", "value": after_id.to_string()});
        self.query_full_records(ChangeKind::Contact, condition, "Id", 0, take)
            .await
    }

    /// The full records of `ids` (`Gift Id`/`Contact Id` `IsAnyOf`, one page of
    /// `ids.len()`): the re-read of webhook models that lacked fields. Ids not returned no
    /// longer exist (or are not visible).
    pub async fn read_records(
        &self,
        kind: ChangeKind,
        ids: &[String],
    ) -> Result<CallResult<RecordPage>, VirtuousError> {
        if ids.is_empty() || ids.len() > READ_IDS_MAX {
            return Err(VirtuousError::ReadIds(ids.len()));
        }
        let parameter = match kind {
            ChangeKind::Gift => "Gift Id",
            _ => "Contact Id",
        };
        let condition = json!({"parameter": parameter, "operator": "IsAnyOf", "values": ids});
        self.query_full_records(kind, condition, "Last Modified Date", 0, ids.len() as u32)
            .await
    }

    /// One `Full*` query of `kind` with one condition, sorted by `Last Modified Date`.
    async fn query_full_records(
        &self,
        kind: ChangeKind,
        condition: serde_json::Value,
        sort_by: &str,
        skip: u64,
        take: u32,
    ) -> Result<CallResult<RecordPage>, VirtuousError> {
        let segments = match kind {
            ChangeKind::Gift => ["api", "Gift", "Query", "FullGift"],
            ChangeKind::Contact => ["api", "Contact", "Query", "FullContact"],
            other => return Err(VirtuousError::NotQueryable(other.name())),
        };
        if take == 0 || take > QUERY_TAKE_MAX {
            return Err(VirtuousError::BadTake(take));
        }
        let query = json!({
            "groups": [{"conditions": [condition]}],
            "sortBy": sort_by,
            "descending": false,
        });
        let url = self.endpoint(
            &segments,
            &[("skip", skip.to_string()), ("take", take.to_string())],
        );
        let raw = self
            .call(Method::POST, url, Some(query.to_string()), false, 0)
            .await;
        Ok(decode_json(raw))
    }

    /// `POST /api/Webhook`: subscribes `payload_url` to the events of `flags`
    /// ([`WEBHOOK_FLAGS`] names), signed with `secret`; `value` is the subscription id (no
    /// list endpoint exists: store it).
    pub async fn create_webhook(
        &self,
        payload_url: &str,
        secret: &SecretString,
        flags: &[String],
    ) -> CallResult<String> {
        let body = webhook_body(payload_url, secret, flags);
        let url = self.endpoint(&["api", "Webhook"], &[]);
        let raw = self.call(Method::POST, url, Some(body), true, 1).await;
        let decoded: CallResult<WebhookCreated> = decode_json(raw);
        let id = decoded.value.as_ref().map(|created| created.id.clone());
        decoded.map_value(id, None)
    }

    /// `PUT /api/Webhook/{id}`: the same subscription, now for `payload_url` and `flags`
    /// (the whole subscription is sent; always active — never deactivated from here).
    pub async fn update_webhook(
        &self,
        subscription_id: &str,
        payload_url: &str,
        secret: &SecretString,
        flags: &[String],
    ) -> CallResult {
        let body = webhook_body(payload_url, secret, flags);
        let url = self.endpoint(&["api", "Webhook", subscription_id], &[]);
        self.call(Method::PUT, url, Some(body), true, 1).await
    }

    fn endpoint(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.base_url.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            // `push` percent-encodes each segment, `/` and `%` included.
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(key, value)| (*key, value.as_str())));
        }
        url
    }

    async fn write(&self, url: Url, body: String, item_count: usize) -> CallResult {
        self.call(Method::POST, url, Some(body), true, item_count)
            .await
    }

    /// Sends one request and reduces whatever happens to a [`CallResult`].
    async fn call(
        &self,
        method: Method,
        url: Url,
        body: Option<String>,
        is_write: bool,
        item_count: usize,
    ) -> CallResult {
        let started = Instant::now();
        let path = url.path().to_string();
        let mut request = self
            .http
            .request(method.clone(), url)
            .timeout(self.request_timeout)
            .header(AUTHORIZATION, self.authorization.clone());
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, "application/json").body(body);
        }
        let base_facts = ResponseFacts {
            is_write,
            item_count,
            ..ResponseFacts::answered(0)
        };
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                let kind = connection_error_kind(&error);
                tracing::debug!(%method, path, ?kind, error = %error, "virtuous call got no answer");
                return CallResult {
                    facts: ResponseFacts {
                        status: None,
                        connection_error_kind: Some(kind),
                        message: Some(error.to_string()),
                        ..base_facts
                    },
                    rate_limit: RateLimitHeaders::default(),
                    body: String::new(),
                    value: None,
                    decode_error: None,
                    elapsed: started.elapsed(),
                };
            }
        };
        let status = response.status().as_u16();
        let rate_limit = RateLimitHeaders::from_headers(response.headers());
        let retry_after_s = retry_after_s(response.headers());
        let (text, read_error) = match response.text().await {
            Ok(text) => (text, None),
            Err(error) => (String::new(), Some(format!("reading the body: {error}"))),
        };
        let (model_state_keys, message) = if (200..=299).contains(&status) {
            (Vec::new(), None)
        } else {
            error_body_facts(&text)
        };
        tracing::debug!(%method, path, status, elapsed_ms = started.elapsed().as_millis() as u64,
            remaining = rate_limit.remaining, "virtuous call answered");
        CallResult {
            facts: ResponseFacts {
                status: Some(status),
                retry_after_s,
                model_state_keys,
                message,
                ..base_facts
            },
            rate_limit,
            body: text,
            value: (200..=299).contains(&status).then_some(()),
            decode_error: read_error,
            elapsed: started.elapsed(),
        }
    }
}

/// A subscription body: `payloadUrl`, `secret`, `active: true`, every [`WEBHOOK_FLAGS`] flag
/// (`true` when in `flags`) and any other flag of `flags` `true` as asked.
fn webhook_body(payload_url: &str, secret: &SecretString, flags: &[String]) -> String {
    let mut body = serde_json::Map::new();
    body.insert("payloadUrl".into(), json!(payload_url));
    body.insert("secret".into(), json!(secret.expose_secret()));
    body.insert("active".into(), json!(true));
    for flag in WEBHOOK_FLAGS {
        body.insert(flag.into(), json!(false));
    }
    for flag in flags {
        body.insert(flag.clone(), json!(true));
    }
    serde_json::Value::Object(body).to_string()
}

/// Decodes a 2xx body as `T`; other answers keep `value: None`.
fn decode_json<T: DeserializeOwned>(raw: CallResult) -> CallResult<T> {
    if !raw.is_success() || raw.decode_error.is_some() {
        return raw.map_value(None, None);
    }
    match serde_json::from_str::<T>(&raw.body) {
        Ok(value) => raw.map_value(Some(value), None),
        Err(error) => raw.map_value(None, Some(format!("decoding the answer: {error}"))),
    }
}

fn single_body(body: &str) -> Result<String, VirtuousError> {
    check_json(0, body)?;
    Ok(body.to_string())
}

fn check_json(item_index: usize, body: &str) -> Result<(), VirtuousError> {
    serde_json::from_str::<serde::de::IgnoredAny>(body)
        .map(|_| ())
        .map_err(|error| VirtuousError::InvalidItemBody {
            item_index,
            reason: error.to_string(),
        })
}

/// `{"<source_field>": source, "<list_field>": [bodies…]}` without re-serialising the items:
/// queued bodies go out byte for byte as stored (a dead letter shows exactly what was sent).
fn batch_body(
    source_field: &str,
    source: &str,
    list_field: &str,
    bodies: &[String],
) -> Result<String, VirtuousError> {
    if bodies.is_empty() || bodies.len() > BATCH_ITEMS_MAX {
        return Err(VirtuousError::BatchSize(bodies.len()));
    }
    let total_len: usize = bodies.iter().map(|body| body.len() + 1).sum();
    let mut out = String::with_capacity(total_len + source.len() + 64);
    out.push('{');
    out.push_str(&json!(source_field).to_string());
    out.push(':');
    out.push_str(&json!(source).to_string());
    out.push(',');
    out.push_str(&json!(list_field).to_string());
    out.push_str(":[");
    for (item_index, body) in bodies.iter().enumerate() {
        check_json(item_index, body)?;
        if item_index > 0 {
            out.push(',');
        }
        out.push_str(body.trim());
    }
    out.push_str("]}");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_body_keeps_items_byte_for_byte() {
        // Goal: the batch wraps the exact item texts, escapes the source, and names a bad item.
        let items = vec![
            r#"{"transactionId":"a", "amount":1}"#.to_string(),
            "{}".to_string(),
        ];
        let body = batch_body("transactionSource", "str\"ipe", "transactions", &items).unwrap();
        assert_eq!(
            body,
            r#"{"transactionSource":"str\"ipe","transactions":[{"transactionId":"a", "amount":1},{}]}"#
        );
        let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed["transactions"][0]["transactionId"], "a");
        let broken = vec!["{}".to_string(), "{\"a\":".to_string()];
        assert!(matches!(
            batch_body("s", "x", "l", &broken),
            Err(VirtuousError::InvalidItemBody { item_index: 1, .. })
        ));
        assert!(matches!(
            batch_body("s", "x", "l", &[]),
            Err(VirtuousError::BatchSize(0))
        ));
        let too_many = vec!["{}".to_string(); BATCH_ITEMS_MAX + 1];
        assert!(matches!(
            batch_body("s", "x", "l", &too_many),
            Err(VirtuousError::BatchSize(_))
        ));
    }

    #[test]
    fn webhook_body_asks_for_exactly_the_flags() {
        // Goal: the subscription body is active, carries URL and secret, sets the asked flags true (an unlisted one too) and every other known flag false.
        let flags = vec![
            "giftDelete".to_string(),
            "contactNoteCreate".to_string(),
            "futureFlag".to_string(),
        ];
        let body: serde_json::Value = serde_json::from_str(&webhook_body(
            "https://x/hooks/t/virtuous",
            &SecretString::from("s3"),
            &flags,
        ))
        .unwrap();
        assert_eq!(body["payloadUrl"], "https://x/hooks/t/virtuous");
        assert_eq!(
            (body["secret"].as_str(), body["active"].as_bool()),
            (Some("s3"), Some(true))
        );
        for flag in WEBHOOK_FLAGS {
            assert_eq!(
                body[flag].as_bool(),
                Some(flags.iter().any(|f| f == flag)),
                "{flag}"
            );
        }
        assert_eq!(body["futureFlag"], true);
        assert_eq!(body.as_object().unwrap().len(), 3 + WEBHOOK_FLAGS.len() + 1);
    }

    #[actix_rt::test]
    async fn queries_refuse_what_cannot_be_asked_before_sending() {
        // Goal: a kind that cannot be queried, a take out of range and a re-read of 0 or more than 100 ids are refused without a request (port 9 is never reached).
        let http = VirtuousClient::http_client().unwrap();
        let key = SecretString::from("k");
        let client =
            VirtuousClient::new(http, "http://127.0.0.1:9/", &key, Duration::from_secs(1)).unwrap();
        let day = jiff::civil::date(2026, 11, 26);
        assert!(matches!(
            client.query_modified(ChangeKind::Project, day, 0, 10).await,
            Err(VirtuousError::NotQueryable("project"))
        ));
        assert!(matches!(
            client.query_modified(ChangeKind::Gift, day, 0, 1001).await,
            Err(VirtuousError::BadTake(1001))
        ));
        assert!(matches!(
            client.read_records(ChangeKind::Contact, &[]).await,
            Err(VirtuousError::ReadIds(0))
        ));
        let ids = vec!["1".to_string(); READ_IDS_MAX + 1];
        assert!(matches!(
            client.read_records(ChangeKind::Gift, &ids).await,
            Err(VirtuousError::ReadIds(101))
        ));
    }

    #[test]
    fn endpoints_encode_segments_and_debug_hides_the_key() {
        // Goal: path segments are percent-encoded (slash included), a base path is kept, and
        // neither Debug nor the URL shows the API key.
        let http = VirtuousClient::http_client().unwrap();
        let key = SecretString::from("sk-very-secret");
        let client =
            VirtuousClient::new(http, "http://127.0.0.1:9/v/", &key, Duration::from_secs(1))
                .unwrap();
        let url = client.endpoint(&["api", "Gift", "a/b c", "id%1"], &[]);
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9/v/api/Gift/a%2Fb%20c/id%251"
        );
        let debug = format!("{client:?}");
        assert!(!debug.contains("sk-very-secret"), "{debug}");
        assert!(debug.contains("[redacted]"), "{debug}");
        let http = VirtuousClient::http_client().unwrap();
        assert!(VirtuousClient::new(http, "mailto:x@y", &key, Duration::from_secs(1)).is_err());
    }
}
