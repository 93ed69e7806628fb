//! The submitter's pure parts: leased entries → one Virtuous request (gift batch, merged
//! contact update, refund with the gift's Virtuous id), and a classified answer → one
//! completion per entry plus the batches to send again at once (splits).
//!
//! Bodies are the queued entries' exact JSON. Only two edits are ever made, both generic:
//! queued updates of one contact are merged field by field (objects recursively, newest value
//! wins, arrays and scalars replaced whole), and a refund's `reversedGiftId` is filled in.
//! A contact group of several records becomes one `Contact/Batch` (one item per record); a
//! record with a single update is sent as queued, byte for byte.

use serde_json::{Map, Value};

use crate::outcome::{BatchOutcome, Outcome};
use crate::ports::CrmWrite;
use crate::store::{Completion, LeasedEntry, RecordKind};

/// A request ready to send, or what to complete without a call.
#[derive(Debug, Default)]
pub struct Prepared {
    /// The request and, for each of its items in order, the entries behind it.
    pub call: Option<(CrmWrite, Vec<Vec<LeasedEntry>>)>,
    /// Completions that need no call (a refund waiting for its gift, a body that cannot be
    /// edited).
    pub settle_now: Vec<(LeasedEntry, Completion)>,
}

/// Longest wait between two looks at a refund's gift (confirmation can take days).
pub const REFUND_RECHECK_MAX_MS: u64 = 3_600_000;

/// When to look at a waiting refund's gift again: `recheck_min_ms` at first, then a tenth of
/// the time it has waited so far, at most [`REFUND_RECHECK_MAX_MS`] (a local read each time,
/// never a call).
pub fn refund_recheck_at_ms(enqueued_at_ms: u64, now_ms: u64, recheck_min_ms: u64) -> u64 {
    let waited_ms = now_ms.saturating_sub(enqueued_at_ms);
    let wait_ms = (waited_ms / 10).clamp(recheck_min_ms, REFUND_RECHECK_MAX_MS.max(recheck_min_ms));
    now_ms.saturating_add(wait_ms)
}

/// Builds the request for one leased group (see `store::queue_ops` for the grouping).
/// `gift_virtuous_id(source, source_id)` reads the gift record's Virtuous id (refunds); a
/// refund without one waits (see [`refund_recheck_at_ms`]). `contact_batch`: contacts go as
/// one `Contact/Batch` (else one record's `Contact/Transaction`, the other records wait).
pub fn prepare(
    group: Vec<LeasedEntry>,
    gift_virtuous_id: impl Fn(&str, &str) -> Option<String>,
    now_ms: u64,
    refund_recheck_min_ms: u64,
    contact_batch: bool,
) -> Prepared {
    let Some(first) = group.first() else {
        return Prepared::default();
    };
    match first.entry.fact.kind {
        RecordKind::Gift => prepare_gifts(group),
        RecordKind::Contact => prepare_contacts(group, contact_batch),
        RecordKind::Refund => {
            prepare_refund(group, gift_virtuous_id, now_ms, refund_recheck_min_ms)
        }
    }
}

/// Gifts of one `transactionSource`: one batch call, one item each.
fn prepare_gifts(group: Vec<LeasedEntry>) -> Prepared {
    let transaction_source = group[0].entry.fact.transaction_source.clone();
    let request = CrmWrite::GiftTransactions {
        transaction_source,
        bodies: group
            .iter()
            .map(|leased| leased.entry.fact.body_json.clone())
            .collect(),
    };
    let items = group.into_iter().map(|leased| vec![leased]).collect();
    Prepared {
        call: Some((request, items)),
        ..Prepared::default()
    }
}

/// A contact group's entries by record (`source`, `source_id`), records in the order they
/// first appear, each record's entries in group order (oldest first: see the leasing).
fn by_record(group: Vec<LeasedEntry>) -> Vec<Vec<LeasedEntry>> {
    let mut records: Vec<Vec<LeasedEntry>> = Vec::new();
    for leased in group {
        let fact = &leased.entry.fact;
        let same = |record: &&mut Vec<LeasedEntry>| {
            let first = &record[0].entry.fact;
            first.source == fact.source && first.source_id == fact.source_id
        };
        match records.iter_mut().find(same) {
            Some(record) => record.push(leased),
            None => records.push(vec![leased]),
        }
    }
    records
}

/// One record's leading updates as one body.
enum RecordBody {
    /// The leading object bodies merged (a single one as queued) and the entries behind it;
    /// `rest` (a body that is not an object, and every update after it) waits.
    Merged {
        body: String,
        taken: Vec<LeasedEntry>,
        rest: Vec<LeasedEntry>,
    },
    /// The record's first body is not a JSON object: it cannot be merged or batched.
    NotAnObject {
        leased: LeasedEntry,
        rest: Vec<LeasedEntry>,
    },
}

fn record_body(record: Vec<LeasedEntry>) -> RecordBody {
    let mut merged = Map::new();
    let mut taken: Vec<LeasedEntry> = Vec::new();
    let mut entries = record.into_iter();
    while let Some(leased) = entries.next() {
        match serde_json::from_str::<Value>(&leased.entry.fact.body_json) {
            Ok(Value::Object(fields)) => {
                merge_fields(&mut merged, fields);
                taken.push(leased);
            }
            // Not an object: it cannot be merged, so it goes alone, as queued (now if it is
            // first, else after the ones before it; order per record holds).
            _ if taken.is_empty() => {
                return RecordBody::NotAnObject {
                    leased,
                    rest: entries.collect(),
                }
            }
            _ => {
                let mut rest = vec![leased];
                rest.extend(entries);
                return record_merged(merged, taken, rest);
            }
        }
    }
    record_merged(merged, taken, Vec::new())
}

fn record_merged(
    merged: Map<String, Value>,
    taken: Vec<LeasedEntry>,
    rest: Vec<LeasedEntry>,
) -> RecordBody {
    let body = match &taken[..] {
        // One update: its exact text (no re-serialisation).
        [only] => only.entry.fact.body_json.clone(),
        _ => Value::Object(merged).to_string(),
    };
    RecordBody::Merged { body, taken, rest }
}

/// Contact records: with batching, one `Contact/Batch` of one item per record (its updates
/// merged); without, the first record's merged updates as one `Contact/Transaction` and the
/// other records wait. A first body that is not an object goes alone, as before.
fn prepare_contacts(group: Vec<LeasedEntry>, contact_batch: bool) -> Prepared {
    let mut prepared = Prepared::default();
    let reference_source = group[0].entry.fact.transaction_source.clone();
    let mut records = by_record(group).into_iter();
    let release = |prepared: &mut Prepared, entries: Vec<LeasedEntry>| {
        let entries = entries
            .into_iter()
            .map(|leased| (leased, Completion::Release));
        prepared.settle_now.extend(entries);
    };
    let mut bodies: Vec<String> = Vec::new();
    let mut items: Vec<Vec<LeasedEntry>> = Vec::new();
    for record in records.by_ref() {
        match record_body(record) {
            RecordBody::Merged { body, taken, rest } => {
                bodies.push(body);
                items.push(taken);
                release(&mut prepared, rest);
            }
            RecordBody::NotAnObject { leased, rest } if items.is_empty() => {
                let body = leased.entry.fact.body_json.clone();
                prepared.call = Some((CrmWrite::ContactTransaction { body }, vec![vec![leased]]));
                release(&mut prepared, rest);
                break;
            }
            // Waits until it comes first in a group of its own.
            RecordBody::NotAnObject { leased, rest } => {
                release(&mut prepared, vec![leased]);
                release(&mut prepared, rest);
            }
        }
        if !contact_batch {
            break;
        }
    }
    release(&mut prepared, records.flatten().collect());
    if prepared.call.is_some() || items.is_empty() {
        return prepared;
    }
    let request = if contact_batch {
        CrmWrite::ContactBatch {
            reference_source,
            bodies,
        }
    } else {
        let body = bodies.pop().unwrap_or_default();
        CrmWrite::ContactTransaction { body }
    };
    prepared.call = Some((request, items));
    prepared
}

/// One refund per group (any other entry is left for later): a reversing transaction once
/// its gift has a Virtuous id, else it waits.
fn prepare_refund(
    group: Vec<LeasedEntry>,
    gift_virtuous_id: impl Fn(&str, &str) -> Option<String>,
    now_ms: u64,
    refund_recheck_min_ms: u64,
) -> Prepared {
    let mut prepared = Prepared::default();
    let mut entries = group.into_iter();
    let refund = entries.next().expect("group is not empty");
    prepared
        .settle_now
        .extend(entries.map(|leased| (leased, Completion::Release)));
    let Some(gift_id) = gift_virtuous_id(&refund.entry.fact.source, &refund.entry.fact.source_id)
    else {
        let recheck_at_ms =
            refund_recheck_at_ms(refund.entry.enqueued_at_ms, now_ms, refund_recheck_min_ms);
        prepared
            .settle_now
            .push((refund, Completion::WaitForGift { recheck_at_ms }));
        return prepared;
    };
    match fill_reversed_gift_id(&refund.entry.fact.body_json, &gift_id) {
        Some(body) => {
            prepared.call = Some((CrmWrite::ReversingTransaction { body }, vec![vec![refund]]))
        }
        None => prepared.settle_now.push((
            refund,
            Completion::Dead {
                reason: "refund body is not a JSON object; reversedGiftId cannot be set"
                    .to_string(),
                status: None,
            },
        )),
    }
    prepared
}

/// Newest value wins, field by field; nested objects merge the same way.
fn merge_fields(into: &mut Map<String, Value>, newer: Map<String, Value>) {
    for (name, value) in newer {
        match (into.get_mut(&name), value) {
            (Some(Value::Object(existing)), Value::Object(fields)) => {
                merge_fields(existing, fields)
            }
            (_, value) => {
                into.insert(name, value);
            }
        }
    }
}

/// Sets `reversedGiftId`: a number when the Virtuous id is numeric text (it is), else text.
pub fn fill_reversed_gift_id(body_json: &str, gift_id: &str) -> Option<String> {
    let Ok(Value::Object(mut fields)) = serde_json::from_str::<Value>(body_json) else {
        return None;
    };
    let id = match gift_id.trim().parse::<u64>() {
        Ok(number) => Value::from(number),
        Err(_) => Value::from(gift_id),
    };
    fields.insert("reversedGiftId".to_string(), id);
    Some(Value::Object(fields).to_string())
}

/// What to do after an answer.
#[derive(Debug, Default)]
pub struct Settled {
    pub completions: Vec<(LeasedEntry, Completion)>,
    /// Groups to send again at once, in order (split halves, the good items of a batch
    /// refused for some): still leased, not an attempt.
    pub follow_ups: Vec<Vec<LeasedEntry>>,
    /// A `429`: the whole tenant waits this long.
    pub throttled_ms: Option<u64>,
    /// 401/403 or a misconfiguration: pause the tenant and alert (entries stay queued).
    pub needs_operator: Option<String>,
}

/// The metric label / observed name of an outcome class.
pub fn class_name(outcome: &BatchOutcome) -> &'static str {
    match outcome {
        BatchOutcome::All(Outcome::Accepted) => "accepted",
        BatchOutcome::All(Outcome::Throttled { .. }) => "throttled",
        BatchOutcome::All(Outcome::Transient { .. }) => "transient",
        BatchOutcome::All(Outcome::Unknown { .. }) => "unknown",
        BatchOutcome::All(Outcome::PermanentItem { .. } | Outcome::Permanent { .. }) => "permanent",
        BatchOutcome::All(Outcome::TooLarge) => "too_large",
        BatchOutcome::All(Outcome::NeedsOperator { .. }) => "needs_operator",
        BatchOutcome::ItemsRejected { .. } => "items_rejected",
        BatchOutcome::Split { .. } => "split",
    }
}

/// Maps a classified answer to per-entry completions (docs/operations.md, "Submission and budget").
pub fn settle(
    outcome: BatchOutcome,
    items: Vec<Vec<LeasedEntry>>,
    status: Option<u16>,
    now_ms: u64,
) -> Settled {
    let mut settled = Settled::default();
    let all = |settled: &mut Settled, items: Vec<Vec<LeasedEntry>>, completion: Completion| {
        for leased in items.into_iter().flatten() {
            settled.completions.push((leased, completion.clone()));
        }
    };
    match outcome {
        BatchOutcome::All(Outcome::Accepted) => all(&mut settled, items, Completion::Accepted),
        BatchOutcome::All(Outcome::Throttled { retry_after_ms }) => {
            settled.throttled_ms = Some(retry_after_ms);
            let not_before_ms = now_ms.saturating_add(retry_after_ms);
            all(&mut settled, items, Completion::Requeue { not_before_ms });
        }
        BatchOutcome::All(Outcome::Transient { reason } | Outcome::Unknown { reason }) => {
            let retry = Completion::Retry {
                reason,
                status,
                retry_after_ms: None,
            };
            all(&mut settled, items, retry);
        }
        BatchOutcome::All(
            Outcome::Permanent { reason } | Outcome::PermanentItem { reason, .. },
        ) => all(&mut settled, items, Completion::Dead { reason, status }),
        BatchOutcome::All(Outcome::NeedsOperator { reason }) => {
            settled.needs_operator = Some(reason);
            all(&mut settled, items, Completion::Release);
        }
        BatchOutcome::All(Outcome::TooLarge) | BatchOutcome::Split { .. } if items.len() > 1 => {
            let mut first = items;
            let second = first.split_off(first.len() / 2);
            settled
                .follow_ups
                .push(first.into_iter().flatten().collect());
            settled
                .follow_ups
                .push(second.into_iter().flatten().collect());
        }
        BatchOutcome::All(Outcome::TooLarge) | BatchOutcome::Split { .. } => {
            // One item cannot be split (classify does not answer this for one item).
            let reason = "refused as too large or invalid, and cannot be split".to_string();
            all(&mut settled, items, Completion::Dead { reason, status });
        }
        BatchOutcome::ItemsRejected { rejected } => {
            let mut reasons: Vec<Option<String>> = vec![None; items.len()];
            for outcome in rejected {
                if let Outcome::PermanentItem { item_index, reason } = outcome {
                    if let Some(slot) = reasons.get_mut(item_index) {
                        *slot = Some(reason);
                    }
                }
            }
            let mut good = Vec::new();
            for (item, reason) in items.into_iter().zip(reasons) {
                match reason {
                    Some(reason) => all(
                        &mut settled,
                        vec![item],
                        Completion::Dead { reason, status },
                    ),
                    None => good.extend(item),
                }
            }
            if !good.is_empty() {
                settled.follow_ups.push(good);
            }
        }
    }
    settled
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{EntryFact, Lane, QueueEntry};

    fn leased(kind: RecordKind, seq: u64, body: &str) -> LeasedEntry {
        LeasedEntry {
            lane: Lane::Live,
            seq,
            entry: QueueEntry {
                fact: EntryFact {
                    kind,
                    source: "stripe".into(),
                    source_id: "id".into(),
                    idempotency_key: format!("k{seq}"),
                    lane: Lane::Live,
                    transaction_source: "Stripe".into(),
                    body_json: body.into(),
                },
                attempts: 0,
                enqueued_at_ms: 1,
                not_before_ms: 1,
            },
        }
    }

    #[test]
    fn contact_updates_merge_field_by_field_newest_wins() {
        // Goal: merged contact bodies keep every field, the newest value per field (nested objects too), and all entries stand behind the one item.
        let group = vec![
            leased(
                RecordKind::Contact,
                1,
                r#"{"referenceId":"c","firstName":"Ann","address":{"city":"A","zip":"1"},"tags":["x"]}"#,
            ),
            leased(
                RecordKind::Contact,
                2,
                r#"{"referenceId":"c","lastName":"Lee","address":{"city":"B"}}"#,
            ),
            leased(
                RecordKind::Contact,
                3,
                r#"{"referenceId":"c","firstName":"Anne","tags":["y"]}"#,
            ),
        ];
        let prepared = prepare(group, |_, _| None, 0, 0, false);
        let Some((CrmWrite::ContactTransaction { body }, items)) = prepared.call else {
            panic!("expected a contact transaction");
        };
        let merged: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            merged,
            serde_json::json!({"referenceId":"c","firstName":"Anne","lastName":"Lee",
                "address":{"city":"B","zip":"1"},"tags":["y"]})
        );
        assert_eq!(items.len(), 1);
        assert_eq!(
            items[0].iter().map(|l| l.seq).collect::<Vec<_>>(),
            [1, 2, 3]
        );
    }

    fn contact(seq: u64, id: &str, body: &str) -> LeasedEntry {
        let mut leased = leased(RecordKind::Contact, seq, body);
        leased.entry.fact.source_id = id.into();
        leased.entry.fact.transaction_source = "ConstantContact".into();
        leased
    }

    fn seqs_of(items: &[Vec<LeasedEntry>]) -> Vec<Vec<u64>> {
        items
            .iter()
            .map(|item| item.iter().map(|l| l.seq).collect())
            .collect()
    }

    fn released(prepared: &Prepared) -> Vec<u64> {
        prepared
            .settle_now
            .iter()
            .filter(|(_, completion)| *completion == Completion::Release)
            .map(|(leased, _)| leased.seq)
            .collect()
    }

    /// c1 (two updates), c2 and c3 (one each), as the leasing groups them.
    fn three_records() -> Vec<LeasedEntry> {
        vec![
            contact(1, "c1", r#"{"referenceId":"c1","firstName":"Ann"}"#),
            contact(2, "c1", r#"{"referenceId":"c1","lastName":"Lee"}"#),
            contact(3, "c2", r#"{ "referenceId" : "c2", "lastName":"Poe" }"#),
            contact(4, "c3", r#"{"referenceId":"c3","lastName":"Roe"}"#),
        ]
    }

    #[test]
    fn contact_records_go_as_one_batch_one_merged_item_per_record() {
        // Goal: with batching, a group of 3 records is one Contact/Batch of 3 items under the group's referenceSource: a record's updates merged into one item, a single update sent byte for byte.
        let prepared = prepare(three_records(), |_, _| None, 0, 0, true);
        assert!(prepared.settle_now.is_empty());
        let Some((
            CrmWrite::ContactBatch {
                reference_source,
                bodies,
            },
            items,
        )) = prepared.call
        else {
            panic!("expected a contact batch");
        };
        assert_eq!(reference_source, "ConstantContact");
        assert_eq!(seqs_of(&items), [vec![1, 2], vec![3], vec![4]]);
        let merged: Value = serde_json::from_str(&bodies[0]).unwrap();
        assert_eq!(
            merged,
            serde_json::json!({"referenceId":"c1","firstName":"Ann","lastName":"Lee"})
        );
        assert_eq!(bodies[1], r#"{ "referenceId" : "c2", "lastName":"Poe" }"#);
        assert_eq!(bodies[2], r#"{"referenceId":"c3","lastName":"Roe"}"#);
    }

    #[test]
    fn without_batching_one_record_goes_and_the_others_wait() {
        // Goal: contact_batch off sends the first record's merged updates as one Contact/Transaction and releases the other records unsent.
        let prepared = prepare(three_records(), |_, _| None, 0, 0, false);
        let Some((CrmWrite::ContactTransaction { body }, items)) = &prepared.call else {
            panic!("expected a contact transaction");
        };
        assert_eq!(seqs_of(items), [vec![1, 2]]);
        assert!(body.contains("Ann") && body.contains("Lee"), "{body}");
        assert_eq!(released(&prepared), [3, 4]);
    }

    #[test]
    fn a_contact_body_that_is_not_an_object_goes_alone() {
        // Goal: a first body that is not a JSON object goes alone as a Contact/Transaction, as queued; in a later record it waits (with its record's later updates) while the other records are batched.
        let first = vec![
            contact(1, "c1", "[1]"),
            contact(2, "c1", r#"{"referenceId":"c1"}"#),
            contact(3, "c2", r#"{"referenceId":"c2"}"#),
        ];
        let prepared = prepare(first, |_, _| None, 0, 0, true);
        let Some((CrmWrite::ContactTransaction { body }, items)) = &prepared.call else {
            panic!("expected the odd body alone");
        };
        assert_eq!(body, "[1]");
        assert_eq!(seqs_of(items), [vec![1]]);
        assert_eq!(released(&prepared), [2, 3]);
        let later = vec![
            contact(1, "c1", r#"{"referenceId":"c1"}"#),
            contact(2, "c2", r#"{"referenceId":"c2","a":1}"#),
            contact(3, "c2", "\"text\""),
            contact(4, "c2", r#"{"referenceId":"c2","b":2}"#),
            contact(5, "c3", "[]"),
            contact(6, "c4", r#"{"referenceId":"c4"}"#),
        ];
        let prepared = prepare(later, |_, _| None, 0, 0, true);
        let Some((CrmWrite::ContactBatch { bodies, .. }, items)) = &prepared.call else {
            panic!("expected a batch");
        };
        assert_eq!(seqs_of(items), [vec![1], vec![2], vec![6]]);
        assert_eq!(bodies[1], r#"{"referenceId":"c2","a":1}"#);
        assert_eq!(released(&prepared), [3, 4, 5]);
    }

    #[test]
    fn a_bad_contact_named_by_the_batch_answer_is_split_off() {
        // Goal: a 400 naming contacts[1] dead-letters that record (every update behind it) and sends the other records again as a new batch; a 413 or an unnamed 400 halves the batch by record.
        use crate::outcome::{classify, ResponseFacts};
        let Some((request, items)) = prepare(three_records(), |_, _| None, 0, 0, true).call else {
            panic!("expected a call");
        };
        let facts = ResponseFacts {
            model_state_keys: vec!["contacts[1].lastName".into()],
            item_count: request.item_count(),
            ..ResponseFacts::answered(400)
        };
        let settled = settle(classify(facts), items.clone(), Some(400), 10);
        let dead: Vec<u64> = settled.completions.iter().map(|(l, _)| l.seq).collect();
        assert_eq!(dead, [3]);
        assert!(
            matches!(&settled.completions[0].1, Completion::Dead { reason, status: Some(400) } if reason.contains("lastName"))
        );
        assert_eq!(settled.follow_ups.len(), 1);
        let again = prepare(settled.follow_ups[0].clone(), |_, _| None, 0, 0, true);
        let Some((CrmWrite::ContactBatch { bodies, .. }, again_items)) = again.call else {
            panic!("expected a batch again");
        };
        assert_eq!(bodies.len(), 2);
        assert_eq!(seqs_of(&again_items), [vec![1, 2], vec![4]]);
        for status in [413, 400] {
            let facts = ResponseFacts {
                item_count: 3,
                ..ResponseFacts::answered(status)
            };
            let split = settle(classify(facts), items.clone(), Some(status), 10);
            assert!(split.completions.is_empty(), "{status}");
            let halves: Vec<Vec<u64>> = split
                .follow_ups
                .iter()
                .map(|half| half.iter().map(|l| l.seq).collect())
                .collect();
            assert_eq!(halves, [vec![1, 2], vec![3, 4]], "{status}");
        }
    }

    #[test]
    fn refunds_wait_for_the_gift_then_carry_its_numeric_id() {
        // Goal: no gift id → waiting_for_gift without a call; a numeric id is sent as a number, other text as a string.
        let body = r#"{"reversedGiftId":null,"giftDate":"2025-06-15","notes":"refund"}"#;
        let waiting = prepare(
            vec![leased(RecordKind::Refund, 1, body)],
            |_, _| None,
            70,
            7,
            false,
        );
        assert!(waiting.call.is_none());
        assert!(matches!(
            waiting.settle_now[..],
            [(_, Completion::WaitForGift { recheck_at_ms: 77 })]
        ));
        // The wait grows with the time waited (a tenth), within [min, 1 h].
        assert_eq!(refund_recheck_at_ms(0, 1_000_000, 10_000), 1_100_000);
        assert_eq!(
            refund_recheck_at_ms(0, 100_000_000, 10_000),
            100_000_000 + REFUND_RECHECK_MAX_MS
        );
        let ready = prepare(
            vec![leased(RecordKind::Refund, 1, body)],
            |source, id| (source == "stripe" && id == "id").then(|| "4242".to_string()),
            70,
            7,
            false,
        );
        let Some((CrmWrite::ReversingTransaction { body }, _)) = ready.call else {
            panic!("expected a reversing transaction");
        };
        let sent: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(sent["reversedGiftId"], serde_json::json!(4242));
        assert_eq!(sent["giftDate"], "2025-06-15");
        let text = fill_reversed_gift_id(r#"{"reversedGiftId":null}"#, "g-1").unwrap();
        assert_eq!(text, r#"{"reversedGiftId":"g-1"}"#);
    }

    #[test]
    fn answers_map_to_the_design_effects() {
        // Goal: item errors dead-letter the named items and resend the rest; splits halve; throttles requeue; 401 releases and asks for the operator.
        let items = |n: u64| -> Vec<Vec<LeasedEntry>> {
            (0..n)
                .map(|seq| vec![leased(RecordKind::Gift, seq, "{}")])
                .collect()
        };
        let rejected = BatchOutcome::ItemsRejected {
            rejected: vec![Outcome::PermanentItem {
                item_index: 1,
                reason: "bad amount".into(),
            }],
        };
        let settled = settle(rejected, items(3), Some(400), 10);
        assert_eq!(settled.completions.len(), 1);
        assert_eq!(settled.completions[0].0.seq, 1);
        assert!(
            matches!(&settled.completions[0].1, Completion::Dead { reason, status: Some(400) } if reason == "bad amount")
        );
        let resend: Vec<u64> = settled.follow_ups[0].iter().map(|l| l.seq).collect();
        assert_eq!(resend, [0, 2]);

        let split = settle(
            BatchOutcome::All(Outcome::TooLarge),
            items(5),
            Some(413),
            10,
        );
        let halves: Vec<Vec<u64>> = split
            .follow_ups
            .iter()
            .map(|half| half.iter().map(|l| l.seq).collect())
            .collect();
        assert_eq!(halves, [vec![0, 1], vec![2, 3, 4]]);
        assert!(split.completions.is_empty());

        let throttled = settle(
            BatchOutcome::All(Outcome::Throttled {
                retry_after_ms: 3_000,
            }),
            items(2),
            Some(429),
            10,
        );
        assert_eq!(throttled.throttled_ms, Some(3_000));
        assert!(throttled.completions.iter().all(|(_, c)| *c
            == Completion::Requeue {
                not_before_ms: 3_010
            }));

        let refused = settle(
            BatchOutcome::All(Outcome::NeedsOperator {
                reason: "401".into(),
            }),
            items(2),
            Some(401),
            10,
        );
        assert_eq!(refused.needs_operator.as_deref(), Some("401"));
        assert!(refused
            .completions
            .iter()
            .all(|(_, c)| *c == Completion::Release));
    }
}
