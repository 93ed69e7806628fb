//! Tenant operations behind the admin API: create, patch (merge patch, credential rotation),
//! delete, pause / resume, status — and starting every registered tenant at boot.
//!
//! Order of effects, so that an error never leaves a tenant half made:
//! - create: everything that can fail (sealing, the embedded org, opening the tenant's key
//!   space) is *prepared* first; then the registry write is made durable; then the actors
//!   start (infallible). The answer comes last.
//! - delete: unfinished work is looked for first, while the tenant runs (a refused delete
//!   changes nothing); then the tenant's actors stop, its data is dropped, and only then is the registry
//!   record removed — a crash in between leaves a registered tenant with no data (deleting
//!   it again finishes the job), never orphaned dedup marks under a free id.
//!
//! Creating a tenant calls nobody (ARCHITECTURE.md invariants): the embedded sandbox, when
//! used, is in-process. Admin mutations are serialised by `AppState::admin_lock`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use steward_actors::ports::{Crm, UnconfiguredCrm};

use serde_json::{json, Value};
use steward_actors::runtime::{
    AlertSettings, BudgetSettings, ConfirmSettings, SubmitSettings, TenantSettings, TenantSpec,
};
use steward_actors::store::{TenantRecord, TenantRunState};
use steward_sandbox::virtuous::OrgSpec;

use crate::app::AppState;
use crate::http::error::{ApiError, ErrorCode};
use crate::tenant::{self, TenantDoc};
use crate::virtuous::crm::VirtuousCrm;

mod admin_door;
pub mod backup;
pub mod fleet;
pub mod moving;
mod status;
pub use admin_door::{RecordView, TenantStores};
pub use status::{alert_json, calls_to_drain, eta_s, format_ms, status};

fn store(state: &AppState) -> &steward_actors::store::Store {
    &state.stores.store
}

/// Alert raised when a tenant targets the embedded sandbox but none is running.
pub const ALERT_EMBEDDED_SANDBOX_MISSING: &str = "embedded_sandbox_missing";
/// Alert raised at start for a stored tenant that breaks a rule added since it was saved
/// (docs/operations.md "Tenant rules"); cleared by the PATCH that makes it valid.
pub const ALERT_CONFIG_INVALID: &str = "config_invalid";

/// The one wall clock (`steward_actors::ports::now_ms`), re-exported for the admin routes.
pub use steward_actors::ports::now_ms;

fn unknown_tenant(id: &str) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no tenant `{id}`"))
}

/// The budget a tenant runs with: its own settings over the configured defaults.
fn effective_budget(state: &AppState, doc: &TenantDoc) -> BudgetSettings {
    let defaults = &state.config.budget;
    let own = doc.budget.as_ref();
    BudgetSettings {
        hourly_limit: own
            .and_then(|b| b.hourly_limit)
            .unwrap_or(defaults.hourly_limit),
        reserve_pct: own
            .and_then(|b| b.reserve_pct)
            .unwrap_or(defaults.reserve_pct),
        burst_calls: own
            .and_then(|b| b.burst_calls)
            .unwrap_or(defaults.burst_calls),
        backfill_pct: own
            .and_then(|b| b.backfill_pct)
            .unwrap_or(defaults.backfill_pct),
    }
}

/// Where Virtuous delivers the tenant's webhooks: a tenant on the embedded sandbox, this
/// engine's own listener (`[sandbox] webhooks_to_engine`); otherwise `public_url`. Only with
/// a secret to sign them: an unsigned subscription could not be verified.
fn virtuous_webhook_url(state: &AppState, doc: &TenantDoc) -> Option<String> {
    doc.virtuous.webhook_secret.as_ref()?;
    let to_engine = doc.virtuous.base_url == "embedded" && state.config.sandbox.webhooks_to_engine;
    let base = if to_engine {
        state.own_ingress_url.as_str()
    } else {
        state.config.public_url.trim_end_matches('/')
    };
    (!base.is_empty()).then(|| format!("{base}/hooks/{}/virtuous", doc.id))
}

/// A tenant on the embedded sandbox whose webhooks come to this engine needs a secret to
/// verify them: one is generated when the document has none (stored sealed like any secret,
/// shown `"[redacted]"`).
fn give_embedded_tenant_a_webhook_secret(state: &AppState, doc: &mut TenantDoc, full: &mut Value) {
    let needs_one = doc.virtuous.base_url == "embedded"
        && state.config.sandbox.webhooks_to_engine
        && doc.virtuous.webhook_secret.is_none();
    if !needs_one {
        return;
    }
    use base64::Engine;
    let secret =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    full["virtuous"]["webhook_secret"] = json!(secret);
    doc.virtuous.webhook_secret = Some(secret);
}

/// The organization the embedded sandbox makes for a tenant: it imports on its own after
/// `[sandbox] auto_process_after_ms` (0: manual), and signs its webhooks in the tenant's
/// encoding.
fn embedded_org_spec(state: &AppState, doc: &TenantDoc, tenant_id: &str) -> OrgSpec {
    use steward_sandbox::virtuous::{Processing, SignatureEncoding};
    let processing = match state.config.sandbox.auto_process_after_ms {
        0 => Processing::Manual,
        delay_ms => Processing::Delayed { delay_ms },
    };
    let webhook_signature_encoding = if doc.virtuous.signature_encoding.eq_ignore_ascii_case("hex")
    {
        SignatureEncoding::Hex
    } else {
        SignatureEncoding::Base64
    };
    let api_key = doc.virtuous.api_key.clone().unwrap_or_default();
    OrgSpec {
        processing,
        webhook_signature_encoding,
        ..OrgSpec::new(tenant_id, api_key)
    }
}

fn tenant_settings(state: &AppState, doc: &TenantDoc) -> TenantSettings {
    let config = &state.config;
    TenantSettings {
        heartbeat_ms: config.runtime.heartbeat_ms,
        restart_backoff_initial_ms: config.runtime.restart_backoff_initial_ms,
        restart_backoff_max_ms: config.runtime.restart_backoff_max_ms,
        mailbox_capacity: config.runtime.mailbox_capacity,
        budget: effective_budget(state, doc),
        submit: SubmitSettings {
            batch_max: config.submitter.batch_max,
            retry_schedule_ms: config.submitter.retry_schedule_ms(),
            retry_jitter_pct: config.submitter.retry_jitter_pct,
            lease_timeout_ms: config.submitter.lease_timeout_s * 1_000,
            contact_batch: doc.virtuous.contact_batch,
        },
        confirm: ConfirmSettings {
            reconcile_interval_ms: config.reconciler.interval_s * 1_000,
            needs_review_after_ms: config.reconciler.needs_review_after_s * 1_000,
            query_take: config.reconciler.query_take,
            dedup_retention_ms: config.reconciler.dedup_retention_days * 86_400_000,
            webhook_url: virtuous_webhook_url(state, doc),
        },
        alerts: AlertSettings {
            crm_unreachable_after: config.alerts.crm_unreachable_after,
        },
        pull: pull_settings(doc),
        two_way: two_way_settings(doc),
        reconciliation: reconciliation_settings(doc),
    }
}

/// Money reconciliation's settings: the gift sources (Stripe; platforms that map a gift)
/// with their `transactionSource`s, and the nightly time.
fn reconciliation_settings(doc: &TenantDoc) -> steward_actors::settings::ReconciliationSettings {
    use steward_actors::settings::{MoneySource, ReconciliationSettings};
    let stripe = doc.sources.stripe.iter().map(|stripe| MoneySource {
        source: crate::sources::stripe::SOURCE.to_string(),
        transaction_source: stripe.transaction_source.clone(),
    });
    let platforms = doc
        .sources
        .platforms
        .iter()
        .filter(|(_, platform)| {
            platform
                .events
                .values()
                .any(|mapping| mapping.kind != "contact")
        })
        .map(|(name, platform)| MoneySource {
            source: name.clone(),
            transaction_source: platform.transaction_source.clone(),
        });
    ReconciliationSettings {
        daily_at: doc
            .reconciliation
            .as_ref()
            .and_then(|reconciliation| reconciliation.daily_at.as_deref())
            .and_then(crate::sources::polling::parse_hh_mm),
        time_zone: doc.time_zone.clone(),
        sources: stripe.chain(platforms).collect(),
    }
}

/// The actors' pair settings from the document's `two_way` block (validated: every pair
/// names a configured source).
fn two_way_settings(doc: &TenantDoc) -> Vec<steward_actors::two_way::PairSettings> {
    use steward_actors::two_way::{PairKind, PairSettings};
    let Some(pairs) = &doc.two_way else {
        return Vec::new();
    };
    pairs
        .iter()
        .filter_map(|(pair, settings)| {
            let kind = tenant::pair_kind(pair)?;
            // The source name the pair's partner changes carry (`EntryFact::source`) and the
            // reference source its contacts carry in Virtuous.
            let (source, reference_source) = match &kind {
                PairKind::Mailchimp => (
                    crate::sources::mailchimp::SOURCE.to_string(),
                    doc.sources.mailchimp.as_ref()?.reference_source.clone(),
                ),
                PairKind::Platform(name) => (
                    name.clone(),
                    doc.sources.platforms.get(name)?.transaction_source.clone(),
                ),
            };
            Some(PairSettings {
                pair: pair.clone(),
                kind,
                mode: settings.mode,
                echo_window_ms: settings.echo_window_s.saturating_mul(1_000),
                rules: settings.fields.clone(),
                source,
                reference_source,
            })
        })
        .collect()
}

/// The actors' pull settings from the document's `pull` block (off without one). Two-way
/// pairs need the contact change log: with pairs, pull is on, logs contacts (only contacts
/// when there is no `pull` block) and counts each pair's reference source as our own.
fn pull_settings(doc: &TenantDoc) -> steward_actors::settings::PullSettings {
    use steward_actors::pull::ChangeKind;
    use steward_actors::settings::PullSettings;
    let pairs = two_way_settings(doc);
    let mut settings = match &doc.pull {
        Some(pull) => PullSettings {
            events: pull
                .events
                .iter()
                .filter_map(|name| ChangeKind::parse(name))
                .collect(),
            poll_interval_ms: pull.poll_interval_s.saturating_mul(1_000),
            include_own: pull.include_own,
            retention_ms: pull.retention_days.saturating_mul(86_400_000),
            ..PullSettings::default()
        },
        None if !pairs.is_empty() => PullSettings {
            events: vec![ChangeKind::Contact],
            ..PullSettings::default()
        },
        None => return PullSettings::default(),
    };
    if !pairs.is_empty() && !settings.events.contains(&ChangeKind::Contact) {
        settings.events.push(ChangeKind::Contact);
    }
    // Our own writes name one of these: a change carrying one is marked `own`.
    let sources = &doc.sources;
    let mut own_sources: Vec<String> = sources
        .stripe
        .iter()
        .map(|stripe| stripe.transaction_source.clone())
        .chain(
            sources
                .platforms
                .values()
                .map(|p| p.transaction_source.clone()),
        )
        .chain(sources.mailchimp.iter().map(|m| m.reference_source.clone()))
        .chain(
            sources
                .constant_contact
                .iter()
                .map(|c| c.reference_source.clone()),
        )
        .chain(pairs.into_iter().map(|pair| pair.reference_source))
        .collect();
    own_sources.sort();
    own_sources.dedup();
    PullSettings {
        enabled: true,
        own_sources,
        time_zone: doc.time_zone.clone(),
        ..settings
    }
}

/// The tenant's Virtuous client: `"embedded"` resolves to the embedded sandbox. A client
/// that cannot be built answers every call "needs operator" (pause + alert), never panics.
fn tenant_crm(state: &AppState, doc: &TenantDoc) -> Arc<dyn Crm> {
    let base_url = match (&state.sandbox, doc.virtuous.base_url.as_str()) {
        (Some(sandbox), "embedded") => sandbox.base_url(),
        (None, "embedded") => {
            return Arc::new(UnconfiguredCrm {
                reason: "virtuous.base_url is \"embedded\" but the embedded sandbox is off"
                    .to_string(),
            })
        }
        (_, base_url) => base_url.to_string(),
    };
    let api_key = SecretString::from(doc.virtuous.api_key.clone().unwrap_or_default());
    let webhook_secret = doc.virtuous.webhook_secret.clone().map(SecretString::from);
    let timeout = std::time::Duration::from_secs(state.config.virtuous.request_timeout_s);
    match VirtuousCrm::new(&base_url, api_key, webhook_secret, timeout) {
        Ok(crm) => Arc::new(crm),
        Err(err) => Arc::new(UnconfiguredCrm {
            reason: format!("the Virtuous client cannot be built: {err}"),
        }),
    }
}

/// Seals the secrets of a full document into a registry record.
fn seal_record(
    state: &AppState,
    id: &str,
    mut full: Value,
    record_state: &str,
    created_at_ms: u64,
) -> TenantRecord {
    let secrets = tenant::split_secrets(&mut full);
    let sealed_secrets = secrets
        .iter()
        .map(|(pointer, secret)| {
            (
                pointer.clone(),
                state.master_key.seal(id, pointer, secret.as_bytes()),
            )
        })
        .collect();
    TenantRecord {
        id: id.to_string(),
        config_json: full.to_string(),
        sealed_secrets,
        state: record_state.to_string(),
        created_at_ms,
        updated_at_ms: now_ms(),
    }
}

fn open_secrets(
    state: &AppState,
    record: &TenantRecord,
) -> Result<Vec<(String, String)>, ApiError> {
    record
        .sealed_secrets
        .iter()
        .map(|(pointer, sealed)| {
            let plaintext = state.master_key.open(&record.id, pointer, sealed)?;
            let secret = String::from_utf8(plaintext)
                .map_err(|_| ApiError::new(ErrorCode::Internal, "a sealed secret is not UTF-8"))?;
            Ok((pointer.clone(), secret))
        })
        .collect()
}

fn stored_doc(record: &TenantRecord) -> Result<Value, ApiError> {
    serde_json::from_str(&record.config_json).map_err(|err| {
        ApiError::new(
            ErrorCode::Internal,
            format!("stored tenant document is unreadable: {err}"),
        )
    })
}

/// The full document of a record, secrets included.
fn full_doc(state: &AppState, record: &TenantRecord) -> Result<Value, ApiError> {
    let mut full = stored_doc(record)?;
    tenant::join_secrets(&mut full, &open_secrets(state, record)?);
    Ok(full)
}

/// The tenant document as responses show it: secrets redacted, the effective budget shown.
fn shown_doc(state: &AppState, record: &TenantRecord) -> Result<Value, ApiError> {
    let pointers: Vec<String> = record
        .sealed_secrets
        .iter()
        .map(|(pointer, _)| pointer.clone())
        .collect();
    let mut shown = tenant::redacted(&stored_doc(record)?, &pointers);
    if let Ok(doc) = serde_json::from_value::<TenantDoc>(shown.clone()) {
        shown["budget"] = json!(effective_budget(state, &doc));
    }
    Ok(shown)
}

/// `"embedded"` needs the embedded sandbox.
fn check_embedded_target(state: &AppState, doc: &TenantDoc) -> Result<(), ApiError> {
    if doc.virtuous.base_url == "embedded" && state.sandbox.is_none() {
        return Err(ApiError::new(
            ErrorCode::InvalidField,
            "field `virtuous.base_url` is invalid: \"embedded\" needs [sandbox] embedded = true",
        ));
    }
    Ok(())
}

/// Everything that can fail before a tenant's actors start: the document, its secrets, the
/// embedded org, its key space. The returned spec starts infallibly.
fn prepare_tenant(state: &AppState, record: &TenantRecord) -> Result<Prepared, ApiError> {
    // Create and patch validated every rule already; a stored tenant that breaks a newer
    // rule still starts (never strand its queue or answer its webhooks 404), with an alert.
    let (doc, broken_rules) = TenantDoc::from_stored_value(&full_doc(state, record)?)?;
    if !broken_rules.is_empty() {
        let fields: Vec<String> = broken_rules.iter().map(ToString::to_string).collect();
        let message = format!(
            "the stored configuration breaks a rule added since it was saved; it runs as it is \
             until a PATCH fixes it: {}",
            fields.join("; ")
        );
        tracing::warn!(tenant_id = %record.id, "{}", message.escape_debug());
        store(state)
            .tenant(&record.id)?
            .raise_alert(ALERT_CONFIG_INVALID, &message, now_ms())?;
    }
    match (&state.sandbox, doc.virtuous.base_url.as_str()) {
        (Some(sandbox), "embedded") => {
            if !sandbox.has_virtuous_org(&record.id)
                && store(state).registry().get(&record.id)?.is_some()
            {
                // A tenant that ran before finds no organization kept for it (a data dir of
                // an older version, or `sandbox/` removed): it starts empty, and what the
                // tenant submitted before will not be confirmed.
                tracing::warn!(tenant_id = %record.id, "the embedded sandbox kept no organization for this tenant: it starts empty; records submitted before stay unconfirmed");
            }
            sandbox.ensure_org(embedded_org_spec(state, &doc, &record.id)).map_err(|err| {
                ApiError::new(ErrorCode::InvalidField, format!("field `virtuous.api_key` is invalid: the embedded sandbox refused it ({err})"))
            })?;
            // A kept organization's subscriptions came back without their secret.
            if let Some(secret) = &doc.virtuous.webhook_secret {
                let _ = sandbox.restore_webhook_secret(&record.id, secret);
            }
        }
        (None, "embedded") => {
            let message = "virtuous.base_url is \"embedded\" but [sandbox] embedded = false: nothing will reach Virtuous";
            let tenant_store = store(state).tenant(&record.id)?;
            if tenant_store.raise_alert(ALERT_EMBEDDED_SANDBOX_MISSING, message, now_ms())? {
                tracing::error!(tenant_id = %record.id, "{}", message.escape_debug());
            }
        }
        _ => {}
    }
    let spec = TenantSpec {
        tenant_id: record.id.clone(),
        store: store(state).clone(),
        tenant_store: store(state).tenant(&record.id)?,
        settings: tenant_settings(state, &doc),
        // Paused, or refused by Virtuous before a restart (needs_operator): no call until an
        // operator resumes.
        run_state: record.run_state(),
        crm: tenant_crm(state, &doc),
    };
    Ok(Prepared {
        spec,
        doc: Arc::new(doc),
    })
}

/// A tenant ready to start (or to update in place).
struct Prepared {
    spec: TenantSpec,
    /// The full document, secrets included (ingress verifies signatures with it).
    doc: Arc<TenantDoc>,
}

/// Starts the tenant, or applies new settings and credentials in place when it runs.
fn start_or_update(state: &AppState, prepared: Prepared) {
    let Prepared { spec, doc } = prepared;
    let id = spec.tenant_id.clone();
    let pollers = tenant_pollers(state, &spec, &doc);
    // A document whose `pull` block did not change keeps its destination instances (and
    // their delivery loops): an unrelated PATCH must not restart them, and two instances of
    // one NDJSON destination must never write its directory at once.
    let pull_unchanged = state.runtime.tenant(&id).is_some()
        && state.tenant_docs.get(&id).is_some_and(|old| {
            serde_json::to_value(&old.pull).ok() == serde_json::to_value(&doc.pull).ok()
        });
    let destinations = (!pull_unchanged).then(|| tenant_destinations(&spec, &doc));
    // Likewise the two-way writers: kept while neither `two_way` nor the sources its pairs
    // write with changed (a new instance restarts the pair's loop).
    let partners_unchanged = state.runtime.tenant(&id).is_some()
        && state
            .tenant_docs
            .get(&id)
            .is_some_and(|old| partner_settings_of(&old) == partner_settings_of(&doc));
    let partners = (!partners_unchanged).then(|| tenant_partners(state, &spec, &doc));
    let backfill_files = Arc::new(crate::backfill::FileBackfills {
        dir: backfill_dir(state, &id),
        doc: Arc::clone(&doc),
    });
    state.tenant_docs.insert(id.clone(), doc);
    let handle = match state.runtime.tenant(&id) {
        // Settings apply in place: no restart, no window in which the tenant looks missing.
        // The run state stays as it is: pause, resume and a 401 change it, not an edit.
        Some(handle) => {
            handle.update_settings(spec.settings);
            handle.replace_crm(spec.crm);
            handle
        }
        None => state.runtime.start_tenant(spec),
    };
    // Checkpoints and poller state live in the store: a changed schedule keeps them.
    handle.replace_pollers(pollers);
    if let Some(destinations) = destinations {
        handle.replace_destinations(destinations);
    }
    if let Some(partners) = partners {
        handle.replace_partners(partners);
    }
    handle.replace_backfill_files(backfill_files);
}

/// Where a tenant's uploaded backfill files are kept (`{data_dir}/backfills/{tenant}`).
pub fn backfill_dir(state: &AppState, tenant_id: &str) -> std::path::PathBuf {
    state.config.data_dir.join("backfills").join(tenant_id)
}

/// What the two-way writers are built from: the `two_way` block and the sources its pairs
/// name (secrets included: a rotated key makes new writers).
fn partner_settings_of(doc: &TenantDoc) -> Value {
    let Some(pairs) = &doc.two_way else {
        return Value::Null;
    };
    let platforms: serde_json::Map<String, Value> = pairs
        .keys()
        .filter_map(|pair| match tenant::pair_kind(pair)? {
            steward_actors::two_way::PairKind::Platform(name) => {
                let platform = doc.sources.platforms.get(&name)?;
                Some((name, serde_json::to_value(platform).ok()?))
            }
            steward_actors::two_way::PairKind::Mailchimp => None,
        })
        .collect();
    let mailchimp = pairs
        .contains_key(tenant::MAILCHIMP_PAIR)
        .then(|| serde_json::to_value(&doc.sources.mailchimp).ok())
        .flatten();
    json!({"two_way": serde_json::to_value(pairs).ok(), "mailchimp": mailchimp, "platforms": platforms})
}

/// The tenant's two-way writers; one that cannot be built is logged and left out
/// (validation should have refused its settings).
fn tenant_partners(
    state: &AppState,
    spec: &TenantSpec,
    doc: &TenantDoc,
) -> Vec<steward_actors::ports::PartnerSpec> {
    let context = crate::partners::PartnerContext {
        tenant_id: spec.tenant_id.clone(),
        http: crate::sources::polling::shared_http(),
        sandbox_base_url: state.sandbox.as_ref().map(|sandbox| sandbox.base_url()),
    };
    let (specs, errors) = crate::partners::partners_for(&context, doc);
    for error in errors {
        tracing::error!(tenant_id = %spec.tenant_id, pair = %error.pair, reason = %error.reason.escape_debug(), "two-way partner not started");
    }
    specs
}

/// The tenant's pull destinations; one that cannot be built is logged and left out
/// (validation should have refused its settings).
fn tenant_destinations(
    spec: &TenantSpec,
    doc: &TenantDoc,
) -> Vec<steward_actors::ports::DestinationSpec> {
    let context = crate::destinations::DestinationContext {
        tenant_id: spec.tenant_id.clone(),
        http: crate::sources::polling::shared_http(),
    };
    let (specs, errors) = crate::destinations::destinations_for(&context, doc);
    for error in errors {
        tracing::error!(tenant_id = %spec.tenant_id, destination = %error.destination, reason = %error.reason.escape_debug(), "destination not started");
    }
    specs
}

/// The tenant's pollers; one that cannot be built is logged and left out (validation
/// should have refused its settings).
fn tenant_pollers(
    state: &AppState,
    spec: &TenantSpec,
    doc: &TenantDoc,
) -> Vec<steward_actors::poll::PollerSpec> {
    let context = crate::sources::polling::PollContext {
        tenant_id: spec.tenant_id.clone(),
        http: crate::sources::polling::shared_http(),
        sandbox_base_url: state.sandbox.as_ref().map(|sandbox| sandbox.base_url()),
        store: spec.store.clone(),
        tenant_store: spec.tenant_store.clone(),
        master_key: state.master_key.clone(),
    };
    let (specs, errors) = crate::sources::polling::pollers_for(&context, doc);
    for error in errors {
        tracing::error!(tenant_id = %spec.tenant_id, source = %error.source, reason = %error.reason.escape_debug(), "poller not started");
    }
    specs
}

/// Boot: every registered tenant is started again. Failures are logged and counted;
/// `/readyz` stays 503 while any registered tenant is not running.
pub async fn start_registered_tenants(state: &AppState) -> anyhow::Result<usize> {
    let (moved, records): (Vec<TenantRecord>, Vec<TenantRecord>) = store(state)
        .registry()
        .list()?
        .into_iter()
        .partition(|record| record.run_state() == TenantRunState::Moved);
    for record in moved {
        state.moved_tenants.insert(record.id);
    }
    state
        .registered_tenants
        .store(records.len(), Ordering::Release);
    let mut started = 0;
    for record in &records {
        match prepare_tenant(state, record) {
            Ok(prepared) => {
                start_or_update(state, prepared);
                started += 1;
            }
            Err(err) => {
                tracing::error!(tenant_id = %record.id, error = %err, "tenant could not be started")
            }
        }
    }
    metrics::gauge!(crate::telemetry::TENANTS).set(records.len() as f64);
    Ok(started)
}

pub async fn create(state: &AppState, body: Value) -> Result<Value, ApiError> {
    let (mut doc, mut full) = tenant::normalise(&body)?;
    tenant::reject_redacted_secrets(&full)?;
    check_embedded_target(state, &doc)?;
    give_embedded_tenant_a_webhook_secret(state, &mut doc, &mut full);
    let guard = state.admin_lock.lock().await;
    if store(state).registry().get(&doc.id)?.is_some() {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("tenant `{}` exists", doc.id),
        ));
    }
    let record = seal_record(
        state,
        &doc.id,
        full,
        TenantRunState::Running.name(),
        now_ms(),
    );
    let prepared = prepare_tenant(state, &record)?;
    if !store(state).registry().insert_new(&record)? {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("tenant `{}` exists", doc.id),
        ));
    }
    store(state).durable().await?;
    start_or_update(state, prepared);
    state.registered_tenants.fetch_add(1, Ordering::AcqRel);
    metrics::gauge!(crate::telemetry::TENANTS).increment(1.0);
    drop(guard);
    await_children_started(state, &doc.id).await;
    tracing::info!(tenant_id = %doc.id, "tenant created");
    shown_doc(state, &record)
}

/// Longest a create waits for the new tenant's actors before answering anyway.
const CHILDREN_START_WAIT: Duration = Duration::from_secs(5);

/// A tenant whose `201` was seen takes webhooks at once: wait (bounded) until its five
/// children have started, so a first delivery does not meet `503 unavailable` because
/// Capture was not there yet. Past the bound the `201` goes anyway (the sender retries a
/// `503`), and the wait is logged.
async fn await_children_started(state: &AppState, id: &str) {
    let started_at = std::time::Instant::now();
    loop {
        let started = state
            .runtime
            .tenant(id)
            .is_some_and(|handle| handle.children_started());
        if started {
            return;
        }
        if started_at.elapsed() >= CHILDREN_START_WAIT {
            tracing::warn!(
                tenant_id = id,
                waited_ms = started_at.elapsed().as_millis() as u64,
                "tenant created; its actors have not all started yet"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

pub async fn patch(state: &AppState, id: &str, merge_patch: Value) -> Result<Value, ApiError> {
    if !merge_patch.is_object() {
        return Err(ApiError::new(
            ErrorCode::MalformedBody,
            "a merge patch must be a JSON object",
        ));
    }
    if merge_patch.get("id").is_some_and(|patched| patched != id) {
        return Err(ApiError::new(
            ErrorCode::InvalidField,
            "field `id` is immutable",
        ));
    }
    let _guard = state.admin_lock.lock().await;
    let record = store(state)
        .registry()
        .get(id)?
        .ok_or_else(|| unknown_tenant(id))?;
    refuse_if_moved(&record)?;
    let stored_secrets = open_secrets(state, &record)?;
    let mut full = stored_doc(&record)?;
    tenant::join_secrets(&mut full, &stored_secrets);
    json_patch::merge(&mut full, &merge_patch);
    // A document read back from GET carries "[redacted]": that means "keep the stored secret".
    tenant::restore_redacted_secrets(&mut full, &stored_secrets)?;
    let (mut doc, mut full) = tenant::normalise(&full)?;
    tenant::refuse_null_resets(&merge_patch, &full)?;
    check_embedded_target(state, &doc)?;
    give_embedded_tenant_a_webhook_secret(state, &mut doc, &mut full);
    let updated = seal_record(state, id, full, &record.state, record.created_at_ms);
    let prepared = prepare_tenant(state, &updated)?;
    // The run state is not the document's: a 401 or a pause may change it meanwhile.
    if !store(state).registry().put_keeping_run_state(&updated)? {
        return Err(unknown_tenant(id));
    }
    // The document passed every rule: a config_invalid raised at start no longer holds.
    store(state)
        .tenant(id)?
        .resolve_alert(ALERT_CONFIG_INVALID, now_ms())?;
    store(state).durable().await?;
    start_or_update(state, prepared);
    tracing::info!(tenant_id = %id, "tenant updated");
    shown_doc(state, &updated)
}

pub async fn delete(state: &AppState, id: &str, force: bool) -> Result<(), ApiError> {
    let _guard = state.admin_lock.lock().await;
    let record = store(state)
        .registry()
        .get(id)?
        .ok_or_else(|| unknown_tenant(id))?;
    // A moved tenant's work went with its export: nothing here is unfinished.
    let moved = record.run_state() == TenantRunState::Moved;
    let force = force || moved;
    // Look first, while the tenant runs: a refused DELETE changes nothing at all — no stop,
    // no window in which its webhooks would be answered 404 or 503.
    if !force {
        refuse_if_unfinished(state, id).await?;
    }
    state.runtime.stop_tenant(id).await;
    state.tenant_docs.remove(id);
    // Work may have arrived between the look and the stop: look again, now that nothing
    // can be captured, and put the tenant back if the delete is refused after all.
    if !force {
        if let Err(refusal) = refuse_if_unfinished(state, id).await {
            match prepare_tenant(state, &record) {
                Ok(prepared) => start_or_update(state, prepared),
                Err(err) => {
                    tracing::error!(tenant_id = %id, error = %err, "a refused delete could not start the tenant again")
                }
            }
            return Err(refusal);
        }
    }
    let queued = store(state).tenant(id)?.queued_total();
    // Dropping a tenant's data deletes its whole key range and waits for in-flight group
    // writes: blocking work, kept off the HTTP worker's executor thread.
    let blocking_store = store(state).clone();
    let tenant_id = id.to_string();
    actix_web::web::block(move || {
        blocking_store.drop_tenant_data(&tenant_id)?;
        blocking_store.registry().remove(&tenant_id)
    })
    .await
    .map_err(|err| {
        ApiError::new(
            ErrorCode::Internal,
            format!("deleting the tenant's data failed: {err}"),
        )
    })??;
    store(state).durable().await?;
    if state.moved_tenants.remove(id).is_none() {
        state.registered_tenants.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!(crate::telemetry::TENANTS).decrement(1.0);
    }
    tracing::info!(tenant_id = %id, queued_dropped = queued, moved, "tenant deleted");
    Ok(())
}

/// `409 conflict` for an admin action that would run or change a tenant exported to another
/// instance.
fn refuse_if_moved(record: &TenantRecord) -> Result<(), ApiError> {
    if record.run_state() != TenantRunState::Moved {
        return Ok(());
    }
    Err(moved_here(&record.id))
}

/// `409 conflict` for an admin action on a tenant exported to another instance: its data
/// and its actors went with the export.
pub fn moved_here(id: &str) -> ApiError {
    ApiError::new(
        ErrorCode::Conflict,
        format!(
            "tenant `{id}` was exported to another instance (state `moved`); change it there. \
             Here it can only be exported again or deleted"
        ),
    )
}

/// `409 tenant_has_work` while the tenant has unfinished records (docs/operations.md
/// "Deleting a tenant"). The count scans the tenant's gift records: off the HTTP worker.
async fn refuse_if_unfinished(state: &AppState, id: &str) -> Result<(), ApiError> {
    let tenant_store = store(state).tenant(id)?;
    let unfinished = actix_web::web::block(move || tenant_store.unfinished())
        .await
        .map_err(|err| {
            ApiError::new(ErrorCode::Internal, format!("counting work failed: {err}"))
        })??;
    if unfinished.total() == 0 {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorCode::TenantHasWork,
        format!(
            "tenant `{id}` has unfinished work: {} queued, {} awaiting confirmation, {} in \
             needs_review; drain or resolve it, or DELETE with ?force=true (which drops it and \
             its dedup marks)",
            unfinished.queued, unfinished.awaiting_confirmation, unfinished.needs_review
        ),
    ))
}

pub async fn set_paused(state: &AppState, id: &str, paused: bool) -> Result<Value, ApiError> {
    {
        let _guard = state.admin_lock.lock().await;
        let mut record = store(state)
            .registry()
            .get(id)?
            .ok_or_else(|| unknown_tenant(id))?;
        refuse_if_moved(&record)?;
        record.set_run_state(if paused {
            TenantRunState::Paused
        } else {
            TenantRunState::Running
        });
        record.updated_at_ms = now_ms();
        store(state).registry().put(&record)?;
        store(state).durable().await?;
        if let Some(handle) = state.runtime.tenant(id) {
            if paused {
                handle.pause();
            } else {
                handle.resume();
            }
        }
        tracing::info!(tenant_id = %id, paused, "tenant submission {}", if paused { "paused" } else { "resumed" });
    }
    status(state, id)
}

#[cfg(test)]
mod pull_settings_tests {
    use serde_json::json;

    #[test]
    fn pull_settings_come_from_the_document() {
        // Goal: the pull block turns pull on with its events, interval, include_own and
        // retention; own_sources are every transaction/reference source of the tenant; no
        // block leaves pull off.
        let body = json!({"id": "hope", "name": "Hope", "virtuous": {"api_key": "vk"},
            "sources": {"stripe": {"signing_secret": "whsec_x"},
                        "mailchimp": {"url_key": "k"},
                        "platforms": {"gala": {"secret": "s", "transaction_source": "GalaCo"}}},
            "pull": {"events": ["contact", "project"], "poll_interval_s": 0, "include_own": true,
                     "retention_days": 3}});
        let (doc, _) = crate::tenant::normalise(&body).unwrap();
        let settings = super::pull_settings(&doc);
        use steward_actors::pull::ChangeKind;
        assert!(settings.enabled);
        assert_eq!(settings.events, [ChangeKind::Contact, ChangeKind::Project]);
        assert_eq!(settings.poll_interval_ms, 0);
        assert!(settings.include_own);
        assert_eq!(settings.retention_ms, 3 * 86_400_000);
        assert_eq!(settings.own_sources, ["GalaCo", "Mailchimp", "Stripe"]);
        let mut without = body.clone();
        without.as_object_mut().unwrap().remove("pull");
        let (doc, _) = crate::tenant::normalise(&without).unwrap();
        assert!(!super::pull_settings(&doc).enabled);
    }
}

#[cfg(test)]
mod two_way_settings_tests {
    use serde_json::json;
    use steward_actors::pull::ChangeKind;
    use steward_actors::two_way::{Mode, PairKind, Rule};

    fn doc(extra: serde_json::Value) -> crate::tenant::TenantDoc {
        let mut body = json!({"id": "hope", "name": "Hope", "virtuous": {"api_key": "vk"},
            "sources": {"mailchimp": {"api_key": "0123abcd-us21", "list_id": "l1",
                                      "reference_source": "MC"},
                        "platforms": {"gala": {"secret": "s", "transaction_source": "GalaCo"}}},
            "two_way": {"mailchimp": {"mode": "on", "echo_window_s": 30,
                                      "fields": {"tags": "virtuous_wins"}},
                        "platform:gala": {"api": {"url": "http://127.0.0.1:9/p",
                                                  "auth_value": "Bearer t"}}}});
        json_patch::merge(&mut body, &extra);
        crate::tenant::normalise(&body).unwrap().0
    }

    #[test]
    fn pairs_come_from_the_document_with_their_sources() {
        // Goal: each pair carries its kind, mode, window in ms, rules, the source name its
        // partner changes carry and the reference source of its contacts in Virtuous.
        let pairs = super::two_way_settings(&doc(json!({})));
        assert_eq!(pairs.len(), 2);
        let mailchimp = &pairs[0];
        assert_eq!(mailchimp.pair, "mailchimp");
        assert_eq!(mailchimp.kind, PairKind::Mailchimp);
        assert_eq!(mailchimp.mode, Mode::On);
        assert_eq!(mailchimp.echo_window_ms, 30_000);
        assert_eq!(mailchimp.rule("tags"), Rule::VirtuousWins);
        assert_eq!(mailchimp.source, "mailchimp");
        assert_eq!(mailchimp.reference_source, "MC");
        let gala = &pairs[1];
        assert_eq!(gala.kind, PairKind::Platform("gala".into()));
        assert_eq!(gala.mode, Mode::Observe);
        assert_eq!(gala.echo_window_ms, 120_000);
        assert_eq!(gala.source, "gala");
        assert_eq!(gala.reference_source, "GalaCo");
        assert!(super::two_way_settings(&doc(json!({"two_way": null}))).is_empty());
    }

    #[test]
    fn pairs_turn_pull_on_for_contacts() {
        // Goal: pairs without a pull block log contacts only (with pull's other defaults);
        // a pull block keeps its settings and gains contacts; the pairs' reference sources
        // are our own.
        let settings = super::pull_settings(&doc(json!({})));
        assert!(settings.enabled);
        assert_eq!(settings.events, [ChangeKind::Contact]);
        assert_eq!(settings.poll_interval_ms, 3_600_000);
        assert_eq!(settings.own_sources, ["GalaCo", "MC"]);
        let settings = super::pull_settings(&doc(
            json!({"pull": {"events": ["gift"], "poll_interval_s": 0, "retention_days": 2}}),
        ));
        assert_eq!(settings.events, [ChangeKind::Gift, ChangeKind::Contact]);
        assert_eq!(settings.poll_interval_ms, 0);
        assert_eq!(settings.retention_ms, 2 * 86_400_000);
        let no_pairs = json!({"two_way": {"mailchimp": null, "platform:gala": null}});
        assert!(!super::pull_settings(&doc(no_pairs)).enabled);
    }

    #[test]
    fn partner_writers_are_rebuilt_only_when_their_settings_change() {
        // Goal: a PATCH of an unrelated field keeps the writers; a pair, its API secret or
        // the Mailchimp key makes new ones.
        let base = super::partner_settings_of(&doc(json!({})));
        assert_eq!(
            base,
            super::partner_settings_of(&doc(json!({"name": "Hope 2"})))
        );
        assert_eq!(
            base,
            super::partner_settings_of(&doc(
                json!({"sources": {"stripe": {"signing_secret": "whsec_x"}}})
            ))
        );
        for changed in [
            json!({"two_way": {"mailchimp": {"mode": "observe"}}}),
            json!({"two_way": {"platform:gala": {"api": {"auth_value": "Bearer u"}}}}),
            json!({"sources": {"mailchimp": {"api_key": "9999abcd-us21"}}}),
        ] {
            assert_ne!(
                base,
                super::partner_settings_of(&doc(changed.clone())),
                "{changed}"
            );
        }
    }
}

#[cfg(test)]
mod reconciliation_settings_tests {
    use serde_json::json;

    #[test]
    fn gift_sources_and_the_nightly_time_come_from_the_document() {
        // Goal: Stripe and the platforms that map a gift are the money sources (with their
        // transactionSource); a contacts-only platform is not; daily_at becomes (h, m).
        let body = json!({"id": "hope", "name": "Hope", "time_zone": "Europe/Paris",
            "virtuous": {"api_key": "vk"},
            "sources": {"stripe": {"signing_secret": "whsec_x"},
                        "platforms": {
                            "gala": {"secret": "s", "transaction_source": "GalaCo",
                                     "events": {"sale": {"kind": "gift", "fields": {"amount": "/a"}}}},
                            "crm": {"secret": "s", "transaction_source": "Crm",
                                    "events": {"person": {"kind": "contact", "fields": {"referenceId": "/id"}}}}}},
            "reconciliation": {"daily_at": "03:15"}});
        let doc = crate::tenant::normalise(&body).unwrap().0;
        let settings = super::reconciliation_settings(&doc);
        let sources: Vec<(&str, &str)> = settings
            .sources
            .iter()
            .map(|s| (s.source.as_str(), s.transaction_source.as_str()))
            .collect();
        assert_eq!(sources, [("stripe", "Stripe"), ("gala", "GalaCo")]);
        assert_eq!(settings.daily_at, Some((3, 15)));
        assert_eq!(settings.time_zone, "Europe/Paris");
    }
}
