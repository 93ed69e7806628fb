//! Source platforms: one module per source, each `verify → parse → map to commands`.
//!
//! Everything here is pure (no I/O, no clock): the HTTP ingress verifies and maps, then hands
//! the [`Command`]s to `Capture` as [`NewEntry`]s. A command's [`EntryFact`] is the store's
//! own type: what a source maps is what the queue stores, field for field.
//!
//! # Layout
//! - [`stripe`]: Stripe webhooks (signature, event envelope, the mapping rules of docs/ingress.md).
//! - [`mailchimp`]: Mailchimp audiences, webhook and member poll (hybrid).
//! - [`amount`]: minor units → the decimal string Virtuous expects (zero-decimal currencies).

pub mod amount;
pub mod constant_contact;
#[cfg(test)]
mod fuzz_tests;
pub mod mailchimp;
pub mod platform;
pub mod platform_poll;
pub mod polling;
pub mod postgres;
pub mod stripe;

use serde_json::Value;
use steward_actors::store::{EntryFact, NewEntry, RecordKind};

/// Errors of the source layer (parsing and mapping; signatures have their own error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// The body is not the JSON shape the source sends (HTTP `400 malformed_body`).
    #[error("malformed event: {0}")]
    Malformed(String),
    /// The event is well-formed but cannot become a valid Virtuous body (e.g. no donor at all).
    /// Nothing is queued; the ingress records it (alert) rather than inventing data.
    #[error("cannot map {event_type} {object_id}: {reason}")]
    Mapping {
        event_type: String,
        object_id: String,
        reason: String,
    },
}

/// One source fact bound for Virtuous, ready to enqueue: the store's [`EntryFact`] (the
/// JSON body is serialised once, here) and the ids that find its record. The ingress adds the
/// arrival time ([`Command::into_new_entry`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// What is queued; its idempotency key is one per source fact, forever (docs/ingress.md
    /// "Dedup"; see [`idempotency_key`]).
    pub fact: EntryFact,
    /// Other ids that find this record (event id, charge id, PaymentIntent id, invoice id…).
    pub aliases: Vec<String>,
}

impl Command {
    /// The store's form of this command.
    pub fn into_new_entry(self, now_ms: u64) -> NewEntry {
        NewEntry {
            fact: self.fact,
            aliases: self.aliases,
            now_ms,
        }
    }

    /// The JSON body, parsed (for tests and checks: the queued form is `fact.body_json`).
    pub fn body(&self) -> Value {
        serde_json::from_str(&self.fact.body_json).expect("a command body is serialised JSON")
    }
}

/// Name of a record kind inside idempotency keys (stable: keys are stored forever).
pub fn kind_name(kind: RecordKind) -> &'static str {
    match kind {
        RecordKind::Gift => "gift",
        RecordKind::Contact => "contact",
        RecordKind::Refund => "refund",
    }
}

/// `{source}:{kind}:{fact id}` — the tenant is implicit (each tenant has its own key space).
/// The format is stored forever: never change it.
pub fn idempotency_key(source: &str, kind: RecordKind, fact_id: &str) -> String {
    format!("{source}:{}:{fact_id}", kind_name(kind))
}

/// Splits a full name into (first, last) at the last space: "Mary Ann Smith" → ("Mary Ann",
/// "Smith"). A single word gives `None`: the caller sends it as `name` instead.
pub fn split_full_name(full_name: &str) -> Option<(String, String)> {
    let trimmed = full_name.trim();
    let (first, last) = trimmed.rsplit_once(char::is_whitespace)?;
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() || last.is_empty() {
        return None;
    }
    Some((first.to_string(), last.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_at_the_last_space() {
        // Goal: multi-word given names stay together; a single word is not split.
        assert_eq!(
            split_full_name(" Mary Ann  Smith "),
            Some(("Mary Ann".into(), "Smith".into()))
        );
        assert_eq!(
            split_full_name("Jenny Rosen"),
            Some(("Jenny".into(), "Rosen".into()))
        );
        assert_eq!(split_full_name("Cher"), None);
        assert_eq!(split_full_name("   "), None);
    }

    #[test]
    fn idempotency_keys_name_source_kind_and_fact() {
        // Goal: the stored key format is exactly `{source}:{kind}:{id}`.
        assert_eq!(
            idempotency_key("stripe", RecordKind::Gift, "pi_1"),
            "stripe:gift:pi_1"
        );
        assert_eq!(
            idempotency_key("stripe", RecordKind::Refund, "ch_1"),
            "stripe:refund:ch_1"
        );
    }
}
