//! Backfill jobs through the admin API against the real `steward` process: create, bad
//! bodies, unknown tenants and jobs, uploads (content type, size limit, cut off midway),
//! transitions refused, the list and job shapes, and the dry run → start → pause flow.

use reqwest::Method;
use serde_json::{json, Value};

use crate::backfill_support::{
    app_with_tenant, chunk, create_job, files_in, raw_upload, small_export, status_line,
    stripe_export_job, upload, wait_for_state,
};
use crate::common::{wait_until, SpawnOptions};

const TENANT: &str = "hope-shelter";

fn error_of(answer: &Value) -> (&str, &str) {
    (
        answer["error"]["code"].as_str().unwrap_or("<no code>"),
        answer["error"]["message"].as_str().unwrap_or(""),
    )
}

#[actix_rt::test]
async fn jobs_are_created_listed_and_refused_by_shape() {
    // Goal: create → 201 awaiting_file with the view's fields; bad bodies (a listing of a
    // source the tenant does not poll among them) → 422 naming the field with nothing
    // created; unknown tenant or job → 404; the list leaves rejects out.
    let app = app_with_tenant(TENANT, SpawnOptions::default()).await;
    let jobs_path = format!("/v1/tenants/{TENANT}/backfills");
    let job = create_job(&app, TENANT, "history-2024").await;
    let job_id = job["id"].as_str().unwrap().to_string();
    assert!(job_id.starts_with("bf_") && job_id.len() == 15, "{job}");
    assert_eq!(job["state"], "awaiting_file");
    assert_eq!(job["label"], "history-2024");
    assert_eq!(job["mapping"], "stripe_payments_export");
    assert_eq!(job["file_bytes"], Value::Null);
    assert_eq!(job["eta_s"], Value::Null);
    assert_eq!(job["dry_run"]["complete"], false);
    assert!(job["created_at"].as_str().unwrap().ends_with('Z'), "{job}");
    for field in [
        "rows_read",
        "queued",
        "duplicates",
        "submitted",
        "confirmed",
        "dead",
        "percent",
    ] {
        assert!(
            job["progress"].get(field).is_some(),
            "progress.{field}: {job}"
        );
    }
    for field in [
        "calls_needed",
        "hours_needed",
        "allowance_per_hour",
        "entries",
        "rejects",
    ] {
        assert!(
            job["dry_run"].get(field).is_some(),
            "dry_run.{field}: {job}"
        );
    }

    let mut with_typo = stripe_export_job("x");
    with_typo["colour"] = json!("red");
    let mut without_label = stripe_export_job("x");
    without_label.as_object_mut().unwrap().remove("label");
    let bad_bodies = [
        (with_typo, "colour"),
        (without_label, "label"),
        (
            json!({"source": "stripe", "format": "xml", "mapping": "stripe_payments_export", "label": "x"}),
            "format",
        ),
        (
            json!({"source": "stripe", "format": "csv", "mapping": 42, "label": "x"}),
            "mapping",
        ),
        (
            json!({"source": "stripe", "format": "csv", "mapping": "stripe_payments_export", "label": " "}),
            "label",
        ),
        (
            json!({"source": "constant_contact", "from": "2024-01-01T00:00:00Z", "to": "2025-01-01T00:00:00Z", "label": "x"}),
            "source",
        ),
        (
            json!({"source": "auction-co", "from": "2025-01-01", "to": "2024-01-01", "label": "x"}),
            "from",
        ),
        (
            json!({"source": "auction-co", "from": "2024-01-01", "format": "csv", "label": "x"}),
            "format",
        ),
    ];
    for (body, field) in bad_bodies {
        let (status, answer) = app
            .admin_call(Method::POST, &jobs_path, Some(body.clone()))
            .await;
        assert_eq!(status, 422, "{body} → {answer}");
        let (code, message) = error_of(&answer);
        assert_eq!(code, "invalid_backfill", "{answer}");
        assert!(message.contains(&format!("`{field}`")), "{body}: {message}");
    }
    let (_, listing) = app
        .admin_call(
            Method::POST,
            &jobs_path,
            Some(json!({"source": "auction-co", "from": "2024-01-01T00:00:00Z", "label": "x"})),
        )
        .await;
    assert!(
        error_of(&listing).1.contains("the tenant polls no source"),
        "a listing is read through a poller: {listing}"
    );

    let (status, list) = app.admin_call(Method::GET, &jobs_path, None).await;
    assert_eq!(status, 200);
    let jobs = list["backfills"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "refused bodies created nothing: {list}");
    assert_eq!(jobs[0]["id"], job_id.as_str());
    assert!(jobs[0]["dry_run"].get("rejects").is_none(), "{list}");
    let (status, shown) = app
        .admin_call(Method::GET, &format!("{jobs_path}/{job_id}"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(shown["dry_run"]["rejects"], json!([]));

    let not_found = [
        (
            Method::POST,
            "/v1/tenants/nobody/backfills".to_string(),
            Some(stripe_export_job("x")),
        ),
        (
            Method::GET,
            "/v1/tenants/nobody/backfills".to_string(),
            None,
        ),
        (Method::GET, format!("{jobs_path}/bf_000000000000"), None),
        (Method::GET, format!("{jobs_path}/not-a-job"), None),
        (
            Method::GET,
            format!("{jobs_path}/bf_000000000000/rejects"),
            None,
        ),
        (
            Method::POST,
            format!("{jobs_path}/bf_000000000000/start"),
            None,
        ),
        (Method::POST, format!("{jobs_path}/{job_id}/explode"), None),
    ];
    for (method, path, body) in not_found {
        let (status, answer) = app.admin_call(method.clone(), &path, body).await;
        assert_eq!(status, 404, "{method} {path} → {answer}");
    }
    let (status, _) = upload(
        &app,
        TENANT,
        "bf_000000000000",
        "text/csv",
        b"id\n".to_vec(),
    )
    .await;
    assert_eq!(status, 404);
}

#[actix_rt::test]
async fn transitions_the_state_does_not_allow_are_refused() {
    // Goal: start, pause and resume before the dry run → 409 invalid_transition with the
    // runtime's reason; cancel → cancelled; then cancel, start and an upload → 409, no file.
    let app = app_with_tenant(TENANT, SpawnOptions::default()).await;
    let job = create_job(&app, TENANT, "refusals").await;
    let job_path = format!(
        "/v1/tenants/{TENANT}/backfills/{}",
        job["id"].as_str().unwrap()
    );
    for (action, needs) in [
        ("start", "ready"),
        ("pause", "running"),
        ("resume", "paused"),
    ] {
        let (status, answer) = app
            .admin_call(Method::POST, &format!("{job_path}/{action}"), None)
            .await;
        assert_eq!(status, 409, "{action}: {answer}");
        let (code, message) = error_of(&answer);
        assert_eq!(code, "invalid_transition");
        assert!(
            message.contains("awaiting_file") && message.contains(needs),
            "{message}"
        );
    }
    let (status, cancelled) = app
        .admin_call(Method::POST, &format!("{job_path}/cancel"), None)
        .await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["state"], "cancelled");
    assert!(cancelled["finished_at"].is_string(), "{cancelled}");
    for action in ["cancel", "start"] {
        let (status, answer) = app
            .admin_call(Method::POST, &format!("{job_path}/{action}"), None)
            .await;
        assert_eq!(
            (status, error_of(&answer).0),
            (409, "invalid_transition"),
            "{action}"
        );
    }
    let job_id = job["id"].as_str().unwrap();
    let (status, answer) = upload(
        &app,
        TENANT,
        job_id,
        "text/csv",
        small_export().into_bytes(),
    )
    .await;
    assert_eq!(
        (status, error_of(&answer).0),
        (409, "invalid_transition"),
        "{answer}"
    );
    assert!(
        files_in(&app, TENANT).is_empty(),
        "a refused upload wrote nothing"
    );
}

#[actix_rt::test]
async fn uploads_are_checked_and_never_leave_a_partial_file() {
    // Goal: a wrong content type → 415, a body over `[backfill] max_file_bytes` → 413
    // (declared or streamed), an upload cut off midway → no file, and the job still waits
    // for its file; then a good upload is kept whole (mode 0600 in a 0700 dir), 200.
    use std::os::unix::fs::PermissionsExt;
    let limit_bytes = 2_000;
    let options = SpawnOptions {
        env: vec![(
            "STEWARD_BACKFILL__MAX_FILE_BYTES".into(),
            limit_bytes.to_string(),
        )],
        ..SpawnOptions::default()
    };
    let app = app_with_tenant(TENANT, options).await;
    let job = create_job(&app, TENANT, "uploads").await;
    let job_id = job["id"].as_str().unwrap().to_string();
    let file_path = format!("/v1/tenants/{TENANT}/backfills/{job_id}/file");
    let csv = small_export().into_bytes();

    let (status, answer) = upload(&app, TENANT, &job_id, "application/x-ndjson", csv.clone()).await;
    assert_eq!(
        (status, error_of(&answer).0),
        (415, "unsupported_media_type"),
        "{answer}"
    );
    assert!(error_of(&answer).1.contains("text/csv"), "{answer}");

    let (status, answer) = upload(
        &app,
        TENANT,
        &job_id,
        "text/csv",
        vec![b'x'; limit_bytes * 2],
    )
    .await;
    assert_eq!(
        (status, error_of(&answer).0),
        (413, "payload_too_large"),
        "{answer}"
    );

    // Chunked (no declared length): refused once the bytes pass the limit.
    let part = vec![b'y'; 900];
    let parts = [
        chunk(&part),
        chunk(&part),
        chunk(&part),
        b"0\r\n\r\n".to_vec(),
    ];
    let stream = raw_upload(&app, &file_path, "Transfer-Encoding: chunked\r\n", &parts).await;
    let answer = status_line(stream).await;
    assert!(answer.contains(" 413 "), "{answer}");

    // Cut off: 1,500 bytes declared, 300 sent (the partial file is there), then the
    // connection dropped.
    let stream = raw_upload(
        &app,
        &file_path,
        "Content-Length: 1500\r\n",
        &[vec![b'z'; 300]],
    )
    .await;
    wait_until(
        std::time::Duration::from_secs(10),
        "the upload's partial file",
        || async { (!files_in(&app, TENANT).is_empty()).then_some(()) },
    )
    .await;
    drop(stream);
    wait_until(
        std::time::Duration::from_secs(10),
        "the partial files to be removed",
        || async { files_in(&app, TENANT).is_empty().then_some(()) },
    )
    .await;
    let (_, shown) = app
        .admin_call(
            Method::GET,
            &format!("/v1/tenants/{TENANT}/backfills/{job_id}"),
            None,
        )
        .await;
    assert_eq!(shown["state"], "awaiting_file", "{shown}");

    let (status, uploaded) = upload(
        &app,
        TENANT,
        &job_id,
        "text/csv; charset=utf-8",
        csv.clone(),
    )
    .await;
    assert_eq!(status, 200, "{uploaded}");
    assert_ne!(uploaded["state"], "awaiting_file", "{uploaded}");
    assert_eq!(uploaded["file_bytes"], csv.len());
    let kept = files_in(&app, TENANT);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(kept[0].ends_with(format!("{job_id}.csv")), "{kept:?}");
    assert_eq!(std::fs::read(&kept[0]).unwrap(), csv);
    let file_mode = std::fs::metadata(&kept[0]).unwrap().permissions().mode() & 0o777;
    let dir_mode = std::fs::metadata(kept[0].parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!((file_mode, dir_mode), (0o600, 0o700));

    let (status, answer) = upload(&app, TENANT, &job_id, "text/csv", csv).await;
    assert_eq!(
        (status, error_of(&answer).0),
        (409, "invalid_transition"),
        "a file is uploaded once: {answer}"
    );
}

#[actix_rt::test]
async fn dry_run_then_start_pause_resume_cancel() {
    // Goal (needs the file reader, src/backfill): the dry run reports rows, payments, the
    // skipped failed charge and the rejected row with its row number (inline and as NDJSON);
    // start queues; resume of a running job and start of a running one → 409; pause and
    // resume move it; cancel ends it.
    let app = app_with_tenant(TENANT, SpawnOptions::default()).await;
    let job = create_job(&app, TENANT, "flow").await;
    let job_id = job["id"].as_str().unwrap().to_string();
    let job_path = format!("/v1/tenants/{TENANT}/backfills/{job_id}");
    let (status, answer) = upload(
        &app,
        TENANT,
        &job_id,
        "text/csv",
        small_export().into_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let ready = wait_for_state(&app, TENANT, &job_id, &["ready", "failed"]).await;
    assert_eq!(
        ready["state"], "ready",
        "the dry run failed: {}",
        ready["error"]
    );
    let dry_run = &ready["dry_run"];
    assert_eq!(dry_run["complete"], true);
    assert_eq!(
        (
            dry_run["rows"].as_u64(),
            dry_run["payments"].as_u64(),
            dry_run["skipped"].as_u64(),
            dry_run["rejected"].as_u64()
        ),
        (Some(4), Some(2), Some(1), Some(1)),
        "{dry_run}"
    );
    assert_eq!(dry_run["rejects"][0]["row"], 5, "{dry_run}");
    assert_eq!(dry_run["entries"]["gift"], 2, "{dry_run}");
    assert!(dry_run["calls_needed"].as_u64().unwrap() >= 1, "{dry_run}");
    assert!(dry_run["hours_needed"].is_number(), "{dry_run}");
    assert_eq!(dry_run["amounts"]["usd"], "1275.00", "{dry_run}");
    let rejects = app
        .admin(Method::GET, &format!("{job_path}/rejects"))
        .send()
        .await
        .unwrap();
    assert_eq!(rejects.headers()["content-type"], "application/x-ndjson");
    let lines: Vec<Value> = rejects
        .text()
        .await
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["row"], 5);

    // Submission paused: the queued entries stay, so the job stays running until cancelled.
    app.admin_call(Method::POST, &format!("/v1/tenants/{TENANT}/pause"), None)
        .await;
    let (status, started) = app
        .admin_call(Method::POST, &format!("{job_path}/start"), None)
        .await;
    assert_eq!(
        (status, started["state"].as_str()),
        (200, Some("running")),
        "{started}"
    );
    assert!(started["started_at"].is_string());
    for action in ["start", "resume"] {
        let (status, answer) = app
            .admin_call(Method::POST, &format!("{job_path}/{action}"), None)
            .await;
        assert_eq!(
            (status, error_of(&answer).0),
            (409, "invalid_transition"),
            "{action}: {answer}"
        );
    }
    let (status, paused) = app
        .admin_call(Method::POST, &format!("{job_path}/pause"), None)
        .await;
    assert_eq!(
        (status, paused["state"].as_str()),
        (200, Some("paused")),
        "{paused}"
    );
    assert_eq!(paused["eta_s"], Value::Null);
    let (status, resumed) = app
        .admin_call(Method::POST, &format!("{job_path}/resume"), None)
        .await;
    assert_eq!(
        (status, resumed["state"].as_str()),
        (200, Some("running")),
        "{resumed}"
    );
    let queued = wait_until(
        std::time::Duration::from_secs(30),
        "the job's entries to be queued",
        || async {
            let (_, job) = app.admin_call(Method::GET, &job_path, None).await;
            (job["progress"]["queued"].as_u64() >= Some(2)).then_some(job)
        },
    )
    .await;
    assert_eq!(queued["progress"]["rejected"], 1, "{queued}");
    let (status, cancelled) = app
        .admin_call(Method::POST, &format!("{job_path}/cancel"), None)
        .await;
    assert_eq!(
        (status, cancelled["state"].as_str()),
        (200, Some("cancelled")),
        "{cancelled}"
    );
}
