//! The registry of accounts and one account's state: its lists and members, webhook
//! settings, faults, counters and request log (one mutex per account). Member changes made
//! "as a user would" bump `last_changed` from the account clock and return the webhook jobs
//! to send.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use md5::{Digest, Md5};

use super::webhooks::{
    event_pairs, form_encode, is_dropped, AudienceEvent, DeliveryCounters, EventType, WebhookJob,
};
use super::AccountSpec;
use crate::clock::now_ms;
use crate::faults::Faults;
use crate::registry::{self, Entry, Refusal};
use crate::request_log::RequestLog;

/// Dropped events kept for `GET …/webhook/dropped` (oldest dropped first past it).
const DROPPED_LOG_CAPACITY: usize = 10_000;

/// Mailchimp's member id: hex MD5 of the lowercased email address.
pub(crate) fn subscriber_hash(email: &str) -> String {
    hex::encode(Md5::digest(email.trim().to_lowercase().as_bytes()))
}

/// A member's `unique_email_id`: 10 hex characters given once when the member is added and
/// kept through email changes (assumed: Mailchimp documents it as "an identifier for the
/// address across all of Mailchimp"). Drawn from the account, list and the account's member
/// counter, so an address that is freed by an email change and added again gets a new one.
fn unique_email_id(account_id: &str, list_id: &str, member_number: u64) -> String {
    let digest = Md5::digest(format!("{account_id}/{list_id}/{member_number}").as_bytes());
    hex::encode(&digest[..5])
}

/// One audience member.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    /// The subscriber hash of the current email (changes with `upemail`, as Mailchimp's does).
    pub(crate) id: String,
    /// Stable through email changes; what audience webhooks send as `data[id]`.
    pub(crate) unique_email_id: String,
    pub(crate) email_address: String,
    /// subscribed | unsubscribed | cleaned | pending | archived
    pub(crate) status: String,
    pub(crate) merge_fields: BTreeMap<String, String>,
    pub(crate) tags: Vec<String>,
    /// Unix seconds: Mailchimp's timestamps have second resolution.
    pub(crate) last_changed_s: i64,
}

impl Member {
    pub(crate) fn to_json(&self, list_id: &str) -> Value {
        let tags: Vec<Value> = self
            .tags
            .iter()
            .enumerate()
            .map(|(index, name)| json!({"id": index + 1, "name": name}))
            .collect();
        json!({
            "id": self.id,
            "email_address": self.email_address,
            "unique_email_id": self.unique_email_id,
            "contact_id": self.id,
            "email_type": "html",
            "status": self.status,
            "merge_fields": self.merge_fields,
            "tags_count": tags.len(),
            "tags": tags,
            "last_changed": last_changed(self.last_changed_s),
            "list_id": list_id,
        })
    }
}

/// ISO 8601 with `+00:00`, the form Mailchimp's `last_changed` takes.
pub(crate) fn last_changed(unix_s: i64) -> String {
    jiff::Timestamp::from_second(unix_s)
        .map(|at| at.strftime("%Y-%m-%dT%H:%M:%S+00:00").to_string())
        .unwrap_or_default()
}

/// Where a list's webhooks go and how many are dropped.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WebhookSettings {
    pub(crate) url: String,
    /// Share of events (0–100 %) never sent, chosen by a stable draw.
    #[serde(default)]
    pub(crate) drop_pct: f64,
}

/// A dropped event, as `GET …/webhook/dropped` lists it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DroppedEvent {
    pub(crate) list_id: String,
    /// The `data[id]` the event would have carried: the member's `unique_email_id`.
    pub(crate) id: String,
    /// The member's subscriber hash when the event was dropped.
    pub(crate) subscriber_hash: String,
    pub(crate) email: String,
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    pub(crate) fired_at: String,
}

#[derive(Debug, Default)]
pub(crate) struct List {
    /// By member id.
    pub(crate) members: BTreeMap<String, Member>,
    pub(crate) webhook: Option<WebhookSettings>,
}

/// What one change does to a member.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MemberChange {
    #[serde(default)]
    pub(crate) email_address: Option<String>,
    #[serde(default)]
    pub(crate) status: Option<String>,
    #[serde(default)]
    pub(crate) merge_fields: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) tags: Option<Vec<String>>,
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

const STATUSES: [&str; 4] = ["subscribed", "unsubscribed", "cleaned", "pending"];

#[derive(Debug, Default)]
pub(crate) struct AccountState {
    pub(crate) lists: BTreeMap<String, List>,
    /// Added to the wall clock (`POST …/clock`), so tests move time without sleeping.
    pub(crate) clock_offset_s: i64,
    pub(crate) faults: Faults,
    pub(crate) log: RequestLog,
    /// `"METHOD /route"` → status → count.
    pub(crate) requests: BTreeMap<String, BTreeMap<String, u64>>,
    pub(crate) webhooks_fired: u64,
    pub(crate) webhooks_dropped: u64,
    pub(crate) dropped: VecDeque<DroppedEvent>,
    /// Members ever added (the seed of each new `unique_email_id`).
    pub(crate) members_added: u64,
}

impl AccountState {
    pub(crate) fn now_s(&self) -> i64 {
        (now_ms() / 1000) as i64 + self.clock_offset_s
    }

    pub(crate) fn count_request(&mut self, route: &str, status: &str) {
        *self
            .requests
            .entry(route.to_owned())
            .or_default()
            .entry(status.to_owned())
            .or_default() += 1;
    }
}

/// One account: its spec, state and the lock-free counters the gate touches.
pub(crate) struct Account {
    pub(crate) spec: AccountSpec,
    pub(crate) state: Mutex<AccountState>,
    pub(crate) in_flight: AtomicU64,
    pub(crate) in_flight_max: AtomicU64,
    pub(crate) rejected_concurrency: AtomicU64,
    pub(crate) delivery: Arc<DeliveryCounters>,
    webhook_sender: mpsc::UnboundedSender<WebhookJob>,
}

impl Entry for Account {
    type State = AccountState;

    fn state(&self) -> &Mutex<AccountState> {
        &self.state
    }
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
        let now_s = state.now_s();
        let list = state
            .lists
            .get(list_id)
            .ok_or_else(|| ChangeError::UnknownList(list_id.to_owned()))?;
        let mut new_members = Vec::with_capacity(changes.len());
        let mut state_members_added = state.members_added;
        for change in changes {
            let email = change.email_address.unwrap_or_default();
            if !email.contains('@') {
                return Err(ChangeError::Invalid(format!(
                    "email_address {email:?} is not an email"
                )));
            }
            let id = subscriber_hash(&email);
            let taken = list.members.contains_key(&id)
                || new_members.iter().any(|member: &Member| member.id == id);
            if taken {
                return Err(ChangeError::Exists(email));
            }
            let status = change.status.unwrap_or_else(|| "subscribed".into());
            if !STATUSES.contains(&status.as_str()) {
                return Err(ChangeError::Invalid(format!("unknown status {status:?}")));
            }
            state_members_added += 1;
            new_members.push(Member {
                id,
                unique_email_id: unique_email_id(&self.spec.id, list_id, state_members_added),
                email_address: email,
                status,
                merge_fields: change.merge_fields,
                tags: change.tags.unwrap_or_default(),
                last_changed_s: now_s,
            });
        }
        state.members_added = state_members_added;
        let ids = new_members
            .iter()
            .map(|member| (member.id.clone(), member.unique_email_id.clone()))
            .collect();
        for member in new_members {
            if member.status == "subscribed" {
                let event = plain_event(EventType::Subscribe);
                self.fire(&mut state, list_id, &event, &member);
            }
            let list = state.lists.get_mut(list_id).expect("checked above");
            list.members.insert(member.id.clone(), member);
        }
        Ok(ids)
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
        let mut events = Vec::new();
        if let Some(email) = change.email_address {
            if !email.contains('@') {
                return Err(ChangeError::Invalid(format!(
                    "email_address {email:?} is not an email"
                )));
            }
            let new_id = subscriber_hash(&email);
            if new_id != member.id && list.members.contains_key(&new_id) {
                return Err(ChangeError::Exists(email));
            }
            let old_email = std::mem::replace(&mut member.email_address, email);
            list.members.remove(&member.id);
            member.id = new_id;
            events.push(AudienceEvent {
                old_email: Some(old_email),
                ..plain_event(EventType::Upemail)
            });
        }
        let profile_changed = !change.merge_fields.is_empty() || change.tags.is_some();
        member.merge_fields.extend(change.merge_fields);
        if let Some(tags) = change.tags {
            member.tags = tags;
        }
        if profile_changed {
            events.push(plain_event(EventType::Profile));
        }
        if let Some(status) = change.status {
            let event = match status.as_str() {
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
                other => return Err(ChangeError::Invalid(format!("unknown status {other:?}"))),
            };
            member.status = status;
            events.push(event);
        }
        member.last_changed_s = now_s;
        list.members.insert(member.id.clone(), member.clone());
        for event in &events {
            self.fire(&mut state, list_id, event, &member);
        }
        Ok(member.to_json(list_id))
    }

    /// Counts one event and sends it, unless it is dropped or no webhook is set.
    fn fire(
        &self,
        state: &mut AccountState,
        list_id: &str,
        event: &AudienceEvent,
        member: &Member,
    ) {
        let Some(settings) = state
            .lists
            .get(list_id)
            .and_then(|list| list.webhook.clone())
        else {
            return;
        };
        if is_dropped(self.spec.seed, settings.drop_pct, list_id, event, member) {
            state.webhooks_dropped += 1;
            if state.dropped.len() >= DROPPED_LOG_CAPACITY {
                state.dropped.pop_front();
            }
            state.dropped.push_back(DroppedEvent {
                list_id: list_id.to_owned(),
                id: member.unique_email_id.clone(),
                subscriber_hash: member.id.clone(),
                email: member.email_address.clone(),
                kind: event.kind.name(),
                fired_at: super::webhooks::fired_at(member.last_changed_s),
            });
            return;
        }
        state.webhooks_fired += 1;
        let job = WebhookJob {
            url: settings.url,
            body: form_encode(&event_pairs(event, member, list_id)),
            counters: Arc::clone(&self.delivery),
        };
        if self.webhook_sender.send(job).is_err() {
            tracing::warn!("sandbox Mailchimp webhook dispatcher stopped; event not sent");
        }
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

#[derive(Debug, thiserror::Error)]
pub(crate) enum CreateAccountError {
    #[error("account {0:?} exists")]
    IdTaken(String),
    #[error("the api key belongs to another account")]
    KeyTaken,
    #[error("{0}")]
    Invalid(String),
}

/// Every account, by id and by api key.
pub(crate) struct Registry {
    accounts: registry::Registry<Account>,
    webhook_sender: mpsc::UnboundedSender<WebhookJob>,
}

impl Registry {
    pub(crate) fn new(webhook_sender: mpsc::UnboundedSender<WebhookJob>) -> Registry {
        Registry {
            accounts: registry::Registry::default(),
            webhook_sender,
        }
    }

    /// Creates an account; the same id with the same spec again is a no-op when `idempotent`.
    pub(crate) fn create(
        &self,
        spec: AccountSpec,
        idempotent: bool,
    ) -> Result<(), CreateAccountError> {
        spec.validate().map_err(CreateAccountError::Invalid)?;
        let build = || Account {
            spec: spec.clone(),
            state: Mutex::new(AccountState {
                lists: spec
                    .lists
                    .iter()
                    .map(|id| (id.clone(), List::default()))
                    .collect(),
                ..AccountState::default()
            }),
            in_flight: AtomicU64::new(0),
            in_flight_max: AtomicU64::new(0),
            rejected_concurrency: AtomicU64::new(0),
            delivery: Arc::default(),
            webhook_sender: self.webhook_sender.clone(),
        };
        self.accounts
            .insert(
                &spec.id,
                |existing| idempotent && existing.spec.api_key == spec.api_key,
                |other| other.spec.api_key == spec.api_key,
                build,
            )
            .map_err(|refusal| match refusal {
                Refusal::IdTaken => CreateAccountError::IdTaken(spec.id.clone()),
                Refusal::Conflict => CreateAccountError::KeyTaken,
            })
    }

    /// The accounts by id.
    pub(crate) fn accounts(&self) -> &registry::Registry<Account> {
        &self.accounts
    }

    pub(crate) fn by_key(&self, api_key: &str) -> Option<Arc<Account>> {
        self.accounts
            .find(|account| account.spec.api_key == api_key)
    }
}

/// A slot among the account's simultaneous connections, released on drop.
pub(crate) struct ConnectionSlot(Arc<Account>);

impl ConnectionSlot {
    /// Takes a slot, or `None` when `max_connections` are already in flight.
    pub(crate) fn try_take(account: &Arc<Account>) -> Option<ConnectionSlot> {
        let limit = account.spec.max_connections;
        let taken =
            account
                .in_flight
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
                    (current < limit).then_some(current + 1)
                });
        match taken {
            Ok(previous) => {
                account
                    .in_flight_max
                    .fetch_max(previous + 1, Ordering::Relaxed);
                Some(ConnectionSlot(Arc::clone(account)))
            }
            Err(_) => None,
        }
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subscriber_hash_is_the_md5_of_the_lowercased_email() {
        // Goal: the id of an email is the MD5 of its lowercase form (Mailchimp's documented
        // rule), with the RFC 1321 digest.
        assert_eq!(
            subscriber_hash("Urist.McVankab@Freddiesjokes.com"),
            subscriber_hash("urist.mcvankab@freddiesjokes.com")
        );
        assert_eq!(subscriber_hash("abc"), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(subscriber_hash(""), "d41d8cd98f00b204e9800998ecf8427e");
    }

    #[test]
    fn unique_email_ids_are_short_and_differ_per_member() {
        // Goal: 10 hex characters, different for each added member of a list.
        let first = unique_email_id("acme", "list1", 1);
        assert_eq!(first.len(), 10);
        assert!(first.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(first, unique_email_id("acme", "list1", 2));
        assert_ne!(first, unique_email_id("acme", "list2", 1));
    }
}
