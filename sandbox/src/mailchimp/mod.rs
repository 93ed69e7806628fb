//! The Mailchimp Marketing API simulator (`docs/sandbox.md`, "Mailchimp"): audience members
//! read by `since_last_changed` with `count`/`offset` paging and written by the upsert `PUT`
//! and the tags call, the 10-connection limit, and form-encoded audience webhooks (filtered
//! by their `sources`, with a seeded share dropped), on the crate's shared server.
//!
//! # Layout
//! - `mod.rs`: [`AccountSpec`]; the running `Simulator` and the routes it mounts.
//! - `account`: the registry, one account's lists, members (ids: the subscriber hash, MD5 of
//!   the lowercased email, and the stable `unique_email_id`), webhook settings, counters.
//! - `members`: how members change — user changes (control API) and API writes — and the
//!   events each fires.
//! - `webhooks`: firing an event (the webhook's `sources`, the drop draw), form encoding,
//!   the delivery task.
//! - `routes_api`: the gate (auth → connection slot → script → random faults) and the
//!   `/mailchimp/3.0` reads; `routes_write`: its writes; `routes_control`: `/_sandbox/mailchimp`.

mod account;
mod members;
mod routes_api;
mod routes_control;
mod routes_write;
mod webhooks;

#[cfg(test)]
mod smoke_tests;
#[cfg(test)]
mod sources_tests;
#[cfg(test)]
mod write_tests;

use std::sync::Arc;

use actix_web::web;
use serde::{Deserialize, Serialize};

fn default_max_connections() -> u64 {
    10
}

/// What a request past the connection limit gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverLimitAnswer {
    /// `429` with Mailchimp's JSON problem document (its documented error).
    #[default]
    Problem429,
    /// A bare `403` with an empty body (reported in the field under overload).
    Bare403,
}

/// An account to create (`POST /_sandbox/mailchimp/accounts`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccountSpec {
    pub id: String,
    /// `<key>-<dc>`, e.g. `0123abcd-us21`: the data center is the suffix, as in the real API.
    pub api_key: String,
    /// Audience (list) ids.
    pub lists: Vec<String>,
    /// Seeds the webhook drop and fault draws.
    #[serde(default)]
    pub seed: u64,
    /// Simultaneous API requests allowed (Mailchimp: 10).
    #[serde(default = "default_max_connections")]
    pub max_connections: u64,
    #[serde(default)]
    pub over_limit: OverLimitAnswer,
}

impl AccountSpec {
    pub fn new(id: impl Into<String>, api_key: impl Into<String>, lists: &[&str]) -> AccountSpec {
        AccountSpec {
            id: id.into(),
            api_key: api_key.into(),
            lists: lists.iter().map(|list| (*list).to_owned()).collect(),
            seed: 0,
            max_connections: default_max_connections(),
            over_limit: OverLimitAnswer::Problem429,
        }
    }

    /// The data center of the key (`us21` in `…-us21`).
    pub fn data_center(&self) -> Option<&str> {
        data_center(&self.api_key)
    }

    fn validate(&self) -> Result<(), String> {
        if self.id.trim().is_empty() || self.id.contains('/') {
            return Err("id must be non-empty and contain no '/'".into());
        }
        if self.data_center().is_none() {
            return Err("api_key must end in a data-center suffix such as -us21".into());
        }
        if self
            .lists
            .iter()
            .any(|list| list.is_empty() || list.contains('/'))
        {
            return Err("list ids must be non-empty and contain no '/'".into());
        }
        if self.max_connections == 0 {
            return Err("max_connections must be at least 1".into());
        }
        Ok(())
    }
}

/// `us21` from `abc-us21`; `None` without a `-` followed by letters then digits.
pub(crate) fn data_center(api_key: &str) -> Option<&str> {
    let (key, suffix) = api_key.rsplit_once('-')?;
    let letters = suffix.trim_end_matches(|c: char| c.is_ascii_digit());
    let well_formed = !key.is_empty()
        && !letters.is_empty()
        && letters.len() < suffix.len()
        && letters.chars().all(|c| c.is_ascii_lowercase());
    well_formed.then_some(suffix)
}

/// A running Mailchimp simulator: its accounts and the task that delivers their webhooks.
pub(crate) struct Simulator {
    registry: Arc<account::Registry>,
    dispatcher: tokio::task::JoinHandle<()>,
}

impl Simulator {
    pub(crate) fn start() -> Simulator {
        let (webhook_sender, dispatcher) = webhooks::spawn_dispatcher();
        Simulator {
            registry: Arc::new(account::Registry::new(webhook_sender)),
            dispatcher,
        }
    }

    /// Mounts `/mailchimp/3.0` and `/_sandbox/mailchimp`. Mount before any `/_sandbox`
    /// scope: actix does not fall through from a matched scope.
    pub(crate) fn routes(&self) -> impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static {
        crate::server::mount_simulator(
            &self.registry,
            ("/mailchimp/3.0", routes_api::configure),
            ("/_sandbox/mailchimp", routes_control::configure),
        )
    }

    /// Creates an account in-process; the same id and key again is a no-op.
    pub(crate) fn create_account(&self, spec: AccountSpec) -> Result<(), String> {
        self.registry
            .create(spec, true)
            .map_err(|error| error.to_string())
    }

    pub(crate) fn stop(&self) {
        self.dispatcher.abort();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_data_center_is_the_key_suffix() {
        // Goal: `-usNN` keys give their data center; keys without one are refused.
        assert_eq!(super::data_center("0123abcd-us21"), Some("us21"));
        assert_eq!(super::data_center("a-b-us3"), Some("us3"));
        assert_eq!(super::data_center("0123abcd"), None);
        assert_eq!(super::data_center("0123abcd-21"), None);
        assert_eq!(super::data_center("0123abcd-us"), None);
        assert_eq!(super::data_center("-us21"), None);
    }
}
