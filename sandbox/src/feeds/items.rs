//! One feed's items, their listing order and cursor paging (pure).
//!
//! Items are free JSON objects; the store owns three of their fields: `id` (a string),
//! `type` and `updated_at` (ISO 8601 UTC, whole seconds, like most platforms' timestamps).
//! Pages are the crate's updated-since listing (`listing::SinceListing`): ordered by
//! (`updated_at`, `id`), a cursor naming the last item of the page it ends.

use serde_json::{Map, Value};

use crate::listing::{Ordered, OrderedStore};

pub(crate) use crate::listing::{iso_seconds, parse_instant_ms, SinceListing as Listing};

/// One item: its JSON object (with `id`, `type`, `updated_at` kept in step) and its time.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub(crate) id: String,
    pub(crate) updated_at_s: u64,
    pub(crate) body: Map<String, Value>,
}

impl Item {
    /// The item as the API answers it.
    pub(crate) fn to_json(&self) -> Value {
        let mut body = self.body.clone();
        body.insert("id".into(), Value::String(self.id.clone()));
        body.insert(
            "updated_at".into(),
            Value::String(iso_seconds(self.updated_at_s)),
        );
        Value::Object(body)
    }
}

impl Ordered for Item {
    fn id(&self) -> &str {
        &self.id
    }
    fn order_time(&self) -> u64 {
        self.updated_at_s
    }
}

/// A feed's items in listing order.
pub(crate) type ItemStore = OrderedStore<Item>;

/// RFC 7386 JSON merge patch: objects merge member by member, `null` removes, anything
/// else replaces.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(target) = target else {
        return;
    };
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// Replaces `{n}` in every string of `template` (keys stay as they are).
pub(crate) fn fill_template(template: &Value, n: u64) -> Value {
    match template {
        Value::String(text) => Value::String(text.replace("{n}", &n.to_string())),
        Value::Array(values) => Value::Array(values.iter().map(|v| fill_template(v, n)).collect()),
        Value::Object(members) => Value::Object(
            members
                .iter()
                .map(|(key, value)| (key.clone(), fill_template(value, n)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn item(store: &mut ItemStore, updated_at_s: u64) -> String {
        let id = store.next_numbered_id("item-");
        store.put(Item {
            id: id.clone(),
            updated_at_s,
            body: Map::new(),
        });
        id
    }

    fn read_all(store: &ItemStore, first: Listing) -> Vec<String> {
        let mut seen = Vec::new();
        let mut next = Some(first);
        while let Some(listing) = next {
            // Through the cursor text, as a client would.
            let listing = Listing::from_cursor(&listing.to_cursor()).unwrap();
            let (items, next_listing) = store.since_page(&listing);
            assert!(items.len() as u64 <= listing.limit);
            seen.extend(items.iter().map(|item| item.id.clone()));
            next = next_listing;
        }
        seen
    }

    #[test]
    fn paging_through_ties_on_updated_at_returns_each_item_once() {
        // Goal: 23 items sharing one updated_at, paged 5 at a time, come back once each,
        // after the earlier item, ties ordered by id.
        let mut store = ItemStore::default();
        let earlier = item(&mut store, 999);
        let mut tied: Vec<String> = (0..23).map(|_| item(&mut store, 1_000)).collect();
        let listing = Listing {
            updated_since_ms: None,
            limit: 5,
            after: None,
        };
        let seen = read_all(&store, listing);
        tied.sort();
        let mut expected = vec![earlier];
        expected.extend(tied);
        assert_eq!(seen, expected);
    }

    #[test]
    fn updated_since_includes_its_own_instant() {
        // Goal: `updated_since` keeps items at exactly that second and drops earlier ones; a
        // fraction of a second rounds the bound up to the next whole second.
        let mut store = ItemStore::default();
        item(&mut store, 99);
        let at = item(&mut store, 100);
        let later = item(&mut store, 101);
        let listing = |since_ms| Listing {
            updated_since_ms: Some(since_ms),
            limit: 10,
            after: None,
        };
        assert_eq!(read_all(&store, listing(100_000)), [at, later.clone()]);
        assert_eq!(read_all(&store, listing(100_001)), [later]);
    }

    #[test]
    fn an_edit_moves_an_item_to_its_new_place() {
        // Goal: re-putting an item with a later updated_at leaves one index entry.
        let mut store = ItemStore::default();
        let id = item(&mut store, 5);
        item(&mut store, 7);
        let mut edited = store.get(&id).unwrap().clone();
        edited.updated_at_s = 9;
        store.put(edited);
        assert_eq!(store.order.len(), 2);
        assert_eq!(store.all().last().unwrap().id, id);
    }

    #[test]
    fn merge_patch_and_templates_follow_their_rules() {
        // Goal: merge patch merges objects, removes on null, replaces others; `{n}` fills.
        let mut target = json!({"a": {"b": 1, "c": 2}, "d": [1]});
        merge_patch(&mut target, &json!({"a": {"b": null, "e": 3}, "d": "x"}));
        assert_eq!(target, json!({"a": {"c": 2, "e": 3}, "d": "x"}));
        let filled = fill_template(&json!({"k": "d-{n}", "l": ["{n}@x"], "m": 4}), 7);
        assert_eq!(filled, json!({"k": "d-7", "l": ["7@x"], "m": 4}));
        assert_eq!(iso_seconds(61), "1970-01-01T00:01:01Z");
        assert_eq!(parse_instant_ms("1970-01-01T00:00:01.5Z"), Some(1_500));
        assert_eq!(parse_instant_ms("1970-01-02"), Some(86_400_000));
        assert_eq!(parse_instant_ms("soon"), None);
    }
}
