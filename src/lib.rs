//! # Steward
//!
//! A self-hosted, multi-tenant sync engine between nonprofits' source platforms and the
//! Virtuous CRM+ API. See `ARCHITECTURE.md` for the map.
//!
//! # Layout
//! - [`config`]: the configuration file and `STEWARD_…` overrides, validated at start.
//! - [`tenant`]: the tenant document of the admin API (JSON, defaults, secrets).
//! - [`http`]: actix-web — admin API, metrics, health.
//! - [`app`]: wiring: store, tenant supervisors, servers, lifecycle.
//! - [`sandbox`]: a Virtuous CRM+ simulator shipped in the binary.

pub mod sandbox;
