//! The Constant Contact v3 poller (`sources.constant_contact`; docs/polling.md "Constant
//! Contact"): contacts changed since the checkpoint, page by page, behind the actors' `Poller`
//! port.
//!
//! # Layout
//! - `mod.rs`: [`poller_spec`] (the tenant document → a `PollerSpec`), the poller and one
//!   page's fetch and classification.
//! - [`oauth`]: the access token, refresh, and the rotated refresh token stored before use.
//! - [`mapping`]: a contact → a polled item (pure).
//!
//! # One fetch
//! The first page of a run is `GET {base_url}/v3/contacts?updated_after=…&status=all&
//! limit=500&include=custom_fields,list_memberships`; later pages follow `_links.next.href`,
//! which is the cursor handed back to the machinery. A `401` on a held access token is
//! answered by one refresh and one re-send inside the same fetch (access tokens can be
//! revoked before their expiry); a second `401` is a refusal. The adapter never waits and
//! never retries anything else: throttles, the quota and failures go back to the machinery.

pub mod mapping;
pub mod oauth;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use reqwest::header::ACCEPT;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use steward_actors::poll::{PollFetch, PollPage, PollRequest, Poller, PollerSpec, SourceLimits};
use steward_actors::ports::{now_ms, LocalFuture};

use self::oauth::{OAuthConfig, TokenError, TokenKeeper};
use super::polling::{parse_utc_time_of_day, poller_settings, PollContext, PollerBuildError};
use crate::tenant::{ConstantContactSettings, TenantDoc};

pub use mapping::SOURCE;

/// Contacts per page (the API's maximum).
pub const PAGE_LIMIT: u32 = 500;
/// How long a `throttled` answer makes the machinery wait (no `Retry-After` is sent; the
/// limit is per second).
pub const THROTTLED_RETRY_AFTER_MS: u64 = 1_000;
/// The embedded sandbox's API and token paths (docs/sandbox.md).
const EMBEDDED_API_PATH: &str = "/constant-contact";
const EMBEDDED_TOKEN_PATH: &str = "/constant-contact/oauth2/default/v1/token";

/// The poller of a document's `sources.constant_contact` (`None` when the source is not
/// configured), or why it cannot be built.
pub fn poller_spec(
    context: &PollContext,
    doc: &TenantDoc,
) -> Option<Result<PollerSpec, PollerBuildError>> {
    let settings = doc.sources.constant_contact.as_ref()?;
    Some(build(context, doc, settings))
}

fn build_error(reason: impl Into<String>) -> PollerBuildError {
    PollerBuildError {
        source: SOURCE.to_owned(),
        reason: reason.into(),
    }
}

/// `"embedded"` → the embedded sandbox's URL with `path`; else the URL itself.
fn resolve(
    url: &str,
    key: &str,
    context: &PollContext,
    path: &str,
) -> Result<String, PollerBuildError> {
    if url != "embedded" {
        return Ok(url.trim_end_matches('/').to_owned());
    }
    match &context.sandbox_base_url {
        Some(sandbox) => Ok(format!("{}{path}", sandbox.trim_end_matches('/'))),
        None => Err(build_error(format!(
            "sources.constant_contact.{key} is \"embedded\" but the embedded sandbox is off"
        ))),
    }
}

fn build(
    context: &PollContext,
    doc: &TenantDoc,
    settings: &ConstantContactSettings,
) -> Result<PollerSpec, PollerBuildError> {
    let base_url = resolve(&settings.base_url, "base_url", context, EMBEDDED_API_PATH)?;
    let token_url = resolve(
        &settings.token_url,
        "token_url",
        context,
        EMBEDDED_TOKEN_PATH,
    )?;
    reqwest::Url::parse(&base_url)
        .map_err(|err| build_error(format!("sources.constant_contact.base_url: {err}")))?;
    reqwest::Url::parse(&token_url)
        .map_err(|err| build_error(format!("sources.constant_contact.token_url: {err}")))?;
    let secret = |key: &str, value: &Option<String>| {
        value
            .clone()
            .filter(|value| !value.is_empty())
            .map(SecretString::from)
            .ok_or_else(|| build_error(format!("sources.constant_contact.{key} is not set")))
    };
    let client_secret = secret("client_secret", &settings.client_secret)?;
    let document_refresh_token = secret("refresh_token", &settings.refresh_token)?;
    let daily_reset_utc_s = parse_utc_time_of_day(&settings.quota_reset_utc).ok_or_else(|| {
        build_error("sources.constant_contact.quota_reset_utc is not \"HH:MM\" or \"HH:MM:SS\"")
    })?;
    let limits = SourceLimits {
        per_second: Some(settings.requests_per_second),
        daily: Some(settings.daily_quota),
        daily_reset_utc_s,
    };
    let poller_settings = poller_settings(SOURCE, SOURCE, &settings.schedule(), doc, limits, false);
    let tokens = TokenKeeper::new(OAuthConfig {
        tenant_id: context.tenant_id.clone(),
        http: context.http.clone(),
        token_url,
        client_id: settings.client_id.clone(),
        client_secret,
        document_refresh_token,
        store: context.store.clone(),
        tenant_store: context.tenant_store.clone(),
        master_key: context.master_key.clone(),
    });
    let poller = ConstantContactPoller {
        inner: Arc::new(Inner {
            http: context.http.clone(),
            base_url,
            reference_source: settings.reference_source.clone(),
            tokens,
        }),
    };
    Ok(PollerSpec {
        settings: poller_settings,
        poller: Arc::new(poller),
    })
}

/// The poller of one tenant's Constant Contact account.
pub struct ConstantContactPoller {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// Without a trailing `/`; `_links.next.href` is relative to it.
    base_url: String,
    reference_source: String,
    tokens: TokenKeeper,
}

impl Poller for ConstantContactPoller {
    fn fetch(&self, request: PollRequest) -> LocalFuture<PollFetch> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move { inner.fetch(request).await })
    }
}

/// `since_ms` → the `updated_after` value: one second earlier, in whole seconds, so the
/// listing includes contacts updated at `since_ms`'s second whether the API compares
/// strictly or not (the re-read is deduplicated). `None` from the beginning.
pub fn updated_after(since_ms: u64) -> Option<String> {
    let since_s = i64::try_from(since_ms / 1_000).ok()?;
    if since_s < 1 {
        return None;
    }
    jiff::Timestamp::from_second(since_s - 1)
        .ok()
        .map(|timestamp| timestamp.to_string())
}

/// The URL of a run's first page.
pub fn first_page_url(base_url: &str, since_ms: u64) -> Result<reqwest::Url, String> {
    let mut url = reqwest::Url::parse(&format!("{base_url}/v3/contacts"))
        .map_err(|err| format!("base_url: {err}"))?;
    {
        let mut query = url.query_pairs_mut();
        if let Some(updated_after) = updated_after(since_ms) {
            query.append_pair("updated_after", &updated_after);
        }
        query
            .append_pair("status", "all")
            .append_pair("limit", &PAGE_LIMIT.to_string())
            .append_pair("include", "custom_fields,list_memberships");
    }
    Ok(url)
}

/// The URL of a later page from `_links.next.href`: relative to the base URL; an absolute
/// link is followed only inside the base URL (the bearer token goes nowhere else).
pub fn next_page_url(base_url: &str, href: &str) -> Result<reqwest::Url, String> {
    let text = if href.starts_with('/') {
        format!("{base_url}{href}")
    } else if href.starts_with(&format!("{base_url}/")) {
        href.to_owned()
    } else {
        return Err(format!(
            "the next-page link {href:?} is not under the base URL"
        ));
    };
    reqwest::Url::parse(&text).map_err(|err| format!("the next-page link: {err}"))
}

/// A v3 error answer's `error_key` (an array of `{error_key, error_message}`, or one).
fn error_key(body: Option<&Value>) -> Option<String> {
    let body = body?;
    let first = match body {
        Value::Array(errors) => errors.first()?,
        other => other,
    };
    first
        .get("error_key")
        .and_then(Value::as_str)
        .map(|key| key.chars().take(80).collect())
}

/// One page's readable parts, or why it is unreadable.
fn read_page(body: &Value) -> Result<(&[Value], Option<String>), String> {
    let contacts = body
        .get("contacts")
        .and_then(Value::as_array)
        .ok_or("the answer has no `contacts` array")?;
    let next = match body.pointer("/_links/next/href") {
        None | Some(Value::Null) => None,
        Some(Value::String(href)) if !href.is_empty() => Some(href.clone()),
        Some(_) => return Err("`_links.next.href` is not a link".to_owned()),
    };
    Ok((contacts, next))
}

impl Inner {
    async fn fetch(&self, request: PollRequest) -> PollFetch {
        let url = match &request.cursor {
            None => first_page_url(&self.base_url, request.since_ms),
            Some(href) => next_page_url(&self.base_url, href),
        };
        let url = match url {
            Ok(url) => url,
            Err(message) => return PollFetch::Failed { message, calls: 0 },
        };
        let mut calls: u32 = 0;
        let mut refreshed_after_401 = false;
        loop {
            let token = match self.tokens.access_token(now_ms()).await {
                Ok(token) => token,
                Err(error) => return token_failure(error, calls),
            };
            calls += 1;
            let (status, body) = match self.get(url.clone(), &token.token).await {
                Ok(answer) => answer,
                Err(message) => return PollFetch::Failed { message, calls },
            };
            match status {
                200..=299 => return self.page(body.as_ref(), calls),
                401 if token.was_cached && !refreshed_after_401 => {
                    // A held token can be revoked or expire early: one refresh, one re-send.
                    refreshed_after_401 = true;
                    self.tokens.forget_access_token();
                }
                401 => {
                    return PollFetch::AuthRefused {
                        message: "Constant Contact refused a freshly refreshed access token \
                                  (HTTP 401): the customer must re-authorise the app and an \
                                  operator PATCH the new sources.constant_contact.refresh_token"
                            .to_owned(),
                    }
                }
                403 => {
                    return PollFetch::AuthRefused {
                        message: "Constant Contact forbade reading contacts (HTTP 403): the \
                                  customer must re-authorise the app with the contact_data and \
                                  offline_access scopes and an operator PATCH the new \
                                  sources.constant_contact.refresh_token"
                            .to_owned(),
                    }
                }
                429 if error_key(body.as_ref()).as_deref() == Some("quota_exceeded") => {
                    return PollFetch::QuotaExhausted { calls }
                }
                429 => {
                    return PollFetch::Throttled {
                        retry_after_ms: THROTTLED_RETRY_AFTER_MS,
                        calls,
                    }
                }
                _ => {
                    let key = error_key(body.as_ref()).unwrap_or_else(|| "no error_key".into());
                    return PollFetch::Failed {
                        message: format!("GET /v3/contacts answered {status} ({key})"),
                        calls,
                    };
                }
            }
        }
    }

    /// One contacts call: the status and the body when it is JSON.
    async fn get(
        &self,
        url: reqwest::Url,
        token: &SecretString,
    ) -> Result<(u16, Option<Value>), String> {
        let response = self
            .http
            .get(url)
            .bearer_auth(token.expose_secret())
            .header(ACCEPT, "application/json")
            .send()
            .await
            .map_err(|err| format!("GET /v3/contacts did not answer: {}", err.without_url()))?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(|err| {
            format!(
                "GET /v3/contacts: reading the answer failed: {}",
                err.without_url()
            )
        })?;
        Ok((status, serde_json::from_slice(&bytes).ok()))
    }

    fn page(&self, body: Option<&Value>, calls: u32) -> PollFetch {
        let Some(body) = body else {
            return PollFetch::Failed {
                message: "GET /v3/contacts answered a body that is not JSON".to_owned(),
                calls,
            };
        };
        let (contacts, next_cursor) = match read_page(body) {
            Ok(page) => page,
            Err(reason) => {
                return PollFetch::Failed {
                    message: format!("GET /v3/contacts: {reason}"),
                    calls,
                }
            }
        };
        let now = now_ms();
        let items = contacts
            .iter()
            .map(|contact| mapping::contact_item(contact, &self.reference_source, now))
            .collect();
        PollFetch::Page(PollPage {
            items,
            next_cursor,
            calls,
            ..Default::default()
        })
    }
}

/// A token failure as the fetch's answer.
fn token_failure(error: TokenError, calls: u32) -> PollFetch {
    match error {
        TokenError::Refused(message) => PollFetch::AuthRefused { message },
        TokenError::Throttled => PollFetch::Throttled {
            retry_after_ms: THROTTLED_RETRY_AFTER_MS,
            calls,
        },
        TokenError::Failed(message) => PollFetch::Failed { message, calls },
    }
}
