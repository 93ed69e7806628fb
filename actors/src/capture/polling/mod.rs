//! Capture's pollers (docs/polling.md): scheduling, runs page by page, the source's own
//! limits, failures and run reports.
//!
//! A run reads pages one at a time. Each page's entries and the poller's progress (the
//! checkpoint — the highest `(source time, record id)` taken — and the run's cursor and
//! report so far) go into the store in one atomic write (`TenantStore::enqueue_page`), and
//! the next page is fetched only once that write is durable: a crash repeats a page, never
//! skips one, and a restarted Capture resumes the run from its cursor. Each run starts
//! `overlap_ms` before the checkpoint; what it reads again is deduplicated by the entries'
//! idempotency keys (the source fact `(source, object, id, version)`).
//!
//! The source's own limits are a second budget: calls per sliding second (paced here),
//! calls per day (counted in the poller's state, reset at the source's reset time), and the
//! source's own answers (`throttled` → wait; `quota_exceeded` → pause until the reset, with
//! the progress saved). Neither is a failure. A failed run counts; three in a row pause the
//! poller with the alert `poller_failed`; refused credentials pause it with
//! `poller_auth_failed`. An operator resumes it.
//!
//! Nothing here is trusted to memory: a replaced Capture rebuilds every poller from the
//! store ([`PollRuntime`] holds only caches and timers).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use actix::{ActorFutureExt, AsyncContext, Context, SpawnHandle, WrapFuture};

mod commands;
mod listing;
mod schedule;

pub(super) use listing::ListingGate;

use schedule::{day_start_in, next_reset_after, next_scheduled_run, roll_quota_day};

use super::CaptureActor;
use crate::poll::{PollFetch, PollPage, PollRequest, PollerLive, PollerSpec};
use crate::store::poll_ops::{
    CapturePath, PauseReason, PollMark, PollProgress, PollerState, Rejection, RunProgress,
    RunReport, SeenFact, REJECTIONS_KEPT,
};
use crate::store::{EnqueueOutcome, NewEntry, StoreError, TenantStore};

/// Alert: a poller failed [`FAILED_RUNS_BEFORE_PAUSE`] runs in a row and is paused.
pub const POLLER_FAILED_ALERT: &str = "poller_failed";
/// Alert: a polled source refused the credentials; the poller is paused.
pub const POLLER_AUTH_ALERT: &str = "poller_auth_failed";
/// Alert: more than `parity_alert_pct` of a day's facts of a hybrid source were seen by
/// polling only (missed webhooks).
pub const PARITY_ALERT: &str = "webhooks_missed";
/// A fact the poll saw first less than this long ago is not yet called a missed webhook by
/// the parity alert: its webhook may still be on its way (the parity report shows it as
/// `poll_only` meanwhile).
pub const PARITY_SETTLE_MS: u64 = 120_000;
/// Failed runs in a row that pause a poller.
pub const FAILED_RUNS_BEFORE_PAUSE: u32 = 3;

const DAY_MS: u64 = 86_400_000;

/// Capture's pollers: per source, caches of the stored state and the timers.
#[derive(Default)]
pub struct PollRuntime {
    slots: BTreeMap<String, Slot>,
    timer: Option<SpawnHandle>,
    /// The specs last loaded: a tick that finds others in the hub reloads (the change's
    /// message is only a hint).
    loaded: Option<std::sync::Arc<Vec<PollerSpec>>>,
    /// Numbers slots as they are created: an answer for a slot that was removed and created
    /// again is ignored.
    next_epoch: u64,
}

impl PollRuntime {
    /// The hub's specs differ from the ones loaded.
    pub fn stale(&self, current: &std::sync::Arc<Vec<PollerSpec>>) -> bool {
        self.loaded
            .as_ref()
            .map_or(true, |loaded| !std::sync::Arc::ptr_eq(loaded, current))
    }

    /// Runs in progress.
    pub fn running(&self) -> u64 {
        self.slots
            .values()
            .filter(|slot| slot.progress.run.is_some())
            .count() as u64
    }

    /// Whether `source` is a configured poller that also has webhooks (parity is kept).
    pub fn is_hybrid(&self, source: &str) -> bool {
        self.slots
            .get(source)
            .is_some_and(|slot| slot.spec.settings.has_webhooks)
    }

    pub fn has_hybrid(&self) -> bool {
        self.slots
            .values()
            .any(|slot| slot.spec.settings.has_webhooks)
    }

    fn kind_of(&self, source: &str) -> Option<String> {
        self.slots
            .get(source)
            .map(|slot| slot.spec.settings.kind.clone())
    }
}

struct Slot {
    spec: PollerSpec,
    epoch: u64,
    state: PollerState,
    progress: PollProgress,
    /// A fetch or a page's write is in flight.
    busy: bool,
    /// An operator asked for a run.
    run_requested: bool,
    /// An operator paused or reset while a page was in flight: end the run after it.
    end_after_page: Option<&'static str>,
    /// No call before this time (a throttled answer).
    wait_until_ms: u64,
    /// Send times of the calls of the last second (per-second pacing).
    recent_calls: VecDeque<u64>,
    /// A daily schedule's first run comes after this time (no run before it was configured).
    daily_anchor_ms: u64,
    /// What the source last said of itself (a Postgres slot's lag).
    source_status: Option<crate::poll::SourceStatus>,
}

/// Most entries one write of a page carries (see `write_page`).
pub const PAGE_WRITE_CHUNK: usize = 64;

/// A classified page, ready to write.
struct PreparedPage {
    entries: Vec<NewEntry>,
    /// The progress the page brings (written with its last chunk).
    progress: PollProgress,
    /// (idempotency key, record id) of each entry, for parity (hybrid sources only).
    facts: Vec<(String, String)>,
    has_more: bool,
}

/// What a poller should do now.
enum Step {
    Fetch,
    /// Nothing before this time.
    WaitUntil(u64),
    Idle,
}

impl CaptureActor {
    fn store(&self) -> &TenantStore {
        self.core.shared.tenant_store()
    }

    fn now_ms(&self) -> u64 {
        self.core.shared.clock.now_ms()
    }

    /// Takes the configured pollers (start, or the document changed): new ones are loaded
    /// from the store, removed ones are dropped (their stored state stays), changed ones
    /// keep their state and take the new settings.
    pub(super) fn reload_pollers(&mut self, ctx: &mut Context<Self>) {
        let specs = self.core.shared.pollers();
        self.behavior.polls.loaded = Some(std::sync::Arc::clone(&specs));
        let now_ms = self.now_ms();
        let mut slots = std::mem::take(&mut self.behavior.polls.slots);
        slots.retain(|source, _| specs.iter().any(|spec| spec.settings.source == *source));
        for spec in specs.iter() {
            let source = spec.settings.source.clone();
            if let Some(slot) = slots.get_mut(&source) {
                slot.spec = spec.clone();
                continue;
            }
            let store = self.store();
            let loaded = store
                .poller_state(&source)
                .and_then(|state| Ok((state, store.poll_progress(&source)?)));
            match loaded {
                Ok((state, progress)) => {
                    self.behavior.polls.next_epoch += 1;
                    slots.insert(
                        source,
                        Slot {
                            spec: spec.clone(),
                            epoch: self.behavior.polls.next_epoch,
                            state,
                            progress,
                            busy: false,
                            run_requested: false,
                            end_after_page: None,
                            wait_until_ms: 0,
                            recent_calls: VecDeque::new(),
                            daily_anchor_ms: now_ms,
                            source_status: None,
                        },
                    );
                }
                Err(error) => {
                    tracing::error!(tenant_id = %self.core.shared.tenant_id, source = %source, error = %error, "poller state unreadable; poller not started");
                }
            }
        }
        self.behavior.polls.slots = slots;
        self.poll_wake(ctx);
    }

    /// Starts what is due and sets the timer for what comes next.
    fn poll_wake(&mut self, ctx: &mut Context<Self>) {
        if !self.may_act(ctx) {
            return;
        }
        let now_ms = self.now_ms();
        let sources: Vec<String> = self.behavior.polls.slots.keys().cloned().collect();
        let mut next_at: Option<u64> = None;
        for source in sources {
            match self.poll_step(&source, now_ms) {
                Ok(Step::Fetch) => self.fetch_page(&source, ctx),
                Ok(Step::WaitUntil(at_ms)) => {
                    next_at = Some(next_at.map_or(at_ms, |next| next.min(at_ms)));
                }
                Ok(Step::Idle) => {}
                Err(error) => {
                    let message = format!("poller {source}: {error}");
                    self.fail(message, ctx);
                    return;
                }
            }
        }
        if let Some(timer) = self.behavior.polls.timer.take() {
            ctx.cancel_future(timer);
        }
        if let Some(at_ms) = next_at {
            let delay_ms = at_ms.saturating_sub(now_ms).clamp(5, 3_600_000);
            self.behavior.polls.timer = Some(ctx.run_later(
                Duration::from_millis(delay_ms),
                |capture, ctx| {
                    capture.behavior.polls.timer = None;
                    capture.poll_wake(ctx);
                },
            ));
        }
        self.publish_poll_live();
        self.publish();
    }

    /// Decides one poller's next step (starting a run when one is due).
    fn poll_step(&mut self, source: &str, now_ms: u64) -> Result<Step, StoreError> {
        let Some(slot) = self.behavior.polls.slots.get_mut(source) else {
            return Ok(Step::Idle);
        };
        if slot.busy {
            return Ok(Step::Idle);
        }
        if slot.state.paused.is_some() {
            if slot.progress.run.is_some() {
                // Paused between pages: the run ends here (its progress is saved).
                self.end_run(source, "paused", None, now_ms)?;
            }
            return Ok(Step::Idle);
        }
        if let Some(until_ms) = slot.state.quota_wait_until_ms {
            if until_ms > now_ms {
                return Ok(Step::WaitUntil(until_ms));
            }
            slot.state.quota_wait_until_ms = None;
        }
        if slot.progress.run.is_none() {
            let trigger = if slot.run_requested {
                "operator"
            } else {
                match next_scheduled_run(slot) {
                    Some(at_ms) if at_ms <= now_ms => "schedule",
                    Some(at_ms) => return Ok(Step::WaitUntil(at_ms)),
                    None => return Ok(Step::Idle),
                }
            };
            slot.run_requested = false;
            start_run(slot, trigger, now_ms);
            let store = self.core.shared.tenant_store();
            store.put_poller_state(source, &slot.state)?;
            store.put_poll_progress(source, &slot.progress)?;
        }
        let slot = self
            .behavior
            .polls
            .slots
            .get_mut(source)
            .expect("looked up above");
        if slot.wait_until_ms > now_ms {
            return Ok(Step::WaitUntil(slot.wait_until_ms));
        }
        match limits_wait(slot, now_ms) {
            Some(LimitWait::Quota(until_ms)) => {
                if let Some(run) = &mut slot.progress.run {
                    run.report.quota_waits += 1;
                }
                self.core
                    .shared
                    .tenant_store()
                    .put_poller_state(source, &slot.state)?;
                Ok(Step::WaitUntil(until_ms))
            }
            Some(LimitWait::Second(at_ms)) => Ok(Step::WaitUntil(at_ms)),
            None => Ok(Step::Fetch),
        }
    }

    /// Sends the next page's request; its answer comes back in [`Self::on_fetched`].
    fn fetch_page(&mut self, source: &str, ctx: &mut Context<Self>) {
        let Some(slot) = self.behavior.polls.slots.get_mut(source) else {
            return;
        };
        let Some(run) = &slot.progress.run else {
            return;
        };
        let request = PollRequest {
            since_ms: run.since_ms,
            cursor: run.cursor.clone(),
            position: slot.progress.position.clone(),
            listing: false,
        };
        slot.busy = true;
        // Counted against the day when sent; against the second when answered (below).
        slot.state.quota_calls += 1;
        let poller = std::sync::Arc::clone(&slot.spec.poller);
        let source = source.to_string();
        let generation = self.core.generation;
        let epoch = slot.epoch;
        ctx.spawn(
            poller
                .fetch(request)
                .into_actor(self)
                .map(move |fetch, capture, ctx| {
                    let same_slot = capture
                        .behavior
                        .polls
                        .slots
                        .get(&source)
                        .is_some_and(|slot| slot.epoch == epoch);
                    if capture.core.generation == generation && same_slot {
                        capture.on_fetched(&source, fetch, ctx);
                    }
                }),
        );
    }

    fn on_fetched(&mut self, source: &str, fetch: PollFetch, ctx: &mut Context<Self>) {
        if !self.may_act(ctx) {
            return;
        }
        let now_ms = self.now_ms();
        let Some(slot) = self.behavior.polls.slots.get_mut(source) else {
            return;
        };
        let calls = count_answer(slot, &fetch, now_ms);
        if let Some(run) = &mut slot.progress.run {
            run.report.calls += u64::from(calls);
        }
        if !matches!(fetch, PollFetch::Page(_)) {
            // A pause asked while this fetch was out is applied by `poll_step` (the run
            // ends there); the flag must not outlive this run.
            slot.end_after_page = None;
        }
        let result = match fetch {
            PollFetch::Page(page) => return self.write_page(source, page, ctx),
            PollFetch::Throttled { retry_after_ms, .. } => {
                slot.busy = false;
                slot.wait_until_ms = now_ms + retry_after_ms.max(1);
                if let Some(run) = &mut slot.progress.run {
                    run.report.throttled += 1;
                }
                Ok(())
            }
            PollFetch::QuotaExhausted { .. } => {
                slot.busy = false;
                let limits = &slot.spec.settings.limits;
                slot.state.quota_wait_until_ms =
                    Some(next_reset_after(limits.daily_reset_utc_s, now_ms));
                if let Some(run) = &mut slot.progress.run {
                    run.report.quota_waits += 1;
                }
                tracing::info!(tenant_id = %self.core.shared.tenant_id, source = %source, "source's daily quota spent; the poller waits for its reset with its progress saved");
                let state = slot.state.clone();
                self.store().put_poller_state(source, &state)
            }
            PollFetch::AuthRefused { message } => {
                slot.busy = false;
                slot.state.paused = Some(PauseReason::AuthRefused);
                let alert = format!("{source}: the source refused Steward's credentials ({message}); the poller is paused until they are fixed and it is resumed");
                self.raise(POLLER_AUTH_ALERT, &alert, now_ms)
                    .and_then(|()| self.end_run(source, "auth_refused", Some(message), now_ms))
            }
            PollFetch::Failed { message, .. } => {
                slot.busy = false;
                self.run_failed(source, message, now_ms)
            }
        };
        if let Err(error) = result {
            self.fail(format!("poller {source}: {error}"), ctx);
            return;
        }
        self.poll_wake(ctx);
    }

    /// A failed run: counted; the third in a row pauses the poller with an alert.
    fn run_failed(&mut self, source: &str, message: String, now_ms: u64) -> Result<(), StoreError> {
        let slot = self
            .behavior
            .polls
            .slots
            .get_mut(source)
            .expect("caller checked");
        slot.state.consecutive_failures += 1;
        let failures = slot.state.consecutive_failures;
        tracing::warn!(tenant_id = %self.core.shared.tenant_id, source = %source, failures, error = %message.escape_debug(), "poll run failed");
        if failures >= FAILED_RUNS_BEFORE_PAUSE {
            slot.state.paused = Some(PauseReason::Failures);
            let alert = format!("{source}: {failures} poll runs failed in a row (last: {message}); the poller is paused until an operator resumes it");
            self.raise(POLLER_FAILED_ALERT, &alert, now_ms)?;
        }
        self.end_run(source, "failed", Some(message), now_ms)
    }

    fn raise(&self, code: &str, message: &str, now_ms: u64) -> Result<(), StoreError> {
        let note = crate::source_fact::AlertNote {
            code: code.to_string(),
            message: message.to_string(),
        };
        super::commands::raise_alert(self.store(), &note, now_ms)
    }

    /// Writes a page's entries, then waits for them to be durable before the next page. A
    /// page is written in chunks of [`PAGE_WRITE_CHUNK`] entries, each flushed before the next,
    /// and the poller's progress goes into the same atomic write as the last chunk: a page of
    /// hundreds of entries in one group write would hold the store's writer — and every
    /// other tenant's acknowledgements — for tens of milliseconds. A crash between chunks
    /// repeats the page (its progress was not written), never skips it.
    fn write_page(&mut self, source: &str, page: PollPage, ctx: &mut Context<Self>) {
        let prepared = match self.prepare_page(source, page) {
            Ok(Some(prepared)) => prepared,
            Ok(None) => return,
            Err(error) => {
                self.fail(format!("poller {source}: {error}"), ctx);
                return;
            }
        };
        let PreparedPage {
            mut entries,
            progress,
            facts,
            has_more,
        } = prepared;
        let tenant_store = self.core.shared.tenant_store().clone();
        let store = self.core.shared.store().clone();
        let epoch = self.behavior.polls.slots.get(source).map(|slot| slot.epoch);
        let source = source.to_string();
        let generation = self.core.generation;
        let write_source = source.clone();
        let write_progress = progress.clone();
        let kind = self.behavior.polls.kind_of(&source).unwrap_or_default();
        let clock = std::sync::Arc::clone(&self.core.shared.clock);
        let write_shared = std::sync::Arc::clone(&self.core.shared);
        let write = async move {
            let mut outcomes = Vec::with_capacity(entries.len());
            let mut noted = 0;
            loop {
                let last = entries.len() <= PAGE_WRITE_CHUNK;
                let rest = if last {
                    Vec::new()
                } else {
                    entries.split_off(PAGE_WRITE_CHUNK)
                };
                let chunk = std::mem::replace(&mut entries, rest);
                // Partner changes of two-way pairs are decided first; the rest queue.
                let mut split = super::two_way::take(&write_shared, chunk)?;
                let queue = std::mem::take(&mut split.rest);
                let two_way_wake = split.wake;
                let written = if last {
                    tenant_store.enqueue_page(&write_source, queue, &write_progress)?
                } else {
                    tenant_store.enqueue(queue)?
                };
                let written = split.merge(written);
                if two_way_wake {
                    write_shared.two_way_wake.notify_waiters();
                }
                // Parity is noted with the chunk, before any await: a webhook of the same
                // fact handled in between would otherwise find no poll fact to mark `both`.
                if !facts.is_empty() {
                    let seen: Vec<SeenFact<'_>> = facts[noted..noted + written.len()]
                        .iter()
                        .zip(&written)
                        .map(|((key, record_id), outcome)| SeenFact {
                            idempotency_key: key,
                            record_id,
                            queued: matches!(outcome, EnqueueOutcome::Queued { .. }),
                        })
                        .collect();
                    let parity = tenant_store.note_parity(
                        &write_source,
                        CapturePath::Poll,
                        &seen,
                        clock.now_ms(),
                    )?;
                    count_parity(&kind, CapturePath::Poll, parity);
                }
                noted += written.len();
                outcomes.extend(written);
                store.durable().await?;
                if last {
                    break;
                }
            }
            Ok::<_, StoreError>(outcomes)
        };
        ctx.spawn(write.into_actor(self).map(move |written, capture, ctx| {
            if capture.core.generation != generation || !capture.may_act(ctx) {
                return;
            }
            let outcomes = match written {
                Ok(outcomes) => outcomes,
                Err(error) => {
                    capture.fail(format!("poller {source}: {error}"), ctx);
                    return;
                }
            };
            let now_ms = capture.now_ms();
            let ended = capture.page_written(&source, epoch, progress, &outcomes, has_more, now_ms);
            if let Err(error) = ended {
                capture.fail(format!("poller {source}: {error}"), ctx);
                return;
            }
            if !has_more {
                // The run's end (checkpoint, report) is written: ask for its flush now rather
                // than with the next write (a crash before it repeats the run, deduplicated).
                let store = capture.core.shared.store().clone();
                ctx.spawn(
                    async move {
                        let _ = store.durable().await;
                    }
                    .into_actor(capture),
                );
            }
            capture.poll_wake(ctx);
        }));
    }

    /// A page is durable: counters, the wake-up hint, and the run's next step.
    fn page_written(
        &mut self,
        source: &str,
        epoch: Option<u64>,
        progress: PollProgress,
        outcomes: &[EnqueueOutcome],
        has_more: bool,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let queued = EnqueueOutcome::queued_in(outcomes) as u64;
        self.behavior.counters.entries_queued += queued;
        self.behavior.counters.duplicates += outcomes.len() as u64 - queued;
        if queued > 0 {
            self.behavior.counters.hints_dropped += self.core.shared.hint_new_work(queued);
        }
        let store = self.core.shared.tenant_store().clone();
        let Some(slot) = self.behavior.polls.slots.get_mut(source) else {
            return Ok(());
        };
        if Some(slot.epoch) != epoch {
            // Removed and configured again while this page was written: the new slot
            // starts from the store on its own.
            return Ok(());
        }
        slot.progress = progress;
        slot.busy = false;
        store.put_poller_state(source, &slot.state)?;
        match (slot.end_after_page.take(), has_more) {
            (Some(outcome), _) => self.end_run(source, outcome, None, now_ms),
            (None, false) => self.run_completed(source, now_ms),
            (None, true) => Ok(()),
        }
    }

    /// A page's classification (new, changed, unchanged, rejected) and the progress it
    /// brings; nothing is written. `None` when no run is in progress.
    fn prepare_page(
        &mut self,
        source: &str,
        page: PollPage,
    ) -> Result<Option<PreparedPage>, StoreError> {
        let store = self.core.shared.tenant_store().clone();
        let slot = self
            .behavior
            .polls
            .slots
            .get_mut(source)
            .expect("caller checked");
        let hybrid = slot.spec.settings.has_webhooks;
        let mut progress = slot.progress.clone();
        if progress.run.is_none() {
            return Ok(None);
        }
        if page.source_status.is_some() {
            slot.source_status = page.source_status.clone();
        }
        // The page's alerts go first: a crash before its entries are written repeats them.
        let now_ms = self.core.shared.clock.now_ms();
        for note in &page.alerts {
            super::commands::raise_alert(&store, note, now_ms)?;
        }
        for code in &page.resolve {
            store.resolve_alert(code, now_ms)?;
        }
        if page.position.is_some() {
            progress.position = page.position.clone();
        }
        let mut fingerprints = FingerprintCheck::default();
        let run = progress.run.as_mut().expect("checked above");
        let report = &mut run.report;
        report.pages += 1;
        let mut entries: Vec<NewEntry> = Vec::new();
        let mut high: Option<PollMark> = None;
        for item in page.items {
            report.fetched += 1;
            let mark = PollMark {
                at_ms: item.version_ms,
                record_id: item.record_id.clone(),
            };
            if high.as_ref().map_or(true, |high| mark > *high) {
                high = Some(mark);
            }
            let item_entries = match item.entries {
                Ok(item_entries) => item_entries,
                Err(reason) => {
                    report.rejected += 1;
                    if report.rejections.len() < REJECTIONS_KEPT {
                        report.rejections.push(Rejection {
                            record_id: item.record_id,
                            reason,
                        });
                    }
                    continue;
                }
            };
            for entry in &item_entries {
                if let Some(note) = fingerprints.check(&store, entry)? {
                    super::commands::raise_alert(&store, &note, now_ms)?;
                    // Told once: the changed fingerprint now finds the record too (written
                    // after the alert, so a crash keeps the alert if it keeps this).
                    let fact = &entry.fact;
                    if let Some(alias) = fingerprint_alias_of(entry) {
                        store.add_alias(alias, fact.kind, &fact.source, &fact.source_id)?;
                    }
                }
            }
            // New record, new version of a known record, or a version seen before.
            let mut existed = false;
            let mut unseen = false;
            for entry in &item_entries {
                let fact = &entry.fact;
                match store.get_record(fact.kind, &fact.source, &fact.source_id)? {
                    Some(record) => {
                        existed = true;
                        unseen |= !record.has_seen(&fact.idempotency_key);
                    }
                    None => unseen = true,
                }
            }
            match (unseen, existed) {
                (false, _) => report.unchanged += 1,
                (true, true) => report.changed += 1,
                (true, false) => report.new += 1,
            }
            entries.extend(item_entries);
        }
        let run = progress.run.as_mut().expect("checked above");
        if let Some(high) = high {
            if run.high_water.as_ref().map_or(true, |mark| high > *mark) {
                run.high_water = Some(high);
            }
        }
        run.cursor = page.next_cursor.clone();
        run.report.checkpoint = run.high_water.clone();
        let facts: Vec<(String, String)> = if hybrid {
            entries
                .iter()
                .map(|entry| {
                    (
                        entry.fact.idempotency_key.clone(),
                        entry.fact.source_id.clone(),
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(Some(PreparedPage {
            entries,
            progress,
            facts,
            has_more: page.next_cursor.is_some(),
        }))
    }

    /// The last page is durable: the run is complete.
    fn run_completed(&mut self, source: &str, now_ms: u64) -> Result<(), StoreError> {
        let slot = self
            .behavior
            .polls
            .slots
            .get_mut(source)
            .expect("caller checked");
        slot.state.consecutive_failures = 0;
        let hybrid = slot.spec.settings.has_webhooks;
        self.end_run(source, "completed", None, now_ms)?;
        let failing = self
            .behavior
            .polls
            .slots
            .values()
            .any(|slot| slot.state.paused == Some(PauseReason::Failures));
        if !failing {
            self.store().resolve_alert(POLLER_FAILED_ALERT, now_ms)?;
        }
        if hybrid {
            self.check_parity(source, now_ms)?;
        }
        Ok(())
    }

    /// Ends the run in progress with `outcome`: its report is stored, its cursor dropped; a
    /// completed run's highest mark becomes the checkpoint.
    fn end_run(
        &mut self,
        source: &str,
        outcome: &str,
        error: Option<String>,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let store = self.core.shared.tenant_store().clone();
        let Some(slot) = self.behavior.polls.slots.get_mut(source) else {
            return Ok(());
        };
        let Some(run) = slot.progress.run.take() else {
            return store.put_poller_state(source, &slot.state);
        };
        // Only a completed run moves the checkpoint (to the highest mark it took): a run that
        // failed or was paused part-way may have read its listing out of order (two listings
        // in one run), so the next one starts again from where the last complete run ended.
        if outcome == "completed" {
            if let Some(high) = run.high_water {
                if slot
                    .progress
                    .checkpoint
                    .as_ref()
                    .map_or(true, |mark| high > *mark)
                {
                    slot.progress.checkpoint = Some(high);
                }
            }
        }
        let mut report = run.report;
        report.finished_at_ms = Some(now_ms);
        report.outcome = outcome.to_string();
        report.error = error;
        report.checkpoint = slot.progress.checkpoint.clone();
        store.put_poll_progress(source, &slot.progress)?;
        store.put_poller_state(source, &slot.state)?;
        store.put_poll_run(source, &report)?;
        metrics::counter!(
            crate::metrics::POLL_RUNS_TOTAL,
            crate::metrics::LABEL_SOURCE => slot.spec.settings.kind.clone(),
            crate::metrics::LABEL_OUTCOME => outcome.to_string()
        )
        .increment(1);
        tracing::info!(tenant_id = %store.tenant_id(), source = %source, outcome, pages = report.pages, fetched = report.fetched, new = report.new, changed = report.changed, unchanged = report.unchanged, rejected = report.rejected, "poll run ended");
        Ok(())
    }

    /// Raises the parity alert of a hybrid source when today's poll-only share (tenant's time
    /// zone) passes its threshold (the alert is acknowledged, never resolved by Steward).
    fn check_parity(&mut self, source: &str, now_ms: u64) -> Result<(), StoreError> {
        let Some(slot) = self.behavior.polls.slots.get(source) else {
            return Ok(());
        };
        let settings = &slot.spec.settings;
        let day_start_ms = day_start_in(&settings.time_zone, now_ms);
        let facts = self
            .store()
            .parity_facts(source, day_start_ms, now_ms.saturating_add(1))?;
        let settling = |fact: &crate::store::poll_ops::ParityFact| {
            fact.first == CapturePath::Poll
                && !fact.both
                && now_ms.saturating_sub(fact.first_at_ms) < PARITY_SETTLE_MS
        };
        let settled: Vec<_> = facts.iter().filter(|fact| !settling(fact)).collect();
        let total = settled.len() as u64;
        let poll_only = settled
            .iter()
            .filter(|fact| fact.first == CapturePath::Poll && !fact.both)
            .count() as u64;
        if total == 0 {
            return Ok(());
        }
        let share_pct = poll_only as f64 * 100.0 / total as f64;
        if share_pct > settings.parity_alert_pct {
            let message = format!(
                "{source}: {poll_only} of {total} facts today ({share_pct:.1} %) were seen by polling only: webhooks are being missed (threshold {} %); see GET /v1/tenants/{}/parity/{source}",
                settings.parity_alert_pct,
                self.core.shared.tenant_id
            );
            self.raise(PARITY_ALERT, &message, now_ms)?;
        }
        Ok(())
    }

    /// What the admin API shows of running pollers.
    fn publish_poll_live(&self) {
        let now_ms = self.now_ms();
        let live: BTreeMap<String, PollerLive> = self
            .behavior
            .polls
            .slots
            .iter()
            .map(|(source, slot)| {
                let next_run_at_ms = if slot.state.paused.is_some() {
                    None
                } else if let Some(until) = slot.state.quota_wait_until_ms.filter(|&u| u > now_ms) {
                    Some(until)
                } else if slot.progress.run.is_some() {
                    Some(slot.wait_until_ms.max(now_ms))
                } else {
                    next_scheduled_run(slot)
                };
                (
                    source.clone(),
                    PollerLive {
                        running: slot.progress.run.is_some(),
                        next_run_at_ms,
                        source_status: slot.source_status.clone(),
                    },
                )
            })
            .collect();
        *self
            .core
            .shared
            .poll_live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = live;
    }

    /// Parity of entries that came through a webhook route of a hybrid source.
    pub(super) fn note_webhook_parity(
        &mut self,
        facts: &[(String, String, String)],
        outcomes: &[EnqueueOutcome],
    ) {
        let now_ms = self.now_ms();
        let mut by_source: BTreeMap<&str, Vec<SeenFact<'_>>> = BTreeMap::new();
        for ((source, key, record_id), outcome) in facts.iter().zip(outcomes) {
            if !self.behavior.polls.is_hybrid(source) {
                continue;
            }
            by_source.entry(source).or_default().push(SeenFact {
                idempotency_key: key,
                record_id,
                queued: matches!(outcome, EnqueueOutcome::Queued { .. }),
            });
        }
        for (source, seen) in by_source {
            let kind = self.behavior.polls.kind_of(source).unwrap_or_default();
            // Parity is a report: a failure to note it is logged, never the enqueue's error.
            match self
                .store()
                .note_parity(source, CapturePath::Webhook, &seen, now_ms)
            {
                Ok(noted) => count_parity(&kind, CapturePath::Webhook, noted),
                Err(error) => {
                    tracing::warn!(tenant_id = %self.core.shared.tenant_id, source = %source, error = %error, "parity not recorded")
                }
            }
        }
    }
}

fn count_parity(kind: &str, path: CapturePath, noted: crate::store::poll_ops::ParityNoted) {
    use crate::metrics::{CAPTURE_PATH_TOTAL, LABEL_PATH, LABEL_SOURCE};
    if noted.first_seen > 0 {
        metrics::counter!(CAPTURE_PATH_TOTAL, LABEL_SOURCE => kind.to_string(), LABEL_PATH => path.name())
            .increment(noted.first_seen);
    }
    if noted.confirmed_by_other > 0 {
        metrics::counter!(CAPTURE_PATH_TOTAL, LABEL_SOURCE => kind.to_string(), LABEL_PATH => "both")
            .increment(noted.confirmed_by_other);
    }
}

/// Starts a run: since = the checkpoint's time − overlap.
fn start_run(slot: &mut Slot, trigger: &str, now_ms: u64) {
    let since_ms = slot.progress.checkpoint.as_ref().map_or(0, |mark| {
        mark.at_ms.saturating_sub(slot.spec.settings.overlap_ms)
    });
    slot.state.runs += 1;
    slot.state.last_run_started_ms = Some(now_ms);
    slot.progress.run = Some(RunProgress {
        since_ms,
        cursor: None,
        high_water: None,
        report: RunReport {
            run: slot.state.runs,
            started_at_ms: now_ms,
            outcome: "running".to_string(),
            trigger: trigger.to_string(),
            since_ms,
            checkpoint: slot.progress.checkpoint.clone(),
            ..RunReport::default()
        },
    });
}

/// Why the source's own limits hold the next call back, and until when.
enum LimitWait {
    /// The day's quota is spent (`quota_wait_until_ms` is set).
    Quota(u64),
    /// The per-second window is full.
    Second(u64),
}

/// Whether the source's own limits (calls a day, calls a second) allow a call now. Rolls the
/// quota day; a spent quota sets the slot's `quota_wait_until_ms` (the caller stores it).
fn limits_wait(slot: &mut Slot, now_ms: u64) -> Option<LimitWait> {
    let limits = &slot.spec.settings.limits;
    if let Some(daily) = limits.daily {
        roll_quota_day(&mut slot.state, limits.daily_reset_utc_s, now_ms);
        if slot.state.quota_calls >= u64::from(daily) {
            let until_ms = next_reset_after(limits.daily_reset_utc_s, now_ms);
            slot.state.quota_wait_until_ms = Some(until_ms);
            return Some(LimitWait::Quota(until_ms));
        }
    }
    if let Some(per_second) = limits.per_second {
        while slot
            .recent_calls
            .front()
            .is_some_and(|&at| at + 1_000 <= now_ms)
        {
            slot.recent_calls.pop_front();
        }
        if slot.recent_calls.len() >= per_second as usize {
            let oldest = *slot.recent_calls.front().expect("not empty");
            return Some(LimitWait::Second(oldest + 1_000));
        }
    }
    None
}

/// Counts an answer's calls against the source's limits (and the metric); returns them.
fn count_answer(slot: &mut Slot, fetch: &PollFetch, now_ms: u64) -> u32 {
    let calls = match fetch {
        PollFetch::Page(page) => page.calls,
        PollFetch::Throttled { calls, .. }
        | PollFetch::QuotaExhausted { calls }
        | PollFetch::Failed { calls, .. } => *calls,
        PollFetch::AuthRefused { .. } => 1,
    };
    // The per-second window holds answer times: the source saw each call at or before its
    // answer, and the next call is sent after, so "the 4th call before this one was answered
    // ≥ 1 s ago" keeps the source's own count within its limit whatever the latency (send
    // times alone let jitter put 5 arrivals in one second).
    for _ in 0..calls {
        slot.recent_calls.push_back(now_ms);
    }
    // One call was counted for the day when sent; an adapter may have made more (a token
    // refresh's repeat) or none (it answered without sending).
    slot.state.quota_calls = (slot.state.quota_calls + u64::from(calls)).saturating_sub(1);
    metrics::counter!(crate::metrics::POLL_CALLS_TOTAL, crate::metrics::LABEL_SOURCE => slot.spec.settings.kind.clone())
        .increment(u64::from(calls));
    calls
}

/// The fingerprint alias a gift entry carries, if any.
fn fingerprint_alias_of(entry: &NewEntry) -> Option<&str> {
    let fact = &entry.fact;
    let prefix = format!(
        "{}:{}{}:",
        fact.source,
        crate::ports::FINGERPRINT_MARK,
        fact.source_id
    );
    entry
        .aliases
        .iter()
        .find(|alias| alias.starts_with(&prefix))
        .map(String::as_str)
}

/// Gift fingerprints of one page ([`crate::ports::gift_fingerprint_alias`]): a gift entry
/// whose record is known (in the store, or earlier in this page) without the entry's
/// fingerprint changed at its source after capture.
#[derive(Default)]
struct FingerprintCheck {
    /// Record key (source, source id) → the fingerprint aliases earlier entries of the page
    /// carried.
    in_page: BTreeMap<(String, String), Vec<String>>,
}

impl FingerprintCheck {
    fn check(
        &mut self,
        store: &TenantStore,
        entry: &NewEntry,
    ) -> Result<Option<crate::source_fact::AlertNote>, StoreError> {
        let fact = &entry.fact;
        if fact.kind != crate::store::RecordKind::Gift {
            return Ok(None);
        }
        let Some(alias) = fingerprint_alias_of(entry) else {
            return Ok(None);
        };
        let key = (fact.source.clone(), fact.source_id.clone());
        let earlier = self.in_page.entry(key).or_default();
        let known_here = !earlier.is_empty();
        let same_here = earlier.iter().any(|known| known == alias);
        earlier.push(alias.to_string());
        let changed = if known_here {
            !same_here && store.find_record_by_alias(alias)?.is_none()
        } else {
            store
                .get_record(fact.kind, &fact.source, &fact.source_id)?
                .is_some()
                && store.find_record_by_alias(alias)?.is_none()
        };
        if !changed {
            return Ok(None);
        }
        let body: serde_json::Value = serde_json::from_str(&fact.body_json).unwrap_or_default();
        let text = |key: &str| {
            body.get(key)
                .and_then(serde_json::Value::as_str)
                .unwrap_or("?")
        };
        Ok(Some(crate::source_fact::AlertNote {
            code: crate::ports::GIFT_CHANGED_ALERT.to_string(),
            message: format!(
                "{}: gift {} changed at the source after Steward captured it (now {}{} on {}); \
                 Virtuous keeps the first version: adjust the gift by hand",
                fact.source,
                fact.source_id,
                text("amount"),
                body.get("currencyCode")
                    .and_then(serde_json::Value::as_str)
                    .map(|code| format!(" {code}"))
                    .unwrap_or_default(),
                text("giftDate"),
            ),
        }))
    }
}
