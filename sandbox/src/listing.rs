//! What the polled simulators' listings share (Constant Contact contacts, feed items,
//! partner contacts): ISO 8601 times, records kept in (`updated_at`, id) order, pages cut from
//! that order, opaque cursors, and the updated-since listing of feeds and partners.
//!
//! Pages are ordered by (`updated_at`, id); a cursor names the last record of the page it
//! ends, so records that share one `updated_at` are never lost or repeated across pages.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

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

/// ISO 8601 UTC with milliseconds (`2026-11-26T10:00:00.123Z`).
pub(crate) fn iso_millis(unix_ms: u64) -> String {
    match jiff::Timestamp::from_millisecond(unix_ms as i64) {
        Ok(timestamp) => timestamp.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        Err(_) => String::from("1970-01-01T00:00:00.000Z"),
    }
}

/// A record of an [`OrderedStore`].
pub(crate) trait Ordered {
    /// How many ms one unit of [`Ordered::order_time`] is: 1,000 for stores of whole
    /// seconds (the default), 1 for stores of milliseconds.
    const TIME_UNIT_MS: u64 = 1_000;

    fn id(&self) -> &str;
    /// `updated_at` in [`Ordered::TIME_UNIT_MS`] units: the listing order's first key.
    fn order_time(&self) -> u64;
}

/// Where a listing position is: (`updated_at` in the store's unit, id).
pub(crate) type Position = (u64, String);

/// Records by id with their listing order kept in step.
#[derive(Debug)]
pub(crate) struct OrderedStore<Record> {
    by_id: HashMap<String, Record>,
    /// (`updated_at`, id): the listing order.
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

    /// `{prefix}{n}`: the next generated id no record has.
    pub(crate) fn next_numbered_id(&mut self, prefix: &str) -> String {
        loop {
            self.created += 1;
            let id = format!("{prefix}{}", self.created);
            if self.get(&id).is_none() {
                return id;
            }
        }
    }

    /// Inserts or replaces a record, keeping the order index in step.
    pub(crate) fn put(&mut self, record: Record) {
        if let Some(previous) = self.by_id.get(record.id()) {
            self.order
                .remove(&(previous.order_time(), previous.id().to_owned()));
        }
        self.order
            .insert((record.order_time(), record.id().to_owned()));
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
            Some(last) if more => Some((last.order_time(), last.id().to_owned())),
            _ => None,
        };
        (page, next_after)
    }
}

/// An updated-since listing (feed items, partner contacts): the query and, after the first
/// page, where the previous page ended. Its cursor is this, base64url-encoded JSON: opaque to
/// clients, self-contained for us.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SinceListing {
    /// Only records with `updated_at` at or after this (Unix ms).
    pub(crate) updated_since_ms: Option<i64>,
    pub(crate) limit: u64,
    /// The position of the last record already returned.
    pub(crate) after: Option<Position>,
}

/// The page sizes of an updated-since listing and the name of its since parameter.
pub(crate) struct PageRules<'a> {
    pub(crate) since_param: &'a str,
    /// Records per page when the request gives no `limit`.
    pub(crate) page_size: u64,
    /// The largest `limit` accepted.
    pub(crate) limit_max: u64,
}

impl SinceListing {
    pub(crate) fn to_cursor(&self) -> String {
        to_cursor(self)
    }

    pub(crate) fn from_cursor(cursor: &str) -> Option<SinceListing> {
        from_cursor(cursor)
    }

    /// The listing a request's query asks for: its `cursor` (which carries the whole query),
    /// or its since parameter (an ISO 8601 date-time or date) and `limit`; else why not.
    pub(crate) fn from_query(
        query: &HashMap<String, String>,
        rules: &PageRules<'_>,
    ) -> Result<SinceListing, String> {
        if let Some(cursor) = query.get("cursor") {
            return SinceListing::from_cursor(cursor)
                .ok_or_else(|| "cursor is not valid".to_owned());
        }
        let param = rules.since_param;
        let updated_since_ms = match query.get(param) {
            Some(text) => Some(
                parse_instant_ms(text)
                    .ok_or_else(|| format!("{param} {text:?} is not an ISO 8601 date-time"))?,
            ),
            None => None,
        };
        let limit_max = rules.limit_max;
        let limit = match query.get("limit") {
            Some(text) => text
                .parse::<u64>()
                .ok()
                .filter(|limit| (1..=limit_max).contains(limit))
                .ok_or_else(|| format!("limit must be between 1 and {limit_max}"))?,
            None => rules.page_size,
        };
        Ok(SinceListing {
            updated_since_ms,
            limit,
            after: None,
        })
    }
}

impl<Record: Ordered> OrderedStore<Record> {
    /// The page `listing` asks for, and the listing of the next page when more follow.
    pub(crate) fn since_page(
        &self,
        listing: &SinceListing,
    ) -> (Vec<&Record>, Option<SinceListing>) {
        let unit_ms = Record::TIME_UNIT_MS;
        let start = match (&listing.after, listing.updated_since_ms) {
            (Some(after), _) => Bound::Excluded(after.clone()),
            // `updated_at` ≥ since: the first whole unit at or after it.
            (None, Some(since_ms)) => {
                let first = (since_ms.max(0) as u64).div_ceil(unit_ms);
                Bound::Included((first, String::new()))
            }
            (None, None) => Bound::Unbounded,
        };
        let since_ms = listing.updated_since_ms.unwrap_or(i64::MIN);
        let (records, next_after) = self.page_from(start, listing.limit, |(time, _), _| {
            (*time * unit_ms) as i64 >= since_ms
        });
        let next = next_after.map(|after| SinceListing {
            after: Some(after),
            ..listing.clone()
        });
        (records, next)
    }
}
