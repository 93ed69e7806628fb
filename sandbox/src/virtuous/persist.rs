//! Keeping organizations across restarts (`steward serve`'s embedded sandbox,
//! `docs/sandbox.md` "Kept across restarts"). One JSON file per org,
//! `{dir}/virtuous/{id}.json` (id characters other than `A-Z a-z 0-9 _ -` written `%XX`),
//! replaced through a temporary file and a rename by one saver task, `SAVE_AFTER_MS` after a
//! change (changes meanwhile ride along), and once more when the sandbox stops.
//!
//! Kept: the spec and switches, contacts, gifts, projects, recurring gifts, events, contact
//! notes, webhook subscriptions, the transactions pending import or waiting in review, the id
//! counters. Never written: secrets — an org comes back with no api key (the embedded mode
//! gives it again, `Registry::rotate_api_key`) and its subscriptions without their secret
//! (`restore_webhook_secret`). Not kept: stats counters, the request log, the rate window,
//! faults and scripts, webhook deliveries not yet made.
//!
//! A file that cannot be read refuses the start, naming it: a simulated CRM that silently
//! lost an org would leave the engine's records `submitted` for ever.

use std::borrow::Cow;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix_web::web::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::contact_store::ContactStore;
use super::import::follow_processing_mode;
use super::org::{Org, OrgState, Pending, PendingKind, Registry};
use super::records::{GiftStore, Record, Table};
use super::{LiveSwitches, OrgSpec};

/// The file format; a file of another version is refused (never misread).
const FORMAT_VERSION: u32 = 1;
/// How long after a change the saver writes: changes within it share one write.
const SAVE_AFTER_MS: u64 = 250;
/// After a save that took `d`, the next one waits at least `SAVE_PAUSE_FACTOR × d`: a large
/// organization (its whole file is written again) costs at most a tenth of the time.
const SAVE_PAUSE_FACTOR: u32 = 9;
/// The folder below the keeper's directory.
const ORGS_DIR: &str = "virtuous";

/// One org as kept on disk. Borrowed while saving (the org's lock held), owned when read.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedOrg<'a> {
    format_version: u32,
    /// `api_key` is always empty here.
    spec: OrgSpec,
    number: u64,
    switches: LiveSwitches,
    next_sequence: u64,
    next_individual_id: u64,
    pending: Vec<SavedPending<'a>>,
    review: Vec<SavedPending<'a>>,
    gifts: SavedTable<'a>,
    contacts: SavedTable<'a>,
    /// Without their `secret`.
    webhooks: SavedTable<'a>,
    recurring_gifts: SavedTable<'a>,
    projects: SavedTable<'a>,
    events: SavedTable<'a>,
    contact_notes: SavedTable<'a>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedPending<'a> {
    kind: PendingKind,
    /// The accepted item's JSON, byte for byte.
    body: Cow<'a, str>,
    received_ms: u64,
    sequence: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedTable<'a> {
    last_id: u64,
    records: Vec<Cow<'a, Record>>,
}

impl<'a> SavedTable<'a> {
    fn of(last_id: u64, records: impl Iterator<Item = &'a Record>) -> SavedTable<'a> {
        SavedTable {
            last_id,
            records: records.map(Cow::Borrowed).collect(),
        }
    }

    /// The kept records in a new store (through its `insert`, so its indices are rebuilt),
    /// its ids going on after the kept last one.
    fn into_store<Store: Default>(
        self,
        set_last_id: fn(&mut Store, u64),
        insert: impl Fn(&mut Store, Record),
    ) -> Store {
        let mut store = Store::default();
        set_last_id(&mut store, self.last_id);
        for record in self.records {
            insert(&mut store, record.into_owned());
        }
        store
    }
}

fn saved_pending<'a>(items: impl Iterator<Item = &'a Pending>) -> Vec<SavedPending<'a>> {
    items
        .map(|item| SavedPending {
            kind: item.kind,
            body: String::from_utf8_lossy(&item.body),
            received_ms: item.received_ms,
            sequence: item.sequence,
        })
        .collect()
}

fn restored_pending(items: Vec<SavedPending<'_>>) -> impl Iterator<Item = Pending> + '_ {
    items.into_iter().map(|item| Pending {
        kind: item.kind,
        body: Bytes::from(item.body.into_owned()),
        received_ms: item.received_ms,
        sequence: item.sequence,
    })
}

/// The org's file content (call with its state locked).
fn serialize_org(org: &Org, state: &OrgState) -> serde_json::Result<Vec<u8>> {
    let webhooks_without_secrets = state.webhooks.records.values().map(|subscription| {
        let mut subscription = subscription.clone();
        subscription.doc.remove("secret");
        Cow::Owned(subscription)
    });
    let saved = SavedOrg {
        format_version: FORMAT_VERSION,
        spec: OrgSpec {
            api_key: String::new(),
            ..org.spec.clone()
        },
        number: org.number,
        switches: state.switches,
        next_sequence: state.next_sequence,
        next_individual_id: state.next_individual_id,
        pending: saved_pending(state.pending.iter()),
        review: saved_pending(state.review.iter()),
        gifts: SavedTable::of(state.gifts.last_id(), state.gifts.records.values()),
        contacts: SavedTable::of(state.contacts.last_id(), state.contacts.records.values()),
        webhooks: SavedTable {
            last_id: state.webhooks.last_id(),
            records: webhooks_without_secrets.collect(),
        },
        recurring_gifts: SavedTable::of(
            state.recurring_gifts.last_id(),
            state.recurring_gifts.records.values(),
        ),
        projects: SavedTable::of(state.projects.last_id(), state.projects.records.values()),
        events: SavedTable::of(state.events.last_id(), state.events.records.values()),
        contact_notes: SavedTable::of(
            state.contact_notes.last_id(),
            state.contact_notes.records.values(),
        ),
    };
    serde_json::to_vec(&saved)
}

/// An org read back from its file content.
fn deserialize_org(bytes: &[u8]) -> Result<Org, String> {
    let saved: SavedOrg<'static> =
        serde_json::from_slice(bytes).map_err(|error| error.to_string())?;
    if saved.format_version != FORMAT_VERSION {
        return Err(format!(
            "format version {} (this build reads {FORMAT_VERSION})",
            saved.format_version
        ));
    }
    let mut state = OrgState::new(&saved.spec);
    state.switches = saved.switches;
    state.next_sequence = saved.next_sequence;
    state.next_individual_id = saved.next_individual_id;
    state.pending = restored_pending(saved.pending).collect();
    state.review = restored_pending(saved.review).collect();
    state.gifts = saved
        .gifts
        .into_store(GiftStore::set_last_id, GiftStore::insert);
    state.contacts = saved
        .contacts
        .into_store(ContactStore::set_last_id, ContactStore::insert);
    let restore_table = |table: SavedTable<'static>| {
        table.into_store(Table::set_last_id, |table: &mut Table, record| {
            table.insert(record);
        })
    };
    state.webhooks = restore_table(saved.webhooks);
    state.recurring_gifts = restore_table(saved.recurring_gifts);
    state.projects = restore_table(saved.projects);
    state.events = restore_table(saved.events);
    state.contact_notes = restore_table(saved.contact_notes);
    Ok(Org::new(saved.spec, saved.number, state))
}

/// The file name of an org: its id with every character outside `A-Z a-z 0-9 _ -` written
/// `%XX` (so no id can name another directory), then `.json`.
fn file_name(org_id: &str) -> String {
    let mut name = String::with_capacity(org_id.len() + 5);
    for byte in org_id.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-' {
            name.push(char::from(byte));
        } else {
            name.push_str(&format!("%{byte:02X}"));
        }
    }
    name.push_str(".json");
    name
}

/// Replaces `path` with `contents` through a temporary file, a flush to disk and a rename:
/// a crash leaves the old file or the new one, never half of one.
fn write_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let temporary = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The orgs of one sandbox, kept in a directory.
pub(crate) struct Keeper {
    orgs_dir: PathBuf,
    registry: Arc<Registry>,
    /// One save at a time: the saver's and the final one never write an org out of order.
    saving: tokio::sync::Mutex<()>,
}

impl Keeper {
    pub(crate) fn new(dir: &Path, registry: Arc<Registry>) -> Keeper {
        Keeper {
            orgs_dir: dir.join(ORGS_DIR),
            registry,
            saving: tokio::sync::Mutex::new(()),
        }
    }

    /// Reads back every kept org into the registry, then lets each one's processing mode
    /// take up what was pending (a delayed org imports it after its delay). No directory
    /// yet: nothing kept. Answers how many orgs came back; a file that cannot be read is an
    /// error naming it, and nothing is restored then.
    pub(crate) fn restore(&self) -> Result<usize, String> {
        let entries = match std::fs::read_dir(&self.orgs_dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(error) => {
                return Err(format!(
                    "cannot list the embedded sandbox's kept organizations in {}: {error}",
                    self.orgs_dir.display()
                ))
            }
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| {
                path.extension()
                    .is_some_and(|extension| extension == "json")
            })
            .collect();
        paths.sort();
        let unreadable = |path: &Path, reason: String| {
            format!(
                "the embedded sandbox's kept organization {} cannot be read ({reason}); \
                 Steward does not start with part of the simulated CRM missing: restore the file, \
                 or move it away to go on without that organization",
                path.display()
            )
        };
        let mut orgs = Vec::with_capacity(paths.len());
        for path in &paths {
            let bytes = std::fs::read(path).map_err(|error| unreadable(path, error.to_string()))?;
            orgs.push(deserialize_org(&bytes).map_err(|reason| unreadable(path, reason))?);
        }
        let mut restored = Vec::with_capacity(orgs.len());
        for org in orgs {
            let id = org.spec.id.clone();
            let org = self.registry.restore(org).map_err(|_| {
                format!(
                    "two kept files in {} hold organization {id:?}",
                    self.orgs_dir.display()
                )
            })?;
            let (gifts, pending) = {
                let state = org.lock();
                (state.gifts.records.len(), state.pending.len())
            };
            tracing::info!(org = %id, gifts, pending, "sandbox organization restored");
            restored.push(org);
        }
        for org in &restored {
            let has_pending = !org.lock().pending.is_empty();
            if has_pending {
                follow_processing_mode(org, &self.registry);
            }
        }
        Ok(restored.len())
    }

    /// Writes every org changed since its last write. A write that fails is logged and the
    /// org stays marked (tried again at the next change or stop); the last error is answered.
    pub(crate) async fn save_changed(&self) -> Result<(), String> {
        let _one_at_a_time = self.saving.lock().await;
        let mut last_error = Ok(());
        for org in self.registry.all() {
            if !org.take_unsaved() {
                continue;
            }
            let path = self.orgs_dir.join(file_name(&org.spec.id));
            let contents = serialize_org(&org, &org.lock());
            let written = match contents {
                Ok(contents) => {
                    let dir = self.orgs_dir.clone();
                    let target = path.clone();
                    tokio::task::spawn_blocking(move || {
                        std::fs::create_dir_all(&dir)?;
                        write_atomically(&target, &contents)
                    })
                    .await
                    .unwrap_or_else(|join_error| Err(std::io::Error::other(join_error)))
                    .map_err(|error| error.to_string())
                }
                Err(error) => Err(error.to_string()),
            };
            if let Err(error) = written {
                tracing::warn!(org = %org.spec.id, path = %path.display(), error = %error, "sandbox organization not saved; will try again");
                self.registry.note_change(&org);
                last_error = Err(format!("{}: {error}", path.display()));
            }
        }
        last_error
    }

    /// The saver: after each change, waits `SAVE_AFTER_MS` (or `SAVE_PAUSE_FACTOR` times the
    /// last save, if longer), then writes what changed.
    pub(crate) fn spawn_saver(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let keeper = Arc::clone(self);
        actix_web::rt::spawn(async move {
            let mut pause = Duration::from_millis(SAVE_AFTER_MS);
            loop {
                keeper.registry.changes.notified().await;
                actix_web::rt::time::sleep(pause).await;
                let started = std::time::Instant::now();
                // Failures are logged per org; the org is tried again after the next change.
                let _ = keeper.save_changed().await;
                pause =
                    Duration::from_millis(SAVE_AFTER_MS).max(started.elapsed() * SAVE_PAUSE_FACTOR);
            }
        })
    }
}

/// Gives the subscriptions of `org` that came back from disk without a secret this one
/// again (the embedded mode knows the secret its tenant registered with).
pub(crate) fn restore_webhook_secret(org: &Org, secret: &str) {
    let mut state = org.lock();
    for subscription in state.webhooks.records.values_mut() {
        if !subscription.doc.contains_key("secret") {
            subscription
                .doc
                .insert("secret".into(), Value::String(secret.to_owned()));
        }
    }
}

#[cfg(test)]
#[path = "persist_tests.rs"]
mod tests;
