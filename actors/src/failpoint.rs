//! Crash points at Steward's durable boundaries, for the crash tests (issue 5).
//!
//! A crash point is a named place where a test can make the process die the way `kill -9`
//! does: no destructor runs, no flush happens, nothing is answered. They exist only in builds
//! with the `failpoints` feature (the test command enables it; release builds and benchmarks
//! do not), where each point costs one `fail::eval` (a read lock and a map lookup) — without
//! the feature [`crash_point`] is an empty inline function.
//!
//! Configuration: `STEWARD_FAILPOINTS="name=actions;name=actions"` at start, in the action
//! syntax of the `fail` crate: `return` crashes at the first hit, `20*off->return` lets 20
//! hits pass and crashes at the 21st, `50%return` crashes at half of the hits. Before dying,
//! the point writes `steward failpoint hit: {name}` to stderr so a test can prove it was hit.
//!
//! The points (each named after the boundary it sits on):
//! - [`AFTER_WRITE_BEFORE_FLUSH`]: a write group is applied in sled, not yet flushed.
//! - [`AFTER_FLUSH_BEFORE_ACK`]: the flush completed; nobody has been answered (no 202 yet).
//! - [`AFTER_ACCEPT_BEFORE_SUBMITTED`]: Virtuous answered 2xx; the entries are not yet
//!   completed (`submitted`) in the store.
//! - [`DEAD_LETTER_MOVE`]: a batch that moves entries to or from the dead letters is applied
//!   in sled, not flushed, not answered.
//! - [`CHECKPOINT_ADVANCE`]: entries and the checkpoint that covers them are handed to the
//!   writer as one group, not yet known durable.

/// A write group is applied in sled and not yet flushed.
pub const AFTER_WRITE_BEFORE_FLUSH: &str = "after_write_before_flush";
/// A flush completed and its waiters (ingress answers among them) are not yet answered.
pub const AFTER_FLUSH_BEFORE_ACK: &str = "after_flush_before_ack";
/// Virtuous accepted a call; its entries are not yet `submitted` in the store.
pub const AFTER_ACCEPT_BEFORE_SUBMITTED: &str = "after_accept_before_submitted";
/// A dead-letter move (dead-lettering or replay) is applied in sled, not flushed.
pub const DEAD_LETTER_MOVE: &str = "dead_letter_move";
/// Entries and their checkpoint are submitted as one group, not yet durable.
pub const CHECKPOINT_ADVANCE: &str = "checkpoint_advance";

/// Every crash point, for validating configuration.
pub const ALL: [&str; 5] = [
    AFTER_WRITE_BEFORE_FLUSH,
    AFTER_FLUSH_BEFORE_ACK,
    AFTER_ACCEPT_BEFORE_SUBMITTED,
    DEAD_LETTER_MOVE,
    CHECKPOINT_ADVANCE,
];

/// The line a crash point writes to stderr before the process dies.
pub fn hit_line(name: &str) -> String {
    format!("steward failpoint hit: {name}")
}

/// Whether this build has crash points (the `failpoints` feature).
pub const ENABLED: bool = cfg!(feature = "failpoints");

/// Dies here, like `kill -9`, when the point `name` is configured to fire.
#[cfg(feature = "failpoints")]
pub fn crash_point(name: &'static str) {
    if fail::eval(name, |_| ()).is_some() {
        use std::io::Write as _;
        let mut stderr = std::io::stderr().lock();
        let _ = writeln!(stderr, "{}", hit_line(name));
        let _ = stderr.flush();
        // SAFETY: kill(2) on our own pid; SIGKILL cannot be caught, so nothing runs after it
        // (no destructor, no sled flush) — exactly the crash the tests want.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
        std::process::abort();
    }
}

/// Without the `failpoints` feature a crash point is nothing.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn crash_point(_name: &'static str) {}

/// Configures crash points from `STEWARD_FAILPOINTS` (`name=actions;…`). An unknown name or
/// action is an error naming it; so is a non-empty value in a build without the feature.
pub fn configure(spec: &str) -> Result<usize, String> {
    let mut configured = 0;
    for item in spec
        .split(';')
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        let Some((name, actions)) = item.split_once('=') else {
            return Err(format!(
                "STEWARD_FAILPOINTS: `{item}` is not `name=actions`"
            ));
        };
        let name = name.trim();
        if !ALL.contains(&name) {
            return Err(format!(
                "STEWARD_FAILPOINTS: unknown failpoint `{name}` (known: {})",
                ALL.join(", ")
            ));
        }
        configure_one(name, actions.trim())?;
        configured += 1;
    }
    Ok(configured)
}

#[cfg(feature = "failpoints")]
fn configure_one(name: &str, actions: &str) -> Result<(), String> {
    fail::cfg(name, actions).map_err(|err| format!("STEWARD_FAILPOINTS: `{name}`: {err}"))
}

#[cfg(not(feature = "failpoints"))]
fn configure_one(_name: &str, _actions: &str) -> Result<(), String> {
    Err(
        "STEWARD_FAILPOINTS is set, but this binary was built without the `failpoints` feature"
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_errors_name_the_problem() {
        assert!(
            configure("").unwrap() == 0,
            "an empty spec configures nothing"
        );
        let unknown = configure("no_such_point=return").unwrap_err();
        assert!(unknown.contains("no_such_point"), "{unknown}");
        let malformed = configure("after_write_before_flush").unwrap_err();
        assert!(malformed.contains("name=actions"), "{malformed}");
    }

    #[cfg(feature = "failpoints")]
    #[test]
    fn a_bad_action_is_refused_and_an_off_point_does_not_fire() {
        let bad = configure("dead_letter_move=explode").unwrap_err();
        assert!(bad.contains("dead_letter_move"), "{bad}");
        configure("checkpoint_advance=off").unwrap();
        crash_point(CHECKPOINT_ADVANCE); // off: returns
    }

    #[cfg(not(feature = "failpoints"))]
    #[test]
    fn without_the_feature_a_spec_is_refused() {
        let refused = configure("dead_letter_move=return").unwrap_err();
        assert!(
            refused.contains("without the `failpoints` feature"),
            "{refused}"
        );
    }
}
