//! The master key that seals tenant secrets at rest (ARCHITECTURE.md, "Invariants").
//!
//! XChaCha20-Poly1305 with a random 24-byte nonce stored in front of the ciphertext: random
//! nonces of that size never collide in practice, so no nonce counter has to be persisted.
//! The associated data binds a sealed value to its tenant and field: a secret copied to another
//! tenant or field does not open.

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

use super::{MasterKey, StoreError};

pub const MASTER_KEY_FILE: &str = "master.key";
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;

fn associated_data(tenant_id: &str, field: &str) -> Vec<u8> {
    let mut data = Vec::with_capacity(tenant_id.len() + 1 + field.len());
    data.extend_from_slice(tenant_id.as_bytes());
    data.push(0);
    data.extend_from_slice(field.as_bytes());
    data
}

fn decode_key(base64_text: &str, origin: &str) -> Result<[u8; KEY_LEN], StoreError> {
    let bytes = BASE64
        .decode(base64_text.trim())
        .map_err(|err| StoreError::MasterKey(format!("{origin} is not valid Base64: {err}")))?;
    <[u8; KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| {
        StoreError::MasterKey(format!(
            "{origin} decodes to {} bytes; the master key must be exactly {KEY_LEN} bytes (Base64 of 32 random bytes)",
            bytes.len()
        ))
    })
}

impl MasterKey {
    pub(crate) fn from_bytes(key: &[u8; KEY_LEN]) -> MasterKey {
        MasterKey {
            cipher: XChaCha20Poly1305::new(key.into()),
        }
    }

    /// From `STEWARD_MASTER_KEY` (32 bytes, Base64) when given, else from
    /// `{data_dir}/master.key`, created with mode 0600 on first start.
    /// Returns the key and whether it was generated now.
    pub fn load_or_create(
        data_dir: &Path,
        env_value: Option<&str>,
    ) -> Result<(MasterKey, bool), StoreError> {
        if let Some(value) = env_value {
            let key = decode_key(value, "STEWARD_MASTER_KEY")?;
            return Ok((MasterKey::from_bytes(&key), false));
        }
        let path = data_dir.join(MASTER_KEY_FILE);
        let shown = path.display();
        match fs::metadata(&path) {
            Ok(metadata) => {
                let mode = metadata.permissions().mode();
                if mode & 0o077 != 0 {
                    return Err(StoreError::MasterKey(format!(
                        "{shown} is readable by group or others (mode {:o}); run `chmod 600 {shown}` and start again",
                        mode & 0o777
                    )));
                }
                let text = fs::read_to_string(&path)
                    .map_err(|err| StoreError::MasterKey(format!("cannot read {shown}: {err}")))?;
                let key = decode_key(&text, &shown.to_string())?;
                Ok((MasterKey::from_bytes(&key), false))
            }
            Err(err) if err.kind() == ErrorKind::NotFound => create_key_file(data_dir, &path),
            Err(err) => Err(StoreError::MasterKey(format!(
                "cannot inspect {shown}: {err}"
            ))),
        }
    }

    pub fn seal(&self, tenant_id: &str, field: &str, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let aad = associated_data(tenant_id, field);
        let ciphertext = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .expect("XChaCha20-Poly1305 encryption only fails for messages beyond 256 GiB");
        let mut sealed = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    pub fn open(&self, tenant_id: &str, field: &str, sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        if sealed.len() < NONCE_LEN + 16 {
            return Err(StoreError::Seal(format!(
                "{field} of tenant {tenant_id}: sealed value too short"
            )));
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let aad = associated_data(tenant_id, field);
        self.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| StoreError::Seal(format!("{field} of tenant {tenant_id}")))
    }
}

fn create_key_file(data_dir: &Path, path: &Path) -> Result<(MasterKey, bool), StoreError> {
    let shown = path.display();
    fs::create_dir_all(data_dir).map_err(|err| {
        StoreError::MasterKey(format!("cannot create {}: {err}", data_dir.display()))
    })?;
    let mut key = [0u8; KEY_LEN];
    rand::rngs::OsRng.fill_bytes(&mut key);
    // create_new: two processes starting at once must not both write a key; mode 0600 from
    // the start so the key is never readable by others, not even for a moment.
    let mut file = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(file) => file,
        Err(err) if err.kind() == ErrorKind::AlreadyExists => {
            return MasterKey::load_or_create(data_dir, None);
        }
        Err(err) => {
            return Err(StoreError::MasterKey(format!(
                "cannot create {shown}: {err}"
            )))
        }
    };
    let mut text = BASE64.encode(key);
    text.push('\n');
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|err| StoreError::MasterKey(format!("cannot write {shown}: {err}")))?;
    // The directory entry must be durable too, or a crash could forget the key that sealed
    // secrets already stored.
    if let Ok(dir) = fs::File::open(data_dir) {
        let _ = dir.sync_all();
    }
    tracing::info!(path = %shown, "generated a new master key; back it up: sealed secrets cannot be opened without it");
    Ok((MasterKey::from_bytes(&key), true))
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(redacted)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> MasterKey {
        MasterKey::from_bytes(&[7u8; KEY_LEN])
    }

    #[test]
    fn sealed_secrets_round_trip_with_a_fresh_nonce() {
        // Goal: open(seal(x)) == x, and two seals of one value differ (random nonce).
        let key = key();
        let a = key.seal("t1", "/virtuous/api_key", b"secret");
        let b = key.seal("t1", "/virtuous/api_key", b"secret");
        assert_ne!(a, b);
        assert_eq!(key.open("t1", "/virtuous/api_key", &a).unwrap(), b"secret");
        assert!(
            !a.windows(6).any(|w| w == b"secret"),
            "plaintext must not appear in sealed bytes"
        );
    }

    #[test]
    fn wrong_tenant_field_key_or_tampering_fail() {
        // Goal: the associated data binds tenant and field; any changed byte or key fails to open.
        let key = key();
        let sealed = key.seal("t1", "/a", b"secret");
        assert!(matches!(
            key.open("t2", "/a", &sealed),
            Err(StoreError::Seal(_))
        ));
        assert!(matches!(
            key.open("t1", "/b", &sealed),
            Err(StoreError::Seal(_))
        ));
        // "t1\0/a" vs "t1/\0a": the separator keeps (tenant, field) pairs distinct.
        assert!(key.open("t1/", "a", &sealed).is_err());
        for index in [0, NONCE_LEN, sealed.len() - 1] {
            let mut tampered = sealed.clone();
            tampered[index] ^= 1;
            assert!(
                key.open("t1", "/a", &tampered).is_err(),
                "byte {index} tampered"
            );
        }
        assert!(key.open("t1", "/a", &sealed[..10]).is_err());
        assert!(MasterKey::from_bytes(&[8u8; KEY_LEN])
            .open("t1", "/a", &sealed)
            .is_err());
    }

    #[test]
    fn key_file_is_created_once_with_mode_0600() {
        // Goal: first start creates master.key (0600, 32 bytes Base64); the second start reads it back.
        let dir = tempfile::tempdir().unwrap();
        let (first, created) = MasterKey::load_or_create(dir.path(), None).unwrap();
        assert!(created);
        let path = dir.path().join(MASTER_KEY_FILE);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let decoded = BASE64
            .decode(fs::read_to_string(&path).unwrap().trim())
            .unwrap();
        assert_eq!(decoded.len(), KEY_LEN);
        let (second, created_again) = MasterKey::load_or_create(dir.path(), None).unwrap();
        assert!(!created_again);
        let sealed = first.seal("t", "/f", b"x");
        assert_eq!(second.open("t", "/f", &sealed).unwrap(), b"x");
    }

    #[test]
    fn env_value_wins_and_bad_values_are_clear_errors() {
        // Goal: a valid env key is used (no file written); a short or non-Base64 key is refused.
        let dir = tempfile::tempdir().unwrap();
        let env = BASE64.encode([7u8; KEY_LEN]);
        let (from_env, created) = MasterKey::load_or_create(dir.path(), Some(&env)).unwrap();
        assert!(!created);
        assert!(!dir.path().join(MASTER_KEY_FILE).exists());
        assert_eq!(
            key()
                .open("t", "/f", &from_env.seal("t", "/f", b"x"))
                .unwrap(),
            b"x"
        );
        let short = BASE64.encode([1u8; 16]);
        let err = MasterKey::load_or_create(dir.path(), Some(&short)).unwrap_err();
        assert!(
            matches!(&err, StoreError::MasterKey(m) if m.contains("16 bytes")),
            "{err}"
        );
        assert!(matches!(
            MasterKey::load_or_create(dir.path(), Some("%%%")),
            Err(StoreError::MasterKey(_))
        ));
    }

    #[test]
    fn a_bad_key_file_refuses_to_start() {
        // Goal: a key file of the wrong length or readable by others is refused, naming the file.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(MASTER_KEY_FILE);
        fs::write(&path, BASE64.encode([1u8; 31])).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let err = MasterKey::load_or_create(dir.path(), None).unwrap_err();
        assert!(
            matches!(&err, StoreError::MasterKey(m) if m.contains("31 bytes") && m.contains("master.key")),
            "{err}"
        );
        fs::write(&path, BASE64.encode([1u8; 32])).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = MasterKey::load_or_create(dir.path(), None).unwrap_err();
        assert!(
            matches!(&err, StoreError::MasterKey(m) if m.contains("chmod 600")),
            "{err}"
        );
    }
}
