//! Webhooks to integrators: the callback URL a job's end is posted to, and
//! the state of that delivery.
//!
//! A [`CallbackUrl`] is checked for its form here (absolute `https` or
//! `http`, a host, no credentials, bounded length); whether its host may be
//! reached (no loopback, private or metadata address) is the deliverer's
//! decision, made again at every attempt, since a name can resolve
//! elsewhere later.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{ApiKeyId, DeliveryId, JobId};

/// The longest callback URL accepted, in bytes.
pub const MAX_CALLBACK_URL_BYTES: usize = 2048;

/// Why a callback URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid callback URL: {0}")]
pub struct CallbackUrlError(pub String);

/// An absolute `https` (or `http`) URL with a host and no credentials.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CallbackUrl(url::Url);

impl CallbackUrl {
    /// Parses a callback URL: `https` (or `http` when `allow_http`), a host,
    /// no user name or password, no fragment, at most
    /// [`MAX_CALLBACK_URL_BYTES`].
    ///
    /// # Errors
    /// [`CallbackUrlError`] saying what is wrong.
    pub fn parse(text: &str, allow_http: bool) -> Result<Self, CallbackUrlError> {
        let err = |m: &str| CallbackUrlError(m.to_owned());
        let text = text.trim();
        if text.len() > MAX_CALLBACK_URL_BYTES {
            return Err(CallbackUrlError(format!(
                "longer than {MAX_CALLBACK_URL_BYTES} bytes"
            )));
        }
        let url = url::Url::parse(text).map_err(|e| CallbackUrlError(format!("{e}")))?;
        match url.scheme() {
            "https" => {}
            "http" if allow_http => {}
            "http" => {
                return Err(err(
                    "must be https (this server does not call plain http URLs)",
                ));
            }
            _ => return Err(err("must be an https URL")),
        }
        if url.host().is_none() {
            return Err(err("has no host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(err("must not carry a user name or password"));
        }
        if url.fragment().is_some() {
            return Err(err("must not have a fragment"));
        }
        Ok(Self(url))
    }

    /// Re-reads a URL stored after [`CallbackUrl::parse`] (either scheme).
    ///
    /// # Errors
    /// [`CallbackUrlError`] for text that was never a callback URL.
    pub fn from_stored(text: &str) -> Result<Self, CallbackUrlError> {
        Self::parse(text, true)
    }

    /// The URL.
    #[must_use]
    pub fn url(&self) -> &url::Url {
        &self.0
    }

    /// The URL as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Debug for CallbackUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The query may hold a receiver's token: only scheme, host and path.
        write!(
            f,
            "CallbackUrl({}://{}{})",
            self.0.scheme(),
            self.0.host_str().unwrap_or(""),
            self.0.path()
        )
    }
}

impl TryFrom<String> for CallbackUrl {
    type Error = CallbackUrlError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::from_stored(&text)
    }
}

impl From<CallbackUrl> for String {
    fn from(url: CallbackUrl) -> Self {
        url.0.into()
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Not yet received: waiting for the job to end, or for its next try.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Given up: retried for the whole retry period, or refused for good
    /// (an address that may not be called, a job that is gone).
    Failed,
}

impl DeliveryStatus {
    /// The stored and shown text.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }

    /// Parses [`DeliveryStatus::as_str`]'s text.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(DeliveryStatus::Pending),
            "delivered" => Some(DeliveryStatus::Delivered),
            "failed" => Some(DeliveryStatus::Failed),
            _ => None,
        }
    }
}

/// One job's webhook delivery, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Its id, sent with every attempt.
    pub delivery_id: DeliveryId,
    /// The job whose end it tells.
    pub job_id: JobId,
    /// The job's owner (whose secret signs it).
    pub owner: ApiKeyId,
    /// Where it is posted.
    pub url: CallbackUrl,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due (pending deliveries of ended jobs).
    pub next_attempt_at: DateTime<Utc>,
    /// What went wrong last, if anything did.
    pub last_error: Option<String>,
    /// The HTTP status of the last answer, if there was one.
    pub last_status_code: Option<u16>,
    /// When the receiver took it.
    pub delivered_at: Option<DateTime<Utc>>,
    /// When it was written (with its job).
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The receiver answered 2xx.
    Delivered {
        /// Its status.
        status_code: u16,
    },
    /// It failed; try again at `next_attempt_at`.
    Retry {
        /// What went wrong.
        error: String,
        /// The receiver's status, when it answered.
        status_code: Option<u16>,
        /// When to try again.
        next_attempt_at: DateTime<Utc>,
    },
    /// It failed for good.
    Failed {
        /// What went wrong.
        error: String,
        /// The receiver's status, when it answered.
        status_code: Option<u16>,
    },
}

impl Delivery {
    /// This delivery after one more attempt at `at` that came to `outcome`.
    pub fn apply(&mut self, outcome: &AttemptOutcome, at: DateTime<Utc>) {
        self.attempts = self.attempts.saturating_add(1);
        self.updated_at = at;
        match outcome {
            AttemptOutcome::Delivered { status_code } => {
                self.status = DeliveryStatus::Delivered;
                self.last_status_code = Some(*status_code);
                self.last_error = None;
                self.delivered_at = Some(at);
            }
            AttemptOutcome::Retry {
                error,
                status_code,
                next_attempt_at,
            } => {
                self.last_error = Some(error.clone());
                self.last_status_code = *status_code;
                self.next_attempt_at = *next_attempt_at;
            }
            AttemptOutcome::Failed { error, status_code } => {
                self.status = DeliveryStatus::Failed;
                self.last_error = Some(error.clone());
                self.last_status_code = *status_code;
            }
        }
    }
}

/// A new job's delivery, written in the same transaction as the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCallback {
    /// Its id.
    pub delivery_id: DeliveryId,
    /// Where the job's end is posted.
    pub url: CallbackUrl,
}

impl NewCallback {
    /// A delivery to `url` with a new id.
    #[must_use]
    pub fn to(url: CallbackUrl) -> Self {
        Self {
            delivery_id: DeliveryId::new(),
            url,
        }
    }

    /// The delivery as stored with a job created at `now`: pending, due at
    /// once (it is claimed only once the job has ended).
    #[must_use]
    pub fn into_delivery(self, job_id: JobId, owner: ApiKeyId, now: DateTime<Utc>) -> Delivery {
        Delivery {
            delivery_id: self.delivery_id,
            job_id,
            owner,
            url: self.url,
            status: DeliveryStatus::Pending,
            attempts: 0,
            next_attempt_at: now,
            last_error: None,
            last_status_code: None,
            delivered_at: None,
            created_at: now,
            updated_at: now,
        }
    }
}

/// A key's webhook settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WebhookSettings {
    /// The callback URL of its uploads that name none.
    pub default_url: Option<CallbackUrl>,
    /// The random seed its signing secret is derived from (never the secret
    /// itself); `None` until a secret is made.
    pub secret_seed: Option<String>,
    /// When the current secret was made.
    pub secret_created_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_urls_are_absolute_https_with_a_host_and_no_credentials() {
        assert!(CallbackUrl::parse("https://hooks.example.com/i2m?t=1", false).is_ok());
        for bad in [
            "http://hooks.example.com/",
            "ftp://hooks.example.com/",
            "file:///etc/passwd",
            "https://user:pw@hooks.example.com/",
            "https://hooks.example.com/#frag",
            "/relative",
            "",
        ] {
            assert!(
                CallbackUrl::parse(bad, false).is_err(),
                "{bad} was accepted"
            );
        }
        assert!(CallbackUrl::parse("http://127.0.0.1:9/", true).is_ok());
        let long = format!(
            "https://h.example.com/{}",
            "a".repeat(MAX_CALLBACK_URL_BYTES)
        );
        assert!(CallbackUrl::parse(&long, false).is_err());
    }

    #[test]
    fn a_callback_urls_debug_form_hides_its_query() {
        let url = CallbackUrl::parse("https://h.example.com/x?token=s3cret", false).unwrap();
        assert!(!format!("{url:?}").contains("s3cret"));
    }

    #[test]
    fn delivery_statuses_round_trip() {
        for s in [
            DeliveryStatus::Pending,
            DeliveryStatus::Delivered,
            DeliveryStatus::Failed,
        ] {
            assert_eq!(DeliveryStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(DeliveryStatus::parse("nope"), None);
    }
}
