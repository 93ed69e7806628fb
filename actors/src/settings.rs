//! A tenant's runtime settings (below the hub and the actors: everything reads them).

use serde::{Deserialize, Serialize};

use crate::budget::BudgetSettings;

/// Runtime settings of one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantSettings {
    /// A child silent for longer than this is replaced; children tick every third of it.
    pub heartbeat_ms: u64,
    pub restart_backoff_initial_ms: u64,
    pub restart_backoff_max_ms: u64,
    /// Bound of each child's mailbox; a full Capture mailbox answers `MailboxFull`.
    pub mailbox_capacity: usize,
    pub budget: BudgetSettings,
    pub submit: SubmitSettings,
    pub confirm: ConfirmSettings,
    pub alerts: AlertSettings,
    pub pull: PullSettings,
    /// Two-way pairs (pattern 4; tenant document `two_way`, docs/two-way.md).
    pub two_way: Vec<crate::two_way::PairSettings>,
    /// Money reconciliation (tenant document `reconciliation`, docs/backfill.md).
    pub reconciliation: ReconciliationSettings,
}

/// Money reconciliation: the tenant's gift sources and the nightly run.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReconciliationSettings {
    /// `reconciliation.daily_at` as (hour, minute) in `time_zone`: every day then, the
    /// previous 7 days of each gift source are reconciled. `None`: no nightly run.
    pub daily_at: Option<(u8, u8)>,
    /// The tenant's time zone (an IANA name; UTC when empty).
    pub time_zone: String,
    /// The gift sources (`stripe`, platforms with a gift mapping) and their
    /// `transactionSource`s.
    pub sources: Vec<MoneySource>,
}

/// A gift source, as reconciliation names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoneySource {
    /// The source name of its entries and money facts (`stripe`, a platform name).
    pub source: String,
    pub transaction_source: String,
}

/// Pull (pattern 3; tenant document `pull`, docs/pull.md): what Inbound takes from Virtuous
/// and keeps in the change log for the tenant's destinations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PullSettings {
    /// Pull is on (the document has a `pull` block): changes are logged and delivered.
    pub enabled: bool,
    /// Kinds subscribed, logged and delivered (`pull.events`).
    pub events: Vec<crate::pull::ChangeKind>,
    /// Between backstop polls (`pull.poll_interval_s`, default 3600); 0: no backstop poll.
    pub poll_interval_ms: u64,
    /// Each backstop poll starts this long before the last one's high-water mark.
    pub poll_overlap_ms: u64,
    /// Records per backstop page (`take`).
    pub poll_take: u32,
    /// Deliver our own writes too (`pull.include_own`; a pull-only tenant may want them).
    pub include_own: bool,
    /// Our `transactionSource`s and `referenceSource`s: a change naming one is our own write.
    pub own_sources: Vec<String>,
    /// Changes are kept this long for replay (and at least until every destination has
    /// them).
    pub retention_ms: u64,
    /// The tenant's time zone: the backstop's day filter starts no later than the local
    /// day, in case Virtuous reads `MM/DD/YYYY` in the organization's zone.
    pub time_zone: String,
}

impl Default for PullSettings {
    fn default() -> PullSettings {
        PullSettings {
            enabled: false,
            events: vec![
                crate::pull::ChangeKind::Gift,
                crate::pull::ChangeKind::Contact,
            ],
            poll_interval_ms: 3_600_000,
            poll_overlap_ms: 300_000,
            poll_take: 500,
            include_own: false,
            own_sources: Vec::new(),
            retention_ms: 7 * 86_400_000,
            time_zone: "UTC".to_string(),
        }
    }
}

/// When failures become alerts (config `[alerts]`, docs/operations.md "Alerts").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertSettings {
    /// Virtuous calls in a row that got no answer (refused, DNS, TLS, timeout) before the
    /// alert `crm_unreachable` is raised.
    pub crm_unreachable_after: u32,
}

impl Default for AlertSettings {
    fn default() -> AlertSettings {
        AlertSettings {
            crm_unreachable_after: 5,
        }
    }
}

/// How the submitter sends (config `[submitter]`, docs/operations.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SubmitSettings {
    /// Most gift transactions per call (1–100).
    pub batch_max: usize,
    /// Wait before each retry after a transient failure; exhausted → dead letter.
    pub retry_schedule_ms: Vec<u64>,
    /// ± spread of each retry wait, percent.
    pub retry_jitter_pct: u8,
    /// A lease older than this may be taken again (stuck or replaced submitter).
    pub lease_timeout_ms: u64,
    /// Contact updates of up to `batch_max` records with one `referenceSource` go in one
    /// `POST /api/Contact/Batch` (tenant `virtuous.contact_batch`); false: one record's
    /// merged updates per `POST /api/Contact/Transaction`.
    pub contact_batch: bool,
}

impl Default for SubmitSettings {
    fn default() -> SubmitSettings {
        SubmitSettings {
            batch_max: 100,
            retry_schedule_ms: vec![
                10_000, 60_000, 300_000, 1_800_000, 7_200_000, 21_600_000, 43_200_000, 86_400_000,
            ],
            retry_jitter_pct: 20,
            lease_timeout_ms: 120_000,
            contact_batch: true,
        }
    }
}

/// How submitted records are confirmed (config `[reconciler]`, ARCHITECTURE.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConfirmSettings {
    /// Between bulk confirmation passes.
    pub reconcile_interval_ms: u64,
    /// Unconfirmed this long after submission → `needs_review` + alert.
    pub needs_review_after_ms: u64,
    /// Gifts per FullGift page (≤ 1,000).
    pub query_take: u32,
    /// Idempotency keys older than this are forgotten (retention).
    pub dedup_retention_ms: u64,
    /// `{public_url}/hooks/{tenant}/virtuous` when `public_url` is set: the inbound handler
    /// registers it with Virtuous (`POST /api/Webhook`) and stores the subscription id.
    pub webhook_url: Option<String>,
}

impl Default for ConfirmSettings {
    fn default() -> ConfirmSettings {
        ConfirmSettings {
            reconcile_interval_ms: 3_600_000,
            needs_review_after_ms: 259_200_000,
            query_take: 1_000,
            dedup_retention_ms: 90 * 86_400_000,
            webhook_url: None,
        }
    }
}

impl Default for TenantSettings {
    fn default() -> TenantSettings {
        TenantSettings {
            heartbeat_ms: 30_000,
            restart_backoff_initial_ms: 1_000,
            restart_backoff_max_ms: 60_000,
            mailbox_capacity: 1_024,
            budget: BudgetSettings::default(),
            submit: SubmitSettings::default(),
            confirm: ConfirmSettings::default(),
            alerts: AlertSettings::default(),
            pull: PullSettings::default(),
            two_way: Vec::new(),
            reconciliation: ReconciliationSettings::default(),
        }
    }
}

/// When a poller runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollSchedule {
    /// Polling off: the poller keeps its checkpoint and state, and runs only when told to
    /// (`POST …/pollers/{source}/run`).
    Off,
    /// Every `interval_ms`, counted from the start of the previous run.
    Every { interval_ms: u64 },
    /// Once a day at `hour:minute` in `time_zone` (an IANA name).
    DailyAt {
        hour: u8,
        minute: u8,
        time_zone: String,
    },
}

/// A source's own limits: a second budget beside Virtuous's (docs/polling.md).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SourceLimits {
    /// Most calls in any sliding second (Constant Contact: 4).
    pub per_second: Option<u32>,
    /// Most calls a day (Constant Contact: 10,000); the count resets at
    /// `daily_reset_utc_s` seconds after 00:00 UTC.
    pub daily: Option<u32>,
    pub daily_reset_utc_s: u32,
}

/// One configured poller of a tenant (built by the `steward` crate from the tenant
/// document; plain data, the port itself travels beside it in [`crate::poll::PollerSpec`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PollerSettings {
    /// The source name in entries, checkpoints and routes (`constant_contact`, `mailchimp`,
    /// a platform name).
    pub source: String,
    /// What kind of source it is: the `source` label of `steward_capture_path_total`
    /// (`constant_contact`, `mailchimp`, `platform`: bounded, whatever platforms are named).
    pub kind: String,
    pub schedule: PollSchedule,
    /// Each run starts this far before the checkpoint's time (deduplicated re-read).
    pub overlap_ms: u64,
    pub limits: SourceLimits,
    /// The source also has a webhook path: parity is measured and alerted on.
    pub has_webhooks: bool,
    /// Alert when a day's poll-only share exceeds this percentage.
    pub parity_alert_pct: f64,
    /// The tenant's time zone (parity days).
    pub time_zone: String,
}
