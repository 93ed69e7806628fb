//! The `steward` command line. Thin: parse, load configuration, hand over to the library.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "steward",
    version,
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
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    steward::telemetry::init_logging();
    let outcome = match cli.command {
        Command::Serve { config } => serve(config),
        Command::Sandbox { listen } => run_sandbox(listen),
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
    actix_rt::System::new().block_on(steward::app::serve(config))
}

fn run_sandbox(listen: SocketAddr) -> anyhow::Result<()> {
    actix_rt::System::new().block_on(async move {
        let handle =
            steward::sandbox::start(steward::sandbox::SandboxConfig { listen, workers: 0 }).await?;
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
