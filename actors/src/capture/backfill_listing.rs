//! Listing jobs (`{"source", "from", "to"}`, docs/backfill.md "A source's listing"): the
//! source's full listing read page by page through its poller, from the window's start.
//!
//! Each page is fetched through the source's poller slot (`polling/listing.rs`: the source's
//! own limits count it, one fetch of a poller at a time), its records made rows by the one
//! classifier ([`crate::backfill::BackfillFiles::classify_listed`]; a record outside the
//! window is skipped), and the rows go the file jobs' way from there: counted by the dry
//! run, or queued in the `backfill` lane with the job's cursor — the source's cursor of the
//! next page — in one atomic write. A crash repeats a page, never skips one.

use actix::{ActorFutureExt, AsyncContext, Context, WrapFuture};

use super::backfill::{Purpose, RECHECK_MS, RECOUNT_EVERY_MS};
use super::polling::ListingGate;
use super::CaptureActor;
use crate::backfill::{
    BackfillJob, ClassifiedRow, Cursor, RowChunk, RowOutcome, RowReader, OUTSIDE_WINDOW,
};
use crate::poll::{PollFetch, PollPage, PollRequest};

/// Failed page reads in a row that stop a listing (a running job pauses with the reason, a
/// dry run fails): with the waits below, a source down for about 3 minutes.
pub const LISTING_FAILURES_BEFORE_STOP: u32 = 5;
/// Wait after the first failed page read; each further failure in a row waits 4× longer
/// (2 s, 8 s, 32 s, 128 s).
const LISTING_RETRY_MS: u64 = 2_000;
/// How often a listing whose poller an operator paused looks again.
const PAUSED_RECHECK_MS: u64 = 1_000;

/// A reader over one fetched page (already classified).
struct FetchedPage(Option<RowChunk>);

impl RowReader for FetchedPage {
    fn read(&mut self, _max_rows: usize) -> Result<RowChunk, String> {
        self.0
            .take()
            .ok_or_else(|| "the listing's page was read already".to_string())
    }
}

impl CaptureActor {
    /// Fetches the next page of a listing job when the source's limits allow.
    pub(super) fn listing_step(
        &mut self,
        job: BackfillJob,
        purpose: Purpose,
        ctx: &mut Context<Self>,
    ) {
        let Some(window) = job.spec.listing else {
            return;
        };
        // The tenant's adapters are set after it starts (pollers, then the backfill files):
        // until then a missing poller means nothing.
        if self.core.shared.backfill_files().is_none() {
            return self.backfill_later(RECHECK_MS, ctx);
        }
        let current = self.core.shared.pollers();
        if self.behavior.polls.stale(&current) {
            self.reload_pollers(ctx);
        }
        let now_ms = self.core.shared.clock.now_ms();
        let gate = match self.listing_gate(&job.spec.source, now_ms) {
            Ok(gate) => gate,
            Err(error) => {
                tracing::warn!(tenant_id = %self.core.shared.tenant_id, job = %job.id, error = %error, "poller state not written");
                return self.backfill_later(RECHECK_MS, ctx);
            }
        };
        let (poller, epoch) = match gate {
            ListingGate::Go { poller, epoch } => (poller, epoch),
            // Looked at again at least every recount period: a wait of hours (a quota's
            // reset) must not hold the job's recount, nor an operator's command, that long.
            ListingGate::WaitUntil(at_ms) => {
                let wait_ms = at_ms.saturating_sub(now_ms).clamp(1, RECOUNT_EVERY_MS);
                return self.backfill_later(wait_ms, ctx);
            }
            ListingGate::Busy => return self.backfill_later(RECHECK_MS, ctx),
            ListingGate::Paused => return self.backfill_later(PAUSED_RECHECK_MS, ctx),
            ListingGate::NoPoller => {
                let next = if purpose == Purpose::Run {
                    "configure its polling, then resume the job"
                } else {
                    "configure its polling, then create the job again"
                };
                let message = format!(
                    "the tenant has no poller for source `{}`: a listing is read through the source's poller ({next})",
                    job.spec.source
                );
                return self.backfill_failed(job, message, ctx);
            }
        };
        let at = purpose.cursor_of(&job).clone();
        let request = PollRequest {
            since_ms: window.from_ms,
            cursor: at.page.clone(),
            position: None,
            listing: true,
        };
        self.behavior.backfills.busy = true;
        ctx.spawn(
            poller
                .fetch(request)
                .into_actor(self)
                .map(move |fetch, capture, ctx| {
                    capture.behavior.backfills.busy = false;
                    if !capture.may_act(ctx) {
                        return;
                    }
                    let source = job.spec.source.clone();
                    if let Err(error) = capture.listing_answered(&source, epoch, &fetch, ctx) {
                        capture.fail(format!("poller {source}: {error}"), ctx);
                        return;
                    }
                    capture.listing_fetched(job, purpose, at, fetch, ctx);
                }),
        );
    }

    fn listing_fetched(
        &mut self,
        job: BackfillJob,
        purpose: Purpose,
        at: Cursor,
        fetch: PollFetch,
        ctx: &mut Context<Self>,
    ) {
        let source = job.spec.source.clone();
        match fetch {
            PollFetch::Page(page) => {
                self.behavior.backfills.listing_failures = None;
                let Some(chunk) = self.listing_rows(&job, &at, page) else {
                    // No adapter yet: the page is read again (the cursor did not move).
                    return self.backfill_later(RECHECK_MS, ctx);
                };
                self.read_off_thread(job, purpose, Box::new(FetchedPage(Some(chunk))), 0, ctx);
            }
            // The slot holds the wait; the next step asks the gate again.
            PollFetch::Throttled { .. } | PollFetch::QuotaExhausted { .. } => {
                self.backfill_later(0, ctx)
            }
            PollFetch::AuthRefused { message } => {
                let message = format!(
                    "{source} refused Steward's credentials ({message}); fix them, then resume"
                );
                self.backfill_failed(job, message, ctx);
            }
            PollFetch::Failed { message, .. } => {
                let backfills = &mut self.behavior.backfills;
                let failures = match &mut backfills.listing_failures {
                    Some((id, count)) if *id == job.id => {
                        *count += 1;
                        *count
                    }
                    other => {
                        *other = Some((job.id.clone(), 1));
                        1
                    }
                };
                tracing::warn!(tenant_id = %self.core.shared.tenant_id, job = %job.id, source = %source, failures, error = %message.escape_debug(), "a listing page read failed");
                if failures >= LISTING_FAILURES_BEFORE_STOP {
                    backfills.listing_failures = None;
                    let message = format!(
                        "{failures} page reads of the {source} listing failed in a row (last: {message})"
                    );
                    return self.backfill_failed(job, message, ctx);
                }
                self.backfill_later(LISTING_RETRY_MS << (2 * (failures - 1)), ctx);
            }
        }
    }

    /// A page's records as rows numbered on from `at`; `None` before the adapter is set.
    fn listing_rows(&self, job: &BackfillJob, at: &Cursor, page: PollPage) -> Option<RowChunk> {
        let window = job.spec.listing?;
        let files = self.core.shared.backfill_files()?;
        let read = page.items.len() as u64;
        let rows = page
            .items
            .into_iter()
            .zip(at.row + 1..)
            .map(|(item, row)| ClassifiedRow {
                row,
                outcome: if window.contains(item.version_ms) {
                    files.classify_listed(&job.spec, item)
                } else {
                    RowOutcome::Skipped {
                        reason: OUTSIDE_WINDOW.to_string(),
                    }
                },
            })
            .collect();
        Some(RowChunk {
            rows,
            next: Cursor {
                offset: at.offset + 1,
                row: at.row + read,
                page: page.next_cursor.clone(),
            },
            end: page.next_cursor.is_none(),
        })
    }
}
