//! The `two_way` block of the tenant document: defaults, validation naming each field,
//! the sealed partner API secret.

use super::pull_tests::field_of;
use super::*;
use serde_json::json;
use steward_actors::two_way::{Mode, PairKind, Rule};

const AUTH: &str = "Bearer partner-token-1234";

fn with_two_way(two_way: Value) -> Value {
    json!({"id": "hope", "name": "Hope", "virtuous": {"api_key": "vk"},
        "sources": {
            "mailchimp": {"api_key": "0123abcd-us21", "list_id": "list1"},
            "platforms": {"gala": {"secret": "s", "transaction_source": "GalaCo"}}},
        "two_way": two_way})
}

fn gala_api() -> Value {
    json!({"url": "http://127.0.0.1:9/partners/p1", "auth_value": AUTH})
}

#[test]
fn pairs_get_their_documented_defaults() {
    // Goal: a pair with nothing set observes, with a 120 s echo window and no rules of its
    // own; a platform pair's API gets the Authorization header by default; the stored form
    // round-trips.
    let body = with_two_way(json!({"mailchimp": {},
        "platform:gala": {"mode": "on", "fields": {"email": "dont_sync", "tags": "virtuous_wins"},
                          "api": gala_api()}}));
    let (doc, full) = normalise(&body).unwrap();
    let pairs = doc.two_way.as_ref().unwrap();
    let mailchimp = &pairs["mailchimp"];
    assert_eq!(mailchimp.mode, Mode::Observe);
    assert_eq!(mailchimp.echo_window_s, 120);
    assert!(mailchimp.fields.is_empty());
    assert!(mailchimp.api.is_none());
    let gala = &pairs["platform:gala"];
    assert_eq!(gala.mode, Mode::On);
    assert_eq!(gala.fields["email"], Rule::DontSync);
    assert_eq!(gala.fields["tags"], Rule::VirtuousWins);
    assert_eq!(
        full["two_way"]["platform:gala"]["api"]["auth_header"],
        "Authorization"
    );
    assert_eq!(full["two_way"]["mailchimp"]["mode"], "observe");
    let (_again, full_again) = normalise(&full).unwrap();
    assert_eq!(full_again, full);
    assert_eq!(pair_kind("mailchimp"), Some(PairKind::Mailchimp));
    assert_eq!(
        pair_kind("platform:gala"),
        Some(PairKind::Platform("gala".into()))
    );
    assert_eq!(pair_kind("platform:"), None);
    assert_eq!(pair_kind("hubspot"), None);
}

#[test]
fn bad_two_way_settings_are_refused_naming_the_field() {
    // Goal: every rule of the block refuses with the path it concerns: unknown pairs,
    // keys, fields, rules and modes, the echo window's range, the sources a pair needs and
    // the platform's API.
    let platform = |api: Value| with_two_way(json!({"platform:gala": {"api": api}}));
    let cases = [
        (with_two_way(json!({"hubspot": {}})), "two_way.hubspot"),
        (with_two_way(json!({"platform:": {}})), "two_way.platform:"),
        (
            with_two_way(json!({"platform:nope": {"api": gala_api()}})),
            "two_way.platform:nope",
        ),
        (
            with_two_way(json!({"mailchimp": {"mode": "always"}})),
            "two_way.mailchimp.mode",
        ),
        (
            with_two_way(json!({"mailchimp": {"echo_window_s": 0}})),
            "two_way.mailchimp.echo_window_s",
        ),
        (
            with_two_way(json!({"mailchimp": {"echo_window_s": 86_401}})),
            "two_way.mailchimp.echo_window_s",
        ),
        (
            with_two_way(json!({"mailchimp": {"fields": {"phone": "partner_wins"}}})),
            "two_way.mailchimp.fields.phone",
        ),
        (
            with_two_way(json!({"mailchimp": {"fields": {"email": "loudest_wins"}}})),
            "two_way.mailchimp.fields.email",
        ),
        (
            with_two_way(json!({"mailchimp": {"colour": "red"}})),
            "two_way.mailchimp.colour",
        ),
        (
            with_two_way(json!({"mailchimp": {"api": gala_api()}})),
            "two_way.mailchimp.api",
        ),
        (
            with_two_way(json!({"platform:gala": {}})),
            "two_way.platform:gala.api",
        ),
        (
            platform(json!({"url": "ftp://gala.example/api", "auth_value": AUTH})),
            "two_way.platform:gala.api.url",
        ),
        (
            platform(json!({"url": "https://u:p@gala.example/api", "auth_value": AUTH})),
            "two_way.platform:gala.api.url",
        ),
        (
            platform(json!({"url": "embedded:partners/p1", "auth_value": AUTH})),
            "two_way.platform:gala.api.url",
        ),
        (
            platform(json!({"url": "https://gala.example/api"})),
            "two_way.platform:gala.api.auth_value",
        ),
        (
            platform(json!({"url": "https://gala.example/api", "auth_value": "Bearer x\ny"})),
            "two_way.platform:gala.api.auth_value",
        ),
        (
            platform(
                json!({"url": "https://gala.example/api", "auth_header": "Auth orization", "auth_value": AUTH}),
            ),
            "two_way.platform:gala.api.auth_header",
        ),
        (
            platform(json!({"url": "https://gala.example/api", "auth_value": AUTH, "token": 1})),
            "two_way.platform:gala.api.token",
        ),
    ];
    for (body, field) in cases {
        assert_eq!(field_of(&body), field, "{body}");
    }
    // The Mailchimp pair writes with the source's key and audience: both are needed.
    let mut without_key = with_two_way(json!({"mailchimp": {}}));
    without_key["sources"]["mailchimp"] = json!({"url_key": "k"});
    assert_eq!(field_of(&without_key), "two_way.mailchimp");
    let mut without_source = with_two_way(json!({"mailchimp": {}}));
    without_source["sources"]
        .as_object_mut()
        .unwrap()
        .remove("mailchimp");
    assert_eq!(field_of(&without_source), "two_way.mailchimp");
    // A bad header value is named, never repeated.
    let message = normalise(&platform(
        json!({"url": "https://gala.example/api", "auth_value": "Bearer s3cr3t\n"}),
    ))
    .err()
    .unwrap()
    .to_string();
    assert!(!message.contains("s3cr3t"), "{message}");
    // Embedded forms name the embedded sandbox.
    for url in ["embedded", "embedded:/partners/p1"] {
        let body = platform(json!({"url": url, "auth_value": AUTH}));
        assert!(normalise(&body).is_ok(), "{url}");
    }
}

#[test]
fn the_partner_api_secret_is_sealed_and_redacted() {
    // Goal: `two_way.{pair}.api.auth_value` leaves the stored document like every secret,
    // shows only as the redaction marker, and comes back with join_secrets.
    let body = with_two_way(json!({"platform:gala": {"api": gala_api()}}));
    let (_doc, mut full) = normalise(&body).unwrap();
    let secrets = split_secrets(&mut full);
    assert!(!full.to_string().contains(AUTH), "{full}");
    let pointers: Vec<String> = secrets.iter().map(|(p, _)| p.clone()).collect();
    assert!(pointers.contains(&"/two_way/platform:gala/api/auth_value".to_string()));
    let shown = redacted(&full, &pointers);
    assert_eq!(
        shown["two_way"]["platform:gala"]["api"]["auth_value"],
        REDACTED
    );
    join_secrets(&mut full, &secrets);
    assert_eq!(full["two_way"]["platform:gala"]["api"]["auth_value"], AUTH);
}

#[test]
fn two_pairs_sharing_a_reference_source_are_refused() {
    // Goal: each pair recognises its own Virtuous writes by its reference source, so two
    // pairs may not share one (case-insensitively); distinct ones are fine.
    let mut body = with_two_way(json!({"mailchimp": {}, "platform:gala": {"api": gala_api()}}));
    body["sources"]["mailchimp"]["reference_source"] = json!("galaco");
    let Err(error) = normalise(&body) else {
        panic!("two pairs with one reference source were accepted")
    };
    let text = error.to_string();
    assert!(text.contains("shares its reference source"), "{text}");
    body["sources"]["mailchimp"]["reference_source"] = json!("Mailchimp");
    assert!(normalise(&body).is_ok());
}
