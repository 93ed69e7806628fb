//! # Virtuous CRM+ client (ARCHITECTURE.md codemap, `virtuous/`)
//!
//! The reqwest side of submission, confirmation and webhook registration. Pure with respect
//! to the runtime: it sends one request and reports what happened as plain facts; the
//! verdict comes from [`steward_actors::outcome::classify`] and the retry timing from
//! [`steward_actors::retry`]. The actors call it through the `Crm` port ([`crm::VirtuousCrm`]).
//!
//! # Layout
//! - [`client`]: [`VirtuousClient`] (one `reqwest::Client` per arbiter, a cheap handle per
//!   tenant) and [`CallResult`].
//! - [`facts`]: rate-limit headers, `Retry-After`, error bodies, connection-error kinds.
//! - [`wire`]: the models read back (gift summaries, query pages, organization, webhook id).
//! - [`webhook`]: the one parser of Virtuous webhook bodies (lenient), into typed events.

pub mod client;
pub mod crm;
pub mod facts;
pub mod webhook;
pub mod wire;

pub use client::{CallResult, VirtuousClient, VirtuousError, BATCH_ITEMS_MAX, QUERY_TAKE_MAX};
pub use facts::RateLimitHeaders;
pub use wire::{GiftPage, GiftSummary, Organization, WebhookEvents};
