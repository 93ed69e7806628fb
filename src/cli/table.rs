//! Text for people: aligned tables, key–value lists, numbers with thousands separators,
//! durations and sizes in words. Pure (strings in, a string out).

/// Columns separated by this many spaces.
const GAP: &str = "  ";

/// A table with a header row. Cells that are numbers are aligned right.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|header| header.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells are blank, extra ones are dropped).
    pub fn row(&mut self, cells: Vec<String>) -> &mut Table {
        let mut cells = cells;
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as lines, each ending in a newline, without trailing spaces.
    pub fn render(&self) -> String {
        let widths: Vec<usize> = (0..self.headers.len())
            .map(|column| {
                std::iter::once(&self.headers[column])
                    .chain(self.rows.iter().map(|row| &row[column]))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let right_aligned: Vec<bool> = (0..self.headers.len())
            .map(|column| {
                !self.rows.is_empty()
                    && self
                        .rows
                        .iter()
                        .all(|row| row[column].is_empty() || looks_numeric(&row[column]))
            })
            .collect();
        let mut text = String::new();
        for row in std::iter::once(&self.headers).chain(self.rows.iter()) {
            let cells: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(column, cell)| {
                    let padding = widths[column].saturating_sub(cell.chars().count());
                    if right_aligned[column] {
                        format!("{}{cell}", " ".repeat(padding))
                    } else {
                        format!("{cell}{}", " ".repeat(padding))
                    }
                })
                .collect();
            text.push_str(cells.join(GAP).trim_end());
            text.push('\n');
        }
        text
    }
}

/// Whether a cell shows a number (`1,234`, `12.5`, `-3`, `45 %`).
fn looks_numeric(cell: &str) -> bool {
    let digits = cell.trim_end_matches(" %").trim_start_matches('-');
    !digits.is_empty()
        && digits.chars().any(|c| c.is_ascii_digit())
        && digits
            .chars()
            .all(|c| c.is_ascii_digit() || c == ',' || c == '.')
}

/// `label  value` lines, the values aligned.
pub fn key_values(pairs: &[(&str, String)]) -> String {
    let width = pairs
        .iter()
        .map(|(key, _)| key.chars().count())
        .max()
        .unwrap_or(0);
    pairs
        .iter()
        .map(|(key, value)| {
            let padding = width - key.chars().count();
            format!("{key}{}{GAP}{value}", " ".repeat(padding))
                .trim_end()
                .to_string()
                + "\n"
        })
        .collect()
}

/// `12345678` → `12,345,678`.
pub fn thousands(number: u64) -> String {
    let digits = number.to_string();
    let mut text = String::with_capacity(digits.len() + digits.len() / 3);
    for (at, digit) in digits.chars().enumerate() {
        if at > 0 && (digits.len() - at) % 3 == 0 {
            text.push(',');
        }
        text.push(digit);
    }
    text
}

/// A decimal string with thousands separators in its whole part: `19309656.00` →
/// `19,309,656.00`, `-1234` → `-1,234`; anything that is not a plain decimal unchanged.
pub fn decimal_thousands(decimal: &str) -> String {
    let (sign, unsigned) = match decimal.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", decimal),
    };
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (unsigned, None),
    };
    let Ok(whole_number) = whole.parse::<u64>() else {
        return decimal.to_string();
    };
    match fraction {
        Some(fraction) => format!("{sign}{}.{fraction}", thousands(whole_number)),
        None => format!("{sign}{}", thousands(whole_number)),
    }
}

/// A JSON number as [`thousands`], `-` when absent.
pub fn count(value: &serde_json::Value) -> String {
    value.as_u64().map_or_else(|| "-".to_string(), thousands)
}

/// Seconds in words: `45 s`, `12 min`, `3 h 5 min`, `2 d 4 h`.
pub fn duration_words(seconds: u64) -> String {
    const MINUTE: u64 = 60;
    const HOUR: u64 = 3_600;
    const DAY: u64 = 86_400;
    match seconds {
        s if s < MINUTE => format!("{s} s"),
        s if s < HOUR => format!("{} min", s.div_ceil(MINUTE)),
        s if s < DAY => match (s % HOUR).div_ceil(MINUTE) {
            0 => format!("{} h", s / HOUR),
            60 => format!("{} h", s / HOUR + 1),
            minutes => format!("{} h {minutes} min", s / HOUR),
        },
        s => match (s % DAY) / HOUR {
            0 => format!("{} d", s / DAY),
            hours => format!("{} d {hours} h", s / DAY),
        },
    }
}

/// Bytes in words: `512 B`, `1.5 KiB`, `3.2 MiB`, `1.0 GiB`.
pub fn bytes_words(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut size = bytes as f64 / 1024.0;
    let mut unit = 0;
    while size >= 1024.0 && unit + 1 < UNITS.len() {
        size /= 1024.0;
        unit += 1;
    }
    format!("{size:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_text_left_and_numbers_right() {
        // Goal: every column is as wide as its widest cell, numbers line up on the right,
        // no line ends in spaces, and short rows are padded.
        let mut table = Table::new(&["ID", "STATE", "ROWS"]);
        table
            .row(vec!["bf_a".into(), "running".into(), "1,200".into()])
            .row(vec!["bf_bb".into(), "done".into(), "7".into()])
            .row(vec!["bf_c".into()]);
        assert_eq!(
            table.render(),
            "ID     STATE     ROWS\n\
             bf_a   running  1,200\n\
             bf_bb  done         7\n\
             bf_c\n"
        );
    }

    #[test]
    fn key_values_line_up() {
        // Goal: values start in one column whatever the key's length.
        let text = key_values(&[("rows", "5".into()), ("calls needed", "89".into())]);
        assert_eq!(text, "rows          5\ncalls needed  89\n");
    }

    #[test]
    fn numbers_durations_and_sizes_in_words() {
        // Goal: the words people read, at each unit's edges.
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(12_345_678), "12,345,678");
        assert_eq!(decimal_thousands("19309656.00"), "19,309,656.00");
        assert_eq!(decimal_thousands("-1234"), "-1,234");
        assert_eq!(decimal_thousands("12.5"), "12.5");
        assert_eq!(decimal_thousands("n/a"), "n/a");
        assert_eq!(duration_words(45), "45 s");
        assert_eq!(duration_words(61), "2 min");
        assert_eq!(duration_words(3_600), "1 h");
        assert_eq!(duration_words(3 * 3_600 + 300), "3 h 5 min");
        assert_eq!(duration_words(2 * 86_400 + 4 * 3_600 + 9), "2 d 4 h");
        assert_eq!(bytes_words(512), "512 B");
        assert_eq!(bytes_words(1_536), "1.5 KiB");
        assert_eq!(bytes_words(1024 * 1024 * 1024), "1.0 GiB");
        assert!(looks_numeric("45.5 %") && looks_numeric("-3") && !looks_numeric("bf_1"));
    }
}
