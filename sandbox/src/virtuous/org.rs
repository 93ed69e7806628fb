//! Organizations: the registry (by id and by api key) and one organization's state, kept
//! behind one std `Mutex` per org so organizations never contend with each other.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use actix_web::web::Bytes;
use tokio::sync::mpsc;

use super::contact_store::ContactStore;
use super::records::{GiftStore, Table};
use super::stats::{Gauges, Stats, StatsSnapshot, WebhookCounters};
use super::webhooks::{build_jobs, DeliveryForms, DeliveryPlan, Event, EventKind, WebhookJob};
use super::{LiveSwitches, OrgSpec, Processing};
use crate::clock::now_ms;
use crate::faults::Faults;
use crate::ratelimit::SlidingWindow;
use crate::request_log::RequestLog;

/// What an accepted transaction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PendingKind {
    Gift,
    Contact,
    Reversal,
}

/// An accepted transaction waiting for the import step; `body` is the item's JSON as
/// accepted (batch defaults already filled in), parsed again only at import.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub(crate) kind: PendingKind,
    pub(crate) body: Bytes,
    pub(crate) received_ms: u64,
    /// Acceptance order; the review draw hashes it so a run reproduces.
    pub(crate) sequence: u64,
}

/// Everything about one org that changes, guarded by its mutex.
#[derive(Debug)]
pub(crate) struct OrgState {
    pub(crate) window: SlidingWindow,
    pub(crate) faults: Faults,
    /// (path, transactionId) → requests seen, for the fault draw's attempt number.
    attempts: HashMap<String, u32>,
    pub(crate) pending: VecDeque<Pending>,
    pub(crate) review: Vec<Pending>,
    pub(crate) next_sequence: u64,
    pub(crate) gifts: GiftStore,
    pub(crate) contacts: ContactStore,
    pub(crate) next_individual_id: u64,
    pub(crate) webhooks: Table,
    pub(crate) recurring_gifts: Table,
    pub(crate) projects: Table,
    /// Events and contact notes exist only through staff edits (they fire webhooks).
    pub(crate) events: Table,
    pub(crate) contact_notes: Table,
    /// The switches that may change while the org runs.
    pub(crate) switches: LiveSwitches,
    pub(crate) stats: Stats,
    /// The last API requests, for `GET /_sandbox/orgs/{id}/requests`.
    pub(crate) requests: RequestLog,
    /// The referenceIds of the contact transactions the request being answered queued;
    /// moved into its request-log entry.
    pub(crate) accepted_reference_ids: Vec<String>,
    pub(crate) delivery_forms: DeliveryForms,
}

impl OrgState {
    pub(crate) fn new(spec: &OrgSpec) -> OrgState {
        OrgState {
            window: SlidingWindow::new(spec.hourly_limit),
            faults: Faults::default(),
            attempts: HashMap::new(),
            pending: VecDeque::new(),
            review: Vec::new(),
            next_sequence: 0,
            gifts: GiftStore::default(),
            contacts: ContactStore::default(),
            next_individual_id: 0,
            webhooks: Table::default(),
            recurring_gifts: Table::default(),
            projects: Table::default(),
            events: Table::default(),
            contact_notes: Table::default(),
            switches: LiveSwitches::of(spec),
            stats: Stats::default(),
            requests: RequestLog::default(),
            accepted_reference_ids: Vec::new(),
            delivery_forms: DeliveryForms::default(),
        }
    }

    /// 1 + how many earlier requests had this (path, transactionId).
    pub(crate) fn next_attempt(&mut self, path: &str, transaction_id: &str) -> u32 {
        let mut key = String::with_capacity(path.len() + transaction_id.len() + 1);
        key.push_str(path);
        key.push('\n');
        key.push_str(transaction_id);
        let seen = self.attempts.entry(key).or_insert(0);
        *seen += 1;
        *seen
    }

    /// Accepts a transaction: counted as received, queued for import.
    pub(crate) fn accept(&mut self, kind: PendingKind, body: Bytes, now_ms: u64) {
        if kind == PendingKind::Contact {
            self.accepted_reference_ids
                .extend(crate::request_log::contact_reference_id(&body));
        }
        self.next_sequence += 1;
        self.pending.push_back(Pending {
            kind,
            body,
            received_ms: now_ms,
            sequence: self.next_sequence,
        });
        self.stats.transactions_received += 1;
    }

    /// Whether an active subscription wants `kind`: imports skip building webhook models
    /// (a clone of every record) nobody would receive.
    pub(crate) fn is_subscribed(&self, kind: EventKind) -> bool {
        self.webhooks.records.values().any(|subscription| {
            let flag = |name: &str| {
                subscription
                    .doc
                    .get(name)
                    .and_then(serde_json::Value::as_bool)
            };
            flag("active") == Some(true) && flag(kind.subscription_flag()) == Some(true)
        })
    }

    pub(crate) fn next_individual_id(&mut self) -> u64 {
        self.next_individual_id += 1;
        self.next_individual_id
    }
}

/// One organization: immutable switches outside the lock, state inside.
#[derive(Debug)]
pub(crate) struct Org {
    pub(crate) spec: OrgSpec,
    /// `Organization/Current`'s numeric id.
    pub(crate) number: u64,
    state: Mutex<OrgState>,
    pub(crate) webhook_counters: Arc<WebhookCounters>,
    /// Changed since it was last written to disk (`persist`; never read without a keeper).
    unsaved: AtomicBool,
}

impl Org {
    /// An org with `state` (a new one, or one read back from disk).
    pub(crate) fn new(spec: OrgSpec, number: u64, state: OrgState) -> Org {
        Org {
            spec,
            number,
            state: Mutex::new(state),
            webhook_counters: Arc::new(WebhookCounters::default()),
            unsaved: AtomicBool::new(false),
        }
    }

    /// Takes the "changed since written" mark (the keeper is about to write the org).
    pub(crate) fn take_unsaved(&self) -> bool {
        self.unsaved.swap(false, Ordering::AcqRel)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, OrgState> {
        // A panic while holding the lock leaves the state as it was at the panic; the
        // simulator keeps serving rather than failing every later request.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Turns events into webhook jobs with this org's switches (call with the state locked).
    pub(crate) fn webhook_jobs(&self, state: &mut OrgState, events: Vec<Event>) -> Vec<WebhookJob> {
        if events.is_empty() {
            return Vec::new();
        }
        let plan = DeliveryPlan {
            subscriptions: &state.webhooks,
            delivery: self.spec.webhook_delivery,
            encoding: self.spec.webhook_signature_encoding,
            counters: &self.webhook_counters,
            switches: state.switches,
            seed: self.spec.seed,
        };
        build_jobs(events, &plan, &mut state.delivery_forms)
    }

    pub(crate) fn stats(&self) -> StatsSnapshot {
        let now = now_ms();
        let mut state = self.lock();
        let gauges = Gauges {
            pending: state.pending.len() as u64,
            in_review: state.review.len() as u64,
            gifts: state.gifts.records.len() as u64,
            contacts: state.contacts.records.len() as u64,
            rate_window_calls: state.window.calls_in_window(now),
        };
        StatsSnapshot::new(&state.stats, gauges, &self.webhook_counters)
    }

    pub(crate) fn processing(&self) -> Processing {
        self.spec.processing
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub(crate) enum CreateOrgError {
    #[error("organization {0:?} already exists")]
    IdTaken(String),
    #[error("the api key is already used by another organization")]
    KeyTaken,
    #[error("{0}")]
    Invalid(String),
}

/// Every organization of one sandbox, plus the webhook dispatcher's inbox.
#[derive(Debug)]
pub(crate) struct Registry {
    by_id: RwLock<HashMap<String, Arc<Org>>>,
    by_api_key: RwLock<HashMap<String, Arc<Org>>>,
    webhook_sender: mpsc::UnboundedSender<WebhookJob>,
    /// Wakes the keeper's saver after a change (a stored permit when nobody waits).
    pub(crate) changes: tokio::sync::Notify,
}

impl Registry {
    pub(crate) fn new(webhook_sender: mpsc::UnboundedSender<WebhookJob>) -> Registry {
        Registry {
            by_id: RwLock::new(HashMap::new()),
            by_api_key: RwLock::new(HashMap::new()),
            webhook_sender,
            changes: tokio::sync::Notify::new(),
        }
    }

    /// Marks `org` changed (call after the change, the lock released or still held): a
    /// keeper writes it again soon.
    pub(crate) fn note_change(&self, org: &Org) {
        org.unsaved.store(true, Ordering::Release);
        self.changes.notify_one();
    }

    /// Every org, in no particular order.
    pub(crate) fn all(&self) -> Vec<Arc<Org>> {
        self.by_id
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Adds an org read back from disk. It has no api key until the embedded mode gives it
    /// one again ([`Registry::rotate_api_key`]); an id read twice is refused.
    pub(crate) fn restore(&self, org: Org) -> Result<Arc<Org>, CreateOrgError> {
        let mut by_id = self.by_id.write().unwrap_or_else(|p| p.into_inner());
        if by_id.contains_key(&org.spec.id) {
            return Err(CreateOrgError::IdTaken(org.spec.id));
        }
        let org = Arc::new(org);
        by_id.insert(org.spec.id.clone(), Arc::clone(&org));
        Ok(org)
    }

    /// Creates an org; `idempotent` (the embedded mode) treats the same id + key as success.
    pub(crate) fn create(&self, spec: OrgSpec, idempotent: bool) -> Result<(), CreateOrgError> {
        spec.validate().map_err(CreateOrgError::Invalid)?;
        let mut by_id = self.by_id.write().unwrap_or_else(|p| p.into_inner());
        let mut by_key = self.by_api_key.write().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = by_id.get(&spec.id) {
            let key_is_current = by_key
                .get(&spec.api_key)
                .is_some_and(|org| Arc::ptr_eq(org, existing));
            if idempotent && key_is_current {
                return Ok(());
            }
            return Err(CreateOrgError::IdTaken(spec.id));
        }
        if by_key.contains_key(&spec.api_key) {
            return Err(CreateOrgError::KeyTaken);
        }
        let state = OrgState::new(&spec);
        let org = Arc::new(Org::new(spec, by_id.len() as u64 + 1, state));
        tracing::info!(org = %org.spec.id, hourly_limit = org.spec.hourly_limit, "sandbox organization created");
        by_key.insert(org.spec.api_key.clone(), Arc::clone(&org));
        by_id.insert(org.spec.id.clone(), Arc::clone(&org));
        self.note_change(&org);
        Ok(())
    }

    /// Issues `new_api_key` to an existing org and revokes its other keys (a key rotation on
    /// the Virtuous side). Unknown org → `Ok(false)`.
    pub(crate) fn rotate_api_key(
        &self,
        id: &str,
        new_api_key: &str,
    ) -> Result<bool, CreateOrgError> {
        let by_id = self.by_id.read().unwrap_or_else(|p| p.into_inner());
        let mut by_key = self.by_api_key.write().unwrap_or_else(|p| p.into_inner());
        let Some(org) = by_id.get(id) else {
            return Ok(false);
        };
        if let Some(holder) = by_key.get(new_api_key) {
            if Arc::ptr_eq(holder, org) {
                return Ok(true);
            }
            return Err(CreateOrgError::KeyTaken);
        }
        by_key.retain(|_, holder| !Arc::ptr_eq(holder, org));
        by_key.insert(new_api_key.to_string(), Arc::clone(org));
        tracing::info!(org = %id, "sandbox organization api key rotated");
        Ok(true)
    }

    pub(crate) fn by_id(&self, id: &str) -> Option<Arc<Org>> {
        self.by_id
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    pub(crate) fn by_api_key(&self, api_key: &str) -> Option<Arc<Org>> {
        self.by_api_key
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(api_key)
            .cloned()
    }

    /// Hands jobs to the dispatcher (never blocks: the channel is unbounded, and deliveries
    /// are bounded by the import runs that create them).
    pub(crate) fn send_webhooks(&self, jobs: Vec<WebhookJob>) {
        for job in jobs {
            if self.webhook_sender.send(job).is_err() {
                tracing::warn!("sandbox webhook dispatcher stopped; delivery dropped");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> Registry {
        let (sender, _receiver) = mpsc::unbounded_channel();
        Registry::new(sender)
    }

    #[test]
    fn ids_and_keys_are_unique() {
        // Goal: a second org with the same id or api key is refused; embedded re-creation is not.
        let registry = registry();
        registry.create(OrgSpec::new("a", "key-a"), false).unwrap();
        assert_eq!(
            registry.create(OrgSpec::new("a", "key-a"), false),
            Err(CreateOrgError::IdTaken("a".into()))
        );
        assert_eq!(registry.create(OrgSpec::new("a", "key-a"), true), Ok(()));
        assert_eq!(
            registry.create(OrgSpec::new("b", "key-a"), false),
            Err(CreateOrgError::KeyTaken)
        );
        assert!(registry.by_api_key("key-a").is_some());
        assert!(registry.by_id("b").is_none());
    }

    #[test]
    fn attempts_count_per_path_and_transaction() {
        // Goal: the attempt number grows per (path, transactionId) pair only.
        let mut state = OrgState::new(&OrgSpec::new("a", "k"));
        assert_eq!(state.next_attempt("/p", "t1"), 1);
        assert_eq!(state.next_attempt("/p", "t1"), 2);
        assert_eq!(state.next_attempt("/p", "t2"), 1);
        assert_eq!(state.next_attempt("/q", "t1"), 1);
    }
}
