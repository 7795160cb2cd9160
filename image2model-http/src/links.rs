//! Signed, expiring download links: one item's model in one format,
//! fetched without an API key until the link expires.
//!
//! A link is a path under the API,
//! `/api/v1/links/{job_id}/{item_id}/{format}?owner={key_id}&expires={unix}&sig={hex}`,
//! where `sig` is HMAC-SHA256 over [`Link::message`] (a version tag, the
//! job id, the item id, the format, the expiry in Unix seconds and the key
//! id of the job's owner), under a key derived from `SECRET_KEY` for links
//! only ([`LinkSigner::new`]): `HMAC-SHA256(SECRET_KEY, "image2model download
//! link v1")`. So the link key is never the key-hashing pepper itself, and a
//! link's MAC cannot stand in for anything else made under `SECRET_KEY`.
//!
//! What the signature binds cannot be changed without the server's secret:
//! another item, another format, a later expiry or another owner each make
//! the signature wrong ([`LinkSigner::check`], a constant-time comparison).
//! The owner's key id is in the link (it is not a secret: the API key
//! itself never is), so a forged link is refused before any store is read;
//! the handler then checks that the owner's key is still live and loads the
//! job as that owner, so a link stops working when its job or item is
//! deleted or its owner's key is revoked.
//!
//! Without `SECRET_KEY` (development only: production refuses to start
//! without it) the link key is random per process ([`LinkSigner::random`]):
//! links then stop working when the server restarts and are not understood
//! by other instances.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use image2model_core::domain::{ApiKeyId, ItemId, JobId};
use image2model_core::gltf::ModelFormat;
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

use crate::routes::API_PREFIX;

type HmacSha256 = Hmac<Sha256>;

/// What the link key is derived with (see the module docs). Changing it
/// invalidates every link made before.
pub const LINK_KEY_CONTEXT: &str = "image2model download link v1";

/// The shortest lifetime a link may be given (seconds).
pub const MIN_LINK_SECONDS: u32 = 60;
/// The longest lifetime a link may be given: 7 days (seconds).
pub const MAX_LINK_SECONDS: u32 = 7 * 24 * 3600;
/// The lifetime of a link when none is asked for: one hour (seconds).
pub const DEFAULT_LINK_SECONDS: u32 = 3600;

/// Where links are served, under [`API_PREFIX`].
pub const LINKS_PATH: &str = "/links";

/// One link's signed fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The job.
    pub job_id: JobId,
    /// The item of the job.
    pub item_id: ItemId,
    /// The format served.
    pub format: ModelFormat,
    /// The last second (Unix time) at which the link works.
    pub expires: i64,
    /// The key id of the job's owner.
    pub owner: ApiKeyId,
}

impl Link {
    /// The signed text: fields that hold no newline, one per line, after a
    /// version tag.
    #[must_use]
    pub fn message(&self) -> String {
        format!(
            "i2m-link-v1\n{}\n{}\n{}\n{}\n{}",
            self.job_id,
            self.item_id,
            self.format.name(),
            self.expires,
            self.owner
        )
    }

    /// The expiry as a time.
    #[must_use]
    pub fn expires_at(&self) -> DateTime<Utc> {
        DateTime::from_timestamp(self.expires, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// The link's path and query (under [`API_PREFIX`]) with signature `sig`.
    #[must_use]
    pub fn path(&self, sig: &str) -> String {
        format!(
            "{API_PREFIX}{LINKS_PATH}/{}/{}/{}?owner={}&expires={}&sig={sig}",
            self.job_id,
            self.item_id,
            self.format.name(),
            self.owner,
            self.expires
        )
    }
}

/// `HMAC-SHA256(secret, context)`: a key for one use, derived from the
/// server secret.
fn derive(secret: &SecretString, context: &str) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(secret.expose_secret().as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(context.as_bytes());
    mac.finalize().into_bytes().into()
}

/// The key for `context` derived from `SECRET_KEY` ([`derive`]); without
/// one (development), a random key, after a warning that says what is
/// `lost`.
pub(crate) fn derived_key(secret: Option<&SecretString>, context: &str, lost: &str) -> [u8; 32] {
    match secret {
        Some(s) if !s.expose_secret().is_empty() => derive(s, context),
        _ => {
            tracing::warn!(context, "SECRET_KEY is not set: {lost}");
            use rand::Rng;
            rand::rng().random()
        }
    }
}

/// Why a link was refused by [`LinkSigner::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkRefusal {
    /// The signature does not match the fields (tampered or forged), or is
    /// not a signature at all.
    Invalid,
    /// The signature matches but the expiry has passed.
    Expired,
}

/// Signs and checks links under the link key (see the module docs). Its
/// `Debug` form shows no key.
#[derive(Clone)]
pub struct LinkSigner {
    key: [u8; 32],
}

impl std::fmt::Debug for LinkSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkSigner").finish_non_exhaustive()
    }
}

impl LinkSigner {
    /// The signer whose key is derived from `secret` (`SECRET_KEY`):
    /// `HMAC-SHA256(secret, LINK_KEY_CONTEXT)`.
    #[must_use]
    pub fn new(secret: &SecretString) -> Self {
        Self {
            key: derive(secret, LINK_KEY_CONTEXT),
        }
    }

    /// A signer with a random key, for a server without `SECRET_KEY`
    /// (development): its links work only in this process.
    #[must_use]
    pub fn random() -> Self {
        use rand::Rng;
        Self {
            key: rand::rng().random(),
        }
    }

    /// The signer of a configuration: [`LinkSigner::new`] from `SECRET_KEY`
    /// when it is set, else [`LinkSigner::random`] with a warning.
    #[must_use]
    pub fn from_secret(secret: Option<&SecretString>) -> Self {
        Self {
            key: derived_key(
                secret,
                LINK_KEY_CONTEXT,
                "download links are signed with a random key and stop working when this process \
                 ends",
            ),
        }
    }

    fn mac(&self, link: &Link) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(link.message().as_bytes());
        mac
    }

    /// The signature of `link`, as 64 lower-case hex digits.
    #[must_use]
    pub fn sign(&self, link: &Link) -> String {
        hex::encode(self.mac(link).finalize().into_bytes())
    }

    /// The link's path and query, signed (see [`Link::path`]).
    #[must_use]
    pub fn signed_path(&self, link: &Link) -> String {
        link.path(&self.sign(link))
    }

    /// Whether `sig` is `link`'s signature and `link` has not expired at
    /// `now` (Unix seconds): it works up to and including its `expires`
    /// second. The signature is compared in constant time, and checked
    /// before the expiry, so a changed expiry is [`LinkRefusal::Invalid`].
    ///
    /// # Errors
    /// [`LinkRefusal::Invalid`] for a wrong or malformed signature,
    /// [`LinkRefusal::Expired`] for a genuine link past its expiry.
    pub fn check(&self, link: &Link, sig: &str, now: i64) -> Result<(), LinkRefusal> {
        let Ok(presented) = hex::decode(sig) else {
            return Err(LinkRefusal::Invalid);
        };
        // `verify_slice` compares in constant time (and refuses any length
        // other than the MAC's).
        if self.mac(link).verify_slice(&presented).is_err() {
            return Err(LinkRefusal::Invalid);
        }
        if now > link.expires {
            return Err(LinkRefusal::Expired);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(expires: i64) -> Link {
        Link {
            job_id: JobId::new(),
            item_id: ItemId::new(),
            format: ModelFormat::Glb,
            expires,
            owner: ApiKeyId::bootstrap_user(),
        }
    }

    fn signer() -> LinkSigner {
        LinkSigner::new(&SecretString::from("a-test-secret-of-enough-length-0123"))
    }

    #[test]
    fn a_signed_link_checks_until_its_expiry_second_and_not_after() {
        let s = signer();
        let l = link(1_000);
        let sig = s.sign(&l);
        assert_eq!(sig.len(), 64);
        assert_eq!(s.check(&l, &sig, 999), Ok(()));
        assert_eq!(s.check(&l, &sig, 1_000), Ok(()));
        assert_eq!(s.check(&l, &sig, 1_001), Err(LinkRefusal::Expired));
    }

    #[test]
    fn any_changed_field_or_signature_is_invalid() {
        let s = signer();
        let l = link(1_000);
        let sig = s.sign(&l);
        let mut changed = vec![];
        let mut c = l.clone();
        c.job_id = JobId::new();
        changed.push(c);
        let mut c = l.clone();
        c.item_id = ItemId::new();
        changed.push(c);
        let mut c = l.clone();
        c.format = ModelFormat::Stl;
        changed.push(c);
        let mut c = l.clone();
        c.expires = 2_000;
        changed.push(c);
        let mut c = l.clone();
        c.owner = ApiKeyId::bootstrap_admin();
        changed.push(c);
        for c in &changed {
            assert_eq!(s.check(c, &sig, 0), Err(LinkRefusal::Invalid), "{c:?}");
        }
        let mut flipped = sig.clone().into_bytes();
        flipped[10] = if flipped[10] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).unwrap();
        for bad in [
            &flipped,
            "",
            "zz",
            &sig[..62],
            &format!("{sig}00"),
            &sig.to_uppercase(),
        ] {
            let expected = if bad == sig.to_uppercase() {
                // Hex is case-insensitive: the same bytes.
                Ok(())
            } else {
                Err(LinkRefusal::Invalid)
            };
            assert_eq!(s.check(&l, bad, 0), expected, "{bad:?}");
        }
    }

    #[test]
    fn the_link_key_is_derived_from_the_secret_and_differs_from_it() {
        let secret = SecretString::from("a-test-secret-of-enough-length-0123");
        let s = LinkSigner::new(&secret);
        let other = LinkSigner::new(&SecretString::from("another-secret-of-enough-length-01"));
        let l = link(1_000);
        assert_ne!(s.sign(&l), other.sign(&l));
        assert_eq!(other.check(&l, &s.sign(&l), 0), Err(LinkRefusal::Invalid));
        assert_ne!(&s.key[..], secret.expose_secret().as_bytes());
        assert_eq!(LinkSigner::new(&secret).sign(&l), s.sign(&l));
        assert_ne!(LinkSigner::random().sign(&l), LinkSigner::random().sign(&l));
        assert!(!format!("{s:?}").contains(&hex::encode(s.key)));
    }

    #[test]
    fn paths_name_the_link_and_carry_no_api_key() {
        let s = signer();
        let l = link(1_000);
        let path = s.signed_path(&l);
        assert_eq!(
            path,
            format!(
                "/api/v1/links/{}/{}/glb?owner=bootstrap-user&expires=1000&sig={}",
                l.job_id,
                l.item_id,
                s.sign(&l)
            )
        );
        assert_eq!(l.expires_at().timestamp(), 1_000);
    }
}
