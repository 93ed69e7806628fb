//! Queue operations of the submitter (ARCHITECTURE.md, "Submitter"; docs/operations.md): lease ready entries, then
//! complete them in one atomic sled batch with a result per entry.
//!
//! # Leases
//! A lease is in memory only ([`LeaseTable`], one per tenant, kept in
//! `TenantShared::leases`): `(lane, seq) → (generation, expires_at_ms)`. Leases are not
//! stored because a restarted process has no submitter in flight; a restarted *child* (new
//! generation) takes over the old generation's leases ([`LeaseTable::take_over`]) so nothing
//! waits for `lease_timeout_ms`, and the old generation's completion is refused here (its
//! leases are gone) as well as by the actor's generation check. An expired lease may be
//! taken by anyone.
//!
//! # Ordering
//! Entries are leased by lane priority (live, retry, reconcile, backfill), then by seq. A
//! record's entries keep their order: an entry is leased only while every earlier entry (by
//! seq, in any lane) of the same record is ready and unleased. Entries that move to the retry
//! lane keep their seq, so order survives a retry. Not-ready entries (`not_before_ms > now`,
//! held or backing off) are skipped without stalling the entries behind them.
//!
//! A lease call reads entry headers only, a prefix of the queue when that settles the group,
//! and at most [`LEASE_SCAN_MAX`] entries (entries beyond wait until the ones ahead drain).

// Size: ~610 lines since contact batches; the group choice (`Eligibility`, `choose`,
// `choose_contacts`, ~200 lines) is the part to move to a file of its own next time.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, MutexGuard};

use super::codec::{decode, Versioned};
use super::keys::section;
use super::types::QueueEntry;
use super::{io_error, Lane, RecordKind, StoreError, TenantStore};
use crate::retry::RetryPolicy;

/// Most queue entries one lease call reads.
pub const LEASE_SCAN_MAX: usize = 20_000;

/// Who holds an entry, until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub generation: u64,
    pub expires_at_ms: u64,
}

/// A tenant's in-memory leases (see the module docs).
#[derive(Debug, Default)]
pub struct LeaseTable {
    leases: Mutex<HashMap<(Lane, u64), Lease>>,
}

impl LeaseTable {
    pub fn new() -> LeaseTable {
        LeaseTable::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<(Lane, u64), Lease>> {
        self.leases
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The generation holding a live (unexpired) lease on the entry.
    pub fn holder(&self, lane: Lane, seq: u64, now_ms: u64) -> Option<u64> {
        self.lock()
            .get(&(lane, seq))
            .filter(|lease| lease.expires_at_ms > now_ms)
            .map(|lease| lease.generation)
    }

    /// A new generation takes over: every lease of another generation is dropped (their
    /// completions will be refused). Returns how many were dropped.
    pub fn take_over(&self, generation: u64) -> usize {
        let mut leases = self.lock();
        let before = leases.len();
        leases.retain(|_, lease| lease.generation == generation);
        before - leases.len()
    }

    /// Extends the leases `generation` holds on `keys` (a batch kept for a follow-up call).
    /// Returns false when one of them is no longer held by `generation`.
    pub fn renew(&self, generation: u64, keys: &[(Lane, u64)], expires_at_ms: u64) -> bool {
        let mut leases = self.lock();
        let mut all_held = true;
        for key in keys {
            match leases.get_mut(key) {
                Some(lease) if lease.generation == generation => {
                    lease.expires_at_ms = expires_at_ms
                }
                _ => all_held = false,
            }
        }
        all_held
    }

    /// Drops the leases `generation` holds on `keys` (nothing to store).
    pub fn release(&self, generation: u64, keys: &[(Lane, u64)]) {
        let mut leases = self.lock();
        for key in keys {
            if leases
                .get(key)
                .is_some_and(|lease| lease.generation == generation)
            {
                leases.remove(key);
            }
        }
    }

    /// Leases held (live or expired but not yet dropped).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn held_by(&self, generation: u64, key: (Lane, u64)) -> bool {
        self.lock()
            .get(&key)
            .is_some_and(|lease| lease.generation == generation)
    }
}

/// What to lease.
#[derive(Debug, Clone, Copy)]
pub struct LeaseRequest {
    pub now_ms: u64,
    /// The submitter generation taking the leases.
    pub generation: u64,
    /// Most gift transactions (or contact records, or one record's updates) in one lease.
    pub batch_max: usize,
    pub lease_timeout_ms: u64,
    /// A contact group holds up to `batch_max` records of one transaction source (one
    /// `Contact/Batch`); false: one record's updates (one `Contact/Transaction`).
    pub contact_batch: bool,
    /// The backfill lane's turn (its guaranteed share, `budget.backfill_pct`): the group
    /// comes from the `backfill` lane alone when it has a ready one, else as usual.
    pub backfill_first: bool,
    /// Fewest backfill gifts a group may carry (`batch_max` while a backfill job is still
    /// reading its file, so each call is full; else 1): a smaller one waits.
    pub backfill_min_gifts: usize,
    /// The call is the budget's live reserve (`budget::LIVE_RESERVE_CALLS`): a group of the
    /// `backfill` lane is not leased (nothing is).
    pub live_only: bool,
}

/// One leased entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeasedEntry {
    pub lane: Lane,
    pub seq: u64,
    pub entry: QueueEntry,
}

impl LeasedEntry {
    pub fn key(&self) -> (Lane, u64) {
        (self.lane, self.seq)
    }
}

/// The result of a lease call: one request's worth of entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseBatch {
    /// One group, in send order: gifts of one `transaction_source` (≤ `batch_max`, one per
    /// record), or contact records of one `transaction_source` (≤ `batch_max` records with
    /// batching, else one), each with its consecutive updates oldest first, or one refund.
    pub entries: Vec<LeasedEntry>,
    /// Earliest `not_before_ms` among entries skipped as not ready (wake-up time).
    pub next_ready_at_ms: Option<u64>,
    /// Ready entries were left for another request (another group or a full batch).
    pub more_ready: bool,
}

/// What happened to one leased entry.
#[derive(Debug, Clone, PartialEq)]
pub enum Completion {
    /// 2xx: removed; record → `submitted`; gifts and contacts join the unconfirmed index.
    Accepted,
    /// A failed attempt (transient / unknown): the retry lane with the next delay (jitter
    /// drawn once per completion call), or a dead letter once the schedule is exhausted.
    Retry {
        reason: String,
        status: Option<u16>,
        /// `Retry-After` as a floor for the delay.
        retry_after_ms: Option<u64>,
    },
    /// Not an attempt (throttled): only `not_before_ms` changes.
    Requeue { not_before_ms: u64 },
    /// Permanent: a dead letter with the exact entry; record → `dead`.
    Dead { reason: String, status: Option<u16> },
    /// A refund whose gift has no Virtuous id yet: record → `waiting_for_gift`, the entry
    /// stays (not an attempt) until `recheck_at_ms`.
    WaitForGift { recheck_at_ms: u64 },
    /// Nothing changes in the store; the lease is dropped.
    Release,
}

/// What a completion did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompletionReport {
    pub accepted: u64,
    pub retried: u64,
    pub requeued: u64,
    pub dead: u64,
    pub waiting_for_gift: u64,
    pub released: u64,
    /// Refused: the lease is not held by the completing generation (stale submitter).
    pub refused_stale: u64,
    /// The entry was gone (removed by an operator meanwhile).
    pub missing: u64,
    /// A result for an entry that already had one in this call (the first one counts).
    pub repeated: u64,
}

/// The fields of a stored [`QueueEntry`] leasing needs, borrowed from its bytes (same
/// bincode layout, written flat: bincode puts the nested [`super::EntryFact`]'s fields first,
/// in order; field order is the on-disk format, pinned by the golden-bytes test and by
/// `entry_headers_read_what_full_decoding_reads`).
#[derive(serde::Deserialize)]
struct EntryHeader<'a> {
    kind: RecordKind,
    source: &'a str,
    source_id: &'a str,
    _idempotency_key: &'a str,
    lane: Lane,
    transaction_source: &'a str,
    _body_json: &'a str,
    _attempts: u32,
    _enqueued_at_ms: u64,
    not_before_ms: u64,
}

/// One scanned entry: its header, hashed keys, and its bytes (decoded only if leased).
struct Scanned {
    lane: Lane,
    seq: u64,
    kind: RecordKind,
    /// Hash of (kind, source, source id): the record. A collision only adds an ordering
    /// constraint between two records (a delay, never a wrong send).
    record: u64,
    /// Hash of the transaction source.
    transaction_source: u64,
    not_before_ms: u64,
    bytes: sled::IVec,
}

fn hash_of(value: impl Hash) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

impl Scanned {
    fn read(seq: u64, bytes: sled::IVec) -> Result<Scanned, StoreError> {
        let (kind, lane, record, transaction_source, not_before_ms) = match bytes.split_first() {
            Some((&version, payload)) if version == QueueEntry::VERSION => {
                let header: EntryHeader<'_> =
                    super::codec::decode_payload_borrowed("QueueEntry header", payload)?;
                (
                    header.kind,
                    header.lane,
                    hash_of((header.kind, header.source, header.source_id)),
                    hash_of(header.transaction_source),
                    header.not_before_ms,
                )
            }
            // Another version: decode in full (migration on read).
            _ => {
                let entry: QueueEntry = decode(&bytes)?;
                let fact = &entry.fact;
                (
                    fact.kind,
                    fact.lane,
                    hash_of((fact.kind, fact.source.as_str(), fact.source_id.as_str())),
                    hash_of(fact.transaction_source.as_str()),
                    entry.not_before_ms,
                )
            }
        };
        Ok(Scanned {
            lane,
            seq,
            kind,
            record,
            transaction_source,
            not_before_ms,
            bytes,
        })
    }
}

/// The group chosen from a scanned prefix of the queue.
struct Choice {
    /// Indices into the scanned entries, in send order.
    chosen: Vec<usize>,
    /// The group cannot grow (batch full, or a refund).
    full: bool,
    more_ready: bool,
    next_ready_at_ms: Option<u64>,
}

/// Which scanned entries may be leased now: order per record key (see the module docs).
struct Eligibility {
    now_ms: u64,
    /// Per record: its earliest scanned seq.
    earliest_seq: HashMap<u64, u64>,
    /// Per record: the seq of its first entry that is leased or not ready (entries of the
    /// record from that seq on wait).
    blocked_from: HashMap<u64, u64>,
    next_ready_at_ms: Option<u64>,
}

impl Eligibility {
    fn of(scanned: &[Scanned], leases: &LeaseTable, now_ms: u64) -> Eligibility {
        let mut next_ready_at_ms: Option<u64> = None;
        let mut earliest_seq: HashMap<u64, u64> = HashMap::new();
        let mut blocked_from: HashMap<u64, u64> = HashMap::new();
        for entry in scanned {
            let earliest = earliest_seq.entry(entry.record).or_insert(entry.seq);
            *earliest = (*earliest).min(entry.seq);
            let ready = entry.not_before_ms <= now_ms;
            if !ready {
                let at = next_ready_at_ms.get_or_insert(entry.not_before_ms);
                *at = (*at).min(entry.not_before_ms);
            }
            if !ready || leases.holder(entry.lane, entry.seq, now_ms).is_some() {
                let from = blocked_from.entry(entry.record).or_insert(entry.seq);
                *from = (*from).min(entry.seq);
            }
        }
        Eligibility {
            now_ms,
            earliest_seq,
            blocked_from,
            next_ready_at_ms,
        }
    }

    /// Ready, unleased, and no earlier entry of its record waits.
    fn eligible(&self, entry: &Scanned) -> bool {
        entry.not_before_ms <= self.now_ms
            && self
                .blocked_from
                .get(&entry.record)
                .map_or(true, |&from| entry.seq < from)
    }

    /// The first entry of its record (a group may start a record only there).
    fn is_earliest(&self, entry: &Scanned) -> bool {
        self.earliest_seq.get(&entry.record) == Some(&entry.seq)
    }
}

/// Picks the next group from `scanned` (lane priority then seq; see the module docs).
fn choose(
    scanned: &[Scanned],
    leases: &LeaseTable,
    now_ms: u64,
    batch_max: usize,
    request: &LeaseRequest,
) -> Choice {
    let contact_batch = request.contact_batch;
    let rules = Eligibility::of(scanned, leases, now_ms);
    // The first must be its record's earliest entry (else an earlier entry of the record
    // sits in a lower lane: it goes first).
    let first_at = scanned
        .iter()
        .position(|entry| rules.eligible(entry) && rules.is_earliest(entry));
    let Some(first_at) = first_at else {
        return Choice {
            chosen: Vec::new(),
            full: false,
            more_ready: false,
            next_ready_at_ms: rules.next_ready_at_ms,
        };
    };
    let first = &scanned[first_at];
    if first.kind == RecordKind::Contact {
        let records_max = if contact_batch { batch_max } else { 1 };
        return choose_contacts(
            scanned,
            &rules,
            first_at,
            (batch_max, records_max),
            request.live_only,
        );
    }
    let mut records_taken: HashSet<u64> = HashSet::from([first.record]);
    let mut chosen: Vec<usize> = vec![first_at];
    let mut more_ready = false;
    for (at, entry) in scanned.iter().enumerate() {
        if at == first_at || !rules.eligible(entry) {
            continue;
        }
        let fits = at > first_at
            && chosen.len() < batch_max
            && match first.kind {
                // Gifts: one per record (never coalesced), one transaction source; history
                // never rides in a live call (a full batch is a slower call, and live waits
                // for it).
                RecordKind::Gift => {
                    entry.kind == RecordKind::Gift
                        && entry.transaction_source == first.transaction_source
                        && (entry.lane == Lane::Backfill) == (first.lane == Lane::Backfill)
                        && !records_taken.contains(&entry.record)
                        && rules.is_earliest(entry)
                }
                RecordKind::Contact | RecordKind::Refund => false,
            };
        if fits {
            records_taken.insert(entry.record);
            chosen.push(at);
        } else if at > first_at {
            more_ready = true;
        }
    }
    Choice {
        full: chosen.len() >= batch_max || first.kind == RecordKind::Refund,
        chosen,
        more_ready,
        next_ready_at_ms: rules.next_ready_at_ms,
    }
}

/// A contact group: up to `records_max` contact records of the first one's transaction
/// source (= `referenceSource`, one per `Contact/Batch`), each with its leading ready
/// updates (at most `batch_max` of them, oldest first, merged into one item by the
/// submitter). Records go in the order their first entries were scanned.
fn choose_contacts(
    scanned: &[Scanned],
    rules: &Eligibility,
    first_at: usize,
    (batch_max, records_max): (usize, usize),
    live_only: bool,
) -> Choice {
    let first = &scanned[first_at];
    // On live's reserve, a record whose earliest entry is history waits for an ordinary call.
    let joins = |entry: &Scanned| {
        entry.kind == RecordKind::Contact
            && entry.transaction_source == first.transaction_source
            && rules.eligible(entry)
            && rules.is_earliest(entry)
            && !(live_only && entry.lane == Lane::Backfill)
    };
    // The records, in scan order from the first (a record starts at its earliest entry).
    let mut records: Vec<u64> = Vec::new();
    let mut updates: HashMap<u64, Vec<usize>> = HashMap::new();
    for entry in scanned[first_at..].iter() {
        if records.len() >= records_max {
            break;
        }
        if joins(entry) && !updates.contains_key(&entry.record) {
            records.push(entry.record);
            updates.insert(entry.record, Vec::new());
        }
    }
    // Every eligible entry of those records, in any lane; anything else waits.
    let mut more_ready = false;
    for (at, entry) in scanned.iter().enumerate() {
        if !rules.eligible(entry) {
            continue;
        }
        match updates.get_mut(&entry.record) {
            Some(taken) if entry.kind == RecordKind::Contact => taken.push(at),
            _ => more_ready = true,
        }
    }
    let mut chosen: Vec<usize> = Vec::new();
    for record in &records {
        let mut taken = updates.remove(record).unwrap_or_default();
        // Oldest first (merged updates apply in order, newest value wins); a prefix only,
        // so the record's order holds: up to batch_max updates, all of the group's source
        // (an update under another transaction source waits for a group of its own).
        taken.sort_by_key(|&at| scanned[at].seq);
        let same_source = taken
            .iter()
            .take_while(|&&at| scanned[at].transaction_source == first.transaction_source)
            .count();
        let keep = same_source.min(batch_max);
        more_ready |= keep < taken.len();
        chosen.extend_from_slice(&taken[..keep]);
    }
    let full = if records_max > 1 {
        records.len() >= records_max
    } else {
        chosen.len() >= batch_max
    };
    Choice {
        chosen,
        full,
        more_ready,
        next_ready_at_ms: rules.next_ready_at_ms,
    }
}

/// Scans `entries` (a queue prefix in key order: lane priority then seq) far enough to settle
/// the next group (see [`TenantStore::lease_ready`]); returns the scanned entries and the
/// choice among them. `last_lane`: the last non-empty lane of the scan; `skip_contacts`:
/// leave contact entries out (their order may depend on entries in other lanes).
fn scan_and_choose(
    mut entries: sled::Iter,
    leases: &LeaseTable,
    request: &LeaseRequest,
    last_lane: Option<Lane>,
    keys: &super::keys::KeySpace,
    skip_contacts: bool,
) -> Result<(Vec<Scanned>, Choice), StoreError> {
    let now_ms = request.now_ms;
    let batch_max = request.batch_max.max(1);
    // Scanned entries, lane priority then seq.
    let mut scanned: Vec<Scanned> = Vec::new();
    let mut limit = (batch_max * 4 + 256).min(LEASE_SCAN_MAX);
    let choice = loop {
        let mut exhausted = false;
        while scanned.len() < limit {
            let Some(item) = entries.next() else {
                exhausted = true;
                break;
            };
            let (key, bytes) = item.map_err(io_error)?;
            let seq = keys
                .seq_of_queue_key(&key)
                .ok_or_else(|| StoreError::Codec(format!("malformed queue key {key:?}")))?;
            let entry = Scanned::read(seq, bytes)?;
            if !(skip_contacts && entry.kind == RecordKind::Contact) {
                scanned.push(entry);
            }
        }
        let choice = choose(&scanned, leases, now_ms, batch_max, request);
        let in_last_lane = |lane: Lane| Some(lane) == last_lane;
        let settled = exhausted
            || scanned.len() >= LEASE_SCAN_MAX
            || (choice.full
                && choice
                    .chosen
                    .iter()
                    .all(|&at| in_last_lane(scanned[at].lane))
                && scanned.last().is_some_and(|last| in_last_lane(last.lane)));
        if settled {
            break choice;
        }
        limit = (limit * 4).min(LEASE_SCAN_MAX);
    };
    Ok((scanned, choice))
}

/// A group of backfill gifts smaller than `backfill_min_gifts` (it waits to be filled).
fn is_short_backfill_group(scanned: &[Scanned], choice: &Choice, request: &LeaseRequest) -> bool {
    !choice.chosen.is_empty()
        && choice.chosen.len() < request.backfill_min_gifts
        && choice
            .chosen
            .iter()
            .all(|&at| scanned[at].lane == Lane::Backfill && scanned[at].kind == RecordKind::Gift)
}

/// Decodes the chosen entries and leases them (nothing for a backfill gift group smaller
/// than `backfill_min_gifts`: it waits to be filled; nothing for a backfill group when the
/// call is live's reserve).
fn lease_chosen(
    (scanned, mut choice): (Vec<Scanned>, Choice),
    leases: &LeaseTable,
    request: &LeaseRequest,
) -> Result<LeaseBatch, StoreError> {
    let backfill_group = || {
        choice
            .chosen
            .iter()
            .all(|&at| scanned[at].lane == Lane::Backfill)
    };
    if is_short_backfill_group(&scanned, &choice, request)
        || (request.live_only && backfill_group())
    {
        choice.chosen.clear();
    }
    let mut batch = LeaseBatch {
        entries: Vec::with_capacity(choice.chosen.len()),
        next_ready_at_ms: choice.next_ready_at_ms,
        more_ready: choice.more_ready,
    };
    for at in choice.chosen {
        let entry = &scanned[at];
        batch.entries.push(LeasedEntry {
            lane: entry.lane,
            seq: entry.seq,
            entry: decode(&entry.bytes)?,
        });
    }
    let expires_at_ms = request
        .now_ms
        .saturating_add(request.lease_timeout_ms.max(1));
    let mut table = leases.lock();
    for leased in &batch.entries {
        table.insert(
            leased.key(),
            Lease {
                generation: request.generation,
                expires_at_ms,
            },
        );
    }
    Ok(batch)
}

impl TenantStore {
    /// Leases the next group of ready entries (see the module docs for priority, ordering
    /// and grouping). An empty batch leases nothing.
    ///
    /// The scan reads only each entry's header ([`EntryHeader`], borrowed: no body copy);
    /// the leased entries alone are decoded in full. It reads a prefix of the queue and
    /// stops once a full group lies in the last non-empty lane (nothing after it can come
    /// first: later entries of that lane have higher seqs); otherwise it reads further, up
    /// to [`LEASE_SCAN_MAX`].
    pub fn lease_ready(
        &self,
        leases: &LeaseTable,
        request: LeaseRequest,
    ) -> Result<LeaseBatch, StoreError> {
        let inner = self.inner();
        inner.settle()?;
        let lane_stats = self.lane_stats();
        let last_nonempty_lane = Lane::ALL
            .into_iter()
            .rev()
            .find(|&lane| lane_stats[lane as usize].1.depth > 0);
        // The backfill lane's turn: gifts and reversals from its own prefix first (their
        // records never have an entry in another lane: a gift is one fact, queued once).
        // Contact entries are left to the full scan below, which keeps a record's order
        // across lanes.
        if request.backfill_first && lane_stats[Lane::Backfill as usize].1.depth > 0 {
            let backfill = inner
                .tree
                .scan_prefix(inner.keys.lane_prefix(Lane::Backfill));
            let choice = scan_and_choose(
                backfill,
                leases,
                &request,
                Some(Lane::Backfill),
                &inner.keys,
                true,
            )?;
            // A short group of backfill gifts waits to be filled: the usual lease goes on.
            if !choice.1.chosen.is_empty()
                && !is_short_backfill_group(&choice.0, &choice.1, &request)
            {
                return lease_chosen(choice, leases, &request);
            }
        }
        let entries = inner
            .tree
            .scan_prefix(inner.keys.section_prefix(section::QUEUE));
        let choice = scan_and_choose(
            entries,
            leases,
            &request,
            last_nonempty_lane,
            &inner.keys,
            false,
        )?;
        lease_chosen(choice, leases, &request)
    }

    /// Completes leased entries in one atomic sled batch (queue, records, dead letters,
    /// unconfirmed index, counters), then keeps the lane gauges exact and drops the leases.
    /// An entry whose lease `generation` does not hold is refused (stale completion) and
    /// left untouched. When to retry and when to dead-letter is `retry`'s decision
    /// ([`RetryPolicy::decide`]); the store applies it.
    pub fn complete_leased(
        &self,
        leases: &LeaseTable,
        generation: u64,
        now_ms: u64,
        results: Vec<(LeasedEntry, Completion)>,
        retry: &RetryPolicy,
    ) -> Result<CompletionReport, StoreError> {
        let inner = self.inner();
        let _guard = inner.lock_for_write()?;
        let mut completing = super::completion::Completing::new(inner, now_ms);
        // One jitter draw per completion: entries that failed together in one call retry
        // together in one call (a batch stays a batch); different calls spread apart.
        let rng_value = rand::random::<f64>();
        for (leased, completion) in results {
            let Some(entry) = completing.admit(leases, generation, &leased)? else {
                continue;
            };
            completing.apply(&leased, entry, completion, retry, rng_value)?;
        }
        completing.commit(leases, generation)
    }

    /// Times of the calls in the budget call log at or after `since_ms`, oldest first
    /// (the budget ledger loads its window from here at start).
    pub fn call_times_since(&self, since_ms: u64) -> Result<Vec<u64>, StoreError> {
        let inner = self.inner();
        let start = inner.keys.call(since_ms, 0);
        let end = super::keys::prefix_end(&inner.keys.section_prefix(section::CALL_LOG));
        let upper = end.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        let mut times = Vec::new();
        for key in inner
            .tree
            .range::<Vec<u8>, _>((std::ops::Bound::Included(start), upper))
            .keys()
        {
            let key = key.map_err(io_error)?;
            if let Some(at_ms) = inner.keys.time_of_call_key(&key) {
                times.push(at_ms);
            }
        }
        Ok(times)
    }
}

#[cfg(test)]
#[path = "queue_ops_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "queue_ops_contact_tests.rs"]
mod contact_tests;
