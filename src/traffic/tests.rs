//! The generator's events verify, parse and map to what they claim; it is deterministic.

use std::collections::{HashMap, HashSet};

use jiff::tz::TimeZone;
use steward_actors::store::RecordKind;

use super::*;
use crate::sources::stripe::{map_event, parse_event, verify_signature, Mapped, StripeMapping};

const SECRET: &str = "whsec_traffic_test";

fn mapping() -> StripeMapping {
    StripeMapping {
        transaction_source: "Stripe".into(),
        default_project_code: None,
        default_segment_code: None,
        metadata_project_key: "designation".into(),
        metadata_segment_key: "segment".into(),
        accept_test_events: true,
        subscription_hold_s: 120,
    }
}

fn options(seed: u64) -> TrafficOptions {
    TrafficOptions {
        seed,
        payments: 300,
        refunds: 5,
        ..TrafficOptions::default()
    }
}

/// Maps one generated event exactly as the ingress would: verify, parse, map.
fn map_generated(event: &GeneratedEvent, now_s: i64) -> Mapped {
    let header = sign(SECRET, event.body.as_bytes(), now_s);
    verify_signature(&header, event.body.as_bytes(), &[SECRET], 300, now_s)
        .expect("the signature verifies");
    let parsed = parse_event(event.body.as_bytes()).expect("the event parses");
    assert_eq!(parsed.id, event.id);
    assert_eq!(parsed.event_type, event.event_type);
    map_event(&parsed, &mapping(), &TimeZone::UTC, now_s).expect("the event maps")
}

#[test]
fn every_event_verifies_parses_and_maps_to_its_expectation() {
    // Goal: each generated event, signed, is accepted and maps to the variant it promises,
    // with the promised ids and a valid body (amounts in major units, zero-decimal kept).
    let traffic = generate(&options(7));
    let now_s = TrafficOptions::default().now_s;
    let payments: HashMap<&str, &Payment> = traffic
        .payments
        .iter()
        .map(|payment| (payment.payment_id.as_str(), payment))
        .collect();
    let mut seen_variants = HashSet::new();
    for event in &traffic.events {
        let mapped = map_generated(event, now_s);
        let context = format!("{} {}: {mapped:?}", event.event_type, event.id);
        match (&event.expected, mapped) {
            (Expected::Gift { payment_id }, Mapped::Commands { commands, .. }) => {
                assert_eq!(commands.len(), 1, "{context}");
                let gift = &commands[0];
                assert_eq!(
                    (gift.fact.kind, &gift.fact.source_id),
                    (RecordKind::Gift, payment_id)
                );
                assert!(gift.body().get("recurringGiftTransactionId").is_none());
                let payment = payments[payment_id.as_str()];
                let expected_amount =
                    crate::sources::amount::minor_to_major(payment.amount_minor, &payment.currency);
                assert_eq!(gift.body()["amount"], expected_amount.as_str(), "{context}");
                if payment.currency == "jpy" || payment.currency == "krw" {
                    assert!(!expected_amount.contains('.'), "zero-decimal: {context}");
                }
                assert!(gift.body()["contact"]["email"].is_string(), "{context}");
                seen_variants.insert("gift");
            }
            (
                Expected::RecurringGift {
                    payment_id,
                    subscription_id,
                },
                Mapped::Commands { commands, .. },
            ) => {
                assert_eq!(&commands[0].fact.source_id, payment_id, "{context}");
                assert_eq!(
                    commands[0].body()["recurringGiftTransactionId"],
                    subscription_id.as_str()
                );
                seen_variants.insert("recurring");
            }
            (Expected::Ignored, Mapped::Ignored { .. }) => {
                seen_variants.insert("ignored");
            }
            (Expected::Hold { payment_id: want }, Mapped::Hold { payment_id, .. }) => {
                assert_eq!(&payment_id, want, "{context}");
                seen_variants.insert("hold");
            }
            (Expected::Link { invoice_id }, Mapped::Link(link)) => {
                assert_eq!(&link.invoice_id, invoice_id, "{context}");
                seen_variants.insert("link");
            }
            (Expected::Refund { payment_id }, Mapped::Commands { commands, .. }) => {
                assert_eq!(
                    (commands[0].fact.kind, &commands[0].fact.source_id),
                    (RecordKind::Refund, payment_id)
                );
                seen_variants.insert("refund");
            }
            (Expected::Contact { customer_id }, Mapped::Commands { commands, .. }) => {
                assert_eq!(
                    (commands[0].fact.kind, &commands[0].fact.source_id),
                    (RecordKind::Contact, customer_id)
                );
                assert!(commands[0].body()["email"].is_string(), "{context}");
                seen_variants.insert("contact");
            }
            (expected, _) => panic!("expected {expected:?}, got {context}"),
        }
    }
    for variant in [
        "gift",
        "recurring",
        "ignored",
        "hold",
        "link",
        "refund",
        "contact",
    ] {
        assert!(
            seen_variants.contains(variant),
            "no {variant} event generated"
        );
    }
}

#[test]
fn payments_are_unique_and_every_one_has_an_event_that_creates_or_holds_its_gift() {
    // Goal: "gifts == unique payments" is a fair comparison: ids are unique and each payment
    // has at least one event that leads to its gift; re-deliveries are exact copies.
    let traffic = generate(&options(11));
    let ids = traffic.unique_payment_ids();
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len());
    assert_eq!(ids.len(), 300);
    assert_eq!(traffic.refunded_payment_ids().len(), 5);
    let gift_events: HashSet<String> = traffic
        .events
        .iter()
        .filter_map(|event| match &event.expected {
            Expected::Gift { payment_id }
            | Expected::RecurringGift { payment_id, .. }
            | Expected::Hold { payment_id } => Some(payment_id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(gift_events, ids.into_iter().collect());
    let originals: HashMap<&str, &str> = traffic
        .events
        .iter()
        .filter(|event| !event.is_redelivery)
        .map(|event| (event.id.as_str(), event.body.as_str()))
        .collect();
    let non_redeliveries = traffic.events.len() - traffic.redeliveries();
    assert_eq!(
        originals.len(),
        non_redeliveries,
        "original event ids are unique"
    );
    assert!(traffic.redeliveries() > 0);
    for copy in traffic.events.iter().filter(|event| event.is_redelivery) {
        assert_eq!(originals[copy.id.as_str()], copy.body, "exact copy");
    }
    let currencies: HashSet<&str> = traffic
        .payments
        .iter()
        .map(|p| p.currency.as_str())
        .collect();
    assert!(
        currencies.contains("usd") && (currencies.contains("jpy") || currencies.contains("krw"))
    );
}

#[test]
fn generation_is_deterministic_per_seed_and_seeds_do_not_share_ids() {
    // Goal: the same seed gives the same bytes; another seed gives other payment ids.
    let first = generate(&options(3));
    let again = generate(&options(3));
    let bodies = |traffic: &Traffic| -> Vec<String> {
        traffic
            .events
            .iter()
            .map(|event| event.body.clone())
            .collect()
    };
    assert_eq!(bodies(&first), bodies(&again));
    let other = generate(&options(4));
    let first_ids: HashSet<String> = first.unique_payment_ids().into_iter().collect();
    assert!(other
        .unique_payment_ids()
        .iter()
        .all(|id| !first_ids.contains(id)));
}

#[test]
fn shares_are_exact_so_event_counts_are_predictable() {
    // Goal: the traffic (30 % of payments as both events, 10 % re-deliveries) has
    // exactly the counts the shares say: 700 one-time payments → 910 events + 91 copies.
    let traffic = generate(&TrafficOptions {
        seed: 9,
        payments: 700,
        subscription_share: 0.0,
        both_events_share: 0.3,
        charge_only_share: 0.1,
        refunds: 0,
        customer_share: 0.0,
        redelivery_share: 0.1,
        ..TrafficOptions::default()
    });
    let both = traffic.payments.iter().filter(|p| p.both_events).count();
    let charge_only = traffic
        .payments
        .iter()
        .filter(|p| p.intent_id.is_none())
        .count();
    assert_eq!((both, charge_only), (210, 70));
    assert_eq!(traffic.redeliveries(), 91);
    assert_eq!(traffic.events.len(), 1_001);
}
