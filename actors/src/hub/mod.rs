//! The tenant hub: what a tenant's actors, its supervisor and its handle share
//! ([`TenantShared`]), read without messaging any actor.
//!
//! The hub stands below the actors: it knows the messages each child accepts
//! ([`ChildAddresses`] holds recipients), never an actor type.

mod addresses;
mod budget;
mod gauges;
mod health;
mod reconciliation;

pub use addresses::{CaptureAddress, ChildAddresses, InboundAddress, SubmitterAddress};
pub use budget::ReconcileBudget;
pub use gauges::TenantGauges;
pub use health::{
    HealthCounters, HealthView, CRM_MISCONFIGURED_ALERT, CRM_UNREACHABLE_ALERT, DEAD_LETTERS_ALERT,
    TEST_EVENTS_IGNORED_ALERT,
};

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use actix::{Message, Recipient};

use crate::budget::RateLimitHeaders;
use crate::mailbox::MailboxGuard;
use crate::messages::{DoorError, ReconcileNow, WorkHint};
use crate::observe::{ActorCell, ActorKind, SUPERVISOR_NAME};
use crate::ports::{Clock, Crm};
use crate::settings::TenantSettings;
use crate::store::{Store, TenantRunState, TenantStore};

/// What a tenant's actors and its handle share. Read without messaging any actor.
pub struct TenantShared {
    pub tenant_id: String,
    pub clock: Arc<dyn Clock>,
    settings: RwLock<TenantSettings>,
    /// The tenant's [`TenantRunState`] (the registry keeps it across restarts).
    run_state: AtomicU8,
    cells: [Arc<ActorCell>; 5],
    pub supervisor_cell: Arc<ActorCell>,
    addresses: Mutex<ChildAddresses>,
    rate_limit_headers: Mutex<RateLimitHeaders>,
    /// The tenant's per-tenant gauges, registered once (a label lookup per update costs
    /// more than the update itself at 10,000 tenants).
    pub gauges: TenantGauges,
    /// Transport failures and ignored test-mode events, counted since start (`health.rs`).
    pub health: HealthCounters,
    /// The process-wide store: group commit ([`Store::durable`]) and the registry.
    store: Store,
    /// The tenant's data (its key prefix in `store`).
    tenant_store: TenantStore,
    /// The tenant's Virtuous; swapped on credential rotation.
    crm: RwLock<Arc<dyn Crm>>,
    /// The call budget every Virtuous call draws from (submitter, reconciler, admin).
    pub budget: crate::budget::SharedBudget,
    /// The submitter's in-memory queue leases (see `store::queue_ops`).
    pub leases: crate::store::LeaseTable,
    /// The tenant's configured pollers (replaced when its document changes); Capture runs them.
    pollers: RwLock<Arc<Vec<crate::poll::PollerSpec>>>,
    /// What Capture's poll runs show while they run (`capture::polling`), by source.
    pub poll_live: Mutex<std::collections::BTreeMap<String, crate::poll::PollerLive>>,
    /// The tenant's configured destinations (replaced when its document changes); Inbound
    /// runs one delivery loop each.
    destinations: RwLock<Arc<Vec<crate::ports::DestinationSpec>>>,
    /// Wakes the destination loops when the change log grew (or a destination was told
    /// something).
    pub pull_wake: Arc<tokio::sync::Notify>,
    /// An operator asked for a backstop poll now (Inbound's next tick starts it).
    pub pull_poll_requested: std::sync::atomic::AtomicBool,
    /// What the destination loops show while they run, by destination name.
    pub destination_live: Mutex<std::collections::BTreeMap<String, crate::pull::DestinationLive>>,
    /// The tenant's two-way partners (replaced when its document changes); Inbound runs one
    /// pair loop each.
    partners: RwLock<Arc<Vec<crate::ports::PartnerSpec>>>,
    /// Wakes the pair loops when writes were ordered (a partner change, a resolution).
    pub two_way_wake: Arc<tokio::sync::Notify>,
    /// Serialises changes to the tenant's two-way links (Capture, Inbound and the admin
    /// doors all change them).
    pub two_way_lock: Mutex<()>,
    /// What the pair loops show while they run, by pair.
    pub two_way_live: Mutex<std::collections::BTreeMap<String, crate::two_way::PairLive>>,
    /// Reads the tenant's backfill files (replaced when its document changes); `None`
    /// until the `steward` crate sets it. Capture runs the jobs.
    backfill_files: RwLock<Option<Arc<dyn crate::backfill::BackfillFiles>>>,
    /// A running backfill job is still reading its file: the submitter sends only full
    /// batches of backfill gifts (a short one would be filled by the next chunk).
    pub backfill_feeding: std::sync::atomic::AtomicBool,
    /// When the submitter's calls that carried backfill entries went, over the last hour: a
    /// job's estimate counts the live lane's use of the allowance without them.
    backfill_calls: Mutex<std::collections::VecDeque<u64>>,
    /// Serialises creating and starting money reconciliation jobs (one runs at a time).
    reconciliation_lock: Mutex<()>,
}

impl TenantShared {
    /// The hub of a tenant about to start. Its budget window is loaded from the persisted
    /// call log: a restart does not refill the budget.
    pub fn new(
        tenant_id: String,
        store: Store,
        tenant_store: TenantStore,
        crm: Arc<dyn Crm>,
        clock: Arc<dyn Clock>,
        settings: TenantSettings,
        run_state: TenantRunState,
    ) -> TenantShared {
        let cells = ActorKind::ALL.map(|kind| ActorCell::new(&tenant_id, kind.name()));
        let supervisor_cell = ActorCell::new(&tenant_id, SUPERVISOR_NAME);
        let now_ms = clock.now_ms();
        let budget = crate::budget::SharedBudget::new(settings.budget, now_ms);
        if let Err(error) = budget.load_call_log(&tenant_store, now_ms) {
            tracing::warn!(tenant_id = %tenant_id, error = %error, "budget call log unreadable; starting with an empty window");
        }
        TenantShared {
            budget,
            leases: crate::store::LeaseTable::new(),
            gauges: TenantGauges::register(&tenant_id),
            health: HealthCounters::new(),
            run_state: AtomicU8::new(run_state as u8),
            settings: RwLock::new(settings),
            tenant_id,
            clock,
            cells,
            supervisor_cell,
            addresses: Mutex::new(ChildAddresses::default()),
            rate_limit_headers: Mutex::new(RateLimitHeaders::default()),
            store,
            tenant_store,
            crm: RwLock::new(crm),
            pollers: RwLock::new(Arc::new(Vec::new())),
            poll_live: Mutex::new(std::collections::BTreeMap::new()),
            destinations: RwLock::new(Arc::new(Vec::new())),
            pull_wake: Arc::new(tokio::sync::Notify::new()),
            pull_poll_requested: std::sync::atomic::AtomicBool::new(false),
            destination_live: Mutex::new(std::collections::BTreeMap::new()),
            partners: RwLock::new(Arc::new(Vec::new())),
            two_way_wake: Arc::new(tokio::sync::Notify::new()),
            two_way_lock: Mutex::new(()),
            two_way_live: Mutex::new(std::collections::BTreeMap::new()),
            backfill_files: RwLock::new(None),
            backfill_feeding: std::sync::atomic::AtomicBool::new(false),
            backfill_calls: Mutex::new(std::collections::VecDeque::new()),
            reconciliation_lock: Mutex::new(()),
        }
    }

    /// Holds the tenant's two-way lock: links are read, decided and stored under it.
    pub fn two_way_guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.two_way_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A snapshot of the pair loops' live view.
    pub fn two_way_live(&self) -> std::collections::BTreeMap<String, crate::two_way::PairLive> {
        self.two_way_live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The configured two-way partners.
    pub fn partners(&self) -> Arc<Vec<crate::ports::PartnerSpec>> {
        Arc::clone(
            &self
                .partners
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }
    pub fn replace_partners(&self, partners: Vec<crate::ports::PartnerSpec>) {
        *self
            .partners
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(partners);
        self.two_way_wake.notify_waiters();
    }

    /// Notes a call that carried backfill entries (at `now_ms`), forgetting those older than
    /// the budget's hour.
    pub fn note_backfill_call(&self, now_ms: u64) {
        let mut calls = self
            .backfill_calls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        calls.push_back(now_ms);
        let since_ms = now_ms.saturating_sub(crate::budget::BUDGET_WINDOW_MS);
        while calls.front().is_some_and(|&at| at < since_ms) {
            calls.pop_front();
        }
    }

    /// Calls that carried backfill entries since `since_ms` (this process's; a restart
    /// forgets them: the estimate then counts them as live use for up to an hour).
    pub fn backfill_calls_since(&self, since_ms: u64) -> u64 {
        self.backfill_calls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .filter(|&&at| at >= since_ms)
            .count() as u64
    }

    /// The backfill files' adapter, once set.
    pub fn backfill_files(&self) -> Option<Arc<dyn crate::backfill::BackfillFiles>> {
        self.backfill_files
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
    pub fn replace_backfill_files(&self, files: Arc<dyn crate::backfill::BackfillFiles>) {
        *self
            .backfill_files
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(files);
    }

    /// The configured pollers.
    pub fn pollers(&self) -> Arc<Vec<crate::poll::PollerSpec>> {
        Arc::clone(
            &self
                .pollers
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }
    pub fn replace_pollers(&self, pollers: Vec<crate::poll::PollerSpec>) {
        *self
            .pollers
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(pollers);
    }
    /// The configured destinations.
    pub fn destinations(&self) -> Arc<Vec<crate::ports::DestinationSpec>> {
        Arc::clone(
            &self
                .destinations
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }
    pub fn replace_destinations(&self, destinations: Vec<crate::ports::DestinationSpec>) {
        *self
            .destinations
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(destinations);
        self.pull_wake.notify_waiters();
    }
    /// A snapshot of the running pollers' live view.
    pub fn poll_live(&self) -> std::collections::BTreeMap<String, crate::poll::PollerLive> {
        self.poll_live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The process-wide store: [`Store::durable`] (group commit) and the registry.
    pub fn store(&self) -> &Store {
        &self.store
    }
    /// The tenant's data.
    pub fn tenant_store(&self) -> &TenantStore {
        &self.tenant_store
    }
    pub fn crm(&self) -> Arc<dyn Crm> {
        Arc::clone(
            &self
                .crm
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }
    pub fn replace_crm(&self, crm: Arc<dyn Crm>) {
        *self
            .crm
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = crm;
    }

    pub fn settings(&self) -> TenantSettings {
        self.settings
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
    /// Whether the tenant has two-way pairs (read without copying the settings: Capture
    /// asks on every enqueue).
    pub fn has_two_way(&self) -> bool {
        !self
            .settings
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .two_way
            .is_empty()
    }
    pub fn replace_settings(&self, settings: TenantSettings) {
        *self
            .settings
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = settings;
        // A new budget shows at the next tick rather than after the gauge refresh interval.
        self.gauges
            .budget_published_at_ms
            .store(0, std::sync::atomic::Ordering::Relaxed);
    }
    pub fn cell(&self, kind: ActorKind) -> &Arc<ActorCell> {
        &self.cells[kind.index()]
    }
    /// Sends the message `make` builds to the child `kind` through `recipient` (`None`
    /// while it restarts) and awaits its answer. A full mailbox refuses at once (actix 0.13's
    /// `try_send` does not enforce capacity; the guard count does): back-pressure.
    pub async fn send_through_door<M, T, E>(
        &self,
        kind: ActorKind,
        recipient: Option<Recipient<M>>,
        make: impl FnOnce(MailboxGuard) -> M,
    ) -> Result<T, E>
    where
        M: Message<Result = Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: DoorError + Send + 'static,
    {
        let recipient = recipient.ok_or_else(E::unavailable)?;
        let capacity = self.settings().mailbox_capacity;
        let mailbox = &self.cell(kind).mailbox;
        if mailbox.depth() >= capacity as u64 {
            return Err(E::mailbox_full(capacity));
        }
        recipient
            .send(make(mailbox.guard()))
            .await
            .map_err(|_mailbox_closed| E::unavailable())?
    }
    pub fn run_state(&self) -> TenantRunState {
        TenantRunState::from_u8(self.run_state.load(Ordering::Acquire))
    }
    pub fn set_run_state(&self, run_state: TenantRunState) {
        self.run_state.store(run_state as u8, Ordering::Release);
    }
    /// Nothing is sent to Virtuous (paused or waiting for an operator).
    pub fn is_paused(&self) -> bool {
        self.run_state().is_paused()
    }
    pub fn needs_operator(&self) -> bool {
        self.run_state() == TenantRunState::NeedsOperator
    }
    // Never panics on poison: used from `stopped()`, which may run while unwinding.
    pub(crate) fn addresses_lock(&self) -> MutexGuard<'_, ChildAddresses> {
        self.addresses
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
    /// A copy of the current children's addresses.
    pub fn addresses(&self) -> ChildAddresses {
        self.addresses_lock().clone()
    }
    pub fn rate_limit_headers(&self) -> RateLimitHeaders {
        *self
            .rate_limit_headers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
    /// Seam for header sync (budget pacing issue): the submitter stores what it saw.
    pub fn record_rate_limit_headers(&self, headers: RateLimitHeaders) {
        *self
            .rate_limit_headers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = headers;
    }

    /// Hints Queue and Submitter that entries were added. Lossy on purpose: a full mailbox
    /// drops the hint (they find the work in the store anyway). Returns the hints dropped.
    /// Tells Capture the configured pollers changed (lossy: a restarted Capture reads them
    /// anyway).
    pub fn hint_pollers_changed(&self) {
        let Some(capture) = self.addresses().capture else {
            return;
        };
        let guard = self.cell(ActorKind::Capture).mailbox.guard();
        let _ = capture.poll.try_send(crate::poll::PollCommand {
            source: None,
            action: crate::poll::PollAction::Reload,
            guard,
        });
    }

    pub fn hint_new_work(&self, entries_added: u64) -> u64 {
        let addresses = self.addresses();
        let capacity = self.settings().mailbox_capacity as u64;
        let mut dropped = 0;
        let queue_cell = self.cell(ActorKind::Queue);
        let submitter_cell = self.cell(ActorKind::Submitter);
        // `try_send` does not enforce capacity in actix 0.13; the guard count does.
        match &addresses.queue {
            Some(queue) if queue_cell.mailbox.depth() < capacity => {
                let hint = WorkHint {
                    entries_added,
                    guard: queue_cell.mailbox.guard(),
                };
                dropped += u64::from(queue.try_send(hint).is_err());
            }
            _ => dropped += 1,
        }
        match &addresses.submitter {
            Some(submitter) if submitter_cell.mailbox.depth() < capacity => {
                let hint = WorkHint {
                    entries_added,
                    guard: submitter_cell.mailbox.guard(),
                };
                dropped += u64::from(submitter.work_hint.try_send(hint).is_err());
            }
            _ => dropped += 1,
        }
        dropped
    }

    /// Asks the tenant's reconciler for a pass; false when it is not running (restarting).
    pub fn request_reconcile_pass(&self) -> bool {
        let Some(reconciler) = self.addresses().reconciler else {
            return false;
        };
        let guard = self.cell(ActorKind::Reconciler).mailbox.guard();
        reconciler.try_send(ReconcileNow { guard }).is_ok()
    }
}
