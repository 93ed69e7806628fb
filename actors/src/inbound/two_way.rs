//! Inbound's pair loops (docs/two-way.md "The pair loop"): one per two-way pair, an
//! independent future on the tenant's arbiter, like the destination loops.
//!
//! Each round it
//! 1. decides the Virtuous contact changes of the change log after its checkpoint
//!    (`two_way:{pair}`, moved only past what it stored), linking a contact to its partner
//!    record the first time Virtuous names the partner id in `contactReferences`;
//! 2. makes the writes links have pending (`on` only): to Virtuous a read (`GET
//!    /api/Contact/{id}`, so a change made since is decided first and never overwritten) and
//!    a `PUT` of the contact with the fields set, each call drawn from the tenant's budget
//!    (live lane); to the partner an idempotent upsert through its [`PartnerWriter`]. A failed
//!    write waits on the submitter's retry schedule; a refused one, or one whose schedule is
//!    spent, becomes the pair's dead letter;
//! 3. advances the pair's cross-match job, if one runs (`cross_match`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::hub::TenantShared;
use crate::ports::{CrmWrite, PartnerAnswer, PartnerSpec};
use crate::pull::{ChangeKind, ChangeOp, StoredChange};
use crate::store::two_way_ops::{TwoWayDeadLetter, TwoWayUpdate};
use crate::store::{Lane, StoreError};
use crate::two_way::decide::complete_write;
use crate::two_way::fields::{
    apply_to_virtuous, from_virtuous, only, same, virtuous_references, Fields,
};
use crate::two_way::{Incoming, Link, Mode, Overwrite, PairCounts, PairLive, PairSettings, Side};

/// Changes decided per round, and links written per round.
const CHANGES_PER_ROUND: usize = 200;
const WRITES_PER_ROUND: usize = 100;
/// A contact prefetched for a round's writes is used this long; later ones are read again.
const PREFETCH_FRESH_MS: u64 = 2_000;
/// Longest wait for a write's second call.
const SECOND_CALL_WAIT_MAX_MS: u64 = 60_000;
/// Most ids one `FullContact` read takes.
const READ_IDS_MAX: usize = 100;
/// Longest idle wait.
const IDLE_WAIT_MS: u64 = 1_000;
/// A partner's own limit: at most this many calls a second per pair.
pub const PARTNER_CALLS_PER_S: u64 = 20;

/// The checkpoint name of a pair's place in the change log.
pub fn checkpoint_name(pair: &str) -> String {
    format!("two_way:{pair}")
}

/// Attempts and the next try of a record's failing write, per side.
#[derive(Debug, Default)]
struct Backoff {
    failures: BTreeMap<(Side, String), (u32, u64)>,
}

impl Backoff {
    fn due(&self, side: Side, partner_id: &str, now_ms: u64) -> bool {
        self.failures
            .get(&(side, partner_id.to_string()))
            .map_or(true, |(_, at_ms)| *at_ms <= now_ms)
    }

    /// Notes a failure; `None` when the schedule is spent (dead letter).
    fn failed(
        &mut self,
        side: Side,
        partner_id: &str,
        now_ms: u64,
        schedule: &[u64],
        after_ms: Option<u64>,
    ) -> Option<u32> {
        let entry = self
            .failures
            .entry((side, partner_id.to_string()))
            .or_insert((0, 0));
        entry.0 += 1;
        let delay = schedule.get(entry.0 as usize - 1).copied()?;
        entry.1 = now_ms + after_ms.unwrap_or(0).max(delay);
        Some(entry.0)
    }

    fn attempts(&self, side: Side, partner_id: &str) -> u32 {
        self.failures
            .get(&(side, partner_id.to_string()))
            .map_or(0, |(attempts, _)| *attempts)
    }

    fn clear(&mut self, side: Side, partner_id: &str) {
        self.failures.remove(&(side, partner_id.to_string()));
    }
}

struct PairLoop {
    shared: Arc<TenantShared>,
    partner: PartnerSpec,
    backoff: Backoff,
    next_partner_call_ms: u64,
    live: PairLive,
}

/// One pair's loop; runs until the Inbound generation that spawned it stops.
pub(super) async fn run(shared: Arc<TenantShared>, partner: PartnerSpec) {
    let mut pair_loop = PairLoop {
        shared,
        partner,
        backoff: Backoff::default(),
        next_partner_call_ms: 0,
        live: PairLive {
            activity: "idle".into(),
            ..PairLive::default()
        },
    };
    loop {
        let Some(pair) = pair_loop.settings() else {
            return; // The pair is gone from the document.
        };
        let busy = match pair_loop.round(&pair).await {
            Ok(busy) => {
                pair_loop.live.last_error = None;
                busy
            }
            Err(error) => {
                tracing::error!(tenant_id = %pair_loop.shared.tenant_id, pair = %pair.pair, error = %error, "two-way loop: store error; retrying");
                pair_loop.live.last_error = Some(error.to_string());
                false
            }
        };
        pair_loop.publish(&pair);
        if !busy {
            let shared = &pair_loop.shared;
            let two_way = shared.two_way_wake.notified();
            let pull = shared.pull_wake.notified();
            let _ = tokio::time::timeout(Duration::from_millis(IDLE_WAIT_MS), async {
                tokio::select! {
                    _ = two_way => {},
                    _ = pull => {},
                }
            })
            .await;
        }
    }
}

impl PairLoop {
    fn settings(&self) -> Option<PairSettings> {
        self.shared
            .settings()
            .two_way
            .into_iter()
            .find(|pair| pair.pair == self.partner.pair)
    }

    fn publish(&self, pair: &PairSettings) {
        self.shared
            .two_way_live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(pair.pair.clone(), self.live.clone());
    }

    /// One round; true when there may be more to do at once.
    async fn round(&mut self, pair: &PairSettings) -> Result<bool, StoreError> {
        let decided = self.virtuous_changes(pair)?;
        let mut busy = decided >= CHANGES_PER_ROUND;
        let stopped = self.shared.is_paused() || self.shared.needs_operator();
        if pair.mode == Mode::On && !stopped {
            busy |= self.writes(pair).await?;
        } else {
            self.live.activity = if stopped { "paused" } else { "observing" }.into();
        }
        busy |= super::cross_match::step(&self.shared, pair, &self.partner).await?;
        Ok(busy)
    }

    /// Decides the Virtuous contact changes after the checkpoint; returns how many it read.
    fn virtuous_changes(&mut self, pair: &PairSettings) -> Result<usize, StoreError> {
        let store = self.shared.tenant_store();
        let name = checkpoint_name(&pair.pair);
        let checkpoint = store.destination_checkpoint(&name)?.seq;
        let changes = store.changes_after(checkpoint, CHANGES_PER_ROUND)?;
        let Some(last) = changes.last().map(|change| change.seq) else {
            return Ok(0);
        };
        let mut wake = false;
        for change in &changes {
            if change.kind != ChangeKind::Contact {
                continue;
            }
            let superseded = store
                .latest_version(change.kind, &change.id)?
                .is_some_and(|latest| latest.seq > change.seq);
            // A superseded change still matters when our PUT replaced it (it is dated between
            // the version that write read and the one it made): it becomes a conflict.
            if !superseded || self.overwritten(pair, change)? {
                wake |= self.virtuous_change(pair, change)?;
            }
        }
        store.advance_destination_checkpoint(&name, checkpoint, last)?;
        self.live.checkpoint = last;
        if wake {
            self.shared.two_way_wake.notify_waiters();
        }
        Ok(changes.len())
    }

    /// Whether `change` falls inside the window of our last `PUT` of its contact.
    fn overwritten(&self, pair: &PairSettings, change: &StoredChange) -> Result<bool, StoreError> {
        let link = self
            .shared
            .tenant_store()
            .two_way_link_by_virtuous(&pair.pair, &change.id)?;
        Ok(link
            .and_then(|link| link.virtuous_overwrite)
            .is_some_and(|mark| {
                change.version_ms > mark.read_ms && change.version_ms < mark.written_ms
            }))
    }

    /// One Virtuous change; true when it ordered a write.
    fn virtuous_change(
        &self,
        pair: &PairSettings,
        change: &StoredChange,
    ) -> Result<bool, StoreError> {
        let store = self.shared.tenant_store();
        let now_ms = self.shared.clock.now_ms();
        let _guard = self.shared.two_way_guard();
        let mut link = store.two_way_link_by_virtuous(&pair.pair, &change.id)?;
        if link.is_none() {
            // First sight: Virtuous names the partner record among its references.
            for (source, partner_id) in virtuous_references(&change.record) {
                if source.eq_ignore_ascii_case(&pair.reference_source) {
                    let mut found = store
                        .two_way_link(&pair.pair, &partner_id)?
                        .unwrap_or_else(|| Link::new(&pair.pair, &partner_id));
                    found.virtuous_id = Some(change.id.clone());
                    found.record(
                        now_ms,
                        found.state,
                        "linked: Virtuous names the partner record",
                    );
                    link = Some(found);
                    break;
                }
            }
        }
        let Some(mut link) = link else {
            let counts = PairCounts {
                virtuous_changes: 1,
                unlinked: 1,
                ..PairCounts::default()
            };
            store.save_two_way(TwoWayUpdate {
                counts: vec![(pair.pair.clone(), counts)],
                ..TwoWayUpdate::default()
            })?;
            return Ok(false);
        };
        if link.external_only {
            return Ok(false);
        }
        if change.op == ChangeOp::Delete {
            link.virtuous_id = None;
            link.pending_virtuous.clear();
            link.record(now_ms, link.state, "contact deleted in Virtuous: unlinked");
            store.save_two_way(TwoWayUpdate {
                links: vec![link],
                ..TwoWayUpdate::default()
            })?;
            return Ok(false);
        }
        let incoming = Incoming {
            side: Side::Virtuous,
            fields: from_virtuous(&change.record),
            version_ms: change.version_ms,
            ours: written_by(pair, &change.record),
        };
        let (link, decision, opened) = store.apply_two_way_change(pair, link, &incoming, now_ms)?;
        crate::metrics::count_two_way(Side::Virtuous, &decision, opened);
        Ok(!link.pending(Side::Partner).is_empty() || !link.pending(Side::Virtuous).is_empty())
    }

    /// Makes the pending writes of up to [`WRITES_PER_ROUND`] links; true when more wait.
    async fn writes(&mut self, pair: &PairSettings) -> Result<bool, StoreError> {
        let store = self.shared.tenant_store().clone();
        let ids = store.two_way_pending(&pair.pair, WRITES_PER_ROUND)?;
        if ids.is_empty() {
            self.live.activity = "idle".into();
            self.live.next_attempt_at_ms = None;
            return Ok(false);
        }
        self.live.activity = "writing".into();
        let mut wrote = false;
        let mut next_attempt: Option<u64> = None;
        let mut prefetched = match self.prefetch(pair, &ids).await? {
            Ok(prefetched) => prefetched,
            Err(at_ms) => {
                self.live.activity = "waiting".into();
                self.live.next_attempt_at_ms = Some(at_ms);
                return Ok(false);
            }
        };
        let prefetched_at_ms = self.shared.clock.now_ms();
        for partner_id in ids {
            for side in [Side::Virtuous, Side::Partner] {
                let now_ms = self.shared.clock.now_ms();
                if !self.backoff.due(side, &partner_id, now_ms) {
                    let at = self.backoff.failures[&(side, partner_id.clone())].1;
                    next_attempt = Some(next_attempt.map_or(at, |next: u64| next.min(at)));
                    continue;
                }
                // Read afresh for each side: the other side's write, or a change decided
                // meanwhile (a conflict), may have changed what is pending.
                let Some(link) = store.two_way_link(&pair.pair, &partner_id)? else {
                    break;
                };
                if link.external_only {
                    break;
                }
                let outcome = match side {
                    Side::Virtuous => {
                        // A prefetched contact is used only while it is fresh.
                        let current = link
                            .virtuous_id
                            .as_ref()
                            .and_then(|id| prefetched.remove(id))
                            .filter(|_| {
                                now_ms.saturating_sub(prefetched_at_ms) <= PREFETCH_FRESH_MS
                            });
                        self.write_virtuous(pair, &link, current).await?
                    }
                    Side::Partner => self.write_partner(pair, &link).await?,
                };
                match outcome {
                    Step::Nothing => {}
                    Step::Done => {
                        wrote = true;
                        self.backoff.clear(side, &partner_id);
                    }
                    Step::Wait(at_ms) => {
                        // The budget or the partner's pace: the round ends here.
                        self.live.activity = "waiting".into();
                        self.live.next_attempt_at_ms = Some(at_ms);
                        return Ok(false);
                    }
                    Step::Failed { reason, after_ms } => {
                        self.failed(pair, &partner_id, side, reason, after_ms, false)?;
                    }
                    Step::Refused(reason) => {
                        self.failed(pair, &partner_id, side, reason, None, true)?;
                    }
                }
            }
        }
        self.live.next_attempt_at_ms = next_attempt;
        Ok(wrote)
    }

    /// A failed write: retried on the schedule, or a dead letter (its fields no longer
    /// pending) when refused or when the schedule is spent.
    fn failed(
        &mut self,
        pair: &PairSettings,
        partner_id: &str,
        side: Side,
        reason: String,
        after_ms: Option<u64>,
        refused: bool,
    ) -> Result<(), StoreError> {
        let now_ms = self.shared.clock.now_ms();
        let schedule = self.shared.settings().submit.retry_schedule_ms;
        self.live.last_error = Some(format!("{} write of {partner_id}: {reason}", side.name()));
        let retried = if refused {
            None
        } else {
            self.backoff
                .failed(side, partner_id, now_ms, &schedule, after_ms)
        };
        let mut counts = PairCounts {
            write_failures: 1,
            ..PairCounts::default()
        };
        if retried.is_some() {
            count_write(side, "retried");
            let store = self.shared.tenant_store();
            let _guard = self.shared.two_way_guard();
            store.save_two_way(TwoWayUpdate {
                counts: vec![(pair.pair.clone(), counts)],
                ..TwoWayUpdate::default()
            })?;
            return Ok(());
        }
        count_write(side, "dead_lettered");
        let attempts = self.backoff.attempts(side, partner_id).max(1);
        self.backoff.clear(side, partner_id);
        let store = self.shared.tenant_store();
        let _guard = self.shared.two_way_guard();
        let Some(mut link) = store.two_way_link(&pair.pair, partner_id)? else {
            return Ok(());
        };
        let fields = std::mem::take(link.pending_mut(side));
        match side {
            Side::Virtuous => link.create_virtuous = false,
            Side::Partner => link.create_partner = false,
        }
        link.set_ledger(side, None);
        link.settle_state(
            now_ms,
            &format!("write to {} dead-lettered: {reason}", side.name()),
        );
        counts.dead_letters = 1;
        let dead = TwoWayDeadLetter {
            seq: store.next_two_way_dead_seq(&pair.pair)?,
            pair: pair.pair.clone(),
            partner_id: partner_id.to_string(),
            virtuous_id: link.virtuous_id.clone(),
            side,
            fields,
            reason,
            attempts,
            at_ms: now_ms,
        };
        store.save_two_way(TwoWayUpdate {
            links: vec![link],
            counts: vec![(pair.pair.clone(), counts)],
            dead_letters: vec![dead],
            ..TwoWayUpdate::default()
        })?;
        Ok(())
    }

    /// Draws one Virtuous call (live lane), or says when the next one is due.
    fn draw(&self) -> Result<(), u64> {
        self.shared.draw_call(Lane::Live)
    }

    /// Draws a call of a write under way (a round's reads are spent already): waits for its
    /// turn (at most a minute) rather than end the round and spend the reads again.
    async fn draw_second(&self) -> Result<(), u64> {
        loop {
            match self.draw() {
                Ok(()) => return Ok(()),
                Err(at_ms) => {
                    let wait_ms = at_ms.saturating_sub(self.shared.clock.now_ms());
                    if wait_ms > SECOND_CALL_WAIT_MAX_MS {
                        return Err(at_ms);
                    }
                    tokio::time::sleep(Duration::from_millis(wait_ms.max(1))).await;
                }
            }
        }
    }

    /// Reads the Virtuous contacts the round will write in one `FullContact` query (at most
    /// 100 ids: one call instead of one `GET` each), when two or more are due. Answers the
    /// contacts read by id (a contact not returned is read alone later), or when the budget
    /// allows the call.
    async fn prefetch(
        &mut self,
        pair: &PairSettings,
        ids: &[String],
    ) -> Result<Result<BTreeMap<String, Value>, u64>, StoreError> {
        let store = self.shared.tenant_store().clone();
        let now_ms = self.shared.clock.now_ms();
        let mut wanted = Vec::new();
        for partner_id in ids {
            if !self.backoff.due(Side::Virtuous, partner_id, now_ms) {
                continue;
            }
            let Some(link) = store.two_way_link(&pair.pair, partner_id)? else {
                continue;
            };
            if let (Some(id), false, false) = (
                link.virtuous_id.clone(),
                link.pending(Side::Virtuous).is_empty(),
                link.create_virtuous,
            ) {
                wanted.push(id);
            }
        }
        wanted.truncate(READ_IDS_MAX);
        if wanted.len() < 2 {
            return Ok(Ok(BTreeMap::new()));
        }
        if let Err(at_ms) = self.draw() {
            return Ok(Err(at_ms));
        }
        let (reply, page) = self
            .shared
            .crm()
            .read_records(ChangeKind::Contact, &wanted)
            .await;
        self.shared.observe_reply(&reply);
        let contacts = page
            .map(|page| {
                page.changes
                    .into_iter()
                    .filter_map(|change| {
                        let record = serde_json::from_str(&change.record_json).ok()?;
                        Some((change.id, record))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Ok(contacts))
    }

    async fn write_virtuous(
        &mut self,
        pair: &PairSettings,
        link: &Link,
        prefetched: Option<Value>,
    ) -> Result<Step, StoreError> {
        if link.create_virtuous {
            return self.create_virtuous(pair, link).await;
        }
        let Some(virtuous_id) = link.virtuous_id.clone() else {
            return Ok(Step::Nothing);
        };
        if without_conflicts(link, Side::Virtuous).is_empty() {
            return Ok(Step::Nothing);
        }
        // The PUT's call is drawn first (waiting for its turn): once the contact is read,
        // nothing waits before the write (a staff edit in between would be overwritten).
        if let Err(at_ms) = self.draw_second().await {
            return Ok(Step::Wait(at_ms));
        }
        let crm = self.shared.crm();
        let contact = match prefetched {
            Some(current) => Some(Some(current)),
            None => {
                if let Err(at_ms) = self.draw_second().await {
                    return Ok(Step::Wait(at_ms));
                }
                let (reply, contact) = crm.read_contact(&virtuous_id).await;
                self.shared.observe_reply(&reply);
                if contact.is_none() {
                    return Ok(crm_failure(&reply));
                }
                contact
            }
        };
        let Some(Some(current)) = contact else {
            return Ok(Step::Refused(format!(
                "Virtuous contact {virtuous_id} is gone (404)"
            )));
        };
        // A change made since we last looked is decided first (a conflict, or a field that
        // no longer needs writing); what is still pending is written over the fresh record.
        let to_set = {
            let store = self.shared.tenant_store();
            let _guard = self.shared.two_way_guard();
            let Some(mut link) = store.two_way_link(&pair.pair, &link.partner_id)? else {
                return Ok(Step::Nothing);
            };
            let fresh = from_virtuous(&current);
            let version_ms = modified_ms(&current).unwrap_or(0);
            let names: Vec<&str> = pair.synced_fields().collect();
            let unseen = version_ms > link.virtuous_version_ms
                && only(&fresh, names.iter().copied())
                    != only(link.values(Side::Virtuous), names.iter().copied());
            if unseen {
                let ours = written_by(pair, &current);
                let incoming = Incoming {
                    side: Side::Virtuous,
                    fields: fresh,
                    version_ms,
                    ours,
                };
                let now_ms = self.shared.clock.now_ms();
                let (decided, decision, opened) =
                    store.apply_two_way_change(pair, link, &incoming, now_ms)?;
                crate::metrics::count_two_way(Side::Virtuous, &decision, opened);
                link = decided;
            }
            // Fields Virtuous already holds (a write repeated after a crash) are done.
            let fresh = from_virtuous(&current);
            let already: Fields = link
                .pending(Side::Virtuous)
                .iter()
                .filter(|(name, value)| same(name, Some(value), fresh.get(name.as_str())))
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect();
            if !already.is_empty() {
                complete_write(
                    &mut link,
                    Side::Virtuous,
                    &already,
                    self.shared.clock.now_ms(),
                );
                store.save_two_way(TwoWayUpdate {
                    links: vec![link.clone()],
                    ..TwoWayUpdate::default()
                })?;
            }
            without_conflicts(&link, Side::Virtuous)
        };
        if to_set.is_empty() {
            return Ok(Step::Done);
        }
        let body = apply_to_virtuous(&current, &to_set, &pair.reference_source);
        let reply = crm.put_contact(&virtuous_id, body.to_string()).await;
        self.shared.observe_reply(&reply);
        if !reply_ok(&reply) {
            return Ok(crm_failure(&reply));
        }
        let overwrite =
            modified_ms(&current)
                .zip(written_version(&reply.body))
                .map(|(read_ms, written_ms)| Overwrite {
                    read_ms,
                    written_ms,
                    fields: to_set.clone(),
                });
        self.written(
            pair,
            &link.partner_id,
            Side::Virtuous,
            &to_set,
            None,
            overwrite,
        )?;
        Ok(Step::Done)
    }

    /// Cross-match policy `create`: a contact transaction naming the partner record as its
    /// reference (Virtuous imports it; the link completes when Virtuous shows it).
    async fn create_virtuous(
        &mut self,
        pair: &PairSettings,
        link: &Link,
    ) -> Result<Step, StoreError> {
        if let Err(at_ms) = self.draw() {
            return Ok(Step::Wait(at_ms));
        }
        let body = contact_transaction(pair, &link.partner_id, link.values(Side::Partner));
        let reply = self
            .shared
            .crm()
            .write(CrmWrite::ContactTransaction {
                body: body.to_string(),
            })
            .await;
        self.shared.observe_reply(&reply);
        if !reply_ok(&reply) {
            return Ok(crm_failure(&reply));
        }
        let store = self.shared.tenant_store();
        let _guard = self.shared.two_way_guard();
        if let Some(mut link) = store.two_way_link(&pair.pair, &link.partner_id)? {
            link.create_virtuous = false;
            link.pending_virtuous.clear();
            let now_ms = self.shared.clock.now_ms();
            link.settle_state(now_ms, "sent to Virtuous as a contact transaction");
            store.save_two_way(TwoWayUpdate {
                links: vec![link],
                counts: vec![(
                    pair.pair.clone(),
                    PairCounts {
                        writes_to_virtuous: 1,
                        ..PairCounts::default()
                    },
                )],
                ..TwoWayUpdate::default()
            })?;
        }
        count_write(Side::Virtuous, "written");
        Ok(Step::Done)
    }

    async fn write_partner(
        &mut self,
        pair: &PairSettings,
        link: &Link,
    ) -> Result<Step, StoreError> {
        let to_set = without_conflicts(link, Side::Partner);
        if to_set.is_empty() && !link.create_partner {
            return Ok(Step::Nothing);
        }
        // The partner's own pace: wait for the next call's turn, then go on.
        let now_ms = self.shared.clock.now_ms();
        if now_ms < self.next_partner_call_ms {
            let wait_ms = self.next_partner_call_ms - now_ms;
            tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        }
        self.next_partner_call_ms = self.shared.clock.now_ms() + 1_000 / PARTNER_CALLS_PER_S;
        let target = (!link.create_partner).then_some(link.partner_id.as_str());
        let answer = self
            .partner
            .writer
            .upsert(target, link.values(Side::Partner), &to_set)
            .await;
        match answer {
            PartnerAnswer::Done(contact) => {
                let new_id =
                    (link.create_partner && contact.id != link.partner_id).then_some(contact.id);
                self.written(pair, &link.partner_id, Side::Partner, &to_set, new_id, None)?;
                Ok(Step::Done)
            }
            PartnerAnswer::Retry { reason, after_ms } => Ok(Step::Failed { reason, after_ms }),
            PartnerAnswer::Refused { reason } => Ok(Step::Refused(reason)),
        }
    }

    /// A write landed: the link learns it (and, for a created partner record, moves to the
    /// partner's id).
    fn written(
        &self,
        pair: &PairSettings,
        partner_id: &str,
        side: Side,
        fields: &Fields,
        new_partner_id: Option<String>,
        overwrite: Option<Overwrite>,
    ) -> Result<(), StoreError> {
        let store = self.shared.tenant_store();
        let now_ms = self.shared.clock.now_ms();
        let _guard = self.shared.two_way_guard();
        let Some(mut link) = store.two_way_link(&pair.pair, partner_id)? else {
            return Ok(());
        };
        complete_write(&mut link, side, fields, now_ms);
        if side == Side::Virtuous {
            // Virtuous's versions up to the one our PUT made are known: an older change that
            // arrives later is stale (or, inside the window, a conflict).
            if let Some(mark) = &overwrite {
                let known = mark.read_ms.max(mark.written_ms);
                link.virtuous_version_ms = link.virtuous_version_ms.max(known);
            }
            link.virtuous_overwrite = overwrite;
        }
        let mut removed = Vec::new();
        if side == Side::Partner && link.create_partner {
            link.create_partner = false;
            if let Some(new_id) = new_partner_id {
                removed.push((pair.pair.clone(), link.partner_id.clone()));
                link.partner_id = new_id;
            }
        }
        let mut counts = PairCounts::default();
        match side {
            Side::Partner => counts.writes_to_partner = 1,
            Side::Virtuous => counts.writes_to_virtuous = 1,
        }
        store.save_two_way(TwoWayUpdate {
            links: vec![link],
            removed_links: removed,
            counts: vec![(pair.pair.clone(), counts)],
            ..TwoWayUpdate::default()
        })?;
        count_write(side, "written");
        Ok(())
    }
}

/// What one write attempt came to.
enum Step {
    Nothing,
    Done,
    /// Not now (budget, pace): try again at this time.
    Wait(u64),
    Failed {
        reason: String,
        after_ms: Option<u64>,
    },
    Refused(String),
}

/// What is pending to `side`, less the fields waiting for a person.
fn without_conflicts(link: &Link, side: Side) -> Fields {
    link.pending(side)
        .iter()
        .filter(|(name, _)| !link.conflicts.contains(name))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

fn reply_ok(reply: &crate::ports::CrmReply) -> bool {
    reply
        .facts
        .status
        .is_some_and(|status| (200..=299).contains(&status))
}

/// A Virtuous answer that was not a success: retried (429, 5xx, no answer) or refused.
fn crm_failure(reply: &crate::ports::CrmReply) -> Step {
    let reason = match reply.facts.status {
        Some(status) => format!(
            "Virtuous answered {status}: {}",
            reply.body.chars().take(200).collect::<String>()
        ),
        None => format!(
            "no answer from Virtuous: {}",
            reply.facts.message.clone().unwrap_or_default()
        ),
    };
    match reply.facts.status {
        Some(429) | None => Step::Failed {
            reason,
            after_ms: reply.facts.retry_after_s.map(|s| s * 1_000),
        },
        Some(status) if status >= 500 => Step::Failed {
            reason,
            after_ms: None,
        },
        Some(_) => Step::Refused(reason),
    }
}

fn count_write(side: Side, outcome: &'static str) {
    metrics::counter!(
        crate::metrics::TWO_WAY_WRITES_TOTAL,
        crate::metrics::LABEL_SIDE => side.name(),
        crate::metrics::LABEL_OUTCOME => outcome
    )
    .increment(1);
}

/// Whether a Virtuous contact names this pair as its latest writer (its top-level
/// `referenceSource`, which the pair's `PUT` sets): another pair's write is not this pair's
/// echo.
fn written_by(pair: &PairSettings, contact: &Value) -> bool {
    contact
        .get("referenceSource")
        .and_then(Value::as_str)
        .is_some_and(|source| source.eq_ignore_ascii_case(&pair.reference_source))
}

/// The version a `PUT` answer shows (its `modifiedDateTimeUtc`), when it has one.
fn written_version(body: &str) -> Option<u64> {
    modified_ms(&serde_json::from_str(body).ok()?)
}

/// `modifiedDateTimeUtc` of a Virtuous record, in ms.
fn modified_ms(record: &Value) -> Option<u64> {
    let text = record.get("modifiedDateTimeUtc")?.as_str()?;
    let text = if text.ends_with('Z') || text.contains('+') {
        text.to_string()
    } else {
        format!("{text}Z")
    };
    text.parse::<jiff::Timestamp>()
        .ok()
        .map(|at| at.as_millisecond().max(0) as u64)
}

/// A contact transaction made from a partner record's values.
pub(crate) fn contact_transaction(pair: &PairSettings, partner_id: &str, fields: &Fields) -> Value {
    let mut body = serde_json::Map::new();
    body.insert("referenceSource".into(), json!(pair.reference_source));
    body.insert("referenceId".into(), json!(partner_id));
    for (field, key) in [
        ("email", "email"),
        ("first_name", "firstName"),
        ("last_name", "lastName"),
    ] {
        if let Some(Value::String(text)) = fields.get(field) {
            body.insert(key.into(), json!(text));
        }
    }
    if let Some(Value::Array(tags)) = fields.get("tags") {
        let names: Vec<&str> = tags.iter().filter_map(Value::as_str).collect();
        if !names.is_empty() {
            body.insert("tags".into(), json!(names.join(";")));
        }
    }
    Value::Object(body)
}
