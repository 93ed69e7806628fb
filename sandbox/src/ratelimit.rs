//! The sliding window every simulator limits calls with: every admitted call is remembered
//! for the window (3600 s for a Virtuous org, 1 s for Constant Contact's 4 requests/s);
//! `X-RateLimit-Reset` is the Unix second at which the oldest remembered call expires.

use std::collections::VecDeque;

pub(crate) const WINDOW_MS: u64 = 3_600_000;

/// What the three `X-RateLimit-*` headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateHeaders {
    pub(crate) limit: u64,
    /// Calls left in the window after this one.
    pub(crate) remaining: u64,
    /// Unix second at which the oldest call in the window expires (rounded up).
    pub(crate) reset_unix_s: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    Admitted(RateHeaders),
    Throttled {
        headers: RateHeaders,
        retry_after_s: u64,
    },
}

/// Calls in the last hour, as (millisecond, how many calls in that millisecond): merging
/// calls of the same millisecond keeps memory bounded by time, not by load.
#[derive(Debug)]
pub(crate) struct SlidingWindow {
    /// Calls admitted per window.
    limit: u64,
    window_ms: u64,
    calls: VecDeque<(u64, u64)>,
    calls_in_window: u64,
}

fn ceil_div(value: u64, divisor: u64) -> u64 {
    value.div_ceil(divisor)
}

impl SlidingWindow {
    /// A sliding hour of `hourly_limit` calls.
    pub(crate) fn new(hourly_limit: u64) -> SlidingWindow {
        SlidingWindow::with_window(hourly_limit, WINDOW_MS)
    }

    /// `limit` calls per sliding `window_ms`.
    pub(crate) fn with_window(limit: u64, window_ms: u64) -> SlidingWindow {
        SlidingWindow {
            limit,
            window_ms,
            calls: VecDeque::new(),
            calls_in_window: 0,
        }
    }

    fn expire(&mut self, now_ms: u64) {
        while let Some(&(call_ms, count)) = self.calls.front() {
            if call_ms + self.window_ms > now_ms {
                break;
            }
            self.calls.pop_front();
            self.calls_in_window -= count;
        }
    }

    fn reset_unix_s(&self, now_ms: u64) -> u64 {
        let oldest_ms = self.calls.front().map_or(now_ms, |&(call_ms, _)| call_ms);
        ceil_div(oldest_ms + self.window_ms, 1000)
    }

    /// Counts the call if the window has room; otherwise says when to retry.
    pub(crate) fn try_admit(&mut self, now_ms: u64) -> Admission {
        self.expire(now_ms);
        if self.calls_in_window >= self.limit {
            let oldest_expiry_ms = self
                .calls
                .front()
                .map_or(now_ms, |&(ms, _)| ms + self.window_ms);
            let retry_after_s = ceil_div(oldest_expiry_ms.saturating_sub(now_ms), 1000).max(1);
            return Admission::Throttled {
                headers: RateHeaders {
                    limit: self.limit,
                    remaining: 0,
                    reset_unix_s: self.reset_unix_s(now_ms),
                },
                retry_after_s,
            };
        }
        match self.calls.back_mut() {
            Some((last_ms, count)) if *last_ms == now_ms => *count += 1,
            _ => self.calls.push_back((now_ms, 1)),
        }
        self.calls_in_window += 1;
        Admission::Admitted(RateHeaders {
            limit: self.limit,
            remaining: self.limit - self.calls_in_window,
            reset_unix_s: self.reset_unix_s(now_ms),
        })
    }

    /// Calls currently inside the window (for stats).
    pub(crate) fn calls_in_window(&mut self, now_ms: u64) -> u64 {
        self.expire(now_ms);
        self.calls_in_window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_250;

    fn admitted(admission: Admission) -> RateHeaders {
        match admission {
            Admission::Admitted(headers) => headers,
            other => panic!("expected admission, got {other:?}"),
        }
    }

    #[test]
    fn remaining_counts_down_and_reset_names_the_oldest_call() {
        // Goal: Remaining is after this call; Reset = ceil((oldest call + 3600 s) / 1 s).
        let mut window = SlidingWindow::new(3);
        let first = admitted(window.try_admit(T0));
        assert_eq!(first.remaining, 2);
        assert_eq!(first.reset_unix_s, 1_700_003_601); // 1_700_003_600.25 rounded up
        let second = admitted(window.try_admit(T0 + 5_000));
        assert_eq!(second.remaining, 1);
        assert_eq!(
            second.reset_unix_s, first.reset_unix_s,
            "oldest call unchanged"
        );
        assert_eq!(admitted(window.try_admit(T0 + 6_000)).remaining, 0);
    }

    #[test]
    fn over_the_limit_throttles_until_the_oldest_call_expires() {
        // Goal: the call past the limit gets 429 data with Retry-After to the oldest expiry.
        let mut window = SlidingWindow::new(2);
        admitted(window.try_admit(T0));
        admitted(window.try_admit(T0 + 1_000));
        match window.try_admit(T0 + 10_000) {
            Admission::Throttled {
                headers,
                retry_after_s,
            } => {
                assert_eq!(headers.remaining, 0);
                assert_eq!(retry_after_s, 3_590);
                assert_eq!(headers.reset_unix_s, 1_700_003_601);
            }
            other => panic!("expected throttling, got {other:?}"),
        }
        assert_eq!(
            window.calls_in_window(T0 + 10_000),
            2,
            "a 429 is not counted"
        );
        // Just before the oldest call expires: still throttled, Retry-After at least 1.
        match window.try_admit(T0 + WINDOW_MS - 1) {
            Admission::Throttled { retry_after_s, .. } => assert_eq!(retry_after_s, 1),
            other => panic!("expected throttling, got {other:?}"),
        }
        // Once it expires the next call is admitted and Reset moves to the second call.
        let later = admitted(window.try_admit(T0 + WINDOW_MS));
        assert_eq!(later.remaining, 0);
        assert_eq!(later.reset_unix_s, 1_700_003_602);
    }

    #[test]
    fn calls_in_the_same_millisecond_share_one_slot() {
        // Goal: memory grows with distinct milliseconds, while counts stay exact.
        let mut window = SlidingWindow::new(1_000);
        for _ in 0..10 {
            admitted(window.try_admit(T0));
        }
        assert_eq!(window.calls.len(), 1);
        assert_eq!(window.calls_in_window(T0), 10);
        assert_eq!(window.calls_in_window(T0 + WINDOW_MS), 0);
    }
}
