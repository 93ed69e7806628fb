use serde_json::json;

use super::member::{format_last_changed, parse_last_changed, parse_member};
use super::webhook::{parse_fired_at, parse_form, WebhookEvent};
use super::*;
use crate::sources::SourceError;

fn member_of(event: WebhookEvent) -> MemberVersion {
    match event {
        WebhookEvent::Member { version, .. } => version,
        other => panic!("expected a member event, got {other:?}"),
    }
}

const SUBSCRIBE: &str = "type=subscribe&fired_at=2025-11-26+20%3A46%3A40&data%5Bid%5D=a1b2c3d4e5\
    &data%5Blist_id%5D=list1&data%5Bemail%5D=ann%2B1%40example.org&data%5Bemail_type%5D=html\
    &data%5Bmerges%5D%5BEMAIL%5D=ann%2B1%40example.org&data%5Bmerges%5D%5BFNAME%5D=Ana+Mar%C3%ADa\
    &data%5Bmerges%5D%5BLNAME%5D=O%27Neil&data%5Bip_opt%5D=127.0.0.1";

#[test]
fn a_subscribe_form_becomes_a_subscribed_contact() {
    // Goal: bracketed, percent-encoded keys are read; the body carries referenceSource,
    // referenceId (unique_email_id), email, names, emailLists and the Subscribed status.
    let version = member_of(parse_form(SUBSCRIBE.as_bytes()).unwrap());
    assert_eq!(version.unique_email_id, "a1b2c3d4e5");
    assert_eq!(version.changed_at_s, 1_764_189_999 + 1);
    let command = version.command("Mailchimp");
    assert_eq!(
        command.body(),
        json!({"referenceSource": "Mailchimp", "referenceId": "a1b2c3d4e5",
               "email": "ann+1@example.org", "firstName": "Ana María", "lastName": "O'Neil",
               "emailLists": ["list1"],
               "customFields": {"Email Status": "subscribed", "Email Opt Out": "false"}})
    );
    assert_eq!(command.fact.source, "mailchimp");
    assert_eq!(command.fact.source_id, "a1b2c3d4e5");
    assert_eq!(command.fact.transaction_source, "Mailchimp");
    assert_eq!(
        command.fact.idempotency_key,
        "mailchimp:contact:a1b2c3d4e5@1764190000"
    );
}

#[test]
fn fired_at_and_last_changed_of_one_second_give_one_key() {
    // Goal: the webhook's UTC `fired_at` and the poll's ISO `last_changed` (any offset) name
    // the same second, so both paths share the idempotency key; another second does not.
    assert_eq!(parse_fired_at("2025-11-26 20:46:40"), Some(1_764_190_000));
    assert_eq!(
        parse_last_changed("2025-11-26T20:46:40+00:00"),
        Some(1_764_190_000)
    );
    assert_eq!(
        parse_last_changed("2025-11-26T15:46:40-05:00"),
        Some(1_764_190_000)
    );
    assert_eq!(
        format_last_changed(1_764_190_000),
        "2025-11-26T20:46:40+00:00"
    );
    let from_webhook = member_of(parse_form(SUBSCRIBE.as_bytes()).unwrap());
    let polled = json!({"id": "0f1e", "unique_email_id": "a1b2c3d4e5",
        "email_address": "ann+1@example.org", "status": "subscribed",
        "merge_fields": {"FNAME": "Ana María", "LNAME": "O'Neil"},
        "tags": [{"id": 1, "name": "donor"}, {"id": 2, "name": "gala 2025"}],
        "last_changed": "2025-11-26T15:46:40-05:00", "list_id": "list1"});
    let from_poll = parse_member(&polled, "list1").unwrap();
    assert_eq!(from_webhook.idempotency_key(), from_poll.idempotency_key());
    let next_second = json!({"unique_email_id": "a1b2c3d4e5", "email_address": "a@b.c",
        "last_changed": "2025-11-26T20:46:41+00:00"});
    assert_ne!(
        parse_member(&next_second, "list1")
            .unwrap()
            .idempotency_key(),
        from_webhook.idempotency_key()
    );
    // Poll only: tags as one semicolon-separated string.
    assert_eq!(from_poll.body("Mailchimp")["tags"], "donor;gala 2025");
    assert!(from_webhook.body("Mailchimp").get("tags").is_none());
}

#[test]
fn each_event_type_maps_to_its_email_status() {
    // Goal: unsubscribe (unsub) → Unsubscribed, unsubscribe (delete) → Deleted, cleaned →
    // Cleaned, profile/upemail → no status; upemail carries the new email, same record.
    let form = |extra: &str| {
        format!(
            "fired_at=2025-11-26+20%3A46%3A40&data%5Bid%5D=u1&data%5Blist_id%5D=l1\
             &data%5Bemail%5D=e%40x.org&{extra}"
        )
    };
    let status = |extra: &str| member_of(parse_form(form(extra).as_bytes()).unwrap()).status;
    assert_eq!(
        status("type=unsubscribe&data%5Baction%5D=unsub&data%5Breason%5D=manual"),
        Some(EmailStatus::Unsubscribed)
    );
    assert_eq!(
        status("type=unsubscribe&data%5Baction%5D=delete"),
        Some(EmailStatus::Deleted)
    );
    assert_eq!(
        status("type=cleaned&data%5Breason%5D=hard"),
        Some(EmailStatus::Cleaned)
    );
    assert_eq!(status("type=profile"), None);
    let moved = member_of(
        parse_form(
            form("type=upemail&data%5Bold_email%5D=e%40x.org&data%5Bnew_email%5D=new%40x.org")
                .as_bytes(),
        )
        .unwrap(),
    );
    assert_eq!(moved.email, "new@x.org");
    assert_eq!(moved.unique_email_id, "u1");
    assert_eq!(moved.status, None);
    let body = moved.body("MC");
    assert!(body.get("customFields").is_none(), "{body}");
    let unsubscribed =
        member_of(parse_form(form("type=unsubscribe&data%5Baction%5D=unsub").as_bytes()).unwrap());
    assert_eq!(
        unsubscribed.body("MC")["customFields"],
        json!({"Email Status": "unsubscribed", "Email Opt Out": "true"})
    );
}

#[test]
fn polled_statuses_follow_the_same_convention() {
    // Goal: member statuses map like the webhook types (archived → Deleted, pending and
    // transactional → NotSubscribed); an unknown status sends no status at all.
    assert_eq!(
        status_of_member("subscribed"),
        Some(EmailStatus::Subscribed)
    );
    assert_eq!(
        status_of_member("unsubscribed"),
        Some(EmailStatus::Unsubscribed)
    );
    assert_eq!(status_of_member("cleaned"), Some(EmailStatus::Cleaned));
    assert_eq!(status_of_member("archived"), Some(EmailStatus::Deleted));
    assert_eq!(
        status_of_member("pending"),
        Some(EmailStatus::NotSubscribed)
    );
    assert_eq!(
        status_of_member("transactional"),
        Some(EmailStatus::NotSubscribed)
    );
    assert_eq!(status_of_member("mystery"), None);
}

#[test]
fn campaign_and_unknown_types_are_ignored_and_bad_forms_refused() {
    // Goal: campaign / unknown types / a member event without an id are ignored (200);
    // a body without type, fired_at, list or email, or not UTF-8, is malformed (400).
    let ignored = |raw: &str| {
        matches!(
            parse_form(raw.as_bytes()).unwrap(),
            WebhookEvent::Ignored { .. }
        )
    };
    assert!(ignored(
        "type=campaign&fired_at=2025-11-26+20%3A46%3A40&data%5Bid%5D=c1"
    ));
    assert!(ignored("type=mystery&fired_at=2025-11-26+20%3A46%3A40"));
    assert!(ignored(
        "type=cleaned&fired_at=2025-11-26+20%3A46%3A40&data%5Bemail%5D=a%40b.c&data%5Blist_id%5D=l"
    ));
    let malformed = |raw: &[u8]| matches!(parse_form(raw), Err(SourceError::Malformed(_)));
    assert!(malformed(b"{\"type\": \"subscribe\"}"));
    assert!(malformed(b"type=subscribe"));
    assert!(malformed(b"type=subscribe&fired_at=yesterday"));
    assert!(malformed(
        b"type=subscribe&fired_at=2025-11-26+20%3A46%3A40&data%5Bid%5D=u&data%5Bemail%5D=a%40b.c"
    ));
    assert!(malformed(
        b"type=subscribe&fired_at=2025-11-26+20%3A46%3A40&data%5Bid%5D=u&data%5Blist_id%5D=l"
    ));
    assert!(malformed(b"type=subscribe&fired_at=\xff\xfe"));
}

#[test]
fn a_member_without_its_ids_is_a_rejected_item_not_a_guess() {
    // Goal: parse_member requires unique_email_id, email and a readable last_changed.
    assert!(parse_member(
        &json!({"email_address": "a@b.c",
        "last_changed": "2025-11-26T20:46:40+00:00"}),
        "l"
    )
    .is_err());
    assert!(parse_member(
        &json!({"unique_email_id": "u", "email_address": "a@b.c",
        "last_changed": "soon"}),
        "l"
    )
    .is_err());
    assert!(parse_member(
        &json!({"unique_email_id": "u",
        "last_changed": "2025-11-26T20:46:40+00:00"}),
        "l"
    )
    .is_err());
    let member = parse_member(
        &json!({"unique_email_id": "u", "email_address": "a@b.c",
                "last_changed": "2025-11-26T20:46:40+00:00"}),
        "polled-list",
    )
    .unwrap();
    assert_eq!(member.list_id, "polled-list");
    assert_eq!(member.status, None);
}
