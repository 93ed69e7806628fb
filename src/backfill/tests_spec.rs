//! Spec tests: every refusal names its field path.

use serde_json::{json, Value};

use super::test_support::{doc, spec};
use super::{validate_spec, SpecError, STRIPE_EXPORT_PRESET};
use crate::tenant::TenantDoc;

fn gift_mapping() -> Value {
    json!({"fields": {"amount": "Amount", "transactionId": "Id", "giftDate": "Date",
        "contact.email": "Email"}})
}

/// The field path of the refusal of (source, format, mapping, label).
fn refused(source: &str, format: &str, mapping: Value, label: &str) -> String {
    refused_by(&doc(), source, format, mapping, label)
}

fn refused_by(doc: &TenantDoc, source: &str, format: &str, mapping: Value, label: &str) -> String {
    let error: SpecError = validate_spec(doc, &spec(source, format, mapping, label)).unwrap_err();
    assert!(!error.message.is_empty());
    error.path
}

#[test]
fn good_specs_pass() {
    // Goal: the preset (as a JSON string or the bare name) and mapping objects of both kinds
    // and formats are accepted.
    let tenant = doc();
    let ok = |source: &str, format: &str, mapping: Value| {
        validate_spec(&tenant, &spec(source, format, mapping, "2019 donations")).unwrap()
    };
    ok("stripe", "csv", json!(STRIPE_EXPORT_PRESET));
    ok("stripe", "csv", gift_mapping());
    ok("auction-co", "csv", gift_mapping());
    ok(
        "auction-co",
        "ndjson",
        json!({"kind": "gift", "amount_unit": "minor",
            "fields": {"amount": "/amount", "transactionId": "/id", "giftDate": "/at",
                "contact.firstName": "/first", "contact.lastName": "/last"},
            "filters": [{"field": "/status", "in": ["paid", 1, true]},
                        {"field": "/test", "not_in": [true]}]}),
    );
    ok(
        "auction-co",
        "csv",
        json!({"kind": "contact", "fields": {"referenceId": "Donor", "email": "Email"}}),
    );
    let bare = steward_actors::backfill::JobSpec {
        source: "stripe".into(),
        format: "csv".into(),
        mapping_json: STRIPE_EXPORT_PRESET.into(),
        label: "x".into(),
        listing: None,
    };
    validate_spec(&tenant, &bare).unwrap();
}

#[test]
fn the_label_format_and_source_are_checked() {
    // Goal: an empty or over-long label, an unknown format or source are refused by name.
    assert_eq!(refused("stripe", "csv", gift_mapping(), "  "), "label");
    assert_eq!(
        refused("stripe", "csv", gift_mapping(), &"x".repeat(101)),
        "label"
    );
    validate_spec(
        &doc(),
        &spec("stripe", "csv", gift_mapping(), &"é".repeat(100)),
    )
    .unwrap();
    assert_eq!(refused("stripe", "xlsx", gift_mapping(), "l"), "format");
    assert_eq!(refused("paypal", "csv", gift_mapping(), "l"), "source");
    let mut without_stripe = doc();
    without_stripe.sources.stripe = None;
    assert_eq!(
        refused_by(&without_stripe, "stripe", "csv", gift_mapping(), "l"),
        "source"
    );
}

#[test]
fn the_preset_reads_stripe_csv_only() {
    // Goal: the preset needs source `stripe` and format `csv`; unknown presets are refused.
    let preset = json!(STRIPE_EXPORT_PRESET);
    assert_eq!(refused("auction-co", "csv", preset.clone(), "l"), "source");
    assert_eq!(refused("stripe", "ndjson", preset, "l"), "format");
    assert_eq!(
        refused("stripe", "csv", json!("paypal_export"), "l"),
        "mapping"
    );
    assert_eq!(refused("stripe", "csv", json!([1]), "l"), "mapping");
}

#[test]
fn mapping_objects_name_the_broken_field() {
    // Goal: kinds, units, required fields, pointers and filters are each refused by path.
    let with = |change: Value| {
        let mut mapping = gift_mapping();
        for (key, value) in change.as_object().unwrap() {
            mapping[key] = value.clone();
        }
        mapping
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        ("csv", with(json!({"kind": "pledge"})), "mapping.kind"),
        (
            "csv",
            with(json!({"amount_unit": "cents"})),
            "mapping.amount_unit",
        ),
        ("csv", with(json!({"extra": 1})), "mapping.extra"),
        ("csv", json!({"kind": "gift"}), "mapping.fields"),
        (
            "csv",
            json!({"fields": {"transactionId": "Id", "giftDate": "D", "contact.email": "E"}}),
            "mapping.fields.amount",
        ),
        (
            "csv",
            json!({"fields": {"amount": "A", "giftDate": "D", "contact.email": "E"}}),
            "mapping.fields.transactionId",
        ),
        (
            "csv",
            json!({"fields": {"amount": "A", "transactionId": "Id", "contact.email": "E"}}),
            "mapping.fields.giftDate",
        ),
        (
            "csv",
            json!({"fields": {"amount": "A", "transactionId": "Id", "giftDate": "D", "contact.firstName": "F"}}),
            "mapping.fields.contact",
        ),
        (
            "csv",
            json!({"fields": {"amount": "A", "transactionId": "Id", "giftDate": "D", "contact.email": "E", "transactionSource": "S"}}),
            "mapping.fields.transactionSource",
        ),
        (
            "csv",
            json!({"kind": "contact", "fields": {"email": "E"}}),
            "mapping.fields.referenceId",
        ),
        (
            "csv",
            json!({"kind": "contact", "fields": {"referenceId": "R", "referenceSource": "S"}}),
            "mapping.fields.referenceSource",
        ),
        (
            "csv",
            with(
                json!({"fields": {"amount": "", "transactionId": "Id", "giftDate": "D", "contact.email": "E"}}),
            ),
            "mapping.fields.amount",
        ),
        (
            "csv",
            with(
                json!({"fields": {"amount": 3, "transactionId": "Id", "giftDate": "D", "contact.email": "E"}}),
            ),
            "mapping.fields.amount",
        ),
        (
            "ndjson",
            with(
                json!({"fields": {"amount": "amount", "transactionId": "/id", "giftDate": "/d", "contact.email": "/e"}}),
            ),
            "mapping.fields.amount",
        ),
        (
            "ndjson",
            with(
                json!({"fields": {"amount": "/a~2", "transactionId": "/id", "giftDate": "/d", "contact.email": "/e"}}),
            ),
            "mapping.fields.amount",
        ),
        (
            "csv",
            with(json!({"filters": {"field": "Status"}})),
            "mapping.filters",
        ),
        (
            "csv",
            with(json!({"filters": [{"in": ["paid"]}]})),
            "mapping.filters[0].field",
        ),
        (
            "csv",
            with(json!({"filters": [{"field": "Status"}]})),
            "mapping.filters[0]",
        ),
        (
            "csv",
            with(json!({"filters": [{"field": "S", "in": ["a"], "not_in": ["b"]}]})),
            "mapping.filters[0]",
        ),
        (
            "csv",
            with(json!({"filters": [{"field": "S", "in": "paid"}]})),
            "mapping.filters[0].in",
        ),
        (
            "csv",
            with(
                json!({"filters": [{"field": "S", "in": ["ok"]}, {"field": "S", "not_in": [{"a": 1}]}]}),
            ),
            "mapping.filters[1].not_in",
        ),
        (
            "csv",
            with(json!({"filters": [{"field": "S", "in": ["ok"], "or": 1}]})),
            "mapping.filters[0].or",
        ),
        (
            "ndjson",
            json!({"fields": {"amount": "/a", "transactionId": "/id", "giftDate": "/d", "contact.email": "/e"},
            "filters": [{"field": "status", "in": ["paid"]}]}),
            "mapping.filters[0].field",
        ),
    ];
    for (format, mapping, path) in cases {
        assert_eq!(
            refused("auction-co", format, mapping.clone(), "l"),
            path,
            "{mapping}"
        );
    }
}
