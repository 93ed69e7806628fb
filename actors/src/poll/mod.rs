//! Polled capture (pattern 2; docs/polling.md): the poller specs a tenant runs, their
//! stored state and run reports, and the parity of hybrid sources. Capture runs them
//! (`capture::polling`); the adapters live in the `steward` crate behind [`Poller`].

use std::sync::Arc;

pub use crate::ports::{
    gift_fingerprint_alias, PollFetch, PollPage, PollRequest, PolledItem, Poller, SourceStatus,
    GIFT_CHANGED_ALERT,
};
pub use crate::settings::{PollSchedule, PollerSettings, SourceLimits};

/// A configured poller: its settings and its port.
#[derive(Clone)]
pub struct PollerSpec {
    pub settings: PollerSettings,
    pub poller: Arc<dyn Poller>,
}

impl std::fmt::Debug for PollerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PollerSpec")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// What a poller is doing now, as Capture publishes it (not stored: rebuilt by Capture).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PollerLive {
    /// A run is in progress.
    pub running: bool,
    /// When the next run starts (scheduled, after a throttle, or at a quota reset).
    pub next_run_at_ms: Option<u64>,
    /// What the source last said of itself (a Postgres slot's lag and WAL status).
    pub source_status: Option<SourceStatus>,
}

/// What an operator (or a changed document) asks of Capture's pollers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollAction {
    /// The configured pollers changed (`TenantShared::pollers`): reschedule.
    Reload,
    /// Start a run now (unless one runs).
    Run,
    /// Stop scheduling runs (a run in progress ends after its current page).
    Pause,
    /// Undo a pause (an operator's, or the one after three failed runs or a refused
    /// credential).
    Resume,
    /// Re-read from this source time: the checkpoint moves back (already captured facts stay
    /// deduplicated, so a reset never causes duplicates or deletions). A source's own
    /// position is dropped too: a Postgres source takes a new snapshot.
    Reset { since_ms: u64 },
}

/// A command for Capture's pollers; `source` names the poller (`None` only for `Reload`).
#[derive(actix::Message)]
#[rtype(result = "Result<(), PollCommandError>")]
pub struct PollCommand {
    pub source: Option<String>,
    pub action: PollAction,
    pub guard: crate::mailbox::MailboxGuard,
}

/// Why a poll command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PollCommandError {
    #[error("no poller `{0}` is configured")]
    UnknownSource(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the store failed: {0}")]
    Store(String),
    #[error("capture is not running (restarting); try again")]
    Unavailable,
}

/// One poller as the admin API shows it: settings, stored state and progress, its last
/// finished run, and what Capture is doing now.
#[derive(Debug, Clone)]
pub struct PollerSnapshot {
    pub settings: PollerSettings,
    pub state: crate::store::poll_ops::PollerState,
    pub progress: crate::store::poll_ops::PollProgress,
    pub last_run: Option<crate::store::poll_ops::RunReport>,
    pub live: PollerLive,
}

impl crate::messages::DoorError for PollCommandError {
    fn mailbox_full(capacity: usize) -> Self {
        PollCommandError::Conflict(format!(
            "Capture's mailbox is full ({capacity} messages); try again"
        ))
    }
    fn unavailable() -> Self {
        PollCommandError::Unavailable
    }
}
