//! Listing jobs (a source's listing through its poller): their spec against the tenant's
//! polled sources, and the one classifier of a listed record.

use jiff::tz::TimeZone;
use serde_json::{json, Value};
use steward_actors::backfill::{BackfillFiles, Cursor, MoneyFact, RowOutcome};
use steward_actors::ports::PolledItem;
use steward_actors::store::{Lane, NewEntry, RecordKind};

use super::test_support::*;
use super::{validate_spec, SpecError, NOTHING_TO_SEND};
use crate::sources::constant_contact::mapping::contact_item;
use crate::sources::platform::{self, PlatformMapped};
use crate::tenant::TenantDoc;

/// 2024-01-01T00:00:00Z and 2025-01-01T00:00:00Z.
const FROM_MS: u64 = 1_704_067_200_000;
const TO_MS: u64 = 1_735_689_600_000;

fn refusal(doc: &TenantDoc, source: &str, from_ms: u64, to_ms: u64, label: &str) -> SpecError {
    validate_spec(doc, &listing_spec(source, from_ms, to_ms, label)).unwrap_err()
}

#[test]
fn a_listing_reads_a_source_the_tenant_polls() {
    // Goal: Constant Contact, a platform with `poll` and Mailchimp's members pass; a platform
    // without `poll`, Stripe or an unknown name are refused naming `source` and listing the
    // polled ones; a tenant that polls nothing says so.
    let tenant = polled_doc();
    for source in ["constant_contact", "gala-co", "mailchimp"] {
        validate_spec(&tenant, &listing_spec(source, FROM_MS, TO_MS, "history")).unwrap();
    }
    for source in ["auction-co", "stripe", "paypal"] {
        let refused = refusal(&tenant, source, FROM_MS, TO_MS, "history");
        assert_eq!(refused.path, "source", "{source}");
        assert!(
            refused
                .message
                .contains("polled: constant_contact, gala-co, mailchimp, events-db"),
            "{refused}"
        );
    }
    // A Postgres source is polled but has no listing: its snapshot is the history.
    let postgres = refusal(&tenant, "events-db", FROM_MS, TO_MS, "history");
    assert_eq!(postgres.path, "source");
    assert!(postgres.message.contains("snapshotted"), "{postgres}");
    let nothing_polled = refusal(&doc(), "constant_contact", FROM_MS, TO_MS, "history");
    assert_eq!(nothing_polled.path, "source");
    assert!(
        nothing_polled.message.contains("polls no source"),
        "{nothing_polled}"
    );
}

#[test]
fn a_listing_has_a_label_a_window_and_no_file_fields() {
    // Goal: an empty label names `label`; a window whose start is not before its end names
    // `from`; a file's format or mapping on a listing names `format`.
    let tenant = polled_doc();
    assert_eq!(
        refusal(&tenant, "gala-co", FROM_MS, TO_MS, " ").path,
        "label"
    );
    assert_eq!(
        refusal(&tenant, "gala-co", TO_MS, FROM_MS, "l").path,
        "from"
    );
    assert_eq!(
        refusal(&tenant, "gala-co", FROM_MS, FROM_MS, "l").path,
        "from"
    );
    let mut with_mapping = listing_spec("gala-co", FROM_MS, TO_MS, "l");
    with_mapping.mapping_json = "\"stripe_payments_export\"".into();
    let refused = validate_spec(&tenant, &with_mapping).unwrap_err();
    assert_eq!(refused.path, "format");
}

#[test]
fn the_polled_sources_are_the_keys_of_the_tenant_s_pollers() {
    // Goal: the sources a listing may name are exactly the slots' keys pollers_for builds
    // from the same document, in its order.
    let dir = tempfile::tempdir().unwrap();
    let store = steward_actors::store::Store::open(
        &dir.path().join("store"),
        steward_actors::store::StoreOptions::default(),
    )
    .unwrap();
    let (master_key, _) =
        steward_actors::store::MasterKey::load_or_create(dir.path(), None).unwrap();
    let context = crate::sources::polling::PollContext {
        tenant_id: "t1".into(),
        http: crate::sources::polling::shared_http(),
        sandbox_base_url: None,
        store: store.clone(),
        tenant_store: store.tenant("t1").unwrap(),
        master_key,
    };
    let tenant = polled_doc();
    let (specs, errors) = crate::sources::polling::pollers_for(&context, &tenant);
    assert!(errors.is_empty(), "{errors:?}");
    let keys: Vec<String> = specs
        .iter()
        .map(|spec| spec.settings.source.clone())
        .collect();
    assert_eq!(crate::sources::polling::polled_sources(&tenant), keys);
    assert_eq!(
        keys,
        ["constant_contact", "gala-co", "mailchimp", "events-db"]
    );
}

/// A gala-co listing item of donation `donation_id`, its entries made as the platform's
/// poller makes them (the live webhook mapping, dated by the item's update time).
fn listed_donation(tenant: &TenantDoc, donation_id: &str) -> (Value, NewEntry) {
    let item = json!({"id": format!("item-{donation_id}"), "type": "donation.completed",
        "updated_at": "2024-11-05T18:31:00Z", "data": {
        "donation_id": donation_id, "amount": 123_456, "currency": "usd",
        "paid_at": "2024-11-05T18:30:00Z", "donor": {"email": "ada@example.org"}}});
    let settings = &tenant.sources.platforms["gala-co"];
    let event = platform::event_from_value(settings, item.clone(), "/id").unwrap();
    let mapped = platform::map_event("gala-co", settings, &event, &TimeZone::UTC, 1_730_831_460);
    let Ok(PlatformMapped::Command(command)) = mapped else {
        panic!("the donation maps to a gift: {mapped:?}");
    };
    (item, command.into_new_entry(NOW_MS))
}

/// A Constant Contact contact as its poller lists it.
fn listed_contact() -> PolledItem {
    let contact = json!({"contact_id": "cc-7", "updated_at": "2024-06-01T09:00:00Z",
        "email_address": {"address": "ada@example.org", "permission_to_send": "implicit"},
        "first_name": "Ada", "last_name": "Lovelace"});
    contact_item(&contact, "Constant Contact", NOW_MS)
}

fn body_of(entry: &NewEntry) -> Value {
    serde_json::from_str(&entry.fact.body_json).unwrap()
}

#[test]
fn a_listed_record_is_its_live_entries_in_the_backfill_lane_with_the_label_on_gifts() {
    // Goal: a record's entries keep the live keys and bodies, move to the `backfill` lane,
    // and only the gift's body gets `batch` (the job's label, trimmed); its money is the
    // gift's, whatever the entry's position.
    let tenant = polled_doc();
    let files = files(std::path::Path::new("/nonexistent"), tenant.clone());
    let (_, gift) = listed_donation(&tenant, "don_42");
    let contact = listed_contact().entries.unwrap().remove(0);
    let item = PolledItem {
        record_id: "item-don_42".into(),
        version_ms: 1_730_831_460_000,
        entries: Ok(vec![contact.clone(), gift.clone()]),
    };
    let spec = listing_spec("gala-co", FROM_MS, TO_MS, " Gala history ");
    let RowOutcome::Payment {
        entries,
        alerts,
        money,
    } = files.classify_listed(&spec, item)
    else {
        panic!("a payment");
    };
    assert!(alerts.is_empty());
    assert_eq!(entries.len(), 2);
    for (listed, live) in entries.iter().zip([&contact, &gift]) {
        assert_eq!(listed.fact.lane, Lane::Backfill);
        assert_eq!(live.fact.lane, Lane::Live);
        assert_eq!(listed.fact.idempotency_key, live.fact.idempotency_key);
        assert_eq!(listed.fact.source_id, live.fact.source_id);
    }
    assert_eq!(entries[0].fact.kind, RecordKind::Contact);
    assert_eq!(
        body_of(&entries[0]),
        body_of(&contact),
        "no batch on a contact"
    );
    let mut gift_body = body_of(&entries[1]);
    assert_eq!(gift_body["batch"], json!("Gala history"));
    gift_body.as_object_mut().unwrap().remove("batch");
    assert_eq!(gift_body, body_of(&gift), "the live body, plus batch");
    assert_eq!(
        money,
        Some(MoneyFact {
            transaction_id: "don_42".into(),
            day: "2024-11-05".into(),
            project: String::new(),
            amount_minor: 123_456,
            currency: "usd".into(),
        })
    );
    let contact_only = files.classify_listed(
        &listing_spec("constant_contact", FROM_MS, TO_MS, "cc"),
        listed_contact(),
    );
    let RowOutcome::Payment { entries, money, .. } = contact_only else {
        panic!("a contact is a row with entries");
    };
    assert_eq!((entries.len(), money), (1, None), "no gift, no money");
    assert_eq!(entries[0].fact.lane, Lane::Backfill);
}

#[test]
fn a_record_the_poller_could_not_map_is_rejected_by_id_and_one_with_nothing_is_skipped() {
    // Goal: the poller's reason becomes a reject naming the record; an item with no entries
    // (nothing to send) is skipped with that reason.
    let files = files(std::path::Path::new("/nonexistent"), polled_doc());
    let spec = listing_spec("gala-co", FROM_MS, TO_MS, "l");
    let unmapped = PolledItem {
        record_id: "item-9".into(),
        version_ms: FROM_MS + 1,
        entries: Err("no amount at `/data/amount`".into()),
    };
    let outcome = files.classify_listed(&spec, unmapped);
    let RowOutcome::Rejected { reason } = outcome else {
        panic!("rejected: {outcome:?}");
    };
    assert_eq!(reason, "record item-9: no amount at `/data/amount`");
    let empty = PolledItem {
        record_id: "item-10".into(),
        version_ms: FROM_MS + 1,
        entries: Ok(Vec::new()),
    };
    let outcome = files.classify_listed(&spec, empty);
    let RowOutcome::Skipped { reason } = outcome else {
        panic!("skipped: {outcome:?}");
    };
    assert_eq!(reason, NOTHING_TO_SEND);
    assert_eq!(NOTHING_TO_SEND, "nothing to send");
}

#[test]
fn a_listing_job_has_no_file_to_open() {
    // Goal: opening a listing job as a file is a clear error, not a panic or a missing file.
    let files = files(std::path::Path::new("/nonexistent"), polled_doc());
    let spec = listing_spec("gala-co", FROM_MS, TO_MS, "l");
    let Err(error) = files.open("bf_abcdefghijkl", &spec, Cursor::default()) else {
        panic!("a listing job opened as a file");
    };
    assert!(error.contains("no file to open"), "{error}");
}
