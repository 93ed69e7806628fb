//! The tenant's hourly budget (DESIGN.md §5): the pure allowance arithmetic and the status
//! the admin API shows.
//!
//! Seam for the pacing issue: the submitter will draw calls through a ledger that paces at
//! `allowance / 3600` per second with `burst_calls`, records each call with
//! `TenantStore::record_call`, and refuses once `calls_since(now − 1 h)` reaches the
//! allowance. Header sync feeds [`RateLimitHeaders`]. Nothing here sends or spends yet.

use serde::{Deserialize, Serialize};

use crate::ports::{Clock, TenantData};

/// One hour, the budget window.
pub const BUDGET_WINDOW_MS: u64 = 3_600_000;

/// Budget settings of a tenant (`budget.*` in the tenant document).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetSettings {
    /// Calls per hour Steward may assume before a response header says otherwise.
    pub hourly_limit: u64,
    /// Share of the limit left for the customer's other tools, 0–100.
    pub reserve_pct: u8,
    /// Calls that may go back to back before pacing applies.
    pub burst_calls: u32,
}

impl Default for BudgetSettings {
    fn default() -> BudgetSettings {
        BudgetSettings {
            hourly_limit: 5_000,
            reserve_pct: 10,
            burst_calls: 1,
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
        data: &dyn TenantData,
        clock: &dyn Clock,
    ) -> Result<BudgetStatus, crate::store::StoreError> {
        let since_ms = clock.now_ms().saturating_sub(BUDGET_WINDOW_MS);
        let spent_last_hour = data.calls_since(since_ms)?;
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
    use crate::ports::fake::MemoryTenantData;
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

    #[test]
    fn status_counts_only_calls_inside_the_last_hour() {
        // Goal: spent_last_hour slides with the clock over the store's call log.
        let clock = ManualClock::new(10 * BUDGET_WINDOW_MS);
        let data = MemoryTenantData::new("t1");
        let start_ms = clock.now_ms();
        data.record_call(start_ms - BUDGET_WINDOW_MS - 1); // already outside the window
        data.record_call(start_ms - 10);
        data.record_call(start_ms);
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
