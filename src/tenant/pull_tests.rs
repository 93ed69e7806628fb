//! The `pull` block of the tenant document: defaults, validation naming each field,
//! sealed destination secrets.

use super::*;
use serde_json::json;

const WEBHOOK_SECRET: &str = "partner-shared-secret-1234";
const DSN: &str = "host=127.0.0.1 port=5432 user=bi password=pw-123 dbname=warehouse";

fn with_pull(pull: Value) -> Value {
    json!({"id": "hope", "name": "Hope", "virtuous": {"api_key": "vk"}, "pull": pull})
}

/// The field a refused document names (panics when it is accepted).
pub(super) fn field_of(body: &Value) -> String {
    match normalise(body) {
        Err(TenantDocError::InvalidField { field, .. }) => field,
        Err(other) => panic!("{body}: expected invalid_field, got {other:?}"),
        Ok(_) => panic!("{body}: accepted"),
    }
}

#[test]
fn pull_block_gets_its_documented_defaults() {
    // Goal: `pull: {}` means gift and contact, an hourly backstop poll, own writes left out,
    // 7 days kept, no destinations; each destination kind gets its defaults.
    let (doc, full) = normalise(&with_pull(json!({}))).unwrap();
    let pull = doc.pull.as_ref().unwrap();
    assert_eq!(pull.events, ["gift", "contact"]);
    assert_eq!(pull.poll_interval_s, 3_600);
    assert!(!pull.include_own);
    assert_eq!(pull.retention_days, 7);
    assert_eq!(full["pull"]["destinations"], json!({}));

    let body = with_pull(json!({"destinations": {
        "partner_app": {"kind": "webhook", "url": "https://partner.example/hooks?t=1", "secret": WEBHOOK_SECRET},
        "warehouse": {"kind": "postgres", "dsn": DSN},
        "bi-files": {"kind": "ndjson", "dir": "/var/lib/steward/out"},
    }}));
    let (_doc, full) = normalise(&body).unwrap();
    let destinations = &full["pull"]["destinations"];
    assert_eq!(destinations["partner_app"]["kind"], "webhook");
    assert_eq!(destinations["partner_app"]["max_per_s"], 10);
    assert_eq!(destinations["partner_app"]["timeout_s"], 10);
    assert_eq!(destinations["warehouse"]["kind"], "postgres");
    assert_eq!(destinations["warehouse"]["schema"], "steward");
    assert_eq!(destinations["warehouse"]["batch_max"], 500);
    assert_eq!(destinations["bi-files"]["kind"], "ndjson");
    assert_eq!(destinations["bi-files"]["rotate_bytes"], 64 * 1024 * 1024);
    assert_eq!(destinations["bi-files"]["rotate_s"], 60);
    // The normalised document reads back to the same document (stored form round-trips).
    let (_again, full_again) = normalise(&full).unwrap();
    assert_eq!(full_again, full);
}

#[test]
fn bad_pull_settings_are_refused_naming_the_field() {
    // Goal: every rule of the pull block refuses with the field it concerns.
    let webhook = |extra: Value| {
        let mut destination = json!({"kind": "webhook", "url": "https://partner.example/in", "secret": WEBHOOK_SECRET});
        destination
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        with_pull(json!({"destinations": {"partner": destination}}))
    };
    let cases = [
        (
            with_pull(json!({"events": ["gift", "donation"]})),
            "pull.events",
        ),
        (with_pull(json!({"events": []})), "pull.events"),
        (
            with_pull(json!({"events": ["gift", "gift"]})),
            "pull.events",
        ),
        (
            with_pull(json!({"poll_interval_s": 59})),
            "pull.poll_interval_s",
        ),
        (
            with_pull(json!({"retention_days": 0})),
            "pull.retention_days",
        ),
        (with_pull(json!({"colour": 1})), "pull.colour"),
        (
            with_pull(json!({"destinations": {"Bad Name": {"kind": "ndjson", "dir": "/x"}}})),
            "pull.destinations.Bad Name",
        ),
        (
            webhook(json!({"url": "ftp://partner.example/"})),
            "pull.destinations.partner.url",
        ),
        (
            webhook(json!({"url": "https://u:p@partner.example/"})),
            "pull.destinations.partner.url",
        ),
        (
            webhook(json!({"secret": "short"})),
            "pull.destinations.partner.secret",
        ),
        (
            webhook(json!({"secret": "whsec_!!notbase64"})),
            "pull.destinations.partner.secret",
        ),
        (
            webhook(json!({"secret": null})),
            "pull.destinations.partner.secret",
        ),
        (
            webhook(json!({"max_per_s": 0})),
            "pull.destinations.partner.max_per_s",
        ),
        (
            webhook(json!({"max_per_s": 1001})),
            "pull.destinations.partner.max_per_s",
        ),
        (
            webhook(json!({"timeout_s": 0})),
            "pull.destinations.partner.timeout_s",
        ),
        (
            with_pull(json!({"destinations": {"w": {"kind": "postgres"}}})),
            "pull.destinations.w.dsn",
        ),
        (
            with_pull(
                json!({"destinations": {"w": {"kind": "postgres", "dsn": "not a dsn at all"}}}),
            ),
            "pull.destinations.w.dsn",
        ),
        (
            with_pull(
                json!({"destinations": {"w": {"kind": "postgres", "dsn": "host=db user=u sslmode=require"}}}),
            ),
            "pull.destinations.w.dsn",
        ),
        (
            with_pull(
                json!({"destinations": {"w": {"kind": "postgres", "dsn": DSN, "schema": "Bad-Schema"}}}),
            ),
            "pull.destinations.w.schema",
        ),
        (
            with_pull(
                json!({"destinations": {"w": {"kind": "postgres", "dsn": DSN, "batch_max": 0}}}),
            ),
            "pull.destinations.w.batch_max",
        ),
        (
            with_pull(json!({"destinations": {"f": {"kind": "ndjson", "dir": "relative/out"}}})),
            "pull.destinations.f.dir",
        ),
        (
            with_pull(
                json!({"destinations": {"f": {"kind": "ndjson", "dir": "/out", "rotate_bytes": 10}}}),
            ),
            "pull.destinations.f.rotate_bytes",
        ),
        (
            with_pull(
                json!({"destinations": {"f": {"kind": "ndjson", "dir": "/out", "rotate_s": 0}}}),
            ),
            "pull.destinations.f.rotate_s",
        ),
    ];
    for (body, field) in cases {
        assert_eq!(field_of(&body), field, "{body}");
    }
    // Unknown kinds and unknown fields of a destination are refused too, within the block.
    for destination in [
        json!({"kind": "kafka", "topic": "x"}),
        json!({"kind": "ndjson", "dir": "/out", "compress": true}),
        json!({"dir": "/out"}),
    ] {
        let field = field_of(&with_pull(json!({"destinations": {"f": destination}})));
        assert!(field.starts_with("pull.destinations"), "{field}");
    }
    // 0 turns the backstop poll off.
    assert!(normalise(&with_pull(json!({"poll_interval_s": 0}))).is_ok());
}

#[test]
fn destination_secrets_are_sealed_and_redacted() {
    // Goal: a webhook's secret and a Postgres DSN leave the stored document like every
    // secret and show only as the redaction marker; a DSN error never repeats the DSN.
    let body = with_pull(json!({"destinations": {
        "partner": {"kind": "webhook", "url": "https://partner.example/in", "secret": WEBHOOK_SECRET},
        "warehouse": {"kind": "postgres", "dsn": DSN},
    }}));
    let (_doc, mut full) = normalise(&body).unwrap();
    let secrets = split_secrets(&mut full);
    let text = full.to_string();
    assert!(
        !text.contains(WEBHOOK_SECRET) && !text.contains("pw-123"),
        "{text}"
    );
    let pointers: Vec<String> = secrets.iter().map(|(p, _)| p.clone()).collect();
    assert!(pointers.contains(&"/pull/destinations/partner/secret".to_string()));
    assert!(pointers.contains(&"/pull/destinations/warehouse/dsn".to_string()));
    let shown = redacted(&full, &pointers);
    assert_eq!(shown["pull"]["destinations"]["partner"]["secret"], REDACTED);
    assert_eq!(shown["pull"]["destinations"]["warehouse"]["dsn"], REDACTED);
    join_secrets(&mut full, &secrets);
    assert_eq!(full["pull"]["destinations"]["warehouse"]["dsn"], DSN);

    let bad_dsn = "postgres://bi:pw-secret-9@[::1/warehouse";
    let body = with_pull(json!({"destinations": {"w": {"kind": "postgres", "dsn": bad_dsn}}}));
    let message = normalise(&body).err().unwrap().to_string();
    assert!(!message.contains("pw-secret-9"), "{message}");
}
