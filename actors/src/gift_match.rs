//! The one matcher: which Virtuous gifts (and contacts) carry the ids of our records.
//!
//! Both confirmation paths use it — the reconciler's bulk FullGift pass
//! (`reconciler_pass::match_gifts`) and the Virtuous webhook through the Inbound actor
//! ([`match_delivery`]). A gift is ours when it is not a reversal and carries a
//! `transactionId` (and, where the caller says, our `transactionSource`). Gifts are grouped by
//! transaction: two Virtuous gifts with one transaction id are a duplicate, and every id of
//! the group goes with the confirmation so the store can say so.

use std::collections::BTreeMap;

use crate::ports::CrmGift;
use crate::store::confirm_ops::Confirmation;
use crate::store::{RecordKind, TenantStore};
use crate::virtuous_event::VirtuousEvent;

/// `giftType` of a reversal (never confirms one of our gifts).
pub const REVERSING_GIFT_TYPE: &str = "ReversingTransaction";

/// A reversal names the gift it reverses or has the reversing gift type. A reversed-gift id
/// of `0` (Virtuous's "none" on some forms) is no reversal.
pub fn is_reversal(gift: &CrmGift) -> bool {
    let reverses_a_gift = gift
        .reversed_gift_id
        .as_deref()
        .is_some_and(|id| !id.is_empty() && id != "0");
    reverses_a_gift
        || gift
            .gift_type
            .as_deref()
            .is_some_and(|kind| kind.eq_ignore_ascii_case(REVERSING_GIFT_TYPE))
}

/// Virtuous records carrying one idempotency pair: every Virtuous id seen for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchGroup {
    pub kind: RecordKind,
    /// `transactionSource` (gifts) or the reference's `source` (contacts).
    pub transaction_source: String,
    /// `transactionId` (gifts) or the reference's `id` (contacts).
    pub transaction_id: String,
    pub virtuous_ids: Vec<String>,
}

/// Groups the gifts that may be ours by transaction (in transaction order). With
/// `only_source`, gifts of another transaction source are skipped and gifts without one are
/// taken as that source's (the bulk query asked for it); without, a gift must name its source.
pub fn group_gifts(gifts: &[CrmGift], only_source: Option<&str>) -> Vec<MatchGroup> {
    let mut groups: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for gift in gifts {
        let transaction_source = match (only_source, gift.transaction_source.as_deref()) {
            (Some(wanted), Some(named)) if !named.eq_ignore_ascii_case(wanted) => continue,
            (Some(wanted), _) => wanted,
            (None, Some(named)) if !named.is_empty() => named,
            (None, _) => continue,
        };
        let Some(transaction_id) = gift.transaction_id.as_deref() else {
            continue;
        };
        if is_reversal(gift) || transaction_id.is_empty() || gift.virtuous_id.is_empty() {
            continue;
        }
        groups
            .entry((transaction_source.to_string(), transaction_id.to_string()))
            .or_default()
            .push(gift.virtuous_id.clone());
    }
    groups
        .into_iter()
        .map(
            |((transaction_source, transaction_id), virtuous_ids)| MatchGroup {
                kind: RecordKind::Gift,
                transaction_source,
                transaction_id,
                virtuous_ids,
            },
        )
        .collect()
}

/// A record a group may confirm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub kind: RecordKind,
    pub source: String,
    pub source_id: String,
}

/// One confirmation per candidate record, in the order first named; a record named by
/// several groups gets every Virtuous id of them (a duplicate at once).
pub fn confirmations(
    matched: impl IntoIterator<Item = (Vec<Candidate>, Vec<String>)>,
    via: &'static str,
) -> Vec<Confirmation> {
    let mut out: Vec<Confirmation> = Vec::new();
    let mut position: BTreeMap<(bool, String, String), usize> = BTreeMap::new();
    for (candidates, virtuous_ids) in matched {
        for candidate in candidates {
            let key = (
                candidate.kind == RecordKind::Contact,
                candidate.source.clone(),
                candidate.source_id.clone(),
            );
            if let Some(index) = position.get(&key) {
                out[*index]
                    .virtuous_ids
                    .extend(virtuous_ids.iter().cloned());
                continue;
            }
            position.insert(key, out.len());
            out.push(Confirmation {
                kind: candidate.kind,
                source: candidate.source,
                source_id: candidate.source_id,
                virtuous_ids: virtuous_ids.clone(),
                via,
            });
        }
    }
    out
}

/// Which ingress sources write records under a `transactionSource` (from the tenant's
/// source settings: Stripe's and each platform's `transaction_source`). A name no source
/// claims falls back to its lowercase form (sources without settings, such as the test
/// hook's `synthetic`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceNames {
    /// `(transaction source, ingress source)`.
    pub pairs: Vec<(String, String)>,
}

impl SourceNames {
    pub fn ingress_sources(&self, transaction_source: &str) -> Vec<String> {
        let mut sources: Vec<String> = self
            .pairs
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case(transaction_source))
            .map(|(_, source)| source.clone())
            .collect();
        let lowercase = transaction_source.to_lowercase();
        if !sources.contains(&lowercase) {
            sources.push(lowercase);
        }
        sources
    }
}

/// The webhook's matches: gifts grouped as the bulk pass groups them, contacts by their
/// references; each offered to the records of the ingress sources its source names (the
/// store decides: unknown records are ignored, confirmed ones compared).
pub fn match_delivery(events: &[VirtuousEvent], names: &SourceNames) -> Vec<Confirmation> {
    let gifts: Vec<CrmGift> = events
        .iter()
        .filter_map(|event| match event {
            VirtuousEvent::Gift { gift, .. } => Some(gift.clone()),
            _ => None,
        })
        .collect();
    let mut groups = group_gifts(&gifts, None);
    for event in events {
        if let VirtuousEvent::Contact {
            virtuous_id,
            references,
            ..
        } = event
        {
            groups.extend(references.iter().map(|reference| MatchGroup {
                kind: RecordKind::Contact,
                transaction_source: reference.source.clone(),
                transaction_id: reference.id.clone(),
                virtuous_ids: vec![virtuous_id.clone()],
            }));
        }
    }
    confirmations(
        groups.into_iter().map(|group| {
            let candidates = names
                .ingress_sources(&group.transaction_source)
                .into_iter()
                .map(|source| Candidate {
                    kind: group.kind,
                    source,
                    source_id: group.transaction_id.clone(),
                })
                .collect();
            (candidates, group.virtuous_ids)
        }),
        "webhook",
    )
}

/// Alert raised for each duplicate gift found.
pub const ALERT_DUPLICATE_GIFT: &str = "duplicate_gift";

/// A duplicate gift was found: alert (ERROR logged the first time), metric, WARN line.
pub fn report_duplicate(
    store: &TenantStore,
    tenant_id: &str,
    confirmation: &Confirmation,
    all_ids: &[String],
    now_ms: u64,
) {
    let message = format!(
        "Virtuous holds {} gifts ({}) for one transaction: {} {}; delete the extra gift in Virtuous",
        all_ids.len(),
        all_ids.join(", "),
        confirmation.source,
        confirmation.source_id
    );
    crate::metrics::count_duplicate(tenant_id);
    match store.raise_alert(ALERT_DUPLICATE_GIFT, &message, now_ms) {
        // Ids from Virtuous and the source: escaped, so none can forge a log line.
        Ok(true) => {
            tracing::error!(tenant_id, record = %confirmation.source_id.escape_debug(), "{}", message.escape_debug())
        }
        Ok(false) => {
            tracing::warn!(tenant_id, record = %confirmation.source_id.escape_debug(), "{}", message.escape_debug())
        }
        Err(error) => {
            tracing::warn!(tenant_id, error = %error, "duplicate_gift alert could not be stored")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtuous_event::{ContactReference, VirtuousEventKind};

    fn gift(id: &str, source: Option<&str>, transaction_id: Option<&str>) -> CrmGift {
        CrmGift {
            virtuous_id: id.into(),
            transaction_source: source.map(str::to_string),
            transaction_id: transaction_id.map(str::to_string),
            gift_type: None,
            reversed_gift_id: None,
            create_date_time_utc: None,
            ..CrmGift::default()
        }
    }

    #[test]
    fn reversals_are_never_ours_but_a_zero_reversed_id_is_no_reversal() {
        // Goal: reversedGiftId (not 0) or giftType ReversingTransaction mark a reversal.
        let mut reversal = gift("9", Some("Stripe"), Some("pi_1"));
        reversal.reversed_gift_id = Some("7".into());
        assert!(is_reversal(&reversal));
        reversal.reversed_gift_id = Some("0".into());
        assert!(!is_reversal(&reversal));
        reversal.gift_type = Some("reversingtransaction".into());
        assert!(is_reversal(&reversal));
    }

    #[test]
    fn webhook_matches_merge_ids_per_record_across_source_spellings() {
        // Goal: `Card` and `card` name Stripe's records; one record gets both ids (a duplicate); contacts match by reference; unclaimed names fall back to lowercase.
        let names = SourceNames {
            pairs: vec![("Card".into(), "stripe".into())],
        };
        let events = vec![
            VirtuousEvent::Gift {
                kind: VirtuousEventKind::GiftCreate,
                gift: gift("7", Some("card"), Some("pi_1")),
            },
            VirtuousEvent::Gift {
                kind: VirtuousEventKind::GiftCreate,
                gift: gift("9", Some("Card"), Some("pi_1")),
            },
            VirtuousEvent::Gift {
                kind: VirtuousEventKind::GiftCreate,
                gift: gift("10", None, Some("pi_2")),
            },
            VirtuousEvent::Contact {
                kind: VirtuousEventKind::ContactCreate,
                virtuous_id: "3".into(),
                references: vec![ContactReference {
                    source: "Synthetic".into(),
                    id: "c1".into(),
                }],
            },
        ];
        let found = match_delivery(&events, &names);
        let stripe: Vec<_> = found.iter().filter(|c| c.source == "stripe").collect();
        assert_eq!(stripe.len(), 1, "{found:?}");
        let mut ids = stripe[0].virtuous_ids.clone();
        ids.sort();
        assert_eq!(ids, vec!["7".to_string(), "9".to_string()]);
        assert!(found.iter().any(|c| c.kind == RecordKind::Contact
            && c.source == "synthetic"
            && c.source_id == "c1"));
        assert!(found
            .iter()
            .all(|c| c.source_id != "pi_2" && c.via == "webhook"));
    }
}
