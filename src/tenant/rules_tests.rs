//! The rules added by issue 11 (docs/operations.md "Tenant rules"): refused on create and
//! patch, tolerated (with alert `config_invalid`) in a document stored before them.

use super::*;
use serde_json::json;

fn with_virtuous(virtuous: Value) -> Value {
    json!({"id": "a", "name": "A", "virtuous": virtuous})
}

fn with_sources(sources: Value) -> Value {
    json!({"id": "a", "name": "A", "virtuous": {"api_key": "k"}, "sources": sources})
}

/// The field a body is refused for (panics when it is accepted).
fn refused_field(body: &Value) -> String {
    match normalise(body) {
        Err(TenantDocError::InvalidField { field, .. }) => field,
        Err(other) => panic!("{body}: expected invalid_field, got {other}"),
        Ok(_) => panic!("{body}: accepted"),
    }
}

fn platform(extra: Value) -> Value {
    let mut platform = json!({"secret": "ps", "transaction_source": "AuctionCo"});
    platform
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    with_sources(json!({"platforms": {"auction-co": platform}}))
}

#[test]
fn a_timestamp_header_must_be_inside_the_signature() {
    // Goal: timestamp_header with signed_payload "body" is refused (a captured body replays with a fresh timestamp); inside the signed payload it is accepted.
    let outside = platform(json!({"timestamp_header": "X-Ts", "signed_payload": "body"}));
    assert_eq!(
        refused_field(&outside),
        "sources.platforms.auction-co.signed_payload"
    );
    let inside =
        platform(json!({"timestamp_header": "X-Ts", "signed_payload": "{timestamp}.{body}"}));
    assert!(normalise(&inside).is_ok());
    assert!(
        normalise(&platform(json!({}))).is_ok(),
        "no timestamp at all"
    );
}

#[test]
fn base_url_is_parsed_as_an_http_url_without_userinfo() {
    // Goal: every malformed base_url of the issue is refused naming virtuous.base_url; real URLs and "embedded" pass.
    let bad = [
        "http://",
        "https://",
        "http://[::1",
        "http://[::1]:65536",
        "https://api.example.org:99999",
        "https://api.example .org",
        "https://api.example.org/v1 x",
        " https://api.example.org",
        "https://api.example.org\n",
        "https://api.exa\nmple.org",
        "https://api.example.org\t",
        "https://user:pass@api.example.org",
        "https://user@api.example.org",
        "ftp://api.example.org",
        "api.example.org",
        "https://api.example.org/?key=1",
        "https://api.example.org/#x",
        "embedded ",
        "",
    ];
    for base_url in bad {
        let body = with_virtuous(json!({"api_key": "k", "base_url": base_url}));
        assert_eq!(refused_field(&body), "virtuous.base_url", "{base_url:?}");
    }
    for base_url in [
        "embedded",
        "https://api.virtuoussoftware.com",
        "http://127.0.0.1:8080",
        "http://[::1]:8080/prefix/",
        "https://api.example.org:65535",
    ] {
        let body = with_virtuous(json!({"api_key": "k", "base_url": base_url}));
        assert!(normalise(&body).is_ok(), "{base_url:?} refused");
    }
}

#[test]
fn userinfo_in_base_url_is_not_echoed_in_the_refusal() {
    // Goal: the refusal of a base_url with credentials does not repeat the password.
    let body = with_virtuous(json!({"api_key": "k", "base_url": "https://u:hunter2@h.example"}));
    let message = normalise(&body).err().unwrap().to_string();
    assert!(!message.contains("hunter2"), "{message}");
}

#[test]
fn an_api_key_with_control_characters_is_refused() {
    // Goal: a key that cannot be an HTTP header value is refused at once, not at the first call.
    for api_key in ["vk_1\n", "vk\r\n1", "vk\u{0}1", "vk\t1", "vk\u{7f}"] {
        let body = with_virtuous(json!({"api_key": api_key}));
        assert_eq!(refused_field(&body), "virtuous.api_key", "{api_key:?}");
    }
    assert!(normalise(&with_virtuous(json!({"api_key": "vk_live_1-2.3"}))).is_ok());
}

#[test]
fn a_stripe_signing_secret_starts_with_whsec() {
    // Goal: an API key (sk_, rk_, pk_) or anything else as the webhook signing secret is refused, and the message says which key is wanted.
    for (secret, field) in [
        ("sk_live_51Habc", "sources.stripe.signing_secret"),
        ("rk_live_51Habc", "sources.stripe.signing_secret"),
        ("pk_test_51Habc", "sources.stripe.signing_secret"),
        ("whsec", "sources.stripe.signing_secret"),
        ("secret", "sources.stripe.signing_secret"),
    ] {
        let body = with_sources(json!({"stripe": {"signing_secret": secret}}));
        assert_eq!(refused_field(&body), field, "{secret}");
        let message = normalise(&body).err().unwrap().to_string();
        assert!(message.contains("whsec_"), "{message}");
        let is_a_key = secret.len() > 8;
        assert!(
            !is_a_key || !message.contains(secret),
            "the key is echoed: {message}"
        );
    }
    let api_key = with_sources(json!({"stripe": {"signing_secret": "sk_live_51Habc"}}));
    let message = normalise(&api_key).err().unwrap().to_string();
    assert!(message.contains("API key"), "{message}");
    let previous = with_sources(
        json!({"stripe": {"signing_secret": "whsec_new", "previous_signing_secret": "sk_test_1"}}),
    );
    assert_eq!(
        refused_field(&previous),
        "sources.stripe.previous_signing_secret"
    );
    assert!(normalise(&with_sources(
        json!({"stripe": {"signing_secret": "whsec_abc"}})
    ))
    .is_ok());
}

#[test]
fn a_stored_document_that_breaks_only_new_rules_still_loads() {
    // Goal: a document stored before the new rules starts, with each broken rule named; one breaking an old rule does not load.
    let stored = json!({"id": "a", "name": "A",
        "virtuous": {"api_key": "k", "base_url": "https://user:pw@api.example.org"},
        "sources": {"stripe": {"signing_secret": "sk_live_1"},
                    "platforms": {"auction-co": {"secret": "ps", "transaction_source": "AuctionCo",
                                                 "timestamp_header": "X-Ts"}}}});
    let (doc, broken) = TenantDoc::from_stored_value(&stored).unwrap();
    assert_eq!(doc.id, "a");
    let fields: Vec<String> = broken
        .iter()
        .map(|error| match error {
            TenantDocError::InvalidField { field, .. } => field.clone(),
            other => panic!("{other}"),
        })
        .collect();
    assert_eq!(
        fields,
        [
            "virtuous.base_url",
            "sources.stripe.signing_secret",
            "sources.platforms.auction-co.signed_payload"
        ]
    );
    assert!(normalise(&stored).is_err(), "create and patch refuse it");
    let old_rule_broken = json!({"id": "a", "name": "", "virtuous": {"api_key": "k"}});
    assert!(TenantDoc::from_stored_value(&old_rule_broken).is_err());
    let (_, none) = TenantDoc::from_stored_value(&with_virtuous(json!({"api_key": "k"}))).unwrap();
    assert!(none.is_empty());
}

#[test]
fn a_null_in_a_patch_never_resets_a_setting_to_its_default() {
    // Goal: null on base_url (or any setting with a default) is refused naming it; null still removes optional settings and whole sources.
    let stored = json!({"id": "a", "name": "A",
        "virtuous": {"api_key": "k", "base_url": "https://crm.example.org", "webhook_secret": "w"},
        "sources": {"stripe": {"signing_secret": "whsec_1", "previous_signing_secret": "whsec_0"}}});
    let patched = |merge_patch: &Value| {
        let mut full = stored.clone();
        json_patch::merge(&mut full, merge_patch);
        let (_, full) = normalise(&full)?;
        refuse_null_resets(merge_patch, &full)
    };
    for (merge_patch, field) in [
        (json!({"virtuous": {"base_url": null}}), "virtuous.base_url"),
        (json!({"time_zone": null}), "time_zone"),
        (
            json!({"sources": {"stripe": {"transaction_source": null}}}),
            "sources.stripe.transaction_source",
        ),
    ] {
        match patched(&merge_patch) {
            Err(TenantDocError::InvalidField { field: got, .. }) => assert_eq!(got, field),
            other => panic!("{merge_patch}: expected invalid_field {field}, got {other:?}"),
        }
    }
    for allowed in [
        json!({"virtuous": {"webhook_secret": null}}),
        json!({"sources": {"stripe": {"previous_signing_secret": null}}}),
        json!({"sources": {"stripe": null}}),
        json!({"budget": null}),
    ] {
        assert!(patched(&allowed).is_ok(), "{allowed} refused");
    }
}
