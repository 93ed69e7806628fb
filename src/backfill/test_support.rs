//! Helpers shared by the backfill tests: tenant documents, specs, files and full reads.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::{json, Value};
use steward_actors::backfill::{
    ClassifiedRow, Cursor, JobSpec, ListingWindow, RowOutcome, LISTING_FORMAT,
};

use super::{FileBackfills, STRIPE_EXPORT_PRESET};
use crate::tenant::TenantDoc;
use crate::traffic::stripe_export::{COLUMNS, METADATA_COLUMNS};

/// The time entries are stamped with in tests.
pub const NOW_MS: u64 = 1_767_225_600_000;

pub fn fixed_clock() -> u64 {
    NOW_MS
}

/// A tenant with Stripe (the default metadata keys, `GENERAL` as the default project) and
/// the platform `auction-co` (minor units, `donation.completed` mapped as in docs/ingress.md).
pub fn doc() -> TenantDoc {
    TenantDoc::from_value(&doc_json()).expect("the test tenant is valid")
}

/// [`doc`] with polled sources: Constant Contact, the platform `gala-co` (auction-co's
/// mapping, its listing polled) and Mailchimp's members. `auction-co` is still not polled.
pub fn polled_doc() -> TenantDoc {
    let mut tenant = doc_json();
    let sources = &mut tenant["sources"];
    sources["constant_contact"] = json!({"client_id": "c", "client_secret": "s",
        "refresh_token": "r", "interval_s": 300});
    sources["mailchimp"] = json!({"api_key": "key-us21", "list_id": "l1", "interval_s": 300});
    let mut gala = sources["platforms"]["auction-co"].clone();
    gala["poll"] = json!({"url": "https://gala.example/api/donations", "interval_s": 60});
    sources["platforms"]["gala-co"] = gala;
    sources["postgres"] = json!({"events-db": {"dsn": "host=127.0.0.1 user=steward dbname=events",
        "mode": "logical", "transaction_source": "Events DB",
        "tables": {"public.gifts": {"primary_key": ["id"], "kind": "gift",
            "fields": {"amount": "/amount", "contact.email": "/email"}}}}});
    TenantDoc::from_value(&tenant).expect("the polled test tenant is valid")
}

fn doc_json() -> Value {
    json!({"id": "t1", "name": "T", "time_zone": "UTC",
        "virtuous": {"api_key": "k", "webhook_secret": "w"},
        "sources": {
            "stripe": {"signing_secret": "whsec_1", "default_project_code": "GENERAL",
                       "accept_test_events": true},
            "platforms": {"auction-co": {"secret": "s", "transaction_source": "AuctionCo",
                "amount_unit": "minor",
                "events": {"donation.completed": {"kind": "gift", "fields": {
                    "amount": "/data/amount", "currencyCode": "/data/currency",
                    "transactionId": "/data/donation_id", "giftDate": "/data/paid_at",
                    "contact.email": "/data/donor/email"}}}}}}})
}

pub fn spec(source: &str, format: &str, mapping: Value, label: &str) -> JobSpec {
    JobSpec {
        source: source.to_string(),
        format: format.to_string(),
        mapping_json: mapping.to_string(),
        label: label.to_string(),
        listing: None,
    }
}

/// A listing job's spec: `source` in the window `[from_ms, to_ms]`.
pub fn listing_spec(source: &str, from_ms: u64, to_ms: u64, label: &str) -> JobSpec {
    JobSpec {
        source: source.to_string(),
        format: LISTING_FORMAT.to_string(),
        mapping_json: String::new(),
        label: label.to_string(),
        listing: Some(ListingWindow { from_ms, to_ms }),
    }
}

pub fn files(dir: &Path, doc: TenantDoc) -> FileBackfills {
    FileBackfills {
        dir: dir.to_path_buf(),
        doc: Arc::new(doc),
    }
}

/// Writes job `job`'s file.
pub fn write_file(dir: &Path, job: &str, format: &str, bytes: &[u8]) {
    std::fs::write(FileBackfills::file_path(dir, job, format), bytes).unwrap();
}

/// Reads the whole file from `at` in chunks of `chunk` rows, reopening the file at the
/// returned cursor after every chunk when `reopen` (as a restarted job would).
/// The job id of the files the tests write.
pub const JOB: &str = "b7";

/// Every row of job `JOB`'s file in `dir`, read in chunks of 10 with `tenant`'s settings.
pub fn rows_of(dir: &Path, tenant: TenantDoc, job: &JobSpec) -> Vec<ClassifiedRow> {
    read_all(&files(dir, tenant), JOB, job, Cursor::default(), 10, false).0
}

pub fn read_all(
    files: &FileBackfills,
    job: &str,
    spec: &JobSpec,
    at: Cursor,
    chunk: usize,
    reopen: bool,
) -> (Vec<ClassifiedRow>, Cursor) {
    let mut rows = Vec::new();
    let mut cursor = at;
    let mut reader = files
        .open_with_clock(job, spec, cursor, fixed_clock)
        .unwrap();
    for _ in 0..1_000_000 {
        let read = reader.read(chunk).unwrap();
        assert!(read.rows.len() <= chunk.max(1));
        rows.extend(read.rows);
        cursor = read.next;
        if read.end {
            return (rows, cursor);
        }
        if reopen {
            reader = files
                .open_with_clock(job, spec, cursor, fixed_clock)
                .unwrap();
        }
    }
    panic!("the file never ended");
}

/// A row's outcome in a short, comparable form: `payment:{keys}`, `skipped:…`, `rejected:…`.
pub fn summary(row: &ClassifiedRow) -> String {
    match &row.outcome {
        RowOutcome::Payment { entries, .. } => {
            let keys: Vec<&str> = entries
                .iter()
                .map(|e| e.fact.idempotency_key.as_str())
                .collect();
            format!("{}:payment:{}", row.row, keys.join(","))
        }
        RowOutcome::Skipped { reason } => format!("{}:skipped:{reason}", row.row),
        RowOutcome::Rejected { reason } => format!("{}:rejected:{reason}", row.row),
    }
}

/// The body of a row's first entry.
pub fn first_body(row: &ClassifiedRow) -> Value {
    match &row.outcome {
        RowOutcome::Payment { entries, .. } => {
            serde_json::from_str(&entries[0].fact.body_json).unwrap()
        }
        other => panic!("row {} is not a payment: {other:?}", row.row),
    }
}

// The Stripe export preset.

pub const EXPORT_JOB: &str = "exp1";

pub fn preset_job() -> steward_actors::backfill::JobSpec {
    spec("stripe", "csv", json!(STRIPE_EXPORT_PRESET), "Stripe 2025")
}

pub fn read_export(bytes: &[u8], tenant: TenantDoc, chunk: usize) -> Vec<ClassifiedRow> {
    let dir = tempfile::tempdir().unwrap();
    write_file(dir.path(), EXPORT_JOB, "csv", bytes);
    let (rows, _) = read_all(
        &files(dir.path(), tenant),
        EXPORT_JOB,
        &preset_job(),
        Cursor::default(),
        chunk,
        true,
    );
    rows
}

/// An export with the Dashboard's header and the given rows (cells by column name; the
/// rest empty).
pub fn export_of(rows: &[BTreeMap<&str, String>]) -> Vec<u8> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let header: Vec<&str> = COLUMNS
        .iter()
        .chain(METADATA_COLUMNS.iter())
        .copied()
        .collect();
    writer.write_record(&header).unwrap();
    for row in rows {
        let cells: Vec<String> = header
            .iter()
            .map(|c| row.get(c).cloned().unwrap_or_default())
            .collect();
        writer.write_record(&cells).unwrap();
    }
    writer.into_inner().unwrap()
}

/// A paid card charge of 12.34 USD, overridden by `changes`.
pub fn paid_row(changes: &[(&'static str, &str)]) -> BTreeMap<&'static str, String> {
    let mut row: BTreeMap<&str, String> = [
        ("id", "ch_1"),
        ("Created (UTC)", "2025-03-01 10:00:00"),
        ("Amount", "12.34"),
        ("Amount Refunded", "0.00"),
        ("Currency", "usd"),
        ("Mode", "Live"),
        ("Status", "Paid"),
        ("Captured", "true"),
        ("Customer Email", "ada@example.org"),
        ("Card Name", "Ada Lovelace"),
        ("PaymentIntent ID", "pi_1"),
        ("Payment Source Type", "card"),
    ]
    .into_iter()
    .map(|(column, value)| (column, value.to_string()))
    .collect();
    for (column, value) in changes {
        row.insert(column, value.to_string());
    }
    row
}
