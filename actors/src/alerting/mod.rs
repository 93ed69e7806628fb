//! The alert dispatcher (docs/operations.md "Alerting"): one task per process, on no
//! tenant's actor and awaited by no tenant code, that delivers the notices of the store's
//! outboxes (`store::alert_outbox`) to the configured sinks.
//!
//! # How it works
//! - **Reading.** At start and every [`DispatcherSettings::rescan_interval`] it scans every
//!   outbox (the process's and each registered tenant's); in between, an alert change wakes
//!   it and it reads the outboxes that changed.
//! - **Delivering.** Each sink (the [`AlertSink`] port; adapters in the `steward` crate) has
//!   at most one attempt in flight, so a slow or dead sink never holds up another. A sink
//!   takes the oldest due notice whose code it accepts, skipping one whose earlier notice of
//!   the same owner and code it has not finished (a resolve never overtakes its raise).
//!   Before its first attempt a notice is **claimed** in the store: a notice withdrawn by a
//!   reopening alert is never sent.
//! - **Retrying.** Per notice and sink, on [`crate::retry`]'s schedule (jitter,
//!   `Retry-After` as a floor); a refusal or a spent schedule gives that sink up on that
//!   notice (counted, logged at ERROR). A notice leaves the outbox once every sink that
//!   accepts its code delivered it or gave up: delivery is at least once (a crash before the
//!   removal is flushed sends it again, with the same id).
//! - **A failed store** (`Store::failure`: a write group or a flush failed; the store takes
//!   no write until a restart) cannot hold a notice: `store_failed` is told from memory,
//!   once per process, and is lost if the process dies before a sink takes it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::ports::{now_ms, LocalFuture};
use crate::retry::{next_attempt_delay, RetrySchedule};
use crate::store::{AlertOutbox, NoticeEvent, NoticeOwner, QueuedNotice, Store};

/// The code of the notice told from memory when the store fails.
pub const STORE_FAILED_ALERT: &str = "store_failed";
/// The process alert of a data dir whose filesystem is nearly full (raised by the `steward`
/// crate, which looks at the disk).
pub const DISK_NEARLY_FULL_ALERT: &str = "disk_nearly_full";

/// Every alert code, tenants' and the process's (the `codes` a sink may filter on; the
/// tables of docs/operations.md "Alerts" and "Alerting" list the same, a test checks it).
pub const ALERT_CODES: [&str; 25] = [
    "auth_failed",
    "crm_misconfigured",
    "crm_unreachable",
    "dead_letters",
    "destination_failing",
    "duplicate_gift",
    "needs_review",
    "stripe_partial_refund",
    "stripe_dispute_funds_withdrawn",
    "stripe_event_rejected",
    "platform_event_rejected",
    "subscription_link_late",
    "embedded_sandbox_missing",
    "test_events_ignored",
    "poller_failed",
    "poller_auth_failed",
    "webhooks_missed",
    "source_gift_changed",
    "source_gift_deleted",
    "cdc_slot_lost",
    "cdc_slot_lag",
    "money_mismatch",
    "config_invalid",
    DISK_NEARLY_FULL_ALERT,
    STORE_FAILED_ALERT,
];

/// What a sink is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The same on every attempt and after a restart: receivers deduplicate by it.
    pub id: String,
    /// `None`: one of the process's own alerts.
    pub tenant_id: Option<String>,
    pub event: NoticeEvent,
    pub code: String,
    pub message: String,
    /// When the alert opened or resolved.
    pub at_ms: u64,
}

/// A sink's answer to one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkVerdict {
    Delivered,
    /// Refused for good (a 4xx that says the request is wrong): this sink gives the notice up.
    Refused(String),
    /// Not now: tried again on the schedule (`retry_after_ms` as a floor).
    RetryLater {
        reason: String,
        retry_after_ms: Option<u64>,
    },
}

/// An alert sink (adapters in the `steward` crate: `webhook`, `slack`). Futures run on the
/// dispatcher's arbiter; implementations set their own request timeout and never panic.
pub trait AlertSink: 'static {
    /// The sink's kind: the `sink` label of the metrics.
    fn kind(&self) -> &'static str;
    /// Whether the sink takes notices of `code` (its `codes` filter; all when it has none).
    fn accepts(&self, code: &str) -> bool;
    fn send(&self, notification: &Notification) -> LocalFuture<SinkVerdict>;
}

/// The dispatcher's timing.
#[derive(Debug, Clone)]
pub struct DispatcherSettings {
    /// Waits between attempts of one notice at one sink (`alerts.retry_schedule`).
    pub schedule: RetrySchedule,
    /// Spread of each wait, as a fraction (0.2 = ±20 %).
    pub jitter_fraction: f64,
    /// An attempt not answered by then counts as failed (the sinks' own timeout is shorter).
    pub attempt_timeout: Duration,
    /// Every outbox is read again this often (nothing is trusted to wake-ups alone).
    pub rescan_interval: Duration,
    /// How often the store's failure is looked at.
    pub store_check_interval: Duration,
}

impl Default for DispatcherSettings {
    fn default() -> Self {
        DispatcherSettings {
            schedule: RetrySchedule::default(),
            jitter_fraction: crate::retry::DEFAULT_JITTER_FRACTION,
            attempt_timeout: Duration::from_secs(15),
            rescan_interval: Duration::from_secs(60),
            store_check_interval: Duration::from_secs(5),
        }
    }
}

/// Where a notice waits; ordered by seq (the order notices were written).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct NoticeKey {
    seq: u64,
    owner: NoticeOwner,
    /// Held in memory only (the store failed): never claimed nor removed in the store.
    in_memory: bool,
}

/// One sink's progress on one notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    /// The sink's `codes` leave this notice out.
    NotForThisSink,
    Waiting {
        failed_attempts: u32,
        retry_at_ms: u64,
    },
    InFlight {
        failed_attempts: u32,
    },
    /// Delivered, or given up.
    Finished,
}

struct Pending {
    notification: Notification,
    not_before_ms: u64,
    claimed: bool,
    /// One per sink, in the sinks' order.
    progress: Vec<Progress>,
}

/// One attempt's answer, as it comes back from its task.
struct AttemptDone {
    key: NoticeKey,
    sink_index: usize,
    verdict: SinkVerdict,
}

/// The process's alert dispatcher; [`Dispatcher::spawn`] runs it.
pub struct Dispatcher {
    store: Store,
    outbox: Arc<AlertOutbox>,
    sinks: Vec<Arc<dyn AlertSink>>,
    settings: DispatcherSettings,
    pending: BTreeMap<NoticeKey, Pending>,
    /// Finished notices whose removal from the store failed: not read back in.
    finished_unremoved: BTreeSet<NoticeKey>,
    store_failure_told: bool,
    done_tx: mpsc::UnboundedSender<AttemptDone>,
    done_rx: mpsc::UnboundedReceiver<AttemptDone>,
}

impl Dispatcher {
    pub fn new(
        store: Store,
        sinks: Vec<Arc<dyn AlertSink>>,
        settings: DispatcherSettings,
    ) -> Dispatcher {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Dispatcher {
            outbox: store.alert_outbox(),
            store,
            sinks,
            settings,
            pending: BTreeMap::new(),
            finished_unremoved: BTreeSet::new(),
            store_failure_told: false,
            done_tx,
            done_rx,
        }
    }

    /// Runs the dispatcher on the current arbiter until the process ends.
    pub fn spawn(self) {
        actix::spawn(self.run());
    }

    async fn run(mut self) {
        let mut next_full_scan_ms = 0;
        loop {
            let now = now_ms();
            if now >= next_full_scan_ms {
                self.outbox.take_marked();
                self.read_all();
                next_full_scan_ms = now + self.settings.rescan_interval.as_millis() as u64;
            } else {
                self.read_marked();
            }
            self.check_store();
            self.start_due_attempts(now);
            metrics::gauge!(crate::metrics::ALERT_OUTBOX_DEPTH).set(self.pending.len() as f64);
            let wake_at_ms = self
                .next_due_ms()
                .unwrap_or(u64::MAX)
                .min(next_full_scan_ms)
                .min(now + self.settings.store_check_interval.as_millis() as u64);
            let sleep = Duration::from_millis(wake_at_ms.saturating_sub(now));
            tokio::select! {
                () = self.outbox.changed() => {}
                Some(done) = self.done_rx.recv() => self.settle(done, now_ms()),
                () = tokio::time::sleep(sleep) => {}
            }
        }
    }

    /// Every outbox: notices no longer stored are forgotten (withdrawn, or their tenant
    /// deleted), new ones added, known ones keep their progress.
    fn read_all(&mut self) {
        match self.store.all_alert_notices() {
            Ok(notices) => self.merge(notices, |_| true),
            Err(error) => tracing::warn!(error = %error, "alert outboxes could not be read"),
        }
    }

    /// The outboxes that changed since the last look.
    fn read_marked(&mut self) {
        for owner in self.outbox.take_marked() {
            match self.store.alert_notices_of(&owner) {
                Ok(notices) => self.merge(notices, |key| key.owner == owner),
                Err(error) => {
                    tracing::warn!(tenant_id = ?owner.tenant_id(), error = %error, "alert outbox could not be read")
                }
            }
        }
    }

    /// Takes `notices` as the whole stored truth for the keys `covered` selects.
    fn merge(&mut self, notices: Vec<QueuedNotice>, covered: impl Fn(&NoticeKey) -> bool) {
        let mut stored = BTreeSet::new();
        for queued in notices {
            let key = NoticeKey {
                seq: queued.seq,
                owner: queued.owner.clone(),
                in_memory: false,
            };
            stored.insert(key.clone());
            if self.pending.contains_key(&key) || self.finished_unremoved.contains(&key) {
                continue;
            }
            let notification = notification_of(&queued);
            let progress = self.progress_for(&notification.code);
            self.pending.insert(
                key,
                Pending {
                    notification,
                    not_before_ms: queued.notice.not_before_ms,
                    claimed: queued.notice.claimed,
                    progress,
                },
            );
        }
        // A notice in flight stays until its attempt is settled.
        self.pending.retain(|key, pending| {
            key.in_memory
                || !covered(key)
                || stored.contains(key)
                || pending
                    .progress
                    .iter()
                    .any(|progress| matches!(progress, Progress::InFlight { .. }))
        });
    }

    fn progress_for(&self, code: &str) -> Vec<Progress> {
        self.sinks
            .iter()
            .map(|sink| match sink.accepts(code) {
                true => Progress::Waiting {
                    failed_attempts: 0,
                    retry_at_ms: 0,
                },
                false => Progress::NotForThisSink,
            })
            .collect()
    }

    /// A failed store is told once, from memory (it cannot hold the notice).
    fn check_store(&mut self) {
        if self.store_failure_told {
            return;
        }
        let Some(failure) = self.store.failure() else {
            return;
        };
        self.store_failure_told = true;
        let at_ms = now_ms();
        tracing::error!(alert = STORE_FAILED_ALERT, error = %failure, "store failed: it takes no write until a restart; telling the alert sinks from memory");
        metrics::counter!(crate::metrics::ALERT_NOTICES_TOTAL, crate::metrics::LABEL_OUTCOME => "unstored").increment(1);
        let notification = Notification {
            id: format!("process-{STORE_FAILED_ALERT}-{at_ms}"),
            tenant_id: None,
            event: NoticeEvent::Raised,
            code: STORE_FAILED_ALERT.to_owned(),
            message: format!(
                "the store failed and takes no write until Steward is restarted: {failure}"
            ),
            at_ms,
        };
        let progress = self.progress_for(STORE_FAILED_ALERT);
        self.pending.insert(
            NoticeKey {
                seq: 0,
                owner: NoticeOwner::Process,
                in_memory: true,
            },
            Pending {
                notification,
                not_before_ms: 0,
                claimed: true,
                progress,
            },
        );
    }

    /// Starts, for each idle sink, its next due notice.
    fn start_due_attempts(&mut self, now_ms: u64) {
        for sink_index in 0..self.sinks.len() {
            let busy = self
                .pending
                .values()
                .any(|pending| matches!(pending.progress[sink_index], Progress::InFlight { .. }));
            if busy {
                continue;
            }
            while let Some(key) = self.next_for(sink_index, now_ms) {
                if self.claim(&key) {
                    self.start_attempt(key, sink_index);
                    break;
                }
            }
        }
    }

    /// The oldest due notice of the sink whose earlier notices of the same owner and code
    /// the sink has finished.
    fn next_for(&self, sink_index: usize, now_ms: u64) -> Option<NoticeKey> {
        let mut unfinished_codes: BTreeSet<(&NoticeOwner, &str)> = BTreeSet::new();
        for (key, pending) in &self.pending {
            let progress = pending.progress[sink_index];
            let waiting = match progress {
                Progress::NotForThisSink | Progress::Finished => continue,
                Progress::InFlight { .. } => return None,
                Progress::Waiting { retry_at_ms, .. } => retry_at_ms,
            };
            let code = (&key.owner, pending.notification.code.as_str());
            let blocked = !unfinished_codes.insert(code);
            if !blocked && waiting <= now_ms && pending.not_before_ms <= now_ms {
                return Some(key.clone());
            }
        }
        None
    }

    /// Claims a stored notice before its first attempt; false (and forgotten) when it was
    /// withdrawn. A store that cannot be written withdraws nothing: the notice is sent.
    fn claim(&mut self, key: &NoticeKey) -> bool {
        let Some(pending) = self.pending.get_mut(key) else {
            return false;
        };
        if pending.claimed {
            return true;
        }
        match self.store.claim_alert_notice(&key.owner, key.seq) {
            Ok(Some(_)) => {
                pending.claimed = true;
                true
            }
            Ok(None) => {
                self.pending.remove(key);
                false
            }
            Err(error) => {
                tracing::warn!(tenant_id = ?key.owner.tenant_id(), error = %error, "alert notice could not be claimed; sending it");
                pending.claimed = true;
                true
            }
        }
    }

    fn start_attempt(&mut self, key: NoticeKey, sink_index: usize) {
        let Some(pending) = self.pending.get_mut(&key) else {
            return;
        };
        let Progress::Waiting {
            failed_attempts, ..
        } = pending.progress[sink_index]
        else {
            return;
        };
        pending.progress[sink_index] = Progress::InFlight { failed_attempts };
        let sending = self.sinks[sink_index].send(&pending.notification);
        let timeout = self.settings.attempt_timeout;
        let done_tx = self.done_tx.clone();
        actix::spawn(async move {
            let verdict = tokio::time::timeout(timeout, sending)
                .await
                .unwrap_or_else(|_| SinkVerdict::RetryLater {
                    reason: format!("no answer within {} s", timeout.as_secs()),
                    retry_after_ms: None,
                });
            let _ = done_tx.send(AttemptDone {
                key,
                sink_index,
                verdict,
            });
        });
    }

    /// Records an attempt's answer; a notice every sink finished leaves the outbox.
    fn settle(&mut self, done: AttemptDone, now_ms: u64) {
        let AttemptDone {
            key,
            sink_index,
            verdict,
        } = done;
        let kind = self.sinks[sink_index].kind();
        let Some(pending) = self.pending.get_mut(&key) else {
            return;
        };
        let Progress::InFlight { failed_attempts } = pending.progress[sink_index] else {
            return;
        };
        let notification = &pending.notification;
        let count = |outcome: &'static str| {
            metrics::counter!(
                crate::metrics::ALERT_NOTIFICATIONS_TOTAL,
                crate::metrics::LABEL_SINK => kind,
                crate::metrics::LABEL_OUTCOME => outcome
            )
            .increment(1);
        };
        pending.progress[sink_index] = match verdict {
            SinkVerdict::Delivered => {
                count("sent");
                tracing::info!(tenant_id = ?notification.tenant_id, alert = %notification.code, event = notification.event.name(), sink = kind, sink_index, "alert notification sent");
                Progress::Finished
            }
            SinkVerdict::Refused(reason) => {
                count("failed");
                tracing::error!(tenant_id = ?notification.tenant_id, alert = %notification.code, event = notification.event.name(), sink = kind, sink_index, reason = %reason.escape_debug(), "alert notification refused by the sink; given up");
                Progress::Finished
            }
            SinkVerdict::RetryLater {
                reason,
                retry_after_ms,
            } => {
                let failed_attempts = failed_attempts + 1;
                let delay = next_attempt_delay(
                    &self.settings.schedule,
                    failed_attempts,
                    self.settings.jitter_fraction,
                    rand::random::<f64>(),
                    retry_after_ms.map(Duration::from_millis),
                );
                match delay {
                    Some(delay) => {
                        count("retried");
                        tracing::warn!(tenant_id = ?notification.tenant_id, alert = %notification.code, sink = kind, sink_index, attempt = failed_attempts, retry_in_ms = delay.as_millis() as u64, reason = %reason.escape_debug(), "alert notification failed; retrying");
                        Progress::Waiting {
                            failed_attempts,
                            retry_at_ms: now_ms + delay.as_millis() as u64,
                        }
                    }
                    None => {
                        count("failed");
                        tracing::error!(tenant_id = ?notification.tenant_id, alert = %notification.code, event = notification.event.name(), sink = kind, sink_index, attempts = failed_attempts, reason = %reason.escape_debug(), "alert notification given up: the retry schedule is spent");
                        Progress::Finished
                    }
                }
            }
        };
        let finished = pending
            .progress
            .iter()
            .all(|progress| matches!(progress, Progress::Finished | Progress::NotForThisSink));
        if finished {
            self.pending.remove(&key);
            self.remove_from_store(key);
        }
    }

    fn remove_from_store(&mut self, key: NoticeKey) {
        if key.in_memory {
            return;
        }
        if let Err(error) = self.store.remove_alert_notice(&key.owner, key.seq) {
            tracing::warn!(tenant_id = ?key.owner.tenant_id(), error = %error, "a sent alert notice could not be removed from the outbox");
            self.finished_unremoved.insert(key);
        }
    }

    /// When the next waiting attempt falls due.
    fn next_due_ms(&self) -> Option<u64> {
        self.pending
            .values()
            .flat_map(|pending| {
                pending
                    .progress
                    .iter()
                    .filter_map(move |progress| match progress {
                        Progress::Waiting { retry_at_ms, .. } => {
                            Some((*retry_at_ms).max(pending.not_before_ms))
                        }
                        _ => None,
                    })
            })
            .min()
    }
}

/// The notification of a stored notice (its id: `{tenant or "process"}-{seq}`).
fn notification_of(queued: &QueuedNotice) -> Notification {
    let owner_name = queued.owner.tenant_id().unwrap_or("process");
    Notification {
        id: format!("{owner_name}-{}", queued.seq),
        tenant_id: queued.owner.tenant_id().map(str::to_owned),
        event: queued.notice.event,
        code: queued.notice.code.clone(),
        message: queued.notice.message.clone(),
        at_ms: queued.notice.at_ms,
    }
}

#[cfg(test)]
mod tests;
