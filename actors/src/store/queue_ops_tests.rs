//! Tests of leasing and completion on the real sled store in a temp dir.

use super::*;
use crate::store::codec::encode;
use crate::store::keys::section;
use crate::store::{EntryFact, NewEntry, Store, StoreOptions, SyncState, Unconfirmed};

fn entry(kind: RecordKind, source_id: &str, key: &str, lane: Lane, source: &str) -> NewEntry {
    NewEntry {
        fact: EntryFact {
            kind,
            source: "stripe".into(),
            source_id: source_id.into(),
            idempotency_key: key.into(),
            lane,
            transaction_source: source.into(),
            body_json: format!("{{\"transactionId\":\"{source_id}\",\"k\":\"{key}\"}}"),
        },
        aliases: Vec::new(),
        now_ms: 1_000,
    }
}

fn gift(id: &str, lane: Lane) -> NewEntry {
    entry(RecordKind::Gift, id, &format!("k-{id}"), lane, "Stripe")
}

fn open() -> (tempfile::TempDir, Store, TenantStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let tenant = store.tenant("t").unwrap();
    (dir, store, tenant)
}

fn request(now_ms: u64, generation: u64, batch_max: usize) -> LeaseRequest {
    LeaseRequest {
        now_ms,
        generation,
        batch_max,
        lease_timeout_ms: 60_000,
        contact_batch: false,
        backfill_first: false,
        backfill_min_gifts: 1,
        live_only: false,
    }
}

/// Rewrites an entry's `not_before_ms` (what a hold does), directly in sled.
fn hold(tenant: &TenantStore, lane: Lane, seq: u64, not_before_ms: u64) {
    let mut queued = tenant.get_queue_entry(lane, seq).unwrap().unwrap();
    queued.not_before_ms = not_before_ms;
    let inner = tenant.inner();
    inner
        .tree
        .insert(inner.keys.queue_entry(lane, seq), encode(&queued).unwrap())
        .unwrap();
}

fn seqs(batch: &LeaseBatch) -> Vec<u64> {
    batch.entries.iter().map(|leased| leased.seq).collect()
}

fn queued_seqs(tenant: &TenantStore) -> Vec<u64> {
    Lane::ALL
        .iter()
        .flat_map(|&lane| tenant.scan_lane(lane, 1_000).unwrap())
        .map(|(seq, _)| seq)
        .collect()
}

fn policy(delays_ms: &[u64]) -> crate::retry::RetryPolicy {
    crate::retry::RetryPolicy::from_settings(delays_ms, 20)
}

#[test]
fn lease_takes_lanes_by_priority_one_source_at_most_batch_max_and_skips_held_and_leased() {
    // Goal: leasing follows lane priority, keeps one transaction_source, caps at batch_max, skips held entries without stalling and never re-leases a leased entry.
    let (_dir, _store, tenant) = open();
    tenant
        .enqueue(vec![
            gift("b1", Lane::Backfill),
            gift("r1", Lane::Retry),
            gift("l1", Lane::Live),
            entry(RecordKind::Gift, "o1", "k-o1", Lane::Live, "Other"),
            gift("l2", Lane::Live),
            gift("l3", Lane::Live),
        ])
        .unwrap();
    let live = tenant.scan_lane(Lane::Live, 10).unwrap();
    let retry = tenant.scan_lane(Lane::Retry, 10).unwrap();
    let backfill = tenant.scan_lane(Lane::Backfill, 10).unwrap();
    // l1 is held until 5,000: l2 behind it still goes.
    hold(&tenant, Lane::Live, live[0].0, 5_000);
    let leases = LeaseTable::new();
    // The first ready entry is o1 (l1 is held): its source makes a batch of its own.
    let first = tenant.lease_ready(&leases, request(2_000, 1, 3)).unwrap();
    assert_eq!(seqs(&first), [live[1].0]);
    assert!(first.more_ready);
    assert_eq!(first.next_ready_at_ms, Some(5_000));
    // Then l2, l3 (live, Stripe) and r1 (retry), capped at 3: b1 waits; nothing re-leased.
    let second = tenant.lease_ready(&leases, request(2_000, 1, 3)).unwrap();
    assert_eq!(seqs(&second), [live[2].0, live[3].0, retry[0].0]);
    assert!(second
        .entries
        .iter()
        .all(|leased| leased.entry.fact.transaction_source == "Stripe"));
    let third = tenant.lease_ready(&leases, request(2_000, 1, 3)).unwrap();
    assert_eq!(seqs(&third), [backfill[0].0]);
    let none = tenant.lease_ready(&leases, request(2_000, 1, 3)).unwrap();
    assert!(none.entries.is_empty() && !none.more_ready);
    // Once its time has come, the held entry is ready.
    let later = tenant.lease_ready(&leases, request(5_000, 1, 3)).unwrap();
    assert_eq!(seqs(&later), [live[0].0]);
    // Expired leases may be taken again.
    let expired = tenant
        .lease_ready(&leases, request(2_000 + 60_000, 2, 100))
        .unwrap();
    // l1 (leased at 5,000) is still held; o1 comes first again, alone.
    assert_eq!(seqs(&expired), [live[1].0]);
    assert!(expired.more_ready);
}

#[test]
fn entries_of_one_record_keep_their_order_and_contacts_merge() {
    // Goal: a contact's consecutive updates lease together oldest first; an update behind a held one waits; a refund is alone.
    let (_dir, _store, tenant) = open();
    let contact = |key: &str| entry(RecordKind::Contact, "cus_1", key, Lane::Live, "Stripe");
    tenant
        .enqueue(vec![contact("u1"), contact("u2"), contact("u3")])
        .unwrap();
    tenant
        .enqueue(vec![entry(
            RecordKind::Refund,
            "pi_9",
            "r9",
            Lane::Live,
            "Stripe",
        )])
        .unwrap();
    let live = tenant.scan_lane(Lane::Live, 10).unwrap();
    hold(&tenant, Lane::Live, live[1].0, 9_000);
    let leases = LeaseTable::new();
    let first = tenant.lease_ready(&leases, request(2_000, 1, 100)).unwrap();
    assert_eq!(seqs(&first), [live[0].0], "u2 is held, so u3 waits too");
    let second = tenant.lease_ready(&leases, request(2_000, 1, 100)).unwrap();
    assert_eq!(seqs(&second), [live[3].0], "the refund, alone");
    assert!(tenant
        .lease_ready(&leases, request(2_000, 1, 100))
        .unwrap()
        .entries
        .is_empty());
    leases.release(1, &[first.entries[0].key()]);
    // u1 is still queued (released, not completed): u1..u3 merge once u2 is ready.
    let merged = tenant.lease_ready(&leases, request(9_000, 1, 100)).unwrap();
    assert_eq!(seqs(&merged), [live[0].0, live[1].0, live[2].0]);
}

#[test]
fn accepted_completion_updates_record_counts_index_and_gauges_in_one_go() {
    // Goal: accepted entries leave the queue, their records are submitted with history, counts and the unconfirmed index follow, lane gauges stay exact; refunds are not indexed.
    let (_dir, _store, tenant) = open();
    tenant
        .enqueue(vec![
            gift("a", Lane::Live),
            gift("b", Lane::Live),
            entry(RecordKind::Refund, "a", "ref-a", Lane::Live, "Stripe"),
        ])
        .unwrap();
    let leases = LeaseTable::new();
    let batch = tenant.lease_ready(&leases, request(2_000, 1, 100)).unwrap();
    assert_eq!(batch.entries.len(), 2);
    let refund = tenant.lease_ready(&leases, request(2_000, 1, 100)).unwrap();
    let results = batch
        .entries
        .iter()
        .chain(&refund.entries)
        .map(|leased| (leased.clone(), Completion::Accepted))
        .collect();
    let report = tenant
        .complete_leased(&leases, 1, 3_000, results, &policy(&[10]))
        .unwrap();
    assert_eq!((report.accepted, report.refused_stale), (3, 0));
    assert_eq!(tenant.queued_total(), 0);
    assert_eq!(tenant.lane_stats()[0].1.depth, 0);
    assert_eq!(tenant.counts().submitted, 3);
    assert!(leases.is_empty());
    let record = tenant
        .get_record(RecordKind::Gift, "stripe", "a")
        .unwrap()
        .unwrap();
    assert_eq!(record.state, SyncState::Submitted);
    assert_eq!(record.history.last().unwrap().at_ms, 3_000);
    let inner = tenant.inner();
    let index: Unconfirmed = decode(
        &inner
            .tree
            .get(inner.keys.unconfirmed(RecordKind::Gift, "stripe", "a"))
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        (
            index.transaction_id.as_str(),
            index.transaction_source.as_str(),
            index.submitted_at_ms
        ),
        ("a", "Stripe", 3_000)
    );
    assert_eq!(
        inner.count_section(section::UNCONFIRMED).unwrap(),
        2,
        "gifts only, no refund"
    );
    // Counters survive a reopen (they were in the batch).
    assert_eq!(
        inner
            .read::<crate::store::Counts>(&inner.keys.counts())
            .unwrap()
            .unwrap()
            .submitted,
        3
    );
}

#[test]
fn retries_move_to_the_retry_lane_then_die_with_the_exact_body() {
    // Goal: a failed attempt moves the entry to the retry lane with attempts+1 and a jittered not_before; after the schedule it is dead-lettered with exact body, status and attempts.
    let (_dir, _store, tenant) = open();
    tenant.enqueue(vec![gift("x", Lane::Live)]).unwrap();
    let body = tenant.scan_lane(Lane::Live, 1).unwrap()[0]
        .1
        .fact
        .body_json
        .clone();
    let leases = LeaseTable::new();
    let retry = policy(&[1_000, 2_000]);
    let fail = || Completion::Retry {
        reason: "503 server error".into(),
        status: Some(503),
        retry_after_ms: None,
    };
    let mut now_ms = 2_000;
    for (attempt, base_ms) in [(1u32, 1_000u64), (2, 2_000)] {
        let batch = tenant.lease_ready(&leases, request(now_ms, 1, 10)).unwrap();
        assert_eq!(batch.entries.len(), 1, "attempt {attempt}");
        let results = vec![(batch.entries[0].clone(), fail())];
        assert_eq!(
            tenant
                .complete_leased(&leases, 1, now_ms, results, &retry)
                .unwrap()
                .retried,
            1
        );
        let stats = tenant.lane_stats();
        assert_eq!((stats[0].1.depth, stats[1].1.depth), (0, 1));
        let (_, queued) = tenant.scan_lane(Lane::Retry, 1).unwrap().remove(0);
        assert_eq!((queued.attempts, queued.fact.lane), (attempt, Lane::Retry));
        let wait_ms = queued.not_before_ms - now_ms;
        assert!(
            (base_ms * 8 / 10..=base_ms * 12 / 10).contains(&wait_ms),
            "wait {wait_ms} for base {base_ms}"
        );
        // Not ready before its time.
        assert!(tenant
            .lease_ready(&leases, request(queued.not_before_ms - 1, 1, 10))
            .unwrap()
            .entries
            .is_empty());
        now_ms = queued.not_before_ms;
        let record = tenant
            .get_record(RecordKind::Gift, "stripe", "x")
            .unwrap()
            .unwrap();
        assert_eq!(record.state, SyncState::Retrying);
    }
    let batch = tenant.lease_ready(&leases, request(now_ms, 1, 10)).unwrap();
    let results = vec![(batch.entries[0].clone(), fail())];
    let report = tenant
        .complete_leased(&leases, 1, now_ms, results, &retry)
        .unwrap();
    assert_eq!(report.dead, 1);
    assert_eq!(tenant.queued_total(), 0);
    assert_eq!(tenant.lane_stats()[1].1.depth, 0);
    let letters = tenant.list_dead_letters().unwrap();
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.entry.fact.body_json, body);
    assert_eq!(
        (letter.status, letter.attempts, letter.dead_at_ms),
        (Some(503), 3, now_ms)
    );
    assert!(
        letter.reason.contains("retries exhausted after 3 attempts"),
        "{}",
        letter.reason
    );
    assert_eq!(letter.id, batch.entries[0].seq);
    assert_eq!(tenant.counts().dead, 1);
    let record = tenant
        .get_record(RecordKind::Gift, "stripe", "x")
        .unwrap()
        .unwrap();
    assert_eq!(record.state, SyncState::Dead);
}

#[test]
fn requeue_dead_wait_and_release_change_exactly_what_they_say() {
    // Goal: requeue changes only not_before; dead writes a dead letter with status; waiting for the gift holds the refund; release changes nothing.
    let (_dir, _store, tenant) = open();
    tenant
        .enqueue(vec![
            gift("q", Lane::Live),
            gift("d", Lane::Live),
            gift("r", Lane::Live),
        ])
        .unwrap();
    tenant
        .enqueue(vec![entry(
            RecordKind::Refund,
            "w",
            "ref-w",
            Lane::Live,
            "Stripe",
        )])
        .unwrap();
    let leases = LeaseTable::new();
    let gifts = tenant.lease_ready(&leases, request(2_000, 1, 10)).unwrap();
    let refund = tenant.lease_ready(&leases, request(2_000, 1, 10)).unwrap();
    let before: Vec<QueueEntry> = gifts
        .entries
        .iter()
        .map(|leased| leased.entry.clone())
        .collect();
    let results = vec![
        (
            gifts.entries[0].clone(),
            Completion::Requeue {
                not_before_ms: 7_000,
            },
        ),
        (
            gifts.entries[1].clone(),
            Completion::Dead {
                reason: "422 invalid".into(),
                status: Some(422),
            },
        ),
        (gifts.entries[2].clone(), Completion::Release),
        (
            refund.entries[0].clone(),
            Completion::WaitForGift {
                recheck_at_ms: 8_000,
            },
        ),
    ];
    let report = tenant
        .complete_leased(&leases, 1, 2_500, results, &policy(&[10]))
        .unwrap();
    assert_eq!(
        (
            report.requeued,
            report.dead,
            report.released,
            report.waiting_for_gift
        ),
        (1, 1, 1, 1)
    );
    let requeued = tenant
        .get_queue_entry(Lane::Live, gifts.entries[0].seq)
        .unwrap()
        .unwrap();
    assert_eq!(
        requeued,
        QueueEntry {
            not_before_ms: 7_000,
            ..before[0].clone()
        }
    );
    let released = tenant
        .get_queue_entry(Lane::Live, gifts.entries[2].seq)
        .unwrap()
        .unwrap();
    assert_eq!(released, before[2]);
    let letter = tenant
        .get_dead_letter(gifts.entries[1].seq)
        .unwrap()
        .unwrap();
    assert_eq!(
        (letter.status, letter.attempts, letter.entry.clone()),
        (Some(422), 1, before[1].clone())
    );
    let waiting = tenant
        .get_record(RecordKind::Refund, "stripe", "w")
        .unwrap()
        .unwrap();
    assert_eq!(waiting.state, SyncState::WaitingForGift);
    assert_eq!(tenant.queued_total(), 3);
    assert_eq!(tenant.lane_stats()[0].1.depth, 3);
    assert!(leases.is_empty());
    // Only the released gift is ready now.
    assert_eq!(
        seqs(&tenant.lease_ready(&leases, request(3_000, 1, 10)).unwrap()),
        [gifts.entries[2].seq]
    );
}

#[test]
fn a_second_result_for_one_entry_in_one_call_is_ignored() {
    // Goal: Accepted then Retry for the same leased entry in one call applies only the first
    // (before, both applied: submitted AND queued again, and the live gauge wrapped below 0).
    let (_dir, _store, tenant) = open();
    tenant.enqueue(vec![gift("twice", Lane::Live)]).unwrap();
    let leases = LeaseTable::new();
    let batch = tenant.lease_ready(&leases, request(2_000, 1, 100)).unwrap();
    let leased = batch.entries[0].clone();
    let retry = Completion::Retry {
        reason: "HTTP 503".into(),
        status: Some(503),
        retry_after_ms: None,
    };
    let results = vec![(leased.clone(), Completion::Accepted), (leased, retry)];
    let report = tenant
        .complete_leased(&leases, 1, 3_000, results, &policy(&[10]))
        .unwrap();
    assert_eq!(
        (report.accepted, report.retried, report.repeated),
        (1, 0, 1)
    );
    assert_eq!(tenant.queued_total(), 0, "not queued again");
    assert_eq!(tenant.lane_stats()[0].1.depth, 0);
    assert_eq!(tenant.lane_stats()[1].1.depth, 0);
    assert_eq!(tenant.counts().submitted, 1);
}

#[test]
fn a_stale_generation_cannot_complete() {
    // Goal: after a new generation takes over, the old generation's completion is refused and changes nothing.
    let (_dir, _store, tenant) = open();
    tenant.enqueue(vec![gift("s", Lane::Live)]).unwrap();
    let leases = LeaseTable::new();
    let old = tenant.lease_ready(&leases, request(2_000, 1, 10)).unwrap();
    assert_eq!(leases.take_over(2), 1);
    let new = tenant.lease_ready(&leases, request(2_001, 2, 10)).unwrap();
    assert_eq!(
        seqs(&new),
        seqs(&old),
        "the new generation re-leases it at once"
    );
    let report = tenant
        .complete_leased(
            &leases,
            1,
            2_100,
            vec![(old.entries[0].clone(), Completion::Accepted)],
            &policy(&[10]),
        )
        .unwrap();
    assert_eq!((report.refused_stale, report.accepted), (1, 0));
    assert_eq!(tenant.queued_total(), 1);
    assert_eq!(tenant.counts().submitted, 0);
    let report = tenant
        .complete_leased(
            &leases,
            2,
            2_200,
            vec![(new.entries[0].clone(), Completion::Accepted)],
            &policy(&[10]),
        )
        .unwrap();
    assert_eq!(report.accepted, 1);
    assert_eq!(queued_seqs(&tenant), Vec::<u64>::new());
}

#[test]
fn call_times_are_read_back_in_order() {
    // Goal: the budget window loads exactly the call times at or after `since`.
    let (_dir, _store, tenant) = open();
    for at_ms in [50, 10, 30, 30] {
        tenant.record_call(at_ms).unwrap();
    }
    assert_eq!(tenant.call_times_since(30).unwrap(), [30, 30, 50]);
    assert_eq!(tenant.call_times_since(0).unwrap().len(), 4);
}

#[test]
fn entries_failing_together_retry_together() {
    // Goal: the entries of one failed call get one jittered delay, so they go again as one batch.
    let (_dir, _store, tenant) = open();
    tenant
        .enqueue((0..5).map(|n| gift(&format!("t{n}"), Lane::Live)).collect())
        .unwrap();
    let leases = LeaseTable::new();
    let batch = tenant.lease_ready(&leases, request(2_000, 1, 10)).unwrap();
    let fail = Completion::Retry {
        reason: "503".into(),
        status: Some(503),
        retry_after_ms: None,
    };
    let results = batch
        .entries
        .iter()
        .map(|leased| (leased.clone(), fail.clone()))
        .collect();
    tenant
        .complete_leased(&leases, 1, 2_000, results, &policy(&[10_000]))
        .unwrap();
    let times: Vec<u64> = tenant
        .scan_lane(Lane::Retry, 10)
        .unwrap()
        .iter()
        .map(|(_, queued)| queued.not_before_ms)
        .collect();
    assert_eq!(times.len(), 5);
    assert!(times.iter().all(|&at| at == times[0]), "{times:?}");
    let again = tenant
        .lease_ready(&leases, request(times[0], 1, 10))
        .unwrap();
    assert_eq!(again.entries.len(), 5);
}

#[test]
#[ignore = "measurement: lease cost over a 10,000-entry queue; run with --ignored --nocapture"]
fn lease_cost_over_ten_thousand_entries() {
    // Goal: measure one lease of 100 over 10,000 queued 2 KB gifts (the scan bound's cost).
    let (_dir, _store, tenant) = open();
    let padding = "x".repeat(2_000);
    for chunk in 0..10 {
        let entries = (0..1_000)
            .map(|n| {
                let mut entry = gift(&format!("m{chunk}_{n}"), Lane::Live);
                entry.fact.body_json = format!("{{\"pad\":\"{padding}\"}}");
                entry
            })
            .collect();
        tenant.enqueue(entries).unwrap();
    }
    let leases = LeaseTable::new();
    tenant.inner().settle().unwrap(); // the enqueues are applied: measure the lease alone
    for round in 0..3 {
        let started = std::time::Instant::now();
        let batch = tenant.lease_ready(&leases, request(2_000, 1, 100)).unwrap();
        let elapsed = started.elapsed();
        assert_eq!(batch.entries.len(), 100);
        println!("lease {round} of 100 over 10,000 queued 2 KB entries: {elapsed:?}");
    }
}

mod headers {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn entry_headers_read_what_full_decoding_reads(
            source in ".{0,12}", source_id in ".{0,20}", key in ".{0,20}",
            ts in ".{0,10}", body in ".{0,300}", attempts: u32, enq: u64, nb: u64,
            lane in prop::sample::select(Lane::ALL.to_vec()),
            kind in prop::sample::select(vec![RecordKind::Gift, RecordKind::Contact, RecordKind::Refund]),
        ) {
            // Goal: the borrowed header of a stored entry has the same kind, lane, record, source and not_before as the entry.
            let fact = EntryFact { kind, source, source_id, idempotency_key: key, lane,
                transaction_source: ts, body_json: body };
            let entry = QueueEntry { fact, attempts, enqueued_at_ms: enq, not_before_ms: nb };
            let scanned = Scanned::read(7, sled::IVec::from(encode(&entry).unwrap())).unwrap();
            prop_assert_eq!((scanned.kind, scanned.lane, scanned.not_before_ms, scanned.seq), (kind, lane, nb, 7));
            prop_assert_eq!(scanned.record, hash_of((kind, entry.fact.source.as_str(), entry.fact.source_id.as_str())));
            prop_assert_eq!(scanned.transaction_source, hash_of(entry.fact.transaction_source.as_str()));
        }
    }
}

#[test]
fn a_long_queue_still_keeps_order_across_lanes() {
    // Goal: with 1,000 live entries (more than the first scan prefix), a live entry whose record has an earlier entry backing off in the retry lane is not leased; the others are, 100 at a time.
    let (_dir, _store, tenant) = open();
    tenant.enqueue(vec![gift("a", Lane::Live)]).unwrap();
    let leases = LeaseTable::new();
    let first = tenant.lease_ready(&leases, request(2_000, 1, 100)).unwrap();
    let fail = Completion::Retry {
        reason: "503".into(),
        status: Some(503),
        retry_after_ms: None,
    };
    tenant
        .complete_leased(
            &leases,
            1,
            2_000,
            vec![(first.entries[0].clone(), fail)],
            &policy(&[60_000]),
        )
        .unwrap();
    let mut later = entry(RecordKind::Gift, "a", "k-a-2", Lane::Live, "Stripe");
    later.fact.body_json = "second fact of record a".into();
    let mut entries = vec![later];
    entries.extend((0..999).map(|n| gift(&format!("n{n}"), Lane::Live)));
    tenant.enqueue(entries).unwrap();
    let mut leased = 0;
    loop {
        let batch = tenant.lease_ready(&leases, request(3_000, 1, 100)).unwrap();
        if batch.entries.is_empty() {
            break;
        }
        assert!(batch.entries.len() <= 100);
        assert!(
            batch
                .entries
                .iter()
                .all(|leased| leased.entry.fact.source_id != "a"),
            "record a must wait for its retry"
        );
        leased += batch.entries.len();
    }
    assert_eq!(leased, 999);
}

#[test]
fn the_backfill_turn_leases_backfill_gifts_ahead_of_live_ones_but_never_a_contact() {
    // Goal: with `backfill_first`, a group comes from the backfill lane (gifts, up to batch_max) even while live gifts wait; a backfill contact entry is left to the usual lease (its record's order may involve other lanes); without the turn, live goes first.
    let (_dir, _store, tenant) = open();
    let mut entries: Vec<NewEntry> = (0..5)
        .map(|n| gift(&format!("live{n}"), Lane::Live))
        .collect();
    entries.push(entry(
        RecordKind::Contact,
        "cus_1",
        "c-1",
        Lane::Backfill,
        "Stripe",
    ));
    entries.extend((0..5).map(|n| gift(&format!("old{n}"), Lane::Backfill)));
    tenant.enqueue(entries).unwrap();
    let leases = LeaseTable::new();
    let usual = tenant.lease_ready(&leases, request(2_000, 1, 3)).unwrap();
    assert!(usual.entries.iter().all(|leased| leased.lane == Lane::Live));
    assert_eq!(usual.entries.len(), 3);
    let turn = LeaseRequest {
        backfill_first: true,
        ..request(2_000, 1, 3)
    };
    let backfill = tenant.lease_ready(&leases, turn).unwrap();
    assert_eq!(backfill.entries.len(), 3);
    assert!(backfill
        .entries
        .iter()
        .all(|leased| leased.lane == Lane::Backfill && leased.entry.fact.kind == RecordKind::Gift));
    // The rest of the backfill gifts, then nothing but the contact is left in that lane:
    // the turn falls back to the usual lease (the two live gifts left).
    let more = tenant.lease_ready(&leases, turn).unwrap();
    assert_eq!(more.entries.len(), 2);
    let fallback = tenant.lease_ready(&leases, turn).unwrap();
    assert!(fallback
        .entries
        .iter()
        .all(|leased| leased.lane == Lane::Live));
    assert_eq!(fallback.entries.len(), 2);
}

#[test]
fn a_short_group_of_backfill_gifts_waits_on_its_turn_and_live_goes_instead() {
    // Goal: while a backfill is still reading its file (`backfill_min_gifts` = batch_max), its turn with fewer gifts than that leases live entries instead of nothing (live is never starved by a backfill waiting to fill a batch); once the minimum is 1 the short group goes.
    let (_dir, _store, tenant) = open();
    // Another transaction source, so the backfill gifts cannot ride in the live batch.
    let mut entries: Vec<NewEntry> = (0..3)
        .map(|n| gift(&format!("live{n}"), Lane::Live))
        .collect();
    entries.extend((0..5).map(|n| {
        let id = format!("old{n}");
        entry(
            RecordKind::Gift,
            &id,
            &format!("k-{id}"),
            Lane::Backfill,
            "History",
        )
    }));
    tenant.enqueue(entries).unwrap();
    let leases = LeaseTable::new();
    let filling = LeaseRequest {
        backfill_first: true,
        backfill_min_gifts: 100,
        ..request(2_000, 1, 100)
    };
    let batch = tenant.lease_ready(&leases, filling).unwrap();
    assert_eq!(batch.entries.len(), 3);
    assert!(batch.entries.iter().all(|leased| leased.lane == Lane::Live));
    // Only the short backfill group is left: it waits while the file is being read…
    let waiting = tenant.lease_ready(&leases, filling).unwrap();
    assert!(waiting.entries.is_empty());
    // …and goes once it is not.
    let read = LeaseRequest {
        backfill_min_gifts: 1,
        ..filling
    };
    let last = tenant.lease_ready(&leases, read).unwrap();
    assert_eq!(last.entries.len(), 5);
}

#[test]
fn a_call_on_lives_reserve_leases_live_entries_and_never_a_backfill_group() {
    // Goal: with `live_only` (a call on live's reserve) the lease takes the ready live entries, and once only backfill entries are left it leases nothing (they wait for an ordinary call, which takes them).
    let (_dir, _store, tenant) = open();
    let mut entries: Vec<NewEntry> = (0..2)
        .map(|n| gift(&format!("live{n}"), Lane::Live))
        .collect();
    entries.extend((0..4).map(|n| {
        let id = format!("old{n}");
        entry(
            RecordKind::Gift,
            &id,
            &format!("k-{id}"),
            Lane::Backfill,
            "History",
        )
    }));
    tenant.enqueue(entries).unwrap();
    let leases = LeaseTable::new();
    let reserve = LeaseRequest {
        live_only: true,
        ..request(2_000, 1, 100)
    };
    let live = tenant.lease_ready(&leases, reserve).unwrap();
    assert_eq!(live.entries.len(), 2);
    assert!(live.entries.iter().all(|leased| leased.lane == Lane::Live));
    let nothing = tenant.lease_ready(&leases, reserve).unwrap();
    assert!(nothing.entries.is_empty(), "{:?}", nothing.entries);
    let ordinary = tenant.lease_ready(&leases, request(2_000, 1, 100)).unwrap();
    assert_eq!(ordinary.entries.len(), 4);
    assert!(ordinary
        .entries
        .iter()
        .all(|leased| leased.lane == Lane::Backfill));
}
