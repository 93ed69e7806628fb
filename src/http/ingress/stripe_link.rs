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
//! The decisions run in the tenant's Capture actor (`steward_actors::capture::commands`,
//! source-neutral holds and links); this module maps Stripe's pieces onto them: the link
//! is the invoice, the held entry the payment, the target the subscription, the note the
//! first payment's frequency. The answer comes after the write is durable.

use serde_json::json;
use steward_actors::capture::commands::{FactOutcome, LinkPart, LinkRule, SourceFact};
use steward_actors::store::RecordKind;

use super::{record_fact, refuse, Answer, IngressError, TenantContext};
use crate::http::error::ErrorCode;
use crate::sources::stripe::{SubscriptionLink, SOURCE};
use crate::sources::Command;

/// Source-state name of link parts, keyed by invoice id (value: the stored link as JSON).
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

/// How Stripe subscription payments are linked (what `apply_link` does to a held gift).
fn link_rule() -> LinkRule {
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

/// A held payment: queued recurring at once when its link is complete, else held.
pub(super) async fn hold(
    context: &TenantContext,
    hold: Hold,
    event_id: &str,
    now_ms: u64,
) -> Result<Answer, IngressError> {
    debug_assert_eq!(hold.gift.source_id, hold.payment_id);
    let not_before_ms = u64::try_from(hold.until_s)
        .unwrap_or(0)
        .saturating_mul(1000);
    let fact = SourceFact::Hold {
        entry: hold.gift.into_new_entry(now_ms),
        not_before_ms,
        rule: link_rule(),
    };
    match record_fact(&context.handle, fact).await? {
        FactOutcome::QueuedLinked(outcome) => {
            Ok(Answer::enqueued(std::slice::from_ref(&outcome), event_id))
        }
        FactOutcome::Held(outcome) => {
            Ok(Answer::enqueued(std::slice::from_ref(&outcome), event_id)
                .when_queued(|| Answer::held(event_id, hold.until_s)))
        }
        other => Err(unexpected(&other)),
    }
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
) -> Result<Answer, IngressError> {
    let fact = SourceFact::Link {
        part: link_part(part),
        rule: link_rule(),
    };
    match record_fact(&context.handle, fact).await? {
        FactOutcome::Linked {
            duplicate: true, ..
        } => Ok(Answer::ok("duplicate", event_id, json!({}))),
        FactOutcome::Linked {
            link_id,
            complete,
            released,
            ..
        } => Ok(Answer::ok(
            "linked",
            event_id,
            json!({"invoice": link_id, "complete": complete, "released": released}),
        )),
        other => Err(unexpected(&other)),
    }
}

fn link_part(part: SubscriptionLink) -> LinkPart {
    LinkPart {
        link_id: part.invoice_id,
        entry_id: part.payment_id,
        target_id: part.subscription_id,
        note: part.first_payment_frequency,
        event_ids: part.event_ids,
    }
}

fn unexpected(outcome: &FactOutcome) -> IngressError {
    refuse(
        ErrorCode::Internal,
        format!("Capture answered a Stripe hold or link with {outcome:?}"),
    )
}
