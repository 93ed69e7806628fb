//! Wire-level values shared by the sandbox modules: amounts, dates, timestamps, loose JSON
//! scalars and the small helpers that read Virtuous's camelCase bodies case-insensitively.

use std::fmt;

use jiff::civil::Date;
use serde::de::{self, Deserializer, IgnoredAny, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

/// ISO 8601 UTC with milliseconds, the form of `createDateTimeUtc` / `modifiedDateTimeUtc`.
pub(crate) use crate::listing::iso_millis as iso_utc;

/// The UTC calendar day of a millisecond timestamp.
pub(crate) fn utc_date(ms: u64) -> Date {
    jiff::Timestamp::from_millisecond(ms as i64)
        .map(|ts| ts.to_zoned(jiff::tz::TimeZone::UTC).date())
        .unwrap_or(Date::constant(1970, 1, 1))
}

/// A JSON scalar kept as text, so `"12.34"`, `12.34` and `12` are all accepted where Virtuous
/// binds a decimal or an id; anything else (object, array, bool) is remembered as `Other` so
/// validation can name the field instead of failing the whole body.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum LooseScalar {
    Text(String),
    Null,
    Other,
}

impl LooseScalar {
    pub(crate) fn text(&self) -> Option<&str> {
        match self {
            LooseScalar::Text(text) => Some(text.as_str()),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for LooseScalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LooseVisitor;
        impl<'de> Visitor<'de> for LooseVisitor {
            type Value = LooseScalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<LooseScalar, E> {
                Ok(LooseScalar::Text(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<LooseScalar, E> {
                Ok(LooseScalar::Text(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<LooseScalar, E> {
                Ok(LooseScalar::Text(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<LooseScalar, E> {
                Ok(LooseScalar::Text(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<LooseScalar, E> {
                Ok(LooseScalar::Text(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<LooseScalar, E> {
                Ok(LooseScalar::Other)
            }
            fn visit_unit<E: de::Error>(self) -> Result<LooseScalar, E> {
                Ok(LooseScalar::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<LooseScalar, E> {
                Ok(LooseScalar::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<LooseScalar, D::Error> {
                d.deserialize_any(LooseVisitor)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<LooseScalar, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(LooseScalar::Other)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<LooseScalar, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(LooseScalar::Other)
            }
        }
        deserializer.deserialize_any(LooseVisitor)
    }
}

/// A decimal amount in millionths of the major unit (6 decimals are plenty for every currency
/// Virtuous lists; more digits are rejected as malformed rather than silently rounded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Amount {
    pub(crate) micros: i64,
}

impl Amount {
    const SCALE: i64 = 1_000_000;

    /// Parses `"12.34"`, `"-5"`, `"1e3"` is refused (model binding of a decimal string rejects it).
    pub(crate) fn parse(text: &str) -> Option<Amount> {
        let text = text.trim();
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text.strip_prefix('+').unwrap_or(text)),
        };
        let (whole, fraction) = match digits.split_once('.') {
            Some((whole, fraction)) => (whole, fraction),
            None => (digits, ""),
        };
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if (whole.is_empty() && fraction.is_empty())
            || !all_digits(whole)
            || !all_digits(fraction)
            || fraction.len() > 6
            || whole.len() > 12
        {
            return None;
        }
        let whole_value: i64 = if whole.is_empty() {
            0
        } else {
            whole.parse().ok()?
        };
        let mut fraction_value: i64 = if fraction.is_empty() {
            0
        } else {
            fraction.parse().ok()?
        };
        for _ in fraction.len()..6 {
            fraction_value *= 10;
        }
        let micros = whole_value * Self::SCALE + fraction_value;
        Some(Amount {
            micros: if negative { -micros } else { micros },
        })
    }

    pub(crate) fn as_f64(self) -> f64 {
        self.micros as f64 / Self::SCALE as f64
    }

    pub(crate) fn to_json(self) -> Value {
        serde_json::Number::from_f64(self.as_f64())
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_f64())
    }
}

/// Parses a gift date: `YYYY-MM-DD`, `MM/DD/YYYY` (one- or two-digit month and day), or an
/// ISO 8601 date-time whose calendar date (as written) is the gift date.
pub(crate) fn parse_gift_date(text: &str) -> Option<Date> {
    let text = text.trim();
    if let Some(date) = parse_us_date(text) {
        return Some(date);
    }
    if text.len() == 10 {
        return text.parse::<Date>().ok();
    }
    if text.len() > 10 && matches!(text.as_bytes()[10], b'T' | b't' | b' ') {
        let date = text.get(..10)?.parse::<Date>().ok()?;
        let full_is_valid = text.parse::<jiff::Timestamp>().is_ok()
            || text.parse::<jiff::civil::DateTime>().is_ok();
        return full_is_valid.then_some(date);
    }
    None
}

/// `MM/DD/YYYY`, the date form of Virtuous query values.
pub(crate) fn parse_us_date(text: &str) -> Option<Date> {
    let mut parts = text.split('/');
    let month: i8 = parts.next()?.trim().parse().ok()?;
    let day: i8 = parts.next()?.trim().parse().ok()?;
    let year_text = parts.next()?.trim();
    if parts.next().is_some() || year_text.len() != 4 {
        return None;
    }
    let year: i16 = year_text.parse().ok()?;
    Date::new(year, month, day).ok()
}

/// How Virtuous prints a gift date in records (`2026-11-26T00:00:00`, assumed).
pub(crate) fn gift_date_json(date: Date) -> String {
    format!("{date}T00:00:00")
}

/// `M/D/YYYY`, Virtuous's `giftDateFormatted`.
pub(crate) fn gift_date_formatted(date: Date) -> String {
    format!("{}/{}/{}", date.month(), date.day(), date.year())
}

/// Reads a field by exact name, then case-insensitively (Virtuous's binding appears to be
/// case-insensitive, so `firstname` and `firstName` both bind).
pub(crate) fn field<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(value) = object.get(name) {
        return Some(value);
    }
    object
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value)
}

/// A field as trimmed non-empty text (numbers are printed), else `None`.
pub(crate) fn text_field(object: &Map<String, Value>, name: &str) -> Option<String> {
    match field(object, name)? {
        Value::String(text) if !text.trim().is_empty() => Some(text.trim().to_owned()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// A JSON value as text for comparisons (strings as-is, numbers printed).
pub(crate) fn value_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_parse_decimal_text_and_reject_malformed() {
        // Goal: decimal strings and numbers parse exactly; malformed text is refused.
        assert_eq!(Amount::parse("12.34").unwrap().micros, 12_340_000);
        assert_eq!(Amount::parse("12").unwrap().micros, 12_000_000);
        assert_eq!(Amount::parse(".5").unwrap().micros, 500_000);
        assert_eq!(Amount::parse("-1.5").unwrap().micros, -1_500_000);
        for bad in ["", "abc", "12,34", "1e3", "1.2.3", "1.1234567", "."] {
            assert!(Amount::parse(bad).is_none(), "{bad} should be malformed");
        }
    }

    #[test]
    fn gift_dates_accept_the_three_forms() {
        // Goal: YYYY-MM-DD, MM/DD/YYYY and ISO date-times give the written calendar date.
        let expected = Date::constant(2026, 3, 7);
        assert_eq!(parse_gift_date("2026-03-07"), Some(expected));
        assert_eq!(parse_gift_date("03/07/2026"), Some(expected));
        assert_eq!(parse_gift_date("3/7/2026"), Some(expected));
        assert_eq!(parse_gift_date("2026-03-07T23:30:00Z"), Some(expected));
        assert_eq!(parse_gift_date("2026-03-07T23:30:00-06:00"), Some(expected));
        assert_eq!(parse_gift_date("2026-03-07T23:30:00"), Some(expected));
        for bad in [
            "2026-13-01",
            "02/30/2026",
            "yesterday",
            "2026-03-07Tnope",
            "7/3/26",
        ] {
            assert_eq!(parse_gift_date(bad), None, "{bad} should be refused");
        }
    }

    #[test]
    fn timestamps_print_as_iso_utc_with_millis() {
        // Goal: record timestamps have the fixed ISO 8601 UTC form.
        assert_eq!(iso_utc(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(utc_date(1_700_000_000_123), Date::constant(2023, 11, 14));
    }

    #[test]
    fn loose_scalars_take_strings_and_numbers() {
        // Goal: ids and amounts bind from strings or numbers; other JSON kinds are flagged.
        let parsed: Vec<LooseScalar> =
            serde_json::from_str(r#"["a", 12.5, 7, true, null, {"x": 1}, [1]]"#).unwrap();
        assert_eq!(parsed[0], LooseScalar::Text("a".into()));
        assert_eq!(parsed[1], LooseScalar::Text("12.5".into()));
        assert_eq!(parsed[2], LooseScalar::Text("7".into()));
        assert_eq!(parsed[3], LooseScalar::Other);
        assert_eq!(parsed[4], LooseScalar::Null);
        assert_eq!(parsed[5], LooseScalar::Other);
        assert_eq!(parsed[6], LooseScalar::Other);
    }
}
