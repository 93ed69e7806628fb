//! What the demo prints: one progress line per poll interval, a summary table at the end.

use std::fmt::Write;
use std::time::{Duration, Instant};

use super::client::Snapshot;

/// One tenant's row of the summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantSummary {
    pub tenant_id: String,
    /// Webhook deliveries, re-deliveries included.
    pub events_sent: u64,
    /// Answered 202.
    pub queued: u64,
    /// Answered 200 (duplicates, deliberately ignored events).
    pub acknowledged: u64,
    pub payments: u64,
    pub gifts_in_virtuous: u64,
    /// Calls the sandbox counted against the organization.
    pub api_calls: u64,
    pub budget_spent: u64,
    pub budget_allowance: u64,
    pub confirmed: u64,
    pub dead_letters: u64,
}

/// `[  3.2s] submission | demo-1-1: sent 40/58 queued 3 confirmed 0 dead 0 | …`
pub fn progress_line<'a>(
    started: Instant,
    phase: &str,
    tenant_ids: impl Iterator<Item = &'a str>,
    snapshots: &[Snapshot],
) -> String {
    let mut line = format!("[{:>5.1}s] {phase:<18}", started.elapsed().as_secs_f64());
    for (tenant_id, snapshot) in tenant_ids.zip(snapshots) {
        let _ = write!(
            line,
            " | {tenant_id}: queued {} submitted {} received {} gifts {} confirmed {} dead {} calls {}",
            snapshot.queued,
            snapshot.submitted,
            snapshot.transactions_received,
            snapshot.gifts,
            snapshot.confirmed,
            snapshot.dead,
            snapshot.api_calls,
        );
    }
    line
}

/// The summary table, one row per tenant.
pub fn summary_table(rows: &[TenantSummary], elapsed: Duration) -> String {
    let header = [
        "tenant",
        "events sent",
        "202 queued",
        "200 dup/ignored",
        "payments",
        "gifts in Virtuous",
        "API calls",
        "budget used",
        "confirmed",
        "dead letters",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let budget_pct = if row.budget_allowance == 0 {
                0.0
            } else {
                row.budget_spent as f64 * 100.0 / row.budget_allowance as f64
            };
            vec![
                row.tenant_id.clone(),
                row.events_sent.to_string(),
                row.queued.to_string(),
                row.acknowledged.to_string(),
                row.payments.to_string(),
                row.gifts_in_virtuous.to_string(),
                row.api_calls.to_string(),
                format!(
                    "{}/{} ({budget_pct:.1}%)",
                    row.budget_spent, row.budget_allowance
                ),
                row.confirmed.to_string(),
                row.dead_letters.to_string(),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|column| {
            cells
                .iter()
                .map(|row| row[column].len())
                .chain(std::iter::once(header[column].len()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let render = |values: Vec<&str>| -> String {
        values
            .iter()
            .zip(&widths)
            .map(|(value, width)| format!("{value:>width$}"))
            .collect::<Vec<_>>()
            .join("  ")
    };
    let mut table = format!("\nsummary after {:.1}s\n", elapsed.as_secs_f64());
    table.push_str(&render(header.to_vec()));
    table.push('\n');
    table.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1)));
    for row in &cells {
        table.push('\n');
        table.push_str(&render(row.iter().map(String::as_str).collect()));
    }
    table.push_str(
        "\n(gifts in Virtuous = one per unique payment + one reversal per refund; \
         budget used = calls in the last hour / allowance)",
    );
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_aligns_columns_and_shows_the_budget_share() {
        // Goal: every line of the table has the same width and the budget column reads x/y (z%).
        let row = TenantSummary {
            tenant_id: "demo-1-1".into(),
            events_sent: 90,
            queued: 60,
            acknowledged: 30,
            payments: 50,
            gifts_in_virtuous: 51,
            api_calls: 20,
            budget_spent: 18,
            budget_allowance: 4_500,
            confirmed: 50,
            dead_letters: 0,
        };
        let table = summary_table(
            &[
                row.clone(),
                TenantSummary {
                    tenant_id: "t".into(),
                    ..row
                },
            ],
            Duration::from_secs(3),
        );
        let lines: Vec<&str> = table.lines().skip(2).take(4).collect();
        assert!(
            lines.iter().all(|line| line.len() == lines[0].len()),
            "{table}"
        );
        assert!(table.contains("18/4500 (0.4%)"), "{table}");
    }
}
