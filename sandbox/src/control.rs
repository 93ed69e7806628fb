//! Helpers of the control APIs under `/_sandbox/…` (no auth, never counted): the
//! `{"message"}` error, JSON bodies, the entry (account, feed) a path names, and the fault and
//! script routes of the simulators that answer them with `204 No Content`.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::faults::{Faults, RandomFaults, ScriptBody};
use crate::registry::{Entry, Registry};
use crate::server::path_param;

/// The control APIs' error: `{"message": text}`.
pub(crate) fn message(status: u16, text: &str) -> HttpResponse {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    HttpResponse::build(status).json(json!({ "message": text }))
}

/// Parses a JSON body, answering 400 `{"message"}` with serde's reason on failure.
// The error is the finished rejection response, built once on a cold path.
#[allow(clippy::result_large_err)]
pub(crate) fn json_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, HttpResponse> {
    serde_json::from_slice(body).map_err(|error| message(400, &format!("invalid body: {error}")))
}

/// A `PUT …/faults` body, parsed and validated (else the 400).
#[allow(clippy::result_large_err)]
pub(crate) fn random_faults(body: &[u8]) -> Result<RandomFaults, HttpResponse> {
    let faults: RandomFaults = json_body(body)?;
    faults.validate().map_err(|reason| message(400, &reason))?;
    Ok(faults)
}

/// A `POST …/script` body, parsed and validated (else the 400).
#[allow(clippy::result_large_err)]
pub(crate) fn script(body: &[u8]) -> Result<ScriptBody, HttpResponse> {
    let script: ScriptBody = json_body(body)?;
    script.validate().map_err(|reason| message(400, &reason))?;
    Ok(script)
}

/// How a control path names its entry: the path parameter, and the noun of the 404
/// (`unknown account "x"`).
pub(crate) struct EntryPath {
    pub(crate) param: &'static str,
    pub(crate) noun: &'static str,
}

impl EntryPath {
    /// The entry the request's path names, or the 404.
    #[allow(clippy::result_large_err)]
    pub(crate) fn find<Item>(
        &self,
        request: &HttpRequest,
        registry: &Registry<Item>,
    ) -> Result<Arc<Item>, HttpResponse> {
        let id = path_param(request, self.param);
        registry
            .by_id(&id)
            .ok_or_else(|| message(404, &format!("unknown {} {id:?}", self.noun)))
    }

    /// Runs `action` on the entry's locked state; 404 for an unknown entry.
    pub(crate) fn with<Item: Entry>(
        &self,
        request: &HttpRequest,
        registry: &Registry<Item>,
        action: impl FnOnce(&mut Item::State) -> HttpResponse,
    ) -> HttpResponse {
        match self.find(request, registry) {
            Ok(entry) => action(&mut entry.lock()),
            Err(response) => response,
        }
    }

    /// Runs `action` on the entry's locked state with the parsed body; 404 for an unknown
    /// entry (checked first), 400 for a body that does not parse.
    pub(crate) fn with_body<Item: Entry, Body: DeserializeOwned>(
        &self,
        request: &HttpRequest,
        registry: &Registry<Item>,
        body: &[u8],
        action: impl FnOnce(&mut Item::State, Body) -> HttpResponse,
    ) -> HttpResponse {
        let entry = match self.find(request, registry) {
            Ok(entry) => entry,
            Err(response) => return response,
        };
        let parsed: Body = match json_body(body) {
            Ok(parsed) => parsed,
            Err(response) => return response,
        };
        let mut state = entry.lock();
        action(&mut state, parsed)
    }
}

/// An entry whose fault routes ([`put_faults`], [`delete_faults`], [`put_script`]) answer
/// `204 No Content`.
pub(crate) trait FaultsEntry: Entry + Sized + 'static {
    const PATH: EntryPath;
    /// The app data its routes find the registry in (the registry itself, or a simulator's
    /// struct holding it).
    type Registries: AsRef<Registry<Self>> + 'static;

    fn faults(state: &mut Self::State) -> &mut Faults;
}

/// The registry in an entry's app data.
fn registry_of<Item: FaultsEntry>(registries: &Item::Registries) -> &Registry<Item> {
    registries.as_ref()
}

/// `PUT …/faults`: the random faults from now on.
pub(crate) async fn put_faults<Item: FaultsEntry>(
    request: HttpRequest,
    body: Bytes,
    registry: web::Data<Item::Registries>,
) -> HttpResponse {
    set_faults::<Item, _>(
        &request,
        registry_of::<Item>(&registry),
        random_faults(&body),
        |faults, random| {
            faults.random = random;
        },
    )
}

/// `DELETE …/faults`: no random faults, no script.
pub(crate) async fn delete_faults<Item: FaultsEntry>(
    request: HttpRequest,
    registry: web::Data<Item::Registries>,
) -> HttpResponse {
    Item::PATH.with(&request, registry_of::<Item>(&registry), |state| {
        let faults = Item::faults(state);
        faults.random = RandomFaults::default();
        faults.script.clear();
        HttpResponse::NoContent().finish()
    })
}

/// `POST …/script`: replaces the scripted steps.
pub(crate) async fn put_script<Item: FaultsEntry>(
    request: HttpRequest,
    body: Bytes,
    registry: web::Data<Item::Registries>,
) -> HttpResponse {
    set_faults::<Item, _>(
        &request,
        registry_of::<Item>(&registry),
        script(&body),
        |faults, script| {
            faults.script = script.steps.into();
        },
    )
}

/// Applies a parsed fault body to the entry's faults: `204`, or the entry's or the body's
/// error answer.
fn set_faults<Item: FaultsEntry, T>(
    request: &HttpRequest,
    registry: &Registry<Item>,
    parsed: Result<T, HttpResponse>,
    apply: impl FnOnce(&mut Faults, T),
) -> HttpResponse {
    let entry = match Item::PATH.find(request, registry) {
        Ok(entry) => entry,
        Err(response) => return response,
    };
    match parsed {
        Ok(value) => {
            apply(Item::faults(&mut entry.lock()), value);
            HttpResponse::NoContent().finish()
        }
        Err(response) => response,
    }
}
