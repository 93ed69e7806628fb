//! From an HTTP answer (or its absence) to the plain facts the actors classify:
//! rate-limit headers, `Retry-After`, `modelState` keys, and the connection-error kind.

use std::error::Error as _;

use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use steward_actors::outcome::ConnectionErrorKind;

/// `X-RateLimit-*` as Virtuous sends them on every authenticated answer (faults and 429s
/// included). Each is `None` when absent or not a whole number (parse defensively: [D]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimitHeaders {
    /// `X-RateLimit-Limit`: the org's calls per hour.
    pub limit: Option<u64>,
    /// `X-RateLimit-Remaining`: calls left in the window after this one.
    pub remaining: Option<u64>,
    /// `X-RateLimit-Reset`: Unix second at which the window frees a call.
    pub reset_unix_s: Option<u64>,
}

impl RateLimitHeaders {
    pub fn from_headers(headers: &HeaderMap) -> RateLimitHeaders {
        RateLimitHeaders {
            limit: header_u64(headers, "x-ratelimit-limit"),
            remaining: header_u64(headers, "x-ratelimit-remaining"),
            reset_unix_s: header_u64(headers, "x-ratelimit-reset"),
        }
    }

    /// True when none of the three headers was readable (401s, answers from a proxy).
    pub fn is_empty(&self) -> bool {
        self.limit.is_none() && self.remaining.is_none() && self.reset_unix_s.is_none()
    }
}

/// `Retry-After` in seconds. The HTTP-date form is not read: Virtuous documents seconds, and
/// an unreadable value falls back to the classifier's default wait.
pub fn retry_after_s(headers: &HeaderMap) -> Option<u64> {
    header_u64(headers, "retry-after")
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    let text = headers.get(name)?.to_str().ok()?.trim();
    // Some servers send "12.0": accept a decimal, rounded up (never wait less than asked).
    text.parse::<u64>().ok().or_else(|| {
        let value = text.parse::<f64>().ok()?;
        (value.is_finite() && value >= 0.0).then(|| value.ceil() as u64)
    })
}

/// What an error body says: the `modelState` keys (sorted) and the `message`.
/// A non-JSON body (a plain-text 401, an HTML edge page) becomes the message, trimmed.
pub fn error_body_facts(body: &str) -> (Vec<String>, Option<String>) {
    #[derive(Deserialize)]
    struct ErrorBody {
        #[serde(default, alias = "Message")]
        message: Option<String>,
        #[serde(default, rename = "modelState", alias = "ModelState")]
        model_state: Option<serde_json::Map<String, serde_json::Value>>,
    }
    match serde_json::from_str::<ErrorBody>(body) {
        Ok(parsed) => {
            let keys: Vec<String> = parsed
                .model_state
                .map(|state| state.keys().cloned().collect())
                .unwrap_or_default();
            let message = match parsed.message {
                Some(message) => Some(message),
                None if keys.is_empty() => None,
                None => Some("The request is invalid.".to_string()),
            };
            (keys, message)
        }
        Err(_) => {
            let text = body.trim();
            let message = (!text.is_empty()).then(|| text.chars().take(500).collect());
            (Vec::new(), message)
        }
    }
}

/// Why a call got no answer, as well as reqwest lets us tell.
///
/// Limits of the distinction: reqwest (hyper) does not report whether the request bytes were
/// fully written before a connection closed. So:
/// - `is_connect()` (refused, DNS, TLS handshake, connect timeout) → [`Refused`]: the request
///   was certainly not sent. Checked before `is_timeout()` so a connect timeout counts here.
/// - `is_timeout()` → [`Timeout`]: the request may or may not have been applied.
/// - a close/reset after connecting (hyper's "connection closed before message completed",
///   `ConnectionReset`, `BrokenPipe`, `UnexpectedEof`) → [`ClosedBeforeAnswer`], even when
///   the close happened while the body was still being written (then nothing was applied, but
///   we cannot prove it). hyper retries by itself only a request on a reused pooled
///   connection that was closed before any byte was written, which is safe.
/// - anything else → [`Other`] (the classifier treats it like a close for writes).
///
/// [`Refused`]: ConnectionErrorKind::Refused
/// [`Timeout`]: ConnectionErrorKind::Timeout
/// [`ClosedBeforeAnswer`]: ConnectionErrorKind::ClosedBeforeAnswer
/// [`Other`]: ConnectionErrorKind::Other
pub fn connection_error_kind(error: &reqwest::Error) -> ConnectionErrorKind {
    if error.is_connect() {
        return ConnectionErrorKind::Refused;
    }
    if error.is_timeout() {
        return ConnectionErrorKind::Timeout;
    }
    let mut source = error.source();
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind;
            match io.kind() {
                ErrorKind::ConnectionRefused => return ConnectionErrorKind::Refused,
                ErrorKind::TimedOut => return ConnectionErrorKind::Timeout,
                ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe
                | ErrorKind::UnexpectedEof => return ConnectionErrorKind::ClosedBeforeAnswer,
                _ => {}
            }
        }
        // hyper's IncompleteMessage is not reachable as a type without depending on hyper;
        // its message is stable across hyper 1.x.
        let text = cause.to_string();
        if text.contains("closed before message completed") || text.contains("connection closed") {
            return ConnectionErrorKind::ClosedBeforeAnswer;
        }
        source = cause.source();
    }
    ConnectionErrorKind::Other
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn rate_limit_headers_parse_defensively() {
        // Goal: whole numbers parse, decimals round up, garbage and absence are None.
        let mut headers = HeaderMap::new();
        headers.insert("x-ratelimit-limit", HeaderValue::from_static("5000"));
        headers.insert("x-ratelimit-remaining", HeaderValue::from_static(" 12.2 "));
        headers.insert("x-ratelimit-reset", HeaderValue::from_static("soon"));
        headers.insert("retry-after", HeaderValue::from_static("-3"));
        let parsed = RateLimitHeaders::from_headers(&headers);
        assert_eq!(parsed.limit, Some(5000));
        assert_eq!(parsed.remaining, Some(13));
        assert_eq!(parsed.reset_unix_s, None);
        assert_eq!(retry_after_s(&headers), None);
        assert!(RateLimitHeaders::from_headers(&HeaderMap::new()).is_empty());
    }

    #[test]
    fn error_bodies_yield_keys_and_message() {
        // Goal: the documented 400 shape, a message-only body and a plain-text body all parse.
        let (keys, message) = error_body_facts(
            r#"{"message":"The request is invalid.","modelState":{"transactions[1].amount":["bad"],"transactions[0].giftDate":["bad"]}}"#,
        );
        assert_eq!(
            keys,
            vec!["transactions[0].giftDate", "transactions[1].amount"]
        );
        assert_eq!(message.as_deref(), Some("The request is invalid."));
        let (keys, message) = error_body_facts(r#"{"message":"take too large"}"#);
        assert!(keys.is_empty());
        assert_eq!(message.as_deref(), Some("take too large"));
        let (keys, message) = error_body_facts("Authorization has been denied for this request.");
        assert!(keys.is_empty());
        assert_eq!(
            message.as_deref(),
            Some("Authorization has been denied for this request.")
        );
        assert_eq!(error_body_facts("  "), (Vec::new(), None));
    }
}
