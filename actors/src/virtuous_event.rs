//! What Virtuous tells us in a webhook delivery, as plain data (no JSON inside).
//!
//! The `steward` crate parses the delivery (`steward::virtuous::webhook`, lenient about key
//! case, aliases and id types) and hands these to the tenant's Inbound actor, which matches
//! them ([`crate::gift_match`]), confirms, and keeps what it could not understand.

use crate::ports::CrmGift;

/// A Virtuous event name we act on; other names are understood and not acted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VirtuousEventKind {
    GiftCreate,
    GiftUpdate,
    ContactCreate,
    ContactUpdate,
}

impl VirtuousEventKind {
    /// The kind named `name` in any letter case (`GiftCreate`, `giftCreate`, `giftcreate`).
    pub fn parse(name: &str) -> Option<VirtuousEventKind> {
        [
            VirtuousEventKind::GiftCreate,
            VirtuousEventKind::GiftUpdate,
            VirtuousEventKind::ContactCreate,
            VirtuousEventKind::ContactUpdate,
        ]
        .into_iter()
        .find(|kind| kind.name().eq_ignore_ascii_case(name))
    }

    pub fn name(self) -> &'static str {
        match self {
            VirtuousEventKind::GiftCreate => "GiftCreate",
            VirtuousEventKind::GiftUpdate => "GiftUpdate",
            VirtuousEventKind::ContactCreate => "ContactCreate",
            VirtuousEventKind::ContactUpdate => "ContactUpdate",
        }
    }
}

/// One of a contact's `contactReferences`: the id a source knows the contact by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactReference {
    pub source: String,
    pub id: String,
}

/// One model of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VirtuousEvent {
    /// `GiftCreate` / `GiftUpdate`: the gift as the bulk query would show it.
    Gift {
        kind: VirtuousEventKind,
        gift: CrmGift,
    },
    /// `ContactCreate` / `ContactUpdate`: the contact's Virtuous id and its references.
    Contact {
        kind: VirtuousEventKind,
        virtuous_id: String,
        references: Vec<ContactReference>,
    },
    /// A well-formed event of a kind we do not act on (`ProjectCreate`…): matches nothing.
    Other { event: String },
    /// An event the parser could not understand: kept with its raw JSON and the reason
    /// (never answered 200 and forgotten).
    Unparsed { raw_json: String, reason: String },
}

/// One delivery: its event name as received (echoed in the answer) and its models.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VirtuousDelivery {
    /// The delivery's top-level event name (empty when only the models name theirs).
    pub event: String,
    pub events: Vec<VirtuousEvent>,
    /// Every model understood as a record change (any kind, create/update/delete), for
    /// pull (pattern 3): the parser fills it beside `events`.
    pub changes: Vec<VirtuousChange>,
}

pub use crate::pull::VirtuousChange;
