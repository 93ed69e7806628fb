//! Backfill files (pattern 5, docs/backfill.md): reading an uploaded CSV or NDJSON file and
//! classifying each row with the live path's mapping — the [`steward_actors::backfill::BackfillFiles`]
//! port's adapter. One classifier serves the dry run and the real run. A listing job (a
//! source's listing read through its poller, no file) has its records classified here too.
//!
//! # Layout
//! - [`validate_spec`]: a job's spec checked against the tenant document at `POST …/backfills`
//!   (`spec`: the mapping model and its checks).
//! - [`FileBackfills`]: opens a job's file at a cursor (`{dir}/{job}.{csv|ndjson}`) as a
//!   [`RowReader`] (`reader`: streamed, resumable CSV and NDJSON readers).
//! - `classify`: the one classifier, row → [`steward_actors::backfill::RowOutcome`], with the
//!   live path's entries in the `backfill` lane and the job's label as every gift's `batch`;
//!   a listing job's polled record the same way ([`BackfillFiles::classify_listed`]).
//! - `generic`: mapping objects (the platform sources' model, plus row filters).
//! - `stripe_export`: the `stripe_payments_export` preset (the Stripe Dashboard's export).

mod classify;
mod generic;
pub mod reader;
pub mod spec;
pub mod stripe_export;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests_generic;
#[cfg(test)]
mod tests_listing;
#[cfg(test)]
mod tests_reader;
#[cfg(test)]
mod tests_spec;
#[cfg(test)]
mod tests_stripe_export;
#[cfg(test)]
mod tests_stripe_live;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use steward_actors::backfill::{BackfillFiles, Cursor, JobSpec, RowOutcome, RowReader};
use steward_actors::ports::PolledItem;

pub use classify::{Classifier, Row, NOTHING_TO_SEND};
pub use reader::{Clock, CsvRows, NdjsonRows, RECORD_BYTES_MAX};
use spec::{check_spec, validate_listing, Format};

use crate::tenant::TenantDoc;

/// The preset that reads the Stripe Dashboard's payments CSV export as is.
pub const STRIPE_EXPORT_PRESET: &str = "stripe_payments_export";

/// Why a job's spec is refused (HTTP 422 `invalid_backfill`, naming the field).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct SpecError {
    /// Where the error is (`mapping.fields.amount`, `format`).
    pub path: String,
    pub message: String,
}

/// Checks a job's spec against the tenant document. A file job: a known source, a format, a
/// mapping that produces the live path's source id for that source, a label. A listing job
/// ([`validate_listing`]): a source the tenant polls, a window, a label.
pub fn validate_spec(doc: &TenantDoc, spec: &JobSpec) -> Result<(), SpecError> {
    match spec.listing {
        Some(_) => validate_listing(doc, spec),
        None => check_spec(doc, spec).map(|_| ()),
    }
}

/// The adapter: a tenant's backfill files under `dir`, mapped with `doc`'s settings.
pub struct FileBackfills {
    pub dir: PathBuf,
    pub doc: Arc<TenantDoc>,
}

impl FileBackfills {
    /// Where job `job_id`'s file is kept.
    pub fn file_path(dir: &Path, job_id: &str, format: &str) -> PathBuf {
        dir.join(format!("{job_id}.{format}"))
    }

    /// [`BackfillFiles::open`] with the clock that stamps the entries.
    pub fn open_with_clock(
        &self,
        job_id: &str,
        spec: &JobSpec,
        at: Cursor,
        clock: Clock,
    ) -> Result<Box<dyn RowReader>, String> {
        if spec.listing.is_some() {
            return Err(format!(
                "backfill {job_id} reads the {} listing through its poller: it has no file to open",
                spec.source
            ));
        }
        // Checked again: the tenant's settings may have changed since the job was created.
        let checked = check_spec(&self.doc, spec).map_err(|err| err.to_string())?;
        let path = FileBackfills::file_path(&self.dir, job_id, &spec.format);
        let file =
            File::open(&path).map_err(|err| format!("cannot open {}: {err}", path.display()))?;
        let doc = &self.doc;
        match checked.format {
            Format::Csv => {
                let classifier_for =
                    |header: &csv::StringRecord| Classifier::for_csv(doc, spec, job_id, header);
                let rows = CsvRows::open(file, at, classifier_for, clock)?;
                Ok(Box::new(rows))
            }
            Format::Ndjson => {
                let classifier = Classifier::for_ndjson(doc, spec, job_id)?;
                Ok(Box::new(NdjsonRows::open(file, at, classifier, clock)?))
            }
        }
    }
}

impl BackfillFiles for FileBackfills {
    fn open(&self, job_id: &str, spec: &JobSpec, at: Cursor) -> Result<Box<dyn RowReader>, String> {
        self.open_with_clock(job_id, spec, at, steward_actors::ports::now_ms)
    }

    fn classify_listed(&self, spec: &JobSpec, item: PolledItem) -> RowOutcome {
        classify::listed(spec, item)
    }
}
