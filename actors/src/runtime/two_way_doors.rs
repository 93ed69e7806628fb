//! Two-way sync's doors for the HTTP layer (docs/two-way.md "Admin API"): the pairs with
//! their counters, open conflicts and their resolution, a record's link, dead letters, and
//! the cross-match job (started and approved here, run by the pair's loop in Inbound).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use super::TenantHandle;
use crate::store::two_way_ops::{TwoWayDeadLetter, TwoWayUpdate};
use crate::store::StoreError;
use crate::two_way::cross_match::{CrossMatchJob, JobState, Policies, ReportRow};
use crate::two_way::fields::check_value;
use crate::two_way::{
    Conflict, Link, Mode, PairCounts, PairSettings, Resolution, Rule, FIELD_NAMES,
};

/// Most open conflicts or pending links counted for a view.
const COUNT_CAP: usize = 10_000;

/// One pair as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PairView {
    pub pair: String,
    pub mode: Mode,
    pub echo_window_s: u64,
    /// Every field with its rule (the configured one or the default).
    pub fields: BTreeMap<String, Rule>,
    pub counts: PairCounts,
    /// Records with a write on its way (counted up to 10,000).
    pub pending: u64,
    pub conflicts_open: u64,
    /// What the pair's loop shows while it runs.
    pub live: crate::two_way::PairLive,
}

/// Why a two-way request was refused.
#[derive(Debug, thiserror::Error)]
pub enum TwoWayError {
    #[error("no two-way pair `{0}` is configured for this tenant")]
    UnknownPair(String),
    #[error("no open conflict `{0}`")]
    UnknownConflict(String),
    #[error("{0}")]
    BadValue(String),
    /// The request does not fit the job's state (409).
    #[error("{0}")]
    NotNow(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl TenantHandle {
    fn pair_settings(&self, pair: &str) -> Result<PairSettings, TwoWayError> {
        self.shared
            .settings()
            .two_way
            .into_iter()
            .find(|settings| settings.pair == pair)
            .ok_or_else(|| TwoWayError::UnknownPair(pair.to_string()))
    }

    /// The tenant's pairs, in configuration order.
    pub fn two_way_pairs(&self) -> Result<Vec<PairView>, StoreError> {
        let store = self.shared.tenant_store();
        let conflicts = store.two_way_conflicts(None, COUNT_CAP)?;
        let live = self.shared.two_way_live();
        let mut views = Vec::new();
        for settings in self.shared.settings().two_way {
            views.push(PairView {
                pair: settings.pair.clone(),
                mode: settings.mode,
                echo_window_s: settings.echo_window_ms / 1_000,
                fields: FIELD_NAMES
                    .iter()
                    .map(|field| (field.to_string(), settings.rule(field)))
                    .collect(),
                counts: store.two_way_counts(&settings.pair)?,
                pending: store.two_way_pending(&settings.pair, COUNT_CAP)?.len() as u64,
                conflicts_open: conflicts
                    .iter()
                    .filter(|conflict| conflict.pair == settings.pair)
                    .count() as u64,
                live: live.get(&settings.pair).cloned().unwrap_or_default(),
            });
        }
        Ok(views)
    }

    /// Open conflicts after `after` (an id), at most `limit`.
    pub fn two_way_conflicts(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Conflict>, StoreError> {
        self.shared.tenant_store().two_way_conflicts(after, limit)
    }

    /// Settles a conflict: the chosen value goes to each side that lacks it. Resolves once
    /// the decision is durable; the pair's loop makes the writes.
    pub async fn resolve_conflict(
        &self,
        id: &str,
        resolution: Resolution,
    ) -> Result<Link, TwoWayError> {
        let shared = Arc::clone(&self.shared);
        let link = {
            let _guard = shared.two_way_guard();
            let store = shared.tenant_store();
            let conflict = store
                .two_way_conflict(id)?
                .ok_or_else(|| TwoWayError::UnknownConflict(id.to_string()))?;
            let pair = self.pair_settings(&conflict.pair)?;
            let value = match resolution {
                Resolution::Partner => conflict.partner.clone(),
                Resolution::Virtuous => conflict.virtuous.clone(),
                Resolution::Value(value) => {
                    check_value(&conflict.field, &value).map_err(TwoWayError::BadValue)?
                }
            };
            let mut link = store
                .two_way_link(&pair.pair, &conflict.partner_id)?
                .ok_or_else(|| TwoWayError::UnknownConflict(id.to_string()))?;
            let now_ms = shared.clock.now_ms();
            crate::two_way::decide::resolve(&mut link, &conflict.field, &value, now_ms);
            store.save_two_way(TwoWayUpdate {
                links: vec![link.clone()],
                resolved: vec![conflict.id.clone()],
                counts: vec![(
                    pair.pair.clone(),
                    PairCounts {
                        conflicts_resolved: 1,
                        ..PairCounts::default()
                    },
                )],
                ..TwoWayUpdate::default()
            })?;
            link
        };
        shared.store().durable().await?;
        shared.two_way_wake.notify_waiters();
        Ok(link)
    }

    /// A record's link, by partner id or by Virtuous id.
    pub fn two_way_link(
        &self,
        pair: &str,
        partner_id: Option<&str>,
        virtuous_id: Option<&str>,
    ) -> Result<Option<Link>, StoreError> {
        let store = self.shared.tenant_store();
        match (partner_id, virtuous_id) {
            (Some(partner_id), _) => store.two_way_link(pair, partner_id),
            (None, Some(virtuous_id)) => store.two_way_link_by_virtuous(pair, virtuous_id),
            (None, None) => Ok(None),
        }
    }

    /// A pair's links in partner-id order after `after`.
    pub fn two_way_links(
        &self,
        pair: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Link>, StoreError> {
        self.shared.tenant_store().two_way_links(pair, after, limit)
    }

    /// A pair's dead letters after `after_seq`.
    pub fn two_way_dead_letters(
        &self,
        pair: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<TwoWayDeadLetter>, StoreError> {
        self.shared
            .tenant_store()
            .two_way_dead_letters(pair, after_seq, limit)
    }

    /// Starts a cross-match of `pair` (a finished one is replaced; a running one or a report
    /// waiting for approval is kept: 409).
    pub async fn start_cross_match(&self, pair: &str) -> Result<CrossMatchJob, TwoWayError> {
        self.pair_settings(pair)?;
        let job = {
            let _guard = self.shared.two_way_guard();
            let store = self.shared.tenant_store();
            let current: Option<CrossMatchJob> = store.cross_match_job(pair)?;
            if let Some(job) = current.filter(|job| !job.state.finished()) {
                return Err(TwoWayError::NotNow(format!(
                    "the cross-match of `{pair}` is {}; it must finish (or be approved) first",
                    serde_json::to_value(job.state)
                        .ok()
                        .and_then(|state| state.as_str().map(str::to_string))
                        .unwrap_or_default()
                )));
            }
            store.clear_cross_match(pair)?;
            let job = CrossMatchJob::new(pair, self.shared.clock.now_ms());
            store.save_cross_match(pair, &job, &[], &[], &[])?;
            job
        };
        self.shared.store().durable().await?;
        self.shared.two_way_wake.notify_waiters();
        Ok(job)
    }

    /// A pair's cross-match job; without a pair, the one started last.
    pub fn cross_match(&self, pair: Option<&str>) -> Result<Option<CrossMatchJob>, StoreError> {
        let store = self.shared.tenant_store();
        if let Some(pair) = pair {
            return store.cross_match_job(pair);
        }
        let mut latest: Option<CrossMatchJob> = None;
        for settings in self.shared.settings().two_way {
            if let Some(job) = store.cross_match_job::<CrossMatchJob>(&settings.pair)? {
                if latest
                    .as_ref()
                    .map_or(true, |best| job.started_at_ms > best.started_at_ms)
                {
                    latest = Some(job);
                }
            }
        }
        Ok(latest)
    }

    /// Report rows after `after_seq`, at most `limit`.
    pub fn cross_match_report(
        &self,
        pair: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<(u64, ReportRow)>, StoreError> {
        self.shared
            .tenant_store()
            .cross_match_report(pair, after_seq, limit)
    }

    /// Approves a ready report with `policies`; the pair's loop applies them, once.
    pub async fn approve_cross_match(
        &self,
        pair: &str,
        policies: Policies,
    ) -> Result<CrossMatchJob, TwoWayError> {
        self.pair_settings(pair)?;
        let guard = self.shared.two_way_guard();
        let store = self.shared.tenant_store();
        let mut job: CrossMatchJob = store
            .cross_match_job(pair)?
            .ok_or_else(|| TwoWayError::NotNow(format!("no cross-match of `{pair}` to approve")))?;
        if job.state != JobState::Ready {
            return Err(TwoWayError::NotNow(format!(
                "only a ready report can be approved (this one is {:?}; approval is applied once)",
                job.state
            )));
        }
        job.state = JobState::Applying;
        job.policies = Some(policies);
        job.updated_at_ms = self.shared.clock.now_ms();
        store.save_cross_match(pair, &job, &[], &[], &[])?;
        drop(guard);
        self.shared.store().durable().await?;
        self.shared.two_way_wake.notify_waiters();
        Ok(job)
    }
}
