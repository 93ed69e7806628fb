//! A throwaway PostgreSQL cluster on loopback for the Postgres destination's and the CDC
//! source's tests: initdb into a temp dir, `pg_ctl start` on a free port, trust auth for user
//! `steward` (a superuser, so it may also replicate). The
//! server binaries come from the distribution's packages (`.ci/run` installs them). As
//! root (CI), the cluster runs as the unprivileged `postgres` user through `runuser`. The pull
//! benchmark includes this file too (`benches/pull.rs`) and starts a durable cluster.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;

/// A running (or stopped) throwaway cluster; dropping it stops it and removes its files.
pub struct PgCluster {
    root: PathBuf,
    bin: PathBuf,
    port: u16,
    /// Run the server binaries as `postgres` (we are root).
    as_postgres: bool,
    /// fsync on (benchmarks: commits cost what they cost on a real server); tests run
    /// without it.
    durable: bool,
    /// `wal_level=logical` with room for many replication slots (the CDC source's tests).
    logical: bool,
}

static SHARED: OnceLock<PgCluster> = OnceLock::new();
static SHARED_LOGICAL: OnceLock<PgCluster> = OnceLock::new();

extern "C" fn stop_shared_cluster() {
    if let Some(cluster) = SHARED.get() {
        cluster.stop_immediately_and_remove();
    }
}

extern "C" fn stop_shared_logical_cluster() {
    if let Some(cluster) = SHARED_LOGICAL.get() {
        cluster.stop_immediately_and_remove();
    }
}

impl PgCluster {
    /// One cluster for every test that only needs a database (each uses its own schema);
    /// stopped and removed when the test binary exits.
    pub fn shared() -> &'static PgCluster {
        SHARED.get_or_init(|| {
            let cluster = PgCluster::start();
            // SAFETY: registers a plain `extern "C" fn` that only reads a static.
            unsafe {
                libc::atexit(stop_shared_cluster);
            }
            cluster
        })
    }

    /// One logical-decoding cluster ([`PgCluster::start_logical`]) for every CDC test (each
    /// uses its own schema, publication and slot); stopped and removed when the test binary
    /// exits.
    pub fn shared_logical() -> &'static PgCluster {
        SHARED_LOGICAL.get_or_init(|| {
            let cluster = PgCluster::start_logical();
            // SAFETY: registers a plain `extern "C" fn` that only reads a static.
            unsafe {
                libc::atexit(stop_shared_logical_cluster);
            }
            cluster
        })
    }

    /// initdb + start on a free loopback port. Panics with what to do when the server
    /// binaries are missing.
    pub fn start() -> PgCluster {
        PgCluster::start_with(false, false)
    }

    /// A cluster with fsync on (the benchmark's).
    pub fn start_durable() -> PgCluster {
        PgCluster::start_with(true, false)
    }

    /// A cluster a CDC source can read: `wal_level=logical`, 32 replication slots and 32
    /// WAL senders (tests share it, one slot each).
    pub fn start_logical() -> PgCluster {
        PgCluster::start_with(false, true)
    }

    fn start_with(durable: bool, logical: bool) -> PgCluster {
        let bin = server_bin_dir();
        let root = tempfile::Builder::new()
            .prefix("steward-pg-")
            .tempdir()
            .expect("temp dir for a Postgres cluster")
            .keep();
        let as_postgres = unsafe { libc::geteuid() } == 0;
        let cluster = PgCluster {
            root,
            bin,
            port: free_port(),
            as_postgres,
            durable,
            logical,
        };
        if as_postgres {
            let chowned = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&cluster.root)
                .output()
                .expect("chown");
            assert!(
                chowned.status.success(),
                "chown the cluster dir: {chowned:?}"
            );
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
        assert_success(&initdb, "initdb", &cluster);
        cluster.start_again();
        cluster
    }

    /// A libpq key=value DSN for the cluster's `postgres` database.
    pub fn dsn(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=steward dbname=postgres sslmode=disable",
            self.port
        )
    }

    /// Stops the server (fast shutdown: connections are cut); the data stays.
    pub fn stop(&self) {
        let output = self
            .pg_ctl()
            .args(["stop", "-m", "fast", "-w", "-t", "30"])
            .output()
            .expect("run pg_ctl stop");
        assert_success(&output, "pg_ctl stop", self);
    }

    /// Starts the server on the same port and data (after `stop`, and the first time).
    pub fn start_again(&self) {
        // synchronous_commit=off for the logical cluster too, as a partner's server tuned for
        // speed may run: a commit returns before its WAL is flushed, and logical decoding
        // reads only flushed WAL, so a CDC reader must never take a position past
        // `pg_current_wal_flush_lsn()` for what it has read.
        let fast = if self.durable {
            ""
        } else {
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        };
        let logical = if self.logical {
            " -c wal_level=logical -c max_replication_slots=32 -c max_wal_senders=32"
        } else {
            ""
        };
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {}{fast}{logical}",
            self.port,
            self.root.display()
        );
        let output = self
            .pg_ctl()
            .arg("-l")
            .arg(self.root.join("server.log"))
            .args(["-o", &options, "start", "-w", "-t", "30"])
            .output()
            .expect("run pg_ctl start");
        assert_success(&output, "pg_ctl start", self);
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

    /// A client connection for assertions (its driver runs on the current runtime).
    pub async fn connect(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.dsn(), tokio_postgres::NoTls)
            .await
            .expect("connect to the test cluster");
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

    fn stop_immediately_and_remove(&self) {
        let _ = self
            .pg_ctl()
            .args(["stop", "-m", "immediate", "-w", "-t", "10"])
            .output();
        let _ = std::fs::remove_dir_all(&self.root);
    }

    fn server_log(&self) -> String {
        std::fs::read_to_string(self.root.join("server.log")).unwrap_or_default()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop_immediately_and_remove();
    }
}

fn assert_success(output: &Output, what: &str, cluster: &PgCluster) {
    assert!(
        output.status.success(),
        "{what} failed ({}): {}{}\nserver log:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        cluster.server_log()
    );
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

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// A schema name unique to a test (tests share the cluster).
pub fn unique_schema(test: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{test}_{}_{n}", std::process::id())
}
