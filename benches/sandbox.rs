//! Sandbox throughput: ~1 KB single Gift Transaction POSTs over 64 keep-alive connections on
//! loopback, closed loop, for `STEWARD_BENCH_SECONDS` (default 10).
//!
//! The sandbox runs in-process on its own actix system thread (`STEWARD_BENCH_WORKERS`
//! workers, default 1); the load generator is a minimal HTTP/1.1 client on a current-thread
//! tokio runtime on the main thread (write a pre-built request, read the head, honour
//! Content-Length), so the two share this machine's cores. Every request carries a distinct
//! transactionId. Afterwards the run is checked through the stats endpoint: the sandbox's
//! `transactions_received` must equal the 200 answers the client counted, or the bench exits
//! non-zero (a bench that can silently measure nothing is a bug). Then one import step runs
//! over everything accepted and its rate is printed (every transaction must import).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use steward_sandbox::virtuous::OrgSpec;
use steward_sandbox::SandboxConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CONNECTIONS: usize = 64;
const API_KEY: &str = "bench-key";
const ORG_ID: &str = "bench";
/// Width of the per-request counter patched into the transactionId.
const COUNTER_DIGITS: usize = 10;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// Starts the sandbox on its own thread; returns its address and a stop switch.
fn start_sandbox(
    workers: usize,
) -> (
    SocketAddr,
    std::sync::mpsc::Sender<()>,
    std::thread::JoinHandle<()>,
) {
    let (addr_sender, addr_receiver) = std::sync::mpsc::channel();
    let (stop_sender, stop_receiver) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let handle = steward_sandbox::start(SandboxConfig {
                listen: "127.0.0.1:0".parse().expect("loopback address"),
                workers,
            })
            .await
            .expect("sandbox starts");
            let mut spec = OrgSpec::new(ORG_ID, API_KEY);
            spec.hourly_limit = u64::MAX / 2;
            handle.create_org(spec).expect("bench org");
            addr_sender.send(handle.addr()).expect("main thread waits");
            // Wait for the stop request without blocking the system's thread.
            loop {
                if stop_receiver.try_recv().is_ok() {
                    break;
                }
                actix_rt::time::sleep(Duration::from_millis(50)).await;
            }
            handle.stop().await;
        });
    });
    let addr = addr_receiver.recv().expect("sandbox reports its address");
    (addr, stop_sender, thread)
}

/// A ~1 KB Gift Transaction request; the transactionId ends with COUNTER_DIGITS zeros at
/// the returned offset, patched per request.
fn build_request(addr: SocketAddr, connection: usize) -> (Vec<u8>, usize) {
    let marker = "#".repeat(COUNTER_DIGITS);
    let body = format!(
        concat!(
            r#"{{"transactionSource":"Stripe","transactionId":"ch_bench_{connection:03}_{marker}","#,
            r#""amount":"125.50","currencyCode":"USD","giftDate":"2026-11-26","giftType":"Credit","#,
            r#""frequency":"OneTime","batch":"stripe-2026-11-26","segment":"WEB2026","#,
            r#""notes":"Online donation via Stripe checkout; thank-you email queued; donor opted in to newsletter.","#,
            r#""contact":{{"referenceId":"cus_Q3xY7bench{connection:03}","type":"Household","#,
            r#""firstName":"Alexandra","lastName":"Montgomery-Whitfield","email":"alexandra.montgomery@example.org","#,
            r#""emailType":"Home Email","phone":"+1 555 0100 200","phoneType":"Mobile Phone","#,
            r#""address":{{"address1":"1234 Evergreen Terrace","address2":"Apt 5B","city":"Springfield","#,
            r#""state":"IL","postal":"62704","country":"US"}},"tags":"online;stripe;2026"}},"#,
            r#""designations":[{{"code":"GENERAL","name":"General Fund","amountDesignated":"100.50"}},"#,
            r#"{{"code":"SCHOLAR","name":"Scholarship Fund","amountDesignated":"25.00"}}],"#,
            r#""customFields":{{"stripe_charge":"ch_3PqRsTuVwXyZ","stripe_customer":"cus_Q3xY7","#,
            r#""campaign":"giving-tuesday-2026","utm_source":"newsletter","utm_medium":"email"}},"#,
            r#""isPrivate":false,"isTaxDeductible":true,"creditCardType":"Visa","#,
            r#""submissionUrl":"https://give.example.org/donate?campaign=giving-tuesday-2026"}}"#
        ),
        connection = connection,
        marker = marker,
    );
    let head = format!(
        "POST /api/v2/Gift/Transaction HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {API_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let request = format!("{head}{body}").into_bytes();
    let offset = request
        .windows(COUNTER_DIGITS)
        .position(|window| window.iter().all(|&b| b == b'#'))
        .expect("marker present");
    (request, offset)
}

fn patch_counter(request: &mut [u8], offset: usize, mut counter: u64) {
    for index in (0..COUNTER_DIGITS).rev() {
        request[offset + index] = b'0' + (counter % 10) as u8;
        counter /= 10;
    }
}

/// Reads one response; returns its status. `buffer` keeps bytes between responses.
async fn read_response(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> std::io::Result<u16> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(head_end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buffer[..head_end]).map_err(std::io::Error::other)?;
            let status: u16 = head
                .get(9..12)
                .and_then(|code| code.parse().ok())
                .ok_or_else(|| std::io::Error::other("bad status line"))?;
            let content_length: usize = head
                .lines()
                .filter_map(|line| line.split_once(':'))
                .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, value)| value.trim().parse().ok())
                .unwrap_or(0);
            let total = head_end + 4 + content_length;
            while buffer.len() < total {
                let read = stream.read(&mut chunk).await?;
                if read == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                buffer.extend_from_slice(&chunk[..read]);
            }
            buffer.drain(..total);
            return Ok(status);
        }
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
}

struct ConnectionResult {
    ok_200: u64,
    other_status: u64,
    latency_us: Histogram<u64>,
}

async fn run_connection(
    addr: SocketAddr,
    connection: usize,
    deadline: Instant,
) -> std::io::Result<ConnectionResult> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut request, offset) = build_request(addr, connection);
    let mut buffer = Vec::with_capacity(8192);
    let mut result = ConnectionResult {
        ok_200: 0,
        other_status: 0,
        latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
    };
    let mut counter = 0u64;
    while Instant::now() < deadline {
        counter += 1;
        patch_counter(&mut request, offset, counter);
        let started = Instant::now();
        stream.write_all(&request).await?;
        let status = read_response(&mut stream, &mut buffer).await?;
        let elapsed_us = started.elapsed().as_micros() as u64;
        result.latency_us.saturating_record(elapsed_us.max(1));
        if status == 200 {
            result.ok_200 += 1;
        } else {
            result.other_status += 1;
        }
    }
    Ok(result)
}

/// A control call (`GET /_sandbox/orgs/bench/stats`, `POST …/process`) over a fresh
/// connection; returns the JSON body.
async fn control(
    addr: SocketAddr,
    method: &str,
    route: &str,
) -> std::io::Result<serde_json::Value> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!(
        "{method} /_sandbox/orgs/{ORG_ID}/{route} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let head_end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no response head"))?;
    serde_json::from_slice(&response[head_end + 4..]).map_err(std::io::Error::other)
}

fn main() -> ExitCode {
    let seconds = env_number("STEWARD_BENCH_SECONDS", 10);
    let workers = env_number("STEWARD_BENCH_WORKERS", 1) as usize;
    let (addr, stop, sandbox_thread) = start_sandbox(workers);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");

    let (results, elapsed, stats, import) = runtime.block_on(async move {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(seconds);
        let tasks: Vec<_> = (0..CONNECTIONS)
            .map(|connection| tokio::spawn(run_connection(addr, connection, deadline)))
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.expect("connection task"));
        }
        let elapsed = started.elapsed();
        let stats = control(addr, "GET", "stats").await;
        // Then the import step over everything accepted: a secondary number (imports/s).
        let import_started = Instant::now();
        let import = control(addr, "POST", "process").await;
        let import = import.map(|report| (report, import_started.elapsed()));
        (results, elapsed, stats, import)
    });

    let mut histogram =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
    let mut ok_200 = 0;
    let mut other_status = 0;
    let mut failed_connections = 0;
    for result in results {
        match result {
            Ok(result) => {
                ok_200 += result.ok_200;
                other_status += result.other_status;
                histogram.add(&result.latency_us).expect("same bounds");
            }
            Err(error) => {
                failed_connections += 1;
                eprintln!("connection failed: {error}");
            }
        }
    }
    let _ = stop.send(());
    let _ = sandbox_thread.join();

    let requests_per_s = ok_200 as f64 / elapsed.as_secs_f64();
    println!(
        "sandbox bench: {CONNECTIONS} keep-alive connections, ~1 KB Gift Transaction POSTs, closed loop, \
         {workers} sandbox worker(s), {:.1} s",
        elapsed.as_secs_f64()
    );
    println!(
        "  200 answers: {ok_200}  other statuses: {other_status}  failed connections: {failed_connections}"
    );
    println!("  throughput: {requests_per_s:.0} requests/s");
    println!(
        "  latency: p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        histogram.value_at_quantile(0.50) as f64 / 1000.0,
        histogram.value_at_quantile(0.99) as f64 / 1000.0,
        histogram.max() as f64 / 1000.0
    );

    let stats = match stats {
        Ok(stats) => stats,
        Err(error) => {
            eprintln!("FAIL: could not read the sandbox stats: {error}");
            return ExitCode::FAILURE;
        }
    };
    let received = stats["transactions_received"].as_u64().unwrap_or(0);
    println!("  sandbox transactions_received: {received}");
    if received != ok_200 || ok_200 == 0 || other_status != 0 || failed_connections != 0 {
        eprintln!(
            "FAIL: transactions_received {received} != 200 answers {ok_200} \
             (or no work / errors: other {other_status}, failed connections {failed_connections})"
        );
        return ExitCode::FAILURE;
    }
    match import {
        Ok((report, import_elapsed)) => {
            let imported = report["imported"].as_u64().unwrap_or(0);
            println!(
                "  import step: {imported} gifts in {:.2} s ({:.0} imports/s)",
                import_elapsed.as_secs_f64(),
                imported as f64 / import_elapsed.as_secs_f64()
            );
            if imported != received {
                eprintln!("FAIL: imported {imported} != received {received}: {report}");
                return ExitCode::FAILURE;
            }
        }
        Err(error) => {
            eprintln!("FAIL: the import step failed: {error}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
