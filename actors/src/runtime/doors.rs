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

/// A destination as the admin API shows it (docs/pull.md "Admin routes").
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DestinationSnapshot {
    pub name: String,
    pub kind: String,
    /// `running` or `paused`.
    pub state: &'static str,
    pub checkpoint: u64,
    /// The change log's newest sequence number.
    pub head: u64,
    /// Changes after the checkpoint (some may be skipped rather than delivered).
    pub pending: u64,
    pub lag_seconds: f64,
    pub counts: crate::store::pull_ops::DestinationState,
    pub live: crate::pull::DestinationLive,
}

/// Why a destination command was refused.
#[derive(Debug, thiserror::Error)]
pub enum DestinationCommandError {
    #[error("no destination `{0}`")]
    Unknown(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl TenantHandle {
    /// The tenant's destinations with their checkpoints, lag and counts.
    pub fn destinations(&self) -> Result<Vec<DestinationSnapshot>, StoreError> {
        let store = self.shared.tenant_store();
        let head = store.change_log_head()?;
        let live = self
            .shared
            .destination_live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let now_ms = self.shared.clock.now_ms();
        self.shared
            .destinations()
            .iter()
            .map(|spec| {
                let checkpoint = store.destination_checkpoint(&spec.name)?.seq;
                let oldest = store
                    .changes_after(checkpoint, 1)?
                    .first()
                    .map(|change| change.received_ms);
                Ok(DestinationSnapshot {
                    name: spec.name.clone(),
                    kind: spec.kind.clone(),
                    state: if store.destination_paused(&spec.name)? {
                        "paused"
                    } else {
                        "running"
                    },
                    checkpoint,
                    head,
                    pending: head.saturating_sub(checkpoint),
                    lag_seconds: oldest
                        .map_or(0.0, |at| now_ms.saturating_sub(at) as f64 / 1_000.0),
                    counts: store.destination_state(&spec.name)?,
                    live: live.get(&spec.name).cloned().unwrap_or_default(),
                })
            })
            .collect()
    }

    /// Pauses, resumes or replays a destination; resolves once the change is durable. A
    /// replay moves the checkpoint back to just before the first change received at or after
    /// `from_ms` (to the log's head when none was).
    pub fn destination_command(
        &self,
        name: &str,
        action: crate::pull::DestinationAction,
    ) -> impl Future<Output = Result<(), DestinationCommandError>> + 'static {
        let shared = Arc::clone(&self.shared);
        let name = name.to_string();
        async move {
            if !shared.destinations().iter().any(|spec| spec.name == name) {
                return Err(DestinationCommandError::Unknown(name));
            }
            let store = shared.tenant_store();
            match action {
                crate::pull::DestinationAction::Pause => {
                    store.set_destination_paused(&name, true)?
                }
                crate::pull::DestinationAction::Resume => {
                    store.set_destination_paused(&name, false)?
                }
                crate::pull::DestinationAction::Replay { from_ms } => {
                    // A replay only moves back: a `from` after the checkpoint (or after every
                    // change) changes nothing, so no pending change is skipped.
                    let current = store.destination_checkpoint(&name)?.seq;
                    let to = match store.first_change_received_from(from_ms)? {
                        Some(seq) => (seq - 1).min(current),
                        None => current,
                    };
                    store.put_destination_checkpoint(
                        &name,
                        crate::store::pull_ops::DestinationCheckpoint { seq: to },
                    )?;
                }
            }
            shared.store().durable().await?;
            shared.pull_wake.notify_waiters();
            Ok(())
        }
    }

    /// A destination's dead letters (all destinations' when `None`), oldest first.
    pub fn destination_dead_letters(
        &self,
        destination: Option<&str>,
        after: Option<(&str, u64)>,
        limit: usize,
    ) -> Result<Vec<crate::store::pull_ops::DestinationDeadLetter>, StoreError> {
        self.shared
            .tenant_store()
            .destination_dead_letters(destination, after, limit)
    }

    /// Replays (`replay`) or discards a destination's dead letter; `false` when there is no
    /// such dead letter. Resolves once durable.
    pub fn settle_destination_dead_letter(
        &self,
        destination: &str,
        seq: u64,
        replay: bool,
    ) -> impl Future<Output = Result<bool, StoreError>> + 'static {
        let shared = Arc::clone(&self.shared);
        let destination = destination.to_string();
        async move {
            let found = shared.tenant_store().settle_destination_dead_letter(
                &destination,
                seq,
                replay,
                shared.clock.now_ms(),
            )?;
            shared.store().durable().await?;
            if found && replay {
                shared.pull_wake.notify_waiters();
            }
            Ok(found)
        }
    }

    /// Asks Inbound for a backstop poll now (its next tick starts it unless one runs);
    /// false when the tenant does not pull.
    pub fn request_backstop_poll(&self) -> bool {
        if !self.shared.settings().pull.enabled {
            return false;
        }
        self.shared
            .pull_poll_requested
            .store(true, std::sync::atomic::Ordering::Release);
        true
    }

    /// The change log's newest entries (newest last), for "where is my record?" and the demo.
    pub fn changes_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<crate::pull::StoredChange>, StoreError> {
        self.shared.tenant_store().changes_after(after, limit)
    }
}
