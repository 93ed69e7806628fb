//! Two-way with a Mailchimp audience, end to end (docs/two-way.md): member writes by
//! subscriber hash, the audience webhook told not to report API-made changes (so Steward's
//! writes come back only by polling, where the ledger drops them), and a user's edit in
//! Mailchimp reaching Virtuous.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{wait_until, TestApp};
use crate::poll_support::{last_run_number, poller_of, start_run_of, wait_run_finished_of, Sim};
use crate::two_way_support::{
    echoes_dropped, process, spawn_engine, staff_edit, virtuous_field, virtuous_puts, wait_quiet_of,
};

const MC_KEY: &str = "0123456789abcdef0123456789abcdef-us21";
const URL_KEY: &str = "two-way-hook-key";

async fn poll_once(app: &TestApp, tenant: &str) -> Value {
    let before = last_run_number(&poller_of(app, tenant, "mailchimp").await);
    assert!(
        start_run_of(app, tenant, "mailchimp").await,
        "a run was already in progress"
    );
    wait_run_finished_of(app, tenant, "mailchimp", before, Duration::from_secs(60)).await
}

/// Virtuous contacts by the Mailchimp member id (`unique_email_id`) their reference names.
async fn virtuous_by_member(sim: &Sim, tenant: &str) -> BTreeMap<String, Value> {
    let mut by_member = BTreeMap::new();
    for contact in sim.virtuous_contacts(tenant).await {
        for reference in contact["contactReferences"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if reference["source"] == "Mailchimp" {
                by_member.insert(
                    reference["id"].as_str().unwrap().to_string(),
                    contact.clone(),
                );
            }
        }
    }
    by_member
}

#[actix_rt::test]
async fn a_mailchimp_audience_syncs_both_ways_and_api_made_changes_come_back_only_by_polling() {
    let app = spawn_engine(&[]).await;
    let sandbox = crate::two_way_support::Sandbox::embedded(&app);
    let sim = Sim::new(&app.sandbox_url());
    let tenant = "tw-mailchimp";
    let account = format!("/_sandbox/mailchimp/accounts/{tenant}");
    sim.call(
        Method::POST,
        "/_sandbox/mailchimp/accounts",
        Some(json!({"id": tenant, "api_key": MC_KEY, "lists": ["aud"]})),
    )
    .await;
    let mut body = crate::common::tenant_body(tenant);
    body["budget"] = json!({"hourly_limit": 360_000, "reserve_pct": 10});
    body["sources"]["mailchimp"] = json!({"url_key": URL_KEY, "api_key": MC_KEY, "list_id": "aud",
                                          "base_url": "embedded"});
    body["two_way"] = json!({"mailchimp": {"mode": "on",
        "fields": {"tags": "dont_sync", "subscribed": "dont_sync"}}});
    crate::two_way_support::create_tenant(&app, &sandbox, &body).await;
    sim.call(
        Method::PUT,
        &format!("{account}/lists/aud/webhook"),
        Some(
            json!({"url": format!("{}/hooks/{tenant}/mailchimp?key={URL_KEY}", app.main_url),
                    "sources": {"user": true, "admin": true, "api": false}}),
        ),
    )
    .await;
    let added = sim
        .call(
            Method::POST,
            &format!("{account}/lists/aud/members"),
            Some(json!({"members": [
                {"email_address": "ann@example.org", "merge_fields": {"FNAME": "Ann", "LNAME": "Lee"}},
                {"email_address": "bo@example.org", "merge_fields": {"FNAME": "Bo", "LNAME": "Ray"}}]})),
        )
        .await;
    let hashes: Vec<String> = added["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().to_string())
        .collect();
    // One-way push creates them in Virtuous; the pair links each when Virtuous names it.
    let members = wait_until(
        Duration::from_secs(60),
        "both members in Virtuous",
        || async {
            process(&sandbox, tenant).await;
            let by_member = virtuous_by_member(&sim, tenant).await;
            (by_member.len() == 2).then_some(by_member)
        },
    )
    .await;
    let (ann_id, ann) = members
        .iter()
        .find(|(_, contact)| virtuous_field(contact, "first_name") == "Ann")
        .map(|(id, contact)| (id.clone(), contact["id"].as_u64().unwrap()))
        .unwrap();
    wait_until(Duration::from_secs(60), "Ann linked", || async {
        let (status, link) = app
            .admin_call(
                Method::GET,
                &format!("/v1/tenants/{tenant}/two-way/mailchimp/records/{ann_id}"),
                None,
            )
            .await;
        let link = link.get("link").cloned().unwrap_or(link);
        (status == 200 && link["virtuous_id"].is_string()).then_some(())
    })
    .await;
    wait_quiet_of(&app, tenant, "mailchimp", Duration::from_secs(60)).await;

    // A staff edit reaches the member by PUT; Mailchimp reports it to no webhook.
    sim.call(
        Method::POST,
        &format!("{account}/clock"),
        Some(json!({"advance_s": 5})),
    )
    .await;
    let puts = virtuous_puts(&sandbox, tenant).await;
    staff_edit(&sandbox, tenant, &[(ann, "first_name", "Annie")]).await;
    wait_until(
        Duration::from_secs(30),
        "FNAME written to Mailchimp",
        || async {
            let member: Value = app
                .client
                .get(format!(
                    "{}/mailchimp/3.0/lists/aud/members/{}",
                    app.sandbox_url(),
                    hashes[0]
                ))
                .basic_auth("steward", Some(MC_KEY))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (member["merge_fields"]["FNAME"] == "Annie").then_some(())
        },
    )
    .await;
    wait_quiet_of(&app, tenant, "mailchimp", Duration::from_secs(60)).await;
    let stats = sim
        .call(Method::GET, &format!("{account}/stats"), None)
        .await;
    assert!(stats["webhooks_source_off"].as_u64() >= Some(1), "{stats}");
    // The poll sees the API-made change: the ledger drops it; nothing goes back.
    let ledger_before = echoes_dropped(&app, tenant, "mailchimp", "ledger").await;
    let report = poll_once(&app, tenant).await;
    assert!(report["fetched"].as_u64() >= Some(1), "{report}");
    wait_until(
        Duration::from_secs(30),
        "the polled echo dropped",
        || async {
            (echoes_dropped(&app, tenant, "mailchimp", "ledger").await > ledger_before)
                .then_some(())
        },
    )
    .await;
    wait_quiet_of(&app, tenant, "mailchimp", Duration::from_secs(60)).await;
    assert_eq!(
        virtuous_puts(&sandbox, tenant).await,
        puts,
        "the echo never reached Virtuous"
    );

    // A user's edit in Mailchimp reaches Virtuous.
    sim.call(
        Method::POST,
        &format!("{account}/clock"),
        Some(json!({"advance_s": 5})),
    )
    .await;
    sim.call(
        Method::PATCH,
        &format!("{account}/lists/aud/members/{}", hashes[1]),
        Some(json!({"merge_fields": {"LNAME": "Rayburn"}})),
    )
    .await;
    wait_until(
        Duration::from_secs(30),
        "LNAME written to Virtuous",
        || async {
            let by_member = virtuous_by_member(&sim, tenant).await;
            by_member
                .values()
                .any(|contact| virtuous_field(contact, "last_name") == "Rayburn")
                .then_some(())
        },
    )
    .await;
    wait_quiet_of(&app, tenant, "mailchimp", Duration::from_secs(60)).await;
    assert_eq!(virtuous_puts(&sandbox, tenant).await, puts + 1);
}
