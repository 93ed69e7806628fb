//! What an incoming change of a linked record leads to (docs/two-way.md "Loop defence"):
//! the echo layers first, then each field by its rule. Pure: the caller holds the record's
//! link under the pair's lock, and stores the link, the writes and the conflicts this returns
//! in one batch.
//!
//! Per field a link knows the value both sides agreed on at the last completed sync
//! (`synced`), the value each side was last seen with (`partner`, `virtuous`), and the writes
//! decided and not yet made (`pending` per side). A side "changed since the last sync" when
//! its value differs from `synced` (tolerantly), or when a write of the other side's value is
//! still on its way to it.

use serde_json::Value;

use super::fields::{exact_hash, is_blank, same, Fields};
use super::{Conflict, EchoLayer, Incoming, LedgerMark, Link, Mode, PairSettings, Rule, Side};

/// What became of an incoming change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Older than the newest change seen from that side.
    Stale,
    /// One of our own writes coming back (the layer that recognised it).
    Echo(EchoLayer),
    /// Taken into account (it may still have led to nothing: no field changed).
    Applied,
}

/// The effects of one change on its record.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decision {
    pub verdict: Option<Verdict>,
    /// Fields set aside because the other side owns them (layer 4).
    pub ownership_drops: u64,
    /// Fields added to each side's pending write (`on`), or that would be (`observe`).
    pub to_partner: Fields,
    pub to_virtuous: Fields,
    /// Conflicts opened or updated (both values as they are now).
    pub conflicts: Vec<Conflict>,
}

impl Decision {
    fn verdict(verdict: Verdict) -> Decision {
        Decision {
            verdict: Some(verdict),
            ..Decision::default()
        }
    }

    pub fn writes(&self, side: Side) -> &Fields {
        match side {
            Side::Partner => &self.to_partner,
            Side::Virtuous => &self.to_virtuous,
        }
    }

    fn writes_mut(&mut self, side: Side) -> &mut Fields {
        match side {
            Side::Partner => &mut self.to_partner,
            Side::Virtuous => &mut self.to_virtuous,
        }
    }
}

/// The value `side` will hold once what is pending lands (its pending write, else what it
/// was last seen with).
fn expected<'a>(link: &'a Link, side: Side, field: &str) -> Option<&'a Value> {
    link.pending(side)
        .get(field)
        .or_else(|| link.values(side).get(field))
}

/// Whether `incoming` is one of our writes coming back (layers 1–3).
fn echo_layer(
    link: &Link,
    pair: &PairSettings,
    incoming: &Incoming,
    now_ms: u64,
) -> Option<EchoLayer> {
    if incoming.side == Side::Virtuous && incoming.ours {
        return Some(EchoLayer::Origin);
    }
    let mark = link.ledger(incoming.side)?;
    let names: Vec<&str> = pair
        .synced_fields()
        .filter(|name| incoming.fields.contains_key(*name))
        .collect();
    if names.is_empty() {
        return None;
    }
    if names
        .iter()
        .all(|name| mark.fields.get(*name) == incoming.fields.get(*name))
    {
        return Some(EchoLayer::Ledger);
    }
    let in_window = now_ms.saturating_sub(mark.at_ms) <= pair.echo_window_ms;
    let tolerant_equal = names
        .iter()
        .all(|name| same(name, mark.fields.get(*name), incoming.fields.get(*name)));
    (in_window && tolerant_equal).then_some(EchoLayer::Window)
}

/// Decides `incoming` for `link` (mutated: seen values, versions, pending writes, ledger
/// marks, conflicts, state). A change of a field already in conflict comes back as a
/// [`Conflict`] carrying the changing side's new value only (the other `null`): the caller
/// updates the stored conflict with it.
pub fn decide(link: &mut Link, pair: &PairSettings, incoming: &Incoming, now_ms: u64) -> Decision {
    let side = incoming.side;
    let overwritten = overwritten_by_us(link, pair, incoming);
    if incoming.version_ms < link.version_ms(side) {
        if overwritten.is_empty() {
            return Decision::verdict(Verdict::Stale);
        }
        // Older than our PUT, which replaced it: its fields wait for a person, nothing else.
        let mut decision = Decision::verdict(Verdict::Applied);
        for (name, ours) in &overwritten {
            open_overwrite_conflict(
                link,
                name,
                ours,
                &incoming.fields[name],
                now_ms,
                &mut decision,
            );
        }
        link.settle_state(now_ms, "an edit our write replaced");
        return decision;
    }
    link.set_version_ms(side, incoming.version_ms);
    if let Some(layer) = echo_layer(link, pair, incoming, now_ms) {
        // What the side holds now is what we wrote (or Virtuous's form of it).
        for (name, value) in &incoming.fields {
            link.values_mut(side).insert(name.clone(), value.clone());
        }
        return Decision::verdict(Verdict::Echo(layer));
    }
    // A real change: a later change equal to our old write is no echo.
    link.set_ledger(side, None);
    let mut decision = Decision::verdict(Verdict::Applied);
    let names: Vec<&'static str> = pair
        .synced_fields()
        .filter(|name| incoming.fields.contains_key(*name))
        .collect();
    for name in names {
        let value = incoming.fields[name].clone();
        if let Some(ours) = overwritten.get(name) {
            open_overwrite_conflict(link, name, ours, &value, now_ms, &mut decision);
            continue;
        }
        link.values_mut(side)
            .insert(name.to_string(), value.clone());
        decide_field(link, pair, side, name, &value, now_ms, &mut decision);
    }
    if pair.mode == Mode::On {
        for target in [Side::Partner, Side::Virtuous] {
            let writes = decision.writes(target).clone();
            if !writes.is_empty() {
                order_write(link, target, &writes, now_ms);
            }
        }
        link.settle_state(now_ms, &format!("{} change", side.name()));
    } else {
        observe_state(link, &decision, now_ms, side);
    }
    decision
}

/// The fields of a Virtuous change that our last `PUT` overwrote: the change is dated after
/// the version that write read and before the version it made, and differs from what it set.
fn overwritten_by_us(link: &Link, pair: &PairSettings, incoming: &Incoming) -> Fields {
    let Some(mark) = link.virtuous_overwrite.as_ref() else {
        return Fields::new();
    };
    if incoming.side != Side::Virtuous
        || incoming.version_ms <= mark.read_ms
        || incoming.version_ms >= mark.written_ms
    {
        return Fields::new();
    }
    mark.fields
        .iter()
        // An owned field's edit loses by its rule anyway: only shared fields conflict.
        .filter(|(name, _)| pair.rule(name) == Rule::NewestWins)
        .filter(|(name, ours)| {
            incoming
                .fields
                .get(name.as_str())
                .is_some_and(|theirs| !same(name, Some(theirs), Some(ours)))
        })
        .map(|(name, ours)| (name.clone(), ours.clone()))
        .collect()
}

/// Our `PUT` replaced this Virtuous edit of `name`: Virtuous holds ours; the edit waits for
/// a person with both values.
fn open_overwrite_conflict(
    link: &mut Link,
    name: &str,
    ours: &Value,
    theirs: &Value,
    now_ms: u64,
    decision: &mut Decision,
) {
    link.values_mut(Side::Virtuous)
        .insert(name.to_string(), ours.clone());
    if link.conflicts.iter().any(|field| field == name) {
        return;
    }
    // Nothing goes either way for the field until a person decides.
    withdraw(link, Side::Partner, name);
    withdraw(link, Side::Virtuous, name);
    link.conflicts.push(name.to_string());
    let conflict = conflict_of(link, name, ours.clone(), theirs.clone(), now_ms);
    decision.conflicts.push(conflict);
}

fn conflict_of(link: &Link, name: &str, partner: Value, virtuous: Value, now_ms: u64) -> Conflict {
    Conflict {
        id: Conflict::id_of(&link.pair, &link.partner_id, name),
        pair: link.pair.clone(),
        partner_id: link.partner_id.clone(),
        virtuous_id: link.virtuous_id.clone(),
        field: name.to_string(),
        synced: link.synced.get(name).cloned().unwrap_or(Value::Null),
        partner,
        virtuous,
        opened_ms: now_ms,
        updated_ms: now_ms,
    }
}

// Size: the five rules side by side read as one table.
fn decide_field(
    link: &mut Link,
    pair: &PairSettings,
    side: Side,
    name: &str,
    value: &Value,
    now_ms: u64,
    decision: &mut Decision,
) {
    let other = side.other();
    if link.conflicts.iter().any(|field| field == name) {
        // Still waiting for a person: keep the side's value current, write nothing.
        let (partner, virtuous) = match side {
            Side::Partner => (value.clone(), Value::Null),
            Side::Virtuous => (Value::Null, value.clone()),
        };
        let conflict = conflict_of(link, name, partner, virtuous, now_ms);
        decision.conflicts.push(conflict);
        return;
    }
    let base = link.synced.get(name).cloned();
    let other_value = expected(link, other, name).cloned();
    if base.is_none() && other_value.is_none() && !link.values(other).contains_key(name) {
        // Nothing known of the other side's value (a record first seen from this side):
        // there is nothing to compare with, and nothing is written on a guess.
        return;
    }
    let changed_here = match &base {
        Some(base) => !same(name, Some(value), Some(base)),
        None => !same(name, Some(value), other_value.as_ref()),
    };
    if !changed_here {
        // Back to the synced value: an earlier value of ours still on its way across is
        // outdated.
        if link
            .pending(other)
            .get(name)
            .is_some_and(|pending| !same(name, Some(pending), Some(value)))
        {
            withdraw(link, other, name);
            if !same(name, Some(value), link.values(other).get(name)) {
                decision
                    .writes_mut(other)
                    .insert(name.to_string(), value.clone());
            }
        } else if same(name, Some(value), other_value.as_ref())
            && link.pending(side).get(name).is_none()
        {
            link.synced.insert(name.to_string(), value.clone());
        }
        return;
    }
    // The other side changed since the last sync: its value differs from the synced one,
    // or a write of it to this side is still pending.
    let other_seen = link.values(other).get(name).cloned();
    let other_changed = link.pending(side).contains_key(name)
        || match &base {
            Some(base) => !same(name, Some(base), other_seen.as_ref()),
            None => false,
        };
    let owner = match pair.rule(name) {
        Rule::DontSync => return,
        Rule::PartnerWins => Some(Side::Partner),
        Rule::VirtuousWins => Some(Side::Virtuous),
        Rule::PreferPartnerUnlessBlank => {
            let partner_value = if side == Side::Partner {
                Some(value.clone())
            } else {
                expected(link, Side::Partner, name).cloned()
            };
            Some(if is_blank(partner_value.as_ref()) {
                Side::Virtuous
            } else {
                Side::Partner
            })
        }
        Rule::NewestWins => None,
    };
    match owner {
        Some(owner) if owner == side => {
            // This side owns the field: its value goes across; a correction we had queued
            // towards this side is void.
            withdraw(link, side, name);
            if !same(name, Some(value), other_value.as_ref()) {
                decision
                    .writes_mut(other)
                    .insert(name.to_string(), value.clone());
            } else {
                link.synced.insert(name.to_string(), value.clone());
            }
        }
        Some(owner) => {
            decision.ownership_drops += 1;
            let owner_value = expected(link, owner, name).cloned().or(base);
            if let Some(owner_value) = owner_value {
                if !same(name, Some(value), Some(&owner_value)) {
                    decision
                        .writes_mut(side)
                        .insert(name.to_string(), owner_value);
                }
            }
        }
        None if other_changed && !same(name, Some(value), other_value.as_ref()) => {
            // Both sides changed the field since the last sync: a person decides. Whatever
            // was on its way to either side for it stays where it is.
            withdraw(link, Side::Partner, name);
            withdraw(link, Side::Virtuous, name);
            link.conflicts.push(name.to_string());
            let (partner, virtuous) = match side {
                Side::Partner => (value.clone(), other_value.unwrap_or(Value::Null)),
                Side::Virtuous => (other_value.unwrap_or(Value::Null), value.clone()),
            };
            let conflict = conflict_of(link, name, partner, virtuous, now_ms);
            decision.conflicts.push(conflict);
        }
        None if other_changed => {
            // Both sides changed it to the same value.
            withdraw(link, side, name);
            withdraw(link, other, name);
            link.synced.insert(name.to_string(), value.clone());
        }
        None => {
            decision
                .writes_mut(other)
                .insert(name.to_string(), value.clone());
        }
    }
}

/// Takes `name` off the side's pending write (it will not be written). The ledger then says
/// what the side holds with what is still pending — none when nothing is: a later change
/// equal to a withdrawn value is a person's, not our echo.
fn withdraw(link: &mut Link, side: Side, name: &str) {
    if link.pending_mut(side).remove(name).is_none() {
        return;
    }
    let Some(at_ms) = link.ledger(side).map(|mark| mark.at_ms) else {
        return;
    };
    if link.pending(side).is_empty() {
        link.set_ledger(side, None);
        return;
    }
    let mut after = link.values(side).clone();
    for (field, value) in link.pending(side) {
        after.insert(field.clone(), value.clone());
    }
    link.set_ledger(
        side,
        Some(LedgerMark {
            hash: exact_hash(&after),
            fields: after,
            at_ms,
        }),
    );
}

/// Adds `fields` to the side's pending write and marks the ledger with what the side will
/// hold once it lands.
pub fn order_write(link: &mut Link, side: Side, fields: &Fields, now_ms: u64) {
    let pending = link.pending_mut(side);
    for (name, value) in fields {
        pending.insert(name.clone(), value.clone());
    }
    let mut after = link.values(side).clone();
    for (name, value) in link.pending(side) {
        after.insert(name.clone(), value.clone());
    }
    link.set_ledger(
        side,
        Some(LedgerMark {
            hash: exact_hash(&after),
            fields: after,
            at_ms: now_ms,
        }),
    );
}

/// Observing: nothing is pending; the state says what would happen.
fn observe_state(link: &mut Link, decision: &Decision, now_ms: u64, side: Side) {
    let state = if !decision.conflicts.is_empty() || !link.conflicts.is_empty() {
        super::SyncState::Conflict
    } else if !decision.to_virtuous.is_empty() {
        super::SyncState::VirtuousPending
    } else if !decision.to_partner.is_empty() {
        super::SyncState::PartnerPending
    } else {
        super::SyncState::InSync
    };
    link.record(now_ms, state, &format!("{} change (observed)", side.name()));
}

/// A write to `side` landed with `written`: the side holds it now; fields the other side
/// holds too are in sync; pending values that were written are done (a newer pending value
/// stays).
pub fn complete_write(link: &mut Link, side: Side, written: &Fields, now_ms: u64) {
    let other = side.other();
    for (name, value) in written {
        link.values_mut(side).insert(name.clone(), value.clone());
        if link.pending(side).get(name) == Some(value) {
            link.pending_mut(side).remove(name);
        }
        if same(name, Some(value), expected(link, other, name)) {
            link.synced.insert(name.clone(), value.clone());
        }
    }
    link.settle_state(now_ms, &format!("written to {}", side.name()));
}

/// Settles the conflict on `field` with `value`: the value goes to each side that does not
/// hold it, and is the synced value once both do.
pub fn resolve(link: &mut Link, field: &str, value: &Value, now_ms: u64) -> Decision {
    link.conflicts.retain(|name| name != field);
    let mut decision = Decision::verdict(Verdict::Applied);
    for side in [Side::Partner, Side::Virtuous] {
        if !same(field, link.values(side).get(field), Some(value)) {
            decision
                .writes_mut(side)
                .insert(field.to_string(), value.clone());
        }
    }
    for side in [Side::Partner, Side::Virtuous] {
        let writes = decision.writes(side).clone();
        if !writes.is_empty() {
            order_write(link, side, &writes, now_ms);
        }
    }
    if decision.to_partner.is_empty() && decision.to_virtuous.is_empty() {
        link.synced.insert(field.to_string(), value.clone());
    }
    link.settle_state(now_ms, &format!("conflict on {field} resolved"));
    decision
}

/// A record seen on one side for the first time, linked to the other: what each side holds
/// is recorded; fields equal on both sides are in sync.
pub fn seed(link: &mut Link, side: Side, fields: &Fields, version_ms: u64) {
    link.set_version_ms(side, version_ms.max(link.version_ms(side)));
    for (name, value) in fields {
        link.values_mut(side).insert(name.clone(), value.clone());
        if same(
            name,
            Some(value),
            link.values(side.other()).get(name.as_str()),
        ) {
            link.synced.insert(name.clone(), value.clone());
        }
    }
}
