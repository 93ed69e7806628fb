//! Simulators of the platforms Steward talks to, shipped inside the `steward` binary
//! (`steward sandbox`, and the embedded sandbox of `steward serve` / `steward demo`): Virtuous
//! CRM+, Constant Contact v3, Mailchimp, a generic platform feed and a generic partner
//! platform's contacts (`docs/sandbox.md`). The
//! crate depends on nothing of Steward's: a simulator knows only the wire contract of the
//! platform it imitates.
//!
//! CONTRACT: [`start`], [`SandboxConfig`], [`SandboxHandle`] and [`virtuous::OrgSpec`] are
//! what `main`, the engine's embedded mode, tests and benchmarks use. Keep these names and
//! signatures. [`start_keeping_state`] is the engine's embedded mode: the same sandbox, its
//! Virtuous organizations kept in a directory across restarts.
//!
//! # Layout
//! Shared plumbing, the same for every simulator:
//! - `lib.rs`: [`SandboxConfig`], [`start`] / [`start_keeping_state`] and the
//!   [`SandboxHandle`] of a running sandbox.
//! - `server`: the one HTTP server (body limit, 404 fallback, no signal handling), closing a
//!   connection unanswered, path parameters, status codes, query fields, mounting a source
//!   simulator.
//! - `clock`: `now_ms`, the crate's one wall clock.
//! - `ratelimit`: the sliding window (an hour, a second) and the `X-RateLimit-*` numbers.
//! - `faults`: random faults by stable hash, scripted steps.
//! - `gate`: the gate's plan (answer, hang, close unanswered) and its logging, for the
//!   simulators that decide under one lock; the whole JSON gate of feeds and partners.
//! - `request_log`: the bounded log behind `/_sandbox/orgs/{id}/requests`.
//! - `control`: the control APIs' shared helpers and fault routes.
//! - `listing`: ISO 8601 times, records in (updated_at, id) order, pages and cursors, the
//!   updated-since listing of feeds and partners.
//! - `registry`: the generic registry of the source simulators' accounts and feeds.
//! - `webhook_delivery`: the dispatcher that POSTs outgoing webhooks with retries (in order
//!   per lane when a simulator asks), and the HMAC that signs them.
//!
//! One folder per simulated platform, each mounting its routes on the shared server:
//! - [`virtuous`]: the Virtuous CRM+ simulator (its `//!` lists its files).
//! - [`constant_contact`]: the Constant Contact v3 simulator under `/constant-contact`.
//! - [`mailchimp`]: the Mailchimp members API and audience webhooks under `/mailchimp`.
//! - [`feeds`]: a generic platform listing (updated-since + cursor) under `/feeds`.
//! - [`partners`]: a generic partner platform's contacts (write API, listing, signed
//!   webhooks for every change) under `/partners`.

mod clock;
pub mod constant_contact;
mod control;
mod faults;
pub mod feeds;
mod gate;
mod listing;
pub mod mailchimp;
pub mod partners;
mod ratelimit;
mod registry;
mod request_log;
mod server;
#[cfg(test)]
mod test_support;
pub mod virtuous;
mod webhook_delivery;

use std::net::SocketAddr;
use std::path::Path;

pub use faults::{RandomFaults, ScriptStep, StepMatch, StepRespond};

/// How to run a sandbox.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Where to listen; port 0 picks a free port.
    pub listen: SocketAddr,
    /// actix-web worker threads (0 = one per core).
    pub workers: usize,
}

/// Why [`start_keeping_state`] did not start a sandbox.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Listen(#[source] std::io::Error),
    /// What was kept cannot be read back (the message names the file).
    #[error("{0}")]
    KeptState(String),
}

/// A running sandbox.
pub struct SandboxHandle {
    addr: SocketAddr,
    virtuous: virtuous::Simulator,
    constant_contact: constant_contact::Simulator,
    mailchimp: mailchimp::Simulator,
    feeds: feeds::Simulator,
    partners: partners::Simulator,
    server: actix_web::dev::ServerHandle,
}

impl SandboxHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
    /// Creates a Virtuous organization in-process (the embedded mode); same rules as the
    /// control API. Creating an org that exists with the same api key is a no-op.
    pub fn create_org(&self, spec: virtuous::OrgSpec) -> Result<(), String> {
        self.virtuous.create_org(spec)
    }
    /// The embedded mode's "make it so": creates the Virtuous org, or — when it exists —
    /// makes `spec.api_key` its current key (revoking the previous one), as a credential
    /// rotation on the Virtuous side would. Other fields of an existing org are left unchanged.
    pub fn ensure_org(&self, spec: virtuous::OrgSpec) -> Result<(), String> {
        self.virtuous.ensure_org(spec)
    }
    /// Whether a Virtuous organization with this id exists (created, or kept from an
    /// earlier run).
    pub fn has_virtuous_org(&self, id: &str) -> bool {
        self.virtuous.has_org(id)
    }

    /// Secrets are never written to disk: the webhook subscriptions of a kept organization
    /// come back without theirs, and sign with `secret` once this gives it back (the embedded
    /// mode: the secret its tenant registered with).
    pub fn restore_webhook_secret(&self, org_id: &str, secret: &str) -> Result<(), String> {
        self.virtuous.restore_webhook_secret(org_id, secret)
    }

    /// Writes the kept Virtuous organizations' latest changes now (no-op without a state
    /// directory); `steward serve` calls it at shutdown.
    pub async fn save_kept_state(&self) -> Result<(), String> {
        self.virtuous.save().await
    }

    /// Creates a Constant Contact account in-process; same rules as the control API.
    pub fn create_constant_contact_account(
        &self,
        spec: constant_contact::AccountSpec,
    ) -> Result<(), String> {
        self.constant_contact.create_account(spec)
    }

    /// Creates a Mailchimp account in-process; same rules as its control API.
    pub fn create_mailchimp_account(&self, spec: mailchimp::AccountSpec) -> Result<(), String> {
        self.mailchimp.create_account(spec)
    }

    /// Creates a generic feed in-process; same rules as its control API (the same spec
    /// again is a no-op).
    pub fn create_feed(&self, spec: feeds::FeedSpec) -> Result<(), String> {
        self.feeds.create_feed(spec)
    }

    /// Adds items to a feed (JSON objects with a `type`; `id`, `updated_at` optional), all
    /// or nothing; answers their ids in order.
    pub fn add_feed_items(
        &self,
        feed_id: &str,
        items: Vec<serde_json::Value>,
    ) -> Result<Vec<String>, String> {
        self.feeds.add_items(feed_id, items)
    }

    /// A user's edit of a feed item (a JSON merge patch; `updated_at` bumped unless given);
    /// answers the item.
    pub fn edit_feed_item(
        &self,
        feed_id: &str,
        item_id: &str,
        patch: serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        self.feeds.edit_item(feed_id, item_id, patch)
    }

    /// Gives feed items (all when `None`) exactly this ISO 8601 `updated_at` (ties).
    pub fn touch_feed_items(
        &self,
        feed_id: &str,
        updated_at: &str,
        item_ids: Option<Vec<String>>,
    ) -> Result<u64, String> {
        self.feeds.touch_items(feed_id, updated_at, item_ids)
    }

    /// Creates a partner platform in-process; same rules as its control API (the same id
    /// and token again is a no-op).
    pub fn create_partner(&self, spec: partners::PartnerSpec) -> Result<(), String> {
        self.partners.create_partner(spec)
    }

    /// Creates or replaces partner contacts as a user would (objects of `id`? and the
    /// fields; left-out fields are empty), all or nothing; `quiet` fires no webhooks
    /// (seeding). Answers their ids in order.
    pub fn put_partner_contacts(
        &self,
        partner_id: &str,
        contacts: Vec<serde_json::Value>,
        quiet: bool,
    ) -> Result<Vec<String>, String> {
        self.partners.put_contacts(partner_id, contacts, quiet)
    }

    /// A user's edit of a partner contact (keys merged, `null` clears; fires the webhook
    /// when something changed); answers the contact.
    pub fn edit_partner_contact(
        &self,
        partner_id: &str,
        contact_id: &str,
        changes: serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        self.partners.edit_contact(partner_id, contact_id, changes)
    }

    /// Every contact of a partner, in listing order.
    pub fn partner_contacts(&self, partner_id: &str) -> Result<Vec<serde_json::Value>, String> {
        self.partners.contacts(partner_id)
    }

    /// Stops the server gracefully (kept organizations written first).
    pub async fn stop(self) {
        self.server.stop(true).await;
        if let Err(error) = self.virtuous.save().await {
            tracing::warn!(error = %error, "sandbox organizations not saved at stop");
        }
        self.virtuous.stop();
        self.mailchimp.stop();
        self.partners.stop();
    }
}

/// Starts a sandbox inside the current actix/tokio runtime (call from `#[actix_web::main]`
/// or `#[actix_rt::test]`). Logs loudly that the target is a simulator.
pub async fn start(config: SandboxConfig) -> std::io::Result<SandboxHandle> {
    start_with(config, virtuous::Simulator::start()).await
}

/// [`start`], with the Virtuous organizations kept in `state_dir` (`{dir}/virtuous/`, created
/// at the first change): what an earlier run kept comes back first, pending imports included,
/// then every change is written within a moment (`docs/sandbox.md` "Kept across restarts").
/// A kept file that cannot be read refuses the start ([`StartError::KeptState`], naming it).
/// Other simulators (Constant Contact, Mailchimp, feeds, partners) stay in memory.
pub async fn start_keeping_state(
    config: SandboxConfig,
    state_dir: &Path,
) -> Result<SandboxHandle, StartError> {
    let virtuous = virtuous::Simulator::start_keeping(state_dir).map_err(StartError::KeptState)?;
    start_with(config, virtuous)
        .await
        .map_err(StartError::Listen)
}

async fn start_with(
    config: SandboxConfig,
    virtuous: virtuous::Simulator,
) -> std::io::Result<SandboxHandle> {
    let constant_contact = constant_contact::Simulator::start();
    let mailchimp = mailchimp::Simulator::start();
    let feeds = feeds::Simulator::start();
    let partners = partners::Simulator::start();
    // The source simulators first: their `/_sandbox/…` scopes must be tried before
    // Virtuous's catch-all `/_sandbox` scope, which would otherwise swallow them.
    let (constant_contact_routes, mailchimp_routes, feeds_routes) = (
        constant_contact.routes(),
        mailchimp.routes(),
        feeds.routes(),
    );
    let (partners_routes, virtuous_routes) = (partners.routes(), virtuous.routes());
    let routes = move |config: &mut actix_web::web::ServiceConfig| {
        constant_contact_routes(config);
        mailchimp_routes(config);
        feeds_routes(config);
        partners_routes(config);
        virtuous_routes(config);
    };
    let (server, addr) = server::bind(config, routes)?;
    let handle = server.handle();
    actix_web::rt::spawn(server);
    tracing::warn!(
        listen = %addr,
        "SANDBOX: this is a Virtuous CRM+ SIMULATOR, not Virtuous; nothing sent here reaches a real CRM"
    );
    Ok(SandboxHandle {
        addr,
        virtuous,
        constant_contact,
        mailchimp,
        feeds,
        partners,
        server: handle,
    })
}
