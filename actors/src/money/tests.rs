use super::*;

#[test]
fn gift_bodies_of_both_sources_give_their_money() {
    // Goal: Stripe's body (decimal string, upper-case currency, designation `code`) and a
    // platform's (number amount, no currency, `projectCode`) both parse; the date is a day.
    let stripe = parse_gift_money(
        r#"{"transactionId":"pi_1","amount":"12.34","currencyCode":"USD","giftDate":"2025-06-15",
            "designations":[{"code":"GENERAL","amountDesignated":"12.34"}]}"#,
    )
    .unwrap();
    assert_eq!(
        stripe,
        GiftMoney {
            day: "2025-06-15".into(),
            project: "GENERAL".into(),
            amount_minor: 1234,
            currency: "usd".into()
        }
    );
    let platform = parse_gift_money(
        r#"{"amount":40.5,"giftDate":"2025-06-15T10:00:00Z","designations":[{"projectCode":"SPR"}]}"#,
    )
    .unwrap();
    assert_eq!(
        (
            platform.amount_minor,
            platform.currency.as_str(),
            platform.project.as_str()
        ),
        (4050, "usd", "SPR")
    );
    assert_eq!(platform.day, "2025-06-15");
    let yen = parse_gift_money(r#"{"amount":"1234","currencyCode":"JPY","giftDate":"06/15/2025"}"#)
        .unwrap();
    assert_eq!(
        (yen.amount_minor, yen.project.as_str(), yen.day.as_str()),
        (1234, "", "2025-06-15")
    );
}

#[test]
fn unreadable_gift_bodies_are_refused_with_a_reason() {
    // Goal: a missing or inexact amount, a bad date or currency is an error naming the field.
    for (body, field) in [
        (r#"{"giftDate":"2025-06-15"}"#, "amount"),
        (r#"{"amount":"12.345","giftDate":"2025-06-15"}"#, "amount"),
        (r#"{"amount":"1e3","giftDate":"2025-06-15"}"#, "amount"),
        (r#"{"amount":"12.00"}"#, "giftDate"),
        (r#"{"amount":"12.00","giftDate":"2025-13-40"}"#, "giftDate"),
        (
            r#"{"amount":"12.00","giftDate":"2025-06-15","currencyCode":"US$"}"#,
            "currencyCode",
        ),
        ("[1]", "object"),
        ("not json", "JSON"),
    ] {
        let error = parse_gift_money(body).unwrap_err();
        assert!(error.contains(field), "{body}: {error}");
    }
}

#[test]
fn decimals_follow_the_currency_and_never_round() {
    // Goal: major units become exact minor units; extra zeros are fine, extra digits are not.
    assert_eq!(decimal_to_minor("12.34", "usd"), Some(1234));
    assert_eq!(decimal_to_minor("12.5", "usd"), Some(1250));
    assert_eq!(decimal_to_minor("12.340000", "usd"), Some(1234));
    assert_eq!(decimal_to_minor("-12.34", "usd"), Some(-1234));
    assert_eq!(decimal_to_minor(".5", "usd"), Some(50));
    assert_eq!(decimal_to_minor("1234", "jpy"), Some(1234));
    assert_eq!(decimal_to_minor("1234.0", "JPY"), Some(1234));
    assert_eq!(decimal_to_minor("1.5", "jpy"), None);
    assert_eq!(decimal_to_minor("1.234", "kwd"), Some(1234));
    assert_eq!(decimal_to_minor("12.341", "usd"), None);
    assert_eq!(decimal_to_minor("", "usd"), None);
    assert_eq!(decimal_to_minor("-", "usd"), None);
    assert_eq!(decimal_to_minor("1,000.00", "usd"), None);
    assert_eq!(decimal_to_minor("99999999999999999999", "usd"), None);
}

#[test]
fn days_are_canonical_and_ranges_count_both_ends() {
    // Goal: the accepted date forms give one day text; the range arithmetic is inclusive.
    assert_eq!(
        canonical_day("2026-11-26T00:00:00").as_deref(),
        Some("2026-11-26")
    );
    assert_eq!(canonical_day("11/26/2026").as_deref(), Some("2026-11-26"));
    assert_eq!(canonical_day("1/2/2026").as_deref(), Some("2026-01-02"));
    assert_eq!(canonical_day("0999-01-01"), None);
    assert_eq!(parse_day("2026-1-2"), None);
    let from = parse_day("2026-01-01").unwrap();
    assert_eq!(days_inclusive(from, parse_day("2026-12-31").unwrap()), 365);
    assert_eq!(days_inclusive(from, from), 1);
    assert!(days_inclusive(from, parse_day("2025-12-31").unwrap()) <= 0);
    let job_from = utc_midnight_ms(parse_day("1970-01-03").unwrap()).unwrap();
    assert_eq!(job_from, 2 * 86_400_000);
}

#[test]
fn the_nightly_run_is_due_at_its_local_time_for_the_previous_seven_days() {
    // Goal: the latest daily_at at or before now, in the tenant's zone (DST included), and
    // the seven days before its local day.
    let at = |text: &str| text.parse::<jiff::Timestamp>().unwrap().as_millisecond() as u64;
    // 01:30 in New York on 2026-03-10 is 05:30Z (EDT since 2026-03-08).
    let (due_ms, day) =
        last_daily_at(1, 30, "America/New_York", at("2026-03-10T12:00:00Z")).unwrap();
    assert_eq!(due_ms, at("2026-03-10T05:30:00Z"));
    assert_eq!(day.to_string(), "2026-03-10");
    // Before today's time: yesterday's.
    let (due_ms, day) =
        last_daily_at(1, 30, "America/New_York", at("2026-03-10T05:00:00Z")).unwrap();
    assert_eq!(due_ms, at("2026-03-09T05:30:00Z"));
    assert_eq!(day.to_string(), "2026-03-09");
    // Unknown zone: UTC.
    let (due_ms, _) = last_daily_at(0, 0, "", at("2026-03-10T00:00:00Z")).unwrap();
    assert_eq!(due_ms, at("2026-03-10T00:00:00Z"));
    let (from, to) = nightly_range(parse_day("2026-03-10").unwrap()).unwrap();
    assert_eq!(
        (from.to_string(), to.to_string()),
        ("2026-03-03".into(), "2026-03-09".into())
    );
    assert_eq!(days_inclusive(from, to), NIGHTLY_DAYS);
}
