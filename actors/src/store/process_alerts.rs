//! The process's own alerts (docs/operations.md "Alerting"): conditions of the node rather
//! than of a tenant — the data dir's disk nearly full. They live in their own tree, laid out
//! like a tenant's alerts (sections `ALERT`, `ALERT_STATE`, `ALERT_OUTBOX`,
//! `ALERT_NOTICE_STATE` of a whole-tree key space), so raising, resolving and notifying is
//! the one [`AlertSpace`] code. A store that failed (`Store::failure`) refuses these writes
//! too: that alert is told by the dispatcher from memory (`crate::alerting`).

use std::sync::Mutex;

use super::alert_outbox::{AlertSpace, NoticeOwner};
use super::codec::decode;
use super::gate::{GatedTree, Gates};
use super::keys::{section, KeySpace};
use super::{io_error, Alert, AlertState, AlertView, Store, StoreError};

/// The tree of the process's alerts.
const PROCESS_ALERTS_TREE: &str = "process_alerts";

/// The process's alerts: their tree and the lock their read-check-writes take.
pub(crate) struct ProcessAlerts {
    tree: GatedTree,
    keys: KeySpace,
    lock: Mutex<()>,
}

impl ProcessAlerts {
    pub(crate) fn open(db: &sled::Db, gates: &Gates) -> Result<ProcessAlerts, StoreError> {
        Ok(ProcessAlerts {
            tree: gates.tree(db, PROCESS_ALERTS_TREE.as_bytes())?,
            keys: KeySpace::whole_tree(),
            lock: Mutex::new(()),
        })
    }
}

impl Store {
    /// Runs `action` on the process's alert space under its lock; refused once the store
    /// failed (it takes no more writes until a restart).
    pub(crate) fn with_process_alerts<T>(
        &self,
        action: impl FnOnce(&AlertSpace<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if let Some(failure) = self.failure() {
            return Err(failure);
        }
        let alerts = &self.inner.process_alerts;
        let _guard = alerts.lock.lock().unwrap_or_else(|p| p.into_inner());
        action(&AlertSpace {
            owner: NoticeOwner::Process,
            db: &self.inner.db,
            tree: &alerts.tree,
            keys: &alerts.keys,
            outbox: &self.inner.alert_outbox,
        })
    }

    /// Raises (or bumps) a process alert; true when it opens (see `TenantStore::raise_alert`).
    pub fn raise_process_alert(
        &self,
        code: &str,
        message: &str,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let opens = self.with_process_alerts(|space| space.raise(code, message, now_ms))?;
        metrics::counter!(
            crate::metrics::ALERTS_TOTAL,
            crate::metrics::LABEL_CODE => code.to_owned()
        )
        .increment(1);
        Ok(opens)
    }

    /// Resolves an open process alert; true when it changed.
    pub fn resolve_process_alert(&self, code: &str, now_ms: u64) -> Result<bool, StoreError> {
        self.with_process_alerts(|space| space.resolve(code, now_ms))
    }

    /// Every process alert with its lifecycle, by code.
    pub fn process_alert_views(&self) -> Result<Vec<AlertView>, StoreError> {
        let alerts = &self.inner.process_alerts;
        let mut views = Vec::new();
        for bytes in alerts
            .tree
            .scan_prefix(alerts.keys.section_prefix(section::ALERT))
            .values()
        {
            let alert: Alert = decode(&bytes.map_err(io_error)?)?;
            let state = match alerts
                .tree
                .get(alerts.keys.alert_state(&alert.code))
                .map_err(io_error)?
            {
                Some(bytes) => decode::<AlertState>(&bytes)?,
                None => AlertState::default(),
            };
            views.push(AlertView { alert, state });
        }
        Ok(views)
    }
}
