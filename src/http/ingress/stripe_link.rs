//! Subscription holds and links (docs/ingress.md: subscription payments must not become a second
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
//! source-neutral holds and links; Stripe's rule is `sources::stripe::link`); this module
//! hands the commands over and turns Capture's outcome into the answer, which comes after
//! the write is durable.

use serde_json::json;
use steward_actors::source_fact::{FactOutcome, SourceFact};

use super::{record_fact, refuse, Answer, IngressError, TenantContext};
use crate::http::error::ErrorCode;
use crate::sources::stripe::link::{link_part, link_rule};
use crate::sources::stripe::SubscriptionLink;
use crate::sources::Command;

/// A `Mapped::Hold` of the Stripe mapping.
pub(super) struct Hold {
    pub payment_id: String,
    pub until_s: i64,
    pub gift: Command,
}

/// A held payment: queued recurring at once when its link is complete, else held.
pub(super) async fn hold(
    context: &TenantContext,
    hold: Hold,
    event_id: &str,
    now_ms: u64,
) -> Result<Answer, IngressError> {
    debug_assert_eq!(hold.gift.fact.source_id, hold.payment_id);
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

fn unexpected(outcome: &FactOutcome) -> IngressError {
    refuse(
        ErrorCode::Internal,
        format!("Capture answered a Stripe hold or link with {outcome:?}"),
    )
}
