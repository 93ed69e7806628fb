//! A generic platform pair's writer (`two_way.platform:{name}.api`): the partner's contacts
//! API.
//!
//! - **Write**: `PUT {url}/contacts/{id}` with only the fields set (`email`, `first_name`,
//!   `last_name`, `tags` an array of strings, `subscribed` a bool) → `200`/`201` with the
//!   contact `{"id", "email", "first_name", "last_name", "tags", "subscribed",
//!   "updated_at", …}`. A create (no partner id) uses an id derived from the contact —
//!   `steward-` and the first 16 hex characters of the SHA-256 of the lower-cased email (of
//!   the fields' sorted JSON when there is no email) — so a create repeated after a crash
//!   upserts the same contact.
//! - **List** (the cross-match): `GET {url}/contacts?limit=500&cursor=…` → `{"items",
//!   "next_cursor"}` (absent or `null` ends the listing).
//!
//! Every call carries `{auth_header}: {auth_value}`.

use std::sync::Arc;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use steward_actors::ports::{
    LocalFuture, PartnerAnswer, PartnerContact, PartnerPage, PartnerWriter,
};
use steward_actors::two_way::fields::tags_value;
use steward_actors::two_way::Fields;

use super::{answer, classify, id_text, send, text_value, Failure, PartnerContext};
use crate::sources::platform_poll::resolve_url;
use crate::tenant::PartnerApiDoc;

/// Contacts per listing page.
pub const LIST_PAGE_SIZE: u32 = 500;
/// The embedded sandbox's contacts API of platform `{name}` (`api.url = "embedded"`).
const EMBEDDED_API_PATH: &str = "/partners/{name}";

/// One platform's contacts API.
pub struct PlatformWriter {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// The API base (`{url}/contacts…` follows it).
    url: reqwest::Url,
    auth_header: String,
    auth_value: String,
}

impl PlatformWriter {
    pub fn new(context: &PartnerContext, name: &str, api: &PartnerApiDoc) -> Result<Self, String> {
        let url = resolve_url(
            "api.url",
            &api.url,
            &EMBEDDED_API_PATH.replace("{name}", name),
            context.sandbox_base_url.as_deref(),
        )?;
        if url.cannot_be_a_base() {
            return Err("api.url cannot have paths appended".into());
        }
        Ok(PlatformWriter {
            inner: Arc::new(Inner {
                http: context.http.clone(),
                url,
                auth_header: api.auth_header.clone(),
                auth_value: api.auth_value.clone().unwrap_or_default(),
            }),
        })
    }
}

impl PartnerWriter for PlatformWriter {
    fn upsert(
        &self,
        partner_id: Option<&str>,
        _current: &Fields,
        set: &Fields,
    ) -> LocalFuture<PartnerAnswer<PartnerContact>> {
        let inner = Arc::clone(&self.inner);
        let id = partner_id.map_or_else(|| create_id(set), str::to_string);
        let set = set.clone();
        Box::pin(async move { answer(inner.upsert(&id, &set).await) })
    }

    fn list(&self, cursor: Option<String>) -> LocalFuture<PartnerAnswer<PartnerPage>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move { answer(inner.list(cursor.as_deref()).await) })
    }
}

impl Inner {
    fn contacts_url(&self, id: Option<&str>) -> reqwest::Url {
        let mut url = self.url.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().push("contacts");
            if let Some(id) = id {
                segments.push(id);
            }
        }
        url
    }

    async fn upsert(&self, id: &str, set: &Fields) -> Result<PartnerContact, Failure> {
        let request = self
            .http
            .put(self.contacts_url(Some(id)))
            .header(self.auth_header.as_str(), self.auth_value.as_str())
            .json(&put_body(set));
        let reply = classify("PUT contact", send(request, "PUT contact").await?, false)?;
        let contact: Value = serde_json::from_slice(&reply.body)
            .map_err(|err| Failure::retry(format!("unreadable contact: {err}")))?;
        contact_of(&contact).ok_or_else(|| Failure::retry("unreadable contact: no `id`"))
    }

    async fn list(&self, cursor: Option<&str>) -> Result<PartnerPage, Failure> {
        let mut url = self.contacts_url(None);
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("limit", &LIST_PAGE_SIZE.to_string());
            if let Some(cursor) = cursor {
                query.append_pair("cursor", cursor);
            }
        }
        let request = self
            .http
            .get(url)
            .header(self.auth_header.as_str(), self.auth_value.as_str());
        let reply = classify("GET contacts", send(request, "GET contacts").await?, false)?;
        let page: Value = serde_json::from_slice(&reply.body)
            .map_err(|err| Failure::retry(format!("unreadable contacts page: {err}")))?;
        let Some(items) = page.get("items").and_then(Value::as_array) else {
            return Err(Failure::retry("unreadable contacts page: no `items` array"));
        };
        let contacts: Vec<PartnerContact> = items.iter().filter_map(contact_of).collect();
        if contacts.len() < items.len() {
            tracing::warn!(
                left_out = items.len() - contacts.len(),
                "platform contacts without an id left out of the listing"
            );
        }
        Ok(PartnerPage {
            contacts,
            next_cursor: id_text(page.get("next_cursor")),
        })
    }
}

/// The id a create upserts: `steward-` + the first 16 hex characters of the SHA-256 of the
/// trimmed, lower-cased email (of the fields' sorted JSON without one).
pub fn create_id(set: &Fields) -> String {
    let email = set
        .get("email")
        .and_then(Value::as_str)
        .map(|email| email.trim().to_lowercase())
        .filter(|email| !email.is_empty());
    // A BTreeMap serialises in key order: the same fields give the same text.
    let key = email.unwrap_or_else(|| serde_json::to_string(set).unwrap_or_default());
    let digest = hex::encode(Sha256::digest(key.as_bytes()));
    format!("steward-{}", &digest[..16])
}

/// The PUT body: only the fields set, under their own names (tags as an array of
/// strings, `subscribed` a bool).
pub fn put_body(set: &Fields) -> Value {
    let mut body = Map::new();
    for (field, value) in set {
        let value = match field.as_str() {
            "email" | "first_name" | "last_name" => text_value(Some(value)),
            "tags" => tags_value(value),
            "subscribed" => Value::Bool(value.as_bool().unwrap_or(false)),
            _ => continue,
        };
        body.insert(field.clone(), value);
    }
    Value::Object(body)
}

/// A contact of the API as a partner contact (`None` without an id): the fields it carries,
/// its `updated_at` (RFC 3339, or ms since the epoch) as its version.
pub fn contact_of(contact: &Value) -> Option<PartnerContact> {
    let id = id_text(contact.get("id"))?;
    let mut fields = Fields::new();
    for field in ["email", "first_name", "last_name"] {
        if let Some(value) = contact.get(field) {
            fields.insert(field.into(), text_value(Some(value)));
        }
    }
    if let Some(tags) = contact.get("tags") {
        fields.insert("tags".into(), tags_value(tags));
    }
    if let Some(subscribed) = contact.get("subscribed").and_then(Value::as_bool) {
        fields.insert("subscribed".into(), Value::Bool(subscribed));
    }
    let version_ms = match contact.get("updated_at") {
        Some(Value::String(at)) => at
            .parse::<jiff::Timestamp>()
            .ok()
            .and_then(|at| u64::try_from(at.as_millisecond()).ok()),
        Some(Value::Number(ms)) => ms.as_u64(),
        _ => None,
    };
    Some(PartnerContact {
        id,
        fields,
        version_ms,
    })
}
