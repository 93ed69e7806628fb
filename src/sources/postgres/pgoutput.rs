//! A decoder of Postgres's built-in logical decoding output plugin `pgoutput` (protocol
//! version 1), as `pg_logical_slot_peek_binary_changes` returns it: one message per row.
//!
//! Only what Steward needs: `Begin`, `Commit`, `Relation`, `Insert`, `Update`, `Delete` and
//! `Truncate`; `Type` and `Origin` are read past. Column values come as text (the type's
//! output function, the same text a plain query returns). A TOASTed value an UPDATE left
//! unchanged is sent as "unchanged": its column is absent from the row.
//!
//! Transactions come whole (the SQL functions decode at commit), so the decoder gives
//! complete [`Txn`]s; a trailing part of one (never expected) is reported, not guessed.

use std::collections::HashMap;

use serde_json::{Map, Value};

/// Microseconds between the Unix epoch and Postgres's (2000-01-01).
const PG_EPOCH_UNIX_US: i64 = 946_684_800_000_000;

/// A table as a `Relation` message describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// `schema.table`.
    pub name: String,
    pub columns: Vec<String>,
}

/// One row change of a committed transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Insert {
        table: String,
        row: Map<String, Value>,
    },
    /// `old_key`: the old key columns when the key changed (or the whole old row with
    /// `REPLICA IDENTITY FULL`).
    Update {
        table: String,
        row: Map<String, Value>,
        old_key: Option<Map<String, Value>>,
    },
    /// The key columns (or the whole row with `REPLICA IDENTITY FULL`); others absent.
    Delete {
        table: String,
        key: Map<String, Value>,
    },
    Truncate {
        tables: Vec<String>,
    },
}

/// A committed transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Txn {
    pub xid: u32,
    /// The end of its commit record: confirming this position skips it from now on.
    pub end_lsn: u64,
    /// Commit time, Unix ms.
    pub commit_ms: u64,
    pub changes: Vec<Change>,
}

/// Decodes messages in order. Relations are remembered across calls (each SQL call sends
/// them again before their first use; a decoder kept between calls also copes if not).
#[derive(Debug, Default)]
pub struct Decoder {
    relations: HashMap<u32, Relation>,
    open: Option<Txn>,
}

impl Decoder {
    /// One message; a completed transaction when it was a `Commit`.
    pub fn push(&mut self, message: &[u8]) -> Result<Option<Txn>, String> {
        let mut reader = Reader::new(message);
        let tag = reader.u8()?;
        match tag {
            b'B' => {
                let _final_lsn = reader.u64()?;
                let commit_us = reader.i64()?;
                let xid = reader.u32()?;
                if self.open.is_some() {
                    return Err("a Begin inside an open transaction".into());
                }
                self.open = Some(Txn {
                    xid,
                    end_lsn: 0,
                    commit_ms: pg_time_to_unix_ms(commit_us),
                    changes: Vec::new(),
                });
                Ok(None)
            }
            b'C' => {
                let _flags = reader.u8()?;
                let _commit_lsn = reader.u64()?;
                let end_lsn = reader.u64()?;
                let commit_us = reader.i64()?;
                let mut txn = self.open.take().ok_or("a Commit without its Begin")?;
                txn.end_lsn = end_lsn;
                txn.commit_ms = pg_time_to_unix_ms(commit_us);
                Ok(Some(txn))
            }
            b'R' => {
                let id = reader.u32()?;
                let namespace = reader.cstr()?;
                let name = reader.cstr()?;
                let _replica_identity = reader.u8()?;
                let count = reader.u16()?;
                let mut columns = Vec::with_capacity(usize::from(count));
                for _ in 0..count {
                    let _flags = reader.u8()?;
                    columns.push(reader.cstr()?);
                    let _type_oid = reader.u32()?;
                    let _type_modifier = reader.i32()?;
                }
                let namespace = if namespace.is_empty() {
                    "pg_catalog".to_string()
                } else {
                    namespace
                };
                self.relations.insert(
                    id,
                    Relation {
                        name: format!("{namespace}.{name}"),
                        columns,
                    },
                );
                Ok(None)
            }
            b'Y' | b'O' => Ok(None),
            b'I' => {
                let relation = self.relation(reader.u32()?)?;
                expect(&mut reader, b'N')?;
                let row = tuple(&mut reader, &relation)?;
                self.add(Change::Insert {
                    table: relation.name,
                    row,
                })
            }
            b'U' => {
                let relation = self.relation(reader.u32()?)?;
                let mut kind = reader.u8()?;
                let mut old_key = None;
                if kind == b'K' || kind == b'O' {
                    old_key = Some(tuple(&mut reader, &relation)?);
                    kind = reader.u8()?;
                }
                if kind != b'N' {
                    return Err(format!("an Update's new row is tagged {:?}", kind as char));
                }
                let row = tuple(&mut reader, &relation)?;
                self.add(Change::Update {
                    table: relation.name,
                    row,
                    old_key,
                })
            }
            b'D' => {
                let relation = self.relation(reader.u32()?)?;
                let kind = reader.u8()?;
                if kind != b'K' && kind != b'O' {
                    return Err(format!("a Delete's row is tagged {:?}", kind as char));
                }
                let key = tuple(&mut reader, &relation)?;
                self.add(Change::Delete {
                    table: relation.name,
                    key,
                })
            }
            b'T' => {
                let count = reader.u32()?;
                let _options = reader.u8()?;
                let mut tables = Vec::new();
                for _ in 0..count {
                    tables.push(self.relation(reader.u32()?)?.name);
                }
                self.add(Change::Truncate { tables })
            }
            other => Err(format!("unknown pgoutput message {:?}", other as char)),
        }
    }

    /// Whether a transaction was begun and not committed (the input stopped inside it).
    pub fn inside_transaction(&self) -> bool {
        self.open.is_some()
    }

    /// Forgets a partial transaction (the next read starts at a transaction's start).
    pub fn reset(&mut self) {
        self.open = None;
    }

    fn relation(&self, id: u32) -> Result<Relation, String> {
        self.relations
            .get(&id)
            .cloned()
            .ok_or_else(|| format!("a change of relation {id} before its Relation message"))
    }

    fn add(&mut self, change: Change) -> Result<Option<Txn>, String> {
        self.open
            .as_mut()
            .ok_or("a change outside a transaction")?
            .changes
            .push(change);
        Ok(None)
    }
}

fn expect(reader: &mut Reader<'_>, tag: u8) -> Result<(), String> {
    let found = reader.u8()?;
    if found != tag {
        return Err(format!(
            "expected tuple tag {:?}, found {:?}",
            tag as char, found as char
        ));
    }
    Ok(())
}

/// `TupleData`: the row as `{column: text | null}`; unchanged TOAST values are left out.
fn tuple(reader: &mut Reader<'_>, relation: &Relation) -> Result<Map<String, Value>, String> {
    let count = usize::from(reader.u16()?);
    if count > relation.columns.len() {
        return Err(format!(
            "a row of {} has {count} columns, its Relation {}",
            relation.name,
            relation.columns.len()
        ));
    }
    let mut row = Map::new();
    for column in &relation.columns[..count] {
        match reader.u8()? {
            b'n' => {
                row.insert(column.clone(), Value::Null);
            }
            b'u' => {}
            b't' => {
                let len = reader.u32()? as usize;
                let bytes = reader.take(len)?;
                let text = std::str::from_utf8(bytes)
                    .map_err(|_| format!("column {column} of {} is not UTF-8", relation.name))?;
                row.insert(column.clone(), Value::String(text.to_string()));
            }
            other => {
                return Err(format!(
                "column {column} of {} has the value kind {:?} (binary values are not asked for)",
                relation.name, other as char
            ))
            }
        }
    }
    Ok(row)
}

fn pg_time_to_unix_ms(pg_us: i64) -> u64 {
    u64::try_from(pg_us.saturating_add(PG_EPOCH_UNIX_US) / 1_000).unwrap_or(0)
}

/// `X/Y` (hex halves) → the 64-bit position.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (high, low) = text.trim().split_once('/')?;
    let high = u64::from_str_radix(high, 16).ok()?;
    let low = u64::from_str_radix(low, 16).ok()?;
    (high <= u64::from(u32::MAX) && low <= u64::from(u32::MAX)).then_some((high << 32) | low)
}

/// The `X/Y` text of a position.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes }
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], String> {
        if self.bytes.len() < len {
            return Err("a pgoutput message ends early".into());
        }
        let (head, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_be_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn i32(&mut self) -> Result<i32, String> {
        Ok(i32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn cstr(&mut self) -> Result<String, String> {
        let end = self
            .bytes
            .iter()
            .position(|&b| b == 0)
            .ok_or("a string without its terminating zero")?;
        let text = std::str::from_utf8(&self.bytes[..end])
            .map_err(|_| "a name that is not UTF-8".to_string())?
            .to_string();
        self.bytes = &self.bytes[end + 1..];
        Ok(text)
    }
}

#[cfg(test)]
#[path = "pgoutput_tests.rs"]
mod tests;
