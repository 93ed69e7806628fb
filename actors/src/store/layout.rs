//! Where a tenant's key space lives: its own tree, or a tenant prefix inside one of a fixed
//! set of shared trees (the documented fallback when many trees inflate disk or memory).
//!
//! The layout is chosen when a store is created and recorded in it: reopening with another
//! layout would silently show empty tenants, so it is refused.

use serde::{Deserialize, Serialize};

use super::codec::{decode, encode, Versioned};
use super::gate::{GatedTree, Gates};
use super::keys::{prefix_end, KeySpace};
use super::{io_error, StoreError};

/// Key (in sled's default tree) recording the layout of this store.
const LAYOUT_KEY: &[u8] = b"steward/layout";

/// How tenants map onto sled trees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Layout {
    /// Tree `t/{tenant_id}` per tenant; keys without a tenant prefix.
    TreePerTenant,
    /// Trees `s/{shard}`; keys start with the tenant prefix; shard = FNV-1a(tenant id) mod count.
    SharedTrees { shard_count: u16 },
}

impl Versioned for Layout {
    const VERSION: u8 = 1;
    const NAME: &'static str = "Layout";
}

/// The layout of new stores, chosen with `benches/store.rs` part 2 (10,000 tenants, one small
/// entry each, 2-core VM): a tree per tenant took 884 MiB on disk, 12.8 s to create and 0.67 s
/// to reopen; 64 shared trees took 16.5 MiB, 2.4 s and 0.06 s. Every sled tree costs meta
/// pages that are rewritten as trees are added (sled issue #1484), so trees stay few.
pub const DEFAULT_LAYOUT: Layout = Layout::SharedTrees { shard_count: 64 };

/// Reads the recorded layout, recording `requested` (or the default) in a new store.
pub fn resolve(db: &sled::Db, requested: Option<Layout>) -> Result<Layout, StoreError> {
    if let Some(bytes) = db.get(LAYOUT_KEY).map_err(io_error)? {
        let recorded: Layout = decode(&bytes)?;
        return match requested {
            Some(layout) if layout != recorded => Err(StoreError::Io(format!(
                "the store was created with layout {recorded:?} and cannot be opened as {layout:?}"
            ))),
            _ => Ok(recorded),
        };
    }
    let layout = requested.unwrap_or(DEFAULT_LAYOUT);
    if let Layout::SharedTrees { shard_count: 0 } = layout {
        return Err(StoreError::Io(
            "a shared-tree layout needs at least one shard".into(),
        ));
    }
    db.insert(LAYOUT_KEY, encode(&layout)?).map_err(io_error)?;
    Ok(layout)
}

/// Stable across builds and platforms (unlike `std`'s hasher): it decides where data lives.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Layout {
    pub fn tree_name(self, tenant_id: &str) -> String {
        match self {
            Layout::TreePerTenant => format!("t/{tenant_id}"),
            Layout::SharedTrees { shard_count } => {
                format!(
                    "s/{:05}",
                    fnv1a(tenant_id.as_bytes()) % u64::from(shard_count)
                )
            }
        }
    }

    pub fn key_space(self, tenant_id: &str) -> KeySpace {
        match self {
            Layout::TreePerTenant => KeySpace::whole_tree(),
            Layout::SharedTrees { .. } => KeySpace::tenant_prefixed(tenant_id),
        }
    }

    /// Opens (creating on first use) the tree and key space of a tenant.
    pub(crate) fn locate(
        self,
        db: &sled::Db,
        gates: &Gates,
        tenant_id: &str,
    ) -> Result<(GatedTree, KeySpace), StoreError> {
        let tree = gates.tree(db, self.tree_name(tenant_id).as_bytes())?;
        Ok((tree, self.key_space(tenant_id)))
    }

    /// Removes every key of a tenant.
    pub(crate) fn drop_tenant(
        self,
        db: &sled::Db,
        tree: &GatedTree,
        keys: &KeySpace,
        tenant_id: &str,
    ) -> Result<(), StoreError> {
        match self {
            Layout::TreePerTenant => {
                let _pass = tree.gate().pass();
                db.drop_tree(self.tree_name(tenant_id)).map_err(io_error)?;
                Ok(())
            }
            Layout::SharedTrees { .. } => remove_prefix(tree, keys.tenant_prefix()),
        }
    }
}

/// Removes all keys under `prefix`, in bounded batches (a big tenant must not build one
/// gigantic batch in memory).
pub(crate) fn remove_prefix(tree: &GatedTree, prefix: &[u8]) -> Result<(), StoreError> {
    const KEYS_PER_BATCH_MAX: usize = 10_000;
    let end = prefix_end(prefix);
    loop {
        let mut batch = sled::Batch::default();
        let mut batched = 0;
        let range = match &end {
            Some(end) => tree.range(prefix.to_vec()..end.clone()),
            None => tree.range(prefix.to_vec()..),
        };
        for item in range.keys().take(KEYS_PER_BATCH_MAX) {
            batch.remove(item.map_err(io_error)?);
            batched += 1;
        }
        if batched == 0 {
            return Ok(());
        }
        tree.apply_batch(batch).map_err(io_error)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_choice_is_pinned() {
        // Goal: the tenant→shard mapping never changes between builds (it decides where data lives).
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        let layout = Layout::SharedTrees { shard_count: 64 };
        assert_eq!(
            layout.tree_name("a"),
            format!("s/{:05}", 0xaf63_dc4c_8601_ec8cu64 % 64)
        );
        assert_eq!(Layout::TreePerTenant.tree_name("hope"), "t/hope");
    }
}
