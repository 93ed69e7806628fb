//! Minor units → the decimal string Virtuous expects, in major units of the currency.
//!
//! Stripe sends integers in the currency's smallest unit. Virtuous wants major units
//! (docs/ingress.md, Stripe and generic platforms): `usd` 1234 → `"12.34"`, `jpy` 1234 → `"1234"`.

/// Currencies Stripe treats as zero-decimal: the amount is already in major units.
pub const ZERO_DECIMAL_CURRENCIES: [&str; 16] = [
    "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv",
    "xaf", "xof", "xpf",
];

/// Currencies with three decimals in Stripe's minor units (1000 `kwd` minor = 1.000 KWD).
pub const THREE_DECIMAL_CURRENCIES: [&str; 5] = ["bhd", "jod", "kwd", "omr", "tnd"];

/// Number of decimals of `currency`'s minor unit as Stripe counts it (case-insensitive).
pub fn minor_unit_decimals(currency: &str) -> u32 {
    let lower = currency.to_ascii_lowercase();
    if ZERO_DECIMAL_CURRENCIES.contains(&lower.as_str()) {
        0
    } else if THREE_DECIMAL_CURRENCIES.contains(&lower.as_str()) {
        3
    } else {
        2
    }
}

/// Formats `amount_minor` of `currency` as a decimal string in major units, exactly (no
/// floating point): `(1234, "usd")` → `"12.34"`, `(5, "usd")` → `"0.05"`, `(-250, "usd")` →
/// `"-2.50"`, `(1234, "jpy")` → `"1234"`.
pub fn minor_to_major(amount_minor: i64, currency: &str) -> String {
    let decimals = minor_unit_decimals(currency);
    if decimals == 0 {
        return amount_minor.to_string();
    }
    let sign = if amount_minor < 0 { "-" } else { "" };
    // unsigned_abs: i64::MIN has no positive i64 counterpart.
    let magnitude = amount_minor.unsigned_abs();
    let scale = 10u64.pow(decimals);
    format!(
        "{sign}{}.{:0width$}",
        magnitude / scale,
        magnitude % scale,
        width = decimals as usize
    )
}

/// Inverse of [`minor_to_major`] for the strings it produces (used to check round trips and
/// designation sums); `None` for anything else.
pub fn major_to_minor(major: &str, currency: &str) -> Option<i64> {
    let decimals = minor_unit_decimals(currency) as usize;
    let (negative, digits) = match major.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, major),
    };
    let (whole, fraction) = match digits.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (digits, ""),
    };
    let all_digits = |text: &str| text.bytes().all(|byte| byte.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) {
        return None;
    }
    if fraction.len() != decimals {
        return None;
    }
    let magnitude: i128 = format!("{whole}{fraction}").parse().ok()?;
    let value = if negative { -magnitude } else { magnitude };
    i64::try_from(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn two_decimal_currencies_divide_by_one_hundred() {
        // Goal: usd minor units become major units with exactly two decimals.
        assert_eq!(minor_to_major(1234, "usd"), "12.34");
        assert_eq!(minor_to_major(1234, "USD"), "12.34");
        assert_eq!(minor_to_major(5, "eur"), "0.05");
        assert_eq!(minor_to_major(100, "gbp"), "1.00");
        assert_eq!(minor_to_major(-250, "usd"), "-2.50");
    }

    #[test]
    fn zero_decimal_currencies_are_unchanged() {
        // Goal: jpy (and every listed zero-decimal currency) is sent as-is.
        assert_eq!(minor_to_major(1234, "jpy"), "1234");
        assert_eq!(minor_to_major(1234, "JPY"), "1234");
        for currency in ZERO_DECIMAL_CURRENCIES {
            assert_eq!(minor_to_major(500, currency), "500", "{currency}");
        }
    }

    #[test]
    fn three_decimal_currencies_keep_three_places() {
        // Goal: kwd minor units are thousandths.
        assert_eq!(minor_to_major(1230, "kwd"), "1.230");
        assert_eq!(major_to_minor("1.230", "kwd"), Some(1230));
    }

    #[test]
    fn malformed_major_strings_are_refused() {
        // Goal: the inverse accepts only the exact shape minor_to_major produces.
        assert_eq!(major_to_minor("12.3", "usd"), None);
        assert_eq!(major_to_minor("12.345", "usd"), None);
        assert_eq!(major_to_minor("12.34", "jpy"), None);
        assert_eq!(major_to_minor("1e3", "usd"), None);
        assert_eq!(major_to_minor(".50", "usd"), None);
    }

    proptest! {
        #[test]
        fn conversion_round_trips(amount_minor in any::<i64>(), currency_index in 0usize..6) {
            // Goal: major units lose nothing, for random amounts in 0-, 2- and 3-decimal currencies.
            let currency = ["usd", "jpy", "eur", "krw", "kwd", "clp"][currency_index];
            let major = minor_to_major(amount_minor, currency);
            prop_assert_eq!(major_to_minor(&major, currency), Some(amount_minor));
        }
    }
}
