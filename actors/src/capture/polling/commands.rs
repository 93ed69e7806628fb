//! Operators' and the document's commands to Capture's pollers: run, pause, resume, reset,
//! reload (`PollCommand`, answered once what it changed is durable).

use actix::{fut, ActorFutureExt, Context, Handler, ResponseActFuture, WrapFuture};

use super::super::CaptureActor;
use crate::poll::{PollAction, PollCommand, PollCommandError};
use crate::store::poll_ops::{PauseReason, PollMark};
use crate::store::StoreError;

use super::{POLLER_AUTH_ALERT, POLLER_FAILED_ALERT};

impl CaptureActor {
    fn poll_command(
        &mut self,
        source: Option<String>,
        action: PollAction,
        ctx: &mut Context<Self>,
    ) -> Result<(), PollCommandError> {
        if action == PollAction::Reload {
            self.reload_pollers(ctx);
            return Ok(());
        }
        let source = source.unwrap_or_default();
        let now_ms = self.now_ms();
        let store = self.core.shared.tenant_store().clone();
        let Some(slot) = self.behavior.polls.slots.get_mut(&source) else {
            return Err(PollCommandError::UnknownSource(source));
        };
        let store_error = |error: StoreError| PollCommandError::Store(error.to_string());
        match action {
            PollAction::Reload => unreachable!("handled above"),
            PollAction::Run => {
                if slot.progress.run.is_some() {
                    return Err(PollCommandError::Conflict(format!(
                        "`{source}` is running a poll now"
                    )));
                }
                if let Some(reason) = &slot.state.paused {
                    return Err(PollCommandError::Conflict(format!(
                        "`{source}` is paused ({}); resume it first",
                        pause_name(reason)
                    )));
                }
                slot.run_requested = true;
                // An operator's run does not wait for a throttle or a quota reset it cannot beat.
            }
            PollAction::Pause => {
                slot.state.paused = Some(PauseReason::Operator);
                if slot.busy {
                    slot.end_after_page = Some("paused");
                }
                store
                    .put_poller_state(&source, &slot.state)
                    .map_err(store_error)?;
            }
            PollAction::Resume => {
                slot.state.paused = None;
                slot.end_after_page = None;
                slot.state.consecutive_failures = 0;
                slot.wait_until_ms = 0;
                store
                    .put_poller_state(&source, &slot.state)
                    .map_err(store_error)?;
                let any_failing = self
                    .behavior
                    .polls
                    .slots
                    .values()
                    .any(|slot| slot.state.paused == Some(PauseReason::Failures));
                let any_refused = self
                    .behavior
                    .polls
                    .slots
                    .values()
                    .any(|slot| slot.state.paused == Some(PauseReason::AuthRefused));
                if !any_failing {
                    store
                        .resolve_alert(POLLER_FAILED_ALERT, now_ms)
                        .map_err(store_error)?;
                }
                if !any_refused {
                    store
                        .resolve_alert(POLLER_AUTH_ALERT, now_ms)
                        .map_err(store_error)?;
                }
            }
            PollAction::Reset { since_ms } => {
                if slot.busy || slot.progress.run.is_some() {
                    return Err(PollCommandError::Conflict(format!(
                        "`{source}` is running a poll now; pause it (the run ends after its current page) and reset then"
                    )));
                }
                slot.progress.checkpoint = Some(PollMark {
                    at_ms: since_ms,
                    record_id: String::new(),
                });
                slot.progress.position = None;
                store
                    .put_poll_progress(&source, &slot.progress)
                    .map_err(store_error)?;
                tracing::info!(tenant_id = %store.tenant_id(), source = %source, since_ms, "poller reset by an operator");
            }
        }
        self.poll_wake(ctx);
        Ok(())
    }
}

impl Handler<PollCommand> for CaptureActor {
    type Result = ResponseActFuture<Self, Result<(), PollCommandError>>;

    fn handle(&mut self, message: PollCommand, ctx: &mut Context<Self>) -> Self::Result {
        let PollCommand {
            source,
            action,
            mut guard,
        } = message;
        guard.mark_handling();
        if !self.may_act(ctx) {
            return Box::pin(fut::ready(Err(PollCommandError::Unavailable)));
        }
        // Only pause, resume and reset store a change the answer vouches for; a reload or a
        // run request writes nothing before it is answered.
        let writes = matches!(
            action,
            PollAction::Pause | PollAction::Resume | PollAction::Reset { .. }
        );
        let answered = self.poll_command(source, action, ctx);
        drop(guard);
        if answered.is_err() || !writes {
            return Box::pin(fut::ready(answered));
        }
        // Answered once what the command changed is durable.
        let store = self.core.shared.store().clone();
        Box::pin(async move { store.durable().await }.into_actor(self).map(
            |flushed, _capture, _ctx| {
                flushed.map_err(|error| PollCommandError::Store(error.to_string()))
            },
        ))
    }
}

/// The name a pause reason has in the admin API.
pub fn pause_name(reason: &PauseReason) -> &'static str {
    match reason {
        PauseReason::Operator => "paused by an operator",
        PauseReason::Failures => "paused after 3 failed runs",
        PauseReason::AuthRefused => "paused: credentials refused",
    }
}
