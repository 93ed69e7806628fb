//! The demo's pattern-3 part: a pull tenant whose Virtuous changes arrive in NDJSON files.
//!
//! Steward registers its webhook subscription with the embedded Virtuous sandbox; gifts
//! arrive by import (one shared donor per two gifts), then Virtuous staff edit some gifts and
//! contacts and delete a gift. The sandbox loses 20 % of the create/update webhooks on the
//! way (deletes are never lost); a backstop poll by `Last Modified Date` finds what they
//! missed. At the end the files in `{data dir}/pull-out` are read back and checked exactly:
//! the newest line of every record is the record's version in Virtuous now, every deleted
//! gift's newest line is its delete, and no file names a record Virtuous never had.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use super::client::DemoClient;

/// Gifts imported, donors they belong to, and what staff change afterwards.
const GIFTS: u64 = 24;
const DONORS: u64 = 12;
const GIFTS_EDITED: u64 = 8;
const CONTACTS_EDITED: u64 = 4;
const GIFTS_DELETED: u64 = 2;
/// The share of create/update webhooks the sandbox loses.
const DROP_PCT: u64 = 20;
const DESTINATION: &str = "bi_files";

/// Runs the pull part on a running engine; the closing line.
pub async fn run(
    client: &DemoClient,
    seed: u64,
    data_dir: &Path,
    started: Instant,
    deadline: Instant,
) -> anyhow::Result<Vec<String>> {
    let progress = |message: String| {
        println!("[{:>5.1}s] {message}", started.elapsed().as_secs_f64());
    };
    let tenant = format!("demo-{seed}-pull");
    let api_key = format!("vk_demo_{:016x}", rand::random::<u64>());
    let out_dir = data_dir.join("pull-out");
    client
        .create_tenant(&json!({
            "id": tenant,
            "name": "Demo charity (pull to files)",
            "time_zone": "America/Chicago",
            "virtuous": {"base_url": "embedded", "api_key": api_key,
                         "webhook_secret": format!("vw_demo_{:016x}", rand::random::<u64>())},
            // A burst for the start: the webhook registration and the first backstop pass
            // both call Virtuous on the first tick (the default burst of 1 would make one
            // of them wait).
            "budget": {"hourly_limit": 36_000, "burst_calls": 20},
            "pull": {"events": ["gift", "contact"], "poll_interval_s": 3600,
                     "destinations": {DESTINATION: {"kind": "ndjson",
                                                    "dir": out_dir.display().to_string(),
                                                    "rotate_bytes": 16_384, "rotate_s": 1}}},
        }))
        .await?;
    client
        .sandbox_call(
            reqwest::Method::PUT,
            &format!("/_sandbox/orgs/{tenant}/switches"),
            Some(json!({"webhook_drop_pct": DROP_PCT})),
        )
        .await?;
    // Steward subscribes to the events it pulls, and runs its first backstop pass at start.
    wait(
        deadline,
        &format!("{tenant}: the webhook subscription"),
        || async {
            let hooks = client
                .sandbox_call(
                    reqwest::Method::GET,
                    &format!("/_sandbox/orgs/{tenant}/webhooks"),
                    None,
                )
                .await?;
            Ok(hooks
                .as_array()
                .is_some_and(|all| all.iter().any(|hook| hook["active"] == true))
                .then_some(()))
        },
    )
    .await?;
    let first = wait_backstop(client, &tenant, 0, deadline).await?;
    progress(format!(
        "tenant {tenant}: created; Virtuous webhooks for gifts and contacts registered ({DROP_PCT} % of create/update webhooks lost on the way), changes go to NDJSON files in {}",
        out_dir.display()
    ));

    // Gifts arrive by import (what Virtuous staff or the nightly job do).
    let transactions: Vec<Value> = (0..GIFTS)
        .map(|n| {
            let donor = n % DONORS;
            json!({"transactionSource": "DemoImport", "transactionId": format!("imp-{seed}-{n}"),
                   "amount": format!("{}.00", 10 + n * 5), "currencyCode": "USD",
                   "giftDate": "2026-05-01", "giftType": "Check",
                   "contact": {"referenceId": format!("donor-{donor}"), "firstName": "Donor",
                               "lastName": format!("Number{donor}"),
                               "email": format!("donor{donor}@example.org")}})
        })
        .collect();
    client
        .sandbox_api(
            &api_key,
            reqwest::Method::POST,
            "/api/v2/Gift/Transactions",
            json!({"transactions": transactions}),
        )
        .await?;
    client.run_import(&tenant).await?;

    // Staff edit gifts and contacts and delete gifts, in one go.
    let gifts = records(client, &tenant, "gifts").await?;
    let contacts = records(client, &tenant, "contacts").await?;
    anyhow::ensure!(
        gifts.len() as u64 == GIFTS && contacts.len() as u64 == DONORS,
        "{tenant}: the import made {} gifts and {} contacts, expected {GIFTS} and {DONORS}",
        gifts.len(),
        contacts.len()
    );
    let mut edits = Vec::new();
    for gift in gifts.iter().take(GIFTS_EDITED as usize) {
        edits.push(json!({"kind": "gift", "id": gift["id"], "changes": {"amount": 99.0}}));
    }
    for contact in contacts.iter().take(CONTACTS_EDITED as usize) {
        edits.push(json!({"kind": "contact", "id": contact["id"],
                          "changes": {"name": format!("{} (edited)", contact["name"].as_str().unwrap_or("Donor"))}}));
    }
    let deleted: Vec<String> = gifts
        .iter()
        .rev()
        .take(GIFTS_DELETED as usize)
        .map(id_of)
        .collect();
    for id in &deleted {
        edits.push(json!({"kind": "gift", "id": id.parse::<u64>().unwrap_or(0), "delete": true}));
    }
    client
        .sandbox_call(
            reqwest::Method::POST,
            &format!("/_sandbox/orgs/{tenant}/staff-edits"),
            Some(json!({"edits": edits})),
        )
        .await?;
    let fired = GIFTS + DONORS + GIFTS_EDITED + CONTACTS_EDITED + GIFTS_DELETED;
    // Every webhook has been sent (or lost) before the backstop poll.
    let stats = wait(deadline, &format!("{tenant}: the webhooks"), || async {
        let stats = client.sandbox_stats(&tenant).await?;
        let done: u64 = ["webhooks_sent", "webhooks_failed", "webhooks_dropped"]
            .iter()
            .map(|key| stats[key].as_u64().unwrap_or(0))
            .sum();
        Ok((done >= fired).then_some(stats))
    })
    .await?;
    let lost = stats["webhooks_dropped"].as_u64().unwrap_or(0);
    progress(format!(
        "{tenant}: {GIFTS} gifts imported for {DONORS} donors, then staff edited {GIFTS_EDITED} gifts and {CONTACTS_EDITED} contacts and deleted {GIFTS_DELETED} gifts: {fired} webhooks, {lost} lost"
    ));
    client
        .admin_call(
            reqwest::Method::POST,
            &format!("/tenants/{tenant}/pull/poll"),
            None,
        )
        .await?;
    let poll = wait_backstop(
        client,
        &tenant,
        first["started_at_ms"].as_u64().unwrap_or(0),
        deadline,
    )
    .await?;
    progress(format!(
        "{tenant}: backstop poll — {} call(s), {} record(s) fetched, {} new version(s) logged (the lost webhooks' changes), {} already known",
        poll["calls"],
        poll["fetched"],
        poll["logged"],
        poll["duplicates"].as_u64().unwrap_or(0) + poll["stale"].as_u64().unwrap_or(0)
    ));
    let destination = wait(deadline, &format!("{tenant}: the NDJSON files"), || async {
        let answer = destinations_view(client, &tenant).await?;
        let destination = answer["destinations"]
            .as_array()
            .and_then(|all| all.iter().find(|d| d["name"] == DESTINATION))
            .cloned()
            .unwrap_or(Value::Null);
        let head = destination["head"].as_u64().unwrap_or(0);
        Ok((head > 0 && destination["checkpoint"].as_u64() == Some(head)).then_some(destination))
    })
    .await?;

    let arrived = read_files(&out_dir)?;
    let gifts_now = records(client, &tenant, "gifts").await?;
    let contacts_now = records(client, &tenant, "contacts").await?;
    let problems = compare(&arrived, &gifts_now, &contacts_now, &deleted);
    println!("\nNDJSON files of {tenant} ({}):", out_dir.display());
    for ((kind, op), count) in &arrived.by_kind_op {
        println!("  {kind:<8} {op:<7} {count:>4} line(s)");
    }
    if !problems.is_empty() {
        bail!(
            "{tenant}: the files do not match Virtuous: {}",
            problems.join("; ")
        );
    }
    Ok(vec![format!(
        "Pull ({tenant}): {} lines in {} NDJSON file(s) through change {} ({lost} of {fired} webhooks lost and found by the backstop poll in {} call(s)); the newest line of each of {} gifts and {} contacts is its version in Virtuous, {} deletes applied",
        arrived.lines,
        arrived.files,
        destination["checkpoint"],
        poll["calls"],
        gifts_now.len(),
        contacts_now.len(),
        deleted.len()
    )])
}

/// A Virtuous id as text (ids are numbers in the sandbox).
fn id_of(record: &Value) -> String {
    match &record["id"] {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Every record of one kind in the sandbox organization (full form).
async fn records(client: &DemoClient, org: &str, kind: &str) -> anyhow::Result<Vec<Value>> {
    let all = client
        .sandbox_call(
            reqwest::Method::GET,
            &format!("/_sandbox/orgs/{org}/{kind}"),
            None,
        )
        .await?;
    let mut all = all.as_array().cloned().unwrap_or_default();
    all.sort_by_key(|record| record["id"].as_u64().unwrap_or(0));
    Ok(all)
}

/// What the destination wrote: the newest line of each record, and counts.
#[derive(Default)]
struct Arrived {
    files: usize,
    lines: usize,
    by_kind_op: BTreeMap<(String, String), usize>,
    /// (kind, id) → (version_ms, op).
    newest: BTreeMap<(String, String), (u64, String)>,
}

fn read_files(dir: &Path) -> anyhow::Result<Arrived> {
    let mut arrived = Arrived::default();
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "ndjson"))
        .collect();
    names.sort();
    for path in names {
        arrived.files += 1;
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        for line in text.lines() {
            let change: Value = serde_json::from_str(line)
                .with_context(|| format!("a line of {} is not JSON", path.display()))?;
            let text_of = |key: &str| change[key].as_str().unwrap_or_default().to_string();
            let (kind, op, id) = (text_of("kind"), text_of("op"), text_of("id"));
            let version = change["version_ms"].as_u64().unwrap_or(0);
            arrived.lines += 1;
            *arrived
                .by_kind_op
                .entry((kind.clone(), op.clone()))
                .or_default() += 1;
            let newest = arrived
                .newest
                .entry((kind, id))
                .or_insert((version, op.clone()));
            if version >= newest.0 {
                *newest = (version, op);
            }
        }
    }
    Ok(arrived)
}

/// Every difference between the files' newest lines and Virtuous now.
fn compare(
    arrived: &Arrived,
    gifts: &[Value],
    contacts: &[Value],
    deleted: &[String],
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut expected = BTreeSet::new();
    for (kind, records) in [("gift", gifts), ("contact", contacts)] {
        for record in records {
            let id = id_of(record);
            let version = record["modifiedDateTimeUtc"]
                .as_str()
                .and_then(crate::virtuous::webhook::parse_modified_ms);
            match arrived.newest.get(&(kind.to_string(), id.clone())) {
                Some((got, op)) if Some(*got) == version && op == "upsert" => {}
                Some((got, op)) => problems.push(format!(
                    "{kind} {id}: newest line is {op} version {got}, Virtuous has {version:?}"
                )),
                None => problems.push(format!("{kind} {id}: never arrived")),
            }
            expected.insert((kind.to_string(), id));
        }
    }
    for id in deleted {
        match arrived.newest.get(&("gift".to_string(), id.clone())) {
            Some((_, op)) if op == "delete" => {}
            other => problems.push(format!(
                "gift {id} was deleted but its newest line is {other:?}"
            )),
        }
        expected.insert(("gift".to_string(), id.clone()));
    }
    for key in arrived.newest.keys() {
        if !expected.contains(key) {
            problems.push(format!(
                "{} {}: in the files, unknown to Virtuous",
                key.0, key.1
            ));
        }
    }
    problems
}

/// `GET /v1/tenants/{tenant}/destinations`: the destinations and the pull intake.
async fn destinations_view(client: &DemoClient, tenant: &str) -> anyhow::Result<Value> {
    let (_, answer) = client
        .admin_call(
            reqwest::Method::GET,
            &format!("/tenants/{tenant}/destinations"),
            None,
        )
        .await?;
    Ok(answer)
}

/// Waits until a backstop pass that started after `after_ms` completed; its report.
async fn wait_backstop(
    client: &DemoClient,
    tenant: &str,
    after_ms: u64,
    deadline: Instant,
) -> anyhow::Result<Value> {
    let report = wait(deadline, &format!("{tenant}: a backstop poll"), || async {
        let answer = destinations_view(client, tenant).await?;
        let pull = &answer["pull"];
        let report = &pull["last_backstop"];
        if report["started_at_ms"].as_u64().unwrap_or(0) <= after_ms
            || pull["backstop_running"] != false
        {
            return Ok(None);
        }
        match report["outcome"].as_str() {
            Some("completed") => Ok(Some(report.clone())),
            // The budget refused a call (its burst is spent at start): the pass resumes
            // when the budget says.
            Some("budget_wait") => Ok(None),
            _ => bail!(
                "{tenant}: the backstop poll ended {}: {}",
                report["outcome"],
                report["error"]
            ),
        }
    })
    .await?;
    Ok(report)
}

/// Polls `check` every 100 ms until it answers `Some`, or fails at the deadline.
pub(super) async fn wait<T, F, Fut>(
    deadline: Instant,
    what: &str,
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{what}: did not converge in time"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
