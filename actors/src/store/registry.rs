//! The tenant registry: one tree, key = tenant id, value = versioned [`TenantRecord`].

use super::codec::{decode, encode};
use super::{io_error, StoreError, TenantRecord, TenantRegistry, TenantRunState};

/// Name of the registry's tree.
pub const REGISTRY_TREE: &str = "registry";

impl TenantRegistry {
    pub(crate) fn new(tree: super::gate::GatedTree) -> TenantRegistry {
        TenantRegistry { tree }
    }

    /// Inserts a new tenant; `Ok(false)` when the id exists (nothing changed).
    pub fn insert_new(&self, record: &TenantRecord) -> Result<bool, StoreError> {
        let value = encode(record)?;
        let swapped = self
            .tree
            .compare_and_swap(record.id.as_bytes(), None as Option<&[u8]>, Some(value))
            .map_err(io_error)?;
        Ok(swapped.is_ok())
    }

    pub fn put(&self, record: &TenantRecord) -> Result<(), StoreError> {
        self.tree
            .insert(record.id.as_bytes(), encode(record)?)
            .map_err(io_error)?;
        Ok(())
    }

    /// The stored bytes of a record (a tenant export copies them as they are).
    pub(crate) fn raw_get(&self, tenant_id: &str) -> Result<Option<sled::IVec>, StoreError> {
        self.tree.get(tenant_id.as_bytes()).map_err(io_error)
    }

    pub fn get(&self, tenant_id: &str) -> Result<Option<TenantRecord>, StoreError> {
        match self.tree.get(tenant_id.as_bytes()).map_err(io_error)? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Every tenant, ordered by id.
    pub fn list(&self) -> Result<Vec<TenantRecord>, StoreError> {
        self.tree
            .iter()
            .map(|item| {
                let (_, bytes) = item.map_err(io_error)?;
                decode(&bytes)
            })
            .collect()
    }

    /// Read-modify-write of a record by compare-and-swap, so a concurrent write is never
    /// overwritten with stale fields: `change` sees the stored record and answers `Ok` to
    /// write it as changed, `Err` to leave it; it runs again on the new value when the record
    /// changed meanwhile. `None` when not registered. Not flushed: the caller's next flush
    /// covers it.
    fn swap_record<T>(
        &self,
        tenant_id: &str,
        mut change: impl FnMut(&mut TenantRecord) -> Result<T, T>,
    ) -> Result<Option<T>, StoreError> {
        loop {
            let Some(current) = self.tree.get(tenant_id.as_bytes()).map_err(io_error)? else {
                return Ok(None);
            };
            let mut record: TenantRecord = decode(&current)?;
            let answer = match change(&mut record) {
                Ok(answer) => answer,
                Err(answer) => return Ok(Some(answer)),
            };
            let swapped = self
                .tree
                .compare_and_swap(tenant_id.as_bytes(), Some(current), Some(encode(&record)?))
                .map_err(io_error)?;
            if swapped.is_ok() {
                return Ok(Some(answer));
            }
        }
    }

    /// A running tenant becomes [`TenantRunState::NeedsOperator`] (atomically). `Ok(false)`
    /// when it was not running or is not registered.
    pub fn mark_needs_operator(&self, tenant_id: &str, now_ms: u64) -> Result<bool, StoreError> {
        let marked = self.swap_record(tenant_id, |record| {
            if record.run_state() != TenantRunState::Running {
                return Err(false);
            }
            record.set_run_state(TenantRunState::NeedsOperator);
            record.updated_at_ms = now_ms;
            Ok(true)
        })?;
        Ok(marked.unwrap_or(false))
    }

    /// Marks a tenant [`TenantRunState::Moved`] (atomically); returns the run state it had,
    /// `None` when it is not registered.
    pub fn mark_moved(
        &self,
        tenant_id: &str,
        now_ms: u64,
    ) -> Result<Option<TenantRunState>, StoreError> {
        self.swap_record(tenant_id, |record| {
            let before = record.run_state();
            if before == TenantRunState::Moved {
                return Err(before);
            }
            record.set_run_state(TenantRunState::Moved);
            record.updated_at_ms = now_ms;
            Ok(before)
        })
    }

    /// Writes `record` but keeps the stored run state (atomically): an admin edit of the
    /// document never puts back a run state that a concurrent 401 (`needs_operator`) or
    /// pause changed after the edit read the record. `Ok(false)` when not registered.
    pub fn put_keeping_run_state(&self, record: &TenantRecord) -> Result<bool, StoreError> {
        let written = self.swap_record(&record.id, |stored| {
            let state = std::mem::take(&mut stored.state);
            *stored = record.clone();
            stored.state = state;
            Ok::<_, ()>(())
        })?;
        Ok(written.is_some())
    }

    pub fn remove(&self, tenant_id: &str) -> Result<bool, StoreError> {
        Ok(self
            .tree
            .remove(tenant_id.as_bytes())
            .map_err(io_error)?
            .is_some())
    }
}

#[cfg(test)]
mod tests {
    use crate::store::{Store, StoreOptions, TenantRecord, TenantRunState};

    #[test]
    fn run_state_names_are_the_stored_strings() {
        // Goal: the run-state enum reads and writes exactly the strings the registry stored
        // before it existed (and the admin API shows); an unknown name reads as paused.
        for (state, name) in [
            (TenantRunState::Running, "running"),
            (TenantRunState::Paused, "paused"),
            (TenantRunState::NeedsOperator, "needs_operator"),
            (TenantRunState::Moved, "moved"),
        ] {
            assert_eq!(state.name(), name);
            assert_eq!(TenantRunState::parse(name), Some(state));
            assert_eq!(TenantRunState::from_u8(state as u8), state);
        }
        assert_eq!(TenantRunState::parse("Running"), None);
        let mut unknown = record("x");
        unknown.state = "archived".into();
        assert_eq!(unknown.run_state(), TenantRunState::Paused);
    }

    fn record(id: &str) -> TenantRecord {
        TenantRecord {
            id: id.into(),
            config_json: format!("{{\"id\":\"{id}\"}}"),
            sealed_secrets: vec![("/virtuous/api_key".into(), vec![1, 2, 3])],
            state: "running".into(),
            created_at_ms: 1,
            updated_at_ms: 1,
        }
    }

    #[test]
    fn registry_insert_new_is_exclusive_and_list_is_ordered() {
        // Goal: insert_new refuses an existing id without changing it; list is ordered by id.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let registry = store.registry();
        assert!(registry.insert_new(&record("b")).unwrap());
        assert!(registry.insert_new(&record("a")).unwrap());
        let mut changed = record("b");
        changed.state = "paused".into();
        assert!(!registry.insert_new(&changed).unwrap());
        assert_eq!(registry.get("b").unwrap().unwrap().state, "running");
        registry.put(&changed).unwrap();
        assert_eq!(registry.get("b").unwrap().unwrap().state, "paused");
        let ids: Vec<String> = registry.list().unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(ids, ["a", "b"]);
        assert!(registry.remove("a").unwrap());
        assert!(!registry.remove("a").unwrap());
        assert_eq!(registry.get("a").unwrap(), None);
    }

    #[test]
    fn only_a_running_tenant_is_marked_needs_operator() {
        // Goal: running → needs_operator (other fields kept); paused or unknown: unchanged.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let registry = store.registry();
        registry.put(&record("run")).unwrap();
        let mut paused = record("held");
        paused.state = "paused".into();
        registry.put(&paused).unwrap();
        assert!(registry.mark_needs_operator("run", 7).unwrap());
        let marked = registry.get("run").unwrap().unwrap();
        assert_eq!(
            (marked.state.as_str(), marked.updated_at_ms),
            ("needs_operator", 7)
        );
        assert_eq!(marked.config_json, record("run").config_json);
        assert!(
            !registry.mark_needs_operator("run", 8).unwrap(),
            "already marked"
        );
        assert!(!registry.mark_needs_operator("held", 8).unwrap());
        assert_eq!(registry.get("held").unwrap().unwrap(), paused);
        assert!(!registry.mark_needs_operator("nobody", 8).unwrap());
    }

    #[test]
    fn an_edit_keeps_the_run_state_a_401_set_meanwhile() {
        // Goal: a document edit read while running, written after a 401 marked the tenant, does not put `running` back; other fields are the edit's.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let registry = store.registry();
        registry.put(&record("t")).unwrap();
        let mut edit = registry.get("t").unwrap().unwrap();
        edit.config_json = "{\"edited\":true}".into();
        assert!(registry.mark_needs_operator("t", 9).unwrap());
        assert!(registry.put_keeping_run_state(&edit).unwrap());
        let stored = registry.get("t").unwrap().unwrap();
        assert_eq!(stored.state, "needs_operator");
        assert_eq!(stored.config_json, edit.config_json);
        assert!(!registry.put_keeping_run_state(&record("nobody")).unwrap());
    }

    #[test]
    fn registry_survives_reopen() {
        // Goal: registry writes followed by durable() are there after reopening.
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
            store.registry().put(&record("x")).unwrap();
            store.flush_blocking().unwrap();
        }
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        assert_eq!(store.registry().get("x").unwrap(), Some(record("x")));
    }
}
