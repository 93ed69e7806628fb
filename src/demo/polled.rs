//! The demo's pattern-2 part: a Constant Contact tenant (contacts polled through the v3 API
//! with OAuth) and a Mailchimp tenant (audience webhooks with a share dropped, members
//! polled as the backstop), both against the embedded sandbox's simulators, ending with the
//! parity table: which path saw each fact.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use super::client::DemoClient;

/// Constant Contact contacts in the demo account.
const CC_CONTACTS: u64 = 300;
/// Of them, edited / unsubscribed / deleted between the two polls.
const CC_EDITED: u64 = 20;
const CC_UNSUBSCRIBED: u64 = 5;
const CC_DELETED: u64 = 5;
/// Mailchimp members, and the share of audience webhooks the simulator drops.
const MC_MEMBERS: u64 = 100;
const MC_DROP_PCT: u64 = 10;

/// What the polled part showed, for the closing lines.
pub struct PolledSummary {
    pub lines: Vec<String>,
}

/// Runs the polled and hybrid part on a running engine.
pub async fn run(
    client: &DemoClient,
    seed: u64,
    started: Instant,
    deadline: Instant,
) -> anyhow::Result<PolledSummary> {
    let progress = |message: String| {
        println!("[{:>5.1}s] {message}", started.elapsed().as_secs_f64());
    };
    let mut lines = Vec::new();
    lines.extend(constant_contact(client, seed, &progress, deadline).await?);
    lines.extend(mailchimp(client, seed, &progress, deadline).await?);
    Ok(PolledSummary { lines })
}

async fn constant_contact(
    client: &DemoClient,
    seed: u64,
    progress: &impl Fn(String),
    deadline: Instant,
) -> anyhow::Result<Vec<String>> {
    let tenant = format!("demo-{seed}-cc");
    let account = format!("{tenant}-account");
    let client_id = format!("{tenant}-client");
    let client_secret = format!("cc_secret_{:016x}", rand::random::<u64>());
    let refresh_token = format!("cc_refresh_{:016x}", rand::random::<u64>());
    // The customer authorises Steward in Constant Contact (here: the simulator's account).
    client
        .sandbox_call(
            reqwest::Method::POST,
            "/_sandbox/constant-contact/accounts",
            Some(
                json!({"id": account, "client_id": client_id, "client_secret": client_secret,
                        "refresh_token": refresh_token, "refresh_token_kind": "rotating"}),
            ),
        )
        .await?;
    let created = client
        .sandbox_call(
            reqwest::Method::POST,
            &format!("/_sandbox/constant-contact/accounts/{account}/contacts"),
            Some(json!({"generate": {"count": CC_CONTACTS, "list_memberships": ["newsletter"]}})),
        )
        .await?;
    let ids: Vec<String> = created["contact_ids"]
        .as_array()
        .context("the simulator answered no contact ids")?
        .iter()
        .filter_map(|id| id.as_str().map(str::to_string))
        .collect();
    let api_key = format!("vk_demo_{:016x}", rand::random::<u64>());
    client
        .create_tenant(&json!({
            "id": tenant,
            "name": "Demo charity (Constant Contact)",
            "time_zone": "America/Chicago",
            "virtuous": {"base_url": "embedded", "api_key": api_key},
            "sources": {"constant_contact": {
                "base_url": "embedded", "token_url": "embedded",
                "client_id": client_id, "client_secret": client_secret,
                "refresh_token": refresh_token, "interval_s": 3600}},
        }))
        .await?;
    progress(format!(
        "tenant {tenant}: created; Constant Contact holds {CC_CONTACTS} contacts, polled every hour (first run now)"
    ));
    let first = wait_run(client, &tenant, "constant_contact", 1, deadline).await?;
    progress(format!("{tenant}: poll run 1 — {}", run_line(&first)));

    // People change things in Constant Contact between polls.
    for (index, id) in ids
        .iter()
        .enumerate()
        .take((CC_EDITED + CC_UNSUBSCRIBED + CC_DELETED) as usize)
    {
        let base = format!("/_sandbox/constant-contact/accounts/{account}/contacts/{id}");
        let (method, path, body) = if (index as u64) < CC_EDITED {
            (
                reqwest::Method::PATCH,
                base,
                Some(json!({"last_name": format!("Edited{index}")})),
            )
        } else if (index as u64) < CC_EDITED + CC_UNSUBSCRIBED {
            (reqwest::Method::POST, format!("{base}/unsubscribe"), None)
        } else {
            (reqwest::Method::DELETE, base, None)
        };
        client.sandbox_call(method, &path, body).await?;
    }
    let second = run_and_wait(client, &tenant, "constant_contact", 2, deadline).await?;
    progress(format!(
        "{tenant}: {CC_EDITED} edited, {CC_UNSUBSCRIBED} unsubscribed, {CC_DELETED} deleted; poll run 2 — {}",
        run_line(&second)
    ));
    let received = wait_submitted(client, &tenant, deadline).await?;
    client.run_import(&tenant).await?;
    let stats = client.sandbox_stats(&tenant).await?;
    progress(format!(
        "{tenant}: Virtuous received {received} contact updates in {} calls (updates of one contact still queued are merged); {} contacts after import",
        contact_calls(&stats),
        stats["contacts"]
    ));
    Ok(vec![format!(
        "Constant Contact ({tenant}): {CC_CONTACTS} contacts polled, then {} changed ones (opt-outs included) — {received} contact updates reached Virtuous in {} calls, {} contacts there",
        CC_EDITED + CC_UNSUBSCRIBED + CC_DELETED,
        contact_calls(&stats),
        stats["contacts"]
    )])
}

async fn mailchimp(
    client: &DemoClient,
    seed: u64,
    progress: &impl Fn(String),
    deadline: Instant,
) -> anyhow::Result<Vec<String>> {
    let tenant = format!("demo-{seed}-mc");
    let account = format!("{tenant}-account");
    let list = "demo-audience";
    let mc_key = format!("{:032x}-us21", rand::random::<u128>());
    let url_key = format!("mc_url_{:016x}", rand::random::<u64>());
    client
        .sandbox_call(
            reqwest::Method::POST,
            "/_sandbox/mailchimp/accounts",
            Some(json!({"id": account, "api_key": mc_key, "lists": [list], "seed": seed})),
        )
        .await?;
    let api_key = format!("vk_demo_{:016x}", rand::random::<u64>());
    client
        .create_tenant(&json!({
            "id": tenant,
            "name": "Demo charity (Mailchimp)",
            "time_zone": "America/Chicago",
            "virtuous": {"base_url": "embedded", "api_key": api_key},
            "sources": {"mailchimp": {
                "url_key": url_key, "api_key": mc_key, "list_id": list,
                "base_url": "embedded", "interval_s": 3600}},
        }))
        .await?;
    wait_run(client, &tenant, "mailchimp", 1, deadline).await?;
    let hook = format!(
        "{}/hooks/{tenant}/mailchimp?key={url_key}",
        client.main_url()
    );
    client
        .sandbox_call(
            reqwest::Method::PUT,
            &format!("/_sandbox/mailchimp/accounts/{account}/lists/{list}/webhook"),
            Some(json!({"url": hook, "drop_pct": MC_DROP_PCT})),
        )
        .await?;
    progress(format!(
        "tenant {tenant}: created; Mailchimp sends audience webhooks ({MC_DROP_PCT} % of them lost on the way) and members are polled as the backstop"
    ));
    let members: Vec<Value> = (0..MC_MEMBERS)
        .map(|n| {
            json!({"email_address": format!("member{n}@example.org"),
                        "merge_fields": {"FNAME": format!("Member{n}"), "LNAME": "Demo"}})
        })
        .collect();
    let added = client
        .sandbox_call(
            reqwest::Method::POST,
            &format!("/_sandbox/mailchimp/accounts/{account}/lists/{list}/members"),
            Some(json!({"members": members})),
        )
        .await?;
    let hashes: Vec<String> = added["ids"]
        .as_array()
        .context("the simulator answered no member ids")?
        .iter()
        .filter_map(|id| id.as_str().map(str::to_string))
        .collect();
    run_and_wait(client, &tenant, "mailchimp", 2, deadline).await?;
    // Every member is edited once: its webhook may be lost, and the next poll finds every
    // change anyway.
    let dropped_before = dropped(client, &account, list).await?;
    client
        .sandbox_call(
            reqwest::Method::POST,
            &format!("/_sandbox/mailchimp/accounts/{account}/clock"),
            Some(json!({"advance_s": 5})),
        )
        .await?;
    for (n, hash) in hashes.iter().enumerate() {
        client
            .sandbox_call(
                reqwest::Method::PATCH,
                &format!("/_sandbox/mailchimp/accounts/{account}/lists/{list}/members/{hash}"),
                Some(json!({"merge_fields": {"LNAME": format!("Edited{n}")}})),
            )
            .await?;
    }
    let fired = MC_MEMBERS;
    let dropped_now = dropped(client, &account, list).await? - dropped_before;
    let mark = Instant::now();
    // Wait for the delivered webhooks to be captured (the rest were lost).
    loop {
        let parity = parity(client, &tenant).await?;
        if parity["totals"]["webhook_only"].as_u64().unwrap_or(0)
            + parity["totals"]["both"].as_u64().unwrap_or(0)
            >= (MC_MEMBERS - dropped_before) + (fired - dropped_now)
            || mark.elapsed() > Duration::from_secs(20)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let third = run_and_wait(client, &tenant, "mailchimp", 3, deadline).await?;
    progress(format!(
        "{tenant}: {MC_MEMBERS} members edited once ({dropped_now} of their webhooks lost); poll run 3 — {}",
        run_line(&third)
    ));
    let parity = parity(client, &tenant).await?;
    let totals = &parity["totals"];
    println!("\nparity of {tenant} (mailchimp), facts by the path that saw them:");
    println!("  {:<14} {:>6}", "both", totals["both"]);
    println!("  {:<14} {:>6}", "webhook only", totals["webhook_only"]);
    println!(
        "  {:<14} {:>6}   <- missed webhooks, caught by polling",
        "poll only", totals["poll_only"]
    );
    let poll_only = totals["poll_only"].as_u64().unwrap_or(0);
    // Every version was polled right after its webhook fired (the subscribes by run 2, the
    // edits by run 3): the facts seen by polling only are exactly the lost webhooks.
    let dropped_total = dropped(client, &account, list).await?;
    if poll_only != dropped_total {
        bail!(
            "parity shows {poll_only} facts seen by polling only, but the simulator dropped {dropped_total} webhooks"
        );
    }
    Ok(vec![format!(
        "Mailchimp ({tenant}): {dropped_total} of {} webhooks lost, every one caught by polling (parity: {} both, {} webhook only, {poll_only} poll only)",
        MC_MEMBERS + fired,
        totals["both"],
        totals["webhook_only"]
    )])
}

fn run_line(run: &Value) -> String {
    format!(
        "{} record(s) fetched: {} new, {} changed, {} unchanged, {} rejected, in {} page(s)",
        run["fetched"], run["new"], run["changed"], run["unchanged"], run["rejected"], run["pages"]
    )
}

/// Asks for a run of `source` (the `run`-th) and waits for its report.
async fn run_and_wait(
    client: &DemoClient,
    tenant: &str,
    source: &str,
    run: u64,
    deadline: Instant,
) -> anyhow::Result<Value> {
    client
        .admin_call(
            reqwest::Method::POST,
            &format!("/tenants/{tenant}/pollers/{source}/run"),
            None,
        )
        .await?;
    wait_run(client, tenant, source, run, deadline).await
}

/// Waits until the poller's `run`-th run has finished; its report.
async fn wait_run(
    client: &DemoClient,
    tenant: &str,
    source: &str,
    run: u64,
    deadline: Instant,
) -> anyhow::Result<Value> {
    loop {
        let (status, runs) = client
            .admin_call(
                reqwest::Method::GET,
                &format!("/tenants/{tenant}/pollers/{source}/runs?limit=1"),
                None,
            )
            .await?;
        if status == 200 {
            if let Some(last) = runs["runs"].get(0) {
                if last["run"].as_u64() == Some(run) && last["outcome"] != "running" {
                    if last["outcome"] != "completed" {
                        bail!(
                            "{tenant}: poll run {run} of {source} ended {}: {}",
                            last["outcome"],
                            last["error"]
                        );
                    }
                    return Ok(last.clone());
                }
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{tenant}: poll run {run} of {source} did not converge in time"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every captured entry of `tenant` was submitted (queued updates of one
/// contact are merged into one), then answers how many contact updates Virtuous received.
async fn wait_submitted(
    client: &DemoClient,
    tenant: &str,
    deadline: Instant,
) -> anyhow::Result<u64> {
    loop {
        let (_, status) = client
            .admin_call(reqwest::Method::GET, &format!("/tenants/{tenant}"), None)
            .await?;
        let counts = &status["counts"];
        let queued: u64 = ["live", "retry", "reconcile", "backfill"]
            .iter()
            .map(|lane| status["lanes"][lane]["depth"].as_u64().unwrap_or(0))
            .sum();
        let captured = counts["captured"].as_u64().unwrap_or(0);
        let done = counts["submitted"].as_u64().unwrap_or(0) + counts["dead"].as_u64().unwrap_or(0);
        if queued == 0 && captured > 0 && done >= captured {
            let stats = client.sandbox_stats(tenant).await?;
            return Ok(stats["transactions_received"].as_u64().unwrap_or(0));
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{tenant}: {done} of {captured} captured contact updates submitted: did not converge in time"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn contact_calls(stats: &Value) -> u64 {
    ["POST /api/Contact/Batch", "POST /api/Contact/Transaction"]
        .iter()
        .filter_map(|endpoint| stats["requests"][endpoint]["200"].as_u64())
        .sum()
}

async fn dropped(client: &DemoClient, account: &str, list: &str) -> anyhow::Result<u64> {
    let dropped = client
        .sandbox_call(
            reqwest::Method::GET,
            &format!("/_sandbox/mailchimp/accounts/{account}/lists/{list}/webhook/dropped"),
            None,
        )
        .await?;
    Ok(dropped.as_array().map_or(0, |events| events.len() as u64))
}

async fn parity(client: &DemoClient, tenant: &str) -> anyhow::Result<Value> {
    let (status, parity) = client
        .admin_call(
            reqwest::Method::GET,
            &format!("/tenants/{tenant}/parity/mailchimp"),
            None,
        )
        .await?;
    anyhow::ensure!(
        status == 200,
        "parity of {tenant} answered {status}: {parity}"
    );
    Ok(parity)
}
