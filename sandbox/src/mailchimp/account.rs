//! The registry of accounts and one account's state: its lists and members, webhook
//! settings, faults, counters and request log (one mutex per account). How members change
//! is `members`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use md5::{Digest, Md5};

use super::webhooks::{DeliveryCounters, WebhookJob};
use super::AccountSpec;
use crate::clock::now_ms;
use crate::faults::Faults;
use crate::registry::{self, Entry, Refusal};
use crate::request_log::RequestLog;

/// Dropped events kept for `GET …/webhook/dropped` (oldest dropped first past it).
pub(crate) const DROPPED_LOG_CAPACITY: usize = 10_000;

/// Mailchimp's member id: hex MD5 of the lowercased email address.
pub(crate) fn subscriber_hash(email: &str) -> String {
    hex::encode(Md5::digest(email.trim().to_lowercase().as_bytes()))
}

/// A member's `unique_email_id`: 10 hex characters given once when the member is added and
/// kept through email changes (assumed: Mailchimp documents it as "an identifier for the
/// address across all of Mailchimp"). Drawn from the account, list and the account's member
/// counter, so an address that is freed by an email change and added again gets a new one.
pub(crate) fn unique_email_id(account_id: &str, list_id: &str, member_number: u64) -> String {
    let digest = Md5::digest(format!("{account_id}/{list_id}/{member_number}").as_bytes());
    hex::encode(&digest[..5])
}

/// One audience member.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Member {
    /// The subscriber hash of the current email (changes with `upemail`, as Mailchimp's does).
    pub(crate) id: String,
    /// Stable through email changes; what audience webhooks send as `data[id]`.
    pub(crate) unique_email_id: String,
    pub(crate) email_address: String,
    /// subscribed | unsubscribed | cleaned | pending | transactional | archived
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

/// Where a list's webhooks go, which changes they report and how many are dropped.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WebhookSettings {
    pub(crate) url: String,
    /// Share of events (0–100 %) never sent, chosen by a stable draw.
    #[serde(default)]
    pub(crate) drop_pct: f64,
    #[serde(default)]
    pub(crate) sources: WebhookSources,
}

fn yes() -> bool {
    true
}

/// Mailchimp's webhook `sources`: whose changes fire events (each defaults to true).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WebhookSources {
    /// Changes a subscriber or a person makes (the control API's changes).
    #[serde(default = "yes")]
    pub(crate) user: bool,
    /// Changes an account admin makes (no sandbox route makes one; kept for the shape).
    #[serde(default = "yes")]
    pub(crate) admin: bool,
    /// Changes made through the API (`PUT …/members/{hash}`, `POST …/tags`).
    #[serde(default = "yes")]
    pub(crate) api: bool,
}

impl Default for WebhookSources {
    fn default() -> Self {
        WebhookSources {
            user: true,
            admin: true,
            api: true,
        }
    }
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
    /// Events not sent because the list's webhook does not take their source.
    pub(crate) webhooks_source_off: u64,
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
    pub(crate) webhook_sender: mpsc::UnboundedSender<WebhookJob>,
}

impl Entry for Account {
    type State = AccountState;

    fn state(&self) -> &Mutex<AccountState> {
        &self.state
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
