//! The bootstrap keys: `API_KEY` (role user) and `ADMIN_API_KEY` (role admin).

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::domain::ApiKeyId;
use crate::ports::{AuthError, AuthPolicy, Principal, Role};

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
                },
            );
        }
        if let Some(k) = admin.filter(|k| !k.expose_secret().is_empty()) {
            keys.add(
                &k,
                Principal {
                    key_id: ApiKeyId::bootstrap_admin(),
                    role: Role::Admin,
                },
            );
        }
        keys
    }

    /// Adds a key.
    pub fn add(&mut self, secret: &SecretString, principal: Principal) {
        self.keys.push((digest(secret.expose_secret()), principal));
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
