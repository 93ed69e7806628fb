//! The dashboard's sessions (docs/dashboard.md "Security"): a login with the admin token
//! makes one, kept only in this process's memory. Its id travels in the `steward_session`
//! cookie (`HttpOnly; SameSite=Strict`); its CSRF token travels in the page and comes back
//! in `X-CSRF-Token` on every state-changing `/v1` call.
//!
//! Sessions die with the process (an operator logs in again after a restart): nothing of
//! them is ever written to the store.

use actix_web::http::{header, Method};
use actix_web::HttpRequest;
use base64::Engine;
use dashmap::DashMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The cookie that carries the session id.
pub const SESSION_COOKIE: &str = "steward_session";
/// The header that carries the session's CSRF token on state-changing calls.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// A session lasts one working day from its login; then the operator logs in again.
pub const SESSION_LIFETIME_MS: u64 = 12 * 3_600_000;
/// At most this many live sessions: a login beyond it ends the session closest to expiry, so
/// repeated logins (even with the right token) never grow memory without bound.
pub const SESSIONS_MAX: usize = 256;

/// One logged-in browser.
struct Session {
    /// Sent in the page, compared in constant time with `X-CSRF-Token`.
    csrf_token: String,
    expires_at_ms: u64,
}

/// What a request's cookie and CSRF header amount to.
#[derive(Debug, PartialEq, Eq)]
pub enum SessionCheck {
    /// No cookie, or one naming no live session.
    NoSession,
    /// A live session; a state-changing request also carried its CSRF token.
    Valid,
    /// A live session, but a state-changing request without its CSRF token (missing, or
    /// another session's).
    CsrfFailed,
}

/// The live sessions, keyed by the SHA-256 of their id: a lookup's timing tells nothing about
/// the ids themselves, and a memory dump holds no usable cookie.
#[derive(Default)]
pub struct UiSessions {
    sessions: DashMap<[u8; 32], Session>,
}

/// A new session's cookie value and CSRF token.
pub struct NewSession {
    pub id: String,
    pub csrf_token: String,
}

fn random_token() -> String {
    // `rand::random` draws from the thread-local CSPRNG (ChaCha, seeded from the OS).
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

fn session_key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl UiSessions {
    /// Opens a session after a successful login.
    pub fn create(&self, now_ms: u64) -> NewSession {
        self.sessions
            .retain(|_, session| session.expires_at_ms > now_ms);
        while self.sessions.len() >= SESSIONS_MAX {
            let closest_to_expiry = self
                .sessions
                .iter()
                .min_by_key(|entry| entry.value().expires_at_ms)
                .map(|entry| *entry.key());
            match closest_to_expiry {
                Some(key) => self.sessions.remove(&key),
                None => break,
            };
        }
        let created = NewSession {
            id: random_token(),
            csrf_token: random_token(),
        };
        self.sessions.insert(
            session_key(&created.id),
            Session {
                csrf_token: created.csrf_token.clone(),
                expires_at_ms: now_ms + SESSION_LIFETIME_MS,
            },
        );
        debug_assert!(self.sessions.len() <= SESSIONS_MAX);
        created
    }

    /// The CSRF token of the live session `id` names, if any.
    pub fn csrf_token(&self, id: &str, now_ms: u64) -> Option<String> {
        let key = session_key(id);
        let token = self
            .sessions
            .get(&key)
            .filter(|session| session.expires_at_ms > now_ms)
            .map(|session| session.csrf_token.clone());
        if token.is_none() {
            // Expired (or never existed): drop it now rather than at the next login.
            self.sessions.remove(&key);
        }
        token
    }

    /// Ends a session (logout); unknown ids are ignored.
    pub fn end(&self, id: &str) {
        self.sessions.remove(&session_key(id));
    }

    /// Live sessions, expired ones included until the next login sweeps them.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Whether `request` is authorised by a session cookie (the `/v1` middleware's second
    /// way in, after the bearer token).
    pub fn check(&self, request: &HttpRequest, now_ms: u64) -> SessionCheck {
        let Some(id) = session_cookie(request) else {
            return SessionCheck::NoSession;
        };
        let Some(csrf_token) = self.csrf_token(&id, now_ms) else {
            return SessionCheck::NoSession;
        };
        if !changes_state(request.method()) {
            return SessionCheck::Valid;
        }
        let presented = request
            .headers()
            .get(CSRF_HEADER)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("");
        if csrf_matches(&csrf_token, presented) {
            SessionCheck::Valid
        } else {
            SessionCheck::CsrfFailed
        }
    }
}

/// Every method but the safe ones (GET, HEAD, OPTIONS) needs the CSRF token.
pub fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Constant-time comparison of a CSRF token (both are ours: 43 characters).
pub fn csrf_matches(expected: &str, presented: &str) -> bool {
    bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
}

/// The `steward_session` cookie's value, from the `Cookie` header(s).
pub fn session_cookie(request: &HttpRequest) -> Option<String> {
    request
        .headers()
        .get_all(header::COOKIE)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim().to_string())
        .filter(|value| !value.is_empty())
}

/// The `Set-Cookie` value that opens a session (`secure`: the page was reached over HTTPS).
pub fn session_cookie_header(id: &str, secure: bool) -> String {
    let max_age_s = SESSION_LIFETIME_MS / 1_000;
    let secure = if secure { "; Secure" } else { "" };
    format!("{SESSION_COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age_s}{secure}")
}

/// The `Set-Cookie` value that removes the cookie (logout).
pub fn cleared_cookie_header() -> String {
    format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    const NOW_MS: u64 = 1_800_000_000_000;

    fn with_cookie(method: Method, id: &str) -> TestRequest {
        TestRequest::default()
            .method(method)
            .insert_header((header::COOKIE, format!("other=1; {SESSION_COOKIE}={id}")))
    }

    #[test]
    fn a_session_authorises_reads_and_csrf_guarded_writes_until_it_ends() {
        // Goal: a cookie alone authorises GET; POST/PUT/PATCH/DELETE also need this session's
        // CSRF token (another session's is refused); logout and expiry end it.
        let sessions = UiSessions::default();
        let first = sessions.create(NOW_MS);
        let second = sessions.create(NOW_MS);
        let check =
            |request: TestRequest, now_ms| sessions.check(&request.to_http_request(), now_ms);
        assert_eq!(
            check(with_cookie(Method::GET, &first.id), NOW_MS),
            SessionCheck::Valid
        );
        for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert_eq!(
                check(with_cookie(method.clone(), &first.id), NOW_MS),
                SessionCheck::CsrfFailed
            );
            let others = with_cookie(method.clone(), &first.id)
                .insert_header((CSRF_HEADER, second.csrf_token.clone()));
            assert_eq!(check(others, NOW_MS), SessionCheck::CsrfFailed);
            let own = with_cookie(method, &first.id)
                .insert_header((CSRF_HEADER, first.csrf_token.clone()));
            assert_eq!(check(own, NOW_MS), SessionCheck::Valid);
        }
        assert_eq!(
            check(with_cookie(Method::GET, "forged"), NOW_MS),
            SessionCheck::NoSession
        );
        assert_eq!(
            check(TestRequest::default(), NOW_MS),
            SessionCheck::NoSession
        );
        let expired_at_ms = NOW_MS + SESSION_LIFETIME_MS;
        assert_eq!(
            check(with_cookie(Method::GET, &second.id), expired_at_ms),
            SessionCheck::NoSession
        );
        sessions.end(&first.id);
        assert_eq!(
            check(with_cookie(Method::GET, &first.id), NOW_MS),
            SessionCheck::NoSession
        );
        assert!(
            sessions.is_empty(),
            "the expired one was dropped when it was looked up"
        );
    }

    #[test]
    fn logins_never_keep_more_than_the_cap() {
        // Goal: a flood of logins keeps at most SESSIONS_MAX sessions, ending the oldest.
        let sessions = UiSessions::default();
        let first = sessions.create(NOW_MS);
        for step in 1..=(SESSIONS_MAX as u64 + 10) {
            sessions.create(NOW_MS + step);
        }
        assert_eq!(sessions.len(), SESSIONS_MAX);
        assert_eq!(sessions.csrf_token(&first.id, NOW_MS + 20), None);
    }

    #[test]
    fn the_cookie_carries_its_flags() {
        // Goal: the session cookie is HttpOnly, SameSite=Strict, site-wide, and Secure over HTTPS.
        let header = session_cookie_header("abc", false);
        for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
            assert!(header.contains(flag), "{header}");
        }
        assert!(!header.contains("Secure"));
        assert!(session_cookie_header("abc", true).ends_with("; Secure"));
        assert!(cleared_cookie_header().contains("Max-Age=0"));
    }
}
