//! The member poller (docs/polling.md "Mailchimp"): `GET {base}/3.0/lists/{list_id}/members`
//! by `since_last_changed`, oldest change first, one page of up to 1,000 members per fetch.
//!
//! # Paging: a keyset cursor, not a growing offset
//! A growing `offset` shifts when members change during the listing (an edited member jumps
//! to the end, and everyone after it moves up one). The cursor instead carries the
//! `last_changed` of the page's last member and how many members with exactly that second
//! were already read; the next page asks `since_last_changed` = that second with `offset` =
//! that count, so only members of that one second can shift. To notice when they did, the
//! next page starts one early, on the last member read (the anchor): if it is not there, a
//! member of that second moved, and the second is read again from its start (the re-read
//! members are duplicates the machinery drops). After [`MAX_RESTARTS`] restarts in a row the
//! offset is trusted as is (a source whose tie order is not stable cannot loop forever).
//!
//! # Answers
//! `429` or a bare `403` (Mailchimp's overload answer) → `Throttled` (1 s); `401` or a `403`
//! problem document (`API Key Invalid`, disabled keys) → `AuthRefused`; anything else that
//! is not a readable page → `Failed`. One fetch is one call. The adapter never retries.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use steward_actors::poll::{
    PollFetch, PollPage, PollRequest, PolledItem, Poller, PollerSpec, SourceLimits,
};
use steward_actors::ports::LocalFuture;

use super::member::{format_last_changed, parse_last_changed, parse_member};
use super::SOURCE;
use crate::sources::polling::{poller_settings, PollContext, PollerBuildError};
use crate::tenant::{MailchimpSettings, TenantDoc};

/// Members per page (Mailchimp's maximum `count`).
pub const PAGE_SIZE: usize = 1_000;
/// How long a throttled poller waits before asking for the same page again.
pub const THROTTLED_RETRY_AFTER_MS: u64 = 1_000;
/// Re-reads of one second's members in a row before the offset is trusted as is.
pub const MAX_RESTARTS: u32 = 3;

/// What the poller needs, resolved from the tenant document.
#[derive(Clone)]
pub struct MailchimpPollerConfig {
    pub http: reqwest::Client,
    /// `https://us21.api.mailchimp.com`, or the sandbox's `…/mailchimp` (no trailing `/`).
    pub base_url: String,
    pub api_key: String,
    pub list_id: String,
    pub reference_source: String,
}

/// The poller of one tenant's audience.
pub struct MailchimpPoller {
    config: Arc<MailchimpPollerConfig>,
}

/// Adds the tenant's member poller to `specs` when `sources.mailchimp` has an `api_key` and
/// a `list_id` (validated); a base URL that cannot be resolved goes to `errors`.
pub fn add_poller(
    context: &PollContext,
    doc: &TenantDoc,
    specs: &mut Vec<PollerSpec>,
    errors: &mut Vec<PollerBuildError>,
) {
    let Some(settings) = doc.sources.mailchimp.as_ref() else {
        return;
    };
    let (Some(api_key), Some(list_id)) = (settings.api_key.as_ref(), settings.list_id.as_ref())
    else {
        return;
    };
    let base_url = match base_url_of(settings, api_key, context.sandbox_base_url.as_deref()) {
        Ok(base_url) => base_url,
        Err(reason) => {
            errors.push(PollerBuildError {
                source: SOURCE.into(),
                reason,
            });
            return;
        }
    };
    let poller = MailchimpPoller::new(MailchimpPollerConfig {
        http: context.http.clone(),
        base_url,
        api_key: api_key.clone(),
        list_id: list_id.clone(),
        reference_source: settings.reference_source.clone(),
    });
    // No per-second or daily limit: Mailchimp limits simultaneous connections (10 per key)
    // and the machinery runs one request at a time per poller.
    let settings = poller_settings(
        SOURCE,
        SOURCE,
        &settings.schedule(),
        doc,
        SourceLimits::default(),
        settings.url_key.is_some(),
    );
    specs.push(PollerSpec {
        settings,
        poller: Arc::new(poller),
    });
}

/// The API base: the setting, `"embedded"` → the embedded sandbox, default
/// `https://{dc}.api.mailchimp.com` from the key's data-center suffix.
pub fn base_url_of(
    settings: &MailchimpSettings,
    api_key: &str,
    sandbox_base_url: Option<&str>,
) -> Result<String, String> {
    match settings.base_url.as_deref() {
        Some("embedded") => match sandbox_base_url {
            Some(sandbox) => Ok(format!("{}/mailchimp", sandbox.trim_end_matches('/'))),
            None => Err("base_url is \"embedded\" but the embedded sandbox is not running".into()),
        },
        Some(base_url) => Ok(base_url.trim_end_matches('/').to_string()),
        None => match api_key.rsplit_once('-') {
            Some((_, data_center)) if !data_center.is_empty() => {
                Ok(format!("https://{data_center}.api.mailchimp.com"))
            }
            _ => Err("the api_key has no data-center suffix (`…-us21`)".into()),
        },
    }
}

/// Where the next page starts (serialised as the port's opaque cursor).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Cursor {
    /// `since_last_changed`, unix seconds.
    since_s: i64,
    /// Members with exactly `since_s` already read (the next `offset`).
    read_at_since: u64,
    /// The member `id` (subscriber hash) of the last member read, expected at `offset − 1`.
    anchor: Option<String>,
    /// Re-reads of `since_s` in a row.
    restarts: u32,
    /// The second listing of a run: archived members (Mailchimp leaves them out of the
    /// default listing, and an archive whose webhook was lost is an opt-out to catch).
    #[serde(default)]
    archived: bool,
}

impl MailchimpPoller {
    pub fn new(config: MailchimpPollerConfig) -> MailchimpPoller {
        MailchimpPoller {
            config: Arc::new(config),
        }
    }
}

impl Poller for MailchimpPoller {
    fn fetch(&self, request: PollRequest) -> LocalFuture<PollFetch> {
        let config = Arc::clone(&self.config);
        Box::pin(async move { fetch_page(&config, request).await })
    }
}

async fn fetch_page(config: &MailchimpPollerConfig, request: PollRequest) -> PollFetch {
    let cursor = match request.cursor.as_deref() {
        None => None,
        Some(text) => match serde_json::from_str::<Cursor>(text) {
            Ok(cursor) => Some(cursor),
            Err(err) => {
                return PollFetch::Failed {
                    message: format!("unreadable Mailchimp cursor: {err}"),
                    calls: 0,
                }
            }
        },
    };
    let since_s = match &cursor {
        Some(cursor) => Some(cursor.since_s),
        None if request.since_ms > 0 => Some((request.since_ms / 1000) as i64),
        None => None,
    };
    // Start one early, on the anchor, to see whether the members before it stayed put.
    let anchored = cursor
        .as_ref()
        .filter(|cursor| cursor.read_at_since > 0)
        .and_then(|cursor| cursor.anchor.clone());
    let read_at_since = cursor.as_ref().map_or(0, |cursor| cursor.read_at_since);
    let offset = read_at_since - u64::from(anchored.is_some());
    let archived = cursor.as_ref().is_some_and(|cursor| cursor.archived);
    let members = match get_members(config, since_s, offset, archived).await {
        Ok(members) => members,
        Err(fetch) => return fetch,
    };
    let restarts = cursor.as_ref().map_or(0, |cursor| cursor.restarts);
    let mut to_map: &[Value] = &members;
    if let (Some(anchor), Some(since_s)) = (&anchored, since_s) {
        let anchor_in_place = members.first().is_some_and(|first| {
            first.get("id").and_then(Value::as_str) == Some(anchor.as_str())
                && last_changed_s(first) == Some(since_s)
        });
        if anchor_in_place {
            to_map = &members[1..];
        } else if restarts < MAX_RESTARTS {
            tracing::debug!(
                since_s,
                "mailchimp members of one second moved during the listing; reading it again"
            );
            return PollFetch::Page(PollPage {
                items: Vec::new(),
                next_cursor: Some(cursor_text(&Cursor {
                    since_s,
                    read_at_since: 0,
                    anchor: None,
                    restarts: restarts + 1,
                    archived,
                })),
                calls: 1,
                ..Default::default()
            });
        }
    }
    let now_ms = steward_actors::ports::now_ms();
    let items = to_map
        .iter()
        .map(|member| polled_item(config, member, since_s.unwrap_or(0), now_ms))
        .collect();
    let next_cursor = (members.len() >= PAGE_SIZE)
        .then(|| next_cursor(&members, since_s, offset, restarts))
        .flatten()
        .map(|cursor| Cursor { archived, ..cursor })
        .or_else(|| {
            // The default listing is done: the archived members changed since the run's
            // start come next.
            (!archived).then_some(Cursor {
                since_s: (request.since_ms / 1_000) as i64,
                read_at_since: 0,
                anchor: None,
                restarts: 0,
                archived: true,
            })
        })
        .map(|cursor| cursor_text(&cursor));
    PollFetch::Page(PollPage {
        items,
        next_cursor,
        calls: 1,
        ..Default::default()
    })
}

/// The cursor after a full page read at `offset` of the members changed at or after
/// `since_s`; `None` when the page's last member is unreadable (the run ends there; the
/// next run starts from the checkpoint).
fn next_cursor(
    members: &[Value],
    since_s: Option<i64>,
    offset: u64,
    restarts: u32,
) -> Option<Cursor> {
    let last = members.last()?;
    let last_s = last_changed_s(last)?;
    let anchor = last.get("id").and_then(Value::as_str).map(str::to_string);
    if since_s == Some(last_s) {
        // The whole page is one second: everything up to its end was read.
        return Some(Cursor {
            since_s: last_s,
            read_at_since: offset + members.len() as u64,
            anchor,
            restarts,
            archived: false,
        });
    }
    let at_last = members
        .iter()
        .rev()
        .take_while(|member| last_changed_s(member) == Some(last_s))
        .count() as u64;
    Some(Cursor {
        since_s: last_s,
        read_at_since: at_last,
        anchor,
        restarts: 0,
        archived: false,
    })
}

fn cursor_text(cursor: &Cursor) -> String {
    serde_json::to_string(cursor).unwrap_or_default()
}

fn last_changed_s(member: &Value) -> Option<i64> {
    member
        .get("last_changed")
        .and_then(Value::as_str)
        .and_then(parse_last_changed)
}

fn polled_item(
    config: &MailchimpPollerConfig,
    member: &Value,
    since_s: i64,
    now_ms: u64,
) -> PolledItem {
    match parse_member(member, &config.list_id) {
        Ok(version) => PolledItem {
            record_id: version.unique_email_id.clone(),
            version_ms: seconds_to_ms(version.changed_at_s),
            entries: Ok(vec![version
                .command(&config.reference_source)
                .into_new_entry(now_ms)]),
        },
        Err(reason) => {
            let id = ["unique_email_id", "id"]
                .iter()
                .find_map(|key| member.get(*key).and_then(Value::as_str))
                .unwrap_or("unknown");
            PolledItem {
                record_id: id.to_string(),
                version_ms: seconds_to_ms(last_changed_s(member).unwrap_or(since_s)),
                entries: Err(reason),
            }
        }
    }
}

fn seconds_to_ms(unix_s: i64) -> u64 {
    u64::try_from(unix_s).unwrap_or(0).saturating_mul(1_000)
}

/// One `GET …/members` call: the members, or the fetch outcome that ends this page.
async fn get_members(
    config: &MailchimpPollerConfig,
    since_s: Option<i64>,
    offset: u64,
    archived: bool,
) -> Result<Vec<Value>, PollFetch> {
    let failed = |message: String| PollFetch::Failed { message, calls: 1 };
    let mut url = reqwest::Url::parse(&config.base_url)
        .map_err(|err| failed(format!("bad Mailchimp base URL: {err}")))?;
    url.path_segments_mut()
        .map_err(|()| failed("bad Mailchimp base URL".into()))?
        .pop_if_empty()
        .extend(["3.0", "lists", &config.list_id, "members"]);
    let mut query: Vec<(&str, String)> = vec![
        ("count", PAGE_SIZE.to_string()),
        ("offset", offset.to_string()),
        ("sort_field", "last_changed".into()),
        ("sort_dir", "ASC".into()),
    ];
    if let Some(since_s) = since_s {
        query.push(("since_last_changed", format_last_changed(since_s)));
    }
    if archived {
        query.push(("status", "archived".into()));
    }
    let response = config
        .http
        .get(url)
        .query(&query)
        .basic_auth("anystring", Some(&config.api_key))
        .send()
        .await
        .map_err(|err| failed(format!("Mailchimp unreachable: {}", err.without_url())))?;
    let status = response.status().as_u16();
    let body = response
        .bytes()
        .await
        .map_err(|err| failed(format!("Mailchimp answer cut short: {}", err.without_url())))?;
    match status {
        200 => {}
        429 => {
            return Err(PollFetch::Throttled {
                retry_after_ms: THROTTLED_RETRY_AFTER_MS,
                calls: 1,
            })
        }
        403 if body.iter().all(u8::is_ascii_whitespace) => {
            // Mailchimp's overload answer: a 403 without a problem document.
            return Err(PollFetch::Throttled {
                retry_after_ms: THROTTLED_RETRY_AFTER_MS,
                calls: 1,
            });
        }
        401 | 403 => {
            return Err(PollFetch::AuthRefused {
                message: format!(
                    "Mailchimp refused the API key ({status} {}): check sources.mailchimp.api_key",
                    problem_summary(&body)
                ),
            })
        }
        _ => {
            return Err(failed(format!(
                "Mailchimp answered {status} {}",
                problem_summary(&body)
            )))
        }
    }
    let mut page: Value = serde_json::from_slice(&body)
        .map_err(|err| failed(format!("unreadable Mailchimp members page: {err}")))?;
    match page.get_mut("members").map(Value::take) {
        Some(Value::Array(members)) => Ok(members),
        _ => Err(failed(
            "unreadable Mailchimp members page: no `members` array".into(),
        )),
    }
}

/// `title: detail` of a problem document, short and escaped for logs and reports.
fn problem_summary(body: &[u8]) -> String {
    let problem: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let title = problem.get("title").and_then(Value::as_str).unwrap_or("");
    let detail = problem.get("detail").and_then(Value::as_str).unwrap_or("");
    let summary = match (title.is_empty(), detail.is_empty()) {
        (true, true) => String::from_utf8_lossy(body).into_owned(),
        (false, true) => title.to_string(),
        (true, false) => detail.to_string(),
        (false, false) => format!("{title}: {detail}"),
    };
    summary.chars().take(200).collect()
}

#[cfg(test)]
#[path = "poller_tests.rs"]
mod poller_tests;
