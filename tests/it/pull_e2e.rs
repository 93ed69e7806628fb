//! Pull end to end (issue 13): Virtuous changes made by other tools and by staff reach every
//! destination of a tenant — a partner webhook, Postgres and NDJSON files — at their latest
//! version, with deletes applied and no older version ever shown after a newer one, though
//! the sandbox drops 30 % of the create/update webhooks and delivers the rest out of order.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::wait_until;
use crate::confirm_support::{api_key, create_org, sandbox_stats};
use crate::pg_support::{unique_schema, PgCluster};
use crate::pull_support::*;

const CONVERGE: Duration = Duration::from_secs(90);

#[actix_rt::test]
async fn pull_e2e_every_destination_gets_every_latest_version_despite_dropped_webhooks() {
    // Goal: 500 (full: 2,000) staff edits of gifts and contacts (updates, deletes) over
    // records another tool imported, with 30 % of create/update webhooks dropped and the rest
    // reordered → after a backstop poll, the partner webhook, Postgres and NDJSON each hold
    // every record at its latest version with deletes applied, and none ever went back.
    let started = Instant::now();
    let (records, edit_count) = (sized(100, 300), sized(500, 2_000));
    let id = "pull-e2e";
    let app = spawn_engine(&[]).await;
    let client = app.client.clone();
    let sandbox_url = app.sandbox_url();
    create_org(
        &app,
        id,
        json!({"hourly_limit": 36_000, "webhook_drop_pct": 30, "webhook_reorder": true, "seed": 13}),
    )
    .await;
    let (partner, partner_url) = start_partner();
    let files = tempfile::tempdir().unwrap();
    let schema = unique_schema("pull_e2e");
    let cluster = PgCluster::shared();
    app.create_tenant(&pull_tenant(
        id,
        json!({"events": ["gift", "contact"], "destinations": {
            "partner": {"kind": "webhook", "url": partner_url, "secret": PARTNER_SECRET, "max_per_s": 1000},
            "warehouse": {"kind": "postgres", "dsn": cluster.dsn(), "schema": schema},
            "files": ndjson_destination(files.path(), 16_384),
        }}),
    ))
    .await;
    wait_for_subscription(&client, &sandbox_url, id, &["giftDelete", "contactDelete"]).await;

    import_gifts(
        &client,
        &sandbox_url,
        id,
        &api_key(id),
        OTHER_TOOL,
        "e2e-",
        records,
    )
    .await;
    let (gifts, contacts) = sandbox_ids(&client, &sandbox_url, id).await;
    assert_eq!((gifts.len(), contacts.len()), (records, records));
    let mut plan = EditPlan::new(13, gifts, contacts);
    let mut sent = 0;
    while sent < edit_count {
        let edits = plan.next_edits(50.min(edit_count - sent));
        let answered = staff_edits(&client, &sandbox_url, id, &edits).await;
        plan.applied(&edits, &answered);
        sent += edits.len();
    }
    let report = backstop_now(&app, id).await;
    let expected = sandbox_latest(&client, &sandbox_url, id, &plan.deleted).await;
    let deletes = expected.values().filter(|(_, deleted)| *deleted).count();

    let postgres = cluster.connect().await;
    wait_for_state(CONVERGE, "NDJSON files", &expected, || async {
        ndjson_seen(files.path()).last
    })
    .await;
    wait_for_state(CONVERGE, "Postgres rows", &expected, || {
        pg_state(&postgres, &schema)
    })
    .await;
    wait_for_state(CONVERGE, "partner webhooks", &expected, || async {
        partner.seen().last
    })
    .await;

    let ndjson = ndjson_seen(files.path());
    let webhooks = partner.seen();
    assert!(
        ndjson.regressions.is_empty(),
        "NDJSON went back: {:?}",
        ndjson.regressions
    );
    assert!(
        webhooks.regressions.is_empty(),
        "webhooks went back: {:?}",
        webhooks.regressions
    );
    assert_eq!(
        partner
            .bad_signatures
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    let stats = sandbox_stats(&app, id).await;
    let dropped = stats["webhooks_dropped"].as_u64().unwrap();
    assert!(dropped > 0, "the sandbox dropped webhooks: {stats}");
    assert!(
        report["logged"].as_u64() > Some(0),
        "the backstop poll logged what the dropped webhooks lost: {report}"
    );
    assert!(deletes > 0, "the edits deleted records");
    let list = destinations(&app, id).await;
    for name in ["partner", "warehouse", "files"] {
        let destination = destination(&list, name);
        assert_eq!(destination["dead_lettered"], 0, "{destination}");
        assert_eq!(destination["pending"], 0, "{destination}");
    }
    eprintln!(
        "pull_e2e: {} records ({deletes} deleted), {edit_count} edits, {dropped} webhooks dropped, \
         backstop logged {}, NDJSON {} lines, webhook {} posts, {:.1}s",
        expected.len(),
        report["logged"],
        ndjson.items,
        webhooks.items,
        started.elapsed().as_secs_f64()
    );
}

/// The edits of projects, events and contact notes: creates, two rounds of updates, then
/// deletes of the first two of each kind; each record's latest state.
async fn other_kind_edits(
    client: &reqwest::Client,
    sandbox_url: &str,
    org: &str,
) -> BTreeMap<Key, State> {
    let kinds = ["project", "event", "contact_note"];
    let mut latest = BTreeMap::new();
    let creates: Vec<Value> = kinds
        .iter()
        .flat_map(|kind| {
            (0..4).map(move |n| {
                let changes = match *kind {
                    "project" => json!({"name": format!("Project {n}"), "code": format!("PRJ{n}")}),
                    "event" => json!({"name": format!("Gala {n}")}),
                    _ => json!({"contactId": 1 + n, "note": format!("note {n}")}),
                };
                json!({"kind": kind, "changes": changes})
            })
        })
        .collect();
    let created = staff_edits(client, sandbox_url, org, &creates).await;
    let mut ids: Vec<(String, u64)> = Vec::new();
    for (edit, record) in creates.iter().zip(&created) {
        let kind = edit["kind"].as_str().unwrap().to_string();
        let id = record["id"].as_u64().unwrap();
        latest.insert((kind.clone(), id.to_string()), (version_ms(record), false));
        ids.push((kind, id));
    }
    for round in 0..2 {
        let updates: Vec<Value> = ids
            .iter()
            .map(|(kind, id)| {
                let changes = match kind.as_str() {
                    "contact_note" => json!({"note": format!("note {id} round {round}")}),
                    _ => json!({"name": format!("{kind} {id} round {round}")}),
                };
                json!({"kind": kind, "id": id, "changes": changes})
            })
            .collect();
        let answered = staff_edits(client, sandbox_url, org, &updates).await;
        for ((kind, id), record) in ids.iter().zip(&answered) {
            latest.insert((kind.clone(), id.to_string()), (version_ms(record), false));
        }
    }
    let deletes: Vec<Value> = ids
        .iter()
        .filter(|(kind, id)| ids.iter().filter(|(k, i)| k == kind && i < id).count() < 2)
        .map(|(kind, id)| json!({"kind": kind, "id": id, "delete": true}))
        .collect();
    let answered = staff_edits(client, sandbox_url, org, &deletes).await;
    for (edit, record) in deletes.iter().zip(&answered) {
        let key = (
            edit["kind"].as_str().unwrap().to_string(),
            edit["id"].to_string(),
        );
        latest.insert(key, (version_ms(record), true));
    }
    latest
}

#[actix_rt::test]
async fn pull_e2e_projects_events_and_contact_notes_reach_ndjson() {
    // Goal: staff creates, updates and deletes of projects, events and contact notes (all
    // webhooks delivered) reach an NDJSON destination: each record's newest line is its latest
    // version, deletes as `delete` lines, never going back.
    let id = "pull-kinds";
    let app = spawn_engine(&[]).await;
    let client = app.client.clone();
    let sandbox_url = app.sandbox_url();
    create_org(&app, id, json!({"hourly_limit": 36_000})).await;
    let files = tempfile::tempdir().unwrap();
    app.create_tenant(&pull_tenant(
        id,
        json!({"events": ["project", "event", "contact_note"],
               "destinations": {"files": ndjson_destination(files.path(), 1_024)}}),
    ))
    .await;
    wait_for_subscription(
        &client,
        &sandbox_url,
        id,
        &["projectDelete", "eventDelete", "contactNoteDelete"],
    )
    .await;
    let expected = other_kind_edits(&client, &sandbox_url, id).await;
    wait_for_state(CONVERGE, "NDJSON files", &expected, || async {
        ndjson_seen(files.path()).last
    })
    .await;
    let lines = ndjson_lines(files.path());
    let seen = ndjson_seen(files.path());
    assert!(seen.regressions.is_empty(), "{:?}", seen.regressions);
    for kind in ["project", "event", "contact_note"] {
        let ops: BTreeSet<&str> = lines
            .iter()
            .filter(|line| line["kind"] == kind)
            .map(|line| line["op"].as_str().unwrap())
            .collect();
        assert_eq!(ops, BTreeSet::from(["upsert", "delete"]), "{kind}");
    }
    // The record a line carries is the record as Virtuous sent it.
    let renamed = lines
        .iter()
        .rev()
        .find(|line| line["kind"] == "project" && line["op"] == "upsert")
        .unwrap();
    assert!(
        renamed["record"]["name"]
            .as_str()
            .is_some_and(|name| name.ends_with("round 1")),
        "{renamed}"
    );
}

#[actix_rt::test]
async fn pull_e2e_include_own_decides_whether_our_own_writes_are_delivered() {
    // Goal: gifts naming the tenant's own Stripe transaction source are kept out of the
    // destination with `include_own: false` (counted as own_skipped) and delivered, marked
    // `own`, with `include_own: true`; gifts of another tool reach both.
    let app = spawn_engine(&[]).await;
    let client = app.client.clone();
    let sandbox_url = app.sandbox_url();
    let mut dirs = Vec::new();
    for (id, include_own) in [("pull-own-off", false), ("pull-own-on", true)] {
        create_org(&app, id, json!({"hourly_limit": 36_000})).await;
        let files = tempfile::tempdir().unwrap();
        app.create_tenant(&pull_tenant(
            id,
            json!({"events": ["gift"], "include_own": include_own,
                   "destinations": {"files": ndjson_destination(files.path(), 1_024)}}),
        ))
        .await;
        dirs.push((id, include_own, files));
    }
    for (id, _, _) in &dirs {
        wait_for_subscription(&client, &sandbox_url, id, &["giftCreate"]).await;
        // Our own writes (the tenant's Stripe source), then another tool's.
        import_gifts(&client, &sandbox_url, id, &api_key(id), "Stripe", "own-", 5).await;
        import_gifts(
            &client,
            &sandbox_url,
            id,
            &api_key(id),
            OTHER_TOOL,
            "other-",
            5,
        )
        .await;
    }
    for (id, include_own, files) in &dirs {
        let gifts = sandbox(
            &app,
            Method::GET,
            &format!("/_sandbox/orgs/{id}/gifts"),
            None,
        )
        .await;
        let mut own = BTreeSet::new();
        let mut expected = BTreeMap::new();
        for gift in gifts.as_array().unwrap() {
            let key = ("gift".to_string(), gift["id"].to_string());
            if gift["transactionSource"] == "Stripe" {
                own.insert(key.1.clone());
                if !include_own {
                    continue;
                }
            }
            expected.insert(key, (version_ms(gift), false));
        }
        assert_eq!(own.len(), 5);
        wait_for_state(CONVERGE, &format!("{id}: NDJSON"), &expected, || async {
            ndjson_seen(files.path()).last
        })
        .await;
        // Everything logged has been through the loop (nothing pending), so nothing more
        // can come.
        let destination = wait_until_idle(&app, id, "files", 10).await;
        let lines = ndjson_lines(files.path());
        assert_eq!(
            differences(&expected, &ndjson_seen(files.path()).last),
            Vec::<String>::new()
        );
        for line in &lines {
            let is_own = own.contains(line["id"].as_str().unwrap());
            assert_eq!(line["own"], is_own, "{line}");
        }
        if *include_own {
            assert_eq!(destination["own_skipped"], 0, "{destination}");
        } else {
            assert_eq!(destination["own_skipped"], 5, "{destination}");
        }
    }
}

/// Waits until destination `name` has nothing pending after a log holding at least `logged`
/// changes; the destination as listed.
async fn wait_until_idle(app: &crate::common::TestApp, id: &str, name: &str, logged: u64) -> Value {
    crate::common::wait_until(CONVERGE, format!("{id}/{name} idle"), || async {
        let destination = destination(&destinations(app, id).await, name);
        (destination["pending"] == 0 && destination["head"].as_u64() >= Some(logged))
            .then_some(destination)
    })
    .await
}

#[actix_rt::test]
async fn pull_e2e_a_patch_that_leaves_pull_alone_keeps_the_destination_running() {
    // Goal: an unrelated PATCH (the tenant's name) neither rebuilds the NDJSON destination nor restarts its loop — its unfinished file keeps its identity, inode and birth time (a restart deletes it and writes it again) — while a PATCH of the pull block does rebuild it.
    use std::os::unix::fs::MetadataExt;
    let identity = |metadata: &std::fs::Metadata| (metadata.ino(), metadata.created().ok());
    let id = "pull-patch";
    let app = spawn_engine(&[]).await;
    let client = app.client.clone();
    let sandbox_url = app.sandbox_url();
    create_org(&app, id, json!({"hourly_limit": 36_000})).await;
    let files = tempfile::tempdir().unwrap();
    let destination = json!({"kind": "ndjson", "dir": files.path().to_str().unwrap(),
                             "rotate_bytes": 1_048_576, "rotate_s": 3_600});
    app.create_tenant(&pull_tenant(
        id,
        json!({"poll_interval_s": 0, "destinations": {"files": destination}}),
    ))
    .await;
    wait_for_subscription(&client, &sandbox_url, id, &["giftCreate", "giftDelete"]).await;
    import_gifts(&client, &sandbox_url, id, &api_key(id), "OtherTool", "p", 3).await;
    let partial = files.path().join(".steward-files.partial");
    let inode = wait_until(CONVERGE, "the unfinished NDJSON file", || async {
        let metadata = std::fs::metadata(&partial).ok()?;
        (metadata.len() > 0).then(|| identity(&metadata))
    })
    .await;
    let patch = |body: Value| {
        let app = &app;
        async move {
            let response = app
                .admin(Method::PATCH, &format!("/v1/tenants/{id}"))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
        }
    };
    patch(json!({"name": "Renamed"})).await;
    // Deliberate: several Inbound ticks (a restart would happen on the first one).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let kept = std::fs::metadata(&partial).expect("the unfinished file is still there");
    assert_eq!(
        identity(&kept),
        inode,
        "an unrelated PATCH restarted the destination"
    );
    patch(json!({"pull": {"include_own": true}})).await;
    wait_until(
        CONVERGE,
        "the rebuilt destination's new unfinished file",
        || async {
            let metadata = std::fs::metadata(&partial).ok()?;
            (identity(&metadata) != inode && metadata.len() > 0).then_some(())
        },
    )
    .await;
}
