//! Retry timing (docs/operations.md): a schedule of delays, ±20 % jitter, `Retry-After` as a floor,
//! then dead letter. Pure: the random value is passed in, so tests and replays are exact.
//! Modelled on Svix's `calculate_retry_delay`. Which answers are retried at all is decided by
//! [`crate::outcome::classify`].

use std::time::Duration;

/// Default jitter: each delay is spread uniformly over ±20 % so retries of many items that
/// failed together do not arrive together.
pub const DEFAULT_JITTER_FRACTION: f64 = 0.2;
/// A `Retry-After` longer than this is clamped: a broken or hostile header must not park an
/// item for a year. (The schedule's own last step is 24 h.)
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(24 * 3600);
/// Bound on the schedule length (TigerBeetle: a limit on everything).
pub const SCHEDULE_STEPS_MAX: usize = 64;

/// Why a schedule or a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetryConfigError {
    #[error("a retry schedule needs at least one delay")]
    Empty,
    #[error("a retry schedule has at most {SCHEDULE_STEPS_MAX} delays, got {0}")]
    TooLong(usize),
    #[error("retry delays must not decrease: step {index} ({later:?}) is shorter than the one before ({earlier:?})")]
    Decreasing {
        index: usize,
        earlier: Duration,
        later: Duration,
    },
    #[error(
        "'{0}' is not a duration: use a whole number with ms, s, m, h or d (e.g. 250ms, 10s, 2h)"
    )]
    BadDuration(String),
}

/// The delays between attempts: after the n-th failed attempt wait `delays[n-1]`; after the
/// last, the item is dead-lettered. Non-empty, non-decreasing, at most [`SCHEDULE_STEPS_MAX`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule {
    delays: Vec<Duration>,
}

impl Default for RetrySchedule {
    /// 10 s, 1 min, 5 min, 30 min, 2 h, 6 h, 12 h, 24 h (docs/operations.md).
    fn default() -> RetrySchedule {
        let minutes = |m: u64| Duration::from_secs(m * 60);
        RetrySchedule {
            delays: vec![
                Duration::from_secs(10),
                minutes(1),
                minutes(5),
                minutes(30),
                minutes(120),
                minutes(360),
                minutes(720),
                minutes(1440),
            ],
        }
    }
}

impl RetrySchedule {
    pub fn new(delays: Vec<Duration>) -> Result<RetrySchedule, RetryConfigError> {
        if delays.is_empty() {
            return Err(RetryConfigError::Empty);
        }
        if delays.len() > SCHEDULE_STEPS_MAX {
            return Err(RetryConfigError::TooLong(delays.len()));
        }
        for (index, pair) in delays.windows(2).enumerate() {
            if pair[1] < pair[0] {
                return Err(RetryConfigError::Decreasing {
                    index: index + 1,
                    earlier: pair[0],
                    later: pair[1],
                });
            }
        }
        Ok(RetrySchedule { delays })
    }

    /// From config strings such as `["10s", "1m", "2h"]` (tests use `"5ms"`).
    pub fn parse<S: AsRef<str>>(steps: &[S]) -> Result<RetrySchedule, RetryConfigError> {
        let delays = steps
            .iter()
            .map(|step| parse_duration(step.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        RetrySchedule::new(delays)
    }

    pub fn delays(&self) -> &[Duration] {
        &self.delays
    }

    /// How many failed attempts are retried; one more and the item is dead-lettered.
    pub fn retries_max(&self) -> u32 {
        self.delays.len() as u32
    }

    /// The delay after `failed_attempts` failures before jitter; `None` once exhausted.
    /// `0` is read as `1` (the first failure), so a caller's off-by-one cannot skip the wait.
    pub fn base_delay(&self, failed_attempts: u32) -> Option<Duration> {
        let index = failed_attempts.max(1) as usize - 1;
        self.delays.get(index).copied()
    }
}

/// The wait before the next attempt after `failed_attempts` failures (1 = the first failure),
/// or `None` when the schedule is exhausted (dead letter).
///
/// The base delay is spread by `jitter_fraction` (clamped to 0..=1): with `rng_value` in
/// `[0, 1]` (clamped; NaN counts as 0.5) the result is `base × (1 + jitter × (2·rng − 1))`.
/// A `retry_after` (clamped to [`RETRY_AFTER_MAX`]) is a floor: never retry before the server
/// asked. Exhaustion wins over `retry_after`: a server's wish does not extend the schedule.
pub fn next_attempt_delay(
    schedule: &RetrySchedule,
    failed_attempts: u32,
    jitter_fraction: f64,
    rng_value: f64,
    retry_after: Option<Duration>,
) -> Option<Duration> {
    let base = schedule.base_delay(failed_attempts)?;
    let jitter = if jitter_fraction.is_nan() {
        0.0
    } else {
        jitter_fraction.clamp(0.0, 1.0)
    };
    let rng = if rng_value.is_nan() {
        0.5
    } else {
        rng_value.clamp(0.0, 1.0)
    };
    let factor = 1.0 + jitter * (2.0 * rng - 1.0);
    // Saturating: `mul_f64` would panic on an overflowing (absurd) configured delay.
    let jittered = Duration::try_from_secs_f64(base.as_secs_f64() * factor).unwrap_or(base);
    let floor = retry_after
        .map(|wait| wait.min(RETRY_AFTER_MAX))
        .unwrap_or(Duration::ZERO);
    Some(jittered.max(floor))
}

/// How retries are timed: the submitter's schedule and jitter. The store asks it what to
/// do with a failed entry ([`RetryPolicy::decide`]) and applies the answer.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub schedule: RetrySchedule,
    /// ± spread of each delay, 0–1.
    pub jitter_fraction: f64,
}

/// What to do with an entry whose attempt failed transiently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Try again, not before `not_before_ms`; `attempts` counts the failed one.
    RetryAt { attempts: u32, not_before_ms: u64 },
    /// The schedule is exhausted: dead-letter it after `attempts` attempts.
    DeadLetter { attempts: u32 },
}

impl RetryPolicy {
    /// From `[submitter]` settings (an invalid schedule falls back to the default one).
    pub fn from_settings(retry_schedule_ms: &[u64], retry_jitter_pct: u8) -> RetryPolicy {
        let delays = retry_schedule_ms
            .iter()
            .map(|&ms| Duration::from_millis(ms))
            .collect();
        RetryPolicy {
            schedule: RetrySchedule::new(delays).unwrap_or_default(),
            jitter_fraction: f64::from(retry_jitter_pct.min(100)) / 100.0,
        }
    }

    /// After a transient failure of an entry that had failed `attempts_before` times: when
    /// to try again ([`next_attempt_delay`], `retry_after_ms` as a floor), or dead-letter.
    pub fn decide(
        &self,
        attempts_before: u32,
        retry_after_ms: Option<u64>,
        rng_value: f64,
        now_ms: u64,
    ) -> RetryDecision {
        let attempts = attempts_before.saturating_add(1);
        match next_attempt_delay(
            &self.schedule,
            attempts,
            self.jitter_fraction,
            rng_value,
            retry_after_ms.map(Duration::from_millis),
        ) {
            Some(delay) => RetryDecision::RetryAt {
                attempts,
                not_before_ms: now_ms.saturating_add(delay.as_millis() as u64),
            },
            None => RetryDecision::DeadLetter { attempts },
        }
    }
}

/// Parses `250ms`, `10s`, `1m`, `2h`, `1d` (a whole number and a unit, no space needed).
pub fn parse_duration(text: &str) -> Result<Duration, RetryConfigError> {
    let bad = || RetryConfigError::BadDuration(text.to_string());
    let trimmed = text.trim();
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(bad)?;
    let (number, unit) = trimmed.split_at(digits_end);
    let value: u64 = number.parse().map_err(|_| bad())?;
    let unit_ms: u64 = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    value
        .checked_mul(unit_ms)
        .map(Duration::from_millis)
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secs(seconds: u64) -> Duration {
        Duration::from_secs(seconds)
    }

    #[test]
    fn default_schedule_is_the_design_list() {
        // Goal: the defaults are documented eight delays (docs/operations.md), and the ninth failure dead-letters.
        let schedule = RetrySchedule::default();
        let expected = [10, 60, 300, 1800, 7200, 21600, 43200, 86400].map(secs);
        assert_eq!(schedule.delays(), expected);
        for (index, delay) in expected.iter().enumerate() {
            let exact = next_attempt_delay(&schedule, index as u32 + 1, 0.2, 0.5, None);
            assert_eq!(exact, Some(*delay), "failure {}", index + 1);
        }
        assert_eq!(next_attempt_delay(&schedule, 9, 0.2, 0.5, None), None);
        assert_eq!(schedule.retries_max(), 8);
    }

    #[test]
    fn jitter_extremes_are_plus_and_minus_twenty_percent() {
        // Goal: rng 0 gives −20 %, rng 1 gives +20 %, out-of-range values are clamped.
        let schedule = RetrySchedule::default();
        assert_eq!(
            next_attempt_delay(&schedule, 1, 0.2, 0.0, None),
            Some(secs(8))
        );
        assert_eq!(
            next_attempt_delay(&schedule, 1, 0.2, 1.0, None),
            Some(secs(12))
        );
        assert_eq!(
            next_attempt_delay(&schedule, 1, 0.2, 7.0, None),
            Some(secs(12))
        );
        assert_eq!(
            next_attempt_delay(&schedule, 1, 0.2, f64::NAN, None),
            Some(secs(10))
        );
    }

    #[test]
    fn retry_after_is_a_floor_and_clamped() {
        // Goal: a longer Retry-After wins, a shorter one does not shorten, a huge one is clamped.
        let schedule = RetrySchedule::default();
        assert_eq!(
            next_attempt_delay(&schedule, 1, 0.2, 0.5, Some(secs(30))),
            Some(secs(30))
        );
        assert_eq!(
            next_attempt_delay(&schedule, 1, 0.2, 0.5, Some(secs(2))),
            Some(secs(10))
        );
        let huge = Some(secs(10 * 365 * 86400));
        assert_eq!(
            next_attempt_delay(&schedule, 1, 0.0, 0.5, huge),
            Some(RETRY_AFTER_MAX)
        );
        assert_eq!(
            next_attempt_delay(&schedule, 9, 0.2, 0.5, Some(secs(1))),
            None
        );
    }

    #[test]
    fn schedules_parse_and_validate() {
        // Goal: config strings parse to durations; bad strings and bad schedules are refused.
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(secs(10)));
        assert_eq!(parse_duration("1m"), Ok(secs(60)));
        assert_eq!(parse_duration(" 2h "), Ok(secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(secs(86400)));
        for bad in [
            "",
            "10",
            "s",
            "1.5s",
            "-1s",
            "10 sec",
            "5x",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
        let schedule = RetrySchedule::parse(&["5ms", "10ms", "10ms"]).unwrap();
        assert_eq!(schedule.retries_max(), 3);
        assert_eq!(
            RetrySchedule::parse::<&str>(&[]),
            Err(RetryConfigError::Empty)
        );
        assert!(matches!(
            RetrySchedule::parse(&["1m", "10s"]),
            Err(RetryConfigError::Decreasing { index: 1, .. })
        ));
        let too_long = vec!["1s"; SCHEDULE_STEPS_MAX + 1];
        assert!(matches!(
            RetrySchedule::parse(&too_long),
            Err(RetryConfigError::TooLong(_))
        ));
    }

    fn any_schedule() -> impl Strategy<Value = RetrySchedule> {
        proptest::collection::vec(0u64..100_000_000, 1..20).prop_map(|mut millis| {
            millis.sort_unstable();
            RetrySchedule::new(millis.into_iter().map(Duration::from_millis).collect()).unwrap()
        })
    }

    proptest! {
        #[test]
        fn jitter_stays_within_bounds(
            schedule in any_schedule(), failures in 1u32..20, rng in 0.0f64..=1.0,
            jitter in 0.0f64..=1.0,
        ) {
            // Goal: the delay is within base × (1 ± jitter) (1 ms slack for float rounding).
            if let Some(base) = schedule.base_delay(failures) {
                let delay = next_attempt_delay(&schedule, failures, jitter, rng, None).unwrap();
                let low = base.as_secs_f64() * (1.0 - jitter) - 0.001;
                let high = base.as_secs_f64() * (1.0 + jitter) + 0.001;
                prop_assert!(delay.as_secs_f64() >= low && delay.as_secs_f64() <= high,
                    "{:?} outside [{}, {}]", delay, low, high);
            }
        }

        #[test]
        fn attempts_are_monotone_before_jitter(schedule in any_schedule(), failures in 1u32..20) {
            // Goal: with the same random value, a later failure never waits less.
            let rng = 0.5;
            if let (Some(now), Some(next)) = (
                next_attempt_delay(&schedule, failures, 0.2, rng, None),
                next_attempt_delay(&schedule, failures + 1, 0.2, rng, None),
            ) {
                prop_assert!(next >= now);
            }
        }

        #[test]
        fn exhaustion_at_schedule_length(
            schedule in any_schedule(), rng in 0.0f64..=1.0,
            retry_after_ms in proptest::option::of(0u64..1_000_000_000),
        ) {
            // Goal: failures 1..=len get a delay, failure len+1 onwards gets None, whatever the
            // random value and Retry-After.
            let retry_after = retry_after_ms.map(Duration::from_millis);
            let len = schedule.retries_max();
            for failures in 1..=len {
                prop_assert!(next_attempt_delay(&schedule, failures, 0.2, rng, retry_after).is_some());
            }
            prop_assert!(next_attempt_delay(&schedule, len + 1, 0.2, rng, retry_after).is_none());
            prop_assert!(next_attempt_delay(&schedule, u32::MAX, 0.2, rng, retry_after).is_none());
        }

        #[test]
        fn retry_after_is_honoured_as_a_floor(
            schedule in any_schedule(), failures in 1u32..20, rng in 0.0f64..=1.0,
            retry_after_ms in 0u64..200_000_000,
        ) {
            // Goal: the delay is never shorter than the (clamped) Retry-After.
            let retry_after = Duration::from_millis(retry_after_ms);
            if let Some(delay) = next_attempt_delay(&schedule, failures, 0.2, rng, Some(retry_after)) {
                prop_assert!(delay >= retry_after.min(RETRY_AFTER_MAX));
            }
        }

        #[test]
        fn parse_round_trips(value in 0u64..1_000_000, unit in 0usize..5) {
            // Goal: every whole number with each unit parses to that many units.
            let (suffix, unit_ms) = [("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000),
                ("d", 86_400_000)][unit];
            prop_assert_eq!(parse_duration(&format!("{value}{suffix}")),
                Ok(Duration::from_millis(value * unit_ms)));
        }
    }

    #[test]
    fn the_policy_retries_on_schedule_then_dead_letters() {
        // Goal: decide counts the failed attempt, times the retry from the schedule (no
        // jitter here) with Retry-After as a floor, and dead-letters once it is exhausted.
        let policy = RetryPolicy::from_settings(&[100, 1_000], 0);
        assert_eq!(
            policy.decide(0, None, 0.5, 10_000),
            RetryDecision::RetryAt {
                attempts: 1,
                not_before_ms: 10_100
            }
        );
        assert_eq!(
            policy.decide(1, Some(5_000), 0.5, 10_000),
            RetryDecision::RetryAt {
                attempts: 2,
                not_before_ms: 15_000
            }
        );
        assert_eq!(
            policy.decide(2, Some(5_000), 0.5, 10_000),
            RetryDecision::DeadLetter { attempts: 3 }
        );
    }
}
