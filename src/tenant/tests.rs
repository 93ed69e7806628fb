use super::*;
use serde_json::json;

fn minimal() -> Value {
    json!({"id": "hope-shelter", "name": "Hope Shelter", "virtuous": {"api_key": "vk_live_123"}})
}

#[test]
fn minimal_document_gets_design_defaults() {
    // Goal: only id, name and virtuous.api_key are required; the rest takes its documented default.
    let (_doc, full) = normalise(&minimal()).unwrap();
    assert_eq!(full["time_zone"], "UTC");
    assert_eq!(
        full["virtuous"]["base_url"],
        "https://api.virtuoussoftware.com"
    );
    assert_eq!(full["virtuous"]["signature_header"], "X-Virtuous-Signature");
    assert_eq!(full["virtuous"]["signature_encoding"], "base64");
}

#[test]
fn tenant_ids_are_validated() {
    // Goal: lowercase letters, digits and '-', at most 64 characters.
    assert!(validate_tenant_id("hope-shelter-2").is_ok());
    for bad in ["", "Hope", "a_b", "a b", "é", &"a".repeat(65), "../x"] {
        assert!(
            validate_tenant_id(bad).is_err(),
            "{bad:?} should be rejected"
        );
    }
    assert!(validate_tenant_id(&"a".repeat(64)).is_ok());
}

#[test]
fn invalid_fields_are_named() {
    // Goal: each bad field is reported by its path.
    let cases = [
        (json!({"id": "a", "virtuous": {"api_key": "k"}}), "name"),
        (
            json!({"id": "a", "name": "A", "virtuous": {}}),
            "virtuous.api_key",
        ),
        (
            json!({"id": "a", "name": "A", "time_zone": "Mars/Base", "virtuous": {"api_key": "k"}}),
            "time_zone",
        ),
        (
            json!({"id": "a", "name": "A", "virtuous": {"api_key": "k"}, "colour": "red"}),
            "colour",
        ),
        (
            json!({"id": "a", "name": "A", "virtuous": {"api_key": "k", "signature_encoding": "rot13"}}),
            "virtuous.signature_encoding",
        ),
        (
            json!({"id": "a", "name": "A", "virtuous": {"api_key": "k"}, "budget": {"reserve_pct": 95}}),
            "budget.reserve_pct",
        ),
        (
            json!({"id": "a", "name": "A", "virtuous": {"api_key": "k"}, "budget": {"reserve_pct": 300}}),
            "budget.reserve_pct",
        ),
        (
            json!({"id": "a", "name": "A", "virtuous": {"api_key": "k", "colour": 1}}),
            "virtuous.colour",
        ),
        (
            json!({"id": "a", "name": "A", "virtuous": {"api_key": "k"}, "sources": {"stripe": {"tolerance_s": 1}}}),
            "sources.stripe.signing_secret",
        ),
        (
            json!({"id": "a", "name": "A", "virtuous": {"api_key": "k"}, "sources": {"stripe": {"signing_secret": "whsec_x", "subscription_hold_s": 90_000}}}),
            "sources.stripe.subscription_hold_s",
        ),
    ];
    for (body, field) in cases {
        match normalise(&body) {
            Err(TenantDocError::InvalidField { field: got, .. }) => {
                assert_eq!(got, field, "{body}")
            }
            other => panic!("{body}: expected invalid {field}, got {other:?}"),
        }
    }
}

#[test]
fn subscription_hold_is_a_tenant_setting_with_the_documented_default() {
    // Goal: sources.stripe.subscription_hold_s reaches the Stripe mapping; absent → 120.
    use crate::sources::stripe::StripeMapping;
    let hold_of = |stripe: Value| {
        let body = json!({"id": "a", "name": "A", "virtuous": {"api_key": "k"}, "sources": {"stripe": stripe}});
        let (doc, _) = normalise(&body).unwrap();
        StripeMapping::from_settings(doc.sources.stripe.as_ref().unwrap()).subscription_hold_s
    };
    assert_eq!(hold_of(json!({"signing_secret": "whsec_x"})), 120);
    assert_eq!(
        hold_of(json!({"signing_secret": "whsec_x", "subscription_hold_s": 30})),
        30
    );
}

#[test]
fn redaction_marker_keeps_stored_secrets_on_patch_and_is_refused_on_create() {
    // Goal: "[redacted]" sent back means "keep"; it never becomes a secret's value.
    let stored = vec![("/virtuous/api_key".to_string(), "vk-real".to_string())];
    let mut doc =
        json!({"id": "a", "name": "A", "virtuous": {"api_key": REDACTED, "webhook_secret": null}});
    restore_redacted_secrets(&mut doc, &stored).unwrap();
    assert_eq!(doc["virtuous"]["api_key"], "vk-real");
    let mut unknown =
        json!({"id": "a", "name": "A", "virtuous": {"api_key": "k", "webhook_secret": REDACTED}});
    assert!(
        restore_redacted_secrets(&mut unknown, &stored).is_err(),
        "nothing stored to keep"
    );
    let create =
        json!({"id": "a", "name": "A", "virtuous": {"api_key": "k", "webhook_secret": REDACTED}});
    match reject_redacted_secrets(&create) {
        Err(TenantDocError::InvalidField { field, .. }) => {
            assert_eq!(field, "virtuous.webhook_secret")
        }
        other => panic!("expected invalid_field, got {other:?}"),
    }
}

#[test]
fn secrets_split_join_and_redact() {
    // Goal: every secret leaves the stored document and shows only as a redaction marker.
    let body = json!({"id": "a", "name": "A", "virtuous": {"api_key": "vk", "webhook_secret": "wh"},
        "sources": {"stripe": {"signing_secret": "whsec_1"},
                    "platforms": {"auction-co": {"secret": "ps", "transaction_source": "AuctionCo"}}}});
    let (_doc, mut full) = normalise(&body).unwrap();
    let secrets = split_secrets(&mut full);
    let text = full.to_string();
    for secret in ["vk", "wh", "whsec_1", "ps"] {
        assert!(
            !text.contains(&format!("\"{secret}\"")),
            "{secret} left in {text}"
        );
    }
    assert_eq!(secrets.len(), 4);
    let pointers: Vec<String> = secrets.iter().map(|(p, _)| p.clone()).collect();
    let shown = redacted(&full, &pointers);
    assert_eq!(shown["virtuous"]["api_key"], REDACTED);
    assert_eq!(
        shown["sources"]["stripe"]["previous_signing_secret"],
        Value::Null
    );
    join_secrets(&mut full, &secrets);
    assert_eq!(full["sources"]["platforms"]["auction-co"]["secret"], "ps");
}

#[test]
fn a_polled_platform_needs_no_secret_and_its_url_may_name_the_embedded_sandbox() {
    // Goal: a platform with `poll` and no `secret` is valid (polled only); without `poll`
    // the secret stays required; `poll.url` is an http(s) URL without a query, `embedded`
    // or `embedded:/path`, anything else is refused naming the field.
    let with_platform = |platform: Value| {
        let mut doc = minimal();
        doc["sources"] = json!({"platforms": {"gala-co": platform}});
        TenantDoc::from_value(&doc)
    };
    let polled =
        |url: &str| json!({"transaction_source": "GalaCo", "poll": {"url": url, "interval_s": 60}});
    for url in [
        "https://api.example.org/v1/changes",
        "embedded",
        "embedded:/feeds/gala/items",
    ] {
        let doc = with_platform(polled(url)).unwrap_or_else(|err| panic!("{url}: {err:?}"));
        assert!(doc.sources.platforms["gala-co"].secret.is_none());
    }
    for url in [
        "embedded:feeds",
        "embedded:/feeds/a b",
        "embedded:/x?y=1",
        "https://api.example.org/changes?all=1",
        "ftp://api.example.org/",
    ] {
        let err = with_platform(polled(url))
            .err()
            .unwrap_or_else(|| panic!("{url} accepted"));
        assert!(
            format!("{err:?}").contains("sources.platforms.gala-co.poll.url"),
            "{url}: {err:?}"
        );
    }
    let err = with_platform(json!({"transaction_source": "GalaCo"})).unwrap_err();
    assert!(
        format!("{err:?}").contains("sources.platforms.gala-co.secret"),
        "{err:?}"
    );
}

#[test]
fn reconciliation_daily_at_is_a_time_of_day() {
    // Goal: `reconciliation.daily_at` takes "HH:MM" or null; anything else, or another key
    // in the block, is refused naming the field.
    let with = |reconciliation: Value| {
        let mut doc = minimal();
        doc["reconciliation"] = reconciliation;
        doc
    };
    let (doc, full) = normalise(&with(json!({"daily_at": "02:30"}))).unwrap();
    assert_eq!(full["reconciliation"]["daily_at"], "02:30");
    assert_eq!(
        doc.reconciliation.unwrap().daily_at.as_deref(),
        Some("02:30")
    );
    assert!(normalise(&with(json!({"daily_at": null}))).is_ok());
    assert!(normalise(&minimal()).unwrap().1["reconciliation"].is_null());
    for (bad, field) in [
        (json!({"daily_at": "2:30"}), "reconciliation.daily_at"),
        (json!({"daily_at": "24:00"}), "reconciliation.daily_at"),
        (
            json!({"daily_at": "02:30", "days": 3}),
            "reconciliation.days",
        ),
    ] {
        match normalise(&with(bad.clone())) {
            Err(TenantDocError::InvalidField { field: named, .. }) => {
                assert_eq!(named, field, "{bad}")
            }
            other => panic!("{bad}: {:?}", other.map(|(_, full)| full)),
        }
    }
}

fn with_postgres_source(source: Value) -> Value {
    let mut doc = minimal();
    doc["sources"] = json!({"postgres": {"events-db": source}});
    doc
}

fn postgres_source() -> Value {
    json!({"dsn": "host=127.0.0.1 user=steward dbname=events", "mode": "logical",
           "transaction_source": "Events DB",
           "tables": {"public.gifts": {"primary_key": ["id"], "kind": "gift",
                                       "fields": {"amount": "/amount", "contact.email": "/email"}},
                      "public.people": {"primary_key": ["id"], "kind": "contact", "updated_at": "changed_at",
                                        "fields": {"referenceId": "/id"}}}})
}

#[test]
fn a_postgres_source_is_validated_field_by_field_and_its_dsn_is_a_secret() {
    // Goal: a valid source is taken with its defaults; each bad field is refused by its path
    // with the reason; the DSN leaves the stored document like every secret.
    let (doc, mut full) = normalise(&with_postgres_source(postgres_source())).unwrap();
    let source = &doc.sources.postgres["events-db"];
    assert_eq!(source.slot_name("events-db"), "steward_events_db");
    assert_eq!(source.publication_name("events-db"), "steward_events_db");
    assert_eq!(
        (source.batch, source.interval_ms(), source.create_slot),
        (500, 1_000, false)
    );
    let secrets = split_secrets(&mut full);
    assert_eq!(secrets.len(), 2, "the api key and the dsn");
    assert!(!full.to_string().contains("host=127.0.0.1"));

    let field = "sources.postgres.events-db";
    let cases: Vec<(Value, String, &str)> = vec![
        (
            json!({"mode": "wal2json"}),
            format!("{field}.mode"),
            "logical",
        ),
        (json!({"dsn": null}), format!("{field}.dsn"), "required"),
        (
            json!({"dsn": "sslmode=require host=x user=y"}),
            format!("{field}.dsn"),
            "TLS",
        ),
        (
            json!({"slot": "Bad-Slot"}),
            format!("{field}.slot"),
            "a-z0-9_",
        ),
        (json!({"batch": 0}), format!("{field}.batch"), "between"),
        (
            json!({"interval_ms": 5}),
            format!("{field}.interval_ms"),
            "between",
        ),
        (
            json!({"amount_unit": "cents"}),
            format!("{field}.amount_unit"),
            "major",
        ),
        (
            json!({"tables": {}}),
            format!("{field}.tables"),
            "at least one",
        ),
        (
            json!({"tables": {"gifts": {"primary_key": ["id"], "kind": "gift", "fields": {"amount": "/a"}}}}),
            format!("{field}.tables.gifts"),
            "schema.table",
        ),
        (
            json!({"tables": {"public.gifts": {"primary_key": [], "kind": "gift", "fields": {"amount": "/a"}}}}),
            format!("{field}.tables.public.gifts.primary_key"),
            "at least one",
        ),
        (
            json!({"tables": {"public.gifts": {"primary_key": ["Id;drop"], "kind": "gift", "fields": {"amount": "/a"}}}}),
            format!("{field}.tables.public.gifts.primary_key"),
            "plain column",
        ),
        (
            json!({"tables": {"public.gifts": {"primary_key": ["id"], "kind": "pledge", "fields": {"amount": "/a"}}}}),
            format!("{field}.tables.public.gifts.kind"),
            "gift",
        ),
        (
            json!({"tables": {"public.gifts": {"primary_key": ["id"], "kind": "gift", "fields": {"email": "/e"}}}}),
            format!("{field}.tables.public.gifts.fields"),
            "amount",
        ),
        (
            json!({"tables": {"public.gifts": {"primary_key": ["id"], "kind": "gift", "fields": {"amount": "amount"}}}}),
            format!("{field}.tables.public.gifts.fields.amount"),
            "JSON Pointer",
        ),
        (
            json!({"mode": "outbox", "tables": {"public.gifts": {"primary_key": ["id"], "kind": "gift", "fields": {"amount": "/a"}}}}),
            format!("{field}.tables.public.gifts.updated_at"),
            "outbox",
        ),
    ];
    for (patch, expected_field, reason) in cases {
        let mut source = postgres_source();
        for (key, value) in patch.as_object().unwrap() {
            source[key] = value.clone();
        }
        match normalise(&with_postgres_source(source)) {
            Err(TenantDocError::InvalidField { field, reason: why }) => {
                assert_eq!(field, expected_field, "{patch}: {why}");
                assert!(why.contains(reason), "{patch}: {why}");
            }
            other => panic!("{patch}: expected a refusal, got {:?}", other.map(|_| ())),
        }
    }
    let mut doc = minimal();
    doc["sources"] = json!({"platforms": {"events-db": {"secret": "s", "transaction_source": "X"}},
                            "postgres": {"events-db": postgres_source()}});
    assert!(
        normalise(&doc).is_err(),
        "a name two sources share is refused"
    );
}
