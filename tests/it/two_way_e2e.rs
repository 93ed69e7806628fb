//! Two-way sync end to end on loopback (docs/two-way.md): a partner platform and Virtuous
//! (both simulated in the embedded sandbox) paired through a running engine. Each echo layer
//! has a scenario only it catches; observe mode writes nothing; a conflict waits for a person.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::common::wait_until;
use crate::two_way_support::{
    conflicts, count, echoes_dropped, link, pair_view, seed_linked, spawn_engine, staff_edit,
    two_way_tenant, virtuous_by_partner, virtuous_field, virtuous_puts, wait_quiet, Partner,
    Sandbox, PAIR,
};

const QUIET: Duration = Duration::from_secs(60);

/// Waits until the Virtuous contact of `partner_id` has `field` = `value`.
async fn wait_virtuous(
    sandbox: &Sandbox,
    tenant: &str,
    partner_id: &str,
    field: &str,
    value: &str,
) {
    wait_until(
        Duration::from_secs(30),
        format!("Virtuous {partner_id}.{field} = {value}"),
        || async {
            let contacts = virtuous_by_partner(sandbox, tenant).await;
            (virtuous_field(contacts.get(partner_id)?, field) == json!(value)).then_some(())
        },
    )
    .await;
}

/// Waits until the partner contact `partner_id` has `field` = `value`.
async fn wait_partner(partner: &Partner, partner_id: &str, field: &str, value: &str) {
    wait_until(
        Duration::from_secs(30),
        format!("partner {partner_id}.{field} = {value}"),
        || async {
            let contacts = partner.contacts().await;
            (contacts.get(partner_id)?[field] == json!(value)).then_some(())
        },
    )
    .await;
}

#[actix_rt::test]
async fn each_echo_layer_drops_what_only_it_can_recognise() {
    // Goal: edits flow both ways once; our own writes coming back are dropped — by origin
    // (Virtuous names us), by the ledger (the partner echoes exactly), by the window (the
    // partner lower-cases the email it was given), by ownership (a partner edit of a field
    // Virtuous owns is put back) — and none is written again.
    let app = spawn_engine(&[]).await;
    let sandbox = Sandbox::embedded(&app);
    let tenant = "tw-layers";
    let partner = Partner::create(&app, &sandbox, "crm-layers", tenant, true).await;
    let fields =
        json!({"last_name": "virtuous_wins", "tags": "dont_sync", "subscribed": "dont_sync"});
    crate::two_way_support::create_tenant(
        &app,
        &sandbox,
        &two_way_tenant(tenant, &partner.api_url(), "on", fields),
    )
    .await;
    let linked = seed_linked(&app, &sandbox, tenant, &partner, 4).await;
    wait_quiet(&app, tenant, QUIET).await;

    // Origin: a partner edit goes to Virtuous; Virtuous's echo names us.
    let origin_before = echoes_dropped(&app, tenant, PAIR, "origin").await;
    let partner_writes = partner.api_writes().await;
    partner.edit("p0", json!({"first_name": "Anna"})).await;
    wait_virtuous(&sandbox, tenant, "p0", "first_name", "Anna").await;
    wait_quiet(&app, tenant, QUIET).await;
    assert!(
        echoes_dropped(&app, tenant, PAIR, "origin").await > origin_before,
        "Virtuous's echo dropped by origin"
    );
    assert_eq!(
        partner.api_writes().await,
        partner_writes,
        "the echo was not written back"
    );

    // Ledger: a staff edit goes to the partner; the partner's webhook echoes it exactly.
    let ledger_before = echoes_dropped(&app, tenant, PAIR, "ledger").await;
    let puts = virtuous_puts(&sandbox, tenant).await;
    staff_edit(&sandbox, tenant, &[(linked["p1"], "first_name", "Bert")]).await;
    wait_partner(&partner, "p1", "first_name", "Bert").await;
    wait_quiet(&app, tenant, QUIET).await;
    assert!(
        echoes_dropped(&app, tenant, PAIR, "ledger").await > ledger_before,
        "the partner's echo dropped by the ledger"
    );
    assert_eq!(
        virtuous_puts(&sandbox, tenant).await,
        puts,
        "nothing written back to Virtuous"
    );

    // Window: the partner lower-cases the email it is given; the echo differs only in case.
    let window_before = echoes_dropped(&app, tenant, PAIR, "window").await;
    staff_edit(
        &sandbox,
        tenant,
        &[(linked["p2"], "email", "Carol.Mixed@Example.org")],
    )
    .await;
    wait_partner(&partner, "p2", "email", "carol.mixed@example.org").await;
    wait_quiet(&app, tenant, QUIET).await;
    assert!(
        echoes_dropped(&app, tenant, PAIR, "window").await > window_before,
        "the reformatted echo dropped by the window"
    );
    assert_eq!(
        virtuous_puts(&sandbox, tenant).await,
        puts,
        "the lower-cased form never went back"
    );
    let contacts = virtuous_by_partner(&sandbox, tenant).await;
    assert_eq!(
        virtuous_field(&contacts["p2"], "email"),
        json!("Carol.Mixed@Example.org")
    );

    // Ownership: Virtuous owns last names; a partner edit is put back, Virtuous unchanged.
    let ownership_before = echoes_dropped(&app, tenant, PAIR, "ownership").await;
    partner
        .edit("p3", json!({"last_name": "Partnerside"}))
        .await;
    wait_until(
        Duration::from_secs(30),
        "the partner's last name put back",
        || async {
            let contacts = partner.contacts().await;
            (contacts.get("p3")?["last_name"] == json!("Last3")).then_some(())
        },
    )
    .await;
    wait_quiet(&app, tenant, QUIET).await;
    assert!(echoes_dropped(&app, tenant, PAIR, "ownership").await > ownership_before);
    let contacts = virtuous_by_partner(&sandbox, tenant).await;
    assert_eq!(virtuous_field(&contacts["p3"], "last_name"), json!("Last3"));
    assert_eq!(
        virtuous_puts(&sandbox, tenant).await,
        puts,
        "Virtuous was never asked to change"
    );

    let metrics = app.metrics_text().await;
    for layer in ["origin", "ledger", "window", "ownership"] {
        let series = format!("steward_echoes_dropped_total{{layer=\"{layer}\"}}");
        assert!(metrics.contains(&series), "{series} in /metrics");
    }
    let view = pair_view(&app, tenant).await;
    assert_eq!(count(&view, "dead_letters"), 0, "{view}");
    let record = link(&app, tenant, "p0").await.expect("p0's link");
    assert_eq!(record["state"], "in_sync", "{record}");
    let states: Vec<&str> = record["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|transition| transition["state"].as_str())
        .collect();
    assert!(states.contains(&"virtuous_pending"), "history {states:?}");
}

#[actix_rt::test]
async fn both_sides_editing_a_shared_field_is_a_conflict_settled_by_a_person() {
    // Goal: a partner edit and a staff edit of the same field before either is written
    // open one conflict with both values; nothing is written for the field until a person
    // resolves it; the chosen value then reaches both sides.
    let app = spawn_engine(&[]).await;
    let sandbox = Sandbox::embedded(&app);
    let tenant = "tw-conflict";
    let partner = Partner::create(&app, &sandbox, "crm-conflict", tenant, false).await;
    let fields = json!({"tags": "dont_sync", "subscribed": "dont_sync"});
    crate::two_way_support::create_tenant(
        &app,
        &sandbox,
        &two_way_tenant(tenant, &partner.api_url(), "on", fields),
    )
    .await;
    let linked = seed_linked(&app, &sandbox, tenant, &partner, 2).await;
    wait_quiet(&app, tenant, QUIET).await;

    // Paused, the engine decides both edits but writes neither.
    let (status, _) = app
        .admin_call(Method::POST, &format!("/v1/tenants/{tenant}/pause"), None)
        .await;
    assert_eq!(status, 200);
    partner.edit("p0", json!({"first_name": "Pat"})).await;
    staff_edit(&sandbox, tenant, &[(linked["p0"], "first_name", "Vic")]).await;
    let conflict = wait_until(Duration::from_secs(30), "the conflict", || async {
        conflicts(&app, tenant).await.into_iter().find(|conflict| {
            conflict["partner_id"] == "p0"
                && conflict["field"] == "first_name"
                && conflict["partner"] == "Pat"
                && conflict["virtuous"] == "Vic"
        })
    })
    .await;
    app.admin_call(Method::POST, &format!("/v1/tenants/{tenant}/resume"), None)
        .await;
    wait_quiet(&app, tenant, QUIET).await;
    assert_eq!(
        partner.contacts().await["p0"]["first_name"],
        "Pat",
        "nothing written while in conflict"
    );
    let contacts = virtuous_by_partner(&sandbox, tenant).await;
    assert_eq!(virtuous_field(&contacts["p0"], "first_name"), json!("Vic"));
    assert_eq!(link(&app, tenant, "p0").await.unwrap()["state"], "conflict");

    // Bad resolutions change nothing.
    let id = conflict["id"].as_str().unwrap();
    let resolve = format!("/v1/tenants/{tenant}/conflicts/{id}/resolve");
    let (status, body) = app
        .admin_call(
            Method::POST,
            &resolve,
            Some(json!({"take": "value", "value": 7})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = app
        .admin_call(
            Method::POST,
            &format!("/v1/tenants/{tenant}/conflicts/nope/resolve"),
            Some(json!({"take": "partner"})),
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(conflicts(&app, tenant).await.len(), 1);

    let (status, body) = app
        .admin_call(Method::POST, &resolve, Some(json!({"take": "virtuous"})))
        .await;
    assert_eq!(status, 200, "{body}");
    wait_until(
        Duration::from_secs(30),
        "the resolution on the partner",
        || async {
            (partner.contacts().await.get("p0")?["first_name"] == json!("Vic")).then_some(())
        },
    )
    .await;
    wait_quiet(&app, tenant, QUIET).await;
    assert!(conflicts(&app, tenant).await.is_empty());
    assert_eq!(link(&app, tenant, "p0").await.unwrap()["state"], "in_sync");
    let view = pair_view(&app, tenant).await;
    assert_eq!(count(&view, "conflicts_opened"), 1, "{view}");
    assert_eq!(count(&view, "conflicts_resolved"), 1, "{view}");
}

#[actix_rt::test]
async fn observing_reports_what_would_be_written_and_writes_nothing_until_on() {
    // Goal: in `observe` a partner edit of a linked record is matched and reported, and
    // Virtuous is not changed; after a PATCH to `on` the next edit is written.
    let app = spawn_engine(&[]).await;
    let sandbox = Sandbox::embedded(&app);
    let tenant = "tw-observe";
    let partner = Partner::create(&app, &sandbox, "crm-observe", tenant, false).await;
    let fields = json!({"tags": "dont_sync", "subscribed": "dont_sync"});
    crate::two_way_support::create_tenant(
        &app,
        &sandbox,
        &two_way_tenant(tenant, &partner.api_url(), "observe", fields.clone()),
    )
    .await;
    seed_linked(&app, &sandbox, tenant, &partner, 2).await;
    wait_quiet(&app, tenant, QUIET).await;
    let puts = virtuous_puts(&sandbox, tenant).await;
    partner.edit("p1", json!({"first_name": "Olive"})).await;
    wait_until(
        Duration::from_secs(30),
        "the observed would-write",
        || async {
            let view = pair_view(&app, tenant).await;
            (count(&view, "would_write_virtuous") >= 1).then_some(())
        },
    )
    .await;
    wait_quiet(&app, tenant, QUIET).await;
    assert_eq!(
        virtuous_puts(&sandbox, tenant).await,
        puts,
        "observing writes nothing"
    );
    let contacts = virtuous_by_partner(&sandbox, tenant).await;
    assert_eq!(
        virtuous_field(&contacts["p1"], "first_name"),
        json!("First1")
    );
    assert_eq!(
        link(&app, tenant, "p1").await.unwrap()["state"],
        "virtuous_pending"
    );

    let (status, body) = app
        .admin_call(
            Method::PATCH,
            &format!("/v1/tenants/{tenant}"),
            Some(json!({"two_way": {PAIR: {"mode": "on"}}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    partner.edit("p1", json!({"first_name": "Olivia"})).await;
    wait_virtuous(&sandbox, tenant, "p1", "first_name", "Olivia").await;
    assert!(virtuous_puts(&sandbox, tenant).await > puts, "on: written");
}
