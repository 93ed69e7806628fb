//! `steward tenant export ID --to FILE` and `steward tenant import --from FILE`: moving a
//! tenant between instances through their admin APIs (docs/operations.md "Moving a tenant").

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::backup::{download, verify, Downloaded};
use super::progress::{bars_shown, bytes_bar, CountingReader};
use super::{Admin, AdminArgs, CliError};

#[derive(Args, Debug)]
pub struct TenantArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    #[command(subcommand)]
    pub command: TenantCommand,
}

#[derive(Subcommand, Debug)]
pub enum TenantCommand {
    /// Writes the tenant's export to a new file and leaves it `moved` on this instance: it
    /// stops, never submits here again, and its webhooks are answered 503 (senders retry)
    /// until its traffic is routed to the instance that imports it.
    Export {
        /// The tenant's id.
        id: String,
        /// Where to write the export (a new file).
        #[arg(long, value_name = "FILE")]
        to: PathBuf,
    },
    /// Imports a tenant export into the instance (`--url`/`--data-dir` name it) and starts
    /// the tenant there, in the run state it had before the move.
    Import {
        /// A file written by `steward tenant export`.
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
    },
}

pub fn run(args: TenantArgs) -> Result<(), CliError> {
    let admin = Admin::connect(&args.admin)?;
    match args.command {
        TenantCommand::Export { id, to } => {
            let Downloaded {
                bytes,
                entries,
                files,
            } = download(&admin, &format!("/tenants/{id}/export"), &to, "export")?;
            if admin.json {
                admin.print_json(&serde_json::json!({
                    "tenant": id, "file": to.display().to_string(),
                    "bytes": bytes, "entries": entries, "files": files,
                }));
            } else {
                println!(
                    "tenant {id} exported to {} ({bytes} bytes: {entries} store entries, {files} \
                     files; digest checked). It is `moved` here now: its webhooks get 503 until \
                     they reach the instance you import it into.\n\
                     next: steward tenant import --from {} --url <the other instance's admin URL>",
                    to.display(),
                    to.display()
                );
            }
            Ok(())
        }
        TenantCommand::Import { from } => {
            verify(&from)?;
            let opened = std::fs::File::open(&from).map_err(|error| {
                CliError::Failed(format!("cannot open {}: {error}", from.display()))
            })?;
            let length = opened
                .metadata()
                .map_err(|error| {
                    CliError::Failed(format!("cannot read {}: {error}", from.display()))
                })?
                .len();
            let bar = bytes_bar(length, bars_shown(admin.json));
            bar.set_message("uploading the export");
            let answer = admin.send_stream(
                reqwest::Method::POST,
                "/tenant-imports",
                "application/octet-stream",
                CountingReader::new(opened, bar.clone()),
                length,
            );
            bar.finish_and_clear();
            let tenant = answer?;
            if admin.json {
                admin.print_json(&tenant);
            } else {
                println!(
                    "tenant {} imported and started (state {}). Route its webhooks here now.",
                    tenant["id"].as_str().unwrap_or("?"),
                    tenant["state"].as_str().unwrap_or("?")
                );
            }
            Ok(())
        }
    }
}
