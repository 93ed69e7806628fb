//! Property-based fuzzing of the ingress code (docs/ingress.md: bad input gets a clear
//! error and never panics a handler), in-process: Stripe and platform signature checks,
//! `parse_event` and `map_event` on arbitrary bytes and on structurally mutated real events.
//!
//! Default case counts run the whole file in ~9 s (debug build, 2 cores); raise them with
//! `STEWARD_FUZZ_CASES=<cases for every property>` (e.g. `STEWARD_FUZZ_CASES=50000 cargo test
//! --features failpoints --lib sources::fuzz_tests -- --nocapture`). Each property prints one
//! `RELIABILITY:` line to stderr: cases run, and how many reached a mapped command (so the
//! fuzzing is seen to get past the JSON parser into the mapping rules).

mod mutate;
mod platform_fuzz;
mod stripe_fuzz;

use std::cell::Cell;

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// Cases of one property: `STEWARD_FUZZ_CASES` when set, else `default_cases`.
fn cases(default_cases: u32) -> u32 {
    std::env::var("STEWARD_FUZZ_CASES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(default_cases)
}

/// What one property run reached, for the `RELIABILITY:` line and the reach assertions.
#[derive(Debug, Default)]
struct Reach {
    cases: Cell<u64>,
    parsed: Cell<u64>,
    mapped_command: Cell<u64>,
}

impl Reach {
    fn case(&self) {
        self.cases.set(self.cases.get() + 1);
    }
    fn parsed(&self) {
        self.parsed.set(self.parsed.get() + 1);
    }
    fn mapped_command(&self) {
        self.mapped_command.set(self.mapped_command.get() + 1);
    }

    /// One `RELIABILITY:` line; `reached` names what `mapped_command` counted for this
    /// property (a mapped command, or a verified signature).
    fn report(&self, property: &str, reached: &str) {
        eprintln!(
            "RELIABILITY: fuzz {property} cases={} parsed={} {reached}={}",
            self.cases.get(),
            self.parsed.get(),
            self.mapped_command.get()
        );
    }

    /// Fails unless at least `percent` % of the cases reached a mapped command.
    fn assert_mapped_share(&self, property: &str, percent: u64) {
        let (cases, mapped) = (self.cases.get(), self.mapped_command.get());
        assert!(
            mapped * 100 >= cases * percent,
            "{property}: only {mapped} of {cases} cases reached a mapped command (want ≥ {percent} %)"
        );
    }
}

/// Runs `test` on `cases` inputs of `strategy`; a panic inside `test` is a failure (the
/// runner catches it and shrinks the input). No regression files: nothing is written to src/.
fn run<S: Strategy>(cases: u32, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>) {
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    if let Err(failure) = runner.run(&strategy, test) {
        panic!("{failure}");
    }
}
