//! Steward's one integration-test binary: end-to-end over loopback.
//! Each module states its goal in its first comment line.

mod admin;
mod admin_demo;
mod admin_operations;
mod admin_rules;
mod common;
mod confirm_reconcile;
mod confirm_support;
mod confirm_webhook;
mod confirm_webhook_shapes;
mod crash_corrupt;
mod crash_disconnect;
mod crash_failpoints;
mod crash_kill9;
mod crash_support;
mod external_sandbox;
mod fault_matrix;
mod http_store_access;
mod ingress_platform;
mod ingress_release;
mod ingress_stripe;
mod ingress_subscription;
mod ingress_support;
mod lifecycle;
mod push_e2e;
mod sandbox_contract;
mod sandbox_entry;
mod sandbox_faults;
mod sandbox_import;
mod sandbox_queries;
mod sandbox_support;
mod sandbox_webhooks;
mod sandbox_writes;
mod shutdown_load;
mod submit_sandbox;
mod virtuous_client;
