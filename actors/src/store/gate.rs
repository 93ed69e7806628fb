//! The snapshot gate: what makes a backup (`POST /v1/backup`) or a tenant export consistent
//! while the process keeps running.
//!
//! Every mutation of a sled tree goes through a [`GatedTree`] (or, for group commit's
//! merged writes, takes [`SnapshotGate::pass`] itself) and holds the gate's shared side for
//! the one sled call, never across a wait. A snapshot holds the exclusive side while it
//! copies: no mutation runs, so what it copies is a prefix of the store's mutation history —
//! each `apply_batch` and transaction whole or absent, every write acknowledged before the
//! snapshot began included. That is exactly a state a crash at that instant could leave, and
//! Steward already recovers from every such state (the kill -9 tests).
//!
//! Why per sled call and not per tenant lock: a writer holding its tenant's lock may wait on
//! group commit's thread, which would then wait on the gate while a snapshot waits for that
//! writer (a deadlock). A sled call waits on nothing of ours.

use std::ops::RangeBounds;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// One per process-wide store.
#[derive(Default)]
pub(crate) struct SnapshotGate(RwLock<()>);

impl SnapshotGate {
    /// Held for one mutation.
    pub(crate) fn pass(&self) -> RwLockReadGuard<'_, ()> {
        self.0
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Held for a snapshot: waits for mutations in flight, holds back new ones.
    pub(crate) fn close(&self) -> RwLockWriteGuard<'_, ()> {
        self.0
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A sled tree whose mutations pass the snapshot gate. Reads forward as they are. It has no
/// `Deref` to `sled::Tree`, so a mutation cannot bypass the gate by accident.
#[derive(Clone)]
pub(crate) struct GatedTree {
    tree: sled::Tree,
    gate: std::sync::Arc<SnapshotGate>,
}

impl GatedTree {
    pub(crate) fn new(tree: sled::Tree, gate: std::sync::Arc<SnapshotGate>) -> GatedTree {
        GatedTree { tree, gate }
    }

    /// The tree itself, for reads, and for group commit, which takes the gate around its
    /// merged write.
    pub(crate) fn raw(&self) -> &sled::Tree {
        &self.tree
    }

    pub(crate) fn get<K: AsRef<[u8]>>(&self, key: K) -> sled::Result<Option<sled::IVec>> {
        self.tree.get(key)
    }

    pub(crate) fn contains_key<K: AsRef<[u8]>>(&self, key: K) -> sled::Result<bool> {
        self.tree.contains_key(key)
    }

    pub(crate) fn scan_prefix<P: AsRef<[u8]>>(&self, prefix: P) -> sled::Iter {
        self.tree.scan_prefix(prefix)
    }

    pub(crate) fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> sled::Iter {
        self.tree.range(range)
    }

    pub(crate) fn iter(&self) -> sled::Iter {
        self.tree.iter()
    }

    pub(crate) fn insert<K: AsRef<[u8]>, V: Into<sled::IVec>>(
        &self,
        key: K,
        value: V,
    ) -> sled::Result<Option<sled::IVec>> {
        let _pass = self.gate.pass();
        self.tree.insert(key, value)
    }

    pub(crate) fn remove<K: AsRef<[u8]>>(&self, key: K) -> sled::Result<Option<sled::IVec>> {
        let _pass = self.gate.pass();
        self.tree.remove(key)
    }

    pub(crate) fn apply_batch(&self, batch: sled::Batch) -> sled::Result<()> {
        let _pass = self.gate.pass();
        self.tree.apply_batch(batch)
    }

    pub(crate) fn compare_and_swap<K, OV, NV>(
        &self,
        key: K,
        old: Option<OV>,
        new: Option<NV>,
    ) -> sled::Result<Result<(), sled::CompareAndSwapError>>
    where
        K: AsRef<[u8]>,
        OV: AsRef<[u8]>,
        NV: Into<sled::IVec>,
    {
        let _pass = self.gate.pass();
        self.tree.compare_and_swap(key, old, new)
    }
}
