//! Kept inbound events: Virtuous webhook events the parser could not understand, stored with
//! their raw JSON and the reason so an operator can find them
//! (`GET /v1/tenants/{id}/inbound/unparsed`) — never answered 200 and forgotten.
//!
//! Section `section::INBOUND_UNPARSED`, key = `u64 BE` id (ascending, so the scan is oldest
//! first). Bounded: the newest [`UNPARSED_KEPT_MAX`] per tenant stay; a new one past the
//! bound removes the oldest in the same atomic batch.

use serde::{Deserialize, Serialize};

use super::codec::{decode, encode, Versioned};
use super::keys::section;
use super::{io_error, StoreError, TenantStore};

/// How many unparsed events a tenant keeps (the newest).
pub const UNPARSED_KEPT_MAX: usize = 1_000;

/// One kept event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnparsedEvent {
    /// Ascending per tenant; the listing's cursor.
    pub id: u64,
    pub received_at_ms: u64,
    /// Where it came from (`virtuous_webhook`).
    pub origin: String,
    /// Why it was not understood.
    pub reason: String,
    /// The event's JSON as received (the model, or the whole body).
    pub raw_json: String,
}

impl Versioned for UnparsedEvent {
    const VERSION: u8 = 1;
    const NAME: &'static str = "UnparsedEvent";
}

/// What [`TenantStore::keep_unparsed`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptUnparsed {
    /// Ids given to the events, in order (the first `dropped_new` of them were dropped again
    /// at once: one call brought more than the bound).
    pub ids: Vec<u64>,
    /// Events of this call still kept.
    pub kept: u64,
    /// Older kept events removed to stay within the bound.
    pub evicted_older: u64,
    /// Events of this call dropped at once (more than the bound in one call).
    pub dropped_new: u64,
}

impl TenantStore {
    /// Keeps unparsed events (ids assigned here), dropping the oldest past
    /// [`UNPARSED_KEPT_MAX`]; one atomic batch. Says what was kept and what the bound
    /// removed. Not durable until `Store::durable` resolves.
    pub fn keep_unparsed(
        &self,
        origin: &str,
        events: &[(String, String)],
        now_ms: u64,
    ) -> Result<KeptUnparsed, StoreError> {
        let inner = self.inner();
        let _guard = inner.lock_for_write()?;
        let prefix = inner.keys.section_prefix(section::INBOUND_UNPARSED);
        let existing: Vec<sled::IVec> = inner
            .tree
            .scan_prefix(&prefix)
            .keys()
            .collect::<Result<_, _>>()
            .map_err(io_error)?;
        let first_id = existing
            .last()
            .and_then(|key| key.get(prefix.len()..))
            .and_then(|tail| <[u8; 8]>::try_from(tail).ok())
            .map_or(1, |bytes| u64::from_be_bytes(bytes) + 1);
        let mut batch = sled::Batch::default();
        let mut ids = Vec::with_capacity(events.len());
        for (id, (raw_json, reason)) in (first_id..).zip(events) {
            let event = UnparsedEvent {
                id,
                received_at_ms: now_ms,
                origin: origin.to_owned(),
                reason: reason.clone(),
                raw_json: raw_json.clone(),
            };
            batch.insert(unparsed_key(&prefix, id), encode(&event)?);
            ids.push(id);
        }
        let over = (existing.len() + events.len()).saturating_sub(UNPARSED_KEPT_MAX);
        for key in existing.iter().take(over) {
            batch.remove(key.clone());
        }
        let new_over = over.saturating_sub(existing.len());
        for id in ids.iter().take(new_over) {
            batch.remove(unparsed_key(&prefix, *id));
        }
        inner.tree.apply_batch(batch).map_err(io_error)?;
        let evicted_older = over.min(existing.len()) as u64;
        Ok(KeptUnparsed {
            kept: (ids.len() - new_over.min(ids.len())) as u64,
            ids,
            evicted_older,
            dropped_new: new_over as u64,
        })
    }

    /// Kept unparsed events with an id above `after`, oldest first, at most `limit`.
    pub fn unparsed_page(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<UnparsedEvent>, StoreError> {
        let inner = self.inner();
        let prefix = inner.keys.section_prefix(section::INBOUND_UNPARSED);
        let start = unparsed_key(&prefix, after.saturating_add(1));
        let mut end = prefix.clone();
        end.extend_from_slice(&u64::MAX.to_be_bytes());
        end.push(0);
        inner
            .tree
            .range(start..end)
            .values()
            .take(limit)
            .map(|bytes| decode(&bytes.map_err(io_error)?))
            .collect()
    }

    /// How many unparsed events are kept (at most [`UNPARSED_KEPT_MAX`]: a bounded scan).
    pub fn unparsed_count(&self) -> Result<u64, StoreError> {
        let inner = self.inner();
        let prefix = inner.keys.section_prefix(section::INBOUND_UNPARSED);
        let mut count = 0u64;
        for key in inner.tree.scan_prefix(prefix).keys() {
            key.map_err(io_error)?;
            count += 1;
        }
        Ok(count)
    }
}

fn unparsed_key(prefix: &[u8], id: u64) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(&id.to_be_bytes());
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, StoreOptions};

    #[test]
    fn kept_events_page_oldest_first_and_stay_bounded() {
        // Goal: ids ascend, paging resumes after a cursor, and the bound drops the oldest.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store"), StoreOptions::default()).unwrap();
        let tenant = store.tenant("t1").unwrap();
        let events: Vec<(String, String)> = (0..UNPARSED_KEPT_MAX + 5)
            .map(|index| (format!("{{\"n\":{index}}}"), "no event name".to_string()))
            .collect();
        let first = tenant
            .keep_unparsed("virtuous_webhook", &events[..3], 7)
            .unwrap();
        assert_eq!(first.ids, vec![1, 2, 3]);
        assert_eq!(
            (first.kept, first.evicted_older, first.dropped_new),
            (3, 0, 0)
        );
        let page = tenant.unparsed_page(1, 10).unwrap();
        assert_eq!(page.iter().map(|e| e.id).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(page[0].raw_json, "{\"n\":1}");
        assert_eq!(page[0].reason, "no event name");
        let second = tenant
            .keep_unparsed("virtuous_webhook", &events[3..], 8)
            .unwrap();
        // 1,002 new events against a bound of 1,000: the 3 older ones and 2 new ones go.
        assert_eq!(
            (second.kept, second.evicted_older, second.dropped_new),
            (UNPARSED_KEPT_MAX as u64, 3, 2)
        );
        assert_eq!(tenant.unparsed_count().unwrap(), UNPARSED_KEPT_MAX as u64);
        let oldest = tenant.unparsed_page(0, 1).unwrap();
        assert_eq!(oldest[0].id, 6);
    }

    #[test]
    fn an_unparsed_event_has_pinned_bytes() {
        // Goal: the stored format of the new kind is pinned like every other stored type.
        let event = UnparsedEvent {
            id: 1,
            received_at_ms: 2,
            origin: "o".into(),
            reason: "r".into(),
            raw_json: "{}".into(),
        };
        let bytes = encode(&event).unwrap();
        assert_eq!(
            bytes,
            [
                1, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, b'o', 1,
                0, 0, 0, 0, 0, 0, 0, b'r', 2, 0, 0, 0, 0, 0, 0, 0, b'{', b'}'
            ]
        );
        assert_eq!(decode::<UnparsedEvent>(&bytes).unwrap(), event);
    }
}
