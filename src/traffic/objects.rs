//! Stripe objects for the traffic generator: Stripe's own fixtures (`sources/stripe/fixtures`)
//! with the fields of one generated payment written over them, so every event carries the
//! full, realistic shape (2–5 KB) rather than a minimal one.

use serde_json::{json, Value};

use super::{Donor, Era, Payment, PaymentKind};

fn fixture(name: &str) -> Value {
    let text = match name {
        "charge" => include_str!("../sources/stripe/fixtures/charge.json"),
        "payment_intent" => include_str!("../sources/stripe/fixtures/payment_intent.json"),
        "invoice" => include_str!("../sources/stripe/fixtures/invoice.json"),
        "invoice_payment" => include_str!("../sources/stripe/fixtures/invoice_payment.json"),
        "customer" => include_str!("../sources/stripe/fixtures/customer.json"),
        other => unreachable!("no fixture {other}"),
    };
    serde_json::from_str(text).expect("the fixtures are JSON")
}

/// The fixture with top-level fields replaced by `patch`'s (`null` values included).
fn patched(name: &str, patch: Value) -> Value {
    let mut object = fixture(name);
    if let (Some(object), Some(patch)) = (object.as_object_mut(), patch.as_object()) {
        for (key, value) in patch {
            object.insert(key.clone(), value.clone());
        }
    }
    object
}

/// Stripe's `{name, email, phone, address}` of a donor.
pub(super) fn billing_details(donor: &Donor) -> Value {
    json!({
        "address": {"city": donor.city, "country": "US", "line1": donor.line1, "line2": null,
                    "postal_code": donor.postal_code, "state": donor.state},
        "email": donor.email,
        "name": format!("{} {}", donor.first_name, donor.last_name),
        "phone": donor.phone,
        "tax_id": null,
    })
}

/// What Stripe says a subscription payment is for (the mapper's subscription hint).
const SUBSCRIPTION_CREATION: &str = "Subscription creation";

fn description(payment: &Payment) -> &'static str {
    match payment.kind {
        PaymentKind::OneTime => "Donation",
        PaymentKind::Subscription { .. } => SUBSCRIPTION_CREATION,
    }
}

/// The invoice a legacy-era payment names (`null` for one-time payments and basil).
fn invoice_field(payment: &Payment) -> Option<Value> {
    match &payment.kind {
        PaymentKind::Subscription {
            era: Era::Legacy,
            invoice_id,
            ..
        } => Some(json!(invoice_id)),
        PaymentKind::Subscription {
            era: Era::Basil, ..
        } => None,
        PaymentKind::OneTime => match payment.era {
            Era::Legacy => Some(Value::Null),
            Era::Basil => None,
        },
    }
}

fn metadata(payment: &Payment) -> Value {
    match &payment.designation {
        Some(code) => json!({"designation": code}),
        None => json!({}),
    }
}

/// A succeeded (captured) charge; refunded in full when `refunded`.
pub(super) fn charge(payment: &Payment, refunded: bool) -> Value {
    let mut charge = patched(
        "charge",
        json!({
            "id": payment.charge_id,
            "amount": payment.amount_minor,
            "amount_captured": payment.amount_minor,
            "amount_refunded": if refunded { payment.amount_minor } else { 0 },
            "captured": true,
            "paid": true,
            "status": "succeeded",
            "refunded": refunded,
            "created": payment.created_s,
            "currency": payment.currency,
            "customer": payment.donor.customer_id,
            "description": description(payment),
            "payment_intent": payment.intent_id,
            "billing_details": billing_details(&payment.donor),
            "receipt_email": payment.donor.email,
            "metadata": metadata(payment),
            "livemode": false,
        }),
    );
    if let Some(invoice) = invoice_field(payment) {
        charge["invoice"] = invoice;
    }
    if refunded {
        charge["refunds"] = json!({"object": "list", "has_more": false, "total_count": 1,
            "url": format!("/v1/charges/{}/refunds", payment.charge_id),
            "data": [{"id": format!("re_{}", &payment.charge_id[3..]), "object": "refund",
                      "amount": payment.amount_minor, "charge": payment.charge_id,
                      "currency": payment.currency, "status": "succeeded",
                      "payment_intent": payment.intent_id}]});
    }
    charge
}

/// A succeeded PaymentIntent (`latest_charge` as an id, as webhooks send it).
pub(super) fn payment_intent(payment: &Payment) -> Value {
    let mut intent = patched(
        "payment_intent",
        json!({
            "id": payment.intent_id,
            "amount": payment.amount_minor,
            "amount_received": payment.amount_minor,
            "amount_capturable": 0,
            "canceled_at": null,
            "last_payment_error": null,
            "next_action": null,
            "status": "succeeded",
            "created": payment.created_s,
            "currency": payment.currency,
            "customer": payment.donor.customer_id,
            "description": description(payment),
            "latest_charge": payment.charge_id,
            "receipt_email": payment.donor.email,
            "metadata": metadata(payment),
            "payment_method_types": ["card"],
            "livemode": false,
        }),
    );
    intent["client_secret"] = json!(format!(
        "{}_secret_demo",
        payment.intent_id.as_deref().unwrap_or("pi")
    ));
    if let Some(invoice) = invoice_field(payment) {
        intent["invoice"] = invoice;
    }
    intent
}

/// A paid subscription invoice in the era's shape.
pub(super) fn invoice(payment: &Payment) -> Value {
    let PaymentKind::Subscription {
        era,
        subscription_id,
        invoice_id,
        first_payment,
    } = &payment.kind
    else {
        unreachable!("invoices belong to subscription payments");
    };
    let month_s = 30 * 86_400;
    let lines = json!({"object": "list", "has_more": false, "data": [{
        "id": format!("il_{}", &invoice_id[3..]), "object": "line_item",
        "amount": payment.amount_minor, "currency": payment.currency,
        "period": {"start": payment.created_s, "end": payment.created_s + month_s},
        "price": {"id": "price_monthly_gift", "object": "price",
                  "recurring": {"interval": "month", "interval_count": 1}},
        "metadata": metadata(payment)}]});
    let mut invoice = patched(
        "invoice",
        json!({
            "id": invoice_id,
            "amount_due": payment.amount_minor,
            "amount_paid": payment.amount_minor,
            "amount_remaining": 0,
            "currency": payment.currency,
            "status": "paid",
            "paid": true,
            "billing_reason": if *first_payment { "subscription_create" } else { "subscription_cycle" },
            "customer": payment.donor.customer_id,
            "customer_email": payment.donor.email,
            "customer_name": format!("{} {}", payment.donor.first_name, payment.donor.last_name),
            "customer_address": billing_details(&payment.donor)["address"],
            "customer_phone": payment.donor.phone,
            "lines": lines,
            "metadata": metadata(payment),
            "created": payment.created_s,
            "status_transitions": {"paid_at": payment.created_s, "finalized_at": payment.created_s,
                                   "marked_uncollectible_at": null, "voided_at": null},
            "livemode": false,
        }),
    );
    match era {
        Era::Legacy => {
            invoice["payment_intent"] = json!(payment.intent_id);
            invoice["charge"] = json!(payment.charge_id);
            invoice["subscription"] = json!(subscription_id);
            invoice["parent"] = Value::Null;
        }
        Era::Basil => {
            invoice["parent"] = json!({"type": "subscription_details", "quote_details": null,
                "subscription_details": {"metadata": {}, "subscription": subscription_id}});
            if let Some(fields) = invoice.as_object_mut() {
                for legacy_only in ["subscription", "payment_intent", "charge"] {
                    fields.remove(legacy_only);
                }
            }
        }
    }
    invoice
}

/// The basil InvoicePayment tying the invoice to its PaymentIntent.
pub(super) fn invoice_payment(payment: &Payment) -> Value {
    let PaymentKind::Subscription { invoice_id, .. } = &payment.kind else {
        unreachable!("invoice payments belong to subscription payments");
    };
    patched(
        "invoice_payment",
        json!({
            "id": format!("inpay_{}", &invoice_id[3..]),
            "amount_paid": payment.amount_minor,
            "amount_requested": payment.amount_minor,
            "created": payment.created_s,
            "currency": payment.currency,
            "invoice": invoice_id,
            "livemode": false,
            "payment": {"type": "payment_intent", "payment_intent": payment.intent_id},
            "status": "paid",
            "status_transitions": {"canceled_at": null, "paid_at": payment.created_s},
        }),
    )
}

/// A customer with a name, email, phone and address.
pub(super) fn customer(donor: &Donor, customer_id: &str, created_s: i64) -> Value {
    let details = billing_details(donor);
    patched(
        "customer",
        json!({
            "id": customer_id,
            "name": details["name"],
            "email": donor.email,
            "phone": donor.phone,
            "address": details["address"],
            "created": created_s,
            "discount": null,
            "livemode": false,
        }),
    )
}
