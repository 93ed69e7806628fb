//! `steward backfill …`: backfill jobs through the admin API (docs/backfill.md "CLI").
//!
//! `create` → `upload` (the file streamed, a bar on its bytes) → `dry-run` (waits for the
//! report, then prints it) → `start` → `status --watch`; `pause`, `resume`, `cancel`,
//! `list`, `rejects`. `create --from [--to]` makes a backfill of a polled source's listing
//! instead: no upload, its dry run starts at once. Each takes `--tenant ID`; `--json` prints
//! the API's job view instead.

pub mod report;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::Value;

use super::progress::{bars_shown, bytes_bar, percent_bar, spinner, CountingReader};
use super::{Admin, AdminArgs, CliError};

/// How often `dry-run` and `status --watch` ask for the job.
const POLL_EVERY: Duration = Duration::from_millis(500);

#[derive(Args, Debug)]
pub struct BackfillArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    #[command(subcommand)]
    pub command: BackfillCommand,
}

/// The tenant whose jobs a command is about.
#[derive(Args, Debug, Clone)]
pub struct TenantArg {
    /// The tenant's id.
    #[arg(long, value_name = "ID")]
    pub tenant: String,
}

#[derive(Subcommand, Debug)]
pub enum BackfillCommand {
    /// Create a file backfill (state `awaiting_file`; then `upload` its file), or with
    /// `--from` a backfill of a polled source's listing (its dry run starts at once).
    Create {
        #[command(flatten)]
        tenant: TenantArg,
        /// The source whose idempotency keys the rows get: `stripe`, or a platform's name; with
        /// `--from`, a source the tenant polls (`constant_contact`, `mailchimp`, a platform).
        #[arg(long)]
        source: String,
        /// `csv` or `ndjson` (a file backfill).
        #[arg(long, default_value = "csv")]
        format: String,
        /// A preset (`stripe_payments_export`) or `@file.json` holding a mapping object (a
        /// file backfill).
        #[arg(long, required_unless_present = "from")]
        mapping: Option<String>,
        /// Read the source's listing from this time on (RFC 3339, or a day `YYYY-MM-DD`, UTC)
        /// instead of a file.
        #[arg(long, conflicts_with_all = ["format", "mapping"])]
        from: Option<String>,
        /// The listing's end (RFC 3339, or a day: its end); default now.
        #[arg(long, requires = "from", conflicts_with_all = ["format", "mapping"])]
        to: Option<String>,
        /// The `batch` label every gift carries.
        #[arg(long)]
        label: String,
    },
    /// Upload the job's file (streamed, never read whole); the dry run then starts.
    Upload {
        #[command(flatten)]
        tenant: TenantArg,
        job: String,
        file: PathBuf,
    },
    /// Wait for the dry run and print its report: rows, payments, skipped by reason,
    /// rejects, payments already known, calls needed and hours at the allowance.
    DryRun {
        #[command(flatten)]
        tenant: TenantArg,
        job: String,
    },
    /// Start a job whose dry run is done (`ready → running`).
    Start {
        #[command(flatten)]
        tenant: TenantArg,
        job: String,
    },
    /// Stop reading rows into the queue (entries already queued still go).
    Pause {
        #[command(flatten)]
        tenant: TenantArg,
        job: String,
    },
    /// Go on with a paused job.
    Resume {
        #[command(flatten)]
        tenant: TenantArg,
        job: String,
    },
    /// End a job for good (entries already queued still go).
    Cancel {
        #[command(flatten)]
        tenant: TenantArg,
        job: String,
    },
    /// A job's progress (rows read, queued, submitted, confirmed, rejected) and ETA.
    Status {
        #[command(flatten)]
        tenant: TenantArg,
        job: String,
        /// Follow the job with a progress bar until it is done, cancelled or failed.
        #[arg(long)]
        watch: bool,
    },
    /// The tenant's jobs.
    List {
        #[command(flatten)]
        tenant: TenantArg,
    },
    /// Every rejected row of a job (`--json`: NDJSON lines as the API gives them).
    Rejects {
        #[command(flatten)]
        tenant: TenantArg,
        job: String,
    },
}

/// Runs one `steward backfill` command.
pub fn run(args: BackfillArgs) -> Result<(), CliError> {
    let admin = Admin::connect(&args.admin)?;
    match args.command {
        BackfillCommand::Create {
            tenant,
            source,
            format,
            mapping,
            from,
            to,
            label,
        } => {
            let what = match (from, mapping) {
                (Some(from), _) => Creating::Listing { from, to },
                (None, Some(mapping)) => Creating::File { format, mapping },
                (None, None) => {
                    return Err(CliError::Failed(
                        "give --mapping (a file backfill) or --from (a source's listing)".into(),
                    ))
                }
            };
            create(&admin, &tenant.tenant, source, what, label)
        }
        BackfillCommand::Upload { tenant, job, file } => upload(&admin, &tenant.tenant, &job, file),
        BackfillCommand::DryRun { tenant, job } => dry_run(&admin, &tenant.tenant, &job),
        BackfillCommand::Start { tenant, job } => act(&admin, &tenant.tenant, &job, "start"),
        BackfillCommand::Pause { tenant, job } => act(&admin, &tenant.tenant, &job, "pause"),
        BackfillCommand::Resume { tenant, job } => act(&admin, &tenant.tenant, &job, "resume"),
        BackfillCommand::Cancel { tenant, job } => act(&admin, &tenant.tenant, &job, "cancel"),
        BackfillCommand::Status { tenant, job, watch } => {
            status(&admin, &tenant.tenant, &job, watch)
        }
        BackfillCommand::List { tenant } => list(&admin, &tenant.tenant),
        BackfillCommand::Rejects { tenant, job } => rejects(&admin, &tenant.tenant, &job),
    }
}

fn jobs_path(tenant_id: &str) -> String {
    format!("/tenants/{tenant_id}/backfills")
}

fn job_path(tenant_id: &str, job_id: &str) -> String {
    format!("/tenants/{tenant_id}/backfills/{job_id}")
}

/// `--mapping`: a preset name, or `@path` to a JSON mapping object.
pub fn mapping_value(mapping: &str) -> Result<Value, CliError> {
    let Some(path) = mapping.strip_prefix('@') else {
        return Ok(Value::String(mapping.to_string()));
    };
    let text = std::fs::read_to_string(path)
        .map_err(|error| CliError::Failed(format!("cannot read the mapping {path}: {error}")))?;
    serde_json::from_str(&text)
        .map_err(|error| CliError::Failed(format!("the mapping {path} is not JSON: {error}")))
}

/// Prints a job: the API's JSON, or `render` for people.
fn show(admin: &Admin, job: &Value, render: impl FnOnce(&Value) -> String) {
    if admin.json {
        admin.print_json(job);
    } else {
        print!("{}", render(job));
    }
}

/// What `create` makes: a file backfill or a source's listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Creating {
    File { format: String, mapping: String },
    Listing { from: String, to: Option<String> },
}

/// The body of `POST …/backfills` for `what`.
pub fn create_body(source: String, what: &Creating, label: String) -> Result<Value, CliError> {
    let mut body = serde_json::json!({"source": source, "label": label});
    match what {
        Creating::File { format, mapping } => {
            body["format"] = Value::String(format.clone());
            body["mapping"] = mapping_value(mapping)?;
        }
        Creating::Listing { from, to } => {
            body["from"] = Value::String(from.clone());
            if let Some(to) = to {
                body["to"] = Value::String(to.clone());
            }
        }
    }
    Ok(body)
}

fn create(
    admin: &Admin,
    tenant_id: &str,
    source: String,
    what: Creating,
    label: String,
) -> Result<(), CliError> {
    let body = create_body(source, &what, label)?;
    let job = admin.post(&jobs_path(tenant_id), Some(&body))?;
    show(admin, &job, |job| {
        let job_id = job["id"].as_str().unwrap_or("JOB");
        let next = match what {
            Creating::File { .. } => format!("upload --tenant {tenant_id} {job_id} FILE"),
            Creating::Listing { .. } => format!("dry-run --tenant {tenant_id} {job_id}"),
        };
        format!(
            "{}\nnext: steward backfill {next}\n",
            report::status_text(job).trim_end()
        )
    });
    Ok(())
}

fn upload(admin: &Admin, tenant_id: &str, job_id: &str, file: PathBuf) -> Result<(), CliError> {
    let job = admin.get(&job_path(tenant_id, job_id))?;
    if job.get("listing").is_some() {
        return Err(CliError::Failed(format!(
            "backfill {job_id} reads its source's listing: a listing job has no file (its dry \
             run started when it was created: steward backfill dry-run --tenant {tenant_id} {job_id})"
        )));
    }
    let format = job["format"].as_str().unwrap_or("csv");
    let content_type = crate::http::admin_backfill::upload::content_type_of(format);
    let opened = std::fs::File::open(&file)
        .map_err(|error| CliError::Failed(format!("cannot open {}: {error}", file.display())))?;
    let length = opened
        .metadata()
        .map_err(|error| CliError::Failed(format!("cannot read {}: {error}", file.display())))?
        .len();
    let bar = bytes_bar(length, bars_shown(admin.json));
    bar.set_message("uploading");
    let reader = CountingReader::new(opened, bar.clone());
    let answer = admin.send_stream(
        reqwest::Method::PUT,
        &format!("{}/file", job_path(tenant_id, job_id)),
        content_type,
        reader,
        length,
    );
    bar.finish_and_clear();
    let job = answer?;
    show(admin, &job, |job| {
        format!(
            "{}\nnext: steward backfill dry-run --tenant {tenant_id} {job_id}\n",
            report::status_text(job).trim_end()
        )
    });
    Ok(())
}

/// Asks for the job every [`POLL_EVERY`] until `done` says it is finished; `tick` sees each
/// view on the way.
fn follow(
    admin: &Admin,
    path: &str,
    mut tick: impl FnMut(&Value),
    done: impl Fn(&Value) -> bool,
) -> Result<Value, CliError> {
    loop {
        let job = admin.get(path)?;
        tick(&job);
        if done(&job) {
            return Ok(job);
        }
        std::thread::sleep(POLL_EVERY);
    }
}

fn dry_run(admin: &Admin, tenant_id: &str, job_id: &str) -> Result<(), CliError> {
    let path = job_path(tenant_id, job_id);
    let shown = bars_shown(admin.json);
    let first = admin.get(&path)?;
    if first["state"] == "awaiting_file" {
        return Err(CliError::Failed(format!(
            "backfill {job_id} has no file yet: steward backfill upload --tenant {tenant_id} {job_id} FILE"
        )));
    }
    let bar = match first["file_bytes"].as_u64() {
        Some(bytes) if bytes > 0 => bytes_bar(bytes, shown),
        _ => spinner(shown),
    };
    let job = follow(
        admin,
        &path,
        |job| {
            bar.set_position(job["dry_run"]["bytes_read"].as_u64().unwrap_or(0));
            bar.set_message(report::dry_run_read(job));
        },
        |job| job["state"] != "validating",
    )?;
    bar.finish_and_clear();
    show(admin, &job, |job| report::dry_run_text(job, tenant_id));
    if job["dry_run"]["complete"] != true {
        return Err(CliError::Failed(format!(
            "the dry run of {job_id} did not finish: the job is {}{}",
            job["state"].as_str().unwrap_or("?"),
            job["error"]
                .as_str()
                .map(|error| format!(" ({error})"))
                .unwrap_or_default()
        )));
    }
    Ok(())
}

fn act(admin: &Admin, tenant_id: &str, job_id: &str, action: &str) -> Result<(), CliError> {
    let job = admin.post(&format!("{}/{action}", job_path(tenant_id, job_id)), None)?;
    show(admin, &job, report::status_text);
    Ok(())
}

/// States a job does not leave.
fn is_final(job: &Value) -> bool {
    matches!(
        job["state"].as_str(),
        Some("done" | "cancelled" | "failed") | None
    )
}

fn status(admin: &Admin, tenant_id: &str, job_id: &str, watch: bool) -> Result<(), CliError> {
    let path = job_path(tenant_id, job_id);
    if !watch {
        let job = admin.get(&path)?;
        show(admin, &job, report::status_text);
        return Ok(());
    }
    let bar = percent_bar(bars_shown(admin.json));
    let job = follow(
        admin,
        &path,
        |job| {
            bar.set_position(job["progress"]["percent"].as_f64().unwrap_or(0.0) as u64);
            bar.set_message(report::progress_line(job));
        },
        is_final,
    )?;
    bar.finish_and_clear();
    show(admin, &job, report::status_text);
    Ok(())
}

fn list(admin: &Admin, tenant_id: &str) -> Result<(), CliError> {
    let answer = admin.get(&jobs_path(tenant_id))?;
    show(admin, &answer, report::list_text);
    Ok(())
}

fn rejects(admin: &Admin, tenant_id: &str, job_id: &str) -> Result<(), CliError> {
    let response = admin.get_reader(&format!("{}/rejects", job_path(tenant_id, job_id)))?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut table = super::table::Table::new(&["ROW", "REASON"]);
    for line in BufReader::new(response).lines() {
        let line = line.map_err(|error| CliError::Unreachable {
            url: admin.base_url().to_string(),
            reason: format!("the rejects were cut off: {error}"),
        })?;
        if admin.json {
            // Printed as they come: a million rejects never sit in memory.
            let _ = writeln!(out, "{line}");
            continue;
        }
        let reject: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        table.row(vec![
            reject["row"].to_string(),
            reject["reason"].as_str().unwrap_or("").to_string(),
        ]);
    }
    if !admin.json {
        let _ = write!(out, "{}", table.render());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use serde_json::json;

    use super::*;

    /// `steward backfill …` parsed alone.
    #[derive(Parser, Debug)]
    struct Backfill {
        #[command(subcommand)]
        command: BackfillCommand,
    }

    fn parsed(args: &str) -> Result<BackfillCommand, clap::Error> {
        let words = std::iter::once("backfill").chain(args.split_whitespace());
        Backfill::try_parse_from(words).map(|cli| cli.command)
    }

    #[test]
    fn create_takes_a_file_s_mapping_or_a_listing_s_window() {
        // Goal: `--from` (with `--to` or not) makes a listing; `--mapping` a file backfill
        // with its format; `--from` beside `--format` or `--mapping`, `--to` alone or
        // neither `--mapping` nor `--from` are refused by the parser.
        let listing =
            parsed("create --tenant t --source constant_contact --from 2024-01-01 --to 2024-06-30 --label cc")
                .unwrap();
        let BackfillCommand::Create {
            from, to, mapping, ..
        } = listing
        else {
            panic!("{listing:?}");
        };
        assert_eq!(
            (from.as_deref(), to.as_deref(), mapping),
            (Some("2024-01-01"), Some("2024-06-30"), None)
        );
        let file =
            parsed("create --tenant t --source stripe --mapping stripe_payments_export --label l")
                .unwrap();
        let BackfillCommand::Create {
            format,
            mapping,
            from,
            ..
        } = file
        else {
            panic!("{file:?}");
        };
        assert_eq!(
            (format.as_str(), mapping.as_deref(), from),
            ("csv", Some("stripe_payments_export"), None)
        );
        for refused in [
            "create --tenant t --source cc --from 2024-01-01 --mapping m --label l",
            "create --tenant t --source cc --from 2024-01-01 --format ndjson --label l",
            "create --tenant t --source cc --to 2024-01-01 --mapping m --label l",
            "create --tenant t --source cc --to 2024-01-01 --label l",
            "create --tenant t --source cc --label l",
        ] {
            assert!(parsed(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn the_create_body_is_a_file_s_or_a_listing_s() {
        // Goal: a listing's body has `from` (and `to` when given), no format or mapping; a
        // file's has its format and mapping.
        let listing = Creating::Listing {
            from: "2024-01-01".into(),
            to: None,
        };
        assert_eq!(
            create_body("mailchimp".into(), &listing, "l".into()).unwrap(),
            json!({"source": "mailchimp", "from": "2024-01-01", "label": "l"})
        );
        let window = Creating::Listing {
            from: "2024-01-01".into(),
            to: Some("2024-02-01T00:00:00Z".into()),
        };
        assert_eq!(
            create_body("gala-co".into(), &window, "l".into()).unwrap()["to"],
            "2024-02-01T00:00:00Z"
        );
        let file = Creating::File {
            format: "csv".into(),
            mapping: "stripe_payments_export".into(),
        };
        assert_eq!(
            create_body("stripe".into(), &file, "l".into()).unwrap(),
            json!({"source": "stripe", "format": "csv",
                   "mapping": "stripe_payments_export", "label": "l"})
        );
    }
}
