//! Money reconciliation in the store (docs/backfill.md "Money reconciliation"):
//!
//! - **Money facts**, written by the submitter's completion in its one atomic batch
//!   ([`MoneyWrites`]): an accepted gift's money under `{source}\0{day}\0{transaction id}`
//!   and its index entry (the day, so that the gift's accepted reversal can mark it
//!   refunded). A body that cannot be read records nothing (logged and counted); a dead
//!   letter is never recorded (only acceptances call here).
//! - **Jobs** (checkpoint `recon:{id}`, JSON) and the Virtuous rows a running job read, each
//!   page's rows written in the same atomic batch as the job's progress (its `skip`): a
//!   crash reads a page again (rows are keyed by Virtuous id), never skips one.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::codec::{decode, encode};
use super::keys::{prefix_end, section};
use super::types::Checkpoint;
use super::{io_error, EntryFact, RecordKind, StoreError, TenantStore};
use crate::money::{
    job_checkpoint, parse_gift_money, ReconciliationJob, SourceFact, StoredMoney, VirtuousRow,
    JOB_CHECKPOINT_PREFIX,
};

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|err| StoreError::Codec(format!("money: {err}")))
}

fn from_json<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|err| StoreError::Codec(format!("{what}: {err}")))
}

fn checkpoint_value(bytes: Vec<u8>) -> Result<Vec<u8>, StoreError> {
    encode(&Checkpoint { bytes })
}

/// The money facts one completion batch writes (the completion owns one).
#[derive(Default)]
pub(super) struct MoneyWrites {
    /// Facts written in this batch by index key: a reversal completed in the same batch as
    /// its gift still finds it.
    written: HashMap<Vec<u8>, (Vec<u8>, StoredMoney)>,
}

impl MoneyWrites {
    /// Virtuous accepted the gift `fact`: its money goes into `batch` (a body that cannot be
    /// read is logged and counted, and records nothing: the completion goes on).
    pub(super) fn gift_accepted(
        &mut self,
        inner: &super::tenant::TenantInner,
        batch: &mut sled::Batch,
        fact: &EntryFact,
    ) -> Result<(), StoreError> {
        let money = match parse_gift_money(&fact.body_json) {
            Ok(money) => money,
            Err(reason) => {
                crate::metrics::count_money_fact("unreadable");
                tracing::warn!(
                    tenant_id = %inner.tenant_id,
                    source = %fact.source,
                    source_id = %fact.source_id.escape_debug(),
                    reason = %reason.escape_debug(),
                    "accepted gift has no readable money; reconciliation will not see it"
                );
                return Ok(());
            }
        };
        let keys = &inner.keys;
        let index_key = keys.money_index(&fact.source, &fact.source_id);
        let fact_key = keys.money_fact(&fact.source, &money.day, &fact.source_id);
        // A gift accepted again (a re-send after a crash) keeps a refund already recorded;
        // one that moved day (an edited replay) leaves no fact behind on the old day.
        let mut refunded = false;
        if let Some((old_key, old)) =
            self.stored(inner, &index_key, &fact.source, &fact.source_id)?
        {
            if old_key == fact_key {
                refunded = old.refunded;
            } else {
                batch.remove(old_key);
            }
        }
        let stored = StoredMoney {
            project: money.project,
            amount_minor: money.amount_minor,
            currency: money.currency,
            refunded,
        };
        batch.insert(fact_key.clone(), to_json(&stored)?);
        batch.insert(index_key.clone(), money.day.into_bytes());
        self.written.insert(index_key, (fact_key, stored));
        crate::metrics::count_money_fact("recorded");
        Ok(())
    }

    /// Virtuous accepted the reversal of gift `fact.source_id`: the gift's money is marked
    /// refunded (nothing to mark when no fact was recorded for it).
    pub(super) fn reversal_accepted(
        &mut self,
        inner: &super::tenant::TenantInner,
        batch: &mut sled::Batch,
        fact: &EntryFact,
    ) -> Result<(), StoreError> {
        let index_key = inner.keys.money_index(&fact.source, &fact.source_id);
        let Some((fact_key, mut stored)) =
            self.stored(inner, &index_key, &fact.source, &fact.source_id)?
        else {
            crate::metrics::count_money_fact("refund_without_gift");
            tracing::debug!(tenant_id = %inner.tenant_id, source = %fact.source, source_id = %fact.source_id.escape_debug(), "reversal accepted for a gift with no money fact");
            return Ok(());
        };
        stored.refunded = true;
        batch.insert(fact_key.clone(), to_json(&stored)?);
        self.written.insert(index_key, (fact_key, stored));
        crate::metrics::count_money_fact("refunded");
        Ok(())
    }

    /// The fact an index key points to: written earlier in this batch, else stored.
    fn stored(
        &self,
        inner: &super::tenant::TenantInner,
        index_key: &[u8],
        source: &str,
        transaction_id: &str,
    ) -> Result<Option<(Vec<u8>, StoredMoney)>, StoreError> {
        if let Some(written) = self.written.get(index_key) {
            return Ok(Some(written.clone()));
        }
        let Some(day) = inner.tree.get(index_key).map_err(io_error)? else {
            return Ok(None);
        };
        let day = String::from_utf8_lossy(&day).into_owned();
        let fact_key = inner.keys.money_fact(source, &day, transaction_id);
        let Some(bytes) = inner.tree.get(&fact_key).map_err(io_error)? else {
            return Ok(None);
        };
        // An unreadable fact must not block the completion (it would fail every retry):
        // it counts as absent, and a gift accepted again overwrites it.
        match from_json::<StoredMoney>("money fact", &bytes) {
            Ok(stored) => Ok(Some((fact_key, stored))),
            Err(error) => {
                tracing::warn!(tenant_id = %inner.tenant_id, source = %source, error = %error, "stored money fact unreadable; treated as absent");
                Ok(None)
            }
        }
    }
}

impl TenantStore {
    /// The money facts of `source` for days `from..=to` (`YYYY-MM-DD`), in day order.
    pub fn money_facts(
        &self,
        source: &str,
        from: &str,
        to: &str,
    ) -> Result<Vec<SourceFact>, StoreError> {
        let inner = self.inner();
        let start = inner.keys.money_day_prefix(source, from);
        let end = prefix_end(&inner.keys.money_day_prefix(source, to));
        let upper = end.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        // The day and id are read back from the key: after `{prefix}{source}\0`.
        let tail_at = inner
            .keys
            .source_key(section::MONEY_FACT, source, &[])
            .len();
        let mut facts = Vec::new();
        for item in inner
            .tree
            .range::<Vec<u8>, _>((std::ops::Bound::Included(start), upper))
        {
            let (key, value) = item.map_err(io_error)?;
            let tail = String::from_utf8_lossy(&key[tail_at..]).into_owned();
            let Some((day, transaction_id)) = tail.split_once('\0') else {
                continue;
            };
            let stored: StoredMoney = from_json("money fact", &value)?;
            facts.push(SourceFact {
                transaction_id: transaction_id.to_string(),
                day: day.to_string(),
                project: stored.project,
                amount_minor: stored.amount_minor,
                currency: stored.currency,
                refunded: stored.refunded,
            });
        }
        Ok(facts)
    }

    /// The money fact of one transaction (its day and value), if recorded.
    pub fn money_fact(
        &self,
        source: &str,
        transaction_id: &str,
    ) -> Result<Option<(String, StoredMoney)>, StoreError> {
        let inner = self.inner();
        let Some(day) = inner
            .tree
            .get(inner.keys.money_index(source, transaction_id))
            .map_err(io_error)?
        else {
            return Ok(None);
        };
        let day = String::from_utf8_lossy(&day).into_owned();
        let key = inner.keys.money_fact(source, &day, transaction_id);
        match inner.tree.get(key).map_err(io_error)? {
            Some(bytes) => Ok(Some((day, from_json("money fact", &bytes)?))),
            None => Ok(None),
        }
    }

    /// Whether the gift `source_id` of `source` waits for Virtuous's import (submitted, not
    /// yet confirmed: its unconfirmed-index key is there).
    pub fn gift_awaits_import(&self, source: &str, source_id: &str) -> Result<bool, StoreError> {
        let inner = self.inner();
        inner
            .tree
            .contains_key(inner.keys.unconfirmed(RecordKind::Gift, source, source_id))
            .map_err(io_error)
    }

    /// A new job id (`rec-{n}`, unique in the process's store).
    pub fn new_reconciliation_id(&self) -> Result<String, StoreError> {
        let seq = self.inner().db.generate_id().map_err(io_error)?;
        Ok(format!("rec-{seq}"))
    }

    pub fn reconciliation_job(&self, id: &str) -> Result<Option<ReconciliationJob>, StoreError> {
        self.get_checkpoint(&job_checkpoint(id))?
            .map(|bytes| from_json("reconciliation job", &bytes))
            .transpose()
    }

    /// Every job, oldest first.
    pub fn reconciliation_jobs(&self) -> Result<Vec<ReconciliationJob>, StoreError> {
        let inner = self.inner();
        inner.settle()?;
        let prefix = inner.keys.checkpoint(JOB_CHECKPOINT_PREFIX);
        let mut jobs: Vec<ReconciliationJob> = Vec::new();
        for item in inner.tree.scan_prefix(prefix).values() {
            let checkpoint: Checkpoint = decode(&item.map_err(io_error)?)?;
            jobs.push(from_json("reconciliation job", &checkpoint.bytes)?);
        }
        jobs.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
        Ok(jobs)
    }

    /// Stores a job document on its own (created, started, failed).
    pub fn put_reconciliation_job(&self, job: &ReconciliationJob) -> Result<(), StoreError> {
        self.put_checkpoint(&job_checkpoint(&job.id), &to_json(job)?)
    }

    /// One page of a running job: its rows and the job's progress in one atomic write.
    pub fn put_reconciliation_page(
        &self,
        job: &ReconciliationJob,
        rows: &[VirtuousRow],
    ) -> Result<(), StoreError> {
        let inner = self.inner();
        let _guard = inner.lock_for_write()?;
        let mut batch = sled::Batch::default();
        for row in rows {
            batch.insert(
                inner.keys.recon_row(&job.id, &row.virtuous_id),
                to_json(row)?,
            );
        }
        batch.insert(
            inner.keys.checkpoint(&job_checkpoint(&job.id)),
            checkpoint_value(to_json(job)?)?,
        );
        inner.tree.apply_batch(batch).map_err(io_error)
    }

    /// The Virtuous rows job `id` has read so far.
    pub fn reconciliation_rows(&self, id: &str) -> Result<Vec<VirtuousRow>, StoreError> {
        let inner = self.inner();
        inner.settle()?;
        let mut rows = Vec::new();
        for item in inner
            .tree
            .scan_prefix(inner.keys.recon_row(id, ""))
            .values()
        {
            rows.push(from_json("reconciliation row", &item.map_err(io_error)?)?);
        }
        Ok(rows)
    }

    /// Stores a finished job and drops its rows, in one atomic write.
    pub fn finish_reconciliation(&self, job: &ReconciliationJob) -> Result<(), StoreError> {
        let inner = self.inner();
        let _guard = inner.lock_for_write()?;
        let mut batch = sled::Batch::default();
        for key in inner
            .tree
            .scan_prefix(inner.keys.recon_row(&job.id, ""))
            .keys()
        {
            batch.remove(key.map_err(io_error)?);
        }
        batch.insert(
            inner.keys.checkpoint(&job_checkpoint(&job.id)),
            checkpoint_value(to_json(job)?)?,
        );
        inner.tree.apply_batch(batch).map_err(io_error)
    }

    /// Removes job `id` and its rows (the oldest finished jobs are pruned).
    pub fn remove_reconciliation(&self, id: &str) -> Result<(), StoreError> {
        let inner = self.inner();
        let _guard = inner.lock_for_write()?;
        let mut batch = sled::Batch::default();
        for key in inner.tree.scan_prefix(inner.keys.recon_row(id, "")).keys() {
            batch.remove(key.map_err(io_error)?);
        }
        batch.remove(inner.keys.checkpoint(&job_checkpoint(id)));
        inner.tree.apply_batch(batch).map_err(io_error)
    }
}

#[cfg(test)]
#[path = "money_ops_tests.rs"]
mod tests;
