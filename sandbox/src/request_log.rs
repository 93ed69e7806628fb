//! The request log behind `GET /_sandbox/orgs/{id}/requests`: the org's last
//! [`REQUEST_LOG_CAPACITY`] API requests, oldest first, with their answer and the
//! transactionIds they carried. Fault tests read it to measure retry gaps and to check which
//! idempotency keys went out again. It sits on every API call (benchmarks too), so an entry
//! borrows what it can: the method and, for fixed routes, the path are static strings, and a
//! batch's ids are moved in from its validation, not copied.

use std::borrow::Cow;
use std::collections::VecDeque;

use serde::Serialize;

/// Requests kept per org; the oldest is dropped first. At most ~100 ids per entry (a full
/// batch), so a busy org's log stays in the tens of megabytes at worst.
pub(crate) const REQUEST_LOG_CAPACITY: usize = 10_000;

/// One API request as the log shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LoggedRequest {
    /// When the request reached the gate (Unix ms), before any fault or latency.
    pub(crate) at_ms: u64,
    pub(crate) method: &'static str,
    pub(crate) path: Cow<'static, str>,
    /// The answer's status; `0` = closed without an answer (hang, apply-then-close).
    pub(crate) status: u16,
    /// The transactionIds of a gift-transaction body (single or batch, in order; items
    /// without one are skipped); empty for every other request.
    pub(crate) transaction_ids: Vec<String>,
    /// The `referenceId`s of the contact transactions this request queued (`POST
    /// /api/Contact/Transaction`, `POST /api/Contact/Batch`: the accepted items, in order;
    /// items without one are skipped); empty for every other request and for a refused one.
    /// Tests count contact transactions per contact with it.
    pub(crate) reference_ids: Vec<String>,
}

/// The `referenceId` of one accepted contact-transaction body (a single transaction or one
/// batch item), when it has a text one. Called only for contacts, under the org lock.
pub(crate) fn contact_reference_id(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct View {
        #[serde(rename = "referenceId")]
        reference_id: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<View>(body).ok()?.reference_id? {
        serde_json::Value::String(id) => Some(id),
        serde_json::Value::Number(id) => Some(id.to_string()),
        _ => None,
    }
}

/// A bounded log: pushing beyond [`REQUEST_LOG_CAPACITY`] drops the oldest entry.
#[derive(Debug, Default)]
pub(crate) struct RequestLog {
    entries: VecDeque<LoggedRequest>,
}

impl RequestLog {
    pub(crate) fn push(&mut self, request: LoggedRequest) {
        if self.entries.len() >= REQUEST_LOG_CAPACITY {
            self.entries.pop_front();
        }
        self.entries.push_back(request);
    }

    /// Oldest first.
    pub(crate) fn entries(&self) -> &VecDeque<LoggedRequest> {
        &self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logged(at_ms: u64) -> LoggedRequest {
        LoggedRequest {
            at_ms,
            method: "POST",
            path: Cow::Borrowed("/api/v2/Gift/Transactions"),
            status: 200,
            transaction_ids: vec![format!("pi_{at_ms}")],
            reference_ids: Vec::new(),
        }
    }

    #[test]
    fn the_log_keeps_the_newest_requests_up_to_its_capacity_oldest_first() {
        // Goal: past the capacity the oldest entries are dropped, the order stays oldest first.
        let mut log = RequestLog::default();
        let pushed = REQUEST_LOG_CAPACITY as u64 + 25;
        for at_ms in 0..pushed {
            log.push(logged(at_ms));
        }
        let entries = log.entries();
        assert_eq!(entries.len(), REQUEST_LOG_CAPACITY);
        assert_eq!(entries.front().unwrap().at_ms, 25);
        assert_eq!(entries.back().unwrap().at_ms, pushed - 1);
        assert!(entries
            .iter()
            .zip(entries.iter().skip(1))
            .all(|(earlier, later)| earlier.at_ms + 1 == later.at_ms));
        assert_eq!(
            entries.back().unwrap().transaction_ids,
            [format!("pi_{}", pushed - 1)]
        );
    }

    #[test]
    fn an_entry_serializes_to_the_documented_shape() {
        // Goal: the JSON fields are exactly the ones docs/sandbox.md lists.
        let json = serde_json::to_value(logged(7)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"at_ms": 7, "method": "POST", "path": "/api/v2/Gift/Transactions",
                               "status": 200, "transaction_ids": ["pi_7"],
                               "reference_ids": []})
        );
    }

    #[test]
    fn a_contact_body_gives_its_reference_id() {
        // Goal: the referenceId of a contact transaction or batch item is read (text or
        // number); none, null, another type or an unreadable body give none.
        assert_eq!(
            contact_reference_id(br#"{"referenceSource": "CC", "referenceId": "c-1"}"#),
            Some("c-1".to_owned())
        );
        assert_eq!(
            contact_reference_id(br#"{"referenceId": 42}"#),
            Some("42".to_owned())
        );
        for body in [
            &br#"{"email": "a@b.org"}"#[..],
            br#"{"referenceId": null}"#,
            br#"{"referenceId": ["x"]}"#,
            b"not json",
        ] {
            assert_eq!(contact_reference_id(body), None);
        }
    }
}
