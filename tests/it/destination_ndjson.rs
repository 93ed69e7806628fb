//! The NDJSON destination on a real directory: buffered lines are not committed, files are
//! finished (by size or age) under sortable final names only, `reset` and a restart drop
//! the partial file.

use std::path::Path;

use serde_json::{json, Value};
use steward::destinations::ndjson::NdjsonDestination;
use steward::tenant::NdjsonDestinationDoc;
use steward_actors::ports::now_ms;
use steward_actors::ports::Destination;
use steward_actors::pull::{ChangeKind, ChangeOp, ChangeVia, DeliveryAnswer, StoredChange};

const PARTIAL: &str = ".steward-bi.partial";

fn destination(dir: &Path, rotate_bytes: u64, rotate_s: u64) -> NdjsonDestination {
    let settings = NdjsonDestinationDoc {
        dir: dir.to_str().unwrap().to_string(),
        rotate_bytes,
        rotate_s,
    };
    NdjsonDestination::new("hope", "bi", &settings)
}

fn change(seq: u64) -> StoredChange {
    StoredChange {
        seq,
        kind: if seq % 3 == 0 {
            ChangeKind::Contact
        } else {
            ChangeKind::Gift
        },
        op: if seq % 5 == 0 {
            ChangeOp::Delete
        } else {
            ChangeOp::Upsert
        },
        id: format!("{}", 900 + seq),
        version_ms: 1_714_557_600_000 + seq,
        modified_at: Some("2024-05-01T10:00:00".into()),
        record: json!({"id": 900 + seq, "note": "x".repeat(100)}),
        own: false,
        via: ChangeVia::Poll,
        received_ms: 1_714_557_601_000,
    }
}

/// The finished files (sorted by name) and whether the partial file exists.
fn listing(dir: &Path) -> (Vec<String>, bool) {
    let mut finished = Vec::new();
    let mut partial = false;
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name == PARTIAL {
            partial = true;
        } else {
            assert!(
                name.starts_with("bi-") && name.ends_with(".ndjson"),
                "{name}"
            );
            finished.push(name);
        }
    }
    finished.sort();
    (finished, partial)
}

fn lines_of(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[actix_rt::test]
async fn files_rotate_by_size_and_are_named_by_their_sorted_range() {
    // Goal: below rotate_bytes nothing is committed and only the hidden partial exists;
    // crossing it finishes the file atomically and commits its last sequence; the files
    // sort in delivery order and together hold every change once, with the documented line.
    let dir = tempfile::tempdir().unwrap();
    let destination = destination(dir.path(), 1_024, 3_600);
    let mut committed = Vec::new();
    for first in (1..=30).step_by(2) {
        let answer = destination
            .deliver(vec![change(first), change(first + 1)])
            .await;
        assert_eq!(answer.retry, None);
        assert!(answer.rejected.is_empty());
        let (finished, partial) = listing(dir.path());
        match answer.committed_through {
            None => assert!(partial, "buffered lines are in the partial file"),
            Some(seq) => {
                assert_eq!(seq, first + 1);
                assert!(!partial, "a finished file leaves no partial behind");
                assert!(finished
                    .last()
                    .unwrap()
                    .ends_with(&format!("-{seq:020}.ndjson")));
                committed.push(seq);
            }
        }
    }
    assert!(committed.len() >= 3, "{committed:?}");
    let (finished, _) = listing(dir.path());
    assert_eq!(finished.len(), committed.len());
    let all: Vec<Value> = finished
        .iter()
        .flat_map(|name| lines_of(&dir.path().join(name)))
        .collect();
    let ids: Vec<u64> = all
        .iter()
        .map(|line| line["id"].as_str().unwrap().parse::<u64>().unwrap() - 900)
        .collect();
    let last = *committed.last().unwrap();
    assert_eq!(ids, (1..=last).collect::<Vec<_>>());
    assert_eq!(
        all[4],
        json!({"op": "delete", "kind": "gift", "id": "905", "modified_at": "2024-05-01T10:00:00",
               "version_ms": 1_714_557_600_005_u64, "own": false,
               "record": {"id": 905, "note": "x".repeat(100)}})
    );
    for name in &finished {
        let size = std::fs::metadata(dir.path().join(name)).unwrap().len();
        assert!(size >= 1_024, "{name}: {size}");
    }
}

#[actix_rt::test]
async fn an_old_partial_file_is_finished_at_settle() {
    // Goal: lines younger than rotate_s wait; settle past rotate_s finishes the file and
    // commits through its last change; settle with nothing buffered answers nothing.
    let dir = tempfile::tempdir().unwrap();
    let destination = destination(dir.path(), 1 << 20, 2);
    let answer = destination.deliver(vec![change(1), change(2)]).await;
    assert_eq!(answer, DeliveryAnswer::default());
    assert_eq!(
        destination.settle(now_ms()).await,
        DeliveryAnswer::default(),
        "not due yet"
    );
    assert_eq!(listing(dir.path()), (vec![], true));
    assert_eq!(
        destination.settle(now_ms() + 2_500).await,
        DeliveryAnswer::committed(2)
    );
    let (finished, partial) = listing(dir.path());
    assert_eq!(finished, [ndjson_name(1, 2)]);
    assert!(!partial);
    assert_eq!(lines_of(&dir.path().join(&finished[0])).len(), 2);
    assert_eq!(
        destination.settle(now_ms() + 10_000).await,
        DeliveryAnswer::default()
    );
}

fn ndjson_name(first: u64, last: u64) -> String {
    steward::destinations::ndjson::file_name("bi", first, last)
}

#[actix_rt::test]
async fn reset_and_restart_drop_the_partial_file() {
    // Goal: reset deletes the buffered lines (they come again from the checkpoint); a
    // partial file left by an earlier process is removed at first use, so the next file
    // holds only what was delivered since; the same range delivered again after a crash
    // finishes under the same name.
    let dir = tempfile::tempdir().unwrap();
    let destination_a = destination(dir.path(), 1 << 20, 3_600);
    destination_a.deliver(vec![change(1), change(2)]).await;
    assert_eq!(listing(dir.path()), (vec![], true));
    destination_a.reset().await;
    assert_eq!(listing(dir.path()), (vec![], false));

    // An earlier process died with lines 1..=3 buffered.
    destination_a
        .deliver(vec![change(1), change(2), change(3)])
        .await;
    drop(destination_a);
    let destination_b = destination(dir.path(), 1 << 20, 1);
    assert_eq!(
        destination_b.settle(now_ms()).await,
        DeliveryAnswer::default()
    );
    assert_eq!(
        listing(dir.path()),
        (vec![], false),
        "the old partial is gone"
    );
    destination_b.deliver(vec![change(1), change(2)]).await;
    let answer = destination_b.settle(now_ms() + 1_500).await;
    assert_eq!(answer, DeliveryAnswer::committed(2));
    let (finished, partial) = listing(dir.path());
    assert_eq!(finished, [ndjson_name(1, 2)]);
    assert!(!partial);
    assert_eq!(lines_of(&dir.path().join(&finished[0])).len(), 2);

    // A crash after the rename but before the checkpoint moved: the range comes again and
    // lands under the same name with the same content.
    let before = std::fs::read(dir.path().join(&finished[0])).unwrap();
    let destination_c = destination(dir.path(), 1 << 20, 1);
    destination_c.deliver(vec![change(1), change(2)]).await;
    assert_eq!(
        destination_c.settle(now_ms() + 1_500).await,
        DeliveryAnswer::committed(2)
    );
    assert_eq!(listing(dir.path()), (vec![ndjson_name(1, 2)], false));
    assert_eq!(
        std::fs::read(dir.path().join(&finished[0])).unwrap(),
        before
    );
}

#[actix_rt::test]
async fn an_unwritable_directory_answers_retry() {
    // Goal: when the directory cannot be created the destination answers retry, nothing
    // committed.
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"a file").unwrap();
    let destination = destination(&blocker.join("out"), 1_024, 60);
    let answer = destination.deliver(vec![change(1)]).await;
    assert_eq!(answer.committed_through, None);
    assert!(answer.retry.is_some(), "{answer:?}");
}
