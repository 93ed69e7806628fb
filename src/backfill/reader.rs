//! Streamed, resumable readers of a job's file: CSV (the `csv` crate) and NDJSON. Neither
//! holds more than one record (at most [`RECORD_BYTES_MAX`]) and one chunk of classified
//! rows in memory, whatever the file's size.
//!
//! A [`Cursor`] is the byte offset of the next unread record and the row number of the last
//! record read. Rows are numbered as a spreadsheet shows them: the CSV header is row 1 and a
//! record with line breaks inside quotes is one row; in NDJSON each line is a row, blank
//! lines included (they are skipped, not reported). Opening a CSV file at an offset reads
//! its header from the start, then goes on at the offset. (After a CRLF record the CSV
//! parser stops between `\r` and `\n`: a cursor may point at that `\n`, which reads as an
//! empty line and is skipped.)

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};

use csv::{ByteRecord, StringRecord};
use serde_json::Value;
use steward_actors::backfill::{ClassifiedRow, Cursor, RowChunk, RowOutcome, RowReader};

use super::classify::{Classifier, Row};

/// The largest record (a CSV record or an NDJSON line) read; a bigger one is a runaway
/// quote or not a row at all, and would otherwise pull the rest of the file into memory.
pub const RECORD_BYTES_MAX: u64 = 1024 * 1024;

/// The wall clock the entries are stamped with (a seam for tests).
pub type Clock = fn() -> u64;

/// Counts the bytes handed to the CSV parser since the last record ended, and refuses to
/// hand more than [`RECORD_BYTES_MAX`] (plus the parser's buffer) to one record.
struct BoundedRecord<R> {
    inner: R,
    bytes_since_record: u64,
    over_limit: bool,
}

impl<R: Read> Read for BoundedRecord<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.bytes_since_record > RECORD_BYTES_MAX {
            self.over_limit = true;
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a record over the size limit",
            ));
        }
        let read = self.inner.read(buf)?;
        self.bytes_since_record += read as u64;
        Ok(read)
    }
}

/// A CSV file's rows.
pub struct CsvRows {
    classifier: Classifier,
    reader: csv::Reader<BoundedRecord<File>>,
    /// Where `reader` started in the file (its positions are relative to it).
    base_offset: u64,
    cursor: Cursor,
    header_fields: usize,
    record: ByteRecord,
    clock: Clock,
}

fn csv_reader<R: Read>(inner: R) -> csv::Reader<R> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        // A record with the wrong number of fields is a rejected row, not an error.
        .flexible(true)
        .from_reader(inner)
}

fn io_error(path_hint: &str, err: impl std::fmt::Display) -> String {
    format!("cannot read {path_hint}: {err}")
}

impl CsvRows {
    /// Opens `file` at `at`; `classifier_for` builds the classifier from the header.
    pub fn open(
        mut file: File,
        at: Cursor,
        classifier_for: impl FnOnce(&StringRecord) -> Result<Classifier, String>,
        clock: Clock,
    ) -> Result<CsvRows, String> {
        let mut header_reader = csv_reader(BoundedRecord {
            inner: file.try_clone().map_err(|err| io_error("the file", err))?,
            bytes_since_record: 0,
            over_limit: false,
        });
        let mut header = ByteRecord::new();
        let has_header = header_reader
            .read_byte_record(&mut header)
            .map_err(|err| io_error("the CSV header", err))?;
        if !has_header {
            return Err("the file is empty: a CSV file starts with its header".into());
        }
        let header = StringRecord::from_byte_record(header)
            .map_err(|_| "the CSV header is not UTF-8".to_string())?;
        let classifier = classifier_for(&header)?;
        let header_end = header_reader.position().byte();
        let (base_offset, cursor) = if at.offset == 0 {
            (
                header_end,
                Cursor {
                    offset: header_end,
                    row: 1,
                    page: None,
                },
            )
        } else {
            (at.offset, at)
        };
        file.seek(SeekFrom::Start(base_offset))
            .map_err(|err| io_error("the file", err))?;
        Ok(CsvRows {
            classifier,
            reader: csv_reader(BoundedRecord {
                inner: file,
                bytes_since_record: 0,
                over_limit: false,
            }),
            base_offset,
            cursor,
            header_fields: header.len(),
            record: ByteRecord::new(),
            clock,
        })
    }

    fn outcome(&self, row: u64, now_ms: u64) -> RowOutcome {
        if self.record.len() != self.header_fields {
            return RowOutcome::Rejected {
                reason: format!(
                    "{} fields where the header has {}",
                    self.record.len(),
                    self.header_fields
                ),
            };
        }
        match StringRecord::from_byte_record(self.record.clone()) {
            Ok(record) => self.classifier.classify(Row::Csv(&record), row, now_ms),
            Err(err) => RowOutcome::Rejected {
                reason: match err.utf8_error().field().checked_add(1) {
                    Some(field) => format!("field {field} is not UTF-8"),
                    None => "not UTF-8".into(),
                },
            },
        }
    }
}

impl RowReader for CsvRows {
    fn read(&mut self, max_rows: usize) -> Result<RowChunk, String> {
        let now_ms = (self.clock)();
        let mut rows = Vec::with_capacity(max_rows.min(4_096));
        let mut end = false;
        while rows.len() < max_rows.max(1) {
            self.reader.get_mut().bytes_since_record = 0;
            match self.reader.read_byte_record(&mut self.record) {
                Ok(true) => {}
                Ok(false) => {
                    self.cursor.offset = self.base_offset + self.reader.position().byte();
                    end = true;
                    break;
                }
                Err(_) if self.reader.get_ref().over_limit => {
                    return Err(format!(
                        "row {}: a record over {} bytes (an unclosed quote?): the file cannot be read on",
                        self.cursor.row + 1,
                        RECORD_BYTES_MAX
                    ));
                }
                Err(err) => return Err(io_error(&format!("row {}", self.cursor.row + 1), err)),
            }
            let row = self.cursor.row + 1;
            let outcome = self.outcome(row, now_ms);
            self.cursor = Cursor {
                offset: self.base_offset + self.reader.position().byte(),
                row,
                page: None,
            };
            rows.push(ClassifiedRow { row, outcome });
        }
        Ok(RowChunk {
            rows,
            next: self.cursor.clone(),
            end,
        })
    }
}

/// An NDJSON file's rows.
pub struct NdjsonRows {
    classifier: Classifier,
    reader: BufReader<File>,
    cursor: Cursor,
    line: Vec<u8>,
    clock: Clock,
}

impl NdjsonRows {
    pub fn open(
        mut file: File,
        at: Cursor,
        classifier: Classifier,
        clock: Clock,
    ) -> Result<NdjsonRows, String> {
        file.seek(SeekFrom::Start(at.offset))
            .map_err(|err| io_error("the file", err))?;
        Ok(NdjsonRows {
            classifier,
            reader: BufReader::with_capacity(64 * 1024, file),
            cursor: at,
            line: Vec::new(),
            clock,
        })
    }

    /// Reads one line into `self.line` (without its end); `None` at the end of the file.
    /// Returns the bytes consumed and whether the line was cut at [`RECORD_BYTES_MAX`] (the
    /// rest of it is skipped).
    fn next_line(&mut self) -> io::Result<Option<(u64, bool)>> {
        self.line.clear();
        let mut consumed = 0u64;
        let mut cut = false;
        loop {
            let available = self.reader.fill_buf()?;
            if available.is_empty() {
                return Ok((consumed > 0).then_some((consumed, cut)));
            }
            let (part, found_end) = match available.iter().position(|&byte| byte == b'\n') {
                Some(at) => (&available[..at], true),
                None => (available, false),
            };
            let room = (RECORD_BYTES_MAX as usize).saturating_sub(self.line.len());
            if part.len() > room {
                cut = true;
            }
            self.line.extend_from_slice(&part[..part.len().min(room)]);
            let used = part.len() + usize::from(found_end);
            self.reader.consume(used);
            consumed += used as u64;
            if found_end {
                return Ok(Some((consumed, cut)));
            }
        }
    }
}

impl RowReader for NdjsonRows {
    fn read(&mut self, max_rows: usize) -> Result<RowChunk, String> {
        let now_ms = (self.clock)();
        let mut rows = Vec::with_capacity(max_rows.min(4_096));
        let mut end = false;
        while rows.len() < max_rows.max(1) {
            let row = self.cursor.row + 1;
            let Some((consumed, cut)) = self
                .next_line()
                .map_err(|err| io_error(&format!("row {row}"), err))?
            else {
                end = true;
                break;
            };
            self.cursor = Cursor {
                offset: self.cursor.offset + consumed,
                row,
                page: None,
            };
            if cut {
                rows.push(ClassifiedRow {
                    row,
                    outcome: RowOutcome::Rejected {
                        reason: format!("a line over {RECORD_BYTES_MAX} bytes"),
                    },
                });
                continue;
            }
            if self.line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let outcome = match serde_json::from_slice::<Value>(&self.line) {
                Ok(value) => self.classifier.classify(Row::Json(&value), row, now_ms),
                Err(err) => RowOutcome::Rejected {
                    reason: format!("not JSON: {err}"),
                },
            };
            rows.push(ClassifiedRow { row, outcome });
        }
        Ok(RowChunk {
            rows,
            next: self.cursor.clone(),
            end,
        })
    }
}
