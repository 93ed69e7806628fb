//! How members change: the control API's user changes (add, edit) and the API's writes
//! (`PUT …/members/{hash}`, the upsert, and `POST …/members/{hash}/tags`). Every change is
//! compared with what the member holds: only what actually changed bumps `last_changed`
//! (from the account clock) and fires its audience events, and only to a webhook whose
//! `sources` take the change's source.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::account::{subscriber_hash, unique_email_id, Account, AccountState, List, Member};
use super::webhooks::{AudienceEvent, EventType, Source};
use crate::registry::Entry as _;

/// What one change does to a member (the control API's `PATCH` body).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MemberChange {
    #[serde(default)]
    pub(crate) email_address: Option<String>,
    #[serde(default)]
    pub(crate) status: Option<String>,
    /// Merged into the member's merge fields.
    #[serde(default)]
    pub(crate) merge_fields: BTreeMap<String, String>,
    /// Replaces the member's tags.
    #[serde(default)]
    pub(crate) tags: Option<Vec<String>>,
}

/// The body of `PUT /3.0/lists/{list_id}/members/{subscriber_hash}`; other keys of the real
/// API (`interests`, `language`, …) are ignored.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct MemberPut {
    #[serde(default)]
    pub(crate) email_address: Option<String>,
    /// The status of a member this call creates (required then).
    #[serde(default)]
    pub(crate) status_if_new: Option<String>,
    /// The status of a member that exists.
    #[serde(default)]
    pub(crate) status: Option<String>,
    #[serde(default)]
    pub(crate) merge_fields: BTreeMap<String, String>,
}

/// One entry of `POST …/tags`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TagChange {
    pub(crate) name: String,
    /// `active` adds the tag, `inactive` removes it.
    pub(crate) status: String,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ChangeError {
    #[error("unknown list {0:?}")]
    UnknownList(String),
    #[error("unknown member {0:?}")]
    UnknownMember(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0:?} is already a list member")]
    Exists(String),
}

/// The statuses a member is created with or given through the API.
const STATUSES: [&str; 5] = [
    "subscribed",
    "unsubscribed",
    "cleaned",
    "pending",
    "transactional",
];

fn check_status(status: &str, archived_too: bool) -> Result<(), ChangeError> {
    if STATUSES.contains(&status) || (archived_too && status == "archived") {
        Ok(())
    } else {
        Err(ChangeError::Invalid(format!("unknown status {status:?}")))
    }
}

fn check_email(email: &str) -> Result<(), ChangeError> {
    if email.contains('@') {
        Ok(())
    } else {
        Err(ChangeError::Invalid(format!(
            "email_address {email:?} is not an email"
        )))
    }
}

fn plain_event(kind: EventType) -> AudienceEvent {
    AudienceEvent {
        kind,
        action: None,
        reason: None,
        old_email: None,
    }
}

/// The event a move to `status` fires (`pending` and `transactional` fire none).
fn status_event(status: &str) -> Option<AudienceEvent> {
    let event = match status {
        "unsubscribed" => AudienceEvent {
            action: Some("unsub"),
            reason: Some("manual"),
            ..plain_event(EventType::Unsubscribe)
        },
        "cleaned" => AudienceEvent {
            reason: Some("hard"),
            ..plain_event(EventType::Cleaned)
        },
        "subscribed" => plain_event(EventType::Subscribe),
        "archived" => AudienceEvent {
            action: Some("delete"),
            reason: Some("manual"),
            ..plain_event(EventType::Unsubscribe)
        },
        _ => return None,
    };
    Some(event)
}

/// Applies `change` to `member` (a copy; nothing is stored): the events of what actually
/// changed, in the order `upemail`, `profile`, status; `None` when nothing changed.
fn apply(
    list: &List,
    member: &mut Member,
    change: MemberChange,
) -> Result<Option<Vec<AudienceEvent>>, ChangeError> {
    let before = member.clone();
    let mut events = Vec::new();
    if let Some(email) = change.email_address {
        if email != member.email_address {
            check_email(&email)?;
            let new_id = subscriber_hash(&email);
            if new_id != member.id && list.members.contains_key(&new_id) {
                return Err(ChangeError::Exists(email));
            }
            let old_email = std::mem::replace(&mut member.email_address, email);
            member.id = new_id;
            events.push(AudienceEvent {
                old_email: Some(old_email),
                ..plain_event(EventType::Upemail)
            });
        }
    }
    let fields_before = (member.merge_fields.clone(), member.tags.clone());
    member.merge_fields.extend(change.merge_fields);
    if let Some(tags) = change.tags {
        member.tags = tags;
    }
    if (&member.merge_fields, &member.tags) != (&fields_before.0, &fields_before.1) {
        events.push(plain_event(EventType::Profile));
    }
    if let Some(status) = change.status {
        check_status(&status, true)?;
        if status != member.status {
            events.extend(status_event(&status));
            member.status = status;
        }
    }
    Ok((*member != before).then_some(events))
}

impl Account {
    /// Adds members as if they signed up (fires `subscribe` for subscribed ones). All or
    /// nothing: an invalid or existing email refuses the whole batch. Returns each new
    /// member's (subscriber hash, `unique_email_id`).
    pub(crate) fn add_members(
        &self,
        list_id: &str,
        changes: Vec<MemberChange>,
    ) -> Result<Vec<(String, String)>, ChangeError> {
        let mut state = self.lock();
        let list = state
            .lists
            .get(list_id)
            .ok_or_else(|| ChangeError::UnknownList(list_id.to_owned()))?;
        let mut ids: Vec<String> = Vec::with_capacity(changes.len());
        for change in &changes {
            let email = change.email_address.as_deref().unwrap_or_default();
            check_email(email)?;
            let id = subscriber_hash(email);
            if list.members.contains_key(&id) || ids.contains(&id) {
                return Err(ChangeError::Exists(email.to_owned()));
            }
            check_status(change.status.as_deref().unwrap_or("subscribed"), false)?;
            ids.push(id);
        }
        let added = changes.into_iter().map(|change| {
            let member = self.insert_member(
                &mut state,
                list_id,
                change.email_address.unwrap_or_default(),
                change.status.unwrap_or_else(|| "subscribed".into()),
                change.merge_fields,
                change.tags.unwrap_or_default(),
                Source::User,
            );
            (member.id, member.unique_email_id)
        });
        Ok(added.collect())
    }

    /// Stores a new member (checked by the caller) and fires `subscribe` when subscribed.
    #[allow(clippy::too_many_arguments)]
    fn insert_member(
        &self,
        state: &mut AccountState,
        list_id: &str,
        email_address: String,
        status: String,
        merge_fields: BTreeMap<String, String>,
        tags: Vec<String>,
        source: Source,
    ) -> Member {
        state.members_added += 1;
        let member = Member {
            id: subscriber_hash(&email_address),
            unique_email_id: unique_email_id(&self.spec.id, list_id, state.members_added),
            email_address,
            status,
            merge_fields,
            tags,
            last_changed_s: state.now_s(),
        };
        if member.status == "subscribed" {
            self.fire(
                state,
                list_id,
                &plain_event(EventType::Subscribe),
                &member,
                source,
            );
        }
        if let Some(list) = state.lists.get_mut(list_id) {
            list.members.insert(member.id.clone(), member.clone());
        }
        member
    }

    /// A user's edit: email (→ `upemail`, the id follows the email), merge fields or tags
    /// (→ `profile`), status (→ `unsubscribe`, `cleaned`, `subscribe`). Returns the member.
    pub(crate) fn change_member(
        &self,
        list_id: &str,
        member_id: &str,
        change: MemberChange,
    ) -> Result<Value, ChangeError> {
        let mut state = self.lock();
        let member = self.change(&mut state, list_id, member_id, change, Source::User)?;
        Ok(member.to_json(list_id))
    }

    /// Applies `change` to a stored member; stores it and fires its events when something
    /// changed. Answers the member as it now is.
    fn change(
        &self,
        state: &mut AccountState,
        list_id: &str,
        member_id: &str,
        change: MemberChange,
        source: Source,
    ) -> Result<Member, ChangeError> {
        let now_s = state.now_s();
        let list = state
            .lists
            .get_mut(list_id)
            .ok_or_else(|| ChangeError::UnknownList(list_id.to_owned()))?;
        let mut member = list
            .members
            .get(member_id)
            .cloned()
            .ok_or_else(|| ChangeError::UnknownMember(member_id.to_owned()))?;
        let Some(events) = apply(list, &mut member, change)? else {
            return Ok(member);
        };
        member.last_changed_s = now_s;
        list.members.remove(member_id);
        list.members.insert(member.id.clone(), member.clone());
        for event in &events {
            self.fire(state, list_id, event, &member, source);
        }
        Ok(member)
    }

    /// The API's upsert: updates the member `member_id` names (its email may change; it
    /// keeps its `unique_email_id`), else creates one with `status_if_new`.
    pub(crate) fn put_member(
        &self,
        state: &mut AccountState,
        list_id: &str,
        member_id: &str,
        put: MemberPut,
    ) -> Result<Value, ChangeError> {
        let list = state
            .lists
            .get(list_id)
            .ok_or_else(|| ChangeError::UnknownList(list_id.to_owned()))?;
        let email = match put.email_address {
            Some(email) if !email.trim().is_empty() => email,
            _ => return Err(ChangeError::Invalid("email_address is required".to_owned())),
        };
        check_email(&email)?;
        for status in [&put.status, &put.status_if_new].into_iter().flatten() {
            check_status(status, false)?;
        }
        if list.members.contains_key(member_id) {
            let change = MemberChange {
                email_address: Some(email),
                status: put.status,
                merge_fields: put.merge_fields,
                tags: None,
            };
            let member = self.change(state, list_id, member_id, change, Source::Api)?;
            return Ok(member.to_json(list_id));
        }
        let Some(status) = put.status_if_new else {
            return Err(ChangeError::Invalid(
                "status_if_new is required for a new member".to_owned(),
            ));
        };
        if list.members.contains_key(&subscriber_hash(&email)) {
            return Err(ChangeError::Exists(email));
        }
        let member = self.insert_member(
            state,
            list_id,
            email,
            status,
            put.merge_fields,
            Vec::new(),
            Source::Api,
        );
        Ok(member.to_json(list_id))
    }

    /// The API's tag changes: `active` tags are added, `inactive` ones removed.
    pub(crate) fn change_tags(
        &self,
        state: &mut AccountState,
        list_id: &str,
        member_id: &str,
        changes: Vec<TagChange>,
    ) -> Result<(), ChangeError> {
        let list = state
            .lists
            .get(list_id)
            .ok_or_else(|| ChangeError::UnknownList(list_id.to_owned()))?;
        let mut tags = list
            .members
            .get(member_id)
            .ok_or_else(|| ChangeError::UnknownMember(member_id.to_owned()))?
            .tags
            .clone();
        for change in changes {
            match change.status.as_str() {
                "active" if !tags.contains(&change.name) => tags.push(change.name),
                "active" => {}
                "inactive" => tags.retain(|tag| *tag != change.name),
                other => {
                    return Err(ChangeError::Invalid(format!(
                        "tag status must be active or inactive, not {other:?}"
                    )))
                }
            }
        }
        let change = MemberChange {
            tags: Some(tags),
            ..MemberChange::default()
        };
        self.change(state, list_id, member_id, change, Source::Api)?;
        Ok(())
    }
}
