//! Server-generated identifiers.
//!
//! `JobId` and `ItemId` are ULIDs: 26 Crockford base-32 characters, sortable by
//! creation time, opaque to clients. They are only ever made by the server
//! ([`JobId::new`]) or parsed strictly from text ([`JobId::parse`]); a parsed id
//! contains only `[0-9A-Z]`, so it can never smuggle a path separator or `..`
//! anywhere it is used.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use ulid::Ulid;

/// Why a piece of client or stored text is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind}: {reason}")]
pub struct IdError {
    /// Which identifier was being parsed (`job id`, `item id`, `key id`).
    pub kind: &'static str,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// A ULID strictly greater than every one made before by this process (ULIDs
/// made in the same millisecond are otherwise random, and ids must sort by
/// creation for listing and cursors).
fn next_ulid() -> Ulid {
    static GENERATOR: std::sync::Mutex<ulid::Generator> =
        std::sync::Mutex::new(ulid::Generator::new());
    let mut generator = GENERATOR
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    generator.generate().unwrap_or_else(|_| Ulid::new())
}

macro_rules! ulid_id {
    ($(#[$meta:meta])* $name:ident, $kind:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Ulid);

        impl $name {
            /// A new, unique id; ids made later sort after ids made earlier.
            #[must_use]
            #[allow(clippy::new_without_default)]
            pub fn new() -> Self {
                Self(next_ulid())
            }

            /// Parses the canonical 26-character upper-case form, and nothing else.
            ///
            /// # Errors
            /// [`IdError`] when the text is not exactly a canonical ULID.
            pub fn parse(text: &str) -> Result<Self, IdError> {
                if text.len() != 26 {
                    return Err(IdError { kind: $kind, reason: "must be 26 characters" });
                }
                if !text.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()) {
                    return Err(IdError { kind: $kind, reason: "must be upper-case Crockford base 32" });
                }
                let ulid = Ulid::from_string(text)
                    .map_err(|_| IdError { kind: $kind, reason: "not a valid ULID" })?;
                // Reject aliases (I, L, O, U) that decode but do not round-trip.
                if ulid.to_string() != text {
                    return Err(IdError { kind: $kind, reason: "not in canonical form" });
                }
                Ok(Self(ulid))
            }

            /// The milliseconds since the Unix epoch at which the id was made.
            #[must_use]
            pub fn timestamp_ms(&self) -> u64 {
                self.0.timestamp_ms()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                Self::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

ulid_id!(
    /// Identifies a job: one upload of one or more images.
    JobId,
    "job id"
);
ulid_id!(
    /// Identifies one image of a job and the model generated from it.
    ItemId,
    "item id"
);
ulid_id!(
    /// Identifies one webhook delivery (a job's end, told to its callback
    /// URL): every attempt of one delivery carries it, so a receiver can drop
    /// duplicates.
    DeliveryId,
    "delivery id"
);

/// Identifies an API key (never the key's secret). Jobs are owned by a key id.
///
/// Text of 1 to 64 characters from `[a-z0-9_-]`, starting with a letter or digit.
/// Bootstrap keys from the environment have fixed ids ([`ApiKeyId::bootstrap_user`],
/// [`ApiKeyId::bootstrap_admin`]); keys created through the admin API get
/// `key_` followed by a lower-case ULID ([`ApiKeyId::generate`]).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ApiKeyId(String);

impl ApiKeyId {
    /// The id of the `API_KEY` bootstrap key.
    #[must_use]
    pub fn bootstrap_user() -> Self {
        Self("bootstrap-user".to_owned())
    }

    /// The id of the `ADMIN_API_KEY` bootstrap key.
    #[must_use]
    pub fn bootstrap_admin() -> Self {
        Self("bootstrap-admin".to_owned())
    }

    /// A new unique key id, `key_<ulid>`.
    #[must_use]
    pub fn generate() -> Self {
        Self(format!(
            "key_{}",
            Ulid::new().to_string().to_ascii_lowercase()
        ))
    }

    /// Parses a key id.
    ///
    /// # Errors
    /// [`IdError`] when the text is empty, longer than 64 characters or has a
    /// character outside `[a-z0-9_-]`.
    pub fn parse(text: &str) -> Result<Self, IdError> {
        const KIND: &str = "key id";
        if text.is_empty() || text.len() > 64 {
            return Err(IdError {
                kind: KIND,
                reason: "must be 1 to 64 characters",
            });
        }
        if !text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            return Err(IdError {
                kind: KIND,
                reason: "must be [a-z0-9_-]",
            });
        }
        if !text.as_bytes()[0].is_ascii_alphanumeric() {
            return Err(IdError {
                kind: KIND,
                reason: "must start with a letter or digit",
            });
        }
        Ok(Self(text.to_owned()))
    }

    /// The id as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ApiKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ApiKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKeyId({})", self.0)
    }
}

impl FromStr for ApiKeyId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl<'de> Deserialize<'de> for ApiKeyId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn new_ids_round_trip_and_sort_by_creation() {
        let a = JobId::new();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = JobId::new();
        assert!(a < b);
        assert_eq!(JobId::parse(&a.to_string()).unwrap(), a);
    }

    #[test]
    fn path_like_and_non_canonical_text_is_rejected() {
        for bad in [
            "",
            "..",
            "../../etc/passwd",
            "01ARZ3NDEKTSV4RRFFQ69G5FA",
            "01arz3ndektsv4rrffq69g5fav",
            "01ARZ3NDEKTSV4RRFFQ69G5FA/",
            "01ARZ3NDEKTSV4RRFFQ69G5FAVX",
            "0IARZ3NDEKTSV4RRFFQ69G5FAV",
        ] {
            assert!(ItemId::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn key_ids_accept_bootstrap_and_generated_forms() {
        assert!(ApiKeyId::parse(ApiKeyId::bootstrap_user().as_str()).is_ok());
        let generated = ApiKeyId::generate();
        assert_eq!(ApiKeyId::parse(generated.as_str()).unwrap(), generated);
        for bad in ["", "-x", "A", "a/b", "a..b.", &"a".repeat(65)] {
            assert!(ApiKeyId::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    proptest! {
        #[test]
        fn any_parsed_job_id_prints_back_identically(text in "\\PC{0,40}") {
            if let Ok(id) = JobId::parse(&text) {
                prop_assert_eq!(id.to_string(), text);
            }
        }

        #[test]
        fn parsed_key_ids_never_contain_separators(text in "\\PC{0,70}") {
            if let Ok(id) = ApiKeyId::parse(&text) {
                prop_assert!(!id.as_str().contains('/') && !id.as_str().contains('.'));
            }
        }
    }
}
