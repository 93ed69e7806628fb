//! The reference model: plain maps, and what each operation does to them.

use super::*;

/// The model's view of a record.
#[derive(Debug, Clone)]
pub(super) struct ModelRecord {
    pub(super) state: SyncState,
    pub(super) last_seq: u64,
    /// The body of the record's fact: as ingested, or as edited by the last edited replay.
    pub(super) body: String,
    pub(super) virtuous_id: Option<String>,
    /// Index in `Model::ids` (its Virtuous ids derive from it).
    pub(super) index: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct ModelDead {
    pub(super) entry: QueueEntry,
    pub(super) attempts: u32,
    pub(super) status: Option<u16>,
    pub(super) dead_at_ms: u64,
}

/// The reference model: plain maps.
#[derive(Default)]
pub(super) struct Model {
    pub(super) now_ms: u64,
    pub(super) generation: u64,
    pub(super) ids: Vec<String>,
    pub(super) records: BTreeMap<String, ModelRecord>,
    pub(super) queued: BTreeMap<(Lane, u64), QueueEntry>,
    pub(super) dead: BTreeMap<u64, ModelDead>,
    pub(super) unconfirmed: BTreeSet<String>,
    pub(super) leases: HashMap<(Lane, u64), Lease>,
    pub(super) counts: Counts,
    /// Highest seq the store handed out (seqs must rise, across reopens too).
    pub(super) seq_max: Option<u64>,
}

impl Model {
    /// What `lease_ready` must pick: one transaction source and one entry per record, so
    /// the first `batch_max` ready, unleased entries by lane priority then seq — of the
    /// first one's kind of lane: backfill entries never ride in a group of the other lanes,
    /// nor those in a backfill group.
    pub(super) fn lease_choice(&self, batch_max: usize) -> (Vec<(Lane, u64)>, bool, Option<u64>) {
        let now = self.now_ms;
        let mut eligible = Vec::new();
        let mut next_ready_at_ms: Option<u64> = None;
        for (&key, entry) in &self.queued {
            if entry.not_before_ms > now {
                next_ready_at_ms = Some(
                    next_ready_at_ms.map_or(entry.not_before_ms, |at| at.min(entry.not_before_ms)),
                );
                continue;
            }
            if !self
                .leases
                .get(&key)
                .is_some_and(|lease| lease.expires_at_ms > now)
            {
                eligible.push(key);
            }
        }
        let backfill_group = eligible
            .first()
            .is_some_and(|(lane, _)| *lane == Lane::Backfill);
        let total = eligible.len();
        eligible.retain(|(lane, _)| (*lane == Lane::Backfill) == backfill_group);
        let more_ready = total > eligible.len().min(batch_max);
        eligible.truncate(batch_max);
        (eligible, more_ready, next_ready_at_ms)
    }

    pub(super) fn record(&mut self, source_id: &str) -> &mut ModelRecord {
        self.records.get_mut(source_id).expect("known record")
    }

    pub(super) fn new_seq(&mut self, seq: u64, what: &str) -> Outcome<()> {
        if self.seq_max.is_some_and(|max| seq <= max) {
            return fail(format!(
                "{what}: seq {seq} not above every earlier seq {:?}",
                self.seq_max
            ));
        }
        self.seq_max = Some(seq);
        Ok(())
    }

    /// Applies one result of a completion call by `generation` (leases are released by the
    /// caller after the whole call, as the store does).
    pub(super) fn complete(
        &mut self,
        generation: u64,
        key: (Lane, u64),
        verdict: Verdict,
    ) -> Applied {
        if self.leases.get(&key).map(|lease| lease.generation) != Some(generation) {
            return Applied::RefusedStale;
        }
        let Some(mut entry) = self.queued.remove(&key) else {
            return Applied::Missing;
        };
        let (now, seq, id) = (self.now_ms, key.1, entry.fact.source_id.clone());
        match verdict {
            Verdict::Success => {
                self.record(&id).state = SyncState::Submitted;
                self.unconfirmed.insert(id);
                self.counts.submitted += 1;
                Applied::Accepted
            }
            Verdict::Transient { retry_after_ms } => {
                entry.attempts += 1;
                match RETRY_SCHEDULE_MS.get(entry.attempts as usize - 1) {
                    Some(&base_ms) => {
                        entry.not_before_ms = now + base_ms.max(retry_after_ms.unwrap_or(0));
                        // A backfill entry keeps its lane.
                        let lane = if entry.fact.lane == Lane::Backfill {
                            Lane::Backfill
                        } else {
                            Lane::Retry
                        };
                        entry.fact.lane = lane;
                        self.queued.insert((lane, seq), entry);
                        self.record(&id).state = SyncState::Retrying;
                        Applied::Retried
                    }
                    None => {
                        let attempts = entry.attempts;
                        self.bury(seq, entry, attempts, 503);
                        Applied::Exhausted
                    }
                }
            }
            Verdict::Requeue { delay_ms } => {
                entry.not_before_ms = now + delay_ms;
                self.queued.insert(key, entry);
                Applied::Requeued
            }
            Verdict::Release => {
                self.queued.insert(key, entry);
                Applied::Released
            }
            Verdict::Permanent => {
                let attempts = entry.attempts + 1;
                self.bury(seq, entry, attempts, 422);
                Applied::Dead
            }
        }
    }

    pub(super) fn bury(&mut self, seq: u64, entry: QueueEntry, attempts: u32, status: u16) {
        self.record(&entry.fact.source_id).state = SyncState::Dead;
        let letter = ModelDead {
            entry,
            attempts,
            status: Some(status),
            dead_at_ms: self.now_ms,
        };
        self.dead.insert(seq, letter);
        self.counts.dead += 1;
    }

    /// `confirm_records` on one record (sequential: one call sees its earlier confirmations).
    pub(super) fn confirm(&mut self, source_id: &str, virtuous_ids: &[String]) -> ConfirmOutcome {
        let Some(record) = self.records.get_mut(source_id) else {
            return ConfirmOutcome::Unknown;
        };
        let sorted = |ids: Vec<String>| {
            let mut ids = ids;
            ids.sort_by(|a, b| (a.len(), a).cmp(&(b.len(), b)));
            ids.dedup();
            ids
        };
        let flag = |record: &mut ModelRecord, primary: String, all_ids: Vec<String>| {
            record.state = SyncState::DuplicateDetected;
            ConfirmOutcome::DuplicateDetected {
                virtuous_id: primary,
                all_ids,
            }
        };
        match record.state {
            SyncState::Submitted | SyncState::NeedsReview => {
                let ids = sorted(virtuous_ids.to_vec());
                let primary = ids[0].clone();
                record.virtuous_id = Some(primary.clone());
                record.state = SyncState::Confirmed;
                self.counts.confirmed += 1;
                self.unconfirmed.remove(source_id);
                if ids.len() < 2 {
                    return ConfirmOutcome::Confirmed {
                        virtuous_id: primary,
                    };
                }
                flag(record, primary, ids)
            }
            SyncState::Confirmed => {
                let primary = record.virtuous_id.clone().unwrap_or_default();
                let mut ids = virtuous_ids.to_vec();
                ids.push(primary.clone());
                let ids = sorted(ids);
                if ids.len() < 2 {
                    return ConfirmOutcome::Unchanged;
                }
                flag(record, primary, ids)
            }
            SyncState::DuplicateDetected => ConfirmOutcome::Unchanged,
            state => ConfirmOutcome::NotSubmitted { state },
        }
    }
}

/// What one completion result did (in the model).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Applied {
    RefusedStale,
    Missing,
    Accepted,
    Retried,
    Exhausted,
    Dead,
    Requeued,
    Released,
}
