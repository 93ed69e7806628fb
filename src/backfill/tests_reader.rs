//! Reader tests: streaming, cursors and resume, BOM / CRLF / quoted line breaks, bad
//! records as rejected rows, NDJSON lines.

use proptest::prelude::*;
use serde_json::json;
use steward_actors::backfill::{Cursor, RowOutcome};

use super::test_support::*;
use super::RECORD_BYTES_MAX;

const JOB: &str = "b1";

/// A generic gift mapping over the columns of [`csv_file`].
fn csv_spec() -> steward_actors::backfill::JobSpec {
    spec(
        "auction-co",
        "csv",
        json!({"kind": "gift", "amount_unit": "major", "fields": {
            "amount": "Amount", "transactionId": "Donation", "giftDate": "Date",
            "contact.email": "Email", "notes": "Note", "currencyCode": "Currency"}}),
        "Spring import",
    )
}

/// A CSV file of donations `d{n}` with the given notes.
fn csv_file(notes: &[String], bom: bool, crlf: bool) -> Vec<u8> {
    let terminator = if crlf {
        csv::Terminator::CRLF
    } else {
        csv::Terminator::Any(b'\n')
    };
    let mut writer = csv::WriterBuilder::new()
        .terminator(terminator)
        .from_writer(Vec::new());
    writer
        .write_record(["Donation", "Date", "Amount", "Currency", "Email", "Note"])
        .unwrap();
    for (n, note) in notes.iter().enumerate() {
        let donation = format!("d{n}");
        let amount = format!("{},{:03}.50", n + 1, n % 1000);
        let email = format!("donor{n}@example.org");
        writer
            .write_record([
                donation.as_str(),
                "2025-03-01",
                &amount,
                "usd",
                &email,
                note,
            ])
            .unwrap();
    }
    let body = writer.into_inner().unwrap();
    if bom {
        [b"\xef\xbb\xbf".as_slice(), &body].concat()
    } else {
        body
    }
}

#[test]
fn a_csv_file_reads_in_row_order_with_spreadsheet_row_numbers() {
    // Goal: the header is row 1, records are rows 2.., a quoted line break stays inside its
    // row, and every gift carries the live key and the label as `batch`.
    let dir = tempfile::tempdir().unwrap();
    let notes = vec![
        "plain".to_string(),
        "with, comma and \"quotes\"".to_string(),
        "two\r\nlines".to_string(),
        "last".to_string(),
    ];
    write_file(dir.path(), JOB, "csv", &csv_file(&notes, false, true));
    let files = files(dir.path(), doc());
    let (rows, cursor) = read_all(&files, JOB, &csv_spec(), Cursor::default(), 100, false);
    let summaries: Vec<String> = rows.iter().map(summary).collect();
    assert_eq!(
        summaries,
        [
            "2:payment:auction-co:gift:d0",
            "3:payment:auction-co:gift:d1",
            "4:payment:auction-co:gift:d2",
            "5:payment:auction-co:gift:d3",
        ]
    );
    assert_eq!(cursor.row, 5);
    let bytes = std::fs::metadata(dir.path().join("b1.csv")).unwrap().len();
    assert_eq!(
        cursor.offset, bytes,
        "the cursor ends at the end of the file"
    );
    for (row, note) in rows.iter().zip(&notes) {
        let body = first_body(row);
        assert_eq!(body["notes"], json!(note));
        assert_eq!(body["batch"], json!("Spring import"));
        assert_eq!(body["transactionSource"], json!("AuctionCo"));
    }
    // Thousands separators are read (amount_unit major): "1,000.50".
    assert_eq!(first_body(&rows[0])["amount"], json!("1000.50"));
}

#[test]
fn a_utf8_bom_is_not_part_of_the_first_column_name() {
    // Goal: the csv crate strips the BOM: the first column (`Donation`) is found by name,
    // and byte offsets still count the BOM's three bytes (resuming lands on a record).
    let dir = tempfile::tempdir().unwrap();
    let notes: Vec<String> = (0..5).map(|n| format!("note {n}")).collect();
    write_file(dir.path(), JOB, "csv", &csv_file(&notes, true, false));
    let files = files(dir.path(), doc());
    let (one_pass, _) = read_all(&files, JOB, &csv_spec(), Cursor::default(), 100, false);
    assert_eq!(one_pass.len(), 5);
    assert!(one_pass
        .iter()
        .all(|row| matches!(row.outcome, RowOutcome::Payment { .. })));
    let (resumed, _) = read_all(&files, JOB, &csv_spec(), Cursor::default(), 1, true);
    assert_eq!(
        one_pass.iter().map(summary).collect::<Vec<_>>(),
        resumed.iter().map(summary).collect::<Vec<_>>()
    );
}

#[test]
fn bad_records_are_rejected_rows_and_reading_goes_on() {
    // Goal: a wrong field count and invalid UTF-8 are rejected rows with their reason and
    // row number; the rows after them read normally.
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = b"Donation,Date,Amount,Currency,Email,Note\n".to_vec();
    bytes.extend_from_slice(b"d1,2025-03-01,5.00,usd,a@example.org,ok\n");
    bytes.extend_from_slice(b"d2,2025-03-01,5.00,usd,a@example.org\n");
    bytes.extend_from_slice(b"d3,2025-03-01,5.00,usd,a@example.org,bad \xff byte\n");
    bytes.extend_from_slice(b"d4,2025-03-01,,usd,a@example.org,no amount\n");
    bytes.extend_from_slice(b"d5,2025-03-01,5.00,usd,a@example.org,ok\n");
    write_file(dir.path(), JOB, "csv", &bytes);
    let (rows, _) = read_all(
        &files(dir.path(), doc()),
        JOB,
        &csv_spec(),
        Cursor::default(),
        10,
        false,
    );
    let summaries: Vec<String> = rows.iter().map(summary).collect();
    assert_eq!(summaries[0], "2:payment:auction-co:gift:d1");
    assert_eq!(summaries[1], "3:rejected:5 fields where the header has 6");
    assert_eq!(summaries[2], "4:rejected:field 6 is not UTF-8");
    assert!(
        summaries[3].starts_with("5:rejected:`amount` is required"),
        "{}",
        summaries[3]
    );
    assert_eq!(summaries[4], "6:payment:auction-co:gift:d5");
}

#[test]
fn a_runaway_quote_stops_the_reader_instead_of_filling_memory() {
    // Goal: an unclosed quote would make the rest of the file one record: past the record
    // limit the reader fails (the file cannot be read on), naming the row.
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = b"Donation,Date,Amount,Currency,Email,Note\n".to_vec();
    bytes.extend_from_slice(b"d1,2025-03-01,5.00,usd,a@example.org,\"never closed\n");
    let line = b"d2,2025-03-01,5.00,usd,a@example.org,text\n";
    while (bytes.len() as u64) < RECORD_BYTES_MAX * 2 {
        bytes.extend_from_slice(line);
    }
    write_file(dir.path(), JOB, "csv", &bytes);
    let files = files(dir.path(), doc());
    let mut reader = files
        .open_with_clock(JOB, &csv_spec(), Cursor::default(), fixed_clock)
        .unwrap();
    let error = reader.read(10).unwrap_err();
    assert!(error.starts_with("row 2: a record over"), "{error}");
}

#[test]
fn opening_refuses_a_file_that_lacks_a_mapped_column_or_a_header() {
    // Goal: file-level problems surface when the job opens its file, naming the mapping field.
    let dir = tempfile::tempdir().unwrap();
    write_file(
        dir.path(),
        JOB,
        "csv",
        b"Donation,Date,Amount\nd1,2025-03-01,5\n",
    );
    let files = files(dir.path(), doc());
    let error = files
        .open_with_clock(JOB, &csv_spec(), Cursor::default(), fixed_clock)
        .err()
        .unwrap();
    assert_eq!(
        error,
        "mapping.fields.contact.email: the file has no column `Email`"
    );
    write_file(dir.path(), JOB, "csv", b"");
    let error = files
        .open_with_clock(JOB, &csv_spec(), Cursor::default(), fixed_clock)
        .err()
        .unwrap();
    assert!(error.starts_with("the file is empty"), "{error}");
    let error = files
        .open_with_clock("missing", &csv_spec(), Cursor::default(), fixed_clock)
        .err()
        .unwrap();
    assert!(error.starts_with("cannot open"), "{error}");
}

fn ndjson_spec() -> steward_actors::backfill::JobSpec {
    spec(
        "auction-co",
        "ndjson",
        json!({"kind": "gift", "fields": {"amount": "/amount", "currencyCode": "/currency",
            "transactionId": "/id", "giftDate": "/paid_at", "contact.email": "/donor/email"}}),
        "NDJSON import",
    )
}

#[test]
fn ndjson_lines_are_rows_and_blank_lines_count_but_are_not_reported() {
    // Goal: line n is row n; a blank line is skipped but counted; a line that is not JSON is
    // a rejected row; CRLF line ends read like LF; a line over the limit is rejected alone.
    let dir = tempfile::tempdir().unwrap();
    let gift = |id: &str| {
        json!({"id": id, "amount": 2500, "currency": "usd", "paid_at": "2025-03-01T10:00:00Z",
            "donor": {"email": "a@example.org"}})
        .to_string()
    };
    let long = format!(
        "{{\"pad\": \"{}\"}}",
        "x".repeat(RECORD_BYTES_MAX as usize + 10)
    );
    let text = format!(
        "{}\r\n\n   \n{{not json\n{}\n{long}\n{}",
        gift("g1"),
        gift("g2"),
        gift("g3")
    );
    write_file(dir.path(), JOB, "ndjson", text.as_bytes());
    let files = files(dir.path(), doc());
    let (rows, cursor) = read_all(&files, JOB, &ndjson_spec(), Cursor::default(), 100, false);
    let summaries: Vec<String> = rows.iter().map(summary).collect();
    assert_eq!(summaries[0], "1:payment:auction-co:gift:g1");
    assert!(
        summaries[1].starts_with("4:rejected:not JSON"),
        "{}",
        summaries[1]
    );
    assert_eq!(summaries[2], "5:payment:auction-co:gift:g2");
    assert_eq!(
        summaries[3],
        format!("6:rejected:a line over {RECORD_BYTES_MAX} bytes")
    );
    assert_eq!(summaries[4], "7:payment:auction-co:gift:g3");
    assert_eq!(summaries.len(), 5);
    assert_eq!(
        cursor,
        Cursor {
            offset: text.len() as u64,
            row: 7,
            page: None,
        }
    );
    assert_eq!(first_body(&rows[0])["amount"], json!("25.00"));
    // Resuming after every single row gives the same rows.
    let (resumed, _) = read_all(&files, JOB, &ndjson_spec(), Cursor::default(), 1, true);
    assert_eq!(resumed.iter().map(summary).collect::<Vec<_>>(), summaries);
}

/// Cell text with the characters that make CSV hard.
fn tricky_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("a".to_string()),
            Just(" ".to_string()),
            Just(",".to_string()),
            Just("\"".to_string()),
            Just("\n".to_string()),
            Just("\r\n".to_string()),
            Just("é".to_string()),
            Just("Ω".to_string()),
        ],
        0..8,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn reading_in_chunks_and_resuming_equals_one_pass(
        notes in proptest::collection::vec(tricky_text(), 1..25),
        bom in any::<bool>(),
        crlf in any::<bool>(),
        chunk in 1usize..7,
        resume_after in 0usize..25,
    ) {
        // Goal: chunks of any size, reopened at every returned cursor, and a restart from
        // a saved mid-file cursor all read exactly the rows of one pass, whatever the quoting.
        let dir = tempfile::tempdir().unwrap();
        write_file(dir.path(), JOB, "csv", &csv_file(&notes, bom, crlf));
        let files = files(dir.path(), doc());
        let spec = csv_spec();
        let (one_pass, end) = read_all(&files, JOB, &spec, Cursor::default(), 1_000, false);
        let expected: Vec<String> = one_pass.iter().map(summary).collect();
        prop_assert_eq!(expected.len(), notes.len());
        let (chunked, chunked_end) = read_all(&files, JOB, &spec, Cursor::default(), chunk, true);
        prop_assert_eq!(&chunked.iter().map(summary).collect::<Vec<_>>(), &expected);
        prop_assert_eq!(chunked_end, end);
        // A saved cursor after `resume_after` rows.
        let mut reader = files.open_with_clock(JOB, &spec, Cursor::default(), fixed_clock).unwrap();
        let first = reader.read(resume_after.min(notes.len()).max(1)).unwrap();
        let (rest, _) = read_all(&files, JOB, &spec, first.next, chunk, false);
        let mut stitched: Vec<String> = first.rows.iter().map(summary).collect();
        stitched.extend(rest.iter().map(summary));
        prop_assert_eq!(&stitched, &expected);
        for (row, note) in one_pass.iter().zip(&notes) {
            let body = first_body(row);
            let trimmed = note.trim();
            if trimmed.is_empty() {
                prop_assert!(body.get("notes").is_none());
            } else {
                prop_assert_eq!(&body["notes"], &json!(trimmed));
            }
        }
    }
}
