//! When pollers run and when a source's daily quota resets (pure time arithmetic; the
//! tenant's time zone through jiff).

use super::{Slot, DAY_MS};
use crate::poll::PollSchedule;
use crate::store::poll_ops::PollerState;

/// When the schedule runs next (`None`: polling off).
pub(super) fn next_scheduled_run(slot: &Slot) -> Option<u64> {
    match &slot.spec.settings.schedule {
        PollSchedule::Off => None,
        PollSchedule::Every { interval_ms } => Some(
            slot.state
                .last_run_started_ms
                .map_or(0, |started| started.saturating_add(*interval_ms)),
        ),
        PollSchedule::DailyAt {
            hour,
            minute,
            time_zone,
        } => {
            let after = slot
                .state
                .last_run_started_ms
                .unwrap_or(slot.daily_anchor_ms);
            next_daily_after(after, *hour, *minute, time_zone)
        }
    }
}

/// The first `hour:minute` in `time_zone` strictly after `after_ms`.
pub fn next_daily_after(after_ms: u64, hour: u8, minute: u8, time_zone: &str) -> Option<u64> {
    let tz = jiff::tz::TimeZone::get(time_zone).ok()?;
    let after = jiff::Timestamp::from_millisecond(i64::try_from(after_ms).ok()?).ok()?;
    let mut date = after.to_zoned(tz.clone()).date();
    for _ in 0..3 {
        let at = date
            .at(hour as i8, minute as i8, 0, 0)
            .to_zoned(tz.clone())
            .ok()?
            .timestamp()
            .as_millisecond();
        if at > after.as_millisecond() {
            return u64::try_from(at).ok();
        }
        date = date.tomorrow().ok()?;
    }
    None
}

/// The start of `now_ms`'s day in `time_zone` (UTC when the zone is unknown).
pub fn day_start_in(time_zone: &str, now_ms: u64) -> u64 {
    let utc_day_start = now_ms - now_ms % DAY_MS;
    let Ok(tz) = jiff::tz::TimeZone::get(time_zone) else {
        return utc_day_start;
    };
    let Ok(now) = jiff::Timestamp::from_millisecond(now_ms as i64) else {
        return utc_day_start;
    };
    now.to_zoned(tz)
        .start_of_day()
        .ok()
        .and_then(|start| u64::try_from(start.timestamp().as_millisecond()).ok())
        .unwrap_or(utc_day_start)
}

/// The source's daily reset at or before `now_ms` (`reset_s` seconds after 00:00 UTC).
fn last_reset_at_or_before(reset_s: u32, now_ms: u64) -> u64 {
    let offset_ms = u64::from(reset_s) * 1_000;
    let shifted = now_ms + DAY_MS - offset_ms;
    shifted - shifted % DAY_MS + offset_ms - DAY_MS
}

/// The source's next daily reset after `now_ms`.
pub fn next_reset_after(reset_s: u32, now_ms: u64) -> u64 {
    last_reset_at_or_before(reset_s, now_ms) + DAY_MS
}

/// A new quota day started since the count began: the count starts again.
pub(super) fn roll_quota_day(state: &mut PollerState, reset_s: u32, now_ms: u64) {
    let last_reset = last_reset_at_or_before(reset_s, now_ms);
    if state.quota_day_start_ms < last_reset {
        state.quota_day_start_ms = last_reset;
        state.quota_calls = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_resets_fall_on_the_configured_second_of_the_utc_day() {
        // Goal: the daily count resets at the source's reset time, not at our start.
        let day = DAY_MS;
        let reset_s = 3_600; // 01:00 UTC
        let at_0030 = 10 * day + 1_800_000;
        assert_eq!(
            last_reset_at_or_before(reset_s, at_0030),
            9 * day + 3_600_000
        );
        assert_eq!(next_reset_after(reset_s, at_0030), 10 * day + 3_600_000);
        let at_0100 = 10 * day + 3_600_000;
        assert_eq!(last_reset_at_or_before(reset_s, at_0100), at_0100);
        assert_eq!(next_reset_after(0, 10 * day), 11 * day);
        let mut state = PollerState {
            quota_day_start_ms: 9 * day + 3_600_000,
            quota_calls: 9_999,
            ..PollerState::default()
        };
        roll_quota_day(&mut state, reset_s, at_0030);
        assert_eq!(state.quota_calls, 9_999, "same quota day");
        roll_quota_day(&mut state, reset_s, at_0100 + 1);
        assert_eq!(state.quota_calls, 0, "a new quota day");
    }

    #[test]
    fn daily_runs_follow_the_tenant_time_zone_across_dst() {
        // Goal: "daily_at 02:30" in New York is 07:30 UTC in winter and 06:30 in summer.
        let winter = jiff::Timestamp::from_second(1_767_225_600).unwrap(); // 2026-01-01T00:00Z
        let next =
            next_daily_after(winter.as_millisecond() as u64, 2, 30, "America/New_York").unwrap();
        assert_eq!(
            jiff::Timestamp::from_millisecond(next as i64)
                .unwrap()
                .to_string(),
            "2026-01-01T07:30:00Z"
        );
        let summer = jiff::Timestamp::from_second(1_782_864_000).unwrap(); // 2026-07-01T00:00Z
        let next =
            next_daily_after(summer.as_millisecond() as u64, 2, 30, "America/New_York").unwrap();
        assert_eq!(
            jiff::Timestamp::from_millisecond(next as i64)
                .unwrap()
                .to_string(),
            "2026-07-01T06:30:00Z"
        );
        assert_eq!(day_start_in("UTC", 10 * DAY_MS + 5), 10 * DAY_MS);
    }
}
