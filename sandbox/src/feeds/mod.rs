//! The generic feed simulator (`docs/sandbox.md`, "Generic feeds"): a platform's JSON
//! listing of changed records — donations, contacts, whatever a test puts in — read by an
//! updated-since parameter with opaque cursors, under `/feeds/{feed}/items`, and its control
//! API under `/_sandbox/feeds/`. Steward's polled platforms (`sources.platforms.{name}.poll`)
//! read it.
//!
//! # Layout
//! - `mod.rs`: [`FeedSpec`]; the running `Simulator`, its routes and in-process calls.
//! - `items`: the item store, the listing order and cursor paging (pure).
//! - `feed`: the registry and one feed's state (one mutex per feed): items, faults,
//!   counters, request log; the changes a user makes.
//! - `routes_api`: `GET /feeds/{feed}/items` behind one gate (auth → script → random
//!   faults → handler).
//! - `routes_control`: the control API.

mod feed;
mod items;
mod routes_api;
mod routes_control;

#[cfg(test)]
mod smoke_tests;

use std::sync::Arc;

use actix_web::web;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The path prefix of the simulated listings.
pub(crate) const API_PREFIX: &str = "/feeds";
/// The path prefix of the control API.
pub(crate) const CONTROL_PREFIX: &str = "/_sandbox/feeds";

fn default_page_size() -> u64 {
    100
}
fn default_limit_max() -> u64 {
    1_000
}
fn default_updated_since_param() -> String {
    "updated_since".into()
}

/// A feed to create (`POST /_sandbox/feeds`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FeedSpec {
    pub id: String,
    /// The header a client authenticates with (e.g. `Authorization`); absent = no auth.
    #[serde(default)]
    pub auth_header: Option<String>,
    /// Its exact value (e.g. `Bearer abc`).
    #[serde(default)]
    pub auth_value: Option<String>,
    /// Items per page when the request gives no `limit`.
    #[serde(default = "default_page_size")]
    pub page_size: u64,
    /// The largest `limit` accepted.
    #[serde(default = "default_limit_max")]
    pub limit_max: u64,
    /// The name of the updated-since query parameter.
    #[serde(default = "default_updated_since_param")]
    pub updated_since_param: String,
    /// Seeds the random fault draws.
    #[serde(default)]
    pub seed: u64,
}

impl FeedSpec {
    /// A feed without auth, 100 items a page (at most 1,000), `updated_since`.
    pub fn new(id: impl Into<String>) -> FeedSpec {
        FeedSpec {
            id: id.into(),
            auth_header: None,
            auth_value: None,
            page_size: default_page_size(),
            limit_max: default_limit_max(),
            updated_since_param: default_updated_since_param(),
            seed: 0,
        }
    }

    /// The same feed behind `header: value`.
    pub fn with_auth(mut self, header: &str, value: &str) -> FeedSpec {
        self.auth_header = Some(header.into());
        self.auth_value = Some(value.into());
        self
    }

    fn validate(&self) -> Result<(), String> {
        if self.id.trim().is_empty() || self.id.contains('/') {
            return Err("id must be non-empty and contain no '/'".into());
        }
        if self.auth_header.is_some() != self.auth_value.is_some() {
            return Err("auth_header and auth_value go together".into());
        }
        if let Some(header) = &self.auth_header {
            if actix_web::http::header::HeaderName::from_bytes(header.as_bytes()).is_err() {
                return Err(format!("auth_header {header:?} is not a header name"));
            }
        }
        if self.limit_max == 0 || !(1..=self.limit_max).contains(&self.page_size) {
            return Err("page_size must be between 1 and limit_max".into());
        }
        if matches!(self.updated_since_param.as_str(), "" | "cursor" | "limit") {
            return Err("updated_since_param must be non-empty and not cursor or limit".into());
        }
        Ok(())
    }
}

/// A running feed simulator: its feeds.
pub(crate) struct Simulator {
    registry: Arc<feed::Registry>,
}

impl Simulator {
    pub(crate) fn start() -> Simulator {
        Simulator {
            registry: Arc::new(feed::Registry::default()),
        }
    }

    /// Mounts the listings under `/feeds` and the control API under `/_sandbox/feeds` (run
    /// once per server worker). Mount it before any `/_sandbox` scope: a scope that matches a
    /// prefix does not fall through.
    pub(crate) fn routes(&self) -> impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static {
        crate::server::mount_simulator(
            &self.registry,
            (API_PREFIX, routes_api::configure),
            (CONTROL_PREFIX, routes_control::configure),
        )
    }

    /// Creates a feed in-process; the same spec again is a no-op.
    pub(crate) fn create_feed(&self, spec: FeedSpec) -> Result<(), String> {
        self.registry
            .create(spec, true)
            .map_err(|error| error.to_string())
    }

    fn with_feed<T>(
        &self,
        feed_id: &str,
        action: impl FnOnce(&mut feed::FeedState) -> Result<T, String>,
    ) -> Result<T, String> {
        self.registry.with(feed_id, "feed", action)
    }

    /// Adds items (free JSON objects with a `type`; `id` and `updated_at` optional, as in
    /// the control API); answers their ids in order.
    pub(crate) fn add_items(
        &self,
        feed_id: &str,
        items: Vec<Value>,
    ) -> Result<Vec<String>, String> {
        self.with_feed(feed_id, |state| state.add_items(items))
    }

    /// A user's edit: a JSON merge patch; `updated_at` bumped unless the patch gives one.
    pub(crate) fn edit_item(
        &self,
        feed_id: &str,
        item_id: &str,
        patch: Value,
    ) -> Result<Value, String> {
        self.with_feed(feed_id, |state| state.edit_item(item_id, &patch))
    }

    /// Gives the listed items (all when `None`) exactly this `updated_at`; answers how many.
    pub(crate) fn touch_items(
        &self,
        feed_id: &str,
        updated_at: &str,
        item_ids: Option<Vec<String>>,
    ) -> Result<u64, String> {
        self.with_feed(feed_id, |state| state.touch(updated_at, item_ids))
    }
}
