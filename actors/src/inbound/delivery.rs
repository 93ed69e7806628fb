//! Inbound's webhook half: a parsed Virtuous delivery comes in through the tenant's handle
//! ([`crate::runtime::TenantHandle::deliver_virtuous`]); Inbound matches it with the one
//! matcher ([`crate::gift_match`]), confirms the records (`confirm_records`; duplicates are
//! reported as the reconciler reports them), keeps the events it could not understand
//! (`store::unparsed_ops`, bounded, counted in `steward_inbound_unparsed_total`), and answers
//! once all of it is durable (invariant 1: the route's `200` comes after).
//!
//! The writes happen in the handler (one actor: deliveries of a tenant never interleave);
//! the flush is awaited in a spawned actor future, so later deliveries share it.

use actix::{fut, ActorFutureExt, Context, Handler, ResponseActFuture, WrapFuture};

use super::InboundActor;
use crate::gift_match::{match_delivery, report_duplicate};
use crate::messages::{DeliverVirtuous, DeliveryError, DeliveryReport};
use crate::pull::ChangeVia;
use crate::store::confirm_ops::ConfirmOutcome;
use crate::store::StoreError;
use crate::virtuous_event::VirtuousEvent;

/// Origin label of events kept from the Virtuous webhook.
pub const ORIGIN_VIRTUOUS_WEBHOOK: &str = "virtuous_webhook";

impl InboundActor {
    /// The writes of one delivery (not yet durable).
    fn write_delivery(&mut self, message: &DeliverVirtuous) -> Result<DeliveryReport, StoreError> {
        let shared = &self.core.shared;
        let tenant_store = shared.tenant_store();
        let now_ms = shared.clock.now_ms();
        let events = &message.delivery.events;
        let mut report = DeliveryReport {
            models: events.len(),
            ..DeliveryReport::default()
        };
        let confirmations = match_delivery(events, &message.names);
        let outcomes = tenant_store.confirm_records(&confirmations, now_ms)?;
        for (confirmation, outcome) in confirmations.iter().zip(&outcomes) {
            match outcome {
                ConfirmOutcome::Confirmed { .. } => report.confirmed += 1,
                ConfirmOutcome::DuplicateDetected { all_ids, .. } => {
                    report.duplicates += 1;
                    report_duplicate(
                        tenant_store,
                        &shared.tenant_id,
                        confirmation,
                        all_ids,
                        now_ms,
                    );
                }
                _ => {}
            }
        }
        report.pull = super::pull::offer(shared, &message.delivery.changes, ChangeVia::Webhook)?;
        let unparsed: Vec<(String, String)> = events
            .iter()
            .filter_map(|event| match event {
                VirtuousEvent::Unparsed { raw_json, reason } => {
                    Some((raw_json.clone(), reason.clone()))
                }
                _ => None,
            })
            .collect();
        if !unparsed.is_empty() {
            let kept = tenant_store.keep_unparsed(ORIGIN_VIRTUOUS_WEBHOOK, &unparsed, now_ms)?;
            report.unparsed = kept.kept;
            for (_, reason) in &unparsed {
                tracing::warn!(tenant_id = %shared.tenant_id, reason = %reason.escape_debug(), "Virtuous webhook event not understood; kept for the operator");
            }
            if kept.evicted_older + kept.dropped_new > 0 {
                tracing::warn!(
                    tenant_id = %shared.tenant_id,
                    evicted_older = kept.evicted_older,
                    dropped_new = kept.dropped_new,
                    "kept Virtuous events past their bound were dropped (oldest first); the newest are listed by GET /v1/tenants/{{id}}/inbound/unparsed"
                );
            }
        }
        Ok(report)
    }
}

impl Handler<DeliverVirtuous> for InboundActor {
    type Result = ResponseActFuture<Self, Result<DeliveryReport, DeliveryError>>;

    fn handle(&mut self, mut message: DeliverVirtuous, ctx: &mut Context<Self>) -> Self::Result {
        message.guard.mark_handling();
        if !self.may_act(ctx) {
            return Box::pin(fut::ready(Err(DeliveryError::Unavailable)));
        }
        let report = match self.write_delivery(&message) {
            Ok(report) => report,
            Err(error) => return Box::pin(fut::ready(Err(DeliveryError::Store(error)))),
        };
        self.behavior.deliveries_handled += 1;
        self.behavior.unparsed_kept += report.unparsed;
        self.behavior.pull.offered.add(report.pull);
        self.publish();
        drop(message);
        let store = self.core.shared.store().clone();
        let durable = async move { store.durable().await };
        Box::pin(durable.into_actor(self).map(move |flushed, inbound, ctx| {
            flushed?;
            report.pull.count(ChangeVia::Webhook);
            if report.pull.logged > 0 {
                inbound.core.shared.pull_wake.notify_waiters();
            }
            if report.pull.rereads > 0 {
                inbound.reread_soon(ctx);
            }
            // Counted once durable: a counted event is one an operator can find.
            crate::metrics::count_confirmations("webhook", report.confirmed + report.duplicates);
            if report.unparsed > 0 {
                metrics::counter!(
                    crate::metrics::INBOUND_UNPARSED_TOTAL,
                    crate::metrics::LABEL_ORIGIN => ORIGIN_VIRTUOUS_WEBHOOK
                )
                .increment(report.unparsed);
            }
            Ok(report)
        }))
    }
}
