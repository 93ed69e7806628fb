//! Leasing contact groups (issue 12, "Contacts in bulk"): with batching, up to `batch_max`
//! contact records of one transaction source (= `referenceSource`), each with its
//! consecutive ready updates; without, one record's updates as before.

use std::collections::BTreeSet;

use super::*;
use crate::store::{EntryFact, NewEntry, Store, StoreOptions};

fn contact(id: &str, key: &str, lane: Lane, reference_source: &str) -> NewEntry {
    NewEntry {
        fact: EntryFact {
            kind: RecordKind::Contact,
            source: "constant_contact".into(),
            source_id: id.into(),
            idempotency_key: key.into(),
            lane,
            transaction_source: reference_source.into(),
            body_json: format!("{{\"referenceId\":\"{id}\",\"k\":\"{key}\"}}"),
        },
        aliases: Vec::new(),
        now_ms: 1_000,
    }
}

fn live(id: &str, key: &str) -> NewEntry {
    contact(id, key, Lane::Live, "ConstantContact")
}

fn other_kind(kind: RecordKind, id: &str) -> NewEntry {
    NewEntry {
        fact: EntryFact {
            kind,
            source: "stripe".into(),
            source_id: id.into(),
            idempotency_key: format!("k-{id}"),
            lane: Lane::Live,
            transaction_source: "Stripe".into(),
            body_json: "{}".into(),
        },
        aliases: Vec::new(),
        now_ms: 1_000,
    }
}

fn open() -> (tempfile::TempDir, Store, TenantStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let tenant = store.tenant("t").unwrap();
    (dir, store, tenant)
}

fn request(now_ms: u64, batch_max: usize, contact_batch: bool) -> LeaseRequest {
    LeaseRequest {
        now_ms,
        generation: 1,
        batch_max,
        lease_timeout_ms: 60_000,
        contact_batch,
        backfill_first: false,
        backfill_min_gifts: 1,
        live_only: false,
    }
}

/// The idempotency keys of a batch, in send order.
fn keys(batch: &LeaseBatch) -> Vec<String> {
    batch
        .entries
        .iter()
        .map(|leased| leased.entry.fact.idempotency_key.clone())
        .collect()
}

fn records(batch: &LeaseBatch) -> BTreeSet<String> {
    batch
        .entries
        .iter()
        .map(|leased| leased.entry.fact.source_id.clone())
        .collect()
}

#[test]
fn a_hundred_distinct_contacts_of_one_reference_source_make_one_group() {
    // Goal: 150 distinct contacts of one referenceSource lease as one group of 100 records (batch_max), then the other 50 — not 150 groups of one.
    let (_dir, _store, tenant) = open();
    let entries = (0..150)
        .map(|n| live(&format!("c{n:03}"), &format!("k{n:03}")))
        .collect();
    tenant.enqueue(entries).unwrap();
    let leases = LeaseTable::new();
    let first = tenant
        .lease_ready(&leases, request(2_000, 100, true))
        .unwrap();
    assert_eq!(first.entries.len(), 100);
    assert_eq!(records(&first).len(), 100, "one entry per record");
    let expected: Vec<String> = (0..100).map(|n| format!("k{n:03}")).collect();
    assert_eq!(keys(&first), expected, "queue order");
    assert!(first.more_ready);
    let second = tenant
        .lease_ready(&leases, request(2_000, 100, true))
        .unwrap();
    assert_eq!(second.entries.len(), 50);
    assert!(!second.more_ready);
    assert!(tenant
        .lease_ready(&leases, request(2_000, 100, true))
        .unwrap()
        .entries
        .is_empty());
}

#[test]
fn each_reference_source_gets_groups_of_its_own() {
    // Goal: contacts of two referenceSources, interleaved in the queue, never share a group (Virtuous takes one referenceSource per batch).
    let (_dir, _store, tenant) = open();
    tenant
        .enqueue(vec![
            contact("a1", "a1", Lane::Live, "ConstantContact"),
            contact("m1", "m1", Lane::Live, "Mailchimp"),
            contact("a2", "a2", Lane::Live, "ConstantContact"),
            contact("m2", "m2", Lane::Live, "Mailchimp"),
            contact("a3", "a3", Lane::Live, "ConstantContact"),
        ])
        .unwrap();
    let leases = LeaseTable::new();
    let first = tenant
        .lease_ready(&leases, request(2_000, 100, true))
        .unwrap();
    assert_eq!(keys(&first), ["a1", "a2", "a3"]);
    assert!(first.more_ready);
    let second = tenant
        .lease_ready(&leases, request(2_000, 100, true))
        .unwrap();
    assert_eq!(keys(&second), ["m1", "m2"]);
}

#[test]
fn a_records_updates_travel_with_it_oldest_first() {
    // Goal: a record's 3 updates (one of them backing off in the retry lane, scanned after the live ones) come in the group together, oldest first, next to each other; records keep queue order.
    let (_dir, _store, tenant) = open();
    tenant
        .enqueue(vec![contact("c1", "c1-u1", Lane::Retry, "ConstantContact")])
        .unwrap();
    tenant
        .enqueue(vec![
            live("c2", "c2-u1"),
            live("c1", "c1-u2"),
            live("c3", "c3-u1"),
            live("c1", "c1-u3"),
        ])
        .unwrap();
    let leases = LeaseTable::new();
    let batch = tenant
        .lease_ready(&leases, request(2_000, 100, true))
        .unwrap();
    // Live is scanned first: c2 (its earliest) starts the group; c1 joins at its retry entry.
    assert_eq!(keys(&batch), ["c2-u1", "c3-u1", "c1-u1", "c1-u2", "c1-u3"]);
    assert!(!batch.more_ready);
    // A record's updates are capped at batch_max and stay a prefix (the oldest).
    let (_dir, _store, tenant) = open();
    let leases = LeaseTable::new();
    let updates = (0..5).map(|n| live("c1", &format!("u{n}"))).collect();
    tenant.enqueue(updates).unwrap();
    tenant.enqueue(vec![live("c2", "c2-u1")]).unwrap();
    let capped = tenant
        .lease_ready(&leases, request(2_000, 3, true))
        .unwrap();
    assert_eq!(keys(&capped), ["u0", "u1", "u2", "c2-u1"]);
    assert!(capped.more_ready);
}

#[test]
fn without_batching_a_group_is_one_record_as_before() {
    // Goal: contact_batch off leases one record's consecutive updates per group (one Contact/Transaction), the next record in the next group.
    let (_dir, _store, tenant) = open();
    tenant
        .enqueue(vec![
            live("c1", "c1-u1"),
            live("c2", "c2-u1"),
            live("c1", "c1-u2"),
            live("c1", "c1-u3"),
        ])
        .unwrap();
    let leases = LeaseTable::new();
    let first = tenant
        .lease_ready(&leases, request(2_000, 100, false))
        .unwrap();
    assert_eq!(keys(&first), ["c1-u1", "c1-u2", "c1-u3"]);
    assert!(first.more_ready);
    let second = tenant
        .lease_ready(&leases, request(2_000, 100, false))
        .unwrap();
    assert_eq!(keys(&second), ["c2-u1"]);
}

#[test]
fn order_per_record_holds_with_gifts_and_refunds_between() {
    // Goal: with gifts and a refund interleaved, the contact group takes contacts only; an update behind a held one waits (and so do its later ones); a record whose earlier update is leased sends nothing until that one completes.
    let (_dir, _store, tenant) = open();
    tenant
        .enqueue(vec![
            live("c1", "c1-u1"),
            other_kind(RecordKind::Gift, "g1"),
            live("c2", "c2-u1"),
            other_kind(RecordKind::Refund, "r1"),
            live("c3", "c3-u1"),
            live("c3", "c3-u2"),
            live("c3", "c3-u3"),
            live("c4", "c4-u1"),
        ])
        .unwrap();
    let queued = tenant.scan_lane(Lane::Live, 20).unwrap();
    // c3-u2 is held until 9,000: c3-u3 waits with it, c3-u1 goes.
    let mut held = tenant
        .get_queue_entry(Lane::Live, queued[5].0)
        .unwrap()
        .unwrap();
    held.not_before_ms = 9_000;
    let inner = tenant.inner();
    inner
        .tree
        .insert(
            inner.keys.queue_entry(Lane::Live, queued[5].0),
            crate::store::codec::encode(&held).unwrap(),
        )
        .unwrap();
    let leases = LeaseTable::new();
    let contacts = tenant
        .lease_ready(&leases, request(2_000, 100, true))
        .unwrap();
    assert_eq!(keys(&contacts), ["c1-u1", "c2-u1", "c3-u1", "c4-u1"]);
    assert!(contacts.more_ready, "the gift and the refund wait");
    assert_eq!(contacts.next_ready_at_ms, Some(9_000));
    // While c1-u1 is in flight, a new update of c1 is not leased; c5 is.
    tenant
        .enqueue(vec![live("c1", "c1-u2"), live("c5", "c5-u1")])
        .unwrap();
    let gifts = tenant
        .lease_ready(&leases, request(2_000, 100, true))
        .unwrap();
    assert_eq!(keys(&gifts), ["k-g1"]);
    let refund = tenant
        .lease_ready(&leases, request(2_000, 100, true))
        .unwrap();
    assert_eq!(keys(&refund), ["k-r1"]);
    let next = tenant
        .lease_ready(&leases, request(2_000, 100, true))
        .unwrap();
    assert_eq!(keys(&next), ["c5-u1"], "c1-u2 waits for c1-u1");
    // Once the first group is done, c1-u2 goes; at 9,000 c3's held update and the one
    // behind it go too.
    let accepted = contacts
        .entries
        .iter()
        .map(|leased| (leased.clone(), Completion::Accepted))
        .collect();
    let done = tenant
        .complete_leased(
            &leases,
            1,
            2_000,
            accepted,
            &crate::retry::RetryPolicy::from_settings(&[1_000], 0),
        )
        .unwrap();
    assert_eq!(done.accepted, 4);
    let later = tenant
        .lease_ready(&leases, request(9_000, 100, true))
        .unwrap();
    assert_eq!(keys(&later), ["c3-u2", "c3-u3", "c1-u2"]);
}

#[test]
fn a_call_on_lives_reserve_takes_live_contacts_and_leaves_backfill_ones() {
    // Goal: on live's reserve (`live_only`) a Contact/Batch takes the live contact records only — backfill-lane contacts of the same reference source wait for an ordinary call, which takes them.
    let (_dir, _store, tenant) = open();
    tenant
        .enqueue(vec![
            contact("old-1", "k-old-1", Lane::Backfill, "ConstantContact"),
            live("new-1", "k-new-1"),
            contact("old-2", "k-old-2", Lane::Backfill, "ConstantContact"),
            live("new-2", "k-new-2"),
        ])
        .unwrap();
    let leases = LeaseTable::new();
    let reserve = LeaseRequest {
        live_only: true,
        ..request(2_000, 100, true)
    };
    let live_batch = tenant.lease_ready(&leases, reserve).unwrap();
    assert_eq!(keys(&live_batch), vec!["k-new-1", "k-new-2"]);
    assert!(tenant
        .lease_ready(&leases, reserve)
        .unwrap()
        .entries
        .is_empty());
    let ordinary = tenant
        .lease_ready(&leases, request(2_000, 100, true))
        .unwrap();
    assert_eq!(keys(&ordinary), vec!["k-old-1", "k-old-2"]);
}
