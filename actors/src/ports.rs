//! Traits the runtime talks through (ARCHITECTURE.md): the clock and Virtuous ([`Crm`];
//! implemented over reqwest by the `steward` crate, by scripted fakes in tests).
//!
//! [`Poller`] is a polled source (pattern 2). Destination joins this file with pull. The store is no port:
//! every tenant runs on the real sled store (`TenantShared::tenant_store`), and the
//! runtime's unit tests open one in a temp dir (issue 10: a port is whole or absent).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock milliseconds since the Unix epoch. Everything that compares times (progress
/// timestamps, the budget window) reads it through this trait so tests can drive time.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> u64;
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        now_ms()
    }
}

/// Wall-clock milliseconds since the Unix epoch: the one reading of the system clock, for
/// code that takes no [`Clock`] (the `steward` crate, tests).
pub fn now_ms() -> u64 {
    // A clock before 1970 is a broken host; 0 keeps arithmetic defined instead of panicking.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

/// A clock that only moves when told to (unit tests).
#[derive(Debug, Default)]
pub struct ManualClock {
    now_ms: AtomicU64,
}

impl ManualClock {
    pub fn new(start_ms: u64) -> ManualClock {
        ManualClock {
            now_ms: AtomicU64::new(start_ms),
        }
    }
    pub fn advance_ms(&self, delta_ms: u64) {
        self.now_ms.fetch_add(delta_ms, Ordering::SeqCst);
    }
    pub fn set_ms(&self, now_ms: u64) {
        self.now_ms.store(now_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}

/// A future the actors await on their own arbiter (no `Send` needed).
pub type LocalFuture<T> = Pin<Box<dyn Future<Output = T> + 'static>>;

/// `X-RateLimit-*` of one Virtuous answer (all absent when the answer had none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RateLimitFacts {
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    /// `X-RateLimit-Reset`: the Unix second at which the oldest call in the window expires.
    pub reset_unix_s: Option<u64>,
}

/// What one Virtuous call produced, with no HTTP types (the `steward` crate maps reqwest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrmReply {
    /// Status, connection error, `Retry-After`, `modelState` keys… (classification input).
    pub facts: crate::outcome::ResponseFacts,
    pub rate_limit: RateLimitFacts,
    /// The answer's body as text (dead-letter reasons, debugging); may be empty.
    pub body: String,
    pub elapsed_ms: u64,
}

/// One write Steward sends to Virtuous. Bodies are the queued entries' exact JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CrmWrite {
    /// `POST /api/v2/Gift/Transactions` — up to 100 gift transactions, one
    /// `transactionSource` (a batch-level field).
    GiftTransactions {
        transaction_source: String,
        bodies: Vec<String>,
    },
    /// `POST /api/Contact/Transaction` — one contact transaction (`referenceSource` and
    /// `referenceId` inside the body).
    ContactTransaction { body: String },
    /// `POST /api/Contact/Batch` — up to 100 contact transactions, one per contact record
    /// (its queued updates merged), one `referenceSource` (a batch-level field; each body
    /// also carries its own `referenceSource` and `referenceId`).
    ContactBatch {
        reference_source: String,
        bodies: Vec<String>,
    },
    /// `POST /api/Gift/ReversingTransaction` — `{reversedGiftId, giftDate, notes}`.
    ReversingTransaction { body: String },
}

impl CrmWrite {
    /// Items carried (classification needs it: a 413 or a 400 on one item is permanent).
    pub fn item_count(&self) -> usize {
        match self {
            CrmWrite::GiftTransactions { bodies, .. } | CrmWrite::ContactBatch { bodies, .. } => {
                bodies.len()
            }
            CrmWrite::ContactTransaction { .. } | CrmWrite::ReversingTransaction { .. } => 1,
        }
    }
}

/// A gift as Virtuous reports it (FullGift query, lookup, webhook).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CrmGift {
    /// Virtuous gift id, as text.
    pub virtuous_id: String,
    pub transaction_source: Option<String>,
    pub transaction_id: Option<String>,
    /// `giftType` (a reversal is `ReversingTransaction`).
    pub gift_type: Option<String>,
    /// For reversals: the gift they reverse, when Virtuous says.
    pub reversed_gift_id: Option<String>,
    pub create_date_time_utc: Option<String>,
    /// `amount` in major units, as Virtuous wrote it (a number or text, kept as text;
    /// money reconciliation converts it exactly).
    pub amount: Option<String>,
    /// `giftDate` as a day `YYYY-MM-DD` (`None` when absent or unreadable).
    pub gift_date: Option<String>,
    /// `currencyCode`, as given.
    pub currency_code: Option<String>,
    /// The project code of each designation (`giftDesignations[].projectCode`), in order.
    pub project_codes: Vec<String>,
}

/// One page of a gift query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CrmGiftPage {
    pub gifts: Vec<CrmGift>,
    /// Total matches of the query (all pages).
    pub total: u64,
}

pub use crate::pull::ChangePage;

/// Virtuous as the runtime sees it (ARCHITECTURE.md `Crm`). Implemented by the `steward`
/// crate over reqwest; by fakes in unit tests. Every method is one HTTP call: the caller
/// draws it from the tenant's budget *before* calling (invariant 4). Futures run on the
/// tenant's arbiter. Implementations never panic and never retry on their own.
pub trait Crm: Send + Sync + 'static {
    fn write(&self, request: CrmWrite) -> LocalFuture<CrmReply>;
    /// `POST /api/Gift/Query/FullGift?skip=&take=` with `Transaction Source Is
    /// transaction_source` AND `Create Date OnOrAfter` the UTC day of `created_on_or_after_ms`,
    /// oldest id first. `None` page when the answer was not a readable page.
    fn query_gifts(
        &self,
        transaction_source: &str,
        created_on_or_after_ms: u64,
        skip: u64,
        take: u32,
    ) -> LocalFuture<(CrmReply, Option<CrmGiftPage>)>;
    /// `GET /api/Gift/{transaction_source}/{transaction_id}`: `Some(None)` on 404 (pending,
    /// in review or unknown), `None` when the answer was unreadable.
    fn gift_by_transaction(
        &self,
        transaction_source: &str,
        transaction_id: &str,
    ) -> LocalFuture<(CrmReply, Option<Option<CrmGift>>)>;
    /// `POST /api/Webhook` subscribing `payload_url` to the events named by `flags`
    /// (`giftCreate`, `contactNoteDelete`… — every other flag false), active, signed with the
    /// tenant's webhook secret; the subscription id when created.
    fn register_webhook(
        &self,
        payload_url: &str,
        flags: &[String],
    ) -> LocalFuture<(CrmReply, Option<String>)>;
    /// `PUT /api/Webhook/{subscription_id}`: the same subscription (same id), now for
    /// `payload_url` and `flags`, always `active: true` (a subscription is never deactivated).
    fn update_webhook(
        &self,
        subscription_id: &str,
        payload_url: &str,
        flags: &[String],
    ) -> LocalFuture<CrmReply>;
    /// `POST /api/{Gift/Query/FullGift | Contact/Query/FullContact}?skip=&take=` with
    /// `Last Modified Date OnOrAfter` the UTC day (`MM/DD/YYYY`) of `modified_on_or_after_ms`,
    /// sorted by `Last Modified Date` ascending: the backstop poll. Only queryable kinds.
    /// `None` page when the answer was not a readable page.
    fn query_modified(
        &self,
        kind: crate::pull::ChangeKind,
        modified_on_or_after_ms: u64,
        skip: u64,
        take: u32,
    ) -> LocalFuture<(CrmReply, Option<ChangePage>)>;
    /// `POST /api/Contact/Query/FullContact?skip=0&take=` with `Contact Id GreaterThan
    /// after_id`, sorted by `Id`: every contact, page after page, on a key that edits made
    /// during the listing cannot shift (the cross-match). `total` is what remains after
    /// `after_id`. `None` page when the answer was not a readable page.
    fn query_contacts_after(
        &self,
        after_id: u64,
        take: u32,
    ) -> LocalFuture<(CrmReply, Option<ChangePage>)>;
    /// One call reading the full records of `ids` (a `FullGift`/`FullContact` query with
    /// `Gift Id`/`Contact Id` `IsAnyOf`, at most 100 ids): the re-read of webhooks that
    /// lacked fields. Ids not returned no longer exist (or are not visible).
    fn read_records(
        &self,
        kind: crate::pull::ChangeKind,
        ids: &[String],
    ) -> LocalFuture<(CrmReply, Option<ChangePage>)>;
    /// `GET /api/Organization/Current` (connection test): the organization name when read.
    fn organization_current(&self) -> LocalFuture<(CrmReply, Option<String>)>;
    /// `GET /api/Contact/{id}`: `Some(Some(contact))` when read, `Some(None)` on 404 (gone,
    /// archived, merged away), `None` when the answer was unreadable. Two-way writes read the
    /// contact before they change it.
    fn read_contact(&self, id: &str) -> LocalFuture<(CrmReply, Option<Option<serde_json::Value>>)>;
    /// `PUT /api/Contact/{id}` with the full contact `body` (read, then changed by two-way
    /// sync: `two_way::fields::apply_to_virtuous`).
    fn put_contact(&self, id: &str, body: String) -> LocalFuture<CrmReply>;
}

/// The Crm of a tenant whose Virtuous client cannot be built (no key, embedded sandbox
/// missing): every call answers "needs operator" without sending anything.
#[derive(Debug, Clone)]
pub struct UnconfiguredCrm {
    pub reason: String,
}

impl UnconfiguredCrm {
    pub(crate) fn reply(&self) -> CrmReply {
        // Nothing was sent, and no status came back: not a 401 (the key may be fine). The
        // classifier makes it "needs operator" (pause + alert `crm_misconfigured`).
        let mut facts = crate::outcome::ResponseFacts::unanswered(
            crate::outcome::ConnectionErrorKind::NotConfigured,
        );
        facts.message = Some(format!("not sent: {}", self.reason));
        CrmReply {
            facts,
            rate_limit: RateLimitFacts::default(),
            body: String::new(),
            elapsed_ms: 0,
        }
    }
}

impl Crm for UnconfiguredCrm {
    fn write(&self, _request: CrmWrite) -> LocalFuture<CrmReply> {
        let reply = self.reply();
        Box::pin(async move { reply })
    }
    fn query_gifts(
        &self,
        _transaction_source: &str,
        _created_on_or_after_ms: u64,
        _skip: u64,
        _take: u32,
    ) -> LocalFuture<(CrmReply, Option<CrmGiftPage>)> {
        let reply = self.reply();
        Box::pin(async move { (reply, None) })
    }
    fn gift_by_transaction(
        &self,
        _transaction_source: &str,
        _transaction_id: &str,
    ) -> LocalFuture<(CrmReply, Option<Option<CrmGift>>)> {
        let reply = self.reply();
        Box::pin(async move { (reply, None) })
    }
    fn register_webhook(
        &self,
        _payload_url: &str,
        _flags: &[String],
    ) -> LocalFuture<(CrmReply, Option<String>)> {
        let reply = self.reply();
        Box::pin(async move { (reply, None) })
    }
    fn update_webhook(
        &self,
        _subscription_id: &str,
        _payload_url: &str,
        _flags: &[String],
    ) -> LocalFuture<CrmReply> {
        let reply = self.reply();
        Box::pin(async move { reply })
    }
    fn query_modified(
        &self,
        _kind: crate::pull::ChangeKind,
        _modified_on_or_after_ms: u64,
        _skip: u64,
        _take: u32,
    ) -> LocalFuture<(CrmReply, Option<ChangePage>)> {
        let reply = self.reply();
        Box::pin(async move { (reply, None) })
    }
    fn read_records(
        &self,
        _kind: crate::pull::ChangeKind,
        _ids: &[String],
    ) -> LocalFuture<(CrmReply, Option<ChangePage>)> {
        let reply = self.reply();
        Box::pin(async move { (reply, None) })
    }
    fn organization_current(&self) -> LocalFuture<(CrmReply, Option<String>)> {
        let reply = self.reply();
        Box::pin(async move { (reply, None) })
    }
    fn query_contacts_after(
        &self,
        _after_id: u64,
        _take: u32,
    ) -> LocalFuture<(CrmReply, Option<ChangePage>)> {
        let reply = self.reply();
        Box::pin(async move { (reply, None) })
    }
    fn read_contact(
        &self,
        _id: &str,
    ) -> LocalFuture<(CrmReply, Option<Option<serde_json::Value>>)> {
        let reply = self.reply();
        Box::pin(async move { (reply, None) })
    }
    fn put_contact(&self, _id: &str, _body: String) -> LocalFuture<CrmReply> {
        let reply = self.reply();
        Box::pin(async move { reply })
    }
}

/// What a poller is asked for: one page of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollRequest {
    /// Records whose source version time is at or after this (ms since the epoch): the
    /// checkpoint's time minus the overlap window. 0 = from the beginning.
    pub since_ms: u64,
    /// `None`: the first page of a run. `Some`: the cursor the previous page of this run
    /// returned (it may carry the whole query; `since_ms` is then only informative).
    pub cursor: Option<String>,
    /// The source's own position as the store holds it durably (a Postgres slot's LSN and
    /// snapshot progress: [`PollPage::position`]); `None` before a page has set one. A
    /// source confirms it to its server only now, since the store already has it.
    pub position: Option<String>,
    /// A backfill job's listing asks, not a run: a source without a listing answers
    /// `Failed`.
    pub listing: bool,
}

/// One record of a polled page.
#[derive(Debug, Clone)]
pub struct PolledItem {
    /// The record's id at the source (Constant Contact contact id, Mailchimp member id, …).
    pub record_id: String,
    /// The source's version time of the record (`updated_at`, `last_changed`), ms since the
    /// epoch: the checkpoint's time.
    pub version_ms: u64,
    /// The entries this version becomes, with idempotency keys of the source fact
    /// `(source, object, id, version)` (an empty list: nothing to send), or why the record
    /// was rejected (kept in the run report, the checkpoint still moves past it).
    pub entries: Result<Vec<crate::store::NewEntry>, String>,
}

/// One page of a poll run.
#[derive(Debug, Clone, Default)]
pub struct PollPage {
    pub items: Vec<PolledItem>,
    /// The next page's cursor; `None` ends the run.
    pub next_cursor: Option<String>,
    /// Calls this page cost against the source's own limits.
    pub calls: u32,
    /// The source's own position after this page (kept in the poller's progress, written
    /// in the same atomic write as the page's entries, and handed back in the next
    /// request); `None` keeps the stored one.
    pub position: Option<String>,
    /// Alerts the page raises (a deleted gift row, a lost slot), before its entries are
    /// written: a crash repeats them, never loses them.
    pub alerts: Vec<AlertNote>,
    /// Alert codes the page resolves (a slot's lag back under its limit).
    pub resolve: Vec<String>,
    /// What the source says of itself now (a slot's lag), shown with the poller.
    pub source_status: Option<SourceStatus>,
}

/// An alert for staff (also `source_fact::AlertNote`: defined here, below every module that
/// raises one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertNote {
    pub code: String,
    pub message: String,
}

/// A source's own state as its adapter last read it (a Postgres slot: lag and WAL status).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SourceStatus {
    /// The replication slot read.
    pub slot: Option<String>,
    /// The position the source's server holds for Steward (`confirmed_flush_lsn`).
    pub confirmed: Option<String>,
    /// How far the server's newest write is past that position, in bytes.
    pub lag_bytes: Option<u64>,
    /// The slot's `wal_status` (`reserved`, `extended`, `unreserved`, `lost`).
    pub wal_status: Option<String>,
    pub checked_at_ms: u64,
}

/// The alias a gift entry carries to remember the fingerprint (amount and date) it was
/// first captured with. A later version of the same gift fact carries its own; when the
/// record exists without that alias, the gift changed at the source after capture: the
/// polling machinery raises [`GIFT_CHANGED_ALERT`] (never a second gift).
pub fn gift_fingerprint_alias(source: &str, source_id: &str, fingerprint: &str) -> String {
    format!("{source}:{FINGERPRINT_MARK}{source_id}:{fingerprint}")
}

/// The marker inside [`gift_fingerprint_alias`].
pub const FINGERPRINT_MARK: &str = "fp:";

/// Alert: a captured gift's amount or date changed at its source.
pub const GIFT_CHANGED_ALERT: &str = "source_gift_changed";

/// What one fetch produced. No HTTP types: the adapters (`steward` crate) classify.
#[derive(Debug, Clone)]
pub enum PollFetch {
    Page(PollPage),
    /// The source's short-term limit answered (Constant Contact `throttled`, Mailchimp's
    /// connection limit): the same page again after the wait. Not a failure.
    Throttled {
        retry_after_ms: u64,
        calls: u32,
    },
    /// The source's daily quota is spent (Constant Contact `quota_exceeded`): the poller
    /// pauses with its progress saved until the quota resets. Not a failure.
    QuotaExhausted {
        calls: u32,
    },
    /// Credentials refused (OAuth refresh refused, 401/403): the poller stops until an
    /// operator fixes them (alert).
    AuthRefused {
        message: String,
    },
    /// Anything else (5xx, connection error, an unreadable page): the run fails; three
    /// failed runs in a row pause the poller with an alert.
    Failed {
        message: String,
        calls: u32,
    },
}

/// A polled source (pattern 2): "fetch the page after this checkpoint". Implemented per
/// source by the `steward` crate (Constant Contact, Mailchimp members, generic JSON feeds);
/// by scripted fakes in unit tests. Capture calls it one page at a time (never two fetches
/// of one poller at once), counts its calls against the source's limits, and writes each
/// page's entries with the checkpoint in one atomic store write. Implementations never
/// retry on their own and never panic; the future runs on the tenant's arbiter.
pub trait Poller: Send + Sync + 'static {
    fn fetch(&self, request: PollRequest) -> LocalFuture<PollFetch>;
}

/// A partner destination (adapters in the `steward` crate: `webhook`, `postgres`, `ndjson`).
/// Calls for one destination never overlap: the delivery loop awaits each before the next.
/// Futures run on the tenant's arbiter. Implementations never panic.
pub trait Destination: Send + Sync + 'static {
    /// Delivers `items` (in `seq` order, at most the spec's `batch_max`; never empty).
    /// Delivery is at least once: the same items may come again after a crash or a retry,
    /// so the effect must be idempotent (upsert by id, `webhook-id`, …).
    fn deliver(
        &self,
        items: Vec<crate::pull::StoredChange>,
    ) -> LocalFuture<crate::pull::DeliveryAnswer>;
    /// Called about once a second, and after each delivery: a buffering destination commits
    /// what it holds once due (NDJSON's time rotation). Others answer the default.
    fn settle(&self, _now_ms: u64) -> LocalFuture<crate::pull::DeliveryAnswer> {
        Box::pin(async { crate::pull::DeliveryAnswer::default() })
    }
    /// Forget anything delivered but not committed (a buffered file): the loop is about to
    /// read again from the checkpoint (a new generation, a retry, a replay).
    fn reset(&self) -> LocalFuture<()> {
        Box::pin(async {})
    }
}

/// A configured destination: its name, kind, limits, and its port.
#[derive(Clone)]
pub struct DestinationSpec {
    /// The key under `pull.destinations` (checkpoint `dest:{name}`).
    pub name: String,
    /// `webhook`, `postgres` or `ndjson` (the metric label).
    pub kind: String,
    /// Most changes per `deliver` call.
    pub batch_max: usize,
    pub destination: std::sync::Arc<dyn Destination>,
}

impl std::fmt::Debug for DestinationSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DestinationSpec")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("batch_max", &self.batch_max)
            .finish_non_exhaustive()
    }
}

/// A partner contact as a [`PartnerWriter`] reads it back.
#[derive(Debug, Clone, PartialEq)]
pub struct PartnerContact {
    /// The partner's id of the person (Mailchimp: `unique_email_id`).
    pub id: String,
    /// Canonical fields (`two_way::fields`).
    pub fields: crate::two_way::Fields,
    /// The partner's change time (ms), when it says.
    pub version_ms: Option<u64>,
}

/// What a partner write or read led to.
#[derive(Debug, Clone, PartialEq)]
pub enum PartnerAnswer<T> {
    Done(T),
    /// Try again later (timeouts, 429, 5xx); `after_ms` when the partner says.
    Retry {
        reason: String,
        after_ms: Option<u64>,
    },
    /// The partner refused it for good (400, 404 on a list, …): a dead letter.
    Refused {
        reason: String,
    },
}

/// One page of a partner's contacts (the cross-match lists them all).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PartnerPage {
    pub contacts: Vec<PartnerContact>,
    /// `None`: the listing is done.
    pub next_cursor: Option<String>,
}

/// A partner's contacts write API (pattern 4; adapters in the `steward` crate: Mailchimp
/// members, generic platforms). Writes are idempotent upserts by id, so a write repeated
/// after a crash changes nothing. Calls of one pair never overlap (its loop awaits each).
/// Futures run on the tenant's arbiter; implementations never retry on their own and never
/// panic.
pub trait PartnerWriter: Send + Sync + 'static {
    /// Sets `set` on the partner contact `partner_id` (`None`: creates one). `current` is
    /// what the partner held as far as Steward knows (Mailchimp finds a member by the hash
    /// of its current email). Answers the contact as the partner holds it now.
    fn upsert(
        &self,
        partner_id: Option<&str>,
        current: &crate::two_way::Fields,
        set: &crate::two_way::Fields,
    ) -> LocalFuture<PartnerAnswer<PartnerContact>>;
    /// One page of every contact (`cursor` from the previous page; `None` = the first).
    fn list(&self, cursor: Option<String>) -> LocalFuture<PartnerAnswer<PartnerPage>>;
}

/// A configured two-way partner: the pair's name and its writer.
#[derive(Clone)]
pub struct PartnerSpec {
    /// `mailchimp` or `platform:{name}` (the key under `two_way`).
    pub pair: String,
    pub writer: std::sync::Arc<dyn PartnerWriter>,
}

impl std::fmt::Debug for PartnerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartnerSpec")
            .field("pair", &self.pair)
            .finish_non_exhaustive()
    }
}
