//! Mailbox depth and wait time, counted by a guard carried in each message.
//!
//! actix cannot report its mailbox length, so every message to a runtime actor carries a
//! [`MailboxGuard`] made when it is sent: depth +1 and the send instant. The handler calls
//! [`MailboxGuard::mark_handling`] as it starts (records the wait), and the guard's `Drop`
//! takes the depth back down — whether the message was handled, or dropped unhandled because
//! the actor died with it still queued.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::metrics::{ACTOR_MAILBOX_DEPTH, ACTOR_MAILBOX_WAIT_SECONDS, LABEL_ACTOR, LABEL_TENANT};

/// One actor's mailbox counter. It outlives the actor's generations: messages still queued
/// for a dead child are dropped with it and count themselves out.
pub struct MailboxCounter {
    depth: AtomicU64,
    depth_gauge: metrics::Gauge,
    wait_histogram: metrics::Histogram,
}

impl MailboxCounter {
    /// `actor` is the kind name ("capture", …, "supervisor").
    pub fn new(tenant_id: &str, actor: &'static str) -> Arc<MailboxCounter> {
        let depth_gauge = metrics::gauge!(ACTOR_MAILBOX_DEPTH, LABEL_TENANT => tenant_id.to_string(), LABEL_ACTOR => actor);
        let wait_histogram = metrics::histogram!(ACTOR_MAILBOX_WAIT_SECONDS, LABEL_ACTOR => actor);
        Arc::new(MailboxCounter {
            depth: AtomicU64::new(0),
            depth_gauge,
            wait_histogram,
        })
    }

    /// Messages sent and not yet finished.
    pub fn depth(&self) -> u64 {
        self.depth.load(Ordering::Acquire)
    }

    /// Makes the guard for one message about to be sent.
    pub fn guard(self: &Arc<Self>) -> MailboxGuard {
        self.depth.fetch_add(1, Ordering::AcqRel);
        // increment/decrement (not `set`) so concurrent senders cannot leave a stale value.
        self.depth_gauge.increment(1.0);
        MailboxGuard {
            counter: Arc::clone(self),
            sent_at: Instant::now(),
            wait_recorded: false,
        }
    }
}

/// Carried inside each message; see the module docs.
pub struct MailboxGuard {
    counter: Arc<MailboxCounter>,
    sent_at: Instant,
    wait_recorded: bool,
}

impl MailboxGuard {
    /// Records the time spent waiting in the mailbox (once).
    pub fn mark_handling(&mut self) {
        if self.wait_recorded {
            return;
        }
        self.wait_recorded = true;
        self.counter
            .wait_histogram
            .record(self.sent_at.elapsed().as_secs_f64());
    }
}

impl Drop for MailboxGuard {
    fn drop(&mut self) {
        self.counter.depth.fetch_sub(1, Ordering::AcqRel);
        self.counter.depth_gauge.decrement(1.0);
    }
}

impl std::fmt::Debug for MailboxGuard {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("MailboxGuard")
            .field("sent_at", &self.sent_at)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_count_depth_up_and_back_to_zero() {
        // Goal: depth follows live guards, whether handled or dropped unhandled.
        let counter = MailboxCounter::new("t1", "capture");
        let mut first = counter.guard();
        let second = counter.guard();
        assert_eq!(counter.depth(), 2);
        first.mark_handling();
        drop(first);
        assert_eq!(counter.depth(), 1);
        drop(second);
        assert_eq!(counter.depth(), 0);
    }
}
