//! Key layout inside a tenant's key space.
//!
//! Every key is `{tenant prefix}{section byte}{…}`. The tenant prefix is empty when the tenant
//! has its own tree, and `u16 BE length + tenant id` in the shared-tree layout (the length
//! makes prefixes unambiguous: tenant `a` never sees keys of tenant `ab`). Integers are
//! big-endian so that byte order equals numeric order for ordered scans.

use super::{Lane, RecordKind};

/// The section bytes. Part of the on-disk format: never renumber.
pub mod section {
    pub const QUEUE: u8 = 0x10;
    pub const RECORD: u8 = 0x20;
    pub const ALIAS: u8 = 0x21;
    /// Schema v1 dedup keys (no longer written: the record is the dedup mark). Reserved.
    pub const DEDUP: u8 = 0x30;
    pub const DEAD_LETTER: u8 = 0x40;
    pub const CHECKPOINT: u8 = 0x50;
    pub const CALL_LOG: u8 = 0x60;
    pub const ALERT: u8 = 0x70;
    /// An alert's lifecycle (resolved, acknowledged) beside its [`super::super::Alert`], whose
    /// bytes are pinned: `{code}` as in [`ALERT`].
    pub const ALERT_STATE: u8 = 0x71;
    /// Alert notifications waiting for the sinks (`store::alert_outbox`): `{seq BE}` → an
    /// `AlertNotice`; JSON. Written in the same batch as the alert change it tells of.
    pub const ALERT_OUTBOX: u8 = 0x72;
    /// What the sinks were last told of a code (`{code}` → a `NoticeState`; JSON): the
    /// cooldown's memory.
    pub const ALERT_NOTICE_STATE: u8 = 0x73;
    pub const COUNTS: u8 = 0x80;
    /// Records submitted but not yet confirmed: the reconciler's work list (written by the
    /// submitter's completion, removed by confirmation). Key = the record key's tail.
    pub const UNCONFIRMED: u8 = 0x22;
    /// Records by donor email (lowercased): `{email}\0{record key tail}` → empty. Written
    /// with the record whenever an entry carrying an email is enqueued for it.
    pub const RECORD_BY_EMAIL: u8 = 0x23;
    /// Records by Virtuous id: `{id}\0{record key tail}` → empty. Written with the record's
    /// confirmation.
    pub const RECORD_BY_VIRTUOUS_ID: u8 = 0x24;
    /// Source-specific state (Stripe subscription link parts…), `{name}\0{key}`.
    pub const SOURCE_STATE: u8 = 0x52;
    /// Inbound events kept because they could not be understood (`store::unparsed_ops`).
    pub const INBOUND_UNPARSED: u8 = 0x54;
    /// A poller's state (pause, failures, quota count), `{source}`; JSON (`store::poll_ops`).
    pub const POLLER: u8 = 0x55;
    /// A poller's run reports, `{source}\0{run seq BE}`; JSON, the last 50 kept.
    pub const POLL_RUN: u8 = 0x56;
    /// Parity of hybrid sources: `{source}\0{hour BE}\0{idempotency key}` → which path saw
    /// the fact first and whether the other one saw it too; JSON.
    pub const PARITY: u8 = 0x57;
    /// `{idempotency key}` → the hour of its [`PARITY`] entry (the second path finds it).
    pub const PARITY_INDEX: u8 = 0x58;
    /// Pull's change log: `{seq BE}` → a `pull::StoredChange`; JSON (`store::pull_ops`).
    pub const CHANGE_LOG: u8 = 0x59;
    /// The newest logged version of each Virtuous record: `{kind}\0{id}`; JSON.
    pub const PULL_LATEST: u8 = 0x5A;
    /// A destination's state (pause, counts, last error): `{name}`; JSON.
    pub const DEST_STATE: u8 = 0x5B;
    /// A destination's dead letters: `{name}\0{seq BE}`; JSON.
    pub const DEST_DEAD: u8 = 0x5C;
    /// Changes to re-read (a webhook lacked fields): `{kind}\0{id}`; JSON.
    pub const PULL_REREAD: u8 = 0x5D;
    /// Two-way links: `{pair}\0{partner id}` → `two_way::Link`; JSON (`store::two_way_ops`).
    pub const TW_LINK: u8 = 0x61;
    /// `{pair}\0{Virtuous id}` → the partner id of its link.
    pub const TW_BY_VIRTUOUS: u8 = 0x62;
    /// Links with writes pending: `{pair}\0{partner id}` → empty (the pair loop's work list).
    pub const TW_PENDING: u8 = 0x63;
    /// Open conflicts: `{conflict id}` → `two_way::Conflict`; JSON.
    pub const TW_CONFLICT: u8 = 0x64;
    /// A pair's counters and cross-match job: `{pair}\0counts`, `{pair}\0cross-match`; JSON.
    pub const TW_STATE: u8 = 0x65;
    /// A pair's dead letters: `{pair}\0{seq BE}`; JSON.
    pub const TW_DEAD: u8 = 0x66;
    /// Cross-match rows and report: `{pair}\0{p|v|r}\0{id or seq BE}`; JSON.
    pub const TW_XMATCH: u8 = 0x67;
    /// A backfill job's rejected rows: `{job}\0{row BE}`; JSON.
    pub const BACKFILL_REJECT: u8 = 0x68;
    /// A backfill job's queued entries, for its progress: `{job}\0{row BE}{index}`; a
    /// record reference.
    pub const BACKFILL_ROW: u8 = 0x69;
    /// Money facts of gifts Virtuous accepted: `{source}\0{day YYYY-MM-DD}\0{transaction
    /// id}` → a `money::StoredMoney`; JSON (`store::money_ops`). Days sort as text.
    pub const MONEY_FACT: u8 = 0x6A;
    /// Beside the money facts, two kinds of keys told apart by their first byte:
    /// `i{source}\0{transaction id}` → the day of its [`MONEY_FACT`] (a reversal finds its
    /// gift); `v{job}\0{Virtuous id}` → a `money::VirtuousRow` a running reconciliation
    /// read (removed when the job ends); JSON.
    pub const MONEY_AUX: u8 = 0x6B;
}

/// First byte after [`section::MONEY_AUX`]: a money fact's index entry.
const MONEY_INDEX_TAG: u8 = b'i';
/// First byte after [`section::MONEY_AUX`]: a reconciliation's Virtuous row.
const RECON_ROW_TAG: u8 = b'v';

/// Builds the keys of one tenant's key space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpace {
    prefix: Vec<u8>,
}

impl KeySpace {
    /// A key space that owns its whole tree (tree-per-tenant layout).
    pub fn whole_tree() -> KeySpace {
        KeySpace { prefix: Vec::new() }
    }

    /// A tenant's key space inside a shared tree.
    pub fn tenant_prefixed(tenant_id: &str) -> KeySpace {
        let id = tenant_id.as_bytes();
        let len = u16::try_from(id.len()).expect("tenant ids are validated far below 64 KiB");
        let mut prefix = Vec::with_capacity(2 + id.len());
        prefix.extend_from_slice(&len.to_be_bytes());
        prefix.extend_from_slice(id);
        KeySpace { prefix }
    }

    /// The prefix of everything the tenant owns (empty = the whole tree).
    pub fn tenant_prefix(&self) -> &[u8] {
        &self.prefix
    }

    fn key(&self, section: u8, capacity: usize) -> Vec<u8> {
        let mut key = Vec::with_capacity(self.prefix.len() + 1 + capacity);
        key.extend_from_slice(&self.prefix);
        key.push(section);
        key
    }

    pub fn section_prefix(&self, section: u8) -> Vec<u8> {
        self.key(section, 0)
    }

    /// Lane entries sort by lane (priority) then by seq.
    pub fn queue_entry(&self, lane: Lane, seq: u64) -> Vec<u8> {
        let mut key = self.lane_prefix(lane);
        key.extend_from_slice(&seq.to_be_bytes());
        key
    }

    pub fn lane_prefix(&self, lane: Lane) -> Vec<u8> {
        let mut key = self.key(section::QUEUE, 9);
        key.push(lane as u8);
        key
    }

    /// `kind u8, source length u16 BE, source, source id`: unambiguous for any strings.
    pub fn record(&self, kind: RecordKind, source: &str, source_id: &str) -> Vec<u8> {
        let mut key = self.key(section::RECORD, 3 + source.len() + source_id.len());
        key.push(record_kind_byte(kind));
        let source_len = u16::try_from(source.len()).unwrap_or(u16::MAX);
        key.extend_from_slice(&source_len.to_be_bytes());
        key.extend_from_slice(&source.as_bytes()[..usize::from(source_len)]);
        key.extend_from_slice(source_id.as_bytes());
        key
    }

    /// The key under an index section (`RECORD_BY_EMAIL`, `RECORD_BY_VIRTUOUS_ID`) that
    /// points `value` to the record `record_key` (one of [`KeySpace::record`]).
    pub fn record_index(&self, index: u8, value: &str, record_key: &[u8]) -> Vec<u8> {
        let tail = &record_key[self.prefix.len() + 1..];
        let mut key = self.record_index_prefix(index, value);
        key.extend_from_slice(tail);
        key
    }

    /// Every index key of `value` starts with this.
    pub fn record_index_prefix(&self, index: u8, value: &str) -> Vec<u8> {
        let mut key = self.key(index, value.len() + 1);
        key.extend_from_slice(value.as_bytes());
        key.push(0);
        key
    }

    /// The record key an index key (of `value`) points to.
    pub fn record_of_index_key(&self, index: u8, value: &str, index_key: &[u8]) -> Vec<u8> {
        let tail = &index_key[self.record_index_prefix(index, value).len()..];
        let mut key = self.key(section::RECORD, tail.len());
        key.extend_from_slice(tail);
        key
    }

    pub fn alias(&self, alias: &str) -> Vec<u8> {
        self.string_key(section::ALIAS, alias)
    }

    pub fn dedup(&self, idempotency_key: &str) -> Vec<u8> {
        self.string_key(section::DEDUP, idempotency_key)
    }

    pub fn dead_letter(&self, id: u64) -> Vec<u8> {
        self.u64_key(section::DEAD_LETTER, id)
    }

    pub fn checkpoint(&self, name: &str) -> Vec<u8> {
        self.string_key(section::CHECKPOINT, name)
    }

    /// Call-log keys sort by time; `unique` separates calls recorded in the same millisecond.
    pub fn call(&self, at_ms: u64, unique: u64) -> Vec<u8> {
        let mut key = self.key(section::CALL_LOG, 16);
        key.extend_from_slice(&at_ms.to_be_bytes());
        key.extend_from_slice(&unique.to_be_bytes());
        key
    }

    /// Same tail as [`KeySpace::record`], under [`section::UNCONFIRMED`].
    pub fn unconfirmed(&self, kind: RecordKind, source: &str, source_id: &str) -> Vec<u8> {
        let mut key = self.record(kind, source, source_id);
        key[self.prefix.len()] = section::UNCONFIRMED;
        key
    }

    /// `{name}\0{key}` under [`section::SOURCE_STATE`] (names never contain NUL).
    pub fn source_state(&self, name: &str, key: &str) -> Vec<u8> {
        let mut full = self.key(section::SOURCE_STATE, name.len() + 1 + key.len());
        full.extend_from_slice(name.as_bytes());
        full.push(0);
        full.extend_from_slice(key.as_bytes());
        full
    }

    /// `{text}` under `section`.
    pub fn text_key(&self, section: u8, text: &str) -> Vec<u8> {
        self.string_key(section, text)
    }

    /// `{source}\0` + `tail` under `section` (sources never contain NUL).
    pub fn source_key(&self, section: u8, source: &str, tail: &[u8]) -> Vec<u8> {
        let mut key = self.key(section, source.len() + 1 + tail.len());
        key.extend_from_slice(source.as_bytes());
        key.push(0);
        key.extend_from_slice(tail);
        key
    }

    /// `{source}\0{day}\0{transaction id}` under [`section::MONEY_FACT`].
    pub fn money_fact(&self, source: &str, day: &str, transaction_id: &str) -> Vec<u8> {
        let mut key = self.money_day_prefix(source, day);
        key.extend_from_slice(transaction_id.as_bytes());
        key
    }

    /// `{source}\0{day}\0`: the money facts of one source and day.
    pub fn money_day_prefix(&self, source: &str, day: &str) -> Vec<u8> {
        let mut key = self.source_key(section::MONEY_FACT, source, day.as_bytes());
        key.push(0);
        key
    }

    /// `i{source}\0{transaction id}` under [`section::MONEY_AUX`].
    pub fn money_index(&self, source: &str, transaction_id: &str) -> Vec<u8> {
        let mut key = self.key(section::MONEY_AUX, 2 + source.len() + transaction_id.len());
        key.push(MONEY_INDEX_TAG);
        key.extend_from_slice(source.as_bytes());
        key.push(0);
        key.extend_from_slice(transaction_id.as_bytes());
        key
    }

    /// `v{job}\0{Virtuous id}` under [`section::MONEY_AUX`] (`virtuous_id` empty: the job's
    /// prefix).
    pub fn recon_row(&self, job_id: &str, virtuous_id: &str) -> Vec<u8> {
        let mut key = self.key(section::MONEY_AUX, 2 + job_id.len() + virtuous_id.len());
        key.push(RECON_ROW_TAG);
        key.extend_from_slice(job_id.as_bytes());
        key.push(0);
        key.extend_from_slice(virtuous_id.as_bytes());
        key
    }

    pub fn alert(&self, code: &str) -> Vec<u8> {
        self.string_key(section::ALERT, code)
    }

    pub fn alert_state(&self, code: &str) -> Vec<u8> {
        self.string_key(section::ALERT_STATE, code)
    }

    /// `{seq BE}` under [`section::ALERT_OUTBOX`]: notices sort in the order written.
    pub fn alert_notice(&self, seq: u64) -> Vec<u8> {
        self.u64_key(section::ALERT_OUTBOX, seq)
    }

    pub fn alert_notice_state(&self, code: &str) -> Vec<u8> {
        self.string_key(section::ALERT_NOTICE_STATE, code)
    }

    /// Reads the seq back from an outbox key.
    pub fn seq_of_alert_notice_key(&self, key: &[u8]) -> Option<u64> {
        self.u64_at(key, 1)
    }

    pub fn counts(&self) -> Vec<u8> {
        self.key(section::COUNTS, 0)
    }

    /// `{number BE}` under `section`.
    fn u64_key(&self, section: u8, number: u64) -> Vec<u8> {
        let mut key = self.key(section, 8);
        key.extend_from_slice(&number.to_be_bytes());
        key
    }

    fn string_key(&self, section: u8, text: &str) -> Vec<u8> {
        let mut key = self.key(section, text.len());
        key.extend_from_slice(text.as_bytes());
        key
    }

    /// Reads the seq back from a queue key.
    pub fn seq_of_queue_key(&self, key: &[u8]) -> Option<u64> {
        self.u64_at(key, 2)
    }

    /// The big-endian integer that ends `key`, `after` bytes past the tenant prefix.
    fn u64_at(&self, key: &[u8], after: usize) -> Option<u64> {
        let tail = key.get(self.prefix.len() + after..)?;
        Some(u64::from_be_bytes(tail.try_into().ok()?))
    }

    /// Reads the time back from a call-log key.
    pub fn time_of_call_key(&self, key: &[u8]) -> Option<u64> {
        let start = self.prefix.len() + 1;
        let bytes = key.get(start..start + 8)?;
        Some(u64::from_be_bytes(bytes.try_into().ok()?))
    }
}

/// On-disk byte of a record kind (independent of the enum's declaration order).
pub fn record_kind_byte(kind: RecordKind) -> u8 {
    match kind {
        RecordKind::Gift => 1,
        RecordKind::Contact => 2,
        RecordKind::Refund => 3,
    }
}

/// The smallest key greater than every key starting with `prefix` (`None`: no upper bound).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_lane() -> impl Strategy<Value = Lane> {
        prop::sample::select(Lane::ALL.to_vec())
    }

    #[test]
    fn lanes_sort_by_priority_and_sections_do_not_overlap() {
        // Goal: live < retry < reconcile < backfill in key order, and a lane prefix holds only its lane.
        let keys = KeySpace::tenant_prefixed("t1");
        let mut all: Vec<Vec<u8>> = Lane::ALL
            .iter()
            .rev()
            .map(|&lane| keys.queue_entry(lane, 0))
            .collect();
        all.sort();
        let expected: Vec<Vec<u8>> = Lane::ALL
            .iter()
            .map(|&lane| keys.queue_entry(lane, 0))
            .collect();
        assert_eq!(all, expected);
        assert!(!keys
            .queue_entry(Lane::Retry, 5)
            .starts_with(&keys.lane_prefix(Lane::Live)));
        assert_eq!(
            keys.seq_of_queue_key(&keys.queue_entry(Lane::Backfill, 77)),
            Some(77)
        );
        assert_eq!(keys.time_of_call_key(&keys.call(1234, 9)), Some(1234));
    }

    #[test]
    fn prefix_end_bounds_the_prefix() {
        // Goal: prefix_end is the tight exclusive upper bound, and None for all-0xff prefixes.
        assert_eq!(prefix_end(&[1, 2]), Some(vec![1, 3]));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(&[]), None);
    }

    proptest! {
        #[test]
        fn queue_keys_sort_like_lane_then_seq(a_lane in any_lane(), a: u64, b_lane in any_lane(), b: u64) {
            // Goal: byte order of queue keys equals (lane, seq) order.
            let keys = KeySpace::tenant_prefixed("tenant");
            let ka = keys.queue_entry(a_lane, a);
            let kb = keys.queue_entry(b_lane, b);
            prop_assert_eq!(ka.cmp(&kb), (a_lane, a).cmp(&(b_lane, b)));
        }

        #[test]
        fn call_keys_sort_like_time_then_unique(a: u64, ua: u64, b: u64, ub: u64) {
            // Goal: big-endian call keys sort like the integers they encode.
            let keys = KeySpace::whole_tree();
            prop_assert_eq!(keys.call(a, ua).cmp(&keys.call(b, ub)), (a, ua).cmp(&(b, ub)));
        }

        #[test]
        fn tenant_prefixes_never_contain_each_other(a in "[a-z0-9-]{1,12}", b in "[a-z0-9-]{1,12}") {
            // Goal: in the shared layout no tenant's key space is inside another's.
            prop_assume!(a != b);
            let ka = KeySpace::tenant_prefixed(&a);
            let kb = KeySpace::tenant_prefixed(&b);
            prop_assert!(!ka.counts().starts_with(kb.tenant_prefix()));
            prop_assert!(!kb.dedup("x").starts_with(ka.tenant_prefix()));
        }

        #[test]
        fn money_keys_sort_by_day_and_never_mix(source in "[a-z]{1,8}", d1 in 1u8..29, d2 in 1u8..29, id in "[a-z0-9_]{0,8}") {
            // Goal: a source's money facts sort by day; index and row keys never share a prefix.
            let keys = KeySpace::tenant_prefixed("t");
            let day = |d: u8| format!("2026-02-{d:02}");
            let (a, b) = (keys.money_fact(&source, &day(d1), &id), keys.money_fact(&source, &day(d2), "zz"));
            prop_assert_eq!(a.cmp(&b).is_lt(), d1 < d2 || (d1 == d2 && id.as_str() < "zz"));
            prop_assert!(a.starts_with(&keys.money_day_prefix(&source, &day(d1))));
            prop_assert!(!keys.money_index(&source, &id).starts_with(&keys.recon_row(&source, "")));
            prop_assert!(!keys.recon_row(&source, &id).starts_with(&keys.money_index(&source, "")));
        }

        #[test]
        fn record_keys_are_unambiguous(s1 in ".{0,6}", i1 in ".{0,6}", s2 in ".{0,6}", i2 in ".{0,6}") {
            // Goal: distinct (source, source id) pairs never share a record key.
            prop_assume!((&s1, &i1) != (&s2, &i2));
            let keys = KeySpace::whole_tree();
            prop_assert_ne!(keys.record(RecordKind::Gift, &s1, &i1), keys.record(RecordKind::Gift, &s2, &i2));
        }
    }
}
