//! The bootstrap keys: `API_KEY` (role user) and `ADMIN_API_KEY` (role admin).

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::domain::{ApiKeyId, KeyLimits};
use chrono::Utc;

use crate::ports::{AuthError, AuthPolicy, KeyStore, Principal, Role, StoreError, StoredKey};

/// An [`AuthPolicy`] over a fixed set of keys, compared in constant time.
///
/// Secrets are kept only as SHA-256 digests, and a presented secret is hashed
/// and compared with every key's digest (no early exit), so neither the time
/// taken nor memory reveals which key, or how much of one, matched.
///
/// ```
/// # tokio_test::block_on(async {
/// use image2model_core::auth::StaticKeys;
/// use image2model_core::ports::{AuthPolicy, Role};
/// let keys = StaticKeys::bootstrap(Some("user-secret".into()), Some("admin-secret".into()));
/// let who = keys.authenticate(&"admin-secret".into()).await.unwrap().unwrap();
/// assert_eq!(who.role, Role::Admin);
/// assert!(keys.authenticate(&"user-secre".into()).await.unwrap().is_none());
/// # });
/// ```
#[derive(Clone, Default)]
pub struct StaticKeys {
    keys: Vec<([u8; 32], Principal)>,
}

impl std::fmt::Debug for StaticKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticKeys")
            .field("keys", &self.keys.len())
            .finish()
    }
}

/// SHA-256 of a secret.
#[must_use]
pub fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

impl StaticKeys {
    /// The bootstrap keys; `None` or empty ones are left out.
    #[must_use]
    pub fn bootstrap(user: Option<SecretString>, admin: Option<SecretString>) -> Self {
        let mut keys = Self::default();
        if let Some(k) = user.filter(|k| !k.expose_secret().is_empty()) {
            keys.add(
                &k,
                Principal {
                    key_id: ApiKeyId::bootstrap_user(),
                    role: Role::User,
                    limits: KeyLimits::default(),
                },
            );
        }
        if let Some(k) = admin.filter(|k| !k.expose_secret().is_empty()) {
            keys.add(
                &k,
                Principal {
                    key_id: ApiKeyId::bootstrap_admin(),
                    role: Role::Admin,
                    limits: KeyLimits::default(),
                },
            );
        }
        keys
    }

    /// Sets the quotas of the key with id `key_id` (e.g. the bootstrap user
    /// key's, from configuration); `false` when there is no such key here.
    pub fn set_limits(&mut self, key_id: &ApiKeyId, limits: KeyLimits) -> bool {
        let mut found = false;
        for (_, principal) in &mut self.keys {
            if &principal.key_id == key_id {
                principal.limits = limits;
                found = true;
            }
        }
        found
    }

    /// Adds a key.
    pub fn add(&mut self, secret: &SecretString, principal: Principal) {
        self.keys.push((digest(secret.expose_secret()), principal));
    }

    /// Whether one of these keys has the id `key_id`.
    #[must_use]
    pub fn contains(&self, key_id: &ApiKeyId) -> bool {
        self.keys.iter().any(|(_, p)| &p.key_id == key_id)
    }

    /// Whether no key is configured.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[async_trait]
impl AuthPolicy for StaticKeys {
    async fn authenticate(&self, secret: &SecretString) -> Result<Option<Principal>, AuthError> {
        let presented = digest(secret.expose_secret());
        let mut found = None;
        for (d, principal) in &self.keys {
            if bool::from(d.ct_eq(&presented)) && found.is_none() {
                found = Some(principal.clone());
            }
        }
        Ok(found)
    }
}

/// The prefix of every key made by [`KeyRegistry::create`].
pub const KEY_PREFIX: &str = "i2m_";

/// Bootstrap keys plus keys created at run time and stored (hashed) in a
/// [`KeyStore`]: the server's [`AuthPolicy`].
///
/// Stored keys are kept as HMAC-SHA256 digests under the server's secret (a
/// pepper: a stolen database alone cannot be used to check guesses), looked up
/// by digest, and revocation takes effect on the next request (no cache).
#[derive(Clone)]
pub struct KeyRegistry {
    bootstrap: StaticKeys,
    store: std::sync::Arc<dyn KeyStore>,
    pepper: SecretString,
}

impl std::fmt::Debug for KeyRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRegistry")
            .field("bootstrap", &self.bootstrap)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// Why a key could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The name is empty, longer than 64 characters or has control characters.
    #[error("a key name must be 1 to 64 printable characters")]
    InvalidName,
    /// The key store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl KeyRegistry {
    /// A registry over `store`, hashing with `pepper` (the server's `SECRET_KEY`).
    #[must_use]
    pub fn new(
        bootstrap: StaticKeys,
        store: std::sync::Arc<dyn KeyStore>,
        pepper: SecretString,
    ) -> Self {
        Self {
            bootstrap,
            store,
            pepper,
        }
    }

    /// The stored digest of a secret.
    #[must_use]
    pub fn hash(&self, secret: &str) -> String {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(self.pepper.expose_secret().as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(secret.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Creates a key without limits; its secret is returned this once and
    /// never stored.
    ///
    /// # Errors
    /// [`KeyError::InvalidName`], store errors.
    pub async fn create(
        &self,
        name: &str,
        role: Role,
    ) -> Result<(StoredKey, SecretString), KeyError> {
        self.create_with_limits(name, role, KeyLimits::default())
            .await
    }

    /// Creates a key with quotas; its secret is returned this once and never
    /// stored.
    ///
    /// # Errors
    /// [`KeyError::InvalidName`], store errors.
    pub async fn create_with_limits(
        &self,
        name: &str,
        role: Role,
        limits: KeyLimits,
    ) -> Result<(StoredKey, SecretString), KeyError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
            return Err(KeyError::InvalidName);
        }
        use rand::Rng;
        let random: [u8; 24] = rand::rng().random();
        let secret = format!("{KEY_PREFIX}{}", hex::encode(random));
        let key = StoredKey {
            key_id: ApiKeyId::generate(),
            name: name.to_owned(),
            role,
            prefix: secret[..KEY_PREFIX.len() + 8].to_owned(),
            hash: self.hash(&secret),
            created_at: Utc::now(),
            last_used_at: None,
            revoked_at: None,
            limits,
        };
        self.store.create_key(key.clone()).await?;
        Ok((key, SecretString::from(secret)))
    }

    /// Every stored key (not the bootstrap ones), oldest first.
    ///
    /// # Errors
    /// Store errors.
    pub async fn list(&self) -> Result<Vec<StoredKey>, StoreError> {
        self.store.list_keys().await
    }

    /// Whether `key_id` names a key that would authenticate now: one of the
    /// bootstrap keys, or a stored key that is not revoked. Reads the stored
    /// key on every call (no cache), so a revocation counts at once.
    ///
    /// # Errors
    /// Store errors.
    pub async fn is_live(&self, key_id: &ApiKeyId) -> Result<bool, StoreError> {
        if self.bootstrap.contains(key_id) {
            return Ok(true);
        }
        Ok(self
            .store
            .find_key(key_id)
            .await?
            .is_some_and(|k| k.revoked_at.is_none()))
    }

    /// Replaces a stored key's limits (from its next request on); `false`
    /// when there is none with this id.
    ///
    /// # Errors
    /// Store errors.
    pub async fn set_limits(
        &self,
        key_id: &ApiKeyId,
        limits: KeyLimits,
    ) -> Result<bool, StoreError> {
        self.store.set_key_limits(key_id, limits).await
    }

    /// Revokes a stored key; `false` when there is none with this id.
    ///
    /// # Errors
    /// Store errors.
    pub async fn revoke(&self, key_id: &ApiKeyId) -> Result<bool, StoreError> {
        self.store.revoke_key(key_id).await
    }
}

#[async_trait]
impl AuthPolicy for KeyRegistry {
    async fn authenticate(&self, secret: &SecretString) -> Result<Option<Principal>, AuthError> {
        if let Some(principal) = self.bootstrap.authenticate(secret).await? {
            return Ok(Some(principal));
        }
        let presented = secret.expose_secret();
        if !presented.starts_with(KEY_PREFIX) || presented.len() > 128 {
            return Ok(None);
        }
        let found = self
            .store
            .find_key_by_hash(&self.hash(presented))
            .await
            .map_err(|e| AuthError::Unavailable(e.code().to_owned()))?;
        let Some(key) = found else { return Ok(None) };
        let now = Utc::now();
        // Record use at most once a minute per key, to keep writes off the hot path.
        if key
            .last_used_at
            .is_none_or(|t| now - t > chrono::Duration::seconds(60))
            && let Err(e) = self.store.touch_key(&key.key_id, now).await
        {
            tracing::warn!(key_id = %key.key_id, error = %e, "could not record key use");
        }
        Ok(Some(Principal {
            key_id: key.key_id,
            role: key.role,
            limits: key.limits,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryKeyStore;
    use std::sync::Arc;

    fn registry() -> KeyRegistry {
        KeyRegistry::new(
            StaticKeys::bootstrap(Some("user-key".into()), Some("admin-key".into())),
            Arc::new(MemoryKeyStore::default()),
            SecretString::from("pepper-for-tests"),
        )
    }

    #[tokio::test]
    async fn created_keys_authenticate_until_revoked() {
        let reg = registry();
        let (key, secret) = reg.create("ci runner", Role::User).await.unwrap();
        assert!(secret.expose_secret().starts_with(&key.prefix));
        assert_ne!(key.hash, secret.expose_secret());
        let who = reg.authenticate(&secret).await.unwrap().unwrap();
        assert_eq!(
            (who.key_id.clone(), who.role),
            (key.key_id.clone(), Role::User)
        );
        assert!(reg.list().await.unwrap()[0].last_used_at.is_some());
        assert!(reg.revoke(&key.key_id).await.unwrap());
        assert!(reg.authenticate(&secret).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn bootstrap_and_unrevoked_stored_keys_are_live() {
        let reg = registry();
        assert!(reg.is_live(&ApiKeyId::bootstrap_user()).await.unwrap());
        assert!(reg.is_live(&ApiKeyId::bootstrap_admin()).await.unwrap());
        assert!(!reg.is_live(&ApiKeyId::generate()).await.unwrap());
        let (key, _) = reg.create("links", Role::User).await.unwrap();
        assert!(reg.is_live(&key.key_id).await.unwrap());
        assert!(reg.revoke(&key.key_id).await.unwrap());
        assert!(!reg.is_live(&key.key_id).await.unwrap());
        let none = KeyRegistry::new(
            StaticKeys::default(),
            Arc::new(MemoryKeyStore::default()),
            "p".into(),
        );
        assert!(!none.is_live(&ApiKeyId::bootstrap_user()).await.unwrap());
    }

    #[tokio::test]
    async fn bootstrap_keys_and_unknown_keys() {
        let reg = registry();
        assert_eq!(
            reg.authenticate(&"admin-key".into())
                .await
                .unwrap()
                .unwrap()
                .role,
            Role::Admin
        );
        for bad in ["", "user-key ", "user-ke", "i2m_0000", "Bearer user-key"] {
            assert!(
                reg.authenticate(&bad.into()).await.unwrap().is_none(),
                "{bad:?}"
            );
        }
        assert!(matches!(
            reg.create(" ", Role::User).await,
            Err(KeyError::InvalidName)
        ));
    }

    #[tokio::test]
    async fn the_digest_depends_on_the_pepper() {
        let other = KeyRegistry::new(
            StaticKeys::default(),
            Arc::new(MemoryKeyStore::default()),
            "another".into(),
        );
        assert_ne!(registry().hash("i2m_x"), other.hash("i2m_x"));
    }
}
