//! The `steward` command line. Thin: parse, load configuration, hand over to the library.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "steward",
    version = steward::telemetry::VERSION_LINE,
    about = "Multi-tenant sync engine between nonprofits' source platforms and Virtuous CRM+"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the engine: admin API, ingress, tenant actors.
    Serve {
        /// Configuration file (TOML); STEWARD_… environment variables override its keys.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run the Virtuous CRM+ simulator on its own.
    Sandbox {
        #[arg(long, default_value = "127.0.0.1:8090")]
        listen: SocketAddr,
    },
    /// The whole loop in one process: the engine and an embedded Virtuous simulator on
    /// loopback, demo tenants, signed Stripe traffic, import, confirmation, a summary.
    Demo {
        /// Demo tenants (1–20).
        #[arg(long, default_value_t = 2)]
        tenants: usize,
        /// Unique payments per tenant (each becomes 1–4 Stripe events, plus re-deliveries).
        #[arg(long, default_value_t = 50)]
        events: usize,
        /// Seeds the generated traffic (same seed, same events).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Fail (exit 1) if the loop has not converged after this many seconds.
        #[arg(long, default_value_t = 120)]
        timeout_s: u64,
        /// Keep the engine's data here (default: a temporary dir, removed after a successful run).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Backfill jobs of a tenant through the admin API of a running `steward serve`:
    /// create, upload, dry-run, start, pause, resume, cancel, status, list, rejects.
    Backfill(steward::cli::backfill::BackfillArgs),
    /// A consistent backup of a running `steward serve` (its store and data files, never
    /// the master key), written to a new file.
    Backup(steward::cli::backup::BackupArgs),
    /// Restores a backup into a new or empty data dir (no server running on it).
    Restore(steward::cli::backup::RestoreArgs),
    /// Tenants of a running `steward serve`: list, show, create, patch, pause, resume,
    /// delete, test-connection; export (move one away) or import.
    Tenant(steward::cli::tenant::TenantArgs),
    /// Dead letters of a tenant: list, show, replay (as is or edited), discard.
    Dlq(steward::cli::dlq::DlqArgs),
    /// Where is my record? By source id or alias, donor email or Virtuous id.
    Records(steward::cli::records::RecordsArgs),
    /// Alerts: list (a tenant's, or every open one) and acknowledge.
    Alerts(steward::cli::alerts::AlertsArgs),
    /// Test events through the real ingress path (`trigger stripe`), like `stripe trigger`.
    Trigger(steward::cli::trigger::TriggerArgs),
    /// Polled sources of a tenant: list, runs, run now, pause, resume, reset the checkpoint.
    Pollers(steward::cli::patterns::PollersArgs),
    /// Pull destinations of a tenant: list, pause, resume; run the backstop poll.
    Destinations(steward::cli::patterns::DestinationsArgs),
    /// Two-way conflicts of a tenant: list and resolve.
    Conflicts(steward::cli::patterns::ConflictsArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if !matches!(
        cli.command,
        Command::Serve { .. } | Command::Sandbox { .. } | Command::Demo { .. }
    ) {
        steward::cli::end_quietly_on_closed_stdout();
    }
    let command = match cli.command {
        // A client of the admin API: no engine, no log; errors as `steward: code: message`.
        Command::Backfill(args) => return steward::cli::finish(steward::cli::backfill::run(args)),
        Command::Backup(args) => return steward::cli::finish(steward::cli::backup::backup(args)),
        Command::Restore(args) => return steward::cli::finish(steward::cli::backup::restore(args)),
        Command::Tenant(args) => return steward::cli::finish(steward::cli::tenant::run(args)),
        Command::Dlq(args) => return steward::cli::finish(steward::cli::dlq::run(args)),
        Command::Records(args) => return steward::cli::finish(steward::cli::records::run(args)),
        Command::Alerts(args) => return steward::cli::finish(steward::cli::alerts::run(args)),
        Command::Trigger(args) => return steward::cli::finish(steward::cli::trigger::run(args)),
        Command::Pollers(args) => {
            return steward::cli::finish(steward::cli::patterns::run_pollers(args))
        }
        Command::Destinations(args) => {
            return steward::cli::finish(steward::cli::patterns::run_destinations(args))
        }
        Command::Conflicts(args) => {
            return steward::cli::finish(steward::cli::patterns::run_conflicts(args))
        }
        engine_command => engine_command,
    };
    let log_filter_given =
        std::env::var_os("STEWARD_LOG").is_some() || std::env::var_os("RUST_LOG").is_some();
    if matches!(command, Command::Demo { .. }) && !log_filter_given {
        // The demo prints its own progress; the engine's log shows only problems. Set while
        // the process has one thread (before any runtime starts).
        std::env::set_var("STEWARD_LOG", "warn");
    }
    if !matches!(command, Command::Serve { .. }) {
        // `serve` starts its log once its configuration (`log_format`) is read.
        steward::telemetry::init_logging(steward::telemetry::LogFormat::Text);
    }
    let outcome = match command {
        Command::Serve { config } => serve(config),
        Command::Sandbox { listen } => run_sandbox(listen),
        Command::Demo {
            tenants,
            events,
            seed,
            timeout_s,
            data_dir,
        } => run_demo(steward::demo::DemoOptions {
            tenants,
            payments_per_tenant: events,
            seed,
            timeout_s,
            data_dir,
        }),
        // Answered above, before the log starts.
        Command::Backfill(_)
        | Command::Backup(_)
        | Command::Restore(_)
        | Command::Tenant(_)
        | Command::Dlq(_)
        | Command::Records(_)
        | Command::Alerts(_)
        | Command::Trigger(_)
        | Command::Pollers(_)
        | Command::Destinations(_)
        | Command::Conflicts(_) => Ok(()),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("steward: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn serve(config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let config = steward::config::Config::load(config_path.as_deref(), std::env::vars())?;
    steward::telemetry::init_logging(config.log_format);
    if let Ok(spec) = std::env::var("STEWARD_FAILPOINTS") {
        let armed =
            steward_actors::failpoint::configure(&spec).map_err(|err| anyhow::anyhow!(err))?;
        tracing::warn!(
            failpoints = %spec,
            armed,
            "crash points armed: this process will kill itself where they fire (tests only)"
        );
    }
    actix_rt::System::new().block_on(steward::app::serve(config))
}

fn run_sandbox(listen: SocketAddr) -> anyhow::Result<()> {
    actix_rt::System::new().block_on(async move {
        let handle =
            steward_sandbox::start(steward_sandbox::SandboxConfig { listen, workers: 0 }).await?;
        // One line on stdout that scripts (and tests using port 0) can read.
        println!("steward sandbox listening on {}", handle.base_url());
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate = signal(SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        handle.stop().await;
        Ok(())
    })
}

fn run_demo(options: steward::demo::DemoOptions) -> anyhow::Result<()> {
    actix_rt::System::new().block_on(async move {
        steward::demo::run(options).await?;
        println!("steward demo: every payment reached Virtuous exactly once and was confirmed");
        Ok(())
    })
}
