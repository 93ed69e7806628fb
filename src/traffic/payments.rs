//! Generated payments: donors (names, emails, phones, postal addresses), amounts in minor
//! units of a few currencies (zero-decimal ones included), and the role of each payment,
//! assigned so that every share of [`TrafficOptions`] is exact.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;

use super::{Donor, Era, Payment, PaymentKind, TrafficOptions};

const FIRST_NAMES: [&str; 20] = [
    "Maria", "James", "Aisha", "Chen", "Olivia", "Mateo", "Grace", "Daniel", "Priya", "Samuel",
    "Fatima", "Noah", "Elena", "Kwame", "Sofia", "Liam", "Hannah", "Diego", "Mei", "Isaac",
];
const LAST_NAMES: [&str; 20] = [
    "Garcia",
    "Johnson",
    "Okafor",
    "Wang",
    "Smith",
    "Hernandez",
    "Kim",
    "Brown",
    "Patel",
    "Nguyen",
    "Rahman",
    "Miller",
    "Rossi",
    "Mensah",
    "Lopez",
    "Walker",
    "Cohen",
    "Silva",
    "Tanaka",
    "Fischer",
];
const STREETS: [&str; 10] = [
    "Oak St",
    "Maple Ave",
    "Cedar Ln",
    "Pine Rd",
    "Elm St",
    "Lakeview Dr",
    "Hillcrest Blvd",
    "River Rd",
    "Sunset Ave",
    "Park Pl",
];
/// (city, state, postal code prefix).
const CITIES: [(&str, &str, &str); 8] = [
    ("Chicago", "IL", "606"),
    ("Austin", "TX", "787"),
    ("Denver", "CO", "802"),
    ("Portland", "OR", "972"),
    ("Atlanta", "GA", "303"),
    ("Boston", "MA", "021"),
    ("Nashville", "TN", "372"),
    ("Madison", "WI", "537"),
];
const DESIGNATIONS: [&str; 3] = ["GENERAL", "SHELTER", "MEALS"];
/// (currency, smallest and largest amount in minor units). `jpy` and `krw` are zero-decimal.
const CURRENCIES: [(&str, i64, i64); 5] = [
    ("usd", 500, 50_000),
    ("cad", 1_000, 20_000),
    ("eur", 500, 30_000),
    ("jpy", 1_000, 50_000),
    ("krw", 10_000, 300_000),
];

/// A short id body unique within one seed (`{seed hex}{n}`), so runs with different seeds
/// never share ids.
pub(super) fn id_body(seed: u64, n: usize) -> String {
    format!("{seed:x}x{n:06}")
}

pub(super) fn donor(rng: &mut StdRng, seed: u64, n: usize, customer_share: f64) -> Donor {
    let first_name = FIRST_NAMES[rng.gen_range(0..FIRST_NAMES.len())].to_string();
    let last_name = LAST_NAMES[rng.gen_range(0..LAST_NAMES.len())].to_string();
    let (city, state, postal_prefix) = CITIES[rng.gen_range(0..CITIES.len())];
    let email = format!(
        "{}.{}{}@example.org",
        first_name.to_ascii_lowercase(),
        last_name.to_ascii_lowercase(),
        n
    );
    Donor {
        email,
        phone: format!("+1 555 01{:02}", rng.gen_range(0..100)),
        line1: format!(
            "{} {}",
            rng.gen_range(10..9999),
            STREETS[rng.gen_range(0..STREETS.len())]
        ),
        city: city.to_string(),
        state: state.to_string(),
        postal_code: format!("{postal_prefix}{:02}", rng.gen_range(0..100)),
        customer_id: rng
            .gen_bool(customer_share)
            .then(|| format!("cus_{}", id_body(seed, n))),
        first_name,
        last_name,
    }
}

/// What a payment is, decided up front so shares are exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Subscription,
    /// One-time, delivered as both events.
    BothEvents,
    /// One-time without a PaymentIntent.
    ChargeOnly,
    /// One-time, delivered as one of its two events.
    OneEvent,
}

/// Exactly `round(share × count)` payments per role, at seeded positions.
pub(super) fn roles(rng: &mut StdRng, options: &TrafficOptions) -> Vec<Role> {
    let count = options.payments;
    let exact =
        |share: f64, of: usize| ((of as f64 * share.clamp(0.0, 1.0)).round() as usize).min(of);
    let subscriptions = exact(options.subscription_share, count);
    let one_time = count - subscriptions;
    let both = exact(options.both_events_share, one_time);
    let charge_only = exact(options.charge_only_share, one_time).min(one_time - both);
    let mut roles: Vec<Role> = std::iter::repeat(Role::Subscription)
        .take(subscriptions)
        .chain(std::iter::repeat(Role::BothEvents).take(both))
        .chain(std::iter::repeat(Role::ChargeOnly).take(charge_only))
        .chain(std::iter::repeat(Role::OneEvent))
        .take(count)
        .collect();
    roles.shuffle(rng);
    roles
}

pub(super) fn payment(rng: &mut StdRng, options: &TrafficOptions, n: usize, role: Role) -> Payment {
    let id = id_body(options.seed, n);
    let donor = donor(rng, options.seed, n, options.customer_share);
    let (currency, low, high) = if rng.gen_bool(0.8) {
        CURRENCIES[0]
    } else {
        CURRENCIES[rng.gen_range(1..CURRENCIES.len())]
    };
    let is_subscription = role == Role::Subscription;
    let era = if rng.gen_bool(0.5) {
        Era::Legacy
    } else {
        Era::Basil
    };
    let intent_id = (role != Role::ChargeOnly).then(|| format!("pi_{id}"));
    let charge_id = format!("ch_{id}");
    let kind = if is_subscription {
        PaymentKind::Subscription {
            era,
            subscription_id: format!("sub_{id}"),
            invoice_id: format!("in_{id}"),
            first_payment: rng.gen_bool(0.5),
        }
    } else {
        PaymentKind::OneTime
    };
    // Subscriptions always have a customer (Stripe requires one).
    let donor = match (&kind, &donor.customer_id) {
        (PaymentKind::Subscription { .. }, None) => Donor {
            customer_id: Some(format!("cus_{id}")),
            ..donor
        },
        _ => donor,
    };
    Payment {
        payment_id: intent_id.clone().unwrap_or_else(|| charge_id.clone()),
        intent_id,
        charge_id,
        amount_minor: rng.gen_range(low..=high),
        currency: currency.to_string(),
        created_s: options.now_s - rng.gen_range(0..3_600),
        era,
        kind,
        donor,
        designation: rng
            .gen_bool(0.6)
            .then(|| DESIGNATIONS[rng.gen_range(0..DESIGNATIONS.len())].to_string()),
        refunded: false,
        both_events: role == Role::BothEvents,
    }
}
