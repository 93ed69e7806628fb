use serde_json::json;

use super::*;
use crate::virtuous::OrgSpec;

/// 2023-11-14T22:13:20Z
const T0: u64 = 1_700_000_000_000;
const DAY_MS: u64 = 86_400_000;

fn state_with_gifts() -> OrgState {
    let mut state = OrgState::new(&OrgSpec::new("o", "k"));
    let contact = json!({"contactIndividuals": [{"firstName": "A", "lastName": "B",
        "contactMethods": [{"type": "Home Email", "value": "ann@example.org"}]}]});
    state
        .contacts
        .insert(Record::new(1, T0, contact.as_object().unwrap().clone()));
    for (n, (source, amount, created)) in [
        ("Stripe", 10.0, T0),
        ("Stripe", 25.0, T0 + DAY_MS),
        ("PayPal", 40.0, T0 + 2 * DAY_MS),
    ]
    .into_iter()
    .enumerate()
    {
        let id = state.gifts.next_id();
        let doc = json!({"transactionSource": source, "transactionId": format!("t{n}"),
            "amount": amount, "contactId": 1, "giftDate": "2023-11-14T00:00:00"});
        state
            .gifts
            .insert(Record::new(id, created, doc.as_object().unwrap().clone()));
    }
    state
}

fn ids(state: &OrgState, body: serde_json::Value) -> Result<Vec<u64>, String> {
    let query: QueryBody = serde_json::from_value(body).unwrap();
    run_query(RecordKind::Gift, &query, state).map(|records| records.iter().map(|r| r.id).collect())
}

fn condition(parameter: &str, operator: &str, value: &str) -> serde_json::Value {
    json!({"parameter": parameter, "operator": operator, "value": value})
}

#[test]
fn no_groups_means_no_filter() {
    // Goal: absent or empty groups return every record, by id.
    let state = state_with_gifts();
    assert_eq!(ids(&state, json!({})).unwrap(), [1, 2, 3]);
    assert_eq!(ids(&state, json!({"groups": []})).unwrap(), [1, 2, 3]);
}

#[test]
fn conditions_and_within_a_group_and_groups_or() {
    // Goal: AND inside a group, OR across groups.
    let state = state_with_gifts();
    let and = json!({"groups": [{"conditions": [
        condition("Transaction Source", "Is", "stripe"),
        condition("Amount", "GreaterThan", "15")]}]});
    assert_eq!(ids(&state, and).unwrap(), [2]);
    let or = json!({"groups": [
        {"conditions": [condition("Transaction Id", "Is", "t0")]},
        {"conditions": [condition("Transaction Source", "Is", "PayPal")]}]});
    assert_eq!(ids(&state, or).unwrap(), [1, 3]);
}

#[test]
fn date_only_values_compare_calendar_days() {
    // Goal: MM/DD/YYYY compares UTC days; ISO date-times compare instants.
    let state = state_with_gifts();
    let group = |c| json!({"groups": [{"conditions": [c]}]});
    assert_eq!(
        ids(&state, group(condition("Create Date", "Is", "11/15/2023"))).unwrap(),
        [2]
    );
    assert_eq!(
        ids(
            &state,
            group(condition("Create Date", "After", "11/14/2023"))
        )
        .unwrap(),
        [2, 3]
    );
    assert_eq!(
        ids(
            &state,
            group(condition("Create Date", "OnOrBefore", "11/15/2023"))
        )
        .unwrap(),
        [1, 2]
    );
    let after_instant = condition("Last Modified Date", "After", "2023-11-15T22:13:19Z");
    assert_eq!(ids(&state, group(after_instant)).unwrap(), [2, 3]);
    let between = json!({"parameter": "Create Date", "operator": "Between",
        "value": "11/15/2023", "secondaryValue": "11/16/2023"});
    assert_eq!(ids(&state, group(between)).unwrap(), [2, 3]);
}

#[test]
fn text_operators_and_lists() {
    // Goal: Contains / IsAnyOf / IsNot work case-insensitively; Email Address reaches the contact.
    let state = state_with_gifts();
    let group = |c| json!({"groups": [{"conditions": [c]}]});
    assert_eq!(
        ids(
            &state,
            group(condition("Transaction Source", "Contains", "PAY"))
        )
        .unwrap(),
        [3]
    );
    let any = json!({"parameter": "Transaction Id", "operator": "IsAnyOf", "values": ["t0", "t2"]});
    assert_eq!(ids(&state, group(any)).unwrap(), [1, 3]);
    assert_eq!(
        ids(
            &state,
            group(condition("Transaction Source", "IsNot", "Stripe"))
        )
        .unwrap(),
        [3]
    );
    let email = condition("Email Address", "Is", "Ann@Example.org");
    assert_eq!(ids(&state, group(email)).unwrap(), [1, 2, 3]);
    assert_eq!(
        ids(&state, group(condition("Contact Id", "Is", "1"))).unwrap(),
        [1, 2, 3]
    );
}

#[test]
fn sorting_and_errors() {
    // Goal: sortBy/descending order results; unknown names and bad values are 400 messages.
    let state = state_with_gifts();
    assert_eq!(
        ids(&state, json!({"sortBy": "Amount", "descending": true})).unwrap(),
        [3, 2, 1]
    );
    let unknown = json!({"groups": [{"conditions": [condition("Shoe Size", "Is", "9")]}]});
    assert!(ids(&state, unknown).unwrap_err().contains("Shoe Size"));
    let bad_date = json!({"groups": [{"conditions": [condition("Create Date", "After", "soon")]}]});
    assert!(ids(&state, bad_date).unwrap_err().contains("soon"));
    let bad_op = json!({"groups": [{"conditions": [condition("Amount", "Resembles", "1")]}]});
    assert!(ids(&state, bad_op).unwrap_err().contains("Resembles"));
}

#[test]
fn day_granularity_truncates_date_times_to_their_day() {
    // Goal: under query_date_granularity "day", `OnOrAfter <date-time>` matches the whole
    // day of that date-time (and `After` starts the next day); "instant" compares instants.
    let mut state = state_with_gifts();
    let group = |c| json!({"groups": [{"conditions": [c]}]});
    // Gift 2 was created at T0 + 1 day 22:13:20Z; 23:00 that day is later than it.
    let late_that_day = "2023-11-15T23:00:00Z";
    let on_or_after = || condition("Create Date", "OnOrAfter", late_that_day);
    assert_eq!(ids(&state, group(on_or_after())).unwrap(), [3]);
    state.switches.query_date_granularity = crate::virtuous::DateGranularity::Day;
    assert_eq!(ids(&state, group(on_or_after())).unwrap(), [2, 3]);
    let after = condition("Last Modified Date", "After", "2023-11-15T00:00:01Z");
    assert_eq!(ids(&state, group(after)).unwrap(), [3]);
    let any = json!({"parameter": "Create Date", "operator": "IsAnyOf",
        "values": ["2023-11-14T01:00:00Z"]});
    assert_eq!(ids(&state, group(any)).unwrap(), [1]);
    let query: QueryBody = serde_json::from_value(group(on_or_after())).unwrap();
    assert!(query.has_date_condition(RecordKind::Gift));
    let query: QueryBody = serde_json::from_value(group(condition("Amount", "Is", "10"))).unwrap();
    assert!(!query.has_date_condition(RecordKind::Gift));
}

#[test]
fn ids_with_is_any_of_and_modified_order() {
    // Goal: `Gift Id` / `Id` / `Contact Id` with IsAnyOf select by id on gift and contact
    // queries; `sortBy: "Last Modified Date"` with `descending: false` orders by modified time.
    let mut state = state_with_gifts();
    let group = |c| json!({"groups": [{"conditions": [c]}]});
    for parameter in ["Gift Id", "Id"] {
        let any = json!({"parameter": parameter, "operator": "IsAnyOf", "values": [3, "1"]});
        assert_eq!(ids(&state, group(any)).unwrap(), [1, 3], "{parameter}");
    }
    state
        .contacts
        .insert(Record::new(2, T0, serde_json::Map::new()));
    let any = json!({"parameter": "Contact Id", "operator": "IsAnyOf", "values": [2]});
    let query: QueryBody = serde_json::from_value(group(any)).unwrap();
    let contacts: Vec<u64> = run_query(RecordKind::Contact, &query, &state)
        .unwrap()
        .iter()
        .map(|record| record.id)
        .collect();
    assert_eq!(contacts, [2]);

    state.gifts.update(1, |gift| gift.touch(T0 + 5 * DAY_MS));
    let ascending = json!({"sortBy": "Last Modified Date", "descending": false});
    assert_eq!(ids(&state, ascending).unwrap(), [2, 3, 1]);
    let descending = json!({"sortBy": "Last Modified Date", "descending": true});
    assert_eq!(ids(&state, descending).unwrap(), [1, 3, 2]);
}
