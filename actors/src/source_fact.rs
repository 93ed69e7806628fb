//! Source facts: what a webhook source hands Capture besides plain enqueues — alerts,
//! once-per-event marks, held entries and the links that release them. Plain data, typed
//! and source-neutral; the decisions run in Capture (`capture::commands`).

use crate::store::{EnqueueOutcome, NewEntry, RecordKind};

pub use crate::ports::AlertNote;

/// How a source links held entries: where its link parts live and what a link changes.
/// Messages may name `{entry}`, `{target}` and `{link}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkRule {
    /// Source-state name of link parts, keyed by link id.
    pub state_name: String,
    /// Source-state name of the index entry id → link id.
    pub index_name: String,
    /// The held records' kind and ingress source.
    pub kind: RecordKind,
    pub source: String,
    /// Body field set to the link's target id.
    pub target_field: String,
    /// Body field set to the link's note, when it has one.
    pub note_field: String,
    /// Alert raised when a link completes after its entry's hold ended.
    pub late_alert_code: String,
    pub late_alert_message: String,
    /// History reason of a release.
    pub release_reason: String,
}

/// One part of a link (either event may carry any field).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkPart {
    pub link_id: String,
    /// The held record's source id.
    pub entry_id: Option<String>,
    pub target_id: Option<String>,
    pub note: Option<String>,
    /// The events that carried the parts (they become aliases of the record).
    pub event_ids: Vec<String>,
}

/// A source fact for Capture.
#[derive(Debug, Clone)]
pub enum SourceFact {
    /// Enqueue `entries` and, when at least one is new (not a re-delivery), raise
    /// `alerts_if_queued` in the same flush: an alert that belongs to a fact's first
    /// delivery cannot be lost between two calls (a Stripe dispute).
    EnqueueWithAlerts {
        entries: Vec<NewEntry>,
        alerts_if_queued: Vec<AlertNote>,
    },
    /// Mark `event_id` seen under `mark_name` (keeping `kept` for staff) and raise `alert`
    /// the first time.
    MarkEvent {
        mark_name: String,
        event_id: String,
        kept: Vec<u8>,
        alert: AlertNote,
    },
    /// Hold `entry` until a link names it or until `not_before_ms`.
    Hold {
        entry: NewEntry,
        not_before_ms: u64,
        rule: LinkRule,
    },
    /// A link part arrived.
    Link { part: LinkPart, rule: LinkRule },
}

/// What a source fact did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FactOutcome {
    /// `EnqueueWithAlerts`: each entry's outcome (the alerts were raised when one is
    /// `Queued`).
    Enqueued(Vec<EnqueueOutcome>),
    /// `MarkEvent`: false when the event was marked before (a re-delivery).
    Marked { first_time: bool },
    /// `Hold`: the link was complete, the entry was queued with its body change.
    QueuedLinked(EnqueueOutcome),
    /// `Hold`: the entry is held (or was a duplicate).
    Held(EnqueueOutcome),
    /// `Link`: the merged link.
    Linked {
        /// Nothing new: every event of the part was seen and nothing changed.
        duplicate: bool,
        link_id: String,
        complete: bool,
        released: bool,
    },
}

impl FactOutcome {
    /// Entries that became ready to send (for the wake-up hint).
    pub fn entries_ready(&self) -> u64 {
        if let FactOutcome::Enqueued(outcomes) = self {
            return EnqueueOutcome::queued_in(outcomes) as u64;
        }
        match self {
            FactOutcome::QueuedLinked(EnqueueOutcome::Queued { .. })
            | FactOutcome::Held(EnqueueOutcome::Queued { .. })
            | FactOutcome::Linked { released: true, .. } => 1,
            _ => 0,
        }
    }
}

/// To Capture: apply a source fact, answer once it is durable.
#[derive(actix::Message)]
#[rtype(result = "Result<FactOutcome, crate::messages::EnqueueError>")]
pub struct RecordFact {
    pub fact: SourceFact,
    pub guard: crate::mailbox::MailboxGuard,
}
