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

use actix::{ActorFutureExt, AsyncContext, Context, Handler, SpawnHandle, WrapFuture};
use serde::{Deserialize, Serialize};

use crate::child::{Child, ChildBehavior};
use crate::hub::ReconcileBudget;
use crate::hub::TenantShared;
use crate::messages::RegisterWebhook;
use crate::observe::ActorKind;

mod cross_match;
mod delivery;
pub mod destinations;
pub mod pull;
pub mod two_way;
pub use delivery::ORIGIN_VIRTUOUS_WEBHOOK;
pub use destinations::DESTINATION_FAILING_ALERT;

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
    /// The flags the subscription was made (or last updated) with; absent in subscriptions
    /// stored before pull: gift and contact creates and updates.
    #[serde(default = "base_flags")]
    pub flags: Vec<String>,
}

fn base_flags() -> Vec<String> {
    BASE_FLAGS.iter().map(|flag| flag.to_string()).collect()
}

/// What confirmation needs of the subscription.
const BASE_FLAGS: [&str; 4] = ["giftCreate", "giftUpdate", "contactCreate", "contactUpdate"];

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
    /// Pull (pattern 3): the change log's intake.
    pub pull: PullView,
    #[serde(skip)]
    registration_requested: bool,
    #[serde(skip)]
    loops: DestinationLoops,
}

/// Pull's intake as this generation saw it.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct PullView {
    pub enabled: bool,
    /// Changes offered by webhooks, polls and re-reads in this generation.
    pub offered: pull::Offered,
    pub backstop_running: bool,
    pub next_backstop_at_ms: Option<u64>,
    pub last_backstop: Option<pull::BackstopReport>,
    pub reread_running: bool,
    pub last_reread_error: Option<String>,
    #[serde(skip)]
    next_reread_at_ms: u64,
    #[serde(skip)]
    next_prune_at_ms: u64,
}

/// The running delivery loops and the destination list they were started from.
#[derive(Default, Clone)]
struct DestinationLoops {
    started_from: Option<Arc<Vec<crate::ports::DestinationSpec>>>,
    /// The two-way partners the pair loops were started from.
    partners_from: Option<Arc<Vec<crate::ports::PartnerSpec>>>,
    handles: Vec<SpawnHandle>,
}

impl PartialEq for DestinationLoops {
    fn eq(&self, _other: &DestinationLoops) -> bool {
        true
    }
}

impl std::fmt::Debug for DestinationLoops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} loops", self.handles.len())
    }
}

impl Inbound {
    fn registration_due(&self, shared: &TenantShared, now_ms: u64) -> bool {
        let Some(url) = &self.webhook_url else {
            return false;
        };
        let flags = subscription_flags(&shared.settings());
        let registered = self.subscription.as_ref().is_some_and(|subscription| {
            &subscription.url == url && same_flags(&subscription.flags, &flags)
        });
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
            pull: PullView {
                enabled: shared.settings().pull.enabled,
                next_backstop_at_ms: pull::next_backstop_at(shared),
                ..PullView::default()
            },
            ..Inbound::default()
        }
    }

    fn started(child: &mut InboundActor, ctx: &mut Context<InboundActor>) {
        child.restart_loops(ctx);
        // Register at once when due, not at the first tick (up to half a heartbeat later): a
        // gift imported meanwhile would wait for the reconciler's next pass to be confirmed.
        child.register(ctx);
    }

    fn after_tick(child: &mut InboundActor, ctx: &mut Context<InboundActor>) {
        let current = child.core.shared.destinations();
        let same = child
            .behavior
            .loops
            .started_from
            .as_ref()
            .is_some_and(|started| Arc::ptr_eq(started, &current))
            && child
                .behavior
                .loops
                .partners_from
                .as_ref()
                .is_some_and(|started| Arc::ptr_eq(started, &child.core.shared.partners()));
        if !same {
            child.restart_loops(ctx);
        }
        child.pull_work(ctx);
    }

    fn on_tick(&mut self, shared: &TenantShared) -> Result<(), String> {
        // The URL follows the settings (a PATCH or a new public_url registers again).
        self.webhook_url = shared.settings().confirm.webhook_url;
        self.pull.enabled = shared.settings().pull.enabled;
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

fn same_flags(stored: &[String], wanted: &[String]) -> bool {
    let mut stored = stored.to_vec();
    let mut wanted = wanted.to_vec();
    stored.sort();
    wanted.sort();
    stored == wanted
}

impl InboundActor {
    /// (Re)starts one delivery loop per configured destination (a changed document, a new
    /// generation). A stopped loop loses nothing: its state is in the store.
    fn restart_loops(&mut self, ctx: &mut Context<Self>) {
        for handle in self.behavior.loops.handles.drain(..) {
            ctx.cancel_future(handle);
        }
        let shared = Arc::clone(&self.core.shared);
        let specs = shared.destinations();
        {
            let mut live = shared
                .destination_live
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            live.retain(|name, _| {
                let kept = specs.iter().any(|spec| &spec.name == name);
                if !kept {
                    crate::metrics::forget_destination_lag(&shared.tenant_id, name);
                }
                kept
            });
        }
        for spec in specs.iter() {
            let run = destinations::run(Arc::clone(&shared), spec.clone());
            self.behavior
                .loops
                .handles
                .push(ctx.spawn(run.into_actor(self)));
        }
        self.behavior.loops.started_from = Some(specs);
        let partners = shared.partners();
        for partner in partners.iter() {
            let run = two_way::run(Arc::clone(&shared), partner.clone());
            self.behavior
                .loops
                .handles
                .push(ctx.spawn(run.into_actor(self)));
        }
        self.behavior.loops.partners_from = Some(partners);
    }

    /// Pull's periodic work: the backstop poll when due, waiting re-reads, the log's prune.
    fn pull_work(&mut self, ctx: &mut Context<Self>) {
        let shared = Arc::clone(&self.core.shared);
        let settings = shared.settings();
        if !settings.pull.enabled || shared.is_paused() || shared.needs_operator() {
            return;
        }
        let now_ms = shared.clock.now_ms();
        let view = &mut self.behavior.pull;
        if !view.backstop_running {
            let requested = shared
                .pull_poll_requested
                .swap(false, std::sync::atomic::Ordering::AcqRel);
            let due = requested || view.next_backstop_at_ms.is_some_and(|at| now_ms >= at);
            if due {
                view.backstop_running = true;
                let pass = pull::backstop_pass(Arc::clone(&shared));
                ctx.spawn(pass.into_actor(self).map(|report, actor, _ctx| {
                    let view = &mut actor.behavior.pull;
                    view.backstop_running = false;
                    // A pass cut short (budget, failure) comes back when its report says,
                    // before the schedule's next one.
                    view.next_backstop_at_ms = pull::next_backstop_at(&actor.core.shared)
                        .map(|scheduled| scheduled.min(report.next_at_ms));
                    view.offered.add(report.offered);
                    metrics::counter!(crate::metrics::PULL_POLLS_TOTAL, crate::metrics::LABEL_OUTCOME => report.outcome.clone()).increment(1);
                    if let Some(error) = &report.error {
                        tracing::warn!(tenant_id = %actor.core.shared.tenant_id, error = %error.escape_debug(), "backstop poll failed");
                    }
                    view.last_backstop = Some(report);
                    actor.publish();
                }));
            }
        }
        self.reread_soon(ctx);
        let view = &mut self.behavior.pull;
        if now_ms >= view.next_prune_at_ms {
            view.next_prune_at_ms = now_ms + 3_600_000;
            match pull::prune(&shared) {
                Ok(0) => {}
                Ok(removed) => {
                    tracing::info!(tenant_id = %shared.tenant_id, removed, "change log pruned");
                    if removed >= pull::PRUNE_MAX as u64 {
                        // More is due: come back soon, a bounded piece at a time.
                        view.next_prune_at_ms = now_ms + 10_000;
                    }
                }
                Err(error) => {
                    tracing::warn!(tenant_id = %shared.tenant_id, error = %error, "change log prune failed")
                }
            }
        }
    }

    /// Starts a re-read pass when records wait for one (and none runs).
    pub(crate) fn reread_soon(&mut self, ctx: &mut Context<Self>) {
        let shared = Arc::clone(&self.core.shared);
        let now_ms = shared.clock.now_ms();
        let view = &mut self.behavior.pull;
        if view.reread_running || now_ms < view.next_reread_at_ms {
            return;
        }
        if !shared
            .tenant_store()
            .rereads(1)
            .is_ok_and(|waiting| !waiting.is_empty())
        {
            return;
        }
        view.reread_running = true;
        let pass = pull::reread_pass(shared);
        ctx.spawn(pass.into_actor(self).map(|result, actor, ctx| {
            let now_ms = actor.core.shared.clock.now_ms();
            let view = &mut actor.behavior.pull;
            view.reread_running = false;
            match result {
                Ok(offered) => {
                    view.offered.add(offered);
                    view.last_reread_error = None;
                    actor.publish();
                    // More may wait (more than one call's worth).
                    actor.reread_soon(ctx);
                }
                Err((error, retry_in_ms)) => {
                    tracing::warn!(tenant_id = %actor.core.shared.tenant_id, error = %error.escape_debug(), retry_in_ms, "re-read not done; retrying later");
                    view.last_reread_error = Some(error);
                    view.next_reread_at_ms = now_ms + retry_in_ms;
                    actor.publish();
                }
            }
        }));
    }
}

/// How one registration attempt ended.
type Registration = Result<WebhookSubscription, (String, u64)>;

/// The reason of an attempt the budget made wait (no call made): an info, not a warning —
/// a tenant's first attempt meets a budget that starts empty.
const BUDGET_REFUSED: &str = "budget refused the registration call";

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
        let existing = self.behavior.subscription.clone();
        let attempt = async move {
            if let Err(wait_ms) = shared.try_spend_reconcile_call(shared.clock.now_ms()) {
                return Err((BUDGET_REFUSED.to_string(), wait_ms));
            }
            let flags = subscription_flags(&shared.settings());
            // An existing subscription is updated in place (same id, still active); only a
            // tenant without one registers.
            let (reply, subscription_id, route) = match &existing {
                Some(subscription) => {
                    let reply = shared
                        .crm()
                        .update_webhook(&subscription.subscription_id, &url, &flags)
                        .await;
                    if reply.facts.status == Some(404) {
                        // The subscription is gone on Virtuous's side: make a new one.
                        shared.settle_reconcile_call(&reply, shared.clock.now_ms());
                        if let Err(wait_ms) = shared.try_spend_reconcile_call(shared.clock.now_ms())
                        {
                            return Err((BUDGET_REFUSED.to_string(), wait_ms));
                        }
                        let (reply, id) = shared.crm().register_webhook(&url, &flags).await;
                        (reply, id, "POST /api/Webhook")
                    } else {
                        let id = Some(subscription.subscription_id.clone());
                        (reply, id, "PUT /api/Webhook/{id}")
                    }
                }
                None => {
                    let (reply, id) = shared.crm().register_webhook(&url, &flags).await;
                    (reply, id, "POST /api/Webhook")
                }
            };
            shared.settle_reconcile_call(&reply, shared.clock.now_ms());
            let subscription_id = match (reply.facts.status, subscription_id) {
                (Some(200..=299), Some(id)) => id,
                (status, _) => {
                    let reason = format!(
                        "{route} answered {}: {}",
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
                flags,
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
                if reason == BUDGET_REFUSED {
                    tracing::info!(tenant_id = %tenant_id, retry_in_ms = wait_ms, "Virtuous webhook registration waits for the budget");
                } else {
                    tracing::warn!(tenant_id = %tenant_id, reason = %reason.escape_debug(), retry_in_ms = wait_ms, "Virtuous webhook registration failed");
                }
                state.last_error = Some(reason);
                let retry_in_ms = wait_ms.min(REGISTRATION_RETRY_MS);
                state.next_attempt_at_ms = now_ms + retry_in_ms;
                // Tried again when the wait is over, not at the first tick after it: a
                // tenant's first attempt meets a budget that starts empty (one pacing
                // interval), and the webhook should be there before the first import.
                ctx.run_later(
                    std::time::Duration::from_millis(retry_in_ms),
                    |actor, ctx| {
                        if actor.may_act(ctx) {
                            actor.register(ctx);
                        }
                    },
                );
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
