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
//! - [`wire`]: the models read back (gift summaries, query pages, whole-record pages,
//!   organization, webhook id) and the webhook subscription flags.
//! - [`webhook`]: the one parser of Virtuous webhook bodies (lenient), into typed events and
//!   record changes (also how query rows become changes).

pub mod client;
pub mod crm;
pub mod facts;
pub mod webhook;
pub mod wire;

pub use client::{
    CallResult, VirtuousClient, VirtuousError, BATCH_ITEMS_MAX, QUERY_TAKE_MAX, READ_IDS_MAX,
};
pub use facts::RateLimitHeaders;
pub use wire::{GiftPage, GiftSummary, Organization, RecordPage, WEBHOOK_FLAGS};
