//! Helpers of the backfill tests: a job created through the admin API, a small Stripe
//! payments export, raw uploads that a client library would not send (chunked past a limit,
//! cut off midway).

use std::path::PathBuf;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{tenant_body, wait_until, SpawnOptions, TestApp};

/// A tenant of [`tenant_body`] (Stripe and the `auction-co` platform), on a fresh engine.
pub async fn app_with_tenant(tenant_id: &str, options: SpawnOptions) -> TestApp {
    let app = TestApp::spawn(options).await;
    app.create_tenant(&tenant_body(tenant_id)).await;
    app
}

/// The body that creates a Stripe-export job labelled `label`.
pub fn stripe_export_job(label: &str) -> Value {
    json!({"source": "stripe", "format": "csv", "mapping": "stripe_payments_export", "label": label})
}

/// Creates a Stripe-export job; its view.
pub async fn create_job(app: &TestApp, tenant_id: &str, label: &str) -> Value {
    let (status, job) = app
        .admin_call(
            Method::POST,
            &format!("/v1/tenants/{tenant_id}/backfills"),
            Some(stripe_export_job(label)),
        )
        .await;
    assert_eq!(status, 201, "create backfill: {job}");
    job
}

/// Where the engine keeps the tenant's uploaded files.
pub fn backfill_dir(app: &TestApp, tenant_id: &str) -> PathBuf {
    app.data_dir().join("backfills").join(tenant_id)
}

/// Every file in the tenant's backfill dir (none when it does not exist).
pub fn files_in(app: &TestApp, tenant_id: &str) -> Vec<PathBuf> {
    let dir = backfill_dir(app, tenant_id);
    if !dir.exists() {
        return Vec::new();
    }
    crate::common::files_below(&dir)
}

/// A small Stripe Dashboard payments export (the columns the preset reads, CRLF, a quoted
/// description with a comma): two paid payments (rows 2 and 3), a failed charge (row 4,
/// skipped) and a row whose amount is not a number (row 5, rejected).
pub fn small_export() -> String {
    [
        "id,Description,Created (UTC),Amount,Amount Refunded,Currency,Mode,Status,Customer ID,Customer Email,Captured,Card Name,PaymentIntent ID",
        "ch_3Pbackfill0001,\"Gift, spring appeal\",2025-03-01 10:15:00,\"1,250.00\",0.00,usd,Live,Paid,cus_Rbackfill01,ada@example.org,true,Ada Lovelace,pi_3Pbackfill0001",
        "ch_3Pbackfill0002,Monthly gift,2025-03-02 11:00:00,25.00,0.00,usd,Live,Paid,cus_Rbackfill02,alan@example.org,true,Alan Turing,pi_3Pbackfill0002",
        "ch_3Pbackfill0003,Declined,2025-03-03 12:00:00,40.00,0.00,usd,Live,Failed,cus_Rbackfill03,grace@example.org,false,Grace Hopper,pi_3Pbackfill0003",
        "ch_3Pbackfill0004,Bad amount,2025-03-04 13:00:00,abc,0.00,usd,Live,Paid,cus_Rbackfill04,edsger@example.org,true,Edsger Dijkstra,pi_3Pbackfill0004",
    ]
    .join("\r\n")
        + "\r\n"
}

/// Uploads `body` as the job's file with `content_type`: the status and the answer.
pub async fn upload(
    app: &TestApp,
    tenant_id: &str,
    job_id: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let response = app
        .admin(
            Method::PUT,
            &format!("/v1/tenants/{tenant_id}/backfills/{job_id}/file"),
        )
        .header("Content-Type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The admin listener's address without the scheme.
fn admin_host(app: &TestApp) -> String {
    app.admin_url.trim_start_matches("http://").to_string()
}

/// A raw HTTP/1.1 PUT of a file: `head_extra` header lines, then `body_parts` written one by
/// one (write errors ignored: the server may answer and close early). The connection stays
/// open: [`status_line`] reads the answer, dropping it cuts the upload off.
pub async fn raw_upload(
    app: &TestApp,
    path: &str,
    head_extra: &str,
    body_parts: &[Vec<u8>],
) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(admin_host(app))
        .await
        .unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: text/csv\r\n{head_extra}\r\n",
        admin_host(app),
        app.admin_token
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    for part in body_parts {
        if stream.write_all(part).await.is_err() {
            break;
        }
        let _ = stream.flush().await;
    }
    stream
}

/// The status line of the answer on `stream` (empty when none came within 10 s).
pub async fn status_line(mut stream: tokio::net::TcpStream) -> String {
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buffer = [0u8; 4096];
        while let Ok(read) = stream.read(&mut buffer).await {
            if read == 0 {
                break;
            }
            answer.extend_from_slice(&buffer[..read]);
            if answer.windows(4).any(|window| window == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&answer).to_string();
    text.lines().next().unwrap_or("").to_string()
}

/// One HTTP/1.1 chunk.
pub fn chunk(bytes: &[u8]) -> Vec<u8> {
    let mut framed = format!("{:x}\r\n", bytes.len()).into_bytes();
    framed.extend_from_slice(bytes);
    framed.extend_from_slice(b"\r\n");
    framed
}

/// Waits until the job's state is one of `states`; its view.
pub async fn wait_for_state(
    app: &TestApp,
    tenant_id: &str,
    job_id: &str,
    states: &[&str],
) -> Value {
    let path = format!("/v1/tenants/{tenant_id}/backfills/{job_id}");
    wait_until(
        Duration::from_secs(30),
        format!("backfill {job_id} to reach {states:?}"),
        || {
            let path = path.clone();
            async move {
                let (status, job) = app.admin_call(Method::GET, &path, None).await;
                (status == 200 && states.iter().any(|state| job["state"] == *state)).then_some(job)
            }
        },
    )
    .await
}
