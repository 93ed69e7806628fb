//! Stripe subscription links as Capture's source-neutral link commands
//! (`steward_actors::capture::commands`): the link is the invoice, the held entry the
//! payment, the target the subscription, the note the first payment's frequency. What a
//! complete link does to the held gift is [`apply_link`]'s change; a test below holds the
//! two to the same result.

use steward_actors::source_fact::{LinkPart, LinkRule};
use steward_actors::store::RecordKind;

use super::{SubscriptionLink, SOURCE};

/// Source-state name of link parts, keyed by invoice id (value: the stored link as JSON).
pub const LINK_STATE: &str = "stripe_link";
/// Source-state name of the index payment id → invoice id.
pub const LINK_BY_PAYMENT: &str = "stripe_link_payment";
/// Alert raised when a link completes after its payment's hold ended.
pub const ALERT_LINK_LATE: &str = "subscription_link_late";

/// How Stripe subscription payments are linked.
pub fn link_rule() -> LinkRule {
    LinkRule {
        state_name: LINK_STATE.into(),
        index_name: LINK_BY_PAYMENT.into(),
        kind: RecordKind::Gift,
        source: SOURCE.into(),
        target_field: "recurringGiftTransactionId".into(),
        note_field: "frequency".into(),
        late_alert_code: ALERT_LINK_LATE.into(),
        late_alert_message: "payment {entry} was queued as a one-time gift before its link to subscription {target} (invoice {link}) arrived; link the gift to the recurring gift in Virtuous".into(),
        release_reason: "released: linked to subscription {target} (invoice {link})".into(),
    }
}

/// A Stripe link part as a link command's part.
pub fn link_part(part: SubscriptionLink) -> LinkPart {
    LinkPart {
        link_id: part.invoice_id,
        entry_id: part.payment_id,
        target_id: part.subscription_id,
        note: part.first_payment_frequency,
        event_ids: part.event_ids,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};
    use steward_actors::capture::commands::apply;
    use steward_actors::source_fact::SourceFact;
    use steward_actors::store::{EntryFact, Lane, Store, StoreOptions};

    use super::super::apply_link;
    use super::*;
    use crate::sources::{idempotency_key, Command};

    fn one_time_gift() -> Command {
        Command {
            fact: EntryFact {
                kind: RecordKind::Gift,
                source: SOURCE.into(),
                source_id: "pi_1".into(),
                idempotency_key: idempotency_key(SOURCE, RecordKind::Gift, "pi_1"),
                lane: Lane::Live,
                transaction_source: "Stripe".into(),
                body_json: json!({"transactionId": "pi_1", "amount": "20.00"}).to_string(),
            },
            aliases: vec!["ch_1".into()],
        }
    }

    #[test]
    fn capture_s_link_change_is_apply_link_s() {
        // Goal: a payment held first and released by its link, and a payment arriving after its link, both get exactly apply_link's body (and its aliases).
        let link = SubscriptionLink {
            invoice_id: "in_1".into(),
            payment_id: Some("pi_1".into()),
            subscription_id: Some("sub_1".into()),
            first_payment_frequency: Some("Monthly".into()),
            event_ids: vec!["evt_inv".into(), "evt_inpay".into()],
        };
        let expected = apply_link(&one_time_gift(), &link);
        for link_first in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(&dir.path().join("store"), StoreOptions::default()).unwrap();
            let tenant = store.tenant("t1").unwrap();
            let hold = || SourceFact::Hold {
                entry: one_time_gift().into_new_entry(1_000),
                not_before_ms: 1_000_000,
                rule: link_rule(),
            };
            let link_fact = SourceFact::Link {
                part: link_part(link.clone()),
                rule: link_rule(),
            };
            if link_first {
                apply(&tenant, link_fact, 1_000).unwrap();
                apply(&tenant, hold(), 2_000).unwrap();
            } else {
                apply(&tenant, hold(), 1_000).unwrap();
                apply(&tenant, link_fact, 2_000).unwrap();
            }
            let (_, queued) = tenant.scan_lane(Lane::Live, 10).unwrap().pop().unwrap();
            let body: Value = serde_json::from_str(&queued.fact.body_json).unwrap();
            assert_eq!(body, expected.body(), "link first: {link_first}");
            for alias in &expected.aliases {
                let record = tenant.find_record_by_alias(alias).unwrap();
                assert_eq!(
                    record.map(|record| record.source_id),
                    Some("pi_1".to_string()),
                    "alias {alias}, link first: {link_first}"
                );
            }
        }
    }
}
