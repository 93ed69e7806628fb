//! The feed registry and one feed's state: items, faults, counters and the request log,
//! under one mutex per feed (feeds never wait on each other); the changes a user makes.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;
use serde_json::Value;

use super::items::{fill_template, merge_patch, parse_instant_ms, Item, ItemStore};
use super::FeedSpec;
use crate::clock::now_ms;
use crate::faults::Faults;
use crate::registry::{self, Entry};
use crate::request_log::RequestLog;

/// Items one `generate` may create (a limit on everything).
pub(crate) const GENERATE_MAX: u64 = 1_000_000;

#[derive(Debug, thiserror::Error)]
pub(crate) enum CreateFeedError {
    #[error("{0}")]
    Invalid(String),
    #[error("feed {0:?} exists")]
    IdTaken(String),
}

/// Counters behind `GET /_sandbox/feeds/{id}/stats`.
#[derive(Debug, Default, Clone, Serialize)]
pub(crate) struct Counters {
    /// Listing calls answered, by status (401s and faults included; `0` = closed unanswered).
    pub(crate) api_requests_by_status: BTreeMap<u16, u64>,
    pub(crate) unauthorized: u64,
    pub(crate) items_returned: u64,
    pub(crate) edits: u64,
}

pub(crate) struct FeedState {
    pub(crate) spec: FeedSpec,
    pub(crate) items: ItemStore,
    pub(crate) faults: Faults,
    pub(crate) counters: Counters,
    pub(crate) requests: RequestLog,
}

/// `generate`: `count` items from `template` (`{n}` in its strings becomes the item's number).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Generate {
    pub(crate) count: u64,
    pub(crate) template: Value,
    #[serde(default)]
    pub(crate) updated_at: Option<String>,
}

/// Whole seconds of an ISO 8601 instant, or a message naming the field.
fn seconds_of(field: &str, text: &str) -> Result<u64, String> {
    parse_instant_ms(text)
        .filter(|ms| *ms >= 0)
        .map(|ms| ms as u64 / 1000)
        .ok_or_else(|| format!("{field} {text:?} is not an ISO 8601 instant"))
}

impl FeedState {
    /// Checks one new item and stamps it; nothing is stored (all or nothing).
    fn new_item(
        &mut self,
        value: Value,
        now_s: u64,
        taken: &mut Vec<String>,
    ) -> Result<Item, String> {
        let Value::Object(mut body) = value else {
            return Err("an item is a JSON object".into());
        };
        match body.get("type") {
            Some(Value::String(kind)) if !kind.is_empty() => {}
            _ => return Err("an item needs a non-empty string `type`".into()),
        }
        let id = match body.remove("id") {
            None | Some(Value::Null) => loop {
                let id = self.items.next_numbered_id("item-");
                if !taken.contains(&id) {
                    break id;
                }
            },
            Some(Value::String(id)) if !id.is_empty() => id,
            Some(Value::Number(number)) => number.to_string(),
            Some(other) => return Err(format!("an item's `id` must be a string, got {other}")),
        };
        if self.items.get(&id).is_some() || taken.contains(&id) {
            return Err(format!("item {id:?} exists"));
        }
        let updated_at_s = match body.remove("updated_at") {
            None | Some(Value::Null) => now_s,
            Some(Value::String(text)) => seconds_of("updated_at", &text)?,
            Some(other) => {
                return Err(format!(
                    "updated_at must be an ISO 8601 string, got {other}"
                ))
            }
        };
        taken.push(id.clone());
        Ok(Item {
            id,
            updated_at_s,
            body,
        })
    }

    /// Adds items, all or nothing; answers their ids in order.
    pub(crate) fn add_items(&mut self, values: Vec<Value>) -> Result<Vec<String>, String> {
        let now_s = now_ms() / 1000;
        let mut taken = Vec::with_capacity(values.len());
        let mut items = Vec::with_capacity(values.len());
        for (index, value) in values.into_iter().enumerate() {
            items.push(
                self.new_item(value, now_s, &mut taken)
                    .map_err(|reason| format!("items[{index}]: {reason}"))?,
            );
        }
        let ids = items.iter().map(|item| item.id.clone()).collect();
        for item in items {
            self.items.put(item);
        }
        Ok(ids)
    }

    /// `generate`: numbered items from a template.
    pub(crate) fn generate(&mut self, generate: Generate) -> Result<Vec<String>, String> {
        if generate.count > GENERATE_MAX {
            return Err(format!("generate.count is at most {GENERATE_MAX}"));
        }
        if !generate.template.is_object() {
            return Err("generate.template is a JSON object".into());
        }
        let first = self.items.len() as u64 + 1;
        let values = (first..first + generate.count)
            .map(|n| {
                let mut value = fill_template(&generate.template, n);
                if let Some(updated_at) = &generate.updated_at {
                    value["updated_at"] = Value::String(updated_at.clone());
                }
                value
            })
            .collect();
        self.add_items(values)
    }

    /// A user's edit: merge `patch` into the item; its `updated_at` is the patch's, else now
    /// but always after the previous one (each edit is a new version). `id` cannot change.
    pub(crate) fn edit_item(&mut self, item_id: &str, patch: &Value) -> Result<Value, String> {
        let Value::Object(patch_members) = patch else {
            return Err("an edit is a JSON object (a merge patch)".into());
        };
        if patch_members.contains_key("id") {
            return Err("an item's id cannot change".into());
        }
        let asked_s = match patch_members.get("updated_at") {
            None => None,
            Some(Value::String(text)) => Some(seconds_of("updated_at", text)?),
            Some(other) => {
                return Err(format!(
                    "updated_at must be an ISO 8601 string, got {other}"
                ))
            }
        };
        let Some(mut item) = self.items.get(item_id).cloned() else {
            return Err(format!("unknown item {item_id:?}"));
        };
        let mut body = Value::Object(std::mem::take(&mut item.body));
        let mut rest = patch.clone();
        if let Some(members) = rest.as_object_mut() {
            members.remove("updated_at");
        }
        merge_patch(&mut body, &rest);
        let Value::Object(body) = body else {
            return Err("an edit must leave an object".into());
        };
        if !matches!(body.get("type"), Some(Value::String(kind)) if !kind.is_empty()) {
            return Err("an item keeps a non-empty string `type`".into());
        }
        item.body = body;
        item.updated_at_s = asked_s.unwrap_or_else(|| (now_ms() / 1000).max(item.updated_at_s + 1));
        let answer = item.to_json();
        self.items.put(item);
        self.counters.edits += 1;
        Ok(answer)
    }

    /// Gives the listed items (all when `None`) exactly this `updated_at`: ties for paging
    /// tests. Unknown ids are skipped; answers how many were touched.
    pub(crate) fn touch(
        &mut self,
        updated_at: &str,
        item_ids: Option<Vec<String>>,
    ) -> Result<u64, String> {
        let updated_at_s = seconds_of("updated_at", updated_at)?;
        let ids: Vec<String> = match item_ids {
            Some(ids) => ids,
            None => self.items.all().map(|item| item.id.clone()).collect(),
        };
        let mut touched = 0u64;
        for id in ids {
            if let Some(mut item) = self.items.get(&id).cloned() {
                item.updated_at_s = updated_at_s;
                self.items.put(item);
                touched += 1;
            }
        }
        Ok(touched)
    }

    /// Every item in listing order.
    pub(crate) fn all_items(&self) -> Vec<Value> {
        self.items.all().map(Item::to_json).collect()
    }
}

pub(crate) struct Feed {
    /// The spec it was created with (a second create with the same spec is a no-op).
    spec: FeedSpec,
    state: Mutex<FeedState>,
}

impl Entry for Feed {
    type State = FeedState;

    fn state(&self) -> &Mutex<FeedState> {
        &self.state
    }
}

/// Every feed, by id.
pub(crate) type Registry = registry::Registry<Feed>;

impl Registry {
    pub(crate) fn create(
        &self,
        spec: FeedSpec,
        same_spec_is_ok: bool,
    ) -> Result<(), CreateFeedError> {
        spec.validate().map_err(CreateFeedError::Invalid)?;
        let build = || Feed {
            spec: spec.clone(),
            state: Mutex::new(FeedState {
                spec: spec.clone(),
                items: ItemStore::default(),
                faults: Faults::default(),
                counters: Counters::default(),
                requests: RequestLog::default(),
            }),
        };
        self.insert(
            &spec.id,
            |existing| same_spec_is_ok && existing.spec == spec,
            |_| false,
            build,
        )
        .map_err(|_| CreateFeedError::IdTaken(spec.id.clone()))
    }
}
