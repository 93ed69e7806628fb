//! A throwaway PostgreSQL cluster for the demo's CDC part, made the way the integration
//! tests make theirs (tests/it/pg_support.rs): `initdb` with trust auth for user `steward`
//! into a fresh temporary dir, `pg_ctl start` on a free loopback port with the socket in
//! that dir, and — when we are root — the server binaries run as the unprivileged
//! `postgres` user through `runuser`, after the dir is chowned to it. Unlike the tests'
//! cluster it runs with `wal_level=logical`, and it answers errors instead of panicking: the
//! demo skips its CDC part when no cluster can be had.
//!
//! Dropping the cluster stops it (`immediate`) and removes its files, so an error or an
//! interruption anywhere in the demo leaves nothing running.

use std::path::{Path, PathBuf};
use std::process::Output;

use anyhow::{bail, Context};

/// A dir holding `initdb` and `pg_ctl` to use instead of the newest
/// `/usr/lib/postgresql/*/bin`.
pub const BIN_ENV: &str = "STEWARD_DEMO_PG_BIN";

/// Where the server binaries are: `STEWARD_DEMO_PG_BIN` when set, else the newest
/// `/usr/lib/postgresql/*/bin` holding `initdb` and `pg_ctl` (Debian's and Ubuntu's layout,
/// as `apt-get install postgresql` leaves it). `Err` says why there are none.
pub fn server_bin_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os(BIN_ENV).filter(|dir| !dir.is_empty()) {
        let dir = PathBuf::from(dir);
        return if has_server_binaries(&dir) {
            Ok(dir)
        } else {
            Err(format!(
                "{BIN_ENV}={} holds no initdb and pg_ctl",
                dir.display()
            ))
        };
    }
    let mut candidates: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            has_server_binaries(&bin).then_some((version, bin))
        })
        .collect();
    candidates.sort();
    candidates
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| "no PostgreSQL server binaries (apt-get install postgresql)".to_string())
}

fn has_server_binaries(dir: &Path) -> bool {
    dir.join("initdb").is_file() && dir.join("pg_ctl").is_file()
}

/// A running throwaway cluster; dropping it stops it and removes its files.
pub struct PgCluster {
    root: PathBuf,
    bin: PathBuf,
    port: u16,
    /// Run the server binaries as `postgres` (we are root: Postgres refuses to run as root).
    as_postgres: bool,
    /// The server may be running (a stop is due).
    running: bool,
}

impl PgCluster {
    /// initdb + start on a free loopback port, with logical decoding on.
    pub async fn start(bin: PathBuf) -> anyhow::Result<PgCluster> {
        let root = std::env::temp_dir().join(format!(
            "steward-demo-pg-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir(&root).with_context(|| format!("creating {}", root.display()))?;
        // From here on, dropping `cluster` removes the dir (and stops a started server).
        let mut cluster = PgCluster {
            root,
            bin,
            port: free_port()?,
            // SAFETY: geteuid has no preconditions and cannot fail.
            as_postgres: unsafe { libc::geteuid() } == 0,
            running: false,
        };
        if cluster.as_postgres {
            let chowned = tokio::process::Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&cluster.root)
                .output()
                .await
                .context("running chown")?;
            cluster.check(&chowned, "chown -R postgres:postgres")?;
        }
        let initdb = cluster
            .command("initdb")
            .arg("-D")
            .arg(cluster.data_dir())
            .args([
                "--auth=trust",
                "--username=steward",
                "--encoding=UTF8",
                "--no-sync",
            ])
            .output()
            .await
            .context("running initdb")?;
        cluster.check(&initdb, "initdb")?;
        // fsync off spares the disk; commits stay synchronous, as on a partner's server.
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c wal_level=logical -c fsync=off",
            cluster.port,
            cluster.root.display()
        );
        cluster.running = true;
        let started = cluster
            .pg_ctl()
            .arg("-l")
            .arg(cluster.root.join("server.log"))
            .args(["-o", &options, "start", "-w", "-t", "30"])
            .output()
            .await
            .context("running pg_ctl start")?;
        cluster.check(&started, "pg_ctl start")?;
        Ok(cluster)
    }

    /// A libpq key=value DSN for the cluster's `postgres` database.
    pub fn dsn(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=steward dbname=postgres sslmode=disable",
            self.port
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A client connection; its driver runs on the current runtime.
    pub async fn connect(&self) -> anyhow::Result<tokio_postgres::Client> {
        let (client, connection) = tokio_postgres::connect(&self.dsn(), tokio_postgres::NoTls)
            .await
            .with_context(|| format!("connecting to the demo's PostgreSQL ({})", self.dsn()))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    /// Stops the server (fast shutdown) and removes its files.
    pub async fn stop_and_remove(mut self) -> anyhow::Result<()> {
        let stopped = self
            .pg_ctl()
            .args(["stop", "-m", "fast", "-w", "-t", "30"])
            .output()
            .await
            .context("running pg_ctl stop")?;
        self.check(&stopped, "pg_ctl stop")?;
        self.running = false;
        std::fs::remove_dir_all(&self.root)
            .with_context(|| format!("removing {}", self.root.display()))
        // Drop finds nothing left to do.
    }

    fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    fn pg_ctl(&self) -> tokio::process::Command {
        let mut command = self.command("pg_ctl");
        command.arg("-D").arg(self.data_dir());
        command
    }

    fn command(&self, program: &str) -> tokio::process::Command {
        let program = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut command = tokio::process::Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            tokio::process::Command::new(program)
        };
        command.stdin(std::process::Stdio::null());
        command
    }

    /// `Ok` when the command succeeded; else what it and the server said.
    fn check(&self, output: &Output, what: &str) -> anyhow::Result<()> {
        if output.status.success() {
            return Ok(());
        }
        let log = std::fs::read_to_string(self.root.join("server.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        bail!(
            "{what} failed ({}): {}{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim(),
            if tail.is_empty() {
                String::new()
            } else {
                format!(
                    "; server log: {}",
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                )
            }
        )
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running {
            // Blocking, briefly: an immediate stop does not wait for clients.
            let mut command = if self.as_postgres {
                let mut command = std::process::Command::new("runuser");
                command
                    .args(["-u", "postgres", "--"])
                    .arg(self.bin.join("pg_ctl"));
                command
            } else {
                std::process::Command::new(self.bin.join("pg_ctl"))
            };
            let _ = command
                .arg("-D")
                .arg(self.data_dir())
                .args(["stop", "-m", "immediate", "-w", "-t", "10"])
                .stdin(std::process::Stdio::null())
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn free_port() -> anyhow::Result<u16> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    Ok(listener.local_addr()?.port())
}
