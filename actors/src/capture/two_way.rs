//! Partner changes of two-way pairs (docs/two-way.md "Partner changes"): a contact entry
//! captured from a pair's source (a Mailchimp member, a platform's contact) is decided against
//! its record's link before anything is queued.
//!
//! - A linked record (its Virtuous id known) of a pair that is `on`: the decision is the whole
//!   effect — an echo dropped, fields ordered to Virtuous (the pair's loop writes them), a
//!   conflict opened — and nothing is queued ([`EnqueueOutcome::TwoWay`]).
//! - Observing, or a record not linked yet: the decision (or the partner's values, for a new
//!   link) is recorded and the entry goes on to the queue as before (one-way push creates or
//!   matches the contact; the link completes when Virtuous shows it).
//! - A record left external-only by the cross-match: taken and dropped when `on`.

use crate::hub::TenantShared;
use crate::store::two_way_ops::TwoWayUpdate;
use crate::store::{EnqueueOutcome, NewEntry, RecordKind, StoreError};
use crate::two_way::decide::seed;
use crate::two_way::fields::from_transaction_body;
use crate::two_way::{Incoming, Link, Mode, PairCounts, PairSettings, Side};

/// The change time a fact id carries (`{id}@{unix seconds}`), in ms.
fn version_ms_of(idempotency_key: &str) -> Option<u64> {
    let (_, version) = idempotency_key.rsplit_once('@')?;
    version.parse::<u64>().ok().map(|seconds| seconds * 1_000)
}

/// Entries split: those left for the queue, and per original position the outcome of an
/// entry a pair took (`None`: the queue's outcome goes there).
pub(crate) struct Split {
    pub rest: Vec<NewEntry>,
    pub taken: Vec<Option<EnqueueOutcome>>,
    /// A pair ordered writes: its loop should look.
    pub wake: bool,
}

impl Split {
    /// The outcomes in the original order, the queue's `outcomes` filling the gaps.
    pub fn merge(self, outcomes: Vec<EnqueueOutcome>) -> Vec<EnqueueOutcome> {
        let mut queued = outcomes.into_iter();
        self.taken
            .into_iter()
            .map(|taken| {
                taken
                    .or_else(|| queued.next())
                    .unwrap_or(EnqueueOutcome::Duplicate)
            })
            .collect()
    }
}

/// Decides the entries two-way pairs take; the rest go on to the queue.
pub(crate) fn take(shared: &TenantShared, entries: Vec<NewEntry>) -> Result<Split, StoreError> {
    if !shared.has_two_way() {
        return Ok(Split {
            taken: vec![None; entries.len()],
            rest: entries,
            wake: false,
        });
    }
    let pairs = shared.settings().two_way;
    let mut split = Split {
        rest: Vec::with_capacity(entries.len()),
        taken: Vec::with_capacity(entries.len()),
        wake: false,
    };
    for entry in entries {
        let pair = pairs.iter().find(|pair| {
            entry.fact.kind == RecordKind::Contact && pair.source == entry.fact.source
        });
        let taken = match pair {
            Some(pair) => decide_entry(shared, pair, &entry, &mut split.wake)?,
            None => false,
        };
        if taken {
            split.taken.push(Some(EnqueueOutcome::TwoWay));
        } else {
            split.taken.push(None);
            split.rest.push(entry);
        }
    }
    Ok(split)
}

/// Decides one partner change; true when the pair took it (nothing to queue).
fn decide_entry(
    shared: &TenantShared,
    pair: &PairSettings,
    entry: &NewEntry,
    wake: &mut bool,
) -> Result<bool, StoreError> {
    let body: serde_json::Value =
        serde_json::from_str(&entry.fact.body_json).unwrap_or(serde_json::Value::Null);
    let incoming = Incoming {
        side: Side::Partner,
        fields: from_transaction_body(&body),
        version_ms: version_ms_of(&entry.fact.idempotency_key).unwrap_or(entry.now_ms),
        ours: false,
    };
    let partner_id = &entry.fact.source_id;
    let store = shared.tenant_store();
    let _guard = shared.two_way_guard();
    let link = store.two_way_link(&pair.pair, partner_id)?;
    match link {
        Some(link) if link.external_only => Ok(pair.mode == Mode::On),
        Some(link) if link.virtuous_id.is_some() => {
            let (link, decision, opened) =
                store.apply_two_way_change(pair, link, &incoming, entry.now_ms)?;
            crate::metrics::count_two_way(Side::Partner, &decision, opened);
            *wake |= !link.pending(Side::Virtuous).is_empty();
            Ok(pair.mode == Mode::On)
        }
        link => {
            // Not linked yet: remember what the partner holds; the queue creates or matches
            // the contact in Virtuous, and the pair links it when Virtuous shows it.
            let mut link = link.unwrap_or_else(|| Link::new(&pair.pair, partner_id));
            if incoming.version_ms >= link.partner_version_ms {
                seed(
                    &mut link,
                    Side::Partner,
                    &incoming.fields,
                    incoming.version_ms,
                );
            }
            store.save_two_way(TwoWayUpdate {
                links: vec![link],
                counts: vec![(
                    pair.pair.clone(),
                    PairCounts {
                        partner_changes: 1,
                        unlinked: 1,
                        ..PairCounts::default()
                    },
                )],
                ..TwoWayUpdate::default()
            })?;
            metrics::counter!(
                crate::metrics::TWO_WAY_CHANGES_TOTAL,
                crate::metrics::LABEL_SIDE => Side::Partner.name(),
                crate::metrics::LABEL_OUTCOME => "unlinked"
            )
            .increment(1);
            Ok(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_comes_from_the_fact_id() {
        // Goal: `{id}@{seconds}` → ms; an event-id fact has none.
        assert_eq!(
            version_ms_of("mailchimp:contact:abc@1700000000"),
            Some(1_700_000_000_000)
        );
        assert_eq!(version_ms_of("crm:contact:p1@evt_9"), None);
    }
}
