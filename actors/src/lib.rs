//! # steward-actors: Steward's per-tenant runtime
//!
//! Each tenant runs a supervisor and five children on one actix arbiter; they share the
//! tenant's hub and the one sled store of the process.
//!
//! # Layout
//! Actors, one folder each with its helpers and tests (an actor imports no other actor):
//! - `capture/`: [`capture`] — the door for source facts: enqueues ([`messages::Enqueue`])
//!   and [`capture::commands`] (first-delivery alerts, event marks, holds, links), decided next to the store.
//! - `queue/`: [`queue`] — lane depths and ready work, hints the submitter.
//! - `submitter/`: [`submitter`] — leases, sends to Virtuous, completes;
//!   `request.rs` turns leased entries into one request and an answer into completions.
//! - `inbound/`: [`inbound`] — the door for Virtuous facts: webhook deliveries (matched,
//!   confirmed, or kept when not understood) and the webhook registration.
//! - `reconciler/`: [`reconciler`] — confirmation passes (`pass.rs`: paged FullGift queries)
//!   and money reconciliation jobs (`money_job.rs`, `reconciliations.rs`).
//! - `supervisor/`: [`supervisor`] — `TenantSupervisor` starts, watches (deaths and
//!   no-progress) and restarts the five children with backoff; the one module that knows
//!   the actor types.
//!
//! Below the actors (none of these imports an actor; `layering_tests.rs` checks it):
//! - [`hub`]: [`hub::TenantShared`], what a tenant's actors, supervisor and handle share —
//!   settings, the [`store::TenantRunState`] cell, actor cells, the budget, the leases, the
//!   children's addresses as message recipients, and the tenant's store (every tenant has
//!   one; there is no in-memory stand-in).
//! - [`child`]: the shell all five children share (ticks, progress, generation, kill hook);
//!   it reports its exit through a recipient, not to a supervisor type.
//! - [`virtuous_event`]: Virtuous webhook events as plain data; [`gift_match`]: the one
//!   matcher of Virtuous gifts to our records (bulk pass and webhook).
//! - [`messages`]: typed messages; each carries a [`mailbox::MailboxGuard`].
//! - [`observe`]: per-actor cells (atomics + observable state snapshot) read by status.
//! - [`settings`]: a tenant's runtime settings.
//! - [`mailbox`]: mailbox depth / wait counting; [`metrics`]: every metric name.
//! - [`budget`]: allowance arithmetic and budget status; [`ports`]: `Clock`, `Crm` (the
//!   store is no port: the actors use it directly).
//! - [`store`]: sled access — one `Db` per process; a tenant's data lives under its key
//!   prefix in one of 64 shared trees (the default layout; a tree per tenant is the older
//!   one), a versioned codec, group commit, the tenant registry and sealed secrets.
//! - [`outcome`]: the one outcome classification function, over plain facts.
//! - [`money`]: money reconciliation's plain data and pure report (per day and project, the
//!   differences by transaction id).
//! - [`retry`]: the retry policy — schedule, jitter, `Retry-After` floor and the
//!   retry / dead-letter decision the store applies (pure).
//! - [`failpoint`]: named crash points for the crash tests.
//! - [`alerting`]: the process's alert dispatcher — the store's alert outboxes to the
//!   sinks behind the [`alerting::AlertSink`] port, with retries (no tenant waits on it).
//!
//! Above them, [`runtime`]: [`runtime::Runtime`] (one arbiter per core, tenants spread over
//! them) and [`runtime::TenantHandle`], what the `steward` crate talks to.
//!
//! This crate knows records, lanes, budgets and outcomes. It does not know HTTP, JSON wire
//! formats of any platform, or reqwest.

pub mod alerting;
pub mod backfill;
pub mod budget;
pub mod capture;
pub mod child;
pub mod failpoint;
pub mod gift_match;
pub mod hub;
pub mod inbound;
pub mod mailbox;
pub mod messages;
pub mod metrics;
pub mod money;
pub mod observe;
pub mod outcome;
pub mod poll;
pub mod ports;
pub mod pull;
pub mod queue;
pub mod reconciler;
pub mod retry;
pub mod runtime;
pub mod settings;
pub mod source_fact;
pub mod store;
pub mod submitter;
pub mod supervisor;
pub mod two_way;
pub mod virtuous_event;

pub use messages::{EnqueueError, KillMode};
pub use observe::{ActorKind, ActorStatus};
pub use runtime::{Runtime, TenantHandle, TenantRuntimeStatus, TenantSettings, TenantSpec};

#[cfg(test)]
mod layering_tests;
#[cfg(test)]
mod test_support;
