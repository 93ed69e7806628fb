//! The admin API's door to a registered tenant's stored data: dead letters, records, kept
//! inbound events. A facade over the store for the reads and commands that need the
//! registry (the tenant may be registered but not running); everything else goes through the
//! tenant's handle. Commands answer after their write is durable (invariant 1).
//!
//! The `steward` crate's HTTP modules cannot reach the store itself: [`TenantStores`] keeps
//! it private to `tenants` (issue 10: HTTP code touches no store).

use steward_actors::hub::DEAD_LETTERS_ALERT;
use steward_actors::store::admin_ops::{QueuedEntry, Replayed};
use steward_actors::store::types::RecordState;
use steward_actors::store::unparsed_ops::UnparsedEvent;
use steward_actors::store::{AlertView, DeadLetter, RecordKind, Store, StoreError, TenantStore};

use super::now_ms;
use crate::app::AppState;
use crate::http::error::{ApiError, ErrorCode};
use crate::tenant::validate_tenant_id;

/// The process's store, reachable only from `tenants` and its children: the HTTP modules
/// hold an [`AppState`] but cannot open a tenant's key space (issue 10: HTTP code touches no
/// store; a test greps `src/http` as well). Admin reads and commands that need the registry
/// go through the facade in `admin_door.rs`; everything else through the tenant's handle.
pub struct TenantStores {
    /// `pub(super)`: `tenants` and its children only.
    pub(super) store: Store,
}

impl TenantStores {
    pub fn new(store: Store) -> TenantStores {
        TenantStores { store }
    }

    /// `/readyz`: a point read answers (sled has no cheaper health probe) and no write group
    /// or flush failed.
    pub fn is_open(&self) -> bool {
        self.store.registry().get("-readiness-probe-").is_ok() && self.store.failure().is_none()
    }

    /// The last flush at shutdown.
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        self.store.flush_blocking()
    }
}

/// `dead_letters` resolves when the tenant's dead-letter list is empty (after a replay or a
/// discard; docs/operations.md "Alerts").
fn resolve_dead_letters_alert(tenant_store: &TenantStore, id: &str) -> Result<(), ApiError> {
    let no_dead_letter_left = |store: &TenantStore| store.has_dead_letters().map(|any| !any);
    if tenant_store.resolve_alert_when(DEAD_LETTERS_ALERT, now_ms(), no_dead_letter_left)? {
        tracing::info!(tenant_id = %id, alert = DEAD_LETTERS_ALERT, "alert resolved: no dead letter left");
    }
    Ok(())
}

/// A record with what the admin API shows beside it.
pub struct RecordView {
    pub record: RecordState,
    pub queued: Vec<QueuedEntry>,
    /// The dead letter of its latest entry (a dead letter's id is the seq of the entry).
    pub dead_letter: Option<DeadLetter>,
}

impl TenantStores {
    /// The store of a registered tenant (404 for an unknown one: `Store::tenant` would
    /// create an empty key space for any id).
    fn registered(&self, id: &str) -> Result<TenantStore, ApiError> {
        validate_tenant_id(id)?;
        if self.store.registry().get(id)?.is_none() {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!("no tenant `{id}`"),
            ));
        }
        Ok(self.store.tenant(id)?)
    }

    /// [`Self::registered`] for a change: `409` for a tenant exported to another instance
    /// (its data went with the export; a change here would never be sent, nor moved).
    fn registered_for_change(&self, id: &str) -> Result<TenantStore, ApiError> {
        let tenant_store = self.registered(id)?;
        if let Some(record) = self.store.registry().get(id)? {
            super::refuse_if_moved(&record)?;
        }
        Ok(tenant_store)
    }

    /// 404 unless `id` is a registered tenant.
    pub fn ensure_registered(&self, id: &str) -> Result<(), ApiError> {
        self.registered(id).map(|_| ())
    }

    /// Dead letters with an id above `after`, oldest first, at most `limit`.
    pub fn dead_letters_page(
        &self,
        id: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, ApiError> {
        Ok(self.registered(id)?.dead_letters_page(after, limit)?)
    }

    pub fn dead_letter(
        &self,
        id: &str,
        dead_letter_id: u64,
    ) -> Result<Option<DeadLetter>, ApiError> {
        Ok(self.registered(id)?.get_dead_letter(dead_letter_id)?)
    }

    /// Replays a dead letter (as-is or with `edited_body_json`); durable before it returns.
    /// `None`: no such dead letter (or a concurrent request took it).
    pub async fn replay_dead_letter(
        &self,
        state: &AppState,
        id: &str,
        dead_letter_id: u64,
        edited_body_json: Option<String>,
    ) -> Result<Option<Replayed>, ApiError> {
        let tenant_store = self.registered_for_change(id)?;
        let Some(replayed) =
            tenant_store.replay_dead_letter(dead_letter_id, edited_body_json, now_ms())?
        else {
            return Ok(None);
        };
        resolve_dead_letters_alert(&tenant_store, id)?;
        self.store.durable().await?;
        if let Some(handle) = state.runtime.tenant(id) {
            handle.hint_work(1);
        }
        Ok(Some(replayed))
    }

    /// Discards a dead letter; durable before it returns. `None`: no such dead letter.
    pub async fn discard_dead_letter(
        &self,
        id: &str,
        dead_letter_id: u64,
    ) -> Result<Option<DeadLetter>, ApiError> {
        let tenant_store = self.registered_for_change(id)?;
        let discarded = tenant_store.discard_dead_letter(dead_letter_id, now_ms())?;
        if discarded.is_some() {
            resolve_dead_letters_alert(&tenant_store, id)?;
            self.store.durable().await?;
        }
        Ok(discarded)
    }

    /// A record by id or alias, with its queued entries and its dead letter.
    /// Records indexed under a donor email or a Virtuous id (`store::record_index`), at most
    /// `limit`; `value` normalised by the caller.
    pub fn find_records(
        &self,
        id: &str,
        lookup: steward_actors::store::record_index::RecordLookup,
        value: &str,
        limit: usize,
    ) -> Result<Vec<steward_actors::store::types::RecordState>, ApiError> {
        Ok(self.registered(id)?.find_records(lookup, value, limit)?)
    }

    pub fn record_view(
        &self,
        id: &str,
        kind: RecordKind,
        source: &str,
        id_or_alias: &str,
    ) -> Result<Option<RecordView>, ApiError> {
        let tenant_store = self.registered(id)?;
        let Some(record) = tenant_store.find_record(kind, source, id_or_alias)? else {
            return Ok(None);
        };
        let queued = tenant_store.queued_entries_of(&record)?;
        let dead_letter = match record.last_seq {
            Some(seq) => tenant_store.get_dead_letter(seq)?,
            None => None,
        };
        Ok(Some(RecordView {
            record,
            queued,
            dead_letter,
        }))
    }

    /// Acknowledges the tenant's alert `code` (idempotent; durable before it returns).
    /// `None`: no such alert.
    pub async fn ack_alert(&self, id: &str, code: &str) -> Result<Option<AlertView>, ApiError> {
        let acked = self.registered_for_change(id)?.ack_alert(code, now_ms())?;
        if acked.is_some() {
            self.store.durable().await?;
        }
        Ok(acked)
    }

    /// Kept inbound events with an id above `after`, oldest first, at most `limit`; and how
    /// many are kept in all.
    pub fn unparsed_page(
        &self,
        id: &str,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<UnparsedEvent>, u64), ApiError> {
        let tenant_store = self.registered(id)?;
        Ok((
            tenant_store.unparsed_page(after, limit)?,
            tenant_store.unparsed_count()?,
        ))
    }
}
