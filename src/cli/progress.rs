//! Progress bars on stderr (stdout stays for what scripts read). Hidden when stderr is not a
//! terminal or with `--json`: a hidden bar takes every call and draws nothing.

use std::io::{IsTerminal, Read};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a spinner turns by itself.
const SPINNER_TICK: Duration = Duration::from_millis(120);

/// Whether bars are drawn: a person at a terminal, not `--json`.
pub fn bars_shown(json: bool) -> bool {
    !json && std::io::stderr().is_terminal()
}

fn bar(length: u64, template: &str, shown: bool) -> ProgressBar {
    if !shown {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(length), ProgressDrawTarget::stderr());
    // The templates are constants: a bad one is a bug, shown as the default style.
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// A bar over `total_bytes` (an upload, a dry run reading its file).
pub fn bytes_bar(total_bytes: u64, shown: bool) -> ProgressBar {
    bar(
        total_bytes,
        "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)",
        shown,
    )
}

/// A bar from 0 to 100 (a running job's percent).
pub fn percent_bar(shown: bool) -> ProgressBar {
    bar(100, "[{bar:30}] {pos:>3} % {msg}", shown)
}

/// A spinner with a message (when there is nothing to measure against).
pub fn spinner(shown: bool) -> ProgressBar {
    if !shown {
        return ProgressBar::hidden();
    }
    let spinner = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}") {
        spinner.set_style(style);
    }
    spinner.enable_steady_tick(SPINNER_TICK);
    spinner
}

/// A reader that moves a bar by the bytes read through it (a file being uploaded).
pub struct CountingReader<R> {
    inner: R,
    bar: ProgressBar,
}

impl<R: Read> CountingReader<R> {
    pub fn new(inner: R, bar: ProgressBar) -> CountingReader<R> {
        CountingReader { inner, bar }
    }
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.bar.inc(read as u64);
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counting_reader_moves_its_bar_by_the_bytes_read() {
        // Goal: every byte read through the reader is counted once; a hidden bar counts too.
        let bar = bytes_bar(10, false);
        let mut reader = CountingReader::new(&b"0123456789"[..], bar.clone());
        let mut read = Vec::new();
        reader.read_to_end(&mut read).unwrap();
        assert_eq!(read.len(), 10);
        assert_eq!(bar.position(), 10);
        assert!(!bars_shown(true), "--json never draws a bar");
    }
}
