//! Virtuous wire models the client reads back (the shapes `docs/sandbox.md` simulates). Only the fields the engine
//! uses; unknown fields are ignored because the real API adds fields without notice.

use serde::{Deserialize, Deserializer, Serialize};

/// A gift as `FullGift` queries and `GET /api/Gift/{source}/{id}` return it (the fields
/// confirmation needs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GiftSummary {
    pub id: i64,
    #[serde(default)]
    pub transaction_source: Option<String>,
    #[serde(default, deserialize_with = "text_or_number")]
    pub transaction_id: Option<String>,
    /// `Credit`, `EFT`…; `ReversingTransaction` for a reversal (confirmation skips those).
    #[serde(default)]
    pub gift_type: Option<String>,
    /// For a reversal: the gift it reverses (number or text).
    #[serde(default, deserialize_with = "text_or_number")]
    pub reversed_gift_id: Option<String>,
    /// ISO 8601 UTC, as sent (kept as text: the format is [D]).
    #[serde(default)]
    pub create_date_time_utc: Option<String>,
    /// Major units, a number or text (kept as text: money is never a float here).
    #[serde(default, deserialize_with = "text_or_number")]
    pub amount: Option<String>,
    /// `2026-11-26T00:00:00`, `2026-11-26` or `11/26/2026` (read into a day by
    /// [`GiftSummary::gift_day`]).
    #[serde(default, deserialize_with = "text_or_number")]
    pub gift_date: Option<String>,
    #[serde(default, deserialize_with = "text_or_number")]
    pub currency_code: Option<String>,
    /// Each designation's project code; a designation without one, or a value that is not
    /// a list of objects, gives none (a page never fails on it).
    #[serde(default, deserialize_with = "designation_codes")]
    pub gift_designations: Vec<String>,
}

impl GiftSummary {
    /// `giftDate` as a day `YYYY-MM-DD`.
    pub fn gift_day(&self) -> Option<String> {
        self.gift_date
            .as_deref()
            .and_then(steward_actors::money::canonical_day)
    }
}

/// `giftDesignations[{projectId, projectCode, amountDesignated}]` → the project codes.
fn designation_codes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    let value = Option::<serde_json::Value>::deserialize(deserializer)?;
    let Some(serde_json::Value::Array(designations)) = value else {
        return Ok(Vec::new());
    };
    Ok(designations
        .iter()
        .filter_map(|designation| match designation.get("projectCode") {
            Some(serde_json::Value::String(code)) if !code.is_empty() => Some(code.clone()),
            Some(serde_json::Value::Number(code)) => Some(code.to_string()),
            _ => None,
        })
        .collect())
}

/// One page of a query: `{"list": [...], "total": n}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GiftPage {
    pub list: Vec<GiftSummary>,
    #[serde(default)]
    pub total: u64,
}

/// `GET /api/Organization/Current` (shape assumed: `{id, name, isActive}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Organization {
    #[serde(deserialize_with = "required_text_or_number")]
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub is_active: Option<bool>,
}

/// The webhook subscription flags (`POST|PUT /api/Webhook`): Virtuous's published list plus
/// `contactDelete` (unpublished; contact pull asks for it). A subscription body sends each of
/// them — `true` when asked for, `false` otherwise — because a `PUT` replaces the subscription.
pub const WEBHOOK_FLAGS: [&str; 16] = [
    "contactCreate",
    "contactUpdate",
    "contactDelete",
    "giftCreate",
    "giftUpdate",
    "giftDelete",
    "projectCreate",
    "projectUpdate",
    "projectDelete",
    "formSubmission",
    "contactNoteCreate",
    "contactNoteUpdate",
    "contactNoteDelete",
    "eventCreate",
    "eventUpdate",
    "eventDelete",
];

/// One page of a `FullGift`/`FullContact` query read as whole records (pull keeps each row's
/// full JSON): `{"list": [{…}], "total": n}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RecordPage {
    pub list: Vec<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    pub total: u64,
}

/// The answer to `POST /api/Webhook`: the subscription's id (kept as text; no list endpoint
/// exists, so the caller must store it).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct WebhookCreated {
    #[serde(deserialize_with = "required_text_or_number")]
    pub id: String,
}

/// Ids arrive as numbers from some endpoints and text from others: accept both as text.
fn text_or_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    let value = Option::<serde_json::Value>::deserialize(deserializer)?;
    Ok(match value {
        Some(serde_json::Value::String(text)) => Some(text),
        Some(serde_json::Value::Number(number)) => Some(number.to_string()),
        _ => None,
    })
}

fn required_text_or_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    text_or_number(deserializer)?
        .ok_or_else(|| serde::de::Error::custom("expected an id (text or number)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gifts_and_ids_decode_tolerantly() {
        // Goal: FullGift pages decode with extra fields; ids decode from numbers and text.
        let page: GiftPage = serde_json::from_str(
            r#"{"list":[{"id":7,"transactionSource":"stripe","transactionId":"pi_1",
                "createDateTimeUtc":"2026-11-26T18:00:00.000Z","amount":12.5},
               {"id":8,"transactionId":42,"giftType":"ReversingTransaction","reversedGiftId":7}],"total":2}"#,
        )
        .unwrap();
        assert_eq!(page.total, 2);
        assert_eq!(page.list[0].transaction_id.as_deref(), Some("pi_1"));
        assert_eq!(page.list[1].transaction_id.as_deref(), Some("42"));
        assert_eq!(page.list[1].transaction_source, None);
        assert_eq!(page.list[0].gift_type, None);
        assert_eq!(
            page.list[1].gift_type.as_deref(),
            Some("ReversingTransaction")
        );
        assert_eq!(page.list[1].reversed_gift_id.as_deref(), Some("7"));
        let org: Organization =
            serde_json::from_str(r#"{"id":3,"name":"hope","isActive":true}"#).unwrap();
        assert_eq!(org.id, "3");
        let records: RecordPage = serde_json::from_str(
            r#"{"list":[{"id":7,"customFields":[{"name":"a","value":"1"}]}],"total":9}"#,
        )
        .unwrap();
        assert_eq!(
            (records.list[0]["id"].as_i64(), records.total),
            (Some(7), 9)
        );
        assert!(serde_json::from_str::<RecordPage>(r#"{"list":[7],"total":1}"#).is_err());
        let created: WebhookCreated = serde_json::from_str(r#"{"id":"wh-9"}"#).unwrap();
        let money: GiftPage = serde_json::from_str(
            r#"{"list":[{"id":1,"amount":-12.5,"giftDate":"2026-11-26T00:00:00","currencyCode":"USD",
                "giftDesignations":[{"projectId":3,"projectCode":"SPR","amountDesignated":12.5},{"projectId":4}]},
               {"id":2,"amount":"7.00","giftDate":"11/26/2026","giftDesignations":null},
               {"id":3,"giftDate":"soon","giftDesignations":{"odd":true}}],"total":3}"#,
        )
        .unwrap();
        let first = &money.list[0];
        assert_eq!(first.amount.as_deref(), Some("-12.5"));
        assert_eq!(first.gift_day().as_deref(), Some("2026-11-26"));
        assert_eq!(first.currency_code.as_deref(), Some("USD"));
        assert_eq!(first.gift_designations, ["SPR"]);
        assert_eq!(money.list[1].gift_day().as_deref(), Some("2026-11-26"));
        assert!(money.list[1].gift_designations.is_empty());
        assert_eq!(
            (money.list[2].gift_day(), money.list[2].amount.clone()),
            (None, None)
        );
        assert_eq!(created.id, "wh-9");
        assert!(serde_json::from_str::<WebhookCreated>(r#"{"id":null}"#).is_err());
    }
}
