//! Pull's stored state (docs/pull.md): the change log, the newest version of each Virtuous
//! record (the stale-update guard), the re-read list, and each destination's checkpoint,
//! state, dead letters and replayed dead letters.
//!
//! Values are JSON (they grow fields without a migration), like the pollers' state. The log
//! is appended by the tenant's Inbound actor alone; a change and the record's newest-version
//! mark are written in one atomic batch.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::keys::{prefix_end, section};
use super::{io_error, StoreError, TenantStore};
use crate::pull::{ChangeKind, ChangeOp, ChangeVia, StoredChange};

pub(crate) fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|err| StoreError::Codec(format!("pull state: {err}")))
}

pub(crate) fn from_json<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|err| StoreError::Codec(format!("{what}: {err}")))
}

/// A change to log, before it has a sequence number.
#[derive(Debug, Clone, PartialEq)]
pub struct NewChange {
    pub kind: ChangeKind,
    pub op: ChangeOp,
    pub id: String,
    pub version_ms: u64,
    pub modified_at: Option<String>,
    pub record: serde_json::Value,
    pub own: bool,
    pub via: ChangeVia,
}

/// The newest logged version of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatestVersion {
    pub version_ms: u64,
    /// The change that logged it: an older change of the record is superseded.
    pub seq: u64,
    pub deleted: bool,
}

/// What became of a change offered to the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    Appended {
        seq: u64,
    },
    /// Older than the newest logged version (or after a delete): not logged again.
    Stale,
    /// The same version was logged already (a webhook and the backstop poll both saw it).
    Duplicate,
}

/// The stale-update guard: whether `change` is newer than `latest`, and the version it is
/// logged with (a delete is terminal: it is logged unless the record is deleted already, at
/// no lower version than the one it deletes).
pub fn admit(
    latest: Option<&LatestVersion>,
    op: ChangeOp,
    version_ms: u64,
) -> Result<u64, AppendOutcome> {
    let Some(latest) = latest else {
        return Ok(version_ms);
    };
    match op {
        ChangeOp::Delete if !latest.deleted => Ok(version_ms.max(latest.version_ms)),
        ChangeOp::Delete => Err(AppendOutcome::Duplicate),
        ChangeOp::Upsert if version_ms > latest.version_ms => Ok(version_ms),
        ChangeOp::Upsert if version_ms == latest.version_ms && !latest.deleted => {
            Err(AppendOutcome::Duplicate)
        }
        ChangeOp::Upsert => Err(AppendOutcome::Stale),
    }
}

/// A record to re-read (its webhook lacked fields a destination needs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RereadRequest {
    pub kind: ChangeKind,
    pub id: String,
    pub requested_ms: u64,
}

/// A destination's checkpoint: every change with `seq ≤` this is delivered (or dead-lettered,
/// or superseded).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestinationCheckpoint {
    pub seq: u64,
}

/// A destination's counters and last error (its loop writes them; the pause and the
/// checkpoint, which an operator also writes, are kept apart).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestinationState {
    pub delivered: u64,
    /// Changes skipped because a newer version of the record is in the log.
    pub superseded: u64,
    /// Our own writes skipped (`include_own` off).
    pub own_skipped: u64,
    pub dead_lettered: u64,
    /// Failed attempts so far (all time).
    pub failures: u64,
    /// Failed attempts in a row (the retry schedule's position); 0 after a success.
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    pub last_error_at_ms: Option<u64>,
    pub last_delivered_at_ms: Option<u64>,
}

/// A change a destination refused for good, or gave up on after the retry schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DestinationDeadLetter {
    pub destination: String,
    pub change: StoredChange,
    pub reason: String,
    pub attempts: u32,
    pub at_ms: u64,
}

fn checkpoint_name(destination: &str) -> String {
    format!("dest:{destination}")
}

fn backstop_name(kind: ChangeKind) -> String {
    format!("pull:{}", kind.name())
}

fn record_tail(kind: ChangeKind, id: &str) -> String {
    format!("{}\0{id}", kind.name())
}

impl TenantStore {
    /// The last sequence number used by the change log (0 when empty).
    pub fn change_log_head(&self) -> Result<u64, StoreError> {
        let inner = self.inner();
        inner.settle()?;
        let prefix = inner.keys.section_prefix(section::CHANGE_LOG);
        let last = match prefix_end(&prefix) {
            Some(end) => inner.tree.range(prefix.clone()..end).next_back(),
            None => inner.tree.scan_prefix(&prefix).next_back(),
        };
        match last {
            Some(item) => {
                let (key, _) = item.map_err(io_error)?;
                Ok(seq_of(&key[prefix.len()..]))
            }
            None => Ok(0),
        }
    }

    /// Offers changes to the log, in order: each passes the stale-update guard or is
    /// dropped. One atomic write (the caller awaits `Store::durable` before answering).
    pub fn append_changes(
        &self,
        changes: Vec<NewChange>,
        now_ms: u64,
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        let mut head = self.change_log_head()?;
        let inner = self.inner();
        let _guard = inner.lock_for_write()?;
        let mut batch = sled::Batch::default();
        // Changes of one call may touch one record twice: decide against what this call wrote.
        let mut written: std::collections::HashMap<Vec<u8>, LatestVersion> =
            std::collections::HashMap::new();
        let mut outcomes = Vec::with_capacity(changes.len());
        for change in changes {
            let latest_key = inner
                .keys
                .text_key(section::PULL_LATEST, &record_tail(change.kind, &change.id));
            let latest = match written.get(&latest_key) {
                Some(latest) => Some(*latest),
                None => match inner.tree.get(&latest_key).map_err(io_error)? {
                    Some(bytes) => Some(from_json::<LatestVersion>("latest version", &bytes)?),
                    None => None,
                },
            };
            let version_ms = match admit(latest.as_ref(), change.op, change.version_ms) {
                Ok(version_ms) => version_ms,
                Err(outcome) => {
                    outcomes.push(outcome);
                    continue;
                }
            };
            head += 1;
            let stored = StoredChange {
                seq: head,
                kind: change.kind,
                op: change.op,
                id: change.id,
                version_ms,
                modified_at: change.modified_at,
                record: change.record,
                own: change.own,
                via: change.via,
                received_ms: now_ms,
            };
            let mark = LatestVersion {
                version_ms,
                seq: head,
                deleted: change.op == ChangeOp::Delete,
            };
            batch.insert(change_key(inner, head), to_json(&stored)?);
            batch.insert(latest_key.clone(), to_json(&mark)?);
            written.insert(latest_key, mark);
            outcomes.push(AppendOutcome::Appended { seq: head });
        }
        inner.tree.apply_batch(batch).map_err(io_error)?;
        Ok(outcomes)
    }

    /// Up to `limit` changes with `seq > after`, in order.
    pub fn changes_after(&self, after: u64, limit: usize) -> Result<Vec<StoredChange>, StoreError> {
        let inner = self.inner();
        inner.settle()?;
        let start = change_key(inner, after.saturating_add(1));
        let prefix = inner.keys.section_prefix(section::CHANGE_LOG);
        let range = match prefix_end(&prefix) {
            Some(end) => inner.tree.range(start..end),
            None => inner.tree.range(start..),
        };
        range
            .take(limit)
            .map(|item| {
                let (_, value) = item.map_err(io_error)?;
                from_json("change", &value)
            })
            .collect()
    }

    /// The first change received at or after `from_ms` (`None`: none yet). Sequence numbers
    /// are dense above the pruned prefix and receipt times rise with them: a binary search.
    pub fn first_change_received_from(&self, from_ms: u64) -> Result<Option<u64>, StoreError> {
        let Some(first) = self.changes_after(0, 1)?.into_iter().next() else {
            return Ok(None);
        };
        if first.received_ms >= from_ms {
            return Ok(Some(first.seq));
        }
        // Invariant: the change at `low` was received before `from_ms`; none after `high`.
        let (mut low, mut high) = (first.seq, self.change_log_head()?);
        while low < high {
            let mid = low + (high - low).div_ceil(2);
            match self.changes_after(mid - 1, 1)?.into_iter().next() {
                Some(change) if change.received_ms < from_ms => low = change.seq.max(mid),
                _ => high = mid - 1,
            }
        }
        Ok(self
            .changes_after(low, 1)?
            .into_iter()
            .next()
            .map(|change| change.seq))
    }

    /// The newest logged version of a record.
    pub fn latest_version(
        &self,
        kind: ChangeKind,
        id: &str,
    ) -> Result<Option<LatestVersion>, StoreError> {
        let inner = self.inner();
        inner.settle()?;
        let key = inner
            .keys
            .text_key(section::PULL_LATEST, &record_tail(kind, id));
        match inner.tree.get(key).map_err(io_error)? {
            Some(bytes) => Ok(Some(from_json("latest version", &bytes)?)),
            None => Ok(None),
        }
    }

    /// Drops changes below `below_seq` received before `before_ms` (every destination has
    /// them, and the retention for replays has passed), at most `limit` of them (the prune
    /// comes back for the rest). Returns how many.
    pub fn prune_changes(
        &self,
        below_seq: u64,
        before_ms: u64,
        limit: usize,
    ) -> Result<u64, StoreError> {
        let page = self.changes_after(0, limit)?;
        let prunable: Vec<u64> = page
            .iter()
            .take_while(|change| change.seq < below_seq && change.received_ms < before_ms)
            .map(|change| change.seq)
            .collect();
        if prunable.is_empty() {
            return Ok(0);
        }
        let inner = self.inner();
        let _guard = inner.lock_for_write()?;
        let mut batch = sled::Batch::default();
        for seq in &prunable {
            batch.remove(change_key(inner, *seq));
        }
        inner.tree.apply_batch(batch).map_err(io_error)?;
        Ok(prunable.len() as u64)
    }

    /// Records waiting for a re-read (oldest first per kind).
    pub fn rereads(&self, limit: usize) -> Result<Vec<RereadRequest>, StoreError> {
        let inner = self.inner();
        inner.settle()?;
        inner
            .tree
            .scan_prefix(inner.keys.section_prefix(section::PULL_REREAD))
            .values()
            .take(limit)
            .map(|value| from_json("re-read request", &value.map_err(io_error)?))
            .collect()
    }

    /// Asks for re-reads (a request already waiting takes the new request time).
    pub fn request_rereads(&self, requests: &[RereadRequest]) -> Result<(), StoreError> {
        let inner = self.inner();
        let _guard = inner.lock_for_write()?;
        let mut batch = sled::Batch::default();
        for request in requests {
            let key = inner.keys.text_key(
                section::PULL_REREAD,
                &record_tail(request.kind, &request.id),
            );
            // A waiting request is refreshed: a re-read already out must not remove it.
            batch.insert(key, to_json(request)?);
        }
        inner.tree.apply_batch(batch).map_err(io_error)
    }

    /// Re-reads done: the records read were appended (or were stale), the others are gone.
    /// A request made after `asked_before_ms` (a newer thin webhook while the re-read was out)
    /// stays for the next pass.
    pub fn finish_rereads(
        &self,
        done: &[(ChangeKind, String)],
        asked_before_ms: u64,
    ) -> Result<(), StoreError> {
        let inner = self.inner();
        let _guard = inner.lock_for_write()?;
        let mut batch = sled::Batch::default();
        for (kind, id) in done {
            let key = inner
                .keys
                .text_key(section::PULL_REREAD, &record_tail(*kind, id));
            let newer = match inner.tree.get(&key).map_err(io_error)? {
                Some(bytes) => {
                    from_json::<RereadRequest>("re-read request", &bytes)?.requested_ms
                        > asked_before_ms
                }
                None => false,
            };
            if !newer {
                batch.remove(key);
            }
        }
        inner.tree.apply_batch(batch).map_err(io_error)
    }

    /// The backstop poll's high-water mark for a kind (`pull:{kind}`).
    pub fn backstop_mark(
        &self,
        kind: ChangeKind,
    ) -> Result<Option<super::poll_ops::PollMark>, StoreError> {
        match self.get_checkpoint(&backstop_name(kind))? {
            Some(bytes) => Ok(Some(from_json("backstop mark", &bytes)?)),
            None => Ok(None),
        }
    }

    pub fn put_backstop_mark(
        &self,
        kind: ChangeKind,
        mark: &super::poll_ops::PollMark,
    ) -> Result<(), StoreError> {
        self.put_checkpoint(&backstop_name(kind), &to_json(mark)?)
    }

    pub fn destination_checkpoint(&self, name: &str) -> Result<DestinationCheckpoint, StoreError> {
        match self.get_checkpoint(&checkpoint_name(name))? {
            Some(bytes) => from_json("destination checkpoint", &bytes),
            None => Ok(DestinationCheckpoint::default()),
        }
    }

    pub fn put_destination_checkpoint(
        &self,
        name: &str,
        checkpoint: DestinationCheckpoint,
    ) -> Result<(), StoreError> {
        self.put_checkpoint(&checkpoint_name(name), &to_json(&checkpoint)?)
    }

    /// Moves a destination's checkpoint from `expected` to `to`, unless someone else (an
    /// operator's replay) moved it meanwhile: false then, and nothing is written.
    pub fn advance_destination_checkpoint(
        &self,
        name: &str,
        expected: u64,
        to: u64,
    ) -> Result<bool, StoreError> {
        let inner = self.inner();
        let key = inner.keys.checkpoint(&checkpoint_name(name));
        let _guard = inner.lock_for_write()?;
        let stored = match inner.read::<super::Checkpoint>(&key)? {
            Some(checkpoint) => {
                from_json::<DestinationCheckpoint>("destination checkpoint", &checkpoint.bytes)?.seq
            }
            None => 0,
        };
        if stored != expected {
            return Ok(false);
        }
        let value = super::codec::encode(&super::Checkpoint {
            bytes: to_json(&DestinationCheckpoint { seq: to })?,
        })?;
        inner.tree.insert(key, value).map_err(io_error)?;
        Ok(true)
    }

    /// Whether an operator paused the destination.
    pub fn destination_paused(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .get_checkpoint(&format!("dest-paused:{name}"))?
            .is_some_and(|bytes| bytes == b"true"))
    }

    pub fn set_destination_paused(&self, name: &str, paused: bool) -> Result<(), StoreError> {
        let value: &[u8] = if paused { b"true" } else { b"false" };
        self.put_checkpoint(&format!("dest-paused:{name}"), value)
    }

    pub fn destination_state(&self, name: &str) -> Result<DestinationState, StoreError> {
        let inner = self.inner();
        inner.settle()?;
        match inner
            .tree
            .get(inner.keys.text_key(section::DEST_STATE, name))
            .map_err(io_error)?
        {
            Some(bytes) => from_json("destination state", &bytes),
            None => Ok(DestinationState::default()),
        }
    }

    pub fn put_destination_state(
        &self,
        name: &str,
        state: &DestinationState,
    ) -> Result<(), StoreError> {
        let inner = self.inner();
        let _guard = inner.lock_for_write()?;
        inner
            .tree
            .insert(
                inner.keys.text_key(section::DEST_STATE, name),
                to_json(state)?,
            )
            .map_err(io_error)?;
        Ok(())
    }

    /// Stores dead letters of a destination.
    pub fn put_destination_dead_letters(
        &self,
        letters: &[DestinationDeadLetter],
    ) -> Result<(), StoreError> {
        let inner = self.inner();
        let _guard = inner.lock_for_write()?;
        let mut batch = sled::Batch::default();
        for letter in letters {
            let key = inner.keys.source_key(
                section::DEST_DEAD,
                &letter.destination,
                &letter.change.seq.to_be_bytes(),
            );
            batch.insert(key, to_json(letter)?);
        }
        inner.tree.apply_batch(batch).map_err(io_error)
    }

    /// Dead letters of one destination (all when `None`), oldest change first, after
    /// `(destination, seq)` when given, at most `limit`.
    pub fn destination_dead_letters(
        &self,
        destination: Option<&str>,
        after: Option<(&str, u64)>,
        limit: usize,
    ) -> Result<Vec<DestinationDeadLetter>, StoreError> {
        let inner = self.inner();
        inner.settle()?;
        let prefix = match destination {
            Some(name) => inner.keys.source_key(section::DEST_DEAD, name, &[]),
            None => inner.keys.section_prefix(section::DEST_DEAD),
        };
        let start = match after {
            Some((name, seq)) => {
                let mut key = inner
                    .keys
                    .source_key(section::DEST_DEAD, name, &seq.to_be_bytes());
                key.push(0);
                key
            }
            None => prefix.clone(),
        };
        let range = match prefix_end(&prefix) {
            Some(end) => inner.tree.range(start.max(prefix.clone())..end),
            None => inner.tree.range(start.max(prefix.clone())..),
        };
        range
            .take(limit)
            .map(|item| from_json("destination dead letter", &item.map_err(io_error)?.1))
            .collect()
    }

    pub fn destination_dead_letter(
        &self,
        destination: &str,
        seq: u64,
    ) -> Result<Option<DestinationDeadLetter>, StoreError> {
        let inner = self.inner();
        inner.settle()?;
        let key = inner
            .keys
            .source_key(section::DEST_DEAD, destination, &seq.to_be_bytes());
        match inner.tree.get(key).map_err(io_error)? {
            Some(bytes) => Ok(Some(from_json("destination dead letter", &bytes)?)),
            None => Ok(None),
        }
    }

    /// Removes a dead letter; with `replay`, its change is logged again under a new sequence
    /// number (when it is still the record's newest version; a superseded one is only
    /// removed), so the destination — and, harmlessly, every other one — receives it again.
    /// Answers whether the dead letter existed.
    pub fn settle_destination_dead_letter(
        &self,
        destination: &str,
        seq: u64,
        replay: bool,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let head = self.change_log_head()?;
        let inner = self.inner();
        let _guard = inner.lock_for_write()?;
        let key = inner
            .keys
            .source_key(section::DEST_DEAD, destination, &seq.to_be_bytes());
        let Some(bytes) = inner.tree.get(&key).map_err(io_error)? else {
            return Ok(false);
        };
        let letter: DestinationDeadLetter = from_json("destination dead letter", &bytes)?;
        let mut batch = sled::Batch::default();
        batch.remove(key);
        if replay {
            let change = letter.change;
            let latest_key = inner
                .keys
                .text_key(section::PULL_LATEST, &record_tail(change.kind, &change.id));
            let latest = match inner.tree.get(&latest_key).map_err(io_error)? {
                Some(bytes) => Some(from_json::<LatestVersion>("latest version", &bytes)?),
                None => None,
            };
            if latest.map_or(true, |latest| latest.seq == change.seq) {
                let seq = head + 1;
                let mark = LatestVersion {
                    version_ms: change.version_ms,
                    seq,
                    deleted: change.op == ChangeOp::Delete,
                };
                let again = StoredChange {
                    seq,
                    received_ms: now_ms,
                    ..change
                };
                batch.insert(change_key(inner, seq), to_json(&again)?);
                batch.insert(latest_key, to_json(&mark)?);
            }
        }
        inner.tree.apply_batch(batch).map_err(io_error)?;
        Ok(true)
    }
}

fn change_key(inner: &super::tenant::TenantInner, seq: u64) -> Vec<u8> {
    let mut key = inner.keys.section_prefix(section::CHANGE_LOG);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn seq_of(tail: &[u8]) -> u64 {
    tail.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_keeps_newer_versions_and_makes_deletes_terminal() {
        // Goal: older and equal versions are refused, a delete is logged once at no lower version, an upsert after a delete needs a newer version.
        let upsert = |version_ms, seq| LatestVersion {
            version_ms,
            seq,
            deleted: false,
        };
        assert_eq!(admit(None, ChangeOp::Upsert, 5), Ok(5));
        assert_eq!(admit(Some(&upsert(5, 1)), ChangeOp::Upsert, 6), Ok(6));
        assert_eq!(
            admit(Some(&upsert(5, 1)), ChangeOp::Upsert, 5),
            Err(AppendOutcome::Duplicate)
        );
        assert_eq!(
            admit(Some(&upsert(5, 1)), ChangeOp::Upsert, 4),
            Err(AppendOutcome::Stale)
        );
        assert_eq!(admit(Some(&upsert(5, 1)), ChangeOp::Delete, 3), Ok(5));
        let deleted = LatestVersion {
            deleted: true,
            ..upsert(5, 2)
        };
        assert_eq!(
            admit(Some(&deleted), ChangeOp::Delete, 9),
            Err(AppendOutcome::Duplicate)
        );
        assert_eq!(
            admit(Some(&deleted), ChangeOp::Upsert, 5),
            Err(AppendOutcome::Stale)
        );
        assert_eq!(admit(Some(&deleted), ChangeOp::Upsert, 6), Ok(6));
    }
}
