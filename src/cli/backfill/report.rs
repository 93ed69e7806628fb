//! Backfill job views (the API's JSON) as text for people: the status, the dry run's report,
//! the list. Pure: a view in, text out.

use serde_json::Value;

use crate::cli::table::{
    bytes_words, count, decimal_thousands, duration_words, key_values, thousands, Table,
};

/// Rejected rows the dry-run report lists (all of them: `steward backfill rejects`).
pub const REPORT_REJECTS_SHOWN: usize = 20;

fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".to_string(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn percent_text(value: &Value) -> String {
    value
        .as_f64()
        .map_or_else(|| "-".to_string(), |percent| format!("{percent:.1} %"))
}

fn eta_text(job: &Value) -> String {
    match (job["state"].as_str(), job["eta_s"].as_u64()) {
        (Some("running"), Some(seconds)) => duration_words(seconds),
        (Some("running"), None) => "unknown (no spare allowance in the last hour)".to_string(),
        _ => "-".to_string(),
    }
}

/// One line of progress for a bar's message.
pub fn progress_line(job: &Value) -> String {
    let progress = &job["progress"];
    format!(
        "{} · queued {} · submitted {} · confirmed {} · rejected {} · eta {}",
        text(&job["state"]),
        count(&progress["queued"]),
        count(&progress["submitted"]),
        count(&progress["confirmed"]),
        count(&progress["rejected"]),
        eta_text(job)
    )
}

/// How far the dry run read: rows of a file, records and pages of a listing.
pub fn dry_run_read(job: &Value) -> String {
    let dry_run = &job["dry_run"];
    match dry_run.get("pages_read") {
        Some(pages) => format!(
            "{} records read ({} pages)",
            count(&dry_run["rows_read"]),
            count(pages)
        ),
        None => format!("{} rows read", count(&dry_run["rows_read"])),
    }
}

/// A job's state, progress and ETA.
pub fn status_text(job: &Value) -> String {
    let progress = &job["progress"];
    let mut pairs = vec![
        ("backfill", text(&job["id"])),
        ("label", text(&job["label"])),
        ("state", text(&job["state"])),
    ];
    let listing = job.get("listing");
    let read = match listing {
        Some(window) => format!(
            "its listing, changed from {} to {}",
            text(&window["from"]),
            text(&window["to"])
        ),
        None => format!(
            "{}, mapping {}",
            text(&job["format"]),
            text(&job["mapping"])
        ),
    };
    pairs.push(("source", format!("{} ({read})", text(&job["source"]))));
    if listing.is_none() {
        let file = job["file_bytes"].as_u64();
        pairs.push((
            "file",
            file.map_or_else(|| "not uploaded".to_string(), bytes_words),
        ));
    }
    pairs.push(("created", text(&job["created_at"])));
    if !job["started_at"].is_null() {
        pairs.push(("started", text(&job["started_at"])));
    }
    if !job["finished_at"].is_null() {
        pairs.push(("finished", text(&job["finished_at"])));
    }
    if job["state"] == "validating" {
        pairs.push(("dry run", dry_run_read(job)));
    }
    pairs.extend([
        ("rows read", count(&progress["rows_read"])),
        ("queued", count(&progress["queued"])),
        ("duplicates", count(&progress["duplicates"])),
        ("skipped", count(&progress["skipped"])),
        ("rejected", count(&progress["rejected"])),
        ("submitted", count(&progress["submitted"])),
        ("confirmed", count(&progress["confirmed"])),
        ("dead letters", count(&progress["dead"])),
        ("done", percent_text(&progress["percent"])),
        ("eta", eta_text(job)),
    ]);
    if let Some(error) = job["error"].as_str() {
        pairs.push(("error", error.to_string()));
    }
    key_values(&pairs)
}

/// `{name: n}` as a two-column table, largest first.
fn counts_table(header: &str, counts: &Value) -> Table {
    let mut rows: Vec<(&String, u64)> = counts
        .as_object()
        .map(|counts| {
            counts
                .iter()
                .map(|(name, n)| (name, n.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let mut table = Table::new(&[header, "ROWS"]);
    for (name, n) in rows {
        table.row(vec![name.clone(), thousands(n)]);
    }
    table
}

/// The dry run's report: the summary, skipped rows by reason, alerts, amounts and the first
/// rejected rows (with the command that lists them all, for `tenant_id`).
pub fn dry_run_text(job: &Value, tenant_id: &str) -> String {
    let dry_run = &job["dry_run"];
    let entries = &dry_run["entries"];
    let hours = match dry_run["hours_needed"].as_f64() {
        Some(hours) => format!(
            "{hours:.2} h (about {})",
            duration_words((hours * 3_600.0).ceil() as u64)
        ),
        None => "unknown: the live lane used the whole allowance in the last hour".to_string(),
    };
    let mut out = format!(
        "Dry run of {} ({}): {}\n\n",
        text(&job["id"]),
        text(&job["label"]),
        if dry_run["complete"] == true {
            "complete".to_string()
        } else {
            format!("not complete, the job is {}", text(&job["state"]))
        }
    );
    out.push_str(&key_values(&[
        ("rows", count(&dry_run["rows"])),
        ("payments", count(&dry_run["payments"])),
        (
            "already known",
            format!("{} (nothing queued for them)", count(&dry_run["known"])),
        ),
        ("skipped", count(&dry_run["skipped"])),
        ("rejected", count(&dry_run["rejected"])),
        (
            "entries",
            format!(
                "{} gifts, {} refunds, {} contacts",
                count(&entries["gift"]),
                count(&entries["refund"]),
                count(&entries["contact"])
            ),
        ),
        ("calls needed", count(&dry_run["calls_needed"])),
        (
            "allowance",
            format!(
                "{} calls/h ({} used in the last hour)",
                count(&dry_run["allowance_per_hour"]),
                count(&dry_run["live_calls_last_hour"])
            ),
        ),
        ("hours needed", hours),
    ]));
    let skipped = counts_table("SKIPPED REASON", &dry_run["skip_reasons"]);
    if !skipped.is_empty() {
        out.push('\n');
        out.push_str(&skipped.render());
    }
    let alerts = counts_table("ALERT", &dry_run["alerts"]);
    if !alerts.is_empty() {
        out.push('\n');
        out.push_str(&alerts.render());
    }
    let mut amounts = Table::new(&["CURRENCY", "AMOUNT"]);
    if let Some(sums) = dry_run["amounts"].as_object() {
        for (currency, amount) in sums {
            amounts.row(vec![
                currency.to_uppercase(),
                decimal_thousands(&text(amount)),
            ]);
        }
    }
    if !amounts.is_empty() {
        out.push('\n');
        out.push_str(&amounts.render());
    }
    let rejects = dry_run["rejects"].as_array().cloned().unwrap_or_default();
    if !rejects.is_empty() {
        let mut table = Table::new(&["ROW", "REASON"]);
        for reject in rejects.iter().take(REPORT_REJECTS_SHOWN) {
            table.row(vec![text(&reject["row"]), text(&reject["reason"])]);
        }
        out.push('\n');
        out.push_str(&table.render());
        let total = dry_run["rejects_total"]
            .as_u64()
            .unwrap_or(rejects.len() as u64);
        if total > REPORT_REJECTS_SHOWN as u64 {
            out.push_str(&format!(
                "… {} rejected rows in all: steward backfill rejects --tenant {tenant_id} {}\n",
                thousands(total),
                text(&job["id"])
            ));
        }
    }
    out
}

/// The tenant's jobs, one a line.
pub fn list_text(answer: &Value) -> String {
    let mut table = Table::new(&[
        "ID",
        "LABEL",
        "SOURCE",
        "STATE",
        "ROWS",
        "QUEUED",
        "CONFIRMED",
        "DONE",
        "CREATED",
    ]);
    for job in answer["backfills"].as_array().into_iter().flatten() {
        let rows = if job["state"] == "validating" || job["state"] == "ready" {
            &job["dry_run"]["rows_read"]
        } else {
            &job["progress"]["rows_read"]
        };
        table.row(vec![
            text(&job["id"]),
            text(&job["label"]),
            text(&job["source"]),
            text(&job["state"]),
            count(rows),
            count(&job["progress"]["queued"]),
            count(&job["progress"]["confirmed"]),
            percent_text(&job["progress"]["percent"]),
            text(&job["created_at"]),
        ]);
    }
    if table.is_empty() {
        return "no backfills\n".to_string();
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ready_job() -> Value {
        json!({
            "id": "bf_abcdefghijkl", "label": "history", "source": "stripe", "format": "csv",
            "mapping": "stripe_payments_export", "state": "ready",
            "created_at": "2026-01-01T00:00:00Z", "started_at": null, "finished_at": null,
            "file_bytes": 2048, "eta_s": null, "error": null,
            "dry_run": {"complete": true, "rows_read": 5000, "bytes_read": 2048, "rows": 5000,
                "payments": 4650, "skipped": 200, "rejected": 150, "known": 232,
                "entries": {"gift": 4418, "refund": 40, "contact": 4418},
                "calls_needed": 129, "hours_needed": 0.0307, "allowance_per_hour": 4500,
                "live_calls_last_hour": 300,
                "skip_reasons": {"failed payment": 120, "uncaptured payment": 80},
                "alerts": {"partial_refund": 12}, "amounts": {"usd": "123456.78"},
                "rejects_total": 150,
                "rejects": [{"row": 17, "reason": "`Amount` `abc` is not a number"}]},
            "progress": {"rows_read": 0, "queued": 0, "duplicates": 0, "skipped": 0,
                "rejected": 0, "submitted": 0, "confirmed": 0, "dead": 0, "percent": 0.0}
        })
    }

    #[test]
    fn the_dry_run_report_names_its_columns_and_numbers() {
        // Goal: the report shows the summary with thousands separators, skipped rows by
        // reason largest first, alerts, amounts, the rejects with their rows, and says
        // where all rejects are when there are more than it lists.
        let report = dry_run_text(&ready_job(), "hope-shelter");
        for expected in [
            "Dry run of bf_abcdefghijkl (history): complete",
            "payments       4,650",
            "already known  232 (nothing queued for them)",
            "4,418 gifts, 40 refunds, 4,418 contacts",
            "calls needed   129",
            "4,500 calls/h (300 used in the last hour)",
            "0.03 h (about 2 min)",
            "SKIPPED REASON      ROWS\nfailed payment       120\nuncaptured payment    80\n",
            "ALERT           ROWS\npartial_refund    12\n",
            "CURRENCY      AMOUNT\nUSD       123,456.78\n",
            "ROW  REASON\n 17  `Amount` `abc` is not a number\n",
            "150 rejected rows in all: steward backfill rejects --tenant hope-shelter bf_",
        ] {
            assert!(report.contains(expected), "{expected:?} not in:\n{report}");
        }
    }

    #[test]
    fn status_and_list_show_progress_and_eta() {
        // Goal: a running job's status has its counts and ETA in words; the list names
        // its columns; no jobs says so.
        let mut job = ready_job();
        job["state"] = json!("running");
        job["eta_s"] = json!(4_000);
        job["progress"] = json!({"rows_read": 2500, "queued": 2300, "duplicates": 10,
            "skipped": 100, "rejected": 75, "submitted": 1200, "confirmed": 900, "dead": 0,
            "percent": 26.1});
        let status = status_text(&job);
        for expected in [
            "state         running",
            "submitted     1,200",
            "done          26.1 %",
            "eta           1 h 7 min",
        ] {
            assert!(status.contains(expected), "{expected:?} not in:\n{status}");
        }
        assert!(progress_line(&job).contains("queued 2,300"));
        let list = list_text(&json!({"backfills": [job]}));
        assert!(list.starts_with("ID"), "{list}");
        for column in [
            "LABEL",
            "STATE",
            "ROWS",
            "QUEUED",
            "CONFIRMED",
            "DONE",
            "CREATED",
        ] {
            assert!(list.lines().next().unwrap().contains(column), "{list}");
        }
        assert!(list.contains("bf_abcdefghijkl  history"), "{list}");
        assert_eq!(list_text(&json!({"backfills": []})), "no backfills\n");
    }

    #[test]
    fn a_listing_job_shows_its_window_instead_of_a_file() {
        // Goal: a listing's status names its source and window, no mapping or file; its dry
        // run counts records and pages.
        let mut job = ready_job();
        let view = job.as_object_mut().unwrap();
        view.remove("mapping");
        view.insert("format".into(), json!("listing"));
        view.insert("file_bytes".into(), Value::Null);
        view.insert(
            "listing".into(),
            json!({"from": "2024-01-01T00:00:00Z", "to": "2024-12-31T23:59:59.999Z"}),
        );
        view.insert("state".into(), json!("validating"));
        let dry_run = job["dry_run"].as_object_mut().unwrap();
        dry_run.remove("bytes_read");
        dry_run.insert("pages_read".into(), json!(10));
        let status = status_text(&job);
        assert!(
            status.contains(
                "stripe (its listing, changed from 2024-01-01T00:00:00Z to 2024-12-31T23:59:59.999Z)"
            ),
            "{status}"
        );
        assert!(
            !status.contains("mapping") && !status.contains("file"),
            "{status}"
        );
        assert!(
            status.contains("dry run       5,000 records read (10 pages)"),
            "{status}"
        );
        assert_eq!(dry_run_read(&ready_job()), "5,000 rows read");
    }
}
