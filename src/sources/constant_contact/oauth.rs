//! OAuth2 for the Constant Contact poller: the access token kept in memory with its expiry,
//! refreshed with the refresh token, and a rotated refresh token stored durably before the
//! access token that came with it is used.
//!
//! # The refresh token in use
//! The tenant document holds the refresh token the customer's authorisation gave. Constant
//! Contact refresh tokens are either long-lived (answered back unchanged) or rotating (each
//! refresh answers a new one and the used one stops working). A rotated token is sealed with
//! the master key (field [`ROTATED_FIELD`]) and written to the tenant's source state
//! ([`STATE_NAME`] / [`STATE_KEY`]) with the SHA-256 fingerprint of the document token it
//! descends from, then flushed (`Store::durable`); only then is the new access token used —
//! a crash at any point leaves either the old token (not yet rotated) or the new one on disk.
//! On start the stored token is used when its fingerprint matches the document's token;
//! when the document's token differs (the customer authorised again and an operator PATCHed
//! it), the document's token wins.
//!
//! Tokens never appear in logs, errors or `Debug` output ([`SecretString`]).

use std::sync::Mutex;

use reqwest::header::ACCEPT;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use sha2::{Digest, Sha256};
use steward_actors::store::{MasterKey, Store, TenantStore};
use subtle::ConstantTimeEq;

/// Source-state name and key of the rotated refresh token.
pub const STATE_NAME: &str = "constant_contact";
pub const STATE_KEY: &str = "oauth_refresh_token";
/// The sealing field (associated data) of the rotated refresh token.
pub const ROTATED_FIELD: &str = "/sources/constant_contact/refresh_token#rotated";
/// An access token expiring within this margin is refreshed first.
pub const REFRESH_MARGIN_MS: u64 = 60_000;
/// `expires_in` when the token answer has none (the real API's access tokens live 24 h).
const DEFAULT_EXPIRES_IN_S: u64 = 86_400;
/// Format byte of the stored value: `[1][32-byte fingerprint][sealed token]`.
const STORED_FORMAT: u8 = 1;
const FINGERPRINT_LEN: usize = 32;

/// What the poller's OAuth client needs from the tenant document and the process.
pub struct OAuthConfig {
    pub tenant_id: String,
    pub http: reqwest::Client,
    pub token_url: String,
    pub client_id: String,
    pub client_secret: SecretString,
    /// The document's refresh token (the customer's latest authorisation).
    pub document_refresh_token: SecretString,
    pub store: Store,
    pub tenant_store: TenantStore,
    pub master_key: MasterKey,
}

/// Why no access token could be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// The token endpoint refused the refresh token or the client: an operator must act.
    Refused(String),
    /// The token endpoint answered 429.
    Throttled,
    /// 5xx, connection error, an unreadable answer, or the store failed.
    Failed(String),
}

#[derive(Default)]
struct TokenState {
    /// The access token and when it expires (ms since the epoch).
    access: Option<(SecretString, u64)>,
    /// The refresh token to use next; `None` until first read (store, else document).
    refresh: Option<SecretString>,
    /// `refresh` was rotated and is not yet durably stored: store it before any use.
    rotated_unsaved: bool,
}

/// The poller's tokens. One per poller instance; a new instance (restart, changed document)
/// starts from the store and the document.
pub struct TokenKeeper {
    config: OAuthConfig,
    /// Never held across an await: fetches of one poller never overlap, so the state is
    /// copied out, the call made, and the result put back.
    state: Mutex<TokenState>,
}

/// An access token and whether it was already held before this call (a 401 on a held token
/// is worth one refresh; on a fresh one it is not).
pub struct AccessToken {
    pub token: SecretString,
    pub was_cached: bool,
}

fn fingerprint(token: &SecretString) -> [u8; FINGERPRINT_LEN] {
    Sha256::digest(token.expose_secret().as_bytes()).into()
}

/// The stored value: format byte, the fingerprint of the document token the rotated one
/// descends from, and the sealed rotated token.
fn encode_stored(descends_from: &[u8; FINGERPRINT_LEN], sealed: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(1 + FINGERPRINT_LEN + sealed.len());
    bytes.push(STORED_FORMAT);
    bytes.extend_from_slice(descends_from);
    bytes.extend_from_slice(sealed);
    bytes
}

fn decode_stored(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (format, rest) = bytes.split_first()?;
    if *format != STORED_FORMAT || rest.len() <= FINGERPRINT_LEN {
        return None;
    }
    Some(rest.split_at(FINGERPRINT_LEN))
}

/// What a successful token answer carried.
struct Refreshed {
    access_token: SecretString,
    expires_in_s: u64,
    refresh_token: Option<SecretString>,
}

impl TokenKeeper {
    pub fn new(config: OAuthConfig) -> TokenKeeper {
        TokenKeeper {
            config,
            state: Mutex::new(TokenState::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TokenState> {
        // A poisoned lock only means a panic elsewhere mid-update; the state is plain data.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Drops the access token (the API refused it): the next call refreshes.
    pub fn forget_access_token(&self) {
        self.lock().access = None;
    }

    /// A usable access token: the held one unless absent or expiring within
    /// [`REFRESH_MARGIN_MS`], else a refreshed one (its rotated refresh token stored first).
    pub async fn access_token(&self, now_ms: u64) -> Result<AccessToken, TokenError> {
        let held = {
            let state = self.lock();
            match &state.access {
                Some((token, expires_at_ms))
                    if now_ms.saturating_add(REFRESH_MARGIN_MS) < *expires_at_ms =>
                {
                    Some((token.clone(), state.rotated_unsaved))
                }
                _ => None,
            }
        };
        if let Some((token, rotated_unsaved)) = held {
            if rotated_unsaved {
                // The store failed after the last refresh: the rule is store, then use.
                self.save_rotated()?;
                self.flush().await?;
            }
            return Ok(AccessToken {
                token,
                was_cached: true,
            });
        }
        let token = self.refresh(now_ms).await?;
        Ok(AccessToken {
            token,
            was_cached: false,
        })
    }

    /// The refresh token to use: the one held, else the stored rotated one when it descends
    /// from the document's token, else the document's.
    fn current_refresh_token(&self) -> Result<SecretString, TokenError> {
        if let Some(token) = self.lock().refresh.clone() {
            return Ok(token);
        }
        let token = self
            .stored_refresh_token()?
            .unwrap_or_else(|| self.config.document_refresh_token.clone());
        self.lock().refresh = Some(token.clone());
        Ok(token)
    }

    /// The stored rotated token, when one descends from the document's current token.
    fn stored_refresh_token(&self) -> Result<Option<SecretString>, TokenError> {
        let stored = self
            .config
            .tenant_store
            .get_source_state(STATE_NAME, STATE_KEY)
            .map_err(|err| {
                TokenError::Failed(format!("reading the stored refresh token: {err}"))
            })?;
        let Some(bytes) = stored else {
            return Ok(None);
        };
        let Some((descends_from, sealed)) = decode_stored(&bytes) else {
            tracing::warn!(tenant_id = %self.config.tenant_id, "the stored Constant Contact refresh token is unreadable; using the document's");
            return Ok(None);
        };
        let document = fingerprint(&self.config.document_refresh_token);
        if !bool::from(descends_from.ct_eq(&document)) {
            // A re-authorisation replaced the document's token: it wins.
            return Ok(None);
        }
        match self
            .config
            .master_key
            .open(&self.config.tenant_id, ROTATED_FIELD, sealed)
        {
            Ok(plain) => match String::from_utf8(plain) {
                Ok(text) => Ok(Some(SecretString::from(text))),
                Err(_) => Ok(None),
            },
            Err(_) => {
                tracing::warn!(tenant_id = %self.config.tenant_id, "the stored Constant Contact refresh token does not open with the master key; using the document's");
                Ok(None)
            }
        }
    }

    /// Writes the held (rotated) refresh token to the source state; the caller flushes.
    fn save_rotated(&self) -> Result<(), TokenError> {
        let Some(token) = self.lock().refresh.clone() else {
            return Ok(());
        };
        let sealed = self.config.master_key.seal(
            &self.config.tenant_id,
            ROTATED_FIELD,
            token.expose_secret().as_bytes(),
        );
        let bytes = encode_stored(&fingerprint(&self.config.document_refresh_token), &sealed);
        self.config
            .tenant_store
            .put_source_state(STATE_NAME, STATE_KEY, &bytes)
            .map_err(|err| TokenError::Failed(format!("storing the rotated refresh token: {err}")))
    }

    async fn flush(&self) -> Result<(), TokenError> {
        self.config.store.durable().await.map_err(|err| {
            TokenError::Failed(format!("flushing the rotated refresh token: {err}"))
        })?;
        self.lock().rotated_unsaved = false;
        Ok(())
    }

    /// Refreshes the access token. A refused refresh token is retried once with the stored
    /// one when that differs (another instance of this poller rotated it meanwhile).
    async fn refresh(&self, now_ms: u64) -> Result<SecretString, TokenError> {
        let used = self.current_refresh_token()?;
        let refreshed = match self.request(&used).await {
            Err(TokenError::Refused(message)) => {
                let stored = self.stored_refresh_token()?;
                let Some(stored) = stored.filter(|stored| {
                    !bool::from(
                        stored
                            .expose_secret()
                            .as_bytes()
                            .ct_eq(used.expose_secret().as_bytes()),
                    )
                }) else {
                    return Err(TokenError::Refused(message));
                };
                self.lock().refresh = Some(stored.clone());
                return Box::pin(self.refresh_with(stored, now_ms)).await;
            }
            other => other?,
        };
        self.accept(used, refreshed, now_ms).await
    }

    async fn refresh_with(
        &self,
        used: SecretString,
        now_ms: u64,
    ) -> Result<SecretString, TokenError> {
        let refreshed = self.request(&used).await?;
        self.accept(used, refreshed, now_ms).await
    }

    /// Keeps a refresh's answer: a rotated refresh token is stored and flushed before the
    /// access token is handed out.
    async fn accept(
        &self,
        used: SecretString,
        refreshed: Refreshed,
        now_ms: u64,
    ) -> Result<SecretString, TokenError> {
        let expires_at_ms = now_ms.saturating_add(refreshed.expires_in_s.saturating_mul(1_000));
        let rotated = refreshed.refresh_token.filter(|new| {
            !bool::from(
                new.expose_secret()
                    .as_bytes()
                    .ct_eq(used.expose_secret().as_bytes()),
            )
        });
        {
            let mut state = self.lock();
            state.access = Some((refreshed.access_token.clone(), expires_at_ms));
            if let Some(new) = &rotated {
                // From here on the used token is dead at the source: hold the new one even
                // if storing it fails, and refuse to hand out the access token until stored.
                state.refresh = Some(new.clone());
                state.rotated_unsaved = true;
            }
        }
        if rotated.is_some() {
            self.save_rotated()?;
            self.flush().await?;
            tracing::info!(tenant_id = %self.config.tenant_id, "Constant Contact refresh token rotated and stored");
        }
        Ok(refreshed.access_token)
    }

    /// One `POST token_url` with `grant_type=refresh_token`, client credentials as Basic.
    async fn request(&self, refresh_token: &SecretString) -> Result<Refreshed, TokenError> {
        let config = &self.config;
        let response = config
            .http
            .post(&config.token_url)
            .basic_auth(
                &config.client_id,
                Some(config.client_secret.expose_secret()),
            )
            .header(ACCEPT, "application/json")
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token.expose_secret()),
            ])
            .send()
            .await
            .map_err(|err| {
                TokenError::Failed(format!(
                    "the token endpoint did not answer: {}",
                    err.without_url()
                ))
            })?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(|err| {
            TokenError::Failed(format!(
                "reading the token answer failed: {}",
                err.without_url()
            ))
        })?;
        let body: Option<Value> = serde_json::from_str(&text).ok();
        classify_token_answer(status, body.as_ref())
    }
}

/// The token endpoint's answer → a refresh or why not. OAuth2 errors are
/// `{"error", "error_description"}`; only the `error` code is repeated (descriptions are the
/// server's free text).
fn classify_token_answer(status: u16, body: Option<&Value>) -> Result<Refreshed, TokenError> {
    let error_code = body
        .and_then(|body| body.get("error"))
        .and_then(Value::as_str)
        .map(|code| code.chars().take(64).collect::<String>())
        .unwrap_or_else(|| format!("HTTP {status}"));
    match status {
        200..=299 => {
            let body =
                body.ok_or_else(|| TokenError::Failed("the token answer is not JSON".to_owned()))?;
            let access_token = body
                .get("access_token")
                .and_then(Value::as_str)
                .filter(|token| !token.is_empty())
                .ok_or_else(|| {
                    TokenError::Failed("the token answer has no access_token".to_owned())
                })?;
            let expires_in_s = body
                .get("expires_in")
                .and_then(Value::as_u64)
                .unwrap_or(DEFAULT_EXPIRES_IN_S);
            let refresh_token = body
                .get("refresh_token")
                .and_then(Value::as_str)
                .filter(|token| !token.is_empty())
                .map(|token| SecretString::from(token.to_owned()));
            Ok(Refreshed {
                access_token: SecretString::from(access_token.to_owned()),
                expires_in_s,
                refresh_token,
            })
        }
        429 => Err(TokenError::Throttled),
        401 | 403 if error_code == "invalid_client" || status == 403 => {
            Err(TokenError::Refused(format!(
                "Constant Contact refused the client credentials ({error_code}): check \
                 sources.constant_contact.client_id and client_secret, then resume the poller"
            )))
        }
        400 | 401 | 403 => Err(TokenError::Refused(format!(
            "Constant Contact refused the refresh token ({error_code}): the customer must \
             re-authorise the app and an operator PATCH the new \
             sources.constant_contact.refresh_token"
        ))),
        _ => Err(TokenError::Failed(format!(
            "the token endpoint answered {error_code}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn token_answers_are_classified() {
        // Goal: a 200 gives the tokens (expiry defaulting to 24 h), invalid_grant and
        // invalid_client are refusals that say what to do, 429 throttles, 5xx and bodies
        // without an access token fail; no message repeats a token.
        let ok = classify_token_answer(
            200,
            Some(&json!({"access_token": "at-1", "expires_in": 5, "refresh_token": "rt-2"})),
        )
        .ok()
        .unwrap();
        assert_eq!(ok.access_token.expose_secret(), "at-1");
        assert_eq!(ok.expires_in_s, 5);
        assert_eq!(ok.refresh_token.unwrap().expose_secret(), "rt-2");
        let bare = classify_token_answer(200, Some(&json!({"access_token": "at-1"})))
            .ok()
            .unwrap();
        assert_eq!(bare.expires_in_s, DEFAULT_EXPIRES_IN_S);
        assert!(bare.refresh_token.is_none());

        let Err(TokenError::Refused(grant)) =
            classify_token_answer(400, Some(&json!({"error": "invalid_grant"})))
        else {
            panic!("invalid_grant is a refusal");
        };
        assert!(grant.contains("re-authorise") && grant.contains("invalid_grant"));
        let Err(TokenError::Refused(client)) =
            classify_token_answer(401, Some(&json!({"error": "invalid_client"})))
        else {
            panic!("invalid_client is a refusal");
        };
        assert!(client.contains("client_secret"));
        assert!(matches!(
            classify_token_answer(429, None),
            Err(TokenError::Throttled)
        ));
        assert!(matches!(
            classify_token_answer(503, None),
            Err(TokenError::Failed(_))
        ));
        assert!(matches!(
            classify_token_answer(200, Some(&json!({"refresh_token": "rt"}))),
            Err(TokenError::Failed(_))
        ));
    }

    #[test]
    fn the_stored_value_round_trips_and_refuses_other_formats() {
        // Goal: [format][fingerprint][sealed] decodes back; a wrong format byte or a value
        // too short is unreadable rather than misread.
        let fingerprint = [7u8; FINGERPRINT_LEN];
        let bytes = encode_stored(&fingerprint, b"sealed");
        let (descends_from, sealed) = decode_stored(&bytes).unwrap();
        assert_eq!((descends_from, sealed), (&fingerprint[..], &b"sealed"[..]));
        let mut other = bytes.clone();
        other[0] = 2;
        assert!(decode_stored(&other).is_none());
        assert!(decode_stored(&bytes[..FINGERPRINT_LEN]).is_none());
        assert!(decode_stored(&[]).is_none());
    }
}
