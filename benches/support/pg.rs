//! A throwaway PostgreSQL cluster on loopback for the pull benchmark (the benches' copy of
//! `tests/it/pg_support.rs`, which benches cannot import): initdb into a temp dir, `pg_ctl
//! start` on a free port, trust auth for user `steward`. As root, the cluster runs as the
//! unprivileged `postgres` user through `runuser`. Stopped and removed on drop.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

pub struct PgCluster {
    root: PathBuf,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl PgCluster {
    /// initdb + start on a free loopback port; panics with what to do when the server
    /// binaries are missing.
    pub fn start() -> PgCluster {
        let bin = server_bin_dir();
        let root = tempfile::Builder::new()
            .prefix("steward-bench-pg-")
            .tempdir()
            .expect("temp dir for a Postgres cluster")
            .keep();
        let as_postgres = unsafe { libc::geteuid() } == 0;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let cluster = PgCluster {
            root,
            bin,
            port,
            as_postgres,
        };
        if as_postgres {
            let chowned = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&cluster.root)
                .output()
                .expect("chown");
            assert!(chowned.status.success(), "chown: {chowned:?}");
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
            .expect("run initdb");
        cluster.assert_success(&initdb, "initdb");
        // Durable settings (fsync on): the destination's commits cost what they would cost
        // on a real server with a local disk.
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {}",
            cluster.port,
            cluster.root.display()
        );
        let started = cluster
            .pg_ctl()
            .arg("-l")
            .arg(cluster.root.join("server.log"))
            .args(["-o", &options, "start", "-w", "-t", "60"])
            .output()
            .expect("run pg_ctl start");
        cluster.assert_success(&started, "pg_ctl start");
        cluster
    }

    pub fn dsn(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=steward dbname=postgres sslmode=disable",
            self.port
        )
    }

    /// The server's version line (`postgres --version`).
    pub fn version(&self) -> String {
        Command::new(self.bin.join("postgres"))
            .arg("--version")
            .output()
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string())
            .unwrap_or_default()
    }

    /// The postmaster's pid (the first line of `postmaster.pid`).
    pub fn postmaster_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.data_dir().join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// A client connection; its driver runs on the current runtime.
    pub async fn connect(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.dsn(), tokio_postgres::NoTls)
            .await
            .expect("connect to the bench cluster");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }

    fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    fn pg_ctl(&self) -> Command {
        let mut command = self.command("pg_ctl");
        command.arg("-D").arg(self.data_dir());
        command
    }

    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    fn assert_success(&self, output: &Output, what: &str) {
        assert!(
            output.status.success(),
            "{what} failed ({}): {}{}\nserver log:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            std::fs::read_to_string(self.root.join("server.log")).unwrap_or_default()
        );
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self
            .pg_ctl()
            .args(["stop", "-m", "immediate", "-w", "-t", "10"])
            .output();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The newest `/usr/lib/postgresql/*/bin` holding `initdb` and `pg_ctl`.
fn server_bin_dir() -> PathBuf {
    let mut candidates: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((version, bin))
        })
        .collect();
    candidates.sort();
    match candidates.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: run .ci/run \
             or apt-get install postgresql"
        ),
    }
}
