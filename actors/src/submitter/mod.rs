//! Submitter: drains the tenant's queue into Virtuous under its budget (ARCHITECTURE.md; docs/operations.md).
//!
//! - It finds work by reading the store (invariant 9); [`WorkHint`]s, its own timers (the
//!   budget's next call, the next held or backing-off entry) and a kick from every tick only
//!   wake it.
//! - When the budget allows a call it leases the next group ([`crate::store::queue_ops`]),
//!   builds one request ([`crate::submitter::request::prepare`]), draws the call from the
//!   ledger, sends, classifies the answer ([`crate::outcome::classify`]) and completes every
//!   entry in one store batch. One call in flight per tenant; it never waits to batch.
//! - Split halves and the good items of a batch refused for some are sent again at once
//!   (still leased, not an attempt) before anything else is leased.
//! - Leases carry this generation: a new generation takes the old one's leases over, and a
//!   stale generation's answer is refused (by `may_act`, and by the store's lease check).
//! - While every call fails (an outage), the tenant backs off ([`failure_backoff_ms`]).
//! - Paused (or waiting for the operator) → it sends nothing. 401/403 → tenant paused,
//!   `needs_operator`, alert `auth_failed`; the entries stay queued. A client that cannot
//!   be built or a redirect → the same, with alert `crm_misconfigured`.
//! - Every answer feeds the tenant's health (`hub/health.rs`: transport failures,
//!   `crm_unreachable`, resolving alerts on success); dead letters raise `dead_letters`.

// Size: over 500 lines — one actor with its four handlers and its send loop; the request
// mapping already lives in `request.rs`.

pub mod request;

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix::{ActorFutureExt, AsyncContext, Context, Handler, WrapFuture};
use serde::Serialize;

use crate::budget::{BudgetStatus, LedgerView, RateLimitHeaders, BUDGET_WINDOW_MS};
use crate::child::{Child, ChildBehavior};
use crate::hub::TenantShared;
use crate::messages::{SetPaused, Wake, WorkHint};
use crate::metrics::{
    CRM_CALLS_TOTAL, CRM_THROTTLED_TOTAL, DEAD_LETTERS_TOTAL, ITEMS_SUBMITTED_TOTAL, LABEL_ACTOR,
    LABEL_OUTCOME, STALE_COMPLETIONS_REFUSED_TOTAL, SUBMIT_BATCH_SIZE,
};
use crate::observe::ActorKind;
use crate::outcome::classify;
use crate::ports::{CrmReply, CrmWrite};
use crate::retry::RetryPolicy;
use crate::settings::TenantSettings;
use crate::store::{Completion, Lane, LeaseRequest, LeasedEntry, RecordKind};
use crate::submitter::request::{class_name, prepare, settle};

/// How often the budget gauges are recomputed.
const BUDGET_GAUGE_REFRESH_MS: u64 = 60_000;
/// How often the call log is pruned of calls older than the window.
const CALL_LOG_PRUNE_MS: u64 = 600_000;
/// Groups handled without a call (refunds waiting for their gift) in one wake-up before the
/// submitter yields to its mailbox.
const ROUNDS_PER_WAKE_MAX: usize = 32;
/// Longest sleep of a timer; the tick kicks in between anyway.
const WAKE_DELAY_MAX_MS: u64 = 60_000;
/// Wait after a store error before trying again.
const STORE_ERROR_BACKOFF_MS: u64 = 1_000;
/// After this many calls in a row failed as a whole, the tenant backs off (below).
pub const FAILED_CALLS_BEFORE_BACKOFF: u32 = 3;
/// Longest tenant backoff while every call fails.
pub const FAILURE_BACKOFF_MAX_MS: u64 = 60_000;

/// The tenant-level wait after `failed_in_a_row` failing calls: none below
/// [`FAILED_CALLS_BEFORE_BACKOFF`], then the first retry delay doubling per further failure,
/// at most [`FAILURE_BACKOFF_MAX_MS`]. Each entry keeps its own schedule too; this only keeps a
/// Virtuous that fails everything (an outage) from being hammered with first attempts of new
/// entries, which would spend the budget and the node's CPU on calls that fail (tenants are
/// islands). The first call that is not a whole failure ends it.
pub fn failure_backoff_ms(failed_in_a_row: u32, first_retry_ms: u64) -> u64 {
    if failed_in_a_row < FAILED_CALLS_BEFORE_BACKOFF {
        return 0;
    }
    let doublings = (failed_in_a_row - FAILED_CALLS_BEFORE_BACKOFF).min(30);
    first_retry_ms
        .max(1)
        .saturating_mul(1 << doublings)
        .min(FAILURE_BACKOFF_MAX_MS)
}

/// The alert raised when Virtuous refuses the tenant's credentials.
pub use crate::budget::AUTH_FAILED_ALERT;

pub type SubmitterActor = Child<Submitter>;

/// What status shows of the submitter.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct SubmitterView {
    pub paused: bool,
    pub needs_operator: bool,
    pub work_hints: u64,
    /// Entries waiting in the store, as last read.
    pub queued_total: u64,
    pub in_flight: bool,
    /// Calls sent by this generation, and the items they carried.
    pub calls: u64,
    pub items_sent: u64,
    pub items_accepted: u64,
    pub items_retried: u64,
    pub items_dead: u64,
    pub throttled: u64,
    pub last_call_at_ms: Option<u64>,
    pub last_outcome: Option<&'static str>,
    /// When the budget allows the next call (`None`: no work waiting).
    pub next_call_at_ms: Option<u64>,
    /// Entries whose completion the store refused (their lease had moved on).
    pub stale_completions_refused: u64,
    pub budget: Option<LedgerView>,
    /// Calls in a row that failed as a whole (transient or unknown).
    pub failed_calls_in_a_row: u32,
    /// No call before this (the tenant backs off while Virtuous keeps failing).
    pub failure_backoff_until_ms: Option<u64>,
    /// Calls that carried `backfill` entries (this generation).
    pub backfill_calls: u64,
    /// Calls since the last one that carried `backfill` entries (its guaranteed share).
    pub calls_since_backfill: u32,
    /// Calls made on live's reserve (this generation).
    pub live_reserve_calls: u64,
}

/// The submitter's state: rebuilt from the store at every start; nothing else survives.
#[derive(Debug, Default)]
pub struct Submitter {
    view: SubmitterView,
    /// Groups to send again at once (still leased by this generation).
    follow_ups: VecDeque<Vec<LeasedEntry>>,
    /// The earliest pending timer.
    wake_at_ms: Option<u64>,
    call_log_pruned_at_ms: u64,
    /// The group being sent goes on live's reserve (drawn with
    /// `SharedBudget::draw_live_reserve`).
    on_reserve: bool,
}

/// Wakes a newly started submitter when the store already holds work. It finds work by
/// reading the store, but only when something wakes it: without this kick a submitter
/// started on a backlog (process restart, a replaced generation) with no new ingest waited
/// for its first tick, 7.5–15 s with the default heartbeat.
pub(crate) fn wake_if_work_stored(shared: &TenantShared) {
    if shared.tenant_store().queued_total() == 0 {
        return;
    }
    if let Some(submitter) = shared.addresses().submitter {
        let guard = shared.cell(ActorKind::Submitter).mailbox.guard();
        let _ = submitter.wake.try_send(Wake { guard });
    }
}

impl ChildBehavior for Submitter {
    const KIND: ActorKind = ActorKind::Submitter;
    type Observed = SubmitterView;

    fn rebuild(shared: &TenantShared) -> Submitter {
        publish_budget_gauges(shared);
        // This generation takes over its predecessor's leases: their entries go again now
        // (same idempotency keys), and the predecessor's completions are refused.
        let generation = shared.cell(ActorKind::Submitter).generation();
        let taken_over = shared.leases.take_over(generation);
        if taken_over > 0 {
            tracing::info!(tenant_id = %shared.tenant_id, generation, taken_over, "submitter took over leases of a replaced generation");
        }
        Submitter {
            view: SubmitterView {
                paused: shared.is_paused(),
                needs_operator: shared.needs_operator(),
                queued_total: shared.tenant_store().queued_total(),
                ..SubmitterView::default()
            },
            ..Submitter::default()
        }
    }

    fn on_tick(&mut self, shared: &TenantShared) -> Result<(), String> {
        // The shared flag is the truth; SetPaused only makes the change visible sooner.
        self.view.paused = shared.is_paused();
        self.view.needs_operator = shared.needs_operator();
        self.view.queued_total = shared.tenant_store().queued_total();
        publish_budget_gauges(shared);
        let now_ms = shared.clock.now_ms();
        if now_ms.saturating_sub(self.call_log_pruned_at_ms) >= CALL_LOG_PRUNE_MS {
            self.call_log_pruned_at_ms = now_ms;
            let before_ms = now_ms.saturating_sub(BUDGET_WINDOW_MS);
            if let Err(error) = shared.tenant_store().prune_calls_before(before_ms) {
                tracing::warn!(tenant_id = %shared.tenant_id, error = %error, "call log prune failed");
            }
        }
        // Nothing stored is stranded: a missed hint or timer is made up here.
        let overdue = self.wake_at_ms.map_or(true, |at| at <= now_ms);
        let has_work = self.view.queued_total > 0 || !self.follow_ups.is_empty();
        if has_work && overdue && !self.view.in_flight && !self.view.paused {
            if let Some(submitter) = shared.addresses().submitter {
                let guard = shared.cell(ActorKind::Submitter).mailbox.guard();
                let _ = submitter.wake.try_send(Wake { guard });
            }
        }
        Ok(())
    }

    fn observed(&self) -> SubmitterView {
        self.view.clone()
    }

    fn busy(&self) -> bool {
        self.view.in_flight
    }
}

/// The submitter owns the budget: it exports the tenant's allowance and spending.
///
/// The spending gauge reads the call log (a store scan), so it is refreshed at most once per
/// [`BUDGET_GAUGE_REFRESH_MS`], not on every tick: at 10,000 tenants the scans were a
/// visible share of an idle node's CPU.
fn publish_budget_gauges(shared: &TenantShared) {
    let now_ms = shared.clock.now_ms();
    let published_at_ms = shared.gauges.budget_published_at_ms.load(Ordering::Relaxed);
    if published_at_ms != 0 && now_ms.saturating_sub(published_at_ms) < BUDGET_GAUGE_REFRESH_MS {
        return;
    }
    shared
        .gauges
        .budget_published_at_ms
        .store(now_ms.max(1), Ordering::Relaxed);
    let settings = shared.settings().budget;
    let status = BudgetStatus::compute(
        &settings,
        shared.rate_limit_headers(),
        shared.tenant_store(),
        shared.clock.as_ref(),
    );
    let Ok(status) = status else { return };
    shared
        .gauges
        .budget_allowance_per_hour
        .set(status.allowance_per_hour as f64);
    shared
        .gauges
        .budget_spent_last_hour
        .set(status.spent_last_hour as f64);
}

/// A request on its way, with what completing it needs.
struct InFlight {
    items: Vec<Vec<LeasedEntry>>,
    attempt: u32,
    item_count: usize,
}

/// What [`SubmitterActor::next_group`] found.
enum NextGroup {
    Send(Vec<LeasedEntry>),
    /// Nothing to send from this one; look again in the same wake.
    Skip,
    /// Nothing to send now; the wake-up is scheduled (or the store idle).
    Stop,
}

/// Whether a wake goes on after one group.
enum Round {
    Continue,
    Done,
}

impl SubmitterActor {
    /// Sends the next request if the budget, the pause flag and the store allow it.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if !self.may_act(ctx) {
            return;
        }
        let shared = Arc::clone(&self.core.shared);
        if !self.gates_open(&shared, ctx) {
            return;
        }
        let settings = shared.settings();
        let retry = RetryPolicy::from_settings(
            &settings.submit.retry_schedule_ms,
            settings.submit.retry_jitter_pct,
        );
        for _ in 0..ROUNDS_PER_WAKE_MAX {
            let now_ms = shared.clock.now_ms();
            let group = match self.next_group(&shared, &settings, now_ms, ctx) {
                NextGroup::Send(group) => group,
                NextGroup::Skip => continue,
                NextGroup::Stop => return,
            };
            match self.prepare_and_send(&shared, &settings, &retry, group, now_ms, ctx) {
                Round::Continue => continue,
                Round::Done => return,
            }
        }
        // Many groups settled without a call: go on after the mailbox had its turn.
        self.schedule_wake(shared.clock.now_ms(), ctx);
    }

    /// The gates before any work: paused (follow-ups released), a call already in flight,
    /// the outage backoff.
    fn gates_open(&mut self, shared: &TenantShared, ctx: &mut Context<Self>) -> bool {
        self.behavior.view.paused = shared.is_paused();
        self.behavior.view.needs_operator = shared.needs_operator();
        if self.behavior.view.paused {
            self.release_follow_ups();
            self.publish();
            return false;
        }
        if self.behavior.view.in_flight {
            return false;
        }
        if let Some(until_ms) = self.behavior.view.failure_backoff_until_ms {
            if until_ms > shared.clock.now_ms() {
                self.schedule_wake(until_ms, ctx);
                return false;
            }
        }
        true
    }

    /// The next group to send: a follow-up (a split's rest) first, else entries leased from
    /// the store — or why there is none now (idle, the budget's next call not due, a store
    /// error).
    fn next_group(
        &mut self,
        shared: &TenantShared,
        settings: &TenantSettings,
        now_ms: u64,
        ctx: &mut Context<Self>,
    ) -> NextGroup {
        if self.behavior.follow_ups.is_empty() && shared.tenant_store().queued_total() == 0 {
            // Idle: hints and ticks wake it when entries arrive.
            shared.budget.set_priority_work(false);
            self.behavior.view.next_call_at_ms = None;
            self.finish_round(shared);
            return NextGroup::Stop;
        }
        let next_call_at_ms = shared
            .budget
            .next_call_at(Lane::Live, settings.budget, now_ms);
        self.behavior.on_reserve =
            next_call_at_ms > now_ms && self.live_reserve_open(shared, settings, now_ms);
        if next_call_at_ms > now_ms && !self.behavior.on_reserve {
            // Work may be waiting: say so (lane priority) and wake when the call is due.
            shared.budget.set_priority_work(true);
            self.behavior.view.next_call_at_ms = Some(next_call_at_ms);
            self.schedule_wake(next_call_at_ms, ctx);
            self.finish_round(shared);
            return NextGroup::Stop;
        }
        let generation = self.core.generation;
        if let Some(group) = self.behavior.follow_ups.pop_front() {
            let keys: Vec<_> = group.iter().map(LeasedEntry::key).collect();
            let expires_at_ms = now_ms.saturating_add(settings.submit.lease_timeout_ms);
            if !shared.leases.renew(generation, &keys, expires_at_ms) {
                return NextGroup::Skip; // Taken over: not ours to send any more.
            }
            return NextGroup::Send(group);
        }
        let on_reserve = self.behavior.on_reserve;
        let backfill_first = !on_reserve
            && backfill_turn(
                settings.budget.backfill_pct,
                self.behavior.view.calls_since_backfill,
            );
        let request = LeaseRequest {
            now_ms,
            generation,
            batch_max: settings.submit.batch_max.clamp(1, 100),
            lease_timeout_ms: settings.submit.lease_timeout_ms,
            contact_batch: settings.submit.contact_batch,
            backfill_first,
            // A short group of backfill gifts waits to be filled only while the job's reader
            // can still add to the lane (below its window): else it goes, so another
            // source's gifts or a full window can never hold it for good.
            backfill_min_gifts: if shared.backfill_feeding.load(Ordering::Acquire)
                && shared.tenant_store().lane_stats()[Lane::Backfill as usize]
                    .1
                    .depth
                    < crate::backfill::FEED_WINDOW
            {
                settings.submit.batch_max.clamp(1, 100)
            } else {
                1
            },
            live_only: on_reserve,
        };
        let batch = match shared.tenant_store().lease_ready(&shared.leases, request) {
            Ok(batch) => batch,
            Err(error) => {
                tracing::warn!(tenant_id = %shared.tenant_id, error = %error, "lease failed");
                self.schedule_wake(now_ms + STORE_ERROR_BACKOFF_MS, ctx);
                return NextGroup::Stop;
            }
        };
        if let Some(ready_at_ms) = batch.next_ready_at_ms {
            self.schedule_wake(ready_at_ms, ctx);
        }
        if batch.entries.is_empty() && on_reserve {
            // No live entry ready for the reserve: the backfill waits for its slot.
            shared.budget.set_priority_work(true);
            self.behavior.view.next_call_at_ms = Some(next_call_at_ms);
            self.schedule_wake(next_call_at_ms, ctx);
            self.finish_round(shared);
            return NextGroup::Stop;
        }
        if batch.entries.is_empty() {
            shared.budget.set_priority_work(false);
            self.behavior.view.next_call_at_ms = None;
            self.finish_round(shared);
            return NextGroup::Stop;
        }
        shared.budget.set_priority_work(true);
        NextGroup::Send(batch.entries)
    }

    /// Turns a leased group into one request (settling what needs no call), draws the call
    /// from the budget and sends it.
    fn prepare_and_send(
        &mut self,
        shared: &TenantShared,
        settings: &TenantSettings,
        retry: &RetryPolicy,
        group: Vec<LeasedEntry>,
        now_ms: u64,
        ctx: &mut Context<Self>,
    ) -> Round {
        // A waiting refund looks at its gift again after the first retry delay at first.
        let refund_recheck_min_ms = settings
            .submit
            .retry_schedule_ms
            .first()
            .copied()
            .unwrap_or(10_000);
        let store = shared.tenant_store();
        let prepared = prepare(
            group,
            |source, source_id| {
                store
                    .get_record(RecordKind::Gift, source, source_id)
                    .ok()
                    .flatten()
                    .and_then(|record| record.virtuous_id)
            },
            now_ms,
            refund_recheck_min_ms,
            settings.submit.contact_batch,
        );
        if !prepared.settle_now.is_empty() {
            // A backfill refund still waiting for its gift used the backfill's turn: the next
            // lease is live's again (else every waiting refund would be looked at before any
            // live entry).
            if prepared
                .settle_now
                .iter()
                .any(|(leased, _)| leased.lane == Lane::Backfill)
            {
                self.behavior.view.calls_since_backfill = 0;
            }
            self.complete(prepared.settle_now, now_ms, retry);
        }
        let Some((request, items)) = prepared.call else {
            return Round::Continue;
        };
        let drawn = if self.behavior.on_reserve {
            shared
                .budget
                .draw_live_reserve(settings.budget, now_ms, shared.tenant_store())
        } else {
            shared
                .budget
                .draw(Lane::Live, settings.budget, now_ms, shared.tenant_store())
        };
        if drawn.is_ok() && self.behavior.on_reserve {
            self.behavior.view.live_reserve_calls += 1;
            metrics::counter!(crate::metrics::LIVE_RESERVE_CALLS_TOTAL).increment(1);
        }
        if let Err(retry_at_ms) = drawn {
            // Raced with another lane: keep the group leased and send it first.
            self.behavior
                .follow_ups
                .push_front(items.into_iter().flatten().collect());
            self.schedule_wake(retry_at_ms, ctx);
            self.finish_round(shared);
            return Round::Done;
        }
        self.send(request, items, now_ms, ctx);
        Round::Done
    }

    /// Whether the next call may go on live's reserve: a backfill holds the budget's spare
    /// calls (its lane has entries), live or retry entries wait, no follow-up is due, and
    /// the reserve's slot is open.
    fn live_reserve_open(
        &self,
        shared: &TenantShared,
        settings: &TenantSettings,
        now_ms: u64,
    ) -> bool {
        if !self.behavior.follow_ups.is_empty() {
            return false;
        }
        let lanes = shared.tenant_store().lane_stats();
        let depth = |lane: Lane| lanes[lane as usize].1.depth;
        depth(Lane::Backfill) > 0
            && depth(Lane::Live) + depth(Lane::Retry) > 0
            && shared.budget.live_reserve_at(settings.budget, now_ms) <= now_ms
    }

    fn finish_round(&mut self, shared: &TenantShared) {
        self.behavior.view.queued_total = shared.tenant_store().queued_total();
        self.behavior.view.budget = Some(shared.budget.view(shared.clock.now_ms()));
        self.publish();
    }

    fn send(
        &mut self,
        request: CrmWrite,
        items: Vec<Vec<LeasedEntry>>,
        now_ms: u64,
        ctx: &mut Context<Self>,
    ) {
        let attempt = items
            .iter()
            .flatten()
            .map(|leased| leased.entry.attempts)
            .max()
            .unwrap_or(0)
            .saturating_add(1);
        let item_count = request.item_count();
        let carries_backfill = items
            .iter()
            .flatten()
            .any(|leased| leased.lane == Lane::Backfill);
        if carries_backfill {
            self.core.shared.note_backfill_call(now_ms);
        }
        let view = &mut self.behavior.view;
        if carries_backfill {
            view.backfill_calls += 1;
            view.calls_since_backfill = 0;
        } else {
            view.calls_since_backfill = view.calls_since_backfill.saturating_add(1);
        }
        view.in_flight = true;
        view.calls += 1;
        view.items_sent += item_count as u64;
        view.last_call_at_ms = Some(now_ms);
        view.next_call_at_ms = None;
        metrics::histogram!(SUBMIT_BATCH_SIZE, LABEL_ACTOR => ActorKind::Submitter.name())
            .record(item_count as f64);
        let shared = Arc::clone(&self.core.shared);
        self.finish_round(&shared);
        let in_flight = InFlight {
            items,
            attempt,
            item_count,
        };
        let answer = shared.crm().write(request);
        ctx.spawn(
            answer
                .into_actor(self)
                .map(move |reply, submitter, ctx| submitter.on_reply(reply, in_flight, ctx)),
        );
    }

    // Size: 82 lines — classify, budget, complete, follow-ups, metrics: one answer's effects.
    fn on_reply(&mut self, reply: CrmReply, in_flight: InFlight, ctx: &mut Context<Self>) {
        // A deferred stop waits for exactly this answer: record it, then stop.
        if !self.core.stop_deferred && !self.may_act(ctx) {
            // Replaced while the call was out: its successor owns these entries now.
            metrics::counter!(STALE_COMPLETIONS_REFUSED_TOTAL, LABEL_ACTOR => ActorKind::Submitter.name())
                .increment(in_flight.items.iter().flatten().count() as u64);
            return;
        }
        let shared = Arc::clone(&self.core.shared);
        let now_ms = shared.clock.now_ms();
        self.behavior.view.in_flight = false;
        shared.observe_reachability(&reply, now_ms);
        shared.budget.observe(reply.rate_limit, now_ms);
        if reply.rate_limit.limit.is_some() || reply.rate_limit.remaining.is_some() {
            shared.record_rate_limit_headers(RateLimitHeaders {
                limit: reply.rate_limit.limit,
                remaining: reply.rate_limit.remaining,
            });
        }
        let mut facts = reply.facts;
        facts.attempt = in_flight.attempt;
        facts.item_count = in_flight.item_count;
        facts.is_write = true;
        let status = facts.status;
        let outcome = classify(facts);
        let class = class_name(&outcome);
        self.behavior.view.last_outcome = Some(class);
        let view = &mut self.behavior.view;
        if matches!(class, "transient" | "unknown") {
            view.failed_calls_in_a_row = view.failed_calls_in_a_row.saturating_add(1);
            let first_retry_ms = shared
                .settings()
                .submit
                .retry_schedule_ms
                .first()
                .copied()
                .unwrap_or(10_000);
            let backoff_ms = failure_backoff_ms(view.failed_calls_in_a_row, first_retry_ms);
            view.failure_backoff_until_ms = (backoff_ms > 0).then(|| now_ms + backoff_ms);
        } else {
            view.failed_calls_in_a_row = 0;
            view.failure_backoff_until_ms = None;
        }
        metrics::counter!(CRM_CALLS_TOTAL, LABEL_ACTOR => ActorKind::Submitter.name(), LABEL_OUTCOME => class)
            .increment(1);
        tracing::debug!(tenant_id = %shared.tenant_id, outcome = class, status, items = in_flight.item_count, elapsed_ms = reply.elapsed_ms, "submitted");
        let settled = settle(outcome, in_flight.items, status, now_ms);
        if let Some(retry_after_ms) = settled.throttled_ms {
            shared.budget.throttled(retry_after_ms, now_ms);
            self.behavior.view.throttled += 1;
            metrics::counter!(CRM_THROTTLED_TOTAL, LABEL_ACTOR => ActorKind::Submitter.name())
                .increment(1);
        }
        if let Some(reason) = &settled.needs_operator {
            self.needs_operator(reason, status, now_ms);
        }
        let settings = shared.settings();
        let retry = RetryPolicy::from_settings(
            &settings.submit.retry_schedule_ms,
            settings.submit.retry_jitter_pct,
        );
        if settled
            .completions
            .iter()
            .any(|(_, completion)| matches!(completion, Completion::Accepted))
        {
            crate::failpoint::crash_point(crate::failpoint::AFTER_ACCEPT_BEFORE_SUBMITTED);
        }
        self.complete(settled.completions, now_ms, &retry);
        if self.finish_deferred_stop(ctx) {
            // Follow-ups stay leased in memory only: they go again after the restart.
            return;
        }
        // Sent again at once, in order, before anything new is leased.
        for group in settled.follow_ups.into_iter().rev() {
            self.behavior.follow_ups.push_front(group);
        }
        if settled.needs_operator.is_some() {
            self.release_follow_ups();
        }
        self.finish_round(&shared);
        self.pump(ctx);
    }

    /// Completes entries in one store batch and counts what happened.
    fn complete(
        &mut self,
        results: Vec<(LeasedEntry, Completion)>,
        now_ms: u64,
        retry: &RetryPolicy,
    ) {
        let shared = Arc::clone(&self.core.shared);
        let generation = self.core.generation;
        match shared.tenant_store().complete_leased(
            &shared.leases,
            generation,
            now_ms,
            results,
            retry,
        ) {
            Ok(report) => {
                // Ask for a flush now instead of leaving the completion (and the call-log
                // mark written before the call) to sled's background flush (≤ 500 ms): a
                // crash then re-sends at most one group-commit cycle of completions (same
                // idempotency keys). Not awaited: the next call does not wait for the disk.
                let store = shared.store().clone();
                let tenant_id = shared.tenant_id.clone();
                actix::spawn(async move {
                    if let Err(error) = store.durable().await {
                        tracing::error!(tenant_id = %tenant_id, error = %error, "flushing completions failed");
                    }
                });
                let view = &mut self.behavior.view;
                view.items_accepted += report.accepted;
                view.items_retried += report.retried;
                view.items_dead += report.dead;
                view.stale_completions_refused += report.refused_stale;
                let actor = ActorKind::Submitter.name();
                if report.accepted > 0 {
                    metrics::counter!(ITEMS_SUBMITTED_TOTAL, LABEL_ACTOR => actor)
                        .increment(report.accepted);
                }
                if report.dead > 0 {
                    metrics::counter!(DEAD_LETTERS_TOTAL, LABEL_ACTOR => actor)
                        .increment(report.dead);
                    tracing::warn!(tenant_id = %shared.tenant_id, dead = report.dead, "entries dead-lettered");
                    shared.entries_dead_lettered(report.dead, now_ms);
                }
                if report.refused_stale > 0 {
                    metrics::counter!(STALE_COMPLETIONS_REFUSED_TOTAL, LABEL_ACTOR => actor)
                        .increment(report.refused_stale);
                    tracing::warn!(tenant_id = %shared.tenant_id, refused = report.refused_stale, generation, "completion refused: leases no longer held by this generation");
                }
            }
            Err(error) => {
                // Leases stay until they expire; the entries are still queued (the batch is
                // atomic), so they go again.
                tracing::error!(tenant_id = %shared.tenant_id, error = %error, "completion failed");
            }
        }
    }

    /// 401/403 (alert `auth_failed`), or a Virtuous that cannot be called as configured — no
    /// client, a redirect (alert `crm_misconfigured`, never reported as a 401): the tenant's
    /// shared reaction (pause, needs_operator, alert once), shown here.
    fn needs_operator(&mut self, reason: &str, status: Option<u16>, now_ms: u64) {
        match status {
            Some(401 | 403) => self.core.shared.credentials_refused(reason, now_ms),
            _ => self.core.shared.crm_misconfigured(reason, now_ms),
        }
        self.behavior.view.paused = true;
        self.behavior.view.needs_operator = true;
    }

    /// Drops the follow-up groups' leases (paused: they go again from the store later).
    fn release_follow_ups(&mut self) {
        let keys: Vec<_> = self
            .behavior
            .follow_ups
            .drain(..)
            .flatten()
            .map(|leased| leased.key())
            .collect();
        if !keys.is_empty() {
            self.core.shared.leases.release(self.core.generation, &keys);
        }
    }

    fn schedule_wake(&mut self, at_ms: u64, ctx: &mut Context<Self>) {
        let now_ms = self.core.shared.clock.now_ms();
        let at_ms = at_ms.min(now_ms.saturating_add(WAKE_DELAY_MAX_MS));
        if self
            .behavior
            .wake_at_ms
            .is_some_and(|pending| pending <= at_ms)
        {
            return;
        }
        self.behavior.wake_at_ms = Some(at_ms);
        let delay = Duration::from_millis(at_ms.saturating_sub(now_ms));
        ctx.run_later(delay, move |submitter, ctx| {
            if submitter.behavior.wake_at_ms == Some(at_ms) {
                submitter.behavior.wake_at_ms = None;
            }
            submitter.pump(ctx);
        });
    }
}

impl Handler<WorkHint> for SubmitterActor {
    type Result = ();

    fn handle(&mut self, mut hint: WorkHint, ctx: &mut Context<Self>) {
        hint.guard.mark_handling();
        if !self.may_act(ctx) {
            return;
        }
        self.behavior.view.work_hints += 1;
        self.behavior.view.queued_total = self.core.shared.tenant_store().queued_total();
        self.publish();
        self.pump(ctx);
    }
}

impl Handler<Wake> for SubmitterActor {
    type Result = ();

    fn handle(&mut self, mut wake: Wake, ctx: &mut Context<Self>) {
        wake.guard.mark_handling();
        self.pump(ctx);
    }
}

impl Handler<SetPaused> for SubmitterActor {
    type Result = ();

    fn handle(&mut self, mut message: SetPaused, ctx: &mut Context<Self>) {
        message.guard.mark_handling();
        if !self.may_act(ctx) {
            return;
        }
        self.behavior.view.paused = message.paused;
        self.publish();
        if !message.paused {
            self.pump(ctx);
        }
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;

/// Whether the next lease is the `backfill` lane's turn: with a guaranteed share of `pct` %,
/// at least one call in every `ceil(100 / pct)` carries backfill entries while live work
/// waits (when live has none, the usual lease reaches the backfill lane by itself).
pub fn backfill_turn(pct: u8, calls_since_backfill: u32) -> bool {
    if pct == 0 {
        return false;
    }
    let every = 100u32.div_ceil(u32::from(pct.min(100)));
    calls_since_backfill.saturating_add(1) >= every
}
