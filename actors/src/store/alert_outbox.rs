//! Alert notifications on their way to the configured sinks (docs/operations.md "Alerting").
//!
//! An alert that opens or resolves writes its notice into its owner's outbox **in the same
//! atomic sled batch** as the alert's own change ([`AlertSpace`]): a crash keeps both or
//! neither, never the alert without its notice. Owners are the tenants (section
//! `ALERT_OUTBOX` of their key space) and the process itself (`process_alerts.rs`). The
//! process-wide dispatcher (`crate::alerting`) reads the outboxes, claims a notice before its
//! first attempt, and removes it once every sink took it or gave up.
//!
//! The cooldown (`alerts.cooldown_s`, per owner and code) bounds the notices of a flapping
//! alert without ever leaving the sinks with a wrong picture: a **resolve is held** until
//! the cooldown since the raise it answers has passed; an alert that reopens while its
//! resolve is still held **withdraws** that resolve and sends no new raise (the sinks still
//! believe it open, which it is). So at most one `alert.raised` per code and cooldown, and
//! the last notice sent always matches the alert's state.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::codec::{decode, encode};
use super::keys::{section, KeySpace};
use super::pull_ops::{from_json, to_json};
use super::{io_error, Alert, AlertState, Store, StoreError, TenantStore};

/// Most notices waiting per owner (a limit on everything): past it a new notice is dropped,
/// counted (`steward_alert_notices_total{outcome="dropped"}`) and logged.
pub const NOTICES_PER_OWNER_MAX: usize = 1_000;

/// Whose alert a notice tells of.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NoticeOwner {
    /// The process's own alerts (disk nearly full, store failed).
    Process,
    Tenant(String),
}

impl NoticeOwner {
    pub fn tenant_id(&self) -> Option<&str> {
        match self {
            NoticeOwner::Process => None,
            NoticeOwner::Tenant(id) => Some(id),
        }
    }
}

/// What happened to the alert. The names are the payload's `event`: never rename them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeEvent {
    Raised,
    Resolved,
}

impl NoticeEvent {
    /// The `event` of a notification's payload.
    pub fn name(self) -> &'static str {
        match self {
            NoticeEvent::Raised => "alert.raised",
            NoticeEvent::Resolved => "alert.resolved",
        }
    }
}

/// One stored notification (JSON: it can grow fields without a migration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertNotice {
    pub event: NoticeEvent,
    pub code: String,
    pub message: String,
    /// When the alert opened, or when its condition cleared.
    pub at_ms: u64,
    /// Not sent before this: a resolve waits until the cooldown since its raise has passed.
    pub not_before_ms: u64,
    /// Set under the owner's write lock before the first attempt: from then on a reopening
    /// alert no longer withdraws it.
    #[serde(default)]
    pub claimed: bool,
}

/// A notice and where it waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedNotice {
    pub owner: NoticeOwner,
    /// Its key in the owner's outbox (`Db::generate_id`: unique in the store, increasing).
    pub seq: u64,
    pub notice: AlertNotice,
}

/// What the sinks were last told of one code (the cooldown's memory).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct NoticeState {
    /// When the last `alert.raised` was queued; `None`: none stands (nothing to resolve).
    raised_at_ms: Option<u64>,
    /// The resolve queued for that raise, while it may still be waiting.
    resolve_seq: Option<u64>,
}

/// How alerts are notified (from `[alerts]`); none: no sink is configured, nothing is queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoticePolicy {
    /// A resolve is held until this long after the raise it answers (`alerts.cooldown_s`).
    pub cooldown_ms: u64,
}

/// The outbox's shared side: the policy, the dispatcher's wake-up and the owners that
/// queued or withdrew notices since the dispatcher last looked. Tenant code only marks and
/// wakes; it never waits for the dispatcher.
#[derive(Default)]
pub struct AlertOutbox {
    policy: Option<NoticePolicy>,
    wake: tokio::sync::Notify,
    marked: Mutex<BTreeSet<NoticeOwner>>,
}

impl AlertOutbox {
    pub(crate) fn new(policy: Option<NoticePolicy>) -> AlertOutbox {
        AlertOutbox {
            policy,
            ..AlertOutbox::default()
        }
    }

    pub fn policy(&self) -> Option<NoticePolicy> {
        self.policy
    }

    /// Resolves once a notice was queued or withdrawn after the last [`Self::take_marked`]
    /// (a wake-up given while nobody waited is kept for the next wait).
    pub async fn changed(&self) {
        self.wake.notified().await;
    }

    /// The owners whose outbox changed since the last call.
    pub fn take_marked(&self) -> BTreeSet<NoticeOwner> {
        std::mem::take(&mut *self.marked.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn mark(&self, owner: &NoticeOwner) {
        self.marked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(owner.clone());
        self.wake.notify_one();
    }
}

/// What an alert change did to the outbox (the `outcome` label of
/// `steward_alert_notices_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Noted {
    /// No policy, or nothing to tell (a resolve with no raise standing).
    Nothing,
    Queued,
    /// A reopening within the cooldown withdrew the held resolve: nothing is sent.
    Suppressed,
    /// The outbox was full.
    Dropped,
}

/// An owner's alerts: the tree and key space they live in, and the outbox they notify
/// through. Its methods run under the owner's write lock.
pub(crate) struct AlertSpace<'a> {
    pub(crate) owner: NoticeOwner,
    pub(crate) db: &'a sled::Db,
    pub(crate) tree: &'a super::gate::GatedTree,
    pub(crate) keys: &'a KeySpace,
    pub(crate) outbox: &'a AlertOutbox,
}

impl AlertSpace<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<sled::IVec>, StoreError> {
        self.tree.get(key).map_err(io_error)
    }

    /// Raises (or bumps) `code`, its notice in the same batch; true when the alert opens:
    /// the first time, or again after it was resolved (reopened: `resolved_at` and
    /// `acked_at` cleared, the count goes on). A repeat while open only bumps the count.
    pub(crate) fn raise(&self, code: &str, message: &str, now_ms: u64) -> Result<bool, StoreError> {
        let key = self.keys.alert(code);
        let state_key = self.keys.alert_state(code);
        let (alert, mut opens) = match self.get(&key)? {
            Some(bytes) => {
                let mut alert: Alert = decode(&bytes)?;
                alert.count += 1;
                alert.last_at_ms = now_ms;
                alert.message = message.to_owned();
                (alert, false)
            }
            None => {
                let alert = Alert {
                    code: code.to_owned(),
                    message: message.to_owned(),
                    first_at_ms: now_ms,
                    last_at_ms: now_ms,
                    count: 1,
                };
                (alert, true)
            }
        };
        let mut batch = sled::Batch::default();
        batch.insert(key, encode(&alert)?);
        // Reopened: its lifecycle starts over (no state stored = open, not acknowledged).
        let state = match self.get(&state_key)? {
            Some(bytes) => Some(decode::<AlertState>(&bytes)?),
            None => None,
        };
        if state.is_some_and(|state| state.resolved_at_ms.is_some()) {
            opens = true;
        }
        if opens && state.is_some() {
            batch.remove(state_key);
        }
        let noted = if opens {
            self.note(&mut batch, NoticeEvent::Raised, code, message, now_ms)?
        } else {
            Noted::Nothing
        };
        self.tree.apply_batch(batch).map_err(io_error)?;
        self.announce(noted, code);
        Ok(opens)
    }

    /// Marks the open alert `code` resolved at `now_ms`, its notice in the same batch; true
    /// when it changed (false: never raised, or already resolved).
    pub(crate) fn resolve(&self, code: &str, now_ms: u64) -> Result<bool, StoreError> {
        let Some(alert_bytes) = self.get(&self.keys.alert(code))? else {
            return Ok(false);
        };
        let state_key = self.keys.alert_state(code);
        let mut state = match self.get(&state_key)? {
            Some(bytes) => decode::<AlertState>(&bytes)?,
            None => AlertState::default(),
        };
        if state.resolved_at_ms.is_some() {
            return Ok(false);
        }
        state.resolved_at_ms = Some(now_ms);
        let mut batch = sled::Batch::default();
        batch.insert(state_key, encode(&state)?);
        let alert: Alert = decode(&alert_bytes)?;
        let noted = self.note(
            &mut batch,
            NoticeEvent::Resolved,
            code,
            &alert.message,
            now_ms,
        )?;
        self.tree.apply_batch(batch).map_err(io_error)?;
        self.announce(noted, code);
        Ok(true)
    }

    fn notice_state(&self, code: &str) -> Result<NoticeState, StoreError> {
        match self.get(&self.keys.alert_notice_state(code))? {
            Some(bytes) => from_json("alert notice state", &bytes),
            None => Ok(NoticeState::default()),
        }
    }

    /// The notice of an alert change. Opening: withdraw a resolve still held for the
    /// standing raise (suppressed), or queue `alert.raised`. Resolving: queue
    /// `alert.resolved`, held until the cooldown since the standing raise has passed —
    /// nothing when no raise stands (sinks were configured after it, or it was dropped).
    fn note(
        &self,
        batch: &mut sled::Batch,
        event: NoticeEvent,
        code: &str,
        message: &str,
        now_ms: u64,
    ) -> Result<Noted, StoreError> {
        let Some(policy) = self.outbox.policy else {
            return Ok(Noted::Nothing);
        };
        let mut state = self.notice_state(code)?;
        let (queued, state) = match event {
            NoticeEvent::Raised => {
                if let Some(seq) = state.resolve_seq {
                    let held = match self.get(&self.keys.alert_notice(seq))? {
                        Some(bytes) => !from_json::<AlertNotice>("alert notice", &bytes)?.claimed,
                        None => false,
                    };
                    if held {
                        batch.remove(self.keys.alert_notice(seq));
                        state.resolve_seq = None;
                        batch.insert(self.keys.alert_notice_state(code), to_json(&state)?);
                        return Ok(Noted::Suppressed);
                    }
                }
                let queued = self.queue_notice(batch, event, code, message, now_ms, now_ms)?;
                let state = NoticeState {
                    raised_at_ms: queued.is_some().then_some(now_ms),
                    resolve_seq: None,
                };
                (queued, state)
            }
            NoticeEvent::Resolved => {
                let (Some(raised_at_ms), None) = (state.raised_at_ms, state.resolve_seq) else {
                    return Ok(Noted::Nothing);
                };
                let not_before_ms = now_ms.max(raised_at_ms.saturating_add(policy.cooldown_ms));
                let queued =
                    self.queue_notice(batch, event, code, message, now_ms, not_before_ms)?;
                if queued.is_none() {
                    return Ok(Noted::Dropped);
                }
                state.resolve_seq = queued;
                (queued, state)
            }
        };
        batch.insert(self.keys.alert_notice_state(code), to_json(&state)?);
        Ok(match queued {
            Some(_) => Noted::Queued,
            None => Noted::Dropped,
        })
    }

    /// Adds a notice to the batch under a new seq; `None` when the outbox is full.
    fn queue_notice(
        &self,
        batch: &mut sled::Batch,
        event: NoticeEvent,
        code: &str,
        message: &str,
        at_ms: u64,
        not_before_ms: u64,
    ) -> Result<Option<u64>, StoreError> {
        let waiting = self
            .tree
            .scan_prefix(self.keys.section_prefix(section::ALERT_OUTBOX))
            .keys()
            .take(NOTICES_PER_OWNER_MAX)
            .count();
        if waiting >= NOTICES_PER_OWNER_MAX {
            return Ok(None);
        }
        let notice = AlertNotice {
            event,
            code: code.to_owned(),
            message: message.to_owned(),
            at_ms,
            not_before_ms,
            claimed: false,
        };
        let seq = self.db.generate_id().map_err(io_error)?;
        batch.insert(self.keys.alert_notice(seq), to_json(&notice)?);
        Ok(Some(seq))
    }

    /// After the batch is applied: count, and wake the dispatcher for a change it must see.
    fn announce(&self, noted: Noted, code: &str) {
        let outcome = match noted {
            Noted::Nothing => return,
            Noted::Queued => "queued",
            Noted::Suppressed => "suppressed",
            Noted::Dropped => {
                tracing::warn!(tenant_id = ?self.owner.tenant_id(), alert = code, limit = NOTICES_PER_OWNER_MAX, "alert notice dropped: the outbox is full (are the sinks reachable?)");
                "dropped"
            }
        };
        metrics::counter!(
            crate::metrics::ALERT_NOTICES_TOTAL,
            crate::metrics::LABEL_OUTCOME => outcome
        )
        .increment(1);
        if matches!(noted, Noted::Queued | Noted::Suppressed) {
            self.outbox.mark(&self.owner);
        }
    }

    /// The waiting notices, oldest first.
    pub(crate) fn notices(&self) -> Result<Vec<QueuedNotice>, StoreError> {
        let mut notices = Vec::new();
        for item in self
            .tree
            .scan_prefix(self.keys.section_prefix(section::ALERT_OUTBOX))
        {
            let (key, bytes) = item.map_err(io_error)?;
            let seq = self
                .keys
                .seq_of_alert_notice_key(&key)
                .ok_or_else(|| StoreError::Codec(format!("malformed outbox key {key:?}")))?;
            notices.push(QueuedNotice {
                owner: self.owner.clone(),
                seq,
                notice: from_json("alert notice", &bytes)?,
            });
        }
        Ok(notices)
    }

    /// Marks the notice claimed (a reopening no longer withdraws it); `None` when it is gone
    /// (withdrawn, or its owner deleted).
    pub(crate) fn claim(&self, seq: u64) -> Result<Option<AlertNotice>, StoreError> {
        let key = self.keys.alert_notice(seq);
        let Some(bytes) = self.get(&key)? else {
            return Ok(None);
        };
        let mut notice: AlertNotice = from_json("alert notice", &bytes)?;
        if !notice.claimed {
            notice.claimed = true;
            self.tree.insert(key, to_json(&notice)?).map_err(io_error)?;
        }
        Ok(Some(notice))
    }

    pub(crate) fn remove(&self, seq: u64) -> Result<(), StoreError> {
        self.tree
            .remove(self.keys.alert_notice(seq))
            .map_err(io_error)?;
        Ok(())
    }
}

impl TenantStore {
    /// This tenant's notices waiting for the sinks, oldest first.
    pub fn alert_notices(&self) -> Result<Vec<QueuedNotice>, StoreError> {
        let inner = self.inner();
        inner.settle()?;
        inner.alert_space().notices()
    }
}

impl Store {
    /// The outbox's shared side (the dispatcher waits on it).
    pub fn alert_outbox(&self) -> Arc<AlertOutbox> {
        Arc::clone(&self.inner.alert_outbox)
    }

    /// Every waiting notice: the process's, then each registered tenant's (not a `moved`
    /// one's), oldest first per
    /// owner. A scan of every tenant: at start and now and then, not per notice.
    pub fn all_alert_notices(&self) -> Result<Vec<QueuedNotice>, StoreError> {
        let mut notices = self.alert_notices_of(&NoticeOwner::Process)?;
        for record in self.registry().list()? {
            // A moved tenant's notices went with its export: the instance that has it sends
            // them.
            if record.run_state() == super::TenantRunState::Moved {
                continue;
            }
            notices.extend(self.alert_notices_of(&NoticeOwner::Tenant(record.id))?);
        }
        Ok(notices)
    }

    /// One owner's waiting notices (none for a tenant no longer registered).
    pub fn alert_notices_of(&self, owner: &NoticeOwner) -> Result<Vec<QueuedNotice>, StoreError> {
        self.with_alert_space(owner, |space| space.notices())
            .map(Option::unwrap_or_default)
    }

    /// Claims a notice before its first attempt; `None`: it is gone (withdrawn by a
    /// reopening alert, or its tenant deleted) and must not be sent.
    pub fn claim_alert_notice(
        &self,
        owner: &NoticeOwner,
        seq: u64,
    ) -> Result<Option<AlertNotice>, StoreError> {
        self.with_alert_space(owner, |space| space.claim(seq))
            .map(Option::flatten)
    }

    /// Removes a notice every sink took or gave up on (not flushed: a crash may send it
    /// again — delivery is at least once).
    pub fn remove_alert_notice(&self, owner: &NoticeOwner, seq: u64) -> Result<(), StoreError> {
        self.with_alert_space(owner, |space| space.remove(seq))
            .map(|_| ())
    }

    /// Runs `action` on the owner's alert space under its write lock; `None` for a tenant
    /// that is no longer registered (its handle is not reopened).
    fn with_alert_space<T>(
        &self,
        owner: &NoticeOwner,
        action: impl FnOnce(&AlertSpace<'_>) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        match owner {
            NoticeOwner::Process => self.with_process_alerts(action).map(Some),
            NoticeOwner::Tenant(tenant_id) => {
                if self.registry().get(tenant_id)?.is_none() {
                    return Ok(None);
                }
                let tenant = self.tenant(tenant_id)?;
                let inner = tenant.inner();
                let _guard = inner.lock_for_write()?;
                action(&inner.alert_space()).map(Some)
            }
        }
    }
}
