//! The runtime: one actix arbiter per core, a [`TenantSupervisor`] per tenant spread over
//! them, and the [`TenantHandle`] the HTTP layer talks to.
//!
//! Create the [`Runtime`] inside a running actix `System` (e.g. in `main` under
//! `#[actix_web::main]`), never inside an `HttpServer::new` factory.

// Size: about 500 lines — the handle, the runtime and the arbiter probe that feeds it.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix::{Actor, Addr, Arbiter, ArbiterHandle, AsyncContext};
use serde::Serialize;
use tokio::sync::oneshot;

pub use crate::budget::{BudgetSettings, BudgetStatus};
use crate::hub::TenantShared;
use crate::messages::{Enqueue, KillChild, SetPaused, SettingsChanged, StopTenant};
pub use crate::messages::{EnqueueError, KillMode};
pub use crate::observe::{ActorKind, ActorStatus, SUPERVISOR_NAME};
use crate::ports::{Clock, Crm, SystemClock};
pub use crate::settings::{AlertSettings, ConfirmSettings, SubmitSettings, TenantSettings};
pub use crate::store::TenantRunState;
use crate::store::{EnqueueOutcome, NewEntry, Store, TenantStore};
use crate::supervisor::TenantSupervisor;

mod backfill_doors;
mod doors;
mod reconciliation_doors;
mod two_way_doors;

pub use doors::{DestinationCommandError, DestinationSnapshot};
pub use two_way_doors::{PairView, TwoWayError};

/// Everything needed to start a tenant's actors.
pub struct TenantSpec {
    pub tenant_id: String,
    /// The process-wide store (group commit).
    pub store: Store,
    /// The tenant's scoped store (`store.tenant(&tenant_id)`).
    pub tenant_store: TenantStore,
    pub settings: TenantSettings,
    /// As the registry says (a tenant that needs an operator starts that way).
    pub run_state: TenantRunState,
    /// The tenant's Virtuous (replaced on credential rotation: [`TenantHandle::replace_crm`]).
    pub crm: Arc<dyn Crm>,
}

/// A tenant's runtime status, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TenantRuntimeStatus {
    /// `running`, `paused` or `needs_operator`.
    pub state: String,
    /// The five children by kind name, plus `supervisor`.
    pub actors: BTreeMap<&'static str, ActorStatus>,
    /// Every child has started at least once (readiness).
    pub children_started: bool,
    pub budget: BudgetStatus,
    /// Transport failures and ignored test-mode events since start (`hub/health.rs`).
    pub health: crate::hub::HealthView,
}

/// The HTTP layer's handle on one tenant. Cheap to clone.
#[derive(Clone)]
pub struct TenantHandle {
    shared: Arc<TenantShared>,
    supervisor: Addr<TenantSupervisor>,
}

impl TenantHandle {
    pub fn tenant_id(&self) -> &str {
        &self.shared.tenant_id
    }

    /// Answers from shared cells, without messaging any actor: works while a child is stuck.
    pub fn status(&self) -> TenantRuntimeStatus {
        let shared = &self.shared;
        let now_ms = shared.clock.now_ms();
        let state = shared.run_state().name();
        let mut actors: BTreeMap<&'static str, ActorStatus> = ActorKind::ALL
            .iter()
            .map(|kind| (kind.name(), shared.cell(*kind).status(now_ms)))
            .collect();
        actors.insert(SUPERVISOR_NAME, shared.supervisor_cell.status(now_ms));
        let settings = shared.settings();
        let headers = shared.rate_limit_headers();
        let budget = BudgetStatus::compute(&settings.budget, headers, shared.tenant_store(), shared.clock.as_ref())
            .unwrap_or_else(|error| {
                tracing::warn!(tenant_id = %shared.tenant_id, error = %error, "budget call log unreadable; status shows 0 spent");
                BudgetStatus {
                    allowance_per_hour: crate::budget::allowance_per_hour(
                        settings.budget.hourly_limit,
                        headers.limit,
                        settings.budget.reserve_pct,
                    ),
                    spent_last_hour: 0,
                    header_limit: headers.limit,
                    header_remaining: headers.remaining,
                }
            });
        TenantRuntimeStatus {
            state: state.to_string(),
            actors,
            children_started: self.children_started(),
            budget,
            health: shared.health.view(),
        }
    }

    /// Calls made in the budget's window (the last hour) and the allowance, from the budget's
    /// cells in memory: cheap enough for a fleet page of hundreds of tenants.
    pub fn budget_spent(&self) -> (u64, u64) {
        let view = self.shared.budget.view(self.shared.clock.now_ms());
        (view.calls_in_window, view.allowance_per_hour)
    }

    /// The supervisor is alive and every child has started at least once (a child that is
    /// restarting now does not make the tenant unready; a dead supervisor does).
    pub fn children_started(&self) -> bool {
        self.supervisor.connected()
            && ActorKind::ALL
                .iter()
                .all(|kind| self.shared.cell(*kind).has_started_once())
    }

    pub fn is_paused(&self) -> bool {
        self.shared.is_paused()
    }
    /// Stops submission; captures keep being accepted. (Persisting the state in the
    /// registry is the caller's job.)
    pub fn pause(&self) {
        self.set_run_state(TenantRunState::Paused);
    }
    /// Restarts submission. A resume is the operator's word that the cause of a pause is
    /// fixed, so it also clears `needs_operator` (set by a 401/403); if the credentials are
    /// still refused, the next call sets it again. The `auth_failed` alert stays listed.
    pub fn resume(&self) {
        self.set_run_state(TenantRunState::Running);
    }
    pub fn run_state(&self) -> TenantRunState {
        self.shared.run_state()
    }
    /// Applies the registry's run state (persisting it there is the caller's job).
    pub fn set_run_state(&self, run_state: TenantRunState) {
        let paused = run_state.is_paused();
        self.shared.set_run_state(run_state);
        // A hint: a restarting submitter reads the shared flag when it starts.
        if let Some(submitter) = self.shared.addresses().submitter {
            let guard = self.shared.cell(ActorKind::Submitter).mailbox.guard();
            let _ = submitter.set_paused.try_send(SetPaused { paused, guard });
        }
    }

    /// Draws one call for an operator action (the connection test) from the tenant's budget
    /// ledger at reconcile-lane priority and records it in the call log; `Err(when_ms)`: not
    /// before then (invariant 4).
    pub fn draw_operator_call(&self) -> Result<(), u64> {
        self.shared.draw_call(crate::store::Lane::Reconcile)
    }

    /// What an answer to a call made outside the submitter (the connection test) says about
    /// the budget: header correction, a `429`'s pause, the headers the status shows.
    pub fn observe_reply(&self, reply: &crate::ports::CrmReply) {
        self.shared.observe_reply(reply);
    }

    /// New settings apply without restarting the tenant (see `SettingsChanged`).
    pub fn update_settings(&self, settings: TenantSettings) {
        self.shared.replace_settings(settings);
        let guard = self.shared.supervisor_cell.mailbox.guard();
        self.supervisor.do_send(SettingsChanged { guard });
    }

    /// New credentials or base URL: the next call uses `crm` (calls in flight finish on the
    /// old one).
    pub fn replace_crm(&self, crm: Arc<dyn Crm>) {
        self.shared.replace_crm(crm);
    }

    /// The tenant's pollers (its document changed or it started). Checkpoints and poller
    /// state are in the store, so a new schedule keeps them; Capture picks the change up.
    pub fn replace_pollers(&self, pollers: Vec<crate::poll::PollerSpec>) {
        self.shared.replace_pollers(pollers);
        self.shared.hint_pollers_changed();
    }

    /// The tenant's destinations (its document changed or it started). Checkpoints and
    /// state are in the store; Inbound restarts its delivery loops on its next tick.
    pub fn replace_destinations(&self, destinations: Vec<crate::ports::DestinationSpec>) {
        self.shared.replace_destinations(destinations);
    }

    /// The tenant's two-way partners (its document changed or it started). Links and
    /// pending writes are in the store; Inbound restarts its pair loops on its next tick.
    pub fn replace_partners(&self, partners: Vec<crate::ports::PartnerSpec>) {
        self.shared.replace_partners(partners);
    }

    /// The tenant's Virtuous (for admin one-off calls such as the connection test, which
    /// still draw from the budget: see the budget ledger).
    pub fn crm(&self) -> Arc<dyn Crm> {
        self.shared.crm()
    }

    /// Tells Queue and Submitter that entries became ready outside Capture (an operator
    /// replay). Lossy like every hint: the submitter finds the work in the store anyway.
    pub fn hint_work(&self, entries_added: u64) {
        self.shared.hint_new_work(entries_added);
    }

    /// Asks the reconciler for a confirmation pass now (or right after the running one).
    /// False when the reconciler is not running (restarting). Skipped while paused.
    pub fn reconcile_now(&self) -> bool {
        self.shared.request_reconcile_pass()
    }

    /// Test-only hook (the HTTP layer exposes it behind a test flag): kills the current
    /// child of `kind` the way `mode` says.
    pub fn kill_child(&self, kind: ActorKind, mode: KillMode) {
        let guard = self.shared.supervisor_cell.mailbox.guard();
        self.supervisor.do_send(KillChild { kind, mode, guard });
    }

    /// Writes the entries through Capture and resolves once they are durable. A full Capture
    /// mailbox answers [`EnqueueError::MailboxFull`] at once (back-pressure, HTTP 503).
    pub fn enqueue(
        &self,
        entries: Vec<NewEntry>,
    ) -> impl Future<Output = Result<Vec<EnqueueOutcome>, EnqueueError>> + 'static {
        let shared = Arc::clone(&self.shared);
        async move {
            let capture = shared.addresses().capture.map(|door| door.enqueue);
            shared
                .send_through_door(ActorKind::Capture, capture, |guard| Enqueue {
                    entries,
                    guard,
                })
                .await
        }
    }

    #[cfg(test)]
    pub(crate) fn shared(&self) -> &Arc<TenantShared> {
        &self.shared
    }
    #[cfg(test)]
    pub(crate) fn supervisor(&self) -> &Addr<TenantSupervisor> {
        &self.supervisor
    }
}

/// The tenant actor runtime. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<RuntimeInner>,
}

struct RuntimeInner {
    arbiters: Vec<Arbiter>,
    arbiter_handles: Vec<ArbiterHandle>,
    next_arbiter: AtomicUsize,
    tenants: Mutex<BTreeMap<String, TenantHandle>>,
    clock: Arc<dyn Clock>,
    /// One lag probe per arbiter, in arbiter order.
    probes: Vec<Arc<ProbeCell>>,
}

impl Drop for RuntimeInner {
    fn drop(&mut self) {
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
    }
}

impl Runtime {
    /// Starts `arbiter_count` arbiters (one per core; at least one). Needs a running System.
    pub fn new(arbiter_count: usize) -> Runtime {
        Runtime::with_clock(arbiter_count, Arc::new(SystemClock))
    }

    /// As [`Runtime::new`], with the clock the actors compare progress and budgets against.
    pub fn with_clock(arbiter_count: usize, clock: Arc<dyn Clock>) -> Runtime {
        let arbiters: Vec<Arbiter> = (0..arbiter_count.max(1)).map(|_| Arbiter::new()).collect();
        let arbiter_handles: Vec<ArbiterHandle> = arbiters.iter().map(Arbiter::handle).collect();
        let probes = arbiter_handles
            .iter()
            .enumerate()
            .map(|(index, arbiter)| {
                let cell = Arc::new(ProbeCell::new(index));
                let probe_cell = Arc::clone(&cell);
                ArbiterProbe::start_in_arbiter(arbiter, move |_ctx| ArbiterProbe {
                    cell: probe_cell,
                });
                cell
            })
            .collect();
        Runtime {
            inner: Arc::new(RuntimeInner {
                arbiters,
                arbiter_handles,
                next_arbiter: AtomicUsize::new(0),
                tenants: Mutex::new(BTreeMap::new()),
                clock,
                probes,
            }),
        }
    }

    fn tenants(&self) -> MutexGuard<'_, BTreeMap<String, TenantHandle>> {
        self.inner
            .tenants
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts the tenant's supervisor (which starts its five children) on the next arbiter,
    /// round robin. If the tenant already runs, returns its handle and changes nothing.
    pub fn start_tenant(&self, spec: TenantSpec) -> TenantHandle {
        let TenantSpec {
            tenant_id,
            store,
            tenant_store,
            settings,
            run_state,
            crm,
        } = spec;
        let mut tenants = self.tenants();
        if let Some(existing) = tenants.get(&tenant_id) {
            tracing::warn!(tenant_id = %tenant_id, "tenant already running; start ignored");
            return existing.clone();
        }
        let shared = Arc::new(TenantShared::new(
            tenant_id.clone(),
            store,
            tenant_store,
            crm,
            Arc::clone(&self.inner.clock),
            settings,
            run_state,
        ));
        let arbiter_index = self.inner.next_arbiter.fetch_add(1, Ordering::Relaxed)
            % self.inner.arbiter_handles.len();
        let supervisor_shared = Arc::clone(&shared);
        let supervisor = TenantSupervisor::start_in_arbiter(
            &self.inner.arbiter_handles[arbiter_index],
            move |_ctx| TenantSupervisor::new(supervisor_shared),
        );
        let handle = TenantHandle { shared, supervisor };
        tenants.insert(tenant_id, handle.clone());
        handle
    }

    pub fn tenant(&self, tenant_id: &str) -> Option<TenantHandle> {
        self.tenants().get(tenant_id).cloned()
    }

    /// Running tenants, ordered by id.
    pub fn tenant_ids(&self) -> Vec<String> {
        self.tenants().keys().cloned().collect()
    }

    /// Readiness: every tenant's five children have started.
    pub fn all_children_started(&self) -> bool {
        self.tenants().values().all(TenantHandle::children_started)
    }

    /// How late each arbiter is running timers, in ms (index = arbiter). A thread blocked by
    /// a handler shows here even while it cannot run its probe; the gauge
    /// `steward_arbiter_lag_seconds` is refreshed by this call (call it before rendering
    /// `/metrics`), since a blocked thread cannot refresh it itself.
    pub fn arbiter_lag_ms(&self) -> Vec<u64> {
        self.inner
            .probes
            .iter()
            .map(|probe| probe.refresh_lag().as_millis() as u64)
            .collect()
    }

    /// Stops the tenant's children and supervisor; resolves once the supervisor stopped.
    /// Resolves to false when the tenant was not running.
    pub fn stop_tenant(&self, tenant_id: &str) -> impl Future<Output = bool> + 'static {
        let removed = self.tenants().remove(tenant_id);
        let stopped = removed.map(|handle| request_stop(&handle));
        async move {
            match stopped {
                Some(stopped) => {
                    // Err: the supervisor was already gone, which is stopped too.
                    let _ = stopped.await;
                    true
                }
                None => false,
            }
        }
    }

    /// Stops every tenant (all at once); resolves when all supervisors stopped.
    pub fn shutdown(&self) -> impl Future<Output = ()> + 'static {
        let handles: Vec<TenantHandle> =
            std::mem::take(&mut *self.tenants()).into_values().collect();
        let all_stopped: Vec<oneshot::Receiver<()>> = handles.iter().map(request_stop).collect();
        async move {
            for stopped in all_stopped {
                let _ = stopped.await;
            }
        }
    }
}

fn request_stop(handle: &TenantHandle) -> oneshot::Receiver<()> {
    let (done, stopped) = oneshot::channel();
    let guard = handle.shared.supervisor_cell.mailbox.guard();
    // do_send: a stop must get through even to a full mailbox.
    handle.supervisor.do_send(StopTenant { done, guard });
    stopped
}

/// How often each arbiter's probe timer fires.
const ARBITER_PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// What an arbiter's probe shares with the runtime.
struct ProbeCell {
    base: Instant,
    /// Microseconds after `base` of the latest beat.
    last_beat_us: AtomicU64,
    /// How late the latest beat ran, in microseconds.
    lag_us: AtomicU64,
    gauge: metrics::Gauge,
}

impl ProbeCell {
    fn new(index: usize) -> ProbeCell {
        let gauge = metrics::gauge!(
            crate::metrics::ARBITER_LAG_SECONDS,
            crate::metrics::LABEL_ARBITER => index.to_string()
        );
        ProbeCell {
            base: Instant::now(),
            last_beat_us: AtomicU64::new(0),
            lag_us: AtomicU64::new(0),
            gauge,
        }
    }

    /// The larger of the latest beat's lateness and how overdue the next beat is now.
    fn refresh_lag(&self) -> Duration {
        let since_beat = self.base.elapsed().saturating_sub(Duration::from_micros(
            self.last_beat_us.load(Ordering::Acquire),
        ));
        let overdue = since_beat.saturating_sub(ARBITER_PROBE_INTERVAL);
        let lag = overdue.max(Duration::from_micros(self.lag_us.load(Ordering::Acquire)));
        self.gauge.set(lag.as_secs_f64());
        lag
    }
}

/// A timer on each arbiter that records how late it runs.
struct ArbiterProbe {
    cell: Arc<ProbeCell>,
}

impl ArbiterProbe {
    fn beat(&mut self, ctx: &mut actix::Context<Self>, due_at: Instant) {
        let now = Instant::now();
        let lag = now.saturating_duration_since(due_at);
        self.cell
            .lag_us
            .store(lag.as_micros() as u64, Ordering::Release);
        let since_base = now.saturating_duration_since(self.cell.base);
        self.cell
            .last_beat_us
            .store(since_base.as_micros() as u64, Ordering::Release);
        self.cell.gauge.set(lag.as_secs_f64());
        ctx.run_later(ARBITER_PROBE_INTERVAL, move |probe, ctx| {
            probe.beat(ctx, now + ARBITER_PROBE_INTERVAL)
        });
    }
}

impl Actor for ArbiterProbe {
    type Context = actix::Context<Self>;

    fn started(&mut self, ctx: &mut actix::Context<Self>) {
        self.beat(ctx, Instant::now());
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;

#[cfg(test)]
#[path = "sled_tests.rs"]
mod sled_tests;

#[cfg(test)]
mod backfill_listing_tests;
#[cfg(test)]
mod backfill_tests;
#[cfg(test)]
#[path = "metrics_tests.rs"]
mod metrics_tests;
#[cfg(test)]
mod poll_tests;
#[cfg(test)]
mod pull_tests;
