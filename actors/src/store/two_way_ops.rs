//! Two-way sync's stored state (docs/two-way.md): each pair's links (one per partner
//! record), the index from Virtuous ids to links, the work list of links with writes pending,
//! open conflicts, counters, dead letters, and the cross-match job with its rows and report.
//!
//! Values are JSON. Every change to a pair's state is one atomic batch ([`TwoWayUpdate`]);
//! callers hold the tenant's two-way lock (`TenantShared::two_way_guard`) around the read,
//! the decision and this write, and await the store's flush before they acknowledge.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::keys::{prefix_end, section};
use super::{io_error, StoreError, TenantStore};
use crate::two_way::cross_match::{PartnerRow, ReportRow, VirtuousRow};
use crate::two_way::decide::{decide, Decision, Verdict};
use crate::two_way::{Conflict, Incoming, Link, Mode, PairCounts, PairSettings, Side};

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|err| StoreError::Codec(format!("two-way state: {err}")))
}

fn from_json<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|err| StoreError::Codec(format!("{what}: {err}")))
}

/// A write that could not be made (refused, or its retries spent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TwoWayDeadLetter {
    pub seq: u64,
    pub pair: String,
    pub partner_id: String,
    pub virtuous_id: Option<String>,
    pub side: Side,
    pub fields: crate::two_way::Fields,
    pub reason: String,
    pub attempts: u32,
    pub at_ms: u64,
}

/// One atomic change of two-way state.
#[derive(Debug, Clone, Default)]
pub struct TwoWayUpdate {
    /// Links to store (the Virtuous-id index and the pending work list follow them).
    pub links: Vec<Link>,
    /// Links to remove (a record moved to its real partner id), by `(pair, partner_id)`.
    pub removed_links: Vec<(String, String)>,
    /// Conflicts opened or updated.
    pub conflicts: Vec<Conflict>,
    /// Conflicts settled, by id.
    pub resolved: Vec<String>,
    /// Counter increments, by pair.
    pub counts: Vec<(String, PairCounts)>,
    pub dead_letters: Vec<TwoWayDeadLetter>,
    /// A cross-match job's state stored with the links it applied, by pair.
    pub cross_match_job: Option<(String, serde_json::Value)>,
}

/// Cross-match rows kept while a job pages both sides: `p` partner, `v` Virtuous, `r` report.
const ROW_PARTNER: &str = "p";
const ROW_VIRTUOUS: &str = "v";
const ROW_REPORT: &str = "r";

fn add_counts(into: &mut PairCounts, delta: &PairCounts) {
    macro_rules! add {
        ($($field:ident),*) => { $( into.$field += delta.$field; )* };
    }
    add!(
        partner_changes,
        virtuous_changes,
        stale,
        dropped_origin,
        dropped_ledger,
        dropped_window,
        dropped_ownership,
        writes_to_partner,
        writes_to_virtuous,
        would_write_partner,
        would_write_virtuous,
        conflicts_opened,
        conflicts_resolved,
        write_failures,
        dead_letters,
        unlinked
    );
}

/// The counters one decision adds.
pub fn decision_counts(
    pair: &PairSettings,
    incoming: &Incoming,
    decision: &Decision,
    opened: u64,
) -> PairCounts {
    let mut counts = PairCounts::default();
    match incoming.side {
        Side::Partner => counts.partner_changes = 1,
        Side::Virtuous => counts.virtuous_changes = 1,
    }
    match decision.verdict {
        Some(Verdict::Stale) => counts.stale = 1,
        Some(Verdict::Echo(layer)) => counts.dropped(layer, 1),
        _ => {}
    }
    counts.dropped_ownership += decision.ownership_drops;
    counts.conflicts_opened = opened;
    if pair.mode == Mode::Observe {
        counts.would_write_partner = u64::from(!decision.to_partner.is_empty());
        counts.would_write_virtuous = u64::from(!decision.to_virtuous.is_empty());
    }
    counts
}

impl TenantStore {
    /// Decides `incoming` for `link` and stores the outcome (link, conflicts, counters) in
    /// one batch. The caller holds the tenant's two-way lock.
    pub fn apply_two_way_change(
        &self,
        pair: &PairSettings,
        mut link: Link,
        incoming: &Incoming,
        now_ms: u64,
    ) -> Result<(Link, Decision, u64), StoreError> {
        let before: Vec<String> = link.conflicts.clone();
        let decision = decide(&mut link, pair, incoming, now_ms);
        let mut conflicts = Vec::new();
        for conflict in &decision.conflicts {
            if before.contains(&conflict.field) {
                // An update of an open conflict: keep its opening time and the other value.
                let mut stored = self
                    .two_way_conflict(&conflict.id)?
                    .unwrap_or_else(|| conflict.clone());
                match incoming.side {
                    Side::Partner => stored.partner = conflict.partner.clone(),
                    Side::Virtuous => stored.virtuous = conflict.virtuous.clone(),
                }
                stored.updated_ms = now_ms;
                conflicts.push(stored);
            } else {
                conflicts.push(conflict.clone());
            }
        }
        let opened = decision
            .conflicts
            .iter()
            .filter(|conflict| !before.contains(&conflict.field))
            .count() as u64;
        let counts = decision_counts(pair, incoming, &decision, opened);
        self.save_two_way(TwoWayUpdate {
            links: vec![link.clone()],
            conflicts,
            counts: vec![(pair.pair.clone(), counts)],
            ..TwoWayUpdate::default()
        })?;
        Ok((link, decision, opened))
    }

    fn pair_key(&self, section: u8, pair: &str, tail: &str) -> Vec<u8> {
        self.inner().keys.source_key(section, pair, tail.as_bytes())
    }

    fn get_json<T: DeserializeOwned>(
        &self,
        what: &str,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        match self.inner().tree.get(key).map_err(io_error)? {
            Some(bytes) => Ok(Some(from_json(what, &bytes)?)),
            None => Ok(None),
        }
    }

    /// Values under `prefix` after `after` (exclusive), at most `limit`.
    fn scan_json<T: DeserializeOwned>(
        &self,
        what: &str,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, T)>, StoreError> {
        let tree = &self.inner().tree;
        let start: Vec<u8> = match after {
            Some(after) => {
                let mut start = after.to_vec();
                start.push(0);
                start
            }
            None => prefix.to_vec(),
        };
        let range = match prefix_end(prefix) {
            Some(end) => tree.range(start..end),
            None => tree.range(start..),
        };
        let mut values = Vec::new();
        for item in range.take(limit) {
            let (key, bytes) = item.map_err(io_error)?;
            values.push((key.to_vec(), from_json(what, &bytes)?));
        }
        Ok(values)
    }

    /// The link of a partner record.
    pub fn two_way_link(&self, pair: &str, partner_id: &str) -> Result<Option<Link>, StoreError> {
        self.get_json(
            "two-way link",
            &self.pair_key(section::TW_LINK, pair, partner_id),
        )
    }

    /// The link of a Virtuous contact.
    pub fn two_way_link_by_virtuous(
        &self,
        pair: &str,
        virtuous_id: &str,
    ) -> Result<Option<Link>, StoreError> {
        let index = self.pair_key(section::TW_BY_VIRTUOUS, pair, virtuous_id);
        let Some(partner_id) = self.inner().tree.get(&index).map_err(io_error)? else {
            return Ok(None);
        };
        self.two_way_link(pair, &String::from_utf8_lossy(&partner_id))
    }

    /// A pair's links in partner-id order after `after`, at most `limit`.
    pub fn two_way_links(
        &self,
        pair: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Link>, StoreError> {
        let prefix = self.pair_key(section::TW_LINK, pair, "");
        let after = after.map(|id| self.pair_key(section::TW_LINK, pair, id));
        Ok(self
            .scan_json::<Link>("two-way link", &prefix, after.as_deref(), limit)?
            .into_iter()
            .map(|(_, link)| link)
            .collect())
    }

    /// Partner ids of the pair's links with a write pending, at most `limit`.
    pub fn two_way_pending(&self, pair: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        let prefix = self.pair_key(section::TW_PENDING, pair, "");
        let mut ids = Vec::new();
        for item in self.inner().tree.scan_prefix(&prefix).take(limit) {
            let (key, _) = item.map_err(io_error)?;
            ids.push(String::from_utf8_lossy(&key[prefix.len()..]).into_owned());
        }
        Ok(ids)
    }

    /// Open conflicts (of one pair, or all), oldest key first, after `after`.
    pub fn two_way_conflicts(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Conflict>, StoreError> {
        let keys = &self.inner().keys;
        let prefix = keys.section_prefix(section::TW_CONFLICT);
        let after = after.map(|id| keys.text_key(section::TW_CONFLICT, id));
        Ok(self
            .scan_json::<Conflict>("conflict", &prefix, after.as_deref(), limit)?
            .into_iter()
            .map(|(_, conflict)| conflict)
            .collect())
    }

    pub fn two_way_conflict(&self, id: &str) -> Result<Option<Conflict>, StoreError> {
        let key = self.inner().keys.text_key(section::TW_CONFLICT, id);
        self.get_json("conflict", &key)
    }

    /// A pair's counters.
    pub fn two_way_counts(&self, pair: &str) -> Result<PairCounts, StoreError> {
        Ok(self
            .get_json(
                "two-way counts",
                &self.pair_key(section::TW_STATE, pair, "counts"),
            )?
            .unwrap_or_default())
    }

    /// A pair's dead letters, oldest first, after `after_seq`.
    pub fn two_way_dead_letters(
        &self,
        pair: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<TwoWayDeadLetter>, StoreError> {
        let prefix = self.pair_key(section::TW_DEAD, pair, "");
        let after = self.dead_key(pair, after_seq);
        Ok(self
            .scan_json::<TwoWayDeadLetter>("two-way dead letter", &prefix, Some(&after), limit)?
            .into_iter()
            .map(|(_, dead)| dead)
            .collect())
    }

    fn dead_key(&self, pair: &str, seq: u64) -> Vec<u8> {
        self.inner()
            .keys
            .source_key(section::TW_DEAD, pair, &seq.to_be_bytes())
    }

    /// Applies `update` in one atomic batch (not yet durable: await the store's flush).
    pub fn save_two_way(&self, update: TwoWayUpdate) -> Result<(), StoreError> {
        let inner = self.inner();
        let keys = &inner.keys;
        let mut batch = sled::Batch::default();
        for (pair, partner_id) in &update.removed_links {
            if let Some(old) = self.two_way_link(pair, partner_id)? {
                if let Some(virtuous_id) = &old.virtuous_id {
                    batch.remove(self.pair_key(section::TW_BY_VIRTUOUS, pair, virtuous_id));
                }
            }
            batch.remove(self.pair_key(section::TW_LINK, pair, partner_id));
            batch.remove(self.pair_key(section::TW_PENDING, pair, partner_id));
        }
        for link in &update.links {
            let old = self.two_way_link(&link.pair, &link.partner_id)?;
            if let Some(old_id) = old.as_ref().and_then(|old| old.virtuous_id.as_ref()) {
                if link.virtuous_id.as_ref() != Some(old_id) {
                    batch.remove(self.pair_key(section::TW_BY_VIRTUOUS, &link.pair, old_id));
                }
            }
            if let Some(virtuous_id) = &link.virtuous_id {
                batch.insert(
                    self.pair_key(section::TW_BY_VIRTUOUS, &link.pair, virtuous_id),
                    link.partner_id.as_bytes(),
                );
            }
            let pending_key = self.pair_key(section::TW_PENDING, &link.pair, &link.partner_id);
            if link.pending(Side::Partner).is_empty()
                && link.pending(Side::Virtuous).is_empty()
                && !link.create_virtuous
                && !link.create_partner
            {
                batch.remove(pending_key);
            } else {
                batch.insert(pending_key, &[][..]);
            }
            batch.insert(
                self.pair_key(section::TW_LINK, &link.pair, &link.partner_id),
                to_json(link)?,
            );
        }
        for conflict in &update.conflicts {
            batch.insert(
                keys.text_key(section::TW_CONFLICT, &conflict.id),
                to_json(conflict)?,
            );
        }
        for id in &update.resolved {
            batch.remove(keys.text_key(section::TW_CONFLICT, id));
        }
        for (pair, delta) in &update.counts {
            let mut counts = self.two_way_counts(pair)?;
            add_counts(&mut counts, delta);
            batch.insert(
                self.pair_key(section::TW_STATE, pair, "counts"),
                to_json(&counts)?,
            );
        }
        for dead in &update.dead_letters {
            batch.insert(self.dead_key(&dead.pair, dead.seq), to_json(dead)?);
        }
        if let Some((pair, job)) = &update.cross_match_job {
            batch.insert(
                self.pair_key(section::TW_STATE, pair, "cross-match"),
                to_json(job)?,
            );
        }
        inner.tree.apply_batch(batch).map_err(io_error)?;
        Ok(())
    }

    /// The next dead-letter number of a pair.
    pub fn next_two_way_dead_seq(&self, pair: &str) -> Result<u64, StoreError> {
        let prefix = self.pair_key(section::TW_DEAD, pair, "");
        let last = self
            .inner()
            .tree
            .scan_prefix(&prefix)
            .keys()
            .next_back()
            .transpose()
            .map_err(io_error)?;
        Ok(last
            .and_then(|key| {
                let tail: [u8; 8] = key[key.len().checked_sub(8)?..].try_into().ok()?;
                Some(u64::from_be_bytes(tail))
            })
            .unwrap_or(0)
            + 1)
    }

    /// A pair's cross-match job state (JSON, owned by `inbound::cross_match`).
    pub fn cross_match_job<T: DeserializeOwned>(
        &self,
        pair: &str,
    ) -> Result<Option<T>, StoreError> {
        self.get_json(
            "cross-match job",
            &self.pair_key(section::TW_STATE, pair, "cross-match"),
        )
    }

    /// Stores the job state with the rows of one page, in one atomic batch.
    pub fn save_cross_match<T: Serialize>(
        &self,
        pair: &str,
        job: &T,
        partners: &[PartnerRow],
        virtuous: &[VirtuousRow],
        report: &[(u64, ReportRow)],
    ) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for row in partners {
            batch.insert(
                self.row_key(pair, ROW_PARTNER, row.id.as_bytes()),
                to_json(row)?,
            );
        }
        for row in virtuous {
            batch.insert(
                self.row_key(pair, ROW_VIRTUOUS, row.id.as_bytes()),
                to_json(row)?,
            );
        }
        for (seq, row) in report {
            batch.insert(
                self.row_key(pair, ROW_REPORT, &seq.to_be_bytes()),
                to_json(row)?,
            );
        }
        batch.insert(
            self.pair_key(section::TW_STATE, pair, "cross-match"),
            to_json(job)?,
        );
        self.inner().tree.apply_batch(batch).map_err(io_error)?;
        Ok(())
    }

    fn row_key(&self, pair: &str, kind: &str, tail: &[u8]) -> Vec<u8> {
        let mut key = self.pair_key(section::TW_XMATCH, pair, kind);
        key.push(0);
        key.extend_from_slice(tail);
        key
    }

    /// Every stored row of one kind of a job (partner or Virtuous), in id order.
    pub fn cross_match_rows<T: DeserializeOwned>(
        &self,
        pair: &str,
        partner_side: bool,
    ) -> Result<Vec<T>, StoreError> {
        let prefix = self.row_key(
            pair,
            if partner_side {
                ROW_PARTNER
            } else {
                ROW_VIRTUOUS
            },
            b"",
        );
        self.scan_json::<T>("cross-match row", &prefix, None, usize::MAX)
            .map(|rows| rows.into_iter().map(|(_, row)| row).collect())
    }

    /// Report rows after `after_seq` (exclusive), at most `limit`, with their numbers.
    pub fn cross_match_report(
        &self,
        pair: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<(u64, ReportRow)>, StoreError> {
        let prefix = self.row_key(pair, ROW_REPORT, b"");
        let after = self.row_key(pair, ROW_REPORT, &after_seq.to_be_bytes());
        let rows =
            self.scan_json::<ReportRow>("cross-match report", &prefix, Some(&after), limit)?;
        Ok(rows
            .into_iter()
            .filter_map(|(key, row)| {
                let tail: [u8; 8] = key[key.len().checked_sub(8)?..].try_into().ok()?;
                Some((u64::from_be_bytes(tail), row))
            })
            .collect())
    }

    /// Removes a job's rows and report (a new job starts from nothing).
    pub fn clear_cross_match(&self, pair: &str) -> Result<(), StoreError> {
        let prefix = self.pair_key(section::TW_XMATCH, pair, "");
        let tree = &self.inner().tree;
        loop {
            let mut batch = sled::Batch::default();
            let mut n = 0;
            for key in tree.scan_prefix(&prefix).keys().take(10_000) {
                batch.remove(key.map_err(io_error)?);
                n += 1;
            }
            if n == 0 {
                return Ok(());
            }
            tree.apply_batch(batch).map_err(io_error)?;
        }
    }
}
