//! The `two_way` block of the tenant document (docs/operations.md "Two-way sync"): one
//! entry per pair, `mailchimp` or `platform:{name}`, each with its mode, echo window, field
//! rules and (for a platform) the partner's contacts API.
//!
//! ```json
//! {"two_way": {
//!   "mailchimp": {"mode": "observe", "echo_window_s": 120,
//!                 "fields": {"tags": "virtuous_wins", "subscribed": "partner_wins"}},
//!   "platform:gala": {"mode": "on", "fields": {"email": "dont_sync"},
//!                     "api": {"url": "https://gala.example/api", "auth_header": "Authorization",
//!                             "auth_value": "Bearer …"}}}}
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use steward_actors::two_way::{Mode, PairKind, Rule};

/// The pair of Mailchimp (`sources.mailchimp`).
pub const MAILCHIMP_PAIR: &str = "mailchimp";
/// A generic platform's pair is this prefix and the platform's name (`sources.platforms`).
pub const PLATFORM_PAIR_PREFIX: &str = "platform:";

/// `two_way.{pair}`. No `Debug`: `api.auth_value` is a secret.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwoWayPairDoc {
    /// `observe` (matched and reported, nothing written) or `on`.
    #[serde(default)]
    pub mode: Mode,
    /// Within this long after one of our writes a record's incoming changes are compared
    /// with what we wrote tolerantly (1 to 86400).
    #[serde(default = "default_echo_window_s")]
    pub echo_window_s: u64,
    /// Field → rule; fields not named follow the default (`subscribed`: `partner_wins`,
    /// the others `newest_wins`).
    #[serde(default)]
    pub fields: BTreeMap<String, Rule>,
    /// The partner's contacts API (platform pairs; Mailchimp's comes from
    /// `sources.mailchimp`).
    #[serde(default)]
    pub api: Option<PartnerApiDoc>,
}

fn default_echo_window_s() -> u64 {
    120
}

/// `two_way.platform:{name}.api`: the contacts API (`{url}/contacts`, `{url}/contacts/{id}`).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartnerApiDoc {
    /// An http(s) base URL, `"embedded"` (the embedded sandbox's `/partners/{name}`) or
    /// `"embedded:/path"`.
    pub url: String,
    #[serde(default = "default_auth_header")]
    pub auth_header: String,
    /// Sealed like every secret (`Bearer …`).
    pub auth_value: Option<String>,
}

fn default_auth_header() -> String {
    "Authorization".into()
}

/// What a pair key names: `mailchimp`, or `platform:{name}` with a non-empty name.
pub fn pair_kind(pair: &str) -> Option<PairKind> {
    if pair == MAILCHIMP_PAIR {
        return Some(PairKind::Mailchimp);
    }
    pair.strip_prefix(PLATFORM_PAIR_PREFIX)
        .filter(|name| !name.is_empty())
        .map(|name| PairKind::Platform(name.to_string()))
}
