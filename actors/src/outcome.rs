//! Outcome classification: what a Virtuous answer means for the items that were sent
//! (docs/operations.md, "Submission and budget"). One pure function, [`classify`], tested on its own.
//!
//! The actors crate does not know HTTP: the client (`steward::virtuous`) reduces a response to
//! plain [`ResponseFacts`] (a status number, a connection-error kind, the `Retry-After` seconds,
//! the `modelState` keys) and this module decides. Retry *timing* lives in [`crate::retry`].
//!
//! Decisions the outcome table leaves open, made here (each has a named constant or a test):
//! - `429` without `Retry-After` waits [`THROTTLE_DEFAULT_RETRY_AFTER_MS`] (1 s, as the sandbox).
//! - `409` is transient while `attempt <= CONFLICT_TRANSIENT_ATTEMPTS` (3), permanent after.
//! - `408` (request timeout) is transient like a client-side timeout.
//! - Other `4xx` are permanent; `404` on a read is "not found" (permanent for that read; the
//!   client turns a lookup's 404 into "not yet visible" itself).
//! - `3xx` needs the operator: Virtuous does not redirect, so the base URL is wrong.
//! - A status outside 100..=599 is treated as an answer we cannot read: unknown for a write
//!   (it may have been applied), transient for a read.
//! - A connection closed with no answer, or an unrecognised connection error, after the
//!   request went out: unknown for a write, transient for a read (a read applies nothing).
//! - `400`/`422` naming items (`transactions[3].amount`) rejects those items only; the others
//!   go again unchanged ([`BatchOutcome::ItemsRejected`]). Indices outside the batch are ignored.
//! - `400`/`422` naming no item: permanent for a single-item request; a batch is split in
//!   halves ([`BatchOutcome::Split`]) until single items get their own verdict.
//! - `413` on a batch is [`Outcome::TooLarge`] (split); on a single item it cannot be split,
//!   so it is permanent.

// Size: over 500 lines with its inline table tests; the production part is ~260.

use std::collections::BTreeMap;

/// How long a `429` without `Retry-After` makes the tenant wait.
pub const THROTTLE_DEFAULT_RETRY_AFTER_MS: u64 = 1_000;
/// `409 Conflict` is retried this many attempts before it becomes permanent.
pub const CONFLICT_TRANSIENT_ATTEMPTS: u32 = 3;

/// Why no answer arrived (only meaningful when [`ResponseFacts::status`] is `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionErrorKind {
    /// The client gave up waiting (request timeout). The request may have been applied.
    Timeout,
    /// Could not connect (refused, DNS, TLS handshake): the request was certainly not sent.
    Refused,
    /// The connection closed after the request went out, before any answer: possibly applied.
    ClosedBeforeAnswer,
    /// Anything else; treated like a close for writes (cannot prove it was not applied).
    Other,
    /// Nothing was sent: the tenant's Virtuous client cannot be built as configured (a base
    /// URL or key it cannot use, the embedded sandbox off). Needs the operator; never a 401.
    NotConfigured,
}

/// Everything classification needs from one call, with no HTTP types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseFacts {
    /// The HTTP status; `None` when no answer arrived.
    pub status: Option<u16>,
    /// Why no answer arrived; `None` when `status` is set.
    pub connection_error_kind: Option<ConnectionErrorKind>,
    /// `Retry-After` in seconds, when present and numeric.
    pub retry_after_s: Option<u64>,
    /// Keys of the 400 body's `modelState` (`transactions[3].amount`), in answer order.
    pub model_state_keys: Vec<String>,
    /// The body's `message` (or a short text body), for reasons shown in dead letters.
    pub message: Option<String>,
    /// A write (transaction, batch, webhook registration) rather than a read or query.
    pub is_write: bool,
    /// Items carried by the request (1 for single writes, 0 for reads).
    pub item_count: usize,
    /// Which attempt this was, 1-based (the caller sets it; the client cannot know).
    pub attempt: u32,
}

impl ResponseFacts {
    /// Facts for an answer with this status (other fields empty, one write item, attempt 1).
    pub fn answered(status: u16) -> ResponseFacts {
        ResponseFacts {
            status: Some(status),
            connection_error_kind: None,
            retry_after_s: None,
            model_state_keys: Vec::new(),
            message: None,
            is_write: true,
            item_count: 1,
            attempt: 1,
        }
    }

    /// Facts for a call that got no answer.
    pub fn unanswered(kind: ConnectionErrorKind) -> ResponseFacts {
        ResponseFacts {
            status: None,
            connection_error_kind: Some(kind),
            ..ResponseFacts::answered(0)
        }
    }
}

/// The verdict for an item (or for every item of a request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: the item is `submitted`.
    Accepted,
    /// 429: the whole tenant waits this long, then the item goes again (not a failed attempt).
    Throttled { retry_after_ms: u64 },
    /// Retry lane on the schedule with jitter.
    Transient { reason: String },
    /// Possibly applied, answer lost: retry with the same idempotency key; the reconciler
    /// catches a duplicate if Virtuous does not dedup.
    Unknown { reason: String },
    /// This item is bad (named in `modelState`): dead-letter it.
    PermanentItem { item_index: usize, reason: String },
    /// The request's items are bad: dead-letter them.
    Permanent { reason: String },
    /// 413 on a batch: split it and send the halves (no failed attempt counted).
    TooLarge,
    /// 401/403 or a misconfiguration: pause the tenant and alert; items stay queued.
    NeedsOperator { reason: String },
}

/// The verdict for a whole request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Every item of the request shares this verdict.
    All(Outcome),
    /// The request was refused because of the items named here (each an
    /// [`Outcome::PermanentItem`], sorted by index, one per item): dead-letter them; every
    /// other item goes again unchanged in a new request, at once and without counting an
    /// attempt. Under the sandbox's `accept_others` (unknown for the real API) the others were
    /// already accepted: resending relies on transactionId dedup, and the reconciler catches a
    /// duplicate otherwise.
    ItemsRejected { rejected: Vec<Outcome> },
    /// A batch was refused as a whole without naming an item: split it in halves and send
    /// each; a single item then gets its own verdict.
    Split { reason: String },
}

/// Classifies one call's facts (docs/operations.md). Total: never panics, whatever the facts.
pub fn classify(response: ResponseFacts) -> BatchOutcome {
    let status = match response.status {
        Some(status) => status,
        None => return BatchOutcome::All(classify_unanswered(&response)),
    };
    let reason = |what: &str| reason_text(status, what, response.message.as_deref());
    let outcome = match status {
        200..=299 => Outcome::Accepted,
        429 => Outcome::Throttled {
            retry_after_ms: response
                .retry_after_s
                .map(|seconds| seconds.saturating_mul(1_000))
                .unwrap_or(THROTTLE_DEFAULT_RETRY_AFTER_MS),
        },
        500..=599 => Outcome::Transient {
            reason: reason("server error"),
        },
        408 => Outcome::Transient {
            reason: reason("request timeout"),
        },
        401 | 403 => Outcome::NeedsOperator {
            reason: reason("credentials refused"),
        },
        400 | 422 => return classify_invalid(&response, reason("invalid")),
        413 if response.item_count > 1 => Outcome::TooLarge,
        413 => Outcome::Permanent {
            reason: reason("a single item is too large"),
        },
        404 if response.is_write => Outcome::Permanent {
            reason: reason("not found on a write (archived or missing record)"),
        },
        409 if response.attempt <= CONFLICT_TRANSIENT_ATTEMPTS => Outcome::Transient {
            reason: reason("conflict"),
        },
        409 => Outcome::Permanent {
            reason: reason("conflict persisted"),
        },
        300..=399 => Outcome::NeedsOperator {
            reason: reason("unexpected redirect: check the Virtuous base URL"),
        },
        100..=199 | 400..=499 => Outcome::Permanent {
            reason: reason("refused"),
        },
        _ if response.is_write => Outcome::Unknown {
            reason: reason("unreadable status"),
        },
        _ => Outcome::Transient {
            reason: reason("unreadable status"),
        },
    };
    BatchOutcome::All(outcome)
}

fn classify_unanswered(response: &ResponseFacts) -> Outcome {
    match response.connection_error_kind {
        Some(ConnectionErrorKind::NotConfigured) => Outcome::NeedsOperator {
            reason: response
                .message
                .clone()
                .unwrap_or_else(|| "not sent: the Virtuous client is not configured".to_string()),
        },
        Some(ConnectionErrorKind::Timeout) => Outcome::Transient {
            reason: "timeout: no answer in time".to_string(),
        },
        Some(ConnectionErrorKind::Refused) => Outcome::Transient {
            reason: "connection error: could not connect".to_string(),
        },
        Some(ConnectionErrorKind::ClosedBeforeAnswer) if response.is_write => Outcome::Unknown {
            reason: "connection closed before an answer: possibly applied".to_string(),
        },
        Some(ConnectionErrorKind::Other) | None if response.is_write => Outcome::Unknown {
            reason: "connection error after sending: possibly applied".to_string(),
        },
        _ => Outcome::Transient {
            reason: "connection error".to_string(),
        },
    }
}

/// 400/422: items named in `modelState` are rejected; otherwise single → permanent, batch → split.
fn classify_invalid(response: &ResponseFacts, reason: String) -> BatchOutcome {
    let mut fields_by_item: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
    for key in &response.model_state_keys {
        if let Some((index, field)) = item_index_of_key(key) {
            if index < response.item_count {
                fields_by_item.entry(index).or_default().push(field);
            }
        }
    }
    if !fields_by_item.is_empty() {
        let rejected = fields_by_item
            .into_iter()
            .map(|(item_index, fields)| Outcome::PermanentItem {
                item_index,
                reason: format!("{reason}; fields: {}", fields.join(", ")),
            })
            .collect();
        return BatchOutcome::ItemsRejected { rejected };
    }
    if response.item_count > 1 {
        return BatchOutcome::Split { reason };
    }
    let fields = response.model_state_keys.join(", ");
    let reason = if fields.is_empty() {
        reason
    } else {
        format!("{reason}; fields: {fields}")
    };
    BatchOutcome::All(Outcome::Permanent { reason })
}

/// `transactions[3].amount` → `(3, "amount")`; `contacts[1]` → `(1, "")`; no index → `None`.
pub fn item_index_of_key(key: &str) -> Option<(usize, &str)> {
    let open = key.find('[')?;
    let close = open + key[open..].find(']')?;
    let index = key[open + 1..close].trim().parse::<usize>().ok()?;
    let field = key[close + 1..].trim_start_matches('.');
    Some((index, field))
}

fn reason_text(status: u16, what: &str, message: Option<&str>) -> String {
    match message.map(str::trim).filter(|text| !text.is_empty()) {
        // Bodies can be long HTML error pages: keep dead-letter reasons readable.
        Some(text) => format!("{status} {what}: {}", truncate(text, 200)),
        None => format!("{status} {what}"),
    }
}

fn truncate(text: &str, max_chars: usize) -> &str {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => &text[..cut],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn batch(status: u16, item_count: usize) -> ResponseFacts {
        ResponseFacts {
            item_count,
            ..ResponseFacts::answered(status)
        }
    }

    fn with_keys(status: u16, item_count: usize, keys: &[&str]) -> ResponseFacts {
        ResponseFacts {
            model_state_keys: keys.iter().map(|key| key.to_string()).collect(),
            ..batch(status, item_count)
        }
    }

    fn read(status: u16) -> ResponseFacts {
        ResponseFacts {
            is_write: false,
            item_count: 0,
            ..ResponseFacts::answered(status)
        }
    }

    fn class_name(outcome: &BatchOutcome) -> &'static str {
        match outcome {
            BatchOutcome::All(Outcome::Accepted) => "accepted",
            BatchOutcome::All(Outcome::Throttled { .. }) => "throttled",
            BatchOutcome::All(Outcome::Transient { .. }) => "transient",
            BatchOutcome::All(Outcome::Unknown { .. }) => "unknown",
            BatchOutcome::All(Outcome::PermanentItem { .. }) => "permanent_item",
            BatchOutcome::All(Outcome::Permanent { .. }) => "permanent",
            BatchOutcome::All(Outcome::TooLarge) => "too_large",
            BatchOutcome::All(Outcome::NeedsOperator { .. }) => "needs_operator",
            BatchOutcome::ItemsRejected { .. } => "items_rejected",
            BatchOutcome::Split { .. } => "split",
        }
    }

    #[test]
    fn every_row_of_the_design_table() {
        // Goal: each row of the outcome table (docs/operations.md) (and each decision this module documents)
        // yields its class.
        let unanswered_write = ResponseFacts::unanswered;
        let unanswered_read = |kind| ResponseFacts {
            is_write: false,
            ..ResponseFacts::unanswered(kind)
        };
        let conflict = |attempt| ResponseFacts {
            attempt,
            ..batch(409, 1)
        };
        let rows: Vec<(&str, ResponseFacts, &str)> = vec![
            ("200", batch(200, 100), "accepted"),
            ("204", batch(204, 1), "accepted"),
            ("429", batch(429, 5), "throttled"),
            ("500", batch(500, 5), "transient"),
            ("503", batch(503, 1), "transient"),
            ("520 edge", batch(520, 1), "transient"),
            ("408", batch(408, 1), "transient"),
            (
                "timeout",
                unanswered_write(ConnectionErrorKind::Timeout),
                "transient",
            ),
            (
                "refused",
                unanswered_write(ConnectionErrorKind::Refused),
                "transient",
            ),
            (
                "closed write",
                unanswered_write(ConnectionErrorKind::ClosedBeforeAnswer),
                "unknown",
            ),
            (
                "other write",
                unanswered_write(ConnectionErrorKind::Other),
                "unknown",
            ),
            (
                "closed read",
                unanswered_read(ConnectionErrorKind::ClosedBeforeAnswer),
                "transient",
            ),
            (
                "400 item named",
                with_keys(400, 5, &["transactions[3].amount"]),
                "items_rejected",
            ),
            (
                "422 item named",
                with_keys(422, 5, &["contacts[1].lastName"]),
                "items_rejected",
            ),
            (
                "400 single, no index",
                with_keys(400, 1, &["transaction.amount"]),
                "permanent",
            ),
            (
                "400 batch, no index",
                with_keys(400, 5, &["transactions"]),
                "split",
            ),
            ("400 batch, no modelState", batch(400, 5), "split"),
            ("404 write", batch(404, 1), "permanent"),
            ("404 read", read(404), "permanent"),
            ("409 attempt 1", conflict(1), "transient"),
            ("409 attempt 3", conflict(3), "transient"),
            ("409 attempt 4", conflict(4), "permanent"),
            ("413 batch", batch(413, 100), "too_large"),
            ("413 single", batch(413, 1), "permanent"),
            ("401", batch(401, 3), "needs_operator"),
            ("403", batch(403, 3), "needs_operator"),
            ("302", batch(302, 1), "needs_operator"),
            ("418", batch(418, 1), "permanent"),
            ("999 write", batch(999, 1), "unknown"),
            ("999 read", read(999), "transient"),
        ];
        for (row, facts, expected) in rows {
            let outcome = classify(facts);
            assert_eq!(class_name(&outcome), expected, "row {row}: {outcome:?}");
        }
    }

    #[test]
    fn throttle_uses_retry_after_or_one_second() {
        // Goal: a 429 waits Retry-After seconds (in ms), or the documented 1 s default.
        let with_header = ResponseFacts {
            retry_after_s: Some(7),
            ..batch(429, 1)
        };
        assert_eq!(
            classify(with_header),
            BatchOutcome::All(Outcome::Throttled {
                retry_after_ms: 7_000
            })
        );
        assert_eq!(
            classify(batch(429, 1)),
            BatchOutcome::All(Outcome::Throttled {
                retry_after_ms: THROTTLE_DEFAULT_RETRY_AFTER_MS
            })
        );
    }

    #[test]
    fn named_items_are_rejected_once_each_in_order() {
        // Goal: items named by several keys are rejected once, sorted, with every field in
        // the reason; out-of-range indices and unindexed keys do not reject anything else.
        let facts = with_keys(
            400,
            4,
            &[
                "transactions[2].giftDate",
                "transactions[0].amount",
                "transactions[2].amount",
                "transactions[9].amount",
                "transactionSource",
            ],
        );
        let BatchOutcome::ItemsRejected { rejected } = classify(facts) else {
            panic!("expected items rejected");
        };
        let indices: Vec<usize> = rejected
            .iter()
            .map(|outcome| match outcome {
                Outcome::PermanentItem { item_index, .. } => *item_index,
                other => panic!("not an item outcome: {other:?}"),
            })
            .collect();
        assert_eq!(indices, vec![0, 2]);
        let Outcome::PermanentItem { reason, .. } = &rejected[1] else {
            unreachable!()
        };
        assert!(
            reason.contains("giftDate") && reason.contains("amount"),
            "{reason}"
        );
        assert!(reason.starts_with("400"), "{reason}");
    }

    #[test]
    fn reasons_carry_the_message_truncated() {
        // Goal: a dead-letter reason names the status and the body's message, cut to 200 chars.
        let facts = ResponseFacts {
            message: Some("x".repeat(500)),
            ..batch(404, 1)
        };
        let BatchOutcome::All(Outcome::Permanent { reason }) = classify(facts) else {
            panic!("404 on a write is permanent");
        };
        assert!(reason.starts_with("404 not found on a write"), "{reason}");
        assert!(reason.len() < 300, "{}", reason.len());
    }

    #[test]
    fn item_index_parsing() {
        // Goal: the modelState key parser finds the index and field, and refuses non-indices.
        assert_eq!(
            item_index_of_key("transactions[3].amount"),
            Some((3, "amount"))
        );
        assert_eq!(
            item_index_of_key("contacts[1].lastName"),
            Some((1, "lastName"))
        );
        assert_eq!(item_index_of_key("contacts[12]"), Some((12, "")));
        assert_eq!(item_index_of_key("transaction.amount"), None);
        assert_eq!(item_index_of_key("transactions[x].amount"), None);
        assert_eq!(item_index_of_key("transactions[-1].amount"), None);
        assert_eq!(item_index_of_key("transactions[3"), None);
    }

    fn any_kind() -> impl Strategy<Value = ConnectionErrorKind> {
        prop_oneof![
            Just(ConnectionErrorKind::Timeout),
            Just(ConnectionErrorKind::Refused),
            Just(ConnectionErrorKind::ClosedBeforeAnswer),
            Just(ConnectionErrorKind::Other),
        ]
    }

    proptest! {
        #[test]
        fn any_5xx_is_transient(status in 500u16..=599, items in 0usize..200, write: bool) {
            // Goal: every 5xx (520 included) is transient, whatever the request.
            let facts = ResponseFacts { is_write: write, ..batch(status, items) };
            prop_assert_eq!(class_name(&classify(facts)), "transient");
        }

        #[test]
        fn any_2xx_is_accepted(status in 200u16..=299, items in 0usize..200) {
            // Goal: every 2xx is accepted for every item.
            prop_assert_eq!(classify(batch(status, items)), BatchOutcome::All(Outcome::Accepted));
        }

        #[test]
        fn classification_is_total(
            status in proptest::option::of(any::<u16>()),
            kind in proptest::option::of(any_kind()),
            retry_after_s in proptest::option::of(any::<u64>()),
            keys in proptest::collection::vec(".{0,24}", 0..6),
            message in proptest::option::of(".{0,300}"),
            is_write: bool,
            item_count in 0usize..300,
            attempt: u32,
        ) {
            // Goal: classify never panics, and a rejected item index is always inside the batch.
            let facts = ResponseFacts {
                status, connection_error_kind: kind, retry_after_s, model_state_keys: keys,
                message, is_write, item_count, attempt,
            };
            if let BatchOutcome::ItemsRejected { rejected } = classify(facts) {
                prop_assert!(!rejected.is_empty());
                for outcome in rejected {
                    match outcome {
                        Outcome::PermanentItem { item_index, .. } => {
                            prop_assert!(item_index < item_count)
                        }
                        other => prop_assert!(false, "not an item outcome: {:?}", other),
                    }
                }
            }
        }

        #[test]
        fn named_indices_are_exactly_the_rejected(
            indices in proptest::collection::btree_set(0usize..100, 1..10),
        ) {
            // Goal: the rejected items are exactly the distinct in-range indices named.
            let keys: Vec<String> =
                indices.iter().map(|index| format!("transactions[{index}].amount")).collect();
            let facts = ResponseFacts { model_state_keys: keys, ..batch(400, 100) };
            let BatchOutcome::ItemsRejected { rejected } = classify(facts) else {
                return Err(TestCaseError::fail("expected items rejected"));
            };
            let got: Vec<usize> = rejected.iter().filter_map(|outcome| match outcome {
                Outcome::PermanentItem { item_index, .. } => Some(*item_index),
                _ => None,
            }).collect();
            prop_assert_eq!(got, indices.into_iter().collect::<Vec<_>>());
        }
    }
}
