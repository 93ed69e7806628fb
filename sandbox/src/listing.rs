//! What the polled simulators' listings share (Constant Contact contacts, feed items):
//! ISO 8601 times in whole seconds, records kept in (`updated_at`, id) order, pages cut from
//! that order, and opaque cursors.
//!
//! Pages are ordered by (`updated_at`, id); a cursor names the last record of the page it
//! ends, so records that share one `updated_at` are never lost or repeated across pages.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// ISO 8601 UTC in whole seconds (`2026-11-26T10:00:00Z`).
pub(crate) fn iso_seconds(unix_s: u64) -> String {
    jiff::Timestamp::from_second(unix_s as i64)
        .map(|timestamp| timestamp.to_string())
        .unwrap_or_default()
}

/// Parses an ISO 8601 instant (`2026-11-26T10:00:00Z`, offsets allowed) or a date
/// (`2026-11-26`, read as 00:00 UTC) into Unix ms.
pub(crate) fn parse_instant_ms(text: &str) -> Option<i64> {
    if let Ok(timestamp) = text.parse::<jiff::Timestamp>() {
        return Some(timestamp.as_millisecond());
    }
    let date = text.parse::<jiff::civil::Date>().ok()?;
    let zoned = date.to_zoned(jiff::tz::TimeZone::UTC).ok()?;
    Some(zoned.timestamp().as_millisecond())
}

/// A listing as its cursor: base64url-encoded JSON, opaque to clients, self-contained for us.
pub(crate) fn to_cursor<Listing: Serialize>(listing: &Listing) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(listing).unwrap_or_default())
}

/// The listing a cursor carries; `None` for one we did not make.
pub(crate) fn from_cursor<Listing: DeserializeOwned>(cursor: &str) -> Option<Listing> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A record of an [`OrderedStore`].
pub(crate) trait Ordered {
    fn id(&self) -> &str;
    /// Whole seconds: the listing order's first key.
    fn updated_at_s(&self) -> u64;
}

/// Where a listing position is: (`updated_at` s, id).
pub(crate) type Position = (u64, String);

/// Records by id with their listing order kept in step.
#[derive(Debug)]
pub(crate) struct OrderedStore<Record> {
    by_id: HashMap<String, Record>,
    /// (`updated_at` s, id): the listing order.
    pub(crate) order: BTreeSet<Position>,
    /// Counts created records, for ids.
    pub(crate) created: u64,
}

impl<Record> Default for OrderedStore<Record> {
    fn default() -> Self {
        OrderedStore {
            by_id: HashMap::new(),
            order: BTreeSet::new(),
            created: 0,
        }
    }
}

impl<Record: Ordered> OrderedStore<Record> {
    pub(crate) fn get(&self, id: &str) -> Option<&Record> {
        self.by_id.get(id)
    }

    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Every record, unordered.
    pub(crate) fn values(&self) -> impl Iterator<Item = &Record> {
        self.by_id.values()
    }

    /// All records in listing order.
    pub(crate) fn all(&self) -> impl Iterator<Item = &Record> {
        self.order.iter().filter_map(|(_, id)| self.by_id.get(id))
    }

    /// Inserts or replaces a record, keeping the order index in step.
    pub(crate) fn put(&mut self, record: Record) {
        if let Some(previous) = self.by_id.get(record.id()) {
            self.order
                .remove(&(previous.updated_at_s(), previous.id().to_owned()));
        }
        self.order
            .insert((record.updated_at_s(), record.id().to_owned()));
        self.by_id.insert(record.id().to_owned(), record);
    }

    /// Up to `limit` records from `start` on in listing order that `matches`, and the
    /// position of the last one when more follow (where the next page starts after).
    pub(crate) fn page_from(
        &self,
        start: Bound<Position>,
        limit: u64,
        matches: impl Fn(&Position, &Record) -> bool,
    ) -> (Vec<&Record>, Option<Position>) {
        let mut matching = self
            .order
            .range((start, Bound::Unbounded))
            .filter_map(|position| Some((position, self.by_id.get(&position.1)?)))
            .filter(|(position, record)| matches(position, record))
            .map(|(_, record)| record);
        let page: Vec<&Record> = matching.by_ref().take(limit as usize).collect();
        let more = matching.next().is_some();
        let next_after = match page.last() {
            Some(last) if more => Some((last.updated_at_s(), last.id().to_owned())),
            _ => None,
        };
        (page, next_after)
    }
}
