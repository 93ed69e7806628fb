//! The Mailchimp pair's writer: audience members over the Marketing API, with the key and
//! audience of `sources.mailchimp`.
//!
//! - **Write**: `PUT {base}/3.0/lists/{list_id}/members/{subscriber_hash}` ("add or update",
//!   an upsert) with `email_address`, `status_if_new`, `status` (only when `subscribed` is
//!   set) and `merge_fields` `FNAME`/`LNAME` (only the names set); then, when the tags
//!   change, `POST …/members/{subscriber_hash}/tags` with only the difference (`inactive`
//!   first, then `active`). The subscriber hash is the MD5 of the lower-cased email: an
//!   existing member is addressed by its current email, a new one (no partner id) by the
//!   email it gets, so a repeated create upserts the same member. When an email change was
//!   already made by an earlier attempt whose answer was lost, the old address answers
//!   `400 Member Exists` (the new address is taken — by this member): the write goes to the
//!   new address instead.
//! - **List** (the cross-match): `GET …/members?count=1000&offset=N`; the cursor is the
//!   next offset.
//!
//! The partner id is the member's `unique_email_id` (it survives email changes). Basic
//! auth `anystring:{api_key}`. A bare `403` is Mailchimp's overload answer: `Retry`.

use std::collections::BTreeSet;
use std::sync::Arc;

use md5::{Digest, Md5};
use serde_json::{json, Map, Value};
use steward_actors::ports::{
    LocalFuture, PartnerAnswer, PartnerContact, PartnerPage, PartnerWriter,
};
use steward_actors::two_way::fields::tags_value;
use steward_actors::two_way::Fields;

use super::{answer, classify, send, Failure, PartnerContext};
use crate::sources::mailchimp::member::parse_member;
use crate::sources::mailchimp::poller::base_url_of;
use crate::tenant::TenantDoc;

/// Members per listing page (Mailchimp's maximum `count`).
pub const LIST_PAGE_SIZE: u64 = 1_000;

/// The MD5 hex of the trimmed, lower-cased email: how Mailchimp addresses a member.
pub fn subscriber_hash(email: &str) -> String {
    hex::encode(Md5::digest(email.trim().to_lowercase().as_bytes()))
}

/// One audience's writer.
pub struct MailchimpWriter {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// `https://us21.api.mailchimp.com`, or the sandbox's `…/mailchimp`.
    base_url: String,
    api_key: String,
    list_id: String,
}

impl MailchimpWriter {
    pub fn new(http: reqwest::Client, base_url: &str, api_key: &str, list_id: &str) -> Self {
        MailchimpWriter {
            inner: Arc::new(Inner {
                http,
                base_url: base_url.trim_end_matches('/').to_string(),
                api_key: api_key.to_string(),
                list_id: list_id.to_string(),
            }),
        }
    }

    /// The writer of `sources.mailchimp` (its `api_key`, `list_id` and base URL).
    pub fn from_doc(context: &PartnerContext, doc: &TenantDoc) -> Result<Self, String> {
        let settings = doc
            .sources
            .mailchimp
            .as_ref()
            .ok_or("sources.mailchimp is not configured")?;
        let (Some(api_key), Some(list_id)) = (&settings.api_key, &settings.list_id) else {
            return Err("sources.mailchimp needs api_key and list_id".into());
        };
        let base_url = base_url_of(settings, api_key, context.sandbox_base_url.as_deref())?;
        Ok(MailchimpWriter::new(
            context.http.clone(),
            &base_url,
            api_key,
            list_id,
        ))
    }
}

impl PartnerWriter for MailchimpWriter {
    fn upsert(
        &self,
        partner_id: Option<&str>,
        current: &Fields,
        set: &Fields,
    ) -> LocalFuture<PartnerAnswer<PartnerContact>> {
        let inner = Arc::clone(&self.inner);
        let existing = partner_id.is_some();
        let (current, set) = (current.clone(), set.clone());
        Box::pin(async move { answer(inner.upsert(existing, &current, &set).await) })
    }

    fn list(&self, cursor: Option<String>) -> LocalFuture<PartnerAnswer<PartnerPage>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move { answer(inner.list(cursor.as_deref()).await) })
    }
}

impl Inner {
    /// `{base}/3.0/lists/{list_id}/members` followed by `tail`.
    fn members_url(&self, tail: &[&str]) -> Result<reqwest::Url, Failure> {
        let refused = || Failure::Refused {
            reason: "the Mailchimp base URL is not a URL".into(),
        };
        let mut url = reqwest::Url::parse(&self.base_url).map_err(|_| refused())?;
        url.path_segments_mut()
            .map_err(|()| refused())?
            .pop_if_empty()
            .extend(["3.0", "lists", &self.list_id, "members"])
            .extend(tail);
        Ok(url)
    }

    async fn put_member(&self, hash: &str, body: &Value) -> Result<super::Reply, Failure> {
        let url = self.members_url(&[hash])?;
        let request = self
            .http
            .put(url)
            .basic_auth("anystring", Some(&self.api_key))
            .json(body);
        send(request, "Mailchimp PUT member").await
    }

    async fn upsert(
        &self,
        existing: bool,
        current: &Fields,
        set: &Fields,
    ) -> Result<PartnerContact, Failure> {
        let current_email = email_of(current);
        let email = email_of(set)
            .or_else(|| current_email.clone())
            .ok_or_else(|| Failure::Refused {
                reason: "no email to write the member with (Mailchimp addresses members by email)"
                    .into(),
            })?;
        // An existing member is where its current email says; a new one where its email will.
        let address = match (existing, &current_email) {
            (true, Some(current_email)) => subscriber_hash(current_email),
            _ => subscriber_hash(&email),
        };
        let body = put_body(&email, current, set);
        let mut reply = self.put_member(&address, &body).await?;
        let moved = subscriber_hash(&email);
        if reply.status == 400 && is_member_exists(&reply.body) && moved != address {
            // The email change was made by an earlier attempt: the member is at its new address.
            reply = self.put_member(&moved, &body).await?;
        }
        let reply = classify("Mailchimp PUT member", reply, true)?;
        let member: Value = serde_json::from_slice(&reply.body)
            .map_err(|err| Failure::retry(format!("unreadable Mailchimp member: {err}")))?;
        let mut contact = member_contact(&member, &self.list_id)
            .map_err(|reason| Failure::retry(format!("unreadable Mailchimp member: {reason}")))?;
        let Some(wanted) = set.get("tags") else {
            return Ok(contact);
        };
        // The difference Steward means to make: from what it knew, else from what is there.
        let had = current
            .get("tags")
            .or_else(|| contact.fields.get("tags"))
            .map(tag_set)
            .unwrap_or_default();
        let changes = tag_changes(&had, &tag_set(wanted));
        if changes.is_empty() {
            return Ok(contact);
        }
        let hash = member
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or(moved);
        let url = self.members_url(&[&hash, "tags"])?;
        let request = self
            .http
            .post(url)
            .basic_auth("anystring", Some(&self.api_key))
            .json(&json!({ "tags": changes }));
        classify(
            "Mailchimp POST member tags",
            send(request, "Mailchimp POST member tags").await?,
            true,
        )?;
        let mut now = contact.fields.get("tags").map(tag_set).unwrap_or_default();
        for change in &changes {
            let name = change["name"].as_str().unwrap_or_default().to_string();
            if change["status"] == "active" {
                now.insert(name);
            } else {
                now.remove(&name);
            }
        }
        contact
            .fields
            .insert("tags".into(), tags_value(&json!(now)));
        Ok(contact)
    }

    async fn list(&self, cursor: Option<&str>) -> Result<PartnerPage, Failure> {
        let offset = match cursor {
            None => 0,
            Some(text) => text.parse::<u64>().map_err(|_| Failure::Refused {
                reason: format!(
                    "unreadable Mailchimp listing cursor {:?}",
                    text.escape_debug()
                ),
            })?,
        };
        let url = self.members_url(&[])?;
        let request = self
            .http
            .get(url)
            .query(&[
                ("count", LIST_PAGE_SIZE.to_string()),
                ("offset", offset.to_string()),
            ])
            .basic_auth("anystring", Some(&self.api_key));
        let reply = classify(
            "Mailchimp GET members",
            send(request, "Mailchimp GET members").await?,
            true,
        )?;
        let page: Value = serde_json::from_slice(&reply.body)
            .map_err(|err| Failure::retry(format!("unreadable Mailchimp members page: {err}")))?;
        let Some(members) = page.get("members").and_then(Value::as_array) else {
            return Err(Failure::retry(
                "unreadable Mailchimp members page: no `members` array",
            ));
        };
        let mut contacts = Vec::with_capacity(members.len());
        for member in members {
            match member_contact(member, &self.list_id) {
                Ok(contact) => contacts.push(contact),
                Err(reason) => {
                    tracing::warn!(reason = %reason.escape_debug(), "a Mailchimp member left out of the listing")
                }
            }
        }
        let next = offset + members.len() as u64;
        let more = match page.get("total_items").and_then(Value::as_u64) {
            Some(total) => next < total,
            None => members.len() as u64 >= LIST_PAGE_SIZE,
        };
        Ok(PartnerPage {
            contacts,
            next_cursor: (more && !members.is_empty()).then(|| next.to_string()),
        })
    }
}

/// The email of canonical fields, when it has one.
fn email_of(fields: &Fields) -> Option<String> {
    fields
        .get("email")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|email| !email.is_empty())
        .map(str::to_string)
}

fn status_of(subscribed: &Value) -> &'static str {
    if subscribed.as_bool() == Some(true) {
        "subscribed"
    } else {
        "unsubscribed"
    }
}

/// The PUT body: the email always (Mailchimp requires it), the status only when set (a new
/// member's from what is known, unsubscribed when nothing is: no opt-in is invented), the
/// names set (blank = `""`).
pub fn put_body(email: &str, current: &Fields, set: &Fields) -> Value {
    let mut body = Map::new();
    body.insert("email_address".into(), json!(email));
    let status_if_new = set
        .get("subscribed")
        .or_else(|| current.get("subscribed"))
        .map_or("unsubscribed", status_of);
    body.insert("status_if_new".into(), json!(status_if_new));
    if let Some(subscribed) = set.get("subscribed") {
        body.insert("status".into(), json!(status_of(subscribed)));
    }
    let mut merge_fields = Map::new();
    for (field, key) in [("first_name", "FNAME"), ("last_name", "LNAME")] {
        if let Some(value) = set.get(field) {
            merge_fields.insert(key.into(), json!(value.as_str().unwrap_or_default()));
        }
    }
    body.insert("merge_fields".into(), Value::Object(merge_fields));
    Value::Object(body)
}

fn tag_set(tags: &Value) -> BTreeSet<String> {
    tags_value(tags)
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

/// The tag changes from `had` to `wanted`: removals (`inactive`) first, then additions.
pub fn tag_changes(had: &BTreeSet<String>, wanted: &BTreeSet<String>) -> Vec<Value> {
    let removed = had
        .difference(wanted)
        .map(|name| json!({"name": name, "status": "inactive"}));
    let added = wanted
        .difference(had)
        .map(|name| json!({"name": name, "status": "active"}));
    removed.chain(added).collect()
}

/// Whether an answer is Mailchimp's `Member Exists` problem.
fn is_member_exists(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|problem| {
            problem
                .get("title")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .is_some_and(|title| title.eq_ignore_ascii_case("Member Exists"))
}

/// A member as a partner contact: the member parser's reading, with `subscribed` = status
/// `subscribed` and blank names `null`.
pub fn member_contact(member: &Value, list_id: &str) -> Result<PartnerContact, String> {
    let version = parse_member(member, list_id)?;
    let name = |name: Option<String>| {
        name.filter(|name| !name.trim().is_empty())
            .map_or(Value::Null, Value::String)
    };
    let mut fields = Fields::new();
    fields.insert("email".into(), json!(version.email));
    fields.insert("first_name".into(), name(version.first_name));
    fields.insert("last_name".into(), name(version.last_name));
    if let Some(tags) = version.tags {
        fields.insert("tags".into(), tags_value(&json!(tags)));
    }
    fields.insert(
        "subscribed".into(),
        json!(member.get("status").and_then(Value::as_str) == Some("subscribed")),
    );
    Ok(PartnerContact {
        id: version.unique_email_id,
        fields,
        version_ms: u64::try_from(version.changed_at_s)
            .ok()
            .map(|seconds| seconds.saturating_mul(1_000)),
    })
}
