//! The Constant Contact v3 simulator (`docs/sandbox.md`, "Constant Contact"): accounts with
//! OAuth2 refresh tokens, the contacts read Steward polls, the 4 requests/s limit and the
//! daily quota, and the control API under `/_sandbox/constant-contact/`.
//!
//! # Layout
//! - `mod.rs`: [`AccountSpec`], [`RefreshTokenKind`]; the running `Simulator` and its routes.
//! - `account`: the registry and one account's state (one mutex per account): tokens,
//!   limits, faults, counters, request log.
//! - `quota`: the daily quota and its reset (pure).
//! - `contacts`: the contact store, its JSON form, `status` filters and cursor paging (pure).
//! - `routes_api`: the token endpoint and `GET /v3/contacts`, behind one gate
//!   (auth → per-second limit → daily quota → script → random faults → handler).
//! - `routes_control`: the control API.

mod account;
mod contacts;
mod quota;
mod routes_api;
mod routes_control;

#[cfg(test)]
mod smoke_tests;

use std::sync::Arc;

use actix_web::web;
use serde::{Deserialize, Serialize};

/// The path prefix of the simulated API (`https://api.cc.email` and the token server both
/// live under it).
pub(crate) const API_PREFIX: &str = "/constant-contact";
/// The path prefix of the control API.
pub(crate) const CONTROL_PREFIX: &str = "/_sandbox/constant-contact";

/// What a refresh does to the refresh token it used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefreshTokenKind {
    /// Single use: each refresh answers a new refresh token and invalidates the old one.
    #[default]
    Rotating,
    /// The same refresh token stays valid and is answered again.
    LongLived,
}

fn default_access_token_ttl_ms() -> u64 {
    86_400_000
}
fn default_per_second_limit() -> u64 {
    4
}
fn default_daily_quota() -> u64 {
    10_000
}

/// An account to create (`POST /_sandbox/constant-contact/accounts`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccountSpec {
    pub id: String,
    pub client_id: String,
    pub client_secret: String,
    /// The refresh token the account starts with (what the user's authorisation gave).
    pub refresh_token: String,
    #[serde(default)]
    pub refresh_token_kind: RefreshTokenKind,
    /// How long an access token lives (the real API: 24 h).
    #[serde(default = "default_access_token_ttl_ms")]
    pub access_token_ttl_ms: u64,
    /// API calls admitted per sliding second.
    #[serde(default = "default_per_second_limit")]
    pub per_second_limit: u64,
    /// API calls admitted per day (reset at 00:00 UTC unless moved by the control API).
    #[serde(default = "default_daily_quota")]
    pub daily_quota: u64,
    /// Seeds the random fault draws.
    #[serde(default)]
    pub seed: u64,
}

impl AccountSpec {
    /// An account with the real API's limits and a rotating refresh token.
    pub fn new(
        id: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
        refresh_token: impl Into<String>,
    ) -> AccountSpec {
        AccountSpec {
            id: id.into(),
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            refresh_token: refresh_token.into(),
            refresh_token_kind: RefreshTokenKind::Rotating,
            access_token_ttl_ms: default_access_token_ttl_ms(),
            per_second_limit: default_per_second_limit(),
            daily_quota: default_daily_quota(),
            seed: 0,
        }
    }

    fn validate(&self) -> Result<(), String> {
        // Access tokens carry the account id before a '.', so an id holds none.
        if self.id.trim().is_empty() || self.id.contains(['/', '.']) {
            return Err("id must be non-empty and contain no '/' or '.'".into());
        }
        for (name, value) in [
            ("client_id", &self.client_id),
            ("client_secret", &self.client_secret),
            ("refresh_token", &self.refresh_token),
        ] {
            if value.trim().is_empty() {
                return Err(format!("{name} must be non-empty"));
            }
        }
        if self.access_token_ttl_ms == 0 {
            return Err("access_token_ttl_ms must be at least 1".into());
        }
        if self.per_second_limit == 0 {
            return Err("per_second_limit must be at least 1".into());
        }
        Ok(())
    }
}

/// A running Constant Contact simulator: its accounts.
pub(crate) struct Simulator {
    registry: Arc<account::Registry>,
}

impl Simulator {
    pub(crate) fn start() -> Simulator {
        Simulator {
            registry: Arc::new(account::Registry::default()),
        }
    }

    /// Mounts the API under `/constant-contact` and the control API under
    /// `/_sandbox/constant-contact` (run once per server worker). Mount it before any
    /// `/_sandbox` scope: a scope that matches a prefix does not fall through.
    pub(crate) fn routes(&self) -> impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static {
        crate::server::mount_simulator(
            &self.registry,
            (API_PREFIX, routes_api::configure),
            (CONTROL_PREFIX, routes_control::configure),
        )
    }

    /// Creates an account in-process; same rules as the control API. Creating an account
    /// that exists with the same spec is a no-op.
    pub(crate) fn create_account(&self, spec: AccountSpec) -> Result<(), String> {
        self.registry
            .create(spec, true)
            .map_err(|error| error.to_string())
    }
}
