//! InboundHandler: the owner of everything that comes from Virtuous. It keeps the tenant's
//! Virtuous webhook subscription registered, so that `GiftCreate` deliveries to
//! `POST /hooks/{tenant}/virtuous` confirm records at once, and it handles those deliveries
//! ([`delivery`]: the HTTP side, `steward::http::virtuous_hook`, verifies and parses, then
//! hands the typed events here through the tenant's handle; the records are durable before
//! its 200).
//!
//! Registration (`POST /api/Webhook`, one budget call) happens when
//! `confirm.webhook_url` is set and the stored subscription (checkpoint
//! [`WEBHOOK_CHECKPOINT`]) is missing or was made for another URL: at start, after the URL
//! changes, and after a resume — registration never calls while the tenant is paused or
//! waits for an operator, so a registration due then happens on the first tick after the
//! resume. Virtuous has no list endpoint: the stored id is the only record of the
//! subscription. A failed attempt is retried after [`REGISTRATION_RETRY_MS`].

use std::sync::Arc;

use actix::{ActorFutureExt, AsyncContext, Context, Handler, WrapFuture};
use serde::{Deserialize, Serialize};

use crate::child::{Child, ChildBehavior};
use crate::hub::ReconcileBudget;
use crate::hub::TenantShared;
use crate::messages::RegisterWebhook;
use crate::observe::ActorKind;

mod delivery;
pub use delivery::ORIGIN_VIRTUOUS_WEBHOOK;

pub type InboundActor = Child<Inbound>;

/// Checkpoint holding the registered subscription ([`WebhookSubscription`] as JSON).
pub const WEBHOOK_CHECKPOINT: &str = "virtuous_webhook";
/// Wait after a failed registration attempt.
pub const REGISTRATION_RETRY_MS: u64 = 300_000;

/// The subscription Steward registered for the tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookSubscription {
    pub url: String,
    pub subscription_id: String,
    pub registered_at_ms: u64,
}

/// Reads the stored subscription (none, or unreadable → `None`: register again).
pub fn stored_subscription(shared: &TenantShared) -> Option<WebhookSubscription> {
    let bytes = shared
        .tenant_store()
        .get_checkpoint(WEBHOOK_CHECKPOINT)
        .ok()??;
    serde_json::from_slice(&bytes).ok()
}

/// The inbound handler's state, as the admin API shows it.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct Inbound {
    /// Where Virtuous should deliver (`None`: no `public_url` or no webhook secret).
    pub webhook_url: Option<String>,
    pub subscription: Option<WebhookSubscription>,
    pub registration_running: bool,
    pub registration_attempts: u64,
    pub next_attempt_at_ms: u64,
    pub last_error: Option<String>,
    /// Webhook deliveries handled by this generation.
    pub deliveries_handled: u64,
    /// Events this generation kept because they could not be understood (all kept ones:
    /// `GET /v1/tenants/{id}/inbound/unparsed`).
    pub unparsed_kept: u64,
    #[serde(skip)]
    registration_requested: bool,
}

impl Inbound {
    fn registration_due(&self, shared: &TenantShared, now_ms: u64) -> bool {
        let Some(url) = &self.webhook_url else {
            return false;
        };
        let registered = self
            .subscription
            .as_ref()
            .is_some_and(|subscription| &subscription.url == url);
        !registered
            && !self.registration_running
            && !self.registration_requested
            && now_ms >= self.next_attempt_at_ms
            && !shared.is_paused()
            && !shared.needs_operator()
    }
}

impl ChildBehavior for Inbound {
    const KIND: ActorKind = ActorKind::Inbound;
    type Observed = Inbound;

    fn rebuild(shared: &TenantShared) -> Inbound {
        Inbound {
            webhook_url: shared.settings().confirm.webhook_url,
            subscription: stored_subscription(shared),
            ..Inbound::default()
        }
    }

    fn on_tick(&mut self, shared: &TenantShared) -> Result<(), String> {
        // The URL follows the settings (a PATCH or a new public_url registers again).
        self.webhook_url = shared.settings().confirm.webhook_url;
        if self.registration_due(shared, shared.clock.now_ms()) {
            if let Some(inbound) = shared.addresses().inbound {
                let guard = shared.cell(ActorKind::Inbound).mailbox.guard();
                self.registration_requested = inbound
                    .register_webhook
                    .try_send(RegisterWebhook { guard })
                    .is_ok();
            }
        }
        Ok(())
    }

    fn observed(&self) -> Inbound {
        self.clone()
    }
}

/// The subscription flags the tenant needs: gift and contact creates and updates (the
/// confirmation path), plus every flag of the kinds pull delivers.
pub fn subscription_flags(settings: &crate::settings::TenantSettings) -> Vec<String> {
    let mut flags: Vec<String> = ["giftCreate", "giftUpdate", "contactCreate", "contactUpdate"]
        .into_iter()
        .map(str::to_string)
        .collect();
    if settings.pull.enabled {
        for kind in &settings.pull.events {
            for flag in kind.subscription_flags() {
                if !flags.iter().any(|known| known == flag) {
                    flags.push(flag.to_string());
                }
            }
        }
    }
    flags
}

/// How one registration attempt ended.
type Registration = Result<WebhookSubscription, (String, u64)>;

impl InboundActor {
    fn register(&mut self, ctx: &mut Context<Self>) {
        let shared = Arc::clone(&self.core.shared);
        let now_ms = shared.clock.now_ms();
        self.behavior.registration_requested = false;
        if !self.behavior.registration_due(&shared, now_ms) {
            return;
        }
        let Some(url) = self.behavior.webhook_url.clone() else {
            return;
        };
        tracing::info!(tenant_id = %shared.tenant_id, url = %url, "registering the Virtuous webhook");
        self.behavior.registration_running = true;
        self.behavior.registration_attempts += 1;
        self.publish();
        let attempt = async move {
            if let Err(wait_ms) = shared.try_spend_reconcile_call(shared.clock.now_ms()) {
                return Err(("budget refused the registration call".to_string(), wait_ms));
            }
            let (reply, subscription_id) = shared
                .crm()
                .register_webhook(&url, &subscription_flags(&shared.settings()))
                .await;
            shared.settle_reconcile_call(&reply, shared.clock.now_ms());
            let subscription_id = match (reply.facts.status, subscription_id) {
                (Some(200..=299), Some(id)) => id,
                (status, _) => {
                    let reason = format!(
                        "POST /api/Webhook answered {}: {}",
                        status.map_or_else(|| "nothing".to_string(), |s| s.to_string()),
                        reply.facts.message.unwrap_or_default()
                    );
                    return Err((reason, REGISTRATION_RETRY_MS));
                }
            };
            let subscription = WebhookSubscription {
                url,
                subscription_id,
                registered_at_ms: shared.clock.now_ms(),
            };
            let stored = store_subscription(&shared, &subscription).await;
            stored.map(|()| subscription)
        };
        ctx.spawn(
            attempt
                .into_actor(self)
                .map(|result, actor, ctx| actor.finish_registration(result, ctx)),
        );
    }

    fn finish_registration(&mut self, result: Registration, ctx: &mut Context<Self>) {
        if !self.may_act(ctx) {
            return;
        }
        let tenant_id = self.core.shared.tenant_id.clone();
        let now_ms = self.core.shared.clock.now_ms();
        let state = &mut self.behavior;
        state.registration_running = false;
        match result {
            Ok(subscription) => {
                tracing::info!(tenant_id = %tenant_id, subscription_id = %subscription.subscription_id.to_string().escape_debug(), url = %subscription.url.escape_debug(), "Virtuous webhook registered");
                state.subscription = Some(subscription);
                state.last_error = None;
            }
            Err((reason, wait_ms)) => {
                tracing::warn!(tenant_id = %tenant_id, reason = %reason.escape_debug(), retry_in_ms = wait_ms, "Virtuous webhook registration failed");
                state.last_error = Some(reason);
                state.next_attempt_at_ms = now_ms + wait_ms.min(REGISTRATION_RETRY_MS);
            }
        }
        self.publish();
    }
}

/// Stores the subscription id durably (there is no other record of it).
async fn store_subscription(
    shared: &TenantShared,
    subscription: &WebhookSubscription,
) -> Result<(), (String, u64)> {
    let failed = |error: crate::store::StoreError| {
        (
            format!("the subscription id could not be stored: {error}"),
            REGISTRATION_RETRY_MS,
        )
    };
    let bytes = serde_json::to_vec(subscription).unwrap_or_default();
    shared
        .tenant_store()
        .put_checkpoint(WEBHOOK_CHECKPOINT, &bytes)
        .map_err(failed)?;
    shared.store().durable().await.map_err(failed)
}

impl Handler<RegisterWebhook> for InboundActor {
    type Result = ();

    fn handle(&mut self, mut message: RegisterWebhook, ctx: &mut Context<Self>) {
        message.guard.mark_handling();
        if !self.may_act(ctx) {
            return;
        }
        self.register(ctx);
    }
}
