//! Retry and polling policies: exponential backoff with jitter, capped, and
//! which answers are worth another try.

use std::time::Duration;

use rand::Rng;
use reqwest::StatusCode;

/// How failed calls to fal are retried.
///
/// Defaults follow fal's official JS client: 1 s base, ×2, capped at 30 s,
/// ±25 % jitter, 3 retries (5 for status polls).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// The first wait.
    pub base: Duration,
    /// Each further wait is the previous one times this.
    pub factor: f64,
    /// No wait is longer than this (before jitter).
    pub cap: Duration,
    /// Relative jitter: each wait is scaled by a random factor in `1 ± jitter`.
    pub jitter: f64,
    /// Retries (after the first attempt) for submit, result, cancel and uploads.
    pub max_retries: u32,
    /// Retries for a status poll.
    pub status_max_retries: u32,
    /// The longest `Retry-After` honoured on a 429.
    pub retry_after_cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            factor: 2.0,
            cap: Duration::from_secs(30),
            jitter: 0.25,
            max_retries: 3,
            status_max_retries: 5,
            retry_after_cap: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (0-based), jitter included.
    #[must_use]
    pub fn backoff(&self, retry: u32) -> Duration {
        let exp = self.factor.max(1.0).powi(retry.min(64) as i32);
        let raw = self.base.as_secs_f64() * exp;
        let capped = raw.min(self.cap.as_secs_f64());
        let jitter = self.jitter.clamp(0.0, 1.0);
        let scale = if jitter > 0.0 {
            rand::rng().random_range((1.0 - jitter)..=(1.0 + jitter))
        } else {
            1.0
        };
        Duration::from_secs_f64((capped * scale).max(0.0))
    }

    /// The wait before a retry, honouring a server's `Retry-After` (capped).
    #[must_use]
    pub fn wait(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        match retry_after {
            Some(after) => after.min(self.retry_after_cap),
            None => self.backoff(retry),
        }
    }
}

/// How often the status of a queued request is polled: short at first, then
/// growing (fal's clients poll every 100 to 500 ms; a growing interval keeps
/// long generations cheap).
#[derive(Debug, Clone, PartialEq)]
pub struct PollPolicy {
    /// The first interval.
    pub initial: Duration,
    /// Each interval is the previous one times this.
    pub factor: f64,
    /// The longest interval.
    pub max: Duration,
}

impl Default for PollPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            factor: 1.5,
            max: Duration::from_secs(2),
        }
    }
}

impl PollPolicy {
    /// The interval after `current`.
    #[must_use]
    pub fn next(&self, current: Duration) -> Duration {
        current.mul_f64(self.factor.max(1.0)).min(self.max)
    }
}

/// Which call a status code came from: status polls also retry 500.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallKind {
    /// Submit, result, cancel, storage.
    Call,
    /// A status poll.
    StatusPoll,
}

/// Whether an HTTP status is worth another try. A 504 caused by our own queue
/// timeout (`X-Fal-Request-Timeout-Type: user`) is decided by the caller.
pub(crate) fn is_retryable(status: StatusCode, kind: CallKind) -> bool {
    matches!(status.as_u16(), 408 | 409 | 429 | 502 | 503 | 504)
        || (kind == CallKind::StatusPoll && status == StatusCode::INTERNAL_SERVER_ERROR)
}

/// Parses `Retry-After` as delay seconds (the HTTP-date form is rare on fal
/// and ignored).
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_by_the_factor_and_is_capped() {
        let p = RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::default()
        };
        assert_eq!(p.backoff(0), Duration::from_secs(1));
        assert_eq!(p.backoff(1), Duration::from_secs(2));
        assert_eq!(p.backoff(3), Duration::from_secs(8));
        assert_eq!(p.backoff(10), Duration::from_secs(30));
        assert_eq!(p.backoff(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn jitter_stays_within_a_quarter() {
        let p = RetryPolicy::default();
        for _ in 0..200 {
            let d = p.backoff(1).as_secs_f64();
            assert!((1.5..=2.5).contains(&d), "{d}");
        }
    }

    #[test]
    fn retry_after_is_honoured_but_capped() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.wait(0, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        assert_eq!(
            p.wait(0, Some(Duration::from_secs(3600))),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn retryable_statuses() {
        for s in [408, 409, 429, 502, 503, 504] {
            assert!(is_retryable(
                StatusCode::from_u16(s).unwrap(),
                CallKind::Call
            ));
        }
        for s in [400, 401, 403, 404, 422, 500] {
            assert!(!is_retryable(
                StatusCode::from_u16(s).unwrap(),
                CallKind::Call
            ));
        }
        assert!(is_retryable(
            StatusCode::INTERNAL_SERVER_ERROR,
            CallKind::StatusPoll
        ));
        assert!(!is_retryable(
            StatusCode::UNPROCESSABLE_ENTITY,
            CallKind::StatusPoll
        ));
    }

    #[test]
    fn poll_interval_grows_to_its_max() {
        let p = PollPolicy::default();
        let mut d = p.initial;
        for _ in 0..20 {
            d = p.next(d);
        }
        assert_eq!(d, Duration::from_secs(2));
        assert_eq!(
            p.next(Duration::from_millis(100)),
            Duration::from_millis(150)
        );
    }
}
