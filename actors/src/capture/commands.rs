//! Capture's source-fact commands: what a webhook source needs besides plain enqueues —
//! alerts, once-per-event marks, held entries and the links that release them. Typed and
//! source-neutral: the HTTP layer maps a source's event to one of these; the decisions run
//! here, next to the store, inside the one Capture actor of the tenant (so two deliveries'
//! check-then-write sequences never interleave), and the answer comes once the write is
//! durable (invariant 1).
//!
//! Links (Stripe subscription payments must not become a second gift: docs/ingress.md): an entry is *held* (queued with `not_before` = the hold's end) until a
//! link names it. Link parts are merged per link id in source state, with an index entry
//! id → link id. Whichever comes last completes the picture:
//! - link complete first, entry later: the entry is queued at once with the link's body
//!   change;
//! - entry held first, link completes later: the held entry's body is rewritten and
//!   released now (`store::hold_ops`);
//! - the link completes after the hold ended: the entry is left alone and the rule's alert
//!   names the entry and the link target for staff.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::source_fact::{AlertNote, FactOutcome, LinkPart, LinkRule, RecordFact, SourceFact};
use crate::store::hold_ops::{Release, ReleaseOutcome};
use crate::store::{EnqueueOutcome, Lane, NewEntry, StoreError, TenantStore};

/// The stored form of a link (JSON: it may grow fields without a migration). The field
/// names are those the Stripe route first stored; kept so that stored links still read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct StoredLink {
    #[serde(rename = "invoice_id")]
    link_id: String,
    #[serde(rename = "payment_id")]
    entry_id: Option<String>,
    #[serde(rename = "subscription_id")]
    target_id: Option<String>,
    #[serde(rename = "first_payment_frequency")]
    note: Option<String>,
    event_ids: Vec<String>,
    /// The link was acted on: the entry was queued or released with the change, or it came
    /// too late and staff were alerted. Re-deliveries then change nothing.
    #[serde(default)]
    applied: bool,
}

impl StoredLink {
    /// Fills what `self` lacks from `part` (same link).
    fn merge(&mut self, part: LinkPart) {
        self.entry_id = self.entry_id.take().or(part.entry_id);
        self.target_id = self.target_id.take().or(part.target_id);
        self.note = self.note.take().or(part.note);
        for event_id in part.event_ids {
            if !self.event_ids.contains(&event_id) {
                self.event_ids.push(event_id);
            }
        }
    }

    /// Both ids known: the held entry can take the link's change.
    fn is_complete(&self) -> bool {
        self.entry_id.is_some() && self.target_id.is_some()
    }

    fn message(&self, template: &str) -> String {
        template
            .replace("{entry}", self.entry_id.as_deref().unwrap_or_default())
            .replace("{target}", self.target_id.as_deref().unwrap_or_default())
            .replace("{link}", &self.link_id)
    }

    /// The body and aliases of the entry `source_id` with the link applied.
    fn apply(
        &self,
        rule: &LinkRule,
        source_id: &str,
        body_json: &str,
        aliases: &[String],
    ) -> Result<(String, Vec<String>), StoreError> {
        let mut body: Value = serde_json::from_str(body_json)
            .map_err(|err| StoreError::Codec(format!("queued body of {source_id}: {err}")))?;
        if let (Value::Object(fields), Some(target)) = (&mut body, &self.target_id) {
            fields.insert(rule.target_field.clone(), Value::String(target.clone()));
            if let Some(note) = &self.note {
                fields.insert(rule.note_field.clone(), Value::String(note.clone()));
            }
        }
        let mut aliases = aliases.to_vec();
        for id in std::iter::once(&self.link_id).chain(&self.event_ids) {
            if id != source_id && !aliases.contains(id) {
                aliases.push(id.clone());
            }
        }
        Ok((body.to_string(), aliases))
    }
}

fn load_link(
    store: &TenantStore,
    rule: &LinkRule,
    link_id: &str,
) -> Result<Option<StoredLink>, StoreError> {
    let Some(bytes) = store.get_source_state(&rule.state_name, link_id)? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|err| StoreError::Codec(format!("stored link {link_id}: {err}")))
}

fn save_link(store: &TenantStore, rule: &LinkRule, link: &StoredLink) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(link)
        .map_err(|err| StoreError::Codec(format!("encoding a link: {err}")))?;
    store.put_source_state(&rule.state_name, &link.link_id, &bytes)
}

fn link_of_entry(
    store: &TenantStore,
    rule: &LinkRule,
    entry_id: &str,
) -> Result<Option<StoredLink>, StoreError> {
    let Some(link_id) = store.get_source_state(&rule.index_name, entry_id)? else {
        return Ok(None);
    };
    load_link(store, rule, &String::from_utf8_lossy(&link_id))
}

/// Raises an alert; logs ERROR the first time its code is raised (docs/operations.md "Alerts").
pub fn raise_alert(store: &TenantStore, note: &AlertNote, now_ms: u64) -> Result<(), StoreError> {
    if store.raise_alert(&note.code, &note.message, now_ms)? {
        tracing::error!(tenant_id = %store.tenant_id(), alert = %note.code.escape_debug(), detail = %note.message.escape_debug(), "alert raised");
    }
    Ok(())
}

/// Applies one source fact to the store (not yet durable).
pub fn apply(
    store: &TenantStore,
    fact: SourceFact,
    now_ms: u64,
) -> Result<FactOutcome, StoreError> {
    match fact {
        SourceFact::EnqueueWithAlerts {
            entries,
            alerts_if_queued,
        } => {
            let outcomes = store.enqueue(entries)?;
            if EnqueueOutcome::queued_in(&outcomes) > 0 {
                for note in &alerts_if_queued {
                    raise_alert(store, note, now_ms)?;
                }
            }
            Ok(FactOutcome::Enqueued(outcomes))
        }
        SourceFact::MarkEvent {
            mark_name,
            event_id,
            kept,
            alert,
        } => {
            let first_time = store.mark_source_state(&mark_name, &event_id, &kept)?;
            if first_time {
                raise_alert(store, &alert, now_ms)?;
            }
            Ok(FactOutcome::Marked { first_time })
        }
        SourceFact::Hold {
            entry,
            not_before_ms,
            rule,
        } => hold(store, entry, not_before_ms, &rule),
        SourceFact::Link { part, rule } => link(store, part, &rule, now_ms),
    }
}

/// A held entry: queued with the change at once when its link is complete, else held.
fn hold(
    store: &TenantStore,
    mut entry: NewEntry,
    not_before_ms: u64,
    rule: &LinkRule,
) -> Result<FactOutcome, StoreError> {
    if let Some(mut stored) = link_of_entry(store, rule, &entry.fact.source_id)? {
        if stored.is_complete() {
            let (body_json, aliases) = stored.apply(
                rule,
                &entry.fact.source_id,
                &entry.fact.body_json,
                &entry.aliases,
            )?;
            entry.fact.body_json = body_json;
            entry.aliases = aliases;
            let outcome = store
                .enqueue(vec![entry])?
                .pop()
                .ok_or_else(|| StoreError::Codec("enqueue answered nothing".into()))?;
            if !stored.applied {
                stored.applied = true;
                save_link(store, rule, &stored)?;
            }
            return Ok(FactOutcome::QueuedLinked(outcome));
        }
    }
    let source_id = entry.fact.source_id.clone();
    let outcome = store.enqueue_held(entry, not_before_ms)?;
    tracing::debug!(tenant_id = %store.tenant_id(), source_id = %source_id.escape_debug(), ?outcome, "entry held for its link");
    Ok(FactOutcome::Held(outcome))
}

/// A link part: merged and stored; when complete, the held entry is released changed.
fn link(
    store: &TenantStore,
    part: LinkPart,
    rule: &LinkRule,
    now_ms: u64,
) -> Result<FactOutcome, StoreError> {
    let mut stored = load_link(store, rule, &part.link_id)?.unwrap_or_else(|| StoredLink {
        link_id: part.link_id.clone(),
        ..StoredLink::default()
    });
    let before = stored.clone();
    let seen_before = part
        .event_ids
        .iter()
        .all(|id| stored.event_ids.contains(id));
    stored.merge(part);
    if let (Some(entry_id), None) = (&stored.entry_id, &before.entry_id) {
        store.put_source_state(&rule.index_name, entry_id, stored.link_id.as_bytes())?;
    }
    let mut released = false;
    if stored.is_complete() && !stored.applied {
        released = apply_to_held_entry(store, rule, &mut stored, now_ms)?;
    }
    if stored != before {
        save_link(store, rule, &stored)?;
    }
    Ok(FactOutcome::Linked {
        duplicate: seen_before && stored == before,
        link_id: stored.link_id.clone(),
        complete: stored.is_complete(),
        released,
    })
}

/// The link just completed: rewrite and release the entry's held queue entry. Returns
/// whether it was released. Marks the link applied unless the entry has not arrived yet.
fn apply_to_held_entry(
    store: &TenantStore,
    rule: &LinkRule,
    stored: &mut StoredLink,
    now_ms: u64,
) -> Result<bool, StoreError> {
    let (Some(entry_id), Some(_)) = (stored.entry_id.clone(), &stored.target_id) else {
        return Ok(false);
    };
    let Some(record) = store.get_record(rule.kind, &rule.source, &entry_id)? else {
        // The entry has not arrived: it will be queued changed when it does.
        return Ok(false);
    };
    let held_entry = match record.last_seq {
        Some(seq) => store.get_queue_entry(Lane::Live, seq)?,
        None => None,
    };
    let outcome = match held_entry {
        Some(entry) => {
            let (body_json, aliases) = stored.apply(rule, &entry_id, &entry.fact.body_json, &[])?;
            store.release_held(
                rule.kind,
                &rule.source,
                &entry_id,
                Release {
                    body_json: &body_json,
                    aliases: &aliases,
                    reason: &stored.message(&rule.release_reason),
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
            tracing::warn!(tenant_id = %store.tenant_id(), entry_id = %entry_id.escape_debug(), link_id = %stored.link_id.escape_debug(), "link arrived after the hold");
            let note = AlertNote {
                code: rule.late_alert_code.clone(),
                message: stored.message(&rule.late_alert_message),
            };
            raise_alert(store, &note, now_ms)?;
            Ok(false)
        }
    }
}

impl actix::Handler<RecordFact> for super::CaptureActor {
    type Result =
        actix::ResponseActFuture<Self, Result<FactOutcome, crate::messages::EnqueueError>>;

    fn handle(&mut self, message: RecordFact, ctx: &mut actix::Context<Self>) -> Self::Result {
        use crate::messages::EnqueueError;
        use actix::{fut, ActorFutureExt, WrapFuture};

        let RecordFact { fact, mut guard } = message;
        guard.mark_handling();
        if !self.may_act(ctx) {
            return Box::pin(fut::ready(Err(EnqueueError::Unavailable)));
        }
        let shared = &self.core.shared;
        let now_ms = shared.clock.now_ms();
        let outcome = match apply(shared.tenant_store(), fact, now_ms) {
            Ok(outcome) => outcome,
            Err(error) => return Box::pin(fut::ready(Err(EnqueueError::Store(error)))),
        };
        drop(guard);
        let store = shared.store().clone();
        match &outcome {
            FactOutcome::Enqueued(outcomes) => self.count_enqueued(outcomes),
            FactOutcome::Held(one) | FactOutcome::QueuedLinked(one) => {
                self.count_enqueued(std::slice::from_ref(one))
            }
            FactOutcome::Marked { .. } | FactOutcome::Linked { .. } => {}
        }
        self.publish();
        let durable = async move { store.durable().await };
        self.behavior.counters.flushes_awaited += 1;
        Box::pin(durable.into_actor(self).map(move |flushed, capture, ctx| {
            capture.flush_answered(ctx);
            flushed?;
            let ready = outcome.entries_ready();
            if ready > 0 {
                // The submitter learns the new entry (or a hold's end) without a tick.
                capture.behavior_hint(ready);
            }
            Ok(outcome)
        }))
    }
}

#[cfg(test)]
#[path = "commands_tests.rs"]
mod tests;
