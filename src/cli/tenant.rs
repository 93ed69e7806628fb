//! `steward tenant …`: the tenant routes (`list|show|create|patch|pause|resume|delete|
//! test-connection`, in [`super::tenant_admin`]), and `export ID --to FILE` / `import --from
//! FILE`: moving a tenant between instances (docs/operations.md "Moving a tenant").

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::backup::{download, verify, Downloaded};
use super::progress::{bars_shown, bytes_bar, CountingReader};
use super::tenant_admin::TenantAction;
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
    /// The fleet: every tenant with state, queued entries, oldest age, budget used and open
    /// alerts, a page at a time.
    List {
        /// Only tenants in this state (running, paused, needs_operator, moved, not_running).
        #[arg(long)]
        state: Option<String>,
        /// Only tenants whose id or name contains this (any case).
        #[arg(long, short = 'q')]
        query: Option<String>,
        /// id (default), name, state, depth, oldest_age, budget_used or alerts; a leading
        /// `-` sorts descending (write `--sort=-depth`).
        #[arg(long, allow_hyphen_values = true)]
        sort: Option<String>,
        /// Tenants per page (1 to 500; default 50).
        #[arg(long)]
        limit: Option<usize>,
        /// The next page: the cursor the previous page printed.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// One tenant's status: state, lanes with ETA, budget, record counts, alerts, ingress URLs.
    Show {
        /// The tenant's id.
        id: String,
    },
    /// Registers a tenant from a JSON document (docs/operations.md "Tenant document").
    Create {
        /// The document (`-`: stdin).
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
    },
    /// Changes a tenant with a JSON merge patch (RFC 7396).
    Patch {
        /// The tenant's id.
        id: String,
        /// The merge patch (`-`: stdin).
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
    },
    /// Stops sending to Virtuous; webhooks are still accepted and queued.
    Pause {
        /// The tenant's id.
        id: String,
    },
    /// Sends again (also clears `needs_operator` after a credential fix).
    Resume {
        /// The tenant's id.
        id: String,
    },
    /// Deletes the tenant and its data. Refused while it has queued work unless --force.
    Delete {
        /// The tenant's id.
        id: String,
        /// Delete even with queued entries (they are lost).
        #[arg(long)]
        force: bool,
    },
    /// One call to Virtuous with the tenant's key (from its budget): does the key work?
    TestConnection {
        /// The tenant's id.
        id: String,
    },
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
    let action = match &args.command {
        TenantCommand::List {
            state,
            query,
            sort,
            limit,
            cursor,
        } => Some(TenantAction::List {
            state: state.as_deref(),
            q: query.as_deref(),
            sort: sort.as_deref(),
            limit: *limit,
            cursor: cursor.as_deref(),
        }),
        TenantCommand::Show { id } => Some(TenantAction::Show(id)),
        TenantCommand::Create { from } => Some(TenantAction::Create(from)),
        TenantCommand::Patch { id, from } => Some(TenantAction::Patch(id, from)),
        TenantCommand::Pause { id } => Some(TenantAction::Pause(id)),
        TenantCommand::Resume { id } => Some(TenantAction::Resume(id)),
        TenantCommand::Delete { id, force } => Some(TenantAction::Delete(id, *force)),
        TenantCommand::TestConnection { id } => Some(TenantAction::TestConnection(id)),
        TenantCommand::Export { .. } | TenantCommand::Import { .. } => None,
    };
    if let Some(action) = action {
        return super::tenant_admin::run(&admin, action);
    }
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
        _ => unreachable!("handled above"),
    }
}
