//! Tests of the Virtuous webhook parser (`super`): events for confirmation, changes for pull.
use serde_json::json;

use super::*;

fn parse(value: Value) -> VirtuousDelivery {
    parse_delivery(value.to_string().as_bytes()).unwrap()
}

fn only_gift(delivery: &VirtuousDelivery) -> &CrmGift {
    match delivery.events.as_slice() {
        [VirtuousEvent::Gift { gift, .. }] => gift,
        other => panic!("not one gift: {other:?}"),
    }
}

#[test]
fn documented_single_and_bulk_forms_parse() {
    // Goal: the forms the sandbox sends parse to typed gifts and contacts; numbers become text.
    let single = parse(json!({"event": "GiftCreate", "gift": {"id": 7,
        "transactionSource": "Stripe", "transactionId": 42, "customFields": {"a": 1}}}));
    assert_eq!(single.event, "GiftCreate");
    let gift = only_gift(&single);
    assert_eq!(
        (gift.virtuous_id.as_str(), gift.transaction_id.as_deref()),
        ("7", Some("42"))
    );
    let bulk = parse(json!({"event": "GiftCreate", "models": [
        {"gift": {"id": 8, "transactionSource": "Stripe", "transactionId": "pi_1",
                  "customFields": [{"name": "a", "value": "1"}]}},
        {"gift": {"id": 9, "giftType": "ReversingTransaction", "reversedGiftId": 7}}]}));
    assert_eq!(bulk.events.len(), 2);
    let contact = parse(json!({"event": "ContactCreate", "contact": {"id": 3,
        "contactReferences": [{"source": "Stripe", "id": "cus_1"}]}}));
    assert!(
        matches!(&contact.events[0], VirtuousEvent::Contact { virtuous_id, references, .. }
        if virtuous_id == "3" && references[0].id == "cus_1")
    );
    let other = parse(json!({"event": "ProjectCreate", "project": {"id": 1}}));
    assert_eq!(
        other.events,
        vec![VirtuousEvent::Other {
            event: "ProjectCreate".into()
        }]
    );
}

#[test]
fn an_unknown_event_name_on_a_gift_is_kept_not_ignored() {
    // Goal: a name we do not recognise on a model that carries a gift or a contact is kept with a reason; one without either is an event we do not act on.
    for body in [
        json!({"event": "GiftCreated", "gift": {"id": 7, "transactionId": "pi_1"}}),
        json!({"event": "contact_update", "Contact": {"id": 3}}),
    ] {
        let delivery = parse(body.clone());
        assert!(
            matches!(&delivery.events[..], [VirtuousEvent::Unparsed { reason, .. }]
                if reason == "an unknown event name on a gift or contact"),
            "{body}: {delivery:?}"
        );
    }
    let event_note = parse(json!({"event": "EventCreate", "event_record": {"id": 1}}));
    assert!(matches!(
        &event_note.events[..],
        [VirtuousEvent::Other { .. }]
    ));
}

#[test]
fn lenient_shapes_parse_like_the_documented_ones() {
    // Goal: key case, eventType, event name case, per-model names and a 0 reversed id all yield the same gift.
    let shapes = [
        json!({"event": "GiftCreate", "Gift": {"id": 7, "transactionSource": "S", "transactionId": "t"}}),
        json!({"Event": "GiftCreate", "gift": {"Id": 7, "TransactionSource": "S", "TransactionId": "t"}}),
        json!({"event": "giftCreate", "gift": {"id": 7, "transactionSource": "S", "transactionId": "t"}}),
        json!({"eventType": "GiftCreate", "gift": {"id": "7", "transactionSource": "S", "transactionId": "t"}}),
        json!({"event": "GiftCreate", "Models": [{"gift": {"id": 7, "transactionSource": "S", "transactionId": "t"}}]}),
        json!({"models": [{"event": "GiftCreate", "gift": {"id": 7, "transactionSource": "S", "transactionId": "t"}}]}),
        json!({"event": "GiftCreate", "gift": {"id": 7, "transactionSource": "S", "transactionId": "t", "reversedGiftId": 0}}),
    ];
    for shape in shapes {
        let delivery = parse(shape.clone());
        let gift = only_gift(&delivery);
        assert_eq!(gift.virtuous_id, "7", "{shape}");
        assert_eq!(gift.transaction_source.as_deref(), Some("S"), "{shape}");
        assert_eq!(gift.transaction_id.as_deref(), Some("t"), "{shape}");
        assert_eq!(gift.reversed_gift_id, None, "{shape}");
    }
}

#[test]
fn what_cannot_be_understood_is_unparsed_with_a_reason_and_non_json_is_refused() {
    // Goal: valid JSON that is not an event becomes Unparsed (raw JSON + reason); a bulk keeps its good models; non-JSON is an error.
    for (body, reason) in [
        (json!({"gift": {"id": 1}}), "no event name"),
        (json!([1, 2]), "not a JSON object"),
        (json!({"event": "GiftCreate"}), "without a `gift`"),
        (json!({"event": "GiftCreate", "models": 3}), "not an array"),
        (
            json!({"event": "GiftCreate", "gift": {"transactionId": "t"}}),
            "without an `id`",
        ),
    ] {
        let delivery = parse(body.clone());
        match delivery.events.as_slice() {
            [VirtuousEvent::Unparsed {
                raw_json,
                reason: why,
            }] => {
                assert!(why.contains(reason), "{body}: {why}");
                assert_eq!(serde_json::from_str::<Value>(raw_json).unwrap(), body);
            }
            other => panic!("{body}: {other:?}"),
        }
    }
    let mixed = parse(json!({"event": "GiftCreate", "models": [{"gift": {"id": 1}}, "x"]}));
    assert!(matches!(mixed.events[0], VirtuousEvent::Gift { .. }));
    assert!(
        matches!(&mixed.events[1], VirtuousEvent::Unparsed { raw_json, .. } if raw_json == "\"x\"")
    );
    assert!(parse_delivery(b"{oops").is_err());
}

fn only_change(delivery: &VirtuousDelivery) -> &VirtuousChange {
    match delivery.changes.as_slice() {
        [change] => change,
        other => panic!("not one change: {other:?} in {delivery:?}"),
    }
}

#[test]
fn every_kind_and_op_yields_one_change_beside_its_event() {
    // Goal: each of the 15 record-change names (single form) yields one change of the right kind, op and id; confirmation's four stay typed events, the others are Other.
    for (name, key, kind, op) in [
        ("GiftCreate", "gift", ChangeKind::Gift, ChangeOp::Upsert),
        ("GiftUpdate", "gift", ChangeKind::Gift, ChangeOp::Upsert),
        ("GiftDelete", "gift", ChangeKind::Gift, ChangeOp::Delete),
        (
            "ContactCreate",
            "contact",
            ChangeKind::Contact,
            ChangeOp::Upsert,
        ),
        (
            "ContactUpdate",
            "contact",
            ChangeKind::Contact,
            ChangeOp::Upsert,
        ),
        (
            "ContactDelete",
            "contact",
            ChangeKind::Contact,
            ChangeOp::Delete,
        ),
        (
            "ProjectCreate",
            "project",
            ChangeKind::Project,
            ChangeOp::Upsert,
        ),
        (
            "ProjectUpdate",
            "project",
            ChangeKind::Project,
            ChangeOp::Upsert,
        ),
        (
            "ProjectDelete",
            "project",
            ChangeKind::Project,
            ChangeOp::Delete,
        ),
        ("EventCreate", "Event", ChangeKind::Event, ChangeOp::Upsert),
        ("EventUpdate", "Event", ChangeKind::Event, ChangeOp::Upsert),
        ("EventDelete", "Event", ChangeKind::Event, ChangeOp::Delete),
        (
            "ContactNoteCreate",
            "contactNote",
            ChangeKind::ContactNote,
            ChangeOp::Upsert,
        ),
        (
            "ContactNoteUpdate",
            "contactNote",
            ChangeKind::ContactNote,
            ChangeOp::Upsert,
        ),
        (
            "ContactNoteDelete",
            "contactNote",
            ChangeKind::ContactNote,
            ChangeOp::Delete,
        ),
    ] {
        let record = json!({"id": 41, "modifiedDateTimeUtc": "2026-11-26T18:00:00Z"});
        let mut body = json!({"event": name});
        body[key] = record.clone();
        let delivery = parse(body.clone());
        let change = only_change(&delivery);
        assert_eq!((change.kind, change.op), (kind, op), "{body}");
        assert_eq!(change.id, "41", "{body}");
        assert_eq!(
            serde_json::from_str::<Value>(&change.record_json).unwrap(),
            record,
            "{body}: record_json is the inner object"
        );
        let confirmation = VirtuousEventKind::parse(name).is_some();
        match &delivery.events[..] {
            [VirtuousEvent::Gift { .. } | VirtuousEvent::Contact { .. }] => {
                assert!(confirmation, "{body}")
            }
            [VirtuousEvent::Other { event }] => {
                assert!(!confirmation, "{body}");
                assert_eq!(event, name);
            }
            other => panic!("{body}: {other:?}"),
        }
    }
}

#[test]
fn change_shapes_are_read_leniently() {
    // Goal: event names in any case, model keys in any case and their aliases, eventType beside an `event` record, and text ids all yield the change.
    for (body, kind, op) in [
        (
            json!({"event": "giftdelete", "Gift": {"Id": "7"}}),
            ChangeKind::Gift,
            ChangeOp::Delete,
        ),
        (
            json!({"EVENT": "CONTACTDELETE", "CONTACT": {"id": 7}}),
            ChangeKind::Contact,
            ChangeOp::Delete,
        ),
        (
            json!({"eventType": "EventUpdate", "event": {"id": 7}}),
            ChangeKind::Event,
            ChangeOp::Upsert,
        ),
        (
            json!({"Event": "EventCreate", "event": {"id": 7}}),
            ChangeKind::Event,
            ChangeOp::Upsert,
        ),
        (
            json!({"event": "EventCreate", "eventRecord": {"id": 7}}),
            ChangeKind::Event,
            ChangeOp::Upsert,
        ),
        (
            json!({"event": "contactNoteCreate", "ContactNote": {"id": 7}}),
            ChangeKind::ContactNote,
            ChangeOp::Upsert,
        ),
        (
            json!({"event": "ContactNoteUpdate", "note": {"id": 7}}),
            ChangeKind::ContactNote,
            ChangeOp::Upsert,
        ),
        (
            json!({"event": "ContactNoteDelete", "contact_note": {"id": 7}}),
            ChangeKind::ContactNote,
            ChangeOp::Delete,
        ),
        (
            json!({"event": "projectupdate", "Project": {"ID": 7}}),
            ChangeKind::Project,
            ChangeOp::Upsert,
        ),
    ] {
        let delivery = parse(body.clone());
        let change = only_change(&delivery);
        assert_eq!(
            (change.kind, change.op, change.id.as_str()),
            (kind, op, "7"),
            "{body}"
        );
        assert!(
            matches!(&delivery.events[..], [VirtuousEvent::Other { .. }]),
            "{body}: {delivery:?}"
        );
    }
}

#[test]
fn bulk_deliveries_yield_a_change_per_understood_model() {
    // Goal: a bulk with per-model and top-level names yields one change per understood model, in order; the unparsed models yield none (counted once, as events).
    let delivery = parse(json!({"event": "GiftUpdate", "models": [
        {"gift": {"id": 1}},
        {"event": "GiftDelete", "gift": {"id": 2}},
        {"event": "ProjectCreate", "project": {"id": 3}},
        {"gift": {"amount": 5}},
        {"event": "ProjectDelete", "project": {"name": "no id"}},
        {"event": "ContactNoteCreate"},
        {"event": "FormSubmission", "form": {"id": 4}},
        "x",
    ]}));
    let changes: Vec<(ChangeKind, ChangeOp, &str)> = delivery
        .changes
        .iter()
        .map(|change| (change.kind, change.op, change.id.as_str()))
        .collect();
    assert_eq!(
        changes,
        vec![
            (ChangeKind::Gift, ChangeOp::Upsert, "1"),
            (ChangeKind::Gift, ChangeOp::Delete, "2"),
            (ChangeKind::Project, ChangeOp::Upsert, "3"),
        ]
    );
    let reasons: Vec<&str> = delivery
        .events
        .iter()
        .filter_map(|event| match event {
            VirtuousEvent::Unparsed { reason, .. } => Some(reason.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        reasons,
        vec![
            "a gift without an `id`",
            "a project without an `id`",
            "a contact note event without a `contactNote` object",
            "a model of `models` is not an object",
        ]
    );
    assert_eq!(delivery.events.len(), 8);
    assert!(
        matches!(&delivery.events[6], VirtuousEvent::Other { event } if event == "FormSubmission")
    );
}

#[test]
fn incomplete_gifts_and_contacts_are_marked_for_a_re_read() {
    // Goal: an upserted gift or contact lacking a field destinations need (or holding null or an empty text) is incomplete; deletes and other kinds need only their id.
    let gift = json!({"id": 1, "modifiedDateTimeUtc": "2026-11-26T18:00:00Z",
        "amount": 0, "giftDate": "11/26/2026", "contactId": 9});
    let complete = |body: Value| only_change(&parse(body)).complete;
    assert!(complete(json!({"event": "GiftCreate", "gift": gift})));
    for missing in ["modifiedDateTimeUtc", "amount", "giftDate", "contactId"] {
        let mut partial = gift.clone();
        partial.as_object_mut().unwrap().remove(missing);
        assert!(
            !complete(json!({"event": "GiftUpdate", "gift": partial})),
            "{missing}"
        );
        partial[missing] = Value::Null;
        assert!(
            !complete(json!({"event": "GiftUpdate", "gift": partial})),
            "{missing}"
        );
    }
    let mut empty_date = gift.clone();
    empty_date["giftDate"] = json!(" ");
    assert!(!complete(
        json!({"event": "GiftCreate", "gift": empty_date})
    ));
    let contact = json!({"id": 3, "modifiedDateTimeUtc": "2026-11-26T18:00:00Z", "name": "Ann"});
    assert!(complete(
        json!({"event": "ContactUpdate", "contact": contact})
    ));
    assert!(!complete(
        json!({"event": "ContactUpdate", "contact": {"id": 3, "name": "Ann"}})
    ));
    assert!(!complete(
        json!({"event": "ContactCreate", "contact": {"id": 3,
        "modifiedDateTimeUtc": "2026-11-26T18:00:00Z"}})
    ));
    assert!(complete(json!({"event": "GiftDelete", "gift": {"id": 1}})));
    assert!(complete(
        json!({"event": "ContactDelete", "contact": {"id": 3}})
    ));
    assert!(complete(
        json!({"event": "ProjectUpdate", "project": {"id": 5}})
    ));
}

#[test]
fn versions_parse_leniently_and_origins_are_read() {
    // Goal: modifiedDateTimeUtc with Z, an offset, no offset (UTC) or 7 fraction digits gives the same ms; unreadable text is kept with no ms; gift and contact origins are read, others have none.
    let at_ms = 1_795_716_000_000; // 2026-11-26T18:00:00Z
    for (text, ms) in [
        ("2026-11-26T18:00:00Z", Some(at_ms)),
        ("2026-11-26T18:00:00.000Z", Some(at_ms)),
        ("2026-11-26T20:00:00+02:00", Some(at_ms)),
        ("2026-11-26T18:00:00", Some(at_ms)),
        ("2026-11-26T18:00:00.1234567", Some(at_ms + 123)),
        ("2026-11-26 18:00:00.5", Some(at_ms + 500)),
        ("yesterday", None),
        ("1969-12-31T23:59:59Z", None),
    ] {
        let delivery = parse(json!({"event": "ProjectUpdate",
            "project": {"id": 1, "modifiedDateTimeUtc": text}}));
        let change = only_change(&delivery);
        assert_eq!(change.modified_at.as_deref(), Some(text));
        assert_eq!(change.modified_ms, ms, "{text}");
    }
    let no_version = parse(json!({"event": "ProjectUpdate", "project": {"id": 1}}));
    assert_eq!(only_change(&no_version).modified_at, None);
    assert_eq!(only_change(&no_version).modified_ms, None);
    let lower = parse(json!({"event": "GiftUpdate", "gift": {"id": 1,
        "modifieddatetimeutc": "2026-11-26T18:00:00Z", "TransactionSource": "steward"}}));
    assert_eq!(only_change(&lower).modified_ms, Some(at_ms));
    assert_eq!(
        only_change(&lower).origin_sources,
        vec!["steward".to_string()]
    );
    let contact = parse(json!({"event": "ContactCreate", "contact": {"id": 1,
        "referenceSource": "steward", "contactReferences": [{"source": "x", "id": "1"}]}}));
    assert_eq!(
        only_change(&contact).origin_sources,
        vec!["steward".to_string()]
    );
    let plain = parse(json!({"event": "ContactUpdate", "contact": {"id": 1}}));
    assert!(only_change(&plain).origin_sources.is_empty());
    let project = parse(json!({"event": "ProjectCreate", "project": {"id": 1,
        "transactionSource": "steward"}}));
    assert!(only_change(&project).origin_sources.is_empty());
}
