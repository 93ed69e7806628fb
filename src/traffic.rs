//! A deterministic generator of realistic, signed Stripe webhook traffic, shared by
//! `steward demo`, the end-to-end tests and the benchmarks.
//!
//! [`generate`] builds, from a seed, the events a Stripe account would send for a set of
//! payments: one-time payments (`payment_intent.succeeded` and/or `charge.succeeded` for
//! the same payment, some charge-only without a PaymentIntent), subscription payments in
//! both API-version shapes (legacy: `invoice.paid` creates the gift; basil: held payments
//! and `invoice.paid` + `invoice_payment.paid` links), full refunds (`charge.refunded`),
//! `customer.created`, and exact re-deliveries of earlier events. Every event is test mode
//! (`livemode: false`: the tenant needs `accept_test_events`). Objects are Stripe's own
//! fixtures with generated ids, donors (names, emails, phones, postal addresses) and
//! amounts in minor units, including zero-decimal currencies.
//!
//! [`Traffic::payments`] is the truth to compare against: one gift per unique payment.

mod objects;
mod payments;
pub mod stripe_export;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use payments::{id_body, payment, roles};
use serde_json::{json, Value};

pub use crate::sources::stripe::sign_header;

/// How much of what to generate.
#[derive(Debug, Clone)]
pub struct TrafficOptions {
    pub seed: u64,
    /// Unique payments (one gift each).
    pub payments: usize,
    /// Share (0–1) of payments that are subscription payments (half legacy, half basil,
    /// drawn per payment). Shares are exact: `round(share × count)` payments get the trait.
    pub subscription_share: f64,
    /// Share of one-time payments delivered as both `payment_intent.succeeded` and
    /// `charge.succeeded` (the others send one of the two).
    pub both_events_share: f64,
    /// Share of one-time payments made without a PaymentIntent (charge only: `ch_` id);
    /// taken from those not delivered as both.
    pub charge_only_share: f64,
    /// One-time payments refunded in full (`charge.refunded`), at most one per payment.
    pub refunds: usize,
    /// Share of donors with a Stripe customer (`customer.created` + `customer` on payments).
    pub customer_share: f64,
    /// Exact re-deliveries added, as a share of the other events.
    pub redelivery_share: f64,
    /// `created` of the events (payments are spread over the hour before).
    pub now_s: i64,
}

impl Default for TrafficOptions {
    fn default() -> TrafficOptions {
        TrafficOptions {
            seed: 1,
            payments: 100,
            subscription_share: 0.2,
            both_events_share: 0.3,
            charge_only_share: 0.1,
            refunds: 1,
            customer_share: 0.3,
            redelivery_share: 0.1,
            now_s: 1_767_225_600, // 2026-01-01T00:00:00Z
        }
    }
}

/// Which payload shapes a payment's events follow (docs/ingress.md "Subscription payments: holds and links").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    /// Before 2025-03-31.
    Legacy,
    /// 2025-03-31 (`basil`) and later.
    Basil,
}

impl Era {
    pub fn api_version(self) -> &'static str {
        match self {
            Era::Legacy => "2024-06-20",
            Era::Basil => "2025-03-31.basil",
        }
    }
}

/// A generated donor.
#[derive(Debug, Clone, PartialEq)]
pub struct Donor {
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub phone: String,
    pub line1: String,
    pub city: String,
    pub state: String,
    pub postal_code: String,
    /// `cus_…` when the donor has a Stripe customer.
    pub customer_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PaymentKind {
    OneTime,
    Subscription {
        era: Era,
        subscription_id: String,
        invoice_id: String,
        first_payment: bool,
    },
}

/// One unique payment: exactly one gift in Virtuous.
#[derive(Debug, Clone, PartialEq)]
pub struct Payment {
    /// Virtuous `transactionId`: the PaymentIntent id, else the charge id.
    pub payment_id: String,
    pub intent_id: Option<String>,
    pub charge_id: String,
    pub amount_minor: i64,
    /// Lower-case ISO code as Stripe sends it.
    pub currency: String,
    pub created_s: i64,
    /// API version shape of its payment events (subscriptions: the same as `kind`'s).
    pub era: Era,
    pub kind: PaymentKind,
    pub donor: Donor,
    /// `metadata.designation` (project code), when set.
    pub designation: Option<String>,
    pub refunded: bool,
    /// A one-time payment delivered as both `payment_intent.succeeded` and `charge.succeeded`.
    pub both_events: bool,
}

/// What an event must map to (`crate::sources::stripe::map_event`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// A one-time gift command with `source_id` = `payment_id`.
    Gift { payment_id: String },
    /// A recurring gift command (legacy `invoice.paid`).
    RecurringGift {
        payment_id: String,
        subscription_id: String,
    },
    /// Ignored: a legacy subscription's payment event (its invoice creates the gift).
    Ignored,
    /// A held basil subscription payment.
    Hold { payment_id: String },
    /// A basil link part.
    Link { invoice_id: String },
    /// A reversal (refund record) of the payment.
    Refund { payment_id: String },
    /// A contact transaction for the customer.
    Contact { customer_id: String },
}

/// One event, ready to sign and send.
#[derive(Debug, Clone)]
pub struct GeneratedEvent {
    pub id: String,
    pub event_type: String,
    /// The exact body to send (sign these bytes).
    pub body: String,
    pub expected: Expected,
    /// An exact copy of an earlier event (same id and body).
    pub is_redelivery: bool,
}

/// A generated batch of traffic.
#[derive(Debug, Clone)]
pub struct Traffic {
    /// In sending order.
    pub events: Vec<GeneratedEvent>,
    pub payments: Vec<Payment>,
}

impl Traffic {
    /// The `transactionId`s of the unique payments: gifts in Virtuous must equal these.
    pub fn unique_payment_ids(&self) -> Vec<String> {
        self.payments.iter().map(|p| p.payment_id.clone()).collect()
    }
    /// Payments refunded in full (each adds a reversing transaction in Virtuous).
    pub fn refunded_payment_ids(&self) -> Vec<String> {
        let refunded = self.payments.iter().filter(|p| p.refunded);
        refunded.map(|p| p.payment_id.clone()).collect()
    }
    /// Customers with a `customer.created` event (one contact transaction each).
    pub fn customer_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .payments
            .iter()
            .filter_map(|p| p.donor.customer_id.clone())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }
    /// Events that are exact re-deliveries.
    pub fn redeliveries(&self) -> usize {
        self.events.iter().filter(|e| e.is_redelivery).count()
    }
}

/// `Stripe-Signature` for `body` signed at `timestamp_s` with the endpoint secret.
pub fn sign(secret: &str, body: &[u8], timestamp_s: i64) -> String {
    sign_header(secret, timestamp_s, body)
}

/// The Stripe event envelope around `object`.
fn envelope(event_id: &str, event_type: &str, era: Era, created_s: i64, object: Value) -> String {
    json!({
        "id": event_id,
        "object": "event",
        "api_version": era.api_version(),
        "created": created_s,
        "data": {"object": object},
        "livemode": false,
        "pending_webhooks": 1,
        "request": {"id": format!("req_{}", &event_id[4..]), "idempotency_key": null},
        "type": event_type,
    })
    .to_string()
}

/// Builds the events of one payment (before shuffling): (type, era, object, expected).
fn payment_events(rng: &mut StdRng, payment: &Payment) -> Vec<(&'static str, Value, Expected)> {
    let payment_id = payment.payment_id.clone();
    match &payment.kind {
        PaymentKind::OneTime => {
            let gift = Expected::Gift {
                payment_id: payment_id.clone(),
            };
            let charge = (
                "charge.succeeded",
                objects::charge(payment, false),
                gift.clone(),
            );
            if payment.intent_id.is_none() {
                return vec![charge];
            }
            let intent = (
                "payment_intent.succeeded",
                objects::payment_intent(payment),
                gift,
            );
            if payment.both_events {
                vec![intent, charge]
            } else if rng.gen_bool(0.5) {
                vec![intent]
            } else {
                vec![charge]
            }
        }
        PaymentKind::Subscription {
            era,
            subscription_id,
            invoice_id,
            ..
        } => {
            let intent = objects::payment_intent(payment);
            let charge = objects::charge(payment, false);
            match era {
                Era::Legacy => vec![
                    ("payment_intent.succeeded", intent, Expected::Ignored),
                    ("charge.succeeded", charge, Expected::Ignored),
                    (
                        "invoice.paid",
                        objects::invoice(payment),
                        Expected::RecurringGift {
                            payment_id,
                            subscription_id: subscription_id.clone(),
                        },
                    ),
                ],
                Era::Basil => {
                    let hold = Expected::Hold {
                        payment_id: payment_id.clone(),
                    };
                    let link = Expected::Link {
                        invoice_id: invoice_id.clone(),
                    };
                    vec![
                        ("payment_intent.succeeded", intent, hold.clone()),
                        ("charge.succeeded", charge, hold),
                        ("invoice.paid", objects::invoice(payment), link.clone()),
                        (
                            "invoice_payment.paid",
                            objects::invoice_payment(payment),
                            link,
                        ),
                    ]
                }
            }
        }
    }
}

/// Generates the traffic of `options`, deterministically from `options.seed`.
pub fn generate(options: &TrafficOptions) -> Traffic {
    let mut rng = StdRng::seed_from_u64(options.seed);
    let roles = roles(&mut rng, options);
    let mut payments: Vec<Payment> = roles
        .into_iter()
        .enumerate()
        .map(|(n, role)| payment(&mut rng, options, n, role))
        .collect();
    let mut writer = EventWriter {
        rng,
        seed: options.seed,
        event_count: 0,
        events: Vec::new(),
    };
    let mut customers_sent: Vec<String> = Vec::new();
    for payment in &payments {
        if let Some(customer_id) = &payment.donor.customer_id {
            if !customers_sent.contains(customer_id) {
                customers_sent.push(customer_id.clone());
                let created_s = payment.created_s - 60;
                let object = objects::customer(&payment.donor, customer_id, created_s);
                let expected = Expected::Contact {
                    customer_id: customer_id.clone(),
                };
                writer.push("customer.created", payment.era, created_s, object, expected);
            }
        }
        let mut parts = payment_events(&mut writer.rng, payment);
        // Stripe does not order the events of one payment.
        parts.shuffle(&mut writer.rng);
        for (event_type, object, expected) in parts {
            writer.push(event_type, payment.era, payment.created_s, object, expected);
        }
    }
    // Full refunds of one-time payments, after everything else (the gift must exist first).
    let refundable: Vec<usize> = (0..payments.len())
        .filter(|&index| payments[index].kind == PaymentKind::OneTime)
        .collect();
    for &index in refundable.iter().take(options.refunds) {
        payments[index].refunded = true;
        let payment = &payments[index];
        let expected = Expected::Refund {
            payment_id: payment.payment_id.clone(),
        };
        let object = objects::charge(payment, true);
        writer.push(
            "charge.refunded",
            payment.era,
            options.now_s,
            object,
            expected,
        );
    }
    writer.add_redeliveries(options.redelivery_share);
    Traffic {
        events: writer.events,
        payments,
    }
}

/// Appends events with ids drawn from the one random stream (the draw order is part of the
/// determinism: a seed always gives the same traffic).
struct EventWriter {
    rng: StdRng,
    seed: u64,
    event_count: usize,
    events: Vec<GeneratedEvent>,
}

impl EventWriter {
    fn push(
        &mut self,
        event_type: &str,
        era: Era,
        created_s: i64,
        object: Value,
        expected: Expected,
    ) {
        self.event_count += 1;
        let random: u32 = self.rng.gen();
        let id = format!("evt_{}{random:08x}", id_body(self.seed, self.event_count));
        self.events.push(GeneratedEvent {
            body: envelope(&id, event_type, era, created_s, object),
            id,
            event_type: event_type.to_string(),
            expected,
            is_redelivery: false,
        });
    }

    /// Exact re-deliveries of earlier events, spliced in after their original.
    fn add_redeliveries(&mut self, share: f64) {
        let redeliveries = (self.events.len() as f64 * share).round() as usize;
        for _ in 0..redeliveries {
            let original_at = self.rng.gen_range(0..self.events.len());
            let mut copy = self.events[original_at].clone();
            copy.is_redelivery = true;
            let insert_at = self.rng.gen_range(original_at + 1..=self.events.len());
            self.events.insert(insert_at, copy);
        }
    }
}

#[cfg(test)]
mod tests;
