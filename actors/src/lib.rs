//! # steward-actors: Steward's per-tenant runtime
//!
//! # Layout
//! - [`runtime`]: [`runtime::Runtime`] (one arbiter per core, tenants spread over them) and
//!   [`runtime::TenantHandle`], what the HTTP layer talks to.
//! - [`supervisor`]: `TenantSupervisor` — starts, watches (deaths and no-progress) and
//!   restarts the five children with backoff; [`supervisor::TenantShared`] is what a
//!   tenant's actors and its handle share.
//! - [`child`]: the shell all five children share (ticks, progress, generation, kill hook).
//! - [`capture`], [`queue`], [`submitter`], [`inbound`], [`reconciler`]: the children.
//! - [`messages`]: typed messages; each carries a [`mailbox::MailboxGuard`].
//! - [`observe`]: per-actor cells (atomics + observable state snapshot) read by status.
//! - [`mailbox`]: mailbox depth / wait counting; [`metrics`]: every metric name.
//! - [`budget`]: allowance arithmetic and budget status; [`ports`]: `Clock`, `TenantData`.
//! - [`store`]: sled access — one `Db` per process, one tree per tenant, a versioned codec,
//!   group commit, the tenant registry and sealed secrets.
//! - [`outcome`]: the one outcome classification function (DESIGN.md §5), over plain facts.
//! - [`retry`]: the retry schedule, jitter and `Retry-After` floor (pure).
//! - [`submitter::request`]: leased entries → one Virtuous request; an answer → completions.
//!
//! This crate knows records, lanes, budgets and outcomes. It does not know HTTP, JSON wire
//! formats of any platform, or reqwest.

pub mod budget;
pub mod capture;
pub mod child;
pub mod failpoint;
pub mod hub;
pub mod inbound;
pub mod mailbox;
pub mod messages;
pub mod metrics;
pub mod observe;
pub mod outcome;
pub mod ports;
pub mod queue;
pub mod reconciler;
pub mod retry;
pub mod runtime;
pub mod settings;
pub mod store;
pub mod submitter;
pub mod supervisor;

pub use messages::{EnqueueError, KillMode};
pub use observe::{ActorKind, ActorStatus};
pub use runtime::{Runtime, TenantHandle, TenantRuntimeStatus, TenantSettings, TenantSpec};

#[cfg(test)]
mod layering_tests;
