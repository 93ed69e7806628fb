//! Steward's one integration-test binary: end-to-end over loopback.
//! Each module states its goal in its first comment line.

mod admin;
mod common;
mod lifecycle;
mod sandbox_contract;
mod sandbox_entry;
mod sandbox_faults;
mod sandbox_import;
mod sandbox_queries;
mod sandbox_support;
mod sandbox_webhooks;
mod sandbox_writes;
mod submit_sandbox;
mod virtuous_client;
