//! API keys managed at run time, and the audit trail.

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::auth::Role;
use super::job_store::StoreError;
use crate::domain::{ApiKeyId, KeyLimits};

/// A key as stored: never its secret, only a keyed hash of it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredKey {
    /// The key's id (owner of its jobs).
    pub key_id: ApiKeyId,
    /// A human name given at creation.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// The first characters of the secret, to recognise it in a list.
    pub prefix: String,
    /// HMAC-SHA256 of the secret under the server's `SECRET_KEY`, hex.
    pub hash: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was last used to authenticate.
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked; a revoked key authenticates no more.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Its quotas (none by default).
    #[serde(default)]
    pub limits: KeyLimits,
}

impl fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredKey")
            .field("key_id", &self.key_id)
            .field("name", &self.name)
            .field("role", &self.role)
            .field("prefix", &self.prefix)
            .field("revoked", &self.revoked_at.is_some())
            .finish_non_exhaustive()
    }
}

/// Keys created through the admin API.
///
/// Contract (checked by `testing::conformance::key_store`): `create` fails with
/// [`StoreError::Conflict`] on a duplicate id or hash; `find_by_hash` ignores
/// revoked keys; `revoke` is idempotent and returns `false` for an unknown id;
/// `set_key_limits` replaces the limits `list` and `find` then return;
/// `list` returns every key (revoked too) oldest first.
#[async_trait]
pub trait KeyStore: Send + Sync + fmt::Debug {
    /// Stores a new key.
    async fn create_key(&self, key: StoredKey) -> Result<(), StoreError>;
    /// Every key, oldest first.
    async fn list_keys(&self) -> Result<Vec<StoredKey>, StoreError>;
    /// The live (not revoked) key with this hash.
    async fn find_key_by_hash(&self, hash: &str) -> Result<Option<StoredKey>, StoreError>;
    /// The key with this id, live or revoked. The default reads the whole
    /// list; stores override it with a lookup.
    async fn find_key(&self, key_id: &ApiKeyId) -> Result<Option<StoredKey>, StoreError> {
        Ok(self
            .list_keys()
            .await?
            .into_iter()
            .find(|k| &k.key_id == key_id))
    }
    /// Revokes a key; `false` when no key has this id.
    async fn revoke_key(&self, key_id: &ApiKeyId) -> Result<bool, StoreError>;
    /// Replaces a key's limits (revoked keys too); `false` when no key has
    /// this id.
    async fn set_key_limits(
        &self,
        key_id: &ApiKeyId,
        limits: KeyLimits,
    ) -> Result<bool, StoreError>;
    /// Records a use of the key.
    async fn touch_key(&self, key_id: &ApiKeyId, at: DateTime<Utc>) -> Result<(), StoreError>;
}

/// One audit record: who did what, from where. Never a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// When it happened.
    pub at: DateTime<Utc>,
    /// What happened, e.g. `auth_failed`, `rate_limited`, `key_created`,
    /// `key_revoked`, `job_deleted`, `cleanup`.
    pub kind: String,
    /// The key that acted, when known.
    pub actor: Option<ApiKeyId>,
    /// The client IP, when known.
    pub client_ip: Option<String>,
    /// The request's id, to join with logs.
    pub request_id: Option<String>,
    /// Details as JSON (ids, counts, reasons).
    pub detail: serde_json::Value,
}

/// An append-only audit trail.
#[async_trait]
pub trait AuditLog: Send + Sync + fmt::Debug {
    /// Appends a record.
    async fn record(&self, event: AuditEvent) -> Result<(), StoreError>;
    /// The newest records first, at most `limit` (capped at 1000), optionally
    /// only those older than `before`.
    async fn recent(
        &self,
        limit: u32,
        before: Option<DateTime<Utc>>,
    ) -> Result<Vec<AuditEvent>, StoreError>;
    /// Removes every record from before `before` (the retention task's,
    /// `AUDIT_RETENTION_DAYS`) and returns how many went. Stores remove them
    /// in bounded batches, so writers wait for one batch at most.
    async fn prune(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;
}
