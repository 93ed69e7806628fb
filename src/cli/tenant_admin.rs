//! `steward tenant list|show|create|patch|pause|resume|delete|test-connection`: the tenant
//! routes of the admin API, with tables for people and the API's JSON with `--json`
//! (docs/cli.md).

use std::path::Path;

use serde_json::Value;

use super::table::{count, duration_words, key_values, thousands, Table};
use super::{query_pair, read_json_file, show, text, Admin, CliError};

/// The fleet page as a table (ids, states, lanes, budget, alerts).
pub fn fleet_table(page: &Value) -> String {
    let mut table = Table::new(&[
        "ID",
        "NAME",
        "STATE",
        "QUEUED",
        "OLDEST",
        "CALLS/H",
        "ALLOWANCE/H",
        "ALERTS",
    ]);
    for tenant in page["tenants"].as_array().into_iter().flatten() {
        table.row(vec![
            text(&tenant["id"]),
            text(&tenant["name"]),
            text(&tenant["state"]),
            count(&tenant["depth"]),
            tenant["oldest_age_s"]
                .as_u64()
                .filter(|age| *age > 0)
                .map_or_else(|| "-".to_string(), duration_words),
            count(&tenant["budget"]["spent_last_hour"]),
            count(&tenant["budget"]["allowance_per_hour"]),
            count(&tenant["open_alerts"]),
        ]);
    }
    let mut shown = table.render();
    let on_page = page["tenants"].as_array().map_or(0, Vec::len) as u64;
    let total = page["total"].as_u64().unwrap_or(on_page);
    shown.push_str(&format!(
        "{} of {} tenants",
        thousands(on_page),
        thousands(total)
    ));
    if let Some(cursor) = page["next_cursor"].as_str() {
        shown.push_str(&format!(
            "; next page: the same command with --cursor {cursor}"
        ));
    }
    shown.push('\n');
    shown
}

/// The lanes, highest priority first.
const LANE_ORDER: [&str; 4] = ["live", "retry", "reconcile", "backfill"];

/// A tenant's status for people: state, lanes, budget, counts, alerts, ingress URLs.
pub fn status_text(status: &Value) -> String {
    let budget = &status["budget"];
    let mut shown = key_values(&[
        ("id", text(&status["id"])),
        ("name", text(&status["name"])),
        ("state", text(&status["state"])),
        (
            "budget",
            format!(
                "{} of {} calls in the last hour",
                count(&budget["spent_last_hour"]),
                count(&budget["allowance_per_hour"])
            ),
        ),
        ("created", text(&status["created_at"])),
        ("updated", text(&status["updated_at"])),
    ]);
    if let Some(warning) = budget["warning"].as_str() {
        shown.push_str(&format!("warning: {warning}\n"));
    }
    let mut lanes = Table::new(&["LANE", "QUEUED", "OLDEST", "ETA"]);
    // In the order the submitter serves them.
    for name in LANE_ORDER {
        let lane = &status["lanes"][name];
        if lane.is_null() {
            continue;
        }
        lanes.row(vec![
            name.to_string(),
            count(&lane["depth"]),
            lane["oldest_age_s"]
                .as_u64()
                .map_or_else(|| "-".to_string(), duration_words),
            lane["eta_s"]
                .as_u64()
                .map_or_else(|| "never at this allowance".to_string(), duration_words),
        ]);
    }
    shown.push('\n');
    shown.push_str(&lanes.render());
    let mut counts = Table::new(&["RECORDS", "COUNT"]);
    for (name, value) in status["counts"].as_object().into_iter().flatten() {
        counts.row(vec![name.clone(), count(value)]);
    }
    shown.push('\n');
    shown.push_str(&counts.render());
    shown.push('\n');
    shown.push_str(&super::alerts::alerts_table(status));
    if let Some(urls) = status["ingress"].as_object() {
        shown.push('\n');
        let pairs: Vec<(&str, String)> = urls
            .iter()
            .map(|(name, url)| (name.as_str(), text(url)))
            .collect();
        shown.push_str("ingress URLs\n");
        shown.push_str(&key_values(&pairs));
    }
    shown
}

/// The tenant commands other than export/import.
pub enum TenantAction<'a> {
    List {
        state: Option<&'a str>,
        q: Option<&'a str>,
        sort: Option<&'a str>,
        limit: Option<usize>,
        cursor: Option<&'a str>,
    },
    Show(&'a str),
    Create(&'a Path),
    Patch(&'a str, &'a Path),
    Pause(&'a str),
    Resume(&'a str),
    Delete(&'a str, bool),
    TestConnection(&'a str),
}

pub fn run(admin: &Admin, action: TenantAction) -> Result<(), CliError> {
    match action {
        TenantAction::List {
            state,
            q,
            sort,
            limit,
            cursor,
        } => {
            let mut query = String::new();
            query.push_str(&query_pair("state", state));
            query.push_str(&query_pair("q", q));
            query.push_str(&query_pair("sort", sort));
            query.push_str(&query_pair("cursor", cursor));
            query.push_str(&query_pair(
                "limit",
                limit.map(|n| n.to_string()).as_deref(),
            ));
            let path = match query.strip_prefix('&') {
                Some(query) => format!("/tenants?{query}"),
                None => "/tenants".to_string(),
            };
            let page = admin.get(&path)?;
            show(admin, &page, fleet_table)
        }
        TenantAction::Show(id) => {
            let status = admin.get(&format!("/tenants/{id}"))?;
            show(admin, &status, status_text)
        }
        TenantAction::Create(file) => {
            let doc = read_json_file(file)?;
            let created = admin.post("/tenants", Some(&doc))?;
            show(admin, &created, |created| {
                let id = text(&created["id"]);
                format!("tenant {id} created; its status: steward tenant show {id}\n")
            })
        }
        TenantAction::Patch(id, file) => {
            let patch = read_json_file(file)?;
            let patched = admin.patch(&format!("/tenants/{id}"), &patch)?;
            show(admin, &patched, |patched| {
                let doc = serde_json::to_string_pretty(patched).unwrap_or_default();
                format!("tenant {id} changed; its document now (secrets redacted):\n{doc}\n")
            })
        }
        TenantAction::Pause(id) | TenantAction::Resume(id) => {
            let verb = if matches!(action, TenantAction::Pause(_)) {
                "pause"
            } else {
                "resume"
            };
            let answer = admin.post(&format!("/tenants/{id}/{verb}"), None)?;
            show(admin, &answer, |answer| {
                format!("tenant {id}: state {}\n", text(&answer["state"]))
            })
        }
        TenantAction::Delete(id, force) => {
            let path = if force {
                format!("/tenants/{id}?force=true")
            } else {
                format!("/tenants/{id}")
            };
            admin.delete(&path)?;
            show(admin, &serde_json::json!({"deleted": id}), |_| {
                format!("tenant {id} deleted\n")
            })
        }
        TenantAction::TestConnection(id) => {
            let answer = admin.post(&format!("/tenants/{id}/test-connection"), None)?;
            show(admin, &answer, |answer| {
                let verdict = if answer["ok"] == true {
                    "ok: Virtuous accepted the tenant's key"
                } else {
                    "FAILED"
                };
                let mut shown = format!("{verdict}\n");
                let pairs: Vec<(&str, String)> = answer
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(key, _)| key.as_str() != "ok")
                    .map(|(key, value)| (key.as_str(), text(value)))
                    .collect();
                shown.push_str(&key_values(&pairs));
                shown
            })?;
            if answer["ok"] == true {
                Ok(())
            } else {
                Err(CliError::Failed(format!(
                    "the connection test of tenant {id} failed"
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_fleet_table_shows_each_tenant_and_the_next_cursor() {
        // Goal: one row per tenant with its figures; the footer counts and names the cursor.
        let page = json!({"tenants": [
            {"id": "hope", "name": "Hope", "state": "running", "depth": 1200, "oldest_age_s": 90,
             "budget": {"spent_last_hour": 12, "allowance_per_hour": 4500}, "open_alerts": 2},
            {"id": "pine", "name": "Pine", "state": "not_running", "depth": 0, "oldest_age_s": 0,
             "budget": null, "open_alerts": 0}],
            "total": 3, "next_cursor": "abc"});
        let shown = fleet_table(&page);
        assert!(shown.contains("hope"), "{shown}");
        assert!(shown.contains("1,200"), "{shown}");
        assert!(shown.contains("2 min"), "{shown}");
        assert!(shown.contains("4,500"), "{shown}");
        assert!(
            shown.contains("2 of 3 tenants; next page: the same command with --cursor abc"),
            "{shown}"
        );
        let pine = shown.lines().find(|line| line.starts_with("pine")).unwrap();
        assert!(pine.contains("not_running"), "{pine}");
    }

    #[test]
    fn query_values_are_escaped() {
        // Goal: a filter with spaces or & cannot break the query string.
        assert_eq!(query_pair("q", Some("a b&c")), "&q=a+b%26c");
        assert_eq!(query_pair("q", None), "");
    }
}
