//! Direct record endpoints: API edits (`PUT /api/Contact/{id}`, `PUT /api/Gift/{id}`, full
//! replacement, firing update webhooks), `DELETE /api/Gift/{id}`, RecurringGift create, and
//! webhook subscriptions (create, read, update, delete).

use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use serde_json::{json, Map, Value};

use super::api::{authenticated, Handled, Reply};
use super::models::{parse_gift_date, text_field, Amount};
use super::org::{Org, OrgState, Registry};
use super::records::{contact_full, custom_fields_object, gift_full, gift_webhook, Record};
use super::validate::ModelState;
use super::webhooks::{Event, EventKind};
use crate::server::id_param;

const FREQUENCIES: [&str; 8] = [
    "OneTime",
    "Weekly",
    "Bimonthly",
    "Monthly",
    "Quarterly",
    "Semiannually",
    "Annually",
    "Biennially",
];

/// Subscription flags Virtuous knows (all default to false; others are ignored), plus the
/// extension `contactDelete` (the real flag for contact deletes is unconfirmed).
pub(crate) const WEBHOOK_FLAGS: [&str; 16] = [
    "contactCreate",
    "contactUpdate",
    "contactDelete",
    "giftCreate",
    "giftUpdate",
    "giftDelete",
    "projectCreate",
    "projectUpdate",
    "projectDelete",
    "formSubmission",
    "contactNoteCreate",
    "contactNoteUpdate",
    "contactNoteDelete",
    "eventCreate",
    "eventUpdate",
    "eventDelete",
];

pub(crate) fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/api/Contact/{id}", web::put().to(put_contact))
        .route("/api/Gift/{id}", web::put().to(put_gift))
        .route("/api/Gift/{id}", web::delete().to(delete_gift))
        .route("/api/RecurringGift", web::post().to(create_recurring_gift))
        .route("/api/Webhook", web::post().to(create_webhook))
        .route("/api/Webhook/{id}", web::get().to(get_webhook))
        .route("/api/Webhook/{id}", web::put().to(put_webhook))
        .route("/api/Webhook/{id}", web::delete().to(delete_webhook));
}

fn object_body(body: &[u8], prefix: &str) -> Result<Map<String, Value>, Reply> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => Ok(object),
        _ => {
            let mut state = ModelState::new();
            state.insert(
                prefix.to_owned(),
                vec!["The request body must be a JSON object.".into()],
            );
            Err(Reply::model_state(&state))
        }
    }
}

/// A record changed by an API edit or a staff edit: the reply and the update webhook.
pub(crate) fn announce_update(
    org: &Org,
    state: &mut OrgState,
    kind: EventKind,
    model: Value,
    reply_body: Value,
) -> Handled {
    let jobs = org.webhook_jobs(state, vec![Event { kind, model }]);
    Handled {
        reply: Reply::json(200, reply_body),
        jobs,
        accepted: false,
    }
}

/// Changes a contact and announces ContactUpdate; `None` when it does not exist.
pub(crate) fn edit_contact(
    org: &Org,
    state: &mut OrgState,
    id: u64,
    edit: impl FnOnce(&mut Record),
) -> Option<Handled> {
    let full = state.contacts.update(id, |contact| {
        edit(contact);
        contact_full(contact)
    })?;
    Some(announce_update(
        org,
        state,
        EventKind::ContactUpdate,
        full.clone(),
        full,
    ))
}

/// Changes a gift (keeping `customFields` an object inside) and announces GiftUpdate.
pub(crate) fn edit_gift(
    org: &Org,
    state: &mut OrgState,
    id: u64,
    edit: impl FnOnce(&mut Record),
) -> Option<Handled> {
    let include_ids = org.spec.webhook_includes_transaction_ids;
    let (webhook, full) = state.gifts.update(id, |gift| {
        edit(gift);
        let custom = custom_fields_object(gift.doc.get("customFields"));
        gift.doc.insert("customFields".into(), custom);
        (gift_webhook(gift, include_ids), gift_full(gift))
    })?;
    Some(announce_update(
        org,
        state,
        EventKind::GiftUpdate,
        webhook,
        full,
    ))
}

async fn put_contact(
    request: HttpRequest,
    body: Bytes,
    registry: web::Data<Registry>,
) -> HttpResponse {
    let id = id_param(&request);
    let replacement = object_body(&body, "contact");
    authenticated(
        &request,
        &registry,
        "PUT /api/Contact/{id}",
        "",
        |org, state, now| {
            let replacement = match replacement {
                Ok(replacement) => replacement,
                Err(reply) => return reply.into(),
            };
            id.and_then(|id| {
                edit_contact(org, state, id, |contact| contact.replace(&replacement, now))
            })
            .unwrap_or_else(|| Reply::empty(404).into())
        },
    )
    .await
}

async fn put_gift(
    request: HttpRequest,
    body: Bytes,
    registry: web::Data<Registry>,
) -> HttpResponse {
    let id = id_param(&request);
    let replacement = object_body(&body, "gift");
    authenticated(
        &request,
        &registry,
        "PUT /api/Gift/{id}",
        "",
        |org, state, now| {
            let replacement = match replacement {
                Ok(replacement) => replacement,
                Err(reply) => return reply.into(),
            };
            id.and_then(|id| edit_gift(org, state, id, |gift| gift.replace(&replacement, now)))
                .unwrap_or_else(|| Reply::empty(404).into())
        },
    )
    .await
}

async fn delete_gift(request: HttpRequest, registry: web::Data<Registry>) -> HttpResponse {
    let id = id_param(&request);
    authenticated(
        &request,
        &registry,
        "DELETE /api/Gift/{id}",
        "",
        |org, state, _| {
            let Some(gift) = id.and_then(|id| state.gifts.remove(id)) else {
                return Reply::empty(404).into();
            };
            let model = gift_webhook(&gift, org.spec.webhook_includes_transaction_ids);
            let jobs = org.webhook_jobs(
                state,
                vec![Event {
                    kind: EventKind::GiftDelete,
                    model,
                }],
            );
            Handled {
                reply: Reply::empty(200),
                jobs,
                accepted: false,
            }
        },
    )
    .await
}

/// Direct create (no import): needs an existing contact, an amount, a frequency, a start date.
async fn create_recurring_gift(
    request: HttpRequest,
    body: Bytes,
    registry: web::Data<Registry>,
) -> HttpResponse {
    let parsed = object_body(&body, "recurringGift");
    authenticated(
        &request,
        &registry,
        "POST /api/RecurringGift",
        "",
        |_, state, now| {
            let body = match parsed {
                Ok(body) => body,
                Err(reply) => return reply.into(),
            };
            let mut errors = ModelState::new();
            let mut error = |field: &str, message: String| {
                errors
                    .entry(format!("recurringGift.{field}"))
                    .or_default()
                    .push(message);
            };
            let contact_id = text_field(&body, "contactId").and_then(|id| id.parse::<u64>().ok());
            match contact_id {
                None => error("contactId", "The ContactId field is required.".into()),
                Some(id) if !state.contacts.records.contains_key(&id) => {
                    error("contactId", format!("Contact {id} does not exist."))
                }
                Some(_) => {}
            }
            let amount = text_field(&body, "amount").and_then(|text| Amount::parse(&text));
            if amount.map_or(true, |amount| amount.micros <= 0) {
                error(
                    "amount",
                    "The Amount field is required and must be greater than 0.".into(),
                );
            }
            let frequency = text_field(&body, "frequency");
            if !frequency.as_deref().is_some_and(|f| {
                FREQUENCIES
                    .iter()
                    .any(|known| known.eq_ignore_ascii_case(f))
            }) {
                error(
                    "frequency",
                    format!("The Frequency must be one of {}.", FREQUENCIES.join(", ")),
                );
            }
            if !text_field(&body, "startDate").is_some_and(|date| parse_gift_date(&date).is_some())
            {
                error(
                    "startDate",
                    "The StartDate field is required and must be a date.".into(),
                );
            }
            if !errors.is_empty() {
                return Reply::model_state(&errors).into();
            }
            let mut doc = body.clone();
            doc.insert("status".into(), json!("Active"));
            doc.insert(
                "amount".into(),
                amount.map(Amount::to_json).unwrap_or(Value::Null),
            );
            let id = state.recurring_gifts.next_id();
            let record = Record::new(id, now, doc);
            let reply = Value::Object(record.doc.clone());
            state.recurring_gifts.insert(record);
            Reply::json(200, reply).into()
        },
    )
    .await
}

/// A subscription document with every flag present; `Err` is the 400.
fn webhook_document(body: &[u8]) -> Result<Map<String, Value>, Reply> {
    let body = object_body(body, "webhook")?;
    let url = text_field(&body, "payloadUrl");
    if !url
        .as_deref()
        .is_some_and(|url| url.starts_with("http://") || url.starts_with("https://"))
    {
        let mut state = ModelState::new();
        state.insert(
            "webhook.payloadUrl".into(),
            vec!["The PayloadUrl field is required and must be an http(s) URL.".into()],
        );
        return Err(Reply::model_state(&state));
    }
    let flag = |name: &str, default: bool| {
        json!(super::models::field(&body, name)
            .and_then(Value::as_bool)
            .unwrap_or(default))
    };
    let mut doc = Map::new();
    doc.insert("payloadUrl".into(), json!(url));
    doc.insert(
        "secret".into(),
        json!(text_field(&body, "secret").unwrap_or_default()),
    );
    doc.insert("active".into(), flag("active", true));
    for name in WEBHOOK_FLAGS {
        doc.insert(name.into(), flag(name, false));
    }
    Ok(doc)
}

async fn create_webhook(
    request: HttpRequest,
    body: Bytes,
    registry: web::Data<Registry>,
) -> HttpResponse {
    let document = webhook_document(&body);
    authenticated(
        &request,
        &registry,
        "POST /api/Webhook",
        "",
        |_, state, now| {
            let document = match document {
                Ok(document) => document,
                Err(reply) => return reply.into(),
            };
            let id = state.webhooks.next_id();
            let record = Record::new(id, now, document);
            let reply = Value::Object(record.doc.clone());
            state.webhooks.insert(record);
            Reply::json(200, reply).into()
        },
    )
    .await
}

async fn get_webhook(request: HttpRequest, registry: web::Data<Registry>) -> HttpResponse {
    let id = id_param(&request);
    authenticated(
        &request,
        &registry,
        "GET /api/Webhook/{id}",
        "",
        |_, state, _| match id.and_then(|id| state.webhooks.records.get(&id)) {
            Some(record) => Reply::json(200, Value::Object(record.doc.clone())).into(),
            None => Reply::empty(404).into(),
        },
    )
    .await
}

async fn put_webhook(
    request: HttpRequest,
    body: Bytes,
    registry: web::Data<Registry>,
) -> HttpResponse {
    let id = id_param(&request);
    let document = webhook_document(&body);
    authenticated(
        &request,
        &registry,
        "PUT /api/Webhook/{id}",
        "",
        |_, state, now| {
            let Some(record) = id.and_then(|id| state.webhooks.records.get_mut(&id)) else {
                return Reply::empty(404).into();
            };
            let document = match document {
                Ok(document) => document,
                Err(reply) => return reply.into(),
            };
            record.replace(&document, now);
            Reply::json(200, Value::Object(record.doc.clone())).into()
        },
    )
    .await
}

async fn delete_webhook(request: HttpRequest, registry: web::Data<Registry>) -> HttpResponse {
    let id = id_param(&request);
    authenticated(
        &request,
        &registry,
        "DELETE /api/Webhook/{id}",
        "",
        |_, state, _| match id.and_then(|id| state.webhooks.records.remove(&id)) {
            Some(_) => Reply::empty(200).into(),
            None => Reply::empty(404).into(),
        },
    )
    .await
}
