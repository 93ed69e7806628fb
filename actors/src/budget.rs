//! The tenant's hourly budget (docs/operations.md): the allowance arithmetic, the status the admin
//! API shows, and the [`BudgetLedger`] every Virtuous call is drawn from.
//!
//! The ledger (pure; time comes in as arguments, so tests drive it with a `ManualClock`):
//! - **Allowance** `A` = [`allowance_per_hour`] of the configured limit and the latest
//!   `X-RateLimit-Limit`.
//! - **Pacing** at `A/3600` per second with a burst of `burst_calls`, as a GCRA (virtual
//!   scheduling) in integer microseconds; the interval is rounded *up*, so pacing alone never
//!   exceeds `A`. A new ledger starts with an empty bucket: the first call waits one interval.
//!   A call up to half an interval late keeps the schedule (see [`BudgetLedger::spend`]).
//! - **Window**: the times of the calls of the last hour, loaded from the persisted call log
//!   at start, so at most `A` calls fall in any 3,600 s window across restarts.
//! - **Holds**: a `429` stops calls until `Retry-After`; an answer whose
//!   `X-RateLimit-Remaining` ≤ `reserve_pct` % of its limit stops them until
//!   `X-RateLimit-Reset` (60 s when the answer has no reset time).
//! - **Lanes**: the submitter draws at [`Lane::Live`]; the reconciler at
//!   [`Lane::Reconcile`]. A reconcile/backfill call is granted when the submitter has no
//!   ready work waiting, and in any case after [`PRIORITY_CALLS_PER_LOW_CALL`] priority calls
//!   since the last low-lane call (a floor of about 10 %, so confirmation is never starved).
//!
//! [`SharedBudget`] (in `TenantShared::budget`) is the ledger behind a mutex plus the write of
//! each granted call to the store's call log.

// Size: over 500 lines with its inline property tests; the production part is ~475.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::ports::{Clock, RateLimitFacts};
use crate::store::{Lane, TenantStore};

/// Alert raised when Virtuous refuses the tenant's credentials (401/403), whoever called.
pub const AUTH_FAILED_ALERT: &str = "auth_failed";

/// One hour, the budget window.
pub const BUDGET_WINDOW_MS: u64 = 3_600_000;
/// Calls the pacing bucket holds for live entries beyond `burst_calls` while a backfill
/// takes every spare call ([`BudgetLedger::try_spend_live_reserve`]).
pub const LIVE_RESERVE_CALLS: u64 = 1;

/// Budget settings of a tenant (`budget.*` in the tenant document).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetSettings {
    /// Calls per hour Steward may assume before a response header says otherwise.
    pub hourly_limit: u64,
    /// Share of the limit left for the customer's other tools, 0–100.
    pub reserve_pct: u8,
    /// Calls that may go back to back before pacing applies.
    pub burst_calls: u32,
    /// The `backfill` lane's guaranteed share of the submitter's calls while live work
    /// waits, 0–100 (it gets every spare call anyway).
    pub backfill_pct: u8,
}

impl Default for BudgetSettings {
    fn default() -> BudgetSettings {
        BudgetSettings {
            hourly_limit: 5_000,
            reserve_pct: 10,
            burst_calls: 1,
            backfill_pct: 20,
        }
    }
}

/// The latest `X-RateLimit-*` values seen on a Virtuous response (none yet: no calls).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RateLimitHeaders {
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
}

/// `A = floor(min(hourly_limit, header_limit) × (1 − reserve_pct/100))`.
///
/// Integer arithmetic (no float rounding): `floor(limit × (100 − pct) / 100)`. A
/// `reserve_pct` above 100 is treated as 100 (allowance 0) rather than wrapping.
pub fn allowance_per_hour(hourly_limit: u64, header_limit: Option<u64>, reserve_pct: u8) -> u64 {
    let effective_limit = match header_limit {
        Some(header_limit) => hourly_limit.min(header_limit),
        None => hourly_limit,
    };
    let kept_pct = 100 - u64::from(reserve_pct.min(100));
    // u128 so a huge configured limit cannot overflow the multiplication.
    ((u128::from(effective_limit) * u128::from(kept_pct)) / 100) as u64
}

/// While priority work waits, a low lane still gets one call after this many priority calls.
pub const PRIORITY_CALLS_PER_LOW_CALL: u32 = 9;
/// How long calls stop after a low `X-RateLimit-Remaining` that came without a reset time.
pub const LOW_REMAINING_DEFAULT_HOLD_MS: u64 = 60_000;
/// A low lane that asked within this many pacing intervals still counts as waiting.
const LOW_LANE_WAITING_INTERVALS: u64 = 3;

/// Why calls are stopped now (status and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldReason {
    /// A `429` asked to wait (`Retry-After`).
    Throttled,
    /// `X-RateLimit-Remaining` fell to the reserve: wait for `X-RateLimit-Reset`.
    ReserveReached,
}

/// What the ledger shows (submitter observed state, tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LedgerView {
    pub allowance_per_hour: u64,
    pub calls_in_window: u64,
    pub hold_until_ms: Option<u64>,
    pub hold_reason: Option<HoldReason>,
    pub throttled_total: u64,
}

/// The tenant's call ledger (see the module docs).
#[derive(Debug, Clone)]
pub struct BudgetLedger {
    settings: BudgetSettings,
    header_limit: Option<u64>,
    /// Calls of the last hour, oldest first.
    window: VecDeque<u64>,
    /// GCRA theoretical arrival time, µs since the epoch.
    tat_us: u64,
    hold_until_ms: u64,
    hold_reason: Option<HoldReason>,
    /// The submitter has ready entries waiting for a call.
    priority_work: bool,
    priority_calls_since_low: u32,
    /// When a low lane last asked and was refused (0 = not waiting).
    low_lane_waiting_since_ms: u64,
    throttled_total: u64,
}

impl BudgetLedger {
    /// A ledger with an empty bucket at `now_ms`, its window loaded from `recent_calls_ms`
    /// (the call log of the last hour, any order).
    pub fn new(settings: BudgetSettings, now_ms: u64, recent_calls_ms: Vec<u64>) -> BudgetLedger {
        let mut window: Vec<u64> = recent_calls_ms
            .into_iter()
            .filter(|&at| at.saturating_add(BUDGET_WINDOW_MS) > now_ms)
            .collect();
        window.sort_unstable();
        let mut ledger = BudgetLedger {
            settings,
            header_limit: None,
            window: window.into(),
            tat_us: 0,
            hold_until_ms: 0,
            hold_reason: None,
            priority_work: false,
            priority_calls_since_low: 0,
            low_lane_waiting_since_ms: 0,
            throttled_total: 0,
        };
        ledger.empty_bucket(now_ms);
        ledger
    }

    /// Empties the bucket at `now_ms`: the next call waits one interval (a start or restart
    /// never refills it; live's reserve, one call deeper, may still go at once — the hourly
    /// window, loaded from the call log, bounds it as every call).
    fn empty_bucket(&mut self, now_ms: u64) {
        let burst = u64::from(self.settings.burst_calls.max(1));
        self.tat_us = now_ms
            .saturating_mul(1_000)
            .saturating_add(burst.saturating_mul(self.interval_us()));
    }

    pub fn settings(&self) -> BudgetSettings {
        self.settings
    }

    /// New settings (the bucket keeps its level).
    pub fn set_settings(&mut self, settings: BudgetSettings) {
        self.settings = settings;
    }

    pub fn allowance(&self) -> u64 {
        allowance_per_hour(
            self.settings.hourly_limit,
            self.header_limit,
            self.settings.reserve_pct,
        )
    }

    /// Pacing interval, µs, rounded up (`u64::MAX / 4` when the allowance is 0).
    fn interval_us(&self) -> u64 {
        let allowance = self.allowance();
        if allowance == 0 {
            return u64::MAX / 4;
        }
        (BUDGET_WINDOW_MS * 1_000).div_ceil(allowance)
    }

    fn prune(&mut self, now_ms: u64) {
        while self
            .window
            .front()
            .is_some_and(|&at| at.saturating_add(BUDGET_WINDOW_MS) <= now_ms)
        {
            self.window.pop_front();
        }
    }

    /// Index of the first call still in the window ending at `now_ms` (the window is sorted).
    fn window_start(&self, now_ms: u64) -> usize {
        self.window
            .partition_point(|&at| at.saturating_add(BUDGET_WINDOW_MS) <= now_ms)
    }

    /// Calls in the window ending at `now_ms`.
    pub fn calls_in_window(&self, now_ms: u64) -> u64 {
        (self.window.len() - self.window_start(now_ms)) as u64
    }

    /// The earliest time (≥ `now_ms`) a priority call may be made; `u64::MAX` when the
    /// allowance is 0.
    pub fn next_call_at(&self, now_ms: u64) -> u64 {
        self.next_call_at_with(now_ms, 0)
    }

    /// The earliest time a call on live's reserve may be made: the bucket holds
    /// [`LIVE_RESERVE_CALLS`] more than `burst_calls` for it (see [`Self::try_spend_live_reserve`]).
    pub fn live_reserve_at(&self, now_ms: u64) -> u64 {
        self.next_call_at_with(now_ms, LIVE_RESERVE_CALLS)
    }

    /// [`Self::next_call_at`] with `extra_burst` more calls in the bucket (the hourly window
    /// and the holds are the same).
    fn next_call_at_with(&self, now_ms: u64, extra_burst: u64) -> u64 {
        let allowance = self.allowance();
        if allowance == 0 {
            return u64::MAX;
        }
        let burst = u64::from(self.settings.burst_calls.max(1)) + extra_burst;
        let pacing_us = self
            .tat_us
            .saturating_sub((burst - 1).saturating_mul(self.interval_us()));
        let pacing_ms = pacing_us.div_ceil(1_000);
        // The window: with n calls in it, call n−A+1 from the front must have left it.
        let start = self.window_start(now_ms);
        let in_window = (self.window.len() - start) as u64;
        let window_ms = if in_window >= allowance {
            let index = start + (in_window - allowance) as usize;
            self.window[index].saturating_add(BUDGET_WINDOW_MS)
        } else {
            0
        };
        now_ms.max(pacing_ms).max(window_ms).max(self.hold_until_ms)
    }

    /// The earliest time a call at `lane` may be made (low lanes also wait for priority work,
    /// see the module docs).
    pub fn next_call_at_for(&self, lane: Lane, now_ms: u64) -> u64 {
        let next = self.next_call_at(now_ms);
        if self.low_lane_must_wait(lane) {
            // Not before another priority call could go.
            return next.max(now_ms.saturating_add(self.interval_us().div_ceil(1_000)));
        }
        next
    }

    fn low_lane_must_wait(&self, lane: Lane) -> bool {
        matches!(lane, Lane::Reconcile | Lane::Backfill)
            && self.priority_work
            && self.priority_calls_since_low < PRIORITY_CALLS_PER_LOW_CALL
    }

    /// Records one call at `now_ms` (pacing and window). Prefer [`BudgetLedger::try_spend`].
    pub fn spend(&mut self, now_ms: u64) {
        self.prune(now_ms);
        // Kept sorted even if the clock stepped back.
        let at = self.window.partition_point(|&earlier| earlier <= now_ms);
        self.window.insert(at, now_ms);
        // A call made less than half an interval after its slot came due keeps the schedule:
        // timers fire late and clocks tick in ms, and restarting from `now` would lose that
        // time on every call (the allowance would go unused). The average rate stays A/3600;
        // a late call may be followed by one half an interval sooner.
        let now_us = now_ms.saturating_mul(1_000);
        let slack_us = (self.interval_us() / 2).max(1_000);
        let base_us = if now_us < self.tat_us.saturating_add(slack_us) {
            self.tat_us
        } else {
            now_us
        };
        self.tat_us = base_us.saturating_add(self.interval_us());
    }

    /// Grants and spends a call at `lane` now, or tells when to ask again.
    pub fn try_spend(&mut self, lane: Lane, now_ms: u64) -> Result<(), u64> {
        let is_low = matches!(lane, Lane::Reconcile | Lane::Backfill);
        let next = self.next_call_at_for(lane, now_ms);
        if next > now_ms {
            if is_low {
                self.low_lane_waiting_since_ms = now_ms.max(1);
            }
            return Err(next);
        }
        if !is_low && self.low_lane_is_owed(now_ms) {
            // The low lane's turn: leave this call to it for one interval.
            return Err(now_ms.saturating_add(self.interval_us().div_ceil(1_000)));
        }
        self.spend(now_ms);
        if is_low {
            self.priority_calls_since_low = 0;
            self.low_lane_waiting_since_ms = 0;
        } else {
            self.priority_calls_since_low = self.priority_calls_since_low.saturating_add(1);
        }
        Ok(())
    }

    /// Grants and spends a call on live's reserve now (the submitter sends live entries
    /// only with it, while a backfill holds the lane's calls), or tells when to ask again.
    /// The hourly window and the holds apply as to any call: only the pacing's burst is one
    /// call deeper, so a live payment arriving right after a backfill batch is not made to
    /// wait a whole pacing interval. Each reserve call delays the next ordinary call by one
    /// interval, so the rate over time stays `A/3600`.
    pub fn try_spend_live_reserve(&mut self, now_ms: u64) -> Result<(), u64> {
        let next = self.live_reserve_at(now_ms);
        if next > now_ms {
            return Err(next);
        }
        if self.low_lane_is_owed(now_ms) {
            return Err(now_ms.saturating_add(self.interval_us().div_ceil(1_000)));
        }
        self.spend(now_ms);
        self.priority_calls_since_low = self.priority_calls_since_low.saturating_add(1);
        Ok(())
    }

    fn low_lane_is_owed(&self, now_ms: u64) -> bool {
        let waiting_for_ms = LOW_LANE_WAITING_INTERVALS
            .saturating_mul(self.interval_us().div_ceil(1_000))
            .max(1_000);
        self.low_lane_waiting_since_ms != 0
            && now_ms.saturating_sub(self.low_lane_waiting_since_ms) <= waiting_for_ms
            && self.priority_calls_since_low >= PRIORITY_CALLS_PER_LOW_CALL
    }

    /// The submitter says whether ready entries wait for a call (lane priority).
    pub fn set_priority_work(&mut self, waiting: bool) {
        self.priority_work = waiting;
    }

    /// Header sync after any answer: the limit corrects the allowance; a remaining count at
    /// or below the reserve stops calls until the reset.
    pub fn observe(&mut self, facts: RateLimitFacts, now_ms: u64) {
        if let Some(limit) = facts.limit {
            self.header_limit = Some(limit);
        }
        let limit = facts.limit.or(self.header_limit);
        if let (Some(limit), Some(remaining)) = (limit, facts.remaining) {
            let reserve = u128::from(limit) * u128::from(self.settings.reserve_pct.min(100));
            if u128::from(remaining) * 100 <= reserve {
                let until_ms = facts
                    .reset_unix_s
                    .map(|reset| reset.saturating_mul(1_000))
                    .filter(|&reset_ms| reset_ms > now_ms)
                    .unwrap_or(now_ms.saturating_add(LOW_REMAINING_DEFAULT_HOLD_MS));
                self.hold(until_ms, HoldReason::ReserveReached);
            }
        }
    }

    /// A `429`: nothing is sent for `retry_after_ms`.
    pub fn throttled(&mut self, retry_after_ms: u64, now_ms: u64) {
        self.throttled_total += 1;
        self.hold(now_ms.saturating_add(retry_after_ms), HoldReason::Throttled);
    }

    fn hold(&mut self, until_ms: u64, reason: HoldReason) {
        if until_ms > self.hold_until_ms {
            self.hold_until_ms = until_ms;
            self.hold_reason = Some(reason);
        }
    }

    pub fn view(&self, now_ms: u64) -> LedgerView {
        let held = self.hold_until_ms > now_ms;
        LedgerView {
            allowance_per_hour: self.allowance(),
            calls_in_window: self.calls_in_window(now_ms),
            hold_until_ms: held.then_some(self.hold_until_ms),
            hold_reason: if held { self.hold_reason } else { None },
            throttled_total: self.throttled_total,
        }
    }
}

/// The tenant's ledger as its actors share it (`TenantShared::budget`): a mutex around
/// [`BudgetLedger`], plus the write of every granted call to the persisted call log.
#[derive(Debug)]
pub struct SharedBudget {
    ledger: Mutex<BudgetLedger>,
}

impl SharedBudget {
    /// An empty-bucket ledger with an empty window (until [`SharedBudget::load_call_log`]
    /// runs).
    pub fn new(settings: BudgetSettings, now_ms: u64) -> SharedBudget {
        SharedBudget {
            ledger: Mutex::new(BudgetLedger::new(settings, now_ms, Vec::new())),
        }
    }

    /// The ledger itself (short critical sections only; never across an `.await`).
    pub fn lock(&self) -> MutexGuard<'_, BudgetLedger> {
        self.ledger
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Loads the last hour of the persisted call log (at tenant start): a restart does not
    /// refill the budget.
    pub fn load_call_log(
        &self,
        store: &TenantStore,
        now_ms: u64,
    ) -> Result<(), crate::store::StoreError> {
        let since_ms = now_ms.saturating_sub(BUDGET_WINDOW_MS);
        let times = store.call_times_since(since_ms)?;
        let mut ledger = self.lock();
        let settings = ledger.settings();
        *ledger = BudgetLedger::new(settings, now_ms, times);
        Ok(())
    }

    /// Draws one call at `lane` now: granted → spent in memory and recorded in the call log;
    /// refused → `Err(when to ask again)`. Call right before
    /// the HTTP call. `settings` are the tenant's current budget settings.
    pub fn draw(
        &self,
        lane: Lane,
        settings: BudgetSettings,
        now_ms: u64,
        store: &TenantStore,
    ) -> Result<(), u64> {
        self.draw_with(settings, now_ms, store, |ledger| {
            ledger.try_spend(lane, now_ms)
        })
    }

    /// Draws one call on live's reserve ([`BudgetLedger::try_spend_live_reserve`]), recorded
    /// in the call log like any other.
    pub fn draw_live_reserve(
        &self,
        settings: BudgetSettings,
        now_ms: u64,
        store: &TenantStore,
    ) -> Result<(), u64> {
        self.draw_with(settings, now_ms, store, |ledger| {
            ledger.try_spend_live_reserve(now_ms)
        })
    }

    fn draw_with(
        &self,
        settings: BudgetSettings,
        now_ms: u64,
        store: &TenantStore,
        spend: impl FnOnce(&mut BudgetLedger) -> Result<(), u64>,
    ) -> Result<(), u64> {
        {
            let mut ledger = self.lock();
            if ledger.settings() != settings {
                ledger.set_settings(settings);
            }
            spend(&mut ledger)?;
        }
        if let Err(error) = store.record_call(now_ms) {
            // The in-memory window still counts the call; only a restart could forget it.
            tracing::warn!(tenant_id = %store.tenant_id(), error = %error, "call log write failed");
        }
        Ok(())
    }

    /// When a call on live's reserve could be drawn.
    pub fn live_reserve_at(&self, settings: BudgetSettings, now_ms: u64) -> u64 {
        let mut ledger = self.lock();
        if ledger.settings() != settings {
            ledger.set_settings(settings);
        }
        ledger.live_reserve_at(now_ms)
    }

    /// When a call at `lane` could be drawn.
    pub fn next_call_at(&self, lane: Lane, settings: BudgetSettings, now_ms: u64) -> u64 {
        let mut ledger = self.lock();
        if ledger.settings() != settings {
            ledger.set_settings(settings);
        }
        ledger.next_call_at_for(lane, now_ms)
    }

    /// Header sync after any answer.
    pub fn observe(&self, facts: RateLimitFacts, now_ms: u64) {
        self.lock().observe(facts, now_ms);
    }

    /// A `429` answered: stop calls for `retry_after_ms`.
    pub fn throttled(&self, retry_after_ms: u64, now_ms: u64) {
        self.lock().throttled(retry_after_ms, now_ms);
    }

    pub fn set_priority_work(&self, waiting: bool) {
        self.lock().set_priority_work(waiting);
    }

    pub fn view(&self, now_ms: u64) -> LedgerView {
        self.lock().view(now_ms)
    }
}

/// The budget part of the tenant status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BudgetStatus {
    pub allowance_per_hour: u64,
    pub spent_last_hour: u64,
    pub header_limit: Option<u64>,
    pub header_remaining: Option<u64>,
}

impl BudgetStatus {
    /// Reads the call log for the last hour. A store error is reported as `Err` so the
    /// caller can decide how to show it (the status shows 0 and logs a warning).
    pub fn compute(
        settings: &BudgetSettings,
        headers: RateLimitHeaders,
        store: &TenantStore,
        clock: &dyn Clock,
    ) -> Result<BudgetStatus, crate::store::StoreError> {
        let since_ms = clock.now_ms().saturating_sub(BUDGET_WINDOW_MS);
        let spent_last_hour = store.calls_since(since_ms)?;
        Ok(BudgetStatus {
            allowance_per_hour: allowance_per_hour(
                settings.hourly_limit,
                headers.limit,
                settings.reserve_pct,
            ),
            spent_last_hour,
            header_limit: headers.limit,
            header_remaining: headers.remaining,
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::ports::ManualClock;

    #[test]
    fn allowance_examples_from_the_design() {
        // Goal: the documented defaults give 4,500 calls; the header wins when lower.
        assert_eq!(allowance_per_hour(5_000, None, 10), 4_500);
        assert_eq!(allowance_per_hour(5_000, Some(1_500), 10), 1_350);
        assert_eq!(allowance_per_hour(1_500, Some(5_000), 10), 1_350);
        assert_eq!(allowance_per_hour(999, None, 10), 899);
        assert_eq!(allowance_per_hour(5_000, None, 0), 5_000);
        assert_eq!(allowance_per_hour(5_000, None, 100), 0);
        assert_eq!(allowance_per_hour(5_000, None, 250), 0);
    }

    proptest! {
        #[test]
        fn allowance_matches_the_formula(limit in 0u64..10_000_000, header in proptest::option::of(0u64..10_000_000), pct in 0u8..=100) {
            // Goal: the integer form equals floor(min(limit, header) × (1 − pct/100)) computed exactly.
            let effective = header.map_or(limit, |header| limit.min(header));
            let allowance = allowance_per_hour(limit, header, pct);
            // exact rational check: allowance ≤ effective×(100−pct)/100 < allowance + 1
            let scaled = u128::from(effective) * u128::from(100 - u64::from(pct));
            prop_assert!(u128::from(allowance) * 100 <= scaled);
            prop_assert!(scaled < (u128::from(allowance) + 1) * 100);
        }

        #[test]
        fn allowance_never_exceeds_either_limit_and_falls_with_reserve(limit in 0u64..u64::MAX, header in proptest::option::of(any::<u64>()), pct in 0u8..100) {
            // Goal: never above the configured limit or the header; more reserve never gives more calls.
            let allowance = allowance_per_hour(limit, header, pct);
            prop_assert!(allowance <= limit);
            if let Some(header) = header { prop_assert!(allowance <= header); }
            prop_assert!(allowance_per_hour(limit, header, pct + 1) <= allowance);
        }
    }

    fn settings(hourly_limit: u64, reserve_pct: u8, burst_calls: u32) -> BudgetSettings {
        BudgetSettings {
            hourly_limit,
            reserve_pct,
            burst_calls,
            ..BudgetSettings::default()
        }
    }

    /// Calls greedily (at every `next_call_at`) from the clock's time until `until_ms`.
    fn call_greedily(ledger: &mut BudgetLedger, clock: &ManualClock, until_ms: u64) -> Vec<u64> {
        let mut calls = Vec::new();
        loop {
            let next = ledger.next_call_at(clock.now_ms());
            if next > until_ms {
                return calls;
            }
            clock.set_ms(next);
            ledger
                .try_spend(Lane::Live, next)
                .expect("granted at next_call_at");
            calls.push(next);
        }
    }

    /// The most calls in any window of `BUDGET_WINDOW_MS` (calls sorted).
    fn max_in_any_window(calls: &[u64]) -> usize {
        let mut best = 0;
        let mut start = 0;
        for (end, &at) in calls.iter().enumerate() {
            while calls[start] + BUDGET_WINDOW_MS <= at {
                start += 1;
            }
            best = best.max(end + 1 - start);
        }
        best
    }

    #[test]
    fn the_issue_budget_example_paces_54_calls_a_minute() {
        // Goal: hourly_limit 3,600 with 10 % reserve (A = 3,240, 0.9 calls/s) gives 53–55 calls in 60 s from an empty bucket.
        let clock = ManualClock::new(1_000_000);
        let start_ms = clock.now_ms();
        let mut ledger = BudgetLedger::new(settings(3_600, 10, 1), start_ms, Vec::new());
        assert_eq!(ledger.allowance(), 3_240);
        let calls = call_greedily(&mut ledger, &clock, start_ms + 60_000);
        assert!((53..=55).contains(&calls.len()), "{} calls", calls.len());
        // Empty bucket: the first call waits one interval (1,111.2 ms).
        assert_eq!(calls[0], start_ms + 1_112);
    }

    #[test]
    fn a_late_call_keeps_the_schedule_but_never_beats_the_window() {
        // Goal: a call 40 ms late (interval 100 ms) does not push the next slot back; one 60 ms late does.
        let mut ledger = BudgetLedger::new(settings(36_000, 0, 1), 0, Vec::new());
        assert_eq!(ledger.next_call_at(0), 100);
        ledger.spend(140);
        assert_eq!(ledger.next_call_at(140), 200);
        ledger.spend(260);
        assert_eq!(ledger.next_call_at(260), 360);
    }

    #[test]
    fn live_reserve_lets_one_call_go_at_once_after_a_paced_call_and_the_hour_stays_within_the_allowance(
    ) {
        // Goal: right after an ordinary call (burst 1, interval 100 ms) the next ordinary call waits 100 ms but a reserve call goes at once; the reserve call then delays the next ordinary one by an interval; taking every ordinary slot and every reserve slot for two hours never puts more than the allowance in any hour.
        let mut ledger = BudgetLedger::new(settings(36_000, 0, 1), 0, Vec::new());
        ledger.spend(100);
        assert_eq!(ledger.next_call_at(100), 200);
        assert_eq!(ledger.live_reserve_at(100), 100);
        ledger.try_spend_live_reserve(100).unwrap();
        assert_eq!(
            ledger.next_call_at(100),
            300,
            "the reserve call took a slot"
        );
        assert_eq!(
            ledger.try_spend_live_reserve(150),
            Err(200),
            "one reserve call, refilled after an interval"
        );

        let clock = ManualClock::new(10_000);
        let mut ledger = BudgetLedger::new(settings(36_000, 0, 1), 10_000, Vec::new());
        let mut calls = Vec::new();
        let until_ms = 10_000 + 2 * BUDGET_WINDOW_MS;
        loop {
            let now = clock.now_ms();
            let next = ledger.next_call_at(now).min(ledger.live_reserve_at(now));
            if next > until_ms {
                break;
            }
            clock.set_ms(next);
            let granted = ledger.try_spend_live_reserve(next).is_ok()
                || ledger.try_spend(Lane::Live, next).is_ok();
            assert!(granted, "a slot was open at {next}");
            calls.push(next);
        }
        assert!(
            max_in_any_window(&calls) as u64 <= ledger.allowance(),
            "{} calls in one hour, allowance {}",
            max_in_any_window(&calls),
            ledger.allowance()
        );
        assert!(
            calls.len() as u64 >= 2 * ledger.allowance() - 2,
            "{}",
            calls.len()
        );
    }

    #[test]
    fn holds_stop_calls_until_retry_after_or_reset() {
        // Goal: a 429 stops calls for Retry-After; remaining at the reserve stops them until the reset; a header limit lowers the allowance.
        let mut ledger = BudgetLedger::new(settings(36_000, 10, 1), 0, Vec::new());
        let ready = ledger.next_call_at(10_000);
        assert_eq!(ready, 10_000);
        ledger.throttled(5_000, 10_000);
        assert_eq!(ledger.next_call_at(10_000), 15_000);
        assert_eq!(ledger.view(10_000).hold_reason, Some(HoldReason::Throttled));
        // 11 of 100 left > 10 %: no hold; 10 of 100 left: hold until the reset second.
        let facts = |remaining, reset_unix_s| RateLimitFacts {
            limit: Some(100),
            remaining: Some(remaining),
            reset_unix_s,
        };
        ledger.observe(facts(11, Some(40)), 20_000);
        assert_eq!(ledger.next_call_at(20_000), 20_000);
        assert_eq!(ledger.allowance(), 90, "the header limit wins when lower");
        ledger.observe(facts(10, Some(40)), 20_000);
        assert_eq!(ledger.next_call_at(20_000), 40_000);
        assert_eq!(
            ledger.view(20_000).hold_reason,
            Some(HoldReason::ReserveReached)
        );
        // Without a reset time: the default hold.
        ledger.observe(facts(0, None), 50_000);
        assert_eq!(
            ledger.next_call_at(50_000),
            50_000 + LOW_REMAINING_DEFAULT_HOLD_MS
        );
        assert_eq!(ledger.view(0).throttled_total, 1);
    }

    #[test]
    fn a_restart_keeps_the_window_and_starts_with_an_empty_bucket() {
        // Goal: a ledger loaded with A calls of the last hour refuses until the oldest leaves the window, then paces from empty.
        let allowance = 90; // limit 100, reserve 10 %
        let calls: Vec<u64> = (0..allowance).map(|n| 1_000 + n * 10).collect();
        let now_ms = 100_000;
        let ledger = BudgetLedger::new(settings(100, 10, 5), now_ms, calls);
        assert_eq!(ledger.calls_in_window(now_ms), 90);
        assert_eq!(ledger.next_call_at(now_ms), 1_000 + BUDGET_WINDOW_MS);
        let fresh = BudgetLedger::new(settings(100, 10, 5), now_ms, Vec::new());
        // 40 s interval; burst 5 but the bucket starts empty: one interval for the first call.
        assert_eq!(fresh.next_call_at(now_ms), now_ms + 40_000);
    }

    #[test]
    fn low_lanes_wait_for_priority_work_but_are_never_starved() {
        // Goal: reconcile calls go when the submitter has no ready work; while it has, the reconciler still gets one call after every nine priority calls.
        let clock = ManualClock::new(0);
        let mut ledger = BudgetLedger::new(settings(3_600_000, 0, 1), 0, Vec::new());
        clock.set_ms(ledger.next_call_at(0));
        assert_eq!(ledger.try_spend(Lane::Reconcile, clock.now_ms()), Ok(()));
        ledger.set_priority_work(true);
        let (mut priority, mut low) = (0, 0);
        for _ in 0..200 {
            clock.advance_ms(1);
            let now_ms = clock.now_ms();
            // Both ask at every millisecond; the reconciler asks first.
            if ledger.try_spend(Lane::Reconcile, now_ms).is_ok() {
                low += 1;
            } else if ledger.try_spend(Lane::Live, now_ms).is_ok() {
                priority += 1;
            }
        }
        assert_eq!(low + priority, 200, "every call is used");
        assert_eq!(low, 20, "one in ten for the low lane");
        ledger.set_priority_work(false);
        clock.advance_ms(1);
        assert_eq!(ledger.try_spend(Lane::Reconcile, clock.now_ms()), Ok(()));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        #[test]
        fn never_more_than_the_allowance_in_any_window_across_a_restart(
            limit in 1u64..3_000, pct in 0u8..50, burst in 1u32..20,
            restart_after_ms in 0u64..2 * BUDGET_WINDOW_MS,
        ) {
            // Goal: greedy calling for 3 h, with a restart that reloads the call log, never puts more than A calls in any 3,600 s window.
            let clock = ManualClock::new(BUDGET_WINDOW_MS);
            let start_ms = clock.now_ms();
            let mut ledger = BudgetLedger::new(settings(limit, pct, burst), start_ms, Vec::new());
            let mut calls = call_greedily(&mut ledger, &clock, start_ms + restart_after_ms);
            clock.set_ms(start_ms + restart_after_ms);
            let mut reloaded = BudgetLedger::new(settings(limit, pct, burst), clock.now_ms(), calls.clone());
            calls.extend(call_greedily(&mut reloaded, &clock, start_ms + 3 * BUDGET_WINDOW_MS));
            let allowance = allowance_per_hour(limit, None, pct) as usize;
            prop_assert!(max_in_any_window(&calls) <= allowance,
                "{} > {}", max_in_any_window(&calls), allowance);
        }

        #[test]
        fn pacing_spaces_calls_by_the_interval(limit in 36u64..200_000, pct in 0u8..50) {
            // Goal: with burst 1, consecutive calls are at least 3,600,000/A ms apart (rounded down to the ms), and greedy calling reaches the paced rate (less the first interval and the µs rounding up of the interval).
            let clock = ManualClock::new(5_000);
            let mut ledger = BudgetLedger::new(settings(limit, pct, 1), 5_000, Vec::new());
            let allowance = allowance_per_hour(limit, None, pct);
            let horizon_ms = 600_000;
            let calls = call_greedily(&mut ledger, &clock, 5_000 + horizon_ms);
            let min_gap_ms = BUDGET_WINDOW_MS / allowance;
            for pair in calls.windows(2) {
                prop_assert!(pair[1] - pair[0] >= min_gap_ms, "gap {} < {}", pair[1] - pair[0], min_gap_ms);
            }
            let expected = allowance * horizon_ms / BUDGET_WINDOW_MS;
            prop_assert!(calls.len() as u64 + 2 + expected / 10_000 >= expected && calls.len() as u64 <= expected + 1,
                "{} calls, expected about {}", calls.len(), expected);
        }
    }

    #[test]
    fn shared_draws_record_calls_and_replies_hold_the_tenant() {
        // Goal: draw_call spends from the shared ledger (refusing within the interval) and a 429 seen by observe_reply stops every lane.
        let clock = std::sync::Arc::new(ManualClock::new(1_000_000));
        let settings = crate::runtime::TenantSettings {
            budget: settings(36_000, 0, 1),
            ..Default::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path(), Default::default()).unwrap();
        let shared = crate::hub::TenantShared::new(
            "t".into(),
            store.clone(),
            store.tenant("t").unwrap(),
            std::sync::Arc::new(crate::ports::UnconfiguredCrm {
                reason: "budget test".to_string(),
            }),
            clock.clone(),
            settings,
            crate::store::TenantRunState::Running,
        );
        clock.advance_ms(100);
        assert_eq!(shared.draw_call(Lane::Live), Ok(()));
        assert_eq!(shared.draw_call(Lane::Live), Err(1_000_200));
        clock.advance_ms(100);
        let mut facts = crate::outcome::ResponseFacts::answered(429);
        facts.retry_after_s = Some(3);
        shared.observe_reply(&crate::ports::CrmReply {
            facts,
            rate_limit: RateLimitFacts {
                limit: Some(36_000),
                remaining: Some(30_000),
                reset_unix_s: None,
            },
            body: String::new(),
            elapsed_ms: 1,
        });
        assert_eq!(shared.draw_call(Lane::Reconcile), Err(1_003_200));
        assert_eq!(shared.rate_limit_headers().limit, Some(36_000));
        assert_eq!(shared.budget.view(clock.now_ms()).calls_in_window, 1);
    }

    #[test]
    fn status_counts_only_calls_inside_the_last_hour() {
        // Goal: spent_last_hour slides with the clock over the store's call log.
        let clock = ManualClock::new(10 * BUDGET_WINDOW_MS);
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path(), Default::default()).unwrap();
        let data = store.tenant("t1").unwrap();
        let start_ms = clock.now_ms();
        data.record_call(start_ms - BUDGET_WINDOW_MS - 1).unwrap(); // already outside the window
        data.record_call(start_ms - 10).unwrap();
        data.record_call(start_ms).unwrap();
        let settings = BudgetSettings::default();
        let headers = RateLimitHeaders {
            limit: Some(1_500),
            remaining: Some(1_200),
        };
        let status = BudgetStatus::compute(&settings, headers, &data, &clock).unwrap();
        assert_eq!(
            status,
            BudgetStatus {
                allowance_per_hour: 1_350,
                spent_last_hour: 2,
                header_limit: Some(1_500),
                header_remaining: Some(1_200)
            }
        );
        clock.advance_ms(BUDGET_WINDOW_MS - 5); // the call at start−10 has left the window
        let status = BudgetStatus::compute(&settings, headers, &data, &clock).unwrap();
        assert_eq!(status.spent_last_hour, 1);
    }
}
