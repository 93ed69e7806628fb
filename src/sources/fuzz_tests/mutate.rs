//! Structural mutations of JSON documents: replace a leaf or subtree by an odd value, delete
//! a key, wrap a value in an array or object — anywhere, or at the fields the mappings read.

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{json, Value};

/// Values that stress the accessors: every JSON type, numbers at the edges of `i64`, `u64`,
/// jiff's timestamp range and `f64`, strings empty, blank, unicode, very long or look-alike.
pub fn odd_value() -> impl Strategy<Value = Value> {
    let number = prop_oneof![
        any::<i64>(),
        prop::sample::select(vec![
            0,
            -1,
            1,
            i64::MAX,
            i64::MIN,
            253_402_207_200,  // 9999-12-31 in jiff's range
            253_402_300_800,  // just past jiff's maximum
            -377_705_116_800, // jiff's minimum
            -377_705_116_801,
            1_750_000_000,
        ]),
    ];
    let float = prop_oneof![
        any::<f64>(),
        Just(1e300),
        Just(-0.0),
        Just(0.5),
        Just(12.34)
    ];
    let text = prop_oneof![
        2 => "[ -~]{0,6}",
        1 => "\\PC{0,12}",
        2 => prop::sample::select(vec![
            "",
            " ",
            "usd",
            "JPY",
            "kwd",
            "€a",
            "12$",
            "a b",
            "evt_1",
            "pi_1",
            "ch_1",
            "cus_1",
            "card",
            "0",
            "-5",
            "+5",
            "1.",
            "007.50",
            "1e3",
            "2025-02-30",
            "2025-13-45",
            "9999-99-99T",
            "ann@x.org",
            "Subscription creation",
            "subscription_create",
            "Mary Ann Smith",
            "\u{0}",
        ])
        .prop_map(str::to_string),
        1 => (1usize..40_000).prop_map(|len| "é".repeat(len)),
    ];
    let leaf = prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::from),
        2 => number.prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => float.prop_map(Value::from),
        5 => text.prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop::sample::select(vec!["id", "object", "email", "name", "amount", "data"]),
                    inner
                ),
                0..3
            )
            .prop_map(|pairs| {
                Value::Object(
                    pairs
                        .into_iter()
                        .map(|(key, value)| (key.to_string(), value))
                        .collect(),
                )
            }),
        ]
    })
}

/// One mutation; `Index` picks the place among the document's current paths (or targets).
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Replace the value at a path anywhere in the document.
    Replace(Index, Value),
    /// Set (create or replace) the value at one of the caller's target pointers.
    SetTarget(Index, Value),
    /// Remove the key (or array element) at a path.
    Delete(Index),
    /// `v` becomes `[v]` or `{"id": v}` (an id where a string was expected, an expansion…).
    Wrap(Index, bool),
}

pub fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<Index>(), odd_value()).prop_map(|(at, value)| Mutation::Replace(at, value)),
        4 => (any::<Index>(), odd_value()).prop_map(|(at, value)| Mutation::SetTarget(at, value)),
        2 => any::<Index>().prop_map(Mutation::Delete),
        1 => (any::<Index>(), any::<bool>()).prop_map(|(at, array)| Mutation::Wrap(at, array)),
    ]
}

/// Every JSON Pointer inside `value` (not the root), depth first.
fn paths(value: &Value, prefix: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let path = format!("{prefix}/{}", key.replace('~', "~0").replace('/', "~1"));
                out.push(path.clone());
                paths(child, &path, out);
            }
        }
        Value::Array(items) => {
            for (position, child) in items.iter().enumerate() {
                let path = format!("{prefix}/{position}");
                out.push(path.clone());
                paths(child, &path, out);
            }
        }
        _ => {}
    }
}

/// Applies `mutation` to `doc`; `targets` are pointers the mapping reads.
pub fn apply(doc: &mut Value, mutation: &Mutation, targets: &[&str]) {
    let mut all = Vec::new();
    paths(doc, "", &mut all);
    let pick = |at: &Index| (!all.is_empty()).then(|| all[at.index(all.len())].clone());
    match mutation {
        Mutation::Replace(at, value) => {
            if let Some(slot) = pick(at).and_then(|path| doc.pointer_mut(&path)) {
                *slot = value.clone();
            }
        }
        Mutation::SetTarget(at, value) => {
            let target = targets[at.index(targets.len())];
            let (parent, key) = target.rsplit_once('/').expect("targets start with /");
            if let Some(Value::Object(map)) = doc.pointer_mut(parent) {
                map.insert(key.to_string(), value.clone());
            }
        }
        Mutation::Delete(at) => {
            let Some(path) = pick(at) else { return };
            let (parent, key) = path.rsplit_once('/').expect("paths start with /");
            match doc.pointer_mut(parent) {
                Some(Value::Object(map)) => {
                    map.remove(&key.replace("~1", "/").replace("~0", "~"));
                }
                Some(Value::Array(items)) => {
                    items.remove(key.parse::<usize>().expect("array paths end in a position"));
                }
                _ => {}
            }
        }
        Mutation::Wrap(at, array) => {
            if let Some(slot) = pick(at).and_then(|path| doc.pointer_mut(&path)) {
                let inner = slot.take();
                *slot = if *array {
                    json!([inner])
                } else {
                    json!({ "id": inner })
                };
            }
        }
    }
}

/// Raw delivery bytes that print as text in a failure report (proptest shows `Debug`).
#[derive(Clone)]
pub struct Raw(pub Vec<u8>);

impl std::fmt::Debug for Raw {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "Raw({:?})", String::from_utf8_lossy(&self.0))
    }
}

/// Byte-level damage after serialisation (truncation, a flipped byte): near-JSON for the
/// parser. `None` leaves the text intact.
pub fn damage_bytes(mut bytes: Vec<u8>, damage: Option<(Index, u8, bool)>) -> Vec<u8> {
    if let Some((at, xor, truncate)) = damage {
        if !bytes.is_empty() {
            let position = at.index(bytes.len());
            if truncate {
                bytes.truncate(position);
            } else {
                bytes[position] ^= xor.max(1);
            }
        }
    }
    bytes
}
