//! The alert outbox: notices written with the alert change they tell of, the cooldown's
//! held resolve and its withdrawal, claims, the process's alerts, and the limit.

use super::alert_outbox::{NoticeEvent, NoticeOwner, NoticePolicy, NOTICES_PER_OWNER_MAX};
use super::{Store, StoreOptions, TenantStore};
use crate::test_support::registered_tenant;

const COOLDOWN_MS: u64 = 1_000;

fn open(dir: &std::path::Path, policy: Option<NoticePolicy>) -> Store {
    let options = StoreOptions {
        alert_notices: policy,
        ..StoreOptions::default()
    };
    Store::open(dir, options).unwrap()
}

fn notifying(dir: &std::path::Path) -> Store {
    open(
        dir,
        Some(NoticePolicy {
            cooldown_ms: COOLDOWN_MS,
        }),
    )
}

/// (event, code, not_before_ms) of each waiting notice, oldest first.
fn waiting(tenant: &TenantStore) -> Vec<(NoticeEvent, String, u64)> {
    tenant
        .alert_notices()
        .unwrap()
        .into_iter()
        .map(|queued| {
            let notice = queued.notice;
            (notice.event, notice.code, notice.not_before_ms)
        })
        .collect()
}

#[test]
fn an_alert_that_opens_queues_its_notice_in_the_same_write_and_survives_a_reopen_of_the_store() {
    // Goal: raising writes the alert and its `alert.raised` notice together (both are there
    // after the store is closed and opened again); a repeat while open queues nothing; without
    // a policy (no sink) nothing is queued at all.
    let dir = tempfile::tempdir().unwrap();
    {
        let store = notifying(dir.path());
        let tenant = registered_tenant(&store, "t1");
        assert!(tenant
            .raise_alert("crm_unreachable", "5 failures", 100)
            .unwrap());
        assert!(!tenant
            .raise_alert("crm_unreachable", "6 failures", 200)
            .unwrap());
        store.flush_blocking().unwrap();
    }
    let store = notifying(dir.path());
    let tenant = store.tenant("t1").unwrap();
    assert_eq!(tenant.alerts().unwrap()[0].count, 2);
    assert_eq!(
        waiting(&tenant),
        vec![(NoticeEvent::Raised, "crm_unreachable".into(), 100)]
    );
    let queued = &tenant.alert_notices().unwrap()[0];
    assert_eq!(queued.owner, NoticeOwner::Tenant("t1".into()));
    assert_eq!(queued.notice.message, "5 failures");
    assert!(
        store.alert_outbox().take_marked().is_empty(),
        "a new process marks nothing"
    );

    let quiet_dir = tempfile::tempdir().unwrap();
    let quiet = open(quiet_dir.path(), None);
    let tenant = registered_tenant(&quiet, "t1");
    assert!(tenant.raise_alert("dead_letters", "1", 1).unwrap());
    assert!(tenant.resolve_alert("dead_letters", 2).unwrap());
    assert!(waiting(&tenant).is_empty());
}

#[test]
fn a_resolve_is_held_for_the_cooldown_and_a_reopening_withdraws_it() {
    // Goal: the resolve waits until raise + cooldown; an alert reopening while it waits
    // withdraws it and sends no new raise (suppressed); once a resolve is claimed (being
    // sent) a reopening queues a new raise; resolving twice queues one resolve.
    let dir = tempfile::tempdir().unwrap();
    let store = notifying(dir.path());
    let tenant = registered_tenant(&store, "t1");
    let outbox = store.alert_outbox();
    tenant.raise_alert("dead_letters", "1 dead", 100).unwrap();
    assert_eq!(
        outbox.take_marked().into_iter().collect::<Vec<_>>(),
        vec![NoticeOwner::Tenant("t1".into())]
    );
    let raised = tenant.alert_notices().unwrap()[0].seq;
    store
        .remove_alert_notice(&NoticeOwner::Tenant("t1".into()), raised)
        .unwrap();

    assert!(tenant.resolve_alert("dead_letters", 300).unwrap());
    assert!(!tenant.resolve_alert("dead_letters", 301).unwrap());
    assert_eq!(
        waiting(&tenant),
        vec![(
            NoticeEvent::Resolved,
            "dead_letters".into(),
            100 + COOLDOWN_MS
        )]
    );
    // Reopened while the resolve waits: withdrawn, nothing new.
    assert!(tenant.raise_alert("dead_letters", "2 dead", 400).unwrap());
    assert!(waiting(&tenant).is_empty());
    assert!(!outbox.take_marked().is_empty(), "the dispatcher is told");

    // Resolved after the cooldown: due at once; claimed, it can no longer be withdrawn.
    assert!(tenant.resolve_alert("dead_letters", 5_000).unwrap());
    let resolve = tenant.alert_notices().unwrap()[0].clone();
    assert_eq!(resolve.notice.not_before_ms, 5_000);
    let claimed = store
        .claim_alert_notice(&resolve.owner, resolve.seq)
        .unwrap()
        .unwrap();
    assert!(claimed.claimed);
    assert!(tenant.raise_alert("dead_letters", "3 dead", 5_100).unwrap());
    assert_eq!(
        waiting(&tenant),
        vec![
            (NoticeEvent::Resolved, "dead_letters".into(), 5_000),
            (NoticeEvent::Raised, "dead_letters".into(), 5_100),
        ]
    );
    // A withdrawn notice cannot be claimed.
    tenant.resolve_alert("dead_letters", 5_200).unwrap();
    let held = tenant.alert_notices().unwrap().pop().unwrap();
    assert_eq!(held.notice.not_before_ms, 5_100 + COOLDOWN_MS);
    tenant.raise_alert("dead_letters", "4 dead", 5_300).unwrap();
    assert_eq!(
        store.claim_alert_notice(&held.owner, held.seq).unwrap(),
        None
    );
}

#[test]
fn process_alerts_have_their_own_outbox_and_the_scan_sees_every_registered_owner() {
    // Goal: a process alert opens, queues a notice with owner Process and resolves like a
    // tenant's; the full scan lists the process's and each registered tenant's notices, and
    // a deleted tenant's are gone with its data.
    let dir = tempfile::tempdir().unwrap();
    let store = notifying(dir.path());
    assert!(store
        .raise_process_alert("disk_nearly_full", "3% free", 10)
        .unwrap());
    assert!(!store
        .raise_process_alert("disk_nearly_full", "2% free", 20)
        .unwrap());
    let views = store.process_alert_views().unwrap();
    assert_eq!(
        (views[0].alert.count, views[0].state.resolved_at_ms),
        (2, None)
    );
    registered_tenant(&store, "a")
        .raise_alert("x", "m", 30)
        .unwrap();
    registered_tenant(&store, "b")
        .raise_alert("y", "m", 40)
        .unwrap();
    let owners: Vec<(NoticeOwner, String)> = store
        .all_alert_notices()
        .unwrap()
        .into_iter()
        .map(|queued| (queued.owner, queued.notice.code))
        .collect();
    assert_eq!(
        owners,
        vec![
            (NoticeOwner::Process, "disk_nearly_full".into()),
            (NoticeOwner::Tenant("a".into()), "x".into()),
            (NoticeOwner::Tenant("b".into()), "y".into()),
        ]
    );
    store.drop_tenant_data("b").unwrap();
    store.registry().remove("b").unwrap();
    assert_eq!(store.all_alert_notices().unwrap().len(), 2);
    assert_eq!(
        store
            .claim_alert_notice(&NoticeOwner::Tenant("b".into()), 1)
            .unwrap(),
        None
    );
    assert!(store.resolve_process_alert("disk_nearly_full", 50).unwrap());
    let process = store.alert_notices_of(&NoticeOwner::Process).unwrap();
    assert_eq!(process[1].notice.event, NoticeEvent::Resolved);
    assert_eq!(process[1].notice.not_before_ms, 10 + COOLDOWN_MS);
}

#[test]
fn a_full_outbox_drops_new_notices_and_keeps_the_alerts() {
    // Goal: an owner holds at most NOTICES_PER_OWNER_MAX notices; past it the alert still
    // opens but its notice is dropped, and its resolve is not queued either.
    let dir = tempfile::tempdir().unwrap();
    let store = notifying(dir.path());
    let tenant = registered_tenant(&store, "t1");
    for index in 0..NOTICES_PER_OWNER_MAX {
        tenant
            .raise_alert(&format!("code_{index}"), "m", 1)
            .unwrap();
    }
    assert!(tenant.raise_alert("one_too_many", "m", 2).unwrap());
    assert!(tenant.resolve_alert("one_too_many", 3).unwrap());
    let notices = tenant.alert_notices().unwrap();
    assert_eq!(notices.len(), NOTICES_PER_OWNER_MAX);
    assert!(notices
        .iter()
        .all(|queued| queued.notice.code != "one_too_many"));
}
