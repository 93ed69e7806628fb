//! Pull destinations (pattern 3; docs/pull.md "Destinations"): the adapters behind the
//! actors crate's `Destination` port, built per tenant from its document's
//! `pull.destinations`.
//!
//! # Layout
//! - [`webhook`]: one signed POST per change (Standard Webhooks headers), paced.
//! - [`postgres`]: upserts into tables of the partner's Postgres, guarded by version.
//! - [`ndjson`]: newline-delimited JSON files, each finished atomically.
//!
//! Every adapter answers each `deliver` with what is durable at the partner; the delivery
//! loop in the actors crate owns checkpoints, retries and dead letters. Delivery is at
//! least once: every effect here is idempotent (a stable `webhook-id`, an upsert by id
//! with a version guard, a file named by its sequence range).

use std::sync::Arc;

use steward_actors::ports::DestinationSpec;
use steward_actors::pull::StoredChange;

use crate::tenant::{DestinationDoc, TenantDoc};

pub mod ndjson;
pub mod postgres;
pub mod webhook;

/// What an adapter may use besides its settings.
#[derive(Clone)]
pub struct DestinationContext {
    pub tenant_id: String,
    /// The process's HTTP client (no redirects; each webhook request sets its timeout).
    pub http: reqwest::Client,
}

/// A destination that could not be built: the tenant runs without it; the reason is
/// logged at ERROR (validation should have refused its settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationBuildError {
    pub destination: String,
    pub reason: String,
}

/// Most changes per `deliver` of a webhook destination (one POST each, paced).
pub const WEBHOOK_BATCH_MAX: usize = 100;
/// Most changes per `deliver` of an NDJSON destination (one append each call).
pub const NDJSON_BATCH_MAX: usize = 1_000;

/// The destinations of a tenant document, in name order (none without a `pull` block).
pub fn destinations_for(
    context: &DestinationContext,
    doc: &TenantDoc,
) -> (Vec<DestinationSpec>, Vec<DestinationBuildError>) {
    let mut specs = Vec::new();
    let mut errors = Vec::new();
    let Some(pull) = &doc.pull else {
        return (specs, errors);
    };
    for (name, destination) in &pull.destinations {
        let built = build(context, name, destination);
        match built {
            Ok(spec) => specs.push(spec),
            Err(reason) => errors.push(DestinationBuildError {
                destination: name.clone(),
                reason,
            }),
        }
    }
    (specs, errors)
}

fn build(
    context: &DestinationContext,
    name: &str,
    destination: &DestinationDoc,
) -> Result<DestinationSpec, String> {
    let (batch_max, port): (usize, Arc<dyn steward_actors::ports::Destination>) = match destination
    {
        DestinationDoc::Webhook(settings) => (
            WEBHOOK_BATCH_MAX,
            Arc::new(webhook::WebhookDestination::new(
                context.http.clone(),
                &context.tenant_id,
                settings,
            )?),
        ),
        DestinationDoc::Postgres(settings) => (
            settings.batch_max as usize,
            Arc::new(postgres::PostgresDestination::new(
                &context.tenant_id,
                name,
                settings,
            )?),
        ),
        DestinationDoc::Ndjson(settings) => (
            NDJSON_BATCH_MAX,
            Arc::new(ndjson::NdjsonDestination::new(
                &context.tenant_id,
                name,
                settings,
            )),
        ),
    };
    Ok(DestinationSpec {
        name: name.to_string(),
        kind: destination.kind().to_string(),
        batch_max: batch_max.max(1),
        destination: port,
    })
}

/// The JSON every destination shows of one change (the webhook's `data`, an NDJSON line).
pub fn change_json(change: &StoredChange) -> serde_json::Value {
    serde_json::json!({
        "op": change.op.name(),
        "kind": change.kind.name(),
        "id": change.id,
        "modified_at": change.modified_at,
        "version_ms": change.version_ms,
        "own": change.own,
        "record": change.record,
    })
}

/// The first `limit` characters of `text` (a partner's answer in a dead letter's reason).
pub(crate) fn first_chars(text: &str, limit: usize) -> String {
    text.chars().take(limit).collect()
}

#[cfg(test)]
mod tests;
