//! # Steward
//!
//! A self-hosted, multi-tenant sync engine between nonprofits' source platforms and the
//! Virtuous CRM+ API. See `ARCHITECTURE.md` for the map. The Virtuous CRM+ simulator shipped in
//! the binary is its own crate, [`steward_sandbox`] (`sandbox/`).
//!
//! # Layout
//! - [`cli`]: the command line's admin client (`steward backfill …`): URL and token lookup,
//!   `--json` or tables, progress bars.
//! - [`config`]: the configuration file and `STEWARD_…` overrides, validated at start.
//! - [`tenant`]: the tenant document of the admin API (JSON, defaults, secrets).
//! - [`tenants`]: tenant operations behind the admin API, and boot.
//! - [`http`]: actix-web — admin API, metrics, health.
//! - [`app`]: wiring: store, runtime, servers, lifecycle.
//! - [`alert_sinks`]: where alerts are sent (webhook, Slack) and the disk-space alert.
//! - [`demo`]: `steward demo`, the whole loop in one process against the embedded sandbox.
//! - [`telemetry`]: logs and the Prometheus recorder.
//! - [`destinations`]: pull destinations (webhook, Postgres, NDJSON) behind the `Destination` port.
//! - [`partners`]: two-way partners (Mailchimp members, platform contacts) behind the `PartnerWriter` port.
//! - [`sources`]: source platforms (Stripe…): verify → parse → map to commands, pure.
//! - [`traffic`]: a deterministic generator of signed Stripe webhook traffic (demo, tests, benches).
//! - [`virtuous`]: the Virtuous CRM+ client; answers reduced to facts for classification.

pub mod alert_sinks;
pub mod app;
pub mod backfill;
pub mod cli;
pub mod config;
pub mod demo;
pub mod destinations;
pub mod http;
pub mod partners;
pub mod sources;
pub mod telemetry;
pub mod tenant;
pub mod tenants;
pub mod traffic;
pub mod virtuous;
