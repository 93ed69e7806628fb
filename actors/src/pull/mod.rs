//! Pull (pattern 3; docs/pull.md): Virtuous changes delivered to the partner's destinations.
//!
//! The tenant's Inbound actor owns everything that comes from Virtuous. Changes arrive by
//! webhook (free against the budget), by the backstop poll (`Last Modified Date` queries in
//! the reconcile lane), or by a re-read of a webhook that lacked fields. Each accepted change
//! is appended to the tenant's **change log** (`store::pull_ops`) with the next sequence
//! number, after the stale-update guard: a version older than (or equal to) the newest one
//! already logged for the record is dropped. Each destination (a [`Destination`] port; the
//! adapters — signed webhook, Postgres, NDJSON files — live in the `steward` crate) reads the
//! log from its own checkpoint, skips changes a newer version of the same record supersedes,
//! and moves its checkpoint only past what the destination holds durably.

use serde::{Deserialize, Serialize};

/// What a change is about. The names are the contract (`pull.events`, the NDJSON `kind`,
/// the Postgres table names without their plural).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Gift,
    Contact,
    Project,
    Event,
    ContactNote,
}

impl ChangeKind {
    pub const ALL: [ChangeKind; 5] = [
        ChangeKind::Gift,
        ChangeKind::Contact,
        ChangeKind::Project,
        ChangeKind::Event,
        ChangeKind::ContactNote,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ChangeKind::Gift => "gift",
            ChangeKind::Contact => "contact",
            ChangeKind::Project => "project",
            ChangeKind::Event => "event",
            ChangeKind::ContactNote => "contact_note",
        }
    }

    pub fn parse(name: &str) -> Option<ChangeKind> {
        ChangeKind::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// Kinds the backstop poll and the re-read can query (`Gift/Query/FullGift`,
    /// `Contact/Query/FullContact`); the others arrive by webhook only.
    pub fn queryable(self) -> bool {
        matches!(self, ChangeKind::Gift | ChangeKind::Contact)
    }

    /// The Virtuous webhook subscription flags that deliver this kind (`POST /api/Webhook`).
    /// `contactDelete` is not in Virtuous's published list (unconfirmed; the sandbox honours
    /// it); asking for it costs nothing where it is unknown.
    pub fn subscription_flags(self) -> &'static [&'static str] {
        match self {
            ChangeKind::Gift => &["giftCreate", "giftUpdate", "giftDelete"],
            ChangeKind::Contact => &["contactCreate", "contactUpdate", "contactDelete"],
            ChangeKind::Project => &["projectCreate", "projectUpdate", "projectDelete"],
            ChangeKind::Event => &["eventCreate", "eventUpdate", "eventDelete"],
            ChangeKind::ContactNote => &[
                "contactNoteCreate",
                "contactNoteUpdate",
                "contactNoteDelete",
            ],
        }
    }
}

/// Upsert (create or update) or delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeOp {
    Upsert,
    Delete,
}

impl ChangeOp {
    pub fn name(self) -> &'static str {
        match self {
            ChangeOp::Upsert => "upsert",
            ChangeOp::Delete => "delete",
        }
    }
}

/// How a change reached Steward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeVia {
    Webhook,
    Poll,
    Reread,
}

impl ChangeVia {
    pub fn name(self) -> &'static str {
        match self {
            ChangeVia::Webhook => "webhook",
            ChangeVia::Poll => "poll",
            ChangeVia::Reread => "reread",
        }
    }
}

/// One change as the change log stores it (JSON) and destinations receive it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredChange {
    /// The change log's sequence number (per tenant, from 1, gapless at append time).
    pub seq: u64,
    pub kind: ChangeKind,
    pub op: ChangeOp,
    /// The Virtuous id, as text.
    pub id: String,
    /// The record's version: `modifiedDateTimeUtc` in ms when Virtuous gave one, else the
    /// time Steward received the change.
    pub version_ms: u64,
    /// `modifiedDateTimeUtc` as Virtuous wrote it (absent when it gave none).
    pub modified_at: Option<String>,
    /// The record's JSON as Virtuous sent it (for a delete: what the webhook carried).
    pub record: serde_json::Value,
    /// Our own write (the record names one of our `transactionSource`/`referenceSource`s).
    pub own: bool,
    pub via: ChangeVia,
    pub received_ms: u64,
}

/// What a destination answers for one batch (or one settle).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryAnswer {
    /// Every item with `seq ≤` this is durable at the destination (`None`: nothing new —
    /// a buffering destination may hold the items without having committed them yet).
    pub committed_through: Option<u64>,
    /// Items the destination refuses for good, with the reason: dead letters. They count as
    /// handled (the checkpoint may move past them).
    pub rejected: Vec<(u64, String)>,
    /// The destination could not take the rest of the batch (items after
    /// `committed_through` that are not rejected): try again on the retry schedule.
    pub retry: Option<RetryLater>,
}

/// A transient failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryLater {
    pub message: String,
    /// The partner asked for this wait (`Retry-After`).
    pub retry_after_ms: Option<u64>,
}

impl DeliveryAnswer {
    /// Everything through `seq` is durable.
    pub fn committed(seq: u64) -> DeliveryAnswer {
        DeliveryAnswer {
            committed_through: Some(seq),
            ..DeliveryAnswer::default()
        }
    }
    /// Nothing of the batch is certain.
    pub fn retry(message: impl Into<String>) -> DeliveryAnswer {
        DeliveryAnswer {
            retry: Some(RetryLater {
                message: message.into(),
                retry_after_ms: None,
            }),
            ..DeliveryAnswer::default()
        }
    }
}

/// What an operator asks of a destination (`POST …/destinations/{name}/…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestinationAction {
    Pause,
    Resume,
    /// Deliver again from the first change received at or after this time (ms): the
    /// checkpoint moves back; superseded versions are still skipped.
    Replay {
        from_ms: u64,
    },
}

/// What a running loop shows (not stored; the stored part is `DestinationState`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DestinationLive {
    /// `idle`, `delivering`, `retrying`, `paused`.
    pub activity: String,
    pub next_attempt_at_ms: Option<u64>,
    /// Changes handed to the destination and not yet committed by it (a buffered file).
    pub uncommitted: u64,
    /// Age of the oldest change after the checkpoint (0 when caught up).
    pub lag_ms: u64,
}

/// One record change as Virtuous reported it (webhook model, query row or re-read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtuousChange {
    pub kind: ChangeKind,
    pub op: ChangeOp,
    /// The Virtuous id, as text.
    pub id: String,
    /// `modifiedDateTimeUtc` as given (absent when the model had none).
    pub modified_at: Option<String>,
    /// The same, in ms since the epoch (absent when missing or unreadable).
    pub modified_ms: Option<u64>,
    /// The model's JSON object, as text.
    pub record_json: String,
    /// The writer marks the record carries: a gift's `transactionSource`, a contact's
    /// `referenceSource` (when the model has one at its top level). Inbound compares them
    /// with the tenant's own sources (`PullSettings::own_sources`).
    pub origin_sources: Vec<String>,
    /// The model has every field destinations need (gift: `id`, `modifiedDateTimeUtc`,
    /// `amount`, `giftDate`, `contactId`; contact: `id`, `modifiedDateTimeUtc`, `name`; other
    /// kinds and deletes: `id`). An incomplete gift or contact is re-read once, batched.
    pub complete: bool,
}

/// One page of records read by a query, as changes (op `Upsert`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangePage {
    pub changes: Vec<VirtuousChange>,
    /// Total matches of the query (all pages).
    pub total: u64,
}

/// What the log made of changes offered to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offered {
    pub logged: u64,
    pub stale: u64,
    pub duplicates: u64,
    pub rereads: u64,
}

impl Offered {
    pub fn add(&mut self, other: Offered) {
        self.logged += other.logged;
        self.stale += other.stale;
        self.duplicates += other.duplicates;
        self.rereads += other.rereads;
    }

    /// Counts what was offered (once durable).
    pub fn count(&self, via: ChangeVia) {
        for (outcome, n) in [
            ("logged", self.logged),
            ("stale", self.stale),
            ("duplicate", self.duplicates),
            ("reread_requested", self.rereads),
        ] {
            if n > 0 {
                metrics::counter!(
                    crate::metrics::PULL_CHANGES_TOTAL,
                    crate::metrics::LABEL_VIA => via.name(),
                    crate::metrics::LABEL_OUTCOME => outcome
                )
                .increment(n);
            }
        }
    }
}
