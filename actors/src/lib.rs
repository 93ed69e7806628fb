//! # steward-actors: Steward's per-tenant runtime
//!
//! # Layout
//! - [`store`]: sled access — one `Db` per process, one tree per tenant, a versioned codec,
//!   group commit, the tenant registry and sealed secrets.
//!
//! This crate knows records, lanes, budgets and outcomes. It does not know HTTP, JSON wire
//! formats of any platform, or reqwest.

pub mod store;
