//! The partner platform simulator (`docs/sandbox.md`, "Partner platform contacts"): a generic
//! partner platform with a contacts write API (upsert by id) and a listing by updated-since
//! with cursors, under `/partners/{partner}/contacts`, that fires a signed JSON webhook for
//! every change — its users' and its API clients', ours included. Its control API is under
//! `/_sandbox/partners`.
//!
//! # Layout
//! - `mod.rs`: [`PartnerSpec`]; the running `Simulator`, its routes and in-process calls.
//! - `contacts`: a contact, the changes a write asks for, the store in listing order (pure).
//! - `partner`: the registry and one partner's state (one mutex per partner); the one way a
//!   contact is written, firing its webhook when something changed.
//! - `webhooks`: the event body, its signature, the drop draw, ordered delivery.
//! - `routes_api`: `/partners/{partner}/contacts…` behind the crate's JSON gate (auth →
//!   script → random faults → handler); `routes_control`: the control API.

mod contacts;
mod partner;
mod routes_api;
mod routes_control;
mod webhooks;

#[cfg(test)]
mod smoke_tests;
#[cfg(test)]
mod webhook_tests;

use std::sync::Arc;

use actix_web::web;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;

/// The path prefix of the simulated API.
pub(crate) const API_PREFIX: &str = "/partners";
/// The path prefix of the control API.
pub(crate) const CONTROL_PREFIX: &str = "/_sandbox/partners";

/// A partner to create (`POST /_sandbox/partners`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PartnerSpec {
    pub id: String,
    /// API clients send `Authorization: Bearer {api_token}`.
    pub api_token: String,
    /// Where webhooks go; `None`: nowhere (yet).
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// Signs each webhook body (`X-Signature`).
    #[serde(default)]
    pub webhook_secret: String,
    /// Stored emails are trimmed and lower-cased.
    #[serde(default)]
    pub normalize_emails: bool,
    /// Share of webhook events (0–100 %) never sent.
    #[serde(default)]
    pub webhook_drop_pct: f64,
    /// Seeds the fault and drop draws.
    #[serde(default)]
    pub seed: u64,
}

impl PartnerSpec {
    /// A partner without a webhook, emails stored as given.
    pub fn new(id: impl Into<String>, api_token: impl Into<String>) -> PartnerSpec {
        PartnerSpec {
            id: id.into(),
            api_token: api_token.into(),
            webhook_url: None,
            webhook_secret: String::new(),
            normalize_emails: false,
            webhook_drop_pct: 0.0,
            seed: 0,
        }
    }

    /// The same partner sending its webhooks to `url`, signed with `secret`.
    pub fn with_webhook(mut self, url: &str, secret: &str) -> PartnerSpec {
        self.webhook_url = Some(url.into());
        self.webhook_secret = secret.into();
        self
    }

    fn validate(&self) -> Result<(), String> {
        if self.id.trim().is_empty() || self.id.contains('/') {
            return Err("id must be non-empty and contain no '/'".into());
        }
        if self.api_token.is_empty() {
            return Err("api_token must be non-empty".into());
        }
        if let Some(url) = &self.webhook_url {
            check_url(url)?;
        }
        check_drop_pct(self.webhook_drop_pct)
    }
}

pub(crate) fn check_url(url: &str) -> Result<(), String> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        Err("webhook url must be an http(s) URL".into())
    }
}

pub(crate) fn check_drop_pct(drop_pct: f64) -> Result<(), String> {
    if (0.0..=100.0).contains(&drop_pct) {
        Ok(())
    } else {
        Err("webhook_drop_pct must be between 0 and 100".into())
    }
}

/// The registry and the dispatcher's queue, as the routes see them.
pub(crate) struct Partners {
    pub(crate) registry: partner::Registry,
    pub(crate) sender: mpsc::UnboundedSender<webhooks::WebhookJob>,
}

/// A running partner simulator: its partners and the task that delivers their webhooks.
pub(crate) struct Simulator {
    partners: Arc<Partners>,
    dispatcher: tokio::task::JoinHandle<()>,
}

impl Simulator {
    pub(crate) fn start() -> Simulator {
        let (sender, dispatcher) = webhooks::spawn_dispatcher();
        Simulator {
            partners: Arc::new(Partners {
                registry: partner::Registry::default(),
                sender,
            }),
            dispatcher,
        }
    }

    /// Mounts `/partners` and `/_sandbox/partners` (run once per server worker). Mount it
    /// before any `/_sandbox` scope: a scope that matches a prefix does not fall through.
    pub(crate) fn routes(&self) -> impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static {
        crate::server::mount_simulator(
            &self.partners,
            (API_PREFIX, routes_api::configure),
            (CONTROL_PREFIX, routes_control::configure),
        )
    }

    /// Creates a partner in-process; the same id and token again is a no-op.
    pub(crate) fn create_partner(&self, spec: PartnerSpec) -> Result<(), String> {
        let partners = &self.partners;
        partners
            .registry
            .create(spec, &partners.sender)
            .map_err(|error| error.to_string())
    }

    fn with_partner<T>(
        &self,
        partner_id: &str,
        action: impl FnOnce(&mut partner::PartnerState) -> Result<T, String>,
    ) -> Result<T, String> {
        self.partners.registry.with(partner_id, "partner", action)
    }

    /// Creates or replaces contacts as a user would (`quiet`: no webhooks); answers ids.
    pub(crate) fn put_contacts(
        &self,
        partner_id: &str,
        contacts: Vec<Value>,
        quiet: bool,
    ) -> Result<Vec<String>, String> {
        self.with_partner(partner_id, |state| state.put_contacts(&contacts, quiet))
    }

    /// A user's edit of one contact (keys merged, webhook fired); answers the contact.
    pub(crate) fn edit_contact(
        &self,
        partner_id: &str,
        contact_id: &str,
        changes: Value,
    ) -> Result<Value, String> {
        self.with_partner(partner_id, |state| {
            let mut edited = state
                .user_edits(vec![(contact_id.to_owned(), changes)])
                .map_err(|error| error.to_string())?;
            Ok(edited.remove(0))
        })
    }

    /// Every contact of a partner, in listing order.
    pub(crate) fn contacts(&self, partner_id: &str) -> Result<Vec<Value>, String> {
        self.with_partner(partner_id, |state| Ok(state.all_contacts()))
    }

    pub(crate) fn stop(&self) {
        self.dispatcher.abort();
    }
}
