//! `steward demo`: the whole pattern-1 loop in one process, against the embedded sandbox.
//!
//! The engine runs exactly as `steward serve` does ([`crate::app::serve_until`]) on a fresh
//! data dir, with the embedded Virtuous simulator and every listener on `127.0.0.1:0`. The
//! demo then acts as the outside world over loopback: it creates tenants through the admin
//! API, sends signed Stripe traffic ([`crate::traffic`]) to `/hooks/{tenant}/stripe`, waits
//! for submission, runs the sandbox's import step (what Virtuous staff or the nightly job
//! do), waits for confirmation, then for the refunds (sent once their gift is confirmed),
//! and checks the end state: one gift per unique payment, every payment `confirmed`, no
//! dead letters. Progress is printed while it runs, a summary table at the end.
//!
//! Then pattern 2 (`polled`): a Constant Contact tenant whose contacts are polled (two runs
//! with edits, unsubscribes and deletions between them) and a Mailchimp tenant whose audience
//! webhooks lose 10 % on the way while members are polled as the backstop; it prints the
//! parity table and checks that the facts seen by polling only are exactly the lost webhooks.
//!
//! Then CDC (`cdc`): a partner's own PostgreSQL database as a source. A throwaway cluster
//! (`initdb`, `pg_ctl`, logical decoding on) is snapshotted and streamed through a
//! replication slot; every donation row must be exactly one gift in Virtuous. Without
//! PostgreSQL's server binaries the part is skipped with one line.
//!
//! Then pattern 3 (`pull`): a tenant pulling Virtuous's gift and contact changes into NDJSON
//! files in the data dir (`pull-out/`): imports, staff edits and deletes in the sandbox, 20 %
//! of the webhooks lost and found by a backstop poll; the files are checked against Virtuous.
//!
//! # Layout
//! - `client`: the HTTP client of the engine and of the sandbox control API.
//! - `polled`: the Constant Contact and Mailchimp tenants (pattern 2) and the parity table.
//! - `cdc`, `pg_cluster`: the Postgres source and the throwaway cluster it reads.
//! - `pull`: the pull tenant (pattern 3) and its NDJSON files.
//! - `report`: progress lines and the summary table.

mod backfill;
mod cdc;
mod client;
mod pg_cluster;
mod polled;
mod pull;
mod report;
mod two_way;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::StreamExt;

use crate::app::{BoundAddresses, ADMIN_TOKEN_FILE, LISTEN_ADDR_FILE};
use crate::config::Config;
use crate::traffic::{generate, Traffic, TrafficOptions};
use client::{tenant_document, Delivery, DemoClient, Endpoints, Snapshot};
pub use report::TenantSummary;

/// `steward demo` options.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub tenants: usize,
    /// Unique payments per tenant (each becomes 1–4 webhook events, plus re-deliveries).
    pub payments_per_tenant: usize,
    pub seed: u64,
    /// The whole run must converge within this.
    pub timeout_s: u64,
    /// Keep the engine's data here (else a temporary dir, removed after a successful run).
    pub data_dir: Option<PathBuf>,
}

/// Deliveries in flight per tenant.
const DELIVERY_CONCURRENCY: usize = 8;
/// How often the demo polls, and prints progress at least this often while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(250);
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// One demo tenant: its id, secret and traffic.
struct DemoTenant {
    id: String,
    signing_secret: String,
    traffic: Traffic,
    queued: u64,
    acknowledged: u64,
}

impl DemoTenant {
    fn payments(&self) -> u64 {
        self.traffic.payments.len() as u64
    }
    /// Transactions Virtuous receives before refunds: one per payment and per customer.
    fn transactions_before_refunds(&self) -> u64 {
        self.payments() + self.traffic.customer_ids().len() as u64
    }
    fn refunds(&self) -> u64 {
        self.traffic.refunded_payment_ids().len() as u64
    }
}

/// Runs the demo; `Ok` with the summary when everything converged.
pub async fn run(options: DemoOptions) -> anyhow::Result<Vec<TenantSummary>> {
    anyhow::ensure!(
        (1..=20).contains(&options.tenants),
        "--tenants must be 1 to 20"
    );
    anyhow::ensure!(
        (1..=10_000).contains(&options.payments_per_tenant),
        "--events must be 1 to 10000"
    );
    let (data_dir, temporary) = match &options.data_dir {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!(
                "steward-demo-{}-{:08x}",
                std::process::id(),
                rand::random::<u32>()
            )),
            true,
        ),
    };
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    println!("steward demo: engine data in {}", data_dir.display());
    let config = demo_config(&data_dir)?;
    let shutdown_deadline = Duration::from_secs(config.shutdown_deadline_s + 5);

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let engine = actix_rt::spawn(crate::app::serve_until(config, async move {
        let _ = stopped.await;
        "demo finished"
    }));
    let outcome = tokio::select! {
        outcome = drive(&options, &data_dir, &engine) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    println!("steward demo: shutting the engine down");
    let _ = stop.send(());
    match tokio::time::timeout(shutdown_deadline, engine).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(err))) => eprintln!("steward demo: the engine stopped with an error: {err:#}"),
        Ok(Err(err)) => eprintln!("steward demo: the engine task failed: {err}"),
        Err(_) => eprintln!("steward demo: the engine did not stop within {shutdown_deadline:?}"),
    }
    match (&outcome, temporary) {
        (Ok(_), true) => {
            let _ = std::fs::remove_dir_all(&data_dir);
        }
        // A failed run keeps its data: `steward serve` with STEWARD_DATA_DIR there shows it.
        (Err(_), true) => println!(
            "steward demo: the engine's data is kept for inspection in {}",
            data_dir.display()
        ),
        (_, false) => {}
    }
    outcome
}

/// `serve`'s configuration for the demo: loopback, port 0, the embedded sandbox, short
/// retry waits and a reconcile pass every 2 s so the loop closes in seconds. The main
/// listener takes a free port chosen here, so that `public_url` can name it: the pull
/// tenant's Virtuous webhooks are delivered there. Children tick every second (the backstop
/// poll asked for starts on the next tick).
fn demo_config(data_dir: &std::path::Path) -> anyhow::Result<Config> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .context("finding a free loopback port")?
        .port();
    let overrides = [
        ("STEWARD_DATA_DIR", data_dir.display().to_string()),
        ("STEWARD_LISTEN", format!("127.0.0.1:{port}")),
        ("STEWARD_PUBLIC_URL", format!("http://127.0.0.1:{port}")),
        ("STEWARD_RUNTIME__HEARTBEAT_MS", "2000".into()),
        ("STEWARD_ADMIN_LISTEN", "127.0.0.1:0".into()),
        ("STEWARD_SANDBOX__EMBEDDED", "true".into()),
        ("STEWARD_SANDBOX__LISTEN", "127.0.0.1:0".into()),
        // The demo runs the import step itself (and shows it), and registers webhooks only
        // for the tenants that ask, through `public_url`.
        ("STEWARD_SANDBOX__AUTO_PROCESS_AFTER_MS", "0".into()),
        ("STEWARD_SANDBOX__WEBHOOKS_TO_ENGINE", "false".into()),
        ("STEWARD_RECONCILER__INTERVAL_S", "2".into()),
        (
            "STEWARD_SUBMITTER__RETRY_SCHEDULE",
            r#"["500ms", "1s", "2s", "5s", "10s"]"#.into(),
        ),
        // The demo asks for reconcile passes through the test hook when the build has it.
        ("STEWARD_RUNTIME__TEST_HOOKS", "true".into()),
        ("STEWARD_SHUTDOWN_DEADLINE_S", "5".into()),
    ];
    let env = overrides
        .into_iter()
        .map(|(key, value)| (key.to_string(), value));
    Ok(Config::load(None, env)?)
}

/// Waits for the engine's listen-addr file, then reads the admin token.
async fn endpoints(
    data_dir: &std::path::Path,
    engine: &actix_rt::task::JoinHandle<anyhow::Result<()>>,
) -> anyhow::Result<Endpoints> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let bound: BoundAddresses = loop {
        if engine.is_finished() {
            bail!("the engine stopped while starting (see the log above)");
        }
        if let Ok(text) = std::fs::read_to_string(data_dir.join(LISTEN_ADDR_FILE)) {
            if let Ok(bound) = serde_json::from_str(&text) {
                break bound;
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the engine did not start within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let admin_token = match std::env::var("STEWARD_ADMIN_TOKEN") {
        Ok(token) => token,
        Err(_) => std::fs::read_to_string(data_dir.join(ADMIN_TOKEN_FILE))
            .context("reading the generated admin token")?
            .trim()
            .to_string(),
    };
    let main_url = format!("http://{}", bound.main);
    Ok(Endpoints {
        admin_url: bound
            .admin
            .map_or_else(|| main_url.clone(), |admin| format!("http://{admin}")),
        main_url,
        sandbox_url: bound
            .sandbox
            .context("the engine started without its embedded sandbox")?,
        admin_token,
    })
}

async fn drive(
    options: &DemoOptions,
    data_dir: &std::path::Path,
    engine: &actix_rt::task::JoinHandle<anyhow::Result<()>>,
) -> anyhow::Result<Vec<TenantSummary>> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(options.timeout_s);
    let client = DemoClient::new(endpoints(data_dir, engine).await?)?;
    let mut tenants = create_tenants(&client, options, started).await?;
    client.wait_ready(Duration::from_secs(30)).await?;
    deliver_all(&client, &mut tenants, started).await?;

    let watch = Watch {
        client: &client,
        tenants: &tenants,
        started,
        deadline,
    };
    watch
        .until("submission", |t, s| {
            s.transactions_received >= t.transactions_before_refunds()
        })
        .await?;
    watch.import("import").await?;
    watch
        .until("confirmation", |t, s| s.confirmed >= t.payments())
        .await?;
    if tenants.iter().any(|t| t.refunds() > 0) {
        watch
            .until("refunds", |t, s| {
                s.transactions_received >= t.transactions_before_refunds() + t.refunds()
            })
            .await?;
        watch.import("refund import").await?;
    }
    watch
        .until("gifts in Virtuous", |t, s| {
            s.gifts >= t.payments() + t.refunds()
        })
        .await?;
    let summaries = watch.verify().await?;
    // Pattern 2: polled and hybrid capture, with the parity table.
    let polled = polled::run(&client, options.seed, started, deadline).await?;
    // CDC: a partner's Postgres as a source (skipped without PostgreSQL's server binaries).
    let cdc = cdc::run(&client, options.seed, started, deadline).await?;
    // Pattern 3: Virtuous changes pulled into NDJSON files.
    let pulled = pull::run(&client, options.seed, data_dir, started, deadline).await?;
    // Pattern 4: two-way contact sync with a partner CRM.
    let two_way = two_way::run(&client, options.seed, started, deadline).await?;
    // Pattern 5: history from a Stripe payments export beside live payments.
    let backfilled = backfill::run(&client, options.seed, started, deadline).await?;
    println!();
    for line in polled
        .lines
        .into_iter()
        .chain(cdc)
        .chain(pulled)
        .chain(two_way)
        .chain(backfilled)
    {
        println!("steward demo: {line}");
    }
    Ok(summaries)
}

/// Creates the demo tenants, each with its own secrets and its own deterministic traffic.
async fn create_tenants(
    client: &DemoClient,
    options: &DemoOptions,
    started: Instant,
) -> anyhow::Result<Vec<DemoTenant>> {
    let mut tenants = Vec::new();
    for index in 1..=options.tenants {
        let id = format!("demo-{}-{index}", options.seed);
        let signing_secret = format!("whsec_demo_{:016x}", rand::random::<u64>());
        let api_key = format!("vk_demo_{:016x}", rand::random::<u64>());
        client
            .create_tenant(&tenant_document(&id, &signing_secret, &api_key))
            .await?;
        let traffic = generate(&TrafficOptions {
            seed: options.seed.wrapping_mul(1_000).wrapping_add(index as u64),
            payments: options.payments_per_tenant,
            refunds: 1,
            customer_share: 0.2,
            now_s: jiff::Timestamp::now().as_second(),
            ..TrafficOptions::default()
        });
        println!(
            "[{:>5.1}s] tenant {id}: created; {} events for {} payments (re-deliveries: {}, refunds: {})",
            started.elapsed().as_secs_f64(),
            traffic.events.len(),
            traffic.payments.len(),
            traffic.redeliveries(),
            traffic.refunded_payment_ids().len(),
        );
        tenants.push(DemoTenant {
            id,
            signing_secret,
            traffic,
            queued: 0,
            acknowledged: 0,
        });
    }

    Ok(tenants)
}

/// Stripe delivers: every tenant at once, a few deliveries in flight each.
async fn deliver_all(
    client: &DemoClient,
    tenants: &mut [DemoTenant],
    started: Instant,
) -> anyhow::Result<()> {
    let deliveries = tenants.iter().map(|tenant| async move {
        let answers: Vec<anyhow::Result<Delivery>> =
            futures_util::stream::iter(&tenant.traffic.events)
                .map(|event| client.deliver(&tenant.id, &tenant.signing_secret, event))
                .buffered(DELIVERY_CONCURRENCY)
                .collect()
                .await;
        answers
            .into_iter()
            .collect::<anyhow::Result<Vec<Delivery>>>()
    });
    let answers = futures_util::future::join_all(deliveries).await;
    for (tenant, answers) in tenants.iter_mut().zip(answers) {
        let answers = answers?;
        tenant.queued = answers.iter().filter(|a| **a == Delivery::Queued).count() as u64;
        tenant.acknowledged = answers.len() as u64 - tenant.queued;
    }
    println!(
        "[{:>5.1}s] all events delivered: {}",
        started.elapsed().as_secs_f64(),
        tenants
            .iter()
            .map(|t| format!(
                "{} {} queued / {} duplicate or ignored",
                t.id, t.queued, t.acknowledged
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );

    Ok(())
}

/// Polls every tenant's numbers until a condition holds for all, printing progress.
struct Watch<'a> {
    client: &'a DemoClient,
    tenants: &'a [DemoTenant],
    started: Instant,
    deadline: Instant,
}

impl Watch<'_> {
    async fn snapshots(&self) -> anyhow::Result<Vec<Snapshot>> {
        let mut snapshots = Vec::with_capacity(self.tenants.len());
        for tenant in self.tenants {
            snapshots.push(self.client.snapshot(&tenant.id).await?);
        }
        Ok(snapshots)
    }

    async fn until(
        &self,
        phase: &str,
        done: impl Fn(&DemoTenant, &Snapshot) -> bool,
    ) -> anyhow::Result<Vec<Snapshot>> {
        let mut last_print = Instant::now() - PROGRESS_INTERVAL;
        loop {
            let snapshots = self.snapshots().await?;
            let all_done = self
                .tenants
                .iter()
                .zip(&snapshots)
                .all(|(tenant, snapshot)| done(tenant, snapshot));
            if all_done || last_print.elapsed() >= PROGRESS_INTERVAL {
                println!(
                    "{}",
                    report::progress_line(
                        self.started,
                        phase,
                        self.tenants.iter().map(|t| t.id.as_str()),
                        &snapshots
                    )
                );
                last_print = Instant::now();
            }
            if all_done {
                return Ok(snapshots);
            }
            if phase == "confirmation" {
                for tenant in self.tenants {
                    self.client.trigger_reconcile(&tenant.id).await;
                }
            }
            if Instant::now() >= self.deadline {
                bail!(
                    "did not converge: phase `{phase}` unfinished after the --timeout-s deadline; last numbers: {}",
                    report::progress_line(self.started, phase, self.tenants.iter().map(|t| t.id.as_str()), &snapshots)
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    async fn import(&self, phase: &str) -> anyhow::Result<()> {
        for tenant in self.tenants {
            let imported = self.client.run_import(&tenant.id).await?;
            println!(
                "[{:>5.1}s] {phase} ({tenant}): imported {}, duplicates rejected {}, in review {}",
                self.started.elapsed().as_secs_f64(),
                imported["imported"],
                imported["rejected_duplicate"],
                imported["in_review"],
                tenant = tenant.id,
            );
        }
        Ok(())
    }

    /// The end state: one gift per unique payment (plus one reversal per refund), every
    /// payment's gift record confirmed, no dead letters.
    async fn verify(&self) -> anyhow::Result<Vec<TenantSummary>> {
        let snapshots = self.snapshots().await?;
        let mut summaries = Vec::new();
        let mut problems = Vec::new();
        for (tenant, snapshot) in self.tenants.iter().zip(&snapshots) {
            let expected_gifts = tenant.payments() + tenant.refunds();
            if snapshot.gifts != expected_gifts {
                problems.push(format!(
                    "{}: {} gifts in Virtuous, expected {expected_gifts} ({} payments + {} reversals)",
                    tenant.id, snapshot.gifts, tenant.payments(), tenant.refunds()
                ));
            }
            let mut unconfirmed = 0;
            for payment_id in tenant.traffic.unique_payment_ids() {
                let state = self
                    .client
                    .record_state(&tenant.id, "gift", &payment_id)
                    .await?;
                if state.as_deref() != Some("confirmed") {
                    unconfirmed += 1;
                }
            }
            if unconfirmed > 0 {
                problems.push(format!(
                    "{}: {unconfirmed} payments not confirmed",
                    tenant.id
                ));
            }
            if snapshot.dead > 0 {
                problems.push(format!("{}: {} dead letters", tenant.id, snapshot.dead));
            }
            summaries.push(TenantSummary {
                tenant_id: tenant.id.clone(),
                events_sent: tenant.traffic.events.len() as u64,
                queued: tenant.queued,
                acknowledged: tenant.acknowledged,
                payments: tenant.payments(),
                gifts_in_virtuous: snapshot.gifts,
                api_calls: snapshot.api_calls,
                budget_spent: snapshot.spent_last_hour,
                budget_allowance: snapshot.allowance_per_hour,
                confirmed: snapshot.confirmed,
                dead_letters: snapshot.dead,
            });
        }
        println!(
            "{}",
            report::summary_table(&summaries, self.started.elapsed())
        );
        if !problems.is_empty() {
            bail!("the end state is wrong: {}", problems.join("; "));
        }
        Ok(summaries)
    }
}
