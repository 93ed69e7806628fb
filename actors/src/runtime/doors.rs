//! The tenant's doors for the HTTP layer: Virtuous facts go to Inbound, test hooks through
//! the handle. The `steward` crate's HTTP modules reach a tenant only through these and the
//! rest of [`TenantHandle`]; they never touch the store.

use std::future::Future;
use std::sync::Arc;

use super::TenantHandle;
use crate::gift_match::SourceNames;
use crate::messages::{DeliverVirtuous, DeliveryError, DeliveryReport};
use crate::observe::ActorKind;
use crate::store::{Lane, RecordKind, StoreError, Unconfirmed};
use crate::virtuous_event::VirtuousDelivery;

impl TenantHandle {
    /// Hands a parsed Virtuous delivery to the tenant's Inbound actor; resolves once what it
    /// changed (confirmations, kept events) is durable. A full Inbound mailbox answers
    /// [`DeliveryError::MailboxFull`] at once.
    pub fn deliver_virtuous(
        &self,
        delivery: VirtuousDelivery,
        names: SourceNames,
    ) -> impl Future<Output = Result<DeliveryReport, DeliveryError>> + 'static {
        let shared = Arc::clone(&self.shared);
        async move {
            let inbound = shared.addresses().inbound.map(|door| door.deliver);
            shared
                .send_through_door(ActorKind::Inbound, inbound, |guard| DeliverVirtuous {
                    delivery,
                    names,
                    guard,
                })
                .await
        }
    }

    /// Test hook: the store half of a submitter's completion for records a test sent to
    /// Virtuous itself — their queue entries removed (whatever the lane), the records
    /// `submitted` with an unconfirmed-index key. Durable before it resolves; returns how
    /// many records moved.
    pub async fn mark_submitted_for_test(
        &self,
        kind: RecordKind,
        source: &str,
        transaction_source: &str,
        source_ids: &[String],
    ) -> Result<u64, StoreError> {
        let tenant_store = self.shared.tenant_store();
        let now_ms = self.shared.clock.now_ms();
        let mut entries = Vec::new();
        for source_id in source_ids {
            if let Some(seq) = tenant_store
                .get_record(kind, source, source_id)?
                .and_then(|record| record.last_seq)
            {
                entries.extend(Lane::ALL.iter().map(|lane| (*lane, seq)));
            }
        }
        tenant_store.remove_queue_entries(&entries)?;
        let submitted: Vec<Unconfirmed> = source_ids
            .iter()
            .map(|source_id| Unconfirmed {
                kind,
                source: source.to_owned(),
                source_id: source_id.clone(),
                transaction_source: transaction_source.to_owned(),
                transaction_id: source_id.clone(),
                submitted_at_ms: now_ms,
            })
            .collect();
        let moved = tenant_store.mark_submitted(&submitted, now_ms)?;
        self.shared.store().durable().await?;
        Ok(moved)
    }
}

/// Test hooks of the admin API (`runtime.test_hooks`): each durable before it resolves.
impl TenantHandle {
    /// Entries and a checkpoint in one atomic write (as a poller advances its checkpoint).
    pub async fn enqueue_with_checkpoint_for_test(
        &self,
        entries: Vec<crate::store::NewEntry>,
        checkpoint_name: &str,
        checkpoint: &[u8],
    ) -> Result<Vec<crate::store::EnqueueOutcome>, StoreError> {
        let outcomes = self.shared.tenant_store().enqueue_with_checkpoint(
            entries,
            checkpoint_name,
            checkpoint,
        )?;
        self.shared.store().durable().await?;
        self.hint_work(outcomes.len() as u64);
        Ok(outcomes)
    }

    /// A checkpoint's stored value.
    pub fn checkpoint_for_test(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.shared.tenant_store().get_checkpoint(name)
    }

    /// Dead-letters the `count` oldest live-lane entries the way the submitter does for a
    /// permanent error; returns the dead letters' ids.
    pub async fn dead_letter_live_for_test(
        &self,
        count: usize,
        status: Option<u16>,
        reason: &str,
    ) -> Result<Vec<u64>, StoreError> {
        let tenant_store = self.shared.tenant_store();
        let now_ms = self.shared.clock.now_ms();
        let mut ids = Vec::new();
        for (seq, _) in tenant_store.scan_lane(Lane::Live, count)? {
            if let Some(dead) =
                tenant_store.dead_letter_queued_entry(Lane::Live, seq, status, reason, now_ms)?
            {
                ids.push(dead.id);
            }
        }
        self.shared.entries_dead_lettered(ids.len() as u64, now_ms);
        self.shared.store().durable().await?;
        Ok(ids)
    }
}

impl TenantHandle {
    /// A test-mode event this tenant ignores (it does not accept them): counted in its
    /// status, and the one-time hint alert `test_events_ignored`.
    pub fn test_event_ignored(&self) {
        self.shared.test_event_ignored(self.shared.clock.now_ms());
    }

    /// Hands a source fact (alert, event mark, hold, link part) to Capture; resolves once
    /// what it changed is durable. Back-pressure as [`TenantHandle::enqueue`].
    pub fn record_fact(
        &self,
        fact: crate::source_fact::SourceFact,
    ) -> impl Future<Output = Result<crate::source_fact::FactOutcome, crate::messages::EnqueueError>>
           + 'static {
        let shared = Arc::clone(&self.shared);
        async move {
            let capture = shared.addresses().capture.map(|door| door.record_fact);
            shared
                .send_through_door(ActorKind::Capture, capture, |guard| {
                    crate::source_fact::RecordFact { fact, guard }
                })
                .await
        }
    }
}

impl TenantHandle {
    /// The tenant's pollers (docs/polling.md "Admin routes").
    pub fn pollers(&self) -> Result<Vec<crate::poll::PollerSnapshot>, StoreError> {
        let store = self.shared.tenant_store();
        let live = self.shared.poll_live();
        self.shared
            .pollers()
            .iter()
            .map(|spec| {
                let source = &spec.settings.source;
                Ok(crate::poll::PollerSnapshot {
                    settings: spec.settings.clone(),
                    state: store.poller_state(source)?,
                    progress: store.poll_progress(source)?,
                    last_run: store.poll_runs(source, 1)?.into_iter().next(),
                    live: live.get(source).cloned().unwrap_or_default(),
                })
            })
            .collect()
    }

    /// A poller's run reports, newest first.
    pub fn poll_runs(
        &self,
        source: &str,
        limit: usize,
    ) -> Result<Vec<crate::store::poll_ops::RunReport>, StoreError> {
        self.shared.tenant_store().poll_runs(source, limit)
    }

    /// The parity facts of a hybrid source first seen in `[from_ms, to_ms)`.
    pub fn parity_facts(
        &self,
        source: &str,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<crate::store::poll_ops::ParityFact>, StoreError> {
        self.shared
            .tenant_store()
            .parity_facts(source, from_ms, to_ms)
    }

    /// Asks Capture to run, pause, resume or reset a poller; resolves once the change is
    /// durable.
    pub fn poll_command(
        &self,
        source: &str,
        action: crate::poll::PollAction,
    ) -> impl Future<Output = Result<(), crate::poll::PollCommandError>> + 'static {
        let shared = Arc::clone(&self.shared);
        let source = source.to_string();
        async move {
            let capture = shared.addresses().capture.map(|door| door.poll);
            shared
                .send_through_door(ActorKind::Capture, capture, |guard| {
                    crate::poll::PollCommand {
                        source: Some(source),
                        action,
                        guard,
                    }
                })
                .await
        }
    }
}
