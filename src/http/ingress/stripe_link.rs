//! Subscription holds and links (sources.md "Subscription payments must not become a second
//! gift", API 2025-03-31 and later).
//!
//! A payment that looks like a subscription payment is *held*: queued as the one-time gift
//! with `not_before` = the hold's end, so the submitter leaves it alone until then. Link parts
//! (`invoice_payment.paid`: invoice → payment; `invoice.paid`: invoice → subscription) are
//! merged per invoice in source state, with an index payment → invoice. Whichever comes last
//! completes the picture:
//! - link complete first, payment later: the payment is queued at once in its recurring form;
//! - payment held first, link completes later: the held entry's body is rewritten to the
//!   recurring form and released now (`store::hold_ops`);
//! - the link completes after the hold ended (the one-time gift may be on its way): the
//!   entry is left alone and the alert `subscription_link_late` names the payment and the
//!   subscription for staff to link in Virtuous.
//!
//! Everything here runs under one async mutex per tenant (these events are rare), so the
//! check-then-write sequences of two concurrent deliveries cannot interleave. Writes are
//! durable before the answer.

use std::sync::{Arc, OnceLock};

use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use steward_actors::store::hold_ops::{Release, ReleaseOutcome};
use steward_actors::store::{EnqueueOutcome, Lane, RecordKind, StoreError, TenantStore};

use super::{enqueue, raise_alert, Answer, IngressError, TenantContext};
use crate::sources::stripe::{apply_link, SubscriptionLink, SOURCE};
use crate::sources::Command;

/// Source-state name of link parts, keyed by invoice id (value: [`StoredLink`] as JSON).
pub const LINK_STATE: &str = "stripe_link";
/// Source-state name of the index payment id → invoice id.
pub const LINK_BY_PAYMENT: &str = "stripe_link_payment";
/// Alert raised when a link completes after its payment's hold ended.
pub const ALERT_LINK_LATE: &str = "subscription_link_late";

/// A `Mapped::Hold` of the Stripe mapping.
pub(super) struct Hold {
    pub payment_id: String,
    pub until_s: i64,
    pub gift: Command,
}

/// The stored form of a [`SubscriptionLink`] (JSON: it may grow fields without a migration).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct StoredLink {
    invoice_id: String,
    payment_id: Option<String>,
    subscription_id: Option<String>,
    first_payment_frequency: Option<String>,
    event_ids: Vec<String>,
    /// The link was acted on: the recurring form was queued or released, or it came too late
    /// and staff were alerted. Re-deliveries then change nothing.
    #[serde(default)]
    applied: bool,
}

impl StoredLink {
    fn link(&self) -> SubscriptionLink {
        SubscriptionLink {
            invoice_id: self.invoice_id.clone(),
            payment_id: self.payment_id.clone(),
            subscription_id: self.subscription_id.clone(),
            first_payment_frequency: self.first_payment_frequency.clone(),
            event_ids: self.event_ids.clone(),
        }
    }

    fn merge(&mut self, part: SubscriptionLink) {
        let mut link = self.link();
        link.merge(part);
        self.payment_id = link.payment_id;
        self.subscription_id = link.subscription_id;
        self.first_payment_frequency = link.first_payment_frequency;
        self.event_ids = link.event_ids;
    }
}

/// One async mutex per tenant, for the whole process (HTTP workers share it).
fn tenant_lock(tenant_id: &str) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: OnceLock<DashMap<String, Arc<tokio::sync::Mutex<()>>>> = OnceLock::new();
    let locks = LOCKS.get_or_init(DashMap::new);
    // Clone the Arc out: no dashmap Ref lives across the await that follows.
    locks
        .entry(tenant_id.to_string())
        .or_default()
        .value()
        .clone()
}

fn load_link(
    tenant_store: &TenantStore,
    invoice_id: &str,
) -> Result<Option<StoredLink>, StoreError> {
    let Some(bytes) = tenant_store.get_source_state(LINK_STATE, invoice_id)? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|err| StoreError::Codec(format!("stored Stripe link {invoice_id}: {err}")))
}

fn save_link(tenant_store: &TenantStore, link: &StoredLink) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(link)
        .map_err(|err| StoreError::Codec(format!("encoding a Stripe link: {err}")))?;
    tenant_store.put_source_state(LINK_STATE, &link.invoice_id, &bytes)
}

fn link_of_payment(
    tenant_store: &TenantStore,
    payment_id: &str,
) -> Result<Option<StoredLink>, StoreError> {
    let Some(invoice_id) = tenant_store.get_source_state(LINK_BY_PAYMENT, payment_id)? else {
        return Ok(None);
    };
    load_link(tenant_store, &String::from_utf8_lossy(&invoice_id))
}

/// A held payment: queued recurring at once when its link is complete, else held.
pub(super) async fn hold(
    context: &TenantContext,
    hold: Hold,
    event_id: &str,
    now_ms: u64,
) -> Result<Answer, IngressError> {
    let sled = context.sled()?;
    let lock = tenant_lock(context.handle.tenant_id());
    let _serialised = lock.lock().await;
    let tenant_store = &sled.tenant_store;
    if let Some(mut stored) = link_of_payment(tenant_store, &hold.payment_id)? {
        let link = stored.link();
        if link.is_complete() {
            let recurring = apply_link(&hold.gift, &link);
            let outcomes = enqueue(&context.handle, vec![recurring], now_ms).await?;
            if !stored.applied {
                stored.applied = true;
                save_link(tenant_store, &stored)?;
                sled.store.durable().await?;
            }
            return Ok(Answer::enqueued(&outcomes, event_id));
        }
    }
    let not_before_ms = u64::try_from(hold.until_s)
        .unwrap_or(0)
        .saturating_mul(1000);
    let outcome = tenant_store.enqueue_held(hold.gift.into_new_entry(now_ms), not_before_ms)?;
    sled.store.durable().await?;
    if matches!(outcome, EnqueueOutcome::Queued { .. }) {
        // The submitter learns the hold's end (its next wake-up) without waiting for a tick.
        context.handle.hint_work(1);
    }
    tracing::debug!(tenant_id = %tenant_store.tenant_id(), event_id, payment_id = %hold.payment_id, ?outcome, "subscription-like payment held");
    Ok(Answer::enqueued(std::slice::from_ref(&outcome), event_id)
        .when_queued(|| Answer::held(event_id, hold.until_s)))
}

impl Answer {
    /// `replacement` when this answer reports something queued (a hold reports `held`).
    fn when_queued(self, replacement: impl FnOnce() -> Answer) -> Answer {
        if self.outcome == "queued" {
            replacement()
        } else {
            self
        }
    }
}

/// A link part: merged and stored; when complete, the held payment is released recurring.
pub(super) async fn link(
    context: &TenantContext,
    part: SubscriptionLink,
    event_id: &str,
    now_ms: u64,
) -> Result<Answer, IngressError> {
    let sled = context.sled()?;
    let lock = tenant_lock(context.handle.tenant_id());
    let _serialised = lock.lock().await;
    let tenant_store = &sled.tenant_store;
    let mut stored = load_link(tenant_store, &part.invoice_id)?.unwrap_or_else(|| StoredLink {
        invoice_id: part.invoice_id.clone(),
        ..StoredLink::default()
    });
    let before = stored.clone();
    let seen_before = part
        .event_ids
        .iter()
        .all(|id| stored.event_ids.contains(id));
    stored.merge(part);
    if let (Some(payment_id), None) = (&stored.payment_id, &before.payment_id) {
        tenant_store.put_source_state(LINK_BY_PAYMENT, payment_id, stored.invoice_id.as_bytes())?;
    }
    let mut released = false;
    if stored.link().is_complete() && !stored.applied {
        released = apply_to_held_payment(tenant_store, &mut stored, now_ms)?;
    }
    if stored != before {
        save_link(tenant_store, &stored)?;
    }
    sled.store.durable().await?;
    if released {
        // Ready now, while the submitter's timer still points at the hold's end.
        context.handle.hint_work(1);
    }
    if seen_before && stored == before {
        return Ok(Answer::ok("duplicate", event_id, json!({})));
    }
    Ok(Answer::ok(
        "linked",
        event_id,
        json!({"invoice": stored.invoice_id, "complete": stored.link().is_complete(), "released": released}),
    ))
}

/// The link just completed: rewrite and release the payment's held entry. Returns whether
/// an entry was released. Marks the link applied unless the payment has not arrived yet.
fn apply_to_held_payment(
    tenant_store: &TenantStore,
    stored: &mut StoredLink,
    now_ms: u64,
) -> Result<bool, IngressError> {
    let link = stored.link();
    let (Some(payment_id), Some(subscription_id)) = (&link.payment_id, &link.subscription_id)
    else {
        return Ok(false);
    };
    let Some(record) = tenant_store.get_record(RecordKind::Gift, SOURCE, payment_id)? else {
        // The payment has not arrived: it will be queued recurring when it does.
        return Ok(false);
    };
    let held_entry = match record.last_seq {
        Some(seq) => tenant_store.get_queue_entry(Lane::Live, seq)?,
        None => None,
    };
    let outcome = match held_entry {
        Some(entry) => {
            let body: Value = serde_json::from_str(&entry.body_json)
                .map_err(|err| StoreError::Codec(format!("queued body of {payment_id}: {err}")))?;
            let held = Command {
                kind: entry.kind,
                source: entry.source,
                source_id: entry.source_id,
                idempotency_key: entry.idempotency_key,
                aliases: Vec::new(),
                lane: entry.lane,
                transaction_source: entry.transaction_source,
                body,
            };
            let recurring = apply_link(&held, &link);
            tenant_store.release_held(
                RecordKind::Gift,
                SOURCE,
                payment_id,
                Release {
                    body_json: &recurring.body.to_string(),
                    aliases: &recurring.aliases,
                    reason: &format!(
                        "released: linked to subscription {subscription_id} (invoice {})",
                        link.invoice_id
                    ),
                },
                now_ms,
            )?
        }
        None => ReleaseOutcome::NotQueued,
    };
    stored.applied = true;
    match outcome {
        ReleaseOutcome::Released { .. } => Ok(true),
        ReleaseOutcome::NotQueued | ReleaseOutcome::AlreadyReleased { .. } => {
            let message = format!(
                "payment {payment_id} was queued as a one-time gift before its link to subscription {subscription_id} (invoice {}) arrived; link the gift to the recurring gift in Virtuous",
                link.invoice_id
            );
            tracing::warn!(tenant_id = %tenant_store.tenant_id(), payment_id = %payment_id, subscription_id = %subscription_id, "subscription link arrived after the hold");
            raise_alert(tenant_store, ALERT_LINK_LATE, &message, now_ms)?;
            Ok(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use steward_actors::store::{Store, StoreOptions};

    use super::*;
    use crate::sources::idempotency_key;

    fn open() -> (tempfile::TempDir, Store, TenantStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store"), StoreOptions::default()).unwrap();
        let tenant = store.tenant("t1").unwrap();
        (dir, store, tenant)
    }

    fn one_time_gift() -> Command {
        Command {
            kind: RecordKind::Gift,
            source: SOURCE.into(),
            source_id: "pi_1".into(),
            idempotency_key: idempotency_key(SOURCE, RecordKind::Gift, "pi_1"),
            aliases: vec!["ch_1".into()],
            lane: Lane::Live,
            transaction_source: "Stripe".into(),
            body: json!({"transactionId": "pi_1", "amount": "20.00"}),
        }
    }

    fn complete_link() -> StoredLink {
        StoredLink {
            invoice_id: "in_1".into(),
            payment_id: Some("pi_1".into()),
            subscription_id: Some("sub_1".into()),
            first_payment_frequency: Some("Monthly".into()),
            event_ids: vec!["evt_inv".into(), "evt_inpay".into()],
            applied: false,
        }
    }

    fn alert_codes(tenant: &TenantStore) -> Vec<String> {
        tenant
            .alerts()
            .unwrap()
            .into_iter()
            .map(|alert| alert.code)
            .collect()
    }

    #[test]
    fn a_held_payment_is_released_in_its_recurring_form() {
        // Goal: the held entry gets recurringGiftTransactionId + frequency and is ready now.
        let (_dir, _store, tenant) = open();
        tenant
            .enqueue_held(one_time_gift().into_new_entry(1_000), 1_000_000)
            .unwrap();
        let mut link = complete_link();
        assert!(apply_to_held_payment(&tenant, &mut link, 2_000).unwrap());
        assert!(link.applied);
        let (_, entry) = tenant.scan_lane(Lane::Live, 10).unwrap().pop().unwrap();
        assert_eq!(entry.not_before_ms, 2_000);
        let body: Value = serde_json::from_str(&entry.body_json).unwrap();
        assert_eq!(body["recurringGiftTransactionId"], "sub_1");
        assert_eq!(body["frequency"], "Monthly");
        assert_eq!(body["transactionId"], "pi_1");
        assert_eq!(
            tenant
                .find_record_by_alias("in_1")
                .unwrap()
                .unwrap()
                .source_id,
            "pi_1"
        );
        assert!(alert_codes(&tenant).is_empty());
    }

    #[test]
    fn a_link_before_its_payment_waits_without_alerting() {
        // Goal: no record yet → nothing released, the link stays unapplied for the payment.
        let (_dir, _store, tenant) = open();
        let mut link = complete_link();
        assert!(!apply_to_held_payment(&tenant, &mut link, 2_000).unwrap());
        assert!(!link.applied);
        assert!(alert_codes(&tenant).is_empty());
    }

    #[test]
    fn a_link_after_the_hold_ended_alerts_and_changes_nothing() {
        // Goal: a ready (released by time) entry keeps its one-time body; staff are alerted.
        let (_dir, _store, tenant) = open();
        tenant
            .enqueue_held(one_time_gift().into_new_entry(1_000), 1_500)
            .unwrap();
        let mut link = complete_link();
        assert!(!apply_to_held_payment(&tenant, &mut link, 200_000).unwrap());
        assert!(link.applied);
        let (_, entry) = tenant.scan_lane(Lane::Live, 10).unwrap().pop().unwrap();
        let body: Value = serde_json::from_str(&entry.body_json).unwrap();
        assert!(body.get("recurringGiftTransactionId").is_none());
        assert_eq!(alert_codes(&tenant), vec![ALERT_LINK_LATE.to_string()]);
    }

    #[test]
    fn stored_links_merge_parts_from_either_event() {
        // Goal: the payment part and the subscription part complete one link, in any order.
        let payment_part = SubscriptionLink {
            invoice_id: "in_1".into(),
            payment_id: Some("pi_1".into()),
            event_ids: vec!["evt_inpay".into()],
            ..SubscriptionLink::default()
        };
        let subscription_part = SubscriptionLink {
            invoice_id: "in_1".into(),
            subscription_id: Some("sub_1".into()),
            event_ids: vec!["evt_inv".into()],
            ..SubscriptionLink::default()
        };
        for parts in [
            [payment_part.clone(), subscription_part.clone()],
            [subscription_part.clone(), payment_part.clone()],
        ] {
            let mut stored = StoredLink {
                invoice_id: "in_1".into(),
                ..StoredLink::default()
            };
            for part in parts {
                assert!(!stored.link().is_complete());
                stored.merge(part);
            }
            assert!(stored.link().is_complete());
            assert_eq!(stored.event_ids.len(), 2);
        }
    }
}
