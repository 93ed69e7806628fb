//! Two-way contact sync (pattern 4; docs/two-way.md): a partner's contacts (a Mailchimp
//! audience, a generic platform's contacts) and Virtuous contacts kept equal field by field,
//! as each pair's ownership rules say, without echo loops.
//!
//! Plain data and pure functions only (no store, no actor): the canonical contact fields and
//! their comparisons (`fields`), the per-record link with its sync state and write ledger, and
//! the decision an incoming change leads to (`decide`). The runtime parts live beside their
//! doors: Capture hands partner changes to the decision (`capture::two_way`), Inbound's pair
//! loops hand Virtuous changes to it and perform the writes (`inbound::two_way`), the store
//! keeps links, pending writes and conflicts (`store::two_way_ops`).

pub mod cross_match;
pub mod decide;
pub mod fields;

#[cfg(test)]
mod decide_tests;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use fields::{Fields, FIELD_NAMES};

/// Which side of a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Partner,
    Virtuous,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::Partner => Side::Virtuous,
            Side::Virtuous => Side::Partner,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Side::Partner => "partner",
            Side::Virtuous => "virtuous",
        }
    }
}

/// Who owns a field (`two_way.{pair}.fields.{field}`). The names are the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// The partner's value is the truth: a Virtuous edit of the field is put back.
    PartnerWins,
    /// Virtuous's value is the truth: a partner edit of the field is put back.
    VirtuousWins,
    /// The partner's value, unless it is blank: then Virtuous's.
    PreferPartnerUnlessBlank,
    /// Either side may change it; a change on both sides since the last sync is a conflict.
    NewestWins,
    /// Not synced at all.
    DontSync,
}

impl Rule {
    pub const ALL: [Rule; 5] = [
        Rule::PartnerWins,
        Rule::VirtuousWins,
        Rule::PreferPartnerUnlessBlank,
        Rule::NewestWins,
        Rule::DontSync,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Rule::PartnerWins => "partner_wins",
            Rule::VirtuousWins => "virtuous_wins",
            Rule::PreferPartnerUnlessBlank => "prefer_partner_unless_blank",
            Rule::NewestWins => "newest_wins",
            Rule::DontSync => "dont_sync",
        }
    }

    pub fn parse(name: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|rule| rule.name() == name)
    }
}

/// `observe`: incoming changes are matched and reported, nothing is written back; `on`:
/// the pair writes to both sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Observe,
    On,
}

/// A record's sync state (in its link and its history). The names are the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncState {
    #[default]
    InSync,
    /// A write to the partner is pending (or, observing, would be made).
    PartnerPending,
    /// A write to Virtuous is pending (or, observing, would be made).
    VirtuousPending,
    /// A shared field changed on both sides: waiting for a person.
    Conflict,
}

impl SyncState {
    pub fn name(self) -> &'static str {
        match self {
            SyncState::InSync => "in_sync",
            SyncState::PartnerPending => "partner_pending",
            SyncState::VirtuousPending => "virtuous_pending",
            SyncState::Conflict => "conflict",
        }
    }
}

/// What kind of partner a pair talks to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "name")]
pub enum PairKind {
    Mailchimp,
    /// A generic platform (`sources.platforms.{name}`).
    Platform(String),
}

/// One pair's settings (tenant document `two_way.{pair}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairSettings {
    /// `mailchimp` or `platform:{name}`: the key, the checkpoint's and the metrics' name.
    pub pair: String,
    pub kind: PairKind,
    pub mode: Mode,
    /// Within this long after one of our writes, incoming changes of the record are compared
    /// with what we wrote tolerantly (order, whitespace, case of emails).
    pub echo_window_ms: u64,
    /// Rules of the fields named; the others follow [`PairSettings::default_rule`].
    pub rules: BTreeMap<String, Rule>,
    /// The source name its captured entries carry (`EntryFact::source`): `mailchimp`, or the
    /// platform's name.
    pub source: String,
    /// The `referenceSource` its contacts carry in Virtuous (`contactReferences[].source`).
    pub reference_source: String,
}

impl PairSettings {
    /// Fields not named: `subscribed` belongs to the partner (the list owns opt-in state),
    /// the rest may change on either side.
    pub fn default_rule(field: &str) -> Rule {
        match field {
            "subscribed" => Rule::PartnerWins,
            _ => Rule::NewestWins,
        }
    }

    pub fn rule(&self, field: &str) -> Rule {
        self.rules
            .get(field)
            .copied()
            .unwrap_or_else(|| PairSettings::default_rule(field))
    }

    /// The fields this pair syncs.
    pub fn synced_fields(&self) -> impl Iterator<Item = &'static str> + '_ {
        FIELD_NAMES
            .into_iter()
            .filter(|field| self.rule(field) != Rule::DontSync)
    }
}

/// Which echo defence dropped a change (`steward_echoes_dropped_total{layer}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EchoLayer {
    /// Virtuous names us as the latest writer (`referenceSource`).
    Origin,
    /// Exactly what we wrote (the write ledger).
    Ledger,
    /// Within the echo window, equal to what we wrote once normalised.
    Window,
    /// The field belongs to the other side (counted per field).
    Ownership,
}

impl EchoLayer {
    pub const ALL: [EchoLayer; 4] = [
        EchoLayer::Origin,
        EchoLayer::Ledger,
        EchoLayer::Window,
        EchoLayer::Ownership,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EchoLayer::Origin => "origin",
            EchoLayer::Ledger => "ledger",
            EchoLayer::Window => "window",
            EchoLayer::Ownership => "ownership",
        }
    }
}

/// What we last wrote to one side of a record, and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerMark {
    /// The side's values as they are once our write lands (its synced fields).
    pub fields: Fields,
    /// `fields::exact_hash` of `fields`.
    pub hash: u64,
    pub at_ms: u64,
}

/// A write made over a version read just before it (see [`Link::virtuous_overwrite`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Overwrite {
    pub read_ms: u64,
    pub written_ms: u64,
    pub fields: Fields,
}

/// One transition of a record's sync state (bounded history in the link).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub at_ms: u64,
    pub state: SyncState,
    pub note: String,
}

/// Most transitions a link keeps.
pub const HISTORY_MAX: usize = 32;

/// A record known on both sides (or one, waiting for the other): the pair's per-record state.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Link {
    pub pair: String,
    pub partner_id: String,
    /// `None` until Virtuous shows the contact (an import takes a while).
    pub virtuous_id: Option<String>,
    pub state: SyncState,
    /// The values both sides agreed on at the last sync, per field.
    pub synced: Fields,
    /// What each side holds now, as far as we know (incoming changes, plus our writes).
    pub partner: Fields,
    pub virtuous: Fields,
    /// The version (source time, ms) of the newest change seen from each side.
    pub partner_version_ms: u64,
    pub virtuous_version_ms: u64,
    pub partner_ledger: Option<LedgerMark>,
    pub virtuous_ledger: Option<LedgerMark>,
    /// Fields in conflict (their conflict records hold both values).
    pub conflicts: Vec<String>,
    /// Writes decided and not yet made, per side: field → value to set.
    pub pending_partner: Fields,
    pub pending_virtuous: Fields,
    /// Our last `PUT` of the Virtuous contact: the version we read before it, the version
    /// it made, and what it set. A Virtuous change dated between the two was overwritten by
    /// it: a conflict, never silently lost.
    pub virtuous_overwrite: Option<Overwrite>,
    /// Left alone by the cross-match policy: never written to either side.
    pub external_only: bool,
    /// A Virtuous contact is to be made from the partner's values (cross-match policy
    /// `create`): a contact transaction naming the partner id as its reference.
    pub create_virtuous: bool,
    /// A partner contact is to be made from Virtuous's values (cross-match policy `create`);
    /// the link's partner id is `virtuous:{id}` until the partner answers with its own.
    pub create_partner: bool,
    pub history: Vec<Transition>,
}

impl Link {
    pub fn new(pair: &str, partner_id: &str) -> Link {
        Link {
            pair: pair.to_string(),
            partner_id: partner_id.to_string(),
            ..Link::default()
        }
    }

    pub fn values(&self, side: Side) -> &Fields {
        match side {
            Side::Partner => &self.partner,
            Side::Virtuous => &self.virtuous,
        }
    }

    pub fn values_mut(&mut self, side: Side) -> &mut Fields {
        match side {
            Side::Partner => &mut self.partner,
            Side::Virtuous => &mut self.virtuous,
        }
    }

    pub fn version_ms(&self, side: Side) -> u64 {
        match side {
            Side::Partner => self.partner_version_ms,
            Side::Virtuous => self.virtuous_version_ms,
        }
    }

    pub fn set_version_ms(&mut self, side: Side, version_ms: u64) {
        match side {
            Side::Partner => self.partner_version_ms = version_ms,
            Side::Virtuous => self.virtuous_version_ms = version_ms,
        }
    }

    pub fn ledger(&self, side: Side) -> Option<&LedgerMark> {
        match side {
            Side::Partner => self.partner_ledger.as_ref(),
            Side::Virtuous => self.virtuous_ledger.as_ref(),
        }
    }

    pub fn set_ledger(&mut self, side: Side, mark: Option<LedgerMark>) {
        match side {
            Side::Partner => self.partner_ledger = mark,
            Side::Virtuous => self.virtuous_ledger = mark,
        }
    }

    pub fn pending(&self, side: Side) -> &Fields {
        match side {
            Side::Partner => &self.pending_partner,
            Side::Virtuous => &self.pending_virtuous,
        }
    }

    pub fn pending_mut(&mut self, side: Side) -> &mut Fields {
        match side {
            Side::Partner => &mut self.pending_partner,
            Side::Virtuous => &mut self.pending_virtuous,
        }
    }

    /// The state its conflicts and pending writes say, recorded in the history when it
    /// changes.
    pub fn settle_state(&mut self, at_ms: u64, note: &str) {
        let state = if !self.conflicts.is_empty() {
            SyncState::Conflict
        } else if !self.pending_virtuous.is_empty() {
            SyncState::VirtuousPending
        } else if !self.pending_partner.is_empty() {
            SyncState::PartnerPending
        } else {
            SyncState::InSync
        };
        self.record(at_ms, state, note);
    }

    /// Sets the state and notes the transition (observe mode sets "would be" states).
    pub fn record(&mut self, at_ms: u64, state: SyncState, note: &str) {
        if state == self.state && !self.history.is_empty() {
            return;
        }
        self.state = state;
        self.history.push(Transition {
            at_ms,
            state,
            note: note.to_string(),
        });
        if self.history.len() > HISTORY_MAX {
            let excess = self.history.len() - HISTORY_MAX;
            self.history.drain(..excess);
        }
    }
}

/// A change seen on one side of a record.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    pub side: Side,
    /// The fields the change carries (absent = the change does not say).
    pub fields: Fields,
    /// Source time of the change (ms); a change older than the newest seen is stale.
    pub version_ms: u64,
    /// Virtuous names us as its latest writer (layer 1).
    pub ours: bool,
}

/// A write decided: set `fields` on `side` of the link's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WriteOrder {
    pub side: Side,
    pub fields: Fields,
}

/// A shared field changed on both sides since the last sync.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conflict {
    /// `{pair}:{partner_id}:{field}`.
    pub id: String,
    pub pair: String,
    pub partner_id: String,
    pub virtuous_id: Option<String>,
    pub field: String,
    /// The value both sides had at the last sync (`null` when never synced).
    pub synced: serde_json::Value,
    pub partner: serde_json::Value,
    pub virtuous: serde_json::Value,
    pub opened_ms: u64,
    pub updated_ms: u64,
}

impl Conflict {
    pub fn id_of(pair: &str, partner_id: &str, field: &str) -> String {
        format!("{pair}:{partner_id}:{field}")
    }
}

/// How an operator settles a conflict (`POST …/conflicts/{c}/resolve`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "take", content = "value")]
pub enum Resolution {
    Partner,
    Virtuous,
    Value(serde_json::Value),
}

/// A pair's counters (kept in the store; the admin view and the metrics read them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PairCounts {
    pub partner_changes: u64,
    pub virtuous_changes: u64,
    pub stale: u64,
    pub dropped_origin: u64,
    pub dropped_ledger: u64,
    pub dropped_window: u64,
    /// Fields of incoming changes set aside because the other side owns them.
    pub dropped_ownership: u64,
    pub writes_to_partner: u64,
    pub writes_to_virtuous: u64,
    /// Observe mode: writes that would have been made.
    pub would_write_partner: u64,
    pub would_write_virtuous: u64,
    pub conflicts_opened: u64,
    pub conflicts_resolved: u64,
    pub write_failures: u64,
    pub dead_letters: u64,
    /// Changes of records no link knows (not matched yet).
    pub unlinked: u64,
}

impl PairCounts {
    pub fn dropped(&mut self, layer: EchoLayer, n: u64) {
        let counter = match layer {
            EchoLayer::Origin => &mut self.dropped_origin,
            EchoLayer::Ledger => &mut self.dropped_ledger,
            EchoLayer::Window => &mut self.dropped_window,
            EchoLayer::Ownership => &mut self.dropped_ownership,
        };
        *counter += n;
    }
}

/// What a pair's loop shows while it runs (not stored).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairLive {
    /// `idle`, `writing`, `waiting` (retry or budget), `cross_match`, `paused` (observe).
    pub activity: String,
    /// The change-log position the pair has decided through.
    pub checkpoint: u64,
    pub last_error: Option<String>,
    pub next_attempt_at_ms: Option<u64>,
}
