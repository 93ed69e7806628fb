//! The one parser of Virtuous webhook bodies (docs/ingress.md "Virtuous webhooks"; the sandbox's
//! sender, `sandbox/src/virtuous/webhooks.rs`, sends the documented forms).
//!
//! Virtuous does not publish the payload schemas and does not retry a `2xx`, so the parser is
//! lenient and never drops an event silently:
//! - key names in any letter case (`event`/`Event`, `gift`/`Gift`, `models`/`Models`,
//!   `transactionId`/`TransactionId`…), and `eventType` as another name of `event`;
//! - the event name in any case (`GiftCreate`, `giftCreate`);
//! - single `{"event", "gift"|"contact"}` and bulk `{"event", "models": [{"gift"}…]}` forms,
//!   with the event name at the top or on each model of a bulk;
//! - ids as numbers or strings; `0` as well as `null` for "no reversed gift";
//! - `customFields` as an object (webhooks) or an array (FullGift): not read, so both pass.
//!
//! It yields typed events ([`steward_actors::virtuous_event`], no JSON inside). A model it
//! cannot understand becomes [`VirtuousEvent::Unparsed`] with its raw JSON and the reason;
//! the Inbound actor keeps those for the operator. Only a body that is not JSON at all is
//! refused ([`NotJson`], HTTP 400): Virtuous sends JSON, so that is not a Virtuous event.

use serde_json::{Map, Value};
use steward_actors::ports::CrmGift;
use steward_actors::virtuous_event::{
    ContactReference, VirtuousDelivery, VirtuousEvent, VirtuousEventKind,
};

/// The body is not JSON.
#[derive(Debug, thiserror::Error)]
#[error("the body is not valid JSON: {0}")]
pub struct NotJson(String);

/// Parses one delivery body.
pub fn parse_delivery(body: &[u8]) -> Result<VirtuousDelivery, NotJson> {
    let payload: Value = serde_json::from_slice(body).map_err(|err| NotJson(err.to_string()))?;
    let raw_body = || String::from_utf8_lossy(body).into_owned();
    let Value::Object(top) = &payload else {
        return Ok(unparsed_delivery(
            raw_body(),
            "the body is not a JSON object",
        ));
    };
    let top_event = event_name(top);
    let event = top_event.clone().unwrap_or_default();
    let models: Vec<&Value> = match field(top, "models") {
        Some(Value::Array(models)) => models.iter().collect(),
        Some(_) => {
            return Ok(VirtuousDelivery {
                event,
                events: vec![unparsed(raw_body(), "`models` is not an array")],
                changes: Vec::new(),
            })
        }
        None => {
            let event = parse_model(top, top_event.as_deref(), raw_body);
            return Ok(VirtuousDelivery {
                event: top_event.unwrap_or_default(),
                events: vec![event],
                changes: Vec::new(),
            });
        }
    };
    let events = models
        .into_iter()
        .map(|model| match model {
            Value::Object(fields) => {
                parse_model(fields, top_event.as_deref(), || model.to_string())
            }
            other => unparsed(other.to_string(), "a model of `models` is not an object"),
        })
        .collect();
    Ok(VirtuousDelivery {
        event,
        events,
        changes: Vec::new(),
    })
}

fn unparsed(raw_json: String, reason: &str) -> VirtuousEvent {
    VirtuousEvent::Unparsed {
        raw_json,
        reason: reason.to_string(),
    }
}

fn unparsed_delivery(raw_json: String, reason: &str) -> VirtuousDelivery {
    VirtuousDelivery {
        event: String::new(),
        events: vec![unparsed(raw_json, reason)],
        changes: Vec::new(),
    }
}

/// One model (the whole body in the single form). Its own event name wins over the
/// delivery's.
fn parse_model(
    model: &Map<String, Value>,
    delivery_event: Option<&str>,
    raw_json: impl Fn() -> String,
) -> VirtuousEvent {
    let Some(name) = event_name(model).or_else(|| delivery_event.map(str::to_string)) else {
        return unparsed(raw_json(), "no event name (`event` or `eventType`)");
    };
    let Some(kind) = VirtuousEventKind::parse(&name) else {
        // An event we do not act on (`ProjectCreate`…) — unless it carries a gift or a
        // contact: then it is a name we did not recognise (`GiftCreated`, `gift_create`), and
        // the record it names must not be dropped unseen.
        if field(model, "gift").is_some() || field(model, "contact").is_some() {
            return unparsed(raw_json(), "an unknown event name on a gift or contact");
        }
        return VirtuousEvent::Other { event: name };
    };
    match kind {
        VirtuousEventKind::GiftCreate | VirtuousEventKind::GiftUpdate => {
            match field(model, "gift")
                .and_then(Value::as_object)
                .map(parse_gift)
            {
                Some(Ok(gift)) => VirtuousEvent::Gift { kind, gift },
                Some(Err(reason)) => unparsed(raw_json(), reason),
                None => unparsed(raw_json(), "a gift event without a `gift` object"),
            }
        }
        VirtuousEventKind::ContactCreate | VirtuousEventKind::ContactUpdate => {
            let Some(contact) = field(model, "contact").and_then(Value::as_object) else {
                return unparsed(raw_json(), "a contact event without a `contact` object");
            };
            let Some(virtuous_id) = text(field(contact, "id")) else {
                return unparsed(raw_json(), "a contact without an `id`");
            };
            let references = match field(contact, "contactReferences") {
                Some(Value::Array(references)) => references
                    .iter()
                    .filter_map(Value::as_object)
                    .filter_map(|reference| {
                        Some(ContactReference {
                            source: text(field(reference, "source"))?,
                            id: text(field(reference, "id"))?,
                        })
                    })
                    .collect(),
                _ => Vec::new(),
            };
            VirtuousEvent::Contact {
                kind,
                virtuous_id,
                references,
            }
        }
    }
}

fn parse_gift(gift: &Map<String, Value>) -> Result<CrmGift, &'static str> {
    let virtuous_id = text(field(gift, "id")).ok_or("a gift without an `id`")?;
    Ok(CrmGift {
        virtuous_id,
        transaction_source: text(field(gift, "transactionSource")),
        transaction_id: text(field(gift, "transactionId")),
        gift_type: text(field(gift, "giftType")),
        reversed_gift_id: text(field(gift, "reversedGiftId")).filter(|id| id != "0"),
        create_date_time_utc: text(field(gift, "createDateTimeUtc")),
    })
}

/// The event name of an object: `event` or `eventType`, keys in any case.
fn event_name(object: &Map<String, Value>) -> Option<String> {
    text(field(object, "event")).or_else(|| text(field(object, "eventType")))
}

/// A field by name in any letter case (an exact match first).
fn field<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    object.get(name).or_else(|| {
        object
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    })
}

/// Text of a field that may be a string or a number (empty and `null` are absent).
fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(text) if !text.is_empty() => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
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
}
