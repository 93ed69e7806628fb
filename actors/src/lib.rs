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
//!   [`capture`] is the door for source facts (enqueues and [`capture::commands`]: alerts,
//!   event marks, holds, links); [`inbound`] for Virtuous facts (webhook deliveries).
//! - [`virtuous_event`]: Virtuous webhook events as plain data; [`gift_match`]: the one
//!   matcher of Virtuous gifts to our records (bulk pass and webhook).
//! - [`messages`]: typed messages; each carries a [`mailbox::MailboxGuard`].
//! - [`observe`]: per-actor cells (atomics + observable state snapshot) read by status.
//! - [`mailbox`]: mailbox depth / wait counting; [`metrics`]: every metric name.
//! - [`budget`]: allowance arithmetic and budget status; [`ports`]: `Clock`, `TenantData`.
//! - [`store`]: sled access — one `Db` per process, one tree per tenant, a versioned codec,
//!   group commit, the tenant registry and sealed secrets.
//! - [`outcome`]: the one outcome classification function (DESIGN.md §5), over plain facts.
//! - [`retry`]: the retry schedule, jitter and `Retry-After` floor (pure).
//! - [`submitter_request`]: leased entries → one Virtuous request; an answer → completions.
//!
//! This crate knows records, lanes, budgets and outcomes. It does not know HTTP, JSON wire
//! formats of any platform, or reqwest.

pub mod budget;
pub mod capture;
pub mod child;
pub mod failpoint;
pub mod gift_match;
pub mod inbound;
pub mod mailbox;
pub mod messages;
pub mod metrics;
pub mod observe;
pub mod outcome;
pub mod ports;
pub mod queue;
pub mod reconciler;
pub mod reconciler_budget;
pub mod reconciler_pass;
pub mod retry;
pub mod runtime;
pub mod store;
pub mod submitter;
pub mod submitter_request;
pub mod supervisor;
pub mod virtuous_event;

pub use messages::{EnqueueError, KillMode};
pub use observe::{ActorKind, ActorStatus};
pub use runtime::{Runtime, TenantHandle, TenantRuntimeStatus, TenantSettings, TenantSpec};
