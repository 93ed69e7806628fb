//! An alert's lifecycle (docs/operations.md "Alerts"): resolved when its condition clears,
//! acknowledged by an operator, reopened when raised again ([`TenantStore::raise_alert`]).
//! The lifecycle lives under its own key ([`AlertState`]) so that stored [`Alert`] bytes keep
//! their pinned format.

use super::codec::encode;
use super::keys::section;
use super::{io_error, Alert, AlertState, AlertView, StoreError, TenantStore};

impl TenantStore {
    /// Marks the open alert `code` resolved at `now_ms`; true when it changed (false: never
    /// raised, or already resolved). Its notice for the sinks goes in the same write.
    pub fn resolve_alert(&self, code: &str, now_ms: u64) -> Result<bool, StoreError> {
        self.resolve_alert_when(code, now_ms, |_| Ok(true))
    }

    /// [`Self::resolve_alert`] only if `condition_cleared` holds, checked under the same write
    /// lock that raising takes: a raise that follows the condition's return (a dead letter
    /// written, then `dead_letters` raised) is never lost to a resolve that read the store
    /// before it.
    pub fn resolve_alert_when(
        &self,
        code: &str,
        now_ms: u64,
        condition_cleared: impl FnOnce(&TenantStore) -> Result<bool, StoreError>,
    ) -> Result<bool, StoreError> {
        let inner = self.inner();
        // Never raised: nothing to resolve, and no write lock to take (sources resolve on
        // every read while healthy, e.g. a Postgres slot's lag).
        if inner.read::<Alert>(&inner.keys.alert(code))?.is_none() {
            return Ok(false);
        }
        let _guard = inner.lock_for_write()?;
        if !condition_cleared(self)? {
            return Ok(false);
        }
        inner.alert_space().resolve(code, now_ms)
    }

    /// Acknowledges the alert `code` (idempotent: the first acknowledgement's time stays);
    /// `None` when no such alert was raised.
    pub fn ack_alert(&self, code: &str, now_ms: u64) -> Result<Option<AlertView>, StoreError> {
        let inner = self.inner();
        let _guard = inner.lock_for_write()?;
        let Some(alert) = inner.read::<Alert>(&inner.keys.alert(code))? else {
            return Ok(None);
        };
        let state_key = inner.keys.alert_state(code);
        let mut state = inner.read::<AlertState>(&state_key)?.unwrap_or_default();
        if state.acked_at_ms.is_none() {
            state.acked_at_ms = Some(now_ms);
            inner
                .tree
                .insert(state_key, encode(&state)?)
                .map_err(io_error)?;
        }
        Ok(Some(AlertView { alert, state }))
    }

    /// Alerts neither resolved nor acknowledged: the ones still asking for someone (the
    /// fleet view's `open_alerts`).
    pub fn open_alert_count(&self) -> Result<u64, StoreError> {
        let views = self.alert_views()?;
        let open = views
            .iter()
            .filter(|view| view.state.resolved_at_ms.is_none() && view.state.acked_at_ms.is_none());
        Ok(open.count() as u64)
    }

    /// Every alert with its lifecycle, by code.
    pub fn alert_views(&self) -> Result<Vec<AlertView>, StoreError> {
        let inner = self.inner();
        self.alerts()?
            .into_iter()
            .map(|alert| {
                let state = inner
                    .read::<AlertState>(&inner.keys.alert_state(&alert.code))?
                    .unwrap_or_default();
                Ok(AlertView { alert, state })
            })
            .collect()
    }

    /// Raises `code` only if it was never raised (a one-time hint): true when it was raised
    /// now. An existing alert — open, resolved or acknowledged — is left as it is.
    pub fn raise_alert_once(
        &self,
        code: &str,
        message: &str,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let inner = self.inner();
        if inner.read::<Alert>(&inner.keys.alert(code))?.is_some() {
            return Ok(false);
        }
        self.raise_alert(code, message, now_ms)
    }

    /// Whether the tenant has any dead letter (the `dead_letters` alert's condition).
    pub fn has_dead_letters(&self) -> Result<bool, StoreError> {
        let inner = self.inner();
        match inner
            .tree
            .scan_prefix(inner.keys.section_prefix(section::DEAD_LETTER))
            .keys()
            .next()
        {
            Some(key) => key.map(|_| true).map_err(io_error),
            None => Ok(false),
        }
    }

    /// The lifecycle of alert `code` (open and unacknowledged when none is stored).
    pub fn alert_state(&self, code: &str) -> Result<AlertState, StoreError> {
        let inner = self.inner();
        Ok(inner
            .read::<AlertState>(&inner.keys.alert_state(code))?
            .unwrap_or_default())
    }
}
