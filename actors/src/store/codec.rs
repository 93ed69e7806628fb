//! The versioned envelope of every stored value: `[schema version u8][bincode 1.3.3 bytes]`.
//!
//! Bincode is not self-describing (STYLE.md stack notes): adding a field breaks old bytes and
//! reordering enum variants silently decodes the wrong variant. So every stored type names its
//! current schema version; a change to its shape bumps the version, keeps the old shape as a
//! private `…V1` struct and converts it in [`Versioned::decode_older`] (migration on read).
//! Golden-bytes tests below pin the current format of each stored type.

use bincode::Options;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::StoreError;

/// Upper bound on one decoded value: a corrupt length prefix must not allocate gigabytes.
const DECODED_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// A type stored in sled behind the version byte.
pub trait Versioned: Serialize + DeserializeOwned {
    /// Schema version written by this build.
    const VERSION: u8;
    /// Name used in error messages.
    const NAME: &'static str;

    /// Decodes a value written with an older schema `version` (migration on read). The
    /// default knows no older version.
    fn decode_older(version: u8, payload: &[u8]) -> Result<Self, StoreError> {
        let _ = payload;
        Err(unknown_version::<Self>(version))
    }
}

/// The bincode configuration of every stored value: fixed-width little-endian integers (the
/// classic `bincode::serialize` format), a size limit, and no trailing garbage.
fn bincode_options() -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .with_limit(DECODED_BYTES_MAX)
        .reject_trailing_bytes()
}

/// Encodes the payload only (no version byte); used by [`encode`] and by migrations that
/// need the raw format of an older shape.
pub fn encode_payload<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    bincode_options()
        .serialize(value)
        .map_err(|err| StoreError::Codec(format!("encoding failed: {err}")))
}

/// Decodes a payload (no version byte) as `T`.
pub fn decode_payload<T: DeserializeOwned>(name: &str, payload: &[u8]) -> Result<T, StoreError> {
    bincode_options()
        .deserialize(payload)
        .map_err(|err| StoreError::Codec(format!("{name}: {err}")))
}

/// Decodes a payload (no version byte) as a `T` that borrows from it (no copies of strings:
/// for reading a few fields of large values).
pub fn decode_payload_borrowed<'a, T: serde::Deserialize<'a>>(
    name: &str,
    payload: &'a [u8],
) -> Result<T, StoreError> {
    bincode_options()
        .deserialize(payload)
        .map_err(|err| StoreError::Codec(format!("{name}: {err}")))
}

/// `[T::VERSION][bincode(value)]`.
pub fn encode<T: Versioned>(value: &T) -> Result<Vec<u8>, StoreError> {
    let mut bytes = Vec::with_capacity(64);
    bytes.push(T::VERSION);
    bincode_options()
        .serialize_into(&mut bytes, value)
        .map_err(|err| StoreError::Codec(format!("encoding {} failed: {err}", T::NAME)))?;
    Ok(bytes)
}

/// Decodes an envelope; older versions go through [`Versioned::decode_older`].
pub fn decode<T: Versioned>(bytes: &[u8]) -> Result<T, StoreError> {
    let Some((&version, payload)) = bytes.split_first() else {
        return Err(StoreError::Codec(format!(
            "{}: empty value (no version byte)",
            T::NAME
        )));
    };
    if version == T::VERSION {
        return decode_payload(T::NAME, payload);
    }
    if version > T::VERSION || version == 0 {
        return Err(unknown_version::<T>(version));
    }
    T::decode_older(version, payload)
}

/// The error for a version this build cannot read (for example written by a newer Steward).
pub fn unknown_version<T: Versioned>(version: u8) -> StoreError {
    StoreError::Codec(format!(
        "{}: unknown schema version {version} (this build reads up to version {}); was the data written by a newer Steward?",
        T::NAME,
        T::VERSION
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    // A worked example of the migration pattern: version 1 had no `note`; version 2 adds it.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct ExampleV1 {
        id: u64,
        name: String,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Example {
        id: u64,
        name: String,
        note: Option<String>,
    }

    impl Versioned for ExampleV1 {
        const VERSION: u8 = 1;
        const NAME: &'static str = "ExampleV1";
    }

    impl Versioned for Example {
        const VERSION: u8 = 2;
        const NAME: &'static str = "Example";
        fn decode_older(version: u8, payload: &[u8]) -> Result<Self, StoreError> {
            match version {
                1 => {
                    let old: ExampleV1 = decode_payload("Example v1", payload)?;
                    Ok(Example {
                        id: old.id,
                        name: old.name,
                        note: None,
                    })
                }
                other => Err(unknown_version::<Self>(other)),
            }
        }
    }

    #[test]
    fn version_one_bytes_are_migrated_on_read() {
        // Goal: bytes written by schema v1 decode as the v2 type with the new field defaulted.
        let old = ExampleV1 {
            id: 7,
            name: "a".into(),
        };
        let bytes = encode(&old).unwrap();
        assert_eq!(bytes[0], 1);
        let migrated: Example = decode(&bytes).unwrap();
        assert_eq!(
            migrated,
            Example {
                id: 7,
                name: "a".into(),
                note: None
            }
        );
        let current = Example {
            id: 7,
            name: "a".into(),
            note: Some("n".into()),
        };
        assert_eq!(
            decode::<Example>(&encode(&current).unwrap()).unwrap(),
            current
        );
    }

    #[test]
    fn unknown_and_empty_versions_are_clear_codec_errors() {
        // Goal: a newer version, version 0 and an empty value are refused with a Codec error.
        let mut bytes = encode(&Example {
            id: 1,
            name: "x".into(),
            note: None,
        })
        .unwrap();
        bytes[0] = 9;
        let err = decode::<Example>(&bytes).unwrap_err();
        assert!(
            matches!(&err, StoreError::Codec(m) if m.contains("unknown schema version 9")),
            "{err}"
        );
        bytes[0] = 0;
        assert!(matches!(
            decode::<Example>(&bytes),
            Err(StoreError::Codec(_))
        ));
        assert!(matches!(decode::<Example>(&[]), Err(StoreError::Codec(m)) if m.contains("empty")));
    }

    #[test]
    fn trailing_bytes_and_truncation_are_refused() {
        // Goal: a value with extra or missing bytes does not decode silently.
        let mut bytes = encode(&ExampleV1 {
            id: 1,
            name: "x".into(),
        })
        .unwrap();
        bytes.push(0);
        assert!(decode::<ExampleV1>(&bytes).is_err());
        bytes.truncate(bytes.len() - 3);
        assert!(decode::<ExampleV1>(&bytes).is_err());
    }
}
