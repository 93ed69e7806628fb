//! `steward records show|find --tenant ID`: where is my record? A record by its source id
//! (or any alias: PaymentIntent, charge, event id), or the records of a donor email or a
//! Virtuous id, each with its timeline (docs/cli.md).

use clap::{Args, Subcommand};
use serde_json::Value;

use super::backfill::TenantArg;
use super::table::{key_values, Table};
use super::{path_segment, Admin, AdminArgs, CliError};
use super::{query_pair, show, text};

#[derive(Args, Debug)]
pub struct RecordsArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    #[command(subcommand)]
    pub command: RecordsCommand,
}

#[derive(Subcommand, Debug)]
pub enum RecordsCommand {
    /// One record by its source id or an alias, with its timeline.
    Show {
        #[command(flatten)]
        tenant: TenantArg,
        /// gift, contact or refund.
        kind: String,
        /// The source (`stripe`, a platform's name, `mailchimp`…).
        source: String,
        /// The source id or an alias (pi_…, ch_…, evt_…, cus_…).
        source_id: String,
    },
    /// The records of a donor email or of a Virtuous id (at most 50), with their timelines.
    Find {
        #[command(flatten)]
        tenant: TenantArg,
        /// The donor's email (any case).
        #[arg(
            long,
            required_unless_present = "virtuous_id",
            conflicts_with = "virtuous_id"
        )]
        email: Option<String>,
        /// The Virtuous id a record was confirmed with (gifts).
        #[arg(long)]
        virtuous_id: Option<String>,
    },
}

/// A record and its timeline for people.
pub fn record_text(record: &Value) -> String {
    let mut shown = key_values(&[
        (
            "record",
            format!(
                "{} {} {}",
                text(&record["kind"]),
                text(&record["source"]),
                text(&record["source_id"])
            ),
        ),
        ("state", text(&record["state"])),
        ("virtuous id", text(&record["virtuous_id"])),
        ("idempotency key", text(&record["idempotency_key"])),
        ("updated", text(&record["updated_at"])),
    ]);
    let mut timeline = Table::new(&["AT", "FROM", "TO", "REASON"]);
    for step in record["history"].as_array().into_iter().flatten() {
        timeline.row(vec![
            text(&step["at"]),
            text(&step["from"]),
            text(&step["to"]),
            text(&step["reason"]),
        ]);
    }
    shown.push_str(&timeline.render());
    if let Some(queued) = record["queued"]
        .as_array()
        .filter(|queued| !queued.is_empty())
    {
        shown.push_str(&format!(
            "queued: {} entr{}\n",
            queued.len(),
            if queued.len() == 1 { "y" } else { "ies" }
        ));
    }
    if let Some(id) = record["dead_letter"]["id"].as_u64() {
        shown.push_str(&format!("dead letter {id}: see steward dlq show {id}\n"));
    }
    shown
}

pub fn run(args: RecordsArgs) -> Result<(), CliError> {
    let admin = Admin::connect(&args.admin)?;
    match args.command {
        RecordsCommand::Show {
            tenant,
            kind,
            source,
            source_id,
        } => {
            let path = format!(
                "/tenants/{}/records/{}/{}/{}",
                tenant.tenant,
                path_segment(&kind),
                path_segment(&source),
                path_segment(&source_id)
            );
            let record = admin.get(&path)?;
            show(&admin, &record, record_text)
        }
        RecordsCommand::Find {
            tenant,
            email,
            virtuous_id,
        } => {
            let query = query_pair("email", email.as_deref())
                + &query_pair("virtuous_id", virtuous_id.as_deref());
            let path = format!(
                "/tenants/{}/records?{}",
                tenant.tenant,
                query.trim_start_matches('&')
            );
            let found = admin.get(&path)?;
            show(&admin, &found, |found| {
                let records = found["records"].as_array().cloned().unwrap_or_default();
                if records.is_empty() {
                    return "no records found\n".to_string();
                }
                records
                    .iter()
                    .map(record_text)
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
    }
}
