//! `steward dlq list|show|replay|discard --tenant ID`: a tenant's dead letters (docs/cli.md).
//! A replay sends the body as it is, or `--body FILE` edited; the API refuses an edit of the
//! idempotency fields (`transactionSource`, `transactionId`, `referenceSource`,
//! `referenceId`) and the command prints its message.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::backfill::TenantArg;
use super::table::Table;
use super::{read_json_file, show, text};
use super::{Admin, AdminArgs, CliError};

#[derive(Args, Debug)]
pub struct DlqArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    #[command(subcommand)]
    pub command: DlqCommand,
}

#[derive(Subcommand, Debug)]
pub enum DlqCommand {
    /// Dead letters, oldest first, a page at a time.
    List {
        #[command(flatten)]
        tenant: TenantArg,
        /// Dead letters per page (1 to 1,000; default 100).
        #[arg(long)]
        limit: Option<usize>,
        /// The next page: the `--after` the previous page printed.
        #[arg(long)]
        after: Option<u64>,
    },
    /// One dead letter with its reason and its body (formatted JSON).
    Show {
        #[command(flatten)]
        tenant: TenantArg,
        /// The dead letter's id.
        id: u64,
    },
    /// Sends the dead letter again (into the live lane), as it is or with an edited body.
    Replay {
        #[command(flatten)]
        tenant: TenantArg,
        /// The dead letter's id.
        id: u64,
        /// The edited Virtuous body (JSON; `-`: stdin). Its idempotency fields must not change.
        #[arg(long, value_name = "FILE")]
        body: Option<PathBuf>,
    },
    /// Drops the dead letter for good (its record stays `dead`).
    Discard {
        #[command(flatten)]
        tenant: TenantArg,
        /// The dead letter's id.
        id: u64,
    },
}

fn list_table(page: &Value) -> String {
    let mut table = Table::new(&[
        "ID",
        "KIND",
        "SOURCE",
        "SOURCE ID",
        "STATUS",
        "DEAD AT",
        "REASON",
    ]);
    for letter in page["dead_letters"].as_array().into_iter().flatten() {
        let reason: String = text(&letter["reason"]).chars().take(60).collect();
        table.row(vec![
            text(&letter["id"]),
            text(&letter["kind"]),
            text(&letter["source"]),
            text(&letter["source_id"]),
            text(&letter["status"]),
            text(&letter["dead_at"]),
            reason,
        ]);
    }
    let mut shown = if table.is_empty() {
        "no dead letters\n".to_string()
    } else {
        table.render()
    };
    if let Some(after) = page["next_after"].as_u64() {
        shown.push_str(&format!("next page: --after {after}\n"));
    }
    shown
}

fn letter_text(letter: &Value) -> String {
    let mut shown = super::table::key_values(&[
        ("id", text(&letter["id"])),
        (
            "record",
            format!(
                "{} {} {}",
                text(&letter["kind"]),
                text(&letter["source"]),
                text(&letter["source_id"])
            ),
        ),
        ("status", text(&letter["status"])),
        ("attempts", text(&letter["attempts"])),
        ("enqueued", text(&letter["enqueued_at"])),
        ("dead at", text(&letter["dead_at"])),
        ("reason", text(&letter["reason"])),
    ]);
    shown.push_str("body:\n");
    shown.push_str(&serde_json::to_string_pretty(&letter["body"]).unwrap_or_default());
    shown.push('\n');
    shown
}

pub fn run(args: DlqArgs) -> Result<(), CliError> {
    let admin = Admin::connect(&args.admin)?;
    match args.command {
        DlqCommand::List {
            tenant,
            limit,
            after,
        } => {
            let mut path = format!(
                "/tenants/{}/dead-letters?limit={}",
                tenant.tenant,
                limit.unwrap_or(100)
            );
            if let Some(after) = after {
                path.push_str(&format!("&after={after}"));
            }
            let page = admin.get(&path)?;
            show(&admin, &page, list_table)
        }
        DlqCommand::Show { tenant, id } => {
            let letter = admin.get(&format!("/tenants/{}/dead-letters/{id}", tenant.tenant))?;
            show(&admin, &letter, letter_text)
        }
        DlqCommand::Replay { tenant, id, body } => {
            let request = match body {
                Some(file) => json!({"body": read_json_file(&file)?}),
                None => json!({}),
            };
            let path = format!("/tenants/{}/dead-letters/{id}/replay", tenant.tenant);
            let answer = admin.post(&path, Some(&request))?;
            show(&admin, &answer, |answer| {
                format!(
                    "dead letter {id} replayed{} into the {} lane (entry {}); record state {}\n",
                    if answer["edited"] == true {
                        " edited"
                    } else {
                        ""
                    },
                    text(&answer["lane"]),
                    text(&answer["seq"]),
                    text(&answer["state"]),
                )
            })
        }
        DlqCommand::Discard { tenant, id } => {
            admin.delete(&format!("/tenants/{}/dead-letters/{id}", tenant.tenant))?;
            show(&admin, &json!({"discarded": id}), |_| {
                format!("dead letter {id} discarded\n")
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_letter_shows_its_reason_and_formatted_body() {
        // Goal: the body is printed as indented JSON after the fields.
        let letter = json!({"id": 7, "kind": "gift", "source": "stripe", "source_id": "pi_1",
            "status": "dead", "attempts": 3, "reason": "422: amount invalid",
            "body": {"amount": "1.00", "transactionId": "pi_1"}});
        let shown = letter_text(&letter);
        assert!(shown.contains("gift stripe pi_1"), "{shown}");
        assert!(shown.contains("422: amount invalid"), "{shown}");
        assert!(shown.contains("  \"amount\": \"1.00\""), "{shown}");
    }
}
