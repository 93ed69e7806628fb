//! The registry every source simulator keeps its entries in (Constant Contact and Mailchimp
//! accounts, feeds): entries by id behind one read-write lock, each entry with its own state
//! mutex, so entries never wait on each other.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

/// An entry of a [`Registry`]: something with its own state under one mutex.
pub(crate) trait Entry {
    type State;

    fn state(&self) -> &Mutex<Self::State>;

    fn lock(&self) -> MutexGuard<'_, Self::State> {
        // A panicking handler must not wedge the entry for every later request.
        self.state()
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Why [`Registry::insert`] refused an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Another entry has this id.
    IdTaken,
    /// Another entry holds something that must be unique (a client id, an api key).
    Conflict,
}

/// Entries by id.
pub(crate) struct Registry<Item> {
    entries: RwLock<HashMap<String, Arc<Item>>>,
}

impl<Item> Default for Registry<Item> {
    fn default() -> Self {
        Registry {
            entries: RwLock::new(HashMap::new()),
        }
    }
}

impl<Item> AsRef<Registry<Item>> for Registry<Item> {
    fn as_ref(&self) -> &Registry<Item> {
        self
    }
}

impl<Item> Registry<Item> {
    /// Adds `build()` under `id`. When `id` is taken, nothing changes: `Ok` if
    /// `is_same(existing)` (creating the same thing again is a no-op), else `IdTaken`. An
    /// entry for which `conflicts` holds refuses the new one with `Conflict`.
    pub(crate) fn insert(
        &self,
        id: &str,
        is_same: impl FnOnce(&Item) -> bool,
        conflicts: impl Fn(&Item) -> bool,
        build: impl FnOnce() -> Item,
    ) -> Result<(), Refusal> {
        let mut entries = self
            .entries
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(existing) = entries.get(id) {
            if is_same(existing) {
                return Ok(());
            }
            return Err(Refusal::IdTaken);
        }
        if entries.values().any(|entry| conflicts(entry)) {
            return Err(Refusal::Conflict);
        }
        entries.insert(id.to_owned(), Arc::new(build()));
        Ok(())
    }

    pub(crate) fn by_id(&self, id: &str) -> Option<Arc<Item>> {
        self.entries
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(id)
            .cloned()
    }

    /// Runs `action` on the locked state of entry `id`; `unknown {noun} "id"` when there is
    /// none (the in-process calls of the source simulators).
    pub(crate) fn with<T>(
        &self,
        id: &str,
        noun: &str,
        action: impl FnOnce(&mut Item::State) -> Result<T, String>,
    ) -> Result<T, String>
    where
        Item: Entry,
    {
        let entry = self
            .by_id(id)
            .ok_or_else(|| format!("unknown {noun} {id:?}"))?;
        let mut state = entry.lock();
        action(&mut state)
    }

    /// The first entry `matches` (a scan: for cold paths and few entries).
    pub(crate) fn find(&self, matches: impl Fn(&Item) -> bool) -> Option<Arc<Item>> {
        self.entries
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .values()
            .find(|entry| matches(entry))
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_refuses_taken_ids_and_conflicts_and_accepts_the_same_again() {
        // Goal: a new id is added; a taken id is a no-op when the same, else IdTaken; a
        // conflicting entry refuses the new one; lookups find by id and by predicate.
        let registry: Registry<(String, u32)> = Registry::default();
        let add = |id: &str, value: u32| {
            registry.insert(
                id,
                |existing| existing.1 == value,
                |other| other.1 == value,
                || (id.to_owned(), value),
            )
        };
        assert_eq!(add("a", 1), Ok(()));
        assert_eq!(add("a", 1), Ok(()));
        assert_eq!(add("a", 2), Err(Refusal::IdTaken));
        assert_eq!(add("b", 1), Err(Refusal::Conflict));
        assert_eq!(add("b", 2), Ok(()));
        assert_eq!(registry.by_id("b").unwrap().1, 2);
        assert_eq!(registry.find(|entry| entry.1 == 1).unwrap().0, "a");
        assert!(registry.by_id("c").is_none());
    }
}
