//! Inbound's delivery loops (docs/pull.md "Delivery"): one per configured destination, each
//! an independent future on the tenant's arbiter, so a slow or failing destination holds up
//! neither capture nor another destination.
//!
//! A loop reads the change log after its **read cursor** (starting at the destination's
//! checkpoint), skips what needs no delivery (superseded by a newer version of the record,
//! our own writes when `include_own` is off, kinds no longer pulled), hands the rest to the
//! destination in batches, and moves the **checkpoint** only past what the destination says is
//! durable on its side (`committed_through`): a buffering destination (NDJSON) may hold
//! delivered changes until its file is finished. Refused changes become the destination's
//! dead letters in the same step. A failed attempt rewinds the cursor to the checkpoint and
//! waits on the retry schedule (`submit.retry_schedule_ms`, the schedule Virtuous calls use);
//! when the schedule is exhausted, the first change not delivered is dead-lettered and the
//! loop goes on. Three failures in a row raise `destination_failing`; a success resolves it.
//! An operator's replay of a dead letter logs the change again (`pull_ops`), so it comes
//! through the log like any other.

use std::sync::Arc;
use std::time::Duration;

use crate::hub::TenantShared;
use crate::ports::DestinationSpec;
use crate::pull::{DeliveryAnswer, DestinationLive, StoredChange};
use crate::store::pull_ops::{DestinationDeadLetter, DestinationState};
use crate::store::StoreError;

/// Alert raised after this many failed attempts in a row.
pub const DESTINATION_FAILING_ALERT: &str = "destination_failing";
const FAILING_AFTER: u32 = 3;
/// Longest idle wait before a loop looks at the log again (settles buffering destinations).
const IDLE_WAIT_MS: u64 = 1_000;

fn publish(shared: &TenantShared, name: &str, live: &DestinationLive) {
    shared
        .destination_live
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .insert(name.to_string(), live.clone());
}

/// Waits for new changes (or an operator's command) at most `ms`.
async fn wait(shared: &TenantShared, ms: u64) {
    let notified = shared.pull_wake.notified();
    let _ = tokio::time::timeout(Duration::from_millis(ms), notified).await;
}

/// One destination's loop; runs until the Inbound generation that spawned it stops.
pub(super) async fn run(shared: Arc<TenantShared>, spec: DestinationSpec) {
    let mut delivery = Delivery::open(&shared, &spec).await;
    loop {
        let wait_ms = match delivery.step(&shared, &spec).await {
            Ok(wait_ms) => wait_ms,
            Err(error) => {
                tracing::error!(tenant_id = %shared.tenant_id, destination = %spec.name, error = %error, "destination loop: store error; retrying");
                delivery.rewind(&spec).await;
                5_000
            }
        };
        delivery.publish_lag(&shared, &spec);
        publish(&shared, &spec.name, &delivery.live);
        if wait_ms > 0 {
            wait(&shared, wait_ms).await;
        }
    }
}

struct Delivery {
    checkpoint: u64,
    cursor: u64,
    /// Seq of the last change handed over and not yet committed.
    uncommitted_through: Option<u64>,
    uncommitted: u64,
    next_attempt_at_ms: u64,
    /// Skips are counted once: a retry or a rewind reads the same changes again.
    skips_counted_through: u64,
    live: DestinationLive,
}

impl Delivery {
    async fn open(shared: &TenantShared, spec: &DestinationSpec) -> Delivery {
        spec.destination.reset().await;
        let checkpoint = shared
            .tenant_store()
            .destination_checkpoint(&spec.name)
            .map(|checkpoint| checkpoint.seq)
            .unwrap_or(0);
        Delivery {
            checkpoint,
            cursor: checkpoint,
            uncommitted_through: None,
            uncommitted: 0,
            next_attempt_at_ms: 0,
            skips_counted_through: checkpoint,
            live: DestinationLive {
                activity: "idle".to_string(),
                ..DestinationLive::default()
            },
        }
    }

    /// Back to the checkpoint: what was handed over and not committed comes again.
    async fn rewind(&mut self, spec: &DestinationSpec) {
        spec.destination.reset().await;
        self.cursor = self.checkpoint;
        self.uncommitted_through = None;
        self.uncommitted = 0;
        self.live.uncommitted = 0;
    }

    fn publish_lag(&mut self, shared: &TenantShared, spec: &DestinationSpec) {
        let now_ms = shared.clock.now_ms();
        let oldest = shared
            .tenant_store()
            .changes_after(self.checkpoint, 1)
            .ok()
            .and_then(|changes| changes.first().map(|change| change.received_ms));
        self.live.lag_ms = oldest.map_or(0, |received_ms| now_ms.saturating_sub(received_ms));
        crate::metrics::publish_destination_lag(
            &shared.tenant_id,
            &spec.name,
            &spec.kind,
            self.live.lag_ms as f64 / 1_000.0,
        );
    }

    /// One step: deliver a batch (or settle, or wait). Answers how long to wait before the
    /// next step (0: go on at once).
    async fn step(
        &mut self,
        shared: &TenantShared,
        spec: &DestinationSpec,
    ) -> Result<u64, StoreError> {
        let store = shared.tenant_store();
        let now_ms = shared.clock.now_ms();
        if store.destination_paused(&spec.name)? {
            self.live.activity = "paused".to_string();
            self.live.next_attempt_at_ms = None;
            return Ok(IDLE_WAIT_MS);
        }
        // A replay moved the checkpoint back (or forward): start from it.
        let stored = store.destination_checkpoint(&spec.name)?.seq;
        if stored != self.checkpoint {
            self.checkpoint = stored;
            self.rewind(spec).await;
        }
        if now_ms < self.next_attempt_at_ms {
            return Ok((self.next_attempt_at_ms - now_ms).min(IDLE_WAIT_MS));
        }
        let batch = store.changes_after(self.cursor, spec.batch_max)?;
        if batch.is_empty() {
            let answer = spec.destination.settle(now_ms).await;
            self.settle_answer(shared, spec, &[], answer).await?;
            self.live.activity = "idle".to_string();
            return Ok(IDLE_WAIT_MS);
        }
        let last_seq = batch.last().map_or(self.cursor, |change| change.seq);
        let settings = shared.settings().pull;
        let mut to_deliver = Vec::with_capacity(batch.len());
        let mut state = store.destination_state(&spec.name)?;
        for change in batch {
            match skip_reason(shared, &settings, &change)? {
                Some(outcome) if change.seq > self.skips_counted_through => {
                    count(spec, outcome, 1);
                    match outcome {
                        "own_skipped" => state.own_skipped += 1,
                        _ => state.superseded += 1,
                    }
                }
                Some(_) => {}
                None => to_deliver.push(change),
            }
        }
        self.skips_counted_through = self.skips_counted_through.max(last_seq);
        if to_deliver.is_empty() {
            self.cursor = last_seq;
            if self.uncommitted_through.is_none() {
                self.advance(shared, spec, last_seq, &mut state, Vec::new())
                    .await?;
            } else {
                store.put_destination_state(&spec.name, &state)?;
            }
            return Ok(0);
        }
        self.live.activity = "delivering".to_string();
        let handed: Vec<u64> = to_deliver.iter().map(|change| change.seq).collect();
        let changes = to_deliver.clone();
        let answer = spec.destination.deliver(to_deliver).await;
        self.handle_answer(shared, spec, &changes, &handed, last_seq, state, answer)
            .await
    }

    /// The answer to a delivery of `changes` (read through `last_seq`).
    #[allow(clippy::too_many_arguments)]
    async fn handle_answer(
        &mut self,
        shared: &TenantShared,
        spec: &DestinationSpec,
        changes: &[StoredChange],
        handed: &[u64],
        last_seq: u64,
        mut state: DestinationState,
        answer: DeliveryAnswer,
    ) -> Result<u64, StoreError> {
        let now_ms = shared.clock.now_ms();
        let letters = dead_letters(spec, changes, &answer.rejected, "", now_ms);
        let rejected: Vec<u64> = answer.rejected.iter().map(|(seq, _)| *seq).collect();
        let committed = answer.committed_through;
        let mut delivered = handed
            .iter()
            .filter(|seq| {
                committed.is_some_and(|through| **seq <= through) && !rejected.contains(seq)
            })
            .count() as u64;
        if self.uncommitted_through.is_some()
            && committed.is_some_and(|through| Some(through) >= self.uncommitted_through)
        {
            // Earlier buffered changes were committed with these.
            delivered += self.uncommitted;
        }
        state.delivered += delivered;
        state.dead_lettered += letters.len() as u64;
        count(spec, "delivered", delivered);
        count(spec, "dead_lettered", letters.len() as u64);
        if delivered > 0 {
            state.last_delivered_at_ms = Some(now_ms);
        }
        if let Some(retry) = answer.retry {
            // Everything through `committed` (and the refused ones) is settled; the rest
            // comes again after the wait.
            let through = committed.unwrap_or(self.checkpoint).max(self.checkpoint);
            let mut letters = letters;
            let first_open = handed
                .iter()
                .find(|seq| **seq > through && !rejected.contains(seq))
                .copied();
            state.failures += 1;
            state.consecutive_failures += 1;
            state.last_error = Some(retry.message.clone());
            state.last_error_at_ms = Some(now_ms);
            metrics::counter!(crate::metrics::DESTINATION_FAILURES_TOTAL, crate::metrics::LABEL_DESTINATION => spec.kind.clone()).increment(1);
            let schedule = shared.settings().submit.retry_schedule_ms;
            let attempt = state.consecutive_failures as usize;
            let mut new_through = through;
            let wait_ms = if attempt > schedule.len() {
                // The schedule is spent: the first change the destination does not hold
                // becomes a dead letter, and the loop goes on with the next one. It is read
                // from the log when changes handed over in earlier batches were still
                // uncommitted (a buffering destination loses them with this one).
                let open = match first_open.filter(|_| self.uncommitted_through.is_none()) {
                    Some(seq) => changes.iter().find(|change| change.seq == seq).cloned(),
                    None => shared
                        .tenant_store()
                        .changes_after(through, 1)?
                        .into_iter()
                        .next(),
                };
                if let Some(change) = open {
                    let reason = format!(
                        "given up after {} attempts: {}",
                        state.consecutive_failures, retry.message
                    );
                    let seq = change.seq;
                    letters.extend(dead_letters(spec, &[change], &[(seq, reason)], "", now_ms));
                    state.dead_lettered += 1;
                    count(spec, "dead_lettered", 1);
                    new_through = seq;
                }
                state.consecutive_failures = 0;
                0
            } else {
                let planned = schedule.get(attempt - 1).copied().unwrap_or(60_000);
                planned.max(retry.retry_after_ms.unwrap_or(0))
            };
            // Dead letters handed over past `new_through` are written now too: the retry
            // will not hand them over again (they are refused for good).
            self.advance(shared, spec, new_through, &mut state, letters)
                .await?;
            self.rewind(spec).await;
            self.next_attempt_at_ms = now_ms + wait_ms;
            self.live.activity = "retrying".to_string();
            self.live.next_attempt_at_ms = Some(self.next_attempt_at_ms);
            if state.consecutive_failures >= FAILING_AFTER {
                let message = format!(
                    "destination `{}` ({}) failed {} times in a row: {}",
                    spec.name, spec.kind, state.consecutive_failures, retry.message
                );
                shared
                    .tenant_store()
                    .raise_alert(DESTINATION_FAILING_ALERT, &message, now_ms)?;
                tracing::warn!(tenant_id = %shared.tenant_id, destination = %spec.name, detail = %message.escape_debug(), "destination failing");
            }
            shared
                .tenant_store()
                .put_destination_state(&spec.name, &state)?;
            shared.store().durable().await?;
            return Ok(wait_ms.min(IDLE_WAIT_MS));
        }
        self.live.next_attempt_at_ms = None;
        // A buffered answer commits nothing: it does not end a run of failures.
        if state.consecutive_failures > 0 && committed.is_some() {
            state.consecutive_failures = 0;
            resolve_failing(shared, spec, now_ms)?;
        }
        self.cursor = last_seq;
        match committed {
            Some(through) if through >= handed.last().copied().unwrap_or(0) => {
                self.uncommitted_through = None;
                self.uncommitted = 0;
                self.advance(shared, spec, last_seq, &mut state, letters)
                    .await?;
            }
            _ => {
                // Buffered: the checkpoint waits for the destination's commit.
                self.uncommitted_through = handed.last().copied();
                self.uncommitted += handed.len() as u64;
                if !letters.is_empty() {
                    shared
                        .tenant_store()
                        .put_destination_dead_letters(&letters)?;
                }
                shared
                    .tenant_store()
                    .put_destination_state(&spec.name, &state)?;
            }
        }
        self.live.uncommitted = self.uncommitted;
        Ok(0)
    }

    /// A settle's answer: a buffering destination committed what it held.
    async fn settle_answer(
        &mut self,
        shared: &TenantShared,
        spec: &DestinationSpec,
        changes: &[StoredChange],
        answer: DeliveryAnswer,
    ) -> Result<(), StoreError> {
        let Some(through) = self.uncommitted_through else {
            return Ok(());
        };
        let now_ms = shared.clock.now_ms();
        if let Some(retry) = answer.retry {
            tracing::warn!(tenant_id = %shared.tenant_id, destination = %spec.name, detail = %retry.message.escape_debug(), "destination could not commit; delivering again from its checkpoint");
            let mut state = shared.tenant_store().destination_state(&spec.name)?;
            state.failures += 1;
            state.consecutive_failures += 1;
            state.last_error = Some(retry.message.clone());
            state.last_error_at_ms = Some(now_ms);
            metrics::counter!(crate::metrics::DESTINATION_FAILURES_TOTAL, crate::metrics::LABEL_DESTINATION => spec.kind.clone()).increment(1);
            if state.consecutive_failures >= FAILING_AFTER {
                let message = format!(
                    "destination `{}` ({}) could not commit {} times in a row: {}",
                    spec.name, spec.kind, state.consecutive_failures, retry.message
                );
                shared
                    .tenant_store()
                    .raise_alert(DESTINATION_FAILING_ALERT, &message, now_ms)?;
            }
            shared
                .tenant_store()
                .put_destination_state(&spec.name, &state)?;
            self.rewind(spec).await;
            let schedule = shared.settings().submit.retry_schedule_ms;
            let index = (state.consecutive_failures as usize).saturating_sub(1);
            let wait_ms = schedule
                .get(index)
                .or(schedule.last())
                .copied()
                .unwrap_or(60_000);
            self.next_attempt_at_ms = now_ms + wait_ms;
            self.live.activity = "retrying".to_string();
            self.live.next_attempt_at_ms = Some(self.next_attempt_at_ms);
            return Ok(());
        }
        if answer
            .committed_through
            .is_some_and(|committed| committed >= through)
        {
            let mut state = shared.tenant_store().destination_state(&spec.name)?;
            // The buffered changes are held now: count them, end a run of failures.
            state.delivered += self.uncommitted;
            count(spec, "delivered", self.uncommitted);
            state.last_delivered_at_ms = Some(now_ms);
            if state.consecutive_failures > 0 {
                state.consecutive_failures = 0;
                resolve_failing(shared, spec, now_ms)?;
            }
            let letters = dead_letters(spec, changes, &answer.rejected, "", now_ms);
            self.uncommitted_through = None;
            self.uncommitted = 0;
            self.live.uncommitted = 0;
            let cursor = self.cursor;
            self.advance(shared, spec, cursor, &mut state, letters)
                .await?;
        }
        Ok(())
    }

    /// Moves the checkpoint to `through` with the dead letters and the state, durably.
    async fn advance(
        &mut self,
        shared: &TenantShared,
        spec: &DestinationSpec,
        through: u64,
        state: &mut DestinationState,
        letters: Vec<DestinationDeadLetter>,
    ) -> Result<(), StoreError> {
        let store = shared.tenant_store();
        if !letters.is_empty() {
            store.put_destination_dead_letters(&letters)?;
            for letter in &letters {
                tracing::warn!(tenant_id = %shared.tenant_id, destination = %spec.name, seq = letter.change.seq, reason = %letter.reason.escape_debug(), "change dead-lettered for a destination");
            }
        }
        store.put_destination_state(&spec.name, state)?;
        if through > self.checkpoint {
            if store.advance_destination_checkpoint(&spec.name, self.checkpoint, through)? {
                self.checkpoint = through;
            } else {
                // An operator's replay moved the checkpoint: the next step starts from it.
                tracing::info!(tenant_id = %shared.tenant_id, destination = %spec.name, "checkpoint moved by a replay; delivering from it");
            }
        }
        shared.store().durable().await
    }
}

/// Resolves `destination_failing` once no other destination of the tenant is failing
/// (`spec` has just succeeded).
fn resolve_failing(
    shared: &TenantShared,
    spec: &DestinationSpec,
    now_ms: u64,
) -> Result<(), StoreError> {
    let others: Vec<String> = shared
        .destinations()
        .iter()
        .filter(|other| other.name != spec.name)
        .map(|other| other.name.clone())
        .collect();
    shared
        .tenant_store()
        .resolve_alert_when(DESTINATION_FAILING_ALERT, now_ms, |store| {
            for name in &others {
                if store.destination_state(name)?.consecutive_failures >= FAILING_AFTER {
                    return Ok(false);
                }
            }
            Ok(true)
        })?;
    Ok(())
}

/// Why a change needs no delivery (`None`: deliver it).
fn skip_reason(
    shared: &TenantShared,
    settings: &crate::settings::PullSettings,
    change: &StoredChange,
) -> Result<Option<&'static str>, StoreError> {
    if change.own && !settings.include_own {
        return Ok(Some("own_skipped"));
    }
    if !settings.events.contains(&change.kind) {
        return Ok(Some("superseded"));
    }
    let superseded = shared
        .tenant_store()
        .latest_version(change.kind, &change.id)?
        .is_some_and(|latest| latest.seq > change.seq);
    Ok(superseded.then_some("superseded"))
}

fn dead_letters(
    spec: &DestinationSpec,
    changes: &[StoredChange],
    rejected: &[(u64, String)],
    prefix: &str,
    now_ms: u64,
) -> Vec<DestinationDeadLetter> {
    rejected
        .iter()
        .filter_map(|(seq, reason)| {
            let change = changes.iter().find(|change| change.seq == *seq)?;
            Some(DestinationDeadLetter {
                destination: spec.name.clone(),
                change: change.clone(),
                reason: format!("{prefix}{reason}"),
                attempts: 1,
                at_ms: now_ms,
            })
        })
        .collect()
}

fn count(spec: &DestinationSpec, outcome: &'static str, n: u64) {
    if n > 0 {
        metrics::counter!(
            crate::metrics::DESTINATION_CHANGES_TOTAL,
            crate::metrics::LABEL_DESTINATION => spec.kind.clone(),
            crate::metrics::LABEL_OUTCOME => outcome
        )
        .increment(n);
    }
}
