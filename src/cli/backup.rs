//! `steward backup --to FILE` (through the admin API of a running `steward serve`) and
//! `steward restore --from FILE --data-dir DIR` (offline, into an empty data dir).

use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};

use clap::Args;
use steward_actors::store::snapshot_format::{SnapshotItem, SnapshotReader};

use super::progress::{bars_shown, bytes_bar, spinner, CountingReader};
use super::{Admin, AdminArgs, CliError};

#[derive(Args, Debug)]
pub struct BackupArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Where to write the backup (a new file: an existing one is never overwritten).
    #[arg(long, value_name = "FILE")]
    pub to: PathBuf,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// A backup written by `steward backup`.
    #[arg(long, value_name = "FILE")]
    pub from: PathBuf,
    /// The data dir to restore into: new, or empty. Start `steward serve` on it afterwards
    /// with the master key of the instance the backup came from.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Print the outcome as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The hidden name a download is written under until it is whole and verified.
fn partial_path(to: &Path) -> PathBuf {
    let name = to
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    to.with_file_name(format!(".{name}.partial"))
}

/// Reads a stream to its end: its digest and counts hold.
pub fn verify(path: &Path) -> Result<(u64, u64), CliError> {
    let file = std::fs::File::open(path)
        .map_err(|error| CliError::Failed(format!("cannot open {}: {error}", path.display())))?;
    let mut reader = SnapshotReader::open(BufReader::new(file))
        .map_err(|error| CliError::Failed(format!("{}: {error}", path.display())))?;
    loop {
        match reader.next_item() {
            Ok(SnapshotItem::End(counts)) => return Ok((counts.entries, counts.files)),
            Ok(_) => {}
            Err(error) => {
                return Err(CliError::Failed(format!("{}: {error}", path.display())));
            }
        }
    }
}

/// What a downloaded stream holds: its bytes, store entries and files.
pub struct Downloaded {
    pub bytes: u64,
    pub entries: u64,
    pub files: u64,
}

/// Streams the answer of `POST /v1{route}` into `to` (through a hidden partial name, checked,
/// then linked): never a half-written file at `to`.
pub fn download(admin: &Admin, route: &str, to: &Path, what: &str) -> Result<Downloaded, CliError> {
    if to.exists() {
        return Err(CliError::Failed(format!(
            "{} exists: give a new file name",
            to.display()
        )));
    }
    let waiting = spinner(bars_shown(admin.json));
    waiting.set_message(format!("{what}: the server is copying the store"));
    let response = admin.post_reader(route);
    waiting.finish_and_clear();
    let response = response?;
    let length = response.content_length().unwrap_or(0);
    let partial = partial_path(to);
    let written = (|| {
        let mut out = std::fs::File::create(&partial).map_err(|error| {
            CliError::Failed(format!("cannot create {}: {error}", partial.display()))
        })?;
        let bar = bytes_bar(length, bars_shown(admin.json));
        bar.set_message(format!("downloading the {what}"));
        let mut body = CountingReader::new(response, bar.clone());
        let copied = std::io::copy(&mut body, &mut out);
        bar.finish_and_clear();
        let copied = copied.map_err(|error| {
            CliError::Failed(format!("the {what} download was cut off: {error}"))
        })?;
        out.flush().and_then(|()| out.sync_all()).map_err(|error| {
            CliError::Failed(format!("cannot write {}: {error}", partial.display()))
        })?;
        if length != 0 && copied != length {
            return Err(CliError::Failed(format!(
                "the {what} download ended after {copied} of {length} bytes"
            )));
        }
        let (entries, files) = verify(&partial)?;
        // A link, not a rename: it fails rather than replace a file made at `to` meanwhile.
        std::fs::hard_link(&partial, to)
            .map_err(|error| CliError::Failed(format!("cannot write {}: {error}", to.display())))?;
        let _ = std::fs::remove_file(&partial);
        Ok(Downloaded {
            bytes: copied,
            entries,
            files,
        })
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written
}

/// `steward backup --to FILE`.
pub fn backup(args: BackupArgs) -> Result<(), CliError> {
    let admin = Admin::connect(&args.admin)?;
    let Downloaded {
        bytes,
        entries,
        files,
    } = download(&admin, "/backup", &args.to, "backup")?;
    if admin.json {
        admin.print_json(&serde_json::json!({
            "file": args.to.display().to_string(),
            "bytes": bytes,
            "entries": entries,
            "files": files,
        }));
    } else {
        println!(
            "backup written to {} ({bytes} bytes: {entries} store entries, {files} files; digest checked)\n\
             The master key is not in it: keep master.key (or STEWARD_MASTER_KEY) apart.",
            args.to.display()
        );
    }
    Ok(())
}

/// `steward restore --from FILE --data-dir DIR`.
pub fn restore(args: RestoreArgs) -> Result<(), CliError> {
    let summary = crate::tenants::backup::restore(&args.from, &args.data_dir)
        .map_err(|error| CliError::Failed(format!("restore failed: {error}")))?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "data_dir": args.data_dir.display().to_string(),
                "entries": summary.entries,
                "files": summary.files,
                "bytes": summary.bytes,
            })
        );
    } else {
        println!(
            "restored {} store entries and {} files into {}\n\
             next: put the original master key in place (copy master.key into the data dir, or set \
             STEWARD_MASTER_KEY), then: steward serve --config … with data_dir = {}",
            summary.entries,
            summary.files,
            args.data_dir.display(),
            args.data_dir.display()
        );
    }
    Ok(())
}
