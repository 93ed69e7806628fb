//! The pattern commands (docs/cli.md): `steward pollers` (polled sources),
//! `steward destinations` (pull to partner destinations) and `steward conflicts` (two-way
//! sync). Each is a thin client of its admin routes, documented in docs/polling.md,
//! docs/pull.md and docs/two-way.md.

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};

use super::backfill::TenantArg;
use super::table::{count, Table};
use super::{show, text};
use super::{Admin, AdminArgs, CliError};

#[derive(Args, Debug)]
pub struct PollersArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    #[command(subcommand)]
    pub command: PollersCommand,
}

#[derive(Subcommand, Debug)]
pub enum PollersCommand {
    /// A tenant's polled sources: state, schedule, checkpoint, last and next run.
    List {
        #[command(flatten)]
        tenant: TenantArg,
    },
    /// A source's last runs (newest first): pages, fetched, new, changed, calls, outcome.
    Runs {
        #[command(flatten)]
        tenant: TenantArg,
        /// The polled source (`constant_contact`, `mailchimp`, a platform's name).
        source: String,
        /// Runs shown (the last 50 are kept).
        #[arg(long, default_value_t = 10)]
        limit: usize,
    },
    /// Starts a run now.
    Run {
        #[command(flatten)]
        tenant: TenantArg,
        source: String,
    },
    /// Stops the source's runs until resumed.
    Pause {
        #[command(flatten)]
        tenant: TenantArg,
        source: String,
    },
    /// Lets a paused source run again (also after failures or refused credentials).
    Resume {
        #[command(flatten)]
        tenant: TenantArg,
        source: String,
    },
    /// Moves the source's checkpoint back to a time: the next run reads again from there
    /// (what it finds again is deduplicated).
    Reset {
        #[command(flatten)]
        tenant: TenantArg,
        source: String,
        /// RFC 3339 time, e.g. 2026-01-01T00:00:00Z.
        #[arg(long)]
        since: String,
    },
}

fn pollers_table(answer: &Value) -> String {
    let mut table = Table::new(&[
        "SOURCE",
        "KIND",
        "STATE",
        "CHECKPOINT",
        "LAST RUN",
        "NEXT RUN",
        "FAILURES",
    ]);
    for poller in answer["pollers"].as_array().into_iter().flatten() {
        table.row(vec![
            text(&poller["source"]),
            text(&poller["kind"]),
            text(&poller["state"]),
            text(&poller["checkpoint"]["at"]),
            text(&poller["last_run"]["outcome"]),
            text(&poller["next_run_at"]),
            count(&poller["consecutive_failures"]),
        ]);
    }
    if table.is_empty() {
        "no polled sources\n".to_string()
    } else {
        table.render()
    }
}

fn runs_table(answer: &Value) -> String {
    let mut table = Table::new(&[
        "RUN", "TRIGGER", "OUTCOME", "STARTED", "PAGES", "FETCHED", "NEW", "CHANGED", "REJECTED",
        "CALLS",
    ]);
    for run in answer["runs"].as_array().into_iter().flatten() {
        table.row(vec![
            text(&run["run"]),
            text(&run["trigger"]),
            text(&run["outcome"]),
            text(&run["started_at"]),
            count(&run["pages"]),
            count(&run["fetched"]),
            count(&run["new"]),
            count(&run["changed"]),
            count(&run["rejected"]),
            count(&run["calls"]),
        ]);
    }
    if table.is_empty() {
        "no runs yet\n".to_string()
    } else {
        table.render()
    }
}

pub fn run_pollers(args: PollersArgs) -> Result<(), CliError> {
    let admin = Admin::connect(&args.admin)?;
    let (tenant, source, action, body) = match args.command {
        PollersCommand::List { tenant } => {
            let answer = admin.get(&format!("/tenants/{}/pollers", tenant.tenant))?;
            return show(&admin, &answer, pollers_table);
        }
        PollersCommand::Runs {
            tenant,
            source,
            limit,
        } => {
            let path = format!(
                "/tenants/{}/pollers/{source}/runs?limit={limit}",
                tenant.tenant
            );
            let answer = admin.get(&path)?;
            return show(&admin, &answer, runs_table);
        }
        PollersCommand::Run { tenant, source } => (tenant, source, "run", None),
        PollersCommand::Pause { tenant, source } => (tenant, source, "pause", None),
        PollersCommand::Resume { tenant, source } => (tenant, source, "resume", None),
        PollersCommand::Reset {
            tenant,
            source,
            since,
        } => (tenant, source, "reset", Some(json!({"since": since}))),
    };
    let path = format!("/tenants/{}/pollers/{source}/{action}", tenant.tenant);
    let poller = admin.post(&path, body.as_ref())?;
    show(&admin, &poller, |poller| {
        format!(
            "poller {source} of tenant {}: {action} done; state {}\n",
            tenant.tenant,
            text(&poller["state"])
        )
    })
}

#[derive(Args, Debug)]
pub struct DestinationsArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    #[command(subcommand)]
    pub command: DestinationsCommand,
}

#[derive(Subcommand, Debug)]
pub enum DestinationsCommand {
    /// A tenant's pull destinations: state, checkpoint, pending, lag, counts, last error.
    List {
        #[command(flatten)]
        tenant: TenantArg,
    },
    /// Stops deliveries to a destination (its changes wait, nothing is lost).
    Pause {
        #[command(flatten)]
        tenant: TenantArg,
        name: String,
    },
    /// Delivers again.
    Resume {
        #[command(flatten)]
        tenant: TenantArg,
        name: String,
    },
    /// Runs the backstop poll of Virtuous's changes now.
    Poll {
        #[command(flatten)]
        tenant: TenantArg,
    },
}

fn destinations_table(answer: &Value) -> String {
    let mut table = Table::new(&[
        "NAME",
        "KIND",
        "STATE",
        "PENDING",
        "LAG S",
        "DELIVERED",
        "DEAD",
        "LAST ERROR",
    ]);
    for destination in answer["destinations"].as_array().into_iter().flatten() {
        table.row(vec![
            text(&destination["name"]),
            text(&destination["kind"]),
            text(&destination["state"]),
            count(&destination["pending"]),
            count(&destination["lag_seconds"]),
            count(&destination["delivered"]),
            count(&destination["dead_lettered"]),
            text(&destination["last_error"]),
        ]);
    }
    if table.is_empty() {
        "no destinations\n".to_string()
    } else {
        table.render()
    }
}

pub fn run_destinations(args: DestinationsArgs) -> Result<(), CliError> {
    let admin = Admin::connect(&args.admin)?;
    let (tenant, name, action) = match args.command {
        DestinationsCommand::List { tenant } => {
            let answer = admin.get(&format!("/tenants/{}/destinations", tenant.tenant))?;
            return show(&admin, &answer, destinations_table);
        }
        DestinationsCommand::Poll { tenant } => {
            let answer = admin.post(&format!("/tenants/{}/pull/poll", tenant.tenant), None)?;
            return show(&admin, &answer, |_| {
                format!("backstop poll of tenant {} started\n", tenant.tenant)
            });
        }
        DestinationsCommand::Pause { tenant, name } => (tenant, name, "pause"),
        DestinationsCommand::Resume { tenant, name } => (tenant, name, "resume"),
    };
    let path = format!("/tenants/{}/destinations/{name}/{action}", tenant.tenant);
    let destination = admin.post(&path, None)?;
    show(&admin, &destination, |destination| {
        format!(
            "destination {name} of tenant {}: state {}\n",
            tenant.tenant,
            text(&destination["state"])
        )
    })
}

#[derive(Args, Debug)]
pub struct ConflictsArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    #[command(subcommand)]
    pub command: ConflictsCommand,
}

#[derive(Subcommand, Debug)]
pub enum ConflictsCommand {
    /// Open two-way conflicts: a field edited on both sides since the last sync.
    List {
        #[command(flatten)]
        tenant: TenantArg,
        /// Conflicts per page (1 to 1,000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// The next page: the `--after` the previous page printed.
        #[arg(long)]
        after: Option<String>,
    },
    /// Settles a conflict: the chosen value goes to each side that lacks it.
    Resolve {
        #[command(flatten)]
        tenant: TenantArg,
        /// The conflict's id (`{pair}:{partner id}:{field}`).
        conflict: String,
        /// Which value wins.
        #[arg(long, value_enum)]
        take: Take,
        /// With `--take value`: the value, as JSON (`"Ann"`, `null`, `["tag"]`, `true`).
        #[arg(long, required_if_eq("take", "value"))]
        value: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Take {
    Partner,
    Virtuous,
    Value,
}

fn conflicts_table(answer: &Value) -> String {
    let mut table = Table::new(&["ID", "FIELD", "SYNCED", "PARTNER", "VIRTUOUS", "OPENED"]);
    for conflict in answer["conflicts"].as_array().into_iter().flatten() {
        table.row(vec![
            text(&conflict["id"]),
            text(&conflict["field"]),
            text(&conflict["synced"]),
            text(&conflict["partner"]),
            text(&conflict["virtuous"]),
            text(&conflict["opened_ms"]),
        ]);
    }
    let mut shown = if table.is_empty() {
        "no open conflicts\n".to_string()
    } else {
        table.render()
    };
    if let Some(after) = answer["next_after"].as_str() {
        shown.push_str(&format!("next page: --after {after}\n"));
    }
    shown
}

pub fn run_conflicts(args: ConflictsArgs) -> Result<(), CliError> {
    let admin = Admin::connect(&args.admin)?;
    match args.command {
        ConflictsCommand::List {
            tenant,
            limit,
            after,
        } => {
            let mut path = format!("/tenants/{}/conflicts?limit={limit}", tenant.tenant);
            path.push_str(&super::query_pair("after", after.as_deref()));
            let answer = admin.get(&path)?;
            show(&admin, &answer, conflicts_table)
        }
        ConflictsCommand::Resolve {
            tenant,
            conflict,
            take,
            value,
        } => {
            let body = match take {
                Take::Partner => json!({"take": "partner"}),
                Take::Virtuous => json!({"take": "virtuous"}),
                Take::Value => {
                    let raw = value.unwrap_or_default();
                    let value: Value = serde_json::from_str(&raw).map_err(|error| {
                        CliError::Failed(format!("--value is not JSON ({error}): write \"Ann\" with its quotes, null, [\"tag\"] or true"))
                    })?;
                    json!({"take": "value", "value": value})
                }
            };
            let path = format!(
                "/tenants/{}/conflicts/{}/resolve",
                tenant.tenant,
                super::path_segment(&conflict)
            );
            let answer = admin.post(&path, Some(&body))?;
            show(&admin, &answer, |_| {
                format!("conflict {conflict} resolved\n")
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_show_each_item_or_say_there_is_none() {
        // Goal: one row per item with its key figures; an empty answer says so in words.
        let pollers = json!({"pollers": [{"source": "constant_contact", "kind": "constant_contact",
            "state": "idle", "checkpoint": {"at": "2026-01-01T00:00:00Z"},
            "last_run": {"outcome": "ok"}, "next_run_at": null, "consecutive_failures": 0}]});
        let shown = pollers_table(&pollers);
        assert!(
            shown.contains("constant_contact") && shown.contains("2026-01-01T00:00:00Z"),
            "{shown}"
        );
        assert_eq!(
            pollers_table(&json!({"pollers": []})),
            "no polled sources\n"
        );
        let destinations = json!({"destinations": [{"name": "warehouse", "kind": "postgres",
            "state": "running", "pending": 1500, "lag_seconds": 3, "delivered": 10, "dead_lettered": 0,
            "last_error": null}]});
        assert!(destinations_table(&destinations).contains("1,500"));
        let conflicts = json!({"conflicts": [], "next_after": null});
        assert_eq!(conflicts_table(&conflicts), "no open conflicts\n");
    }
}
