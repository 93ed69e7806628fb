//! The daily quota: `quota` API calls per day, the count reset at `next_reset_ms` (00:00 UTC
//! by default), after which the next reset is one day later. The reset instant can be moved
//! by the control API so a test can bring it close; time comes from the caller (the crate's
//! clock), so the arithmetic is pure.

use serde::Serialize;

pub(crate) const DAY_MS: u64 = 86_400_000;

/// The first 00:00 UTC strictly after `now_ms`.
pub(crate) fn next_utc_midnight_ms(now_ms: u64) -> u64 {
    (now_ms / DAY_MS + 1) * DAY_MS
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct DailyQuota {
    pub(crate) quota: u64,
    /// Calls counted since the last reset.
    pub(crate) used: u64,
    /// Unix ms of the next reset.
    pub(crate) next_reset_ms: u64,
}

impl DailyQuota {
    pub(crate) fn new(quota: u64, now_ms: u64) -> DailyQuota {
        DailyQuota {
            quota,
            used: 0,
            next_reset_ms: next_utc_midnight_ms(now_ms),
        }
    }

    /// Applies every reset due by `now_ms`: the count goes to 0 and the next reset moves on by
    /// whole days (a reset placed at 12:34:56 by a test stays at 12:34:56 the next day).
    fn roll(&mut self, now_ms: u64) {
        if now_ms < self.next_reset_ms {
            return;
        }
        self.used = 0;
        let days_passed = (now_ms - self.next_reset_ms) / DAY_MS + 1;
        self.next_reset_ms += days_passed * DAY_MS;
    }

    /// Counts one call if the quota has room; `false` = quota exceeded (nothing counted).
    pub(crate) fn try_take(&mut self, now_ms: u64) -> bool {
        self.roll(now_ms);
        if self.used >= self.quota {
            return false;
        }
        self.used += 1;
        true
    }

    /// Calls left today (for stats).
    pub(crate) fn remaining(&mut self, now_ms: u64) -> u64 {
        self.roll(now_ms);
        self.quota.saturating_sub(self.used)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-26T10:00:00Z
    const T0: u64 = 1_795_687_200_000;

    #[test]
    fn the_default_reset_is_the_next_utc_midnight() {
        // Goal: the first reset is 00:00 UTC of the next day, also from exactly midnight.
        assert_eq!(next_utc_midnight_ms(T0), 1_795_737_600_000);
        assert_eq!(next_utc_midnight_ms(1_795_737_600_000), 1_795_824_000_000);
        assert_eq!(DailyQuota::new(5, T0).next_reset_ms, 1_795_737_600_000);
    }

    #[test]
    fn the_quota_refuses_past_its_size_until_the_reset() {
        // Goal: `quota` calls pass, the next is refused and not counted; at the reset the count
        // starts again and the next reset is one day later.
        let mut quota = DailyQuota::new(2, T0);
        quota.next_reset_ms = T0 + 1_000;
        assert!(quota.try_take(T0));
        assert!(quota.try_take(T0 + 1));
        assert!(!quota.try_take(T0 + 2));
        assert!(!quota.try_take(T0 + 999));
        assert_eq!(quota.used, 2);
        assert_eq!(quota.remaining(T0 + 999), 0);
        assert!(quota.try_take(T0 + 1_000));
        assert_eq!(quota.used, 1);
        assert_eq!(quota.next_reset_ms, T0 + 1_000 + DAY_MS);
    }

    #[test]
    fn a_reset_long_past_moves_by_whole_days() {
        // Goal: after several idle days the next reset keeps its time of day and is in the future.
        let mut quota = DailyQuota::new(1, T0);
        let first_reset = quota.next_reset_ms;
        assert!(quota.try_take(T0));
        let later = first_reset + 3 * DAY_MS + 5;
        assert!(quota.try_take(later));
        assert_eq!(quota.next_reset_ms, first_reset + 4 * DAY_MS);
    }
}
