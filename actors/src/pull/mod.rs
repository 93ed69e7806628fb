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

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ports::LocalFuture;

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

/// A partner destination (adapters in the `steward` crate: `webhook`, `postgres`, `ndjson`).
/// Calls for one destination never overlap: the delivery loop awaits each before the next.
/// Futures run on the tenant's arbiter. Implementations never panic.
pub trait Destination: Send + Sync + 'static {
    /// Delivers `items` (in `seq` order, at most the spec's `batch_max`; never empty).
    /// Delivery is at least once: the same items may come again after a crash or a retry,
    /// so the effect must be idempotent (upsert by id, `webhook-id`, …).
    fn deliver(&self, items: Vec<StoredChange>) -> LocalFuture<DeliveryAnswer>;
    /// Called about once a second, and after each delivery: a buffering destination commits
    /// what it holds once due (NDJSON's time rotation). Others answer the default.
    fn settle(&self, _now_ms: u64) -> LocalFuture<DeliveryAnswer> {
        Box::pin(async { DeliveryAnswer::default() })
    }
    /// Forget anything delivered but not committed (a buffered file): the loop is about to
    /// read again from the checkpoint (a new generation, a retry, a replay).
    fn reset(&self) -> LocalFuture<()> {
        Box::pin(async {})
    }
}

/// A configured destination: its name, kind, limits, and its port.
#[derive(Clone)]
pub struct DestinationSpec {
    /// The key under `pull.destinations` (checkpoint `dest:{name}`).
    pub name: String,
    /// `webhook`, `postgres` or `ndjson` (the metric label).
    pub kind: String,
    /// Most changes per `deliver` call.
    pub batch_max: usize,
    pub destination: Arc<dyn Destination>,
}

impl std::fmt::Debug for DestinationSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DestinationSpec")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("batch_max", &self.batch_max)
            .finish_non_exhaustive()
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
