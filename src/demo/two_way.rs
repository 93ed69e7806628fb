//! The demo's pattern-4 part: a partner platform's contacts and Virtuous contacts kept equal
//! both ways.
//!
//! The partner (the embedded sandbox's partner platform) and Virtuous already hold people: some
//! the same (by email, in another case), one family email two partner records share, some on
//! one side only. The pair starts observing; a cross-match reports the groups, and the demo
//! approves it (link the matched, create the partner-only in Virtuous, keep the Virtuous-only
//! external). Then the pair goes `on`: a partner edit reaches Virtuous, a staff edit reaches
//! the partner, each write's echo comes back and is dropped, and an edit made on both sides
//! at once waits as a conflict until the demo resolves it. At the end every linked record's
//! names are checked equal on both sides.

use std::time::Instant;

use anyhow::{ensure, Context};
use reqwest::Method;
use serde_json::{json, Value};

use super::client::DemoClient;
use super::pull::wait;

const PLATFORM: &str = "crm";
const PAIR: &str = "platform:crm";
const REFERENCE_SOURCE: &str = "PartnerCRM";

/// Runs the two-way part on a running engine; the closing lines.
pub async fn run(
    client: &DemoClient,
    seed: u64,
    started: Instant,
    deadline: Instant,
) -> anyhow::Result<Vec<String>> {
    let progress = |message: String| {
        println!("[{:>5.1}s] {message}", started.elapsed().as_secs_f64());
    };
    let tenant = format!("demo-{seed}-twoway");
    let partner = format!("demo-{seed}-crm");
    let api_key = format!("vk_demo_{:016x}", rand::random::<u64>());
    let partner_token = format!("pt_demo_{:016x}", rand::random::<u64>());
    let partner_secret = format!("ps_demo_{:016x}", rand::random::<u64>());
    // Virtuous imports at once here, so the demo need not run the import step.
    client.create_immediate_org(&tenant, &api_key).await?;
    client
        .sandbox_call(
            Method::POST,
            "/_sandbox/partners",
            Some(json!({"id": partner, "api_token": partner_token,
                "webhook_url": format!("{}/hooks/{tenant}/platform/{PLATFORM}", client.main_url()),
                "webhook_secret": partner_secret})),
        )
        .await?;

    // What both sides hold before Steward is involved.
    let people = [
        ("ann", "Ann", "Lee"),
        ("bo", "Bo", "Ray"),
        ("cy", "Cy", "Diaz"),
        ("di", "Di", "Ng"),
    ];
    let mut partner_rows: Vec<Value> = people
        .iter()
        .map(|(id, first, last)| {
            json!({"id": id, "email": format!("{}@Example.org", id.to_uppercase()),
                   "first_name": first, "last_name": last})
        })
        .collect();
    partner_rows.push(json!({"id": "kim", "email": "family@example.org", "first_name": "Kim", "last_name": "Park"}));
    partner_rows.push(json!({"id": "lee", "email": "family@example.org", "first_name": "Lee", "last_name": "Park"}));
    partner_rows.push(
        json!({"id": "max", "email": "max@example.org", "first_name": "Max", "last_name": "Ode"}),
    );
    partner_rows.push(
        json!({"id": "noa", "email": "noa@example.org", "first_name": "Noa", "last_name": "Bell"}),
    );
    client
        .sandbox_call(
            Method::POST,
            &format!("/_sandbox/partners/{partner}/contacts"),
            Some(json!({"contacts": partner_rows, "quiet": true})),
        )
        .await?;
    let mut virtuous_rows: Vec<Value> = people
        .iter()
        .map(|(id, first, last)| {
            json!({"referenceSource": "DemoImport", "referenceId": format!("imp-{id}"),
                   "email": format!("{id}@example.org"), "firstName": first, "lastName": last})
        })
        .collect();
    virtuous_rows.push(
        json!({"referenceSource": "DemoImport", "referenceId": "imp-park",
        "email": "family@example.org", "firstName": "Pat", "lastName": "Park"}),
    );
    virtuous_rows.push(
        json!({"referenceSource": "DemoImport", "referenceId": "imp-ola",
        "email": "ola@example.org", "firstName": "Ola", "lastName": "Nord"}),
    );
    client
        .sandbox_api(
            &api_key,
            Method::POST,
            "/api/Contact/Batch",
            json!({"contacts": virtuous_rows}),
        )
        .await?;

    let mapping = json!({"kind": "contact", "fields": {"referenceId": "/data/id",
        "email": "/data/email", "firstName": "/data/first_name", "lastName": "/data/last_name"}});
    client
        .create_tenant(&json!({
            "id": tenant,
            "name": "Demo charity (two-way with its CRM)",
            "virtuous": {"base_url": "embedded", "api_key": api_key,
                         "webhook_secret": format!("vw_demo_{:016x}", rand::random::<u64>())},
            "budget": {"hourly_limit": 36_000, "burst_calls": 20},
            "sources": {"platforms": {PLATFORM: {"secret": partner_secret,
                "event_id": "/id", "event_type": "/type", "transaction_source": REFERENCE_SOURCE,
                "events": {"contact.created": mapping.clone(), "contact.updated": mapping}}}},
            "two_way": {PAIR: {"mode": "observe",
                "fields": {"email": "virtuous_wins", "tags": "dont_sync", "subscribed": "dont_sync"},
                "api": {"url": format!("embedded:/partners/{partner}"), "auth_header": "Authorization",
                        "auth_value": format!("Bearer {partner_token}")}}},
        }))
        .await?;
    progress(format!(
        "tenant {tenant}: created; pairs Virtuous with the partner CRM {partner} (observing: nothing is written yet)"
    ));

    // The cross-match: both sides read, matched, reported; approved by the operator.
    let (status, job) = client
        .admin_call(
            Method::POST,
            &format!("/tenants/{tenant}/cross-match"),
            Some(json!({"pair": PAIR})),
        )
        .await?;
    ensure!(
        status == 202,
        "starting the cross-match answered {status}: {job}"
    );
    let job = wait(
        deadline,
        &format!("{tenant}: the cross-match report"),
        || async {
            let (_, job) = client
                .admin_call(Method::GET, &format!("/tenants/{tenant}/cross-match"), None)
                .await?;
            Ok((job["state"] == "ready").then_some(job))
        },
    )
    .await?;
    let summary = job["summary"].clone();
    progress(format!(
        "{tenant}: cross-match report: {} matched, {} ambiguous (a family email, never merged), {} partner-only, {} Virtuous-only",
        summary["matched"], summary["ambiguous"], summary["partner_only"], summary["virtuous_only"]
    ));
    let (status, body) = client
        .admin_call(
            Method::POST,
            &format!("/tenants/{tenant}/cross-match/approve"),
            Some(
                json!({"pair": PAIR, "policies": {"matched": "link", "partner_only": "create",
                                                   "virtuous_only": "external_only"}}),
            ),
        )
        .await?;
    ensure!(status == 202, "approving answered {status}: {body}");
    wait(
        deadline,
        &format!("{tenant}: the approval applied"),
        || async {
            let (_, job) = client
                .admin_call(Method::GET, &format!("/tenants/{tenant}/cross-match"), None)
                .await?;
            Ok((job["state"] == "done").then_some(()))
        },
    )
    .await?;
    let (status, body) = client
        .admin_call(
            Method::PATCH,
            &format!("/tenants/{tenant}"),
            Some(json!({"two_way": {PAIR: {"mode": "on"}}})),
        )
        .await?;
    ensure!(
        status == 200,
        "turning the pair on answered {status}: {body}"
    );
    // The partner-only people are created in Virtuous, and linked when it shows them.
    wait(
        deadline,
        &format!("{tenant}: partner-only people in Virtuous"),
        || async {
            let linked = link(client, &tenant, "max")
                .await?
                .is_some_and(|l| l["virtuous_id"].is_string())
                && link(client, &tenant, "noa")
                    .await?
                    .is_some_and(|l| l["virtuous_id"].is_string());
            Ok(linked.then_some(()))
        },
    )
    .await?;
    progress(format!(
        "{tenant}: approved: matched records linked, partner-only ones created in Virtuous; the pair is on"
    ));

    // Edits both ways.
    edit_partner(client, &partner, "ann", json!({"first_name": "Annie"})).await?;
    let bo = virtuous_id(client, &tenant, "bo").await?;
    staff_edit(client, &tenant, bo, "lastName", "Raymond").await?;
    wait(
        deadline,
        &format!("{tenant}: edits on both sides synced"),
        || async {
            let on_virtuous = contact_of(client, &tenant, "ann").await?;
            let partner_bo = partner_contact(client, &partner, "bo").await?;
            Ok(
                (first_name(&on_virtuous) == "Annie" && partner_bo["last_name"] == "Raymond")
                    .then_some(()),
            )
        },
    )
    .await?;
    progress(format!(
        "{tenant}: a partner edit reached Virtuous and a staff edit reached the partner; their echoes came back and were dropped"
    ));

    // Both sides change one field before either is written: a conflict for a person.
    admin_ok(
        client,
        Method::POST,
        &format!("/tenants/{tenant}/pause"),
        None,
    )
    .await?;
    edit_partner(client, &partner, "cy", json!({"first_name": "Cyrus"})).await?;
    let cy = virtuous_id(client, &tenant, "cy").await?;
    staff_edit(client, &tenant, cy, "firstName", "Cyril").await?;
    let conflict = wait(deadline, &format!("{tenant}: the conflict"), || async {
        let (_, body) = client
            .admin_call(Method::GET, &format!("/tenants/{tenant}/conflicts"), None)
            .await?;
        Ok(body["conflicts"]
            .as_array()
            .and_then(|all| all.first().cloned()))
    })
    .await?;
    admin_ok(
        client,
        Method::POST,
        &format!("/tenants/{tenant}/resume"),
        None,
    )
    .await?;
    progress(format!(
        "{tenant}: conflict on {}'s {}: partner {} vs Virtuous {}; the operator takes the partner's",
        conflict["partner_id"].as_str().unwrap_or("?"),
        conflict["field"].as_str().unwrap_or("?"),
        conflict["partner"],
        conflict["virtuous"]
    ));
    let id = conflict["id"].as_str().context("a conflict id")?;
    admin_ok(
        client,
        Method::POST,
        &format!("/tenants/{tenant}/conflicts/{id}/resolve"),
        Some(json!({"take": "partner"})),
    )
    .await?;
    wait(
        deadline,
        &format!("{tenant}: the resolution in Virtuous"),
        || async {
            Ok((first_name(&contact_of(client, &tenant, "cy").await?) == "Cyrus").then_some(()))
        },
    )
    .await?;

    // Every linked record agrees on both sides.
    let (_, view) = client
        .admin_call(Method::GET, &format!("/tenants/{tenant}/two-way"), None)
        .await?;
    let counts = &view["pairs"][0]["counts"];
    for id in ["ann", "bo", "cy", "di", "max", "noa"] {
        let on_partner = partner_contact(client, &partner, id).await?;
        let on_virtuous = contact_of(client, &tenant, id).await?;
        let individual = &on_virtuous["contactIndividuals"][0];
        ensure!(
            on_partner["first_name"] == individual["firstName"]
                && on_partner["last_name"] == individual["lastName"],
            "{tenant}: {id} differs: partner {on_partner} vs Virtuous {on_virtuous}"
        );
    }
    Ok(vec![format!(
        "two-way ({tenant}): cross-match {} matched, {} ambiguous left alone, {} created in Virtuous, {} kept external; {} writes to Virtuous and {} to the partner; echoes dropped: {} by origin, {} by the ledger, {} by the window; {} conflict opened and resolved; every linked record equal on both sides",
        summary["matched"],
        summary["ambiguous"],
        summary["partner_only"],
        summary["virtuous_only"],
        counts["writes_to_virtuous"],
        counts["writes_to_partner"],
        counts["dropped_origin"],
        counts["dropped_ledger"],
        counts["dropped_window"],
        counts["conflicts_opened"],
    )])
}

async fn admin_ok(
    client: &DemoClient,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let (status, answer) = client.admin_call(method.clone(), path, body).await?;
    ensure!(
        (200..300).contains(&status),
        "{method} {path} answered {status}: {answer}"
    );
    Ok(answer)
}

async fn link(
    client: &DemoClient,
    tenant: &str,
    partner_id: &str,
) -> anyhow::Result<Option<Value>> {
    let (status, body) = client
        .admin_call(
            Method::GET,
            &format!("/tenants/{tenant}/two-way/{PAIR}/records/{partner_id}"),
            None,
        )
        .await?;
    Ok((status == 200).then(|| body["link"].clone()))
}

async fn virtuous_id(client: &DemoClient, tenant: &str, partner_id: &str) -> anyhow::Result<u64> {
    link(client, tenant, partner_id)
        .await?
        .and_then(|link| link["virtuous_id"].as_str()?.parse().ok())
        .with_context(|| format!("{partner_id} is not linked"))
}

async fn contact_of(client: &DemoClient, tenant: &str, partner_id: &str) -> anyhow::Result<Value> {
    let id = virtuous_id(client, tenant, partner_id).await?;
    virtuous_contact(client, tenant, id).await
}

/// The Virtuous contact `id` as the sandbox holds it.
async fn virtuous_contact(client: &DemoClient, tenant: &str, id: u64) -> anyhow::Result<Value> {
    let contacts = client
        .sandbox_call(
            Method::GET,
            &format!("/_sandbox/orgs/{tenant}/contacts"),
            None,
        )
        .await?;
    contacts
        .as_array()
        .and_then(|all| all.iter().find(|contact| contact["id"] == id).cloned())
        .with_context(|| format!("Virtuous contact {id}"))
}

fn first_name(contact: &Value) -> &str {
    contact["contactIndividuals"][0]["firstName"]
        .as_str()
        .unwrap_or("")
}

async fn partner_contact(client: &DemoClient, partner: &str, id: &str) -> anyhow::Result<Value> {
    let all = client
        .sandbox_call(
            Method::GET,
            &format!("/_sandbox/partners/{partner}/contacts"),
            None,
        )
        .await?;
    let list = all.get("contacts").cloned().unwrap_or(all);
    list.as_array()
        .and_then(|all| all.iter().find(|contact| contact["id"] == id).cloned())
        .with_context(|| format!("partner contact {id}"))
}

async fn edit_partner(
    client: &DemoClient,
    partner: &str,
    id: &str,
    changes: Value,
) -> anyhow::Result<()> {
    client
        .sandbox_call(
            Method::PATCH,
            &format!("/_sandbox/partners/{partner}/contacts/{id}"),
            Some(changes),
        )
        .await?;
    Ok(())
}

/// A staff member changes the primary individual's `key` in the Virtuous UI.
async fn staff_edit(
    client: &DemoClient,
    tenant: &str,
    id: u64,
    key: &str,
    value: &str,
) -> anyhow::Result<()> {
    let contact = virtuous_contact(client, tenant, id).await?;
    let mut individuals = contact["contactIndividuals"].clone();
    individuals[0][key] = json!(value);
    client
        .sandbox_call(
            Method::POST,
            &format!("/_sandbox/orgs/{tenant}/staff-edits"),
            Some(json!({"edits": [{"kind": "contact", "id": id,
                                   "changes": {"contactIndividuals": individuals}}]})),
        )
        .await?;
    Ok(())
}
