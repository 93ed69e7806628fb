//! Capture's pollers (docs/polling.md): scheduling, runs page by page, the source's own
//! limits, failures and run reports. Each page's entries and its checkpoint are one atomic
//! store write (`TenantStore::enqueue_with_checkpoint`).

use actix::{Context, Handler};

use super::CaptureActor;
use crate::poll::{PollCommand, PollCommandError};

impl Handler<PollCommand> for CaptureActor {
    type Result = Result<(), PollCommandError>;

    fn handle(&mut self, message: PollCommand, _ctx: &mut Context<Self>) -> Self::Result {
        let PollCommand { mut guard, .. } = message;
        guard.mark_handling();
        Ok(())
    }
}
