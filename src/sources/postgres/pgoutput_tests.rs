use serde_json::{json, Map, Value};

use super::*;

/// What Postgres 15's pgoutput (protocol 1) sent through `pg_logical_slot_peek_binary_changes`
/// for: INSERT (1,'x''y'),(2,NULL); UPDATE b='z' WHERE a=1; UPDATE a=3 WHERE a=2 (a key
/// change); DELETE WHERE a=1; TRUNCATE — on `public.t2(a int primary key, b text)`.
const CAPTURED: [&str; 17] = [
    "4200000000015d78c00003051277318722000002f3",
    "520000402c7075626c69630074320064000201610000000017ffffffff00620000000019ffffffff",
    "490000402c4e00027400000001317400000003782779",
    "490000402c4e00027400000001326e",
    "430000000000015d78c000000000015d78f00003051277318722",
    "4200000000015d793800030512773195ff000002f4",
    "550000402c4e000274000000013174000000017a",
    "430000000000015d793800000000015d796800030512773195ff",
    "4200000000015d79f8000305127731a305000002f5",
    "550000402c4b00027400000001326e4e00027400000001336e",
    "430000000000015d79f800000000015d7a28000305127731a305",
    "4200000000015d7a68000305127731b346000002f6",
    "440000402c4b00027400000001316e",
    "430000000000015d7a6800000000015d7a98000305127731b346",
    "4200000000015d8630000305127731d07d000002f7",
    "520000402c7075626c69630074320064000201610000000017ffffffff00620000000019ffffffff",
    "5400000001000000402c",
];
const LAST_COMMIT: &str = "430000000000015d863000000000015d87a0000305127731d07d";

fn bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn row(value: Value) -> Map<String, Value> {
    value.as_object().unwrap().clone()
}

fn decode_all(messages: &[&str]) -> Vec<Txn> {
    let mut decoder = Decoder::default();
    messages
        .iter()
        .filter_map(|hex| decoder.push(&bytes(hex)).unwrap())
        .collect()
}

#[test]
fn real_pgoutput_messages_decode_to_the_changes_made() {
    let mut messages: Vec<&str> = CAPTURED.to_vec();
    messages.push(LAST_COMMIT);
    let txns = decode_all(&messages);
    assert_eq!(txns.len(), 5);
    let table = "public.t2".to_string();
    assert_eq!(
        txns[0].changes,
        vec![
            Change::Insert {
                table: table.clone(),
                row: row(json!({"a": "1", "b": "x'y"}))
            },
            Change::Insert {
                table: table.clone(),
                row: row(json!({"a": "2", "b": null}))
            },
        ]
    );
    assert_eq!(txns[0].end_lsn, 0x15d78f0, "a commit's end position");
    assert_eq!(txns[0].xid, 0x2f3);
    // 2026-12-07, as the server clock said.
    assert!(
        txns[0].commit_ms > 1_796_000_000_000,
        "{}",
        txns[0].commit_ms
    );
    assert_eq!(
        txns[1].changes,
        vec![Change::Update {
            table: table.clone(),
            row: row(json!({"a": "1", "b": "z"})),
            old_key: None
        }]
    );
    assert_eq!(
        txns[2].changes,
        vec![Change::Update {
            table: table.clone(),
            row: row(json!({"a": "3", "b": null})),
            old_key: Some(row(json!({"a": "2", "b": null})))
        }]
    );
    assert_eq!(
        txns[3].changes,
        vec![Change::Delete {
            table: table.clone(),
            key: row(json!({"a": "1", "b": null}))
        }]
    );
    assert_eq!(
        txns[4].changes,
        vec![Change::Truncate {
            tables: vec![table]
        }]
    );
    assert!(txns
        .windows(2)
        .all(|pair| pair[0].end_lsn < pair[1].end_lsn));
}

#[test]
fn input_that_stops_inside_a_transaction_is_reported() {
    let mut decoder = Decoder::default();
    for hex in &CAPTURED[..3] {
        assert_eq!(decoder.push(&bytes(hex)).unwrap(), None);
    }
    assert!(decoder.inside_transaction());
    decoder.reset();
    assert!(!decoder.inside_transaction());
}

#[test]
fn broken_messages_are_errors_not_panics() {
    let mut decoder = Decoder::default();
    // A change before any Relation, a truncated message, an unknown tag, a Commit alone.
    assert!(decoder.push(&bytes(CAPTURED[0])).unwrap().is_none());
    assert!(decoder
        .push(&bytes(CAPTURED[2]))
        .unwrap_err()
        .contains("before its Relation"));
    assert!(decoder
        .push(&bytes(&CAPTURED[1][..6]))
        .unwrap_err()
        .contains("ends early"));
    assert!(decoder.push(b"Z").unwrap_err().contains("unknown"));
    let mut fresh = Decoder::default();
    assert!(fresh
        .push(&bytes(LAST_COMMIT))
        .unwrap_err()
        .contains("without its Begin"));
    for cut in 0..CAPTURED[1].len() / 2 {
        let mut decoder = Decoder::default();
        let _ = decoder.push(&bytes(CAPTURED[0]));
        let _ = decoder.push(&bytes(CAPTURED[1])[..cut]);
    }
}

#[test]
fn positions_read_and_print_as_postgres_writes_them() {
    assert_eq!(parse_lsn("0/15D78F0"), Some(0x15d78f0));
    assert_eq!(parse_lsn("1A/0"), Some(0x1a_0000_0000));
    assert_eq!(format_lsn(0x1a_0015_d78f), "1A/15D78F");
    assert_eq!(parse_lsn(&format_lsn(u64::MAX)), Some(u64::MAX));
    for bad in ["", "0", "x/1", "1/", "100000000/0"] {
        assert_eq!(parse_lsn(bad), None, "{bad}");
    }
}
