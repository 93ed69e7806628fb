//! The final checks of a crash run: every gift the orgs hold, against the obligations
//! (lost) and against what was generated (altered), and duplicates per transactionId.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use reqwest::Method;
use serde_json::{json, Value};

use super::producers::{ExpectedGift, TenantKey};
use crate::external_sandbox::ExternalSandbox;

/// Compares the orgs' gifts with the obligations and with what was generated.
pub async fn check_gifts(
    sandbox: &ExternalSandbox,
    tenants: &[String],
    obliged: &BTreeMap<TenantKey, Arc<ExpectedGift>>,
    expected: &HashMap<TenantKey, Arc<ExpectedGift>>,
) -> GiftReport {
    let mut report = GiftReport::default();
    for tenant in tenants {
        let contacts = sandbox
            .call(
                Method::GET,
                &format!("/_sandbox/orgs/{tenant}/contacts"),
                None,
            )
            .await;
        let emails_of: HashMap<u64, BTreeSet<String>> = contacts
            .as_array()
            .unwrap()
            .iter()
            .map(|contact| (contact["id"].as_u64().unwrap(), contact_emails(contact)))
            .collect();
        for gift in sandbox.gifts(tenant).await {
            let transaction_id = gift["transactionId"].as_str().unwrap_or("").to_string();
            let key = (tenant.clone(), transaction_id);
            *report.gifts.entry(key.clone()).or_insert(0) += 1;
            match expected.get(&key) {
                None => report
                    .altered
                    .push(format!("a gift nobody sent: {tenant} {gift}")),
                Some(truth) => {
                    let emails = gift["contactId"].as_u64().and_then(|id| emails_of.get(&id));
                    if let Some(difference) = gift_difference(truth, &gift, emails) {
                        report.altered.push(difference);
                    }
                }
            }
        }
    }
    report.lost = obliged
        .keys()
        .filter(|key| !report.gifts.contains_key(*key))
        .cloned()
        .collect();
    report
}

/// What the orgs hold after the import, against the obligations.
#[derive(Debug, Default)]
pub struct GiftReport {
    /// Gifts per (tenant, transactionId).
    pub gifts: BTreeMap<TenantKey, usize>,
    /// Obligations with no gift.
    pub lost: Vec<TenantKey>,
    /// Gifts whose fields differ from what was sent (descriptions).
    pub altered: Vec<String>,
}

impl GiftReport {
    /// (tenant, transactionId) → count, for ids with more than one gift.
    pub fn duplicates(&self) -> BTreeMap<TenantKey, usize> {
        self.gifts
            .iter()
            .filter(|(_, count)| **count > 1)
            .map(|(key, count)| (key.clone(), *count))
            .collect()
    }

    /// Extra gifts beyond the first per transactionId.
    pub fn duplicate_gifts(&self) -> usize {
        self.gifts.values().map(|count| count - 1).sum()
    }
}

fn contact_emails(contact: &Value) -> BTreeSet<String> {
    let mut emails = BTreeSet::new();
    for individual in contact["contactIndividuals"]
        .as_array()
        .into_iter()
        .flatten()
    {
        for method in individual["contactMethods"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let Some(value) = method["value"].as_str() {
                emails.insert(value.to_ascii_lowercase());
            }
        }
    }
    emails
}

/// `None` when the gift says what was sent (amount, currency, date, transactionId, email).
fn gift_difference(
    truth: &ExpectedGift,
    gift: &Value,
    emails: Option<&BTreeSet<String>>,
) -> Option<String> {
    let decimals = steward::sources::amount::minor_unit_decimals(&truth.currency);
    let amount_minor = gift["amount"]
        .as_f64()
        .map(|amount| (amount * 10f64.powi(decimals as i32)).round() as i64);
    let mut wrong = Vec::new();
    if amount_minor != Some(truth.amount_minor) {
        wrong.push(format!("amount (want {} minor)", truth.amount_minor));
    }
    if gift["currencyCode"] != json!(truth.currency) {
        wrong.push(format!("currencyCode (want {})", truth.currency));
    }
    if gift["giftDate"] != json!(format!("{}T00:00:00", truth.gift_date)) {
        wrong.push(format!("giftDate (want {})", truth.gift_date));
    }
    if gift["transactionSource"] != "Stripe" {
        wrong.push("transactionSource".to_string());
    }
    if !emails.is_some_and(|emails| emails.contains(&truth.email.to_ascii_lowercase())) {
        wrong.push(format!("contact email (want {})", truth.email));
    }
    (!wrong.is_empty()).then(|| {
        format!(
            "{} {}: {} in {gift}",
            truth.tenant,
            truth.transaction_id,
            wrong.join(", ")
        )
    })
}

#[test]
fn crash_support_gift_difference_sees_each_altered_field() {
    // Goal: the body check is not vacuous — a changed amount, date, currency or contact email
    // is reported, and the unchanged gift is not.
    let truth = ExpectedGift {
        tenant: "t".into(),
        transaction_id: "pi_1".into(),
        amount_minor: 1234,
        currency: "USD".into(),
        gift_date: "2026-11-26".into(),
        email: "ann@example.org".into(),
    };
    let gift = json!({"transactionSource": "Stripe", "transactionId": "pi_1", "amount": 12.34,
                      "currencyCode": "USD", "giftDate": "2026-11-26T00:00:00"});
    let emails: BTreeSet<String> = ["ann@example.org".to_string()].into();
    assert_eq!(gift_difference(&truth, &gift, Some(&emails)), None);
    for (field, value) in [
        ("amount", json!(12.35)),
        ("currencyCode", json!("EUR")),
        ("giftDate", json!("2026-11-25T00:00:00")),
    ] {
        let mut altered = gift.clone();
        altered[field] = value;
        let difference = gift_difference(&truth, &altered, Some(&emails));
        assert!(
            difference.is_some_and(|text| text.contains(field)),
            "{field}"
        );
    }
    let other: BTreeSet<String> = ["bob@example.org".to_string()].into();
    assert!(gift_difference(&truth, &gift, Some(&other)).is_some());
}

#[tokio::test]
async fn crash_support_check_gifts_sees_lost_duplicate_and_foreign_gifts() {
    // Goal: the final check is not vacuous — against a real sandbox org (dedup off), an
    // obligation without a gift is lost, a transaction imported twice is a duplicate, and a
    // gift nobody generated is reported.
    let sandbox = ExternalSandbox::start();
    sandbox
        .create_org(
            "chk",
            "chk-key",
            360_000,
            json!({"dedup_transactions": false}),
        )
        .await;
    let gift = |id: &str| {
        json!({"transactionSource": "Stripe", "transactionId": id, "amount": "12.34",
               "currencyCode": "USD", "giftDate": "2026-11-26", "giftType": "Credit",
               "contact": {"firstName": "Ann", "lastName": "Lee", "email": "ann@example.org"}})
    };
    let transactions = json!({"transactionSource": "Stripe",
        "transactions": [gift("pi_twice"), gift("pi_twice"), gift("pi_foreign")]});
    let response = sandbox
        .client
        .post(format!("{}/api/v2/Gift/Transactions", sandbox.url))
        .bearer_auth("chk-key")
        .json(&transactions)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    sandbox.process("chk").await;
    let expected_gift = |id: &str| {
        Arc::new(ExpectedGift {
            tenant: "chk".into(),
            transaction_id: id.into(),
            amount_minor: 1234,
            currency: "USD".into(),
            gift_date: "2026-11-26".into(),
            email: "ann@example.org".into(),
        })
    };
    let key = |id: &str| ("chk".to_string(), id.to_string());
    let expected: HashMap<TenantKey, Arc<ExpectedGift>> = ["pi_twice", "pi_missing"]
        .into_iter()
        .map(|id| (key(id), expected_gift(id)))
        .collect();
    let obliged: BTreeMap<TenantKey, Arc<ExpectedGift>> = expected
        .iter()
        .map(|(key, gift)| (key.clone(), Arc::clone(gift)))
        .collect();
    let report = check_gifts(&sandbox, &["chk".to_string()], &obliged, &expected).await;
    assert_eq!(report.lost, vec![key("pi_missing")]);
    assert_eq!(report.duplicates(), [(key("pi_twice"), 2)].into());
    assert_eq!(report.duplicate_gifts(), 1);
    assert_eq!(report.altered.len(), 1, "{:?}", report.altered);
    assert!(
        report.altered[0].contains("nobody sent"),
        "{:?}",
        report.altered
    );
}
