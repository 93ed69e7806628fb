//! The control API under `/_sandbox/partners` (no auth, never counted): partners, their
//! webhook target and switches, contacts written as a user would, faults, stats, the
//! request log and the dropped webhooks.

use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::partner::{
    CreatePartnerError, EditError, Partner, PartnerState, Registry, WebhookTarget,
};
use super::{check_drop_pct, check_url, PartnerSpec, Partners};
use crate::control::{self, json_body, message, EntryPath, FaultsEntry};
use crate::faults::Faults;
use crate::server::path_param;

pub(crate) fn configure(config: &mut web::ServiceConfig) {
    config
        .route("", web::post().to(create_partner))
        .route("/{partner}/webhook", web::put().to(put_webhook))
        .route("/{partner}/switches", web::put().to(put_switches))
        .route("/{partner}/contacts", web::post().to(put_contacts))
        .route("/{partner}/contacts", web::get().to(list_contacts))
        .route("/{partner}/contacts/{id}", web::patch().to(edit_contact))
        .route("/{partner}/edits", web::post().to(edits))
        .route(
            "/{partner}/faults",
            web::put().to(control::put_faults::<Partner>),
        )
        .route(
            "/{partner}/faults",
            web::delete().to(control::delete_faults::<Partner>),
        )
        .route(
            "/{partner}/script",
            web::post().to(control::put_script::<Partner>),
        )
        .route("/{partner}/stats", web::get().to(stats))
        .route("/{partner}/requests", web::get().to(requests))
        .route("/{partner}/webhooks/dropped", web::get().to(dropped));
}

/// Control paths name their partner by `{partner}`.
const PARTNER: EntryPath = EntryPath {
    param: "partner",
    noun: "partner",
};

impl AsRef<Registry> for Partners {
    fn as_ref(&self) -> &Registry {
        &self.registry
    }
}

impl FaultsEntry for Partner {
    const PATH: EntryPath = PARTNER;
    type Registries = Partners;

    fn faults(state: &mut PartnerState) -> &mut Faults {
        &mut state.faults
    }
}

/// `POST /_sandbox/partners`: `201 {"id"}`; the same id and token again is a no-op.
async fn create_partner(body: Bytes, partners: web::Data<Partners>) -> HttpResponse {
    let spec: PartnerSpec = match json_body(&body) {
        Ok(spec) => spec,
        Err(response) => return response,
    };
    let id = spec.id.clone();
    match partners.registry.create(spec, &partners.sender) {
        Ok(()) => HttpResponse::Created().json(json!({ "id": id })),
        Err(error @ CreatePartnerError::IdTaken(_)) => message(409, &error.to_string()),
        Err(error @ CreatePartnerError::Invalid(_)) => message(400, &error.to_string()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookBody {
    /// `null`: no webhook.
    url: Option<String>,
    /// Absent: the current secret.
    #[serde(default)]
    secret: Option<String>,
}

/// `PUT …/webhook`: sets, changes or (with `"url": null`) removes the webhook target.
async fn put_webhook(
    request: HttpRequest,
    body: Bytes,
    partners: web::Data<Partners>,
) -> HttpResponse {
    let registry = &partners.registry;
    PARTNER.with_body(&request, registry, &body, |state, body: WebhookBody| {
        let Some(url) = body.url else {
            state.webhook = None;
            return HttpResponse::Ok().json(json!({ "url": null }));
        };
        if let Err(reason) = check_url(&url) {
            return message(400, &reason);
        }
        let current = state.webhook.take().map(|target| target.secret);
        let secret = body.secret.or(current).unwrap_or_default();
        state.webhook = Some(WebhookTarget {
            url: url.clone(),
            secret,
        });
        HttpResponse::Ok().json(json!({ "url": url }))
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchesBody {
    #[serde(default)]
    webhook_drop_pct: Option<f64>,
    #[serde(default)]
    normalize_emails: Option<bool>,
}

/// `PUT …/switches`: changes the switches given; `200` with all of them.
async fn put_switches(
    request: HttpRequest,
    body: Bytes,
    partners: web::Data<Partners>,
) -> HttpResponse {
    let registry = &partners.registry;
    PARTNER.with_body(&request, registry, &body, |state, body: SwitchesBody| {
        if let Some(drop_pct) = body.webhook_drop_pct {
            if let Err(reason) = check_drop_pct(drop_pct) {
                return message(400, &reason);
            }
            state.switches.webhook_drop_pct = drop_pct;
        }
        if let Some(normalize) = body.normalize_emails {
            state.switches.normalize_emails = normalize;
        }
        HttpResponse::Ok().json(&state.switches)
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutContacts {
    contacts: Vec<Value>,
    /// Fire no webhooks (seeding).
    #[serde(default)]
    quiet: bool,
}

/// `POST …/contacts`: creates or replaces contacts as a user; `201 {"ids"}`.
async fn put_contacts(
    request: HttpRequest,
    body: Bytes,
    partners: web::Data<Partners>,
) -> HttpResponse {
    let registry = &partners.registry;
    PARTNER.with_body(
        &request,
        registry,
        &body,
        |state, body: PutContacts| match state.put_contacts(&body.contacts, body.quiet) {
            Ok(ids) => HttpResponse::Created().json(json!({ "ids": ids })),
            Err(reason) => message(400, &reason),
        },
    )
}

/// Applies user edits, all or nothing: the contacts as edited, or the `400` / `404`.
// The error is the finished rejection response, built once on a cold path.
#[allow(clippy::result_large_err)]
fn apply_edits(
    state: &mut PartnerState,
    edits: Vec<(String, Value)>,
) -> Result<Vec<Value>, HttpResponse> {
    state.user_edits(edits).map_err(|error| match error {
        EditError::Invalid(reason) => message(400, &reason),
        EditError::UnknownContact(_) => message(404, &error.to_string()),
    })
}

/// `PATCH …/contacts/{id}`: one user edit (keys merged); `200` with the contact.
async fn edit_contact(
    request: HttpRequest,
    body: Bytes,
    partners: web::Data<Partners>,
) -> HttpResponse {
    let id = path_param(&request, "id");
    let registry = &partners.registry;
    PARTNER.with_body(
        &request,
        registry,
        &body,
        |state, changes: Value| match apply_edits(state, vec![(id, changes)]) {
            Ok(mut contacts) => HttpResponse::Ok().json(contacts.remove(0)),
            Err(response) => response,
        },
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Edit {
    id: String,
    changes: Value,
}

/// `POST …/edits`: `[{"id", "changes"}]`, user edits in order.
async fn edits(request: HttpRequest, body: Bytes, partners: web::Data<Partners>) -> HttpResponse {
    let registry = &partners.registry;
    PARTNER.with_body(&request, registry, &body, |state, edits: Vec<Edit>| {
        let edits = edits.into_iter().map(|edit| (edit.id, edit.changes));
        match apply_edits(state, edits.collect()) {
            Ok(contacts) => HttpResponse::Ok().json(json!({ "contacts": contacts })),
            Err(response) => response,
        }
    })
}

/// `GET …/contacts`: every contact in listing order.
async fn list_contacts(request: HttpRequest, partners: web::Data<Partners>) -> HttpResponse {
    PARTNER.with(&request, &partners.registry, |state| {
        HttpResponse::Ok().json(json!({ "contacts": state.all_contacts() }))
    })
}

async fn stats(request: HttpRequest, partners: web::Data<Partners>) -> HttpResponse {
    PARTNER.with(&request, &partners.registry, |state| {
        HttpResponse::Ok().json(json!({
            "requests": state.requests,
            "counters": state.counters,
            "webhooks": state.webhook_log().to_json(),
            "contacts": state.contacts.len(),
            "switches": state.switches,
            "webhook_url": state.webhook.as_ref().map(|target| &target.url),
        }))
    })
}

/// `GET …/requests`: the API calls, oldest first.
async fn requests(request: HttpRequest, partners: web::Data<Partners>) -> HttpResponse {
    PARTNER.with(&request, &partners.registry, |state| {
        let entries: Vec<_> = state.log.entries().iter().collect();
        HttpResponse::Ok().json(json!({ "requests": entries }))
    })
}

/// `GET …/webhooks/dropped`: the events never delivered, oldest first.
async fn dropped(request: HttpRequest, partners: web::Data<Partners>) -> HttpResponse {
    PARTNER.with(&request, &partners.registry, |state| {
        HttpResponse::Ok().json(json!({ "events": state.webhook_log().dropped_events() }))
    })
}
