//! The partner registry and one partner's state (one mutex per partner): contacts, webhook
//! target, switches, faults, counters, request log; and the one way a contact is written —
//! by the API or by a user — firing its webhook when something actually changed.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;

use super::contacts::{Changes, Contact, ContactStore, Fields, Writer};
use super::webhooks::{event_body, is_dropped, DroppedEvent, WebhookJob, WebhookLog};
use super::PartnerSpec;
use crate::clock::now_ms;
use crate::faults::Faults;
use crate::listing::iso_millis;
use crate::registry::{self, Entry};
use crate::request_log::RequestLog;

#[derive(Debug, thiserror::Error)]
pub(crate) enum CreatePartnerError {
    #[error("{0}")]
    Invalid(String),
    #[error("partner {0:?} exists with another api_token")]
    IdTaken(String),
}

/// Why user edits were refused (nothing applied).
#[derive(Debug, thiserror::Error)]
pub(crate) enum EditError {
    #[error("{0}")]
    Invalid(String),
    #[error("unknown contact {0:?}")]
    UnknownContact(String),
}

/// Where the webhooks go.
#[derive(Debug, Clone)]
pub(crate) struct WebhookTarget {
    pub(crate) url: String,
    pub(crate) secret: String,
}

/// The live switches (`PUT …/switches`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Switches {
    /// Share of events (0–100 %) never sent, chosen by a stable draw.
    pub(crate) webhook_drop_pct: f64,
    /// Stored emails are trimmed and lower-cased.
    pub(crate) normalize_emails: bool,
}

/// Counters behind `GET /_sandbox/partners/{p}/stats`.
#[derive(Debug, Default, Clone, Serialize)]
pub(crate) struct Counters {
    /// Accepted `PUT /partners/{p}/contacts/{id}` calls.
    pub(crate) api_writes: u64,
    /// Contacts written by the control API (bulk, edits).
    pub(crate) user_writes: u64,
    /// Writes (of either kind) that changed nothing.
    pub(crate) unchanged_writes: u64,
    pub(crate) unauthorized: u64,
}

/// One write: the contact as it now is, and whether the write created it.
pub(crate) struct Written {
    pub(crate) contact: Value,
    pub(crate) created: bool,
}

pub(crate) struct PartnerState {
    pub(crate) spec: PartnerSpec,
    pub(crate) contacts: ContactStore,
    pub(crate) webhook: Option<WebhookTarget>,
    pub(crate) switches: Switches,
    pub(crate) faults: Faults,
    pub(crate) counters: Counters,
    /// `"METHOD /route"` → status → count (`0` = closed unanswered).
    pub(crate) requests: BTreeMap<String, BTreeMap<u16, u64>>,
    pub(crate) log: RequestLog,
    /// Events made so far (the `n` of `evt_<n>`).
    events: u64,
    webhook_log: Arc<WebhookLog>,
    sender: mpsc::UnboundedSender<WebhookJob>,
}

impl PartnerState {
    /// Writes contact `id` as `writer`: `changes` applied to its fields (to empty ones when
    /// it is new or `replace`). A write that leaves every field as it was changes nothing;
    /// otherwise `version` goes up by one, `updated_at` moves forward (strictly) and, unless
    /// `quiet`, the webhook fires.
    pub(crate) fn write(
        &mut self,
        id: &str,
        changes: &Changes,
        writer: Writer,
        replace: bool,
        quiet: bool,
    ) -> Written {
        match writer {
            Writer::Api => self.counters.api_writes += 1,
            Writer::User => self.counters.user_writes += 1,
        }
        let previous = self.contacts.get(id).cloned();
        let mut fields = match (&previous, replace) {
            (Some(contact), false) => contact.fields.clone(),
            _ => Fields::default(),
        };
        changes.apply(&mut fields);
        if self.switches.normalize_emails {
            fields.email = fields.email.map(|email| email.trim().to_lowercase());
        }
        if let Some(contact) = previous.as_ref().filter(|known| known.fields == fields) {
            self.counters.unchanged_writes += 1;
            return Written {
                contact: contact.to_json(),
                created: false,
            };
        }
        let (updated_at_ms, version) = match &previous {
            Some(contact) => (now_ms().max(contact.updated_at_ms + 1), contact.version + 1),
            None => (now_ms(), 1),
        };
        let contact = Contact {
            id: id.to_owned(),
            fields,
            updated_at_ms,
            version,
            updated_by: writer,
        };
        let created = previous.is_none();
        if !quiet {
            self.fire(&contact, created);
        }
        let answer = contact.to_json();
        self.contacts.put(contact);
        Written {
            contact: answer,
            created,
        }
    }

    /// Sends the event of one change, unless no webhook is set or the switch drops it.
    fn fire(&mut self, contact: &Contact, created: bool) {
        let Some(target) = &self.webhook else {
            return;
        };
        self.events += 1;
        let summary = DroppedEvent {
            id: format!("evt_{}", self.events),
            kind: if created {
                "contact.created"
            } else {
                "contact.updated"
            },
            contact_id: contact.id.clone(),
            version: contact.version,
            reason: "drop_pct",
        };
        let drop_pct = self.switches.webhook_drop_pct;
        if is_dropped(
            self.spec.seed,
            drop_pct,
            &self.spec.id,
            &contact.id,
            contact.version,
        ) {
            self.webhook_log.drop_event(summary);
            return;
        }
        let created_at = iso_millis(contact.updated_at_ms);
        let body = event_body(&summary.id, summary.kind, &created_at, contact.to_json());
        let log = Arc::clone(&self.webhook_log);
        let job = WebhookJob::signed(
            &self.spec.id,
            &target.url,
            &target.secret,
            body,
            summary,
            log,
        );
        self.webhook_log.fired.fetch_add(1, Ordering::Relaxed);
        if self.sender.send(job).is_err() {
            tracing::warn!("sandbox partner webhook dispatcher stopped; event not sent");
        }
    }

    /// Creates or replaces contacts as a user would (each an object of `id`? and the
    /// fields; fields it leaves out are empty), all or nothing; answers their ids in order
    /// (`c-{n}` for those without one).
    pub(crate) fn put_contacts(
        &mut self,
        items: &[Value],
        quiet: bool,
    ) -> Result<Vec<String>, String> {
        let mut parsed = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            let Value::Object(fields) = item else {
                return Err(format!("contacts[{index}]: a contact is a JSON object"));
            };
            let mut fields = fields.clone();
            let id = match fields.remove("id") {
                None | Some(Value::Null) => None,
                Some(Value::String(id)) if !id.is_empty() => Some(id),
                Some(other) => {
                    return Err(format!(
                        "contacts[{index}]: id must be a non-empty string, not {other}"
                    ))
                }
            };
            let changes =
                Changes::parse(&fields).map_err(|reason| format!("contacts[{index}]: {reason}"))?;
            parsed.push((id, changes));
        }
        let ids = parsed.into_iter().map(|(id, changes)| {
            let id = id.unwrap_or_else(|| self.contacts.next_numbered_id("c-"));
            self.write(&id, &changes, Writer::User, true, quiet);
            id
        });
        Ok(ids.collect())
    }

    /// Applies user edits `[(id, changes)]` in order (keys merged), all or nothing: every
    /// change must parse and every id exist. Answers the contacts as edited.
    pub(crate) fn user_edits(
        &mut self,
        edits: Vec<(String, Value)>,
    ) -> Result<Vec<Value>, EditError> {
        let mut parsed = Vec::with_capacity(edits.len());
        for (index, (id, changes)) in edits.into_iter().enumerate() {
            let changes = Changes::parse_for(&id, &changes)
                .map_err(|reason| EditError::Invalid(format!("edits[{index}]: {reason}")))?;
            parsed.push((id, changes));
        }
        if let Some((id, _)) = parsed
            .iter()
            .find(|(id, _)| self.contacts.get(id).is_none())
        {
            return Err(EditError::UnknownContact(id.clone()));
        }
        let written = parsed
            .iter()
            .map(|(id, changes)| self.write(id, changes, Writer::User, false, false).contact);
        Ok(written.collect())
    }

    /// Every contact in listing order.
    pub(crate) fn all_contacts(&self) -> Vec<Value> {
        self.contacts.all().map(Contact::to_json).collect()
    }

    pub(crate) fn webhook_log(&self) -> &WebhookLog {
        &self.webhook_log
    }
}

pub(crate) struct Partner {
    /// The spec it was created with (the same id and token again is a no-op).
    spec: PartnerSpec,
    state: Mutex<PartnerState>,
}

impl Entry for Partner {
    type State = PartnerState;

    fn state(&self) -> &Mutex<PartnerState> {
        &self.state
    }
}

/// Every partner, by id.
pub(crate) type Registry = registry::Registry<Partner>;

impl Registry {
    /// Creates a partner; the same id with the same api token again is a no-op.
    pub(crate) fn create(
        &self,
        spec: PartnerSpec,
        sender: &mpsc::UnboundedSender<WebhookJob>,
    ) -> Result<(), CreatePartnerError> {
        spec.validate().map_err(CreatePartnerError::Invalid)?;
        let build = || Partner {
            spec: spec.clone(),
            state: Mutex::new(PartnerState {
                spec: spec.clone(),
                contacts: ContactStore::default(),
                webhook: spec.webhook_url.clone().map(|url| WebhookTarget {
                    url,
                    secret: spec.webhook_secret.clone(),
                }),
                switches: Switches {
                    webhook_drop_pct: spec.webhook_drop_pct,
                    normalize_emails: spec.normalize_emails,
                },
                faults: Faults::default(),
                counters: Counters::default(),
                requests: BTreeMap::new(),
                log: RequestLog::default(),
                events: 0,
                webhook_log: Arc::default(),
                sender: sender.clone(),
            }),
        };
        self.insert(
            &spec.id,
            |existing| existing.spec.api_token == spec.api_token,
            |_| false,
            build,
        )
        .map_err(|_| CreatePartnerError::IdTaken(spec.id.clone()))
    }
}
