//! Stale completions, operator actions, replays and reconcile passes, on store and model.

use super::*;

impl Case {
    /// Leases held by the current generation (indices into `handles`).
    pub(super) fn held_by_current(&self) -> Vec<usize> {
        let generation = self.model.generation;
        (0..self.handles.len())
            .filter(|&at| {
                let (holder, leased) = &self.handles[at];
                *holder == generation
                    && self
                        .model
                        .leases
                        .get(&leased.key())
                        .map(|lease| lease.generation)
                        == Some(generation)
            })
            .collect()
    }

    /// A submitter generation is replaced (`take_over`), then completes a lease it held:
    /// refused, and the store's state is byte for byte what it was.
    pub(super) fn stale_complete(
        &mut self,
        pick: usize,
        verdict: Verdict,
        stats: &mut Stats,
    ) -> Outcome<()> {
        if self.held_by_current().is_empty() {
            if self.model.lease_choice(1).0.is_empty() {
                self.ingest(Lane::Live, &[None], pick, false, stats)?;
            }
            self.lease(1, stats)?;
        }
        let held = self.held_by_current();
        let Some(&at) = held.get(pick % held.len().max(1)) else {
            return fail("no lease to complete stale (generator or model bug)".into());
        };
        let old_generation = self.model.generation;
        self.model.generation += 1;
        let new_generation = self.model.generation;
        let before_leases = self.model.leases.len();
        self.model
            .leases
            .retain(|_, lease| lease.generation == new_generation);
        let dropped = self.sut.leases.take_over(new_generation);
        if dropped != before_leases - self.model.leases.len() {
            return fail(format!(
                "take_over dropped {dropped} leases, model {}",
                before_leases - self.model.leases.len()
            ));
        }
        let before = self.sut.snapshot()?;
        let (_, leased) = self.handles.remove(at);
        let report = self.call_complete(old_generation, vec![(leased, verdict)], stats)?;
        if report.refused_stale != 1 {
            return fail(format!("stale completion not refused: {report:?}"));
        }
        if self.sut.snapshot()? != before {
            return fail("a refused stale completion changed the store".into());
        }
        stats.bump_report(&report, true);
        Ok(())
    }

    pub(super) fn operator_dead_letter(&mut self, pick: usize, stats: &mut Stats) -> Outcome<()> {
        let Some((lane, seq)) = picked(&self.model.queued, pick) else {
            return Ok(());
        };
        let now_ms = self.model.now_ms;
        let letter = self
            .sut
            .tenant()
            .dead_letter_queued_entry(lane, seq, Some(400), "invalid", now_ms)
            .or_fail("operator dead letter")?;
        let entry = self.model.queued.remove(&(lane, seq)).expect("listed");
        let attempts = entry.attempts;
        self.model.bury(seq, entry, attempts, 400);
        match letter {
            Some(letter) if letter.id == seq && letter.reason == "HTTP 400: invalid" => {}
            other => return fail(format!("operator dead letter of {seq}: {other:?}")),
        }
        stats.bump(Kind::OperatorDeadLetter);
        Ok(())
    }

    pub(super) fn replay(
        &mut self,
        pick: usize,
        edit: Option<usize>,
        stats: &mut Stats,
    ) -> Outcome<()> {
        let Some(id) = picked(&self.model.dead, pick) else {
            return Ok(());
        };
        let letter = self.model.dead.remove(&id).expect("listed");
        let mut entry = letter.entry;
        // An edit keeps the idempotency fields (transactionSource, transactionId).
        let edited_body = edit.map(|note| body_of(&entry.fact.source_id, note));
        let edited = edited_body
            .as_ref()
            .is_some_and(|body| *body != entry.fact.body_json);
        let now_ms = self.model.now_ms;
        let replayed = self
            .sut
            .tenant()
            .replay_dead_letter(id, edited_body.clone(), now_ms)
            .or_fail("replay")?;
        let Some(replayed) = replayed else {
            return fail(format!("dead letter {id} not found for replay"));
        };
        if replayed.edited != edited || replayed.record.state != SyncState::Pending {
            return fail(format!(
                "replay of {id}: edited {} (model {edited}), record {:?}",
                replayed.edited, replayed.record.state
            ));
        }
        self.model.new_seq(replayed.seq, "replay")?;
        if let Some(body) = edited_body {
            entry.fact.body_json = body;
        }
        entry.fact.lane = Lane::Live;
        entry.attempts = 0;
        entry.enqueued_at_ms = now_ms;
        entry.not_before_ms = now_ms;
        let record = self.model.record(&entry.fact.source_id);
        record.state = SyncState::Pending;
        record.last_seq = replayed.seq;
        record.body = entry.fact.body_json.clone();
        self.model.queued.insert((Lane::Live, replayed.seq), entry);
        self.model.counts.dead = self.model.counts.dead.saturating_sub(1);
        stats.bump(if edited {
            Kind::ReplayEdited
        } else {
            Kind::ReplayAsIs
        });
        Ok(())
    }

    /// A reconciler pass: read the unconfirmed index, then confirm records Virtuous shows
    /// (listed ones, others that are not submitted, unknown ids; some with a second id).
    pub(super) fn reconcile(
        &mut self,
        picks: &[(usize, bool, bool)],
        review: Option<usize>,
        stats: &mut Stats,
    ) -> Outcome<()> {
        let sources = self
            .sut
            .tenant()
            .unconfirmed_by_source(RecordKind::Gift)
            .or_fail("unconfirmed")?;
        let mut listed = Vec::new();
        let mut items = Vec::new();
        for source in &sources {
            for item in source.records.values().flatten() {
                if item.transaction_source != TRANSACTION_SOURCE
                    || item.transaction_id != item.source_id
                {
                    return fail(format!("unconfirmed index entry {item:?}"));
                }
                listed.push(item.source_id.clone());
                items.push(item.clone());
            }
        }
        listed.sort();
        if listed.iter().cloned().collect::<BTreeSet<_>>() != self.model.unconfirmed
            || listed.len() != self.model.unconfirmed.len()
        {
            return fail(format!(
                "unconfirmed index {listed:?}, model {:?}",
                self.model.unconfirmed
            ));
        }
        let mut confirmations = Vec::new();
        let mut expected = Vec::new();
        // Records in needs_review: their gift may show up in a later pass.
        let reviewed: Vec<String> = (self.model.records.iter())
            .filter(|(_, record)| record.state == SyncState::NeedsReview)
            .map(|(id, _)| id.clone())
            .collect();
        for &(pick, from_list, duplicate) in picks {
            let source_id = if from_list && !listed.is_empty() {
                listed[pick % listed.len()].clone()
            } else if pick % 5 == 3 && !reviewed.is_empty() {
                reviewed[pick / 5 % reviewed.len()].clone()
            } else if pick % 5 == 4 || self.model.ids.is_empty() {
                format!("pi_unknown_{}", pick % 3)
            } else {
                self.model.ids[pick % self.model.ids.len()].clone()
            };
            let index = self
                .model
                .records
                .get(&source_id)
                .map_or(0, |record| record.index);
            let mut virtuous_ids = vec![(10_000 + index).to_string()];
            if duplicate {
                virtuous_ids.push((900_000 + index).to_string());
            }
            let reviewed = self
                .model
                .records
                .get(&source_id)
                .is_some_and(|record| record.state == SyncState::NeedsReview);
            let outcome = self.model.confirm(&source_id, &virtuous_ids);
            if reviewed && !matches!(outcome, ConfirmOutcome::NotSubmitted { .. }) {
                stats.bump(Kind::ReviewedConfirmed);
            }
            match &outcome {
                ConfirmOutcome::Confirmed { .. } => stats.bump(Kind::Confirmed),
                ConfirmOutcome::DuplicateDetected { .. } => stats.bump(Kind::DuplicateFlagged),
                ConfirmOutcome::NotSubmitted { .. } => stats.bump(Kind::NotSubmitted),
                ConfirmOutcome::Unchanged | ConfirmOutcome::Unknown => {}
            }
            expected.push(outcome);
            confirmations.push(Confirmation {
                kind: RecordKind::Gift,
                source: SOURCE.into(),
                source_id,
                virtuous_ids,
                via: "reconcile",
            });
        }
        let outcomes = self
            .sut
            .tenant()
            .confirm_records(&confirmations, self.model.now_ms)
            .or_fail("confirm")?;
        if outcomes != expected {
            return fail(format!(
                "confirmation outcomes {outcomes:?}, model {expected:?}"
            ));
        }
        stats.bump(Kind::Reconcile);
        let Some(count) = review else {
            return Ok(());
        };
        // Records unconfirmed too long (some may have been confirmed just now: left alone).
        let stale: Vec<_> = items.into_iter().take(count + 1).collect();
        let mut moved_expected = 0;
        for item in &stale {
            self.model.unconfirmed.remove(&item.source_id);
            let record = self.model.record(&item.source_id);
            if record.state == SyncState::Submitted {
                record.state = SyncState::NeedsReview;
                self.model.counts.needs_review += 1;
                moved_expected += 1;
            }
        }
        let moved = self
            .sut
            .tenant()
            .mark_needs_review(&stale, self.model.now_ms)
            .or_fail("needs review")?;
        if moved != moved_expected {
            return fail(format!(
                "{moved} records to needs_review, model {moved_expected}"
            ));
        }
        stats.kinds[Kind::NeedsReview as usize] += moved;
        Ok(())
    }
}
