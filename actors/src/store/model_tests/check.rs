//! After every step: the store's real contents against the model, then the invariants.

use super::*;

impl Case {
    /// The store's real contents against the model, then the invariants on the contents alone.
    pub(super) fn check(&mut self) -> Outcome<()> {
        let tenant = self.sut.tenant();
        let model = &self.model;
        let mut queued = BTreeMap::new();
        let stats = tenant.lane_stats();
        for lane in Lane::ALL {
            let entries = tenant.scan_lane(lane, usize::MAX).or_fail("scan lane")?;
            let gauge = stats[lane as usize].1;
            let oldest = entries.iter().map(|(_, entry)| entry.enqueued_at_ms).min();
            if (gauge.depth, gauge.oldest_enqueued_at_ms) != (entries.len() as u64, oldest) {
                return fail(format!(
                    "{} gauge {gauge:?}, lane holds {} (oldest {oldest:?})",
                    lane.name(),
                    entries.len()
                ));
            }
            for (seq, entry) in entries {
                if entry.fact.lane != lane {
                    return fail(format!(
                        "entry {seq} in lane {} says {:?}",
                        lane.name(),
                        entry.fact.lane
                    ));
                }
                queued.insert((lane, seq), entry);
            }
        }
        if queued != model.queued {
            return fail(format!("lanes {queued:#?}\nmodel {:#?}", model.queued));
        }
        let letters = tenant.list_dead_letters().or_fail("dead letters")?;
        let dead: BTreeMap<u64, ModelDead> = letters
            .iter()
            .map(|letter| {
                let seen = ModelDead {
                    entry: letter.entry.clone(),
                    attempts: letter.attempts,
                    status: letter.status,
                    dead_at_ms: letter.dead_at_ms,
                };
                (letter.id, seen)
            })
            .collect();
        if dead != model.dead || dead.len() != letters.len() {
            return fail(format!("dead letters {dead:#?}\nmodel {:#?}", model.dead));
        }
        let mut records = BTreeMap::new();
        for (id, expected) in &model.records {
            let record = tenant
                .get_record(RecordKind::Gift, SOURCE, id)
                .or_fail("record")?;
            let Some(record) = record else {
                return fail(format!("record {id} missing"));
            };
            let seen = (record.state, record.last_seq, &record.virtuous_id);
            if seen
                != (
                    expected.state,
                    Some(expected.last_seq),
                    &expected.virtuous_id,
                )
                || record.history.last().map(|transition| transition.to) != Some(record.state)
                || !record.has_seen(&key_of(id))
            {
                return fail(format!("record {id}: {record:?}\nmodel {expected:?}"));
            }
            records.insert(id.clone(), record.state);
        }
        let stored_records = tenant
            .inner()
            .count_section(section::RECORD)
            .or_fail("count")?;
        if stored_records != model.records.len() as u64 {
            return fail(format!(
                "{stored_records} records stored, model {}",
                model.records.len()
            ));
        }
        let unconfirmed: BTreeSet<String> = tenant
            .list_unconfirmed()
            .or_fail("unconfirmed")?
            .into_iter()
            .map(|item| item.source_id)
            .collect();
        if unconfirmed != model.unconfirmed {
            return fail(format!(
                "unconfirmed {unconfirmed:?}, model {:?}",
                model.unconfirmed
            ));
        }
        if tenant.counts() != model.counts {
            return fail(format!(
                "counts {:?}, model {:?}",
                tenant.counts(),
                model.counts
            ));
        }

        // Invariants, from the store's contents alone.
        let mut places: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for entry in queued.values() {
            places
                .entry(&entry.fact.source_id)
                .or_default()
                .push("a lane");
        }
        for letter in &letters {
            places
                .entry(&letter.entry.fact.source_id)
                .or_default()
                .push("the dead letters");
        }
        for (id, state) in &records {
            let done = matches!(
                state,
                SyncState::Submitted
                    | SyncState::NeedsReview
                    | SyncState::Confirmed
                    | SyncState::DuplicateDetected
            );
            if done {
                places.entry(id).or_default().push("done");
            }
            if matches!(state, SyncState::Confirmed | SyncState::DuplicateDetected) {
                self.confirmed_ever.insert(id.clone());
            }
        }
        for (id, state) in &records {
            let place = places.get(id.as_str()).cloned().unwrap_or_default();
            let consistent = match place.as_slice() {
                ["a lane"] => matches!(state, SyncState::Pending | SyncState::Retrying),
                ["the dead letters"] => *state == SyncState::Dead,
                ["done"] => true,
                _ => false,
            };
            if !consistent {
                return fail(format!(
                    "{id} ({state:?}) is in {place:?}: not in exactly one place"
                ));
            }
        }
        let attempts = queued
            .iter()
            .map(|(&(_, seq), entry)| (seq, entry.attempts, &entry.fact.source_id))
            .chain(
                letters
                    .iter()
                    .map(|letter| (letter.id, letter.attempts, &letter.entry.fact.source_id)),
            );
        for (seq, attempts, id) in attempts {
            let highest = self.attempts_seen.entry(seq).or_default();
            if attempts < *highest {
                return fail(format!(
                    "entry {seq} of {id}: attempts fell from {highest} to {attempts}"
                ));
            }
            *highest = attempts;
            if self.confirmed_ever.contains(id) {
                return fail(format!(
                    "{id} was confirmed, yet entry {seq} is queued or dead again"
                ));
            }
        }
        for letter in &letters {
            // The body ingested, or the one an edited replay set (the model keeps it).
            let body = &model.records[&letter.entry.fact.source_id].body;
            if letter.entry.fact.body_json.as_bytes() != body.as_bytes() {
                return fail(format!(
                    "dead letter {} body {:?}, sent {body:?}",
                    letter.id, letter.entry.fact.body_json
                ));
            }
        }
        Ok(())
    }
}
