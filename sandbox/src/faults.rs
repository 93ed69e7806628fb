//! Injected faults. Random faults are drawn from a stable hash of (seed, path, transactionId,
//! attempt) so a run reproduces whatever the arrival order; scripted steps are consumed in
//! order, only the first remaining step being considered.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn one() -> u64 {
    1
}
fn default_timeout_ms() -> u64 {
    30_000
}
fn one_time() -> u32 {
    1
}

/// `PUT /_sandbox/orgs/{id}/faults`: rates are fractions 0–1 of API requests.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RandomFaults {
    #[serde(default)]
    pub error_5xx_rate: f64,
    #[serde(default)]
    pub throttle_rate: f64,
    /// `Retry-After` of a throttle fault.
    #[serde(default = "one")]
    pub retry_after_s: u64,
    #[serde(default)]
    pub timeout_rate: f64,
    /// How long a timeout (or a scripted hang) stays silent before closing the connection.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub drop_after_apply_rate: f64,
    /// Added to every API answer.
    #[serde(default)]
    pub latency_ms: u64,
}

impl Default for RandomFaults {
    fn default() -> Self {
        RandomFaults {
            error_5xx_rate: 0.0,
            throttle_rate: 0.0,
            retry_after_s: 1,
            timeout_rate: 0.0,
            timeout_ms: default_timeout_ms(),
            drop_after_apply_rate: 0.0,
            latency_ms: 0,
        }
    }
}

impl RandomFaults {
    pub(crate) fn validate(&self) -> Result<(), String> {
        let rates = [
            ("error_5xx_rate", self.error_5xx_rate),
            ("throttle_rate", self.throttle_rate),
            ("timeout_rate", self.timeout_rate),
            ("drop_after_apply_rate", self.drop_after_apply_rate),
        ];
        for (name, rate) in rates {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be between 0 and 1"));
            }
        }
        let total: f64 = rates.iter().map(|(_, rate)| rate).sum();
        if total > 1.0 + 1e-9 {
            return Err("the fault rates must add up to at most 1".into());
        }
        Ok(())
    }

    fn any_rate(&self) -> bool {
        self.error_5xx_rate > 0.0
            || self.throttle_rate > 0.0
            || self.timeout_rate > 0.0
            || self.drop_after_apply_rate > 0.0
    }
}

/// Which requests a scripted step applies to; absent fields match anything.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepMatch {
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
}

/// What a scripted step answers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepRespond {
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub retry_after_s: Option<u64>,
    #[serde(default)]
    pub model_state: Option<Value>,
    #[serde(default)]
    pub body: Option<Value>,
    #[serde(default)]
    pub hang: bool,
    /// Only `"close"`: apply the request, then close without an answer.
    #[serde(default)]
    pub apply_then: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptStep {
    #[serde(rename = "match", default)]
    pub matcher: Option<StepMatch>,
    #[serde(default = "one_time")]
    pub times: u32,
    pub respond: StepRespond,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScriptBody {
    pub(crate) steps: Vec<ScriptStep>,
}

impl ScriptBody {
    pub(crate) fn validate(&self) -> Result<(), String> {
        for (index, step) in self.steps.iter().enumerate() {
            let respond = &step.respond;
            let kinds = usize::from(respond.status.is_some())
                + usize::from(respond.hang)
                + usize::from(respond.apply_then.is_some());
            if kinds != 1 {
                return Err(format!(
                    "steps[{index}].respond needs exactly one of status, hang, apply_then"
                ));
            }
            if let Some(then) = &respond.apply_then {
                if then != "close" {
                    return Err(format!(
                        "steps[{index}].respond.apply_then must be \"close\""
                    ));
                }
            }
            if let Some(status) = respond.status {
                if !(100..=599).contains(&status) {
                    return Err(format!(
                        "steps[{index}].respond.status is not an HTTP status"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// What the fault layer decided for one request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FaultDecision {
    /// Run the handler normally.
    Pass,
    /// Answer this instead of running the handler.
    Answer {
        status: u16,
        retry_after_s: Option<u64>,
        model_state: Option<Value>,
        body: Option<Value>,
    },
    /// Do not apply; stay silent for `timeout_ms`, then close the connection.
    Hang { timeout_ms: u64 },
    /// Apply, then close the connection without an answer.
    ApplyThenClose,
}

/// The org's fault configuration and remaining script.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    pub(crate) random: RandomFaults,
    pub(crate) script: VecDeque<ScriptStep>,
}

impl Faults {
    /// Decides for one API request: the first remaining script step if it matches, else a
    /// random draw. `route` is the route template, `path` the request path.
    pub(crate) fn decide(
        &mut self,
        seed: u64,
        request: &RequestKey<'_>,
        attempt: u32,
    ) -> FaultDecision {
        if let Some(decision) = self.take_script_step(request) {
            return decision;
        }
        if !self.random.any_rate() {
            return FaultDecision::Pass;
        }
        let draw = fault_draw(seed, request.path, request.transaction_id, attempt);
        decide_random(&self.random, draw)
    }

    fn take_script_step(&mut self, request: &RequestKey<'_>) -> Option<FaultDecision> {
        let step = self.script.front_mut()?;
        if let Some(matcher) = &step.matcher {
            let method_matches = matcher
                .method
                .as_deref()
                .map_or(true, |method| method.eq_ignore_ascii_case(request.method));
            let path_matches = matcher
                .path
                .as_deref()
                .map_or(true, |path| path == request.path || path == request.route);
            if !(method_matches && path_matches) {
                return None;
            }
        }
        let respond = step.respond.clone();
        step.times = step.times.saturating_sub(1);
        if step.times == 0 {
            self.script.pop_front();
        }
        let timeout_ms = self.random.timeout_ms;
        Some(if respond.hang {
            FaultDecision::Hang { timeout_ms }
        } else if respond.apply_then.is_some() {
            FaultDecision::ApplyThenClose
        } else {
            FaultDecision::Answer {
                status: respond.status.unwrap_or(500),
                retry_after_s: respond.retry_after_s,
                model_state: respond.model_state,
                body: respond.body,
            }
        })
    }
}

/// The identity of a request as the fault layer sees it.
pub(crate) struct RequestKey<'a> {
    pub(crate) method: &'a str,
    pub(crate) path: &'a str,
    pub(crate) route: &'a str,
    pub(crate) transaction_id: &'a str,
}

/// A reproducible draw in [0, 1) from SHA-256 of the inputs (never std's RandomState, whose
/// keys change per process).
pub(crate) fn fault_draw(seed: u64, path: &str, transaction_id: &str, attempt: u32) -> f64 {
    let mut hasher = Sha256::new();
    hasher.update(seed.to_be_bytes());
    hasher.update((path.len() as u64).to_be_bytes());
    hasher.update(path.as_bytes());
    hasher.update((transaction_id.len() as u64).to_be_bytes());
    hasher.update(transaction_id.as_bytes());
    hasher.update(attempt.to_be_bytes());
    unit_fraction(&hasher.finalize())
}

/// A reproducible draw for other per-org choices (review share): SHA-256 of seed, label, n.
pub(crate) fn stable_draw(seed: u64, label: &str, n: u64) -> f64 {
    let mut hasher = Sha256::new();
    hasher.update(seed.to_be_bytes());
    hasher.update(label.as_bytes());
    hasher.update(n.to_be_bytes());
    unit_fraction(&hasher.finalize())
}

fn unit_fraction(digest: &[u8]) -> f64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // 53 random bits → a double in [0, 1).
    (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64
}

/// Cumulative bands over one draw: 5xx, then throttle, then timeout, then drop-after-apply.
pub(crate) fn decide_random(faults: &RandomFaults, draw: f64) -> FaultDecision {
    let mut upper = faults.error_5xx_rate;
    if draw < upper {
        return FaultDecision::Answer {
            status: 503,
            retry_after_s: None,
            model_state: None,
            body: None,
        };
    }
    upper += faults.throttle_rate;
    if draw < upper {
        return FaultDecision::Answer {
            status: 429,
            retry_after_s: Some(faults.retry_after_s.max(1)),
            model_state: None,
            body: None,
        };
    }
    upper += faults.timeout_rate;
    if draw < upper {
        return FaultDecision::Hang {
            timeout_ms: faults.timeout_ms,
        };
    }
    upper += faults.drop_after_apply_rate;
    if draw < upper {
        return FaultDecision::ApplyThenClose;
    }
    FaultDecision::Pass
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key<'a>(method: &'a str, path: &'a str, txn: &'a str) -> RequestKey<'a> {
        RequestKey {
            method,
            path,
            route: path,
            transaction_id: txn,
        }
    }

    #[test]
    fn fault_draws_reproduce_and_vary_with_every_input() {
        // Goal: same inputs give the same draw; changing any input changes it.
        let base = fault_draw(7, "/api/v2/Gift/Transaction", "pi_1", 1);
        assert_eq!(base, fault_draw(7, "/api/v2/Gift/Transaction", "pi_1", 1));
        assert!((0.0..1.0).contains(&base));
        assert_ne!(base, fault_draw(8, "/api/v2/Gift/Transaction", "pi_1", 1));
        assert_ne!(base, fault_draw(7, "/api/v2/Gift/Transactions", "pi_1", 1));
        assert_ne!(base, fault_draw(7, "/api/v2/Gift/Transaction", "pi_2", 1));
        assert_ne!(base, fault_draw(7, "/api/v2/Gift/Transaction", "pi_1", 2));
        // Pinned value (computed independently with Python's hashlib): the draw must never
        // change between releases, or recorded runs stop reproducing.
        assert_eq!(fault_draw(0, "/p", "t", 1), 0.031840104244441725);
    }

    #[test]
    fn random_fault_shares_follow_the_rates() {
        // Goal: over many draws each band gets about its rate.
        let faults = RandomFaults {
            error_5xx_rate: 0.2,
            throttle_rate: 0.1,
            ..RandomFaults::default()
        };
        let mut errors = 0;
        let mut throttles = 0;
        for n in 0..10_000 {
            match decide_random(&faults, fault_draw(1, "/x", &n.to_string(), 1)) {
                FaultDecision::Answer { status: 503, .. } => errors += 1,
                FaultDecision::Answer { status: 429, .. } => throttles += 1,
                FaultDecision::Pass => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!((1_800..2_200).contains(&errors), "errors {errors}");
        assert!((800..1_200).contains(&throttles), "throttles {throttles}");
    }

    #[test]
    fn script_steps_are_consumed_in_order_and_only_the_first_is_considered() {
        // Goal: a non-matching request passes without consuming; `times` counts down.
        let body: ScriptBody = serde_json::from_value(serde_json::json!({"steps": [
            {"match": {"method": "POST", "path": "/api/v2/Gift/Transactions"}, "times": 2,
             "respond": {"status": 503}},
            {"times": 1, "respond": {"status": 429, "retry_after_s": 2}},
            {"respond": {"hang": true}},
            {"respond": {"apply_then": "close"}}
        ]}))
        .unwrap();
        body.validate().unwrap();
        let mut faults = Faults {
            script: body.steps.into(),
            ..Faults::default()
        };
        let batch = key("POST", "/api/v2/Gift/Transactions", "a");
        let other = key("GET", "/api/Organization/Current", "");
        assert_eq!(faults.decide(0, &other, 1), FaultDecision::Pass);
        for _ in 0..2 {
            assert!(matches!(
                faults.decide(0, &batch, 1),
                FaultDecision::Answer { status: 503, .. }
            ));
        }
        assert!(matches!(
            faults.decide(0, &other, 1),
            FaultDecision::Answer {
                status: 429,
                retry_after_s: Some(2),
                ..
            }
        ));
        assert_eq!(
            faults.decide(0, &other, 1),
            FaultDecision::Hang { timeout_ms: 30_000 }
        );
        assert_eq!(faults.decide(0, &other, 1), FaultDecision::ApplyThenClose);
        assert_eq!(faults.decide(0, &other, 1), FaultDecision::Pass);
    }

    #[test]
    fn script_validation_names_the_bad_step() {
        // Goal: a step with two answers, or an unknown apply_then, is refused with its index.
        let body: ScriptBody = serde_json::from_value(serde_json::json!({"steps": [
            {"respond": {"status": 503}},
            {"respond": {"status": 503, "hang": true}}
        ]}))
        .unwrap();
        assert!(body.validate().unwrap_err().contains("steps[1]"));
        let body: ScriptBody = serde_json::from_value(serde_json::json!({"steps": [
            {"respond": {"apply_then": "reset"}}
        ]}))
        .unwrap();
        assert!(body.validate().unwrap_err().contains("steps[0]"));
    }
}
