//! The store under test, and a case: the store and the model side by side, step by step.

use super::*;

/// A tenant's whole tree, counters, lane gauges and leases held.
pub(super) type Snapshot = (
    Vec<(Vec<u8>, Vec<u8>)>,
    Counts,
    [(Lane, LaneStat); 4],
    usize,
);

/// The store under test: reopened in the same directory, as after a restart.
pub(super) struct Sut {
    pub(super) dir: tempfile::TempDir,
    pub(super) opened: Option<(Store, TenantStore)>,
    pub(super) leases: LeaseTable,
    pub(super) layout: Layout,
    /// The neighbour tenant's queue as first written.
    pub(super) neighbour: Vec<(u64, QueueEntry)>,
}

impl Sut {
    /// A new store with `layout`, and a neighbour tenant whose data must never change.
    pub(super) fn start(layout: Layout) -> Outcome<Sut> {
        let dir = tempfile::tempdir().or_fail("temp dir")?;
        let store = Store::open_with_layout(dir.path(), StoreOptions::default(), Some(layout))
            .or_fail("open")?;
        let neighbour = store.tenant(NEIGHBOUR).or_fail("neighbour")?;
        let entries = ["pi_n0", "pi_n1"].map(|id| new_gift(id, Lane::Live, body_of(id, 1), 1));
        neighbour
            .enqueue(entries.to_vec())
            .or_fail("neighbour enqueue")?;
        let tenant = store.tenant(TENANT).or_fail("tenant")?;
        let mut sut = Sut {
            dir,
            opened: Some((store, tenant)),
            leases: LeaseTable::new(),
            layout,
            neighbour: Vec::new(),
        };
        sut.neighbour = sut.neighbour_lanes()?;
        Ok(sut)
    }

    /// The neighbour tenant's queued entries.
    pub(super) fn neighbour_lanes(&self) -> Outcome<Vec<(u64, QueueEntry)>> {
        let (store, _) = self.opened.as_ref().expect("the store is open");
        let neighbour = store.tenant(NEIGHBOUR).or_fail("neighbour")?;
        neighbour
            .scan_lane(Lane::Live, usize::MAX)
            .or_fail("neighbour lane")
    }

    /// Opens the existing store: it keeps its layout, and the neighbour keeps its data.
    pub(super) fn open(&mut self) -> Outcome<()> {
        let store = Store::open(self.dir.path(), StoreOptions::default()).or_fail("open")?;
        let tenant = store.tenant(TENANT).or_fail("tenant")?;
        let layout = store.layout();
        self.opened = Some((store, tenant));
        let neighbour = self.neighbour_lanes()?;
        if layout != self.layout || neighbour != self.neighbour || neighbour.len() != 2 {
            return fail(format!(
                "reopened with {layout:?} (created {:?}), neighbour {neighbour:?}",
                self.layout
            ));
        }
        Ok(())
    }

    pub(super) fn tenant(&self) -> &TenantStore {
        &self.opened.as_ref().expect("the store is open").1
    }

    /// Make everything durable, drop every handle (and the in-memory leases), open the
    /// directory again.
    pub(super) fn reopen(&mut self, durable_wait: bool) -> Outcome<()> {
        let (store, tenant) = self.opened.take().expect("the store is open");
        if durable_wait {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .or_fail("runtime")?;
            runtime.block_on(store.durable()).or_fail("durable")?;
        } else {
            store.flush_blocking().or_fail("flush before reopen")?;
        }
        drop((tenant, store));
        self.leases = LeaseTable::new();
        self.open()
    }

    /// Everything the tenant stores, plus counters, gauges and leases held.
    pub(super) fn snapshot(&self) -> Outcome<Snapshot> {
        let tenant = self.tenant();
        tenant.inner().settle().or_fail("settle")?;
        let mut pairs = Vec::new();
        for item in tenant.inner().tree.iter() {
            let (key, value) = item.or_fail("tree scan")?;
            pairs.push((key.to_vec(), value.to_vec()));
        }
        Ok((
            pairs,
            tenant.counts(),
            tenant.lane_stats(),
            self.leases.len(),
        ))
    }
}

/// One case: the store, the model, the leases handed out, and the invariant trackers.
pub(super) struct Case {
    pub(super) sut: Sut,
    pub(super) model: Model,
    /// (generation that leased it, the leased entry), oldest first.
    pub(super) handles: Vec<(u64, LeasedEntry)>,
    /// Highest attempts seen per seq (lanes and dead letters).
    pub(super) attempts_seen: HashMap<u64, u32>,
    /// Records the store ever showed confirmed.
    pub(super) confirmed_ever: BTreeSet<String>,
}

pub(super) const HANDLES_MAX: usize = 24;

impl Case {
    pub(super) fn start(layout: Layout) -> Outcome<Case> {
        Ok(Case {
            sut: Sut::start(layout)?,
            model: Model {
                generation: 1,
                now_ms: 1_000_000,
                ..Model::default()
            },
            handles: Vec::new(),
            attempts_seen: HashMap::new(),
            confirmed_ever: BTreeSet::new(),
        })
    }

    pub(super) fn step(&mut self, advance_ms: u64, op: &Op, stats: &mut Stats) -> Outcome<()> {
        self.model.now_ms += advance_ms;
        match op {
            Op::Ingest {
                lane,
                items,
                note,
                separate_calls,
            } => self.ingest(*lane, items, *note, *separate_calls, stats)?,
            Op::Lease {
                batch_max,
                new_generation,
            } => {
                if *new_generation {
                    self.model.generation += 1;
                    stats.bump(Kind::NewGeneration);
                }
                self.lease(*batch_max, stats)?
            }
            Op::Complete { results } => self.complete(results, stats)?,
            Op::StaleComplete { pick, verdict } => self.stale_complete(*pick, *verdict, stats)?,
            Op::Replay { pick, edit } => self.replay(*pick, *edit, stats)?,
            Op::Reconcile { picks, review } => self.reconcile(picks, *review, stats)?,
            Op::Reopen { durable_wait } => {
                self.sut.reopen(*durable_wait)?;
                // A restart: leases were in memory only; a new process, a new generation.
                self.model.leases.clear();
                self.model.generation += 1;
                stats.bump(Kind::Reopen);
                if *durable_wait {
                    stats.bump(Kind::ReopenAfterDurable);
                }
            }
            Op::OperatorDeadLetter { pick } => self.operator_dead_letter(*pick, stats)?,
            Op::Wait { ms } => {
                self.model.now_ms += ms;
                stats.bump(Kind::Wait);
            }
        }
        self.check().map_err(|err| {
            let reason = match &err {
                TestCaseError::Fail(reason) | TestCaseError::Reject(reason) => reason.message(),
            };
            TestCaseError::fail(format!(
                "after {op:?} at {} ms: {reason}",
                self.model.now_ms
            ))
        })
    }

    pub(super) fn ingest(
        &mut self,
        lane: Lane,
        items: &[Option<usize>],
        note: usize,
        separate_calls: bool,
        stats: &mut Stats,
    ) -> Outcome<()> {
        let now_ms = self.model.now_ms;
        let mut entries = Vec::new();
        let mut expected = Vec::new();
        let mut in_this_call = BTreeSet::new();
        for item in items {
            let (index, body) = match item {
                Some(pick) if !self.model.ids.is_empty() => {
                    let index = pick % self.model.ids.len();
                    (index, body_of(&self.model.ids[index], note + 1))
                }
                _ => {
                    self.model
                        .ids
                        .push(format!("pi_{:03}", self.model.ids.len()));
                    let index = self.model.ids.len() - 1;
                    (index, body_of(&self.model.ids[index], note))
                }
            };
            let id = self.model.ids[index].clone();
            let duplicate =
                self.model.records.contains_key(&id) || !in_this_call.insert(id.clone());
            let entry = new_gift(&id, lane, body, now_ms);
            expected.push((index, queued_of(&entry), duplicate));
            entries.push(entry);
        }
        let tenant = self.sut.tenant();
        let outcomes = match separate_calls {
            false => tenant.enqueue(entries).or_fail("enqueue")?,
            true => {
                let mut outcomes = Vec::new();
                for entry in entries {
                    outcomes.extend(tenant.enqueue(vec![entry]).or_fail("enqueue")?);
                }
                outcomes
            }
        };
        for ((index, entry, duplicate), outcome) in expected.into_iter().zip(outcomes) {
            let id = self.model.ids[index].clone();
            match (duplicate, outcome) {
                (true, EnqueueOutcome::Duplicate) => {
                    self.model.counts.duplicates += 1;
                    stats.bump(Kind::Redelivered);
                }
                (false, EnqueueOutcome::Queued { seq }) => {
                    self.model.new_seq(seq, "enqueue")?;
                    let body = entry.fact.body_json.clone();
                    self.model.queued.insert((lane, seq), entry);
                    let record = ModelRecord {
                        state: SyncState::Pending,
                        last_seq: seq,
                        body,
                        virtuous_id: None,
                        index,
                    };
                    self.model.records.insert(id, record);
                    self.model.counts.captured += 1;
                    stats.bump(Kind::NewId);
                }
                (duplicate, outcome) => {
                    return fail(format!(
                        "enqueue of {id}: expected duplicate={duplicate}, got {outcome:?}"
                    ))
                }
            }
        }
        Ok(())
    }

    pub(super) fn lease(&mut self, batch_max: usize, stats: &mut Stats) -> Outcome<()> {
        let (keys, more_ready, next_ready_at_ms) = self.model.lease_choice(batch_max);
        let generation = self.model.generation;
        let request = LeaseRequest {
            now_ms: self.model.now_ms,
            generation,
            batch_max,
            lease_timeout_ms: LEASE_TIMEOUT_MS,
            contact_batch: true,
            backfill_first: false,
            backfill_min_gifts: 1,
            live_only: false,
        };
        let batch = self
            .sut
            .tenant()
            .lease_ready(&self.sut.leases, request)
            .or_fail("lease")?;
        let got: Vec<(Lane, u64)> = batch.entries.iter().map(LeasedEntry::key).collect();
        if (&got, batch.more_ready, batch.next_ready_at_ms) != (&keys, more_ready, next_ready_at_ms)
        {
            return fail(format!(
                "lease of {batch_max}: got {got:?} more_ready={} next={:?}, model {keys:?} more_ready={more_ready} next={next_ready_at_ms:?}",
                batch.more_ready, batch.next_ready_at_ms
            ));
        }
        stats.bump(Kind::Lease);
        for leased in batch.entries {
            if self.model.queued.get(&leased.key()) != Some(&leased.entry) {
                return fail(format!(
                    "leased entry {:?} differs from the model",
                    leased.key()
                ));
            }
            let lease = Lease {
                generation,
                expires_at_ms: self.model.now_ms + LEASE_TIMEOUT_MS,
            };
            self.model.leases.insert(leased.key(), lease);
            self.handles.push((generation, leased));
            stats.bump(Kind::Leased);
        }
        let excess = self.handles.len().saturating_sub(HANDLES_MAX);
        self.handles.drain(..excess);
        Ok(())
    }

    /// One completion call; its results name distinct entries (the submitter's contract).
    pub(super) fn complete(
        &mut self,
        results: &[(usize, bool, Verdict)],
        stats: &mut Stats,
    ) -> Outcome<()> {
        if self.handles.is_empty() {
            return Ok(());
        }
        let mut held = self.held_by_current();
        held.sort_by_key(|&at| std::cmp::Reverse(self.handles[at].1.entry.attempts));
        let mut chosen: Vec<(usize, Verdict)> = Vec::new();
        let mut keys = BTreeSet::new();
        for &(pick, fresh, verdict) in results {
            let at = match fresh && !held.is_empty() {
                true => held[pick % held.len()],
                false => pick % self.handles.len(),
            };
            if keys.insert(self.handles[at].1.key()) {
                chosen.push((at, verdict));
            }
        }
        let generation = self.handles[chosen[0].0].0;
        let calls = chosen
            .iter()
            .map(|&(at, verdict)| (self.handles[at].1.clone(), verdict))
            .collect();
        let report = self.call_complete(generation, calls, stats)?;
        stats.bump_report(&report, false);
        chosen.sort_by_key(|&(at, _)| std::cmp::Reverse(at));
        for (at, _) in chosen {
            self.handles.remove(at);
        }
        Ok(())
    }

    /// Runs `complete_leased` and the model side by side; the reports must agree.
    pub(super) fn call_complete(
        &mut self,
        generation: u64,
        calls: Vec<(LeasedEntry, Verdict)>,
        stats: &mut Stats,
    ) -> Outcome<CompletionReport> {
        let mut expected = CompletionReport::default();
        let mut done = Vec::new();
        for (leased, verdict) in &calls {
            let applied = self.model.complete(generation, leased.key(), *verdict);
            match applied {
                Applied::RefusedStale => expected.refused_stale += 1,
                Applied::Missing => expected.missing += 1,
                Applied::Accepted => expected.accepted += 1,
                Applied::Retried => expected.retried += 1,
                Applied::Exhausted | Applied::Dead => expected.dead += 1,
                Applied::Requeued => expected.requeued += 1,
                Applied::Released => expected.released += 1,
            }
            if applied != Applied::RefusedStale {
                done.push(leased.key());
            }
            match applied {
                Applied::Accepted => stats.bump(Kind::Success),
                Applied::Retried => stats.bump(Kind::Retried),
                Applied::Exhausted => stats.bump(Kind::Exhausted),
                Applied::Dead => stats.bump(Kind::Permanent),
                Applied::Missing => stats.bump(Kind::Missing),
                Applied::Requeued => stats.bump(Kind::Requeued),
                Applied::Released => stats.bump(Kind::Released),
                Applied::RefusedStale => {}
            }
        }
        for key in done {
            self.model.leases.remove(&key);
        }
        let results = calls
            .into_iter()
            .map(|(leased, verdict)| (leased, completion(verdict, self.model.now_ms)))
            .collect();
        let report = self
            .sut
            .tenant()
            .complete_leased(
                &self.sut.leases,
                generation,
                self.model.now_ms,
                results,
                &policy(),
            )
            .or_fail("complete")?;
        if report != expected {
            return fail(format!("completion report {report:?}, model {expected:?}"));
        }
        Ok(report)
    }
}

impl Stats {
    pub(super) fn bump_report(&mut self, report: &CompletionReport, stale_op: bool) {
        let kind = if stale_op {
            Kind::Stale
        } else {
            Kind::RefusedInComplete
        };
        self.kinds[kind as usize] += report.refused_stale;
    }
}
