//! `steward alerts list [--tenant ID]` and `steward alerts ack --tenant ID CODE`: alerts
//! that ask for someone (docs/cli.md). Without `--tenant`, `list` walks the fleet's tenants
//! with open alerts (the fleet list sorted by open alerts).

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::backfill::TenantArg;
use super::table::Table;
use super::{show, text};
use super::{Admin, AdminArgs, CliError};

/// Tenants per fleet page `alerts list` reads without `--tenant`.
const FLEET_PAGE: usize = 500;

#[derive(Args, Debug)]
pub struct AlertsArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    #[command(subcommand)]
    pub command: AlertsCommand,
}

#[derive(Subcommand, Debug)]
pub enum AlertsCommand {
    /// Alerts of one tenant (all of them, resolved and acknowledged too), or the open
    /// ones of every tenant.
    List {
        /// One tenant's id (default: every tenant with open alerts).
        #[arg(long, value_name = "ID")]
        tenant: Option<String>,
    },
    /// Acknowledges an alert: someone is on it (it stays until its condition clears).
    Ack {
        #[command(flatten)]
        tenant: TenantArg,
        /// The alert's code (e.g. dead_letters, needs_review).
        code: String,
    },
}

/// The alerts of a tenant status as a table.
pub fn alerts_table(status: &Value) -> String {
    let mut table = Table::new(&["ALERT", "STATE", "COUNT", "LAST", "MESSAGE"]);
    for alert in status["alerts"].as_array().into_iter().flatten() {
        table.row(vec![
            text(&alert["code"]),
            alert_state(alert).to_string(),
            text(&alert["count"]),
            text(&alert["last_at"]),
            text(&alert["message"]),
        ]);
    }
    if table.is_empty() {
        "no alerts\n".to_string()
    } else {
        table.render()
    }
}

fn alert_state(alert: &Value) -> &'static str {
    match (alert["resolved_at"].is_null(), alert["acked_at"].is_null()) {
        (false, _) => "resolved",
        (true, false) => "acknowledged",
        (true, true) => "open",
    }
}

pub fn run(args: AlertsArgs) -> Result<(), CliError> {
    let admin = Admin::connect(&args.admin)?;
    match args.command {
        AlertsCommand::List { tenant: Some(id) } => {
            let status = admin.get(&format!("/tenants/{id}"))?;
            let alerts = json!({"tenant": id, "alerts": status["alerts"]});
            show(&admin, &alerts, alerts_table)
        }
        AlertsCommand::List { tenant: None } => {
            // Sorted by open alerts, most first: the walk stops at the first tenant with none.
            let first_page = format!("/tenants?sort=-alerts&limit={FLEET_PAGE}");
            let mut page = admin.get(&first_page)?;
            let mut open = Vec::new();
            'pages: loop {
                for tenant in page["tenants"].as_array().into_iter().flatten() {
                    if tenant["open_alerts"].as_u64() == Some(0) {
                        break 'pages;
                    }
                    let id = text(&tenant["id"]);
                    let status = admin.get(&format!("/tenants/{id}"))?;
                    for alert in status["alerts"].as_array().into_iter().flatten() {
                        if alert_state(alert) == "open" {
                            let mut alert = alert.clone();
                            alert["tenant"] = json!(id);
                            open.push(alert);
                        }
                    }
                }
                match page["next_cursor"].as_str() {
                    Some(cursor) => page = admin.get(&format!("{first_page}&cursor={cursor}"))?,
                    None => break,
                }
            }
            show(&admin, &json!({"alerts": open}), |found| {
                let mut table = Table::new(&["TENANT", "ALERT", "COUNT", "LAST", "MESSAGE"]);
                for alert in found["alerts"].as_array().into_iter().flatten() {
                    table.row(vec![
                        text(&alert["tenant"]),
                        text(&alert["code"]),
                        text(&alert["count"]),
                        text(&alert["last_at"]),
                        text(&alert["message"]),
                    ]);
                }
                if table.is_empty() {
                    "no open alerts\n".to_string()
                } else {
                    table.render()
                }
            })
        }
        AlertsCommand::Ack { tenant, code } => {
            let path = format!("/tenants/{}/alerts/{code}/ack", tenant.tenant);
            let alert = admin.post(&path, None)?;
            show(&admin, &alert, |alert| {
                format!(
                    "alert {} of tenant {} acknowledged at {}\n",
                    text(&alert["code"]),
                    tenant.tenant,
                    text(&alert["acked_at"])
                )
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_states_follow_resolved_then_acknowledged() {
        // Goal: resolved wins over acknowledged; neither is open.
        let alert =
            |resolved: Value, acked: Value| json!({"resolved_at": resolved, "acked_at": acked});
        assert_eq!(alert_state(&alert(Value::Null, Value::Null)), "open");
        assert_eq!(alert_state(&alert(Value::Null, json!("t"))), "acknowledged");
        assert_eq!(alert_state(&alert(json!("t"), json!("t"))), "resolved");
    }
}
