//! Authentication: from a presented credential to a principal.

use std::fmt;

use async_trait::async_trait;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::domain::{ApiKeyId, KeyLimits};

/// What a key may do. Admin keys may also call user endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Upload, and see and manage its own jobs.
    User,
    /// Everything a user may, plus the admin endpoints.
    Admin,
}

impl Role {
    /// Whether this role satisfies `required`.
    #[must_use]
    pub fn allows(self, required: Role) -> bool {
        self >= required
    }

    /// The stable text form.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }

    /// Parses `user` or `admin`.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "user" => Some(Role::User),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// Who is calling: the key's id (never its secret) and its role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The key's id; jobs it creates are owned by this id.
    pub key_id: ApiKeyId,
    /// The key's role.
    pub role: Role,
    /// The key's quotas (none unless set).
    pub limits: KeyLimits,
}

/// Authentication could not be decided (a store was unreachable). An unknown
/// key is not an error: it is `Ok(None)`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The key store did not answer.
    #[error("key store unavailable: {0}")]
    Unavailable(String),
}

/// Turns a presented secret into a principal.
///
/// Implementations compare secrets in constant time and never log them.
#[async_trait]
pub trait AuthPolicy: Send + Sync + fmt::Debug {
    /// The principal that `secret` identifies, or `None` for an unknown or
    /// revoked key.
    async fn authenticate(&self, secret: &SecretString) -> Result<Option<Principal>, AuthError>;
}
