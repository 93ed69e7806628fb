//! The snapshot gate: what makes a backup (`POST /v1/backup`) or a tenant export consistent
//! while the process keeps running.
//!
//! Every mutation of a sled tree goes through a [`GatedTree`] (or, for group commit's
//! merged writes, takes [`SnapshotGate::pass`] of each tree itself) and holds its tree's
//! gate's shared side for the one sled call, never across a wait. A snapshot holds the
//! exclusive side of one tree's gate while it copies that tree: no mutation of the tree runs,
//! so what it copies is a prefix of the tree's mutation history — each `apply_batch` and
//! transaction whole or absent, every write acknowledged before the snapshot began included.
//! Per tenant (one tree holds a tenant's whole key space) that is exactly a state a crash at
//! that instant could leave, and Steward already recovers from every such state (the kill -9
//! tests). Tenants are islands, so their cuts need not be the same instant.
//!
//! Why per sled call and not per tenant lock: a writer holding its tenant's lock may wait on
//! group commit's thread, which would then wait on the gate while a snapshot waits for that
//! writer (a deadlock). A sled call waits on nothing of ours.

use std::ops::RangeBounds;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::{io_error, StoreError};

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

/// One gate per sled tree, by the tree's name: a snapshot closes one tree's gate at a time,
/// so writes wait only while their own tree is copied (a tenant's key space is in one
/// tree, and every atomic write of the store's logic is within one tenant's key space, the
/// registry, or the process's alerts — never across them; group commit's merged transaction
/// passes the gate of every tree it touches).
#[derive(Default)]
pub(crate) struct Gates(dashmap::DashMap<Vec<u8>, Arc<SnapshotGate>>);

impl Gates {
    pub(crate) fn of(&self, tree_name: &[u8]) -> Arc<SnapshotGate> {
        Arc::clone(
            self.0
                .entry(tree_name.to_vec())
                .or_insert_with(|| Arc::new(SnapshotGate::default()))
                .value(),
        )
    }

    /// Opens (creating on first use) the tree `name`, gated.
    pub(crate) fn tree(&self, db: &sled::Db, name: &[u8]) -> Result<GatedTree, StoreError> {
        let tree = db.open_tree(name).map_err(io_error)?;
        Ok(GatedTree::new(tree, self.of(name)))
    }
}

/// A sled tree whose mutations pass the snapshot gate. Reads forward as they are. It has no
/// `Deref` to `sled::Tree`, so a mutation cannot bypass the gate by accident.
#[derive(Clone)]
pub(crate) struct GatedTree {
    tree: sled::Tree,
    gate: Arc<SnapshotGate>,
}

impl GatedTree {
    pub(crate) fn new(tree: sled::Tree, gate: Arc<SnapshotGate>) -> GatedTree {
        GatedTree { tree, gate }
    }

    /// The tree itself, for group commit, which passes [`GatedTree::gate`] around its
    /// merged write.
    pub(crate) fn raw(&self) -> &sled::Tree {
        &self.tree
    }

    pub(crate) fn gate(&self) -> &Arc<SnapshotGate> {
        &self.gate
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
