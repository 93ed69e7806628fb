//! The control API under `/_sandbox` (no auth, never rate limited, never counted):
//! organizations, the import step, review approval, staff edits, faults, live switches,
//! stats, the request log, listings (webhook subscriptions included).

use std::sync::Arc;

use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::import::{approve_and_notify, import_and_notify, Selection};
use super::org::{CreateOrgError, Org, Registry};
use super::records::{contact_full, gift_full, Record};
use super::routes_records::WEBHOOK_FLAGS;
use super::staff_edits::{apply_edits, StaffEdit};
use super::{OrgSpec, SwitchesPatch};
use crate::clock::now_ms;
use crate::control::{json_body, message};
use crate::faults::{RandomFaults, ScriptBody};

pub(crate) fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/orgs", web::post().to(create_org))
        .route("/orgs/{org}/process", web::post().to(process))
        .route("/orgs/{org}/review/approve", web::post().to(approve))
        .route("/orgs/{org}/staff-edit", web::post().to(staff_edit))
        .route("/orgs/{org}/staff-edits", web::post().to(staff_edits))
        .route("/orgs/{org}/switches", web::get().to(get_switches))
        .route("/orgs/{org}/switches", web::put().to(put_switches))
        .route("/orgs/{org}/webhooks", web::get().to(list_webhooks))
        .route("/orgs/{org}/faults", web::put().to(put_faults))
        .route("/orgs/{org}/faults", web::delete().to(delete_faults))
        .route("/orgs/{org}/script", web::post().to(put_script))
        .route("/orgs/{org}/stats", web::get().to(stats))
        .route("/orgs/{org}/requests", web::get().to(requests))
        .route("/orgs/{org}/gifts", web::get().to(list_gifts))
        .route("/orgs/{org}/contacts", web::get().to(list_contacts))
        .route("/orgs/{org}/projects", web::post().to(create_project));
}

// The error is the finished rejection response, built once on a cold path.
#[allow(clippy::result_large_err)]
fn org_of(request: &HttpRequest, registry: &Registry) -> Result<Arc<Org>, HttpResponse> {
    let id = request.match_info().get("org").unwrap_or("");
    registry
        .by_id(id)
        .ok_or_else(|| message(404, &format!("unknown organization {id:?}")))
}

async fn create_org(body: Bytes, registry: web::Data<Registry>) -> HttpResponse {
    let spec: OrgSpec = match json_body(&body) {
        Ok(spec) => spec,
        Err(response) => return response,
    };
    let id = spec.id.clone();
    match registry.create(spec, false) {
        Ok(()) => HttpResponse::Created().json(json!({ "id": id })),
        Err(error @ (CreateOrgError::IdTaken(_) | CreateOrgError::KeyTaken)) => {
            message(409, &error.to_string())
        }
        Err(error @ CreateOrgError::Invalid(_)) => message(400, &error.to_string()),
    }
}

async fn process(request: HttpRequest, registry: web::Data<Registry>) -> HttpResponse {
    match org_of(&request, &registry) {
        Ok(org) => HttpResponse::Ok().json(import_and_notify(&org, &registry, Selection::All)),
        Err(response) => response,
    }
}

async fn approve(request: HttpRequest, registry: web::Data<Registry>) -> HttpResponse {
    match org_of(&request, &registry) {
        Ok(org) => {
            let report = approve_and_notify(&org, &registry);
            HttpResponse::Ok().json(json!({ "imported": report.imported }))
        }
        Err(response) => response,
    }
}

/// A staff member's edit in the Virtuous UI (`staff_edits`): fires its webhook, spends no
/// budget; answers the record.
async fn staff_edit(
    request: HttpRequest,
    body: Bytes,
    registry: web::Data<Registry>,
) -> HttpResponse {
    let org = match org_of(&request, &registry) {
        Ok(org) => org,
        Err(response) => return response,
    };
    let edit: StaffEdit = match json_body(&body) {
        Ok(edit) => edit,
        Err(response) => return response,
    };
    let applied = apply_edits(&org, &mut org.lock(), std::slice::from_ref(&edit), now_ms());
    match applied {
        Ok((mut records, jobs)) => {
            registry.note_change(&org);
            registry.send_webhooks(jobs);
            HttpResponse::Ok().json(records.pop().unwrap_or(Value::Null))
        }
        Err(error) => message(error.status, &error.message),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StaffEditList {
    edits: Vec<StaffEdit>,
}

/// Many staff edits under one lock, in order, all or nothing; answers `{"records": [...]}`.
async fn staff_edits(
    request: HttpRequest,
    body: Bytes,
    registry: web::Data<Registry>,
) -> HttpResponse {
    let org = match org_of(&request, &registry) {
        Ok(org) => org,
        Err(response) => return response,
    };
    let list: StaffEditList = match json_body(&body) {
        Ok(list) => list,
        Err(response) => return response,
    };
    let applied = apply_edits(&org, &mut org.lock(), &list.edits, now_ms());
    match applied {
        Ok((records, jobs)) => {
            registry.note_change(&org);
            registry.send_webhooks(jobs);
            HttpResponse::Ok().json(json!({ "records": records }))
        }
        Err(error) => message(
            error.status,
            &format!("edits[{}]: {}", error.index, error.message),
        ),
    }
}

async fn get_switches(request: HttpRequest, registry: web::Data<Registry>) -> HttpResponse {
    match org_of(&request, &registry) {
        Ok(org) => HttpResponse::Ok().json(org.lock().switches),
        Err(response) => response,
    }
}

/// Changes the live switches (the fields present); answers the switches now in force.
async fn put_switches(
    request: HttpRequest,
    body: Bytes,
    registry: web::Data<Registry>,
) -> HttpResponse {
    let org = match org_of(&request, &registry) {
        Ok(org) => org,
        Err(response) => return response,
    };
    let patch: SwitchesPatch = match json_body(&body) {
        Ok(patch) => patch,
        Err(response) => return response,
    };
    let mut state = org.lock();
    match patch.apply(state.switches) {
        Ok(switches) => {
            state.switches = switches;
            registry.note_change(&org);
            HttpResponse::Ok().json(switches)
        }
        Err(reason) => message(400, &reason),
    }
}

/// The org's webhook subscriptions (Virtuous has no list endpoint; tests need one): id, url,
/// active and every flag — never the secret.
async fn list_webhooks(request: HttpRequest, registry: web::Data<Registry>) -> HttpResponse {
    match org_of(&request, &registry) {
        Ok(org) => {
            let state = org.lock();
            let subscriptions: Vec<Value> = state
                .webhooks
                .records
                .values()
                .map(|subscription| {
                    let flag = |name: &str| subscription.doc.get(name).and_then(Value::as_bool);
                    let flags: Map<String, Value> = WEBHOOK_FLAGS
                        .iter()
                        .map(|name| ((*name).to_owned(), json!(flag(name).unwrap_or(false))))
                        .collect();
                    json!({"id": subscription.id,
                        "url": subscription.doc.get("payloadUrl").cloned().unwrap_or(Value::Null),
                        "active": flag("active").unwrap_or(false), "flags": flags})
                })
                .collect();
            HttpResponse::Ok().json(subscriptions)
        }
        Err(response) => response,
    }
}

async fn put_faults(
    request: HttpRequest,
    body: Bytes,
    registry: web::Data<Registry>,
) -> HttpResponse {
    let org = match org_of(&request, &registry) {
        Ok(org) => org,
        Err(response) => return response,
    };
    let faults: RandomFaults = match json_body(&body) {
        Ok(faults) => faults,
        Err(response) => return response,
    };
    if let Err(reason) = faults.validate() {
        return message(400, &reason);
    }
    org.lock().faults.random = faults.clone();
    HttpResponse::Ok().json(faults)
}

async fn delete_faults(request: HttpRequest, registry: web::Data<Registry>) -> HttpResponse {
    match org_of(&request, &registry) {
        Ok(org) => {
            let mut state = org.lock();
            state.faults.random = RandomFaults::default();
            state.faults.script.clear();
            HttpResponse::Ok().json(RandomFaults::default())
        }
        Err(response) => response,
    }
}

async fn put_script(
    request: HttpRequest,
    body: Bytes,
    registry: web::Data<Registry>,
) -> HttpResponse {
    let org = match org_of(&request, &registry) {
        Ok(org) => org,
        Err(response) => return response,
    };
    let script: ScriptBody = match json_body(&body) {
        Ok(script) => script,
        Err(response) => return response,
    };
    if let Err(reason) = script.validate() {
        return message(400, &reason);
    }
    let steps = script.steps.len();
    org.lock().faults.script = script
        .steps
        .into_iter()
        .filter(|step| step.times > 0)
        .collect();
    HttpResponse::Ok().json(json!({ "steps": steps }))
}

async fn stats(request: HttpRequest, registry: web::Data<Registry>) -> HttpResponse {
    match org_of(&request, &registry) {
        Ok(org) => HttpResponse::Ok().json(org.stats()),
        Err(response) => response,
    }
}

/// The request log, oldest first. Serialized under the org lock (one pass, no clone of the
/// entries): the org's API waits for it, which a test or an operator reading it can afford.
async fn requests(request: HttpRequest, registry: web::Data<Registry>) -> HttpResponse {
    match org_of(&request, &registry) {
        Ok(org) => {
            let state = org.lock();
            match serde_json::to_vec(state.requests.entries()) {
                Ok(body) => HttpResponse::Ok()
                    .content_type("application/json")
                    .body(body),
                Err(error) => message(500, &format!("request log not serializable: {error}")),
            }
        }
        Err(response) => response,
    }
}

fn list(request: &HttpRequest, registry: &Registry, gifts: bool) -> HttpResponse {
    match org_of(request, registry) {
        Ok(org) => {
            let state = org.lock();
            let records: Vec<Value> = if gifts {
                state.gifts.records.values().map(gift_full).collect()
            } else {
                state.contacts.records.values().map(contact_full).collect()
            };
            HttpResponse::Ok().json(records)
        }
        Err(response) => response,
    }
}

async fn list_gifts(request: HttpRequest, registry: web::Data<Registry>) -> HttpResponse {
    list(&request, &registry, true)
}

async fn list_contacts(request: HttpRequest, registry: web::Data<Registry>) -> HttpResponse {
    list(&request, &registry, false)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewProject {
    code: String,
    #[serde(default)]
    name: Option<String>,
}

/// Extension: a project staff created (Project by code finds it; designations use it).
async fn create_project(
    request: HttpRequest,
    body: Bytes,
    registry: web::Data<Registry>,
) -> HttpResponse {
    let org = match org_of(&request, &registry) {
        Ok(org) => org,
        Err(response) => return response,
    };
    let project: NewProject = match json_body(&body) {
        Ok(project) => project,
        Err(response) => return response,
    };
    let mut state = org.lock();
    let exists = state
        .projects
        .records
        .values()
        .any(|known| known.text("projectCode").as_deref() == Some(project.code.as_str()));
    if exists {
        return message(409, &format!("project {:?} exists", project.code));
    }
    let id = state.projects.next_id();
    let name = project.name.unwrap_or_else(|| project.code.clone());
    let doc =
        json!({"projectCode": project.code, "code": project.code, "name": name, "isActive": true});
    let Value::Object(doc) = doc else {
        unreachable!("json! of an object literal is an object")
    };
    let record = Record::new(id, now_ms(), doc);
    let body = Value::Object(record.doc.clone());
    state.projects.insert(record);
    registry.note_change(&org);
    HttpResponse::Created().json(body)
}
