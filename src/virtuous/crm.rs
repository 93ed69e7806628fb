//! [`VirtuousCrm`]: the runtime's [`Crm`] port over [`VirtuousClient`].
//!
//! One per tenant (its base URL and sealed-at-rest key, held here as [`SecretString`]s); the
//! `reqwest::Client` underneath is one per arbiter thread (pooled connections are bound to
//! the runtime that made them — STYLE.md), so the futures this returns run on the calling
//! arbiter and build their [`VirtuousClient`] handle there, which is cheap.

use std::cell::OnceCell;
use std::time::Duration;

use secrecy::SecretString;
use steward_actors::outcome::{ConnectionErrorKind, ResponseFacts};
use steward_actors::ports::{
    ChangePage, Crm, CrmGift, CrmGiftPage, CrmReply, CrmWrite, LocalFuture, RateLimitFacts,
};
use steward_actors::pull::{ChangeKind, ChangeOp};

use super::client::{CallResult, VirtuousClient, VirtuousError, READ_IDS_MAX};
use super::webhook::change_of;
use super::wire::{GiftSummary, RecordPage};

thread_local! {
    /// The pooled client of this arbiter thread (built on first use).
    static HTTP_CLIENT: OnceCell<Result<reqwest::Client, String>> = const { OnceCell::new() };
}

fn thread_http_client() -> Result<reqwest::Client, String> {
    HTTP_CLIENT.with(|cell| {
        cell.get_or_init(|| VirtuousClient::http_client().map_err(|err| err.to_string()))
            .clone()
    })
}

/// A tenant's Virtuous, as the actors call it.
pub struct VirtuousCrm {
    base_url: String,
    api_key: SecretString,
    /// Signs the webhook subscription Steward registers (`virtuous.webhook_secret`).
    webhook_secret: Option<SecretString>,
    request_timeout: Duration,
}

impl std::fmt::Debug for VirtuousCrm {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("VirtuousCrm")
            .field("base_url", &self.base_url)
            .field("api_key", &"[redacted]")
            .finish()
    }
}

impl VirtuousCrm {
    /// Checks the URL and key once, so a bad one is refused when the tenant is configured
    /// rather than on its first call.
    pub fn new(
        base_url: &str,
        api_key: SecretString,
        webhook_secret: Option<SecretString>,
        request_timeout: Duration,
    ) -> Result<VirtuousCrm, VirtuousError> {
        // A throwaway handle validates base URL and key without the thread's pool.
        VirtuousClient::new(reqwest::Client::new(), base_url, &api_key, request_timeout)?;
        Ok(VirtuousCrm {
            base_url: base_url.to_string(),
            api_key,
            webhook_secret,
            request_timeout,
        })
    }

    fn client(&self) -> Result<VirtuousClient, String> {
        let http = thread_http_client()?;
        VirtuousClient::new(http, &self.base_url, &self.api_key, self.request_timeout)
            .map_err(|err| err.to_string())
    }

    /// The client and the webhook secret a subscription call needs, or why it is not sent
    /// (a subscription without our secret could not be verified).
    fn subscription_client(&self) -> Result<(VirtuousClient, SecretString), String> {
        let client = self.client()?;
        let secret = self
            .webhook_secret
            .clone()
            .ok_or_else(|| NO_WEBHOOK_SECRET.to_string())?;
        Ok((client, secret))
    }
}

const NO_WEBHOOK_SECRET: &str = "virtuous.webhook_secret is not set";

/// A reply for a request that could not be made (no HTTP client, a body that is not JSON):
/// nothing was sent, so it is a plain connection failure (transient, never "unknown").
fn not_sent(reason: String, item_count: usize) -> CrmReply {
    let mut facts = ResponseFacts::unanswered(ConnectionErrorKind::Refused);
    facts.message = Some(format!("not sent: {reason}"));
    facts.item_count = item_count;
    CrmReply {
        facts,
        rate_limit: RateLimitFacts::default(),
        body: String::new(),
        elapsed_ms: 0,
    }
}

fn reply_of<T>(result: &CallResult<T>) -> CrmReply {
    CrmReply {
        facts: result.facts.clone(),
        rate_limit: RateLimitFacts {
            limit: result.rate_limit.limit,
            remaining: result.rate_limit.remaining,
            reset_unix_s: result.rate_limit.reset_unix_s,
        },
        body: result.body.clone(),
        elapsed_ms: result.elapsed.as_millis() as u64,
    }
}

fn gift_of(summary: &GiftSummary) -> CrmGift {
    CrmGift {
        virtuous_id: summary.id.to_string(),
        transaction_source: summary.transaction_source.clone(),
        transaction_id: summary.transaction_id.clone(),
        gift_type: summary.gift_type.clone(),
        reversed_gift_id: summary.reversed_gift_id.clone(),
        create_date_time_utc: summary.create_date_time_utc.clone(),
        amount: summary.amount.clone(),
        gift_date: summary.gift_day(),
        currency_code: summary.currency_code.clone(),
        project_codes: summary.gift_designations.clone(),
    }
}

/// A query page as changes (upserts: a row is the record as it is now). A row without an id
/// cannot be a change: it is skipped with a warning rather than failing the page, so one odd
/// row never stalls the poll (the caller pages by the rows it got back, `total` by Virtuous).
fn change_page_of(kind: ChangeKind, page: &RecordPage) -> ChangePage {
    let changes = page
        .list
        .iter()
        .filter_map(|row| match change_of(kind, ChangeOp::Upsert, row) {
            Ok(change) => Some(change),
            Err(reason) => {
                tracing::warn!(kind = kind.name(), reason, "virtuous query row skipped");
                None
            }
        })
        .collect();
    ChangePage {
        changes,
        total: page.total,
    }
}

/// The UTC calendar day of a Unix millisecond time.
fn utc_day(at_ms: u64) -> jiff::civil::Date {
    let timestamp =
        jiff::Timestamp::from_millisecond(at_ms as i64).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    timestamp.to_zoned(jiff::tz::TimeZone::UTC).date()
}

impl Crm for VirtuousCrm {
    fn write(&self, request: CrmWrite) -> LocalFuture<CrmReply> {
        let item_count = request.item_count();
        let client = self.client();
        Box::pin(async move {
            let client = match client {
                Ok(client) => client,
                Err(reason) => return not_sent(reason, item_count),
            };
            let result = match &request {
                CrmWrite::GiftTransactions {
                    transaction_source,
                    bodies,
                } => {
                    client
                        .post_gift_transactions(transaction_source, bodies)
                        .await
                }
                CrmWrite::ContactTransaction { body } => {
                    client.post_contact_transaction(body).await
                }
                CrmWrite::ContactBatch {
                    reference_source,
                    bodies,
                } => client.post_contact_batch(reference_source, bodies).await,
                CrmWrite::ReversingTransaction { body } => {
                    client.post_reversing_transaction(body).await
                }
            };
            match result {
                Ok(result) => reply_of(&result),
                Err(err) => not_sent(err.to_string(), item_count),
            }
        })
    }

    fn query_gifts(
        &self,
        transaction_source: &str,
        created_on_or_after_ms: u64,
        skip: u64,
        take: u32,
    ) -> LocalFuture<(CrmReply, Option<CrmGiftPage>)> {
        let client = self.client();
        let transaction_source = transaction_source.to_string();
        Box::pin(async move {
            let client = match client {
                Ok(client) => client,
                Err(reason) => return (not_sent(reason, 0), None),
            };
            let day = utc_day(created_on_or_after_ms);
            match client
                .query_full_gifts(&transaction_source, day, skip, take)
                .await
            {
                Ok(result) => {
                    let page = result.value.as_ref().map(|page| CrmGiftPage {
                        gifts: page.list.iter().map(gift_of).collect(),
                        total: page.total,
                    });
                    (reply_of(&result), page)
                }
                Err(err) => (not_sent(err.to_string(), 0), None),
            }
        })
    }

    fn gift_by_transaction(
        &self,
        transaction_source: &str,
        transaction_id: &str,
    ) -> LocalFuture<(CrmReply, Option<Option<CrmGift>>)> {
        let client = self.client();
        let transaction_source = transaction_source.to_string();
        let transaction_id = transaction_id.to_string();
        Box::pin(async move {
            let client = match client {
                Ok(client) => client,
                Err(reason) => return (not_sent(reason, 0), None),
            };
            let result = client
                .gift_by_transaction(&transaction_source, &transaction_id)
                .await;
            let gift = result
                .value
                .as_ref()
                .map(|found| found.as_ref().map(gift_of));
            (reply_of(&result), gift)
        })
    }

    fn read_contact(&self, id: &str) -> LocalFuture<(CrmReply, Option<Option<serde_json::Value>>)> {
        let client = self.client();
        let id = id.to_string();
        Box::pin(async move {
            let client = match client {
                Ok(client) => client,
                Err(reason) => return (not_sent(reason, 0), None),
            };
            let result = client.contact_by_id(&id).await;
            let contact = result.value.clone();
            (reply_of(&result), contact)
        })
    }

    fn put_contact(&self, id: &str, body: String) -> LocalFuture<CrmReply> {
        let client = self.client();
        let id = id.to_string();
        Box::pin(async move {
            let client = match client {
                Ok(client) => client,
                Err(reason) => return not_sent(reason, 1),
            };
            reply_of(&client.put_contact(&id, body).await)
        })
    }

    fn register_webhook(
        &self,
        payload_url: &str,
        flags: &[String],
    ) -> LocalFuture<(CrmReply, Option<String>)> {
        let ready = self.subscription_client();
        let payload_url = payload_url.to_string();
        let flags = flags.to_vec();
        Box::pin(async move {
            let (client, secret) = match ready {
                Ok(ready) => ready,
                Err(reason) => return (not_sent(reason, 1), None),
            };
            let result = client.create_webhook(&payload_url, &secret, &flags).await;
            let id = result.value.clone();
            (reply_of(&result), id)
        })
    }

    fn update_webhook(
        &self,
        subscription_id: &str,
        payload_url: &str,
        flags: &[String],
    ) -> LocalFuture<CrmReply> {
        // The PUT replaces the whole subscription, secret included: without ours it would be
        // sent unsigned, so it is not sent at all.
        let ready = self.subscription_client();
        let subscription_id = subscription_id.to_string();
        let payload_url = payload_url.to_string();
        let flags = flags.to_vec();
        Box::pin(async move {
            let (client, secret) = match ready {
                Ok(ready) => ready,
                Err(reason) => return not_sent(reason, 1),
            };
            let result = client
                .update_webhook(&subscription_id, &payload_url, &secret, &flags)
                .await;
            reply_of(&result)
        })
    }

    fn query_contacts_after(
        &self,
        after_id: u64,
        take: u32,
    ) -> LocalFuture<(CrmReply, Option<ChangePage>)> {
        let client = self.client();
        Box::pin(async move {
            let client = match client {
                Ok(client) => client,
                Err(reason) => return (not_sent(reason, 0), None),
            };
            page_answer(
                ChangeKind::Contact,
                client.contacts_after(after_id, take).await,
            )
        })
    }

    fn query_modified(
        &self,
        kind: ChangeKind,
        modified_on_or_after_ms: u64,
        skip: u64,
        take: u32,
    ) -> LocalFuture<(CrmReply, Option<ChangePage>)> {
        let client = self.client();
        Box::pin(async move {
            let client = match client {
                Ok(client) => client,
                Err(reason) => return (not_sent(reason, 0), None),
            };
            let day = utc_day(modified_on_or_after_ms);
            page_answer(kind, client.query_modified(kind, day, skip, take).await)
        })
    }

    fn read_records(
        &self,
        kind: ChangeKind,
        ids: &[String],
    ) -> LocalFuture<(CrmReply, Option<ChangePage>)> {
        debug_assert!(
            ids.len() <= READ_IDS_MAX,
            "the caller batches re-reads by {READ_IDS_MAX}"
        );
        let client = self.client();
        let ids = ids.to_vec();
        Box::pin(async move {
            let client = match client {
                Ok(client) => client,
                Err(reason) => return (not_sent(reason, 0), None),
            };
            match client.read_records(kind, &ids).await {
                Ok(result) => {
                    let page = result.value.as_ref().map(|page| change_page_of(kind, page));
                    (reply_of(&result), page)
                }
                Err(err) => (not_sent(err.to_string(), 0), None),
            }
        })
    }

    fn organization_current(&self) -> LocalFuture<(CrmReply, Option<String>)> {
        let client = self.client();
        Box::pin(async move {
            let client = match client {
                Ok(client) => client,
                Err(reason) => return (not_sent(reason, 0), None),
            };
            let result = client.organization_current().await;
            let name = result
                .value
                .as_ref()
                .map(|org| org.name.clone().unwrap_or_else(|| org.id.clone()));
            (reply_of(&result), name)
        })
    }
}

/// A query's answer as the runtime sees it: the reply and its page of changes (`None` when
/// the answer was not a readable page, or the query was not sent).
fn page_answer(
    kind: ChangeKind,
    result: Result<CallResult<RecordPage>, VirtuousError>,
) -> (CrmReply, Option<ChangePage>) {
    match result {
        Ok(result) => {
            let page = result.value.as_ref().map(|page| change_page_of(kind, page));
            (reply_of(&result), page)
        }
        Err(err) => (not_sent(err.to_string(), 0), None),
    }
}
