//! Two-way partners (pattern 4; docs/operations.md "Two-way sync"): the adapters behind the
//! actors crate's `PartnerWriter` port, built per tenant from its document's `two_way`
//! pairs.
//!
//! # Layout
//! - [`mailchimp`]: audience members (`PUT …/members/{subscriber_hash}`, tags, listing).
//! - [`platform`]: a generic platform's contacts API (`PUT {url}/contacts/{id}`, listing).
//!
//! Every call is one HTTP request over the process's shared client. Answers are classified
//! the same way for every partner: 2xx → `Done`; 408, 429, 5xx, timeouts and connection
//! errors → `Retry` (with `Retry-After` when the partner gives one); any other answer →
//! `Refused` with the partner's message. The adapters never retry and never panic: the
//! pair's loop in the actors crate owns retries, limits and dead letters. Writes are upserts
//! by id, so a write repeated after a crash changes nothing.

use std::sync::Arc;

use serde_json::Value;
use steward_actors::ports::{PartnerAnswer, PartnerSpec};
use steward_actors::two_way::PairKind;

use crate::tenant::TenantDoc;

pub mod mailchimp;
pub mod platform;

/// Longest wait for one partner answer.
pub const PARTNER_REQUEST_TIMEOUT_S: u64 = 30;
/// The longest answer body read (a listing page of 1,000 members is far below it).
const ANSWER_BYTES_MAX: usize = 32 * 1024 * 1024;
/// How much of a partner's message goes into a reason.
const REASON_CHARS: usize = 300;

/// What an adapter may use besides its settings.
#[derive(Clone)]
pub struct PartnerContext {
    pub tenant_id: String,
    /// The process's HTTP client (no redirects; each partner call sets its timeout).
    pub http: reqwest::Client,
    /// `http://127.0.0.1:PORT` of the embedded sandbox, when it runs (`"embedded"` URLs).
    pub sandbox_base_url: Option<String>,
}

/// A pair whose writer could not be built: the tenant runs without it; the reason is
/// logged at ERROR (validation should have refused its settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartnerBuildError {
    pub pair: String,
    pub reason: String,
}

/// One writer per pair of the document's `two_way` block, in pair order.
pub fn partners_for(
    context: &PartnerContext,
    doc: &TenantDoc,
) -> (Vec<PartnerSpec>, Vec<PartnerBuildError>) {
    let mut specs = Vec::new();
    let mut errors = Vec::new();
    for (pair, settings) in doc.two_way.iter().flatten() {
        let built: Result<Arc<dyn steward_actors::ports::PartnerWriter>, String> =
            match crate::tenant::pair_kind(pair) {
                Some(PairKind::Mailchimp) => mailchimp::MailchimpWriter::from_doc(context, doc)
                    .map(|writer| Arc::new(writer) as _),
                Some(PairKind::Platform(name)) => match &settings.api {
                    Some(api) => platform::PlatformWriter::new(context, &name, api)
                        .map(|writer| Arc::new(writer) as _),
                    None => Err("the pair has no `api` block".to_string()),
                },
                None => Err("not a pair name".to_string()),
            };
        match built {
            Ok(writer) => specs.push(PartnerSpec {
                pair: pair.clone(),
                writer,
            }),
            Err(reason) => errors.push(PartnerBuildError {
                pair: pair.clone(),
                reason,
            }),
        }
    }
    (specs, errors)
}

/// A partner's answer, whatever its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub status: u16,
    /// `Retry-After`, in milliseconds, when the partner sent whole seconds.
    pub retry_after_ms: Option<u64>,
    pub body: Vec<u8>,
}

/// Why a call gave nothing usable: try again later, or never.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    Retry {
        reason: String,
        after_ms: Option<u64>,
    },
    Refused {
        reason: String,
    },
}

impl Failure {
    pub(crate) fn retry(reason: impl Into<String>) -> Failure {
        Failure::Retry {
            reason: reason.into(),
            after_ms: None,
        }
    }
}

/// The port's answer of a finished call.
pub(crate) fn answer<T>(result: Result<T, Failure>) -> PartnerAnswer<T> {
    match result {
        Ok(done) => PartnerAnswer::Done(done),
        Err(Failure::Retry { reason, after_ms }) => PartnerAnswer::Retry { reason, after_ms },
        Err(Failure::Refused { reason }) => PartnerAnswer::Refused { reason },
    }
}

/// Sends one request and reads its answer (bounded). Only a request that got no complete
/// answer fails here: timeouts and connection errors are `Retry`; a request that cannot
/// even be built (a header the client refuses) is `Refused`.
pub(crate) async fn send(request: reqwest::RequestBuilder, target: &str) -> Result<Reply, Failure> {
    let request = request.timeout(std::time::Duration::from_secs(PARTNER_REQUEST_TIMEOUT_S));
    let mut response = request.send().await.map_err(|err| {
        let builder = err.is_builder();
        let reason = format!("{target}: {}", err.without_url());
        if builder {
            Failure::Refused { reason }
        } else {
            Failure::retry(reason)
        }
    })?;
    let status = response.status().as_u16();
    let retry_after_ms = crate::virtuous::facts::retry_after_s(response.headers())
        .map(|seconds| seconds.saturating_mul(1_000));
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) if body.len() + chunk.len() <= ANSWER_BYTES_MAX => {
                body.extend_from_slice(&chunk)
            }
            Ok(Some(_)) => {
                return Err(Failure::retry(format!(
                    "{target}: the answer is larger than {ANSWER_BYTES_MAX} bytes"
                )))
            }
            Ok(None) => break,
            Err(err) => {
                return Err(Failure::retry(format!(
                    "{target}: reading the answer: {}",
                    err.without_url()
                )))
            }
        }
    }
    Ok(Reply {
        status,
        retry_after_ms,
        body,
    })
}

/// A reply as the port sees it: 2xx is the reply; 408, 429 and 5xx are `Retry`; any other
/// status is `Refused` with the partner's message. `bare_403_is_busy`: a `403` without a
/// body is the partner's overload answer (Mailchimp's), not a refusal.
pub(crate) fn classify(
    target: &str,
    reply: Reply,
    bare_403_is_busy: bool,
) -> Result<Reply, Failure> {
    let status = reply.status;
    if (200..300).contains(&status) {
        return Ok(reply);
    }
    let reason = format!(
        "{target} answered {status}: {}",
        partner_message(&reply.body)
    );
    let busy = bare_403_is_busy && status == 403 && reply.body.iter().all(u8::is_ascii_whitespace);
    if matches!(status, 408 | 429) || status >= 500 || busy {
        return Err(Failure::Retry {
            reason,
            after_ms: reply.retry_after_ms,
        });
    }
    Err(Failure::Refused { reason })
}

/// What an error body says: a JSON body's `title`/`error` and `detail`/`message` (Mailchimp
/// problem documents, `{"error", "message"}`), else its first characters.
pub(crate) fn partner_message(body: &[u8]) -> String {
    let text = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => {
            let said = |keys: &[&str]| {
                keys.iter()
                    .find_map(|key| object.get(*key).and_then(Value::as_str))
                    .map(str::to_string)
            };
            let parts: Vec<String> = [said(&["title", "error"]), said(&["detail", "message"])]
                .into_iter()
                .flatten()
                .collect();
            if parts.is_empty() {
                String::from_utf8_lossy(body).into_owned()
            } else {
                parts.join(": ")
            }
        }
        _ => String::from_utf8_lossy(body).into_owned(),
    };
    let text = text.trim();
    if text.is_empty() {
        return "(no message)".to_string();
    }
    text.chars()
        .take(REASON_CHARS)
        .collect::<String>()
        .escape_debug()
        .to_string()
}

/// A text field of a partner's JSON as a canonical value: a string (a number as text), else
/// `null` (blank included).
pub(crate) fn text_value(value: Option<&Value>) -> Value {
    match value {
        Some(Value::String(text)) if !text.trim().is_empty() => Value::String(text.clone()),
        Some(Value::Number(number)) => Value::String(number.to_string()),
        _ => Value::Null,
    }
}

/// A partner's id (a string, or a number as text); `None` when absent or blank.
pub(crate) fn id_text(value: Option<&Value>) -> Option<String> {
    match text_value(value) {
        Value::String(id) => Some(id),
        _ => None,
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod sandbox_tests;
