//! A polled platform (`sources.platforms.{name}.poll`; docs/polling.md "Polled platforms"):
//! the platform's JSON listing of changed records, read by an updated-since parameter and
//! cursor paging, each item mapped with the platform's **webhook mapping**
//! ([`super::platform`]), so one platform can be webhook, polled or both.
//!
//! Identity across the two paths: a gift's idempotency key is the mapping's transaction id
//! (the mapped `transactionId`, else the item's id), exactly as for a webhook event; a
//! contact's fact id is [`versioned_fact_id`]`(referenceId, updated_at seconds)`, which the
//! webhook path uses too when its event carries the update time at `poll.item_updated_at`.
//!
//! One fetch is one `GET`; the adapter never retries or sleeps (the machinery does).

use std::sync::Arc;

use jiff::tz::TimeZone;
use serde_json::Value;
use steward_actors::poll::SourceLimits;
use steward_actors::poll::{PollFetch, PollPage, PollRequest, PolledItem, Poller, PollerSpec};
use steward_actors::ports::LocalFuture;

use super::platform::{event_from_value, id_at, map_event, version_ms_of, PlatformMapped};
#[cfg(doc)]
use super::polling::versioned_fact_id;
use super::polling::{poller_settings, PollContext, PollerBuildError};
use crate::tenant::{PlatformPollSettings, PlatformSettings, TenantDoc};

/// `poll.url` = `embedded`: this path of the embedded sandbox, `{name}` the platform.
const EMBEDDED_FEED_PATH: &str = "/feeds/{name}/items";
/// `poll.url` = `embedded:/path`: that path of the embedded sandbox.
pub const EMBEDDED_PREFIX: &str = "embedded:";
/// The longest page body read (a limit on everything: a runaway listing fails the run).
const PAGE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// A 429 without a usable `Retry-After` waits this long; a longer one is capped.
const RETRY_AFTER_DEFAULT_MS: u64 = 1_000;
const RETRY_AFTER_MAX_MS: u64 = 3_600_000;
/// How much of an error answer's body goes into the run's failure message.
const ERROR_EXCERPT_CHARS: usize = 200;

/// The poller specs of every platform with `poll` (pushed in name order).
pub fn add_specs(
    context: &PollContext,
    doc: &TenantDoc,
    specs: &mut Vec<PollerSpec>,
    errors: &mut Vec<PollerBuildError>,
) {
    for (name, platform) in &doc.sources.platforms {
        let Some(poll) = &platform.poll else {
            continue;
        };
        let poller = PlatformPoller::new(
            name,
            platform,
            context.http.clone(),
            context.sandbox_base_url.as_deref(),
            &doc.time_zone,
        );
        match poller {
            Ok(poller) => specs.push(PollerSpec {
                settings: poller_settings(
                    name,
                    "platform",
                    &poll.schedule(),
                    doc,
                    SourceLimits::default(),
                    platform.secret.is_some(),
                ),
                poller: Arc::new(poller),
            }),
            Err(reason) => errors.push(PollerBuildError {
                source: name.clone(),
                reason,
            }),
        }
    }
}

/// The listing URL a `poll.url` names (`embedded` forms resolved against the sandbox).
pub fn listing_url(
    name: &str,
    url: &str,
    sandbox_base_url: Option<&str>,
) -> Result<reqwest::Url, String> {
    resolve_url(
        "poll.url",
        url,
        &EMBEDDED_FEED_PATH.replace("{name}", name),
        sandbox_base_url,
    )
}

/// A configured URL (`what` names its setting in errors), its embedded forms resolved
/// against the sandbox: `"embedded"` → `embedded_path`, `"embedded:/path"` → that path.
pub fn resolve_url(
    what: &str,
    url: &str,
    embedded_path: &str,
    sandbox_base_url: Option<&str>,
) -> Result<reqwest::Url, String> {
    let embedded_path = if url == "embedded" {
        Some(embedded_path)
    } else {
        url.strip_prefix(EMBEDDED_PREFIX)
    };
    let full = match embedded_path {
        Some(path) => {
            let base = sandbox_base_url.ok_or_else(|| {
                format!("{what} names the embedded sandbox, which is not running")
            })?;
            format!("{}{path}", base.trim_end_matches('/'))
        }
        None => url.to_owned(),
    };
    reqwest::Url::parse(&full).map_err(|err| format!("{what} does not parse: {err}"))
}

/// The adapter: one platform's listing.
pub struct PlatformPoller {
    inner: Arc<Inner>,
}

struct Inner {
    source: String,
    settings: PlatformSettings,
    /// `settings.poll`, present by construction.
    poll: PlatformPollSettings,
    url: reqwest::Url,
    http: reqwest::Client,
    time_zone: TimeZone,
}

impl PlatformPoller {
    /// `Err` when the platform has no `poll` or its URL cannot be used.
    pub fn new(
        source: &str,
        settings: &PlatformSettings,
        http: reqwest::Client,
        sandbox_base_url: Option<&str>,
        time_zone: &str,
    ) -> Result<PlatformPoller, String> {
        let poll = settings.poll.as_ref().ok_or("the platform has no `poll`")?;
        let url = listing_url(source, &poll.url, sandbox_base_url)?;
        Ok(PlatformPoller {
            inner: Arc::new(Inner {
                source: source.to_owned(),
                settings: settings.clone(),
                poll: poll.clone(),
                url,
                http,
                time_zone: TimeZone::get(time_zone).unwrap_or(TimeZone::UTC),
            }),
        })
    }
}

impl Poller for PlatformPoller {
    fn fetch(&self, request: PollRequest) -> LocalFuture<PollFetch> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move { inner.fetch(request).await })
    }
}

/// The ISO 8601 form of a poll's `since_ms` (UTC, fractions only when not whole seconds).
fn iso_of_ms(since_ms: u64) -> String {
    jiff::Timestamp::from_millisecond(since_ms.min(i64::MAX as u64) as i64)
        .unwrap_or(jiff::Timestamp::MAX)
        .to_string()
}

/// `Retry-After` in whole seconds, else the default; capped.
fn retry_after_ms(headers: &reqwest::header::HeaderMap) -> u64 {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.trim().parse::<u64>().ok())
        .map_or(RETRY_AFTER_DEFAULT_MS, |seconds| {
            seconds.saturating_mul(1_000).min(RETRY_AFTER_MAX_MS)
        })
}

fn excerpt(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .chars()
        .take(ERROR_EXCERPT_CHARS)
        .collect::<String>()
        .escape_debug()
        .to_string()
}

impl Inner {
    fn page_url(&self, request: &PollRequest) -> reqwest::Url {
        let poll = &self.poll;
        let mut url = self.url.clone();
        {
            let mut query = url.query_pairs_mut();
            query.append_pair(&poll.updated_since_param, &iso_of_ms(request.since_ms));
            if let Some(cursor) = &request.cursor {
                query.append_pair(&poll.cursor_param, cursor);
            }
        }
        url
    }

    async fn fetch(&self, request: PollRequest) -> PollFetch {
        let poll = &self.poll;
        let url = self.page_url(&request);
        // The URL without its query names the call in messages (the query is ours, no secret).
        let target = format!("GET {}", self.url);
        let mut call = self.http.get(url).header("Accept", "application/json");
        if let (Some(header), Some(value)) = (&poll.auth_header, &poll.auth_value) {
            call = call.header(header.as_str(), value.as_str());
        }
        let mut response = match call.send().await {
            Ok(response) => response,
            Err(err) => {
                return PollFetch::Failed {
                    message: format!("{target}: {}", err.without_url()),
                    calls: 1,
                }
            }
        };
        let status = response.status();
        if status.as_u16() == 429 {
            return PollFetch::Throttled {
                retry_after_ms: retry_after_ms(response.headers()),
                calls: 1,
            };
        }
        if matches!(status.as_u16(), 401 | 403) {
            return PollFetch::AuthRefused {
                message: format!(
                    "{target} answered {status}: check poll.auth_header / poll.auth_value"
                ),
            };
        }
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) if body.len() + chunk.len() <= PAGE_BYTES_MAX => {
                    body.extend_from_slice(&chunk)
                }
                Ok(Some(_)) => {
                    return PollFetch::Failed {
                        message: format!(
                            "{target}: the page is larger than {PAGE_BYTES_MAX} bytes"
                        ),
                        calls: 1,
                    }
                }
                Ok(None) => break,
                Err(err) => {
                    return PollFetch::Failed {
                        message: format!("{target}: reading the page: {}", err.without_url()),
                        calls: 1,
                    }
                }
            }
        }
        if !status.is_success() {
            return PollFetch::Failed {
                message: format!("{target} answered {status}: {}", excerpt(&body)),
                calls: 1,
            };
        }
        match self.page_of(
            &body,
            request.cursor.as_deref(),
            steward_actors::ports::now_ms(),
        ) {
            Ok(mut page) => {
                page.calls = 1;
                PollFetch::Page(page)
            }
            Err(reason) => PollFetch::Failed {
                message: format!("{target}: {reason}"),
                calls: 1,
            },
        }
    }

    /// A page's items and next cursor; `Err` when the page is not the configured shape.
    fn page_of(
        &self,
        body: &[u8],
        sent_cursor: Option<&str>,
        now_ms: u64,
    ) -> Result<PollPage, String> {
        let poll = &self.poll;
        let root: Value =
            serde_json::from_slice(body).map_err(|err| format!("the page is not JSON: {err}"))?;
        let items = root
            .pointer(&poll.items)
            .and_then(Value::as_array)
            .ok_or_else(|| format!("the page has no array of items at `{}`", poll.items))?;
        let next_cursor = match root.pointer(&poll.next_cursor) {
            None | Some(Value::Null) => None,
            Some(Value::String(cursor)) if cursor.is_empty() => None,
            Some(Value::String(cursor)) => Some(cursor.clone()),
            Some(Value::Number(number)) => Some(number.to_string()),
            Some(other) => {
                return Err(format!(
                    "the next cursor at `{}` is neither a string nor a number: {other}",
                    poll.next_cursor
                ))
            }
        };
        if next_cursor.is_some() && next_cursor.as_deref() == sent_cursor {
            // Following it would read this page forever.
            return Err("the platform answered the cursor it was sent as the next one".into());
        }
        Ok(PollPage {
            items: items
                .iter()
                .map(|item| self.item_of(item, now_ms))
                .collect(),
            next_cursor,
            calls: 0,
            ..Default::default()
        })
    }

    /// One item: its id, version and entries (mapped like a webhook event), or why not.
    fn item_of(&self, item: &Value, now_ms: u64) -> PolledItem {
        let poll = &self.poll;
        let record_id = id_at(item, &poll.item_id);
        let version_ms = item.pointer(&poll.item_updated_at).and_then(version_ms_of);
        let (Some(record_id), Some(version_ms)) = (record_id.clone(), version_ms) else {
            let reason = match record_id {
                None => format!(
                    "no item id at `{}` (a non-empty string or an integer)",
                    poll.item_id
                ),
                Some(_) => format!(
                    "no update time at `{}` (ISO 8601 with an offset, or unix seconds / ms)",
                    poll.item_updated_at
                ),
            };
            return PolledItem {
                record_id: record_id.unwrap_or_default(),
                version_ms: version_ms.unwrap_or(0),
                entries: Err(reason),
            };
        };
        let entries = self.entries_of(item, version_ms, now_ms);
        PolledItem {
            record_id,
            version_ms,
            entries,
        }
    }

    fn entries_of(
        &self,
        item: &Value,
        version_ms: u64,
        now_ms: u64,
    ) -> Result<Vec<steward_actors::store::NewEntry>, String> {
        let poll = &self.poll;
        let event = event_from_value(&self.settings, item.clone(), &poll.item_id)
            .map_err(|err| err.to_string())?;
        // A gift without a mapped giftDate is dated by the item's update time (the webhook
        // path uses the receipt time, which is about the same instant).
        let dated_unix_s = (version_ms / 1000) as i64;
        match map_event(
            &self.source,
            &self.settings,
            &event,
            &self.time_zone,
            dated_unix_s,
        ) {
            Ok(PlatformMapped::Command(command)) => Ok(vec![command.into_new_entry(now_ms)]),
            Ok(PlatformMapped::Ignored { reason }) => Err(reason),
            Err(err) => Err(err.to_string()),
        }
    }
}

#[cfg(test)]
mod tests;
