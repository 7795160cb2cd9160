//! Signed webhooks to integrators: how a job's end is signed when it is
//! posted to the job's callback URL, and how a receiver checks it.
//!
//! Each delivery is a `POST` of the job document (JSON) with these headers:
//!
//! - [`SIGNATURE_HEADER`] `Image2Model-Signature: t=<unix seconds>,v1=<hex>`:
//!   `v1` is HMAC-SHA256, keyed with the receiving key's webhook secret (the
//!   whole `whsec_…` text as bytes), over the timestamp, a full stop and the
//!   raw body: `"{t}.{body}"`.
//! - [`DELIVERY_HEADER`]: the delivery's id, the same on every attempt of
//!   one delivery, so a receiver can drop duplicates.
//! - [`EVENT_HEADER`], whose value is [`JOB_ENDED_EVENT`].
//! - [`ATTEMPT_HEADER`]: which attempt this is, from 1.
//!
//! A receiver calls [`verify`] with its secret, the header, the raw body and
//! the time; the timestamp bounds replays to [`DEFAULT_TOLERANCE`].
//!
//! ```
//! use image2model_core::callbacks::{signature_header, verify, DEFAULT_TOLERANCE};
//! let secret = "whsec_0123456789abcdef";
//! let body = br#"{"job_id":"01J..."}"#;
//! let header = signature_header(secret, 1_700_000_000, body);
//! assert!(verify(secret, &header, body, 1_700_000_010, DEFAULT_TOLERANCE).is_ok());
//! assert!(verify(secret, &header, b"{}", 1_700_000_010, DEFAULT_TOLERANCE).is_err());
//! ```

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The signature header.
pub const SIGNATURE_HEADER: &str = "Image2Model-Signature";
/// The delivery id header.
pub const DELIVERY_HEADER: &str = "Image2Model-Delivery";
/// The event header.
pub const EVENT_HEADER: &str = "Image2Model-Event";
/// The attempt number header (1 for the first).
pub const ATTEMPT_HEADER: &str = "Image2Model-Attempt";
/// The event of a job that has ended (succeeded, partial, failed or
/// cancelled).
pub const JOB_ENDED_EVENT: &str = "job.ended";
/// How far a signature's timestamp may be from the receiver's clock.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);
/// What every webhook secret starts with.
pub const SECRET_PREFIX: &str = "whsec_";

/// Why [`verify`] refused a delivery.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The header is not `t=…,v1=…`.
    #[error("the signature header is not of the form t=<unix seconds>,v1=<hex>")]
    Malformed,
    /// The timestamp is further from now than the tolerance.
    #[error("the signature's timestamp is {age_secs} s from now, beyond the tolerance")]
    Stale {
        /// How far it is, in seconds.
        age_secs: u64,
    },
    /// No `v1` signature matches the body under this secret.
    #[error("no signature matches the body under this secret")]
    Mismatch,
}

fn mac(secret: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
    let mut mac =
        HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The [`SIGNATURE_HEADER`] value for `body` sent at `timestamp` (Unix
/// seconds) under `secret`.
#[must_use]
pub fn signature_header(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let sig = hex::encode(mac(secret, timestamp, body).finalize().into_bytes());
    format!("t={timestamp},v1={sig}")
}

/// Checks a delivery: `header` is its [`SIGNATURE_HEADER`], `body` its raw
/// body, `now` the receiver's time (Unix seconds). Accepts when one `v1`
/// value of the header is the body's signature under `secret` (compared in
/// constant time) and the timestamp is within `tolerance` of `now`.
///
/// # Errors
/// [`SignatureError`] saying why it was refused.
pub fn verify(
    secret: &str,
    header: &str,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => {
                timestamp = Some(v.parse::<i64>().map_err(|_| SignatureError::Malformed)?);
            }
            Some(("v1", v)) => signatures.push(v),
            // Other schemes are for later versions: ignored.
            Some(_) => {}
            None => return Err(SignatureError::Malformed),
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let age_secs = now.abs_diff(timestamp);
    if age_secs > tolerance.as_secs() {
        return Err(SignatureError::Stale { age_secs });
    }
    let expected = mac(secret, timestamp, body);
    let matches = signatures.iter().any(|sig| {
        hex::decode(sig).is_ok_and(|bytes| expected.clone().verify_slice(&bytes).is_ok())
    });
    if matches {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// [`verify`] against the system clock with [`DEFAULT_TOLERANCE`].
///
/// # Errors
/// As for [`verify`].
pub fn verify_now(secret: &str, header: &str, body: &[u8]) -> Result<(), SignatureError> {
    verify(
        secret,
        header,
        body,
        chrono::Utc::now().timestamp(),
        DEFAULT_TOLERANCE,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test";

    #[test]
    fn a_signature_verifies_with_its_secret_body_and_time_only() {
        let body = br#"{"status":"succeeded"}"#;
        let header = signature_header(SECRET, 1000, body);
        assert_eq!(
            verify(SECRET, &header, body, 1100, DEFAULT_TOLERANCE),
            Ok(())
        );
        assert_eq!(
            verify("whsec_other", &header, body, 1100, DEFAULT_TOLERANCE),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(SECRET, &header, b"{}", 1100, DEFAULT_TOLERANCE),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(SECRET, &header, body, 1000 + 301, DEFAULT_TOLERANCE),
            Err(SignatureError::Stale { age_secs: 301 })
        );
        // A changed timestamp breaks the signature.
        let moved = header.replace("t=1000", "t=1001");
        assert_eq!(
            verify(SECRET, &moved, body, 1001, DEFAULT_TOLERANCE),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn any_matching_v1_is_accepted_and_malformed_headers_are_refused() {
        let body = b"x";
        let good = signature_header(SECRET, 5, body);
        let sig = good.split_once("v1=").unwrap().1;
        let two = format!("t=5,v1={},v1={sig}", "00".repeat(32));
        assert_eq!(verify(SECRET, &two, body, 5, DEFAULT_TOLERANCE), Ok(()));
        for bad in ["", "t=5", "v1=ab", "t=x,v1=ab", "garbage"] {
            assert_eq!(
                verify(SECRET, bad, body, 5, DEFAULT_TOLERANCE),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
        assert_eq!(
            verify(SECRET, "t=5,v1=zz", body, 5, DEFAULT_TOLERANCE),
            Err(SignatureError::Mismatch)
        );
    }
}
