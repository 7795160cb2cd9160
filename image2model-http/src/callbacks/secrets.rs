//! Each key's webhook signing secret, derived, never stored.
//!
//! A key's secret is `whsec_` and the hex of
//! `HMAC-SHA256(webhook key, "i2m-webhook-secret-v1\n{key id}\n{seed}")`,
//! where the webhook key is `HMAC-SHA256(SECRET_KEY, WEBHOOK_KEY_CONTEXT)`
//! and the seed is random, kept in the job store
//! ([`image2model_core::domain::WebhookSettings::secret_seed`]). So a copy of
//! the database alone signs nothing, a rotation (a new seed) ends the old
//! secret at once, and the secret is shown once: when it is made.
//!
//! Without `SECRET_KEY` (development only) the webhook key is random per
//! process: secrets then change when the server restarts.

use hmac::{Hmac, Mac};
use image2model_core::callbacks::SECRET_PREFIX;
use image2model_core::domain::ApiKeyId;
use secrecy::SecretString;
use sha2::Sha256;

use crate::links::derived_key;

/// What the webhook key is derived with. Changing it changes every secret.
pub const WEBHOOK_KEY_CONTEXT: &str = "image2model webhook secrets v1";

/// Derives keys' webhook secrets (see the module docs). Its `Debug` form
/// shows no key.
#[derive(Clone)]
pub struct WebhookSecrets {
    key: [u8; 32],
}

impl std::fmt::Debug for WebhookSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSecrets").finish_non_exhaustive()
    }
}

impl WebhookSecrets {
    /// The secrets of a configuration's `SECRET_KEY` (random per process
    /// without one, with a warning).
    #[must_use]
    pub fn from_secret(secret: Option<&SecretString>) -> Self {
        Self {
            key: derived_key(
                secret,
                WEBHOOK_KEY_CONTEXT,
                "webhook secrets are derived from a random key and change when this process ends",
            ),
        }
    }

    /// A new random seed (16 bytes, hex).
    #[must_use]
    pub fn new_seed() -> String {
        use rand::Rng;
        hex::encode(rand::rng().random::<[u8; 16]>())
    }

    /// `owner`'s secret for `seed`.
    #[must_use]
    pub fn secret(&self, owner: &ApiKeyId, seed: &str) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(format!("i2m-webhook-secret-v1\n{owner}\n{seed}").as_bytes());
        format!(
            "{SECRET_PREFIX}{}",
            hex::encode(mac.finalize().into_bytes())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_depend_on_the_server_secret_the_owner_and_the_seed() {
        let server = SecretString::from("s".repeat(32));
        let a = WebhookSecrets::from_secret(Some(&server));
        let b = WebhookSecrets::from_secret(Some(&server));
        let alice = ApiKeyId::parse("alice").unwrap();
        let bob = ApiKeyId::parse("bob").unwrap();
        let s = a.secret(&alice, "seed");
        assert!(s.starts_with("whsec_") && s.len() == 6 + 64);
        assert_eq!(
            s,
            b.secret(&alice, "seed"),
            "the same inputs give the same secret"
        );
        assert_ne!(s, a.secret(&bob, "seed"));
        assert_ne!(s, a.secret(&alice, "other"));
        let other = WebhookSecrets::from_secret(Some(&SecretString::from("t".repeat(32))));
        assert_ne!(s, other.secret(&alice, "seed"));
        assert_ne!(WebhookSecrets::new_seed(), WebhookSecrets::new_seed());
    }
}
