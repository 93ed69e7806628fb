//! The account registry and one account's state: OAuth tokens, limits, faults, counters and
//! the request log, under one mutex per account (accounts never wait on each other).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::contacts::ContactStore;
use super::quota::DailyQuota;
use super::{AccountSpec, RefreshTokenKind};
use crate::faults::Faults;
use crate::ratelimit::SlidingWindow;
use crate::registry::{self, Entry, Refusal};
use crate::request_log::RequestLog;

const SECOND_MS: u64 = 1_000;

#[derive(Debug, thiserror::Error)]
pub(crate) enum CreateAccountError {
    #[error("{0}")]
    Invalid(String),
    #[error("account {0:?} exists")]
    IdTaken(String),
    #[error("client_id is used by another account")]
    ClientIdTaken,
}

/// Why the token endpoint refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefreshRefusal {
    /// Wrong client secret: `401 invalid_client`.
    InvalidClient,
    /// Unknown, used (rotated away) or revoked refresh token: `400 invalid_grant`.
    InvalidGrant,
}

/// A successful refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refreshed {
    pub(crate) access_token: String,
    pub(crate) refresh_token: String,
    pub(crate) expires_in_s: u64,
}

/// Counters behind `GET /_sandbox/constant-contact/accounts/{id}/stats`.
#[derive(Debug, Default, Clone, Serialize)]
pub(crate) struct Counters {
    /// API calls answered, by status (429s and faults included; 401s are not counted).
    pub(crate) api_requests_by_status: BTreeMap<u16, u64>,
    pub(crate) throttled: u64,
    pub(crate) quota_exceeded: u64,
    pub(crate) token_refreshes: u64,
    pub(crate) token_refusals: u64,
    pub(crate) contacts_returned: u64,
}

pub(crate) struct AccountState {
    pub(crate) client_secret: String,
    pub(crate) refresh_token_kind: RefreshTokenKind,
    /// The one refresh token that works now (`None` after a revocation).
    pub(crate) refresh_token: Option<String>,
    /// Live access tokens → expiry (Unix ms).
    pub(crate) access_tokens: HashMap<String, u64>,
    pub(crate) access_token_ttl_ms: u64,
    pub(crate) per_second: SlidingWindow,
    pub(crate) per_second_limit: u64,
    pub(crate) quota: DailyQuota,
    pub(crate) faults: Faults,
    pub(crate) seed: u64,
    pub(crate) contacts: ContactStore,
    pub(crate) counters: Counters,
    pub(crate) requests: RequestLog,
    /// Counts issued tokens, so two issued in one millisecond differ.
    tokens_issued: u64,
}

pub(crate) struct Account {
    pub(crate) id: String,
    pub(crate) client_id: String,
    /// The spec it was created with (a second create with the same spec is a no-op).
    spec: AccountSpec,
    state: Mutex<AccountState>,
}

impl Entry for Account {
    type State = AccountState;

    fn state(&self) -> &Mutex<AccountState> {
        &self.state
    }
}

impl AccountState {
    fn new_token(&mut self, account_id: &str, kind: &str, now_ms: u64) -> String {
        self.tokens_issued += 1;
        let digest = Sha256::new()
            .chain_update(account_id.as_bytes())
            .chain_update(kind.as_bytes())
            .chain_update(self.tokens_issued.to_be_bytes())
            .chain_update(now_ms.to_be_bytes())
            .chain_update(self.seed.to_be_bytes())
            .finalize();
        // The account id leads an access token so a Bearer token finds its account directly.
        format!("{account_id}.{kind}.{}", hex::encode(&digest[..16]))
    }

    /// The refresh_token grant. Expired access tokens are dropped on the way.
    pub(crate) fn refresh(
        &mut self,
        account_id: &str,
        client_secret: &str,
        refresh_token: &str,
        now_ms: u64,
    ) -> Result<Refreshed, RefreshRefusal> {
        if client_secret != self.client_secret {
            self.counters.token_refusals += 1;
            return Err(RefreshRefusal::InvalidClient);
        }
        if self.refresh_token.as_deref() != Some(refresh_token) {
            self.counters.token_refusals += 1;
            return Err(RefreshRefusal::InvalidGrant);
        }
        self.access_tokens
            .retain(|_, expires_ms| *expires_ms > now_ms);
        let access_token = self.new_token(account_id, "at", now_ms);
        self.access_tokens
            .insert(access_token.clone(), now_ms + self.access_token_ttl_ms);
        let refresh_token = match self.refresh_token_kind {
            RefreshTokenKind::Rotating => {
                let rotated = self.new_token(account_id, "rt", now_ms);
                self.refresh_token = Some(rotated.clone());
                rotated
            }
            RefreshTokenKind::LongLived => refresh_token.to_owned(),
        };
        self.counters.token_refreshes += 1;
        Ok(Refreshed {
            access_token,
            refresh_token,
            expires_in_s: self.access_token_ttl_ms.div_ceil(SECOND_MS),
        })
    }

    pub(crate) fn access_token_is_valid(&self, token: &str, now_ms: u64) -> bool {
        self.access_tokens
            .get(token)
            .is_some_and(|expires_ms| *expires_ms > now_ms)
    }

    /// As if the user disconnected the app: every token stops working.
    pub(crate) fn revoke(&mut self) {
        self.refresh_token = None;
        self.access_tokens.clear();
    }

    pub(crate) fn set_per_second_limit(&mut self, limit: u64) {
        self.per_second_limit = limit;
        self.per_second = SlidingWindow::with_window(limit, SECOND_MS);
    }
}

/// Every account, by id.
pub(crate) type Registry = registry::Registry<Account>;

impl Registry {
    pub(crate) fn create(
        &self,
        spec: AccountSpec,
        same_spec_is_ok: bool,
    ) -> Result<(), CreateAccountError> {
        spec.validate().map_err(CreateAccountError::Invalid)?;
        let build = || {
            let now_ms = crate::clock::now_ms();
            let state = AccountState {
                client_secret: spec.client_secret.clone(),
                refresh_token_kind: spec.refresh_token_kind,
                refresh_token: Some(spec.refresh_token.clone()),
                access_tokens: HashMap::new(),
                access_token_ttl_ms: spec.access_token_ttl_ms,
                per_second: SlidingWindow::with_window(spec.per_second_limit, SECOND_MS),
                per_second_limit: spec.per_second_limit,
                quota: DailyQuota::new(spec.daily_quota, now_ms),
                faults: Faults::default(),
                seed: spec.seed,
                contacts: ContactStore::default(),
                counters: Counters::default(),
                requests: RequestLog::default(),
                tokens_issued: 0,
            };
            Account {
                id: spec.id.clone(),
                client_id: spec.client_id.clone(),
                spec: spec.clone(),
                state: Mutex::new(state),
            }
        };
        self.insert(
            &spec.id,
            |existing| same_spec_is_ok && existing.spec == spec,
            |other| other.client_id == spec.client_id,
            build,
        )
        .map_err(|refusal| match refusal {
            Refusal::IdTaken => CreateAccountError::IdTaken(spec.id.clone()),
            Refusal::Conflict => CreateAccountError::ClientIdTaken,
        })
    }

    /// The token endpoint's lookup (a cold path: a scan is fine).
    pub(crate) fn by_client_id(&self, client_id: &str) -> Option<Arc<Account>> {
        self.find(|account| account.client_id == client_id)
    }

    /// The account an access token names (validity is checked under the account's lock).
    pub(crate) fn by_access_token(&self, token: &str) -> Option<Arc<Account>> {
        let (account_id, _) = token.split_once('.')?;
        self.by_id(account_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry_with(kind: RefreshTokenKind) -> (Registry, Arc<Account>) {
        let registry = Registry::default();
        let mut spec = AccountSpec::new("acct", "client", "secret", "rt-0");
        spec.refresh_token_kind = kind;
        spec.access_token_ttl_ms = 1_000;
        registry.create(spec, false).unwrap();
        let account = registry.by_id("acct").unwrap();
        (registry, account)
    }

    #[test]
    fn a_rotating_refresh_token_works_once() {
        // Goal: each refresh answers a new refresh token; the used one is then refused.
        let (_, account) = registry_with(RefreshTokenKind::Rotating);
        let mut state = account.lock();
        let first = state.refresh("acct", "secret", "rt-0", 10).unwrap();
        assert_ne!(first.refresh_token, "rt-0");
        assert_eq!(first.expires_in_s, 1);
        assert_eq!(
            state.refresh("acct", "secret", "rt-0", 11),
            Err(RefreshRefusal::InvalidGrant)
        );
        let second = state
            .refresh("acct", "secret", &first.refresh_token, 12)
            .unwrap();
        assert_ne!(second.refresh_token, first.refresh_token);
        assert_ne!(second.access_token, first.access_token);
    }

    #[test]
    fn a_long_lived_refresh_token_keeps_working_until_revoked() {
        // Goal: the same refresh token is answered back and stays valid; a revocation ends it.
        let (_, account) = registry_with(RefreshTokenKind::LongLived);
        let mut state = account.lock();
        for now_ms in [10, 20] {
            let refreshed = state.refresh("acct", "secret", "rt-0", now_ms).unwrap();
            assert_eq!(refreshed.refresh_token, "rt-0");
        }
        assert_eq!(
            state.refresh("acct", "wrong", "rt-0", 30),
            Err(RefreshRefusal::InvalidClient)
        );
        state.revoke();
        assert_eq!(
            state.refresh("acct", "secret", "rt-0", 40),
            Err(RefreshRefusal::InvalidGrant)
        );
    }

    #[test]
    fn access_tokens_expire_and_name_their_account() {
        // Goal: a token is valid until its ttl ends and finds its account by its prefix.
        let (registry, account) = registry_with(RefreshTokenKind::Rotating);
        let token = account
            .lock()
            .refresh("acct", "secret", "rt-0", 10)
            .unwrap()
            .access_token;
        assert_eq!(registry.by_access_token(&token).unwrap().id, "acct");
        let state = account.lock();
        assert!(state.access_token_is_valid(&token, 1_009));
        assert!(!state.access_token_is_valid(&token, 1_010));
        assert!(!state.access_token_is_valid("acct.at.bogus", 10));
    }

    #[test]
    fn account_ids_and_client_ids_are_unique() {
        // Goal: a second account with a taken id or client id is refused; the same spec is a
        // no-op only in-process.
        let (registry, _) = registry_with(RefreshTokenKind::Rotating);
        let mut spec = AccountSpec::new("acct", "client", "secret", "rt-0");
        spec.refresh_token_kind = RefreshTokenKind::Rotating;
        spec.access_token_ttl_ms = 1_000;
        assert!(registry.create(spec.clone(), true).is_ok());
        assert!(matches!(
            registry.create(spec, false),
            Err(CreateAccountError::IdTaken(_))
        ));
        let other = AccountSpec::new("other", "client", "s", "r");
        assert!(matches!(
            registry.create(other, false),
            Err(CreateAccountError::ClientIdTaken)
        ));
        let dotted = AccountSpec::new("a.b", "c2", "s", "r");
        assert!(matches!(
            registry.create(dotted, false),
            Err(CreateAccountError::Invalid(_))
        ));
    }
}
