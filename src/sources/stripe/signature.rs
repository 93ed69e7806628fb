//! `Stripe-Signature` verification (docs/ingress.md): `t=<unix s>,v1=<hex>[,v1=…][,v0=…]`.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq};

/// Why a delivery was refused (HTTP 401 `bad_signature` / `stale_timestamp`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Stripe-Signature header is malformed: {0}")]
    Malformed(&'static str),
    #[error("no v1 signature matches the signing secret")]
    NoMatch,
    #[error("the signature timestamp is {age_s} s away from now (tolerance {tolerance_s} s)")]
    StaleTimestamp { age_s: u64, tolerance_s: u64 },
}

/// Length of an HMAC-SHA256 digest.
const DIGEST_BYTES: usize = 32;

/// Verifies `header` over the raw body bytes, before anything parses them.
///
/// Accepts when any `v1` matches any non-empty secret in `secrets` (current and previous
/// during a rotation); the comparison is constant time and does not stop at the first
/// match. The signature is checked before the timestamp, so a caller without a secret always
/// learns only `NoMatch`; a genuine but replayed delivery gets `StaleTimestamp` when
/// `|now − t| > tolerance_s` (future timestamps too: clocks drift both ways).
pub fn verify_signature(
    header: &str,
    raw_body: &[u8],
    secrets: &[&str],
    tolerance_s: u64,
    now_unix_s: i64,
) -> Result<(), SignatureError> {
    let parsed = parse_header(header)?;
    let mut any_match = Choice::from(0);
    for secret in secrets.iter().filter(|secret| !secret.is_empty()) {
        let expected = expected_digest(secret, parsed.timestamp_text, raw_body);
        for candidate in &parsed.v1_digests {
            any_match |= expected.as_slice().ct_eq(candidate.as_slice());
        }
    }
    if !bool::from(any_match) {
        return Err(SignatureError::NoMatch);
    }
    let age_s = now_unix_s.abs_diff(parsed.timestamp_s);
    if age_s > tolerance_s {
        return Err(SignatureError::StaleTimestamp { age_s, tolerance_s });
    }
    Ok(())
}

/// Computes the header value Stripe would send (tests, the demo's traffic generator).
pub fn sign_header(secret: &str, timestamp_s: i64, raw_body: &[u8]) -> String {
    let digest = expected_digest(secret, &timestamp_s.to_string(), raw_body);
    format!("t={timestamp_s},v1={}", hex::encode(digest))
}

fn expected_digest(secret: &str, timestamp_text: &str, raw_body: &[u8]) -> [u8; DIGEST_BYTES] {
    // HMAC accepts keys of any length: this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(timestamp_text.as_bytes());
    mac.update(b".");
    mac.update(raw_body);
    mac.finalize().into_bytes().into()
}

struct ParsedHeader<'a> {
    /// As sent: the signed message uses the header's text, not a re-formatted number.
    timestamp_text: &'a str,
    timestamp_s: i64,
    v1_digests: Vec<[u8; DIGEST_BYTES]>,
}

/// Most `v1` values a header may carry (a rotation has two; bound the work per request).
const V1_VALUES_MAX: usize = 8;

fn parse_header(header: &str) -> Result<ParsedHeader<'_>, SignatureError> {
    let mut timestamp_text = None;
    let mut v1_digests = Vec::new();
    let mut v1_values = 0usize;
    for item in header.split(',') {
        let Some((scheme, value)) = item.trim().split_once('=') else {
            return Err(SignatureError::Malformed("an item is not `key=value`"));
        };
        match scheme {
            "t" if timestamp_text.is_some() => {
                return Err(SignatureError::Malformed("more than one timestamp"))
            }
            "t" => timestamp_text = Some(value),
            "v1" => {
                v1_values += 1;
                if v1_values > V1_VALUES_MAX {
                    return Err(SignatureError::Malformed("too many v1 signatures"));
                }
                // A value that is not a 32-byte hex digest can never match: skip it rather
                // than refuse, like Stripe's own libraries.
                let mut digest = [0u8; DIGEST_BYTES];
                if hex::decode_to_slice(value, &mut digest).is_ok() {
                    v1_digests.push(digest);
                }
            }
            // v0 and future schemes are ignored: only v1 is verified.
            _ => {}
        }
    }
    let timestamp_text = timestamp_text.ok_or(SignatureError::Malformed("no timestamp"))?;
    let timestamp_s = timestamp_text
        .parse::<i64>()
        .map_err(|_| SignatureError::Malformed("the timestamp is not an integer"))?;
    if v1_values == 0 {
        return Err(SignatureError::Malformed("no v1 signature"));
    }
    Ok(ParsedHeader {
        timestamp_text,
        timestamp_s,
        v1_digests,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_current";
    const PREVIOUS: &str = "whsec_previous";
    const BODY: &[u8] = br#"{"id":"evt_1","type":"charge.succeeded"}"#;
    const NOW: i64 = 1_700_000_000;

    fn digest_hex(secret: &str, timestamp_s: i64, body: &[u8]) -> String {
        hex::encode(expected_digest(secret, &timestamp_s.to_string(), body))
    }

    #[test]
    fn a_valid_signature_is_accepted() {
        // Goal: Stripe's scheme hex(HMAC(secret, "{t}.{body}")) verifies.
        let header = sign_header(SECRET, NOW, BODY);
        assert_eq!(verify_signature(&header, BODY, &[SECRET], 300, NOW), Ok(()));
    }

    #[test]
    fn the_digest_matches_an_independent_computation() {
        // Goal: the message is exactly "{t}.{body}" keyed by the whole secret string.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"whsec_current").unwrap();
        mac.update(format!("{NOW}.").as_bytes());
        mac.update(BODY);
        let independent = hex::encode(mac.finalize().into_bytes());
        assert_eq!(digest_hex(SECRET, NOW, BODY), independent);
    }

    #[test]
    fn any_of_several_v1_values_may_match() {
        // Goal: during Stripe's rotation the header carries two v1; either one suffices.
        let good = digest_hex(SECRET, NOW, BODY);
        let other = digest_hex("whsec_other", NOW, BODY);
        let header = format!("t={NOW},v1={other},v1={good},v0=deadbeef");
        assert_eq!(verify_signature(&header, BODY, &[SECRET], 300, NOW), Ok(()));
        let header = format!("t={NOW},v1={other}, v1={other}");
        assert_eq!(
            verify_signature(&header, BODY, &[SECRET], 300, NOW),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn the_previous_secret_is_accepted_during_a_rotation() {
        // Goal: a delivery signed with the previous secret passes only when it is configured.
        let header = sign_header(PREVIOUS, NOW, BODY);
        assert_eq!(
            verify_signature(&header, BODY, &[SECRET, PREVIOUS], 300, NOW),
            Ok(())
        );
        assert_eq!(
            verify_signature(&header, BODY, &[SECRET], 300, NOW),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn a_tampered_body_or_timestamp_is_refused() {
        // Goal: changing one byte of the body, or the timestamp, breaks the signature.
        let header = sign_header(SECRET, NOW, BODY);
        let tampered = br#"{"id":"evt_2","type":"charge.succeeded"}"#;
        assert_eq!(
            verify_signature(&header, tampered, &[SECRET], 300, NOW),
            Err(SignatureError::NoMatch)
        );
        let moved = header.replace(&format!("t={NOW}"), &format!("t={}", NOW + 1));
        assert_eq!(
            verify_signature(&moved, BODY, &[SECRET], 300, NOW),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn stale_and_future_timestamps_are_refused() {
        // Goal: |now − t| > tolerance fails both ways; exactly at the tolerance passes.
        let old = sign_header(SECRET, NOW - 301, BODY);
        assert_eq!(
            verify_signature(&old, BODY, &[SECRET], 300, NOW),
            Err(SignatureError::StaleTimestamp {
                age_s: 301,
                tolerance_s: 300
            })
        );
        let future = sign_header(SECRET, NOW + 301, BODY);
        assert!(matches!(
            verify_signature(&future, BODY, &[SECRET], 300, NOW),
            Err(SignatureError::StaleTimestamp { age_s: 301, .. })
        ));
        let edge = sign_header(SECRET, NOW - 300, BODY);
        assert_eq!(verify_signature(&edge, BODY, &[SECRET], 300, NOW), Ok(()));
    }

    #[test]
    fn an_unsigned_stale_delivery_learns_only_no_match() {
        // Goal: the signature is checked before the timestamp.
        let forged = sign_header("whsec_guess", NOW - 10_000, BODY);
        assert_eq!(
            verify_signature(&forged, BODY, &[SECRET], 300, NOW),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        // Goal: missing or broken parts are Malformed, never a pass.
        let good = digest_hex(SECRET, NOW, BODY);
        for header in [
            String::new(),
            format!("v1={good}"),
            format!("t=abc,v1={good}"),
            format!("t={NOW}"),
            format!("t={NOW},v0={good}"),
            format!("t={NOW},t={NOW},v1={good}"),
            format!("t={NOW};v1={good}"),
            format!("t={NOW},{}", vec![format!("v1={good}"); 9].join(",")),
        ] {
            assert!(
                matches!(
                    verify_signature(&header, BODY, &[SECRET], 300, NOW),
                    Err(SignatureError::Malformed(_))
                ),
                "{header:?}"
            );
        }
    }

    #[test]
    fn empty_secrets_and_bad_hex_never_match() {
        // Goal: an unset secret is not an empty HMAC key anyone could sign with.
        let header = sign_header("", NOW, BODY);
        assert_eq!(
            verify_signature(&header, BODY, &[""], 300, NOW),
            Err(SignatureError::NoMatch)
        );
        let header = format!("t={NOW},v1=zz");
        assert_eq!(
            verify_signature(&header, BODY, &[SECRET], 300, NOW),
            Err(SignatureError::NoMatch)
        );
    }
}
