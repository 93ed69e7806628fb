//! Scale benchmark: 10,000 tenants on one node (issue 2 targets).
//!
//! Runs the real release `steward` binary on loopback with a fresh data dir, creates N
//! tenants through the admin API (closed loop, 16 concurrent clients, load generator in
//! this process), then measures: idle RSS and idle CPU of the steward process, the time to
//! render `/metrics`, disk use per tenant, and the restart time from exec to `/readyz` 200
//! with every tenant's children started.
//!
//! `STEWARD_BENCH_TENANTS` (default 10000) and `STEWARD_BENCH_IDLE_SECONDS` (default 30: two
//! tick periods of the default 30 s heartbeat, so the window sees every actor's ticks; the
//! window after the restart starts once the first ticks — spread over the first period — ran).
//! Exits non-zero if the work was not done (tenant count after restart ≠ N).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn spawn_steward(data_dir: &Path, log: &Path) -> Child {
    let _ = std::fs::remove_file(data_dir.join("listen-addr"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_steward"))
        .arg("serve")
        .env("STEWARD_DATA_DIR", data_dir)
        .env("STEWARD_LISTEN", "127.0.0.1:0")
        // One listener for health, /v1 and /metrics (behind the token): never 8081.
        .env("STEWARD_ADMIN_LISTEN", "shared")
        .env("STEWARD_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("STEWARD_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn steward")
}

async fn wait_for_address(data_dir: &Path, child: &mut Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let log = data_dir.parent().map(|dir| dir.join("steward.log"));
            let text = log.and_then(|log| std::fs::read_to_string(log).ok());
            panic!(
                "steward exited early: {status}; log:\n{}",
                text.unwrap_or_default()
            );
        }
        if let Ok(text) = std::fs::read_to_string(data_dir.join("listen-addr")) {
            let addresses: serde_json::Value = serde_json::from_str(&text).unwrap();
            return format!("http://{}", addresses["main"].as_str().unwrap());
        }
        assert!(
            Instant::now() < deadline,
            "steward did not start within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn wait_ready(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Ok(response) = client.get(format!("{base}/readyz")).send().await {
            if response.status() == 200 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "/readyz never answered 200");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// (RSS bytes, CPU ticks user+system) of a process, from /proc.
fn process_usage(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    (rss_kib * 1024, ticks)
}

fn dir_size(path: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(path).unwrap() {
        let entry = entry.unwrap();
        let metadata = entry.metadata().unwrap();
        total += if metadata.is_dir() {
            dir_size(&entry.path())
        } else {
            metadata.len()
        };
    }
    total
}

async fn measure_idle(pid: u32, idle_seconds: u64) -> (f64, f64) {
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let (_, ticks_before) = process_usage(pid);
    tokio::time::sleep(Duration::from_secs(idle_seconds)).await;
    let (rss, ticks_after) = process_usage(pid);
    let cpu_pct =
        (ticks_after - ticks_before) as f64 / ticks_per_second / idle_seconds as f64 * 100.0;
    (rss as f64 / (1024.0 * 1024.0), cpu_pct)
}

async fn scrape_metrics(client: &reqwest::Client, base: &str) -> (Duration, usize, usize) {
    let started = Instant::now();
    let text = client
        .get(format!("{base}/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .count();
    (started.elapsed(), text.len(), series)
}

/// The fleet list's page times (the dashboard's and `steward tenant list`'s one call), each
/// query asked `rounds` times: (query, median, slowest, total matched).
async fn time_fleet_pages(
    client: &reqwest::Client,
    base: &str,
    rounds: usize,
) -> Vec<(&'static str, Duration, Duration, u64)> {
    let queries = [
        "limit=50",
        "limit=50&sort=-depth",
        "limit=50&sort=name",
        "limit=50&q=tenant-0099",
        "limit=500&sort=-alerts",
    ];
    let mut timings = Vec::new();
    for query in queries {
        let mut times = Vec::with_capacity(rounds);
        let mut total = 0;
        for _ in 0..rounds {
            let started = Instant::now();
            let page: serde_json::Value = client
                .get(format!("{base}/v1/tenants?{query}"))
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            times.push(started.elapsed());
            total = page["total"].as_u64().unwrap_or(0);
            assert!(page["tenants"].is_array(), "{query}: {page}");
        }
        times.sort();
        timings.push((query, times[times.len() / 2], times[times.len() - 1], total));
    }
    timings
}

fn terminate(child: &mut Child) {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "steward exited with {status}");
}

#[tokio::main]
async fn main() {
    let tenant_count = env_number("STEWARD_BENCH_TENANTS", 10_000) as usize;
    let idle_seconds = env_number("STEWARD_BENCH_IDLE_SECONDS", 30);
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let log = dir.path().join("steward.log");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(32)
        .build()
        .unwrap();
    println!("benches/tenants: {tenant_count} tenants, idle window {idle_seconds} s, release steward on loopback");

    let mut child = spawn_steward(&data_dir, &log);
    let base = wait_for_address(&data_dir, &mut child).await;
    wait_ready(&client, &base).await;
    let created_started = Instant::now();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..16 {
        let client = client.clone();
        let base = base.clone();
        let next = next.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if index >= tenant_count {
                    return;
                }
                let id = format!("tenant-{index:05}");
                let body = serde_json::json!({"id": id, "name": format!("Nonprofit {index}"),
                    "virtuous": {"api_key": format!("vk-{index}-bench"), "base_url": "http://127.0.0.1:9"},
                    "sources": {"stripe": {"signing_secret": format!("whsec_{index}")}}});
                let response = client.post(format!("{base}/v1/tenants")).bearer_auth(ADMIN_TOKEN).json(&body).send().await.unwrap();
                assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    let create_seconds = created_started.elapsed().as_secs_f64();
    println!(
        "created {tenant_count} tenants in {create_seconds:.1} s ({:.0}/s)",
        tenant_count as f64 / create_seconds
    );
    wait_ready(&client, &base).await;

    // Settle as after the restart: the creates' store writes and first ticks are not idle work.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let (rss_mib, cpu_pct) = measure_idle(child.id(), idle_seconds).await;
    println!("idle after create: RSS {rss_mib:.0} MiB, CPU {cpu_pct:.2} % of one core over {idle_seconds} s");
    let (render, bytes, series) = scrape_metrics(&client, &base).await;
    println!(
        "/metrics: {:.0} ms, {} KiB, {series} series",
        render.as_secs_f64() * 1000.0,
        bytes / 1024
    );

    let fleet = time_fleet_pages(&client, &base, 10).await;
    for (query, median, slowest, total) in &fleet {
        println!(
            "GET /v1/tenants?{query}: median {:.0} ms, slowest {:.0} ms of 10 ({total} matched)",
            median.as_secs_f64() * 1000.0,
            slowest.as_secs_f64() * 1000.0
        );
    }
    let fleet_slowest = fleet
        .iter()
        .map(|(_, _, slowest, _)| *slowest)
        .max()
        .unwrap_or_default();

    terminate(&mut child);
    let disk = dir_size(&data_dir);
    println!(
        "disk after clean shutdown: {:.1} MiB ({:.1} KiB per tenant)",
        disk as f64 / 1048576.0,
        disk as f64 / 1024.0 / tenant_count as f64
    );

    let restart_started = Instant::now();
    let mut child = spawn_steward(&data_dir, &log);
    let base = wait_for_address(&data_dir, &mut child).await;
    wait_ready(&client, &base).await;
    let restart = restart_started.elapsed();
    println!(
        "restart: exec → /readyz 200 with {tenant_count} tenants started: {:.2} s",
        restart.as_secs_f64()
    );
    let readiness_after_restart: serde_json::Value = client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let list: serde_json::Value = client
        .get(format!("{base}/v1/tenants"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // Settle: first ticks after a start are spread over up to one tick period (15 s).
    tokio::time::sleep(Duration::from_secs(15)).await;
    let (rss_mib_restarted, cpu_pct_restarted) = measure_idle(child.id(), idle_seconds).await;
    println!("idle after restart: RSS {rss_mib_restarted:.0} MiB, CPU {cpu_pct_restarted:.2} % of one core");
    let (render, _, _) = scrape_metrics(&client, &base).await;
    println!(
        "/metrics after restart: {:.0} ms",
        render.as_secs_f64() * 1000.0
    );
    terminate(&mut child);

    let tenants_back = list["total"].as_u64().unwrap_or(0) as usize;
    assert_eq!(
        tenants_back, tenant_count,
        "every tenant is back after the restart"
    );
    assert_eq!(
        readiness_after_restart["tenants_running"].as_u64(),
        Some(tenant_count as u64),
        "every tenant runs after the restart: {readiness_after_restart}"
    );
    let targets = [
        ("restart ≤ 10 s", restart <= Duration::from_secs(10)),
        ("idle RSS ≤ 1 GiB", rss_mib.max(rss_mib_restarted) <= 1024.0),
        (
            "idle CPU ≤ 5 % of one core",
            cpu_pct.max(cpu_pct_restarted) <= 5.0,
        ),
        ("/metrics < 1 s", render < Duration::from_secs(1)),
        (
            "fleet page ≤ 500 ms",
            fleet_slowest <= Duration::from_millis(500),
        ),
    ];
    for (target, met) in targets {
        println!("target {target}: {}", if met { "met" } else { "MISSED" });
    }
}
