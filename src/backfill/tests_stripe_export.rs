//! The `stripe_payments_export` preset, row by row: statuses, amounts, refunds, disputes,
//! metadata, required columns.

use serde_json::{json, Value};
use steward_actors::backfill::{Cursor, RowOutcome};

use super::test_support::*;
use crate::sources::stripe::{DISPUTE_ALERT, PARTIAL_REFUND_ALERT};

fn outcome_of(changes: &[(&'static str, &str)]) -> RowOutcome {
    read_export(&export_of(&[paid_row(changes)]), doc(), 10)
        .remove(0)
        .outcome
}

fn payment_parts(outcome: &RowOutcome) -> (Vec<String>, Vec<String>) {
    let RowOutcome::Payment {
        entries, alerts, ..
    } = outcome
    else {
        panic!("not a payment: {outcome:?}");
    };
    (
        entries
            .iter()
            .map(|e| e.fact.idempotency_key.clone())
            .collect(),
        alerts.iter().map(|a| a.code.clone()).collect(),
    )
}

#[test]
fn statuses_that_are_not_a_captured_success_are_skipped_with_the_reason() {
    // Goal: failed, uncaptured (by status or by `Captured`), canceled and unknown statuses
    // are skipped and say why; refunded and disputed statuses are still payments.
    let skip = |changes: &[(&'static str, &str)]| match outcome_of(changes) {
        RowOutcome::Skipped { reason } => reason,
        other => panic!("{other:?}"),
    };
    assert_eq!(skip(&[("Status", "Failed")]), "failed payment");
    assert_eq!(skip(&[("Status", "Uncaptured")]), "uncaptured payment");
    assert_eq!(skip(&[("Captured", "false")]), "uncaptured payment");
    assert_eq!(skip(&[("Status", "Canceled")]), "canceled payment");
    assert_eq!(
        skip(&[("Status", "requires_action")]),
        "status `requires action`"
    );
    assert_eq!(skip(&[("Amount", "0.00")]), "payment of zero");
    for status in [
        "Paid",
        "succeeded",
        "Refunded",
        "Partially refunded",
        "Disputed",
    ] {
        assert!(
            matches!(
                outcome_of(&[("Status", status)]),
                RowOutcome::Payment { .. }
            ),
            "{status}"
        );
    }
}

#[test]
fn test_mode_rows_follow_accept_test_events() {
    // Goal: like live test-mode events, test-mode rows are skipped unless the tenant takes them.
    assert!(matches!(
        outcome_of(&[("Mode", "Test")]),
        RowOutcome::Payment { .. }
    ));
    let mut strict = doc();
    strict.sources.stripe.as_mut().unwrap().accept_test_events = false;
    let rows = read_export(&export_of(&[paid_row(&[("Mode", "Test")])]), strict, 10);
    let RowOutcome::Skipped { reason } = &rows[0].outcome else {
        panic!()
    };
    assert_eq!(reason, "test-mode event (accept_test_events is off)");
}

#[test]
fn unreadable_cells_reject_the_row_with_the_reason() {
    // Goal: a missing id, a bad amount, date or currency, or no donor reject the row.
    let reject = |changes: &[(&'static str, &str)]| match outcome_of(changes) {
        RowOutcome::Rejected { reason } => reason,
        other => panic!("{other:?}"),
    };
    assert_eq!(reject(&[("id", "")]), "no charge id (column `id`)");
    assert_eq!(
        reject(&[("Amount", "12.3.4")]),
        "`Amount` `12.3.4` is not an amount in major units of USD"
    );
    assert_eq!(
        reject(&[("Amount", "12.345")]),
        "`Amount` `12.345` is not an amount in major units of USD"
    );
    assert_eq!(
        reject(&[("Amount Refunded", "x")]),
        "`Amount Refunded` `x` is not an amount in major units of USD"
    );
    assert_eq!(
        reject(&[("Currency", "US$")]),
        "`Currency` `US$` is not a three-letter currency code"
    );
    assert_eq!(
        reject(&[("Created (UTC)", "13/01/2025 10:00")]),
        "the creation date `13/01/2025 10:00` is not `YYYY-MM-DD HH:MM[:SS]` (UTC)"
    );
    assert_eq!(
        reject(&[("Customer Email", ""), ("Card Name", "")]),
        "no donor: no billing email or name, receipt_email or customer"
    );
}

#[test]
fn amounts_keep_thousands_separators_and_zero_decimal_currencies() {
    // Goal: "1,234.56" usd is 123456 minor units; "1,500" jpy is 1500 yen.
    let body = |changes: &[(&'static str, &str)]| {
        first_body(&read_export(&export_of(&[paid_row(changes)]), doc(), 10)[0])
    };
    assert_eq!(body(&[("Amount", "1,234.56")])["amount"], json!("1234.56"));
    let yen = body(&[("Amount", "1,500"), ("Currency", "jpy")]);
    assert_eq!(
        (yen["amount"].clone(), yen["currencyCode"].clone()),
        (json!("1500"), json!("JPY"))
    );
}

#[test]
fn refunds_and_disputes_do_what_the_live_path_does() {
    // Goal: a full refund → gift + reversal; a partial refund → gift + the partial-refund
    // alert; a dispute that withdrew the funds → gift + reversal + the dispute alert; a won
    // dispute or an inquiry → the gift alone; a refunded and disputed payment is reversed once.
    let parts = |changes: &[(&'static str, &str)]| payment_parts(&outcome_of(changes));
    let gift = "stripe:gift:pi_1".to_string();
    let refund = "stripe:refund:pi_1".to_string();
    assert_eq!(
        parts(&[("Amount Refunded", "12.34")]),
        (vec![gift.clone(), refund.clone()], vec![])
    );
    assert_eq!(
        parts(&[("Amount Refunded", "2.00")]),
        (vec![gift.clone()], vec![PARTIAL_REFUND_ALERT.to_string()])
    );
    let lost = [
        ("Disputed Amount", "12.34"),
        ("Dispute Status", "lost"),
        ("Dispute Reason", "fraudulent"),
    ];
    assert_eq!(
        parts(&lost),
        (
            vec![gift.clone(), refund.clone()],
            vec![DISPUTE_ALERT.to_string()]
        )
    );
    assert_eq!(
        parts(&[("Dispute Status", "won")]),
        (vec![gift.clone()], vec![])
    );
    assert_eq!(
        parts(&[("Dispute Status", "warning_closed")]),
        (vec![gift.clone()], vec![])
    );
    let refunded_and_lost = [
        ("Amount Refunded", "12.34"),
        ("Dispute Status", "needs_response"),
    ];
    assert_eq!(
        parts(&refunded_and_lost),
        (vec![gift.clone(), refund], vec![DISPUTE_ALERT.to_string()])
    );
    // Money: captured minus refunded, nothing once reversed.
    let money = |changes: &[(&'static str, &str)]| match outcome_of(changes) {
        RowOutcome::Payment { money, .. } => money.unwrap().amount_minor,
        other => panic!("{other:?}"),
    };
    assert_eq!(money(&[]), 1234);
    assert_eq!(money(&[("Amount Refunded", "2.00")]), 1034);
    assert_eq!(money(&[("Amount Refunded", "12.34")]), 0);
    assert_eq!(money(&lost), 0);
    // The dispute's reversal is dated when the funds left; its alert names the reason.
    let RowOutcome::Payment {
        entries, alerts, ..
    } = outcome_of(&[
        ("Dispute Status", "lost"),
        ("Disputed Amount", "12.34"),
        ("Dispute Date (UTC)", "2025-04-02 08:00"),
    ])
    else {
        panic!()
    };
    let reversal: Value = serde_json::from_str(&entries[1].fact.body_json).unwrap();
    assert_eq!(reversal["giftDate"], json!("2025-04-02"));
    assert_eq!(
        reversal["notes"],
        json!("Stripe dispute (unknown) on payment pi_1")
    );
    assert!(alerts[0]
        .message
        .starts_with("dispute (unknown) withdrew 12.34 USD for Stripe payment pi_1"));
}

#[test]
fn metadata_columns_map_to_codes_as_the_stripe_settings_say() {
    // Goal: `{key} (metadata)` columns feed the tenant's metadata keys: the default keys
    // (`designation`, `segment`) and configured ones; without them the default project.
    let row = paid_row(&[
        ("designation (metadata)", "SHELTER"),
        ("segment (metadata)", "SPRING"),
    ]);
    let body = first_body(&read_export(&export_of(&[row]), doc(), 10)[0]);
    assert_eq!(
        body["designations"],
        json!([{"code": "SHELTER", "amountDesignated": "12.34"}])
    );
    assert_eq!(body["segment"], json!("SPRING"));
    let plain = first_body(&read_export(&export_of(&[paid_row(&[])]), doc(), 10)[0]);
    assert_eq!(plain["designations"][0]["code"], json!("GENERAL"));
    // A tenant whose project code is in `fund`.
    let mut tenant = doc();
    tenant
        .sources
        .stripe
        .as_mut()
        .unwrap()
        .metadata_keys
        .project_code = "fund".into();
    let mut bytes = b"id,Created date (UTC),Amount,Currency,Status,Customer Email,PaymentIntent ID,fund (metadata)\n".to_vec();
    bytes.extend_from_slice(b"ch_9,2025-03-01 10:00,5.00,usd,Paid,a@example.org,,MEALS\n");
    let rows = read_export(&bytes, tenant, 10);
    let body = first_body(&rows[0]);
    assert_eq!(body["designations"][0]["code"], json!("MEALS"));
    // No PaymentIntent: keyed by the charge, as live.
    assert_eq!(summary(&rows[0]), "2:payment:stripe:gift:ch_9");
}

#[test]
fn an_export_without_the_payment_intent_column_is_refused() {
    // Goal: without `PaymentIntent ID` payments seen live would be keyed differently: the
    // file is refused at open, saying which column to add.
    let dir = tempfile::tempdir().unwrap();
    write_file(
        dir.path(),
        EXPORT_JOB,
        "csv",
        b"id,Created (UTC),Amount,Currency,Status\n",
    );
    let error = files(dir.path(), doc())
        .open_with_clock(EXPORT_JOB, &preset_job(), Cursor::default(), fixed_clock)
        .err()
        .unwrap();
    assert!(
        error.starts_with("the export has no `PaymentIntent ID` column"),
        "{error}"
    );
}
