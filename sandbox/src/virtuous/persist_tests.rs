use std::time::{Duration, Instant};

use actix_web::web::Bytes;
use serde_json::json;
use tokio::sync::mpsc;

use super::*;
use crate::virtuous::import::{run_import, Selection};
use crate::virtuous::{Processing, SignatureEncoding};

const NOW: u64 = 1_700_000_000_000;

/// A fresh directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let path = std::env::temp_dir().join(format!(
            "steward-sandbox-{name}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn registry() -> Arc<Registry> {
    let (sender, _receiver) = mpsc::unbounded_channel();
    Arc::new(Registry::new(sender))
}

fn gift(transaction_id: &str) -> Bytes {
    Bytes::from(
        json!({"transactionSource": "Stripe", "transactionId": transaction_id, "amount": "10",
            "giftDate": "2026-11-26", "giftType": "Credit",
            "contact": {"email": "ann@example.org", "firstName": "Ann", "lastName": "Lee"}})
        .to_string(),
    )
}

/// An org with an imported gift and its contact, one gift pending, one in review, a
/// webhook subscription with a secret, a project and changed switches.
fn populated(registry: &Registry, spec: OrgSpec) -> Arc<Org> {
    registry.create(spec, false).unwrap();
    let org = registry.by_id("kept").unwrap();
    {
        let mut state = org.lock();
        state.accept(PendingKind::Gift, gift("pi_1"), NOW);
        run_import(&org.spec, &mut state, Selection::All, NOW);
        state.accept(PendingKind::Gift, gift("pi_2"), NOW + 1);
        state.accept(PendingKind::Gift, gift("pi_3"), NOW + 2);
        let in_review = state.pending.pop_back().unwrap();
        state.review.push(in_review);
        let id = state.webhooks.next_id();
        let subscription = json!({"payloadUrl": "http://127.0.0.1:9/hook", "secret": "shh-secret",
            "active": true, "giftCreate": true});
        state.webhooks.insert(Record::new(
            id,
            NOW,
            subscription.as_object().unwrap().clone(),
        ));
        let id = state.projects.next_id();
        let project = json!({"projectCode": "P1", "name": "Roof"});
        state
            .projects
            .insert(Record::new(id, NOW, project.as_object().unwrap().clone()));
        state.switches.webhook_drop_pct = 25.0;
    }
    registry.note_change(&org);
    org
}

#[actix_rt::test]
async fn a_kept_org_comes_back_whole_and_without_its_secrets() {
    // Goal: what a restart must keep (records, counters, pending and review queues, switches,
    // subscriptions) comes back from the file; the api key and subscription secrets are never
    // written, and come back only when given again.
    let dir = TempDir::new("whole");
    let before = registry();
    let spec = OrgSpec {
        hourly_limit: 777,
        webhook_signature_encoding: SignatureEncoding::Hex,
        processing: Processing::Delayed { delay_ms: 60_000 },
        ..OrgSpec::new("kept", "the-api-key-kept")
    };
    let org = populated(&before, spec.clone());
    let keeper = Keeper::new(&dir.0, Arc::clone(&before));
    keeper.save_changed().await.unwrap();
    let written = std::fs::read_to_string(dir.0.join("virtuous/kept.json")).unwrap();
    assert!(written.contains("pi_1"), "positive control: {written}");
    assert!(!written.contains("the-api-key-kept"), "api key written");
    assert!(
        !written.contains("shh-secret"),
        "subscription secret written"
    );
    assert!(!org.take_unsaved(), "saved: no longer marked");

    let after = registry();
    assert_eq!(Keeper::new(&dir.0, Arc::clone(&after)).restore(), Ok(1));
    let restored = after.by_id("kept").unwrap();
    assert_eq!(
        restored.spec,
        OrgSpec {
            api_key: String::new(),
            ..spec
        }
    );
    assert_eq!(restored.number, org.number);
    let (old, new) = (org.lock(), restored.lock());
    assert_eq!(new.switches, old.switches);
    let bodies = |items: &mut dyn Iterator<Item = &Pending>| -> Vec<(Bytes, u64, u64)> {
        items
            .map(|item| (item.body.clone(), item.received_ms, item.sequence))
            .collect()
    };
    assert_eq!(
        bodies(&mut new.pending.iter()),
        bodies(&mut old.pending.iter())
    );
    assert_eq!(
        bodies(&mut new.review.iter()),
        bodies(&mut old.review.iter())
    );
    assert_eq!(new.next_sequence, old.next_sequence);
    let gift_json = |state: &OrgState| {
        serde_json::to_value(state.gifts.records.values().collect::<Vec<_>>()).unwrap()
    };
    assert_eq!(gift_json(&new), gift_json(&old));
    assert!(
        new.gifts.exists("Stripe", "pi_1"),
        "the dedup index is rebuilt"
    );
    assert_eq!(new.gifts.last_id(), old.gifts.last_id());
    assert_eq!(
        new.contacts
            .by_email("ann@example.org")
            .map(|contact| contact.id),
        old.contacts
            .by_email("ann@example.org")
            .map(|contact| contact.id),
        "the matching indices are rebuilt"
    );
    assert_eq!(new.contacts.last_id(), old.contacts.last_id());
    assert_eq!(new.next_individual_id, old.next_individual_id);
    assert_eq!(
        new.projects.records[&1].text("projectCode").as_deref(),
        Some("P1")
    );
    assert_eq!(new.projects.peek_next_id(), 2);
    let subscription = &new.webhooks.records[&1];
    assert_eq!(subscription.doc.get("secret"), None);
    assert_eq!(subscription.doc["payloadUrl"], "http://127.0.0.1:9/hook");
    drop((old, new));

    // No key until the embedded mode gives it again; then the secret comes back too.
    assert!(after.by_api_key("the-api-key-kept").is_none());
    assert_eq!(after.rotate_api_key("kept", "the-api-key-kept"), Ok(true));
    assert!(after.by_api_key("the-api-key-kept").is_some());
    restore_webhook_secret(&restored, "shh-secret");
    assert_eq!(
        restored.lock().webhooks.records[&1].doc["secret"],
        "shh-secret"
    );
}

#[actix_rt::test]
async fn a_delayed_org_imports_what_was_pending_when_it_stopped() {
    // Goal: after a restart, transactions that were pending are imported by the org itself,
    // its delay after the start (no one calls the import step).
    let dir = TempDir::new("pending");
    let before = registry();
    let spec = OrgSpec {
        processing: Processing::Delayed { delay_ms: 50 },
        ..OrgSpec::new("kept", "k")
    };
    before.create(spec, false).unwrap();
    let org = before.by_id("kept").unwrap();
    org.lock()
        .accept(PendingKind::Gift, gift("pi_pending"), NOW);
    Keeper::new(&dir.0, before).save_changed().await.unwrap();

    let after = registry();
    let keeper = Arc::new(Keeper::new(&dir.0, Arc::clone(&after)));
    let _saver = keeper.spawn_saver();
    assert_eq!(keeper.restore(), Ok(1));
    let restored = after.by_id("kept").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while restored.lock().pending.len() == 1 {
        assert!(
            Instant::now() < deadline,
            "the pending gift was never imported"
        );
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(restored.lock().gifts.exists("Stripe", "pi_pending"));
    // The import is itself a change: the saver writes it, with nothing pending any more.
    let path = dir.0.join("virtuous/kept.json");
    loop {
        let written = std::fs::read_to_string(&path).unwrap();
        let saved: Value = serde_json::from_str(&written).unwrap();
        if saved["pending"] == json!([]) {
            assert_eq!(
                saved["gifts"]["records"][0]["doc"]["transactionId"],
                "pi_pending"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the import was never saved: {saved}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn a_kept_file_that_cannot_be_read_refuses_the_start() {
    // Goal: no directory yet is a first start (nothing kept); a damaged file, or one of
    // another format version, is an error naming it and restores nothing — never a silently
    // empty org.
    let dir = TempDir::new("corrupt");
    let fresh = registry();
    assert_eq!(Keeper::new(&dir.0, Arc::clone(&fresh)).restore(), Ok(0));

    let orgs_dir = dir.0.join("virtuous");
    std::fs::create_dir_all(&orgs_dir).unwrap();
    let good = serialize_org(
        &Org::new(
            OrgSpec::new("good", ""),
            1,
            OrgState::new(&OrgSpec::new("good", "")),
        ),
        &OrgState::new(&OrgSpec::new("good", "")),
    )
    .unwrap();
    std::fs::write(orgs_dir.join("good.json"), &good).unwrap();
    std::fs::write(orgs_dir.join("bad.json"), &good[..good.len() / 2]).unwrap();
    let registry_after = registry();
    let error = Keeper::new(&dir.0, Arc::clone(&registry_after))
        .restore()
        .unwrap_err();
    assert!(
        error.contains(&orgs_dir.join("bad.json").display().to_string()),
        "{error}"
    );
    assert!(error.contains("cannot be read"), "{error}");
    assert!(registry_after.all().is_empty(), "nothing restored");

    let mut newer: Value = serde_json::from_slice(&good).unwrap();
    newer["format_version"] = json!(2);
    std::fs::write(orgs_dir.join("bad.json"), newer.to_string()).unwrap();
    let error = Keeper::new(&dir.0, registry()).restore().unwrap_err();
    assert!(error.contains("format version 2"), "{error}");

    std::fs::remove_file(orgs_dir.join("bad.json")).unwrap();
    // A temporary file left by a crash mid-write is not an org.
    std::fs::write(orgs_dir.join("good.json.tmp"), b"half").unwrap();
    assert_eq!(Keeper::new(&dir.0, registry()).restore(), Ok(1));
}

#[test]
fn file_names_stay_in_the_directory() {
    // Goal: any org id maps to one plain file name, never a path elsewhere.
    assert_eq!(file_name("hope-shelter_2"), "hope-shelter_2.json");
    assert_eq!(file_name("../x y"), "%2E%2E%2Fx%20y.json");
    assert_eq!(file_name("é"), "%C3%A9.json");
}
